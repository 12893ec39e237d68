//! Dead-lettering a delivery: the dead letter stored first, then the jobs row, then the term.
use async_nats::jetstream::AckKind;
use codigo_common::contract::{DlqReason, JobState};

use super::delivery::Delivery;
use super::settle::nak;
use super::Shared;
use crate::dead_letters::DeadLetter;
use crate::events::{JobTermed, Meters};
use crate::store::{self, JobRecord};

/// Dead-letters the message, then terminates it. If the dead letter cannot be stored, the
/// message is naked instead: nothing is dropped without a dead letter.
pub(crate) async fn dead_letter(
    shared: &Shared,
    meters: &Meters,
    delivery: &Delivery<'_>,
    reason: DlqReason,
    error: &str,
    record: Option<&JobRecord<'_>>,
) {
    let message = delivery.message;
    let stored = shared
        .dead_letters
        .publish(DeadLetter {
            job_type: delivery.job_type,
            original_subject: delivery.subject,
            payload: message.payload.clone(),
            original_headers: message.headers.as_ref(),
            reason,
            error,
            attempts: delivery.attempt,
            stream_sequence: delivery.stream_sequence,
        })
        .await;
    if let Err(dlq_error) = stored {
        tracing::error!(error = %dlq_error, "cannot store the dead letter; retrying the job later");
        nak(meters, message, shared.retry.delay(delivery.attempt)).await;
        return;
    }
    if let Some(record) = record {
        if let Err(db) = store::record_failure(
            &shared.pool,
            record,
            JobState::DeadLettered,
            error,
            delivery.stream_sequence,
        )
        .await
        {
            tracing::warn!(error = %db, "dead letter stored but the jobs row was not updated");
        }
    }
    match message.ack_with(AckKind::Term).await {
        Ok(()) => meters.emit(JobTermed),
        Err(e) => {
            tracing::warn!(error = %e, "term failed; the redelivery is dead-lettered again")
        }
    }
}
