//! Fixtures shared by the tests that run real nodes on loopback (`mod support;` in each):
//! settle a network of radiators, submit a job built from a spec, wait for its outcome and
//! read its result; the module and claim of an in-process radiator whose shards cost nothing (also used
//! by `benches/coordinator.rs`, with `#[path]`). Each test file uses some of them, hence
//! `allow(dead_code)`.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use hearth::demo::wait_connected;
use hearth::identity::{Identity, PublicKey};
use hearth::jobs::build::{build, JobSpec};
use hearth::jobs::{JobStatus, JobView};
use hearth::kernels;
use hearth::model::receipt::{Claim, EnergyMethod, WorkRecord};
use hearth::model::wire::Lease;
use hearth::model::{now_ms, parse_hash, JobLimits, JobManifest};
use hearth::node::{NodeOptions, RunningNode};

/// Iterations of the Mandelbrot jobs built by [`mandelbrot`] and checked by [`native_png`].
pub const MAX_ITER: u32 = 200;

/// If `warm`, puts a radiator in a warm simulated room: its heat controller then runs no
/// shards, so it only submits and coordinates.
pub fn warm_if(warm: bool, o: &mut NodeOptions) {
    if warm {
        o.config.heat.simulated.initial_celsius = Some(24.0);
    }
}

/// The household key radiator `i` of `start_radiators(dir, ..)` will have, made before the
/// nodes start (so another radiator's configuration can name it).
pub fn household_key(dir: &Path, i: usize) -> PublicKey {
    Identity::load_or_create(&dir.join(format!("radiator-{i}")))
        .unwrap()
        .public()
}

/// Copies a directory and everything under it (a data directory's backup, as a household
/// makes one).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// What `node`'s `/metrics` shows, read as a Prometheus scraper does, with the API token of
/// its data directory `data_dir`.
pub async fn scrape_metrics(node: &RunningNode, data_dir: &Path) -> String {
    let token = std::fs::read_to_string(data_dir.join("api.token")).unwrap();
    reqwest::Client::new()
        .get(format!("http://{}/metrics", node.api_addr))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until every node is connected (20 s at most), then lets gossipsub graft its mesh
/// before the first announcement.
pub async fn settle(nodes: &[RunningNode]) {
    wait_connected(nodes, 1, Duration::from_secs(20))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

pub fn mandelbrot(width: u32, height: u32, tile: u32) -> JobSpec {
    JobSpec::Mandelbrot {
        width,
        height,
        tile,
        max_iter: MAX_ITER,
    }
}

/// The PNG a [`mandelbrot`] job must produce, computed natively.
pub fn native_png(width: u32, height: u32, tile: u32) -> Vec<u8> {
    let tiles: Vec<Vec<u8>> = kernels::mandelbrot_tiles(width, height, tile, MAX_ITER)
        .iter()
        .map(kernels::mandelbrot_native)
        .collect();
    kernels::assemble_mandelbrot_png(width, height, tile, &tiles).unwrap()
}

/// Builds a job from `spec` in `node`'s store, submitted by `node`'s household.
pub fn manifest(node: &RunningNode, spec: &JobSpec, replication: u8) -> JobManifest {
    build(
        &node.context.store,
        spec,
        node.household(),
        JobLimits::default(),
        replication,
    )
    .unwrap()
}

/// Builds a job from `spec` in `node`'s store and submits it there; returns its id and
/// number of shards.
pub async fn submit(node: &RunningNode, spec: &JobSpec, replication: u8) -> (blake3::Hash, usize) {
    let manifest = manifest(node, spec, replication);
    let shards = manifest.inputs.len();
    let id = node.context.coordinator.submit(manifest).await.unwrap();
    (id, shards)
}

/// Polls `node`'s coordinator until job `id` is no longer running; panics after `timeout`.
pub async fn wait_done(node: &RunningNode, id: blake3::Hash, timeout: Duration) -> JobView {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let view = node.context.coordinator.view(id).await.expect("job known");
        match &view.status {
            JobStatus::Running => {}
            _ => return view,
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job not finished in {timeout:?}: {view:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The result of a job that succeeded, read from `node`'s store; panics if it failed.
pub fn result_bytes(node: &RunningNode, view: &JobView) -> Vec<u8> {
    let JobStatus::Done { result } = &view.status else {
        panic!("job did not succeed: {view:#?}")
    };
    node.context
        .store
        .get_bytes(&parse_hash(result).unwrap())
        .unwrap()
}

/// The smallest module a radiator accepts (core ABI: `alloc`, `run`, a memory), for jobs whose
/// shards are never really run.
pub fn trivial_module() -> Vec<u8> {
    wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 1024)
            (func (export "run") (param i32 i32) (result i64) i64.const 0))"#,
    )
    .expect("a valid module")
}

/// A signed claim for `lease`: `output` as the shard's result, 1 000 fuel and 1 mJ spent in
/// the millisecond before now.
pub fn trivial_claim(
    manifest: &JobManifest,
    lease: &Lease,
    output: blake3::Hash,
    worker: &Identity,
) -> Claim {
    let now = now_ms();
    let record = WorkRecord {
        job: lease.job,
        shard: lease.shard,
        module: manifest.module,
        input: manifest.inputs[lease.shard as usize],
        output,
        worker: worker.public(),
        submitter: manifest.submitter,
        fuel: 1_000,
        energy_mj: 1,
        method: EnergyMethod::CpuEstimate,
        start_ms: now.saturating_sub(1),
        end_ms: now,
        nonce: lease.nonce,
    };
    Claim::sign(record, worker).expect("sign a claim")
}
