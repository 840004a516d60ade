//! `aiosctl` against a daemon on 127.0.0.1: the commands an operator uses, as a real child
//! process, with tables and `--json`.

use aios_runtime::daemon::{Daemon, DaemonConfig};

const AIOSCTL: &str = env!("CARGO_BIN_EXE_aiosctl");

async fn ctl(url: &str, key: &str, args: &[&str]) -> (bool, String, String) {
    let (url, key) = (url.to_string(), key.to_string());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(AIOSCTL)
            .args(&args)
            .env("AIOS_URL", url)
            .env("AIOS_KEY", key)
            .output()
            .expect("run aiosctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiosctl_drives_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let config = DaemonConfig {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..DaemonConfig::default()
    };
    let (d, first) = Daemon::start(config, None).await.expect("start");
    let key = first.unwrap().secret;
    let url = format!("http://{}", d.addr);

    let def = dir.path().join("writer.toml");
    std::fs::write(
        &def,
        "name = \"writer\"\nrole = \"executor\"\nmodel = \"scripted/demo\"\nsystem_prompt = \"Write.\"\n",
    )
    .unwrap();
    let (ok, out, err) = ctl(&url, &key, &["agents", "create", def.to_str().unwrap()]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("created \"writer\""), "{out}");
    let (ok, out, _) = ctl(&url, &key, &["agents", "list"]).await;
    assert!(
        ok && out.contains("writer") && out.contains("scripted/demo"),
        "{out}"
    );
    let (ok, out, _) = ctl(&url, &key, &["--json", "agents", "list"]).await;
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(v["items"][0]["name"], "writer");
    let (ok, out, err) = ctl(&url, &key, &["agents", "chat", "writer", "hello"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("[scripted]"), "streamed answer: {out}");

    let notes = dir.path().join("notes.jsonl");
    let lines: Vec<String> = (0..250)
        .map(|i| format!("{{\"text\": \"note {i} about topic {}\"}}", i % 7))
        .collect();
    std::fs::write(&notes, lines.join("\n")).unwrap();
    assert!(ctl(&url, &key, &["memory", "create", "kb"]).await.0);
    let (ok, out, err) = ctl(
        &url,
        &key,
        &["memory", "import", "kb", notes.to_str().unwrap()],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("imported 250 items"), "{out}");
    let (ok, out, _) = ctl(
        &url,
        &key,
        &["memory", "search", "kb", "note 42", "-k", "3"],
    )
    .await;
    assert!(ok && out.contains("note"), "{out}");

    let (ok, out, _) = ctl(
        &url,
        &key,
        &["keys", "create", "--role", "viewer", "--name", "dash"],
    )
    .await;
    assert!(ok && out.contains("shown once"), "{out}");
    let viewer = out.lines().last().unwrap().trim().to_string();
    let (ok, _, err) = ctl(&url, &viewer, &["keys", "list"]).await;
    assert!(
        !ok && err.contains("403"),
        "a viewer cannot list keys: {err}"
    );
    // A run followed to its end, and the MCP commands.
    for (name, role, cap) in [
        ("planner", "planner", "plan"),
        ("researcher", "executor", "research"),
    ] {
        let def = dir.path().join(format!("{name}.json"));
        std::fs::write(
            &def,
            serde_json::json!({"name": name, "role": role, "model": "scripted/demo",
                "system_prompt": "You plan. Answer with a JSON plan.",
                "capabilities": [{"name": cap}, {"name": "write"}]})
            .to_string(),
        )
        .unwrap();
        assert!(
            ctl(&url, &key, &["agents", "create", def.to_str().unwrap()])
                .await
                .0
        );
    }
    let (ok, out, err) = ctl(
        &url,
        &key,
        &[
            "runs",
            "start",
            "Why is the sky blue?",
            "--planner",
            "planner",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("Succeeded"), "{out}{err}");
    // The events (step_started, step_done, finished) are printed as they come; a run this
    // quick may be finished before the stream is opened, so only the run id is certain.
    assert!(err.starts_with("run "), "{err}");
    let (ok, out, _) = ctl(&url, &key, &["runs", "list"]).await;
    assert!(ok && out.contains("Why is the sky blue?"), "{out}");
    let server = env!("CARGO_BIN_EXE_aiosctl").replace("aiosctl", "aios-mcp-test-server");
    if std::path::Path::new(&server).exists() {
        let (ok, out, err) = ctl(&url, &key, &["mcp", "add-stdio", "t", "--", &server]).await;
        assert!(ok && out.contains("t__echo"), "{out}{err}");
        let (ok, out, _) = ctl(&url, &key, &["mcp", "list"]).await;
        assert!(ok && out.contains("stdio"), "{out}");
        let (ok, out, err) = ctl(&url, &key, &["mcp", "remove", "t"]).await;
        assert!(ok, "{out}{err}");
    } else {
        // Built by `cargo test --workspace` (the aios package's binary), not by `-p aios-runtime`.
        eprintln!("SKIPPED the aiosctl mcp commands: {server} is not built");
    }

    let (ok, out, _) = ctl(&url, &key, &["tools", "list"]).await;
    assert!(ok && out.contains("web_fetch"), "{out}");
    // Grants: one for tenant acme's agent writer, listed with its id, then revoked.
    let (ok, out, err) = ctl(
        &url,
        &key,
        &[
            "tools",
            "grant",
            "web_fetch",
            "files",
            "--tenant",
            "acme",
            "--agent",
            "writer",
        ],
    )
    .await;
    assert!(ok && out.contains("granted"), "{out}{err}");
    let id = out
        .trim()
        .rsplit("id ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    let (ok, out, _) = ctl(&url, &key, &["tools", "grants"]).await;
    assert!(
        ok && out.contains(&id) && out.contains("acme.writer"),
        "{out}"
    );
    let (ok, out, err) = ctl(&url, &key, &["tools", "revoke", &id]).await;
    assert!(ok && out.contains("revoked"), "{out}{err}");
    let (ok, out, _) = ctl(&url, &key, &["tools", "grants"]).await;
    assert!(ok && !out.contains(&id), "{out}");
    let (ok, _, err) = ctl(
        &url,
        &key,
        &["tools", "grant", "files", "--agent", "writer"],
    )
    .await;
    assert!(!ok && err.contains("--tenant"), "{err}");
    let (ok, out, _) = ctl(&url, &key, &["audit", "verify"]).await;
    assert!(ok && out.contains("intact"), "{out}");
    let (ok, out, _) = ctl(&url, &key, &["audit", "tail", "--limit", "3"]).await;
    assert!(ok && out.contains("POST"), "{out}");

    // Export, then import the export into another namespace: the texts come back.
    let exported = dir.path().join("kb.jsonl");
    let (ok, out, err) = ctl(
        &url,
        &key,
        &[
            "memory",
            "export",
            "kb",
            "--out",
            exported.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok && out.contains("exported 250 items"), "{out}{err}");
    assert_eq!(mode(&exported), 0o600, "an export is the owner's only");
    assert!(ctl(&url, &key, &["memory", "create", "kb2"]).await.0);
    let (ok, out, err) = ctl(
        &url,
        &key,
        &["memory", "import", "kb2", exported.to_str().unwrap()],
    )
    .await;
    assert!(ok && out.contains("imported 250 items"), "{out}{err}");
    let (ok, out, _) = ctl(&url, &key, &["memory", "erase", "kb2"]).await;
    assert!(!ok, "erase needs a filter: {out}");

    let (ok, _, err) = ctl(&url, "aios_bad", &["status"]).await;
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, _, err) = ctl("ftp://x", &key, &["status"]).await;
    assert!(!ok && err.contains("--url"), "{err}");
    d.shutdown().await.expect("shutdown");

    // Backup of the stopped daemon's data dir, restore into a new one, start from it.
    let data = dir.path().join("data");
    let file = dir.path().join("aios.bak");
    let (ok, out, err) = ctl(
        &url,
        &key,
        &[
            "backup",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert_eq!(mode(&file), 0o600, "a backup is the owner's only");
    let copy = dir.path().join("copy");
    let (ok, out, err) = ctl(
        &url,
        &key,
        &[
            "restore",
            "--data-dir",
            copy.to_str().unwrap(),
            "--from",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok && out.contains("restored"), "{out}{err}");
    let (ok, _, err) = ctl(
        &url,
        &key,
        &[
            "restore",
            "--data-dir",
            copy.to_str().unwrap(),
            "--from",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok && err.contains("empty data dir"), "{err}");
    let config = DaemonConfig {
        data_dir: copy,
        listen: "127.0.0.1:0".parse().unwrap(),
        ..DaemonConfig::default()
    };
    let (d, first) = Daemon::start(config, None)
        .await
        .expect("start from the restore");
    assert!(first.is_none(), "the keys came back with the restore");
    let url = format!("http://{}", d.addr);
    let (ok, out, _) = ctl(&url, &key, &["agents", "list"]).await;
    assert!(ok && out.contains("writer"), "{out}");
    let (ok, out, _) = ctl(&url, &key, &["audit", "verify"]).await;
    assert!(ok && out.contains("intact"), "{out}");
    d.shutdown().await.expect("shutdown");

    // A damaged backup is refused before anything is written.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let other = dir.path().join("other");
    let (ok, _, err) = ctl(
        &url,
        &key,
        &[
            "restore",
            "--data-dir",
            other.to_str().unwrap(),
            "--from",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok && err.contains("checksum"), "{err}");
    assert!(!other.join("snapshots").exists());
}

/// The permission bits of `path`.
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
