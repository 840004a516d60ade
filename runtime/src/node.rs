//! [`Runtime`]: one node's supervision tree over its data directory.

use std::sync::Arc;
use std::time::Duration;

use aios_supervisor::snapshot::{
    PostgresStore, SledOptions, SledStore, SnapshotStore, Snapshots, StoreError,
};
use aios_supervisor::{
    ActorHandle, Backoff, Registry, Root, Strategy, SupervisionEvent, SupervisorError,
    SupervisorRef, SupervisorSpec, TreeEnv, start_root,
};
use tokio::sync::broadcast;

use aios_actors::agent::tools::ToolBox;
use aios_actors::agent::{AgentRegistry, AgentSystem};
use aios_actors::cost::CostLedger;
use aios_actors::memory::MemoryStore;
use aios_actors::orchestration::Orchestrator;
use aios_actors::orchestration::schedule::Schedules;
use aios_actors::records::Records;
use aios_actors::scheduler::config::LlmConfig;
use aios_actors::scheduler::{LlmRouter, RateLimiter, Scheduler, TenantQuota};
use aios_actors::tools::{
    McpServerConfig, ToolRegistry, ToolRequirement, ToolService, install_builtins,
};

use crate::RuntimeConfig;
use crate::config::StoreBackend;

/// Errors of opening, running and stopping a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A configuration field is invalid.
    #[error("invalid configuration: `{field}` {problem}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The data directory or the snapshot store could not be opened or flushed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The tree could not be started or stopped in order.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// The LLM schedulers or the agent system could not start.
    #[error("agents: {0}")]
    Agents(String),
}

/// A running node: the snapshot store, the root supervisor and its five subtrees.
#[derive(Debug)]
pub struct Runtime {
    root: Root,
    snapshots: Snapshots,
    /// The sled store, when it is the backend (for its group-commit count).
    sled: Option<SledStore>,
    services: SupervisorRef,
    memory: SupervisorRef,
    tools: SupervisorRef,
    agents: SupervisorRef,
    runs: SupervisorRef,
    agent_system: AgentSystem,
    orchestrator: Orchestrator,
    schedules: Schedules,
    memory_store: MemoryStore,
    tool_service: ToolService,
    costs: CostLedger,
    shutdown_timeout: Duration,
    /// Re-reads agent definitions other nodes wrote (a shared store only).
    refresher: Option<tokio::task::JoinHandle<()>>,
}

/// How often a node on a shared store re-reads the agent definitions.
pub(crate) const REGISTRY_REFRESH_EVERY: Duration = Duration::from_secs(2);

/// Reconnects the persisted MCP servers, then adds the configured ones not known yet. A
/// server that cannot be reached is logged (and listed with its error), not fatal: the node
/// starts without its tools.
async fn connect_mcp_servers(service: &ToolService, configured: &[McpServerConfig]) {
    match service.restore_mcp_servers().await {
        Ok(failures) => {
            for (name, error) in failures {
                tracing::error!(mcp_server = %name, %error, "MCP server not restored");
            }
        }
        Err(e) => tracing::error!(error = %e, "reading MCP server records"),
    }
    let known: Vec<String> = service.mcp_servers().into_iter().map(|s| s.name).collect();
    for config in configured {
        if known.contains(&config.name) {
            continue;
        }
        if let Err(e) = service.add_mcp_server(config.clone()).await {
            tracing::error!(mcp_server = %config.name, error = %e, "MCP server not connected");
        }
    }
}

