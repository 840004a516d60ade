//! Cluster membership between real `aiosd` processes on 127.0.0.1 (built with the `cluster`
//! feature: `cargo test -p aios-runtime --features cluster --test membership`, which `.ci/run`
//! runs): three nodes join through one seed and see each other, a node with another secret is
//! refused, and a node killed with SIGKILL is seen down.
#![cfg(feature = "cluster")]

mod common;

use std::time::{Duration, Instant};

use common::Aiosd;
use serde_json::Value;

const SECRET: &str = "a-shared-secret-of-the-cluster";
const WAIT: Duration = Duration::from_secs(30);

/// A free port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node on its own data directory, in the cluster of `secret`, joining through `seeds`.
struct Node {
    aiosd: Aiosd,
    cluster_addr: String,
}

impl Node {
    fn start(name: &str, secret: &str, seeds: &[&str]) -> Node {
        let cluster_addr = format!("127.0.0.1:{}", free_port());
        let seeds: Vec<String> = seeds.iter().map(|s| format!("{s:?}")).collect();
        let config = format!(
            "[store]\nnode = \"{name}\"\n[cluster]\nlisten = \"{cluster_addr}\"\nseeds = [{}]\n",
            seeds.join(", ")
        );
        Node {
            aiosd: Aiosd::start(name, &config, &[("AIOS_CLUSTER_SECRET", secret)]),
            cluster_addr,
        }
    }

    async fn nodes(&self) -> Value {
        let (s, v) = self.aiosd.get("/v1/cluster/nodes").await;
        assert!(s.is_success(), "{s}: {v}");
        v
    }

    /// The names of the peers this node sees with `status`.
    async fn peers(&self, status: &str) -> Vec<String> {
        let v = self.nodes().await;
        let mut names: Vec<String> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["status"] == status)
            .map(|n| {
                let name = n["name"].as_str().unwrap();
                name.split('@').next().unwrap().to_string()
            })
            .collect();
        names.sort();
        names
    }

    /// Polls the node's view until `status` peers are exactly `want` (membership changes come
    /// from sessions opening and closing; the API shows the state, not the event).
    async fn await_peers(&self, status: &str, want: &[&str]) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.peers(status).await;
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} sees {status} peers {got:?}, not {want:?}",
                self.aiosd.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_through_a_seed_refuse_a_wrong_secret_and_see_a_killed_node_down() {
    let a = Node::start("a", SECRET, &[]);
    let b = Node::start("b", SECRET, &[&a.cluster_addr]);
    let c = Node::start("c", SECRET, &[&a.cluster_addr]);
    // b and c only know a; they meet each other through it (transitive connections).
    a.await_peers("up", &["b", "c"]).await;
    b.await_peers("up", &["a", "c"]).await;
    c.await_peers("up", &["a", "b"]).await;
    let me = a.nodes().await;
    assert_eq!(me["cluster"], true);
    assert_eq!(me["self"]["name"], "a");
    assert_eq!(me["self"]["address"], a.cluster_addr.as_str());
    assert!(me["self"]["actors"].as_u64().unwrap() > 0, "{me}");

    // A node with another secret reaches a's port but never authenticates.
    let d = Node::start("d", "not-the-secret-of-this-cluster", &[&a.cluster_addr]);
    d.aiosd.await_log("closed before it authenticated");
    assert!(d.peers("up").await.is_empty());
    assert_eq!(a.peers("up").await, ["b", "c"]);

    // SIGKILL: its sessions close, and the others see it down.
    drop(b);
    a.await_peers("down", &["b"]).await;
    c.await_peers("down", &["b"]).await;
    assert_eq!(a.peers("up").await, ["c"]);
}
