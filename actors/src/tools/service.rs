//! The tool service: every installed tool version that has an implementation runs as a
//! host actor under the `tools` supervisor. A call is checked against the caller's grants,
//! its arguments against the input schema, then served from the cache (pure tools) or run
//! by the host within the manifest's timeout and concurrency limit; the result is checked
//! against the output schema. Every call is counted per tool, version and agent.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aios_supervisor::{
    ActorHandle, CallError, Context, Restart, SupervisorRef, Worker, WorkerSpec,
};
use dashmap::DashMap;
use ractor::{ActorProcessingErr, RpcReplyPort};
use serde::Serialize;
use serde_json::Value;

use super::manifest::ToolManifest;
use super::mcp::{ConnMsg, ConnWorker, MCP_SERVERS_MAX, McpLink, McpServerConfig, McpTool};
use super::registry::{ToolRegistry, ToolRegistryError};
use aios_core::tool::{Schema, Violations};
use aios_core::{AgentId, Tool, ToolContext, ToolError, ToolRequirement};
use aios_supervisor::snapshot::Durability;

/// Cached results of pure tools at most.
pub const TOOL_CACHE_ENTRIES_MAX: usize = 10_000;
/// How long a cached result lives.
pub const TOOL_CACHE_TTL: Duration = Duration::from_secs(300);
/// (tool, agent) pairs counted separately at most; further agents are counted as `*`.
pub(super) const USAGE_KEYS_MAX: usize = 100_000;
/// Denied calls remembered for the audit log at most (oldest dropped).
pub const DENIALS_MAX: usize = 10_000;
/// Denials buffered for each subscriber of [`ToolService::subscribe_denials`].
pub const DENIALS_BROADCAST_LEN: usize = 1024;
/// Latency histogram bucket bounds, in microseconds.
const LATENCY_BUCKETS_US: [u64; 8] = [
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    60_000_000,
    u64::MAX,
];

/// Who calls, as the service grants, counts and audits it (and as a call crosses nodes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CallContext {
    /// The calling agent.
    pub agent: String,
    /// Its role (`planner`, `executor`, …).
    pub role: String,
    /// Its tenant.
    pub tenant: String,
    /// The calling agent's instance key (empty: `main`). Absent from calls of nodes that
    /// predate it.
    #[serde(default)]
    pub instance: String,
}

impl From<&ToolContext> for CallContext {
    fn from(ctx: &ToolContext) -> Self {
        Self {
            agent: ctx
                .agent
                .as_ref()
                .map(|a| a.name.clone())
                .unwrap_or_default(),
            role: ctx.role.clone(),
            tenant: ctx.tenant.clone(),
            instance: ctx
                .agent
                .as_ref()
                .map(|a| a.key.clone())
                .unwrap_or_default(),
        }
    }
}

impl CallContext {
    /// The context a hosted tool is called with: the caller's agent instance, role and
    /// tenant. What the service does not carry (its session, run and delegation chain) is
    /// left out, so a hosted tool must not rely on them.
    fn tool_context(&self) -> ToolContext {
        ToolContext {
            agent: (!self.agent.is_empty()).then(|| {
                let mut id = AgentId::main(self.agent.clone());
                if !self.instance.is_empty() {
                    id.key = self.instance.clone();
                }
                id
            }),
            role: self.role.clone(),
            tenant: self.tenant.clone(),
            ..ToolContext::default()
        }
    }
}

/// Why a call failed, structured so an agent can act on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolCallError {
    /// No installed version satisfies the requirement, or it has no implementation.
    #[error("no tool matches {requirement}")]
    NotFound {
        /// The requirement.
        requirement: String,
    },
    /// The caller has no grant for it.
    #[error("{agent} may not call {tool}: {reason}")]
    Denied {
        /// The tool.
        tool: String,
        /// The caller.
        agent: String,
        /// Why.
        reason: String,
    },
    /// The arguments break the input schema; the tool did not run.
    #[error("invalid arguments for {tool}: {violations}")]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// What is wrong, with paths.
        violations: Violations,
    },
    /// The result broke the output schema.
    #[error("{tool} returned an invalid result: {violations}")]
    InvalidOutput {
        /// The tool.
        tool: String,
        /// What is wrong.
        violations: Violations,
    },
    /// The tool failed.
    #[error("{tool} failed: {message}")]
    Failed {
        /// The tool.
        tool: String,
        /// Its message.
        message: String,
    },
    /// The tool crashed during the call (it is restarted).
    #[error("{tool} crashed during the call and is being restarted: {detail}")]
    Crashed {
        /// The tool.
        tool: String,
        /// What went away.
        detail: String,
    },
    /// The call took longer than the manifest's timeout.
    #[error("{tool} timed out after {after_ms} ms")]
    Timeout {
        /// The tool.
        tool: String,
        /// The timeout.
        after_ms: u64,
    },
}

/// A grant: who may call which tools. Empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Only this agent.
    #[serde(default)]
    pub agent: Option<String>,
    /// Only agents with this role.
    #[serde(default)]
    pub role: Option<String>,
    /// Only this tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Tool names (`*` for all).
    pub tools: Vec<String>,
}

impl Grant {
    /// A stable id for it: the first 16 hex digits of the SHA-256 of its JSON.
    pub fn id(&self) -> String {
        use sha2::Digest as _;
        let json = serde_json::to_string(self).unwrap_or_default();
        sha2::Sha256::digest(json.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether it may apply to some agent of `tenant` (whatever its agent and role fields).
    pub fn reaches_tenant(&self, tenant: &str) -> bool {
        self.tenant.as_ref().is_none_or(|t| t == tenant)
    }

    fn allows(&self, ctx: &CallContext, tool: &str) -> bool {
        self.agent.as_ref().is_none_or(|a| a == &ctx.agent)
            && self.role.as_ref().is_none_or(|r| r == &ctx.role)
            && self.tenant.as_ref().is_none_or(|t| t == &ctx.tenant)
            && self.tools.iter().any(|t| t == "*" || t == tool)
    }
}

/// The outcome of one manifest example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExampleOutcome {
    /// The example's name.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Why it failed.
    pub detail: String,
}

/// A refused call, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Denial {
    /// Unix ms.
    pub at_ms: u64,
    /// The caller.
    pub agent: String,
    /// Its tenant.
    pub tenant: String,
    /// The tool.
    pub tool: String,
    /// Why.
    pub reason: String,
}

