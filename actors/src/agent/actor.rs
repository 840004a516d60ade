//! The agent actor: the loop "assemble context → LLM through the scheduler → tools → repeat"
//! with its conversation kept as a durable snapshot.

use std::sync::Arc;

use aios_supervisor::snapshot::{Migrations, codec};
use aios_supervisor::{Context, PersistentWorker, Worker};
use ractor::{ActorProcessingErr, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::events::{AgentEvent, AgentEventKind};
use super::kernel::Kernel;
use super::tools::ToolContext;
use crate::llm::{ChatMessage, ChatRequest, Delta, LlmError, Role, Usage};
use crate::memory::short_term::{ShortTerm, explicit_save};
use crate::protocol::AgentId;
use crate::scheduler::{Budget, RequestMeta};

/// The most messages of conversation an agent keeps (older ones are dropped, whole turns
/// at a time).
pub const CONVERSATION_LEN_MAX: usize = 256;
/// Memory snippets added to the context per task.
pub const MEMORY_SNIPPETS_MAX: usize = 8;
/// The schema version of [`AgentState`] snapshots written by this build.
pub const AGENT_STATE_SCHEMA_VERSION: u32 = 3;
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
        }
    }
}

/// The agent actor's messages.
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
                let input = task.input.clone();
                let session = task.session.clone();
                let out = self.run(*task, state).await;
                if let Ok(done) = &out {
                    self.note(state, &input, session).await;
                    state.tasks_done += 1;
                    if let Some(k) = key {
                        if state.recent.len() >= RECENT_RESULTS_MAX {
                            state.recent.remove(0);
                        }
                        state.recent.push((k, done.clone()));
                    }
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
                codec::encode(&AgentState {
                    conversation: v2.conversation,
                    tasks_done: v2.tasks_done,
                    cost_nanos_total: v2.cost_nanos_total,
                    recent: v2.recent,
                    short_term: ShortTerm::default(),
                })
            })
    }
}

