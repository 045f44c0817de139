//! Fetching blobs from peers (`/hearth/blob/1`, requester side): the multi-provider download
//! state machine.
//!
//! [`Downloads`] decides; it does no I/O and reads no clock. The swarm task feeds it events
//! (a fetch asked for, providers found, a response, a failed request, a store job done, a
//! direct connection opened, a hole punch failed, `now` on each tick) and it acts through the
//! [`Io`] it is handed: send a request, dial, disconnect, start or stop a provider query, and
//! hand a [`StoreJob`] to the blocking pool. Everything that hashes or writes a blob (checking
//! the outboard, verifying and writing pieces, the final `fsync`) is a store job, run off the
//! swarm task, whose result comes back through [`Downloads::on_stored`]. The unit tests at
//! the bottom drive it with a fake `Io`, without a network.
//!
//! One fetch asks one provider at a time: the outboard first (its verified length is checked
//! against every waiting caller's limit), then ranges of up to [`RANGE_GROUPS`] chunk groups,
//! [`PIPELINE`] requests in flight. Pieces already stored (by an earlier, interrupted fetch
//! too) are never asked again. A provider that sends bad data is banned for the fetch and
//! disconnected; the next one carries on from the pieces still missing.
//!
//! Size: about 945 lines, above the ~700 the house style asks: one state machine whose every
//! handler reads and changes the same per-fetch state, plus the store jobs it hands out;
//! splitting it would scatter one invariant (what is asked, in flight, being written, missing)
//! over several files. Its tests are in `download/tests.rs`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::reach_book::Seen;
use super::wire::{chunk_data, BlobErrorCode, BlobRequest, BlobResponse, MAX_RANGE_GROUPS};
use super::NetError;
use crate::store::{Import, Outboard, Store, StoreError};

/// Concurrent blob fetches, callers waiting on one fetch, provider candidates per fetch.
pub(crate) const MAX_FETCHES: usize = 32;
const MAX_WAITERS: usize = 64;
const MAX_CANDIDATES: usize = 64;
/// Chunk groups asked for in one request (1 MiB): four times fewer request round trips and
/// stream set-ups than one group per request. At most [`MAX_RANGE_GROUPS`].
pub(crate) const RANGE_GROUPS: u16 = 4;
/// Requests in flight plus pieces being written, per fetch: bounds what one fetch holds in
/// memory to `PIPELINE` × 1 MiB, and stops asking when the disk falls behind the network.
pub(crate) const PIPELINE: usize = 4;

const _: () = assert!(RANGE_GROUPS <= MAX_RANGE_GROUPS);

/// How the swarm task can reach a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Link {
    /// At least one direct connection.
    Direct,
    /// Only through a relay. `punch_over`: the hole punch over the current relayed connection
    /// already failed; `failures`: hole punches given up so far.
    Relayed { punch_over: bool, failures: u32 },
    /// Not connected; what was seen of it lately (`reach_book.rs`).
    Absent(Seen),
}

impl Link {
    /// Which providers a fetch asks first, the lowest: one connected directly; one known to
    /// list a public address (a plain dial); one not known; last, one reachable only through
    /// a relay, for whom a dial is a circuit the relay charges to us and the fetch waits for a
    /// hole punch (`reach_book.rs`).
    fn rank(self) -> u8 {
        match self {
            Link::Direct => 0,
            Link::Absent(Seen::Public) => 1,
            Link::Absent(Seen::Unknown) => 2,
            Link::Absent(Seen::RelayedOnly) | Link::Relayed { .. } => 3,
        }
    }
}

