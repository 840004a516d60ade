//! The agent system: agents addressed by [`AgentId`], activated on their first message under
//! a dynamic supervisor (state restored from the snapshot), passivated when idle (final
//! snapshot, actor stopped); request/reply envelopes with deadlines, topics, and delegation.

//!
//! [`AgentSystem`] is a thin handle over components that each own their state in their own
//! module: [`activation`] (the instances of this node, activation and passivation),
//! [`routing`] (where a task runs in a cluster, drains) and [`topics`].

mod activation;
mod routing;
mod topics;

use std::sync::{Arc, Weak};
use std::time::Duration;

use aios_core::MemoryHook;
use aios_core::protocol::{AgentId, Envelope, Kind, Recipient, Sender, unix_ms};
use aios_llm::ToolSpec;
use aios_llm::scheduler::LlmRouter;
use aios_supervisor::SupervisorRef;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use self::activation::Activations;
pub use self::routing::DrainReport;
use self::routing::Routing;
use self::topics::Topics;
use super::actor::{AgentError, Task, TaskOutput};
use super::events::{AgentEvent, EventHub};
use super::kernel::Kernel;
use super::registry::{AgentRegistry, CapabilityQuery};
use super::tools::{Tool, ToolBox, ToolContext, ToolError};

/// Events buffered per topic.
pub(super) const TOPIC_BUFFER: usize = 1024;
/// The deepest delegation chain.
pub(super) const DELEGATION_DEPTH_MAX: usize = 4;

/// Agent system settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSystemConfig {
    /// An active agent idle this long is passivated.
    pub idle_timeout: Duration,
    /// The longest a task may run before its caller stops waiting.
    pub task_timeout: Duration,
    /// Mailbox bound of each agent.
    pub mailbox_len_max: usize,
    /// Agent names are `<tenant>.<name>` (the daemon's convention): capability negotiation
    /// for a tenant's runs then only considers that tenant's agents.
    pub tenant_scoped_names: bool,
    /// How long an agent's summariser call may take before the agent truncates its older
    /// turns instead (default [`super::context::SUMMARY_TIMEOUT`]).
    pub summary_timeout: Duration,
}

impl Default for AgentSystemConfig {
    /// Idle 5 min, tasks 10 min, 64 queued messages per agent.
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            task_timeout: Duration::from_secs(600),
            mailbox_len_max: 64,
            tenant_scoped_names: false,
            summary_timeout: super::context::SUMMARY_TIMEOUT,
        }
    }
}

/// The state of an agent system: what every part shares (the kernel agents run with, the
/// supervisor of their actors, the configuration) and the components.
struct Inner {
    kernel: Arc<Kernel>,
    supervisor: SupervisorRef,
    config: AgentSystemConfig,
    /// The instances of this node ([`activation`]).
    activations: Activations,
    /// Where tasks run in a cluster ([`routing`]).
    routing: Routing,
    /// Topic channels ([`topics`]).
    topics: Topics,
}

/// The agents of a node. Cheap to clone.
#[derive(Clone)]
pub struct AgentSystem {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSystem")
            .field("active", &self.inner.activations.len())
            .finish()
    }
}

/// The supervisor child id of agent instance `id`.
fn child_id(id: &AgentId) -> String {
    format!("agent:{}:{}", id.name, id.key)
}

/// The snapshot key of agent instance `id`: `agent/<name>/<key>`.
pub fn snapshot_key(id: &AgentId) -> String {
    aios_core::keyspace::agent_snapshot_key(&id.name, &id.key)
}

