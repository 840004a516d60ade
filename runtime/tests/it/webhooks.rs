//! Webhook deliveries to a receiver on 127.0.0.1 that checks every signature: retries after
//! 500s, dead letters and redelivery, and the queue surviving a daemon restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aios_runtime::daemon::webhooks::signature;
use aios_runtime::daemon::{Daemon, DaemonConfig};
use aios_testkit::eventually;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Default)]
struct Receiver {
    /// Secrets by path (set once the subscription exists).
    secrets: Mutex<HashMap<String, String>>,
    /// Failures still to answer, by path (u32::MAX: always).
    fail: Mutex<HashMap<String, u32>>,
    /// Attempts seen, by path.
    attempts: Mutex<HashMap<String, u32>>,
}

type Seen = mpsc::UnboundedSender<(String, Value)>;

async fn receive(
    State((r, tx)): State<(Arc<Receiver>, Seen)>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let body = String::from_utf8(body.to_vec()).expect("utf-8 body");
    let secret = r
        .secrets
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .expect("known path");
    let ts: u64 = headers["x-aios-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let sig = headers["x-aios-signature"].to_str().unwrap();
    assert_eq!(sig, signature(&secret, ts, &body), "a valid signature");
    *r.attempts.lock().unwrap().entry(path.clone()).or_default() += 1;
    {
        let mut fail = r.fail.lock().unwrap();
        let left = fail.entry(path.clone()).or_default();
        if *left > 0 {
            if *left != u32::MAX {
                *left -= 1;
            }
            let _ = tx.send((format!("{path}:failed"), Value::Null));
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    let _ = tx.send((path, serde_json::from_str(&body).unwrap()));
    StatusCode::OK
}

async fn serve_receiver(
    listener: tokio::net::TcpListener,
    r: Arc<Receiver>,
    tx: Seen,
) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new()
        .route("/{path}", axum::routing::post(receive))
        .with_state((r, tx));
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

fn config(dir: &std::path::Path) -> DaemonConfig {
    let mut c = crate::common::daemon::daemon_config(dir);
    c.webhooks.attempts_max = 3;
    c.webhooks.backoff_initial = Duration::from_millis(20);
    c.webhooks.backoff_max = Duration::from_millis(200);
    c
}

/// Subscribes `url` to `events` with `key`, and gives `receiver` the subscription's secret
/// to check the deliveries to its path `name` with.
async fn subscribe_as(
    base: &str,
    key: &str,
    receiver: &Receiver,
    name: &str,
    url: &str,
    events: Value,
) {
    let (s, v) = call(
        base,
        key,
        reqwest::Method::POST,
        "/v1/webhooks",
        json!({"url": url, "events": events}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    receiver
        .secrets
        .lock()
        .unwrap()
        .insert(name.into(), v["secret"].as_str().unwrap().into());
}

async fn call(
    base: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = StatusCode::from_u16(r.status().as_u16()).unwrap();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Waits for the receiver to report `path` (skipping other reports).
async fn wait_for(rx: &mut mpsc::UnboundedReceiver<(String, Value)>, path: &str) -> Value {
    loop {
        let (p, v) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no delivery to {path}"))
            .unwrap();
        if p == path {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_retried_dead_lettered_redelivered_and_survive_restarts() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_base = format!("http://{}", listener.local_addr().unwrap());
    let receiver = Arc::new(Receiver::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve_receiver(listener, receiver.clone(), tx.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let (d, first) = Daemon::start(config(dir.path()), None).await.unwrap();
    let key = first.unwrap().secret;
    let base = format!("http://{}", d.addr);
    let subscribe = |path: &'static str, events: Value| {
        let (base, key, receiver, hook) = (
            base.clone(),
            key.clone(),
            receiver.clone(),
            hook_base.clone(),
        );
        async move {
            subscribe_as(
                &base,
                &key,
                &receiver,
                path,
                &format!("{hook}/{path}"),
                events,
            )
            .await;
        }
    };

    // Two 500s, then success: retried with backoff, delivered once.
    receiver.fail.lock().unwrap().insert("retry".into(), 2);
    subscribe("retry", json!(["agent.created"])).await;
    let (s, _) = call(
        &base,
        &key,
        reqwest::Method::POST,
        "/v1/agents",
        json!({"name": "w", "role": "executor", "model": "scripted/demo", "system_prompt": "."}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let v = wait_for(&mut rx, "retry").await;
    assert_eq!(v["event"], "agent.created");
    assert_eq!(v["data"]["agent"], "w");
    assert_eq!(receiver.attempts.lock().unwrap()["retry"], 3);

    // Always failing: dead-lettered after 3 attempts, then redelivered on request.
    receiver
        .fail
        .lock()
        .unwrap()
        .insert("dead".into(), u32::MAX);
    subscribe("dead", json!(["key.created"])).await;
    let (s, _) = call(
        &base,
        &key,
        reqwest::Method::POST,
        "/v1/keys",
        json!({"role": "viewer"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    for _ in 0..3 {
        wait_for(&mut rx, "dead:failed").await;
    }
    let dead = eventually("a dead letter", Duration::from_secs(10), || async {
        let (_, v) = call(
            &base,
            &key,
            reqwest::Method::GET,
            "/v1/webhooks/dead",
            Value::Null,
        )
        .await;
        if v["items"].as_array().unwrap().is_empty() {
            Err(v.to_string())
        } else {
            Ok(v)
        }
    })
    .await;
    let item = &dead["items"][0];
    assert_eq!(item["event"], "key.created", "{dead}");
    assert_eq!(item["attempts"], 3);
    receiver.fail.lock().unwrap().insert("dead".into(), 0);
    let seq = item["seq"].as_u64().unwrap();
    let (s, _) = call(
        &base,
        &key,
        reqwest::Method::POST,
        &format!("/v1/webhooks/dead/{seq}/redeliver"),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let v = wait_for(&mut rx, "dead").await;
    assert_eq!(v["event"], "key.created");

    // The receiver fails; the delivery waits in the queue across a daemon restart. (Retries
    // 1 s apart, so none is attempted between the first failure and the restart.)
    d.shutdown().await.unwrap();
    let mut slow = config(dir.path());
    slow.webhooks.attempts_max = 100;
    slow.webhooks.backoff_initial = Duration::from_secs(1);
    slow.webhooks.backoff_max = Duration::from_secs(2);
    let (d, _) = Daemon::start(slow.clone(), None).await.unwrap();
    let base = format!("http://{}", d.addr);
    receiver
        .fail
        .lock()
        .unwrap()
        .insert("later".into(), u32::MAX);
    subscribe_as(
        &base,
        &key,
        &receiver,
        "later",
        &format!("{hook_base}/later"),
        json!(["agent.deleted"]),
    )
    .await;
    let (s, _) = call(
        &base,
        &key,
        reqwest::Method::DELETE,
        "/v1/agents/w",
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    wait_for(&mut rx, "later:failed").await;
    d.shutdown().await.unwrap();
    receiver.fail.lock().unwrap().insert("later".into(), 0);
    let (d, _) = Daemon::start(slow, None).await.unwrap();
    let v = wait_for(&mut rx, "later").await;
    assert_eq!(v["event"], "agent.deleted");
    assert_eq!(v["data"]["agent"], "w");

    // Bad subscriptions are refused.
    let base = format!("http://{}", d.addr);
    let (s, v) = call(
        &base,
        &key,
        reqwest::Method::POST,
        "/v1/webhooks",
        json!({"url": "ftp://x", "events": ["agent.created"]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = call(
        &base,
        &key,
        reqwest::Method::POST,
        "/v1/webhooks",
        json!({"url": "http://127.0.0.1:1/x", "events": ["nope"]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    d.shutdown().await.unwrap();
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_is_announced_to_its_tenant() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/runs", listener.local_addr().unwrap());
    let receiver = Arc::new(Receiver::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve_receiver(listener, receiver.clone(), tx).await;
    let dir = tempfile::tempdir().unwrap();
    let (d, first) = Daemon::start(config(dir.path()), None).await.unwrap();
    let key = first.unwrap().secret;
    let base = format!("http://{}", d.addr);
    subscribe_as(
        &base,
        &key,
        &receiver,
        "runs",
        &hook,
        json!(["run.completed"]),
    )
    .await;
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
        let (s, v) = call(&base, &key, reqwest::Method::POST, "/v1/agents", def).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = call(
        &base,
        &key,
        reqwest::Method::POST,
        "/v1/runs",
        json!({"task": "Why is the sky blue?"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let delivered = wait_for(&mut rx, "runs").await;
    assert_eq!(delivered["event"], "run.completed");
    assert_eq!(delivered["data"]["run"], v["id"]);
    d.shutdown().await.unwrap();
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_s_webhook_reaches_no_internal_address_unless_the_operator_allows_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = Arc::new(Receiver::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve_receiver(listener, receiver.clone(), tx).await;
    let dir = tempfile::tempdir().unwrap();
    let (d, first) = Daemon::start(config(dir.path()), None).await.unwrap();
    let admin = first.unwrap().secret;
    let base = format!("http://{}", d.addr);
    let (s, v) = call(
        &base,
        &admin,
        reqwest::Method::POST,
        "/v1/keys",
        json!({"name": "evil", "role": "admin", "tenant": "evil"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let evil = v["secret"].as_str().unwrap().to_string();
    // Refused when subscribed, with the reason, before anything is stored.
    for (url, kind) in [
        (format!("http://127.0.0.1:{port}/x"), "loopback"),
        ("http://127.0.0.1:22/".to_string(), "loopback"),
        ("http://[::1]:8080/".to_string(), "loopback"),
        ("http://localhost:8080/".to_string(), "loopback"),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "cloud-metadata",
        ),
        ("http://10.0.0.1/".to_string(), "private"),
        ("http://0x7f000001/".to_string(), "loopback"),
    ] {
        let (s, v) = call(
            &base,
            &evil,
            reqwest::Method::POST,
            "/v1/webhooks",
            json!({"url": url, "events": ["*"]}),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{url}: {v}");
        assert!(v["detail"].as_str().unwrap().contains(kind), "{url}: {v}");
    }
    let (_, v) = call(
        &base,
        &evil,
        reqwest::Method::GET,
        "/v1/webhooks",
        Value::Null,
    )
    .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "{v}");
    d.shutdown().await.unwrap();

    // The operator allows 127.0.0.1: the subscription is accepted and delivered to.
    let mut allowed = config(dir.path());
    allowed.outbound.allow = vec!["127.0.0.1".into()];
    let (d, _) = Daemon::start(allowed, None).await.unwrap();
    let base = format!("http://{}", d.addr);
    subscribe_as(
        &base,
        &evil,
        &receiver,
        "evil",
        &format!("http://127.0.0.1:{port}/evil"),
        json!(["key.created"]),
    )
    .await;
    let key = |name: &str| json!({"name": name, "role": "viewer"});
    let (s, _) = call(&base, &evil, reqwest::Method::POST, "/v1/keys", key("one")).await;
    assert_eq!(s, StatusCode::CREATED);
    wait_for(&mut rx, "evil").await;
    d.shutdown().await.unwrap();

    // Without the allowance again, the stored subscription's deliveries are refused when
    // connecting: the receiver gets nothing, and the tenant sees why.
    let (d, _) = Daemon::start(config(dir.path()), None).await.unwrap();
    let base = format!("http://{}", d.addr);
    let (s, _) = call(&base, &evil, reqwest::Method::POST, "/v1/keys", key("two")).await;
    assert_eq!(s, StatusCode::CREATED);
    let refused = eventually("a refused delivery", Duration::from_secs(20), || async {
        let (_, v) = call(
            &base,
            &evil,
            reqwest::Method::GET,
            "/v1/webhooks/deliveries",
            Value::Null,
        )
        .await;
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["error"].as_str().is_some_and(|e| e.contains("loopback")))
            .cloned()
    })
    .await;
    assert_ne!(refused["outcome"], "delivered", "{refused}");
    assert!(rx.try_recv().is_err(), "the receiver got a delivery");
    d.shutdown().await.unwrap();
    server.abort();
}
