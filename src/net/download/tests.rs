//! The download state machine driven by hand: a fake swarm side ([`Fake`]), a real store in a
//! temporary directory (store jobs run inline), no network and no clock.

use super::*;
use crate::store::CHUNK_SIZE;

/// The swarm side, recorded.
#[derive(Default)]
struct Fake {
    links: HashMap<PeerId, Link>,
    /// What `punch_hopeless` answers.
    hopeless: bool,
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
        self.links
            .get(peer)
            .copied()
            .unwrap_or(Link::Absent(Seen::Unknown))
    }
    fn punch_hopeless(&self) -> bool {
        self.hopeless
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

/// Reached only through a relay, its hole punch under way after `failures` failed ones.
fn relayed_punching(failures: u32) -> Link {
    Link::Relayed {
        punch_over: false,
        failures,
    }
}

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
    assert_eq!(h.io.sent.len(), PIPELINE.min(3));
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
    let data = blob(40 * CHUNK_SIZE);
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

/// A blob the store has no room for (its quota here) ends the fetch with `NoRoom`, which the
/// worker gives back with the reason, not as a store failure or an unreachable provider.
#[test]
fn a_blob_the_store_has_no_room_for_ends_the_fetch_saying_so() {
    let mut h = Harness::new();
    h.store.set_quota(CHUNK_SIZE as u64);
    let data = blob(3 * CHUNK_SIZE);
    let hash = blake3::hash(&data);
    let a = PeerId::random();
    h.io.links.insert(a, Link::Direct);
    let mut rx = h.start(hash, Some(a), data.len() as u64);
    h.answer(&data, &[]);
    let got = rx.try_recv().unwrap();
    assert!(
        matches!(&got, Err(NetError::NoRoom(why)) if why.contains("quota")),
        "{got:?}"
    );
    assert_eq!(h.store.usage().unwrap(), 0);
}

#[test]
fn a_provider_reachable_only_through_a_relay_is_given_up_after_the_wait() {
    let mut h = Harness::new();
    let hash = blake3::hash(b"somewhere else");
    let relayed = PeerId::random();
    h.io.links.insert(relayed, relayed_punching(2));
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

/// Behind a NAT that gives each peer a port of its own (`mapping.rs`) no punch can come: the
/// fetch moves on at once, neither waiting for one nor dialling a home known to be reached
/// only through a relay (a circuit for nothing), and says why.
#[test]
fn behind_a_symmetric_nat_a_relayed_only_provider_is_given_up_at_once() {
    let mut h = Harness::new();
    h.io.hopeless = true;
    let hash = blake3::hash(b"at a home behind a relay");
    let (relayed, home) = (PeerId::random(), PeerId::random());
    h.io.links.insert(relayed, relayed_punching(0));
    h.io.links.insert(home, Link::Absent(Seen::RelayedOnly));
    let mut rx = h.start(hash, Some(relayed), u64::MAX);
    h.d.providers(&mut h.io, h.now, hash, QUERY, [home], true);
    assert!(
        h.io.sent.is_empty() && h.io.dialed.is_empty(),
        "{:?}",
        h.io.dialed
    );
    let got = rx.try_recv().expect("answered without waiting");
    assert!(
        matches!(&got, Err(NetError::NoPunch { peer, .. }) if *peer == home),
        "{got:?}"
    );
    let msg = got.unwrap_err().to_string();
    assert!(msg.contains("port of its own"), "{msg}");
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

/// `testnet/dht-scale` (docs/scale.md, item 7): most providers of a job's inputs are homes
/// behind NAT, and each dial of one is a circuit the relay charges to the radiator.
#[test]
fn providers_known_to_list_a_public_address_are_asked_before_homes_behind_a_relay() {
    let mut h = Harness::new();
    let data = blob(3 * CHUNK_SIZE);
    let hash = blake3::hash(&data);
    let (home, unknown, public) = (PeerId::random(), PeerId::random(), PeerId::random());
    h.io.links.insert(home, Link::Absent(Seen::RelayedOnly));
    h.io.links.insert(unknown, Link::Absent(Seen::Unknown));
    h.io.links.insert(public, Link::Absent(Seen::Public));
    // The job's coordinator, a home, is the hint: the only provider known, so it is dialled.
    let mut rx = h.start(hash, Some(home), u64::MAX);
    assert_eq!(h.io.dialed, vec![home]);
    // The lookup finds others: the public one is dialled at once, the home kept for later.
    h.d.providers(&mut h.io, h.now, hash, QUERY, [unknown, public], true);
    assert_eq!(h.io.dialed, vec![home, public]);
    h.io.links.insert(public, Link::Direct);
    h.d.direct_to(&mut h.io, h.now, public);
    let answered = h.answer(&data, &[]);
    assert!(answered.iter().all(|(p, _)| *p == public), "{answered:?}");
    assert!(matches!(rx.try_recv(), Ok(Ok(()))));
}

#[test]
fn without_a_hint_providers_are_tried_best_ranked_first() {
    let mut h = Harness::new();
    let hash = blake3::hash(b"held by three");
    let (home, relayed, unknown, public) = (
        PeerId::random(),
        PeerId::random(),
        PeerId::random(),
        PeerId::random(),
    );
    h.io.links.insert(home, Link::Absent(Seen::RelayedOnly));
    h.io.links.insert(relayed, relayed_punching(0));
    h.io.links.insert(unknown, Link::Absent(Seen::Unknown));
    h.io.links.insert(public, Link::Absent(Seen::Public));
    let _rx = h.start(hash, None, u64::MAX);
    h.d.providers(
        &mut h.io,
        h.now,
        hash,
        QUERY,
        [home, relayed, unknown, public],
        true,
    );
    assert_eq!(h.io.dialed, vec![public]);
    h.d.unreachable(&mut h.io, h.now, public);
    assert_eq!(h.io.dialed, vec![public, unknown]);
    h.d.unreachable(&mut h.io, h.now, unknown);
    // Last, the two reachable only through a relay, in the order they were found.
    assert_eq!(h.io.dialed, vec![public, unknown, home]);
}
