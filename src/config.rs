//! Node configuration: defaults, then `hearth.toml`, then `HEARTH_*` environment variables,
//! then command-line flags, each later source overriding the earlier ones field by field.
//!
//! Every field documents its default here and in the commented `hearth.toml` that `hearth
//! init` writes. A malformed file is an error naming the file, line and column; a malformed
//! variable names the variable. This module reads files and the environment it is handed; it
//! knows nothing of what the values are used for.
//!
//! Size: about 740 lines of code, most of it the commented `hearth.toml` template and one
//! section struct per subsystem; the rest are its unit tests.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::net::RelayRate;

/// File name of the configuration inside the data directory.
pub const CONFIG_FILE: &str = "hearth.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// toml's message already carries the line and column.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        var: String,
        value: String,
        reason: String,
    },
    #[error("{flag}: {reason}")]
    Flag { flag: String, reason: String },
    #[error("{0} (from hearth.toml or a HEARTH_* variable)")]
    Limit(String),
    #[error("no data directory: set --data-dir or HEARTH_DATA_DIR, or HOME so the default ~/.local/share/hearth can be used")]
    NoDataDir,
}

/// A radiator's connections when `max_connections` is unset: its neighbours, the peers its
/// jobs and shards use, and room for newcomers (it prunes idle ones past 16).
pub const RADIATOR_CONNECTIONS: u32 = 128;
/// A bootstrap node's when unset: its relay's default 256 reservations (one connection each)
/// and the newcomers it introduces; as `bootstrap/hearth-bootstrap.service` sets it.
pub const BOOTSTRAP_CONNECTIONS: u32 = 1024;

/// What a node does on the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A household radiator: runs shards when its room wants heat, coordinates its own jobs.
    #[default]
    Radiator,
    /// A bootstrap node: stable address and key, routes and relays gossip, runs no compute.
    Bootstrap,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "radiator" => Ok(Role::Radiator),
            "bootstrap" => Ok(Role::Bootstrap),
            _ => Err("expected `radiator` or `bootstrap`".into()),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub worker: WorkerConfig,
    pub jobs: JobsConfig,
    /// `[trust]`: reputation and adaptive replication for the jobs this node coordinates.
    pub trust: crate::jobs::trust::TrustConfig,
    /// `[limits]`: this radiator's own limits, which no job can raise.
    pub limits: LimitsConfig,
    /// `[heat]`: thermostat source, schedule, controller and energy metering.
    pub heat: crate::heat::HeatConfig,
    /// `[relay]`: serving as a circuit relay for homes behind NAT (bootstrap nodes).
    pub relay: RelayConfig,
    /// `[homeassistant]`: the MQTT discovery bridge to Home Assistant.
    pub homeassistant: crate::homeassistant::HomeAssistantConfig,
    /// `[impact]`: the assumptions of `hearth impact` (PUE, grid intensities, what the heat
    /// replaced); defaults and their sources in `docs/impact.md`.
    pub impact: crate::impact::Assumptions,
}

/// `[relay]`: the circuit relay a bootstrap node runs for homes behind NAT. A relayed
/// connection carries the hole punch and small control messages, never blobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Serve as a relay. Default: on for `role = "bootstrap"`, off for radiators.
    pub serve: Option<bool>,
    /// Nodes listening through this relay at once. Default 256.
    pub max_reservations: usize,
    /// Relayed connections at once. Default 64; per peer 8.
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    /// A relayed connection closes after this many seconds. Default 120.
    pub max_circuit_secs: u64,
    /// A relayed connection closes after carrying this many KiB. Default 1024.
    pub max_circuit_kib: u64,
    /// Circuits one peer may ask for at once, and the seconds until it may ask for one more
    /// (a token bucket). Default 30 and 120 (libp2p's).
    pub circuit_burst_per_peer: NonZeroU32,
    pub circuit_refill_per_peer_secs: NonZeroU64,
    /// The same per source IP address (homes behind one carrier-grade NAT share one).
    /// Default 60 and 60 (libp2p's).
    pub circuit_burst_per_ip: NonZeroU32,
    pub circuit_refill_per_ip_secs: NonZeroU64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        let l = crate::net::RelayLimits::default();
        RelayConfig {
            serve: None,
            max_reservations: l.max_reservations,
            max_circuits: l.max_circuits,
            max_circuits_per_peer: l.max_circuits_per_peer,
            max_circuit_secs: l.max_circuit_duration.as_secs(),
            max_circuit_kib: l.max_circuit_bytes / 1024,
            circuit_burst_per_peer: l.circuit_rate_per_peer.burst,
            circuit_refill_per_peer_secs: secs(l.circuit_rate_per_peer.every),
            circuit_burst_per_ip: l.circuit_rate_per_ip.burst,
            circuit_refill_per_ip_secs: secs(l.circuit_rate_per_ip.every),
        }
    }
}

