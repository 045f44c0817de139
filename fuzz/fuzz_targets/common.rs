//! Builders shared by the fuzz targets: hearth values made from the fuzzer's bytes, so each
//! target also checks encode → decode on well-formed values, not only decode on noise.
#![allow(dead_code)]

use arbitrary::{Result, Unstructured};
use hearth::identity::PublicKey;
use hearth::model::receipt::{CreditBasis, CreditTerms, VerifiedBy};
use hearth::model::{Assembly, Claim, EnergyMethod, JobLimits, JobManifest, Receipt, WorkRecord};

pub fn hash(u: &mut Unstructured<'_>) -> Result<blake3::Hash> {
    Ok(blake3::Hash::from_bytes(u.arbitrary()?))
}

pub fn key(u: &mut Unstructured<'_>) -> Result<PublicKey> {
    Ok(PublicKey(u.arbitrary()?))
}

pub fn record(u: &mut Unstructured<'_>) -> Result<WorkRecord> {
    let (a, b): (u64, u64) = (u.arbitrary()?, u.arbitrary()?);
    Ok(WorkRecord {
        job: hash(u)?,
        shard: u.arbitrary()?,
        module: hash(u)?,
        input: hash(u)?,
        output: hash(u)?,
        worker: key(u)?,
        submitter: key(u)?,
        fuel: u.arbitrary()?,
        energy_mj: u.arbitrary()?,
        method: *u.choose(&[
            EnergyMethod::Rapl,
            EnergyMethod::CpuEstimate,
            EnergyMethod::Simulated,
        ])?,
        // A record never ends before it starts (the decoder refuses that).
        start_ms: a.min(b),
        end_ms: a.max(b),
        nonce: u.arbitrary()?,
    })
}

pub fn terms(u: &mut Unstructured<'_>) -> Result<CreditTerms> {
    Ok(CreditTerms {
        credited_mj: u.arbitrary()?,
        basis: *u.choose(&[
            CreditBasis::Claimed,
            CreditBasis::ReplicaReference,
            CreditBasis::HouseholdHistory,
            CreditBasis::PowerCeiling,
        ])?,
        verified_by: *u.choose(&[
            VerifiedBy::Quorum,
            VerifiedBy::TrustedSpotChecked,
            VerifiedBy::TrustedUnchecked,
        ])?,
        agreeing: u.arbitrary()?,
        replicas: u.arbitrary()?,
    })
}

pub fn claim(u: &mut Unstructured<'_>) -> Result<Claim> {
    Ok(Claim {
        record: record(u)?,
        worker_sig: u.arbitrary()?,
    })
}

pub fn receipt(u: &mut Unstructured<'_>) -> Result<Receipt> {
    Ok(Receipt {
        record: record(u)?,
        worker_sig: u.arbitrary()?,
        terms: terms(u)?,
        submitter_sig: u.arbitrary()?,
    })
}

pub fn manifest(u: &mut Unstructured<'_>) -> Result<JobManifest> {
    let n = u.int_in_range(0..=40usize)?;
    let inputs = (0..n).map(|_| hash(u)).collect::<Result<Vec<_>>>()?;
    let assembly = match u.int_in_range(0..=2u8)? {
        0 => Assembly::Concat,
        1 => Assembly::MandelbrotPng {
            width: u.arbitrary()?,
            height: u.arbitrary()?,
            tile: u.arbitrary()?,
        },
        _ => Assembly::PiEstimate,
    };
    Ok(JobManifest {
        module: hash(u)?,
        inputs,
        limits: JobLimits {
            fuel_per_shard: u.arbitrary()?,
            memory_bytes: u.arbitrary()?,
        },
        replication: u.arbitrary()?,
        assembly,
        submitter: key(u)?,
        created_ms: u.arbitrary()?,
    })
}

/// Decoding then encoding gives back exactly the input (one encoding per value), and the
/// re-encoded bytes decode to the same value.
#[macro_export]
macro_rules! canonical {
    ($ty:ty, $data:expr) => {
        if let Ok(v) = <$ty>::from_bytes($data) {
            let bytes = v.to_bytes();
            assert_eq!(
                bytes.as_slice(),
                $data,
                concat!(stringify!($ty), " accepted a non-canonical encoding")
            );
            assert_eq!(<$ty>::from_bytes(&bytes).ok().as_ref(), Some(&v));
        }
    };
}
