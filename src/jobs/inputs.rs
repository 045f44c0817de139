//! Fetching what one shard needs, within this radiator's own limits: its manifest (checked
//! against the job id and the coordinator), then its module and input, each refused before
//! any byte is fetched if it is longer than this radiator accepts. One path for the worker
//! running a leased shard (`worker/shard.rs`) and for the re-run of a shard that fraud
//! evidence is about (`trust/recheck.rs`), so a re-run is judged under exactly the rules a
//! worker follows. Must not touch: execution, claims, leases (the callers own them).

use crate::exec::{Limits, RadiatorLimits};
use crate::model::job::MAX_MANIFEST_BYTES;
use crate::model::JobManifest;
use crate::net::{NetError, Network};
use crate::store::Store;

use super::gc::JobBlobs;
use super::JobError;

/// What fetching needs, borrowed from the worker or the re-checker.
pub(crate) struct Inputs<'a> {
    pub net: &'a Network,
    pub store: &'a Store,
    pub blobs: &'a JobBlobs,
    /// This node's peer id: a blob of its own job is neither recorded nor fetched from a hint.
    pub local_peer: libp2p::PeerId,
}

impl Inputs<'_> {
    /// Fetches a blob of at most `max_len` bytes from `from` (a hint; any provider will do).
    /// A longer one is refused before any of its bytes is fetched, as beyond this radiator's
    /// limits. The blob is recorded as used by `job` (brought in if it was not held), so it
    /// is deleted once `job` is released (`jobs::gc`); not for this household's own jobs.
    pub async fn fetch_within(
        &self,
        job: &blake3::Hash,
        hash: blake3::Hash,
        from: libp2p::PeerId,
        max_len: u64,
        what: &str,
    ) -> Result<(), JobError> {
        let own_job = from == self.local_peer;
        // A blob already held (the submitter's own) is checked against the limit too.
        if let Some(len) = self.store.len(&hash)? {
            if len > max_len {
                return Err(too_big(what, len, max_len));
            }
            if !own_job {
                self.blobs.record(job, &from, &hash, false)?;
            }
            return Ok(());
        }
        // Recorded before fetching, so a blob that arrives is never left unrecorded.
        if !own_job {
            self.blobs.record(job, &from, &hash, true)?;
        }
        let hint = (!own_job).then_some(from);
        match self.net.fetch_blob_within(hash, hint, max_len).await {
            Ok(()) => Ok(()),
            Err(NetError::BlobTooLarge { len, .. }) => Err(too_big(what, len, max_len)),
            // Behind NATs that defeat hole punching (symmetric ones) a relay is the only path
            // to the submitter, and blobs never cross it: waiting would only hold the lease
            // until it expires. Declined instead (issue 11).
            Err(e @ (NetError::RelayedOnly { .. } | NetError::NoPunch { .. })) => {
                Err(JobError::RelayedOnly(format!("the {what}: {e}")))
            }
            Err(NetError::NoRoom(why)) => Err(JobError::NoRoom(format!("the {what}: {why}"))),
            Err(e) => Err(JobError::Network(format!(
                "fetching {}: {e}",
                hash.to_hex()
            ))),
        }
    }

    /// Fetches and decodes the manifest of `job` (recorded under `record`), and checks that
    /// it hashes to `job` and that `coordinator` submitted it. A manifest that does not is
    /// `JobError::Invalid`: the coordinator's doing, not this radiator's.
    pub async fn manifest(
        &self,
        record: &blake3::Hash,
        job: blake3::Hash,
        coordinator: libp2p::PeerId,
    ) -> Result<JobManifest, JobError> {
        self.fetch_within(
            record,
            job,
            coordinator,
            MAX_MANIFEST_BYTES as u64,
            "manifest",
        )
        .await?;
        let manifest = JobManifest::from_bytes(&self.store.get_bytes(&job)?)
            .map_err(|e| JobError::Invalid(format!("manifest: {e}")))?;
        if manifest.id() != job {
            return Err(JobError::Invalid(
                "the manifest does not hash to the job id".into(),
            ));
        }
        if manifest.submitter.peer_id() != coordinator {
            return Err(JobError::Invalid(
                "the manifest names another household as submitter than the node the work came from".into(),
            ));
        }
        Ok(manifest)
    }
}

/// The limits one shard of `manifest` runs under on this radiator: the manifest's fuel and
/// memory, refused (beyond this radiator's limits) when it asks for more memory per shard
/// than `own` allows. Checked as soon as the manifest is known, before anything else is
/// fetched: a manifest may ask for less, never for more.
pub(crate) fn shard_limits(
    manifest: &JobManifest,
    own: &RadiatorLimits,
) -> Result<Limits, JobError> {
    if manifest.limits.memory_bytes > own.memory_per_shard {
        return Err(JobError::BeyondLimits(format!(
            "the job asks for {} MiB of memory per shard; this radiator allows at most {} MiB",
            manifest.limits.memory_bytes >> 20,
            own.memory_per_shard >> 20
        )));
    }
    Ok(Limits {
        fuel: manifest.limits.fuel_per_shard,
        memory_bytes: manifest.limits.memory_bytes,
        ..Limits::default()
    })
}

pub(crate) fn too_big(what: &str, len: u64, max: u64) -> JobError {
    JobError::BeyondLimits(format!(
        "the {what} is {len} bytes; this radiator accepts at most {max} (it was not fetched)"
    ))
}
