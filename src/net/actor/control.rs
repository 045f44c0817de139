//! The control protocol (`/hearth/control/1`) on the swarm task: inbound requests handed to
//! the node layer with a bounded wait for its answer (per peer and in total), answers to our
//! own requests returned to their callers. Part of the swarm task (`actor.rs`); moves bytes only.

use super::*;

impl Actor {
    // ---------------------------------------------------------------- control protocol

    pub(super) fn on_control(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    self.touch(&peer);
                    self.on_control_request(peer, request, channel)
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    self.touch(&peer);
                    if let Some(reply) = self.pending_requests.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Err(NetError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                let span = self.span(&peer);
                let _g = span.enter();
                debug!("inbound control request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    pub(super) fn on_control_request(
        &mut self,
        peer: PeerId,
        data: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        let span = self.span(&peer);
        let _g = span.enter();
        let per_peer = self.control_per_peer.get(&peer).copied().unwrap_or(0);
        if per_peer >= MAX_INBOUND_CONTROL_PER_PEER
            || self.control_replies.len() >= MAX_INBOUND_CONTROL
        {
            // Dropping the channel closes the peer's stream unanswered.
            debug!("control request dropped: too many in flight");
            return;
        }
        let (tx, rx) = oneshot::channel();
        if !self.emit(NetEvent::ControlRequest {
            peer,
            data,
            reply: tx,
        }) {
            return;
        }
        *self.control_per_peer.entry(peer).or_insert(0) += 1;
        self.control_replies.push(Box::pin(async move {
            let data = tokio::time::timeout(CONTROL_REPLY_TIMEOUT, rx)
                .await
                .ok()
                .and_then(Result::ok);
            ControlReply {
                peer,
                channel,
                data,
            }
        }));
    }

    pub(super) fn on_control_reply(&mut self, r: ControlReply) {
        decrement(&mut self.control_per_peer, &r.peer);
        match r.data {
            Some(data) if data.len() <= MAX_CONTROL_MESSAGE => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .control
                    .send_response(r.channel, data);
            }
            Some(data) => warn!(
                peer = %r.peer,
                len = data.len(),
                "control reply over the size limit not sent"
            ),
            None => debug!(peer = %r.peer, "control request not answered"),
        }
    }
}

/// A control answer prepared by the node layer (or `None`: no answer / timed out).
pub(super) struct ControlReply {
    peer: PeerId,
    channel: ResponseChannel<Vec<u8>>,
    data: Option<Vec<u8>>,
}

pub(super) fn decrement(map: &mut HashMap<PeerId, usize>, peer: &PeerId) {
    if let Some(n) = map.get_mut(peer) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(peer);
        }
    }
}
