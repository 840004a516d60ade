//! A run as a persistent actor: plan → assign steps by capability → run ready steps
//! concurrently → compose the answer, with every transition in a durable snapshot.
//!
//! Exactly-once discipline: a step's result is recorded in the handler of the message that
//! brings it, and the snapshot of that message is on disk before the next message (the one
//! that starts the dependents) is handled. Work that was in flight at a crash is started
//! again with the *same* idempotency key, so an agent that had already finished it answers
//! from its own persisted result instead of calling the model or tools again.

mod state;

use std::collections::BTreeSet;
use std::sync::Arc;

use aios_supervisor::{ActorHandle, Context, PersistentWorker, Worker};
use ractor::{ActorProcessingErr, RpcReplyPort};

use super::plan::Plan;
use super::{OrchestrationError, RunEvent, RunEventKind, Shared};
use crate::agent::{AgentError, CapabilityQuery, Task, TaskOutput};
use aios_core::protocol::{AgentId, unix_ms};

/// The capability a planner advertises; runs without an explicit planner negotiate it.
pub const PLANNER_CAPABILITY: &str = "plan";
/// The longest task text of a run, in bytes.
pub const RUN_TASK_LEN_MAX: usize = 64 * 1024;
/// The longest step output handed to dependent steps and the composer, in bytes.
pub(super) const STEP_OUTPUT_IN_PROMPT_MAX: usize = 16 * 1024;

use self::state::{CancelToken, Live, Work};
pub use self::state::{Decision, RunPolicy, RunSpec, RunState, RunStatus, StepState, StepStatus};

/// The run actor's messages.
pub(crate) enum RunMsg {
    /// Start whatever can start.
    Advance,
    Planned {
        attempt: u32,
        planner: String,
        result: Result<TaskOutput, AgentError>,
    },
    StepFinished {
        index: usize,
        attempt: u32,
        agent: String,
        result: Result<TaskOutput, AgentError>,
    },
    Composed {
        attempt: u32,
        result: Result<TaskOutput, AgentError>,
    },
    Decide(
        String,
        Decision,
        RpcReplyPort<Result<(), OrchestrationError>>,
    ),
    Get(RpcReplyPort<RunState>),
    Cancel(RpcReplyPort<bool>),
    /// Forget the run's agent instances, leave the active index, stop.
    Cleanup,
}

/// The worker behind one run.
pub(crate) struct RunWorker {
    pub(crate) id: String,
    pub(crate) shared: Arc<Shared>,
    /// The state of a new run (`None` when resuming one).
    pub(crate) initial: Option<RunState>,
}

/// The agent instance key of the planner of run `run` (also used for composing).
pub(crate) fn planner_key(run: &str) -> String {
    format!("p-{run}")
}

/// The agent instance key of step `step` of run `run`.
pub(crate) fn step_key(run: &str, step: &str) -> String {
    format!("s-{run}-{step}")
}

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Worker for RunWorker {
    type Msg = RunMsg;
    type State = RunState;

    async fn init(
        &self,
        ctx: &mut Context<RunMsg>,
        restored: Option<RunState>,
    ) -> Result<RunState, ActorProcessingErr> {
        let mut state = match (restored, &self.initial) {
            (Some(mut s), _) => {
                // Work in flight at the crash starts again under the same attempt number, so
                // its idempotency key matches what the agent may already have finished.
                for step in &mut s.steps {
                    if step.status == StepStatus::Running {
                        step.status = StepStatus::Pending;
                        step.attempts = step.attempts.saturating_sub(1);
                    }
                }
                if s.status == RunStatus::Planning {
                    s.plan_attempts = s.plan_attempts.saturating_sub(1);
                }
                if s.status == RunStatus::Composing {
                    s.compose_attempts = s.compose_attempts.saturating_sub(1);
                }
                tracing::info!(run = %self.id, status = s.status.as_str(), "run resumed");
                s
            }
            (None, Some(initial)) => initial.clone(),
            (None, None) => {
                return Err(format!("run {} has no snapshot to resume from", self.id).into());
            }
        };
        state.live = Live {
            in_flight: BTreeSet::new(),
            cancel: CancelToken(self.shared.token(&self.id)),
        };
        self.shared.publish(&state);
        ctx.myself()
            .cast(RunMsg::Advance)
            .map_err(|_| "the run's own mailbox is full")?;
        Ok(state)
    }

    async fn handle(
        &self,
        ctx: &mut Context<RunMsg>,
        msg: RunMsg,
        state: &mut RunState,
    ) -> Result<(), ActorProcessingErr> {
        self.handle_msg(ctx, msg, state).await;
        if !state.cleaned {
            self.shared.publish(state);
        }
        Ok(())
    }
}

