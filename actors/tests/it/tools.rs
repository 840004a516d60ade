//! The tool service: schema validation before a tool runs, grants and the denial log, the
//! pure-tool cache, a tool panicking mid-call (the caller gets an error, the tool comes
//! back), timeouts, and usage counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aios_actors::records::Records;
use aios_actors::tools::{
    CallContext, Grant, ToolCallError, ToolManifest, ToolRegistry, ToolRequirement, ToolService,
};
use aios_core::{Tool, ToolContext, ToolError, ToolSpec};
use aios_supervisor::snapshot::{SledStore, Snapshots};
use aios_supervisor::{Strategy, SupervisorSpec, TreeEnv, start_root};
use serde_json::{Value, json};

struct Echo {
    calls: AtomicU64,
}

#[async_trait::async_trait]
impl Tool for Echo {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "echo".into(),
            description: "Echoes.".into(),
            parameters: json!({"type": "object"}),
        }
    }

    async fn call(&self, args: Value, _: &ToolContext) -> Result<Value, ToolError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if args["panic"] == true {
            panic!("asked to panic");
        }
        if args["sleep_ms"].as_u64().is_some() {
            tokio::time::sleep(Duration::from_millis(
                args["sleep_ms"].as_u64().unwrap_or(0),
            ))
            .await;
        }
        if args["fail"] == true {
            return Err("it failed".into());
        }
        Ok(json!({"echo": args["msg"]}))
    }
}

fn manifest(name: &str, pure: bool) -> ToolManifest {
    ToolManifest::from_toml(&format!(
        r#"
name = "{name}"
version = "1.0.0"
description = "Echoes."
timeout = "300ms"
pure = {pure}
input_schema = {{ type = "object", properties = {{ msg = {{ type = "string" }}, panic = {{ type = "boolean" }}, fail = {{ type = "boolean" }}, sleep_ms = {{ type = "integer" }} }}, required = ["msg"] }}
output_schema = {{ type = "object", required = ["echo"] }}
"#
    ))
    .expect("manifest")
}

fn ctx(agent: &str) -> CallContext {
    CallContext {
        agent: agent.into(),
        role: "executor".into(),
        tenant: "acme".into(),
        ..CallContext::default()
    }
}

