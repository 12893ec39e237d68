//! Which addresses webhooks may reach: the checks on every resolved address (so that DNS
//! cannot smuggle a private one in) and on literal addresses in URLs.
use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether webhooks may reach `ip`: not private, loopback, link-local, shared (CGNAT),
/// benchmarking, reserved, multicast or documentation space, nor an IPv6 form that embeds
/// such an IPv4 address (mapped, compatible, NAT64, 6to4), through which that address could
/// be reached all the same.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                // 198.18.0.0/15: benchmarking, often routed to lab networks.
                || (a == 198 && (b & 0xfe) == 18)
                // 240.0.0.0/4: reserved; some stacks route it internally.
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let [first, second, ..] = segments;
            let [.., a, b, c, d] = v6.octets();
            // ::a.b.c.d, IPv4-compatible: deprecated, no public use, still routed by some
            // stacks to the embedded (often private) address.
            if segments[..6].iter().all(|s| *s == 0) {
                return false;
            }
            // 64:ff9b::/96, NAT64: a gateway forwards it to the embedded IPv4 address.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            // 64:ff9b:1::/48, local-use NAT64 (RFC 8215): the operator's own translators.
            if first == 0x64 && second == 0xff9b && segments[2] == 1 {
                return false;
            }
            // 2002::/16, 6to4: the relay forwards it to the IPv4 address in bits 16..48.
            if first == 0x2002 {
                let [_, _, a, b, c, d, ..] = v6.octets();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to private, loopback or link-local addresses, which webhooks may not reach (CODIGO_WEBHOOK_ALLOW_PRIVATE)")]
pub(super) struct BlockedAddress {
    host: String,
}

/// Resolves names and drops every address webhooks may not reach.
pub(super) struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| is_public(addr.ip()))
                .collect();
            if resolved.is_empty() {
                return Err(Box::new(BlockedAddress { host }) as Box<_>);
            }
            Ok(Box::new(resolved.into_iter()) as Addrs)
        })
    }
}

pub(super) fn blocked(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BlockedAddress>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
    }

    fn refused(ip: &str) -> bool {
        !is_public(ip.parse().expect("ip"))
    }

    #[test]
    fn nat64_of_private_ipv4_is_refused() {
        for ip in [
            "64:ff9b::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::192.168.0.1",
            "64:ff9b:1::8.8.8.8",
        ] {
            assert!(refused(ip), "{ip}");
        }
        // NAT64 of a public address is how IPv6-only clusters reach IPv4 receivers.
        assert!(!refused("64:ff9b::8.8.8.8"));
    }

    #[test]
    fn ipv4_compatible_ipv6_is_refused() {
        for ip in [
            "::10.0.0.1",
            "::127.0.0.1",
            "::169.254.169.254",
            "::8.8.8.8",
            "::a00:1",
        ] {
            assert!(refused(ip), "{ip}");
        }
    }

    #[test]
    fn six_to_four_of_private_ipv4_is_refused() {
        assert!(refused("2002:a00:1::1"));
        assert!(refused("2002:7f00:1::"));
        assert!(!refused("2002:808:808::1"));
    }

    #[test]
    fn benchmarking_range_is_refused() {
        for ip in ["198.18.0.0", "198.18.0.1", "198.19.255.255"] {
            assert!(refused(ip), "{ip}");
            assert!(refused(&format!("::ffff:{ip}")), "{ip} mapped");
        }
        for ip in ["198.17.255.255", "198.20.0.0"] {
            assert!(!refused(ip), "{ip}");
        }
    }

    #[test]
    fn reserved_class_e_is_refused() {
        for ip in [
            "240.0.0.1",
            "250.1.2.3",
            "255.255.255.254",
            "255.255.255.255",
        ] {
            assert!(refused(ip), "{ip}");
        }
        assert!(!refused("223.255.255.254"));
    }
}
