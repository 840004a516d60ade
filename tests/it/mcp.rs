//! MCP servers as plugins, against the real `aios-mcp-test-server` binary: over stdio (a
//! child process the node spawns) and over streamable HTTP; the child killed with SIGKILL in
//! the middle of a call; the server reconnected after a node restart; removal refused while
//! an agent needs one of its tools.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use aios::actors::agent::{AgentDef, AgentRole};
use aios::actors::tools::{
    CallContext, Grant, McpServerConfig, ToolCallError, ToolRegistryError, ToolRequirement,
};
use aios::{Runtime, RuntimeConfig};
use serde_json::json;

const SERVER: &str = env!("CARGO_BIN_EXE_aios-mcp-test-server");
const WAIT: Duration = Duration::from_secs(20);

fn ctx() -> CallContext {
    CallContext {
        agent: "tester".into(),
        ..CallContext::default()
    }
}

fn req(text: &str) -> ToolRequirement {
    ToolRequirement::parse(text).expect("requirement")
}

async fn open(dir: &Path) -> Runtime {
    Runtime::open(RuntimeConfig::new(dir)).await.expect("open")
}

/// Waits for a file to appear (the test server writes it when a call starts).
async fn wait_for_file(path: &Path) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_server_tools_are_versioned_validated_called_and_restored_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let tools = rt.tool_service();
    let installed = tools
        .add_mcp_server(McpServerConfig::stdio("t", SERVER, vec![]))
        .await
        .expect("add the MCP server");
    let v = env!("CARGO_PKG_VERSION");
    for name in ["add", "echo", "exit", "fail", "pid", "sleep"] {
        assert!(
            installed.contains(&format!("t__{name}@{v}")),
            "{name} missing from {installed:?}"
        );
    }

    // Text results, structured results checked against the server's output schema.
    let out = tools
        .call(&req("t__echo"), json!({"text": "hello"}), &ctx())
        .await
        .expect("echo");
    assert_eq!(out, json!("hello"));
    let out = tools
        .call(
            &req(&format!("t__add@={v}")),
            json!({"a": 2, "b": 3}),
            &ctx(),
        )
        .await
        .expect("add");
    assert_eq!(out, json!({"sum": 5}));

    // Bad arguments are refused before they reach the server, with the path.
    match tools
        .call(&req("t__add"), json!({"a": "two", "b": 3}), &ctx())
        .await
    {
        Err(ToolCallError::InvalidArguments { violations, .. }) => {
            assert!(
                violations.0.iter().any(|x| x.path == "/a"),
                "{violations:?}"
            )
        }
        other => panic!("expected invalid arguments, got {other:?}"),
    }
    // A tool error of the server is a failure with its message.
    match tools.call(&req("t__fail"), json!({}), &ctx()).await {
        Err(ToolCallError::Failed { message, .. }) => {
            assert!(message.contains("on purpose"), "{message}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }

    let status = tools.mcp_servers();
    assert_eq!(status.len(), 1);
    assert!(status[0].connected && status[0].pid.is_some(), "{status:?}");
    assert_eq!(status[0].transport, "stdio");

    // Grants and usage persist with the server.
    tools
        .grant(Grant {
            agent: Some("tester".into()),
            tools: vec!["t__echo".into()],
            ..Grant::default()
        })
        .await
        .expect("grant");
    let calls_before = tools
        .usage()
        .get(&(format!("t__echo@{v}"), "tester".to_string()))
        .map(|u| u.calls)
        .unwrap_or(0);
    assert_eq!(calls_before, 1);
    let old_pid = status[0].pid;
    rt.shutdown().await.expect("shutdown");

    let rt = open(dir.path()).await;
    let tools = rt.tool_service();
    let status = tools.mcp_servers();
    assert_eq!(status.len(), 1, "{status:?}");
    assert!(status[0].connected, "{status:?}");
    assert_ne!(status[0].pid, old_pid, "a new child after the restart");
    let out = tools
        .call(&req("t__echo"), json!({"text": "again"}), &ctx())
        .await
        .expect("echo after the restart");
    assert_eq!(out, json!("again"));
    assert!(tools.grants().iter().any(|g| g.tools == ["t__echo"]));
    let usage = tools.usage();
    assert_eq!(
        usage[&(format!("t__echo@{v}"), "tester".to_string())].calls,
        2,
        "usage counted before the restart is kept"
    );
    rt.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_killed_during_a_call_fails_the_call_and_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let tools = rt.tool_service().clone();
    let mut config = McpServerConfig::stdio("k", SERVER, vec![]);
    config.timeout = Duration::from_secs(60);
    tools.add_mcp_server(config).await.expect("add");
    let pid: u32 = tools
        .call(&req("k__pid"), json!({}), &ctx())
        .await
        .expect("pid")
        .as_str()
        .expect("text")
        .parse()
        .expect("a number");
    assert_eq!(tools.mcp_servers()[0].pid, Some(pid));

    let started = dir.path().join("started");
    let in_flight = {
        let tools = tools.clone();
        let started = started.display().to_string();
        tokio::spawn(async move {
            tools
                .call(
                    &req("k__sleep"),
                    json!({"ms": 60_000, "started_file": started}),
                    &ctx(),
                )
                .await
        })
    };
    wait_for_file(&started).await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());

    // The caller gets a clear error well before the call's 60 s timeout.
    let result = tokio::time::timeout(WAIT, in_flight)
        .await
        .expect("the call in flight must not hang")
        .expect("task");
    match result {
        Err(ToolCallError::Crashed { tool, detail }) => {
            assert!(tool.starts_with("k__sleep@"), "{tool}");
            assert!(detail.contains("MCP server k"), "{detail}");
        }
        other => panic!("expected Crashed, got {other:?}"),
    }

    // The supervisor restarts the connection, which spawns a new child.
    let deadline = tokio::time::Instant::now() + WAIT;
    let new_pid = loop {
        let s = &tools.mcp_servers()[0];
        if s.connected && s.pid.is_some() && s.pid != Some(pid) {
            assert!(s.generation >= Some(2), "{s:?}");
            break s.pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not restarted: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let out = tools
        .call(&req("k__pid"), json!({}), &ctx())
        .await
        .expect("pid after the restart");
    assert_eq!(out, json!(new_pid.expect("pid").to_string()));

    // A server exiting by itself mid-call is the same case.
    match tools.call(&req("k__exit"), json!({}), &ctx()).await {
        Err(ToolCallError::Crashed { .. }) => {}
        other => panic!("expected Crashed, got {other:?}"),
    }
    rt.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_server_tools_are_called_and_removal_is_refused_while_an_agent_needs_them() {
    let mut child = std::process::Command::new(SERVER)
        .args(["--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the HTTP MCP server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("its address");
    let url = line
        .trim()
        .strip_prefix("listening ")
        .expect("listening line")
        .to_string();

    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let tools = rt.tool_service();
    tools
        .add_mcp_server(McpServerConfig::http("web", &url))
        .await
        .expect("add the HTTP server");
    let out = tools
        .call(&req("web__add"), json!({"a": 40, "b": 2}), &ctx())
        .await
        .expect("add over HTTP");
    assert_eq!(out, json!({"sum": 42}));
    assert_eq!(tools.mcp_servers()[0].transport, "http");

    // An agent pins one of its tools: the server cannot be removed.
    let mut def = AgentDef::new("user", AgentRole::Executor, "scripted/demo", "Uses tools.");
    def.tools = vec!["web__echo@^0.1".into()];
    rt.agent_system()
        .registry()
        .create(def)
        .await
        .expect("agent");
    match tools.remove_mcp_server("web").await {
        Err(ToolRegistryError::InUse { needed_by, .. }) => {
            assert!(
                needed_by.iter().any(|n| n.contains("user")),
                "{needed_by:?}"
            )
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    rt.agent_system()
        .registry()
        .delete("user")
        .await
        .expect("delete agent");
    tools.remove_mcp_server("web").await.expect("remove");
    assert!(tools.mcp_servers().is_empty());
    assert!(matches!(
        tools
            .call(&req("web__add"), json!({"a": 1, "b": 1}), &ctx())
            .await,
        Err(ToolCallError::NotFound { .. })
    ));

    // Bad configurations are refused with the field named.
    let err = tools
        .add_mcp_server(McpServerConfig::http("Web", &url))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("name"), "{err}");
    let err = tools
        .add_mcp_server(McpServerConfig::stdio(
            "gone",
            "/nonexistent/mcp-server",
            vec![],
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolRegistryError::Unavailable(_)), "{err}");
    assert!(tools.mcp_servers().is_empty());
    rt.shutdown().await.expect("shutdown");
    let _ = child.kill();
    let _ = child.wait();
}