/// Starts the cost ledger, the agent registry, one LLM scheduler per configured model
/// (under `services`) and the agent system (its agents under `agents`).
async fn start_agents(
    config: &RuntimeConfig,
    snapshots: &Snapshots,
    services: &SupervisorRef,
    agents: &SupervisorRef,
    memory: &MemoryStore,
    toolbox: ToolBox,
) -> Result<(AgentSystem, CostLedger), RuntimeError> {
    let agents_err = |e: String| RuntimeError::Agents(e);
    let records = Records::new(snapshots.clone());
    // On a shared store each node writes its own share of the cost totals.
    let shared =
        (config.store.backend == StoreBackend::Postgres).then_some(config.store.node.as_str());
    let costs = CostLedger::open_scoped(records.clone(), shared)
        .await
        .map_err(|e| agents_err(format!("cost ledger: {e}")))?;
    let quota = TenantQuota::open(records.clone(), costs.clone(), config.tenant_llm_limits)
        .await
        .map_err(|e| agents_err(format!("tenant LLM quotas: {e}")))?;
    let registry = AgentRegistry::open(records)
        .await
        .map_err(|e| agents_err(format!("agent registry: {e}")))?;
    let mut providers = std::collections::BTreeMap::new();
    for p in &config.llm.providers {
        let client = LlmConfig::build_provider(p).map_err(agents_err)?;
        providers.insert(
            p.name.clone(),
            (client, Arc::new(RateLimiter::new(p.limits))),
        );
    }
    let mut schedulers = Vec::new();
    for m in &config.llm.models {
        let (client, limiter) = providers
            .get(&m.provider)
            .ok_or_else(|| agents_err(format!("model {}: unknown provider", m.key())))?;
        let (spec, scheduler) =
            Scheduler::spec(m.clone(), client.clone(), limiter.clone(), costs.clone())
                .map_err(agents_err)?;
        services.start_child(spec).await?;
        schedulers.push(scheduler);
    }
    let router = LlmRouter::new(schedulers)
        .map_err(agents_err)?
        .with_quota(quota);
    let system = AgentSystem::start(
        agents.clone(),
        router,
        toolbox,
        registry,
        Some(Arc::new(memory.clone())),
        config.agents.clone(),
    );
    Ok((system, costs))
}

fn dynamic(id: &str) -> SupervisorSpec {
    SupervisorSpec::dynamic(id)
        .intensity(20, Duration::from_secs(10))
        .backoff(Backoff::Exponential {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(5),
            jitter: 0.2,
        })
}

/// The supervisors under the root: long-lived services, and the dynamic ones of memory
/// shards, tools, agents and runs.
struct Tree {
    services: SupervisorRef,
    memory: SupervisorRef,
    tools: SupervisorRef,
    agents: SupervisorRef,
    runs: SupervisorRef,
}

/// What runs on the tree.
struct Services {
    agent_system: AgentSystem,
    costs: CostLedger,
    orchestrator: Orchestrator,
    schedules: Schedules,
    memory_store: MemoryStore,
    tool_service: ToolService,
}

/// Opens the snapshot store the configuration names (creating the data directory).
async fn open_store(
    config: &RuntimeConfig,
) -> Result<(Option<SledStore>, Arc<dyn SnapshotStore>), RuntimeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| StoreError::Open {
        path: config.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let options = SledOptions {
        flush_every: config.buffered_flush_every,
        cache_capacity_bytes: config.cache_capacity_bytes,
    };
    Ok(match config.store.backend {
        StoreBackend::Sled => {
            let sled = SledStore::open(config.data_dir.join("snapshots"), &options)?;
            (Some(sled.clone()), Arc::new(sled))
        }
        StoreBackend::Postgres => {
            let pg = PostgresStore::connect(config.store.postgres_options()).await?;
            tracing::info!(holder = %pg.holder(), "snapshots in PostgreSQL");
            (None, Arc::new(pg))
        }
    })
}

/// Starts the root supervisor `system` and its children.
async fn start_tree(snapshots: &Snapshots) -> Result<(Root, Tree), RuntimeError> {
    let env = TreeEnv::new(Some(snapshots.clone()));
    let (services_spec, services) = SupervisorSpec::new("services", Strategy::OneForOne)
        .intensity(5, Duration::from_secs(10))
        .build();
    let (memory_spec, memory) = dynamic("memory").build();
    let (tools_spec, tools) = dynamic("tools").build();
    let (agents_spec, agents) = dynamic("agents").build();
    let (runs_spec, runs) = dynamic("runs").build();
    let root_spec = SupervisorSpec::new("system", Strategy::OneForOne)
        .intensity(3, Duration::from_secs(30))
        .child(services_spec)
        .child(memory_spec)
        .child(tools_spec)
        .child(agents_spec)
        .child(runs_spec);
    let root = start_root(root_spec, env).await?;
    Ok((
        root,
        Tree {
            services,
            memory,
            tools,
            agents,
            runs,
        },
    ))
}