/// Usage of one tool version by one agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ToolUsage {
    /// Calls (cache hits included).
    pub calls: u64,
    /// Calls that failed (any error but a denial).
    pub errors: u64,
    /// Calls answered from the cache.
    pub cache_hits: u64,
    /// Latency histogram: counts at or under 0.1, 1, 10, 100 ms, 1, 10, 60 s, and above.
    pub latency_buckets: [u64; 8],
}

struct Installed {
    manifest: Arc<ToolManifest>,
    metrics: ToolMetrics,
    input: Schema,
    output: Option<Schema>,
    /// `concurrency_max` host actors, each running one call at a time, with the calls sent
    /// to it and not answered yet.
    hosts: Vec<(ActorHandle<HostMsg>, Arc<AtomicUsize>)>,
}

impl Installed {
    /// The least busy host (the first among equals) and its busy count.
    fn host(&self) -> &(ActorHandle<HostMsg>, Arc<AtomicUsize>) {
        self.hosts
            .iter()
            .min_by_key(|(_, busy)| busy.load(Ordering::Relaxed))
            .unwrap_or(&self.hosts[0])
    }
}

/// Counts a call against its host until dropped.
struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Metric handles of one tool version, registered once at install (the metrics recorder,
/// if any, must be installed before the node starts).
struct ToolMetrics {
    ok: metrics::Counter,
    failed: metrics::Counter,
    cache_hits: metrics::Counter,
    seconds: metrics::Histogram,
}

impl ToolMetrics {
    fn new(m: &ToolManifest) -> Self {
        let labels = |outcome: &'static str| {
            [
                ("tool", m.name.clone()),
                ("version", m.version.to_string()),
                ("outcome", outcome.to_string()),
            ]
        };
        Self {
            ok: metrics::counter!("aios_tool_calls_total", &labels("ok")),
            failed: metrics::counter!("aios_tool_calls_total", &labels("error")),
            cache_hits: metrics::counter!("aios_tool_cache_hits_total", &labels("ok")[..2]),
            seconds: metrics::histogram!("aios_tool_call_seconds", &labels("ok")[..2]),
        }
    }
}

type CacheKey = (String, String);

/// Who needs which tools among the agents (for refusing to remove what is still needed).
pub type AgentNeeds = Arc<dyn Fn() -> Vec<(String, ToolRequirement)> + Send + Sync>;

/// The record of the persisted grants.
const GRANTS_KEY: &str = aios_core::keyspace::TOOL_GRANTS;
/// Usage records, one per tool version: `toolusage/<name>@<version>`.
const USAGE_PREFIX: &str = aios_core::keyspace::TOOL_USAGE;
/// MCP server records: `mcpsrv/<name>`.
const MCP_PREFIX: &str = aios_core::keyspace::MCP_SERVER;
/// How long a node on a shared store waits before it tries again to connect an MCP server
/// another node added, after it failed.
pub(super) const MCP_RETRY_AFTER: Duration = Duration::from_secs(60);
/// How often changed usage counts are written.
pub const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// Persisted grants at most.
pub const GRANTS_MAX: usize = 10_000;

#[derive(serde::Serialize, serde::Deserialize)]
struct JsonRecord {
    json: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct McpRecord {
    /// The server's configuration, as JSON.
    config: String,
    /// The version its tools were installed as.
    version: String,
}

/// Mailbox bound of an MCP connection actor.
const MCP_MAILBOX_LEN_MAX: usize = 16;

/// An MCP server of the node.
struct McpEntry {
    config: McpServerConfig,
    version: semver::Version,
    link: Arc<McpLink>,
    handle: ActorHandle<ConnMsg>,
    /// Installed tool ids (`name@version`).
    tools: Vec<String>,
}

struct McpView {
    status: McpServerStatus,
    link: Option<Arc<McpLink>>,
    handle: Option<ActorHandle<ConnMsg>>,
}

/// An MCP server as reported by [`ToolService::mcp_servers`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct McpServerStatus {
    /// Its name.
    pub name: String,
    /// `stdio` or `http`.
    pub transport: String,
    /// Whether it is connected now.
    pub connected: bool,
    /// The connection actor's generation (1 + restarts).
    pub generation: Option<u64>,
    /// The child's process id (stdio servers).
    pub pid: Option<u32>,
    /// The version its tools are installed as.
    pub version: String,
    /// The version the server reports.
    pub server_version: Option<String>,
    /// Its tools, as `name@version`.
    pub tools: Vec<String>,
    /// Why it could not be restored, if it could not.
    pub error: Option<String>,
}

struct Inner {
    registry: ToolRegistry,
    supervisor: SupervisorRef,
    impls: DashMap<String, Arc<dyn Tool>>,
    installed: DashMap<String, Arc<Installed>>,
    /// Persisted grants, then the node's configured ones.
    grants: Mutex<Vec<Grant>>,
    node_grants: Mutex<Vec<Grant>>,
    /// Serialises changes to the persisted grants.
    grants_write: tokio::sync::Mutex<()>,
    /// Tool ids whose usage changed since the last flush.
    usage_dirty: Mutex<std::collections::BTreeSet<String>>,
    /// Serialises usage flushes.
    usage_write: tokio::sync::Mutex<()>,
    agent_needs: Mutex<Option<AgentNeeds>>,
    /// MCP servers by name; the async lock serialises adding and removing.
    mcp: tokio::sync::Mutex<BTreeMap<String, McpEntry>>,
    /// A read-only view for status, updated with `mcp`.
    mcp_view: Mutex<BTreeMap<String, McpView>>,
    /// MCP servers another node added that failed to connect here, and when (tried again
    /// after [`MCP_RETRY_AFTER`]). At most [`MCP_SERVERS_MAX`]: keyed by persisted names.
    mcp_failed: DashMap<String, Instant>,
    denials: Mutex<std::collections::VecDeque<Denial>>,
    /// Each denial as it happens, for the daemon's audit log.
    denied: tokio::sync::broadcast::Sender<Denial>,
    usage: DashMap<(String, String), ToolUsage>,
    cache: Mutex<lru::LruCache<CacheKey, (Instant, Value)>>,
    /// The route to other nodes' tools (cluster mode only).
    remote: std::sync::OnceLock<Arc<dyn super::remote::RemoteTools>>,
    /// Where a tool this node cannot run was last run, by requirement (bounded).
    located: DashMap<String, String>,
}

