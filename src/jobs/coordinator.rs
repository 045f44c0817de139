//! The coordinator: the submitter's side of a job.
//!
//! The node that submits a job coordinates it. It hands out leases when radiators ask (work is
//! pulled, never pushed), never leases two replicas of a shard to one household, checks claims
//! against the manifest and the lease, declares a shard verified when `replication` claims from
//! distinct households agree on output hash and fuel and form a strict majority, fetches the
//! output from an agreeing worker (the store verifies its hash), countersigns one receipt per
//! agreeing claim and excludes households whose claims lost, keeping both signed claims as
//! evidence. When every shard is verified it assembles the result.
//!
//! State lives in sled (`coord/jobs`: job id → JSON [`JobState`], `coord/excluded`: household
//! → JSON evidence) and is written before any acknowledgement is sent, so a coordinator killed
//! and restarted carries on where it stopped. The actor owns that state alone; everyone else
//! talks to it through [`CoordinatorHandle`].

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::identity::{Identity, PublicKey};
use crate::kernels;
use crate::ledger::Ledger;
use crate::model::receipt::{Claim, CreditTerms, Receipt};
use crate::model::wire::{
    DenyReason, HeatDemand, JobGossip, Lease, Request, Response, PROTOCOL_VERSION,
};
use crate::model::{now_ms, Assembly, JobManifest};
use crate::net::{Network, Topic};
use crate::store::Store;

use super::worker::WorkerEvent;
use super::JobError;

/// How many replicas of one shard may be run at most while replicas disagree.
const MAX_REPLICAS: usize = 16;

