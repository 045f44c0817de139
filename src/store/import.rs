//! Writing blobs: [`Import`]s, resumable group by group, into sled or into a file of the blob
//! directory, made visible only once complete and durable.
//!
//! Owns the write path of the trees and files listed in the parent module doc; reads and
//! deletes are in `db.rs`.

use std::fs::File;
use std::sync::{Arc, Mutex};

use super::db::{chunk_key, Store};
use super::files::{read_at, write_at};
use super::{hex_of, Outboard, StoreError, CHUNK_SIZE, INLINE_MAX};

/// A blob being imported group by group, e.g. while it downloads from peers.
///
/// Cheap to clone and safe to share between threads: groups may be stored concurrently
/// (each clone writes through the same state), which is how the network layer verifies and
/// writes pieces on the blocking pool while the swarm task keeps receiving.
///
/// Dropping an `Import` keeps what it stored: [`Store::begin_import`] with the same hash
/// resumes it, even after a restart. [`Store::delete`] abandons it.
#[derive(Clone)]
pub struct Import {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    hash: blake3::Hash,
    outboard: Outboard,
    /// One flag per group; bounded by the outboard, itself bounded by `MAX_BLOB_LEN`.
    present: Mutex<Vec<bool>>,
    /// The blob was already complete when the import began; there is nothing to do.
    already_complete: bool,
    /// The partial file, when the blob goes to the blob directory.
    file: Option<File>,
}

impl std::fmt::Debug for Import {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Import")
            .field("hash", &hex_of(&self.inner.hash))
            .field("len", &self.inner.outboard.len)
            .field("missing", &self.missing().len())
            .finish()
    }
}

impl Store {
    /// [`Store::begin_import`] for an outboard already known to match `hash`.
    /// `quota`: refuse a new import that would take the store past its quota.
    pub(crate) fn start_import(
        &self,
        hash: &blake3::Hash,
        outboard: &Outboard,
        quota: bool,
    ) -> Result<Import, StoreError> {
        let count = outboard.chunk_count() as usize;
        let key = hash.as_bytes();
        let in_file;
        {
            let _guard = self.lock();
            if self.blobs.contains_key(key)? {
                return Ok(Import::new(
                    self,
                    hash,
                    outboard,
                    vec![true; count],
                    true,
                    None,
                ));
            }
            let resuming = self.partial.contains_key(key)?;
            // A new import must fit the quota and leave the disk floor free; one being resumed is
            // already counted.
            let quota = if quota { self.quota() } else { u64::MAX };
            if quota != u64::MAX && !resuming {
                let used = self.usage()?;
                if used.saturating_add(outboard.len) > quota {
                    return Err(StoreError::QuotaExceeded {
                        len: outboard.len,
                        used,
                        quota,
                    });
                }
            }
            if !resuming {
                self.check_disk_floor(outboard.len)?;
            }
            // Where the bytes go is decided once, when the import starts: a resumed import
            // keeps its place even if the store was reopened with another configuration.
            in_file = if resuming {
                self.in_files.contains_key(key)?
            } else {
                self.files.is_some() && outboard.len > INLINE_MAX
            };
            if in_file && !resuming {
                self.in_files.insert(key, &[])?;
            }
            let encoded = outboard.to_bytes();
            // Two valid outboards for one hash would be a blake3 collision, so a different
            // stored one can only be damaged: replace it.
            if self.partial.get(key)?.as_deref() != Some(&encoded[..]) {
                self.partial.insert(key, encoded)?;
            }
        }
        let mut present = vec![false; count];
        let file = if in_file {
            let files = self
                .files
                .as_ref()
                .ok_or_else(|| StoreError::NoBlobDir(hex_of(hash)))?;
            let (file, existed) = files.open_partial(hash, outboard.len)?;
            if existed {
                // Re-verify what an earlier attempt wrote, outside the lock: plain hashing.
                // Groups never written read as zeros (a sparse file) and fail here.
                let mut buf = vec![0u8; CHUNK_SIZE];
                for index in 0..count as u32 {
                    let len = outboard.chunk_len(index);
                    let offset = index as u64 * CHUNK_SIZE as u64;
                    if read_at(&file, &mut buf[..len], offset).is_ok()
                        && outboard.verify_chunk(hash, index, &buf[..len])
                    {
                        present[index as usize] = true;
                    }
                }
            }
            Some(file)
        } else {
            // Re-verify what an earlier attempt stored, outside the lock: plain hashing.
            for index in 0..count as u32 {
                let key = chunk_key(hash, index);
                let Some(group) = self.chunks.get(key)? else {
                    continue;
                };
                if outboard.verify_chunk(hash, index, &group) {
                    present[index as usize] = true;
                } else {
                    tracing::warn!(hash = %hex_of(hash), index, "dropping damaged piece of an interrupted download");
                    self.chunks.remove(key)?;
                }
            }
            None
        };
        Ok(Import::new(self, hash, outboard, present, false, file))
    }
}

