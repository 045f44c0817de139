//! Receipt commitments: a coordinator's signed Merkle root over the ids of the receipts it
//! countersigned in one period, and the inclusion proof that lets anyone holding one receipt
//! show, offline, that it was committed to.
//!
//! Receipts are no longer gossiped to every node (issue 14): a receipt goes to its worker and
//! stays with its coordinator; only the commitment (161 bytes, whatever the number of
//! receipts) is gossiped on `hearth/commitments/1`. A worker receives its receipt together
//! with an [`Inclusion`] and keeps both; `hearth receipts verify` checks the receipt, the
//! coordinator's signature on the commitment, and the path from the receipt's leaf to the
//! committed root.
//!
//! The tree is RFC 6962's (Certificate Transparency) with blake3 and its domain separation:
//! leaf = blake3(0x00 ‖ receipt id), node = blake3(0x01 ‖ left ‖ right); a list of n > 1
//! leaves splits at the largest power of two below n. Leaves are the receipt ids in ascending
//! byte order. `docs/receipts.md` gives the byte layouts; `docs/verify_receipt.py` checks
//! them independently. Pure data: no I/O, no clock.

use super::canon::{DecodeError, Reader, Writer};
use crate::identity::{Identity, PublicKey};

const MAGIC: &[u8; 4] = b"HCMT";
const VERSION: u8 = 1;
const PROOF_MAGIC: &[u8; 4] = b"HINC";
const PROOF_VERSION: u8 = 1;
/// Domain of the coordinator's signature over a commitment body.
pub const COMMIT_DOMAIN: &[u8] = b"hearth/commitment/v1";
/// Bytes of a commitment body (what is signed and hashed into its id).
pub const BODY_LEN: usize = 4 + 1 + 32 + 8 + 4 + 32 + 8 + 8;
/// Bytes of a signed commitment.
pub const COMMITMENT_LEN: usize = BODY_LEN + 64;
/// Most receipts one commitment covers. A coordinator with more pending seals several. Bounds
/// an inclusion path to [`MAX_PATH`] hashes.
pub const MAX_LEAVES: u32 = 1 << 16;
/// Longest audit path: log2 of [`MAX_LEAVES`].
pub const MAX_PATH: usize = 16;

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// The leaf hash of a receipt id.
pub fn leaf_hash(id: &blake3::Hash) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[LEAF_PREFIX]).update(id.as_bytes());
    *h.finalize().as_bytes()
}

/// The hash of an inner node.
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[NODE_PREFIX]).update(left).update(right);
    *h.finalize().as_bytes()
}

/// Largest power of two strictly below `n` (n ≥ 2): where RFC 6962 splits a list.
#[cfg(test)]
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 6962 MTH(D[n]), the Merkle root of leaf hashes (at least one), straight from the RFC's
/// definition: the reference [`tree_of`] is checked against.
#[cfg(test)]
fn root_of(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => [0; 32],
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// Nodes in a tree of `count` leaves, every level included: each level pairs its nodes left
/// to right and carries an odd last one up unpaired, down to the root.
fn nodes_in(count: usize) -> usize {
    let (mut total, mut len) = (0, count);
    while len > 1 {
        total += len;
        len = len.div_ceil(2);
    }
    total + len
}

/// Every node of the tree over `leaves` (at least one), level by level from the leaves up:
/// level 0 is the leaf hashes, each next level pairs the one below left to right (an odd last
/// node is carried up unpaired), the last node is the root. That is RFC 6962's tree (which
/// splits at the largest power of two below n) built from the bottom, so a leaf's audit path
/// is its sibling on each level where it has one ([`path_in`]); the property test
/// `the_tree_gives_the_rfc_root_and_paths` checks both against the RFC's definition. n − 1
/// node hashes for n leaves.
fn tree_of(leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let mut nodes = Vec::with_capacity(nodes_in(leaves.len()));
    nodes.extend_from_slice(leaves);
    let (mut start, mut len) = (0, leaves.len());
    while len > 1 {
        for i in (0..len).step_by(2) {
            let node = if i + 1 < len {
                node_hash(&nodes[start + i], &nodes[start + i + 1])
            } else {
                nodes[start + i]
            };
            nodes.push(node);
        }
        start += len;
        len = len.div_ceil(2);
    }
    nodes
}

/// The RFC 6962 audit path of leaf `index` in a tree of `count` leaves, read from the tree's
/// nodes as [`tree_of`] lays them out and [`Sealed::tree_bytes`] stores them (32 bytes each):
/// `None` when `nodes` is not exactly such a tree or `index` is past the leaves. Reads
/// log2(count) hashes, whatever the tree's size.
pub fn path_in(nodes: &[u8], count: u32, index: u32) -> Option<Vec<[u8; 32]>> {
    let count = count as usize;
    if count == 0 || count > MAX_LEAVES as usize || nodes.len() != 32 * nodes_in(count) {
        return None;
    }
    let mut m = index as usize;
    if m >= count {
        return None;
    }
    let node = |i: usize| -> Option<[u8; 32]> { nodes.get(32 * i..32 * i + 32)?.try_into().ok() };
    let mut path = Vec::new();
    let (mut start, mut len) = (0, count);
    while len > 1 {
        let sibling = m ^ 1;
        if sibling < len {
            path.push(node(start + sibling)?);
        }
        start += len;
        len = len.div_ceil(2);
        m >>= 1;
    }
    Some(path)
}

/// RFC 6962 PATH(m, D[n]) of one leaf, straight from the RFC's definition: the reference
/// [`path_in`] is checked against.
#[cfg(test)]
fn path_of(m: usize, leaves: &[[u8; 32]], out: &mut Vec<[u8; 32]>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path_of(m, &leaves[..k], out);
        out.push(root_of(&leaves[k..]));
    } else {
        path_of(m - k, &leaves[k..], out);
        out.push(root_of(&leaves[..k]));
    }
}

