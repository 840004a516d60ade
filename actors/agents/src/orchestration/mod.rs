//! Orchestration: runs (a planner's plan executed step by step by agents chosen by
//! capability, as a persistent actor that resumes after a crash without repeating finished
//! work), human approval of steps, and sessions (conversations with an agent or a team and
//! their persisted history).
//!
//! ```text
//! Orchestrator::start(RunSpec) ──► run actor `run:<id>` under the `runs` supervisor
//!     Planning ──plan valid──► Running ──all steps done──► Composing ──► Succeeded
//!         │                     │   ▲ approve                              
//!         │                     ▼   │                                     
//!         │               AwaitingApproval ──deny──► Failed                
//!         └──── no valid plan / step failed every attempt ──► Failed; cancel ──► Cancelled
//! ```
//!
//! Store layout: the run's snapshot `run/<id>` (its whole [`RunState`]), the active index
//! `runidx/<id>` (runs to resume at start), session metadata `sessmeta/<id>` and entries
//! `sesslog/<id>/<seq>`.

mod plan;
mod run;
pub mod schedule;
mod session;

use std::sync::Arc;
use std::time::Duration;

use aios_supervisor::snapshot::{Durability, Persistence, SnapshotPolicy, codec};
use aios_supervisor::{
    ActorHandle, CallError, PersistentWorker, Restart, SupervisorRef, WorkerSpec,
};
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use self::plan::{
    PLAN_STEPS_MAX, Plan, PlanStep, STEP_DESCRIPTION_LEN_MAX, STEP_ID_LEN_MAX, validate_step_id,
};
pub use self::run::{
    Decision, PLANNER_CAPABILITY, RUN_TASK_LEN_MAX, RunPolicy, RunSpec, RunState, RunStatus,
    StepState, StepStatus,
};
use self::run::{RunMsg, RunWorker};
pub use self::session::{
    EntryRole, SESSION_ENTRIES_MAX, SessionEntry, SessionInfo, SessionTarget,
    instance_key as session_instance_key,
};
use crate::agent::AgentSystem;
use aios_core::records::Records;

/// Runs active (not finished) at once on a node.
pub const RUNS_ACTIVE_MAX: usize = 1024;
/// Run events buffered for slow subscribers.
pub const RUN_EVENTS_BUFFER: usize = 4096;
/// The most runs one `list` call returns.
pub const RUNS_LIST_MAX: usize = 1000;
/// Mailbox bound of a run actor (results of at most [`PLAN_STEPS_MAX`] steps plus calls).
const RUN_MAILBOX_LEN_MAX: usize = 256;
/// How long a call to a run actor may take.
const RUN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

const RUN_KEY_PREFIX: &str = aios_core::keyspace::RUN;
const RUN_INDEX_PREFIX: &str = aios_core::keyspace::RUN_INDEX;

/// Why an orchestration call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestrationError {
    /// The request is invalid (names the field).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No run with this id.
    #[error("no run {0}")]
    RunNotFound(String),
    /// No session with this id.
    #[error("no session {0}")]
    SessionNotFound(String),
    /// The run has no step with this id.
    #[error("no step {0:?} in this run")]
    UnknownStep(String),
    /// The step does not wait for a decision.
    #[error("step {0:?} is not awaiting approval")]
    NotAwaitingApproval(String),
    /// The run is already finished.
    #[error("run {0} is already finished")]
    Finished(String),
    /// Too many active runs.
    #[error("{0}")]
    Busy(String),
    /// The wait ended before the run did.
    #[error("timed out waiting for run {0}")]
    Timeout(String),
    /// The store or an actor failed.
    #[error("orchestration unavailable: {0}")]
    Unavailable(String),
    /// A session's run ended without an answer (failed or cancelled).
    #[error("{0}")]
    RunFailed(String),
}

/// Something that happened in a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunEvent {
    /// The run.
    pub run: String,
    /// What happened.
    pub kind: RunEventKind,
}

