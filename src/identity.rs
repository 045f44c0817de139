//! The household identity: one ed25519 key that signs heat-work receipts and is also the
//! libp2p identity of the node, so a PeerId and a household public key name the same home.
//!
//! The key lives in `identity.key` in the data directory, as text so that a damaged file can
//! be reported by line:
//!
//! ```text
//! # hearth household key. Keep it secret: it signs your heat-work receipts.
//! ed25519-secret-key: <64 lowercase hex digits: the 32-byte secret seed>
//! ```
//!
//! The file is created with mode 0600 and never overwritten unless the caller asks (`--force`).
//! This module touches only that file; it knows nothing of the network or the ledger.
//!
//! Size: about 450 lines of code (the key file, the strict signature checks spelled out, the
//! PeerId layout); the rest are tests with fixed vectors (the small-order and torsion
//! signatures), kept beside the checks they hold.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// File name of the household key inside the data directory.
pub const KEY_FILE: &str = "identity.key";
const KEY_FIELD: &str = "ed25519-secret-key:";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite a household key (use --force to replace it, which forfeits credit tied to the old key)")]
    Exists { path: PathBuf },
    #[error("{path}:{line}: {reason}")]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: no `{KEY_FIELD}` line found; is this a hearth key file?")]
    Missing { path: PathBuf },
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
}

/// The protobuf header of an ed25519 public key in libp2p's encoding: field 1 (key type) = 1
/// (Ed25519), field 2 (data) of 32 bytes. A hearth PeerId is the identity multihash of this
/// header and the key.
#[cfg(feature = "node")]
const ED25519_PROTOBUF: [u8; 4] = [0x08, 0x01, 0x12, 0x20];

/// The multihash code of the identity "hash" (the digest is the input itself).
#[cfg(feature = "node")]
const IDENTITY_MULTIHASH: u64 = 0x00;

/// A household's public key, shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Result<PublicKey, String> {
        let bytes = hex::decode(s.trim()).map_err(|e| format!("not hex: {e}"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "a household key is 32 bytes (64 hex digits)".to_string())?;
        Ok(PublicKey(arr))
    }

    /// Verifies an ed25519 signature by this key over `msg`, strictly: the checks of
    /// [`strict_precheck`] first, then the RFC 8032 equation (`verify_strict`, which also
    /// compares the recomputed `R` with the signature's bytes). A signature therefore has one
    /// valid encoding and no key or `R` of small order can make it valid for every message.
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        // All of `strict_precheck` but decoding `R` and its small-order test, which
        // `verify_strict` makes itself (it decodes `R` and refuses one of small order): one
        // square root fewer per signature, the coordinator's hot path.
        let Ok(key) = key_and_encodings(self, sig) else {
            return false;
        };
        key.verify_strict(msg, &Signature::from_bytes(sig)).is_ok()
    }

    /// The libp2p PeerId of the node run by this household: the identity multihash of the
    /// key's protobuf encoding (the layout [`PublicKey::from_peer_id`] reads), built without
    /// decoding the point. Decoding it (a square root in the field, about 15 µs) was 2 % of
    /// the coordinator bench's CPU: the coordinator asks for the peer of every verified
    /// shard's winners. The keys asked about come from verified signatures, or the answer is
    /// compared with a PeerId a connection's handshake authenticated; 32 bytes that are no
    /// point on the curve give a PeerId that no node can hold.
    #[cfg(feature = "node")]
    pub fn peer_id(&self) -> libp2p::PeerId {
        let mut encoded = [0u8; 36];
        encoded[..4].copy_from_slice(&ED25519_PROTOBUF);
        encoded[4..].copy_from_slice(&self.0);
        let multihash = libp2p::multihash::Multihash::wrap(IDENTITY_MULTIHASH, &encoded)
            .expect("36 bytes fit a multihash of 64");
        libp2p::PeerId::from_multihash(multihash)
            .expect("an identity multihash of 36 bytes is a PeerId")
    }

    /// The household key of a peer, if the PeerId embeds an ed25519 key (hearth nodes' do).
    ///
    /// A hearth PeerId is the identity multihash of the key's protobuf encoding: field 1
    /// (type) = 1 (Ed25519), field 2 (data) = the 32 key bytes. That layout is read directly,
    /// without decoding the point: the coordinator asks this for every request it answers,
    /// and a peer's PeerId was authenticated by its connection's handshake, which already
    /// proved the key. Any other encoding goes through libp2p's full decoding.
    #[cfg(feature = "node")]
    pub fn from_peer_id(peer: &libp2p::PeerId) -> Option<PublicKey> {
        let mh = peer.as_ref();
        let digest = mh.digest();
        if mh.code() == IDENTITY_MULTIHASH && digest.len() == 36 && digest[..4] == ED25519_PROTOBUF
        {
            let mut key = [0u8; 32];
            key.copy_from_slice(&digest[4..]);
            return Some(PublicKey(key));
        }
        let pk = libp2p::identity::PublicKey::try_decode_protobuf(digest).ok()?;
        let ed = pk.try_into_ed25519().ok()?;
        Some(PublicKey(ed.to_bytes()))
    }
}

