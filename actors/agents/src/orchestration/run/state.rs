//! What a run is: its request ([`RunSpec`], [`RunPolicy`]), its persisted state
//! ([`RunState`], [`StepState`]) and their statuses; the run actor (`super`) changes them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::super::plan::{Plan, PlanStep};
use super::RUN_TASK_LEN_MAX;
use aios_core::protocol::unix_ms;

/// What a run does when things go wrong, and how much it does at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPolicy {
    /// Attempts per step (and for composing) before the run fails, 1..=10.
    pub step_attempts_max: u32,
    /// Retry a failed step on another agent with the capability when there is one.
    pub reassign: bool,
    /// Steps running at once, 1..=32.
    pub parallel_max: u32,
    /// Plans asked for before the run fails (an invalid plan is sent back with the reason),
    /// 1..=10.
    pub plan_attempts_max: u32,
    /// Steps needing these capabilities wait for approval.
    pub approve_capabilities: Vec<String>,
    /// The planner composes the final answer from the step results; otherwise the answer is
    /// the results of the steps nothing depends on.
    pub compose: bool,
}

impl Default for RunPolicy {
    /// 3 attempts per step with reassignment, 4 steps at once, 2 plan attempts, composing.
    fn default() -> Self {
        Self {
            step_attempts_max: 3,
            reassign: true,
            parallel_max: 4,
            plan_attempts_max: 2,
            approve_capabilities: Vec::new(),
            compose: true,
        }
    }
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The task.
    pub task: String,
    /// The tenant (`default` when empty).
    pub tenant: String,
    /// The session the run belongs to, if any.
    pub session: Option<String>,
    /// The planner agent; when `None`, the best agent with capability `plan`.
    pub planner: Option<String>,
    /// A ready plan: planning is skipped.
    pub plan: Option<Plan>,
    /// Retries, parallelism, approvals.
    pub policy: RunPolicy,
}

impl RunSpec {
    /// A run of `task` with the default policy.
    pub fn new(task: impl Into<String>) -> Self {
        Self {
            task: task.into(),
            tenant: String::new(),
            session: None,
            planner: None,
            plan: None,
            policy: RunPolicy::default(),
        }
    }

    /// Checks the task, the policy and a given plan.
    ///
    /// # Errors
    /// Names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.task.trim().is_empty() {
            return Err("task: empty".into());
        }
        if self.task.len() > RUN_TASK_LEN_MAX {
            return Err(format!("task: longer than {RUN_TASK_LEN_MAX} bytes"));
        }
        let p = &self.policy;
        if !(1..=10).contains(&p.step_attempts_max) {
            return Err("policy.step_attempts_max: must be 1..=10".into());
        }
        if !(1..=32).contains(&p.parallel_max) {
            return Err("policy.parallel_max: must be 1..=32".into());
        }
        if !(1..=10).contains(&p.plan_attempts_max) {
            return Err("policy.plan_attempts_max: must be 1..=10".into());
        }
        if let Some(planner) = &self.planner {
            crate::agent::validate_name(planner).map_err(|e| format!("planner: {e}"))?;
        }
        if self.tenant.len() > 128 {
            return Err("tenant: at most 128 bytes".into());
        }
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.is_empty() || s.len() > 128)
        {
            return Err("session: 1..=128 bytes".into());
        }
        if let Some(plan) = &self.plan {
            plan.validate().map_err(|e| format!("plan: {e}"))?;
        }
        Ok(())
    }
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    /// Asking the planner for a plan.
    Planning,
    /// Running steps.
    Running,
    /// Nothing can run until a person approves a step.
    AwaitingApproval,
    /// Every step is done; the planner composes the answer.
    Composing,
    /// Finished with an answer.
    Succeeded,
    /// Finished without one (see the run's `error`).
    Failed,
    /// Stopped by a caller.
    Cancelled,
}

