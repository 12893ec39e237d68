//! Lanes: where a job waits on the work stream, so that workers can share themselves fairly.
//!
//! A job type's work stream subject holds one queue in arrival order, so one tenant's backlog
//! makes every later job wait behind it. The tenants named in `CODIGO_TENANTS` therefore get
//! lanes of their own, one per priority, each a subject with its own durable consumer:
//! `<ns>.jobs.<type>.@<tenant>.<priority>`. The workers pull every lane and start jobs in a
//! weighted rotation over the tenants with a backlog (ARCHITECTURE.md, "Fair dispatch").
//!
//! Jobs of other tenants, and jobs published straight to `<ns>.jobs.<type>`, share the
//! type's default lane (its normal priority is that very subject, `codigo-<type>` its
//! consumer), so nothing changes for a deployment that lists no tenant.
//!
//! The lane token begins with `@`, which no job type's name may hold: a lane subject never
//! reads as another type's subject, and the lanes' filters never overlap (a work-queue
//! stream refuses overlapping consumers).
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Names;

/// A job's priority within its tenant's share.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Jobs started per round when a tenant has a backlog at several priorities: high goes
    /// first four times in seven, yet low still gets one start in seven and is never starved.
    pub fn weight(self) -> u32 {
        match self {
            Priority::High => 4,
            Priority::Normal => 2,
            Priority::Low => 1,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("priority must be high, normal or low, not {0:?}")]
pub struct BadPriority(pub String);

impl FromStr for Priority {
    type Err = BadPriority;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(BadPriority(other.to_owned())),
        }
    }
}

/// One queue of a job type: a listed tenant's, or the shared one (`tenant: None`), at one
/// priority.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lane {
    pub tenant: Option<String>,
    pub priority: Priority,
}

impl Lane {
    pub fn new(tenant: Option<&str>, priority: Priority) -> Self {
        Self {
            tenant: tenant.map(str::to_owned),
            priority,
        }
    }

    /// The shared lane at normal priority: the type's subject as the contract names it.
    pub fn is_default(&self) -> bool {
        self.tenant.is_none() && self.priority == Priority::Normal
    }

    /// The subject token of the lane's tenant: tenants may hold dots, subject tokens may not,
    /// and `~` is outside the tenants' alphabet, so the mapping is one to one.
    fn tenant_token(&self) -> String {
        format!(
            "@{}",
            self.tenant.as_deref().unwrap_or("").replace('.', "~")
        )
    }

    fn suffix(&self) -> Option<String> {
        (!self.is_default()).then(|| format!("{}.{}", self.tenant_token(), self.priority))
    }

    /// Every lane of `tenants` (listed ones and the shared one), in a stable order.
    pub fn all<'a>(tenants: impl IntoIterator<Item = &'a str>) -> Vec<Lane> {
        let mut lanes: Vec<Lane> = Priority::ALL.iter().map(|p| Lane::new(None, *p)).collect();
        for tenant in tenants {
            lanes.extend(Priority::ALL.iter().map(|p| Lane::new(Some(tenant), *p)));
        }
        lanes
    }
}

impl Names {
    /// Where a job of `job_type` waits in `lane`.
    pub fn lane_subject(&self, job_type: &str, lane: &Lane) -> String {
        match lane.suffix() {
            None => self.job_subject(job_type),
            Some(suffix) => format!("{}.{suffix}", self.job_subject(job_type)),
        }
    }

    /// Where the server publishes a delayed job of `lane` when it is due.
    pub fn due_lane_subject(&self, job_type: &str, lane: &Lane) -> String {
        match lane.suffix() {
            None => self.due_subject(job_type),
            Some(suffix) => format!("{}.{suffix}", self.due_subject(job_type)),
        }
    }

