//! Commands that work on the data directory directly, without a running node.
//!
//! Size: about 660 lines of code and 140 of unit tests, which check `hearth receipts verify`
//! against the examples docs/receipts.md prints (credit, revocation, rotation).

use std::path::{Path, PathBuf};

use std::collections::BTreeSet;

use anyhow::{anyhow, bail, Context};

use crate::config::{self, Config, CONFIG_FILE};
use crate::exec::Executor;
use crate::identity::{Identity, PublicKey};
use crate::jobs::build::{build, JobSpec};
use crate::jobs::local::run_local as run_jobs_locally;
use crate::model::conservation::check_conservation_by;
use crate::model::receipt::{verify_batch, Receipt, ReceiptExport};
use crate::model::revoke::{Revocation, Revocations};
use crate::model::rotate::{self, KeyChains};
use crate::model::tally;
use crate::model::{parse_hash, JobManifest};
use crate::node::{self, NodeOptions};
use crate::store::Store;

use super::{BlobCommand, JobArgs};

pub fn init(data_dir: &Path, force: bool) -> anyhow::Result<()> {
    let identity = Identity::generate();
    let key = identity.save(data_dir, force)?;
    let config_path = data_dir.join(CONFIG_FILE);
    if !config_path.exists() {
        std::fs::write(&config_path, config::template())
            .with_context(|| format!("writing {}", config_path.display()))?;
    }
    let (_, created) = crate::api::auth::ApiToken::load_or_create(data_dir)?;
    println!("data directory: {}", data_dir.display());
    println!("household key:  {} (mode 0600)", key.display());
    println!(
        "API token:      {} (mode 0600{})",
        crate::api::auth::ApiToken::path(data_dir).display(),
        if created { "" } else { ", kept" }
    );
    println!("config:         {}", config_path.display());
    println!("household:      {}", identity.public());
    println!("peer id:        {}", identity.peer_id());
    Ok(())
}

pub fn id(data_dir: &Path) -> anyhow::Result<()> {
    let identity =
        Identity::load(data_dir).context("no household key here yet? run `hearth init`")?;
    let keys = crate::keys::own_keys(data_dir, &identity)?;
    println!("household: {}", keys[0]);
    if keys.len() > 1 {
        println!(
            "key:       {} (rotated {} times; `hearth key log`)",
            identity.public(),
            keys.len() - 1
        );
    }
    println!("peer id:   {}", identity.peer_id());
    Ok(())
}

/// The receipt part of `hearth doctor --repair --from`: prints what each coordinator gave;
/// an unreachable or misbehaving coordinator is reported and fails the command.
/// A household that rotated its key asks under each key of its chain it still holds (the
/// retired ones in `retired-keys/`, `crate::keys`): a coordinator hands a peer only the
/// receipts crediting the key its PeerId carries.
async fn fetch_receipts(
    data_dir: &Path,
    identity: &Identity,
    db: &sled::Db,
    ledger: &crate::ledger::Ledger,
    from: &[libp2p::Multiaddr],
) -> anyhow::Result<()> {
    if from.is_empty() {
        return Ok(());
    }
    let mut keys = vec![identity.clone()];
    for key in &ledger.own().keys {
        let path = crate::keys::retired_key_path(data_dir, key);
        if *key != identity.public() && path.exists() {
            keys.push(Identity::load_file(&path)?);
        }
    }
    let mut failed = Vec::new();
    for key in &keys {
        if keys.len() > 1 {
            println!("  under key {}:", key.public());
        }
        fetch_with(key, db, ledger, from, &mut failed).await?;
    }
    if !failed.is_empty() {
        bail!("could not fetch receipts from {}", failed.join(", "));
    }
    Ok(())
}

