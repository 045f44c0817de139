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

/// How often a node redials its bootstrap nodes while every dial of a round fails at its own door
/// ([`RedialRound`]): the line is down, and it wants to know within moments that it
/// is back (a home router's reboot, a DSL reconnection). Such a dial reached no bootstrap node,
/// so polling costs them nothing; it costs a packet to the home router every few seconds.
pub(crate) const LINE_DOWN_REDIAL: Duration = Duration::from_secs(5);

/// The dials of one bootstrap redial round: whether every one of them failed at this node's
/// own door ([`unreachable_from_here`]). Only then is the line taken to be down: a bootstrap
/// list with an IPv6 entry on a host without IPv6 fails that entry so every round, while its
/// IPv4 entries reach out to the bootstrap nodes, whom the backoff protects.
#[derive(Debug, Default)]
pub(crate) struct RedialRound {
    pending: std::collections::HashSet<libp2p::swarm::ConnectionId>,
    reached_out: bool,
}

impl RedialRound {
    /// A round begins with these dials (those that started); the last round is forgotten.
    pub(crate) fn start(&mut self, dials: impl IntoIterator<Item = libp2p::swarm::ConnectionId>) {
        self.pending = dials.into_iter().collect();
        self.reached_out = false;
    }

    /// Dial `id` failed, at this node's door or not: what that tells of the line. A dial that
    /// connected never ends here, so its round never counts as the line down.
    pub(crate) fn failed(&mut self, id: libp2p::swarm::ConnectionId, at_door: bool) -> Line {
        if !self.pending.remove(&id) {
            return Line::Unknown;
        }
        if !at_door {
            self.reached_out = true;
            return Line::Up;
        }
        if self.pending.is_empty() && !self.reached_out {
            Line::Down
        } else {
            Line::Unknown
        }
    }
}

/// What a failed dial of a redial round tells of this node's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line {
    /// Every dial of the round failed at the door.
    Down,
    /// This dial reached out (refused, timed out): packets leave the home.
    Up,
    /// Nothing yet (other dials of the round are open), or not a dial of the round.
    Unknown,
}

/// Whether every address of a failed dial failed as unreachable from this host (the kernel's
/// `ENETUNREACH` or `EHOSTUNREACH`: no route, the home router answered "unreachable", or the
/// gateway does not answer ARP), so that nothing reached the far end. Read from the error's
/// `Debug` form: libp2p wraps the socket's `io::Error` in layers of `Either`, whose
/// `Error::source` passes over the inner error, so no downcast reaches it. Should the form
/// change, this answers false and the redial keeps its usual backoff.
pub(crate) fn unreachable_from_here(error: &libp2p::swarm::DialError) -> bool {
    let libp2p::swarm::DialError::Transport(attempts) = error else {
        return false;
    };
    !attempts.is_empty()
        && attempts.iter().all(|(_, e)| {
            let d = format!("{e:?}");
            ["NetworkUnreachable", "HostUnreachable"]
                .iter()
                .any(|k| d.contains(&format!("kind: {k}")) || d.contains(&format!("Kind({k})")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket error from the kernel under layers of wrapping, as libp2p nests a TCP dial's
    /// error under DNS and the relay transport (the NAT lab's logs: `Other(Custom { kind:
    /// Other, error: Other(Right(Dial([Transport(Right(Custom { kind: Other, error:
    /// Left(Left(Os { code: 101, kind: NetworkUnreachable, .. }))}))])))})`).
    fn nested(os: std::io::Error) -> libp2p::TransportError<std::io::Error> {
        let inner = std::io::Error::other(Layer(os));
        libp2p::TransportError::Other(std::io::Error::other(Layer(inner)))
    }

    /// A wrapper that, like libp2p's, prints what it wraps.
    #[derive(Debug)]
    struct Layer(std::io::Error);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(f)
        }
    }
    impl std::error::Error for Layer {}

    #[test]
    fn a_dial_that_fails_at_its_own_door_is_told_from_one_that_reached_out() {
        use libp2p::swarm::DialError;
        let addr: Multiaddr = "/ip4/198.51.100.2/tcp/4001".parse().unwrap();
        let os = std::io::Error::from_raw_os_error;
        let dial = |errs: Vec<std::io::Error>| {
            DialError::Transport(
                errs.into_iter()
                    .map(|e| (addr.clone(), nested(e)))
                    .collect(),
            )
        };
        assert!(unreachable_from_here(&dial(vec![os(libc::ENETUNREACH)])));
        assert!(unreachable_from_here(&dial(vec![
            os(libc::EHOSTUNREACH),
            std::io::Error::from(std::io::ErrorKind::NetworkUnreachable),
        ])));
        // The far end was reached (refused), or may have been (timed out): not at the door.
        for far in [libc::ECONNREFUSED, libc::ETIMEDOUT] {
            assert!(!unreachable_from_here(&dial(vec![os(far)])), "{far}");
            assert!(!unreachable_from_here(&dial(vec![
                os(libc::ENETUNREACH),
                os(far)
            ])));
        }
        assert!(!unreachable_from_here(&dial(Vec::new())));
        assert!(!unreachable_from_here(&DialError::Aborted));
    }

    #[test]
    fn the_line_is_down_only_when_every_dial_of_a_round_failed_at_the_door() {
        use libp2p::swarm::ConnectionId;
        let (a, b) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        let mut round = RedialRound::default();
        round.start([a, b]);
        assert_eq!(
            round.failed(a, true),
            Line::Unknown,
            "one dial is still open"
        );
        assert_eq!(round.failed(b, true), Line::Down, "both failed at the door");
        assert_eq!(round.failed(b, true), Line::Unknown, "each dial ends once");
        // One entry unreachable (IPv6 on a host without it), the other reached out.
        round.start([a, b]);
        assert_eq!(round.failed(a, true), Line::Unknown);
        assert_eq!(round.failed(b, false), Line::Up);
        round.start([a, b]);
        assert_eq!(round.failed(b, false), Line::Up);
        assert_eq!(round.failed(a, true), Line::Unknown);
        // One connected (never fails): the round never says the line is down.
        round.start([a, b]);
        assert_eq!(round.failed(a, true), Line::Unknown);
        // A dial of an earlier round.
        round.start([b]);
        assert_eq!(round.failed(a, true), Line::Unknown);
        assert_eq!(round.failed(b, true), Line::Down);
    }

    #[test]
    fn a_backoff_held_at_most_a_while() {
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