/// Opens memory, tools, agents, orchestration and schedules on the tree.
async fn start_services(
    config: &RuntimeConfig,
    snapshots: &Snapshots,
    tree: &Tree,
) -> Result<Services, RuntimeError> {
    let embedder = config
        .memory
        .embedder
        .build()
        .map_err(|e| RuntimeError::Agents(format!("memory: {e}")))?;
    let memory_store = MemoryStore::open(
        tree.memory.clone(),
        Records::new(snapshots.clone()),
        embedder,
        config.memory.clone(),
    )
    .await
    .map_err(|e| RuntimeError::Agents(format!("memory: {e}")))?;
    let (tool_service, toolbox) = open_tools(config, snapshots, tree, &memory_store)
        .await
        .map_err(|e| RuntimeError::Agents(format!("tools: {e}")))?;
    let (agent_system, costs) = start_agents(
        config,
        snapshots,
        &tree.services,
        &tree.agents,
        &memory_store,
        toolbox,
    )
    .await?;
    tool_service.set_agent_needs(agent_needs(agent_system.registry().clone()));
    let orchestrator = Orchestrator::open(
        agent_system.clone(),
        tree.runs.clone(),
        Records::new(snapshots.clone()),
    )
    .await
    .map_err(|e| RuntimeError::Agents(format!("orchestration: {e}")))?;
    if let Some(max) = config.tenant_runs_active_max {
        orchestrator.set_tenant_runs_active_max(max);
    }
    let schedules = Schedules::start(
        orchestrator.clone(),
        &tree.runs,
        Records::new(snapshots.clone()),
        config.schedules.clone(),
    )
    .await
    .map_err(|e| RuntimeError::Agents(format!("schedules: {e}")))?;
    Ok(Services {
        agent_system,
        costs,
        orchestrator,
        schedules,
        memory_store,
        tool_service,
    })
}

/// Opens the tool service with the built-in plugin tools and the MCP servers, and the
/// toolbox agents call.
async fn open_tools(
    config: &RuntimeConfig,
    snapshots: &Snapshots,
    tree: &Tree,
    memory_store: &MemoryStore,
) -> Result<(ToolService, ToolBox), String> {
    let tool_registry = ToolRegistry::open(Records::new(snapshots.clone()))
        .await
        .map_err(|e| e.to_string())?;
    let tool_service = ToolService::open(tool_registry, tree.tools.clone())
        .await
        .map_err(|e| e.to_string())?;
    let mut toolbox = ToolBox::with_builtins().with_plugins(tool_service.clone());
    let builtins = install_builtins(
        &tool_service,
        &config.tools,
        config.data_dir.join("sandbox"),
        memory_store.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    for tool in builtins {
        toolbox.register(tool);
    }
    connect_mcp_servers(&tool_service, &config.tools.mcp_servers).await;
    Ok((tool_service, toolbox))
}

/// Which tools the agents of `registry` need, for the tool service to refuse removing them.
fn agent_needs(registry: AgentRegistry) -> aios_actors::tools::AgentNeeds {
    Arc::new(move || {
        registry
            .list()
            .iter()
            .flat_map(|def| {
                def.tools.iter().filter_map(|entry| {
                    ToolRequirement::parse(entry)
                        .ok()
                        .map(|req| (def.name.clone(), req))
                })
            })
            .collect()
    })
}

/// On a shared store, follows what other nodes write: agent definitions, cost totals, MCP
/// servers and tool manifests, every [`REGISTRY_REFRESH_EVERY`].
fn spawn_refresher(
    registry: AgentRegistry,
    costs: CostLedger,
    tools: ToolService,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REGISTRY_REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match registry.reload().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(changed = n, "agent definitions reloaded"),
                Err(error) => tracing::warn!(%error, "agent definitions not reloaded"),
            }
            if let Err(error) = costs.refresh().await {
                tracing::warn!(%error, "other nodes' cost totals not read");
            }
            match tools.sync_mcp_servers().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(changed = n, "MCP servers followed"),
                Err(error) => tracing::warn!(%error, "MCP servers not followed"),
            }
            // Tools another node runs (and this one cannot) become known here, so agents
            // here list them and calls go there.
            match tools.sync_tools().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(changed = n, "tool manifests followed"),
                Err(error) => tracing::warn!(%error, "tool manifests not followed"),
            }
        }
    })
}

