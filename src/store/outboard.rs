//! The outboard of a blob: the chaining values of its 256 KiB chunk groups, and how to check
//! them against the blob's plain blake3 hash.
//!
//! Owns only hashing and the outboard byte format; it touches neither disk nor network, so it
//! can be used by the network layer to check pieces as they arrive. `docs/storage.md`
//! specifies the format byte for byte.

use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, HasherExt};
use blake3::hazmat::{ChainingValue, Mode};
use std::io::Read;

use super::{StoreError, CHUNK_SIZE, MAX_BLOB_LEN};

/// Format version written as the first byte of [`Outboard::to_bytes`].
const OUTBOARD_VERSION: u8 = 1;
/// Version byte plus the little-endian `u64` blob length.
const HEADER_LEN: usize = 1 + 8;

/// Largest encoded outboard we accept: the outboard of a [`MAX_BLOB_LEN`] blob.
pub const MAX_OUTBOARD_BYTES: usize = HEADER_LEN + 32 * (MAX_BLOB_LEN / CHUNK_SIZE as u64) as usize;

/// Number of chunk groups of a blob of `len` bytes: at least one, even for the empty blob.
pub(crate) fn group_count(len: u64) -> u64 {
    if len <= CHUNK_SIZE as u64 {
        1
    } else {
        len.div_ceil(CHUNK_SIZE as u64)
    }
}

/// Chaining values of a blob's chunk groups, in order, plus the blob length.
///
/// For a blob of at most one group (`len <= CHUNK_SIZE`, including the empty blob) `cvs` is
/// `[root hash]`: a lone group is the root of the blake3 tree and has no chaining value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outboard {
    /// Length of the blob in bytes.
    pub len: u64,
    /// One 32-byte chaining value per chunk group (or the root hash for a single group).
    pub cvs: Vec<[u8; 32]>,
}

impl Outboard {
    /// Computes the outboard of `data`, which is held in memory in full.
    pub fn compute(data: &[u8]) -> Outboard {
        let len = data.len() as u64;
        if data.len() <= CHUNK_SIZE {
            return Outboard {
                len,
                cvs: vec![*blake3::hash(data).as_bytes()],
            };
        }
        let cvs = data
            .chunks(CHUNK_SIZE)
            .enumerate()
            .map(|(i, group)| group_cv(i as u64, group))
            .collect();
        Outboard { len, cvs }
    }

    /// Computes the outboard of everything `reader` yields, holding at most two chunk groups
    /// in memory. Fails with [`StoreError::BlobTooBig`] past [`MAX_BLOB_LEN`].
    pub fn compute_reader(reader: &mut dyn Read) -> Result<Outboard, StoreError> {
        let mut current = vec![0u8; CHUNK_SIZE];
        let mut next = vec![0u8; CHUNK_SIZE];
        let mut current_len = read_full(reader, &mut current)?;
        let mut cvs = Vec::new();
        let mut len = current_len as u64;
        loop {
            // Whether a group is the root (single group) or a subtree can only be known once
            // we have looked at what follows it, hence the one-group look-ahead.
            let next_len = read_full(reader, &mut next)?;
            if next_len == 0 {
                if cvs.is_empty() {
                    return Ok(Outboard {
                        len,
                        cvs: vec![*blake3::hash(&current[..current_len]).as_bytes()],
                    });
                }
                cvs.push(group_cv(cvs.len() as u64, &current[..current_len]));
                return Ok(Outboard { len, cvs });
            }
            cvs.push(group_cv(cvs.len() as u64, &current[..current_len]));
            len += next_len as u64;
            if len > MAX_BLOB_LEN {
                return Err(StoreError::BlobTooBig {
                    len,
                    max: MAX_BLOB_LEN,
                });
            }
            std::mem::swap(&mut current, &mut next);
            current_len = next_len;
        }
    }

    /// Number of chunk groups (at least 1, even for the empty blob).
    ///
    /// Saturates at `u32::MAX` for lengths no valid outboard can have.
    pub fn chunk_count(&self) -> u32 {
        u32::try_from(group_count(self.len)).unwrap_or(u32::MAX)
    }

    /// Length in bytes of chunk group `index`: `CHUNK_SIZE` except for the last one.
    /// Returns 0 for an index past the end.
    pub fn chunk_len(&self, index: u32) -> usize {
        let start = index as u64 * CHUNK_SIZE as u64;
        if index >= self.chunk_count() {
            return 0;
        }
        // At most CHUNK_SIZE, so the conversion cannot truncate.
        (self.len - start).min(CHUNK_SIZE as u64) as usize
    }

    /// The root hash this outboard hashes up to, or `None` if it is malformed (wrong number of
    /// chaining values for `len`, or `len` above [`MAX_BLOB_LEN`]).
    pub fn root(&self) -> Option<blake3::Hash> {
        if !self.well_formed() {
            return None;
        }
        if self.cvs.len() == 1 {
            return Some(blake3::Hash::from_bytes(self.cvs[0]));
        }
        let left_len = left_subtree_len(self.len);
        let left_groups = (left_len / CHUNK_SIZE as u64) as usize;
        let left = subtree_cv(&self.cvs[..left_groups], left_len);
        let right = subtree_cv(&self.cvs[left_groups..], self.len - left_len);
        Some(merge_subtrees_root(&left, &right, Mode::Hash))
    }

