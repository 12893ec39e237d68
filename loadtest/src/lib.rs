//! `codigo-loadtest`: offers load to a Codigo pipeline (HTTP single or batch, or straight to
//! JetStream; open or closed loop), measures ingest and end-to-end latency with HDR
//! histograms, compares with a bare async-nats + sqlx baseline, and runs the standard
//! benchmark (`make bench`) that writes BENCHMARKS.md.
#![forbid(unsafe_code)]

pub mod baseline;
pub mod bench;
pub mod cli;
pub mod driver;
pub mod e2e;
pub mod error;
pub mod http1;
pub mod payload;
pub mod plot;
pub mod procfs;
pub mod progress;
pub mod run;
pub mod scratch;
pub mod stats;
pub mod target;

pub use error::LoadError;

/// A background task that ends with its owner.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