impl Runtime {
    /// Opens the data directory and starts the tree. Persistent actors started afterwards
    /// under the same keys resume from their snapshots.
    ///
    /// # Errors
    /// [`RuntimeError::Config`] for an invalid config, [`RuntimeError::Store`] when the data
    /// directory cannot be opened (for example another process holds it),
    /// [`RuntimeError::Supervisor`] when the tree fails to start.
    pub async fn open(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        config.validate()?;
        let (sled, store) = open_store(&config).await?;
        let snapshots = Snapshots::new(store);
        let (root, tree) = start_tree(&snapshots).await?;
        let services = match start_services(&config, &snapshots, &tree).await {
            Ok(s) => s,
            Err(e) => {
                // Leave nothing running behind a failed open.
                let _ = root.shutdown(config.shutdown_timeout).await;
                return Err(e);
            }
        };
        // Other nodes write the same store: follow their agent definitions, cost totals, MCP
        // servers and tool manifests.
        let refresher = (config.store.backend == StoreBackend::Postgres).then(|| {
            spawn_refresher(
                services.agent_system.registry().clone(),
                services.costs.clone(),
                services.tool_service.clone(),
            )
        });
        tracing::info!(data_dir = %config.data_dir.display(), "node started");
        Ok(Self {
            refresher,
            agent_system: services.agent_system,
            costs: services.costs,
            root,
            snapshots,
            sled,
            services: tree.services,
            memory: tree.memory,
            tools: tree.tools,
            agents: tree.agents,
            runs: tree.runs,
            orchestrator: services.orchestrator,
            schedules: services.schedules,
            memory_store: services.memory_store,
            tool_service: services.tool_service,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// The root supervisor.
    pub fn root(&self) -> &SupervisorRef {
        self.root.supervisor()
    }

    /// The supervisor of long-lived services (one for one).
    pub fn services(&self) -> &SupervisorRef {
        &self.services
    }

    /// The dynamic supervisor of memory shards.
    pub fn memory(&self) -> &SupervisorRef {
        &self.memory
    }

    /// The dynamic supervisor of tools.
    pub fn tools(&self) -> &SupervisorRef {
        &self.tools
    }

    /// The dynamic supervisor of agents.
    pub fn agents(&self) -> &SupervisorRef {
        &self.agents
    }

    /// Plugin tools: registry, grants, calls, usage.
    pub fn tool_service(&self) -> &ToolService {
        &self.tool_service
    }

    /// Vector memory: namespaces, remember, search, recall (the agents' memory hook).
    pub fn memory_store(&self) -> &MemoryStore {
        &self.memory_store
    }

    /// The dynamic supervisor of runs.
    pub fn runs(&self) -> &SupervisorRef {
        &self.runs
    }

    /// Runs (plans executed by agents, resumed after a restart), approvals and sessions.
    pub fn orchestrator(&self) -> &Orchestrator {
        &self.orchestrator
    }

    /// Cron schedules and one-off delayed runs.
    pub fn schedules(&self) -> &Schedules {
        &self.schedules
    }

    /// The agent system: registry, activation, tasks, envelopes, topics.
    pub fn agent_system(&self) -> &AgentSystem {
        &self.agent_system
    }

    /// The LLM schedulers by model.
    pub fn llm(&self) -> &LlmRouter {
        self.agent_system.router()
    }

    /// Cost totals per agent, session, run, tenant and model.
    pub fn costs(&self) -> &CostLedger {
        &self.costs
    }

    /// The handle of the actor at `path` (`agents/echo`), if it exists and takes `M`.
    pub fn lookup<M: Send + 'static>(&self, path: &str) -> Option<ActorHandle<M>> {
        self.root.env().registry().lookup(path)
    }

    /// Every registered actor and supervisor by path.
    pub fn registry(&self) -> &Registry {
        self.root.env().registry()
    }

    /// A subscription to the supervision events of the whole tree.
    pub fn events(&self) -> broadcast::Receiver<Arc<SupervisionEvent>> {
        self.root.env().events().subscribe()
    }

    /// The snapshot store.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// Fsyncs performed by group commit so far (0 when the store is PostgreSQL).
    pub fn group_commits(&self) -> u64 {
        self.sled.as_ref().map_or(0, SledStore::group_commits)
    }

    /// Whether the root supervisor still runs (it stops after an escalation it cannot handle).
    pub fn is_running(&self) -> bool {
        !self.root.is_finished()
    }

    /// Stops the tree in reverse start order (each child within its shutdown timeout, the
    /// whole within the configured `shutdown_timeout`), then flushes every snapshot.
    ///
    /// # Errors
    /// [`RuntimeError::Supervisor`] when the tree had to be killed, [`RuntimeError::Store`]
    /// when the final flush fails.
    pub async fn shutdown(self) -> Result<(), RuntimeError> {
        if let Some(refresher) = &self.refresher {
            refresher.abort();
        }
        if let Err(e) = self.tool_service.flush_usage().await {
            tracing::warn!(error = %e, "writing tool usage at shutdown");
        }
        let stopped = self.root.shutdown(self.shutdown_timeout).await;
        self.snapshots.flush().await?;
        stopped?;
        tracing::info!("node stopped");
        Ok(())
    }
}
