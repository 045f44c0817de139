//! One radiator: wires the identity, store, ledger, executor, network, coordinator, worker
//! and local API together, hands network events to its router (`router.rs`), and owns
//! shutdown.
//!
//! Every service runs as a named task (`services.rs`); a single `watch` signal (ctrl-c,
//! SIGTERM, or [`RunningNode::shutdown`]) tells them all to stop, those not stopped within
//! `services::STOP_WAIT` are named in the log and aborted, and then sled is flushed. Gossip is
//! validated by the router, where the model types are decoded: a message that does not
//! decode, names the wrong author or carries a bad signature is rejected, which counts
//! against its sender's gossipsub score.
//!
//! Size: about 880 lines, past the house style's ~700: start-up wiring of every service
//! (the trust service since issue 10) and the integrity checkpoint, which is the first thing
//! to move out if it grows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{Config, Role};
use crate::exec::Executor;
use crate::identity::{Identity, PublicKey};
use crate::integrity::ReceiptsGate;
use crate::jobs::{
    ControlRoute, Coordinator, CoordinatorConfig, CoordinatorHandle, Loopback, Worker, WorkerConfig,
};
use crate::ledger::{Ledger, LedgerError};
use crate::model::wire::JobGossip;
use crate::net::{self, NetConfig, NetEvent, Network, Topic};

