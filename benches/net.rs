//! Network benchmarks, one run, printed as a table (`cargo bench --bench net`):
//!
//! 1. gossip latency: time from `publish` until every other node of a 30-node in-process
//!    network (loopback TCP) has the message, median and p99 over many messages. The stand-in
//!    node layer accepts each message at once, so each hop includes one validation round trip.
//! 2. blob throughput: a 64 MiB blob fetched over hearth (noise + yamux + per-chunk
//!    verification + store writes) divided by a plain tokio TCP copy of the same bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth::net::{self, NetConfig, NetEvent, Network, Topic, Verdict};
use hearth::store::Store;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const NODES: usize = 30;
const MESSAGES: usize = 200;
const BLOB_LEN: usize = 64 * 1024 * 1024;

struct Node {
    net: Network,
    store: Store,
    _dir: tempfile::TempDir,
}

/// Start a node whose event pump accepts every gossip message and reports
/// (node index, message number, arrival time) on `arrivals`.
async fn start(
    index: usize,
    bootstrap: Vec<Multiaddr>,
    arrivals: Option<mpsc::UnboundedSender<(usize, u64, Instant)>>,
) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let mut cfg = NetConfig::loopback(Keypair::generate_ed25519());
    cfg.bootstrap = bootstrap;
    let (net, mut events, _task) = net::spawn(cfg, store.clone()).await.expect("spawn");
    let pump = net.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let NetEvent::Gossip {
                id,
                propagation_source,
                data,
                ..
            } = ev
            {
                let now = Instant::now();
                pump.report_validation(id, propagation_source, Verdict::Accept)
                    .await;
                if let (Some(tx), Ok(n)) = (&arrivals, <[u8; 8]>::try_from(&data[..8])) {
                    let _ = tx.send((index, u64::from_be_bytes(n), now));
                }
            }
        }
    });
    Node {
        net,
        store,
        _dir: dir,
    }
}

async fn addr(n: &Node) -> Multiaddr {
    let s = n.net.status().await.expect("status");
    s.listen_addrs[0]
        .clone()
        .with(Protocol::P2p(n.net.local_peer_id()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

async fn gossip_latency() -> (Duration, Duration, usize) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let first = start(0, vec![], Some(tx.clone())).await;
    let boot = vec![addr(&first).await];
    let mut nodes = vec![first];
    for i in 1..NODES {
        nodes.push(start(i, boot.clone(), Some(tx.clone())).await);
    }
    // Let Kademlia introduce the nodes and the gossip mesh settle.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut min = usize::MAX;
        for n in &nodes {
            min = min.min(n.net.status().await.expect("status").connected_peers);
        }
        if min >= 4 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut latencies = Vec::with_capacity(MESSAGES);
    let mut lost = 0;
    for m in 0..MESSAGES as u64 {
        let publisher = (m as usize * 7) % NODES;
        let mut data = m.to_be_bytes().to_vec();
        data.extend_from_slice(b" heat announcement padding to a realistic size ......");
        let sent = Instant::now();
        nodes[publisher]
            .net
            .publish(Topic::Commitments, data)
            .await
            .expect("publish");
        let mut reached = std::collections::HashSet::new();
        let mut last = sent;
        let wait = tokio::time::timeout(Duration::from_secs(5), async {
            while reached.len() < NODES - 1 {
                let Some((node, n, at)) = rx.recv().await else {
                    break;
                };
                if n == m && node != publisher && reached.insert(node) {
                    last = last.max(at);
                }
            }
        })
        .await;
        if wait.is_err() {
            lost += 1;
        } else {
            latencies.push(last - sent);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in &nodes {
        n.net.shutdown().await;
    }
    latencies.sort();
    (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        lost,
    )
}

async fn blob_throughput() -> (f64, f64, f64) {
    let mut data = vec![0u8; BLOB_LEN];
    blake3::Hasher::new()
        .update(b"bench")
        .finalize_xof()
        .fill(&mut data);
    let data = Arc::new(data);

    // Plain TCP copy of the same bytes over loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let start_tcp = Instant::now();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0usize;
        loop {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    c.write_all(&data).await.expect("write");
    c.shutdown().await.expect("shutdown");
    let got = server.await.expect("server");
    let tcp_secs = start_tcp.elapsed().as_secs_f64();
    assert_eq!(got, BLOB_LEN);

    // Over hearth.
    let a = start(0, vec![], None).await;
    let t = Instant::now();
    let hash = a.store.put_bytes(&data).expect("put");
    let store_secs = t.elapsed().as_secs_f64();
    a.net.provide(hash).await.expect("provide");
    let b = start(1, vec![addr(&a).await], None).await;
    let t = Instant::now();
    while b.net.status().await.expect("status").connected_peers == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "B never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start_hearth = Instant::now();
    b.net
        .fetch_blob(hash, Some(a.net.local_peer_id()))
        .await
        .expect("fetch");
    let hearth_secs = start_hearth.elapsed().as_secs_f64();
    assert!(b.store.has(&hash).expect("has"));
    a.net.shutdown().await;
    b.net.shutdown().await;
    let mib = BLOB_LEN as f64 / (1024.0 * 1024.0);
    (mib / hearth_secs, mib / tcp_secs, mib / store_secs)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // HEARTH_BENCH=blob skips the gossip part (quicker iterations on the blob path).
        let gossip = std::env::var("HEARTH_BENCH").as_deref() != Ok("blob");
        let (median, p99, lost) = if gossip {
            gossip_latency().await
        } else {
            (Duration::ZERO, Duration::ZERO, 0)
        };
        let (hearth, tcp, store) = blob_throughput().await;
        println!();
        println!("| benchmark                                   | result        | target    |");
        println!("|---------------------------------------------|---------------|-----------|");
        println!(
            "| gossip to all of {NODES} nodes, median ({MESSAGES} msgs) | {:>9.1} ms  |           |",
            median.as_secs_f64() * 1e3
        );
        println!(
            "| gossip to all of {NODES} nodes, p99               | {:>9.1} ms  | < 250 ms  |",
            p99.as_secs_f64() * 1e3
        );
        println!("| gossip messages that missed a node (5 s)    | {lost:>9}     | 0         |");
        println!(
            "| blob fetch over hearth, 64 MiB              | {hearth:>9.1} MiB/s |           |"
        );
        println!("| plain tokio TCP copy, 64 MiB                | {tcp:>9.1} MiB/s |           |");
        println!("| store.put_bytes alone (hash + sled), 64 MiB | {store:>9.1} MiB/s |           |");
        println!(
            "| hearth / TCP                                | {:>9.3}     | >= 0.5    |",
            hearth / tcp
        );
    });
}
