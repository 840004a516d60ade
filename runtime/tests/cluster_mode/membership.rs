//! Cluster membership between real `aiosd` processes on 127.0.0.1 (built with the `cluster`
//! feature: `cargo test -p aios-runtime --features cluster --test cluster_mode`, which `.ci/run`
//! runs): three nodes join through one seed and see each other, a node with another secret is
//! refused, and a node killed with SIGKILL is seen down. On a shared PostgreSQL store, a task
//! for an agent active on another node is forwarded there and answered as if local, topic
//! events reach every node, and a task in flight on a node that dies fails at once with a
//! clear error, after which the agent resumes on a surviving node with its conversation.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{Aiosd, Proxy, define, last_prompt, namespace, pg_url, say};
use aios_testkit::{FakeConfig, FakeLlm, FakeReply, FakeToolCall, eventually};
use reqwest::StatusCode;
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
        Self::start_with(
            name,
            secret,
            seeds,
            &format!("[store]\nnode = \"{name}\"\n"),
            "",
        )
    }

    /// A node of the cluster on the shared store (namespace `ns`, 1 s leases), with the fake
    /// model at `llm`.
    fn shared(name: &str, seeds: &[&str], ns: &str, llm: &str) -> Node {
        Self::shared_tagged(name, seeds, ns, llm, &[])
    }

    /// Nodes `a` and `b` of the cluster on the shared store, each reaching the other.
    async fn shared_pair(ns: &str, llm: &str) -> (Node, Node) {
        let a = Node::shared("a", &[], ns, llm);
        let b = Node::shared("b", &[&a.cluster_addr], ns, llm);
        a.await_reachable("b").await;
        b.await_reachable("a").await;
        (a, b)
    }

    /// Nodes `a` and `b` of the cluster on the shared store, `b` reaching `a` only through
    /// the returned proxy, which the test can cut. Both dial only their seeds (`a` has none):
    /// otherwise the two dial each other directly as well, and ractor_cluster closes one of
    /// the two sessions, at times the proxied one.
    async fn split_pair(ns: &str, llm: &str) -> (Node, Proxy, Node) {
        let seeds_only = |name: &str, seeds: &[&str]| {
            let config = common::shared_store_config(name, ns, llm, &pg_url());
            Self::start_with(name, SECRET, seeds, &config, "dial_seeds_only = true")
        };
        let a = seeds_only("a", &[]);
        let proxy = Proxy::start(a.cluster_addr.clone()).await;
        let b = seeds_only("b", &[&proxy.addr.to_string()]);
        b.await_reachable("a").await;
        a.await_reachable("b").await;
        (a, proxy, b)
    }

    /// As [`Node::shared`], with cluster tags.
    fn shared_tagged(name: &str, seeds: &[&str], ns: &str, llm: &str, tags: &[&str]) -> Node {
        let tags: Vec<String> = tags.iter().map(|t| format!("{t:?}")).collect();
        let config = common::shared_store_config(name, ns, llm, &pg_url());
        Self::start_with(
            name,
            SECRET,
            seeds,
            &config,
            &format!("tags = [{}]", tags.join(", ")),
        )
    }

    /// A node with `config`, whose `[cluster]` section gets `cluster` (more TOML lines).
    fn start_with(name: &str, secret: &str, seeds: &[&str], config: &str, cluster: &str) -> Node {
        Self::start_with_env(name, secret, seeds, config, cluster, &[])
    }

    /// As [`Node::start_with`], the process with `env` too.
    fn start_with_env(
        name: &str,
        secret: &str,
        seeds: &[&str],
        config: &str,
        cluster: &str,
        env: &[(&str, &str)],
    ) -> Node {
        let seeds: Vec<String> = seeds.iter().map(|s| format!("{s:?}")).collect();
        let mut env = env.to_vec();
        env.push(("AIOS_CLUSTER_SECRET", secret));
        // The port is free when chosen, but another test's process may take it before this
        // node binds it: such a node exits at start, and is started again on another port.
        for _ in 0..3 {
            let cluster_addr = format!("127.0.0.1:{}", free_port());
            let config = format!(
                "{config}\n[cluster]\nlisten = \"{cluster_addr}\"\nseeds = [{}]\n{cluster}\n",
                seeds.join(", ")
            );
            if let Some(aiosd) = Aiosd::try_start_in(name, None, &config, &env) {
                return Node {
                    aiosd,
                    cluster_addr,
                };
            }
            eprintln!("aiosd {name} exited at start (its cluster port taken?): starting it again");
        }
        panic!("aiosd {name} exited at start three times")
    }

    /// This node's view of peer `node`.
    async fn peer(&self, node: &str) -> Value {
        let v = self.nodes().await;
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == node)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until this node reaches `node`'s gateway (its figures are in the view).
    async fn await_reachable(&self, node: &str) {
        let what = format!("{node} reachable from {}", self.aiosd.url);
        eventually(&what, WAIT, || async {
            self.peer(node).await["actors"].as_u64().map(|_| ())
        })
        .await;
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
        let what = format!("{} to see {status} peers {want:?}", self.aiosd.url);
        eventually(&what, WAIT, || async {
            let got = self.peers(status).await;
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        })
        .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_for_an_agent_on_another_node_is_forwarded_there_and_answered_here() {
    let Some((ns, store)) = namespace("forward").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    let a = Node::shared("a", &[], &ns, &llm);
    let b = Node::shared("b", &[&a.cluster_addr], &ns, &llm);
    let c = Node::shared("c", &[&a.cluster_addr], &ns, &llm);
    b.await_reachable("a").await;
    c.await_reachable("a").await;

    define(&a.aiosd, "far").await;
    let (s, v) = say(&a.aiosd, "far", "the word is fig").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // b and c learn the definition within 2 s; then their tasks run on a, where the agent is
    // active, and the answers come back through them.
    eventually("b to learn the agent", WAIT, || async {
        let (s, v) = say(&b.aiosd, "far", "which word?").await;
        if s != StatusCode::OK {
            assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        }
        (s == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(
        last_prompt(&fake),
        ["the word is fig", "which word?"],
        "one conversation, on node a"
    );
    await_defined(&c, "far").await;
    let (s, v) = say(&c.aiosd, "far", "and now?").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        last_prompt(&fake),
        ["the word is fig", "which word?", "and now?"]
    );
    // The agent is active on a only; b's view shows it in a's figures.
    let (_, me) = b.aiosd.get("/v1/cluster/nodes").await;
    assert_eq!(me["self"]["agents_active"], 0, "{me}");
    let seen = b.peer("a").await;
    assert_eq!(seen["agents_active"], 1, "{seen}");
    assert!(seen["actors"].as_u64().unwrap() > 0, "{seen}");

    // A task in flight on a when a dies fails at once with a clear error, not at the task's
    // timeout; the next one resumes the agent on b from its last snapshot.
    let gate = Arc::new(tokio::sync::Notify::new());
    fake.push_script(FakeReply::Gated(
        gate.clone(),
        Box::new(FakeReply::Text("never sent".into())),
    ));
    let asking = {
        let url = b.aiosd.url.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/agents/far/messages"))
                .bearer_auth(common::ADMIN)
                .json(&serde_json::json!({"content": "lost with a"}))
                .send()
                .await
                .unwrap()
        })
    };
    fake.wait_in_flight(1).await;
    let killed = Instant::now();
    drop(a); // SIGKILL, with the task in the model call
    let resp = asking.await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    eprintln!(
        "in-flight task failed {:?} after its node was killed",
        killed.elapsed()
    );
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("node \"a\" was lost"),
        "{body}"
    );
    gate.notify_one();
    let (s, v) = say(&b.aiosd, "far", "still there?").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let prompt = last_prompt(&fake);
    assert_eq!(
        prompt[..3],
        ["the word is fig", "which word?", "and now?"],
        "the conversation resumed on b: {prompt:?}"
    );
    assert_eq!(prompt.last().unwrap(), "still there?");
    let (_, me) = b.aiosd.get("/v1/cluster/nodes").await;
    assert_eq!(me["self"]["agents_active"], 1, "{me}");
    drop((b, c));
    store.drop_tables().await.unwrap();
}

