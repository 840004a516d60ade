//! Orchestration end to end against the fake provider: planning (and re-planning after an
//! invalid plan), assignment by capability, concurrent independent steps, reassignment of a
//! failed step, composing, approval across a restart, cancellation, and sessions.

use std::sync::Arc;
use std::time::Duration;

use aios_actors::agent::{AgentDef, AgentRole, AgentSystemConfig, Capability};
use aios_actors::llm::scripted::Script;
use aios_actors::orchestration::{
    Decision, EntryRole, OrchestrationError, Plan, PlanStep, RunEventKind, RunSpec, RunStatus,
    SessionTarget, StepStatus,
};
use aios_testkit::{FakeConfig, FakeLlm, FakeReply};
use serde_json::Value;
use tokio::sync::Notify;

use crate::common::{AgentEnv, KEY, agent_env};

const WAIT: Duration = Duration::from_secs(30);

async fn fake() -> FakeLlm {
    FakeLlm::start(FakeConfig {
        api_key: Some(KEY.into()),
        ..FakeConfig::default()
    })
    .await
}

async fn env(dir: &std::path::Path, fake: &FakeLlm) -> AgentEnv {
    agent_env(
        dir,
        &fake.base_url(),
        Script::default(),
        AgentSystemConfig::default(),
    )
    .await
}

fn agent(name: &str, role: AgentRole, prompt: &str, capability: &str) -> AgentDef {
    let mut d = AgentDef::new(name, role, "fake/m", prompt);
    d.capabilities = vec![Capability::named(capability).with("cost_class", "low")];
    d
}

/// A planner, a researcher, a second researcher and a writer, all on the fake model.
async fn team(env: &AgentEnv) {
    for d in [
        agent(
            "planner",
            AgentRole::Planner,
            "You are the PLANNER.",
            "plan",
        ),
        agent(
            "researcher",
            AgentRole::Researcher,
            "You are RESEARCHER-1.",
            "research",
        ),
        agent(
            "researcher2",
            AgentRole::Researcher,
            "You are RESEARCHER-2.",
            "research",
        ),
        agent(
            "writer",
            AgentRole::Executor,
            "You are the WRITER.",
            "write",
        ),
    ] {
        env.system.registry().create(d).await.expect("create");
    }
}

fn system_of(req: &Value) -> String {
    req["messages"][0]["content"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn last_user(req: &Value) -> String {
    req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string()
}

const PLAN: &str = r#"{"steps": [
  {"id": "a", "description": "find fact A", "capability": "research", "depends_on": []},
  {"id": "b", "description": "find fact B", "capability": "research", "depends_on": []},
  {"id": "c", "description": "write it up", "capability": "write", "depends_on": ["a", "b"]}
]}"#;

/// Plans with [`PLAN`], answers steps with `fact A` / `fact B` / `text from <deps>`, and
/// composes with `FINAL`.
fn answer(req: &Value) -> FakeReply {
    let system = system_of(req);
    let user = last_user(req);
    if user.contains("Every step of the plan is done") {
        FakeReply::Text("FINAL".into())
    } else if system.contains("PLANNER") {
        FakeReply::Text(PLAN.into())
    } else if user.contains("Your step (a)") {
        FakeReply::Text("fact A".into())
    } else if user.contains("Your step (b)") {
        FakeReply::Text("fact B".into())
    } else {
        FakeReply::Text(format!("text from [{user}]"))
    }
}

fn requests_with(fake: &FakeLlm, needle: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.body.to_string().contains(needle))
        .count()
}

