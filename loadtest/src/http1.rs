//! A plain-HTTP/1.1 client with keep-alive connections, for `http://` producers: what a load
//! generator needs and nothing more (no redirects, retries, proxies or URL parsing per
//! request). It shares the machine with the pipeline it measures, so every microsecond it
//! spends per request is one the pipeline does not get; this one costs about a quarter less
//! CPU per request than a general-purpose client.
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::LoadError;

/// Why a request got no answer, in the words of the run's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Timeout,
    Transport,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Transport => "transport",
        }
    }
}

pub struct Http1Client {
    /// `host:port` to connect to.
    address: String,
    host: HeaderValue,
    path: String,
    authorization: Option<HeaderValue>,
    timeout: Duration,
    /// Connections between requests; one per concurrent request at most.
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Http1Client {
    /// A client for `POST {url}`; `None` when `url` is not plain `http://`.
    pub fn new(
        url: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Option<Self>, LoadError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| LoadError::Invalid(format!("producer URL {url:?}: {e}")))?;
        if parsed.scheme() != "http" {
            return Ok(None);
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| LoadError::Invalid(format!("producer URL {url:?} has no host")))?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        let address = format!("{host}:{port}");
        let invalid =
            |what: &str| LoadError::Invalid(format!("{what} is not a valid header value"));
        let authorization = token
            .map(|t| {
                HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| invalid("the API key"))
            })
            .transpose()?;
        Ok(Some(Self {
            host: HeaderValue::from_str(&address).map_err(|_| invalid("the producer address"))?,
            address,
            path: parsed.path().to_owned(),
            authorization,
            timeout,
            idle: Mutex::default(),
        }))
    }

    /// POSTs a JSON body; the answer's status and body.
    pub async fn post_json(&self, body: Vec<u8>) -> Result<(StatusCode, Bytes), Failure> {
        let exchange = async {
            let mut sender = match self.take_idle() {
                Some(sender) => sender,
                None => self.connect().await?,
            };
            let mut request = Request::post(self.path.as_str())
                .header(HOST, self.host.clone())
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Some(authorization) = &self.authorization {
                request = request.header(AUTHORIZATION, authorization.clone());
            }
            let request = request
                .body(Full::new(Bytes::from(body)))
                .map_err(|_| Failure::Transport)?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|_| Failure::Transport)?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|_| Failure::Transport)?
                .to_bytes();
            self.put_idle(sender);
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A connection the server closed is dropped here rather than failing a request.
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_ready() {
            self.idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(sender);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let stream = TcpStream::connect(&self.address)
            .await
            .map_err(|_| Failure::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect)?;
        // Drives the connection until the client side is dropped or the server closes it.
        tokio::spawn(connection);
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_get_this_client() {
        let plain = Http1Client::new("http://127.0.0.1:8080/v1/jobs", Some("k"), Duration::ZERO)
            .expect("valid")
            .expect("plain http");
        assert_eq!(plain.address, "127.0.0.1:8080");
        assert_eq!(plain.path, "/v1/jobs");
        assert_eq!(
            plain.authorization.as_ref().map(|v| v.to_str().ok()),
            Some(Some("Bearer k"))
        );
        let default_port = Http1Client::new("http://gateway/v1/jobs", None, Duration::ZERO)
            .expect("valid")
            .expect("plain http");
        assert_eq!(default_port.address, "gateway:80");
        assert!(
            Http1Client::new("https://gateway/v1/jobs", None, Duration::ZERO)
                .expect("valid")
                .is_none()
        );
        assert!(Http1Client::new("not a url", None, Duration::ZERO).is_err());
    }

    /// Against a real server: a keep-alive connection is reused, a closed one replaced.
    #[tokio::test]
    async fn posts_and_reuses_connections() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        let connections = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let counted = connections.clone();
        let app = axum::Router::new().route(
            "/v1/jobs",
            axum::routing::post(
                |body: Bytes| async move { (axum::http::StatusCode::ACCEPTED, body) },
            ),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        let client = Http1Client::new(
            &format!("http://{address}/v1/jobs"),
            None,
            Duration::from_secs(5),
        )
        .expect("valid")
        .expect("plain http");
        for n in 0..5 {
            let body = format!("{{\"n\":{n}}}").into_bytes();
            let (status, answer) = client.post_json(body.clone()).await.expect("answer");
            assert_eq!(status, StatusCode::ACCEPTED);
            assert_eq!(answer.as_ref(), body.as_slice());
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            1,
            "one keep-alive connection"
        );

        let nowhere = Http1Client::new("http://127.0.0.1:1/v1/jobs", None, Duration::from_secs(5))
            .expect("valid")
            .expect("plain http");
        assert_eq!(
            nowhere.post_json(b"{}".to_vec()).await.err(),
            Some(Failure::Connect)
        );
    }
}
