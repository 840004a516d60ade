//! The subsystems of `aios-actors` are layered: each may import (`crate::…`) only the modules
//! below it, and what two of them share lives in `aios-core`. This test reads the sources and
//! fails on an import against the order, so no import cycle can come back. The order is the
//! one ARCHITECTURE.md gives ("Layers inside aios-actors").

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `aios-actors` and the modules it may import. Everything else
/// they share comes from `aios-core`.
const ALLOWED: &[(&str, &[&str])] = &[
    ("protocol", &[]),
    ("records", &[]),
    // The outbound-request guard: the daemon's webhooks and `web_fetch` use it.
    ("outbound", &[]),
    ("llm", &[]),
    ("cost", &["llm", "records"]),
    ("scheduler", &["llm", "cost", "records", "protocol"]),
    ("memory", &["llm", "records", "protocol"]),
    // The built-in memory tools (`memory_save`, `memory_search`) are plugin tools over the
    // memory store.
    (
        "tools",
        &["memory", "outbound", "llm", "records", "protocol"],
    ),
    // Agents know memory and tools only through `aios_core::{MemoryHook, ToolSource}`.
    (
        "agent",
        &["scheduler", "cost", "llm", "records", "protocol"],
    ),
    ("retention", &["agent", "records"]),
    (
        "orchestration",
        &["agent", "retention", "llm", "records", "protocol"],
    ),
];

/// The module of `aios-actors` a source file belongs to (`src/agent/actor.rs` → `agent`).
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
fn modules_import_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let files = aios_testkit::source::rust_files(&src);
    assert!(files.len() > 40, "found only {} source files", files.len());
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
        // In a file at the top of `src/` (`cost.rs`), `super::` is the crate root.
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
