//! Quickstart: open a node, spawn a supervised persistent actor, crash it, watch it come back
//! with its state, and stop in order. Run it twice: the count continues where it stopped.
//!
//! ```text
//! cargo run --release --example quickstart               # data in ./aios-data
//! cargo run --release --example quickstart -- /tmp/aios  # data elsewhere
//! ```
//!
//! Prints the tree, the supervision events as they happen, and the counter before and after a
//! crash. Set `RUST_LOG=info` (or `debug`) to see the tracing events too.

#![allow(
    clippy::unwrap_used,
    reason = "examples stop at the first failure, with its message"
)]

use std::path::PathBuf;
use std::time::Duration;

use aios::demo::{Counter, CounterMsg};
use aios::{Persistence, Runtime, RuntimeConfig, WorkerSpec};
use anyhow::Context as _;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let data_dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("aios-data"), PathBuf::from);

    let rt = Runtime::open(RuntimeConfig::new(&data_dir))
        .await
        .with_context(|| format!("opening the node in {}", data_dir.display()))?;
    println!("node open, data in {}", data_dir.display());

    // Print every supervision event from now on.
    let mut events = rt.events();
    let printer = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            let who = e.child.as_deref().unwrap_or(e.supervisor.as_str());
            println!("  event: {who}: {:?}", e.kind);
        }
    });

    // A persistent actor under the agents supervisor: its state is snapshotted durably after
    // every message, and a reply is only sent once the snapshot is on disk.
    let spec = WorkerSpec::new("visits", Counter).persistent(Persistence::new("quickstart/visits"));
    let visits = rt.agents().start_worker(spec).await?;
    let n = visits.call(|r| CounterMsg::Add(1, r), WAIT).await?;
    println!("this quickstart has run {n} time(s) on this data dir");

    println!("the tree:");
    for sup in rt.root().which_children().await? {
        println!("  {} ({:?})", sup.path, sup.status);
        if let Some(sub) = rt.registry().lookup_supervisor(&sup.path) {
            for child in sub.which_children().await? {
                println!(
                    "    {} {:?}, mailbox {}",
                    child.path, child.status, child.mailbox_len
                );
            }
        }
    }

    println!("crashing agents/visits ...");
    let generation = visits.generation().unwrap_or(1);
    visits.cast(CounterMsg::Crash).ok();
    visits.wait_for_generation(generation + 1, WAIT).await?;
    let after = visits.call(CounterMsg::Get, WAIT).await?;
    println!(
        "restarted as generation {}, count still {after}",
        generation + 1
    );
    assert_eq!(after, n, "the snapshot restored the count");

    rt.shutdown().await?;
    printer.abort();
    println!("stopped in order; run again to see the count go up");
    Ok(())
}
