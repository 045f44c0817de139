//! Reading a receipts export file (`hearth receipts export --json`, docs/receipts.md): one
//! reader for every command that takes one (`hearth receipts verify`, `hearth impact`).

use std::path::Path;

use anyhow::Context;

/// Reads a receipts export file. The format is read first, so an older or a foreign file is
/// named as such rather than as a parse error.
pub fn read_export(path: &Path) -> anyhow::Result<crate::model::receipt::ReceiptExport> {
    use crate::model::receipt::{EXPORT_FORMAT, EXPORT_FORMAT_2};
    // An export of a million receipts is ~2 GB; refuse what cannot be a sane export.
    const LIMIT: u64 = 1 << 30;
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > LIMIT {
        anyhow::bail!(
            "{} is larger than 1 GiB; export fewer receipts",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(EXPORT_FORMAT | EXPORT_FORMAT_2) => {}
        Some(other) => anyhow::bail!(
            "{}: format {other:?}, expected {EXPORT_FORMAT:?} (or {EXPORT_FORMAT_2:?})",
            path.display()
        ),
        None => anyhow::bail!(
            "{} has no \"format\": not a receipts export (`hearth receipts export --json` writes \
             one, with \"format\": {EXPORT_FORMAT:?})",
            path.display()
        ),
    }
    // From the text again, not the value: duplicate keys are errors (docs/receipts.md), and a
    // value keeps only the last of them.
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a {EXPORT_FORMAT} export", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One reader for `hearth receipts verify` and `hearth impact`: the documented example
    /// reads; a file without a format, of another format, not JSON, or with a key twice is
    /// refused with its reason.
    #[test]
    fn an_export_is_read_by_its_format_first() {
        let example = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/receipts-example.json"
        ));
        let export = read_export(example).unwrap();
        assert!(!export.receipts.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(example).unwrap();
        let refused = |name: &str, body: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap();
            format!("{:#}", read_export(&path).unwrap_err())
        };
        let e = refused("none.json", r#"{"receipts": []}"#);
        assert!(
            e.contains("has no \"format\": not a receipts export"),
            "{e}"
        );
        let e = refused("other.json", r#"{"format": "hearth-receipts/9"}"#);
        assert!(e.contains("format \"hearth-receipts/9\", expected"), "{e}");
        let e = refused("text.json", "hello");
        assert!(e.contains("is not JSON"), "{e}");
        let twice = text.replacen("\"format\"", "\"receipts\": [],\n  \"format\"", 1);
        let e = refused("twice.json", &twice);
        assert!(e.contains("duplicate field"), "{e}");
    }
}
