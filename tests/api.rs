//! The local API's access control against a real node started in this process: real HTTP on
//! loopback, the token read from the data directory as a client reads it, the `hearth` binary
//! for the CLI's part. Each test runs under a timeout.

use std::path::Path;
use std::time::Duration;

use hearth::demo::loopback_options;
use hearth::node::{self, RunningNode};
use reqwest::{Method, StatusCode};

const TIMEOUT: Duration = Duration::from_secs(60);
const BIN: &str = env!("CARGO_BIN_EXE_hearth");

struct Node {
    node: RunningNode,
    token: String,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let opts = loopback_options(dir.path(), None, 1).unwrap();
    let node = node::start(opts).await.unwrap();
    let token = read_token(dir.path());
    Node {
        base: format!("http://{}", node.api_addr),
        node,
        token,
        // Redirects are part of what is tested.
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _dir: dir,
    }
}

/// What a user (or a Prometheus `credentials_file`) reads.
fn read_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("api.token"))
        .unwrap()
        .trim()
        .to_string()
}

impl Node {
    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    fn authed(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.req(method, path).bearer_auth(&self.token)
    }

    async fn heat_mode(&self) -> (String, f64) {
        let s = self.node.context.heat.as_ref().unwrap().status();
        (s.mode, s.setpoint_celsius)
    }

    async fn job_count(&self) -> usize {
        self.node.context.coordinator.list().await.len()
    }

    /// A valid job request: a stored module and input, as `hearth submit` would send.
    fn job_body(&self) -> String {
        let store = &self.node.context.store;
        let module = store.put_bytes(&hearth::kernels::pi_wasm()).unwrap();
        let input = store
            .put_bytes(&hearth::kernels::pi_job_inputs(1, 1000, 1)[0])
            .unwrap();
        serde_json::json!({
            "module": module.to_hex().to_string(),
            "inputs": [input.to_hex().to_string()],
        })
        .to_string()
    }

