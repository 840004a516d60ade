//! Data written by release 0.1 still loads: `tests/fixtures/release-0.1-backup` is an
//! `aiosctl backup` made with that release (agents and conversations in three tenants, memory,
//! keys, an MCP server, schedules, runs, sessions, webhooks; see its README). This test
//! restores it with today's `aiosctl`, serves it with today's `aiosd`, and repeats every check
//! of its `expected.json` (the same checks `make/verify.py` ran against release 0.1 itself).
//!
//! bincode stores enum variants by index and fields by position, so a type moved between
//! crates or reordered breaks this test rather than a user's data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::Aiosd;
use reqwest::StatusCode;
use serde_json::Value;

const AIOSCTL: &str = env!("CARGO_BIN_EXE_aiosctl");

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/release-0.1-backup")
}

/// The value at an RFC 6901 pointer, or why there is none.
fn at<'a>(v: &'a Value, pointer: &str) -> Result<&'a Value, String> {
    v.pointer(pointer)
        .ok_or_else(|| format!("nothing at {pointer:?}"))
}

/// One assertion of `expected.json` (its `assertion_language`) against `body`.
fn check_assertion(body: &Value, a: &Value) -> Result<(), String> {
    let pointer = a["pointer"]
        .as_str()
        .ok_or("an assertion without a pointer")?;
    let target = match a.get("array") {
        Some(array) => {
            let array = array.as_str().ok_or("`array` is not a pointer")?;
            let wanted = a["where"].as_object().ok_or("`array` without `where`")?;
            let items = at(body, array)?
                .as_array()
                .ok_or_else(|| format!("{array:?} is not an array"))?;
            let found: Vec<&Value> = items
                .iter()
                .filter(|x| wanted.iter().all(|(k, v)| x.get(k) == Some(v)))
                .collect();
            match found.as_slice() {
                [one] => *one,
                _ => {
                    return Err(format!(
                        "{} elements of {array} match {}",
                        found.len(),
                        Value::Object(wanted.clone())
                    ));
                }
            }
        }
        None => body,
    };
    let value = at(target, pointer)?;
    if let Some(expected) = a.get("equals")
        && value != expected
    {
        return Err(format!("{pointer}: {value} != {expected}"));
    }
    if let Some(len) = a.get("len").and_then(Value::as_u64) {
        let actual = value.as_array().map(Vec::len);
        if actual != Some(len as usize) {
            return Err(format!("{pointer}: length {actual:?} != {len}"));
        }
    }
    Ok(())
}

/// A JSON-lines export: its line count, sorted ids and some texts.
fn check_jsonl(text: &str, expected: &Value) -> Result<(), String> {
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("a line is not JSON: {e}")))
        .collect::<Result<_, _>>()?;
    if Some(lines.len() as u64) != expected["lines"].as_u64() {
        return Err(format!(
            "{} lines, expected {}",
            lines.len(),
            expected["lines"]
        ));
    }
    let mut ids: Vec<String> = lines
        .iter()
        .map(|l| match &l["id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    ids.sort();
    let expected_ids: Vec<String> = serde_json::from_value(expected["ids"].clone())
        .map_err(|e| format!("ids in expected.json: {e}"))?;
    if ids != expected_ids {
        return Err("the ids differ".into());
    }
    for t in expected["texts_include"].as_array().into_iter().flatten() {
        if !lines.iter().any(|l| &l["text"] == t) {
            return Err(format!("no line has the text {t}"));
        }
    }
    Ok(())
}

async fn call(
    url: &str,
    key: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut req = reqwest::Client::new()
        .request(method, format!("{url}{path}"))
        .bearer_auth(key);
    if let Some(body) = body {
        req = req.json(body);
    }
    let r = req.send().await.expect("request");
    let status = r.status();
    (status, r.text().await.expect("a body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_made_by_release_0_1_restores_and_serves_its_contents() {
    let fixture = fixture();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture.join("expected.json")).expect("read expected.json"),
    )
    .expect("expected.json is JSON");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = std::process::Command::new(AIOSCTL)
        .args(["restore", "--data-dir"])
        .arg(&data)
        .arg("--from")
        .arg(fixture.join(expected["backup_file"].as_str().expect("backup_file")))
        .output()
        .expect("run aiosctl restore");
    assert!(
        out.status.success(),
        "restore: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let config = expected["daemon_config"]["toml"]
        .as_str()
        .expect("daemon_config.toml");
    let node = Aiosd::start_in("restored", Some(&data), config, &[]);

    let admin = &expected["admin"];
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    keys.insert(
        admin["tenant"].as_str().expect("admin tenant").into(),
        admin["secret"].as_str().expect("admin secret").into(),
    );
    for s in expected["setup"].as_array().expect("setup") {
        let who = s["as"].as_str().expect("as");
        let (status, text) = call(
            &node.url,
            &keys[who],
            s["method"].as_str().expect("method"),
            s["path"].as_str().expect("path"),
            s.get("body"),
        )
        .await;
        assert_eq!(
            u64::from(status.as_u16()),
            s["status"].as_u64().expect("status"),
            "setup {}: {text}",
            s["path"]
        );
        if let Some(name) = s.get("save_secret_as").and_then(Value::as_str) {
            let v: Value = serde_json::from_str(&text).expect("a key as JSON");
            keys.insert(name.into(), v["secret"].as_str().expect("secret").into());
        }
    }

    let mut failures = Vec::new();
    let mut passed = 0;
    let checks = expected["checks"].as_array().expect("checks");
    for c in checks {
        let (method, path, who) = (
            c["method"].as_str().expect("method"),
            c["path"].as_str().expect("path"),
            c["as"].as_str().expect("as"),
        );
        let (status, text) = call(&node.url, &keys[who], method, path, c.get("body")).await;
        let label = format!("{method} {path} as {who}");
        if u64::from(status.as_u16()) != c["status"].as_u64().expect("status") {
            failures.push(format!("{label}: status {status}: {text:.300}"));
            continue;
        }
        if let Some(jsonl) = c.get("jsonl") {
            match check_jsonl(&text, jsonl) {
                Ok(()) => passed += 1,
                Err(e) => failures.push(format!("{label}: {e}")),
            }
            continue;
        }
        let body: Value = match serde_json::from_str(&text) {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("{label}: not JSON ({e}): {text:.300}"));
                continue;
            }
        };
        for a in c["assert"].as_array().expect("assert") {
            match check_assertion(&body, a) {
                Ok(()) => passed += 1,
                Err(e) => failures.push(format!("{label}: {e}")),
            }
        }
    }
    eprintln!(
        "old data: {} requests, {passed} assertions passed, {} failed",
        checks.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(passed > 400, "only {passed} assertions ran");
}
