//! Network namespaces and veth links of a cluster run, so that a server can be cut off from
//! its peers or from its clients.
use std::path::Path;

use codigo_testkit::process;

use crate::ChaosError;

/// Why the network faults cannot run here, if they cannot.
pub fn netns_unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root (network namespaces need CAP_NET_ADMIN)".into());
    }
    match std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!(
            "iproute2's `ip` cannot run ({e}); install iproute2"
        )),
    }
}

fn ip(args: &[&str]) -> Result<(), ChaosError> {
    process::run_blocking(std::process::Command::new("ip").args(args))?;
    Ok(())
}

pub(super) const NS_PREFIX: &str = "codigo-chaos-";

/// Namespaces of earlier runs whose process is gone (killed before it could clean up).
pub(super) fn sweep_leftovers() {
    let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("chaos: removing network namespace {name} left by a run that died");
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// The namespaces and links of one run; removed on drop.
pub(super) struct Net {
    /// Namespace of each server.
    pub(super) ns: Vec<String>,
    /// Interface name prefix, unique per run (interface names are at most 15 bytes).
    pub(super) tag: String,
    /// 10.<a>.<b>.0/24 carved into /30 links.
    pub(super) net: (u8, u8),
}

/// Address of /30 link `link`, host `host` (1 or 2).
pub(super) fn link_addr(net: (u8, u8), link: u8, host: u8) -> String {
    format!("10.{}.{}.{}", net.0, net.1, link * 4 + host)
}

/// Index of the peer link between servers i < j among the three.
pub(super) fn pair_link(i: usize, j: usize) -> u8 {
    let (a, b) = if i < j { (i, j) } else { (j, i) };
    32 + match (a, b) {
        (0, 1) => 0,
        (0, 2) => 1,
        _ => 2,
    }
}

impl Net {
    pub(super) fn create(nodes: usize) -> Result<Self, ChaosError> {
        sweep_leftovers();
        let pid = std::process::id();
        let run = fastrand::u32(..);
        let tag = format!("cg{:04x}", run & 0xffff);
        // A /24 of 10/8 that no route on this machine uses yet.
        let routes = std::process::Command::new("ip")
            .args(["-4", "route", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let net = (0..100)
            .map(|_| (fastrand::u8(200..=250), fastrand::u8(..)))
            .find(|(a, b)| !routes.contains(&format!("10.{a}.{b}.")))
            .ok_or_else(|| ChaosError::Setup("no free 10.x.y.0/24 for the cluster".into()))?;
        let mut me = Self {
            ns: (0..nodes)
                .map(|i| format!("{NS_PREFIX}{pid}-{run:08x}-{i}"))
                .collect(),
            tag,
            net,
        };
        me.build().inspect_err(|_| me.remove())?;
        Ok(me)
    }

    pub(super) fn build(&mut self) -> Result<(), ChaosError> {
        for (i, ns) in self.ns.iter().enumerate() {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            let (host, inner) = (self.client_if(i, true), self.client_if(i, false));
            ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", &inner, "netns", ns,
            ])?;
            let link = u8::try_from(i).unwrap_or(0);
            ip(&[
                "addr",
                "add",
                &format!("{}/30", link_addr(self.net, link, 1)),
                "dev",
                &host,
            ])?;
            ip(&["link", "set", &host, "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/30", link_addr(self.net, link, 2)),
                "dev",
                &inner,
            ])?;
            ip(&["-n", ns, "link", "set", &inner, "up"])?;
        }
        for i in 0..self.ns.len() {
            for j in i + 1..self.ns.len() {
                let (a, b) = (self.route_if(i, j), self.route_if(j, i));
                ip(&[
                    "link",
                    "add",
                    &a,
                    "netns",
                    &self.ns[i],
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &b,
                    "netns",
                    &self.ns[j],
                ])?;
                let link = pair_link(i, j);
                for (ns, dev, host) in [(&self.ns[i], &a, 1), (&self.ns[j], &b, 2)] {
                    ip(&[
                        "-n",
                        ns,
                        "addr",
                        "add",
                        &format!("{}/30", link_addr(self.net, link, host)),
                        "dev",
                        dev,
                    ])?;
                    ip(&["-n", ns, "link", "set", dev, "up"])?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn client_if(&self, i: usize, host: bool) -> String {
        format!("{}{}{i}", self.tag, if host { "h" } else { "c" })
    }

    pub(super) fn route_if(&self, from: usize, to: usize) -> String {
        format!("{}r{from}{to}", self.tag)
    }

    /// Where clients reach server `i`.
    pub(super) fn client_ip(&self, i: usize) -> String {
        link_addr(self.net, u8::try_from(i).unwrap_or(0), 2)
    }

    /// Where server `from` reaches server `to` for routes.
    pub(super) fn route_ip(&self, from: usize, to: usize) -> String {
        let link = pair_link(from, to);
        link_addr(self.net, link, if to < from { 1 } else { 2 })
    }

    pub(super) fn set_clients(&self, i: usize, up: bool) -> Result<(), ChaosError> {
        ip(&[
            "link",
            "set",
            &self.client_if(i, true),
            if up { "up" } else { "down" },
        ])
    }

    pub(super) fn set_routes(&self, i: usize, up: bool) -> Result<(), ChaosError> {
        for j in (0..self.ns.len()).filter(|j| *j != i) {
            ip(&[
                "-n",
                &self.ns[i],
                "link",
                "set",
                &self.route_if(i, j),
                if up { "up" } else { "down" },
            ])?;
        }
        Ok(())
    }

    pub(super) fn remove(&mut self) {
        // Deleting a namespace deletes the veths inside it, and with them their host ends.
        for ns in std::mem::take(&mut self.ns) {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_links_are_distinct_and_symmetric() {
        let net = (210, 7);
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            assert_eq!(pair_link(i, j), pair_link(j, i));
            // i reaches j at the far end of their link and the other way round.
            let to_j = link_addr(net, pair_link(i, j), 2);
            let to_i = link_addr(net, pair_link(i, j), 1);
            assert_ne!(to_i, to_j);
        }
        assert_ne!(pair_link(0, 1), pair_link(1, 2));
    }
}
