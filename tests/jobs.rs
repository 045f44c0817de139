//! Distributed jobs end to end, with real nodes: real libp2p connections on loopback, real
//! sled databases on disk, real wasm execution and real signatures. Each test runs under a
//! timeout.

use std::time::Duration;

use hearth::demo::{loopback_options, start_radiators};
use hearth::jobs::build::{build, JobSpec};
use hearth::jobs::JobStatus;
use hearth::model::{parse_hash, JobLimits};
use hearth::node::{NodeOptions, RunningNode};

mod support;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_node_job_completes_with_right_output_and_receipts() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = start_radiators(dir.path(), 3, 1, &|_, _| {}).await.unwrap();
        settle(&nodes).await;
        let sub = &nodes[0];
        let (id, shards) = submit(sub, &mandelbrot(200, 120, 64), 2).await;
        let view = wait_done(sub, id, Duration::from_secs(60)).await;
        assert_eq!(result_bytes(sub, &view), native_png(200, 120, 64));
        // Two receipts per shard, from two distinct households each, all valid.
        let receipts = sub.context.ledger.list(None).unwrap();
        assert_eq!(receipts.len(), shards * 2);
        for r in &receipts {
            r.verify().unwrap();
        }
        let mut per_shard = std::collections::HashMap::<u32, Vec<_>>::new();
        for r in &receipts {
            per_shard
                .entry(r.record.shard)
                .or_default()
                .push(r.record.worker);
        }
        assert!(per_shard.values().all(|w| w.len() == 2 && w[0] != w[1]));
        // Workers hold their own receipts too (delivered directly or by gossip).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held: usize = nodes
            .iter()
            .map(|n| n.context.ledger.list(Some(&n.household())).unwrap().len())
            .sum();
        assert_eq!(held, shards * 2);
        // Operators see the same through Prometheus, with the node's API token as a scraper
        // is configured with (`credentials_file`).
        let metrics = scrape_metrics(sub, &dir.path().join("radiator-0")).await;
        assert!(
            metrics.contains("hearth_jobs{state=\"done\"} 1.0"),
            "{metrics}"
        );
        assert!(metrics.contains("hearth_peers 2.0"), "{metrics}");
        // The shard memory budget: 2 GiB by default, none of it held once the job is done.
        assert!(
            metrics.contains("hearth_shard_memory_limit_bytes 2147483648.0"),
            "{metrics}"
        );
        assert!(
            metrics.contains("hearth_shard_memory_bytes 0.0"),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!("hearth_ledger_receipts_total {}.0", shards * 2)),
            "{metrics}"
        );
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// Two radiators: 0, warm, coordinates and announces its jobs to nobody (as one whose
/// neighbours all have work, far from the radiators that want heat); 1 is cold.
async fn coordinator_heard_by_nobody(dir: &std::path::Path) -> Vec<RunningNode> {
    let nodes = start_radiators(dir, 2, 1, &|i, o: &mut NodeOptions| {
        if i == 0 {
            warm_if(true, o);
            o.coordinator.announce_fanout = 0;
        }
    })
    .await
    .unwrap();
    settle(&nodes).await;
    nodes
}

