//! Retention through a real `aiosd`: a pass removes the transcript entries, session entries,
//! finished runs and audit entries beyond the configured policy and nothing else; audit
//! entries younger than the minimum stay; the audit chain still verifies from its signed
//! checkpoint; the agent keeps working.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Aiosd, define_team};
use aios_testkit::eventually;

const CONFIG: &str = r#"
[retention]
every = "1h"
transcripts = { max_count = 3 }
sessions = { max_count = 2 }
runs = { max_count = 1 }
[retention.audit]
max_age = "1s"
min_age = "3s"
"#;

async fn finished_run(node: &Aiosd, task: &str) -> String {
    let (s, v) = node
        .post("/v1/runs", json!({"task": task, "planner": "planner"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    // The run's state is read again until it finished (no event to await over this API).
    eventually(
        &format!("run {id} to finish"),
        Duration::from_secs(30),
        || async {
            let (_, v) = node.get(&format!("/v1/runs/{id}")).await;
            v["finished_ms"].is_u64().then_some(())
        },
    )
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_pass_removes_what_the_policy_says_and_nothing_else() {
    let node = Aiosd::start("r", CONFIG, &[]);
    define_team(&node, &["diary"]).await;
    for i in 0..5 {
        let (s, v) = node
            .post(
                "/v1/agents/diary/messages",
                json!({"content": format!("entry {i}")}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = node.post("/v1/sessions", json!({"agent": "diary"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let session = v["id"].as_str().expect("id").to_string();
    for i in 0..4 {
        let (s, v) = node
            .post(
                &format!("/v1/sessions/{session}/messages"),
                json!({"content": format!("note {i}")}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let older = finished_run(&node, "First question").await;
    let newer = finished_run(&node, "Second question").await;
    let (_, audit) = node.get("/v1/audit?limit=1000").await;
    let audited_before = audit["items"].as_array().map_or(0, Vec::len);
    assert!(audited_before >= 10, "{audit}");

    // Entries younger than `min_age` (3 s) stay although `max_age` is 1 s.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let young_since = aios_actors::protocol::unix_ms();
    let (s, v) = node
        .post("/v1/agents/diary/messages", json!({"content": "entry 5"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let (s, report) = node.post("/v1/retention/run", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    // The main instance: 6 entries, 3 kept; the session's instance: 4 entries, 3 kept. A
    // run's instances have at most 2 entries each.
    assert_eq!(report["removed"]["transcripts"], 4, "{report}");
    assert_eq!(
        report["removed"]["sessions"], 6,
        "8 entries, 2 kept: {report}"
    );
    assert_eq!(report["removed"]["runs"], 1, "{report}");
    let audit_removed = report["removed"]["audit"].as_u64().expect("audit count");
    assert!(audit_removed as usize >= audited_before - 1, "{report}");

    // What is left is exactly the newest.
    let (_, h) = node.get("/v1/agents/diary/history").await;
    let seqs: Vec<u64> = h["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    let (_, h) = node
        .get(&format!("/v1/agents/diary/history?session=s-{session}"))
        .await;
    let seqs: Vec<u64> = h["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [1, 2, 3], "{h}");
    let (_, h) = node.get(&format!("/v1/sessions/{session}/history")).await;
    let texts: Vec<&str> = h["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert_eq!(texts.len(), 2, "{h}");
    assert!(texts[0].contains("note 3"), "{h}");
    let (s, _) = node.get(&format!("/v1/runs/{older}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = node.get(&format!("/v1/runs/{newer}")).await;
    assert_eq!(s, StatusCode::OK);

    // The audit log: the young entries stay, and the chain verifies from the checkpoint.
    let (_, young) = node
        .get(&format!("/v1/audit?since_ms={young_since}&limit=1000"))
        .await;
    assert!(
        young["items"].as_array().is_some_and(|a| !a.is_empty()),
        "{young}"
    );
    let (_, verify) = node.get("/v1/audit/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");
    assert!(verify["pruned_before"].as_u64().is_some(), "{verify}");

    // The agent kept its snapshot: it goes on, and its transcript continues.
    let (s, v) = node
        .post("/v1/agents/diary/messages", json!({"content": "entry 6"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, h) = node.get("/v1/agents/diary/history").await;
    assert_eq!(
        h["items"]
            .as_array()
            .and_then(|a| a.last())
            .map(|e| e["seq"].clone()),
        Some(json!(6))
    );
    // Disk use per tenant: the default tenant's agents, transcripts, sessions and runs.
    let (s, usage) = node.get("/v1/usage/disk?refresh=true").await;
    assert_eq!(s, StatusCode::OK, "{usage}");
    let tenant = usage["tenants"]
        .as_object()
        .expect("tenants")
        .iter()
        .find(|(t, _)| t.as_str() != "(node)")
        .map(|(_, u)| u.clone())
        .expect("a tenant's usage");
    for kind in ["agents", "transcripts", "definitions", "sessions", "runs"] {
        assert!(
            tenant["by_kind"][kind].as_u64().is_some_and(|b| b > 0),
            "{kind}: {usage}"
        );
    }
    assert!(
        usage["tenants"]["(node)"]["bytes"]
            .as_u64()
            .is_some_and(|b| b > 0)
    );
    // Another tenant sees only its own use (none), not the others'.
    let (s, v) = node
        .post(
            "/v1/keys",
            json!({"name": "o", "role": "viewer", "tenant": "other"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let r = reqwest::Client::new()
        .get(format!("{}/v1/usage/disk?refresh=true", node.url))
        .bearer_auth(v["secret"].as_str().expect("secret"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let mine: serde_json::Value = r.json().await.expect("json");
    assert_eq!(mine["tenant"], "other", "{mine}");
    assert_eq!(mine["usage"]["bytes"], 0, "{mine}");
    assert!(mine.get("tenants").is_none(), "{mine}");
    let (_, status) = node.get("/v1/retention").await;
    assert_eq!(status["last"]["removed"]["runs"], 1, "{status}");
}
