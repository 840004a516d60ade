//! The crates under `actors/` are layered: each depends only on the crates below it
//! (`aios-core` < `aios-llm` < `aios-memory` < `aios-tools`, and `aios-llm` < `aios-agents`),
//! and what two of them share lives in `aios-core`. Cargo refuses a cycle between crates;
//! this test also fails on a dependency the layering does not allow (agents on memory, say),
//! and, inside `aios-agents`, on a module importing one above it. The order is the one
//! ARCHITECTURE.md gives.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each crate under `actors/` (by directory) and the crates of ours it may depend on.
const CRATES: &[(&str, &[&str])] = &[
    ("core", &["aios-supervisor"]),
    ("llm", &["aios-supervisor", "aios-core"]),
    ("memory", &["aios-supervisor", "aios-core", "aios-llm"]),
    // The built-in memory tools (`memory_save`, `memory_search`) are plugin tools over the
    // memory store.
    ("tools", &["aios-supervisor", "aios-core", "aios-memory"]),
    // Agents know memory and tools only through `aios_core::{MemoryHook, ToolSource}`.
    ("agents", &["aios-supervisor", "aios-core", "aios-llm"]),
];

/// Each top-level module of `aios-agents` and the modules of that crate it may import.
const ALLOWED: &[(&str, &[&str])] = &[
    ("agent", &[]),
    ("retention", &["agent"]),
    ("orchestration", &["agent", "retention"]),
];

/// The names of our crates (`aios-…`) in the `[dependencies]` table of a manifest.
fn our_dependencies(manifest: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_dependencies = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        if in_dependencies && line.starts_with("aios-") {
            out.insert(ident_dashed(line));
        }
    }
    out
}

fn ident_dashed(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[test]
fn crates_depend_only_on_the_layers_below_them() {
    let actors = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut violations = Vec::new();
    for (dir, may) in CRATES {
        let path = actors.join(dir).join("Cargo.toml");
        let manifest = std::fs::read_to_string(&path).expect("read a crate manifest");
        for dep in our_dependencies(&manifest) {
            if !may.contains(&dep.as_str()) {
                violations.push(format!(
                    "{}: depends on {dep}; the layering allows {may:?}",
                    path.display()
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_manifest_reader_finds_our_dependencies_only_in_the_dependencies_table() {
    let manifest = "[package]\nname = \"aios-x\"\n\n[dependencies]\naios-core.workspace = true\nserde = \"1\"\naios-llm = { path = \"../llm\" }\n\n[dev-dependencies]\naios-testkit.workspace = true\n";
    let found: Vec<String> = our_dependencies(manifest).into_iter().collect();
    assert_eq!(found, ["aios-core", "aios-llm"]);
}

/// The module of a crate a source file belongs to (`src/agent/actor.rs` → `agent`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_string())
}

/// `code` without its comments.
fn strip_comments(code: &str) -> String {
    code.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level items of a grouped import's body (`{a::X, b::{Y, Z}, c}` → a, b, c), which
/// may span lines.
fn group_items(body: &str) -> Vec<String> {
    let (mut depth, mut start, mut out) = (0usize, 0usize, Vec::new());
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                out.push(ident(&body[start..i]));
                return out;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(ident(&body[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out
}

/// Every module named after `crate::` in `code` (comments left out), including those in
/// grouped imports (`use crate::{a::X, b};`, over several lines too). `also` is another
/// prefix that names the crate root (`super::` in a file at the top of `src/`).
fn crate_imports(code: &str, also: Option<&str>) -> BTreeSet<String> {
    let code = strip_comments(code);
    let mut out = BTreeSet::new();
    for root in std::iter::once("crate::").chain(also) {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(root) {
            // `crate::` inside a longer path (`$crate::`, `foo_crate::`) is not the root.
            let before = rest[..at].chars().last();
            let after = &rest[at + root.len()..];
            if !before
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == ':')
            {
                if let Some(group) = after.strip_prefix('{') {
                    out.extend(group_items(group));
                } else {
                    out.insert(ident(after));
                }
            }
            rest = after;
        }
    }
    out.remove("");
    out
}

#[test]
fn modules_of_the_agents_crate_import_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("agents/src");
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let files = aios_testkit::source::rust_files(&src);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut violations = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        seen.insert(module.clone());
        let Some(may) = allowed.get(module.as_str()) else {
            violations.push(format!(
                "{}: module `{module}` is not in the layer table of this test (and ARCHITECTURE.md)",
                file.display()
            ));
            continue;
        };
        let code = std::fs::read_to_string(file).expect("read a source file");
        // In a file at the top of `src/` (`retention.rs`), `super::` is the crate root.
        let top_level = file.parent() == Some(src.as_path());
        for imported in crate_imports(&code, top_level.then_some("super::")) {
            if imported != module && !may.contains(imported.as_str()) {
                violations.push(format!(
                    "{}: `{module}` imports `crate::{imported}`; move what they share to aios-core",
                    file.display()
                ));
            }
        }
    }
    for (module, _) in ALLOWED {
        assert!(
            seen.contains(*module),
            "the layer table names `{module}`, which has no source"
        );
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_import_scanner_finds_plain_and_grouped_imports_but_not_comments() {
    let code = "use crate::agent::Task;\nuse crate::{memory::X, tools};\n// crate::llm\nlet x = crate::scheduler::f(); /// crate::cost\nuse crate::{\n    orchestration::{Run, Step},\n    records,\n};\nuse super::retention;";
    let found: Vec<String> = crate_imports(code, None).into_iter().collect();
    assert_eq!(
        found,
        [
            "agent",
            "memory",
            "orchestration",
            "records",
            "scheduler",
            "tools"
        ]
    );
    let top: Vec<String> = crate_imports(code, Some("super::")).into_iter().collect();
    assert!(top.contains(&"retention".to_string()), "{top:?}");
}

#[test]
fn the_layer_table_has_no_cycle() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    // Depth-first search from every module; a module met again on the path is a cycle.
    fn visit<'a>(
        m: &'a str,
        allowed: &BTreeMap<&'a str, &'a [&'a str]>,
        path: &mut Vec<&'a str>,
    ) -> Result<(), String> {
        if path.contains(&m) {
            return Err(format!("{} -> {m}", path.join(" -> ")));
        }
        path.push(m);
        for dep in allowed.get(m).copied().unwrap_or_default() {
            visit(dep, allowed, path)?;
        }
        path.pop();
        Ok(())
    }
    for m in allowed.keys() {
        visit(m, &allowed, &mut Vec::new()).expect("no cycle in the layer table");
    }
}
