//! `hearth audit [COORDINATOR]`: the auditor's log a bootstrap node keeps (`crate::audit`),
//! read from its API. `hearth refusals`: the keys a node takes no work from, with the proofs.

use super::client::Client;
use crate::audit::{AuditSummary, CoordinatorLog, LoggedCommitment};

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

pub async fn show(
    api: &Client,
    coordinator: Option<&str>,
    from: u64,
    json: bool,
) -> anyhow::Result<()> {
    let Some(coordinator) = coordinator else {
        let s: AuditSummary = api.get("/v1/audit").await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&s)?);
            return Ok(());
        }
        println!(
            "{} commitments logged (at most {}); {} heard but not kept since the node started (log full)",
            s.stored, s.capacity, s.dropped
        );
        for c in &s.coordinators {
            let span = c.last_seq - c.first_seq + 1;
            println!(
                "{}  commitments {}..={} ({} logged, {} missing), {} receipts, first seen {}, last seen {}{}",
                c.coordinator,
                c.first_seq,
                c.last_seq,
                c.commitments,
                span.saturating_sub(c.commitments),
                c.receipts,
                utc(c.first_seen_ms),
                utc(c.last_seen_ms),
                if c.equivocations > 0 {
                    format!(", EQUIVOCATED {} time(s)", c.equivocations)
                } else {
                    String::new()
                }
            );
        }
        return Ok(());
    };
    let log: CoordinatorLog = api
        .get(&format!(
            "/v1/audit/{}?from={from}",
            coordinator.trim().to_lowercase()
        ))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&log)?);
        return Ok(());
    }
    let line = |c: &LoggedCommitment| {
        format!(
            "#{} {} receipts, ends {}..{}, first seen {}, id {}",
            c.seq,
            c.count,
            utc(c.first_ms),
            utc(c.last_ms),
            utc(c.first_seen_ms),
            c.id
        )
    };
    println!("coordinator {}", log.coordinator);
    for c in &log.commitments {
        println!("  {}", line(c));
    }
    if let Some(next) = log.next {
        println!("  more: hearth audit {} --from {next}", log.coordinator);
    }
    if let Some(r) = &log.revocation {
        let kept = match r.keep {
            0 => "none of its commitments".to_string(),
            n => format!("only its commitments #0 to #{}", n - 1),
        };
        println!(
            "  REVOKED: the key's own statement vouches for {kept} (signed {}, first seen {})",
            utc(r.issued_ms),
            utc(r.first_seen_ms)
        );
        println!("            {}", r.signed);
    }
    for e in &log.key_events {
        let step = match e.seq {
            0 => "key log started".to_string(),
            n => format!("rotated to key {} (#{n})", e.key),
        };
        println!(
            "  KEY: {step}, signed {}, first seen {}",
            utc(e.issued_ms),
            utc(e.first_seen_ms)
        );
    }
    for c in &log.key_contests {
        println!(
            "  KEY CONTEST at #{}: a second, different key event, first seen {}; the first stands",
            c.seq,
            utc(c.second.first_seen_ms)
        );
        println!("            {}", c.second.signed);
    }
    for e in &log.equivocations {
        println!(
            "  EQUIVOCATION at #{}: two different signed commitments",
            e.seq
        );
        println!("    first:  {}", line(&e.first));
        println!("            {}", e.first.signed);
        println!("    second: {}", line(&e.second));
        println!("            {}", e.second.signed);
    }
    Ok(())
}

/// Most pages `hearth refusals` reads: a node keeps at most 65 536 keys, two proofs each.
const MAX_REFUSAL_PAGES: usize = 2 * 65_536 / crate::api::audit::MAX_REFUSALS_PAGE + 1;

/// Every key the node refuses, with its proof (`GET /v1/refusals`, page after page).
pub(crate) async fn load_refusals(
    api: &Client,
) -> anyhow::Result<Vec<crate::api::audit::RefusalView>> {
    use crate::api::audit::RefusalPage;
    let mut all = Vec::new();
    let mut path = "/v1/refusals".to_string();
    for _ in 0..MAX_REFUSAL_PAGES {
        let page: RefusalPage = api.get(&path).await?;
        all.extend(page.refusals);
        match page.next {
            Some(next) => path = format!("/v1/refusals?after={next}"),
            None => break,
        }
    }
    Ok(all)
}

pub async fn refusals(api: &Client, json: bool) -> anyhow::Result<()> {
    let all = load_refusals(api).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no key refused: this node takes work from every coordinator that offers it");
    }
    for r in &all {
        let why = match (r.kind.as_str(), r.keep, r.seq) {
            ("revoked", Some(0), _) => {
                "revoked by its household, vouching for none of its commitments".to_string()
            }
            ("revoked", Some(keep), _) => format!(
                "revoked by its household, vouching only for its commitments #0 to #{}",
                keep - 1
            ),
            ("equivocated", _, Some(seq)) => {
                format!("signed two different commitments as #{seq}")
            }
            (kind, _, _) => format!("{kind} (the kept proof does not check)"),
        };
        println!("{}  {why}", r.key);
    }
    Ok(())
}
