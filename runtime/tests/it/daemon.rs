//! The daemon over real HTTP on 127.0.0.1: the authorization matrix over every route,
//! tenant isolation, problems for bad input, rate limits and quotas, the audit chain, an
//! agent answering through the API, and the `aiosd` process stopped with SIGTERM and
//! killed with SIGKILL.

use std::time::Duration;

use aios_runtime::daemon::api::routes;
use aios_runtime::daemon::{Daemon, Reach, Role};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::Aiosd;
use crate::common::daemon::{Client, daemon_config};
use aios_testkit::eventually;

/// A WebSocket to `path` on the daemon at `addr`, with `key` in the Authorization header.
async fn ws_connect(
    addr: std::net::SocketAddr,
    path: &str,
    key: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade")
        .0
}

fn concrete(path: &str) -> String {
    path.replace("{name}", "nobody")
        .replace("{ns}", "nothing")
        .replace("{id}", "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_missing_bad_revoked_expired_keys_and_insufficient_roles() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = daemon_config(dir.path());
    // Hundreds of bad credentials from 127.0.0.1 on purpose: this test's own limit (loopback
    // has no exemption).
    config.auth.failures_per_minute = 100_000;
    let (d, first) = Daemon::start(config, None).await.expect("start");
    let admin = first.expect("first start creates an admin key").secret;
    let c = Client::new(d.addr);
    let viewer = c.create_key(&admin, "viewer", None).await;
    let operator = c.create_key(&admin, "operator", None).await;
    let other_admin = c.create_key(&admin, "admin", Some("other")).await;

    let revoked = c.create_key(&admin, "admin", None).await;
    let revoked_id = revoked.split('_').nth(1).unwrap().to_string();
    let (s, _, _) = c
        .send(
            Method::DELETE,
            &format!("/v1/keys/{revoked_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let expired = c.create_key(&admin, "admin", None).await;
    let expired_id = expired.split('_').nth(1).unwrap().to_string();
    let (s, _, _) = c
        .send(
            Method::POST,
            &format!("/v1/keys/{expired_id}/rotate"),
            Some(&admin),
            Some(json!({"overlap_ms": 0})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let unknown = format!("aios_0123456789ab_{}", "A".repeat(43));

    let table = routes().into_parts().1;
    assert!(table.len() >= 25, "{} routes", table.len());
    for route in &table {
        let path = concrete(route.path);
        let m = Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
        let what = format!("{} {}", route.method, route.path);
        for (label, key) in [
            ("no key", None),
            ("malformed key", Some("not-a-key")),
            ("unknown key", Some(unknown.as_str())),
            ("revoked key", Some(revoked.as_str())),
            ("expired key", Some(expired.as_str())),
        ] {
            let (s, v, h) = c.send(m.clone(), &path, key, Some(json!({}))).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{what} with {label}: {v}");
            assert_eq!(
                h.get("content-type").unwrap(),
                "application/problem+json",
                "{what}"
            );
        }
        let below = match route.role {
            Role::Viewer => None,
            Role::Operator => Some(&viewer),
            Role::Admin => Some(&operator),
        };
        if let Some(k) = below {
            let (s, v, _) = c.send(m.clone(), &path, Some(k), Some(json!({}))).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{what} with a lower role: {v}");
        }
        // The right key gets past authorization: whatever the answer, it is not 401/403,
        // and the route exists. (The node's event stream stays open: only its status is read.)
        if route.path == "/v1/tree/events" {
            let r = c
                .http
                .get(format!("{}{path}", c.base))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{what}");
            continue;
        }
        let (s, v, _) = c
            .send(m.clone(), &path, Some(&admin), Some(json!({})))
            .await;
        assert!(
            s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
            "{what} with the admin key: {s} {v}"
        );
        assert!(
            !v["detail"].as_str().unwrap_or("").starts_with("no route"),
            "{what} is not routed"
        );
        let _ = &other_admin;
    }

    // Node-wide routes refuse other tenants even with the admin role, before anything runs.
    let node_wide: Vec<_> = table.iter().filter(|r| r.reach == Reach::Node).collect();
    assert!(node_wide.len() >= 15, "{node_wide:?}");
    for route in node_wide {
        let m = Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
        let (s, v, _) = c
            .send(
                m,
                &concrete(route.path),
                Some(&other_admin),
                Some(json!({})),
            )
            .await;
        assert_eq!(
            s,
            StatusCode::FORBIDDEN,
            "{} {}: {v}",
            route.method,
            route.path
        );
    }
    // The probes are open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (s, _, _) = c.send(Method::GET, path, None, None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
    let (_, metrics, _) = c.send(Method::GET, "/metrics", None, None).await;
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains("aios_http_requests_total"), "{text}");
    // Authentication failures are audited: the first from an address in a minute at once,
    // the rest counted into one entry when the minute is over (a minute boundary may have
    // passed during the test: at most a few entries for hundreds of failures).
    let (s, v, _) = c
        .send(
            Method::GET,
            "/v1/audit?action=auth_failed&limit=100",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let n = v["items"].as_array().unwrap().len();
    assert!(
        (1..=4).contains(&n),
        "{n} entries for hundreds of failures: {v}"
    );
    assert!(
        v["items"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("from 127.0.0.1"),
        "{v}"
    );
    d.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_limited_per_address_and_leave_small_audit_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = daemon_config(dir.path());
    config.auth.failures_per_minute = 20;
    let (d, first) = Daemon::start(config, None).await.expect("start");
    let admin = first.unwrap().secret;
    let c = Client::new(d.addr);
    let long_path = format!("/v1/agents/{}", "x".repeat(8 * 1024));
    let long_id = "r".repeat(8 * 1024);
    let mut answers = Vec::new();
    for _ in 0..300 {
        let r = c
            .http
            .get(format!("{}{long_path}", c.base))
            .bearer_auth("aios_bad")
            .header("x-request-id", &long_id)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        // The client's unsafe request id is replaced, not echoed.
        let rid = r.headers().get("x-request-id").unwrap().to_str().unwrap();
        assert!(rid.len() <= 64, "{rid}");
        answers.push((status, retry));
    }
    // 20 failures a minute from 127.0.0.1 (no loopback exemption), then 429 with Retry-After.
    let unauthorized = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::UNAUTHORIZED)
        .count();
    assert!((20..=22).contains(&unauthorized), "{unauthorized} × 401");
    let limited: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(limited.len(), 300 - unauthorized);
    assert!(
        limited
            .iter()
            .all(|(_, r)| r.is_some_and(|s| (1..=60).contains(&s)))
    );
    // A valid key from the same address still works.
    let (s, _, _) = c.send(Method::GET, "/v1/me", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    // A short id of a safe alphabet is kept.
    let r = c
        .http
        .get(format!("{}/v1/me", c.base))
        .bearer_auth(&admin)
        .header("x-request-id", "trace-42.a_b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-42.a_b");
    // 300 failures made one small entry (the rest are counted when the minute is over).
    let (s, v, _) = c
        .send(
            Method::GET,
            "/v1/audit?action=auth_failed&limit=100",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let items = v["items"].as_array().unwrap();
    assert!((1..=2).contains(&items.len()), "{v}");
    let size = serde_json::to_string(&items[0]).unwrap().len();
    assert!(size < 2048, "an entry of {size} bytes: {}", items[0]);
    assert_ne!(items[0]["request_id"], json!(long_id));
    d.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_wide_views_are_the_operator_tenants_and_metrics_name_no_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (d, first) = Daemon::start(daemon_config(dir.path()), None)
        .await
        .expect("start");
    let admin = first.unwrap().secret;
    let c = Client::new(d.addr);
    let evil = c.create_key(&admin, "admin", Some("evil")).await;
    let acme = c.create_key(&admin, "admin", Some("acme")).await;
    let (s, v, _) = c
        .send(
            Method::POST,
            "/v1/memory/namespaces",
            Some(&acme),
            Some(json!({"name": "secret-plans"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // A tenant's operator cannot undrain the node, nor read node-wide details.
    for (m, path) in [
        (Method::POST, "/v1/cluster/undrain"),
        (Method::POST, "/v1/cluster/drain"),
        (Method::GET, "/v1/cluster/nodes"),
        (Method::GET, "/v1/mcp-servers"),
        (Method::POST, "/v1/tools/files/test"),
        (Method::GET, "/v1/errors"),
    ] {
        let (s, v, _) = c.send(m, path, Some(&evil), Some(json!({}))).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
    }
    // The status a tenant sees has no node-wide counts; the operator's has.
    let (_, v, _) = c.send(Method::GET, "/v1/status", Some(&evil), None).await;
    assert!(v.get("actors").is_none() && v["running"] == true, "{v}");
    let (_, v, _) = c.send(Method::GET, "/v1/status", Some(&admin), None).await;
    assert!(v["actors"].as_u64().is_some(), "{v}");
    // /metrics names no tenant's namespace without a key; the operator asks for them.
    let metrics = |key: Option<String>, query: &'static str| {
        let c = &c;
        async move {
            let mut r = c.http.get(format!("{}/metrics{query}", c.base));
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            let r = r.send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    // The sampler writes the namespace gauge every few seconds: wait for it on the operator's
    // view (an event: the series appears).
    eventually("the namespace gauge", Duration::from_secs(30), || async {
        let (s, text) = metrics(Some(admin.clone()), "?tenants=true").await;
        assert_eq!(s, StatusCode::OK);
        text.contains("secret-plans").then_some(())
    })
    .await;
    let (s, text) = metrics(None, "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        !text.contains("secret-plans") && !text.contains("acme"),
        "{text}"
    );
    assert!(text.contains("aios_http_requests_total"), "{text}");
    let (s, _) = metrics(Some(evil.clone()), "?tenants=true").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = metrics(None, "?tenants=true").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    d.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_no_auth_serves_only_requests_addressed_to_a_loopback_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = daemon_config(dir.path());
    config.insecure_no_auth = true;
    let (d, _) = Daemon::start(config, None).await.expect("start");
    let c = Client::new(d.addr);
    let port = d.addr.port();
    for (host, want) in [
        (format!("127.0.0.1:{port}"), StatusCode::OK),
        (format!("localhost:{port}"), StatusCode::OK),
        ("[::1]:1".to_string(), StatusCode::OK),
        ("LOCALHOST".to_string(), StatusCode::OK),
        // DNS rebinding: a name that resolves to 127.0.0.1 in the attacker's zone.
        (
            format!("rebind.attacker.example:{port}"),
            StatusCode::FORBIDDEN,
        ),
        (
            "localhost.attacker.example".to_string(),
            StatusCode::FORBIDDEN,
        ),
        ("127.0.0.1.nip.io".to_string(), StatusCode::FORBIDDEN),
    ] {
        let r = c
            .http
            .get(format!("{}/v1/me", c.base))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "Host: {host}");
    }
    d.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_agents_answer_and_the_audit_chain_detects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let (d, first) = Daemon::start(daemon_config(dir.path()), None)
        .await
        .expect("start");
    let admin = first.unwrap().secret;
    let c = Client::new(d.addr);
    let acme = c.create_key(&admin, "operator", Some("acme")).await;
    let globex = c.create_key(&admin, "admin", Some("globex")).await;

    let def = json!({
        "name": "writer", "role": "executor", "model": "scripted/demo",
        "system_prompt": "You write.", "tools": ["calculator"]
    });
    let (s, v, _) = c
        .send(Method::POST, "/v1/agents", Some(&acme), Some(def.clone()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "writer");
    let (s, v, _) = c
        .send(
            Method::POST,
            "/v1/agents/writer/messages",
            Some(&acme),
            Some(json!({"content": "hello there"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["text"].as_str().unwrap().contains("[scripted]"), "{v}");

    // Another tenant sees nothing of it and can use the same name.
    let (_, v, _) = c.send(Method::GET, "/v1/agents", Some(&globex), None).await;
    assert_eq!(v["items"], json!([]), "{v}");
    let (s, _, _) = c
        .send(Method::GET, "/v1/agents/writer", Some(&globex), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = c
        .send(Method::DELETE, "/v1/agents/writer", Some(&globex), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v, _) = c
        .send(Method::POST, "/v1/agents", Some(&globex), Some(def))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, v, _) = c.send(Method::GET, "/v1/agents", Some(&acme), None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);

    // Memory too.
    let (s, v, _) = c
        .send(
            Method::POST,
            "/v1/memory/namespaces",
            Some(&acme),
            Some(json!({"name": "kb"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v, _) = c
        .send(
            Method::POST,
            "/v1/memory/namespaces/kb/items",
            Some(&acme),
            Some(json!({"items": [{"text": "the wifi password rotates on mondays"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v, _) = c
        .send(
            Method::POST,
            "/v1/memory/namespaces/kb/search",
            Some(&acme),
            Some(json!({"query": "wifi password", "k": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["hits"].as_array().unwrap().len(), 1, "{v}");
    let (s, _, _) = c
        .send(
            Method::POST,
            "/v1/memory/namespaces/kb/search",
            Some(&globex),
            Some(json!({"query": "wifi password", "k": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // An agent's memory namespace is its tenant's, named as the memory API names it: naming
    // another tenant's full name only names a namespace of one's own.
    let mut reader = json!({"name": "reader", "role": "executor", "model": "scripted/demo",
        "system_prompt": "You read.", "memory_namespace": "kb"});
    let (s, v, _) = c
        .send(
            Method::POST,
            "/v1/agents",
            Some(&acme),
            Some(reader.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["memory_namespace"], "kb", "{v}");
    reader["memory_namespace"] = json!("acme.kb");
    let (s, v, _) = c
        .send(
            Method::POST,
            "/v1/agents",
            Some(&globex),
            Some(reader.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["memory_namespace"], "acme.kb",
        "globex's own `acme.kb`: {v}"
    );
    reader["memory_namespace"] = json!("no spaces");
    let (s, v, _) = c
        .send(
            Method::PUT,
            "/v1/agents/reader",
            Some(&globex),
            Some(reader),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .starts_with("memory_namespace"),
        "{v}"
    );
    // Keys and the audit log are per tenant as well.
    let (_, v, _) = c.send(Method::GET, "/v1/keys", Some(&globex), None).await;
    assert_eq!(
        v["items"].as_array().unwrap().len(),
        1,
        "only its own key: {v}"
    );
    let (_, v, _) = c.send(Method::GET, "/v1/audit", Some(&globex), None).await;
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant"] == "globex"),
        "{v}"
    );
    assert!(!v["items"].as_array().unwrap().is_empty());

    // The chain verifies; a changed entry is found.
    let (s, v, _) = c
        .send(Method::GET, "/v1/audit/verify", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["ok"], true, "{v}");
    let audit = d.state().audit.clone();
    let (entries, _) = audit
        .query(&aios_runtime::daemon::audit::AuditQuery::default())
        .await
        .unwrap();
    let mut changed = entries[2].clone();
    changed.outcome = "ok-but-edited".into();
    audit.tamper(&changed).await.unwrap();
    let (_, v, _) = c
        .send(Method::GET, "/v1/audit/verify", Some(&admin), None)
        .await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["broken_at"], entries[2].seq, "{v}");
    d.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problem_json_4xx_and_limits_answer_429() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path());
    cfg.body_limit_bytes = 4096;
    cfg.rate_limit.requests_per_s = 1;
    cfg.rate_limit.burst = 30;
    cfg.quotas.requests_per_day = 40;
    let (d, first) = Daemon::start(cfg.clone(), None).await.expect("start");
    let admin = first.unwrap().secret;
    let c = Client::new(d.addr);
    let raw = |body: &'static str, ctype: &'static str| {
        c.http
            .post(format!("{}/v1/agents", c.base))
            .bearer_auth(&admin)
            .header("content-type", ctype)
            .body(body)
            .send()
    };
    for (body, ctype) in [
        ("{not json", "application/json"),
        (r#"{"name": 5}"#, "application/json"),
        (r#"{"name": "a", "bogus": 1}"#, "application/json"),
        (r#"{"name": "x"}"#, "text/plain"),
    ] {
        let r = raw(body, ctype).await.unwrap();
        let s = r.status();
        assert!(s.is_client_error(), "{body} {ctype}: {s}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    for bad_query in [
        "/v1/agents?limit=abc",
        "/v1/audit?bogus=1",
        "/v1/runs?limit=-1",
    ] {
        let (s, _, h) = c.send(Method::GET, bad_query, Some(&admin), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad_query}");
        assert_eq!(h["content-type"], "application/problem+json", "{bad_query}");
    }
    let big = json!({"name": "x".repeat(10_000)});
    let (s, _, h) = c
        .send(Method::POST, "/v1/agents", Some(&admin), Some(big))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h["content-type"], "application/problem+json");
    let (s, _, _) = c
        .send(
            Method::DELETE,
            "/v1/memory/namespaces/kb/items/notanumber",
            Some(&admin),
            None,
        )
        .await;
    assert!(s.is_client_error(), "{s}");

    // The rate limit: a burst of 30, then 429 with Retry-After.
    let mut limited = None;
    for _ in 0..40 {
        let (s, _, h) = c.send(Method::GET, "/v1/status", Some(&admin), None).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(h);
            break;
        }
    }
    let h = limited.expect("rate limited within 40 requests");
    assert!(h.get("retry-after").is_some());
    d.shutdown().await.expect("shutdown");

    // The day's quota (40) is used up across a restart.
    cfg.rate_limit.requests_per_s = 100_000;
    cfg.rate_limit.burst = 100_000;
    let (d, _) = Daemon::start(cfg, None).await.expect("restart");
    let c = Client::new(d.addr);
    let mut last = StatusCode::OK;
    let mut body = Value::Null;
    for _ in 0..45 {
        let (s, v, _) = c.send(Method::GET, "/v1/status", Some(&admin), None).await;
        last = s;
        body = v;
        if s == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("quota"), "{body}");
    d.shutdown().await.expect("shutdown");
}

fn agent(name: &str) -> Value {
    json!({"name": name, "role": "executor", "model": "scripted/demo", "system_prompt": "Hi."})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_sigkill_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let start = || Aiosd::start_in("aiosd", Some(dir.path()), "", &[]);
    let node = start();
    let (s, v) = node.post("/v1/agents", agent("kept")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = node
        .post("/v1/keys", json!({"role": "viewer", "name": "v"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let viewer = v["secret"].as_str().unwrap().to_string();
    let status = node.terminate();
    assert!(status.success(), "aiosd exits cleanly on SIGTERM: {status}");

    let node = start();
    let (s, v) = node.get("/v1/agents/kept").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = reqwest::Client::new()
        .get(format!("{}/v1/agents", node.url))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "keys survive a restart");

    // Acknowledged writes survive SIGKILL.
    let mut acked = Vec::new();
    for i in 0..20 {
        let name = format!("a{i}");
        let (s, _) = node.post("/v1/agents", agent(&name)).await;
        if s == StatusCode::CREATED {
            acked.push(name);
        }
    }
    assert_eq!(acked.len(), 20);
    drop(node); // SIGKILL
    let node = start();
    for name in &acked {
        let (s, _) = node.get(&format!("/v1/agents/{name}")).await;
        assert_eq!(s, StatusCode::OK, "{name} was acknowledged before the kill");
    }
    let (s, v) = node.get("/v1/audit/verify").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["ok"], true,
        "the audit chain is intact after SIGKILL: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_clients_talk_to_agents_with_and_without_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let (d, first) = Daemon::start(daemon_config(dir.path()), None)
        .await
        .expect("start");
    let key = first.unwrap().secret;
    let c = Client::new(d.addr);
    let def = json!({"name": "helper", "role": "executor", "model": "scripted/demo",
                     "system_prompt": "Help."});
    let (s, _, _) = c
        .send(Method::POST, "/v1/agents", Some(&key), Some(def))
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let chat = json!({"model": "helper", "messages": [
        {"role": "system", "content": "ignored: the agent has its own prompt"},
        {"role": "user", "content": "What is AIOS?"}
    ]});
    let (s, v, _) = c
        .send(
            Method::POST,
            "/v1/chat/completions",
            Some(&key),
            Some(chat.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "chat.completion");
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("[scripted]"), "{v}");

    let mut streaming = chat.clone();
    streaming["stream"] = json!(true);
    let resp = c
        .http
        .post(format!("{}/v1/chat/completions", c.base))
        .bearer_auth(&key)
        .json(&streaming)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = resp.text().await.unwrap();
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    let mut text = String::new();
    let mut finished = false;
    for d in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(d).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk", "{d}");
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        finished |= chunk["choices"][0]["finish_reason"] == "stop";
    }
    assert!(finished, "{body}");
    assert!(text.contains("[scripted]"), "{text}");

    // The live event stream of an agent instance.
    let events = c
        .http
        .get(format!("{}/v1/agents/helper/events?session=s1", c.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let mut stream = events.bytes_stream();
    let (s, _, _) = c
        .send(
            Method::POST,
            "/v1/agents/helper/messages",
            Some(&key),
            Some(json!({"content": "hi", "session": "s1"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let mut seen = String::new();
    while !seen.contains("Final") {
        use futures_util::StreamExt as _;
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
            .await
            .expect("an event")
            .expect("stream open")
            .expect("bytes");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: "), "{seen}");

    // An unknown agent is an OpenAI-style error.
    let (s, v, _) = c
        .send(
            Method::POST,
            "/v1/chat/completions",
            Some(&key),
            Some(json!({"model": "nobody", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("nobody"),
        "{v}"
    );
    d.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_sessions_and_idempotent_creates_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (d, first) = Daemon::start(daemon_config(dir.path()), None)
        .await
        .expect("start");
    let admin = first.unwrap().secret;
    let c = Client::new(d.addr);
    let acme = c.create_key(&admin, "operator", Some("acme")).await;
    let other = c.create_key(&admin, "operator", Some("other")).await;
    for (name, role, cap, prompt) in [
        (
            "planner",
            "planner",
            "plan",
            "You plan. Answer with a JSON plan.",
        ),
        ("researcher", "executor", "research", "You research."),
        ("writer", "executor", "write", "You write."),
    ] {
        let def = json!({"name": name, "role": role, "model": "scripted/demo",
            "system_prompt": prompt, "capabilities": [{"name": cap}]});
        let (s, v, _) = c
            .send(Method::POST, "/v1/agents", Some(&acme), Some(def))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    // Another tenant's cheaper agents with the same capabilities are never picked.
    for (name, cap) in [
        ("cheap-research", "research"),
        ("cheap-write", "write"),
        ("cheap-plan", "plan"),
    ] {
        let def = json!({"name": name, "role": "executor", "model": "scripted/demo",
            "system_prompt": "You plan. Answer with a JSON plan.",
            "capabilities": [{"name": cap, "params": {"cost_class": "free"}}]});
        let (s, v, _) = c
            .send(Method::POST, "/v1/agents", Some(&other), Some(def))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    // A run: planned, carried out by the tenant's agents, answered.
    let (s, v, _) = c
        .send(
            Method::POST,
            "/v1/runs",
            Some(&acme),
            Some(json!({"task": "Why is the sky blue?", "planner": "planner"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let run = eventually("the run to finish", Duration::from_secs(20), || async {
        let (_, v, _) = c
            .send(Method::GET, &format!("/v1/runs/{id}"), Some(&acme), None)
            .await;
        matches!(
            v["status"].as_str(),
            Some("Succeeded" | "Failed" | "succeeded" | "failed")
        )
        .then_some(v)
    })
    .await;
    assert!(
        run["status"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("succeeded"),
        "{run}"
    );
    assert_eq!(
        run["planner"], "planner",
        "names are shown without the tenant: {run}"
    );
    let text = run.to_string();
    assert!(
        !text.contains("other.") && !text.contains("cheap-"),
        "only acme's agents ran: {run}"
    );
    // The event stream of a finished run ends at once.
    let events = c
        .http
        .get(format!("{}/v1/runs/{id}/events", c.base))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert!(events.text().await.unwrap().is_empty());
    let (s, _, _) = c
        .send(Method::GET, &format!("/v1/runs/{id}"), Some(&other), None)
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "another tenant cannot see the run"
    );
    let (_, v, _) = c.send(Method::GET, "/v1/runs", Some(&acme), None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    let (_, v, _) = c.send(Method::GET, "/v1/runs", Some(&other), None).await;
    assert!(v["items"].as_array().unwrap().is_empty(), "{v}");

    // A session with one agent keeps its history.
    let (s, v, _) = c
        .send(
            Method::POST,
            "/v1/sessions",
            Some(&acme),
            Some(json!({"agent": "writer", "title": "t"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sid = v["id"].as_str().unwrap().to_string();
    let (s, v, _) = c
        .send(
            Method::POST,
            &format!("/v1/sessions/{sid}/messages"),
            Some(&acme),
            Some(json!({"content": "hello"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["text"].as_str().unwrap().contains("[scripted]"), "{v}");
    let (_, v, _) = c
        .send(
            Method::GET,
            &format!("/v1/sessions/{sid}/history"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 2, "{v}");
    let (s, _, _) = c
        .send(
            Method::GET,
            &format!("/v1/sessions/{sid}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v, _) = c
        .send(
            Method::POST,
            "/v1/sessions",
            Some(&acme),
            Some(json!({"title": "neither"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // A session's event stream follows its agent instance.
    let events = c
        .http
        .get(format!("{}/v1/sessions/{sid}/events", c.base))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let mut stream = events.bytes_stream();
    let (s, _, _) = c
        .send(
            Method::POST,
            &format!("/v1/sessions/{sid}/messages"),
            Some(&acme),
            Some(json!({"content": "again"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let mut seen = String::new();
    while !seen.contains("Final") {
        use futures_util::StreamExt as _;
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
            .await
            .expect("an event")
            .expect("open")
            .expect("bytes");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
    let (s, _, _) = c
        .send(
            Method::GET,
            &format!("/v1/sessions/{sid}/events"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "not another tenant's");

    // Idempotency-Key: a retried create answers the same, once.
    let post = |key: &'static str, body: Value| {
        c.http
            .post(format!("{}/v1/agents", c.base))
            .bearer_auth(&acme)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let def =
        json!({"name": "once", "role": "executor", "model": "scripted/demo", "system_prompt": "."});
    let a = post("k-1", def.clone()).await.unwrap();
    assert_eq!(a.status(), StatusCode::CREATED);
    let a_body = a.text().await.unwrap();
    let b = post("k-1", def.clone()).await.unwrap();
    assert_eq!(b.status(), StatusCode::CREATED, "a replay, not a conflict");
    assert_eq!(b.headers()["idempotent-replayed"], "true");
    assert_eq!(b.text().await.unwrap(), a_body);
    let mut changed = def.clone();
    changed["system_prompt"] = json!("different");
    let r = post("k-1", changed).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = post("k-2", def).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "a new key runs again: the agent exists"
    );
    // A retried key creation answers the key without its secret, and says so: the secret
    // was shown once and is stored nowhere (the store holds its hash).
    let new_key = || {
        c.http
            .post(format!("{}/v1/keys", c.base))
            .bearer_auth(&admin)
            .header("idempotency-key", "key-1")
            .json(&json!({"name": "ci", "role": "viewer"}))
            .send()
    };
    let first: Value = new_key().await.unwrap().json().await.unwrap();
    let secret = first["secret"].as_str().unwrap().to_string();
    let again = new_key().await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-withheld"], "secret");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["key"], first["key"]);
    assert!(again.get("secret").is_none(), "{again}");
    d.shutdown().await.expect("shutdown");
    let needle = secret.as_bytes();
    for entry in walkdir(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the secret is stored in {}",
            entry.display()
        );
    }
}

/// Every file under `dir`.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_with_its_role_and_body_schema() {
    let dir = tempfile::tempdir().unwrap();
    let (d, first) = Daemon::start(daemon_config(dir.path()), None)
        .await
        .expect("start");
    let admin = first.unwrap().secret;
    let c = Client::new(d.addr);
    let viewer = c.create_key(&admin, "viewer", None).await;
    let (s, _, _) = c.send(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, doc, _) = c
        .send(Method::GET, "/v1/openapi.json", Some(&viewer), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for r in routes().into_parts().1 {
        let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
        assert_eq!(
            op["x-aios-min-role"],
            r.role.as_str(),
            "{} {}",
            r.method,
            r.path
        );
        let in_path = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "path")
            .count();
        assert_eq!(in_path, r.path.matches('{').count(), "{}", r.path);
    }
    let audit = doc["paths"]["/v1/audit"]["get"]["parameters"].to_string();
    assert!(
        audit.contains("since_ms") && audit.contains("\"query\""),
        "{audit}"
    );
    // A body schema is inline or a reference into the document's components.
    let resolve = |schema: &Value| -> Value {
        match schema["$ref"].as_str() {
            Some(r) => doc
                .pointer(r.trim_start_matches('#'))
                .cloned()
                .unwrap_or_else(|| panic!("{r} is not in the document")),
            None => schema.clone(),
        }
    };
    let create = resolve(
        &doc["paths"]["/v1/agents"]["post"]["requestBody"]["content"]["application/json"]["schema"],
    );
    assert!(
        create["properties"]["system_prompt"].is_object(),
        "{create}"
    );
    let mcp = resolve(
        &doc["paths"]["/v1/mcp-servers"]["post"]["requestBody"]["content"]["application/json"]["schema"],
    );
    assert!(mcp["properties"]["transport"].is_object(), "{mcp}");
    // A tenant-scoped name carries its rule, from the handler's `Scoped` extractor.
    let name = doc["paths"]["/v1/agents/{name}"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "name")
        .cloned()
        .unwrap();
    let rule = resolve(&name["schema"]);
    assert_eq!(rule["maxLength"], 64, "{rule}");
    assert!(rule["pattern"].is_string(), "{rule}");
    // The optional body of a rotation is JSON, not required.
    let rotate = &doc["paths"]["/v1/keys/{id}/rotate"]["post"]["requestBody"];
    // (`required` defaults to false and is left out.)
    assert_ne!(rotate["required"], true, "{rotate}");
    let overlap = resolve(&rotate["content"]["application/json"]["schema"]);
    assert!(overlap["properties"]["overlap_ms"].is_object(), "{overlap}");
    // A handler that returns a typed body documents it.
    let me = resolve(
        &doc["paths"]["/v1/me"]["get"]["responses"]["200"]["content"]["application/json"]["schema"],
    );
    assert!(me["properties"]["tenant"].is_object(), "{me}");
    let (s, mine, _) = c.send(Method::GET, "/v1/me", Some(&viewer), None).await;
    assert_eq!(s, StatusCode::OK);
    for field in me["required"].as_array().unwrap() {
        assert!(
            mine.get(field.as_str().unwrap()).is_some(),
            "{field} in {mine}"
        );
    }
    d.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_carry_an_agent_conversation_both_ways() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};
    let dir = tempfile::tempdir().unwrap();
    let (d, first) = Daemon::start(daemon_config(dir.path()), None)
        .await
        .expect("start");
    let key = first.unwrap().secret;
    let c = Client::new(d.addr);
    let def = json!({"name": "talker", "role": "executor", "model": "scripted/demo",
                     "system_prompt": "Talk."});
    let (s, _, _) = c
        .send(Method::POST, "/v1/agents", Some(&key), Some(def))
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let mut ws = ws_connect(d.addr, "/v1/agents/talker/ws?session=w1", &key).await;
    ws.send(Message::Text(
        r#"{"content": "hello over a socket"}"#.into(),
    ))
    .await
    .unwrap();
    let mut kinds = Vec::new();
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(20), ws.next())
            .await
            .expect("a frame")
            .expect("open")
            .expect("frame");
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        kinds.push(v["type"].as_str().unwrap_or_default().to_string());
        if v["event"].get("Final").is_some() {
            assert!(
                v["event"]["Final"]["text"]
                    .as_str()
                    .unwrap()
                    .contains("[scripted]"),
                "{v}"
            );
            break;
        }
    }
    assert!(kinds.iter().any(|k| k == "event"), "{kinds:?}");
    ws.send(Message::Text("not json".into())).await.unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("an error frame")
    };
    assert!(t.contains("\"error\""), "{t}");
    ws.close(None).await.unwrap();
    // Browsers cannot send headers on a WebSocket: the streams take `?access_token=`.
    let by_query = format!("ws://{}/v1/agents/talker/ws?access_token={key}", d.addr);
    let (mut ws2, _) = tokio_tungstenite::connect_async(by_query.as_str())
        .await
        .expect("a key in the query opens a stream");
    ws2.close(None).await.unwrap();
    let (s, _, _) = c
        .send(
            Method::GET,
            &format!("/v1/agents?access_token={key}"),
            None,
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "only the streams take a key in the query"
    );
    let unauthorized = format!("ws://{}/v1/agents/talker/ws", d.addr)
        .into_client_request()
        .unwrap();
    assert!(
        tokio_tungstenite::connect_async(unauthorized)
            .await
            .is_err(),
        "no key, no socket"
    );
    d.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_llm_token_quota_stops_agent_work_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path());
    cfg.quotas.llm_tokens_per_day = 1;
    let (d, first) = Daemon::start(cfg.clone(), None).await.expect("start");
    let key = first.unwrap().secret;
    let c = Client::new(d.addr);
    let def = json!({"name": "spender", "role": "executor", "model": "scripted/demo",
                     "system_prompt": "Spend."});
    let (s, _, _) = c
        .send(Method::POST, "/v1/agents", Some(&key), Some(def))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let msg = json!({"content": "use some tokens please"});
    let (s, v, _) = c
        .send(
            Method::POST,
            "/v1/agents/spender/messages",
            Some(&key),
            Some(msg.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "the first task runs: {v}");
    let (s, v, _) = c
        .send(
            Method::POST,
            "/v1/agents/spender/messages",
            Some(&key),
            Some(msg.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("LLM tokens"), "{v}");
    // Reads still work; a restart keeps the day's usage.
    let (s, _, _) = c.send(Method::GET, "/v1/agents", Some(&key), None).await;
    assert_eq!(s, StatusCode::OK);
    d.shutdown().await.expect("shutdown");
    let (d, _) = Daemon::start(cfg, None).await.expect("restart");
    let c = Client::new(d.addr);
    let (s, _, _) = c
        .send(
            Method::POST,
            "/v1/agents/spender/messages",
            Some(&key),
            Some(msg),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    d.shutdown().await.expect("shutdown");
}

struct Panics;

#[async_trait::async_trait]
impl aios_core::Tool for Panics {
    fn spec(&self) -> aios_core::ToolSpec {
        aios_core::ToolSpec {
            name: "panics".into(),
            description: "Always panics.".into(),
            parameters: json!({"type": "object"}),
        }
    }

    async fn call(
        &self,
        _: Value,
        _: &aios_core::ToolContext,
    ) -> Result<Value, aios_core::ToolError> {
        panic!("this tool always panics")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_crash_is_listed_among_recent_errors_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (d, first) = Daemon::start(daemon_config(dir.path()), None)
        .await
        .expect("start");
    let key = first.unwrap().secret;
    let c = Client::new(d.addr);
    let tools = d.state().rt.tool_service().clone();
    let manifest = aios_actors::tools::ToolManifest::from_toml(
        "name = \"boom\"\nversion = \"1.0.0\"\ndescription = \"Panics.\"\ninput_schema = { type = \"object\" }\n",
    )
    .unwrap();
    tools
        .install(manifest, std::sync::Arc::new(Panics))
        .await
        .unwrap();
    let req = aios_actors::tools::ToolRequirement::parse("boom").unwrap();
    // Called as an agent of the operator tenant, which may call every tool.
    let ctx = aios_actors::tools::CallContext {
        tenant: "default".into(),
        ..Default::default()
    };
    let r = tools.call(&req, json!({}), &ctx).await;
    assert!(r.is_err(), "{r:?}");
    eventually(
        "the crash to be listed",
        Duration::from_secs(10),
        || async {
            let (_, v, _) = c.send(Method::GET, "/v1/errors", Some(&key), None).await;
            v["errors"]
                .as_array()
                .is_some_and(|e| {
                    e.iter()
                        .any(|x| x["message"].as_str().unwrap_or("").contains("actor failed"))
                })
                .then_some(())
        },
    )
    .await;
    let (s, _, _) = c.send(Method::GET, "/v1/status", Some(&key), None).await;
    assert_eq!(s, StatusCode::OK, "still serving");
    d.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_tool_calls_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path());
    cfg.tools.grant_all = Some(false);
    let (d, first) = Daemon::start(cfg, None).await.expect("start");
    let key = first.unwrap().secret;
    let c = Client::new(d.addr);
    let ctx = aios_actors::tools::CallContext {
        agent: "acme.snoop".into(),
        role: "executor".into(),
        tenant: "acme".into(),
        ..Default::default()
    };
    let req = aios_actors::tools::ToolRequirement::parse("files").unwrap();
    let r = d
        .state()
        .rt
        .tool_service()
        .call(&req, json!({"op": "read", "path": "x"}), &ctx)
        .await;
    assert!(
        matches!(r, Err(aios_actors::tools::ToolCallError::Denied { .. })),
        "{r:?}"
    );
    let found = eventually("an audited denial", Duration::from_secs(10), || async {
        let (_, v, _) = c
            .send(
                Method::GET,
                "/v1/audit?action=tool_denied",
                Some(&key),
                None,
            )
            .await;
        (!v["items"].as_array().unwrap().is_empty()).then_some(v)
    })
    .await;
    let e = &found["items"][0];
    assert_eq!(e["tenant"], "acme", "{found}");
    assert!(
        e["detail"].as_str().unwrap().contains("acme.snoop"),
        "{found}"
    );
    d.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_are_kept_per_key_and_the_tree_streams_its_events() {
    use futures_util::StreamExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (d, first) = Daemon::start(daemon_config(dir.path()), None)
        .await
        .expect("start");
    let admin = first.unwrap().secret;
    let c = Client::new(d.addr);
    let viewer = c.create_key(&admin, "viewer", None).await;
    let (_, v, _) = c
        .send(Method::GET, "/v1/preferences", Some(&viewer), None)
        .await;
    assert_eq!(v, json!({}));
    let prefs = json!({"theme": "dark", "page_size": 50});
    let (s, _, _) = c
        .send(
            Method::PUT,
            "/v1/preferences",
            Some(&viewer),
            Some(prefs.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v, _) = c
        .send(Method::GET, "/v1/preferences", Some(&viewer), None)
        .await;
    assert_eq!(v, prefs);
    let (_, v, _) = c
        .send(Method::GET, "/v1/preferences", Some(&admin), None)
        .await;
    assert_eq!(v, json!({}), "per key");
    let (s, _, _) = c
        .send(
            Method::PUT,
            "/v1/preferences",
            Some(&viewer),
            Some(json!([1, 2])),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = c
        .send(
            Method::PUT,
            "/v1/preferences",
            Some(&viewer),
            Some(json!({"x": "y".repeat(20_000)})),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    // The tree's live events: a crashing tool host shows up as a restart.
    let events = c
        .http
        .get(format!("{}/v1/tree/events", c.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let mut stream = events.bytes_stream();
    let tools = d.state().rt.tool_service().clone();
    let manifest = aios_actors::tools::ToolManifest::from_toml(
        "name = \"boom\"\nversion = \"1.0.0\"\ndescription = \"Panics.\"\ninput_schema = { type = \"object\" }\n",
    )
    .unwrap();
    tools
        .install(manifest, std::sync::Arc::new(Panics))
        .await
        .unwrap();
    let req = aios_actors::tools::ToolRequirement::parse("boom").unwrap();
    let _ = tools
        .call(
            &req,
            json!({}),
            &aios_actors::tools::CallContext {
                tenant: "default".into(),
                ..Default::default()
            },
        )
        .await;
    let mut seen = String::new();
    // One deadline for the whole wait: keep-alive comments arrive meanwhile.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !seen.contains("ChildRestarted") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no restart event in 20 s: {seen}"))
            .expect("open")
            .expect("bytes");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("tool:boom@1.0.0"), "{seen}");
    drop(stream);
    d.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_s_streams_close_and_websocket_messages_are_limited_and_audited() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path());
    let (d, first) = Daemon::start(cfg.clone(), None).await.expect("start");
    let admin = first.unwrap().secret;
    let c = Client::new(d.addr);
    let key = c.create_key(&admin, "operator", Some("acme")).await;
    let acme_admin = c.create_key(&admin, "admin", Some("acme")).await;
    let key_id = key.split('_').nth(1).unwrap().to_string();
    let def = json!({"name": "talker", "role": "executor", "model": "scripted/demo",
                     "system_prompt": "Talk."});
    let (s, _, _) = c
        .send(Method::POST, "/v1/agents", Some(&key), Some(def))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // An SSE stream and a WebSocket, both on the key.
    let sse = c
        .http
        .get(format!("{}/v1/agents/talker/events", c.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    let mut sse = sse.bytes_stream();
    let mut ws = ws_connect(d.addr, "/v1/agents/talker/ws", &key).await;
    ws.send(Message::Text(r#"{"content": "hello"}"#.into()))
        .await
        .unwrap();
    // The message is audited like a request.
    eventually(
        "the message to be audited",
        Duration::from_secs(10),
        || async {
            let (_, v, _) = c
                .send(
                    Method::GET,
                    &format!("/v1/audit?key_id={key_id}&limit=100"),
                    Some(&acme_admin),
                    None,
                )
                .await;
            v.to_string().contains("/ws message").then_some(())
        },
    )
    .await;
    // Revoked: both streams end, and the WebSocket's task with them.
    let revoked_at = std::time::Instant::now();
    let (s, _, _) = c
        .send(
            Method::DELETE,
            &format!("/v1/keys/{key_id}"),
            Some(&acme_admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let ws_closed = async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    };
    let sse_closed = async { while let Some(Ok(_)) = sse.next().await {} };
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        tokio::join!(ws_closed, sse_closed)
    })
    .await
    .expect("the revoked key's streams stayed open");
    eprintln!(
        "streams of the revoked key closed after {} ms",
        revoked_at.elapsed().as_millis()
    );
    d.shutdown().await.expect("shutdown");

    // Over the key's rate limit, a WebSocket message is refused like a request.
    cfg.rate_limit.requests_per_s = 1;
    cfg.rate_limit.burst = 2;
    let (d, _) = Daemon::start(cfg, None).await.expect("restart");
    let mut ws = ws_connect(d.addr, "/v1/agents/talker/ws", &acme_admin).await;
    let mut limited = false;
    for _ in 0..5 {
        ws.send(Message::Text(r#"{"content": "again"}"#.into()))
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !limited {
        let m = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .expect("an answer to every message")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = m {
            limited = t.contains("rate limit");
        }
    }
    d.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path());
    cfg.http.header_read_timeout = std::time::Duration::from_millis(300);
    cfg.http.connections_max = 1;
    cfg.http.body_read_timeout = std::time::Duration::from_secs(1);
    let (d, first) = Daemon::start(cfg, None).await.expect("start");
    let key = first.unwrap().secret;
    let key2 = key.clone();
    // A client that sends half a request's headers and stalls holds the only connection...
    let mut slow = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    slow.write_all(b"GET /v1/me HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    let held_since = std::time::Instant::now();
    // (once it is taken: a request answered on it proves the server accepted it first)
    let c = Client::new(d.addr);
    let mut other = tokio::spawn(async move {
        let (s, _, _) = c.send(Method::GET, "/v1/me", Some(&key), None).await;
        s
    });
    // ...so another client waits until the slow one is cut off by the header timeout.
    let mut buf = Vec::new();
    let header_timeout = std::time::Duration::from_millis(300);
    let ten_s = std::time::Duration::from_secs(10);
    let s = tokio::select! {
        biased;
        r = tokio::time::timeout(ten_s, slow.read_to_end(&mut buf)) => {
            r.expect("the slow client was never cut off").expect("read");
            other.await.unwrap()
        }
        s = &mut other => {
            // Seen first only when this test ran late (a loaded machine): the answer may not
            // have come before the slow client's header timeout, and the slow client is
            // cut off all the same.
            assert!(
                held_since.elapsed() >= header_timeout,
                "served ({s:?}) while the only connection was held"
            );
            tokio::time::timeout(ten_s, slow.read_to_end(&mut buf))
                .await
                .expect("the slow client was never cut off")
                .expect("read");
            s.unwrap()
        }
    };
    assert_eq!(s, StatusCode::OK);
    // A client that connects and sends nothing at all is cut off too.
    let mut silent = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        silent.read_to_end(&mut buf),
    )
    .await
    .expect("a silent client was never cut off")
    .expect("read");

    // A body sent too slowly is cut off by its own deadline, and its connection with it.
    let mut slow_body = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    slow_body
        .write_all(
            format!(
                "POST /v1/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key2}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        slow_body.read_to_end(&mut buf),
    )
    .await
    .expect("a slow body was never cut off")
    .expect("read");
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // An upgraded WebSocket keeps its connection's place until it closes.
    let mut ws = ws_connect(d.addr, "/v1/tree/ws", &key2).await;
    let c = Client::new(d.addr);
    let key3 = key2.clone();
    let mut other = tokio::spawn(async move {
        let (s, _, _) = c.send(Method::GET, "/v1/me", Some(&key3), None).await;
        s
    });
    tokio::select! {
        s = &mut other => panic!("served ({s:?}) while a WebSocket held the only connection"),
        () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
    }
    ws.close(None).await.unwrap();
    drop(ws);
    assert_eq!(other.await.unwrap(), StatusCode::OK);
    d.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_cannot_use_up_what_the_node_allows() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path());
    cfg.tenants.agents_max = 2;
    cfg.tenants.namespaces_max = 1;
    cfg.tenants.keys_max = 3;
    cfg.tenants.webhooks_max = 1;
    cfg.tenants.idempotency_records_max = 2;
    cfg.tenants.streams_max = 1;
    cfg.outbound.allow = vec!["127.0.0.1".into()];
    let (d, first) = Daemon::start(cfg, None).await.expect("start");
    let admin = first.unwrap().secret;
    let c = Client::new(d.addr);
    let acme = c.create_key(&admin, "admin", Some("acme")).await;
    let other = c.create_key(&admin, "admin", Some("other")).await;
    let agent = |name: &str| json!({"name": name, "role": "executor", "model": "scripted/demo", "system_prompt": "."});
    let post = |key: &str, path: &'static str, body: Value| {
        let c = &c;
        let key = key.to_string();
        async move { c.send(Method::POST, path, Some(&key), Some(body)).await }
    };
    for name in ["a1", "a2"] {
        assert_eq!(
            post(&acme, "/v1/agents", agent(name)).await.0,
            StatusCode::CREATED
        );
    }
    let (s, v, _) = post(&acme, "/v1/agents", agent("a3")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("agents_max"), "{v}");
    // Updating an existing one is not a new one; another tenant has its own budget.
    assert_eq!(
        post(&other, "/v1/agents", agent("a1")).await.0,
        StatusCode::CREATED
    );
    let ns = |name: &str| json!({"name": name});
    assert_eq!(
        post(&acme, "/v1/memory/namespaces", ns("n1")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        post(&acme, "/v1/memory/namespaces", ns("n2")).await.0,
        StatusCode::CONFLICT
    );
    // Nor through `memory_save`, which makes a namespace on demand.
    let ctx = aios_actors::tools::CallContext {
        agent: "acme.a1".into(),
        role: "executor".into(),
        tenant: "acme".into(),
        ..Default::default()
    };
    let save = aios_actors::tools::ToolRequirement::parse("memory_save").unwrap();
    let tools = d.state().rt.tool_service();
    let r = tools
        .call(&save, json!({"namespace": "n3", "text": "x"}), &ctx)
        .await;
    assert!(
        r.as_ref()
            .is_err_and(|e| e.to_string().contains("namespaces")),
        "{r:?}"
    );
    assert!(
        tools
            .call(&save, json!({"namespace": "n1", "text": "x"}), &ctx)
            .await
            .is_ok()
    );
    // Keys: acme's admin key and two more, also when eight are asked for at once.
    let asked: Vec<_> = (0..8)
        .map(|i| {
            post(
                &acme,
                "/v1/keys",
                json!({"name": format!("k{i}"), "role": "viewer"}),
            )
        })
        .collect();
    let statuses: Vec<StatusCode> = futures_util::future::join_all(asked)
        .await
        .into_iter()
        .map(|(s, _, _)| s)
        .collect();
    let made = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((made, refused), (2, 6), "{statuses:?}");
    let hook = json!({"url": "http://127.0.0.1:9/x", "events": ["*"]});
    assert_eq!(
        post(&acme, "/v1/webhooks", hook.clone()).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        post(&acme, "/v1/webhooks", hook).await.0,
        StatusCode::CONFLICT
    );
    // Idempotency records: two kept for `other`; a third key is refused (429), a retry of a
    // kept one still replays, and a request without a key runs.
    let message = |idempotency: Option<&str>| {
        let mut r = c
            .http
            .post(format!("{}/v1/agents/a1/messages", c.base))
            .bearer_auth(&other)
            .json(&json!({"content": "hello"}));
        if let Some(k) = idempotency {
            r = r.header("idempotency-key", k);
        }
        async move {
            let r = r.send().await.expect("request");
            (r.status(), r.headers().clone())
        }
    };
    assert_eq!(message(Some("i1")).await.0, StatusCode::OK);
    assert_eq!(message(Some("i2")).await.0, StatusCode::OK);
    let (s, h) = message(Some("i3")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(h.contains_key("retry-after"));
    let (s, h) = message(Some("i1")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["idempotent-replayed"], "true");
    assert_eq!(message(None).await.0, StatusCode::OK);

    // Streams: one open for acme; a second is refused until the first closes. Another
    // tenant has its own.
    let mut ws = ws_connect(d.addr, "/v1/agents/a1/ws", &acme).await;
    let events = |key: &str| {
        let r = c
            .http
            .get(format!("{}/v1/agents/a1/events", c.base))
            .bearer_auth(key);
        async move { r.send().await.expect("request").status() }
    };
    assert_eq!(events(&acme).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(events(&other).await, StatusCode::OK);
    ws.close(None).await.unwrap();
    drop(ws);
    // The server counts the socket out when its task ends (awaited by asking again).
    eventually(
        "the closed socket's place back",
        Duration::from_secs(10),
        || async { (events(&acme).await == StatusCode::OK).then_some(()) },
    )
    .await;

    // A tenant admin cannot revoke another tenant's key; the operator tenant's admin can.
    let (_, me, _) = c.send(Method::GET, "/v1/me", Some(&other), None).await;
    let other_id = me["key_id"].as_str().expect("key id").to_string();
    let revoke = format!("/v1/keys/{other_id}");
    let (s, v, _) = c.send(Method::DELETE, &revoke, Some(&acme), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v, _) = c.send(Method::DELETE, &revoke, Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, _) = c.send(Method::GET, "/v1/agents", Some(&other), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    d.shutdown().await.expect("shutdown");
}
