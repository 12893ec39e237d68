//! `dlq replay`: dead letters published again to the subject they came from, at a bounded
//! rate, under a new `Nats-Msg-Id`; the job id inside is unchanged, so a job that already took
//! effect is not applied again.
use codigo_common::contract::headers as codigo_headers;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use serde::Serialize;
use serde_json::json;

use super::letters::{DeadLetters, Letter};
use crate::Format;

/// `10/s` or `10`: replays per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.trim().strip_suffix("/s").unwrap_or(text.trim());
    match number.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate; use e.g. 10/s (replays per second, more than 0)"
        )),
    }
}

#[derive(Debug, Serialize)]
struct Replayed {
    seq: u64,
    job_id: Option<String>,
    subject: String,
    /// Sequence of the new message on the work stream.
    new_seq: u64,
    /// JetStream dropped it: the same dead letter was replayed within the duplicate window.
    duplicate: bool,
    deleted: bool,
}

pub async fn replay(
    dead_letters: &DeadLetters,
    chosen: Vec<Letter>,
    rate: f64,
    keep: bool,
    format: Format,
) -> anyhow::Result<()> {
    let DeadLetters { js, names, .. } = dead_letters;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let jobs_prefix = format!("{}.jobs.", names.namespace());
    let mut done = Vec::new();
    let mut next_at = tokio::time::Instant::now();
    for letter in chosen {
        let subject = letter.original_subject.clone();
        // Only ever back onto this namespace's work stream, whatever a header says.
        if !subject.starts_with(&jobs_prefix) || names.job_type_of(&subject).is_none() {
            anyhow::bail!(
                "dead letter {} has original subject {subject:?}, outside {}*; not replayed \
                 ({} replayed before it)",
                letter.seq,
                jobs_prefix,
                done.len()
            );
        }
        tokio::time::sleep_until(next_at).await;
        next_at = tokio::time::Instant::now() + interval;
        let mut headers = HeaderMap::new();
        for name in [
            codigo_headers::JOB_TYPE,
            codigo_headers::CONTENT_TYPE,
            codigo_headers::TRACEPARENT,
            codigo_headers::TRACESTATE,
        ] {
            if let Some(value) = letter.headers.get(name) {
                headers.insert(name, value.as_str());
            }
        }
        // A new message id: the original one may still be in the duplicate window. It is
        // stable per dead letter, so replaying the same one twice in a row stores it once.
        headers.insert(
            "Nats-Msg-Id",
            format!("replay:{}:{}", names.dlq_stream(), letter.seq).as_str(),
        );
        headers.insert(codigo_headers::REPLAY_OF, letter.seq.to_string().as_str());
        let ack = js
            .send_publish(
                subject.clone(),
                jetstream::message::PublishMessage::build()
                    .payload(letter.payload.clone())
                    .headers(headers),
            )
            .await
            .map_err(|e| anyhow::anyhow!("replaying dead letter {}: {e}", letter.seq))?
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "replaying dead letter {}: JetStream did not store it ({e}); {} replayed \
                     before it; run again to continue",
                    letter.seq,
                    done.len()
                )
            })?;
        let deleted = !keep
            && dead_letters.delete(letter.seq).await.map_err(|e| {
                anyhow::anyhow!(
                    "dead letter {} was replayed but not deleted ({e}); delete it with \
                     `codigo-ctl dlq purge` or replaying it again does nothing new",
                    letter.seq
                )
            })?;
        done.push(Replayed {
            seq: letter.seq,
            job_id: letter.job_id,
            subject,
            new_seq: ack.sequence,
            duplicate: ack.duplicate,
            deleted,
        });
    }
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({"replayed": done}))?
        ),
        Format::Text => {
            for r in &done {
                println!(
                    "replayed {} (job {}) to {} as {}{}{}",
                    r.seq,
                    r.job_id.as_deref().unwrap_or("-"),
                    r.subject,
                    r.new_seq,
                    if r.duplicate {
                        ", dropped as a duplicate: replayed within the duplicate window already"
                    } else {
                        ""
                    },
                    if r.deleted {
                        ", dead letter deleted"
                    } else {
                        ""
                    }
                );
            }
            println!("{} dead letters replayed", done.len());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10/s"), Ok(10.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        for bad in ["0", "-1/s", "fast", "inf"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
