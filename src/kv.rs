//! Atomic writes across sled trees, and flushes, without the parts of sled 0.34 that freeze a
//! process (docs/storage.md §9).
//!
//! sled 0.34 guards every operation with a process-wide concurrency control that is free until
//! the first transaction, `apply_batch` or `checksum` runs; from then on every read, write,
//! iteration and flush — also those of sled's own flusher and IO threads — takes a shared
//! `parking_lot` read lock and every transaction the write lock. Threads that hold the read
//! lock wait inside sled for other threads that need it again (a flush waiting for an IO
//! buffer the flusher must seal, an iterator waiting for a page to become durable), and
//! `parking_lot` queues new readers behind a waiting writer: the whole process stops. That
//! is how radiators froze in the docker testnet, right after a job finished (the ledger's
//! transaction on one worker thread, every other thread parked on the read lock). And sled's
//! `flush_async`, run by several tasks at once, never returns (spacejam/sled#1308; the test
//! below stalls with it).
//!
//! So hearth never calls them (clippy's `disallowed-methods` in `clippy.toml` enforces it) and
//! uses this module instead:
//! - [`Batch::commit`] writes several keys in several trees so that after a crash either all
//!   or none are there. It first stores the whole batch as one *intent* record (one insert is
//!   atomic in sled), then applies each write, then removes the intent. sled recovers a prefix
//!   of its log, so a crash leaves either no intent and none of the writes, or the intent and
//!   some of them; [`open`] applies every intent left behind before anything reads the
//!   database. Writes are idempotent (insert a value, remove a key), so applying twice is safe.
//! - It gives atomicity, not isolation: a concurrent reader may see a batch half applied, and
//!   two batches that touch the same key must be serialised by their caller (every caller holds
//!   its own lock around read-decide-commit; each says where).
//! - [`flush`] runs sled's blocking `flush` on a thread of its own, for at most
//!   [`FLUSH_DEADLINE`] (a full disk can park it inside sled forever).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The tree of interrupted batches, keyed by a big-endian sequence number.
const INTENTS: &str = "kv/intents";

/// The intents of large batches ([`LARGE_INTENT`] bytes and more), keyed like [`INTENTS`]
/// from the same sequence. Apart because sled rewrites a whole leaf, with every value in it,
/// when it consolidates the leaf (every ten changes or so), and a tree holding only
/// short-lived intents is one leaf that every batch changes twice: a receipt seal's intent
/// (about 600 bytes per receipt: 45 MB for 65 536) kept in it was rewritten each time the
/// batches committed meanwhile consolidated the leaf — on the 65 536-shard coordinator bench, 67
/// rewrites of a 5.5 MB intent in 20 000 shards, 18 KB per verified shard
/// (docs/storage.md §9). Large batches are few and seldom overlap (one seal at a time, a
/// job's submission), so here an intent is written once and removed once.
const LARGE_INTENTS: &str = "kv/intents/large";

/// Intents of at least this many bytes go to [`LARGE_INTENTS`]. A shard's receipts (about
/// 2 KB) and a settlement batch of 32 shards stay below it; a seal of a few hundred receipts
/// or more, and a large job's submission (its manifest), are above.
const LARGE_INTENT: usize = 64 * 1024;

