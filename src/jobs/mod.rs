//! Jobs: the coordinator (submitter side) and the worker (radiator side), plus building jobs
//! from the built-in kernels or any module, and running a job entirely on this machine.
//!
//! This layer gives meaning to the model's messages; it uses `net` to move them, `store` for
//! blobs, `exec` to run shards and `ledger` for receipts. It never touches the Swarm.
//! The coordinator and the worker do not import each other: the worker's requests take one
//! [`route::ControlRoute`] (to a peer, or back through the node's router to this node's own
//! coordinator), and the coordinator's own announcements reach the worker through the node
//! like a peer's gossip.

pub mod assemble;
pub mod build;
pub mod coordinator;
pub mod credit;
mod gc;
pub(crate) mod inputs;
pub mod local;
pub mod route;
pub mod trust;
pub mod worker;

pub use coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorHandle, JobStatus, JobSummary, JobView, ShardView,
};
pub use route::{ControlRoute, Loopback};
pub use worker::{Worker, WorkerConfig, WorkerEvent};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("invalid job: {0}")]
    Invalid(String),
    #[error("content store: {0}")]
    Store(crate::store::StoreError),
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    #[error("network: {0}")]
    Network(String),
    #[error("saved job state is damaged: {0}")]
    Corrupt(String),
    /// The job is beyond this radiator's own limits: it is declined, not failed.
    #[error("beyond this radiator's limits: {0}")]
    BeyondLimits(String),
    /// The job's blobs cannot reach this radiator: its only path to every provider is a
    /// relay and hole punching failed (blobs never cross a relay). Declined, not failed.
    #[error("cannot fetch the job's data here: {0}")]
    RelayedOnly(String),
    /// This radiator's store has no room for the job's data now (its quota, or the free space
    /// it keeps on its disk), whether a fetched blob or a shard's output found none. Given
    /// back, not failed: there may be room later.
    #[error("no room here for the job's data: {0}")]
    NoRoom(String),
    #[error("the shard could not run: {0}")]
    Exec(#[from] crate::exec::ExecError),
    #[error("ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("the node is shutting down")]
    Stopped,
    #[error("the coordinator stopped: {0}")]
    CoordinatorFailed(String),
}

/// A store that has no room (quota, disk floor) is [`JobError::NoRoom`], like a fetch the
/// store refused for want of room (`jobs::inputs`): one kind, given back by the worker.
impl From<crate::store::StoreError> for JobError {
    fn from(e: crate::store::StoreError) -> JobError {
        use crate::store::StoreError;
        match e {
            StoreError::DiskLow { .. } | StoreError::QuotaExceeded { .. } => {
                JobError::NoRoom(e.to_string())
            }
            e => JobError::Store(e),
        }
    }
}
