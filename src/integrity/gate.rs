//! The Receipts gate: a coordinator reads one answer to [`Request::Receipts`] at a time, in
//! turns (the peer told busy first goes first), and each household only for its share of
//! reading time. Part of `integrity.rs` (the coordinator's end of fetching receipts back).
//!
//! Pure: time comes in as a parameter (and, for a pass's length, from the clock when it is
//! dropped). Must not touch: the ledger, the network.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::model::wire::Response;

/// [`Request::Receipts`] answers read at once, by all peers together. Each is at most one
/// pass over the ledger on a blocking thread (about 0.1 s of a core at 139 264 receipts,
/// `benches/coordinator.rs`); a repair asks for one page after another. One at a time keeps
/// a radiator's other cores for its shards and its network however many peers ask (a
/// radiator may have two); repairs that meet wait their turn, half a second at a time.
pub const RECEIPTS_ANSWERS_AT_ONCE: usize = 1;
/// How long a peer told "busy" waits before asking again.
pub const RECEIPTS_BUSY_RETRY_MS: u64 = 500;

/// How many peers told busy the gate remembers, in the order they were told (the network
/// layer keeps at most 256 requests open at once, so no more can be waiting).
pub const RECEIPTS_WAITERS_MAX: usize = 256;
/// A peer told busy that has not asked again for this long has given up (it asks every
/// [`RECEIPTS_BUSY_RETRY_MS`]) and loses its turn.
pub const RECEIPTS_WAITER_GONE: Duration = Duration::from_millis(4 * RECEIPTS_BUSY_RETRY_MS);

/// Reading time one household may use at the gate before it must wait: its share builds up
/// again at this much per [`RECEIPTS_READING_REFILL`]. An honest repair reads the ledger about
/// once (0.1 s at 139 264 receipts; about 7 s at ten million), so it never waits for its share;
/// a household that keeps asking from the start of the ledger, page after page, gets at most
/// 1/60 of a core instead of the gate's whole core for as long as it asks.
pub const RECEIPTS_READING_SHARE: Duration = Duration::from_secs(60);
/// How long a household's whole share takes to build up again.
pub const RECEIPTS_READING_REFILL: Duration = Duration::from_secs(3600);
/// Households whose reading time the gate remembers. Only households that did verified work
/// for this node reach the gate (`no_receipts_here`); one that has not read for an hour
/// owes nothing and is forgotten first. Past this many, a new household's reading is not
/// counted (each one costs verified work).
pub const RECEIPTS_HOUSEHOLDS_MAX: usize = 4096;

/// Who is being answered a [`Request::Receipts`] now, and who was told busy: at most one
/// answer per peer and [`RECEIPTS_ANSWERS_AT_ONCE`] in all (`docs/threat-model.md`). A peer
/// asking again before its answer is read, or while others are, is told busy; when the gate
/// is free it goes to the peer told busy first that still asks ([`ReceiptsGate::enter`]), so
/// a peer that asks again the moment its answer arrives cannot keep out one that waits.
#[derive(Clone, Default)]
pub struct ReceiptsGate(std::sync::Arc<std::sync::Mutex<GateState>>);

#[derive(Default)]
struct GateState {
    inside: Vec<PeerId>,
    /// Peers told busy, first told first, each with when it last asked.
    waiting: VecDeque<(PeerId, Instant)>,
    /// Reading time each household used, as of when it was last counted: it goes down by
    /// [`RECEIPTS_READING_SHARE`] per [`RECEIPTS_READING_REFILL`]. At most
    /// [`RECEIPTS_HOUSEHOLDS_MAX`].
    used: HashMap<PeerId, (Duration, Instant)>,
}

/// What `used` comes to at `now`, from what it was `at`.
fn used_at(used: Duration, at: Instant, now: Instant) -> Duration {
    let since = now.saturating_duration_since(at);
    let back =
        since.mul_f64(RECEIPTS_READING_SHARE.as_secs_f64() / RECEIPTS_READING_REFILL.as_secs_f64());
    used.saturating_sub(back)
}

impl GateState {
    /// Counts `took` of reading against `peer` at `now`.
    fn charge(&mut self, peer: PeerId, took: Duration, now: Instant) {
        if !self.used.contains_key(&peer) && self.used.len() >= RECEIPTS_HOUSEHOLDS_MAX {
            self.used
                .retain(|_, (used, at)| !used_at(*used, *at, now).is_zero());
            if self.used.len() >= RECEIPTS_HOUSEHOLDS_MAX {
                return;
            }
        }
        let entry = self.used.entry(peer).or_insert((Duration::ZERO, now));
        *entry = (used_at(entry.0, entry.1, now) + took, now);
    }

