//! Pure data: job manifests, work records and receipts, gossip and control messages, each
//! with one canonical byte encoding. No I/O and no knowledge of who sends what; everything
//! above (net, ledger, jobs) carries or interprets these types.

pub mod canon;
pub mod commit;
pub mod conservation;
pub mod equivocate;
pub mod evidence;
pub mod export;
pub mod job;
pub mod power;
pub mod receipt;
pub mod refusal;
pub mod revoke;
pub mod rotate;
pub mod tally;
pub mod wire;

pub use canon::DecodeError;
pub use job::{Assembly, JobLimits, JobManifest};
pub use receipt::{Claim, EnergyMethod, Receipt, WorkRecord};

/// Parses a blake3 hash written as 64 lowercase or uppercase hex digits.
pub fn parse_hash(s: &str) -> Result<blake3::Hash, String> {
    blake3::Hash::from_hex(s.trim())
        .map_err(|_| format!("{s:?} is not a blake3 hash (64 hex digits)"))
}

/// The `signed` field of a signed statement's JSON form (a revocation, a key event): its bytes.
fn signed_hex(value: &serde_json::Value) -> Result<Vec<u8>, String> {
    value["signed"]
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| "no hex \"signed\"".to_string())
}

/// Milliseconds since the Unix epoch, the time unit of every hearth message.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