/// Whole seconds of a rate's refill, at least one.
fn secs(d: std::time::Duration) -> NonZeroU64 {
    NonZeroU64::new(d.as_secs()).unwrap_or(NonZeroU64::MIN)
}

impl RelayConfig {
    /// The relay limits, if this node serves as a relay in `role`.
    pub fn limits(&self, role: Role) -> Option<crate::net::RelayLimits> {
        if !self.serve.unwrap_or(role == Role::Bootstrap) {
            return None;
        }
        Some(crate::net::RelayLimits {
            max_reservations: self.max_reservations,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: std::time::Duration::from_secs(self.max_circuit_secs),
            max_circuit_bytes: self.max_circuit_kib.saturating_mul(1024),
            circuit_rate_per_peer: RelayRate::new(
                self.circuit_burst_per_peer,
                self.circuit_refill_per_peer_secs,
            ),
            circuit_rate_per_ip: RelayRate::new(
                self.circuit_burst_per_ip,
                self.circuit_refill_per_ip_secs,
            ),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Addresses to listen on. Default: TCP and QUIC on port 4001, all interfaces.
    pub listen: Vec<Multiaddr>,
    /// Local HTTP API address. Default `127.0.0.1:7070`.
    pub api: SocketAddr,
    /// Serve the API on an address other machines can reach. Default false: the node refuses
    /// to start with a non-loopback `api` unless this is true. Every request still needs the
    /// API token, which travels in clear over plain HTTP.
    pub api_allow_remote: bool,
    /// Bootstrap peers (multiaddrs ending in `/p2p/<id>`). Empty means the list shipped in
    /// `bootstrap/peers.txt`.
    pub bootstrap: Vec<Multiaddr>,
    /// Find peers on the local network with mDNS. Default true.
    pub mdns: bool,
    /// `radiator` (default) or `bootstrap`.
    pub role: Role,
    /// Most established connections. Unset: [`RADIATOR_CONNECTIONS`] on a radiator,
    /// [`BOOTSTRAP_CONNECTIONS`] on a bootstrap node ([`NodeConfig::max_connections`]).
    pub max_connections: Option<u32>,
    /// Public addresses of this node, known to reach it from the internet (a bootstrap
    /// node's). Empty (default): AutoNAT finds out.
    pub external_addresses: Vec<Multiaddr>,
    /// Listen through a relay while this node is not reachable from the internet. Default
    /// true.
    pub use_relays: bool,
    /// Ask the home router for a port mapping with UPnP. Default false.
    pub upnp: bool,
    /// Peers at public addresses in the routing table past which a node that is not
    /// reachable from the internet stops serving the DHT (Kademlia client mode) until fewer
    /// than half as many remain (`src/net/dht_role.rs`). Default 20; 0: never serve it while
    /// not reachable from the internet.
    pub dht_client_at: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Shards run at once at full heat demand. Default: the number of CPU cores.
    pub slots: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// How long a lease this node grants (as a coordinator) lasts, in seconds. A radiator that
    /// has not reported by then loses the shard to another. Default 60.
    pub lease_secs: u64,
    /// The longest a lease may be renewed to while its shard runs, in seconds from when it was
    /// granted; then it ends and the shard goes to another radiator. Default 600 (five times
    /// a radiator's 120 s shard watchdog, leaving room to fetch inputs on a slow link).
    pub lease_max_secs: u64,
}

/// The radiator's own limits (STYLE rule 18): a job's manifest may ask for less, never for
/// more. A job beyond them is declined, and the reason is shown to its submitter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most linear memory one shard may use, in MiB (64 KiB to 4096). Jobs asking for more
    /// are declined; the executor enforces it whatever a job asks. Default 1024.
    pub memory_per_shard_mib: u64,
    /// Most memory all running shards may use together (linear memory, inputs, outputs), in MiB;
    /// shards wait for a share, so this bounds how many run at once. Raised to `memory_per_shard_mib` if
    /// below it. Default 2048.
    pub memory_total_mib: u64,
    /// Largest module accepted, in MiB (at most 64). Checked before any byte is fetched.
    /// Default 16.
    pub module_mib: u64,
    /// Largest shard input accepted, in MiB (at most 256). Checked before any byte is
    /// fetched. Default 256.
    pub input_mib: u64,
    /// Most functions a module may define. Default 20000.
    pub functions: u32,
    /// Largest body of one function, in KiB. Default 1024.
    pub function_body_kib: u32,
    /// Most locals one function may declare. Default 20000.
    pub locals: u32,
    /// Longest a module may take to compile, in seconds. Default 60.
    pub compile_secs: u64,
    /// Disk quota of the content store, in MiB: a blob from a peer that would take the
    /// store past it is not fetched. Blobs fetched for a job are deleted once the job is
    /// closed or dropped. Default 10240 (10 GiB).
    pub store_mib: u64,
    /// Free space the store leaves on its disk, in MiB: a blob that would leave less is not
    /// stored (a peer's is not fetched, the household's own is refused with the reason), so
    /// the node's records always have room. 0 turns the check off. Default 256.
    pub disk_free_mib: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = crate::exec::RadiatorLimits::default();
        LimitsConfig {
            memory_per_shard_mib: d.memory_per_shard >> 20,
            memory_total_mib: d.memory_total >> 20,
            module_mib: d.module_bytes >> 20,
            input_mib: d.input_bytes >> 20,
            functions: d.functions,
            function_body_kib: d.function_body_bytes >> 10,
            locals: d.locals,
            compile_secs: d.compile_timeout.as_secs(),
            store_mib: 10 * 1024,
            disk_free_mib: 256,
        }
    }
}

impl LimitsConfig {
    /// The limits in the executor's units.
    pub fn radiator_limits(&self) -> crate::exec::RadiatorLimits {
        crate::exec::RadiatorLimits {
            memory_per_shard: self.memory_per_shard_mib.saturating_mul(1 << 20),
            memory_total: self.memory_total_mib.saturating_mul(1 << 20),
            module_bytes: self.module_mib.saturating_mul(1 << 20),
            input_bytes: self.input_mib.saturating_mul(1 << 20),
            functions: self.functions,
            function_body_bytes: self.function_body_kib.saturating_mul(1 << 10),
            locals: self.locals,
            compile_timeout: std::time::Duration::from_secs(self.compile_secs),
        }
    }