impl AgentSystem {
    /// Starts the system: agents run under `supervisor` (a dynamic supervisor), call LLMs
    /// through `router`, and may call `tools` plus the built-in `delegate` tool.
    pub fn start(
        supervisor: SupervisorRef,
        router: LlmRouter,
        tools: ToolBox,
        registry: AgentRegistry,
        memory: Option<Arc<dyn MemoryHook>>,
        config: AgentSystemConfig,
    ) -> Self {
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let mut tools = tools;
            tools.register(Arc::new(Delegate {
                system: weak.clone(),
            }));
            Inner {
                kernel: Arc::new(Kernel {
                    router,
                    tools,
                    registry,
                    memory,
                    events: EventHub::default(),
                    summary_timeout: config.summary_timeout,
                    tenant_scoped_names: config.tenant_scoped_names,
                }),
                supervisor,
                config,
                activations: Activations::default(),
                routing: Routing::default(),
                topics: Topics::default(),
            }
        });
        tokio::spawn(activation::reaper(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// The name prefix of `tenant`'s agents when names are tenant-scoped.
    pub fn agent_prefix(&self, tenant: &str) -> Option<String> {
        self.inner
            .config
            .tenant_scoped_names
            .then(|| format!("{tenant}."))
    }

    /// The registry of definitions.
    pub fn registry(&self) -> &AgentRegistry {
        &self.inner.kernel.registry
    }

    /// The LLM router.
    pub fn router(&self) -> &LlmRouter {
        &self.inner.kernel.router
    }

    /// The tools.
    pub fn tools(&self) -> &ToolBox {
        &self.inner.kernel.tools
    }

    /// Subscribes to an agent's events (in a cluster with an [`EventRelay`](super::EventRelay), also those of
    /// an agent active on another node).
    pub fn subscribe(&self, id: &AgentId) -> broadcast::Receiver<AgentEvent> {
        self.inner.kernel.events.subscribe(id)
    }

    /// The agents' event channels of this node.
    pub fn events(&self) -> &super::EventHub {
        &self.inner.kernel.events
    }

    /// Runs a task on agent instance `id`, activating it if needed.
    ///
    /// # Errors
    /// [`AgentError::NotFound`] for an undefined agent, the task's own error, or
    /// [`AgentError::Unavailable`] when the agent crashed or timed out while working.
    pub async fn ask(&self, id: &AgentId, task: Task) -> Result<TaskOutput, AgentError> {
        self.inner.ask(id, task).await
    }

    /// Up to `limit` entries of instance `id`'s transcript from `from` on: every task's input
    /// and outcome, uncompacted. Read from the store, so any node of a cluster sharing it can
    /// answer, and the instance is not activated.
    ///
    /// # Errors
    /// [`AgentError::Unavailable`] when the store fails.
    pub async fn transcript(
        &self,
        id: &AgentId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<super::transcript::TranscriptEntry>, AgentError> {
        super::transcript::read(self.inner.kernel.registry.records(), id, from, limit)
            .await
            .map_err(|e| AgentError::Unavailable(format!("reading the transcript of {id}: {e}")))
    }

    /// Sends a request envelope to its agent and waits for the reply envelope, at most until
    /// the envelope's deadline.
    ///
    /// # Errors
    /// [`AgentError::Invalid`] for a bad envelope or a topic recipient,
    /// [`AgentError::DeadlineExceeded`], or the task's error.
    pub async fn request(&self, envelope: Envelope) -> Result<Envelope, AgentError> {
        envelope.validate().map_err(AgentError::Invalid)?;
        let Recipient::Agent(to) = &envelope.to else {
            return Err(AgentError::Invalid(
                "a request goes to an agent, not a topic".into(),
            ));
        };
        if envelope.kind != Kind::Request {
            return Err(AgentError::Invalid("only requests get replies".into()));
        }
        let now = unix_ms();
        if envelope.is_expired(now) {
            return Err(AgentError::DeadlineExceeded);
        }
        let chain = match &envelope.from {
            Sender::Agent(a) => vec![a.clone()],
            Sender::External(_) => Vec::new(),
        };
        let task = Task {
            input: envelope.payload.clone(),
            session: envelope.session.map(|s| s.to_string()),
            run: envelope.run.map(|r| r.to_string()),
            chain,
            ..Task::default()
        };
        let work = self.ask(to, task);
        let out = match envelope.deadline_unix_ms {
            Some(d) => tokio::time::timeout(Duration::from_millis(d.saturating_sub(now)), work)
                .await
                .map_err(|_| AgentError::DeadlineExceeded)??,
            None => work.await?,
        };
        Ok(envelope.reply(Sender::Agent(to.clone()), out.text))
    }

    /// Hands a request over to another agent: the same request id, correlation and sender,
    /// so the reply goes to the original requester.
    ///
    /// # Errors
    /// As [`AgentSystem::request`].
    pub async fn hand_off(
        &self,
        mut envelope: Envelope,
        to: AgentId,
    ) -> Result<Envelope, AgentError> {
        envelope.correlation.get_or_insert(envelope.id);
        envelope.to = Recipient::Agent(to);
        self.request(envelope).await
    }
}

/// `delegate`: asks the best agent with a capability to do a sub-task and returns its
/// answer. Refuses cycles and chains deeper than [`DELEGATION_DEPTH_MAX`].
struct Delegate {
    system: Weak<Inner>,
}

#[async_trait::async_trait]
impl Tool for Delegate {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "delegate".into(),
            description: "Delegates a sub-task to the best agent with a capability.".into(),
            parameters: json!({"type": "object",
                "properties": {"capability": {"type": "string"}, "task": {"type": "string"}},
                "required": ["capability", "task"]}),
        }
    }

    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<Value, ToolError> {
        let (Some(capability), Some(input)) = (
            args.get("capability").and_then(Value::as_str),
            args.get("task").and_then(Value::as_str),
        ) else {
            return Err(ToolError::InvalidArguments(
                "expected {\"capability\": string, \"task\": string}".into(),
            ));
        };
        let inner = self
            .system
            .upgrade()
            .ok_or_else(|| ToolError::Failed("the agent system is shutting down".into()))?;
        let found = inner
            .kernel
            .registry
            .negotiate(&CapabilityQuery {
                capability: capability.to_string(),
                // A tenant's agents delegate only to that tenant's agents.
                name_prefix: inner
                    .config
                    .tenant_scoped_names
                    .then(|| format!("{}.", ctx.tenant)),
                ..CapabilityQuery::default()
            })
            .map_err(ToolError::Failed)?;
        let task = Task {
            input: input.to_string(),
            tenant: ctx.tenant.clone(),
            session: ctx.session.clone(),
            run: ctx.run.clone(),
            chain: ctx.chain.clone(),
            ..Task::default()
        };
        // Boxed: `ask` can reach this tool again through the delegate.
        Box::pin(inner.ask(&AgentId::main(found.agent), task))
            .await
            .map(|out| Value::String(out.text))
            .map_err(|e| ToolError::Failed(e.to_string()))
    }
}
