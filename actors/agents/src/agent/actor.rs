//! The agent actor: the loop "assemble context → LLM through the scheduler → tools → repeat"
//! with its conversation kept as a durable snapshot.

mod turn;

use std::sync::Arc;

use aios_supervisor::snapshot::{Migrations, codec};
use aios_supervisor::{Context, PersistentWorker, Worker};
use ractor::{ActorProcessingErr, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::busy::BusyPolicy;
use super::context::{
    Budgets, CONVERSATION_LEN_MAX, Keep, cut_point, cut_text, shrink_tool_results,
    summary_messages, trim_snippets,
};
use super::definition::AgentDef;
use super::events::{AgentEvent, AgentEventKind};
use super::kernel::Kernel;
use super::short_term::{ShortTerm, explicit_save};
use super::tools::ToolContext;
use super::transcript::{self, TranscriptEntry};
use aios_core::protocol::AgentId;
use aios_llm::scheduler::{Budget, LlmOutcome, ModelKey, RequestMeta};
use aios_llm::tokens::{MESSAGE_OVERHEAD_TOKENS, Tokenizer};
use aios_llm::{ChatMessage, ChatRequest, Delta, LlmError, Role, ToolCall, ToolSpec, Usage};

/// Memory snippets added to the context per task.
pub(super) const MEMORY_SNIPPETS_MAX: usize = 8;
/// The schema version of [`AgentState`] snapshots written by this build.
pub const AGENT_STATE_SCHEMA_VERSION: u32 = 4;
/// Importance of an ordinary user message noted in short-term memory.
const NOTE_IMPORTANCE: f32 = 0.3;
/// Results of tasks with an idempotency key an agent remembers (oldest forgotten first).
pub const RECENT_RESULTS_MAX: usize = 32;

/// A task for an agent.
#[derive(Clone, Debug, Default)]
pub struct Task {
    /// The user's (or requester's) message.
    pub input: String,
    /// The tenant (`default` when empty).
    pub tenant: String,
    /// The session, if any.
    pub session: Option<String>,
    /// The run, if any.
    pub run: Option<String>,
    /// Cancels the task's LLM calls (for example when its run stops).
    pub cancel: Option<CancellationToken>,
    /// Agents that delegated down to this one (for cycle checks).
    pub chain: Vec<AgentId>,
    /// Scheduling priority.
    pub priority: u8,
    /// Ask the model for a JSON object (providers' JSON mode).
    pub json_mode: bool,
    /// A task with a key this agent already completed is answered from its persisted result
    /// without calling the model or tools again (orchestration uses it so that a step that
    /// finished just before a crash is not run twice).
    pub idempotency_key: Option<String>,
}

impl Task {
    /// A task with just an input.
    pub fn new(input: impl Into<String>) -> Self {
        Self {
            input: input.into(),
            ..Self::default()
        }
    }
}

/// A finished task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskOutput {
    /// The final answer.
    pub text: String,
    /// LLM calls made.
    pub steps: u32,
    /// Tool calls made.
    pub tool_calls: u32,
    /// Tokens used.
    pub usage: Usage,
    /// Cost in nanodollars.
    pub cost_nanos: u64,
    /// The definition version that ran it.
    pub def_version: u32,
}

/// Why a task failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AgentError {
    /// The LLM request failed (typed).
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// A limit of the definition was reached.
    #[error("limit reached: {0}")]
    LimitExceeded(String),
    /// No such agent definition.
    #[error("no agent named {0:?}")]
    NotFound(String),
    /// The input is invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The agent could not be reached or restarted while working.
    #[error("agent unavailable: {0}")]
    Unavailable(String),
    /// The deadline passed.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The agent is working on another message and its policy refuses new ones meanwhile.
    #[error("busy: {0}")]
    Busy(String),
    /// Too many messages wait for the agent.
    #[error("queue full: {0}")]
    QueueFull(String),
    /// A newer message stopped this one (the agent's policy is `interrupt` or `rollback`).
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl AgentError {
    /// A short stable name of the error kind (an LLM error's own kind), for events and
    /// API responses.
    pub fn kind(&self) -> String {
        match self {
            Self::Llm(e) => e.kind().to_string(),
            Self::LimitExceeded(_) => "limit_exceeded".into(),
            Self::NotFound(_) => "not_found".into(),
            Self::Invalid(_) => "invalid".into(),
            Self::Unavailable(_) => "unavailable".into(),
            Self::DeadlineExceeded => "deadline_exceeded".into(),
            Self::Busy(_) => "busy".into(),
            Self::QueueFull(_) => "queue_full".into(),
            Self::Interrupted(_) => "interrupted".into(),
        }
    }
}

