//! Kademlia and mDNS upkeep on the swarm task: provider records for the blobs held, their
//! publication a few queries at a time, the work and want boards published and looked up
//! (`work.rs`), bootstrap, LAN discovery, and provider answers handed to the download state
//! machine. Part of the swarm task (`actor.rs`).

use super::super::direct::is_public_direct;
use super::super::work::{buckets_in_use, draw_bucket, network_size_estimate, MAX_WORK_FOUND};
use super::*;

/// A random byte for drawing a board bucket; 0 (the first bucket) without randomness.
fn random_byte() -> u8 {
    let mut b = [0u8; 1];
    if let Err(e) = getrandom::fill(&mut b) {
        warn!("no randomness for the board key ({e}); the first bucket is used");
    }
    b[0]
}

/// A board lookup's caller and the providers found so far (`work.rs`).
struct WorkFind {
    reply: oneshot::Sender<Vec<PeerId>>,
    found: Vec<PeerId>,
}

/// Board publications and lookups in progress, and the lookups made since start.
#[derive(Default)]
pub(super) struct Boards {
    /// Lookups and their callers: at most [`MAX_WORK_FINDS`].
    finds: HashMap<QueryId, WorkFind>,
    /// Publications and who waits for each to end: at most [`MAX_WORK_FINDS`] (the
    /// coordinator and the work seeker post once every few minutes).
    posts: HashMap<QueryId, oneshot::Sender<()>>,
    /// Lookups started since start: work board, want board (`NetStatus`).
    pub(super) lookups: (u64, u64),
}

impl Actor {
    /// The board buckets in use for the network's size as this node's routing table shows it.
    fn work_buckets(&mut self) -> u16 {
        let (routing_peers, _) = self.table_counts();
        buckets_in_use(network_size_estimate(routing_peers))
    }

    /// Publishes a provider record on `board` under a key drawn at random; `done` is answered
    /// when the publication ends (at once if it cannot start, or too many are under way).
    pub(super) fn post(&mut self, board: Board, done: oneshot::Sender<()>) {
        if self.boards.posts.len() >= MAX_WORK_FINDS {
            let _ = done.send(());
            return;
        }
        let bucket = draw_bucket(self.work_buckets(), random_byte());
        match self
            .swarm
            .behaviour_mut()
            .kad
            .start_providing(board.key(bucket))
        {
            Ok(id) => {
                self.queries.insert(id, QueryKind::Post);
                self.boards.posts.insert(id, done);
            }
            Err(e) => {
                warn!(?board, bucket, "cannot publish on the board: {e}");
                let _ = done.send(());
            }
        }
    }

