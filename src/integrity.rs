//! Honest storage: the start-up integrity check, the checkpoint beside the database, and the
//! checks and repairs of `hearth doctor`.
//!
//! sled does not tell us when its file lost data: on a damaged or truncated log it recovers up
//! to the damage and opens what is left, without an error (`tests/integrity.rs` reproduces
//! it). So the node keeps a small checkpoint beside the database, `DATA_DIR/db.expect` (JSON:
//! receipts, chain length and head, jobs, finished jobs, shard entries), written atomically
//! (temporary file, fsync, rename) after the database was flushed: at start-up, on a timer
//! while running, and at shutdown. None of those numbers ever goes down (receipts, jobs and
//! shard entries are never deleted, a finished job never runs again, the chain only grows),
//! so a database holding less than its checkpoint lost data.
//!
//! Before the node serves anything, [`ensure_intact`] checks the checkpoint, the whole ledger
//! ([`Ledger::check`]: every chain link, the head, every receipt's signatures, the slot index
//! and the totals) and every coordinator job ([`Persist::damaged`]). Any damage stops the
//! start with an error that names it and says to run `hearth doctor`.
//!
//! Receipts lost here are held by the coordinators that countersigned them (each keeps every
//! receipt it made): `hearth doctor --repair --from ADDR` asks them again ([`fetch_receipts`],
//! control request `Receipts`, answered by [`receipts_answer`] one at a time, in turns
//! ([`ReceiptsGate`]), and at once with nothing for a household no receipt here credits
//! ([`no_receipts_here`])). That is the only use of the network here; the checks themselves
//! never touch it.
//!
//! The coordinator's gate for those answers (turns, and each household's share of reading
//! time) is `integrity/gate.rs`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::identity::{Identity, PublicKey};
use crate::jobs::coordinator::persist::Persist;
use crate::jobs::JobError;
use crate::ledger::{Ledger, LedgerCheck, LedgerError};
use crate::model::wire::{Request, Response, MAX_RECEIPTS_PER_ANSWER};
use crate::net::{NetConfig, Network};
use crate::store::Store;

mod gate;
pub use gate::{
    ReceiptsGate, ReceiptsPass, RECEIPTS_ANSWERS_AT_ONCE, RECEIPTS_BUSY_RETRY_MS,
    RECEIPTS_HOUSEHOLDS_MAX, RECEIPTS_READING_REFILL, RECEIPTS_READING_SHARE, RECEIPTS_WAITERS_MAX,
    RECEIPTS_WAITER_GONE,
};

/// The checkpoint's file name in the data directory.
pub const CHECKPOINT: &str = "db.expect";

/// How often a running node refreshes its checkpoint.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error(
        "the database in {dir} is damaged, so the node will not start (starting would \
         silently forget what was lost): {first}{more}. Run `hearth doctor` to see every \
         damage, and `hearth doctor --repair` (after copying the data directory) to repair \
         what can be repaired and export the rest"
    )]
    Damaged {
        dir: PathBuf,
        first: String,
        more: String,
    },
    #[error(
        "the database cannot be written ({0}); after a failed write sled refuses every \
         further one, so the node stops: start it again once the disk has space (the \
         packaged service restarts it by itself)"
    )]
    Flush(sled::Error),
    #[error("checking the database: {0}")]
    Ledger(#[from] LedgerError),
    #[error("checking the database: {0}")]
    Jobs(#[from] JobError),
    #[error("the checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("repairing from peers: {0}")]
    Repair(String),
    #[error("the checkpoint {path} is unreadable ({detail}); if the database is intact, `hearth doctor --repair` writes a new one")]
    BadCheckpoint { path: PathBuf, detail: String },
}

/// What a database held when it was last flushed. Every figure only ever grows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub receipts: u64,
    pub chain_length: u64,
    /// The own chain's last entry (hex), all zeros for an empty chain.
    pub chain_head: String,
    pub jobs: u64,
    pub jobs_finished: u64,
    pub shard_entries: u64,
}

impl Checkpoint {
    /// The database's figures now.
    pub fn of(ledger: &Ledger, persist: &Persist) -> Result<Checkpoint, IntegrityError> {
        let (receipts, chain_length, head) = ledger.counts()?;
        let (jobs, jobs_finished, shard_entries) = persist.counts()?;
        Ok(Checkpoint {
            receipts,
            chain_length,
            chain_head: hex::encode(head),
            jobs,
            jobs_finished,
            shard_entries,
        })
    }

