//! The verdict of `slo report`: per SLO (and job type), its error budget and burn rates over
//! the alert windows, and the exit status they add up to.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::query::{ApiData, Prometheus, SLOS};
use super::{
    ReportArgs, SloError, EXIT_BURNING_FAST, EXIT_EXHAUSTED, EXIT_NO_DATA, EXIT_WITHIN_BUDGET,
};

/// Windows of the burn-rate alerts: page on 1h and 5m above 14.4, or 6h and 30m above 6;
/// ticket on 3d and 6h above 1.
pub(super) const ALERT_WINDOWS: &[&str] = &["5m", "30m", "1h", "6h", "3d"];
const PAGE_FAST: (&str, &str, f64) = ("1h", "5m", 14.4);
const PAGE_SLOW: (&str, &str, f64) = ("6h", "30m", 6.0);
const TICKET: (&str, &str, f64) = ("3d", "6h", 1.0);

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
        .timeout(args.timeout)
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
            let burn_rates = ALERT_WINDOWS
                .iter()
                .map(|w| (*w, burn(by_window[w].get(&key).copied(), objective)))
                .collect();
            let measured = Measured {
                sli: window_sli.get(&key).copied(),
                events: events.get(&key).copied(),
                bad_events: bad.get(&key).copied(),
                burn_rates,
            };
            let judged_slo = judge(
                slo.name,
                slo.per_job_type.then_some(key),
                objective,
                measured,
            );
            judged |= judged_slo.status != Status::NoData;
            slos.push(judged_slo);
        }
        if !judged {
            no_data.push(slo.name);
        }
    }

    let (status, exit_code) = verdict(&slos, &no_data, args.allow_no_data);
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

/// What Prometheus answered for one SLO (and job type) over the report's windows.
struct Measured {
    sli: Option<f64>,
    events: Option<f64>,
    bad_events: Option<f64>,
    burn_rates: BTreeMap<&'static str, Option<f64>>,
}

/// One SLO's budget and status from its measurements.
fn judge(
    slo: &'static str,
    job_type: Option<String>,
    objective: f64,
    measured: Measured,
) -> SloReport {
    let Measured {
        sli,
        events,
        bad_events,
        burn_rates,
    } = measured;
    let consumed = burn(sli, objective);
    // Counts without an SLI belong to no finished event of the window.
    let events = events.filter(|_| sli.is_some());
    let bad_events = bad_events.filter(|_| sli.is_some()).map(|b| b.max(0.0));
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
    SloReport {
        slo,
        job_type,
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
    }
}

/// The report's status and exit code: the worst SLO wins, and no data fails the report
/// unless it is allowed.
fn verdict(slos: &[SloReport], no_data: &[&str], allow_no_data: bool) -> (Status, i32) {
    let worst = |status| slos.iter().any(|s| s.status == status);
    if worst(Status::Exhausted) {
        (Status::Exhausted, EXIT_EXHAUSTED)
    } else if worst(Status::BurningFast) {
        (Status::BurningFast, EXIT_BURNING_FAST)
    } else if !no_data.is_empty() && !allow_no_data {
        (Status::NoData, EXIT_NO_DATA)
    } else if worst(Status::SlowBurn) {
        (Status::SlowBurn, EXIT_WITHIN_BUDGET)
    } else if !no_data.is_empty() {
        (Status::NoData, EXIT_WITHIN_BUDGET)
    } else {
        (Status::Ok, EXIT_WITHIN_BUDGET)
    }
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
    fn judged_status_follows_budget_then_burn_and_verdict_takes_the_worst() {
        let measured = |sli: Option<f64>, rate: f64| Measured {
            sli,
            events: Some(1000.0),
            bad_events: Some(3.0),
            burn_rates: ALERT_WINDOWS.iter().map(|w| (*w, Some(rate))).collect(),
        };
        let judge_at = |sli, rate| judge("s", None, 0.99, measured(sli, rate));
        assert_eq!(judge_at(Some(0.98), 0.5).status, Status::Exhausted);
        assert_eq!(judge_at(Some(0.995), 20.0).status, Status::BurningFast);
        assert_eq!(judge_at(Some(0.995), 2.0).status, Status::SlowBurn);
        assert_eq!(judge_at(Some(0.999), 0.1).status, Status::Ok);
        let unseen = judge_at(None, 0.0);
        assert_eq!(unseen.status, Status::NoData);
        assert_eq!((unseen.events, unseen.bad_events), (None, None));
        let ok = judge_at(Some(0.999), 0.1);
        let budget = &ok.error_budget;
        assert!((budget.remaining_events.expect("counted") - 7.0).abs() < 1e-9);

        let slow = [judge_at(Some(0.995), 2.0)];
        assert_eq!(
            verdict(&slow, &[], false),
            (Status::SlowBurn, EXIT_WITHIN_BUDGET)
        );
        assert_eq!(
            verdict(&slow, &["s"], false),
            (Status::NoData, EXIT_NO_DATA)
        );
        assert_eq!(
            verdict(&slow, &["s"], true),
            (Status::SlowBurn, EXIT_WITHIN_BUDGET)
        );
        let exhausted = [judge_at(Some(0.98), 0.5), judge_at(Some(0.995), 20.0)];
        assert_eq!(
            verdict(&exhausted, &["s"], false),
            (Status::Exhausted, EXIT_EXHAUSTED)
        );
    }

    #[test]
    fn burn_rate_is_the_bad_share_over_the_budget() {
        assert_eq!(burn(None, 0.999), None);
        let rate = burn(Some(0.998), 0.999).expect("rate");
        assert!((rate - 2.0).abs() < 1e-9, "{rate}");
        assert_eq!(burn(Some(1.0), 0.995), Some(0.0));
    }
}
