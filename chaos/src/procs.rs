//! The real Codigo binaries as child processes: one producer and a pool of consumers that the
//! suite kills and restarts, each incarnation with its own log file and metrics port.
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use codigo_testkit::process::Binaries;
use codigo_testkit::process::{self, Process};
use tokio::process::Command;

use crate::ChaosError;

/// Settings every binary shares (server URLs, stream and consumer shape).
#[derive(Debug, Clone)]
pub struct Common {
    /// One URL, or every cluster member's, comma separated.
    pub nats_url: String,
    pub database_url: String,
    pub max_deliver: i64,
    pub ack_wait_secs: u64,
    /// Replicas of the work and dead-letter streams (`codigo-ctl setup`).
    pub stream_replicas: usize,
    pub duplicate_window_secs: u64,
}

impl Common {
    fn apply(&self, command: &mut Command) {
        // Nothing from the caller's environment (make exports NATS_URL and DATABASE_URL of the
        // shared servers) may leak into the children.
        command
            .env_clear()
            .env("NATS_URL", &self.nats_url)
            .env("DATABASE_URL", &self.database_url)
            .env("CODIGO_NAMESPACE", "codigo")
            .env("CODIGO_MAX_DELIVER", self.max_deliver.to_string())
            .env("CODIGO_ACK_WAIT_SECS", self.ack_wait_secs.to_string())
            .env("CODIGO_BACKOFF_SECS", self.ack_wait_secs.to_string())
            .env("CODIGO_STREAM_REPLICAS", self.stream_replicas.to_string())
            .env(
                "CODIGO_DUPLICATE_WINDOW_SECS",
                self.duplicate_window_secs.to_string(),
            )
            // JetStream reserves a stream's byte limit on disk up front; the default 8 GiB may
            // exceed what a build machine has free.
            .env("CODIGO_STREAM_MAX_BYTES", (256 * 1024 * 1024).to_string())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info");
    }
}

/// Runs `codigo-ctl setup` (migrations, streams, consumers).
pub async fn setup(bins: &Binaries, common: &Common) -> Result<(), ChaosError> {
    let mut command = Command::new(&bins.ctl);
    common.apply(&mut command);
    command.arg("setup");
    process::run(&mut command, Duration::from_secs(120)).await?;
    Ok(())
}

pub struct Producer {
    pub port: u16,
    process: Process,
}

impl Producer {
    /// Starts the producer and waits until it is ready.
    pub async fn start(
        bins: &Binaries,
        common: &Common,
        dir: &Path,
        token: &str,
    ) -> Result<Self, ChaosError> {
        let port = process::free_port()?;
        let mut command = Command::new(&bins.producer);
        common.apply(&mut command);
        command
            .env("CODIGO_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("CODIGO_API_KEYS", format!("chaos:{token}"))
            .env("CODIGO_RATE_LIMIT_PER_KEY", "0")
            .env("CODIGO_PUBLISH_TIMEOUT_SECS", "2")
            .env("CODIGO_SHUTDOWN_TIMEOUT_SECS", "5");
        let mut process =
            Process::spawn("codigo-producer", &mut command, &dir.join("producer.log"))?;
        let ready = process::Probe::Http(format!("http://127.0.0.1:{port}/readyz"));
        process.wait_ready(&ready, READY).await?;
        Ok(Self { port, process })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> &Path {
        self.process.log()
    }

    pub async fn stop(mut self) {
        self.process.terminate(Duration::from_secs(10)).await;
    }
}

/// How long a service may take to answer its readiness check.
pub const READY: Duration = Duration::from_secs(30);

/// How a consumer incarnation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Death {
    /// `kill -9` by the suite.
    Killed,
    /// SIGABRT: fault injection (between commit and ack, or a `chaos:crash` job).
    Aborted,
    /// SIGTERM at the end of the run, drained.
    Stopped,
    /// Anything else: a real crash.
    Other(String),
}

/// Counters scraped from one incarnation's `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// `codigo_consumer_acks_total` by outcome.
    pub acks: BTreeMap<String, f64>,
    /// `codigo_consumer_dead_letters_total` by reason.
    pub dead_letters: BTreeMap<String, f64>,
}

