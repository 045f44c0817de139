//! Honest storage (issue 16): a database that was damaged, truncated or could not be written
//! is named, never silently forgotten. Real nodes doing a real job, real sled files, real
//! damage, the real `hearth` binary for `hearth doctor`, and a real full filesystem (tmpfs).
//!
//! Each damage test first reproduces what sled alone does with the damaged file (it opens
//! it and quietly holds less), then shows the node refusing to start with an error that says
//! what was lost and to run `hearth doctor`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use hearth::demo::{listen_addr, loopback_options};
use hearth::identity::Identity;
use hearth::jobs::build::{build, JobSpec};
use hearth::jobs::coordinator::persist::Persist;
use hearth::jobs::JobStatus;
use hearth::ledger::Ledger;
use hearth::model::JobLimits;
use hearth::node::RunningNode;

mod support;
use support::{copy_dir, trivial_claim};

const TIMEOUT: Duration = Duration::from_secs(180);
const BIN: &str = env!("CARGO_BIN_EXE_hearth");
const SHARDS: u32 = 6;

/// Starts a radiator on `dir`, has it run a job of [`SHARDS`] shards for itself (so it holds
/// that many receipts on its hash chain and one finished job), and stops it cleanly.
async fn node_with_history(dir: &Path) {
    let node = hearth::node::start(floorless(dir, 2)).await.unwrap();
    let spec = JobSpec::Pi {
        shards: SHARDS,
        samples: 20_000,
        seed: 7,
    };
    let manifest = build(
        &node.context.store,
        &spec,
        node.household(),
        JobLimits::default(),
        1,
    )
    .unwrap();
    let id = node.context.coordinator.submit(manifest).await.unwrap();
    wait_for(&node, id).await;
    node.shutdown().await;
}

/// Options for a node that must meet a full disk itself, on a tmpfs smaller than the disk
/// floor it would otherwise keep free (`[limits] disk_free_mib`): the floor off.
fn floorless(dir: &Path, slots: usize) -> hearth::node::NodeOptions {
    let mut opts = loopback_options(dir, None, slots).unwrap();
    opts.config.limits.disk_free_mib = 0;
    opts
}

async fn wait_for(node: &RunningNode, id: blake3::Hash) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let view = node.context.coordinator.view(id).await.unwrap();
        let receipts = node.context.ledger.counts().unwrap().0;
        if matches!(view.status, JobStatus::Done { .. }) && receipts == u64::from(SHARDS) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job not done with its receipts: {view:?}, {receipts} receipts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the database of a data directory holds as a node's start opens it, before its
/// integrity check: sled, then every interrupted batch applied (`kv::open`). (receipts, chain
/// links, jobs finished.) Plain `sled::open` is not that: when the damage hits the writes of a
/// batch after its intent, the node's start applies the intent again and has them all, which
/// made `damage_near_the_end_does_not_send_a_finished_job_back_to_running` fail now and then
/// (sled alone lost the finish; the node, rightly, started with it).
fn what_sled_opens(dir: &Path) -> Result<(u64, u64, u64), String> {
    let own = Identity::load(dir).unwrap().public();
    let db = hearth::kv::open(&dir.join("db")).map_err(|e| e.to_string())?;
    let ledger = Ledger::open(&db, own).map_err(|e| e.to_string())?;
    let (receipts, links, _) = ledger.counts().map_err(|e| e.to_string())?;
    let persist = Persist::open(&db).map_err(|e| e.to_string())?;
    let (_, finished, _) = persist.counts().map_err(|e| e.to_string())?;
    Ok((receipts, links, finished))
}

/// sled's data file.
fn sled_file(dir: &Path) -> PathBuf {
    dir.join("db").join("db")
}

/// Writes 64 bytes of a fixed pseudo-random pattern into `file` at `offset`.
fn scribble(file: &Path, offset: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let noise = blake3::Hasher::new()
        .update(b"hearth storage test noise")
        .finalize_xof();
    let mut bytes = [0u8; 64];
    let mut reader = noise;
    reader.fill(&mut bytes);
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&bytes).unwrap();
    f.sync_all().unwrap();
}

fn truncate_to(file: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.set_len(len).unwrap();
    f.sync_all().unwrap();
}