async fn fetch_with(
    identity: &Identity,
    db: &sled::Db,
    ledger: &crate::ledger::Ledger,
    from: &[libp2p::Multiaddr],
    failed: &mut Vec<String>,
) -> anyhow::Result<()> {
    for (peer, result) in crate::integrity::fetch_receipts(identity, db, ledger, from).await? {
        match result {
            Ok(f) => {
                println!(
                    "  - coordinator {peer}: {} receipts for this household, {} of them missing here and restored",
                    f.received, f.added
                );
                if f.busy > 0 {
                    println!(
                        "    (it was busy answering other requests {} time(s); asked again each time)",
                        f.busy
                    );
                }
            }
            Err(e) => {
                println!("not repaired: receipts from coordinator {peer}: {e}");
                failed.push(peer.to_string());
            }
        }
    }
    Ok(())
}

fn open_store(data_dir: &Path) -> anyhow::Result<Store> {
    let db = node::open_db(data_dir)?;
    Ok(Store::with_files(&db, &node::blob_dir(data_dir))?)
}

/// `hearth doctor`: the start-up checks, offline, every damage listed; with `repair`, the
/// local repairs (docs/storage.md), then, for each `from` address, the receipts that
/// coordinator countersigned for this household and this database lost. Fails (exit status
/// 1) while damage remains.
pub async fn doctor(
    data_dir: &Path,
    repair: bool,
    from: &[libp2p::Multiaddr],
) -> anyhow::Result<()> {
    use crate::integrity;
    // A mistyped coordinator address is refused before anything is repaired.
    for addr in from {
        integrity::coordinator_peer(addr)?;
    }
    let identity =
        Identity::load(data_dir).context("no household key here yet? run `hearth init`")?;
    let db = match node::open_db(data_dir) {
        // A batch a crash interrupted whose record is damaged: discard it; the check below
        // finds what its half-applied writes left.
        Err(node::NodeError::DbIntent { path, source }) if repair => {
            println!("damage: {source}");
            let db = sled::open(&path)?;
            for key in crate::kv::discard_damaged(&db)? {
                println!("  discarded the damaged record of an interrupted write ({key})");
            }
            crate::kv::recover(&db)?;
            db
        }
        other => other?,
    };
    let own = crate::keys::own_keys(data_dir, &identity)?;
    let ledger = crate::ledger::Ledger::open(&db, crate::ledger::Own::chain(own))?;
    let persist = crate::jobs::coordinator::persist::Persist::open(&db)?;
    let report = integrity::check(data_dir, &ledger, &persist)?;
    let now = &report.now;
    println!("database:   {}", data_dir.join("db").display());
    println!(
        "holds:      {} receipts, a hash chain of {} links, {} jobs ({} finished), {} shard records",
        now.receipts, now.chain_length, now.jobs, now.jobs_finished, now.shard_entries
    );
    match &report.expected {
        Some(e) => println!(
            "checkpoint: {} receipts, {} links, {} jobs ({} finished), {} shard records",
            e.receipts, e.chain_length, e.jobs, e.jobs_finished, e.shard_entries
        ),
        None => println!("checkpoint: none yet (written when a node starts)"),
    }
    let damage = report.damage();
    if damage.is_empty() {
        println!("no damage found");
        if repair {
            fetch_receipts(data_dir, &identity, &db, &ledger, from).await?;
            integrity::checkpoint(data_dir, &db, &ledger, &persist).await?;
        }
        return Ok(());
    }
    println!("damage ({}):", damage.len());
    for d in &damage {
        println!("  - {d}");
    }
    if !repair {
        bail!(
            "the database is damaged; copy the data directory, then run `hearth doctor --repair`"
        );
    }
    let done = integrity::repair(data_dir, &db, &ledger, &report).await?;
    println!("repaired:");
    if let Some(path) = &done.exported {
        println!(
            "  - exported {} unreadable receipts and {} unreadable job entries to {}, then removed them",
            done.receipts_removed,
            done.jobs_removed,
            path.display()
        );
    }
    println!("  - rebuilt the receipt index and the totals from the receipts");
    if done.rechained > 0 {
        println!(
            "  - appended {} of this household's receipts to the hash chain (by window end, then id)",
            done.rechained
        );
    }
    println!("  - wrote a new checkpoint");
    for n in &done.not_repaired {
        println!("not repaired: {n}");
    }
    if !from.is_empty() {
        fetch_receipts(data_dir, &identity, &db, &ledger, from).await?;
        integrity::checkpoint(data_dir, &db, &ledger, &persist).await?;
    }
    let after = integrity::check(data_dir, &ledger, &persist)?.damage();
    if !after.is_empty() {
        bail!("damage remains after the repair: {}", after.join("; "));
    }
    println!("the database is now consistent");
    Ok(())
}

