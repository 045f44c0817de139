//! The download state machine driven by hand: a fake swarm side ([`Fake`]), a real store in a
//! temporary directory (store jobs run inline), no network and no clock.

use super::*;
use crate::store::CHUNK_SIZE;

/// The swarm side, recorded.
#[derive(Default)]
struct Fake {
    links: HashMap<PeerId, Link>,
    next: u64,
    /// Requests sent and not yet answered by the test: id → (peer, request).
    sent: Vec<(u64, PeerId, BlobRequest)>,
    dialed: Vec<PeerId>,
    disconnected: Vec<PeerId>,
    cancelled: Vec<u64>,
    jobs: Vec<StoreJob>,
    fetched: Vec<blake3::Hash>,
    store: Option<Store>,
}

impl Io for Fake {
    type Req = u64;
    type Query = u64;

    fn link(&self, peer: &PeerId) -> Link {
        self.links.get(peer).copied().unwrap_or(Link::Absent)
    }
    fn held(&self, hash: &blake3::Hash) -> Result<Option<u64>, StoreError> {
        self.store.as_ref().expect("store").len(hash)
    }
    fn send(&mut self, peer: &PeerId, req: BlobRequest) -> u64 {
        self.next += 1;
        self.sent.push((self.next, *peer, req));
        self.next
    }
    fn dial(&mut self, peer: &PeerId) {
        self.dialed.push(*peer);
    }
    fn disconnect(&mut self, peer: &PeerId) {
        self.disconnected.push(*peer);
    }
    fn find_providers(&mut self, _: blake3::Hash) -> u64 {
        1_000_000
    }
    fn cancel_query(&mut self, q: u64) {
        self.cancelled.push(q);
    }
    fn store(&mut self, job: StoreJob) {
        self.jobs.push(job);
    }
    fn fetched(&mut self, hash: blake3::Hash) {
        self.fetched.push(hash);
    }
}

const QUERY: u64 = 1_000_000;

struct Harness {
    d: Downloads<u64, u64>,
    io: Fake,
    now: Instant,
    store: Store,
    _dir: tempfile::TempDir,
}

fn blob(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        Harness {
            d: Downloads::new(
                PeerId::random(),
                Duration::from_secs(600),
                Duration::from_secs(30),
            ),
            io: Fake {
                store: Some(store.clone()),
                ..Fake::default()
            },
            now: Instant::now(),
            store,
            _dir: dir,
        }
    }

    fn start(
        &mut self,
        hash: blake3::Hash,
        hint: Option<PeerId>,
        max: u64,
    ) -> oneshot::Receiver<Result<(), NetError>> {
        let (tx, rx) = oneshot::channel();
        self.d.start(&mut self.io, self.now, hash, hint, max, tx);
        rx
    }

    /// Runs every queued store job, as the blocking pool would, and feeds back the results.
    fn run_jobs(&mut self) {
        while !self.io.jobs.is_empty() {
            for job in std::mem::take(&mut self.io.jobs) {
                let done = job.run(&self.store);
                self.d.on_stored(&mut self.io, self.now, done);
            }
        }
    }

    /// Answers every request sent so far from `data` as `peer` would, `damage` flipping a
    /// byte of the groups it names, and runs the store jobs. Returns the requests answered.
    fn answer(&mut self, data: &[u8], damage: &[u32]) -> Vec<(PeerId, BlobRequest)> {
        let mut answered = Vec::new();
        while !self.io.sent.is_empty() {
            for (id, peer, req) in std::mem::take(&mut self.io.sent) {
                let frame = respond(data, &req, damage);
                answered.push((peer, req));
                self.d.on_response(&mut self.io, self.now, peer, id, frame);
            }
            self.run_jobs();
        }
        answered
    }
}

