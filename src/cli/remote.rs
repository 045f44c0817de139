//! Commands that talk to a running node through its local API (`hearth receipts` is in
//! `receipts.rs`).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::api::{PeerView, Status, SubmitJob};
use crate::jobs::build::{materialise, JobSpec, Materials};
use crate::jobs::{JobStatus, JobSummary, JobView, ShardView};

use super::client::Client;
use super::JobArgs;

/// How long `hearth status --recheck` waits for AutoNAT's verdicts once the test started: the
/// client sends its probes on a 5 s tick and waits 10 s at most for each dial-back.
const RECHECK_WAIT: Duration = Duration::from_secs(30);

pub async fn status(api: &Client, json: bool, recheck: bool) -> anyhow::Result<()> {
    if recheck {
        self::recheck(api).await?;
    }
    let s: Status = api.get("/v1/status").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("peer id:    {}", s.peer_id);
    println!("household:  {}", s.household);
    for why in &s.own_key_refused {
        match why.as_str() {
            "revoked" => println!(
                "KEY REVOKED: this household revoked this key; radiators take no work from it \
                 and no receipt it countersigns now counts (docs/operations.md, \"A household \
                 whose key was stolen\")"
            ),
            _ => println!(
                "KEY REFUSED: this key signed two different receipt commitments under one \
                 number; radiators take no work from it and verifiers count neither (`hearth \
                 audit KEY` on a bootstrap node shows both)"
            ),
        }
    }
    if let Some(why) = &s.key_used_elsewhere {
        println!("KEY USED ELSEWHERE: {why}");
    }
    if let Some(why) = &s.key_event_not_signed_here {
        println!("KEY EVENT NOT SIGNED HERE: {why}");
    }
    println!("role:       {}", s.role);
    match s.key_log_events {
        Some(0) => println!(
            "key log:    none: `hearth key prerotate --next FILE` fixes your next key (keep FILE \
             offline), so that a thief of this key cannot take your household over and your \
             credit can follow you to a new key (docs/operations.md)"
        ),
        Some(n) => println!("key log:    {n} event(s); the next key is fixed"),
        None => {}
    }
    if let Some(why) = &s.sealing_waits {
        println!("sealing:    {why}");
    }
    println!("version:    {}", s.version);
    println!("uptime:     {} s", s.uptime_s);
    println!("peers:      {}", s.peers);
    println!("slots:      {} of {}", s.worker_slots, s.worker_slots_max);
    println!(
        "memory:     {} of {} MiB held by shards",
        s.shard_memory_bytes.div_ceil(1 << 20),
        s.shard_memory_limit_bytes >> 20
    );
    if let Some(free) = s.disk_free_bytes {
        println!(
            "disk:       {} MiB free; blobs that would leave less than {} MiB are refused",
            free >> 20,
            s.disk_floor_bytes >> 20
        );
    }
    for a in &s.listen_addrs {
        println!("listening:  {a}");
    }
    println!(
        "work keys:  {} record(s) of coordinators with open jobs and {} of radiators wanting \
         heat held for the DHT; {} refused (a key full, or its sender's network holding its \
         share); looked up {} time(s) for work, {} for radiators",
        s.work_records, s.want_records, s.work_records_refused, s.work_lookups, s.want_lookups
    );
    println!(
        "refusing:   {} key(s) whose households revoked them or that equivocated",
        s.refused_keys
    );
    println!(
        "routing:    {} peer(s) in the DHT routing table; {} kept out (their network holding \
         its share of a bucket or of the table)",
        s.routing_peers, s.routing_refused
    );
    if s.reachability.dht_client {
        println!(
            "dht:        client (this node looks up and provides, and answers no lookups: it is \
             behind NAT in a network with public servers enough, or joined in the last seconds \
             and has not yet chosen)"
        );
    }
    if let Some(relay) = &s.relay {
        println!(
            "relay:      {} home(s) listening through this relay; {} relayed connection(s) open, \
             {} since start; {} refused{}",
            relay.reservations,
            relay.circuits,
            relay.circuits_total,
            relay.refused_total,
            refusal_reasons(&relay.refused)
        );
    }
    let r = &s.reachability;
    if r.is_public() {
        for a in &r.confirmed_addrs {
            println!("reachable:  public, at {a}");
        }
    } else {
        println!("reachable:  {}", r.summary());
        for relay in &r.relays {
            println!("via relay:  {relay}");
        }
        println!("NAT:        {}", r.nat_mapping.describe());
    }
    for a in &r.unreachable_addrs {
        if r.confirmed_addrs.contains(a) {
            // Confirmed before, failed once since: withdrawn only if the next test fails too.
            println!("doubted:    {a} (AutoNAT: not reachable in the last test; tested again)");
        } else {
            println!("not public: {a} (AutoNAT: not reachable from outside)");
        }
    }
    if let Some(since) = r.line_down_since_ms {
        println!(
            "LINE DOWN:  the network has been unreachable from here for {} s (the home's line \
             or router is down); trying the bootstrap nodes every 5 s",
            crate::model::now_ms().saturating_sub(since) / 1000
        );
    }
    println!(
        "hole punch: {} of {} succeeded; direct after hole punch: {}; relayed only: {}",
        r.hole_punch_successes,
        r.hole_punch_attempts,
        r.hole_punched_peers.len(),
        r.relayed_peers.len()
    );
    if r.dead_connections > 0 {
        println!(
            "dead paths: {} connection(s) closed since start because their path went silent (a router rebooted or changed address)",
            r.dead_connections
        );
    }
    for p in &r.hole_punched_peers {
        println!("direct:     {p} (hole punched)");
    }
    for p in &r.relayed_peers {
        println!("relayed:    {p}");
    }
    Ok(())
}