pub mod auditors;
mod gate;
pub mod instances;
mod key_log;
pub mod offers;
pub mod refusals;
pub mod revoked;
mod router;
mod services;
mod tasks;
pub mod witness;
use crate::store::Store;
use auditors::Auditors;
use offers::Offers;
use refusals::Refusals;
use revoked::RevokedKeys;
use router::Router;
use services::Services;
use witness::Witnesses;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("opening the database in {path}: another hearth node is running on this data directory ({source})")]
    DbLocked {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("opening the database in {path}: the disk is full ({source}); free some space and start again")]
    DiskFull {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("opening the database in {path}: {source}; run `hearth doctor` to check it")]
    Db {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("opening the database in {path}: {source}; run `hearth doctor` to check it")]
    DbIntent {
        path: PathBuf,
        #[source]
        source: crate::kv::KvError,
    },
    #[error(transparent)]
    Integrity(#[from] crate::integrity::IntegrityError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Jobs(#[from] crate::jobs::JobError),
    #[error(transparent)]
    Exec(#[from] crate::exec::ExecError),
    #[error("network: {0}")]
    Net(#[from] crate::net::NetError),
    #[error(transparent)]
    Heat(#[from] crate::heat::HeatError),
    #[error(transparent)]
    HomeAssistant(#[from] crate::homeassistant::HaError),
    #[error(
        "refusing to serve the local API on {addr}: other machines could reach it there. \
             Use 127.0.0.1:PORT, or if you mean it set `[node] api_allow_remote = true` \
             (HEARTH_API_ALLOW_REMOTE=true, --api-allow-remote); every request still needs the \
             API token, which plain HTTP carries in clear"
    )]
    ApiNotLoopback { addr: SocketAddr },
    #[error("API token: {0}")]
    ApiToken(#[from] crate::api::auth::TokenError),
    #[error("key log: {0:#}")]
    KeyLog(anyhow::Error),
    #[error("local API on {addr}: {source}")]
    Api {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Everything needed to start a node, beyond what `hearth.toml` says.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub data_dir: PathBuf,
    pub config: Config,
    pub coordinator: CoordinatorConfig,
    pub worker: WorkerConfig,
    /// Longest the first receipt commitment after the start waits for the bootstrap nodes to
    /// say how far this key's numbering went (`node::auditors`; default 60 s).
    pub numbering_wait: std::time::Duration,
    /// How often a running node asks its bootstrap nodes again, to find another node signing
    /// commitments with its key (`node::auditors`; default 120 s).
    pub numbering_check: std::time::Duration,
    /// On a bootstrap node: how long it lends a key to an instance of it that it does not hear
    /// from (`node::instances`; default 300 s).
    pub instance_lease: std::time::Duration,
    /// How long a node with nothing to seal keeps its key's lease before it gives it back and
    /// stops asking its bootstrap nodes (`node::auditors`; default 600 s).
    pub lease_idle: std::time::Duration,
    /// Test-only network fault injection.
    #[doc(hidden)]
    pub net_fault: net::FaultInjection,
}

impl NodeOptions {
    pub fn new(data_dir: &Path, config: Config) -> NodeOptions {
        let coordinator = CoordinatorConfig {
            lease: std::time::Duration::from_secs(config.jobs.lease_secs.max(1)),
            lease_max: std::time::Duration::from_secs(
                config
                    .jobs
                    .lease_max_secs
                    .max(config.jobs.lease_secs)
                    .max(1),
            ),
            trust: config.trust.clone(),
            ..CoordinatorConfig::default()
        };
        NodeOptions {
            data_dir: data_dir.to_path_buf(),
            config,
            coordinator,
            worker: WorkerConfig::default(),
            numbering_wait: auditors::NUMBERING_WAIT,
            numbering_check: auditors::NUMBERING_CHECK,
            instance_lease: instances::INSTANCE_LEASE,
            lease_idle: auditors::LEASE_IDLE,
            net_fault: net::FaultInjection::default(),
        }
    }
}

/// Opens (or creates) the sled database of a data directory.
pub fn open_db(data_dir: &Path) -> Result<sled::Db, NodeError> {
    let path = data_dir.join("db");
    // sled opened on a full disk can leave a database it later calls corrupt even once space
    // returns (tests/integrity.rs), so it is not opened without room to write.
    if let Some(free) = crate::store::free_bytes(data_dir).filter(|&f| f < MIN_FREE_BYTES) {
        return Err(NodeError::DiskFull {
            path,
            source: sled::Error::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("{free} bytes free, at least {MIN_FREE_BYTES} needed"),
            )),
        });
    }
    // Opened through kv: a batch a crash interrupted is finished before anything reads.
    crate::kv::open(&path).map_err(|e| match e {
        crate::kv::KvError::Db(source) => db_error(path, source),
        source => NodeError::DbIntent { path, source },
    })
}

/// For tests: opens a database the test had open a moment ago. sled releases its file lock
/// when its last internal handle goes, and its threads may still hold one for a moment (CI
/// once failed with "could not acquire lock"), so this retries for up to 5 s.
#[cfg(test)]
pub(crate) fn reopen_db(path: &Path) -> sled::Db {
    reopen_db_with(path, crate::kv::open)
        .unwrap_or_else(|e| panic!("reopening {}: {e}", path.display()))
}

/// A plain sled database for a unit test, opened like [`reopen_db`]: a database dropped just
/// before in this process may still hold its file lock for a moment (sled's flusher thread
/// ends on its own time), which under load failed tests that reopen one ("could not acquire
/// lock").
#[cfg(test)]
pub(crate) fn test_db(path: impl AsRef<Path>) -> sled::Result<sled::Db> {
    reopen_db_with(path.as_ref(), |p| sled::open(p))
}

/// [`reopen_db`] with the opening function given; returns its last result.
#[cfg(test)]
pub(crate) fn reopen_db_with<T, E: std::fmt::Display>(
    path: &Path,
    open: impl Fn(&Path) -> Result<T, E>,
) -> Result<T, E> {
    for _ in 0..250 {
        match open(path) {
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            result => return result,
        }
    }
    open(path)
}

/// How long [`RunningNode::shutdown`] waits for the database's file lock to be released: a
/// shard re-run on the blocking pool ends within its own wall-clock limit, sled's flusher
/// within one flush.
const DB_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long [`RunningNode::shutdown`] waits for the swarm task to acknowledge the stop.
const NET_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until nothing holds `lock` (the `flock` sled takes on `DATA_DIR/db/db`) or `wait`
/// passed. Takes the lock for an instant itself, non-blocking, then lets it go.
fn wait_unlocked(lock: &Path, wait: std::time::Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(lock)?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            // SAFETY: as above.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::WouldBlock || std::time::Instant::now() >= deadline {
            return Err(e);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The directory of a node's large blobs (`DATA_DIR/blobs`, docs/storage.md §4).
pub fn blob_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("blobs")
}

/// Free space the database needs to open safely: several of sled's 512 KiB log segments.
const MIN_FREE_BYTES: u64 = 8 << 20;

/// Names why sled would not open: only a lock really held blames another node (sled reports
/// it as an I/O error of kind `Other` saying it "could not acquire lock").
fn db_error(path: PathBuf, source: sled::Error) -> NodeError {
    match &source {
        sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
            NodeError::DbLocked { path, source }
        }
        sled::Error::Io(e)
            if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) =>
        {
            NodeError::DiskFull { path, source }
        }
        _ => NodeError::Db { path, source },
    }
}

