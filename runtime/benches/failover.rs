//! `BENCH failover trials=.. p50_s=.. p99_s=..`: two release `aiosd` nodes on one PostgreSQL
//! store. Each trial starts node a, gives it `AIOS_BENCH_FAILOVER_AGENTS` (default 10) agents
//! with one conversation turn each, starts node b, kills a with SIGKILL, and times until every
//! one of a's agents has answered a new message on b (each activation there waits for a's
//! lease on the agent to lapse). Trials: `AIOS_BENCH_FAILOVER_TRIALS` (default 3); lease TTL:
//! `AIOS_BENCH_FAILOVER_TTL_MS` (default 10000, the daemon's default).
//!
//! Baseline in the same run (`BENCH failover_baseline`): the lease TTL, the bound the design
//! promises, and the time b takes to answer an agent that no node held (a cold activation
//! from PostgreSQL).
//!
//! PostgreSQL is `AIOS_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! without it the benchmark says so and prints no line.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

#[path = "../../benches/common/mod.rs"]
mod common;
mod support;

use std::time::Instant;

use aios_supervisor::snapshot::{PostgresOptions, PostgresStore};
use common::{bench_line, env_count, fmt0, fmt2, quantile_us};
use serde_json::json;
use support::{ADMIN, Aiosd};

fn start(name: &str, pg: &str, ns: &str, ttl_ms: u64) -> Aiosd {
    Aiosd::start(
        &format!(
            "[rate_limit]\nrequests_per_s = 100000\nburst = 100000\n\
             [store]\nbackend = \"postgres\"\nurl = \"{pg}\"\nnamespace = \"{ns}\"\n\
             node = \"{name}\"\nlease_ttl = \"{ttl_ms}ms\"\n"
        ),
        &[],
    )
}

async fn post(http: &reqwest::Client, node: &Aiosd, path: &str, body: serde_json::Value) {
    let r = http
        .post(format!("{}{path}", node.url))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status();
    assert!(
        status.is_success(),
        "{path}: {status} {}",
        r.text().await.unwrap_or_default()
    );
}

async fn create_agents(http: &reqwest::Client, node: &Aiosd, prefix: &str, n: u64) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}{i}");
        post(
            http,
            node,
            "/v1/agents",
            json!({"name": name, "role": "executor", "model": "scripted/demo", "system_prompt": "Hi."}),
        )
        .await;
        names.push(name);
    }
    names
}

/// Sends one message to every agent at once and returns when all have answered.
async fn ask_all(http: &reqwest::Client, node: &Aiosd, names: &[String], text: &str) {
    let paths: Vec<String> = names
        .iter()
        .map(|name| format!("/v1/agents/{name}/messages"))
        .collect();
    let asks = paths
        .iter()
        .map(|path| post(http, node, path, json!({ "content": text })));
    // Concurrently: every activation on the new node waits for the same lease expiry.
    futures_util::future::join_all(asks).await;
}

fn main() {
    let rt = common::runtime();
    rt.block_on(async {
        let pg = std::env::var("AIOS_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let trials = env_count("AIOS_BENCH_FAILOVER_TRIALS", 3).max(1);
        let agents = env_count("AIOS_BENCH_FAILOVER_AGENTS", 10).max(1);
        let ttl_ms = env_count("AIOS_BENCH_FAILOVER_TTL_MS", 10_000);
        let http = reqwest::Client::new();
        let mut samples = Vec::new();
        let mut cold = Vec::new();
        for trial in 0..trials {
            let ns = format!(
                "bench_failover_{}",
                uuid::Uuid::new_v4()
                    .simple()
                    .to_string()
                    .get(..8)
                    .expect("uuid")
            );
            let store = match PostgresStore::connect(
                PostgresOptions::new(pg.clone()).namespace(ns.clone()),
            )
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("failover: no PostgreSQL at {pg} ({e}); skipped");
                    return;
                }
            };
            let a = start("a", &pg, &ns, ttl_ms);
            let names = create_agents(&http, &a, "agent", agents).await;
            ask_all(&http, &a, &names, "hello").await;
            // Defined but never active: b's cold activations, the baseline.
            let idle = create_agents(&http, &a, "idle", 1).await;
            let b = start("b", &pg, &ns, ttl_ms);
            let t = Instant::now();
            ask_all(&http, &b, &idle, "hello").await;
            cold.push(t.elapsed());

            drop(a); // SIGKILL
            let killed = Instant::now();
            ask_all(&http, &b, &names, "are you there?").await;
            let took = killed.elapsed();
            eprintln!("failover trial {trial}: {agents} agents answered on b after {took:?}");
            samples.push(took);
            drop(b);
            let _ = store.drop_tables().await;
        }
        let n = samples.len();
        let p50 = quantile_us(&mut samples, 0.5) / 1e6;
        let p99 = quantile_us(&mut samples, 0.99) / 1e6;
        bench_line(
            "failover",
            &[
                ("trials", n.to_string()),
                ("p50_s", fmt2(p50)),
                ("p99_s", fmt2(p99)),
            ],
        );
        let cold_ms = quantile_us(&mut cold, 0.5) / 1e3;
        bench_line(
            "failover_baseline",
            &[
                ("agents", agents.to_string()),
                ("lease_ttl_s", fmt2(ttl_ms as f64 / 1e3)),
                ("cold_activation_ms", fmt0(cold_ms)),
                ("p50_over_ttl", fmt2(p50 / (ttl_ms as f64 / 1e3))),
            ],
        );
    });
}
