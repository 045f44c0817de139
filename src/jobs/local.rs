//! `hearth run-local`: every shard of a job on this machine's worker threads, no network.
//! Useful to check a module before submitting it, and the reference the network must match.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::exec::{Executor, Limits};
use crate::model::JobManifest;
use crate::store::Store;

use super::{assemble::assemble, JobError};

/// One shard's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalShard {
    pub output: blake3::Hash,
    pub fuel: u64,
}

/// Runs every shard on `threads` threads, calling `progress` after each, and returns the
/// per-shard results and the hash of the assembled result (stored in `store`). The first
/// shard that fails stops the job with its reason.
pub fn run_local(
    store: &Store,
    executor: &Executor,
    manifest: &JobManifest,
    threads: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<(Vec<LocalShard>, blake3::Hash), JobError> {
    let module = store.get_bytes(&manifest.module)?;
    let limits = Limits {
        fuel: manifest.limits.fuel_per_shard,
        memory_bytes: manifest.limits.memory_bytes,
        ..Limits::default()
    };
    executor.prepare(&manifest.module, &module)?;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<LocalShard, JobError>>>> =
        Mutex::new((0..manifest.inputs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(input_hash) = manifest.inputs.get(i) else {
                    break;
                };
                let result = store
                    .len(input_hash)
                    .map_err(JobError::from)
                    .and_then(|len| {
                        let len = len.ok_or_else(|| {
                            JobError::Invalid(format!("input {input_hash} is not stored"))
                        })?;
                        let (store, hash) = (store.clone(), *input_hash);
                        let input = crate::exec::ShardInput::stored(hash, len, move |buffer| {
                            store.get_into(&hash, buffer).map_err(|e| e.to_string())
                        });
                        Ok(executor.run(&manifest.module, &module, input, &limits)?)
                    })
                    .and_then(|out| {
                        Ok(LocalShard {
                            output: store.put_bytes(&out.output)?,
                            fuel: out.fuel,
                        })
                    });
                let failed = result.is_err();
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(result);
                }
                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                if failed {
                    // Stop handing out shards; the job has failed.
                    next.store(usize::MAX / 2, Ordering::Relaxed);
                    break;
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| JobError::Invalid("a worker thread panicked".into()))?;
    let mut shards = Vec::with_capacity(results.len());
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Some(Ok(s)) => shards.push(s),
            Some(Err(e)) => return Err(JobError::Invalid(format!("shard {i}: {e}"))),
            None => {
                return Err(JobError::Invalid(format!(
                    "shard {i} did not run because an earlier shard failed"
                )))
            }
        }
    }
    let outputs: Vec<blake3::Hash> = shards.iter().map(|s| s.output).collect();
    let result = assemble(store, manifest, &outputs)?;
    Ok((shards, result))
}
