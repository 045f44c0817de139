//! How a node comes to refuse a key, and tells others: revocations and equivocation proofs
//! heard on `hearth/evidence/1`, found by this node's auditor's log, published by this node's
//! household, or pulled from a peer when it settles (`Request::Refusals`), so a node that was
//! not listening when a proof was gossiped still learns it (`docs/protocol.md` §6.6). Each
//! proof is checked here, kept in [`RevokedKeys`] and, on an auditor, logged. The same pull
//! asks the peer for the households' key events it heard (`Request::KeyEvents`,
//! `node::key_log`), which retire the keys their households rotated away from (§6.7).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use libp2p::PeerId;

use super::key_log::KeyBook;
use super::offers::Offers;
use super::revoked::{Admission, Cursor, Heard, RevokedKeys};
use super::tasks::Tasks;
use crate::audit::AuditLog;
use crate::identity::PublicKey;
use crate::jobs::trust::evidence::Pulls;
use crate::jobs::CoordinatorHandle;
use crate::model::commit::Commitment;
use crate::model::equivocate::Equivocation;
use crate::model::refusal::Refusal;
use crate::model::revoke::Revocation;
use crate::model::wire::{Request, Response, MAX_REFUSALS_PER_ANSWER};
use crate::net::{Network, Topic, Verdict};

/// Pages asked of one peer per pull: 64 × [`MAX_REFUSALS_PER_ANSWER`] (12) = 768 proofs,
/// far more than an honest network holds; what is past them is heard from the next peer
/// asked, or on gossip. Each proof is checked (one or two signatures), so a pull costs a
/// lying peer's target at most 1 536 signature checks.
pub const MAX_PULL_PAGES: usize = 64;

/// The proofs of one page a peer handed, checked, in order, up to the first that does not
/// check or whose cursor (key ‖ kind) is not above the one before (`after`, moved on past
/// each proof taken); and, if it stopped there, why. Pure: what to keep is decided after.
fn checked_page(after: &mut Option<Cursor>, proofs: &[Vec<u8>]) -> (Vec<Refusal>, Option<String>) {
    let mut taken = Vec::with_capacity(proofs.len());
    for bytes in proofs {
        let refusal = match Refusal::checked(bytes) {
            Ok(r) => r,
            Err(e) => return (taken, Some(format!("a proof does not check: {e}"))),
        };
        let mut cursor = [0u8; 33];
        cursor[..32].copy_from_slice(&refusal.key().0);
        cursor[32] = refusal.kind() as u8;
        if after.is_some_and(|a| cursor <= a) {
            return (taken, Some("the proofs are out of order".into()));
        }
        *after = Some(cursor);
        taken.push(refusal);
    }
    (taken, None)
}

/// Cheap, cloneable handle: the router, the API and the pulls share it.
#[derive(Clone)]
pub struct Refusals {
    inner: Arc<Inner>,
}

struct Inner {
    keys: RevokedKeys,
    /// Households' key events, pulled from the same peers (`node::key_log`).
    key_book: KeyBook,
    offers: Offers,
    audit: Option<AuditLog>,
    own: PublicKey,
    net: Network,
    /// This node's coordinator: its running jobs close when its own key is refused, and what a
    /// refused key holds in them as a worker is taken back.
    coordinator: CoordinatorHandle,
    /// How many proofs each gossip forwarder may bring.
    admission: Mutex<Admission>,
    /// Which settled peer to ask next (the trust service's schedule: each peer at most every
    /// ten minutes, one pull at a time, eight waiting at most).
    pulls: Mutex<Pulls>,
    /// Pulls, publications and job closings in flight: aborted when the node stops
    /// ([`Refusals::stop`]), so none outlives it.
    tasks: Tasks,
}

impl Refusals {
    pub(super) fn new(
        keys: RevokedKeys,
        key_book: KeyBook,
        offers: Offers,
        audit: Option<AuditLog>,
        own: PublicKey,
        net: Network,
        coordinator: CoordinatorHandle,
    ) -> Refusals {
        Refusals {
            inner: Arc::new(Inner {
                keys,
                key_book,
                offers,
                audit,
                own,
                net,
                coordinator,
                admission: Mutex::new(Admission::default()),
                pulls: Mutex::new(Pulls::default()),
                tasks: Tasks::default(),
            }),
        }
    }

    /// The keys refused, and why.
    pub fn keys(&self) -> &RevokedKeys {
        &self.inner.keys
    }

    /// The key events this node heard (`node::key_log`).
    pub fn key_book(&self) -> &KeyBook {
        &self.inner.key_book
    }

