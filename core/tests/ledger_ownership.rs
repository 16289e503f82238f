//! The billing ledger owns the push and run lifecycle: no product code outside `core/src/ledger/`
//! writes `pushes.status`, `sync_runs.status` or `product_mappings.stale`, nor creates pushes or
//! runs. A source check, so a new write elsewhere fails here rather than in an operator's month.
use std::path::{Path, PathBuf};

/// Statement fragments that write the ledger's columns or rows.
const LEDGER_WRITES: [&str; 7] = [
    "UPDATE pushes SET status",
    "UPDATE sync_runs SET status",
    "SET stale",
    "stale = TRUE",
    "INSERT INTO pushes",
    "INSERT INTO sync_runs",
    "sync_run::ActiveModel {",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_ledger_writes_push_and_run_states() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    let mut files = Vec::new();
    for crate_dir in ["core/src", "api/src", "worker/src"] {
        rust_files(&root.join(crate_dir), &mut files);
    }
    assert!(files.len() > 20, "found the sources");
    let ledger = root.join("core/src/ledger");
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(&ledger)) {
        let text = std::fs::read_to_string(file).expect("read source");
        // Unit-test fixtures at the end of a file may write rows directly.
        let product = text.split("#[cfg(test)]").next().unwrap_or_default();
        for fragment in LEDGER_WRITES {
            if product.contains(fragment) {
                offenders.push(format!("{}: {fragment}", file.strip_prefix(&root).unwrap_or(file).display()));
            }
        }
    }
    assert!(offenders.is_empty(), "ledger writes outside core/src/ledger/: {offenders:#?}");
}
