//! Delayed jobs: when a job is due, and finding one that still waits.
//!
//! A delayed job is stored at once, as a JetStream message schedule (`Nats-Schedule: @at`,
//! nats-server 2.12+) on a subject of its own in the schedules stream; when it is due the
//! server publishes it to a due subject, which the work stream sources as the job's work
//! subject. Nothing of ours has to run for it to start on time, and it survives restarts of
//! every process as any stored message does. (The work stream cannot hold the schedules
//! itself: the server allows them only with discard old, which would drop accepted jobs when
//! the stream is full.)
use std::time::Duration;

use async_nats::jetstream::stream::{DeleteMessageErrorKind, LastRawMessageErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use codigo_common::Names;
use codigo_schemas::Envelope;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::problem::Problem;

/// When a job asking for `run_at` or `delay` is due: `None` to run it now (neither given, or a
/// time already past), a refusal for both at once, an unreadable time or one further ahead
/// than `max_delay`.
pub fn due_time(
    run_at: Option<&str>,
    delay: Option<f64>,
    max_delay: Duration,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, Problem> {
    let too_far = || {
        Problem::invalid_request(format!(
            "a job can be delayed at most {} (CODIGO_MAX_DELAY); send an earlier run_at or a \
             shorter delay",
            humantime::format_duration(max_delay)
        ))
    };
    let due = match (run_at, delay) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(Problem::invalid_request(
                "run_at and delay both say when to start; send one of them",
            ))
        }
        (Some(text), None) => OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
            Problem::invalid_request(format!(
                "run_at {text:?} is not an RFC 3339 time; write it like 2026-12-24T18:00:00Z"
            ))
        })?,
        (None, Some(seconds)) => {
            if !seconds.is_finite() || seconds < 0.0 {
                return Err(Problem::invalid_request(
                    "delay is a number of seconds from now, 0 or more",
                ));
            }
            if seconds > max_delay.as_secs_f64() {
                return Err(too_far());
            }
            now + Duration::from_secs_f64(seconds)
        }
    };
    if due <= now {
        return Ok(None);
    }
    if due - now > max_delay {
        return Err(too_far());
    }
    // To the microsecond, as Postgres keeps it: the time the 202 tells is the one GET answers.
    Ok(Some(
        due.replace_microsecond(due.microsecond()).unwrap_or(due),
    ))
}

/// A job's deadline from `expires_at` or `ttl`: refused for both at once, an unreadable time, a
/// time already past, or one no later than the job's own `run_at` (it could never run).
pub fn deadline(
    expires_at: Option<&str>,
    ttl: Option<f64>,
    run_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, Problem> {
    let deadline = match (expires_at, ttl) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(Problem::invalid_request(
                "expires_at and ttl both set the deadline; send one of them",
            ))
        }
        (Some(text), None) => OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
            Problem::invalid_request(format!(
                "expires_at {text:?} is not an RFC 3339 time; write it like 2026-12-24T19:00:00Z"
            ))
        })?,
        (None, Some(seconds)) => {
            if !seconds.is_finite() || seconds <= 0.0 || seconds > MAX_TTL.as_secs_f64() {
                return Err(Problem::invalid_request(
                    "ttl is a number of seconds from now, more than 0 and at most a year",
                ));
            }
            now + Duration::from_secs_f64(seconds)
        }
    };
    if deadline <= now {
        return Err(Problem::invalid_request(
            "expires_at is past already: the job could never run; send a later one",
        ));
    }
    if run_at.is_some_and(|run_at| run_at >= deadline) {
        return Err(Problem::invalid_request(
            "the job would fall due (run_at, delay) no earlier than its deadline (expires_at, \
             ttl), so it could never run; move one of them",
        ));
    }
    Ok(Some(deadline))
}