#[tokio::test]
async fn a_run_plans_runs_independent_steps_together_and_composes() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("dir");
    let env = env(dir.path(), &fake).await;
    team(&env).await;
    // Steps a and b are held until both are in flight: they run concurrently or never.
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    fake.set_default(FakeReply::Dynamic(Arc::new(move |req| {
        let user = last_user(req);
        if user.contains("Your step (a)") || user.contains("Your step (b)") {
            FakeReply::Gated(g.clone(), Box::new(answer(req)))
        } else {
            answer(req)
        }
    })));
    let mut events = env.orch.subscribe();
    let id = env
        .orch
        .start(RunSpec::new("Explain A and B"))
        .await
        .expect("start");
    fake.wait_in_flight(2).await;
    gate.notify_one();
    gate.notify_one();
    let state = env.orch.wait(&id, WAIT).await.expect("finished");
    assert_eq!(state.status, RunStatus::Succeeded, "{state:?}");
    assert_eq!(state.answer.as_deref(), Some("FINAL"));
    assert_eq!(state.planner.as_deref(), Some("planner"));
    assert_eq!(state.steps.len(), 3);
    let c = state.step("c").expect("step c");
    assert_eq!(c.agent.as_deref(), Some("writer"));
    let c_out = c.output.as_deref().expect("c output");
    assert!(
        c_out.contains("fact A") && c_out.contains("fact B"),
        "{c_out}"
    );
    assert_eq!(
        state.step("a").and_then(|s| s.agent.as_deref()),
        Some("researcher")
    );
    assert!(state.steps.iter().all(|s| s.attempts == 1));
    // One plan, three steps, one composition: nothing was called twice.
    assert_eq!(fake.request_count(), 5);
    assert!(fake.max_in_flight() >= 2);
    // The planner was asked in JSON mode and told which capabilities exist.
    let plan_req = &fake.requests()[0].body;
    assert_eq!(plan_req["response_format"]["type"], "json_object");
    assert!(last_user(plan_req).contains("research, write"));

    let mut kinds = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.run == id {
            kinds.push(e.kind);
        }
    }
    assert!(matches!(&kinds[0], RunEventKind::Planned { steps } if steps.len() == 3));
    let started = kinds
        .iter()
        .filter(|k| matches!(k, RunEventKind::StepStarted { .. }))
        .count();
    assert_eq!(started, 3);
    assert!(kinds.contains(&RunEventKind::Composing));
    assert!(matches!(
        kinds.last(),
        Some(RunEventKind::Finished {
            status: RunStatus::Succeeded,
            ..
        })
    ));
    // A finished run is still readable, and listed.
    let listed = env.orch.list(None, 10).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    env.close().await;
}

#[tokio::test]
async fn an_invalid_plan_is_sent_back_and_a_failed_step_is_reassigned() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("dir");
    let env = env(dir.path(), &fake).await;
    team(&env).await;
    fake.set_default(FakeReply::Dynamic(Arc::new(|req| {
        let system = system_of(req);
        let user = last_user(req);
        if system.contains("PLANNER") && user.contains("Make a plan") {
            // A cycle: rejected, with the reason sent back to the planner.
            FakeReply::Text(
                r#"{"steps":[{"id":"a","description":"x","capability":"research","depends_on":["b"]},
                   {"id":"b","description":"y","capability":"research","depends_on":["a"]}]}"#
                    .into(),
            )
        } else if system.contains("PLANNER") && user.contains("That plan was invalid") {
            FakeReply::Text(
                r#"{"steps":[{"id":"a","description":"find fact A","capability":"research"}]}"#
                    .into(),
            )
        } else if system.contains("RESEARCHER-1") {
            FakeReply::Status {
                status: 400,
                retry_after: None,
                body: r#"{"error":{"message":"researcher one is broken"}}"#.into(),
            }
        } else {
            answer(req)
        }
    })));
    let mut spec = RunSpec::new("Find A");
    spec.policy.compose = false;
    let mut events = env.orch.subscribe();
    let id = env.orch.start(spec).await.expect("start");
    let state = env.orch.wait(&id, WAIT).await.expect("finished");
    assert_eq!(state.status, RunStatus::Succeeded, "{state:?}");
    assert_eq!(state.plan_attempts, 2);
    // Without composing, the answer is the output of the last step.
    assert_eq!(state.answer.as_deref(), Some("fact A"));
    let a = state.step("a").expect("a");
    assert_eq!(a.agent.as_deref(), Some("researcher2"));
    assert_eq!(a.failed_agents, vec!["researcher".to_string()]);
    assert_eq!(a.attempts, 2);
    let mut rejected = false;
    let mut failed_then_retried = false;
    while let Ok(e) = events.try_recv() {
        match e.kind {
            RunEventKind::PlanRejected { reason } => rejected = reason.contains("cycle"),
            RunEventKind::StepFailed {
                agent, retry, kind, ..
            } => failed_then_retried = agent == "researcher" && retry && kind == "bad_request",
            _ => {}
        }
    }
    assert!(rejected && failed_then_retried);
    assert_eq!(requests_with(&fake, "That plan was invalid"), 1);
    env.close().await;
}