    /// A revocation or equivocation proof gossiped on `hearth/evidence/1` by `source`, brought
    /// by `via`. Rejected if it does not check, or if it is a revocation its key did not
    /// publish (a household publishes its own statement; anyone may pass on a proof);
    /// ignored past the forwarder's share ([`Admission`]) or when the set is full.
    pub(super) fn gossip(&self, data: &[u8], source: PeerId, via: PeerId) -> Verdict {
        let author = PublicKey::from_peer_id(&source);
        let refusal = match Refusal::gossiped(data, author.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%source, "refusal proof refused: {e}");
                return Verdict::Reject;
            }
        };
        let admitted = self
            .inner
            .admission
            .lock()
            .is_ok_and(|mut a| a.admit(via, Instant::now()));
        if !admitted {
            return Verdict::Ignore;
        }
        match self.hear(&refusal) {
            Ok(Heard::Full) => Verdict::Ignore,
            Ok(_) => Verdict::Accept,
            Err(e) => {
                tracing::warn!("could not keep a refusal proof: {e}");
                Verdict::Ignore
            }
        }
    }

    /// This household's own revocation, handed to its node to publish: kept (the node takes
    /// no more work from its own key) and, on an auditor, logged; gossip does not bring a
    /// message back to its author. The caller publishes it.
    pub fn own_revocation(&self, r: &Revocation) -> Result<(), String> {
        self.hear(&Refusal::Revoked(r.clone())).map(|_| ())
    }

    /// This node's auditor's log, or its ledger (a receipt's proof in another commitment
    /// under a number it holds one of), found two commitments the coordinator signed under
    /// one number: the key is refused here, and the proof goes to every node.
    pub(super) fn equivocation_found(&self, first: Commitment, second: Commitment) {
        let Some(proof) = Equivocation::new(first, second) else {
            return;
        };
        if let Err(e) = self.hear(&Refusal::Equivocated(Box::new(proof.clone()))) {
            tracing::warn!("could not keep an equivocation proof: {e}");
        }
        let net = self.inner.net.clone();
        // Published off the router's loop: the network may be waiting for the router to take
        // its next event.
        self.spawn(async move {
            if let Err(e) = net.publish(Topic::Evidence, proof.to_bytes()).await {
                tracing::warn!("could not publish an equivocation proof: {e}");
            }
        });
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.tasks.spawn(task);
    }

    /// Aborts the tasks in flight: the node is stopping.
    pub(super) fn stop(&self) {
        self.inner.tasks.stop();
    }

    /// Keeps a checked proof: the radiator takes no more work from the key (its offers are
    /// forgotten, its announcements refused from now on), and an auditor logs it.
    fn hear(&self, refusal: &Refusal) -> Result<Heard, String> {
        let key = refusal.key();
        let peer = key.peer_id();
        let known = self.inner.offers.knows(&peer) || key == self.inner.own;
        let heard = self
            .inner
            .keys
            .hear(refusal, known)
            .map_err(|e| e.to_string())?;
        match (&heard, refusal) {
            (Heard::Kept, Refusal::Revoked(_)) => {
                self.inner.offers.closed(&peer);
                tracing::warn!(
                    key = %key.to_hex(),
                    "a household revoked its key: no work is taken from it any more"
                );
            }
            (Heard::Kept, Refusal::Equivocated(p)) => {
                self.inner.offers.closed(&peer);
                tracing::warn!(
                    key = %key.to_hex(),
                    seq = p.seq(),
                    "a coordinator signed two different commitments under one number: no work \
                     is taken from it any more"
                );
            }
            (Heard::Full, _) => {
                tracing::debug!(key = %key.to_hex(), "refusal of an unknown key not kept (full)")
            }
            _ => {}
        }
        if heard != Heard::Full {
            self.log(refusal);
        }
        if heard == Heard::Kept {
            if key == self.inner.own {
                self.close_own_jobs();
            }
            // What the key holds as a worker in this node's running jobs is taken back.
            let coordinator = self.inner.coordinator.clone();
            self.spawn(async move { coordinator.withdraw_refused().await });
        }
        Ok(heard)
    }

    /// If radiators refuse this node's own key, closes its running jobs saying why: no
    /// radiator will work for them. Called when the refusal is heard and when the node starts
    /// (a crash may have come between keeping the refusal and closing the jobs).
    pub(super) fn close_own_jobs(&self) {
        let Some(reasons) = self.inner.keys.reasons(&self.inner.own) else {
            return;
        };
        let reason = reasons.own_key_sentence();
        let coordinator = self.inner.coordinator.clone();
        self.spawn(async move { coordinator.fail_running(reason.to_string()).await });
    }

    /// On an auditor: logs a revocation, or both commitments of an equivocation (so an
    /// auditor that missed one of them still proves it). Said loudly when new: a household
    /// declaring its key stolen is news an operator wants in the log.
    fn log(&self, refusal: &Refusal) {
        let Some(audit) = &self.inner.audit else {
            return;
        };
        let now = crate::model::now_ms();
        match refusal {
            Refusal::Revoked(r) => match audit.hear_revocation(r, now) {
                Ok(crate::audit::HeardRevocation::Kept) => tracing::warn!(
                    key = %r.key.to_hex(),
                    keep = r.keep,
                    "revocation: a household vouches only for its commitments below this number \
                     (`hearth audit KEY`)"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("audit log: {e}"),
            },
            Refusal::Equivocated(p) => {
                for c in p.commitments() {
                    if let Err(e) = audit.hear(c, now) {
                        tracing::warn!("audit log: {e}");
                    }
                }
            }
        }
    }

    /// A peer stayed connected: asked for its proofs when the schedule says so.
    pub(super) fn peer_settled(&self, peer: PeerId) {
        if let Ok(mut pulls) = self.inner.pulls.lock() {
            pulls.settled(peer, crate::model::now_ms());
        }
        self.next_pull();
    }

    fn next_pull(&self) {
        let next = self
            .inner
            .pulls
            .lock()
            .ok()
            .and_then(|mut p| p.next(crate::model::now_ms()));
        let Some(peer) = next else { return };
        let me = self.clone();
        self.spawn(async move {
            me.pull_from(peer).await;
            let heard = me.inner.key_book.pull(&me.inner.net, peer).await;
            super::key_log::tell_coordinator(&me.inner.coordinator, heard).await;
            if let Ok(mut p) = me.inner.pulls.lock() {
                p.done();
            }
            me.next_pull();
        });
    }

    /// Asks `peer` for its proofs, page after page, checking and keeping each. Stops at
    /// [`MAX_PULL_PAGES`], at the first answer that is not a page, at the first proof that
    /// does not check or that the full set refuses (a peer handing out strangers' keys by the
    /// thousand), and when the peer's cursors stop increasing.
    async fn pull_from(&self, peer: PeerId) {
        let mut after: Option<Cursor> = None;
        for _ in 0..MAX_PULL_PAGES {
            let answer = match self
                .inner
                .net
                .request_if_connected(peer, Request::Refusals { after }.to_bytes())
                .await
            {
                Ok(bytes) => Response::from_bytes(&bytes),
                Err(e) => {
                    tracing::debug!(%peer, "could not ask for refusal proofs: {e}");
                    return;
                }
            };
            // An older node answers Error (unknown request tag); nothing to learn from it.
            let Ok(Response::Refusals { proofs, more }) = answer else {
                return;
            };
            let (page, stopped) = checked_page(&mut after, &proofs);
            for refusal in &page {
                match self.hear(refusal) {
                    Ok(Heard::Full) => return,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("could not keep a pulled refusal proof: {e}");
                        return;
                    }
                }
            }
            if let Some(why) = stopped {
                tracing::debug!(%peer, "stopped asking for refusal proofs: {why}");
                return;
            }
            if !more || after.is_none() {
                return;
            }
        }
    }

    /// The answer to a peer's `Request::Refusals`: a page of the proofs kept here. Reads the
    /// disk: called off the async threads.
    pub(super) fn answer(&self, after: Option<&Cursor>) -> Response {
        match self.inner.keys.page(after, MAX_REFUSALS_PER_ANSWER) {
            Ok((page, more)) => Response::Refusals {
                proofs: page.into_iter().map(|(_, proof)| proof).collect(),
                more,
            },
            Err(e) => Response::Error {
                detail: format!("the refusal proofs could not be read: {e}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    /// A peer's page is taken in key order, proof by proof; a proof that does not check, or
    /// one that goes back (a peer paging in circles), ends the pull there.
    #[test]
    fn a_pulled_page_is_taken_in_order_up_to_the_first_bad_proof() {
        let mut households: Vec<Identity> = (0..4).map(|_| Identity::generate()).collect();
        households.sort_by_key(|h| h.public().0);
        let statement = |h: &Identity| Revocation::sign(h, 0, 1).to_bytes();
        let all: Vec<Vec<u8>> = households.iter().map(statement).collect();

        let mut after = None;
        let (taken, stopped) = checked_page(&mut after, &all[..2]);
        assert_eq!((taken.len(), stopped), (2, None));
        let (taken, stopped) = checked_page(&mut after, &all[2..]);
        assert_eq!((taken.len(), stopped), (2, None));
        assert_eq!(
            after.map(|c| c[..32].to_vec()),
            Some(households[3].public().0.to_vec())
        );

        // Going back: the first proof again after the last.
        let (taken, stopped) = checked_page(&mut after, &all[..1]);
        assert!(taken.is_empty());
        assert!(stopped.unwrap().contains("out of order"));

        // A forged proof in the middle: what came before it is taken, nothing after.
        let mut forged = all[1].clone();
        forged[60] ^= 1;
        let mut after = None;
        let (taken, stopped) = checked_page(&mut after, &[all[0].clone(), forged, all[2].clone()]);
        assert_eq!(taken.len(), 1);
        assert!(stopped.unwrap().contains("does not check"));
    }
}
