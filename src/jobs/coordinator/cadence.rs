//! When a coordinator announces its open jobs again: a pure schedule (no clock, no I/O).
//!
//! A job is announced when it is submitted, then again after `base`, and the interval doubles
//! (up to `max`) every time an announcement went by without a single lease request for the
//! job: nobody near wants work, so telling them again and again only costs their bandwidth.
//! A lease request brings the interval back to `base`: radiators are taking work, and a
//! newcomer should hear of it soon. `max` stays below the connection idle timeout, so the
//! coordinator's neighbours stay connected while a job is open (`docs/protocol.md`, "How work
//! and heat demand travel").

use std::collections::HashMap;

/// One job's schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    next_ms: u64,
    interval_ms: u64,
    asked: bool,
    /// Not announced yet: the first announcement is not a miss, nobody could have asked.
    fresh: bool,
}

/// The announcement schedule of every open job of one coordinator. Bounded by the jobs the
/// book holds: a job enters at submission (or restart) and leaves when it closes.
#[derive(Debug)]
pub struct Cadence {
    base_ms: u64,
    max_ms: u64,
    jobs: HashMap<blake3::Hash, Slot>,
}

impl Cadence {
    pub fn new(base_ms: u64, max_ms: u64) -> Cadence {
        let base_ms = base_ms.max(1);
        Cadence {
            base_ms,
            max_ms: max_ms.max(base_ms),
            jobs: HashMap::new(),
        }
    }

    /// A job to announce now (submitted, or found open after a restart).
    pub fn start(&mut self, job: blake3::Hash, now_ms: u64) {
        self.jobs.entry(job).or_insert(Slot {
            next_ms: now_ms,
            interval_ms: self.base_ms,
            asked: false,
            fresh: true,
        });
    }

    /// A lease request for the job arrived.
    pub fn asked(&mut self, job: &blake3::Hash) {
        if let Some(s) = self.jobs.get_mut(job) {
            s.asked = true;
        }
    }

    /// The job closed: no more announcements.
    pub fn forget(&mut self, job: &blake3::Hash) {
        self.jobs.remove(job);
    }

    /// The jobs whose announcement is due at `now_ms`, at most `max`, oldest due first; each
    /// is rescheduled as announced now.
    pub fn due(&mut self, now_ms: u64, max: usize) -> Vec<blake3::Hash> {
        let mut due: Vec<(u64, blake3::Hash)> = self
            .jobs
            .iter()
            .filter(|(_, s)| s.next_ms <= now_ms)
            .map(|(j, s)| (s.next_ms, *j))
            .collect();
        due.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.as_bytes().cmp(b.1.as_bytes())));
        due.truncate(max);
        for (_, job) in &due {
            if let Some(s) = self.jobs.get_mut(job) {
                s.interval_ms = if s.asked || s.fresh {
                    self.base_ms
                } else {
                    s.interval_ms.saturating_mul(2).min(self.max_ms)
                };
                s.asked = false;
                s.fresh = false;
                s.next_ms = now_ms.saturating_add(s.interval_ms);
            }
        }
        due.into_iter().map(|(_, j)| j).collect()
    }

    /// The job's current interval between announcements, in milliseconds.
    #[cfg(test)]
    pub fn interval_of(&self, job: &blake3::Hash) -> Option<u64> {
        self.jobs.get(job).map(|s| s.interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backs_off_when_nobody_asks_and_resets_when_someone_does() {
        let job = blake3::hash(b"j");
        let mut c = Cadence::new(5_000, 40_000);
        c.start(job, 1_000);
        assert_eq!(c.due(1_000, 8), vec![job]);
        assert!(c.due(5_999, 8).is_empty());
        let mut now = 1_000;
        let mut gaps = Vec::new();
        for _ in 0..6 {
            let next = now + c.interval_of(&job).unwrap();
            assert!(c.due(next - 1, 8).is_empty());
            assert_eq!(c.due(next, 8), vec![job]);
            gaps.push(next - now);
            now = next;
        }
        assert_eq!(gaps, vec![5_000, 10_000, 20_000, 40_000, 40_000, 40_000]);
        c.asked(&job);
        let next = now + c.interval_of(&job).unwrap();
        assert_eq!(c.due(next, 8), vec![job]);
        assert_eq!(c.interval_of(&job), Some(5_000));
        c.forget(&job);
        assert!(c.due(u64::MAX, 8).is_empty());
    }

    proptest! {
        /// Whatever happens, a job is announced at most once per `base` and at least once
        /// per `max` (checked at 1 ms resolution over a few minutes), and `due` never returns
        /// more than asked for.
        #[test]
        fn interval_stays_between_base_and_max(asks in proptest::collection::vec(any::<bool>(), 1..60)) {
            let mut c = Cadence::new(5_000, 40_000);
            let job = blake3::hash(b"j");
            c.start(job, 0);
            let mut last = None;
            let mut now = 0u64;
            for ask in asks {
                let got = c.due(now, 1);
                prop_assert!(got.len() <= 1);
                if !got.is_empty() {
                    if let Some(l) = last {
                        prop_assert!(now - l >= 5_000 && now - l <= 40_000);
                    }
                    last = Some(now);
                }
                if ask { c.asked(&job); }
                now += c.interval_of(&job).unwrap();
            }
        }
    }
}