#[tokio::test]
async fn a_step_that_fails_every_attempt_fails_the_run_with_the_reason() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("dir");
    let env = env(dir.path(), &fake).await;
    team(&env).await;
    fake.set_default(FakeReply::Status {
        status: 400,
        retry_after: None,
        body: r#"{"error":{"message":"nope"}}"#.into(),
    });
    let mut spec = RunSpec::new("Find A");
    spec.plan = Some(Plan {
        steps: vec![PlanStep::new("a", "research", "find A")],
    });
    spec.policy.step_attempts_max = 2;
    let id = env.orch.start(spec).await.expect("start");
    let state = env.orch.wait(&id, WAIT).await.expect("finished");
    assert_eq!(state.status, RunStatus::Failed);
    let error = state.error.expect("error");
    assert!(
        error.contains("step \"a\" failed after 2 attempts"),
        "{error}"
    );
    assert_eq!(state.steps[0].status, StepStatus::Failed);
    // Both researchers were tried once.
    assert_eq!(fake.request_count(), 2);

    // Invalid specs are refused up front.
    let mut bad = RunSpec::new("x");
    bad.policy.parallel_max = 0;
    assert!(
        matches!(env.orch.start(bad).await, Err(OrchestrationError::Invalid(m)) if m.contains("parallel_max"))
    );
    let mut bad = RunSpec::new("x");
    bad.planner = Some("nobody".into());
    assert!(
        matches!(env.orch.start(bad).await, Err(OrchestrationError::Invalid(m)) if m.contains("nobody"))
    );
    assert!(matches!(
        env.orch.start(RunSpec::new("  ")).await,
        Err(OrchestrationError::Invalid(_))
    ));
    assert!(matches!(
        env.orch.get("not-an-id").await,
        Err(OrchestrationError::Invalid(_))
    ));
    env.close().await;
}

#[tokio::test]
async fn approval_pauses_a_run_across_a_restart() {
    let fake = fake().await;
    fake.set_default(FakeReply::Dynamic(Arc::new(answer)));
    let dir = tempfile::tempdir().expect("dir");
    let plan = Plan {
        steps: vec![
            PlanStep::new("a", "research", "find fact A"),
            PlanStep::new("c", "write", "publish it")
                .after(&["a"])
                .with_approval(),
        ],
    };
    let (approved, denied) = {
        let env = env(dir.path(), &fake).await;
        team(&env).await;
        let mut spec = RunSpec::new("Publish A");
        spec.plan = Some(plan.clone());
        let approved = env.orch.start(spec.clone()).await.expect("start");
        let denied = env.orch.start(spec).await.expect("start");
        for id in [&approved, &denied] {
            let s = env
                .orch
                .wait_until(id, WAIT, |s| s.status == RunStatus::AwaitingApproval)
                .await
                .expect("paused");
            assert_eq!(s.status, RunStatus::AwaitingApproval);
            assert!(matches!(
                &s.step("c").expect("c").status,
                StepStatus::AwaitingApproval { reason } if reason.contains("approval")
            ));
            assert_eq!(s.step("a").expect("a").status, StepStatus::Done);
        }
        // Wrong decisions are refused with a reason.
        assert!(matches!(
            env.orch
                .decide(&approved, "a", Decision::approve("alice"))
                .await,
            Err(OrchestrationError::NotAwaitingApproval(_))
        ));
        assert!(matches!(
            env.orch
                .decide(&approved, "zz", Decision::approve("alice"))
                .await,
            Err(OrchestrationError::UnknownStep(_))
        ));
        assert!(matches!(
            env.orch
                .decide(&approved, "c", Decision::approve(" "))
                .await,
            Err(OrchestrationError::Invalid(_))
        ));
        env.close().await;
        (approved, denied)
    };
    let requests_before = fake.request_count();
    // After a restart the runs still wait; nothing was re-run.
    let env = env(dir.path(), &fake).await;
    assert_eq!(env.orch.active_count(), 2);
    let s = env.orch.get(&approved).await.expect("get").expect("exists");
    assert_eq!(s.status, RunStatus::AwaitingApproval);
    assert_eq!(fake.request_count(), requests_before);

    env.orch
        .decide(&approved, "c", Decision::approve("alice"))
        .await
        .expect("approve");
    let s = env.orch.wait(&approved, WAIT).await.expect("finished");
    assert_eq!(s.status, RunStatus::Succeeded, "{s:?}");
    let c = s.step("c").expect("c");
    assert_eq!(c.decision.as_ref().map(|d| d.by.as_str()), Some("alice"));
    assert!(c.output.as_deref().is_some_and(|o| o.contains("fact A")));

    env.orch
        .decide(&denied, "c", Decision::deny("bob", "not today"))
        .await
        .expect("deny");
    let s = env.orch.wait(&denied, WAIT).await.expect("finished");
    assert_eq!(s.status, RunStatus::Failed);
    assert!(
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("denied by bob: not today"))
    );
    assert_eq!(s.step("c").expect("c").status, StepStatus::Denied);
    assert!(matches!(
        env.orch
            .decide(&denied, "c", Decision::approve("alice"))
            .await,
        Err(OrchestrationError::Finished(_))
    ));
    env.close().await;
}