    /// Whether this outboard hashes up to `root`. Cost: one compression per chunk group.
    ///
    /// This proves every chaining value and the number of groups, but not the exact byte
    /// length inside the last group: blake3 commits to that only through the last group's
    /// data. A `len` that is off inside the last group therefore passes here, and then that
    /// group can never pass [`Outboard::verify_chunk`], so no wrong blob can ever complete.
    pub fn verify(&self, root: &blake3::Hash) -> bool {
        self.root().as_ref() == Some(root)
    }

    /// Whether `data` is chunk group `index` of the blob.
    ///
    /// This trusts `self.cvs`: check the outboard once with [`Outboard::verify`] before
    /// checking groups against it (doing it here would cost a full tree walk per group).
    pub fn verify_chunk(&self, root: &blake3::Hash, index: u32, data: &[u8]) -> bool {
        if !self.well_formed() || index >= self.chunk_count() || data.len() != self.chunk_len(index)
        {
            return false;
        }
        if self.cvs.len() == 1 {
            return blake3::hash(data) == *root && self.cvs[0] == *root.as_bytes();
        }
        // Comparing chaining values is not secret-dependent, a plain comparison is fine.
        group_cv(index as u64, data) == self.cvs[index as usize]
    }

    /// Encodes as `version (1 byte) ‖ len (u64 LE) ‖ cvs (32 bytes each)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 32 * self.cvs.len());
        out.push(OUTBOARD_VERSION);
        out.extend_from_slice(&self.len.to_le_bytes());
        for cv in &self.cvs {
            out.extend_from_slice(cv);
        }
        out
    }

    /// Decodes [`Outboard::to_bytes`] output. Strict: the version must be known, `len` at most
    /// [`MAX_BLOB_LEN`], and the number of chaining values exactly what `len` implies. The
    /// size is checked before anything is allocated.
    pub fn from_bytes(b: &[u8]) -> Result<Outboard, StoreError> {
        if b.len() < HEADER_LEN + 32 || b.len() > MAX_OUTBOARD_BYTES || b[0] != OUTBOARD_VERSION {
            return Err(StoreError::BadOutboard);
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&b[1..HEADER_LEN]);
        let len = u64::from_le_bytes(len_bytes);
        if len > MAX_BLOB_LEN {
            return Err(StoreError::BadOutboard);
        }
        let body = &b[HEADER_LEN..];
        if body.len() as u64 != 32 * group_count(len) {
            return Err(StoreError::BadOutboard);
        }
        let cvs = body
            .chunks_exact(32)
            .map(|c| {
                let mut cv = [0u8; 32];
                cv.copy_from_slice(c);
                cv
            })
            .collect();
        Ok(Outboard { len, cvs })
    }

    /// Length within bounds and one chaining value per group.
    fn well_formed(&self) -> bool {
        self.len <= MAX_BLOB_LEN && self.cvs.len() as u64 == group_count(self.len)
    }
}

/// Chaining value of chunk group `index` hashed as a non-root subtree at its offset.
///
/// `data` must be non-empty and at most `CHUNK_SIZE`; callers guarantee this because only
/// blobs of two or more groups use chaining values, and none of their groups is empty.
fn group_cv(index: u64, data: &[u8]) -> ChainingValue {
    blake3::Hasher::new()
        .set_input_offset(index * CHUNK_SIZE as u64)
        .update(data)
        .finalize_non_root()
}

/// Non-root chaining value of the subtree made of `cvs`, covering `len` bytes.
///
/// Splits exactly as blake3 does (`left_subtree_len`), so the left part is always a whole
/// power-of-two number of groups. Recursion depth is log2 of the group count (at most 16).
fn subtree_cv(cvs: &[[u8; 32]], len: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let left_len = left_subtree_len(len);
    let left_groups = (left_len / CHUNK_SIZE as u64) as usize;
    let left = subtree_cv(&cvs[..left_groups], left_len);
    let right = subtree_cv(&cvs[left_groups..], len - left_len);
    merge_subtrees_non_root(&left, &right, Mode::Hash)
}

/// Fills `buf` from `reader` until it is full or the reader is exhausted; returns the count.
pub(crate) fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn root_matches_blake3_at_group_boundaries() {
        for len in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            2 * CHUNK_SIZE,
            3 * CHUNK_SIZE + 7,
            4 * CHUNK_SIZE,
            5 * CHUNK_SIZE + 1,
        ] {
            let data = pattern(len);
            let ob = Outboard::compute(&data);
            assert_eq!(ob.root(), Some(blake3::hash(&data)), "len {len}");
            let streamed = Outboard::compute_reader(&mut &data[..]).expect("in-memory read");
            assert_eq!(streamed, ob, "len {len}");
            for i in 0..ob.chunk_count() {
                let start = i as usize * CHUNK_SIZE;
                let group = &data[start..start + ob.chunk_len(i)];
                assert!(ob.verify_chunk(&blake3::hash(&data), i, group));
            }
        }
    }

    #[test]
    fn chunk_len_past_end_is_zero() {
        let ob = Outboard::compute(&pattern(CHUNK_SIZE + 1));
        assert_eq!(ob.chunk_count(), 2);
        assert_eq!(ob.chunk_len(1), 1);
        assert_eq!(ob.chunk_len(2), 0);
    }
}