    /// Reads the checkpoint of a data directory; `None` if it has none yet.
    pub fn load(data_dir: &Path) -> Result<Option<Checkpoint>, IntegrityError> {
        let path = data_dir.join(CHECKPOINT);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                IntegrityError::BadCheckpoint {
                    path,
                    detail: e.to_string(),
                }
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(IntegrityError::Io { path, source }),
        }
    }

    /// Writes the checkpoint atomically: a crash leaves the old one or the new one.
    pub fn save(&self, data_dir: &Path) -> Result<(), IntegrityError> {
        let path = data_dir.join(CHECKPOINT);
        let tmp = data_dir.join(format!("{CHECKPOINT}.tmp"));
        let io = |source| IntegrityError::Io {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        if let Ok(d) = std::fs::File::open(data_dir) {
            // Makes the rename durable; a failure only risks the previous checkpoint.
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Writes the checkpoint for what is durable now: counts first, then flush, then write, so it
/// never claims more than the disk holds.
pub async fn checkpoint(
    data_dir: &Path,
    db: &sled::Db,
    ledger: &Ledger,
    persist: &Persist,
) -> Result<(), IntegrityError> {
    let now = Checkpoint::of(ledger, persist)?;
    crate::kv::flush(db).await.map_err(IntegrityError::Flush)?;
    now.save(data_dir)
}

/// Everything the checks found.
#[derive(Debug, Default)]
pub struct Report {
    pub ledger: LedgerCheck,
    /// Coordinator entries that cannot be loaded: (tree, key, what is wrong).
    pub jobs: Vec<(&'static str, Vec<u8>, String)>,
    /// The figures now, and what the checkpoint expected (if there is one).
    pub now: Checkpoint,
    pub expected: Option<Checkpoint>,
    /// Data the database lost against its checkpoint, worded for a household.
    pub lost: Vec<String>,
}

impl Report {
    /// Every damage, worded for a household.
    pub fn damage(&self) -> Vec<String> {
        let mut out = self.lost.clone();
        out.extend(self.ledger.damage.iter().map(|d| d.to_string()));
        out.extend(
            self.jobs
                .iter()
                .map(|(tree, key, what)| format!("{tree} entry {}: {what}", hex::encode(key))),
        );
        out
    }
}

/// Runs every check on an open database.
pub fn check(
    data_dir: &Path,
    ledger: &Ledger,
    persist: &Persist,
) -> Result<Report, IntegrityError> {
    let expected = Checkpoint::load(data_dir)?;
    let now = Checkpoint::of(ledger, persist)?;
    let mut lost = Vec::new();
    if let Some(exp) = &expected {
        let mut less = |what: &str, had: u64, has: u64| {
            if has < had {
                lost.push(format!(
                    "the database lost data: it held {had} {what} when last flushed and now holds {has}"
                ));
            }
        };
        less("receipts", exp.receipts, now.receipts);
        less(
            "links of the hash chain",
            exp.chain_length,
            now.chain_length,
        );
        less("jobs", exp.jobs, now.jobs);
        less("finished jobs", exp.jobs_finished, now.jobs_finished);
        less("shard records", exp.shard_entries, now.shard_entries);
        if exp.chain_length > 0 && now.chain_length >= exp.chain_length {
            let at = ledger.chain_entry(exp.chain_length - 1)?.map(hex::encode);
            if at.as_deref() != Some(exp.chain_head.as_str()) {
                lost.push(format!(
                    "the ledger's hash chain was rewritten: entry {} is not the one recorded when the database was last flushed",
                    exp.chain_length - 1
                ));
            }
        }
    }
    Ok(Report {
        ledger: ledger.check()?,
        jobs: persist.damaged()?,
        now,
        expected,
        lost,
    })
}

/// The start-up check: refuses a damaged database, and writes a fresh checkpoint for an
/// intact one.
pub async fn ensure_intact(
    data_dir: &Path,
    db: &sled::Db,
    ledger: &Ledger,
) -> Result<(), IntegrityError> {
    let persist = Persist::open(db)?;
    let report = check(data_dir, ledger, &persist)?;
    let damage = report.damage();
    if let Some(first) = damage.first() {
        return Err(IntegrityError::Damaged {
            dir: data_dir.to_path_buf(),
            first: first.clone(),
            more: match damage.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            },
        });
    }
    checkpoint(data_dir, db, ledger, &persist).await
}

/// Keeps the checkpoint current while the node runs (it is written once more on shutdown,
/// after the services stopped, see `node.rs`). A checkpoint file that cannot be written (a
/// full disk) is logged and the previous one stays, which still never claims more than the
/// disk holds. A database that cannot be flushed ends this service with the error: sled
/// refuses every write after a failed one until it is opened again, so the node stops and
/// exits non-zero rather than run on refusing all work.
pub async fn keep_checkpoint(
    data_dir: PathBuf,
    db: sled::Db,
    ledger: Ledger,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let persist = Persist::open(&db).map_err(|e| e.to_string())?;
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        match checkpoint(&data_dir, &db, &ledger, &persist).await {
            Ok(()) => {}
            Err(e @ IntegrityError::Flush(_)) => return Err(e.to_string()),
            Err(e) => tracing::warn!("could not update the database checkpoint: {e}"),
        }
    }
    Ok(())
}

/// What `hearth doctor --repair` did.
#[derive(Debug, Default)]
pub struct Repaired {
    /// Where the removed entries were exported, if any were removed.
    pub exported: Option<PathBuf>,
    pub receipts_removed: usize,
    pub jobs_removed: usize,
    pub rechained: u64,
    /// What could not be repaired here.
    pub not_repaired: Vec<String>,
}

/// Repairs what can be repaired locally. Entries that cannot be read are exported to
/// `DATA_DIR/doctor-export-<ms>.json` before they are removed; the ledger's index, totals and
/// chain are rebuilt from its receipts; and a new checkpoint accepts what was lost (which
/// cannot be recovered from this machine: it is listed in `not_repaired`).
pub async fn repair(
    data_dir: &Path,
    db: &sled::Db,
    ledger: &Ledger,
    report: &Report,
) -> Result<Repaired, IntegrityError> {
    let persist = Persist::open(db)?;
    let mut out = Repaired::default();
    let mut exported: Vec<serde_json::Value> = Vec::new();
    for (key, bytes) in &report.ledger.bad {
        exported
            .push(serde_json::json!({"tree": "ledger/v2/receipts", "key": key, "value": bytes}));
    }
    for (tree, key, _) in &report.jobs {
        for (tree, key, value) in persist.entries(tree, key)? {
            exported.push(serde_json::json!({"tree": tree, "key": key, "value": value}));
        }
    }
    // Export first: nothing is removed that was not written out.
    if !exported.is_empty() {
        let path = data_dir.join(format!(
            "doctor-export-{}.json",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ));
        let bytes = serde_json::to_vec_pretty(&exported).unwrap_or_default();
        std::fs::write(&path, bytes).map_err(|source| IntegrityError::Io {
            path: path.clone(),
            source,
        })?;
        out.exported = Some(path);
    }
    for (tree, key, _) in &report.jobs {
        persist.remove(tree, key)?;
    }
    out.receipts_removed = report.ledger.bad.len();
    out.jobs_removed = report.jobs.len();
    out.rechained = ledger.repair(&report.ledger)?;
    out.not_repaired = report
        .lost
        .iter()
        .map(|l| {
            format!(
                "{l}: what was lost is not on this machine any more (the coordinators that \
                 countersigned this household's receipts hold them too: `hearth doctor --repair \
                 --from <coordinator address>` fetches them back)"
            )
        })
        .collect();
    crate::kv::flush(db).await.map_err(IntegrityError::Flush)?;
    checkpoint(data_dir, db, ledger, &persist).await?;
    Ok(out)
}

/// The answer to [`Request::Receipts`]: the receipts this node countersigned (as the
/// coordinator of their jobs) crediting the asking household, in id order after `after`, at
/// most [`MAX_RECEIPTS_PER_ANSWER`]. The asker is who the connection says it is (its PeerId
/// carries its household key), so a peer gets only its own receipts. Every receipt the node
/// countersigned stays in its ledger, which is what makes `hearth doctor --repair --from`
/// possible for its workers.
pub fn receipts_answer(
    ledger: &Ledger,
    own: &PublicKey,
    peer: &libp2p::PeerId,
    after: Option<blake3::Hash>,
) -> Response {
    let Some(asker) = PublicKey::from_peer_id(peer) else {
        return Response::Error {
            detail: "your peer id carries no ed25519 household key".into(),
        };
    };
    match ledger.page(&asker, own, after.as_ref(), MAX_RECEIPTS_PER_ANSWER) {
        Ok((receipts, more)) => Response::Receipts { receipts, more },
        Err(e) => Response::Error {
            detail: e.to_string(),
        },
    }
}

/// The answer to a [`Request::Receipts`] from a household that no receipt in `ledger`
/// credits: none, and no more, said at once without a turn at the [`ReceiptsGate`] or a pass
/// over the ledger (the household's totals, one key, say so). Identities cost nothing; a
/// household's receipts here cost verified work, so only households that did work for this
/// node share the gate's turns. `None`: it has receipts here (or its totals could not be
/// read), and its answer is read in turn.
pub fn no_receipts_here(ledger: &Ledger, peer: &libp2p::PeerId) -> Option<Response> {
    let asker = PublicKey::from_peer_id(peer)?;
    match ledger.totals_of(&asker) {
        Ok(t) if t.receipts == 0 => Some(Response::Receipts {
            receipts: Vec::new(),
            more: false,
        }),
        _ => None,
    }
}

/// What [`fetch_receipts`] got from one coordinator.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Receipts the coordinator sent that verify and credit this household.
    pub received: u64,
    /// Of those, the ones this database did not hold.
    pub added: u64,
    /// Times the coordinator said it was busy and the page was asked again.
    pub busy: u64,
}

/// Most times one page is asked again of a busy coordinator (each after the wait it names,
/// at most 5 s): a coordinator that stays busy for minutes is reported, not waited on.
pub const MAX_BUSY_RETRIES: u64 = 120;

/// Longest wait a repair accepts from a busy coordinator: one that asks for more (a household
/// past its share of reading time, `integrity/gate.rs`) is reported at once, with its reason.
pub const MAX_REPAIR_WAIT_MS: u64 = 60_000;

/// How long a repair waits before asking a busy coordinator again, the `busy`-th time it was
/// told busy, `retry_after_ms` and `detail` being its answer: the wait it names (at least
/// 0.1 s, at most 5 s), or the reason the repair stops (busy too often, or asked to wait more
/// than [`MAX_REPAIR_WAIT_MS`]).
fn busy_wait(busy: u64, retry_after_ms: u64, detail: &str) -> Result<Duration, String> {
    if retry_after_ms > MAX_REPAIR_WAIT_MS {
        return Err(format!(
            "the coordinator asks to wait {} s before the next page ({detail}); run the repair \
             again then",
            retry_after_ms.div_ceil(1000)
        ));
    }
    if busy > MAX_BUSY_RETRIES {
        return Err(format!("the coordinator stayed busy: {detail}"));
    }
    Ok(Duration::from_millis(retry_after_ms.clamp(100, 5_000)))
}

/// Most pages asked of one coordinator (each up to [`MAX_RECEIPTS_PER_ANSWER`] receipts):
/// bounds a repair against a peer that always says "more".
pub const MAX_REPAIR_PAGES: usize = 100_000;

/// The coordinator an address of `hearth doctor --repair --from` names: its last part must be
/// `/p2p/PEER_ID`, or the coordinator could not be authenticated. Checked before anything is
/// repaired, so a mistyped address changes nothing.
pub fn coordinator_peer(addr: &Multiaddr) -> Result<PeerId, IntegrityError> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok(peer),
        _ => Err(IntegrityError::Repair(format!(
            "{addr} does not end in /p2p/PEER_ID, so the coordinator cannot be authenticated"
        ))),
    }
}