#[tokio::test]
async fn validation_grants_cache_crashes_timeouts_and_usage() {
    let snapshots = Snapshots::new(Arc::new(SledStore::temporary().expect("store")));
    let root = start_root(
        SupervisorSpec::new("root", Strategy::OneForOne),
        TreeEnv::new(Some(snapshots.clone())),
    )
    .await
    .expect("root");
    let tools_sup = root
        .supervisor()
        .start_supervisor(SupervisorSpec::dynamic("tools").intensity(20, Duration::from_secs(10)))
        .await
        .expect("tools supervisor");
    let registry = ToolRegistry::open(Records::new(snapshots))
        .await
        .expect("registry");
    let service = ToolService::open(registry, tools_sup)
        .await
        .expect("service");
    let echo = Arc::new(Echo {
        calls: AtomicU64::new(0),
    });
    service
        .install(manifest("echo", true), echo.clone())
        .await
        .expect("install echo");
    service
        .install(manifest("risky", false), echo.clone())
        .await
        .expect("install risky");
    service
        .grant(Grant {
            agent: Some("alice".into()),
            tools: vec!["*".into()],
            ..Grant::default()
        })
        .await
        .expect("grant");
    let echo_req = ToolRequirement::parse("echo@^1").expect("req");
    let risky = ToolRequirement::parse("risky").expect("req");

    // Valid call, then the same call served from the cache (the tool ran once).
    let out = service
        .call(&echo_req, json!({"msg": "hi"}), &ctx("alice"))
        .await
        .expect("call");
    assert_eq!(out, json!({"echo": "hi"}));
    service
        .call(&echo_req, json!({"msg": "hi"}), &ctx("alice"))
        .await
        .expect("cached");
    assert_eq!(echo.calls.load(Ordering::SeqCst), 1);

    // Bad arguments never reach the tool and name the path.
    match service
        .call(&echo_req, json!({"msg": 5}), &ctx("alice"))
        .await
    {
        Err(ToolCallError::InvalidArguments { violations, .. }) => {
            assert!(
                violations.0.iter().any(|v| v.path == "/msg"),
                "{violations:?}"
            );
        }
        other => panic!("expected invalid arguments, got {other:?}"),
    }
    assert_eq!(echo.calls.load(Ordering::SeqCst), 1);

    // No grant: refused with the reason, and logged.
    assert!(matches!(
        service
            .call(&echo_req, json!({"msg": "x"}), &ctx("mallory"))
            .await,
        Err(ToolCallError::Denied { .. })
    ));
    assert_eq!(service.denials().len(), 1);
    assert_eq!(service.denials()[0].agent, "mallory");

    // A panic mid-call: the caller gets an error, the host restarts and serves again.
    assert!(matches!(
        service
            .call(&risky, json!({"msg": "x", "panic": true}), &ctx("alice"))
            .await,
        Err(ToolCallError::Crashed { .. })
    ));
    service
        .wait_host("risky@1.0.0", 2, Duration::from_secs(10))
        .await
        .expect("restarted");
    assert_eq!(
        service
            .call(&risky, json!({"msg": "back"}), &ctx("alice"))
            .await
            .expect("after restart"),
        json!({"echo": "back"})
    );

    // Failures and timeouts are typed.
    assert!(matches!(
        service.call(&risky, json!({"msg": "x", "fail": true}), &ctx("alice")).await,
        Err(ToolCallError::Failed { message, .. }) if message == "it failed"
    ));
    assert!(matches!(
        service
            .call(&risky, json!({"msg": "x", "sleep_ms": 700}), &ctx("alice"))
            .await,
        Err(ToolCallError::Timeout { after_ms: 300, .. })
    ));
    assert!(matches!(
        service
            .call(
                &ToolRequirement::parse("echo@^2").expect("req"),
                json!({"msg": "x"}),
                &ctx("alice")
            )
            .await,
        Err(ToolCallError::NotFound { .. })
    ));

    // Uninstalling stops the version: it is no longer found.
    service
        .uninstall("risky", &semver::Version::new(1, 0, 0))
        .await
        .expect("uninstall");
    assert!(matches!(
        service
            .call(&risky, json!({"msg": "x"}), &ctx("alice"))
            .await,
        Err(ToolCallError::NotFound { .. })
    ));

    let usage = service.usage();
    let echo_use = &usage[&("echo@1.0.0".to_string(), "alice".to_string())];
    assert_eq!(
        (echo_use.calls, echo_use.cache_hits, echo_use.errors),
        (3, 1, 1)
    );
    let risky_use = &usage[&("risky@1.0.0".to_string(), "alice".to_string())];
    assert_eq!((risky_use.calls, risky_use.errors), (4, 3));
    root.shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn built_in_tools_files_web_fetch_memory_and_examples() {
    use aios_actors::memory::{HashEmbedder, MemoryConfig, MemoryStore};
    use aios_actors::tools::builtin::{Files, MemoryTool, WebFetch};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().expect("dir");
    let snapshots = Snapshots::new(Arc::new(SledStore::temporary().expect("store")));
    let root = start_root(
        SupervisorSpec::new("root", Strategy::OneForOne),
        TreeEnv::new(Some(snapshots.clone())),
    )
    .await
    .expect("root");
    let tools_sup = root
        .supervisor()
        .start_supervisor(SupervisorSpec::dynamic("tools"))
        .await
        .expect("tools");
    let memory_sup = root
        .supervisor()
        .start_supervisor(SupervisorSpec::dynamic("memory"))
        .await
        .expect("memory");
    let records = Records::new(snapshots);
    let memory = MemoryStore::open(
        memory_sup,
        records.clone(),
        Arc::new(HashEmbedder::default()),
        MemoryConfig::default(),
    )
    .await
    .expect("memory");
    let service = ToolService::open(
        ToolRegistry::open(records).await.expect("registry"),
        tools_sup,
    )
    .await
    .expect("service");

    // A tiny HTTP server on 127.0.0.1.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let response = if buf[..n].starts_with(b"GET /redirect") {
                // Off the allow-list (which names 127.0.0.1:<port>, not localhost).
                format!(
                    "HTTP/1.1 302 Found\r\nlocation: http://localhost:{port}/x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
            } else {
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello".to_string()
            };
            let _ = s.write_all(response.as_bytes()).await;
        }
    });
    service
        .install(
            WebFetch::manifest(),
            Arc::new(WebFetch::new(vec![format!("127.0.0.1:{port}")])),
        )
        .await
        .expect("web_fetch");
    service
        .install(
            Files::manifest(),
            Arc::new(Files::new(dir.path().join("sandbox")).expect("sandbox")),
        )
        .await
        .expect("files");
    let (save, search) = MemoryTool::pair(memory, None);
    let (save_m, search_m) = MemoryTool::manifests();
    service.install(save_m, save).await.expect("memory_save");
    service
        .install(search_m, search)
        .await
        .expect("memory_search");
    service
        .grant(Grant {
            role: Some("executor".into()),
            tools: vec!["*".into()],
            ..Grant::default()
        })
        .await
        .expect("grant");
    let r = |s: &str| ToolRequirement::parse(s).expect("req");
    let me = ctx("bob");

    let page = service
        .call(
            &r("web_fetch"),
            json!({"url": format!("http://127.0.0.1:{port}/x")}),
            &me,
        )
        .await
        .expect("allowed host");
    assert_eq!(page["status"], 200);
    assert_eq!(page["body"], "hello");
    assert!(matches!(
        service.call(&r("web_fetch"), json!({"url": "http://localhost:1/"}), &me).await,
        Err(ToolCallError::Failed { message, .. }) if message.contains("allow-list")
    ));
    // A redirect off the allow-list is not followed.
    assert!(matches!(
        service
            .call(
                &r("web_fetch"),
                json!({"url": format!("http://127.0.0.1:{port}/redirect")}),
                &me
            )
            .await,
        Err(ToolCallError::Failed { .. })
    ));

    service
        .call(
            &r("files"),
            json!({"op": "write", "path": "a/b.txt", "content": "data"}),
            &me,
        )
        .await
        .expect("write");
    assert_eq!(
        service
            .call(&r("files"), json!({"op": "read", "path": "a/b.txt"}), &me)
            .await
            .expect("read")["content"],
        "data"
    );
    assert!(matches!(
        service.call(&r("files"), json!({"op": "read", "path": "../../etc/passwd"}), &me).await,
        Err(ToolCallError::Failed { message, .. }) if message.contains("relative")
    ));

    service
        .call(
            &r("memory_save"),
            json!({"namespace": "notes", "text": "the deploy key lives in vault"}),
            &me,
        )
        .await
        .expect("save");
    let found = service
        .call(
            &r("memory_search"),
            json!({"namespace": "notes", "query": "where is the deploy key", "k": 1}),
            &me,
        )
        .await
        .expect("search");
    assert_eq!(found["hits"][0]["text"], "the deploy key lives in vault");
    // Another tenant's agents do not see it: namespaces are per tenant.
    let other = CallContext {
        tenant: "globex".into(),
        ..ctx("eve")
    };
    assert!(
        service
            .call(
                &r("memory_search"),
                json!({"namespace": "notes", "query": "deploy key"}),
                &other
            )
            .await
            .is_err()
    );

    // The manifest examples of the built-in `files` tool pass.
    let outcomes = service.run_examples(&r("files")).await.expect("examples");
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.passed), "{outcomes:?}");
    root.shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
}