impl PersistentWorker for RunWorker {
    const SCHEMA_VERSION: u32 = 1;
}

/// Sends a result to the run, waiting while its mailbox is full; gives up only when the run
/// is gone (then the result is not needed: a resumed run starts the work again under the
/// same idempotency key).
async fn deliver(me: &ActorHandle<RunMsg>, mut msg: RunMsg) {
    let mut wait = std::time::Duration::from_millis(1);
    loop {
        match me.cast(msg) {
            Ok(()) => return,
            Err(e) if e.is_mailbox_full() => {
                msg = e.into_inner();
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_millis(100));
            }
            Err(_) => return,
        }
    }
}

/// Sends `msg` to the run itself from a handler; a full mailbox defers it to a task.
fn send_self(ctx: &Context<RunMsg>, msg: RunMsg) {
    if let Err(e) = ctx.myself().cast(msg)
        && e.is_mailbox_full()
    {
        let me = ctx.myself().clone();
        let msg = e.into_inner();
        tokio::spawn(async move { deliver(&me, msg).await });
    }
}

impl RunWorker {
    async fn handle_msg(&self, ctx: &mut Context<RunMsg>, msg: RunMsg, state: &mut RunState) {
        match msg {
            RunMsg::Advance => self.advance(ctx, state),
            RunMsg::Planned {
                attempt,
                planner,
                result,
            } => {
                state.live.in_flight.remove(&Work::Plan);
                if state.status == RunStatus::Planning && attempt == state.plan_attempts {
                    self.planned(state, &planner, result);
                }
                self.after_result(ctx, state);
            }
            RunMsg::StepFinished {
                index,
                attempt,
                agent,
                result,
            } => {
                state.live.in_flight.remove(&Work::Step(index));
                let current = state
                    .steps
                    .get(index)
                    .is_some_and(|s| s.status == StepStatus::Running && s.attempts == attempt);
                if current && !state.status.is_finished() {
                    self.step_finished(state, index, agent, result);
                }
                self.after_result(ctx, state);
            }
            RunMsg::Composed { attempt, result } => {
                state.live.in_flight.remove(&Work::Compose);
                if state.status == RunStatus::Composing && attempt == state.compose_attempts {
                    match result {
                        Ok(out) => {
                            state.cost_nanos = state.cost_nanos.saturating_add(out.cost_nanos);
                            state.answer = Some(out.text);
                            self.finish(state, RunStatus::Succeeded, None);
                        }
                        Err(e) if state.compose_attempts < state.spec.policy.step_attempts_max => {
                            tracing::warn!(run = %self.id, error = %e, "composing failed; retrying");
                        }
                        Err(e) => {
                            self.finish(state, RunStatus::Failed, Some(format!("composing: {e}")));
                        }
                    }
                }
                self.after_result(ctx, state);
            }
            RunMsg::Decide(step, mut decision, reply) => {
                let result = self.decide(state, &step, &mut decision);
                if result.is_ok() {
                    self.emit(
                        state,
                        RunEventKind::Decided {
                            step,
                            approved: decision.approve,
                            by: decision.by,
                        },
                    );
                    self.advance(ctx, state);
                }
                // Sent once the decision's snapshot is on disk.
                ctx.reply(reply, result);
            }
            RunMsg::Get(reply) => ctx.reply(reply, state.clone()),
            RunMsg::Cancel(reply) => {
                let was_running = !state.status.is_finished();
                if was_running {
                    state.live.cancel.0.cancel();
                    self.finish(state, RunStatus::Cancelled, Some("cancelled".into()));
                    self.after_result(ctx, state);
                }
                ctx.reply(reply, was_running);
            }
            RunMsg::Cleanup => {
                if state.status.is_finished() && state.live.in_flight.is_empty() {
                    self.cleanup(state).await;
                    // Stopped even when cleaning up failed: the run stays indexed and the
                    // next start of the node tries again.
                    ctx.stop();
                }
            }
        }
    }