pub async fn node(data_dir: &Path, config: Config) -> anyhow::Result<()> {
    let node = node::start(NodeOptions::new(data_dir, config)).await?;
    println!(
        "hearth node {} running; API on http://{}",
        node.peer_id(),
        node.api_addr
    );
    node.run_until_signal()
        .await
        .map_err(|e| anyhow::anyhow!("the node stopped: {e}"))
}

pub fn blob(data_dir: &Path, cmd: &BlobCommand) -> anyhow::Result<()> {
    let store = open_store(data_dir)?;
    match cmd {
        BlobCommand::Put { file } => {
            let hash = store.put_file(file)?;
            println!("{}", hash.to_hex());
        }
        BlobCommand::Get { hash, output } => {
            let hash = parse_hash(hash).map_err(anyhow::Error::msg)?;
            let tmp = output.with_extension("part");
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            let n = store.write_to(&hash, &mut f);
            match n {
                Ok(n) => {
                    f.sync_all()?;
                    std::fs::rename(&tmp, output)?;
                    eprintln!("wrote {n} bytes to {}", output.display());
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
            }
        }
        BlobCommand::Ls => {
            for (hash, len) in store.list()? {
                println!("{}  {len:>12}", hash.to_hex());
            }
        }
    }
    Ok(())
}

pub fn job_new(data_dir: &Path, spec: &JobSpec, common: &JobArgs) -> anyhow::Result<()> {
    let identity = Identity::load(data_dir).context("run `hearth init` first")?;
    let store = open_store(data_dir)?;
    let manifest = build(
        &store,
        spec,
        identity.public(),
        common.limits(),
        common.replication,
    )?;
    let id = store.put_bytes(&manifest.to_bytes())?;
    store.flush()?;
    eprintln!(
        "{} shards, module {}",
        manifest.inputs.len(),
        manifest.module.to_hex()
    );
    println!("{}", id.to_hex());
    Ok(())
}

pub fn run_local(
    data_dir: &Path,
    job: &str,
    output: Option<&Path>,
    threads: Option<usize>,
) -> anyhow::Result<()> {
    let id = parse_hash(job).map_err(anyhow::Error::msg)?;
    let store = open_store(data_dir)?;
    let bytes = store.get_bytes(&id).with_context(|| {
        format!("job {job} is not in this data directory (build it with `hearth job new`)")
    })?;
    let manifest = JobManifest::from_bytes(&bytes).context("that blob is not a job manifest")?;
    let executor = Executor::new()?;
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let bar = indicatif::ProgressBar::new(manifest.inputs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} shards {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let (shards, result) = run_jobs_locally(&store, &executor, &manifest, threads, &|n| {
        bar.set_position(n as u64)
    })?;
    bar.finish_and_clear();
    for (i, s) in shards.iter().enumerate() {
        println!(
            "shard {i:>5}  output {}  fuel {}",
            s.output.to_hex(),
            s.fuel
        );
    }
    eprintln!(
        "{} shards in {:.2?} on {threads} threads",
        shards.len(),
        started.elapsed()
    );
    if let Some(path) = output {
        let mut f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        store.write_to(&result, &mut f)?;
        eprintln!("result {} written to {}", result.to_hex(), path.display());
    } else {
        println!("result {}", result.to_hex());
    }
    Ok(())
}

/// `hearth receipts verify FILE`: the checks of `docs/receipts.md` ("Verifying an export").
/// Checks an export and prints what it credits. With `json`, the lines of the checks go to
/// stderr and stdout gets one JSON object, the credit (`model::tally::json`); the exit status
/// says whether every check held, as without it.
pub fn receipts_verify(
    file: &Path,
    trusted: Option<&Path>,
    audit: &[PathBuf],
    revoked: &[PathBuf],
    keys: &[PathBuf],
    json: bool,
) -> anyhow::Result<()> {
    let mut events = Vec::new();
    for path in keys {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading a key log from {}", path.display()))?;
        events.extend(
            rotate::parse_log(&text).map_err(|e| anyhow!("key log {}: {e}", path.display()))?,
        );
    }
    let mut revocations = Revocations::default();
    for path in revoked {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading a revocation from {}", path.display()))?;
        revocations
            .add_json(&text)
            .map_err(|e| anyhow!("revocation {}: {e}", path.display()))?;
    }
    let audit = if audit.is_empty() {
        None
    } else {
        let mut logs = tally::AuditLogs::default();
        for path in audit {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading an auditor's log from {}", path.display()))?;
            logs.add(&text)
                .map_err(|e| anyhow!("auditor's log {}: {e}", path.display()))?;
        }
        // A log carries the revocations its auditor heard: each signed by the key it
        // revokes, so they apply as a statement given by hand does.
        revocations.merge(logs.revocations());
        Some(logs)
    };
    // Key chains from the logs given (`--keys`) and those the auditors' logs carry, which
    // settle which of two events under one number came first.
    let chains = match &audit {
        Some(logs) => logs.chains(&events),
        None => KeyChains::build(&events),
    };
    let trusted = match trusted {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading trusted submitters from {}", path.display()))?;
            Some(tally::parse_trusted(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let export = super::export::read_export(file)?;
    let report = check_export(
        &export,
        trusted.as_ref(),
        audit.as_ref(),
        &revocations,
        &chains,
    );
    // Lines for a person: on stdout, or beside the JSON on stderr.
    let say = |line: &str| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    for line in chains.notes.iter().chain(&report.problems) {
        say(line);
    }
    if let Some((household, length)) = &report.chain {
        say(&format!(
            "chain of household {household}: {length} entries, links, head and receipts agree"
        ));
    }
    say(&format!(
        "{} receipts proven included in {} signed commitments; {} without an inclusion proof",
        report.proven,
        report.commitments,
        export.receipts.len().saturating_sub(report.proven)
    ));
    if json {
        println!("{}", serde_json::to_string_pretty(&report.credit_json)?);
    } else {
        for line in &report.credit {
            println!("{line}");
        }
    }
    let total = export.receipts.len();
    say(&format!(
        "{total} receipts, {} valid, {} invalid",
        total - report.bad,
        report.bad
    ));
    if report.bad > 0 || !report.problems.is_empty() {
        bail!(
            "{} of {total} receipts failed verification{}",
            report.bad,
            if report.chain_ok {
                ""
            } else {
                "; the chain failed"
            }
        );
    }
    Ok(())
}

/// `hearth receipts revoke --keep N`: signs, with this household's key, the statement that of
/// its commitments only those numbered below `keep` are its own (`model::revoke`), and writes
/// it in its JSON form, which it returns.
pub fn receipts_revoke(
    data_dir: &Path,
    key: Option<&Path>,
    keep: u64,
    output: Option<&Path>,
) -> anyhow::Result<serde_json::Value> {
    let identity = match key {
        Some(path) => Identity::load_file(path)?,
        None => Identity::load(data_dir)?,
    };
    let statement = Revocation::sign(&identity, keep, crate::model::now_ms()).to_json();
    let text = serde_json::to_string_pretty(&statement)? + "\n";
    match output {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            let kept = match keep {
                0 => "none of its commitments is vouched for".to_string(),
                n => format!("only its commitments #0 to #{} are vouched for", n - 1),
            };
            eprintln!(
                "revocation of {} written to {}: {kept}",
                identity.public().to_hex(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(statement)
}

struct ExportReport {
    /// Receipts that failed.
    bad: usize,
    problems: Vec<String>,
    chain: Option<(String, usize)>,
    chain_ok: bool,
    /// Receipts whose inclusion proof checks out, and the distinct commitments they name.
    proven: usize,
    commitments: usize,
    /// What the receipts that passed credit (`model::tally`), as lines and as JSON.
    credit: Vec<String>,
    credit_json: serde_json::Value,
}

/// Every receipt decodes and its readable fields match; physics, terms and both signatures
/// hold; no later receipt repeats an earlier one's (job, shard, worker); and the chain, if the
/// export carries one, checks out against the receipts. Then what the receipts that passed
/// credit, `trusted` the submitters the reader trusts, each key counted under its household
/// by `chains` (`model::rotate`).
fn check_export(
    export: &ReceiptExport,
    trusted: Option<&BTreeSet<PublicKey>>,
    audit: Option<&tally::AuditLogs>,
    revoked: &Revocations,
    chains: &KeyChains,
) -> ExportReport {
    let mut report = ExportReport {
        bad: 0,
        problems: Vec::new(),
        chain: None,
        chain_ok: true,
        proven: 0,
        commitments: 0,
        credit: Vec::new(),
        credit_json: serde_json::Value::Null,
    };
    let mut decoded = Vec::new();
    for (i, r) in export.receipts.iter().enumerate() {
        match r.to_receipt() {
            Ok(rec) => decoded.push((i, rec)),
            Err(e) => {
                report.bad += 1;
                report
                    .problems
                    .push(format!("receipt {i} ({}): INVALID: {e}", r.id));
            }
        }
    }
    let list: Vec<_> = decoded.iter().map(|(_, r)| r.clone()).collect();
    let checks = verify_batch(&list);
    let mut seen = std::collections::HashMap::new();
    let mut passed = Vec::new();
    for ((i, r), check) in decoded.iter().zip(checks.iter()) {
        let id = r.id().to_hex();
        let worker = r.record.worker;
        let household = chains.household_of(&worker);
        if let Err(e) = check {
            report.bad += 1;
            report
                .problems
                .push(format!("receipt {i} ({id}): INVALID: {e}"));
        } else if let Some(earlier) = seen.get(&(r.record.job, r.record.shard, household)) {
            // The first receipt for a (job, shard, worker household) in file order stands;
            // every later one is refused, as a ledger refuses a replay or a conflict. Under
            // another key of the same household it is one household replicating itself.
            report.bad += 1;
            let why = if *earlier == worker {
                "an earlier receipt covers the same job, shard and worker".to_string()
            } else {
                format!(
                    "an earlier receipt covers the same job and shard for household {}, under another of its keys",
                    household.to_hex()
                )
            };
            report
                .problems
                .push(format!("receipt {i} ({id}): INVALID: {why}"));
        } else {
            seen.insert((r.record.job, r.record.shard, household), worker);
            passed.push((*i, r.clone()));
        }
    }
    // Inclusion proofs: each names a receipt of this export, once, and leads from it to a
    // root its coordinator signed. A receipt without a proof is reported, not refused
    // (format 2 exports, receipts not yet committed).
    let mut proven = std::collections::HashSet::new();
    let mut seq_of = std::collections::HashMap::new();
    let mut audited = std::collections::HashSet::new();
    let mut commitments = std::collections::HashSet::new();
    for (n, j) in export.inclusions.iter().enumerate() {
        let result = j.to_inclusion().and_then(|(id, inc)| {
            let r = list.iter().find(|r| r.id() == id).ok_or_else(|| {
                format!("names receipt {} that this export does not hold", j.receipt)
            })?;
            inc.verify(r).map_err(|e| e.to_string())?;
            if !proven.insert(id) {
                return Err(format!("a second proof for receipt {}", j.receipt));
            }
            commitments.insert(inc.commitment.id());
            seq_of.insert(id, inc.commitment.seq);
            if audit.is_some_and(|logs| logs.logged(&inc.commitment)) {
                audited.insert(id);
            }
            Ok(())
        });
        if let Err(e) = result {
            report
                .problems
                .push(format!("inclusion {n} ({}): INVALID: {e}", j.receipt));
        }
    }
    report.proven = proven.len();
    report.commitments = commitments.len();
    // Revocations (docs/receipts.md, "Revoking a key"): a receipt countersigned by a revoked
    // key counts only if its proof places it in a commitment numbered below the line drawn.
    let passed: Vec<Receipt> = passed
        .into_iter()
        .filter_map(|(i, r)| {
            let id = r.id();
            // Rotations (docs/receipts.md, "Rotating a key"): a retired key's receipts count
            // only for windows that ended by its retirement.
            let verdict = revoked
                .check(&r.record.submitter, seq_of.get(&id).copied())
                .map_err(|why| format!("REVOKED: {why}"))
                .and_then(|()| {
                    chains
                        .check(&r.record.worker, r.record.end_ms)
                        .map_err(|why| format!("RETIRED: {why}"))
                });
            match verdict {
                Ok(()) => Some(r),
                Err(why) => {
                    report.bad += 1;
                    report
                        .problems
                        .push(format!("receipt {i} ({}): {why}", id.to_hex()));
                    None
                }
            }
        })
        .collect();
    // Conservation across the receipts that passed: a household's overlapping receipts, under
    // all of its keys, never claim more than one circuit delivers.
    if let Err(e) = check_conservation_by(&passed, &|key| chains.household_of(key)) {
        report.problems.push(format!("conservation: INVALID: {e}"));
    }
    let households = tally::tally(&passed, chains, &proven, audit.map(|_| &audited), trusted);
    report.credit = tally::lines(&households);
    report.credit_json = tally::json(&households, export.receipts.len(), passed.len());
    if let Some(chain) = &export.chain {
        match chain.verify(&list, chains) {
            Ok(household) => report.chain = Some((household.to_hex(), chain.entries.len())),
            Err(e) => {
                report.chain_ok = false;
                report.problems.push(format!("chain: INVALID: {e}"));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = include_str!("../../docs/receipts.md");

    fn example_export() -> ReceiptExport {
        let example = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/receipts-example.json"
        ));
        super::super::export::read_export(example).unwrap()
    }

    /// The first block fenced as `fence` after `marker` in docs/receipts.md.
    fn block_after(marker: &str, fence: &str) -> &'static str {
        DOC.split(marker)
            .nth(1)
            .and_then(|rest| rest.split(fence).nth(1))
            .and_then(|rest| rest.split("```").next())
            .unwrap_or_else(|| panic!("docs/receipts.md has a {fence} block after {marker:?}"))
            .trim_matches('\n')
    }

    /// `hearth receipts verify --trusted` on the documented example export prints the credit
    /// `docs/receipts.md` gives ("What an export credits"), which `docs/verify_receipt.py
    /// --example` checks too: one specification, two implementations, the same lines.
    #[test]
    fn the_example_exports_credit_is_the_documented_one() {
        let export = example_export();
        let submitter = PublicKey::from_hex(&export.receipts[0].submitter).unwrap();
        let mut audit = tally::AuditLogs::default();
        audit
            .add(include_str!("../../docs/audit-example.json"))
            .unwrap();
        let report = check_export(
            &export,
            Some(&[submitter].into()),
            Some(&audit),
            &Revocations::default(),
            &KeyChains::default(),
        );
        assert!(report.problems.is_empty() && report.bad == 0);
        let given: Vec<&str> = block_after("prints, for the example export", "```text")
            .lines()
            .collect();
        assert_eq!(report.credit, given);
        let given: serde_json::Value =
            serde_json::from_str(block_after("**As JSON.**", "```json")).unwrap();
        assert_eq!(report.credit_json, given);
    }

    /// Rotations (docs/receipts.md, "Rotating a key"): with the documented key log the example's
    /// first worker is one household under two keys; its receipt whose window ended after its
    /// first key was retired is refused with the documented line, and the rest are tallied as
    /// documented. A log that makes the export's other worker (seed 03) the household's next
    /// key makes the two replicas of shard 7 one household's: the second is refused.
    #[test]
    fn a_rotated_households_receipts_are_one_households_and_a_retired_keys_late_ones_count_for_nothing(
    ) {
        use crate::model::rotate::{parse_log, KeyEvent};
        let export = example_export();
        let chains =
            KeyChains::build(&parse_log(include_str!("../../docs/key-log-example.json")).unwrap());
        let report = check_export(&export, None, None, &Revocations::default(), &chains);
        assert_eq!(report.bad, 1);
        let given = block_after("print for that household:", "```text");
        let mut lines = given.lines();
        let retired = lines.next().unwrap().replacen(
            "receipt 2:",
            &format!("receipt 2 ({}):", export.receipts[2].id),
            1,
        );
        assert_eq!(report.problems, vec![retired]);
        let credit: Vec<&str> = lines.collect();
        assert_eq!(report.credit[..credit.len()], credit[..]);
        assert!(report.chain_ok);
        // Without the log the same receipts are two households' and all count.
        let plain = check_export(
            &export,
            None,
            None,
            &Revocations::default(),
            &KeyChains::default(),
        );
        assert_eq!((plain.bad, plain.problems.len()), (0, 0));
        // Seed 03 as the next key: one household replicated shard 7 under two keys.
        let seed = |i: u8| Identity::from_seed([i; 32]);
        let h = seed(1).public();
        let chains = KeyChains::build(&[
            KeyEvent::sign(h, 0, &seed(1), &seed(3).public(), 1_699_999_999_000),
            KeyEvent::sign(h, 1, &seed(3), &seed(5).public(), 1_700_000_100_000),
        ]);
        let report = check_export(&export, None, None, &Revocations::default(), &chains);
        assert_eq!(report.bad, 1, "{:?}", report.problems);
        assert!(
            report.problems[0].ends_with(&format!(
                "INVALID: an earlier receipt covers the same job and shard for household {}, under another of its keys",
                h.to_hex()
            )),
            "{:?}",
            report.problems
        );
        assert_eq!(
            report.credit_json["households"].as_array().unwrap().len(),
            1
        );
    }

    /// Revocations (docs/receipts.md, "Revoking a key"): the documented statement keeps the
    /// example's commitment 0, so its four receipts still count; a statement keeping none voids
    /// all four with the documented reason, and the smaller keep of the two stands.
    #[test]
    fn a_revoked_submitters_receipts_count_only_in_the_commitments_it_still_vouches_for() {
        let export = example_export();
        let mut revoked = Revocations::default();
        revoked
            .add_json(include_str!("../../docs/revocation-example.json"))
            .unwrap();
        let kept = check_export(&export, None, None, &revoked, &KeyChains::default());
        assert!(
            kept.problems.is_empty() && kept.bad == 0,
            "{:?}",
            kept.problems
        );
        assert_eq!(kept.credit_json["valid"], 4);
        let submitter = Identity::from_seed([2; 32]);
        revoked.add(&Revocation::sign(&submitter, 0, 1_700_000_200_000));
        let voided = check_export(&export, None, None, &revoked, &KeyChains::default());
        assert_eq!(voided.bad, 4);
        assert_eq!(voided.credit_json["valid"], 0);
        assert!(voided.credit.is_empty(), "{:?}", voided.credit);
        let given = block_after("keeping none instead", "```text");
        // hearth names the receipt's id beside its place, which the Python verifier does not.
        let ours = given.replacen(
            "receipt 0:",
            &format!("receipt 0 ({}):", export.receipts[0].id),
            1,
        );
        assert!(voided.problems.contains(&ours), "{:?}", voided.problems);
    }
}
