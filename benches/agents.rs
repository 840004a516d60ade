//! Agents on a node (`aios::Runtime`, durable snapshots and cost ledger as in production).
//!
//! - `BENCH orchestration`: `AIOS_BENCH_ORCH_AGENTS` (default 1000) agent instances each make
//!   `AIOS_BENCH_ORCH_CALLS` (default 10) sequential tasks, one LLM call each, against the
//!   fake provider (real HTTP on loopback, zero latency) through agents + scheduler
//!   (`concurrency_max = 64`). Baseline in the same run: a hand-written agent loop — the
//!   same number of callers, each keeping its conversation in memory and sending it with
//!   every direct reqwest call to the same kind of fake, at most 64 calls at a time (a
//!   semaphore standing in for the scheduler's cap). `ratio = ours / direct`. Every agent
//!   task also writes the agent's conversation snapshot durably (and the cost totals) before
//!   it returns; the direct loop persists nothing. Both fakes forget request bodies.
//! - `BENCH agent_rpc`: request/reply round trips through `AgentSystem::request` (envelope,
//!   registry lookup, activation map, agent actor, its scripted-model call through the
//!   scheduler, durable snapshot, reply envelope), 32 requesters at a time, each to its own
//!   agent instance, for `AIOS_BENCH_RPC_MS` (default 3000) ms. Baseline: a bare ractor actor
//!   answering `call`s from 32 requesters for the same time.
//! - `BENCH passivation`: `AIOS_BENCH_DEFINED` (default 1,000,000) agent instances defined
//!   (a conversation snapshot each, written straight into the store), then
//!   `AIOS_BENCH_ACTIVE` (default 10,000) of them activated by a first message (`history`,
//!   which restores the snapshot and starts the actor). Resident memory before and after,
//!   p99 of the activating message vs the same message to an already active agent.
//!
//! `AIOS_BENCH_ONLY=<name>` runs one of the three; `AIOS_BENCH_ORCH_SKIP_DIRECT=1` skips the
//! direct side of `orchestration` (for profiling ours).

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aios::actors::agent::{
    AGENT_STATE_SCHEMA_VERSION, AgentDef, AgentRole, AgentState, Task, snapshot_key,
};
use aios::actors::llm::ChatMessage;
use aios::actors::protocol::{AgentId, Envelope, Sender};
use aios::actors::scheduler::config::{LlmConfig, ProviderConfig, ProviderKind};
use aios::actors::scheduler::{RateLimits, SchedulerConfig};
use aios::{Runtime, RuntimeConfig};
use aios_supervisor::snapshot::{Durability, codec};
use aios_testkit::{FakeConfig, FakeLlm};
use common::{bench_line, env_count, fmt0, fmt1, fmt2, per_s, quantile_us};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

const CAP: usize = 64;
const RPC_CONCURRENCY: usize = 32;