    fn emit(&self, state: &RunState, kind: RunEventKind) {
        // Readers woken by the event must see the state that caused it.
        self.shared.publish(state);
        // Nobody listening is fine.
        let _ = self.shared.events.send(RunEvent {
            run: state.id.clone(),
            kind,
        });
    }

    fn finish(&self, state: &mut RunState, status: RunStatus, error: Option<String>) {
        let now = unix_ms();
        state.status = status;
        state.error = error.clone();
        state.finished_ms = Some(now);
        state.updated_ms = now;
        tracing::info!(run = %state.id, status = status.as_str(), error = ?error, "run finished");
        self.emit(state, RunEventKind::Finished { status, error });
    }

    /// After a result: once the result's snapshot is written, continue (or clean up).
    fn after_result(&self, ctx: &mut Context<RunMsg>, state: &mut RunState) {
        state.updated_ms = unix_ms();
        let next = if state.status.is_finished() {
            if state.live.in_flight.is_empty() && !state.cleaned {
                Some(RunMsg::Cleanup)
            } else {
                None
            }
        } else {
            Some(RunMsg::Advance)
        };
        if let Some(msg) = next {
            send_self(ctx, msg);
        }
    }

    fn planned(&self, state: &mut RunState, planner: &str, result: Result<TaskOutput, AgentError>) {
        let reason = match result {
            Ok(out) => {
                state.cost_nanos = state.cost_nanos.saturating_add(out.cost_nanos);
                match Plan::parse(&out.text).and_then(|p| self.check_capabilities(&p).map(|()| p)) {
                    Ok(plan) => {
                        self.install(state, plan);
                        return;
                    }
                    Err(reason) => reason,
                }
            }
            Err(e) => format!("the planner {planner} failed: {e}"),
        };
        self.emit(
            state,
            RunEventKind::PlanRejected {
                reason: reason.clone(),
            },
        );
        if state.plan_attempts >= state.spec.policy.plan_attempts_max {
            self.finish(
                state,
                RunStatus::Failed,
                Some(format!(
                    "no valid plan after {} attempts: {reason}",
                    state.plan_attempts
                )),
            );
        } else {
            state.error = Some(reason);
        }
    }

    /// Every step's capability must be offered by some agent.
    fn check_capabilities(&self, plan: &Plan) -> Result<(), String> {
        let registry = self.shared.system.registry();
        for s in &plan.steps {
            if registry.who_can(&s.capability).is_empty() {
                let mut offered: Vec<String> = registry
                    .list()
                    .iter()
                    .flat_map(|d| d.capabilities.iter().map(|c| c.name.clone()))
                    .collect();
                offered.sort();
                offered.dedup();
                return Err(format!(
                    "step {:?} needs capability {:?}, which no agent has; use one of {offered:?}",
                    s.id, s.capability
                ));
            }
        }
        Ok(())
    }

