//! Fraud evidence across coordinators (`docs/trust.md`, "Fraud evidence"), with real nodes:
//! real libp2p gossip on loopback, real sled, real wasm re-runs, real signatures.
//!
//! - A liar caught by one coordinator is excluded at another node only after that node
//!   re-ran the shard, and the exclusion survives the node's restart.
//! - Evidence with a bad signature is rejected (and costs its sender gossip score); evidence
//!   whose re-run shows the accused was right excludes nobody and marks its author a false
//!   accuser.

use std::time::Duration;

use hearth::demo::{loopback_options, start_radiators};
use hearth::exec::{Executor, Limits};
use hearth::identity::{Identity, PublicKey};
use hearth::jobs::build::JobSpec;
use hearth::jobs::trust::view::HouseholdTrust;
use hearth::jobs::trust::TrustConfig;
use hearth::jobs::JobStatus;
use hearth::model::commit::{Commitment, Inclusion};
use hearth::model::evidence::Evidence;
use hearth::model::now_ms;
use hearth::model::receipt::{Claim, CreditTerms, EnergyMethod, WorkRecord};
use hearth::model::rotate::KeyEvent;
use hearth::model::wire::{DenyReason, Request, Response, PROTOCOL_VERSION};
use hearth::net::Topic;
use hearth::node::{NodeOptions, RunningNode};

mod support;
use support::*;

const SPEC: JobSpec = JobSpec::Mandelbrot {
    width: 256,
    height: 128,
    tile: 32,
    max_iter: 200,
};

/// Four radiators: 0 submits and coordinates (warm: it does not work) and trusts 1; 1 and 2
/// are honest and work; 3 lies on every shard (the test-only `cheat` hook).
async fn start_with_a_liar(dir: &std::path::Path) -> Vec<RunningNode> {
    let trusted = household_key(dir, 1);
    start_radiators(dir, 4, 1, &|i, o: &mut NodeOptions| {
        warm_if(i == 0, o);
        if i == 0 {
            o.coordinator.trust = TrustConfig {
                trusted: vec![trusted.to_hex()],
                ..TrustConfig::default()
            };
        }
        o.worker.cheat = i == 3;
    })
    .await
    .unwrap()
}

/// A radiator that joins through `via` long after the gossip it must learn (6 s: past
/// gossipsub's message cache, a few heartbeats), so it learns only by asking its peers.
async fn join_late(dir: &std::path::Path, via: &RunningNode) -> RunningNode {
    tokio::time::sleep(Duration::from_secs(6)).await;
    let bootstrap = hearth::demo::listen_addr(via).await.unwrap();
    let opts = loopback_options(&dir.join("radiator-late"), Some(bootstrap), 1).unwrap();
    hearth::node::start(opts).await.unwrap()
}

