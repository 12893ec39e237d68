//! `codigo-ctl schedules apply|list|delete`: recurring schedules, through the ingest gateway's
//! API, so that they belong to the tenant of the API key used and are checked as the
//! gateway checks them.
use std::path::PathBuf;

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use url::Url;

use crate::files::{read_items, FileError};
use crate::Format;

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Create or replace the schedules in a YAML or JSON file: one, a list, or several YAML
    /// documents, each `{name, cron, timezone?, catch_up?, job: {type, payload}}`. Applying
    /// the same file again changes nothing but their next ticks.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        gateway: Gateway,
    },
    /// The tenant's schedules.
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        gateway: Gateway,
    },
    /// Delete a schedule: no tick after this submits a job.
    Delete {
        name: String,
        #[command(flatten)]
        gateway: Gateway,
    },
}

/// Where the gateway is, and whose schedules these are.
#[derive(Debug, Args)]
pub struct Gateway {
    /// The ingest gateway's base URL.
    #[arg(
        long = "gateway-url",
        env = "CODIGO_GATEWAY_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: Url,
    /// An API key of the tenant the schedules belong to (not needed where the gateway runs
    /// with CODIGO_AUTH=disabled).
    #[arg(long = "api-key", env = "CODIGO_API_KEY", hide_env_values = true)]
    api_key: Option<SecretString>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulesError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}, schedule #{index}: {reason}; nothing was applied")]
    Invalid {
        path: String,
        index: usize,
        reason: String,
    },
    #[error("{path} names schedule {name:?} twice; nothing was applied")]
    Twice { path: String, name: String },
    #[error(
        "cannot reach the gateway at {url}: {reason}; check --gateway-url (CODIGO_GATEWAY_URL)"
    )]
    Unreachable { url: String, reason: String },
    #[error("the gateway refused {what} ({status}): {detail}{applied}")]
    Refused {
        what: String,
        status: StatusCode,
        detail: String,
        /// What an `apply` stored before the refusal.
        applied: String,
    },
}

struct Client {
    http: reqwest::Client,
    gateway: Gateway,
}

impl Client {
    fn new(gateway: Gateway) -> Self {
        Self {
            http: reqwest::Client::new(),
            gateway,
        }
    }

    /// Sends the request; a success's JSON body (`Null` for none) or the gateway's refusal.
    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, SchedulesError> {
        let mut url = self.gateway.url.clone();
        url.path_segments_mut()
            .map_err(|()| SchedulesError::Unreachable {
                url: self.gateway.url.to_string(),
                reason: "not a base URL".into(),
            })?
            .pop_if_empty()
            // Each segment percent-encoded: a name cannot change the route.
            .extend(segments);
        let mut request = self.http.request(method, url.clone());
        if let Some(key) = &self.gateway.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |e: reqwest::Error| SchedulesError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let mut detail = value["detail"]
            .as_str()
            .map_or_else(|| text.trim().to_owned(), str::to_owned);
        if status == StatusCode::UNAUTHORIZED {
            detail.push_str("; give codigo-ctl the tenant's key with --api-key or CODIGO_API_KEY");
        }
        Err(SchedulesError::Refused {
            what: what.to_owned(),
            status,
            detail,
            applied: String::new(),
        })
    }
}

/// A schedule of the file: its name and the body of its `PUT`.
fn read_schedules(path: &std::path::Path) -> Result<Vec<(String, Value)>, SchedulesError> {
    let shown = path.display().to_string();
    let mut schedules: Vec<(String, Value)> = Vec::new();
    for (index, mut item) in read_items(path)?.into_iter().enumerate() {
        let invalid = |reason: &str| SchedulesError::Invalid {
            path: shown.clone(),
            index: index + 1,
            reason: reason.to_owned(),
        };
        let Some(object) = item.as_object_mut() else {
            return Err(invalid("not an object with name, cron and job"));
        };
        let name = match object.remove("name") {
            Some(Value::String(name)) if !name.is_empty() => name,
            _ => return Err(invalid("it has no name")),
        };
        if !object.contains_key("cron") || !object.contains_key("job") {
            return Err(invalid(&format!("{name:?} needs cron and job")));
        }
        if schedules.iter().any(|(seen, _)| *seen == name) {
            return Err(SchedulesError::Twice { path: shown, name });
        }
        schedules.push((name, item));
    }
    Ok(schedules)
}