    fn install(&self, state: &mut RunState, plan: Plan) {
        self.emit(
            state,
            RunEventKind::Planned {
                steps: plan.steps.iter().map(|s| s.id.clone()).collect(),
            },
        );
        state.error = None;
        state.steps = plan
            .steps
            .into_iter()
            .map(|step| StepState {
                step,
                status: StepStatus::Pending,
                agent: None,
                attempts: 0,
                failed_agents: Vec::new(),
                decision: None,
                output: None,
                error: None,
                cost_nanos: 0,
                started_ms: None,
                finished_ms: None,
            })
            .collect();
        state.status = RunStatus::Running;
    }

    fn step_finished(
        &self,
        state: &mut RunState,
        index: usize,
        agent: String,
        result: Result<TaskOutput, AgentError>,
    ) {
        let policy = state.spec.policy.clone();
        let step = &mut state.steps[index];
        let now = unix_ms();
        match result {
            Ok(out) => {
                step.status = StepStatus::Done;
                step.output = Some(out.text);
                step.error = None;
                step.cost_nanos = out.cost_nanos;
                step.finished_ms = Some(now);
                state.cost_nanos = state.cost_nanos.saturating_add(out.cost_nanos);
                let id = state.steps[index].step.id.clone();
                self.emit(state, RunEventKind::StepDone { step: id, agent });
            }
            Err(e) => {
                let retry = step.attempts < policy.step_attempts_max;
                step.error = Some(e.to_string());
                if !step.failed_agents.contains(&agent) {
                    step.failed_agents.push(agent.clone());
                }
                step.status = if retry {
                    StepStatus::Pending
                } else {
                    StepStatus::Failed
                };
                if retry && policy.reassign {
                    // Chosen again on the next start, avoiding the agents that failed.
                    step.agent = None;
                }
                step.finished_ms = Some(now);
                let id = step.step.id.clone();
                let attempts = step.attempts;
                self.emit(
                    state,
                    RunEventKind::StepFailed {
                        step: id.clone(),
                        agent,
                        error: e.to_string(),
                        kind: e.kind(),
                        retry,
                    },
                );
                if !retry {
                    self.finish(
                        state,
                        RunStatus::Failed,
                        Some(format!("step {id:?} failed after {attempts} attempts: {e}")),
                    );
                }
            }
        }
    }

    fn decide(
        &self,
        state: &mut RunState,
        step_id: &str,
        decision: &mut Decision,
    ) -> Result<(), OrchestrationError> {
        if state.status.is_finished() {
            return Err(OrchestrationError::Finished(state.id.clone()));
        }
        let step = state
            .steps
            .iter_mut()
            .find(|s| s.step.id == step_id)
            .ok_or_else(|| OrchestrationError::UnknownStep(step_id.to_string()))?;
        if !matches!(step.status, StepStatus::AwaitingApproval { .. }) {
            return Err(OrchestrationError::NotAwaitingApproval(step_id.to_string()));
        }
        decision.at_ms = unix_ms();
        step.decision = Some(decision.clone());
        if decision.approve {
            step.status = StepStatus::Pending;
        } else {
            step.status = StepStatus::Denied;
            let error = format!(
                "step {step_id:?} was denied by {}: {}",
                decision.by, decision.note
            );
            self.finish(state, RunStatus::Failed, Some(error));
        }
        Ok(())
    }

