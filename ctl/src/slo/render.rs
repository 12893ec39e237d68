//! `slo report` as a table for people.
use super::report::{Report, Status};
use super::EXIT_NO_DATA;

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

pub fn text(report: &Report) -> String {
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
