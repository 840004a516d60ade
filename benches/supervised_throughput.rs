//! `BENCH supervised_throughput`: one producer casts N messages (1M by default,
//! `AIOS_BENCH_THROUGHPUT_N` to change) to one actor, timed until the actor has handled the
//! last. Ours (a supervised worker, snapshots off, mailbox counted) against a bare ractor
//! actor and a tokio unbounded mpsc channel, in the same process, alternating, best of 3.
//! `ratio` = ours / bare ractor.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aios_supervisor::{Context, Strategy, SupervisorSpec, TreeEnv, Worker, WorkerSpec, start_root};
use common::{bench_line, fmt0, fmt2, per_s};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

struct Sink {
    n: u64,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

impl Sink {
    /// Counts a message; signals when the last one arrived.
    fn take(&self, seen: &mut u64, msg: u64) {
        *seen += std::hint::black_box(msg);
        if *seen == self.n
            && let Some(tx) = self.done.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    }
}

impl Worker for Sink {
    type Msg = u64;
    type State = u64;
    async fn init(&self, _: &mut Context<u64>, _: Option<u64>) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(
        &self,
        _: &mut Context<u64>,
        msg: u64,
        seen: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        self.take(seen, msg);
        Ok(())
    }
}

impl Actor for Sink {
    type Msg = u64;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<u64>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(
        &self,
        _: ActorRef<u64>,
        msg: u64,
        seen: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        self.take(seen, msg);
        Ok(())
    }
}

fn sink(n: u64) -> (Sink, oneshot::Receiver<()>) {
    let (tx, rx) = oneshot::channel();
    (
        Sink {
            n,
            done: Mutex::new(Some(tx)),
        },
        rx,
    )
}

async fn ours(n: u64) -> Duration {
    let root = start_root(
        SupervisorSpec::new("bench", Strategy::OneForOne),
        TreeEnv::new(None),
    )
    .await
    .unwrap();
    let (s, done) = sink(n);
    // The bound is set above N so that ours queues everything, like the unbounded baselines.
    let spec = WorkerSpec::new("sink", s).mailbox_len_max(n as usize + 1);
    let h = root.supervisor().start_worker(spec).await.unwrap();
    let start = Instant::now();
    tokio::spawn(async move {
        for _ in 0..n {
            h.cast(1).unwrap();
        }
    });
    done.await.unwrap();
    let elapsed = start.elapsed();
    root.shutdown(Duration::from_secs(10)).await.unwrap();
    elapsed
}

async fn bare(n: u64) -> Duration {
    let (s, done) = sink(n);
    let (actor, join) = Actor::spawn(None, s, ()).await.unwrap();
    let start = Instant::now();
    let a = actor.clone();
    tokio::spawn(async move {
        for _ in 0..n {
            a.cast(1).unwrap();
        }
    });
    done.await.unwrap();
    let elapsed = start.elapsed();
    actor.stop(None);
    join.await.unwrap();
    elapsed
}

async fn mpsc(n: u64) -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let consumer = tokio::spawn(async move {
        let mut seen = 0;
        while let Some(m) = rx.recv().await {
            seen += std::hint::black_box(m);
            if seen == n {
                break;
            }
        }
    });
    let start = Instant::now();
    tokio::spawn(async move {
        for _ in 0..n {
            tx.send(1).unwrap();
        }
    });
    consumer.await.unwrap();
    start.elapsed()
}

fn main() {
    let n = common::env_count("AIOS_BENCH_THROUGHPUT_N", 1_000_000);
    let rt = common::runtime();
    let (mut best_ours, mut best_bare, mut best_mpsc) =
        (Duration::MAX, Duration::MAX, Duration::MAX);
    rt.block_on(async {
        for _ in 0..3 {
            best_bare = best_bare.min(bare(n).await);
            best_ours = best_ours.min(ours(n).await);
            best_mpsc = best_mpsc.min(mpsc(n).await);
        }
    });
    let (o, b, m) = (
        per_s(n, best_ours),
        per_s(n, best_bare),
        per_s(n, best_mpsc),
    );
    bench_line(
        "supervised_throughput",
        &[
            ("ours_per_s", fmt0(o)),
            ("bare_ractor_per_s", fmt0(b)),
            ("tokio_mpsc_per_s", fmt0(m)),
            ("ratio", fmt2(o / b)),
        ],
    );
}