#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// How long a lease lasts. A radiator that has not claimed by then loses it.
    pub lease: Duration,
    /// How often open jobs are announced again, for radiators that joined later.
    pub reannounce: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            lease: Duration::from_secs(60),
            reannounce: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Done { result: String },
    Failed { reason: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LeaseRec {
    worker: [u8; 32],
    nonce: [u8; 16],
    deadline_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct FailureRec {
    worker: [u8; 32],
    reason: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ShardState {
    leases: Vec<LeaseRec>,
    /// Canonical bytes of every claim received, in arrival order.
    claims: Vec<Vec<u8>>,
    failures: Vec<FailureRec>,
    /// Set once the output has been fetched and checked and receipts countersigned.
    verified: Option<[u8; 32]>,
    /// Claims already countersigned (indices into `claims`).
    receipted: Vec<usize>,
    failed: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct JobState {
    manifest: Vec<u8>,
    status: JobStatus,
    shards: Vec<ShardState>,
    submitted_ms: u64,
    finished_ms: Option<u64>,
    /// Households that declined the job as beyond their own limits, with their reasons
    /// (at most [`MAX_DECLINES`], the latest reason per household).
    #[serde(default)]
    declined: Vec<FailureRec>,
}

/// Most declining households remembered per job.
const MAX_DECLINES: usize = 16;

/// What `hearth job status` shows for one shard.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ShardView {
    Waiting {
        reason: String,
    },
    Leased {
        to: Vec<String>,
        claims: usize,
    },
    Verifying {
        claims: usize,
    },
    Verified {
        output: String,
        fuel: u64,
        households: Vec<String>,
    },
    Failed {
        reason: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    pub status: JobStatus,
    pub shards_total: usize,
    pub shards_verified: usize,
    pub replication: u8,
    pub assembly: Assembly,
    pub submitted_ms: u64,
    pub finished_ms: Option<u64>,
    pub shards: Vec<ShardView>,
}

enum Command {
    Submit {
        manifest: JobManifest,
        reply: oneshot::Sender<Result<blake3::Hash, JobError>>,
    },
    Control {
        from: libp2p::PeerId,
        /// Boxed: a claim is far larger than every other command.
        request: Box<Request>,
        reply: oneshot::Sender<Response>,
    },
    OutputFetched {
        job: blake3::Hash,
        shard: u32,
        output: blake3::Hash,
        result: Result<(), String>,
    },
    View {
        job: blake3::Hash,
        reply: oneshot::Sender<Option<JobView>>,
    },
    List {
        reply: oneshot::Sender<Vec<JobView>>,
    },
    Heat {
        household: PublicKey,
        demand: HeatDemand,
    },
    Delivered {
        id: blake3::Hash,
        delivered: bool,
    },
}

/// Receipts sent again per re-announcement round, at most.
const MAX_DELIVERIES_PER_ROUND: usize = 256;

/// Most households whose heat demand a coordinator remembers.
const MAX_DEMANDS: usize = 4096;
/// A lease request this recent counts as "still asking" when shards are scarce.
const ASKING_WINDOW: Duration = Duration::from_secs(1);
/// Heat gossip older than this is forgotten.
const DEMAND_FRESH: Duration = Duration::from_secs(90);

/// What a coordinator knows about a radiator's wish for heat.
#[derive(Clone, Copy, Debug)]
struct Demand {
    permille: u16,
    seen: std::time::Instant,
    asked: Option<std::time::Instant>,
}

/// A cloneable handle to the coordinator actor.
#[derive(Clone)]
pub struct CoordinatorHandle {
    tx: mpsc::Sender<Command>,
}

impl CoordinatorHandle {
    pub async fn submit(&self, manifest: JobManifest) -> Result<blake3::Hash, JobError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Submit { manifest, reply })
            .await
            .map_err(|_| JobError::Stopped)?;
        rx.await.map_err(|_| JobError::Stopped)?
    }

    /// Serves one control request from `from` (the local worker passes its own PeerId).
    pub async fn control(&self, from: libp2p::PeerId, request: Request) -> Response {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Command::Control {
                from,
                request: Box::new(request),
                reply,
            })
            .await
            .is_err()
        {
            return busy();
        }
        rx.await.unwrap_or_else(|_| busy())
    }

    pub async fn view(&self, job: blake3::Hash) -> Option<JobView> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::View { job, reply }).await.ok()?;
        rx.await.ok()?
    }

    /// Records a radiator's gossiped heat demand. Never waits: when the coordinator is busy the
    /// update is dropped and the next one (they repeat) gets through.
    pub fn heat_demand(&self, household: PublicKey, demand: HeatDemand) {
        let _ = self.tx.try_send(Command::Heat { household, demand });
    }

    pub async fn list(&self) -> Vec<JobView> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::List { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

fn busy() -> Response {
    Response::Denied {
        reason: DenyReason::Busy,
        retry_after_ms: 1000,
        detail: "the coordinator is shutting down".into(),
    }
}

pub struct Coordinator {
    identity: Identity,
    store: Store,
    ledger: Ledger,
    net: Network,
    config: CoordinatorConfig,
    jobs_tree: sled::Tree,
    excluded: sled::Tree,
    jobs: HashMap<blake3::Hash, (JobManifest, JobState)>,
    tx: mpsc::Sender<Command>,
    rx: mpsc::Receiver<Command>,
    /// Output fetches and receipt deliveries in flight; aborted and awaited on shutdown.
    tasks: tokio::task::JoinSet<()>,
    /// This node's own worker: gossipsub does not deliver a node's messages to itself.
    local_worker: mpsc::Sender<WorkerEvent>,
    demands: HashMap<PublicKey, Demand>,
    /// Receipts not yet confirmed by their workers (`coord/outbox`: receipt id → bytes).
    outbox: sled::Tree,
    delivering: std::collections::HashSet<blake3::Hash>,
}

impl Coordinator {
    pub fn new(
        db: &sled::Db,
        identity: Identity,
        store: Store,
        ledger: Ledger,
        net: Network,
        config: CoordinatorConfig,
        local_worker: mpsc::Sender<WorkerEvent>,
    ) -> Result<(Coordinator, CoordinatorHandle), JobError> {
        let jobs_tree = db.open_tree("coord/jobs")?;
        let excluded = db.open_tree("coord/excluded")?;
        let mut jobs = HashMap::new();
        for item in jobs_tree.iter() {
            let (k, v) = item?;
            let state: JobState = serde_json::from_slice(&v)
                .map_err(|e| JobError::Corrupt(format!("job {}: {e}", hex::encode(&k))))?;
            let manifest = JobManifest::from_bytes(&state.manifest)
                .map_err(|e| JobError::Corrupt(format!("job {}: {e}", hex::encode(&k))))?;
            jobs.insert(manifest.id(), (manifest, state));
        }
        // Bounded: submitters and the API wait when the coordinator is busy.
        let (tx, rx) = mpsc::channel(256);
        let handle = CoordinatorHandle { tx: tx.clone() };
        Ok((
            Coordinator {
                identity,
                store,
                ledger,
                net,
                config,
                jobs_tree,
                excluded,
                jobs,
                tx,
                rx,
                tasks: tokio::task::JoinSet::new(),
                local_worker,
                demands: HashMap::new(),
                outbox: db.open_tree("coord/outbox")?,
                delivering: std::collections::HashSet::new(),
            },
            handle,
        ))
    }

    /// Runs until every handle is dropped or `shutdown` fires.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut reannounce = tokio::time::interval(self.config.reannounce);
        reannounce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A restarted coordinator may have verified shards whose receipts were not yet made.
        self.resume_verification();
        loop {
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
                _ = reannounce.tick() => {
                    self.announce_open().await;
                    self.retry_deliveries();
                }
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        self.tasks.shutdown().await;
        let _ = self.jobs_tree.flush_async().await;
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Submit { manifest, reply } => {
                let result = self.submit(manifest).await;
                let _ = reply.send(result);
            }
            Command::Control {
                from,
                request,
                reply,
            } => {
                let response = self.control(from, *request).await;
                let _ = reply.send(response);
            }
            Command::OutputFetched {
                job,
                shard,
                output,
                result,
            } => self.output_fetched(job, shard, output, result).await,
            Command::View { job, reply } => {
                let warmth = self.warmth();
                let _ = reply.send(self.jobs.get(&job).map(|(m, s)| view(m, s, warmth)));
            }
            Command::Delivered { id, delivered } => {
                self.delivering.remove(&id);
                if delivered {
                    let _ = self.outbox.remove(id.as_bytes());
                }
            }
            Command::Heat { household, demand } => {
                self.note_demand(household, demand.demand_permille, false);
            }
            Command::List { reply } => {
                let warmth = self.warmth();
                let mut all: Vec<JobView> = self
                    .jobs
                    .values()
                    .map(|(m, s)| view(m, s, warmth))
                    .collect();
                all.sort_by_key(|v| v.submitted_ms);
                let _ = reply.send(all);
            }
        }
    }

    async fn submit(&mut self, manifest: JobManifest) -> Result<blake3::Hash, JobError> {
        manifest.validate().map_err(JobError::Invalid)?;
        if manifest.submitter != self.identity.public() {
            return Err(JobError::Invalid(
                "the manifest names another household as submitter; a node coordinates only its own jobs".into(),
            ));
        }
        for h in std::iter::once(&manifest.module).chain(manifest.inputs.iter()) {
            if !self.store.has(h)? {
                return Err(JobError::Invalid(format!(
                    "blob {} named by the manifest is not in this node's store",
                    h.to_hex()
                )));
            }
        }
        let bytes = manifest.to_bytes();
        // The manifest is a blob under its own id, so radiators fetch it like any other blob.
        let id = self.store.put_bytes(&bytes)?;
        let state = JobState {
            manifest: bytes,
            status: JobStatus::Running,
            shards: vec![ShardState::default(); manifest.inputs.len()],
            submitted_ms: now_ms(),
            finished_ms: None,
            declined: Vec::new(),
        };
        self.persist(&id, &state)?;
        self.jobs_tree.flush_async().await?;
        for h in std::iter::once(&id)
            .chain(std::iter::once(&manifest.module))
            .chain(manifest.inputs.iter())
        {
            if let Err(e) = self.net.provide(*h).await {
                tracing::debug!(blob = %h, "could not advertise: {e}");
            }
        }
        self.jobs.insert(id, (manifest, state));
        tracing::info!(job = %id, "job submitted");
        self.announce(&id).await;
        Ok(id)
    }

    fn persist(&self, id: &blake3::Hash, state: &JobState) -> Result<(), JobError> {
        let json = serde_json::to_vec(state).map_err(|e| JobError::Corrupt(e.to_string()))?;
        self.jobs_tree.insert(id.as_bytes(), json)?;
        Ok(())
    }

    async fn save(&self, id: &blake3::Hash) {
        if let Some((_, state)) = self.jobs.get(id) {
            if let Err(e) = self.persist(id, state) {
                tracing::error!(job = %id, "could not save job state: {e}");
            }
            // Acknowledgements go out only after the state that they acknowledge is on disk.
            if let Err(e) = self.jobs_tree.flush_async().await {
                tracing::error!(job = %id, "could not flush job state: {e}");
            }
        }
    }

    async fn announce(&self, id: &blake3::Hash) {
        let Some((_, state)) = self.jobs.get(id) else {
            return;
        };
        let msg = match state.status {
            JobStatus::Running => JobGossip::Announce {
                job: *id,
                at_ms: now_ms(),
                manifest: (state.manifest.len() <= crate::model::wire::INLINE_MANIFEST_MAX)
                    .then(|| state.manifest.clone()),
            },
            _ => JobGossip::Closed {
                job: *id,
                at_ms: now_ms(),
            },
        };
        let local = match &msg {
            JobGossip::Announce { job, .. } => WorkerEvent::Announced {
                job: *job,
                coordinator: self.identity.peer_id(),
            },
            JobGossip::Closed { job, .. } => WorkerEvent::Closed {
                job: *job,
                from: self.identity.peer_id(),
            },
        };
        // A full queue means the worker is busy; the next re-announcement tries again.
        let _ = self.local_worker.try_send(local);
        if let Err(e) = self.net.publish(Topic::Jobs, msg.to_bytes()).await {
            tracing::debug!(job = %id, "announcement not published: {e}");
        }
    }

    async fn announce_open(&mut self) {
        self.expire_leases();
        let open: Vec<blake3::Hash> = self
            .jobs
            .iter()
            .filter(|(_, (_, s))| s.status == JobStatus::Running)
            .map(|(id, _)| *id)
            .collect();
        for id in open {
            self.announce(&id).await;
        }
    }

    fn expire_leases(&mut self) {
        let now = now_ms();
        for (_, state) in self.jobs.values_mut() {
            for shard in &mut state.shards {
                shard.leases.retain(|l| l.deadline_ms > now);
            }
        }
    }

    fn is_excluded(&self, household: &PublicKey) -> bool {
        matches!(self.excluded.get(household.0), Ok(Some(_)))
    }

    async fn control(&mut self, from: libp2p::PeerId, request: Request) -> Response {
        let Some(household) = PublicKey::from_peer_id(&from) else {
            return Response::Error {
                detail: "your peer id carries no ed25519 household key".into(),
            };
        };
        match request {
            Request::Lease {
                job,
                protocol,
                demand_permille,
            } => {
                self.note_demand(household, demand_permille, true);
                let response = self.lease(&job, &household, protocol, demand_permille);
                if matches!(response, Response::Leased(_)) {
                    self.save(&job).await;
                }
                response
            }
            Request::Claim(claim) => self.claim(&household, from, claim).await,
            Request::Failure {
                job,
                shard,
                nonce,
                reason,
            } => self.failure(&job, &household, shard, nonce, reason).await,
            Request::Decline { job, reason } => self.decline(&job, &household, reason).await,
            Request::Receipt(_) => Response::Error {
                detail: "receipts are delivered to workers, not coordinators".into(),
            },
        }
    }

    fn note_demand(&mut self, household: PublicKey, permille: u16, asked: bool) {
        let now = std::time::Instant::now();
        if self.demands.len() >= MAX_DEMANDS && !self.demands.contains_key(&household) {
            self.demands
                .retain(|_, d| now.duration_since(d.seen) < DEMAND_FRESH);
            if self.demands.len() >= MAX_DEMANDS {
                return;
            }
        }
        let d = self.demands.entry(household).or_insert(Demand {
            permille,
            seen: now,
            asked: None,
        });
        d.permille = permille;
        d.seen = now;
        if asked {
            d.asked = Some(now);
        }
    }

    /// Households asking for work right now whose rooms want more heat than `permille`.
    fn colder_askers(&self, household: &PublicKey, permille: u16) -> usize {
        let now = std::time::Instant::now();
        self.demands
            .iter()
            .filter(|(h, d)| {
                *h != household
                    && d.permille > permille
                    && d.asked
                        .is_some_and(|a| now.duration_since(a) < ASKING_WINDOW)
            })
            .count()
    }

    /// How many radiators recently told us their heat demand, and how many of them want none.
    fn warmth(&self) -> Warmth {
        let now = std::time::Instant::now();
        let fresh: Vec<&Demand> = self
            .demands
            .values()
            .filter(|d| now.duration_since(d.seen) < DEMAND_FRESH)
            .collect();
        Warmth {
            known: fresh.len(),
            warm: fresh.iter().filter(|d| d.permille == 0).count(),
        }
    }

    fn lease(
        &mut self,
        job: &blake3::Hash,
        household: &PublicKey,
        protocol: u32,
        permille: u16,
    ) -> Response {
        let deny = |reason, retry_after_ms, detail: &str| Response::Denied {
            reason,
            retry_after_ms,
            detail: detail.to_string(),
        };
        if protocol != PROTOCOL_VERSION {
            return deny(
                DenyReason::VersionMismatch,
                0,
                &format!("this coordinator speaks jobs protocol {PROTOCOL_VERSION}, you speak {protocol}; upgrade hearth"),
            );
        }
        if self.is_excluded(household) {
            return deny(
                DenyReason::Excluded,
                0,
                "a claim of your household lost a replica vote here; no further leases",
            );
        }
        let lease_ms = self.config.lease.as_millis() as u64;
        // Radiators whose rooms are colder go first: when no more replicas are free than
        // colder radiators are asking for, this one waits a moment.
        let colder = self.colder_askers(household, permille);
        let Some((manifest, state)) = self.jobs.get_mut(job) else {
            return deny(
                DenyReason::UnknownJob,
                0,
                "this node coordinates no such job",
            );
        };
        match &state.status {
            JobStatus::Running => {}
            JobStatus::Done { .. } => {
                return deny(DenyReason::JobComplete, 0, "every shard is verified")
            }
            JobStatus::Failed { reason } => {
                return deny(
                    DenyReason::JobComplete,
                    0,
                    &format!("the job failed: {reason}"),
                )
            }
        }
        let now = now_ms();
        if colder > 0 {
            let free: usize = state
                .shards
                .iter()
                .filter(|s| s.verified.is_none() && s.failed.is_none())
                .map(|s| {
                    let live = s.leases.iter().filter(|l| l.deadline_ms > now).count();
                    replicas_needed(s, manifest.replication).saturating_sub(live + s.claims.len())
                })
                .sum();
            if free <= colder {
                return deny(
                    DenyReason::NothingFree,
                    250,
                    "the free shards are held for radiators whose rooms are colder",
                );
            }
        }
        let mut own_replicas = 0;
        for (index, shard) in state.shards.iter_mut().enumerate() {
            if shard.verified.is_some() || shard.failed.is_some() {
                continue;
            }
            shard.leases.retain(|l| l.deadline_ms > now);
            let worked_by_us = shard.leases.iter().any(|l| l.worker == household.0)
                || shard.failures.iter().any(|f| f.worker == household.0)
                || shard
                    .claims
                    .iter()
                    .filter_map(|c| Claim::from_bytes(c).ok())
                    .any(|c| c.record.worker == *household);
            let needed = replicas_needed(shard, manifest.replication);
            if shard.leases.len() + shard.claims.len() >= needed {
                continue;
            }
            if worked_by_us {
                own_replicas += 1;
                continue;
            }
            let mut nonce = [0u8; 16];
            if getrandom::fill(&mut nonce).is_err() {
                return deny(DenyReason::Busy, 1000, "no randomness for a lease nonce");
            }
            let deadline_ms = now + lease_ms;
            shard.leases.push(LeaseRec {
                worker: household.0,
                nonce,
                deadline_ms,
            });
            tracing::debug!(job = %job, shard = index, worker = %household, "leased");
            return Response::Leased(Lease {
                job: *job,
                shard: index as u32,
                nonce,
                deadline_ms,
            });
        }
        let detail = if own_replicas > 0 {
            "every shard that still needs a replica already has one from your household"
        } else {
            "every open shard is leased; ask again later"
        };
        deny(DenyReason::NothingFree, 500, detail)
    }

    async fn claim(
        &mut self,
        household: &PublicKey,
        from: libp2p::PeerId,
        claim: Claim,
    ) -> Response {
        let reject = |detail: String| Response::ClaimRejected { detail };
        if claim.record.worker != *household {
            return reject("the claim names another household as worker".into());
        }
        if let Err(e) = claim.verify() {
            return reject(format!("{e}"));
        }
        let job = claim.record.job;
        let Some((manifest, state)) = self.jobs.get_mut(&job) else {
            return reject("this node coordinates no such job".into());
        };
        let index = claim.record.shard as usize;
        let Some(shard) = state.shards.get_mut(index) else {
            return reject(format!("the job has no shard {index}"));
        };
        let rec = &claim.record;
        if rec.module != manifest.module
            || manifest.inputs.get(index) != Some(&rec.input)
            || rec.submitter != manifest.submitter
        {
            return reject("the claim's module, input or submitter does not match the job".into());
        }
        let Some(pos) = shard
            .leases
            .iter()
            .position(|l| l.nonce == rec.nonce && l.worker == household.0)
        else {
            return reject(
                "no open lease of yours carries this nonce (expired, replayed or never issued)"
                    .into(),
            );
        };
        shard.leases.remove(pos);
        shard.claims.push(claim.to_bytes());
        let replication = manifest.replication;
        let already_verified = shard.verified.is_some();
        let mut fetch = None;
        match decide(shard, replication) {
            Decision::Verified { output, .. } if !already_verified => {
                // Fetch from this worker if it agrees, else from whoever the store finds.
                let hint = (claim.record.output == output).then_some(from);
                fetch = Some((output, hint));
            }
            Decision::Hopeless if !already_verified => {
                shard.failed = Some(format!(
                    "{} replicas could not agree on one output",
                    shard.claims.len()
                ));
            }
            _ => {}
        }
        self.save(&job).await;
        if let Some((output, hint)) = fetch {
            self.fetch_output(job, index as u32, output, hint);
        }
        if already_verified {
            // A late replica: receipted if it agrees, its household excluded if not.
            self.countersign_agreeing(&job, index).await;
        }
        self.check_finished(&job).await;
        Response::ClaimAccepted {
            verified: self
                .jobs
                .get(&job)
                .and_then(|(_, s)| s.shards.get(index))
                .is_some_and(|s| s.verified.is_some()),
        }
    }

    /// Starts fetching a verified shard's output from an agreeing worker. The result comes
    /// back to the actor as a command, so the actor never waits on the network.
    fn fetch_output(
        &mut self,
        job: blake3::Hash,
        shard: u32,
        output: blake3::Hash,
        hint: Option<libp2p::PeerId>,
    ) {
        let net = self.net.clone();
        let store = self.store.clone();
        let tx = self.tx.clone();
        self.tasks.spawn(async move {
            let result = match store.has(&output) {
                Ok(true) => Ok(()),
                // No shard output can be larger than the executor produces.
                _ => net
                    .fetch_blob_within(output, hint, crate::exec::MAX_OUTPUT_BYTES as u64)
                    .await
                    .map_err(|e| e.to_string()),
            };
            let _ = tx
                .send(Command::OutputFetched {
                    job,
                    shard,
                    output,
                    result,
                })
                .await;
        });
    }

    fn resume_verification(&mut self) {
        let mut pending = Vec::new();
        for (id, (manifest, state)) in &self.jobs {
            if state.status != JobStatus::Running {
                continue;
            }
            for (i, shard) in state.shards.iter().enumerate() {
                if shard.verified.is_none() && shard.failed.is_none() {
                    if let Decision::Verified { output } = decide(shard, manifest.replication) {
                        pending.push((*id, i as u32, output));
                    }
                }
            }
        }
        for (id, shard, output) in pending {
            self.fetch_output(id, shard, output, None);
        }
    }

    async fn output_fetched(
        &mut self,
        job: blake3::Hash,
        shard: u32,
        output: blake3::Hash,
        result: Result<(), String>,
    ) {
        if let Err(e) = result {
            tracing::warn!(job = %job, shard, "could not fetch the verified output: {e}; retrying");
            let tx = self.tx.clone();
            self.tasks.spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = tx
                    .send(Command::OutputFetched {
                        job,
                        shard,
                        output,
                        result: Ok(()),
                    })
                    .await;
            });
            return;
        }
        // `Ok(())` from the retry path above still needs the blob: check the store.
        if !matches!(self.store.has(&output), Ok(true)) {
            self.fetch_output(job, shard, output, None);
            return;
        }
        let Some((_, state)) = self.jobs.get_mut(&job) else {
            return;
        };
        let Some(s) = state.shards.get_mut(shard as usize) else {
            return;
        };
        if s.verified.is_some() {
            return;
        }
        s.verified = Some(*output.as_bytes());
        self.countersign_agreeing(&job, shard as usize).await;
        self.check_finished(&job).await;
    }

    /// Countersigns every agreeing claim not yet receipted, excludes households whose claims
    /// disagree, and delivers and publishes the receipts.
    async fn countersign_agreeing(&mut self, job: &blake3::Hash, index: usize) {
        let Some((_, state)) = self.jobs.get_mut(job) else {
            return;
        };
        let Some(shard) = state.shards.get_mut(index) else {
            return;
        };
        let Some(output) = shard.verified else { return };
        let claims: Vec<Claim> = shard
            .claims
            .iter()
            .filter_map(|c| Claim::from_bytes(c).ok())
            .collect();
        let Some(winner) = claims
            .iter()
            .find(|c| c.record.output.as_bytes() == &output)
            .cloned()
        else {
            return;
        };
        // The vote the receipts state: claims agreeing with the winner, of all claims held
        // (at most a few more than `replication` ≤ 16, so far below u8::MAX).
        let agreeing = claims
            .iter()
            .filter(|c| c.record.agrees_with(&winner.record))
            .count();
        let agreeing = u8::try_from(agreeing).unwrap_or(u8::MAX);
        let replicas = u8::try_from(claims.len()).unwrap_or(u8::MAX).max(agreeing);
        let mut receipts = Vec::new();
        let mut losers = Vec::new();
        for (i, claim) in claims.iter().enumerate() {
            if shard.receipted.contains(&i) {
                continue;
            }
            if claim.record.agrees_with(&winner.record) {
                // Credits the claim as it stands; the bound on credit comes later (issue 9).
                let terms = CreditTerms::claimed(&claim.record, agreeing, replicas);
                match claim.clone().countersign(&self.identity, terms) {
                    Ok(r) => receipts.push(r),
                    Err(e) => tracing::error!("cannot countersign: {e}"),
                }
                shard.receipted.push(i);
            } else {
                losers.push(claim.clone());
                shard.receipted.push(i);
            }
        }
        for loser in losers {
            let evidence = serde_json::json!({
                "job": job.to_hex().to_string(),
                "shard": index,
                "losing_claim": hex::encode(loser.to_bytes()),
                "winning_claim": hex::encode(winner.to_bytes()),
            });
            tracing::warn!(household = %loser.record.worker, job = %job, shard = index, "claim lost the replica vote; household excluded");
            let _ = self
                .excluded
                .insert(loser.record.worker.0, evidence.to_string().into_bytes());
        }
        // The receipts go into the ledger and the outbox *before* the shard is saved as
        // receipted, and `save` flushes the whole database: a crash in between leaves the shard
        // unreceipted, and countersigning again yields the identical receipt (ed25519 is
        // deterministic), which the ledger takes as a replay.
        for receipt in &receipts {
            self.record(receipt);
        }
        self.save(job).await;
        for receipt in receipts {
            self.deliver(receipt).await;
        }
    }

    /// Keeps a countersigned receipt: in this node's ledger and, for other households, in
    /// the outbox until the worker confirms, so a worker that was offline or cut off when
    /// its shard was verified still gets its receipt.
    fn record(&mut self, receipt: &Receipt) {
        match self.ledger.insert(receipt) {
            Ok(_) | Err(crate::ledger::LedgerError::Replay { .. }) => {}
            Err(e) => tracing::error!("own ledger refused a receipt: {e}"),
        }
        if receipt.record.worker != self.identity.public() {
            if let Err(e) = self
                .outbox
                .insert(receipt.id().as_bytes(), receipt.to_bytes())
            {
                tracing::error!("could not queue a receipt for delivery: {e}");
            }
        }
    }

    /// Publishes a recorded receipt and sends it to its worker.
    async fn deliver(&mut self, receipt: Receipt) {
        if let Err(e) = self.net.publish(Topic::Receipts, receipt.to_bytes()).await {
            tracing::debug!("receipt not gossiped: {e}");
        }
        if receipt.record.worker != self.identity.public() {
            self.send_receipt(receipt);
        }
    }

    fn send_receipt(&mut self, receipt: Receipt) {
        let id = receipt.id();
        let Some(peer) = receipt.record.worker.peer_id() else {
            let _ = self.outbox.remove(id.as_bytes());
            return;
        };
        if !self.delivering.insert(id) {
            return;
        }
        let net = self.net.clone();
        let tx = self.tx.clone();
        let bytes = Request::Receipt(receipt).to_bytes();
        self.tasks.spawn(async move {
            let delivered = match net.request(peer, bytes).await {
                // Any answer is final (a worker that refuses a receipt will not change its
                // mind); only an unreachable worker is tried again later.
                Ok(answer) => {
                    if let Ok(Response::Error { detail }) = Response::from_bytes(&answer) {
                        tracing::warn!(%peer, "worker refused its receipt: {detail}");
                    }
                    true
                }
                Err(e) => {
                    tracing::debug!(%peer, "receipt not delivered yet: {e}");
                    false
                }
            };
            let _ = tx.send(Command::Delivered { id, delivered }).await;
        });
    }

    /// Sends again every receipt a worker has not confirmed (a bounded number per call).
    fn retry_deliveries(&mut self) {
        let pending: Vec<Receipt> = self
            .outbox
            .iter()
            .filter_map(|item| item.ok())
            .filter_map(|(_, v)| Receipt::from_bytes(&v).ok())
            .filter(|r| !self.delivering.contains(&r.id()))
            .take(MAX_DELIVERIES_PER_ROUND)
            .collect();
        for receipt in pending {
            self.send_receipt(receipt);
        }
    }

    async fn failure(
        &mut self,
        job: &blake3::Hash,
        household: &PublicKey,
        index: u32,
        nonce: [u8; 16],
        reason: String,
    ) -> Response {
        let Some((manifest, state)) = self.jobs.get_mut(job) else {
            return Response::Error {
                detail: "this node coordinates no such job".into(),
            };
        };
        let Some(shard) = state.shards.get_mut(index as usize) else {
            return Response::Error {
                detail: format!("the job has no shard {index}"),
            };
        };
        let Some(pos) = shard
            .leases
            .iter()
            .position(|l| l.nonce == nonce && l.worker == household.0)
        else {
            return Response::Error {
                detail: "no open lease of yours carries this nonce".into(),
            };
        };
        shard.leases.remove(pos);
        shard.failures.push(FailureRec {
            worker: household.0,
            reason: reason.clone(),
        });
        if shard.failures.len() >= manifest.replication as usize && shard.verified.is_none() {
            shard.failed = Some(format!(
                "{} households could not run it: {reason}",
                shard.failures.len()
            ));
        }
        self.save(job).await;
        self.check_finished(job).await;
        Response::FailureNoted
    }

    /// A household will not work `job` at all (it is beyond that radiator's own limits):
    /// remember why, for the submitter's view, and free its leases on the job at once so
    /// the shards go to someone else. The job itself stays open for other radiators.
    async fn decline(
        &mut self,
        job: &blake3::Hash,
        household: &PublicKey,
        reason: String,
    ) -> Response {
        let Some((_, state)) = self.jobs.get_mut(job) else {
            return Response::Error {
                detail: "this node coordinates no such job".into(),
            };
        };
        tracing::info!(job = %job, household = %household.to_hex(), "declined: {reason}");
        for shard in &mut state.shards {
            shard.leases.retain(|l| l.worker != household.0);
        }
        // `reason` is bounded by the wire format (MAX_REASON); the list by MAX_DECLINES.
        state.declined.retain(|d| d.worker != household.0);
        if state.declined.len() >= MAX_DECLINES {
            state.declined.remove(0);
        }
        state.declined.push(FailureRec {
            worker: household.0,
            reason,
        });
        self.save(job).await;
        Response::FailureNoted
    }

    async fn check_finished(&mut self, job: &blake3::Hash) {
        let Some((manifest, state)) = self.jobs.get_mut(job) else {
            return;
        };
        if state.status != JobStatus::Running {
            return;
        }
        if let Some((i, reason)) = state
            .shards
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.failed.as_ref().map(|r| (i, r)))
        {
            state.status = JobStatus::Failed {
                reason: format!("shard {i}: {reason}"),
            };
        } else if state.shards.iter().all(|s| s.verified.is_some()) {
            let outputs: Vec<blake3::Hash> = state
                .shards
                .iter()
                .filter_map(|s| s.verified.map(blake3::Hash::from_bytes))
                .collect();
            state.status = match assemble(&self.store, manifest, &outputs) {
                Ok(result) => JobStatus::Done {
                    result: result.to_hex().to_string(),
                },
                Err(e) => JobStatus::Failed {
                    reason: format!("assembling the result: {e}"),
                },
            };
        } else {
            return;
        }
        state.finished_ms = Some(now_ms());
        tracing::info!(job = %job, status = ?state.status, "job finished");
        self.save(job).await;
        self.announce(job).await;
    }
}