/// What an honest server holding `data` answers (with the groups in `damage` corrupted).
fn respond(data: &[u8], req: &BlobRequest, damage: &[u32]) -> Vec<u8> {
    let (first, count) = match *req {
        BlobRequest::Outboard { .. } => {
            let ob = Outboard::compute(data);
            return BlobResponse::Outboard {
                len: ob.len,
                cvs: ob.cvs,
            }
            .encode();
        }
        BlobRequest::Chunk { index, .. } => (index as usize, 1),
        BlobRequest::Range { first, count, .. } => (first as usize, count as usize),
    };
    let mut out = data[first * CHUNK_SIZE..((first + count) * CHUNK_SIZE).min(data.len())].to_vec();
    for &g in damage {
        let g = g as usize;
        if g >= first && g < first + count {
            out[(g - first) * CHUNK_SIZE] ^= 1;
        }
    }
    BlobResponse::Chunk(out).encode()
}

fn groups(req: &BlobRequest) -> Vec<u32> {
    match *req {
        BlobRequest::Outboard { .. } => vec![],
        BlobRequest::Chunk { index, .. } => vec![index],
        BlobRequest::Range { first, count, .. } => (first..first + u32::from(count)).collect(),
    }
}

#[test]
fn one_provider_outboard_then_ranges_then_durable() {
    let mut h = Harness::new();
    let data = blob(10 * CHUNK_SIZE + 5); // 11 groups
    let hash = blake3::hash(&data);
    let a = PeerId::random();
    h.io.links.insert(a, Link::Direct);
    let mut rx = h.start(hash, Some(a), u64::MAX);
    // The outboard first, nothing else.
    assert_eq!(h.io.sent.len(), 1);
    assert!(matches!(h.io.sent[0].2, BlobRequest::Outboard { .. }));
    let (id, peer, _) = h.io.sent.remove(0);
    h.d.on_response(
        &mut h.io,
        h.now,
        peer,
        id,
        respond(&data, &BlobRequest::Outboard { hash: [0; 32] }, &[]),
    );
    // Checking it is store work, off the swarm task: no request until it is done.
    assert!(h.io.sent.is_empty());
    assert_eq!(h.io.jobs.len(), 1);
    h.run_jobs();
    // Then ranges of RANGE_GROUPS, PIPELINE at a time.
    assert_eq!(
        h.io.sent.len(),
        PIPELINE.min(11usize.div_ceil(usize::from(RANGE_GROUPS)))
    );
    let asked: Vec<u32> = h.io.sent.iter().flat_map(|(_, _, r)| groups(r)).collect();
    assert_eq!(asked, (0..11).collect::<Vec<_>>());
    assert!(matches!(
        h.io.sent[0].2,
        BlobRequest::Range {
            first: 0,
            count: RANGE_GROUPS,
            ..
        }
    ));
    h.answer(&data, &[]);
    assert!(matches!(rx.try_recv(), Ok(Ok(()))));
    assert_eq!(h.io.fetched, vec![hash]);
    assert_eq!(h.io.cancelled, vec![QUERY]);
    assert_eq!(h.d.chunks_fetched, 11);
    assert_eq!(h.store.get_bytes(&hash).unwrap(), data);
    // Held now: a second fetch asks nobody.
    let mut again = h.start(hash, Some(a), u64::MAX);
    assert!(matches!(again.try_recv(), Ok(Ok(()))));
    assert!(h.io.sent.is_empty());
}

