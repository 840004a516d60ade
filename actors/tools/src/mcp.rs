//! MCP servers as plugins: a Model Context Protocol server, reached over stdio (a child
//! process) or streamable HTTP with the `rmcp` crate, is one connection actor `mcp:<name>`
//! under the `tools` supervisor. Each tool the server lists becomes a versioned tool
//! `<name>__<tool>` with its own host actors, so MCP tools get the same grants, schema checks,
//! timeouts, usage counts and audit trail as built-in ones.
//!
//! When the child process exits (or is killed), the connection's service loop ends, the
//! actor fails, and its supervisor restarts it, which spawns a fresh child. Calls in flight
//! at that moment get [`super::ToolCallError::Crashed`]; calls made while it reconnects get
//! the same error at once rather than waiting.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aios_supervisor::{ActorHandle, Context, Worker};
use arc_swap::ArcSwapOption;
use ractor::ActorProcessingErr;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{Peer, RoleClient, ServiceExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use super::manifest::{TOOL_CONCURRENCY_MAX, TOOL_TIMEOUT_MAX, ToolManifest};
use aios_core::Capability;
use aios_core::{Tool, ToolContext, ToolError, ToolSpec};

/// Tools taken from one MCP server at most.
pub const MCP_TOOLS_MAX: usize = 256;
/// MCP servers of a node at most.
pub const MCP_SERVERS_MAX: usize = 64;
/// How long connecting (spawning, initialising, listing tools) may take.
pub const MCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Between reconnection attempts after a failed restart, at most.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(30);
/// Lines of a child's stderr longer than this are cut before they are logged.
const STDERR_LINE_LEN_MAX: usize = 2048;

/// How to reach an MCP server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum McpTransport {
    /// A child process speaking MCP on its stdin and stdout.
    Stdio {
        /// The program.
        command: String,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
        /// Environment variables set for it. The child gets only these, `PATH` and `HOME`:
        /// nothing else of the node's environment leaks into it.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Its working directory.
        #[serde(default)]
        cwd: Option<PathBuf>,
    },
    /// A streamable HTTP endpoint (`http://127.0.0.1:8080/mcp`).
    Http {
        /// The endpoint.
        url: String,
        /// The environment variable holding a bearer token sent with every request, if any
        /// (the token itself never goes into configuration or the store).
        #[serde(default)]
        bearer_token_env: Option<String>,
    },
}

fn default_mcp_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_mcp_concurrency() -> usize {
    4
}

/// An MCP server to take tools from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Its name: 1..=32 of `a-z 0-9 _ -`, starting with a letter. Its tools are named
    /// `<name>__<tool>`.
    pub name: String,
    /// How to reach it.
    pub transport: McpTransport,
    /// The version its tools are installed as; by default the version the server reports
    /// when it is semver, else `0.1.0`. Fixed when the server is added, so restarts and
    /// agent pins stay stable.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub version: Option<semver::Version>,
    /// How long one call may take.
    #[serde(default = "default_mcp_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Concurrent calls per tool at most.
    #[serde(default = "default_mcp_concurrency")]
    pub concurrency_max: usize,
}

impl McpServerConfig {
    /// A server reached over stdio with default limits.
    pub fn stdio(name: impl Into<String>, command: impl Into<String>, args: Vec<String>) -> Self {
        Self {
            name: name.into(),
            transport: McpTransport::Stdio {
                command: command.into(),
                args,
                env: BTreeMap::new(),
                cwd: None,
            },
            version: None,
            timeout: default_mcp_timeout(),
            concurrency_max: default_mcp_concurrency(),
        }
    }

