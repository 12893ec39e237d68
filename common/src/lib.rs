//! Plumbing shared by every Codigo binary: configuration pieces, NATS and JetStream set-up,
//! Postgres pool and migrations, telemetry (logs, traces, metrics) and graceful shutdown.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod contract;
pub mod db;
pub mod declarations;
pub mod jetstream;
pub mod metric;
pub mod names;
pub mod nats;
pub mod redact;
pub mod shutdown;
pub mod telemetry;
pub mod webhook_secret;

pub use names::Names;
