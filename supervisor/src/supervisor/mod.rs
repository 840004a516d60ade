//! Supervisors: [`SupervisorSpec`] (flags and children), [`SupervisorRef`] (the operations),
//! [`start_root`] (a tree's top), and the `SupervisorActor` that implements OTP's rules.

mod actor;
mod children;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{ActorCell, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::handle::{ActorHandle, CallError};
use crate::snapshot::SnapshotError;
use crate::spec::{
    Backoff, ChildKind, ChildSpec, Intensity, Restart, Shutdown, StartArgs, StartError, Strategy,
    TreeEnv, default_shutdown,
};
use crate::worker::{Worker, WorkerSpec};

use self::actor::{SupArgs, SupervisorActor};

/// The stop reason a supervisor gives its children; it counts as a normal exit.
pub const SHUTDOWN_REASON: &str = "shutdown";
/// Bound of a supervisor's own mailbox (operations such as start_child).
pub const SUPERVISOR_MAILBOX_LEN_MAX: usize = 100_000;
/// Default timeout of an operation on a supervisor. Generous: an operation may wait for a child
/// to stop within its own shutdown timeout.
pub const SUPERVISOR_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Most children one [`SupervisorRef::start_children`] call may carry.
pub const START_CHILDREN_BATCH_MAX: usize = 10_000;
/// How long a kill is waited for before the child is given up on (a handler that blocks its
/// thread cannot be interrupted).
pub const KILL_WAIT_MAX: Duration = Duration::from_secs(10);

/// Errors of supervisor operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SupervisorError {
    /// A child with this id is already under the supervisor.
    #[error("a child with id `{0}` already exists under this supervisor")]
    AlreadyPresent(String),
    /// No child with this id.
    #[error("no child with id `{0}`")]
    NotFound(String),
    /// The operation needs the child stopped; terminate it first.
    #[error("child `{0}` is running; terminate it first")]
    Running(String),
    /// The child is waiting for a restart.
    #[error("child `{0}` is restarting")]
    Restarting(String),
    /// The child is not running (stopped, or waiting to restart).
    #[error("child `{0}` is not running")]
    NotRunning(String),
    /// The supervisor holds `max_children` children.
    #[error("supervisor `{supervisor}` already has its maximum of {max} children")]
    MaxChildren {
        /// The supervisor's path.
        supervisor: String,
        /// Its limit.
        max: usize,
    },
    /// The spec is invalid.
    #[error("invalid child spec: {0}")]
    InvalidSpec(String),
    /// Another child of the tree already stores its snapshot under this key.
    #[error("snapshot key `{key}` is already used by `{used_by}`")]
    KeyInUse {
        /// The key.
        key: String,
        /// The path of the child that holds it.
        used_by: String,
    },
    /// The child's start function failed.
    #[error("child `{id}` failed to start: {source}")]
    StartFailed {
        /// The child id.
        id: String,
        /// Why.
        source: StartError,
    },
    /// The snapshot store failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The supervisor could not be reached.
    #[error(transparent)]
    Call(#[from] CallError),
    /// More than `max_restarts` restarts within `period`: the supervisor failed.
    #[error(
        "supervisor `{supervisor}` exceeded its restart intensity ({max_restarts} in {period_ms} ms)"
    )]
    IntensityExceeded {
        /// The supervisor's path.
        supervisor: String,
        /// Its limit.
        max_restarts: u32,
        /// Its window.
        period_ms: u64,
    },
}

/// A child's state as reported by [`SupervisorRef::which_children`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildStatus {
    /// Running, at this generation.
    Running {
        /// 1 on the first start, +1 per restart.
        generation: u64,
    },
    /// Waiting for a restart (backoff, or a failed restart being retried).
    Restarting,
    /// Not running; its spec is kept (terminated, or a `Transient` child that exited normally).
    Stopped,
}

/// One child, as reported by [`SupervisorRef::which_children`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildInfo {
    /// Its id.
    pub id: String,
    /// Its path in the tree.
    pub path: String,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Its restart type.
    pub restart: Restart,
    /// Running, restarting or stopped.
    pub status: ChildStatus,
    /// Messages waiting in its mailbox.
    pub mailbox_len: usize,
    /// Restarts since its spec was added.
    pub restarts: u64,
    /// Its snapshot key, if persistent.
    pub snapshot_key: Option<String>,
}

