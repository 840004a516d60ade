//! Workers: the behaviour of a supervised actor ([`Worker`]), its persistence
//! ([`PersistentWorker`]), the per-message [`Context`], and [`WorkerSpec`], which turns a worker
//! into a child spec.
//!
//! A worker runs inside `WorkerActor`, a ractor actor that counts its mailbox, takes snapshots
//! by policy, and holds replies made with [`Context::reply`] until the snapshot that covers the
//! message is durable.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use ractor::{ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::handle::{ActorHandle, Envelope, MAILBOX_LEN_MAX_DEFAULT, MailboxCounter, SystemMsg};
use crate::snapshot::{
    Migrations, Persistence, Restored, SnapshotError, SnapshotPolicy, WeakSnapshots, codec,
};
use crate::spec::{
    ChildKind, ChildSpec, Restart, Shutdown, StartArgs, StartError, default_shutdown,
};

/// The behaviour of a supervised actor.
///
/// `init` runs on every start, with the last snapshot when the worker is persistent; `handle`
/// runs once per message. Returning `Err` (or panicking) from either means "crash me": the
/// supervisor restarts the worker by its policy. Expected failures belong in the reply instead.
///
/// ```
/// use aios_supervisor::{Context, Worker};
/// use ractor::{ActorProcessingErr, RpcReplyPort};
///
/// struct Counter;
/// enum CounterMsg { Add(u64), Get(RpcReplyPort<u64>) }
///
/// impl Worker for Counter {
///     type Msg = CounterMsg;
///     type State = u64;
///     async fn init(&self, _: &mut Context<CounterMsg>, restored: Option<u64>) -> Result<u64, ActorProcessingErr> {
///         Ok(restored.unwrap_or(0))
///     }
///     async fn handle(&self, ctx: &mut Context<CounterMsg>, msg: CounterMsg, n: &mut u64) -> Result<(), ActorProcessingErr> {
///         match msg {
///             CounterMsg::Add(k) => *n += k,
///             CounterMsg::Get(reply) => ctx.reply(reply, *n),
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Worker: Send + Sync + 'static {
    /// The messages it handles.
    type Msg: Send + 'static;
    /// Its state, rebuilt by `init` on every start.
    type State: Send + 'static;

    /// Builds the state; `restored` is the last snapshot of a persistent worker.
    fn init(
        &self,
        ctx: &mut Context<Self::Msg>,
        restored: Option<Self::State>,
    ) -> impl Future<Output = Result<Self::State, ActorProcessingErr>> + Send;

    /// Handles one message.
    fn handle(
        &self,
        ctx: &mut Context<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send;

    /// Runs on an orderly stop (not after a crash or a kill), before the final snapshot.
    fn terminate(
        &self,
        ctx: &mut Context<Self::Msg>,
        state: &mut Self::State,
    ) -> impl Future<Output = ()> + Send {
        let _ = (ctx, state);
        async {}
    }
}

/// A worker whose state is kept in the snapshot store.
///
/// Bump [`PersistentWorker::SCHEMA_VERSION`] whenever the encoded form of the state changes,
/// and register the step from the previous version in [`PersistentWorker::migrations`].
pub trait PersistentWorker: Worker<State: Serialize + DeserializeOwned> {
    /// The version of the state's encoded form written by this build.
    const SCHEMA_VERSION: u32 = 1;

    /// Steps from older versions to [`PersistentWorker::SCHEMA_VERSION`].
    fn migrations() -> Migrations {
        Migrations::new()
    }
}

type Reply = Box<dyn FnOnce() + Send>;

/// What a worker's handlers can do besides changing state.
pub struct Context<M> {
    myself: ActorHandle<M>,
    cell: ActorCell,
    generation: u64,
    replies: Vec<Reply>,
    snapshot_requested: bool,
}

impl<M> std::fmt::Debug for Context<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("actor", &self.cell.get_id())
            .field("generation", &self.generation)
            .field("replies", &self.replies.len())
            .field("snapshot_requested", &self.snapshot_requested)
            .finish_non_exhaustive()
    }
}

