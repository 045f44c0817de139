//! Which coordinators offered this radiator work lately, and the heat demand sent to them.
//!
//! Heat demand is not gossiped (issue 14): a radiator tells only the coordinators that
//! announced open jobs to it in the last [`OFFER_TTL`], by a direct control message, when its
//! demand changes and every [`HEAT_REFRESH`]. What a radiator sends therefore grows with the
//! coordinators near it that have work, at most [`MAX_OFFERS`], never with the network.
//!
//! A radiator that wants heat and that no coordinator offered work within [`OFFER_TTL`] goes
//! on the DHT's want board and looks for coordinators with work beyond its neighbours on the
//! work board ([`seek_work`], `net::work`), and tells those it finds its heat demand; a
//! coordinator with an open job answers by offering it (`jobs::coordinator`,
//! `Cadence::offer_to`), and is an offer like any other from then on. A coordinator whose job
//! opens later finds the radiator on the want board and offers it the job at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::watch;

use crate::model::wire::{HeatDemand, Request, Response};
use crate::net::work::{Board, WANT_PROVIDE_PERIOD};
use crate::net::Network;

/// Coordinators remembered at once; the one heard from longest ago makes room.
pub const MAX_OFFERS: usize = 32;
/// A coordinator that has not announced anything for this long is forgotten (a little over
/// the coordinators' longest re-announcement interval, 40 s by default).
pub const OFFER_TTL: Duration = Duration::from_secs(90);
/// Demand is sent again this often even when unchanged, so a coordinator that restarted
/// learns it.
pub const HEAT_REFRESH: Duration = Duration::from_secs(10);
/// How soon a radiator that wants heat, and that no coordinator offered work, looks for
/// coordinators with work on the DHT: one Kademlia lookup each time (about 3·log₂ N
/// requests). The first look is this long after start, once the neighbours' own
/// announcements (every 5 to 40 s) have had a chance.
pub const SEEK_FIRST: Duration = Duration::from_secs(20);
/// The longest wait between two lookups: each one that finds nobody doubles the wait up to
/// this (21 min), so a cold radiator in a network without work looks about 70 times a day,
/// less often than Kademlia's own 15-minute refresh, not every 20 s (`docs/scale.md`).
pub const SEEK_MAX: Duration = Duration::from_secs(1_280);

/// When the work seeker looks next, and whether it is on the want board (pure: time comes
/// in as a parameter).
#[derive(Debug)]
pub struct Seek {
    wait: Duration,
    next: Instant,
    wanted: bool,
    /// When this radiator's want record was last published; `None` while it is not on the
    /// want board.
    posted: Option<Instant>,
}

/// What to do about this radiator's want record (`net::work`, [`Board::Want`]) now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WantStep {
    /// Publish it (again), and only then look the work board up.
    Post,
    /// Warm, or offered work: leave the board (records elsewhere expire on their own).
    Withdraw,
    Nothing,
}

impl Seek {
    pub fn new(now: Instant) -> Seek {
        Seek {
            wait: SEEK_FIRST,
            next: now + SEEK_FIRST,
            wanted: false,
            posted: None,
        }
    }

    /// Whether to go on the want board: when the first lookup after the room turned cold and
    /// unoffered is due (published first, so that a coordinator whose record comes after the
    /// lookup finds this radiator), again every [`WANT_PROVIDE_PERIOD`] while that lasts, and
    /// off the board once the room wants no heat or a coordinator offers work. Called after
    /// [`Seek::due`] with the same arguments.
    pub fn want_step(&mut self, now: Instant, wanting: bool, offered: bool) -> WantStep {
        let cold = wanting && !offered;
        match self.posted {
            Some(_) if !cold => {
                self.posted = None;
                WantStep::Withdraw
            }
            Some(at) if now.saturating_duration_since(at) >= WANT_PROVIDE_PERIOD => {
                self.posted = Some(now);
                WantStep::Post
            }
            None if cold && now >= self.next => {
                self.posted = Some(now);
                WantStep::Post
            }
            _ => WantStep::Nothing,
        }
    }