/// `hearth dashboard`: asks the node for a one-time login ticket and prints the link.
pub async fn dashboard(api: &Client) -> anyhow::Result<()> {
    let t: crate::api::auth::Ticket = api
        .post_json("/v1/login/ticket", &())
        .await
        .context("asking the node for a login link")?;
    // A node serving every interface is still reachable on loopback from here.
    let base = api
        .base()
        .replace("://0.0.0.0:", "://127.0.0.1:")
        .replace("://[::]:", "://[::1]:");
    eprintln!(
        "open this link in a browser on this machine within {} s; it works once:",
        t.expires_in_s
    );
    println!("{base}{}", t.path);
    Ok(())
}

pub async fn peers(api: &Client, json: bool) -> anyhow::Result<()> {
    let peers: Vec<PeerView> = api.get("/v1/peers").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&peers)?);
        return Ok(());
    }
    if peers.is_empty() {
        println!("no peers connected");
    }
    for p in peers {
        println!(
            "{}  {:>6} s  {}  {}",
            p.peer_id,
            p.connected_s,
            p.agent.unwrap_or_else(|| "?".into()),
            p.addresses.join(" ")
        );
    }
    Ok(())
}

pub async fn submit(
    api: &Client,
    spec: &JobSpec,
    common: &JobArgs,
    policy: Option<crate::jobs::trust::Policy>,
    allow: Vec<String>,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let Materials {
        module,
        inputs,
        assembly,
    } = materialise(spec)?;
    #[derive(serde::Deserialize)]
    struct Hash {
        hash: String,
    }
    let module: Hash = api
        .post_bytes("/v1/blobs", module)
        .await
        .context("uploading the module")?;
    let mut hashes = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let h: Hash = api
            .post_bytes("/v1/blobs", input)
            .await
            .with_context(|| format!("uploading input {i}"))?;
        hashes.push(h.hash);
    }
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let job = SubmitJob {
        module: module.hash,
        inputs: hashes,
        limits: Some(common.limits()),
        replication: common.replication,
        assembly,
        policy,
        allow,
    };
    let id: Id = api.post_json("/v1/jobs", &job).await?;
    eprintln!("submitted; follow it with `hearth job wait {}`", id.id);
    println!("{}", id.id);
    if let Some(path) = output {
        job_wait(api, &id.id, None).await?;
        job_result(api, &id.id, path).await?;
    }
    Ok(())
}