/// One run of a consumer process.
pub struct Incarnation {
    pub slot: usize,
    pub number: usize,
    pub log: PathBuf,
    pub faults: String,
    pub started: Instant,
    pub ended: Option<(Instant, Death)>,
    /// The last successful scrape; what happened after it dies with the process.
    pub counters: Option<Counters>,
    port: u16,
    process: Option<Process>,
    killing: bool,
}

impl Incarnation {
    pub fn alive(&self) -> bool {
        self.process.is_some()
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }
}

pub struct ConsumerSettings {
    pub concurrency: usize,
}

/// The consumer processes, by slot; a slot whose process died is started again by
/// [`Consumers::respawn_dead`].
pub struct Consumers {
    bins: Binaries,
    common: Common,
    dir: PathBuf,
    settings: ConsumerSettings,
    pub faults: String,
    pub incarnations: Vec<Incarnation>,
    slots: usize,
}

impl Consumers {
    pub fn new(
        bins: Binaries,
        common: Common,
        dir: &Path,
        settings: ConsumerSettings,
        slots: usize,
        faults: String,
    ) -> Self {
        Self {
            bins,
            common,
            dir: dir.to_owned(),
            settings,
            faults,
            incarnations: Vec::new(),
            slots,
        }
    }

    pub fn spawn_all(&mut self) -> Result<(), ChaosError> {
        for slot in 0..self.slots {
            self.spawn(slot)?;
        }
        Ok(())
    }

