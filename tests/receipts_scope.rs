//! Issue 14, "receipts where they belong", end to end with real nodes: after a job, a
//! radiator that did no work for it holds none of its receipts; each worker holds exactly its
//! own, each with an inclusion proof in its coordinator's signed commitment; the coordinator
//! holds them all; and a worker's export verifies offline, proofs included.
//!
//! Before issue 14 every receipt was gossiped on `hearth/receipts/2` and every ledger kept
//! every receipt, so the first assertion below failed.

use std::time::Duration;

use hearth::demo::start_radiators;
use hearth::jobs::build::JobSpec;
use hearth::jobs::JobStatus;

mod support;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipts_stay_with_their_worker_and_coordinator_and_prove_inclusion() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        // Radiator 3's room is warm: it hears the job and does no work for it.
        let nodes = start_radiators(dir.path(), 4, 1, &|i, o| warm_if(i == 3, o))
            .await
            .unwrap();
        settle(&nodes).await;
        let sub = &nodes[0];
        let spec = JobSpec::Pi {
            shards: 4,
            samples: 20_000,
            seed: 7,
        };
        let (id, _) = submit(sub, &spec, 2).await;
        let view = wait_done(sub, id, Duration::from_secs(90)).await;
        assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
        // Deliveries follow the job's last commitment at once; give them a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let all = sub.context.ledger.list(None).unwrap();
        assert_eq!(
            all.len(),
            8,
            "the coordinator keeps every receipt of its job"
        );
        loop {
            let held: usize = nodes[1..]
                .iter()
                .map(|n| n.context.ledger.list(None).unwrap().len())
                .sum::<usize>()
                + sub
                    .context
                    .ledger
                    .list(Some(&sub.household()))
                    .unwrap()
                    .len();
            if held == 8 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "receipts not delivered: {held} of 8"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            nodes[3].context.ledger.list(None).unwrap().is_empty(),
            "a radiator that did no work holds nobody's receipts"
        );
        for n in &nodes[1..] {
            for r in n.context.ledger.list(None).unwrap() {
                assert_eq!(r.record.worker, n.household(), "only its own receipts");
                let inc = n.context.ledger.inclusion(&r.id()).unwrap().expect("proof");
                inc.verify(&r).unwrap();
                assert_eq!(inc.commitment.coordinator, sub.household());
            }
        }
        // The coordinator holds a proof for every receipt it countersigned, and its
        // commitments number from 0 without gaps.
        for r in &all {
            assert!(sub.context.ledger.inclusion(&r.id()).unwrap().is_some());
        }
        let commitments = sub.context.ledger.commitments().unwrap();
        assert!(!commitments.is_empty());
        for (i, c) in commitments.iter().enumerate() {
            assert_eq!(c.seq, i as u64);
            c.verify().unwrap();
        }
        assert_eq!(sub.context.ledger.pending_count(), 0);
        // A worker's export carries its proofs, and they verify offline.
        let worker = nodes[1..]
            .iter()
            .find(|n| !n.context.ledger.list(None).unwrap().is_empty())
            .unwrap();
        let export = worker.context.ledger.export(None).unwrap();
        assert_eq!(export.format, hearth::model::receipt::EXPORT_FORMAT);
        assert_eq!(export.inclusions.len(), export.receipts.len());
        for j in &export.inclusions {
            let (rid, inc) = j.to_inclusion().unwrap();
            let r = export
                .receipts
                .iter()
                .map(|r| r.to_receipt().unwrap())
                .find(|r| r.id() == rid)
                .unwrap();
            inc.verify(&r).unwrap();
        }
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}
