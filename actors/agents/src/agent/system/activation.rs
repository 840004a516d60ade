//! Activation: agent instances of this node ([`Activations`], which owns them), activated
//! on their first task under the dynamic supervisor (state restored from the snapshot),
//! held busy while they work, passivated when idle (final snapshot, actor stopped).
//!
//! Architecture invariant: an instance counted busy is never passivated: the busy count is
//! raised under the map's shard lock (`hold`) and passivation removes the instance only
//! with `remove_if` on a zero count, so a task admitted meanwhile keeps it active.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use aios_core::protocol::{AgentId, unix_ms};
use aios_llm::{ChatMessage, LlmError};
use aios_supervisor::snapshot::{Durability, Persistence, SnapshotPolicy};
use aios_supervisor::{ActorHandle, CallError, Restart, SupervisorError, WorkerSpec};
use dashmap::DashMap;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::super::actor::{AgentError, AgentMsg, AgentWorker, Task, TaskOutput};
use super::super::busy::RunQueue;
use super::{AgentSystem, DELEGATION_DEPTH_MAX, Inner, child_id, snapshot_key};

/// The agent instances of this node, by id.
#[derive(Default)]
pub(super) struct Activations {
    active: DashMap<AgentId, Arc<Slot>>,
}

impl Activations {
    /// How many instances are active here (activated or being activated).
    pub(super) fn len(&self) -> usize {
        self.active.len()
    }

    /// Every instance active here.
    pub(super) fn ids(&self) -> Vec<AgentId> {
        self.active.iter().map(|e| e.key().clone()).collect()
    }

    /// Drops the slot of an activation that failed (the agent is active elsewhere), unless
    /// a task holds it meanwhile; otherwise the reaper would.
    pub(super) fn remove_failed(&self, id: &AgentId) {
        self.active.remove_if(id, |_, s| {
            s.handle.get().is_none() && s.busy.load(Ordering::Acquire) == 0
        });
    }
}

/// Attempts to activate an agent whose previous incarnation is still being passivated.
const ACTIVATION_ATTEMPTS_MAX: u32 = 200;

/// The longest an activation waits for another node's lease on the agent to lapse.
const LEASE_WAIT_MAX: Duration = Duration::from_secs(60);

/// Added to that wait, for the database's clock to pass the expiry.
const LEASE_WAIT_MARGIN: Duration = Duration::from_millis(50);

/// An agent instance of this node: its actor once activated, its last use, its busy count
/// and its run queue.
pub(super) struct Slot {
    handle: OnceCell<ActorHandle<AgentMsg>>,
    last_used_ms: AtomicU64,
    busy: AtomicUsize,
    /// Tasks admitted to the instance, by its busy policy.
    runs: RunQueue,
}

/// A busy mark on an agent instance; released when dropped.
pub(super) struct Held(Arc<Slot>);

/// Why an agent could not be activated here.
pub(super) enum Activation {
    /// It is active on this other node (a connected peer holds its lease).
    Elsewhere(String),
    /// Any other failure.
    Failed(AgentError),
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.last_used_ms.store(unix_ms(), Ordering::Relaxed);
        let before = self.0.busy.fetch_sub(1, Ordering::AcqRel);
        // One release per hold: a count below zero would wrap and keep the instance busy
        // (never passivated) for good.
        debug_assert!(
            before > 0,
            "an agent instance released more often than held"
        );
    }
}

impl From<AgentError> for Activation {
    fn from(e: AgentError) -> Self {
        Self::Failed(e)
    }
}

impl Activation {
    /// The error of a caller that cannot forward.
    pub(super) fn into_error(self, id: &AgentId) -> AgentError {
        match self {
            Self::Elsewhere(node) => {
                AgentError::Unavailable(format!("{id} is active on node {node}"))
            }
            Self::Failed(e) => e,
        }
    }
}

impl AgentSystem {
    /// Agent instances now working on a task (this node's load).
    pub fn busy_count(&self) -> usize {
        self.inner
            .activations
            .active
            .iter()
            .filter(|e| e.busy.load(Ordering::Relaxed) > 0)
            .count()
    }

    /// Agent instances now active (in memory).
    pub fn active_count(&self) -> usize {
        self.inner.activations.active.len()
    }

    /// Tasks admitted to instance `id` on this node and not answered yet: the running one
    /// and those waiting behind it (see [`super::busy`]).
    pub fn tasks_pending(&self, id: &AgentId) -> usize {
        self.inner
            .activations
            .active
            .get(id)
            .map_or(0, |s| s.runs.len())
    }

    /// True when `id` is active.
    pub fn is_active(&self, id: &AgentId) -> bool {
        self.inner.activations.active.contains_key(id)
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
            .activations
            .active
            .remove_if(id, |_, s| s.busy.load(Ordering::Acquire) == 0);
        if removed.is_none() && inner.activations.active.contains_key(id) {
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
            super::super::transcript::delete(records, id)
                .await
                .map(drop)
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
    pub async fn delete_agent(&self, name: &str) -> Result<(), super::super::RegistryError> {
        let ids: Vec<AgentId> = self
            .inner
            .activations
            .active
            .iter()
            .filter(|e| e.key().name == name)
            .map(|e| e.key().clone())
            .collect();
        for id in ids {
            self.inner.activations.active.remove(&id);
            if let Err(e) = self.inner.supervisor.remove_child(&child_id(&id)).await {
                tracing::warn!(agent = %id, error = %e, "removing agent instance");
            }
        }
        self.inner.kernel.registry.delete(name).await
    }
}

impl Inner {
    /// Marks `id` busy (so it is not passivated) until the returned guard is dropped, also
    /// when the caller's future is dropped half-way.
    pub(super) fn hold(&self, id: &AgentId) -> Result<Held, AgentError> {
        if self.kernel.registry.get(&id.name).is_none() {
            return Err(AgentError::NotFound(id.name.clone()));
        }
        super::super::definition::validate_name(&id.key).map_err(AgentError::Invalid)?;
        let slot = self
            .activations
            .active
            .entry(id.clone())
            .or_insert_with(|| {
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
    pub(super) async fn hold_active(
        &self,
        id: &AgentId,
    ) -> Result<(Held, ActorHandle<AgentMsg>), Activation> {
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
        self.activations
            .active
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

    pub(super) async fn activate(
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
                                (self.routing.remote(), source.held_by())
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

    /// True when `id` is active (activated) on this node.
    pub(super) fn is_active_here(&self, id: &AgentId) -> bool {
        self.activations
            .active
            .get(id)
            .is_some_and(|s| s.handle.get().is_some())
    }

    /// Runs `task` on `id` on this node, activating it here if needed.
    pub(super) async fn ask_here(
        &self,
        id: &AgentId,
        task: Task,
    ) -> Result<TaskOutput, Activation> {
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

    pub(super) async fn passivate(
        &self,
        id: &AgentId,
        idle_for: Duration,
    ) -> Result<bool, SupervisorError> {
        let now = unix_ms();
        let removed = self.activations.active.remove_if(id, |_, s| {
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
pub(super) async fn reaper(weak: Weak<Inner>) {
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
            .activations
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
