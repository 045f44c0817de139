//! Serving blobs to peers (`/hearth/blob/1`, responder side): admission (per-peer and total
//! bounds, `Busy` above them) and the store reads, which run on the blocking pool.
//!
//! Owns the answers being prepared and nothing else: the swarm task hands each inbound request
//! to [`Server::request`] and sends whatever comes back, either at once (malformed, busy) or
//! when [`Server::serving`] yields it. Only complete blobs are served, every piece verified by
//! the store as it is read.

use std::collections::HashMap;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use tracing::{debug, warn};

use super::wire::{BlobErrorCode, BlobRequest, BlobResponse, RESP_CHUNK};
use super::FaultInjection;
use crate::store::{Store, StoreError, CHUNK_SIZE};

/// Inbound blob requests being served, per peer / total; over that the answer is `Busy`.
/// A range answer is at most 2 MiB, so answers being prepared hold at most 64 MiB.
const MAX_INBOUND_BLOB_PER_PEER: usize = 8;
const MAX_INBOUND_BLOB: usize = 32;

/// An answer prepared on the blocking pool, ready to send.
pub(crate) struct Served {
    pub(crate) peer: PeerId,
    pub(crate) channel: ResponseChannel<Vec<u8>>,
    pub(crate) frame: Vec<u8>,
    /// Chunk groups the answer carries.
    groups: u64,
}

/// The responder side of the blob protocol.
pub(crate) struct Server {
    store: Store,
    fault: FaultInjection,
    /// Answers being prepared; bounded by [`MAX_INBOUND_BLOB`].
    pub(crate) serving: FuturesUnordered<BoxFuture<'static, Served>>,
    per_peer: HashMap<PeerId, usize>,
    /// Chunk groups served since start.
    pub(crate) chunks_served: u64,
}

impl Server {
    pub(crate) fn new(store: Store, fault: FaultInjection) -> Self {
        Server {
            store,
            fault,
            serving: FuturesUnordered::new(),
            per_peer: HashMap::new(),
            chunks_served: 0,
        }
    }

    /// Takes an inbound request. Returns the answer to send at once (malformed, busy), or
    /// `None` when it is being prepared and will come out of [`Server::serving`].
    pub(crate) fn request(
        &mut self,
        peer: PeerId,
        data: &[u8],
        channel: ResponseChannel<Vec<u8>>,
    ) -> Option<(ResponseChannel<Vec<u8>>, Vec<u8>)> {
        let req = match BlobRequest::decode(data) {
            Ok(r) => r,
            Err(e) => {
                debug!("malformed blob request: {e}");
                return Some((
                    channel,
                    BlobResponse::Error(BlobErrorCode::Malformed).encode(),
                ));
            }
        };
        let per_peer = self.per_peer.get(&peer).copied().unwrap_or(0);
        if per_peer >= MAX_INBOUND_BLOB_PER_PEER || self.serving.len() >= MAX_INBOUND_BLOB {
            return Some((channel, BlobResponse::Error(BlobErrorCode::Busy).encode()));
        }
        *self.per_peer.entry(peer).or_insert(0) += 1;
        let store = self.store.clone();
        let fault = self.fault.clone();
        self.serving.push(Box::pin(async move {
            let (frame, groups) = tokio::task::spawn_blocking(move || serve(&store, req, &fault))
                .await
                .unwrap_or_else(|_| (BlobResponse::Error(BlobErrorCode::Internal).encode(), 0));
            Served {
                peer,
                channel,
                frame,
                groups,
            }
        }));
        None
    }

    /// Book-keeping for an answer about to be sent.
    pub(crate) fn served(&mut self, s: &Served) {
        if let Some(n) = self.per_peer.get_mut(&s.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&s.peer);
            }
        }
        self.chunks_served += s.groups;
    }
}

/// Answers one blob request from the store (runs on the blocking pool): the response frame
/// and how many chunk groups it carries. Only complete blobs are served.
fn serve(store: &Store, req: BlobRequest, fault: &FaultInjection) -> (Vec<u8>, u64) {
    let internal = |e: &dyn std::fmt::Display| {
        warn!("store failed while serving a blob: {e}");
        (BlobResponse::Error(BlobErrorCode::Internal).encode(), 0)
    };
    let (hash, first, count) = match req {
        BlobRequest::Outboard { hash } => {
            let hash = blake3::Hash::from(hash);
            // Only complete blobs have an outboard here.
            return match store.outboard(&hash) {
                Ok(Some(o)) => (
                    BlobResponse::Outboard {
                        len: o.len,
                        cvs: o.cvs,
                    }
                    .encode(),
                    0,
                ),
                Ok(None) => (BlobResponse::NotFound.encode(), 0),
                Err(e) => internal(&e),
            };
        }
        BlobRequest::Chunk { hash, index } => (blake3::Hash::from(hash), index, 1u32),
        BlobRequest::Range { hash, first, count } => {
            (blake3::Hash::from(hash), first, u32::from(count))
        }
    };
    // The frame is built in place: the store appends the verified groups after the type byte.
    let mut frame = vec![RESP_CHUNK];
    match store.read_chunks(&hash, first, count, &mut frame) {
        Ok(()) => {
            if fault.corrupt_chunks {
                for index in first.max(fault.corrupt_from_chunk)..first.saturating_add(count) {
                    let at = 1 + (index - first) as usize * CHUNK_SIZE;
                    if let Some(b) = frame.get_mut(at) {
                        *b ^= 0xff;
                    }
                }
            }
            (frame, u64::from(count))
        }
        Err(StoreError::NotFound(_) | StoreError::NoSuchChunk { .. }) => {
            (BlobResponse::NotFound.encode(), 0)
        }
        Err(e) => internal(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Outboard;

    #[test]
    fn ranges_are_served_verified_and_bounded_by_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..5 * CHUNK_SIZE + 9).map(|i| (i % 251) as u8).collect();
        let hash = store.put_bytes(&data).unwrap();
        let ok = FaultInjection::default();
        let h = *hash.as_bytes();
        let (frame, groups) = serve(
            &store,
            BlobRequest::Range {
                hash: h,
                first: 3,
                count: 3,
            },
            &ok,
        );
        assert_eq!(groups, 3);
        assert_eq!(
            super::super::wire::chunk_data(&frame),
            Some(&data[3 * CHUNK_SIZE..])
        );
        // Past the end, or a blob not held: not found.
        for req in [
            BlobRequest::Range {
                hash: h,
                first: 4,
                count: 3,
            },
            BlobRequest::Chunk {
                hash: [9; 32],
                index: 0,
            },
        ] {
            assert_eq!(serve(&store, req, &ok).0, BlobResponse::NotFound.encode());
        }
        let (frame, _) = serve(&store, BlobRequest::Outboard { hash: h }, &ok);
        let ob = Outboard::compute(&data);
        assert_eq!(
            BlobResponse::decode(&frame).unwrap(),
            BlobResponse::Outboard {
                len: ob.len,
                cvs: ob.cvs
            }
        );
        // Fault injection damages exactly the groups from its index on.
        let bad = FaultInjection {
            corrupt_chunks: true,
            corrupt_from_chunk: 1,
        };
        let (frame, _) = serve(
            &store,
            BlobRequest::Range {
                hash: h,
                first: 0,
                count: 2,
            },
            &bad,
        );
        let got = super::super::wire::chunk_data(&frame).unwrap();
        assert_eq!(got[..CHUNK_SIZE], data[..CHUNK_SIZE]);
        assert_ne!(got[CHUNK_SIZE], data[CHUNK_SIZE]);
    }
}