/// Counts, as reported by [`SupervisorRef::count_children`] (OTP's `count_children`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChildCounts {
    /// Child specs.
    pub specs: usize,
    /// Running children.
    pub active: usize,
    /// Children that are supervisors.
    pub supervisors: usize,
    /// Children that are workers.
    pub workers: usize,
}

type Reply<T> = RpcReplyPort<Result<T, SupervisorError>>;

/// Requests a supervisor handles.
pub(crate) enum SupervisorMsg {
    StartChild(ChildSpec, Reply<ChildInfo>),
    StartChildren(
        Vec<ChildSpec>,
        RpcReplyPort<Vec<Result<ChildInfo, SupervisorError>>>,
    ),
    TerminateChild(String, Reply<()>),
    RestartChild(String, Reply<ChildInfo>),
    KillChild(String, Reply<()>),
    DeleteChild(String, Reply<()>),
    RemoveChild(String, Reply<()>),
    PassivateChild(String, Reply<()>),
    WhichChildren(RpcReplyPort<Vec<ChildInfo>>),
    CountChildren(RpcReplyPort<ChildCounts>),
}

/// A supervisor's flags.
#[derive(Debug, Clone)]
pub(crate) struct SupervisorConfig {
    pub(crate) strategy: Strategy,
    pub(crate) intensity: Intensity,
    pub(crate) backoff: Backoff,
    pub(crate) max_children: Option<usize>,
    pub(crate) seed: Option<u64>,
}

/// The child specs a supervisor starts with: its static children plus those added at run time
/// (not `Temporary` ones). It outlives the supervisor's incarnations, so a restarted supervisor
/// starts every child it had, each from its snapshot. (OTP forgets dynamically added children
/// on a supervisor restart; AIOS keeps them because agents are added at run time and must come
/// back.)
#[derive(Default)]
pub(crate) struct SpecList {
    pub(crate) next_seq: u64,
    pub(crate) specs: BTreeMap<u64, ChildSpec>,
}

/// A supervisor's spec: strategy, intensity, backoff and static children.
#[derive(Debug)]
pub struct SupervisorSpec {
    id: String,
    config: SupervisorConfig,
    children: Vec<ChildSpec>,
    restart: Restart,
    shutdown: Shutdown,
}

impl SupervisorSpec {
    /// A supervisor with `strategy`, OTP's default intensity (1 restart in 5 s) and no backoff.
    pub fn new(id: impl Into<String>, strategy: Strategy) -> Self {
        Self {
            id: id.into(),
            config: SupervisorConfig {
                strategy,
                intensity: Intensity::default(),
                backoff: Backoff::None,
                max_children: None,
                seed: None,
            },
            children: Vec::new(),
            restart: Restart::Permanent,
            shutdown: default_shutdown(ChildKind::Supervisor),
        }
    }

    /// A dynamic supervisor (Elixir's `DynamicSupervisor`, OTP's `simple_one_for_one`): one for
    /// one, children added at run time with [`SupervisorRef::start_child`], optionally capped
    /// with [`SupervisorSpec::max_children`].
    pub fn dynamic(id: impl Into<String>) -> Self {
        Self::new(id, Strategy::OneForOne)
    }

    /// Sets the restart intensity.
    #[must_use]
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.config.intensity = Intensity {
            max_restarts,
            period,
        };
        self
    }

    /// Sets the backoff between restarts.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Seeds the backoff jitter, for reproducible tests.
    #[must_use]
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Caps the number of children.
    #[must_use]
    pub fn max_children(mut self, max: usize) -> Self {
        self.config.max_children = Some(max);
        self
    }

    /// Adds a static child; children start in the order they are added.
    #[must_use]
    pub fn child(mut self, child: impl Into<ChildSpec>) -> Self {
        self.children.push(child.into());
        self
    }

    /// Sets this supervisor's own restart type (as a child of its parent).
    #[must_use]
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets this supervisor's own shutdown (as a child of its parent). Default `Infinity`.
    #[must_use]
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Checks the flags and the static children.
    ///
    /// # Errors
    /// [`SupervisorError::InvalidSpec`] naming the problem.
    pub fn validate(&self) -> Result<(), SupervisorError> {
        validate_parts(&self.id, &self.config, &self.children)
    }

    /// The child spec that starts this supervisor under a parent, and its handle.
    pub fn build(self) -> (ChildSpec, SupervisorRef) {
        let handle = ActorHandle::<SupervisorMsg>::new(&self.id, SUPERVISOR_MAILBOX_LEN_MAX);
        let config = Arc::new(self.config);
        let specs = Arc::new(Mutex::new(spec_list(self.children)));
        let start_handle = handle.clone();
        let start = move |args: StartArgs| {
            spawn_supervisor(config.clone(), specs.clone(), start_handle.clone(), args)
        };
        let mut spec = ChildSpec::from_fn(self.id.clone(), ChildKind::Supervisor, start)
            .restart(self.restart)
            .shutdown(self.shutdown);
        spec.handle = Some(handle.erased());
        (spec, SupervisorRef::new(handle))
    }
}

