//! Is this home's line down? A radiator learns it from its own dials, as nothing else tells
//! it: a home router whose line is down (a reboot, a DSL reconnection, an outage) either
//! answers its packets with "network unreachable" or drops them without a word, and neither
//! changes anything on the radiator's own link.
//!
//! While the line is down the node redials its bootstrap nodes every [`LINE_DOWN_REDIAL`]
//! instead of along the backoff grown meanwhile, so that it listens through a relay again, and
//! is punched again by the homes it lost, within moments of the line coming back, and says so
//! (`hearth status`, `LINE DOWN`). A redial round says the line is down ([`RedialRound`]) when
//! every one of its dials failed at this node's own door ([`DialEnd::AtDoor`]); or, when the
//! node recently lost its connections outside the home to broken paths and holds none
//! ([`Silence`]), when every dial went unanswered too ([`DialEnd::Unanswered`]). A dial that
//! went unanswered without that loss keeps the backoff: that is what bootstrap nodes that are
//! down or overloaded look like, and whom the backoff protects.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use libp2p::swarm::{ConnectionId, DialError};
use libp2p::Multiaddr;

/// How often a node redials its bootstrap nodes while its line is down ([`RedialRound`]): it
/// wants to know within moments that the line is back. Such a dial reached no bootstrap node,
/// so polling costs them nothing; it costs a packet to the home router every few seconds.
pub(crate) const LINE_DOWN_REDIAL: Duration = Duration::from_secs(5);

/// How recent the losses [`Silence`] counts are.
const SILENCE_WINDOW: Duration = Duration::from_secs(300);

/// Connections outside the home lost to broken paths, within [`SILENCE_WINDOW`], that make
/// unanswered dials count as the line down. Two: a node whose only connection out was one
/// bootstrap node that died (its host gone) keeps the backoff, which protects that node when
/// it comes back, and its relay and one more peer dying together is the home's line.
const SILENT_LOSSES: usize = 2;

/// How a failed dial ended, as far as this node's line is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DialEnd {
    /// Every address failed at this node's own door (the kernel's `ENETUNREACH` or
    /// `EHOSTUNREACH`: no route, the home router answered "unreachable", or the gateway does
    /// not answer ARP): nothing reached the far end.
    AtDoor,
    /// Every address failed at the door or went unanswered (timed out), at least one
    /// unanswered: the home router may have dropped it, or the far end is gone.
    Unanswered,
    /// Anything else: an address refused it or answered (a failed handshake, another peer),
    /// or the dial never went out for a reason of this node's own (aborted, denied), which
    /// tells nothing of the line.
    Answered,
}

/// How `error` ended, read from its `Debug` form: libp2p wraps the socket's `io::Error` in
/// layers of `Either`, whose `Error::source` passes over the inner error, so no downcast
/// reaches it; and a dial libp2p's connection timeout (10 s) ends prints as `Timeout`. Should
/// the form change, this answers [`DialEnd::Answered`] and the redial keeps its usual backoff.
pub(crate) fn dial_end(error: &DialError) -> DialEnd {
    let DialError::Transport(attempts) = error else {
        return DialEnd::Answered;
    };
    let mut unanswered = false;
    for (_, e) in attempts {
        let d = format!("{e:?}");
        let kind = |k: &str| d.contains(&format!("kind: {k}")) || d.contains(&format!("Kind({k})"));
        if kind("NetworkUnreachable") || kind("HostUnreachable") {
            continue;
        }
        if kind("TimedOut") || has_word(&d, "Timeout") {
            unanswered = true;
            continue;
        }
        return DialEnd::Answered;
    }
    match (attempts.is_empty(), unanswered) {
        (true, _) => DialEnd::Answered,
        (false, false) => DialEnd::AtDoor,
        (false, true) => DialEnd::Unanswered,
    }
}

/// Whether `word` stands in `text` as a word of its own (not part of a longer name).
fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// Whether a connection at `remote` leaves the home: through a relay, or to an address on the
/// internet (not loopback, a private or link-local network, or carrier-grade NAT space).
/// Radiators in one home stay connected to one another while its line is down.
pub(crate) fn outside_home(remote: &Multiaddr) -> bool {
    super::relayed::is_relayed(remote) || super::direct::is_public_direct(remote)
}

