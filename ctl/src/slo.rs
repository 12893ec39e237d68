//! `codigo-ctl slo report`: each SLO's SLI, objective, error budget and burn rates, read from
//! Prometheus, with an exit status a script or a runbook step can act on.
//!
//! The SLIs are the recording rules `codigo:<sli>:<window>` of
//! `observability/prometheus/rules/` and the objectives the series
//! `codigo:slo_objective:30d{slo=...}`. A window without a recording rule (`--window 7d`), or
//! one whose rule has no series (rules not loaded, or loaded after the data), is evaluated
//! from the raw counters with the rules' own expression. Burn rate is
//! `(1 - SLI) / (1 - objective)`, as in the rules; the budget consumed over the window is
//! its burn rate over that window.
//!
//! Job success is reported per job type, like its rules and alerts: a job type with little
//! traffic would vanish inside an overall ratio.
//!
//! A gate must never pass blind: an SLO without a single event in the window is "no data",
//! exit 3, unless `--allow-no-data`. Its own failures exit 4, apart from the verdicts 1-3.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::Format;

/// Windows the recording rules exist for.
const RECORDED_WINDOWS: &[&str] = &["5m", "30m", "1h", "6h", "3d", "30d"];
/// Windows of the burn-rate alerts: page on 1h and 5m above 14.4, or 6h and 30m above 6;
/// ticket on 3d and 6h above 1.
const ALERT_WINDOWS: &[&str] = &["5m", "30m", "1h", "6h", "3d"];
const PAGE_FAST: (&str, &str, f64) = ("1h", "5m", 14.4);
const PAGE_SLOW: (&str, &str, f64) = ("6h", "30m", 6.0);
const TICKET: (&str, &str, f64) = ("3d", "6h", 1.0);

/// Exit statuses of `slo report` (SPEC): verdicts 0-3, then its own errors.
pub const EXIT_WITHIN_BUDGET: i32 = 0;
pub const EXIT_BURNING_FAST: i32 = 1;
pub const EXIT_EXHAUSTED: i32 = 2;
/// An SLO has no events in the window: nothing to judge it by.
pub const EXIT_NO_DATA: i32 = 3;
/// No report could be made (bad arguments, Prometheus unreachable, a query refused).
pub const EXIT_NO_REPORT: i32 = 4;