/// The agent actor's messages.
#[derive(Debug)]
pub enum AgentMsg {
    /// Run a task.
    Run(Box<Task>, RpcReplyPort<Result<TaskOutput, AgentError>>),
    /// The conversation so far.
    History(RpcReplyPort<Vec<ChatMessage>>),
    /// Forget the conversation.
    Reset(RpcReplyPort<()>),
}

/// The agent's persistent state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    /// The conversation (system prompt excluded: it comes from the definition).
    pub conversation: Vec<ChatMessage>,
    /// Tasks completed.
    pub tasks_done: u64,
    /// Cost of every task, in nanodollars.
    pub cost_nanos_total: u64,
    /// Results of the latest tasks that had an idempotency key, oldest first, at most
    /// [`RECENT_RESULTS_MAX`].
    pub recent: Vec<(String, TaskOutput)>,
    /// Short-term notes (consolidated into the agent's memory namespace by policy).
    pub short_term: ShortTerm,
    /// The running summary of the turns folded out of `conversation` (see
    /// `agent::context`).
    pub summary: String,
    /// Messages folded into the summary (or dropped) so far.
    pub compacted_messages: u64,
    /// The seq the next transcript entry gets.
    pub log_next: u64,
    /// The oldest transcript entry kept.
    pub log_first: u64,
}

/// [`AgentState`] as written by schema version 3 (before the summary and the transcript).
#[derive(Serialize, Deserialize)]
struct AgentStateV3 {
    conversation: Vec<ChatMessage>,
    tasks_done: u64,
    cost_nanos_total: u64,
    recent: Vec<(String, TaskOutput)>,
    short_term: ShortTerm,
}

/// [`AgentState`] as written by schema version 2 (before `short_term`).
#[derive(Serialize, Deserialize)]
struct AgentStateV2 {
    conversation: Vec<ChatMessage>,
    tasks_done: u64,
    cost_nanos_total: u64,
    recent: Vec<(String, TaskOutput)>,
}

/// [`AgentState`] as written by schema version 1 (before `recent`).
#[derive(Deserialize)]
struct AgentStateV1 {
    conversation: Vec<ChatMessage>,
    tasks_done: u64,
    cost_nanos_total: u64,
}

/// The worker behind one agent instance.
pub(crate) struct AgentWorker {
    pub(crate) id: AgentId,
    pub(crate) kernel: Arc<Kernel>,
}

impl Worker for AgentWorker {
    type Msg = AgentMsg;
    type State = AgentState;

    async fn init(
        &self,
        _ctx: &mut Context<AgentMsg>,
        restored: Option<AgentState>,
    ) -> Result<AgentState, ActorProcessingErr> {
        Ok(restored.unwrap_or_default())
    }

    async fn handle(
        &self,
        ctx: &mut Context<AgentMsg>,
        msg: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Run(task, reply) => {
                let key = task.idempotency_key.clone();
                if let Some(done) = key
                    .as_ref()
                    .and_then(|k| state.recent.iter().find(|(rk, _)| rk == k))
                {
                    ctx.reply(reply, Ok(done.1.clone()));
                    return Ok(());
                }
                let out = self.run_task(*task, state).await;
                if let Ok(done) = &out
                    && let Some(k) = key
                {
                    if state.recent.len() >= RECENT_RESULTS_MAX {
                        state.recent.remove(0);
                    }
                    state.recent.push((k, done.clone()));
                }
                ctx.reply(reply, out);
            }
            AgentMsg::History(reply) => ctx.reply(reply, state.conversation.clone()),
            AgentMsg::Reset(reply) => {
                state.conversation.clear();
                ctx.reply(reply, ());
            }
        }
        Ok(())
    }
}

impl PersistentWorker for AgentWorker {
    const SCHEMA_VERSION: u32 = AGENT_STATE_SCHEMA_VERSION;

    fn migrations() -> Migrations {
        Migrations::new()
            .step(1, |bytes| {
                let v1: AgentStateV1 = codec::decode(bytes)?;
                codec::encode(&AgentStateV2 {
                    conversation: v1.conversation,
                    tasks_done: v1.tasks_done,
                    cost_nanos_total: v1.cost_nanos_total,
                    recent: Vec::new(),
                })
            })
            .step(2, |bytes| {
                let v2: AgentStateV2 = codec::decode(bytes)?;
                codec::encode(&AgentStateV3 {
                    conversation: v2.conversation,
                    tasks_done: v2.tasks_done,
                    cost_nanos_total: v2.cost_nanos_total,
                    recent: v2.recent,
                    short_term: ShortTerm::default(),
                })
            })
            .step(3, |bytes| {
                let v3: AgentStateV3 = codec::decode(bytes)?;
                codec::encode(&AgentState {
                    conversation: v3.conversation,
                    tasks_done: v3.tasks_done,
                    cost_nanos_total: v3.cost_nanos_total,
                    recent: v3.recent,
                    short_term: v3.short_term,
                    ..AgentState::default()
                })
            })
    }
}