/// Answers with its version, to tell versions apart.
struct Versioned(&'static str);

#[async_trait::async_trait]
impl Tool for Versioned {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "versioned".into(),
            description: "Answers with its version.".into(),
            parameters: json!({"type": "object"}),
        }
    }

    async fn call(&self, _: Value, _: &ToolContext) -> Result<Value, ToolError> {
        Ok(json!({"echo": self.0}))
    }
}

#[tokio::test]
async fn agents_pin_plugin_tool_versions_and_grants_are_persisted() {
    use aios_actors::agent::tools::{ToolBox, ToolContext, ToolError};
    let snapshots = Snapshots::new(Arc::new(SledStore::temporary().expect("store")));
    let root = start_root(
        SupervisorSpec::new("root", Strategy::OneForOne),
        TreeEnv::new(Some(snapshots.clone())),
    )
    .await
    .expect("root");
    let tools_sup = root
        .supervisor()
        .start_supervisor(SupervisorSpec::dynamic("tools"))
        .await
        .expect("tools supervisor");
    let service = ToolService::open(
        ToolRegistry::open(Records::new(snapshots.clone()))
            .await
            .expect("registry"),
        tools_sup.clone(),
    )
    .await
    .expect("service");
    for (version, answer) in [("1.2.0", "v1"), ("2.0.0", "v2")] {
        let mut m = manifest("lookup", false);
        m.version = semver::Version::parse(version).expect("version");
        service
            .install(m, Arc::new(Versioned(answer)))
            .await
            .expect("install");
    }
    let grant = Grant {
        tenant: Some("acme".into()),
        tools: vec!["lookup".into()],
        ..Grant::default()
    };
    service.grant(grant.clone()).await.expect("grant");
    service.grant(grant.clone()).await.expect("granted twice");
    assert_eq!(service.grants(), vec![grant.clone()], "no duplicate");
    assert!(
        service
            .grant(Grant {
                tools: vec![],
                ..Grant::default()
            })
            .await
            .is_err(),
        "a grant with no tools is refused"
    );

    let toolbox = ToolBox::default().with_plugins(service.clone());
    let tctx = ToolContext {
        tenant: "acme".into(),
        role: "executor".into(),
        ..ToolContext::default()
    };
    let call = |allowed: &'static str| {
        let toolbox = toolbox.clone();
        let tctx = tctx.clone();
        async move {
            toolbox
                .call(&[allowed.to_string()], "lookup", r#"{"msg": "x"}"#, &tctx)
                .await
        }
    };
    // Unpinned: the newest version; pinned: the newest matching version.
    assert_eq!(call("lookup").await.expect("newest"), r#"{"echo":"v2"}"#);
    assert_eq!(
        call("lookup@^1.2").await.expect("pinned"),
        r#"{"echo":"v1"}"#
    );
    assert!(matches!(
        call("lookup@^3").await,
        Err(ToolError::NotAvailable(_))
    ));
    assert_eq!(toolbox.specs(&["lookup@^1".into()]).len(), 1);
    // The pin is also what protects the version from removal.
    service.set_agent_needs(Arc::new(|| {
        vec![(
            "researcher".to_string(),
            ToolRequirement::parse("lookup@^1.2").expect("req"),
        )]
    }));
    let refused = service
        .uninstall("lookup", &semver::Version::new(1, 2, 0))
        .await
        .expect_err("still needed");
    assert!(refused.to_string().contains("researcher"), "{refused}");
    service
        .uninstall("lookup", &semver::Version::new(2, 0, 0))
        .await
        .expect("2.0.0 is not needed");

    // Grants come back when the service is opened again on the same store.
    let again = ToolService::open(
        ToolRegistry::open(Records::new(snapshots))
            .await
            .expect("registry"),
        tools_sup,
    )
    .await
    .expect("service");
    assert_eq!(again.grants(), vec![grant.clone()]);
    assert!(again.revoke(&grant).await.expect("revoke"));
    assert!(again.grants().is_empty());
    root.shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
}