/// Drops the oldest whole turns (a turn starts at a user message) beyond the bound.
fn trim(conversation: &mut Vec<ChatMessage>) {
    if conversation.len() <= CONVERSATION_LEN_MAX {
        return;
    }
    let excess = conversation.len() - CONVERSATION_LEN_MAX;
    let cut = conversation
        .iter()
        .enumerate()
        .skip(excess)
        .find(|(_, m)| m.role == Role::User)
        .map_or(excess, |(i, _)| i);
    conversation.drain(..cut);
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
        let now = crate::protocol::unix_ms();
        let Some((note, reason)) = state.short_term.note(text, NOTE_IMPORTANCE, save, now) else {
            return;
        };
        let meta = crate::memory::MemoryMeta {
            agent: Some(self.id.name.clone()),
            session,
            importance: note.importance,
            created_ms: note.created_ms,
            ..crate::memory::MemoryMeta::default()
        };
        match memory.store(namespace, &note.text, meta).await {
            Ok(stored) => {
                tracing::debug!(agent = %self.id, ?reason, stored, "short-term note consolidated");
            }
            Err(e) => tracing::warn!(agent = %self.id, error = %e, "consolidating a note failed"),
        }
    }

    fn emit(&self, task_run: Option<&String>, kind: AgentEventKind) {
        self.kernel.events.emit(AgentEvent {
            agent: self.id.clone(),
            run: task_run.cloned(),
            kind,
        });
    }

    async fn run(&self, task: Task, state: &mut AgentState) -> Result<TaskOutput, AgentError> {
        let result = self.run_inner(task.clone(), state).await;
        if let Err(e) = &result {
            self.emit(
                task.run.as_ref(),
                AgentEventKind::Error {
                    kind: e.kind(),
                    message: e.to_string(),
                },
            );
        }
        result
    }

    async fn run_inner(
        &self,
        task: Task,
        state: &mut AgentState,
    ) -> Result<TaskOutput, AgentError> {
        let (def_version, def) = self
            .kernel
            .registry
            .current(&self.id.name)
            .ok_or_else(|| AgentError::NotFound(self.id.name.clone()))?;
        let model = def.model_key().map_err(AgentError::Invalid)?;
        let tools = self.kernel.tools.specs(&def.tools);
        let tenant = if task.tenant.is_empty() {
            "default".to_string()
        } else {
            task.tenant.clone()
        };
        let meta = RequestMeta {
            agent: self.id.name.clone(),
            tenant: tenant.clone(),
            session: task.session.clone(),
            run: task.run.clone(),
            priority: task.priority,
        };
        let mut chain = task.chain.clone();
        chain.push(self.id.clone());
        let tool_ctx = ToolContext {
            agent: Some(self.id.clone()),
            chain,
            role: def.role.as_str().to_string(),
            tenant,
            session: task.session.clone(),
            run: task.run.clone(),
        };
        let mut system = def.system_prompt.clone();
        if let (Some(ns), Some(memory)) = (&def.memory_namespace, &self.kernel.memory) {
            let snippets = memory.retrieve(ns, &task.input, MEMORY_SNIPPETS_MAX).await;
            if !snippets.is_empty() {
                system.push_str("\n\nRelevant memory:\n");
                for s in snippets.iter().take(MEMORY_SNIPPETS_MAX) {
                    system.push_str("- ");
                    system.push_str(s);
                    system.push('\n');
                }
            }
        }
        let max_cost = def.limits.max_cost_nanos();
        state
            .conversation
            .push(ChatMessage::user(task.input.clone()));
        let mut usage = Usage {
            reported: true,
            ..Usage::default()
        };
        let mut cost_nanos = 0u64;
        let mut tool_calls = 0u32;
        for step in 1..=def.limits.max_steps {
            trim(&mut state.conversation);
            let mut messages = Vec::with_capacity(state.conversation.len() + 1);
            messages.push(ChatMessage::system(system.clone()));
            messages.extend(state.conversation.iter().cloned());
            let request = ChatRequest {
                model: model.model().to_string(),
                messages,
                tools: tools.clone(),
                temperature: def.temperature,
                max_tokens: None,
                json_mode: task.json_mode,
            };
            let budget = max_cost.map(|limit_nanos| Budget {
                limit_nanos,
                spent_nanos: cost_nanos,
            });
            // Tokens are streamed only while someone listens to this agent.
            let (stream, forward) = if self.kernel.events.has_subscribers(&self.id) {
                let (tx, mut rx) = mpsc::channel::<Delta>(256);
                let events = self.kernel.events.clone();
                let agent = self.id.clone();
                let run = task.run.clone();
                let forward = tokio::spawn(async move {
                    while let Some(d) = rx.recv().await {
                        let kind = match d {
                            Delta::Text(t) => AgentEventKind::Token(t),
                            Delta::ToolCallStarted { .. } => continue,
                        };
                        events.emit(AgentEvent {
                            agent: agent.clone(),
                            run: run.clone(),
                            kind,
                        });
                    }
                });
                (Some(tx), Some(forward))
            } else {
                (None, None)
            };
            let outcome = self
                .kernel
                .router
                .chat(
                    &model,
                    request,
                    meta.clone(),
                    budget,
                    stream,
                    task.cancel.as_ref(),
                )
                .await;
            // The sender is gone once `chat` returns: the forwarder drains and ends.
            if let Some(forward) = forward {
                let _ = forward.await;
            }
            let outcome = outcome?;
            cost_nanos = cost_nanos.saturating_add(outcome.cost_nanos);
            usage.input_tokens += outcome.response.usage.input_tokens;
            usage.output_tokens += outcome.response.usage.output_tokens;
            usage.reported &= outcome.response.usage.reported;
            state.cost_nanos_total = state.cost_nanos_total.saturating_add(outcome.cost_nanos);
            let message = outcome.response.message;
            state.conversation.push(message.clone());
            if message.tool_calls.is_empty() {
                self.emit(
                    task.run.as_ref(),
                    AgentEventKind::Final {
                        text: message.content.clone(),
                    },
                );
                return Ok(TaskOutput {
                    text: message.content,
                    steps: step,
                    tool_calls,
                    usage,
                    cost_nanos,
                    def_version,
                });
            }
            if usage.input_tokens + usage.output_tokens > def.limits.max_tokens {
                return Err(AgentError::LimitExceeded(format!(
                    "{} tokens used, limit {}",
                    usage.input_tokens + usage.output_tokens,
                    def.limits.max_tokens
                )));
            }
            if task
                .cancel
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
            {
                return Err(AgentError::Llm(LlmError::Cancelled));
            }
            for call in &message.tool_calls {
                tool_calls += 1;
                self.emit(
                    task.run.as_ref(),
                    AgentEventKind::ToolCall {
                        id: call.id.clone(),
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    },
                );
                let result = self
                    .kernel
                    .tools
                    .call(&def.tools, &call.name, &call.arguments, &tool_ctx)
                    .await;
                let (output, is_error) = match result {
                    Ok(out) => (out, false),
                    Err(e) => (format!("error: {e}"), true),
                };
                self.emit(
                    task.run.as_ref(),
                    AgentEventKind::ToolResult {
                        id: call.id.clone(),
                        name: call.name.clone(),
                        output: output.clone(),
                        is_error,
                    },
                );
                state
                    .conversation
                    .push(ChatMessage::tool_result(call.id.clone(), output));
            }
        }
        Err(AgentError::LimitExceeded(format!(
            "{} steps without a final answer",
            def.limits.max_steps
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_keeps_whole_turns() {
        let mut c = Vec::new();
        for i in 0..200 {
            c.push(ChatMessage::user(format!("q{i}")));
            c.push(ChatMessage::assistant(format!("a{i}")));
        }
        trim(&mut c);
        assert!(c.len() <= CONVERSATION_LEN_MAX);
        assert_eq!(c[0].role, Role::User);
        assert_eq!(c.last().map(|m| m.content.as_str()), Some("a199"));
    }

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
