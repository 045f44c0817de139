//! Messages of the blob protocol `/hearth/blob/1`: explicit big-endian byte layouts, no
//! serialisation framework, every length checked before use.
//!
//! Each message travels inside one length-prefixed frame (see `docs/protocol.md`), capped at
//! [`MAX_BLOB_REQUEST`] / [`MAX_BLOB_RESPONSE`] bytes. This module is pure: it decodes
//! untrusted bytes into typed messages or an error, and never panics on any input.
//!
//! ```text
//! request  0x01 hash[32]                         get outboard
//!          0x02 hash[32] index:u32               get chunk `index`
//!          0x03 hash[32] first:u32 count:u16     get chunks `first..first+count` (1..=8)
//! response 0x01 len:u64 count:u32 cv[32]*count   outboard (blob length, chunk-group CVs)
//!          0x02 data[..]                         chunk bytes (rest of the frame; for a range,
//!                                                the groups one after the other)
//!          0x03                                  not found / not held
//!          0x04 code:u8                          error: 1 malformed, 2 busy, 3 internal
//! ```

use crate::store::{CHUNK_SIZE, MAX_BLOB_LEN};

/// Largest blob request frame (bytes).
pub const MAX_BLOB_REQUEST: usize = 64;
/// Most chaining values an outboard response can carry: one per chunk group of the largest
/// blob the store accepts (16 GiB / 256 KiB = 65 536).
pub const MAX_OUTBOARD_CVS: usize = (MAX_BLOB_LEN / CHUNK_SIZE as u64) as usize;
/// Most chunk groups one range request may ask for: 8 groups (2 MiB), so a range response
/// (2 MiB + 1) fits the frame limit the largest outboard already set.
pub const MAX_RANGE_GROUPS: u16 = 8;
/// Largest blob response frame (bytes): the largest outboard (2 MiB + 13), which is bigger
/// than a range response (2 MiB + 1) and a chunk response (256 KiB + 1).
pub const MAX_BLOB_RESPONSE: usize = 13 + 32 * MAX_OUTBOARD_CVS;
/// Largest data of a chunk response: a full range.
const MAX_CHUNK_DATA: usize = MAX_RANGE_GROUPS as usize * CHUNK_SIZE;

const REQ_OUTBOARD: u8 = 0x01;
const REQ_CHUNK: u8 = 0x02;
const REQ_RANGE: u8 = 0x03;
const RESP_OUTBOARD: u8 = 0x01;
/// First byte of a chunk response; the data follows (see [`chunk_data`]).
pub(crate) const RESP_CHUNK: u8 = 0x02;
const RESP_NOT_FOUND: u8 = 0x03;
const RESP_ERROR: u8 = 0x04;

/// A request for part of a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobRequest {
    /// The outboard (length and chunk-group chaining values) of blob `hash`.
    Outboard { hash: [u8; 32] },
    /// Chunk `index` (of [`CHUNK_SIZE`] bytes, the last one shorter) of blob `hash`.
    Chunk { hash: [u8; 32], index: u32 },
    /// Chunks `first..first + count` of blob `hash`, `count` in `1..=MAX_RANGE_GROUPS`,
    /// answered by one chunk response holding them one after the other. A server that does
    /// not know this request answers `Malformed`; ask it chunk by chunk.
    Range {
        hash: [u8; 32],
        first: u32,
        count: u16,
    },
}

/// Why a peer refused a blob request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobErrorCode {
    /// The request could not be decoded.
    Malformed,
    /// Too many requests from this peer (or in total) in flight; retry later.
    Busy,
    /// The server's store failed.
    Internal,
    /// A code this version does not know.
    Other(u8),
}

impl BlobErrorCode {
    fn to_byte(self) -> u8 {
        match self {
            BlobErrorCode::Malformed => 1,
            BlobErrorCode::Busy => 2,
            BlobErrorCode::Internal => 3,
            BlobErrorCode::Other(b) => b,
        }
    }

    fn from_byte(b: u8) -> Self {
        match b {
            1 => BlobErrorCode::Malformed,
            2 => BlobErrorCode::Busy,
            3 => BlobErrorCode::Internal,
            b => BlobErrorCode::Other(b),
        }
    }
}

/// An answer to a [`BlobRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobResponse {
    /// Blob length and the chaining values of its chunk groups.
    Outboard { len: u64, cvs: Vec<[u8; 32]> },
    /// The bytes of the requested chunk.
    Chunk(Vec<u8>),
    /// The peer does not hold the (complete) blob.
    NotFound,
    /// The peer refused.
    Error(BlobErrorCode),
}

