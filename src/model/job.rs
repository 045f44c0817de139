//! Job manifests: what a submitter asks the network to compute.
//!
//! A job is a wasm module (by hash), a list of shard inputs (by hash), limits, a replication
//! factor and how to assemble the shard outputs. Its canonical bytes are specified in
//! `docs/job-format.md`; the job id is the blake3 hash of those bytes, so the manifest is
//! itself a blob in the content store under its own id.

use super::canon::{DecodeError, Reader, Writer};
use crate::identity::PublicKey;

const MAGIC: &[u8; 4] = b"HJOB";
const VERSION: u8 = 1;
/// Most shards in one job: keeps a manifest below 2.1 MiB.
pub const MAX_SHARDS: usize = 65_536;
/// Most replicas per shard a job may ask for.
pub const MAX_REPLICATION: u8 = 16;
/// Largest manifest accepted from anyone.
pub const MAX_MANIFEST_BYTES: usize = 64 + 8 + 32 + 4 + MAX_SHARDS * 32 + 64;

/// How the shard outputs become the job's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Assembly {
    /// The outputs concatenated in shard order.
    Concat,
    /// Tiles of the built-in Mandelbrot kernel assembled into a PNG.
    MandelbrotPng { width: u32, height: u32, tile: u32 },
    /// Hit counts of the built-in Monte Carlo kernel, reduced to an estimate of pi.
    PiEstimate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobLimits {
    /// Fuel (wasm operator budget) each shard may spend.
    pub fuel_per_shard: u64,
    /// Linear memory each shard may grow to, in bytes.
    pub memory_bytes: u64,
}

impl Default for JobLimits {
    fn default() -> Self {
        JobLimits {
            fuel_per_shard: 10_000_000_000,
            memory_bytes: 256 << 20,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobManifest {
    pub module: blake3::Hash,
    pub inputs: Vec<blake3::Hash>,
    pub limits: JobLimits,
    /// Agreeing claims from distinct households needed to verify a shard.
    pub replication: u8,
    pub assembly: Assembly,
    /// The household that submits (and coordinates) the job and countersigns its receipts.
    pub submitter: PublicKey,
    /// Submission time, milliseconds since the Unix epoch; makes resubmissions distinct jobs.
    pub created_ms: u64,
}

impl JobManifest {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC).u8(VERSION).hash(&self.module);
        w.u32(self.inputs.len() as u32);
        for h in &self.inputs {
            w.hash(h);
        }
        w.u64(self.limits.fuel_per_shard)
            .u64(self.limits.memory_bytes)
            .u8(self.replication);
        match self.assembly {
            Assembly::Concat => w.u8(0),
            Assembly::MandelbrotPng {
                width,
                height,
                tile,
            } => w.u8(1).u32(width).u32(height).u32(tile),
            Assembly::PiEstimate => w.u8(2),
        };
        w.raw(&self.submitter.0).u64(self.created_ms);
        w.into_bytes()
    }

    pub fn id(&self) -> blake3::Hash {
        blake3::hash(&self.to_bytes())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<JobManifest, DecodeError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(DecodeError::TooLong {
                what: "job manifest",
                len: bytes.len(),
                max: MAX_MANIFEST_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        r.magic(MAGIC, "job manifest")?;
        let version = r.u8("manifest version")?;
        if version != VERSION {
            return Err(DecodeError::Version {
                what: "job manifest",
                version,
            });
        }
        let module = r.hash("module hash")?;
        let n = r.count(MAX_SHARDS, 32, "shard inputs")?;
        let inputs = (0..n)
            .map(|_| r.hash("shard input hash"))
            .collect::<Result<Vec<_>, _>>()?;
        let limits = JobLimits {
            fuel_per_shard: r.u64("fuel per shard")?,
            memory_bytes: r.u64("memory limit")?,
        };
        let replication = r.u8("replication")?;
        let assembly = match r.u8("assembly")? {
            0 => Assembly::Concat,
            1 => Assembly::MandelbrotPng {
                width: r.u32("width")?,
                height: r.u32("height")?,
                tile: r.u32("tile")?,
            },
            2 => Assembly::PiEstimate,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "assembly",
                    tag,
                })
            }
        };
        let submitter = PublicKey(r.array("submitter key")?);
        let created_ms = r.u64("creation time")?;
        r.finish()?;
        let m = JobManifest {
            module,
            inputs,
            limits,
            replication,
            assembly,
            submitter,
            created_ms,
        };
        m.validate().map_err(|reason| DecodeError::Invalid {
            what: "job manifest",
            reason,
        })?;
        Ok(m)
    }

    /// Rules every manifest obeys, whoever built it.
    pub fn validate(&self) -> Result<(), String> {
        if self.inputs.is_empty() {
            return Err("a job needs at least one shard".into());
        }
        if self.inputs.len() > MAX_SHARDS {
            return Err(format!("a job has at most {MAX_SHARDS} shards"));
        }
        if self.replication == 0 || self.replication > MAX_REPLICATION {
            return Err(format!("replication must be 1 to {MAX_REPLICATION}"));
        }
        if self.limits.fuel_per_shard == 0 {
            return Err("fuel per shard must be above zero".into());
        }
        if self.limits.memory_bytes < 64 * 1024 || self.limits.memory_bytes > 4 << 30 {
            return Err("memory limit must be between 64 KiB and 4 GiB".into());
        }
        if let Assembly::MandelbrotPng {
            width,
            height,
            tile,
        } = self.assembly
        {
            if width == 0 || height == 0 || tile == 0 || width > 16384 || height > 16384 {
                return Err("image size must be 1..=16384 pixels a side, tile above zero".into());
            }
            let tiles = (width.div_ceil(tile) as usize) * (height.div_ceil(tile) as usize);
            if tiles != self.inputs.len() {
                return Err(format!(
                    "a {width}x{height} image in {tile}-pixel tiles has {tiles} shards, the manifest lists {}",
                    self.inputs.len()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(n: usize) -> JobManifest {
        JobManifest {
            module: blake3::hash(b"m"),
            inputs: (0..n).map(|i| blake3::hash(&[i as u8])).collect(),
            limits: JobLimits::default(),
            replication: 2,
            assembly: Assembly::Concat,
            submitter: PublicKey([7; 32]),
            created_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn id_is_hash_of_canonical_bytes() {
        let m = sample(3);
        assert_eq!(m.id(), blake3::hash(&m.to_bytes()));
        assert_eq!(JobManifest::from_bytes(&m.to_bytes()).unwrap(), m);
        let mut other = m.clone();
        other.replication = 3;
        assert_ne!(other.id(), m.id());
    }

    #[test]
    fn rejects_bad_manifests() {
        let m = sample(2);
        let mut bytes = m.to_bytes();
        bytes.push(0);
        assert!(JobManifest::from_bytes(&bytes).is_err());
        let mut zero = m.clone();
        zero.replication = 0;
        assert!(JobManifest::from_bytes(&zero.to_bytes()).is_err());
        let mut png = m.clone();
        png.assembly = Assembly::MandelbrotPng {
            width: 100,
            height: 100,
            tile: 64,
        };
        assert!(png.validate().unwrap_err().contains("4 shards"));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = JobManifest::from_bytes(&bytes);
        }

        #[test]
        fn round_trips(n in 1usize..50, fuel in 1u64.., rep in 1u8..=16, t in any::<u64>()) {
            let mut m = sample(n);
            m.limits.fuel_per_shard = fuel;
            m.replication = rep;
            m.created_ms = t;
            prop_assert_eq!(JobManifest::from_bytes(&m.to_bytes()).unwrap(), m);
        }
    }
}