/// What the state machine needs from the swarm task.
pub(crate) trait Io {
    /// Identifies an outbound request (`OutboundRequestId` in the swarm task).
    type Req: Copy + Eq + std::hash::Hash;
    /// Identifies a provider query (`QueryId`).
    type Query: Copy + Eq;
    fn link(&self, peer: &PeerId) -> Link;
    /// This node's NAT gives each peer a port of its own (`mapping.rs`): no hole punch can
    /// give a direct connection to a peer reached only through a relay.
    fn punch_hopeless(&self) -> bool;
    /// Length of the blob if it is held complete.
    fn held(&self, hash: &blake3::Hash) -> Result<Option<u64>, StoreError>;
    fn send(&mut self, peer: &PeerId, req: BlobRequest) -> Self::Req;
    fn dial(&mut self, peer: &PeerId);
    fn disconnect(&mut self, peer: &PeerId);
    fn find_providers(&mut self, hash: blake3::Hash) -> Self::Query;
    fn cancel_query(&mut self, query: Self::Query);
    /// Run `job` off the swarm task and feed its result to [`Downloads::on_stored`].
    fn store(&mut self, job: StoreJob);
    /// The blob is now held complete: announce it.
    fn fetched(&mut self, hash: blake3::Hash);
}

/// Store work of a fetch, run on the blocking pool ([`StoreJob::run`]).
pub(crate) struct StoreJob {
    fetch: u64,
    hash: blake3::Hash,
    peer: PeerId,
    kind: JobKind,
}

enum JobKind {
    /// Verify the outboard; if the blob fits `max_len`, begin (or resume) the import.
    Begin { outboard: Outboard, max_len: u64 },
    /// Verify and store the groups from `first` held in `frame[skip..]`.
    Write {
        import: Import,
        first: u32,
        frame: Vec<u8>,
        skip: usize,
    },
    /// Make the complete blob durable and visible.
    Finish { import: Import },
}

/// The result of a [`StoreJob`].
pub(crate) struct StoreDone {
    fetch: u64,
    hash: blake3::Hash,
    peer: PeerId,
    result: Done,
}

enum Done {
    Begun(Result<Import, StoreError>),
    /// `len` did not fit the limit the job was given.
    TooLarge(u64),
    Written {
        first: u32,
        /// Groups newly stored.
        stored: u64,
        result: Result<(), StoreError>,
    },
    Finished(Result<blake3::Hash, StoreError>),
}

impl StoreJob {
    /// Does the work (hashing, writing, flushing): call it on the blocking pool.
    pub(crate) fn run(self, store: &Store) -> StoreDone {
        let result = match self.kind {
            JobKind::Begin { outboard, max_len } => {
                if !outboard.verify(&self.hash) {
                    Done::Begun(Err(StoreError::BadOutboard))
                } else if outboard.len > max_len {
                    Done::TooLarge(outboard.len)
                } else {
                    Done::Begun(store.begin_import(&self.hash, &outboard))
                }
            }
            JobKind::Write {
                import,
                first,
                frame,
                skip,
            } => {
                let ob = import.outboard();
                let (mut at, mut index, mut stored) = (skip, first, 0);
                let mut result = Ok(());
                // The caller checked that the frame holds exactly whole groups.
                while at < frame.len() {
                    let len = ob.chunk_len(index);
                    let missing = !import.has_chunk(index);
                    if let Err(e) = import.put_chunk(index, &frame[at..at + len]) {
                        result = Err(e);
                        break;
                    }
                    stored += u64::from(missing);
                    at += len;
                    index += 1;
                }
                Done::Written {
                    first,
                    stored,
                    result,
                }
            }
            JobKind::Finish { import } => Done::Finished(import.finish()),
        };
        StoreDone {
            fetch: self.fetch,
            hash: self.hash,
            peer: self.peer,
            result,
        }
    }
}

/// What an outbound blob request asked for.
#[derive(Clone, Copy, Debug)]
enum Ask {
    Outboard,
    Range { first: u32, count: u16 },
}

type Waiter = (oneshot::Sender<Result<(), NetError>>, u64);

