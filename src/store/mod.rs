//! Content store: blobs (wasm modules, shard inputs, outputs) addressed by their plain blake3
//! hash, checked in 256 KiB chunk groups against their outboard on every write and every read.
//!
//! This module owns the `store/...` sled trees and the blob directory, and nothing else; it
//! knows nothing about peers or the network. The network layer uses [`Outboard`] to check each
//! piece as it arrives and [`Store::begin_import`] to store it, so a half-finished download
//! resumes from any peer.
//!
//! # Layout
//!
//! Small blobs (at most [`INLINE_MAX`] bytes) live in sled, group by group. Larger ones, when
//! the store has a blob directory ([`Store::with_files`], which every node uses), are one plain
//! file each, written with `pwrite` at each group's offset, then `fsync` and `rename`: sled's
//! log caps a write path near 300 MiB/s, the page cache does not (`docs/storage.md` §4 has
//! the measurements). Outboards stay in sled either way.
//!
//! | tree / file     | key                                   | value                          |
//! |-----------------|---------------------------------------|--------------------------------|
//! | `store/blobs`   | hash (32 bytes)                       | outboard bytes (complete blob) |
//! | `store/partial` | hash (32 bytes)                       | outboard bytes (import underway) |
//! | `store/chunks`  | hash (32 bytes) ‖ group index (u32 BE) | chunk group bytes (small blobs) |
//! | `store/files`   | hash (32 bytes)                       | empty: the bytes are a file     |
//! | `store/kept`    | hash (32 bytes)                       | empty: stored by this node itself |
//! | `DIR/<hex>[.part]` | —                                  | a large blob's bytes (partial) |
//!
//! A blob is visible (to `has`, `get_*`, `list`, ...) exactly when it has a `store/blobs`
//! entry. That entry is written, and the `store/partial` entry removed, in one kv batch
//! (all or none after a crash, `crate::kv`), and only after every chunk group is stored and durable; so a crash leaves
//! either a resumable partial import or a complete blob, never a visible blob with holes.
//! Big-endian indices keep a blob's groups in order under a prefix scan. Stores made before
//! the blob directory existed hold every blob in sled; they are read as they are, and new
//! large blobs go to files.
//!
//! # Trust
//!
//! Nothing read back from disk is trusted: every read checks the outboard against the hash
//! (once per blob while it stays in a bounded cache) and every group against the outboard. A
//! mismatch is logged, the whole blob is removed (so it can be fetched again) and
//! [`StoreError::Corrupt`] is returned; bad bytes are never handed out. `docs/storage.md`
//! gives the byte-exact formats and a test vector.
//!
//! # Memory
//!
//! Streaming paths (`put_file`, `write_to`, `begin_import`) hold at most two chunk groups
//! (512 KiB) plus the outboard (32 bytes per group, at most 2 MiB). Blobs are capped at
//! [`MAX_BLOB_LEN`]; `get_bytes` refuses blobs above [`MAX_GET_BYTES`].

// Without the `node` feature only the outboard (a decoder of peers' bytes) is built.
#[cfg(feature = "node")]
mod db;
#[cfg(feature = "node")]
mod files;
#[cfg(feature = "node")]
mod import;
mod outboard;

#[cfg(feature = "node")]
pub use db::Store;
#[cfg(feature = "node")]
pub use files::free_bytes;
#[cfg(feature = "node")]
pub use import::Import;
pub use outboard::{Outboard, MAX_OUTBOARD_BYTES};

/// Size of a chunk group: 256 blake3 chunks, so every full group is a complete subtree of the
/// blake3 tree and can be verified on its own.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Largest blob kept in sled when the store has a blob directory (1 MiB, four groups): for
/// blobs this small a file, an `fsync` and a `rename` cost more than sled's log.
pub const INLINE_MAX: u64 = 4 * CHUNK_SIZE as u64;

/// Largest blob the store accepts (16 GiB, 65 536 groups): bounds the outboard at 2 MiB so a
/// peer cannot make us allocate without limit by announcing a huge length.
pub const MAX_BLOB_LEN: u64 = 16 * 1024 * 1024 * 1024;

/// Largest blob [`Store::get_bytes`] loads into memory (256 MiB); bigger blobs must be
/// streamed with [`Store::write_to`].
pub const MAX_GET_BYTES: u64 = 256 * 1024 * 1024;

