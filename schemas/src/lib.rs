//! The Codigo wire contract: the job envelope, the registered job types with their JSON
//! Schemas (compiled once per process), typed payloads, and job id derivation.
#![forbid(unsafe_code)]

mod envelope;
mod jobs;
mod registry;

pub use envelope::{event_job_id, job_id, Envelope};
pub use jobs::{LedgerPost, WebhookDeliver, LEDGER_POST, WEBHOOK_DELIVER};
pub use registry::{registry, JobType, Registry, SchemaError, Violation};