    /// The JSON answer to an authenticated request.
    async fn authed_json(&self, method: Method, path: &str) -> serde_json::Value {
        self.authed(method, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A session cookie obtained the way a browser does: ticket, then `/login`.
    async fn login(&self) -> String {
        let t = self.authed_json(Method::POST, "/v1/login/ticket").await;
        let resp = self
            .req(Method::GET, t["path"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
        cookie.split(';').next().unwrap().to_string()
    }
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .expect("test timed out")
}

/// Every route of a radiator's API, with a body where one is expected.
fn every_route() -> Vec<(Method, &'static str, &'static str)> {
    vec![
        (Method::GET, "/v1/status", ""),
        (Method::GET, "/v1/peers", ""),
        (Method::POST, "/v1/blobs", "bytes"),
        (
            Method::GET,
            "/v1/blobs/af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            "",
        ),
        (Method::POST, "/v1/jobs", "{}"),
        (Method::GET, "/v1/jobs", ""),
        (
            Method::GET,
            "/v1/jobs/af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            "",
        ),
        (
            Method::GET,
            "/v1/jobs/af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262/summary",
            "",
        ),
        (
            Method::GET,
            "/v1/jobs/af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262/result",
            "",
        ),
        (Method::GET, "/v1/receipts", ""),
        (Method::GET, "/v1/receipts/totals", ""),
        (Method::GET, "/v1/receipts/related", ""),
        (Method::GET, "/v1/trust", ""),
        (
            Method::GET,
            "/v1/trust/af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            "",
        ),
        (Method::GET, "/v1/audit", ""),
        (
            Method::GET,
            "/v1/audit/af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            "",
        ),
        (Method::POST, "/v1/revocations", "{}"),
        (Method::POST, "/v1/reachability/check", ""),
        (Method::GET, "/v1/refusals", ""),
        (Method::GET, "/metrics", ""),
        (Method::GET, "/v1/overview", ""),
        (Method::POST, "/v1/login/ticket", ""),
        (Method::GET, "/v1/heat", ""),
        (Method::PUT, "/v1/heat/temperature", r#"{"celsius": 20}"#),
        (Method::POST, "/v1/heat/setpoint", r#"{"celsius": 25}"#),
        (Method::POST, "/v1/heat/auto", ""),
        (Method::POST, "/v1/heat/boost", r#"{"minutes": 60}"#),
        (Method::POST, "/v1/heat/off", ""),
    ]
}

/// The list of jobs and a job's summary carry no shards: what the dashboard, Prometheus and
/// `hearth job wait` poll must not grow with a job's size. The shard-by-shard view is asked for
/// by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_listed_and_followed_without_their_shards() {
    within(async {
        let n = start().await;
        let get = |path: String| {
            let req = n.authed(Method::GET, &path);
            async move {
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK, "{path}");
                resp.json::<serde_json::Value>().await.unwrap()
            }
        };
        let submitted: serde_json::Value = n
            .authed(Method::POST, "/v1/jobs")
            .header("content-type", "application/json")
            .body(n.job_body())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = submitted["id"].as_str().unwrap().to_string();
        let list = get("/v1/jobs".into()).await;
        let listed = &list.as_array().unwrap()[0];
        assert_eq!(listed["id"], id.as_str());
        assert_eq!(listed["shards_total"], 1);
        assert!(listed.get("shards").is_none(), "{listed}");
        let summary = get(format!("/v1/jobs/{id}/summary")).await;
        assert!(summary.get("shards").is_none(), "{summary}");
        assert_eq!(summary["id"], id.as_str());
        assert!(summary.get("waiting").is_some(), "{summary}");
        let view = get(format!("/v1/jobs/{id}")).await;
        assert_eq!(view["shards"].as_array().unwrap().len(), 1, "{view}");
        let resp = n
            .authed(Method::GET, &format!("/v1/jobs/{}/summary", "0".repeat(64)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        n.node.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_cross_site_requests_change_nothing() {
    within(async {
        let n = start().await;
        let before = n.heat_mode().await;
        let job = n.job_body();
        let cookie = n.login().await;
        // What any web page may send without a CORS preflight: text/plain, its own Origin.
        // Without credentials, with the session cookie (SameSite=Strict keeps a browser from
        // sending it cross-site; a same-site page on another port would), and with fetch
        // metadata only.
        for (path, body) in [
            ("/v1/jobs", job.as_str()),
            ("/v1/blobs", "evil bytes"),
            ("/v1/heat/off", ""),
            ("/v1/heat/setpoint", r#"{"celsius": 5}"#),
        ] {
            let forged = || {
                n.req(Method::POST, path)
                    .header("content-type", "text/plain")
                    .body(body.to_string())
            };
            let attempts = [
                forged().header("origin", "https://evil.example"),
                forged()
                    .header("origin", "https://evil.example")
                    .header("sec-fetch-site", "cross-site")
                    .header("cookie", &cookie),
                forged()
                    .header("origin", "http://127.0.0.1:1")
                    .header("sec-fetch-site", "same-site")
                    .header("cookie", &cookie),
                forged()
                    .header("sec-fetch-site", "cross-site")
                    .header("cookie", &cookie),
                forged().header("origin", "null").header("cookie", &cookie),
                // Even with the token (which no foreign page has), a cross-site request is refused.
                forged()
                    .header("origin", "https://evil.example")
                    .bearer_auth(&n.token),
            ];
            for a in attempts {
                let resp = a.send().await.unwrap();
                assert!(
                    resp.status() == StatusCode::FORBIDDEN,
                    "{path}: {}",
                    resp.status()
                );
                let err: serde_json::Value = resp.json().await.unwrap();
                assert!(err["error"].as_str().unwrap().contains("another"), "{err}");
            }
            // No credentials and no browser headers: 401.
            let resp = forged().send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        assert_eq!(n.heat_mode().await, before);
        assert_eq!(n.job_count().await, 0);
        let evil = blake3::hash(b"evil bytes");
        assert!(n.node.context.store.get_bytes(&evil).is_err());
        // The same job request, from the household's own client, is accepted: the refusals
        // above were about who asked, not what.
        let resp = n
            .authed(Method::POST, "/v1/jobs")
            .body(job.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{}",
            resp.text().await.unwrap()
        );
        assert_eq!(n.job_count().await, 1);
        n.node.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_host_is_refused_on_every_route() {
    within(async {
        let n = start().await;
        let port = n.node.api_addr.port();
        let before = n.heat_mode().await;
        let cookie = n.login().await;
        let mut routes = every_route();
        routes.push((Method::GET, "/login?ticket=x", ""));
        for (method, path, body) in routes {
            for host in [
                "evil.example".to_string(),
                format!("evil.example:{port}"),
                format!("127.0.0.1.nip.io:{port}"),
            ] {
                let resp = n
                    .authed(method.clone(), path)
                    .header("host", &host)
                    .header("cookie", &cookie)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    resp.status(),
                    StatusCode::FORBIDDEN,
                    "{method} {path} {host}"
                );
                let err: serde_json::Value = resp.json().await.unwrap();
                assert!(
                    err["error"].as_str().unwrap().contains("DNS rebinding"),
                    "{err}"
                );
            }
        }
        assert_eq!(n.heat_mode().await, before);
        // localhost:PORT is this API too.
        let resp = n
            .authed(Method::GET, "/v1/status")
            .header("host", format!("localhost:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        n.node.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_the_token_and_works_with_it() {
    within(async {
        let n = start().await;
        let before = n.heat_mode().await;
        for (method, path, body) in every_route() {
            let resp = n
                .req(method.clone(), path)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(
                resp.headers()["www-authenticate"],
                "Bearer realm=\"hearth\""
            );
            let err: serde_json::Value = resp.json().await.unwrap();
            assert!(
                err["error"].as_str().unwrap().contains("api.token"),
                "{err}"
            );
            let resp = n
                .req(method.clone(), path)
                .bearer_auth("00".repeat(32))
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        }
        assert_eq!(n.heat_mode().await, before);
        assert_eq!(n.job_count().await, 0);
        // With the token: reads work, and commands are applied.
        for path in [
            "/v1/status",
            "/v1/peers",
            "/v1/jobs",
            "/v1/receipts",
            "/v1/trust",
            "/v1/refusals",
            "/metrics",
            "/v1/heat",
        ] {
            let resp = n.authed(Method::GET, path).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert_eq!(resp.headers()["cache-control"], "no-store");
        }
        // A cursor that no page ended at is refused, saying why.
        let resp = n
            .authed(Method::GET, "/v1/refusals?after=00ff")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let err: serde_json::Value = resp.json().await.unwrap();
        assert!(
            err["error"]
                .as_str()
                .unwrap()
                .contains("33-byte hex cursor"),
            "{err}"
        );
        // A test of the node's addresses again: a lone node has none to test; the next
        // request, once the first round started, waits for what is left of 10 s.
        let mut answers = Vec::new();
        for _ in 0..2 {
            let resp = n
                .authed(Method::POST, "/v1/reachability/check")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            answers.push(resp.json::<serde_json::Value>().await.unwrap());
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(answers[0]["candidates"], 0, "{answers:?}");
        assert_eq!(answers[0]["starts_in_ms"], 0, "{answers:?}");
        let wait = answers[1]["starts_in_ms"].as_u64().unwrap();
        assert!((1..10_000).contains(&wait), "{answers:?}");
        let resp = n
            .authed(Method::POST, "/v1/heat/setpoint")
            .json(&serde_json::json!({"celsius": 22.5}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(n.heat_mode().await, ("manual".to_string(), 22.5));
        let resp = n
            .authed(Method::POST, "/v1/blobs")
            .body("household bytes")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(n
            .node
            .context
            .store
            .get_bytes(&blake3::hash(b"household bytes"))
            .is_ok());
        // Public: the dashboard's files, which hold no data, under a strict CSP...
        for path in ["/", "/dashboard.js", "/dashboard.css"] {
            let resp = n.req(Method::GET, path).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let csp = resp.headers()["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        }
        // ...and the login exchange (it answers 401 to a bad ticket, not 200).
        let resp = n
            .req(Method::GET, "/login?ticket=nope")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.text().await.unwrap().contains("hearth dashboard"));
        n.node.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_ticket_works_once_and_the_session_only_from_the_same_origin() {
    within(async {
        let n = start().await;
        let origin = n.base.clone();
        let t: serde_json::Value = n
            .authed(Method::POST, "/v1/login/ticket")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let path = t["path"].as_str().unwrap();
        assert!(t["expires_in_s"].as_u64().unwrap() <= 300);
        let resp = n.req(Method::GET, path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()["location"], "/");
        let set = resp.headers()["set-cookie"].to_str().unwrap().to_string();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set.split("; ").any(|a| a == attr), "{set}");
        }
        let cookie = set.split(';').next().unwrap().to_string();
        // Single use.
        let again = n.req(Method::GET, path).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
        assert!(again.headers().get("set-cookie").is_none());

        // The dashboard's own requests: same origin, with the cookie.
        let resp = n
            .req(Method::GET, "/v1/heat")
            .header("cookie", &cookie)
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = n
            .req(Method::POST, "/v1/heat/setpoint")
            .header("cookie", &cookie)
            .header("origin", &origin)
            .header("sec-fetch-site", "same-origin")
            .json(&serde_json::json!({"celsius": 19.5}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(n.heat_mode().await, ("manual".to_string(), 19.5));
        // The same cookie from another origin, or read by another site: refused.
        let resp = n
            .req(Method::POST, "/v1/heat/setpoint")
            .header("cookie", &cookie)
            .header("origin", "http://localhost:1")
            .json(&serde_json::json!({"celsius": 28}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let resp = n
            .req(Method::GET, "/v1/receipts")
            .header("cookie", &cookie)
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(n.heat_mode().await, ("manual".to_string(), 19.5));
        // A forged or tampered cookie is no session.
        let tampered = cookie.replacen('.', "9.", 1);
        let resp = n
            .req(Method::GET, "/v1/heat")
            .header("cookie", &tampered)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        // No CORS: a preflight gets no permission.
        let resp = n
            .req(Method::OPTIONS, "/v1/heat/setpoint")
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert!(resp.headers().get("access-control-allow-origin").is_none());
        assert!(!resp.status().is_success());
        n.node.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_beyond_loopback_needs_the_operator_to_say_so() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = loopback_options(dir.path(), None, 1).unwrap();
        opts.config.node.api = "0.0.0.0:0".parse().unwrap();
        let err = match node::start(opts.clone()).await {
            Ok(_) => panic!("a node served its API on 0.0.0.0 without api_allow_remote"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("0.0.0.0") && err.contains("api_allow_remote"),
            "{err}"
        );
        opts.config.node.api_allow_remote = true;
        let node = node::start(opts).await.unwrap();
        let token = read_token(dir.path());
        let port = node.api_addr.port();
        let resp = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/v1/status"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        node.shutdown().await;
    })
    .await;
    // The same through the command line, before anything else starts.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--api",
            "0.0.0.0:1",
            "node",
            "--init-if-missing",
            "--no-mdns",
        ])
        .env_remove("HEARTH_DATA_DIR")
        .env_remove("HEARTH_API_ALLOW_REMOTE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--api-allow-remote"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_uses_the_token_of_its_data_dir_and_prints_a_dashboard_link() {
    within(async {
        let n = start().await;
        let data_dir = n._dir.path().to_path_buf();
        let api = n.node.api_addr.to_string();
        let cli = move |dir: &Path, args: &[&str], env: Option<&str>| {
            let mut cmd = std::process::Command::new(BIN);
            cmd.arg("--data-dir")
                .arg(dir)
                .args(["--api", &api])
                .args(args)
                .env_remove("HEARTH_DATA_DIR")
                .env_remove("HEARTH_API_TOKEN");
            if let Some(t) = env {
                cmd.env("HEARTH_API_TOKEN", t);
            }
            cmd.output().unwrap()
        };
        let token = n.token.clone();
        let other = tempfile::tempdir().unwrap();
        let (own, without, with_env, link) = tokio::task::spawn_blocking({
            let other = other.path().to_path_buf();
            move || {
                (
                    cli(&data_dir, &["status"], None),
                    cli(&other, &["status"], None),
                    cli(&other, &["heat", "set", "21"], Some(&token)),
                    cli(&data_dir, &["dashboard"], None),
                )
            }
        })
        .await
        .unwrap();
        assert!(
            own.status.success(),
            "{}",
            String::from_utf8_lossy(&own.stderr)
        );
        assert!(!without.status.success());
        let err = String::from_utf8_lossy(&without.stderr);
        assert!(
            err.contains("HTTP 401") && err.contains("hearth dashboard"),
            "{err}"
        );
        assert!(
            with_env.status.success(),
            "{}",
            String::from_utf8_lossy(&with_env.stderr)
        );
        assert_eq!(n.heat_mode().await, ("manual".to_string(), 21.0));
        assert!(
            link.status.success(),
            "{}",
            String::from_utf8_lossy(&link.stderr)
        );
        let link = String::from_utf8(link.stdout).unwrap();
        let link = link.trim();
        assert!(
            link.starts_with(&format!("{}/login?ticket=", n.base)),
            "{link}"
        );
        let resp = n.http.get(link).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        n.node.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_named_by_the_prometheus_conventions() {
    within(async {
        let n = start().await;
        // One control period, so the radiator has a room reading.
        let heat = n.node.context.heat.clone().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while heat.status().room_celsius.is_none() {
            assert!(std::time::Instant::now() < deadline, "no room reading");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = n
            .authed(Method::GET, "/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // Every counter's samples end in _total, every unit is a base unit in the name.
        let mut families = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                families.push((name.to_string(), kind.to_string()));
            }
            if let Some(rest) = line.strip_prefix("# UNIT ") {
                let (name, unit) = rest.split_once(' ').unwrap();
                assert!(name.ends_with(&format!("_{unit}")), "{line}");
                assert!(
                    ["seconds", "joules", "celsius", "watts", "bytes"].contains(&unit),
                    "{line}"
                );
            }
        }
        for (name, kind) in &families {
            assert!(name.starts_with("hearth_"), "{name}");
            assert!(!name.contains("kwh") && !name.ends_with("_total"), "{name}");
            let sample = text
                .lines()
                .find(|l| !l.starts_with('#') && l.starts_with(name.as_str()))
                .unwrap_or_else(|| panic!("no sample of {name}"));
            match kind.as_str() {
                "counter" => assert!(sample.starts_with(&format!("{name}_total ")), "{sample}"),
                "gauge" => assert!(!sample.contains("_total"), "{sample}"),
                other => panic!("unexpected metric type {other} for {name}"),
            }
        }
        let names: Vec<&str> = families.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "hearth_build_info",
            "hearth_peers",
            "hearth_uptime_seconds",
            "hearth_blob_chunks_served",
            "hearth_work_records",
            "hearth_work_records_refused",
            "hearth_blob_provider_records",
            "hearth_blob_provider_records_refused",
            "hearth_routing_peers",
            "hearth_routing_refused",
            "hearth_inbound_refused",
            "hearth_refused_keys",
            "hearth_own_key_refused",
            "hearth_own_key_used_elsewhere",
            "hearth_shard_cpu_seconds",
            "hearth_shard_memory_bytes",
            "hearth_shard_memory_limit_bytes",
            "hearth_disk_free_bytes",
            "hearth_disk_floor_bytes",
            "hearth_energy_credited_joules",
            "hearth_receipts_credited",
            "hearth_ledger_receipts",
            "hearth_jobs",
            "hearth_room_temperature_celsius",
            "hearth_room_setpoint_celsius",
            "hearth_power_watts",
            "hearth_energy_today_joules",
        ] {
            assert!(names.contains(&want), "{want} missing from\n{text}");
        }
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.lines().any(|l| l.starts_with("hearth_build_info{")
                && l.contains(&format!("version=\"{version}\""))
                && l.ends_with(" 1.0")),
            "{text}"
        );
        assert!(
            text.contains("hearth_jobs{state=\"running\"} 0.0"),
            "{text}"
        );
        assert!(text.contains("\nhearth_own_key_refused 0.0\n"), "{text}");
        assert!(
            text.contains("\nhearth_own_key_used_elsewhere 0.0\n"),
            "{text}"
        );
        n.node.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_says_where_a_household_stands_and_why() {
    within(async {
        let n = start().await;
        let own = n.node.household().to_hex();
        let all: serde_json::Value = n
            .authed(Method::GET, "/v1/trust")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let me = all
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["household"] == own.as_str())
            .expect("the node's own household is listed");
        assert_eq!(me["standing"], "established");
        assert!(
            me["why"].as_str().unwrap().contains("own household"),
            "{me}"
        );
        let stranger = "11".repeat(32);
        let one: serde_json::Value = n
            .authed(Method::GET, &format!("/v1/trust/{stranger}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(one["standing"], "probation");
        assert!(one["why"].as_str().unwrap().contains("no claim"), "{one}");
        assert_eq!(one["evidence"], serde_json::json!([]));
        let resp = n
            .authed(Method::GET, "/v1/trust/not-a-key")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        // A job's own policy is checked before anything is submitted.
        let mut job: serde_json::Value = serde_json::from_str(&n.job_body()).unwrap();
        job["policy"] = serde_json::json!({"min_replicas": 4, "max_replicas": 2});
        let resp = n
            .authed(Method::POST, "/v1/jobs")
            .json(&job)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let err: serde_json::Value = resp.json().await.unwrap();
        assert!(
            err["error"].as_str().unwrap().contains("max_replicas"),
            "{err}"
        );
        assert_eq!(n.job_count().await, 0);
        job["policy"] = serde_json::json!({"min_replicas": 1, "spot_check_permille": 1000});
        let resp = n
            .authed(Method::POST, "/v1/jobs")
            .json(&job)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(n.job_count().await, 1);
        // A job's own allow-list: a mistyped key is refused, naming the entry, before
        // anything is submitted; a good list is taken (issue 10, item 4).
        let mut job: serde_json::Value = serde_json::from_str(&n.job_body()).unwrap();
        // Another manifest than the job above (replication 1), so it is a new job.
        job["replication"] = serde_json::json!(1);
        let good = "ab".repeat(32);
        job["allow"] = serde_json::json!([good, "not-a-key"]);
        let resp = n
            .authed(Method::POST, "/v1/jobs")
            .json(&job)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let err: serde_json::Value = resp.json().await.unwrap();
        let msg = err["error"].as_str().unwrap();
        assert!(msg.contains("allow") && msg.contains("entry 2"), "{err}");
        assert_eq!(n.job_count().await, 1);
        job["allow"] = serde_json::json!([good]);
        let resp = n
            .authed(Method::POST, "/v1/jobs")
            .json(&job)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(n.job_count().await, 2);
        // Self-dealing marks: none yet, served as an empty map.
        let related: serde_json::Value = n
            .authed(Method::GET, "/v1/receipts/related")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(related, serde_json::json!({}));
        n.node.shutdown().await;
    })
    .await
}

/// A blob the disk has no room for (it would leave less than `[limits] disk_free_mib`) is
/// refused with 507 and the reason, and nothing is stored; with room, the same upload works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_the_disk_has_no_room_for_is_refused_with_507() {
    tokio::time::timeout(TIMEOUT, async {
        let n = start().await;
        let store = &n.node.context.store;
        let free = hearth::store::free_bytes(n._dir.path()).unwrap();
        store.set_disk_floor(free + (1 << 30));
        let upload = || {
            n.authed(Method::POST, "/v1/blobs")
                .body("more bytes")
                .send()
        };
        let resp = upload().await.unwrap();
        assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
        let body: serde_json::Value = resp.json().await.unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("keeps free on its disk"), "{error}");
        assert!(!store.has(&blake3::hash(b"more bytes")).unwrap());
        // The household sees the room left and the floor (`hearth status`, `/metrics`).
        let status = n.authed_json(Method::GET, "/v1/status").await;
        assert_eq!(status["disk_floor_bytes"], free + (1 << 30), "{status:#}");
        assert!(status["disk_free_bytes"].is_u64(), "{status:#}");
        store.set_disk_floor(0);
        assert_eq!(upload().await.unwrap().status(), StatusCode::OK);
        n.node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// A client that opens the API and never finishes its request's head is cut off after
/// `api::serve::HEAD_WAIT`, while a client that goes on making requests is served throughout:
/// a stuck or hostile client holds no connection for ever. (`axum::serve` kept such a
/// connection open as long as the client did.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_never_finished_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    within(async {
        let n = start().await;
        let mut stuck = tokio::net::TcpStream::connect(n.node.api_addr)
            .await
            .unwrap();
        stuck
            .write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 256];
        let cut = tokio::spawn(async move {
            // Whatever the node answers before it closes (a 408, say), then the end.
            while let Ok(read) = stuck.read(&mut buf).await {
                if read == 0 {
                    break;
                }
            }
        });
        // Served meanwhile.
        while !cut.is_finished() {
            let r = n.authed(Method::GET, "/v1/status").send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let waited = started.elapsed();
        assert!(
            waited >= hearth::api::serve::HEAD_WAIT - Duration::from_secs(1),
            "cut off after {waited:?}, before the head's wait"
        );
        n.node.shutdown().await;
    })
    .await;
}

/// While `held` takes every place the bound allows, `request` waits (it is `what` beyond the
/// bound otherwise); once the last of `held` goes, it is answered.
async fn waits_for_a_place(
    held: &mut Vec<tokio::net::TcpStream>,
    request: reqwest::RequestBuilder,
    what: &str,
) {
    let waiting = tokio::spawn(request.send());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!waiting.is_finished(), "{what} beyond the bound");
    drop(held.pop());
    let r = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap_or_else(|_| panic!("not {what} once a place was free"))
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// At most `api::serve::MAX_CONNECTIONS` connections are served at once: a client that opens
/// more waits until one ends, and the node's own file descriptors stay its own. (Each was
/// taken and held before, without bound.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_bound_wait_for_one_to_end() {
    use tokio::io::AsyncWriteExt;
    within(async {
        let n = start().await;
        let mut held = Vec::new();
        for _ in 0..hearth::api::serve::MAX_CONNECTIONS {
            let mut s = tokio::net::TcpStream::connect(n.node.api_addr)
                .await
                .unwrap();
            s.write_all(b"GET /v1/status HTTP/1.1\r\n").await.unwrap();
            held.push(s);
        }
        // Every connection is taken: the request waits in the backlog.
        waits_for_a_place(&mut held, n.authed(Method::GET, "/v1/status"), "served").await;
        drop(held);
        n.node.shutdown().await;
    })
    .await;
}

/// Reads a response body piece by piece into a hash, as a client saving a large download
/// would: (bytes received, their hash, whether the body ended in an error).
async fn drain(mut r: reqwest::Response) -> (u64, blake3::Hash, bool) {
    let mut hasher = blake3::Hasher::new();
    let mut len = 0u64;
    loop {
        match r.chunk().await {
            Ok(Some(piece)) => {
                len += piece.len() as u64;
                hasher.update(&piece);
            }
            Ok(None) => return (len, hasher.finalize(), false),
            Err(_) => return (len, hasher.finalize(), true),
        }
    }
}

/// A blob larger than the store reads into memory at once (`store::MAX_GET_BYTES`, 256 MiB)
/// is downloaded whole through `GET /v1/blobs/{hash}`, streamed as it is verified, with its
/// length announced. (Answered 500 before: the API read every blob whole, and refused
/// those above 256 MiB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_larger_than_a_whole_read_is_downloaded_streamed() {
    tokio::time::timeout(Duration::from_secs(300), async {
        let n = start().await;
        let len = hearth::store::MAX_GET_BYTES + 300_007;
        let file = n._dir.path().join("large-input");
        let store = n.node.context.store.clone();
        let (hash, expected) = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
            let mut hasher = blake3::Hasher::new();
            let mut written = 0u64;
            let mut block = vec![0u8; 1 << 20];
            while written < len {
                let take = (len - written).min(block.len() as u64) as usize;
                block[..8].copy_from_slice(&written.to_le_bytes());
                f.write_all(&block[..take]).unwrap();
                hasher.update(&block[..take]);
                written += take as u64;
            }
            f.flush().unwrap();
            drop(f);
            (store.put_file(&file).unwrap(), hasher.finalize())
        })
        .await
        .unwrap();
        assert_eq!(hash, expected);
        let r = n
            .authed(Method::GET, &format!("/v1/blobs/{}", hash.to_hex()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.content_length(), Some(len));
        let (got, got_hash, failed) = drain(r).await;
        assert!(!failed);
        assert_eq!((got, got_hash), (len, hash));
        n.node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// A stored blob damaged on disk is never sent past the damage: the download ends early, short
/// of its announced length, with every byte sent verified. (Every read is verified: the
/// whole-blob read refused the blob; streamed, the verified part goes out first.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_blob_is_cut_short_at_the_damage_never_sent() {
    within(async {
        let n = start().await;
        // Over the store's inline limit (1 MiB): kept as a plain file of its own.
        let data: Vec<u8> = (0..3 * 1024 * 1024 + 5).map(|i| (i % 251) as u8).collect();
        let hash = n.node.context.store.put_bytes(&data).unwrap();
        let file = hearth::node::blob_dir(n._dir.path()).join(hash.to_hex().as_str());
        let mut on_disk = std::fs::read(&file).unwrap();
        // A byte of the third 256 KiB group.
        on_disk[2 * 256 * 1024 + 100] ^= 0xff;
        std::fs::write(&file, &on_disk).unwrap();
        let r = n
            .authed(Method::GET, &format!("/v1/blobs/{}", hash.to_hex()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.content_length(), Some(data.len() as u64));
        let (got, got_hash, failed) = drain(r).await;
        assert!(failed, "the body ended as if whole");
        // At most the two verified groups before the damage (a client may lose the last
        // bytes in flight when the connection is cut), and exactly the blob's own bytes.
        assert!(got <= 2 * 256 * 1024, "{got} bytes: past the damage");
        assert_eq!(got_hash, blake3::hash(&data[..got as usize]));
        assert!(
            !n.node.context.store.has(&hash).unwrap(),
            "the damaged blob was removed, to be fetched again"
        );
        n.node.shutdown().await;
    })
    .await;
}

/// At most `api::UPLOADS_AT_ONCE` uploads are received at once (each is held in memory whole
/// until stored): a further upload waits, its body unread, until one ends. (Every upload was
/// read at once before: 64 connections could hold 64 × 256 MiB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_the_bound_wait_for_one_to_end() {
    use tokio::io::AsyncWriteExt;
    within(async {
        let n = start().await;
        let mut slow = Vec::new();
        for _ in 0..hearth::api::UPLOADS_AT_ONCE {
            let mut s = tokio::net::TcpStream::connect(n.node.api_addr)
                .await
                .unwrap();
            let head = format!(
                "POST /v1/blobs HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
                 Content-Length: 1000000\r\n\r\n",
                n.node.api_addr, n.token
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&[7u8; 1000]).await.unwrap();
            slow.push(s);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // One slow upload's client going away passes its turn on.
        let small = n
            .authed(Method::POST, "/v1/blobs")
            .body(b"a small blob".to_vec());
        waits_for_a_place(&mut slow, small, "received").await;
        drop(slow);
        n.node.shutdown().await;
    })
    .await;
}