    /// Whether to look up now: the room wants heat (`wanting`), no coordinator offers work
    /// (`offered`) and the wait is over. A room that starts wanting heat again looks
    /// [`SEEK_FIRST`] later, however long the wait had grown.
    pub fn due(&mut self, now: Instant, wanting: bool, offered: bool) -> bool {
        if wanting && !self.wanted {
            self.wait = SEEK_FIRST;
            self.next = self.next.min(now + SEEK_FIRST);
        }
        self.wanted = wanting;
        wanting && !offered && now >= self.next
    }

    /// A lookup ended, having found `found` coordinators.
    pub fn looked(&mut self, now: Instant, found: usize) {
        self.wait = if found > 0 {
            SEEK_FIRST
        } else {
            (self.wait * 2).min(SEEK_MAX)
        };
        self.next = now + self.wait;
    }
}

/// Coordinators with open work, by when they last announced. Shared by the router (which
/// records announcements) and the heat sender.
#[derive(Clone, Default)]
pub struct Offers(Arc<Mutex<HashMap<PeerId, Instant>>>);

impl Offers {
    /// A coordinator announced an open job.
    pub fn heard(&self, peer: PeerId, now: Instant) {
        let Ok(mut map) = self.0.lock() else { return };
        map.retain(|_, at| now.saturating_duration_since(*at) < OFFER_TTL);
        if !map.contains_key(&peer) && map.len() >= MAX_OFFERS {
            if let Some(oldest) = map.iter().min_by_key(|(_, at)| **at).map(|(p, _)| *p) {
                map.remove(&oldest);
            }
        }
        map.insert(peer, now);
    }

    /// Whether `peer` offered work lately (within the last [`MAX_OFFERS`] coordinators heard).
    pub fn knows(&self, peer: &PeerId) -> bool {
        self.0.lock().is_ok_and(|map| map.contains_key(peer))
    }

    /// A coordinator said its job closed. It may have others; it is heard again if so.
    pub fn closed(&self, peer: &PeerId) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(peer);
        }
    }

    /// The coordinators heard from within [`OFFER_TTL`].
    pub fn current(&self, now: Instant) -> Vec<PeerId> {
        let Ok(map) = self.0.lock() else {
            return Vec::new();
        };
        map.iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) < OFFER_TTL)
            .map(|(p, _)| *p)
            .collect()
    }
}

/// Sends this radiator's heat demand to the coordinators that offered it work: when the
/// demand changes, to coordinators newly heard from, and every [`HEAT_REFRESH`].
pub async fn send_heat(
    heat: crate::heat::HeatHandle,
    net: Network,
    offers: Offers,
    mut stop: watch::Receiver<bool>,
) {
    let mut status = heat.subscribe();
    let mut last: Option<(u16, usize)> = None;
    let mut told: Vec<PeerId> = Vec::new();
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    let mut last_full = Instant::now();
    loop {
        let s = status.borrow_and_update().clone();
        let key = (s.demand_permille, s.slots);
        let now = Instant::now();
        let current = offers.current(now);
        let full = last != Some(key) || now.duration_since(last_full) >= HEAT_REFRESH;
        let targets: Vec<PeerId> = if full {
            current.clone()
        } else {
            current
                .iter()
                .filter(|p| !told.contains(p))
                .copied()
                .collect()
        };
        if full {
            last = Some(key);
            last_full = now;
        }
        if !targets.is_empty() {
            let bytes = demand_request(&s);
            // Sent one after another: at most MAX_OFFERS small requests, each bounded by the
            // network's request timeout; a slow coordinator delays only this loop.
            for peer in &targets {
                match net.request(*peer, bytes.clone()).await {
                    Ok(answer) if Response::from_bytes(&answer) == Ok(Response::Noted) => {}
                    Ok(other) => tracing::debug!(%peer, "heat demand answered {other:?}"),
                    Err(e) => tracing::debug!(%peer, "heat demand not sent: {e}"),
                }
            }
        }
        told = current;
        tokio::select! {
            changed = status.changed() => if changed.is_err() { break },
            _ = refresh.tick() => {}
            _ = stop.changed() => break,
        }
    }
}

/// The heat demand request for this radiator's status now.
fn demand_request(s: &crate::heat::HeatStatus) -> Vec<u8> {
    let msg = HeatDemand {
        wanted_slots: s.slots.min(u16::MAX as usize) as u16,
        demand_permille: s.demand_permille.min(1000),
        room_centi_c: s.room_celsius.map(|c| (c * 100.0).round() as i32),
        at_ms: crate::model::now_ms(),
    };
    Request::Heat(msg).to_bytes()
}