#[tokio::test]
async fn cancelling_a_run_stops_its_llm_calls() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("dir");
    let env = env(dir.path(), &fake).await;
    team(&env).await;
    let gate = Arc::new(Notify::new());
    fake.set_default(FakeReply::Gated(
        gate.clone(),
        Box::new(FakeReply::Text("late".into())),
    ));
    let mut spec = RunSpec::new("Find A");
    spec.plan = Some(Plan {
        steps: vec![PlanStep::new("a", "research", "find A")],
    });
    let id = env.orch.start(spec).await.expect("start");
    fake.wait_in_flight(1).await;
    assert!(env.orch.cancel(&id).await.expect("cancel"));
    let s = env.orch.wait(&id, WAIT).await.expect("finished");
    assert_eq!(s.status, RunStatus::Cancelled);
    // The held request's connection is dropped by the scheduler's cancellation.
    fake.wait_in_flight(0).await;
    assert!(!env.orch.cancel(&id).await.expect("second cancel"));
    gate.notify_waiters();
    env.close().await;
}

#[tokio::test]
async fn sessions_keep_their_history_across_a_restart() {
    let fake = fake().await;
    fake.set_default(FakeReply::Dynamic(Arc::new(answer)));
    let dir = tempfile::tempdir().expect("dir");
    let (agent_session, team_session) = {
        let env = env(dir.path(), &fake).await;
        team(&env).await;
        let s = env
            .orch
            .create_session(
                SessionTarget::Agent {
                    name: "writer".into(),
                },
                "acme",
                "drafts",
            )
            .await
            .expect("session");
        let first = env.orch.say(&s.id, "hello", WAIT).await.expect("say");
        assert_eq!(first.role, EntryRole::Assistant);
        assert_eq!(first.seq, 1);
        assert!(first.text.contains("hello"));
        env.orch.say(&s.id, "again", WAIT).await.expect("say");
        // The session's own agent instance carries the conversation.
        let last = fake.requests().last().expect("request").body.clone();
        assert!(last.to_string().contains("hello") && last.to_string().contains("again"));

        let t = env
            .orch
            .create_session(SessionTarget::Team { planner: None }, "acme", "team")
            .await
            .expect("team session");
        let reply = env
            .orch
            .say(&t.id, "Explain A and B", WAIT)
            .await
            .expect("say");
        assert_eq!(reply.text, "FINAL");
        assert!(reply.run.is_some());

        assert!(matches!(
            env.orch
                .create_session(
                    SessionTarget::Agent {
                        name: "ghost".into()
                    },
                    "acme",
                    "x"
                )
                .await,
            Err(OrchestrationError::Invalid(_))
        ));
        assert!(matches!(
            env.orch.say(&s.id, " ", WAIT).await,
            Err(OrchestrationError::Invalid(_))
        ));
        env.close().await;
        (s.id, t.id)
    };
    let env = env(dir.path(), &fake).await;
    let history = env
        .orch
        .history(&agent_session, 0, 100)
        .await
        .expect("history");
    let texts: Vec<(EntryRole, &str)> = history.iter().map(|e| (e.role, e.text.as_str())).collect();
    assert_eq!(texts.len(), 4);
    assert_eq!(texts[0], (EntryRole::User, "hello"));
    assert_eq!(texts[2], (EntryRole::User, "again"));
    assert_eq!(
        history.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        env.orch.history(&agent_session, 2, 1).await.expect("page")[0].text,
        "again"
    );
    let team_history = env
        .orch
        .history(&team_session, 0, 100)
        .await
        .expect("history");
    assert_eq!(team_history.len(), 2);
    assert_eq!(env.orch.sessions(None, 10).await.expect("list").len(), 2);
    // A second team message carries the conversation so far to the planner.
    env.orch
        .say(&team_session, "And C?", WAIT)
        .await
        .expect("say");
    assert!(requests_with(&fake, "Conversation so far") >= 1);

    env.orch
        .delete_session(&agent_session)
        .await
        .expect("delete");
    assert!(
        env.orch
            .session(&agent_session)
            .await
            .expect("get")
            .is_none()
    );
    assert!(matches!(
        env.orch.history(&agent_session, 0, 10).await,
        Err(OrchestrationError::SessionNotFound(_))
    ));
    env.close().await;
}