/// A blob message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty message")]
    Empty,
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    #[error("message of type {kind:#04x} has {got} bytes, expected {expected}")]
    BadLength {
        kind: u8,
        got: usize,
        expected: usize,
    },
    #[error("outboard lists {0} chunk groups, over the limit of {MAX_OUTBOARD_CVS}")]
    TooManyCvs(usize),
    #[error("message of {0} bytes is over the frame limit")]
    TooLarge(usize),
    #[error("range of {0} chunk groups; 1 to {MAX_RANGE_GROUPS} may be asked at once")]
    BadRange(u16),
}

/// The data of a chunk response frame, borrowed (the download path hands the frame on
/// without copying it): `None` if `frame` is not a well-formed chunk response.
pub fn chunk_data(frame: &[u8]) -> Option<&[u8]> {
    match frame.split_first() {
        Some((&RESP_CHUNK, data)) if data.len() <= MAX_CHUNK_DATA => Some(data),
        _ => None,
    }
}

fn hash_at(b: &[u8]) -> [u8; 32] {
    let mut h = [0u8; 32];
    h.copy_from_slice(&b[..32]);
    h
}

impl BlobRequest {
    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            BlobRequest::Outboard { hash } => {
                let mut v = Vec::with_capacity(33);
                v.push(REQ_OUTBOARD);
                v.extend_from_slice(hash);
                v
            }
            BlobRequest::Chunk { hash, index } => {
                let mut v = Vec::with_capacity(37);
                v.push(REQ_CHUNK);
                v.extend_from_slice(hash);
                v.extend_from_slice(&index.to_be_bytes());
                v
            }
            BlobRequest::Range { hash, first, count } => {
                let mut v = Vec::with_capacity(39);
                v.push(REQ_RANGE);
                v.extend_from_slice(hash);
                v.extend_from_slice(&first.to_be_bytes());
                v.extend_from_slice(&count.to_be_bytes());
                v
            }
        }
    }

    /// Decode untrusted bytes. Exact lengths only: trailing bytes are an error.
    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        if b.len() > MAX_BLOB_REQUEST {
            return Err(WireError::TooLarge(b.len()));
        }
        let (&kind, rest) = b.split_first().ok_or(WireError::Empty)?;
        let expect = |n: usize| {
            if rest.len() == n {
                Ok(())
            } else {
                Err(WireError::BadLength {
                    kind,
                    got: b.len(),
                    expected: n + 1,
                })
            }
        };
        match kind {
            REQ_OUTBOARD => {
                expect(32)?;
                Ok(BlobRequest::Outboard {
                    hash: hash_at(rest),
                })
            }
            REQ_CHUNK => {
                expect(36)?;
                let mut idx = [0u8; 4];
                idx.copy_from_slice(&rest[32..36]);
                Ok(BlobRequest::Chunk {
                    hash: hash_at(rest),
                    index: u32::from_be_bytes(idx),
                })
            }
            REQ_RANGE => {
                expect(38)?;
                let mut first = [0u8; 4];
                first.copy_from_slice(&rest[32..36]);
                let count = u16::from_be_bytes([rest[36], rest[37]]);
                if count == 0 || count > MAX_RANGE_GROUPS {
                    return Err(WireError::BadRange(count));
                }
                Ok(BlobRequest::Range {
                    hash: hash_at(rest),
                    first: u32::from_be_bytes(first),
                    count,
                })
            }
            other => Err(WireError::UnknownType(other)),
        }
    }
}

