//! When a coordinator announces its open jobs again: a pure schedule (no clock, no I/O).
//!
//! A job is announced when it is submitted, then again after `base`, and the interval doubles
//! (up to `max`) every time an announcement went by without a single lease request for the
//! job: nobody near wants work, so telling them again and again only costs their bandwidth.
//! A lease request brings the interval back to `base`: radiators are taking work, and a
//! newcomer should hear of it soon. `max` stays below the connection idle timeout, so the
//! coordinator's neighbours stay connected while a job is open (`docs/protocol.md`, "How work
//! and heat demand travel").
//!
//! Beside the announcements, two decisions about work beyond the neighbours (`net::work`):
//! when to publish this coordinator's work records on the DHT ([`Cadence::work_step`]), and
//! whether a radiator that told us its heat demand is offered our open jobs directly
//! ([`Cadence::offer_to`]): a radiator that found us on the DHT is not among the neighbours
//! the announcements go to.

use std::collections::HashMap;

use crate::identity::PublicKey;

/// Radiators remembered as offered our jobs directly; beyond, the oldest offers are
/// forgotten first, and with all of them recent nobody new is offered until one ages out.
pub const MAX_DIRECT_OFFERS: usize = 4_096;
/// A radiator is offered our open jobs directly at most once in this window: below a
/// radiator's 90 s memory of the coordinators that offered it work (`node/offers.rs`), so
/// one that keeps telling us its demand keeps us among its offers.
pub const DIRECT_OFFER_WINDOW_MS: u64 = 60_000;

/// What to do about this coordinator's work records (`net::work`) now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkStep {
    /// Publish them (again): a job is open. `look`: a job opened since the want board was
    /// last looked up, so look it up once the publication has ended.
    Provide {
        look: bool,
    },
    /// A job opened while the records are already published: look the want board up now.
    /// Radiators that go on it later find our record themselves, so it is looked up once
    /// per job opened, not with every publication.
    Look,
    /// The last open job closed: stop providing.
    Stop,
    Nothing,
}

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
    /// When the work records are next due while providing; `None` while not providing.
    work_next_ms: Option<u64>,
    /// A job opened since the want board was last looked up.
    opened: bool,
    /// Radiators offered our jobs directly, by when (at most [`MAX_DIRECT_OFFERS`]).
    offered: HashMap<PublicKey, u64>,
}

impl Cadence {
    pub fn new(base_ms: u64, max_ms: u64) -> Cadence {
        let base_ms = base_ms.max(1);
        Cadence {
            base_ms,
            max_ms: max_ms.max(base_ms),
            jobs: HashMap::new(),
            work_next_ms: None,
            opened: false,
            offered: HashMap::new(),
        }
    }

    /// Whether to publish the work records now (every `period_ms` while a job is open) or
    /// stop providing (once, when the last open job has closed), and whether to look the
    /// want board up (once after each job opened).
    pub fn work_step(&mut self, now_ms: u64, period_ms: u64) -> WorkStep {
        match (self.jobs.is_empty(), self.work_next_ms) {
            (false, Some(next)) if now_ms < next => {
                if std::mem::take(&mut self.opened) {
                    WorkStep::Look
                } else {
                    WorkStep::Nothing
                }
            }
            (false, _) => {
                self.work_next_ms = Some(now_ms.saturating_add(period_ms.max(1)));
                WorkStep::Provide {
                    look: std::mem::take(&mut self.opened),
                }
            }
            (true, Some(_)) => {
                self.work_next_ms = None;
                WorkStep::Stop
            }
            (true, None) => WorkStep::Nothing,
        }
    }