pub async fn run(command: SchedulesCommand) -> anyhow::Result<()> {
    match command {
        SchedulesCommand::Apply { file, gateway } => {
            let schedules = read_schedules(&file)?;
            let client = Client::new(gateway);
            for (applied, (name, body)) in schedules.iter().enumerate() {
                let stored = client
                    .send(
                        Method::PUT,
                        &["v1", "schedules", name],
                        Some(body),
                        &format!("schedule {name:?}"),
                    )
                    .await
                    .map_err(|error| match error {
                        SchedulesError::Refused {
                            what,
                            status,
                            detail,
                            ..
                        } => SchedulesError::Refused {
                            what,
                            status,
                            detail,
                            applied: format!(
                                "; {applied} of {} schedules were applied before it",
                                schedules.len()
                            ),
                        },
                        other => other,
                    })?;
                println!(
                    "{name}: applied; next tick {}",
                    stored["next_tick"].as_str().unwrap_or("unknown")
                );
            }
        }
        SchedulesCommand::List { format, gateway } => {
            let listed = Client::new(gateway)
                .send(
                    Method::GET,
                    &["v1", "schedules"],
                    None,
                    "the list of schedules",
                )
                .await?;
            let schedules = listed["schedules"].as_array().cloned().unwrap_or_default();
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&schedules)?),
                Format::Text => {
                    println!(
                        "{:<24} {:<18} {:<16} {:<8} {:<20} {:<26} LAST TICK",
                        "NAME", "CRON", "TIMEZONE", "CATCH_UP", "JOB TYPE", "NEXT TICK"
                    );
                    for s in &schedules {
                        let text = |field: &Value| field.as_str().unwrap_or("-").to_owned();
                        println!(
                            "{:<24} {:<18} {:<16} {:<8} {:<20} {:<26} {}",
                            text(&s["name"]),
                            text(&s["cron"]),
                            text(&s["timezone"]),
                            s["catch_up"].as_bool().unwrap_or(true),
                            text(&s["job"]["type"]),
                            text(&s["next_tick"]),
                            text(&s["last_tick"]),
                        );
                    }
                }
            }
        }
        SchedulesCommand::Delete { name, gateway } => {
            let deleted = Client::new(gateway)
                .send(
                    Method::DELETE,
                    &["v1", "schedules", &name],
                    None,
                    &format!("deleting {name:?}"),
                )
                .await;
            match deleted {
                Ok(_) => println!("{name}: deleted"),
                Err(SchedulesError::Refused { status, .. }) if status == StatusCode::NOT_FOUND => {
                    println!("{name}: no such schedule; nothing to delete");
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("codigo-schedules-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn a_file_reads_into_named_bodies_or_is_refused_whole() {
        let path = file(
            "ok.yaml",
            "name: nightly\ncron: '0 3 * * *'\njob: {type: ledger.post, payload: {}}\n---\n\
             - name: hourly\n  cron: '0 * * * *'\n  timezone: Europe/Madrid\n  job: {type: ledger.post, payload: {}}\n",
        );
        let read = read_schedules(&path).expect("readable");
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].0, "nightly");
        assert!(read[0].1.get("name").is_none(), "the name goes in the path");
        assert_eq!(read[1].1["timezone"], "Europe/Madrid");

        let twice = file(
            "twice.json",
            r#"[{"name": "a", "cron": "* * * * *", "job": {}}, {"name": "a", "cron": "* * * * *", "job": {}}]"#,
        );
        assert!(matches!(
            read_schedules(&twice),
            Err(SchedulesError::Twice { .. })
        ));
        let unnamed = file("unnamed.json", r#"{"cron": "* * * * *", "job": {}}"#);
        let error = read_schedules(&unnamed).unwrap_err().to_string();
        assert!(error.contains("#1") && error.contains("no name"), "{error}");
        for path in [path, twice, unnamed] {
            let _ = std::fs::remove_file(path);
        }
    }
}
