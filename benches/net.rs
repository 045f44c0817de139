//! Network benchmarks, one run, printed as a table (`cargo bench --bench net`):
//!
//! 1. gossip latency: time from `publish` until every other node of a 30-node in-process
//!    network (loopback TCP) has the message, median and p99 over many messages. The stand-in
//!    node layer accepts each message at once, so each hop includes one validation round trip.
//! 2. blob throughput, 64 MiB and 1 GiB: a blob fetched over hearth (noise + yamux + every
//!    piece verified + written durably to the store) divided by a plain tokio TCP copy of the
//!    same bytes into memory. Printed beside it: the same TCP copy written to a file and
//!    `fsync`ed (what the disk allows a durable copy); the same again with the file written
//!    as a fetch writes it (256 KiB pieces at their offsets, several at once); that copy
//!    with BLAKE3 over every piece on both ends and no `fsync` (the ceiling of a blob path
//!    without noise whose fetched blobs are not made durable); the file written alone, no
//!    network, no `fsync` (what the page cache allows); the same bytes over one stream of a
//!    bare libp2p transport into memory (TCP + noise + yamux, and QUIC; no swarm, no hearth
//!    protocol, no verification, no disk: the ceiling of anything built on that transport);
//!    `store.put_bytes` alone, `store.get_bytes` alone (64 MiB: how a worker reads a shard's
//!    input); the CPU time per MiB of the fetch (both ends) and of the TCP copy into memory;
//!    and how many cores the fetch kept busy.
//! 3. a job of 2 × 100 MB inputs on 3 loopback radiators (replication 2): submit → verified
//!    result, divided by the time plain TCP takes to copy the input bytes the radiators
//!    fetched, as many times as they fetched them, and how many cores the job kept busy.
//!
//! `HEARTH_BENCH=blob` skips the gossip part, `HEARTH_BENCH=small` also the 1 GiB blob,
//! `HEARTH_BENCH=job` runs only the job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth::net::{self, NetConfig, NetEvent, Network, Topic, Verdict};
use hearth::store::Store;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The process's CPU time so far (user + system), seconds.
fn cpu_secs() -> f64 {
    hearth::heat::energy::process_cpu_secs().expect("getrusage")
}

const NODES: usize = 30;
const MESSAGES: usize = 200;
const MIB: usize = 1024 * 1024;
const JOB_INPUT: usize = 100_000_000;

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

fn pseudo_random(len: usize, seed: &[u8]) -> Vec<u8> {
    let mut data = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut data);
    data
}

/// Where the receiver of a [`tcp_copy`] puts the bytes.
enum Sink {
    /// Nowhere: a copy into memory.
    Memory,
    /// Appended to a file in order, `fsync`ed at the end.
    Append(std::path::PathBuf),
    /// Written as a fetch writes: the file is first given the full length, then each 256 KiB
    /// piece is written at its offset (`pwrite`) on the blocking pool, up to four at once,
    /// and the file is `fsync`ed at the end. Beside [`Sink::Append`], it tells whether that
    /// write pattern, rather than the network, is what slows a fetch.
    Pieces(std::path::PathBuf),
    /// The ceiling of a blob path without noise whose fetched blobs are not `fsync`ed: as
    /// [`Sink::Pieces`], each piece also hashed with BLAKE3 on the blocking pool before it is
    /// written, and no `fsync`; the sender copies each piece out of its buffer (the store's
    /// read) and hashes it (the store's verification) before sending it.
    Plaintext(std::path::PathBuf),
}

/// Copies `data` once over a fresh loopback TCP connection into `sink`. Returns the seconds
/// from connect to the last byte received (and synced).
async fn tcp_copy(data: Arc<Vec<u8>>, sink: Sink) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let len = data.len();
    let plaintext = matches!(sink, Sink::Plaintext(_));
    let start = Instant::now();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        receive(s, sink, len).await
    });
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    if plaintext {
        let mut read = vec![0u8; 256 * 1024];
        for piece in data.chunks(256 * 1024) {
            read[..piece.len()].copy_from_slice(piece);
            std::hint::black_box(blake3::hash(&read[..piece.len()]));
            c.write_all(&read[..piece.len()]).await.expect("write");
        }
    } else {
        c.write_all(&data).await.expect("write");
    }
    c.shutdown().await.expect("shutdown");
    let got = server.await.expect("server");
    assert_eq!(got, len);
    start.elapsed().as_secs_f64()
}

