//! Hearth's Kademlia lookups under attack, over real connections. Peers that answer every
//! lookup with one another's names, and whose keys lie nearer the key looked up than any honest
//! peer's (keys cost nothing to make), capture a plain Kademlia lookup that asks one of them:
//! their answers are nearer than anything an honest peer names, and the lookup ends once the 20
//! nearest peers it heard of have answered, so an honest peer that an honest answer named is
//! never asked. With S/Kademlia's disjoint paths (`behaviour::kademlia_config`) each answer
//! feeds only the path that asked for it: the path that started at the honest peer follows
//! honest answers to the provider's record.
//!
//! Measured when it was written (2026-12-04): without disjoint paths the test failed 9 times in
//! 9, with them it passed 10 in 10. It takes 64 attackers that each name different ones (a ring,
//! each knowing the next 20): with 24 that all knew one another a plain lookup still reached the
//! honest peer, because libp2p-kad, once 3 answers bring nothing nearer, asks up to 20 peers at
//! once, walking past the nearest 20 while some of them have not answered yet.
//!
//! It failed once in CI (2026-12-04, the whole suite on two loaded cores) with disjoint paths
//! on, most likely because the honest path's one request timed out (not proven: the test did
//! not say then whether the honest peer was asked). The honest peer now counts the lookups it is asked: a lookup that never reached it
//! (its one request failed, so its path ended) is tried again, up to three, and only a lookup
//! that asked it and still missed the holder is capture. Without disjoint paths it still
//! fails at the first lookup, with the honest peer asked (three runs in three).

use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::store::MemoryStore;
use libp2p::kad::{self, GetProvidersOk, KBucketKey, QueryResult, RecordKey};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder};

use super::behaviour::kademlia_config;
use super::KAD_PROTOCOL;

type Kad = kad::Behaviour<MemoryStore>;

/// A Kademlia-only node listening on loopback, with `cfg`; returns it with its address.
async fn node(key: Keypair, cfg: kad::Config) -> (Swarm<Kad>, Multiaddr) {
    let peer = key.public().to_peer_id();
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| kad::Behaviour::with_config(peer, MemoryStore::new(peer), cfg))
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.behaviour_mut().set_mode(Some(kad::Mode::Server));
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    (swarm, addr)
}

/// Plain Kademlia that keeps to the routing table it is given (no peer that connects is added).
fn plain() -> kad::Config {
    let mut cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
    cfg.set_kbucket_inserts(kad::BucketInserts::Manual);
    cfg
}

/// How many leading bits `peer`'s Kademlia key shares with `target`'s.
fn shared_bits(peer: &PeerId, target: &KBucketKey<RecordKey>) -> u32 {
    let distance = KBucketKey::from(*peer).distance(target);
    distance.ilog2().map_or(256, |b| 255 - b)
}

/// A key whose peer shares at least `at_least` and at most `at_most` leading bits with
/// `target` (ground by trying fresh keys: about 2^at_least tries).
fn key_sharing(target: &KBucketKey<RecordKey>, at_least: u32, at_most: u32) -> Keypair {
    loop {
        let key = Keypair::generate_ed25519();
        let bits = shared_bits(&key.public().to_peer_id(), target);
        if (at_least..=at_most).contains(&bits) {
            return key;
        }
    }
}