/// One blob being fetched.
struct Fetch<R, Q> {
    /// Distinguishes this fetch from an earlier one of the same blob (late store results).
    id: u64,
    /// Callers waiting, each with the longest blob it accepts.
    waiters: Vec<Waiter>,
    /// Providers still to try, hint first.
    candidates: VecDeque<PeerId>,
    /// Every peer ever queued, so providers reported twice are tried once.
    seen: HashSet<PeerId>,
    /// Peers that sent bad data: never asked again during this fetch.
    banned: HashSet<PeerId>,
    /// Peers that answered `Busy` once and were requeued.
    busy: HashSet<PeerId>,
    /// Peers that do not know range requests: asked one group per request.
    single: HashSet<PeerId>,
    current: Option<PeerId>,
    outboard_req: Option<R>,
    /// The outboard is being checked and the import begun, off the swarm task.
    beginning: bool,
    import: Option<Import>,
    /// Groups not yet requested from the current peer, in order.
    pending: VecDeque<u32>,
    in_flight: HashMap<R, (u32, u16)>,
    /// Groups handed to the blocking pool and not yet reported stored, by first group.
    writing: HashMap<u32, u32>,
    /// The blob is being made durable (the last store job).
    finishing: bool,
    providers_query: Option<Q>,
    deadline: Instant,
    /// The current provider is reachable only through a relay (or not yet connected): its
    /// requests wait for a direct connection until this instant.
    direct_deadline: Option<Instant>,
    /// The last provider given up because only a relayed connection existed, and why no
    /// direct one: the reason the fetch gives if nobody else has the blob.
    relayed_only: Option<(PeerId, Relayed)>,
}

/// Why a provider reached only through a relay was given up.
#[derive(Clone, Copy, Debug)]
enum Relayed {
    /// Hole punching failed this many times.
    Failed(u32),
    /// This node's NAT gives each peer a port of its own: no punch can succeed.
    NoPunch,
}

/// Every blob being fetched, and the requests in flight for them.
pub(crate) struct Downloads<R, Q> {
    local: PeerId,
    fetch_timeout: Duration,
    direct_wait: Duration,
    fetches: HashMap<blake3::Hash, Fetch<R, Q>>,
    /// Bounded by `MAX_FETCHES` × (`PIPELINE` + 1).
    requests: HashMap<R, (blake3::Hash, Ask)>,
    next_id: u64,
    /// Chunk groups fetched and stored since start.
    pub(crate) chunks_fetched: u64,
}

fn too_large(hash: blake3::Hash, len: u64, max: u64) -> NetError {
    NetError::BlobTooLarge {
        hash: hash.to_hex().to_string(),
        len,
        max,
    }
}

impl<R: Copy + Eq + std::hash::Hash, Q: Copy + Eq> Downloads<R, Q> {
    pub(crate) fn new(local: PeerId, fetch_timeout: Duration, direct_wait: Duration) -> Self {
        Downloads {
            local,
            fetch_timeout,
            direct_wait,
            fetches: HashMap::new(),
            requests: HashMap::new(),
            next_id: 0,
            chunks_fetched: 0,
        }
    }

    /// A caller wants `hash`, at most `max_len` bytes long; `hint` may hold it.
    pub(crate) fn start(
        &mut self,
        io: &mut impl Io<Req = R, Query = Q>,
        now: Instant,
        hash: blake3::Hash,
        hint: Option<PeerId>,
        max_len: u64,
        reply: oneshot::Sender<Result<(), NetError>>,
    ) {
        // A blob already held is not fetched, so its length is checked here instead.
        match io.held(&hash) {
            Ok(Some(len)) if len > max_len => {
                let _ = reply.send(Err(too_large(hash, len, max_len)));
                return;
            }
            Ok(Some(_)) => {
                let _ = reply.send(Ok(()));
                return;
            }
            Ok(None) => {}
            Err(e) => {
                let _ = reply.send(Err(NetError::Store(e.to_string())));
                return;
            }
        }
        if let Some(f) = self.fetches.get_mut(&hash) {
            if f.waiters.len() >= MAX_WAITERS {
                let _ = reply.send(Err(NetError::Busy("callers waiting for this blob")));
                return;
            }
            let known = f.import.as_ref().map(|i| i.outboard().len);
            if let Some(len) = known.filter(|l| *l > max_len) {
                let _ = reply.send(Err(too_large(hash, len, max_len)));
                return;
            }
            f.waiters.push((reply, max_len));
            if let Some(h) = hint {
                self.add_candidates(&*io, hash, [h]);
                self.advance(io, now, hash);
            }
            return;
        }
        if self.fetches.len() >= MAX_FETCHES {
            let _ = reply.send(Err(NetError::Busy("blob fetches")));
            return;
        }
        info!(blob = %hash, ?hint, "fetching blob");
        let query = io.find_providers(hash);
        self.next_id += 1;
        self.fetches.insert(
            hash,
            Fetch {
                id: self.next_id,
                waiters: vec![(reply, max_len)],
                candidates: VecDeque::new(),
                seen: HashSet::new(),
                banned: HashSet::new(),
                busy: HashSet::new(),
                single: HashSet::new(),
                current: None,
                outboard_req: None,
                beginning: false,
                import: None,
                pending: VecDeque::new(),
                in_flight: HashMap::new(),
                writing: HashMap::new(),
                finishing: false,
                providers_query: Some(query),
                deadline: now + self.fetch_timeout,
                direct_deadline: None,
                relayed_only: None,
            },
        );
        if let Some(h) = hint {
            self.add_candidates(&*io, hash, [h]);
        }
        self.advance(io, now, hash);
    }

