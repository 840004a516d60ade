//! `BENCH spawn`: 100,000 idle actors (`AIOS_BENCH_SPAWN_N`): supervised ones started under a
//! dynamic supervisor with `start_children` in batches of 1,000, versus bare ractor actors
//! spawned one by one; each kind in a fresh process (this binary re-runs itself). Reports the
//! time per actor and the resident memory per actor (growth of RSS over the spawn, from
//! `/proc/self/statm`). `BENCH spawn_detail` adds supervised actors started one `start_child`
//! call at a time, where a round trip to the supervisor per child dominates.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

mod common;

use std::process::Command;
use std::time::Instant;

use aios_supervisor::{Context, SupervisorSpec, TreeEnv, Worker, WorkerSpec, start_root};
use common::{bench_line, fmt0, fmt2};
use ractor::{Actor, ActorProcessingErr, ActorRef};

const CHILD_ENV: &str = "AIOS_BENCH_SPAWN_CHILD";
const BATCH: usize = 1_000;

struct Idle;

impl Worker for Idle {
    type Msg = ();
    type State = ();
    async fn init(&self, _: &mut Context<()>, _: Option<()>) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: &mut Context<()>,
        _: (),
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

impl Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("reading /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm has a resident field");
    pages * 4096
}

/// Runs in the child process: spawns `n` actors of `kind`, prints `per_actor_us bytes`.
fn child(kind: &str, n: usize) {
    let rt = common::runtime();
    let mode = kind.to_owned();
    let (elapsed, bytes) = rt.block_on(async {
        tokio::spawn(async move {
            if mode != "bare" {
                let root = start_root(SupervisorSpec::dynamic("bench"), TreeEnv::new(None))
                    .await
                    .unwrap();
                let sup = root.supervisor().clone();
                // Warm-up, then measure.
                sup.start_worker(WorkerSpec::new("warm", Idle))
                    .await
                    .unwrap();
                let before = rss_bytes();
                let start = Instant::now();
                let mut handles = Vec::with_capacity(n);
                if mode == "batched" {
                    for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
                        let mut specs = Vec::with_capacity(chunk.len());
                        for i in chunk {
                            let (spec, handle) = WorkerSpec::new(format!("a{i}"), Idle).build();
                            specs.push(spec);
                            handles.push(handle);
                        }
                        for result in sup.start_children(specs).await.unwrap() {
                            result.unwrap();
                        }
                    }
                } else {
                    for i in 0..n {
                        handles.push(
                            sup.start_worker(WorkerSpec::new(format!("a{i}"), Idle))
                                .await
                                .unwrap(),
                        );
                    }
                }
                let elapsed = start.elapsed();
                let grown = rss_bytes().saturating_sub(before);
                std::mem::forget(root);
                (elapsed, grown)
            } else {
                let (warm, _) = Actor::spawn(None, Idle, ()).await.unwrap();
                let before = rss_bytes();
                let start = Instant::now();
                let mut refs = Vec::with_capacity(n);
                for _ in 0..n {
                    refs.push(Actor::spawn(None, Idle, ()).await.unwrap());
                }
                let elapsed = start.elapsed();
                let grown = rss_bytes().saturating_sub(before);
                std::mem::forget((warm, refs));
                (elapsed, grown)
            }
        })
        .await
        .unwrap()
    });
    println!(
        "{} {}",
        elapsed.as_secs_f64() * 1e6 / n as f64,
        bytes as f64 / n as f64
    );
    // The actors are abandoned with the process: exiting is the fastest cleanup.
    std::process::exit(0);
}

fn measure(kind: &str, n: usize) -> (f64, f64) {
    let exe = std::env::current_exe().expect("locating the benchmark binary");
    let out = Command::new(exe)
        .env(CHILD_ENV, kind)
        .env("AIOS_BENCH_SPAWN_N", n.to_string())
        .output()
        .expect("running the spawn child");
    assert!(
        out.status.success(),
        "spawn child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.split_whitespace().map(|p| p.parse::<f64>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

fn main() {
    let n = common::env_count("AIOS_BENCH_SPAWN_N", 100_000) as usize;
    if let Ok(kind) = std::env::var(CHILD_ENV) {
        child(&kind, n);
        return;
    }
    let (bare_us, bare_bytes) = measure("bare", n);
    let (ours_us, ours_bytes) = measure("batched", n);
    let (single_us, single_bytes) = measure("single", n);
    bench_line(
        "spawn",
        &[
            ("actors", n.to_string()),
            ("per_actor_us", fmt2(ours_us)),
            ("bytes_per_actor", fmt0(ours_bytes)),
            ("bare_per_actor_us", fmt2(bare_us)),
            ("bare_bytes_per_actor", fmt0(bare_bytes)),
        ],
    );
    bench_line(
        "spawn_detail",
        &[
            ("batch", BATCH.to_string()),
            ("time_ratio", fmt2(ours_us / bare_us)),
            ("memory_ratio", fmt2(ours_bytes / bare_bytes)),
            ("one_by_one_per_actor_us", fmt2(single_us)),
            ("one_by_one_bytes_per_actor", fmt0(single_bytes)),
        ],
    );
}