/// Runs a swarm in the background, doing nothing but answering.
fn serve(mut swarm: Swarm<Kad>) {
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_reaches_the_honest_provider_past_peers_that_name_only_one_another() {
    let key = RecordKey::new(blake3::hash(b"a blob the attackers hide").as_bytes());
    let target = KBucketKey::new(key.clone());

    // 64 attackers, every key sharing at least 8 leading bits with the target (so nearer it
    // than any honest peer here); each knows the next 20 of them and no one else, so every
    // answer it gives names only attackers, and different ones.
    const ROGUES: usize = 64;
    let mut rogues = Vec::new();
    for _ in 0..ROGUES {
        rogues.push(node(key_sharing(&target, 8, 256), plain()).await);
    }
    let ring: Vec<(PeerId, Multiaddr)> = rogues
        .iter()
        .map(|(s, a)| (*s.local_peer_id(), a.clone()))
        .collect();
    for (i, (swarm, _)) in rogues.iter_mut().enumerate() {
        for j in 1..=20 {
            let (peer, addr) = &ring[(i + j) % ROGUES];
            swarm.behaviour_mut().add_address(peer, addr.clone());
        }
    }
    for (swarm, _) in rogues {
        serve(swarm);
    }

    // Two honest peers, far from the target (at most 2 shared bits): the first knows only
    // the second, which holds the provider's record.
    let (holder, holder_addr) = node(key_sharing(&target, 0, 2), plain()).await;
    let holder_id = *holder.local_peer_id();
    serve(holder);
    let (mut first, first_addr) = node(key_sharing(&target, 0, 2), plain()).await;
    let first_id = *first.local_peer_id();
    first
        .behaviour_mut()
        .add_address(&holder_id, holder_addr.clone());
    // How many provider lookups the honest peer was asked (and so answered, naming the holder).
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(kad::Event::InboundRequest {
                request: kad::InboundRequest::GetProvider { .. },
            }) = first.select_next_some().await
            {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let (mut provider, provider_addr) = node(key_sharing(&target, 0, 2), plain()).await;
    let provider_id = *provider.local_peer_id();
    // The record carries the provider's external addresses (the holder knows no other).
    provider.add_external_address(provider_addr);
    provider
        .behaviour_mut()
        .add_address(&holder_id, holder_addr.clone());
    provider
        .behaviour_mut()
        .start_providing(key.clone())
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                result: QueryResult::StartProviding(done),
                ..
            }) = provider.select_next_some().await
            {
                done.expect("the provider stored its record at the holder");
                return;
            }
        }
    })
    .await
    .expect("the provider's record was stored within 20 s");
    serve(provider);

    // The node looking up the key runs hearth's Kademlia and knows two attackers and the
    // first honest peer, so it asks all three at once (3 in parallel): the honest peer names
    // the holder, the attackers 20 of their own, all nearer the key than the holder.
    let (mut me, _) = node(Keypair::generate_ed25519(), kademlia_config()).await;
    for (peer, addr) in ring.iter().take(2) {
        me.behaviour_mut().add_address(peer, addr.clone());
        assert!(shared_bits(peer, &target) > shared_bits(&first_id, &target));
    }
    me.behaviour_mut().add_address(&first_id, first_addr);
    // Already connected to the attackers, as a node is to peers it has used: their answers
    // come before the honest peer's, whose connection is still being set up.
    for (_, addr) in ring.iter().take(2) {
        me.dial(addr.clone()).unwrap();
    }
    let mut connected = 0;
    while connected < 2 {
        if let SwarmEvent::ConnectionEstablished { .. } = me.select_next_some().await {
            connected += 1;
        }
    }
    // A lookup can also miss the holder because the one request the honest path starts with
    // failed: on two loaded cores (the whole test suite at once) the honest peer, served on
    // this test's runtime beside 64 busy attackers, may not answer in time, and that path
    // ends. That is not capture, so a lookup whose request to the honest peer failed is
    // tried again (at most three lookups), and the verdict is on lookups that did ask it.
    let mut failures = Vec::new();
    for attempt in 1..=3 {
        let before = asked.load(std::sync::atomic::Ordering::SeqCst);
        me.behaviour_mut().get_providers(key.clone());
        let found = tokio::time::timeout(Duration::from_secs(40), async {
            loop {
                if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                    result: QueryResult::GetProviders(result),
                    step,
                    ..
                }) = me.select_next_some().await
                {
                    if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = &result {
                        if providers.contains(&provider_id) {
                            return true;
                        }
                    }
                    if step.last {
                        return false;
                    }
                }
            }
        })
        .await
        .expect("the lookup ended within 40 s");
        if found {
            return;
        }
        assert!(
            asked.load(std::sync::atomic::Ordering::SeqCst) == before,
            "lookup {attempt} asked the honest peer and still ended without asking the peer \
             holding the record: the attackers' answers captured it"
        );
        failures.push(attempt);
    }
    panic!("in each of lookups {failures:?} the request to the honest peer failed");
}