/// Whether the connection at `remote` is itself a path out of the home, whose death
/// [`Silence`] counts as a loss: a direct connection to an address on the internet. A
/// relayed connection rides on the node's connection to its relay, a path of its own whose
/// death is counted once; were the relayed ones counted too, one relay host dying would be
/// two losses or more (each connection's pings call it dead on their own timer), and a home
/// whose only path out was its relay would take its relay's death for its own line.
pub(crate) fn path_out_of_home(remote: &Multiaddr) -> bool {
    super::direct::is_public_direct(remote)
}

/// Direct connections out of the home ([`path_out_of_home`]) that died of broken paths (pings
/// failed, the kernel gave up on them) since the node last established a connection outside
/// the home ([`outside_home`]): when it holds none outside the home and lost at least
/// [`SILENT_LOSSES`] within [`SILENCE_WINDOW`], its line has likely gone silent, and
/// unanswered redials count as the line down.
#[derive(Debug, Default)]
pub(crate) struct Silence {
    /// When each loss happened, the latest last; at most [`SILENT_LOSSES`].
    losses: VecDeque<Instant>,
}

impl Silence {
    /// A direct connection out of the home ([`path_out_of_home`]) died of a broken path.
    pub(crate) fn lost(&mut self, now: Instant) {
        if self.losses.len() == SILENT_LOSSES {
            self.losses.pop_front();
        }
        self.losses.push_back(now);
    }

    /// A connection outside the home was established: packets leave the home.
    pub(crate) fn established(&mut self) {
        self.losses.clear();
    }

    /// Whether unanswered dials count as the line down now, `outside_open` being whether the
    /// node holds any connection outside the home.
    pub(crate) fn silent(&self, now: Instant, outside_open: bool) -> bool {
        !outside_open
            && self.losses.len() == SILENT_LOSSES
            && self
                .losses
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) <= SILENCE_WINDOW)
    }
}

/// The dials of one bootstrap redial round: whether every one of them failed at this node's
/// own door (or went unanswered while [`Silence`] held). Only then is the line taken to be down:
/// a bootstrap list with an IPv6 entry on a host without IPv6 fails that entry so every round,
/// while its IPv4 entries reach out to the bootstrap nodes, whom the backoff protects.
#[derive(Debug, Default)]
pub(crate) struct RedialRound {
    pending: std::collections::HashSet<ConnectionId>,
    reached_out: bool,
}

impl RedialRound {
    /// A round begins with these dials (those that started); the last round is forgotten,
    /// unless no dial started (every bootstrap node was still being dialled or connected),
    /// when the round under way goes on: a round every second or two, while each dial waits
    /// up to 10 s for an answer that never comes, would otherwise forget every dial before it
    /// failed (in the NAT lab the line was said to be down only once the backoff had grown
    /// past the 10 s, ~45 s after the connections out died).
    pub(crate) fn start(&mut self, dials: impl IntoIterator<Item = ConnectionId>) {
        let dials: std::collections::HashSet<ConnectionId> = dials.into_iter().collect();
        if dials.is_empty() {
            return;
        }
        self.pending = dials;
        self.reached_out = false;
    }

    /// Whether dial `id` belongs to the round under way.
    pub(crate) fn holds(&self, id: ConnectionId) -> bool {
        self.pending.contains(&id)
    }