/// How long a flush may take before it is given up as one that will never finish.
pub const FLUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Longest tree name an intent can hold (one length byte; hearth's names are under 40 bytes).
const MAX_NAME: usize = u8::MAX as usize;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error(transparent)]
    Db(#[from] sled::Error),
    /// An interrupted batch could not be decoded: the database was damaged on disk.
    #[error("an interrupted write (intent {key}) in the database is damaged: {reason}")]
    Corrupt { key: String, reason: &'static str },
}

/// Opens a sled database and finishes every batch a crash interrupted. Every database hearth
/// writes with [`Batch`] is opened through here.
pub fn open(path: &Path) -> Result<sled::Db, KvError> {
    let db = sled::open(path)?;
    recover(&db)?;
    Ok(db)
}

/// Applies and removes every intent left in `db`; returns how many there were. Runs before
/// anything else uses the database (from [`open`]): applying an intent while its own batch is
/// still being committed could undo a later write to the same key.
///
/// Intents are applied in the order their batches began (their keys, one sequence across
/// both intent trees): two interrupted batches that wrote one key leave the later one's value.
pub fn recover(db: &sled::Db) -> Result<usize, KvError> {
    let trees = [db.open_tree(INTENTS)?, db.open_tree(LARGE_INTENTS)?];
    let mut left: Vec<(sled::IVec, &sled::Tree)> = Vec::new();
    for tree in &trees {
        for key in tree.iter().keys() {
            left.push((key?, tree));
        }
    }
    left.sort_by(|a, b| a.0.cmp(&b.0));
    let mut n = 0;
    for (key, intents) in left {
        let Some(value) = intents.get(&key)? else {
            continue;
        };
        let corrupt = |reason| KvError::Corrupt {
            key: hex::encode(&key),
            reason,
        };
        let ops = decode(&value).map_err(corrupt)?;
        for op in ops {
            let tree = db.open_tree(op.tree)?;
            match op.value {
                Some(v) => tree.insert(op.key, v)?,
                None => tree.remove(op.key)?,
            };
        }
        intents.remove(&key)?;
        n += 1;
    }
    if n > 0 {
        db.flush()?;
        tracing::warn!("finished {n} write(s) a crash had interrupted");
    }
    Ok(n)
}

/// Removes every intent that does not decode (`hearth doctor --repair`); returns their keys
/// (hex). Its batch may be half applied: the integrity check that follows finds and repairs
/// what that left.
pub fn discard_damaged(db: &sled::Db) -> Result<Vec<String>, KvError> {
    let mut gone = Vec::new();
    for name in [INTENTS, LARGE_INTENTS] {
        let intents = db.open_tree(name)?;
        for item in intents.iter() {
            let (key, value) = item?;
            if decode(&value).is_err() {
                intents.remove(&key)?;
                gone.push(hex::encode(&key));
            }
        }
    }
    db.flush()?;
    Ok(gone)
}

/// The intents trees of a database, kept by whoever commits batches into it.
#[derive(Clone)]
pub struct Kv {
    intents: sled::Tree,
    large: sled::Tree,
}

impl Kv {
    pub fn open(db: &sled::Db) -> sled::Result<Kv> {
        Ok(Kv {
            intents: db.open_tree(INTENTS)?,
            large: db.open_tree(LARGE_INTENTS)?,
        })
    }

    pub fn batch(&self) -> Batch {
        Batch {
            kv: self.clone(),
            ops: Vec::new(),
        }
    }
}

/// Writes to apply together ([`Kv::batch`]). It holds its own handles on the intents trees
/// (two reference counts), so it can be kept and committed later, on another thread.
pub struct Batch {
    kv: Kv,
    /// (tree, key, value to insert or `None` to remove); a tree handle is a cheap clone.
    ops: Vec<(sled::Tree, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn insert(&mut self, tree: &sled::Tree, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (key, value) = (key.as_ref().to_vec(), value.as_ref().to_vec());
        self.ops.push((tree.clone(), key, Some(value)));
    }

    pub fn remove(&mut self, tree: &sled::Tree, key: impl AsRef<[u8]>) {
        self.ops.push((tree.clone(), key.as_ref().to_vec(), None));
    }

    /// Adds `other`'s writes after this batch's own (they win where both write one key).
    pub fn append(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }

    /// Applies every write, all or none after a crash (unflushed: the caller's flush makes
    /// it durable). A key written more than once in the batch is written once, with its last
    /// value (what applying every write in order would leave). A batch of one write needs no
    /// intent.
    pub fn commit(self) -> sled::Result<()> {
        let names: Vec<sled::IVec> = self.ops.iter().map(|(tree, ..)| tree.name()).collect();
        if names.iter().any(|n| n.len() > MAX_NAME) {
            return Err(sled::Error::Unsupported("tree name over 255 bytes".into()));
        }
        // The last write of each (tree, key), in the batch's order (a batch of one write, the
        // coordinator's usual lease or claim, is kept as it is).
        let kept: Vec<usize> = if self.ops.len() <= 1 {
            (0..self.ops.len()).collect()
        } else {
            let mut seen = std::collections::HashSet::new();
            let mut kept: Vec<usize> = (0..self.ops.len())
                .rev()
                .filter(|&i| seen.insert((names[i].as_ref(), self.ops[i].1.as_slice())))
                .collect();
            kept.reverse();
            kept
        };
        let intent = if kept.len() > 1 {
            let key = next_sequence().to_be_bytes();
            let ops: Vec<Op<'_>> = kept
                .iter()
                .map(|&i| Op {
                    tree: &names[i],
                    key: &self.ops[i].1,
                    value: self.ops[i].2.as_deref(),
                })
                .collect();
            let bytes = encode(&ops);
            let intents = if bytes.len() >= LARGE_INTENT {
                &self.kv.large
            } else {
                &self.kv.intents
            };
            intents.insert(key, bytes)?;
            Some((intents, key))
        } else {
            None
        };
        for &i in &kept {
            let (tree, key, value) = &self.ops[i];
            match value {
                Some(v) => tree.insert(key.as_slice(), v.as_slice())?,
                None => tree.remove(key.as_slice())?,
            };
        }
        if let Some((intents, key)) = intent {
            intents.remove(key)?;
        }
        Ok(())
    }
}

/// Makes every write made to the database before the call durable. sled's blocking flush, on
/// a thread of its own, waited for at most [`FLUSH_DEADLINE`] (never sled's `flush_async`:
/// see the module header; why a thread of its own: [`off_the_runtime`]).
pub async fn flush(tree: &sled::Tree) -> sled::Result<()> {
    off_the_runtime(None, tree).await
}

/// Commits `batch` and then flushes the database, both on a thread of their own: when it
/// returns, the batch and every write made before the call are durable. For write-behind
/// (the coordinator's group commit): the writes of many requests, collected in one batch
/// while the previous flush ran, are applied just before the flush that acknowledges them.
pub async fn commit_and_flush(batch: Batch, tree: &sled::Tree) -> sled::Result<()> {
    off_the_runtime(Some(batch), tree).await
}

/// Whether `e` is the error of a flush given up at [`FLUSH_DEADLINE`]. Its thread is still
/// parked inside sled, and so would be every later flush of that database, including the one
/// sled runs when the database is dropped: a node that sees it stops without writing its
/// checkpoint and leaves the database open (`RunningNode::shutdown`); its restart recovers
/// what was confirmed.
/// The entries of `tree` after `cursor` (all of them without one), in key order: where a
/// page a peer asked for starts.
pub fn after(tree: &sled::Tree, cursor: Option<&[u8]>) -> sled::Iter {
    match cursor {
        Some(c) => {
            tree.range::<&[u8], _>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
        }
        None => tree.iter(),
    }
}

pub fn gave_up(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// Runs a commit and a flush on a thread of its own and waits for it at most
/// [`FLUSH_DEADLINE`]. sled 0.34 can park a flush forever: an item of its log over about
/// 128 KiB (a large value, or a leaf whose values add up to that) goes to a file of its own
/// (`tests::sled_spills_leaves_of_16_kib_values_to_files_of_their_own`), and when writing that file fails
/// (a full disk) the write keeps its place in the log buffer, which then never reaches the
/// disk; every flush waits for it (`tests/integrity.rs`,
/// `a_flush_sled_never_finishes_fails_instead_of_hanging`). On tokio's blocking pool such a
/// thread would also keep the runtime from ever shutting down, so this is a plain thread,
/// left parked if it never returns. Before the deadline the caller gets sled's own answer
/// (a full disk is usually reported at once); after it, an error that says the database
/// stopped confirming writes, and nothing that waited for the flush is acknowledged.
async fn off_the_runtime(batch: Option<Batch>, tree: &sled::Tree) -> sled::Result<()> {
    let tree = tree.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hearth-flush".into())
        .spawn(move || {
            let done = batch
                .map_or(Ok(()), Batch::commit)
                .and_then(|()| tree.flush().map(drop));
            let _ = tx.send(done);
        })
        .map_err(sled::Error::Io)?;
    match tokio::time::timeout(FLUSH_DEADLINE, rx).await {
        Ok(Ok(done)) => done,
        Ok(Err(_)) => Err(sled::Error::Io(std::io::Error::other(
            "database flush did not finish: its thread ended without an answer",
        ))),
        Err(_) => Err(sled::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the database did not confirm a write within {} s (is the disk full or \
                     failing?); it will not confirm another before the node restarts",
                FLUSH_DEADLINE.as_secs()
            ),
        ))),
    }
}