pub async fn jobs(api: &Client, json: bool) -> anyhow::Result<()> {
    let jobs: Vec<JobSummary> = api.get("/v1/jobs").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(());
    }
    if jobs.is_empty() {
        println!("this node coordinates no jobs");
    }
    for j in jobs {
        println!(
            "{}  {:<8} {}/{} shards verified",
            j.id,
            state_word(&j.status),
            j.shards_verified,
            j.shards_total
        );
    }
    Ok(())
}

/// `hearth trust [HOUSEHOLD]`: each household's standing and why; for one household also
/// its record and every piece of fraud evidence against it, with how this node's re-run of
/// the shard judged it.
pub async fn trust(api: &Client, household: Option<&str>, json: bool) -> anyhow::Result<()> {
    use crate::jobs::trust::view::HouseholdTrust;
    let all: Vec<HouseholdTrust> = match household {
        Some(h) => vec![api.get(&format!("/v1/trust/{}", h.trim())).await?],
        None => api.get("/v1/trust").await?,
    };
    if json {
        let text = match household {
            Some(_) => serde_json::to_string_pretty(&all[0])?,
            None => serde_json::to_string_pretty(&all)?,
        };
        println!("{text}");
        return Ok(());
    }
    for t in &all {
        println!("{}  {:<11} {}", t.household, t.standing, t.why);
        if household.is_none() {
            continue;
        }
        if let Some(r) = &t.record {
            println!(
                "  record here: {} verified, {} wrong, {} disputed",
                r.verified, r.wrong, r.disputed
            );
        }
        if let Some(e) = &t.excluded_by_vote {
            println!("  excluded by this node's vote; evidence: {e}");
        }
        if t.false_accuser {
            println!("  evidence it signed was refuted by a re-run here; its evidence is ignored");
        }
        for e in &t.evidence {
            println!(
                "  evidence from coordinator {}: job {} shard {}: it claimed {} (fuel {}), {} won with {} (fuel {})",
                e.coordinator, e.job, e.shard, e.accused_output, e.accused_fuel, e.winner, e.winning_output, e.winning_fuel
            );
            let by = e
                .checked_by
                .as_deref()
                .map(|k| format!(", re-run by {k}"))
                .unwrap_or_default();
            match &e.detail {
                Some(d) => println!("    {}{by}: {d}", e.status),
                None => println!("    {}{by}", e.status),
            }
        }
    }
    Ok(())
}

/// `refused`'s reasons in words, for the status line: " (3 to homes without a reservation,
/// 2 rate limited)", or nothing when none was refused.
fn refusal_reasons(r: &crate::net::RelayRefusals) -> String {
    let parts: Vec<String> = [
        (r.no_reservation, "to homes without a reservation here"),
        (r.circuits_full, "at max_circuits"),
        (r.peer_circuits_full, "at max_circuits_per_peer"),
        (r.reservations_full, "at max_reservations"),
        (r.destination_failed, "not taken by their destination"),
        (r.rate_limited, "rate limited"),
        (r.other, "malformed or not allowed"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, why)| format!("{n} {why}"))
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn state_word(s: &JobStatus) -> &'static str {
    match s {
        JobStatus::Running => "running",
        JobStatus::Done { .. } => "done",
        JobStatus::Failed { .. } => "failed",
    }
}

/// The full id of the job `given` names: its 64 hex digits, or their start when exactly one
/// job this node coordinates begins so (`hearth receipts` prints 12 of them). Anything else
/// goes to the node as it is, which says what is wrong with it.
pub async fn job_id(api: &Client, given: &str) -> anyhow::Result<String> {
    let given = given.trim().to_ascii_lowercase();
    if whole_job_id(&given).map_err(anyhow::Error::msg)? {
        return Ok(given);
    }
    let jobs: Vec<JobSummary> = api.get("/v1/jobs").await?;
    pick_job(&given, jobs.iter().map(|j| j.id.as_str()))
        .map(str::to_string)
        .map_err(anyhow::Error::msg)
}