    /// The provider query of `hash` found `peers`; `last`: the query `query` is over.
    pub(crate) fn providers(
        &mut self,
        io: &mut impl Io<Req = R, Query = Q>,
        now: Instant,
        hash: blake3::Hash,
        query: Q,
        peers: impl IntoIterator<Item = PeerId>,
        last: bool,
    ) {
        self.add_candidates(&*io, hash, peers);
        if last {
            if let Some(f) = self.fetches.get_mut(&hash) {
                if f.providers_query == Some(query) {
                    f.providers_query = None;
                }
            }
        }
        self.advance(io, now, hash);
    }

    fn add_candidates(
        &mut self,
        io: &impl Io<Req = R, Query = Q>,
        hash: blake3::Hash,
        peers: impl IntoIterator<Item = PeerId>,
    ) {
        let Some(f) = self.fetches.get_mut(&hash) else {
            return;
        };
        let mut best = u8::MAX;
        for p in peers {
            if p == self.local || f.seen.len() >= MAX_CANDIDATES || !f.seen.insert(p) {
                continue;
            }
            best = best.min(io.link(&p).rank());
            f.candidates.push_back(p);
        }
        // Waiting for a direct connection to the current provider (a dial, or a hole punch)
        // while one we may reach sooner turned up: switch (the current one stays a
        // candidate, after it).
        let better = f.current.is_some_and(|cur| best < io.link(&cur).rank());
        if better
            && f.direct_deadline.is_some()
            && f.outboard_req.is_none()
            && f.in_flight.is_empty()
        {
            if let Some(cur) = f.current.take() {
                f.candidates.push_back(cur);
                f.direct_deadline = None;
            }
        }
    }