#[test]
fn pipeline_counts_pieces_being_written() {
    let mut h = Harness::new();
    let data = blob((PIPELINE + 2) * usize::from(RANGE_GROUPS) * CHUNK_SIZE);
    let hash = blake3::hash(&data);
    let a = PeerId::random();
    h.io.links.insert(a, Link::Direct);
    let _rx = h.start(hash, Some(a), u64::MAX);
    let (id, peer, req) = h.io.sent.remove(0);
    h.d.on_response(&mut h.io, h.now, peer, id, respond(&data, &req, &[]));
    h.run_jobs();
    assert_eq!(h.io.sent.len(), PIPELINE);
    // Answer everything but keep the writes pending (a slow disk): no new request goes out.
    for (id, peer, req) in std::mem::take(&mut h.io.sent) {
        h.d.on_response(&mut h.io, h.now, peer, id, respond(&data, &req, &[]));
    }
    assert!(
        h.io.sent.is_empty(),
        "asked more while {PIPELINE} writes were pending"
    );
    assert_eq!(h.io.jobs.len(), PIPELINE);
    // One write done: one more request.
    let job = h.io.jobs.remove(0);
    let done = job.run(&h.store);
    h.d.on_stored(&mut h.io, h.now, done);
    assert_eq!(h.io.sent.len(), 1);
}

#[test]
fn a_liar_is_banned_and_the_next_provider_sends_only_what_is_missing() {
    let mut h = Harness::new();
    let data = blob(12 * CHUNK_SIZE); // 12 groups
    let hash = blake3::hash(&data);
    let (liar, honest) = (PeerId::random(), PeerId::random());
    h.io.links.insert(liar, Link::Direct);
    h.io.links.insert(honest, Link::Direct);
    let mut rx = h.start(hash, Some(liar), u64::MAX);
    h.d.providers(&mut h.io, h.now, hash, QUERY, [honest], true);
    // The liar damages group 9 (its other groups are good and are kept).
    let mut by_liar = Vec::new();
    while let Some(pos) = h.io.sent.iter().position(|(_, p, _)| *p == liar) {
        let (id, peer, req) = h.io.sent.remove(pos);
        by_liar.extend(groups(&req));
        h.d.on_response(&mut h.io, h.now, peer, id, respond(&data, &req, &[9]));
        h.run_jobs();
    }
    assert_eq!(h.io.disconnected, vec![liar]);
    let answered = h.answer(&data, &[]);
    assert!(answered.iter().all(|(p, _)| *p == honest));
    let from_honest: Vec<u32> = answered.iter().flat_map(|(_, r)| groups(r)).collect();
    // Everything the liar sent intact stays: the honest peer is asked only for the rest
    // (from group 8, the start of the range the damaged group came in).
    assert!(from_honest.iter().all(|g| *g >= 8), "{from_honest:?}");
    assert!(by_liar.contains(&9));
    assert!(matches!(rx.try_recv(), Ok(Ok(()))));
    assert_eq!(h.d.chunks_fetched, 12, "each group counted once");
    assert_eq!(h.store.get_bytes(&hash).unwrap(), data);
}

#[test]
fn a_blob_over_every_callers_limit_is_refused_at_the_outboard() {
    let mut h = Harness::new();
    let data = blob(3 * CHUNK_SIZE);
    let hash = blake3::hash(&data);
    let a = PeerId::random();
    h.io.links.insert(a, Link::Direct);
    let mut rx = h.start(hash, Some(a), data.len() as u64 - 1);
    h.answer(&data, &[]);
    assert!(matches!(
        rx.try_recv().unwrap(),
        Err(NetError::BlobTooLarge { len, .. }) if len == data.len() as u64
    ));
    // Nothing was begun, nothing counts against the quota.
    assert_eq!(h.store.usage().unwrap(), 0);
}

#[test]
fn a_provider_reachable_only_through_a_relay_is_given_up_after_the_wait() {
    let mut h = Harness::new();
    let hash = blake3::hash(b"somewhere else");
    let relayed = PeerId::random();
    h.io.links.insert(
        relayed,
        Link::Relayed {
            punch_over: false,
            failures: 2,
        },
    );
    let mut rx = h.start(hash, Some(relayed), u64::MAX);
    h.d.providers(&mut h.io, h.now, hash, QUERY, [], true);
    assert!(h.io.sent.is_empty(), "no blob request over a relay");
    h.d.tick(&mut h.io, h.now + Duration::from_secs(29));
    assert!(rx.try_recv().is_err(), "still waiting for the hole punch");
    h.d.tick(&mut h.io, h.now + Duration::from_secs(31));
    assert!(matches!(
        rx.try_recv().unwrap(),
        Err(NetError::RelayedOnly { peer, failures: 2, .. }) if peer == relayed
    ));
}