/// The root a leaf and its audit path lead to (RFC 9162 §2.1.3.2), or `None` when the path's
/// length does not fit `index` and `count`.
pub fn root_from_path(
    leaf: [u8; 32],
    index: u32,
    count: u32,
    path: &[[u8; 32]],
) -> Option<[u8; 32]> {
    if index >= count {
        return None;
    }
    let (mut f_n, mut s_n) = (index as u64, count as u64 - 1);
    let mut r = leaf;
    for p in path {
        if s_n == 0 {
            return None;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    (s_n == 0).then_some(r)
}

/// What went wrong with a commitment or an inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("the commitment's signature is not its coordinator's")]
    Signature,
    #[error("the commitment covers {0} receipts; a commitment covers 1 to {MAX_LEAVES}")]
    Count(u32),
    #[error("the inclusion path does not lead from this receipt to the committed root")]
    NotIncluded,
    #[error("the receipt was countersigned by {receipt}, the commitment by {commitment}")]
    WrongCoordinator { receipt: String, commitment: String },
}

/// A coordinator's signed statement: "these `count` receipts, and no others, are the ones I
/// countersigned in commitment number `seq`".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commitment {
    /// The coordinator (the submitter of the jobs), whose key countersigned the receipts.
    pub coordinator: PublicKey,
    /// Numbered from 0 per coordinator; two different commitments with one number are
    /// equivocation, provable with the two signed bodies.
    pub seq: u64,
    /// Leaves in the tree.
    pub count: u32,
    pub root: [u8; 32],
    /// Window end of the oldest and of the newest receipt covered, ms since the epoch.
    pub first_ms: u64,
    pub last_ms: u64,
    pub sig: [u8; 64],
}

impl Commitment {
    /// Seals the ids (any order; sorted here, duplicates removed) into a signed commitment
    /// and returns it with its leaves and tree ([`Sealed`]).
    pub fn seal(
        identity: &Identity,
        seq: u64,
        ids: &[blake3::Hash],
        first_ms: u64,
        last_ms: u64,
    ) -> Result<(Commitment, Sealed), CommitError> {
        let mut sorted: Vec<blake3::Hash> = ids.to_vec();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        sorted.dedup();
        let count = u32::try_from(sorted.len()).unwrap_or(u32::MAX);
        if count == 0 || count > MAX_LEAVES {
            return Err(CommitError::Count(count));
        }
        let leaves: Vec<[u8; 32]> = sorted.iter().map(leaf_hash).collect();
        let nodes = tree_of(&leaves);
        let mut c = Commitment {
            coordinator: identity.public(),
            seq,
            count,
            root: nodes[nodes.len() - 1],
            first_ms,
            last_ms,
            sig: [0; 64],
        };
        c.sig = identity.sign(&c.signed_message());
        Ok((c, Sealed { ids: sorted, nodes }))
    }

