//! Garbage collection of the blobs a worker brings in for other households' jobs.
//!
//! A radiator fetches a job's manifest, module and inputs and stores its shard outputs; once
//! the job is closed (or declined, or dropped) nobody needs them here any more. This module
//! remembers, in sled, which job uses which blob and which blobs the worker itself brought
//! in, and deletes a blob once no recorded job uses it. Blobs the household put in the store
//! itself (its own jobs, their results, `hearth blob put`: everything stored with
//! `put_bytes` or `put_file`, before or after) are kept by the store and never deleted here. It owns the `worker/uses`, `worker/users` and `worker/fetched` trees.
//!
//! | tree             | key                | value |
//! |------------------|--------------------|-------|
//! | `worker/uses`    | job ‖ blob hash    | the job's coordinator (peer id bytes) |
//! | `worker/users`   | blob hash ‖ job    | empty |
//! | `worker/fetched` | blob hash          | empty |

use std::collections::HashMap;

use crate::store::Store;

use super::JobError;

/// Which blobs the worker's jobs use, and which of them the worker brought in.
#[derive(Clone)]
pub(crate) struct JobBlobs {
    uses: sled::Tree,
    users: sled::Tree,
    fetched: sled::Tree,
}

fn pair(a: &[u8; 32], b: &[u8; 32]) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(a);
    key[32..].copy_from_slice(b);
    key
}

impl JobBlobs {
    pub(crate) fn open(db: &sled::Db) -> Result<JobBlobs, sled::Error> {
        Ok(JobBlobs {
            uses: db.open_tree("worker/uses")?,
            users: db.open_tree("worker/users")?,
            fetched: db.open_tree("worker/fetched")?,
        })
    }

    /// Records that `job` uses `blob`; `brought_in`: the worker fetched or made it for this
    /// job (it was not in the store before), so it may be deleted once no job uses it.
    /// `coordinator` is remembered so a job whose close was missed can be asked about
    /// after a restart.
    pub(crate) fn record(
        &self,
        job: &blake3::Hash,
        coordinator: &libp2p::PeerId,
        blob: &blake3::Hash,
        brought_in: bool,
    ) -> Result<(), JobError> {
        let (job, blob) = (job.as_bytes(), blob.as_bytes());
        if brought_in {
            self.fetched.insert(blob, &[])?;
        }
        self.users.insert(pair(blob, job), &[])?;
        self.uses.insert(pair(job, blob), coordinator.to_bytes())?;
        Ok(())
    }

    /// Forgets `job` and deletes every blob the worker brought in that no other recorded
    /// job uses. Returns how many blobs were deleted. Deleting a blob a running shard is
    /// about to read makes that shard fail to load it and be retried, fetching it again.
    pub(crate) fn release(&self, store: &Store, job: &blake3::Hash) -> Result<usize, JobError> {
        let mut deleted = 0;
        for key in self.uses.scan_prefix(job.as_bytes()).keys() {
            let key = key?;
            let Ok(blob) = <[u8; 32]>::try_from(&key[32..]) else {
                // Not written by `record`: drop it.
                self.uses.remove(&key)?;
                continue;
            };
            self.users.remove(pair(&blob, job.as_bytes()))?;
            self.uses.remove(&key)?;
            if self.users.scan_prefix(blob).next().is_none() && self.fetched.remove(blob)?.is_some()
            {
                // The household's own blobs (`put_bytes`, `put_file`) are kept regardless.
                if store.delete_unless_kept(&blake3::Hash::from_bytes(blob))? {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// Every job with recorded blobs and its coordinator (asked again at start-up). As many
    /// as jobs the worker has worked and not yet released: each is released when its job
    /// closes or is dropped. Entries that do not decode are skipped.
    pub(crate) fn jobs(&self) -> Result<HashMap<blake3::Hash, libp2p::PeerId>, JobError> {
        let mut jobs = HashMap::new();
        for item in self.uses.iter() {
            let (key, value) = item?;
            let (Ok(job), Ok(coordinator)) = (
                <[u8; 32]>::try_from(&key[..32.min(key.len())]),
                libp2p::PeerId::from_bytes(&value),
            ) else {
                continue;
            };
            jobs.insert(blake3::Hash::from_bytes(job), coordinator);
        }
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_goes_when_the_last_job_using_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::test_db(dir.path()).unwrap();
        let store = Store::with_db(&db).unwrap();
        let gc = JobBlobs::open(&db).unwrap();
        let (a, b) = (blake3::hash(b"job a"), blake3::hash(b"job b"));
        let c = libp2p::PeerId::random();
        let module = store.put_bytes_unkept(b"shared module").unwrap();
        let input = store.put_bytes_unkept(b"input of a").unwrap();
        let own = store.put_bytes_unkept(b"the household's own blob").unwrap();
        let mine = store
            .put_bytes(b"also the household's, made before or after")
            .unwrap();
        gc.record(&a, &c, &mine, true).unwrap();
        gc.record(&a, &c, &module, true).unwrap();
        gc.record(&a, &c, &input, true).unwrap();
        gc.record(&a, &c, &own, false).unwrap();
        gc.record(&b, &c, &module, false).unwrap();
        assert_eq!(gc.jobs().unwrap(), HashMap::from([(a, c), (b, c)]));
        // Job a goes: its input goes, the module stays for b, the household's blob stays.
        assert_eq!(gc.release(&store, &a).unwrap(), 1);
        assert!(!store.has(&input).unwrap());
        assert!(store.has(&module).unwrap() && store.has(&own).unwrap());
        assert!(store.has(&mine).unwrap(), "a kept blob is never collected");
        // Job b goes: now the module goes too.
        assert_eq!(gc.release(&store, &b).unwrap(), 1);
        assert!(!store.has(&module).unwrap() && store.has(&own).unwrap());
        assert!(gc.jobs().unwrap().is_empty());
        // Releasing again is harmless.
        assert_eq!(gc.release(&store, &b).unwrap(), 0);
    }
}
