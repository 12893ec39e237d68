//! The job runtime: workers registered per job kind ([`Runtime::add_worker`]), one pull loop
//! per kind, and the bookkeeping every job gets whatever its kind (decoding, transactions, job
//! rows, progress, settling, dead letters, metrics).
//!
//! - [`job`]: what a worker sees and answers;
//! - `pull`: fetching as many jobs as there are free slots, in groups;
//! - `execute`: a group's work, transaction and hold while a dependency is down;
//! - `settle` and `dead_letter`: ack, nak or term, with the dead letter first;
//! - `pending`: the backlog gauge.
mod dead_letter;
mod decode;
mod delivery;
mod execute;
pub mod job;
mod pending;
mod progress;
mod pull;
mod settle;

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_trait::async_trait;
use codigo_common::config::JetStreamArgs;
use codigo_common::Names;
use codigo_schemas::{kind, registry, BadSchema, DeclaredType, JobKind, JobType};

pub use job::{Done, ErrorKind, JobCtx, JobError, JobTx, Payload, Worker};
pub use pending::{report_pending, ServedTypes};
pub(crate) use pull::Puller;

use crate::dead_letters::DeadLetters;
use crate::events::Meters;
use crate::retry::RetryPolicy;
use execute::Group;

/// Everything the workers of one process share.
pub struct Shared {
    pub js: jetstream::Context,
    pub names: Names,
    pub pool: sqlx::PgPool,
    /// For the `running` marks (`db::lazy_marks_pool`).
    pub marks: sqlx::PgPool,
    pub jetstream: JetStreamArgs,
    pub retry: RetryPolicy,
    pub concurrency: usize,
    pub fetch_expires: Duration,
    /// Pull requests in flight per job type (one loop each).
    pub pull_loops: usize,
    pub dead_letters: DeadLetters,
}

/// A kind's worker, its payload type erased so that kinds can be held together.
#[async_trait]
pub(crate) trait Serve: Send + Sync + 'static {
    fn job_type(&self) -> &'static str;

    /// Whether jobs that arrived together are processed together.
    fn groups(&self) -> bool;

    async fn process(&self, group: Group);
}

/// A job type's worker with the type's compiled payload schema.
pub(crate) struct Served<K, W> {
    name: &'static str,
    worker: W,
    schema: Schema,
    kind: PhantomData<fn() -> K>,
}

enum Schema {
    Registered(&'static JobType),
    /// A kind this consumer serves that the registry does not list, or a declared type.
    Own(JobType),
    Declared(Arc<DeclaredType>),
}

impl<K: Payload, W: Worker<K>> Served<K, W> {
    /// A type declared at run time, its payload handed to `worker` as `K`.
    pub(crate) fn declared(declared: Arc<DeclaredType>, worker: W) -> Self {
        Self {
            name: declared.job_type.name,
            worker,
            schema: Schema::Declared(declared),
            kind: PhantomData,
        }
    }

    fn schema(&self) -> &JobType {
        match &self.schema {
            Schema::Registered(job_type) => job_type,
            Schema::Own(job_type) => job_type,
            Schema::Declared(declared) => &declared.job_type,
        }
    }
}

#[async_trait]
impl<K: Payload, W: Worker<K>> Serve for Served<K, W> {
    fn job_type(&self) -> &'static str {
        self.name
    }

    fn groups(&self) -> bool {
        W::GROUPS
    }

    async fn process(&self, group: Group) {
        execute::process(self, group).await;
    }
}

/// The workers of a process, one per job kind.
#[derive(Default)]
pub struct Runtime {
    served: BTreeMap<&'static str, Arc<dyn Serve>>,
}

impl Runtime {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves kind `K` with `worker`, in place of any worker registered for it before.
    pub fn add_worker<K: JobKind>(&mut self, worker: impl Worker<K>) -> Result<(), BadSchema> {
        let schema = match registry().job_type(K::NAME) {
            Ok(job_type) if job_type.version == K::VERSION => Schema::Registered(job_type),
            _ => Schema::Own(JobType::compile(kind::<K>())?),
        };
        let served = Served {
            name: K::NAME,
            worker,
            schema,
            kind: PhantomData,
        };
        self.served.insert(K::NAME, Arc::new(served));
        Ok(())
    }

    /// Adds `other`'s workers, in place of this runtime's for the same kinds.
    pub fn merge(&mut self, other: Runtime) {
        self.served.extend(other.served);
    }

    /// The job types served, in name order.
    pub fn job_types(&self) -> Vec<&'static str> {
        self.served.keys().copied().collect()
    }

    pub fn serves(&self, job_type: &str) -> bool {
        self.served.contains_key(job_type)
    }

    /// Keeps only the workers of `job_types`.
    pub fn retain(&mut self, job_types: &[&str]) {
        self.served.retain(|name, _| job_types.contains(name));
    }

    /// The pull loop of each served kind, given its meters and readiness flag.
    pub(crate) fn pullers(
        &self,
        shared: &Arc<Shared>,
        meters: &BTreeMap<&'static str, Arc<Meters>>,
        bound: &[(&'static str, Arc<AtomicBool>)],
    ) -> Vec<Puller> {
        bound
            .iter()
            .filter_map(|(job_type, flag)| {
                let served = self.served.get(job_type)?.clone();
                let meters = meters.get(job_type)?.clone();
                Some(Puller::loops(served, shared.clone(), meters, flag.clone()))
            })
            .flatten()
            .collect()
    }
}
