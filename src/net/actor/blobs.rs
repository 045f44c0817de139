//! The blob protocol (`/hearth/blob/1`) on the swarm task: inbound requests go to the server
//! (`serve.rs`), answers and failures to the download state machine (`download.rs`), and the
//! store work it asks for goes to the blocking pool through [`NetIo`]. Nothing here hashes or
//! writes a blob. Part of the swarm task (`actor.rs`).

use super::*;

impl Actor {
    // ---------------------------------------------------------------- blob protocol

    pub(super) fn on_blob(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    self.touch(&peer);
                    let span = self.span(&peer);
                    let _g = span.enter();
                    if let Some((channel, resp)) = self.server.request(peer, &request, channel) {
                        let _ = self.swarm.behaviour_mut().blob.send_response(channel, resp);
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    self.touch(&peer);
                    let span = self.span(&peer);
                    let _g = span.enter();
                    self.with_downloads(|d, io| {
                        d.on_response(io, Instant::now(), peer, request_id, response)
                    });
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let span = self.span(&peer);
                let _g = span.enter();
                debug!("blob request failed: {error}");
                self.with_downloads(|d, io| {
                    d.on_request_failed(io, Instant::now(), peer, request_id)
                });
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                let span = self.span(&peer);
                let _g = span.enter();
                debug!("inbound blob request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    pub(super) fn on_blob_served(&mut self, s: Served) {
        self.server.served(&s);
        let _ = self
            .swarm
            .behaviour_mut()
            .blob
            .send_response(s.channel, s.frame);
    }

    /// Runs `f` on the download state machine with the swarm task's side of it, then
    /// announces the blobs it completed.
    pub(super) fn with_downloads(
        &mut self,
        f: impl FnOnce(&mut Downloads<OutboundRequestId, QueryId>, &mut NetIo<'_>),
    ) {
        let mut io = NetIo {
            swarm: &mut self.swarm,
            peers: &self.peers,
            queries: &mut self.queries,
            store: &self.store,
            jobs: &mut self.store_jobs,
            fetched: &mut self.fetched,
            dials: &self.dials,
            reach_book: &self.reach_book,
            mappings: &self.mappings,
        };
        f(&mut self.downloads, &mut io);
        if self.fetched.is_empty() {
            return;
        }
        for hash in std::mem::take(&mut self.fetched) {
            self.add_local_provider(hash);
        }
        self.drain_announcements();
    }
}

/// The swarm task's side of the download state machine (`download.rs`): what it may do to
/// the swarm, and the store work it hands to the blocking pool.
pub(super) struct NetIo<'a> {
    swarm: &'a mut Swarm<Behaviour>,
    peers: &'a HashMap<PeerId, PeerState>,
    queries: &'a mut HashMap<QueryId, QueryKind>,
    store: &'a Store,
    jobs: &'a mut FuturesUnordered<BoxFuture<'static, Option<StoreDone>>>,
    fetched: &'a mut Vec<blake3::Hash>,
    dials: &'a DialLog,
    reach_book: &'a ReachBook,
    mappings: &'a Mappings,
}

impl Io for NetIo<'_> {
    type Req = OutboundRequestId;
    type Query = QueryId;

    fn link(&self, peer: &PeerId) -> Link {
        match self.peers.get(peer) {
            Some(p) if !p.direct.is_empty() => Link::Direct,
            Some(p) if !p.relayed.is_empty() => Link::Relayed {
                punch_over: p
                    .relayed_since
                    .zip(p.punch.last_failed())
                    .is_some_and(|(since, failed_at)| failed_at >= since),
                failures: p.punch.failures(),
            },
            _ => Link::Absent(self.reach_book.seen(peer, Instant::now())),
        }
    }

    fn punch_hopeless(&self) -> bool {
        self.mappings.punch_hopeless(Instant::now())
    }

    fn held(&self, hash: &blake3::Hash) -> Result<Option<u64>, StoreError> {
        // One sled read; the outboard check is cached by the store.
        self.store.len(hash)
    }

    fn send(&mut self, peer: &PeerId, req: BlobRequest) -> OutboundRequestId {
        self.swarm
            .behaviour_mut()
            .blob
            .send_request(peer, req.encode())
    }

    fn dial(&mut self, peer: &PeerId) {
        dial_peer(self.swarm, self.dials, *peer, Vec::new(), DialOrigin::Blob);
    }

    fn disconnect(&mut self, peer: &PeerId) {
        let _ = self.swarm.disconnect_peer_id(*peer);
    }

    fn find_providers(&mut self, hash: blake3::Hash) -> QueryId {
        let query = self
            .swarm
            .behaviour_mut()
            .kad
            .get_providers(RecordKey::new(hash.as_bytes()));
        self.queries.insert(query, QueryKind::Providers(hash));
        query
    }

    fn cancel_query(&mut self, query: QueryId) {
        self.queries.remove(&query);
        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&query) {
            q.finish();
        }
    }

    fn store(&mut self, job: StoreJob) {
        let store = self.store.clone();
        self.jobs.push(Box::pin(async move {
            match tokio::task::spawn_blocking(move || job.run(&store)).await {
                Ok(done) => Some(done),
                Err(e) => {
                    // The fetch then ends at its deadline.
                    warn!("blob store work failed: {e}");
                    None
                }
            }
        }));
    }

    fn fetched(&mut self, hash: blake3::Hash) {
        self.fetched.push(hash);
    }
}