    /// The signed body.
    pub fn body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC)
            .u8(VERSION)
            .raw(&self.coordinator.0)
            .u64(self.seq)
            .u32(self.count)
            .raw(&self.root)
            .u64(self.first_ms)
            .u64(self.last_ms);
        w.into_bytes()
    }

    fn signed_message(&self) -> Vec<u8> {
        let mut m = COMMIT_DOMAIN.to_vec();
        m.extend_from_slice(&self.body());
        m
    }

    /// blake3 of the body: names the commitment.
    pub fn id(&self) -> blake3::Hash {
        blake3::hash(&self.body())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.sig);
        b
    }

    /// Decodes exactly [`COMMITMENT_LEN`] bytes. Does not check the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Commitment, DecodeError> {
        let mut r = Reader::new(bytes);
        let c = Commitment::read(&mut r)?;
        r.finish()?;
        Ok(c)
    }

    fn read(r: &mut Reader<'_>) -> Result<Commitment, DecodeError> {
        r.magic(MAGIC, "receipt commitment")?;
        let version = r.u8("commitment version")?;
        if version != VERSION {
            return Err(DecodeError::Version {
                what: "commitment",
                version,
            });
        }
        Ok(Commitment {
            coordinator: PublicKey(r.array("coordinator")?),
            seq: r.u64("seq")?,
            count: r.u32("count")?,
            root: r.array("root")?,
            first_ms: r.u64("first_ms")?,
            last_ms: r.u64("last_ms")?,
            sig: r.array("commitment signature")?,
        })
    }

    /// Checks the count bound and the coordinator's signature.
    pub fn verify(&self) -> Result<(), CommitError> {
        if self.count == 0 || self.count > MAX_LEAVES {
            return Err(CommitError::Count(self.count));
        }
        if !self.coordinator.verify(&self.signed_message(), &self.sig) {
            return Err(CommitError::Signature);
        }
        Ok(())
    }
}

/// What a seal covers: the receipt ids in ascending byte order (leaf `i` is `ids[i]`) and every
/// node of their tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub ids: Vec<blake3::Hash>,
    nodes: Vec<[u8; 32]>,
}

impl Sealed {
    /// The tree's nodes, 32 bytes each, level by level from the leaves up ([`path_in`] reads
    /// it): 2·n − 1 hashes at most for n leaves.
    pub fn tree_bytes(&self) -> &[u8] {
        self.nodes.as_flattened()
    }

    /// Each id with its leaf index and audit path, in leaf order.
    pub fn proofs(&self) -> impl Iterator<Item = (blake3::Hash, u32, Vec<[u8; 32]>)> + '_ {
        let count = self.ids.len() as u32;
        self.ids.iter().enumerate().map(move |(i, id)| {
            let path = path_in(self.tree_bytes(), count, i as u32).unwrap_or_default();
            (*id, i as u32, path)
        })
    }
}

/// A receipt's proof of inclusion: the commitment, the receipt's leaf index and audit path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inclusion {
    pub commitment: Commitment,
    pub index: u32,
    pub path: Vec<[u8; 32]>,
}