    /// How long `peer` must wait at `now` before its share allows another answer (zero: it
    /// may be answered).
    fn wait_for_share(&self, peer: &PeerId, now: Instant) -> Duration {
        let Some((used, at)) = self.used.get(peer) else {
            return Duration::ZERO;
        };
        let used = used_at(*used, *at, now);
        if used < RECEIPTS_READING_SHARE {
            return Duration::ZERO;
        }
        // Until `used` is back below the share, a little past it.
        (used - RECEIPTS_READING_SHARE + Duration::from_millis(1))
            .mul_f64(RECEIPTS_READING_REFILL.as_secs_f64() / RECEIPTS_READING_SHARE.as_secs_f64())
    }
}

/// One answer being read; leaving the gate when dropped, its reading time counted against
/// the household's share.
pub struct ReceiptsPass {
    gate: ReceiptsGate,
    peer: PeerId,
    entered: Instant,
}

impl ReceiptsGate {
    /// A pass for `peer`'s answer, asked for at `now`, or the answer to give instead (busy,
    /// with the reason).
    pub fn enter(&self, peer: PeerId, now: Instant) -> Result<ReceiptsPass, Response> {
        let busy = |detail: &str| {
            Err(Response::Denied {
                reason: crate::model::wire::DenyReason::Busy,
                retry_after_ms: RECEIPTS_BUSY_RETRY_MS,
                detail: detail.into(),
            })
        };
        let Ok(mut state) = self.0.lock() else {
            return busy("the receipts gate is broken");
        };
        let wait = state.wait_for_share(&peer, now);
        if !wait.is_zero() {
            return Err(Response::Denied {
                reason: crate::model::wire::DenyReason::Busy,
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                detail: format!(
                    "your household has used its share of reading time here ({} s an hour); \
                     ask again in {} s",
                    RECEIPTS_READING_SHARE.as_secs(),
                    wait.as_secs().max(1)
                ),
            });
        }
        let GateState {
            inside, waiting, ..
        } = &mut *state;
        if inside.contains(&peer) {
            return busy("still reading your previous receipts request");
        }
        waiting.retain(|(_, asked)| now.saturating_duration_since(*asked) < RECEIPTS_WAITER_GONE);
        let first = waiting.front().map(|(p, _)| *p);
        if inside.len() < RECEIPTS_ANSWERS_AT_ONCE && first.is_none_or(|f| f == peer) {
            if first == Some(peer) {
                waiting.pop_front();
            }
            inside.push(peer);
            return Ok(ReceiptsPass {
                gate: self.clone(),
                peer,
                entered: now,
            });
        }
        if let Some(w) = waiting.iter_mut().find(|(p, _)| *p == peer) {
            w.1 = now;
        } else if waiting.len() < RECEIPTS_WAITERS_MAX {
            waiting.push_back((peer, now));
        }
        if inside.len() < RECEIPTS_ANSWERS_AT_ONCE {
            busy("other households asked first; your turn comes")
        } else {
            busy("reading other households' receipts requests")
        }
    }
}