/// The receiving end of [`tcp_copy`]: reads until the sender closes; the bytes received.
async fn receive(mut s: tokio::net::TcpStream, sink: Sink, len: usize) -> usize {
    use std::os::unix::fs::FileExt;
    const PIECE: usize = 256 * 1024;
    let mut piece = vec![0u8; PIECE];
    let (mut filled, mut total) = (0, 0);
    let (mut append, mut pieces) = (None, None);
    let verify = matches!(sink, Sink::Plaintext(_));
    match &sink {
        Sink::Memory => {}
        Sink::Append(path) => {
            append = Some(tokio::fs::File::create(path).await.expect("create"));
        }
        Sink::Pieces(path) | Sink::Plaintext(path) => {
            let file = std::fs::File::create(path).expect("create");
            file.set_len(len as u64).expect("set_len");
            pieces = Some((Arc::new(file), tokio::task::JoinSet::new(), 0u64));
        }
    }
    loop {
        let n = s.read(&mut piece[filled..]).await.expect("read");
        total += n;
        if let Some(f) = &mut append {
            f.write_all(&piece[..n]).await.expect("write");
        } else if let Some((file, writes, offset)) = &mut pieces {
            filled += n;
            if filled == PIECE || (n == 0 && filled > 0) {
                let mut full = std::mem::replace(&mut piece, vec![0u8; PIECE]);
                full.truncate(filled);
                let (f, at) = (file.clone(), *offset);
                writes.spawn_blocking(move || {
                    if verify {
                        std::hint::black_box(blake3::hash(&full));
                    }
                    f.write_all_at(&full, at).expect("pwrite")
                });
                *offset += filled as u64;
                filled = 0;
                while writes.len() >= 4 {
                    writes.join_next().await.expect("a write").expect("write");
                }
            }
        }
        if n == 0 {
            break;
        }
    }
    if let Some(f) = append {
        f.sync_all().await.expect("fsync");
    }
    if let Some((file, mut writes, _)) = pieces {
        while let Some(w) = writes.join_next().await {
            w.expect("write");
        }
        if !verify {
            file.sync_all().expect("fsync");
        }
    }
    total
}

/// Writes `data` into a new file at `path` in 256 KiB pieces, without `fsync`: what the page
/// cache alone allows a fetch. Returns the seconds it took.
fn page_cache_write(data: &[u8], path: &std::path::Path) -> f64 {
    use std::os::unix::fs::FileExt;
    let start = Instant::now();
    let file = std::fs::File::create(path).expect("create");
    for (i, piece) in data.chunks(256 * 1024).enumerate() {
        file.write_all_at(piece, (i * 256 * 1024) as u64)
            .expect("pwrite");
    }
    start.elapsed().as_secs_f64()
}

/// Which libp2p transport [`bare_copy`] runs over.
#[derive(Clone, Copy)]
enum Bare {
    /// TCP secured with noise, multiplexed with yamux: what a fetch uses.
    Tcp,
    /// QUIC (TLS 1.3 inside).
    Quic,
}

/// Copies `data` once over one libp2p stream between two bare transports (no swarm, no
/// hearth protocol, no verification, no disk) into memory. Returns the seconds from the
/// first byte sent to the last received. It is the ceiling any protocol on that transport
/// can reach in this process.
async fn bare_copy(data: Arc<Vec<u8>>, kind: Bare) -> f64 {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
    use libp2p::core::muxing::{StreamMuxerBox, StreamMuxerExt};
    use libp2p::core::transport::{Boxed, DialOpts, ListenerId, PortUse, TransportEvent};
    use libp2p::core::{upgrade, Endpoint, Transport};

    fn transport(kind: Bare) -> Boxed<(libp2p::PeerId, StreamMuxerBox)> {
        let key = Keypair::generate_ed25519();
        match kind {
            Bare::Tcp => {
                libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default().nodelay(true))
                    .upgrade(upgrade::Version::V1Lazy)
                    .authenticate(libp2p::noise::Config::new(&key).expect("noise"))
                    .multiplex(libp2p::yamux::Config::default())
                    .boxed()
            }
            Bare::Quic => libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(&key))
                .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)))
                .boxed(),
        }
    }
    /// Drives a connection (yamux and QUIC move stream bytes only while it is polled).
    async fn drive(mut m: StreamMuxerBox) {
        while futures::future::poll_fn(|cx| m.poll_unpin(cx))
            .await
            .is_ok()
        {}
    }

    let mut listener = transport(kind);
    let on: Multiaddr = match kind {
        Bare::Tcp => "/ip4/127.0.0.1/tcp/0",
        Bare::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
    }
    .parse()
    .expect("addr");
    listener.listen_on(ListenerId::next(), on).expect("listen");
    let at = loop {
        if let TransportEvent::NewAddress { listen_addr, .. } = listener.select_next_some().await {
            break listen_addr;
        }
    };
    let len = data.len();
    let server = tokio::spawn(async move {
        let upgrade = loop {
            if let TransportEvent::Incoming { upgrade, .. } = listener.select_next_some().await {
                break upgrade;
            }
        };
        let (_, mut muxer) = upgrade.await.expect("upgrade");
        let mut stream = futures::future::poll_fn(|cx| muxer.poll_inbound_unpin(cx))
            .await
            .expect("inbound");
        tokio::spawn(drive(muxer));
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0;
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            total += n;
        }
        drop(listener);
        total
    });
    let mut dialer = transport(kind);
    let opts = DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::New,
    };
    let (_, mut muxer) = dialer.dial(at, opts).expect("dial").await.expect("connect");
    let mut stream = futures::future::poll_fn(|cx| muxer.poll_outbound_unpin(cx))
        .await
        .expect("outbound");
    tokio::spawn(drive(muxer));
    let start = Instant::now();
    for piece in data.chunks(256 * 1024) {
        stream.write_all(piece).await.expect("write");
    }
    stream.close().await.expect("close");
    let got = server.await.expect("server");
    assert_eq!(got, len);
    start.elapsed().as_secs_f64()
}

