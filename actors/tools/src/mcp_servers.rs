//! MCP servers of a node: each connection is an actor under the `tools` supervisor, and
//! each tool a server lists is installed as a plugin tool `<server>__<tool>`. [`McpServers`]
//! owns the connections, the status view and the failures of servers another node added.
//!
//! Architecture invariant: servers are added, removed, restored and synchronised one at a
//! time (the async lock on `servers`); the status view changes with them, so a listing
//! never shows a server half added.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aios_core::{Tool, ToolRequirement};
use aios_supervisor::snapshot::Durability;
use aios_supervisor::{ActorHandle, Restart, WorkerSpec};
use dashmap::DashMap;
use serde::Serialize;

use super::ToolService;
use super::mcp::{ConnMsg, ConnWorker, MCP_SERVERS_MAX, McpLink, McpServerConfig, McpTool};
use super::registry::ToolRegistryError;
use super::service::{lock, store_err};

/// MCP server records: `mcpsrv/<name>`.
const MCP_PREFIX: &str = aios_core::keyspace::MCP_SERVER;

/// How long a node on a shared store waits before it tries again to connect an MCP server
/// another node added, after it failed.
pub(crate) const MCP_RETRY_AFTER: Duration = Duration::from_secs(60);

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

/// The MCP servers of a node.
#[derive(Default)]
pub(crate) struct McpServers {
    /// By name; the async lock serialises adding and removing.
    servers: tokio::sync::Mutex<BTreeMap<String, McpEntry>>,
    /// A read-only view for status, updated with `servers`.
    view: Mutex<BTreeMap<String, McpView>>,
    /// Servers another node added that failed to connect here, and when (tried again after
    /// [`MCP_RETRY_AFTER`]). At most [`MCP_SERVERS_MAX`]: keyed by persisted names.
    failed: DashMap<String, Instant>,
}

impl ToolService {
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
        let mut servers = self.inner.mcp.servers.lock().await;
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
            let mut servers = self.inner.mcp.servers.lock().await;
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
            lock(&self.inner.mcp.view).retain(|n, _| names.contains(n));
            self.inner.mcp.failed.retain(|n, _| names.contains(n));
            names.iter().any(|n| !servers.contains_key(n))
        };
        if added {
            let failed = &self.inner.mcp.failed;
            let before = self.inner.mcp.servers.lock().await.len();
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
            let after = self.inner.mcp.servers.lock().await;
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
            self.stop_version(id).await;
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
        let mut servers = self.inner.mcp.servers.lock().await;
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
                    lock(&self.inner.mcp.view).insert(
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
        let mut servers = self.inner.mcp.servers.lock().await;
        let Some(entry) = servers.get_mut(name) else {
            lock(&self.inner.mcp.view).remove(name);
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
        lock(&self.inner.mcp.view).remove(name);
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
        lock(&self.inner.mcp.view)
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
        lock(&self.inner.mcp.view).insert(
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
}
