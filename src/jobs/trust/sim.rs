//! A cheater simulation on the coordinator's pure book: simulated radiators (honest, random
//! liars, colluders, Sybil identities) lease, run and claim shards against a real
//! [`Book`] with real signatures, in simulated time. Test-only (feature `testing`): it is
//! what `cargo bench --bench trust` and `tests/trust.rs` print, and `docs/trust.md` shows.
//!
//! Every radiator has two slots; a shard takes 1–3 s; time advances in 100 ms ticks.
//! Outputs are fetched and checked at once (the network is not what is measured here), and
//! every winner's receipt is countersigned. Must not touch: I/O, clocks (time is simulated).

use std::collections::HashMap;

use crate::identity::{Identity, PublicKey};
use crate::jobs::coordinator::book::{Action, Book, Finish, LeaseTerms, Step};
use crate::jobs::trust::{Policy, Record, Reputation, Rules};
use crate::model::receipt::{Claim, EnergyMethod, VerifiedBy, WorkRecord};
use crate::model::wire::{Response, PROTOCOL_VERSION};
use crate::model::{Assembly, JobLimits, JobManifest};

/// How a simulated radiator behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Honest,
    /// Lies on this share (‰) of its shards, each lie a different wrong output.
    RandomLiar(u16),
    /// Always reports the one wrong output all colluders agreed on.
    Colluder,
}

impl Kind {
    fn lies(self) -> bool {
        self != Kind::Honest
    }
}

/// One simulated radiator.
#[derive(Clone, Copy, Debug)]
pub struct Radiator {
    pub kind: Kind,
    /// Starts with a clean record of verified work (established at the coordinator).
    pub established: bool,
}

/// A scenario: radiators, work, and the policy the coordinator applies.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub radiators: Vec<Radiator>,
    /// Jobs submitted one after the other, each with `shards` shards.
    pub jobs: usize,
    pub shards: usize,
    /// The jobs' replication (full replication: the untrusted quorum).
    pub replication: u8,
    /// `None`: plain fixed replication, no reputation.
    pub policy: Option<Policy>,
    pub seed: u64,
}

/// What a scenario produced.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub shards: usize,
    pub wrong_accepted: usize,
    pub liars: usize,
    /// Liars excluded for good, and suspended from at least one job only.
    pub liars_excluded: usize,
    pub liars_suspended: usize,
    /// The most wrong claims any caught liar made before it was shut out.
    pub max_lies_before_caught: u32,
    pub honest_excluded: usize,
    pub honest_suspended: usize,
    /// Claims per verified shard, late replicas included.
    pub mean_replicas: f64,
    /// Simulated time until the last job finished, ms.
    pub time_ms: u64,
    /// Shards by how their receipts say they were verified.
    pub quorum: usize,
    pub spot_checked: usize,
    pub trusted_alone: usize,
    /// Jobs that failed (replicas never agreed) or did not finish in time.
    pub unfinished: usize,
}

const TICK_MS: u64 = 100;
const SLOTS: usize = 2;
const GIVE_UP_MS: u64 = 3_600_000;

/// splitmix64: a small deterministic generator, so every run of a scenario is the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Task {
    job: blake3::Hash,
    shard: u32,
    nonce: [u8; 16],
    granted_ms: u64,
    done_ms: u64,
}

struct Sim {
    book: Book,
    ids: Vec<Identity>,
    kinds: Vec<Radiator>,
    submitter: Identity,
    manifests: HashMap<blake3::Hash, JobManifest>,
    lies: HashMap<PublicKey, u32>,
    claims: usize,
    report: Report,
}

fn right(shard: u32, job: &blake3::Hash) -> blake3::Hash {
    blake3::hash(&[job.as_bytes().as_slice(), &shard.to_le_bytes()].concat())
}

impl Sim {
    fn commit(&mut self, step: Step) {
        let then = step.then.clone();
        self.book.apply(step.update);
        self.act(then);
    }