struct BlobRun {
    mib: f64,
    hearth: f64,
    /// CPU seconds per MiB: the hearth fetch (both ends, all of this process) and the plain
    /// TCP copy into memory.
    hearth_cpu: f64,
    tcp_cpu: f64,
    tcp: f64,
    tcp_fsync: f64,
    tcp_pieces: f64,
    plaintext: f64,
    page_cache: f64,
    /// Copies into memory over one stream of a bare libp2p transport: TCP + noise + yamux,
    /// and QUIC.
    bare_tcp: f64,
    bare_tcp_cpu: f64,
    bare_quic: f64,
    put: f64,
    /// `store.get_bytes` (read + verify) of the stored blob; `None` above `MAX_GET_BYTES`.
    get: Option<f64>,
}

async fn blob_throughput(len: usize) -> BlobRun {
    let data = Arc::new(pseudo_random(len, b"bench"));
    let scratch = tempfile::tempdir().expect("tempdir");
    let cpu0 = cpu_secs();
    let tcp = tcp_copy(data.clone(), Sink::Memory).await;
    let tcp_cpu = cpu_secs() - cpu0;
    let tcp_fsync = tcp_copy(data.clone(), Sink::Append(scratch.path().join("copy"))).await;
    let tcp_pieces = tcp_copy(data.clone(), Sink::Pieces(scratch.path().join("pieces"))).await;
    let plaintext = tcp_copy(data.clone(), Sink::Plaintext(scratch.path().join("plain"))).await;
    let page_cache = {
        let (data, path) = (data.clone(), scratch.path().join("page-cache"));
        tokio::task::spawn_blocking(move || page_cache_write(&data, &path))
            .await
            .expect("join")
    };
    drop(scratch);
    let cpu0 = cpu_secs();
    let bare_tcp = bare_copy(data.clone(), Bare::Tcp).await;
    let bare_tcp_cpu = cpu_secs() - cpu0;
    let bare_quic = bare_copy(data.clone(), Bare::Quic).await;

    // Over hearth.
    let a = start(0, vec![], None).await;
    let t = Instant::now();
    let store = a.store.clone();
    let d = data.clone();
    let hash = tokio::task::spawn_blocking(move || store.put_bytes(&d))
        .await
        .expect("join")
        .expect("put");
    let put = t.elapsed().as_secs_f64();
    // How a worker reads a shard's input (blobs up to MAX_GET_BYTES).
    let get = if len as u64 <= hearth::store::MAX_GET_BYTES {
        let store = a.store.clone();
        let t = Instant::now();
        let read = tokio::task::spawn_blocking(move || store.get_bytes(&hash))
            .await
            .expect("join")
            .expect("get");
        assert_eq!(read.len(), len);
        Some(t.elapsed().as_secs_f64())
    } else {
        None
    };
    a.net.provide(hash).await.expect("provide");
    let b = start(1, vec![addr(&a).await], None).await;
    let t = Instant::now();
    while b.net.status().await.expect("status").connected_peers == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "B never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (start_hearth, cpu0) = (Instant::now(), cpu_secs());
    b.net
        .fetch_blob(hash, Some(a.net.local_peer_id()))
        .await
        .expect("fetch");
    let (hearth, hearth_cpu) = (start_hearth.elapsed().as_secs_f64(), cpu_secs() - cpu0);
    assert!(b.store.has(&hash).expect("has"));
    a.net.shutdown().await;
    b.net.shutdown().await;
    let mib = len as f64 / MIB as f64;
    BlobRun {
        mib,
        hearth: mib / hearth,
        hearth_cpu: hearth_cpu / mib,
        tcp_cpu: tcp_cpu / mib,
        tcp: mib / tcp,
        tcp_fsync: mib / tcp_fsync,
        tcp_pieces: mib / tcp_pieces,
        plaintext: mib / plaintext,
        page_cache: mib / page_cache,
        bare_tcp: mib / bare_tcp,
        bare_tcp_cpu: bare_tcp_cpu / mib,
        bare_quic: mib / bare_quic,
        put: mib / put,
        get: get.map(|g| mib / g),
    }
}