    /// Moves a fetch forward: pick a provider if none, ask for the outboard, keep the
    /// pipeline full, finish when every group is stored, fail when nobody is left to ask.
    fn advance(&mut self, io: &mut impl Io<Req = R, Query = Q>, now: Instant, hash: blake3::Hash) {
        let Some(f) = self.fetches.get_mut(&hash) else {
            return;
        };
        if f.beginning || f.finishing {
            return;
        }
        if f.current.is_none() {
            // The first of the best ranked (`Link::rank`): providers reachable only through
            // a relay come last.
            let pick = f
                .candidates
                .iter()
                .enumerate()
                .filter(|(_, p)| !f.banned.contains(p))
                .min_by_key(|(i, p)| (io.link(p).rank(), *i))
                .map(|(i, _)| i);
            f.current = pick.and_then(|i| f.candidates.remove(i));
            let Some(peer) = f.current else {
                if f.providers_query.is_none() {
                    let err = match f.relayed_only {
                        Some((peer, Relayed::Failed(failures))) => NetError::RelayedOnly {
                            hash: hash.to_hex().to_string(),
                            peer,
                            failures,
                        },
                        Some((peer, Relayed::NoPunch)) => NetError::NoPunch {
                            hash: hash.to_hex().to_string(),
                            peer,
                        },
                        None => NetError::BlobUnavailable(hash.to_hex().to_string()),
                    };
                    self.finish(io, hash, Err(err));
                }
                return;
            };
            debug!(blob = %hash, %peer, "asking provider");
        }
        let Some(peer) = f.current else {
            return;
        };
        // Blobs travel over direct connections only: a relay carries control messages and
        // the hole punch, never bulk data.
        match io.link(&peer) {
            Link::Direct => {}
            // The hole punch over the current relayed connection already failed: nothing
            // will change before that connection is replaced, so do not wait for it.
            Link::Relayed {
                punch_over: true, ..
            } => return self.give_up_relayed(io, now, hash, peer),
            // Nor when no punch can succeed: the wait would only hold the caller (a lease)
            // for nothing (the NAT lab's symmetric variant waited 30 s, then declined).
            Link::Relayed { .. } | Link::Absent(Seen::RelayedOnly) if io.punch_hopeless() => {
                return self.give_up_relayed(io, now, hash, peer)
            }
            link => {
                if f.direct_deadline.is_none() {
                    f.direct_deadline = Some(now + self.direct_wait);
                    if let Link::Absent(_) = link {
                        io.dial(&peer);
                    } else {
                        info!(blob = %hash, %peer, wait_s = self.direct_wait.as_secs(), "blob fetch waits: only a relayed connection to this provider; waiting for the hole punch");
                    }
                }
                return;
            }
        }
        f.direct_deadline = None;
        let Some(import) = f.import.as_ref() else {
            if f.outboard_req.is_none() {
                let id = io.send(
                    &peer,
                    BlobRequest::Outboard {
                        hash: *hash.as_bytes(),
                    },
                );
                f.outboard_req = Some(id);
                self.requests.insert(id, (hash, Ask::Outboard));
            }
            return;
        };
        while f.in_flight.len() + f.writing.len() < PIPELINE {
            let Some(first) = f.pending.pop_front() else {
                break;
            };
            let mut count: u16 = 1;
            let max = if f.single.contains(&peer) {
                1
            } else {
                RANGE_GROUPS
            };
            while count < max && f.pending.front() == Some(&(first + u32::from(count))) {
                f.pending.pop_front();
                count += 1;
            }
            let h = *hash.as_bytes();
            let req = if count == 1 {
                BlobRequest::Chunk {
                    hash: h,
                    index: first,
                }
            } else {
                BlobRequest::Range {
                    hash: h,
                    first,
                    count,
                }
            };
            let id = io.send(&peer, req);
            f.in_flight.insert(id, (first, count));
            self.requests
                .insert(id, (hash, Ask::Range { first, count }));
        }
        if f.pending.is_empty() && f.in_flight.is_empty() && f.writing.is_empty() {
            f.finishing = true;
            io.store(StoreJob {
                fetch: f.id,
                hash,
                peer,
                kind: JobKind::Finish {
                    import: import.clone(),
                },
            });
        }
    }

    /// Groups to ask for: the import's missing ones, less those asked or being written.
    fn requeue(f: &mut Fetch<R, Q>) {
        let Some(import) = f.import.as_ref() else {
            f.pending.clear();
            return;
        };
        let busy = |g: u32| {
            f.in_flight
                .values()
                .any(|&(a, n)| g >= a && g < a + u32::from(n))
                || f.writing.iter().any(|(&a, &n)| g >= a && g < a + n)
        };
        f.pending = import.missing().into_iter().filter(|g| !busy(*g)).collect();
    }

