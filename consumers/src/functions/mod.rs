//! Serving declared job types: HTTP functions (or built-in workers) declared at run time (`codigo-ctl types apply`,
//! `PUT /v1/job-types/{type}`). The replica follows the job-type bucket and keeps one pull
//! loop per declared type, with the type's own durable consumer (MaxDeliver = its attempts),
//! retry back-off, concurrency and rate. A changed declaration replaces its loop: the old one
//! drains its in-flight jobs while the new one starts. A deleted type keeps its loop until its
//! queue is empty (jobs finish or dead-letter by the last policy), then its durable consumer
//! is removed.
mod invoke;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use codigo_common::declarations::Declarations;
use codigo_common::shutdown::Shutdown;
use codigo_schemas::{
    Catalog, DeclaredType, LedgerPost, Runner, WebhookDeliver, LEDGER_POST, WEBHOOK_DELIVER,
};
use governor::DefaultDirectRateLimiter;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use invoke::{FunctionWorker, SigningKeys};

use crate::events::Meters;
use crate::handlers::ledger::LedgerPostWorker;
use crate::handlers::webhook::{WebhookSettings, WebhookSetupError, WebhookWorker};
use crate::retry::RetryPolicy;
use crate::runtime::{
    Done, JobCtx, JobError, JobTx, Payload, Puller, Serve, Served, ServedTypes, Shared, Worker,
};

/// How often a deleted type's queue is checked for being empty.
const RETIRE_CHECK: Duration = Duration::from_secs(1);

/// A declared type's pull loop, while it runs.
struct Serving {
    declared: Arc<DeclaredType>,
    stop: Shutdown,
    /// Set once the type is deleted: the loop ends when its queue is empty.
    retiring: bool,
}

pub struct Functions {
    pub shared: Arc<Shared>,
    pub keys: SigningKeys,
    /// For declared types served by the built-in webhook worker.
    pub webhook: Option<WebhookSettings>,
    pub drain_timeout: Duration,
    /// Where the served declared types are listed for the backlog report and the sweep.
    pub served: ServedTypes,
}

