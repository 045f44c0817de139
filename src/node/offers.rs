//! Which coordinators offered this radiator work lately, and the heat demand sent to them.
//!
//! Heat demand is not gossiped (issue 14): a radiator tells only the coordinators that
//! announced open jobs to it in the last [`OFFER_TTL`], by a direct control message, when its
//! demand changes and every [`HEAT_REFRESH`]. What a radiator sends therefore grows with the
//! coordinators near it that have work, at most [`MAX_OFFERS`], never with the network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::watch;

use crate::model::wire::{HeatDemand, Request, Response};
use crate::net::Network;

/// Coordinators remembered at once; the one heard from longest ago makes room.
pub const MAX_OFFERS: usize = 32;
/// A coordinator that has not announced anything for this long is forgotten (a little over
/// the coordinators' longest re-announcement interval, 40 s by default).
pub const OFFER_TTL: Duration = Duration::from_secs(90);
/// Demand is sent again this often even when unchanged, so a coordinator that restarted
/// learns it.
pub const HEAT_REFRESH: Duration = Duration::from_secs(10);

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
            let msg = HeatDemand {
                wanted_slots: s.slots.min(u16::MAX as usize) as u16,
                demand_permille: s.demand_permille.min(1000),
                room_centi_c: s.room_celsius.map(|c| (c * 100.0).round() as i32),
                at_ms: crate::model::now_ms(),
            };
            let bytes = Request::Heat(msg).to_bytes();
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

#[cfg(test)]
mod tests {
    use super::*;

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