fn hearth(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("HEARTH_DATA_DIR")
        .env_remove("RUST_LOG")
        .output()
        .expect("run hearth")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Damages a copy of a healthy data directory with `damage`, shows what sled alone opens from
/// it, and returns the node's start-up error on another damaged copy.
async fn damaged_start(
    healthy: &Path,
    root: &Path,
    damage: &dyn Fn(&Path),
) -> ((u64, u64, u64), String, PathBuf) {
    let raw = root.join("raw");
    copy_dir(healthy, &raw);
    damage(&sled_file(&raw));
    let opened = what_sled_opens(&raw).expect("sled opens the damaged file without an error");
    let node_dir = root.join("node");
    copy_dir(healthy, &node_dir);
    damage(&sled_file(&node_dir));
    let err = match hearth::node::start(loopback_options(&node_dir, None, 1).unwrap()).await {
        Ok(node) => {
            let receipts = node.context.ledger.counts().unwrap().0;
            node.shutdown().await;
            panic!("a damaged database started with {receipts} receipts")
        }
        Err(e) => e.to_string(),
    };
    (opened, err, node_dir)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// 64 random bytes at each sixteenth of the file: wherever they land, the node starts with
/// everything it had, or refuses with an error naming the damage; never with less.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_bytes_in_the_database_never_start_a_node_with_less() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let healthy = dir.path().join("healthy");
        node_with_history(&healthy).await;
        assert_eq!(
            what_sled_opens(&healthy).unwrap(),
            (u64::from(SHARDS), u64::from(SHARDS), 1)
        );
        let len = file_len(&sled_file(&healthy));
        let (mut intact, mut refused) = (0, 0);
        for i in 0..16 {
            let at = len * i / 16;
            let probe = dir.path().join(format!("probe-{i}"));
            copy_dir(&healthy, &probe);
            scribble(&sled_file(&probe), at);
            match hearth::node::start(loopback_options(&probe, None, 1).unwrap()).await {
                Ok(node) => {
                    let (receipts, links, _) = node.context.ledger.counts().unwrap();
                    assert_eq!((receipts, links), (u64::from(SHARDS), u64::from(SHARDS)));
                    node.shutdown().await;
                    intact += 1;
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(!e.contains("another hearth node"), "{e}");
                    assert!(e.contains("hearth doctor"), "{e}");
                    refused += 1;
                }
            }
        }
        eprintln!("64 random bytes at 16 places: {intact} intact, {refused} refused");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_truncated_database_stops_the_start_and_doctor_repairs() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let healthy = dir.path().join("healthy");
        node_with_history(&healthy).await;
        let half = file_len(&sled_file(&healthy)) / 2;
        let ((receipts, links, _), err, damaged) =
            damaged_start(&healthy, dir.path(), &|f| truncate_to(f, half)).await;
        // What the issue found: sled opens the file and holds less, silently.
        assert!(
            receipts < u64::from(SHARDS) || links < u64::from(SHARDS),
            "sled kept everything: {receipts} receipts, {links} links"
        );
        assert!(err.contains("is damaged"), "{err}");
        assert!(err.contains("lost data"), "{err}");
        assert!(err.contains("hearth doctor"), "{err}");
        // The healthy directory passes the doctor (run after the copies: sled may rewrite its
        // file when opened).
        let out = hearth(&healthy, &["doctor"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("no damage found"), "{}", text(&out));

        // The doctor names the damage and fails; with --repair it accepts the loss, says what
        // it could not repair, and the node starts again.
        let out = hearth(&damaged, &["doctor"]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("lost data"), "{}", text(&out));
        let out = hearth(&damaged, &["doctor", "--repair"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("not repaired"), "{}", text(&out));
        let out = hearth(&damaged, &["doctor"]);
        assert!(out.status.success(), "{}", text(&out));
        let node = hearth::node::start(loopback_options(&damaged, None, 1).unwrap())
            .await
            .unwrap();
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damage_near_the_end_does_not_send_a_finished_job_back_to_running() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let healthy = dir.path().join("healthy");
        node_with_history(&healthy).await;
        let len = file_len(&sled_file(&healthy));
        let damage = |f: &Path| scribble(f, len - 200);
        let raw = dir.path().join("raw");
        copy_dir(&healthy, &raw);
        damage(&sled_file(&raw));
        let (_, _, finished) = what_sled_opens(&raw).expect("sled opens the damaged file");
        let node_dir = dir.path().join("node");
        copy_dir(&healthy, &node_dir);
        damage(&sled_file(&node_dir));
        // The node keeps writing after the job is done (its seal, assembly, collection)
        // until it stops, so what the last 200 bytes hold depends on timing: usually the
        // finished job's entry, sometimes only writes the checkpoint does not count. Either
        // way the node never runs the job again: it refuses to start when sled lost the
        // finish, and starts with every receipt only when nothing counted was lost.
        match hearth::node::start(loopback_options(&node_dir, None, 1).unwrap()).await {
            Ok(node) => {
                let (receipts, links, _) = node.context.ledger.counts().unwrap();
                node.shutdown().await;
                assert_eq!(finished, 1, "the node started though sled lost the finish");
                assert_eq!((receipts, links), (u64::from(SHARDS), u64::from(SHARDS)));
                eprintln!("the damage missed everything counted; the node started intact");
            }
            Err(e) => assert!(e.to_string().contains("lost data"), "{e}"),
        }
    })
    .await
    .expect("test timed out");
}

/// A tmpfs of `mib` MiB mounted on a fresh directory, unmounted when dropped. `None` when
/// mounting is not allowed here (not root); `HEARTH_REQUIRE_TMPFS=1` (CI) makes that a failure.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u32) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(at.to_path_buf())),
            other => {
                assert!(
                    std::env::var("HEARTH_REQUIRE_TMPFS").is_err(),
                    "cannot mount a tmpfs: {other:?}"
                );
                eprintln!("skipped: cannot mount a tmpfs here (needs root): {other:?}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` with a file until a write fails; returns the file.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0xA5u8; 64 * 1024];
    while f.write_all(&block).and_then(|()| f.sync_all()).is_ok() {}
    // Then the last bytes, one small write at a time.
    while f
        .write_all(&block[..512])
        .and_then(|()| f.sync_all())
        .is_ok()
    {}
    path
}

/// Fills the filesystem of `dir` but for about `room` bytes; returns the filler file.
fn fill_leaving(dir: &Path, room: u64) -> PathBuf {
    let filler = fill(dir);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    f.set_len(f.metadata().unwrap().len().saturating_sub(room))
        .unwrap();
    filler
}

/// sled 0.34 wedges when a value too large for its log (over about 128 KiB: it goes to a file
/// of its own) is written while the disk is full: the failed write keeps its place in the log
/// buffer, which then never reaches the disk, and every flush after it waits forever (found
/// 2026-12-04, when `the_disk_filling_under_load_loses_no_acknowledged_lease_or_claim` hung CI
/// with the coordinator's flush and the database's final flush both parked in sled; a group
/// commit's intent had passed 128 KiB). `kv::flush` gives up on such a flush after
/// `kv::FLUSH_DEADLINE`, with an error that says so, instead of never returning.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flush_sled_never_finishes_fails_instead_of_hanging() {
    tokio::time::timeout(hearth::kv::FLUSH_DEADLINE * 3, async {
        let dir = tempfile::tempdir().unwrap();
        let Some(fs) = Tmpfs::mount(&dir.path().join("fs"), 16) else {
            return;
        };
        let db = hearth::kv::open(&fs.0.join("db")).unwrap();
        let tree = db.open_tree("t").unwrap();
        tree.insert(b"small", b"before the disk filled".to_vec())
            .unwrap();
        hearth::kv::flush(&tree).await.expect("a healthy flush");
        let root = fs.0.clone();
        let filler = tokio::task::spawn_blocking(move || fill(&root))
            .await
            .unwrap();
        // A large value, refused for want of space (or accepted into memory).
        let refused = tree.insert(b"large", vec![7u8; 200 * 1024]);
        eprintln!("the large write: {refused:?}");
        let started = std::time::Instant::now();
        let flushed = hearth::kv::flush(&tree).await;
        eprintln!("the flush after it: {flushed:?} in {:?}", started.elapsed());
        let err = flushed.expect_err("nothing can be durable on a full disk");
        assert!(
            err.to_string().contains("did not confirm") || err.to_string().contains("space"),
            "{err}"
        );
        std::fs::remove_file(filler).unwrap();
        // The node would stop here; the process must still be able to end.
        std::mem::forget(db);
    })
    .await
    .expect("test timed out: a flush never returned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_acknowledges_nothing_and_the_node_recovers() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let Some(fs) = Tmpfs::mount(&dir.path().join("fs"), 48) else {
            return;
        };
        let data = fs.0.join("node");
        node_with_history(&data).await;

        let node = hearth::node::start(floorless(&data, 1)).await.unwrap();
        let filler = fill(&fs.0);
        // Submit jobs until one cannot be saved. sled may still have room in the segments it
        // already allocated, so the first ones can really be on disk; whatever was
        // acknowledged must survive, and the failure must be a clear error.
        let mut acknowledged = Vec::new();
        let mut failure = None;
        for seed in 0..500u64 {
            let spec = JobSpec::Pi {
                shards: 2,
                samples: 1_000,
                seed: 1_000 + seed,
            };
            let built = build(
                &node.context.store,
                &spec,
                node.household(),
                JobLimits::default(),
                1,
            );
            let submitted = match built {
                Err(e) => Err(e.to_string()),
                Ok(m) => node
                    .context
                    .coordinator
                    .submit(m)
                    .await
                    .map_err(|e| e.to_string()),
            };
            match submitted {
                Ok(id) => acknowledged.push(id),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let err = failure.expect("500 jobs were acknowledged on a full disk");
        eprintln!(
            "on a full disk: {} jobs acknowledged, then: {err}",
            acknowledged.len()
        );
        let clear =
            |err: &str| err.contains("space") || err.contains("quota") || err.contains("disk");
        assert!(clear(&err), "{err}");
        // Asked again a little later, the node still says why, whether its coordinator is
        // still there (and cannot write) or stopped when a flush failed (it keeps the cause:
        // a submitter was once told only "the node is shutting down").
        tokio::time::sleep(Duration::from_millis(300)).await;
        let spec = JobSpec::Pi {
            shards: 2,
            samples: 1_000,
            seed: 9_999,
        };
        let again = match build(
            &node.context.store,
            &spec,
            node.household(),
            JobLimits::default(),
            1,
        ) {
            Err(e) => e.to_string(),
            Ok(m) => match node.context.coordinator.submit(m).await {
                Ok(id) => panic!("acknowledged on a full disk: {id}"),
                Err(e) => e.to_string(),
            },
        };
        eprintln!("asked again: {again}");
        assert!(clear(&again), "{again}");
        node.shutdown().await;

        // Restarting on the full disk does not blame another node, and does not open sled
        // (which, opened on a full disk, left a database it called corrupt once space returned).
        if let Err(e) = hearth::node::start(floorless(&data, 1)).await {
            let e = e.to_string();
            eprintln!("start on a full disk: {e}");
            assert!(!e.contains("another hearth node"), "{e}");
        }
        // Space returns: the node starts, with everything it had acknowledged.
        std::fs::remove_file(filler).unwrap();
        // The stopped node's last database handles may still be closing (the lock is then
        // really held, and said so): retry for a few seconds.
        let mut tries = 0;
        let node = loop {
            match hearth::node::start(floorless(&data, 1)).await {
                Ok(node) => break node,
                Err(e) if tries < 50 && e.to_string().contains("another hearth node") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no restart once space returned: {e}"),
            }
        };
        // The node ran some of the jobs it acknowledged, so it holds more receipts now.
        assert!(node.context.ledger.counts().unwrap().0 >= u64::from(SHARDS));
        for id in &acknowledged {
            node.context
                .coordinator
                .view(*id)
                .await
                .expect("an acknowledged job was lost");
        }
        node.shutdown().await;
        drop(fs);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_lock_really_held_blames_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let node = hearth::node::start(loopback_options(&data, None, 1).unwrap())
        .await
        .unwrap();
    let Err(second) = hearth::node::start(loopback_options(&data, None, 1).unwrap()).await else {
        panic!("two nodes started on one data directory");
    };
    assert!(
        second
            .to_string()
            .contains("another hearth node is running"),
        "{second}"
    );
    node.shutdown().await;
    // Made unreadable (not locked): the error names the database, not another node.
    std::fs::write(data.join("db").join("conf"), b"\xff\xfe not a sled config").unwrap();
    let Err(e) = hearth::node::start(loopback_options(&data, None, 1).unwrap()).await else {
        panic!("started on a garbled sled config");
    };
    assert!(!e.to_string().contains("another hearth node"), "{e}");
}

/// Holds `node`'s Receipts gate as `peer`'s answer being read would, for `how_long`; the
/// handle ends when it is let go.
fn hold_gate(
    node: &hearth::node::RunningNode,
    peer: libp2p::PeerId,
    how_long: Duration,
) -> tokio::task::JoinHandle<()> {
    let pass = node
        .context
        .receipts_gate
        .enter(peer, std::time::Instant::now())
        .unwrap_or_else(|_| panic!("the gate is open"));
    tokio::spawn(async move {
        tokio::time::sleep(how_long).await;
        drop(pass);
    })
}

/// Issue 16, item 3: receipts a worker lost come back from the coordinator that countersigned
/// them. The coordinator keeps every receipt it made; `hearth doctor --repair --from ADDR`
/// asks it for this household's, checks each one and stores those missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn doctor_restores_lost_receipts_from_their_coordinator() {
    // More than one page of `MAX_RECEIPTS_PER_ANSWER`: the coordinator answers from a cursor.
    const RESTORED: u32 = hearth::model::wire::MAX_RECEIPTS_PER_ANSWER as u32 + 3;
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let (cdir, wdir) = (dir.path().join("coordinator"), dir.path().join("worker"));
        let coordinator = hearth::node::start(loopback_options(&cdir, None, 1).unwrap())
            .await
            .unwrap();
        let addr = listen_addr(&coordinator).await.unwrap();
        let worker = hearth::node::start(loopback_options(&wdir, Some(addr.clone()), 1).unwrap())
            .await
            .unwrap();
        let household = worker.household();
        let worker_peer = worker.peer_id();
        // Replication 2 with two households: both run every shard, so the worker earns one
        // receipt per shard.
        let spec = JobSpec::Pi {
            shards: RESTORED,
            samples: 20_000,
            seed: 9,
        };
        let manifest = build(
            &coordinator.context.store,
            &spec,
            coordinator.household(),
            JobLimits::default(),
            2,
        )
        .unwrap();
        coordinator
            .context
            .coordinator
            .submit(manifest)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(150);
        let held = loop {
            let held = worker.context.ledger.list(Some(&household)).unwrap();
            if held.len() == RESTORED as usize {
                break held;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the worker holds {} receipts",
                held.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        worker.shutdown().await;

        // The worker's database is gone; its key and its checkpoint are left.
        std::fs::remove_dir_all(wdir.join("db")).unwrap();
        let out = hearth(&wdir, &["doctor"]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("lost data"), "{}", text(&out));
        // A coordinator address without /p2p/ cannot be authenticated: refused.
        let bare = addr
            .iter()
            .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            .collect::<libp2p::Multiaddr>()
            .to_string();
        let out = hearth(&wdir, &["doctor", "--repair", "--from", &bare]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("/p2p/"), "{}", text(&out));
        // Refused before anything was repaired: the loss is still there to be repaired.
        // (Failed before: the local repair ran first, accepted the loss and wrote a new
        // checkpoint, so the doctor then found "no damage" with 13 receipts gone.)
        let out = hearth(&wdir, &["doctor"]);
        assert!(text(&out).contains("lost data"), "{}", text(&out));

        // While an earlier answer to this household is still being read, the coordinator
        // says it is busy (one answer per peer at once: `integrity::ReceiptsGate`); the repair
        // asks the same page again after the wait the answer names, and gets everything.
        let release = hold_gate(&coordinator, worker_peer, Duration::from_millis(1_500));
        let out = hearth(&wdir, &["doctor", "--repair", "--from", &addr.to_string()]);
        release.await.unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains(&format!(
                "{RESTORED} receipts for this household, {RESTORED} of them missing here and restored"
            )),
            "{}",
            text(&out)
        );
        // What the machine could not repair by itself names the way to fetch it back.
        // (Said before that fetching receipts from peers was not implemented.)
        assert!(!text(&out).contains("not implemented"), "{}", text(&out));
        assert!(
            text(&out).contains("`hearth doctor --repair --from"),
            "{}",
            text(&out)
        );
        assert!(
            text(&out).contains("busy answering other requests"),
            "{}",
            text(&out)
        );
        let out = hearth(&wdir, &["doctor"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("no damage found"), "{}", text(&out));

        // A household with no receipts at this coordinator is answered at once, whoever holds
        // the gate: the ledger's totals say it has none, so there is nothing to read and no
        // turn to take. Identities cost nothing, so without this fresh ones by the hundred
        // could each take a turn before an honest repair. (Failed before: the stranger was
        // told busy until the pass below was let go.)
        let stranger = dir.path().join("stranger");
        let out = hearth(&stranger, &["init"]);
        assert!(out.status.success(), "{}", text(&out));
        let release = hold_gate(&coordinator, worker_peer, Duration::from_millis(3_000));
        let out = hearth(
            &stranger,
            &["doctor", "--repair", "--from", &addr.to_string()],
        );
        release.await.unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("0 receipts for this household"),
            "{}",
            text(&out)
        );
        assert!(
            !text(&out).contains("busy answering other requests"),
            "{}",
            text(&out)
        );

        // Lost again, while another peer asks for its receipts again the moment each answer
        // is read (here its requests are passes taken at the gate every answer goes through,
        // each held 300 ms as a long ledger's page would be). The gate takes turns in the
        // order peers were told busy, so the repair, which asks every 500 ms, still gets
        // every page. (Failed before: the greedy peer found the gate free every time, and
        // the repair gave up after 120 busy answers.)
        std::fs::remove_dir_all(wdir.join("db")).unwrap();
        let gate = coordinator.context.receipts_gate.clone();
        let greedy = tokio::spawn(async move {
            let peer = libp2p::PeerId::random();
            loop {
                match gate.enter(peer, std::time::Instant::now()) {
                    Ok(pass) => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        drop(pass);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        let out = hearth(&wdir, &["doctor", "--repair", "--from", &addr.to_string()]);
        greedy.abort();
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains(&format!(
                "{RESTORED} receipts for this household, {RESTORED} of them missing here and restored"
            )),
            "{}",
            text(&out)
        );
        // The same receipts, byte for byte, and the worker starts.
        let worker = hearth::node::start(loopback_options(&wdir, Some(addr), 1).unwrap())
            .await
            .unwrap();
        assert_eq!(worker.context.ledger.list(Some(&household)).unwrap(), held);
        worker.shutdown().await;
        coordinator.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// A node that shut down lets go of its database before `shutdown` returns, so the same data
/// directory starts again at once in the same process. (`tests/evidence_nodes.rs` once failed
/// restarting a radiator with "could not acquire lock": a stopped service's work on the
/// blocking pool, such as a shard re-run, cannot be aborted and still held the database.)
/// Here a blocking task holding the node's store stands for that work. (Failed before the fix:
/// the restart found the database locked.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_shut_down_starts_again_at_once_on_the_same_directory() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        node_with_history(dir.path()).await;
        for again in 0..3 {
            let node = hearth::node::start(loopback_options(dir.path(), None, 2).unwrap())
                .await
                .unwrap_or_else(|e| panic!("restart {again} at once after shutdown: {e}"));
            let store = node.context.store.clone();
            let work = tokio::task::spawn_blocking(move || {
                std::thread::sleep(Duration::from_millis(500));
                store.list().map(|l| l.len())
            });
            node.shutdown().await;
            // Started at once, with no retry.
            let node = hearth::node::start(loopback_options(dir.path(), None, 2).unwrap())
                .await
                .unwrap_or_else(|e| panic!("restart {again} at once after shutdown: {e}"));
            assert!(work.await.unwrap().is_ok());
            node.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// A node asked to stop stops cleanly: no service reports a failure. (The router read the
/// network's closed event channel, which the shutdown closes, as a failure whenever it saw it
/// before the shutdown signal, about every other time; the demo ended with "service failed:
/// the network's event channel closed". Ten shutdowns all passed by chance one time in 1 024.)
// One thread: the network task closes its channel before the router runs again, the order
// in which the race was lost (with four worker threads it never showed here).
#[tokio::test(flavor = "current_thread")]
async fn a_node_shut_down_reports_no_failed_service() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..10 {
            let node = hearth::node::start(loopback_options(dir.path(), None, 1).unwrap())
                .await
                .unwrap();
            let failed = node.shutdown().await;
            assert!(failed.is_empty(), "shutdown {round}: {failed:?}");
        }
    })
    .await
    .expect("test timed out");
}

/// A client that opened the local API and stopped half-way through a request (a stuck script,
/// a proxy, a browser tab frozen mid-request) does not keep the node from stopping, nor its
/// database held: its connection is cut once the API's drain wait has passed, and the node
/// starts again at once on the same directory. (Hung before: the API's graceful shutdown
/// waited for that request to end, which it never did.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_api_request_does_not_hold_the_node_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let node = hearth::node::start(loopback_options(dir.path(), None, 1).unwrap())
        .await
        .unwrap();
    let mut socket = tokio::net::TcpStream::connect(node.api_addr).await.unwrap();
    // The request line and one header, never the blank line that ends the head.
    socket
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failed = tokio::time::timeout(Duration::from_secs(60), node.shutdown())
        .await
        .expect("the node's shutdown waited on the half-sent request");
    assert!(failed.is_empty(), "{failed:?}");
    // The node closed the connection (end of stream or reset, not silence).
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
        .await
        .expect("the half-sent request's connection is still open");
    assert!(!matches!(read, Ok(n) if n > 0 && !buf[..n].starts_with(b"HTTP/1.1 ")));
    let node = hearth::node::start(loopback_options(dir.path(), None, 1).unwrap())
        .await
        .expect("the database is still held after shutdown");
    node.shutdown().await;
}

/// What the radiators of [`the_disk_filling_under_load_loses_no_acknowledged_lease_or_claim`]
/// were told: `(shard, worker, nonce)` of every lease granted and every claim accepted, and
/// the first answer that was neither.
#[derive(Default)]
struct Told {
    leases: Vec<(u32, hearth::identity::PublicKey, [u8; 16])>,
    claims: Vec<(u32, hearth::identity::PublicKey, [u8; 16])>,
    refusals: Vec<String>,
}

/// One shard loop of an in-process radiator, as the coordinator bench runs them: lease,
/// claim at once, again, recording every acknowledgement, until an answer is neither a
/// lease, an accepted claim nor "nothing free now".
async fn shard_loop(
    node: std::sync::Arc<RunningNode>,
    worker: Identity,
    manifest: std::sync::Arc<hearth::model::JobManifest>,
    output: blake3::Hash,
    told: std::sync::Arc<std::sync::Mutex<Told>>,
) {
    use hearth::model::wire::{DenyReason, Request, Response, PROTOCOL_VERSION};
    let job = manifest.id();
    let coordinator = node.context.coordinator.clone();
    loop {
        let request = Request::Lease {
            job,
            protocol: PROTOCOL_VERSION,
            demand_permille: 500,
        };
        let lease = match coordinator.control(worker.peer_id(), request).await {
            Response::Leased(lease) => lease,
            Response::Denied {
                reason: DenyReason::NothingFree,
                ..
            } => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            other => {
                told.lock().unwrap().refusals.push(format!("{other:?}"));
                return;
            }
        };
        told.lock()
            .unwrap()
            .leases
            .push((lease.shard, worker.public(), lease.nonce));
        let claim = trivial_claim(&manifest, &lease, output, &worker);
        match coordinator
            .control(worker.peer_id(), Request::Claim(claim))
            .await
        {
            Response::ClaimAccepted { .. } => {
                told.lock()
                    .unwrap()
                    .claims
                    .push((lease.shard, worker.public(), lease.nonce));
            }
            other => {
                told.lock().unwrap().refusals.push(format!("{other:?}"));
                return;
            }
        }
    }
}

/// A node on `fs` (a bootstrap node: its own worker takes no shards, every lease goes to the
/// shard loops) with a job of `shards` trivial shards submitted, and what the loops need.
struct Loaded {
    node: std::sync::Arc<RunningNode>,
    data: PathBuf,
    manifest: std::sync::Arc<hearth::model::JobManifest>,
    output: blake3::Hash,
    told: std::sync::Arc<std::sync::Mutex<Told>>,
}

impl Loaded {
    async fn start(fs: &Tmpfs, shards: usize) -> Loaded {
        let data = fs.0.join("node");
        let mut opts = floorless(&data, 1);
        opts.config.node.role = hearth::config::Role::Bootstrap;
        let node = std::sync::Arc::new(hearth::node::start(opts).await.unwrap());
        let store = &node.context.store;
        let input = store.put_bytes(b"a trivial input").unwrap();
        let manifest = std::sync::Arc::new(hearth::model::JobManifest {
            module: store.put_bytes(&support::trivial_module()).unwrap(),
            inputs: vec![input; shards],
            limits: JobLimits::default(),
            replication: 2,
            assembly: hearth::model::Assembly::Concat,
            submitter: node.household(),
            created_ms: hearth::model::now_ms(),
        });
        let output = store.put_bytes(b"a trivial output").unwrap();
        node.context
            .coordinator
            .submit((*manifest).clone())
            .await
            .unwrap();
        Loaded {
            node,
            data,
            manifest,
            output,
            told: Default::default(),
        }
    }

    /// `radiators` × 4 shard loops, each ending at its first refusal.
    fn loops(&self, radiators: usize) -> Vec<tokio::task::JoinHandle<()>> {
        let mut loops = Vec::new();
        for _ in 0..radiators {
            let worker = Identity::generate();
            for _ in 0..4 {
                loops.push(tokio::spawn(shard_loop(
                    self.node.clone(),
                    worker.clone(),
                    self.manifest.clone(),
                    self.output,
                    self.told.clone(),
                )));
            }
        }
        loops
    }

    /// Stops the node; returns what the loops were told and the services that failed, then
    /// checks that every lease and claim acknowledged is in the database as a restart reads
    /// it (`filler` removed first: space returns).
    async fn stop_and_check(self, filler: PathBuf, scratch: &Path) -> (Told, Vec<String>) {
        let job = self.manifest.id();
        let node = std::sync::Arc::try_unwrap(self.node)
            .ok()
            .expect("the node is still shared");
        let failed = node.shutdown().await;
        let told = std::sync::Arc::try_unwrap(self.told)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap();
        eprintln!(
            "acknowledged {} leases and {} claims; first refusal: {:?}; failed: {failed:?}",
            told.leases.len(),
            told.claims.len(),
            told.refusals.first()
        );
        std::fs::remove_file(filler).unwrap();
        // A database whose flush sled never finished (`kv::gave_up`) stays open in this
        // process; what a restart reads is what is on disk.
        let mut db_dir = self.data.join("db");
        if failed.iter().any(|f| f.starts_with("final flush:")) {
            let copy = scratch.join("copy");
            copy_dir(&db_dir, &copy);
            db_dir = copy;
        }
        let db = sled::open(db_dir).unwrap();
        let (jobs, _) = Persist::open(&db).unwrap().load().unwrap();
        let book = &jobs.iter().find(|(id, _)| *id == job).expect("the job").1;
        for (shard, worker, nonce) in &told.claims {
            let claims = &book.shards[*shard as usize].claims;
            assert!(
                claims
                    .iter()
                    .any(|c| c.record.worker == *worker && c.record.nonce == *nonce),
                "an accepted claim on shard {shard} is not in the database"
            );
        }
        for (shard, worker, nonce) in &told.leases {
            let s = &book.shards[*shard as usize];
            let held = s
                .leases
                .iter()
                .any(|l| l.worker == *worker && l.nonce == *nonce)
                || s.claims.iter().any(|c| c.record.nonce == *nonce);
            assert!(
                held,
                "a granted lease on shard {shard} is not in the database"
            );
        }
        (told, failed)
    }
}

/// Rule 16 under load: the coordinator answers leases and claims in groups, one flush per
/// group. When the disk fills while many radiators lease and claim, every lease and claim
/// it acknowledged is in its database afterwards, and those it could not save were refused
/// with a reason. Real sled on a real full filesystem (tmpfs), real signatures.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_disk_filling_under_load_loses_no_acknowledged_lease_or_claim() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let Some(fs) = Tmpfs::mount(&dir.path().join("fs"), 48) else {
            return;
        };
        let loaded = Loaded::start(&fs, 20_000).await;
        let loops = loaded.loops(4);
        // The disk fills while claims flow.
        while loaded.told.lock().unwrap().claims.len() < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let root = fs.0.clone();
        let filler = tokio::task::spawn_blocking(move || fill(&root))
            .await
            .unwrap();
        for l in loops {
            l.await.unwrap();
        }
        let (told, _) = loaded.stop_and_check(filler, dir.path()).await;
        // And what it could not save, it refused, saying why: each refusal, including those
        // of requests that reached the coordinator as it stopped on the full disk.
        assert_eq!(told.refusals.len(), 16, "every loop ends refused");
        assert!(
            told.refusals
                .iter()
                .all(|r| r.contains("space") || r.contains("disk") || r.contains("quota")),
            "a refusal does not say the disk is full: {:?}",
            told.refusals
        );
    })
    .await
    .expect("test timed out");
}

