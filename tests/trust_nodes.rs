//! The adaptive trust policy (`docs/trust.md`) with real nodes: real libp2p on loopback, real
//! sled, real wasm, real signatures. The submitter trusts one household outright; a colluding
//! cheater (the test-only `cheat` hook, absent from release builds) joins fresh. The result
//! must be right, the cheater must earn nothing and be shut out, and the receipts must say
//! how each shard was verified.

use std::time::Duration;

use hearth::demo::start_radiators;
use hearth::jobs::build::JobSpec;
use hearth::jobs::trust::TrustConfig;
use hearth::jobs::JobStatus;
use hearth::model::receipt::VerifiedBy;
use hearth::model::wire::{DenyReason, Request, Response, PROTOCOL_VERSION};
use hearth::node::NodeOptions;

mod support;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adaptive_trust_with_real_nodes_keeps_the_cheater_out() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        // Radiator 1's key exists before the nodes start, so radiator 0 can trust it.
        let trusted = household_key(dir.path(), 1);
        let nodes = start_radiators(dir.path(), 4, 1, &|i, o: &mut NodeOptions| {
            // The submitter coordinates and does not work (a warm room).
            warm_if(i == 0, o);
            if i == 0 {
                o.coordinator.trust = TrustConfig {
                    adaptive: true,
                    trusted: vec![trusted.to_hex()],
                    ..TrustConfig::default()
                };
            }
            o.worker.cheat = i == 3;
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let sub = &nodes[0];
        let (id, shards) = submit(sub, &mandelbrot(256, 128, 64), 2).await;
        let view = wait_done(sub, id, Duration::from_secs(150)).await;
        assert_eq!(result_bytes(sub, &view), native_png(256, 128, 64));
        let cheater = nodes[3].household();
        let receipts = sub.context.ledger.list(None).unwrap();
        assert!(receipts.len() >= shards, "{} receipts", receipts.len());
        for r in &receipts {
            r.verify().unwrap();
            assert_ne!(r.record.worker, cheater, "a forged output earned a receipt");
            // A shard verified on fewer replicas than the job's replication was the trusted
            // household's result (others may have agreed as spot checks or late replicas).
            if r.terms.verified_by != VerifiedBy::Quorum {
                assert!(
                    receipts
                        .iter()
                        .any(|o| o.record.shard == r.record.shard && o.record.worker == trusted),
                    "{:?} without the trusted household",
                    r.terms
                );
            }
        }
        // If the cheater got to claim anything, it is shut out now.
        let response = sub
            .context
            .coordinator
            .control(
                nodes[3].peer_id(),
                Request::Lease {
                    job: id,
                    protocol: PROTOCOL_VERSION,
                    demand_permille: 1000,
                },
            )
            .await;
        assert!(
            matches!(
                response,
                Response::Denied {
                    reason: DenyReason::Excluded | DenyReason::JobComplete,
                    ..
                }
            ),
            "{response:?}"
        );
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// Issue 10, item 4: a job submitted with its own allow-list is worked only by the
/// households on it; another radiator asking for a lease is told why it gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jobs_allow_list_holds_with_real_nodes() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        let allowed = household_key(dir.path(), 1);
        let nodes = start_radiators(dir.path(), 3, 1, &|i, o: &mut NodeOptions| {
            warm_if(i == 0, o)
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let sub = &nodes[0];
        let manifest = manifest(sub, &mandelbrot(128, 64, 64), 1);
        let shards = manifest.inputs.len();
        let id = sub
            .context
            .coordinator
            .submit_with(manifest, None, vec![allowed])
            .await
            .unwrap();
        let view = wait_done(sub, id, Duration::from_secs(150)).await;
        assert!(
            matches!(view.status, JobStatus::Done { .. }),
            "job did not succeed: {view:#?}"
        );
        let receipts = sub.context.ledger.list(None).unwrap();
        assert_eq!(receipts.len(), shards);
        for r in &receipts {
            assert_eq!(
                r.record.worker, allowed,
                "a household off the list was paid"
            );
        }
        // Radiator 2 asks anyway: the refusal names the allow-list (checked before whether
        // the job is finished, so it holds for this finished job too).
        let response = sub
            .context
            .coordinator
            .control(
                nodes[2].peer_id(),
                Request::Lease {
                    job: id,
                    protocol: PROTOCOL_VERSION,
                    demand_permille: 1000,
                },
            )
            .await;
        match response {
            Response::Denied {
                reason: DenyReason::Excluded,
                detail,
                ..
            } => assert!(detail.contains("allow-list"), "{detail}"),
            other => panic!("{other:?}"),
        }
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// Issue 10, item 5: a receipt earned by a household that shares a public address with the
/// submitter is marked self-dealt; one earned from another address is not. The nodes run on
/// loopback (which never counts as shared) and declare public external addresses from the
/// documentation range: radiator 1 the submitter's, radiator 2 its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_household_sharing_the_submitters_address_is_marked_self_dealing() {
    use hearth::jobs::trust::related::Relation;
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        let (near, far) = (household_key(dir.path(), 1), household_key(dir.path(), 2));
        let nodes = start_radiators(dir.path(), 3, 1, &|i, o: &mut NodeOptions| {
            let ip = if i == 2 { "203.0.113.8" } else { "203.0.113.7" };
            o.config.node.external_addresses = vec![format!("/ip4/{ip}/tcp/4001").parse().unwrap()];
            warm_if(i == 0, o);
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let sub = &nodes[0];
        for (max_iter, worker) in [(100, near), (101, far)] {
            let spec = JobSpec::Mandelbrot {
                width: 128,
                height: 64,
                tile: 64,
                max_iter,
            };
            let id = sub
                .context
                .coordinator
                .submit_with(manifest(sub, &spec, 1), None, vec![worker])
                .await
                .unwrap();
            let view = wait_done(sub, id, Duration::from_secs(60)).await;
            assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
        }
        let related = sub.context.trust.view.all_related().unwrap();
        let receipts = sub.context.ledger.list(None).unwrap();
        assert_eq!(receipts.len(), 4);
        for r in &receipts {
            let mark = related.get(&r.id().to_hex().to_string()).copied();
            if r.record.worker == near {
                assert_eq!(mark, Some(Relation::SharedAddress), "shares 203.0.113.7");
            } else {
                assert_eq!(r.record.worker, far);
                assert_eq!(mark, None, "another address");
            }
        }
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}
