//! The Codigo wire contract: the job envelope, the registered job kinds with their JSON
//! Schemas (compiled once per process), typed payloads, and job id derivation.
#![forbid(unsafe_code)]

mod catalog;
mod declaration;
mod envelope;
mod jobs;
mod kind;
mod registry;

pub use catalog::{Catalog, Known};
pub use declaration::{
    intern, interned, is_type_name, Declaration, DeclarationError, DeclaredType, HttpTarget,
    Policy, RetrySpec, Runner, Span, Target, MAX_RESULT_BYTES,
};
pub use envelope::{event_job_id, job_id, Envelope};
pub use jobs::{LedgerPost, WebhookDeliver, KINDS, LEDGER_POST, WEBHOOK_DELIVER};
pub use kind::{kind, JobKind, KindInfo};
pub use registry::{registry, BadSchema, JobType, Registry, SchemaError, Violation};