/// The same with the database wedged as the disk fills: a blob of 200 KiB stored when less
/// room is left (a radiator keeping a fetched input, with its disk floor off: the next test
/// shows the floor refusing that blob) is too large for sled's log buffer, and
/// its failed write usually leaves every later flush parked inside sled
/// (`a_flush_sled_never_finishes_fails_instead_of_hanging`). The coordinator gives its flush
/// up at `kv::FLUSH_DEADLINE`, refuses what waited for it saying why, and the node stops
/// naming the database; nothing acknowledged before is lost. Hung before (found 2026-12-04 in
/// CI, on the test above: the coordinator, then the node's shutdown, waited forever).
/// Whether sled parks the flush or reports the full disk at once is decided by timing inside
/// sled (CI saw the second on 2026-12-05): either way the node must stop, say why and lose
/// nothing, so the test takes either answer and prints which it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_wedged_as_the_disk_fills_stops_the_node_and_loses_nothing() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let Some(fs) = Tmpfs::mount(&dir.path().join("fs"), 48) else {
            return;
        };
        let loaded = Loaded::start(&fs, 2_000).await;
        let first = loaded.loops(1);
        while loaded.told.lock().unwrap().claims.len() < 50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for l in first {
            l.abort();
        }
        // Full, but for 128 KiB: room for the coordinator's next writes, not for the blob.
        let root = fs.0.clone();
        let filler = tokio::task::spawn_blocking(move || fill_leaving(&root, 128 * 1024))
            .await
            .unwrap();
        let store = &loaded.node.context.store;
        assert!(store.put_bytes(&vec![9u8; 200 * 1024]).is_err(), "no room");
        let acknowledged = loaded.told.lock().unwrap().claims.len();
        for l in loaded.loops(1) {
            l.await.unwrap();
        }
        let (told, failed) = loaded.stop_and_check(filler, dir.path()).await;
        let wedged = failed
            .iter()
            .any(|f| f.starts_with("final flush:") && f.contains("did not confirm"));
        eprintln!(
            "sled {}",
            if wedged {
                "parked the flush"
            } else {
                "reported the full disk"
            }
        );
        assert!(
            wedged
                || failed
                    .iter()
                    .any(|f| f.contains("database") && f.contains("space")),
            "the node did not say its database stopped: {failed:?}"
        );
        // Parked, sled confirms nothing more; reporting the full disk, it may still have
        // saved a few claims in room it held, and `stop_and_check` found those on disk.
        if wedged {
            assert_eq!(
                told.claims.len(),
                acknowledged,
                "nothing acknowledged after the wedge"
            );
        }
        let why = if wedged { "did not confirm" } else { "space" };
        assert!(
            told.refusals.iter().any(|r| r.contains(why)),
            "no refusal says why: {:?}",
            told.refusals
        );
    })
    .await
    .expect("test timed out");
}

