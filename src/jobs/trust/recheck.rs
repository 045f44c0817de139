//! Re-running the shard a piece of fraud evidence is about, to see which claim was right.
//!
//! The same path as a worker's shard (one function for both, `jobs::inputs`), under the same
//! radiator limits: the manifest is fetched
//! (at most `MAX_MANIFEST_BYTES`) from the coordinator and must hash to the job and name the
//! coordinator as submitter; the job's memory request must be within this radiator's
//! `memory_per_shard`; the module (at most `[limits] module_bytes`) is fetched and compiled
//! under the compile limits; the input (at most `input_bytes`) is fetched; the shard runs in
//! the deterministic executor, on a blocking thread, with the manifest's fuel and memory
//! (lowered to this radiator's). Execution is bit-exact, so the output's hash and the fuel
//! decide: the winner's pair confirms the evidence, the accused's refutes it.
//!
//! Blobs brought in for a re-run are recorded under a job id of their own (`recheck_id`)
//! in the worker's garbage-collection trees (`jobs::gc`) and released when the re-run ends,
//! so they are deleted unless a job of the worker uses them too; a re-run cut short by a
//! crash is released at the next start like any job whose coordinator no longer knows it.
//! Must not touch: the coordinator, exclusions (the service decides on the result).

use crate::exec::{ExecError, Executor};
use crate::jobs::gc::JobBlobs;
use crate::jobs::inputs::{shard_limits, Inputs};
use crate::jobs::JobError;
use crate::model::evidence::Evidence;
use crate::net::Network;
use crate::store::Store;

use super::evidence::Check;

/// What a re-run needs: the same store, network and executor (with this radiator's limits)
/// as the worker.
#[derive(Clone)]
pub struct Rechecker {
    pub net: Network,
    pub store: Store,
    pub executor: Executor,
    pub(crate) blobs: JobBlobs,
}

/// The id under which a re-run's blobs are recorded for garbage collection: never a real
/// job's (a real job id is the hash of a manifest, which does not start with this domain).
pub fn recheck_id(e: &Evidence) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"hearth/recheck/v1")
        .update(e.job.as_bytes())
        .update(&e.shard.to_le_bytes());
    h.finalize()
}

impl Rechecker {
    pub fn new(
        db: &sled::Db,
        net: Network,
        store: Store,
        executor: Executor,
    ) -> Result<Rechecker, crate::jobs::JobError> {
        Ok(Rechecker {
            net,
            store,
            executor,
            blobs: JobBlobs::open(db)?,
        })
    }

    /// Re-runs the shard of `e` and says how the evidence fared. Never excludes anyone.
    pub async fn check(&self, e: &Evidence) -> Check {
        let id = recheck_id(e);
        let check = self.rerun(e, &id).await;
        let (blobs, store) = (self.blobs.clone(), self.store.clone());
        match tokio::task::spawn_blocking(move || blobs.release(&store, &id)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!("could not delete a re-run's blobs: {err}"),
            Err(err) => tracing::warn!("could not delete a re-run's blobs: {err}"),
        }
        check
    }

    /// Fetching within this radiator's limits: the worker's own path (`jobs::inputs`).
    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            net: &self.net,
            store: &self.store,
            blobs: &self.blobs,
            local_peer: self.net.local_peer_id(),
        }
    }

    async fn rerun(&self, e: &Evidence, id: &blake3::Hash) -> Check {
        match self.try_rerun(e, id).await {
            Ok(c) | Err(c) => c,
        }
    }

    async fn try_rerun(&self, e: &Evidence, id: &blake3::Hash) -> Result<Check, Check> {
        let coordinator = e.coordinator.peer_id();
        let inputs = self.inputs();
        let manifest = inputs
            .manifest(id, e.job, coordinator)
            .await
            .map_err(unchecked_or_inconclusive)?;
        let claim = &e.winning.record;
        if manifest.module != claim.module
            || manifest.inputs.get(e.shard as usize) != Some(&claim.input)
        {
            return Ok(Check::Inconclusive(
                "the job's manifest does not match the claims (module, input or submitter)".into(),
            ));
        }
        let own = self.executor.limits();
        let limits = shard_limits(&manifest, &own).map_err(unchecked_or_inconclusive)?;
        inputs
            .fetch_within(id, manifest.module, coordinator, own.module_bytes, "module")
            .await
            .map_err(unchecked_or_inconclusive)?;
        inputs
            .fetch_within(id, claim.input, coordinator, own.input_bytes, "shard input")
            .await
            .map_err(unchecked_or_inconclusive)?;
        let unchecked = |err: crate::store::StoreError| Check::Unchecked(err.to_string());
        let module = self.store.read(manifest.module).await.map_err(unchecked)?;
        let input_len = self
            .store
            .len(&claim.input)
            .map_err(unchecked)?
            .ok_or_else(|| Check::Unchecked(format!("input {} is not stored", claim.input)))?;
        let (store, input_hash) = (self.store.clone(), claim.input);
        let input = crate::exec::ShardInput::stored(input_hash, input_len, move |buffer| {
            store
                .get_into(&input_hash, buffer)
                .map_err(|e| e.to_string())
        });
        let (executor, module_hash) = (self.executor.clone(), manifest.module);
        let ran = tokio::task::spawn_blocking(move || {
            executor.run(&module_hash, &module, input, &limits)
        })
        .await
        .map_err(|err| Check::Unchecked(format!("the re-run's thread died: {err}")))?;
        let out = match ran {
            Ok(out) => out,
            Err(err) => return Ok(judge_failure(err)),
        };
        let output = blake3::hash(&out.output);
        let (l, w) = (&e.losing.record, &e.winning.record);
        Ok(if output == w.output && out.fuel == w.fuel {
            Check::Confirmed
        } else if output == l.output && out.fuel == l.fuel {
            Check::Refuted
        } else {
            Check::Inconclusive(format!(
                "the re-run gave output {} with {} fuel, which neither claim carries",
                output.to_hex(),
                out.fuel
            ))
        })
    }
}

/// Why the shard's blobs could not be had. A manifest that does not decode, hash to the job
/// or name the coordinator as submitter is the coordinator's doing: inconclusive (it proves
/// nothing about the accused). Anything else (the network, this radiator's limits, its
/// disk) depends on this node: unchecked, and the same evidence heard again is tried again.
fn unchecked_or_inconclusive(err: JobError) -> Check {
    match err {
        JobError::Invalid(why) => Check::Inconclusive(why),
        other => Check::Unchecked(other.to_string()),
    }
}

/// A re-run that did not produce an output. Deterministic failures (a trap, fuel, memory,
/// an invalid module) mean neither claim's output is the shard's: inconclusive. What depends
/// on this radiator (its limits, its wall clock, its stack, a busy compiler) says nothing
/// about the claims: unchecked.
fn judge_failure(err: ExecError) -> Check {
    match err {
        ExecError::OutOfFuel { .. }
        | ExecError::OutOfMemory { .. }
        | ExecError::Unreachable { .. }
        | ExecError::Trap { .. }
        | ExecError::Exit { .. }
        | ExecError::OutputTooLarge { .. }
        | ExecError::InvalidModule(_)
        | ExecError::ForbiddenImport { .. }
        | ExecError::BadAbi(_)
        | ExecError::HashMismatch { .. } => Check::Inconclusive(format!(
            "the re-run failed, so neither claim is right: {err}"
        )),
        other => Check::Unchecked(format!("could not re-run the shard here: {other}")),
    }
}
