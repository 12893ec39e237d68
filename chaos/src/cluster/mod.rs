//! A three-node JetStream cluster of the pinned nats-server, set up like production (R3
//! streams, `sync_interval` from deploy/nats/cluster.conf, the shared deploy/nats/server.conf),
//! that the suite can kill, pause and cut apart.
//!
//! With root and iproute2 every server runs in a network namespace of its own: one veth pair
//! to the host for its clients, one veth pair to each peer for its routes. Downing a pair cuts
//! exactly that path, so "isolated from its peers" and "cut off from clients while it still
//! sees its peers" are two different faults. Without them the servers share loopback, and the
//! partitions are skipped (and said so).
use std::path::{Path, PathBuf};
use std::time::Duration;

use codigo_testkit::process::{self, Probe, Process};
use tokio::process::Command;

use crate::servers::STARTUP;
use crate::ChaosError;

mod net;

pub use self::net::netns_unavailable;
use self::net::Net;

/// Server-wide settings every server of the project shares.
pub const SERVER_CONF: &str = include_str!("../../../deploy/nats/server.conf");
/// The production cluster profile (sync_interval, stream replicas, duplicate window).
pub const CLUSTER_CONF: &str = include_str!("../../../deploy/nats/cluster.conf");

/// `key: value` lines of a profile file, comments and blank lines skipped.
pub fn conf_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
}

/// The shared cluster profile, parsed.
#[derive(Debug, Clone)]
pub struct Profile {
    pub sync_interval: String,
    pub stream_replicas: usize,
    pub duplicate_window_secs: u64,
}

impl Profile {
    pub fn shared() -> Self {
        let get = |key: &str| {
            conf_value(CLUSTER_CONF, key)
                .unwrap_or_else(|| panic!("deploy/nats/cluster.conf lacks {key}"))
        };
        Self {
            sync_interval: get("sync_interval"),
            stream_replicas: get("stream_replicas")
                .parse()
                .expect("deploy/nats/cluster.conf: stream_replicas is a number"),
            duplicate_window_secs: get("duplicate_window_secs")
                .parse()
                .expect("deploy/nats/cluster.conf: duplicate_window_secs is a number"),
        }
    }
}

struct Node {
    name: String,
    binary: String,
    client: (String, u16),
    conf: PathBuf,
    log_dir: PathBuf,
    ns: Option<String>,
    starts: u32,
    server: Option<Process>,
}

impl Node {
    async fn spawn(&mut self) -> Result<(), ChaosError> {
        self.starts += 1;
        let log = self
            .log_dir
            .join(format!("nats-{}-{}.log", self.name, self.starts));
        // `ip netns exec` execs the server in place: the child's pid is the server's.
        let mut command = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, &self.binary]);
                c
            }
            None => Command::new(&self.binary),
        };
        command.arg("-c").arg(&self.conf);
        let name = format!("nats-server {}", self.name);
        let server = self
            .server
            .insert(Process::spawn(name, &mut command, &log)?);
        server
            .wait_ready(&Probe::tcp(&self.client.0, self.client.1), STARTUP)
            .await?;
        Ok(())
    }

    fn server(&mut self) -> Result<&mut Process, ChaosError> {
        self.server
            .as_mut()
            .ok_or_else(|| ChaosError::Check(format!("nats-server {} is not running", self.name)))
    }
}

/// Three (or more) nats-servers with routes between all of them.
pub struct Cluster {
    nodes: Vec<Node>,
    net: Option<Net>,
    /// Why the network faults are skipped, when they are.
    pub skipped_partitions: Option<String>,
}

