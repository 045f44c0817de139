//! The [`Store`] handle: where each blob's bytes live (sled or a file of the blob directory),
//! verified reads, deletes and the quota.
//!
//! Owns the `store/blobs`, `store/partial`, `store/chunks`, `store/kept` and `store/files`
//! trees (layout in the parent module doc) and the blob directory; must not touch any other
//! tree of a shared `Db`. Imports (writes) are in `import.rs`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sled::Tree;

use super::files::{read_at, Files};
use super::import::Import;
use super::outboard::read_full;
use super::{hex_of, Outboard, StoreError, CHUNK_SIZE, MAX_BLOB_LEN, MAX_GET_BYTES};

const BLOBS_TREE: &str = "store/blobs";
const PARTIAL_TREE: &str = "store/partial";
const CHUNKS_TREE: &str = "store/chunks";
const KEPT_TREE: &str = "store/kept";
const FILES_TREE: &str = "store/files";

/// Sub-directory of [`Store::open`]'s directory holding the large blobs.
const OPEN_FILES_DIR: &str = "files";

/// Bytes of chaining values the cache of verified outboards may hold (4 MiB: the outboards
/// of 32 GiB of blobs); past it the cache is emptied and refilled on demand.
const CACHE_CV_BYTES: usize = 4 << 20;

/// What the store knows about a complete blob once its entry was read and verified.
#[derive(Debug)]
pub(crate) struct Meta {
    pub(crate) outboard: Outboard,
    /// Its bytes are a file of the blob directory (else groups in `store/chunks`).
    pub(crate) in_file: bool,
}

/// Verified outboards of complete blobs, so serving the pieces of a 1 GiB blob does not walk
/// its 4 096-leaf tree once per piece. Bounded by [`CACHE_CV_BYTES`].
#[derive(Default)]
struct Cache {
    map: HashMap<blake3::Hash, Arc<Meta>>,
    cv_bytes: usize,
}

/// Cheap, cloneable handle on the content store (sled trees are reference counted).
///
/// Create one `Store` per sled `Db` and clone it: the lock that orders imports against
/// deletes lives in the handle, so two independent `Store`s on one `Db` would not see each
/// other's lock.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: sled::Db,
    pub(crate) blobs: Tree,
    pub(crate) partial: Tree,
    pub(crate) chunks: Tree,
    /// Blobs this node stored itself with `put_bytes` / `put_file` (the household's own
    /// data): [`Store::delete_unless_kept`] never removes them.
    kept: Tree,
    /// Blobs (complete or partial) whose bytes are a file of the blob directory.
    pub(crate) in_files: Tree,
    /// The blob directory; `None` keeps every blob in sled ([`Store::with_db`]).
    pub(crate) files: Option<Arc<Files>>,
    /// Serialises the structural steps (start of an import, making a blob visible,
    /// deleting) so a delete cannot interleave with them and leave a visible blob with
    /// missing groups or orphan groups nobody will clean up. Hashing happens outside it.
    lock: Arc<Mutex<()>>,
    /// Writes to several trees at once go in one kv batch (all or none after a crash).
    pub(crate) kv: crate::kv::Kv,
    /// Most bytes of blobs (complete and partial) an import from a peer may bring the store
    /// to; `u64::MAX` (the default) means no quota. Shared by every clone of the handle.
    quota: Arc<AtomicU64>,
    /// Bytes a new blob must leave free on the disk of the blob directory; 0 (the default)
    /// checks nothing. Shared by every clone of the handle.
    floor: Arc<AtomicU64>,
    cache: Arc<Mutex<Cache>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

