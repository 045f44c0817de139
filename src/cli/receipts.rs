//! `hearth receipts` and `hearth receipts export`: a household's receipts, read from its
//! running node (or straight from the data directory when none runs), each marked when it is
//! self-dealt or countersigned by a key the node refuses, and totalled apart. Split from
//! `remote.rs` (2026-12-05), which had passed 700 lines.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use crate::identity::{Identity, PublicKey};
use crate::jobs::trust::related::Relation;
use crate::ledger::Ledger;
use crate::model::receipt::{CreditBasis, EnergyMethod, ReceiptExport, VerifiedBy};

use super::client::Client;

/// Receipts from the running node, or straight from the data directory when no node runs.
pub(crate) async fn load_receipts(
    api: &Client,
    data_dir: &Path,
    household: Option<&str>,
) -> anyhow::Result<ReceiptExport> {
    let path = match household {
        Some(h) => format!("/v1/receipts?household={h}"),
        None => "/v1/receipts".to_string(),
    };
    match api.get::<ReceiptExport>(&path).await {
        Ok(e) => Ok(e),
        Err(e) if Client::is_unreachable(&e) => {
            let identity = Identity::load(data_dir)
                .context("no node answers and this data directory has no household key")?;
            let db = crate::node::open_db(data_dir)?;
            let own = crate::keys::own_keys(data_dir, &identity)?;
            let ledger = Ledger::open(&db, crate::ledger::Own::chain(own))?;
            let filter = household
                .map(PublicKey::from_hex)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            Ok(ledger.export(filter.as_ref())?)
        }
        Err(e) => Err(e),
    }
}

pub async fn receipts(
    api: &Client,
    data_dir: &Path,
    household: Option<&str>,
) -> anyhow::Result<()> {
    let export = load_receipts(api, data_dir, household).await?;
    let related = load_related(api, data_dir).await;
    let refused = load_refused(api, data_dir, &export.receipts).await;
    if export.receipts.is_empty() {
        match household {
            Some(h) => println!("no receipts credit household {h} here"),
            None => println!(
                "no receipts yet: a receipt comes with each verified shard this radiator runs \
                 (`hearth heat` shows whether the room calls for heat)"
            ),
        }
        return Ok(());
    }
    // "claimed" is the worker's own figure (the signed record); "credited" is what the
    // submitter countersigned in the credit terms, the figure a household is repaid by.
    println!(
        "{:<16}  {:<12} {:>5}  {:<12} {:>12}  {:>11} {:>11}  basis",
        "receipt", "job", "shard", "worker", "fuel", "claimed J", "credited J"
    );
    for r in &export.receipts {
        println!(
            "{:<16}  {:<12} {:>5}  {:<12} {:>12}  {:>11.3} {:>11.3}  {} ({}, {}, {}/{} agreed){}",
            r.id.get(..16).unwrap_or(&r.id),
            r.job.get(..12).unwrap_or(&r.job),
            r.shard,
            r.worker.get(..12).unwrap_or(&r.worker),
            r.fuel,
            r.energy_mj as f64 / 1000.0,
            r.credited_mj as f64 / 1000.0,
            basis_name(r.basis),
            method_name(r.energy_method),
            verified_name(r.verified_by),
            r.agreeing,
            r.replicas,
            match self_dealt(r, &related) {
                Some(Relation::SameKey) => "  SELF-DEALT",
                Some(Relation::SharedAddress) =>
                    "  SELF-DEALT (shares an address with the submitter)",
                None => "",
            },
        );
        if let Some(why) = refused.get(&r.submitter) {
            println!(
                "{:<16}  ^ COORDINATOR REFUSED: its submitter's key {why}",
                ""
            );
        }
    }
    for (k, t) in totals_by_worker(&export.receipts, &related, &refused) {
        println!(
            "household {k}: {} receipts, {:.3} J credited of {:.3} J claimed for other households' jobs",
            t.others.0,
            t.others.1 as f64 / 1000.0,
            t.others.2 as f64 / 1000.0
        );
        if t.refused.0 > 0 {
            println!(
                "household {k}: {} receipts, {:.3} J credited, countersigned by keys this node refuses (`hearth refusals`): a verifier holding the proofs counts them for nothing (a revoked key's count only in its commitments below its line)",
                t.refused.0,
                t.refused.1 as f64 / 1000.0
            );
        }
        if t.own.0 > 0 {
            println!(
                "household {k}: {} self-dealt receipts (its own jobs, or jobs of a household sharing its address), {:.3} J credited of {:.3} J claimed; nobody else vouched for them",
                t.own.0,
                t.own.1 as f64 / 1000.0,
                t.own.2 as f64 / 1000.0
            );
        }
    }
    Ok(())
}

