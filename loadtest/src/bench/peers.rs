//! The peers scenario (`make bench-peers`): Graphile Worker's batch jobs (loadtest/peers,
//! installed by scripts/peers.sh with a private Postgres of its own) burn down as many
//! `ledger.post` payloads as the drain scenarios empty, in the same repetitions, and every run
//! is checked by counts and sums before its rate counts.
use std::time::Duration;

use codigo_chaos::cluster::Profile;
use codigo_testkit::process::{self, Process};
use serde::Deserialize;
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use tokio::process::Command;
use tokio::time::Instant;

use crate::error::LoadError;
use crate::scratch::Server;

use super::machine::postgres_facts;
use super::table::{num, num_int, spread};
use super::{BenchArgs, Ctx, Results};

/// Runs of one repetition bench.js may discard for neighbour CPU load before it keeps the
/// last one as it is (Codigo's runs are never discarded; the table says how many were kept).
pub(super) const ATTEMPTS: u32 = 3;

/// What the report says about the peer: its versions and its Postgres.
pub(super) struct PeerFacts {
    graphile: String,
    node: String,
    postgres_version: String,
    postgres_settings: Vec<(String, String)>,
}

/// One repetition of the peer: its rate once verified, or why it does not count.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PeerRun {
    Verified {
        payloads_per_sec: f64,
        secs: f64,
        /// Its CPU samples saw more than a fifth of a core used by other processes, in every
        /// attempt.
        neighbour_load: bool,
    },
    Failed(String),
}

impl PeerRun {
    pub(super) fn failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }
}

fn database_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/peer")
}

/// Checks, before anything is measured, that scripts/peers.sh has prepared the peer and
/// that both sides can run the same number of payloads; reads what the report says of it.
pub(super) async fn prepare(args: &BenchArgs) -> Result<PeerFacts, LoadError> {
    let dir = &args.peers_dir;
    let package = dir.join("node_modules/graphile-worker/package.json");
    if !dir.join("bench.js").is_file() || !package.is_file() {
        return Err(LoadError::Invalid(format!(
            "{} holds no installed peer: run scripts/peers.sh (`make bench-peers` does), or \
             point BENCH_PEERS_DIR at the folder it prepared",
            dir.display()
        )));
    }
    if args.peers_batch == 0 || !args.drain_jobs.is_multiple_of(args.peers_batch) {
        return Err(LoadError::Invalid(format!(
            "BENCH_DRAIN_JOBS={} is not a multiple of the peer's {} payloads per batch job: \
             choose a multiple, so that both sides run the same number of payloads",
            args.drain_jobs, args.peers_batch
        )));
    }
    let graphile = std::fs::read_to_string(&package)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|p| p["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    let node = process::run(
        Command::new("node").arg("--version"),
        Duration::from_secs(30),
    )
    .await?;
    let url = database_url(args.peers_pg_port);
    let connection = PgConnection::connect(&url).await.map_err(|e| {
        LoadError::Invalid(format!(
            "the peer's Postgres does not answer at {url} ({e}): scripts/peers.sh starts it \
             (with BENCH_PEERS_PG_PORT if the port moved)"
        ))
    })?;
    let _ = connection.close().await;
    let (postgres_version, postgres_settings) =
        postgres_facts(&Server::from_database_url(&url)?).await;
    Ok(PeerFacts {
        graphile,
        node: String::from_utf8_lossy(&node.stdout).trim().to_owned(),
        postgres_version,
        postgres_settings,
    })
}