    fn act(&mut self, mut queue: Vec<Action>) {
        while let Some(action) = queue.pop() {
            match action {
                Action::FetchOutput {
                    job,
                    shard,
                    outcome,
                    ..
                } => {
                    if let Some(step) = self.book.output_checked(&job, shard, outcome) {
                        if outcome.output != right(shard, &job) {
                            self.report.wrong_accepted += 1;
                        }
                        queue.extend(step.then.clone());
                        self.book.apply(step.update);
                    }
                }
                Action::Settle { job, shard } => {
                    let Some(s) = self.book.settlement(&job, shard) else {
                        continue;
                    };
                    let signed: Vec<u32> = s.winners.iter().map(|(i, _, _)| *i).collect();
                    let first_settle = self
                        .book
                        .job(&job)
                        .and_then(|j| j.shards.get(shard as usize))
                        .is_some_and(|sh| sh.settled.is_empty());
                    if first_settle {
                        match s.winners.first().map(|(_, _, t)| t.verified_by) {
                            Some(VerifiedBy::Quorum) => self.report.quorum += 1,
                            Some(VerifiedBy::TrustedSpotChecked) => self.report.spot_checked += 1,
                            Some(VerifiedBy::TrustedUnchecked) => self.report.trusted_alone += 1,
                            None => {}
                        }
                    }
                    for update in self.book.settled_all(&[(job, shard, &s, &signed)]) {
                        self.book.apply(update);
                    }
                    // As the actor does: the last settlement of a job finishes it.
                    queue.push(Action::CheckFinished { job });
                }
                Action::CheckFinished { job } => {
                    if let Finish::Assemble(_) = self.book.finish(&job) {
                        if let Some(update) =
                            self.book.assembled(&job, Ok(blake3::hash(b"result")), 0)
                        {
                            self.book.apply(update);
                        }
                    }
                }
            }
        }
    }

    fn claim(&mut self, who: usize, task: &Task, now: u64, rng: &mut Rng) {
        let id = &self.ids[who];
        let kind = self.kinds[who].kind;
        let Some(manifest) = self.manifests.get(&task.job) else {
            return;
        };
        let truth = right(task.shard, &task.job);
        let output = match kind {
            Kind::Honest => truth,
            Kind::RandomLiar(p) if rng.below(1000) < u64::from(p) => {
                blake3::hash(&[truth.as_bytes().as_slice(), &rng.next().to_le_bytes()].concat())
            }
            Kind::RandomLiar(_) => truth,
            Kind::Colluder => blake3::hash(&[truth.as_bytes().as_slice(), b"forged"].concat()),
        };
        let record = WorkRecord {
            job: task.job,
            shard: task.shard,
            module: manifest.module,
            input: manifest.inputs[task.shard as usize],
            output,
            worker: id.public(),
            submitter: manifest.submitter,
            fuel: 1_000,
            energy_mj: 1_000,
            method: EnergyMethod::CpuEstimate,
            start_ms: task.granted_ms,
            end_ms: now,
            nonce: task.nonce,
        };
        let claim = Claim::sign(record, id).expect("the simulation signs its own records");
        if let Ok(step) = self.book.claim(&id.public(), claim, now) {
            self.claims += 1;
            if output != truth {
                *self.lies.entry(id.public()).or_default() += 1;
            }
            self.commit(step);
        }
    }
}