/// Longest `ttl` taken.
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// The `Nats-Schedule` header of a job due at `due`.
pub fn schedule_header(due: OffsetDateTime) -> String {
    let at = due
        .to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default();
    format!("@at {at}")
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the scheduled jobs from JetStream: {0}; retry shortly")]
pub struct LookupError(String);

/// A delayed job waiting for its time: its envelope, and where it is stored.
#[derive(Debug)]
pub struct Waiting {
    pub envelope: Envelope,
    pub sequence: u64,
}

async fn stream(
    js: &jetstream::Context,
    name: String,
) -> Result<jetstream::stream::Stream<()>, LookupError> {
    js.get_stream_no_info(name)
        .await
        .map_err(|e| LookupError(e.to_string()))
}

/// Job `id` if it waits for its time.
pub async fn find(
    js: &jetstream::Context,
    names: &Names,
    id: Uuid,
) -> Result<Option<Waiting>, LookupError> {
    match stream(js, names.scheduled_stream())
        .await?
        .get_last_raw_message_by_subject(&names.scheduled_filter(&id))
        .await
    {
        Ok(message) => Ok(serde_json::from_slice(&message.payload)
            .ok()
            .map(|envelope| Waiting {
                envelope,
                sequence: message.sequence,
            })),
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(error) => Err(LookupError(error.to_string())),
    }
}

/// Removes message `sequence` of stream `stream_name`: a waiting job so that it never becomes due, or a
/// cancelled one from the work stream. `false` when it is no longer there (a delayed job the
/// server published when it fell due, a queued one a worker has taken).
pub async fn remove(
    js: &jetstream::Context,
    stream_name: String,
    sequence: u64,
) -> Result<bool, LookupError> {
    match stream(js, stream_name)
        .await?
        .delete_message(sequence)
        .await
    {
        Ok(removed) => Ok(removed),
        Err(error) => match error.kind() {
            DeleteMessageErrorKind::JetStream(refused)
                if matches!(
                    refused.error_code(),
                    ErrorCode::NO_MESSAGE_FOUND | ErrorCode::STREAM_MESSAGE_DELETE_FAILED
                ) =>
            {
                Ok(false)
            }
            _ => Err(LookupError(error.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(30 * 24 * 3600);

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2026-12-07T12:00:00Z", &Rfc3339).unwrap()
    }

    fn due(run_at: Option<&str>, delay: Option<f64>) -> Result<Option<OffsetDateTime>, String> {
        due_time(run_at, delay, MAX, now()).map_err(|p| p.detail)
    }

    #[test]
    fn a_time_ahead_is_kept_and_the_past_means_now() {
        let later = OffsetDateTime::parse("2026-12-07T13:30:00+01:00", &Rfc3339).unwrap();
        assert_eq!(
            due(Some("2026-12-07T13:30:00+01:00"), None),
            Ok(Some(later))
        );
        assert_eq!(due(Some("2026-12-07T11:59:59Z"), None), Ok(None));
        assert_eq!(due(None, Some(0.0)), Ok(None));
        assert_eq!(
            due(None, Some(1.5)),
            Ok(Some(now() + Duration::from_millis(1500)))
        );
        assert_eq!(due(None, None), Ok(None));
    }

    #[test]
    fn refusals_say_what_to_send() {
        for (run_at, delay, says) in [
            (Some("2026-12-08T00:00:00Z"), Some(5.0), "send one of them"),
            (Some("tomorrow"), None, "RFC 3339"),
            (Some("2026-12-07 13:00"), None, "RFC 3339"),
            (None, Some(-1.0), "0 or more"),
            (None, Some(f64::NAN), "0 or more"),
            (None, Some(31.0 * 24.0 * 3600.0), "at most 30days"),
            (Some("2027-02-01T00:00:00Z"), None, "CODIGO_MAX_DELAY"),
        ] {
            let refused = due(run_at, delay).unwrap_err();
            assert!(refused.contains(says), "{run_at:?} {delay:?}: {refused}");
        }
    }

    #[test]
    fn deadlines_are_kept_or_refused_with_the_reason() {
        let at = |text: &str| OffsetDateTime::parse(text, &Rfc3339).unwrap();
        let deadline = |expires_at, ttl, run_at| {
            super::deadline(expires_at, ttl, run_at, now()).map_err(|p| p.detail)
        };
        assert_eq!(deadline(None, None, None), Ok(None));
        assert_eq!(
            deadline(Some("2026-12-07T12:05:00Z"), None, None),
            Ok(Some(at("2026-12-07T12:05:00Z")))
        );
        assert_eq!(
            deadline(None, Some(300.0), Some(at("2026-12-07T12:01:00Z"))),
            Ok(Some(at("2026-12-07T12:05:00Z")))
        );
        for (expires_at, ttl, run_at, says) in [
            (
                Some("2026-12-07T12:05:00Z"),
                Some(5.0),
                None,
                "send one of them",
            ),
            (Some("noon"), None, None, "RFC 3339"),
            (Some("2026-12-07T11:00:00Z"), None, None, "past already"),
            (None, Some(0.0), None, "more than 0"),
            (None, Some(-3.0), None, "more than 0"),
            (
                None,
                Some(60.0),
                Some(at("2026-12-07T12:01:00Z")),
                "never run",
            ),
        ] {
            let refused = deadline(expires_at, ttl, run_at).unwrap_err();
            assert!(refused.contains(says), "{expires_at:?} {ttl:?}: {refused}");
        }
    }

    #[test]
    fn the_schedule_header_is_utc() {
        let due = OffsetDateTime::parse("2026-12-07T13:30:00.25+01:00", &Rfc3339).unwrap();
        assert_eq!(schedule_header(due), "@at 2026-12-07T12:30:00.25Z");
    }
}
