//! Dead letters as operators see them: read from the dead-letter stream, filtered, deleted.
use codigo_common::contract::headers as codigo_headers;
use std::time::Duration;

use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use async_nats::jetstream::{self, consumer, message::StreamMessage};
use async_nats::HeaderMap;
use bytes::Bytes;
use clap::Args;
use codigo_common::config::NatsArgs;
use codigo_common::nats::InitialConnect;
use codigo_common::{nats, Names};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Debug, Clone, Default, Args)]
pub struct Filter {
    /// Only this job type.
    #[arg(long)]
    pub(super) job_type: Option<String>,
    /// Only this reason: decode, schema, permanent, max_deliveries.
    #[arg(long)]
    pub(super) reason: Option<String>,
    /// Only dead letters stored at or after this time: RFC 3339, or a duration ago (`90s`,
    /// `30m`, `1h`, `2d`, `1w`).
    #[arg(long, value_parser = parse_time)]
    pub(super) since: Option<OffsetDateTime>,
    /// Only dead letters stored before this time (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    pub(super) until: Option<OffsetDateTime>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.job_type.is_none()
            && self.reason.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    pub fn matches(&self, letter: &Letter) -> bool {
        self.reason.as_deref().is_none_or(|r| r == letter.reason)
            && self
                .job_type
                .as_deref()
                .is_none_or(|t| t == letter.job_type)
            && self.since.is_none_or(|since| letter.time >= since)
            && self.until.is_none_or(|until| letter.time < until)
    }
}

/// RFC 3339, or a duration with units meaning that long ago.
pub fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(time);
    }
    humantime::parse_duration(text.trim())
        .ok()
        .filter(|ago| !ago.is_zero())
        .and_then(|ago| OffsetDateTime::now_utc().checked_sub(ago.try_into().ok()?))
        .ok_or_else(|| {
            format!(
                "{text:?} is neither an RFC 3339 time (2026-01-02T03:04:05Z) nor a duration \
                 (90s, 30m, 1h30m, 2d, 1w)"
            )
        })
}

/// One dead letter as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Letter {
    pub(super) seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub(super) time: OffsetDateTime,
    pub(super) job_type: String,
    pub(super) reason: String,
    pub(super) attempts: Option<u64>,
    pub(super) job_id: Option<String>,
    pub(super) error: String,
    pub(super) original_subject: String,
    #[serde(skip)]
    pub(super) headers: HeaderMap,
    #[serde(skip)]
    pub(super) payload: Bytes,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

impl Letter {
    fn new(
        names: &Names,
        seq: u64,
        time: OffsetDateTime,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Self {
        let job_type = match header(&headers, codigo_headers::JOB_TYPE) {
            t if !t.is_empty() => t,
            _ => names.job_type_of(subject).unwrap_or_default().to_owned(),
        };
        let job_id = serde_json::from_slice::<Value>(&payload)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
        Self {
            seq,
            time,
            job_type,
            reason: header(&headers, codigo_headers::DLQ_REASON),
            attempts: header(&headers, codigo_headers::DLQ_ATTEMPTS).parse().ok(),
            job_id,
            error: header(&headers, codigo_headers::DLQ_ERROR),
            original_subject: header(&headers, codigo_headers::ORIGINAL_SUBJECT),
            headers,
            payload,
        }
    }

    fn stored(names: &Names, message: StreamMessage) -> Self {
        Self::new(
            names,
            message.sequence,
            message.time,
            message.subject.as_str(),
            message.headers,
            message.payload,
        )
    }
}

/// The namespace's dead-letter stream, opened for reading, replaying and deleting.
pub struct DeadLetters {
    pub(super) js: jetstream::Context,
    pub(super) stream: Stream,
    pub(super) names: Names,
}

impl DeadLetters {
    pub async fn open(nats_args: &NatsArgs, names: &Names) -> anyhow::Result<Self> {
        let client = nats::connect(nats_args, "codigo-ctl", InitialConnect::FailFast).await?;
        let js = jetstream::new(client);
        let stream = js.get_stream(names.dlq_stream()).await.map_err(|e| {
            anyhow::anyhow!(
                "dead-letter stream {} not found ({e}); run `codigo-ctl setup` and check CODIGO_NAMESPACE",
                names.dlq_stream()
            )
        })?;
        Ok(Self {
            js,
            stream,
            names: names.clone(),
        })
    }

