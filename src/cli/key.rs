//! `hearth key`: the household's key log and its rotation (`crate::keys`; docs/receipts.md,
//! "Rotating a key"). Works on the data directory; a rotation needs the node stopped.

use std::path::Path;

use anyhow::{bail, Context};

use crate::identity::Identity;

/// What a rotation does to the household's standing with coordinators, its next key having
/// been fixed `fixed_ms` before the rotation (event #`seq` − 1 signed then; `None`: not in the
/// log).
fn standing_note(fixed_ms: Option<u64>, seq: u64) -> String {
    let wait = crate::jobs::trust::Rules::default().carry_after_ms;
    let days = wait / (24 * 3_600_000);
    match fixed_ms {
        Some(ms) if ms >= wait => format!(
            "Coordinators that heard event #{} at least {days} days before this rotation keep \
             the household's standing under the new key; others start it on probation \
             (docs/trust.md).",
            seq - 1
        ),
        _ => format!(
            "The new key was fixed {} h before this rotation, less than the {days} days \
             coordinators wait before a rotation keeps the household's standing: the new key \
             starts on probation with them (docs/trust.md).",
            fixed_ms.unwrap_or(0) / 3_600_000
        ),
    }
}

pub fn run(data_dir: &Path, command: &super::KeyCommand) -> anyhow::Result<()> {
    use super::KeyCommand;
    match command {
        KeyCommand::Prerotate { next } => {
            let e = crate::keys::prerotate(data_dir, next, crate::model::now_ms())?;
            eprintln!(
                "key log of household {} started: its next key is fixed and written to {}.\n\
                 Keep that file offline: it alone can take this household's credit over from \
                 the current key (`hearth key rotate --next {}`).",
                e.household.to_hex(),
                next.display(),
                next.display()
            );
        }
        KeyCommand::Rotate {
            next,
            new_next,
            force,
        } => {
            // The node must be stopped: it holds the database, and would go on signing with the
            // retired key until restarted.
            let db = crate::node::open_db(data_dir).context(
                "the node must be stopped before its key is rotated (its database is in use?)",
            )?;
            let identity = Identity::load(data_dir)?;
            let ledger = crate::ledger::Ledger::open(&db, identity.public())?;
            let (jobs, undelivered) = crate::jobs::coordinator::under_way(&db)?;
            let unsealed = ledger.pending_count();
            if (jobs > 0 || undelivered > 0 || unsealed > 0) && !force {
                bail!(
                    "this node still coordinates under its current key: {jobs} running jobs, \
                     {undelivered} receipts not yet confirmed by their workers, {unsealed} not \
                     yet sealed into a commitment. Workers take a receipt only from the key that \
                     countersigned it: let the node finish them and rotate then, or rotate now \
                     with --force and those receipts never reach their workers from this node"
                );
            }
            drop((ledger, db));
            let e = crate::keys::rotate(data_dir, next, new_next, crate::model::now_ms())?;
            eprintln!(
                "household {} now signs with key {} (event #{}); the key before it is retired \
                 (kept in {}). The next key is fixed and written to {}: keep it offline. Hand \
                 `hearth key log` with your receipts to whoever verifies them.",
                e.household.to_hex(),
                e.key.to_hex(),
                e.seq,
                data_dir.join(crate::keys::RETIRED_DIR).display(),
                new_next.display()
            );
            let log = crate::keys::load_log(data_dir)?;
            let fixed = log
                .iter()
                .find(|p| e.seq.checked_sub(1) == Some(p.seq))
                .map(|p| e.issued_ms.saturating_sub(p.issued_ms));
            eprintln!("{}", standing_note(fixed, e.seq));
        }
        KeyCommand::Log { output } => {
            let list: Vec<serde_json::Value> = crate::keys::load_log(data_dir)?
                .iter()
                .map(crate::model::rotate::KeyEvent::to_json)
                .collect();
            let text = serde_json::to_string_pretty(&list)? + "\n";
            match output {
                Some(path) => std::fs::write(path, &text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::standing_note;

    /// A rotation whose next key was fixed at least the coordinators' wait before says the
    /// standing follows; one sooner, that the new key starts on probation.
    #[test]
    fn a_rotation_says_whether_the_households_standing_follows() {
        let day = 24 * 3_600_000;
        assert!(standing_note(Some(7 * day), 3).contains("heard event #2 at least 7 days"));
        let soon = standing_note(Some(2 * 3_600_000), 1);
        assert!(
            soon.contains("fixed 2 h before") && soon.contains("probation"),
            "{soon}"
        );
        assert!(standing_note(None, 1).contains("probation"));
    }
}
