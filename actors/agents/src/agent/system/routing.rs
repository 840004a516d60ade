//! Routing in a cluster: where a task for an agent runs. [`Routing`] owns the route to the
//! other nodes, where agents active elsewhere were last found, and whether this node is
//! drained; the methods below forward tasks, follow redirects, place new activations and
//! drain the node.
//!
//! Architecture invariant: a task is forwarded again after its node was lost only when it
//! carries an idempotency key (the agent answers a repeat from its persisted result); the
//! `located` hints are bounded ([`LOCATED_MAX`]) and dropped whenever a route fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aios_core::protocol::AgentId;
use aios_supervisor::snapshot::Durability;
use dashmap::DashMap;
use tracing::Instrument;

use super::super::actor::{AgentError, Task, TaskOutput};
use super::super::placement::{Candidate, Placement, choose};
use super::super::remote::{REDIRECTS_MAX, RemoteAgents, RemoteError, RemoteReply, RemoteTask};
use super::activation::Activation;
use super::{AgentSystem, Inner};

/// The route to other nodes' agents and what this node knows of them.
#[derive(Default)]
pub(super) struct Routing {
    /// The other nodes (cluster mode only); set once.
    remote: OnceLock<Arc<dyn RemoteAgents>>,
    /// Where agents active on other nodes were last found: the node's name.
    located: DashMap<AgentId, String>,
    /// Set while the node is drained: agents are activated on other nodes.
    draining: AtomicBool,
}

impl Routing {
    /// The route to the other nodes, in cluster mode.
    pub(super) fn remote(&self) -> Option<&Arc<dyn RemoteAgents>> {
        self.remote.get()
    }
}

/// Agents remembered as active on another node; the memory is dropped whole past it.
const LOCATED_MAX: usize = 100_000;

/// How often a drain looks again at instances that were busy.
const DRAIN_RECHECK_EVERY: Duration = Duration::from_millis(20);

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

impl AgentSystem {
    /// Connects the system to the other nodes of a cluster: a task for an agent whose lease a
    /// connected peer holds is forwarded there (and its reply returned as if it ran here),
    /// and topic events reach the other nodes' subscribers. Set once; later calls are
    /// ignored and return false.
    pub fn set_remote(&self, remote: Arc<dyn RemoteAgents>) -> bool {
        self.inner.routing.remote.set(remote).is_ok()
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
        self.inner.routing.draining.store(true, Ordering::Release);
        self.inner.routing.located.clear();
        let deadline = tokio::time::Instant::now() + within;
        let mut report = DrainReport::default();
        loop {
            let ids = self.inner.activations.ids();
            for id in &ids {
                match self.inner.passivate(id, Duration::ZERO).await {
                    Ok(true) => report.passivated += 1,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(agent = %id, error = %e, "passivation during a drain"),
                }
            }
            report.remaining = self.inner.activations.len();
            if report.remaining == 0 || tokio::time::Instant::now() >= deadline {
                return report;
            }
            // Busy instances: their tasks end on their own; check again shortly.
            tokio::time::sleep(DRAIN_RECHECK_EVERY).await;
        }
    }

    /// Ends a drain: agents are activated here again.
    pub fn undrain(&self) {
        self.inner.routing.draining.store(false, Ordering::Release);
    }

    /// True while the node is drained.
    pub fn is_draining(&self) -> bool {
        self.inner.routing.draining.load(Ordering::Acquire)
    }
}

impl Inner {
    /// Runs `task` on `id` wherever it is active: on the node remembered for it, here, or on
    /// the node found holding its lease.
    pub(super) async fn ask(&self, id: &AgentId, task: Task) -> Result<TaskOutput, AgentError> {
        let Some(remote) = self.routing.remote() else {
            return self.ask_here(id, task).await.map_err(|e| e.into_error(id));
        };
        let known = self.routing.located.get(id).map(|n| n.value().clone());
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
                self.activations.remove_failed(id);
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

    /// Where to activate `id`, which is active nowhere that this node knows: `None` for here.
    /// Only an agent with a placement, or a draining node, looks at the other nodes.
    async fn place(
        &self,
        remote: &dyn RemoteAgents,
        id: &AgentId,
    ) -> Result<Option<String>, AgentError> {
        let draining = self.routing.draining.load(Ordering::Acquire);
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
            load: self.activations.len(),
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
                self.routing.located.remove(id);
                return None;
            }
            let wire = RemoteTask::new(task, self.config.task_timeout);
            let span = tracing::debug_span!("forward", agent = %id, node = %node);
            match remote.ask(&node, id, wire).instrument(span).await {
                Ok(RemoteReply::Done(out)) => {
                    if self.routing.located.len() >= LOCATED_MAX {
                        self.routing.located.clear();
                    }
                    self.routing.located.insert(id.clone(), node);
                    return Some(out);
                }
                Ok(RemoteReply::Elsewhere { node: next }) => node = next,
                Ok(RemoteReply::Draining) => {
                    self.routing.located.remove(id);
                    return None;
                }
                Err(RemoteError::Unreachable(_)) => {
                    self.routing.located.remove(id);
                    return None;
                }
                Err(e @ RemoteError::Lost { .. }) => {
                    self.routing.located.remove(id);
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
}
