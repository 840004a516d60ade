//! `BENCH snapshot_durable writers=<1|16|256>` and `BENCH snapshot_buffered`: persistent
//! counters (a snapshot after every message), each driven by its own task with sequential
//! calls; a call returns only once its snapshot is written (durable: on disk, group commit
//! shared by concurrent writers). Each configuration runs for 2 s by default
//! (`AIOS_BENCH_SNAPSHOT_MS`) on a real directory under the target dir.
//!
//! Baselines in the same run: one durable writer (which flushes alone), and a plain
//! write+fsync loop on a file (`snapshot_baseline fsync_per_s`).
//!
//! `BENCH snapshot_store backend=<sled|postgres> writers=16 per_s=..`: the embedded store and
//! the cluster's PostgreSQL store (`AIOS_TEST_PG_URL`, default the local server; skipped with
//! a message when there is none), 16 durable writers each; then
//! `BENCH snapshot_store_buffered backend=postgres writers=16 per_s=.. ratio_vs_durable=..`,
//! the same 16 writers with buffered snapshots (asynchronous commits) against durable ones.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aios::demo::{Counter, CounterMsg};
use aios_supervisor::snapshot::{
    Durability, Persistence, PostgresOptions, PostgresStore, SledOptions, SledStore, SnapshotStore,
    Snapshots,
};
use aios_supervisor::{SupervisorSpec, TreeEnv, WorkerSpec, start_root};
use common::{bench_line, fmt0, fmt1, fmt2, per_s};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

struct Run {
    per_s: f64,
    writes: u64,
    fsyncs: u64,
}

async fn drive(writers: usize, durability: Durability, duration: Duration) -> Run {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    let fsyncs_before = store.group_commits();
    let (per_s, writes) = drive_on(Arc::new(store.clone()), writers, durability, duration).await;
    Run {
        per_s,
        writes,
        fsyncs: store.group_commits() - fsyncs_before,
    }
}

/// Writes per second and writes done by `writers` persistent counters on `store`.
async fn drive_on(
    store: Arc<dyn SnapshotStore>,
    writers: usize,
    durability: Durability,
    duration: Duration,
) -> (f64, u64) {
    let env = TreeEnv::new(Some(Snapshots::new(store)));
    let root = start_root(SupervisorSpec::dynamic("bench"), env)
        .await
        .unwrap();
    let mut counters = Vec::new();
    for i in 0..writers {
        let persistence = Persistence::new(format!("bench/c{i}")).durability(durability);
        let spec = WorkerSpec::new(format!("c{i}"), Counter).persistent(persistence);
        counters.push(root.supervisor().start_worker(spec).await.unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in counters {
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                c.call(|r| CounterMsg::Add(1, r), CALL_TIMEOUT)
                    .await
                    .unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    root.shutdown(CALL_TIMEOUT).await.unwrap();
    let writes = done.load(Ordering::Relaxed);
    (per_s(writes, elapsed), writes)
}

/// A plain write + fsync loop on one file: what one durable stream costs on this disk.
fn fsync_baseline(duration: Duration) -> f64 {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut f = std::fs::File::create(dir.path().join("fsync")).unwrap();
    let buf = [0u8; 64];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    per_s(n, start.elapsed())
}

fn main() {
    let duration = Duration::from_millis(common::env_count("AIOS_BENCH_SNAPSHOT_MS", 2_000));
    let fsync = fsync_baseline(duration);
    bench_line("snapshot_baseline", &[("fsync_per_s", fmt0(fsync))]);
    let rt = common::runtime();
    let mut durable = Vec::new();
    for writers in [1usize, 16, 256] {
        let run = rt.block_on(drive(writers, Durability::Durable, duration));
        bench_line(
            "snapshot_durable",
            &[("writers", writers.to_string()), ("per_s", fmt0(run.per_s))],
        );
        durable.push((writers, run));
    }
    // The cluster's shared store against the embedded one, 16 durable writers each.
    let sled16 = durable[1].1.per_s;
    bench_line(
        "snapshot_store",
        &[
            ("backend", "sled".into()),
            ("writers", "16".into()),
            ("per_s", fmt0(sled16)),
        ],
    );
    let url = std::env::var("AIOS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let ns = format!("bench{}", std::process::id());
    match rt.block_on(PostgresStore::connect(
        PostgresOptions::new(&url).namespace(ns),
    )) {
        Ok(pg) => {
            let (pg_per_s, _) = rt.block_on(drive_on(
                Arc::new(pg.clone()),
                16,
                Durability::Durable,
                duration,
            ));
            let (pg_buffered_per_s, _) = rt.block_on(drive_on(
                Arc::new(pg.clone()),
                16,
                Durability::Buffered,
                duration,
            ));
            let _ = rt.block_on(pg.drop_tables());
            bench_line(
                "snapshot_store",
                &[
                    ("backend", "postgres".into()),
                    ("writers", "16".into()),
                    ("per_s", fmt0(pg_per_s)),
                    ("ratio_vs_sled", fmt2(pg_per_s / sled16)),
                ],
            );
            bench_line(
                "snapshot_store_buffered",
                &[
                    ("backend", "postgres".into()),
                    ("writers", "16".into()),
                    ("per_s", fmt0(pg_buffered_per_s)),
                    ("ratio_vs_durable", fmt2(pg_buffered_per_s / pg_per_s)),
                ],
            );
        }
        Err(e) => {
            eprintln!("snapshot_store backend=postgres skipped: no PostgreSQL at {url} ({e})")
        }
    }
    let buffered = rt.block_on(drive(256, Durability::Buffered, duration));
    bench_line("snapshot_buffered", &[("per_s", fmt0(buffered.per_s))]);
    let one = durable[0].1.per_s;
    let many = &durable[2].1;
    bench_line(
        "snapshot_group_commit",
        &[
            ("ratio_256_vs_1", fmt1(many.per_s / one)),
            (
                "writes_per_fsync_256",
                fmt1(many.writes as f64 / many.fsyncs.max(1) as f64),
            ),
            ("buffered_writers", "256".into()),
        ],
    );
}
