//! The scale experiment of issue 14 (`docs/scale.md`): does what one radiator pays grow with
//! the size of the network?
//!
//! For each N (default 10, 50, 150; `HEARTH_SCALE_NODES=10,50,150`) it starts N complete
//! radiators (`node::start`: sled, wasm executor, heat service, API, libp2p on loopback TCP)
//! in this one process, all bootstrapped from the first, lets them settle, then measures
//!
//! - idle: a window with no job (`HEARTH_SCALE_IDLE_SECS`, default 20 s);
//! - load: every fifth radiator submits a 5-shard Monte Carlo pi job at replication 2 (two
//!   shard runs per radiator, the same per-radiator load at every N), measured over `LOAD`
//!   seconds from the first submission;
//!
//! - boards: on a few radiators in turn, one publication of the want record and one lookup of
//!   the work board (`net/work.rs`), and the loopback bytes each cost the network beyond its
//!   idle rate: what a cold radiator in a network without work pays a day;
//!
//! and prints per radiator: bytes and TCP segments received per second, CPU (share of one
//! core), resident memory, ledger bytes, receipts held, and job latency (submit → verified
//! result); then the exponent `b` of a fit `cost ∝ N^b` between the smallest and largest N.
//!
//! Bytes and segments are the kernel's counters of the loopback interface. To count only this
//! experiment's traffic the benchmark re-runs itself in a network namespace of its own
//! (`unshare -rn`, an unprivileged user namespace); where that is impossible it says so and
//! the byte columns then include whatever else this machine sends over loopback. CPU and
//! memory are the whole process's divided by N (the radiators share one tokio runtime).
//!
//! Run: `cargo bench --bench scale` (release), or `cargo bench --profile dev --bench scale`
//! to reuse a debug build (CPU figures are then those of unoptimised code). It prints a
//! table; it asserts nothing.

use std::time::{Duration, Instant};

use hearth::demo::{loopback_options, wait_connected};
use hearth::jobs::build::{build, JobSpec};
use hearth::jobs::JobStatus;
use hearth::model::JobLimits;
use hearth::net::work::Board;
use hearth::net::{DialCounts, DialOrigin};
use hearth::node::{self, RunningNode};

/// The process's CPU time so far (user + system), seconds.
fn cpu_secs() -> f64 {
    hearth::heat::energy::process_cpu_secs().expect("getrusage")
}

