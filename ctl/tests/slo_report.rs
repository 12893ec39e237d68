//! `codigo-ctl slo report` against a real Prometheus (observability/tools/promfixture.py)
//! loaded with the project's rules and synthetic series whose right answers are known:
//! within budget (exit 0), burning fast (exit 1), budget exhausted (exit 2), no data to judge
//! (exit 3, or 0 with `--allow-no-data`), raw counters without recording rules (judged from
//! the counters), and no Prometheus at all or bad arguments (exit 4).
//!
//! Series: 31 days of counters with constant rates per segment, sampled daily (just inside
//! each day boundary, so the 30d and 3d windows start on a sample) and every 30 s over the
//! last 7 hours, so every window's ratio is the segment's exact share.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use codigo_testkit::ChildProcess;
use serde_json::Value;

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Sample times: daily over 31 days (10 minutes after each day boundary counted back from
/// `now`), then every 30 s for the last 7 hours.
fn timeline(now: i64) -> Vec<i64> {
    let dense_from = now - 7 * HOUR;
    let mut times: Vec<i64> = (1..=31)
        .rev()
        .map(|d| now - d * DAY + 600)
        .filter(|t| *t < dense_from)
        .collect();
    times.extend((dense_from..=now).step_by(30));
    times
}

/// A counter growing at `base` per second, and at `recent` per second over the last
/// `recent_secs` before `now`.
#[derive(Clone, Copy)]
struct Rate {
    base: f64,
    recent: f64,
    recent_secs: i64,
}

impl Rate {
    fn constant(rate: f64) -> Self {
        Self {
            base: rate,
            recent: rate,
            recent_secs: 0,
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn value(&self, start: i64, now: i64, t: i64) -> f64 {
        let switch = now - self.recent_secs;
        self.base * (t.min(switch) - start) as f64 + self.recent * (t - switch).max(0) as f64
    }
}

struct Series {
    family: &'static str,
    kind: &'static str,
    /// (sample name, labels, rate)
    samples: Vec<(String, String, Rate)>,
}

/// What the producer and consumers would have exported; shares chosen per scenario.
struct Traffic {
    /// Share of ingest requests answered 5xx, base and over the last `recent_secs`.
    availability_bad: (f64, f64),
    recent_secs: i64,
    /// Share of ingest requests slower than 0.5 s.
    latency_bad: f64,
    /// Share of ledger.post jobs termed.
    ledger_bad: f64,
}

const INGEST_RATE: f64 = 10.0;
const LEDGER_RATE: f64 = 5.0;
const WEBHOOK_RATE: f64 = 1.0;
/// webhook.deliver: one job in a thousand exhausts its deliveries (burn 0.2).
const WEBHOOK_BAD: f64 = 0.001;
/// A type declared at run time (`codigo-ctl types apply`), which no rule, dashboard or report
/// names: three jobs in a thousand end permanently failed (burn 0.6).
const DECLARED: &str = "text.wordcount";
const DECLARED_RATE: f64 = 2.0;
const DECLARED_BAD: f64 = 0.003;

fn openmetrics(traffic: &Traffic, now: i64) -> String {
    let times = timeline(now);
    let start = times[0] - HOUR;
    let producer = r#"job="codigo-producer",instance="producer-0""#;
    let consumer = r#"job="codigo-consumer",instance="consumer-0""#;
    let (bad_base, bad_recent) = traffic.availability_bad;
    let requests = |status: &str, share_base: f64, share_recent: f64, route: &str| {
        (
            "codigo_gateway_requests_total".to_owned(),
            format!(r#"{producer},route="{route}",method="POST",status="{status}""#),
            Rate {
                base: INGEST_RATE * share_base,
                recent: INGEST_RATE * share_recent,
                recent_secs: traffic.recent_secs,
            },
        )
    };
    let histogram = |suffix: &str, le: Option<&str>, share: f64| {
        let le = le.map(|le| format!(r#",le="{le}""#)).unwrap_or_default();
        (
            format!("codigo_gateway_request_duration_seconds_{suffix}"),
            format!(r#"{producer},route="/v1/jobs",method="POST"{le}"#),
            Rate::constant(INGEST_RATE * share),
        )
    };
    let acks = |job_type: &str, outcome: &str, rate: f64| {
        (
            "codigo_consumer_acks_total".to_owned(),
            format!(r#"{consumer},job_type="{job_type}",outcome="{outcome}""#),
            Rate::constant(rate),
        )
    };
    let dead = |job_type: &str, reason: &str, rate: f64| {
        (
            "codigo_consumer_dead_letters_total".to_owned(),
            format!(r#"{consumer},job_type="{job_type}",reason="{reason}""#),
            Rate::constant(rate),
        )
    };
    let ledger_term = LEDGER_RATE * traffic.ledger_bad;
    let families = [
        Series {
            family: "codigo_gateway_requests",
            kind: "counter",
            samples: vec![
                requests("202", 1.0 - bad_base, 1.0 - bad_recent, "/v1/jobs"),
                requests("503", bad_base, bad_recent, "/v1/jobs"),
                // Probes are not ingest: failing ones must not count.
                {
                    let mut probe = requests("503", 0.5, 0.5, "/readyz");
                    probe.1 = probe.1.replace("POST", "GET");
                    probe
                },
            ],
        },
        Series {
            family: "codigo_gateway_request_duration_seconds",
            kind: "histogram",
            samples: vec![
                histogram("bucket", Some("0.5"), 1.0 - traffic.latency_bad),
                histogram("bucket", Some("+Inf"), 1.0),
                histogram("count", None, 1.0),
                histogram("sum", None, 0.1),
            ],
        },
        Series {
            family: "codigo_consumer_acks",
            kind: "counter",
            samples: vec![
                acks("ledger.post", "ack", LEDGER_RATE - ledger_term),
                acks("ledger.post", "term", ledger_term),
                // Retries are not failures.
                acks("ledger.post", "nak", 2.0),
                acks("webhook.deliver", "ack", WEBHOOK_RATE * (1.0 - WEBHOOK_BAD)),
                acks("webhook.deliver", "term", 0.0),
                acks("webhook.deliver", "nak", 0.5),
                acks(DECLARED, "ack", DECLARED_RATE * (1.0 - DECLARED_BAD)),
                acks(DECLARED, "term", DECLARED_RATE * DECLARED_BAD),
            ],
        },
        Series {
            family: "codigo_consumer_dead_letters",
            kind: "counter",
            samples: vec![
                // Termed jobs are dead-lettered too: counted once, as terms.
                dead("ledger.post", "permanent", ledger_term),
                dead("ledger.post", "max_deliveries", 0.0),
                dead(
                    "webhook.deliver",
                    "max_deliveries",
                    WEBHOOK_RATE * WEBHOOK_BAD,
                ),
                dead(DECLARED, "permanent", DECLARED_RATE * DECLARED_BAD),
            ],
        },
    ];
    let mut out = String::new();
    for family in families {
        out.push_str(&format!("# TYPE {} {}\n", family.family, family.kind));
        for (name, labels, rate) in &family.samples {
            for t in &times {
                out.push_str(&format!(
                    "{name}{{{labels}}} {:.6} {t}\n",
                    rate.value(start, now, *t)
                ));
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// A private Prometheus holding one scenario's series and the project's rules.
struct Fixture {
    process: ChildProcess,
    url: String,
    series: PathBuf,
}

impl Fixture {
    fn start(name: &str, traffic: &Traffic) -> Self {
        let now = unix_now();
        Self::serve(name, &openmetrics(traffic, now), now, true)
    }

    /// Serves `series` (OpenMetrics ending at `now`), with the project's rules or none.
    fn serve(name: &str, series_text: &str, now: i64, rules: bool) -> Self {
        for tool in ["promtool", "prometheus", "python3"] {
            assert!(
                on_path(tool),
                "{tool} not found: install the Debian packages `prometheus` and `python3` \
                 (`make test` does); the SLO report is tested against a real Prometheus"
            );
        }
        let series =
            std::env::temp_dir().join(format!("codigo-slo-{name}-{}-{now}.om", std::process::id()));
        std::fs::write(&series, series_text).expect("write series");
        let root = repo_root();
        let mut command = Command::new("python3");
        command
            .arg(root.join("observability/tools/promfixture.py"))
            .arg("serve")
            .arg("--openmetrics")
            .arg(&series);
        if rules {
            command
                .arg("--rules")
                .arg(root.join("observability/prometheus/rules"));
        }
        command.arg("--shift-to-now");
        let mut process = ChildProcess::spawn("promfixture.py", command);
        let deadline = Instant::now() + Duration::from_secs(120);
        let url = loop {
            let stdout = process.stdout();
            let url = stdout
                .lines()
                .find_map(|line| line.strip_prefix("PROMETHEUS_URL="));
            if let Some(url) = url {
                break url.to_owned();
            }
            if let Some(status) = process.try_exit() {
                panic!(
                    "promfixture.py gave no PROMETHEUS_URL (exit {status}):\n{}",
                    process.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "promfixture.py gave no PROMETHEUS_URL:\n{}",
                process.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            process,
            url,
            series,
        }
    }
}

impl Drop for Fixture {
    /// SIGTERM, so the fixture stops Prometheus and removes its directory.
    fn drop(&mut self) {
        self.process.stop_blocking(Duration::from_secs(30));
        let _ = std::fs::remove_file(&self.series);
    }
}

fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("time")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn slo_report(url: &str, extra: &[&str]) -> Run {
    let mut command = codigo_testkit::command("codigo-ctl");
    for proxy in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
        command.env_remove(proxy);
    }
    let output = command
        .args(["slo", "report", "--prometheus-url", url])
        .args(extra)
        .env_remove("PROMETHEUS_URL")
        .output()
        .expect("run codigo-ctl");
    Run {
        code: output.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn json_report(url: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["--format", "json"];
    args.extend_from_slice(extra);
    let run = slo_report(url, &args);
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?}, stderr {:?}", run.stdout, run.stderr));
    assert!(run.stderr.is_empty(), "unexpected stderr: {}", run.stderr);
    assert_eq!(report["exit_code"], run.code, "{report:#}");
    (run.code, report)
}

/// The JSON report on `fixture`, after checking the verdict it gives: its exit code and
/// status.
fn judged(fixture: &Fixture, extra: &[&str], code: i32, status: &str) -> Value {
    let (exit, report) = json_report(&fixture.url, extra);
    assert_eq!(exit, code, "{report:#}");
    assert_eq!(report["status"], status);
    report
}

fn slo<'a>(report: &'a Value, name: &str, job_type: Option<&str>) -> &'a Value {
    report["slos"]
        .as_array()
        .expect("slos")
        .iter()
        .find(|s| s["slo"] == name && s["job_type"].as_str() == job_type)
        .unwrap_or_else(|| panic!("no {name} {job_type:?} in {report:#}"))
}

#[track_caller]
fn close(value: &Value, want: f64, tolerance: f64) {
    let got = value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number (want {want})"));
    assert!(
        (got - want).abs() <= tolerance * want.abs().max(1.0),
        "got {got}, want {want} (±{tolerance})"
    );
}

/// Checks one SLO's numbers; `burns` are the burn rates per alert window.
#[track_caller]
fn check(entry: &Value, objective: f64, sli_30d: f64, burns: &[(&str, f64, f64)], status: &str) {
    let precise = 1e-6;
    close(&entry["objective"], objective, precise);
    close(&entry["sli"], sli_30d, 1e-4);
    let budget = &entry["error_budget"];
    close(&budget["total"], 1.0 - objective, precise);
    let consumed = (1.0 - sli_30d) / (1.0 - objective);
    close(&budget["consumed"], consumed, 5e-3);
    close(&budget["remaining"], 1.0 - consumed, 5e-3);
    for (window, rate, tolerance) in burns {
        close(&entry["burn_rates"][window], *rate, *tolerance);
    }
    assert_eq!(entry["status"], status, "{entry:#}");
}

fn healthy() -> Traffic {
    Traffic {
        availability_bad: (0.0002, 0.0002),
        recent_secs: 0,
        latency_bad: 0.005,
        ledger_bad: 0.002,
    }
}

fn all_windows(rate: f64) -> Vec<(&'static str, f64, f64)> {
    ["5m", "30m", "1h", "6h", "3d"]
        .into_iter()
        .map(|w| (w, rate, 1e-6))
        .collect()
}

/// The numbers every scenario shares: latency, webhook.deliver and the declared type stay
/// healthy.
fn check_steady_slos(report: &Value) {
    // A declared type is judged like a built-in one, by the same rules and objective.
    check(
        slo(report, "job_success", Some(DECLARED)),
        0.995,
        0.997,
        &all_windows(0.6),
        "ok",
    );
    // 0.5 % slower than 0.5 s against a 5 % budget.
    check(
        slo(report, "producer_latency", None),
        0.95,
        0.995,
        &all_windows(0.1),
        "ok",
    );
    // 0.1 % exhausting MaxDeliver against a 0.5 % budget.
    check(
        slo(report, "job_success", Some("webhook.deliver")),
        0.995,
        0.999,
        &all_windows(0.2),
        "ok",
    );
}

#[test]
fn within_budget_exits_0() {
    let fixture = Fixture::start("healthy", &healthy());
    let report = judged(&fixture, &[], 0, "ok");
    assert_eq!(report["window"], "30d");
    check_steady_slos(&report);
    let availability = slo(&report, "producer_availability", None);
    check(availability, 0.999, 0.9998, &all_windows(0.2), "ok");
    assert_eq!(availability["fast_burn"], false);
    assert_eq!(availability["slow_burn"], false);
    // 10 ingest requests a second for 30 days, 0.02 % of them 5xx; probes left out.
    let events = 10.0 * 30.0 * 86_400.0;
    close(&availability["events"], events, 1e-2);
    close(&availability["bad_events"], events * 0.0002, 1e-2);
    close(
        &availability["error_budget"]["total_events"],
        events * 0.001,
        1e-2,
    );
    close(
        &availability["error_budget"]["remaining_events"],
        events * 0.0008,
        1e-2,
    );
    // 0.2 % of ledger jobs termed (naks ignored, dead letters of termed jobs counted once).
    let ledger = slo(&report, "job_success", Some("ledger.post"));
    check(ledger, 0.995, 0.998, &all_windows(0.4), "ok");
    close(&ledger["events"], 5.0 * 30.0 * 86_400.0, 1e-2);

    let text = slo_report(&fixture.url, &[]);
    assert_eq!(text.code, 0, "{}{}", text.stdout, text.stderr);
    assert!(
        text.stdout.contains("producer_availability"),
        "{}",
        text.stdout
    );
    for job_type in ["ledger.post", DECLARED] {
        assert!(
            text.stdout.contains(&format!("job_success[{job_type}]")),
            "{}",
            text.stdout
        );
    }
    assert!(text.stdout.contains("99.9800%"), "{}", text.stdout);
    assert!(text.stdout.contains("Exit 0"), "{}", text.stdout);
}

#[test]
fn fast_burn_exits_1() {
    // 3 % of ingest requests fail over the last two hours: burn 30 over 5m, 30m and 1h.
    let traffic = Traffic {
        availability_bad: (0.0002, 0.03),
        recent_secs: 2 * HOUR,
        ..healthy()
    };
    let fixture = Fixture::start("fast-burn", &traffic);
    let report = judged(&fixture, &[], 1, "burning_fast");
    check_steady_slos(&report);
    let availability = slo(&report, "producer_availability", None);
    // 718 h at 0.02 % and 2 h at 3 % bad over 720 h; 6h: 4 h + 2 h; 3d: 70 h + 2 h.
    let share =
        |healthy_h: f64, bad_h: f64| (0.0002 * healthy_h + 0.03 * bad_h) / (healthy_h + bad_h);
    check(
        availability,
        0.999,
        1.0 - share(718.0, 2.0),
        &[
            ("5m", 30.0, 1e-6),
            ("30m", 30.0, 1e-6),
            ("1h", 30.0, 1e-6),
            ("6h", share(4.0, 2.0) / 0.001, 1e-2),
            ("3d", share(70.0, 2.0) / 0.001, 1e-2),
        ],
        "burning_fast",
    );
    assert_eq!(availability["fast_burn"], true);
    assert_eq!(availability["slow_burn"], true);
    let ledger = slo(&report, "job_success", Some("ledger.post"));
    check(ledger, 0.995, 0.998, &all_windows(0.4), "ok");

    let text = slo_report(&fixture.url, &[]);
    assert_eq!(text.code, 1);
    assert!(text.stdout.contains("BURNING FAST"), "{}", text.stdout);
}

#[test]
fn exhausted_budget_exits_2() {
    // 1 % of ledger.post jobs fail for the whole month: burn 2, twice the budget spent, and
    // never fast enough to page.
    let traffic = Traffic {
        ledger_bad: 0.01,
        ..healthy()
    };
    let fixture = Fixture::start("exhausted", &traffic);
    let report = judged(&fixture, &[], 2, "exhausted");
    check_steady_slos(&report);
    check(
        slo(&report, "producer_availability", None),
        0.999,
        0.9998,
        &all_windows(0.2),
        "ok",
    );
    let ledger = slo(&report, "job_success", Some("ledger.post"));
    check(ledger, 0.995, 0.99, &all_windows(2.0), "exhausted");
    close(&ledger["error_budget"]["remaining"], -1.0, 5e-3);
    assert_eq!(ledger["fast_burn"], false);
    assert_eq!(ledger["slow_burn"], true);
    let events = 5.0 * 30.0 * 86_400.0;
    close(&ledger["bad_events"], events * 0.01, 1e-2);
    close(
        &ledger["error_budget"]["remaining_events"],
        -events * 0.005,
        1e-2,
    );

    // A window without recording rules is computed from the raw counters: same burn.
    let (code, weekly) = json_report(&fixture.url, &["--window", "7d"]);
    assert_eq!(code, 2, "{weekly:#}");
    assert_eq!(weekly["window"], "7d");
    let ledger = slo(&weekly, "job_success", Some("ledger.post"));
    close(&ledger["sli"], 0.99, 1e-4);
    close(&ledger["error_budget"]["consumed"], 2.0, 5e-3);
    close(&ledger["events"], 5.0 * 7.0 * 86_400.0, 1e-2);
    close(
        &slo(&weekly, "producer_availability", None)["sli"],
        0.9998,
        1e-4,
    );

    let text = slo_report(&fixture.url, &["--format", "text"]);
    assert_eq!(text.code, 2);
    assert!(text.stdout.contains("BUDGET EXHAUSTED"), "{}", text.stdout);
    assert!(text.stdout.contains("-100.0%"), "{}", text.stdout);
}

#[test]
fn no_data_exits_3_unless_allowed() {
    // Prometheus answers, with the rules loaded, but nothing of Codigo was ever scraped.
    let now = unix_now();
    let series = (0..20)
        .map(|i| format!("unrelated_gauge{{job=\"other\"}} 1 {}\n", now - 60 * i))
        .rev()
        .collect::<String>();
    let fixture = Fixture::serve(
        "no-data",
        &format!("# TYPE unrelated_gauge gauge\n{series}# EOF\n"),
        now,
        true,
    );
    let report = judged(&fixture, &[], 3, "no_data");
    assert_eq!(
        report["no_data"],
        serde_json::json!(["producer_availability", "producer_latency", "job_success"])
    );
    let text = slo_report(&fixture.url, &[]);
    assert_eq!(text.code, 3, "{}{}", text.stdout, text.stderr);
    assert!(
        text.stdout
            .contains("No data to judge: producer_availability, producer_latency, job_success"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("Exit 3: no data to judge"),
        "{}",
        text.stdout
    );

    // Allowed: exit 0, and still a line saying there was nothing to judge.
    let report = judged(&fixture, &["--allow-no-data"], 0, "no_data");
    assert_eq!(report["allow_no_data"], true);
    let text = slo_report(&fixture.url, &["--allow-no-data"]);
    assert_eq!(text.code, 0, "{}{}", text.stdout, text.stderr);
    assert!(text.stdout.contains("No data to judge:"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains("Exit 0: no data to judge, accepted because of --allow-no-data"),
        "{}",
        text.stdout
    );
}

#[test]
fn raw_counters_without_recording_rules_are_judged() {
    // Three days of raw job outcomes, 2 % of them termed, sampled every minute; no rules
    // loaded, so no recording rule has a series and no objective is recorded either.
    let now = unix_now();
    let start = now - 3 * DAY;
    let consumer = r#"job="codigo-consumer",instance="consumer-0",job_type="ledger.post""#;
    let mut text = String::from("# TYPE codigo_consumer_acks counter\n");
    for (outcome, rate) in [("ack", 4.9), ("term", 0.1)] {
        for t in (start..=now).step_by(60) {
            #[allow(clippy::cast_precision_loss)]
            let value = rate * (t - start) as f64;
            text.push_str(&format!(
                "codigo_consumer_acks_total{{{consumer},outcome=\"{outcome}\"}} {value:.3} {t}\n"
            ));
        }
    }
    text.push_str("# EOF\n");
    let fixture = Fixture::serve("raw-only", &text, now, false);

    let run = slo_report(&fixture.url, &["--format", "json"]);
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?}, stderr {:?}", run.stdout, run.stderr));
    assert_eq!(run.code, 2, "{report:#}\n{}", run.stderr);
    assert_eq!(report["status"], "exhausted");
    assert_eq!(report["exit_code"], 2);
    // Without the objectives' rules the SPEC defaults apply, and the report says so.
    assert!(
        run.stderr.contains("using the default 0.995"),
        "{}",
        run.stderr
    );
    let ledger = slo(&report, "job_success", Some("ledger.post"));
    check(ledger, 0.995, 0.98, &all_windows(4.0), "exhausted");
    close(&ledger["events"], 5.0 * 3.0 * 86_400.0, 1e-2);
    // The producer was never scraped: named, but the exhausted budget decides the exit.
    assert_eq!(
        report["no_data"],
        serde_json::json!(["producer_availability", "producer_latency"])
    );

    let text = slo_report(&fixture.url, &[]);
    assert_eq!(text.code, 2, "{}{}", text.stdout, text.stderr);
    assert!(text.stdout.contains("BUDGET EXHAUSTED"), "{}", text.stdout);
}

#[test]
fn no_report_exits_4_with_what_to_do() {
    // Nothing listens on port 9 of loopback (discard, never served here).
    let run = slo_report("http://127.0.0.1:9", &[]);
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.contains("cannot reach Prometheus"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--prometheus-url"), "{}", run.stderr);

    let run = slo_report("http://127.0.0.1:9", &["--window", "a month"]);
    assert_eq!(run.code, 4);
    assert!(run.stderr.contains("Prometheus duration"), "{}", run.stderr);

    // Arguments clap refuses: not 2, which would read as an exhausted budget.
    for bad in [&["--timeout-secs", "soon"][..], &["--no-such-flag"][..]] {
        let run = slo_report("http://127.0.0.1:9", bad);
        assert_eq!(run.code, 4, "{bad:?}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains("error:"), "{}", run.stderr);
    }
    // Help is not an error.
    let run = slo_report("http://127.0.0.1:9", &["--help"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("--allow-no-data"), "{}", run.stdout);
}

#[test]
fn the_promote_gate_is_strict() {
    let workflow = std::fs::read_to_string(repo_root().join(".github/workflows/promote.yml"))
        .expect("promote workflow");
    let runs: Vec<&str> = workflow
        .lines()
        .filter(|line| line.contains("codigo-ctl slo report --"))
        .collect();
    assert!(!runs.is_empty(), "promote.yml no longer runs slo report");
    for run in runs {
        assert!(
            !run.contains("--allow-no-data"),
            "the promotion gate must not pass without data: {run}"
        );
    }
    // Only exit 0 passes: 3 (no data) has its own failing branch, anything else fails too.
    assert!(
        workflow
            .lines()
            .any(|line| line.trim_start().starts_with("3)") && line.contains("exit 1")),
        "promote.yml does not fail on exit 3"
    );
    assert!(
        workflow
            .lines()
            .any(|line| line.trim_start().starts_with("*)") && line.contains("exit 1")),
        "promote.yml does not fail on unknown exits"
    );
}