/// Polls `node`'s trust view of `household` until `done` holds.
async fn wait_for(
    node: &RunningNode,
    household: &PublicKey,
    done: impl Fn(&HouseholdTrust) -> bool,
) -> HouseholdTrust {
    loop {
        let view = node.context.trust.view.household(household).unwrap();
        if done(&view) {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `node`'s coordinator answers `household` asking for a lease on some job.
async fn lease_answer(node: &RunningNode, household: &PublicKey) -> Response {
    node.context
        .coordinator
        .control(
            household.peer_id(),
            Request::Lease {
                job: blake3::hash(b"any job"),
                protocol: PROTOCOL_VERSION,
                demand_permille: 1000,
            },
        )
        .await
}

fn excluded(r: &Response) -> bool {
    matches!(
        r,
        Response::Denied {
            reason: DenyReason::Excluded,
            ..
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checked_evidence_excludes_the_liar_at_another_node_and_survives_its_restart() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let dir = tempfile::tempdir().unwrap();
        // 2 is the node that must learn of the liar from gossip.
        let nodes = start_with_a_liar(dir.path()).await;
        let trusted = nodes[1].household();
        settle(&nodes).await;
        let (sub, observer, liar) = (&nodes[0], &nodes[2], nodes[3].household());
        // Before anything happened, node 2 leases to the liar like to anyone.
        assert!(!excluded(&lease_answer(observer, &liar).await));
        let (id, _) = submit(sub, &SPEC, 2).await;
        let view = wait_done(sub, id, Duration::from_secs(180)).await;
        assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
        // The coordinator excluded the liar by its own vote (a shard it claimed could only
        // be verified against it, with the trusted household in the winning group).
        let at_sub = sub.context.trust.view.household(&liar).unwrap();
        assert!(at_sub.excluded_by_vote.is_some(), "{at_sub:#?}");
        // Node 2 heard the evidence, re-ran the shard, and excluded the liar.
        let at_observer = wait_for(observer, &liar, |v| {
            v.evidence.iter().any(|e| e.status != "pending")
        })
        .await;
        let e = &at_observer.evidence[0];
        assert_eq!(e.status, "confirmed", "{at_observer:#?}");
        assert_eq!(e.coordinator, sub.household().to_hex());
        assert_eq!(e.checked_by, Some(observer.household().to_hex()));
        assert_eq!(at_observer.standing, "excluded");
        assert!(
            at_observer.excluded_by_vote.is_none(),
            "node 2 never voted on it"
        );
        assert!(excluded(&lease_answer(observer, &liar).await));
        // Nobody honest was accused.
        for honest in [trusted, observer.household()] {
            let v = observer.context.trust.view.household(&honest).unwrap();
            assert!(v.evidence.is_empty() && v.standing != "excluded", "{v:#?}");
            assert!(!excluded(&lease_answer(observer, &honest).await));
        }
        // The household sees why, through the API and `hearth trust`.
        let (bin, data_dir, api) = (
            env!("CARGO_BIN_EXE_hearth"),
            dir.path().join("radiator-2"),
            observer.api_addr.to_string(),
        );
        let liar_hex = liar.to_hex();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin)
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--api", &api, "trust", &liar_hex])
                .env_remove("HEARTH_API_TOKEN")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("excluded")
                && text.contains("confirmed")
                && text.contains(&format!("re-run by {}", observer.household().to_hex())),
            "{text}"
        );
        // The exclusion is on disk: node 2 restarted still refuses the liar.
        let mut nodes = nodes;
        let observer = nodes.remove(2);
        observer.shutdown().await;
        let restarted =
            hearth::node::start(loopback_options(&dir.path().join("radiator-2"), None, 1).unwrap())
                .await
                .unwrap();
        assert!(excluded(&lease_answer(&restarted, &liar).await));
        assert_eq!(
            restarted
                .context
                .trust
                .view
                .household(&liar)
                .unwrap()
                .evidence[0]
                .status,
            "confirmed"
        );
        restarted.shutdown().await;
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// Waits until `node` refuses `key` for an equivocation; fails, naming `who`, at `deadline`.
async fn wait_equivocated(
    node: &RunningNode,
    key: &PublicKey,
    deadline: std::time::Instant,
    who: &str,
) {
    let refuses = || {
        node.context
            .refusals
            .keys()
            .reasons(key)
            .is_some_and(|r| r.equivocated)
    };
    while !refuses() {
        assert!(
            std::time::Instant::now() < deadline,
            "{who}: the equivocation was not learnt in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A claim on shard 0 of `manifest` by `worker` with `output` and `fuel`.
fn claim(
    worker: &Identity,
    manifest: &hearth::model::JobManifest,
    output: blake3::Hash,
    fuel: u64,
) -> Claim {
    Claim::sign(
        WorkRecord {
            job: manifest.id(),
            shard: 0,
            module: manifest.module,
            input: manifest.inputs[0],
            output,
            worker: worker.public(),
            submitter: manifest.submitter,
            fuel,
            energy_mj: 1_000,
            method: EnergyMethod::CpuEstimate,
            start_ms: now_ms() - 1_000,
            end_ms: now_ms(),
            nonce: [7; 16],
        },
        worker,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_evidence_excludes_nobody() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        // Two warm nodes: 0 forges evidence, 1 hears it. Neither works shards.
        let nodes = start_radiators(dir.path(), 2, 1, &|_, o: &mut NodeOptions| warm_if(true, o))
            .await
            .unwrap();
        settle(&nodes).await;
        let (forger, observer) = (&nodes[0], &nodes[1]);
        // A real job of the forger's, never submitted: its blobs are there to be fetched.
        let store = &forger.context.store;
        let manifest = manifest(forger, &SPEC, 2);
        assert_eq!(
            store.put_bytes(&manifest.to_bytes()).unwrap(),
            manifest.id()
        );
        for h in [manifest.id(), manifest.module, manifest.inputs[0]] {
            forger.context.net.provide(h).await.unwrap();
        }
        // The shard's true output and fuel.
        let out = Executor::new()
            .unwrap()
            .run(
                &manifest.module,
                &store.get_bytes(&manifest.module).unwrap(),
                store.get_bytes(&manifest.inputs[0]).unwrap(),
                &Limits {
                    fuel: manifest.limits.fuel_per_shard,
                    memory_bytes: manifest.limits.memory_bytes,
                    ..Limits::default()
                },
            )
            .unwrap();
        let (right, fuel) = (blake3::hash(&out.output), out.fuel);
        let wrong = blake3::hash(b"a forged output");
        let (honest, sybil) = (Identity::generate(), Identity::generate());
        let forger_id = Identity::load(&dir.path().join("radiator-0")).unwrap();

        // 1. A bad signature: rejected, which costs the sender gossip score, and kept nowhere.
        let victim = Identity::generate();
        let mut bad = Evidence::sign(
            &forger_id,
            now_ms(),
            right,
            fuel,
            claim(&victim, &manifest, wrong, fuel),
            claim(&sybil, &manifest, right, fuel),
        )
        .unwrap()
        .to_bytes();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        forger
            .context
            .net
            .publish(Topic::Evidence, bad)
            .await
            .unwrap();
        loop {
            let peers = observer.context.net.peers().await.unwrap();
            let score = peers
                .iter()
                .find(|p| p.peer_id == forger.peer_id())
                .and_then(|p| p.gossip_score);
            if score.is_some_and(|s| s < 0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let v = observer
            .context
            .trust
            .view
            .household(&victim.public())
            .unwrap();
        assert!(v.evidence.is_empty() && v.standing != "excluded", "{v:#?}");

        // 2. Validly signed, but the accused was right: the forger's Sybil "won" with a wrong
        // output. The observer re-runs the shard and excludes nobody.
        let forged = Evidence::sign(
            &forger_id,
            now_ms(),
            wrong,
            fuel,
            claim(&honest, &manifest, right, fuel),
            claim(&sybil, &manifest, wrong, fuel),
        )
        .unwrap();
        forger
            .context
            .net
            .publish(Topic::Evidence, forged.to_bytes())
            .await
            .unwrap();
        let v = wait_for(observer, &honest.public(), |v| {
            v.evidence.iter().any(|e| e.status != "pending")
        })
        .await;
        assert_eq!(v.evidence[0].status, "refuted", "{v:#?}");
        assert_ne!(v.standing, "excluded");
        assert!(!excluded(&lease_answer(observer, &honest.public()).await));
        // The forger is marked: its evidence is not believed any more.
        let f = observer
            .context
            .trust
            .view
            .household(&forger.household())
            .unwrap();
        assert!(f.false_accuser, "{f:#?}");
        // And it pays in gossip score: below the graylist threshold (-80), which the one
        // rejected message of step 1 (-10, decaying) never reaches.
        let mut score = None;
        for _ in 0..100 {
            let peers = observer.context.net.peers().await.unwrap();
            score = peers
                .iter()
                .find(|p| p.peer_id == forger.peer_id())
                .and_then(|p| p.gossip_score);
            if score.is_some_and(|s| s < -80.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(score.is_some_and(|s| s < -80.0), "forger's score {score:?}");
        // The blobs fetched for the re-run were deleted afterwards: the observer keeps none
        // of the forger's job.
        for h in [manifest.id(), manifest.module, manifest.inputs[0]] {
            assert!(!observer.context.store.has(&h).unwrap());
        }
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// Evidence reaches a node that joins after it was gossiped: the newcomer asks the peers it
/// connects to (first the coordinator that caught the liar) for the evidence they stand
/// behind (`Request::Evidence`), re-runs the shard itself, and only then excludes the liar.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_joins_later_still_excludes_the_liar_after_its_own_rerun() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let dir = tempfile::tempdir().unwrap();
        // 2 observes (and re-runs) before the late node joins.
        let nodes = start_with_a_liar(dir.path()).await;
        let trusted = nodes[1].household();
        settle(&nodes).await;
        let (sub, observer, liar) = (&nodes[0], &nodes[2], nodes[3].household());
        let (id, _) = submit(sub, &SPEC, 2).await;
        let view = wait_done(sub, id, Duration::from_secs(180)).await;
        assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
        let at_observer = wait_for(observer, &liar, |v| {
            v.evidence.iter().any(|e| e.status != "pending")
        })
        .await;
        assert_eq!(at_observer.evidence[0].status, "confirmed");
        // Long past gossipsub's message cache (a few heartbeats): the gossip is gone.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let late_dir = dir.path().join("radiator-late");
        let mut opts = loopback_options(
            &late_dir,
            Some(hearth::demo::listen_addr(sub).await.unwrap()),
            1,
        )
        .unwrap();
        warm_if(true, &mut opts);
        let late = hearth::node::start(opts).await.unwrap();
        assert!(
            late.context
                .trust
                .view
                .household(&liar)
                .unwrap()
                .evidence
                .is_empty()
                || !excluded(&lease_answer(&late, &liar).await),
            "nothing is believed before the re-run"
        );
        let at_late = wait_for(&late, &liar, |v| {
            v.evidence.iter().any(|e| e.status != "pending")
        })
        .await;
        // The liar may have lost on more than one shard: each piece is re-run on its own.
        let e = at_late
            .evidence
            .iter()
            .find(|e| e.status != "pending")
            .unwrap();
        assert_eq!(e.status, "confirmed", "{at_late:#?}");
        assert_eq!(e.coordinator, sub.household().to_hex());
        assert_eq!(e.checked_by, Some(late.household().to_hex()));
        assert_eq!(at_late.standing, "excluded");
        // The coordinator's book hears of it just after the exclusion is on disk.
        while !excluded(&lease_answer(&late, &liar).await) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Nobody honest was accused on the way.
        for honest in [trusted, observer.household()] {
            assert!(!excluded(&lease_answer(&late, &honest).await));
        }
        late.shutdown().await;
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// The auditor's log (`hearth::audit`) over real gossip. A bootstrap node logs the
/// commitments a radiator seals for its own job, with when it first heard each; a second,
/// different commitment signed by the radiator's key under a number already logged (what a
/// thief of the key, or a coordinator swapping the receipts it vouched for, would publish) is
/// kept beside the first as proof; `hearth audit` shows both signed bodies. The auditor
/// gossips the proof: a radiator that never heard the forged commitment takes no more work
/// from the key, and so does one that joins after the gossip, from its peers; the key's own
/// node closes its running job saying why. A radiator keeps no log and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bootstrap_logs_commitments_first_seen_and_keeps_an_equivocation_as_proof() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = start_radiators(dir.path(), 3, 1, &|i, o: &mut NodeOptions| {
            if i == 0 {
                o.config.node.role = hearth::config::Role::Bootstrap;
            }
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let (auditor, sub) = (&nodes[0], &nodes[1]);
        let key = sub.household();
        let log = auditor
            .context
            .audit
            .as_ref()
            .expect("a bootstrap keeps the log");
        let before = now_ms();
        let (id, _) = submit(sub, &SPEC, 2).await;
        let view = wait_done(sub, id, Duration::from_secs(120)).await;
        assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
        let logged = loop {
            let l = log.coordinator(&key, 0, 100).unwrap();
            if !l.commitments.is_empty() {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let first = &logged.commitments[0];
        assert!(
            (before..=now_ms()).contains(&first.first_seen_ms),
            "{first:?}"
        );
        let c0 = Commitment::from_bytes(&hex::decode(&first.signed).unwrap()).unwrap();
        c0.verify().unwrap();
        assert_eq!(
            (c0.coordinator, c0.id().to_hex().to_string()),
            (key, first.id.clone())
        );
        assert!(logged.equivocations.is_empty());

        let cli = |node: usize, args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
                .arg("--data-dir")
                .arg(dir.path().join(format!("radiator-{node}")))
                .arg("--api")
                .arg(nodes[node].api_addr.to_string())
                .args(args)
                .env_remove("RUST_LOG")
                .output()
                .unwrap()
        };
        // A job that cannot finish: three replicas wanted, two radiators to run them.
        let (stuck, _) = submit(sub, &SPEC, 3).await;
        let identity = Identity::load(&dir.path().join("radiator-1")).unwrap();
        let (forged, _) = Commitment::seal(
            &identity,
            c0.seq,
            &[blake3::hash(b"a receipt minted later")],
            c0.first_ms,
            c0.last_ms,
        )
        .unwrap();
        sub.context
            .net
            .publish(Topic::Commitments, forged.to_bytes())
            .await
            .unwrap();
        let proof = loop {
            let l = log.coordinator(&key, 0, 100).unwrap();
            if let Some(e) = l.equivocations.first() {
                break e.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(proof.seq, c0.seq);
        assert_eq!(proof.first.signed, first.signed, "the first heard stays");
        assert_eq!(proof.second.signed, hex::encode(forged.to_bytes()));

        // The auditor gossips the proof (`model::equivocate`): radiator 2, which keeps no log
        // and never heard the forged commitment, takes no more work from the key.
        // Gossip takes well under a second; 10 s is less than a peer takes to settle and be
        // asked (30 s), so only gossip can bring it in time.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        wait_equivocated(&nodes[2], &key, deadline, "radiator 2 within 10 s").await;
        // `hearth refusals` on radiator 2 shows why, with the proof.
        let out = cli(2, &["refusals"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(
            text.contains(&format!(
                "{}  signed two different commitments as #{}",
                key.to_hex(),
                c0.seq
            )),
            "{text}"
        );
        // Radiator 1's own node heard it too: it closes the job no radiator will work for,
        // saying why.
        let view = wait_done(sub, stuck, Duration::from_secs(10)).await;
        let JobStatus::Failed { reason } = &view.status else {
            panic!("{view:#?}")
        };
        assert!(
            reason.contains("two different receipt commitments"),
            "{reason}"
        );
        // A radiator that joins long after the gossip (past gossipsub's message cache) asks
        // its peers for the proofs they hold (`Request::Refusals`) once they settle (30 s on a
        // radiator) and refuses the key too.
        let late = join_late(dir.path(), &nodes[2]).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        wait_equivocated(
            &late,
            &key,
            deadline,
            "a radiator that joined later, within 60 s",
        )
        .await;
        late.shutdown().await;

        let out = cli(0, &["audit"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&key.to_hex()) && l.contains("EQUIVOCATED 1 time(s)")),
            "{text}"
        );
        let out = cli(0, &["audit", &key.to_hex()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(
            text.contains(&format!("EQUIVOCATION at #{}", c0.seq)),
            "{text}"
        );
        assert!(
            text.contains(&first.signed) && text.contains(&proof.second.signed),
            "{text}"
        );
        let out = cli(1, &["audit"]);
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("keeps no audit log"), "{said}");
        a_published_revocation_reaches_the_log_and_voids_the_keys_receipts(
            &cli,
            dir.path(),
            &key,
            &nodes,
        )
        .await;
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// The household behind radiator 1 finds its key stolen (the forged commitment above): it
/// revokes it, vouching for none of its commitments, and publishes the statement from its
/// node (`hearth receipts revoke --publish`). The auditor logs it, `hearth audit KEY` shows
/// it, a verifier given only that log refuses every receipt the key countersigned
/// (docs/receipts.md, "Revoking a key"), and no radiator takes work from the key any more. A
/// node refuses to publish another key's statement.
async fn a_published_revocation_reaches_the_log_and_voids_the_keys_receipts(
    cli: &dyn Fn(usize, &[&str]) -> std::process::Output,
    dir: &std::path::Path,
    key: &PublicKey,
    nodes: &[RunningNode],
) {
    let api_of_1 = &nodes[1].api_addr.to_string();
    let out = cli(1, &["receipts", "revoke", "--keep", "0", "--publish"]);
    assert!(out.status.success(), "{out:?}");
    let statement: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(statement["keep"], 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("published"));
    let log = dir.join("audit.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let logged = loop {
        let out = cli(0, &["audit", &key.to_hex(), "--json"]);
        assert!(out.status.success(), "{out:?}");
        std::fs::write(&log, &out.stdout).unwrap();
        let l: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if !l["revocation"].is_null() {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the auditor did not log the revocation within 30 s: {l:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(logged["revocation"]["signed"], statement["signed"]);
    let out = cli(0, &["audit", &key.to_hex()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("REVOKED: the key's own statement vouches for none of its commitments"),
        "{text}"
    );
    // Every receipt the submitter's node holds was countersigned by it (its own job).
    let export = dir.join("receipts.json");
    let out = cli(
        1,
        &[
            "receipts",
            "export",
            "--json",
            "-o",
            export.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    let receipts = exported["receipts"].as_array().unwrap().len();
    assert!(receipts > 0);
    let out = cli(
        1,
        &[
            "receipts",
            "verify",
            export.to_str().unwrap(),
            "--audit",
            log.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches(": REVOKED: ").count(), receipts, "{text}");
    assert!(
        text.contains(&format!("{receipts} receipts, 0 valid, {receipts} invalid")),
        "{text}"
    );
    // Radiator 2 heard it too (every radiator hears `hearth/evidence/1`) and takes no more
    // work from the key (refused already for its equivocation), nor does radiator 1 from
    // itself: a job radiator 1 submits now is worked by nobody, where the first one was done
    // in seconds.
    let revoked = |n: &RunningNode| {
        n.context
            .refusals
            .keys()
            .reasons(key)
            .is_some_and(|r| r.revoked)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !revoked(&nodes[2]) {
        assert!(
            std::time::Instant::now() < deadline,
            "radiator 2 did not hear the revocation within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(revoked(&nodes[1]));
    // Radiator 2 lists both proofs against the key, the revocation with its line.
    let out = cli(2, &["refusals", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["key"].as_str().unwrap(), r["kind"].as_str().unwrap()))
        .collect();
    let hex_key = key.to_hex();
    assert_eq!(
        kinds,
        vec![
            (hex_key.as_str(), "revoked"),
            (hex_key.as_str(), "equivocated")
        ],
        "{listed:#}"
    );
    assert_eq!(listed[0]["signed"], statement["signed"]);
    // Radiator 2's household sees which of its receipts the refused key countersigned (all:
    // it worked only that key's job), and what they may be worth.
    let out = cli(2, &["receipts"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let marked = text
        .matches(
            "COORDINATOR REFUSED: its submitter's key was revoked by its household and signed two commitments under one number",
        )
        .count();
    assert!(marked > 0, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(&format!(": {marked} receipts, "))
                && l.contains("countersigned by keys this node refuses (`hearth refusals`)")),
        "{text}"
    );
    let (job, _) = submit(&nodes[1], &SPEC, 2).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let view = nodes[1].context.coordinator.view(job).await.unwrap();
    assert!(matches!(view.status, JobStatus::Running), "{view:#?}");
    assert_eq!(view.shards_verified, 0, "{view:#?}");
    // The household's own node now refuses a new job at once, saying why.
    let out = cli(
        1,
        &["submit", "mandelbrot", "--width", "64", "--height", "64"],
    );
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("this household revoked its key") && said.contains("new identity"),
        "{said}"
    );
    // `hearth status` says both why radiators refuse its key.
    let out = cli(1, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("KEY REVOKED") && text.contains("KEY REFUSED: this key signed two"),
        "{text}"
    );
    // Radiator 2's key, handed to radiator 1's node: not its key, refused before any gossip.
    let token = std::fs::read_to_string(dir.join("radiator-1").join("api.token")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("--data-dir")
        .arg(dir.join("radiator-2"))
        .args([
            "--api",
            api_of_1,
            "receipts",
            "revoke",
            "--keep",
            "0",
            "--publish",
        ])
        .env("HEARTH_API_TOKEN", token.trim())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not this node's key"), "{said}");
}

/// A coordinator that seals before any auditor listens keeps its commitments and gossips them
/// once one does: a bootstrap node that comes after the job is done still logs them. Until
/// 2026-12-04 a commitment nobody was subscribed for was dropped, and the auditors never knew
/// it existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commitments_sealed_before_an_auditor_listens_reach_it_later() {
    tokio::time::timeout(Duration::from_secs(150), async {
        let dir = tempfile::tempdir().unwrap();
        let sub =
            hearth::node::start(loopback_options(&dir.path().join("alone"), None, 2).unwrap())
                .await
                .unwrap();
        let spec = JobSpec::Pi {
            shards: 4,
            samples: 10_000,
            seed: 9,
        };
        let (id, _) = submit(&sub, &spec, 1).await;
        let view = wait_done(&sub, id, Duration::from_secs(90)).await;
        assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
        let addr = hearth::demo::listen_addr(&sub).await.unwrap();
        let (auditor, log, _) = start_auditor(dir.path(), Some(addr)).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        loop {
            let heard = log.coordinator(&sub.household(), 0, 10).unwrap();
            if !heard.commitments.is_empty() {
                assert_eq!(heard.commitments[0].seq, 0);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the auditor never heard the coordinator's commitments"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        auditor.shutdown().await;
        sub.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// A radiator that comes to refuse a coordinator in the middle of its job (told here
/// directly, as if it had just heard the household's revocation) takes no more of that job's
/// shards, though it learned of the job before: the worker asks before every lease, not only
/// when a job is announced. Until the late evening of 2026-12-04 it only refused new announcements and went on
/// working the jobs it knew for as long as the coordinator leased them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_radiator_takes_no_more_shards_of_a_job_whose_coordinator_it_came_to_refuse() {
    use hearth::jobs::{JobView, ShardView};
    use hearth::model::refusal::Refusal;
    use hearth::model::revoke::Revocation;
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = start_radiators(dir.path(), 2, 1, &|_, _| {}).await.unwrap();
        settle(&nodes).await;
        let (sub, radiator) = (&nodes[0], &nodes[1]);
        let mine = radiator.household().to_hex();
        let (job, _) = submit(sub, &endless(5), 1).await;
        let taken = |v: &JobView| {
            v.shards
                .iter()
                .filter(|s| match s {
                    ShardView::Leased { to, .. } => to.contains(&mine),
                    ShardView::Verified { households, .. } => households.contains(&mine),
                    _ => false,
                })
                .count()
        };
        let view = |sub: &RunningNode| {
            let c = sub.context.coordinator.clone();
            async move { c.view(job).await.expect("job known") }
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while taken(&view(sub).await) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the radiator took no shard of the job in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let statement = Revocation::sign(
            &Identity::load(&dir.path().join("radiator-0")).unwrap(),
            0,
            now_ms(),
        );
        radiator
            .context
            .refusals
            .keys()
            .hear(&Refusal::Revoked(statement), true)
            .unwrap();
        // What it leased already may still end; nothing after. A shard claimed but not yet
        // verified names no household: each may be one of the radiator's.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let at = view(sub).await;
        let verifying = at
            .shards
            .iter()
            .filter(|s| matches!(s, ShardView::Verifying { .. }))
            .count();
        let then = taken(&at);
        tokio::time::sleep(Duration::from_secs(6)).await;
        let now = view(sub).await;
        assert!(matches!(now.status, JobStatus::Running), "{now:#?}");
        assert!(
            taken(&now) <= then + verifying,
            "shards taken after the refusal: {} then ({verifying} being verified), {} now",
            then,
            taken(&now)
        );
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// A radiator's household revokes its key (as after a theft) while the radiator holds leases
/// of another node's job. That node's coordinator takes the leases back at once, leases the
/// key nothing more and says why, and counts no claim of it (`jobs::coordinator::book::
/// refused`); the job goes on with the others. Until 2026-12-05 a refused key was refused
/// only as a coordinator: as a worker it kept its leases, got new ones and voted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_takes_back_and_leases_nothing_to_a_key_its_household_revoked() {
    a_refused_worker_key_loses_its_leases(
        async |dir, nodes| {
            // The household revokes the key from its own node, which publishes the statement.
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
                .arg("--data-dir")
                .arg(dir.join("radiator-1"))
                .args(["--api", &nodes[1].api_addr.to_string()])
                .args(["receipts", "revoke", "--keep", "0", "--publish"])
                .env_remove("RUST_LOG")
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        },
        "revoked",
    )
    .await;
}

/// The same when the household rotates away from the key (`hearth key rotate`, as after a
/// theft: the thief's radiator goes on running under the old key) and its key events reach
/// the coordinator's node by gossip: the coordinator takes back what the retired key holds
/// and leases it nothing (`node::key_log`, the router's `withdraw_refused` on a newly retired
/// key). Fails without the take-back: the leases run on until they expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_takes_back_and_leases_nothing_to_a_key_its_household_rotated_away_from() {
    a_refused_worker_key_loses_its_leases(
        async |_, nodes| {
            publish_rotation(&nodes[2], &nodes[1].context.identity).await;
        },
        "rotated",
    )
    .await;
}

/// Publishes a rotation of `old`'s household (events #0 and #1, to a fresh key) from `via`:
/// anyone may pass a key event on. Returns the household's new key.
async fn publish_rotation(via: &RunningNode, old: &Identity) -> PublicKey {
    publish_rotation_after(via, old, Duration::ZERO).await
}

/// [`publish_rotation`] with `wait` between event #0 (which fixes the new key) and event #1.
async fn publish_rotation_after(via: &RunningNode, old: &Identity, wait: Duration) -> PublicKey {
    let (next, after) = (Identity::generate(), Identity::generate());
    publish_key_event(
        via,
        &KeyEvent::sign(old.public(), 0, old, &next.public(), now_ms()),
    )
    .await;
    tokio::time::sleep(wait).await;
    publish_key_event(
        via,
        &KeyEvent::sign(old.public(), 1, &next, &after.public(), now_ms()),
    )
    .await;
    next.public()
}

/// Publishes `e` from `via`, retrying until the topic has peers.
async fn publish_key_event(via: &RunningNode, e: &KeyEvent) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while let Err(err) = via.context.net.publish(Topic::Evidence, e.to_bytes()).await {
        assert!(
            std::time::Instant::now() < deadline,
            "key event not published: {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A household established at a coordinator keeps its standing there under the key it rotates
/// to, when the coordinator heard the event that fixed that key long enough before the
/// rotation (`[trust] rules.carry_after_ms`, 3 s here); a household whose events came back to
/// back (as a thief's own rotation of a stolen key would, unless it waits) starts on
/// probation; and a contest heard later (a second, different event #0) takes the carried
/// standing back. Fails without the carry (the rotated household's new key is on probation),
/// and without the take-back (it stays established after the contest).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_household_keeps_its_standing_only_after_the_wait_and_loses_it_to_a_contest() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = start_radiators(dir.path(), 3, 1, &|i, o: &mut NodeOptions| {
            warm_if(i == 0, o);
            o.coordinator.trust.rules = hearth::jobs::trust::Rules {
                established_after: 2,
                established_age_ms: 0,
                carry_after_ms: 3_000,
            };
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let (sub, waits, hurries) = (&nodes[0], &nodes[1], &nodes[2]);
        let (id, _) = submit(sub, &SPEC, 2).await;
        let view = wait_done(sub, id, Duration::from_secs(180)).await;
        assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
        for n in [waits, hurries] {
            let before = sub.context.trust.view.household(&n.household()).unwrap();
            assert_eq!(before.standing, "established", "{before:#?}");
        }
        let (waited, hurried) = tokio::join!(
            publish_rotation_after(&nodes[2], &waits.context.identity, Duration::from_secs(6)),
            publish_rotation(&nodes[1], &hurries.context.identity),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for key in [waits.household(), hurries.household()] {
            wait_retired(sub, &key, deadline, "the coordinator, within 30 s").await;
        }
        let carried = tokio::time::timeout(
            Duration::from_secs(10),
            wait_for(sub, &waited, |v| v.standing == "established"),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the household that waited is not established under its new key: {:#?}",
                sub.context.trust.view.household(&waited).unwrap()
            )
        });
        assert_eq!(
            carried.carried_from,
            Some(waits.household().to_hex()),
            "{carried:#?}"
        );
        assert!(carried.why.contains("rotated from"), "{carried:#?}");
        let on_probation = sub.context.trust.view.household(&hurried).unwrap();
        assert_eq!(on_probation.standing, "probation", "{on_probation:#?}");
        assert_eq!(on_probation.carried_from, None);
        // The household's own node signed none of this (it has no key log): its owner is
        // told, by `hearth status`, that someone holding its key did.
        let status = status_text(waits, &dir.path().join("radiator-1")).await;
        assert!(
            status.contains("KEY EVENT NOT SIGNED HERE: key event #")
                && status.contains("key log:    none: `hearth key prerotate"),
            "{status}"
        );
        // Someone else holding the old key signs another event #0: the household is contested
        // here, and its new key stands on its own record (none) again.
        let thief = Identity::generate();
        let old = &waits.context.identity;
        publish_key_event(
            &nodes[1],
            &KeyEvent::sign(old.public(), 0, old, &thief.public(), now_ms()),
        )
        .await;
        let taken_back = tokio::time::timeout(
            Duration::from_secs(30),
            wait_for(sub, &waited, |v| v.standing == "probation"),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "a contest did not take the carried standing back: {:#?}",
                sub.context.trust.view.household(&waited).unwrap()
            )
        });
        assert_eq!(taken_back.carried_from, None, "{taken_back:#?}");
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// Polls `node`'s coordinator until it answers `key` Denied (excluded) saying its household
/// rotated away from it; panics with `what` at `deadline`.
async fn wait_retired(
    node: &RunningNode,
    key: &PublicKey,
    deadline: std::time::Instant,
    what: &str,
) {
    loop {
        match lease_answer(node, key).await {
            Response::Denied {
                reason: DenyReason::Excluded,
                detail,
                ..
            } if detail.contains("rotated") => return,
            other => assert!(
                std::time::Instant::now() < deadline,
                "{what}: the key is still answered {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node that joins after a household's key events were gossiped (past gossipsub's message
/// cache) asks its peers for the events they heard (`Request::KeyEvents`) once they settle,
/// and refuses the retired key at once, not only after the household's next round (up to
/// 10 minutes). Fails without the pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_joins_later_learns_a_rotation_from_its_peers() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = start_radiators(dir.path(), 3, 1, &|_, _| {}).await.unwrap();
        settle(&nodes).await;
        let key = nodes[1].household();
        publish_rotation(&nodes[2], &nodes[1].context.identity).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        wait_retired(&nodes[0], &key, deadline, "radiator 0, within 30 s").await;
        let late = join_late(dir.path(), &nodes[2]).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        wait_retired(
            &late,
            &key,
            deadline,
            "a radiator that joined later, within 60 s",
        )
        .await;
        late.shutdown().await;
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// A radiator's receipts that its coordinator could not deliver before the household rotated
/// its key (the radiator was off) reach the radiator under its new key: the coordinator hears
/// the rotation (`node::key_log`) and delivers what credits the retired key to the
/// household's current one, whose ledger takes them as its own. Before, they waited for the
/// retired key, which never came back (or came back as a thief), until the household ran
/// `hearth doctor --repair --from`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipts_waiting_for_a_retired_key_reach_the_households_current_one() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let dir = tempfile::tempdir().unwrap();
        // Radiator 0 coordinates from a warm room (it works none of its job); radiator 1
        // works alone at first, so each shard it claims waits for a second replica.
        let nodes = start_radiators(dir.path(), 2, 1, &|i, o| warm_if(i == 0, o))
            .await
            .unwrap();
        settle(&nodes).await;
        let mut nodes = nodes.into_iter();
        let (sub, worker) = (nodes.next().unwrap(), nodes.next().unwrap());
        let old = worker.household();
        let spec = JobSpec::Pi {
            shards: 6,
            samples: 100_000,
            seed: 5,
        };
        let (job, _) = submit(&sub, &spec, 2).await;
        let claimed = || async {
            let view = sub.context.coordinator.view(job).await.expect("job known");
            view.shards.iter().any(|s| {
                matches!(s, hearth::jobs::ShardView::Waiting { reason }
                    if reason.contains("agreeing replicas so far"))
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !claimed().await {
            assert!(
                std::time::Instant::now() < deadline,
                "no claim in 60 s: {:#?}",
                sub.context.coordinator.view(job).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The radiator goes off with claims no second replica has matched yet.
        worker.shutdown().await;
        let worker_dir = dir.path().join("radiator-1");
        let bootstrap = hearth::demo::listen_addr(&sub).await.unwrap();
        let other = hearth::node::start(
            loopback_options(&dir.path().join("radiator-2"), Some(bootstrap.clone()), 1).unwrap(),
        )
        .await
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let waiting = loop {
            let n = sub.context.ledger.list(Some(&old)).unwrap().len();
            if n > 0 {
                break n;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no receipt countersigned for the radiator that went off"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // Meanwhile the household rotates its key, and starts its radiator again under it.
        let (next, after) = (dir.path().join("next.key"), dir.path().join("after.key"));
        hearth::keys::prerotate(&worker_dir, &next, now_ms()).unwrap();
        hearth::keys::rotate(&worker_dir, &next, &after, now_ms()).unwrap();
        let back = hearth::node::start(loopback_options(&worker_dir, Some(bootstrap), 1).unwrap())
            .await
            .unwrap();
        assert_ne!(
            back.context.identity.public(),
            old,
            "the key did not change"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            // The household's ledger lists its receipts under every key of its chain.
            let held = back
                .context
                .ledger
                .list(Some(&old))
                .unwrap()
                .iter()
                .filter(|r| r.record.worker == old)
                .count();
            if held >= waiting {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the radiator holds {held} of the {waiting} receipts its old key earned, 60 s \
                 after it came back under its new key"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for n in [back, other, sub] {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// A liar excluded by a coordinator's vote cannot come back clean by rotating its key: the
/// coordinator hears the rotation and excludes the new key too (`Book::inherit`), where
/// before the new key started afresh on probation and got leases at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_liar_excluded_here_stays_excluded_under_the_key_it_rotates_to() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = start_with_a_liar(dir.path()).await;
        settle(&nodes).await;
        let (sub, liar) = (&nodes[0], &nodes[3]);
        let (id, _) = submit(sub, &SPEC, 2).await;
        let view = wait_done(sub, id, Duration::from_secs(180)).await;
        assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
        assert!(excluded(&lease_answer(sub, &liar.household()).await));
        let next = publish_rotation(&nodes[1], &liar.context.identity).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        wait_retired(
            sub,
            &liar.household(),
            deadline,
            "the coordinator, within 30 s",
        )
        .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !excluded(&lease_answer(sub, &next).await) {
            assert!(
                std::time::Instant::now() < deadline,
                "the liar's new key is served 10 s after its rotation was heard: {:?}",
                lease_answer(sub, &next).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let at_sub = sub.context.trust.view.household(&next).unwrap();
        assert!(
            at_sub.excluded_by_vote.is_some(),
            "{at_sub:#?} {:?}",
            lease_answer(sub, &next).await
        );
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// Three radiators; radiator 1 takes leases of an endless job of radiator 0's; then `refuse`
/// (given the root directory and the nodes) makes its key one radiator 0 refuses. Radiator
/// 0's coordinator answers it Denied (excluded) with a detail naming `why`, takes back what
/// it held within 5 s, leases it nothing more, and the job goes on with the others.
async fn a_refused_worker_key_loses_its_leases(
    refuse: impl AsyncFnOnce(&std::path::Path, &[RunningNode]),
    why: &str,
) {
    use hearth::jobs::{JobView, ShardView};
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = start_radiators(dir.path(), 3, 1, &|_, _| {}).await.unwrap();
        settle(&nodes).await;
        let (sub, refused) = (&nodes[0], &nodes[1]);
        let (key, mine) = (refused.household(), refused.household().to_hex());
        let (job, _) = submit(sub, &endless(9), 2).await;
        let leased_to_it = |v: &JobView| {
            v.shards
                .iter()
                .filter(|s| matches!(s, ShardView::Leased { to, .. } if to.contains(&mine)))
                .count()
        };
        let view = || async { sub.context.coordinator.view(job).await.expect("job known") };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while leased_to_it(&view().await) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the radiator held no lease of the job in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!excluded(&lease_answer(sub, &key).await));
        refuse(dir.path(), &nodes).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        // No lease, and the radiator is told why.
        let detail = loop {
            match lease_answer(sub, &key).await {
                Response::Denied {
                    reason: DenyReason::Excluded,
                    detail,
                    ..
                } => break detail,
                other => assert!(
                    std::time::Instant::now() < deadline,
                    "the submitter's node still answers the key {other:?} 30 s on"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(detail.contains(why), "{detail}");
        // What it held is taken back (not left to run out), and nothing new goes to it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let held = leased_to_it(&view().await);
            if held == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{held} lease(s) still held by the refused key 5 s after the node heard why"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The job goes on with the others (more shards verified, none of it leased to the
        // refused key); at any one moment they may hold no lease, between two shards.
        let then = view().await.shards_verified;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let now = view().await;
            assert_eq!(leased_to_it(&now), 0);
            assert!(matches!(now.status, JobStatus::Running), "{now:#?}");
            if now.shards_verified > then {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the others did not go on with the job: {} verified then and 60 s later",
                then
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// A household restores its radiator's data directory from a backup taken before the node
/// sealed receipt commitments that the auditor logged. Restarted, the node asks its bootstrap
/// node (the auditor) for the last commitment it logged of the key before sealing anything,
/// numbers on past it, and so never signs a number twice: the auditor finds no equivocation,
/// and the key is not refused. Until 2026-12-04 the restored node sealed from its own ledger,
/// signed number 0 again over other receipts, and the auditor proved an equivocation that
/// every radiator then refused the household's key for, for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_data_directory_restored_from_a_backup_numbers_on_past_what_the_auditor_logged() {
    tokio::time::timeout(Duration::from_secs(200), async {
        let dir = tempfile::tempdir().unwrap();
        let (auditor, log, bootstrap) = start_auditor(dir.path(), None).await;
        let home = dir.path().join("home");
        let start = || async {
            hearth::node::start(loopback_options(&home, Some(bootstrap.clone()), 2).unwrap())
                .await
                .unwrap()
        };
        let node = start().await;
        let key = node.household();
        pi_job(&node, 1).await;
        let first = logged_past(&log, &key, None).await;
        node.shutdown().await;
        let backup = dir.path().join("backup");
        copy_dir(&home, &backup);

        let node = start().await;
        pi_job(&node, 2).await;
        let second = logged_past(&log, &key, Some(first)).await;
        node.shutdown().await;
        // The household restores the backup over the newer data directory.
        std::fs::remove_dir_all(&home).unwrap();
        copy_dir(&backup, &home);

        let node = start().await;
        pi_job(&node, 3).await;
        let third = logged_past(&log, &key, Some(second)).await;
        assert!(third > second, "{first} {second} {third}");
        // A little longer, for a late commitment: still no equivocation, nothing refused.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let heard = log.coordinator(&key, 0, 1000).unwrap();
        assert!(heard.equivocations.is_empty(), "{:#?}", heard.equivocations);
        assert!(auditor.context.refusals.keys().reasons(&key).is_none());
        assert!(node.context.refusals.keys().reasons(&key).is_none());
        node.shutdown().await;
        auditor.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// A node whose bootstrap nodes do not answer (here one that does not exist) holds its
/// receipts back, durable, until the numbering wait is over, then seals from its own ledger
/// all the same: a household cut off from its auditors still gets its receipts, later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_bootstrap_nodes_never_answer_seals_after_the_numbering_wait() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        // A bootstrap address where nobody listens.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let nobody = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let bootstrap = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{nobody}")
            .parse()
            .unwrap();
        let wait = Duration::from_secs(8);
        let mut opts = loopback_options(&dir.path().join("home"), Some(bootstrap), 2).unwrap();
        opts.numbering_wait = wait;
        let started = std::time::Instant::now();
        let node = hearth::node::start(opts).await.unwrap();
        // `hearth status` says why receipts wait.
        let text = status_text(&node, &dir.path().join("home")).await;
        assert!(
            text.contains("sealing:    waiting for 1 of 1 bootstrap node(s)"),
            "{text}"
        );
        let spec = JobSpec::Pi {
            shards: 4,
            samples: 10_000,
            seed: 4,
        };
        let (id, _) = submit(&node, &spec, 1).await;
        let view = wait_done(&node, id, Duration::from_secs(60)).await;
        assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
        let ledger = &node.context.ledger;
        loop {
            if ledger.pending_count() == 0 && !ledger.commitments().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            started.elapsed() >= wait,
            "sealed {:?} after the start, before the numbering wait was over",
            started.elapsed()
        );
        assert_eq!(ledger.commitments().unwrap()[0].seq, 0);
        assert!(node.context.auditors.sealing_waits().is_none());
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// A coordinator that shows a radiator a second commitment under a number the radiator
/// already holds one of, and publishes it to no auditor: the radiator's ledger refuses the
/// receipt, and its node publishes the two signed commitments as the proof, so every node
/// refuses the key, the one that never saw either commitment too. Until the night of
/// 2026-12-04 the ledger refused the receipt and said nothing: an equivocation kept from the
/// auditors was seen only by the one ledger that received both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_radiator_shown_two_commitments_under_one_number_publishes_the_proof() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        // 0 coordinates (warm: it runs no shards); 1 and 2 work every shard.
        let nodes = start_radiators(dir.path(), 3, 1, &|i, o: &mut NodeOptions| {
            warm_if(i == 0, o)
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let (sub, worker) = (&nodes[0], &nodes[1]);
        let key = sub.household();
        let spec = JobSpec::Pi {
            shards: 4,
            samples: 10_000,
            seed: 5,
        };
        let (id, _) = submit(sub, &spec, 2).await;
        let view = wait_done(sub, id, Duration::from_secs(120)).await;
        assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
        // A commitment of the coordinator that came to radiator 1 with its receipts.
        let held = loop {
            let all = worker.context.ledger.commitments().unwrap();
            if let Some(c) = all.into_iter().find(|c| c.coordinator == key) {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };

        // The coordinator's key signs another commitment under that number, over a receipt
        // for radiator 1, and hands it to radiator 1 alone.
        let coord = Identity::load(&dir.path().join("radiator-0")).unwrap();
        let me = Identity::load(&dir.path().join("radiator-1")).unwrap();
        let (request, twin) = shown_receipt(&coord, &me, 0, held.seq);
        assert_ne!(twin, held);
        let answer = deliver(sub, worker, request).await;
        match answer {
            Response::Error { detail } => {
                assert!(detail.contains("two different commitments"), "{detail}")
            }
            other => panic!("the receipt was taken: {other:?}"),
        }
        // Radiator 1 refuses the key; radiator 2, which saw neither the second commitment nor
        // any auditor's log, hears the proof on gossip (well under the 30 s a peer takes to
        // settle and be asked), and so does the coordinator's own node.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for (i, n) in nodes.iter().enumerate() {
            wait_equivocated(n, &key, deadline, &format!("node {i} within 10 s")).await;
        }
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// A coordinator that shows two radiators two different commitments under one number, each
/// with that radiator's receipt, and publishes neither: each radiator hands the commitment its
/// receipt came in to its bootstrap node (`Request::Witness`), whose auditor's log so holds
/// the first, finds the second, and publishes the proof; every node refuses the key. Until the
/// night of 2026-12-04 no ledger and no auditor held both, and nobody saw it. An auditor
/// refuses a witnessed commitment whose signature fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commitments_radiators_were_shown_reach_the_auditor_which_finds_two_under_one_number() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = start_radiators(dir.path(), 4, 1, &|i, o: &mut NodeOptions| {
            if i == 0 {
                o.config.node.role = hearth::config::Role::Bootstrap;
            }
            warm_if(i == 1, o);
        })
        .await
        .unwrap();
        settle(&nodes).await;
        let (auditor, sub) = (&nodes[0], &nodes[1]);
        let log = auditor.context.audit.clone().unwrap();
        let key = sub.household();
        let coord = Identity::load(&dir.path().join("radiator-1")).unwrap();
        // A receipt for radiator `i`, in a commitment numbered 77 of its own.
        let shown = |i: usize| {
            let me = Identity::load(&dir.path().join(format!("radiator-{i}"))).unwrap();
            shown_receipt(&coord, &me, i as u32, 77)
        };
        let ((first, c2), (second, c3)) = (shown(2), shown(3));
        assert_ne!(c2, c3);
        // Radiator 2 stores its receipt and hands on the commitment: the auditor logs it,
        // though the coordinator published nothing.
        assert_eq!(
            deliver(sub, &nodes[2], first).await,
            Response::ReceiptStored
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let heard = log.coordinator(&key, 77, 10).unwrap();
            if let Some(c) = heard.commitments.first() {
                assert_eq!(c.signed, hex::encode(c2.to_bytes()));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the auditor did not hear the commitment radiator 2 was shown"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Radiator 3 is shown the other body: stored too (its ledger holds no other), handed
        // on, and the auditor holds both.
        assert_eq!(
            deliver(sub, &nodes[3], second).await,
            Response::ReceiptStored
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for (i, n) in nodes.iter().enumerate() {
            wait_equivocated(n, &key, deadline, &format!("node {i} within 10 s")).await;
        }
        let heard = log.coordinator(&key, 0, 10).unwrap();
        assert_eq!(heard.equivocations.len(), 1, "{heard:#?}");
        assert_eq!(
            heard.equivocations[0].second.signed,
            hex::encode(c3.to_bytes())
        );

        // A witnessed commitment whose signature fails is refused, and not logged.
        let mut forged = c2.clone();
        forged.seq = 78;
        let answer = nodes[2]
            .context
            .net
            .request(
                auditor.peer_id(),
                Request::Witness(Box::new(forged)).to_bytes(),
            )
            .await
            .unwrap();
        match Response::from_bytes(&answer).unwrap() {
            Response::Error { detail } => assert!(detail.contains("does not verify"), "{detail}"),
            other => panic!("a forged commitment was taken: {other:?}"),
        }
        assert!(log
            .coordinator(&key, 78, 10)
            .unwrap()
            .commitments
            .is_empty());
        // The bootstrap node's operator sees it in the metrics: the log, its equivocation,
        // the two commitments taken and the forged one refused.
        let text = scrape_metrics(auditor, &dir.path().join("radiator-0")).await;
        for line in [
            "hearth_audit_commitments 1.0",
            "hearth_audit_equivocations 1.0",
            "hearth_audit_witnessed_total 2.0",
            "hearth_audit_witnessed_refused_total 1.0",
            "hearth_audit_commitments_unkept_total 0.0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        for n in nodes {
            n.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// Another node signs receipt commitments with this node's key (here as a thief or a copy of
/// the data directory would: a commitment of the key numbered past the node's, gossiped). The
/// node's next check with its bootstrap node finds a commitment it did not seal, stops sealing
/// (its receipts wait, durable) and says why in `hearth status`; the auditor never sees one
/// number signed twice. Restarted, the node numbers on past the other's commitment and seals
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_finds_its_key_signing_elsewhere_stops_sealing_and_says_why() {
    tokio::time::timeout(Duration::from_secs(200), async {
        let dir = tempfile::tempdir().unwrap();
        let (auditor, log, bootstrap) = start_auditor(dir.path(), None).await;
        let home = dir.path().join("home");
        let start = || async {
            let mut opts = loopback_options(&home, Some(bootstrap.clone()), 2).unwrap();
            opts.numbering_check = Duration::from_secs(2);
            hearth::node::start(opts).await.unwrap()
        };
        let node = start().await;
        let key = node.household();
        pi_job(&node, 1).await;
        let sealed = logged_past(&log, &key, None).await;

        // The same key signs a commitment elsewhere, five numbers on.
        let identity = Identity::load(&home).unwrap();
        let (other, _) = Commitment::seal(
            &identity,
            sealed + 5,
            &[blake3::hash(b"countersigned elsewhere")],
            now_ms(),
            now_ms(),
        )
        .unwrap();
        node.context
            .net
            .publish(Topic::Commitments, other.to_bytes())
            .await
            .unwrap();
        assert_eq!(logged_past(&log, &key, Some(sealed)).await, sealed + 5);
        let why = told_elsewhere(&node, "the node").await;
        assert!(why.contains(&format!("#{}", sealed + 5)), "{why}");
        let text = status_text(&node, &home).await;
        assert!(
            text.contains("KEY USED ELSEWHERE") && text.contains("another node signs"),
            "{text}"
        );
        // Its next job runs, but nothing more is sealed: the receipts wait.
        pi_job(&node, 2).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(node.context.ledger.pending_count() > 0);
        let heard = log.coordinator(&key, 0, 1000).unwrap();
        assert_eq!(heard.commitments.last().map(|c| c.seq), Some(sealed + 5));
        node.shutdown().await;

        // Restarted, it asks first, numbers on past the other's commitment, and seals.
        let node = start().await;
        assert_eq!(logged_past(&log, &key, Some(sealed + 5)).await, sealed + 6);
        assert!(node.context.auditors.elsewhere().is_none());
        node.shutdown().await;
        auditor.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// A copy of a data directory (an image flashed after `hearth init`, a cloned disk) runs
/// beside the node it was copied from: two nodes, one key, one ledger. The bootstrap node lends
/// the key to the one that asked first, so only that one seals: the copy runs its job, its
/// receipts wait, durable, and `hearth status` on both says another node runs with the key.
/// When the first stops it gives the lease back, and the copy numbers on past the first's
/// commitments and seals. The auditor never sees one number signed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copied_data_directory_seals_nothing_while_the_node_it_was_copied_from_runs() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let dir = tempfile::tempdir().unwrap();
        let (auditor, log, bootstrap) = start_auditor(dir.path(), None).await;
        let (home, copy) = (dir.path().join("home"), dir.path().join("copy"));
        let start = |home: std::path::PathBuf| start_twin(home, &bootstrap, 2, 600);
        let key = set_up_and_copy(&home, &copy, &bootstrap).await;
        let first = start(home.clone()).await;
        pi_job(&first, 1).await;
        let sealed = logged_past(&log, &key, None).await;
        let twin = start(copy.clone()).await;
        assert_eq!(twin.household(), key);
        assert_ne!(
            twin.context.auditors.instance(),
            first.context.auditors.instance()
        );
        pi_job(&twin, 2).await;
        pi_job(&first, 3).await;
        let sealed = logged_past(&log, &key, Some(sealed)).await;
        // The copy says why it seals nothing (once the first was heard after the copy started:
        // before, it may be the copy's own run before a power cut), and the first that another
        // node waits.
        let why = told_elsewhere(&twin, "the copy").await;
        assert!(why.contains("another node runs with this key"), "{why}");
        let text = status_text(&twin, &copy).await;
        assert!(
            text.contains("KEY USED ELSEWHERE") && text.contains("lends this key to another"),
            "{text}"
        );
        let why = told_elsewhere(&first, "the first").await;
        assert!(why.contains("waits while this one seals"), "{why}");
        copy_still_waits(&twin, &log, &key).await;
        let text = scrape_metrics(&auditor, &dir.path().join("auditor")).await;
        assert!(
            text.lines().any(|l| l == "hearth_instance_leases 1.0"),
            "{text}"
        );

        // The bootstrap node restarts (an upgrade). It kept who holds the key, so the copy,
        // which asks as often as the first and may reach it first, still waits, and the first
        // seals on.
        auditor.shutdown().await;
        drop(log); // it holds the auditor's database open
        let (auditor, log) = restart_auditor(dir.path(), &bootstrap).await;
        pi_job(&first, 4).await;
        let sealed = logged_past(&log, &key, Some(sealed)).await;
        copy_still_waits(&twin, &log, &key).await;
        let why = told_elsewhere(&twin, "the copy").await;
        assert!(why.contains("another node runs with this key"), "{why}");

        // The first stops and gives the key back: the copy takes it, numbers on past the
        // first's commitments, and seals what waited; the auditor logs it, and no number twice.
        first.shutdown().await;
        let last = sealed_all(&twin, 30, "the copy").await;
        assert!(last > sealed);
        assert_eq!(logged_past(&log, &key, Some(last - 1)).await, last);
        assert!(twin.context.auditors.elsewhere().is_none());
        twin.shutdown().await;
        auditor.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// A node asks its bootstrap nodes for its key's lease only while it has something to seal
/// (and for `lease_idle` after): a radiator that only works for others does not load them for
/// as long as it runs. Real nodes on loopback: the node gives the lease back once idle (the
/// bootstrap node lends the key to nobody, `hearth status` says why nothing is sealed); a copy
/// of its data directory started meanwhile takes the key, numbers on past the node's
/// commitments and seals; the node, given a job while the copy holds the key, waits, then
/// takes the key when the copy gives it back, numbers on past the copy's commitments, and
/// seals what waited. The auditor logs every commitment, and no number twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_nothing_to_seal_gives_its_keys_lease_back_and_takes_it_again() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let dir = tempfile::tempdir().unwrap();
        let (auditor, log, bootstrap) = start_auditor(dir.path(), None).await;
        let (home, copy) = (dir.path().join("home"), dir.path().join("copy"));
        let start = |home: std::path::PathBuf, idle: u64| start_twin(home, &bootstrap, 1, idle);
        let key = set_up_and_copy(&home, &copy, &bootstrap).await;
        let first = start(home.clone(), 3).await;
        pi_job(&first, 1).await;
        let sealed = logged_past(&log, &key, None).await;
        // Idle: the lease goes back, and the bootstrap node lends the key to nobody.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = scrape_metrics(&auditor, &dir.path().join("auditor")).await;
            if text.lines().any(|l| l == "hearth_instance_leases 0.0") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the lease was kept: {text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let text = status_text(&first, &home).await;
        assert!(text.contains("sealing:    nothing to seal"), "{text}");

        // The copy starts and takes the key while the first has nothing to seal, and seals
        // past the first's commitments.
        let twin = start(copy.clone(), 8).await;
        pi_job(&twin, 2).await;
        let by_twin = logged_past(&log, &key, Some(sealed)).await;
        let own = twin.context.ledger.commitments().unwrap();
        assert_eq!(own.last().map(|c| c.seq), Some(by_twin));

        // The first has a job while the copy holds the key: its receipts wait ...
        pi_job(&first, 3).await;
        let waits = first.context.auditors.sealing_waits().unwrap_or_default();
        assert!(waits.contains("lends this key to another"), "{waits}");
        assert!(first.context.ledger.pending_count() > 0, "the first sealed");
        // ... until the copy, idle, gives the key back: the first numbers on past the
        // copy's commitments.
        let last = sealed_all(&first, 60, "the first").await;
        assert!(last > by_twin, "{last} after {by_twin}");
        assert_eq!(logged_past(&log, &key, Some(last - 1)).await, last);
        for node in [first, twin, auditor] {
            node.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// The bootstrap node of [`start_auditor`] started again on its data directory and at its
/// address `addr`: the node and its log.
async fn restart_auditor(
    dir: &std::path::Path,
    addr: &libp2p::Multiaddr,
) -> (RunningNode, hearth::audit::AuditLog) {
    let mut opts = loopback_options(&dir.join("auditor"), None, 1).unwrap();
    opts.config.node.role = hearth::config::Role::Bootstrap;
    let listen: libp2p::Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        .collect();
    opts.config.node.listen = vec![listen];
    let auditor = hearth::node::start(opts).await.unwrap();
    assert_eq!(hearth::demo::listen_addr(&auditor).await.unwrap(), *addr);
    let log = auditor.context.audit.clone().unwrap();
    (auditor, log)
}

/// Six seconds on (three of the copy's asks), the copy `twin` still seals nothing: its
/// receipts wait, its ledger holds no commitment, and the auditor's `log` no equivocation of
/// `key`.
async fn copy_still_waits(twin: &RunningNode, log: &hearth::audit::AuditLog, key: &PublicKey) {
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(twin.context.ledger.pending_count() > 0, "the copy sealed");
    assert!(twin.context.ledger.commitments().unwrap().is_empty());
    let heard = log.coordinator(key, 0, 1000).unwrap();
    assert!(heard.equivocations.is_empty());
}

/// A node of the twin tests on data directory `home`, bootstrapping from `bootstrap`, asking
/// its bootstrap nodes again every `check` seconds and keeping its key's lease `idle` seconds
/// with nothing to seal.
async fn start_twin(
    home: std::path::PathBuf,
    bootstrap: &libp2p::Multiaddr,
    check: u64,
    idle: u64,
) -> RunningNode {
    let mut opts = loopback_options(&home, Some(bootstrap.clone()), 2).unwrap();
    opts.numbering_check = Duration::from_secs(check);
    opts.lease_idle = Duration::from_secs(idle);
    hearth::node::start(opts).await.unwrap()
}

/// A node set up once in `home`, stopped, and its data directory copied to `copy` as it lies on
/// disk (an image flashed after `hearth init`): its key.
async fn set_up_and_copy(
    home: &std::path::Path,
    copy: &std::path::Path,
    bootstrap: &libp2p::Multiaddr,
) -> PublicKey {
    let node = start_twin(home.to_path_buf(), bootstrap, 2, 600).await;
    let key = node.household();
    node.shutdown().await;
    support::copy_dir(home, copy);
    key
}

/// Once no receipt of `node` (`who`) waits for a seal any more (`secs` at most): the number of
/// its last commitment.
async fn sealed_all(node: &RunningNode, secs: u64, who: &str) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while node.context.ledger.pending_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{who}'s receipts still wait"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let own = node.context.ledger.commitments().unwrap();
    own.last()
        .unwrap_or_else(|| panic!("{who} sealed nothing"))
        .seq
}

/// What `node` says of its key being used elsewhere, once it says it (20 s at most).
async fn told_elsewhere(node: &RunningNode, who: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(why) = node.context.auditors.elsewhere() {
            return why;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{who} did not say its key is used elsewhere"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `hearth status` prints for `node` (its data directory `home`).
async fn status_text(node: &RunningNode, home: &std::path::Path) -> String {
    let api = node.api_addr.to_string();
    let home = home.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
            .arg("--data-dir")
            .arg(&home)
            .args(["--api", &api, "status"])
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bootstrap node keeping the auditor's log, in `dir/auditor`, bootstrapping from
/// `bootstrap`: the node, its log, and its address for others to bootstrap from.
async fn start_auditor(
    dir: &std::path::Path,
    bootstrap: Option<libp2p::Multiaddr>,
) -> (RunningNode, hearth::audit::AuditLog, libp2p::Multiaddr) {
    let mut opts = loopback_options(&dir.join("auditor"), bootstrap, 1).unwrap();
    opts.config.node.role = hearth::config::Role::Bootstrap;
    let auditor = hearth::node::start(opts).await.unwrap();
    let log = auditor.context.audit.clone().unwrap();
    let addr = hearth::demo::listen_addr(&auditor).await.unwrap();
    (auditor, log, addr)
}

/// Waits (30 s at most) until `log` holds a commitment of `key` numbered above `above`, and
/// returns the highest; fails at once if the log holds an equivocation of the key.
async fn logged_past(log: &hearth::audit::AuditLog, key: &PublicKey, above: Option<u64>) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let heard = log.coordinator(key, 0, 1000).unwrap();
        assert!(
            heard.equivocations.is_empty(),
            "the key signed a number twice: {:#?}",
            heard.equivocations
        );
        match heard.commitments.last().map(|c| c.seq) {
            Some(last) if Some(last) > above => return last,
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing logged past {above:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A receipt crediting `worker` for shard `shard` of a job nobody announced, countersigned by
/// `coord`, delivered with its proof in a commitment of its own that `coord` signs as number
/// `seq`: what a coordinator would show one radiator alone. The request and that commitment.
fn shown_receipt(
    coord: &Identity,
    worker: &Identity,
    shard: u32,
    seq: u64,
) -> (Request, Commitment) {
    let end = now_ms();
    let record = WorkRecord {
        job: blake3::hash(b"a job shown to radiators one by one"),
        shard,
        module: blake3::hash(b"m"),
        input: blake3::hash(b"i"),
        output: blake3::hash(b"o"),
        worker: worker.public(),
        submitter: coord.public(),
        fuel: 100,
        energy_mj: 2_000,
        method: EnergyMethod::CpuEstimate,
        start_ms: end - 10,
        end_ms: end,
        nonce: [shard as u8; 16],
    };
    let terms = CreditTerms::claimed(&record, 2, 2);
    let receipt = Claim::sign(record, worker)
        .unwrap()
        .countersign(coord, terms)
        .unwrap();
    let (commitment, sealed) = Commitment::seal(coord, seq, &[receipt.id()], end, end).unwrap();
    let (_, index, path) = sealed.proofs().next().unwrap();
    let request = Request::Receipt {
        receipt: Box::new(receipt),
        inclusion: Inclusion {
            commitment: commitment.clone(),
            index,
            path,
        },
    };
    (request, commitment)
}

/// Sends `request` from `from` to `to` over the control protocol; `to`'s answer.
async fn deliver(from: &RunningNode, to: &RunningNode, request: Request) -> Response {
    let answer = from
        .context
        .net
        .request(to.peer_id(), request.to_bytes())
        .await
        .unwrap();
    Response::from_bytes(&answer).unwrap()
}

/// A job of far more work than a test's radiators do in its time: leases are always out.
fn endless(seed: u64) -> JobSpec {
    JobSpec::Pi {
        shards: 2_000,
        samples: 2_000_000,
        seed,
    }
}

/// A small job of `node`'s own, worked by its own radiator, run to done.
async fn pi_job(node: &RunningNode, seed: u64) {
    let spec = JobSpec::Pi {
        shards: 4,
        samples: 10_000,
        seed,
    };
    let (id, _) = submit(node, &spec, 1).await;
    let view = wait_done(node, id, Duration::from_secs(60)).await;
    assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
}