/// Why a key or signature fails the strict checks, before any curve equation is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StrictError {
    #[error("the public key is not a canonical point encoding")]
    KeyEncoding,
    #[error("the public key is a point of small order (it would verify almost anything)")]
    KeySmallOrder,
    #[error("the signature's R is not a canonical point encoding")]
    REncoding,
    #[error("the signature's R is a point of small order")]
    RSmallOrder,
    #[error("the signature's S is not below the group order L")]
    SNotCanonical,
}

/// The group order L = 2^252 + 27742317777372353535851937790883648493, little-endian.
const GROUP_ORDER_LE: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

/// Whether a 32-byte little-endian number is below `bound` (also little-endian).
fn below(value: &[u8; 32], bound: &[u8; 32]) -> bool {
    value.iter().rev().cmp(bound.iter().rev()) == std::cmp::Ordering::Less
}

/// A point encoding is canonical when its y coordinate (the low 255 bits) is below
/// p = 2^255 - 19. The only other non-canonical form, x = 0 with the sign bit set, occurs only
/// for y = 1 and y = -1, points of small order that the small-order check refuses anyway.
fn canonical_y(bytes: &[u8; 32]) -> bool {
    let mut y = *bytes;
    y[31] &= 0x7f;
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    below(&y, &p)
}

/// The strict checks of `docs/receipts.md` ("Verifying a signature"), spelled out rather than
/// left to a library's definition of strict: canonical encodings of the key `A` and of `R`,
/// neither of small order (8·P ≠ identity), and `S < L`. Returns the decoded key.
pub fn strict_precheck(key: &PublicKey, sig: &[u8; 64]) -> Result<VerifyingKey, StrictError> {
    let a = key_and_encodings(key, sig)?;
    // R decodes like a public key; `is_weak` is the small-order test on the decoded point.
    let mut r = [0u8; 32];
    r.copy_from_slice(&sig[..32]);
    let r_point = VerifyingKey::from_bytes(&r).map_err(|_| StrictError::REncoding)?;
    if r_point.is_weak() {
        return Err(StrictError::RSmallOrder);
    }
    Ok(a)
}

/// The checks of [`strict_precheck`] that need no decoding of `R`: `S < L`, the key's
/// canonical encoding, the key decoded and not of small order, and `R`'s canonical encoding.
fn key_and_encodings(key: &PublicKey, sig: &[u8; 64]) -> Result<VerifyingKey, StrictError> {
    let mut r = [0u8; 32];
    r.copy_from_slice(&sig[..32]);
    let mut s = [0u8; 32];
    s.copy_from_slice(&sig[32..]);
    if !below(&s, &GROUP_ORDER_LE) {
        return Err(StrictError::SNotCanonical);
    }
    let a = decoded(key)?;
    if !canonical_y(&r) {
        return Err(StrictError::REncoding);
    }
    Ok(a)
}

