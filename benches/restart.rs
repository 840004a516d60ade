//! `BENCH restart`: a panic in a handler until the restarted actor answers a call with its
//! 1 KiB state restored from the snapshot store; 10,000 restarts by default
//! (`AIOS_BENCH_RESTARTS`), backoff off, driven from inside a task. The bare baseline is a
//! plain ractor parent that re-spawns a plain child from its `handle_supervisor_evt` and hands
//! the new `ActorRef` to the driver. Both measured in the same process, ours first after a
//! warm-up of both.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aios::demo::{Counter, CounterMsg};
use aios_supervisor::snapshot::{Durability, Persistence, SledStore, Snapshots};
use aios_supervisor::{Strategy, SupervisorSpec, TreeEnv, WorkerSpec, start_root};
use common::{bench_line, fmt1, fmt2, quantile_us};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::Notify;

const STATE_BYTES: usize = 1024;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

async fn ours(restarts: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = SledStore::open(dir.path(), &Default::default()).unwrap();
    let env = TreeEnv::new(Some(Snapshots::new(Arc::new(store))));
    let root = start_root(
        SupervisorSpec::new("bench", Strategy::OneForOne)
            .intensity(u32::MAX, Duration::from_secs(1)),
        env,
    )
    .await
    .unwrap();
    let persistence = Persistence::new("bench/restart").durability(Durability::Buffered);
    let c = root
        .supervisor()
        .start_worker(WorkerSpec::new("c", Counter).persistent(persistence))
        .await
        .unwrap();
    c.call(|r| CounterMsg::SetPayload(STATE_BYTES, r), CALL_TIMEOUT)
        .await
        .unwrap();
    let expected = c
        .call(|r| CounterMsg::Add(1, r), CALL_TIMEOUT)
        .await
        .unwrap();
    let mut samples = Vec::with_capacity(restarts);
    for _ in 0..restarts {
        let generation = c.generation().unwrap();
        let start = Instant::now();
        c.cast(CounterMsg::Crash).unwrap();
        c.wait_for_generation(generation + 1, CALL_TIMEOUT)
            .await
            .unwrap();
        let n = c.call(CounterMsg::Get, CALL_TIMEOUT).await.unwrap();
        samples.push(start.elapsed());
        assert_eq!(n, expected, "state restored");
    }
    root.shutdown(CALL_TIMEOUT).await.unwrap();
    samples
}

// The bare baseline: a parent that re-spawns its child and publishes the new ref.

enum ChildMsg {
    Crash,
    Get(RpcReplyPort<usize>),
}

// With ractor's `cluster` feature every message type implements `Message` explicitly.
#[cfg(feature = "cluster")]
impl ractor::Message for ChildMsg {}

struct BareChild;

impl Actor for BareChild {
    type Msg = ChildMsg;
    type State = Vec<u8>;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<ChildMsg>, _: ()) -> Result<Vec<u8>, ActorProcessingErr> {
        Ok(vec![0xa5; STATE_BYTES])
    }
    async fn handle(
        &self,
        _: ActorRef<ChildMsg>,
        msg: ChildMsg,
        state: &mut Vec<u8>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ChildMsg::Crash => panic!("bare child told to crash"),
            ChildMsg::Get(reply) => {
                let _ = reply.send(state.len());
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Slot {
    current: Mutex<Option<ActorRef<ChildMsg>>>,
    changed: Notify,
}

struct BareParent(Arc<Slot>);

impl Actor for BareParent {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, myself: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        let (child, _) = Actor::spawn_linked(None, BareChild, (), myself.get_cell()).await?;
        *self.0.current.lock().unwrap() = Some(child);
        Ok(())
    }
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        evt: SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(..) = evt {
            let (child, _) = Actor::spawn_linked(None, BareChild, (), myself.get_cell()).await?;
            *self.0.current.lock().unwrap() = Some(child);
            self.0.changed.notify_waiters();
        }
        Ok(())
    }
}

async fn bare(restarts: usize) -> Vec<Duration> {
    let slot = Arc::new(Slot::default());
    let (parent, join) = Actor::spawn(None, BareParent(slot.clone()), ())
        .await
        .unwrap();
    let mut samples = Vec::with_capacity(restarts);
    for _ in 0..restarts {
        let old = slot.current.lock().unwrap().clone().unwrap();
        let start = Instant::now();
        old.cast(ChildMsg::Crash).unwrap();
        let new = loop {
            let changed = slot.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let current = slot.current.lock().unwrap().clone().unwrap();
            if current.get_id() != old.get_id() {
                break current;
            }
            changed.await;
        };
        let len = ractor::call_t!(new, ChildMsg::Get, 10_000).unwrap();
        samples.push(start.elapsed());
        assert_eq!(len, STATE_BYTES);
    }
    parent.stop(None);
    join.await.unwrap();
    samples
}

fn main() {
    // Thousands of deliberate panics: keep the default hook from printing each one.
    std::panic::set_hook(Box::new(|_| {}));
    let restarts = common::env_count("AIOS_BENCH_RESTARTS", 10_000) as usize;
    let rt = common::runtime();
    let (mut o, mut b) = rt.block_on(async {
        tokio::spawn(async move {
            // Warm-up: allocator, sled cache, code paths.
            ours(500).await;
            bare(500).await;
            (ours(restarts).await, bare(restarts).await)
        })
        .await
        .unwrap()
    });
    let (p50, p99) = (quantile_us(&mut o, 0.50), quantile_us(&mut o, 0.99));
    let (bp50, bp99) = (quantile_us(&mut b, 0.50), quantile_us(&mut b, 0.99));
    bench_line(
        "restart",
        &[
            ("p50_us", fmt1(p50)),
            ("p99_us", fmt1(p99)),
            ("bare_p50_us", fmt1(bp50)),
            ("bare_p99_us", fmt1(bp99)),
            ("ratio_p99", fmt2(p99 / bp99)),
        ],
    );
    bench_line(
        "restart_detail",
        &[
            ("restarts", restarts.to_string()),
            ("state_bytes", STATE_BYTES.to_string()),
            ("p999_us", fmt1(quantile_us(&mut o, 0.999))),
            ("bare_p999_us", fmt1(quantile_us(&mut b, 0.999))),
        ],
    );
}
