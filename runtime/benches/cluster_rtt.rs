//! `BENCH cluster_rtt cross_node_p50_us=.. cross_node_p99_us=.. local_p50_us=..
//! bare_cluster_p50_us=.. raw_tcp_p50_us=.. ratio=..` (feature `cluster`:
//! `cargo bench -p aios-runtime --features cluster --bench cluster_rtt`).
//!
//! This process is node `a` of a two-node cluster: a [`Runtime`] on a shared PostgreSQL store
//! and its [`Membership`]; node `b` is a release `aiosd` child on the same store. Measured in
//! the same run, one request at a time, interleaved:
//! - `cross_node`: `AgentSystem::ask` here to an agent active on `b` (forwarded through the
//!   gateways, run there, answered back);
//! - `local`: the same ask to an agent active here;
//! - `bare_cluster`: a ractor_cluster RPC to `b`'s gateway that answers from its handler;
//! - `raw_tcp`: 64 bytes echoed over a loopback TCP connection.
//!
//! Then `BENCH memory_spread searches=.. spread_p50_us=.. spread_p99_us=.. local_p50_us=..
//! ratio=..`: a search (k = 10) of a namespace whose 4 shards are spread over `a` and `b`
//! (two answer through `b`'s gateway) vs the same search of a namespace of the same items
//! placed on `a` alone, interleaved; `ratio` = spread / local.
//!
//! `ratio` = cross-node / bare ractor_cluster, as the issue defines it. An agent request
//! includes the agent's durable snapshot write to PostgreSQL on the node that runs it, in
//! both `local` and `cross_node`; `BENCH cluster_rtt_forwarding` gives what forwarding adds
//! (cross-node − local) and that over the bare call.
//!
//! Requests: `AIOS_BENCH_RTT_N` (default 2000). PostgreSQL is `AIOS_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); without it the benchmark says so and prints no
//! line.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

#[path = "../../benches/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aios_actors::agent::{AgentDef, AgentRole, Task};
use aios_actors::protocol::AgentId;
use aios_runtime::cluster::{ClusterConfig, Membership, NodeStats, Served, gateway};
use aios_runtime::{Runtime, RuntimeConfig, StoreBackend};
use aios_supervisor::snapshot::{PostgresOptions, PostgresStore};
use common::{bench_line, env_count, fmt0, fmt2, quantile_us};
use support::{ADMIN, Aiosd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "the-benchmark-cluster-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `aiosd` as node `b`, joining through `seed`.
fn start_b(pg: &str, ns: &str, seed: &str) -> Aiosd {
    Aiosd::start(
        &format!(
            "[rate_limit]\nrequests_per_s = 100000\nburst = 100000\n\
             [store]\nbackend = \"postgres\"\nurl = \"{pg}\"\nnamespace = \"{ns}\"\nnode = \"b\"\n\
             [cluster]\nlisten = \"127.0.0.1:{}\"\nseeds = [\"{seed}\"]\n",
            free_port()
        ),
        &[("AIOS_CLUSTER_SECRET", SECRET)],
    )
}

/// A loopback TCP echo server; returns its address.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while s.read_exact(&mut buf).await.is_ok() {
                    if s.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Retries `f` until it succeeds (at most 60 s): the cluster and the definitions settle.
async fn eventually<F, Fut, T, E>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// `BENCH memory_spread`: `n` searches of a namespace spread over a and b vs one on a alone.
async fn memory_spread(node: &Runtime, n: usize) {
    use aios_actors::agent::Placement;
    use aios_actors::memory::{NamespaceSpec, NewMemory, SearchRequest};
    let memory = node.memory_store();
    let (spread, local) = ("default.spread", "default.local");
    for name in [spread, local] {
        memory
            .create_namespace(NamespaceSpec::new(name, 4))
            .await
            .expect("namespace");
    }
    memory
        .set_placement(
            local,
            Placement {
                node: Some("a".into()),
                ..Placement::default()
            },
        )
        .await
        .expect("placement");
    let items = 4000;
    for chunk in (0..items).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<NewMemory> = chunk
            .iter()
            .map(|i| NewMemory::text(format!("item {i}: parcel {} to depot {}", i * 7, i % 13)))
            .collect();
        for name in [spread, local] {
            memory
                .remember(name, batch.clone())
                .await
                .expect("remember");
        }
    }
    let nodes = |name: &'static str| async move {
        let shards = memory.shards(name).await.expect("shards");
        let mut nodes: Vec<String> = shards.into_iter().filter_map(|s| s.node).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    };
    assert_eq!(nodes(spread).await, ["a", "b"], "spread over both nodes");
    assert_eq!(nodes(local).await, ["a"], "placed on a");
    let (mut s, mut l) = (Vec::new(), Vec::new());
    let warmup = n / 10;
    for i in 0..n + warmup {
        let q = format!("parcel to depot {}", i % 13);
        let t = Instant::now();
        let found = memory
            .search(spread, SearchRequest::text(q.clone(), 10))
            .await
            .expect("spread search");
        let ts = t.elapsed();
        assert!(!found.partial && found.hits.len() == 10);
        let t = Instant::now();
        let found = memory
            .search(local, SearchRequest::text(q, 10))
            .await
            .expect("local search");
        let tl = t.elapsed();
        assert!(!found.partial && found.hits.len() == 10);
        if i >= warmup {
            s.push(ts);
            l.push(tl);
        }
    }
    let spread_p50 = quantile_us(&mut s, 0.5);
    let local_p50 = quantile_us(&mut l, 0.5);
    bench_line(
        "memory_spread",
        &[
            ("searches", n.to_string()),
            ("items", items.to_string()),
            ("spread_p50_us", fmt0(spread_p50)),
            ("spread_p99_us", fmt0(quantile_us(&mut s, 0.99))),
            ("local_p50_us", fmt0(local_p50)),
            ("ratio", fmt2(spread_p50 / local_p50)),
        ],
    );
}