/// Household keys this thread decoded and found valid (canonical, not of small order), at
/// most [`DECODED_KEYS`] (8 in unit tests, so they reach the bound), forgotten all at once
/// when full. Decoding a key is a square root in the field, about a sixth of a strict
/// verification, and a coordinator checks the claims of the same few households over and
/// over (3 % of the coordinator bench's CPU went to decompressing points). Per thread, so no
/// lock is taken on the hot path; only keys that passed every check are kept, so a cached
/// answer is the answer decoding would give.
const DECODED_KEYS: usize = if cfg!(test) { 8 } else { 1024 };

thread_local! {
    static DECODED: std::cell::RefCell<std::collections::HashMap<[u8; 32], VerifyingKey>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// `key` decoded, if its encoding is canonical and the point not of small order.
fn decoded(key: &PublicKey) -> Result<VerifyingKey, StrictError> {
    if let Some(a) = DECODED.with(|d| d.borrow().get(&key.0).copied()) {
        return Ok(a);
    }
    if !canonical_y(&key.0) {
        return Err(StrictError::KeyEncoding);
    }
    let a = VerifyingKey::from_bytes(&key.0).map_err(|_| StrictError::KeyEncoding)?;
    if a.is_weak() {
        return Err(StrictError::KeySmallOrder);
    }
    DECODED.with(|d| {
        let mut d = d.borrow_mut();
        if d.len() >= DECODED_KEYS {
            d.clear();
        }
        d.insert(key.0, a);
    });
    Ok(a)
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The household's secret key. Cloning is deliberate and cheap; the seed never leaves memory
/// except through [`Identity::save`].
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public().to_hex())
    }
}

impl Identity {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Identity {
        let mut seed = [0u8; 32];
        // The OS RNG failing is unrecoverable and not caused by input; there is no key to make.
        getrandom::fill(&mut seed).expect("operating system randomness is unavailable");
        Identity::from_seed(seed)
    }