    /// A server reached over streamable HTTP with default limits.
    pub fn http(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            transport: McpTransport::Http {
                url: url.into(),
                bearer_token_env: None,
            },
            version: None,
            timeout: default_mcp_timeout(),
            concurrency_max: default_mcp_concurrency(),
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// Names the server and the bad field.
    pub fn validate(&self) -> Result<(), String> {
        let err = |m: String| Err(format!("MCP server {:?}: {m}", self.name));
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 32
            && self.name.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
            && !self.name.contains("__");
        if !name_ok {
            return err(
                "name must be 1..=32 of a-z, 0-9, '_', '-', start with a letter and not contain \"__\""
                    .into(),
            );
        }
        if self.timeout.is_zero() || self.timeout > TOOL_TIMEOUT_MAX {
            return err(format!(
                "timeout must be positive and at most {TOOL_TIMEOUT_MAX:?}"
            ));
        }
        if !(1..=TOOL_CONCURRENCY_MAX).contains(&self.concurrency_max) {
            return err(format!(
                "concurrency_max must be 1..={TOOL_CONCURRENCY_MAX}"
            ));
        }
        match &self.transport {
            McpTransport::Stdio { command, env, .. } => {
                if command.trim().is_empty() {
                    return err("transport.command is empty".into());
                }
                if let Some(k) = env
                    .keys()
                    .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
                {
                    return err(format!("transport.env: bad variable name {k:?}"));
                }
            }
            McpTransport::Http { url, .. } => match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(_) => return err(format!("transport.url {url:?} must be http(s)://host/…")),
                Err(e) => return err(format!("transport.url {url:?}: {e}")),
            },
        }
        Ok(())
    }

    /// `stdio` or `http`.
    pub fn transport_kind(&self) -> &'static str {
        match self.transport {
            McpTransport::Stdio { .. } => "stdio",
            McpTransport::Http { .. } => "http",
        }
    }
}

/// The name a server's tool is installed under: `<server>__<tool>`, lower-cased, other
/// characters than `a-z 0-9 _ -` replaced by `_`, at most 64 characters.
pub fn tool_name(server: &str, tool: &str) -> String {
    let mut name = format!("{server}__");
    name.extend(tool.chars().map(|c| {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
            c
        } else {
            '_'
        }
    }));
    name.truncate(64);
    name
}

/// What a server listed, as manifests (with the MCP tool name each maps to).
pub(crate) fn manifests(
    config: &McpServerConfig,
    version: &semver::Version,
    tools: &[rmcp::model::Tool],
) -> Vec<(ToolManifest, String)> {
    let mut out: Vec<(ToolManifest, String)> = Vec::new();
    for tool in tools.iter().take(MCP_TOOLS_MAX) {
        let name = tool_name(&config.name, &tool.name);
        if out.iter().any(|(m, _)| m.name == name) {
            tracing::warn!(server = %config.name, tool = %tool.name, "two MCP tools map to the same name; the second is skipped");
            continue;
        }
        let description = tool
            .description
            .as_deref()
            .map(str::to_string)
            .or_else(|| tool.title.clone())
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| format!("{} (MCP server {})", tool.name, config.name));
        let manifest = ToolManifest {
            name,
            version: version.clone(),
            description,
            input_schema: Value::Object((*tool.input_schema).clone()),
            output_schema: tool
                .output_schema
                .as_ref()
                .map(|s| Value::Object((**s).clone())),
            capabilities: vec![
                Capability::named("mcp")
                    .with("server", &config.name)
                    .with("tool", tool.name.as_ref()),
            ],
            permissions: Default::default(),
            dependencies: BTreeMap::new(),
            timeout: config.timeout,
            concurrency_max: config.concurrency_max,
            pure: false,
            examples: Vec::new(),
        };
        match manifest.validate() {
            Ok(()) => out.push((manifest, tool.name.to_string())),
            Err(e) => {
                tracing::warn!(server = %config.name, tool = %tool.name, error = %e, "MCP tool skipped")
            }
        }
    }
    out
}

/// The live connection of one server, shared by its connection actor (which replaces it on
/// every reconnect) and the tools that call through it.
#[derive(Default)]
pub(crate) struct McpLink {
    peer: ArcSwapOption<Peer<RoleClient>>,
    /// The child's process id while a stdio server runs (0 otherwise).
    pid: AtomicU32,
    /// The tools the server listed on its last connect.
    tools: std::sync::Mutex<Vec<rmcp::model::Tool>>,
    /// The version the server reported on its last connect.
    server_version: std::sync::Mutex<Option<String>>,
}

