//! `codigo-ctl dlq list|show|replay|purge`: the dead-letter stream for operators. A replay
//! republishes the original body to its original subject under a new `Nats-Msg-Id`; the job id
//! inside is unchanged, so a job that already took effect is not applied again.
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream::Stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use clap::{Args, Subcommand};
use codigo_common::config::NatsArgs;
use codigo_common::contract::headers as codigo_headers;
use codigo_common::nats::InitialConnect;
use codigo_common::{nats, Names};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::Format;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        #[command(flatten)]
        filter: Filter,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print one dead letter: headers and body.
    Show {
        /// Sequence number in the dead-letter stream (from `dlq list`).
        seq: u64,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Publish dead letters again to the subject they came from, then delete them.
    Replay {
        /// Sequence numbers to replay; without them, every dead letter matching the filters.
        seqs: Vec<u64>,
        #[command(flatten)]
        filter: Filter,
        /// Replay every dead letter when neither sequences nor filters are given.
        #[arg(long)]
        all: bool,
        /// Most replays per second, e.g. `10/s` or `10`.
        #[arg(long, default_value = "10/s", value_parser = parse_rate)]
        rate: f64,
        /// Keep the dead letters after replaying them.
        #[arg(long)]
        keep: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Delete dead letters matching the filters (all of them without filters).
    Purge {
        #[command(flatten)]
        filter: Filter,
        /// Really delete; without it nothing is deleted.
        #[arg(long)]
        yes: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Debug, Clone, Default, Args)]
pub struct Filter {
    /// Only this job type.
    #[arg(long)]
    pub job_type: Option<String>,
    /// Only this reason: decode, schema, permanent, max_deliveries.
    #[arg(long)]
    pub reason: Option<String>,
    /// Only dead letters stored at or after this time: RFC 3339, or a duration ago (`90s`,
    /// `30m`, `1h`, `2d`, `1w`).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<OffsetDateTime>,
    /// Only dead letters stored before this time (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<OffsetDateTime>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.job_type.is_none()
            && self.reason.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    fn matches(&self, letter: &Letter) -> bool {
        self.reason.as_deref().is_none_or(|r| r == letter.reason)
            && self
                .job_type
                .as_deref()
                .is_none_or(|t| t == letter.job_type)
            && self.since.is_none_or(|since| letter.time >= since)
            && self.until.is_none_or(|until| letter.time < until)
    }
}

/// A duration like `90s`, `30m`, `1h30m`, `2d` or `1w`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration; use e.g. 90s, 30m, 1h30m, 2d or 1w");
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// RFC 3339, or a duration meaning that long ago.
pub fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(time);
    }
    parse_duration(text)
        .map(|ago| OffsetDateTime::now_utc() - ago)
        .map_err(|_| {
            format!(
                "{text:?} is neither an RFC 3339 time (2026-01-02T03:04:05Z) nor a duration \
                 (90s, 30m, 1h, 2d, 1w)"
            )
        })
}

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

/// One dead letter as listed.
#[derive(Debug, Clone, Serialize)]
struct Letter {
    seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
    job_type: String,
    reason: String,
    attempts: Option<u64>,
    job_id: Option<String>,
    error: String,
    original_subject: String,
    #[serde(skip)]
    headers: HeaderMap,
    #[serde(skip)]
    payload: Bytes,
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
}

async fn dlq_stream(
    nats_args: &NatsArgs,
    names: &Names,
) -> anyhow::Result<(jetstream::Context, Stream)> {
    let client = nats::connect(nats_args, "codigo-ctl", InitialConnect::FailFast).await?;
    let js = jetstream::new(client);
    let stream = js.get_stream(names.dlq_stream()).await.map_err(|e| {
        anyhow::anyhow!(
            "dead-letter stream {} not found ({e}); run `codigo-ctl setup` and check CODIGO_NAMESPACE",
            names.dlq_stream()
        )
    })?;
    Ok((js, stream))
}

