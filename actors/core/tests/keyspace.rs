//! The key space is one table: ARCHITECTURE.md renders it, and no source outside
//! `aios_core::keyspace` spells a prefix of it as a literal.
//!
//! `AIOS_BLESS=1 cargo test -p aios-core --test keyspace` rewrites the table in ARCHITECTURE.md.

use std::path::{Path, PathBuf};

use aios_core::keyspace::{self, PREFIXES};

const BEGIN: &str = "<!-- keyspace:begin (generated from aios_core::keyspace::markdown_table) -->";
const END: &str = "<!-- keyspace:end -->";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn architecture_md_holds_the_key_space_table() {
    let path = root().join("ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path).expect("read ARCHITECTURE.md");
    let start = text
        .find(BEGIN)
        .expect("ARCHITECTURE.md has the keyspace:begin marker")
        + BEGIN.len();
    let end = text
        .find(END)
        .expect("ARCHITECTURE.md has the keyspace:end marker");
    let table = format!("\n{}", keyspace::markdown_table());
    if text[start..end] == table {
        return;
    }
    if std::env::var("AIOS_BLESS").as_deref() == Ok("1") {
        let updated = format!("{}{table}{}", &text[..start], &text[end..]);
        std::fs::write(&path, updated).expect("write ARCHITECTURE.md");
        return;
    }
    panic!(
        "the key space table in ARCHITECTURE.md is stale; run AIOS_BLESS=1 cargo test -p aios-core --test keyspace, or paste:\n{table}"
    );
}

/// Library code of a file: comments and everything from its `#[cfg(test)]` module on are left
/// out (tests spell sample keys on purpose).
fn library_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

#[test]
fn no_source_spells_a_key_prefix_as_a_literal() {
    let root = root();
    let files: Vec<_> = [
        "supervisor/src",
        "actors/src",
        "actors/llm/src",
        "actors/memory/src",
        "actors/tools/src",
        "actors/agents/src",
        "runtime/src",
        "src",
    ]
    .iter()
    .flat_map(|dir| aios_testkit::source::rust_files(&root.join(dir)))
    .collect();
    assert!(files.len() > 80, "found only {} source files", files.len());
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (i, line) in library_lines(&text) {
            for family in PREFIXES {
                // A literal that starts with the prefix: `"agentlog/"`, `"agent/{name}"`.
                let quoted = format!("\"{}", family.prefix);
                let exact = format!("\"{}\"", family.prefix);
                let prefix_like = family.prefix.ends_with(['/', '@']);
                if (prefix_like && line.contains(&quoted)) || line.contains(&exact) {
                    found.push(format!(
                        "{}:{}: spells {:?}; use aios_core::keyspace",
                        file.strip_prefix(&root).unwrap_or(file).display(),
                        i + 1,
                        family.prefix
                    ));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
