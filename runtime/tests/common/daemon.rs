//! An in-process daemon for tests: its configuration on 127.0.0.1 and an HTTP client.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use aios_runtime::daemon::{Daemon, DaemonConfig};
use aios_testkit::eventually;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A daemon configuration for a test: data in `dir`, the API on an ephemeral port of
/// 127.0.0.1, and rate limits no test reaches unless it lowers them.
pub fn daemon_config(dir: &Path) -> DaemonConfig {
    let mut c = DaemonConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..DaemonConfig::default()
    };
    c.rate_limit.requests_per_s = 100_000;
    c.rate_limit.burst = 100_000;
    c
}

/// A daemon started in this process, with the admin key its first start created.
pub struct TestDaemon {
    /// The daemon.
    pub daemon: Daemon,
    /// A client of its API.
    pub client: Client,
    /// The operator tenant's admin key.
    pub admin: String,
}

impl TestDaemon {
    /// Starts a daemon on `config` (on a data directory without keys).
    pub async fn start(config: DaemonConfig) -> TestDaemon {
        let (daemon, first) = Daemon::start(config, None).await.expect("start");
        let admin = first.expect("the first start creates an admin key").secret;
        let client = Client::new(daemon.addr);
        TestDaemon {
            daemon,
            client,
            admin,
        }
    }

    /// The admin key of a new tenant `tenant`.
    pub async fn tenant_admin(&self, tenant: &str) -> String {
        self.client
            .create_key(&self.admin, "admin", Some(tenant))
            .await
    }

    /// Stops the daemon.
    pub async fn shutdown(self) {
        self.daemon.shutdown().await.expect("shutdown");
    }
}

/// A client of a daemon's API.
#[derive(Clone)]
pub struct Client {
    /// The HTTP client, for requests the helpers do not make.
    pub http: reqwest::Client,
    /// `http://<addr>`.
    pub base: String,
}

impl Client {
    /// A client of the daemon at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    /// Sends a request with `key` (if any) and a JSON `body` (if any); the status, the body
    /// (JSON, or the text as a string) and the headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, HeaderMap) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v, headers)
    }

    /// [`Client::send`] with a key, without the headers.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, v, _) = self.send(method, path, Some(key), body).await;
        (s, v)
    }

    /// A new key with `role` (of `tenant`, or of the creator's tenant), made with `admin`.
    pub async fn create_key(&self, admin: &str, role: &str, tenant: Option<&str>) -> String {
        let mut body = json!({"name": format!("{role} key"), "role": role});
        if let Some(t) = tenant {
            body["tenant"] = json!(t);
        }
        let (s, v) = self.call(Method::POST, "/v1/keys", admin, Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["secret"].as_str().expect("secret").to_string()
    }

    /// Defines an agent for the tenant of `key`.
    pub async fn define(&self, key: &str, def: Value) {
        let (s, v) = self.call(Method::POST, "/v1/agents", key, Some(def)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    /// Reads run `id` (by the tenant of `key`) until its status satisfies `done` (there is
    /// no event to await here), for at most 20 s.
    pub async fn run_until(&self, key: &str, id: &str, done: impl Fn(&str) -> bool) -> Value {
        eventually(
            &format!("run {id} to finish"),
            Duration::from_secs(20),
            || async {
                let (_, run) = self
                    .call(Method::GET, &format!("/v1/runs/{id}"), key, None)
                    .await;
                let status = run["status"].as_str().unwrap_or_default().to_lowercase();
                if done(&status) {
                    Ok(run)
                } else {
                    Err(run.to_string())
                }
            },
        )
        .await
    }
}
