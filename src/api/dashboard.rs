//! The household's dashboard: a page, a stylesheet and a script compiled into the binary
//! (`include_str!`, no build step, nothing fetched from elsewhere), and the one JSON document
//! the page polls, `GET /v1/overview`. The page itself holds no data and is public; the
//! overview and every control need the session (`auth`).
//!
//! [`headline`] is the sentence at the top of the page: whether the radiator heats and why. It
//! is a pure function of what the node knows, so it is unit-tested here.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::history::{History, Sample};
use super::{internal, ApiError};
use crate::heat::HeatStatus;
use crate::jobs::JobStatus;
use crate::node::NodeContext;

const INDEX: &str = include_str!("dashboard/index.html");
const STYLE: &str = include_str!("dashboard/dashboard.css");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");

/// Only this origin's files, no inline script or style, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// Recent receipts and jobs shown on the page.
const RECENT: usize = 10;
/// Days of credit shown.
const CREDIT_DAYS: u64 = 7;

/// `GET /v1/overview`: everything the dashboard shows, in one poll.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Overview {
    /// One plain sentence: is it heating, and why (not).
    pub headline: String,
    /// True while shards run on this radiator.
    pub heating: bool,
    pub role: String,
    pub peers: usize,
    /// How other homes reach this radiator (`Reachability::summary`: public, behind NAT and
    /// reached through a relay, ...), with how many peers it reaches directly by hole punching.
    #[serde(default)]
    pub reach: String,
    pub running_shards: usize,
    /// Memory the radiator's shard budget holds now, and the budget (`memory_total_mib`).
    pub shard_memory_bytes: u64,
    pub shard_memory_limit_bytes: u64,
    /// Free space on the data directory's disk (absent if it cannot be asked), and what the
    /// blob store keeps free there (`disk_free_mib`): below it, jobs with new blobs are
    /// given back.
    pub disk_free_bytes: Option<u64>,
    pub disk_floor_bytes: u64,
    /// Radiators only.
    pub heat: Option<HeatStatus>,
    /// Room and setpoint, one sample a minute, up to 24 h.
    pub history: Vec<Sample>,
    pub credited: Credit,
    /// Credit earned per UTC day, oldest first, the last [`CREDIT_DAYS`] days with any.
    pub credit_per_day: Vec<DayCredit>,
    /// Newest first.
    pub recent_receipts: Vec<RecentReceipt>,
    /// Jobs this node coordinates, newest first.
    pub jobs: Vec<JobLine>,
    /// Why radiators refuse this household's key, if they do (it revoked it, or it signed two
    /// commitments under one number): the household must know at once.
    #[serde(default)]
    pub key_refused: Option<String>,
    /// Why this node seals no more receipt commitments, if another node signs with its key
    /// (`node::auditors`): shown where a refusal would be, when there is none.
    #[serde(default)]
    pub key_elsewhere: Option<String>,
    /// Why the household must look, if an event of its key log that this node did not sign
    /// was heard (`node::key_log`): shown where the two above would be, when there is neither.
    #[serde(default)]
    pub key_event: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Credit {
    pub receipts: u64,
    pub energy_kwh: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DayCredit {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub receipts: u64,
    pub energy_kwh: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RecentReceipt {
    pub job: String,
    pub shard: u32,
    pub energy_kwh: f64,
    pub end_ms: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct JobLine {
    pub id: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub shards_verified: usize,
    pub shards_total: usize,
    pub submitted_ms: u64,
}

/// What [`headline`] decides from.
pub struct Facts<'a> {
    pub heat: Option<&'a HeatStatus>,
    pub running_shards: usize,
    pub peers: usize,
    /// How long (seconds) the node has found the network unreachable from its own door, if
    /// it does (`Reachability::line_down_since_ms`).
    pub line_down_s: Option<u64>,
}

/// One sentence a household understands: whether the radiator heats, and why or why not.
pub fn headline(f: &Facts) -> String {
    let Some(h) = f.heat else {
        return "This is a bootstrap node: it helps radiators find each other and does not heat."
            .into();
    };
    let room = h
        .room_celsius
        .map_or_else(|| "unknown".to_string(), |c| format!("{c:.1} °C"));
    if h.fail_safe {
        return format!(
            "Not heating: the room temperature cannot be trusted ({}).",
            h.reason
        );
    }
    if h.mode == "off" {
        return "Not heating: heating is switched off. Press Auto or set a temperature to heat again."
            .into();
    }
    if h.slots == 0 {
        return format!(
            "Not heating: the room is {room}, warm enough for the setpoint of {:.1} °C.",
            h.setpoint_celsius
        );
    }
    if f.running_shards > 0 {
        let why = match h.boost_minutes_left {
            Some(m) if h.mode == "boost" => format!("boost is on for {m} more minute(s)"),
            _ => format!(
                "the room is {room} for a setpoint of {:.1} °C",
                h.setpoint_celsius
            ),
        };
        return format!(
            "Heating: computing {} shard(s) at {:.0} W, because {why}.",
            f.running_shards, h.power_watts
        );
    }
    if let Some(secs) = f.line_down_s {
        return format!(
            "Wants heat but is not heating: the room is {room}, and this home's internet \
             connection has been down for {} minute(s) (the network is unreachable from this \
             computer; check the router), so no work can come. It starts again by itself once \
             the line is back.",
            secs / 60
        );
    }
    if f.peers == 0 {
        return format!(
            "Wants heat but is not heating: the room is {room} and no other radiator is \
             connected, so there is no work. Check this computer's network connection."
        );
    }
    format!(
        "Wants heat but is not heating yet: the room is {room}, and none of the {} connected \
         radiators has work for it right now. It starts as soon as a job needs it.",
        f.peers
    )
}

fn day_of(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .map_or_else(|| "?".into(), |d| d.format("%Y-%m-%d").to_string())
}

const MJ_PER_KWH: f64 = 3.6e9;

/// This household's credit: its totals, per day (the last [`CREDIT_DAYS`] days with any,
/// oldest first) and its [`RECENT`] newest receipts. Read newest first through the ledger's
/// index of own receipts by time, until the days shown are complete: what is read is the last
/// days' receipts, however long the ledger's history and however many others' it holds.
fn own_credit(
    ledger: &crate::ledger::Ledger,
    own: &crate::identity::PublicKey,
) -> Result<(crate::ledger::Totals, Vec<DayCredit>, Vec<RecentReceipt>), crate::ledger::LedgerError>
{
    let totals = ledger.totals_of(own)?;
    let mut days: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut recent: Vec<RecentReceipt> = Vec::new();
    for w in ledger.own_since(0).rev() {
        let w = w?;
        let day = day_of(w.end_ms);
        if !days.contains_key(&day) && days.len() == CREDIT_DAYS as usize {
            break;
        }
        let d = days.entry(day).or_default();
        d.0 += 1;
        d.1 = d.1.saturating_add(w.credited_mj);
        if recent.len() < RECENT {
            let Some(r) = ledger.get(&w.id)? else {
                return Err(crate::ledger::LedgerError::Corrupt(format!(
                    "the index names receipt {}, which is not stored (`hearth doctor`)",
                    w.id.to_hex()
                )));
            };
            recent.push(RecentReceipt {
                job: r.record.job.to_hex().to_string(),
                shard: r.record.shard,
                energy_kwh: w.credited_mj as f64 / MJ_PER_KWH,
                end_ms: w.end_ms,
            });
        }
    }
    let per_day = days
        .into_iter()
        .map(|(day, (receipts, mj))| DayCredit {
            day,
            receipts,
            energy_kwh: mj as f64 / MJ_PER_KWH,
        })
        .collect();
    Ok((totals, per_day, recent))
}

pub async fn overview(
    State((ctx, history)): State<(NodeContext, History)>,
) -> Result<Json<Overview>, ApiError> {
    let net = ctx.net.status().await.map_err(internal)?;
    let heat = ctx.heat.as_ref().map(|h| h.status());
    let running_shards = ctx.heat.as_ref().map_or(0, |h| h.meter().active_shards());
    let headline = headline(&Facts {
        heat: heat.as_ref(),
        running_shards,
        peers: net.connected_peers,
        line_down_s: net
            .reachability
            .line_down_since_ms
            .map(|since| crate::model::now_ms().saturating_sub(since) / 1000),
    });
    // The ledger is read off the async threads.
    let ledger = ctx.ledger.clone();
    let own = ctx.identity.public();
    let (credited, credit_per_day, recent) =
        tokio::task::spawn_blocking(move || own_credit(&ledger, &own))
            .await
            .map_err(internal)?
            .map_err(internal)?;
    let mut jobs = ctx.coordinator.list().await;
    jobs.sort_by_key(|j| std::cmp::Reverse(j.submitted_ms));
    let jobs = jobs
        .into_iter()
        .take(RECENT)
        .map(|j| JobLine {
            state: match j.status {
                JobStatus::Running => "running",
                JobStatus::Done { .. } => "done",
                JobStatus::Failed { .. } => "failed",
            }
            .into(),
            id: j.id,
            shards_verified: j.shards_verified,
            shards_total: j.shards_total,
            submitted_ms: j.submitted_ms,
        })
        .collect();
    let (disk_free_bytes, disk_floor_bytes) = ctx.store.disk_room();
    Ok(Json(Overview {
        headline,
        heating: running_shards > 0,
        role: format!("{:?}", ctx.role).to_lowercase(),
        peers: net.connected_peers,
        reach: match net.reachability.hole_punched_peers.len() {
            0 => net.reachability.summary(),
            n => format!(
                "{}; {n} peer(s) reached directly by hole punching",
                net.reachability.summary()
            ),
        },
        running_shards,
        shard_memory_bytes: ctx.executor.memory_in_use(),
        shard_memory_limit_bytes: ctx.executor.limits().memory_total,
        disk_free_bytes,
        disk_floor_bytes,
        heat,
        history: history.samples(),
        credited: Credit {
            receipts: credited.receipts,
            energy_kwh: credited.credited_mj as f64 / MJ_PER_KWH,
        },
        credit_per_day,
        recent_receipts: recent,
        jobs,
        key_refused: ctx
            .refusals
            .keys()
            .reasons(&ctx.identity.public())
            .map(|r| format!("Your key is refused: {}.", r.own_key_sentence())),
        key_elsewhere: ctx
            .auditors
            .elsewhere()
            .map(|why| format!("Your key is used elsewhere: {why}.")),
        key_event: ctx
            .refusals
            .key_book()
            .not_signed_here()
            .map(|why| format!("Someone signed for your household: {why}.")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::model::receipt::tests::{receipt_of, record};
    use crate::model::receipt::Receipt;

    fn receipt(worker: &Identity, submitter: &Identity, shard: u32, end_ms: u64) -> Receipt {
        let record = crate::model::receipt::WorkRecord {
            shard,
            energy_mj: 1_000 + u64::from(shard),
            start_ms: end_ms - 1,
            end_ms,
            ..record(worker, submitter)
        };
        receipt_of(record, worker, submitter)
    }

    /// The credit shown: the last seven days with receipts, oldest first, and the ten newest
    /// receipts, newest first, of this household only, from a real ledger on disk.
    #[test]
    fn the_dashboard_shows_the_last_days_and_the_newest_receipts() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::test_db(dir.path()).unwrap();
        let (me, other, sub) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let ledger = crate::ledger::Ledger::open(&db, me.public()).unwrap();
        const DAY: u64 = 86_400_000;
        let base = 1_796_000_000_000 / DAY * DAY; // midnight UTC, 2026-11-30
                                                  // Nine days, one empty: two receipts of mine a day, inserted out of order, and one of
                                                  // another household's, newer than all of mine, that must not show.
        let mut shard = 0;
        for day in [8u64, 0, 3, 1, 7, 5, 6, 2] {
            for hour in [2u64, 20] {
                ledger
                    .insert(&receipt(
                        &me,
                        &sub,
                        shard,
                        base + day * DAY + hour * 3_600_000,
                    ))
                    .unwrap();
                shard += 1;
            }
        }
        ledger
            .insert(&receipt(&other, &sub, 99, base + 9 * DAY))
            .unwrap();

        let (totals, days, recent) = own_credit(&ledger, &me.public()).unwrap();
        assert_eq!(totals.receipts, 16);
        let shown: Vec<(String, u64)> = days.iter().map(|d| (d.day.clone(), d.receipts)).collect();
        let want: Vec<(String, u64)> = [1u64, 2, 3, 5, 6, 7, 8]
            .iter()
            .map(|d| (day_of(base + d * DAY), 2))
            .collect();
        assert_eq!(shown, want);
        let ends: Vec<u64> = recent.iter().map(|r| r.end_ms).collect();
        let mut mine: Vec<u64> = [8u64, 0, 3, 1, 7, 5, 6, 2]
            .iter()
            .flat_map(|d| {
                [
                    base + d * DAY + 2 * 3_600_000,
                    base + d * DAY + 20 * 3_600_000,
                ]
            })
            .collect();
        mine.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(ends, mine[..RECENT]);
        // Each shows its own receipt's credit.
        let newest = &recent[0];
        assert_eq!(newest.shard, 1);
        assert!((newest.energy_kwh - 1_001.0 / MJ_PER_KWH).abs() < 1e-15);
    }

    fn heat(json: serde_json::Value) -> HeatStatus {
        let mut base = serde_json::json!({
            "source": "simulated", "mode": "auto", "setpoint_celsius": 20.0,
            "room_celsius": 18.0, "outdoor_celsius": null, "power_watts": 65.0, "slots": 2,
            "max_slots": 4, "energy_today_kwh": 0.5, "energy_charged_today_kwh": 0.4,
            "energy_credited_today_kwh": 0.3, "demand_permille": 500,
            "reason": "heating: the room is 18.0 °C for a setpoint of 20.0 °C",
            "fail_safe": false, "boost_minutes_left": null, "energy_method": "simulated",
            "local_time": "Mon 08:00",
        });
        for (k, v) in json.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn say(h: Option<&HeatStatus>, running: usize, peers: usize) -> String {
        headline(&Facts {
            heat: h,
            running_shards: running,
            peers,
            line_down_s: None,
        })
    }

    #[test]
    fn the_headline_says_whether_and_why() {
        let cold = heat(serde_json::json!({}));
        let s = say(Some(&cold), 2, 3);
        assert!(
            s.starts_with("Heating: computing 2 shard(s) at 65 W"),
            "{s}"
        );
        assert!(s.contains("18.0 °C for a setpoint of 20.0 °C"), "{s}");
        // Wants heat, but nothing runs: say which of the two reasons.
        let s = say(Some(&cold), 0, 0);
        assert!(
            s.starts_with("Wants heat but is not heating") && s.contains("no other radiator"),
            "{s}"
        );
        let s = say(Some(&cold), 0, 4);
        assert!(
            s.contains("none of the 4 connected radiators has work"),
            "{s}"
        );
        // The home's line is down: that is the reason, whatever peers the LAN still holds.
        let down = |running| {
            headline(&Facts {
                heat: Some(&cold),
                running_shards: running,
                peers: 1,
                line_down_s: Some(185),
            })
        };
        let s = down(0);
        assert!(
            s.contains("internet connection has been down for 3 minute(s)")
                && s.contains("starts again by itself"),
            "{s}"
        );
        assert!(
            down(2).starts_with("Heating: computing 2 shard(s)"),
            "shards run on"
        );
        let warm = heat(serde_json::json!({"room_celsius": 21.0, "slots": 0}));
        let s = say(Some(&warm), 0, 4);
        assert!(
            s.starts_with("Not heating: the room is 21.0 °C, warm enough"),
            "{s}"
        );
        let off = heat(serde_json::json!({"mode": "off", "slots": 0}));
        assert!(say(Some(&off), 0, 4).contains("switched off"));
        let unsafe_reading = heat(serde_json::json!({
            "fail_safe": true, "room_celsius": null, "slots": 0,
            "reason": "no reading for 10 minutes; heating held at the minimum of 0 slot(s)",
        }));
        let s = say(Some(&unsafe_reading), 0, 4);
        assert!(
            s.contains("cannot be trusted") && s.contains("no reading"),
            "{s}"
        );
        let boost = heat(serde_json::json!({"mode": "boost", "boost_minutes_left": 42}));
        assert!(say(Some(&boost), 4, 1).contains("boost is on for 42 more minute(s)"));
        assert!(say(None, 0, 9).contains("bootstrap"));
    }
}
