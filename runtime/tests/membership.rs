//! Cluster membership between real `aiosd` processes on 127.0.0.1 (built with the `cluster`
//! feature: `cargo test -p aios-runtime --features cluster --test membership`, which `.ci/run`
//! runs): three nodes join through one seed and see each other, a node with another secret is
//! refused, and a node killed with SIGKILL is seen down.
#![cfg(feature = "cluster")]

use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const AIOSD: &str = env!("CARGO_BIN_EXE_aiosd");
const ADMIN: &str = "aios_00112233aabb_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZ";
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

struct Node {
    child: std::process::Child,
    url: String,
    cluster_addr: String,
    logs: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    #[allow(
        clippy::zombie_processes,
        reason = "Drop kills and waits for every node"
    )]
    fn start(name: &str, secret: &str, seeds: &[&str]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cluster_addr = format!("127.0.0.1:{port}");
        let seeds: Vec<String> = seeds.iter().map(|s| format!("{s:?}")).collect();
        let config = dir.path().join("aiosd.toml");
        std::fs::write(
            &config,
            format!(
                "[store]\nnode = \"{name}\"\n[cluster]\nlisten = \"{cluster_addr}\"\nseeds = [{}]\n",
                seeds.join(", ")
            ),
        )
        .unwrap();
        let mut child = std::process::Command::new(AIOSD)
            .args(["--config", config.to_str().unwrap()])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
            .env("AIOS_ADMIN_KEY", ADMIN)
            .env("AIOS_CLUSTER_SECRET", secret)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn aiosd");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let url = loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "aiosd {name} exited early"
            );
            if let Some(url) = line.trim().strip_prefix("aiosd listening on ") {
                break url.to_string();
            }
        };
        let (tx, logs) = mpsc::channel();
        let prefix = format!("[aiosd {name}]");
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                eprintln!("{prefix} {line}");
                let _ = tx.send(line);
            }
        });
        Node {
            child,
            url,
            cluster_addr,
            logs,
            _dir: dir,
        }
    }

    async fn nodes(&self) -> Value {
        let r = reqwest::Client::new()
            .get(format!("{}/v1/cluster/nodes", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("request");
        assert!(r.status().is_success(), "{}", r.status());
        r.json().await.unwrap()
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
                self.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a log line containing `text`.
    fn await_log(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(e) => panic!("no log line with {text:?}: {e}"),
            }
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
    d.await_log("closed before it authenticated");
    assert!(d.peers("up").await.is_empty());
    assert_eq!(a.peers("up").await, ["b", "c"]);

    // SIGKILL: its sessions close, and the others see it down.
    drop(b);
    a.await_peers("down", &["b"]).await;
    c.await_peers("down", &["b"]).await;
    assert_eq!(a.peers("up").await, ["c"]);
}