impl Cluster {
    /// Starts `size` servers, each with its store in `dir`. `isolate` asks for network
    /// namespaces; when they cannot be had the cluster runs on loopback and says why.
    pub async fn start(dir: &Path, size: usize, isolate: bool) -> Result<Self, ChaosError> {
        let binary = process::nats_server()?;
        let skipped = if isolate {
            netns_unavailable()
        } else {
            Some("network namespaces not requested".into())
        };
        let net = match &skipped {
            None => Some(Net::create(size)?),
            Some(_) => None,
        };
        let profile = Profile::shared();
        let ports: Vec<(u16, u16)> = match &net {
            Some(_) => vec![(4222, 6222); size],
            None => (0..size)
                .map(|_| Ok((process::free_port()?, process::free_port()?)))
                .collect::<Result<_, ChaosError>>()?,
        };
        let mut nodes = Vec::new();
        for i in 0..size {
            let name = format!("n{i}");
            let (client_host, route_listen) = match &net {
                Some(net) => (net.client_ip(i), "0.0.0.0".to_owned()),
                None => ("127.0.0.1".to_owned(), "127.0.0.1".to_owned()),
            };
            let routes: Vec<String> = (0..size)
                .filter(|j| *j != i)
                .map(|j| match &net {
                    Some(net) => format!("nats-route://{}:{}", net.route_ip(i, j), ports[j].1),
                    None => format!("nats-route://127.0.0.1:{}", ports[j].1),
                })
                .collect();
            let store = dir.join(format!("nats-{name}"));
            let conf = dir.join(format!("nats-{name}.conf"));
            let text = format!(
                "# Generated by codigo-chaos for one run.\n\
                 server_name: {name}\n\
                 listen: \"{client_host}:{port}\"\n\
                 # Routes and clients are declared dead after 2 missed pings 2 s apart, so that \
                 a pause of a few seconds outlasts them (production: 2 minutes).\n\
                 ping_interval: \"2s\"\n\
                 ping_max: 2\n\
                 # JetStream reserves each stream's max_bytes up front: a namespace's defaults \
                 (work 1 GiB, dead letters 1 GiB, advisories 64 MiB) twice over, for a run and \
                 its bare baseline.\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  sync_interval: {sync}\n  max_file_store: 8GB\n}}\n\
                 cluster {{\n  name: codigo-chaos\n  listen: \"{route_listen}:{route_port}\"\n  \
                 routes: [\n    {routes}\n  ]\n}}\n\
                 # deploy/nats/server.conf\n{shared}\n",
                port = ports[i].0,
                store = store.display(),
                sync = profile.sync_interval,
                route_port = ports[i].1,
                routes = routes.join("\n    "),
                shared = SERVER_CONF,
            );
            std::fs::write(&conf, text)
                .map_err(|e| ChaosError::io(format!("write {}", conf.display()), e))?;
            nodes.push(Node {
                name,
                binary: binary.clone(),
                client: (client_host, ports[i].0),
                conf,
                log_dir: dir.to_owned(),
                ns: net.as_ref().map(|n| n.ns[i].clone()),
                starts: 0,
                server: None,
            });
        }
        let mut cluster = Self {
            nodes,
            net,
            skipped_partitions: skipped,
        };
        for node in &mut cluster.nodes {
            node.spawn().await?;
        }
        cluster.wait_jetstream().await?;
        Ok(cluster)
    }

    /// Listening is not serving: JetStream answers only once the servers have elected a
    /// metadata leader.
    async fn wait_jetstream(&self) -> Result<(), ChaosError> {
        let servers: Vec<async_nats::ServerAddr> = self
            .urls()
            .split(',')
            .filter_map(|u| u.parse().ok())
            .collect();
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_secs(2)))
            .connect(servers)
            .await
            .map_err(|e| ChaosError::Setup(format!("connect to the cluster: {e}")))?;
        let js = async_nats::jetstream::new(client);
        for _ in 0..60 {
            if js.query_account().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(ChaosError::Setup(
            "the cluster's JetStream did not answer within 60 s; see the nats-n*.log files".into(),
        ))
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Process ids of the running servers (for CPU accounting).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.server.as_ref().map(Process::pid))
            .collect()
    }

    pub fn has_network(&self) -> bool {
        self.net.is_some()
    }

    /// Every server's client URL, comma separated, as NATS_URL takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://{}:{}", n.client.0, n.client.1))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// `kill -9`: the server loses whatever it had not written.
    pub async fn kill(&mut self, i: usize) -> Result<(), ChaosError> {
        if let Some(mut server) = self.nodes[i].server.take() {
            server.kill().await?;
        }
        Ok(())
    }

    /// Starts a killed server again on its store.
    pub async fn restart(&mut self, i: usize) -> Result<(), ChaosError> {
        self.nodes[i].spawn().await
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing.
    pub fn pause(&mut self, i: usize) -> Result<(), ChaosError> {
        Ok(self.nodes[i].server()?.pause()?)
    }

    pub fn resume(&mut self, i: usize) -> Result<(), ChaosError> {
        Ok(self.nodes[i].server()?.resume()?)
    }

    /// Cuts (or heals) server `i`'s links to its peers; its clients still reach it.
    pub fn isolate(&self, i: usize, cut: bool) -> Result<(), ChaosError> {
        self.net
            .as_ref()
            .ok_or_else(|| ChaosError::Check("no network namespaces".into()))?
            .set_routes(i, !cut)
    }

    /// Cuts (or heals) server `i` from its clients; it still sees its peers.
    pub fn cut_clients(&self, i: usize, cut: bool) -> Result<(), ChaosError> {
        self.net
            .as_ref()
            .ok_or_else(|| ChaosError::Check("no network namespaces".into()))?
            .set_clients(i, !cut)
    }
}

impl Drop for Cluster {
    /// Servers first (each waited for until it is gone), then the namespaces.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.server.take();
        }
        self.net.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_profile_is_the_production_one() {
        let profile = Profile::shared();
        assert_eq!(profile.sync_interval, "always");
        assert_eq!(profile.stream_replicas, 3);
        assert!(profile.duplicate_window_secs > 0);
        assert_eq!(
            conf_value(SERVER_CONF, "max_payload").as_deref(),
            Some("2097152")
        );
    }
}