impl McpLink {
    /// The child's process id, if a stdio server's child runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::Relaxed) {
            0 => None,
            p => Some(p),
        }
    }

    pub(crate) fn connected(&self) -> bool {
        self.peer
            .load()
            .as_ref()
            .is_some_and(|p| !p.is_transport_closed())
    }

    pub(crate) fn tools(&self) -> Vec<rmcp::model::Tool> {
        self.tools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn server_version(&self) -> Option<String> {
        self.server_version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Messages of a connection actor.
pub(crate) enum ConnMsg {
    /// The service loop ended (the child exited, or the HTTP session was lost).
    Lost(String),
    /// Try to connect again (after a failed reconnect).
    Reconnect,
}

/// The connection actor's state: the running service's cancellation, so that stopping (or
/// crashing) the actor closes the connection and kills the child.
pub(crate) struct Conn {
    /// Present while connected.
    connection: Option<CancelBoth>,
    /// Failed reconnects in a row.
    failures: u32,
}

/// Connects to one MCP server; restarted by its supervisor when the connection is lost.
pub(crate) struct ConnWorker {
    pub(crate) config: McpServerConfig,
    pub(crate) link: Arc<McpLink>,
}

impl ConnWorker {
    async fn connect(&self, me: ActorHandle<ConnMsg>) -> Result<Conn, String> {
        let name = &self.config.name;
        let service = match &self.config.transport {
            McpTransport::Stdio {
                command,
                args,
                env,
                cwd,
            } => {
                let mut cmd = tokio::process::Command::new(command);
                cmd.args(args).env_clear();
                for var in ["PATH", "HOME"] {
                    if let Some(v) = std::env::var_os(var) {
                        cmd.env(var, v);
                    }
                }
                cmd.envs(env);
                if let Some(dir) = cwd {
                    cmd.current_dir(dir);
                }
                let (process, stderr) = rmcp::transport::TokioChildProcess::builder(cmd)
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("MCP server {name}: cannot start {command:?}: {e}"))?;
                self.link
                    .pid
                    .store(process.id().unwrap_or(0), Ordering::Relaxed);
                if let Some(stderr) = stderr {
                    let server = name.clone();
                    tokio::spawn(async move {
                        let mut lines = tokio::io::BufReader::new(stderr).lines();
                        while let Ok(Some(mut line)) = lines.next_line().await {
                            if line.len() > STDERR_LINE_LEN_MAX {
                                let mut cut = STDERR_LINE_LEN_MAX;
                                while !line.is_char_boundary(cut) {
                                    cut -= 1;
                                }
                                line.truncate(cut);
                            }
                            tracing::debug!(mcp_server = %server, "stderr: {line}");
                        }
                    });
                }
                tokio::time::timeout(MCP_CONNECT_TIMEOUT, ().serve(process))
                    .await
                    .map_err(|_| {
                        format!("MCP server {name}: no handshake within {MCP_CONNECT_TIMEOUT:?}")
                    })?
                    .map_err(|e| format!("MCP server {name}: handshake failed: {e}"))?
            }
            McpTransport::Http {
                url,
                bearer_token_env,
            } => {
                use rmcp::transport::StreamableHttpClientTransport;
                use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                if let Some(var) = bearer_token_env {
                    let token = std::env::var(var).map_err(|_| {
                        format!("MCP server {name}: environment variable {var} is not set")
                    })?;
                    config = config.auth_header(token);
                }
                let transport = StreamableHttpClientTransport::from_config(config);
                tokio::time::timeout(MCP_CONNECT_TIMEOUT, ().serve(transport))
                    .await
                    .map_err(|_| {
                        format!("MCP server {name}: no handshake within {MCP_CONNECT_TIMEOUT:?}")
                    })?
                    .map_err(|e| format!("MCP server {name}: handshake failed: {e}"))?
            }
        };
        let tools = tokio::time::timeout(MCP_CONNECT_TIMEOUT, service.peer().list_all_tools())
            .await
            .map_err(|_| {
                format!("MCP server {name}: tools/list took over {MCP_CONNECT_TIMEOUT:?}")
            })?
            .map_err(|e| format!("MCP server {name}: tools/list failed: {e}"))?;
        let version = service
            .peer()
            .peer_info()
            .and_then(|info| serde_json::to_value(&*info).ok())
            .and_then(|v| {
                v.pointer("/serverInfo/version")?
                    .as_str()
                    .map(str::to_string)
            });
        *self
            .link
            .tools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tools;
        *self
            .link
            .server_version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = version;
        self.link.peer.store(Some(Arc::new(service.peer().clone())));
        let cancel = service.cancellation_token();
        // The watcher owns the service: when its loop ends for any reason but our own
        // cancellation, the actor is told and fails, so its supervisor restarts it.
        let server = name.clone();
        let token = tokio_util::sync::CancellationToken::new();
        let stopped = token.clone();
        tokio::spawn(async move {
            let reason = service.waiting().await;
            if !stopped.is_cancelled() {
                let why = match reason {
                    Ok(r) => format!("{r:?}"),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(mcp_server = %server, reason = %why, "MCP connection lost");
                let _ = me.cast(ConnMsg::Lost(why));
            }
        });
        // Dropped with the state (actor stopped or crashed): marks the stop as ours first,
        // then cancels the service, which drops the transport and kills the child.
        Ok(Conn {
            connection: Some(CancelBoth {
                ours: token,
                service: Some(cancel),
            }),
            failures: 0,
        })
    }
}

/// Cancels our "stopping" token, then the service, when dropped.
struct CancelBoth {
    ours: tokio_util::sync::CancellationToken,
    service: Option<rmcp::service::RunningServiceCancellationToken>,
}

impl Drop for CancelBoth {
    fn drop(&mut self) {
        self.ours.cancel();
        if let Some(s) = self.service.take() {
            s.cancel();
        }
    }
}

impl Worker for ConnWorker {
    type Msg = ConnMsg;
    type State = Conn;

    async fn init(
        &self,
        ctx: &mut Context<ConnMsg>,
        _: Option<Conn>,
    ) -> Result<Conn, ActorProcessingErr> {
        self.link.peer.store(None);
        self.link.pid.store(0, Ordering::Relaxed);
        match self.connect(ctx.myself().clone()).await {
            Ok(conn) => Ok(conn),
            // The first start reports the problem to whoever adds the server.
            Err(e) if ctx.generation() <= 1 => Err(e.into()),
            // A restart that cannot connect keeps trying, so one broken server does not
            // exhaust the tools supervisor's restart intensity.
            Err(e) => {
                tracing::warn!(mcp_server = %self.config.name, error = %e, "reconnecting later");
                schedule_reconnect(ctx, 1);
                Ok(Conn {
                    connection: None,
                    failures: 1,
                })
            }
        }
    }

    async fn handle(
        &self,
        ctx: &mut Context<ConnMsg>,
        msg: ConnMsg,
        state: &mut Conn,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConnMsg::Lost(why) => {
                self.link.peer.store(None);
                self.link.pid.store(0, Ordering::Relaxed);
                Err(format!("MCP server {} connection lost: {why}", self.config.name).into())
            }
            ConnMsg::Reconnect => {
                if state.connection.is_some() {
                    return Ok(());
                }
                match self.connect(ctx.myself().clone()).await {
                    Ok(conn) => {
                        tracing::info!(mcp_server = %self.config.name, "reconnected");
                        *state = conn;
                    }
                    Err(e) => {
                        state.failures = state.failures.saturating_add(1);
                        tracing::warn!(mcp_server = %self.config.name, error = %e, failures = state.failures, "reconnect failed");
                        schedule_reconnect(ctx, state.failures);
                    }
                }
                Ok(())
            }
        }
    }
}

fn schedule_reconnect(ctx: &Context<ConnMsg>, failures: u32) {
    let delay =
        Duration::from_millis(250u64.saturating_mul(1 << failures.min(8))).min(RECONNECT_DELAY_MAX);
    let me = ctx.myself().clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = me.cast(ConnMsg::Reconnect);
    });
}