/// A radiator on a 96 MiB tmpfs keeping 32 MiB free (`[limits] disk_free_mib`), the disk then
/// filled by another program (a filler file) but for 40 MiB: the mount, the data directory,
/// the node and the filler. `None` where no tmpfs can be mounted.
async fn near_its_floor(
    dir: &Path,
    slots: usize,
) -> Option<(Tmpfs, PathBuf, RunningNode, PathBuf)> {
    let fs = Tmpfs::mount(&dir.join("fs"), 96)?;
    let data = fs.0.join("node");
    let mut opts = loopback_options(&data, None, slots).unwrap();
    opts.config.limits.disk_free_mib = 32;
    let node = hearth::node::start(opts).await.unwrap();
    let root = fs.0.clone();
    let filler = tokio::task::spawn_blocking(move || fill_leaving(&root, 40 << 20))
        .await
        .unwrap();
    Some((fs, data, node, filler))
}

/// A radiator keeps `[limits] disk_free_mib` free on its disk. With the disk nearly full (by
/// another program: here a filler file), a blob whose bytes would leave less than the floor is
/// refused before any byte of it is written, saying why, a smaller one is stored, and the node
/// goes on running a job and recording its receipts in the room kept. Without the floor the
/// large blob is stored and the room is gone (the test fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_radiator_keeps_its_disk_floor_free_and_goes_on_recording() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let Some((_fs, data, node, filler)) = near_its_floor(dir.path(), 2).await else {
            return;
        };
        let store = &node.context.store;
        let free = hearth::store::free_bytes(&data).unwrap();
        let refused = store
            .put_bytes(&vec![3u8; 16 << 20])
            .expect_err("a blob that would leave less than the floor was stored");
        eprintln!("{free} bytes free; refused: {refused}");
        assert!(
            matches!(refused, hearth::store::StoreError::DiskLow { floor, len, .. }
                if floor == 32 << 20 && len == 16 << 20),
            "{refused:?}"
        );
        assert!(
            refused.to_string().contains("keeps free on its disk"),
            "{refused}"
        );
        let after = hearth::store::free_bytes(&data).unwrap();
        assert!(
            after + (1 << 20) >= free,
            "the refused blob took {} bytes",
            free - after
        );
        store
            .put_bytes(&vec![4u8; 1 << 20])
            .expect("a blob that leaves the floor free");
        // The node goes on: a job of its own, run, verified and credited in the room kept.
        let spec = JobSpec::Pi {
            shards: SHARDS,
            samples: 20_000,
            seed: 11,
        };
        let manifest = build(store, &spec, node.household(), JobLimits::default(), 1).unwrap();
        let id = node.context.coordinator.submit(manifest).await.unwrap();
        wait_for(&node, id).await;
        node.shutdown().await;
        std::fs::remove_file(filler).unwrap();
    })
    .await
    .expect("test timed out");
}

