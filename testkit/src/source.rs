//! The workspace's own sources, for tests that check its structure (layering, the key space,
//! the tenant boundary).

use std::path::{Path, PathBuf};

/// Every `.rs` file below `dir`, recursively, in a stable order.
///
/// # Panics
/// When `dir` cannot be read (a test's misconfiguration).
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect(dir, &mut out);
    out.sort();
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read the source directory {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