#[derive(Debug, Subcommand)]
pub enum SloCommand {
    /// Per SLO: SLI, objective, error budget (total, consumed, remaining) and burn rates over
    /// the alert windows. Exit status 0 within budget, 1 while a budget burns at page level,
    /// 2 once a budget is spent, 3 when an SLO has no data in the window (0 with
    /// --allow-no-data), 4 when no report could be made (bad arguments, Prometheus
    /// unreachable).
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Prometheus base URL, with the Codigo recording rules loaded (e.g. http://127.0.0.1:9090).
    #[arg(long, env = "PROMETHEUS_URL")]
    pub prometheus_url: String,
    /// Window the error budget is spent over, as a Prometheus duration (30d, 7d, 12h).
    #[arg(long, default_value = "30d")]
    pub window: String,
    /// A table for people, or JSON for scripts (same numbers, plus `exit_code`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Seconds to wait for each Prometheus answer.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
    /// Exit 0, not 3, when an SLO has no events in the window (a new environment, say). A
    /// gate should not use it: without data it cannot tell a healthy service from an unseen one.
    #[arg(long)]
    pub allow_no_data: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SloError {
    #[error("--window {0:?} is not a Prometheus duration; use e.g. 30d, 7d or 12h")]
    Window(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("cannot reach Prometheus at {url}: {source}; check --prometheus-url and that Prometheus is up")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("Prometheus at {url} refused `{query}`: {error}; is it a Prometheus server with the Codigo rules loaded?")]
    Refused {
        url: String,
        query: String,
        error: String,
    },
}

/// Ends a report that could not be made. 1 to 3 are verdicts about the budgets: a failed
/// report must not look like one.
pub fn fail(error: &dyn std::fmt::Display) -> ! {
    eprintln!("Error: {error}");
    std::process::exit(EXIT_NO_REPORT);
}

/// Runs the subcommand and exits with its status.
pub async fn run(command: SloCommand) -> ! {
    let SloCommand::Report(args) = command;
    match report(&args).await {
        Ok(report) => {
            match args.format {
                Format::Json => match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(error) => fail(&error),
                },
                Format::Text => print!("{}", render_text(&report)),
            }
            std::process::exit(report.exit_code);
        }
        Err(error) => fail(&error),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Within budget, no alert condition.
    Ok,
    /// No finished events in the window: nothing to judge.
    NoData,
    /// The ticket-level condition holds (3d and 6h above 1): the SLO will be missed at this pace.
    SlowBurn,
    /// A page-level condition holds.
    BurningFast,
    /// Nothing of the window's budget is left.
    Exhausted,
}

#[derive(Debug, Serialize)]
pub struct ErrorBudget {
    /// Share of events allowed to be bad: 1 - objective.
    pub total: f64,
    /// Share of the budget spent over the window (above 1 once overspent).
    pub consumed: Option<f64>,
    /// Share of the budget left (negative once overspent).
    pub remaining: Option<f64>,
    /// Bad events the window allows, given its event count.
    pub total_events: Option<f64>,
    /// Bad events still allowed (negative once overspent).
    pub remaining_events: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct SloReport {
    pub slo: &'static str,
    /// Set for job success, which is reported per job type.
    pub job_type: Option<String>,
    pub objective: f64,
    /// Good events over valid events in the window.
    pub sli: Option<f64>,
    /// Valid events in the window (Prometheus `increase`, so not always whole numbers).
    pub events: Option<f64>,
    pub bad_events: Option<f64>,
    pub error_budget: ErrorBudget,
    /// Burn rate per alert window; 1 spends the budget exactly over the SLO window.
    pub burn_rates: BTreeMap<&'static str, Option<f64>>,
    /// A page-level burn: 1h and 5m above 14.4, or 6h and 30m above 6.
    pub fast_burn: bool,
    /// The ticket-level burn: 3d and 6h above 1.
    pub slow_burn: bool,
    pub status: Status,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub prometheus_url: String,
    pub window: String,
    /// Prometheus time the report was evaluated at (RFC 3339).
    pub evaluated_at: String,
    pub status: Status,
    pub exit_code: i32,
    /// SLOs without a single event in the window: the report cannot judge them.
    pub no_data: Vec<&'static str>,
    /// `--allow-no-data` was given: no data does not fail the report.
    pub allow_no_data: bool,
    pub slos: Vec<SloReport>,
}

/// One SLO: how to read its SLI and count its events over any window.
struct Definition {
    name: &'static str,
    per_job_type: bool,
    /// The objective when Prometheus has no `codigo:slo_objective:30d` for it (SPEC defaults).
    default_objective: f64,
    sli: fn(&str) -> String,
    events: fn(&str) -> String,
    bad_events: fn(&str) -> String,
}

const INGEST: &str = r#"route!~"/healthz|/readyz|/metrics""#;

fn availability(w: &str) -> String {
    format!(
        "1 - ((sum(rate(codigo_gateway_requests_total{{{INGEST}, status=~\"5..\"}}[{w}])) or vector(0)) \
         / sum(rate(codigo_gateway_requests_total{{{INGEST}}}[{w}])))"
    )
}

fn availability_events(w: &str) -> String {
    format!("sum(increase(codigo_gateway_requests_total{{{INGEST}}}[{w}]))")
}

fn availability_bad(w: &str) -> String {
    format!(
        "sum(increase(codigo_gateway_requests_total{{{INGEST}, status=~\"5..\"}}[{w}])) or vector(0)"
    )
}

fn latency(w: &str) -> String {
    format!(
        "sum(rate(codigo_gateway_request_duration_seconds_bucket{{{INGEST}, le=\"0.5\"}}[{w}])) \
         / sum(rate(codigo_gateway_request_duration_seconds_count{{{INGEST}}}[{w}]))"
    )
}

fn latency_events(w: &str) -> String {
    format!("sum(increase(codigo_gateway_request_duration_seconds_count{{{INGEST}}}[{w}]))")
}

fn latency_bad(w: &str) -> String {
    format!(
        "sum(increase(codigo_gateway_request_duration_seconds_count{{{INGEST}}}[{w}])) \
         - sum(increase(codigo_gateway_request_duration_seconds_bucket{{{INGEST}, le=\"0.5\"}}[{w}]))"
    )
}

fn job_success(w: &str) -> String {
    format!(
        "sum by (job_type) (rate(codigo_consumer_acks_total{{outcome=\"ack\"}}[{w}]) \
           or 0 * rate(codigo_consumer_acks_total{{outcome=\"term\"}}[{w}]) \
           or 0 * rate(codigo_consumer_dead_letters_total{{reason=\"max_deliveries\"}}[{w}])) \
         / sum by (job_type) (rate(codigo_consumer_acks_total{{outcome=~\"ack|term\"}}[{w}]) \
           or rate(codigo_consumer_dead_letters_total{{reason=\"max_deliveries\"}}[{w}]))"
    )
}

fn job_events(w: &str) -> String {
    format!(
        "sum by (job_type) (increase(codigo_consumer_acks_total{{outcome=~\"ack|term\"}}[{w}]) \
           or increase(codigo_consumer_dead_letters_total{{reason=\"max_deliveries\"}}[{w}]))"
    )
}

fn job_bad(w: &str) -> String {
    format!(
        "sum by (job_type) (increase(codigo_consumer_acks_total{{outcome=\"term\"}}[{w}]) \
           or increase(codigo_consumer_dead_letters_total{{reason=\"max_deliveries\"}}[{w}]) \
           or 0 * increase(codigo_consumer_acks_total{{outcome=\"ack\"}}[{w}]))"
    )
}

const SLOS: &[Definition] = &[
    Definition {
        name: "producer_availability",
        per_job_type: false,
        default_objective: 0.999,
        sli: availability,
        events: availability_events,
        bad_events: availability_bad,
    },
    Definition {
        name: "producer_latency",
        per_job_type: false,
        default_objective: 0.95,
        sli: latency,
        events: latency_events,
        bad_events: latency_bad,
    },
    Definition {
        name: "job_success",
        per_job_type: true,
        default_objective: 0.995,
        sli: job_success,
        events: job_events,
        bad_events: job_bad,
    },
];

/// `30d`, `12h`, `1h30m`: what Prometheus accepts as a range.
fn is_duration(window: &str) -> bool {
    let mut rest = window;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

#[derive(Debug, Deserialize)]
struct ApiAnswer {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum ApiData {
    Vector(Vec<ApiSample>),
    Scalar((f64, String)),
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct ApiSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Values of an instant vector, keyed by job type (empty for SLOs without one). NaN (no
/// events: 0/0) and infinities are no data.
type Values = BTreeMap<String, f64>;

struct Prometheus {
    http: reqwest::Client,
    url: String,
    /// Every query is evaluated at this one instant, so the numbers fit together.
    at: Option<f64>,
}

impl Prometheus {
    async fn get(&self, query: &str) -> Result<ApiData, SloError> {
        let mut params = vec![("query", query.to_owned())];
        if let Some(at) = self.at {
            params.push(("time", format!("{at:.3}")));
        }
        let unreachable = |source| SloError::Unreachable {
            url: self.url.clone(),
            source,
        };
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&params)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let refused = |error: String| SloError::Refused {
            url: self.url.clone(),
            query: query.to_owned(),
            error,
        };
        let answer: ApiAnswer = response
            .json()
            .await
            .map_err(|e| refused(format!("HTTP {status}, not a Prometheus API answer ({e})")))?;
        match (answer.status.as_str(), answer.data) {
            ("success", Some(data)) => Ok(data),
            _ => Err(refused(
                answer.error.unwrap_or_else(|| format!("HTTP {status}")),
            )),
        }
    }

    async fn values(&self, query: &str) -> Result<Values, SloError> {
        match self.get(query).await? {
            ApiData::Vector(samples) => Ok(samples
                .into_iter()
                .filter_map(|sample| {
                    let value: f64 = sample.value.1.parse().ok()?;
                    let key = sample.metric.get("job_type").cloned().unwrap_or_default();
                    value.is_finite().then_some((key, value))
                })
                .collect()),
            ApiData::Scalar((_, value)) => Ok(value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(|v| (String::new(), v))
                .into_iter()
                .collect()),
            ApiData::Other => Err(SloError::Refused {
                url: self.url.clone(),
                query: query.to_owned(),
                error: "the answer is not an instant vector".into(),
            }),
        }
    }

    /// The SLI over `window`: its recording rule where one exists, else its expression. A
    /// rule without a series (not loaded, or loaded after the data) hides nothing: what it
    /// lacks is computed from the raw counters.
    async fn sli(&self, slo: &Definition, window: &str) -> Result<Values, SloError> {
        if !RECORDED_WINDOWS.contains(&window) {
            return self.values(&(slo.sli)(window)).await;
        }
        let mut values = self
            .values(&format!("codigo:{}:{window}", slo.name))
            .await?;
        let complete = if slo.per_job_type {
            codigo_schemas::registry()
                .names()
                .all(|name| values.contains_key(name))
        } else {
            !values.is_empty()
        };
        if !complete {
            for (key, value) in self.values(&(slo.sli)(window)).await? {
                values.entry(key).or_insert(value);
            }
        }
        Ok(values)
    }
}

fn burn(sli: Option<f64>, objective: f64) -> Option<f64> {
    sli.map(|sli| ((1.0 - sli) / (1.0 - objective)).max(0.0))
}

fn above(
    rates: &BTreeMap<&'static str, Option<f64>>,
    (long, short, limit): (&str, &str, f64),
) -> bool {
    let over = |w: &str| rates.get(w).copied().flatten().is_some_and(|r| r > limit);
    over(long) && over(short)
}

pub async fn report(args: &ReportArgs) -> Result<Report, SloError> {
    if !is_duration(&args.window) {
        return Err(SloError::Window(args.window.clone()));
    }
    let url = args.prometheus_url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs.max(1)))
        .build()
        .map_err(SloError::Client)?;
    let mut prometheus = Prometheus {
        http,
        url,
        at: None,
    };
    let now = prometheus
        .values("time()")
        .await?
        .into_values()
        .next()
        .unwrap_or_default();
    prometheus.at = Some(now);

    let objectives = match prometheus.get("codigo:slo_objective:30d").await? {
        ApiData::Vector(samples) => samples
            .into_iter()
            .filter_map(|s| Some((s.metric.get("slo")?.clone(), s.value.1.parse::<f64>().ok()?)))
            .collect::<BTreeMap<String, f64>>(),
        _ => BTreeMap::new(),
    };

    let mut slos = Vec::new();
    let mut no_data = Vec::new();
    for slo in SLOS {
        let objective = match objectives.get(slo.name) {
            Some(objective) if *objective > 0.0 && *objective < 1.0 => *objective,
            _ => {
                eprintln!(
                    "warning: Prometheus has no codigo:slo_objective:30d{{slo=\"{}\"}}; using the default {} \
                     (load observability/prometheus/rules/codigo-slo-objectives.rules.yml)",
                    slo.name, slo.default_objective
                );
                slo.default_objective
            }
        };
        let window_sli = prometheus.sli(slo, &args.window).await?;
        let events = prometheus.values(&(slo.events)(&args.window)).await?;
        let bad = prometheus.values(&(slo.bad_events)(&args.window)).await?;
        let mut by_window = BTreeMap::new();
        for window in ALERT_WINDOWS {
            by_window.insert(*window, prometheus.sli(slo, window).await?);
        }

        // Every job type that has data anywhere, and every registered one.
        let keys: BTreeSet<String> = if slo.per_job_type {
            window_sli
                .keys()
                .chain(by_window.values().flat_map(|v| v.keys()))
                .cloned()
                .chain(codigo_schemas::registry().names().map(str::to_owned))
                .filter(|k| !k.is_empty())
                .collect()
        } else {
            BTreeSet::from([String::new()])
        };
        let mut judged = false;
        for key in keys {
            let sli = window_sli.get(&key).copied();
            let burn_rates: BTreeMap<&'static str, Option<f64>> = ALERT_WINDOWS
                .iter()
                .map(|w| (*w, burn(by_window[w].get(&key).copied(), objective)))
                .collect();
            let consumed = burn(sli, objective);
            let events = events.get(&key).copied().filter(|_| sli.is_some());
            let bad_events = bad
                .get(&key)
                .copied()
                .filter(|_| sli.is_some())
                .map(|b| b.max(0.0));
            let total_events = events.map(|e| e * (1.0 - objective));
            let fast_burn = above(&burn_rates, PAGE_FAST) || above(&burn_rates, PAGE_SLOW);
            let slow_burn = above(&burn_rates, TICKET);
            let status = match consumed {
                None if !fast_burn => Status::NoData,
                Some(c) if c >= 1.0 => Status::Exhausted,
                _ if fast_burn => Status::BurningFast,
                _ if slow_burn => Status::SlowBurn,
                _ => Status::Ok,
            };
            judged |= status != Status::NoData;
            slos.push(SloReport {
                slo: slo.name,
                job_type: slo.per_job_type.then_some(key),
                objective,
                sli,
                events,
                bad_events,
                error_budget: ErrorBudget {
                    total: 1.0 - objective,
                    consumed,
                    remaining: consumed.map(|c| 1.0 - c),
                    total_events,
                    remaining_events: total_events.zip(bad_events).map(|(t, b)| t - b),
                },
                burn_rates,
                fast_burn,
                slow_burn,
                status,
            });
        }
        if !judged {
            no_data.push(slo.name);
        }
    }

    let worst = |status| slos.iter().any(|s| s.status == status);
    let (status, exit_code) = if worst(Status::Exhausted) {
        (Status::Exhausted, EXIT_EXHAUSTED)
    } else if worst(Status::BurningFast) {
        (Status::BurningFast, EXIT_BURNING_FAST)
    } else if !no_data.is_empty() && !args.allow_no_data {
        (Status::NoData, EXIT_NO_DATA)
    } else if worst(Status::SlowBurn) {
        (Status::SlowBurn, EXIT_WITHIN_BUDGET)
    } else if !no_data.is_empty() {
        (Status::NoData, EXIT_WITHIN_BUDGET)
    } else {
        (Status::Ok, EXIT_WITHIN_BUDGET)
    };
    Ok(Report {
        prometheus_url: prometheus.url,
        window: args.window.clone(),
        evaluated_at: rfc3339(now),
        status,
        exit_code,
        no_data,
        allow_no_data: args.allow_no_data,
        slos,
    })
}

fn rfc3339(unix: f64) -> String {
    // Prometheus answers in milliseconds; keep them, without float noise below.
    #[allow(clippy::cast_possible_truncation)]
    let nanos = (unix * 1e3).round() as i128 * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn percent(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |v| format!("{:.*}%", decimals, v * 100.0),
    )
}

fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn describe(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::NoData => "no data",
        Status::SlowBurn => "slow burn (ticket)",
        Status::BurningFast => "BURNING FAST (page)",
        Status::Exhausted => "BUDGET EXHAUSTED",
    }
}

pub fn render_text(report: &Report) -> String {
    let mut out = format!(
        "Codigo SLO report over {} from {} at {}\n\n",
        report.window, report.prometheus_url, report.evaluated_at
    );
    out.push_str(&format!(
        "{:<30} {:>10} {:>10} {:>12} {:>12} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8}  {}\n",
        "SLO",
        "SLI",
        "OBJECTIVE",
        "EVENTS",
        "BUDGET USED",
        "BUDGET LEFT",
        "BURN 5m",
        "30m",
        "1h",
        "6h",
        "3d",
        "STATUS"
    ));
    for slo in &report.slos {
        let name = match &slo.job_type {
            Some(job_type) => format!("{}[{job_type}]", slo.slo),
            None => slo.slo.to_owned(),
        };
        out.push_str(&format!(
            "{:<30} {:>10} {:>10} {:>12} {:>12} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8}  {}\n",
            name,
            percent(slo.sli, 4),
            percent(Some(slo.objective), 2),
            slo.events
                .map_or_else(|| "-".to_owned(), |e| format!("{e:.0}")),
            percent(slo.error_budget.consumed, 1),
            percent(slo.error_budget.remaining, 1),
            rate(slo.burn_rates["5m"]),
            rate(slo.burn_rates["30m"]),
            rate(slo.burn_rates["1h"]),
            rate(slo.burn_rates["6h"]),
            rate(slo.burn_rates["3d"]),
            describe(slo.status),
        ));
    }
    out.push_str(
        "\nBurn rate 1 spends the budget exactly over the SLO window. Pages: above 14.4 over 1h \
         and 5m, or above 6 over 6h and 30m; tickets: above 1 over 3d and 6h.\n",
    );
    if !report.no_data.is_empty() {
        out.push_str(&format!(
            "No data to judge: {} had no events in the last {}; check that Prometheus scrapes \
             the producer and the consumers.\n",
            report.no_data.join(", "),
            report.window,
        ));
    }
    out.push_str(&match report.status {
        Status::Exhausted => format!(
            "Exit 2: an error budget of the last {} is spent.\n",
            report.window
        ),
        Status::BurningFast => {
            "Exit 1: an error budget is burning at page level; see SLO_SLI_ALERTS.md.\n".to_owned()
        }
        Status::SlowBurn => {
            "Exit 0: within budget, but a budget burns faster than it lasts (ticket).\n".to_owned()
        }
        Status::NoData if report.exit_code == EXIT_NO_DATA => {
            "Exit 3: no data to judge, so no verdict; a gate must not pass on it \
             (--allow-no-data accepts it).\n"
                .to_owned()
        }
        Status::NoData => {
            "Exit 0: no data to judge, accepted because of --allow-no-data.\n".to_owned()
        }
        Status::Ok => "Exit 0: every SLO is within its budget.\n".to_owned(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_prometheus_durations() {
        for ok in ["30d", "7d", "12h", "1h30m", "90s", "1w", "500ms"] {
            assert!(is_duration(ok), "{ok}");
        }
        for bad in ["", "30", "d", "30 d", "thirty", "1.5h", "-1d", "30d]"] {
            assert!(!is_duration(bad), "{bad}");
        }
    }

    #[test]
    fn alert_conditions_need_both_windows() {
        let rates = |pairs: &[(&'static str, f64)]| -> BTreeMap<&'static str, Option<f64>> {
            ALERT_WINDOWS
                .iter()
                .map(|w| (*w, pairs.iter().find(|(k, _)| k == w).map(|(_, v)| *v)))
                .collect()
        };
        assert!(above(&rates(&[("1h", 15.0), ("5m", 20.0)]), PAGE_FAST));
        assert!(!above(&rates(&[("1h", 15.0), ("5m", 3.0)]), PAGE_FAST));
        assert!(!above(&rates(&[("1h", 14.4), ("5m", 20.0)]), PAGE_FAST));
        assert!(above(&rates(&[("6h", 6.5), ("30m", 7.0)]), PAGE_SLOW));
        assert!(!above(&rates(&[("6h", 6.5)]), PAGE_SLOW));
        assert!(above(&rates(&[("3d", 1.2), ("6h", 1.1)]), TICKET));
    }

    #[test]
    fn burn_rate_is_the_bad_share_over_the_budget() {
        assert_eq!(burn(None, 0.999), None);
        let rate = burn(Some(0.998), 0.999).expect("rate");
        assert!((rate - 2.0).abs() < 1e-9, "{rate}");
        assert_eq!(burn(Some(1.0), 0.995), Some(0.0));
    }

    #[test]
    fn expressions_match_the_recording_rules() {
        let rules = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../observability/prometheus/rules/codigo-slo.rules.yml"
        ))
        .expect("rule file");
        let squash = |s: &str| s.split_whitespace().collect::<String>();
        let rules = squash(&rules);
        for slo in SLOS {
            let recorded = format!("record:codigo:{}:30dexpr:|", slo.name);
            let start = rules
                .find(&recorded)
                .unwrap_or_else(|| panic!("no rule for {}", slo.name))
                + recorded.len();
            let end = rules[start..]
                .find("-record:")
                .map_or(rules.len(), |e| start + e);
            assert_eq!(squash(&(slo.sli)("30d")), rules[start..end], "{}", slo.name);
        }
    }
}