    /// Every value within what hearth can enforce, or a message naming the field.
    fn check(&self) -> Result<(), String> {
        let within = |name: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("limits.{name} = {v}: expected {lo} to {hi}"))
            }
        };
        within("memory_per_shard_mib", self.memory_per_shard_mib, 1, 4096)?;
        within("memory_total_mib", self.memory_total_mib, 1, 1 << 30)?;
        within("module_mib", self.module_mib, 1, 64)?;
        within("input_mib", self.input_mib, 1, 256)?;
        within("functions", self.functions.into(), 1, 1_000_000)?;
        within(
            "function_body_kib",
            self.function_body_kib.into(),
            1,
            64 * 1024,
        )?;
        within("locals", self.locals.into(), 1, 50_000)?;
        within("compile_secs", self.compile_secs, 1, 3600)?;
        within("store_mib", self.store_mib, 64, 1 << 24)?;
        within("disk_free_mib", self.disk_free_mib, 0, 1 << 24)
    }

    /// The store's disk quota in bytes.
    pub fn store_quota(&self) -> u64 {
        self.store_mib.saturating_mul(1 << 20)
    }

    /// The free space the store leaves on its disk, in bytes.
    pub fn disk_floor(&self) -> u64 {
        self.disk_free_mib.saturating_mul(1 << 20)
    }
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            lease_secs: 60,
            lease_max_secs: 600,
        }
    }
}

