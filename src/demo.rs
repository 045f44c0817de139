//! `hearth demo`: a local network of real radiators on loopback doing real work.
//!
//! Each radiator is a full node (its own data directory, household key, sled database,
//! libp2p swarm and API) in this process. The first one submits a tiled Mandelbrot render;
//! the others find it through it as their bootstrap peer, pull shards, and return claims that
//! are checked by hash across households. The demo then checks the image against a native
//! render, verifies every receipt, writes both to the output directory and prints each
//! household's credit. It fails (non-zero exit) unless the image is right and every receipt
//! verifies.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::Config;
use crate::identity::Identity;
use crate::jobs::build::{build, JobSpec};
use crate::jobs::JobStatus;
use crate::kernels;
use crate::model::power::{peak_overlap_watts, Window};
use crate::model::receipt::{verify_batch, Receipt, ReceiptExport};
use crate::model::JobLimits;
use crate::node::{self, NodeOptions, RunningNode};

pub struct DemoOptions {
    pub radiators: usize,
    pub out: PathBuf,
    pub width: u32,
    pub height: u32,
    pub tile: u32,
}

const MAX_ITER: u32 = 500;
/// Temperature of the demo's warm rooms, above every default setpoint.
const WARM_ROOM: f64 = 23.0;

fn is_warm(radiator: usize) -> bool {
    radiator % 4 == 3
}

/// Starts `n` radiators on loopback, the first one being every other's bootstrap peer.
/// `configure` may adjust each node's options (by index) before it starts.
pub async fn start_radiators(
    root: &std::path::Path,
    n: usize,
    slots: usize,
    configure: &dyn Fn(usize, &mut NodeOptions),
) -> anyhow::Result<Vec<RunningNode>> {
    let mut nodes: Vec<RunningNode> = Vec::with_capacity(n);
    for i in 0..n {
        let bootstrap = match nodes.first() {
            Some(first) => Some(listen_addr(first).await?),
            None => None,
        };
        let mut opts = loopback_options(&root.join(format!("radiator-{i}")), bootstrap, slots)?;
        configure(i, &mut opts);
        let node = node::start(opts)
            .await
            .with_context(|| format!("starting radiator {i}"))?;
        nodes.push(node);
    }
    Ok(nodes)
}

/// Options for a radiator on loopback: any free port, API on a free port, mDNS off, the given
/// bootstrap peer, and a cold simulated room (12 °C, below any setpoint) so it wants work from
/// its first one-second control period. Creates the household key if `dir` has none.
pub fn loopback_options(
    dir: &std::path::Path,
    bootstrap: Option<libp2p::Multiaddr>,
    slots: usize,
) -> anyhow::Result<NodeOptions> {
    Identity::load_or_create(dir)?;
    let mut config = Config::default();
    config.node.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    config.node.api = "127.0.0.1:0".parse()?;
    config.node.mdns = false;
    config.node.bootstrap = bootstrap.into_iter().collect();
    config.worker.slots = slots;
    config.heat.simulated.initial_celsius = Some(12.0);
    config.heat.period_secs = 1;
    Ok(NodeOptions::new(dir, config))
}

