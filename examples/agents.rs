//! Agents on a node: instantiate the shipped research-team template, ask its executor a
//! question that needs the calculator while streaming its events, and show what it cost.
//!
//! ```text
//! cargo run --release --example agents                    # data in ./aios-agents-data
//! cargo run --release --example agents -- /tmp/agents     # data elsewhere
//! ```
//!
//! With no LLM configured the node uses the offline `scripted/demo` model: its answers are
//! labelled `[scripted]`. Run it twice: the agents and their conversation come back.

#![allow(
    clippy::unwrap_used,
    reason = "examples stop at the first failure, with its message"
)]

use std::path::PathBuf;

use aios::actors::agent::{AgentEventKind, Task, builtin_templates};
use aios::actors::cost::CostScope;
use aios::actors::protocol::AgentId;
use aios::{Runtime, RuntimeConfig};
use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let data_dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("aios-agents-data"), PathBuf::from);
    let node = Runtime::open(RuntimeConfig::new(&data_dir))
        .await
        .with_context(|| format!("opening a node in {}", data_dir.display()))?;
    let agents = node.agent_system();

    if agents.registry().get("executor").is_none() {
        let team = builtin_templates()
            .into_iter()
            .find(|t| t.name == "research-team")
            .context("the research-team template ships with AIOS")?;
        let names = team.instantiate(agents.registry(), None, None).await?;
        println!("created agents from template {}: {names:?}", team.name);
    } else {
        println!(
            "agents restored: {:?}",
            agents
                .registry()
                .list()
                .iter()
                .map(|d| &d.name)
                .collect::<Vec<_>>()
        );
    }

    let executor = AgentId::main("executor");
    let mut events = agents.subscribe(&executor);
    let printer = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            match e.kind {
                AgentEventKind::ToolCall {
                    name, arguments, ..
                } => println!("  -> tool {name}({arguments})"),
                AgentEventKind::ToolResult { output, .. } => println!("  <- {output}"),
                AgentEventKind::Final { text } => {
                    println!("  final: {text}");
                    return;
                }
                AgentEventKind::Error { message, .. } => {
                    println!("  error: {message}");
                    return;
                }
                AgentEventKind::Compacted {
                    method, messages, ..
                } => println!("  ({messages} older messages {method} to fit the window)"),
                // Tokens, and kinds added later.
                _ => {}
            }
        }
    });
    println!("asking executor: what is 12 * (3 + 4)?");
    let out = agents
        .ask(&executor, Task::new("what is 12 * (3 + 4)?"))
        .await
        .context("the executor's task")?;
    printer.await?;
    println!(
        "answer after {} LLM calls and {} tool calls: {}",
        out.steps, out.tool_calls, out.text
    );

    let history = agents.history(&executor).await?;
    println!(
        "the executor's conversation now holds {} messages (it grows across runs)",
        history.len()
    );
    let who = agents.registry().who_can("research");
    println!(
        "who can research: {:?}",
        who.iter().map(|m| &m.agent).collect::<Vec<_>>()
    );
    let costs = node.costs().totals(&CostScope::Agent("executor".into()));
    println!(
        "executor totals: {} requests, {} tokens in, {} out, ${:.6}",
        costs.requests,
        costs.input_tokens,
        costs.output_tokens,
        costs.cost_usd()
    );
    for s in node.llm().stats() {
        println!(
            "scheduler {}: {} completed, in flight peak {}",
            s.model, s.completed, s.in_flight_peak
        );
    }
    node.shutdown().await?;
    Ok(())
}
