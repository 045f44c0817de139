//! # hearth: digital radiators that heat homes with verified compute
//!
//! A household runs `hearth node` on a computer whose waste heat warms a room. When the room
//! calls for heat the radiator pulls compute shards from coordinators it found over libp2p,
//! runs them in a deterministic WebAssembly sandbox and returns results that other homes
//! replicate and check by blake3 hash. Each verified shard earns a heat-work receipt signed by
//! the worker and countersigned by the submitter.
//!
//! ## Architecture map (data flows downwards only; a lower floor never imports a higher one)
//!
//! ```text
//! cli / demo            thin: parse arguments, call the API or the node
//! impact                reports from receipts (energy and CO2 both ways); pure
//! api                   local HTTP+JSON face of a node
//! node                  wires one radiator's services together, owns shutdown
//! homeassistant         MQTT discovery bridge: reads the heat service, nothing above it
//! jobs                  coordinator (submitter side), worker (radiator side), trust
//!                       (reputation; fraud evidence, re-run before it excludes anyone)
//! net        ledger     net moves bytes between peers; ledger keeps receipts in sled
//! model                 manifests, receipts, wire messages: pure data, canonical bytes
//! exec kernels store heat identity keys config   leaves: no knowledge of the network
//! ```
//!
//! `docs/architecture.md` argues the layering and the choice of crates.

// Without the `node` feature (Cargo.toml) the library is only its decoders of untrusted bytes
// and what they need: what the fuzz targets link (docs/fuzzing.md).

/// The allocator of every program that runs a node (the binary, the tests, the benches):
/// mimalloc, which took 15–20 % off the CPU per verified shard of the coordinator bench's
/// 4 096-shard job against glibc's malloc (docs/architecture.md, "Coordinator throughput").
/// Built without transparent huge pages (Cargo.toml), which tripled an idle radiator's RSS.
/// Declared here, not in `main.rs`, so the tests and benches measure the allocator the node
/// runs on.
#[cfg(feature = "node")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "node")]
pub mod api;
#[cfg(feature = "node")]
pub mod audit;
#[cfg(feature = "node")]
pub mod cli;
#[cfg(feature = "node")]
pub mod config;
#[cfg(feature = "node")]
pub mod demo;
pub mod exec;
pub mod heat;
#[cfg(feature = "node")]
pub mod homeassistant;
pub mod identity;
#[cfg(feature = "node")]
pub mod impact;
#[cfg(feature = "node")]
pub mod integrity;
#[cfg(feature = "node")]
pub mod jobs;
#[cfg(feature = "node")]
pub mod kernels;
#[cfg(feature = "node")]
pub mod keys;
#[cfg(feature = "node")]
pub mod kv;
#[cfg(feature = "node")]
pub mod ledger;
pub mod model;
#[cfg(feature = "node")]
pub mod net;
#[cfg(feature = "node")]
pub mod node;
pub mod store;