/// One repetition: `node bench.js burn gw` with batch jobs over the drain's number of
/// payloads, then its line of results.jsonl. A run that fails is a [`PeerRun::Failed`], not
/// an error, so that it shows in the report beside the others.
pub(super) async fn graphile_rep(ctx: &Ctx<'_>) -> Result<PeerRun, LoadError> {
    let args = ctx.args;
    let jobs = args.drain_jobs.max(1);
    let tag = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let log = ctx.logs.join(format!("graphile-{tag}.log"));
    let mut command = Command::new("node");
    command
        .current_dir(&args.peers_dir)
        .arg("bench.js")
        .args(["burn", "gw", &args.peers_concurrency.to_string()])
        .args([
            "--variant",
            "batch",
            "--batch",
            &args.peers_batch.to_string(),
        ])
        .args(["--n", &jobs.to_string(), "--reps", "1"])
        .args(["--attempts", &ATTEMPTS.to_string(), "--tag", &tag])
        .env("BENCH_PEERS_PG_PORT", args.peers_pg_port.to_string())
        // As long as `settle` waits for a quiet machine, no longer.
        .env("QUIET_MAX_S", "30");
    let mut node = Process::spawn("the Graphile Worker run", &mut command, &log)?;
    // Per attempt: a quiet machine, the enqueue and the burn-down, as generous as the drain's.
    let deadline =
        Instant::now() + (Duration::from_secs(630) + Duration::from_millis(jobs * 2)) * ATTEMPTS;
    let status = loop {
        if let Some(status) = node.exited() {
            break status;
        }
        if Instant::now() > deadline {
            return Err(LoadError::Invalid(format!(
                "the Graphile Worker run did not finish in time; see its log at {}",
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let run = if status.success() {
        let lines =
            std::fs::read_to_string(args.peers_dir.join("results.jsonl")).unwrap_or_default();
        outcome(&lines, &tag, jobs)
    } else {
        PeerRun::Failed(format!(
            "node bench.js exited ({status}); see its log at {}",
            log.display()
        ))
    };
    match &run {
        PeerRun::Verified {
            payloads_per_sec,
            secs,
            ..
        } => eprintln!(
            "      Graphile Worker burned down {jobs} payloads in {secs:.1} s: \
             {payloads_per_sec:.0} payloads/s; counts and sums verified"
        ),
        PeerRun::Failed(why) => eprintln!("      Graphile Worker run failed: {why}"),
    }
    Ok(run)
}

/// A line of results.jsonl, as bench.js writes it (other fields are ignored).
#[derive(Deserialize)]
struct ResultLine {
    kind: String,
    #[serde(default)]
    tag: String,
    jobs_per_s: Option<f64>,
    secs: Option<f64>,
    #[serde(default)]
    contaminated: bool,
    verify: Option<Verification>,
}

#[derive(Deserialize)]
struct Verification {
    ok: bool,
    count: u64,
    expected_count: u64,
    // Postgres bigints: strings from node-postgres.
    entry_sum: Value,
    balance_sum: Value,
    expected_sum: Value,
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// The run tagged `tag` in results.jsonl (its last attempt, the one bench.js kept): its rate
/// if its counts and sums were verified for `jobs` payloads, else why not.
pub(super) fn outcome(results: &str, tag: &str, jobs: u64) -> PeerRun {
    let Some(line) = results
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<ResultLine>(l).ok())
        .find(|l| l.tag == tag)
    else {
        return PeerRun::Failed("its result is missing from results.jsonl".into());
    };
    if line.kind == "burn-aborted" {
        return PeerRun::Failed(format!(
            "aborted in each of {ATTEMPTS} attempts: other processes kept the CPU busy"
        ));
    }
    if line.kind != "burn" {
        return PeerRun::Failed(format!("unexpected result kind {:?}", line.kind));
    }
    let Some(verify) = line.verify else {
        return PeerRun::Failed("its result carries no verification".into());
    };
    if !verify.ok {
        return PeerRun::Failed(format!(
            "verification failed: {} of {} ledger entries, entry sum {} and balance sum {} \
             where {} was enqueued",
            verify.count,
            verify.expected_count,
            text(&verify.entry_sum),
            text(&verify.balance_sum),
            text(&verify.expected_sum)
        ));
    }
    if verify.expected_count != jobs {
        return PeerRun::Failed(format!(
            "it ran {} payloads, not {jobs}",
            verify.expected_count
        ));
    }
    match (line.jobs_per_s, line.secs) {
        (Some(rate), Some(secs)) if rate.is_finite() && rate > 0.0 => PeerRun::Verified {
            payloads_per_sec: rate,
            secs,
            neighbour_load: line.contaminated,
        },
        _ => PeerRun::Failed("its result carries no rate".into()),
    }
}

/// What Codigo's drains ran on, beside the peer.
pub(super) enum Nats<'a> {
    /// The single server of the Machine table; `cluster_follows` when the report goes on with
    /// the production profile.
    Single { cluster_follows: bool },
    Cluster {
        servers: usize,
        profile: &'a Profile,
    },
}

impl Nats<'_> {
    /// What ran, and how durable an acknowledged job is compared with the peer's.
    fn describe(&self, peer_fsyncs: bool) -> String {
        let peer = if peer_fsyncs {
            "the peer's Postgres makes every commit durable (fsync) before it returns"
        } else {
            "the peer's Postgres commits as its settings above say"
        };
        match self {
            Self::Single { cluster_follows } => format!(
                "the single nats-server of the Machine table. Durability differs: {peer}, while \
                 this server fsyncs its store every 2 minutes, not per message{}.",
                if *cluster_follows {
                    "; the production profile below fsyncs every write before its ack"
                } else {
                    " (`BENCH_CLUSTER=3` adds the comparison with `sync_interval: always`)"
                }
            ),
            Self::Cluster { servers, profile } => format!(
                "the {servers}-node cluster, R{} streams, `sync_interval: {}`. Both sides are \
                 durable at the ack: {peer}, and JetStream fsyncs every write before it acks \
                 it, on {} replicas.",
                profile.stream_replicas,
                profile.sync_interval,
                profile.stream_replicas.min(*servers)
            ),
        }
    }
}

impl PeerFacts {
    fn fsyncs_every_commit(&self) -> bool {
        let on = |name: &str| {
            self.postgres_settings
                .iter()
                .any(|(k, v)| k == name && v == "on")
        };
        on("fsync") && on("synchronous_commit")
    }
}

/// The peer's section of one server set-up: what ran, the table, and the difference in
/// semantics.
pub(super) fn write_section(
    w: &mut String,
    args: &BenchArgs,
    results: &Results,
    facts: &PeerFacts,
    nats: &Nats<'_>,
) {
    use std::fmt::Write as _;

    let settings = facts
        .postgres_settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        w,
        "Graphile Worker {} (Node.js {}) ran in each repetition after the drains, on the same \
         number of `ledger.post` payloads: {} batch jobs of {} payloads, enqueued first, then \
         burned down by one worker process running {} jobs at once. A batch job writes its \
         payloads in one statement and one transaction, with the same effect as Codigo's \
         handler (ledger entries `ON CONFLICT DO NOTHING`, balances summed per account). Its \
         queue and ledger live in a PostgreSQL of their own on this machine, {} ({settings}); \
         Codigo's drains ran on {} Codigo's drain counts from the consumer \
         process start to the last commit, the bare drain from its first fetch (connected \
         already) to its last commit, Graphile from its first job's start to an empty queue \
         (its worker started and connected already). Each Graphile run is checked afterwards (ledger entries counted, entry and \
         balance sums against what was enqueued): a run that fails the check is reported as \
         failed, never as a number.\n",
        facts.graphile,
        facts.node,
        num_int(args.drain_jobs / args.peers_batch.max(1)),
        args.peers_batch,
        args.peers_concurrency,
        facts.postgres_version,
        nats.describe(facts.fsyncs_every_commit()),
    );
    let codigo: Vec<f64> = results.drain.iter().map(|d| d.jobs_per_sec).collect();
    let bare: Vec<f64> = results
        .baseline
        .iter()
        .map(|b| b.pipeline_drain_per_sec)
        .collect();
    let graphile = format!(
        "Graphile Worker batch jobs, {} payloads per job, {} at once (payloads/s)",
        args.peers_batch, args.peers_concurrency
    );
    table(w, &codigo, &bare, &results.peers, &graphile);
    let _ = writeln!(
        w,
        "The rates are not the same promise: a Graphile batch job is all-or-nothing, so a \
         payload that fails rolls back and retries its {} neighbours with it, and no payload \
         has a status, a dead letter or a trace of its own; Codigo settles, retries, \
         dead-letters and traces every job alone.\n",
        args.peers_batch.saturating_sub(1)
    );
    if args.reps < 3 {
        let _ = writeln!(
            w,
            "Fewer than 3 repetitions: the spread says little (`BENCH_REPS=3`).\n"
        );
    }
}

/// `scenario | min | median | max | vs Codigo | runs`, the peer's failed runs listed below.
fn table(w: &mut String, codigo: &[f64], bare: &[f64], peers: &[PeerRun], graphile: &str) {
    use std::fmt::Write as _;

    let codigo_median = spread(codigo).map(|s| s.0);
    // `empty`: what the cells say without a value (not run, or every run failed).
    let row = |w: &mut String, name: &str, values: &[f64], runs: &str, empty: &str| {
        let (cells, vs) = match spread(values) {
            Some((median, min, max)) => (
                format!("{} | {} | {}", num(min), num(median), num(max)),
                match codigo_median {
                    Some(c) if c > 0.0 => format!("{:.2}×", median / c),
                    _ => "—".to_owned(),
                },
            ),
            None => (format!("{empty} | {empty} | {empty}"), "—".to_owned()),
        };
        let _ = writeln!(w, "| {name} | {cells} | {vs} | {runs} |");
    };
    let count = |values: &[f64]| {
        if values.is_empty() {
            "—".to_owned()
        } else {
            values.len().to_string()
        }
    };
    let _ = writeln!(w, "| scenario | min | median | max | vs Codigo | runs |");
    let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- |");
    row(
        w,
        "Codigo drain, one consumer (jobs/s)",
        codigo,
        &count(codigo),
        "not run",
    );
    row(
        w,
        "bare async-nats + sqlx drain (jobs/s)",
        bare,
        &count(bare),
        "not run",
    );
    let verified: Vec<f64> = peers
        .iter()
        .filter_map(|p| match p {
            PeerRun::Verified {
                payloads_per_sec, ..
            } => Some(*payloads_per_sec),
            PeerRun::Failed(_) => None,
        })
        .collect();
    if peers.is_empty() {
        row(w, graphile, &[], "—", "not run");
    } else {
        let runs = format!("{} of {} verified", verified.len(), peers.len());
        row(w, graphile, &verified, &runs, "failed");
    }
    let _ = writeln!(w);
    let mut notes = false;
    for (rep, run) in peers.iter().enumerate() {
        if let PeerRun::Failed(why) = run {
            let _ = writeln!(w, "- Graphile, repetition {}: failed: {why}", rep + 1);
            notes = true;
        }
    }
    let loaded = peers
        .iter()
        .filter(|p| {
            matches!(
                p,
                PeerRun::Verified {
                    neighbour_load: true,
                    ..
                }
            )
        })
        .count();
    if loaded > 0 {
        let _ = writeln!(
            w,
            "- Graphile: {loaded} verified run(s) kept although other processes used more than \
             a fifth of a core in each of {ATTEMPTS} attempts"
        );
        notes = true;
    }
    if notes {
        let _ = writeln!(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(tag: &str, attempt: u32, ok: bool, count: u64, rate: f64) -> String {
        format!(
            r#"{{"kind":"burn","peer":"gw","conc":8,"variant":"batch","tag":"{tag}","rep":1,"attempt":{attempt},"contaminated":false,"n":{count},"jobs_per_s":{rate},"secs":2.5,"errors":0,"verify":{{"ok":{ok},"count":{count},"balance_sum":"250482050","entry_sum":"250482050","accounts":997,"expected_count":5000,"expected_sum":"250482050"}}}}"#
        )
    }

    #[test]
    fn a_verified_run_counts_with_its_last_attempt() {
        let results = [
            line("other", 1, true, 5000, 99_999.0),
            "not json".to_owned(),
            line("mine", 1, true, 5000, 1000.0),
            line("mine", 2, true, 5000, 31_900.5),
        ]
        .join("\n");
        assert_eq!(
            outcome(&results, "mine", 5000),
            PeerRun::Verified {
                payloads_per_sec: 31_900.5,
                secs: 2.5,
                neighbour_load: false
            }
        );
    }

    #[test]
    fn a_run_whose_verification_fails_is_no_number() {
        let results = line("mine", 1, false, 4900, 40_000.0);
        let PeerRun::Failed(why) = outcome(&results, "mine", 5000) else {
            panic!("a failed verification must not count");
        };
        assert!(why.contains("verification failed"), "{why}");
        assert!(why.contains("4900 of 5000"), "{why}");
    }

    #[test]
    fn missing_aborted_and_mis_sized_runs_fail() {
        assert!(outcome("", "mine", 5000).failed());
        assert!(outcome(&line("other", 1, true, 5000, 1.0), "mine", 5000).failed());
        let aborted = r#"{"kind":"burn-aborted","tag":"mine","attempt":3}"#;
        assert!(outcome(aborted, "mine", 5000).failed());
        // The run verified its own count, but not the drain's.
        assert!(outcome(&line("mine", 1, true, 5000, 1.0), "mine", 6000).failed());
        let no_rate = line("mine", 1, true, 5000, 1.0).replace(r#""jobs_per_s":1"#, r#""x":1"#);
        assert!(outcome(&no_rate, "mine", 5000).failed());
    }

    fn verified(rate: f64) -> PeerRun {
        PeerRun::Verified {
            payloads_per_sec: rate,
            secs: 1.0,
            neighbour_load: false,
        }
    }

    #[test]
    fn the_table_shows_min_median_max_and_ratios_of_verified_runs_only() {
        let mut w = String::new();
        let peers = [
            verified(30_000.0),
            PeerRun::Failed("verification failed: 1 of 2".into()),
            verified(35_000.0),
            verified(31_000.0),
        ];
        // Skewed so that a mean would not pass for the median.
        table(
            &mut w,
            &[20_000.0, 18_000.0, 25_000.0],
            &[21_000.0, 23_000.0, 28_000.0],
            &peers,
            "Graphile",
        );
        assert!(
            w.contains(
                "| Codigo drain, one consumer (jobs/s) | 18,000 | 20,000 | 25,000 | 1.00× | 3 |"
            ),
            "{w}"
        );
        assert!(
            w.contains(
                "| bare async-nats + sqlx drain (jobs/s) | 21,000 | 23,000 | 28,000 | 1.15× | 3 |"
            ),
            "{w}"
        );
        assert!(
            w.contains("| Graphile | 30,000 | 31,000 | 35,000 | 1.55× | 3 of 4 verified |"),
            "{w}"
        );
        assert!(
            w.contains("- Graphile, repetition 2: failed: verification failed: 1 of 2"),
            "{w}"
        );
    }

    #[test]
    fn a_peer_that_never_verified_shows_failed_not_a_number() {
        let mut w = String::new();
        table(
            &mut w,
            &[20_000.0],
            &[],
            &[PeerRun::Failed("boom".into())],
            "Graphile",
        );
        assert!(
            w.contains("| Graphile | failed | failed | failed | — | 0 of 1 verified |"),
            "{w}"
        );
        assert!(
            w.contains(
                "| bare async-nats + sqlx drain (jobs/s) | not run | not run | not run | — | — |"
            ),
            "{w}"
        );
    }
}