    /// Stop using `peer` for this fetch. `bad`: it sent data that failed verification, so
    /// it is banned for this fetch and disconnected. The fetch resumes from the groups the
    /// import still misses.
    fn drop_provider(
        &mut self,
        io: &mut impl Io<Req = R, Query = Q>,
        now: Instant,
        hash: blake3::Hash,
        peer: PeerId,
        bad: bool,
    ) {
        let Some(f) = self.fetches.get_mut(&hash) else {
            return;
        };
        if bad && f.banned.insert(peer) {
            warn!(blob = %hash, %peer, "peer sent bad blob data: disconnecting it and trying another provider");
            io.disconnect(&peer);
        }
        if f.current != Some(peer) {
            return;
        }
        f.current = None;
        f.direct_deadline = None;
        for (id, _) in f.in_flight.drain() {
            self.requests.remove(&id);
        }
        if let Some(id) = f.outboard_req.take() {
            self.requests.remove(&id);
        }
        Self::requeue(f);
        self.advance(io, now, hash);
    }

    /// An answer to one of our blob requests.
    pub(crate) fn on_response(
        &mut self,
        io: &mut impl Io<Req = R, Query = Q>,
        now: Instant,
        peer: PeerId,
        id: R,
        frame: Vec<u8>,
    ) {
        // Unknown ids are answers to requests of a fetch that moved on: ignore them.
        let Some((hash, ask)) = self.requests.remove(&id) else {
            return;
        };
        let Some(f) = self.fetches.get_mut(&hash) else {
            return;
        };
        if let (Ask::Range { first, count }, Some(data)) = (ask, chunk_data(&frame)) {
            f.in_flight.remove(&id);
            let Some(import) = f.import.clone() else {
                return;
            };
            let ob = import.outboard();
            let end = first + u32::from(count);
            let want: usize = (first..end).map(|i| ob.chunk_len(i)).sum();
            if end > ob.chunk_count() || data.len() != want {
                if end >= ob.chunk_count() {
                    // A verified outboard still does not pin the exact length inside the
                    // last group, so the outboard may be the liar: fetch it again from the
                    // next provider (stored groups are kept and re-verified).
                    f.import = None;
                }
                return self.drop_provider(io, now, hash, peer, true);
            }
            f.writing.insert(first, u32::from(count));
            io.store(StoreJob {
                fetch: f.id,
                hash,
                peer,
                kind: JobKind::Write {
                    import,
                    first,
                    frame,
                    skip: 1,
                },
            });
            return self.advance(io, now, hash);
        }
        let resp = match BlobResponse::decode(&frame) {
            Ok(r) => r,
            Err(e) => {
                debug!(blob = %hash, "undecodable blob response: {e}");
                return self.drop_provider(io, now, hash, peer, true);
            }
        };
        match (ask, resp) {
            (Ask::Outboard, BlobResponse::Outboard { len, cvs }) => {
                f.outboard_req = None;
                // Checked off the swarm task; the verified length is then held against every
                // waiting caller's limit before a single piece is asked for.
                let max_len = f.waiters.iter().map(|(_, m)| *m).max().unwrap_or(0);
                f.beginning = true;
                io.store(StoreJob {
                    fetch: f.id,
                    hash,
                    peer,
                    kind: JobKind::Begin {
                        outboard: Outboard { len, cvs },
                        max_len,
                    },
                });
            }
            (Ask::Range { first, count }, BlobResponse::Error(BlobErrorCode::Malformed))
                if count > 1 =>
            {
                f.single.insert(peer);
                // A server from before range requests: ask it group by group.
                debug!(blob = %hash, %peer, "provider does not know range requests");
                f.in_flight.remove(&id);
                for g in (first..first + u32::from(count)).rev() {
                    f.pending.push_front(g);
                }
                self.advance(io, now, hash);
            }
            (_, BlobResponse::Error(BlobErrorCode::Busy)) => {
                if f.busy.insert(peer) {
                    f.candidates.push_back(peer);
                }
                self.drop_provider(io, now, hash, peer, false);
            }
            (_, BlobResponse::NotFound | BlobResponse::Error(_)) => {
                self.drop_provider(io, now, hash, peer, false)
            }
            // An answer of the wrong kind: the peer does not follow the protocol.
            _ => self.drop_provider(io, now, hash, peer, true),
        }
    }

