//! Distributed jobs, measured side by side in one run on a loopback network of 4 radiators:
//!
//! - efficiency: CPU time inside shards ÷ CPU time of the whole process (all four radiators
//!   live in this process) while a job of ~200 ms shards runs; target at least 0.95;
//! - latency: submit → verified result for a trivial 1-shard job; target median ≤ 100 ms;
//! - receipt verification: receipts per second on one core (strict checks, physics, both
//!   signatures, one receipt at a time: `verify_batch` deliberately does not use ed25519 batch
//!   verification, see `docs/receipts.md`); no target yet.
//!
//! Run with `cargo bench --bench jobs`. It prints a table; it asserts nothing.

use std::time::{Duration, Instant};

use hearth::demo::{start_radiators, wait_connected};
use hearth::exec::Executor;
use hearth::identity::Identity;
use hearth::jobs::build::{build, JobSpec};
use hearth::jobs::JobStatus;
use hearth::model::receipt::{verify_batch, Claim, CreditTerms, EnergyMethod, Receipt, WorkRecord};
use hearth::model::JobLimits;
use hearth::node::RunningNode;

/// The process's CPU time so far (user + system), seconds.
fn cpu_secs() -> f64 {
    hearth::heat::energy::process_cpu_secs().expect("getrusage")
}

/// Submits a job and polls until it is done, every `poll` (the polling itself costs CPU that
/// the efficiency figure counts against hearth, so that measurement polls rarely).
async fn run_job(node: &RunningNode, spec: &JobSpec, replication: u8, poll: Duration) -> Duration {
    let manifest = build(
        &node.context.store,
        spec,
        node.household(),
        JobLimits::default(),
        replication,
    )
    .expect("build job");
    let started = Instant::now();
    let id = node
        .context
        .coordinator
        .submit(manifest)
        .await
        .expect("submit");
    loop {
        let view = node.context.coordinator.view(id).await.expect("job");
        match view.status {
            JobStatus::Done { .. } => return started.elapsed(),
            JobStatus::Failed { reason } => panic!("job failed: {reason}"),
            JobStatus::Running => tokio::time::sleep(poll).await,
        }
    }
}

fn receipts(n: usize) -> Vec<Receipt> {
    let (w, s) = (Identity::generate(), Identity::generate());
    (0..n)
        .map(|i| {
            let record = WorkRecord {
                job: blake3::hash(b"bench"),
                shard: i as u32,
                module: blake3::hash(b"m"),
                input: blake3::hash(&i.to_le_bytes()),
                output: blake3::hash(b"o"),
                worker: w.public(),
                submitter: s.public(),
                fuel: 1000,
                energy_mj: 1000,
                method: EnergyMethod::CpuEstimate,
                start_ms: 1,
                end_ms: 2,
                nonce: [i as u8; 16],
            };
            let terms = CreditTerms::claimed(&record, 2, 2);
            Claim::sign(record, &w)
                .unwrap()
                .countersign(&s, terms)
                .unwrap()
        })
        .collect()
}

fn main() {
    // Receipt verification on this thread (one core).
    let batch = receipts(20_000);
    let t = Instant::now();
    assert!(verify_batch(&batch).iter().all(|r| r.is_ok()));
    let single = batch.len() as f64 / t.elapsed().as_secs_f64();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (latencies, efficiency, job_time) = runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = start_radiators(dir.path(), 4, 1, &|_, _| {}).await.unwrap();
        wait_connected(&nodes, 3, Duration::from_secs(30))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sub = &nodes[0];
        // Latency: a trivial job of one shard, replication 2.
        let mut latencies = Vec::new();
        for seed in 0..30 {
            let spec = JobSpec::Pi {
                shards: 1,
                samples: 1000,
                seed,
            };
            latencies.push(run_job(sub, &spec, 2, Duration::from_millis(1)).await);
        }
        latencies.sort();
        // Efficiency: 16 shards of about 200 ms each, replication 2.
        let spec = JobSpec::Pi {
            shards: 16,
            samples: 1_800_000_000,
            seed: 99,
        };
        let (cpu0, shard0) = (cpu_secs(), Executor::process_shard_cpu_time());
        let job_time = run_job(sub, &spec, 2, Duration::from_millis(100)).await;
        let (cpu1, shard1) = (cpu_secs(), Executor::process_shard_cpu_time());
        let efficiency = (shard1 - shard0).as_secs_f64() / (cpu1 - cpu0);
        let shard_ms = (shard1 - shard0).as_secs_f64() * 1000.0 / 32.0;
        for n in nodes {
            n.shutdown().await;
        }
        (latencies, (efficiency, shard_ms), job_time)
    });
    let median = latencies[latencies.len() / 2];
    let p90 = latencies[latencies.len() * 9 / 10];
    println!("hearth jobs benchmark (4 radiators on loopback, one process)");
    println!("{:<52} {:>14} {:>10}", "measure", "value", "target");
    println!(
        "{:<52} {:>14.3} {:>10}",
        format!(
            "efficiency (32 shard runs of {:.0} ms; job {:.1?})",
            efficiency.1, job_time
        ),
        efficiency.0,
        ">= 0.95"
    );
    println!(
        "{:<52} {:>11.1} ms {:>10}",
        "latency, 1-shard job, median of 30",
        median.as_secs_f64() * 1000.0,
        "<= 100 ms"
    );
    println!(
        "{:<52} {:>11.1} ms {:>10}",
        "latency, 1-shard job, p90",
        p90.as_secs_f64() * 1000.0,
        ""
    );
    println!(
        "{:<52} {:>12.0}/s {:>10}",
        "receipts verified (strict), one core", single, ""
    );
}