    /// Dial `id` failed so: what that tells of the line, `silent` being what [`Silence`]
    /// says now (the connections out of the home may have died while the round's dials were
    /// open: in the NAT lab the first rounds after the relay died started with one loss and
    /// ended with three). A dial that connected never ends here, so its round never counts
    /// as the line down.
    pub(crate) fn failed(&mut self, id: ConnectionId, end: DialEnd, silent: bool) -> Line {
        if !self.pending.remove(&id) {
            return Line::Unknown;
        }
        let at_door = match end {
            DialEnd::AtDoor => true,
            DialEnd::Unanswered => silent,
            DialEnd::Answered => false,
        };
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
    /// Every dial of the round failed at the door (or, silent, went unanswered).
    Down,
    /// This dial reached out (refused; or timed out, outside a silent round).
    Up,
    /// Nothing yet (other dials of the round are open), or not a dial of the round.
    Unknown,
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

    /// A dial libp2p's connection timeout ended, as the swarm builder's boxed transport
    /// wraps it (the NAT lab's logs: `Other(Custom { kind: Other, error: Timeout })`).
    fn timed_out() -> libp2p::TransportError<std::io::Error> {
        use libp2p::core::transport::timeout::TransportTimeoutError;
        libp2p::TransportError::Other(std::io::Error::other(
            TransportTimeoutError::<std::io::Error>::Timeout,
        ))
    }

    fn dial(errs: Vec<libp2p::TransportError<std::io::Error>>) -> DialError {
        let addr: Multiaddr = "/ip4/198.51.100.2/tcp/4001".parse().unwrap();
        DialError::Transport(errs.into_iter().map(|e| (addr.clone(), e)).collect())
    }

    #[test]
    fn a_dial_that_fails_at_its_own_door_is_told_from_one_unanswered_and_one_answered() {
        let os = |code| nested(std::io::Error::from_raw_os_error(code));
        assert_eq!(
            dial_end(&dial(vec![os(libc::ENETUNREACH)])),
            DialEnd::AtDoor
        );
        assert_eq!(
            dial_end(&dial(vec![
                os(libc::EHOSTUNREACH),
                nested(std::io::Error::from(std::io::ErrorKind::NetworkUnreachable)),
            ])),
            DialEnd::AtDoor
        );
        // Unanswered: libp2p's own timeout, or the kernel's.
        assert_eq!(dial_end(&dial(vec![timed_out()])), DialEnd::Unanswered);
        assert_eq!(
            dial_end(&dial(vec![os(libc::ETIMEDOUT), os(libc::ENETUNREACH)])),
            DialEnd::Unanswered
        );
        // The far end answered (refused), on one address or all.
        assert_eq!(
            dial_end(&dial(vec![os(libc::ECONNREFUSED)])),
            DialEnd::Answered
        );
        assert_eq!(
            dial_end(&dial(vec![
                os(libc::ENETUNREACH),
                timed_out(),
                os(libc::ECONNREFUSED)
            ])),
            DialEnd::Answered
        );
        assert_eq!(dial_end(&dial(Vec::new())), DialEnd::Answered);
        assert_eq!(dial_end(&DialError::Aborted), DialEnd::Answered);
        // A name that merely holds the word is not a timeout.
        assert!(!has_word("ResponseTimeoutElapsed", "Timeout"));
        assert!(has_word(
            "Custom { kind: Other, error: Timeout }",
            "Timeout"
        ));
    }

    #[test]
    fn the_line_is_down_only_when_every_dial_of_a_round_failed_at_the_door() {
        let (a, b) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        let (door, none, answered) = (DialEnd::AtDoor, DialEnd::Unanswered, DialEnd::Answered);
        let mut round = RedialRound::default();
        round.start([a, b]);
        assert_eq!(
            round.failed(a, door, false),
            Line::Unknown,
            "one dial is still open"
        );
        assert_eq!(
            round.failed(b, door, false),
            Line::Down,
            "both failed at the door"
        );
        assert_eq!(
            round.failed(b, door, false),
            Line::Unknown,
            "each dial ends once"
        );
        // One entry unreachable (IPv6 on a host without it), the other reached out.
        round.start([a, b]);
        assert_eq!(round.failed(a, door, false), Line::Unknown);
        assert_eq!(round.failed(b, answered, false), Line::Up);
        round.start([a, b]);
        assert_eq!(round.failed(b, answered, false), Line::Up);
        assert_eq!(round.failed(a, door, false), Line::Unknown);
        // One connected (never fails): the round never says the line is down.
        round.start([a, b]);
        assert_eq!(round.failed(a, door, false), Line::Unknown);
        // A dial of an earlier round.
        round.start([b]);
        assert_eq!(round.failed(a, door, false), Line::Unknown);
        assert_eq!(round.failed(b, door, false), Line::Down);
        // Unanswered dials: the bootstrap nodes may be down, and the backoff protects them...
        round.start([a, b]);
        assert_eq!(round.failed(a, none, false), Line::Up);
        assert_eq!(round.failed(b, door, false), Line::Unknown);
        // ...unless the node's connections out of the home died just before (silent).
        round.start([a, b]);
        assert_eq!(round.failed(a, none, true), Line::Unknown);
        assert_eq!(round.failed(b, door, true), Line::Down);
        round.start([a, b]);
        assert_eq!(round.failed(a, none, true), Line::Unknown);
        assert_eq!(round.failed(b, none, true), Line::Down);
        round.start([a, b]);
        assert_eq!(round.failed(a, none, true), Line::Unknown);
        assert_eq!(
            round.failed(b, answered, true),
            Line::Up,
            "an answer is an answer"
        );
        // The connections out died while the round was open: its last failure decides.
        round.start([a, b]);
        assert_eq!(round.failed(a, none, false), Line::Up);
        assert_eq!(
            round.failed(b, none, true),
            Line::Unknown,
            "a dial reached out"
        );
        round.start([a, b]);
        assert_eq!(round.failed(a, door, false), Line::Unknown);
        assert_eq!(round.failed(b, none, true), Line::Down);
        // A round that started no dial (each still being dialled) leaves the one under way.
        round.start([a, b]);
        round.start([]);
        assert!(round.holds(a) && round.holds(b));
        assert_eq!(round.failed(a, none, true), Line::Unknown);
        assert!(!round.holds(a), "each dial ends once");
        assert_eq!(round.failed(b, none, true), Line::Down);
    }

    #[test]
    fn silence_is_two_recent_losses_out_of_the_home_and_nothing_out_open() {
        let t0 = Instant::now();
        let mut s = Silence::default();
        assert!(!s.silent(t0, false), "nothing lost");
        s.lost(t0);
        assert!(
            !s.silent(t0, false),
            "one loss: one bootstrap node's host may have died"
        );
        s.lost(t0 + Duration::from_secs(20));
        let t = t0 + Duration::from_secs(30);
        assert!(s.silent(t, false));
        assert!(!s.silent(t, true), "a connection out of the home is open");
        assert!(
            !s.silent(t0 + SILENCE_WINDOW + Duration::from_secs(1), false),
            "losses long ago"
        );
        // A third loss later: the two latest count.
        s.lost(t0 + SILENCE_WINDOW);
        assert!(s.silent(t0 + SILENCE_WINDOW + Duration::from_secs(1), false));
        s.established();
        assert!(
            !s.silent(t0 + SILENCE_WINDOW, false),
            "back out of the home"
        );
    }

    #[test]
    fn only_connections_through_a_relay_or_to_the_internet_leave_the_home() {
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        for (addr, out) in [
            ("/ip4/198.51.100.2/tcp/4001", true),
            ("/ip4/198.51.100.2/tcp/4001/p2p/12D3KooWCQ7VyJfZhSX95n2qamrVEGkr2aCWtQPqWD6W7BryLDLz/p2p-circuit", true),
            ("/ip4/10.2.0.3/tcp/4002", false),
            ("/ip4/192.168.1.20/udp/4001/quic-v1", false),
            ("/ip4/127.0.0.1/tcp/4001", false),
            ("/ip4/100.64.0.9/tcp/4001", false),
            ("/ip6/fd00::3/tcp/4001", false),
            ("/ip6/2001:db8::3/tcp/4001", true),
        ] {
            assert_eq!(outside_home(&a(addr)), out, "{addr}");
            // Of these, only the direct ones are paths of their own.
            let own_path = out && !addr.ends_with("p2p-circuit");
            assert_eq!(path_out_of_home(&a(addr)), own_path, "{addr}");
        }
        // A connection dialled through a relay, and one a peer dialled to us through it
        // (its remote address is only the peer's id): their relay's connection is the path.
        let dialled_through = a("/ip4/198.51.100.2/tcp/4001/p2p/12D3KooWCQ7VyJfZhSX95n2qamrVEGkr2aCWtQPqWD6W7BryLDLz/p2p-circuit/p2p/12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE");
        assert!(outside_home(&dialled_through));
        assert!(!path_out_of_home(&dialled_through));
        assert!(!path_out_of_home(&a(
            "/p2p/12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE"
        )));
    }
}
