//! Direct connections to public peers first reached through a relay.
//!
//! A home behind NAT may first meet a publicly reachable radiator through a relay: the public
//! one asked it for work, dialling the relay address it advertises. Hole punching cannot then
//! give a direct connection when the home's NAT is symmetric, and libp2p's simultaneous open
//! does not suit a peer that simply accepts connections; yet blobs never cross a relay, so
//! the public radiator could not fetch the home's job (issue 11: the NAT lab's symmetric
//! variant). A plain outbound dial from the home to the public address works through any NAT,
//! so this task makes it: every [`EVERY`], each peer connected only through a relay that
//! reports a public address is dialled there.
//!
//! Uses only [`Network`]'s public API (status, peers, dial). Bounded: at most
//! [`MAX_DIALS_PER_ROUND`] dials a round, each within [`DIAL_TIMEOUT`], an address tried again
//! only after [`RETRY_AFTER`], and at most [`MAX_REMEMBERED`] addresses remembered.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Network;

/// How often relayed-only peers are looked at.
pub const EVERY: Duration = Duration::from_secs(5);
/// Dials made in one round, at most.
pub const MAX_DIALS_PER_ROUND: usize = 4;
/// One dial's bound.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// An address that did not give a direct connection is tried again after this.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// Addresses remembered as tried; beyond it the oldest are forgotten.
pub const MAX_REMEMBERED: usize = 256;

/// True for an address a home behind NAT can dial directly: not through a relay, and not a
/// private, loopback, link-local, carrier-grade-NAT or unspecified one.
pub fn is_public_direct(addr: &Multiaddr) -> bool {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return false;
    }
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => public_v4(ip),
        Some(Protocol::Ip6(ip)) => public_v6(ip),
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_)) => true,
        _ => false,
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        // 100.64.0.0/10: carrier-grade NAT, as private as RFC 1918 space.
        || (a == 100 && (64..128).contains(&b)))
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80)
}

/// Runs until `shutdown` changes (or its sender is dropped).
pub async fn run(net: Network, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tried: HashMap<Multiaddr, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        let Ok(status) = net.status().await else {
            continue;
        };
        let relayed = &status.reachability.relayed_peers;
        if relayed.is_empty() {
            continue;
        }
        let Ok(peers) = net.peers().await else {
            continue;
        };
        let now = Instant::now();
        tried.retain(|_, at| now.duration_since(*at) < RETRY_AFTER);
        let mut dials = Vec::new();
        for p in peers.iter().filter(|p| relayed.contains(&p.peer_id)) {
            for addr in p.addresses.iter().filter(|a| is_public_direct(a)) {
                if dials.len() >= MAX_DIALS_PER_ROUND {
                    break;
                }
                let addr = addr.clone().with_p2p(p.peer_id).unwrap_or_else(|a| a);
                if tried.contains_key(&addr) || tried.len() >= MAX_REMEMBERED {
                    continue;
                }
                tried.insert(addr.clone(), now);
                dials.push((p.peer_id, addr));
            }
        }
        for (peer, addr) in dials {
            tracing::info!(%peer, %addr, "only a relayed connection to a public peer: dialling it directly");
            match tokio::time::timeout(DIAL_TIMEOUT, net.dial(addr.clone())).await {
                Ok(Ok(())) => tracing::info!(%peer, "direct connection to a public peer"),
                Ok(Err(e)) => tracing::debug!(%peer, %addr, "direct dial failed: {e}"),
                Err(_) => tracing::debug!(%peer, %addr, "direct dial timed out"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_direct_addresses() {
        let yes = |s: &str| assert!(is_public_direct(&s.parse().unwrap()), "{s}");
        let no = |s: &str| assert!(!is_public_direct(&s.parse().unwrap()), "{s}");
        yes("/ip4/198.51.100.3/tcp/4001");
        yes("/ip4/203.0.113.7/udp/4001/quic-v1");
        yes("/ip6/2001:db8::1/tcp/4001");
        yes("/dns4/boot.example.org/tcp/4001");
        no("/ip4/10.1.0.2/tcp/4001");
        no("/ip4/192.168.1.20/tcp/4001");
        no("/ip4/127.0.0.1/tcp/4001");
        no("/ip4/100.72.0.1/tcp/4001");
        no("/ip4/0.0.0.0/tcp/4001");
        no("/ip6/fe80::1/tcp/4001");
        no("/ip6/fd00::1/tcp/4001");
        no("/ip4/198.51.100.2/tcp/4001/p2p/12D3KooWCQ7VyJfZhSX95n2qamrVEGkr2aCWtQPqWD6W7BryLDLz/p2p-circuit");
    }
}