/// While this radiator wants heat and no coordinator has offered it work within
/// [`OFFER_TTL`], keeps it on the want board and looks up coordinators on the work board
/// ([`Network::find`]) as [`Seek`] says, and sends each one found this radiator's heat demand.
pub async fn seek_work(
    heat: crate::heat::HeatHandle,
    net: Network,
    offers: Offers,
    mut stop: watch::Receiver<bool>,
) {
    let status = heat.subscribe();
    let mut seek = Seek::new(Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let s = status.borrow().clone();
        let now = Instant::now();
        let wanting = s.demand_permille > 0 && s.slots > 0;
        let offered = !offers.current(now).is_empty();
        let look = seek.due(now, wanting, offered);
        match seek.want_step(now, wanting, offered) {
            WantStep::Post => {
                // Ends within Kademlia's query timeout; the lookup follows it.
                let posted = tokio::select! {
                    posted = net.post(Board::Want) => posted,
                    _ = stop.changed() => break,
                };
                if let Err(e) = posted {
                    tracing::debug!("want record not published: {e}");
                }
            }
            WantStep::Withdraw => {
                if let Err(e) = net.withdraw(Board::Want).await {
                    tracing::debug!("want record not withdrawn: {e}");
                }
            }
            WantStep::Nothing => {}
        }
        if !look {
            continue;
        }
        let found = tokio::select! {
            found = net.find(Board::Work) => found,
            _ = stop.changed() => break,
        };
        let found = found.unwrap_or_else(|e| {
            tracing::debug!("work lookup failed: {e}");
            Vec::new()
        });
        seek.looked(Instant::now(), found.len());
        if found.is_empty() {
            tracing::debug!("no coordinator with work found on the DHT");
            continue;
        }
        tracing::info!(
            coordinators = found.len(),
            "found coordinators with work beyond this radiator's neighbours"
        );
        let bytes = demand_request(&s);
        // At most MAX_WORK_FOUND small requests, one after another, each bounded by the
        // network's request timeout.
        for peer in found {
            match net.request(peer, bytes.clone()).await {
                Ok(answer) if Response::from_bytes(&answer) == Ok(Response::Noted) => {}
                Ok(other) => tracing::debug!(%peer, "heat demand answered {other:?}"),
                Err(e) => tracing::debug!(%peer, "heat demand not sent: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_unoffered_radiator_looks_less_often_while_it_finds_nothing() {
        let t0 = Instant::now();
        let mut seek = Seek::new(t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!seek.due(at(19), true, false), "neighbours first");
        assert!(!seek.due(at(20), true, true), "offered: no lookup");
        assert!(!seek.due(at(20), false, false), "warm: no lookup");
        assert!(seek.due(at(20), true, false));
        // Nothing found: 40, 80, ... up to SEEK_MAX.
        let mut now = 20;
        let mut waits = Vec::new();
        for _ in 0..8 {
            seek.looked(at(now), 0);
            let mut next = now + 1;
            while !seek.due(at(next), true, false) {
                next += 1;
            }
            waits.push(next - now);
            now = next;
        }
        assert_eq!(waits, vec![40, 80, 160, 320, 640, 1_280, 1_280, 1_280]);
        seek.looked(at(now), 0);
        // A room that warmed up and wants heat again looks soon.
        assert!(!seek.due(at(now + 1), false, false));
        assert!(!seek.due(at(now + 2), true, false));
        assert!(seek.due(at(now + 2 + 20), true, false));
        // Found someone: back to the short wait.
        seek.looked(at(now + 22), 1);
        assert!(seek.due(at(now + 42), true, false));
    }

    /// A cold, unoffered radiator goes on the want board before its first lookup, stays on
    /// it (published again every period, whatever its lookups' backoff) while that lasts, and
    /// leaves it once offered work or warm.
    #[test]
    fn a_cold_radiator_is_on_the_want_board_while_it_is_cold_and_unoffered() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut seek = Seek::new(t0);
        let mut step = |s: u64, wanting: bool, offered: bool| {
            let look = seek.due(at(s), wanting, offered);
            let want = seek.want_step(at(s), wanting, offered);
            if look {
                seek.looked(at(s), 0);
            }
            (want, look)
        };
        assert_eq!(
            step(19, true, false),
            (WantStep::Nothing, false),
            "neighbours first"
        );
        assert_eq!(
            step(20, true, false),
            (WantStep::Post, true),
            "posted, then looked"
        );
        assert_eq!(step(21, true, false), (WantStep::Nothing, false));
        // Its lookups back off to 21 minutes; the record is published every period.
        let period = WANT_PROVIDE_PERIOD.as_secs();
        assert_eq!(step(20 + period - 1, true, false).0, WantStep::Nothing);
        assert_eq!(step(20 + period, true, false).0, WantStep::Post);
        assert_eq!(step(20 + 2 * period, true, false).0, WantStep::Post);
        // Offered work: off the board; no more lookups.
        assert_eq!(step(1_300, true, true), (WantStep::Withdraw, false));
        assert_eq!(step(1_301, true, true), (WantStep::Nothing, false));
        // The offers end (the job closed): on the board again at the next lookup.
        let (want, look) = step(3_000, true, false);
        assert_eq!((want, look), (WantStep::Post, true));
        // Warm: off the board.
        assert_eq!(step(3_001, false, false), (WantStep::Withdraw, false));
        assert_eq!(step(3_002, false, false), (WantStep::Nothing, false));
        // Cold again: on the board with the lookup, SEEK_FIRST later.
        assert_eq!(step(3_003, true, false), (WantStep::Nothing, false));
        assert_eq!(step(3_003 + 20, true, false), (WantStep::Post, true));
    }

    proptest::proptest! {
        /// Whatever the room and the offers do, second by second: a radiator is on the want
        /// board only while cold and unoffered (it leaves at the first step that is not),
        /// publishes again at least every period while it stays so, never more often than
        /// that except on coming back on the board, and withdraws only what it published.
        #[test]
        fn the_want_board_follows_the_room_and_the_offers(
            spells in proptest::collection::vec((1u64..3_000, proptest::prelude::any::<bool>(), proptest::prelude::any::<bool>()), 1..12)
        ) {
            let t0 = Instant::now();
            let mut seek = Seek::new(t0);
            let period = WANT_PROVIDE_PERIOD.as_secs();
            let (mut on, mut last_post) = (false, None::<u64>);
            let mut now = 0u64;
            for (secs, wanting, offered) in spells {
                for _ in 0..secs {
                    now += 1;
                    let at = t0 + Duration::from_secs(now);
                    // As `seek_work` does: the lookup's decision, the board's, then the
                    // lookup (which finds nothing here).
                    let look = seek.due(at, wanting, offered);
                    let step = seek.want_step(at, wanting, offered);
                    let cold = wanting && !offered;
                    match step {
                        WantStep::Post => {
                            proptest::prop_assert!(cold, "published while warm or offered");
                            if on {
                                let since = now - last_post.unwrap_or(0);
                                proptest::prop_assert!(since >= period, "again after {since} s");
                            }
                            on = true;
                            last_post = Some(now);
                        }
                        WantStep::Withdraw => {
                            proptest::prop_assert!(on && !cold);
                            on = false;
                        }
                        WantStep::Nothing => {
                            proptest::prop_assert!(!on || cold, "stayed on the board");
                            if on {
                                let since = now - last_post.unwrap_or(0);
                                proptest::prop_assert!(since < period, "not republished after {since} s");
                            }
                        }
                    }
                    if look {
                        proptest::prop_assert!(on, "looked before publishing");
                        seek.looked(at, 0);
                    }
                }
            }
        }
    }

    #[test]
    fn offers_are_bounded_and_expire() {
        let offers = Offers::default();
        let t0 = Instant::now();
        let peers: Vec<PeerId> = (0..MAX_OFFERS + 5).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            offers.heard(*p, t0 + Duration::from_millis(i as u64));
        }
        let now = t0 + Duration::from_secs(1);
        let current = offers.current(now);
        assert_eq!(current.len(), MAX_OFFERS);
        assert!(
            !current.contains(&peers[0]),
            "the oldest made room for the newest"
        );
        offers.closed(&peers[MAX_OFFERS]);
        assert_eq!(offers.current(now).len(), MAX_OFFERS - 1);
        assert!(offers
            .current(t0 + OFFER_TTL + Duration::from_secs(1))
            .is_empty());
    }
}