impl BlobResponse {
    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            BlobResponse::Outboard { len, cvs } => {
                let mut v = Vec::with_capacity(13 + 32 * cvs.len());
                v.push(RESP_OUTBOARD);
                v.extend_from_slice(&len.to_be_bytes());
                // Encoders only ever hold outboards decoded or built within the limit.
                v.extend_from_slice(&(cvs.len() as u32).to_be_bytes());
                for cv in cvs {
                    v.extend_from_slice(cv);
                }
                v
            }
            BlobResponse::Chunk(data) => {
                let mut v = Vec::with_capacity(1 + data.len());
                v.push(RESP_CHUNK);
                v.extend_from_slice(data);
                v
            }
            BlobResponse::NotFound => vec![RESP_NOT_FOUND],
            BlobResponse::Error(code) => vec![RESP_ERROR, code.to_byte()],
        }
    }

    /// Decode untrusted bytes. Exact lengths only.
    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        if b.len() > MAX_BLOB_RESPONSE {
            return Err(WireError::TooLarge(b.len()));
        }
        let (&kind, rest) = b.split_first().ok_or(WireError::Empty)?;
        let bad = |expected: usize| WireError::BadLength {
            kind,
            got: b.len(),
            expected,
        };
        match kind {
            RESP_OUTBOARD => {
                if rest.len() < 12 {
                    return Err(bad(13));
                }
                let mut len = [0u8; 8];
                len.copy_from_slice(&rest[..8]);
                let mut count = [0u8; 4];
                count.copy_from_slice(&rest[8..12]);
                let count = u32::from_be_bytes(count) as usize;
                if count > MAX_OUTBOARD_CVS {
                    return Err(WireError::TooManyCvs(count));
                }
                let body = &rest[12..];
                if body.len() != count * 32 {
                    return Err(bad(13 + count * 32));
                }
                let cvs = body.chunks_exact(32).map(hash_at).collect();
                Ok(BlobResponse::Outboard {
                    len: u64::from_be_bytes(len),
                    cvs,
                })
            }
            RESP_CHUNK => {
                if rest.len() > MAX_CHUNK_DATA {
                    return Err(bad(1 + MAX_CHUNK_DATA));
                }
                Ok(BlobResponse::Chunk(rest.to_vec()))
            }
            RESP_NOT_FOUND => {
                if !rest.is_empty() {
                    return Err(bad(1));
                }
                Ok(BlobResponse::NotFound)
            }
            RESP_ERROR => match rest {
                [code] => Ok(BlobResponse::Error(BlobErrorCode::from_byte(*code))),
                _ => Err(bad(2)),
            },
            other => Err(WireError::UnknownType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips() {
        let h = [7u8; 32];
        for r in [
            BlobRequest::Outboard { hash: h },
            BlobRequest::Chunk {
                hash: h,
                index: 0xdead_beef,
            },
            BlobRequest::Range {
                hash: h,
                first: 7,
                count: MAX_RANGE_GROUPS,
            },
        ] {
            assert_eq!(BlobRequest::decode(&r.encode()), Ok(r));
        }
        for r in [
            BlobResponse::Outboard {
                len: 1 << 40,
                cvs: vec![[1; 32], [2; 32]],
            },
            BlobResponse::Chunk(vec![9; 1000]),
            BlobResponse::Chunk(Vec::new()),
            BlobResponse::NotFound,
            BlobResponse::Error(BlobErrorCode::Busy),
            BlobResponse::Error(BlobErrorCode::Other(99)),
        ] {
            assert_eq!(BlobResponse::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(BlobRequest::decode(&[]), Err(WireError::Empty));
        assert!(BlobRequest::decode(&[1, 2, 3]).is_err());
        assert!(BlobRequest::decode(&[9; 33]).is_err());
        assert!(BlobRequest::decode(&[0u8; 100]).is_err());
        // Ranges of no group or over the limit.
        for count in [0, MAX_RANGE_GROUPS + 1, u16::MAX] {
            let mut b = vec![REQ_RANGE];
            b.extend_from_slice(&[0; 36]);
            b.extend_from_slice(&count.to_be_bytes());
            assert_eq!(BlobRequest::decode(&b), Err(WireError::BadRange(count)));
        }
        // A chunk response's data is borrowed only when well formed.
        assert_eq!(chunk_data(&[RESP_CHUNK, 1, 2]), Some(&[1u8, 2][..]));
        assert_eq!(chunk_data(&[RESP_NOT_FOUND]), None);
        assert_eq!(chunk_data(&vec![RESP_CHUNK; 2 + MAX_CHUNK_DATA]), None);
        // Outboard claiming more CVs than the limit.
        let mut b = vec![RESP_OUTBOARD];
        b.extend_from_slice(&0u64.to_be_bytes());
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            BlobResponse::decode(&b),
            Err(WireError::TooManyCvs(u32::MAX as usize))
        );
        // Count disagreeing with the body.
        let mut b = vec![RESP_OUTBOARD];
        b.extend_from_slice(&0u64.to_be_bytes());
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(&[0; 32]);
        assert!(BlobResponse::decode(&b).is_err());
        assert!(BlobResponse::decode(&[RESP_NOT_FOUND, 0]).is_err());
        assert!(BlobResponse::decode(&[RESP_ERROR]).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = BlobRequest::decode(&bytes);
            let _ = BlobResponse::decode(&bytes);
        }
    }
}
