//! The worker's claim outbox (`worker/claims`) across a stop, with real nodes: libp2p on
//! loopback, sled on disk, real wasm and real signatures. A worker is stopped on its way to
//! sending a claim (the test-only `claim_stop` hook: its task halts there as if the process had
//! been killed, then the node is stopped), the test reads the stored claim from the stopped
//! node's database, and the node is started again on the same directory.
//!
//! The defect these show (issue 16, the crash soak): a worker killed after its claim was
//! counted resumed the lease, ran the shard again and sent a *different* claim, which the
//! coordinator refused ("no live lease"). Now the stored claim's exact bytes are sent again.

use std::time::Duration;

use hearth::demo::{listen_addr, loopback_options, start_radiators, wait_connected};
use hearth::jobs::build::{build, JobSpec};
use hearth::jobs::worker::{ClaimEvent, ClaimLog, ClaimStop};
use hearth::jobs::{JobStatus, ShardView};
use hearth::model::JobLimits;
use hearth::node::{NodeOptions, RunningNode};

const TIMEOUT: Duration = Duration::from_secs(120);

/// A one-shard job at replication 1: one claim decides it.
async fn submit_one_shard(node: &RunningNode) -> blake3::Hash {
    let spec = JobSpec::Pi {
        shards: 1,
        samples: 200_000,
        seed: 5,
    };
    let manifest = build(
        &node.context.store,
        &spec,
        node.household(),
        JobLimits::default(),
        1,
    )
    .unwrap();
    node.context.coordinator.submit(manifest).await.unwrap()
}

fn events(log: &ClaimLog) -> Vec<ClaimEvent> {
    log.lock().unwrap().clone()
}