/// A shard whose output would leave less than the radiator's disk floor is not kept: the store
/// refuses the output before writing a byte of it, and the radiator gives the job back, so the
/// submitter reads why (`no room here for the job's data`, naming the floor) instead of a lease
/// running out in silence; the disk keeps its room. The write of a fetched blob meets the same
/// floor in `a_radiator_keeps_its_disk_floor_free_and_goes_on_recording`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_output_that_would_break_the_disk_floor_is_given_back_saying_why() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let Some((_fs, data, node, filler)) = near_its_floor(dir.path(), 1).await else {
            return;
        };
        // A shard whose output is 16 MiB of its memory (20 MiB, 320 pages): with 40 MiB
        // free and 32 MiB kept, there is no room for it.
        let module = wat::parse_str(
            r#"(module (memory (export "memory") 320)
                (func (export "alloc") (param i32) (result i32) i32.const 1024)
                (func (export "run") (param i32 i32) (result i64)
                    i64.const 0x0000040001000000))"#,
        )
        .unwrap();
        let spec = JobSpec::Wasm {
            module,
            inputs: vec![b"in".to_vec()],
        };
        let store = &node.context.store;
        let free = hearth::store::free_bytes(&data).unwrap();
        let manifest = build(store, &spec, node.household(), JobLimits::default(), 1).unwrap();
        let id = node.context.coordinator.submit(manifest).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let waiting = loop {
            let s = node.context.coordinator.summary(id).await.unwrap();
            if let Some(w) = s.waiting.as_ref().filter(|w| w.contains("declined")) {
                break w.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the job was not given back: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        eprintln!("{waiting}");
        assert!(
            waiting.contains("no room here for the job's data")
                && waiting.contains("keeps free on its disk"),
            "{waiting}"
        );
        let after = hearth::store::free_bytes(&data).unwrap();
        assert!(
            after + (2 << 20) >= free,
            "the refused output took {} bytes",
            free.saturating_sub(after)
        );
        node.shutdown().await;
        std::fs::remove_file(filler).unwrap();
    })
    .await
    .expect("test timed out");
}
