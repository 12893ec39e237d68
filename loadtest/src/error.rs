use std::path::PathBuf;

use codigo_common::{db::DbError, jetstream::SetupError, names::InvalidNamespace, nats::NatsError};

/// Everything that stops a load run or a benchmark, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Namespace(#[from] InvalidNamespace),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Topology(#[from] SetupError),
    #[error("Postgres: {what}: {source}; is Postgres running, and may the role in DATABASE_URL create databases?")]
    Postgres {
        what: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("JetStream: {what}: {source}; is nats-server running with -js at NATS_URL?")]
    JetStream {
        what: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    #[error("{0}")]
    Invalid(String),
    /// The bare baseline's pull stream stopped delivering with messages left in the stream: a
    /// client-side stall that says nothing of the server's rate, so the measurement is taken
    /// again rather than reported.
    #[error("baseline consume stalled after {got} of {of} messages (no message for {idle:?})")]
    BaselineStalled {
        got: u64,
        of: u64,
        idle: std::time::Duration,
    },
    #[error("cannot write {path}: {source}; check that the directory exists and is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A benchmark process could not be started, did not become ready, or exited early.
    #[error(transparent)]
    Process(#[from] codigo_testkit::process::ProcessError),
    #[error("interrupted; everything this run started has been stopped and removed")]
    Interrupted,
}

impl LoadError {
    pub fn postgres(what: impl Into<String>, source: sqlx::Error) -> Self {
        Self::Postgres {
            what: what.into(),
            source,
        }
    }

    pub fn jetstream(what: impl Into<String>, source: impl Into<async_nats::Error>) -> Self {
        Self::JetStream {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM, which end a run with [`LoadError::Interrupted`].
pub async fn interrupted() {
    let token = codigo_common::shutdown::on_signals();
    token.cancelled().await;
}
