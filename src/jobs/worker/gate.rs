//! The lease-ahead gate (issue 15): at most the slots the room wants execute at once, and a
//! shard leased ahead waits here, its blobs fetched, for a running one to end. Owns no I/O;
//! must not touch leases or claims beyond reading the shard's [`Held`] lease.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::sleep;

use crate::model::now_ms;

use super::{Ctx, Held};

/// Lets at most `limit` shards execute at once (the slots the room wants). Shards leased ahead
/// of them wait for a turn with their blobs already fetched.
#[derive(Default)]
pub(super) struct Gate {
    /// (limit, executing). A std mutex: held for a few instructions, never across an await.
    state: std::sync::Mutex<(usize, usize)>,
    turn: tokio::sync::Notify,
}

/// One executing shard's place at the gate, given back on drop.
pub(super) struct Turn(Arc<Gate>);

impl Drop for Turn {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.state.lock() {
            s.1 = s.1.saturating_sub(1);
        }
        self.0.turn.notify_waiters();
    }
}

impl Gate {
    pub(super) fn set_limit(&self, limit: usize) {
        let raised = match self.state.lock() {
            Ok(mut s) => {
                let raised = limit > s.0;
                s.0 = limit;
                raised
            }
            Err(_) => false,
        };
        if raised {
            self.turn.notify_waiters();
        }
    }

    fn limit(&self) -> usize {
        self.state.lock().map_or(0, |s| s.0)
    }

    fn try_take(self: &Arc<Self>) -> Option<Turn> {
        let mut s = self.state.lock().ok()?;
        (s.1 < s.0).then(|| {
            s.1 += 1;
            Turn(self.clone())
        })
    }
}

impl Ctx {
    /// Waits until fewer shards execute than the room wants. Gives up when the room wants no
    /// heat at all (a warm room does not hold work others could do), or when the lease is
    /// refused or has run out while waiting.
    pub(super) async fn wait_turn(&self, held: &watch::Receiver<Held>) -> Result<Turn, String> {
        loop {
            let notified = self.gate.turn.notified();
            tokio::pin!(notified);
            // Registered before checking, so a turn given back in between is not missed.
            notified.as_mut().enable();
            if let Some(turn) = self.gate.try_take() {
                return Ok(turn);
            }
            if self.gate.limit() == 0 {
                return Err("the room wants no heat now; the lease held ahead is let go".into());
            }
            {
                let h = held.borrow();
                if let Some(why) = &h.refused {
                    return Err(why.clone());
                }
                if h.deadline_ms <= now_ms() {
                    return Err("the lease held ahead ran out while waiting for a slot".into());
                }
            }
            // Renewals and slot changes are seen within a tick of the worker's loop.
            tokio::select! {
                _ = notified => {}
                _ = sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}