/// `hearth doctor --repair --from ADDR...`: asks each coordinator (a multiaddr ending in
/// `/p2p/PEER`) for every receipt it countersigned crediting this household and keeps those
/// that verify and are missing here. Nothing a coordinator sends is trusted: each receipt
/// must carry both valid signatures and credit this household, and the cursor must advance.
/// The node must be stopped (the database is open here). Flushes before returning.
pub async fn fetch_receipts(
    identity: &Identity,
    db: &sled::Db,
    ledger: &Ledger,
    from: &[Multiaddr],
) -> Result<Vec<(PeerId, Result<Fetched, String>)>, IntegrityError> {
    let store = Store::with_db(db).map_err(|e| IntegrityError::Repair(e.to_string()))?;
    let mut config = NetConfig::new(identity.libp2p_keypair());
    config.listen = Vec::new();
    config.mdns = false;
    config.relay_client = false;
    config.upnp = false;
    config.request_timeout = std::time::Duration::from_secs(20);
    let (net, _events, task) = crate::net::spawn(config, store)
        .await
        .map_err(|e| IntegrityError::Repair(e.to_string()))?;
    let own = identity.public();
    let mut out = Vec::new();
    for addr in from {
        let peer = coordinator_peer(addr)?;
        let result = fetch_from(&net, ledger, &own, addr, peer).await;
        out.push((peer, result));
    }
    ledger.flush().await?;
    net.shutdown().await;
    task.abort();
    Ok(out)
}

