//! The chaos suite: the real producer and consumers against private NATS and Postgres
//! servers, with consumers killed, workers aborting between commit and ack, NATS and Postgres
//! crash-restarted, slow jobs and poison messages, followed by a check that every accepted
//! job took effect exactly once. `make chaos` runs the full plan, `make test` a small one.
#![forbid(unsafe_code)]

pub mod bins;
pub mod check;
pub mod cluster;
pub mod load;
pub mod procs;
pub mod run;
pub mod servers;

pub use check::Report;
pub use run::{run, ClusterPlan, Plan};

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The run could not be set up (a missing tool or binary, a server that did not start).
    #[error("{0}")]
    Setup(String),
    /// A process or server of the run could not be started, stopped or signalled.
    #[error(transparent)]
    Process(#[from] codigo_testkit::process::ProcessError),
    /// The run could not be completed or checked.
    #[error("{0}")]
    Check(String),
}

impl ChaosError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
