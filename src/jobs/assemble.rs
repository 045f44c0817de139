//! Building a job's result from its verified shard outputs: concatenation, the Mandelbrot
//! PNG, the pi estimate. Used by the coordinator (on a blocking thread) and by local runs.
//! Must not touch: the network, the coordinator's state.

use crate::kernels;
use crate::model::{Assembly, JobManifest};
use crate::store::Store;

use super::JobError;

/// Builds the job's result from the verified outputs and stores it. Returns its hash.
/// CPU- and disk-heavy (PNG encoding): call it on a blocking thread.
pub fn assemble(
    store: &Store,
    manifest: &JobManifest,
    outputs: &[blake3::Hash],
) -> Result<blake3::Hash, JobError> {
    let bytes = outputs
        .iter()
        .map(|h| store.get_bytes(h))
        .collect::<Result<Vec<_>, _>>()?;
    let result = match manifest.assembly {
        Assembly::Concat => bytes.concat(),
        Assembly::MandelbrotPng {
            width,
            height,
            tile,
        } => kernels::assemble_mandelbrot_png(width, height, tile, &bytes)
            .map_err(|e| JobError::Invalid(format!("{e}")))?,
        Assembly::PiEstimate => {
            let estimate =
                kernels::pi_estimate(&bytes).map_err(|e| JobError::Invalid(format!("{e}")))?;
            format!("{estimate}\n").into_bytes()
        }
    };
    Ok(store.put_bytes(&result)?)
}