/// Whether what was typed for a job is its whole id (true) or the start of one (false), or
/// neither: said here in words, where the node would answer "not a blake3 hash".
fn whole_job_id(given: &str) -> Result<bool, String> {
    if given.is_empty() || given.len() > 64 || !given.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{given:?} is not a job id: give its 64 hex digits, or enough of the first ones to \
             name one job (`hearth jobs` lists them)"
        ));
    }
    Ok(given.len() == 64)
}

/// The one id among `ids` that starts with `prefix`.
fn pick_job<'a>(prefix: &str, ids: impl Iterator<Item = &'a str>) -> Result<&'a str, String> {
    let found: Vec<&str> = ids.filter(|id| id.starts_with(prefix)).collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no job this node coordinates has an id starting with {prefix} (`hearth jobs` lists them)"
        )),
        many => Err(format!(
            "{prefix} starts the ids of {} jobs ({}); give more of its digits",
            many.len(),
            many.iter()
                .map(|id| id.get(..16).unwrap_or(id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

pub async fn job_status(api: &Client, id: &str, json: bool, all: bool) -> anyhow::Result<()> {
    let id = job_id(api, id).await?;
    let j: JobView = api.get(&format!("/v1/jobs/{id}")).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!(
        "job {}: {} ({}/{} shards verified, replication {})",
        j.id,
        state_word(&j.status),
        j.shards_verified,
        j.shards_total,
        j.replication
    );
    if let JobStatus::Failed { reason } = &j.status {
        println!("reason: {reason}");
    }
    for line in shard_lines(&j.shards, all) {
        println!("{line}");
    }
    Ok(())
}

/// What `hearth job status` prints below its first line: how many shards are in each state,
/// then every shard that is not verified, consecutive shards that say the same on one line
/// (a 65 536-shard job printed 65 536 lines), and the verified ones one by one only when
/// `all` (`--all`): each names its own output.
fn shard_lines(shards: &[ShardView], all: bool) -> Vec<String> {
    let short = |k: &str| k.chars().take(12).collect::<String>();
    let keys = |ks: &[String]| ks.iter().map(|k| short(k)).collect::<Vec<_>>().join(", ");
    let describe = |s: &ShardView| match s {
        ShardView::Waiting { reason } => format!("waiting: {reason}"),
        ShardView::Leased { to, claims } => {
            format!("leased to {} ({claims} claims in)", keys(to))
        }
        ShardView::Verifying { claims } => {
            format!("verifying ({claims} agreeing claims; fetching output)")
        }
        ShardView::Verified {
            output,
            fuel,
            households,
            ..
        } => format!(
            "verified: output {} fuel {fuel} by {}",
            short(output),
            keys(households)
        ),
        ShardView::Failed { reason } => format!("failed: {reason}"),
    };
    let state = |s: &ShardView| match s {
        ShardView::Waiting { .. } => 0,
        ShardView::Leased { .. } => 1,
        ShardView::Verifying { .. } => 2,
        ShardView::Verified { .. } => 3,
        ShardView::Failed { .. } => 4,
    };
    let mut counts = [0usize; 5];
    for s in shards {
        counts[state(s)] += 1;
    }
    let names = ["waiting", "leased", "verifying", "verified", "failed"];
    let mut lines = vec![format!(
        "  {}",
        names
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{n} {name}"))
            .collect::<Vec<_>>()
            .join(", ")
    )];
    // Runs of consecutive shards that say the same, verified ones left out unless `all`.
    let mut run: Option<(usize, usize, String)> = None;
    let flush = |run: Option<(usize, usize, String)>, lines: &mut Vec<String>| {
        if let Some((first, last, line)) = run {
            lines.push(match last - first {
                0 => format!("  shard  {first:>5}          {line}"),
                n => format!("  shards {first:>5}–{last:<5}    {line} ({} shards)", n + 1),
            });
        }
    };
    for (i, s) in shards.iter().enumerate() {
        if !all && matches!(s, ShardView::Verified { .. }) {
            flush(run.take(), &mut lines);
            continue;
        }
        let line = describe(s);
        match &mut run {
            // Consecutive: a verified shard left out ends the run above.
            Some((_, last, same)) if *same == line => *last = i,
            _ => {
                flush(run.take(), &mut lines);
                run = Some((i, i, line));
            }
        }
    }
    flush(run, &mut lines);
    if !all && counts[3] > 0 {
        lines.push(format!(
            "  ({} verified shards not listed: `--all` lists each with its output)",
            counts[3]
        ));
    }
    lines
}

/// Waits for a job with a progress bar (its summary, polled: never the shard-by-shard view,
/// which costs the coordinator a walk over every shard); says how it ended.
pub async fn job_wait(api: &Client, id: &str, timeout: Option<Duration>) -> anyhow::Result<()> {
    let id = job_id(api, id).await?;
    let path = format!("/v1/jobs/{id}/summary");
    let started = std::time::Instant::now();
    let mut job: JobSummary = api.get(&path).await?;
    let bar = indicatif::ProgressBar::new(job.shards_total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} shards verified {elapsed} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        bar.set_position(job.shards_verified as u64);
        match &job.status {
            JobStatus::Done { .. } => {
                bar.finish_and_clear();
                eprintln!(
                    "job {id} is done: {} of {} shards verified (replication {}); `hearth job result {id} -o FILE` writes it",
                    job.shards_verified, job.shards_total, job.replication
                );
                return Ok(());
            }
            JobStatus::Failed { reason } => {
                bar.abandon();
                bail!("job {id} failed: {reason}");
            }
            JobStatus::Running => bar.set_message(job.waiting.clone().unwrap_or_default()),
        }
        if timeout.is_some_and(|t| started.elapsed() > t) {
            bar.abandon();
            bail!(
                "job {id} is not done after {:?}: {} of {} shards verified (see `hearth job status {id}`)",
                started.elapsed(),
                job.shards_verified,
                job.shards_total
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        job = api.get(&path).await?;
    }
}

pub async fn job_result(api: &Client, id: &str, output: &Path) -> anyhow::Result<()> {
    let id = job_id(api, id).await?;
    let bytes = api.get_bytes(&format!("/v1/jobs/{id}/result")).await?;
    std::fs::write(output, &bytes).with_context(|| format!("writing {}", output.display()))?;
    eprintln!("wrote {} bytes to {}", bytes.len(), output.display());
    Ok(())
}

/// Ask the node to test its addresses again and wait for the verdicts (or [`RECHECK_WAIT`]
/// after the test starts), saying on stderr what it waits for.
async fn recheck(api: &Client) -> anyhow::Result<()> {
    let before: Status = api.get("/v1/status").await?;
    let r: crate::net::Recheck = api.post_json("/v1/reachability/check", &()).await?;
    if r.candidates == 0 {
        eprintln!(
            "recheck:    no address to test yet: no peer has told this node how it sees it \
             (connect to the network first)"
        );
        return Ok(());
    }
    eprintln!(
        "recheck:    testing {} address(es) again with AutoNAT{}...",
        r.candidates,
        match r.starts_in_ms {
            0 => String::new(),
            ms => format!(" in {} s (one test every 10 s at most)", ms.div_ceil(1000)),
        }
    );
    let want = before.reachability.autonat_verdicts + r.candidates as u64;
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(r.starts_in_ms) + RECHECK_WAIT;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s: Status = api.get("/v1/status").await?;
        let got = s.reachability.autonat_verdicts;
        if got >= want {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "recheck:    {} of {} verdict(s) came within {} s (a server did not answer); \
                 the others follow as servers answer",
                got.saturating_sub(before.reachability.autonat_verdicts),
                r.candidates,
                RECHECK_WAIT.as_secs()
            );
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relays_refusals_are_said_by_reason() {
        let none = crate::net::RelayRefusals::default();
        assert_eq!(refusal_reasons(&none), "");
        let some = crate::net::RelayRefusals {
            no_reservation: 3,
            rate_limited: 2,
            ..none
        };
        assert_eq!(
            refusal_reasons(&some),
            " (3 to homes without a reservation here, 2 rate limited)"
        );
    }

    /// A big job's status is a few lines: counts, then the shards that are not verified, runs
    /// of shards saying the same on one line; `--all` lists each verified shard too.
    #[test]
    fn job_status_groups_shards_that_say_the_same() {
        let waiting = |r: &str| ShardView::Waiting { reason: r.into() };
        let verified = |o: &str| ShardView::Verified {
            output: o.repeat(64),
            fuel: 7,
            households: vec!["ab".repeat(32)],
            credit_reference_mj: None,
        };
        let mut shards: Vec<ShardView> = (0..60_000).map(|_| verified("1")).collect();
        shards.extend((0..5_000).map(|_| waiting("no radiator has asked for work yet")));
        shards.push(ShardView::Leased {
            to: vec!["cd".repeat(32)],
            claims: 1,
        });
        shards.extend((0..535).map(|_| waiting("no radiator has asked for work yet")));
        let lines = shard_lines(&shards, false);
        assert_eq!(
            lines,
            vec![
                "  5535 waiting, 1 leased, 60000 verified".to_string(),
                "  shards 60000–64999    waiting: no radiator has asked for work yet (5000 shards)"
                    .into(),
                "  shard  65000          leased to cdcdcdcdcdcd (1 claims in)".into(),
                "  shards 65001–65535    waiting: no radiator has asked for work yet (535 shards)"
                    .into(),
                "  (60000 verified shards not listed: `--all` lists each with its output)".into(),
            ]
        );
        // A verified shard between two that wait splits their run; with `all` it is listed.
        let few = [waiting("a"), verified("2"), waiting("a"), waiting("a")];
        assert_eq!(
            shard_lines(&few, false)[1..],
            [
                "  shard      0          waiting: a".to_string(),
                "  shards     2–3        waiting: a (2 shards)".into(),
                "  (1 verified shards not listed: `--all` lists each with its output)".into(),
            ]
        );
        let every = shard_lines(&few, true);
        assert_eq!(every.len(), 4, "{every:?}");
        assert_eq!(
            every[2],
            "  shard      1          verified: output 222222222222 fuel 7 by abababababab"
        );
    }

    #[test]
    fn a_job_is_named_by_the_start_of_its_id_when_only_one_begins_so() {
        let ids = ["5ff84f69d294ab9a", "5ff8aa0000000000", "a0b1c2d3e4f50617"];
        assert_eq!(pick_job("5ff84", ids.into_iter()), Ok(ids[0]));
        assert_eq!(pick_job("a", ids.into_iter()), Ok(ids[2]));
        let many = pick_job("5ff8", ids.into_iter()).unwrap_err();
        assert!(
            many.contains("starts the ids of 2 jobs") && many.contains(ids[1]),
            "{many}"
        );
        let none = pick_job("5ff9", ids.into_iter()).unwrap_err();
        assert!(none.contains("no job this node coordinates"), "{none}");
        // What is neither an id nor the start of one is said so before the node is asked.
        assert_eq!(whole_job_id(&"ab".repeat(32)), Ok(true));
        assert_eq!(whole_job_id("5ff8"), Ok(false));
        for bad in ["", "zz", "5ff8-", &"a".repeat(65)] {
            let e = whole_job_id(bad).unwrap_err();
            assert!(e.contains("is not a job id: give its 64 hex digits"), "{e}");
        }
    }
}
