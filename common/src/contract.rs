//! Values one crate writes and another reads: job states, dead-letter reasons and header
//! names. Spelled here once, so that the writer and every reader agree by construction.
use std::fmt;
use std::str::FromStr;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

/// A value that is not one of an enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a known {what}; known: {known}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub known: String,
}

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(value: &str) -> Result<Self, UnknownValue> {
                match value {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        what: $what,
                        value: value.to_owned(),
                        known: [$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}

named_enum!(
    /// The `jobs.status` column (its CHECK constraint lists the same values).
    JobState, "job state", {
        /// Stored by JetStream, recorded by the gateway before its 202; no worker has
        /// finished a delivery of it yet.
        Queued => "queued",
        /// A delayed job waiting for its `run_at` (read as `queued` once that has passed).
        Scheduled => "scheduled",
        Running => "running",
        /// A delivery failed; JetStream redelivers it after a delay.
        Retrying => "retrying",
        Succeeded => "succeeded",
        Failed => "failed",
        DeadLettered => "dead_lettered",
        /// Cancelled before it ran (`DELETE /v1/jobs/{id}` of a delayed job).
        Cancelled => "cancelled",
        /// Its deadline passed before a worker could start (or retry) it: not run.
        Expired => "expired",
    }
);

impl JobState {
    /// No later delivery changes a job in this state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::DeadLettered | Self::Cancelled | Self::Expired
        )
    }
}

// Stored as text, so that the column stays readable by hand and by other tools.
impl Type<Postgres> for JobState {
    fn type_info() -> PgTypeInfo {
        <&str as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <&str as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for JobState {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&str as Encode<Postgres>>::encode(self.as_str(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for JobState {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(<&str as Decode<Postgres>>::decode(value)?.parse()?)
    }
}

named_enum!(
    /// Why a job was dead-lettered (`Codigo-Dlq-Reason`, the `reason` label of
    /// `codigo_consumer_dead_letters_total`).
    DlqReason, "dead-letter reason", {
        /// The body is not JSON.
        Decode => "decode",
        /// The envelope or its payload breaks the schema.
        Schema => "schema",
        /// The handler found the job can never succeed.
        Permanent => "permanent",
        /// JetStream gave up after the consumer's MaxDeliver.
        MaxDeliveries => "max_deliveries",
    }
);

/// Header names of the work and dead-letter streams.
pub mod headers {
    /// The job type, on every job message and dead letter.
    pub const JOB_TYPE: &str = "Codigo-Job-Type";
    /// A [`super::DlqReason`].
    pub const DLQ_REASON: &str = "Codigo-Dlq-Reason";
    /// The last error, made header-safe and cut to 1 KiB.
    pub const DLQ_ERROR: &str = "Codigo-Dlq-Error";
    /// Deliveries made before the job was dead-lettered.
    pub const DLQ_ATTEMPTS: &str = "Codigo-Dlq-Attempts";
    /// When the job was dead-lettered (RFC 3339).
    pub const DLQ_TIME: &str = "Codigo-Dlq-Time";
    /// The work subject the job was delivered on.
    pub const ORIGINAL_SUBJECT: &str = "Codigo-Original-Subject";
    /// On a replayed job: the dead-letter stream sequence it came from.
    pub const REPLAY_OF: &str = "Codigo-Replay-Of";
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// W3C trace context, carried from the producer to the consumer.
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(*state));
        }
        for reason in DlqReason::ALL {
            assert_eq!(reason.as_str().parse::<DlqReason>(), Ok(*reason));
        }
        let unknown = "done".parse::<JobState>().expect_err("not a state");
        assert!(unknown.known.contains("succeeded"), "{unknown}");
    }

    /// The enum and the migrations' CHECK constraint list the same states.
    #[test]
    fn job_states_match_the_schema() {
        // The latest migration that sets the CHECK list.
        let migration = include_str!("../migrations/0006_jobs_queued.sql");
        let check = migration
            .split("status IN (")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .expect("jobs.status has a CHECK list");
        let listed: Vec<&str> = check
            .split(',')
            .map(|s| s.trim().trim_matches('\''))
            .collect();
        let ours: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(listed, ours);
    }
}
