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

    /// Addresses a webhook must never reach, by the range that makes them so.
    const REFUSED: &[(&str, &str)] = &[
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "unique local"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("::ffff:10.0.0.1", "IPv4-mapped private"),
        ("64:ff9b::10.0.0.1", "NAT64 of private"),
        ("64:ff9b::127.0.0.1", "NAT64 of loopback"),
        ("64:ff9b::169.254.169.254", "NAT64 of link-local"),
        ("64:ff9b::a9fe:a9fe", "NAT64 of link-local, hex"),
        ("64:ff9b::192.168.0.1", "NAT64 of private"),
        ("64:ff9b:1::8.8.8.8", "local-use NAT64 prefix"),
        ("::10.0.0.1", "IPv4-compatible"),
        ("::127.0.0.1", "IPv4-compatible"),
        ("::169.254.169.254", "IPv4-compatible"),
        ("::8.8.8.8", "IPv4-compatible, even of a public address"),
        ("::a00:1", "IPv4-compatible, hex"),
        ("2002:a00:1::1", "6to4 of private"),
        ("2002:7f00:1::", "6to4 of loopback"),
        ("198.18.0.0", "benchmarking"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.255", "benchmarking"),
        ("::ffff:198.18.0.0", "IPv4-mapped benchmarking"),
        ("::ffff:198.18.0.1", "IPv4-mapped benchmarking"),
        ("::ffff:198.19.255.255", "IPv4-mapped benchmarking"),
        ("240.0.0.1", "reserved class E"),
        ("250.1.2.3", "reserved class E"),
        ("255.255.255.254", "reserved class E"),
        ("255.255.255.255", "broadcast"),
    ];

    /// Public addresses, several just outside a refused range.
    const ALLOWED: &[(&str, &str)] = &[
        ("93.184.216.34", "public"),
        ("8.8.8.8", "public"),
        ("2606:4700::1111", "public IPv6"),
        // How IPv6-only clusters reach IPv4 receivers.
        ("64:ff9b::8.8.8.8", "NAT64 of public"),
        ("2002:808:808::1", "6to4 of public"),
        ("198.17.255.255", "below benchmarking"),
        ("198.20.0.0", "above benchmarking"),
        ("223.255.255.254", "below class E"),
    ];

    #[test]
    fn special_purpose_addresses_are_refused_and_their_neighbours_are_not() {
        for &(ip, range) in REFUSED {
            assert!(!is_public(ip.parse().expect("ip")), "{ip} ({range})");
        }
        for &(ip, range) in ALLOWED {
            assert!(is_public(ip.parse().expect("ip")), "{ip} ({range})");
        }
    }
}