/// The first listen address of a node, with its `/p2p/` suffix, once it is listening.
pub async fn listen_addr(node: &RunningNode) -> anyhow::Result<libp2p::Multiaddr> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = node.context.net.status().await?;
        if let Some(addr) = status.listen_addrs.first() {
            return Ok(addr
                .clone()
                .with(libp2p::multiaddr::Protocol::P2p(node.peer_id())));
        }
        if Instant::now() > deadline {
            bail!("radiator {} is not listening after 10 s", node.peer_id());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every node has at least `min_peers` connections.
pub async fn wait_connected(
    nodes: &[RunningNode],
    min_peers: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut ok = true;
        for n in nodes {
            if n.context.net.status().await?.connected_peers < min_peers {
                ok = false;
            }
        }
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("radiators did not connect within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    if opts.radiators < 2 {
        bail!("a demo needs at least 2 radiators: every shard is verified by two households");
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let nodes_dir = opts.out.join("nodes");
    if nodes_dir.exists() {
        std::fs::remove_dir_all(&nodes_dir)
            .with_context(|| format!("clearing {}", nodes_dir.display()))?;
    }
    println!("starting {} radiators on loopback ...", opts.radiators);
    // Every fourth radiator stands in a room that is already warm: it should do no work.
    let nodes = start_radiators(&nodes_dir, opts.radiators, 1, &|i, o: &mut NodeOptions| {
        if is_warm(i) {
            o.config.heat.simulated.initial_celsius = Some(WARM_ROOM);
        }
    })
    .await?;
    wait_connected(&nodes, 1, Duration::from_secs(20)).await?;
    // Give gossipsub a heartbeat or two to graft its meshes before the announcement.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let result = drive(&nodes, &opts).await;
    for n in nodes {
        n.shutdown().await;
    }
    result
}

async fn drive(nodes: &[RunningNode], opts: &DemoOptions) -> anyhow::Result<()> {
    let submitter = &nodes[0];
    let spec = JobSpec::Mandelbrot {
        width: opts.width,
        height: opts.height,
        tile: opts.tile,
        max_iter: MAX_ITER,
    };
    let manifest = build(
        &submitter.context.store,
        &spec,
        submitter.household(),
        JobLimits::default(),
        2,
    )?;
    let started = Instant::now();
    let id = submitter.context.coordinator.submit(manifest).await?;
    println!(
        "submitted job {} from radiator 0 ({} shards, replication 2)",
        id.to_hex(),
        opts.width.div_ceil(opts.tile) * opts.height.div_ceil(opts.tile)
    );
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} shards verified {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let view = loop {
        let Some(view) = submitter.context.coordinator.summary(id).await else {
            bail!("the coordinator lost the job");
        };
        bar.set_length(view.shards_total as u64);
        bar.set_position(view.shards_verified as u64);
        match &view.status {
            JobStatus::Running if started.elapsed() < Duration::from_secs(600) => {}
            JobStatus::Running => bail!("the job did not finish within 10 minutes"),
            JobStatus::Failed { reason } => bail!("the job failed: {reason}"),
            JobStatus::Done { .. } => break view,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let JobStatus::Done { result } = &view.status else {
        unreachable!("the loop only breaks on Done")
    };
    let png = submitter
        .context
        .store
        .get_bytes(&crate::model::parse_hash(result).map_err(anyhow::Error::msg)?)?;
    let image_path = opts.out.join("mandelbrot.png");
    std::fs::write(&image_path, &png)?;
    let reference = kernels::assemble_mandelbrot_png(
        opts.width,
        opts.height,
        opts.tile,
        &kernels::mandelbrot_tiles(opts.width, opts.height, opts.tile, MAX_ITER)
            .iter()
            .map(kernels::mandelbrot_native)
            .collect::<Vec<_>>(),
    )?;
    let image_ok = png == reference;
    println!(
        "job done in {:.2?}; image {} ({}x{}) {}",
        elapsed,
        image_path.display(),
        opts.width,
        opts.height,
        if image_ok {
            "matches the native render"
        } else {
            "DIFFERS from the native render"
        }
    );

    // Receipts reach their workers directly, with their inclusion proofs; give stragglers a
    // moment.
    let expected = view.shards_total * 2;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = Vec::new();
    while Instant::now() < deadline {
        all.clear();
        for n in nodes {
            all.extend(n.context.ledger.list(Some(&n.household()))?);
        }
        if all.len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let checks = verify_batch(&all);
    let bad = checks.iter().filter(|c| c.is_err()).count();
    let mut export = ReceiptExport::new(&all, None);
    for n in nodes {
        for r in n.context.ledger.list(Some(&n.household()))? {
            if let Some(inc) = n.context.ledger.inclusion(&r.id())? {
                export
                    .inclusions
                    .push(crate::model::receipt::InclusionJson::new(&r.id(), &inc));
            }
        }
    }
    let receipts_path = opts.out.join("receipts.json");
    std::fs::write(&receipts_path, serde_json::to_string_pretty(&export)?)?;
    println!(
        "{} receipts written to {} ({} expected); {} verify, {bad} fail",
        all.len(),
        receipts_path.display(),
        expected,
        all.len() - bad
    );
    println!();
    println!(
        "{:<9} {:<18} {:<22} {:>6} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "radiator",
        "household",
        "room",
        "shards",
        "drawn J",
        "charged J",
        "credit J",
        "peak W",
        "rating W"
    );
    // Every demo radiator is a simulated one with the default rating (`loopback_options`).
    let rating = Config::default().heat.simulated.radiator_watts;
    let mut warm_worked = Vec::new();
    let mut broken_laws = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let own: Vec<&Receipt> = all
            .iter()
            .filter(|r| r.record.worker == n.household())
            .collect();
        let credited: u64 = own.iter().map(|r| r.terms.credited_mj).sum();
        let windows: Vec<Window> = own
            .iter()
            .map(|r| Window {
                start_ms: r.record.start_ms,
                end_ms: r.record.end_ms,
                energy_mj: r.record.energy_mj,
            })
            .collect();
        let peak = peak_overlap_watts(&windows);
        let heat = n.context.heat.as_ref();
        let metered = heat.map(|h| h.meter().totals()).unwrap_or_default();
        let room = match heat.map(|h| h.status()) {
            Some(h) => format!(
                "{:.1} °C, set {:.1}{}",
                h.room_celsius.unwrap_or(f64::NAN),
                h.setpoint_celsius,
                if h.demand_permille == 0 {
                    " warm"
                } else {
                    " cold"
                }
            ),
            None => "-".into(),
        };
        if is_warm(i) && !own.is_empty() {
            warm_worked.push(i);
        }
        // The conservation laws, per radiator: receipts credit no more than the meter charged,
        // the meter charged no more than the radiator drew, and no instant's receipts imply
        // more power than the radiator is rated for.
        if credited as f64 > metered.charged_mj
            || metered.charged_mj > metered.drawn_mj
            || peak > rating
        {
            broken_laws.push(i);
        }
        println!(
            "{:<9} {:<18} {:<22} {:>6} {:>10.1} {:>10.1} {:>10.1} {:>8.0} {:>8.0}",
            format!("#{i}"),
            format!("{}…", &n.household().to_hex()[..16]),
            room,
            own.len(),
            metered.drawn_mj / 1000.0,
            metered.charged_mj / 1000.0,
            credited as f64 / 1000.0,
            peak,
            rating
        );
    }
    println!(
        "room: its temperature and setpoint, and whether it wants heat; drawn: everything the \
         radiator drew, idle included; charged: what its meter charged to executing shards; credit: what its verified receipts credit; peak: the most power its \
         overlapping receipts imply at one instant"
    );
    if !broken_laws.is_empty() {
        bail!("radiators {broken_laws:?} credited more energy than they drew or were rated for");
    }
    if !warm_worked.is_empty() {
        bail!("radiators {warm_worked:?} in warm rooms did work they should have declined");
    }
    if !image_ok {
        bail!("the assembled image differs from the native render");
    }
    if bad > 0 || all.len() < expected {
        bail!(
            "{bad} receipts failed verification; {} of {expected} present",
            all.len()
        );
    }
    println!(
        "\nall {} receipts verify; every shard was checked by two households; no radiator \
         credited more energy than it drew or more power than its rating",
        all.len()
    );
    Ok(())
}