/// Tools of a node. Cheap to clone.
#[derive(Clone)]
pub struct ToolService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ToolService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolService")
            .field("running", &self.inner.installed.len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn store_err(e: impl std::fmt::Display) -> ToolRegistryError {
    ToolRegistryError::Store(e.to_string())
}

impl ToolService {
    /// A service over `registry`, running hosts under `supervisor`, with the grants and
    /// usage counts persisted in the registry's store. Changed usage counts are written every
    /// [`USAGE_FLUSH_INTERVAL`] and by [`ToolService::flush_usage`]. MCP servers are not
    /// reconnected here: see [`ToolService::restore_mcp_servers`].
    ///
    /// # Errors
    /// Store failures or unreadable records.
    pub async fn open(
        registry: ToolRegistry,
        supervisor: SupervisorRef,
    ) -> Result<Self, ToolRegistryError> {
        let records = registry.records().clone();
        let grants: Vec<Grant> = match records
            .get::<JsonRecord>(GRANTS_KEY)
            .await
            .map_err(store_err)?
        {
            Some(r) => serde_json::from_str(&r.json)
                .map_err(|e| ToolRegistryError::Store(format!("{GRANTS_KEY}: {e}")))?,
            None => Vec::new(),
        };
        let usage = DashMap::new();
        let mut after: Option<String> = None;
        loop {
            let keys = records
                .keys_after(USAGE_PREFIX, after.as_deref(), 256)
                .await
                .map_err(store_err)?;
            let Some(last) = keys.last().cloned() else {
                break;
            };
            for key in keys {
                let tool = key.trim_start_matches(USAGE_PREFIX).to_string();
                let rows: Vec<(String, ToolUsage)> = records
                    .get(&key)
                    .await
                    .map_err(store_err)?
                    .unwrap_or_default();
                for (agent, u) in rows {
                    if usage.len() < USAGE_KEYS_MAX {
                        usage.insert((tool.clone(), agent), u);
                    }
                }
            }
            after = Some(last);
        }
        let service = Self {
            inner: Arc::new(Inner {
                registry,
                supervisor,
                impls: DashMap::new(),
                installed: DashMap::new(),
                grants: Mutex::new(grants),
                node_grants: Mutex::new(Vec::new()),
                grants_write: tokio::sync::Mutex::new(()),
                usage_dirty: Mutex::new(std::collections::BTreeSet::new()),
                usage_write: tokio::sync::Mutex::new(()),
                agent_needs: Mutex::new(None),
                mcp: tokio::sync::Mutex::new(BTreeMap::new()),
                mcp_view: Mutex::new(BTreeMap::new()),
                mcp_failed: DashMap::new(),
                denials: Mutex::new(std::collections::VecDeque::new()),
                denied: tokio::sync::broadcast::channel(DENIALS_BROADCAST_LEN).0,
                usage,
                cache: Mutex::new(lru::LruCache::new(
                    NonZeroUsize::new(TOOL_CACHE_ENTRIES_MAX).unwrap_or(NonZeroUsize::MIN),
                )),
                remote: std::sync::OnceLock::new(),
                located: DashMap::new(),
            }),
        };
        // Periodic usage flush; ends when the service is dropped.
        let weak = Arc::downgrade(&service.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(USAGE_FLUSH_INTERVAL).await;
                let Some(inner) = weak.upgrade() else { break };
                if let Err(e) = (ToolService { inner }).flush_usage().await {
                    tracing::warn!(error = %e, "writing tool usage");
                }
            }
        });
        Ok(service)
    }

    /// Tells the service which tools the agents need, so that removing one of them is
    /// refused (the runtime wires its agent registry here).
    pub fn set_agent_needs(&self, needs: AgentNeeds) {
        *lock(&self.inner.agent_needs) = Some(needs);
    }

    /// Writes the usage counts that changed since the last flush.
    ///
    /// # Errors
    /// Store failures (the counts stay marked as changed).
    pub async fn flush_usage(&self) -> Result<(), ToolRegistryError> {
        let _w = self.inner.usage_write.lock().await;
        let dirty = std::mem::take(&mut *lock(&self.inner.usage_dirty));
        let records = self.inner.registry.records();
        for (i, tool) in dirty.iter().enumerate() {
            let rows: Vec<(String, ToolUsage)> = self
                .inner
                .usage
                .iter()
                .filter(|e| &e.key().0 == tool)
                .map(|e| (e.key().1.clone(), e.value().clone()))
                .collect();
            let durability = if i + 1 == dirty.len() {
                Durability::Durable
            } else {
                Durability::Buffered
            };
            if let Err(e) = records
                .put(&format!("{USAGE_PREFIX}{tool}"), &rows, durability)
                .await
            {
                lock(&self.inner.usage_dirty).extend(dirty.iter().skip(i).cloned());
                return Err(store_err(e));
            }
        }
        Ok(())
    }

    /// The route to other nodes' tools, set once (`remote.rs`).
    pub(super) fn remote_cell(&self) -> &std::sync::OnceLock<Arc<dyn super::remote::RemoteTools>> {
        &self.inner.remote
    }

    /// Where calls this node could not run were run, by requirement (`remote.rs`).
    pub(super) fn located(&self) -> &DashMap<String, String> {
        &self.inner.located
    }

    /// Whether this node runs the tool version `id` (`name@version`).
    pub(super) fn runs_here(&self, id: &str) -> bool {
        self.inner.installed.contains_key(id)
    }

    /// The registry.
    pub fn registry(&self) -> &ToolRegistry {
        &self.inner.registry
    }

    /// Installs a manifest with its implementation and starts its host.
    ///
    /// # Errors
    /// The registry's refusal, or a host that cannot start.
    pub async fn install(
        &self,
        manifest: ToolManifest,
        implementation: Arc<dyn Tool>,
    ) -> Result<(), ToolRegistryError> {
        self.inner.registry.install(manifest.clone()).await?;
        self.start_hosts(manifest, implementation, true).await
    }

    /// Starts the hosts of an installed manifest. When they cannot start and `undo` is set,
    /// the manifest is uninstalled again, so no manifest without running hosts shadows older
    /// versions.
    async fn start_hosts(
        &self,
        manifest: ToolManifest,
        implementation: Arc<dyn Tool>,
        undo: bool,
    ) -> Result<(), ToolRegistryError> {
        let id = manifest.id();
        let input = Schema::compile(&manifest.input_schema).map_err(ToolRegistryError::Store)?;
        let output = match &manifest.output_schema {
            Some(s) => Some(Schema::compile(s).map_err(ToolRegistryError::Store)?),
            None => None,
        };
        let manifest = Arc::new(manifest);
        let mut hosts = Vec::with_capacity(manifest.concurrency_max);
        for i in 0..manifest.concurrency_max {
            let spec = WorkerSpec::new(
                format!("tool:{id}:{i}"),
                HostWorker {
                    implementation: implementation.clone(),
                    name: id.clone(),
                    timeout: manifest.timeout,
                },
            )
            .restart(Restart::Permanent)
            .mailbox_len_max(HOST_MAILBOX_LEN_MAX);
            match self.inner.supervisor.start_worker(spec).await {
                Ok(h) => hosts.push((h, Arc::new(AtomicUsize::new(0)))),
                Err(e) => {
                    self.stop_hosts(&id, hosts.len()).await;
                    if undo
                        && let Err(u) = self
                            .inner
                            .registry
                            .uninstall(&manifest.name, &manifest.version, &[])
                            .await
                    {
                        tracing::warn!(tool = %id, error = %u, "removing a tool whose hosts failed to start");
                    }
                    return Err(ToolRegistryError::Store(format!("starting {id}: {e}")));
                }
            }
        }
        self.inner.impls.insert(id.clone(), implementation);
        self.inner.installed.insert(
            id,
            Arc::new(Installed {
                metrics: ToolMetrics::new(&manifest),
                manifest,
                input,
                output,
                hosts,
            }),
        );
        Ok(())
    }

    /// Waits until the first host of `id` (`name@version`; the one an idle tool's next call
    /// goes to) runs with a generation of at least `min` (tests use it after a crash).
    ///
    /// # Errors
    /// The id is unknown, or the timeout passed.
    #[doc(hidden)]
    pub async fn wait_host(&self, id: &str, min: u64, timeout: Duration) -> Result<u64, String> {
        let host = self
            .inner
            .installed
            .get(id)
            .map(|i| i.hosts[0].0.clone())
            .ok_or_else(|| format!("no tool {id}"))?;
        host.wait_for_generation(min, timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// The version `requirement` resolves to, with its id, if it has an implementation.
    fn installed(
        &self,
        requirement: &ToolRequirement,
    ) -> Result<(String, Arc<Installed>), ToolCallError> {
        let manifest =
            self.inner
                .registry
                .resolve(requirement)
                .ok_or_else(|| ToolCallError::NotFound {
                    requirement: requirement.to_string(),
                })?;
        let id = manifest.id();
        let installed = self
            .inner
            .installed
            .get(&id)
            .map(|i| i.clone())
            .ok_or_else(|| ToolCallError::NotFound {
                requirement: format!("{requirement} (installed without an implementation)"),
            })?;
        Ok((id, installed))
    }

    async fn stop_hosts(&self, id: &str, count: usize) {
        for i in 0..count {
            if let Err(e) = self
                .inner
                .supervisor
                .remove_child(&format!("tool:{id}:{i}"))
                .await
            {
                tracing::warn!(tool = %id, host = i, error = %e, "stopping a tool host");
            }
        }
    }

    /// Removes one version (see [`ToolRegistry::uninstall`] for when it is refused) and
    /// stops its hosts.
    ///
    /// # Errors
    /// As [`ToolRegistry::uninstall`].
    pub async fn uninstall(
        &self,
        name: &str,
        version: &semver::Version,
    ) -> Result<(), ToolRegistryError> {
        let needs = lock(&self.inner.agent_needs).clone();
        let agent_needs = needs.map(|f| f()).unwrap_or_default();
        self.inner
            .registry
            .uninstall(name, version, &agent_needs)
            .await?;
        let id = format!("{name}@{version}");
        self.inner.impls.remove(&id);
        if let Some((_, installed)) = self.inner.installed.remove(&id) {
            self.stop_hosts(&id, installed.hosts.len()).await;
        }
        Ok(())
    }

    /// Connects an MCP server, installs each tool it lists as `<server>__<tool>` (at the
    /// configured version, else the server's own when it is semver, else `0.1.0`), and
    /// persists the server so that [`ToolService::restore_mcp_servers`] reconnects it after a
    /// restart. Returns the installed tool ids.
    ///
    /// # Errors
    /// [`ToolRegistryError::InvalidConfig`], [`ToolRegistryError::Exists`] for a taken name,
    /// [`ToolRegistryError::Unavailable`] when the server cannot be started or reached,
    /// registry refusals, store failures. Nothing is left behind on an error.
    pub async fn add_mcp_server(
        &self,
        config: McpServerConfig,
    ) -> Result<Vec<String>, ToolRegistryError> {
        config
            .validate()
            .map_err(ToolRegistryError::InvalidConfig)?;
        let mut servers = self.inner.mcp.lock().await;
        if servers.contains_key(&config.name) {
            return Err(ToolRegistryError::Exists(format!(
                "MCP server {}",
                config.name
            )));
        }
        if servers.len() >= MCP_SERVERS_MAX {
            return Err(ToolRegistryError::InvalidConfig(format!(
                "at most {MCP_SERVERS_MAX} MCP servers"
            )));
        }
        let entry = self.start_mcp(config, None, false).await?;
        let record = McpRecord {
            config: serde_json::to_string(&entry.config).map_err(store_err)?,
            version: entry.version.to_string(),
        };
        if let Err(e) = self
            .inner
            .registry
            .records()
            .put(
                &format!("{MCP_PREFIX}{}", entry.config.name),
                &record,
                Durability::Durable,
            )
            .await
        {
            self.stop_mcp(&entry).await;
            return Err(store_err(e));
        }
        let tools = entry.tools.clone();
        self.set_view(&entry, None);
        servers.insert(entry.config.name.clone(), entry);
        Ok(tools)
    }

    /// Reconnects the MCP servers persisted by [`ToolService::add_mcp_server`]. A server
    /// that cannot be started is reported (and listed by [`ToolService::mcp_servers`] with
    /// its error) but does not stop the others.
    ///
    /// # Errors
    /// Store failures reading the records.
    pub async fn restore_mcp_servers(&self) -> Result<Vec<(String, String)>, ToolRegistryError> {
        self.restore_where(|_| true).await
    }

    /// On a store other nodes share (called every few seconds): connects here the MCP
    /// servers another node added, and disconnects here those another node removed (their
    /// records and tool manifests were that node's to delete). A server that fails to connect
    /// is tried again after [`MCP_RETRY_AFTER`]. Returns how many servers changed.
    ///
    /// # Errors
    /// Store failures reading the records.
    pub async fn sync_mcp_servers(&self) -> Result<usize, ToolRegistryError> {
        let mut changed = 0;
        let added = {
            // The records are read under the lock, so a server being added here is either
            // in both or in neither.
            let mut servers = self.inner.mcp.lock().await;
            let keys = self
                .inner
                .registry
                .records()
                .keys(MCP_PREFIX, MCP_SERVERS_MAX)
                .await
                .map_err(store_err)?;
            let names: std::collections::BTreeSet<String> = keys
                .iter()
                .map(|k| k.trim_start_matches(MCP_PREFIX).to_string())
                .collect();
            let gone: Vec<String> = servers
                .keys()
                .filter(|n| !names.contains(*n))
                .cloned()
                .collect();
            for name in gone {
                if let Some(entry) = servers.remove(&name) {
                    tracing::info!(mcp_server = %name, "MCP server removed on another node: disconnected here");
                    self.disconnect_here(&entry).await;
                    changed += 1;
                }
            }
            lock(&self.inner.mcp_view).retain(|n, _| names.contains(n));
            self.inner.mcp_failed.retain(|n, _| names.contains(n));
            names.iter().any(|n| !servers.contains_key(n))
        };
        if added {
            let failed = &self.inner.mcp_failed;
            let before = self.inner.mcp.lock().await.len();
            let failures = self
                .restore_where(|name| {
                    failed
                        .get(name)
                        .is_none_or(|at| at.elapsed() >= MCP_RETRY_AFTER)
                })
                .await?;
            let now = Instant::now();
            for (name, error) in failures {
                tracing::warn!(mcp_server = %name, %error, "MCP server added on another node not connected here");
                failed.insert(name, now);
            }
            let after = self.inner.mcp.lock().await;
            for name in after.keys() {
                failed.remove(name);
            }
            changed += after.len().saturating_sub(before);
        }
        Ok(changed)
    }

    /// Stops this node's connection to an MCP server and forgets its tools here, leaving
    /// the records alone.
    async fn disconnect_here(&self, entry: &McpEntry) {
        for id in &entry.tools {
            let tool = id.split('@').next().unwrap_or_default();
            self.inner.registry.forget_here(tool, &entry.version);
            self.inner.impls.remove(id);
            if let Some((_, installed)) = self.inner.installed.remove(id) {
                self.stop_hosts(id, installed.hosts.len()).await;
            }
        }
        self.stop_connection(entry).await;
    }

    /// Connects the persisted MCP servers not connected here for which `wanted(name)`.
    async fn restore_where(
        &self,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, String)>, ToolRegistryError> {
        let records = self.inner.registry.records();
        let keys = records
            .keys(MCP_PREFIX, MCP_SERVERS_MAX)
            .await
            .map_err(store_err)?;
        let mut failures = Vec::new();
        let mut servers = self.inner.mcp.lock().await;
        for key in keys {
            let name = key.trim_start_matches(MCP_PREFIX).to_string();
            if servers.contains_key(&name) || !wanted(&name) {
                continue;
            }
            let restored = async {
                let r: McpRecord = records
                    .get(&key)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| ToolRegistryError::NotFound(key.clone()))?;
                let config: McpServerConfig = serde_json::from_str(&r.config)
                    .map_err(|e| ToolRegistryError::Store(format!("{key}: {e}")))?;
                let version = semver::Version::parse(&r.version)
                    .map_err(|e| ToolRegistryError::Store(format!("{key}: {e}")))?;
                self.start_mcp(config, Some(version), true).await
            }
            .await;
            match restored {
                Ok(entry) => {
                    self.set_view(&entry, None);
                    servers.insert(name, entry);
                }
                Err(e) => {
                    tracing::warn!(mcp_server = %name, error = %e, "MCP server not restored");
                    lock(&self.inner.mcp_view).insert(
                        name.clone(),
                        McpView {
                            status: McpServerStatus {
                                name: name.clone(),
                                error: Some(e.to_string()),
                                ..McpServerStatus::default()
                            },
                            link: None,
                            handle: None,
                        },
                    );
                    failures.push((name, e.to_string()));
                }
            }
        }
        Ok(failures)
    }

    /// Removes an MCP server: uninstalls its tools (refused, with the reason, while a tool
    /// or an agent still needs one; the tools removed before the refusal stay removed and the
    /// server stays with the rest), stops its connection (killing a stdio child) and forgets
    /// it.
    ///
    /// # Errors
    /// [`ToolRegistryError::NotFound`], [`ToolRegistryError::InUse`], store failures.
    pub async fn remove_mcp_server(&self, name: &str) -> Result<(), ToolRegistryError> {
        let mut servers = self.inner.mcp.lock().await;
        let Some(entry) = servers.get_mut(name) else {
            lock(&self.inner.mcp_view).remove(name);
            self.inner
                .registry
                .records()
                .delete(&format!("{MCP_PREFIX}{name}"))
                .await
                .map_err(store_err)?;
            return Err(ToolRegistryError::NotFound(format!("MCP server {name}")));
        };
        while let Some(id) = entry.tools.first().cloned() {
            let tool = id.split('@').next().unwrap_or_default().to_string();
            match self.uninstall(&tool, &entry.version).await {
                Ok(()) | Err(ToolRegistryError::NotFound(_)) => {
                    entry.tools.remove(0);
                }
                Err(e) => {
                    let entry = &*entry;
                    self.set_view(entry, None);
                    return Err(e);
                }
            }
        }
        if let Some(entry) = servers.remove(name) {
            self.stop_mcp(&entry).await;
        }
        lock(&self.inner.mcp_view).remove(name);
        self.inner
            .registry
            .records()
            .delete(&format!("{MCP_PREFIX}{name}"))
            .await
            .map_err(store_err)
    }

    /// The MCP servers: connection state, child pid, restarts, tools; servers that failed to
    /// restore carry their error.
    pub fn mcp_servers(&self) -> Vec<McpServerStatus> {
        lock(&self.inner.mcp_view)
            .values()
            .map(|v| {
                let mut s = v.status.clone();
                if let Some(link) = &v.link {
                    s.connected = link.connected();
                    s.pid = link.pid();
                    s.server_version = link.server_version();
                }
                s.generation = v.handle.as_ref().and_then(ActorHandle::generation);
                s
            })
            .collect()
    }

    fn set_view(&self, entry: &McpEntry, error: Option<String>) {
        let status = McpServerStatus {
            name: entry.config.name.clone(),
            transport: entry.config.transport_kind().to_string(),
            version: entry.version.to_string(),
            tools: entry.tools.clone(),
            error,
            ..McpServerStatus::default()
        };
        lock(&self.inner.mcp_view).insert(
            entry.config.name.clone(),
            McpView {
                status,
                link: Some(entry.link.clone()),
                handle: Some(entry.handle.clone()),
            },
        );
    }

    /// Starts the connection actor, then installs the listed tools. On a restore
    /// (`restoring`), a tool already registered with a different manifest at the same
    /// version keeps its registered manifest (logged).
    async fn start_mcp(
        &self,
        config: McpServerConfig,
        version: Option<semver::Version>,
        restoring: bool,
    ) -> Result<McpEntry, ToolRegistryError> {
        let link = Arc::new(McpLink::default());
        let spec = WorkerSpec::new(
            format!("mcp:{}", config.name),
            ConnWorker {
                config: config.clone(),
                link: link.clone(),
            },
        )
        .restart(Restart::Permanent)
        .mailbox_len_max(MCP_MAILBOX_LEN_MAX);
        let handle = self
            .inner
            .supervisor
            .start_worker(spec)
            .await
            .map_err(|e| ToolRegistryError::Unavailable(e.to_string()))?;
        let version = version
            .or_else(|| config.version.clone())
            .or_else(|| {
                link.server_version()
                    .and_then(|v| semver::Version::parse(&v).ok())
            })
            .unwrap_or_else(|| semver::Version::new(0, 1, 0));
        let mut entry = McpEntry {
            config,
            version,
            link,
            handle,
            tools: Vec::new(),
        };
        for (manifest, mcp_name) in
            super::mcp::manifests(&entry.config, &entry.version, &entry.link.tools())
        {
            let id = manifest.id();
            let tool = (manifest.name.clone(), manifest.version.clone());
            let implementation: Arc<dyn Tool> = Arc::new(McpTool {
                spec: manifest.spec(),
                server: entry.config.name.clone(),
                tool: mcp_name,
                link: entry.link.clone(),
            });
            let installed = match self.inner.registry.install(manifest.clone()).await {
                // A restored server's manifests are in the store already (maybe used by the
                // node that added it): a failure here forgets them here only.
                Ok(()) => self.start_hosts(manifest, implementation, !restoring).await,
                Err(ToolRegistryError::Exists(_)) if restoring => {
                    tracing::warn!(tool = %id, "the MCP server changed this tool without a new version; keeping the installed manifest");
                    match self.inner.registry.resolve(&ToolRequirement {
                        name: manifest.name.clone(),
                        req: semver::VersionReq::parse(&format!("={}", manifest.version))
                            .unwrap_or(semver::VersionReq::STAR),
                    }) {
                        Some(m) => self.start_hosts((*m).clone(), implementation, false).await,
                        None => Err(ToolRegistryError::NotFound(id.clone())),
                    }
                }
                Err(e) => Err(e),
            };
            if let Err(e) = installed {
                if restoring {
                    self.inner.registry.forget_here(&tool.0, &tool.1);
                    self.disconnect_here(&entry).await;
                } else {
                    self.stop_mcp(&entry).await;
                }
                return Err(e);
            }
            entry.tools.push(id);
        }
        Ok(entry)
    }

    /// Stops the connection actor of an MCP server.
    async fn stop_connection(&self, entry: &McpEntry) {
        if let Err(e) = self
            .inner
            .supervisor
            .remove_child(&format!("mcp:{}", entry.config.name))
            .await
        {
            tracing::warn!(mcp_server = %entry.config.name, error = %e, "stopping an MCP connection");
        }
    }

    /// Uninstalls what `start_mcp` installed (ignoring refusals) and stops the connection.
    async fn stop_mcp(&self, entry: &McpEntry) {
        for id in &entry.tools {
            let tool = id.split('@').next().unwrap_or_default();
            if let Err(e) = self.uninstall(tool, &entry.version).await {
                tracing::warn!(tool = %id, error = %e, "removing an MCP tool");
            }
        }
        self.stop_connection(entry).await;
    }

    /// Runs the examples of the version `requirement` resolves to (grants are not checked:
    /// this is the operator's test command). Each example passes when the call succeeds and
    /// its result equals the expected output and satisfies the expected output schema.
    ///
    /// # Errors
    /// [`ToolCallError::NotFound`].
    pub async fn run_examples(
        &self,
        requirement: &ToolRequirement,
    ) -> Result<Vec<ExampleOutcome>, ToolCallError> {
        let (id, installed) = self.installed(requirement)?;
        let manifest = installed.manifest.clone();
        let ctx = CallContext {
            agent: "tool-test".into(),
            ..CallContext::default()
        };
        let mut out = Vec::new();
        for (i, ex) in manifest.examples.iter().enumerate() {
            let name = if ex.name.is_empty() {
                format!("example {i}")
            } else {
                ex.name.clone()
            };
            let verdict = match self.run(&installed, &id, ex.input.clone(), &ctx).await {
                Err(e) => Err(e.to_string()),
                Ok((value, _)) => {
                    let mut problems = Vec::new();
                    if let Some(expected) = &ex.output
                        && expected != &value
                    {
                        problems.push(format!("expected {expected}, got {value}"));
                    }
                    if let Some(schema) = &ex.output_schema {
                        match Schema::compile(schema) {
                            Ok(s) => {
                                if let Err(v) = s.check(&value) {
                                    problems.push(v.to_string());
                                }
                            }
                            Err(e) => problems.push(format!("output_schema: {e}")),
                        }
                    }
                    if problems.is_empty() {
                        Ok(())
                    } else {
                        Err(problems.join("; "))
                    }
                }
            };
            out.push(ExampleOutcome {
                name,
                passed: verdict.is_ok(),
                detail: verdict.err().unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Adds a grant and persists it (an identical grant is not added twice).
    ///
    /// # Errors
    /// An empty tool list, too many grants, or a store failure (then nothing changed).
    pub async fn grant(&self, grant: Grant) -> Result<(), ToolRegistryError> {
        if grant.tools.is_empty() || grant.tools.iter().any(|t| t.is_empty()) {
            return Err(ToolRegistryError::Store(
                "a grant names at least one tool (or \"*\"), none empty".into(),
            ));
        }
        let _w = self.inner.grants_write.lock().await;
        let mut next = lock(&self.inner.grants).clone();
        if next.contains(&grant) {
            return Ok(());
        }
        if next.len() >= GRANTS_MAX {
            return Err(ToolRegistryError::Store(format!(
                "at most {GRANTS_MAX} grants"
            )));
        }
        next.push(grant);
        self.save_grants(next).await
    }

    /// Removes a grant; returns whether it existed.
    ///
    /// # Errors
    /// A store failure (then nothing changed).
    pub async fn revoke(&self, grant: &Grant) -> Result<bool, ToolRegistryError> {
        let _w = self.inner.grants_write.lock().await;
        let mut next = lock(&self.inner.grants).clone();
        let before = next.len();
        next.retain(|g| g != grant);
        if next.len() == before {
            return Ok(false);
        }
        self.save_grants(next).await.map(|()| true)
    }

    async fn save_grants(&self, grants: Vec<Grant>) -> Result<(), ToolRegistryError> {
        let json = serde_json::to_string(&grants).map_err(store_err)?;
        self.inner
            .registry
            .records()
            .put(GRANTS_KEY, &JsonRecord { json }, Durability::Durable)
            .await
            .map_err(store_err)?;
        *lock(&self.inner.grants) = grants;
        Ok(())
    }

    /// Adds a grant for this run of the node only (from its configuration; not persisted).
    pub fn grant_node(&self, grant: Grant) {
        lock(&self.inner.node_grants).push(grant);
    }

    /// The persisted grants (made through [`ToolService::grant`]).
    pub fn persisted_grants(&self) -> Vec<Grant> {
        lock(&self.inner.grants).clone()
    }

    /// The node's configured grants (not persisted).
    pub fn node_grants(&self) -> Vec<Grant> {
        lock(&self.inner.node_grants).clone()
    }

    /// Whether some grant lets an agent of `tenant` call tool `name`.
    pub fn tenant_may_use(&self, tenant: &str, name: &str) -> bool {
        let covers =
            |g: &Grant| g.reaches_tenant(tenant) && g.tools.iter().any(|t| t == "*" || t == name);
        lock(&self.inner.grants).iter().any(covers)
            || lock(&self.inner.node_grants).iter().any(covers)
    }

    /// The persisted grants, then the node's configured ones.
    pub fn grants(&self) -> Vec<Grant> {
        let mut all = lock(&self.inner.grants).clone();
        all.extend(lock(&self.inner.node_grants).iter().cloned());
        all
    }

    /// Refused calls as they happen (a subscriber that falls behind by more than
    /// [`DENIALS_BROADCAST_LEN`] loses the oldest).
    pub fn subscribe_denials(&self) -> tokio::sync::broadcast::Receiver<Denial> {
        self.inner.denied.subscribe()
    }

    /// The latest refused calls, oldest first.
    pub fn denials(&self) -> Vec<Denial> {
        lock(&self.inner.denials).iter().cloned().collect()
    }

    /// Usage per (tool `name@version`, agent).
    pub fn usage(&self) -> BTreeMap<(String, String), ToolUsage> {
        self.inner
            .usage
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    fn record(&self, tool: &str, agent: &str, f: impl FnOnce(&mut ToolUsage)) {
        // Bounded: beyond USAGE_KEYS_MAX (tool, agent) pairs, new agents count as `*`.
        let agent = if self.inner.usage.len() >= USAGE_KEYS_MAX
            && !self
                .inner
                .usage
                .contains_key(&(tool.to_string(), agent.to_string()))
        {
            "*"
        } else {
            agent
        };
        let mut u = self
            .inner
            .usage
            .entry((tool.to_string(), agent.to_string()))
            .or_default();
        f(&mut u);
        drop(u);
        let mut dirty = lock(&self.inner.usage_dirty);
        if !dirty.contains(tool) {
            dirty.insert(tool.to_string());
        }
    }

    /// Calls the version of a tool that `requirement` resolves to.
    ///
    /// # Errors
    /// [`ToolCallError`], structured for the calling agent.
    pub async fn call(
        &self,
        requirement: &ToolRequirement,
        args: Value,
        ctx: &CallContext,
    ) -> Result<Value, ToolCallError> {
        // In a cluster, a tool this node cannot run (an MCP server only another node
        // reaches, a plugin only another node has) runs where it can.
        if self.remote_cell().get().is_some()
            && let Err(ToolCallError::NotFound { requirement: why }) = self.installed(requirement)
        {
            return self.call_elsewhere(requirement, args, ctx, why).await;
        }
        self.call_here(requirement, args, ctx).await
    }

    /// [`ToolService::call`] on this node only (the tool runs here or not at all): what
    /// another node of a cluster asks when it cannot run a tool itself.
    ///
    /// # Errors
    /// [`ToolCallError`], structured for the calling agent.
    pub async fn call_here(
        &self,
        requirement: &ToolRequirement,
        args: Value,
        ctx: &CallContext,
    ) -> Result<Value, ToolCallError> {
        let (id, installed) = self.installed(requirement)?;
        let manifest = installed.manifest.clone();
        let granted = lock(&self.inner.grants)
            .iter()
            .any(|g| g.allows(ctx, &manifest.name))
            || lock(&self.inner.node_grants)
                .iter()
                .any(|g| g.allows(ctx, &manifest.name));
        if !granted {
            let reason = "no grant covers this agent, role and tenant".to_string();
            let mut denials = lock(&self.inner.denials);
            if denials.len() >= DENIALS_MAX {
                denials.pop_front();
            }
            let denial = Denial {
                at_ms: crate::protocol::unix_ms(),
                agent: ctx.agent.clone(),
                tenant: ctx.tenant.clone(),
                tool: id.clone(),
                reason: reason.clone(),
            };
            // No subscriber is fine: the denial is still kept below.
            let _ = self.inner.denied.send(denial.clone());
            denials.push_back(denial);
            tracing::warn!(tool = %id, agent = %ctx.agent, "tool call denied");
            return Err(ToolCallError::Denied {
                tool: id,
                agent: ctx.agent.clone(),
                reason,
            });
        }
        let started = Instant::now();
        let result = self.run(&installed, &id, args, ctx).await;
        let micros = started.elapsed().as_micros() as u64;
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len() - 1);
        let (hit, failed) = match &result {
            Ok((_, hit)) => (*hit, false),
            Err(_) => (false, true),
        };
        self.record(&id, &ctx.agent, |u| {
            u.calls += 1;
            u.errors += u64::from(failed);
            u.cache_hits += u64::from(hit);
            u.latency_buckets[bucket] += 1;
        });
        let m = &installed.metrics;
        if failed {
            m.failed.increment(1);
        } else {
            m.ok.increment(1);
        }
        if hit {
            m.cache_hits.increment(1);
        }
        m.seconds.record(micros as f64 / 1e6);
        result.map(|(v, _)| v)
    }

    async fn run(
        &self,
        installed: &Installed,
        id: &str,
        args: Value,
        ctx: &CallContext,
    ) -> Result<(Value, bool), ToolCallError> {
        installed
            .input
            .check(&args)
            .map_err(|violations| ToolCallError::InvalidArguments {
                tool: id.to_string(),
                violations,
            })?;
        // Per tenant: one tenant's results are never served to another.
        let key = installed
            .manifest
            .pure
            .then(|| (format!("{}\u{0}{id}", ctx.tenant), args.to_string()));
        if let Some(k) = &key {
            let mut cache = lock(&self.inner.cache);
            if let Some((at, v)) = cache.get(k) {
                if at.elapsed() < TOOL_CACHE_TTL {
                    return Ok((v.clone(), true));
                }
                cache.pop(k);
            }
        }
        let timeout = installed.manifest.timeout;
        let ctx = ctx.clone();
        let (host, busy) = installed.host();
        busy.fetch_add(1, Ordering::Relaxed);
        let _busy = Busy(busy);
        // The host abandons the call at the manifest's timeout; waiting twice as long here
        // also covers time in the host's queue.
        let timed_out = || ToolCallError::Timeout {
            tool: id.to_string(),
            after_ms: timeout.as_millis() as u64,
        };
        let value = match host
            .call(|r| HostMsg::Call(args, ctx, r), timeout * 2)
            .await
        {
            Ok(Ok(v)) => v,
            Ok(Err(HostError::Failed(message))) => {
                return Err(ToolCallError::Failed {
                    tool: id.to_string(),
                    message,
                });
            }
            Ok(Err(HostError::TimedOut)) => return Err(timed_out()),
            Ok(Err(HostError::Crashed(detail))) => {
                return Err(ToolCallError::Crashed {
                    tool: id.to_string(),
                    detail,
                });
            }
            Err(CallError::Dropped { .. }) => {
                return Err(ToolCallError::Crashed {
                    tool: id.to_string(),
                    detail: "the tool's host actor failed".into(),
                });
            }
            Err(CallError::Timeout { .. }) => return Err(timed_out()),
            Err(e) => {
                return Err(ToolCallError::Failed {
                    tool: id.to_string(),
                    message: e.to_string(),
                });
            }
        };
        if let Some(schema) = &installed.output {
            schema
                .check(&value)
                .map_err(|violations| ToolCallError::InvalidOutput {
                    tool: id.to_string(),
                    violations,
                })?;
        }
        if let Some(k) = key {
            lock(&self.inner.cache).put(k, (Instant::now(), value.clone()));
        }
        Ok((value, false))
    }
}

/// Mailbox bound of a tool host.
const HOST_MAILBOX_LEN_MAX: usize = 256;

enum HostMsg {
    Call(Value, CallContext, RpcReplyPort<Result<Value, HostError>>),
}

enum HostError {
    Failed(String),
    Crashed(String),
    TimedOut,
}

/// Runs one call at a time of a tool version. A panic in the tool crashes the host (its
/// supervisor restarts it, by the `tools` supervisor's intensity) and drops the caller's
/// reply, which the service reports as [`ToolCallError::Crashed`].
struct HostWorker {
    implementation: Arc<dyn Tool>,
    name: String,
    /// A call running longer is abandoned, so a hung call does not hold the host.
    timeout: Duration,
}

impl Worker for HostWorker {
    type Msg = HostMsg;
    type State = ();

    async fn init(
        &self,
        _: &mut Context<HostMsg>,
        _: Option<()>,
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &mut Context<HostMsg>,
        msg: HostMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let HostMsg::Call(args, call_ctx, reply) = msg;
        tracing::trace!(tool = %self.name, agent = %call_ctx.agent, "tool call");
        let result = match tokio::time::timeout(
            self.timeout,
            self.implementation.call(args, &call_ctx.tool_context()),
        )
        .await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(ToolError::Crashed(m))) => Err(HostError::Crashed(m)),
            Ok(Err(ToolError::Failed(m))) => Err(HostError::Failed(m)),
            Ok(Err(other)) => Err(HostError::Failed(other.to_string())),
            Err(_) => Err(HostError::TimedOut),
        };
        ctx.reply(reply, result);
        Ok(())
    }
}

impl aios_core::ToolSource for ToolService {
    fn resolve(&self, requirement: ToolRequirement) -> Option<Arc<dyn aios_core::Tool>> {
        PluginTool::new(self.clone(), requirement).map(|t| Arc::new(t) as Arc<dyn aios_core::Tool>)
    }
}

/// A plugin tool as seen by agents: the version `requirement` resolves to, called through
/// the service (grants, schemas, cache, host actors) with the agent's name, role and tenant.
#[derive(Debug)]
pub struct PluginTool {
    service: ToolService,
    requirement: ToolRequirement,
    manifest: Arc<ToolManifest>,
}

impl PluginTool {
    /// The agent-side tool for `requirement`, if it resolves.
    pub fn new(service: ToolService, requirement: ToolRequirement) -> Option<Self> {
        let manifest = service.registry().resolve(&requirement)?;
        Some(Self {
            service,
            requirement,
            manifest,
        })
    }
}

#[async_trait::async_trait]
impl aios_core::Tool for PluginTool {
    fn spec(&self) -> aios_core::ToolSpec {
        self.manifest.spec()
    }

    fn capabilities(&self) -> Vec<aios_core::Capability> {
        self.manifest.capabilities.clone()
    }

    async fn call(
        &self,
        args: Value,
        ctx: &aios_core::ToolContext,
    ) -> Result<Value, aios_core::ToolError> {
        use aios_core::ToolError;
        let call_ctx = CallContext::from(ctx);
        match self.service.call(&self.requirement, args, &call_ctx).await {
            Ok(v) => Ok(v),
            Err(ToolCallError::InvalidArguments { violations, .. }) => {
                Err(ToolError::InvalidArguments(violations.to_string()))
            }
            Err(e) => Err(ToolError::Failed(e.to_string())),
        }
    }
}
