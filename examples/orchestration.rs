//! A run on a node: the research team's planner turns a task into a plan, the steps go to
//! agents by capability (independent ones at the same time), a step marked for approval
//! waits for a person, and the planner composes the answer. Then a session with the team.
//!
//! ```text
//! cargo run --release --example orchestration                 # data in ./aios-runs-data
//! cargo run --release --example orchestration -- /tmp/runs    # data elsewhere
//! ```
//!
//! With no LLM configured the node uses the offline `scripted/demo` model (answers labelled
//! `[scripted]`). Kill it while the run waits for approval and start it again: the run is
//! resumed where it stopped.

#![allow(
    clippy::unwrap_used,
    reason = "examples stop at the first failure, with its message"
)]

use std::path::PathBuf;
use std::time::Duration;

use aios::actors::agent::builtin_templates;
use aios::actors::orchestration::{
    Decision, RunEventKind, RunSpec, RunStatus, SessionTarget, StepStatus,
};
use aios::{Runtime, RuntimeConfig};
use anyhow::Context as _;

const WAIT: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let data_dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("aios-runs-data"), PathBuf::from);
    let node = Runtime::open(RuntimeConfig::new(&data_dir))
        .await
        .with_context(|| format!("opening a node in {}", data_dir.display()))?;
    let agents = node.agent_system();
    if agents.registry().get("planner").is_none() {
        let team = builtin_templates()
            .into_iter()
            .find(|t| t.name == "research-team")
            .context("the research-team template ships with AIOS")?;
        team.instantiate(agents.registry(), None, None).await?;
    }
    let orch = node.orchestrator();

    let mut events = orch.subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            match e.kind {
                RunEventKind::Planned { steps } => println!("  planned: {steps:?}"),
                RunEventKind::StepStarted { step, agent, .. } => {
                    println!("  step {step} -> {agent}");
                }
                RunEventKind::StepDone { step, .. } => println!("  step {step} done"),
                RunEventKind::AwaitingApproval { step, reason } => {
                    println!("  step {step} awaits approval: {reason}");
                }
                RunEventKind::Finished { status, .. } => println!("  run {}", status.as_str()),
                _ => {}
            }
        }
    });

    // A run from an earlier, interrupted start is resumed by `Runtime::open`; otherwise start
    // one whose `write` steps need approval.
    let id = match orch
        .list(None, 100)
        .await?
        .into_iter()
        .find(|r| !r.status.is_finished())
    {
        Some(r) => {
            println!("resuming run {}", r.id);
            r.id
        }
        None => {
            let mut spec = RunSpec::new("Explain why the sky is blue, in two sentences.");
            spec.policy.approve_capabilities = vec!["write".into()];
            let id = orch.start(spec).await?;
            println!("started run {id}");
            id
        }
    };
    let state = orch
        .wait_until(&id, WAIT, |s| s.status == RunStatus::AwaitingApproval)
        .await?;
    for step in &state.steps {
        if matches!(step.status, StepStatus::AwaitingApproval { .. }) {
            println!("approving step {} as `example`", step.step.id);
            orch.decide(&id, &step.step.id, Decision::approve("example"))
                .await?;
        }
    }
    let state = orch.wait(&id, WAIT).await?;
    println!(
        "run {}: {} in {} steps, answer: {}",
        state.id,
        state.status.as_str(),
        state.steps.len(),
        state.answer.unwrap_or_default()
    );

    let session = orch
        .create_session(SessionTarget::Team { planner: None }, "example", "sky")
        .await?;
    let reply = orch
        .say(&session.id, "And why are sunsets red?", WAIT)
        .await?;
    println!("session {}: {}", session.id, reply.text);
    let history = orch.history(&session.id, 0, 100).await?;
    println!("the session's history holds {} entries", history.len());
    node.shutdown().await?;
    Ok(())
}
