//! The cluster fault schedule: each fault injected, healed and recovered from before the
//! next.
use std::time::Duration;

use tokio::time::Instant;

use crate::check::{FaultKind, FaultWindow};
use crate::cluster::Cluster;
use crate::ChaosError;

use super::plan::{ClusterPlan, FAULT_GAP};
use super::say;

/// The stream leader's server name, from the work stream's info.
pub(super) async fn stream_leader(js: &async_nats::jetstream::Context) -> Option<String> {
    let info = tokio::time::timeout(Duration::from_secs(5), async {
        let mut stream = js.get_stream("CODIGO_JOBS").await.ok()?;
        stream.info().await.ok().map(|i| i.cluster.clone())
    })
    .await
    .ok()
    .flatten()??;
    info.leader
}

/// Both streams have a leader and every replica current.
pub(super) async fn cluster_healthy(js: &async_nats::jetstream::Context, size: usize) -> bool {
    for name in ["CODIGO_JOBS", "CODIGO_DLQ"] {
        let cluster = tokio::time::timeout(Duration::from_secs(5), async {
            let mut stream = js.get_stream(name).await.ok()?;
            stream.info().await.ok().map(|i| i.cluster.clone())
        })
        .await
        .ok()
        .flatten()
        .flatten();
        let Some(cluster) = cluster else {
            return false;
        };
        if cluster.leader.is_none()
            || cluster.replicas.len() + 1 < size
            || cluster.replicas.iter().any(|r| !r.current || r.offline)
        {
            return false;
        }
    }
    true
}

pub(super) async fn wait_healthy(
    js: &async_nats::jetstream::Context,
    size: usize,
    started: Instant,
    deadline: Instant,
) {
    let until = (Instant::now() + Duration::from_secs(90)).min(deadline);
    while Instant::now() < until {
        if cluster_healthy(js, size).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    say(
        started,
        "the cluster did not report every replica current within 90 s; going on".into(),
    );
}

/// Runs the cluster fault schedule, each fault healed and recovered from before the next.
pub(super) async fn inject_cluster_faults(
    plan: &ClusterPlan,
    schedule: &[FaultKind],
    cluster: &mut Cluster,
    js: &async_nats::jetstream::Context,
    started: Instant,
    deadline: Instant,
) -> Result<Vec<FaultWindow>, ChaosError> {
    let size = cluster.size();
    let mut windows = Vec::new();
    for kind in schedule {
        if Instant::now() > deadline {
            break;
        }
        wait_healthy(js, size, started, deadline).await;
        tokio::time::sleep(FAULT_GAP).await;
        let leader_before = stream_leader(js).await;
        let leader = leader_before
            .as_deref()
            .and_then(|name| cluster.index_of(name))
            .unwrap_or(0);
        let target = match kind {
            FaultKind::LeaderKill
            | FaultKind::LeaderPause
            | FaultKind::LeaderIsolated
            | FaultKind::LeaderClientCut => leader,
            _ => (leader + 1 + fastrand::usize(..size - 1)) % size,
        };
        let node = cluster.name(target).to_owned();
        say(
            started,
            format!(
                "{} ({node}; leader {})",
                kind.describe(),
                leader_before.as_deref().unwrap_or("unknown")
            ),
        );
        let start = Instant::now();
        match kind {
            FaultKind::LeaderKill | FaultKind::FollowerKill => {
                cluster.kill(target).await?;
                tokio::time::sleep(plan.down).await;
                cluster.restart(target).await?;
            }
            FaultKind::LeaderPause | FaultKind::FollowerPause => {
                cluster.pause(target)?;
                tokio::time::sleep(plan.pause).await;
                cluster.resume(target)?;
            }
            FaultKind::LeaderIsolated | FaultKind::FollowerIsolated => {
                let cut = cluster.isolate(target, true);
                if cut.is_ok() {
                    tokio::time::sleep(plan.cut).await;
                }
                cluster.isolate(target, false)?;
                cut?;
            }
            FaultKind::LeaderClientCut => {
                let cut = cluster.cut_clients(target, true);
                if cut.is_ok() {
                    tokio::time::sleep(plan.cut).await;
                }
                cluster.cut_clients(target, false)?;
                cut?;
            }
            FaultKind::NatsRestart | FaultKind::PostgresRestart => continue,
        }
        let healed = Instant::now();
        wait_healthy(js, size, started, deadline).await;
        let leader_after = stream_leader(js).await;
        say(
            started,
            format!(
                "healed; recovered {:.1} s later, leader {}",
                healed.elapsed().as_secs_f64(),
                leader_after.as_deref().unwrap_or("unknown")
            ),
        );
        // The window runs until the cluster has recovered: an election after the heal is
        // part of the fault.
        windows.push(FaultWindow {
            leader_before,
            leader_after,
            ..FaultWindow::until_now(*kind, &node, start)
        });
    }
    Ok(windows)
}