enum Decision {
    Verified { output: blake3::Hash },
    Undecided,
    Hopeless,
}

/// Groups claims by (output, fuel). Verified when the largest group has at least
/// `replication` claims from distinct households and is a strict majority.
fn decide(shard: &ShardState, replication: u8) -> Decision {
    let mut groups: HashMap<(blake3::Hash, u64), Vec<PublicKey>> = HashMap::new();
    for c in shard
        .claims
        .iter()
        .filter_map(|c| Claim::from_bytes(c).ok())
    {
        let g = groups.entry((c.record.output, c.record.fuel)).or_default();
        if !g.contains(&c.record.worker) {
            g.push(c.record.worker);
        }
    }
    let total: usize = groups.values().map(Vec::len).sum();
    let best = groups.iter().max_by_key(|(_, v)| v.len());
    match best {
        Some(((output, _), v)) if v.len() >= replication as usize && v.len() * 2 > total => {
            Decision::Verified { output: *output }
        }
        _ if total >= MAX_REPLICAS => Decision::Hopeless,
        _ => Decision::Undecided,
    }
}

/// Replicas a shard needs: `replication`, plus one more for every claim outside the largest
/// agreeing group, so a disagreement is settled by a majority.
fn replicas_needed(shard: &ShardState, replication: u8) -> usize {
    let mut counts: HashMap<(blake3::Hash, u64), usize> = HashMap::new();
    for c in shard
        .claims
        .iter()
        .filter_map(|c| Claim::from_bytes(c).ok())
    {
        *counts.entry((c.record.output, c.record.fuel)).or_default() += 1;
    }
    let total: usize = counts.values().sum();
    let largest = counts.values().copied().max().unwrap_or(0);
    (replication as usize + (total - largest)).min(MAX_REPLICAS)
}