impl NodeConfig {
    /// `max_connections`, or the role's default when unset.
    pub fn max_connections(&self) -> u32 {
        self.max_connections.unwrap_or(match self.role {
            Role::Radiator => RADIATOR_CONNECTIONS,
            Role::Bootstrap => BOOTSTRAP_CONNECTIONS,
        })
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: vec![
                "/ip4/0.0.0.0/tcp/4001".parse().expect("valid literal"),
                "/ip4/0.0.0.0/udp/4001/quic-v1"
                    .parse()
                    .expect("valid literal"),
            ],
            api: SocketAddr::from(([127, 0, 0, 1], 7070)),
            api_allow_remote: false,
            bootstrap: Vec::new(),
            mdns: true,
            role: Role::Radiator,
            max_connections: None,
            external_addresses: Vec::new(),
            use_relays: true,
            upnp: false,
            dht_client_at: crate::net::dht_role::DEFAULT_CLIENT_AT,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            slots: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// Values given as command-line flags; `None`/empty means "not given".
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Vec<String>,
    pub api: Option<String>,
    pub api_allow_remote: bool,
    pub bootstrap: Vec<String>,
    pub no_mdns: bool,
    pub role: Option<Role>,
    pub slots: Option<usize>,
    pub max_connections: Option<u32>,
}

/// The commented file `hearth init` writes. Every line is a comment, so the defaults above stay
/// the single source of truth until the household changes something.
pub fn template() -> String {
    format!(
        "{NODE_TEMPLATE}{}{}{}",
        crate::heat::config::TEMPLATE,
        crate::homeassistant::TEMPLATE,
        crate::impact::TEMPLATE
    )
}

const NODE_TEMPLATE: &str = r#"# hearth.toml: configuration of this radiator.
# Precedence: built-in defaults < this file < HEARTH_* environment variables < flags.

[node]
# Addresses to listen on (HEARTH_LISTEN, comma-separated; --listen, repeatable).
# listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]

# Local HTTP API (HEARTH_API; --api). Clients need the token in api.token next to this file.
# api = "127.0.0.1:7070"

# Allow an API address other machines can reach, e.g. "0.0.0.0:7070" (HEARTH_API_ALLOW_REMOTE;
# --api-allow-remote). The token then crosses the network in clear: prefer an SSH tunnel.
# api_allow_remote = false

# Bootstrap peers, each ending in /p2p/<peer id> (HEARTH_BOOTSTRAP; --bootstrap).
# Empty means the default list shipped in bootstrap/peers.txt.
# bootstrap = []

# Find radiators on the local network with mDNS (HEARTH_MDNS=false; --no-mdns).
# mdns = true

# "radiator" runs shards; "bootstrap" only helps others find each other (HEARTH_ROLE; --role).
# role = "radiator"

# Most established connections (HEARTH_MAX_CONNECTIONS; --max-connections). Unset: 128 on a
# radiator, 1024 on a bootstrap node (its relay holds a connection to every node listening
# through it: [relay] max_reservations must stay below this).
# max_connections = 128

# Behind a home router nothing needs setting: the radiator learns whether it is reachable
# (AutoNAT), listens through a bootstrap relay when it is not, and hole punches to peers.
# Public addresses of this node (set them on a bootstrap node), e.g. ["/ip4/203.0.113.7/tcp/4001"].
# external_addresses = []
# Listen through a relay while not reachable from the internet.
# use_relays = true
# Ask the home router for a port mapping with UPnP (off: many routers' UPnP is a risk).
# upnp = false
# Behind NAT, stop answering other nodes' DHT lookups (each would cost a relay circuit) once
# the routing table holds this many peers at public addresses; 0: never answer them.
# dht_client_at = 20

[relay]
# A bootstrap node relays for homes behind NAT (serve defaults to true for role = "bootstrap").
# A relayed connection only carries the hole punch and small control messages.
# serve = false
# max_reservations = 256
# max_circuits = 64
# max_circuits_per_peer = 8
# max_circuit_secs = 120
# max_circuit_kib = 1024
# Circuits one peer may ask for at once, and seconds until it may ask for one more; the
# same per source IP address (docs/operations.md, "Running a relay").
# circuit_burst_per_peer = 30
# circuit_refill_per_peer_secs = 120
# circuit_burst_per_ip = 60
# circuit_refill_per_ip_secs = 60

[worker]
# Shards run at once when the room wants full heat (HEARTH_SLOTS; --slots). Default: CPU cores.
# slots = 2

[jobs]
# How long a lease granted by this node lasts, in seconds, before the shard goes to another
# radiator (HEARTH_LEASE_SECS).
# lease_secs = 60
# Radiators renew a lease while the shard runs; this is the longest one can be renewed to,
# in seconds from when it was granted.
# lease_max_secs = 600

[limits]
# This radiator's own limits. A job may ask for less, never for more: a job beyond them is
# declined, and its submitter sees why in `hearth job status`.
# Most memory one shard may use, in MiB (HEARTH_MEMORY_PER_SHARD_MIB).
# memory_per_shard_mib = 1024
# Most memory all running shards may use together (inputs and outputs counted), in MiB; shards
# wait for their share (HEARTH_MEMORY_TOTAL_MIB).
# memory_total_mib = 2048
# Largest module and shard input, in MiB, refused before any byte is fetched
# (HEARTH_MODULE_MIB, HEARTH_INPUT_MIB).
# module_mib = 16
# input_mib = 256
# Shape of a module: most functions, largest function body in KiB, most locals per function
# (HEARTH_FUNCTIONS, HEARTH_FUNCTION_BODY_KIB, HEARTH_LOCALS).
# functions = 20000
# function_body_kib = 1024
# locals = 20000
# Longest a module may take to compile, in seconds (HEARTH_COMPILE_SECS).
# compile_secs = 60
# Disk quota of the blob store, in MiB: blobs from peers beyond it are not fetched; blobs
# fetched for a job are deleted once it closes (HEARTH_STORE_MIB).
# store_mib = 10240
# Free space the blob store leaves on the disk, in MiB: a blob that would leave less is not
# stored, so leases, claims and receipts always have room; 0 turns it off (HEARTH_DISK_FREE_MIB).
# disk_free_mib = 256
"#;

impl Config {
    /// Defaults, then `data_dir/hearth.toml` if it exists, then the environment as read by
    /// `env`, then `flags`.
    pub fn load(
        data_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let path = data_dir.join(CONFIG_FILE);
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(source) => return Err(ConfigError::Io { path, source }),
        };
        config.apply_env(env)?;
        config.apply_flags(flags)?;
        config.limits.check().map_err(ConfigError::Limit)?;
        config.check_connections().map_err(ConfigError::Limit)?;
        Ok(config)
    }