impl<M: Send + 'static> Context<M> {
    /// The worker's own handle, for sending to itself or handing to others.
    pub fn myself(&self) -> &ActorHandle<M> {
        &self.myself
    }

    /// This incarnation's generation (1 on the first start, +1 on every restart).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Replies to a request once the message is done: after the handler returns and, when the
    /// message's snapshot is taken with [`crate::snapshot::Durability::Durable`], after it is
    /// on disk. A reply sent this way is an acknowledgement that survives `kill -9`. If the
    /// handler fails, the reply is never sent and the caller sees [`crate::CallError::Dropped`].
    pub fn reply<T: Send + 'static>(&mut self, port: RpcReplyPort<T>, value: T) {
        self.replies.push(Box::new(move || {
            // The caller may have timed out and gone; that is its business.
            let _ = port.send(value);
        }));
    }

    /// Takes a snapshot after this message whatever the policy says.
    pub fn snapshot_now(&mut self) {
        self.snapshot_requested = true;
    }

    /// Stops the worker normally after this message (a `Transient` or `Temporary` worker is
    /// then not restarted).
    pub fn stop(&mut self) {
        self.cell.stop(None);
    }

    fn flush_replies(&mut self) {
        for reply in self.replies.drain(..) {
            reply();
        }
    }
}

/// How a persistent worker's state is encoded, decoded and stored; built where the
/// `PersistentWorker` bound is known, used where it is not.
struct PersistHooks<S> {
    cfg: Persistence,
    schema_version: u32,
    encode: fn(&S) -> Result<Vec<u8>, String>,
    decode: fn(&str, &Restored) -> Result<S, SnapshotError>,
}

fn encode_state<W: PersistentWorker>(state: &W::State) -> Result<Vec<u8>, String> {
    codec::encode(state)
}

fn decode_state<W: PersistentWorker>(
    key: &str,
    restored: &Restored,
) -> Result<W::State, SnapshotError> {
    let migrated = restored.schema_version != W::SCHEMA_VERSION;
    let payload: Cow<'_, [u8]> = if migrated {
        let bytes = W::migrations()
            .apply(
                restored.schema_version,
                W::SCHEMA_VERSION,
                restored.payload(),
            )
            .map_err(|e| SnapshotError::Migration {
                key: key.into(),
                reason: e.to_string(),
            })?;
        Cow::Owned(bytes)
    } else {
        Cow::Borrowed(restored.payload())
    };
    codec::decode(&payload).map_err(|reason| {
        if migrated {
            SnapshotError::Migration {
                key: key.into(),
                reason: format!(
                    "state migrated from version {} does not decode as version {}: {reason}",
                    restored.schema_version,
                    W::SCHEMA_VERSION
                ),
            }
        } else {
            SnapshotError::Corrupt {
                key: key.into(),
                reason: format!(
                    "cannot decode schema version {}: {reason}",
                    restored.schema_version
                ),
            }
        }
    })
}

/// A typed child spec for a [`Worker`]. `build` yields the [`ChildSpec`] and the stable
/// [`ActorHandle`] that follows the worker across restarts.
pub struct WorkerSpec<W: Worker> {
    id: String,
    worker: Arc<W>,
    restart: Restart,
    shutdown: Shutdown,
    mailbox_len_max: usize,
    persist: Option<Arc<PersistHooks<W::State>>>,
}

impl<W: Worker> std::fmt::Debug for WorkerSpec<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("mailbox_len_max", &self.mailbox_len_max)
            .field("persisted", &self.persist.is_some())
            .finish_non_exhaustive()
    }
}

impl<W: Worker> WorkerSpec<W> {
    /// A `Permanent` worker with a 5 s shutdown timeout and a mailbox of
    /// [`MAILBOX_LEN_MAX_DEFAULT`] messages.
    pub fn new(id: impl Into<String>, worker: W) -> Self {
        Self {
            id: id.into(),
            worker: Arc::new(worker),
            restart: Restart::Permanent,
            shutdown: default_shutdown(ChildKind::Worker),
            mailbox_len_max: MAILBOX_LEN_MAX_DEFAULT,
            persist: None,
        }
    }

