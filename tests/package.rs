//! The Debian package as a household installs it: `packaging/build-deb` packages the `hearth`
//! binary cargo built for the tests, `dpkg -i` installs it, `systemd-analyze` checks the unit,
//! the installed binary runs as the `hearth` user on /var/lib/hearth, and `dpkg --purge`
//! leaves the machine as it was.
//!
//! It changes the machine, so it runs only as root with dpkg present, and never where a
//! `hearth` package or user already exists; otherwise it prints why it skipped.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hearth");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const INSTALLED: [&str; 3] = [
    "/usr/bin/hearth",
    "/usr/lib/systemd/system/hearth.service",
    "/usr/lib/udev/rules.d/60-hearth-rapl.rules",
];

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env_remove("HEARTH_DATA_DIR")
        .env_remove("HEARTH_API_TOKEN")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why this machine cannot run the test, if it cannot.
fn skip_reason() -> Option<String> {
    let uid = run("id", &["-u"]);
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    for tool in ["dpkg", "dpkg-deb", "runuser", "adduser"] {
        if !have(tool) {
            return Some(format!("{tool} is missing"));
        }
    }
    if run("dpkg-query", &["-W", "-f=${Status}", "hearth"])
        .stdout
        .starts_with(b"install")
    {
        return Some("a hearth package is already installed here; not touching it".into());
    }
    if run("getent", &["passwd", "hearth"]).status.success() {
        return Some("a `hearth` user already exists here; not touching it".into());
    }
    None
}

/// Purges the package even when an assertion fails half way.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "hearth"]);
    }
}

/// A process started through runuser, stopped when dropped. SIGTERM, because runuser passes
/// it on to the node; SIGKILL would leave the node running as `hearth`.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = run("kill", &["-TERM", &self.0.id().to_string()]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn as_hearth(args: &[&str]) -> Output {
    let mut all = vec![
        "-u",
        "hearth",
        "--",
        "/usr/bin/hearth",
        "--data-dir",
        "/var/lib/hearth",
    ];
    all.extend_from_slice(args);
    run("runuser", &all)
}

/// Holds an exclusive lock so two test runs on one machine (two checkouts, two CI jobs) take
/// turns with dpkg and the `hearth` user; the kernel releases it if the test dies.
fn machine_lock() -> std::fs::File {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/lock/hearth-package-test.lock")
        .or_else(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(std::env::temp_dir().join("hearth-package-test.lock"))
        })
        .expect("lock file");
    // SAFETY: flock on a descriptor this function owns; blocks until the other run is done.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    file
}

#[test]
fn debian_package_installs_runs_as_hearth_and_purges_clean() {
    let uid = run("id", &["-u"]);
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        println!("SKIPPED debian package test: not root (it needs root and dpkg)");
        return;
    }
    let _lock = machine_lock();
    if let Some(why) = skip_reason() {
        println!("SKIPPED debian package test: {why} (it needs root, dpkg and a machine without hearth installed)");
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let deb = ok(
        &format!("{ROOT}/packaging/build-deb"),
        &[
            "--binary",
            BIN,
            "--out",
            out_dir.path().to_str().unwrap(),
            "--fast",
        ],
    );
    let deb = deb.trim();
    assert!(deb.ends_with(".deb") && Path::new(deb).exists(), "{deb}");
    let listing = ok("dpkg-deb", &["--contents", deb]);
    for f in INSTALLED {
        assert!(listing.contains(&format!(".{f}")), "{f} not in the package");
    }

    let installed = Installed;
    let out = ok("dpkg", &["-i", deb]);
    println!("{out}");
    for f in INSTALLED {
        assert!(Path::new(f).exists(), "{f} was not installed");
    }
    let passwd = ok("getent", &["passwd", "hearth"]);
    assert!(passwd.contains("/var/lib/hearth"), "{passwd}");
    // postinst made the household key, so hearth.toml can be edited before the first start.
    assert!(Path::new("/var/lib/hearth/identity.key").exists());
    assert!(Path::new("/var/lib/hearth/hearth.toml").exists());
    let owner = ok(
        "stat",
        &[
            "-c",
            "%U:%G %a",
            "/var/lib/hearth",
            "/var/lib/hearth/api.token",
        ],
    );
    assert_eq!(owner, "hearth:hearth 700\nhearth:hearth 600\n");

    if have("systemd-analyze") {
        ok(
            "systemd-analyze",
            &["verify", "/usr/lib/systemd/system/hearth.service"],
        );
        let security = run(
            "systemd-analyze",
            &[
                "security",
                "--offline=true",
                "/usr/lib/systemd/system/hearth.service",
            ],
        );
        let text = String::from_utf8_lossy(&security.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no exposure level in {text}"));
        println!("{line}");
        let score: f64 = line
            .split(':')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
        // docs/operations.md reports 1.1; anything above 2 means hardening was lost.
        assert!(score <= 2.0, "{line}");
    } else {
        println!("systemd-analyze is missing: unit verification SKIPPED (apt-get install systemd)");
    }

    // The installed binary, as the hearth user, on its data directory.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("127.0.0.1:{port}");
    let node = Daemon(
        Command::new("runuser")
            .args([
                "-u",
                "hearth",
                "--",
                "/usr/bin/hearth",
                "--data-dir",
                "/var/lib/hearth",
            ])
            .args([
                "--api",
                &api,
                "node",
                "--no-mdns",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let out = as_hearth(&["--api", &api, "status", "--json"]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "hearth status never answered: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let id = ok(
        "runuser",
        &[
            "-u",
            "hearth",
            "--",
            "/usr/bin/hearth",
            "--data-dir",
            "/var/lib/hearth",
            "id",
        ],
    );
    assert!(
        id.contains(status["household"].as_str().unwrap()),
        "{id} vs {status}"
    );
    // The node wrote its database as hearth, inside the data directory.
    let db = ok("find", &["/var/lib/hearth", "-not", "-user", "hearth"]);
    assert_eq!(db, "", "files not owned by hearth");
    drop(node);

    // Purged: nothing of it is left.
    drop(installed);
    for f in INSTALLED.iter().chain(&["/var/lib/hearth"]) {
        assert!(!Path::new(f).exists(), "{f} left behind by dpkg --purge");
    }
    assert!(!run("getent", &["passwd", "hearth"]).status.success());
    assert!(!run("getent", &["group", "hearth"]).status.success());
    assert!(!run("dpkg-query", &["-W", "hearth"]).status.success());
}
