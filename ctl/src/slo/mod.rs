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
mod query;
mod render;
mod report;

use std::time::Duration;

use clap::{Args, Subcommand};
use codigo_common::config::secs;

use crate::Format;
pub use report::report;

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
    /// How long to wait for each Prometheus answer (a number is seconds).
    #[arg(long = "timeout-secs", default_value = "30s",
          value_parser = secs().at_least(Duration::from_millis(1)))]
    pub timeout: Duration,
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
                Format::Text => print!("{}", render::text(&report)),
            }
            std::process::exit(report.exit_code);
        }
        Err(error) => fail(&error),
    }
}