/// The receipts this node marked when it countersigned them (`GET /v1/receipts/related`, or
/// the database when no node answers): receipt id → how its worker is tied to this node.
/// Empty when neither can be read: the key case is still seen in the receipt itself.
async fn load_related(api: &Client, data_dir: &Path) -> BTreeMap<String, Relation> {
    match api
        .get::<BTreeMap<String, Relation>>("/v1/receipts/related")
        .await
    {
        Ok(m) => m,
        Err(e) if Client::is_unreachable(&e) => {
            let read = || -> anyhow::Result<BTreeMap<String, Relation>> {
                let db = crate::node::open_db(data_dir)?;
                let store = crate::jobs::trust::store::TrustStore::open(&db)?;
                Ok(store
                    .all_related()?
                    .into_iter()
                    .map(|(id, r)| (id.to_hex().to_string(), r))
                    .collect())
            };
            read().unwrap_or_default()
        }
        Err(e) => {
            tracing::debug!("no self-dealing marks: {e}");
            BTreeMap::new()
        }
    }
}

/// The submitters of `receipts` that the node refuses (revoked, or caught equivocating), with
/// why: from `GET /v1/refusals`, or the database when no node answers. Empty when neither can
/// be read.
async fn load_refused(
    api: &Client,
    data_dir: &Path,
    receipts: &[crate::model::export::ReceiptJson],
) -> BTreeMap<String, String> {
    let why = |revoked: bool, equivocated: bool| match (revoked, equivocated) {
        (true, true) => "was revoked by its household and signed two commitments under one number",
        (true, false) => "was revoked by its household",
        _ => "signed two commitments under one number",
    };
    match super::audit::load_refusals(api).await {
        Ok(all) => {
            let mut out: BTreeMap<String, (bool, bool)> = BTreeMap::new();
            for r in all {
                let e = out.entry(r.key).or_default();
                e.0 |= r.kind == "revoked";
                e.1 |= r.kind == "equivocated";
            }
            out.into_iter()
                .map(|(k, (r, e))| (k, why(r, e).to_string()))
                .collect()
        }
        Err(e) if Client::is_unreachable(&e) => {
            let read = || -> anyhow::Result<BTreeMap<String, String>> {
                let db = crate::node::open_db(data_dir)?;
                let keys = crate::node::revoked::RevokedKeys::open(&db)?;
                let mut out = BTreeMap::new();
                for r in receipts {
                    let Ok(key) = PublicKey::from_hex(&r.submitter) else {
                        continue;
                    };
                    if let Some(reasons) = keys.reasons(&key) {
                        let text = why(reasons.revoked, reasons.equivocated).to_string();
                        out.insert(r.submitter.clone(), text);
                    }
                }
                Ok(out)
            };
            read().unwrap_or_default()
        }
        Err(e) => {
            tracing::debug!("no refused keys: {e}");
            BTreeMap::new()
        }
    }
}

/// Whether a receipt is self-dealt: its worker is its submitter (seen in the receipt), or the
/// coordinator that countersigned it marked the worker as sharing its address.
fn self_dealt(
    r: &crate::model::export::ReceiptJson,
    related: &BTreeMap<String, Relation>,
) -> Option<Relation> {
    if r.worker == r.submitter {
        Some(Relation::SameKey)
    } else {
        related.get(&r.id).copied()
    }
}