    /// The connection limit within what hearth can hold, and room in it for every node this
    /// node's relay (if it serves as one) lets listen through it.
    fn check_connections(&self) -> Result<(), String> {
        let n = self.node.max_connections();
        parse_connections(&n.to_string())
            .map_err(|r| format!("node.max_connections = {n}: {r}"))?;
        if let Some(relay) = self.relay.limits(self.node.role) {
            if relay.max_reservations >= n as usize {
                return Err(format!(
                    "relay.max_reservations = {} does not fit in node.max_connections = {n}: \
                     every node listening through this relay holds a connection to it, and \
                     other peers need some too; raise max_connections above max_reservations \
                     or lower max_reservations",
                    relay.max_reservations
                ));
            }
        }
        Ok(())
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let bad = |var: &str, value: &str, reason: String| ConfigError::Env {
            var: var.into(),
            value: value.into(),
            reason,
        };
        if let Some(v) = env("HEARTH_LISTEN") {
            self.node.listen = parse_list(&v).map_err(|r| bad("HEARTH_LISTEN", &v, r))?;
        }
        if let Some(v) = env("HEARTH_API") {
            self.node.api = v
                .parse()
                .map_err(|e| bad("HEARTH_API", &v, format!("expected HOST:PORT ({e})")))?;
        }
        if let Some(v) = env("HEARTH_API_ALLOW_REMOTE") {
            self.node.api_allow_remote =
                parse_bool(&v).map_err(|r| bad("HEARTH_API_ALLOW_REMOTE", &v, r))?;
        }
        if let Some(v) = env("HEARTH_BOOTSTRAP") {
            self.node.bootstrap = parse_list(&v).map_err(|r| bad("HEARTH_BOOTSTRAP", &v, r))?;
        }
        if let Some(v) = env("HEARTH_MDNS") {
            self.node.mdns = parse_bool(&v).map_err(|r| bad("HEARTH_MDNS", &v, r))?;
        }
        if let Some(v) = env("HEARTH_ROLE") {
            self.node.role = v.parse().map_err(|r| bad("HEARTH_ROLE", &v, r))?;
        }
        if let Some(v) = env("HEARTH_SLOTS") {
            self.worker.slots = parse_slots(&v).map_err(|r| bad("HEARTH_SLOTS", &v, r))?;
        }
        if let Some(v) = env("HEARTH_MAX_CONNECTIONS") {
            self.node.max_connections =
                Some(parse_connections(&v).map_err(|r| bad("HEARTH_MAX_CONNECTIONS", &v, r))?);
        }
        let limits = &mut self.limits;
        for (var, field) in [
            (
                "HEARTH_MEMORY_PER_SHARD_MIB",
                &mut limits.memory_per_shard_mib,
            ),
            ("HEARTH_MEMORY_TOTAL_MIB", &mut limits.memory_total_mib),
            ("HEARTH_MODULE_MIB", &mut limits.module_mib),
            ("HEARTH_INPUT_MIB", &mut limits.input_mib),
            ("HEARTH_COMPILE_SECS", &mut limits.compile_secs),
            ("HEARTH_STORE_MIB", &mut limits.store_mib),
            ("HEARTH_DISK_FREE_MIB", &mut limits.disk_free_mib),
        ] {
            if let Some(v) = env(var) {
                *field = v
                    .trim()
                    .parse()
                    .map_err(|_| bad(var, &v, "expected a whole number".into()))?;
            }
        }
        for (var, field) in [
            ("HEARTH_FUNCTIONS", &mut limits.functions),
            ("HEARTH_FUNCTION_BODY_KIB", &mut limits.function_body_kib),
            ("HEARTH_LOCALS", &mut limits.locals),
        ] {
            if let Some(v) = env(var) {
                *field = v
                    .trim()
                    .parse()
                    .map_err(|_| bad(var, &v, "expected a whole number".into()))?;
            }
        }
        if let Some(v) = env("HEARTH_LEASE_SECS") {
            self.jobs.lease_secs = match v.trim().parse::<u64>() {
                Ok(n) if (1..=86_400).contains(&n) => n,
                _ => {
                    return Err(bad(
                        "HEARTH_LEASE_SECS",
                        &v,
                        "expected seconds from 1 to 86400".into(),
                    ))
                }
            };
        }
        Ok(())
    }

