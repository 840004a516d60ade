//! The tool plugin layer: manifests (versions, schemas, permissions, dependencies,
//! examples), JSON Schema validation of arguments and results, the versioned registry, and
//! [`ToolService`], which runs each installed version as supervised host actors behind
//! grants, a cache of pure results and usage accounting; built-in tools and MCP servers.
//!
//! ```
//! use std::sync::Arc;
//!
//! use aios_core::records::Records;
//! use aios_core::{Tool, ToolContext, ToolError, ToolRequirement, ToolSpec};
//! use aios_supervisor::snapshot::{SledStore, Snapshots};
//! use aios_supervisor::{Strategy, SupervisorSpec, TreeEnv, start_root};
//! use aios_tools::{CallContext, Grant, ToolManifest, ToolRegistry, ToolService};
//! use serde_json::{Value, json};
//!
//! struct Upper;
//!
//! #[async_trait::async_trait]
//! impl Tool for Upper {
//!     fn spec(&self) -> ToolSpec {
//!         ToolSpec {
//!             name: "upper".into(),
//!             description: "Upper-cases a text.".into(),
//!             parameters: json!({"type": "object"}),
//!         }
//!     }
//!
//!     async fn call(&self, args: Value, _: &ToolContext) -> Result<Value, ToolError> {
//!         Ok(json!(args["text"].as_str().unwrap_or_default().to_uppercase()))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let snapshots = Snapshots::new(Arc::new(SledStore::temporary().unwrap()));
//! let root = start_root(
//!     SupervisorSpec::new("root", Strategy::OneForOne),
//!     TreeEnv::new(Some(snapshots.clone())),
//! )
//! .await
//! .unwrap();
//! let hosts = root
//!     .supervisor()
//!     .start_supervisor(SupervisorSpec::dynamic("tools"))
//!     .await
//!     .unwrap();
//! let registry = ToolRegistry::open(Records::new(snapshots)).await.unwrap();
//! let tools = ToolService::open(registry, hosts).await.unwrap();
//! let manifest = ToolManifest::from_toml(
//!     r#"
//! name = "upper"
//! version = "1.0.0"
//! description = "Upper-cases a text."
//! input_schema = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }
//! "#,
//! )
//! .unwrap();
//! tools.install(manifest, Arc::new(Upper)).await.unwrap();
//! let caller = CallContext {
//!     agent: "writer".into(),
//!     tenant: "acme".into(),
//!     ..CallContext::default()
//! };
//! let upper = ToolRequirement::parse("upper@^1").unwrap();
//! // No grant yet: refused, and the refusal is kept for the audit log.
//! assert!(tools.call(&upper, json!({"text": "hi"}), &caller).await.is_err());
//! tools
//!     .grant(Grant {
//!         tenant: Some("acme".into()),
//!         tools: vec!["upper".into()],
//!         ..Grant::default()
//!     })
//!     .await
//!     .unwrap();
//! let answer = tools.call(&upper, json!({"text": "hi"}), &caller).await.unwrap();
//! assert_eq!(answer, json!("HI"));
//! assert_eq!(tools.denials().len(), 1);
//! # root.shutdown(std::time::Duration::from_secs(5)).await.unwrap();
//! # });
//! ```
#![warn(missing_docs)]

mod accounting;
pub mod builtin;
mod grants;
mod hosts;
mod manifest;
mod mcp;
mod mcp_servers;
mod registry;
mod remote;
mod service;

pub use self::accounting::{
    DENIALS_BROADCAST_LEN, DENIALS_MAX, Denial, ToolUsage, USAGE_FLUSH_INTERVAL,
};
pub use self::grants::{GRANTS_MAX, Grant};
pub use self::manifest::{
    Example, ManifestError, Permissions, TOOL_CONCURRENCY_MAX, TOOL_TIMEOUT_MAX, ToolManifest,
};
pub use self::mcp::{
    MCP_CONNECT_TIMEOUT, MCP_SERVERS_MAX, MCP_TOOLS_MAX, McpServerConfig, McpTransport, tool_name,
};
pub use self::mcp_servers::McpServerStatus;
pub use self::registry::{TOOL_VERSIONS_MAX, ToolRegistry, ToolRegistryError};
pub use self::remote::{RemoteToolCall, RemoteTools, ToolForwardError};
pub use self::service::{
    AgentNeeds, CallContext, ExampleOutcome, PluginTool, TOOL_CACHE_ENTRIES_MAX, TOOL_CACHE_TTL,
    ToolCallError, ToolService,
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
    /// ([`aios_core::outbound`]): it may not resolve to a loopback, private, … address.
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
    memory: aios_memory::MemoryStore,
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
                aios_core::outbound::OutboundGuard::new(
                    aios_core::outbound::OutboundGuard::parse_allow(&config.outbound_allow)?,
                ),
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