/// Intent keys: unique within the process (one counter for every database) and increasing,
/// seeded from the clock so that a run does not reuse a key an earlier run left in a database
/// opened without [`open`] (tests).
fn next_sequence() -> u64 {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    NEXT.get_or_init(|| {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        AtomicU64::new(micros << 8)
    })
    .fetch_add(1, Ordering::Relaxed)
}

struct Op<'a> {
    tree: &'a [u8],
    key: &'a [u8],
    value: Option<&'a [u8]>,
}

/// An intent: per write, `kind u8` (1 insert, 0 remove), `name_len u8`, the tree's name,
/// `key_len u32` big-endian, the key, and for an insert `value_len u32` and the value.
fn encode(ops: &[Op<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        out.push(op.value.is_some() as u8);
        out.push(op.tree.len() as u8);
        out.extend_from_slice(op.tree);
        out.extend_from_slice(&(op.key.len() as u32).to_be_bytes());
        out.extend_from_slice(op.key);
        if let Some(v) = op.value {
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v);
        }
    }
    out
}

struct Decoded<'a> {
    tree: &'a [u8],
    key: &'a [u8],
    value: Option<&'a [u8]>,
}

fn decode(mut b: &[u8]) -> Result<Vec<Decoded<'_>>, &'static str> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
        if b.len() < n {
            return Err("truncated");
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn len32(b: &mut &[u8]) -> Result<usize, &'static str> {
        let v = take(b, 4)?;
        Ok(u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize)
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let kind = take(&mut b, 1)?[0];
        if kind > 1 {
            return Err("unknown write kind");
        }
        let name_len = take(&mut b, 1)?[0] as usize;
        let tree = take(&mut b, name_len)?;
        let key_len = len32(&mut b)?;
        let key = take(&mut b, key_len)?;
        let value = if kind == 1 {
            let n = len32(&mut b)?;
            Some(take(&mut b, n)?)
        } else {
            None
        };
        out.push(Decoded { tree, key, value });
    }
    if out.is_empty() {
        return Err("empty");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What makes sled 0.34 write a file of its own (and wedge if that write fails,
    /// docs/storage.md "A flush sled never finishes"): any item of its log over about 128 KiB,
    /// and a leaf page is one item holding every value of the leaf (up to 16 of them). So values
    /// of 16 KiB, far below 128 KiB, spill as their leaves are rewritten: keeping each value
    /// under 128 KiB would not keep sled off that path. Measured with values of 9 KiB or less
    /// and 2 000 of them: no file.
    #[test]
    fn sled_spills_leaves_of_16_kib_values_to_files_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        for i in 0..400u32 {
            tree.insert(i.to_be_bytes(), vec![i as u8; 16 * 1024])
                .unwrap();
        }
        tree.flush().unwrap();
        let spilled = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
        assert!(spilled > 0, "no leaf of 16 KiB values went to a file");
    }

    #[test]
    fn a_batch_applies_every_write_and_leaves_no_intent() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let kv = Kv::open(&db).unwrap();
        let (a, b) = (db.open_tree("a").unwrap(), db.open_tree("b").unwrap());
        a.insert("gone", "x").unwrap();
        let mut batch = kv.batch();
        batch.insert(&a, "k", "1");
        batch.insert(&b, "k", "2");
        batch.remove(&a, "gone");
        batch.commit().unwrap();
        assert_eq!(a.get("k").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(a.get("gone").unwrap(), None);
        assert!(kv.intents.is_empty());
    }

    /// A key written several times in one batch (a household's record changed by several
    /// shards of one settlement batch) ends with its last value, and a remove after an
    /// insert (or an insert after a remove) wins as it would applied in order.
    #[test]
    fn the_last_write_of_a_key_in_a_batch_wins() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let kv = Kv::open(&db).unwrap();
        let (a, b) = (db.open_tree("a").unwrap(), db.open_tree("b").unwrap());
        b.insert("back", "0").unwrap();
        let mut batch = kv.batch();
        batch.insert(&a, "k", "1");
        batch.insert(&b, "k", "b");
        batch.insert(&a, "k", "2");
        batch.insert(&a, "gone", "x");
        batch.remove(&a, "gone");
        batch.remove(&b, "back");
        batch.insert(&b, "back", "3");
        batch.insert(&a, "k", "4");
        batch.commit().unwrap();
        assert_eq!(a.get("k").unwrap().as_deref(), Some(&b"4"[..]));
        assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"b"[..]));
        assert_eq!(a.get("gone").unwrap(), None);
        assert_eq!(b.get("back").unwrap().as_deref(), Some(&b"3"[..]));
        assert!(kv.intents.is_empty());
    }

    /// A crash after the intent and part of its writes reached the disk: opening the database
    /// finishes the batch.
    #[test]
    fn an_interrupted_batch_is_finished_when_the_database_opens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open(dir.path()).unwrap();
            let (a, b) = (db.open_tree("a").unwrap(), db.open_tree("b").unwrap());
            a.insert("old", "x").unwrap();
            let ops = [
                Op {
                    tree: b"a",
                    key: b"k",
                    value: Some(b"1"),
                },
                Op {
                    tree: b"b",
                    key: b"k",
                    value: Some(b"2"),
                },
                Op {
                    tree: b"a",
                    key: b"old",
                    value: None,
                },
            ];
            db.open_tree(INTENTS)
                .unwrap()
                .insert(7u64.to_be_bytes(), encode(&ops))
                .unwrap();
            // Only the first write made it before the "crash".
            a.insert("k", "1").unwrap();
            assert_eq!(b.get("k").unwrap(), None);
            db.flush().unwrap();
        }
        let db = crate::node::reopen_db(dir.path());
        assert_eq!(
            db.open_tree("b").unwrap().get("k").unwrap().as_deref(),
            Some(&b"2"[..])
        );
        assert_eq!(db.open_tree("a").unwrap().get("old").unwrap(), None);
        assert!(db.open_tree(INTENTS).unwrap().is_empty());
    }

    /// A large batch (its intent kept apart, in `kv/intents/large`) commits like any other
    /// and leaves no intent in either tree.
    #[test]
    fn a_large_batch_applies_every_write_and_leaves_no_intent() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let kv = Kv::open(&db).unwrap();
        let (a, b) = (db.open_tree("a").unwrap(), db.open_tree("b").unwrap());
        let big = vec![7u8; LARGE_INTENT];
        let mut batch = kv.batch();
        batch.insert(&a, "k", &big);
        batch.insert(&b, "k", "2");
        batch.commit().unwrap();
        assert_eq!(a.get("k").unwrap().as_deref(), Some(big.as_slice()));
        assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"2"[..]));
        assert!(kv.intents.is_empty() && kv.large.is_empty());
    }

    /// Two interrupted batches that wrote one key, the earlier one large: opening the
    /// database applies them in the order they began, whichever tree holds each intent, so
    /// the later batch's value stands.
    #[test]
    fn interrupted_batches_are_finished_in_the_order_they_began() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![1u8; LARGE_INTENT];
        {
            let db = open(dir.path()).unwrap();
            let earlier = [Op {
                tree: b"a",
                key: b"k",
                value: Some(&big),
            }];
            let later = [Op {
                tree: b"a",
                key: b"k",
                value: Some(b"later"),
            }];
            db.open_tree(LARGE_INTENTS)
                .unwrap()
                .insert(5u64.to_be_bytes(), encode(&earlier))
                .unwrap();
            db.open_tree(INTENTS)
                .unwrap()
                .insert(6u64.to_be_bytes(), encode(&later))
                .unwrap();
            db.flush().unwrap();
        }
        let db = crate::node::reopen_db(dir.path());
        assert_eq!(
            db.open_tree("a").unwrap().get("k").unwrap().as_deref(),
            Some(&b"later"[..])
        );
        assert!(db.open_tree(INTENTS).unwrap().is_empty());
        assert!(db.open_tree(LARGE_INTENTS).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_intent_is_named_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open(dir.path()).unwrap();
            let ops = [Op {
                tree: b"a",
                key: b"k",
                value: Some(b"1"),
            }];
            let mut bytes = encode(&ops);
            bytes.truncate(bytes.len() - 1);
            db.open_tree(INTENTS)
                .unwrap()
                .insert(9u64.to_be_bytes(), bytes)
                .unwrap();
            db.flush().unwrap();
        }
        match crate::node::reopen_db_with(dir.path(), open) {
            Err(KvError::Corrupt { key, reason }) => {
                assert_eq!(
                    (key.as_str(), reason),
                    (hex::encode(9u64.to_be_bytes()).as_str(), "truncated")
                );
            }
            other => panic!("expected a damaged intent, got {:?}", other.map(drop)),
        }
        // `hearth doctor --repair` discards it; the database then opens.
        let db = crate::node::test_db(dir.path()).unwrap();
        assert_eq!(
            discard_damaged(&db).unwrap(),
            vec![hex::encode(9u64.to_be_bytes())]
        );
        drop(db);
        crate::node::reopen_db(dir.path());
    }

    #[test]
    fn decoding_never_panics_on_any_prefix() {
        let ops = [
            Op {
                tree: b"tree",
                key: b"key",
                value: Some(b"value"),
            },
            Op {
                tree: b"t",
                key: b"",
                value: None,
            },
        ];
        let bytes = encode(&ops);
        assert_eq!(decode(&bytes).unwrap().len(), 2);
        for n in 0..bytes.len() {
            let _ = decode(&bytes[..n]);
        }
    }

    /// sled 0.34's `flush_async`, called by many tasks at once, never returns (this workload
    /// with `flush_async` in place of [`flush`] stalled in its first round, 5 runs of 5), and
    /// its transactions switch the whole process to a global lock. Many tasks committing
    /// batches, writing, scanning and flushing at once must all finish.
    #[test]
    fn concurrent_batches_scans_and_flushes_all_finish() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let kv = Kv::open(&db).unwrap();
        let (a, b) = (db.open_tree("a").unwrap(), db.open_tree("b").unwrap());
        let (a2, b2) = (a.clone(), b.clone());
        // The work runs on its own runtime and thread: a stalled database blocks the threads
        // that would run a timer, so the watchdog is this thread waiting on a channel.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (a, b) = (a2, b2);
                for round in 0..20u32 {
                    let mut tasks = tokio::task::JoinSet::new();
                    for i in 0..32u32 {
                        let (kv, a, b) = (kv.clone(), a.clone(), b.clone());
                        tasks.spawn(async move {
                            let key = (round * 100 + i).to_be_bytes();
                            match i % 4 {
                                0 => {
                                    let mut batch = kv.batch();
                                    batch.insert(&a, key, [0u8; 200]);
                                    batch.insert(&b, key, [1u8; 50]);
                                    batch.commit().unwrap();
                                }
                                1 => {
                                    let a = a.clone();
                                    tokio::task::spawn_blocking(move || a.iter().keys().count())
                                        .await
                                        .unwrap();
                                }
                                _ => {
                                    a.insert(key, vec![2u8; 1000]).unwrap();
                                }
                            }
                            flush(&a).await.unwrap();
                        });
                    }
                    while let Some(r) = tasks.join_next().await {
                        r.unwrap();
                    }
                }
            });
            let _ = done.send(());
        });
        if finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .is_err()
        {
            // Dropping a stalled database would wait on it (sled flushes on drop).
            std::mem::forget((db, a, b, dir));
            panic!("the database stalled: writes and flushes stopped finishing");
        }
        assert_eq!(a.len(), 20 * 24);
        assert_eq!(b.len(), 20 * 8);
    }
}
