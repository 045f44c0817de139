//! The `hearth` command line: argument parsing and dispatch only. Commands that need a running
//! node talk to its local API (`client`); commands on the data directory itself (`local`) open
//! it directly. `anyhow` is used here and nowhere below.
//!
//! Size: about 760 lines before its unit tests, most of them the argument definitions clap
//! reads (each with the help text a household sees) and one dispatch `match`.

mod audit;
mod client;
pub mod export;
pub mod heat;
pub mod impact;
mod key;
mod local;
mod receipts;
mod remote;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, Overrides, Role};
use crate::jobs::build::JobSpec;

#[derive(Parser, Debug)]
#[command(
    name = "hearth",
    version,
    about = "Digital radiators: heat your home with verified compute"
)]
pub struct Cli {
    /// Data directory (default: $HEARTH_DATA_DIR, else ~/.local/share/hearth).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Log format on stderr; filter with RUST_LOG.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Local API of the node to talk to (default: from hearth.toml / HEARTH_API).
    #[arg(long, global = true)]
    pub api: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the data directory, the household key and a commented hearth.toml.
    Init {
        /// Replace an existing household key (its receipts then credit a key you no longer have).
        #[arg(long)]
        force: bool,
    },
    /// Print the household public key and the libp2p PeerId derived from it.
    Id,
    /// Run the radiator daemon until SIGINT or SIGTERM.
    Node(NodeArgs),
    /// Print a one-time link that opens the running node's dashboard in a browser.
    Dashboard,
    /// Show the running node's status.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        /// Have AutoNAT test this node's addresses again first (after forwarding a port on
        /// the router, or removing one), and wait up to 30 s for the verdicts.
        #[arg(long)]
        recheck: bool,
    },
    /// List the running node's peers.
    Peers {
        /// Print the peers as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The content store of this data directory.
    #[command(subcommand)]
    Blob(BlobCommand),
    /// Build jobs and follow jobs submitted to the running node.
    #[command(subcommand)]
    Job(JobCommand),
    /// List the jobs the running node coordinates.
    Jobs {
        /// Print the jobs as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run every shard of a stored job on this machine (no network).
    RunLocal {
        /// The job's id (its manifest's hash, as `hearth job new` prints it).
        job: String,
        /// Where to write the assembled result.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Worker threads (default: CPU cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Submit a job to the network through the running node, which coordinates it.
    Submit {
        #[command(subcommand)]
        spec: SpecArgs,
        #[command(flatten)]
        common: JobArgs,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Wait for the job and write its result here.
        #[arg(short, long, global = true)]
        output: Option<PathBuf>,
    },
    /// Check this data directory's database (the node must be stopped): the ledger's hash
    /// chain, receipts, totals, every job, and data lost since the last checkpoint.
    Doctor {
        /// Also repair what can be repaired here (exports what it removes first).
        #[arg(long)]
        repair: bool,
        /// With --repair: ask this coordinator (a multiaddr ending in /p2p/PEER_ID) for the
        /// receipts it countersigned for this household, and keep the missing ones. Repeat
        /// for each coordinator.
        #[arg(long, requires = "repair")]
        from: Vec<libp2p::Multiaddr>,
    },
    /// Where households stand with the running node: trusted, on probation or excluded, and
    /// why (with the fraud evidence against them and who checked it).
    Trust {
        /// One household (hex key; default: every household the node knows of).
        household: Option<String>,
        /// Print the standings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The commitments a bootstrap node heard (its auditor's log): each coordinator's
    /// numbers, when they were first seen, and any equivocation (two different commitments
    /// signed with one number), with both signed bodies as proof.
    Audit {
        /// One coordinator (hex key): its commitments, from `--from` on.
        coordinator: Option<String>,
        /// First commitment number to list.
        #[arg(long, default_value_t = 0, requires = "coordinator")]
        from: u64,
        /// Print JSON (the API's answer).
        #[arg(long)]
        json: bool,
    },
    /// Keys this node takes no work from: revoked by their households, or caught signing two
    /// different commitments under one number; each with the proof, which anyone can check.
    Refusals {
        /// Print JSON (every page of the API's answers, as one list).
        #[arg(long)]
        json: bool,
    },
    /// Heat-work receipts.
    Receipts(ReceiptsArgs),
    /// The household's key log and key rotation (docs/receipts.md, "Rotating a key").
    #[command(subcommand)]
    Key(KeyCommand),
    /// The room: status, setpoint, boost, off, and a simulated winter day.
    Heat(heat::HeatArgs),
    /// What the receipts say hearth saved: energy, heat into homes, data-centre energy and
    /// CO2 both ways (docs/impact.md states every assumption).
    Impact(impact::ImpactArgs),
    /// Start a local network of radiators on loopback, render a Mandelbrot set across them
    /// and check every receipt.
    Demo {
        /// Radiators to start (at least 2; every fourth stands in a warm room and does no work).
        #[arg(long, default_value_t = 4)]
        radiators: usize,
        /// Directory for the radiators' data, the image and the receipts export.
        #[arg(long, default_value = "hearth-demo")]
        out: PathBuf,
        /// Image width in pixels.
        #[arg(long, default_value_t = 1024)]
        width: u32,
        /// Image height in pixels.
        #[arg(long, default_value_t = 768)]
        height: u32,
        /// Side of a square tile in pixels, one shard each (edge tiles are smaller).
        #[arg(long, default_value_t = 128)]
        tile: u32,
    },
}

#[derive(Args, Debug, Default)]
pub struct NodeArgs {
    /// Listen address (repeatable), e.g. /ip4/0.0.0.0/tcp/4001.
    #[arg(long)]
    pub listen: Vec<String>,
    /// Bootstrap peer (repeatable), a multiaddr ending in /p2p/<peer id>.
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// Do not use mDNS to find radiators on the local network.
    #[arg(long)]
    pub no_mdns: bool,
    /// What this node does: run shards for its room, or route and relay for others.
    #[arg(long, value_enum)]
    pub role: Option<Role>,
    /// Shards run at once at full heat demand.
    #[arg(long)]
    pub slots: Option<usize>,
    /// Most established connections (default 128 on a radiator, 1024 on a bootstrap node).
    #[arg(long)]
    pub max_connections: Option<u32>,
    /// Create the household key first if the data directory has none (containers).
    #[arg(long)]
    pub init_if_missing: bool,
    /// Allow an --api address other machines can reach (default: loopback only).
    #[arg(long)]
    pub api_allow_remote: bool,
}

#[derive(Subcommand, Debug)]
pub enum BlobCommand {
    /// Store a file; prints its blake3 hash.
    Put {
        /// The file to store.
        file: PathBuf,
    },
    /// Write a stored blob to a file.
    Get {
        /// The blob's blake3 hash (64 hex digits).
        hash: String,
        /// The file to write it to (written whole, then renamed into place).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// List stored blobs.
    Ls,
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Build a job in the local store; prints its id on the last line.
    New {
        #[command(subcommand)]
        spec: SpecArgs,
        #[command(flatten)]
        common: JobArgs,
    },
    /// How many shards are in each state, and each shard that is not verified, with reasons.
    Status {
        /// The job's id, or enough of its first digits to name one job of this node's.
        id: String,
        /// Print the job's status as JSON.
        #[arg(long)]
        json: bool,
        /// List every verified shard too, with its output, fuel and households.
        #[arg(long)]
        all: bool,
    },
    /// Wait for a job, with a progress bar.
    Wait {
        /// The job's id, or enough of its first digits to name one job of this node's.
        id: String,
        /// Give up (exit 1) after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Write a finished job's result.
    Result {
        /// The job's id, or enough of its first digits to name one job of this node's.
        id: String,
        /// The file to write the result to.
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum SpecArgs {
    /// Tiled Mandelbrot render, assembled into a PNG.
    Mandelbrot {
        /// Image width in pixels.
        #[arg(long, default_value_t = 1024)]
        width: u32,
        /// Image height in pixels.
        #[arg(long, default_value_t = 768)]
        height: u32,
        /// Side of a square tile in pixels, one shard each (edge tiles are smaller).
        #[arg(long, default_value_t = 128)]
        tile: u32,
        /// Most iterations per pixel before it counts as inside the set.
        #[arg(long, default_value_t = 500)]
        max_iter: u32,
    },
    /// Monte Carlo estimate of pi, an independent seed per shard.
    Pi {
        /// Shards to split the samples over.
        #[arg(long, default_value_t = 8)]
        shards: u32,
        /// Random points in all, shared out evenly over the shards.
        #[arg(long, default_value_t = 1_000_000)]
        samples: u64,
        /// Seed from which each shard's own seed is derived (the same seed, the same estimate).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Any module: one shard per input file.
    Wasm {
        /// The module: WebAssembly binary (`.wasm`) or text (`.wat`, compiled here).
        #[arg(long)]
        module: PathBuf,
        /// An input file, one shard each (repeat for each shard).
        #[arg(long = "input", required = true)]
        inputs: Vec<PathBuf>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct JobArgs {
    /// Agreeing replicas from distinct households needed per shard.
    #[arg(long, default_value_t = 2, global = true)]
    pub replication: u8,
    /// Fuel each shard may spend.
    #[arg(long, global = true)]
    pub fuel: Option<u64>,
    /// Memory each shard may use, in MiB.
    #[arg(long, global = true)]
    pub memory_mib: Option<u64>,
}

/// The job's own replication policy (`docs/trust.md`). Any of these flags makes the job
/// adaptive, starting from the adaptive defaults (1 / 3 / 100 ‰); none: the node's `[trust]`.
#[derive(Args, Debug, Default)]
pub struct PolicyArgs {
    /// Agreeing replicas a shard needs when an established household ran it (1 lets a
    /// trusted result stand alone, spot-checked).
    #[arg(long, global = true)]
    pub min_replicas: Option<u8>,
    /// Most replicas per shard when rooms want more heat than there is work.
    #[arg(long, global = true)]
    pub max_replicas: Option<u8>,
    /// Share of trusted shards re-run elsewhere, in thousandths (0 to 1000).
    #[arg(long, global = true)]
    pub spot_check_permille: Option<u16>,
    /// Verify a shard only once a household of this node's trusted set (itself and
    /// `[trust] trusted`) agrees.
    #[arg(long, global = true)]
    pub own_replica: bool,
    /// Only these households (hex keys, comma-separated or repeated; at most 256), and this
    /// node's trusted set, may work the job. The job keeps the node's replication policy
    /// unless other flags here change it.
    #[arg(long, global = true, value_delimiter = ',', value_name = "HEX")]
    pub allow: Vec<String>,
}

impl PolicyArgs {
    /// The policy these flags ask for, checked; `None` when no flag was given.
    pub fn policy(&self) -> anyhow::Result<Option<crate::jobs::trust::Policy>> {
        if self.min_replicas.is_none()
            && self.max_replicas.is_none()
            && self.spot_check_permille.is_none()
            && !self.own_replica
        {
            return Ok(None);
        }
        let mut p = crate::jobs::trust::Policy::default();
        if let Some(n) = self.min_replicas {
            p.min_replicas = n;
            p.max_replicas = p.max_replicas.max(n);
        }
        if let Some(n) = self.max_replicas {
            p.max_replicas = n;
        }
        if let Some(n) = self.spot_check_permille {
            p.spot_check_permille = n;
        }
        p.own_replica = self.own_replica;
        p.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Some(p))
    }

    /// The households `--allow` names, checked (a mistyped key is an error, not a household
    /// silently shut out); hex again, as the API takes them.
    pub fn allow(&self) -> anyhow::Result<Vec<String>> {
        let keys = crate::jobs::trust::parse_keys(self.allow.iter().map(String::as_str))
            .map_err(|e| anyhow::anyhow!("--allow: {e}"))?;
        Ok(keys.iter().map(|k| k.to_hex()).collect())
    }
}

#[derive(Args, Debug)]
pub struct ReceiptsArgs {
    /// Only receipts crediting this household (hex public key); before or after `export`.
    #[arg(long, global = true)]
    pub household: Option<String>,
    #[command(subcommand)]
    pub command: Option<ReceiptsCommand>,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Start the household's key log while its key is safe: fix the next key now. The next
    /// key is written to FILE: keep it offline (a USB stick in a drawer, a printout); it is the
    /// only key that can take the household's credit over from the current one, so a thief of
    /// the current key cannot.
    Prerotate {
        /// Where to write the next key (never over an existing file).
        #[arg(long, value_name = "FILE")]
        next: PathBuf,
    },
    /// Rotate to the next key, after a theft or to retire a machine (the node must be
    /// stopped): the next key becomes the household's, the current one is retired (kept in
    /// DATA_DIR/retired-keys/) and a fresh next key is fixed. Receipts under the retired key
    /// keep counting for work that ended before now; after it, they count for nothing.
    Rotate {
        /// The next key, as `hearth key prerotate` (or the last rotation) wrote it.
        #[arg(long, value_name = "FILE")]
        next: PathBuf,
        /// Where to write the fresh next key (never over an existing file): keep it offline.
        #[arg(long, value_name = "FILE")]
        new_next: PathBuf,
        /// Rotate even though this node still coordinates jobs under the current key (their
        /// undelivered receipts then never reach their workers from this node).
        #[arg(long)]
        force: bool,
    },
    /// Print the household's key log: hand it with a receipts export to whoever verifies it
    /// (`hearth receipts verify --keys FILE`).
    Log {
        /// Write the log to this file (standard output without it).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReceiptsCommand {
    /// Write receipts in the JSON export format.
    Export {
        /// The export's format: JSON, the only one so far (docs/receipts.md, "Export format"). Asked
        /// for by name so that a later format is never what a script gets by default.
        #[arg(long, required = true)]
        json: bool,
        /// Write the export to this file (standard output without it).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Check every receipt of an export file (signatures, fields, physics, chain, inclusion
    /// proofs) and print what it credits, per household and per submitter.
    Verify {
        /// An export written by `hearth receipts export --json`.
        file: PathBuf,
        /// Submitters whose countersignatures you trust: one household key (hex) per line,
        /// `#` comments. Adds what those vouched for to the credit printed.
        #[arg(long, value_name = "FILE")]
        trusted: Option<PathBuf>,
        /// An auditor's log of one coordinator's commitments (`hearth audit KEY --json` on a
        /// bootstrap node), repeatable: adds what sits in commitments the auditors logged.
        #[arg(long, value_name = "FILE")]
        audit: Vec<PathBuf>,
        /// A revocation statement (`hearth receipts revoke` by the household whose key it
        /// revokes), repeatable: receipts that key countersigned count only in the
        /// commitments it still vouches for.
        #[arg(long, value_name = "FILE")]
        revoked: Vec<PathBuf>,
        /// A household's key log (`hearth key log`), repeatable: receipts crediting any key
        /// of its chain are its own, and a retired key's count only for work that ended by
        /// its retirement (docs/receipts.md, "Rotating a key").
        #[arg(long, value_name = "FILE")]
        keys: Vec<PathBuf>,
        /// Print the credit as one JSON object on stdout (docs/receipts.md); the checks'
        /// lines go to stderr.
        #[arg(long)]
        json: bool,
    },
    /// Revoke this household's key after a theft (docs/receipts.md, "Revoking a key"): sign a
    /// statement that, of its commitments, only those numbered below KEEP are its own. Hand it
    /// to whoever verifies receipts it countersigned; a receipt outside those commitments then
    /// counts for nothing. Needs only the key file, no running node.
    Revoke {
        /// Commitments numbered 0 to KEEP - 1 stay vouched for (0: none). `hearth audit KEY` on
        /// a bootstrap node lists the commitments published under the key.
        #[arg(long)]
        keep: u64,
        /// Write the statement to this file (standard output without it).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Also hand it to the running node, which gossips it to every node: radiators take
        /// no more work from the key, auditors (bootstrap nodes) log it for the verifiers.
        #[arg(long)]
        publish: bool,
        /// Sign with this key file instead of the household's current key: a key retired by
        /// `hearth key rotate` (DATA_DIR/retired-keys/KEY.key), which alone can revoke what it
        /// countersigned.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
}

impl SpecArgs {
    pub fn to_spec(&self) -> anyhow::Result<JobSpec> {
        Ok(match self {
            SpecArgs::Mandelbrot {
                width,
                height,
                tile,
                max_iter,
            } => JobSpec::Mandelbrot {
                width: *width,
                height: *height,
                tile: *tile,
                max_iter: *max_iter,
            },
            SpecArgs::Pi {
                shards,
                samples,
                seed,
            } => JobSpec::Pi {
                shards: *shards,
                samples: *samples,
                seed: *seed,
            },
            SpecArgs::Wasm { module, inputs } => JobSpec::Wasm {
                module: read_module(module)?,
                inputs: inputs
                    .iter()
                    .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                    .collect::<anyhow::Result<_>>()?,
            },
        })
    }
}

/// A module file: WebAssembly binary as it is, WebAssembly text compiled to binary (the `wat`
/// crate, which the built-in kernels' text already needs).
fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    match wat::parse_bytes(&bytes) {
        Ok(module) => Ok(module.into_owned()),
        Err(e) => anyhow::bail!(
            "{} is neither a WebAssembly binary nor WebAssembly text: {e}",
            path.display()
        ),
    }
}

impl JobArgs {
    pub fn limits(&self) -> crate::model::JobLimits {
        let mut l = crate::model::JobLimits::default();
        if let Some(f) = self.fuel {
            l.fuel_per_shard = f;
        }
        if let Some(m) = self.memory_mib {
            l.memory_bytes = m.saturating_mul(1 << 20);
        }
        l
    }
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// What the binary prints for an error: the error, then each cause the text does not already
/// quote, `: `-separated. Most of this crate's errors quote their cause in their own message
/// (`"could not read file {path}: {source}"`) and also name it as their `source`, so printing
/// the whole chain would say it twice.
pub fn report(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Entry point of the binary.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The daemon logs what it does; other commands print their results and log only trouble.
    let default_filter = match cli.command {
        Command::Node(_) => "hearth=info,warn",
        _ => "hearth=warn,warn",
    };
    init_logging(cli.log_format, default_filter);
    let data_dir = config::data_dir(cli.data_dir.as_deref(), &config::process_env)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let api = || -> anyhow::Result<client::Client> {
        let addr = match &cli.api {
            Some(a) => a.clone(),
            None => Config::load(&data_dir, &config::process_env, &Overrides::default())?
                .node
                .api
                .to_string(),
        };
        let token = crate::api::auth::ApiToken::for_client(&data_dir, &config::process_env)?;
        Ok(client::Client::new(&addr, token))
    };
    match &cli.command {
        Command::Init { force } => local::init(&data_dir, *force),
        Command::Id => local::id(&data_dir),
        Command::Doctor { repair, from } => {
            runtime.block_on(local::doctor(&data_dir, *repair, from))
        }
        Command::Node(args) => {
            let overrides = Overrides {
                listen: args.listen.clone(),
                api: cli.api.clone(),
                api_allow_remote: args.api_allow_remote,
                bootstrap: args.bootstrap.clone(),
                no_mdns: args.no_mdns,
                role: args.role,
                slots: args.slots,
                max_connections: args.max_connections,
            };
            if args.init_if_missing && !crate::identity::Identity::path(&data_dir).exists() {
                local::init(&data_dir, false)?;
            }
            let config = Config::load(&data_dir, &config::process_env, &overrides)?;
            runtime.block_on(local::node(&data_dir, config))
        }
        Command::Dashboard => runtime.block_on(remote::dashboard(&api()?)),
        Command::Status { json, recheck } => {
            runtime.block_on(remote::status(&api()?, *json, *recheck))
        }
        Command::Peers { json } => runtime.block_on(remote::peers(&api()?, *json)),
        Command::Blob(cmd) => local::blob(&data_dir, cmd),
        Command::Job(JobCommand::New { spec, common }) => {
            local::job_new(&data_dir, &spec.to_spec()?, common)
        }
        Command::Job(JobCommand::Status { id, json, all }) => {
            runtime.block_on(remote::job_status(&api()?, id, *json, *all))
        }
        Command::Job(JobCommand::Wait { id, timeout }) => runtime.block_on(remote::job_wait(
            &api()?,
            id,
            timeout.map(Duration::from_secs),
        )),
        Command::Job(JobCommand::Result { id, output }) => {
            runtime.block_on(remote::job_result(&api()?, id, output))
        }
        Command::Jobs { json } => runtime.block_on(remote::jobs(&api()?, *json)),
        Command::Trust { household, json } => {
            runtime.block_on(remote::trust(&api()?, household.as_deref(), *json))
        }
        Command::Audit {
            coordinator,
            from,
            json,
        } => runtime.block_on(audit::show(&api()?, coordinator.as_deref(), *from, *json)),
        Command::Refusals { json } => runtime.block_on(audit::refusals(&api()?, *json)),
        Command::RunLocal {
            job,
            output,
            threads,
        } => local::run_local(&data_dir, job, output.as_deref(), *threads),
        Command::Submit {
            spec,
            common,
            policy,
            output,
        } => runtime.block_on(remote::submit(
            &api()?,
            &spec.to_spec()?,
            common,
            policy.policy()?,
            policy.allow()?,
            output.as_deref(),
        )),
        Command::Receipts(args) => match &args.command {
            Some(ReceiptsCommand::Verify { .. }) if args.household.is_some() => {
                anyhow::bail!(
                    "`receipts verify` checks every receipt of the export; --household does not \
                     apply to it"
                )
            }
            Some(ReceiptsCommand::Revoke { .. }) if args.household.is_some() => {
                anyhow::bail!(
                    "`receipts revoke` revokes this node's own key; --household does not apply to it"
                )
            }
            Some(ReceiptsCommand::Verify {
                file,
                trusted,
                audit,
                revoked,
                keys,
                json,
            }) => local::receipts_verify(file, trusted.as_deref(), audit, revoked, keys, *json),
            Some(ReceiptsCommand::Revoke {
                keep,
                output,
                publish,
                key,
            }) => {
                let statement =
                    local::receipts_revoke(&data_dir, key.as_deref(), *keep, output.as_deref())?;
                if *publish {
                    let _: serde_json::Value = runtime
                        .block_on(api()?.post_json("/v1/revocations", &statement))
                        .context("publishing the revocation")?;
                    eprintln!(
                        "published: radiators that hear it take no more work from this key, \
                         auditors keep it in their logs"
                    );
                }
                Ok(())
            }
            Some(ReceiptsCommand::Export { output, .. }) => {
                runtime.block_on(receipts::receipts_export(
                    &api()?,
                    &data_dir,
                    args.household.as_deref(),
                    output.as_deref(),
                ))
            }
            None => runtime.block_on(receipts::receipts(
                &api()?,
                &data_dir,
                args.household.as_deref(),
            )),
        },
        Command::Key(command) => key::run(&data_dir, command),
        Command::Heat(args) => {
            let config = Config::load(&data_dir, &config::process_env, &Overrides::default())?;
            // Offline: needs no node and no API token.
            if let Some(heat::HeatCommand::Simulate(sim)) = &args.command {
                return heat::simulate_day(sim, &config.heat);
            }
            runtime.block_on(heat::run(args.clone(), &api()?, &config.heat))
        }
        Command::Impact(args) => {
            let client = if args.file.is_some() {
                None
            } else {
                Some(api()?)
            };
            runtime.block_on(impact::run(args, client.as_ref(), &data_dir))
        }
        Command::Demo {
            radiators,
            out,
            width,
            height,
            tile,
        } => runtime.block_on(crate::demo::run(crate::demo::DemoOptions {
            radiators: *radiators,
            out: out.clone(),
            width: *width,
            height: *height,
            tile: *tile,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option and argument of every command says what it is in `--help`: a household
    /// reads nothing else. (Failed before: `hearth receipts export` listed `--json` and
    /// `-o, --output` with no words.)
    #[test]
    fn every_option_has_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "hearth", &mut missing);
        assert!(missing.is_empty(), "options without help: {missing:?}");
    }

    fn submit_policy(args: &[&str]) -> anyhow::Result<Option<crate::jobs::trust::Policy>> {
        let cli = Cli::try_parse_from(
            ["hearth", "submit", "pi"]
                .iter()
                .chain(args)
                .copied()
                .collect::<Vec<_>>(),
        )?;
        let Command::Submit { policy, .. } = cli.command else {
            panic!("not a submit")
        };
        policy.policy()
    }

    fn submit_allow(args: &[&str]) -> anyhow::Result<Vec<String>> {
        let cli = Cli::try_parse_from(
            ["hearth", "submit", "pi"]
                .iter()
                .chain(args)
                .copied()
                .collect::<Vec<_>>(),
        )?;
        let Command::Submit { policy, .. } = cli.command else {
            panic!("not a submit")
        };
        assert_eq!(
            policy.policy()?,
            None,
            "--allow alone keeps the node's policy"
        );
        policy.allow()
    }

    /// A setpoint is checked where it is typed: what JSON cannot carry (`nan`, `inf`) or the
    /// node would refuse (`-5`, `30`) is refused with the node's own words, not sent.
    #[test]
    fn a_setpoint_is_a_temperature_the_node_accepts() {
        let set = |v: &str| {
            Cli::try_parse_from(["hearth", "heat", "set", v]).map(|cli| match cli.command {
                Command::Heat(crate::cli::heat::HeatArgs {
                    command: Some(crate::cli::heat::HeatCommand::Set { celsius }),
                    ..
                }) => celsius,
                other => panic!("not a setpoint: {other:?}"),
            })
        };
        assert_eq!(set("20.5").unwrap(), 20.5);
        assert_eq!(set("21°C").unwrap(), 21.0);
        for bad in ["nan", "inf", "-5", "30", "4.99"] {
            let e = set(bad).unwrap_err().to_string();
            assert!(e.contains("choose between 5 and 27 °C"), "{bad}: {e}");
        }
        let e = set("warm").unwrap_err().to_string();
        assert!(e.contains("\"warm\" is not a temperature"), "{e}");
        let sim = Cli::try_parse_from(["hearth", "heat", "simulate", "--setpoint", "nan"]);
        assert!(sim
            .unwrap_err()
            .to_string()
            .contains("choose between 5 and 27"));
    }

    #[test]
    fn submit_takes_an_allow_list_and_refuses_bad_hex() {
        let a = "11".repeat(32);
        let b = "22".repeat(32);
        assert!(submit_allow(&[]).unwrap().is_empty());
        let both = format!("{a},{b}");
        assert_eq!(
            submit_allow(&["--allow", &both]).unwrap(),
            vec![a.clone(), b.clone()]
        );
        assert_eq!(
            submit_allow(&["--allow", &a, "--allow", &b]).unwrap(),
            vec![a.clone(), b]
        );
        let err = submit_allow(&["--allow", &format!("{a},xyz")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--allow") && err.contains("entry 2"), "{err}");
    }

    #[test]
    fn submit_takes_the_jobs_own_policy() {
        assert_eq!(
            submit_policy(&[]).unwrap(),
            None,
            "no flag: the node's [trust]"
        );
        let p = submit_policy(&["--min-replicas", "2", "--spot-check-permille", "500"])
            .unwrap()
            .unwrap();
        assert_eq!((p.min_replicas, p.max_replicas), (2, 3));
        assert_eq!(p.spot_check_permille, 500);
        assert!(p.probation && !p.own_replica);
        let p = submit_policy(&["--min-replicas", "5", "--own-replica"])
            .unwrap()
            .unwrap();
        assert_eq!((p.min_replicas, p.max_replicas), (5, 5));
        assert!(p.own_replica);
        for bad in [
            &["--min-replicas", "4", "--max-replicas", "2"][..],
            &["--min-replicas", "0"],
            &["--max-replicas", "17"],
            &["--spot-check-permille", "1001"],
        ] {
            let err = submit_policy(bad).unwrap_err().to_string();
            assert!(!err.is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn a_report_names_every_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        // A cause the message quotes is not repeated.
        let quoted = crate::store::StoreError::File {
            path: "x.bin".into(),
            source: io(),
        };
        assert_eq!(
            report(&anyhow::Error::new(quoted)),
            "could not read file x.bin: no such file"
        );
        // A context that does not quote its cause is followed by it.
        let context = anyhow::Error::new(io()).context("reading the job spec");
        assert_eq!(report(&context), "reading the job spec: no such file");
    }

    /// `--household` may follow `export` as well as precede it: `hearth receipts export --json
    /// --household KEY` is how one writes it, and was refused as an unexpected argument.
    #[test]
    fn receipts_household_goes_either_side_of_the_subcommand() {
        let key = "ab".repeat(32);
        for args in [
            &[
                "hearth",
                "receipts",
                "--household",
                &key,
                "export",
                "--json",
            ][..],
            &[
                "hearth",
                "receipts",
                "export",
                "--json",
                "--household",
                &key,
            ],
        ] {
            match Cli::try_parse_from(args).map(|c| c.command) {
                Ok(Command::Receipts(r)) => assert_eq!(r.household.as_deref(), Some(&*key)),
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }
}