    fn apply_flags(&mut self, flags: &Overrides) -> Result<(), ConfigError> {
        let bad = |flag: &str, reason: String| ConfigError::Flag {
            flag: flag.into(),
            reason,
        };
        if !flags.listen.is_empty() {
            self.node.listen = flags
                .listen
                .iter()
                .map(|s| parse_addr(s))
                .collect::<Result<_, _>>()
                .map_err(|r| bad("--listen", r))?;
        }
        if let Some(v) = &flags.api {
            self.node.api = v
                .parse()
                .map_err(|e| bad("--api", format!("{v:?}: expected HOST:PORT ({e})")))?;
        }
        if flags.api_allow_remote {
            self.node.api_allow_remote = true;
        }
        if !flags.bootstrap.is_empty() {
            self.node.bootstrap = flags
                .bootstrap
                .iter()
                .map(|s| parse_addr(s))
                .collect::<Result<_, _>>()
                .map_err(|r| bad("--bootstrap", r))?;
        }
        if flags.no_mdns {
            self.node.mdns = false;
        }
        if let Some(role) = flags.role {
            self.node.role = role;
        }
        if let Some(n) = flags.max_connections {
            self.node.max_connections =
                Some(parse_connections(&n.to_string()).map_err(|r| bad("--max-connections", r))?);
        }
        if let Some(slots) = flags.slots {
            self.worker.slots = parse_slots(&slots.to_string()).map_err(|r| bad("--slots", r))?;
        }
        Ok(())
    }
}

/// The data directory: the flag, else `$HEARTH_DATA_DIR`, else `~/.local/share/hearth`.
pub fn data_dir(
    flag: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf, ConfigError> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = env("HEARTH_DATA_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = env("HOME")
        .filter(|h| !h.is_empty())
        .ok_or(ConfigError::NoDataDir)?;
    Ok(Path::new(&home).join(".local/share/hearth"))
}

/// Reads the process environment; tests pass their own closure instead.
pub fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

fn parse_addr(s: &str) -> Result<Multiaddr, String> {
    s.trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a multiaddr ({e})"))
}

fn parse_list(s: &str) -> Result<Vec<Multiaddr>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(parse_addr)
        .collect()
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_connections(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=65_536).contains(&n) => Ok(n),
        _ => Err("expected a number of connections from 1 to 65536".into()),
    }
}