/// A core-ABI shard that takes any input (growing its memory to fit) and returns the input's
/// first 32 bytes: the job's cost is moving its inputs, not computing.
const PASS_THROUGH: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "alloc") (param $len i32) (result i32)
    (local $base i32)
    (local.set $base (i32.mul (memory.size) (i32.const 65536)))
    (drop (memory.grow (i32.shr_u (i32.add (local.get $len) (i32.const 65535)) (i32.const 16))))
    (local.get $base))
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.const 32))))"#;

struct JobRun {
    secs: f64,
    /// CPU seconds of the whole process (three radiators) while the job ran.
    cpu: f64,
    copies: f64,
    tcp_secs: f64,
}

async fn job_of_two_inputs() -> JobRun {
    use hearth::demo::{start_radiators, wait_connected};
    use hearth::jobs::build::{build, JobSpec};
    use hearth::jobs::JobStatus;
    use hearth::model::JobLimits;

    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = start_radiators(dir.path(), 3, 1, &|_, _| {})
        .await
        .expect("radiators");
    wait_connected(&nodes, 2, Duration::from_secs(30))
        .await
        .expect("connected");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sub = &nodes[0];
    let inputs = vec![
        pseudo_random(JOB_INPUT, b"input 0"),
        pseudo_random(JOB_INPUT, b"input 1"),
    ];
    let spec = JobSpec::Wasm {
        module: wat::parse_str(PASS_THROUGH).expect("wat"),
        inputs: inputs.clone(),
    };
    let store = sub.context.store.clone();
    let household = sub.household();
    let manifest = tokio::task::spawn_blocking(move || {
        build(&store, &spec, household, JobLimits::default(), 2)
    })
    .await
    .expect("join")
    .expect("build job");
    let mut fetched_before = 0;
    for n in &nodes {
        fetched_before += n.context.net.status().await.expect("status").chunks_fetched;
    }
    let (started, cpu0) = (Instant::now(), cpu_secs());
    let id = sub
        .context
        .coordinator
        .submit(manifest)
        .await
        .expect("submit");
    loop {
        let view = sub.context.coordinator.view(id).await.expect("job");
        match view.status {
            JobStatus::Done { .. } => break,
            JobStatus::Failed { reason } => panic!("job failed: {reason}"),
            JobStatus::Running => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let (secs, cpu) = (started.elapsed().as_secs_f64(), cpu_secs() - cpu0);
    let mut fetched = 0;
    for n in &nodes {
        fetched += n.context.net.status().await.expect("status").chunks_fetched;
    }
    for n in nodes {
        n.shutdown().await;
    }
    // Input copies the radiators fetched (module, manifest and outputs are a few KiB).
    let groups_per_input = JOB_INPUT.div_ceil(hearth::store::CHUNK_SIZE) as f64;
    let copies = ((fetched - fetched_before) as f64 / groups_per_input).round();
    let one = Arc::new(inputs.into_iter().next().expect("input"));
    let mut tcp_secs = 0.0;
    for _ in 0..copies as usize {
        tcp_secs += tcp_copy(one.clone(), Sink::Memory).await;
    }
    JobRun {
        secs,
        cpu,
        copies,
        tcp_secs,
    }
}

fn main() {
    // `RUST_LOG=hearth=debug` shows where a run's time goes (off unless set).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let which = std::env::var("HEARTH_BENCH").unwrap_or_default();
        let (median, p99, lost) = if which.is_empty() {
            gossip_latency().await
        } else {
            (Duration::ZERO, Duration::ZERO, 0)
        };
        let mut blobs = Vec::new();
        if which != "job" {
            blobs.push(blob_throughput(64 * MIB).await);
        }
        if which != "small" && which != "job" {
            blobs.push(blob_throughput(1024 * MIB).await);
        }
        let job = job_of_two_inputs().await;
        println!();
        println!("| benchmark                                        | result          | target    |");
        println!("|--------------------------------------------------|-----------------|-----------|");
        println!(
            "| gossip to all of {NODES} nodes, median ({MESSAGES} msgs)     | {:>12.1} ms |           |",
            median.as_secs_f64() * 1e3
        );
        println!(
            "| gossip to all of {NODES} nodes, p99                   | {:>12.1} ms | < 250 ms  |",
            p99.as_secs_f64() * 1e3
        );
        println!("| gossip messages that missed a node (5 s)         | {lost:>12}    | 0         |");
        for b in &blobs {
            let size = format!("{:.0} MiB", b.mib);
            println!(
                "| blob fetch over hearth, {size:<9}                | {:>9.1} MiB/s |           |",
                b.hearth
            );
            println!(
                "| plain TCP copy to memory, {size:<9}              | {:>9.1} MiB/s |           |",
                b.tcp
            );
            println!(
                "| plain TCP copy to a file + fsync, {size:<9}      | {:>9.1} MiB/s |           |",
                b.tcp_fsync
            );
            println!(
                "| TCP, pieces written at offsets + fsync, {size:<9}| {:>9.1} MiB/s |           |",
                b.tcp_pieces
            );
            println!(
                "| {:<48} | {:>9.1} MiB/s |           |",
                format!("TCP + BLAKE3 + pieces, no fsync, {size}"),
                b.plaintext
            );
            println!(
                "| {:<48} | {:>9.1} MiB/s |           |",
                format!("a file written alone, no fsync, {size}"),
                b.page_cache
            );
            println!(
                "| bare libp2p stream, TCP+noise+yamux, {size:<9}   | {:>9.1} MiB/s |           |",
                b.bare_tcp
            );
            println!(
                "| bare libp2p stream, QUIC, {size:<9}              | {:>9.1} MiB/s |           |",
                b.bare_quic
            );
            println!(
                "| store.put_bytes alone (hash + write), {size:<9}  | {:>9.1} MiB/s |           |",
                b.put
            );
            if let Some(get) = b.get {
                println!(
                    "| store.get_bytes alone (read + verify), {size:<9} | {get:>9.1} MiB/s |           |"
                );
            }
            println!(
                "| hearth / TCP, {size:<9}                          | {:>12.3}    | >= 0.5    |",
                b.hearth / b.tcp
            );
            println!(
                "| hearth / (TCP + file + fsync), {size:<9}         | {:>12.3}    |           |",
                b.hearth / b.tcp_fsync
            );
            println!(
                "| {:<48} | {:>12.3}    |           |",
                format!("TCP + BLAKE3 + pieces, no fsync / TCP, {size}"),
                b.plaintext / b.tcp
            );
            println!(
                "| bare TCP+noise+yamux / TCP, {size:<9}            | {:>12.3}    |           |",
                b.bare_tcp / b.tcp
            );
            println!(
                "| hearth / bare TCP+noise+yamux, {size:<9}         | {:>12.3}    |           |",
                b.hearth / b.bare_tcp
            );
            println!(
                "| CPU per MiB: hearth fetch, {size:<9}             | {:>9.2} ms   |           |",
                b.hearth_cpu * 1e3
            );
            println!(
                "| CPU per MiB: plain TCP copy to memory, {size:<9} | {:>9.2} ms   |           |",
                b.tcp_cpu * 1e3
            );
            println!(
                "| CPU per MiB: bare TCP+noise+yamux, {size:<9}     | {:>9.2} ms   |           |",
                b.bare_tcp_cpu * 1e3
            );
            println!(
                "| cores busy during the hearth fetch, {size:<9}    | {:>12.2}    | of {}     |",
                b.hearth_cpu * b.hearth,
                std::thread::available_parallelism().map_or(0, |n| n.get())
            );
        }
        println!(
            "| job 2 x 100 MB, 3 radiators, repl. 2: end to end | {:>12.2} s  |           |",
            job.secs
        );
        println!(
            "| cores busy during the job                        | {:>12.2}    |           |",
            job.cpu / job.secs
        );
        let label = format!("same bytes over plain TCP ({:.0} x 100 MB)", job.copies);
        println!(
            "| {label:<48} | {:>12.2} s  |           |",
            job.tcp_secs
        );
        println!(
            "| job / TCP                                        | {:>12.1}    | cut it    |",
            job.secs / job.tcp_secs.max(f64::EPSILON)
        );
    });
}