/// One household's receipts, (count, credited mJ, claimed mJ): for other households' jobs,
/// and self-dealt (worker and submitter are the same key, or share an address: nobody else
/// vouched for the work); and, among either, those countersigned by a key the node refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SplitTotals {
    others: (u64, u64, u64),
    own: (u64, u64, u64),
    refused: (u64, u64, u64),
}

fn totals_by_worker<'a>(
    receipts: &'a [crate::model::export::ReceiptJson],
    related: &BTreeMap<String, Relation>,
    refused: &BTreeMap<String, String>,
) -> BTreeMap<&'a str, SplitTotals> {
    let add = |part: &mut (u64, u64, u64), r: &crate::model::export::ReceiptJson| {
        part.0 += 1;
        part.1 = part.1.saturating_add(r.credited_mj);
        part.2 = part.2.saturating_add(r.energy_mj);
    };
    let mut totals: BTreeMap<&str, SplitTotals> = Default::default();
    for r in receipts {
        let t = totals.entry(&r.worker).or_default();
        if self_dealt(r, related).is_some() {
            add(&mut t.own, r);
        } else {
            add(&mut t.others, r);
        }
        if refused.contains_key(&r.submitter) {
            add(&mut t.refused, r);
        }
    }
    totals
}

fn verified_name(v: VerifiedBy) -> &'static str {
    match v {
        VerifiedBy::Quorum => "quorum",
        VerifiedBy::TrustedSpotChecked => "trusted, spot-checked",
        VerifiedBy::TrustedUnchecked => "trusted alone",
    }
}

fn basis_name(b: CreditBasis) -> &'static str {
    match b {
        CreditBasis::Claimed => "claimed",
        CreditBasis::ReplicaReference => "capped at replicas' reference",
        CreditBasis::HouseholdHistory => "capped by household history",
        CreditBasis::PowerCeiling => "capped at power ceiling",
    }
}

fn method_name(m: EnergyMethod) -> &'static str {
    match m {
        EnergyMethod::Rapl => "RAPL",
        EnergyMethod::CpuEstimate => "CPU estimate",
        EnergyMethod::Simulated => "simulated",
    }
}

pub async fn receipts_export(
    api: &Client,
    data_dir: &Path,
    household: Option<&str>,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let export = load_receipts(api, data_dir, household).await?;
    let text = serde_json::to_string_pretty(&export)?;
    match output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10: receipts a household countersigned for its own jobs are counted apart; so are
    /// those a key the node refuses countersigned.
    #[test]
    fn self_dealt_receipts_are_totalled_apart() {
        let export = crate::model::receipt::vector::export();
        let mut receipts = export.receipts.clone();
        let mut own = receipts[0].clone();
        own.submitter = own.worker.clone();
        receipts.push(own.clone());
        let totals = totals_by_worker(&receipts, &BTreeMap::new(), &BTreeMap::new());
        let t = totals[own.worker.as_str()];
        assert_eq!(t.own, (1, own.credited_mj, own.energy_mj));
        assert!(t.others.0 >= 1);
        assert_eq!(t.refused, (0, 0, 0));
        // A receipt its coordinator marked as going to a household sharing its address is
        // self-dealt too.
        let other = receipts
            .iter()
            .find(|r| r.worker == own.worker && r.worker != r.submitter)
            .unwrap();
        let marked = [(other.id.clone(), Relation::SharedAddress)].into();
        let totals = totals_by_worker(&receipts, &marked, &BTreeMap::new());
        let u = totals[own.worker.as_str()];
        assert_eq!(u.own.0, 2);
        assert_eq!(u.others.0, t.others.0 - 1);
        assert_eq!(self_dealt(other, &marked), Some(Relation::SharedAddress));
        // Receipts a refused key countersigned are totalled apart too, whichever side.
        let refused = [(own.submitter.clone(), "was revoked".to_string())].into();
        let totals = totals_by_worker(&receipts, &BTreeMap::new(), &refused);
        let v = totals[own.worker.as_str()];
        assert_eq!(v.refused, (1, own.credited_mj, own.energy_mj));
        assert_eq!((v.own, v.others), (t.own, t.others));
    }
}
