//! Building job manifests: from a built-in kernel (Mandelbrot tiles, Monte Carlo pi) or from
//! any module and input files. Every blob the manifest names is put in the given store first,
//! so the manifest is complete the moment it exists.

use crate::identity::PublicKey;
use crate::kernels;
use crate::model::{now_ms, Assembly, JobLimits, JobManifest};
use crate::store::Store;

use super::JobError;

/// What to compute, before it is turned into blobs and a manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum JobSpec {
    Mandelbrot {
        width: u32,
        height: u32,
        tile: u32,
        max_iter: u32,
    },
    Pi {
        shards: u32,
        samples: u64,
        seed: u64,
    },
    Wasm {
        module: Vec<u8>,
        inputs: Vec<Vec<u8>>,
    },
}

/// The bytes a job is made of, before they are stored.
pub struct Materials {
    pub module: Vec<u8>,
    pub inputs: Vec<Vec<u8>>,
    pub assembly: Assembly,
}

/// The module, inputs and assembly of a spec.
pub fn materialise(spec: &JobSpec) -> Result<Materials, JobError> {
    let (module, inputs, assembly) = match spec {
        JobSpec::Mandelbrot {
            width,
            height,
            tile,
            max_iter,
        } => {
            if *width == 0 || *height == 0 || *tile == 0 {
                return Err(JobError::Invalid(
                    "width, height and tile must be above zero".into(),
                ));
            }
            (
                kernels::mandelbrot_wasm(),
                kernels::mandelbrot_job_inputs(*width, *height, *tile, *max_iter),
                Assembly::MandelbrotPng {
                    width: *width,
                    height: *height,
                    tile: *tile,
                },
            )
        }
        JobSpec::Pi {
            shards,
            samples,
            seed,
        } => {
            if *shards == 0 || *samples == 0 {
                return Err(JobError::Invalid(
                    "shards and samples must be above zero".into(),
                ));
            }
            (
                kernels::pi_wasm(),
                kernels::pi_job_inputs(*shards, *samples, *seed),
                Assembly::PiEstimate,
            )
        }
        JobSpec::Wasm { module, inputs } => {
            if inputs.is_empty() {
                return Err(JobError::Invalid("give at least one --input".into()));
            }
            (module.clone(), inputs.clone(), Assembly::Concat)
        }
    };
    Ok(Materials {
        module,
        inputs,
        assembly,
    })
}

/// Stores the module and inputs and returns the manifest (not yet stored or submitted).
pub fn build(
    store: &Store,
    spec: &JobSpec,
    submitter: PublicKey,
    limits: JobLimits,
    replication: u8,
) -> Result<JobManifest, JobError> {
    let Materials {
        module,
        inputs,
        assembly,
    } = materialise(spec)?;
    let module = store.put_bytes(&module)?;
    let inputs = inputs
        .iter()
        .map(|i| store.put_bytes(i))
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = JobManifest {
        module,
        inputs,
        limits,
        replication,
        assembly,
        submitter,
        created_ms: now_ms(),
    };
    manifest.validate().map_err(JobError::Invalid)?;
    Ok(manifest)
}