/// Waits until `log` holds an event `pick` selects, and returns it.
async fn wait_event<T>(log: &ClaimLog, what: &str, pick: impl Fn(&ClaimEvent) -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = events(log).iter().find_map(&pick) {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {what} in {:#?}",
            events(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stored(e: &ClaimEvent) -> Option<Vec<u8>> {
    match e {
        ClaimEvent::Stored { claim, .. } => Some(claim.clone()),
        _ => None,
    }
}

/// (claim bytes, accepted, detail, resent) of an answered claim.
fn answered(e: &ClaimEvent) -> Option<(Vec<u8>, bool, String, bool)> {
    match e {
        ClaimEvent::Answered {
            claim,
            accepted,
            detail,
            resent,
            ..
        } => Some((claim.clone(), *accepted, detail.clone(), *resent)),
        _ => None,
    }
}

async fn wait_status(node: &RunningNode, id: blake3::Hash, done: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let view = node.context.coordinator.view(id).await.unwrap();
        if matches!(view.status, JobStatus::Done { .. }) == done {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job not {}: {view:#?}",
            if done { "done" } else { "running" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a stopped worker's database holds: (stored claim entries, saved leases).
fn worker_trees(data_dir: &std::path::Path) -> (Vec<Vec<u8>>, usize) {
    let db = sled::open(data_dir.join("db")).unwrap();
    let claims = db
        .open_tree("worker/claims")
        .unwrap()
        .iter()
        .map(|kv| kv.unwrap().1.to_vec())
        .collect();
    let leases = db.open_tree("worker/leases").unwrap().len();
    (claims, leases)
}

/// Starts the worker again on its directory, cold (it wants heat), recording its claims.
async fn restart_worker(
    dir: &std::path::Path,
    coordinator: &RunningNode,
) -> (RunningNode, ClaimLog) {
    let log = ClaimLog::default();
    let bootstrap = listen_addr(coordinator).await.unwrap();
    let mut opts = loopback_options(dir, Some(bootstrap), 1).unwrap();
    opts.worker.claim_log = Some(log.clone());
    let node = hearth::node::start(opts).await.unwrap();
    (node, log)
}

/// Coordinator 0 (a warm room: it works no shard) and worker 1, which stops at `stop`.
async fn coordinator_and_worker(
    root: &std::path::Path,
    stop: ClaimStop,
    lease: Duration,
) -> (Vec<RunningNode>, ClaimLog) {
    let log = ClaimLog::default();
    let l = log.clone();
    let nodes = start_radiators(root, 2, 1, &move |i, o: &mut NodeOptions| {
        o.coordinator.lease = lease;
        if i == 0 {
            o.config.heat.simulated.initial_celsius = Some(24.0);
        } else {
            o.worker.claim_stop = Some(stop);
            o.worker.claim_log = Some(l.clone());
        }
    })
    .await
    .unwrap();
    wait_connected(&nodes, 1, Duration::from_secs(20))
        .await
        .unwrap();
    // Let gossipsub graft its mesh before the first announcement.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    (nodes, log)
}

/// The receipts `node` holds for shard 0 of `job`, as the claims they countersign.
fn receipted_claims(node: &RunningNode, job: blake3::Hash) -> Vec<Vec<u8>> {
    node.context
        .ledger
        .list(None)
        .unwrap()
        .iter()
        .filter(|r| r.record.job == job && r.record.shard == 0)
        .map(|r| r.claim().to_bytes())
        .collect()
}

async fn wait_receipt(node: &RunningNode, job: blake3::Hash) -> Vec<Vec<u8>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let held = receipted_claims(node, job);
        if !held.is_empty() {
            return held;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no receipt reached {}",
            node.peer_id()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_counted_while_its_worker_was_stopped_is_sent_again_byte_identical_and_counted_once(
) {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let worker_dir = dir.path().join("radiator-1");
        let (mut nodes, log) =
            coordinator_and_worker(dir.path(), ClaimStop::Answered, Duration::from_secs(60)).await;
        let id = submit_one_shard(&nodes[0]).await;
        // The coordinator counts the claim and the job is done; the worker never acts on the
        // answer (its task halted as the answer arrived).
        let sent = wait_event(&log, "stored claim", stored).await;
        wait_status(&nodes[0], id, true).await;
        assert!(events(&log).iter().all(|e| answered(e).is_none()));
        nodes.pop().unwrap().shutdown().await;

        // On disk: the signed claim, stored before it was sent, and the lease it answers.
        let (entries, leases) = worker_trees(&worker_dir);
        assert_eq!(entries.len(), 1, "one stored claim");
        assert!(
            entries[0].ends_with(&sent),
            "the stored entry carries the claim sent"
        );
        assert_eq!(leases, 1, "the lease is still saved, as after a kill");

        let (worker, log) = restart_worker(&worker_dir, &nodes[0]).await;
        let (claim, accepted, detail, resent) = wait_event(&log, "answered claim", answered).await;
        // Before the outbox: the shard ran again and its new claim was refused "no live
        // lease of yours carries this nonce".
        assert!(accepted, "refused: {detail}");
        assert_eq!(claim, sent, "the stored bytes were sent again");
        assert!(resent);
        // The shard did not run again: no new claim was made.
        assert!(
            events(&log).iter().all(|e| stored(e).is_none()),
            "{:#?}",
            events(&log)
        );
        // Counted once: one receipt for the shard, for exactly the claim stored.
        assert_eq!(wait_receipt(&worker, id).await, vec![sent.clone()]);
        assert_eq!(receipted_claims(&nodes[0], id), vec![sent]);
        worker.shutdown().await;
        assert_eq!(
            worker_trees(&worker_dir),
            (vec![], 0),
            "nothing left to send"
        );
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_stored_but_not_sent_is_sent_after_the_restart_instead_of_running_the_shard_again()
{
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let worker_dir = dir.path().join("radiator-1");
        let (mut nodes, log) =
            coordinator_and_worker(dir.path(), ClaimStop::Stored, Duration::from_secs(60)).await;
        let id = submit_one_shard(&nodes[0]).await;
        let sent = wait_event(&log, "stored claim", stored).await;
        nodes.pop().unwrap().shutdown().await;
        // The coordinator has no claim yet; the lease (60 s) is still live.
        let view = nodes[0].context.coordinator.view(id).await.unwrap();
        assert!(
            matches!(&view.shards[0], ShardView::Leased { claims: 0, .. }),
            "{view:#?}"
        );
        let (entries, leases) = worker_trees(&worker_dir);
        assert_eq!(entries.len(), 1);
        assert!(entries[0].ends_with(&sent));
        assert_eq!(leases, 1);

        let (worker, log) = restart_worker(&worker_dir, &nodes[0]).await;
        let (claim, accepted, detail, resent) = wait_event(&log, "answered claim", answered).await;
        assert_eq!(claim, sent);
        assert!(accepted, "refused: {detail}");
        assert!(resent);
        wait_status(&nodes[0], id, true).await;
        assert!(
            events(&log).iter().all(|e| stored(e).is_none()),
            "the shard ran again: {:#?}",
            events(&log)
        );
        assert_eq!(receipted_claims(&nodes[0], id), vec![sent.clone()]);
        assert_eq!(wait_receipt(&worker, id).await, vec![sent]);
        worker.shutdown().await;
        assert_eq!(worker_trees(&worker_dir), (vec![], 0));
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stored_claim_whose_lease_is_gone_is_refused_dropped_and_the_shard_leased_again() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let worker_dir = dir.path().join("radiator-1");
        let (mut nodes, log) =
            coordinator_and_worker(dir.path(), ClaimStop::Stored, Duration::from_secs(2)).await;
        let id = submit_one_shard(&nodes[0]).await;
        let sent = wait_event(&log, "stored claim", stored).await;
        nodes.pop().unwrap().shutdown().await;
        // Nothing renews the lease now: wait until the coordinator no longer holds it.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let view = nodes[0].context.coordinator.view(id).await.unwrap();
            if matches!(&view.shards[0], ShardView::Waiting { .. }) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{view:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let (worker, log) = restart_worker(&worker_dir, &nodes[0]).await;
        // The coordinator decides: the stored claim's lease is gone, so it is refused, and
        // the worker drops it; the shard is leased again and its new claim counted.
        let refused = wait_event(&log, "refused stored claim", |e| {
            answered(e).filter(|(claim, accepted, _, _)| *claim == sent && !accepted)
        })
        .await;
        assert!(refused.3, "sent from the outbox");
        assert!(refused.2.contains("no live lease"), "{}", refused.2);
        wait_status(&nodes[0], id, true).await;
        let receipts = wait_receipt(&worker, id).await;
        assert_eq!(receipts.len(), 1);
        assert_ne!(receipts[0], sent, "the refused claim was not counted");
        worker.shutdown().await;
        assert_eq!(worker_trees(&worker_dir), (vec![], 0));
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}
