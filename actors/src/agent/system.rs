//! The agent system: agents addressed by [`AgentId`], activated on their first message under
//! a dynamic supervisor (state restored from the snapshot), passivated when idle (final
//! snapshot, actor stopped); request/reply envelopes with deadlines, topics, and delegation.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use aios_supervisor::snapshot::{Durability, Persistence, SnapshotPolicy};
use aios_supervisor::{
    ActorHandle, CallError, Restart, SupervisorError, SupervisorRef, WorkerSpec,
};
use dashmap::DashMap;
use serde_json::{Value, json};
use tokio::sync::{OnceCell, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::actor::{AgentError, AgentMsg, AgentWorker, Task, TaskOutput};
use super::busy::RunQueue;
use super::events::{AgentEvent, EventHub};
use super::kernel::Kernel;
use super::placement::{Candidate, Placement, choose};
use super::registry::{AgentRegistry, CapabilityQuery};
use super::remote::{REDIRECTS_MAX, RemoteAgents, RemoteError, RemoteReply, RemoteTask};
use super::tools::{Tool, ToolBox, ToolContext, ToolError};
use crate::llm::{ChatMessage, LlmError, ToolSpec};
use crate::protocol::{AgentId, Envelope, Kind, Recipient, Sender, unix_ms};
use crate::scheduler::LlmRouter;
use aios_core::MemoryHook;

/// Events buffered per topic.
pub(super) const TOPIC_BUFFER: usize = 1024;
/// The deepest delegation chain.
pub(super) const DELEGATION_DEPTH_MAX: usize = 4;
/// Attempts to activate an agent whose previous incarnation is still being passivated.
const ACTIVATION_ATTEMPTS_MAX: u32 = 200;
/// The longest an activation waits for another node's lease on the agent to lapse.
const LEASE_WAIT_MAX: Duration = Duration::from_secs(60);
/// Added to that wait, for the database's clock to pass the expiry.
const LEASE_WAIT_MARGIN: Duration = Duration::from_millis(50);
/// Agents remembered as active on another node; the memory is dropped whole past it.
const LOCATED_MAX: usize = 100_000;
/// How often a drain looks again at instances that were busy.
const DRAIN_RECHECK_EVERY: Duration = Duration::from_millis(20);

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

struct Slot {
    handle: OnceCell<ActorHandle<AgentMsg>>,
    last_used_ms: AtomicU64,
    busy: AtomicUsize,
    /// Tasks admitted to the instance, by its busy policy.
    runs: RunQueue,
}

/// A busy mark on an agent instance; released when dropped.
struct Held(Arc<Slot>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.last_used_ms.store(unix_ms(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Inner {
    kernel: Arc<Kernel>,
    supervisor: SupervisorRef,
    config: AgentSystemConfig,
    active: DashMap<AgentId, Arc<Slot>>,
    topics: DashMap<String, broadcast::Sender<Envelope>>,
    /// The route to other nodes' agents (cluster mode only).
    remote: OnceLock<Arc<dyn RemoteAgents>>,
    /// Where agents active on other nodes were last found: the node's name.
    located: DashMap<AgentId, String>,
    /// Set while the node is drained: agents are activated on other nodes.
    draining: AtomicBool,
}

/// What a drain did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DrainReport {
    /// Agent instances passivated (final snapshot written, lease released).
    pub passivated: usize,
    /// Instances still active when the drain gave up (busy past its deadline).
    pub remaining: usize,
}

/// The record key of agent `name`'s placement.
fn placement_key(name: &str) -> String {
    aios_core::keyspace::agent_placement_key(name)
}

/// Why an agent could not be activated here.
enum Activation {
    /// It is active on this other node (a connected peer holds its lease).
    Elsewhere(String),
    /// Any other failure.
    Failed(AgentError),
}

impl From<AgentError> for Activation {
    fn from(e: AgentError) -> Self {
        Self::Failed(e)
    }
}

impl Activation {
    /// The error of a caller that cannot forward.
    fn into_error(self, id: &AgentId) -> AgentError {
        match self {
            Self::Elsewhere(node) => {
                AgentError::Unavailable(format!("{id} is active on node {node}"))
            }
            Self::Failed(e) => e,
        }
    }
}

/// The agents of a node. Cheap to clone.
#[derive(Clone)]
pub struct AgentSystem {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSystem")
            .field("active", &self.inner.active.len())
            .finish()
    }
}

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
                active: DashMap::new(),
                topics: DashMap::new(),
                remote: OnceLock::new(),
                located: DashMap::new(),
                draining: AtomicBool::new(false),
            }
        });
        tokio::spawn(reaper(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Connects the system to the other nodes of a cluster: a task for an agent whose lease a
    /// connected peer holds is forwarded there (and its reply returned as if it ran here),
    /// and topic events reach the other nodes' subscribers. Set once; later calls are
    /// ignored and return false.
    pub fn set_remote(&self, remote: Arc<dyn RemoteAgents>) -> bool {
        self.inner.remote.set(remote).is_ok()
    }

    /// Runs a task that another node forwarded: here, never forwarded again. When the agent
    /// is active on yet another node, the reply says which.
    pub async fn serve_remote(&self, id: &AgentId, task: RemoteTask) -> RemoteReply {
        if self.is_draining() && !self.inner.is_active_here(id) {
            return RemoteReply::Draining;
        }
        // Defined on the calling node moments ago: read the definitions now rather than at
        // the next periodic reload.
        let registry = &self.inner.kernel.registry;
        if registry.get(&id.name).is_none()
            && let Err(e) = registry.reload().await
        {
            tracing::warn!(agent = %id, error = %e, "reloading the agent definitions");
        }
        let left = task.time_left();
        match tokio::time::timeout(left, self.inner.ask_here(id, task.into_task())).await {
            Ok(Ok(out)) => RemoteReply::Done(Ok(out)),
            Ok(Err(Activation::Elsewhere(node))) => RemoteReply::Elsewhere { node },
            Ok(Err(Activation::Failed(e))) => RemoteReply::Done(Err(e)),
            Err(_) => RemoteReply::Done(Err(AgentError::DeadlineExceeded)),
        }
    }

    /// Where new activations of agent `name` go in a cluster (the default when none was set).
    ///
    /// # Errors
    /// A store failure.
    pub async fn placement(&self, name: &str) -> Result<Placement, AgentError> {
        self.inner
            .kernel
            .registry
            .records()
            .get::<Placement>(&placement_key(name))
            .await
            .map(Option::unwrap_or_default)
            .map_err(|e| AgentError::Unavailable(format!("reading the placement of {name}: {e}")))
    }

    /// Sets where new activations of agent `name` go (instances already active stay where
    /// they are until passivated). The default placement removes the record.
    ///
    /// # Errors
    /// [`AgentError::NotFound`] for an undefined agent, [`AgentError::Invalid`] for a bad
    /// placement, or a store failure.
    pub async fn set_placement(&self, name: &str, placement: &Placement) -> Result<(), AgentError> {
        if self.inner.kernel.registry.get(name).is_none() {
            return Err(AgentError::NotFound(name.to_string()));
        }
        placement.validate().map_err(AgentError::Invalid)?;
        let records = self.inner.kernel.registry.records();
        let key = placement_key(name);
        let done = if placement.is_default() {
            records.delete(&key).await
        } else {
            records.put(&key, placement, Durability::Durable).await
        };
        done.map_err(|e| AgentError::Unavailable(format!("writing the placement of {name}: {e}")))
    }

    /// Drains this node: from now on agents are activated on other nodes (the least loaded
    /// that their placement allows), and every active instance here is passivated — its
    /// final snapshot written and its lease released — so that its next task activates it
    /// elsewhere with its state. Busy instances are passivated once their task ends, waiting
    /// at most `within`.
    pub async fn drain(&self, within: Duration) -> DrainReport {
        self.inner.draining.store(true, Ordering::Release);
        self.inner.located.clear();
        let deadline = tokio::time::Instant::now() + within;
        let mut report = DrainReport::default();
        loop {
            let ids: Vec<AgentId> = self.inner.active.iter().map(|e| e.key().clone()).collect();
            for id in &ids {
                match self.inner.passivate(id, Duration::ZERO).await {
                    Ok(true) => report.passivated += 1,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(agent = %id, error = %e, "passivation during a drain"),
                }
            }
            report.remaining = self.inner.active.len();
            if report.remaining == 0 || tokio::time::Instant::now() >= deadline {
                return report;
            }
            // Busy instances: their tasks end on their own; check again shortly.
            tokio::time::sleep(DRAIN_RECHECK_EVERY).await;
        }
    }

    /// Ends a drain: agents are activated here again.
    pub fn undrain(&self) {
        self.inner.draining.store(false, Ordering::Release);
    }

    /// True while the node is drained.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Agent instances now working on a task (this node's load).
    pub fn busy_count(&self) -> usize {
        self.inner
            .active
            .iter()
            .filter(|e| e.busy.load(Ordering::Relaxed) > 0)
            .count()
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

    /// Agent instances now active (in memory).
    pub fn active_count(&self) -> usize {
        self.inner.active.len()
    }

    /// Tasks admitted to instance `id` on this node and not answered yet: the running one
    /// and those waiting behind it (see [`super::busy`]).
    pub fn tasks_pending(&self, id: &AgentId) -> usize {
        self.inner.active.get(id).map_or(0, |s| s.runs.len())
    }

    /// True when `id` is active.
    pub fn is_active(&self, id: &AgentId) -> bool {
        self.inner.active.contains_key(id)
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

    /// The conversation of agent instance `id` (activating it).
    ///
    /// # Errors
    /// As [`AgentSystem::ask`].
    pub async fn history(&self, id: &AgentId) -> Result<Vec<ChatMessage>, AgentError> {
        let (_held, h) = self
            .inner
            .hold_active(id)
            .await
            .map_err(|e| e.into_error(id))?;
        h.call(AgentMsg::History, Duration::from_secs(10))
            .await
            .map_err(|e| AgentError::Unavailable(e.to_string()))
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

    /// Passivates `id` now (final snapshot, actor stopped). Returns false when it was not
    /// active or is busy.
    ///
    /// # Errors
    /// A supervisor failure.
    pub async fn passivate(&self, id: &AgentId) -> Result<bool, SupervisorError> {
        self.inner.passivate(id, Duration::ZERO).await
    }

    /// Stops agent instance `id` if it is active and deletes its snapshot: its conversation
    /// is gone. Orchestration forgets the per-step instances of a finished run this way.
    ///
    /// # Errors
    /// [`AgentError::Unavailable`] when the instance is busy or the store fails.
    pub async fn forget(&self, id: &AgentId) -> Result<(), AgentError> {
        let inner = &self.inner;
        let removed = inner
            .active
            .remove_if(id, |_, s| s.busy.load(Ordering::Acquire) == 0);
        if removed.is_none() && inner.active.contains_key(id) {
            return Err(AgentError::Unavailable(format!("{id} is busy")));
        }
        if let Some((_, slot)) = removed
            && slot.handle.get().is_some()
        {
            match inner.supervisor.remove_child(&child_id(id)).await {
                Ok(()) | Err(SupervisorError::NotFound(_)) => {}
                Err(e) => return Err(AgentError::Unavailable(format!("stopping {id}: {e}"))),
            }
        }
        let records = inner.kernel.registry.records();
        let forgotten = async {
            records.delete(&snapshot_key(id)).await?;
            super::transcript::delete(records, id).await.map(drop)
        };
        forgotten
            .await
            .map_err(|e| AgentError::Unavailable(format!("forgetting {id}: {e}")))
    }

    /// Stops and forgets every instance of agent `name` and deletes its definition and
    /// snapshots of active instances.
    ///
    /// # Errors
    /// A registry failure.
    pub async fn delete_agent(&self, name: &str) -> Result<(), super::RegistryError> {
        let ids: Vec<AgentId> = self
            .inner
            .active
            .iter()
            .filter(|e| e.key().name == name)
            .map(|e| e.key().clone())
            .collect();
        for id in ids {
            self.inner.active.remove(&id);
            if let Err(e) = self.inner.supervisor.remove_child(&child_id(&id)).await {
                tracing::warn!(agent = %id, error = %e, "removing agent instance");
            }
        }
        self.inner.kernel.registry.delete(name).await
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

    /// Publishes an event envelope to its topic; returns how many subscribers on this node
    /// got it. In a cluster the other nodes' subscribers get it too (not counted).
    ///
    /// # Errors
    /// [`AgentError::Invalid`] for a bad envelope or an agent recipient.
    pub fn publish(&self, envelope: Envelope) -> Result<usize, AgentError> {
        envelope.validate().map_err(AgentError::Invalid)?;
        if !matches!(envelope.to, Recipient::Topic(_)) {
            return Err(AgentError::Invalid(
                "publish needs a topic recipient".into(),
            ));
        }
        if let Some(remote) = self.inner.remote.get() {
            remote.publish(&envelope);
        }
        Ok(self.publish_here(envelope))
    }

    /// Delivers an event envelope to this node's subscribers of its topic (an event published
    /// on another node arrives this way); returns how many got it.
    pub fn publish_here(&self, envelope: Envelope) -> usize {
        let Recipient::Topic(topic) = &envelope.to else {
            return 0;
        };
        let topic = topic.clone();
        let sent = match self.inner.topics.get(&topic) {
            Some(tx) => tx.send(envelope).unwrap_or(0),
            None => 0,
        };
        if sent == 0 {
            self.inner
                .topics
                .remove_if(&topic, |_, tx| tx.receiver_count() == 0);
        }
        sent
    }

    /// Subscribes to a topic.
    pub fn subscribe_topic(&self, topic: &str) -> broadcast::Receiver<Envelope> {
        self.inner
            .topics
            .entry(topic.to_string())
            .or_insert_with(|| broadcast::channel(TOPIC_BUFFER).0)
            .subscribe()
    }

    /// Delivers every event on `topic` to agent `id` as a task (event-driven agents). The
    /// binding lasts until the system is dropped.
    pub fn bind_topic(&self, topic: &str, id: AgentId) {
        let mut rx = self.subscribe_topic(topic);
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let envelope = match rx.recv().await {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(agent = %id, missed = n, "topic subscriber lagged");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(inner) = weak.upgrade() else { return };
                let task = Task {
                    input: envelope.payload,
                    session: envelope.session.map(|s| s.to_string()),
                    run: envelope.run.map(|r| r.to_string()),
                    ..Task::default()
                };
                if let Err(e) = inner.ask(&id, task).await {
                    tracing::warn!(agent = %id, error = %e, "topic event failed");
                }
            }
        });
    }
}

impl Inner {
    /// Marks `id` busy (so it is not passivated) until the returned guard is dropped, also
    /// when the caller's future is dropped half-way.
    fn hold(&self, id: &AgentId) -> Result<Held, AgentError> {
        if self.kernel.registry.get(&id.name).is_none() {
            return Err(AgentError::NotFound(id.name.clone()));
        }
        super::definition::validate_name(&id.key).map_err(AgentError::Invalid)?;
        let slot = self.active.entry(id.clone()).or_insert_with(|| {
            Arc::new(Slot {
                handle: OnceCell::new(),
                last_used_ms: AtomicU64::new(unix_ms()),
                busy: AtomicUsize::new(0),
                runs: RunQueue::default(),
            })
        });
        // Incremented under the map's shard lock, so the reaper's `remove_if` sees it.
        slot.busy.fetch_add(1, Ordering::AcqRel);
        Ok(Held(slot.clone()))
    }

    /// Holds and activates `id`. An instance whose lease this process has lost (another node
    /// of the cluster took the agent over while this one was paused or cut off) is passivated
    /// first, without acting, and activated afresh: that waits out the other node's lease once,
    /// then resumes here from the newest snapshot or reports where the agent is active.
    async fn hold_active(&self, id: &AgentId) -> Result<(Held, ActorHandle<AgentMsg>), Activation> {
        let held = self.hold(id)?;
        let handle = self.activate(id, &held.0).await?;
        let key = snapshot_key(id);
        if self
            .kernel
            .registry
            .records()
            .snapshots()
            .check_lease(&key)
            .is_ok()
        {
            return Ok((held, handle));
        }
        tracing::warn!(agent = %id, "lease lost to another node: passivating the local instance");
        self.active
            .remove_if(id, |_, slot| Arc::ptr_eq(slot, &held.0));
        drop(held);
        match self.supervisor.passivate_child(&child_id(id)).await {
            Ok(()) | Err(SupervisorError::NotFound(_)) => {}
            Err(e) => {
                return Err(AgentError::Unavailable(format!("passivating {id}: {e}")).into());
            }
        }
        let held = self.hold(id)?;
        let handle = self.activate(id, &held.0).await?;
        Ok((held, handle))
    }

    async fn activate(
        &self,
        id: &AgentId,
        slot: &Slot,
    ) -> Result<ActorHandle<AgentMsg>, Activation> {
        slot.handle
            .get_or_try_init(|| async {
                let mut attempt = 0;
                let mut waited_for_lease = false;
                loop {
                    attempt += 1;
                    let spec = WorkerSpec::new(
                        child_id(id),
                        AgentWorker {
                            id: id.clone(),
                            kernel: self.kernel.clone(),
                        },
                    )
                    .restart(Restart::Transient)
                    .mailbox_len_max(self.config.mailbox_len_max)
                    .persistent(
                        Persistence::new(snapshot_key(id))
                            .policy(SnapshotPolicy::EveryMessage)
                            .durability(Durability::Durable),
                    );
                    match self.supervisor.start_worker(spec).await {
                        Ok(h) => return Ok(h),
                        // The previous incarnation is still being passivated.
                        Err(
                            SupervisorError::AlreadyPresent(_) | SupervisorError::KeyInUse { .. },
                        ) if attempt < ACTIVATION_ATTEMPTS_MAX => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        // Active on another node of a cluster. A connected peer's agent is
                        // reached there (the caller forwards). If the holder stopped renewing
                        // its lease (it died), the lease lapses within its TTL and the agent
                        // resumes here from its last snapshot. Waited for once: a lease still
                        // held after that is renewed by a live node.
                        Err(SupervisorError::StartFailed { source, .. })
                            if source.lease_expires_in().is_some() =>
                        {
                            if let (Some(remote), Some(holder)) =
                                (self.remote.get(), source.held_by())
                            {
                                let node = aios_supervisor::snapshot::holder_node(holder);
                                if node != remote.node() && remote.reachable(node) {
                                    return Err(Activation::Elsewhere(node.to_string()));
                                }
                            }
                            if waited_for_lease {
                                return Err(AgentError::Unavailable(format!(
                                    "activating {id}: {source}"
                                ))
                                .into());
                            }
                            waited_for_lease = true;
                            let left = source.lease_expires_in().unwrap_or_default();
                            tokio::time::sleep(left.min(LEASE_WAIT_MAX) + LEASE_WAIT_MARGIN).await;
                        }
                        Err(e) => {
                            return Err(
                                AgentError::Unavailable(format!("activating {id}: {e}")).into()
                            );
                        }
                    }
                }
            })
            .await
            .cloned()
    }

    /// Runs `task` on `id` wherever it is active: on the node remembered for it, here, or on
    /// the node found holding its lease.
    async fn ask(&self, id: &AgentId, task: Task) -> Result<TaskOutput, AgentError> {
        let Some(remote) = self.remote.get() else {
            return self.ask_here(id, task).await.map_err(|e| e.into_error(id));
        };
        let known = self.located.get(id).map(|n| n.value().clone());
        if let Some(node) = known
            && let Some(out) = self.forward(remote.as_ref(), node, id, &task).await
        {
            return out;
        }
        if !self.is_active_here(id) {
            match self.place(remote.as_ref(), id).await {
                Ok(None) => {}
                Ok(Some(node)) => {
                    if let Some(out) = self.forward(remote.as_ref(), node, id, &task).await {
                        return out;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        match self.ask_here(id, task.clone()).await {
            Ok(out) => Ok(out),
            Err(Activation::Elsewhere(node)) => {
                // The slot made for the failed activation goes now rather than at the reaper.
                self.active.remove_if(id, |_, s| {
                    s.handle.get().is_none() && s.busy.load(Ordering::Acquire) == 0
                });
                match self.forward(remote.as_ref(), node, id, &task).await {
                    Some(out) => out,
                    // The holder vanished on the way: its lease lapses, then the agent
                    // resumes here.
                    None => self.ask_here(id, task).await.map_err(|e| e.into_error(id)),
                }
            }
            Err(Activation::Failed(e)) => Err(e),
        }
    }

    /// True when `id` is active (activated) on this node.
    fn is_active_here(&self, id: &AgentId) -> bool {
        self.active
            .get(id)
            .is_some_and(|s| s.handle.get().is_some())
    }

    /// Where to activate `id`, which is active nowhere that this node knows: `None` for here.
    /// Only an agent with a placement, or a draining node, looks at the other nodes.
    async fn place(
        &self,
        remote: &dyn RemoteAgents,
        id: &AgentId,
    ) -> Result<Option<String>, AgentError> {
        let draining = self.draining.load(Ordering::Acquire);
        let placement = self
            .kernel
            .registry
            .records()
            .get::<Placement>(&placement_key(&id.name))
            .await
            .map_err(|e| AgentError::Unavailable(format!("reading the placement of {id}: {e}")))?
            .unwrap_or_default();
        if placement.is_default() && !draining {
            return Ok(None);
        }
        let here = Candidate {
            node: remote.node().to_string(),
            tags: remote.tags(),
            load: self.active.len(),
            draining,
        };
        let peers = remote.candidates().await;
        choose(&placement, &here, &peers).map_err(AgentError::Unavailable)
    }

    /// Sends `task` to `node` and follows where it is redirected. `None` when the agent should
    /// be asked here instead: the route led back to this node, the node is not reachable, or
    /// it was lost with a task that may safely run twice (one with an idempotency key, which
    /// the agent answers from its persisted result if it already ran it).
    async fn forward(
        &self,
        remote: &dyn RemoteAgents,
        mut node: String,
        id: &AgentId,
        task: &Task,
    ) -> Option<Result<TaskOutput, AgentError>> {
        for _ in 0..=REDIRECTS_MAX {
            if node == remote.node() {
                self.located.remove(id);
                return None;
            }
            let wire = RemoteTask::new(task, self.config.task_timeout);
            let span = tracing::debug_span!("forward", agent = %id, node = %node);
            match remote.ask(&node, id, wire).instrument(span).await {
                Ok(RemoteReply::Done(out)) => {
                    if self.located.len() >= LOCATED_MAX {
                        self.located.clear();
                    }
                    self.located.insert(id.clone(), node);
                    return Some(out);
                }
                Ok(RemoteReply::Elsewhere { node: next }) => node = next,
                Ok(RemoteReply::Draining) => {
                    self.located.remove(id);
                    return None;
                }
                Err(RemoteError::Unreachable(_)) => {
                    self.located.remove(id);
                    return None;
                }
                Err(e @ RemoteError::Lost { .. }) => {
                    self.located.remove(id);
                    tracing::warn!(agent = %id, error = %e, "node lost during a forwarded task");
                    if task.idempotency_key.is_some() {
                        return None;
                    }
                    return Some(Err(AgentError::Unavailable(format!("{id}: {e}"))));
                }
            }
        }
        Some(Err(AgentError::Unavailable(format!(
            "{id} moved between nodes more than {REDIRECTS_MAX} times while the task was on its way"
        ))))
    }

    /// Runs `task` on `id` on this node, activating it here if needed.
    async fn ask_here(&self, id: &AgentId, task: Task) -> Result<TaskOutput, Activation> {
        if task.chain.len() > DELEGATION_DEPTH_MAX {
            return Err(AgentError::LimitExceeded(format!(
                "delegation deeper than {DELEGATION_DEPTH_MAX}"
            ))
            .into());
        }
        if task.chain.contains(id) {
            return Err(AgentError::Invalid(format!(
                "delegation cycle: {id} is already working on this request"
            ))
            .into());
        }
        let (held, handle) = self.hold_active(id).await?;
        // The task's own token: cancelled when the caller stops waiting, so the agent stops
        // calling the model for a task nobody will read, and by a newer message under the
        // `interrupt` and `rollback` policies.
        let mut task = task;
        let token = task
            .cancel
            .as_ref()
            .map_or_else(CancellationToken::new, CancellationToken::child_token);
        task.cancel = Some(token.clone());
        let on_busy = self
            .kernel
            .registry
            .get(&id.name)
            .map(|d| d.on_busy.clone())
            .unwrap_or_default();
        let ticket = held.0.runs.admit(&id.name, &on_busy, token.clone())?;
        let _cancel_on_drop = token.drop_guard();
        match handle
            .call(
                |r| AgentMsg::Run(Box::new(task), r),
                self.config.task_timeout,
            )
            .await
        {
            Ok(Err(AgentError::Llm(LlmError::Cancelled))) if ticket.interrupted() => {
                Err(AgentError::Interrupted(format!(
                    "a newer message to {id} stopped this one (its on_busy policy is {})",
                    on_busy.policy.as_str()
                ))
                .into())
            }
            Ok(out) => out.map_err(Activation::Failed),
            Err(CallError::Timeout { .. }) => Err(AgentError::Unavailable(format!(
                "{id} did not finish within {:?}",
                self.config.task_timeout
            ))
            .into()),
            Err(e) => Err(AgentError::Unavailable(format!("{id}: {e}")).into()),
        }
    }

    async fn passivate(&self, id: &AgentId, idle_for: Duration) -> Result<bool, SupervisorError> {
        let now = unix_ms();
        let removed = self.active.remove_if(id, |_, s| {
            s.busy.load(Ordering::Acquire) == 0
                && now.saturating_sub(s.last_used_ms.load(Ordering::Relaxed))
                    >= idle_for.as_millis() as u64
        });
        let Some((_, slot)) = removed else {
            return Ok(false);
        };
        if slot.handle.get().is_none() {
            return Ok(true);
        }
        match self.supervisor.passivate_child(&child_id(id)).await {
            Ok(()) | Err(SupervisorError::NotFound(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }
}

/// Passivates idle agents every quarter of the idle timeout.
async fn reaper(weak: Weak<Inner>) {
    loop {
        let (every, idle) = match weak.upgrade() {
            Some(inner) => (
                (inner.config.idle_timeout / 4).max(Duration::from_millis(10)),
                inner.config.idle_timeout,
            ),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = weak.upgrade() else { return };
        let now = unix_ms();
        let idle_ids: Vec<AgentId> = inner
            .active
            .iter()
            .filter(|e| {
                e.busy.load(Ordering::Relaxed) == 0
                    && now.saturating_sub(e.last_used_ms.load(Ordering::Relaxed))
                        >= idle.as_millis() as u64
            })
            .map(|e| e.key().clone())
            .collect();
        for id in idle_ids {
            if let Err(e) = inner.passivate(&id, idle).await {
                tracing::warn!(agent = %id, error = %e, "passivation failed");
            }
        }
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