impl AgentWorker {
    /// Notes the user's message in short-term memory and consolidates it into the agent's
    /// memory namespace when the policy says so (explicit "remember that …", importance,
    /// repetition).
    async fn note(&self, state: &mut AgentState, input: &str, session: Option<String>) {
        let (Some(memory), Some(def)) =
            (&self.kernel.memory, self.kernel.registry.get(&self.id.name))
        else {
            return;
        };
        let Some(namespace) = &def.memory_namespace else {
            return;
        };
        let (text, save) = match explicit_save(input) {
            Some(t) => (t, true),
            None => (input, false),
        };
        let now = aios_core::protocol::unix_ms();
        let Some((note, reason)) = state.short_term.note(text, NOTE_IMPORTANCE, save, now) else {
            return;
        };
        let meta = aios_core::MemoryMeta {
            agent: Some(self.id.name.clone()),
            session,
            importance: note.importance,
            created_ms: note.created_ms,
            ..aios_core::MemoryMeta::default()
        };
        match memory.store(namespace, &note.text, meta).await {
            Ok(stored) => {
                tracing::debug!(agent = %self.id, ?reason, stored, "short-term note consolidated");
            }
            Err(e) => tracing::warn!(agent = %self.id, error = %e, "consolidating a note failed"),
        }
    }

    /// Runs a task under the agent's busy policy, then notes and logs it.
    async fn run_task(&self, task: Task, state: &mut AgentState) -> Result<TaskOutput, AgentError> {
        let policy = self
            .kernel
            .registry
            .get(&self.id.name)
            .map(|d| d.on_busy.policy)
            .unwrap_or_default();
        let cancelled = |t: &Task| {
            t.cancel
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
        };
        let input = task.input.clone();
        let (session, run) = (task.session.clone(), task.run.clone());
        let out = if cancelled(&task) {
            // Superseded while it waited: under `interrupt` the message stays in the
            // conversation (what the user said is kept), under the others it is dropped.
            if policy == BusyPolicy::Interrupt {
                state.conversation.push(ChatMessage::user(input.clone()));
            }
            Err(AgentError::Llm(LlmError::Cancelled))
        } else if policy == BusyPolicy::Rollback {
            let saved = (state.conversation.clone(), state.summary.clone());
            let out = self.run(task.clone(), state).await;
            if out.is_err() && cancelled(&task) {
                (state.conversation, state.summary) = saved;
            }
            out
        } else {
            self.run(task, state).await
        };
        if out.is_ok() {
            self.note(state, &input, session.clone()).await;
            state.tasks_done += 1;
        }
        let (steps, tool_calls, cost_nanos) = out
            .as_ref()
            .map_or((0, 0, 0), |o| (o.steps, o.tool_calls, o.cost_nanos));
        let entry = TranscriptEntry {
            seq: state.log_next,
            at_ms: aios_core::protocol::unix_ms(),
            input,
            output: out.as_ref().ok().map(|o| o.text.clone()),
            error: out.as_ref().err().map(ToString::to_string),
            steps,
            tool_calls,
            cost_nanos,
            session,
            run,
        };
        match transcript::append(
            self.kernel.registry.records(),
            &self.id,
            &entry,
            state.log_first,
        )
        .await
        {
            Ok(first) => {
                state.log_first = first;
                state.log_next += 1;
            }
            Err(e) => tracing::warn!(agent = %self.id, error = %e, "writing the transcript failed"),
        }
        out
    }

    fn emit(&self, task_run: Option<&String>, kind: AgentEventKind) {
        self.kernel.events.emit(AgentEvent {
            agent: self.id.clone(),
            run: task_run.cloned(),
            kind,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct V1 {
        conversation: Vec<ChatMessage>,
        tasks_done: u64,
        cost_nanos_total: u64,
    }

    #[test]
    fn version_1_state_migrates_to_the_current_one() {
        let old = codec::encode(&V1 {
            conversation: vec![ChatMessage::user("hi")],
            tasks_done: 3,
            cost_nanos_total: 7,
        })
        .expect("encode");
        let new = AgentWorker::migrations()
            .apply(1, AgentWorker::SCHEMA_VERSION, &old)
            .expect("migrate");
        let state: AgentState = codec::decode(&new).expect("decode");
        assert_eq!(state.tasks_done, 3);
        assert_eq!(state.cost_nanos_total, 7);
        assert_eq!(state.conversation, vec![ChatMessage::user("hi")]);
        assert!(state.recent.is_empty() && state.short_term.is_empty());
    }
}
