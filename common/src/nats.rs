//! NATS connection from the shared settings: servers, credentials, TLS.
use crate::redact::redact_url;
use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};
use secrecy::ExposeSecret as _;

use crate::config::NatsArgs;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("NATS_URL entry {url:?} is not a valid server address: {source}")]
    BadUrl { url: String, source: std::io::Error },
    #[error("cannot read NATS credentials file {path}: {source}; check NATS_CREDS")]
    Credentials {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read NKey seed file {path}: {source}; check NATS_NKEY_SEED_FILE")]
    NkeySeed {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Settings(String),
    #[error("cannot connect to NATS at {urls}: {source}; is nats-server running with -js, and are NATS_URL and the credentials right?")]
    Connect {
        urls: String,
        source: async_nats::ConnectError,
    },
}

/// How a binary wants to behave when NATS is not there at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialConnect {
    /// Return at once and keep connecting in the background (long-running services: they
    /// report not-ready until connected).
    Background,
    /// Fail when the first attempt fails (one-shot tools).
    FailFast,
}

/// `NATS_URL` entries as server addresses, with credentials written into a URL
/// (`nats://user:password@host`, `nats://token@host`) taken out of it: the client does not
/// read them from there, and an address is logged at debug level.
fn servers(nats_url: &str) -> Result<(Vec<ServerAddr>, Option<UrlAuth>), NatsError> {
    let mut servers = Vec::new();
    let mut auth: Option<UrlAuth> = None;
    for url in nats_url.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |source| NatsError::BadUrl {
            url: redact_url(url),
            source,
        };
        let parsed = url.parse::<ServerAddr>().map_err(bad)?;
        let mut inner = parsed.into_inner();
        let found = match (inner.username(), inner.password()) {
            ("", None) => None,
            (token, None) => Some(UrlAuth::Token(percent_decode(token))),
            (user, Some(password)) => Some(UrlAuth::UserPassword(
                percent_decode(user),
                percent_decode(password),
            )),
        };
        if let Some(found) = found {
            if auth.as_ref().is_some_and(|seen| *seen != found) {
                return Err(NatsError::Settings(
                    "NATS_URL entries carry different credentials; use one set, or NATS_USER and \
                     NATS_PASSWORD"
                        .into(),
                ));
            }
            auth = Some(found);
            let stripped = inner
                .set_username("")
                .and_then(|()| inner.set_password(None));
            if stripped.is_err() {
                return Err(NatsError::Settings(format!(
                    "cannot take the credentials out of NATS_URL entry {}",
                    redact_url(url)
                )));
            }
        }
        servers.push(inner.as_str().parse::<ServerAddr>().map_err(bad)?);
    }
    Ok((servers, auth))
}

#[derive(PartialEq, Eq)]
enum UrlAuth {
    UserPassword(String, String),
    Token(String),
}

/// Userinfo in a URL is percent-encoded; a malformed escape is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn connect(
    args: &NatsArgs,
    client_name: &str,
    initial: InitialConnect,
) -> Result<async_nats::Client, NatsError> {
    let (servers, url_auth) = servers(&args.nats_url)?;
    if servers.is_empty() {
        return Err(NatsError::Settings("NATS_URL is empty".into()));
    }

    let mut options = ConnectOptions::new()
        .name(client_name)
        .connection_timeout(Duration::from_secs(5))
        .ping_interval(Duration::from_secs(10))
        .request_timeout(Some(Duration::from_secs(10)))
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                other => tracing::info!(event = %other, "NATS client event"),
            }
        });
    if initial == InitialConnect::Background {
        options = options.retry_on_initial_connect();
    }

    if let Some(path) = &args.nats_creds {
        options =
            options
                .credentials_file(path)
                .await
                .map_err(|source| NatsError::Credentials {
                    path: path.display().to_string(),
                    source,
                })?;
    }
    match (&args.nats_user, &args.nats_password, url_auth) {
        (Some(_), Some(_), Some(_)) => {
            return Err(NatsError::Settings(
                "NATS_URL carries credentials and NATS_USER/NATS_PASSWORD are set too; use one"
                    .into(),
            ))
        }
        (Some(user), Some(password), None) => {
            options = options.user_and_password(user.clone(), password.expose_secret().to_owned());
        }
        (None, None, Some(UrlAuth::UserPassword(user, password))) => {
            options = options.user_and_password(user, password);
        }
        (None, None, Some(UrlAuth::Token(token))) => {
            options = options.token(token);
        }
        (None, None, None) => {}
        _ => {
            return Err(NatsError::Settings(
                "set both NATS_USER and NATS_PASSWORD, or neither".into(),
            ))
        }
    }
    if let Some(path) = &args.nats_nkey_seed_file {
        let seed = std::fs::read_to_string(path).map_err(|source| NatsError::NkeySeed {
            path: path.display().to_string(),
            source,
        })?;
        options = options.nkey(seed.trim().to_owned());
    }
    if let Some(ca) = &args.nats_tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    match (&args.nats_tls_cert, &args.nats_tls_key) {
        (Some(cert), Some(key)) => {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        (None, None) => {}
        _ => {
            return Err(NatsError::Settings(
                "set both NATS_TLS_CERT and NATS_TLS_KEY, or neither".into(),
            ))
        }
    }

    options
        .connect(servers)
        .await
        .map_err(|source| NatsError::Connect {
            urls: args
                .nats_url
                .split(',')
                .map(|url| redact_url(url.trim()))
                .collect::<Vec<_>>()
                .join(","),
            source,
        })
}

pub fn is_connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// Flushes buffered publishes (acks are fire-and-forget), bounded: a client that never
/// connected would otherwise wait forever.
pub async fn flush(client: &async_nats::Client) {
    match tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "flushing NATS on shutdown failed"),
        Err(_) => {
            tracing::warn!("flushing NATS on shutdown timed out; unsent acks will be redelivered")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        for (url, shown) in [
            (
                "nats://u:s3cret@127.0.0.1:4222",
                "nats://***@127.0.0.1:4222",
            ),
            (
                "tls://tok3n@nats.example:4222/x@y",
                "tls://***@nats.example:4222/x@y",
            ),
            ("u:s3cret@host:notaport", "***@host:notaport"),
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn credentials_leave_the_urls() {
        let (addrs, auth) =
            servers("nats://codigo:p%40ss@127.0.0.1:4222, nats://codigo:p%40ss@127.0.0.2:4222")
                .expect("parses");
        assert!(addrs.iter().all(|s| !s.has_user_pass()));
        assert!(addrs.iter().all(|s| !format!("{s:?}").contains("p%40ss")));
        assert!(auth == Some(UrlAuth::UserPassword("codigo".into(), "p@ss".into())));
        let (_, token) = servers("nats://t0ken@127.0.0.1").expect("parses");
        assert!(token == Some(UrlAuth::Token("t0ken".into())));
        assert!(servers("nats://a:b@h1,nats://c:d@h2").is_err());
        let error = servers("nats://u:s3cret@host:notaport")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("***@host") && !error.contains("s3cret"),
            "{error}"
        );
    }
}