impl RunStatus {
    /// True for `Succeeded`, `Failed` and `Cancelled`.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Planning => "planning",
            Self::Running => "running",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Composing => "composing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Where a step is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepStatus {
    /// Waiting for its dependencies or a free slot.
    Pending,
    /// Waiting for a person's decision.
    AwaitingApproval {
        /// Why approval is needed.
        reason: String,
    },
    /// An agent works on it.
    Running,
    /// Finished; the output is in the step.
    Done,
    /// Failed on every attempt.
    Failed,
    /// A person said no.
    Denied,
}

/// A person's decision on a step that waits for approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Approve (true) or deny.
    pub approve: bool,
    /// Who decided.
    pub by: String,
    /// Why.
    pub note: String,
    /// When, in Unix milliseconds (set by the run).
    pub at_ms: u64,
}

impl Decision {
    /// An approval by `by`.
    pub fn approve(by: impl Into<String>) -> Self {
        Self {
            approve: true,
            by: by.into(),
            note: String::new(),
            at_ms: 0,
        }
    }

    /// A denial by `by` for `note`.
    pub fn deny(by: impl Into<String>, note: impl Into<String>) -> Self {
        Self {
            approve: false,
            by: by.into(),
            note: note.into(),
            at_ms: 0,
        }
    }
}

/// A step and what happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepState {
    /// The step from the plan.
    pub step: PlanStep,
    /// Where it is.
    pub status: StepStatus,
    /// The agent assigned to it.
    pub agent: Option<String>,
    /// Attempts started.
    pub attempts: u32,
    /// Agents that failed it.
    pub failed_agents: Vec<String>,
    /// The approval decision, when one was needed.
    pub decision: Option<Decision>,
    /// The result.
    pub output: Option<String>,
    /// The last error.
    pub error: Option<String>,
    /// Cost of its successful attempt, in nanodollars.
    pub cost_nanos: u64,
    /// When it last started, Unix ms.
    pub started_ms: Option<u64>,
    /// When it finished, Unix ms.
    pub finished_ms: Option<u64>,
}

/// A run's persisted state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The run id.
    pub id: String,
    /// What was asked.
    pub spec: RunSpec,
    /// Where it is.
    pub status: RunStatus,
    /// The planner agent.
    pub planner: Option<String>,
    /// Plans asked for.
    pub plan_attempts: u32,
    /// Composing attempts.
    pub compose_attempts: u32,
    /// The steps of the plan (empty while planning).
    pub steps: Vec<StepState>,
    /// The answer of a successful run.
    pub answer: Option<String>,
    /// Why the run failed.
    pub error: Option<String>,
    /// LLM cost of the run so far, in nanodollars.
    pub cost_nanos: u64,
    /// Unix ms.
    pub created_ms: u64,
    /// Unix ms.
    pub updated_ms: u64,
    /// Unix ms.
    pub finished_ms: Option<u64>,
    /// The per-run agent instances were forgotten and the run left the active index.
    pub cleaned: bool,
    #[serde(skip)]
    pub(super) live: Live,
}

/// What only exists while the run's actor lives. The cancellation token is the run's own
/// (kept in `Shared` across restarts of the actor), so cancelling reaches calls started by
/// an earlier incarnation too.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Live {
    pub(super) in_flight: BTreeSet<Work>,
    pub(super) cancel: CancelToken,
}

#[derive(Clone, Debug, Default)]
pub(super) struct CancelToken(pub(super) CancellationToken);

impl PartialEq for CancelToken {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Work {
    Plan,
    Step(usize),
    Compose,
}

impl RunState {
    pub(crate) fn new(id: String, spec: RunSpec) -> Self {
        let now = unix_ms();
        Self {
            id,
            spec,
            status: RunStatus::Planning,
            planner: None,
            plan_attempts: 0,
            compose_attempts: 0,
            steps: Vec::new(),
            answer: None,
            error: None,
            cost_nanos: 0,
            created_ms: now,
            updated_ms: now,
            finished_ms: None,
            cleaned: false,
            live: Live::default(),
        }
    }

    /// The step with id `id`.
    pub fn step(&self, id: &str) -> Option<&StepState> {
        self.steps.iter().find(|s| s.step.id == id)
    }
}
