//! The sled-backed [`Store`] and resumable [`Import`]s.
//!
//! Owns the `store/blobs`, `store/partial` and `store/chunks` trees (layout in the parent
//! module doc); must not touch any other tree of a shared `Db`.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::Tree;

use super::outboard::read_full;
use super::{hex_of, Outboard, StoreError, CHUNK_SIZE, MAX_BLOB_LEN, MAX_GET_BYTES};

const BLOBS_TREE: &str = "store/blobs";
const PARTIAL_TREE: &str = "store/partial";
const CHUNKS_TREE: &str = "store/chunks";
const KEPT_TREE: &str = "store/kept";

/// Cheap, cloneable handle on the content store (sled trees are reference counted).
///
/// Create one `Store` per sled `Db` and clone it: the lock that orders imports against
/// deletes lives in the handle, so two independent `Store`s on one `Db` would not see each
/// other's lock.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    blobs: Tree,
    partial: Tree,
    chunks: Tree,
    /// Blobs this node stored itself with `put_bytes` / `put_file` (the household's own
    /// data): [`Store::delete_unless_kept`] never removes them.
    kept: Tree,
    /// Serialises the structural steps (start of an import, storing a group, making a blob
    /// visible, deleting) so a delete cannot interleave with them and leave a visible blob
    /// with missing groups or orphan groups nobody will clean up. Hashing happens outside it.
    lock: Arc<Mutex<()>>,
    /// Most bytes of blobs (complete and partial) an import from a peer may bring the store
    /// to; `u64::MAX` (the default) means no quota. Shared by every clone of the handle.
    quota: Arc<AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn chunk_key(hash: &blake3::Hash, index: u32) -> [u8; 36] {
    let mut key = [0u8; 36];
    key[..32].copy_from_slice(hash.as_bytes());
    key[32..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Maps the result of a transaction that never aborts on purpose.
fn tx_result<T>(r: Result<T, TransactionError<()>>) -> Result<T, StoreError> {
    match r {
        Ok(v) => Ok(v),
        Err(TransactionError::Storage(e)) => Err(StoreError::Db(e)),
        // Our closures never call abort; keep a clear error rather than a panic anyway.
        Err(TransactionError::Abort(())) => Err(StoreError::Db(sled::Error::Unsupported(
            "store transaction aborted".into(),
        ))),
    }
}

impl Store {
    /// Opens (or creates) a sled database in `dir` and the store's trees in it.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::open(dir)?;
        Store::with_db(&db)
    }

    /// Uses the store's own `store/...` trees inside a `Db` shared with other subsystems.
    pub fn with_db(db: &sled::Db) -> Result<Store, StoreError> {
        Ok(Store {
            db: db.clone(),
            blobs: db.open_tree(BLOBS_TREE)?,
            partial: db.open_tree(PARTIAL_TREE)?,
            chunks: db.open_tree(CHUNKS_TREE)?,
            kept: db.open_tree(KEPT_TREE)?,
            lock: Arc::new(Mutex::new(())),
            quota: Arc::new(AtomicU64::new(u64::MAX)),
        })
    }

    /// Sets the disk quota: an import from a peer ([`Store::begin_import`]) that would take
    /// the blobs stored past `bytes` is refused with [`StoreError::QuotaExceeded`]. Blobs
    /// this node creates itself (`put_bytes`, `put_file`) count towards it but are not
    /// refused. Applies to every clone of this handle.
    pub fn set_quota(&self, bytes: u64) {
        self.quota.store(bytes, Ordering::Relaxed);
    }

    /// Bytes of blob data stored, complete blobs and partial imports at their full length
    /// (what they take once finished). Reads every outboard: linear in the number of blobs.
    pub fn usage(&self) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for tree in [&self.blobs, &self.partial] {
            for value in tree.iter().values() {
                // A damaged outboard counts as nothing here; reads of it remove it.
                if let Ok(ob) = Outboard::from_bytes(&value?) {
                    total = total.saturating_add(ob.len);
                }
            }
        }
        Ok(total)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores `data` as this node's own (kept: see [`Store::delete_unless_kept`]) and returns
    /// its blake3 hash. Storing a blob twice stores nothing more.
    pub fn put_bytes(&self, data: &[u8]) -> Result<blake3::Hash, StoreError> {
        let hash = self.put_bytes_unkept(data)?;
        self.kept.insert(hash.as_bytes(), &[])?;
        Ok(hash)
    }

    /// Stores `data` made for someone else (a shard output for another household's job),
    /// without marking it kept, and returns its blake3 hash.
    pub fn put_bytes_unkept(&self, data: &[u8]) -> Result<blake3::Hash, StoreError> {
        if data.len() as u64 > MAX_BLOB_LEN {
            return Err(StoreError::BlobTooBig {
                len: data.len() as u64,
                max: MAX_BLOB_LEN,
            });
        }
        let outboard = Outboard::compute(data);
        let hash = outboard.root().ok_or(StoreError::BadOutboard)?;
        if self.has(&hash)? {
            return Ok(hash);
        }
        let mut import = self.start_import(&hash, &outboard, false)?;
        for index in import.missing() {
            let start = index as usize * CHUNK_SIZE;
            let group = &data[start..start + outboard.chunk_len(index)];
            // `data` is borrowed immutably and was just hashed: no need to hash it again.
            import.store_chunk(index, group)?;
        }
        import.finish()
    }

    /// Stores the file at `path` and returns its blake3 hash, in two passes (hash, then
    /// store) so at most two chunk groups are in memory. Each group is verified again in the
    /// second pass, so a file modified in between gives [`StoreError::FileChanged`].
    /// The blob is this node's own (kept).
    pub fn put_file(&self, path: &Path) -> Result<blake3::Hash, StoreError> {
        let hash = self.put_file_unkept(path)?;
        self.kept.insert(hash.as_bytes(), &[])?;
        Ok(hash)
    }

    fn put_file_unkept(&self, path: &Path) -> Result<blake3::Hash, StoreError> {
        let file_err = |source| StoreError::File {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(file_err)?;
        let size = file.metadata().map_err(file_err)?.len();
        if size > MAX_BLOB_LEN {
            return Err(StoreError::BlobTooBig {
                len: size,
                max: MAX_BLOB_LEN,
            });
        }
        let outboard = Outboard::compute_reader(&mut file).map_err(|e| match e {
            StoreError::Io(source) => file_err(source),
            other => other,
        })?;
        let hash = outboard.root().ok_or(StoreError::BadOutboard)?;
        if self.has(&hash)? {
            return Ok(hash);
        }
        let mut import = self.start_import(&hash, &outboard, false)?;
        file.seek(SeekFrom::Start(0)).map_err(file_err)?;
        let mut buf = vec![0u8; CHUNK_SIZE];
        for index in 0..outboard.chunk_count() {
            let want = outboard.chunk_len(index);
            let got = read_full(&mut file, &mut buf[..want]).map_err(file_err)?;
            if got != want {
                return Err(StoreError::FileChanged(path.to_path_buf()));
            }
            if !import.present[index as usize] {
                import.put_chunk(index, &buf[..want]).map_err(|e| match e {
                    StoreError::BadChunk { .. } => StoreError::FileChanged(path.to_path_buf()),
                    other => other,
                })?;
            }
        }
        // A file that grew after hashing no longer matches the hash we would return.
        if read_full(&mut file, &mut buf[..1]).map_err(file_err)? != 0 {
            return Err(StoreError::FileChanged(path.to_path_buf()));
        }
        import.finish()
    }

    /// Returns the whole blob, verified. Refuses blobs above [`MAX_GET_BYTES`] with
    /// [`StoreError::TooLarge`]; stream those with [`Store::write_to`].
    pub fn get_bytes(&self, hash: &blake3::Hash) -> Result<Vec<u8>, StoreError> {
        let outboard = self.require_outboard(hash)?;
        if outboard.len > MAX_GET_BYTES {
            return Err(StoreError::TooLarge {
                len: outboard.len,
                max: MAX_GET_BYTES,
            });
        }
        // Bounded by MAX_GET_BYTES just above.
        let mut out = Vec::with_capacity(outboard.len as usize);
        self.stream(hash, &outboard, &mut out)?;
        Ok(out)
    }

    /// Streams the blob into `w` one verified chunk group at a time; returns the length.
    ///
    /// If a group fails verification midway, `w` has already received the verified groups
    /// before it: on error, discard what was written.
    pub fn write_to(&self, hash: &blake3::Hash, w: &mut dyn Write) -> Result<u64, StoreError> {
        let outboard = self.require_outboard(hash)?;
        self.stream(hash, &outboard, w)?;
        Ok(outboard.len)
    }

    fn stream(
        &self,
        hash: &blake3::Hash,
        outboard: &Outboard,
        w: &mut dyn Write,
    ) -> Result<(), StoreError> {
        for index in 0..outboard.chunk_count() {
            let group = self.load_chunk(hash, outboard, index)?;
            w.write_all(&group)?;
        }
        Ok(())
    }

    /// Whether a complete blob with this hash is stored (partial imports do not count).
    pub fn has(&self, hash: &blake3::Hash) -> Result<bool, StoreError> {
        Ok(self.blobs.contains_key(hash.as_bytes())?)
    }

    /// Length of a complete blob, or `None` if it is not stored.
    pub fn len(&self, hash: &blake3::Hash) -> Result<Option<u64>, StoreError> {
        Ok(self.outboard(hash)?.map(|o| o.len))
    }

    /// Every complete blob with its length, in hash order. Entries whose outboard fails
    /// verification are removed and left out. The result grows with the number of blobs.
    pub fn list(&self) -> Result<Vec<(blake3::Hash, u64)>, StoreError> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for entry in self.blobs.iter() {
            let (key, value) = entry?;
            let Ok(bytes) = <[u8; 32]>::try_from(key.as_ref()) else {
                // Not a key we wrote; nothing to verify it against, so only log it.
                tracing::warn!(key = %hex::encode(&key), "ignoring malformed key in store/blobs");
                continue;
            };
            let hash = blake3::Hash::from_bytes(bytes);
            match Outboard::from_bytes(&value) {
                Ok(ob) if ob.verify(&hash) => out.push((hash, ob.len)),
                _ => damaged.push(hash),
            }
        }
        for hash in damaged {
            // The error is only informative here: the entry is left out either way.
            let _ = self.corrupt(&hash, "its piece list is damaged".into());
        }
        Ok(out)
    }

    /// Removes a blob, complete or partially imported. Returns whether anything was there.
    /// An [`Import`] still running for it fails with [`StoreError::ImportCancelled`].
    pub fn delete(&self, hash: &blake3::Hash) -> Result<bool, StoreError> {
        let _guard = self.lock();
        self.remove_locked(hash)
    }

    /// Deletes the blob unless this node stored it itself with `put_bytes` or `put_file`
    /// (then it is the household's own data, kept whoever else used it). Returns whether
    /// anything was deleted. Garbage collection of fetched blobs uses this.
    pub fn delete_unless_kept(&self, hash: &blake3::Hash) -> Result<bool, StoreError> {
        let _guard = self.lock();
        if self.kept.contains_key(hash.as_bytes())? {
            return Ok(false);
        }
        self.remove_locked(hash)
    }

    fn remove_locked(&self, hash: &blake3::Hash) -> Result<bool, StoreError> {
        let key = hash.as_bytes();
        self.kept.remove(key)?;
        let (blob, partial) = tx_result(
            (&self.blobs, &self.partial).transaction(|(b, p)| Ok((b.remove(key)?, p.remove(key)?))),
        )?;
        let existed = blob.is_some() || partial.is_some();
        // Remove the groups the outboard names directly (no need to read their values),
        // then sweep the prefix for anything left over (damaged outboard, orphans).
        if let Some(ob) = blob.or(partial).and_then(|b| Outboard::from_bytes(&b).ok()) {
            for index in 0..ob.chunk_count() {
                self.chunks.remove(chunk_key(hash, index))?;
            }
        }
        for key in self.chunks.scan_prefix(key).keys() {
            self.chunks.remove(key?)?;
        }
        Ok(existed)
    }

    /// The verified outboard of a complete blob, or `None` if it is not stored.
    pub fn outboard(&self, hash: &blake3::Hash) -> Result<Option<Outboard>, StoreError> {
        let Some(bytes) = self.blobs.get(hash.as_bytes())? else {
            return Ok(None);
        };
        match Outboard::from_bytes(&bytes) {
            Ok(ob) if ob.verify(hash) => Ok(Some(ob)),
            _ => Err(self.corrupt(hash, "its piece list is damaged".into())),
        }
    }

    fn require_outboard(&self, hash: &blake3::Hash) -> Result<Outboard, StoreError> {
        self.outboard(hash)?
            .ok_or_else(|| StoreError::NotFound(hex_of(hash)))
    }

    /// One chunk group of a complete blob, verified (e.g. to serve it to a peer).
    pub fn read_chunk(&self, hash: &blake3::Hash, index: u32) -> Result<Vec<u8>, StoreError> {
        let outboard = self.require_outboard(hash)?;
        if index >= outboard.chunk_count() {
            return Err(StoreError::NoSuchChunk {
                hash: hex_of(hash),
                index,
                count: outboard.chunk_count(),
            });
        }
        Ok(self.load_chunk(hash, &outboard, index)?.to_vec())
    }

    /// Loads and verifies one group of a complete blob; removes the blob if it is bad.
    fn load_chunk(
        &self,
        hash: &blake3::Hash,
        outboard: &Outboard,
        index: u32,
    ) -> Result<sled::IVec, StoreError> {
        match self.chunks.get(chunk_key(hash, index))? {
            None => Err(self.corrupt(hash, format!("piece {index} is missing"))),
            Some(group) if !outboard.verify_chunk(hash, index, &group) => {
                Err(self.corrupt(hash, format!("piece {index} does not match its hash")))
            }
            Some(group) => Ok(group),
        }
    }

    /// Logs a damaged blob, removes it so it can be fetched again, and builds the error.
    fn corrupt(&self, hash: &blake3::Hash, reason: String) -> StoreError {
        let hex = hex_of(hash);
        tracing::warn!(hash = %hex, %reason, "removing damaged blob from the store");
        if let Err(e) = self.delete(hash) {
            tracing::warn!(hash = %hex, error = %e, "could not remove damaged blob");
        }
        StoreError::Corrupt { hash: hex, reason }
    }

    /// Starts or resumes importing the blob `hash` described by `outboard` (e.g. received
    /// from a peer). The outboard is verified against `hash` first; groups stored by an
    /// earlier, interrupted import are re-verified and kept, damaged ones are dropped.
    pub fn begin_import(
        &self,
        hash: &blake3::Hash,
        outboard: &Outboard,
    ) -> Result<Import, StoreError> {
        if !outboard.verify(hash) {
            return Err(StoreError::BadOutboard);
        }
        self.start_import(hash, outboard, true)
    }

    /// [`Store::begin_import`] for an outboard already known to match `hash`.
    /// `quota`: refuse a new import that would take the store past its quota.
    fn start_import(
        &self,
        hash: &blake3::Hash,
        outboard: &Outboard,
        quota: bool,
    ) -> Result<Import, StoreError> {
        let count = outboard.chunk_count() as usize;
        let mut import = Import {
            store: self.clone(),
            hash: *hash,
            outboard: outboard.clone(),
            present: vec![false; count],
            already_complete: false,
        };
        {
            let _guard = self.lock();
            if self.blobs.contains_key(hash.as_bytes())? {
                import.already_complete = true;
                import.present = vec![true; count];
                return Ok(import);
            }
            // A new import must fit the quota; one being resumed is already counted.
            let quota = if quota {
                self.quota.load(Ordering::Relaxed)
            } else {
                u64::MAX
            };
            if quota != u64::MAX && !self.partial.contains_key(hash.as_bytes())? {
                let used = self.usage()?;
                if used.saturating_add(outboard.len) > quota {
                    return Err(StoreError::QuotaExceeded {
                        len: outboard.len,
                        used,
                        quota,
                    });
                }
            }
            let encoded = outboard.to_bytes();
            // Two valid outboards for one hash would be a blake3 collision, so a different
            // stored one can only be damaged: replace it.
            if self.partial.get(hash.as_bytes())?.as_deref() != Some(&encoded[..]) {
                self.partial.insert(hash.as_bytes(), encoded)?;
            }
        }
        // Re-verify what an earlier attempt stored, outside the lock: it is plain hashing.
        for index in 0..count as u32 {
            let key = chunk_key(hash, index);
            let Some(group) = self.chunks.get(key)? else {
                continue;
            };
            if outboard.verify_chunk(hash, index, &group) {
                import.present[index as usize] = true;
            } else {
                tracing::warn!(hash = %hex_of(hash), index, "dropping damaged piece of an interrupted download");
                self.chunks.remove(key)?;
            }
        }
        Ok(import)
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

/// A blob being imported group by group, e.g. while it downloads from peers.
///
/// Dropping an `Import` keeps what it stored: [`Store::begin_import`] with the same hash
/// resumes it, even after a restart. [`Store::delete`] abandons it.
pub struct Import {
    store: Store,
    hash: blake3::Hash,
    outboard: Outboard,
    /// One flag per group; bounded by the outboard, itself bounded by `MAX_BLOB_LEN`.
    present: Vec<bool>,
    /// The blob was already complete when the import began; there is nothing to do.
    already_complete: bool,
}

impl std::fmt::Debug for Import {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Import")
            .field("hash", &hex_of(&self.hash))
            .field("len", &self.outboard.len)
            .field("missing", &self.present.iter().filter(|p| !**p).count())
            .finish()
    }
}

impl Import {
    /// Verifies group `index` against the outboard and stores it. Bad data gives
    /// [`StoreError::BadChunk`] and stores nothing. Storing a group twice is harmless.
    pub fn put_chunk(&mut self, index: u32, data: &[u8]) -> Result<(), StoreError> {
        if !self.outboard.verify_chunk(&self.hash, index, data) {
            return Err(StoreError::BadChunk {
                hash: hex_of(&self.hash),
                index,
            });
        }
        self.store_chunk(index, data)
    }

    /// Stores a group already known to be valid.
    fn store_chunk(&mut self, index: u32, data: &[u8]) -> Result<(), StoreError> {
        if self.already_complete || self.present[index as usize] {
            return Ok(());
        }
        let store = &self.store;
        let _guard = store.lock();
        if !store.partial.contains_key(self.hash.as_bytes())? {
            return Err(StoreError::ImportCancelled(hex_of(&self.hash)));
        }
        store.chunks.insert(chunk_key(&self.hash, index), data)?;
        self.present[index as usize] = true;
        Ok(())
    }

    /// Indices of the groups still to be fetched, in order.
    pub fn missing(&self) -> Vec<u32> {
        self.present
            .iter()
            .enumerate()
            .filter(|(_, p)| !**p)
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Makes the blob visible once every group is stored, and flushes it to disk.
    pub fn finish(self) -> Result<blake3::Hash, StoreError> {
        if self.already_complete {
            return Ok(self.hash);
        }
        let missing = self.present.iter().filter(|p| !**p).count();
        if missing > 0 {
            return Err(StoreError::Incomplete {
                hash: hex_of(&self.hash),
                missing,
            });
        }
        let store = &self.store;
        let key = self.hash.as_bytes();
        {
            let _guard = store.lock();
            if !store.partial.contains_key(key)? {
                // Another import of the same blob may have finished first.
                if store.blobs.contains_key(key)? {
                    return Ok(self.hash);
                }
                return Err(StoreError::ImportCancelled(hex_of(&self.hash)));
            }
            // Every group was verified when stored; check they are all still there.
            let mut lost = 0;
            for index in 0..self.outboard.chunk_count() {
                if !store.chunks.contains_key(chunk_key(&self.hash, index))? {
                    lost += 1;
                }
            }
            if lost > 0 {
                return Err(StoreError::Incomplete {
                    hash: hex_of(&self.hash),
                    missing: lost,
                });
            }
            let encoded = self.outboard.to_bytes();
            tx_result((&store.blobs, &store.partial).transaction(|(b, p)| {
                b.insert(key, encoded.as_slice())?;
                p.remove(key)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            }))?;
        }
        // The caller will announce this blob as stored; make that survive a crash.
        store.flush()?;
        Ok(self.hash)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_is_a_cheap_shareable_handle() {
        fn send_sync_clone<T: Send + Sync + Clone>() {}
        send_sync_clone::<super::Store>();
    }
}