/// Waits until `node` knows agent `name` (definitions follow the shared store within 2 s).
async fn await_defined(node: &Node, name: &str) {
    let what = format!("{name} defined on {}", node.aiosd.url);
    eventually(&what, WAIT, || async {
        (node.aiosd.get(&format!("/v1/agents/{name}")).await.0 == StatusCode::OK).then_some(())
    })
    .await;
}

/// `name`'s active agents as `node` reports them itself.
async fn agents_active(node: &Node) -> u64 {
    node.nodes().await["self"]["agents_active"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_by_node_and_tags_and_a_drain_that_moves_agents_with_their_state() {
    let Some((ns, store)) = namespace("place").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    let a = Node::shared("a", &[], &ns, &llm);
    let b = Node::shared_tagged("b", &[&a.cluster_addr], &ns, &llm, &["gpu"]);
    let c = Node::shared("c", &[&a.cluster_addr], &ns, &llm);
    for peer in ["b", "c"] {
        a.await_reachable(peer).await;
    }
    assert_eq!(a.peer("b").await["tags"], serde_json::json!(["gpu"]));

    // By tag: asked on a, activated on b, the only node tagged `gpu`.
    define(&a.aiosd, "gpu-worker").await;
    let (s, v) = a
        .aiosd
        .put(
            "/v1/agents/gpu-worker/placement",
            serde_json::json!({"tags": ["gpu"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = say(&a.aiosd, "gpu-worker", "hello").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((agents_active(&a).await, agents_active(&b).await), (0, 1));

    // By name: on c.
    define(&a.aiosd, "pinned").await;
    let (s, v) = a
        .aiosd
        .put(
            "/v1/agents/pinned/placement",
            serde_json::json!({"node": "c"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = a.aiosd.get("/v1/agents/pinned/placement").await;
    assert_eq!((s, v["node"].as_str()), (StatusCode::OK, Some("c")));
    let (s, v) = say(&a.aiosd, "pinned", "hello").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(agents_active(&c).await, 1);

    // A placement no node satisfies is refused clearly; a bad one is a 400.
    define(&a.aiosd, "nowhere").await;
    let (s, _) = a
        .aiosd
        .put(
            "/v1/agents/nowhere/placement",
            serde_json::json!({"tags": ["tpu"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = say(&a.aiosd, "nowhere", "hello").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("tpu"), "{v}");
    let (s, v) = a
        .aiosd
        .put(
            "/v1/agents/nowhere/placement",
            serde_json::json!({"tags": ["TPU!"]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Drain: a's agent is passivated there and its next message activates it on another
    // node, with its conversation.
    define(&a.aiosd, "mover").await;
    let (s, v) = say(&a.aiosd, "mover", "the word is plum").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(agents_active(&a).await, 1);
    let (s, v) = a
        .aiosd
        .post("/v1/cluster/drain", serde_json::json!({"within_s": 10}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["passivated"].as_u64(), v["remaining"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
    assert_eq!(a.nodes().await["self"]["draining"], true);
    let (s, v) = say(&a.aiosd, "mover", "which word?").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(last_prompt(&fake), ["the word is plum", "which word?"]);
    assert_eq!(
        agents_active(&a).await,
        0,
        "the drained node activates nothing"
    );
    assert_eq!(agents_active(&b).await + agents_active(&c).await, 3);
    let (s, v) = a
        .aiosd
        .post("/v1/cluster/undrain", serde_json::json!({}))
        .await;
    assert_eq!(
        (s, &v["draining"]),
        (StatusCode::OK, &Value::Bool(false)),
        "{v}"
    );
    drop((a, b, c));
    store.drop_tables().await.unwrap();
}

/// `[cluster]` lines for TLS with the test certificates in `tests/fixtures/tls` (all nodes of
/// the cluster share `node.pem`, signed by `cluster-ca.pem` for 127.0.0.1).
fn tls_lines(cert: &str, ca: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
    format!(
        "tls_cert = \"{dir}/{cert}.pem\"\ntls_key = \"{dir}/{cert}.key\"\ntls_ca = \"{dir}/{ca}.pem\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_over_tls_join_and_refuse_an_untrusted_certificate_and_plain_tcp() {
    let store = |name: &str| format!("[store]\nnode = \"{name}\"\n");
    let tls = tls_lines("node", "cluster-ca");
    let a = Node::start_with("a", SECRET, &[], &store("a"), &tls);
    let b = Node::start_with("b", SECRET, &[&a.cluster_addr], &store("b"), &tls);
    a.await_peers("up", &["b"]).await;
    b.await_peers("up", &["a"]).await;
    assert_eq!(a.nodes().await["self"]["tls"], true);

    // The right secret, but a certificate the cluster's authority did not sign: a refuses the
    // connection in the TLS handshake.
    let rogue_tls = tls_lines("rogue-node", "cluster-ca");
    let rogue = Node::start_with("r", SECRET, &[&a.cluster_addr], &store("r"), &rogue_tls);
    a.aiosd.await_log("invalid peer certificate: UnknownIssuer");
    // The right secret over plain TCP: refused the same way.
    let plain = Node::start("p", SECRET, &[&a.cluster_addr]);
    a.aiosd.await_log("InvalidContentType");
    assert_eq!(a.peers("up").await, ["b"]);
    assert!(rogue.peers("up").await.is_empty());
    assert!(plain.peers("up").await.is_empty());

    // Cross-node calls work over TLS: b reaches a's gateway (its figures are in the view).
    b.await_reachable("a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_between_two_nodes_neither_hangs_nor_activates_an_agent_twice() {
    let Some((ns, store)) = namespace("split").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    let (a, proxy, b) = Node::split_pair(&ns, &llm).await;
    define(&a.aiosd, "split").await;
    let (s, v) = say(&a.aiosd, "split", "the word is pear").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    await_defined(&b, "split").await;
    let (s, v) = say(&b.aiosd, "split", "which word?").await;
    assert_eq!(s, StatusCode::OK, "forwarded to a: {v}");

    // Cut: b sees a down. a still holds the agent's lease (it reaches the database), so b
    // neither reaches the agent nor takes it over: a clear error within about one lease TTL.
    proxy.cut();
    b.await_peers("down", &["a"]).await;
    let asked = Instant::now();
    let (s, v) = say(&b.aiosd, "split", "during the split").await;
    let took = asked.elapsed();
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("is active on node a#"),
        "the error names the node that has the agent: {v}"
    );
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    // a keeps serving it, and never saw the message sent to b.
    let (s, v) = say(&a.aiosd, "split", "still yours?").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        last_prompt(&fake),
        ["the word is pear", "which word?", "still yours?"]
    );

    // Healed: b dials a again and forwards to it.
    proxy.heal();
    b.await_reachable("a").await;
    let (s, v) = say(&b.aiosd, "split", "and now?").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        last_prompt(&fake),
        [
            "the word is pear",
            "which word?",
            "still yours?",
            "and now?"
        ]
    );
    assert_eq!(
        b.nodes().await["self"]["agents_active"],
        0,
        "one activation, on a"
    );
    drop((a, b));
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_one_node_recalls_memory_a_namespace_on_another_node_serves() {
    let Some((ns, store)) = namespace("recall").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    let (a, b) = Node::shared_pair(&ns, &llm).await;
    // a serves the namespace and holds the fact.
    let (s, v) = a
        .aiosd
        .post(
            "/v1/memory/namespaces",
            serde_json::json!({"name": "facts"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = a
        .aiosd
        .post(
            "/v1/memory/namespaces/facts/items",
            serde_json::json!({"items": [{"text": "the launch code is 4411"}]}),
        )
        .await;
    assert!(s.is_success(), "{s}: {v}");
    // The agent reads that namespace but runs on b.
    let (s, v) = a
        .aiosd
        .post(
            "/v1/agents",
            serde_json::json!({"name": "recaller", "role": "executor", "model": "fake/m",
                "system_prompt": "Hi.", "memory_namespace": "facts"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = a
        .aiosd
        .put(
            "/v1/agents/recaller/placement",
            serde_json::json!({"node": "b"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = say(&a.aiosd, "recaller", "what is the launch code?").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        b.nodes().await["self"]["agents_active"],
        1,
        "the agent runs on b"
    );
    let prompt = common::last_chat(&fake);
    assert!(
        prompt.to_string().contains("4411"),
        "the memory a serves reached the agent on b: {}",
        prompt
    );
    drop((a, b));
    store.drop_tables().await.unwrap();
}

/// The namespace as JSON lines through `node`'s export.
async fn export_lines(node: &Node, ns: &str) -> Vec<Value> {
    let r = reqwest::Client::new()
        .get(format!(
            "{}/v1/memory/namespaces/{ns}/export",
            node.aiosd.url
        ))
        .bearer_auth(common::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A search of the namespace `notes` through `node`.
async fn search_notes(node: &Node, query: &str, k: usize) -> (StatusCode, Value) {
    node.aiosd
        .post(
            "/v1/memory/namespaces/notes/search",
            serde_json::json!({"query": query, "k": k}),
        )
        .await
}

/// The texts of a search's hits.
fn hit_texts(v: &Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits in {v}"))
        .iter()
        .map(|h| h["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_api_of_every_node_reaches_the_node_that_serves_a_namespace() {
    let Some((ns, store)) = namespace("memapi").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    let (a, b) = Node::shared_pair(&ns, &llm).await;
    create_namespace(&a, "notes", 2).await;
    let (s, v) = a
        .aiosd
        .post(
            "/v1/memory/namespaces/notes/items",
            serde_json::json!({"items": [{"text": "the launch code is 4411"},
                {"text": "lunch is at noon", "tags": ["food"]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // b lists the namespace a serves, and searches, writes and deletes through a.
    let (s, v) = b.aiosd.get("/v1/memory/namespaces").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["items"][0]["name"], "notes", "{v}");
    assert_eq!(v["items"][0]["shards"], 2, "{v}");
    let (s, v) = search_notes(&b, "launch code", 1).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(hit_texts(&v), ["the launch code is 4411"]);
    let (s, v) = b
        .aiosd
        .post(
            "/v1/memory/namespaces/notes/items",
            serde_json::json!({"items": [{"text": "the door code is 7788"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let door = v["ids"][0].as_str().unwrap().to_string();
    // Written by a's shards: a finds it without asking anyone.
    let (s, v) = search_notes(&a, "door code", 1).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(hit_texts(&v), ["the door code is 7788"]);
    assert_eq!(v["hits"][0]["id"], door.as_str());
    // Typed errors come back as they are: a bad k is the caller's error, not a 5xx.
    let (s, v) = search_notes(&b, "x", 0).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = b
        .aiosd
        .post(
            "/v1/memory/namespaces/notes/erase",
            serde_json::json!({"filter": {"tags": ["food"]}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["erased"], 1, "{v}");
    let (s, v) = b
        .aiosd
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/memory/namespaces/notes/items/{door}"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = b
        .aiosd
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/memory/namespaces/notes/items/{door}"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "deleted once: {v}");
    let lines = export_lines(&b, "notes").await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["text"], "the launch code is 4411");

    // a pauses past its lease: b's next search waits for a at most its deadline and hop,
    // then b serves the namespace with a's items.
    a.aiosd.signal("-STOP");
    let v = eventually("b to take the namespace", WAIT, || async {
        let (s, v) = search_notes(&b, "launch code", 1).await;
        if s != StatusCode::OK {
            assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        }
        (s == StatusCode::OK).then_some(v)
    })
    .await;
    assert_eq!(hit_texts(&v), ["the launch code is 4411"]);
    // Resumed, a no longer writes the namespace's items itself: it stops its shards when it
    // finds its lease lost (on this write, which it refuses, or on a request of b's it
    // resumed with), and writes through b.
    a.aiosd.signal("-CONT");
    let write = serde_json::json!({"items": [{"text": "the gate code is 1234"}]});
    let (mut s, mut v) = a
        .aiosd
        .post("/v1/memory/namespaces/notes/items", write.clone())
        .await;
    if s == StatusCode::SERVICE_UNAVAILABLE {
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("no longer serves memory namespace"),
            "{v}"
        );
        (s, v) = a
            .aiosd
            .post("/v1/memory/namespaces/notes/items", write)
            .await;
    }
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // One copy of each item, in b's shards.
    let mut texts: Vec<String> = export_lines(&b, "notes")
        .await
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect();
    texts.sort();
    assert_eq!(texts, ["the gate code is 1234", "the launch code is 4411"]);
    drop((a, b));
    store.drop_tables().await.unwrap();
}

/// The shards of the namespace `notes` as `node` reports them (its serving node answers).
async fn notes_shards(node: &Node) -> Vec<Value> {
    shards_of(node, "notes").await
}

/// The shards of namespace `name`, asked through `node`.
async fn shards_of(node: &Node, name: &str) -> Vec<Value> {
    let (s, v) = node
        .aiosd
        .get(&format!("/v1/memory/namespaces/{name}/shards"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

/// How many of `shards` `node` hosts, and how many items they hold.
fn hosted_by(shards: &[Value], node: &str) -> (usize, u64) {
    let mine: Vec<&Value> = shards.iter().filter(|s| s["node"] == node).collect();
    let items = mine.iter().map(|s| s["items"].as_u64().unwrap()).sum();
    (mine.len(), items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_s_shards_are_spread_over_the_nodes_and_its_searches_fan_out() {
    let Some((ns, store)) = namespace("spread").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let (a, b) = Node::shared_pair(&ns, &fake.base_url()).await;
    create_namespace(&a, "notes", 4).await;
    // a serves the namespace; two of its shards run on a, two on b.
    let shards = notes_shards(&b).await;
    assert_eq!(shards.len(), 4, "{shards:?}");
    assert_eq!(hosted_by(&shards, "a").0, 2, "{shards:?}");
    assert_eq!(hosted_by(&shards, "b").0, 2, "{shards:?}");

    // Written through b, the items land in the shards of both nodes.
    let items: Vec<Value> = (0..40)
        .map(|i| serde_json::json!({"text": format!("note {i}: the parcel {i} went to depot {}", i % 7)}))
        .collect();
    remember(&b, "notes", items).await;
    let shards = notes_shards(&a).await;
    let (on_a, on_b) = (hosted_by(&shards, "a").1, hosted_by(&shards, "b").1);
    assert!(on_a > 0 && on_b > 0, "items on both nodes: {shards:?}");
    assert_eq!(on_a + on_b, 40, "{shards:?}");

    // A search through either node gathers the hits of every shard, on both nodes.
    for node in [&a, &b] {
        let (s, v) = search_notes(node, "parcel depot", 40).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["partial"], false, "{v}");
        assert_eq!(hit_texts(&v).len(), 40, "{v}");
        let mut from: Vec<u64> = v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["shard"].as_u64().unwrap())
            .collect();
        from.sort_unstable();
        from.dedup();
        assert_eq!(from, [0, 1, 2, 3], "{v}");
    }

    // b is killed: its shards answer nowhere (searches say partial, never fail) until its
    // leases lapse; then a hosts them, with their items reloaded from the store.
    drop(b);
    let deadline = Instant::now() + WAIT;
    let mut saw_partial = false;
    loop {
        let (s, v) = search_notes(&a, "parcel depot", 40).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["partial"] == false {
            assert_eq!(hit_texts(&v).len(), 40, "every item once: {v}");
            break;
        }
        saw_partial = true;
        assert!(Instant::now() < deadline, "b's shards never came back: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shards = notes_shards(&a).await;
    assert_eq!(hosted_by(&shards, "a"), (4, 40), "{shards:?}");
    // Writes go on, to every shard.
    let (s, v) = a
        .aiosd
        .post(
            "/v1/memory/namespaces/notes/items",
            serde_json::json!({"items": [{"text": "the last parcel"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(
        saw_partial,
        "the search right after the kill missed b's shards"
    );
    drop(a);
    store.drop_tables().await.unwrap();
}

/// Creates the memory namespace `name` with `shards` shards through `node`.
async fn create_namespace(node: &Node, name: &str, shards: u32) {
    let (s, v) = node
        .aiosd
        .post(
            "/v1/memory/namespaces",
            serde_json::json!({"name": name, "shards": shards}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Stores `items` (`{"text": …}` objects) in namespace `name` through `node`.
async fn remember(node: &Node, name: &str, items: Vec<Value>) {
    let (s, v) = node
        .aiosd
        .post(
            &format!("/v1/memory/namespaces/{name}/items"),
            serde_json::json!({ "items": items }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_hosted_by_a_node_cut_off_from_the_serving_node_move_to_one_it_reaches() {
    let Some((ns, store)) = namespace("memsplit").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    let (a, proxy, b) = Node::split_pair(&ns, &llm).await;
    create_namespace(&a, "notes", 4).await;
    let items: Vec<Value> = (0..16)
        .map(|i| serde_json::json!({"text": format!("note {i}: barrel {i} in cellar {}", i % 4)}))
        .collect();
    remember(&a, "notes", items).await;
    assert_eq!(hosted_by(&notes_shards(&a).await, "b").0, 2);

    // Cut: b still reaches the database and renews its shards' leases, but not a. It lets
    // them go after a few seconds, and a places them on itself: its searches are whole again
    // while the two are still cut off.
    proxy.cut();
    b.await_peers("down", &["a"]).await;
    let v = eventually("b's shards back on a", WAIT, || async {
        let (s, v) = search_notes(&a, "barrel cellar", 16).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        (v["partial"] == false).then_some(v)
    })
    .await;
    assert_eq!(hit_texts(&v).len(), 16, "{v}");
    assert_eq!(hosted_by(&notes_shards(&a).await, "a"), (4, 16));
    // Healed: one copy of each item, writes go on.
    proxy.heal();
    b.await_reachable("a").await;
    remember(
        &a,
        "notes",
        vec![serde_json::json!({"text": "one more barrel"})],
    )
    .await;
    assert_eq!(hosted_by(&notes_shards(&b).await, "a"), (4, 17));
    drop((a, b));
    store.drop_tables().await.unwrap();
}

/// How many of the 4 shards of namespace `notes` (tenant `default`) `node` holds the lease of.
async fn shard_leases_of(store: &aios_supervisor::snapshot::PostgresStore, node: &str) -> usize {
    use aios_supervisor::snapshot::SnapshotStore as _;
    let mut held = 0;
    for shard in 0..4 {
        let holder = store
            .lease_holder(&format!("memserve/default.notes/{shard:04}"))
            .await
            .unwrap();
        if holder.is_some_and(|h| h.starts_with(&format!("{node}#"))) {
            held += 1;
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_lets_go_the_shards_of_a_generation_its_namespace_left() {
    let Some((ns, store)) = namespace("memretired").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let (a, b) = Node::shared_pair(&ns, &fake.base_url()).await;
    create_namespace(&a, "notes", 4).await;
    assert_eq!(hosted_by(&notes_shards(&a).await, "b").0, 2);
    assert_eq!(shard_leases_of(&store, "b").await, 2);
    // The namespace moves to its next generation without b hearing of it, as when a
    // migration's release of b's shards did not reach b: b lets go the retired shards
    // (their index, and their leases) by itself.
    let records = aios_actors::records::Records::new(aios_supervisor::snapshot::Snapshots::new(
        Arc::new(store.clone()),
    ));
    let mut info: aios_actors::memory::NamespaceInfo =
        records.get("memns/default.notes").await.unwrap().unwrap();
    info.generation += 1;
    records
        .put(
            "memns/default.notes",
            &info,
            aios_supervisor::snapshot::Durability::Durable,
        )
        .await
        .unwrap();
    eventually(
        "b to let the retired generation's shards go",
        WAIT,
        || async { (shard_leases_of(&store, "b").await == 0).then_some(()) },
    )
    .await;
    assert_eq!(
        shard_leases_of(&store, "a").await,
        2,
        "a's own are a's to stop"
    );
    drop((a, b));
    store.drop_tables().await.unwrap();
}

/// Sets the placement of the namespace `notes` through `node`.
async fn place_notes(node: &Node, placement: Value) -> (StatusCode, Value) {
    place(node, "notes", placement).await
}

/// Sets the placement of namespace `name` through `node`.
async fn place(node: &Node, name: &str, placement: Value) -> (StatusCode, Value) {
    node.aiosd
        .put(
            &format!("/v1/memory/namespaces/{name}/placement"),
            placement,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_loaded_namespace_puts_each_shard_on_the_node_hosting_fewest() {
    let Some((ns, store)) = namespace("memload").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let (a, b) = Node::shared_pair(&ns, &fake.base_url()).await;
    // a hosts the 2 shards of "busy".
    create_namespace(&a, "busy", 2).await;
    let (s, v) = place(&a, "busy", serde_json::json!({"node": "a"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(hosted_by(&shards_of(&a, "busy").await, "a").0, 2);

    // "notes", least loaded: its 4 shards are placed one after another, each on the node
    // hosting fewer then: b, b, then one each (placed at once, all 4 would go to b).
    // Every item kept.
    create_namespace(&a, "notes", 4).await;
    let items: Vec<Value> = (0..8)
        .map(|i| serde_json::json!({"text": format!("note {i}: crate {i} on shelf {}", i % 2)}))
        .collect();
    remember(&a, "notes", items).await;
    let (s, v) = place_notes(&b, serde_json::json!({"least_loaded": true})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["least_loaded"], true, "{v}");
    let shards = notes_shards(&a).await;
    assert_eq!(
        (hosted_by(&shards, "a").0, hosted_by(&shards, "b").0),
        (1, 3),
        "{shards:?}"
    );
    assert_eq!(hosted_by(&shards, "a").1 + hosted_by(&shards, "b").1, 8);
    let (s, v) = search_notes(&b, "crate shelf", 8).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (hit_texts(&v).len(), &v["partial"]),
        (8, &Value::Bool(false))
    );

    // "drafts", least loaded, with both nodes at 3 shards: one shard each.
    create_namespace(&b, "drafts", 2).await;
    let (s, v) = place(&b, "drafts", serde_json::json!({"least_loaded": true})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let shards = shards_of(&a, "drafts").await;
    assert_eq!(
        (hosted_by(&shards, "a").0, hosted_by(&shards, "b").0),
        (1, 1),
        "{shards:?}"
    );
    let (_, v) = a.aiosd.get("/v1/memory/namespaces/drafts/placement").await;
    assert_eq!(v["least_loaded"], true, "{v}");
    // The membership view says how many shards each node hosts: 2 + 1 + 1 on a, 3 + 1 on b.
    let view = a.nodes().await;
    assert_eq!(view["self"]["memory_shards"], 4, "{view}");
    let peer = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "b")
        .unwrap_or_else(|| panic!("b is not in {view}"));
    assert_eq!(peer["memory_shards"], 4, "{view}");
    drop((a, b));
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_placed_by_tag_or_node_moves_its_shards_there_with_their_items() {
    let Some((ns, store)) = namespace("memplace").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    let a = Node::shared_tagged("a", &[], &ns, &llm, &["ssd"]);
    let b = Node::shared("b", &[&a.cluster_addr], &ns, &llm);
    a.await_reachable("b").await;
    b.await_reachable("a").await;
    create_namespace(&a, "notes", 4).await;
    let items: Vec<Value> = (0..12)
        .map(|i| serde_json::json!({"text": format!("note {i}: pallet {i} in bay {}", i % 3)}))
        .collect();
    remember(&a, "notes", items).await;
    assert_eq!(hosted_by(&notes_shards(&b).await, "b").0, 2);

    // Only nodes tagged ssd (a): set through b, applied by a, which serves the namespace.
    let (s, v) = place_notes(&b, serde_json::json!({"tags": ["ssd"]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(hosted_by(&notes_shards(&b).await, "a"), (4, 12));
    let (s, v) = search_notes(&b, "pallet bay", 12).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (hit_texts(&v).len(), &v["partial"]),
        (12, &Value::Bool(false))
    );

    // One node, b, which does not serve the namespace.
    let (s, v) = place_notes(&a, serde_json::json!({"node": "b"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(hosted_by(&notes_shards(&a).await, "b"), (4, 12));
    let (s, v) = a.aiosd.get("/v1/memory/namespaces/notes/placement").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["node"], "b", "{v}");

    // A placement no reachable node satisfies is refused and changes nothing.
    let (s, v) = place_notes(&a, serde_json::json!({"tags": ["gpu"]})).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let (_, v) = b.aiosd.get("/v1/memory/namespaces/notes/placement").await;
    assert_eq!(v["node"], "b", "{v}");
    assert_eq!(hosted_by(&notes_shards(&a).await, "b"), (4, 12));

    // Back to the default: spread over both nodes again, every item kept.
    let (s, v) = place_notes(&b, serde_json::json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let shards = notes_shards(&a).await;
    assert_eq!(hosted_by(&shards, "a").0, 2, "{shards:?}");
    assert_eq!(hosted_by(&shards, "a").1 + hosted_by(&shards, "b").1, 12);
    drop((a, b));
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_node_moves_the_memory_it_serves_and_hosts_with_every_item() {
    let Some((ns, store)) = namespace("memdrain").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let (a, b) = Node::shared_pair(&ns, &fake.base_url()).await;
    // a serves "notes" (two of its shards on b); b serves "drafts" (its one shard on a or b).
    create_namespace(&a, "notes", 4).await;
    create_namespace(&b, "drafts", 1).await;
    let items: Vec<Value> = (0..20)
        .map(|i| serde_json::json!({"text": format!("note {i}: crate {i} is on shelf {}", i % 5)}))
        .collect();
    remember(&a, "notes", items).await;
    let (s, v) = b
        .aiosd
        .post(
            "/v1/memory/namespaces/drafts/items",
            serde_json::json!({"items": [{"text": "the draft of the spring catalogue"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(hosted_by(&notes_shards(&a).await, "b").0, 2);
    let (s, v) = b.aiosd.get("/v1/memory/namespaces/drafts/shards").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let drafts_on_b = usize::from(v["items"][0]["node"] == "b");

    let (s, v) = b
        .aiosd
        .post("/v1/cluster/drain", serde_json::json!({"within_s": 10}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["memory_namespaces_moved"], 1, "{v}");
    assert_eq!(v["memory_shards_moved"], 2 + drafts_on_b, "{v}");
    // Through the drained node too: every item, from shards that now all run on a.
    let v = eventually("the shards to move", WAIT, || async {
        let (s, v) = search_notes(&b, "crate shelf", 20).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        (v["partial"] == false).then_some(v)
    })
    .await;
    assert_eq!(hit_texts(&v).len(), 20, "{v}");
    assert_eq!(hosted_by(&notes_shards(&b).await, "a"), (4, 20));
    let (s, v) = b
        .aiosd
        .post(
            "/v1/memory/namespaces/drafts/search",
            serde_json::json!({"query": "spring catalogue", "k": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(hit_texts(&v), ["the draft of the spring catalogue"]);
    let (s, v) = a.aiosd.get("/v1/memory/namespaces/drafts/shards").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["items"][0]["node"], "a", "{v}");
    // Writes through the drained node land on a.
    let (s, v) = b
        .aiosd
        .post(
            "/v1/memory/namespaces/notes/items",
            serde_json::json!({"items": [{"text": "one more crate"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(hosted_by(&notes_shards(&a).await, "a"), (4, 21));
    drop((a, b));
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_only_one_node_can_run_is_run_there_for_an_agent_on_another() {
    let Some(server) = common::mcp_test_server("the tool forwarding test") else {
        return;
    };
    let Some((ns, store)) = namespace("toolfwd").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    // Only a can start the server: its command is on a's PATH alone.
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&server, bin.path().join("aios-only-on-a")).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config = |name: &str| common::shared_store_config(name, &ns, &llm, &pg_url());
    let a = Node::start_with_env("a", SECRET, &[], &config("a"), "", &[("PATH", &path)]);
    let b = Node::start_with("b", SECRET, &[&a.cluster_addr], &config("b"), "");
    a.await_reachable("b").await;
    b.await_reachable("a").await;
    let (s, v) = a
        .aiosd
        .post(
            "/v1/mcp-servers",
            serde_json::json!({"name": "t", "transport": {"kind": "stdio", "command": "aios-only-on-a"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // b cannot start the server, but learns its tools from the shared store.
    let deadline = Instant::now() + WAIT;
    loop {
        let (s, v) = b.aiosd.get("/v1/tools").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v.to_string().contains("t__echo") {
            break;
        }
        assert!(Instant::now() < deadline, "b never learnt a's tools: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, v) = b.aiosd.get("/v1/mcp-servers").await;
    assert!(
        !v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "t" && m["connected"] == true),
        "b runs no connection to the server: {v}"
    );

    // An agent placed on b calls the tool: the call runs on a, the result reaches the model.
    let (s, v) = a
        .aiosd
        .post(
            "/v1/agents",
            serde_json::json!({"name": "courier", "role": "executor", "model": "fake/m",
                "system_prompt": "You report.", "tools": ["t__echo"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = a
        .aiosd
        .put(
            "/v1/agents/courier/placement",
            serde_json::json!({"node": "b"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    fake.push_script(FakeReply::ToolCalls(vec![FakeToolCall::new(
        "c1",
        "t__echo",
        r#"{"text": "parcel 42 delivered"}"#,
        0,
    )]));
    fake.push_script(FakeReply::Text("reported".into()));
    let (s, v) = say(&a.aiosd, "courier", "report").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        b.nodes().await["self"]["agents_active"],
        1,
        "the agent runs on b"
    );
    let last = common::last_chat(&fake);
    let tool_message = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap_or_else(|| panic!("no tool result in {}", last))
        .clone();
    assert!(
        tool_message.to_string().contains("parcel 42 delivered"),
        "the tool's answer, not an error: {tool_message}"
    );
    // a ran it: the call is counted there.
    let (s, v) = a.aiosd.get("/v1/tools/usage").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        v["items"].as_array().unwrap().iter().any(|u| u["tool"]
            .as_str()
            .unwrap_or("")
            .starts_with("t__echo")
            && u["usage"]["calls"] == 1),
        "{v}"
    );
    drop((a, b));
    store.drop_tables().await.unwrap();
}

/// Reads the server-sent events of `response` until `until` shows up; returns what was read.
async fn read_events(response: reqwest::Response, until: &str) -> String {
    use futures_util::StreamExt as _;
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    // One deadline for all: keep-alive comments arrive every 15 s.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !seen.contains(until) {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no {until:?} among the events: {seen}"))
            .expect("stream open")
            .expect("bytes");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_one_node_gets_the_events_of_an_agent_active_on_another() {
    let Some((ns, store)) = namespace("events").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let llm = fake.base_url();
    let (a, b) = Node::shared_pair(&ns, &llm).await;
    define(&a.aiosd, "far").await;
    let (s, v) = a
        .aiosd
        .put("/v1/agents/far/placement", serde_json::json!({"node": "b"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Subscribed on a; the agent runs on b.
    let events = reqwest::Client::new()
        .get(format!("{}/v1/agents/far/events", a.aiosd.url))
        .bearer_auth(common::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let (s, v) = say(&a.aiosd, "far", "hello from a").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        b.nodes().await["self"]["agents_active"],
        1,
        "the agent runs on b"
    );
    let seen = read_events(events, "Final").await;
    assert!(seen.contains("echo: hello from a"), "{seen}");
    drop((a, b));
    store.drop_tables().await.unwrap();
}
