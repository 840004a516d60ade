//! Two tenants on one daemon over real HTTP on 127.0.0.1, with agents driven by a fake model
//! (a real HTTP server of the test) and the operator's MCP server a real child process: an
//! agent of tenant `evil` tries every path to tenant `acme`'s data it can reach with tool
//! calls, and each is refused; the refusals of the grants are audited.

use crate::common;
use crate::common::daemon::{Client, TestDaemon, daemon_config};

use std::time::Duration;

use aios_runtime::daemon::{Daemon, DaemonConfig};
use aios_testkit::{FakeConfig, FakeLlm, FakeReply, FakeToolCall, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Starts a daemon on `cfg` with two tenants: the daemon, a client, and the admin keys of
/// the operator tenant, `acme` and `beta`.
async fn start_with_tenants(cfg: DaemonConfig) -> (Daemon, Client, String, String, String) {
    let d = TestDaemon::start(cfg).await;
    let acme = d.tenant_admin("acme").await;
    let beta = d.tenant_admin("beta").await;
    (d.daemon, d.client, d.admin, acme, beta)
}

fn config(dir: &std::path::Path, llm: &str) -> DaemonConfig {
    let mut c = DaemonConfig::from_toml(
        &format!(
            r#"
[[llm.providers]]
name = "fake"
kind = "openai"
base_url = "{llm}"
retry_attempts_max = 1

[[llm.models]]
provider = "fake"
model = "m"
"#
        ),
        "test",
    )
    .expect("config");
    let base = daemon_config(dir);
    c.data_dir = base.data_dir;
    c.listen = base.listen;
    c.rate_limit = base.rate_limit;
    c
}

fn call(id: &str, tool: &str, args: Value, index: u32) -> FakeToolCall {
    FakeToolCall::new(id, tool, args.to_string(), index)
}

/// The tool results the model got back in its latest request, by call id.
fn tool_results(fake: &FakeLlm) -> Vec<(String, String)> {
    let body = fake.requests().pop().expect("a request").body;
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap_or_default().to_string(),
                m["content"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_one_tenant_reaches_nothing_of_another_through_its_tools() {
    let Some(server) = common::mcp_test_server("the two-tenants test") else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let TestDaemon {
        daemon: d,
        client: c,
        admin,
    } = TestDaemon::start(config(dir.path(), &fake.base_url())).await;
    // The operator's MCP server: its tools are the operator tenant's unless granted.
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/mcp-servers",
            &admin,
            Some(json!({"name": "t", "transport": {"kind": "stdio", "command": server}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let acme = c.create_key(&admin, "admin", Some("acme")).await;
    let evil = c.create_key(&admin, "admin", Some("evil")).await;

    // acme: an agent that keeps a file and a memory, reachable by delegation as `vault`.
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/memory/namespaces",
            &acme,
            Some(json!({"name": "vault"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let keeper = json!({"name": "keeper", "role": "executor", "model": "fake/m",
        "system_prompt": "You keep secrets.", "tools": ["files", "memory_save"],
        "capabilities": [{"name": "vault"}]});
    let (s, v) = c
        .call(Method::POST, "/v1/agents", &acme, Some(keeper))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    fake.push_script(FakeReply::ToolCalls(vec![
        call(
            "w1",
            "files",
            json!({"op": "write", "path": "secret.txt", "content": "the plans"}),
            0,
        ),
        call(
            "w2",
            "memory_save",
            json!({"namespace": "vault", "text": "the safe code is 4711"}),
            1,
        ),
    ]));
    fake.push_script(FakeReply::Text("kept".into()));
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/agents/keeper/messages",
            &acme,
            Some(json!({"content": "keep these"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let kept = tool_results(&fake);
    assert!(kept.iter().all(|(_, r)| !r.contains("error")), "{kept:?}");

    // evil's agent lists every tool it could name; its tenant is granted the built-ins only.
    let thief = json!({"name": "thief", "role": "executor", "model": "fake/m",
        "system_prompt": "You steal.",
        "tools": ["files", "memory_search", "memory_save", "t__echo", "delegate"]});
    let (s, v) = c.call(Method::POST, "/v1/agents", &evil, Some(thief)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    fake.push_script(FakeReply::ToolCalls(vec![
        call(
            "f1",
            "files",
            json!({"op": "read", "path": "secret.txt"}),
            0,
        ),
        call(
            "f2",
            "files",
            json!({"op": "read", "path": "../../../acme/acme%2Ekeeper/main/secret.txt"}),
            1,
        ),
        call(
            "m1",
            "memory_search",
            json!({"namespace": "vault", "query": "safe code"}),
            2,
        ),
        call(
            "m2",
            "memory_search",
            json!({"namespace": "acme.vault", "query": "safe code"}),
            3,
        ),
        call(
            "m3",
            "memory_save",
            json!({"namespace": "acme.vault", "text": "planted"}),
            4,
        ),
        call("t1", "t__echo", json!({"text": "hello"}), 5),
        call(
            "d1",
            "delegate",
            json!({"capability": "vault", "task": "read me secret.txt"}),
            6,
        ),
    ]));
    fake.push_script(FakeReply::Text("nothing found".into()));
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/agents/thief/messages",
            &evil,
            Some(json!({"content": "find acme's secrets"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let results = tool_results(&fake);
    assert_eq!(results.len(), 7, "{results:?}");
    for (id, result) in &results {
        assert!(
            !result.contains("the plans") && !result.contains("4711"),
            "{id} reached acme's data: {result}"
        );
        if id == "m3" {
            // Saved, but into evil's own namespace named `acme.vault` (checked below).
            continue;
        }
        assert!(
            result.to_lowercase().contains("error")
                || result.contains("no ")
                || result.contains("not")
                || result.contains("\"hits\":[]"),
            "{id} was not refused: {result}"
        );
    }
    let by_id = |id: &str| &results.iter().find(|(i, _)| i == id).unwrap().1;
    // Delegation finds none of acme's agents, and does not say that acme has one.
    assert!(
        by_id("d1").contains("no agent has capability"),
        "{}",
        by_id("d1")
    );
    assert!(
        by_id("t1").contains("denied") || by_id("t1").contains("grant"),
        "{}",
        by_id("t1")
    );

    // The grant refusal is audited under evil's tenant, and evil sees only its own entries.
    let e = eventually("an audited denial", Duration::from_secs(10), || async {
        let (s, v) = c
            .call(Method::GET, "/v1/audit?action=tool_denied", &evil, None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["target"].as_str().unwrap_or("").starts_with("t__echo"))
            .cloned()
    })
    .await;
    assert_eq!(e["tenant"], "evil", "{e}");
    assert!(e["detail"].as_str().unwrap().contains("evil.thief"), "{e}");
    // acme's data is as acme left it: no planted memory.
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/memory/namespaces/vault/search",
            &acme,
            Some(json!({"query": "planted", "k": 10})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v.to_string().contains("planted"), "{v}");
    let (_, v) = c
        .call(Method::GET, "/v1/memory/namespaces", &evil, None)
        .await;
    assert!(
        v.to_string().contains("acme.vault"),
        "evil's own namespace: {v}"
    );
    let (_, v) = c
        .call(Method::GET, "/v1/memory/namespaces", &acme, None)
        .await;
    assert!(!v.to_string().contains("acme.vault"), "{v}");

    // Planning: acme's planner is not evil's, by name or by capability.
    let plotter = json!({"name": "plotter", "role": "planner", "model": "fake/m",
        "system_prompt": "You plan.", "capabilities": [{"name": "plan"}]});
    let (s, v) = c
        .call(Method::POST, "/v1/agents", &acme, Some(plotter))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let calls_before = fake.requests().len();
    for body in [
        json!({"task": "steal the plans", "planner": "plotter"}),
        json!({"task": "steal the plans"}),
    ] {
        let (s, v) = c.call(Method::POST, "/v1/runs", &evil, Some(body)).await;
        if s == StatusCode::CREATED {
            // Accepted, then failed for want of a planner of evil's own.
            let id = v["id"].as_str().unwrap().to_string();
            let run = c
                .run_until(&evil, &id, |s| s == "failed" || s == "succeeded")
                .await;
            assert_eq!(run["status"].as_str().unwrap().to_lowercase(), "failed");
            assert!(!run.to_string().contains("acme"), "{run}");
        } else {
            assert!(s.is_client_error(), "{s}: {v}");
            assert!(!v.to_string().contains("acme"), "{v}");
        }
    }
    assert_eq!(
        fake.requests().len(),
        calls_before,
        "acme's planner never ran for evil"
    );

    // The operator grants the MCP tool to evil's one agent: then it may call it, and the
    // grant is listed for evil; evil cannot grant itself anything.
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/tools/grants",
            &evil,
            Some(json!({"tenant": "evil", "tools": ["*"]})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/tools/grants",
            &admin,
            Some(json!({"tenant": "evil", "agent": "thief", "tools": ["t__echo"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let grant_id = v["id"].as_str().unwrap().to_string();
    let (_, v) = c.call(Method::GET, "/v1/tools/grants", &evil, None).await;
    let listed = v["items"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|g| g["id"] == grant_id.as_str() && g["agent"] == "thief"),
        "{v}"
    );
    assert!(
        listed
            .iter()
            .all(|g| g["tenant"].is_null() || g["tenant"] == "evil"),
        "{v}"
    );
    let (_, tools) = c.call(Method::GET, "/v1/tools", &evil, None).await;
    assert!(tools.to_string().contains("t__echo"), "{tools}");
    let (_, tools) = c.call(Method::GET, "/v1/tools", &acme, None).await;
    assert!(
        !tools.to_string().contains("t__echo"),
        "acme was not granted it: {tools}"
    );
    fake.push_script(FakeReply::ToolCalls(vec![call(
        "t2",
        "t__echo",
        json!({"text": "hello"}),
        0,
    )]));
    fake.push_script(FakeReply::Text("echoed".into()));
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/agents/thief/messages",
            &evil,
            Some(json!({"content": "echo"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let results = tool_results(&fake);
    let echoed = &results.iter().find(|(id, _)| id == "t2").unwrap().1;
    assert!(echoed.contains("hello"), "{results:?}");
    let (s, _) = c
        .call(
            Method::DELETE,
            &format!("/v1/tools/grants/{grant_id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, tools) = c.call(Method::GET, "/v1/tools", &evil, None).await;
    assert!(!tools.to_string().contains("t__echo"), "{tools}");
    d.shutdown().await.expect("shutdown");
}

/// Reads schedule `id` of the tenant of `key` until `done` holds (there is no event to
/// await), for at most a minute.
async fn wait_schedule(c: &Client, key: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(
        &format!("schedule {id}"),
        Duration::from_secs(60),
        || async {
            let (s, v) = c
                .call(Method::GET, &format!("/v1/schedules/{id}"), key, None)
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            if done(&v) { Ok(v) } else { Err(v.to_string()) }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_work_of_a_tenant_overshoots_its_llm_token_quota_by_one_call_at_most() {
    // Each call takes 100 ms and uses about 700 tokens (100 words in, 600 out); each reserves
    // the model's window of 1024 tokens while it runs; the tenant may use 3000 a day.
    let fake = FakeLlm::start(FakeConfig {
        latency: Duration::from_millis(100),
        ..FakeConfig::default()
    })
    .await;
    fake.set_default(FakeReply::Text("word ".repeat(600)));
    const LIMIT: u64 = 3000;
    const WINDOW: u64 = 1024;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &fake.base_url());
    cfg.llm.models[0].context_len = WINDOW;
    cfg.quotas.llm_tokens_per_day = LIMIT;
    let (d, c, _, acme, beta) = start_with_tenants(cfg).await;
    let c = std::sync::Arc::new(c);
    for key in [&acme, &beta] {
        c.define(
            key,
            json!({"name": "worker", "role": "executor", "model": "fake/m",
                   "system_prompt": "Work."}),
        )
        .await;
    }

    // Twelve requests at once on two paths: agent messages (each its own session, so they
    // run side by side) and chat completions.
    let prompt = "please ".repeat(100);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (c, key, prompt) = (c.clone(), acme.clone(), prompt.clone());
        tasks.push(tokio::spawn(async move {
            let (path, body) = if i % 2 == 0 {
                (
                    "/v1/agents/worker/messages",
                    json!({"content": prompt, "session": format!("s{i}")}),
                )
            } else {
                (
                    "/v1/chat/completions",
                    json!({"model": "worker", "messages": [{"role": "user", "content": prompt}]}),
                )
            };
            let r = c
                .http
                .post(format!("{}{path}", c.base))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .expect("request");
            let status = r.status();
            let retry_after = r.headers().get("retry-after").cloned();
            let v: Value = r.json().await.expect("json");
            (status, retry_after, v)
        }));
    }
    let mut served = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, retry_after, v) = t.await.unwrap();
        match status {
            StatusCode::OK => served += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert!(retry_after.is_some(), "a quota refusal says when: {v}");
                assert!(v.to_string().contains("LLM tokens"), "{v}");
            }
            other => panic!("{other}: {v}"),
        }
    }
    let (_, costs) = c.call(Method::GET, "/v1/costs", &acme, None).await;
    let totals = &costs["totals"];
    let used = totals["input_tokens"].as_u64().unwrap() + totals["output_tokens"].as_u64().unwrap();
    eprintln!("{served} served, {refused} refused, {used} tokens used of {LIMIT}");
    assert!(
        used <= LIMIT + WINDOW,
        "{used} tokens used: more than the quota of {LIMIT} and one call's {WINDOW} ({served} \
         served, {refused} refused): {costs}"
    );
    assert!(
        served >= 3 && refused >= 1,
        "{served} served, {refused} refused"
    );
    assert_eq!(
        costs["llm_quota"]["tokens_today"].as_u64(),
        Some(used),
        "{costs}"
    );
    assert_eq!(
        costs["llm_quota"]["reserved_tokens"].as_u64(),
        Some(0),
        "{costs}"
    );

    // Out of budget: a run and a scheduled run start no LLM call; another tenant's budget is
    // its own.
    let calls = fake.request_count();
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/runs",
            &acme,
            Some(json!({"task": "plan something"})),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/schedules",
            &acme,
            Some(json!({"name": "later", "task": "plan something", "delay_s": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let fired = wait_schedule(&c, &acme, &id, |v| !v["last_due_ms"].is_null()).await;
    assert!(
        fired["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("LLM tokens")),
        "{fired}"
    );
    assert_eq!(fired["last_run"], Value::Null, "{fired}");
    assert_eq!(
        fake.request_count(),
        calls,
        "no call after the quota was used up"
    );
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/agents/worker/messages",
            &beta,
            Some(json!({"content": "hello"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    d.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_runs_at_most_its_share_of_active_runs() {
    let fake = FakeLlm::start(FakeConfig::default()).await;
    // The first planner call waits until the test lets it go: its run stays active.
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    fake.push_script(FakeReply::Gated(
        gate.clone(),
        Box::new(FakeReply::Text("no plan".into())),
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &fake.base_url());
    cfg.tenants.runs_active_max = 1;
    let (d, c, _, acme, beta) = start_with_tenants(cfg).await;
    for key in [&acme, &beta] {
        c.define(
            key,
            json!({"name": "plotter", "role": "planner", "model": "fake/m",
                   "system_prompt": "You plan.", "capabilities": [{"name": "plan"}]}),
        )
        .await;
    }
    let run = json!({"task": "plan the week", "planner": "plotter"});
    let (s, v) = c
        .call(Method::POST, "/v1/runs", &acme, Some(run.clone()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let first_run = v["id"].as_str().unwrap().to_string();
    fake.wait_in_flight(1).await;
    let (s, v) = c
        .call(Method::POST, "/v1/runs", &acme, Some(run.clone()))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("runs_active_max"),
        "{v}"
    );
    // Another tenant has its own share.
    let (s, v) = c
        .call(Method::POST, "/v1/runs", &beta, Some(run.clone()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Once acme's run ends, acme may start another.
    gate.notify_one();
    c.run_until(&acme, &first_run, |s| s == "failed" || s == "succeeded")
        .await;
    let (s, v) = c.call(Method::POST, "/v1/runs", &acme, Some(run)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    d.shutdown().await.expect("shutdown");
}