/// The kinds of [`RunEvent`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunEventKind {
    /// The plan was accepted.
    Planned {
        /// Step ids.
        steps: Vec<String>,
    },
    /// The planner's answer was not a valid plan.
    PlanRejected {
        /// Why.
        reason: String,
    },
    /// A step started.
    StepStarted {
        /// Step id.
        step: String,
        /// Its agent.
        agent: String,
        /// 1 on the first attempt.
        attempt: u32,
    },
    /// A step finished.
    StepDone {
        /// Step id.
        step: String,
        /// Its agent.
        agent: String,
    },
    /// A step attempt failed.
    StepFailed {
        /// Step id.
        step: String,
        /// Its agent.
        agent: String,
        /// The error.
        error: String,
        /// The error's kind.
        kind: String,
        /// Whether it will be tried again.
        retry: bool,
    },
    /// A step waits for approval.
    AwaitingApproval {
        /// Step id.
        step: String,
        /// Why.
        reason: String,
    },
    /// A person decided.
    Decided {
        /// Step id.
        step: String,
        /// Approved or denied.
        approved: bool,
        /// Who.
        by: String,
    },
    /// The answer is being composed.
    Composing,
    /// The run finished.
    Finished {
        /// How.
        status: RunStatus,
        /// Why it failed, if it did.
        error: Option<String>,
    },
}

/// What run actors share.
pub(crate) struct Shared {
    pub(crate) system: AgentSystem,
    pub(crate) records: Records,
    pub(crate) events: broadcast::Sender<RunEvent>,
    pub(crate) runs: DashMap<String, ActorHandle<RunMsg>>,
    /// The latest state of every active run, published by its actor after each message, so
    /// readers never queue behind the run's work.
    states: DashMap<String, RunState>,
    /// Each active run's cancellation token; it outlives restarts of the run's actor.
    tokens: DashMap<String, CancellationToken>,
    /// Runs of one tenant active at once, at most (0: only [`RUNS_ACTIVE_MAX`]).
    tenant_runs_max: std::sync::atomic::AtomicUsize,
    /// Held while a start counts the active runs and takes its place among them, so two
    /// starts cannot both take the last place.
    admitting: std::sync::Mutex<()>,
}

impl Shared {
    /// Takes a finished run out of the active index.
    pub(crate) async fn unindex(&self, id: &str) -> Result<(), String> {
        self.records
            .delete(&format!("{RUN_INDEX_PREFIX}{id}"))
            .await
            .map_err(|e| e.to_string())?;
        self.runs.remove(id);
        self.states.remove(id);
        self.tokens.remove(id);
        Ok(())
    }

    pub(crate) fn publish(&self, state: &RunState) {
        self.states.insert(state.id.clone(), state.clone());
    }

    pub(crate) fn token(&self, id: &str) -> CancellationToken {
        self.tokens.entry(id.to_string()).or_default().clone()
    }
}

/// Runs and sessions of a node. Cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    shared: Arc<Shared>,
    supervisor: SupervisorRef,
    sessions: Arc<session::Sessions>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("active_runs", &self.shared.runs.len())
            .finish()
    }
}

/// A place among the active runs taken by a start that has not finished starting.
struct Place<'a> {
    shared: &'a Shared,
    id: &'a str,
    taken: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.taken {
            self.shared.states.remove(self.id);
        }
    }
}

/// A run's tenant (`default` when its spec names none).
fn tenant_of(spec: &RunSpec) -> &str {
    if spec.tenant.is_empty() {
        "default"
    } else {
        &spec.tenant
    }
}

fn unavailable(e: impl std::fmt::Display) -> OrchestrationError {
    OrchestrationError::Unavailable(e.to_string())
}

fn validate_run_id(id: &str) -> Result<(), OrchestrationError> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(OrchestrationError::Invalid(format!(
            "run id {id:?} is not 32 hex digits"
        )))
    }
}

