//! What the daemon's tests share: an `aiosd` child process on its own data directory
//! ([`Aiosd`]), and an in-process daemon with a client ([`daemon`]).
#![allow(dead_code, reason = "each test file uses a part")]

pub mod daemon;

use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aios_supervisor::snapshot::{PostgresOptions, PostgresStore};
use aios_testkit::FakeLlm;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The daemon binary of this package.
pub const AIOSD: &str = env!("CARGO_BIN_EXE_aiosd");

/// The test MCP server (the `aios` package's binary, beside `aiosd`, built by `cargo test
/// --workspace`), or `None` after a loud message when it is not built (never under
/// `CI=true`, where that fails `test`).
pub fn mcp_test_server(test: &str) -> Option<String> {
    let server = AIOSD.replace("aiosd", "aios-mcp-test-server");
    if std::path::Path::new(&server).exists() {
        return Some(server);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but {server} is not built"
    );
    eprintln!("\n!!! SKIPPED {test}: {server} is not built (cargo test --workspace builds it)\n");
    None
}
/// A known admin key, given to every process through `AIOS_ADMIN_KEY`.
pub const ADMIN: &str = "aios_00112233aabb_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZ";

/// A running `aiosd`, killed with SIGKILL when dropped (also when a test fails half-way).
pub struct Aiosd {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    logs: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Aiosd {
    /// Starts `aiosd` with `config` (TOML) and `env`, listening on a free port of 127.0.0.1.
    /// Its output is echoed to stderr prefixed with `name`, and kept for [`Aiosd::await_log`].
    pub fn start(name: &str, config: &str, env: &[(&str, &str)]) -> Aiosd {
        Self::start_in(name, None, config, env)
    }

    /// As [`Aiosd::start`], on the data directory `data_dir` when given (a restart on the same
    /// data), else on a new one.
    pub fn start_in(
        name: &str,
        data_dir: Option<&std::path::Path>,
        config: &str,
        env: &[(&str, &str)],
    ) -> Aiosd {
        Self::try_start_in(name, data_dir, config, env)
            .unwrap_or_else(|| panic!("aiosd {name} exited early"))
    }

    /// As [`Aiosd::start_in`]; `None` when the process exits before it listens (its error is
    /// on stderr).
    #[allow(
        clippy::zombie_processes,
        reason = "Drop kills and waits for the child"
    )]
    pub fn try_start_in(
        name: &str,
        data_dir: Option<&std::path::Path>,
        config: &str,
        env: &[(&str, &str)],
    ) -> Option<Aiosd> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aiosd.toml");
        std::fs::write(&path, config).unwrap();
        let data = data_dir.map_or_else(|| dir.path().join("data"), std::path::Path::to_path_buf);
        let mut child = std::process::Command::new(AIOSD)
            .args(["--config", path.to_str().unwrap()])
            .args(["--data-dir", data.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
            .env("AIOS_ADMIN_KEY", ADMIN)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn aiosd");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let url = loop {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                return None;
            }
            if let Some(url) = line.trim().strip_prefix("aiosd listening on ") {
                break url.to_string();
            }
        };
        // Keep reading, so the node never writes into a closed pipe.
        let (tx, logs) = mpsc::channel();
        let prefix = format!("[aiosd {name}]");
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                eprintln!("{prefix} {line}");
                let _ = tx.send(line);
            }
        });
        Some(Aiosd {
            child,
            url,
            logs,
            _dir: dir,
        })
    }

    /// Sends `signal` (`-STOP`, `-CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    /// Stops the process with SIGTERM and returns how it exited.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        self.child.wait().unwrap()
    }

    /// GET `path` as the admin.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("request");
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// POST `body` to `path` as the admin.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, body).await
    }

    /// `PUT path` with a JSON body and the admin key: the status and the JSON answer.
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, body).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let r = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .expect("request");
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Waits (30 s at most) for a line of output containing `text`.
    pub fn await_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
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

impl Drop for Aiosd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PostgreSQL server of the shared-store tests: `AIOS_TEST_PG_URL`, by default the local one.
pub fn pg_url() -> String {
    std::env::var("AIOS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Fresh tables for one test, or `None` (after saying so) without a server outside CI.
pub async fn namespace(test: &str) -> Option<(String, PostgresStore)> {
    let ns = format!(
        "t{}_{test}",
        uuid::Uuid::new_v4().simple().to_string().get(..12).unwrap()
    );
    match PostgresStore::connect(PostgresOptions::new(pg_url()).namespace(ns.clone())).await {
        Ok(store) => Some((ns, store)),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but PostgreSQL is not reachable at {}: {e}",
                pg_url()
            );
            eprintln!(
                "\n!!! SKIPPED {test}: no PostgreSQL at {} ({e})\n",
                pg_url()
            );
            None
        }
    }
}

/// Defines a planner, a researcher and a writer on the scripted model (capabilities `plan`,
/// `research`, `write`), so that runs succeed offline, and `extra` executors.
pub async fn define_team(node: &Aiosd, extra: &[&str]) {
    let team = [
        (
            "planner",
            "planner",
            "plan",
            "You plan. Answer with a JSON plan.",
        ),
        ("researcher", "researcher", "research", "You research."),
        ("writer", "executor", "write", "You write."),
    ];
    let extra = extra.iter().map(|n| (*n, "executor", *n, "You help."));
    for (name, role, cap, prompt) in team.into_iter().chain(extra) {
        let def = json!({"name": name, "role": role, "model": "scripted/demo",
            "system_prompt": prompt, "capabilities": [{"name": cap}]});
        let (s, v) = node.post("/v1/agents", def).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
}

/// Defines agent `name` on `node` (it must succeed).
pub async fn define(node: &Aiosd, name: &str) {
    let (s, v) = node
        .post(
            "/v1/agents",
            json!({"name": name, "role": "executor", "model": "fake/m", "system_prompt": "Hi."}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Sends `text` to agent `agent` on `node`.
pub async fn say(node: &Aiosd, agent: &str, text: &str) -> (StatusCode, Value) {
    node.post(
        &format!("/v1/agents/{agent}/messages"),
        json!({ "content": text }),
    )
    .await
}

/// The body of the model's last chat request.
pub fn last_chat(fake: &FakeLlm) -> Value {
    fake.requests()
        .into_iter()
        .rev()
        .find(|r| r.path.ends_with("/chat/completions"))
        .expect("a chat request")
        .body
}

/// The user messages of the model's last chat request.
pub fn last_prompt(fake: &FakeLlm) -> Vec<String> {
    last_chat(fake)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A TCP proxy that the test can cut (every connection closed, new ones refused) and heal: a
/// network partition between a node and what it dials (the database, another node).
pub struct Proxy {
    /// Where to connect instead of the target.
    pub addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `target` (`host:port`).
    pub async fn start(target: String) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (o, c) = (open.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            addr,
            open,
            conns,
            accept,
        }
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    /// Accepts connections again.
    pub fn heal(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// The configuration of a node on the shared PostgreSQL store at `pg` (namespace `ns`, 1 s
/// leases), with the fake model at `llm` as `fake/m`.
pub fn shared_store_config(name: &str, ns: &str, llm: &str, pg: &str) -> String {
    format!(
        r#"
[store]
backend = "postgres"
url = "{pg}"
namespace = "{ns}"
node = "{name}"
lease_ttl = "1s"

[[llm.providers]]
name = "fake"
kind = "openai"
base_url = "{llm}"
retry_attempts_max = 1

[[llm.models]]
provider = "fake"
model = "m"
"#
    )
}