/// Every dead letter matching `filter`, oldest first, read with an ordered consumer (one pass,
/// no acknowledgements, nothing changed on the stream).
async fn letters(
    stream: &mut Stream,
    names: &Names,
    filter: &Filter,
) -> anyhow::Result<Vec<Letter>> {
    let filter_subject = filter
        .job_type
        .as_deref()
        .map(|t| names.dlq_subject(t))
        .unwrap_or_else(|| names.dlq_wildcard());
    let stored: u64 = {
        let mut subjects = stream.info_with_subjects(&filter_subject).await?;
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
    let reader = stream
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
            names,
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

pub async fn run(nats_args: &NatsArgs, names: &Names, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List {
            filter,
            limit,
            format,
        } => {
            let (_, mut stream) = dlq_stream(nats_args, names).await?;
            let mut found = letters(&mut stream, names, &filter).await?;
            found.truncate(limit);
            print_list(&found, format)
        }
        DlqCommand::Show { seq, format } => {
            let (_, stream) = dlq_stream(nats_args, names).await?;
            let message = stream.get_raw_message(seq).await.map_err(|e| {
                anyhow::anyhow!(
                    "no dead letter {seq} in {} ({e}); `codigo-ctl dlq list` shows what is there",
                    names.dlq_stream()
                )
            })?;
            let letter = Letter::new(
                names,
                message.sequence,
                message.time,
                message.subject.as_str(),
                message.headers,
                message.payload,
            );
            print_show(&letter, format)
        }
        DlqCommand::Replay {
            seqs,
            filter,
            all,
            rate,
            keep,
            format,
        } => {
            if seqs.is_empty() && filter.is_empty() && !all {
                anyhow::bail!(
                    "name the dead letters to replay: sequence numbers, filters \
                     (--job-type, --reason, --since, --until), or --all"
                );
            }
            let (js, mut stream) = dlq_stream(nats_args, names).await?;
            let chosen = if seqs.is_empty() {
                letters(&mut stream, names, &filter).await?
            } else {
                let mut chosen = Vec::new();
                for seq in seqs {
                    let message = stream.get_raw_message(seq).await.map_err(|e| {
                        anyhow::anyhow!("no dead letter {seq} in {} ({e})", names.dlq_stream())
                    })?;
                    let letter = Letter::new(
                        names,
                        message.sequence,
                        message.time,
                        message.subject.as_str(),
                        message.headers,
                        message.payload,
                    );
                    if filter.matches(&letter) {
                        chosen.push(letter);
                    }
                }
                chosen
            };
            replay(&js, &stream, names, chosen, rate, keep, format).await
        }
        DlqCommand::Purge {
            filter,
            yes,
            format,
        } => {
            let (_, mut stream) = dlq_stream(nats_args, names).await?;
            let chosen = letters(&mut stream, names, &filter).await?;
            if !yes {
                anyhow::bail!(
                    "{} dead letters match; nothing deleted. Check them with `codigo-ctl dlq list` \
                     and the same filters, then run again with --yes",
                    chosen.len()
                );
            }
            let mut purged = Vec::new();
            for letter in &chosen {
                match stream.delete_message(letter.seq).await {
                    Ok(_) => purged.push(letter.seq),
                    Err(e) if e.to_string().contains("no message found") => {}
                    Err(e) => anyhow::bail!(
                        "deleting dead letter {} failed after {} deletions: {e}; run again to \
                         continue",
                        letter.seq,
                        purged.len()
                    ),
                }
            }
            match format {
                Format::Json => println!("{}", json!({"purged": purged.len(), "seqs": purged})),
                Format::Text => println!("purged {} dead letters", purged.len()),
            }
            Ok(())
        }
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

async fn replay(
    js: &jetstream::Context,
    stream: &Stream,
    names: &Names,
    chosen: Vec<Letter>,
    rate: f64,
    keep: bool,
    format: Format,
) -> anyhow::Result<()> {
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
        let deleted = if keep {
            false
        } else {
            stream.delete_message(letter.seq).await.map_err(|e| {
                anyhow::anyhow!(
                    "dead letter {} was replayed but not deleted ({e}); delete it with \
                         `codigo-ctl dlq purge` or replaying it again does nothing new",
                    letter.seq
                )
            })?
        };
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

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap_or_default()
}

fn print_list(letters: &[Letter], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(letters)?),
        Format::Text => {
            println!(
                "{:>8}  {:<30}  {:<16}  {:<14}  {:>8}  {:<36}  ERROR",
                "SEQ", "TIME", "JOB TYPE", "REASON", "ATTEMPTS", "JOB ID"
            );
            for l in letters {
                let mut error = l.error.clone();
                if error.chars().count() > 80 {
                    error = format!("{}…", error.chars().take(79).collect::<String>());
                }
                println!(
                    "{:>8}  {:<30}  {:<16}  {:<14}  {:>8}  {:<36}  {error}",
                    l.seq,
                    rfc3339(l.time),
                    l.job_type,
                    l.reason,
                    l.attempts.map(|a| a.to_string()).unwrap_or_default(),
                    l.job_id.as_deref().unwrap_or("-"),
                );
            }
            println!("{} dead letters", letters.len());
        }
    }
    Ok(())
}

fn print_show(letter: &Letter, format: Format) -> anyhow::Result<()> {
    let headers: Vec<(String, String)> = letter
        .headers
        .iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), v.as_str().to_owned()))
        })
        .collect();
    let body = serde_json::from_slice::<Value>(&letter.payload).ok();
    match format {
        Format::Json => {
            let mut out = serde_json::to_value(letter)?;
            out["headers"] = headers
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            out["body"] = body.unwrap_or_else(|| json!(String::from_utf8_lossy(&letter.payload)));
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Text => {
            println!("seq: {}", letter.seq);
            println!("time: {}", rfc3339(letter.time));
            for (name, value) in &headers {
                println!("{name}: {value}");
            }
            println!();
            match body {
                Some(body) => println!("{}", serde_json::to_string_pretty(&body)?),
                None => println!("{}", String::from_utf8_lossy(&letter.payload)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "10", "h", "5x", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let at = parse_time("2026-01-02T03:04:05Z").expect("rfc3339");
        assert_eq!(at.unix_timestamp(), 1_767_323_045);
        let ago = parse_time("1h").expect("duration");
        let expected = OffsetDateTime::now_utc() - Duration::from_secs(3600);
        assert!((ago - expected).abs() < time::Duration::seconds(5));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10/s"), Ok(10.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        for bad in ["0", "-1/s", "fast", "inf"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