impl Functions {
    /// Follows the job-type bucket and serves every declared type until `shutdown`, then
    /// drains each loop like the built-in ones.
    pub async fn run(self, declarations: Declarations, shutdown: Shutdown) {
        let catalog = Arc::new(Catalog::new());
        let (changed, mut versions) = watch::channel(0u64);
        let follow_stop = Shutdown::new();
        let follower =
            tokio::spawn(declarations.follow(catalog.clone(), changed, follow_stop.clone()));
        let client = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("codigo-functions/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .build()
        {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "cannot build the HTTP client; functions are not served");
                follow_stop.cancel();
                return;
            }
        };
        let mut serving: BTreeMap<&'static str, Serving> = BTreeMap::new();
        // Registered once per type and process: registering again would reset its counters.
        let mut meters: BTreeMap<&'static str, Arc<Meters>> = BTreeMap::new();
        let mut loops = JoinSet::new();
        let mut retire_check = tokio::time::interval(RETIRE_CHECK);
        loop {
            tokio::select! {
                changed = versions.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let declared = catalog.declared();
                    self.reconcile(&declared, &mut serving, &mut meters, &client, &mut loops, &shutdown);
                }
                _ = retire_check.tick() => self.retire_drained(&mut serving).await,
                Some(_) = loops.join_next() => {}
                () = shutdown.cancelled() => break,
            }
        }
        follow_stop.cancel();
        let _ = follower.await;
        // Each loop saw `shutdown` too (their stop tokens are its children) and drains.
        while loops.join_next().await.is_some() {}
    }

    fn reconcile(
        &self,
        declared: &[Arc<DeclaredType>],
        serving: &mut BTreeMap<&'static str, Serving>,
        meters: &mut BTreeMap<&'static str, Arc<Meters>>,
        client: &reqwest::Client,
        loops: &mut JoinSet<()>,
        shutdown: &Shutdown,
    ) {
        for declared in declared {
            let name = declared.job_type.name;
            if let Some(current) = serving.get(name) {
                if Arc::ptr_eq(&current.declared, declared) && !current.retiring {
                    continue;
                }
                // Replaced (or declared again while retiring): the old loop drains.
                current.stop.cancel();
            }
            let meters = meters
                .entry(name)
                .or_insert_with(|| Arc::new(Meters::register(name)))
                .clone();
            self.served.insert(name, meters.clone());
            let Some(served) = self.served_by(declared, client) else {
                continue;
            };
            let stop = shutdown.child_token();
            let pullers = Puller::loops(
                served,
                Arc::new(self.shared_for(declared)),
                meters,
                Arc::new(AtomicBool::new(false)),
            );
            for puller in pullers {
                loops.spawn(puller.run(stop.clone(), self.drain_timeout));
            }
            serving.insert(
                name,
                Serving {
                    declared: declared.clone(),
                    stop,
                    retiring: false,
                },
            );
        }
        for (name, current) in serving.iter_mut() {
            let still = declared.iter().any(|d| d.job_type.name == *name);
            if !still && !current.retiring {
                tracing::info!(
                    job_type = name,
                    "function deleted; serving its queued jobs until none are left"
                );
                current.retiring = true;
            }
        }
    }

    /// The worker of a declared type: its HTTP function, or a built-in worker on its payloads
    /// (at the type's rate). `None`, logged, when that worker cannot run here.
    fn served_by(
        &self,
        declared: &Arc<DeclaredType>,
        client: &reqwest::Client,
    ) -> Option<Arc<dyn Serve>> {
        let name = declared.job_type.name;
        let limiter = || declared.policy.jobs_per_sec.and_then(invoke::rate_limiter);
        match &declared.policy.runner {
            Runner::Http { url, timeout } => {
                tracing::info!(job_type = name, url = %url.origin().ascii_serialization(), "serving function");
                let worker = FunctionWorker::new(
                    declared.clone(),
                    (url.clone(), *timeout),
                    client.clone(),
                    self.keys.clone(),
                    self.shared.pool.clone(),
                );
                Some(Arc::new(Served::<Value, _>::declared(
                    declared.clone(),
                    worker,
                )))
            }
            Runner::Builtin(builtin) if *builtin == LEDGER_POST => {
                tracing::info!(
                    job_type = name,
                    builtin,
                    "serving declared type with a built-in worker"
                );
                let worker = Throttled::new(LedgerPostWorker, limiter());
                Some(Arc::new(Served::<LedgerPost, _>::declared(
                    declared.clone(),
                    worker,
                )))
            }
            Runner::Builtin(builtin) if *builtin == WEBHOOK_DELIVER => {
                let built = self
                    .webhook
                    .clone()
                    .ok_or(WebhookSetupError::NoKey)
                    .and_then(|settings| WebhookWorker::new(self.shared.pool.clone(), settings));
                match built {
                    Ok(worker) => {
                        tracing::info!(
                            job_type = name,
                            builtin,
                            "serving declared type with a built-in worker"
                        );
                        let worker = Throttled::new(worker, limiter());
                        Some(Arc::new(Served::<WebhookDeliver, _>::declared(
                            declared.clone(),
                            worker,
                        )))
                    }
                    Err(error) => {
                        tracing::error!(job_type = name, %error, "cannot serve this declared type here");
                        None
                    }
                }
            }
            Runner::Builtin(builtin) => {
                tracing::error!(
                    job_type = name,
                    builtin,
                    "no built-in worker of that name in this consumer"
                );
                None
            }
        }
    }

    /// Stops the loops of deleted types whose queues are empty, and removes their durable
    /// consumers.
    async fn retire_drained(&self, serving: &mut BTreeMap<&'static str, Serving>) {
        let retiring: Vec<&'static str> = serving
            .iter()
            .filter(|(_, s)| s.retiring)
            .map(|(name, _)| *name)
            .collect();
        if retiring.is_empty() {
            return;
        }
        let names = &self.shared.names;
        let Ok(stream) = self.shared.js.get_stream(names.jobs_stream()).await else {
            return;
        };
        for name in retiring {
            let durable = names.durable(name);
            let Ok(info) = stream.consumer_info(&durable).await else {
                continue;
            };
            if info.num_pending > 0 || info.num_ack_pending > 0 {
                continue;
            }
            if let Some(current) = serving.remove(name) {
                current.stop.cancel();
            }
            self.served.remove(name);
            // Where this NATS user may not delete consumers (deploy/nats/permissions.conf),
            // `codigo-ctl setup` removes drained durables of undeclared types.
            if let Err(error) = stream.delete_consumer(&durable).await {
                tracing::info!(%error, durable, "durable consumer not deleted here; `codigo-ctl setup` removes it");
            }
            tracing::info!(
                job_type = name,
                "deleted function drained; its consumer is removed"
            );
        }
    }

    /// The process's settings with the type's own: its retry back-off and attempts (the
    /// durable consumer's MaxDeliver), and its concurrency.
    fn shared_for(&self, declared: &DeclaredType) -> Shared {
        let policy = &declared.policy;
        let shared = &self.shared;
        let jetstream = codigo_common::jetstream::declared_consumer_args(&shared.jetstream, policy);
        Shared {
            js: shared.js.clone(),
            names: shared.names.clone(),
            pool: shared.pool.clone(),
            marks: shared.marks.clone(),
            jetstream,
            retry: RetryPolicy {
                base: policy.first_delay,
                max: policy.max_delay,
            },
            concurrency: usize::try_from(policy.concurrency).unwrap_or(1),
            fetch_expires: shared.fetch_expires,
            pull_loops: shared.pull_loops,
            dead_letters: shared.dead_letters.clone(),
        }
    }
}

/// A built-in worker serving a declared type, at the type's rate.
struct Throttled<W> {
    worker: W,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl<W> Throttled<W> {
    fn new(worker: W, limiter: Option<DefaultDirectRateLimiter>) -> Self {
        Self { worker, limiter }
    }

    async fn wait(&self, jobs: usize) {
        if let Some(limiter) = &self.limiter {
            for _ in 0..jobs {
                limiter.until_ready().await;
            }
        }
    }
}

#[async_trait]
impl<K: Payload, W: Worker<K>> Worker<K> for Throttled<W> {
    const OUTSIDE_EFFECTS: bool = W::OUTSIDE_EFFECTS;
    const GROUPS: bool = W::GROUPS;

    async fn work(&self, job: &JobCtx<'_, K>, tx: &mut JobTx) -> Result<Done, JobError> {
        self.wait(1).await;
        self.worker.work(job, tx).await
    }

    async fn work_group(
        &self,
        jobs: &[&JobCtx<'_, K>],
        tx: &mut JobTx,
    ) -> Result<Vec<Done>, JobError> {
        self.wait(jobs.len()).await;
        self.worker.work_group(jobs, tx).await
    }

    fn may_group(&self, job: &JobCtx<'_, K>) -> bool {
        self.worker.may_group(job)
    }

    fn committed(&self, job: &JobCtx<'_, K>) {
        self.worker.committed(job);
    }
}