impl<W: Worker> From<WorkerSpec<W>> for ChildSpec {
    fn from(spec: WorkerSpec<W>) -> Self {
        spec.build().0
    }
}

impl From<SupervisorSpec> for ChildSpec {
    fn from(spec: SupervisorSpec) -> Self {
        spec.build().0
    }
}

fn spec_list(children: Vec<ChildSpec>) -> SpecList {
    let mut list = SpecList::default();
    for child in children {
        list.specs.insert(list.next_seq, child);
        list.next_seq += 1;
    }
    list
}

pub(crate) fn validate_parts(
    id: &str,
    config: &SupervisorConfig,
    children: &[ChildSpec],
) -> Result<(), SupervisorError> {
    let invalid = |m: String| SupervisorError::InvalidSpec(format!("supervisor `{id}`: {m}"));
    if config.intensity.period.is_zero() {
        return Err(invalid("intensity period must be greater than zero".into()));
    }
    config.backoff.validate().map_err(invalid)?;
    let mut seen = std::collections::HashSet::new();
    for child in children {
        child.validate().map_err(invalid)?;
        if !seen.insert(&*child.id) {
            return Err(invalid(format!("two children have the id `{}`", child.id)));
        }
    }
    if let Some(max) = config.max_children
        && children.len() > max
    {
        return Err(invalid(format!(
            "{} static children exceed max_children {max}",
            children.len()
        )));
    }
    Ok(())
}

async fn spawn_supervisor(
    config: Arc<SupervisorConfig>,
    specs: Arc<Mutex<SpecList>>,
    handle: ActorHandle<SupervisorMsg>,
    args: StartArgs,
) -> Result<ActorCell, StartError> {
    let sup_args = SupArgs {
        config,
        specs,
        env: args.env,
        path: args.path,
        handle,
        generation: args.generation,
    };
    ractor::Actor::spawn_linked(None, SupervisorActor, sup_args, args.supervisor)
        .await
        .map(|(actor, _join)| actor.get_cell())
        .map_err(spawn_error)
}

pub(crate) fn spawn_error(e: ractor::SpawnErr) -> StartError {
    StartError::Spawn(match e {
        ractor::SpawnErr::StartupFailed(inner) => format!("init failed: {inner}"),
        other => other.to_string(),
    })
}

/// A stable handle to a supervisor: its operations, in OTP's names.
#[derive(Clone, Debug)]
pub struct SupervisorRef {
    handle: ActorHandle<SupervisorMsg>,
    call_timeout: Duration,
}

impl SupervisorRef {
    fn new(handle: ActorHandle<SupervisorMsg>) -> Self {
        Self {
            handle,
            call_timeout: SUPERVISOR_CALL_TIMEOUT,
        }
    }

    pub(crate) fn from_any(any: Arc<dyn Any + Send + Sync>) -> Option<Self> {
        ActorHandle::from_any(any).map(Self::new)
    }