    /// Starts whatever can start now.
    fn advance(&self, ctx: &mut Context<RunMsg>, state: &mut RunState) {
        if state.status.is_finished() {
            if state.live.in_flight.is_empty() && !state.cleaned {
                send_self(ctx, RunMsg::Cleanup);
            }
            return;
        }
        if state.status == RunStatus::Planning {
            if let Some(plan) = state.spec.plan.clone() {
                self.install(state, plan);
            } else {
                if !state.live.in_flight.contains(&Work::Plan) {
                    self.start_planning(ctx, state);
                }
                return;
            }
        }
        if state.status == RunStatus::Composing {
            if !state.live.in_flight.contains(&Work::Compose) {
                self.start_composing(ctx, state);
            }
            return;
        }
        // Running or awaiting approval.
        let parallel_max = state.spec.policy.parallel_max as usize;
        let mut running = state
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Running)
            .count();
        for index in 0..state.steps.len() {
            if running >= parallel_max {
                break;
            }
            let ready = {
                let s = &state.steps[index];
                s.status == StepStatus::Pending
                    && s.step.depends_on.iter().all(|d| {
                        state
                            .step(d)
                            .is_some_and(|dep| dep.status == StepStatus::Done)
                    })
            };
            if !ready {
                continue;
            }
            if let Err(e) = self.assign(state, index) {
                let id = state.steps[index].step.id.clone();
                state.steps[index].status = StepStatus::Failed;
                state.steps[index].error = Some(e.clone());
                self.finish(state, RunStatus::Failed, Some(format!("step {id:?}: {e}")));
                return;
            }
            if state.steps[index].decision.is_none()
                && let Some(reason) = self.approval_reason(state, index)
            {
                state.steps[index].status = StepStatus::AwaitingApproval {
                    reason: reason.clone(),
                };
                let step = state.steps[index].step.id.clone();
                tracing::info!(run = %state.id, step = %step, reason = %reason, "step awaits approval");
                self.emit(state, RunEventKind::AwaitingApproval { step, reason });
                continue;
            }
            self.start_step(ctx, state, index);
            running += 1;
        }
        if state.steps.iter().all(|s| s.status == StepStatus::Done) {
            if state.spec.policy.compose {
                state.status = RunStatus::Composing;
                self.emit(state, RunEventKind::Composing);
                self.start_composing(ctx, state);
            } else {
                let needed: BTreeSet<&str> = state
                    .steps
                    .iter()
                    .flat_map(|s| s.step.depends_on.iter().map(String::as_str))
                    .collect();
                let answer = state
                    .steps
                    .iter()
                    .filter(|s| !needed.contains(s.step.id.as_str()))
                    .filter_map(|s| s.output.clone())
                    .collect::<Vec<_>>()
                    .join("\n\n");
                state.answer = Some(answer);
                self.finish(state, RunStatus::Succeeded, None);
                send_self(ctx, RunMsg::Cleanup);
            }
            return;
        }
        let waiting = state
            .steps
            .iter()
            .any(|s| matches!(s.status, StepStatus::AwaitingApproval { .. }));
        state.status = if running == 0 && waiting {
            RunStatus::AwaitingApproval
        } else {
            RunStatus::Running
        };
    }

    /// Picks the agent for a step that has none: the best match for its capability, avoiding
    /// agents that failed it while another is available.
    fn assign(&self, state: &mut RunState, index: usize) -> Result<(), String> {
        let step = &mut state.steps[index];
        if step.agent.is_some() {
            return Ok(());
        }
        let registry = self.shared.system.registry();
        let mut query = CapabilityQuery {
            capability: step.step.capability.clone(),
            exclude: step.failed_agents.clone(),
            name_prefix: self.shared.system.agent_prefix(&state.spec.tenant),
            ..CapabilityQuery::default()
        };
        let found = registry.negotiate(&query).or_else(|e| {
            if query.exclude.is_empty() {
                Err(e)
            } else {
                query.exclude.clear();
                registry.negotiate(&query)
            }
        })?;
        step.agent = Some(found.agent);
        Ok(())
    }

    fn approval_reason(&self, state: &RunState, index: usize) -> Option<String> {
        let s = &state.steps[index];
        if s.step.approval {
            return Some("the plan marks this step for approval".into());
        }
        if state
            .spec
            .policy
            .approve_capabilities
            .contains(&s.step.capability)
        {
            return Some(format!(
                "capability {:?} requires approval",
                s.step.capability
            ));
        }
        let agent = s.agent.as_ref()?;
        let def = self.shared.system.registry().get(agent)?;
        let tools = self.shared.system.tools();
        def.tools
            .iter()
            .find(|t| tools.get(t).is_some_and(|tool| tool.requires_approval()))
            .map(|t| format!("agent {agent:?} may call tool {t:?}, which requires approval"))
    }

    fn task(&self, state: &RunState, input: String, key: String) -> Task {
        Task {
            input,
            tenant: state.spec.tenant.clone(),
            session: state.spec.session.clone(),
            run: Some(state.id.clone()),
            cancel: Some(state.live.cancel.0.child_token()),
            idempotency_key: Some(key),
            ..Task::default()
        }
    }

    fn start_planning(&self, ctx: &mut Context<RunMsg>, state: &mut RunState) {
        // A resumed run keeps its planner: the same instance answers a repeated attempt from
        // its record of finished tasks.
        let planner = match state.planner.as_ref().or(state.spec.planner.as_ref()) {
            Some(p) => p.clone(),
            None => match self.shared.system.registry().negotiate(&CapabilityQuery {
                capability: PLANNER_CAPABILITY.into(),
                name_prefix: self.shared.system.agent_prefix(&state.spec.tenant),
                ..CapabilityQuery::default()
            }) {
                Ok(m) => m.agent,
                Err(e) => {
                    self.finish(state, RunStatus::Failed, Some(format!("no planner: {e}")));
                    send_self(ctx, RunMsg::Cleanup);
                    return;
                }
            },
        };
        state.planner = Some(planner.clone());
        state.plan_attempts += 1;
        let attempt = state.plan_attempts;
        let mut capabilities: Vec<String> = self
            .shared
            .system
            .registry()
            .list()
            .iter()
            .flat_map(|d| d.capabilities.iter().map(|c| c.name.clone()))
            .filter(|c| c != PLANNER_CAPABILITY)
            .collect();
        capabilities.sort();
        capabilities.dedup();
        let input = match (&state.error, attempt) {
            (Some(reason), a) if a > 1 => {
                format!("That plan was invalid: {reason}\nAnswer with a corrected JSON plan only.")
            }
            _ => format!(
                "Make a plan for this task.\n\nTask: {}\n\nCapabilities you can assign steps to: {}\n\nAnswer with a JSON plan only: {{\"steps\": [{{\"id\": \"...\", \"description\": \"...\", \"capability\": \"...\", \"depends_on\": []}}]}}",
                state.spec.task,
                capabilities.join(", ")
            ),
        };
        let mut task = self.task(state, input, format!("{}:plan:{attempt}", state.id));
        task.json_mode = true;
        state.live.in_flight.insert(Work::Plan);
        let id = AgentId::new(planner.clone(), planner_key(&state.id));
        let system = self.shared.system.clone();
        let me = ctx.myself().clone();
        tracing::debug!(run = %state.id, planner = %planner, attempt, "planning");
        tokio::spawn(async move {
            let result = system.ask(&id, task).await;
            deliver(
                &me,
                RunMsg::Planned {
                    attempt,
                    planner,
                    result,
                },
            )
            .await;
        });
    }

    fn start_step(&self, ctx: &mut Context<RunMsg>, state: &mut RunState, index: usize) {
        let mut input = format!(
            "You are doing one step of a larger task.\n\nTask: {}\n\nYour step ({}): {}\n",
            state.spec.task, state.steps[index].step.id, state.steps[index].step.description
        );
        for dep in &state.steps[index].step.depends_on {
            if let Some(d) = state.step(dep) {
                input.push_str(&format!(
                    "\nResult of step {dep}:\n{}\n",
                    cut(d.output.as_deref().unwrap_or(""), STEP_OUTPUT_IN_PROMPT_MAX)
                ));
            }
        }
        let step = &mut state.steps[index];
        step.attempts += 1;
        step.status = StepStatus::Running;
        step.started_ms = Some(unix_ms());
        let attempt = step.attempts;
        let step_id = step.step.id.clone();
        // Assigned by `assign` just before; an unassigned step never gets here.
        let agent = step.agent.clone().unwrap_or_default();
        let task = self.task(state, input, format!("{}:{step_id}:{attempt}", state.id));
        state.live.in_flight.insert(Work::Step(index));
        self.emit(
            state,
            RunEventKind::StepStarted {
                step: step_id.clone(),
                agent: agent.clone(),
                attempt,
            },
        );
        let id = AgentId::new(agent.clone(), step_key(&state.id, &step_id));
        let system = self.shared.system.clone();
        let me = ctx.myself().clone();
        tokio::spawn(async move {
            let result = system.ask(&id, task).await;
            deliver(
                &me,
                RunMsg::StepFinished {
                    index,
                    attempt,
                    agent,
                    result,
                },
            )
            .await;
        });
    }

    fn start_composing(&self, ctx: &mut Context<RunMsg>, state: &mut RunState) {
        let planner = match &state.planner {
            Some(p) => p.clone(),
            None => match state.spec.planner.clone().or_else(|| {
                self.shared
                    .system
                    .registry()
                    .negotiate(&CapabilityQuery {
                        capability: PLANNER_CAPABILITY.into(),
                        name_prefix: self.shared.system.agent_prefix(&state.spec.tenant),
                        ..CapabilityQuery::default()
                    })
                    .ok()
                    .map(|m| m.agent)
            }) {
                Some(p) => p,
                None => {
                    self.finish(
                        state,
                        RunStatus::Failed,
                        Some("no planner to compose the answer".into()),
                    );
                    send_self(ctx, RunMsg::Cleanup);
                    return;
                }
            },
        };
        state.planner = Some(planner.clone());
        state.compose_attempts += 1;
        let attempt = state.compose_attempts;
        let mut input = format!(
            "Every step of the plan is done.\n\nTask: {}\n\nResults of the steps:\n",
            state.spec.task
        );
        for s in &state.steps {
            input.push_str(&format!(
                "\n## {} ({})\n{}\n",
                s.step.id,
                s.step.capability,
                cut(s.output.as_deref().unwrap_or(""), STEP_OUTPUT_IN_PROMPT_MAX)
            ));
        }
        input.push_str("\nWrite the final answer to the task from these results.");
        let task = self.task(state, input, format!("{}:compose:{attempt}", state.id));
        state.live.in_flight.insert(Work::Compose);
        let id = AgentId::new(planner, planner_key(&state.id));
        let system = self.shared.system.clone();
        let me = ctx.myself().clone();
        tokio::spawn(async move {
            let result = system.ask(&id, task).await;
            deliver(&me, RunMsg::Composed { attempt, result }).await;
        });
    }

    /// Forgets the run's agent instances and takes it out of the active index.
    async fn cleanup(&self, state: &mut RunState) {
        let system = &self.shared.system;
        let mut instances = Vec::new();
        if let Some(p) = &state.planner {
            instances.push(AgentId::new(p.clone(), planner_key(&state.id)));
        }
        for s in &state.steps {
            if let Some(a) = &s.agent {
                instances.push(AgentId::new(a.clone(), step_key(&state.id, &s.step.id)));
            }
            for a in &s.failed_agents {
                instances.push(AgentId::new(a.clone(), step_key(&state.id, &s.step.id)));
            }
        }
        instances.sort();
        instances.dedup();
        for id in instances {
            if let Err(e) = system.forget(&id).await {
                tracing::warn!(run = %state.id, agent = %id, error = %e, "forgetting a run's agent instance");
            }
        }
        match self.shared.unindex(&state.id).await {
            Ok(()) => state.cleaned = true,
            Err(e) => {
                tracing::warn!(run = %state.id, error = %e, "removing the run from the active index; retried at the next start");
            }
        }
    }
}
