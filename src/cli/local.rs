//! Commands that work on the data directory directly, without a running node.

use std::path::Path;

use anyhow::{bail, Context};

use crate::config::{self, Config, CONFIG_FILE};
use crate::exec::Executor;
use crate::identity::Identity;
use crate::jobs::build::{build, JobSpec};
use crate::jobs::local::run_local as run_jobs_locally;
use crate::model::receipt::{verify_batch, ReceiptExport, EXPORT_FORMAT};
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
    println!("household: {}", identity.public());
    println!("peer id:   {}", identity.peer_id());
    Ok(())
}

fn open_store(data_dir: &Path) -> anyhow::Result<Store> {
    let db = node::open_db(data_dir)?;
    Ok(Store::with_db(&db)?)
}

pub async fn node(data_dir: &Path, config: Config) -> anyhow::Result<()> {
    let node = node::start(NodeOptions::new(data_dir, config)).await?;
    println!(
        "hearth node {} running; API on http://{}",
        node.peer_id(),
        node.api_addr
    );
    node.run_until_signal().await;
    Ok(())
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

pub fn receipts_verify(file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let export: ReceiptExport = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a receipts export", file.display()))?;
    if export.format != EXPORT_FORMAT {
        bail!(
            "{}: format {:?}, expected {EXPORT_FORMAT:?}",
            file.display(),
            export.format
        );
    }
    let mut receipts = Vec::new();
    let mut bad = 0usize;
    for (i, r) in export.receipts.iter().enumerate() {
        match r.to_receipt() {
            Ok(rec) => receipts.push((i, rec)),
            Err(e) => {
                bad += 1;
                println!("receipt {i} ({}): INVALID: {e}", r.id);
            }
        }
    }
    let list: Vec<_> = receipts.iter().map(|(_, r)| r.clone()).collect();
    for ((i, r), check) in receipts.iter().zip(verify_batch(&list)) {
        if let Err(e) = check {
            bad += 1;
            println!("receipt {i} ({}): INVALID: {e}", r.id().to_hex());
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, r) in &receipts {
        if !seen.insert((r.record.job, r.record.shard, r.record.worker)) {
            bad += 1;
            println!(
                "receipt {i} ({}): INVALID: a second receipt for the same job, shard and worker",
                r.id().to_hex()
            );
        }
    }
    println!(
        "{} receipts, {} valid, {bad} invalid",
        export.receipts.len(),
        export.receipts.len() - bad
    );
    if bad > 0 {
        bail!(
            "{bad} of {} receipts failed verification",
            export.receipts.len()
        );
    }
    Ok(())
}
