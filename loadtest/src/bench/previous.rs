//! What changed since the last BENCHMARKS.md: its results tables read back (the median of each
//! cell, by profile, scenario and measure) and set beside the new run's, so that a change's
//! cost or gain is stated in the report itself, not worked out by hand from two versions.
use std::fmt::Write as _;

use super::table::num;

/// One median of a results table.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Figure {
    /// `single server` or `cluster`.
    pub profile: &'static str,
    /// The scenario's name, without the parameters in brackets (a rate that differs from run
    /// to run must not keep two runs apart).
    pub scenario: String,
    pub measure: String,
    pub median: f64,
    /// Its share of the bare pipeline's figure in the same run, in %, where the table gives one.
    pub vs_bare: Option<f64>,
}

/// A report's commit and its figures.
#[derive(Debug, Default)]
pub(super) struct Figures {
    pub commit: String,
    pub figures: Vec<Figure>,
}

/// Reads the figures of a report written by `make bench`; none from anything else.
pub(super) fn parse(report: &str) -> Figures {
    let commit = report
        .lines()
        .find(|line| line.starts_with("Written by `make bench`"))
        .and_then(|line| line.split("commit `").nth(1))
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_default()
        .to_owned();
    let mut figures = Vec::new();
    let mut profile = None;
    let mut scenario = String::new();
    for line in report.lines() {
        if line.starts_with("## Results") {
            profile = Some("single server");
            continue;
        }
        if line.starts_with("### Production profile") {
            profile = Some("cluster");
            continue;
        }
        if line.starts_with('#') {
            profile = None;
            continue;
        }
        let Some(profile) = profile else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| scenario | measure | result | vs bare | target |` splits into 7 pieces.
        if cells.len() != 7 {
            continue;
        }
        if !cells[1].is_empty() {
            scenario = cells[1].split(" (").next().unwrap_or_default().to_owned();
        }
        let median = cells[3]
            .split_whitespace()
            .next()
            .and_then(|number| number.replace(',', "").parse::<f64>().ok());
        let vs_bare = cells[4]
            .split_once(" %")
            .and_then(|(number, _)| number.parse::<f64>().ok());
        if let Some(median) = median {
            figures.push(Figure {
                profile,
                scenario: scenario.clone(),
                measure: cells[2].to_owned(),
                median,
                vs_bare,
            });
        }
    }
    Figures { commit, figures }
}

/// The section comparing `now` with `before`: every figure both runs have, and its change.
/// Empty when they share none (no earlier report, or another kind of file).
pub(super) fn comparison(before: &Figures, now: &Figures) -> String {
    let mut rows = String::new();
    for figure in &now.figures {
        let Some(earlier) = before.figures.iter().find(|b| {
            b.profile == figure.profile
                && b.scenario == figure.scenario
                && b.measure == figure.measure
        }) else {
            continue;
        };
        let change = if earlier.median == 0.0 {
            "—".to_owned()
        } else {
            let percent = (figure.median / earlier.median - 1.0) * 100.0;
            format!(
                "{}{:.0} %",
                if percent >= 0.0 { "+" } else { "−" },
                percent.abs()
            )
        };
        let share = |figure: &Figure| {
            figure
                .vs_bare
                .map_or_else(|| "—".to_owned(), |share| format!("{share:.0} %"))
        };
        let _ = writeln!(
            rows,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            figure.profile,
            figure.scenario,
            figure.measure,
            num(earlier.median),
            num(figure.median),
            change,
            share(earlier),
            share(figure)
        );
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut section = String::new();
    let _ = writeln!(
        section,
        "### Against the previous BENCHMARKS.md\n\n\
         Medians of the report this one replaces (commit {}) beside this run's. Machines and \
         their neighbours differ from run to run, so the share of the bare pipeline measured in \
         each run is the figure to compare where there is one. For times (ms), lower is \
         better.\n\n\
         | profile | scenario | measure | before | now | change | before, vs bare | now, vs bare |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |",
        if before.commit.is_empty() {
            "unknown"
        } else {
            &before.commit
        }
    );
    section.push_str(&rows);
    section.push('\n');
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# Benchmarks\n\n\
        Written by `make bench` (`codigo-loadtest bench`) on 2026-12-06 in 22 min, commit `f20c1a0`. Every scenario...\n\n\
        ## Results\n\n\
        | scenario | measure | result | vs bare | target |\n\
        | --- | --- | --- | --- | --- |\n\
        | sustained rate, batch ingest (4 clients × 100 jobs per request, 10 s, backlog ≤ 5000) | end-to-end jobs/s | 7,547 (7,100–7,900) | 44 % | ≥ 70 %: **missed** |\n\
        | | ingest jobs/s (accepted) | 7,600 (7,200–8,000) | | |\n\
        | latency at half the single-POST rate (open loop, 1,362 jobs/s, 10 s) | ingest p99 ms | 51.4 (40.0–60.2) | | < 20.0 ms: **missed** |\n\n\
        ### Production profile: 3-node cluster, R3 streams, `sync_interval: always`\n\n\
        | scenario | measure | result | vs bare | target |\n\
        | --- | --- | --- | --- | --- |\n\
        | delayed jobs (20/s, due 2 s later) beside the sustained batch ingest, 420 in all | start lateness p99 ms | 1,255 (900–1,400) | | ≤ 1000 ms: **missed** |\n\n\
        ### Bare baseline\n\n\
        | measure | per second |\n\
        | --- | --- |\n\
        | JetStream publish, pipelined acks, `Nats-Msg-Id` | 44,442 (40,000–45,000) |\n";

    const NOW: &str = "Written by `make bench` (`codigo-loadtest bench`) on 2026-12-07 in 16 min, commit `dc8a41f`.\n\n\
        ## Results\n\n\
        | scenario | measure | result | vs bare | target |\n\
        | --- | --- | --- | --- | --- |\n\
        | sustained rate, batch ingest (4 clients × 100 jobs per request, 10 s, backlog ≤ 5000) | end-to-end jobs/s | 18,381 (18,367–18,895) | 63 % | ≥ 70 %: **missed** |\n\
        | latency at half the single-POST rate (open loop, 3,342 jobs/s, 10 s) | ingest p99 ms | 25.6 (20.6–30.5) | | < 20.0 ms: **missed** |\n\
        | drain 200,000 queued jobs, one consumer started afterwards | jobs/s | 34,475 (33,537–34,870) | 82 % of bare drain | ≥ 80 %: met |\n\n\
        ### Production profile: 3-node cluster, R3 streams, `sync_interval: always`\n\n\
        | scenario | measure | result | vs bare | target |\n\
        | --- | --- | --- | --- | --- |\n\
        | delayed jobs (20/s, due 2 s later) beside the sustained batch ingest, 423 in all | start lateness p99 ms | 370 (330–402) | | ≤ 1000 ms: met |\n";

    #[test]
    fn the_medians_are_read_by_profile_scenario_and_measure() {
        let before = parse(BEFORE);
        assert_eq!(before.commit, "f20c1a0");
        assert_eq!(
            before.figures,
            vec![
                Figure {
                    profile: "single server",
                    scenario: "sustained rate, batch ingest".into(),
                    measure: "end-to-end jobs/s".into(),
                    median: 7547.0,
                    vs_bare: Some(44.0),
                },
                Figure {
                    profile: "single server",
                    scenario: "sustained rate, batch ingest".into(),
                    measure: "ingest jobs/s (accepted)".into(),
                    median: 7600.0,
                    vs_bare: None,
                },
                Figure {
                    profile: "single server",
                    scenario: "latency at half the single-POST rate".into(),
                    measure: "ingest p99 ms".into(),
                    median: 51.4,
                    vs_bare: None,
                },
                Figure {
                    profile: "cluster",
                    scenario: "delayed jobs".into(),
                    measure: "start lateness p99 ms".into(),
                    median: 1255.0,
                    vs_bare: None,
                },
            ],
            "the bare baseline's table is not a results table"
        );
    }

    #[test]
    fn figures_both_runs_have_are_set_side_by_side_with_their_change() {
        let section = comparison(&parse(BEFORE), &parse(NOW));
        assert!(section.contains("(commit f20c1a0)"), "{section}");
        let rows: Vec<&str> = section
            .lines()
            .filter(|l| l.starts_with("| single") || l.starts_with("| cluster"))
            .collect();
        assert_eq!(
            rows,
            [
                "| single server | sustained rate, batch ingest | end-to-end jobs/s | 7,547 | 18,381 | +144 % | 44 % | 63 % |",
                "| single server | latency at half the single-POST rate | ingest p99 ms | 51.4 | 25.6 | −50 % | — | — |",
                "| cluster | delayed jobs | start lateness p99 ms | 1,255 | 370 | −71 % | — | — |",
            ],
            "the drain is new, and the accepted rate is not in this run: both are left out"
        );
    }

    #[test]
    fn nothing_to_compare_writes_nothing() {
        assert_eq!(comparison(&parse(""), &parse(NOW)), "");
        assert_eq!(comparison(&parse("not a report"), &parse(NOW)), "");
    }
}
