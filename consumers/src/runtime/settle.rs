//! Settling a job with JetStream: exactly one of ack, nak(delay) or term per delivery, each
//! counted by its event.
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use codigo_common::contract::{DlqReason, JobState};
use codigo_common::telemetry;
use time::OffsetDateTime;
use tracing::Instrument;

use super::dead_letter::dead_letter;
use super::delivery::Delivery;
use super::job::{ErrorKind, JobError};
use super::Shared;
use crate::events::{JobAcked, JobCancelled, JobNaked, Meters};
use crate::store::{self, JobRecord};

/// Hands a job back to JetStream, redelivered after `delay`.
pub(crate) async fn nak(meters: &Meters, message: &jetstream::Message, delay: Duration) {
    let kind = if delay.is_zero() {
        AckKind::Nak(None)
    } else {
        AckKind::Nak(Some(delay))
    };
    match message.ack_with(kind).await {
        Ok(()) => meters.emit(JobNaked),
        Err(error) => {
            tracing::warn!(%error, "nak failed; the job returns after its ack wait")
        }
    }
}

/// Acks a job whose success is committed.
pub(crate) async fn ack(
    meters: &Meters,
    message: &jetstream::Message,
    due_at: OffsetDateTime,
    outside_effects: bool,
) -> Result<(), async_nats::Error> {
    let ack_span = telemetry::detail_span(|| tracing::info_span!("ack"));
    if outside_effects {
        confirmed_ack(message).instrument(ack_span).await?;
    } else {
        message.ack().instrument(ack_span).await?;
    }
    let age = OffsetDateTime::now_utc() - due_at;
    meters.emit(JobAcked {
        age: age.try_into().unwrap_or_default(),
    });
    Ok(())
}

/// Acks and waits for JetStream to confirm it, trying a few times: a lost ack means a
/// redelivery, which for a job with outside effects is work done twice unless the worker
/// finds its own record of it.
async fn confirmed_ack(message: &jetstream::Message) -> Result<(), async_nats::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match message.double_ack().await {
            Ok(()) => return Ok(()),
            Err(error) if attempt >= 3 => return Err(error),
            Err(error) => {
                tracing::debug!(%error, attempt, "ack not confirmed; sending it again");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
        }
    }
}

/// Settles a job that failed: a retry is recorded and naked with its delay, a permanent
/// failure dead-lettered and termed.
pub(crate) async fn settle_failure(
    shared: &Shared,
    meters: &Meters,
    delivery: &Delivery<'_>,
    record: &JobRecord<'_>,
    error: &JobError,
) {
    let after = match error.kind() {
        ErrorKind::Permanent => {
            let reason = DlqReason::Permanent;
            dead_letter(
                shared,
                meters,
                delivery,
                reason,
                error.message(),
                Some(record),
            )
            .await;
            return;
        }
        ErrorKind::Retry { after } => after,
        // Held until it passes; reaching here means the hold was cut short.
        ErrorKind::Unavailable => None,
    };
    let attempt = delivery.attempt;
    let delay = after.unwrap_or_else(|| shared.retry.delay(attempt));
    let retry_at = OffsetDateTime::now_utc() + delay;
    match store::record_retry(
        &shared.pool,
        record,
        error.message(),
        delivery.stream_sequence,
        retry_at,
    )
    .await
    {
        Ok(Some(JobState::Cancelled)) => {
            tracing::info!(%error, attempt, "job failed after its cancellation; not retried");
            settle_cancelled(meters, delivery).await;
            return;
        }
        Ok(_) => {}
        Err(db) => tracing::debug!(error = %db, "could not record the retry"),
    }
    tracing::info!(%error, ?delay, attempt, "job will be retried");
    nak(meters, delivery.message, delay).await;
}

/// Takes a cancelled job out of the work stream without running it (again), counted apart
/// from successes and failures.
pub(crate) async fn settle_cancelled(meters: &Meters, delivery: &Delivery<'_>) {
    match delivery.message.ack().await {
        Ok(()) => meters.emit(JobCancelled),
        Err(error) => {
            tracing::warn!(%error, "ack of a cancelled job failed; it returns and is skipped again")
        }
    }
}
