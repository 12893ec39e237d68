//! NATS connection from the shared settings: servers, credentials, TLS.
use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};

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

pub async fn connect(
    args: &NatsArgs,
    client_name: &str,
    initial: InitialConnect,
) -> Result<async_nats::Client, NatsError> {
    let servers = args
        .nats_url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|source| NatsError::BadUrl {
                    url: url.to_owned(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
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
    match (&args.nats_user, &args.nats_password) {
        (Some(user), Some(password)) => {
            options = options.user_and_password(user.clone(), password.clone());
        }
        (None, None) => {}
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
            urls: args.nats_url.clone(),
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
