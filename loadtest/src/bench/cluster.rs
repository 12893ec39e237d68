//! The scenarios again on a local cluster in the production profile.
use std::path::Path;

use codigo_common::nats::{self, InitialConnect};

use crate::error::LoadError;
use codigo_chaos::cluster::{Cluster, Profile};

use super::{scenarios, Ctx, Results};

/// The scenarios on the production profile: what ran, and on what.
pub(super) struct Clustered {
    pub(super) results: Results,
    pub(super) servers: usize,
    pub(super) profile: Profile,
}

/// Starts a local cluster in the production profile (deploy/nats/cluster.conf), runs every
/// scenario on it, bare baseline included, and stops it.
pub(super) async fn on_cluster(ctx: &Ctx<'_>, logs: &Path) -> Result<Clustered, LoadError> {
    let servers = ctx.args.cluster;
    if servers < 3 {
        return Err(LoadError::Invalid(format!(
            "BENCH_CLUSTER={servers}: a JetStream cluster needs at least 3 servers (0 skips it)"
        )));
    }
    let profile = Profile::shared();
    let dir = logs.join("cluster");
    std::fs::create_dir_all(&dir).map_err(|source| LoadError::Write {
        path: dir.clone(),
        source,
    })?;
    eprintln!(
        "production profile: {servers} nats-servers, R{} streams, sync_interval {}",
        profile.stream_replicas, profile.sync_interval
    );
    let cluster = Cluster::start(&dir, servers, false)
        .await
        .map_err(|e| LoadError::Invalid(format!("starting the benchmark cluster: {e}")))?;
    let mut args = ctx.args.clone();
    args.nats.nats_url = cluster.urls();
    let client = nats::connect(
        &args.nats,
        "codigo-loadtest-bench-cluster",
        InitialConnect::FailFast,
    )
    .await?;
    let cluster_ctx = Ctx {
        args: &args,
        bins: ctx.bins.clone(),
        server: ctx.server.clone(),
        client: client.clone(),
        http: ctx.http.clone(),
        logs: logs.to_owned(),
        token: ctx.token.clone(),
        replicas: profile.stream_replicas.min(servers),
        nats_pids: Some(cluster.pids()),
    };
    let outcome = scenarios(&cluster_ctx).await;
    ctx.server
        .destroy_all(&async_nats::jetstream::new(client.clone()))
        .await;
    drop(cluster);
    Ok(Clustered {
        results: outcome?,
        servers,
        profile,
    })
}
