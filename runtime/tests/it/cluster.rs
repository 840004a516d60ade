//! `aiosd` processes sharing one PostgreSQL store: a node killed with SIGKILL is taken over by
//! another, which resumes its agents from their last snapshots (conversation included) once
//! the dead node's leases lapse; a node paused with SIGSTOP past its lease and resumed with
//! SIGCONT does not act for the agent another node took over, and cannot overwrite its state;
//! a node cut off from the database by a TCP proxy reports it in `/readyz`, loses its agent
//! to a node that can still reach the database, and does not act for it once reconnected.
//!
//! The server is `AIOS_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! without one these tests say so loudly and pass, except under `CI=true` (`.ci/run` makes sure
//! PostgreSQL is up).

use crate::common;

use std::time::{Duration, Instant};

use crate::common::{Aiosd, Proxy, define, last_prompt, namespace, pg_url, say};
use aios_testkit::{FakeConfig, FakeLlm, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// One node: `aiosd` on its own data directory, on the shared store at `pg` (namespace `ns`,
/// 1 s leases), with the fake model at `llm`.
fn node(name: &str, ns: &str, llm: &str, pg: &str) -> Aiosd {
    Aiosd::start(name, &common::shared_store_config(name, ns, llm, pg), &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_agents_resume_on_another_node_with_their_conversation() {
    let Some((ns, store)) = namespace("failover").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();

    let pg = pg_url();
    let a = node("a", &ns, &llm, &pg);
    define(&a, "kept").await;
    let (s, v) = say(&a, "kept", "the word is kiwi").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(a.get("/v1/status").await.0, StatusCode::OK);

    // Node a dies holding the agent's lease. Node b, on its own data directory, sees the
    // agent's definition at once and resumes its conversation once a's lease lapses.
    drop(a); // SIGKILL
    let killed = Instant::now();
    let b = node("b", &ns, &llm, &pg);
    let (s, v) = b.get("/v1/agents/kept").await;
    assert_eq!(s, StatusCode::OK, "definitions are shared: {v}");
    let (s, v) = say(&b, "kept", "which word?").await;
    let resumed = killed.elapsed();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        last_prompt(&fake),
        ["the word is kiwi", "which word?"],
        "the conversation carried over"
    );
    eprintln!("agent answered on node b {resumed:?} after node a was killed (lease TTL 1 s)");
    // b's own audit chain verifies (each node appends to its own on a shared store).
    let (s, v) = b.get("/v1/audit/verify").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["ok"], true, "{v}");
    drop(b);
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_neither_acts_nor_overwrites() {
    let Some((ns, store)) = namespace("paused").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    let pg = pg_url();
    let a = node("a", &ns, &llm, &pg);
    let b = node("b", &ns, &llm, &pg);
    define(&a, "solo").await;
    // b follows the definitions a writes (it re-reads them every 2 s).
    await_status(&b, "/v1/agents/solo", StatusCode::OK).await;
    let (s, v) = say(&a, "solo", "m1").await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // a is paused with the agent active and its lease held; b takes the agent over.
    a.signal("-STOP");
    let (s, v) = say(&b, "solo", "m2").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(last_prompt(&fake), ["m1", "m2"]);

    // a resumes, still holding the agent in memory. Asked again, it must not run it: its
    // lease lapsed, so it passivates its instance and finds the agent active on b.
    a.signal("-CONT");
    let before = fake.request_count();
    let (s, v) = say(&a, "solo", "m3").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let detail = v["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("active on node b#"), "{v}");
    assert_eq!(
        fake.request_count(),
        before,
        "the paused node called the model for an agent it no longer owns"
    );
    // Whatever a wrote on its way out was refused: b's conversation is intact.
    let (s, v) = say(&b, "solo", "m4").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(last_prompt(&fake), ["m1", "m2", "m4"]);
    drop((a, b));
    store.drop_tables().await.unwrap();
}

/// `host:port` of a `postgres://user@host:port/db` URL.
fn pg_host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split(['/', '?']).next().unwrap();
    if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    }
}

/// Polls `path` on `node` until it answers `want` (readiness follows a background check).
async fn await_status(node: &Aiosd, path: &str, want: StatusCode) -> Value {
    eventually(
        &format!("{path} to answer {want}"),
        Duration::from_secs(15),
        || async {
            let (s, v) = node.get(path).await;
            if s == want {
                Ok(v)
            } else {
                Err(format!("{s}: {v}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_database_loses_its_agent_and_does_not_act_for_it() {
    let Some((ns, store)) = namespace("partition").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    let target = pg_host_port(&pg_url());
    let proxy = Proxy::start(target.clone()).await;
    let via_proxy = pg_url().replacen(&target, &proxy.addr.to_string(), 1);
    let a = node("a", &ns, &llm, &via_proxy);
    let b = node("b", &ns, &llm, &pg_url());
    define(&a, "cut").await;
    await_status(&b, "/v1/agents/cut", StatusCode::OK).await;
    let (s, v) = say(&a, "cut", "m1").await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // a loses the database; b, which still reaches it, takes the agent over.
    proxy.cut();
    let (s, v) = say(&b, "cut", "m2").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(last_prompt(&fake), ["m1", "m2"]);
    let v = await_status(&a, "/readyz", StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("snapshot store"),
        "{v}"
    );

    // Cut off, a refuses to run the agent (its lease lapsed by its own clock).
    let before = fake.request_count();
    let (s, v) = say(&a, "cut", "m3").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    // Reconnected, a is ready again, and finds the agent active on b.
    proxy.heal();
    await_status(&a, "/readyz", StatusCode::OK).await;
    let (s, v) = say(&a, "cut", "m5").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("active on node b#"),
        "{v}"
    );
    assert_eq!(
        fake.request_count(),
        before,
        "a called the model for b's agent"
    );
    let (s, v) = say(&b, "cut", "m4").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(last_prompt(&fake), ["m1", "m2", "m4"]);
    drop((a, b));
    store.drop_tables().await.unwrap();
}

/// The status `node` answers to `GET /v1/agents` with `key`.
async fn status_with(node: &Aiosd, key: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{}/v1/agents", node.url))
        .bearer_auth(key)
        .send()
        .await
        .expect("request")
        .status()
}

/// Polls until `node` answers `want` to `key` (keys are re-read every 2 s).
async fn await_key_status(node: &Aiosd, key: &str, want: StatusCode) {
    eventually(
        &format!("the key to get {want} on the other node"),
        Duration::from_secs(15),
        || async {
            let got = status_with(node, key).await;
            if got == want {
                Ok(())
            } else {
                Err(format!("the key gets {got}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_or_revoked_on_one_node_takes_effect_on_the_others() {
    let Some((ns, store)) = namespace("keys").await else {
        return;
    };
    let pg = pg_url();
    let a = node("a", &ns, "http://127.0.0.1:9", &pg);
    let b = node("b", &ns, "http://127.0.0.1:9", &pg);
    let (s, v) = a
        .post("/v1/keys", json!({"role": "viewer", "name": "v"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let secret = v["secret"].as_str().unwrap().to_string();
    let id = v["key"]["id"].as_str().unwrap().to_string();
    await_key_status(&b, &secret, StatusCode::OK).await;
    let r = reqwest::Client::new()
        .delete(format!("{}/v1/keys/{id}", a.url))
        .bearer_auth(common::ADMIN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(status_with(&a, &secret).await, StatusCode::UNAUTHORIZED);
    // Revoked on a: refused on b too, within the reload period.
    await_key_status(&b, &secret, StatusCode::UNAUTHORIZED).await;
    drop((a, b));
    store.drop_tables().await.unwrap();
}

/// `aiosd` on the shared store with a daily quota of `per_day` requests per tenant.
fn quota_node(name: &str, ns: &str, pg: &str, per_day: u64) -> Aiosd {
    Aiosd::start(
        name,
        &format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{pg}\"\nnamespace = \"{ns}\"\nnode = \"{name}\"\n\
             [quotas]\nrequests_per_day = {per_day}\n"
        ),
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_s_daily_request_quota_holds_across_nodes() {
    let Some((ns, store)) = namespace("quota").await else {
        return;
    };
    // Room for b's polls while a's counts reach it (a flushes every 5 s, b reads them after
    // its own flush: up to ~10 s): at most 30 polls within the deadline, plus a's 20.
    const QUOTA: u64 = 80;
    let pg = pg_url();
    let a = quota_node("a", &ns, &pg, QUOTA);
    let b = quota_node("b", &ns, &pg, QUOTA);
    let mut ok = 0;
    for _ in 0..20 {
        assert_eq!(a.get("/v1/status").await.0, StatusCode::OK);
        ok += 1;
    }
    // a flushes its counters every 5 s; b reads them back after each of its own flushes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut on_b = 0;
    loop {
        let (s, v) = b.get("/v1/costs").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        ok += 1;
        on_b += 1;
        // b's count of the tenant's requests: its own, and a's once read back.
        if v["requests_today"].as_u64().unwrap() >= 20 + on_b {
            break;
        }
        assert!(Instant::now() < deadline, "b never saw a's requests: {v}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The rest of the quota, on b; then both refuse.
    loop {
        let (s, _) = b.get("/v1/status").await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(s, StatusCode::OK);
        ok += 1;
        assert!(ok <= QUOTA, "b let through more than the tenant's quota");
    }
    assert_eq!(ok, QUOTA, "the two nodes together served exactly the quota");
    drop((a, b));
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_namespace_is_served_by_one_node_and_moves_when_it_dies() {
    let Some((ns, store)) = namespace("memory").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    let pg = pg_url();
    let a = node("a", &ns, &llm, &pg);
    let b = node("b", &ns, &llm, &pg);
    let (s, v) = a
        .post(
            "/v1/memory/namespaces",
            json!({"name": "notes", "shards": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = a
        .post(
            "/v1/memory/namespaces/notes/items",
            json!({"items": [{"text": "the launch code is 4411"}, {"text": "lunch is at noon"}]}),
        )
        .await;
    assert!(s.is_success(), "{s}: {v}");
    let search = json!({"query": "launch code", "k": 1});

    // b knows the namespace (it is in the shared store) but a serves it: b does not run a
    // second copy of its shards, which would write the same items.
    let (s, v) = b
        .post("/v1/memory/namespaces/notes/search", search.clone())
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("served by another node"),
        "{v}"
    );
    // A namespace of the same name cannot be created again on b.
    let (s, v) = b
        .post("/v1/memory/namespaces", json!({"name": "notes"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // a dies: once its lease lapses (1 s), b serves the namespace with a's items.
    drop(a); // SIGKILL
    let v = eventually(
        "b to take the namespace over",
        Duration::from_secs(30),
        || async {
            let (s, v) = b
                .post("/v1/memory/namespaces/notes/search", search.clone())
                .await;
            if s != StatusCode::OK {
                assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
            }
            (s == StatusCode::OK).then_some(v)
        },
    )
    .await;
    assert_eq!(v["hits"][0]["text"], "the launch code is 4411", "{v}");
    drop(b);
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_subscribed_on_one_node_gets_events_of_another_once() {
    let Some((ns, store)) = namespace("hooks").await else {
        return;
    };
    // The receiver: every delivery's event and id.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let tx = tx.clone();
            async move {
                let h = |n: &str| headers[n].to_str().unwrap().to_string();
                let _ = tx.send((h("x-aios-event"), h("x-aios-delivery")));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    let pg = pg_url();
    let a = node("a", &ns, &llm, &pg);
    let b = node("b", &ns, &llm, &pg);
    let (s, v) = a
        .post(
            "/v1/webhooks",
            json!({"url": hook_url, "events": ["agent.created"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // b learns the subscription within 2 s; an agent created on b is then delivered by b.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    let (event, id) = loop {
        n += 1;
        define(&b, &format!("made-on-b-{n}")).await;
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "b never delivered to a's subscription"
        );
    };
    assert_eq!(event, "agent.created");
    assert!(id.starts_with("b-"), "the delivery id names the node: {id}");
    // One delivery per event: a does not deliver b's queued events too.
    define(&a, "made-on-a").await;
    let mut ids = vec![id];
    while let Ok(Some((_, id))) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        ids.push(id);
    }
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a delivery came twice: {ids:?}");
    assert!(ids.iter().any(|i| i.starts_with("a-")), "{ids:?}");
    drop((a, b));
    store.drop_tables().await.unwrap();
}

/// The MCP server `name` as `node` lists it, when it does.
async fn mcp_server(node: &Aiosd, name: &str) -> Option<Value> {
    let (s, v) = node.get("/v1/mcp-servers").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_server_added_or_removed_on_one_node_is_followed_by_the_others() {
    let Some(server) = common::mcp_test_server("the MCP test") else {
        return;
    };
    let Some((ns, store)) = namespace("mcp").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    let pg = pg_url();
    let a = node("a", &ns, &llm, &pg);
    let b = node("b", &ns, &llm, &pg);
    let (s, v) = a
        .post(
            "/v1/mcp-servers",
            json!({"name": "t", "transport": {"kind": "stdio", "command": server}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let on_a = mcp_server(&a, "t").await.expect("listed on a");

    // b connects the server itself (its own child process) and has its tools.
    let on_b = eventually(
        "b to connect the server",
        Duration::from_secs(30),
        || async { mcp_server(&b, "t").await.filter(|m| m["connected"] == true) },
    )
    .await;
    assert_ne!(on_b["pid"], on_a["pid"], "b runs its own: {on_b} {on_a}");
    let pid_b = on_b["pid"].as_u64().expect("a pid");
    let (s, v) = b.get("/v1/tools").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v.to_string().contains("t__echo"), "{v}");

    // Removed on a: b disconnects (its child ends) and drops the tools.
    let (s, v) = a
        .send(reqwest::Method::DELETE, "/v1/mcp-servers/t", Value::Null)
        .await;
    assert!(s.is_success(), "{s}: {v}");
    eventually(
        "b to let the server go",
        Duration::from_secs(30),
        || async { mcp_server(&b, "t").await.is_none().then_some(()) },
    )
    .await;
    let (_, v) = b.get("/v1/tools").await;
    assert!(!v.to_string().contains("t__echo"), "{v}");
    eventually(
        &format!("b's server process {pid_b} to end"),
        Duration::from_secs(30),
        || async {
            let gone = !std::path::Path::new(&format!("/proc/{pid_b}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid_b}/stat"))
                    .unwrap_or_default()
                    .contains(") Z");
            gone.then_some(())
        },
    )
    .await;
    drop((a, b));
    store.drop_tables().await.unwrap();
}

/// The nodes and actions of `node`'s audit view `query`.
async fn audit_view(node: &Aiosd, query: &str) -> Vec<(String, String)> {
    let (s, v) = node.get(&format!("/v1/audit?{query}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["node"].as_str().unwrap_or("").to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_logs_of_every_node_are_read_merged_on_any_node() {
    let Some((ns, store)) = namespace("auditmerge").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    let pg = pg_url();
    let a = node("a", &ns, &llm, &pg);
    let b = node("b", &ns, &llm, &pg);
    define(&a, "from-a").await;
    define(&b, "from-b").await;
    define(&a, "again-a").await;

    // Each node appends to its own chain; either node reads both, merged by time.
    let created = |view: &[(String, String)]| -> Vec<(String, String)> {
        view.iter()
            .filter(|(_, action)| action == "POST /v1/agents")
            .cloned()
            .collect()
    };
    for reader in [&a, &b] {
        let merged = audit_view(reader, "node=*").await;
        assert_eq!(
            created(&merged),
            [
                ("a".to_string(), "POST /v1/agents".to_string()),
                ("b".to_string(), "POST /v1/agents".to_string()),
                ("a".to_string(), "POST /v1/agents".to_string()),
            ],
            "{merged:?}"
        );
    }
    // One other node's chain, and paging through the merged view.
    let of_b = audit_view(&a, "node=b").await;
    assert_eq!(created(&of_b).len(), 1, "{of_b:?}");
    let mut cursor: Option<String> = None;
    let mut paged = Vec::new();
    loop {
        let query = match &cursor {
            Some(c) => format!("/v1/audit?node=*&limit=1&cursor={c}"),
            None => "/v1/audit?node=*&limit=1".to_string(),
        };
        let (s, v) = b.get(&query).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        paged.extend(v["items"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(paged.len() < 100, "paging never ends: {paged:?}");
    }
    // Page by page, every entry once and in the same order as in one page.
    let ids = |entries: &[Value]| -> Vec<(String, u64)> {
        entries
            .iter()
            .map(|e| {
                (
                    e["node"].as_str().unwrap().to_string(),
                    e["seq"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let (s, v) = b.get("/v1/audit?node=*&limit=1000").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let full = ids(v["items"].as_array().unwrap());
    assert!(full.len() >= 3, "{full:?}");
    assert_eq!(ids(&paged), full);
    // Bad input is the caller's error.
    assert_eq!(a.get("/v1/audit?node=zz").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        a.get("/v1/audit?node=*&after=1").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        a.get("/v1/audit?node=*&cursor=a").await.0,
        StatusCode::BAD_REQUEST
    );
    drop((a, b));
    store.drop_tables().await.unwrap();
}