    fn spawn(&mut self, slot: usize) -> Result<(), ChaosError> {
        let number = self.incarnations.iter().filter(|i| i.slot == slot).count() + 1;
        let port = process::free_port()?;
        let log = self.dir.join(format!("consumer-{slot}-{number}.log"));
        let mut command = Command::new(&self.bins.consumer);
        self.common.apply(&mut command);
        command
            .env("CODIGO_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("CODIGO_JOB_TYPES", "ledger.post")
            .env("CODIGO_CONCURRENCY", self.settings.concurrency.to_string())
            .env("CODIGO_FAULTS", &self.faults)
            .env("CODIGO_FETCH_EXPIRES_MS", "1000")
            .env("CODIGO_RETRY_BASE_MS", "100")
            .env("CODIGO_RETRY_MAX_SECS", "2")
            .env("CODIGO_SHUTDOWN_TIMEOUT_SECS", "5")
            .env("CODIGO_DB_MAX_CONNECTIONS", "8");
        let process = Process::spawn(format!("consumer {slot}-{number}"), &mut command, &log)?;
        self.incarnations.push(Incarnation {
            slot,
            number,
            log,
            faults: self.faults.clone(),
            started: Instant::now(),
            ended: None,
            counters: None,
            port,
            process: Some(process),
            killing: false,
        });
        Ok(())
    }

    /// Notes every process that exited since the last call and starts its slot again.
    pub fn respawn_dead(&mut self, restart: bool) -> Result<usize, ChaosError> {
        let mut dead = Vec::new();
        for incarnation in self.incarnations.iter_mut() {
            let Some(process) = incarnation.process.as_mut() else {
                continue;
            };
            if let Some(status) = process.exited() {
                let death = match status.signal() {
                    Some(9) if incarnation.killing => Death::Killed,
                    Some(6) => Death::Aborted,
                    _ => Death::Other(status.to_string()),
                };
                incarnation.ended = Some((Instant::now(), death));
                incarnation.process = None;
                dead.push(incarnation.slot);
            }
        }
        if restart {
            for slot in &dead {
                self.spawn(*slot)?;
            }
        }
        Ok(dead.len())
    }

    /// `kill -9` of the live process of a random slot; its slot is restarted by the next
    /// [`Consumers::respawn_dead`].
    pub fn kill_random(&mut self) -> bool {
        let live: Vec<usize> = (0..self.incarnations.len())
            .filter(|i| self.incarnations[*i].alive() && !self.incarnations[*i].killing)
            .collect();
        if live.is_empty() {
            return false;
        }
        let index = live[fastrand::usize(..live.len())];
        self.kill(index)
    }

    fn kill(&mut self, index: usize) -> bool {
        let incarnation = &mut self.incarnations[index];
        match incarnation.process.as_mut() {
            Some(process) => {
                incarnation.killing = process.start_kill().is_ok();
                incarnation.killing
            }
            None => false,
        }
    }

    /// `kill -9` of every live process; returns how many were killed.
    pub fn kill_all(&mut self) -> usize {
        (0..self.incarnations.len())
            .filter(|i| self.incarnations[*i].alive() && !self.incarnations[*i].killing)
            .collect::<Vec<_>>()
            .into_iter()
            .filter(|i| self.kill(*i))
            .count()
    }

    /// Live incarnations' metrics URLs, by index, for scraping without holding the lock.
    pub fn scrape_targets(&self) -> Vec<(usize, String)> {
        self.incarnations
            .iter()
            .enumerate()
            .filter(|(_, i)| i.alive() && !i.killing)
            .map(|(index, i)| (index, i.metrics_url()))
            .collect()
    }

    /// Readiness URLs of the live processes.
    pub fn ready_urls(&self) -> Vec<String> {
        self.incarnations
            .iter()
            .filter(|i| i.alive() && !i.killing)
            .map(|i| format!("http://127.0.0.1:{}/readyz", i.port))
            .collect()
    }

    pub fn live(&self) -> usize {
        self.incarnations.iter().filter(|i| i.alive()).count()
    }

    /// SIGTERM to every live process; each drains and exits.
    pub async fn stop_all(&mut self) {
        for incarnation in self.incarnations.iter_mut() {
            if let Some(mut process) = incarnation.process.take() {
                let death = match process.terminate(Duration::from_secs(15)).await {
                    Some(status) if status.success() => Death::Stopped,
                    Some(status) => Death::Other(status.to_string()),
                    None => Death::Other("did not stop within 15 s of SIGTERM".into()),
                };
                incarnation.ended = Some((Instant::now(), death));
            }
        }
    }
}

/// Reads the consumer counters out of a Prometheus text exposition.
pub fn parse_counters(text: &str) -> Counters {
    let mut counters = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let label = |name: &str| -> Option<String> {
            let start = series.find(&format!("{name}=\""))? + name.len() + 2;
            let end = series[start..].find('"')? + start;
            Some(series[start..end].to_owned())
        };
        if series.starts_with("codigo_consumer_acks_total{") {
            if let Some(outcome) = label("outcome") {
                *counters.acks.entry(outcome).or_default() += value;
            }
        } else if series.starts_with("codigo_consumer_dead_letters_total{") {
            if let Some(reason) = label("reason") {
                *counters.dead_letters.entry(reason).or_default() += value;
            }
        }
    }
    counters
}

/// Reads one counter series of the producer (`name{labels}` as rendered, labels sorted).
pub fn producer_counter(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_label() {
        let text = "# HELP x\n\
            codigo_consumer_acks_total{job_type=\"ledger.post\",outcome=\"ack\"} 12\n\
            codigo_consumer_acks_total{job_type=\"ledger.post\",outcome=\"nak\"} 3\n\
            codigo_consumer_dead_letters_total{job_type=\"ledger.post\",reason=\"schema\"} 2\n\
            codigo_gateway_jobs_published_total{job_type=\"ledger.post\",result=\"accepted\"} 7\n";
        let counters = parse_counters(text);
        assert_eq!(counters.acks.get("ack"), Some(&12.0));
        assert_eq!(counters.acks.get("nak"), Some(&3.0));
        assert_eq!(counters.dead_letters.get("schema"), Some(&2.0));
        assert!(
            (producer_counter(
                text,
                "codigo_gateway_jobs_published_total",
                &[("result", "accepted")]
            ) - 7.0)
                .abs()
                < f64::EPSILON
        );
    }
}