async fn fetch_from(
    net: &Network,
    ledger: &Ledger,
    own: &PublicKey,
    addr: &Multiaddr,
    peer: PeerId,
) -> Result<Fetched, String> {
    let mut dialled = net.dial(addr.clone()).await;
    // The connection may take a moment; a few tries, then the error.
    for _ in 0..20 {
        if dialled.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        dialled = net.dial(addr.clone()).await;
    }
    dialled.map_err(|e| format!("could not reach {addr}: {e}"))?;
    let mut fetched = Fetched::default();
    let mut after = None;
    // Pages asked, busy answers included (those are bounded by MAX_BUSY_RETRIES as well).
    for _ in 0..MAX_REPAIR_PAGES as u64 + MAX_BUSY_RETRIES {
        let mut answer = net
            .request(peer, Request::Receipts { after }.to_bytes())
            .await;
        for _ in 0..20 {
            if answer.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            answer = net
                .request(peer, Request::Receipts { after }.to_bytes())
                .await;
        }
        let answer = answer.map_err(|e| format!("no answer: {e}"))?;
        let (receipts, more) = match Response::from_bytes(&answer) {
            Ok(Response::Receipts { receipts, more }) => (receipts, more),
            // Answering others (or an earlier request of ours): the same page again, later.
            Ok(Response::Denied {
                reason: crate::model::wire::DenyReason::Busy,
                retry_after_ms,
                detail,
            }) => {
                fetched.busy += 1;
                let wait = busy_wait(fetched.busy, retry_after_ms, &detail)?;
                tokio::time::sleep(wait).await;
                continue;
            }
            Ok(Response::Error { detail }) => return Err(detail),
            Ok(other) => return Err(format!("unexpected answer {other:?}")),
            Err(e) => return Err(format!("unreadable answer: {e}")),
        };
        for r in &receipts {
            let id = r.id();
            if after.is_some_and(|a: blake3::Hash| id.as_bytes() <= a.as_bytes()) {
                return Err("the coordinator's receipts are not in id order".into());
            }
            after = Some(id);
            if r.record.worker != *own {
                return Err("the coordinator sent a receipt crediting another household".into());
            }
            r.verify()
                .map_err(|e| format!("the coordinator sent a receipt that does not verify: {e}"))?;
            fetched.received += 1;
            match ledger.insert(r) {
                Ok(_) => fetched.added += 1,
                Err(LedgerError::Replay { .. }) => {}
                Err(e) => return Err(format!("could not store a fetched receipt: {e}")),
            }
        }
        if !more || receipts.is_empty() {
            return Ok(fetched);
        }
    }
    Err(format!(
        "stopped after {MAX_REPAIR_PAGES} pages; run the repair again to continue"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repair waits as long as a busy coordinator names, within bounds, and stops with the
    /// coordinator's reason when asked to wait past a minute (a household past its share of
    /// reading time) or when told busy too often; before, it asked again every 5 s for ten
    /// minutes whatever the wait named.
    #[test]
    fn a_repair_waits_what_the_coordinator_names_or_stops_saying_why() {
        assert_eq!(busy_wait(1, 500, "x"), Ok(Duration::from_millis(500)));
        assert_eq!(busy_wait(1, 10, "x"), Ok(Duration::from_millis(100)));
        assert_eq!(busy_wait(1, 30_000, "x"), Ok(Duration::from_secs(5)));
        let err = busy_wait(MAX_BUSY_RETRIES + 1, 500, "reading others").unwrap_err();
        assert!(err.contains("stayed busy: reading others"), "{err}");
        // The gate's answer to a household past its share.
        let gate = ReceiptsGate::default();
        let hog = PeerId::random();
        let long_ago = std::time::Instant::now() - 2 * RECEIPTS_READING_SHARE;
        drop(gate.enter(hog, long_ago).unwrap_or_else(|_| panic!("open")));
        let Err(Response::Denied {
            retry_after_ms,
            detail,
            ..
        }) = gate.enter(hog, std::time::Instant::now())
        else {
            panic!("past its share");
        };
        let err = busy_wait(1, retry_after_ms, &detail).unwrap_err();
        assert!(err.contains("asks to wait"), "{err}");
        assert!(err.contains("share of reading time"), "{err}");
    }
}