/// One tool of an MCP server, called through the server's current connection.
pub(crate) struct McpTool {
    /// As the server listed it.
    pub(crate) spec: ToolSpec,
    pub(crate) server: String,
    pub(crate) tool: String,
    pub(crate) link: Arc<McpLink>,
}

#[async_trait::async_trait]
impl Tool for McpTool {
    fn spec(&self) -> ToolSpec {
        self.spec.clone()
    }

    async fn call(&self, args: Value, _: &ToolContext) -> Result<Value, ToolError> {
        let peer = self.link.peer.load_full().ok_or_else(|| {
            ToolError::Crashed(format!(
                "MCP server {} is not connected (it is being restarted)",
                self.server
            ))
        })?;
        let arguments = match args {
            Value::Object(map) => Some(map),
            Value::Null => None,
            other => {
                return Err(ToolError::Failed(format!(
                    "MCP tools take an object of arguments, not {other}"
                )));
            }
        };
        let mut params = CallToolRequestParams::new(self.tool.clone());
        params.arguments = arguments;
        let result = match peer.call_tool(params).await {
            Ok(r) => r,
            Err(e) if peer.is_transport_closed() => {
                return Err(ToolError::Crashed(format!(
                    "MCP server {} went away during the call: {e}",
                    self.server
                )));
            }
            Err(e) => {
                return Err(ToolError::Failed(format!(
                    "MCP server {}: {e}",
                    self.server
                )));
            }
        };
        let text = || {
            result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
                .collect::<Vec<_>>()
                .join("\n")
        };
        if result.is_error == Some(true) {
            return Err(ToolError::Failed(text()));
        }
        if let Some(v) = &result.structured_content {
            return Ok(v.clone());
        }
        let joined = text();
        if joined.is_empty() && !result.content.is_empty() {
            return serde_json::to_value(&result.content)
                .map_err(|e| ToolError::Failed(format!("unreadable MCP content: {e}")));
        }
        Ok(Value::String(joined))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_sanitised_and_bounded() {
        assert_eq!(tool_name("fs", "read_file"), "fs__read_file");
        assert_eq!(tool_name("fs", "Read.File v2"), "fs__read_file_v2");
        assert_eq!(tool_name("s", &"x".repeat(100)).len(), 64);
    }

    #[test]
    fn configs_are_validated_with_the_field_named() {
        assert!(
            McpServerConfig::stdio("fs", "mcp-fs", vec![])
                .validate()
                .is_ok()
        );
        let e = McpServerConfig::stdio("Bad Name", "x", vec![])
            .validate()
            .unwrap_err();
        assert!(e.contains("name"), "{e}");
        let e = McpServerConfig::stdio("fs", " ", vec![])
            .validate()
            .unwrap_err();
        assert!(e.contains("command"), "{e}");
        let e = McpServerConfig::http("web", "ftp://x/mcp")
            .validate()
            .unwrap_err();
        assert!(e.contains("url"), "{e}");
        let mut c = McpServerConfig::http("web", "http://127.0.0.1:1/mcp");
        c.timeout = Duration::ZERO;
        assert!(c.validate().unwrap_err().contains("timeout"));
        c.timeout = Duration::from_secs(1);
        c.concurrency_max = 0;
        assert!(c.validate().unwrap_err().contains("concurrency_max"));
    }

    #[test]
    fn configs_read_from_toml() {
        let c: McpServerConfig = toml::from_str(
            r#"
            name = "fs"
            timeout = "5s"
            transport = { kind = "stdio", command = "mcp-fs", args = ["--root", "/tmp"] }
            "#,
        )
        .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.transport_kind(), "stdio");
        let e = toml::from_str::<McpServerConfig>(
            r#"
            name = "fs"
            transport = { kind = "stdio", command = "x", bogus = 1 }
            "#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}