/// Shared state the API reads.
#[derive(Clone)]
pub struct NodeContext {
    pub identity: Identity,
    pub role: Role,
    pub store: Store,
    pub ledger: Ledger,
    pub net: Network,
    pub coordinator: CoordinatorHandle,
    pub started: Instant,
    /// Worker slots the room currently wants filled.
    pub slots: watch::Sender<usize>,
    pub max_slots: usize,
    /// The heat service (radiators only).
    pub heat: Option<crate::heat::HeatHandle>,
    /// Trust: fraud evidence and what `hearth trust` shows (`jobs::trust::service`).
    pub trust: crate::jobs::trust::service::TrustHandle,
    /// The worker's executor: its memory budget is shown in the status and metrics.
    pub executor: Executor,
    /// Who is being answered a `Receipts` request now (`integrity::ReceiptsGate`).
    pub receipts_gate: ReceiptsGate,
    /// The auditor's log of commitments heard (bootstrap nodes only; `crate::audit`).
    pub audit: Option<crate::audit::AuditLog>,
    /// Keys revoked by their households or caught equivocating, with the proofs: no work is
    /// taken from them (`node::refusals`, `node::revoked`).
    pub refusals: Refusals,
    /// What this node asks of and tells its bootstrap nodes; whether another node signs with
    /// its key (`node::auditors`).
    pub auditors: Auditors,
    /// The commitments this node's receipts came in, handed to its bootstrap nodes; on an
    /// auditor, how many radiators handed it (`node::witness`).
    pub witnesses: Witnesses,
}

pub struct RunningNode {
    pub context: NodeContext,
    pub api_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    /// Every service of the node; each reports its name and exit reason.
    services: Services,
    db: sled::Db,
    data_dir: PathBuf,
}

impl RunningNode {
    pub fn peer_id(&self) -> libp2p::PeerId {
        self.context.net.local_peer_id()
    }

    pub fn household(&self) -> PublicKey {
        self.context.identity.public()
    }

    /// Stops every service and flushes the database. Returns the services that failed as
    /// they stopped ("name: reason"; each is also logged), and "final flush: reason" if the
    /// database's last flush was given up (`kv::gave_up`; it is then left open): none, for a
    /// node shutting down
    /// cleanly.
    pub async fn shutdown(mut self) -> Vec<String> {
        // Receivers are held by the services; none listening means all have stopped.
        let _ = self.shutdown.send(true);
        // This run gives its key's lease back while the network still runs.
        self.context.auditors.leave().await;
        // The swarm task answers at once unless stuck; if it is, the services' bound below
        // names and aborts it.
        if tokio::time::timeout(NET_STOP_WAIT, self.context.net.shutdown())
            .await
            .is_err()
        {
            tracing::error!(
                "the network did not stop within {} s",
                NET_STOP_WAIT.as_secs()
            );
        }
        let mut failed = self.services.stop(services::STOP_WAIT).await;
        if let Err(e) = crate::kv::flush(&self.db).await {
            tracing::error!("could not flush the database on shutdown: {e}");
            if crate::kv::gave_up(&e) {
                // sled will confirm nothing more in this process, and dropping the database
                // would park this thread in sled's own last flush: it stays open (its lock
                // too) until the process ends, and the restart recovers what was confirmed.
                tracing::error!("the database stopped confirming writes; restart the node");
                let RunningNode {
                    context,
                    services,
                    db,
                    ..
                } = self;
                drop((context, services));
                std::mem::forget(db);
                failed.push(format!("final flush: {e}"));
                return failed;
            }
        }
        match crate::jobs::coordinator::persist::Persist::open(&self.db) {
            Ok(persist) => {
                if let Err(e) = crate::integrity::checkpoint(
                    &self.data_dir,
                    &self.db,
                    &self.context.ledger,
                    &persist,
                )
                .await
                {
                    tracing::error!("could not write the database checkpoint on shutdown: {e}");
                }
            }
            Err(e) => tracing::error!("could not write the database checkpoint on shutdown: {e}"),
        }
        // Returns once the database is let go of, so the same data directory can be opened
        // again at once (a test restarting a node in-process failed with "could not acquire
        // lock" otherwise): every handle here is dropped, then the lock waited for, since
        // sled's own threads and the last blocking tasks of aborted services may still hold
        // one for a moment.
        let RunningNode {
            context,
            services,
            db,
            data_dir,
            ..
        } = self;
        drop((context, services, db));
        let lock = data_dir.join("db").join("db");
        match tokio::task::spawn_blocking(move || wait_unlocked(&lock, DB_RELEASE_WAIT)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("the database is still held after shutdown: {e}"),
            Err(e) => tracing::warn!("could not wait for the database to be released: {e}"),
        }
        failed
    }

