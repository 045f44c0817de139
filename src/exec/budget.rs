//! The radiator's memory budget for shards ([`RadiatorLimits::memory_total`]): what each
//! running shard may hold, and the outputs of finished shards until their callers drop them.
//! A share is taken before a shard is set up and given back, all or in part, as it finishes
//! and as its output is dropped.

use std::sync::{Arc, Condvar, Mutex};

#[cfg(doc)]
use super::RadiatorLimits;

/// Memory promised to shards, against [`RadiatorLimits::memory_total`]: what each running
/// shard may hold (linear memory, input, output, diagnostics), and the outputs of finished
/// shards until their callers drop them. Shared with those outputs
/// ([`ShardOutput`](super::ShardOutput)).
#[derive(Default)]
pub(super) struct MemoryBudget {
    in_use: Mutex<u64>,
    freed: Condvar,
}

/// A share of the memory budget, given back when dropped.
pub(super) struct MemoryShare {
    budget: Arc<MemoryBudget>,
    pub(super) bytes: u64,
}

impl MemoryBudget {
    /// Blocks until `bytes` fit under `total`. Callers never ask for more than `total`, so
    /// every wait ends once the shards running now finish and their outputs are dropped
    /// (a caller must not hold an output while it waits for another run).
    pub(super) fn reserve(self: &Arc<Self>, bytes: u64, total: u64) -> MemoryShare {
        let mut in_use = self.lock();
        while in_use.saturating_add(bytes) > total {
            in_use = self.freed.wait(in_use).unwrap_or_else(|p| p.into_inner());
        }
        *in_use += bytes;
        MemoryShare {
            budget: self.clone(),
            bytes,
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        // Plain numbers: a panic while holding the lock leaves them usable.
        self.in_use.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MemoryShare {
    /// Gives back all of the share beyond `bytes`.
    pub(super) fn shrink_to(&mut self, bytes: u64) {
        if bytes >= self.bytes {
            return;
        }
        let mut in_use = self.budget.lock();
        *in_use = in_use.saturating_sub(self.bytes - bytes);
        self.bytes = bytes;
        self.budget.freed.notify_all();
    }
}

impl std::fmt::Debug for MemoryShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryShare({} bytes)", self.bytes)
    }
}

impl Drop for MemoryShare {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn memory_budget_bounds_how_many_shards_hold_memory_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let budget = Arc::new(MemoryBudget::default());
        let (holding, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        // Total 100: shares of 40 fit two at a time, however many threads ask.
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| {
                    let _share = budget.reserve(40, 100);
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    holding.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(*budget.lock(), 0);
    }
}