/// Settling time after the last radiator started (`HEARTH_SCALE_SETTLE_SECS`, default 15 s).
/// 200 s (what `docs/scale.md`'s steady-state tables use) lets Kademlia's start-up full
/// refreshes (2, 4, 12 and 44 s after start) and the first own-key refresh (172 s) pass
/// before the idle window.
fn settle() -> Duration {
    Duration::from_secs(
        std::env::var("HEARTH_SCALE_SETTLE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(15),
    )
}
/// The idle window (`HEARTH_SCALE_IDLE_SECS`, default 20 s). Idle traffic is mostly ping on
/// open connections and Kademlia's refreshes (every 300 s once started: an own-key lookup,
/// every sixth a full refresh); a steady-state figure needs a window of a whole refresh
/// period (300 s) after a settle past the start-up refreshes (200 s). The window then holds
/// one own-key refresh and no full one (`docs/scale.md` adds a sixth of a full refresh).
fn idle_window() -> Duration {
    Duration::from_secs(
        std::env::var("HEARTH_SCALE_IDLE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    )
}
const LOAD: Duration = Duration::from_secs(40);
/// One radiator in this many submits a job.
const SUBMITTER_EVERY: usize = 5;
const SHARDS: u32 = 5;
const REPLICATION: u8 = 2;

/// Resident memory of this process, bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// (bytes, packets) received on the loopback interface so far.
fn lo_rx() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("lo:") {
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if f.len() >= 2 {
                return (f[0], f[1]);
            }
        }
    }
    (0, 0)
}

/// Rates over a window, per radiator.
#[derive(Clone, Copy, Default)]
struct Window {
    bytes_per_s: f64,
    segments_per_s: f64,
    cpu_share: f64,
}

struct Meter {
    at: Instant,
    cpu: f64,
    rx: (u64, u64),
}

impl Meter {
    fn start() -> Meter {
        Meter {
            at: Instant::now(),
            cpu: cpu_secs(),
            rx: lo_rx(),
        }
    }
    fn stop(&self, n: usize) -> Window {
        let secs = self.at.elapsed().as_secs_f64();
        let rx = lo_rx();
        let n = n as f64;
        Window {
            bytes_per_s: (rx.0 - self.rx.0) as f64 / secs / n,
            segments_per_s: (rx.1 - self.rx.1) as f64 / secs / n,
            cpu_share: (cpu_secs() - self.cpu) / secs / n,
        }
    }
}

struct Row {
    n: usize,
    start_s: f64,
    idle: Window,
    load: Window,
    rss_per_node: f64,
    /// Mean connected peers per radiator at the end of the idle window: what most background
    /// traffic (ping, identify, Kademlia) scales with.
    peers_mean: f64,
    peers_max: usize,
    ledger_mean: f64,
    ledger_max: u64,
    receipts_max: usize,
    foreign_receipts: usize,
    jobs_done: usize,
    jobs: usize,
    latency_median: Duration,
    latency_max: Duration,
    /// The DHT boards (`net/work.rs`), measured one radiator at a time in the idle network.
    boards: Boards,
}

/// What one radiator's use of the DHT boards costs the whole network, measured: loopback bytes
/// received (by every radiator together) while one publication or one lookup runs, less what
/// the idle network receives in as long right after (`beyond_idle`).
#[derive(Clone, Copy, Default)]
struct Boards {
    /// Mean bytes of publishing this radiator's want record (`post(Board::Want)`).
    want_post_bytes: f64,
    want_post_secs: f64,
    /// Mean bytes of one lookup of the work board (`find(Board::Work)`).
    work_find_bytes: f64,
    work_find_secs: f64,
    samples: usize,
}

impl Boards {
    /// Bytes a day one cold radiator in a network without work costs through the boards: its
    /// want record every `WANT_PROVIDE_PERIOD` and a lookup of the work board every `SEEK_MAX`
    /// once its waits have grown (`node/offers.rs`).
    fn cold_bytes_per_day(&self) -> f64 {
        let day = 86_400.0;
        self.want_post_bytes * day / hearth::net::work::WANT_PROVIDE_PERIOD.as_secs_f64()
            + self.work_find_bytes * day / hearth::node::offers::SEEK_MAX.as_secs_f64()
    }
}

/// Radiators sampled for [`Boards`].
const BOARD_SAMPLES: usize = 8;

/// Loopback bytes received while `op` runs, less those received in a quiet window of the same
/// length right after (the idle network's own traffic, which drifts), and how long it ran.
async fn beyond_idle<F: std::future::Future<Output = bool>>(op: F) -> Option<(f64, f64)> {
    let (rx, at) = (lo_rx().0, Instant::now());
    if !op.await {
        return None;
    }
    let (bytes, took) = (lo_rx().0 - rx, at.elapsed());
    let rx = lo_rx().0;
    tokio::time::sleep(took).await;
    let quiet = lo_rx().0 - rx;
    Some((bytes as f64 - quiet as f64, took.as_secs_f64()))
}

/// Measures [`Boards`] on up to [`BOARD_SAMPLES`] radiators spread over `nodes`, one operation
/// at a time.
async fn measure_boards(nodes: &[RunningNode]) -> Boards {
    let step = (nodes.len() / BOARD_SAMPLES).max(1);
    let mut b = Boards::default();
    for node in nodes.iter().step_by(step).take(BOARD_SAMPLES) {
        let net = &node.context.net;
        let Some((post, post_s)) = beyond_idle(async { net.post(Board::Want).await.is_ok() }).await
        else {
            continue;
        };
        let Some((find, find_s)) = beyond_idle(async { net.find(Board::Work).await.is_ok() }).await
        else {
            continue;
        };
        b.want_post_bytes += post;
        b.want_post_secs += post_s;
        b.work_find_bytes += find;
        b.work_find_secs += find_s;
        b.samples += 1;
    }
    let k = b.samples.max(1) as f64;
    b.want_post_bytes /= k;
    b.want_post_secs /= k;
    b.work_find_bytes /= k;
    b.work_find_secs /= k;
    b
}

/// Radiators per bootstrap node: like a real network, several bootstrap nodes share the
/// newcomers (one node would reach its 128-connection limit before N = 150).
const PER_BOOTSTRAP: usize = 40;

async fn start(root: &std::path::Path, n: usize) -> anyhow::Result<Vec<RunningNode>> {
    let mut nodes: Vec<RunningNode> = Vec::with_capacity(n);
    let bootstraps = n.div_ceil(PER_BOOTSTRAP).max(1);
    for i in 0..n {
        let via = if i < bootstraps { 0 } else { i % bootstraps };
        let bootstrap = match nodes.get(via).filter(|_| i > 0) {
            Some(b) => Some(hearth::demo::listen_addr(b).await?),
            None => None,
        };
        let mut opts = loopback_options(&root.join(format!("r{i}")), bootstrap, 1)?;
        // Lean: one worker slot, no wasm compile cache beyond the default.
        opts.config.worker.slots = 1;
        nodes.push(node::start(opts).await?);
    }
    Ok(nodes)
}

async fn run_n(n: usize) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let rss0 = rss();
    let t0 = Instant::now();
    let nodes = start(dir.path(), n).await?;
    // A radiator whose first dials time out (a machine busy with other work) waits out the
    // bootstrap redial backoff (1 s doubling); 150 debug-build radiators on a loaded 2-core
    // machine once needed more than 300 s.
    wait_connected(&nodes, 1, Duration::from_secs(900)).await?;
    let start_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(settle()).await;

    let dials_before = dial_totals(&nodes).await;
    let idle_meter = Meter::start();
    tokio::time::sleep(idle_window()).await;
    let idle = idle_meter.stop(n);
    let dials_after = dial_totals(&nodes).await;
    let idle_dials: Vec<(DialOrigin, u64, u64)> = dials_after
        .by_origin
        .iter()
        .zip(&dials_before.by_origin)
        .map(|(a, b)| (a.0, a.1 - b.1, a.2 - b.2))
        .collect();
    eprintln!(
        "scale: N={n} idle window, per radiator: inbound connections {:.2}, outbound by origin (dials / established):",
        (dials_after.inbound - dials_before.inbound) as f64 / n as f64
    );
    for (origin, d, e) in idle_dials.iter().filter(|x| x.1 > 0 || x.2 > 0) {
        eprintln!(
            "scale:   {:<15} {:>8.2} / {:>8.2}",
            origin.name(),
            *d as f64 / n as f64,
            *e as f64 / n as f64
        );
    }
    let mut peers_total = 0usize;
    let mut peers_max = 0usize;
    for node in &nodes {
        let count = node.context.net.peers().await.map(|p| p.len()).unwrap_or(0);
        peers_total += count;
        peers_max = peers_max.max(count);
    }
    // Printed now: the row itself comes only after the load window and every node's shutdown
    // (minutes at N = 150 on a busy machine).
    eprintln!(
        "scale: N={n} idle: {:.0} B/s, {:.1} seg/s, CPU {:.2} %, peers mean {:.1} max {peers_max} per radiator",
        idle.bytes_per_s,
        idle.segments_per_s,
        idle.cpu_share * 100.0,
        peers_total as f64 / n as f64
    );

    let boards = measure_boards(&nodes).await;
    eprintln!(
        "scale: N={n} boards ({} radiators): want record published {:.0} B in {:.2} s, work board looked up {:.0} B in {:.2} s; a cold radiator without work {:.1} MB/day",
        boards.samples,
        boards.want_post_bytes,
        boards.want_post_secs,
        boards.work_find_bytes,
        boards.work_find_secs,
        boards.cold_bytes_per_day() / 1e6
    );

    // Load: every fifth radiator submits a job.
    let load_meter = Meter::start();
    let mut jobs = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if i % SUBMITTER_EVERY != 0 {
            continue;
        }
        let spec = JobSpec::Pi {
            shards: SHARDS,
            samples: 20_000,
            seed: i as u64,
        };
        let manifest = build(
            &node.context.store,
            &spec,
            node.household(),
            JobLimits::default(),
            REPLICATION,
        )?;
        let id = node.context.coordinator.submit(manifest).await?;
        jobs.push((i, id, Instant::now(), None::<Duration>));
    }
    let deadline = load_meter.at + LOAD;
    while Instant::now() < deadline {
        for (i, id, at, done) in jobs.iter_mut() {
            if done.is_none() {
                if let Some(v) = nodes[*i].context.coordinator.view(*id).await {
                    if matches!(v.status, JobStatus::Done { .. }) {
                        *done = Some(at.elapsed());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let load = load_meter.stop(n);
    let rss_per_node = rss().saturating_sub(rss0) as f64 / n as f64;

    let mut ledger_total = 0u64;
    let mut ledger_max = 0u64;
    let mut receipts_max = 0usize;
    let mut foreign = 0usize;
    for node in &nodes {
        let ledger = &node.context.ledger;
        let bytes = ledger.stored_bytes()?;
        ledger_total += bytes;
        ledger_max = ledger_max.max(bytes);
        let all = ledger.list(None)?;
        receipts_max = receipts_max.max(all.len());
        // Receipts neither crediting this household nor countersigned by it: must be none.
        foreign += all
            .iter()
            .filter(|r| {
                r.record.worker != node.household() && r.record.submitter != node.household()
            })
            .count();
    }
    let mut lat: Vec<Duration> = jobs.iter().filter_map(|j| j.3).collect();
    lat.sort();
    let row = Row {
        n,
        start_s,
        idle,
        load,
        rss_per_node,
        peers_mean: peers_total as f64 / n as f64,
        peers_max,
        ledger_mean: ledger_total as f64 / n as f64,
        ledger_max,
        receipts_max,
        foreign_receipts: foreign,
        jobs_done: lat.len(),
        jobs: jobs.len(),
        latency_median: lat.get(lat.len() / 2).copied().unwrap_or_default(),
        latency_max: lat.last().copied().unwrap_or_default(),
        boards,
    };
    for node in nodes {
        node.shutdown().await;
    }
    Ok(row)
}

/// Dials by origin summed over every node (`NetStatus::dials`).
async fn dial_totals(nodes: &[RunningNode]) -> DialCounts {
    let mut total = DialCounts {
        by_origin: DialOrigin::ALL.iter().map(|o| (*o, 0, 0)).collect(),
        ..Default::default()
    };
    for node in nodes {
        let Ok(status) = node.context.net.status().await else {
            continue;
        };
        for (t, s) in total.by_origin.iter_mut().zip(&status.dials.by_origin) {
            t.1 += s.1;
            t.2 += s.2;
        }
        total.inbound += status.dials.inbound;
        total.outbound_unattributed += status.dials.outbound_unattributed;
    }
    total
}

/// Re-runs this benchmark in a network namespace of its own so the loopback counters are
/// ours alone. Returns `Some(exit status)` if it did.
fn in_own_namespace() -> Option<std::process::ExitStatus> {
    if std::env::var_os("HEARTH_SCALE_NS").is_some() {
        // Inside: bring loopback up (a new namespace starts with it down).
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        if !up.is_ok_and(|s| s.success()) {
            eprintln!("note: could not bring loopback up in the namespace");
        }
        return None;
    }
    let works = std::process::Command::new("unshare")
        .args(["-rn", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!(
            "note: no network namespace (unshare -rn failed); loopback byte counts include \
             this machine's other loopback traffic"
        );
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    std::process::Command::new("unshare")
        .arg("-rn")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env("HEARTH_SCALE_NS", "1")
        .status()
        .ok()
}

fn fit(rows: &[Row], f: impl Fn(&Row) -> f64) -> String {
    let (a, b) = (&rows[0], &rows[rows.len() - 1]);
    let (ya, yb) = (f(a), f(b));
    if ya <= 0.0 || yb <= 0.0 || a.n == b.n {
        return "   -  ".into();
    }
    let exp = (yb / ya).ln() / (b.n as f64 / a.n as f64).ln();
    format!("{:>5.2}× b={exp:+.2}", yb / ya)
}

fn print_header() {
    println!(
        "{:>5} | {:>9} {:>8} {:>6} | {:>9} {:>8} {:>6} | {:>7} | {:>5} {:>5} | {:>8} {:>8} {:>5} {:>5} | {:>9} {:>9} {:>5}",
        "N", "idle B/s", "seg/s", "CPU%", "load B/s", "seg/s", "CPU%", "RSS MiB", "peers", "max", "ledger B", "max B", "rcpts", "alien", "lat med", "lat max", "done"
    );
}

fn print_row(r: &Row) {
    println!(
        "{:>5} | {:>9.0} {:>8.1} {:>6.2} | {:>9.0} {:>8.1} {:>6.2} | {:>7.1} | {:>5.1} {:>5} | {:>8.0} {:>8} {:>5} {:>5} | {:>9.2?} {:>9.2?} {:>2}/{:<2}",
        r.n,
        r.idle.bytes_per_s,
        r.idle.segments_per_s,
        r.idle.cpu_share * 100.0,
        r.load.bytes_per_s,
        r.load.segments_per_s,
        r.load.cpu_share * 100.0,
        r.rss_per_node / (1 << 20) as f64,
        r.peers_mean,
        r.peers_max,
        r.ledger_mean,
        r.ledger_max,
        r.receipts_max,
        r.foreign_receipts,
        r.latency_median,
        r.latency_max,
        r.jobs_done,
        r.jobs,
    );
}

fn main() -> anyhow::Result<()> {
    if let Some(status) = in_own_namespace() {
        std::process::exit(status.code().unwrap_or(1));
    }
    let ns: Vec<usize> = std::env::var("HEARTH_SCALE_NODES")
        .unwrap_or_else(|_| "10,50,150".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    print_header();
    for &n in &ns {
        eprintln!("scale: starting {n} radiators");
        let row = rt.block_on(run_n(n))?;
        eprintln!(
            "scale: N={n} started in {:.1} s, {}/{} jobs done",
            row.start_s, row.jobs_done, row.jobs
        );
        print_row(&row);
        rows.push(row);
    }
    println!();
    println!(
        "per radiator, N radiators in one process on loopback; settle {:?}, idle {:?}, load",
        settle(),
        idle_window()
    );
    println!(
        "  load {LOAD:?} (N/{SUBMITTER_EVERY} jobs × {SHARDS} shards × {REPLICATION} replicas)"
    );
    print_header();
    for r in &rows {
        print_row(r);
    }
    println!("\nDHT boards, measured one radiator at a time in the idle network (bytes every radiator received):");
    println!(
        "{:>5} | {:>7} | {:>12} {:>8} | {:>12} {:>8} | {:>22}",
        "N", "sampled", "want post B", "s", "work find B", "s", "cold, no work: MB/day"
    );
    for r in &rows {
        let b = &r.boards;
        println!(
            "{:>5} | {:>7} | {:>12.0} {:>8.2} | {:>12.0} {:>8.2} | {:>22.1}",
            r.n,
            b.samples,
            b.want_post_bytes,
            b.want_post_secs,
            b.work_find_bytes,
            b.work_find_secs,
            b.cold_bytes_per_day() / 1e6
        );
    }
    if rows.len() >= 2 {
        let (a, b) = (rows[0].n, rows[rows.len() - 1].n);
        println!("\ngrowth from N={a} to N={b} (ratio, and b of cost ∝ N^b):");
        println!("  idle bytes/s   {}", fit(&rows, |r| r.idle.bytes_per_s));
        println!("  idle segments  {}", fit(&rows, |r| r.idle.segments_per_s));
        println!("  idle CPU       {}", fit(&rows, |r| r.idle.cpu_share));
        println!("  load bytes/s   {}", fit(&rows, |r| r.load.bytes_per_s));
        println!("  load segments  {}", fit(&rows, |r| r.load.segments_per_s));
        println!("  load CPU       {}", fit(&rows, |r| r.load.cpu_share));
        println!("  RSS            {}", fit(&rows, |r| r.rss_per_node));
        println!("  peers          {}", fit(&rows, |r| r.peers_mean));
        println!("  ledger bytes   {}", fit(&rows, |r| r.ledger_mean));
        println!(
            "  want post B    {}",
            fit(&rows, |r| r.boards.want_post_bytes)
        );
        println!(
            "  work find B    {}",
            fit(&rows, |r| r.boards.work_find_bytes)
        );
        println!(
            "  job latency    {}",
            fit(&rows, |r| r.latency_median.as_secs_f64())
        );
    }
    Ok(())
}
