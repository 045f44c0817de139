//! The background tasks of a node service (pulls, questions to peers, publications), kept so
//! that none outlives the node: the service aborts them when the node stops.

use std::future::Future;
use std::sync::Mutex;

use tokio::task::JoinSet;

#[derive(Default)]
pub(super) struct Tasks(Mutex<JoinSet<()>>);

impl Tasks {
    /// Runs `task` among these (finished ones are reaped first, so the set holds only what
    /// still runs).
    pub(super) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        if let Ok(mut tasks) = self.0.lock() {
            while tasks.try_join_next().is_some() {}
            tasks.spawn(task);
        }
    }

    /// Aborts every task in flight: the node is stopping.
    pub(super) fn stop(&self) {
        if let Ok(mut tasks) = self.0.lock() {
            tasks.abort_all();
        }
    }
}