    /// The durable consumer of a lane: the type's own for the default lane.
    pub fn lane_durable(&self, job_type: &str, lane: &Lane) -> String {
        let durable = self.durable(job_type);
        match lane.suffix() {
            None => durable,
            Some(_) => format!("{durable}{}@{}", lane.tenant_token(), lane.priority),
        }
    }

    /// Whether `durable` is the consumer of one of `job_type`'s lanes.
    pub fn is_durable_of(&self, job_type: &str, durable: &str) -> bool {
        durable
            .strip_prefix(&self.durable(job_type))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('@'))
    }

    /// The job type and lane of a work-stream subject.
    pub fn lane_of<'a>(&self, subject: &'a str) -> Option<(&'a str, Lane)> {
        let rest = subject
            .strip_prefix(self.namespace())?
            .strip_prefix(".jobs.")?;
        let Some((job_type, suffix)) = rest.split_once(".@") else {
            return (!rest.is_empty()).then(|| (rest, Lane::default()));
        };
        let (tenant, priority) = suffix.split_once('.')?;
        let priority = priority.parse().ok()?;
        let tenant = (!tenant.is_empty()).then(|| tenant.replace('~', "."));
        Some((job_type, Lane { tenant, priority }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_map_to_subjects_and_durables_and_back() {
        let names = Names::new("codigo").unwrap();
        let default = Lane::default();
        assert_eq!(
            names.lane_subject("ledger.post", &default),
            "codigo.jobs.ledger.post"
        );
        assert_eq!(
            names.lane_durable("ledger.post", &default),
            "codigo-ledger-post"
        );
        let lane = Lane::new(Some("acme.eu"), Priority::High);
        let subject = names.lane_subject("ledger.post", &lane);
        assert_eq!(subject, "codigo.jobs.ledger.post.@acme~eu.high");
        assert_eq!(
            names.lane_durable("ledger.post", &lane),
            "codigo-ledger-post@acme~eu@high"
        );
        assert_eq!(names.lane_of(&subject), Some(("ledger.post", lane.clone())));
        let durable = names.lane_durable("ledger.post", &lane);
        assert!(names.is_durable_of("ledger.post", &durable));
        assert!(names.is_durable_of("ledger.post", "codigo-ledger-post"));
        assert!(!names.is_durable_of("ledger.post", "codigo-ledger-posts"));
        let shared_low = Lane::new(None, Priority::Low);
        let subject = names.lane_subject("a.b.c", &shared_low);
        assert_eq!(subject, "codigo.jobs.a.b.c.@.low");
        assert_eq!(names.lane_of(&subject), Some(("a.b.c", shared_low)));
        assert_eq!(
            names.lane_of("codigo.jobs.ledger.post"),
            Some(("ledger.post", Lane::default()))
        );
        assert_eq!(names.lane_of("codigo.jobs.x.@t.urgent"), None);
        assert_eq!(
            names.due_lane_subject("ledger.post", &Lane::new(Some("t"), Priority::Low)),
            "codigo.due.ledger.post.@t.low"
        );
    }

    #[test]
    fn every_lane_subject_is_distinct() {
        let names = Names::new("codigo").unwrap();
        let lanes = Lane::all(["a", "a.b", "a-b"]);
        let mut subjects: Vec<String> =
            lanes.iter().map(|l| names.lane_subject("x.y", l)).collect();
        let mut durables: Vec<String> =
            lanes.iter().map(|l| names.lane_durable("x.y", l)).collect();
        subjects.sort();
        subjects.dedup();
        durables.sort();
        durables.dedup();
        assert_eq!(subjects.len(), lanes.len());
        assert_eq!(durables.len(), lanes.len());
    }

    #[test]
    fn priorities_parse_and_weigh() {
        assert_eq!("high".parse::<Priority>(), Ok(Priority::High));
        assert!("urgent".parse::<Priority>().is_err());
        assert!(Priority::High.weight() > Priority::Normal.weight());
        assert!(Priority::Normal.weight() > Priority::Low.weight());
    }
}