    /// Runs until ctrl-c, SIGTERM or a service ends, then shuts down. Returns why, if a
    /// service failed, did not stop in time or the last flush was given up (the process then
    /// exits non-zero, so a supervisor restarts it: how a node recovers from a database that
    /// refused a write, see docs/storage.md).
    pub async fn run_until_signal(mut self) -> Result<(), String> {
        let mut stop = self.shutdown.subscribe();
        let mut failed = Vec::new();
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("signal received; shutting down"),
            Some((name, exit)) = self.services.next() => {
                if let Err(e) = exit {
                    failed.push(format!("{name}: {e}"));
                }
                tracing::warn!(service = name, "a service stopped; shutting down");
            }
            _ = stop.changed() => tracing::info!("shutdown requested"),
        }
        failed.extend(self.shutdown().await);
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Starts a node on `opts.data_dir`, which must hold a household key (`hearth init`).
pub async fn start(opts: NodeOptions) -> Result<RunningNode, NodeError> {
    if !opts.config.node.api.ip().is_loopback() && !opts.config.node.api_allow_remote {
        return Err(NodeError::ApiNotLoopback {
            addr: opts.config.node.api,
        });
    }
    let identity = Identity::load(&opts.data_dir)?;
    // Data directories made before API tokens existed get one now.
    let (api_token, _) = crate::api::auth::ApiToken::load_or_create(&opts.data_dir)?;
    let db = open_db(&opts.data_dir)?;
    let store = Store::with_files(&db, &blob_dir(&opts.data_dir))?;
    store.set_quota(opts.config.limits.store_quota());
    store.set_disk_floor(opts.config.limits.disk_floor());
    // The household's keys, first to current (`hearth key`): receipts crediting any of them
    // are its own.
    let own = crate::keys::own_keys(&opts.data_dir, &identity).map_err(NodeError::KeyLog)?;
    let ledger = Ledger::open(&db, crate::ledger::Own::chain(own))?;
    // Before anything is served: a damaged database stops the start (docs/storage.md).
    crate::integrity::ensure_intact(&opts.data_dir, &db, &ledger).await?;
    let config = &opts.config;
    // The radiator's own limits, which no job can raise (STYLE rule 18).
    let executor = Executor::with_limits(config.limits.radiator_limits())?;

    let bootstrap = if config.node.bootstrap.is_empty() {
        net::default_bootstrap()?
    } else {
        config.node.bootstrap.clone()
    };
    // The auditors this node asks how far its key's numbering went before it seals, and
    // tells of the commitments its receipts came in.
    let bootstrap_peers = auditors::bootstrap_peers(&bootstrap, identity.peer_id());
    let mut net_config = NetConfig::new(identity.libp2p_keypair());
    net_config.listen = config.node.listen.clone();
    net_config.bootstrap = bootstrap;
    // A bootstrap node serves the internet at large; multicast on its LAN helps nobody.
    net_config.mdns = config.node.mdns && config.node.role == Role::Radiator;
    net_config.max_connections = config.node.max_connections();
    net_config.external_addrs = config.node.external_addresses.clone();
    net_config.relay_client = config.node.use_relays && config.node.role == Role::Radiator;
    net_config.upnp = config.node.upnp;
    net_config.dht_client_at = config.node.dht_client_at;
    net_config.relay_server = config.relay.limits(config.node.role);
    // A bootstrap node holds its newcomers' connections; a radiator only those it uses.
    if config.node.role == Role::Bootstrap {
        net_config.peer_watermarks = None;
    }
    net_config.fault = opts.net_fault.clone();
    // Radiators hear no one's receipt commitments; bootstrap nodes audit them.
    net_config.topics = Topic::ALL
        .into_iter()
        .filter(|t| *t != Topic::Commitments || config.node.role == Role::Bootstrap)
        .collect();
    let (net, mut events, net_task) = net::spawn(net_config, store.clone()).await?;
    // The nodes that hear commitments keep the auditor's log of them (`crate::audit`).
    let audit = match config.node.role {
        Role::Bootstrap => Some(crate::audit::AuditLog::open(&db)?),
        Role::Radiator => None,
    };
    let revoked = RevokedKeys::open(&db).map_err(|source| NodeError::Db {
        path: opts.data_dir.clone(),
        source,
    })?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut services = Services::default();
    services.spawn("network", async move {
        services::joined(net_task).await.map_err(|e| e.to_string())
    });
    let checkpoint = crate::integrity::keep_checkpoint(
        opts.data_dir.clone(),
        db.clone(),
        ledger.clone(),
        shutdown_rx.clone(),
    );
    services.spawn("database", checkpoint);

    // Bounded: announcements beyond it are dropped and arrive again with the next one.
    let (worker_tx, worker_rx) = mpsc::channel(256);
    // This node's own job announcements, routed to its worker like a peer's gossip.
    let (own_tx, mut own_rx) = mpsc::channel::<JobGossip>(256);
    let (coordinator, coordinator_handle) = Coordinator::new(
        &db,
        identity.clone(),
        store.clone(),
        ledger.clone(),
        net.clone(),
        CoordinatorConfig {
            own_addresses: config.node.external_addresses.clone(),
            await_numbering: !bootstrap_peers.is_empty(),
            auditors: bootstrap_peers.iter().copied().collect(),
            ..opts.coordinator.clone()
        },
        own_tx,
    )?;
    // No lease, renewal or vote for a key this node refuses (`jobs::coordinator::book::refused`),
    // nor for a key its household rotated away from (`node::key_log`), whose receipts go to
    // the household's current key.
    let key_book = key_log::KeyBook::open(&db).map_err(|source| NodeError::Db {
        path: opts.data_dir.clone(),
        source,
    })?;
    let refused_workers = revoked.clone();
    let retired_workers = key_book.clone();
    let current_keys = key_book.clone();
    let coordinator = coordinator
        .delivering_to_current(std::sync::Arc::new(move |key: &PublicKey| {
            current_keys.retired(key)
        }))
        .refusing(std::sync::Arc::new(move |household: &PublicKey| {
            refused_workers
                .reasons(household)
                .map(|r| r.worker_sentence())
                .or_else(|| {
                    retired_workers.retired(household).map(|_| {
                        "your household rotated this key to its next one (`hearth key rotate`): \
                     this coordinator leases nothing to it and counts no claim of it"
                    })
                })
        }));
    let coordinator_stop = shutdown_rx.clone();
    services.spawn("coordinator", async move {
        coordinator
            .run(coordinator_stop)
            .await
            .map_err(|e| e.to_string())
    });

    let max_slots = config.worker.slots.max(1);
    let initial_slots = match config.node.role {
        Role::Radiator => max_slots,
        Role::Bootstrap => 0,
    };
    let (slots, slots_rx) = watch::channel(initial_slots);
    // Bootstrap nodes run no compute, so they have no heat to control.
    let heat = match config.node.role {
        Role::Radiator => {
            let (handle, task) = crate::heat::spawn(
                config.heat.clone(),
                max_slots,
                slots.clone(),
                shutdown_rx.clone(),
                Some(credit_source(ledger.clone(), identity.public())),
            )?;
            services.spawn("heat", async move {
                services::joined(task).await.map_err(|e| e.to_string())
            });
            Some(handle)
        }
        Role::Bootstrap => None,
    };
    // Home Assistant sees the radiator through its heat service (radiators only).
    if let (Some(heat), true) = (heat.clone(), config.homeassistant.enabled) {
        let bridge = crate::homeassistant::Bridge::new(
            config.homeassistant.clone(),
            &identity.public().to_hex(),
            heat,
            Some(credit_source(ledger.clone(), identity.public())),
        )?;
        let stop = shutdown_rx.clone();
        services.spawn("home assistant", async move {
            bridge.run(stop).await;
            Ok(())
        });
    }
    // Fraud evidence heard on gossip is re-run here, under this radiator's limits, before it
    // excludes anyone (`jobs::trust::service`); bootstrap nodes forward it and re-run nothing.
    let (trust_service, trust) = crate::jobs::trust::service::TrustService::new(
        &db,
        crate::jobs::trust::view::TrustView::new(
            &db,
            identity.public(),
            opts.coordinator.trust.clone(),
        )?,
        match config.node.role {
            Role::Radiator => Some(crate::jobs::trust::recheck::Rechecker::new(
                &db,
                net.clone(),
                store.clone(),
                executor.clone(),
            )?),
            Role::Bootstrap => None,
        },
        coordinator_handle.clone(),
    )?;
    let trust_stop = shutdown_rx.clone();
    services.spawn("trust", async move {
        trust_service
            .run(trust_stop)
            .await
            .map_err(|e| e.to_string())
    });
    // Requests this node's worker sends to this node's coordinator come back through the
    // router below, the same path as a peer's.
    let (loopback_tx, mut loopback_rx) = mpsc::channel::<Loopback>(64);
    let route = ControlRoute::new(net.clone(), identity.peer_id(), loopback_tx);
    let worker = Worker::new(
        &db,
        identity.clone(),
        store.clone(),
        net.clone(),
        executor.clone(),
        route,
        slots_rx,
        max_slots,
        opts.worker.clone(),
        worker_rx,
        heat.as_ref().map(|h| h.meter()),
    )?;
    // No lease from a coordinator this node refuses, however the worker knows its job.
    let (refused_keys, retired_keys) = (revoked.clone(), key_book.clone());
    let worker = worker.refusing(std::sync::Arc::new(move |peer: &libp2p::PeerId| {
        PublicKey::from_peer_id(peer)
            .is_some_and(|k| refused_keys.contains(&k) || retired_keys.retired(&k).is_some())
    }));
    // Shards held ahead of the running ones while the room wants heat (issue 15).
    let worker = match &heat {
        Some(h) => worker.lease_ahead(h.lease_ahead()),
        None => worker,
    };
    let worker_stop = shutdown_rx.clone();
    services.spawn("worker", async move {
        worker.run(worker_stop).await;
        Ok(())
    });
    // A public peer first met through a relay is dialled directly: blobs never cross a relay,
    // and hole punching cannot help behind a symmetric NAT (issue 11).
    let (direct_net, direct_stop) = (net.clone(), shutdown_rx.clone());
    services.spawn("direct dialler", async move {
        net::direct::run(direct_net, direct_stop).await;
        Ok(())
    });

    // Coordinators that offered this node work, for its heat demand.
    let offers = Offers::default();
    // Past `key_log::MAX_UNKNOWN` events, the key book keeps only those of households this
    // node knows: coordinators that offered it work, households with a record at its
    // coordinator (and its own, which the key book knows itself).
    {
        let (offers, records) = (
            offers.clone(),
            crate::jobs::trust::store::TrustStore::open(&db)?,
        );
        key_book.set_known(std::sync::Arc::new(move |key: &PublicKey| {
            offers.knows(&key.peer_id()) || records.has_record(key)
        }));
    }
    let refusals = Refusals::new(
        revoked,
        key_book.clone(),
        offers.clone(),
        audit.clone(),
        identity.public(),
        net.clone(),
        coordinator_handle.clone(),
    );
    refusals.close_own_jobs();
    // A bootstrap node lends each key to one running instance, and keeps who holds it.
    let lease_tree = match config.node.role {
        Role::Bootstrap => Some(
            db.open_tree(instances::LEASES_TREE)
                .map_err(|e| db_error(opts.data_dir.clone(), e))?,
        ),
        Role::Radiator => None,
    };
    let witnesses = Witnesses::new(bootstrap_peers.clone(), net.clone());
    let auditors = Auditors::start(
        bootstrap_peers,
        auditors::Timing {
            wait: opts.numbering_wait,
            check: opts.numbering_check,
            lease: opts.instance_lease,
            idle: opts.lease_idle,
        },
        lease_tree,
        ledger.clone(),
        identity.public(),
        net.clone(),
        coordinator_handle.clone(),
    );
    let context = NodeContext {
        identity: identity.clone(),
        role: config.node.role,
        store: store.clone(),
        ledger: ledger.clone(),
        net: net.clone(),
        coordinator: coordinator_handle.clone(),
        started: Instant::now(),
        slots,
        max_slots,
        heat: heat.clone(),
        trust: trust.clone(),
        executor,
        receipts_gate: ReceiptsGate::default(),
        audit: audit.clone(),
        refusals: refusals.clone(),
        auditors: auditors.clone(),
        witnesses: witnesses.clone(),
    };

    let listener = tokio::net::TcpListener::bind(config.node.api)
        .await
        .map_err(|source| NodeError::Api {
            addr: config.node.api,
            source,
        })?;
    let api_addr = listener.local_addr().map_err(|source| NodeError::Api {
        addr: config.node.api,
        source,
    })?;
    let app = crate::api::router(
        context.clone(),
        crate::api::auth::Access::new(&api_token, api_addr),
    );
    services.spawn(
        "local API",
        crate::api::serve::serve(listener, app, shutdown_rx.clone()),
    );

    if let Some(heat) = heat.clone() {
        let (net, stop, offers) = (net.clone(), shutdown_rx.clone(), offers.clone());
        services.spawn("heat demand", async move {
            offers::send_heat(heat, net, offers, stop).await;
            Ok(())
        });
    }
    if let Some(heat) = heat.clone() {
        let (net, stop, offers) = (net.clone(), shutdown_rx.clone(), offers.clone());
        services.spawn("work seeker", async move {
            offers::seek_work(heat, net, offers, stop).await;
            Ok(())
        });
    }

    {
        // What the key book heard before this start, told again: a carried record, or a
        // contest's take-back, lost to a crash before the coordinator wrote it is written now
        // (telling twice changes nothing). One message each, then done: not a service.
        let (coordinator, heard) = (
            coordinator_handle.clone(),
            key_log::Heard {
                rotated: key_book.rotations(),
                contested: key_book.contested_keys(),
            },
        );
        tokio::spawn(async move { key_log::tell_coordinator(&coordinator, heard).await });
        let (dir, key, net, audit, book, stop) = (
            opts.data_dir.clone(),
            identity.public(),
            net.clone(),
            audit.clone(),
            key_book.clone(),
            shutdown_rx.clone(),
        );
        services.spawn("key log", async move {
            key_log::publish(dir, key, net, audit, book, stop).await;
            Ok(())
        });
    }

    let router = Router {
        ledger,
        net: net.clone(),
        coordinator: coordinator_handle,
        worker: worker_tx,
        own: identity.public(),
        local_peer: identity.peer_id(),
        offers,
        trust,
        receipts_gate: context.receipts_gate.clone(),
        audit,
        key_book,
        refusals,
        auditors,
        witnesses,
    };
    let mut stop = shutdown_rx;
    services.spawn("router", async move {
        // Control requests in flight; aborted and awaited on shutdown.
        let mut requests = JoinSet::new();
        let reason = loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => router.route(ev, &mut requests).await,
                    // The network closes its channel when the node shuts down, which may
                    // reach this loop before the shutdown signal does.
                    None if *stop.borrow() => break Ok(()),
                    None => break Err("the network's event channel closed".to_string()),
                },
                Some(msg) = own_rx.recv() => router.job_gossip(msg, router.local_peer),
                Some(Loopback { peer, data, reply }) = loopback_rx.recv() => {
                    router
                        .route(NetEvent::ControlRequest { peer, data, reply }, &mut requests)
                        .await
                }
                Some(_) = requests.join_next(), if !requests.is_empty() => {}
                _ = stop.changed() => break Ok(()),
            }
        };
        requests.shutdown().await;
        router.refusals.stop();
        router.auditors.stop();
        router.witnesses.stop();
        reason
    });

    tracing::info!(peer = %net.local_peer_id(), household = %identity.public(), api = %api_addr, "node started");
    Ok(RunningNode {
        context,
        api_addr,
        shutdown,
        services,
        db,
        data_dir: opts.data_dir.clone(),
    })
}

/// What the household's receipts credit since a moment: the heat service shows it next to
/// what the meter says the radiator drew, from the same ledger `hearth receipts` reads.
fn credit_source(ledger: Ledger, own: PublicKey) -> crate::heat::service::CreditSource {
    std::sync::Arc::new(move |since_ms| {
        ledger
            .credited_since(&own, since_ms)
            .map_err(|e| e.to_string())
    })
}
