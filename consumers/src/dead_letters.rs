//! Dead letters: the original body, with headers saying why, on the dead-letter stream.
use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::HeaderMap;
use bytes::Bytes;
use codigo_common::contract::{headers as names, DlqReason};
use codigo_common::Names;
use time::OffsetDateTime;

use crate::events::{self, DeadLetterRepeated, DeadLettered};

/// Headers copied from the original message; the rest are ours or JetStream's.
const KEPT_HEADERS: &[&str] = &[
    names::JOB_TYPE,
    names::CONTENT_TYPE,
    names::TRACEPARENT,
    names::TRACESTATE,
];

/// Longest error text kept in a header.
const MAX_ERROR_LEN: usize = 1024;

fn header_safe(text: &str) -> String {
    let mut clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() > MAX_ERROR_LEN {
        let mut cut = MAX_ERROR_LEN;
        while !clean.is_char_boundary(cut) {
            cut -= 1;
        }
        clean.truncate(cut);
    }
    clean
}

pub struct DeadLetter<'a> {
    pub job_type: &'a str,
    pub original_subject: &'a str,
    pub payload: Bytes,
    pub original_headers: Option<&'a HeaderMap>,
    pub reason: DlqReason,
    pub error: &'a str,
    pub attempts: u64,
    /// Sequence on the work stream: the de-duplication key of the dead letter.
    pub stream_sequence: u64,
}

#[derive(Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    names: Names,
}

impl DeadLetters {
    pub fn new(js: jetstream::Context, names: Names) -> Self {
        Self { js, names }
    }

    /// Stores a dead letter and waits for JetStream's acknowledgement. A repeat (after a crash
    /// between publishing and terminating the original) is dropped by de-duplication.
    pub async fn publish(&self, letter: DeadLetter<'_>) -> Result<(), DeadLetterError> {
        let mut headers = HeaderMap::new();
        if let Some(original) = letter.original_headers {
            for name in KEPT_HEADERS {
                if let Some(value) = original.get(*name) {
                    headers.insert(*name, value.as_str());
                }
            }
        }
        headers.insert(names::JOB_TYPE, letter.job_type);
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            self.names.dead_letter_id(letter.stream_sequence).as_str(),
        );
        headers.insert(names::DLQ_REASON, letter.reason.as_str());
        headers.insert(names::DLQ_ERROR, header_safe(letter.error).as_str());
        headers.insert(names::DLQ_ATTEMPTS, letter.attempts.to_string().as_str());
        headers.insert(names::ORIGINAL_SUBJECT, letter.original_subject);
        headers.insert(
            names::DLQ_TIME,
            OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
                .as_str(),
        );
        let message = PublishMessage::build()
            .payload(letter.payload)
            .headers(headers);
        let ack = self
            .js
            .send_publish(self.names.dlq_subject(letter.job_type), message)
            .await
            .map_err(|e| DeadLetterError(e.to_string()))?
            .await
            .map_err(|e| DeadLetterError(e.to_string()))?;
        if ack.duplicate {
            events::emit(DeadLetterRepeated {
                job_type: letter.job_type,
                reason: letter.reason,
            });
        } else {
            events::emit(DeadLettered {
                job_type: letter.job_type,
                reason: letter.reason,
                error: letter.error,
                attempts: letter.attempts,
            });
        }
        Ok(())
    }
}

/// A dead letter JetStream did not store.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot store the dead letter: {0}; is JetStream reachable and the dead-letter stream there?"
)]
pub struct DeadLetterError(String);
