//! Running one leased shard: fetch its manifest, module and input within this radiator's own
//! limits (`jobs::inputs`, shared with the evidence re-run), wait for a turn at the gate, execute it metered, store the output and hand the
//! signed claim to the claim outbox (`claims.rs`).

use tracing::Instrument;

use tokio::sync::watch;

use crate::exec::{ExecError, ShardInput};
use crate::jobs::inputs::{shard_limits, Inputs};
use crate::model::receipt::{Claim, WorkRecord};
use crate::model::wire::{Lease, Request};

use super::{Ctx, Held};
use crate::jobs::JobError;

impl Ctx {
    /// Fetching within this radiator's limits, the path the evidence re-run takes too
    /// (`jobs::inputs`).
    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            net: &self.net,
            store: &self.store,
            blobs: &self.blobs,
            local_peer: self.local_peer,
        }
    }

    /// Runs one leased shard inside its own `shard{job, shard}` span. The span instruments the
    /// future rather than being entered: a guard held across an `.await` stays entered on the
    /// thread while other tasks run, and their lines were logged under this shard's name (the
    /// crash soak attributed claims to the wrong shards that way).
    pub(super) async fn run_shard(
        &self,
        coordinator: libp2p::PeerId,
        lease: &Lease,
        held: &watch::Receiver<Held>,
        length_ms: u64,
    ) -> Result<(), JobError> {
        let span = tracing::info_span!("shard", job = %lease.job, shard = lease.shard);
        self.run_shard_in_span(coordinator, lease, held, length_ms)
            .instrument(span)
            .await
    }

    pub(super) async fn run_shard_in_span(
        &self,
        coordinator: libp2p::PeerId,
        lease: &Lease,
        held: &watch::Receiver<Held>,
        length_ms: u64,
    ) -> Result<(), JobError> {
        let inputs = self.inputs();
        let manifest = inputs.manifest(&lease.job, lease.job, coordinator).await?;
        let input_hash = *manifest
            .inputs
            .get(lease.shard as usize)
            .ok_or_else(|| JobError::Invalid(format!("the job has no shard {}", lease.shard)))?;
        // The radiator's own limits, checked as soon as the manifest is known and before
        // anything else is fetched: a manifest may ask for less, never for more.
        let own = self.executor.limits();
        let limits = shard_limits(&manifest, &own)?;
        inputs
            .fetch_within(
                &lease.job,
                manifest.module,
                coordinator,
                own.module_bytes,
                "module",
            )
            .await?;
        // Compile (or find compiled) now, before the input is fetched and before the meter
        // starts: a module beyond this radiator's shape or compile-time limits is declined
        // here, and compiling is not shard execution. Other errors surface again from `run`
        // below and are reported as the shard's failure.
        let module = self.store.read(manifest.module).await?;
        let (executor, module_hash) = (self.executor.clone(), manifest.module);
        let (module, prepared) = tokio::task::spawn_blocking(move || {
            let prepared = executor.prepare(&module_hash, &module);
            (module, prepared)
        })
        .await
        .map_err(|e| JobError::Invalid(format!("the compile thread died: {e}")))?;
        match prepared {
            Err(e) if e.exceeds_radiator_limits() => {
                return Err(JobError::BeyondLimits(e.to_string()))
            }
            Err(e @ ExecError::CompileBusy { .. }) => return Err(e.into()),
            _ => {}
        }
        inputs
            .fetch_within(
                &lease.job,
                input_hash,
                coordinator,
                own.input_bytes,
                "shard input",
            )
            .await?;
        // A shard leased ahead waits here, ready (its module compiled, its input on disk and
        // not yet in memory), for a running one to end.
        let turn = match self.wait_turn(held).await {
            Ok(turn) => turn,
            Err(why) => {
                tracing::info!("not starting the shard: {why}");
                return Ok(());
            }
        };
        if let Err(why) = self.ready_to_run(coordinator, lease, held, length_ms).await {
            tracing::info!("not starting the shard: {why}");
            return Ok(());
        }
        if self.config.fakes_failure() {
            let request = Request::Failure {
                job: lease.job,
                shard: lease.shard,
                nonce: lease.nonce,
                reason: "test fault: this radiator pretends the shard failed".into(),
            };
            self.ask(coordinator, request).await?;
            return Ok(());
        }
        // Read only once the run is admitted: the radiator's memory budget counts the inputs
        // of running shards (`Executor::admit`), and shards held ahead or waiting for memory
        // hold none.
        let input_len = self
            .store
            .len(&input_hash)?
            .ok_or_else(|| JobError::Invalid(format!("input {input_hash} is not stored")))?;
        let store = self.store.clone();
        let input = ShardInput::stored(input_hash, input_len, move |buffer| {
            store
                .get_into(&input_hash, buffer)
                .map_err(|e| e.to_string())
        });
        let (executor, meter, module_hash) =
            (self.executor.clone(), self.meter.clone(), manifest.module);
        let stall = self.config.stall();
        // The meter's window is exactly the execution: fetching, queueing, waiting for memory
        // and claiming are not shard energy, and the receipt records this window.
        let outcome = tokio::task::spawn_blocking(move || {
            let admitted = executor.admit(&module_hash, &module, input, &limits)?;
            let mark = meter.start_shard();
            if !stall.is_zero() {
                std::thread::sleep(stall);
            }
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| admitted.run()));
            // Finished whatever the outcome, so a trap or a panic does not leave a shard
            // counted as executing. A shard that ran is charged by the CPU time it used
            // (`EnergyMeter::finish_shard`), so a replica descheduled on a busy machine claims
            // what its partner claims for the same work.
            let busy = match &ran {
                Ok(Ok(out)) => Some(out.cpu_time),
                _ => None,
            };
            let energy = meter.finish_shard(mark, busy);
            match ran {
                Ok(ran) => ran.map(|out| (out, energy)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
        .await;
        // The slot is free for a shard held ahead while this one is verified and claimed.
        drop(turn);
        let outcome =
            outcome.map_err(|e| JobError::Invalid(format!("the shard thread died: {e}")))?;
        let (mut out, energy) = match outcome {
            Ok(ran) => ran,
            // Beyond this radiator (module shape, compile time): not the shard's fault.
            Err(e) if e.exceeds_radiator_limits() => {
                return Err(JobError::BeyondLimits(e.to_string()))
            }
            // Earlier over-long compilations still running here, or the input could not be
            // read from this radiator's store: not the shard's fault; try again later.
            Err(e @ (ExecError::CompileBusy { .. } | ExecError::InputUnreadable(_))) => {
                return Err(e.into())
            }
            Err(e) => {
                tracing::info!("shard failed: {e}");
                let request = Request::Failure {
                    job: lease.job,
                    shard: lease.shard,
                    nonce: lease.nonce,
                    reason: e.to_string(),
                };
                self.ask(coordinator, request).await?;
                return Ok(());
            }
        };
        self.config.forge(&mut out.output);
        let fuel = out.fuel;
        // An output for another household's job is not this household's to keep: it goes
        // with the job (`jobs::gc`). For its own jobs the household keeps it. The output
        // holds its part of the radiator's memory budget until it is stored and dropped.
        let own_job = coordinator == self.local_peer;
        let output_hash = self
            .store
            .blocking(move |store| {
                if own_job {
                    store.put_bytes(&out.output)
                } else {
                    store.put_bytes_unkept(&out.output)
                }
            })
            .await?;
        if !own_job {
            self.blobs
                .record(&lease.job, &coordinator, &output_hash, true)?;
        }
        if let Err(e) = self.net.provide(output_hash).await {
            tracing::debug!("could not advertise output: {e}");
        }
        let record = WorkRecord {
            job: lease.job,
            shard: lease.shard,
            module: manifest.module,
            input: input_hash,
            output: output_hash,
            worker: self.identity.public(),
            submitter: manifest.submitter,
            fuel: self.config.claimed_fuel(fuel),
            energy_mj: self.config.claimed_energy(energy.energy_mj),
            method: energy.method,
            start_ms: energy.start_ms,
            end_ms: energy.end_ms,
            nonce: lease.nonce,
        };
        if let Some(why) = held.borrow().refused.clone() {
            tracing::info!("shard done but its lease was not renewed ({why}); no claim");
            return Ok(());
        }
        let claim =
            Claim::sign(record, &self.identity).map_err(|e| JobError::Invalid(e.to_string()))?;
        // Stored durably first, then sent; kept until the coordinator answers (`claims.rs`).
        self.claim(coordinator, claim, held).await
    }
}