    /// One of our blob requests failed (timeout, connection closed, stream refused).
    pub(crate) fn on_request_failed(
        &mut self,
        io: &mut impl Io<Req = R, Query = Q>,
        now: Instant,
        peer: PeerId,
        id: R,
    ) {
        if let Some((hash, _)) = self.requests.remove(&id) {
            debug!(blob = %hash, %peer, "blob request failed");
            self.drop_provider(io, now, hash, peer, false);
        }
    }

    /// A store job finished on the blocking pool.
    pub(crate) fn on_stored(
        &mut self,
        io: &mut impl Io<Req = R, Query = Q>,
        now: Instant,
        done: StoreDone,
    ) {
        let StoreDone {
            fetch,
            hash,
            peer,
            result,
        } = done;
        let Some(f) = self.fetches.get_mut(&hash).filter(|f| f.id == fetch) else {
            return;
        };
        match result {
            Done::Begun(Ok(import)) => {
                f.beginning = false;
                let len = import.outboard().len;
                let (fits, over): (Vec<_>, Vec<_>) = std::mem::take(&mut f.waiters)
                    .into_iter()
                    .partition(|(_, max)| len <= *max);
                f.waiters = fits;
                for (w, max) in over {
                    let _ = w.send(Err(too_large(hash, len, max)));
                }
                if f.waiters.is_empty() {
                    return self.over_every_limit(io, hash, len);
                }
                f.import = Some(import);
                Self::requeue(f);
                self.advance(io, now, hash);
            }
            Done::Begun(Err(StoreError::BadOutboard)) => {
                f.beginning = false;
                self.drop_provider(io, now, hash, peer, true);
            }
            Done::Begun(Err(
                e @ (StoreError::DiskLow { .. } | StoreError::QuotaExceeded { .. }),
            )) => self.finish(io, hash, Err(NetError::NoRoom(e.to_string()))),
            Done::Begun(Err(e)) => self.finish(io, hash, Err(NetError::Store(e.to_string()))),
            Done::TooLarge(len) => {
                let (fits, over): (Vec<_>, Vec<_>) = std::mem::take(&mut f.waiters)
                    .into_iter()
                    .partition(|(_, max)| len <= *max);
                for (w, max) in over {
                    let _ = w.send(Err(too_large(hash, len, max)));
                }
                if fits.is_empty() {
                    return self.over_every_limit(io, hash, len);
                }
                // A caller with a higher limit joined while the outboard was being checked:
                // check it again for them (the outboard is asked for again; it is small).
                f.waiters = fits;
                f.beginning = false;
                self.advance(io, now, hash);
            }
            Done::Written {
                first,
                stored,
                result,
            } => {
                f.writing.remove(&first);
                self.chunks_fetched += stored;
                match result {
                    Ok(()) => self.advance(io, now, hash),
                    Err(StoreError::BadChunk { index, .. }) => {
                        let last = f
                            .import
                            .as_ref()
                            .is_some_and(|i| index + 1 == i.outboard().chunk_count());
                        if last {
                            // As for a wrong length: the outboard may be the liar.
                            f.import = None;
                        }
                        if f.current != Some(peer) {
                            // Already moved on: still ban it, and ask again for what it
                            // failed to deliver.
                            self.drop_provider(io, now, hash, peer, true);
                            if let Some(f) = self.fetches.get_mut(&hash) {
                                Self::requeue(f);
                            }
                            return self.advance(io, now, hash);
                        }
                        self.drop_provider(io, now, hash, peer, true);
                    }
                    Err(e) => self.finish(io, hash, Err(NetError::Store(e.to_string()))),
                }
            }
            Done::Finished(result) => {
                let result = match result {
                    Ok(got) if got == hash => Ok(()),
                    Ok(got) => Err(NetError::Store(format!(
                        "import of {hash} finished as {got}"
                    ))),
                    Err(e) => Err(NetError::Store(e.to_string())),
                };
                if result.is_ok() {
                    info!(blob = %hash, "blob fetched and verified");
                    io.fetched(hash);
                }
                self.finish(io, hash, result);
            }
        }
    }