/// What went wrong in the content store, in words a household or submitter understands.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No complete blob with this hash (lowercase hex) is stored here.
    #[error("blob {0} is not in the local store")]
    NotFound(String),
    /// Stored data failed verification; the blob has been removed and must be fetched again.
    #[error("stored blob {hash} was damaged on disk ({reason}); it has been removed and must be fetched again")]
    Corrupt {
        /// Blob hash, lowercase hex.
        hash: String,
        /// What failed verification.
        reason: String,
    },
    /// Incoming data for a chunk group did not match the outboard; nothing was stored.
    #[error("piece {index} of blob {hash} does not match the blob's hash or does not exist; it was rejected and nothing was stored")]
    BadChunk {
        /// Blob hash, lowercase hex.
        hash: String,
        /// Chunk group index.
        index: u32,
    },
    /// An outboard is malformed or does not hash up to the claimed blob hash.
    #[error("the piece list (outboard) of a blob is malformed or does not match the blob's hash")]
    BadOutboard,
    /// The blob is too large to load into memory in one piece.
    #[error("blob is {len} bytes, too large to load into memory (limit {max} bytes); stream it with write_to instead")]
    TooLarge {
        /// Blob length in bytes.
        len: u64,
        /// The in-memory limit, [`MAX_GET_BYTES`].
        max: u64,
    },
    /// The blob exceeds the largest blob the store accepts at all.
    #[error("blob of {len} bytes (or more) exceeds the largest blob hearth stores ({max} bytes)")]
    BlobTooBig {
        /// Blob length in bytes (as far as it was read).
        len: u64,
        /// The limit, [`MAX_BLOB_LEN`].
        max: u64,
    },
    /// Storing the blob would take the store past its disk quota.
    #[error("a blob of {len} bytes does not fit this radiator's store quota ({used} of {quota} bytes used); it was not fetched")]
    QuotaExceeded {
        /// Length of the refused blob.
        len: u64,
        /// Bytes stored now.
        used: u64,
        /// The quota, `[limits] store_mib`.
        quota: u64,
    },
    /// Storing the blob would leave less free space on the disk than this radiator keeps.
    #[error("a blob of {len} bytes would leave less than the {floor} bytes this radiator keeps free on its disk ({free} bytes free); it was not stored")]
    DiskLow {
        /// Length of the refused blob.
        len: u64,
        /// Bytes free on the disk when it was refused.
        free: u64,
        /// What the radiator keeps free, `[limits] disk_free_mib`.
        floor: u64,
    },
    /// A chunk group index past the end of the blob was asked for.
    #[error("blob {hash} has {count} pieces; piece {index} does not exist")]
    NoSuchChunk {
        /// Blob hash, lowercase hex.
        hash: String,
        /// Requested index.
        index: u32,
        /// Number of chunk groups of the blob.
        count: u32,
    },
    /// `finish` was called before every chunk group was stored.
    #[error("download of blob {hash} is not finished: {missing} pieces are still missing")]
    Incomplete {
        /// Blob hash, lowercase hex.
        hash: String,
        /// Number of missing chunk groups.
        missing: usize,
    },
    /// The import was removed (by `delete`) while it was under way.
    #[error("download of blob {0} was cancelled because the blob was deleted meanwhile")]
    ImportCancelled(String),
    /// A file handed to `put_file` changed between the hashing pass and the storing pass.
    #[error("file {0} changed while it was being added; add it again")]
    FileChanged(std::path::PathBuf),
    /// A file could not be opened or read.
    #[error("could not read file {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The blob's bytes are a file, but this store was opened without its blob directory.
    #[error("blob {0} is kept as a file, but the store was opened without its blob directory")]
    NoBlobDir(String),
    /// Reading from or writing to a stream failed.
    #[error("reading or writing data failed: {0}")]
    Io(#[from] std::io::Error),
    /// The local database failed.
    #[cfg(feature = "node")]
    #[error("the local database failed: {0}")]
    Db(#[from] sled::Error),
    /// A batch a crash interrupted could not be finished (`kv::open`).
    #[cfg(feature = "node")]
    #[error(transparent)]
    Intent(crate::kv::KvError),
}

/// Lowercase hex of a hash, the way hearth shows hashes to people.
#[cfg(feature = "node")]
fn hex_of(hash: &blake3::Hash) -> String {
    hash.to_hex().to_string()
}

#[cfg(feature = "node")]
impl From<crate::kv::KvError> for StoreError {
    fn from(e: crate::kv::KvError) -> StoreError {
        match e {
            crate::kv::KvError::Db(e) => StoreError::Db(e),
            e => StoreError::Intent(e),
        }
    }
}