#[test]
fn an_absent_provider_is_dialled_and_a_dead_end_fails_the_fetch() {
    let mut h = Harness::new();
    let hash = blake3::hash(b"nobody has it");
    let a = PeerId::random();
    let mut rx = h.start(hash, Some(a), u64::MAX);
    assert_eq!(h.io.dialed, vec![a]);
    h.d.providers(&mut h.io, h.now, hash, QUERY, [], true);
    h.d.unreachable(&mut h.io, h.now, a);
    assert!(matches!(
        rx.try_recv().unwrap(),
        Err(NetError::BlobUnavailable(_))
    ));
}

#[test]
fn a_server_without_range_requests_is_asked_group_by_group() {
    let mut h = Harness::new();
    let data = blob(6 * CHUNK_SIZE);
    let hash = blake3::hash(&data);
    let old = PeerId::random();
    h.io.links.insert(old, Link::Direct);
    let mut rx = h.start(hash, Some(old), u64::MAX);
    while let Some((id, peer, req)) = h.io.sent.pop() {
        let frame = match req {
            BlobRequest::Range { .. } => BlobResponse::Error(BlobErrorCode::Malformed).encode(),
            _ => respond(&data, &req, &[]),
        };
        h.d.on_response(&mut h.io, h.now, peer, id, frame);
        h.run_jobs();
    }
    assert!(matches!(rx.try_recv(), Ok(Ok(()))));
    assert!(h.io.disconnected.is_empty(), "not knowing ranges is no lie");
    assert_eq!(h.store.get_bytes(&hash).unwrap(), data);
}

/// The blob a request is for.
fn blob_of(req: &BlobRequest) -> [u8; 32] {
    match *req {
        BlobRequest::Outboard { hash }
        | BlobRequest::Chunk { hash, .. }
        | BlobRequest::Range { hash, .. } => hash,
    }
}

#[test]
fn all_fetches_together_hold_at_most_the_buffer_limit_and_a_starved_one_goes_first() {
    let mut h = Harness::new();
    let per_fetch = PIPELINE as u32 * u32::from(RANGE_GROUPS);
    // Enough fetches, each asking as much as it may, to fill the limit, and one more.
    let full = (MAX_BUFFERED_GROUPS / per_fetch) as usize;
    let blobs: Vec<Vec<u8>> = (0..=full)
        .map(|k| vec![k as u8 + 1; per_fetch as usize * CHUNK_SIZE])
        .collect();
    let hashes: Vec<blake3::Hash> = blobs.iter().map(|b| blake3::hash(b)).collect();
    // One provider each, so the per-provider limit does not bind first.
    let mut _rx = Vec::new();
    for x in &hashes {
        let p = PeerId::random();
        h.io.links.insert(p, Link::Direct);
        _rx.push(h.start(*x, Some(p), u64::MAX));
    }
    for (id, peer, req) in std::mem::take(&mut h.io.sent) {
        let k = hashes
            .iter()
            .position(|x| *x.as_bytes() == blob_of(&req))
            .unwrap();
        h.d.on_response(&mut h.io, h.now, peer, id, respond(&blobs[k], &req, &[]));
    }
    h.run_jobs();
    let asked = |sent: &[(u64, PeerId, BlobRequest)], hash: &blake3::Hash| -> u32 {
        sent.iter()
            .filter(|(_, _, r)| blob_of(r) == *hash.as_bytes())
            .map(|(_, _, r)| groups(r).len() as u32)
            .sum()
    };
    let total: u32 = hashes.iter().map(|x| asked(&h.io.sent, x)).sum();
    assert_eq!(total, MAX_BUFFERED_GROUPS);
    let last = hashes[full];
    assert_eq!(
        asked(&h.io.sent, &last),
        0,
        "the fetch over the limit waits"
    );
    // One range of the first fetch answered and stored: the room it held goes to the fetch
    // that waited, not back to the first one.
    let pos =
        h.io.sent
            .iter()
            .position(|(_, _, r)| blob_of(r) == *hashes[0].as_bytes())
            .unwrap();
    let (id, peer, req) = h.io.sent.remove(pos);
    let freed = groups(&req).len() as u32;
    h.d.on_response(&mut h.io, h.now, peer, id, respond(&blobs[0], &req, &[]));
    assert_eq!(
        asked(&h.io.sent, &last),
        0,
        "still held while being written"
    );
    h.run_jobs();
    assert_eq!(asked(&h.io.sent, &last), freed);
    assert_eq!(asked(&h.io.sent, &hashes[0]), per_fetch - freed);
    let total: u32 = hashes.iter().map(|x| asked(&h.io.sent, x)).sum();
    assert_eq!(total, MAX_BUFFERED_GROUPS);
    // Everything answered: every fetch completes.
    while !h.io.sent.is_empty() {
        for (id, peer, req) in std::mem::take(&mut h.io.sent) {
            let k = hashes
                .iter()
                .position(|x| *x.as_bytes() == blob_of(&req))
                .unwrap();
            h.d.on_response(&mut h.io, h.now, peer, id, respond(&blobs[k], &req, &[]));
        }
        h.run_jobs();
    }
    for x in &hashes {
        assert!(h.store.has(x).unwrap());
    }
}

