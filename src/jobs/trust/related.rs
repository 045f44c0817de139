//! Self-dealing made visible (issue 10, item 5): whether the household that earned a receipt
//! is the submitter itself, or shares an address with it. Pure: the addresses come in as
//! plain data (what the coordinator's network saw); nothing here reads the network.
//!
//! **Shares an address** (`docs/threat-model.md`): some IP address that *counts* is both one
//! of the worker's and one of the submitter's. The worker's are the remote addresses of the
//! coordinator's connections to it and the addresses it reported (identify); the submitter's
//! are its own listen addresses and confirmed external addresses. An address counts when it
//! is globally routable: not loopback, unspecified, private (10/8, 172.16/12, 192.168/16,
//! fc00::/7), link-local, shared (CGNAT 100.64/10) or multicast. Those ranges are reused in
//! every home (every other home has a 192.168.1.10), or, for loopback, are how every test and
//! `hearth demo` connects its radiators on one machine, so two households having one of them
//! in common says nothing about who owns them. Two households behind one public IP share its
//! router: one home, or one building's or carrier's NAT; the mark says so and no more.
//!
//! Must not touch: I/O, the network, clocks.

use std::net::IpAddr;

use libp2p::multiaddr::{Multiaddr, Protocol};

use crate::identity::PublicKey;

/// Most addresses looked at per side. A peer reports at most a bounded number of listen
/// addresses (`net`'s `MAX_ADDRS_PER_PEER`) and holds few connections; 64 leaves room and
/// keeps the comparison (at most 64 × 64) trivial.
pub const MAX_ADDRESSES: usize = 64;

/// How the household that earned a receipt is tied to the job's submitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// The worker is the submitter's own key.
    SameKey,
    /// The worker and the submitter share a public IP address.
    SharedAddress,
}

impl Relation {
    pub fn tag(self) -> u8 {
        match self {
            Relation::SameKey => 1,
            Relation::SharedAddress => 2,
        }
    }

    pub fn from_tag(tag: u8) -> Option<Relation> {
        match tag {
            1 => Some(Relation::SameKey),
            2 => Some(Relation::SharedAddress),
            _ => None,
        }
    }
}

/// Whether an address can tell two households apart (see the module doc).
pub fn counts(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                // Shared address space (RFC 6598): a carrier's NAT, not a home.
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => counts(&IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    // Unique local fc00::/7 and link-local fe80::/10.
                    || (s[0] & 0xfe00) == 0xfc00
                    || (s[0] & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// The IP address of a multiaddr, unless it goes through a relay (then it is the relay's).
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Whether two households share an address that counts.
pub fn shares_address(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.iter()
        .take(MAX_ADDRESSES)
        .filter(|ip| counts(ip))
        .any(|ip| b.iter().take(MAX_ADDRESSES).any(|other| other == ip))
}

/// How `worker` is tied to `submitter`, given the addresses known for each; `None`: not at
/// all, as far as this coordinator can tell.
pub fn relation(
    submitter: &PublicKey,
    worker: &PublicKey,
    submitter_ips: &[IpAddr],
    worker_ips: &[IpAddr],
) -> Option<Relation> {
    if submitter == worker {
        Some(Relation::SameKey)
    } else if shares_address(submitter_ips, worker_ips) {
        Some(Relation::SharedAddress)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_public_address_in_common_is_shared() {
        let s = Identity::from_seed([1; 32]).public();
        let w = Identity::from_seed([2; 32]).public();
        assert_eq!(relation(&s, &s, &[], &[]), Some(Relation::SameKey));
        let home = ip("203.0.113.7");
        assert_eq!(
            relation(&s, &w, &[ip("192.168.1.10"), home], &[home]),
            Some(Relation::SharedAddress)
        );
        assert_eq!(relation(&s, &w, &[home], &[ip("203.0.113.8")]), None);
        let v6 = ip("2001:db8::1");
        assert_eq!(
            relation(&s, &w, &[v6], &[v6]),
            Some(Relation::SharedAddress)
        );
        // Reused in every home, or every test: never shared.
        for same in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "10.0.0.2",
            "172.16.5.4",
            "192.168.1.10",
            "169.254.1.1",
            "100.64.3.3",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.1.10",
        ] {
            assert_eq!(relation(&s, &w, &[ip(same)], &[ip(same)]), None, "{same}");
        }
        // An IPv4-mapped public address is that address.
        assert!(counts(&ip("::ffff:203.0.113.7")));
    }

    #[test]
    fn a_relayed_address_is_the_relays_not_the_peers() {
        let direct: Multiaddr = "/ip4/203.0.113.7/tcp/4001".parse().unwrap();
        assert_eq!(ip_of(&direct), Some(ip("203.0.113.7")));
        let relayed: Multiaddr = "/ip4/198.51.100.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            .parse()
            .unwrap();
        assert_eq!(ip_of(&relayed), None);
        let dns: Multiaddr = "/dns4/example.org/tcp/1".parse().unwrap();
        assert_eq!(ip_of(&dns), None);
    }
}
