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
//!
//! `aios-probe run --data-dir D --llm-url U` opens a node whose only model is `fake/m`, an
//! OpenAI-compatible server at `U`; defines a team (planner, researcher, writer) unless it
//! exists; starts a run unless one is already active (after a restart the node resumes it);
//! prints `RUN <id>`, one `EVENT <json>` line per run event, and `DONE <status> <answer>`
//! when the run ends. The orchestration crash test kills it mid-plan.
//!
//! `aios-probe remember --data-dir D` stores memories in namespace `probe` one small batch
//! after another, printing `ACK <id>` for every memory once its batch is acknowledged, until
//! killed. `aios-probe recall --data-dir D` reads ids from standard input and prints
//! `FOUND <id>` or `MISSING <id>` for each.

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
    /// Runs (or resumes) one orchestrated run against an OpenAI-compatible server.
    Run {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Base URL of the OpenAI-compatible server (127.0.0.1 in tests).
        #[arg(long)]
        llm_url: String,
    },
    /// Durable memory writes until killed, one `ACK <id>` line per acknowledged memory.
    Remember {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Reads memory ids from standard input; prints `FOUND <id>` or `MISSING <id>`.
    Recall {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
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

async fn run(data_dir: &std::path::Path, llm_url: String) -> anyhow::Result<()> {
    use aios::actors::agent::{AgentDef, AgentRole, Capability};
    use aios::actors::orchestration::RunSpec;
    use aios::actors::scheduler::config::{LlmConfig, ProviderConfig, ProviderKind};
    use aios::actors::scheduler::{RateLimits, SchedulerConfig};

    let mut config = RuntimeConfig::new(data_dir);
    config.llm = LlmConfig {
        providers: vec![ProviderConfig {
            name: "fake".into(),
            kind: ProviderKind::Openai,
            base_url: Some(llm_url),
            api_key_env: None,
            script_file: None,
            limits: RateLimits::default(),
            retry_attempts_max: 2,
            request_timeout: Duration::from_secs(60),
        }],
        models: vec![SchedulerConfig::new("fake", "m")],
    };
    let rt = Runtime::open(config)
        .await
        .with_context(|| format!("opening {}", data_dir.display()))?;
    let registry = rt.agent_system().registry();
    for (name, role, prompt, capability) in [
        (
            "planner",
            AgentRole::Planner,
            "You are the PLANNER.",
            "plan",
        ),
        (
            "researcher",
            AgentRole::Researcher,
            "You are the RESEARCHER.",
            "research",
        ),
        (
            "writer",
            AgentRole::Executor,
            "You are the WRITER.",
            "write",
        ),
    ] {
        if registry.get(name).is_none() {
            let mut def = AgentDef::new(name, role, "fake/m", prompt);
            def.capabilities = vec![Capability::named(capability)];
            registry.create(def).await?;
        }
    }
    let orch = rt.orchestrator();
    let mut events = orch.subscribe();
    let id = match orch.list(None, 10).await?.into_iter().next() {
        Some(existing) => existing.id,
        None => orch.start(RunSpec::new("Explain A and B")).await?,
    };
    emit(format_args!("RUN {id}"))?;
    let printer = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            let line = serde_json::to_string(&e.kind).unwrap_or_default();
            if emit(format_args!("EVENT {line}")).is_err() {
                return;
            }
        }
    });
    let state = orch.wait(&id, Duration::from_secs(120)).await?;
    printer.abort();
    emit(format_args!(
        "DONE {} {}",
        state.status.as_str(),
        state.answer.unwrap_or_default()
    ))?;
    rt.shutdown().await?;
    Ok(())
}

async fn remember(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use aios::actors::memory::{NamespaceSpec, NewMemory};
    let rt = Runtime::open(RuntimeConfig::new(data_dir))
        .await
        .with_context(|| format!("opening {}", data_dir.display()))?;
    let memory = rt.memory_store();
    if memory.namespace("probe").is_none() {
        memory
            .create_namespace(NamespaceSpec::new("probe", 3))
            .await?;
    }
    for round in 0u64.. {
        let batch = (0..4)
            .map(|i| NewMemory::text(format!("probe memory {round}-{i}")))
            .collect();
        for id in memory.remember("probe", batch).await? {
            emit(format_args!("ACK {id}"))?;
        }
    }
    Ok(())
}

async fn recall(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::io::BufRead;
    let rt = Runtime::open(RuntimeConfig::new(data_dir))
        .await
        .with_context(|| format!("opening {}", data_dir.display()))?;
    let mut ids = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if !line.trim().is_empty() {
            ids.push(line.trim().parse::<u64>().context("an id per line")?);
        }
    }
    let found: std::collections::HashSet<u64> = rt
        .memory_store()
        .get("probe", &ids)
        .await?
        .into_iter()
        .map(|h| h.id)
        .collect();
    for id in ids {
        let tag = if found.contains(&id) {
            "FOUND"
        } else {
            "MISSING"
        };
        emit(format_args!("{tag} {id}"))?;
    }
    rt.shutdown().await?;
    Ok(())
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
        Command::Run { data_dir, llm_url } => run(&data_dir, llm_url).await,
        Command::Remember { data_dir } => remember(&data_dir).await,
        Command::Recall { data_dir } => recall(&data_dir).await,
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
