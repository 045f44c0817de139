//! The household's key log on disk and the two steps of a key rotation (`hearth key`;
//! `docs/receipts.md`, "Rotating a key"; the rules are `model::rotate`'s).
//!
//! `DATA_DIR/keys.json` holds the household's signed key events, a JSON list in order. It is
//! written whole to a temporary file, `fsync`ed and renamed over the old one, so a crash
//! leaves the old log or the new, never half of one. The next key lives wherever the
//! household keeps it, offline at best: it is asked for by path. A key retired by a rotation
//! is kept in `DATA_DIR/retired-keys/` (mode 0600), since only it can sign a revocation of
//! what it countersigned (`hearth receipts revoke --key`).
//!
//! A rotation writes, in this order: the new next key, the retired copy of the current key,
//! the log with the new event, the new key as `identity.key`. Interrupted after the log,
//! the same command again finishes it (the log already names the new key as current).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};

use crate::identity::{Identity, PublicKey};
use crate::model::rotate::{self, next_digest, KeyChains, KeyEvent};

/// The household's key log in the data directory.
pub const LOG_FILE: &str = "keys.json";
/// Where retired keys are kept, one file per key named by its public key.
pub const RETIRED_DIR: &str = "retired-keys";

/// The household's key log: empty when it keeps none. Every event is checked
/// (`KeyEvent::from_json`); a damaged log is an error naming the event.
pub fn load_log(data_dir: &Path) -> anyhow::Result<Vec<KeyEvent>> {
    let path = data_dir.join(LOG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    rotate::parse_log(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// The keys of this data directory's household, first to current, checked against its key
/// file: the log must be this key's own (its current key is `identity.key`). Without a log,
/// just the key.
pub fn own_keys(data_dir: &Path, identity: &Identity) -> anyhow::Result<Vec<PublicKey>> {
    let log = load_log(data_dir)?;
    let Some(first) = log.first() else {
        return Ok(vec![identity.public()]);
    };
    let chains = KeyChains::build(&log);
    let household = first.household;
    let keys: Vec<PublicKey> = chains.keys_of(&household).iter().map(|k| k.key).collect();
    if keys.last() != Some(&identity.public()) {
        bail!(
            "{} is the key log of household {} whose current key is {}, but {} holds key {}: \
             restore the key file that goes with the log, or move the log away",
            data_dir.join(LOG_FILE).display(),
            household.to_hex(),
            chains.current(&household).to_hex(),
            Identity::path(data_dir).display(),
            identity.public().to_hex()
        );
    }
    Ok(keys)
}

fn write_log(data_dir: &Path, events: &[KeyEvent]) -> anyhow::Result<()> {
    let path = data_dir.join(LOG_FILE);
    let tmp = data_dir.join(format!("{LOG_FILE}.tmp"));
    let list: Vec<serde_json::Value> = events.iter().map(KeyEvent::to_json).collect();
    let text = serde_json::to_string_pretty(&list)? + "\n";
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().with_context(|| format!("writing {}", path.display()))
}

/// Starts the household's key log: signs event #0 with the current key, committing to a
/// fresh next key, which is written to `next_path` (never over an existing file). Returns
/// the event.
pub fn prerotate(data_dir: &Path, next_path: &Path, now_ms: u64) -> anyhow::Result<KeyEvent> {
    let identity = Identity::load(data_dir)?;
    if !load_log(data_dir)?.is_empty() {
        bail!(
            "{} already holds this household's key log: its next key is fixed; \
             `hearth key rotate --next FILE` brings it in",
            data_dir.join(LOG_FILE).display()
        );
    }
    let next = Identity::generate();
    next.save_file(next_path, false)?;
    let event = KeyEvent::sign(identity.public(), 0, &identity, &next.public(), now_ms);
    write_log(data_dir, std::slice::from_ref(&event))?;
    Ok(event)
}

/// Rotates to the next key, read from `next_path`: it must be the key the log's last event
/// committed to. Signs the next event with it, committing to a fresh key written to
/// `new_next_path`, keeps the current key in `retired-keys/` and makes the next key the
/// data directory's. Returns the new event.
pub fn rotate(
    data_dir: &Path,
    next_path: &Path,
    new_next_path: &Path,
    now_ms: u64,
) -> anyhow::Result<KeyEvent> {
    let identity = Identity::load(data_dir)?;
    let next = Identity::load_file(next_path)?;
    let mut log = load_log(data_dir)?;
    let Some(household) = log.first().map(|e| e.household) else {
        bail!(
            "this household keeps no key log: `hearth key prerotate --next FILE` starts one \
             (a rotation needs a next key fixed in advance)"
        );
    };
    let chains = KeyChains::build(&log);
    let keys = chains.keys_of(&household);
    let current = chains.current(&household);
    // Interrupted after the log was written: finish the install.
    if current == next.public() && keys.len() >= 2 && keys[keys.len() - 2].key == identity.public()
    {
        next.save(data_dir, true)?;
        return log
            .into_iter()
            .rfind(|e| e.key == current)
            .ok_or_else(|| anyhow!("the log's current key has no event"));
    }
    if current != identity.public() {
        bail!(
            "the key log's current key is {}, but {} holds {}",
            current.to_hex(),
            Identity::path(data_dir).display(),
            identity.public().to_hex()
        );
    }
    let last = log
        .iter()
        .filter(|e| e.key == current)
        .max_by_key(|e| e.seq)
        .cloned()
        .ok_or_else(|| anyhow!("the log's current key has no event"))?;
    if next_digest(&next.public()) != last.next {
        bail!(
            "{} holds key {}, which is not the next key this household's log committed to \
             (event #{})",
            next_path.display(),
            next.public().to_hex(),
            last.seq
        );
    }
    let new_next = Identity::generate();
    new_next.save_file(new_next_path, false)?;
    let retired_dir = data_dir.join(RETIRED_DIR);
    std::fs::create_dir_all(&retired_dir)
        .with_context(|| format!("creating {}", retired_dir.display()))?;
    identity.save_file(&retired_key_path(data_dir, &identity.public()), true)?;
    let event = KeyEvent::sign(
        household,
        last.seq + 1,
        &next,
        &new_next.public(),
        now_ms.max(last.issued_ms),
    );
    log.push(event.clone());
    write_log(data_dir, &log)?;
    next.save(data_dir, true)?;
    Ok(event)
}

/// Where a retired key is kept.
pub fn retired_key_path(data_dir: &Path, key: &PublicKey) -> PathBuf {
    data_dir
        .join(RETIRED_DIR)
        .join(format!("{}.key", key.to_hex()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real files: a log started, two rotations, each next key from its file; the chain the
    /// log builds is the household's and the data directory's key is its current one. A wrong
    /// next key, a second prerotate and an interrupted rotation are handled.
    #[test]
    fn a_household_rotates_twice_through_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = Identity::generate();
        first.save(&data, false).unwrap();
        let h = first.public();
        assert_eq!(own_keys(&data, &first).unwrap(), vec![h]);
        let n1 = dir.path().join("next1.key");
        let e0 = prerotate(&data, &n1, 1_000).unwrap();
        assert_eq!((e0.seq, e0.key), (0, h));
        let again = prerotate(&data, &dir.path().join("other.key"), 1_001).unwrap_err();
        assert!(again.to_string().contains("already holds"), "{again:#}");
        // A key that is not the committed one is refused, and nothing changes.
        let stranger = dir.path().join("stranger.key");
        Identity::generate().save_file(&stranger, false).unwrap();
        let n2 = dir.path().join("next2.key");
        let err = rotate(&data, &stranger, &n2, 2_000).unwrap_err();
        assert!(err.to_string().contains("not the next key"), "{err:#}");
        assert!(!n2.exists());
        assert_eq!(Identity::load(&data).unwrap().public(), h);
        let e1 = rotate(&data, &n1, &n2, 2_000).unwrap();
        let k1 = Identity::load_file(&n1).unwrap().public();
        assert_eq!((e1.seq, e1.key, e1.household), (1, k1, h));
        assert_eq!(Identity::load(&data).unwrap().public(), k1);
        assert_eq!(
            Identity::load_file(&retired_key_path(&data, &h))
                .unwrap()
                .public(),
            h
        );
        // Interrupted after the log: the key file is still the first; running again installs.
        let n3 = dir.path().join("next3.key");
        first.save(&data, true).unwrap();
        assert!(own_keys(&data, &first).is_err());
        assert_eq!(rotate(&data, &n1, &n3, 2_500).unwrap(), e1);
        assert!(!n3.exists());
        let e2 = rotate(&data, &n2, &n3, 1_500).unwrap();
        // Never signed earlier than the event before it.
        assert_eq!(e2.issued_ms, 2_000);
        let k2 = Identity::load(&data).unwrap();
        let chain = KeyChains::build(&load_log(&data).unwrap());
        assert_eq!(chain.current(&h), k2.public());
        assert_eq!(own_keys(&data, &k2).unwrap(), vec![h, k1, k2.public()]);
        // A damaged log is named.
        std::fs::write(data.join(LOG_FILE), "[{\"format\": 1}]").unwrap();
        let err = load_log(&data).unwrap_err();
        assert!(err.to_string().contains("event 0"), "{err:#}");
    }

    #[test]
    fn rotating_without_a_log_says_how_to_start_one() {
        let dir = tempfile::tempdir().unwrap();
        Identity::generate().save(dir.path(), false).unwrap();
        let next = dir.path().join("next.key");
        Identity::generate().save_file(&next, false).unwrap();
        let err = rotate(dir.path(), &next, &dir.path().join("n2.key"), 1).unwrap_err();
        assert!(err.to_string().contains("hearth key prerotate"), "{err:#}");
    }
}