    /// Sets the restart type.
    #[must_use]
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the shutdown.
    #[must_use]
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Sets the mailbox bound (at least 1).
    #[must_use]
    pub fn mailbox_len_max(mut self, len_max: usize) -> Self {
        self.mailbox_len_max = len_max.max(1);
        self
    }

    /// The child spec and the worker's handle.
    pub fn build(self) -> (ChildSpec, ActorHandle<W::Msg>) {
        let handle = ActorHandle::<W::Msg>::new(&self.id, self.mailbox_len_max);
        let worker = self.worker;
        let persist = self.persist;
        let start_handle = handle.clone();
        let cfg = persist.as_ref().map(|p| p.cfg.clone());
        let start = move |args: StartArgs| {
            let worker = worker.clone();
            let persist = persist.clone();
            let handle = start_handle.clone();
            start_worker(worker, persist, handle, args)
        };
        let mut spec = ChildSpec::from_fn(self.id, ChildKind::Worker, start)
            .restart(self.restart)
            .shutdown(self.shutdown);
        spec.persistence = cfg;
        spec.handle = Some(handle.erased());
        (spec, handle)
    }
}

impl<W: PersistentWorker> WorkerSpec<W> {
    /// Makes the worker persistent under `persistence.key`.
    #[must_use]
    pub fn persistent(mut self, persistence: Persistence) -> Self {
        self.persist = Some(Arc::new(PersistHooks {
            cfg: persistence,
            schema_version: W::SCHEMA_VERSION,
            encode: encode_state::<W>,
            decode: decode_state::<W>,
        }));
        self
    }
}

async fn start_worker<W: Worker>(
    worker: Arc<W>,
    persist: Option<Arc<PersistHooks<W::State>>>,
    handle: ActorHandle<W::Msg>,
    args: StartArgs,
) -> Result<ActorCell, StartError> {
    let (restored, snapshots) = match &persist {
        None => (None, None),
        Some(hooks) => {
            let key = &hooks.cfg.key;
            let snapshots = args
                .env
                .snapshots
                .clone()
                .ok_or_else(|| SnapshotError::NoStore { key: key.clone() })?;
            let restored = match &args.restored {
                Some(r) => Some((hooks.decode)(key, r)?),
                None => None,
            };
            (restored, Some(snapshots.downgrade()))
        }
    };
    let actor = WorkerActor { worker, persist };
    let worker_args = WorkerArgs {
        restored,
        handle: handle.clone(),
        generation: args.generation,
        snapshots,
        path: args.path,
    };
    match ractor::Actor::spawn_linked(None, actor, worker_args, args.supervisor).await {
        Ok((actor, _join)) => Ok(actor.get_cell()),
        Err(e) => {
            handle.erased().mark_down();
            Err(StartError::Spawn(match e {
                ractor::SpawnErr::StartupFailed(inner) => format!("init failed: {inner}"),
                other => other.to_string(),
            }))
        }
    }
}

struct WorkerActor<W: Worker> {
    worker: Arc<W>,
    persist: Option<Arc<PersistHooks<W::State>>>,
}

struct WorkerArgs<W: Worker> {
    restored: Option<W::State>,
    handle: ActorHandle<W::Msg>,
    generation: u64,
    snapshots: Option<WeakSnapshots>,
    path: String,
}

struct WorkerRun<W: Worker> {
    state: W::State,
    ctx: Context<W::Msg>,
    mailbox: Arc<MailboxCounter>,
    snapshots: Option<WeakSnapshots>,
    /// Messages handled since the last snapshot.
    unsaved: u32,
    path: String,
}

impl<W: Worker> WorkerActor<W> {
    /// Writes the state if it changed since the last snapshot (or `force`).
    async fn save(&self, run: &mut WorkerRun<W>, force: bool) -> Result<(), SnapshotError> {
        let (Some(hooks), Some(snapshots)) = (&self.persist, &run.snapshots) else {
            return Ok(());
        };
        if run.unsaved == 0 && !force {
            return Ok(());
        }
        let key = &hooks.cfg.key;
        let snapshots = snapshots.upgrade().ok_or_else(|| SnapshotError::Store {
            key: key.clone(),
            source: crate::snapshot::StoreError::Closed,
        })?;
        let payload = (hooks.encode)(&run.state).map_err(|reason| SnapshotError::Encode {
            key: key.clone(),
            reason,
        })?;
        snapshots
            .save(key, hooks.schema_version, &payload, hooks.cfg.durability)
            .await?;
        run.unsaved = 0;
        Ok(())
    }

