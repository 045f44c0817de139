//! The dashboard in a real browser: Debian's headless chromium driven over WebDriver (plain
//! HTTP to `chromedriver`, no client crate). A real node runs in this process; the browser
//! gets in through the link `hearth dashboard` prints, sees the room temperature the API
//! reports, changes the setpoint on the page, and the node applies it. A screenshot is kept in
//! `$CARGO_TARGET_TMPDIR/dashboard.png`.
//!
//! Needs `chromium` and `chromium-driver` (Debian packages). Without them the test says it
//! skipped and passes, unless `HEARTH_REQUIRE_BROWSER=1` (CI sets it after installing them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth::demo::loopback_options;
use hearth::node;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_hearth");
const TIMEOUT: Duration = Duration::from_secs(120);
/// The W3C WebDriver element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/lib/chromium")]) {
        for name in names {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct WebDriver {
    http: reqwest::Client,
    base: String,
}

impl WebDriver {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("chromedriver answers");
        let status = resp.status();
        let v: Value = resp.json().await.expect("chromedriver sends JSON");
        assert!(status.is_success(), "WebDriver {path}: {status} {v}");
        v["value"].clone()
    }

    /// Click the element `css` selects.
    async fn click(&self, session: &str, css: &str) {
        let e = self.element(session, css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/session/{session}/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn element(&self, session: &str, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/session/{session}/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .expect("an element reference")
            .to_string()
    }

    async fn text(&self, session: &str, css: &str) -> String {
        let e = self.element(session, css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/session/{session}/element/{e}/text"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Polls the page until `css`'s text satisfies `ok`; returns it.
    async fn wait_text(&self, session: &str, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let t = self.text(session, css).await;
            if ok(&t) {
                return t;
            }
            assert!(Instant::now() < deadline, "{css} still shows {t:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Standard base64 (WebDriver screenshots), without a crate for 20 lines.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|&c| c != b'=').collect();
        let mut n = 0u32;
        for (i, &c) in data.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..data.len()]);
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `hearth dashboard`, as the household runs it.
fn dashboard_link(data_dir: &Path, api: &str) -> String {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--api", api, "dashboard"])
        .env_remove("HEARTH_DATA_DIR")
        .env_remove("HEARTH_API_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium_shows_the_room_and_sets_the_setpoint() {
    let required = std::env::var("HEARTH_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let (Some(driver), Some(chromium)) = (
        find_binary(&["chromedriver"]),
        find_binary(&["chromium", "chromium-browser"]),
    ) else {
        assert!(
            !required,
            "HEARTH_REQUIRE_BROWSER=1 but chromium or chromedriver is not installed"
        );
        eprintln!("browser test SKIPPED: install chromium and chromium-driver to run it");
        return;
    };
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        // A bootstrap node keeping the auditor's log, which the radiator asks every second
        // whether another node signs with its key.
        let audit_dir = tempfile::tempdir().unwrap();
        let mut opts = loopback_options(audit_dir.path(), None, 1).unwrap();
        opts.config.node.role = hearth::config::Role::Bootstrap;
        let auditor = node::start(opts).await.unwrap();
        let bootstrap = hearth::demo::listen_addr(&auditor).await.unwrap();
        let mut opts = loopback_options(dir.path(), Some(bootstrap), 2).unwrap();
        opts.numbering_check = Duration::from_secs(1);
        let node = node::start(opts).await.unwrap();
        let heat = node.context.heat.clone().unwrap();
        let api = node.api_addr.to_string();
        let link = tokio::task::spawn_blocking({
            let d = dir.path().to_path_buf();
            let api = api.clone();
            move || dashboard_link(&d, &api)
        })
        .await
        .unwrap();

        let port = free_port();
        let _driver = Killed(
            Command::new(&driver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
        let wd = WebDriver {
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = wd
                .http
                .get(format!("{}/status", wd.base))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // Debian's /usr/bin/chromium is a wrapper script; the browser binary sits beside it.
        let binary = ["/usr/lib/chromium/chromium"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or(chromium);
        let session = wd
            .call(
                reqwest::Method::POST,
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": binary,
                        "args": [
                            "--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--window-size=420,1400",
                            format!("--user-data-dir={}", profile.path().display()),
                        ],
                    },
                }}})),
            )
            .await;
        let sid = session["sessionId"].as_str().unwrap().to_string();

        // The one-time link signs the browser in and lands on the dashboard.
        wd.call(
            reqwest::Method::POST,
            &format!("/session/{sid}/url"),
            Some(json!({ "url": link })),
        )
        .await;
        let url = wd
            .call(reqwest::Method::GET, &format!("/session/{sid}/url"), None)
            .await;
        assert_eq!(url.as_str().unwrap(), format!("http://{api}/"));

        // The room temperature the API reports.
        let shown = wd.wait_text(&sid, "#room", |t| t.ends_with("°C")).await;
        let shown: f64 = shown.trim_end_matches("°C").trim().parse().unwrap();
        let actual = heat.status().room_celsius.unwrap();
        assert!(
            (shown - actual).abs() < 0.3,
            "page shows {shown} °C, the node reports {actual} °C"
        );
        let headline = wd.wait_text(&sid, "#headline", |t| t != "Loading…").await;
        assert!(
            ["Heating", "Wants heat", "Not heating"]
                .iter()
                .any(|p| headline.starts_with(p)),
            "{headline}"
        );
        // What its shards compute and the memory they hold, of the default 2 GiB budget.
        let shards = wd
            .wait_text(&sid, "#shards", |t| t.ends_with("MiB of memory"))
            .await;
        assert!(shards.contains(" of 2048 MiB of memory"), "{shards}");
        // The disk's free space, and the 256 MiB the store keeps free by default.
        let disk = wd
            .wait_text(&sid, "#disk", |t| t.contains("MiB free"))
            .await;
        assert!(disk.ends_with("hearth keeps 256 MiB free"), "{disk}");
        // How other homes reach it: a node alone on loopback has no AutoNAT verdict and no
        // relay (`Reachability::summary`).
        let reach = wd.wait_text(&sid, "#reach", |t| t != "–").await;
        assert_eq!(
            reach,
            "not confirmed public yet (no AutoNAT verdict), and no relay yet: other homes \
             cannot reach this node"
        );
        // "Test again": the node starts a round of AutoNAT tests, and the page says what it
        // tests (or that it has nothing to test yet).
        let rearms = || async {
            let s = node.context.net.status().await.unwrap();
            s.reachability.autonat_rearms
        };
        let before = rearms().await;
        wd.click(&sid, "#recheck").await;
        wd.wait_text(&sid, "#recheck-said", |t| {
            t == "nothing to test yet: no other radiator has seen this one"
                || (t.starts_with("testing ") && t.ends_with("; the line follows the verdicts"))
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while rearms().await == before {
            assert!(Instant::now() < deadline, "no round of tests started");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Chart: a line for the room.
        wd.element(&sid, "#chart path.room-line").await;

        // Change the setpoint on the page; the node applies it.
        let input = wd.element(&sid, "#setpoint-input").await;
        wd.call(
            reqwest::Method::POST,
            &format!("/session/{sid}/element/{input}/clear"),
            Some(json!({})),
        )
        .await;
        wd.call(
            reqwest::Method::POST,
            &format!("/session/{sid}/element/{input}/value"),
            Some(json!({ "text": "23.5" })),
        )
        .await;
        wd.click(&sid, "#setpoint-save").await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = heat.status();
            if s.mode == "manual" && s.setpoint_celsius == 23.5 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not get the setpoint: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wd.wait_text(&sid, "#setpoint", |t| t == "23.5 °C").await;
        wd.wait_text(&sid, "#mode", |t| t == "manual").await;

        // Radiators take work from this household's key: no warning shows. Once another node
        // signs a commitment with it (here the radiator's own, as a copy of its data
        // directory would), the page says so.
        assert_eq!(wd.text(&sid, "#key-warning").await, "");
        let identity = hearth::identity::Identity::load(dir.path()).unwrap();
        let (elsewhere, _) = hearth::model::commit::Commitment::seal(
            &identity,
            5,
            &[blake3::hash(b"countersigned elsewhere")],
            hearth::model::now_ms(),
            hearth::model::now_ms(),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(e) = node
            .context
            .net
            .publish(hearth::net::Topic::Commitments, elsewhere.to_bytes())
            .await
        {
            assert!(Instant::now() < deadline, "no auditor to publish to: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wd.wait_text(&sid, "#key-warning", |t| {
            t.starts_with("Your key is used elsewhere: a bootstrap node logged commitment #5")
        })
        .await;
        // Once the household revokes its key, the page says that first.
        node.context
            .refusals
            .own_revocation(&hearth::model::revoke::Revocation::sign(
                &identity,
                0,
                hearth::model::now_ms(),
            ))
            .unwrap();
        wd.wait_text(&sid, "#key-warning", |t| {
            t.starts_with("Your key is refused: this household revoked its key")
        })
        .await;

        // Keep a screenshot.
        let png = wd
            .call(
                reqwest::Method::GET,
                &format!("/session/{sid}/screenshot"),
                None,
            )
            .await;
        let bytes = base64_decode(png.as_str().unwrap());
        let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
        let reader = decoder.read_info().expect("the screenshot is a PNG");
        assert!(reader.info().width >= 300 && reader.info().height >= 300);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        std::fs::write(&path, &bytes).unwrap();
        eprintln!("screenshot: {}", path.display());

        wd.call(reqwest::Method::DELETE, &format!("/session/{sid}"), None)
            .await;
        node.shutdown().await;
        auditor.shutdown().await;
    })
    .await
    .expect("browser test timed out");
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVhcnRo"), b"hearth");
    assert_eq!(base64_decode("aGVhcnQ="), b"heart");
    assert_eq!(base64_decode("aGVhcg=="), b"hear");
}