    fn over_every_limit(
        &mut self,
        io: &mut impl Io<Req = R, Query = Q>,
        hash: blake3::Hash,
        len: u64,
    ) {
        info!(blob = %hash, len, "blob over every waiting caller's limit; not fetched");
        self.finish(
            io,
            hash,
            Err(NetError::BlobTooLarge {
                hash: hash.to_hex().to_string(),
                len,
                max: 0,
            }),
        );
    }

    /// Deadlines: fetches past theirs fail; providers reachable only through a relay for too
    /// long are given up.
    pub(crate) fn tick(&mut self, io: &mut impl Io<Req = R, Query = Q>, now: Instant) {
        let expired: Vec<blake3::Hash> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(h, _)| *h)
            .collect();
        for hash in expired {
            self.finish(io, hash, Err(NetError::Timeout("blob fetch")));
        }
        let stuck: Vec<(blake3::Hash, PeerId)> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.direct_deadline.is_some_and(|d| d <= now))
            .filter_map(|(h, f)| f.current.map(|p| (*h, p)))
            .collect();
        for (hash, peer) in stuck {
            self.give_up_relayed(io, now, hash, peer);
        }
    }

    /// Fetches whose current provider is `peer` and that wait for a direct connection.
    fn waiting_on(&self, peer: PeerId) -> Vec<blake3::Hash> {
        self.fetches
            .iter()
            .filter(|(_, f)| f.current == Some(peer) && f.direct_deadline.is_some())
            .map(|(h, _)| *h)
            .collect()
    }

    /// A direct connection to `peer` opened: fetches waiting for it carry on.
    pub(crate) fn direct_to(
        &mut self,
        io: &mut impl Io<Req = R, Query = Q>,
        now: Instant,
        peer: PeerId,
    ) {
        for hash in self.waiting_on(peer) {
            self.advance(io, now, hash);
        }
    }

    /// `peer` cannot be reached directly (dial failed, hole punch failed): fetches waiting
    /// for it move on now.
    pub(crate) fn unreachable(
        &mut self,
        io: &mut impl Io<Req = R, Query = Q>,
        now: Instant,
        peer: PeerId,
    ) {
        for hash in self.waiting_on(peer) {
            self.give_up_relayed(io, now, hash, peer);
        }
    }

    /// The current provider of `hash` is still not directly connected: try another one, and
    /// remember why.
    fn give_up_relayed(
        &mut self,
        io: &mut impl Io<Req = R, Query = Q>,
        now: Instant,
        hash: blake3::Hash,
        peer: PeerId,
    ) {
        let Some(f) = self.fetches.get_mut(&hash) else {
            return;
        };
        if f.current != Some(peer) {
            return;
        }
        match io.link(&peer) {
            Link::Relayed {
                punch_over: false, ..
            }
            | Link::Absent(Seen::RelayedOnly)
                if io.punch_hopeless() =>
            {
                warn!(blob = %hash, %peer, "only a relayed connection to this provider, and this node's NAT gives each peer a port of its own: no hole punch can give a direct one; trying another provider");
                f.relayed_only = Some((peer, Relayed::NoPunch));
            }
            Link::Relayed { failures, .. } => {
                warn!(blob = %hash, %peer, failures, "only a relayed connection to this provider and hole punching did not give a direct one; trying another provider");
                f.relayed_only = Some((peer, Relayed::Failed(failures)));
            }
            _ => info!(blob = %hash, %peer, "no connection to this provider; trying another"),
        }
        self.drop_provider(io, now, hash, peer, false);
    }

    /// Ends a fetch and answers every caller still waiting.
    fn finish(
        &mut self,
        io: &mut impl Io<Req = R, Query = Q>,
        hash: blake3::Hash,
        result: Result<(), NetError>,
    ) {
        let Some(f) = self.fetches.remove(&hash) else {
            return;
        };
        for id in f.in_flight.keys().chain(f.outboard_req.iter()) {
            self.requests.remove(id);
        }
        if let Some(q) = f.providers_query {
            io.cancel_query(q);
        }
        if let Err(e) = &result {
            warn!(blob = %hash, "blob fetch failed: {e}");
        }
        for (w, _) in f.waiters {
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests;
