//! The tool service: schema validation before a tool runs, grants and the denial log, the
//! pure-tool cache, a tool panicking mid-call (the caller gets an error, the tool comes
//! back), timeouts, and usage counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aios_actors::records::Records;
use aios_actors::tools::{
    CallContext, Grant, ToolCallError, ToolImpl, ToolManifest, ToolRegistry, ToolRequirement,
    ToolService,
};
use aios_supervisor::snapshot::{SledStore, Snapshots};
use aios_supervisor::{Strategy, SupervisorSpec, TreeEnv, start_root};
use serde_json::{Value, json};

struct Echo {
    calls: AtomicU64,
}

#[async_trait::async_trait]
impl ToolImpl for Echo {
    async fn call(&self, args: Value, _: &CallContext) -> Result<Value, String> {
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
    let service = ToolService::new(registry, tools_sup);
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
    service.grant(Grant {
        agent: Some("alice".into()),
        tools: vec!["*".into()],
        ..Grant::default()
    });
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
            .call(&risky, json!({"msg": "x", "sleep_ms": 2000}), &ctx("alice"))
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