    async fn after_message(&self, run: &mut WorkerRun<W>) -> Result<(), ActorProcessingErr> {
        if let Some(hooks) = &self.persist {
            run.unsaved = run.unsaved.saturating_add(1);
            let requested = std::mem::take(&mut run.ctx.snapshot_requested);
            let due = requested
                || match hooks.cfg.policy {
                    SnapshotPolicy::EveryMessage => true,
                    SnapshotPolicy::EveryN(n) => run.unsaved >= n,
                    SnapshotPolicy::Interval(_) | SnapshotPolicy::OnStop => false,
                };
            if due {
                // A failed write crashes the worker: its supervisor restarts it from the last
                // good snapshot and the held replies are dropped, so nothing unsaved is acked.
                self.save(run, false).await?;
            }
        }
        run.ctx.flush_replies();
        Ok(())
    }
}

impl<W: Worker> ractor::Actor for WorkerActor<W> {
    type Msg = Envelope<W::Msg>;
    type State = WorkerRun<W>;
    type Arguments = WorkerArgs<W>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: WorkerArgs<W>,
    ) -> Result<WorkerRun<W>, ActorProcessingErr> {
        let mailbox = Arc::new(MailboxCounter::default());
        // Installed before `init` so the worker can message itself from there; messages queue
        // until `init` returns.
        args.handle
            .install(myself.clone(), mailbox.clone(), args.generation);
        let mut ctx = Context {
            myself: args.handle,
            cell: myself.get_cell(),
            generation: args.generation,
            replies: Vec::new(),
            snapshot_requested: false,
        };
        let span = tracing::debug_span!("init", actor = %args.path, generation = args.generation);
        let state = self
            .worker
            .init(&mut ctx, args.restored)
            .instrument(span)
            .await?;
        ctx.flush_replies();
        if let Some(SnapshotPolicy::Interval(every)) = self.persist.as_ref().map(|p| p.cfg.policy) {
            // The timer task ends by itself when the actor is gone.
            let _timer = myself.send_interval(every, || Envelope::System(SystemMsg::SnapshotTick));
        }
        Ok(WorkerRun {
            state,
            ctx,
            mailbox,
            snapshots: args.snapshots,
            unsaved: 0,
            path: args.path,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        run: &mut WorkerRun<W>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Envelope::User(msg) => {
                run.mailbox.take_one();
                if let Some(hooks) = &self.persist
                    && let Some(snapshots) = run.snapshots.as_ref().and_then(WeakSnapshots::upgrade)
                {
                    // A process that lost the lease on this actor (another node runs it now)
                    // must not act for it: fail before handling, so the supervisor restarts it
                    // here only if the lease is free again.
                    snapshots.check_lease(&hooks.cfg.key)?;
                }
                let span = tracing::trace_span!("handle", actor = %run.path, generation = run.ctx.generation);
                self.worker
                    .handle(&mut run.ctx, msg, &mut run.state)
                    .instrument(span)
                    .await?;
                if self.persist.is_some() {
                    // Boxed: ractor moves the handler's future by value several times per
                    // message, so the snapshot path must not inflate it for every worker.
                    Box::pin(self.after_message(run)).await
                } else {
                    run.ctx.flush_replies();
                    Ok(())
                }
            }
            Envelope::System(SystemMsg::SnapshotTick) => Ok(Box::pin(self.save(run, false)).await?),
            Envelope::System(SystemMsg::RestartDue(_)) => Ok(()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        run: &mut WorkerRun<W>,
    ) -> Result<(), ActorProcessingErr> {
        self.worker.terminate(&mut run.ctx, &mut run.state).await;
        self.save(run, false).await?;
        run.ctx.flush_replies();
        Ok(())
    }
}