    pub fn from_seed(seed: [u8; 32]) -> Identity {
        Identity {
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// The same key as a libp2p keypair, so the PeerId is derived from the household key.
    #[cfg(feature = "node")]
    pub fn libp2p_keypair(&self) -> libp2p::identity::Keypair {
        let mut seed = self.key.to_bytes();
        // ed25519_from_bytes only fails on a wrong length; ours is 32 bytes by construction.
        libp2p::identity::Keypair::ed25519_from_bytes(&mut seed)
            .expect("a 32-byte seed is a valid ed25519 secret key")
    }

    #[cfg(feature = "node")]
    pub fn peer_id(&self) -> libp2p::PeerId {
        self.libp2p_keypair().public().to_peer_id()
    }

    /// Path of the key file in `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(KEY_FILE)
    }

    /// Writes the key to `data_dir/identity.key` with mode 0600. Refuses to replace an existing
    /// key unless `force`.
    pub fn save(&self, data_dir: &Path, force: bool) -> Result<PathBuf, IdentityError> {
        std::fs::create_dir_all(data_dir).map_err(|source| IdentityError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = Identity::path(data_dir);
        self.save_file(&path, force)?;
        Ok(path)
    }

    /// Writes the key, in the key file's form, to `path` with mode 0600 and `fsync`s it (a
    /// household's next key, `hearth key`). Refuses to replace an existing file unless `force`.
    pub fn save_file(&self, path: &Path, force: bool) -> Result<(), IdentityError> {
        let path = path.to_path_buf();
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true);
        if force {
            opts.create(true).truncate(true);
        } else {
            opts.create_new(true);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                IdentityError::Exists { path: path.clone() }
            } else {
                io(e)
            }
        })?;
        #[cfg(unix)]
        {
            // `mode` applies only when the file is created; a forced overwrite must tighten too.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        let text = format!(
            "# hearth household key. Keep it secret: it signs your heat-work receipts.\n\
             # Public key: {}\n{KEY_FIELD} {}\n",
            self.public().to_hex(),
            hex::encode(self.key.to_bytes())
        );
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(())
    }

    /// Reads `data_dir/identity.key`. A malformed file is reported with its line number.
    pub fn load(data_dir: &Path) -> Result<Identity, IdentityError> {
        Identity::load_file(&Identity::path(data_dir))
    }

    /// Reads a key file at any path (a household's next key, `hearth key rotate`), with the
    /// checks of [`Identity::load`].
    pub fn load_file(path: &Path) -> Result<Identity, IdentityError> {
        let path = path.to_path_buf();
        let text = std::fs::read_to_string(&path).map_err(|source| IdentityError::Io {
            path: path.clone(),
            source,
        })?;
        if let Some(mode) = exposed_mode(&path) {
            return Err(IdentityError::Permissions { path, mode });
        }
        Identity::parse(&text, &path)
    }

    fn parse(text: &str, path: &Path) -> Result<Identity, IdentityError> {
        let malformed = |line: usize, reason: &str| IdentityError::Malformed {
            path: path.to_path_buf(),
            line,
            reason: reason.to_string(),
        };
        let mut found = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some(value) = line.strip_prefix(KEY_FIELD) else {
                return Err(malformed(
                    i + 1,
                    "expected `ed25519-secret-key: <64 hex digits>`",
                ));
            };
            if found.is_some() {
                return Err(malformed(
                    i + 1,
                    "a second key line; a key file holds one key",
                ));
            }
            let bytes = hex::decode(value.trim())
                .map_err(|e| malformed(i + 1, &format!("the key is not hex ({e})")))?;
            let seed: [u8; 32] = bytes
                .try_into()
                .map_err(|_| malformed(i + 1, "the key must be 32 bytes (64 hex digits)"))?;
            found = Some(seed);
        }
        found
            .map(Identity::from_seed)
            .ok_or_else(|| IdentityError::Missing {
                path: path.to_path_buf(),
            })
    }

    /// Loads the key if present, otherwise creates one. Used by the demo and tests; `hearth
    /// node` insists on an explicit `hearth init`.
    pub fn load_or_create(data_dir: &Path) -> Result<Identity, IdentityError> {
        match Identity::load(data_dir) {
            Ok(id) => Ok(id),
            Err(IdentityError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let id = Identity::generate();
                id.save(data_dir, false)?;
                Ok(id)
            }
            Err(e) => Err(e),
        }
    }
}