fn node_config(dir: &std::path::Path, fake_url: Option<String>) -> RuntimeConfig {
    let mut config = RuntimeConfig::new(dir);
    if let Some(url) = fake_url {
        let mut model = SchedulerConfig::new("fake", "m");
        model.concurrency_max = CAP;
        config.llm = LlmConfig {
            providers: vec![ProviderConfig {
                name: "fake".into(),
                kind: ProviderKind::Openai,
                base_url: Some(url),
                api_key_env: None,
                script_file: None,
                limits: RateLimits::default(),
                retry_attempts_max: 1,
                request_timeout: Duration::from_secs(30),
            }],
            models: vec![model],
        };
    }
    config
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat` (clock
/// ticks of 10 ms; zero where `/proc` is missing).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("the target's tmp dir is writable")
}

async fn orchestration() {
    let agents = env_count("AIOS_BENCH_ORCH_AGENTS", 1000) as usize;
    let calls = env_count("AIOS_BENCH_ORCH_CALLS", 10) as usize;
    let total = (agents * calls) as u64;

    let fake_config = FakeConfig {
        forget_requests: true,
        ..FakeConfig::default()
    };
    // Direct: a hand-written agent loop with plain reqwest to a fresh fake, at most CAP in
    // flight: each caller keeps its conversation in memory and sends it every call, as the
    // agents do, but nothing is scheduled, persisted or supervised.
    let skip_direct = std::env::var_os("AIOS_BENCH_ORCH_SKIP_DIRECT").is_some();
    let fake = FakeLlm::start(fake_config.clone()).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", fake.base_url());
    let gate = Arc::new(tokio::sync::Semaphore::new(CAP));
    let cpu = cpu_time();
    let start = Instant::now();
    let tasks: Vec<_> = (0..if skip_direct { 0 } else { agents })
        .map(|a| {
            let (client, url, gate) = (client.clone(), url.clone(), gate.clone());
            tokio::spawn(async move {
                let mut ok = 0u64;
                let mut messages = vec![serde_json::json!({"role": "system", "content": "You answer."})];
                for c in 0..calls {
                    messages.push(serde_json::json!({"role": "user", "content": format!("agent {a} call {c}")}));
                    let body = serde_json::json!({"model": "m", "messages": messages});
                    let _slot = gate.acquire().await.expect("the semaphore is never closed");
                    let resp = client.post(&url).json(&body).send().await;
                    let answer = match resp {
                        Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
                        _ => None,
                    };
                    if let Some(content) = answer
                        .as_ref()
                        .and_then(|v| v["choices"][0]["message"]["content"].as_str())
                    {
                        messages.push(serde_json::json!({"role": "assistant", "content": content}));
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut direct_ok = 0;
    for t in tasks {
        direct_ok += t.await.expect("a direct caller panicked");
    }
    let direct_elapsed = start.elapsed();
    let direct_cpu = cpu_time().saturating_sub(cpu);
    fake.shutdown().await;

    // Ours: agents on a node, every call through the scheduler.
    let fake = FakeLlm::start(fake_config).await;
    let dir = temp_dir();
    let node = Runtime::open(node_config(dir.path(), Some(fake.base_url())))
        .await
        .expect("the node opens");
    let system = node.agent_system().clone();
    system
        .registry()
        .create(AgentDef::new(
            "w",
            AgentRole::Executor,
            "fake/m",
            "You answer.",
        ))
        .await
        .expect("the definition is valid");
    let cpu = cpu_time();
    let commits = node.group_commits();
    let start = Instant::now();
    let tasks: Vec<_> = (0..agents)
        .map(|a| {
            let system = system.clone();
            tokio::spawn(async move {
                let id = AgentId::new("w", format!("k{a}"));
                let mut ok = 0u64;
                for c in 0..calls {
                    if system
                        .ask(&id, Task::new(format!("agent {a} call {c}")))
                        .await
                        .is_ok()
                    {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut ours_ok = 0;
    for t in tasks {
        ours_ok += t.await.expect("an agent caller panicked");
    }
    let ours_elapsed = start.elapsed();
    let ours_cpu = cpu_time().saturating_sub(cpu);
    let commits = node.group_commits() - commits;
    let peak = node.llm().stats().first().map_or(0, |s| s.in_flight_peak);
    node.shutdown().await.expect("the node stops");
    fake.shutdown().await;

    let ours = per_s(ours_ok, ours_elapsed);
    let direct = per_s(direct_ok, direct_elapsed);
    bench_line(
        "orchestration",
        &[
            ("agents", agents.to_string()),
            ("calls", total.to_string()),
            ("concurrency", CAP.to_string()),
            ("ours_per_s", fmt0(ours)),
            ("direct_per_s", fmt0(direct)),
            ("ratio", fmt2(ours / direct)),
            ("ours_ok", ours_ok.to_string()),
            ("direct_ok", direct_ok.to_string()),
            ("in_flight_peak", peak.to_string()),
            ("group_commits", commits.to_string()),
            (
                "ours_cpu_us_per_call",
                fmt0(ours_cpu.as_secs_f64() * 1e6 / ours_ok.max(1) as f64),
            ),
            (
                "direct_cpu_us_per_call",
                fmt0(direct_cpu.as_secs_f64() * 1e6 / direct_ok.max(1) as f64),
            ),
        ],
    );
}

/// The bare-ractor baseline: an actor that answers a number.
struct Echo;

/// `Echo`'s request.
struct Ping(RpcReplyPort<u64>);

// With ractor's `cluster` feature every message type implements `Message` explicitly.
#[cfg(feature = "cluster")]
impl ractor::Message for Ping {}

impl Actor for Echo {
    type Msg = Ping;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        Ping(reply): Self::Msg,
        n: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        *n += 1;
        let _ = reply.send(*n);
        Ok(())
    }
}

/// Runs `RPC_CONCURRENCY` loops of `call` for `run_for`; returns round trips, latencies, time.
async fn round_trips<F, Fut>(run_for: Duration, call: F) -> (u64, Vec<Duration>, Duration)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let deadline = start + run_for;
    let tasks: Vec<_> = (0..RPC_CONCURRENCY)
        .map(|i| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    assert!(call(i).await, "a round trip failed");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("a requester panicked"));
    }
    (all.len() as u64, all, start.elapsed())
}

async fn agent_rpc() {
    let run_for = Duration::from_millis(env_count("AIOS_BENCH_RPC_MS", 3000));
    let dir = temp_dir();
    let node = Runtime::open(node_config(dir.path(), None))
        .await
        .expect("the node opens");
    let system = node.agent_system().clone();
    for name in ["caller", "callee"] {
        system
            .registry()
            .create(AgentDef::new(
                name,
                AgentRole::Executor,
                "scripted/demo",
                "You answer.",
            ))
            .await
            .expect("the definition is valid");
    }
    let (n, mut lat, elapsed) = round_trips(run_for, move |i| {
        let system = system.clone();
        async move {
            let request = Envelope::request(
                Sender::Agent(AgentId::new("caller", format!("c{i}"))),
                AgentId::new("callee", format!("c{i}")),
                "ping",
            );
            system.request(request).await.is_ok()
        }
    })
    .await;
    node.shutdown().await.expect("the node stops");

    let (echo, handle) = Actor::spawn(None, Echo, ()).await.expect("spawn");
    let (bare_n, _, bare_elapsed) = round_trips(run_for, move |_| {
        let echo = echo.clone();
        async move { echo.call(Ping, Some(Duration::from_secs(5))).await.is_ok() }
    })
    .await;
    handle.abort();

    let ours = per_s(n, elapsed);
    let bare = per_s(bare_n, bare_elapsed);
    bench_line(
        "agent_rpc",
        &[
            ("per_s", fmt0(ours)),
            ("p50_us", fmt0(quantile_us(&mut lat, 0.5))),
            ("p99_us", fmt0(quantile_us(&mut lat, 0.99))),
            ("bare_ractor_per_s", fmt0(bare)),
            ("ratio", fmt2(ours / bare)),
            ("concurrency", RPC_CONCURRENCY.to_string()),
        ],
    );
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn passivation() {
    let defined = env_count("AIOS_BENCH_DEFINED", 1_000_000) as usize;
    let active = (env_count("AIOS_BENCH_ACTIVE", 10_000) as usize).min(defined);
    let dir = temp_dir();
    let node = Runtime::open(node_config(dir.path(), None))
        .await
        .expect("the node opens");
    let system = node.agent_system().clone();
    system
        .registry()
        .create(AgentDef::new(
            "v",
            AgentRole::Executor,
            "scripted/demo",
            "You answer.",
        ))
        .await
        .expect("the definition is valid");
    let state = AgentState {
        conversation: vec![
            ChatMessage::user("hello"),
            ChatMessage::assistant("hi there"),
        ],
        tasks_done: 1,
        ..AgentState::default()
    };
    let payload = codec::encode(&state).expect("the state encodes");
    let start = Instant::now();
    // Written by two tasks in parallel, buffered, then flushed once.
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let snapshots = node.snapshots().clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                for i in (w..defined).step_by(2) {
                    let key = snapshot_key(&AgentId::new("v", format!("k{i}")));
                    snapshots
                        .save(
                            &key,
                            AGENT_STATE_SCHEMA_VERSION,
                            &payload,
                            Durability::Buffered,
                        )
                        .await
                        .expect("a snapshot is written");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("a writer panicked");
    }
    node.snapshots().flush().await.expect("flush");
    let define_s = start.elapsed().as_secs_f64();
    let rss_idle = rss_mb();

    // Spread over the keyspace so activation reads are not all cached neighbours.
    let stride = defined / active;
    let ids: Vec<AgentId> = (0..active)
        .map(|i| AgentId::new("v", format!("k{}", i * stride)))
        .collect();
    let mut activate = Vec::with_capacity(active);
    for id in &ids {
        let t = Instant::now();
        let history = system.history(id).await.expect("activation");
        activate.push(t.elapsed());
        assert_eq!(history.len(), 2, "the snapshot was restored");
    }
    let mut warm = Vec::with_capacity(active);
    for id in &ids {
        let t = Instant::now();
        system.history(id).await.expect("warm call");
        warm.push(t.elapsed());
    }
    assert_eq!(system.active_count(), active);
    let rss_active = rss_mb();
    let activate_p99 = quantile_us(&mut activate, 0.99);
    let warm_p99 = quantile_us(&mut warm, 0.99);
    node.shutdown().await.expect("the node stops");
    bench_line(
        "passivation",
        &[
            ("defined", defined.to_string()),
            ("active", active.to_string()),
            ("rss_mb", fmt0(rss_active)),
            ("activate_p99_us", fmt0(activate_p99)),
            ("activate_p50_us", fmt0(quantile_us(&mut activate, 0.5))),
            ("rss_idle_mb", fmt0(rss_idle)),
            (
                "kb_per_active",
                fmt1((rss_active - rss_idle) * 1024.0 / active as f64),
            ),
            ("warm_p99_us", fmt0(warm_p99)),
            ("ratio", fmt2(activate_p99 / warm_p99)),
            ("define_s", fmt1(define_s)),
        ],
    );
}

fn main() {
    let rt = common::runtime();
    // `AIOS_BENCH_ONLY=agent_rpc` (for example) runs one of them.
    let only = std::env::var("AIOS_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only == name;
    rt.block_on(async {
        if wanted("orchestration") {
            orchestration().await;
        }
        if wanted("agent_rpc") {
            agent_rpc().await;
        }
        if wanted("passivation") {
            passivation().await;
        }
    });
}
