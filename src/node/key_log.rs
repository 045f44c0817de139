//! A household's key log on the network (docs/receipts.md, "Rotating a key"; docs/protocol.md
//! §6.6): the node publishes its own log's events on `hearth/evidence/1`, and takes others'
//! from gossip, checking each; an auditor (bootstrap node) logs the first heard under each
//! household and number, and a second, different one as the proof of a contest
//! (`audit::AuditLog::hear_key_event`). What the first-heard record settles: a thief who
//! stole the current key after the household published its log cannot undo the rotation with
//! an event signed later.
//!
//! The node reads its log from `DATA_DIR/keys.json` each round, so a log started with
//! `hearth key prerotate` while the node runs goes out at the next round: 5 s after the start,
//! again every 5 s until a round went out, then every 10 minutes, so an auditor that was away
//! hears it at the next round.

use std::path::PathBuf;
use std::time::Duration;

use crate::audit::{AuditLog, HeardKeyEvent};
use crate::model::rotate::KeyEvent;
use crate::net::{NetError, Network, Topic, Verdict};

/// Between rounds once one went out.
pub const REPUBLISH: Duration = Duration::from_secs(600);
/// Between rounds until one went out (no peer in the topic's mesh yet).
const RETRY: Duration = Duration::from_secs(5);

/// Publishes the household's key log, round after round, until `stop` changes. On an
/// auditor, also logs its own events (gossip does not bring a message back to its author).
pub(super) async fn publish(
    data_dir: PathBuf,
    net: Network,
    audit: Option<AuditLog>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wait = RETRY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let events = match crate::keys::load_log(&data_dir) {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!("the household's key log cannot be published: {e:#}");
                wait = REPUBLISH;
                continue;
            }
        };
        let mut out = 0;
        for e in &events {
            heard(audit.as_ref(), e);
            match net.publish(Topic::Evidence, e.to_bytes()).await {
                // Still in the network's memory from the last round: out already.
                Ok(()) | Err(NetError::Duplicate) => out += 1,
                Err(err) => tracing::debug!(seq = e.seq, "key event not published yet: {err}"),
            }
        }
        wait = if out > 0 || events.is_empty() {
            REPUBLISH
        } else {
            RETRY
        };
    }
}

/// A key event gossiped on `hearth/evidence/1`: rejected unless it decodes and its signature
/// is its key's (event #0 its household's own); anyone may pass one on, since it proves
/// itself. On an auditor, logged; ignored (not forwarded) when the auditor's log is full.
pub(super) fn gossip(audit: Option<&AuditLog>, data: &[u8]) -> Verdict {
    let e = match KeyEvent::from_bytes(data) {
        Ok(e) if e.verify().is_ok() => e,
        _ => return Verdict::Reject,
    };
    match heard(audit, &e) {
        Some(HeardKeyEvent::Full) => Verdict::Ignore,
        _ => Verdict::Accept,
    }
}

/// Logs `e` on an auditor, saying what was new.
fn heard(audit: Option<&AuditLog>, e: &KeyEvent) -> Option<HeardKeyEvent> {
    let audit = audit?;
    let household = e.household.to_hex();
    match audit.hear_key_event(e, crate::model::now_ms()) {
        Ok(HeardKeyEvent::New) => {
            tracing::info!(%household, seq = e.seq, key = %e.key.to_hex(), "key event logged");
            Some(HeardKeyEvent::New)
        }
        Ok(HeardKeyEvent::Contest) => {
            tracing::warn!(
                %household,
                seq = e.seq,
                "a second, different key event under one number: the first heard stands, \
                 the other is kept as the proof (`hearth audit KEY`)"
            );
            Some(HeardKeyEvent::Contest)
        }
        Ok(other) => Some(other),
        Err(err) => {
            tracing::warn!("audit log: {err}");
            None
        }
    }
}
