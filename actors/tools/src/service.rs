//! The tool service: every installed tool version that has an implementation runs as a
//! host actor under the `tools` supervisor. A call is checked against the caller's grants,
//! its arguments against the input schema, then served from the cache (pure tools) or run
//! by the host within the manifest's timeout and concurrency limit; the result is checked
//! against the output schema. Every call is counted per tool, version and agent.
//!
//! [`ToolService`] is a thin handle over components that each own their state in their own
//! module: [`super::hosts`] (versions running here and their host actors),
//! [`super::grants`], [`super::accounting`] (usage and denials) and
//! [`super::mcp_servers`]; this module holds the call path.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aios_core::tool::{Schema, Violations};
use aios_core::{AgentId, ToolContext, ToolRequirement};
use aios_supervisor::SupervisorRef;
use dashmap::DashMap;
use serde::Serialize;
use serde_json::Value;

use super::accounting::{Accounting, Denial, USAGE_FLUSH_INTERVAL};
use super::grants::Grants;
use super::hosts::Hosts;
use super::manifest::ToolManifest;
use super::mcp_servers::McpServers;
use super::registry::{ToolRegistry, ToolRegistryError};

/// Cached results of pure tools at most.
pub const TOOL_CACHE_ENTRIES_MAX: usize = 10_000;
/// How long a cached result lives.
pub const TOOL_CACHE_TTL: Duration = Duration::from_secs(300);

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
    pub(crate) fn tool_context(&self) -> ToolContext {
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

/// Who needs which tools among the agents (for refusing to remove what is still needed).
pub type AgentNeeds = Arc<dyn Fn() -> Vec<(String, ToolRequirement)> + Send + Sync>;

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct JsonRecord {
    pub(crate) json: String,
}

type CacheKey = (String, String);

/// The state of a tool service: what every part shares (the registry, the supervisor of
/// hosts and connections), the components, each owning its state in its own module, and
/// the call path's cache and cluster route.
pub(crate) struct Inner {
    pub(crate) registry: ToolRegistry,
    pub(crate) supervisor: SupervisorRef,
    /// The tool versions running here ([`super::hosts`]).
    pub(crate) hosts: Hosts,
    /// Who may call what ([`super::grants`]).
    pub(crate) grants: Grants,
    /// Usage counts and denials ([`super::accounting`]).
    pub(crate) accounting: Accounting,
    /// MCP servers ([`super::mcp_servers`]).
    pub(crate) mcp: McpServers,
    pub(crate) agent_needs: Mutex<Option<AgentNeeds>>,
    /// Results of pure tools, per tenant.
    pub(crate) cache: Mutex<lru::LruCache<CacheKey, (Instant, Value)>>,
    /// The route to other nodes' tools (cluster mode only).
    remote: std::sync::OnceLock<Arc<dyn super::remote::RemoteTools>>,
    /// Where a tool this node cannot run was last run, by requirement (bounded).
    located: DashMap<String, String>,
}

/// Tools of a node. Cheap to clone.
#[derive(Clone)]
pub struct ToolService {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ToolService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolService")
            .field("running", &self.inner.hosts.len())
            .finish()
    }
}

/// Locks `m`; a poisoned lock only means a panic elsewhere while it was held, and every
/// value behind these locks is whole between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A store failure as a registry error.
pub(crate) fn store_err(e: impl std::fmt::Display) -> ToolRegistryError {
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
        let grants = Grants::load(&records).await?;
        let accounting = Accounting::load(&records).await?;
        let service = Self {
            inner: Arc::new(Inner {
                registry,
                supervisor,
                hosts: Hosts::default(),
                grants,
                accounting,
                mcp: McpServers::default(),
                agent_needs: Mutex::new(None),
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

    /// The route to other nodes' tools, set once (`remote.rs`).
    pub(super) fn remote_cell(&self) -> &std::sync::OnceLock<Arc<dyn super::remote::RemoteTools>> {
        &self.inner.remote
    }

    /// Where calls this node could not run were run, by requirement (`remote.rs`).
    pub(super) fn located(&self) -> &DashMap<String, String> {
        &self.inner.located
    }

    /// The registry.
    pub fn registry(&self) -> &ToolRegistry {
        &self.inner.registry
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
        let manifest = installed.manifest().clone();
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
        let manifest = installed.manifest().clone();
        if !self.inner.grants.allows(ctx, &manifest.name) {
            let reason = "no grant covers this agent, role and tenant".to_string();
            self.inner.accounting.deny(Denial {
                at_ms: aios_core::protocol::unix_ms(),
                agent: ctx.agent.clone(),
                tenant: ctx.tenant.clone(),
                tool: id.clone(),
                reason: reason.clone(),
            });
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
        let (hit, failed) = match &result {
            Ok((_, hit)) => (*hit, false),
            Err(_) => (false, true),
        };
        self.inner
            .accounting
            .record_call(&id, &ctx.agent, micros, hit, failed);
        installed.count(micros, hit, failed);
        result.map(|(v, _)| v)
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
