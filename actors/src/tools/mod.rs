//! The tool plugin layer: manifests (versions, schemas, permissions, dependencies,
//! examples), JSON Schema validation of arguments and results, and the versioned registry.
//! Tool actors, built-in plugin tools, MCP servers, access control and analytics build on
//! these (the tools issue, in progress).

pub mod builtin;
mod manifest;
mod mcp;
mod registry;
mod remote;
mod service;

pub use self::manifest::{
    Example, ManifestError, Permissions, TOOL_CONCURRENCY_MAX, TOOL_TIMEOUT_MAX, ToolManifest,
};
pub use self::mcp::{
    MCP_CONNECT_TIMEOUT, MCP_SERVERS_MAX, MCP_TOOLS_MAX, McpServerConfig, McpTransport, tool_name,
};
pub use self::registry::{TOOL_VERSIONS_MAX, ToolRegistry, ToolRegistryError};
pub use self::remote::{RemoteToolCall, RemoteTools, ToolForwardError};
pub use self::service::{
    AgentNeeds, CallContext, DENIALS_BROADCAST_LEN, DENIALS_MAX, Denial, ExampleOutcome,
    GRANTS_MAX, Grant, McpServerStatus, PluginTool, TOOL_CACHE_ENTRIES_MAX, TOOL_CACHE_TTL,
    ToolCallError, ToolService, ToolUsage, USAGE_FLUSH_INTERVAL,
};
pub use aios_core::ToolRequirement;
pub use aios_core::tool::schema::{Schema, Violation, Violations};

use std::path::PathBuf;
use std::sync::Arc;

/// Tool settings of a node (also the daemon's `[tools]` section).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsConfig {
    /// Hosts `web_fetch` may reach (empty: none). A host named exactly is trusted; one
    /// that matches only a wildcard (`*.example.com`) passes the outbound guard too
    /// ([`crate::outbound`]): it may not resolve to a loopback, private, … address.
    pub web_allow_hosts: Vec<String>,
    /// Networks the outbound guard lets through although they are internal (empty: none).
    pub outbound_allow: Vec<String>,
    /// The `files` tool's sandbox (default `<data_dir>/sandbox`).
    pub sandbox_dir: Option<PathBuf>,
    /// Grant every tool to every agent (agent definitions still list the tools each agent
    /// may call); `false` to grant per agent, role or tenant. Unset: `true` for a node used
    /// as a library; the daemon then grants per tenant (see its `[tenants] tools`).
    pub grant_all: Option<bool>,
    /// MCP servers to connect at start (in addition to those added at run time, which are
    /// persisted); one that is already known by name is left as it is.
    pub mcp_servers: Vec<McpServerConfig>,
    /// Grants of the node (not persisted), in force from the moment the tools are installed,
    /// before any agent, run or schedule starts. Not read from a file: a daemon sets them.
    #[serde(skip)]
    pub node_grants: Vec<Grant>,
    /// Namespaces `memory_save` may create per tenant, at most (unset: no limit of its own).
    /// Not read from a file: a daemon sets it from its `[tenants]` section.
    #[serde(skip)]
    pub tenant_namespaces_max: Option<usize>,
}

impl Default for ToolsConfig {
    /// No web hosts, the default sandbox, every tool granted (unless a daemon decides).
    fn default() -> Self {
        Self {
            web_allow_hosts: Vec::new(),
            outbound_allow: Vec::new(),
            sandbox_dir: None,
            grant_all: None,
            mcp_servers: Vec::new(),
            node_grants: Vec::new(),
            tenant_namespaces_max: None,
        }
    }
}

/// Installs the built-in plugin tools into `service` and returns them as agent-side tools.
///
/// # Errors
/// A sandbox that cannot be created, or a registry refusal.
pub async fn install_builtins(
    service: &ToolService,
    config: &ToolsConfig,
    sandbox_default: PathBuf,
    memory: crate::memory::MemoryStore,
) -> Result<Vec<Arc<dyn aios_core::Tool>>, String> {
    use self::builtin::{Files, MemoryTool, WebFetch};
    let sandbox = config.sandbox_dir.clone().unwrap_or(sandbox_default);
    let (save, search) = MemoryTool::pair(memory, config.tenant_namespaces_max);
    let (save_m, search_m) = MemoryTool::manifests();
    let tools: Vec<(ToolManifest, Arc<dyn aios_core::Tool>)> = vec![
        (
            WebFetch::manifest(),
            Arc::new(WebFetch::with_guard(
                config.web_allow_hosts.clone(),
                crate::outbound::OutboundGuard::new(crate::outbound::OutboundGuard::parse_allow(
                    &config.outbound_allow,
                )?),
            )),
        ),
        (Files::manifest(), Arc::new(Files::new(sandbox)?)),
        (save_m, save),
        (search_m, search),
    ];
    let mut out: Vec<Arc<dyn aios_core::Tool>> = Vec::new();
    for (manifest, implementation) in tools {
        let requirement = ToolRequirement {
            name: manifest.name.clone(),
            req: semver::VersionReq::STAR,
        };
        service
            .install(manifest, implementation)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(t) = PluginTool::new(service.clone(), requirement) {
            out.push(Arc::new(t));
        }
    }
    for grant in &config.node_grants {
        service.grant_node(grant.clone());
    }
    if config.grant_all.unwrap_or(true) {
        service.grant_node(Grant {
            tools: vec!["*".into()],
            ..Grant::default()
        });
    }
    Ok(out)
}
