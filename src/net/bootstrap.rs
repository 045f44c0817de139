//! Bootstrap peer lists and the redial backoff.
//!
//! A peer list is text: one multiaddr per line ending in `/p2p/<peer id>`, `#` starts a
//! comment, blank lines are ignored. The list shipped with hearth is
//! `bootstrap/peers.txt`, compiled into the binary as [`DEFAULT_PEER_LIST`].

use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use super::NetError;

/// The shipped bootstrap list (`bootstrap/peers.txt`).
pub const DEFAULT_PEER_LIST: &str = include_str!("../../bootstrap/peers.txt");

/// Most entries a peer list may hold; more is a sign of a wrong file.
const MAX_PEER_LIST: usize = 256;

/// Parse a peer list (see the module docs). Errors name the 1-based line.
pub fn parse_peer_list(text: &str) -> Result<Vec<Multiaddr>, NetError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let entry = raw.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let addr: Multiaddr = entry.parse().map_err(|e| NetError::PeerList {
            line,
            reason: format!("`{entry}` is not a multiaddr: {e}"),
        })?;
        if peer_id_of(&addr).is_none() {
            return Err(NetError::PeerList {
                line,
                reason: format!("`{entry}` does not end in /p2p/<peer id>"),
            });
        }
        if out.len() == MAX_PEER_LIST {
            return Err(NetError::PeerList {
                line,
                reason: format!("more than {MAX_PEER_LIST} peers"),
            });
        }
        out.push(addr);
    }
    Ok(out)
}

/// The shipped bootstrap peers. May be empty: no public bootstrap node exists yet.
pub fn default_bootstrap() -> Result<Vec<Multiaddr>, NetError> {
    parse_peer_list(DEFAULT_PEER_LIST)
}

/// The peer id at the end of `addr`, if any.
pub(crate) fn peer_id_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(id)) => Some(id),
        _ => None,
    }
}

/// `addr` without a trailing `/p2p/..`.
pub(crate) fn without_peer_id(addr: &Multiaddr) -> Multiaddr {
    let mut a = addr.clone();
    if let Some(Protocol::P2p(_)) = a.iter().last() {
        a.pop();
    }
    a
}

/// Whether an address a peer advertised (identify's listen addresses) is worth remembering:
/// never an unspecified one (`0.0.0.0`), and a loopback one only when we reach that peer over
/// loopback ourselves (`peer_on_loopback`: the same machine). Homes behind NAT advertise
/// `127.0.0.1`; dialled from another machine it reaches the dialler itself (the NAT lab's nodes
/// kept connecting to themselves: "WrongPeerId").
pub(crate) fn worth_dialling(addr: &Multiaddr, peer_on_loopback: bool) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) if ip.is_unspecified() => false,
        Some(Protocol::Ip6(ip)) if ip.is_unspecified() => false,
        Some(Protocol::Ip4(ip)) if ip.is_loopback() => peer_on_loopback,
        Some(Protocol::Ip6(ip)) if ip.is_loopback() => peer_on_loopback,
        _ => true,
    }
}

/// Whether `addr` (a connection's remote address) is on this machine.
pub(crate) fn is_loopback(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// Exponential backoff: 1 s, 2 s, 4 s, ... capped.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    current: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) const INITIAL: Duration = Duration::from_secs(1);

    pub(crate) fn new(max: Duration) -> Self {
        Self {
            current: Self::INITIAL,
            max: max.max(Self::INITIAL),
        }
    }

    /// The delay to wait now; doubles the next one.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.current = Self::INITIAL;
    }

    /// The next delay is at most `d`.
    pub(crate) fn at_most(&mut self, d: Duration) {
        self.current = self.current.min(d).max(Self::INITIAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_held_at_most_a_while() {
        use crate::net::line::LINE_DOWN_REDIAL;
        let mut b = Backoff::new(Duration::from_secs(300));
        for _ in 0..10 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), Duration::from_secs(300));
        b.at_most(LINE_DOWN_REDIAL);
        assert_eq!(b.next_delay(), LINE_DOWN_REDIAL);
        assert_eq!(
            b.next_delay(),
            LINE_DOWN_REDIAL * 2,
            "it doubles again after"
        );
    }

    #[test]
    fn loopback_addresses_only_from_a_peer_on_this_machine() {
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        for (addr, local, want) in [
            ("/ip4/127.0.0.1/tcp/4001", false, false),
            ("/ip4/127.0.0.1/tcp/4001", true, true),
            ("/ip6/::1/tcp/4001", false, false),
            ("/ip4/0.0.0.0/tcp/4001", true, false),
            ("/ip4/10.2.0.3/tcp/4002", false, true),
            ("/ip4/198.51.100.2/tcp/4001/p2p/12D3KooWCQ7VyJfZhSX95n2qamrVEGkr2aCWtQPqWD6W7BryLDLz/p2p-circuit", false, true),
            ("/dns4/boot.example/tcp/4001", false, true),
        ] {
            assert_eq!(worth_dialling(&a(addr), local), want, "{addr} (peer on loopback: {local})");
        }
        assert!(is_loopback(&a("/ip4/127.0.0.1/tcp/50000")));
        assert!(!is_loopback(&a("/ip4/198.51.100.11/tcp/4001")));
        assert!(!is_loopback(&a(
            "/p2p/12D3KooWCQ7VyJfZhSX95n2qamrVEGkr2aCWtQPqWD6W7BryLDLz"
        )));
    }

    #[test]
    fn parses_comments_and_names_bad_lines() {
        let id = PeerId::random();
        let text = format!(
            "# bootstrap peers\n\n/ip4/1.2.3.4/tcp/4001/p2p/{id}  # home\n/dns4/boot.example/udp/4001/quic-v1/p2p/{id}\n"
        );
        let list = parse_peer_list(&text).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(peer_id_of(&list[0]), Some(id));

        let err = parse_peer_list("# ok\n/ip4/1.2.3.4/tcp/1\n").unwrap_err();
        assert!(matches!(err, NetError::PeerList { line: 2, .. }), "{err}");
        let err = parse_peer_list("\n\nnot an address\n").unwrap_err();
        assert!(matches!(err, NetError::PeerList { line: 3, .. }), "{err}");
    }

    #[test]
    fn shipped_list_parses() {
        default_bootstrap().unwrap();
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(5));
        let got: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay().as_secs(), 1);
    }
}