fn main() {
    let rt = common::runtime();
    rt.block_on(async {
        let pg = std::env::var("AIOS_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let n = env_count("AIOS_BENCH_RTT_N", 2000).max(10) as usize;
        let ns = format!(
            "bench_rtt_{}",
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..8)
                .expect("uuid")
        );
        let store =
            match PostgresStore::connect(PostgresOptions::new(pg.clone()).namespace(ns.clone()))
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cluster_rtt: no PostgreSQL at {pg} ({e}); skipped");
                    return;
                }
            };

        // Node a: this process.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = RuntimeConfig::new(dir.path());
        config.store.backend = StoreBackend::Postgres;
        config.store.url = Some(pg.clone());
        config.store.namespace = ns.clone();
        config.store.node = "a".into();
        let node = Runtime::open(config).await.expect("node a");
        let system = node.agent_system().clone();
        let listen: std::net::SocketAddr =
            format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let cluster = ClusterConfig {
            listen: Some(listen),
            secret: Some(SECRET.into()),
            ..ClusterConfig::default()
        };
        let served = Served {
            system: system.clone(),
            memory: Some(node.memory_store().clone()),
            tools: None,
            stats: Arc::new(NodeStats::default),
        };
        let membership = Membership::start("a", &cluster, served)
            .await
            .expect("membership");

        // Node b, and its gateway reachable from here.
        let b = start_b(&pg, &ns, &listen.to_string());
        eventually("b's gateway", || {
            gateway::echo("b", vec![1], Duration::from_secs(1))
        })
        .await;

        // Two agents: one active here, one active on b (activated by a message to b).
        for name in ["default.near", "default.far"] {
            let def = AgentDef::new(name, AgentRole::Executor, "scripted/demo", "Hi.");
            system.registry().create(def).await.expect("define");
        }
        let near = AgentId::main("default.near");
        let far = AgentId::main("default.far");
        system.ask(&near, Task::new("hello")).await.expect("near");
        let http = reqwest::Client::new();
        eventually("activating far on b", || async {
            let r = http
                .post(format!("{}/v1/agents/far/messages", b.url))
                .bearer_auth(ADMIN)
                .json(&serde_json::json!({"content": "hello"}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status().is_success() {
                Ok(())
            } else {
                Err(format!("{}", r.status()))
            }
        })
        .await;

        let tcp_addr = echo_server().await;
        let mut tcp = tokio::net::TcpStream::connect(tcp_addr)
            .await
            .expect("connect");
        tcp.set_nodelay(true).expect("nodelay");

        let (mut cross, mut local, mut bare, mut raw) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let warmup = n / 10;
        for i in 0..n + warmup {
            let t = Instant::now();
            system.ask(&far, Task::new("ping")).await.expect("far");
            let c = t.elapsed();
            let t = Instant::now();
            system.ask(&near, Task::new("ping")).await.expect("near");
            let l = t.elapsed();
            let t = Instant::now();
            gateway::echo("b", vec![0u8; 64], Duration::from_secs(5))
                .await
                .expect("echo");
            let e = t.elapsed();
            let t = Instant::now();
            let mut buf = [0u8; 64];
            tcp.write_all(&buf).await.expect("write");
            tcp.read_exact(&mut buf).await.expect("read");
            let r = t.elapsed();
            if i >= warmup {
                cross.push(c);
                local.push(l);
                bare.push(e);
                raw.push(r);
            }
        }
        let cross_p50 = quantile_us(&mut cross, 0.5);
        let cross_p99 = quantile_us(&mut cross, 0.99);
        let local_p50 = quantile_us(&mut local, 0.5);
        let bare_p50 = quantile_us(&mut bare, 0.5);
        let raw_p50 = quantile_us(&mut raw, 0.5);
        bench_line(
            "cluster_rtt",
            &[
                ("cross_node_p50_us", fmt0(cross_p50)),
                ("cross_node_p99_us", fmt0(cross_p99)),
                ("local_p50_us", fmt0(local_p50)),
                ("bare_cluster_p50_us", fmt0(bare_p50)),
                ("raw_tcp_p50_us", fmt0(raw_p50)),
                ("ratio", fmt2(cross_p50 / bare_p50)),
            ],
        );
        let added = (cross_p50 - local_p50).max(0.0);
        bench_line(
            "cluster_rtt_forwarding",
            &[
                ("requests", n.to_string()),
                ("added_p50_us", fmt0(added)),
                ("added_over_bare", fmt2(added / bare_p50)),
                ("bare_over_raw_tcp", fmt2(bare_p50 / raw_p50)),
            ],
        );
        memory_spread(&node, n / 4).await;
        drop(b);
        membership.shutdown();
        let _ = node.shutdown().await;
        let _ = store.drop_tables().await;
    });
}