    /// A radiator wants heat (it told us its demand, or our lookup found it on the want
    /// board): whether to offer it our open jobs directly now. Yes when a job is open and it
    /// was not offered them in the last `window_ms` (so a radiator that keeps telling us,
    /// every 10 s, is offered them once a window, enough to keep us among its offers; and no
    /// peer can make us send more).
    pub fn offer_to(&mut self, household: PublicKey, now_ms: u64, window_ms: u64) -> bool {
        if self.jobs.is_empty() {
            return false;
        }
        let recent = |at: u64| now_ms.saturating_sub(at) < window_ms;
        if self.offered.get(&household).is_some_and(|at| recent(*at)) {
            return false;
        }
        if !self.offered.contains_key(&household) && self.offered.len() >= MAX_DIRECT_OFFERS {
            self.offered.retain(|_, at| recent(*at));
            if self.offered.len() >= MAX_DIRECT_OFFERS {
                return false;
            }
        }
        self.offered.insert(household, now_ms);
        true
    }

    /// A job to announce now (submitted, or found open after a restart).
    pub fn start(&mut self, job: blake3::Hash, now_ms: u64) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.jobs.entry(job) {
            slot.insert(Slot {
                next_ms: now_ms,
                interval_ms: self.base_ms,
                asked: false,
                fresh: true,
            });
            self.opened = true;
        }
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

    #[test]
    fn work_records_are_published_while_a_job_is_open_and_stopped_once_after() {
        let mut c = Cadence::new(5_000, 40_000);
        assert_eq!(c.work_step(0, 60_000), WorkStep::Nothing);
        let job = blake3::hash(b"j");
        c.start(job, 1_000);
        let (first, again) = (
            WorkStep::Provide { look: true },
            WorkStep::Provide { look: false },
        );
        assert_eq!(c.work_step(1_000, 60_000), first);
        assert_eq!(c.work_step(60_999, 60_000), WorkStep::Nothing);
        assert_eq!(
            c.work_step(61_000, 60_000),
            again,
            "the want board once per job"
        );
        // A second job while the records are published: the want board is looked up at
        // once; the same job started again (a restart's reload) is not a new one.
        let second = blake3::hash(b"second");
        c.start(second, 61_500);
        c.start(job, 61_500);
        assert_eq!(c.work_step(61_600, 60_000), WorkStep::Look);
        assert_eq!(c.work_step(61_700, 60_000), WorkStep::Nothing);
        c.forget(&job);
        c.forget(&second);
        assert_eq!(c.work_step(62_000, 60_000), WorkStep::Stop);
        assert_eq!(c.work_step(200_000, 60_000), WorkStep::Nothing);
        // A new job publishes at once, not a period after the last publication.
        c.start(job, 200_000);
        assert_eq!(c.work_step(200_001, 60_000), first);
    }

    fn household(i: u32) -> PublicKey {
        crate::identity::Identity::from_seed(*blake3::hash(&i.to_le_bytes()).as_bytes()).public()
    }

    #[test]
    fn a_radiator_wanting_heat_is_offered_the_open_jobs_once_a_window() {
        let mut c = Cadence::new(5_000, 40_000);
        let h = household(1);
        assert!(!c.offer_to(h, 0, 60_000), "no open job");
        c.start(blake3::hash(b"j"), 0);
        assert!(c.offer_to(h, 0, 60_000));
        assert!(!c.offer_to(h, 10_000, 60_000));
        assert!(!c.offer_to(h, 59_999, 60_000));
        assert!(c.offer_to(h, 60_000, 60_000));
        assert!(c.offer_to(household(2), 60_000, 60_000));
    }

    #[test]
    fn direct_offers_are_bounded_and_make_room_as_they_age() {
        let mut c = Cadence::new(5_000, 40_000);
        c.start(blake3::hash(b"j"), 0);
        for i in 0..MAX_DIRECT_OFFERS as u32 {
            assert!(c.offer_to(household(i), u64::from(i), 60_000));
        }
        let newcomer = household(u32::MAX);
        assert!(
            !c.offer_to(newcomer, 1_000, 60_000),
            "all recent: nobody new"
        );
        assert_eq!(c.offered.len(), MAX_DIRECT_OFFERS);
        // Once the first have aged out, they make room.
        assert!(c.offer_to(newcomer, 60_010, 60_000));
        assert!(c.offered.len() <= MAX_DIRECT_OFFERS);
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
