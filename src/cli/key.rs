//! `hearth key`: the household's key log and its rotation (`crate::keys`; docs/receipts.md,
//! "Rotating a key"). Works on the data directory; a rotation needs the node stopped.

use std::path::Path;

use anyhow::{bail, Context};

use crate::identity::Identity;

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