/// Runs a scenario to the end and reports.
pub fn run(s: &Scenario) -> Report {
    let mut rng = Rng(s.seed);
    let submitter = Identity::from_seed([250; 32]);
    let ids: Vec<Identity> = (0..s.radiators.len())
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            seed[8..16].copy_from_slice(&s.seed.to_le_bytes());
            Identity::from_seed(seed)
        })
        .collect();
    let mut book = Book::new(LeaseTerms {
        lease_ms: 60_000,
        max_total_ms: 600_000,
    });
    let rules = Rules::default();
    let mut rep = Reputation::new(rules);
    rep.trust(submitter.public());
    if s.policy.is_some() {
        for (id, r) in ids.iter().zip(&s.radiators) {
            if r.established {
                rep.insert(
                    id.public(),
                    Record {
                        verified: rules.established_after,
                        first_seen_ms: 0,
                        last_seen_ms: rules.established_age_ms,
                        ..Record::default()
                    },
                );
            }
        }
    }
    book.set_reputation(rep);
    book.set_default_policy(s.policy.clone());
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&rng.next().to_le_bytes());
    book.set_spot_key(key);
    let mut sim = Sim {
        book,
        ids,
        kinds: s.radiators.clone(),
        submitter,
        manifests: HashMap::new(),
        lies: HashMap::new(),
        claims: 0,
        report: Report::default(),
    };
    let mut tasks: Vec<Vec<Task>> = (0..s.radiators.len()).map(|_| Vec::new()).collect();
    let mut now = rules.established_age_ms;
    let start = now;
    for j in 0..s.jobs {
        let manifest = JobManifest {
            module: blake3::hash(b"module"),
            inputs: (0..s.shards)
                .map(|i| blake3::hash(&[j as u64, i as u64].map(u64::to_le_bytes).concat()))
                .collect(),
            limits: JobLimits::default(),
            replication: s.replication,
            assembly: Assembly::Concat,
            submitter: sim.submitter.public(),
            created_ms: j as u64 + 1,
        };
        let id = manifest.id();
        sim.book
            .insert_job(id, Book::new_job(manifest.clone(), now));
        sim.manifests.insert(id, manifest);
        let deadline = now + GIVE_UP_MS;
        loop {
            let running = sim
                .book
                .job(&id)
                .is_some_and(|j| j.status == crate::jobs::JobStatus::Running);
            if !running || now > deadline {
                if running {
                    sim.report.unfinished += 1;
                }
                if matches!(
                    sim.book.job(&id).map(|j| &j.status),
                    Some(crate::jobs::JobStatus::Failed { .. })
                ) {
                    sim.report.unfinished += 1;
                }
                break;
            }
            let n = s.radiators.len();
            let first = rng.below(n as u64) as usize;
            for k in 0..n {
                let who = (first + k) % n;
                let (done, open): (Vec<Task>, Vec<Task>) = std::mem::take(&mut tasks[who])
                    .into_iter()
                    .partition(|t| t.done_ms <= now);
                tasks[who] = open;
                for t in done {
                    sim.claim(who, &t, now, &mut rng);
                }
                while tasks[who].len() < SLOTS {
                    let household = sim.ids[who].public();
                    sim.book.note_demand(household, 1000, true, now);
                    let mut nonce = [0u8; 16];
                    nonce[..8].copy_from_slice(&rng.next().to_le_bytes());
                    nonce[8..].copy_from_slice(&rng.next().to_le_bytes());
                    match sim
                        .book
                        .lease(&id, &household, PROTOCOL_VERSION, 1000, nonce, now)
                    {
                        Ok(step) => {
                            if let Response::Leased(l) = &step.answer {
                                tasks[who].push(Task {
                                    job: l.job,
                                    shard: l.shard,
                                    nonce,
                                    granted_ms: now,
                                    done_ms: now + 1_000 + rng.below(2_000),
                                });
                            }
                            sim.commit(step);
                        }
                        Err(_) => break,
                    }
                }
            }
            now += TICK_MS;
        }
        // Late replicas still running are dropped with the finished job.
        for t in tasks.iter_mut() {
            t.retain(|t| t.job != id);
        }
    }
    let mut report = sim.report;
    report.time_ms = now - start;
    report.shards = s.jobs * s.shards;
    report.mean_replicas = sim.claims as f64 / report.shards.max(1) as f64;
    for (i, r) in s.radiators.iter().enumerate() {
        let h = sim.ids[i].public();
        let excluded = sim.book.is_excluded(&h);
        let suspended = !excluded && sim.manifests.keys().any(|j| sim.book.is_suspended(j, &h));
        if r.kind.lies() {
            report.liars += 1;
            if excluded {
                report.liars_excluded += 1;
            } else if suspended {
                report.liars_suspended += 1;
            }
            if excluded || suspended {
                let lies = sim.lies.get(&h).copied().unwrap_or(0);
                report.max_lies_before_caught = report.max_lies_before_caught.max(lies);
            }
        } else if excluded {
            report.honest_excluded += 1;
        } else if suspended {
            report.honest_suspended += 1;
        }
    }
    report
}

