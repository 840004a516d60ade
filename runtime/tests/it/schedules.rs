//! Scheduled runs through real `aiosd` processes: cron schedules fire once per due time
//! across a SIGKILL and a restart, due times missed while the daemon was down follow each
//! schedule's policy, a one-off delayed run fires once, and bad schedules are refused.

use crate::common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Aiosd, define_team};
use aios_testkit::eventually;

/// Due times more than 2 s late are missed (the default is a minute).
const CONFIG: &str = "[schedules]\nmissed_after = \"2s\"\n";

async fn schedule(node: &Aiosd, id: &str) -> Value {
    let (s, v) = node.get(&format!("/v1/schedules/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Waits until schedule `id` has fired `n` times (there is no event to await: the
/// schedule's record is read again, for at most a minute).
async fn wait_fired(node: &Aiosd, id: &str, n: u64) -> Value {
    eventually(
        &format!("schedule {id} to fire {n} times"),
        Duration::from_secs(60),
        || async {
            let v = schedule(node, id).await;
            if count(&v, "fired") >= n {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        },
    )
    .await
}

async fn create(node: &Aiosd, body: Value) -> String {
    let (s, v) = node.post("/v1/schedules", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().expect("an id").to_string()
}

/// Runs of the tenant whose task is `task`, by id.
async fn runs_of(node: &Aiosd, task: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/runs?limit=200&after={a}"),
            None => "/v1/runs?limit=200".to_string(),
        };
        let (s, v) = node.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let items = v["items"].as_array().cloned().unwrap_or_default();
        out.extend(items.into_iter().filter(|r| r["spec"]["task"] == task));
        match v["next"].as_str() {
            Some(n) if after.as_deref() != Some(n) => after = Some(n.to_string()),
            _ => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_once_per_due_time_across_a_sigkill_and_a_restart() {
    let data = tempfile::tempdir().expect("dir");
    let node = Aiosd::start_in("a", Some(data.path()), CONFIG, &[]);
    define_team(&node, &[]).await;

    // Bad schedules are refused, naming the field (422: the body does not match the type).
    for (body, field) in [
        (
            json!({"name": "x", "task": "t", "cron": "61 * * * *"}),
            "cron",
        ),
        (json!({"name": "x", "task": "t", "cron": "* * * *"}), "cron"),
        (
            json!({"name": "x", "task": "t", "cron": "0 3 * * *", "timezone": "Mars/Base"}),
            "timezone",
        ),
        (
            json!({"name": "x", "task": "t", "cron": "0 3 * * *", "delay_s": 5}),
            "exactly one",
        ),
        (json!({"name": "x", "task": "t", "at_ms": 1000}), "at_ms"),
        (
            json!({"name": "x", "task": "t", "delay_s": 5, "planner": "nobody"}),
            "planner",
        ),
        (
            json!({"name": "x", "task": "t", "delay_s": 5, "on_missed": "often"}),
            "on_missed",
        ),
    ] {
        let (s, v) = node.post("/v1/schedules", body).await;
        let expected = if field == "on_missed" {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(s, expected, "{v}");
        assert!(
            v["detail"].as_str().unwrap_or_default().contains(field),
            "{v}"
        );
    }

    let every = create(
        &node,
        json!({"name": "every-second", "cron": "* * * * * *", "task": "Report A",
               "planner": "planner"}),
    )
    .await;
    let skipping = create(
        &node,
        json!({"name": "every-second-skip", "cron": "* * * * * *", "timezone": "Europe/Oslo",
               "task": "Report B", "planner": "planner", "on_missed": "skip"}),
    )
    .await;
    let once = create(
        &node,
        json!({"name": "later", "delay_s": 1, "task": "Report C", "planner": "planner"}),
    )
    .await;
    wait_fired(&node, &every, 3).await;
    wait_fired(&node, &skipping, 3).await;
    wait_fired(&node, &once, 1).await;

    // SIGKILL, down for longer than `missed_after`, then the same data directory again.
    node.signal("-KILL");
    drop(node);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let node = Aiosd::start_in("a-again", Some(data.path()), CONFIG, &[]);
    let a = schedule(&node, &every).await;
    let b = schedule(&node, &skipping).await;
    wait_fired(&node, &every, count(&a, "fired") + 3).await;
    wait_fired(&node, &skipping, count(&b, "fired") + 3).await;
    for id in [&every, &skipping] {
        let (s, v) = node
            .post(&format!("/v1/schedules/{id}/pause"), json!({}))
            .await;
        assert_eq!(
            (s, v["paused"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{v}"
        );
    }

    for (id, task) in [(&every, "Report A"), (&skipping, "Report B")] {
        let v = schedule(&node, id).await;
        let first_due = (count(&v, "created_ms") / 1000 + 1) * 1000;
        let last_due = count(&v, "last_due_ms");
        // Every due time from the first to the last fired one was fired once or missed.
        assert_eq!(
            count(&v, "fired") + count(&v, "missed"),
            (last_due - first_due) / 1000 + 1,
            "{v}"
        );
        // And each firing is one run: none twice.
        let runs = runs_of(&node, task).await;
        assert_eq!(runs.len() as u64, count(&v, "fired"), "{task}: {v}");
        let last_run = v["last_run"].as_str().expect("a run");
        assert!(runs.iter().any(|r| r["id"] == last_run));
    }
    // Down for about 4 s: several due times were missed by each. `run_once` fired the latest
    // of them, `skip` none.
    let a = schedule(&node, &every).await;
    let b = schedule(&node, &skipping).await;
    assert!(count(&a, "missed") >= 1, "{a}");
    assert!(count(&b, "missed") >= 2, "{b}");
    assert_eq!(b["when"]["timezone"], "Europe/Oslo");

    // The one-off run fired once and is done.
    let c = schedule(&node, &once).await;
    assert_eq!(
        (count(&c, "fired"), c["next_due_ms"].clone()),
        (1, Value::Null),
        "{c}"
    );
    assert_eq!(runs_of(&node, "Report C").await.len(), 1);

    // Another tenant sees none of them and cannot touch them.
    let (s, v) = node
        .post(
            "/v1/keys",
            json!({"name": "other", "role": "operator", "tenant": "other"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let other = v["secret"].as_str().expect("secret").to_string();
    let as_other = |method: reqwest::Method, path: String| {
        reqwest::Client::new()
            .request(method, format!("{}{path}", node.url))
            .bearer_auth(&other)
            .json(&json!({}))
            .send()
    };
    let r = as_other(reqwest::Method::GET, "/v1/schedules".into())
        .await
        .expect("request");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["items"], json!([]), "{v}");
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/schedules/{every}")),
        (
            reqwest::Method::POST,
            format!("/v1/schedules/{every}/resume"),
        ),
        (reqwest::Method::DELETE, format!("/v1/schedules/{every}")),
    ] {
        let r = as_other(method, path).await.expect("request");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    // Listed, deleted.
    let (_, list) = node.get("/v1/schedules").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(3));
    let (s, _) = node
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/schedules/{once}"),
            json!(null),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = node.get(&format!("/v1/schedules/{once}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Which of `nodes` fires the schedules (exactly one, once settled), by index.
async fn firing_node(nodes: &[&Aiosd]) -> usize {
    eventually(
        "a node to fire the schedules",
        Duration::from_secs(30),
        || async {
            let mut firing = Vec::new();
            for (i, node) in nodes.iter().enumerate() {
                let (s, v) = node.get("/v1/schedules").await;
                assert_eq!(s, StatusCode::OK, "{v}");
                if v["fires_here"] == true {
                    firing.push(i);
                }
            }
            assert!(
                firing.len() <= 1,
                "two nodes fire the schedules: {firing:?}"
            );
            firing.first().copied()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_store_one_node_fires_each_due_time_and_another_takes_over() {
    let Some((ns, store)) = common::namespace("sched").await else {
        return;
    };
    let pg = common::pg_url();
    let config = |name: &str| {
        format!(
            "{CONFIG}[store]\nbackend = \"postgres\"\nurl = \"{pg}\"\nnamespace = \"{ns}\"\n\
             node = \"{name}\"\nlease_ttl = \"1s\"\n"
        )
    };
    let mut nodes = vec![
        Aiosd::start("a", &config("a"), &[]),
        Aiosd::start("b", &config("b"), &[]),
    ];
    define_team(&nodes[0], &[]).await;
    let firing = firing_node(&[&nodes[0], &nodes[1]]).await;
    let other = 1 - firing;
    // b follows the definitions made on a within its refresh (2 s).
    eventually("b to see the planner", Duration::from_secs(10), || async {
        (nodes[1].get("/v1/agents/planner").await.0 == StatusCode::OK).then_some(())
    })
    .await;

    // Created through the node that does not fire: the other picks it up and fires it.
    let every = create(
        &nodes[other],
        json!({"name": "every-second", "cron": "* * * * * *", "task": "Report S",
               "planner": "planner"}),
    )
    .await;
    let v = wait_fired(&nodes[other], &every, 3).await;
    assert_eq!(v["last_error"], Value::Null, "{v}");
    // Paused through the node that does not fire: the firing node holds it.
    let (s, v) = nodes[other]
        .post(&format!("/v1/schedules/{every}/pause"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Seen paused by the firing node at the schedule's next due time.
    let seen = eventually(
        "the firing node to see the pause",
        Duration::from_secs(10),
        || async {
            let seen = schedule(&nodes[firing], &every).await;
            (seen["paused"] == true).then_some(seen)
        },
    )
    .await;
    let paused_at = count(&seen, "fired");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = schedule(&nodes[firing], &every).await;
    assert_eq!(count(&v, "fired"), paused_at, "fired while paused: {v}");
    assert_eq!(v["paused"], true, "{v}");
    let (s, v) = nodes[other]
        .post(&format!("/v1/schedules/{every}/resume"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_fired(&nodes[other], &every, paused_at + 2).await;

    // The firing node dies: the other takes over within a lease TTL and goes on.
    let survivor = nodes.remove(other);
    drop(nodes); // SIGKILL
    let before = count(&schedule(&survivor, &every).await, "fired");
    wait_fired(&survivor, &every, before + 3).await;
    let (_, list) = survivor.get("/v1/schedules").await;
    assert_eq!(list["fires_here"], true, "{list}");

    // Paused, then counted: every firing of either node is one run, none twice.
    let (s, _) = survivor
        .post(&format!("/v1/schedules/{every}/pause"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let v = schedule(&survivor, &every).await;
    let runs = runs_of(&survivor, "Report S").await;
    assert_eq!(runs.len() as u64, count(&v, "fired"), "{v}");
    let mut ids: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), runs.len(), "a run twice");
    drop(survivor);
    store.drop_tables().await.unwrap();
}
