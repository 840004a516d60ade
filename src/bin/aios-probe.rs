//! `aios-probe`: a helper process for crash tests and benchmarks (not part of the product).
//!
//! `aios-probe write --data-dir D --writers N` opens a node on `D`, starts `N` persistent
//! counters (durable, a snapshot after every message) and increments them as fast as it can
//! from `N` tasks, printing `ACK <writer> <value>` after each acknowledged increment, until it
//! is killed.
//!
//! `aios-probe read --data-dir D --writers N` opens the node, prints `STATE <writer> <value>`
//! for each counter, and shuts down cleanly.
//!
//! The crash test kills `write` with SIGKILL and checks that `read` finds every acknowledged
//! increment.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use aios::demo::{Counter, CounterMsg};
use aios::{ActorHandle, Persistence, Runtime, RuntimeConfig, WorkerSpec};
use anyhow::Context as _;
use clap::{Parser, Subcommand};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(about = "Crash-test helper for AIOS snapshots")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Durable increments until killed, one `ACK <writer> <value>` line per acknowledgement.
    Write {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Concurrent writers (each owns one counter), 1..=1024.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
        writers: u16,
    },
    /// Prints `STATE <writer> <value>` for every counter.
    Read {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Counters to read, 1..=1024.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
        writers: u16,
    },
}

async fn counters(rt: &Runtime, writers: u16) -> anyhow::Result<Vec<ActorHandle<CounterMsg>>> {
    let mut out = Vec::new();
    for i in 0..writers {
        let spec = WorkerSpec::new(format!("probe-{i}"), Counter)
            .persistent(Persistence::new(format!("probe/counter-{i}")));
        out.push(rt.services().start_worker(spec).await?);
    }
    Ok(out)
}

fn emit(line: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(line)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Write { data_dir, writers } => {
            let rt = Runtime::open(RuntimeConfig::new(&data_dir))
                .await
                .with_context(|| format!("opening {}", data_dir.display()))?;
            let mut tasks = Vec::new();
            for (i, counter) in counters(&rt, writers).await?.into_iter().enumerate() {
                tasks.push(tokio::spawn(async move {
                    loop {
                        let v = counter
                            .call(|r| CounterMsg::Add(1, r), CALL_TIMEOUT)
                            .await?;
                        emit(format_args!("ACK {i} {v}"))?;
                    }
                }));
            }
            for t in tasks {
                let r: anyhow::Result<()> = t.await?;
                r?;
            }
            Ok(())
        }
        Command::Read { data_dir, writers } => {
            let rt = Runtime::open(RuntimeConfig::new(&data_dir))
                .await
                .with_context(|| format!("opening {}", data_dir.display()))?;
            for (i, counter) in counters(&rt, writers).await?.iter().enumerate() {
                let v = counter.call(CounterMsg::Get, CALL_TIMEOUT).await?;
                emit(format_args!("STATE {i} {v}"))?;
            }
            rt.shutdown().await?;
            Ok(())
        }
    }
}