    /// The dead letter stored at `seq`.
    pub async fn get(&self, seq: u64) -> anyhow::Result<Letter> {
        let message = self.stream.get_raw_message(seq).await.map_err(|e| {
            anyhow::anyhow!(
                "no dead letter {seq} in {} ({e}); `codigo-ctl dlq list` shows what is there",
                self.names.dlq_stream()
            )
        })?;
        Ok(Letter::stored(&self.names, message))
    }

    /// Deletes the dead letter at `seq`: `false` if it was gone already (deleted meanwhile,
    /// or aged out).
    pub async fn delete(&self, seq: u64) -> anyhow::Result<bool> {
        let Err(error) = self.stream.delete_message(seq).await else {
            return Ok(true);
        };
        match self.stream.get_raw_message(seq).await {
            Err(lookup) if lookup.kind() == RawMessageErrorKind::NoMessageFound => Ok(false),
            _ => Err(anyhow::anyhow!(
                "deleting dead letter {seq} failed: {error}"
            )),
        }
    }

    /// Every dead letter matching `filter`, oldest first, read with an ordered consumer (one
    /// pass, no acknowledgements, nothing changed on the stream).
    pub async fn matching(&mut self, filter: &Filter) -> anyhow::Result<Vec<Letter>> {
        let filter_subject = filter
            .job_type
            .as_deref()
            .map(|t| self.names.dlq_subject(t))
            .unwrap_or_else(|| self.names.dlq_wildcard());
        let stored: u64 = {
            let mut subjects = self.stream.info_with_subjects(&filter_subject).await?;
            let mut total = 0u64;
            while let Some(entry) = subjects.next().await {
                total += entry?.1 as u64;
            }
            total
        };
        let mut out = Vec::new();
        if stored == 0 {
            return Ok(out);
        }
        let deliver_policy = match filter.since {
            Some(start_time) => consumer::DeliverPolicy::ByStartTime { start_time },
            None => consumer::DeliverPolicy::All,
        };
        let reader = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject,
                deliver_policy,
                ..Default::default()
            })
            .await?;
        let mut messages = reader.messages().await?;
        loop {
            // Nothing after --since: the ordered consumer then simply stays quiet.
            let next = match tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
                Ok(Some(next)) => next?,
                Ok(None) | Err(_) => break,
            };
            let info = next.info().map_err(|e| anyhow::anyhow!("{e}"))?;
            let (seq, time, pending) = (info.stream_sequence, info.published, info.pending);
            let letter = Letter::new(
                &self.names,
                seq,
                time,
                next.subject.as_str(),
                next.headers.clone().unwrap_or_default(),
                next.payload.clone(),
            );
            if filter.until.is_some_and(|until| time >= until) {
                break;
            }
            if filter.matches(&letter) {
                out.push(letter);
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let at = parse_time("2026-01-02T03:04:05Z").expect("rfc3339");
        assert_eq!(at.unix_timestamp(), 1_767_323_045);
        for (ago, secs) in [
            ("1h", 3600),
            ("1h30m", 5400),
            ("2d", 172_800),
            ("1w", 604_800),
        ] {
            let then = parse_time(ago).expect(ago);
            let expected = OffsetDateTime::now_utc() - Duration::from_secs(secs);
            assert!(
                (then - expected).abs() < time::Duration::seconds(5),
                "{ago}"
            );
        }
        for bad in ["", "10", "h", "5x", "0s", "yesterday"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
