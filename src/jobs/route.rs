//! One route for control requests: a worker's lease requests, renewals, claims and failure
//! reports reach a coordinator the same way whether it runs on a peer or on this node.
//!
//! A request to a peer goes over the network; a request to this node's own peer id goes, as
//! the same bytes, to the node's router, which serves it exactly as it serves a request that
//! arrived from the network (decoding, the household check, the coordinator). So the worker
//! and the coordinator never call each other. Must not touch: the coordinator, the worker.

use tokio::sync::{mpsc, oneshot};

use crate::model::wire::{Request, Response};
use crate::net::Network;

use super::JobError;

/// A control request addressed to this node, on its way to the node's router.
pub struct Loopback {
    pub peer: libp2p::PeerId,
    pub data: Vec<u8>,
    pub reply: oneshot::Sender<Vec<u8>>,
}

#[derive(Clone)]
pub struct ControlRoute {
    net: Network,
    local_peer: libp2p::PeerId,
    loopback: mpsc::Sender<Loopback>,
}

impl ControlRoute {
    /// `loopback` is bounded by the node (its router drains it like network events).
    pub fn new(
        net: Network,
        local_peer: libp2p::PeerId,
        loopback: mpsc::Sender<Loopback>,
    ) -> ControlRoute {
        ControlRoute {
            net,
            local_peer,
            loopback,
        }
    }

    /// Sends a request to `peer` (possibly this node) and decodes the answer.
    pub async fn request(
        &self,
        peer: libp2p::PeerId,
        request: &Request,
    ) -> Result<Response, JobError> {
        let data = request.to_bytes();
        let answer = if peer == self.local_peer {
            let (reply, rx) = oneshot::channel();
            self.loopback
                .send(Loopback {
                    peer: self.local_peer,
                    data,
                    reply,
                })
                .await
                .map_err(|_| JobError::Stopped)?;
            rx.await.map_err(|_| JobError::Stopped)?
        } else {
            self.net
                .request(peer, data)
                .await
                .map_err(|e| JobError::Network(e.to_string()))?
        };
        Response::from_bytes(&answer).map_err(|e| {
            JobError::Network(format!("the coordinator sent an unreadable answer: {e}"))
        })
    }
}