impl Orchestrator {
    /// Starts orchestration: run actors go under `supervisor` (a dynamic supervisor), runs
    /// and sessions are kept in `records`, and every run that was active when the node last
    /// stopped (or was killed) is resumed.
    ///
    /// # Errors
    /// [`OrchestrationError::Unavailable`] when the store or the supervisor fails.
    pub async fn open(
        system: AgentSystem,
        supervisor: SupervisorRef,
        records: Records,
    ) -> Result<Self, OrchestrationError> {
        let (events, _) = broadcast::channel(RUN_EVENTS_BUFFER);
        let shared = Arc::new(Shared {
            system: system.clone(),
            records: records.clone(),
            events,
            runs: DashMap::new(),
            states: DashMap::new(),
            tokens: DashMap::new(),
            tenant_runs_max: std::sync::atomic::AtomicUsize::new(0),
            admitting: std::sync::Mutex::new(()),
        });
        let this = Self {
            sessions: Arc::new(session::Sessions::new(records.clone(), system)),
            shared,
            supervisor,
        };
        let active = records
            .keys(RUN_INDEX_PREFIX, RUNS_ACTIVE_MAX * 2)
            .await
            .map_err(unavailable)?;
        let mut resumed = 0;
        for key in active {
            let id = key.trim_start_matches(RUN_INDEX_PREFIX).to_string();
            match this.load(&id).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::warn!(run = %id, "indexed run has no snapshot; dropping it from the index");
                    this.shared.unindex(&id).await.map_err(unavailable)?;
                    continue;
                }
                Err(e) => {
                    // One unreadable run must not keep the node from starting.
                    tracing::error!(run = %id, error = %e, "cannot resume run; left in the index");
                    continue;
                }
            }
            if let Err(e) = this.spawn(&id, None).await {
                tracing::error!(run = %id, error = %e, "cannot resume run");
                continue;
            }
            resumed += 1;
        }
        if resumed > 0 {
            tracing::info!(runs = resumed, "resumed active runs");
        }
        Ok(this)
    }

    async fn spawn(&self, id: &str, initial: Option<RunState>) -> Result<(), OrchestrationError> {
        let spec = WorkerSpec::new(
            format!("run:{id}"),
            RunWorker {
                id: id.to_string(),
                shared: self.shared.clone(),
                initial,
            },
        )
        .restart(Restart::Transient)
        .mailbox_len_max(RUN_MAILBOX_LEN_MAX)
        .persistent(
            Persistence::new(format!("{RUN_KEY_PREFIX}{id}"))
                .policy(SnapshotPolicy::EveryMessage)
                .durability(Durability::Durable),
        );
        // Known before it starts, so a run that finishes at once removes its own entry.
        let (child, handle) = spec.build();
        self.shared.runs.insert(id.to_string(), handle);
        if let Err(e) = self.supervisor.start_child(child).await {
            self.shared.runs.remove(id);
            return Err(unavailable(e));
        }
        Ok(())
    }

    /// Bounds the runs of one tenant active at once on this node (0: only the node's bound,
    /// [`RUNS_ACTIVE_MAX`]). Runs already active are not stopped.
    pub fn set_tenant_runs_active_max(&self, max: usize) {
        self.shared
            .tenant_runs_max
            .store(max, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes a place among the active runs for `state` (its state is published), or says
    /// why there is none.
    fn admit(&self, state: &RunState) -> Result<(), OrchestrationError> {
        let shared = &self.shared;
        // Invariant: nothing panics while this guard is held (counting and an insert).
        let _admitting = shared
            .admitting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if shared.runs.len().max(shared.states.len()) >= RUNS_ACTIVE_MAX {
            return Err(OrchestrationError::Busy(format!(
                "{RUNS_ACTIVE_MAX} runs are active; wait for some to finish"
            )));
        }
        let max = shared
            .tenant_runs_max
            .load(std::sync::atomic::Ordering::Relaxed);
        let tenant = tenant_of(&state.spec);
        if max > 0 {
            // A run that finished is counted out before its actor's cleanup ends.
            let n = shared
                .states
                .iter()
                .filter(|s| !s.status.is_finished() && tenant_of(&s.spec) == tenant)
                .count();
            if n >= max {
                return Err(OrchestrationError::Busy(format!(
                    "tenant {tenant} has {n} active runs, the most it may have at once \
                     ([tenants] runs_active_max = {max}); wait for some to finish"
                )));
            }
        }
        shared.publish(state);
        Ok(())
    }

    /// Starts a run and returns its id once its first state is on disk.
    ///
    /// # Errors
    /// [`OrchestrationError::Invalid`] for a bad spec, [`OrchestrationError::Busy`] beyond
    /// [`RUNS_ACTIVE_MAX`] active runs (or the tenant's bound), [`OrchestrationError::Unavailable`]
    /// on store failures.
    pub async fn start(&self, spec: RunSpec) -> Result<String, OrchestrationError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.start_as(id, spec).await
    }

    /// Starts a run with the given id (32 hex digits) unless a run with it exists; returns
    /// whether it started one. Scheduled firings use it so that one due time is one run.
    ///
    /// # Errors
    /// As [`Orchestrator::start`].
    pub async fn start_with_id(&self, id: &str, spec: RunSpec) -> Result<bool, OrchestrationError> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(OrchestrationError::Invalid(format!(
                "run id {id:?} is not 32 hex digits"
            )));
        }
        if self.run_exists(id).await {
            return Ok(false);
        }
        self.start_as(id.to_string(), spec).await.map(|_| true)
    }

    /// True when a run with this id is active or has a snapshot (a store failure counts as
    /// existing, so that nothing is started twice on a doubt).
    pub async fn run_exists(&self, id: &str) -> bool {
        self.shared.runs.contains_key(id) || !matches!(self.load(id).await, Ok(None))
    }

    async fn start_as(&self, id: String, spec: RunSpec) -> Result<String, OrchestrationError> {
        spec.validate().map_err(OrchestrationError::Invalid)?;
        if let Some(p) = &spec.planner
            && self.shared.system.registry().get(p).is_none()
        {
            return Err(OrchestrationError::Invalid(format!(
                "planner: no agent named {p:?}"
            )));
        }
        let state = RunState::new(id.clone(), spec);
        self.admit(&state)?;
        // Gives the place back unless the run started, also when this future is dropped.
        let mut place = Place {
            shared: &self.shared,
            id: &id,
            taken: true,
        };
        self.shared
            .records
            .put(
                &format!("{RUN_INDEX_PREFIX}{id}"),
                &state.created_ms,
                Durability::Durable,
            )
            .await
            .map_err(unavailable)?;
        self.spawn(&id, Some(state)).await?;
        place.taken = false;
        drop(place);
        // Answered after a message's durable snapshot: the run now survives a crash. A run
        // that already finished and stopped has its final snapshot on disk.
        if let Err(e) = self.call(&id, RunMsg::Get).await
            && self.load(&id).await?.is_none()
        {
            return Err(e);
        }
        tracing::info!(run = %id, "run started");
        Ok(id)
    }

    async fn call<R: Send + 'static>(
        &self,
        id: &str,
        msg: impl FnOnce(ractor::RpcReplyPort<R>) -> RunMsg,
    ) -> Result<R, OrchestrationError> {
        let handle = self
            .shared
            .runs
            .get(id)
            .map(|h| h.clone())
            .ok_or_else(|| OrchestrationError::RunNotFound(id.to_string()))?;
        handle
            .call(msg, RUN_CALL_TIMEOUT)
            .await
            .map_err(|e| match e {
                CallError::Timeout { .. } => unavailable(format!("run {id} did not answer")),
                other => unavailable(format!("run {id}: {other}")),
            })
    }

    async fn load(&self, id: &str) -> Result<Option<RunState>, OrchestrationError> {
        let key = format!("{RUN_KEY_PREFIX}{id}");
        let Some(restored) = self
            .shared
            .records
            .snapshots()
            .load(&key)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        if restored.schema_version != RunWorker::SCHEMA_VERSION {
            return Err(unavailable(format!(
                "run {id} has schema version {}, this build reads {}",
                restored.schema_version,
                RunWorker::SCHEMA_VERSION
            )));
        }
        codec::decode(restored.payload())
            .map(Some)
            .map_err(|e| unavailable(format!("run {id}: {e}")))
    }

    /// A run's state: live from its actor while active, from its snapshot afterwards.
    ///
    /// # Errors
    /// [`OrchestrationError::Invalid`] for a malformed id, store failures.
    pub async fn get(&self, id: &str) -> Result<Option<RunState>, OrchestrationError> {
        validate_run_id(id)?;
        if let Some(s) = self.shared.states.get(id) {
            return Ok(Some(s.clone()));
        }
        self.load(id).await
    }

    /// Up to `limit` (at most [`RUNS_LIST_MAX`]) runs, oldest id first, starting after
    /// `after`.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunState>, OrchestrationError> {
        let limit = limit.min(RUNS_LIST_MAX);
        let after = after.map(|a| format!("{RUN_KEY_PREFIX}{a}"));
        let keys = self
            .shared
            .records
            .keys_after(RUN_KEY_PREFIX, after.as_deref(), limit)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match self.get(key.trim_start_matches(RUN_KEY_PREFIX)).await {
                Ok(Some(s)) => out.push(s),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "unreadable run left out of the list")
                }
            }
        }
        Ok(out)
    }

    /// Removes finished runs beyond `policy` (per tenant: older than its `max_age`, or
    /// beyond its `max_count` newest finished runs); returns how many. Runs that have not
    /// finished, and runs still active on this node, are never removed.
    ///
    /// # Errors
    /// Store failures.
    pub async fn prune_runs(
        &self,
        policy: &crate::retention::RetentionPolicy,
        now_ms: u64,
        progress: &crate::retention::Progress,
    ) -> Result<u64, OrchestrationError> {
        use std::sync::atomic::Ordering;
        // tenant → (finished_ms, id) of its finished runs.
        let mut finished: std::collections::BTreeMap<String, Vec<(u64, String)>> =
            std::collections::BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list(after.as_deref(), RUNS_LIST_MAX).await?;
            let Some(last) = page.last().map(|r| r.id.clone()) else {
                break;
            };
            progress
                .scanned
                .fetch_add(page.len() as u64, Ordering::Relaxed);
            for r in page {
                if let Some(done) = r.finished_ms.filter(|_| r.status.is_finished())
                    && !self.shared.runs.contains_key(&r.id)
                {
                    let tenant = if r.spec.tenant.is_empty() {
                        "default".to_string()
                    } else {
                        r.spec.tenant.clone()
                    };
                    finished.entry(tenant).or_default().push((done, r.id));
                }
            }
            after = Some(last);
        }
        let mut keys = Vec::new();
        for (tenant, mut runs) in finished {
            let keep = policy.runs_of(&tenant);
            // Oldest first.
            runs.sort();
            let by_count = keep.over_count(runs.len() as u64) as usize;
            let cutoff = keep.cutoff_ms(now_ms);
            for (i, (done, id)) in runs.into_iter().enumerate() {
                if i < by_count || cutoff.is_some_and(|c| done < c) {
                    keys.push(format!("{RUN_KEY_PREFIX}{id}"));
                }
            }
        }
        let removed = crate::retention::delete_keys(&self.shared.records, keys)
            .await
            .map_err(unavailable)?;
        progress.removed.fetch_add(removed, Ordering::Relaxed);
        Ok(removed)
    }

    /// Removes session entries beyond `policy` (per session, by its tenant's `max_age` and
    /// `max_count`); returns how many. The session itself stays, with its newer entries.
    ///
    /// # Errors
    /// Store failures.
    pub async fn prune_sessions(
        &self,
        policy: &crate::retention::RetentionPolicy,
        now_ms: u64,
        progress: &crate::retention::Progress,
    ) -> Result<u64, OrchestrationError> {
        self.sessions.prune(policy, now_ms, progress).await
    }

    /// Waits until the run is finished, or `until` says the state is what the caller wants
    /// (for example awaiting approval), at most `timeout`.
    ///
    /// # Errors
    /// [`OrchestrationError::RunNotFound`], [`OrchestrationError::Timeout`].
    pub async fn wait_until(
        &self,
        id: &str,
        timeout: Duration,
        until: impl Fn(&RunState) -> bool,
    ) -> Result<RunState, OrchestrationError> {
        let mut events = self.shared.events.subscribe();
        let work = async {
            loop {
                let state = self
                    .get(id)
                    .await?
                    .ok_or_else(|| OrchestrationError::RunNotFound(id.to_string()))?;
                if state.status.is_finished() || until(&state) {
                    return Ok(state);
                }
                loop {
                    match events.recv().await {
                        Ok(e) if e.run == id => break,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err(unavailable("the orchestrator is gone"));
                        }
                    }
                }
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| OrchestrationError::Timeout(id.to_string()))?
    }

    /// Waits until the run is finished, at most `timeout`.
    ///
    /// # Errors
    /// As [`Orchestrator::wait_until`].
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<RunState, OrchestrationError> {
        self.wait_until(id, timeout, |_| false).await
    }

    /// Approves or denies a step that waits for approval. Returns once the decision is on
    /// disk.
    ///
    /// # Errors
    /// [`OrchestrationError::RunNotFound`] (also for a finished run),
    /// [`OrchestrationError::UnknownStep`], [`OrchestrationError::NotAwaitingApproval`].
    pub async fn decide(
        &self,
        id: &str,
        step: &str,
        decision: Decision,
    ) -> Result<(), OrchestrationError> {
        validate_run_id(id)?;
        if decision.by.trim().is_empty() || decision.by.len() > 256 {
            return Err(OrchestrationError::Invalid(
                "decision.by: say who decided (at most 256 bytes)".into(),
            ));
        }
        if decision.note.len() > 4096 {
            return Err(OrchestrationError::Invalid(
                "decision.note: at most 4096 bytes".into(),
            ));
        }
        if !self.shared.runs.contains_key(id) {
            return match self.load(id).await? {
                Some(_) => Err(OrchestrationError::Finished(id.to_string())),
                None => Err(OrchestrationError::RunNotFound(id.to_string())),
            };
        }
        let step = step.to_string();
        match self.call(id, |r| RunMsg::Decide(step, decision, r)).await {
            Ok(result) => result,
            Err(e) => match self.finished_meanwhile(id, e).await? {},
        }
    }

    /// A call to a run actor failed: if the run finished and stopped in the meantime, says
    /// so ([`OrchestrationError::Finished`]); otherwise returns the call's error.
    async fn finished_meanwhile(
        &self,
        id: &str,
        error: OrchestrationError,
    ) -> Result<std::convert::Infallible, OrchestrationError> {
        if matches!(
            error,
            OrchestrationError::RunNotFound(_) | OrchestrationError::Unavailable(_)
        ) && self.load(id).await?.is_some_and(|s| s.status.is_finished())
        {
            return Err(OrchestrationError::Finished(id.to_string()));
        }
        Err(error)
    }

    /// Cancels a run: in-flight LLM calls are cancelled and it ends `Cancelled`. Returns
    /// false when it had already finished.
    ///
    /// # Errors
    /// [`OrchestrationError::RunNotFound`].
    pub async fn cancel(&self, id: &str) -> Result<bool, OrchestrationError> {
        validate_run_id(id)?;
        if !self.shared.runs.contains_key(id) {
            return match self.load(id).await? {
                Some(_) => Ok(false),
                None => Err(OrchestrationError::RunNotFound(id.to_string())),
            };
        }
        match self.call(id, RunMsg::Cancel).await {
            Ok(cancelled) => Ok(cancelled),
            Err(e) => match self.finished_meanwhile(id, e).await {
                Err(OrchestrationError::Finished(_)) => Ok(false),
                Err(e) => Err(e),
                Ok(never) => match never {},
            },
        }
    }

    /// Runs now active on this node.
    pub fn active_count(&self) -> usize {
        self.shared.runs.len()
    }

    /// Every run's events.
    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.shared.events.subscribe()
    }

    /// Creates a session with an agent or a team.
    ///
    /// # Errors
    /// [`OrchestrationError::Invalid`] for an unknown agent or bad title.
    pub async fn create_session(
        &self,
        target: SessionTarget,
        tenant: &str,
        title: &str,
    ) -> Result<SessionInfo, OrchestrationError> {
        self.sessions.create(target, tenant, title).await
    }

    /// A session's metadata.
    ///
    /// # Errors
    /// Store failures.
    pub async fn session(&self, id: &str) -> Result<Option<SessionInfo>, OrchestrationError> {
        self.sessions.get(id).await
    }

    /// Up to `limit` sessions (at most [`RUNS_LIST_MAX`]), oldest id first, after `after`.
    ///
    /// # Errors
    /// Store failures.
    pub async fn sessions(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, OrchestrationError> {
        self.sessions.list(after, limit.min(RUNS_LIST_MAX)).await
    }

    /// Says `text` in a session and returns the answer entry. A team session runs a plan
    /// for every message and waits up to `timeout` for it.
    ///
    /// # Errors
    /// [`OrchestrationError::SessionNotFound`], invalid text, the agent's or run's failure
    /// (also recorded in the history as a `system` entry).
    pub async fn say(
        &self,
        session: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<SessionEntry, OrchestrationError> {
        self.sessions.say(self, session, text, timeout).await
    }

    /// Entries of a session with `seq >= from`, at most `limit` (at most 1000).
    ///
    /// # Errors
    /// [`OrchestrationError::SessionNotFound`], store failures.
    pub async fn history(
        &self,
        session: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<SessionEntry>, OrchestrationError> {
        self.sessions.history(session, from, limit).await
    }

    /// Deletes a session, its history and its agent instance.
    ///
    /// # Errors
    /// [`OrchestrationError::SessionNotFound`], store failures.
    pub async fn delete_session(&self, session: &str) -> Result<(), OrchestrationError> {
        self.sessions.delete(session).await
    }
}
