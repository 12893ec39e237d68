//! Dead letters printed for people (a table, or one letter with its headers and body) or
//! as JSON for scripts.
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::letters::Letter;
use crate::Format;

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap_or_default()
}

pub fn list(letters: &[Letter], format: Format) -> anyhow::Result<()> {
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

pub fn show(letter: &Letter, format: Format) -> anyhow::Result<()> {
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