fn parse_slots(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err("expected a whole number of worker slots from 1 to 1024".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// A relay holds a connection to every node listening through it. A bootstrap node's
    /// default connections fell short of its relay's default reservations (128 against 256):
    /// in `testnet/dht-scale` with 150 homes, those past the 128th were refused again and again.
    #[test]
    fn a_bootstrap_nodes_default_connections_hold_every_reservation_its_relay_allows() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "[node]\nrole = \"bootstrap\"\n",
        )
        .unwrap();
        let c = Config::load(dir.path(), &env_of(&[]), &Overrides::default()).unwrap();
        let relay = c
            .relay
            .limits(c.node.role)
            .expect("a bootstrap node relays");
        assert!(c.node.max_connections() as usize > relay.max_reservations);
        assert_eq!(c.node.max_connections(), BOOTSTRAP_CONNECTIONS);
        let radiator = Config::default();
        assert_eq!(radiator.node.max_connections(), RADIATOR_CONNECTIONS);

        // An operator's limit that leaves no room is refused, naming both settings.
        let flags = Overrides {
            max_connections: Some(256),
            ..Overrides::default()
        };
        let err = Config::load(dir.path(), &env_of(&[]), &flags)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("relay.max_reservations = 256") && err.contains("max_connections = 256"),
            "{err}"
        );
        let flags = Overrides {
            max_connections: Some(300),
            ..Overrides::default()
        };
        let c = Config::load(dir.path(), &env_of(&[]), &flags).unwrap();
        assert_eq!(c.node.max_connections(), 300);
    }

    #[test]
    fn template_parses_to_defaults() {
        let c = Config::parse(&template(), Path::new("hearth.toml")).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn precedence_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "[node]\napi = \"127.0.0.1:8001\"\nmdns = false\nrole = \"bootstrap\"\n[worker]\nslots = 3\n",
        )
        .unwrap();
        let none = env_of(&[]);
        // File over defaults.
        let c = Config::load(dir.path(), &none, &Overrides::default()).unwrap();
        assert_eq!(c.node.api.port(), 8001);
        assert!(!c.node.mdns);
        assert_eq!(c.node.role, Role::Bootstrap);
        assert_eq!(c.worker.slots, 3);
        assert_eq!(c.node.listen, NodeConfig::default().listen);
        assert!(!c.node.api_allow_remote);
        // Env over file.
        let env = env_of(&[
            ("HEARTH_API", "127.0.0.1:8002"),
            ("HEARTH_MDNS", "true"),
            ("HEARTH_SLOTS", "4"),
            ("HEARTH_API_ALLOW_REMOTE", "yes"),
        ]);
        let c = Config::load(dir.path(), &env, &Overrides::default()).unwrap();
        assert_eq!(c.node.api.port(), 8002);
        assert!(c.node.mdns);
        assert_eq!(c.worker.slots, 4);
        assert!(c.node.api_allow_remote);
        assert_eq!(c.node.role, Role::Bootstrap);
        // Flags over env.
        let flags = Overrides {
            api: Some("127.0.0.1:8003".into()),
            no_mdns: true,
            role: Some(Role::Radiator),
            listen: vec!["/ip4/127.0.0.1/tcp/5000".into()],
            ..Overrides::default()
        };
        let c = Config::load(dir.path(), &env, &flags).unwrap();
        assert_eq!(c.node.api.port(), 8003);
        assert!(!c.node.mdns);
        assert_eq!(c.node.role, Role::Radiator);
        assert_eq!(c.node.listen.len(), 1);
        assert_eq!(c.worker.slots, 4);
    }

    #[test]
    fn malformed_file_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "[node]\nmdns = true\napi = 7\n",
        )
        .unwrap();
        let err = Config::load(dir.path(), &env_of(&[]), &Overrides::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("hearth.toml"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        std::fs::write(dir.path().join(CONFIG_FILE), "[node]\nmdsn = true\n").unwrap();
        let msg = Config::load(dir.path(), &env_of(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("mdsn") && msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn malformed_env_and_flags_name_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(
            dir.path(),
            &env_of(&[("HEARTH_SLOTS", "lots")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("HEARTH_SLOTS"), "{err}");
        let flags = Overrides {
            bootstrap: vec!["not-an-address".into()],
            ..Overrides::default()
        };
        let err = Config::load(dir.path(), &env_of(&[]), &flags).unwrap_err();
        assert!(err.to_string().contains("--bootstrap"), "{err}");
    }

    #[test]
    fn limits_come_from_file_then_env_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "[limits]\nmemory_per_shard_mib = 256\nfunctions = 500\n",
        )
        .unwrap();
        let c = Config::load(dir.path(), &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.limits.memory_per_shard_mib, 256);
        assert_eq!(c.limits.functions, 500);
        assert_eq!(c.limits.compile_secs, LimitsConfig::default().compile_secs);
        let env = env_of(&[("HEARTH_COMPILE_SECS", "5"), ("HEARTH_FUNCTIONS", "900")]);
        let c = Config::load(dir.path(), &env, &Overrides::default()).unwrap();
        assert_eq!(c.limits.compile_secs, 5);
        assert_eq!(c.limits.functions, 900);
        let r = c.limits.radiator_limits();
        assert_eq!(r.memory_per_shard, 256 << 20);
        assert_eq!(r.compile_timeout, std::time::Duration::from_secs(5));
        // The defaults are the executor's defaults.
        assert_eq!(
            LimitsConfig::default().radiator_limits(),
            crate::exec::RadiatorLimits::default()
        );
        // Out of range or malformed: the error names the field or the variable.
        let env = env_of(&[("HEARTH_MODULE_MIB", "100")]);
        let err = Config::load(dir.path(), &env, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("module_mib"), "{err}");
        let env = env_of(&[("HEARTH_LOCALS", "many")]);
        let err = Config::load(dir.path(), &env, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("HEARTH_LOCALS"), "{err}");
    }

    #[test]
    fn a_relays_circuit_rates_come_from_the_file_and_zero_is_refused() {
        let text = "[relay]\ncircuit_burst_per_peer = 90\ncircuit_refill_per_peer_secs = 10\n\
                    circuit_burst_per_ip = 500\ncircuit_refill_per_ip_secs = 2\n";
        let c = Config::parse(text, Path::new("hearth.toml")).unwrap();
        let l = c
            .relay
            .limits(Role::Bootstrap)
            .expect("a bootstrap node relays");
        assert_eq!(l.circuit_rate_per_peer.burst.get(), 90);
        assert_eq!(
            l.circuit_rate_per_peer.every,
            std::time::Duration::from_secs(10)
        );
        assert_eq!(l.circuit_rate_per_ip.burst.get(), 500);
        assert_eq!(
            l.circuit_rate_per_ip.every,
            std::time::Duration::from_secs(2)
        );
        let defaults = Config::default().relay.limits(Role::Bootstrap).unwrap();
        assert_eq!(defaults, crate::net::RelayLimits::default());
        for bad in [
            "circuit_burst_per_peer = 0",
            "circuit_refill_per_ip_secs = 0",
        ] {
            let err = Config::parse(&format!("[relay]\n{bad}\n"), Path::new("hearth.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("hearth.toml") && err.contains("nonzero"),
                "{err}"
            );
        }
    }

    #[test]
    fn impact_assumptions_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "[impact]\ngrid_g_co2_per_kwh = 400.0\nreplaced = \"gas\"\n",
        )
        .unwrap();
        let c = Config::load(dir.path(), &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.impact.grid_g_co2_per_kwh, 400.0);
        assert_eq!(c.impact.replaced, crate::impact::Replaced::Gas);
        assert_eq!(c.impact.pue, crate::impact::Assumptions::default().pue);
        std::fs::write(dir.path().join(CONFIG_FILE), "[impact]\ngrid = 400.0\n").unwrap();
        let msg = Config::load(dir.path(), &env_of(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("grid") && msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn data_dir_precedence() {
        let env = env_of(&[("HEARTH_DATA_DIR", "/a"), ("HOME", "/h")]);
        assert_eq!(
            data_dir(Some(Path::new("/f")), &env).unwrap(),
            PathBuf::from("/f")
        );
        assert_eq!(data_dir(None, &env).unwrap(), PathBuf::from("/a"));
        let env = env_of(&[("HOME", "/h")]);
        assert_eq!(
            data_dir(None, &env).unwrap(),
            PathBuf::from("/h/.local/share/hearth")
        );
        assert!(data_dir(None, &env_of(&[])).is_err());
    }
}