/// `n` radiators: `liars` of them of `kind` (fresh identities), the rest honest and
/// established; the liars are spread over the list.
pub fn radiators(n: usize, liars: usize, kind: Kind) -> Vec<Radiator> {
    (0..n)
        .map(|i| {
            let lying = liars > 0 && i % (n / liars).max(1) == 0 && i / (n / liars).max(1) < liars;
            Radiator {
                kind: if lying { kind } else { Kind::Honest },
                established: !lying,
            }
        })
        .collect()
}

/// The scenarios of `docs/trust.md`, each run with fixed 2-way replication and with the
/// adaptive policy: (name, fixed, adaptive).
pub fn standard() -> Vec<(String, Scenario, Scenario)> {
    let adaptive = Policy::default();
    let base = |radiators: Vec<Radiator>, jobs: usize, shards: usize| {
        let fixed = Scenario {
            radiators: radiators.clone(),
            jobs,
            shards,
            replication: 2,
            policy: None,
            seed: 7,
        };
        let adapt = Scenario {
            policy: Some(adaptive.clone()),
            ..fixed.clone()
        };
        (fixed, adapt)
    };
    let mut out = Vec::new();
    let mut add = |name: &str, (f, a): (Scenario, Scenario)| out.push((name.to_string(), f, a));
    add(
        "honest, work > heat",
        base(radiators(20, 0, Kind::Honest), 1, 500),
    );
    add(
        "honest, heat > work",
        base(radiators(20, 0, Kind::Honest), 50, 10),
    );
    add(
        "10 % random liars",
        base(radiators(20, 2, Kind::RandomLiar(500)), 1, 500),
    );
    add(
        "25 % random liars",
        base(radiators(20, 5, Kind::RandomLiar(500)), 1, 500),
    );
    add(
        "25 % colluders",
        base(radiators(20, 5, Kind::Colluder), 1, 500),
    );
    let mut sybil = radiators(20, 0, Kind::Honest);
    sybil.extend((0..5).map(|_| Radiator {
        kind: Kind::Colluder,
        established: false,
    }));
    add("Sybil, 5 fresh ids", base(sybil, 1, 500));
    // The residual risk: liars that earned trust first (established), then lie.
    let mut patient = radiators(20, 2, Kind::RandomLiar(500));
    for r in &mut patient {
        r.established = true;
    }
    add("10 % patient liars", base(patient, 1, 500));
    out
}

/// A Markdown table of fixed vs adaptive reports.
pub fn table(rows: &[(String, Report, Report)]) -> String {
    let mut t = String::from(
        "| scenario | policy | shards | wrong accepted | liars excluded / suspended (of) | most lies before caught | honest shut out | mean replicas | quorum / spot-checked / trusted alone | time to result |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, fixed, adaptive) in rows {
        for (policy, r) in [("fixed 2", fixed), ("adaptive", adaptive)] {
            t.push_str(&format!(
                "| {name} | {policy} | {} | {} | {} / {} ({}) | {} | {} | {:.2} | {} / {} / {} | {:.1} s{} |\n",
                r.shards,
                r.wrong_accepted,
                r.liars_excluded,
                r.liars_suspended,
                r.liars,
                r.max_lies_before_caught,
                r.honest_excluded + r.honest_suspended,
                r.mean_replicas,
                r.quorum,
                r.spot_checked,
                r.trusted_alone,
                r.time_ms as f64 / 1000.0,
                if r.unfinished > 0 {
                    format!(" ({} jobs unfinished)", r.unfinished)
                } else {
                    String::new()
                },
            ));
        }
    }
    t
}
