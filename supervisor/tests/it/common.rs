//! Test actors and helpers shared by the supervisor tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aios_supervisor::snapshot::{SledStore, Snapshots};
use aios_supervisor::{
    ActorHandle, Context, EventKind, ExitReason, PersistentWorker, Root, Strategy,
    SupervisionEvent, SupervisorSpec, TreeEnv, Worker, start_root,
};
use ractor::{ActorProcessingErr, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};

pub const WAIT: Duration = Duration::from_secs(10);

/// A shared, ordered record of what test actors did ("start a", "stop b").
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, entry: String) {
        self.0.lock().unwrap().push(entry);
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A worker that logs its starts and orderly stops and does what it is told.
pub struct Probe {
    pub id: String,
    pub log: Log,
}

pub enum ProbeMsg {
    /// Replies with the incarnation's generation.
    Ping(RpcReplyPort<u64>),
    /// The handler returns an error.
    Fail,
    /// The handler panics.
    Panic,
    /// Stops normally.
    Exit,
    /// Signals `entered`, then waits for `release` (holding the mailbox).
    Block {
        entered: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    },
    /// Signals `entered`, then never returns: only a kill ends it.
    Hang(oneshot::Sender<()>),
}

impl Probe {
    pub fn new(id: &str, log: &Log) -> Self {
        Self {
            id: id.into(),
            log: log.clone(),
        }
    }
}

impl Worker for Probe {
    type Msg = ProbeMsg;
    type State = ();

    async fn init(
        &self,
        _: &mut Context<ProbeMsg>,
        _: Option<()>,
    ) -> Result<(), ActorProcessingErr> {
        self.log.push(format!("start {}", self.id));
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &mut Context<ProbeMsg>,
        msg: ProbeMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProbeMsg::Ping(reply) => {
                let generation = ctx.generation();
                ctx.reply(reply, generation);
            }
            ProbeMsg::Fail => return Err(format!("{} told to fail", self.id).into()),
            ProbeMsg::Panic => panic!("{} told to panic", self.id),
            ProbeMsg::Exit => ctx.stop(),
            ProbeMsg::Block { entered, release } => {
                let _ = entered.send(());
                let _ = release.await;
            }
            ProbeMsg::Hang(entered) => {
                let _ = entered.send(());
                std::future::pending::<()>().await;
            }
        }
        Ok(())
    }

    async fn terminate(&self, _: &mut Context<ProbeMsg>, _: &mut ()) {
        self.log.push(format!("stop {}", self.id));
    }
}

/// A persistent counter with an optional blob (to make the state a given size).
pub struct Counter;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CounterState {
    pub n: u64,
    pub blob: Vec<u8>,
}

pub enum CounterMsg {
    Add(u64, RpcReplyPort<u64>),
    Get(RpcReplyPort<u64>),
    Panic,
}

impl Worker for Counter {
    type Msg = CounterMsg;
    type State = CounterState;

    async fn init(
        &self,
        _: &mut Context<CounterMsg>,
        restored: Option<CounterState>,
    ) -> Result<CounterState, ActorProcessingErr> {
        Ok(restored.unwrap_or_default())
    }

    async fn handle(
        &self,
        ctx: &mut Context<CounterMsg>,
        msg: CounterMsg,
        state: &mut CounterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CounterMsg::Add(k, reply) => {
                state.n += k;
                ctx.reply(reply, state.n);
            }
            CounterMsg::Get(reply) => ctx.reply(reply, state.n),
            CounterMsg::Panic => panic!("counter told to panic"),
        }
        Ok(())
    }
}

impl PersistentWorker for Counter {}

pub async fn add(c: &ActorHandle<CounterMsg>, k: u64) -> u64 {
    c.call(|r| CounterMsg::Add(k, r), WAIT).await.unwrap()
}

pub async fn get(c: &ActorHandle<CounterMsg>) -> u64 {
    c.call(CounterMsg::Get, WAIT).await.unwrap()
}

pub async fn ping(p: &ActorHandle<ProbeMsg>) -> u64 {
    p.call(ProbeMsg::Ping, WAIT).await.unwrap()
}

/// Sends `Block` and returns once the handler holds the mailbox; drop or send on the returned
/// sender to release it.
pub async fn block(p: &ActorHandle<ProbeMsg>) -> oneshot::Sender<()> {
    let (entered_tx, entered_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    p.cast(ProbeMsg::Block {
        entered: entered_tx,
        release: release_rx,
    })
    .unwrap();
    tokio::time::timeout(WAIT, entered_rx)
        .await
        .unwrap()
        .unwrap();
    release_tx
}

/// A one-for-one root with OTP's default intensity.
pub async fn plain_root(env: TreeEnv) -> Root {
    start_root(SupervisorSpec::new("root", Strategy::OneForOne), env)
        .await
        .unwrap()
}

/// A one-for-one root that tolerates 5 restarts a minute.
pub async fn tolerant_root(env: TreeEnv) -> Root {
    start_root(
        SupervisorSpec::new("root", Strategy::OneForOne).intensity(5, Duration::from_secs(60)),
        env,
    )
    .await
    .unwrap()
}

pub fn env_with_store() -> (TreeEnv, Snapshots) {
    let snapshots = Snapshots::new(Arc::new(SledStore::temporary().unwrap()));
    (TreeEnv::new(Some(snapshots.clone())), snapshots)
}

/// A subscription to a tree's events with a bounded wait.
pub struct Events(pub broadcast::Receiver<Arc<SupervisionEvent>>);

impl Events {
    pub fn new(env: &TreeEnv) -> Self {
        Self(env.events().subscribe())
    }

    /// Waits for the first event matching `pred`; panics after [`WAIT`].
    pub async fn wait(
        &mut self,
        what: &str,
        pred: impl Fn(&SupervisionEvent) -> bool,
    ) -> Arc<SupervisionEvent> {
        let rx = &mut self.0;
        let found = tokio::time::timeout(WAIT, async {
            loop {
                match rx.recv().await {
                    Ok(e) if pred(&e) => return e,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => panic!("event bus closed"),
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    pub async fn restarted(&mut self, path: &str) -> u64 {
        let e = self
            .wait(&format!("restart of {path}"), |e| {
                e.child.as_deref() == Some(path)
                    && matches!(e.kind, EventKind::ChildRestarted { .. })
            })
            .await;
        match e.kind {
            EventKind::ChildRestarted { generation } => generation,
            _ => unreachable!(),
        }
    }

    pub async fn exited(&mut self, path: &str) -> ExitReason {
        let e = self
            .wait(&format!("exit of {path}"), |e| {
                e.child.as_deref() == Some(path) && matches!(e.kind, EventKind::ChildExited { .. })
            })
            .await;
        match &e.kind {
            EventKind::ChildExited { reason } => reason.clone(),
            _ => unreachable!(),
        }
    }
}
