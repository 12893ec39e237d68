//! What the consumers' logs say happened: injected aborts, redeliveries of applied jobs,
//! holds and rebinds.
use std::collections::HashMap;

use uuid::Uuid;

use crate::procs::{Death, Incarnation};

#[derive(Default)]
pub(super) struct LogFacts {
    pub(super) aborts_after_commit: u64,
    pub(super) aborts_crash_jobs: u64,
    pub(super) already_applied: HashMap<Uuid, u64>,
    pub(super) holds: u64,
    pub(super) rebinds: u64,
    /// Incarnations that died of SIGABRT without a fault-injection line: real crashes.
    pub(super) unexplained_aborts: Vec<String>,
}

pub(super) fn read_logs(incarnations: &[Incarnation]) -> LogFacts {
    let mut facts = LogFacts::default();
    for incarnation in incarnations {
        let text = std::fs::read_to_string(&incarnation.log).unwrap_or_default();
        let mut injected = false;
        for line in text.lines() {
            if line.contains("fault injection: aborting between commit and ack") {
                facts.aborts_after_commit += 1;
                injected = true;
            } else if line.contains("fault injection: crashing on a chaos:crash job") {
                facts.aborts_crash_jobs += 1;
                injected = true;
            } else if line.contains("already applied") {
                let id = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["job_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()));
                *facts
                    .already_applied
                    .entry(id.unwrap_or_default())
                    .or_default() += 1;
            } else if line.contains("dependency unavailable") {
                facts.holds += 1;
            } else if line.contains("rebinding")
                || line.contains("cannot bind consumer")
                || line.contains("disconnected from NATS")
            {
                facts.rebinds += 1;
            }
        }
        // A worker the suite killed may have been aborting at that very moment: only a
        // SIGABRT needs its explanation.
        if matches!(incarnation.ended, Some((_, Death::Aborted))) && !injected {
            facts
                .unexplained_aborts
                .push(incarnation.log.display().to_string());
        }
    }
    facts
}