/// A coordinator whose announcements reach nobody (as one whose neighbours all have work, far
/// from the radiators that want heat) is still found: a cold radiator that no coordinator
/// offered work looks the work keys up on the DHT, tells the coordinators it finds its heat
/// demand, is offered their open jobs and runs them (`net::work`, `docs/scale.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_radiator_finds_work_that_was_announced_to_nobody_through_the_dht() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = coordinator_heard_by_nobody(dir.path()).await;
        let sub = &nodes[0];
        let (id, shards) = submit(sub, &mandelbrot(128, 64, 64), 1).await;
        let view = wait_done(sub, id, Duration::from_secs(100)).await;
        assert_eq!(result_bytes(sub, &view), native_png(128, 64, 64));
        let worker = nodes[1].household();
        let receipts = sub.context.ledger.list(None).unwrap();
        assert_eq!(receipts.len(), shards);
        assert!(receipts.iter().all(|r| r.record.worker == worker));
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// A job submitted after a cold radiator's lookup of the work board found nothing reaches it
/// at once: the radiator went on the DHT's want board before that lookup, and the
/// coordinator, whose announcements reach nobody, looks the want board up once its work record
/// is published and offers the job directly (`net::work`, `Board`). The radiator makes no
/// second lookup for it. Failed before (no want board): the radiator heard of the job only at
/// its next lookup, 40 s after the first (and up to 21 minutes in a network without work).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_submitted_after_a_cold_radiator_looked_reaches_it_through_the_want_board() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = coordinator_heard_by_nobody(dir.path()).await;
        let (sub, cold) = (&nodes[0], &nodes[1]);
        // The cold radiator's first lookup (20 s after its start) ended empty-handed, and its
        // want record is held by the coordinator's node.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let looked = cold.context.net.status().await.unwrap().work_lookups;
            let held = sub.context.net.status().await.unwrap().want_records;
            if looked >= 1 && held >= 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "lookups {looked}, want records held {held}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (id, shards) = submit(sub, &mandelbrot(128, 64, 64), 1).await;
        let view = wait_done(sub, id, Duration::from_secs(90)).await;
        assert_eq!(result_bytes(sub, &view), native_png(128, 64, 64));
        let receipts = sub.context.ledger.list(None).unwrap();
        assert_eq!(receipts.len(), shards);
        assert!(receipts.iter().all(|r| r.record.worker == cold.household()));
        let status = cold.context.net.status().await.unwrap();
        assert_eq!(
            status.work_lookups, 1,
            "the job reached the radiator through a lookup of its own, not the want board"
        );
        assert!(sub.context.net.status().await.unwrap().want_lookups >= 1);
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cheating_radiator_is_outvoted_and_excluded() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        // Radiator 0 submits and does not work, 1 and 2 are honest, 3 forges outputs.
        let nodes = start_radiators(dir.path(), 4, 1, &|i, o: &mut NodeOptions| {
            o.worker.cheat = i == 3;
            warm_if(i == 0, o);
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let sub = &nodes[0];
        let (id, _) = submit(sub, &mandelbrot(128, 128, 64), 2).await;
        let view = wait_done(sub, id, Duration::from_secs(60)).await;
        assert_eq!(result_bytes(sub, &view), native_png(128, 128, 64));
        let cheater = nodes[3].household();
        let receipts = sub.context.ledger.list(None).unwrap();
        assert!(!receipts.is_empty());
        assert!(
            receipts.iter().all(|r| r.record.worker != cheater),
            "a forged output earned a receipt"
        );
        // Once caught, the cheater gets no more leases: it is told why.
        let response = sub
            .context
            .coordinator
            .control(
                nodes[3].peer_id(),
                hearth::model::wire::Request::Lease {
                    job: id,
                    protocol: hearth::model::wire::PROTOCOL_VERSION,
                    demand_permille: 1000,
                },
            )
            .await;
        for shard in &view.shards {
            let hearth::jobs::ShardView::Verified { households, .. } = shard else {
                panic!("unverified shard in a finished job: {shard:?}")
            };
            assert!(!households.contains(&cheater.to_hex()));
        }
        assert!(
            matches!(
                response,
                hearth::model::wire::Response::Denied {
                    reason: hearth::model::wire::DenyReason::Excluded,
                    ..
                }
            ),
            "the cheater was not flagged: {response:?}"
        );
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_radiator_has_its_shard_leased_again() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = start_radiators(dir.path(), 4, 1, &|i, o: &mut NodeOptions| {
            o.coordinator.lease = Duration::from_secs(3);
            warm_if(i == 0, o);
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let mut nodes = nodes;
        let sub = &nodes[0];
        // Slow shards (a few hundred ms each) so a radiator is caught mid-shard.
        let spec = JobSpec::Pi {
            shards: 6,
            samples: 3_000_000,
            seed: 7,
        };
        let (id, _) = submit(sub, &spec, 1).await;
        // Wait until radiator 3 holds a lease, then kill it.
        let victim = nodes[3].household().to_hex();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let view = nodes[0].context.coordinator.view(id).await.unwrap();
            let leased = view.shards.iter().any(
                |s| matches!(s, hearth::jobs::ShardView::Leased { to, .. } if to.contains(&victim)),
            );
            if leased {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "radiator 3 never got a lease"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let killed = nodes.pop().unwrap();
        killed.shutdown().await;
        let view = wait_done(&nodes[0], id, Duration::from_secs(60)).await;
        let text = String::from_utf8(result_bytes(&nodes[0], &view)).unwrap();
        let estimate: f64 = text.trim().parse().unwrap();
        assert!((estimate - std::f64::consts::PI).abs() < 0.01, "{estimate}");
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_coordinator_finishes_the_job() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        // The coordinator listens on a fixed port so radiators can reach it after its restart.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let listen: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        let l2 = listen.clone();
        let mut nodes = start_radiators(dir.path(), 3, 1, &move |i, o: &mut NodeOptions| {
            if i == 0 {
                o.config.node.listen = vec![l2.clone()];
            }
            o.coordinator.lease = Duration::from_secs(3);
            warm_if(i == 0, o);
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let spec = JobSpec::Pi {
            shards: 8,
            samples: 2_000_000,
            seed: 3,
        };
        let (id, _) = submit(&nodes[0], &spec, 2).await;
        // Let some work happen, then restart the coordinator mid-job.
        partly_verified(&nodes[0], id, Duration::from_secs(30)).await;
        let coordinator = nodes.remove(0);
        let data_dir = dir.path().join("radiator-0");
        coordinator.shutdown().await;
        let bootstrap = hearth::demo::listen_addr(&nodes[0]).await.unwrap();
        let mut opts = loopback_options(&data_dir, Some(bootstrap), 1).unwrap();
        opts.config.node.listen = vec![listen];
        opts.coordinator.lease = Duration::from_secs(3);
        warm_if(true, &mut opts);
        let restarted = hearth::node::start(opts).await.unwrap();
        let view = wait_done(&restarted, id, Duration::from_secs(90)).await;
        let text = String::from_utf8(result_bytes(&restarted, &view)).unwrap();
        let estimate: f64 = text.trim().parse().unwrap();
        assert!((estimate - std::f64::consts::PI).abs() < 0.01, "{estimate}");
        restarted.shutdown().await;
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_rooms_pull_no_shards_and_the_job_says_why() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = start_radiators(dir.path(), 3, 1, &|_, o: &mut NodeOptions| {
            warm_if(true, o);
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let sub = &nodes[0];
        let (id, _) = submit(sub, &mandelbrot(64, 64, 64), 1).await;
        // Every room is warm: nobody leases, and the status says so once heat gossip arrived.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let view = sub.context.coordinator.view(id).await.unwrap();
            assert_eq!(view.shards_verified, 0, "a warm radiator did work");
            if let hearth::jobs::ShardView::Waiting { reason } = &view.shards[0] {
                if reason.contains("no radiator wants heat") {
                    break;
                }
            } else {
                panic!("shard left the waiting state in warm rooms: {view:#?}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no heat reason: {view:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The household of radiator 2 turns its thermostat up: now it wants heat and works.
        let heat = nodes[2].context.heat.as_ref().unwrap();
        heat.set_setpoint(27.0).await.unwrap();
        let view = wait_done(sub, id, Duration::from_secs(60)).await;
        assert_eq!(result_bytes(sub, &view), native_png(64, 64, 64));
        let receipts = sub.context.ledger.list(None).unwrap();
        assert_eq!(receipts.len(), 1);
        assert_eq!(receipts[0].record.worker, nodes[2].household());
        assert_eq!(
            receipts[0].record.method,
            hearth::model::receipt::EnergyMethod::Simulated
        );
        assert!(receipts[0].record.energy_mj > 0);
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipt_reaches_a_worker_that_was_offline_when_its_shard_was_verified() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        // 0 coordinates (warm), 1 starts warm, 2 is cold and does the first replica.
        let mut nodes = start_radiators(dir.path(), 3, 1, &|i, o: &mut NodeOptions| {
            warm_if(i < 2, o);
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let (id, _) = submit(&nodes[0], &mandelbrot(64, 64, 64), 2).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let view = nodes[0].context.coordinator.view(id).await.unwrap();
            if let hearth::jobs::ShardView::Waiting { reason } = &view.shards[0] {
                if reason.contains("1 of 2") {
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no first claim: {view:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Radiator 2 goes away with one claim in; radiator 1's room turns cold and it
        // supplies the second replica, which verifies the shard while 2 is offline.
        let offline = nodes.pop().unwrap();
        let household = offline.household();
        offline.shutdown().await;
        nodes[1]
            .context
            .heat
            .as_ref()
            .unwrap()
            .set_setpoint(27.0)
            .await
            .unwrap();
        wait_done(&nodes[0], id, Duration::from_secs(60)).await;
        // Radiator 2 comes back: the coordinator's outbox delivers its receipt.
        let bootstrap = hearth::demo::listen_addr(&nodes[0]).await.unwrap();
        let mut opts =
            loopback_options(&dir.path().join("radiator-2"), Some(bootstrap), 1).unwrap();
        warm_if(true, &mut opts);
        let back = hearth::node::start(opts).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mine = back.context.ledger.list(Some(&household)).unwrap();
            if mine.len() == 1 {
                mine[0].verify().unwrap();
                assert_eq!(mine[0].record.job, id);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the receipt never reached the returning worker"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        back.shutdown().await;
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// A core-ABI module with `n` extra empty functions: small to send, slow to compile.
fn compile_bomb(n: u32) -> Vec<u8> {
    let mut body = String::new();
    for _ in 0..n {
        body.push_str("(func)");
    }
    wat::parse_str(format!(
        r#"(module (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 1024)
            (func (export "run") (param i32 i32) (result i64) i64.const 0)
            {body})"#
    ))
    .unwrap()
}

/// Polls the job's view on the API of `sub` (radiator 0 of `start_radiators(root, ..)`), as
/// `hearth job status` reads it, until its first shard's reason says it was declined by
/// `households` household(s), for at most `secs`; returns that reason and the view.
async fn wait_declined(
    root: &std::path::Path,
    sub: &RunningNode,
    id: blake3::Hash,
    households: usize,
    secs: u64,
) -> (String, serde_json::Value) {
    let http = reqwest::Client::new();
    let token = std::fs::read_to_string(root.join("radiator-0/api.token")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let view: serde_json::Value = http
            .get(format!("http://{}/v1/jobs/{}", sub.api_addr, id.to_hex()))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let reason = view["shards"][0]["reason"].as_str().unwrap_or_default();
        if reason.contains(&format!("declined by {households} household(s)")) {
            return (reason.to_string(), view);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not declined: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_beyond_the_radiators_limits_are_declined_and_the_submitter_sees_why() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        // Every radiator allows 64 MiB per shard and modules of at most 1 MiB.
        let nodes = start_radiators(dir.path(), 3, 1, &|_, o: &mut NodeOptions| {
            o.config.limits.memory_per_shard_mib = 64;
            o.config.limits.module_mib = 1;
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let sub = &nodes[0];
        let small = wat::parse_str(
            r#"(module (memory (export "memory") 1)
                (func (export "alloc") (param i32) (result i32) i32.const 1024)
                (func (export "run") (param i32 i32) (result i64) i64.const 0))"#,
        )
        .unwrap();
        // 1. The memory bomb: a manifest asking for 4 GiB per shard.
        let huge_memory = JobLimits {
            memory_bytes: 4 << 30,
            ..JobLimits::default()
        };
        let modest = JobLimits {
            memory_bytes: 16 << 20,
            ..JobLimits::default()
        };
        // 2. The compile bomb: 100 000 empty functions in 400 kB.
        let bomb = compile_bomb(100_000);
        // 3. A module over the 1 MiB limit (a 2 MiB data segment).
        let oversize = wat::parse_str(format!(
            r#"(module (memory (export "memory") 40)
                (func (export "alloc") (param i32) (result i32) i32.const 1024)
                (func (export "run") (param i32 i32) (result i64) i64.const 0)
                (data (i32.const 0) "{}"))"#,
            "x".repeat(2 << 20)
        ))
        .unwrap();
        let mut jobs = Vec::new();
        for (module, limits, expect) in [
            (
                small.clone(),
                huge_memory,
                "asks for 4096 MiB of memory per shard; this radiator allows at most 64 MiB",
            ),
            (
                bomb.clone(),
                modest,
                "defines 100002 or more functions; this radiator compiles at most 20000",
            ),
            (
                oversize.clone(),
                modest,
                "this radiator accepts at most 1048576 (it was not fetched)",
            ),
        ] {
            let spec = JobSpec::Wasm {
                module,
                inputs: vec![b"in".to_vec()],
            };
            let manifest = build(&sub.context.store, &spec, sub.household(), limits, 1).unwrap();
            let id = sub.context.coordinator.submit(manifest).await.unwrap();
            jobs.push((id, expect));
        }
        let started = std::time::Instant::now();
        // `hearth job status` reads this API: every job waits, declined by all three
        // households, with the reason.
        for (id, expect) in &jobs {
            let (reason, view) = wait_declined(dir.path(), sub, *id, 3, 60).await;
            assert!(reason.contains(expect), "{reason}");
            assert_eq!(view["status"]["state"], "running", "{view:#}");
        }
        eprintln!(
            "three jobs declined by three radiators in {:?}",
            started.elapsed()
        );
        // Declined before anything was fetched: no other radiator ever held the 4 GiB job's
        // module or the oversize module. The compile bomb was fetched, refused by its shape,
        // and deleted with the job's manifests once declined.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for n in &nodes[1..] {
            assert!(!n.context.store.has(&blake3::hash(&small)).unwrap());
            assert!(!n.context.store.has(&blake3::hash(&oversize)).unwrap());
            // Pieces fetched: three manifests and the bomb (two; its input is never fetched).
            // The 2 MiB module alone would have been nine.
            let fetched = n.context.net.status().await.unwrap().chunks_fetched;
            assert!(fetched <= 5, "{fetched} pieces fetched");
            let leftovers = || {
                std::iter::once(blake3::hash(&bomb))
                    .chain(jobs.iter().map(|(id, _)| *id))
                    .filter(|h| n.context.store.has(h).unwrap())
                    .count()
            };
            while leftovers() > 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "declined jobs' blobs kept"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // The radiators stop asking: over two re-announcements no shard is leased again.
        for _ in 0..40 {
            for (id, _) in &jobs {
                let view = sub.context.coordinator.view(*id).await.unwrap();
                assert!(
                    matches!(view.shards[0], hearth::jobs::ShardView::Waiting { .. }),
                    "a declining radiator asked again: {view:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// A module no radiator can run (not WebAssembly, an import outside hearth's deterministic
/// set, no shard ABI) is refused when it is submitted, with the reason, instead of being
/// announced for every radiator to fetch, fail on and report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_module_no_radiator_can_run_is_refused_at_submission() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = start_radiators(dir.path(), 1, 1, &|_, _: &mut NodeOptions| {})
            .await
            .unwrap();
        let sub = &nodes[0];
        let clock = wat::parse_str(
            r#"(module (import "env" "clock" (func (result i64)))
                (memory (export "memory") 1)
                (func (export "alloc") (param i32) (result i32) i32.const 1024)
                (func (export "run") (param i32 i32) (result i64) i64.const 0))"#,
        )
        .unwrap();
        let no_abi = wat::parse_str(r#"(module (func (export "main")))"#).unwrap();
        for (module, expect) in [
            (b"MZ, not a module".to_vec(), "not valid WebAssembly"),
            (clock, "env::clock"),
            (no_abi, "does not follow a hearth shard ABI"),
            // Over the size any radiator accepts: refused without being read.
            (
                vec![0; hearth::exec::MAX_MODULE_BYTES + 1],
                "over the 67108864 any radiator accepts",
            ),
        ] {
            let spec = JobSpec::Wasm {
                module,
                inputs: vec![b"in".to_vec()],
            };
            let manifest = build(
                &sub.context.store,
                &spec,
                sub.household(),
                JobLimits::default(),
                1,
            )
            .unwrap();
            let err = sub.context.coordinator.submit(manifest).await.unwrap_err();
            let err = err.to_string();
            assert!(err.contains("no radiator can run"), "{err}");
            assert!(err.contains(expect), "{err}");
        }
        assert!(sub.context.coordinator.list().await.is_empty());
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_delete_a_finished_jobs_blobs_and_the_submitter_keeps_its_own() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = start_radiators(dir.path(), 3, 1, &|_, _| {}).await.unwrap();
        settle(&nodes).await;
        let sub = &nodes[0];
        let manifest = manifest(sub, &mandelbrot(128, 64, 64), 2);
        let mut blobs = vec![manifest.module];
        blobs.extend(manifest.inputs.iter().copied());
        let id = sub.context.coordinator.submit(manifest).await.unwrap();
        blobs.push(id);
        let view = wait_done(sub, id, Duration::from_secs(60)).await;
        assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
        for s in &view.shards {
            if let hearth::jobs::ShardView::Verified { output, .. } = s {
                blobs.push(parse_hash(output).unwrap());
            }
        }
        // Some radiator other than the submitter worked it, so it fetched the job's blobs.
        let receipts = sub.context.ledger.list(None).unwrap();
        assert!(receipts.iter().any(|r| r.record.worker != sub.household()));
        // Once the job is closed, the other radiators delete everything they fetched or
        // made for it; the submitter keeps the job's blobs and the result.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        for n in &nodes[1..] {
            loop {
                let held: Vec<_> = blobs
                    .iter()
                    .filter(|h| n.context.store.has(h).unwrap())
                    .collect();
                if held.is_empty() {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "a worker still holds {held:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        for h in &blobs {
            assert!(sub.context.store.has(h).unwrap(), "the submitter lost {h}");
        }
        assert_eq!(result_bytes(sub, &view), native_png(128, 64, 64));
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// A core-ABI shard that spins `n` times (n = the input, u64 little-endian) and returns the
/// 8-byte result of an LCG: a busy loop whose length the test chooses.
const SPIN_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $n i64) (local $acc i64)
    (local.set $n (i64.load (local.get $ptr)))
    (block $done
      (loop $l
        (br_if $done (i64.eqz (local.get $n)))
        (local.set $acc (i64.add (i64.mul (local.get $acc) (i64.const 6364136223846793005))
                                 (i64.const 1442695040888963407)))
        (local.set $n (i64.sub (local.get $n) (i64.const 1)))
        (br $l)))
    (i64.store (i32.const 0) (local.get $acc))
    (i64.const 8)))"#;

/// [`SPIN_WAT`] compiled, and how many spins take at least about `secs` of this machine's
/// time. The machine is shared, so its speed varies: calibrated on the fastest of three
/// probes, so the shards take at least that long however quiet the machine gets.
fn spin_module(secs: f64) -> (Vec<u8>, u64) {
    let module = wat::parse_str(SPIN_WAT).unwrap();
    let executor = hearth::exec::Executor::new().unwrap();
    let hash = blake3::hash(&module);
    let limits = hearth::exec::Limits {
        fuel: u64::MAX / 2,
        ..Default::default()
    };
    // The first run compiles the module; the probes time the later ones.
    executor
        .run(&hash, &module, 1u64.to_le_bytes().as_slice(), &limits)
        .unwrap();
    let probe = 30_000_000u64;
    let per_spin = (0..3)
        .map(|_| {
            let t = std::time::Instant::now();
            executor
                .run(&hash, &module, probe.to_le_bytes().as_slice(), &limits)
                .unwrap();
            t.elapsed().as_secs_f64() / probe as f64
        })
        .fold(f64::INFINITY, f64::min);
    (module, (secs / per_spin) as u64)
}

/// Issue 16: a shard slower than its lease used to livelock (every claim came after the
/// deadline and was rejected; the shard was leased again and again). Workers now renew their
/// lease while the shard runs, so 4-second shards under a 1.5-second lease complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_shards_under_short_leases_complete_by_renewal() {
    tokio::time::timeout(TIMEOUT, async {
        let (module, spins) = spin_module(4.0);
        let lease = Duration::from_millis(1500);

        let dir = tempfile::tempdir().unwrap();
        let nodes = start_radiators(dir.path(), 3, 1, &|i, o: &mut NodeOptions| {
            o.coordinator.lease = lease;
            warm_if(i == 0, o);
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let sub = &nodes[0];
        let spec = JobSpec::Wasm {
            module: module.clone(),
            inputs: vec![spins.to_le_bytes().to_vec(), (spins + 1).to_le_bytes().to_vec()],
        };
        let manifest = build(
            &sub.context.store,
            &spec,
            sub.household(),
            JobLimits {
                fuel_per_shard: u64::MAX / 2,
                ..JobLimits::default()
            },
            1,
        )
        .unwrap();
        let id = sub.context.coordinator.submit(manifest).await.unwrap();
        let view = wait_done(sub, id, Duration::from_secs(90)).await;
        let out = result_bytes(sub, &view);
        assert_eq!(out.len(), 16);
        // Each shard ran for longer than its lease lasts, and was still claimed.
        let receipts = sub.context.ledger.list(None).unwrap();
        assert_eq!(receipts.len(), 2);
        for r in &receipts {
            let ran = r.record.end_ms - r.record.start_ms;
            assert!(
                ran > lease.as_millis() as u64,
                "the shard ran {ran} ms, not longer than the {lease:?} lease: the test proves nothing"
            );
        }
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// A shard waiting for the radiator's memory is not executing, so its receipt's window (the
/// meter's charge) starts only once it is admitted. Found by reading the code: the worker
/// started the meter before the executor waited for the memory budget, so on a radiator
/// whose memory admits one shard at a time, the second of two slots was charged for the whole
/// of the first's run as well as its own (and their windows overlapped).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_waiting_for_memory_is_not_charged_for_the_wait() {
    tokio::time::timeout(TIMEOUT, async {
        let (module, spins) = spin_module(0.5);

        let dir = tempfile::tempdir().unwrap();
        // Radiator 1 has two slots but memory for one such shard at a time: a shard of 16 MiB
        // reserves its memory, room for an output as large and stderr's tail, more than
        // half of 32 MiB.
        let nodes = start_radiators(dir.path(), 2, 2, &|i, o: &mut NodeOptions| {
            warm_if(i == 0, o);
            o.config.limits.memory_per_shard_mib = 32;
            o.config.limits.memory_total_mib = 32;
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let sub = &nodes[0];
        let spec = JobSpec::Wasm {
            module,
            inputs: (0..4u64)
                .map(|i| (spins + i).to_le_bytes().to_vec())
                .collect(),
        };
        let manifest = build(
            &sub.context.store,
            &spec,
            sub.household(),
            JobLimits {
                fuel_per_shard: u64::MAX / 2,
                memory_bytes: 16 << 20,
            },
            1,
        )
        .unwrap();
        // The household sees its radiator's memory in `hearth status` (`GET /v1/status`).
        let token = std::fs::read_to_string(dir.path().join("radiator-1/api.token")).unwrap();
        let status_url = format!("http://{}/v1/status", nodes[1].api_addr);
        let status = move || {
            let (url, token) = (status_url.clone(), token.clone());
            async move {
                let s: hearth::api::Status = reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token.trim())
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                s
            }
        };
        let memory = || async {
            let s = status().await;
            (s.shard_memory_bytes, s.shard_memory_limit_bytes)
        };
        // And where its radiator's connections came from: it dialled its bootstrap node.
        let dials = status().await.dials;
        assert!(
            dials.established(hearth::net::DialOrigin::Bootstrap) >= 1,
            "{dials:?}"
        );
        let id = sub.context.coordinator.submit(manifest).await.unwrap();
        let mut most = 0;
        loop {
            let (held, limit) = memory().await;
            assert_eq!(limit, 32 << 20);
            assert!(held <= limit, "{held} held");
            most = most.max(held);
            if !matches!(
                sub.context.coordinator.view(id).await.unwrap().status,
                JobStatus::Running
            ) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A running shard's whole reservation (capped at the budget), none once all is stored.
        assert_eq!(most, 32 << 20);
        assert_eq!(memory().await.0, 0);
        let view = wait_done(sub, id, Duration::from_secs(90)).await;
        assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
        let mut windows: Vec<(u64, u64)> = sub
            .context
            .ledger
            .list(None)
            .unwrap()
            .iter()
            .map(|r| (r.record.start_ms, r.record.end_ms))
            .collect();
        assert_eq!(windows.len(), 4);
        windows.sort();
        // One shard executed at a time, so the charged windows follow one another.
        for pair in windows.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "windows overlap: {pair:?} (all: {windows:?})"
            );
        }
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// Waits until shard 0 of `id` is waiting with `reason` in its explanation.
async fn wait_reason(node: &RunningNode, id: blake3::Hash, reason: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let view = node.context.coordinator.view(id).await.unwrap();
        if let hearth::jobs::ShardView::Waiting { reason: r } = &view.shards[0] {
            if r.contains(reason) {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shard 0 never waited with {reason:?}: {view:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn turn_cold(node: &RunningNode) {
    node.context
        .heat
        .as_ref()
        .unwrap()
        .set_setpoint(27.0)
        .await
        .unwrap();
}

/// Issue 10, defect (a): a liar who claims first with the right output and the wrong fuel
/// used to be paid (the receipt went to the first claim with the winning output) while the
/// honest majority was excluded. The receipts now go to the decided (output, fuel) group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_claim_with_the_wrong_fuel_is_not_paid() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        // 0 submits (warm); 1 lies about fuel and is the only cold room at first; 2 and 3
        // are honest and start warm.
        let nodes = start_radiators(dir.path(), 4, 1, &|i, o: &mut NodeOptions| {
            o.worker.cheat_fuel = i == 1;
            warm_if(i != 1, o);
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let sub = &nodes[0];
        let (id, _) = submit(sub, &mandelbrot(64, 64, 64), 2).await;
        wait_reason(sub, id, "1 of 2").await;
        turn_cold(&nodes[2]).await;
        turn_cold(&nodes[3]).await;
        let view = wait_done(sub, id, Duration::from_secs(60)).await;
        assert_eq!(result_bytes(sub, &view), native_png(64, 64, 64));
        let liar = nodes[1].household();
        let paid: Vec<_> = sub
            .context
            .ledger
            .list(None)
            .unwrap()
            .iter()
            .map(|r| r.record.worker)
            .collect();
        assert_eq!(paid.len(), 2, "{paid:?}");
        assert!(!paid.contains(&liar), "the liar was paid");
        assert!(paid.contains(&nodes[2].household()) && paid.contains(&nodes[3].household()));
        let hearth::jobs::ShardView::Verified { households, .. } = &view.shards[0] else {
            panic!("{view:#?}")
        };
        assert!(!households.contains(&liar.to_hex()));
        // The liar is the one excluded, not the honest households.
        for (i, expect_excluded) in [(1, true), (2, false), (3, false)] {
            let r = sub
                .context
                .coordinator
                .control(
                    nodes[i].peer_id(),
                    hearth::model::wire::Request::Lease {
                        job: id,
                        protocol: hearth::model::wire::PROTOCOL_VERSION,
                        demand_permille: 1000,
                    },
                )
                .await;
            let excluded = matches!(
                r,
                hearth::model::wire::Response::Denied {
                    reason: hearth::model::wire::DenyReason::Excluded,
                    ..
                }
            );
            assert_eq!(excluded, expect_excluded, "radiator {i}: {r:?}");
        }
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// Issue 10, defect (b): `replication` failure reports used to fail the shard, and the job,
/// even when an honest claim was in. Failures now fail a shard only when no claim exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failure_reports_do_not_fail_a_shard_with_an_honest_claim() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        // 0 submits (warm); 1 is honest and cold; 2 and 3 report failures; 4 is honest and
        // starts warm.
        let nodes = start_radiators(dir.path(), 5, 1, &|i, o: &mut NodeOptions| {
            o.worker.fake_failure = i == 2 || i == 3;
            warm_if(i != 1, o);
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let sub = &nodes[0];
        let (id, _) = submit(sub, &mandelbrot(64, 64, 64), 2).await;
        wait_reason(sub, id, "1 of 2").await;
        turn_cold(&nodes[2]).await;
        turn_cold(&nodes[3]).await;
        // Both failures come in while the honest claim stands: the job runs on.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let view = sub.context.coordinator.view(id).await.unwrap();
        assert_eq!(view.status, JobStatus::Running, "{view:#?}");
        turn_cold(&nodes[4]).await;
        let view = wait_done(sub, id, Duration::from_secs(60)).await;
        assert_eq!(result_bytes(sub, &view), native_png(64, 64, 64));
        let paid: Vec<_> = sub
            .context
            .ledger
            .list(None)
            .unwrap()
            .iter()
            .map(|r| r.record.worker)
            .collect();
        assert_eq!(paid.len(), 2);
        assert!(paid.contains(&nodes[1].household()) && paid.contains(&nodes[4].household()));
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// A radiator whose disk has no room for a job's blobs (storing them would leave less than its
/// `[limits] disk_free_mib`) gives its lease back at once with the reason, which the submitter
/// sees, instead of asking for lease after lease it cannot work (it did until 2026-12-04: the
/// refusal looked like an unreachable coordinator, retried every second); once there is room
/// it asks again and works the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_radiator_short_of_disk_gives_work_back_saying_why_and_takes_it_once_there_is_room() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        // 0 submits (warm: it does not work); 1 works.
        let nodes = start_radiators(dir.path(), 2, 1, &|i, o: &mut NodeOptions| {
            warm_if(i == 0, o)
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let (sub, worker) = (&nodes[0], &nodes[1]);
        let free = hearth::store::free_bytes(dir.path()).unwrap();
        worker.context.store.set_disk_floor(free + (1 << 30));
        let spec = JobSpec::Pi {
            shards: 2,
            samples: 10_000,
            seed: 3,
        };
        let (id, _) = submit(sub, &spec, 1).await;
        let (reason, _) = wait_declined(dir.path(), sub, id, 1, 30).await;
        assert!(reason.contains("keeps free on its disk"), "{reason}");
        worker.context.store.set_disk_floor(0);
        let view = wait_done(sub, id, Duration::from_secs(75)).await;
        assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// A coordinator that went away (its home's line down, its machine off) is asked less and less
/// often, not every second until the radiator gives its job up. Every ask of a peer a radiator
/// is not connected to is a dial; to a home behind NAT it is a circuit at the relay, whose rate
/// limiter charges the radiator for it (30, then one per 2 minutes), so a radiator that asked
/// a gone coordinator every second would be left, for the next hour, unable to reach any other
/// home through that relay. Real nodes on loopback, where a dial to the gone coordinator fails
/// at once, as a circuit to a home without a reservation does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_radiator_asks_a_coordinator_that_went_away_less_and_less_often() {
    use hearth::net::DialOrigin;
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = start_radiators(dir.path(), 3, 1, &|i, o: &mut NodeOptions| {
            o.coordinator.lease = Duration::from_secs(3);
            warm_if(i == 0, o);
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let spec = JobSpec::Pi {
            shards: 64,
            samples: 64_000_000,
            seed: 5,
        };
        let (id, _) = submit(&nodes[0], &spec, 2).await;
        partly_verified(&nodes[0], id, Duration::from_secs(60)).await;
        nodes.remove(0).shutdown().await;
        let asks = || async {
            let mut n = Vec::new();
            for r in &nodes {
                n.push(
                    r.context
                        .net
                        .status()
                        .await
                        .unwrap()
                        .dials
                        .dials(DialOrigin::Control),
                );
            }
            n
        };
        let before = asks().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        let after = asks().await;
        eprintln!("dials to the gone coordinator in 30 s: before {before:?}, after {after:?}");
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            // Leases asked for 1, 2, 4, 8, 16 s apart and each held claim sent again 2, 4, 8,
            // 16 s apart: about 15 dials in 30 s. Every second, 30 for the leases alone.
            assert!(
                a - b <= 20,
                "radiator {i} dialled the gone coordinator {} times in 30 s",
                a - b
            );
        }
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// Waits (at most `within`) until the job `sub` coordinates has a shard verified, and fails
/// if every shard was by then: the test needs the job still running.
async fn partly_verified(sub: &RunningNode, id: blake3::Hash, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let v = sub.context.coordinator.view(id).await.unwrap();
        if v.shards_verified >= 1 {
            assert!(
                v.shards_verified < v.shards_total,
                "the job finished too soon"
            );
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no shard verified");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