impl Drop for ReceiptsPass {
    fn drop(&mut self) {
        if let Ok(mut state) = self.gate.0.lock() {
            state.inside.retain(|p| *p != self.peer);
            let now = Instant::now();
            state.charge(self.peer, now.saturating_duration_since(self.entered), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::wire::DenyReason;

    fn is_busy(r: &Result<ReceiptsPass, Response>) -> bool {
        matches!(
            r,
            Err(Response::Denied {
                reason: DenyReason::Busy,
                retry_after_ms: RECEIPTS_BUSY_RETRY_MS,
                ..
            })
        )
    }

    #[test]
    fn receipts_answers_are_one_per_peer_and_bounded_in_all() {
        let gate = ReceiptsGate::default();
        let now = Instant::now();
        let a = PeerId::random();
        let first = gate.enter(a, now).unwrap_or_else(|_| panic!("open"));
        assert!(
            is_busy(&gate.enter(a, now)),
            "a second answer to the same peer"
        );
        let others: Vec<ReceiptsPass> = (1..RECEIPTS_ANSWERS_AT_ONCE)
            .map(|_| {
                gate.enter(PeerId::random(), now)
                    .unwrap_or_else(|_| panic!("open"))
            })
            .collect();
        let late = PeerId::random();
        assert!(
            is_busy(&gate.enter(late, now)),
            "one answer more than allowed in all"
        );
        drop(first);
        let room = gate
            .enter(late, now)
            .unwrap_or_else(|_| panic!("room again"));
        assert!(is_busy(&gate.enter(a, now)));
        drop((others, room));
        // A pass moved to another thread is let go there.
        let pass = gate.enter(a, now).unwrap_or_else(|_| panic!("open"));
        std::thread::spawn(move || drop(pass)).join().unwrap();
        assert!(gate.enter(a, now).is_ok());
    }

    /// A peer that asks again the moment its answer is read (it knows when: the answer
    /// arrives) must not keep out one that was told busy and asks every
    /// [`RECEIPTS_BUSY_RETRY_MS`]: the gate is let in turn by turn, in the order peers were
    /// told busy. (Failed before: the greedy peer found the gate free every time, and an
    /// honest repair gave up after 120 busy answers.)
    #[test]
    fn a_greedy_peer_does_not_starve_one_that_waits() {
        let gate = ReceiptsGate::default();
        let now = Instant::now();
        let (greedy, honest, third) = (PeerId::random(), PeerId::random(), PeerId::random());
        let pass = gate.enter(greedy, now).unwrap_or_else(|_| panic!("open"));
        assert!(
            is_busy(&gate.enter(honest, now)),
            "the greedy peer is inside"
        );
        assert!(is_busy(&gate.enter(third, now)));
        drop(pass);
        // The greedy peer asks at once; the honest one was told busy first: its turn, then
        // the third's, then the greedy peer's.
        assert!(is_busy(&gate.enter(greedy, now)), "the waiting peers' turn");
        assert!(is_busy(&gate.enter(third, now)), "not the third's turn yet");
        let later = now + Duration::from_millis(RECEIPTS_BUSY_RETRY_MS);
        drop(
            gate.enter(honest, later)
                .unwrap_or_else(|_| panic!("its turn")),
        );
        assert!(is_busy(&gate.enter(greedy, later)));
        drop(
            gate.enter(third, later)
                .unwrap_or_else(|_| panic!("its turn")),
        );
        assert!(gate.enter(greedy, later).is_ok(), "then the greedy peer's");
    }

    /// A peer told busy that stops asking (it gave up, or went away) loses its turn once
    /// [`RECEIPTS_WAITER_GONE`] has passed, so nobody waits for it.
    /// A household that keeps the gate reading (as one that asks from the start of the
    /// ledger, page after page, would) gets its share of reading time and is then told when to
    /// ask again, with the reason; others are answered meanwhile, and its share builds up again.
    #[test]
    fn a_household_reads_only_its_share_of_time() {
        let gate = ReceiptsGate::default();
        let (hog, other) = (PeerId::random(), PeerId::random());
        // Each pass is as long as the time between its entry and its drop.
        let long_ago = Instant::now() - RECEIPTS_READING_SHARE / 2;
        drop(gate.enter(hog, long_ago).unwrap_or_else(|_| panic!("open")));
        let now = Instant::now();
        drop(
            gate.enter(
                hog,
                now - RECEIPTS_READING_SHARE / 2 - Duration::from_secs(1),
            )
            .unwrap_or_else(|_| panic!("half its share used")),
        );
        let now = Instant::now();
        let Err(Response::Denied {
            retry_after_ms,
            detail,
            ..
        }) = gate.enter(hog, now)
        else {
            panic!("its share is used up");
        };
        assert!(detail.contains("share of reading time"), "{detail}");
        // About a second past its share, which builds up at a minute an hour: about a minute
        // to wait, said in the answer.
        assert!(retry_after_ms >= 1_000, "{retry_after_ms}");
        assert!(
            gate.enter(other, now).is_ok(),
            "another household is answered"
        );
        let later = now + Duration::from_millis(retry_after_ms);
        assert!(gate.enter(hog, later).is_ok(), "its share built up again");
    }

    /// What the gate remembers stays bounded; households whose reading is paid off go first.
    #[test]
    fn the_households_remembered_stay_bounded() {
        let mut state = GateState::default();
        let start = Instant::now();
        for _ in 0..RECEIPTS_HOUSEHOLDS_MAX {
            state.charge(PeerId::random(), Duration::from_millis(10), start);
        }
        let hog = PeerId::random();
        state.charge(hog, RECEIPTS_READING_SHARE * 2, start);
        assert_eq!(
            state.used.len(),
            RECEIPTS_HOUSEHOLDS_MAX,
            "full: not counted"
        );
        // An hour later every small reading is paid off and forgotten to make room.
        let later = start + RECEIPTS_READING_REFILL;
        state.charge(hog, RECEIPTS_READING_SHARE * 2, later);
        assert_eq!(state.used.len(), 1);
        assert!(!state.wait_for_share(&hog, later).is_zero());
    }

    #[test]
    fn a_peer_that_stopped_asking_loses_its_turn() {
        let gate = ReceiptsGate::default();
        let now = Instant::now();
        let (a, gone) = (PeerId::random(), PeerId::random());
        let pass = gate.enter(a, now).unwrap_or_else(|_| panic!("open"));
        assert!(is_busy(&gate.enter(gone, now)));
        drop(pass);
        let soon = now + RECEIPTS_WAITER_GONE - Duration::from_millis(1);
        assert!(is_busy(&gate.enter(a, soon)), "still its turn");
        assert!(gate.enter(a, now + RECEIPTS_WAITER_GONE).is_ok());
    }
}
