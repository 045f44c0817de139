//! The node's services: each runs as one named task and reports how it ended; stopping them
//! is bounded, and a service that does not stop in time is named in the log and aborted, so
//! one stuck service can neither hang the node's shutdown nor keep its database open.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{AbortHandle, Id, JoinError, JoinHandle, JoinSet};

/// How long [`Services::stop`] waits for the services to end after the stop signal. Every
/// service ends within a few hundred milliseconds of it on a healthy node; the longest
/// planned wait is the local API's drain (`api::serve::DRAIN_WAIT`, 5 s).
pub(super) const STOP_WAIT: Duration = Duration::from_secs(15);

/// A service's end: its name, and why if it failed.
pub(super) type Exit = (&'static str, Result<(), String>);

#[derive(Default)]
pub(super) struct Services {
    set: JoinSet<Result<(), String>>,
    /// The name of every service still running, by task.
    names: HashMap<Id, &'static str>,
}

impl Services {
    /// Runs `service` under `name`, which every log line and failure about it carries.
    pub(super) fn spawn(
        &mut self,
        name: &'static str,
        service: impl Future<Output = Result<(), String>> + Send + 'static,
    ) {
        let handle = self.set.spawn(service);
        self.names.insert(handle.id(), name);
    }

    /// The next service to end, logged; `None` once none runs. A panic or an abort is a
    /// failure with that reason.
    pub(super) async fn next(&mut self) -> Option<Exit> {
        let joined = self.set.join_next_with_id().await?;
        Some(self.ended(joined))
    }

    fn ended(&mut self, joined: Result<(Id, Result<(), String>), JoinError>) -> Exit {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(e) if e.is_panic() => (e.id(), Err(format!("panicked: {e}"))),
            Err(e) => (e.id(), Err(format!("cancelled: {e}"))),
        };
        let name = self.names.remove(&id).unwrap_or("unknown");
        match &result {
            Ok(()) => tracing::debug!(service = name, "service stopped"),
            Err(e) => tracing::error!(service = name, "service failed: {e}"),
        }
        (name, result)
    }

    /// Waits for every service to end, at most `wait`: the stop signal has been sent. Those
    /// still running then are logged by name and aborted. Returns the services that failed
    /// or had to be aborted ("name: reason"); none on a clean stop.
    pub(super) async fn stop(&mut self, wait: Duration) -> Vec<String> {
        let mut failed = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.set.join_next_with_id()).await {
                Ok(None) => return failed,
                Ok(Some(joined)) => {
                    if let (name, Err(e)) = self.ended(joined) {
                        failed.push(format!("{name}: {e}"));
                    }
                }
                Err(_) => break,
            }
        }
        let mut running: Vec<&str> = self.names.values().copied().collect();
        running.sort_unstable();
        tracing::error!(
            services = %running.join(", "),
            "services still running {} s after the stop signal; aborting them",
            wait.as_secs()
        );
        for name in running {
            failed.push(format!(
                "{name}: still running {} s after the stop signal; aborted",
                wait.as_secs()
            ));
        }
        self.set.abort_all();
        // An aborted task ends at its next await; what it ran on the blocking pool finishes
        // by itself (the node waits for the database's lock after this).
        while self.set.join_next().await.is_some() {}
        self.names.clear();
        failed
    }
}

/// Waits for `task`, spawned elsewhere (the network's swarm task, the heat service), as a
/// service: aborting the service aborts `task` too, which merely dropping its handle would
/// leave running, holding what it holds (the database among it).
pub(super) async fn joined<T>(task: JoinHandle<T>) -> Result<T, JoinError> {
    struct AbortOnDrop(AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _abort = AbortOnDrop(task.abort_handle());
    task.await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_service_that_does_not_stop_is_named_and_aborted() {
        let mut services = Services::default();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut heed = stopped.clone();
        services.spawn("heeds the signal", async move {
            let _ = heed.changed().await;
            Ok(())
        });
        services.spawn("fails as it stops", {
            let mut heed = stopped.clone();
            async move {
                let _ = heed.changed().await;
                Err("could not flush".to_string())
            }
        });
        // Holds something that must be let go of when it is aborted.
        let held = std::sync::Arc::new(());
        let holder = held.clone();
        services.spawn("ignores it", async move {
            let _holder = holder;
            std::future::pending::<()>().await;
            Ok(())
        });
        stop.send(true).unwrap();
        let started = tokio::time::Instant::now();
        let failed = services.stop(Duration::from_secs(15)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        assert_eq!(
            failed,
            [
                "fails as it stops: could not flush",
                "ignores it: still running 15 s after the stop signal; aborted",
            ]
        );
        assert_eq!(
            std::sync::Arc::strong_count(&held),
            1,
            "the aborted service was dropped"
        );
        assert!(services.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_joined_as_a_service_is_aborted_with_it() {
        let mut services = Services::default();
        let held = std::sync::Arc::new(());
        let holder = held.clone();
        let task = tokio::spawn(async move {
            let _holder = holder;
            std::future::pending::<()>().await;
        });
        services.spawn("spawned elsewhere", async move {
            joined(task).await.map_err(|e| e.to_string())
        });
        let failed = services.stop(Duration::from_secs(1)).await;
        assert_eq!(failed.len(), 1, "{failed:?}");
        // The aborted task ends at its next poll.
        tokio::task::yield_now().await;
        assert_eq!(
            std::sync::Arc::strong_count(&held),
            1,
            "the task still runs"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn services_that_stop_are_not_waited_for_further() {
        let mut services = Services::default();
        services.spawn("quick", async { Ok(()) });
        let started = tokio::time::Instant::now();
        assert!(services.stop(Duration::from_secs(15)).await.is_empty());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_panicking_service_is_named() {
        let mut services = Services::default();
        services.spawn("brittle", async { panic!("broken invariant") });
        let (name, result) = services.next().await.unwrap();
        assert_eq!(name, "brittle");
        assert!(result.unwrap_err().contains("panicked"));
    }
}