#[test]
fn fetches_from_one_provider_share_its_per_peer_limit() {
    let mut h = Harness::new();
    let len = PIPELINE * usize::from(RANGE_GROUPS) * CHUNK_SIZE;
    let blobs = [vec![1u8; len], vec![2u8; len]];
    let hashes = [blake3::hash(&blobs[0]), blake3::hash(&blobs[1])];
    let a = PeerId::random();
    h.io.links.insert(a, Link::Direct);
    let _rx: Vec<_> = hashes
        .iter()
        .map(|x| h.start(*x, Some(a), u64::MAX))
        .collect();
    let which = |req: &BlobRequest| usize::from(blob_of(req) == *hashes[1].as_bytes());
    for (id, peer, req) in std::mem::take(&mut h.io.sent) {
        let frame = respond(&blobs[which(&req)], &req, &[]);
        h.d.on_response(&mut h.io, h.now, peer, id, frame);
    }
    h.run_jobs();
    // The first fetch takes what the provider serves one peer at once; the second waits
    // instead of being answered `Busy`.
    assert_eq!(h.io.sent.len(), MAX_REQUESTS_PER_PEER);
    assert!(h.io.sent.iter().all(|(_, _, r)| which(r) == 0));
    // One answer frees one request's worth for the fetch that waited.
    let (id, peer, req) = h.io.sent.remove(0);
    h.d.on_response(&mut h.io, h.now, peer, id, respond(&blobs[0], &req, &[]));
    assert_eq!(h.io.sent.len(), MAX_REQUESTS_PER_PEER);
    assert_eq!(
        h.io.sent.iter().filter(|(_, _, r)| which(r) == 1).count(),
        1
    );
    h.run_jobs();
    while !h.io.sent.is_empty() {
        assert!(h.io.sent.len() <= MAX_REQUESTS_PER_PEER);
        for (id, peer, req) in std::mem::take(&mut h.io.sent) {
            let frame = respond(&blobs[which(&req)], &req, &[]);
            h.d.on_response(&mut h.io, h.now, peer, id, frame);
        }
        h.run_jobs();
    }
    assert!(h.store.has(&hashes[0]).unwrap() && h.store.has(&hashes[1]).unwrap());
}
