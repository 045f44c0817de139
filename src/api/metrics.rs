//! `GET /metrics`: the node's state in the Prometheus text exposition format, read at scrape
//! time. Moved out of `api.rs` (2026-12-04), which had passed 700 lines.

use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::*;

/// Prometheus metrics, read from the node's state at scrape time (one registry per scrape, so
/// nothing is counted twice). Names follow the Prometheus conventions: base units in the name
/// (`_seconds`, `_joules`, `_celsius`, `_watts`), `_total` on counters (values that only grow:
/// the encoder appends it), gauges for values that go up and down. `docs/operations.md` lists
/// every name.
pub(super) async fn metrics(State(ctx): State<NodeContext>) -> Result<Response, ApiError> {
    let mut m = Metrics::new();
    let net = ctx.net.status().await.map_err(internal)?;
    m.gauge("peers", "Connected peers", None, net.connected_peers as f64);
    let r = &net.reachability;
    m.counter(
        "hole_punch_attempts",
        "Hole punches (DCUtR) finished since the node started, successful or not",
        None,
        r.hole_punch_attempts as f64,
    );
    m.counter(
        "hole_punch_successes",
        "Hole punches that gave a direct connection since the node started",
        None,
        r.hole_punch_successes as f64,
    );
    m.counter(
        "dead_connections",
        "Connections closed since the node started because their path went silent or broke (pings failed, the kernel's TCP timeout, or the home router answered unreachable)",
        None,
        r.dead_connections as f64,
    );
    m.counter(
        "autonat_rearms",
        "Times since the node started that it tested its addresses afresh with a new AutoNAT client: a probe was lost with its connection (the tester left before answering), or 3 probes brought no verdict (as behind NAT); the first at once, then at least 60 s apart, doubling to 30 min",
        None,
        r.autonat_rearms as f64,
    );
    m.counter(
        "autonat_dial_backs_given_up",
        "AutoNAT dial-backs this node, as a server, gave up since it started: the tested address did not connect within 5 s, so the node that asked heard that it is not reachable",
        None,
        r.autonat_dial_backs_given_up as f64,
    );
    m.gauge(
        "line_down",
        "1 while every redial of the bootstrap nodes fails at this node's own door (network unreachable: the home's line or router is down), else 0",
        None,
        if r.line_down_since_ms.is_some() { 1.0 } else { 0.0 },
    );
    m.gauge(
        "nat_symmetric",
        "1 while this node's public peers each saw it at a public port of their own (address-dependent NAT mapping, a symmetric NAT: no hole punch can succeed), else 0",
        None,
        if r.nat_mapping == crate::net::NatMapping::AddressDependent {
            1.0
        } else {
            0.0
        },
    );
    m.gauge(
        "dht_client",
        "1 while this node only uses the DHT (Kademlia client mode: not reachable from the internet, and the routing table holds public servers enough; or joined a network seconds ago and not yet chosen), 0 while it serves it",
        None,
        if r.dht_client { 1.0 } else { 0.0 },
    );
    if let Some(relay) = &net.relay {
        m.gauge(
            "relay_reservations",
            "Relay servers only: peers holding a reservation (listening through this relay)",
            None,
            relay.reservations as f64,
        );
        m.gauge(
            "relay_circuits",
            "Relay servers only: relayed connections open now",
            None,
            relay.circuits as f64,
        );
        m.counter(
            "relay_circuits_opened",
            "Relay servers only: relayed connections opened since the node started",
            None,
            relay.circuits_total as f64,
        );
        let refused = Family::<Vec<(String, String)>, Counter<f64, AtomicU64>>::default();
        let r = &relay.refused;
        for (reason, n) in [
            ("no_reservation", r.no_reservation),
            ("circuits_full", r.circuits_full),
            ("peer_circuits_full", r.peer_circuits_full),
            ("reservations_full", r.reservations_full),
            ("destination_failed", r.destination_failed),
            ("rate_limited", r.rate_limited),
            ("other", r.other),
        ] {
            refused
                .get_or_create(&vec![("reason".to_string(), reason.to_string())])
                .inc_by(n as f64);
        }
        m.registry.register(
            "relay_refused",
            "Relay servers only: reservations and relayed connections refused since the node started, by reason: the destination held no reservation or did not take the circuit, or which limit was reached (docs/operations.md, Running a relay)",
            refused,
        );
    }
    m.gauge(
        "relayed_peers",
        "Peers connected only through a relay",
        None,
        r.relayed_peers.len() as f64,
    );
    m.gauge(
        "reachable_public",
        "1 when a direct address of this node is confirmed reachable from the internet",
        None,
        f64::from(u8::from(r.is_public())),
    );
    m.counter(
        "blob_chunks_served",
        "Blob pieces served to peers since the node started",
        None,
        net.chunks_served as f64,
    );
    m.counter(
        "blob_chunks_fetched",
        "Verified blob pieces fetched from peers since the node started",
        None,
        net.chunks_fetched as f64,
    );
    m.gauge(
        "work_records",
        "Live work records this node holds as a DHT node",
        None,
        net.work_records as f64,
    );
    m.gauge(
        "want_records",
        "Live want records (radiators that want heat and were offered no work) this node holds as a DHT node",
        None,
        net.want_records as f64,
    );
    m.counter(
        "work_lookups",
        "Lookups of the DHT's work board (coordinators with open jobs) since start",
        None,
        net.work_lookups as f64,
    );
    m.counter(
        "want_lookups",
        "Lookups of the DHT's want board (radiators that want heat) since start",
        None,
        net.want_lookups as f64,
    );
    m.gauge(
        "blob_provider_records",
        "Blob provider records this node holds for other nodes as a DHT node",
        None,
        net.blob_records as f64,
    );
    m.counter(
        "blob_provider_records_refused",
        "Blob provider records refused since start: a bound of the store was reached",
        None,
        net.blob_records_refused as f64,
    );
    m.counter(
        "work_records_refused",
        "Work and want records refused since start: the key was full or the sender's network held its share",
        None,
        net.work_records_refused as f64,
    );
    m.gauge(
        "routing_peers",
        "Peers in the DHT routing table",
        None,
        net.routing_peers as f64,
    );
    m.counter(
        "routing_refused",
        "Peers kept out of the DHT routing table since start: their network held its share of a bucket or of the table",
        None,
        net.routing_refused as f64,
    );
    m.counter(
        "inbound_refused",
        "Connections peers opened to this node refused since start: their network held its share of them",
        None,
        net.inbound_refused as f64,
    );
    m.gauge(
        "refused_keys",
        "Coordinator keys this node takes no work from: revoked by their households or caught equivocating",
        None,
        ctx.refusals.keys().count() as f64,
    );
    m.gauge(
        "own_key_refused",
        "1 when radiators refuse this household's own key (revoked, or equivocated)",
        None,
        f64::from(u8::from(
            ctx.refusals.keys().contains(&ctx.identity.public()),
        )),
    );
    m.gauge(
        "own_key_used_elsewhere",
        "1 when another node runs with this key: a bootstrap node logged a commitment of it that this node did not seal or lends it to another instance (this node seals no more until restarted, or waits for the other), or another instance waits for this one",
        None,
        f64::from(u8::from(ctx.auditors.elsewhere().is_some())),
    );
    m.gauge(
        "own_key_event_not_signed_here",
        "1 when an event of this household's key log that this node did not sign was heard: someone else holding its key signed a log of their own",
        None,
        f64::from(u8::from(ctx.refusals.key_book().not_signed_here().is_some())),
    );
    // The auditor's log (bootstrap nodes only).
    if let Some(audit) = &ctx.audit {
        let (stored, unkept, equivocations) = audit.counts();
        m.gauge(
            "audit_commitments",
            "Receipt commitments in this auditor's log",
            None,
            stored as f64,
        );
        m.counter(
            "audit_commitments_unkept",
            "Commitments heard but not kept since start: the log is full",
            None,
            unkept as f64,
        );
        m.gauge(
            "audit_equivocations",
            "Equivocations in this auditor's log: two commitments one coordinator signed under one number",
            None,
            equivocations as f64,
        );
        let (taken, refused) = ctx.witnesses.counts();
        m.counter(
            "audit_witnessed",
            "Commitments radiators handed on (the ones their receipts came in) and this auditor checked and logged, since start",
            None,
            taken as f64,
        );
        m.counter(
            "audit_witnessed_refused",
            "Commitments radiators handed on that were refused since start: a signature that failed, or the peer's share used up",
            None,
            refused as f64,
        );
        m.gauge(
            "instance_leases",
            "Keys this bootstrap node lends to one running instance each (one sealing node per key)",
            None,
            ctx.auditors.leases() as f64,
        );
    }
    m.gauge(
        "uptime",
        "Time since the node started",
        Some(Unit::Seconds),
        ctx.started.elapsed().as_secs_f64(),
    );
    m.gauge(
        "worker_slots",
        "Worker slots the room wants filled now",
        None,
        *ctx.slots.borrow() as f64,
    );
    m.gauge(
        "worker_slots_max",
        "Worker slots at full heat",
        None,
        ctx.max_slots as f64,
    );
    m.gauge(
        "shard_memory",
        "Memory of the radiator's shard budget held now: running shards and unstored outputs",
        Some(Unit::Bytes),
        ctx.executor.memory_in_use() as f64,
    );
    m.gauge(
        "shard_memory_limit",
        "The radiator's shard memory budget (memory_total_mib)",
        Some(Unit::Bytes),
        ctx.executor.limits().memory_total as f64,
    );
    let (disk_free, disk_floor) = ctx.store.disk_room();
    if let Some(free) = disk_free {
        m.gauge(
            "disk_free",
            "Free space on the disk of the data directory",
            Some(Unit::Bytes),
            free as f64,
        );
    }
    m.gauge(
        "disk_floor",
        "Free space the blob store keeps on that disk (disk_free_mib)",
        Some(Unit::Bytes),
        disk_floor as f64,
    );
    m.counter(
        "shard_cpu",
        "CPU time spent inside shards by this process",
        Some(Unit::Seconds),
        crate::exec::Executor::process_shard_cpu_time().as_secs_f64(),
    );
    let own = ctx
        .ledger
        .totals_of(&ctx.identity.public())
        .map_err(internal)?;
    m.counter(
        "receipts_credited",
        "Verified receipts crediting this household",
        None,
        own.receipts as f64,
    );
    m.counter(
        "energy_credited",
        "Energy credited to this household in verified receipts",
        Some(Unit::Joules),
        own.credited_mj as f64 / 1000.0,
    );
    m.counter(
        "fuel_credited",
        "Fuel (wasm instructions) credited to this household in verified receipts",
        None,
        own.fuel as f64,
    );
    let all: u64 = ctx
        .ledger
        .totals()
        .map_err(internal)?
        .iter()
        .map(|(_, t)| t.receipts)
        .sum();
    m.counter(
        "ledger_receipts",
        "Receipts of all households in this node's ledger",
        None,
        all as f64,
    );
    let jobs = ctx.coordinator.list().await;
    let jobs_family = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
    for (state, n) in [
        (
            "running",
            count_jobs(&jobs, |s| matches!(s, JobStatus::Running)),
        ),
        (
            "done",
            count_jobs(&jobs, |s| matches!(s, JobStatus::Done { .. })),
        ),
        (
            "failed",
            count_jobs(&jobs, |s| matches!(s, JobStatus::Failed { .. })),
        ),
    ] {
        jobs_family
            .get_or_create(&vec![("state".to_string(), state.to_string())])
            .set(n);
    }
    m.registry
        .register("jobs", "Jobs this node coordinates, by state", jobs_family);
    if let Some(heat) = &ctx.heat {
        let h = heat.status();
        if let Some(room) = h.room_celsius {
            m.gauge(
                "room_temperature",
                "Room temperature (absent while the reading is not trusted)",
                Some(Unit::Celsius),
                room,
            );
        }
        m.gauge(
            "room_setpoint",
            "Room temperature the radiator aims for",
            Some(Unit::Celsius),
            h.setpoint_celsius,
        );
        m.gauge(
            "heat_demand_ratio",
            "Heat the room wants, 0 to 1 of full power",
            None,
            f64::from(h.demand_permille) / 1000.0,
        );
        m.gauge(
            "power",
            "Electrical power of the radiator",
            Some(Unit::Other("watts".into())),
            h.power_watts,
        );
        // Starts again from 0 at local midnight, so a gauge, not a counter.
        m.gauge(
            "energy_today",
            "Electrical energy the radiator drew since local midnight",
            Some(Unit::Joules),
            h.energy_today_kwh * 3.6e6,
        );
        m.gauge(
            "energy_charged_today",
            "Energy the meter charged to shards that ran since local midnight (idle never is)",
            Some(Unit::Joules),
            h.energy_charged_today_kwh * 3.6e6,
        );
        if let Some(credited) = h.energy_credited_today_kwh {
            m.gauge(
                "energy_credited_today",
                "Energy this household's receipts credit since local midnight",
                Some(Unit::Joules),
                credited * 3.6e6,
            );
        }
        m.gauge(
            "heat_fail_safe",
            "1 while heating is held back by an untrusted reading",
            None,
            f64::from(u8::from(h.fail_safe)),
        );
    }
    let build = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
    build
        .get_or_create(&vec![
            ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            (
                "protocol".to_string(),
                crate::model::wire::PROTOCOL_VERSION.to_string(),
            ),
            ("role".to_string(), format!("{:?}", ctx.role).to_lowercase()),
        ])
        .set(1.0);
    m.registry.register(
        "build_info",
        "Always 1; the labels say which hearth this is",
        build,
    );
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &m.registry).map_err(internal)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

fn count_jobs(jobs: &[crate::jobs::JobSummary], f: fn(&JobStatus) -> bool) -> f64 {
    jobs.iter().filter(|j| f(&j.status)).count() as f64
}

/// One scrape's registry, with the prefix `hearth_`.
struct Metrics {
    registry: Registry,
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            registry: Registry::with_prefix("hearth"),
        }
    }

    fn register(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        metric: impl prometheus_client::registry::Metric,
    ) {
        match unit {
            Some(unit) => self.registry.register_with_unit(name, help, unit, metric),
            None => self.registry.register(name, help, metric),
        }
    }

    /// A value that goes up and down.
    fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>, value: f64) {
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(value);
        self.register(name, help, unit, g);
    }

    /// A value that only grows while the node runs (the encoder appends `_total`).
    fn counter(&mut self, name: &str, help: &str, unit: Option<Unit>, value: f64) {
        let c: Counter<f64, AtomicU64> = Counter::default();
        c.inc_by(value);
        self.register(name, help, unit, c);
    }
}