/// The permission bits of a secret file (household key, API token) if its group or other users
/// can access it: such a file must be mode 0600. `None` when it is private or cannot be read.
pub fn exposed_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn round_trip_mode_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::generate();
        let path = id.save(dir.path(), false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let back = Identity::load(dir.path()).unwrap();
        assert_eq!(back.public(), id.public());
        assert_eq!(back.peer_id(), id.peer_id());
        assert!(matches!(
            Identity::generate().save(dir.path(), false),
            Err(IdentityError::Exists { .. })
        ));
        assert_eq!(Identity::load(dir.path()).unwrap().public(), id.public());
        let other = Identity::generate();
        other.save(dir.path(), true).unwrap();
        assert_eq!(Identity::load(dir.path()).unwrap().public(), other.public());
    }

    /// The PeerId built from a household key's bytes is the one libp2p derives from the
    /// node's keypair, for many keys.
    #[test]
    fn peer_id_and_public_key_name_the_same_household() {
        for _ in 0..50 {
            let id = Identity::generate();
            assert_eq!(id.public().peer_id(), id.peer_id());
            assert_eq!(PublicKey::from_peer_id(&id.peer_id()), Some(id.public()));
        }
    }

    /// The direct reading of a PeerId's key agrees with libp2p's full decoding, and PeerIds
    /// that carry no ed25519 key (a hash of another key type, a random id) name nobody.
    #[cfg(feature = "node")]
    #[test]
    fn a_peer_ids_key_is_read_as_libp2p_decodes_it() {
        for _ in 0..50 {
            let id = Identity::generate();
            let peer = id.peer_id();
            let full = libp2p::identity::PublicKey::try_decode_protobuf(peer.as_ref().digest())
                .unwrap()
                .try_into_ed25519()
                .unwrap();
            assert_eq!(
                PublicKey::from_peer_id(&peer),
                Some(PublicKey(full.to_bytes()))
            );
        }
        assert_eq!(PublicKey::from_peer_id(&libp2p::PeerId::random()), None);
        // A key too long to inline is named by its sha2-256 hash (RSA keys are).
        let hashed = libp2p::multihash::Multihash::<64>::wrap(0x12, &[7; 32]).unwrap();
        let hashed = libp2p::PeerId::from_multihash(hashed).unwrap();
        assert_eq!(PublicKey::from_peer_id(&hashed), None);
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let id = Identity::generate();
        let sig = id.sign(b"heat");
        assert!(id.public().verify(b"heat", &sig));
        assert!(!id.public().verify(b"heat!", &sig));
        assert!(!Identity::generate().public().verify(b"heat", &sig));
    }

    /// Keys decoded once answer as decoding them again would: a refused key stays refused
    /// (only valid keys are kept), a kept key still refuses a tampered message or another
    /// key's signature, and past the cache's bound (when it is forgotten) nothing changes.
    #[test]
    fn decoded_keys_answer_as_decoding_does() {
        let ids: Vec<Identity> = (0..DECODED_KEYS as u64 + 100)
            .map(|i| {
                let mut seed = [7u8; 32];
                seed[..8].copy_from_slice(&i.to_le_bytes());
                Identity::from_seed(seed)
            })
            .collect();
        for round in 0..2 {
            for (i, id) in ids.iter().enumerate() {
                let sig = id.sign(b"heat");
                assert!(id.public().verify(b"heat", &sig), "round {round}, key {i}");
                assert!(
                    !id.public().verify(b"heat!", &sig),
                    "round {round}, key {i}"
                );
                let other = &ids[(i + 1) % ids.len()];
                assert!(
                    !other.public().verify(b"heat", &sig),
                    "round {round}, key {i}"
                );
            }
            // Refused keys, each asked about twice in a row: refused the same way both times.
            for _ in 0..2 {
                assert_eq!(
                    strict_precheck(&PublicKey(FORGED_KEY), &FORGED_SIG).err(),
                    Some(StrictError::KeySmallOrder),
                    "round {round}"
                );
                let mut not_canonical = [0xff; 32];
                not_canonical[31] = 0x7f;
                assert_eq!(
                    strict_precheck(&PublicKey(not_canonical), &ids[0].sign(b"x")).err(),
                    Some(StrictError::KeyEncoding),
                    "round {round}"
                );
            }
        }
        DECODED.with(|d| assert!(d.borrow().len() <= DECODED_KEYS));
    }

    /// The small-order forgery of `docs/receipts.md`: A = R = the neutral point (encoded
    /// `01 00..00`), S = 0. The cofactorless equation [S]B = R + [k]A holds for every message,
    /// so a naive verifier accepts it; hearth's strict checks refuse it.
    pub(crate) const FORGED_KEY: [u8; 32] = {
        let mut a = [0u8; 32];
        a[0] = 1;
        a
    };
    pub(crate) const FORGED_SIG: [u8; 64] = {
        let mut s = [0u8; 64];
        s[0] = 1;
        s
    };

    #[test]
    fn small_order_forgery_passes_a_naive_verifier_and_not_ours() {
        use ed25519_dalek::Verifier;
        let naive = VerifyingKey::from_bytes(&FORGED_KEY).unwrap();
        let sig = Signature::from_bytes(&FORGED_SIG);
        for msg in [
            &b"any message"[..],
            b"",
            b"hearth/receipt/worker/v1 and more",
        ] {
            assert!(
                naive.verify(msg, &sig).is_ok(),
                "the naive check accepts it"
            );
            assert!(!PublicKey(FORGED_KEY).verify(msg, &FORGED_SIG));
        }
        assert_eq!(
            strict_precheck(&PublicKey(FORGED_KEY), &FORGED_SIG).err(),
            Some(StrictError::KeySmallOrder)
        );
        // The same small-order R under an honest key is refused for R's sake.
        let honest = Identity::from_seed([7; 32]).public();
        assert_eq!(
            strict_precheck(&honest, &FORGED_SIG).err(),
            Some(StrictError::RSmallOrder)
        );
    }

    /// Signatures by the key of seed 32 × `09` over `torsion-0` .. `torsion-15` whose `R` is
    /// r·B plus the point of order 2, S = r + k·a (made by `docs/verify_receipt.py`'s
    /// arithmetic). The cofactorless equation refuses every one; ed25519 batch verification
    /// (a random combination) accepts some of them, which is why hearth does not batch.
    const TORSION_KEY: &str = "fd1724385aa0c75b64fb78cd602fa1d991fdebf76b13c58ed702eac835e9f618";
    const TORSION_SIGS: [&str; 16] = [
        "70180a56bd154a7f10d2f3a8115b1f3866ef9d32bb7cbcbfe1387bbd2e5248ef49bd7e64de486a9f9d1972d8066bb3b09a4253e83acb9e71aa026d2243250602",
        "ee4a5146be078db7960395fe8ed0d811518262b1008ade9635165020c7bcc50982e1ca1a4cba8b158448447562231dfd3d528b2a3c6b7b441b6c57a8d44e3704",
        "0f9db3e88649bb99ca0b31d35974d3896e3eb9a0a78dbfceaa4aca3b8974e0470de8cede4d19b0a15afb9091de3c7b85efeaa3d5991ad2db453af7e2a0966909",
        "a702a06ca597ef94aa58a3a0dfa8fc8d6680fdbce95fd5075cbd78c0ccf4dcc3c00da385af22de93ee7aa07d8b6977bb62647fb46eff97e867fe6e747ebb6b0e",
        "eddf61c3d04a0830587abcc86d0f8ba8b3ef4fabe3c78cd19d05c2eac5f63952496fbbeeb5de0e6be695447631c52ccb60fe67af8be843dd79f181688321310b",
        "30417c20374eac05d7ce7ee9595be895be7d35f14fa36e039a10bbf392893cc3e0b74a644e730ca10e29dbc72ebb97a6a4353950fd5362ef80d4400d318b0506",
        "2360e4d7bef0ed612e9b32cdaa7fe57af007dd49104d26ac3a02f2c6a37667b23707eea9b269120e40792ad99e54ffcfc7b27ae1223b191ff23ba121ba2e370e",
        "2bd5e45ae2b4379d0efb6a8084a8cb4110d4c6d95dafe37fddcf12e1284f79ede6fe40fe4930501548d73e32575daff7cb3adbd396a082168e178f87b8e3e50a",
        "6036c7bf6185f65f5be62bf270b59ed181506f85c8a1a3bcc8a608d09ca91af8fed8b6dfdac3eaa352062aed5c79ca666f90a11dddb4d2341d289d08526c060d",
        "18b9da15ad06590cb7f164f0f41bfee96c3f2c26257e198fd6f89c4ecb900a9169b63bc31b7126854e65645498ed2138d5b8b3500d888de2eeac168a9048a00f",
        "282dde92394040065c6a9acdc2befd137910ac22fe988346abc6d7e9da498ce6cab99b66481d8fd9eece67208f1776d6cbc53c039fd9402092a727c2a5932b00",
        "afda006f0f9709e91c2b5d2c44520edd75a8265f06e496313ca8a701555abcee097b2188c1d61789a7842addfb903a72ffa14fe5dacadb7c567df78b694bc10a",
        "4b169031770b3a4cfd9af31d1102d38a3bc294913dcbd64b806498c3e4928bab43a910476544a4660520f257f09af604b4e9c0fae7f894a9f053a6a88afa110c",
        "ad8bd64c1d9a3aec3590a1275acfeb6e764d7194dd827435a4ee7b9c6cacb797aa925fd51463d7e66519bdd3f07de1b9c87f60c5dc13a4e6c678a7a7f8af0300",
        "5caba5ff2d33e0ef74b342136f8c7aa8f3243b9447eacc8c564cd0d40a4105e0fbefa9e6677c445a1b4fb142542c5e8127fef3895a58c9f8cfdeea486170240b",
        "0721000dd79ef86f2fd8d6bb3551c8a214deaeb8b423f225b6eb3a202361d5fcd8bec2be776da630fd265d450907a8df63c9dd9542d7f4a95e5b4682e1b14401",
    ];

    #[test]
    fn r_with_a_small_order_component_splits_batch_from_single_verification() {
        let key = PublicKey::from_hex(TORSION_KEY).unwrap();
        assert_eq!(key, Identity::from_seed([9; 32]).public());
        let mut batch_accepted = 0;
        for (i, hex) in TORSION_SIGS.iter().enumerate() {
            let sig: [u8; 64] = hex::decode(hex).unwrap().try_into().unwrap();
            let msg = format!("torsion-{i}");
            // Canonical, not of small order: only the equation itself refuses it.
            let k = strict_precheck(&key, &sig).unwrap();
            assert!(!key.verify(msg.as_bytes(), &sig), "signature {i}");
            let batch = ed25519_dalek::verify_batch(
                &[msg.as_bytes()],
                &[Signature::from_bytes(&sig)],
                &[k],
            );
            batch_accepted += usize::from(batch.is_ok());
        }
        assert!(
            batch_accepted > 0,
            "batch verification accepted none of 16 (each about even odds)"
        );
    }

    #[test]
    fn non_canonical_s_and_key_encodings_are_refused() {
        let id = Identity::from_seed([5; 32]);
        let sig = id.sign(b"heat");
        assert!(id.public().verify(b"heat", &sig));
        // S + L: the same scalar mod L, a second encoding of the same signature.
        let mut malleable = sig;
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(malleable[32 + i]) + u16::from(GROUP_ORDER_LE[i]) + carry;
            malleable[32 + i] = v as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0);
        assert!(!id.public().verify(b"heat", &malleable));
        assert_eq!(
            strict_precheck(&id.public(), &malleable).err(),
            Some(StrictError::SNotCanonical)
        );
        // y = p + 3 encodes the same point as y = 3, which is on the curve and not of small
        // order: the decoder alone accepts it, the canonical-encoding check does not.
        let mut key = [0xff; 32];
        key[0] = 0xed + 3;
        key[31] = 0x7f;
        let decoded = VerifyingKey::from_bytes(&key).expect("dalek decodes y = p + 3");
        assert!(!decoded.is_weak());
        assert_eq!(
            strict_precheck(&PublicKey(key), &sig).err(),
            Some(StrictError::KeyEncoding)
        );
        let mut r_bad = sig;
        r_bad[..32].copy_from_slice(&key);
        assert_eq!(
            strict_precheck(&id.public(), &r_bad).err(),
            Some(StrictError::REncoding)
        );
    }

    #[test]
    fn malformed_files_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = Identity::path(dir.path());
        let cases = [
            ("# c\n\ned25519-secret-key: zz\n", 3),
            ("# c\nsomething else\n", 2),
            ("ed25519-secret-key: abcd\n", 1),
        ];
        for (text, line) in cases {
            std::fs::write(&path, text).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            match Identity::load(dir.path()) {
                Err(IdentityError::Malformed { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("expected a malformed-line error, got {other:?}"),
            }
        }
        std::fs::write(&path, "# only comments\n").unwrap();
        assert!(matches!(
            Identity::load(dir.path()),
            Err(IdentityError::Missing { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = Identity::generate().save(dir.path(), false).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Identity::load(dir.path()),
            Err(IdentityError::Permissions { .. })
        ));
    }
}