impl Import {
    fn new(
        store: &Store,
        hash: &blake3::Hash,
        outboard: &Outboard,
        present: Vec<bool>,
        already_complete: bool,
        file: Option<File>,
    ) -> Import {
        Import {
            inner: Arc::new(Inner {
                store: store.clone(),
                hash: *hash,
                outboard: outboard.clone(),
                present: Mutex::new(present),
                already_complete,
                file,
            }),
        }
    }

    /// The blob's hash.
    pub fn hash(&self) -> blake3::Hash {
        self.inner.hash
    }

    /// The blob's verified outboard.
    pub fn outboard(&self) -> &Outboard {
        &self.inner.outboard
    }

    fn present(&self) -> std::sync::MutexGuard<'_, Vec<bool>> {
        // Only ever set flag by flag: a panic elsewhere cannot leave it half-changed.
        self.inner
            .present
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Verifies group `index` against the outboard and stores it. Bad data gives
    /// [`StoreError::BadChunk`] and stores nothing. Storing a group twice is harmless.
    /// Costs one hash of the group and one write: call it off tasks that must stay
    /// responsive.
    pub fn put_chunk(&self, index: u32, data: &[u8]) -> Result<(), StoreError> {
        let inner = &self.inner;
        if !inner.outboard.verify_chunk(&inner.hash, index, data) {
            return Err(StoreError::BadChunk {
                hash: hex_of(&inner.hash),
                index,
            });
        }
        self.store_chunk(index, data)
    }

    /// Stores a group already known to be valid.
    pub(crate) fn store_chunk(&self, index: u32, data: &[u8]) -> Result<(), StoreError> {
        let inner = &self.inner;
        if inner.already_complete || self.present().get(index as usize) != Some(&false) {
            return Ok(());
        }
        let store = &inner.store;
        let key = inner.hash.as_bytes();
        match &inner.file {
            Some(file) => {
                if !store.partial.contains_key(key)? {
                    return Err(StoreError::ImportCancelled(hex_of(&inner.hash)));
                }
                // Outside the lock: a delete that runs now unlinks the file, so this write
                // lands in a file nobody will read, and `finish` sees the import cancelled.
                write_at(file, data, index as u64 * CHUNK_SIZE as u64)?;
            }
            None => {
                let _guard = store.lock();
                if !store.partial.contains_key(key)? {
                    return Err(StoreError::ImportCancelled(hex_of(&inner.hash)));
                }
                store.chunks.insert(chunk_key(&inner.hash, index), data)?;
            }
        }
        self.present()[index as usize] = true;
        Ok(())
    }

    /// Whether group `index` is stored.
    pub fn has_chunk(&self, index: u32) -> bool {
        self.present().get(index as usize) == Some(&true)
    }

    /// Indices of the groups still to be stored, in order.
    pub fn missing(&self) -> Vec<u32> {
        self.present()
            .iter()
            .enumerate()
            .filter(|(_, p)| !**p)
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Makes the blob visible once every group is stored, after making it durable (file:
    /// `fsync`, rename, `fsync` of the directory; then the sled entry, flushed). Costs a
    /// disk flush: call it off tasks that must stay responsive.
    pub fn finish(&self) -> Result<blake3::Hash, StoreError> {
        let inner = &self.inner;
        if inner.already_complete {
            return Ok(inner.hash);
        }
        let missing = self.missing().len();
        if missing > 0 {
            return Err(StoreError::Incomplete {
                hash: hex_of(&inner.hash),
                missing,
            });
        }
        let store = &inner.store;
        let key = inner.hash.as_bytes();
        if let Some(file) = &inner.file {
            // The long part (writing the data back) outside the lock.
            file.sync_data()?;
        }
        {
            let _guard = store.lock();
            if !store.partial.contains_key(key)? {
                // Another import of the same blob may have finished first.
                if store.blobs.contains_key(key)? {
                    return Ok(inner.hash);
                }
                return Err(StoreError::ImportCancelled(hex_of(&inner.hash)));
            }
            match (&inner.file, &store.files) {
                (Some(file), Some(files)) => files.commit(&inner.hash, file)?,
                (Some(_), None) => return Err(StoreError::NoBlobDir(hex_of(&inner.hash))),
                (None, _) => {
                    // Every group was verified when stored; check they are all still there.
                    let mut lost = 0;
                    for index in 0..inner.outboard.chunk_count() {
                        if !store.chunks.contains_key(chunk_key(&inner.hash, index))? {
                            lost += 1;
                        }
                    }
                    if lost > 0 {
                        return Err(StoreError::Incomplete {
                            hash: hex_of(&inner.hash),
                            missing: lost,
                        });
                    }
                }
            }
            let encoded = inner.outboard.to_bytes();
            let mut batch = store.kv.batch();
            batch.insert(&store.blobs, key, encoded.as_slice());
            batch.remove(&store.partial, key);
            batch.commit()?;
        }
        // The caller will announce this blob as stored; make that survive a crash.
        store.flush()?;
        Ok(inner.hash)
    }
}
