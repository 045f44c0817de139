//! The Home Assistant bridge against a real mosquitto broker and a real `hearth node` process:
//! the discovery message Home Assistant reads, state that matches `GET /v1/heat`,
//! availability through the last will, the birth message, and commands from the broker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_hearth");
const NODE_ID: &str = "hearth_test";
const DISCOVERY: &str = "homeassistant/device/hearth_test/config";
const AVAILABILITY: &str = "hearth/hearth_test/availability";
const STATE: &str = "hearth/hearth_test/state";

struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto_binary() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("the Home Assistant test needs the mosquitto broker: run `apt-get install mosquitto` (CI installs it)");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_mosquitto() -> Mosquitto {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
        ),
    )
    .unwrap();
    let child = Command::new(mosquitto_binary())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting mosquitto");
    let broker = Mosquitto {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker
}

/// A `hearth node` process, killed when dropped.
struct Node {
    child: Child,
    api: String,
    token: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn init(dir: &Path, broker_port: u16) {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .arg("init")
        .env_remove("HEARTH_DATA_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The room temperature is pushed over HTTP, and the meter estimates from CPU time (no
    // RAPL), so power and state are steady enough to compare.
    std::fs::write(
        dir.join("hearth.toml"),
        format!(
            "[heat]\nsource = \"http\"\nperiod_secs = 1\nrapl_root = \"/nonexistent\"\n\
             [homeassistant]\nenabled = true\nport = {broker_port}\nnode_id = \"{NODE_ID}\"\n\
             name = \"Living room radiator\"\nstate_interval_secs = 1\n"
        ),
    )
    .unwrap();
}

async fn start_node(dir: &Path) -> Node {
    let api = format!("127.0.0.1:{}", free_port());
    let child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--api",
            &api,
            "node",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--slots",
            "1",
        ])
        .env_remove("HEARTH_DATA_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hearth node");
    let token = std::fs::read_to_string(dir.join("api.token"))
        .unwrap()
        .trim()
        .to_string();
    let node = Node { child, api, token };
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.heat().await.is_none() {
        assert!(Instant::now() < deadline, "the node's API did not answer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node
}

impl Node {
    async fn heat(&self) -> Option<Value> {
        let r = reqwest::Client::new()
            .get(format!("http://{}/v1/heat", self.api))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        r.error_for_status().ok()?.json().await.ok()
    }

    async fn push(&self, celsius: f64) {
        let r = reqwest::Client::new()
            .put(format!("http://{}/v1/heat/temperature", self.api))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "celsius": celsius }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{r:?}");
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

/// A message as a subscriber saw it.
#[derive(Debug)]
struct Msg {
    topic: String,
    payload: String,
    retain: bool,
}

/// A test client playing Home Assistant: subscribes to `topics` and forwards what it gets.
struct Client {
    client: rumqttc::AsyncClient,
    rx: mpsc::UnboundedReceiver<Msg>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

async fn client(port: u16, name: &str, topics: &[&str]) -> Client {
    let mut opts = rumqttc::MqttOptions::new(name, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 16);
    // Unbounded: a test reads every message; a few hundred at most arrive.
    let (tx, rx) = mpsc::unbounded_channel();
    let poller = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let _ = tx.send(Msg {
                        topic: p.topic.clone(),
                        payload: String::from_utf8_lossy(&p.payload).into_owned(),
                        retain: p.retain,
                    });
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    for t in topics {
        client
            .subscribe(*t, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    Client { client, rx, poller }
}

impl Client {
    /// The first message on `topic` that `ok` accepts, within `secs`.
    async fn wait(&mut self, topic: &str, secs: u64, ok: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(m)) if m.topic == topic && ok(&m) => return m,
                Ok(Some(_)) => {}
                _ => panic!("no acceptable message on {topic} within {secs} s"),
            }
        }
    }

    async fn state(&mut self, secs: u64, ok: impl Fn(&Value) -> bool) -> Value {
        let m = self
            .wait(STATE, secs, |m| {
                serde_json::from_str::<Value>(&m.payload).is_ok_and(|v| ok(&v))
            })
            .await;
        serde_json::from_str(&m.payload).unwrap()
    }

    async fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
}

/// Every key Home Assistant's MQTT discovery documentation requires of a device-based
/// message, and the ones each entity needs to do its job.
fn check_discovery(d: &Value) {
    let dev = &d["dev"];
    assert!(
        dev["identifiers"]
            .as_array()
            .is_some_and(|ids| ids.contains(&Value::from(NODE_ID))),
        "{dev}"
    );
    assert_eq!(dev["name"], "Living room radiator");
    assert!(d["o"]["name"].is_string(), "origin needs a name");
    assert_eq!(d["availability"][0]["topic"], AVAILABILITY);
    let cmps = d["cmps"].as_object().expect("cmps");
    let mut unique = std::collections::BTreeSet::new();
    for (id, c) in cmps {
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "component id {id}"
        );
        assert!(c["p"].is_string(), "{id}: platform `p` is required");
        let uid = c["unique_id"].as_str().expect("unique_id is required");
        assert!(unique.insert(uid.to_string()), "{uid} is not unique");
    }
    let platform = |p: &str| {
        cmps.values()
            .filter(|c| c["p"] == p)
            .collect::<Vec<&Value>>()
    };
    // The thermostat.
    let climate = platform("climate");
    assert_eq!(climate.len(), 1);
    let c = climate[0];
    for key in [
        "mode_command_topic",
        "temperature_command_topic",
        "preset_mode_command_topic",
    ] {
        assert!(
            c[key].as_str().is_some_and(|t| t.starts_with("hearth/")),
            "{key}"
        );
    }
    for key in [
        "mode_state_topic",
        "temperature_state_topic",
        "current_temperature_topic",
        "preset_mode_state_topic",
    ] {
        assert_eq!(c[key], STATE, "{key}");
    }
    let modes = c["modes"].as_array().unwrap();
    assert!(modes.contains(&"heat".into()) && modes.contains(&"off".into()));
    assert_eq!(c["preset_modes"], serde_json::json!(["boost"]));
    assert_eq!(
        (c["min_temp"].as_f64(), c["max_temp"].as_f64()),
        (Some(5.0), Some(27.0))
    );
    // Sensors: every one needs a state topic (its own or the shared one).
    let sensors = platform("sensor");
    for s in &sensors {
        assert!(s["state_topic"] == STATE || d["state_topic"] == STATE);
        assert!(s["value_template"].is_string());
    }
    let by_class = |class: &str, unit: &str, state_class: &str| {
        sensors
            .iter()
            .filter(|s| {
                s["device_class"] == class
                    && s["unit_of_measurement"] == unit
                    && s["state_class"] == state_class
            })
            .count()
    };
    assert_eq!(by_class("power", "W", "measurement"), 1);
    // Drawn and credited: both may appear in the Energy dashboard.
    assert_eq!(by_class("energy", "kWh", "total_increasing"), 2);
    assert!(sensors
        .iter()
        .any(|s| s["value_template"] == "{{ value_json.reason }}"));
    let binary = platform("binary_sensor");
    assert_eq!(binary.len(), 1);
    assert_eq!(binary[0]["value_template"], "{{ value_json.computing }}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_sees_and_drives_the_radiator_over_mosquitto() {
    let broker = start_mosquitto().await;
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), broker.port);
    let node = start_node(dir.path()).await;
    node.push(18.5).await;

    // Subscribing after the node announced itself: the broker hands over the retained copies.
    let mut ha = client(
        broker.port,
        "test-home-assistant",
        &[DISCOVERY, AVAILABILITY, STATE],
    )
    .await;
    let m = ha.wait(DISCOVERY, 20, |m| m.retain).await;
    let d: Value = serde_json::from_str(&m.payload).expect("discovery is JSON");
    check_discovery(&d);
    ha.wait(AVAILABILITY, 20, |m| m.retain && m.payload == "online")
        .await;

    // The state carries what `GET /v1/heat` reports. The status changes every second (the
    // CPU estimate of power moves), so compare a status with the state published next, a few
    // times if a new period slips in between (on a loaded machine, often: CI once missed 15
    // times running, so up to 60 tries, about a minute).
    ha.state(20, |v| v["room_celsius"].as_f64() == Some(18.5))
        .await;
    let mut matched = false;
    for _ in 0..60 {
        while ha.rx.try_recv().is_ok() {}
        let h = node.heat().await.unwrap();
        let s = ha.state(10, |_| true).await;
        let same = ["setpoint_celsius", "room_celsius", "power_watts", "reason"]
            .iter()
            .all(|k| s[k] == h[k])
            && s["hearth_mode"] == h["mode"];
        if !same {
            continue;
        }
        assert_eq!(s["mode"], "auto");
        let drawn = s["energy_drawn_kwh"].as_f64().unwrap();
        let today = h["energy_today_kwh"].as_f64().unwrap();
        assert!(
            drawn > 0.0 && (drawn - today).abs() < 1e-4,
            "{drawn} vs {today}"
        );
        assert_eq!(s["energy_credited_kwh"].as_f64(), Some(0.0));
        assert_eq!(s["computing"], "OFF");
        assert_eq!(s["action"], "idle");
        matched = true;
        break;
    }
    assert!(matched, "no state message matched GET /v1/heat");

    // Home Assistant restarting announces itself; the radiator answers with discovery again.
    while ha.rx.try_recv().is_ok() {}
    ha.publish("homeassistant/status", "online").await;
    let again = ha.wait(DISCOVERY, 10, |m| !m.retain).await;
    assert_eq!(serde_json::from_str::<Value>(&again.payload).unwrap(), d);

    // Commands from Home Assistant reach the heat service.
    let cmps = d["cmps"]["climate"].clone();
    let topic = |key: &str| cmps[key].as_str().unwrap().to_string();
    ha.publish(&topic("temperature_command_topic"), "24.5")
        .await;
    ha.state(10, |v| {
        v["setpoint_celsius"].as_f64() == Some(24.5) && v["mode"] == "heat"
    })
    .await;
    let h = node.heat().await.unwrap();
    assert_eq!(h["setpoint_celsius"].as_f64(), Some(24.5));
    assert_eq!(h["mode"], "manual");

    // Out of range: refused, and the setpoint stays.
    ha.publish(&topic("temperature_command_topic"), "80").await;
    ha.publish(&topic("preset_mode_command_topic"), "boost")
        .await;
    ha.state(10, |v| v["preset"] == "boost").await;
    let h = node.heat().await.unwrap();
    assert_eq!(h["mode"], "boost");
    assert_eq!(h["setpoint_celsius"].as_f64(), Some(24.5));

    ha.publish(&topic("mode_command_topic"), "off").await;
    ha.state(10, |v| v["mode"] == "off" && v["action"] == "off")
        .await;
    let h = node.heat().await.unwrap();
    assert_eq!(h["mode"], "off");
    assert_eq!(h["slots"], 0);

    ha.publish(&topic("mode_command_topic"), "auto").await;
    ha.state(10, |v| v["mode"] == "auto").await;
    assert_eq!(node.heat().await.unwrap()["mode"], "auto");

    // Killed without a word: the broker publishes the last will.
    while ha.rx.try_recv().is_ok() {}
    node.signal("-KILL");
    ha.wait(AVAILABILITY, 10, |m| m.payload == "offline").await;
    drop(node);

    // Started again: online; stopped cleanly (SIGTERM), it says offline itself.
    let mut node = start_node(dir.path()).await;
    ha.wait(AVAILABILITY, 20, |m| m.payload == "online").await;
    node.signal("-TERM");
    ha.wait(AVAILABILITY, 20, |m| m.payload == "offline").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A late subscriber (Home Assistant starting later) sees the retained `offline`.
    let mut late = client(broker.port, "test-late", &[AVAILABILITY]).await;
    late.wait(AVAILABILITY, 10, |m| m.retain && m.payload == "offline")
        .await;
}