/// Builds the job's result from the verified outputs and stores it. Returns its hash.
pub fn assemble(
    store: &Store,
    manifest: &JobManifest,
    outputs: &[blake3::Hash],
) -> Result<blake3::Hash, JobError> {
    let bytes = outputs
        .iter()
        .map(|h| store.get_bytes(h))
        .collect::<Result<Vec<_>, _>>()?;
    let result = match manifest.assembly {
        Assembly::Concat => bytes.concat(),
        Assembly::MandelbrotPng {
            width,
            height,
            tile,
        } => kernels::assemble_mandelbrot_png(width, height, tile, &bytes)
            .map_err(|e| JobError::Invalid(format!("{e}")))?,
        Assembly::PiEstimate => {
            let estimate =
                kernels::pi_estimate(&bytes).map_err(|e| JobError::Invalid(format!("{e}")))?;
            format!("{estimate}\n").into_bytes()
        }
    };
    Ok(store.put_bytes(&result)?)
}

/// Heat demand seen by a coordinator, for explaining why shards wait.
#[derive(Clone, Copy, Debug)]
struct Warmth {
    known: usize,
    warm: usize,
}

/// Why radiators declined a job, for the waiting reason the submitter sees.
fn declined_text(declined: &[FailureRec]) -> String {
    let reasons: Vec<String> = declined
        .iter()
        .map(|d| format!("{}: {}", hex::encode(&d.worker[..4]), d.reason))
        .collect();
    format!(
        "declined by {} household(s) as beyond their limits ({}); waiting for a radiator that accepts it",
        declined.len(),
        reasons.join("; ")
    )
}