    /// The same supervisor with another timeout for its operations.
    #[must_use]
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(Reply<T>) -> SupervisorMsg,
    ) -> Result<T, SupervisorError> {
        self.handle.call(build, self.call_timeout).await?
    }

    /// Starts a child and adds it (OTP's `start_child`). A `Temporary` child is forgotten when
    /// it exits; the others stay until deleted.
    ///
    /// # Errors
    /// [`SupervisorError::AlreadyPresent`], [`SupervisorError::MaxChildren`],
    /// [`SupervisorError::InvalidSpec`], [`SupervisorError::KeyInUse`],
    /// [`SupervisorError::StartFailed`] (the child is then not added), or a call error.
    pub async fn start_child(
        &self,
        spec: impl Into<ChildSpec>,
    ) -> Result<ChildInfo, SupervisorError> {
        let spec = spec.into();
        self.call(|r| SupervisorMsg::StartChild(spec, r)).await
    }

    /// Starts several children in one request, in order; each gets its own result (one failing
    /// does not stop the others). One round trip instead of one per child: the way to start
    /// many children at once (restoring a node's agents, a benchmark).
    ///
    /// # Errors
    /// [`SupervisorError::InvalidSpec`] for more than [`START_CHILDREN_BATCH_MAX`] specs, or a
    /// call error; per-child errors as [`SupervisorRef::start_child`].
    pub async fn start_children(
        &self,
        specs: Vec<ChildSpec>,
    ) -> Result<Vec<Result<ChildInfo, SupervisorError>>, SupervisorError> {
        if specs.len() > START_CHILDREN_BATCH_MAX {
            return Err(SupervisorError::InvalidSpec(format!(
                "{} specs in one start_children call; the limit is {START_CHILDREN_BATCH_MAX}",
                specs.len()
            )));
        }
        Ok(self
            .handle
            .call(
                |r| SupervisorMsg::StartChildren(specs, r),
                self.call_timeout,
            )
            .await?)
    }

    /// Starts a worker and returns its handle.
    ///
    /// # Errors
    /// As [`SupervisorRef::start_child`].
    pub async fn start_worker<W: Worker>(
        &self,
        spec: WorkerSpec<W>,
    ) -> Result<ActorHandle<W::Msg>, SupervisorError> {
        let (spec, handle) = spec.build();
        self.start_child(spec).await?;
        Ok(handle)
    }

    /// Starts a nested supervisor and returns its handle.
    ///
    /// # Errors
    /// As [`SupervisorRef::start_child`].
    pub async fn start_supervisor(
        &self,
        spec: SupervisorSpec,
    ) -> Result<SupervisorRef, SupervisorError> {
        spec.validate()?;
        let (spec, sup) = spec.build();
        self.start_child(spec).await?;
        Ok(sup)
    }

    /// Stops a child by its shutdown spec and keeps its spec (OTP's `terminate_child`); a
    /// `Temporary` child is removed. Not counted as a restart.
    ///
    /// # Errors
    /// [`SupervisorError::NotFound`] or a call error.
    pub async fn terminate_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_owned();
        self.call(|r| SupervisorMsg::TerminateChild(id, r)).await
    }

    /// Starts a stopped child again from its spec (OTP's `restart_child`).
    ///
    /// # Errors
    /// [`SupervisorError::NotFound`], [`SupervisorError::Running`],
    /// [`SupervisorError::Restarting`], [`SupervisorError::StartFailed`], or a call error.
    pub async fn restart_child(&self, id: &str) -> Result<ChildInfo, SupervisorError> {
        let id = id.to_owned();
        self.call(|r| SupervisorMsg::RestartChild(id, r)).await
    }

    /// Kills a running child at once, without its shutdown procedure (OTP's
    /// `exit(Pid, kill)`): its exit is abnormal, so the supervisor restarts it as its restart
    /// type and strategy say, counting against the restart intensity. Operators use it to
    /// check that a part of the tree recovers; a persistent child restarts from its last
    /// snapshot.
    ///
    /// # Errors
    /// [`SupervisorError::NotFound`], [`SupervisorError::NotRunning`], or a call error.
    pub async fn kill_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_owned();
        self.call(|r| SupervisorMsg::KillChild(id, r)).await
    }

    /// Removes a stopped child's spec and deletes its snapshot for good (OTP's `delete_child`).
    ///
    /// # Errors
    /// [`SupervisorError::NotFound`], [`SupervisorError::Running`],
    /// [`SupervisorError::Restarting`], [`SupervisorError::Snapshot`], or a call error.
    pub async fn delete_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_owned();
        self.call(|r| SupervisorMsg::DeleteChild(id, r)).await
    }

    /// `terminate_child` then `delete_child`, in one step.
    ///
    /// # Errors
    /// As the two operations.
    pub async fn remove_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_owned();
        self.call(|r| SupervisorMsg::RemoveChild(id, r)).await
    }

    /// Stops a child by its shutdown spec (an orderly stop, so a persistent worker writes its
    /// final snapshot) and forgets its spec, **keeping** its snapshot: starting a spec with
    /// the same persistence key later restores it. This is how virtual actors are passivated.
    ///
    /// # Errors
    /// As [`SupervisorRef::remove_child`].
    pub async fn passivate_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_owned();
        self.call(|r| SupervisorMsg::PassivateChild(id, r)).await
    }

    /// Every child, in start order (OTP's `which_children`).
    ///
    /// # Errors
    /// A call error.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, SupervisorError> {
        Ok(self
            .handle
            .call(SupervisorMsg::WhichChildren, self.call_timeout)
            .await?)
    }

    /// Counts (OTP's `count_children`).
    ///
    /// # Errors
    /// A call error.
    pub async fn count_children(&self) -> Result<ChildCounts, SupervisorError> {
        Ok(self
            .handle
            .call(SupervisorMsg::CountChildren, self.call_timeout)
            .await?)
    }

    /// Whether the supervisor is running.
    pub fn is_running(&self) -> bool {
        self.handle.is_running()
    }

    /// The supervisor's generation (see [`ActorHandle::generation`]).
    pub fn generation(&self) -> Option<u64> {
        self.handle.generation()
    }

    /// Waits for a generation at least `min_generation` (after a restart of the supervisor).
    ///
    /// # Errors
    /// [`CallError::Timeout`].
    pub async fn wait_for_generation(
        &self,
        min_generation: u64,
        timeout: Duration,
    ) -> Result<u64, CallError> {
        self.handle
            .wait_for_generation(min_generation, timeout)
            .await
    }

    /// The supervisor's path.
    pub fn path(&self) -> String {
        self.handle.path()
    }

    /// Messages waiting in the supervisor's own mailbox.
    pub fn mailbox_len(&self) -> usize {
        self.handle.mailbox_len()
    }
}