impl Inclusion {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(PROOF_MAGIC)
            .u8(PROOF_VERSION)
            .raw(&self.commitment.to_bytes())
            .u32(self.index)
            .u8(self.path.len() as u8);
        for p in &self.path {
            w.raw(p);
        }
        w.into_bytes()
    }

    /// Decodes an inclusion proof; the path is at most [`MAX_PATH`] hashes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Inclusion, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(PROOF_MAGIC, "inclusion proof")?;
        let version = r.u8("inclusion version")?;
        if version != PROOF_VERSION {
            return Err(DecodeError::Version {
                what: "inclusion proof",
                version,
            });
        }
        let commitment = Commitment::read(&mut r)?;
        let index = r.u32("leaf index")?;
        let n = r.u8("path length")? as usize;
        if n > MAX_PATH {
            return Err(DecodeError::TooLong {
                what: "inclusion path",
                len: n,
                max: MAX_PATH,
            });
        }
        let mut path = Vec::with_capacity(n);
        for _ in 0..n {
            path.push(r.array("path hash")?);
        }
        r.finish()?;
        Ok(Inclusion {
            commitment,
            index,
            path,
        })
    }

    /// Checks the commitment's signature, that its coordinator is the receipt's submitter,
    /// and that the path leads from the receipt's leaf to the committed root.
    pub fn verify(&self, receipt: &super::receipt::Receipt) -> Result<(), CommitError> {
        self.commitment.verify()?;
        if self.commitment.coordinator != receipt.record.submitter {
            return Err(CommitError::WrongCoordinator {
                receipt: receipt.record.submitter.to_hex(),
                commitment: self.commitment.coordinator.to_hex(),
            });
        }
        match root_from_path(
            leaf_hash(&receipt.id()),
            self.index,
            self.commitment.count,
            &self.path,
        ) {
            Some(root) if root == self.commitment.root => Ok(()),
            _ => Err(CommitError::NotIncluded),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<blake3::Hash> {
        (0..n as u32)
            .map(|i| blake3::hash(&i.to_le_bytes()))
            .collect()
    }

    /// Every leaf of every tree size up to 70 proves against the root, and no other leaf or
    /// index does. (The count is not bound by the path, it is bound by the signature: the
    /// verifier takes it from the signed commitment.)
    #[test]
    fn every_leaf_proves_and_nothing_else_does() {
        let id = Identity::from_seed([5; 32]);
        for n in 1..70 {
            let (c, sealed) = Commitment::seal(&id, n as u64, &ids(n), 1, 2).unwrap();
            c.verify().unwrap();
            let proofs: Vec<_> = sealed.proofs().collect();
            assert_eq!(proofs.len(), n);
            for (leaf, index, path) in &proofs {
                assert!(path.len() <= MAX_PATH);
                assert_eq!(
                    root_from_path(leaf_hash(leaf), *index, c.count, path),
                    Some(c.root),
                    "n={n} index={index}"
                );
                let other = blake3::hash(b"not committed");
                assert_ne!(
                    root_from_path(leaf_hash(&other), *index, c.count, path),
                    Some(c.root)
                );
                if n > 1 {
                    let wrong = (*index + 1) % n as u32;
                    assert_ne!(
                        root_from_path(leaf_hash(leaf), wrong, c.count, path),
                        Some(c.root),
                        "n={n} index={index} moved to {wrong}"
                    );
                }
                assert_eq!(
                    root_from_path(leaf_hash(leaf), c.count, c.count, path),
                    None
                );
            }
        }
    }

    /// A leaf can never pass for an inner node: the two hashes are domain-separated.
    #[test]
    fn leaves_and_nodes_are_domain_separated() {
        let a = blake3::hash(b"a");
        let b = blake3::hash(b"b");
        let node = node_hash(&leaf_hash(&a), &leaf_hash(&b));
        assert_ne!(leaf_hash(&blake3::Hash::from_bytes(node)), node);
        assert_ne!(leaf_hash(&a), *a.as_bytes());
    }

    #[test]
    fn tampered_commitments_fail() {
        let id = Identity::from_seed([5; 32]);
        let (c, _) = Commitment::seal(&id, 0, &ids(3), 1, 2).unwrap();
        let mut t = c.clone();
        t.seq = 1;
        assert_eq!(t.verify(), Err(CommitError::Signature));
        let mut t = c.clone();
        t.root[0] ^= 1;
        assert_eq!(t.verify(), Err(CommitError::Signature));
        assert!(Commitment::seal(&id, 0, &[], 1, 2).is_err());
        assert_eq!(c.to_bytes().len(), COMMITMENT_LEN);
    }

    proptest! {
        #[test]
        fn commitments_and_proofs_round_trip(n in 1usize..300, pick in 0usize..300, seq in any::<u64>()) {
            let id = Identity::from_seed([9; 32]);
            let (c, sealed) = Commitment::seal(&id, seq, &ids(n), 3, 4).unwrap();
            prop_assert_eq!(Commitment::from_bytes(&c.to_bytes()).unwrap(), c.clone());
            let (_, index, path) = sealed.proofs().nth(pick % n).unwrap();
            let inc = Inclusion { commitment: c, index, path };
            prop_assert_eq!(Inclusion::from_bytes(&inc.to_bytes()).unwrap(), inc);
        }

        /// The tree built from the bottom gives the RFC's root and, read back from its bytes,
        /// every leaf's RFC path, for any size (powers of two and the uneven splits between
        /// them); bytes of any other length, or an index past the leaves, give no path.
        #[test]
        fn the_tree_gives_the_rfc_root_and_paths(n in 1usize..600, cut in 1usize..64) {
            let leaves: Vec<[u8; 32]> = ids(n).iter().map(leaf_hash).collect();
            let nodes = tree_of(&leaves);
            prop_assert_eq!(nodes.len(), nodes_in(n));
            prop_assert_eq!(nodes[nodes.len() - 1], root_of(&leaves));
            let bytes = nodes.as_flattened();
            for m in 0..n {
                let mut reference = Vec::new();
                path_of(m, &leaves, &mut reference);
                prop_assert_eq!(path_in(bytes, n as u32, m as u32), Some(reference), "leaf {} of {}", m, n);
            }
            prop_assert_eq!(path_in(bytes, n as u32, n as u32), None);
            prop_assert_eq!(path_in(&bytes[..bytes.len() - cut.min(bytes.len())], n as u32, 0), None);
            prop_assert_eq!(path_in(bytes, n as u32 + 1, 0), None);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
            let _ = Commitment::from_bytes(&bytes);
            let _ = Inclusion::from_bytes(&bytes);
        }
    }
}
