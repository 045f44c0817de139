//! The `hearth` binary as a household uses it: real processes, real data directories, real
//! sockets. Daemons are killed when a test ends, even on failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hearth");

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

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = hearth(dir, args);
    assert!(
        out.status.success(),
        "hearth {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = hearth(dir, args);
    assert!(!out.status.success(), "hearth {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A daemon that is killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_node(dir: &Path, api: u16, extra: &[&str]) -> Daemon {
    let api = format!("127.0.0.1:{api}");
    Daemon(
        Command::new(BIN)
            .arg("--data-dir")
            .arg(dir)
            .args(["--api", &api, "node", "--no-mdns"])
            .args(extra)
            .env_remove("HEARTH_DATA_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hearth node"),
    )
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn init_id_and_key_file_mode() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("identity.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let id = ok(dir.path(), &["id"]);
    assert!(
        id.contains("household: ") && id.contains("peer id:   12D3KooW"),
        "{id}"
    );
    // Never overwritten without --force.
    let err = fails(dir.path(), &["init"]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(ok(dir.path(), &["id"]), id);
    ok(dir.path(), &["init", "--force"]);
    assert_ne!(ok(dir.path(), &["id"]), id);
    // The written config is valid and a broken one names its line.
    std::fs::write(dir.path().join("hearth.toml"), "[node]\nmdns = \"maybe\"\n").unwrap();
    let err = fails(dir.path(), &["--api", "127.0.0.1:1", "node"]);
    assert!(
        err.contains("hearth.toml") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn blobs_round_trip_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.bin");
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let hash = ok(dir.path(), &["blob", "put", file.to_str().unwrap()]);
    let hash = hash.trim();
    assert_eq!(hash, blake3::hash(&data).to_hex().as_str());
    let out = dir.path().join("out.bin");
    ok(
        dir.path(),
        &["blob", "get", hash, "-o", out.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert!(ok(dir.path(), &["blob", "ls"]).contains(hash));
    let err = fails(dir.path(), &["blob", "get", "nothex", "-o", "x"]);
    assert!(err.contains("not a blake3 hash"), "{err}");
}

/// `--module` takes WebAssembly text as well as binary; a file that is neither is refused with
/// a reason a person can act on, before anything is stored.
#[test]
fn a_module_may_be_webassembly_text_and_garbage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init"]);
    let input = dir.path().join("in.bin");
    std::fs::write(&input, b"input").unwrap();
    let text = dir.path().join("shard.wat");
    let wat = r#"(module (memory (export "memory") 1)
        (func (export "alloc") (param i32) (result i32) i32.const 1024)
        (func (export "run") (param i32 i32) (result i64) i64.const 0))"#;
    std::fs::write(&text, wat).unwrap();
    let binary = blake3::hash(&wat::parse_str(wat).unwrap())
        .to_hex()
        .to_string();
    let run = |module: &Path| {
        let (module, input) = (module.to_str().unwrap(), input.to_str().unwrap());
        hearth(
            dir.path(),
            &["job", "new", "wasm", "--module", module, "--input", input],
        )
    };
    let built = run(&text);
    assert!(built.status.success(), "{built:?}");
    let out = String::from_utf8(built.stdout).unwrap();
    assert_eq!(out.lines().last().unwrap().len(), 64, "{out}");
    // The job's module is the text compiled, not the text.
    let said = String::from_utf8(built.stderr).unwrap();
    assert!(said.contains(&format!("module {binary}")), "{said}");
    let garbage = dir.path().join("notes.txt");
    std::fs::write(&garbage, b"not a module").unwrap();
    let refused = run(&garbage);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("notes.txt is neither a WebAssembly binary nor WebAssembly text"),
        "{err}"
    );
}

/// A household without receipts is told so, not shown an empty table.
#[test]
fn no_receipts_yet_is_said_in_words() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init"]);
    // No node answers on this port: the command reads the data directory's own ledger.
    let api = format!("http://127.0.0.1:{}", free_port());
    let out = ok(dir.path(), &["--api", &api, "receipts"]);
    assert!(out.starts_with("no receipts yet"), "{out}");
}

/// An error says each of its causes once: an error whose message already quotes its cause
/// is not followed by that cause again.
#[test]
fn an_error_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.bin");
    let err = fails(dir.path(), &["blob", "put", missing.to_str().unwrap()]);
    assert!(err.contains("missing.bin"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // A data directory that cannot be created: the key file's error, once.
    let inside_a_file = dir.path().join("missing.bin").join("data");
    std::fs::write(dir.path().join("missing.bin"), b"a file, not a directory").unwrap();
    let err = fails(&inside_a_file, &["init"]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("(os error").count(), 1, "{err}");
}

#[test]
fn run_local_renders_a_png_of_the_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init"]);
    let out = ok(
        dir.path(),
        &[
            "job",
            "new",
            "mandelbrot",
            "--width",
            "300",
            "--height",
            "200",
            "--tile",
            "128",
        ],
    );
    let job = out.lines().last().unwrap().trim().to_string();
    assert_eq!(job.len(), 64);
    let png = dir.path().join("image.png");
    let listing = ok(
        dir.path(),
        &[
            "run-local",
            &job,
            "-o",
            png.to_str().unwrap(),
            "--threads",
            "2",
        ],
    );
    assert_eq!(
        listing.lines().filter(|l| l.starts_with("shard")).count(),
        6
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let reader = decoder.read_info().unwrap();
    assert_eq!((reader.info().width, reader.info().height), (300, 200));
    // Any module: a WASI command built from C, one shard per input, outputs concatenated.
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wasi/upper.wasm");
    let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    std::fs::write(&a, "warm ").unwrap();
    std::fs::write(&b, "home").unwrap();
    let out = ok(
        dir.path(),
        &[
            "job",
            "new",
            "wasm",
            "--module",
            module.to_str().unwrap(),
            "--input",
            a.to_str().unwrap(),
            "--input",
            b.to_str().unwrap(),
        ],
    );
    let job = out.lines().last().unwrap().trim().to_string();
    let result = dir.path().join("result.txt");
    ok(
        dir.path(),
        &["run-local", &job, "-o", result.to_str().unwrap()],
    );
    assert_eq!(std::fs::read_to_string(&result).unwrap(), "WARM HOME");
}

/// Three `hearth node` processes on loopback: node 0 listens on a fixed port and is the
/// others' bootstrap peer; mDNS is off. `toml[i]` is written as node i's hearth.toml.
struct Trio {
    dirs: Vec<PathBuf>,
    apis: Vec<u16>,
    listen0: String,
    /// The arguments nodes 1 and 2 were started with.
    others: Vec<String>,
    daemons: Vec<Daemon>,
}

impl Trio {
    fn start(root: &Path, toml: [&str; 3], first_args: &[&str]) -> Trio {
        let dirs: Vec<PathBuf> = (0..3).map(|i| root.join(format!("n{i}"))).collect();
        for (d, t) in dirs.iter().zip(toml) {
            ok(d, &["init"]);
            std::fs::write(d.join("hearth.toml"), t).unwrap();
        }
        let listen0 = format!("/ip4/127.0.0.1/tcp/{}", free_port());
        let boot = format!("{listen0}/p2p/{}", peer_id(&dirs[0]));
        let apis: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut first = vec!["--listen", listen0.as_str()];
        first.extend_from_slice(first_args);
        let others: Vec<String> = [
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            &boot,
            "--slots",
            "1",
        ]
        .map(String::from)
        .to_vec();
        let args: Vec<&str> = others.iter().map(String::as_str).collect();
        let daemons = vec![
            spawn_node(&dirs[0], apis[0], &first),
            spawn_node(&dirs[1], apis[1], &args),
            spawn_node(&dirs[2], apis[2], &args),
        ];
        let trio = Trio {
            dirs,
            apis,
            listen0,
            others,
            daemons,
        };
        for i in 0..3 {
            trio.wait_for_peers(i);
        }
        trio
    }

    fn wait_for_peers(&self, i: usize) {
        wait_for(
            &format!("node {i} to see both others"),
            Duration::from_secs(60),
            || {
                let out = hearth(&self.dirs[i], &["--api", &self.api(i), "peers", "--json"]);
                out.status.success()
                    && serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
                        .map(|v| v.len() >= 2)
                        .unwrap_or(false)
            },
        );
    }

    /// Stops radiator `i` (1 or 2) with SIGTERM, as a household's service manager does, runs
    /// `meanwhile` on its data directory, and starts it again with the same arguments.
    fn restart(&mut self, i: usize, meanwhile: impl FnOnce(&Path)) {
        assert!(i > 0, "the bootstrap node keeps running");
        let pid = self.daemons[i].0.id().to_string();
        let term = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(term.success());
        let status = self.daemons[i].0.wait().unwrap();
        assert!(status.success(), "node {i} ended with {status} on SIGTERM");
        meanwhile(&self.dirs[i]);
        let args: Vec<&str> = self.others.iter().map(String::as_str).collect();
        self.daemons[i] = spawn_node(&self.dirs[i], self.apis[i], &args);
        for n in 0..3 {
            self.wait_for_peers(n);
        }
    }

    fn api(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.apis[i])
    }
}

fn peer_id(dir: &Path) -> String {
    ok(dir, &["id"])
        .lines()
        .find_map(|l| l.strip_prefix("peer id:").map(|p| p.trim().to_string()))
        .unwrap()
}

/// A cold simulated room (the radiator wants work at once) or a warm one (it does none).
fn room(celsius: f64) -> String {
    format!("[jobs]\nlease_secs = 5\n[heat]\nperiod_secs = 1\n[heat.simulated]\ninitial_celsius = {celsius}\n")
}

#[test]
fn three_nodes_started_by_hand_see_each_other_and_run_a_job() {
    let root = tempfile::tempdir().unwrap();
    let (cold, warm) = (room(12.0), room(24.0));
    let trio = Trio::start(root.path(), [&warm, &cold, &cold], &["--role", "bootstrap"]);
    let dirs = &trio.dirs;
    let api = |i: usize| trio.api(i);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&dirs[0], &["--api", &api(0), "status", "--json"])).unwrap();
    assert_eq!(status["role"], "bootstrap");
    assert_eq!(status["peer_id"], peer_id(&dirs[0]));
    assert!(status["work_records"].is_u64(), "{status:#}");
    let text = ok(&dirs[0], &["--api", &api(0), "status"]);
    assert!(text.contains("work keys:"), "{text}");
    assert!(
        text.contains("MiB free; blobs that would leave less than 256 MiB are refused"),
        "{text}"
    );
    // The household asks for its addresses to be tested again (a port forwarded since): the
    // command says what it tests, waits for the verdicts, then prints the status.
    let out = hearth(&dirs[1], &["--api", &api(1), "status", "--recheck"]);
    let (said, text) = (
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("recheck:    testing ") && said.contains("address(es) again with AutoNAT"),
        "{said}"
    );
    assert!(text.contains("reachable:"), "{text}");

    // Submit from radiator 1; radiators 1 and 2 verify each other's shards.
    let png = root.path().join("net.png");
    let job = submit_mandelbrot(&dirs[1], &api(1), 256);
    // A job is named by the start of its id, as `hearth receipts` prints it; `job wait` says
    // how it ended even when no terminal shows its progress bar.
    let short = &job[..12];
    let waited = hearth(
        &dirs[1],
        &["--api", &api(1), "job", "wait", short, "--timeout", "90"],
    );
    let said = String::from_utf8_lossy(&waited.stderr);
    assert!(waited.status.success(), "{said}");
    assert!(
        said.contains(&format!("job {job} is done: 2 of 2 shards verified")),
        "{said}"
    );
    let status = ok(&dirs[1], &["--api", &api(1), "job", "status", short]);
    assert!(status.starts_with(&format!("job {job}: done")), "{status}");
    let unknown = if job.starts_with("00") { "ff" } else { "00" };
    let err = fails(&dirs[1], &["--api", &api(1), "job", "status", unknown]);
    assert!(
        err.contains(&format!(
            "no job this node coordinates has an id starting with {unknown}"
        )),
        "{err}"
    );
    ok(
        &dirs[1],
        &[
            "--api",
            &api(1),
            "job",
            "result",
            &job,
            "-o",
            png.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let jobs = ok(&dirs[1], &["--api", &api(1), "jobs"]);
    assert!(jobs.contains("done") && jobs.contains("2/2"), "{jobs}");
    // The bootstrap node, an auditor, heard radiator 1 commit to the job's receipts.
    let sub: serde_json::Value =
        serde_json::from_str(&ok(&dirs[1], &["--api", &api(1), "status", "--json"])).unwrap();
    let household = sub["household"].as_str().unwrap().to_string();
    wait_for(
        "the auditor to log a commitment",
        Duration::from_secs(20),
        || {
            let audit = ok(&dirs[0], &["--api", &api(0), "audit"]);
            audit
                .lines()
                .any(|l| l.starts_with(&household) && l.contains("receipts"))
        },
    );
    let err = fails(&dirs[1], &["--api", &api(1), "audit"]);
    assert!(err.contains("keeps no audit log"), "{err}");
    // Every receipt the submitter holds verifies offline, and a tampered export does not.
    let export = root.path().join("receipts.json");
    ok(
        &dirs[1],
        &[
            "--api",
            &api(1),
            "receipts",
            "export",
            "--json",
            "-o",
            export.to_str().unwrap(),
        ],
    );
    let verified = ok(&dirs[1], &["receipts", "verify", export.to_str().unwrap()]);
    assert!(
        verified.contains("4 receipts, 4 valid, 0 invalid"),
        "{verified}"
    );
    // The coordinator sealed them: each carries its inclusion proof (issue 14).
    assert!(
        verified.contains("4 receipts proven included in"),
        "{verified}"
    );
    python_verifies(&export, None, None, None, &verified);
    // With the bootstrap's log of the submitter's commitments (once it holds every one the
    // export's proofs name), all of the receipts sit in commitments an auditor logged, and
    // both verifiers say so.
    let named: std::collections::BTreeSet<String> = {
        let e: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
        e["inclusions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["commitment"].as_str().unwrap().to_string())
            .collect()
    };
    let audit = root.path().join("audit.json");
    wait_for(
        "the auditor to log every commitment of the export",
        Duration::from_secs(20),
        || {
            let log = ok(&dirs[0], &["--api", &api(0), "audit", &household, "--json"]);
            std::fs::write(&audit, &log).unwrap();
            let log: serde_json::Value = serde_json::from_str(&log).unwrap();
            let logged: std::collections::BTreeSet<String> = log["commitments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string())
                .collect();
            named.is_subset(&logged)
        },
    );
    let credit = python_verifies(&export, None, Some(&audit), None, &verified);
    for h in credit["households"].as_array().into_iter().flatten() {
        assert_eq!(h["audited"], h["committed"], "{credit:#}");
        assert!(h["audited"]["receipts"].as_u64() > Some(0), "{credit:#}");
    }
    revoking_the_submitters_key_voids_what_it_no_longer_vouches_for(&dirs[1], &export);
    // Whoever repays credit names the submitters it trusts (here the one that countersigned
    // everything, and a stranger); the credit they vouched for is what the receipts credit,
    // less what the submitter's own radiator earned from its own job.
    let household = ok(&dirs[1], &["id"])
        .lines()
        .find_map(|l| l.strip_prefix("household:").map(|k| k.trim().to_string()))
        .unwrap();
    let trusted = root.path().join("trusted.txt");
    std::fs::write(
        &trusted,
        format!(
            "# the submitter\n{}\n{}\n",
            household.to_uppercase(),
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let weigh = [
        "receipts",
        "verify",
        export.to_str().unwrap(),
        "--trusted",
        trusted.to_str().unwrap(),
    ];
    let weighed = ok(&dirs[1], &weigh);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    let (mut want_n, mut want_mj) = (0u64, 0u128);
    for r in doc["receipts"].as_array().unwrap() {
        if r["worker"] != r["submitter"] {
            want_n += 1;
            want_mj += r["credited_mj"].as_str().unwrap().parse::<u128>().unwrap();
        }
    }
    let (mut n, mut mj) = (0u64, 0u128);
    for line in weighed.lines() {
        if let Some(rest) =
            line.strip_prefix("  countersigned by trusted submitters, not self-dealt: ")
        {
            let words: Vec<&str> = rest.split(' ').collect();
            n += words[0].parse::<u64>().unwrap();
            mj += words[2].parse::<u128>().unwrap();
        }
    }
    assert_eq!((n, mj), (want_n, want_mj), "{weighed}");
    assert!(
        weighed.contains(&format!("countersigned by {household} (trusted): ")),
        "{weighed}"
    );
    python_verifies(&export, Some(&trusted), None, None, &weighed);
    // A list with a typo is refused with its line, not read as trusting nobody.
    std::fs::write(&trusted, format!("{}\n{}x\n", household, &household[1..])).unwrap();
    let err = fails(&dirs[1], &weigh);
    assert!(err.contains("line 2:"), "{err}");
    let text = std::fs::read_to_string(&export).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        doc["chain"].is_object(),
        "an unfiltered export carries the node's chain"
    );
    doc["receipts"][0]["energy_mj"] = serde_json::json!("999999999");
    let tampered = root.path().join("tampered.json");
    std::fs::write(&tampered, serde_json::to_string(&doc).unwrap()).unwrap();
    let err = fails(
        &dirs[1],
        &["receipts", "verify", tampered.to_str().unwrap()],
    );
    assert!(err.contains("1 of 4 receipts failed"), "{err}");
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let first = doc["receipts"][0].clone();
    doc["receipts"].as_array_mut().unwrap().push(first);
    std::fs::write(&tampered, serde_json::to_string(&doc).unwrap()).unwrap();
    let err = fails(
        &dirs[1],
        &["receipts", "verify", tampered.to_str().unwrap()],
    );
    assert!(err.contains("failed verification"), "{err}");
}

/// Submits a Mandelbrot job of `width` × 128 pixels (128-pixel tiles) from node `from` and
/// waits until it is done. Returns its id.
fn run_job(trio: &Trio, from: usize, width: u32) -> String {
    let (dir, api) = (&trio.dirs[from], trio.api(from));
    let job = submit_mandelbrot(dir, &api, width);
    let waited = hearth(
        dir,
        &["--api", &api, "job", "wait", &job, "--timeout", "90"],
    );
    assert!(
        waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    job
}

/// Submits a mandelbrot job `width` × 128 pixels in tiles of 128 through the node at `api`;
/// returns its id.
fn submit_mandelbrot(dir: &Path, api: &str, width: u32) -> String {
    let width = width.to_string();
    let out = ok(
        dir,
        &[
            "--api",
            api,
            "submit",
            "mandelbrot",
            "--width",
            &width,
            "--height",
            "128",
            "--tile",
            "128",
        ],
    );
    out.lines().last().unwrap().trim().to_string()
}

/// The receipts node `i`'s ledger holds crediting `worker`.
fn receipts_crediting(trio: &Trio, i: usize, worker: &str) -> usize {
    receipts_where(trio, i, "worker", worker)
}

/// The receipts node `i`'s ledger holds whose `field` (worker or submitter) is `key`.
fn receipts_where(trio: &Trio, i: usize, field: &str, key: &str) -> usize {
    let out = ok(
        &trio.dirs[i],
        &["--api", &trio.api(i), "receipts", "export", "--json"],
    );
    let export: serde_json::Value = serde_json::from_str(&out).unwrap();
    export["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[field] == key)
        .count()
}

/// Key rotation as a household does it (docs/receipts.md, "Rotating a key"): radiator 2 fixes
/// its next key, earns receipts, is stopped, rotates to the next key, and earns more under it
/// after its restart. Its export is one household under two keys on one hash chain: with its
/// key log both verifiers credit the household for all of it, line for line the same; without
/// the log the chain does not add up. A rotation to a key that was not committed to is refused.
#[test]
fn a_household_that_rotates_its_key_keeps_its_credit_as_one_household() {
    let root = tempfile::tempdir().unwrap();
    let (cold, warm) = (room(12.0), room(24.0));
    let mut trio = Trio::start(root.path(), [&warm, &cold, &cold], &["--role", "bootstrap"]);
    let key_of = |dir: &Path| {
        ok(dir, &["id"])
            .lines()
            .find_map(|l| l.strip_prefix("household:").map(|k| k.trim().to_string()))
            .unwrap()
    };
    let first = key_of(&trio.dirs[2]);
    let next = root.path().join("next.key");
    let after = root.path().join("after-next.key");
    ok(
        &trio.dirs[2],
        &["key", "prerotate", "--next", next.to_str().unwrap()],
    );
    run_job(&trio, 1, 256);
    wait_for(
        "radiator 2 to hold its receipts",
        Duration::from_secs(30),
        || receipts_crediting(&trio, 2, &first) == 2,
    );
    let stranger = root.path().join("stranger");
    ok(&stranger, &["init"]);
    trio.restart(2, |dir| {
        let wrong = stranger.join("identity.key");
        let err = fails(
            dir,
            &[
                "key",
                "rotate",
                "--next",
                wrong.to_str().unwrap(),
                "--new-next",
                after.to_str().unwrap(),
            ],
        );
        assert!(err.contains("not the next key"), "{err}");
        ok(
            dir,
            &[
                "key",
                "rotate",
                "--next",
                next.to_str().unwrap(),
                "--new-next",
                after.to_str().unwrap(),
            ],
        );
    });
    let id = ok(&trio.dirs[2], &["id"]);
    assert!(id.contains(&format!("household: {first}")), "{id}");
    let second = id
        .lines()
        .find_map(|l| {
            l.strip_prefix("key:")
                .map(|k| k.split_whitespace().next().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("{id}"));
    assert_ne!(second, first);
    run_job(&trio, 1, 384);
    wait_for(
        "radiator 2 to hold receipts under its new key",
        Duration::from_secs(30),
        || receipts_crediting(&trio, 2, &second) == 3,
    );
    let export = root.path().join("rotated.json");
    let log = root.path().join("keys.json");
    let dir = &trio.dirs[2];
    let api = trio.api(2);
    ok(
        dir,
        &[
            "--api",
            &api,
            "receipts",
            "export",
            "--json",
            "-o",
            export.to_str().unwrap(),
        ],
    );
    ok(dir, &["key", "log", "-o", log.to_str().unwrap()]);
    let verified = ok(
        dir,
        &[
            "receipts",
            "verify",
            export.to_str().unwrap(),
            "--keys",
            log.to_str().unwrap(),
        ],
    );
    assert!(verified.contains(" 0 invalid"), "{verified}");
    assert!(
        verified.contains(&format!("chain of household {first}: 5 entries")),
        "{verified}"
    );
    assert!(
        verified.contains(&format!("credit of household {first}: 5 receipts")),
        "{verified}"
    );
    assert!(
        verified.contains(&format!("  under key {first} (retired at ")),
        "{verified}"
    );
    assert!(
        verified.contains(&format!("  under key {second} (current): 3 receipts")),
        "{verified}"
    );
    python_verifies(&export, None, None, Some(&log), &verified);
    // The node published its key log; the bootstrap node, an auditor, logged both events
    // with when it first heard them, and its log alone gives a verifier the same chain.
    let audit = root.path().join("audit.json");
    wait_for(
        "the auditor to log the household's key events",
        Duration::from_secs(30),
        || {
            let out = ok(
                &trio.dirs[0],
                &["--api", &trio.api(0), "audit", &first, "--json"],
            );
            std::fs::write(&audit, &out).unwrap();
            let l: serde_json::Value = serde_json::from_str(&out).unwrap();
            l["key_events"].as_array().is_some_and(|e| e.len() == 2)
        },
    );
    let text = ok(&trio.dirs[0], &["--api", &trio.api(0), "audit", &first]);
    assert!(
        text.contains(&format!("KEY: rotated to key {second} (#1)")),
        "{text}"
    );
    let by_log = ok(
        dir,
        &[
            "receipts",
            "verify",
            export.to_str().unwrap(),
            "--audit",
            audit.to_str().unwrap(),
        ],
    );
    let under = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("  under key") || l.starts_with("credit of"))
            .map(String::from)
            .collect()
    };
    assert_eq!(under(&by_log), under(&verified), "{by_log}");
    if let Ok(out) = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/verify_receipt.py"))
        .arg(&export)
        .arg("--audit")
        .arg(&audit)
        .output()
    {
        if out.status.success() || std::env::var_os("HEARTH_REQUIRE_PYTHON").is_some() {
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(under(&text), under(&verified), "{text}");
        }
    }
    // Without the log the new key's receipts are not the household's, and its chain says so.
    let err = fails(dir, &["receipts", "verify", export.to_str().unwrap()]);
    assert!(err.contains("the chain failed"), "{err}");
    // The household's own figures count both keys.
    let status: serde_json::Value =
        serde_json::from_str(&ok(dir, &["--api", &api, "status", "--json"])).unwrap();
    assert_eq!(
        status["household_keys"],
        serde_json::json!([first, second]),
        "{status:#}"
    );
    let heat: serde_json::Value =
        serde_json::from_str(&ok(dir, &["--api", &api, "heat", "--json"])).unwrap();
    assert_eq!(heat["credited_receipts"], 5, "{heat:#}");
    // `hearth doctor --repair --from` asks the coordinator under each key the household still
    // holds (the retired one from retired-keys/), since a coordinator hands a peer only the
    // receipts crediting its PeerId's key.
    let coordinator: serde_json::Value = serde_json::from_str(&ok(
        &trio.dirs[1],
        &["--api", &trio.api(1), "status", "--json"],
    ))
    .unwrap();
    let from = format!(
        "{}/p2p/{}",
        coordinator["listen_addrs"][0].as_str().unwrap(),
        coordinator["peer_id"].as_str().unwrap()
    );
    // A thief who copied the old key runs a radiator with it: the coordinator heard the
    // household's rotation and leases it nothing, so a job of 4 shards, 8 replicas over three
    // cold radiators, credits the old key nothing more.
    let thief = root.path().join("thief");
    ok(&thief, &["init"]);
    std::fs::write(thief.join("hearth.toml"), room(12.0)).unwrap();
    std::fs::copy(
        trio.dirs[2].join(format!("retired-keys/{first}.key")),
        thief.join("identity.key"),
    )
    .unwrap();
    let args: Vec<&str> = trio.others.iter().map(String::as_str).collect();
    let thief_api = free_port();
    let _thief = spawn_node(&thief, thief_api, &args);
    wait_for(
        "the thief's radiator to join",
        Duration::from_secs(60),
        || {
            let out = hearth(
                &thief,
                &[
                    "--api",
                    &format!("127.0.0.1:{thief_api}"),
                    "peers",
                    "--json",
                ],
            );
            out.status.success()
                && serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
                    .is_ok_and(|v| v.len() >= 3)
        },
    );
    run_job(&trio, 1, 512);
    assert_eq!(receipts_crediting(&trio, 1, &first), 2);
    // Nor do the household's radiators work for the old key: a job the thief submits is not
    // done (its own radiator is one household, replication needs two), and neither radiator
    // holds a receipt the old key countersigned. Without the refusal both took it at once.
    let thief_api = format!("127.0.0.1:{thief_api}");
    let job = submit_mandelbrot(&thief, &thief_api, 256);
    let waited = hearth(
        &thief,
        &["--api", &thief_api, "job", "wait", &job, "--timeout", "20"],
    );
    assert!(
        !waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    for i in [1, 2] {
        assert_eq!(
            receipts_where(&trio, i, "submitter", &first),
            0,
            "radiator {i}"
        );
    }
    trio.restart(2, |dir| {
        let out = ok(dir, &["doctor", "--repair", "--from", &from]);
        let under_old = out
            .split(&format!("  under key {first}:\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            under_old.starts_with("  - coordinator ")
                && under_old.contains(": 2 receipts for this household, 0 of them missing here"),
            "{out}"
        );
        assert!(out.contains(&format!("  under key {second}:\n")), "{out}");
    });
}

/// `hearth key rotate` refuses while the node still coordinates a job under the current key
/// (workers take a receipt only from the key that countersigned it), changes nothing when it
/// refuses, and rotates with `--force`.
#[test]
fn a_rotation_waits_for_the_jobs_the_current_key_coordinates() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    ok(&dir, &["init"]);
    let household = ok(&dir, &["id"]);
    let (next, after) = (root.path().join("next.key"), root.path().join("after.key"));
    ok(
        &dir,
        &["key", "prerotate", "--next", next.to_str().unwrap()],
    );
    // A bootstrap node alone: no radiator takes the job's shards, so it stays running.
    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    let node = spawn_node(
        &dir,
        port,
        &["--listen", "/ip4/127.0.0.1/tcp/0", "--role", "bootstrap"],
    );
    wait_for("the node's API", Duration::from_secs(30), || {
        hearth(&dir, &["--api", &api, "status"]).status.success()
    });
    ok(&dir, &["--api", &api, "submit", "pi", "--shards", "2"]);
    drop(node);
    let rotate = |extra: &[&str]| {
        let mut args = vec![
            "key",
            "rotate",
            "--next",
            next.to_str().unwrap(),
            "--new-next",
            after.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let args = rotate(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = fails(&dir, &args);
    assert!(
        err.contains("still coordinates under its current key: 1 running jobs"),
        "{err}"
    );
    assert_eq!(
        ok(&dir, &["id"]),
        household,
        "a refused rotation changed the key"
    );
    assert_eq!(
        ok(&dir, &["key", "log"]).matches("\"seq\"").count(),
        1,
        "a refused rotation wrote an event"
    );
    assert!(!after.exists(), "a refused rotation wrote a next key");
    let args = rotate(&["--force"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = hearth(&dir, &args);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    // Rotated minutes after the next key was fixed: coordinators start the new key on
    // probation, and the household is told.
    assert!(said.contains("starts on probation with them"), "{said}");
    let id = ok(&dir, &["id"]);
    assert_ne!(id, household, "the key did not change");
    assert_eq!(ok(&dir, &["key", "log"]).matches("\"seq\"").count(), 2);
}

#[test]
fn coordinator_killed_with_sigkill_restarts_and_finishes_its_job() {
    let root = tempfile::tempdir().unwrap();
    // The coordinator's room is warm (it does no work); the two radiators' rooms are cold.
    let (cold, warm) = (room(12.0), room(24.0));
    let mut trio = Trio::start(root.path(), [&warm, &cold, &cold], &[]);
    let dirs = trio.dirs.clone();
    let apis = trio.apis.clone();
    let api = |i: usize| format!("127.0.0.1:{}", apis[i]);
    std::thread::sleep(Duration::from_secs(2));
    // Twelve shards of a few tens of milliseconds each, two replicas each.
    let out = ok(
        &dirs[0],
        &[
            "--api",
            &api(0),
            "submit",
            "pi",
            "--shards",
            "12",
            "--samples",
            "240000000",
        ],
    );
    let job = out.lines().last().unwrap().trim().to_string();
    let verified = |i: usize| -> Option<u64> {
        let out = hearth(
            &dirs[i],
            &["--api", &api(i), "job", "status", &job, "--json"],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["shards_verified"].as_u64()
    };
    wait_for("a first verified shard", Duration::from_secs(60), || {
        verified(0).is_some_and(|n| n >= 1)
    });
    let before = verified(0).unwrap();
    assert!(before < 12, "the job finished before the kill");
    // SIGKILL: no shutdown, no flush beyond what was acknowledged.
    let coordinator = &mut trio.daemons[0].0;
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    trio.daemons[0] = spawn_node(&dirs[0], trio.apis[0], &["--listen", &trio.listen0]);
    wait_for(
        "the restarted coordinator's API",
        Duration::from_secs(30),
        || {
            hearth(&dirs[0], &["--api", &api(0), "status"])
                .status
                .success()
        },
    );
    assert!(
        verified(0).unwrap() >= before,
        "verified shards were lost in the kill"
    );
    ok(
        &dirs[0],
        &["--api", &api(0), "job", "wait", &job, "--timeout", "120"],
    );
    let after = verified(0).unwrap();
    assert_eq!(after, 12);
    let result = root.path().join("pi.txt");
    ok(
        &dirs[0],
        &[
            "--api",
            &api(0),
            "job",
            "result",
            &job,
            "-o",
            result.to_str().unwrap(),
        ],
    );
    let estimate: f64 = std::fs::read_to_string(&result)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        (estimate - std::f64::consts::PI).abs() < 0.001,
        "{estimate}"
    );
    // Every shard verified before the kill is still verified: nothing acknowledged was lost,
    // and the coordinator's ledger holds two receipts per shard, none twice.
    let export = root.path().join("r.json");
    ok(
        &dirs[0],
        &[
            "--api",
            &api(0),
            "receipts",
            "export",
            "--json",
            "-o",
            export.to_str().unwrap(),
        ],
    );
    let verified_out = ok(&dirs[0], &["receipts", "verify", export.to_str().unwrap()]);
    assert!(
        verified_out.contains("24 receipts, 24 valid, 0 invalid"),
        "{verified_out}"
    );
    python_verifies(&export, None, None, None, &verified_out);
}

/// The independent verifier (`docs/verify_receipt.py`, written from `docs/receipts.md`)
/// checks a real export too, chain included, where Python with `blake3` is installed (CI
/// installs it; elsewhere the check says it was skipped), and prints the same credit, line
/// for line, as `hearth receipts verify` did (`hearth_out`), given the same `trusted` list.
/// Runs docs/verify_receipt.py on `export` (with the same list) and compares its credit lines
/// with `hearth_out`, what `hearth receipts verify` printed; then both tools with `--json`
/// (and `audit`, an auditor's log, when given), whose objects must be equal. Returns that
/// object (`Null` where Python is missing and not required).
/// The submitter's key was stolen: it revokes it (`hearth receipts revoke`), keeping its
/// commitments below the last one the export names. Both verifiers then refuse exactly the
/// receipts outside those, fail, and agree on what still counts (docs/receipts.md, "Revoking a
/// key"); the same statement signed by a stranger's key is refused before any verdict.
fn revoking_the_submitters_key_voids_what_it_no_longer_vouches_for(dir: &Path, export: &Path) {
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(export).unwrap()).unwrap();
    let total = e["receipts"].as_array().unwrap().len();
    let seqs: Vec<u64> = e["inclusions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["seq"].as_str().unwrap().parse::<u64>().unwrap())
        .collect();
    let keep = *seqs.iter().max().unwrap();
    let voided = total - seqs.iter().filter(|s| **s < keep).count();
    let statement = dir.join("revoked.json");
    let out = hearth(
        dir,
        &[
            "receipts",
            "revoke",
            "--keep",
            &keep.to_string(),
            "-o",
            statement.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("are vouched for") || said.contains("none of its commitments"),
        "{said}"
    );
    let verify = |mut cmd: Command, statement: &Path| -> Output {
        cmd.arg(export)
            .arg("--json")
            .arg("--revoked")
            .arg(statement)
            .output()
            .unwrap()
    };
    let hearth_verify = || {
        let mut cmd = Command::new(BIN);
        cmd.args(["receipts", "verify"]);
        cmd
    };
    let rs = verify(hearth_verify(), &statement);
    assert!(!rs.status.success(), "{rs:?}");
    let stderr = String::from_utf8_lossy(&rs.stderr);
    assert_eq!(stderr.matches(": REVOKED: ").count(), voided, "{stderr}");
    assert!(
        stderr.contains(&format!("vouching only for commitments below #{keep}")),
        "{stderr}"
    );
    let credit: serde_json::Value = serde_json::from_slice(&rs.stdout).unwrap();
    assert_eq!(credit["valid"].as_u64(), Some((total - voided) as u64));
    // A statement naming the submitter's key, signed by another: no verdict at all.
    let mut forged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&statement).unwrap()).unwrap();
    let stranger = dir.join("stranger");
    ok(&stranger, &["init"]);
    let theirs = stranger.join("theirs.json");
    ok(
        &stranger,
        &[
            "receipts",
            "revoke",
            "--keep",
            "0",
            "-o",
            theirs.to_str().unwrap(),
        ],
    );
    let theirs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&theirs).unwrap()).unwrap();
    let sig = &theirs["signed"].as_str().unwrap()[106..];
    let ours = forged["signed"].as_str().unwrap().to_string();
    forged["signed"] = format!("{}{sig}", &ours[..106]).into();
    let forged_file = dir.join("forged.json");
    std::fs::write(&forged_file, forged.to_string()).unwrap();
    let out = verify(hearth_verify(), &forged_file);
    assert!(!out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signature is not its key's"),
        "{out:?}"
    );
    // The independent verifier, from docs/receipts.md alone: the same refusals, the same credit.
    if Command::new("python3")
        .args(["-c", "import blake3"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/verify_receipt.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script);
        let py = verify(cmd, &statement);
        assert!(!py.status.success(), "{py:?}");
        let py_credit: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
        assert_eq!(py_credit, credit);
        let py_err = String::from_utf8_lossy(&py.stderr);
        assert_eq!(py_err.matches(": REVOKED: ").count(), voided, "{py_err}");
        let mut cmd = Command::new("python3");
        cmd.arg(&script);
        let py = verify(cmd, &forged_file);
        assert!(!py.status.success() && py.stdout.is_empty(), "{py:?}");
    } else {
        assert!(
            std::env::var_os("HEARTH_REQUIRE_PYTHON").is_none(),
            "HEARTH_REQUIRE_PYTHON is set but python3 cannot import blake3"
        );
    }
}

fn python_verifies(
    export: &Path,
    trusted: Option<&Path>,
    audit: Option<&Path>,
    keys: Option<&Path>,
    hearth_out: &str,
) -> serde_json::Value {
    let has_python = Command::new("python3")
        .args(["-c", "import blake3"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        // CI sets HEARTH_REQUIRE_PYTHON when it installed blake3: there, skipping is a failure.
        assert!(
            std::env::var_os("HEARTH_REQUIRE_PYTHON").is_none(),
            "HEARTH_REQUIRE_PYTHON is set but python3 cannot import blake3"
        );
        eprintln!(
            "python3 with blake3 not found: cross-check of {} skipped",
            export.display()
        );
        return serde_json::Value::Null;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/verify_receipt.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(export);
    if let Some(list) = trusted {
        cmd.arg("--trusted").arg(list);
    }
    if let Some(log) = keys {
        cmd.arg("--keys").arg(log);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify_receipt.py refused a hearth export:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 invalid"), "{stdout}");
    let credit = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("credit of household ") || l.starts_with("  "))
            .map(str::to_string)
            .collect()
    };
    assert!(!credit(hearth_out).is_empty(), "{hearth_out}");
    assert_eq!(credit(&stdout), credit(hearth_out), "python:\n{stdout}");
    // And as JSON (docs/receipts.md, "As JSON"): the same object from both, on stdout alone.
    let json = |mut cmd: Command| -> serde_json::Value {
        cmd.arg(export).arg("--json");
        if let Some(list) = trusted {
            cmd.arg("--trusted").arg(list);
        }
        if let Some(log) = audit {
            cmd.arg("--audit").arg(log);
        }
        if let Some(log) = keys {
            cmd.arg("--keys").arg(log);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {out:?}"))
    };
    let mut py = Command::new("python3");
    py.arg(&script);
    let mut rs = Command::new(BIN);
    rs.arg("--data-dir")
        .arg(export.with_extension("no-data-dir"))
        .args(["receipts", "verify"]);
    let (py, rs) = (json(py), json(rs));
    assert_eq!(py, rs);
    assert_eq!(py["format"], "hearth-credit/1");
    assert_eq!(py["valid"], py["receipts"], "{py:#}");
    py
}