/// The top of a tree, started with [`start_root`].
#[derive(Debug)]
pub struct Root {
    supervisor: SupervisorRef,
    cell: ActorCell,
    join: JoinHandle<()>,
    env: TreeEnv,
}

impl Root {
    /// The root supervisor.
    pub fn supervisor(&self) -> &SupervisorRef {
        &self.supervisor
    }

    /// The tree's environment (store, events, registry).
    pub fn env(&self) -> &TreeEnv {
        &self.env
    }

    /// Whether the root has exited (an orderly stop, or a failure after escalation).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Stops the tree in order: every supervisor stops its children in reverse start order,
    /// each within its shutdown timeout. After `timeout` the rest is killed.
    ///
    /// # Errors
    /// [`SupervisorError::Call`] with a timeout when the tree had to be killed.
    pub async fn shutdown(self, timeout: Duration) -> Result<(), SupervisorError> {
        let result = match self
            .cell
            .stop_and_wait(Some(SHUTDOWN_REASON.into()), Some(timeout))
            .await
        {
            Err(ractor::RactorErr::Timeout) => {
                tracing::error!(?timeout, "orderly shutdown timed out; killing the tree");
                // Best effort: the tree is being torn down and a kill cannot be refused.
                let _ = self.cell.kill_and_wait(Some(KILL_WAIT_MAX)).await;
                Err(SupervisorError::Call(CallError::Timeout {
                    path: String::new(),
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                }))
            }
            // Already stopped (for example after an escalation): nothing left to stop.
            _ => Ok(()),
        };
        // The join handle only fails if the runtime is shutting down.
        let _ = self.join.await;
        result
    }
}

/// Starts a tree's root supervisor (path `""`) in `env`.
///
/// # Errors
/// [`SupervisorError::InvalidSpec`], or [`SupervisorError::StartFailed`] when a static child
/// fails to start (those already started are stopped again).
pub async fn start_root(spec: SupervisorSpec, env: TreeEnv) -> Result<Root, SupervisorError> {
    spec.validate()?;
    let id = spec.id.clone();
    let handle = ActorHandle::<SupervisorMsg>::new(&spec.id, SUPERVISOR_MAILBOX_LEN_MAX);
    handle.erased().set_path("");
    let args = SupArgs {
        config: Arc::new(spec.config),
        specs: Arc::new(Mutex::new(spec_list(spec.children))),
        env: env.clone(),
        path: String::new(),
        handle: handle.clone(),
        generation: 1,
    };
    let (actor, join) = ractor::Actor::spawn(None, SupervisorActor, args)
        .await
        .map_err(|e| SupervisorError::StartFailed {
            id,
            source: spawn_error(e),
        })?;
    Ok(Root {
        supervisor: SupervisorRef::new(handle),
        cell: actor.get_cell(),
        join,
        env,
    })
}

pub(crate) fn join_path(parent: &str, id: &str) -> String {
    if parent.is_empty() {
        id.to_owned()
    } else {
        format!("{parent}/{id}")
    }
}