    /// Drops this node's own records of `board`; those other nodes hold expire on their own.
    pub(super) fn withdraw(&mut self, board: Board) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        for bucket in 0..=u8::MAX {
            kad.stop_providing(&board.key(bucket));
        }
    }

    /// Starts a lookup of one key of `board` drawn at random; `reply` gets the providers
    /// found.
    pub(super) fn find(&mut self, board: Board, reply: oneshot::Sender<Vec<PeerId>>) {
        if self.boards.finds.len() >= MAX_WORK_FINDS {
            let _ = reply.send(Vec::new());
            return;
        }
        match board {
            Board::Work => self.boards.lookups.0 += 1,
            Board::Want => self.boards.lookups.1 += 1,
        }
        let bucket = draw_bucket(self.work_buckets(), random_byte());
        let id = self
            .swarm
            .behaviour_mut()
            .kad
            .get_providers(board.key(bucket));
        self.queries.insert(id, QueryKind::Find);
        self.boards.finds.insert(
            id,
            WorkFind {
                reply,
                found: Vec::new(),
            },
        );
    }

    /// Providers of a board key arrived: dialled at once, while the lookup still holds their
    /// addresses (Kademlia keeps a provider's addresses only for the lookup's lifetime). The
    /// caller is answered when the lookup ends or [`MAX_WORK_FOUND`] are found.
    fn work_found(&mut self, id: QueryId, providers: HashSet<PeerId>, last: bool) {
        let Some(find) = self.boards.finds.get_mut(&id) else {
            return;
        };
        let mut dial = Vec::new();
        for peer in providers {
            if peer != self.local
                && find.found.len() < MAX_WORK_FOUND
                && !find.found.contains(&peer)
            {
                find.found.push(peer);
                dial.push(peer);
            }
        }
        let full = find.found.len() >= MAX_WORK_FOUND;
        for peer in dial {
            dial_peer(
                &mut self.swarm,
                &self.dials,
                peer,
                Vec::new(),
                DialOrigin::Work,
            );
        }
        if last || full {
            if let Some(find) = self.boards.finds.remove(&id) {
                debug!(found = find.found.len(), "board lookup done");
                let _ = find.reply.send(find.found);
            }
            if !last {
                // Its last event still comes, and finds no caller.
                if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                    q.finish();
                }
            }
        }
    }

    /// Record a provider entry for every complete blob in the store and queue their
    /// publication to the DHT.
    pub(super) fn provide_local_blobs(&mut self) -> Result<(), NetError> {
        let list = self
            .store
            .list()
            .map_err(|e| NetError::Store(e.to_string()))?;
        for (hash, _len) in list {
            self.add_local_provider(hash);
        }
        Ok(())
    }

    pub(super) fn add_local_provider(&mut self, hash: blake3::Hash) {
        let record = ProviderRecord::new(RecordKey::new(hash.as_bytes()), self.local, Vec::new());
        let kad = &mut self.swarm.behaviour_mut().kad;
        if let Err(e) = kad.store_mut().add_provider(record) {
            warn!(blob = %hash, "cannot record provider entry: {e}");
            return;
        }
        if self.announce_queue.len() < MAX_ANNOUNCE_QUEUE {
            self.announce_queue.push_back(hash);
        }
    }

    pub(super) fn kad_bootstrap(&mut self) {
        match self.swarm.behaviour_mut().kad.bootstrap() {
            Ok(id) => {
                self.queries.insert(id, QueryKind::Bootstrap);
            }
            Err(_) => debug!("Kademlia bootstrap skipped: no known peers"),
        }
    }

    /// A light refresh: look up our own key (the k closest peers to us), not every bucket.
    pub(super) fn kad_refresh_own_key(&mut self) {
        let local = self.local;
        let id = self.swarm.behaviour_mut().kad.get_closest_peers(local);
        self.queries.insert(id, QueryKind::OwnKey);
    }

    /// Publish queued provider records, a few queries at a time, once we have peers.
    pub(super) fn drain_announcements(&mut self) {
        if self.peers.is_empty() {
            return;
        }
        while self.announcing < MAX_ANNOUNCING {
            let Some(hash) = self.announce_queue.pop_front() else {
                break;
            };
            match self
                .swarm
                .behaviour_mut()
                .kad
                .start_providing(RecordKey::new(hash.as_bytes()))
            {
                Ok(id) => {
                    self.queries.insert(id, QueryKind::Announce);
                    self.announcing += 1;
                }
                Err(e) => warn!(blob = %hash, "cannot provide: {e}"),
            }
        }
    }

    pub(super) fn on_mdns(&mut self, ev: mdns::Event) {
        let mdns::Event::Discovered(found) = ev else {
            return;
        };
        for (peer, addr) in found.into_iter().take(MAX_MDNS_PER_EVENT) {
            if peer == self.local {
                continue;
            }
            debug!(%peer, %addr, "discovered on the LAN");
            self.add_to_table(peer, std::slice::from_ref(&addr));
            dial_peer(
                &mut self.swarm,
                &self.dials,
                peer,
                vec![addr],
                DialOrigin::Mdns,
            );
        }
    }

    /// A record a peer sent (Kademlia's record filtering is on, `behaviour.rs`): a provider
    /// record is stored with the remote address of the peer's oldest open connection, by
    /// which its subnet's share is counted (`work.rs`, `remote.rs`). Value records are not
    /// kept (hearth uses none; `work::Store::put`).
    fn on_inbound_record(&mut self, request: kad::InboundRequest) {
        let kad::InboundRequest::AddProvider {
            record: Some(record),
        } = request
        else {
            return;
        };
        let from = self.seen_at(&record.provider);
        let kad = &mut self.swarm.behaviour_mut().kad;
        kad.store_mut().add_provider_from(record, from.as_ref());
    }

    /// The remote address of `peer`'s oldest open connection: where the network showed it to
    /// be, by which its subnet is counted (records, routing table).
    fn seen_at(&self, peer: &PeerId) -> Option<Multiaddr> {
        self.peers.get(peer).and_then(|p| {
            p.endpoints
                .iter()
                .min_by_key(|(id, _)| **id)
                .map(|(_, a)| a.clone())
        })
    }

    /// The peers of `peer`'s bucket in Kademlia's routing table, whether `peer` is among them,
    /// and every peer of the table. `None`: `peer` is this node.
    fn table_around(&mut self, peer: PeerId) -> Option<(bool, Vec<PeerId>, Vec<PeerId>)> {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let bucket: Vec<PeerId> = {
            let b = kad.kbucket(peer)?;
            b.iter().map(|e| *e.node.key.preimage()).collect()
        };
        let present = bucket.contains(&peer);
        let mut table = Vec::new();
        for b in kad.kbuckets() {
            table.extend(b.iter().map(|e| *e.node.key.preimage()));
        }
        Some((present, bucket, table))
    }

    /// Puts `addrs` of `peer` into Kademlia's routing table. Kademlia inserts no peer by
    /// itself (`BucketInserts::Manual`, `behaviour.rs`): identify, mDNS and its own
    /// `RoutablePeer` events all come here, and a peer not yet in the table goes in only if
    /// its subnet holds less than its share of the bucket and of the table (`table.rs`).
    pub(super) fn add_to_table(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        let Some(first) = addrs.first() else {
            return;
        };
        let Some((present, bucket, table)) = self.table_around(peer) else {
            return;
        };
        if !present {
            let seen_at = self.seen_at(&peer).unwrap_or_else(|| first.clone());
            if let Err(why) = self.diversity.admit(peer, &seen_at, &bucket, &table) {
                debug!(%peer, %seen_at, "kept out of the routing table: {why}");
                return;
            }
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        for a in addrs {
            kad.add_address(&peer, a.clone());
        }
    }

    /// Puts a bootstrap node the operator configured into the routing table, counted against
    /// no subnet's share.
    pub(super) fn add_trusted_to_table(&mut self, peer: PeerId, addr: Multiaddr) {
        let Some((present, _, table)) = self.table_around(peer) else {
            return;
        };
        if !present {
            self.diversity.admit_trusted(peer, &table);
        }
        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
    }

    /// The DHT role a node with listeners starts in (`dht_role::start_mode`), set when its
    /// listeners have reported and again at each address it listens at until its table shows
    /// the network (a listener on all interfaces reports each interface's address, the
    /// public one maybe after the rest): a node at a public address (declared by its
    /// operator, or one it listens at) serves, as does one with no bootstrap peer at a public
    /// address (or a DNS name) to join the internet's network through.
    pub(super) fn start_dht_mode(&mut self) {
        if self.dht_mode.is_none() || self.dht_heard.heard(Instant::now()) {
            return;
        }
        let local = self.local;
        let joining = self
            .bootstrap
            .iter()
            .any(|a| peer_id_of(a) != Some(local) && is_public_direct(a));
        // A relay circuit is confirmed as an external address too (libp2p's relay client,
        // once its reservation is accepted): only direct ones are this node's own.
        let public = self.swarm.external_addresses().any(is_public_direct)
            || self.relay_gate.listens_publicly();
        let mode = dht_role::start_mode(public, joining);
        self.swarm.behaviour_mut().kad.set_mode(Some(mode));
        self.dht_mode = Some(mode);
    }

    /// Serve the DHT or only use it (`dht_role.rs`), by the public servers in the routing
    /// table and whether a direct address of this node is confirmed.
    pub(super) fn choose_dht_mode(&mut self) {
        let Some(current) = self.dht_mode else {
            return;
        };
        let now = Instant::now();
        let table: usize = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| dht_role::public_servers(b.iter().map(|e| e.node.value.iter())))
            .sum();
        let servers = self.dht_heard.public_servers(table, now);
        let heard = self.dht_heard.heard(now);
        let public = !self.confirmed.is_empty();
        let mode = dht_role::decide(current, public, heard, servers, self.dht_client_at);
        if mode == current {
            return;
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        match mode {
            kad::Mode::Client => info!(
                public_servers = servers,
                "not reachable from the internet and the DHT has servers enough: \
                 using it as a client (answering no lookups)"
            ),
            kad::Mode::Server => info!(
                public_servers = servers,
                public, "serving the DHT (answering lookups)"
            ),
        }
        kad.set_mode(Some(mode));
        self.dht_mode = Some(mode);
    }

    /// Drops from `peer`'s routing-table entry the relay circuits it no longer lists
    /// (`advertised`, from identify; `table.rs`, `withdrawn_circuit`).
    pub(super) fn forget_withdrawn_circuits(&mut self, peer: PeerId, advertised: &[Multiaddr]) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let stale: Vec<Multiaddr> = match kad.kbucket(peer) {
            Some(bucket) => bucket
                .iter()
                .find(|e| *e.node.key.preimage() == peer)
                .map(|e| {
                    e.node
                        .value
                        .iter()
                        .filter(|a| crate::net::table::withdrawn_circuit(a, advertised))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
            None => return,
        };
        for a in stale {
            debug!(%peer, addr = %a, "a relay circuit the peer no longer lists: out of the routing table");
            kad.remove_address(&peer, &a);
        }
    }

    /// `peer` no longer speaks Kademlia (identify said so: it became a DHT client): out of
    /// the routing table, which would otherwise hand it to lookups that cannot ask it.
    pub(super) fn not_a_dht_server(&mut self, peer: PeerId) {
        if self.swarm.behaviour_mut().kad.remove_peer(&peer).is_some() {
            debug!(%peer, "no longer a DHT server: out of the routing table");
        }
    }

    /// The peers in Kademlia's routing table, and those kept out of it since start
    /// (`table.rs`).
    pub(super) fn table_counts(&mut self) -> (usize, u64) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let peers = kad.kbuckets().map(|b| b.num_entries()).sum();
        (peers, self.diversity.refused())
    }

    /// Whether `addr` is only the address a hole punch dialled `peer` at (`table.rs`).
    fn punched_only(&self, peer: &PeerId, addr: &Multiaddr) -> bool {
        self.peers.get(peer).is_some_and(|p| {
            crate::net::table::punched_only(addr, &p.punched_addrs, &p.listen_addrs)
        })
    }

    pub(super) fn on_kad(&mut self, ev: kad::Event) {
        let ev = match ev {
            kad::Event::InboundRequest { request } => return self.on_inbound_record(request),
            // A peer that speaks Kademlia, reached by dialling it (`BucketInserts::Manual`).
            kad::Event::RoutablePeer { peer, address }
            | kad::Event::PendingRoutablePeer { peer, address } => {
                if self.punched_only(&peer, &address) {
                    return;
                }
                return self.add_to_table(peer, &[address]);
            }
            // Kademlia adds the address it dialled a peer at by itself: a punched
            // connection's is the peer's NAT mapping (`table.rs`, `punched_only`).
            kad::Event::RoutingUpdated {
                peer, addresses, ..
            } => {
                for a in addresses.iter() {
                    if self.punched_only(&peer, a) {
                        debug!(%peer, addr = %a, "a hole punch's address kept out of the routing table");
                        self.swarm.behaviour_mut().kad.remove_address(&peer, a);
                    }
                }
                return;
            }
            ev => ev,
        };
        let kad::Event::OutboundQueryProgressed {
            id,
            result,
            step,
            stats,
        } = ev
        else {
            return;
        };
        let kind = if step.last {
            self.queries.remove(&id)
        } else {
            None
        };
        match result {
            // A step (the first: the lookup of our own key) that a peer answered filled the
            // table with the nearest peers: the DHT role can be chosen from it. (One that no
            // peer answered, such as libp2p's own bootstrap before the first connection, says
            // nothing.)
            QueryResult::Bootstrap(_) if !step.last => self
                .dht_heard
                .bootstrap_step(stats.num_successes(), Instant::now()),
            QueryResult::Bootstrap(res) => {
                self.dht_heard
                    .bootstrap_step(stats.num_successes(), Instant::now());
                debug!(ok = res.is_ok(), "Kademlia bootstrap finished");
                if !self.announced_with_peers && !self.peers.is_empty() {
                    // Our provider records were only local so far: publish them all.
                    self.announced_with_peers = true;
                    let held: Vec<blake3::Hash> = self
                        .swarm
                        .behaviour_mut()
                        .kad
                        .store_mut()
                        .provided()
                        .filter_map(|r| {
                            <[u8; 32]>::try_from(r.key.as_ref())
                                .ok()
                                .map(blake3::Hash::from)
                        })
                        .collect();
                    self.announce_queue = held.into_iter().take(MAX_ANNOUNCE_QUEUE).collect();
                    self.drain_announcements();
                }
            }
            QueryResult::StartProviding(res) => {
                if matches!(kind, Some(QueryKind::Announce)) {
                    self.announcing = self.announcing.saturating_sub(1);
                }
                if let Some(done) = self.boards.posts.remove(&id) {
                    let _ = done.send(());
                }
                if let Err(e) = res {
                    debug!("provider announcement incomplete: {e}");
                }
                self.drain_announcements();
            }
            QueryResult::GetProviders(res)
                if matches!(
                    (&kind, self.queries.get(&id)),
                    (Some(QueryKind::Find), _) | (None, Some(QueryKind::Find))
                ) =>
            {
                let found = match res {
                    Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => providers,
                    _ => HashSet::new(),
                };
                self.work_found(id, found, step.last);
            }
            QueryResult::GetProviders(res) => {
                let hash = match (&kind, self.queries.get(&id)) {
                    (Some(QueryKind::Providers(h)), _) | (None, Some(QueryKind::Providers(h))) => {
                        *h
                    }
                    _ => return,
                };
                debug!(blob = %hash, last = step.last, ?res, "providers query progressed");
                let found = match res {
                    Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => providers,
                    _ => HashSet::new(),
                };
                let last = step.last;
                self.with_downloads(|d, io| d.providers(io, Instant::now(), hash, id, found, last));
            }
            _ => {}
        }
    }
}