fn view(manifest: &JobManifest, state: &JobState, warmth: Warmth) -> JobView {
    let now = now_ms();
    let shards: Vec<ShardView> = state
        .shards
        .iter()
        .map(|s| {
            let claims: Vec<Claim> = s
                .claims
                .iter()
                .filter_map(|c| Claim::from_bytes(c).ok())
                .collect();
            if let Some(reason) = &s.failed {
                return ShardView::Failed {
                    reason: reason.clone(),
                };
            }
            if let Some(out) = s.verified {
                let winners: Vec<&Claim> = claims
                    .iter()
                    .filter(|c| c.record.output.as_bytes() == &out)
                    .collect();
                return ShardView::Verified {
                    output: hex::encode(out),
                    fuel: winners.first().map(|c| c.record.fuel).unwrap_or(0),
                    households: winners.iter().map(|c| c.record.worker.to_hex()).collect(),
                };
            }
            let live: Vec<String> = s
                .leases
                .iter()
                .filter(|l| l.deadline_ms > now)
                .map(|l| hex::encode(l.worker))
                .collect();
            if !live.is_empty() {
                return ShardView::Leased {
                    to: live,
                    claims: claims.len(),
                };
            }
            if matches!(decide(s, manifest.replication), Decision::Verified { .. }) {
                return ShardView::Verifying {
                    claims: claims.len(),
                };
            }
            ShardView::Waiting {
                reason: if claims.is_empty() && !state.declined.is_empty() {
                    declined_text(&state.declined)
                } else if claims.is_empty() && warmth.known > 0 && warmth.warm == warmth.known {
                    format!(
                        "no radiator wants heat right now ({} known, all rooms warm enough)",
                        warmth.known
                    )
                } else if claims.is_empty() {
                    "no radiator has asked for it yet (none wants heat, or none has seen the job)"
                        .into()
                } else {
                    format!(
                        "{} of {} agreeing replicas so far; waiting for another household",
                        claims.len(),
                        replicas_needed(s, manifest.replication)
                    )
                },
            }
        })
        .collect();
    JobView {
        id: manifest.id().to_hex().to_string(),
        status: state.status.clone(),
        shards_total: state.shards.len(),
        shards_verified: state.shards.iter().filter(|s| s.verified.is_some()).count(),
        replication: manifest.replication,
        assembly: manifest.assembly,
        submitted_ms: state.submitted_ms,
        finished_ms: state.finished_ms,
        shards,
    }
}