pub(crate) fn chunk_key(hash: &blake3::Hash, index: u32) -> [u8; 36] {
    let mut key = [0u8; 36];
    key[..32].copy_from_slice(hash.as_bytes());
    key[32..].copy_from_slice(&index.to_be_bytes());
    key
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutex here guards data no panic can leave half-changed (`()` or a cache that is
    // only ever replaced whole), so a poisoned one is still good.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store {
    /// Opens (or creates) a store in `dir`: the sled database in `dir` itself, large blobs
    /// as files in `dir/files`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = crate::kv::open(dir)?;
        Store::with_files(&db, &dir.join(OPEN_FILES_DIR))
    }

    /// Uses the store's own `store/...` trees inside a `Db` shared with other subsystems,
    /// with no blob directory: every blob, whatever its size, is kept in sled. For tests and
    /// tools; a node uses [`Store::with_files`].
    pub fn with_db(db: &sled::Db) -> Result<Store, StoreError> {
        Ok(Store {
            db: db.clone(),
            blobs: db.open_tree(BLOBS_TREE)?,
            partial: db.open_tree(PARTIAL_TREE)?,
            chunks: db.open_tree(CHUNKS_TREE)?,
            kept: db.open_tree(KEPT_TREE)?,
            in_files: db.open_tree(FILES_TREE)?,
            files: None,
            lock: Arc::new(Mutex::new(())),
            kv: crate::kv::Kv::open(db)?,
            quota: Arc::new(AtomicU64::new(u64::MAX)),
            floor: Arc::new(AtomicU64::new(0)),
            cache: Arc::new(Mutex::new(Cache::default())),
        })
    }

    /// Like [`Store::with_db`], with blobs over [`super::INLINE_MAX`] bytes kept as plain
    /// files in `dir` (created if needed). Blobs stored in sled before (every blob of a store
    /// made before the blob directory existed) stay there and stay readable. Files in `dir`
    /// that no entry refers to (left by a crash) are removed here.
    pub fn with_files(db: &sled::Db, dir: &Path) -> Result<Store, StoreError> {
        let mut store = Store::with_db(db)?;
        let files = Files::open(dir).map_err(|source| StoreError::File {
            path: dir.to_path_buf(),
            source,
        })?;
        for hash in files.hashes()? {
            let key = hash.as_bytes();
            if !store.blobs.contains_key(key)? && !store.partial.contains_key(key)? {
                tracing::info!(hash = %hex_of(&hash), "removing a blob file nothing refers to");
                files.remove(&hash)?;
            }
        }
        store.files = Some(Arc::new(files));
        Ok(store)
    }

    /// Sets the disk quota: an import from a peer ([`Store::begin_import`]) that would take
    /// the blobs stored past `bytes` is refused with [`StoreError::QuotaExceeded`]. Blobs
    /// this node creates itself (`put_bytes`, `put_file`) count towards it but are not
    /// refused. Applies to every clone of this handle.
    pub fn set_quota(&self, bytes: u64) {
        self.quota.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn quota(&self) -> u64 {
        self.quota.load(Ordering::Relaxed)
    }

    /// Sets the free space every new blob must leave on the disk (`[limits] disk_free_mib`):
    /// a blob whose bytes would leave less is refused with [`StoreError::DiskLow`] before any
    /// of them is written, whoever stores it (a peer's blob is then not fetched; the node's
    /// own is refused with the reason). What it keeps free is room for the node's records
    /// (leases, claims, receipts): a radiator never fills its disk with blobs, and sled never
    /// meets a full disk through them (docs/storage.md, "A flush sled never finishes").
    /// Checked only with a blob directory ([`Store::with_files`], every node); applies to
    /// every clone of this handle.
    pub fn set_disk_floor(&self, bytes: u64) {
        self.floor.store(bytes, Ordering::Relaxed);
    }

    /// Bytes free on the disk of the blob directory now (`None` without one, or if the
    /// filesystem cannot be asked), and the floor the store keeps free there.
    pub fn disk_room(&self) -> (Option<u64>, u64) {
        let free = self
            .files
            .as_ref()
            .and_then(|f| super::files::free_bytes(f.dir()));
        (free, self.floor.load(Ordering::Relaxed))
    }

    /// Refuses a new blob of `len` bytes that would leave less than the floor free. The free
    /// space is read from the filesystem now, so it counts what other programs wrote. Imports
    /// that start at the same moment may each pass before any wrote: the floor (256 MiB by
    /// default) absorbs a few of the blobs a radiator fetches (inputs of at most 256 MiB,
    /// modules of 64 MiB), not several of the largest the store accepts.
    pub(crate) fn check_disk_floor(&self, len: u64) -> Result<(), StoreError> {
        match self.disk_room() {
            (Some(free), floor) if floor > 0 && free < floor.saturating_add(len) => {
                Err(StoreError::DiskLow { len, free, floor })
            }
            _ => Ok(()),
        }
    }

    /// Bytes of blob data stored, complete blobs and partial imports at their full length
    /// (what they take once finished), in sled and in files alike. Reads every outboard:
    /// linear in the number of blobs.
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.lock)
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
        let import = self.start_import(&hash, &outboard, false)?;
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
        let import = self.start_import(&hash, &outboard, false)?;
        file.seek(SeekFrom::Start(0)).map_err(file_err)?;
        let mut buf = vec![0u8; CHUNK_SIZE];
        let missing = import.missing();
        let mut missing = missing.iter().peekable();
        for index in 0..outboard.chunk_count() {
            let want = outboard.chunk_len(index);
            let got = read_full(&mut file, &mut buf[..want]).map_err(file_err)?;
            if got != want {
                return Err(StoreError::FileChanged(path.to_path_buf()));
            }
            if missing.next_if_eq(&&index).is_some() {
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
        let meta = self.require_meta(hash)?;
        if meta.outboard.len > MAX_GET_BYTES {
            return Err(StoreError::TooLarge {
                len: meta.outboard.len,
                max: MAX_GET_BYTES,
            });
        }
        // Bounded by MAX_GET_BYTES just above. A zeroed allocation this large is fresh
        // pages, zeroed by the kernel as they are first written.
        let mut out = vec![0; meta.outboard.len as usize];
        self.fill(hash, &meta, &mut out)?;
        Ok(out)
    }

    /// Reads the whole blob into `out`, which must be exactly its length, verifying every
    /// piece where it ends up: how a shard's input goes straight into its linear memory,
    /// with no buffer between. On an error `out` holds part of the blob (the piece that
    /// failed unverified) and must not be used.
    pub fn get_into(&self, hash: &blake3::Hash, out: &mut [u8]) -> Result<(), StoreError> {
        let meta = self.require_meta(hash)?;
        if meta.outboard.len != out.len() as u64 {
            return Err(StoreError::Io(std::io::Error::other(format!(
                "blob {} is {} bytes, not the {} asked for",
                hex_of(hash),
                meta.outboard.len,
                out.len()
            ))));
        }
        self.fill(hash, &meta, out)
    }

    /// Reads and verifies every group of a blob where it ends up in `out` (its length).
    fn fill(&self, hash: &blake3::Hash, meta: &Meta, out: &mut [u8]) -> Result<(), StoreError> {
        let source = self.source(hash, meta)?;
        for index in 0..meta.outboard.chunk_count() {
            let start = index as usize * CHUNK_SIZE;
            let group = &mut out[start..start + meta.outboard.chunk_len(index)];
            self.fill_chunk(hash, meta, &source, index, group)?;
        }
        Ok(())
    }

    /// Runs `work` on this store on the blocking pool: how async code reads or writes a blob.
    /// A blob may be hundreds of MB, and hashing and moving it on the runtime would stall
    /// every task sharing the thread (the network's among them) meanwhile.
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| {
                StoreError::Io(std::io::Error::other(format!("the store work died: {e}")))
            })?
    }

    /// [`Store::get_bytes`] for async code, on the blocking pool ([`Store::blocking`]).
    pub async fn read(&self, hash: blake3::Hash) -> Result<Vec<u8>, StoreError> {
        self.blocking(move |store| store.get_bytes(&hash)).await
    }

    /// Streams the blob into `w` one verified chunk group at a time; returns the length.
    ///
    /// If a group fails verification midway, `w` has already received the verified groups
    /// before it: on error, discard what was written.
    pub fn write_to(&self, hash: &blake3::Hash, w: &mut dyn Write) -> Result<u64, StoreError> {
        let meta = self.require_meta(hash)?;
        self.stream(hash, &meta, w)?;
        Ok(meta.outboard.len)
    }

    fn stream(
        &self,
        hash: &blake3::Hash,
        meta: &Meta,
        w: &mut dyn Write,
    ) -> Result<(), StoreError> {
        let source = self.source(hash, meta)?;
        let mut buf = Vec::with_capacity(CHUNK_SIZE);
        for index in 0..meta.outboard.chunk_count() {
            buf.clear();
            self.load_chunk(hash, meta, &source, index, &mut buf)?;
            w.write_all(&buf)?;
        }
        Ok(())
    }

    /// Whether a complete blob with this hash is stored (partial imports do not count).
    pub fn has(&self, hash: &blake3::Hash) -> Result<bool, StoreError> {
        Ok(self.blobs.contains_key(hash.as_bytes())?)
    }

    /// Length of a complete blob, or `None` if it is not stored.
    pub fn len(&self, hash: &blake3::Hash) -> Result<Option<u64>, StoreError> {
        Ok(self.meta(hash)?.map(|m| m.outboard.len))
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
        self.forget(hash);
        self.kept.remove(key)?;
        // Under the store's lock (the caller holds it): nothing writes these keys meanwhile.
        let (blob, partial) = (self.blobs.get(key)?, self.partial.get(key)?);
        let existed = blob.is_some() || partial.is_some();
        let mut batch = self.kv.batch();
        batch.remove(&self.blobs, key);
        batch.remove(&self.partial, key);
        batch.commit()?;
        // The entries are gone first, so a crash below leaves only orphans, which the next
        // open (files) or the prefix sweep of the next delete (groups) removes.
        if let Some(files) = &self.files {
            files.remove(hash)?;
        }
        self.in_files.remove(key)?;
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

    /// Drops `hash` from the cache of verified outboards.
    fn forget(&self, hash: &blake3::Hash) {
        let mut cache = lock(&self.cache);
        if let Some(m) = cache.map.remove(hash) {
            cache.cv_bytes = cache.cv_bytes.saturating_sub(32 * m.outboard.cvs.len());
        }
    }

    /// The verified outboard of a complete blob, or `None` if it is not stored.
    pub fn outboard(&self, hash: &blake3::Hash) -> Result<Option<Outboard>, StoreError> {
        Ok(self.meta(hash)?.map(|m| m.outboard.clone()))
    }

    /// The verified entry of a complete blob (from the cache when it is there).
    pub(crate) fn meta(&self, hash: &blake3::Hash) -> Result<Option<Arc<Meta>>, StoreError> {
        if let Some(m) = lock(&self.cache).map.get(hash) {
            return Ok(Some(m.clone()));
        }
        let Some(bytes) = self.blobs.get(hash.as_bytes())? else {
            return Ok(None);
        };
        let outboard = match Outboard::from_bytes(&bytes) {
            Ok(ob) if ob.verify(hash) => ob,
            _ => return Err(self.corrupt(hash, "its piece list is damaged".into())),
        };
        let meta = Arc::new(Meta {
            outboard,
            in_file: self.in_files.contains_key(hash.as_bytes())?,
        });
        // Under the lock, so a delete that ran meanwhile is seen and nothing stale is cached.
        let _guard = self.lock();
        if self.blobs.contains_key(hash.as_bytes())? {
            let mut cache = lock(&self.cache);
            let bytes = 32 * meta.outboard.cvs.len();
            if cache.cv_bytes + bytes > CACHE_CV_BYTES {
                cache.map.clear();
                cache.cv_bytes = 0;
            }
            if bytes <= CACHE_CV_BYTES && cache.map.insert(*hash, meta.clone()).is_none() {
                cache.cv_bytes += bytes;
            }
        }
        Ok(Some(meta))
    }

    fn require_meta(&self, hash: &blake3::Hash) -> Result<Arc<Meta>, StoreError> {
        self.meta(hash)?
            .ok_or_else(|| StoreError::NotFound(hex_of(hash)))
    }

    /// One chunk group of a complete blob, verified (e.g. to serve it to a peer).
    pub fn read_chunk(&self, hash: &blake3::Hash, index: u32) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        self.read_chunks(hash, index, 1, &mut out)?;
        Ok(out)
    }

    /// Appends `count` consecutive chunk groups of a complete blob, from `first`, to `out`,
    /// each verified. A range running past the end is [`StoreError::NoSuchChunk`]; on any
    /// error `out` may hold part of the range and must be discarded.
    pub fn read_chunks(
        &self,
        hash: &blake3::Hash,
        first: u32,
        count: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        let meta = self.require_meta(hash)?;
        let groups = meta.outboard.chunk_count();
        let end = first.saturating_add(count.max(1));
        if end > groups {
            return Err(StoreError::NoSuchChunk {
                hash: hex_of(hash),
                index: end - 1,
                count: groups,
            });
        }
        let source = self.source(hash, &meta)?;
        for index in first..end {
            self.load_chunk(hash, &meta, &source, index, out)?;
        }
        Ok(())
    }

    /// Where a complete blob's groups are read from: its open file, or sled.
    fn source(&self, hash: &blake3::Hash, meta: &Meta) -> Result<Option<File>, StoreError> {
        if !meta.in_file {
            return Ok(None);
        }
        let Some(files) = &self.files else {
            return Err(StoreError::NoBlobDir(hex_of(hash)));
        };
        match files.open_complete(hash) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(self.corrupt(hash, "its file is missing".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Appends one verified group of a complete blob to `out`; removes the blob if it is bad.
    fn load_chunk(
        &self,
        hash: &blake3::Hash,
        meta: &Meta,
        source: &Option<File>,
        index: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        let start = out.len();
        out.resize(start + meta.outboard.chunk_len(index), 0);
        let filled = self.fill_chunk(hash, meta, source, index, &mut out[start..]);
        if filled.is_err() {
            out.truncate(start);
        }
        filled
    }

    /// Reads one group of a complete blob into `group` (exactly its length) and verifies it;
    /// removes the blob if it is bad. On error `group` holds no verified data.
    fn fill_chunk(
        &self,
        hash: &blake3::Hash,
        meta: &Meta,
        source: &Option<File>,
        index: u32,
        group: &mut [u8],
    ) -> Result<(), StoreError> {
        debug_assert_eq!(group.len(), meta.outboard.chunk_len(index));
        match source {
            Some(file) => {
                let offset = index as u64 * CHUNK_SIZE as u64;
                match read_at(file, group, offset) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return Err(self.corrupt(hash, format!("piece {index} is missing")));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => match self.chunks.get(chunk_key(hash, index))? {
                Some(stored) if stored.len() == group.len() => group.copy_from_slice(&stored),
                Some(_) => {
                    return Err(self.corrupt(hash, format!("piece {index} has the wrong length")))
                }
                None => return Err(self.corrupt(hash, format!("piece {index} is missing"))),
            },
        }
        if !meta.outboard.verify_chunk(hash, index, group) {
            return Err(self.corrupt(hash, format!("piece {index} does not match its hash")));
        }
        Ok(())
    }

    /// Logs a damaged blob, removes it so it can be fetched again, and builds the error.
    pub(crate) fn corrupt(&self, hash: &blake3::Hash, reason: String) -> StoreError {
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
    /// This may hash up to the whole blob: call it off any task that must stay responsive.
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

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_is_a_cheap_shareable_handle() {
        fn send_sync_clone<T: Send + Sync + Clone>() {}
        send_sync_clone::<super::Store>();
        send_sync_clone::<super::Import>();
    }
}
