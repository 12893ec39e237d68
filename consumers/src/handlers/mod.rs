//! The built-in job kinds' workers, and the runtime that serves them.
pub mod ledger;
pub mod webhook;

use codigo_schemas::{BadSchema, LedgerPost, WebhookDeliver, LEDGER_POST, WEBHOOK_DELIVER};
use sqlx::PgPool;

use crate::faults::Faults;
use crate::runtime::Runtime;

pub struct HandlerSettings {
    pub pool: PgPool,
    pub faults: Faults,
    pub webhook: Option<webhook::WebhookSettings>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookSetupError),
    #[error(transparent)]
    Schema(#[from] BadSchema),
}

/// A runtime with the built-in workers of the given job types.
pub fn runtime(settings: HandlerSettings, job_types: &[&str]) -> Result<Runtime, SetupError> {
    let HandlerSettings {
        pool,
        faults,
        webhook,
    } = settings;
    let mut runtime = Runtime::new();
    if job_types.contains(&LEDGER_POST) {
        runtime.add_worker::<LedgerPost>(faults.wrap(ledger::LedgerPostWorker))?;
    }
    if job_types.contains(&WEBHOOK_DELIVER) {
        let settings = webhook.ok_or(webhook::WebhookSetupError::NoKey)?;
        let worker = webhook::WebhookWorker::new(pool, settings)?;
        runtime.add_worker::<WebhookDeliver>(faults.wrap(worker))?;
    }
    Ok(runtime)
}
