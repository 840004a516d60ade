//! The agent actor: the loop "assemble context → LLM through the scheduler → tools → repeat"
//! with its conversation kept as a durable snapshot.

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
        let window = self
            .kernel
            .router
            .window(&model)
            .ok_or_else(|| LlmError::UnknownModel {
                model: model.to_string(),
            })?;
        let tok = window.tokenizer;
        let budgets = Budgets::new(
            window,
            tok.count(&def.system_prompt) + MESSAGE_OVERHEAD_TOKENS,
        )
        .map_err(|e| AgentError::Invalid(format!("agent {:?}: {e}", def.name)))?;
        let (meta, tool_ctx) = self.contexts(&def, &task);
        let (system, memory_used) = self.system_prompt(&def, &task, &budgets, tok).await;
        let setup = Setup {
            def: &def,
            system,
            tools: self.kernel.tools.specs(&def.tools),
            budgets: &budgets,
            conversation_budget: budgets.conversation_after(memory_used),
            tok,
        };
        state
            .conversation
            .push(ChatMessage::user(task.input.clone()));
        let mut turn = Turn {
            start: state.conversation.len() - 1,
            usage: Usage {
                reported: true,
                ..Usage::default()
            },
            cost_nanos: 0,
        };
        let mut tool_calls = 0u32;
        let call = Call {
            model: &model,
            meta: &meta,
            task: &task,
        };
        for step in 1..=def.limits.max_steps {
            let outcome = self.model_step(state, &mut turn, &setup, &call).await?;
            turn.add(&outcome);
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
                    usage: turn.usage,
                    cost_nanos: turn.cost_nanos,
                    def_version,
                });
            }
            let used = turn.usage.input_tokens + turn.usage.output_tokens;
            if used > def.limits.max_tokens {
                close_tool_calls(
                    &mut state.conversation,
                    "not run: the task's token limit was reached",
                );
                return Err(AgentError::LimitExceeded(format!(
                    "{used} tokens used, limit {}",
                    def.limits.max_tokens
                )));
            }
            tool_calls += self
                .run_tool_calls(state, &message.tool_calls, &def, &task, &tool_ctx)
                .await?;
        }
        Err(AgentError::LimitExceeded(format!(
            "{} steps without a final answer",
            def.limits.max_steps
        )))
    }

    /// The task's scheduling metadata and the context its tools are called with.
    fn contexts(&self, def: &AgentDef, task: &Task) -> (RequestMeta, ToolContext) {
        // With tenant-scoped names an agent acts as the tenant its name says, whatever the
        // task carries (a task that names no tenant must not run as the operator tenant).
        let tenant = match self.id.name.split_once('.') {
            Some((tenant, _)) if self.kernel.tenant_scoped_names => tenant.to_string(),
            _ if task.tenant.is_empty() => "default".to_string(),
            _ => task.tenant.clone(),
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
        (meta, tool_ctx)
    }

    /// The definition's system prompt with what long-term memory recalls for the task,
    /// within the memory's share of the window; and the tokens that recall used.
    async fn system_prompt(
        &self,
        def: &AgentDef,
        task: &Task,
        budgets: &Budgets,
        tok: Tokenizer,
    ) -> (String, u64) {
        let mut system = def.system_prompt.clone();
        let (Some(ns), Some(memory)) = (&def.memory_namespace, &self.kernel.memory) else {
            return (system, 0);
        };
        let snippets = memory.retrieve(ns, &task.input, MEMORY_SNIPPETS_MAX).await;
        let (kept, used) = trim_snippets(
            snippets.into_iter().take(MEMORY_SNIPPETS_MAX).collect(),
            budgets.memory,
            tok,
        );
        if !kept.is_empty() {
            system.push_str("\n\nRelevant memory:\n");
            for s in &kept {
                system.push_str("- ");
                system.push_str(s);
                system.push('\n');
            }
        }
        (system, used)
    }

    /// One call of the model on the conversation fitted to its share of the window. A
    /// "context too long" answer compacts to half the share once more and retries; a second
    /// one is the task's error.
    async fn model_step(
        &self,
        state: &mut AgentState,
        turn: &mut Turn,
        setup: &Setup<'_>,
        call: &Call<'_>,
    ) -> Result<LlmOutcome, AgentError> {
        let mut tight = false;
        loop {
            let budget = if tight {
                setup.conversation_budget / 2
            } else {
                setup.conversation_budget
            };
            self.fit(state, turn, budget, setup.budgets, setup.tok, call)
                .await?;
            let mut prompt = setup.system.clone();
            if !state.summary.is_empty() {
                prompt.push_str("\n\nSummary of the earlier conversation:\n");
                prompt.push_str(&state.summary);
            }
            let mut messages = Vec::with_capacity(state.conversation.len() + 1);
            messages.push(ChatMessage::system(prompt));
            messages.extend(state.conversation.iter().cloned());
            let request = ChatRequest {
                model: call.model.model().to_string(),
                messages,
                tools: setup.tools.clone(),
                temperature: setup.def.temperature,
                max_tokens: None,
                json_mode: call.task.json_mode,
            };
            let budget = setup.def.limits.max_cost_nanos().map(|limit_nanos| Budget {
                limit_nanos,
                spent_nanos: turn.cost_nanos,
            });
            match self.chat(request, budget, call).await {
                Err(LlmError::ContextTooLong { message, .. }) if !tight => {
                    tracing::warn!(
                        agent = %self.id, %message,
                        "the provider found the context too long: compacting further"
                    );
                    tight = true;
                }
                other => return other.map_err(AgentError::from),
            }
        }
    }

    /// Runs the tool calls of one model answer, in order, each result appended to the
    /// conversation; returns how many ran. A cancelled task stops at the next call, with
    /// every call answered (the conversation stays well formed).
    async fn run_tool_calls(
        &self,
        state: &mut AgentState,
        calls: &[ToolCall],
        def: &AgentDef,
        task: &Task,
        tool_ctx: &ToolContext,
    ) -> Result<u32, AgentError> {
        let mut ran = 0;
        for call in calls {
            if task
                .cancel
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
            {
                close_tool_calls(&mut state.conversation, "not run: the task was cancelled");
                return Err(AgentError::Llm(LlmError::Cancelled));
            }
            ran += 1;
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
                .call(&def.tools, &call.name, &call.arguments, tool_ctx)
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
        Ok(ran)
    }

    /// One LLM call of a task, streaming tokens as events while someone listens.
    async fn chat(
        &self,
        request: ChatRequest,
        budget: Option<Budget>,
        call: &Call<'_>,
    ) -> Result<LlmOutcome, LlmError> {
        let task = call.task;
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
                call.model,
                request,
                call.meta.clone(),
                budget,
                stream,
                task.cancel.as_ref(),
            )
            .await;
        // The sender is gone once `chat` returns: the forwarder drains and ends.
        if let Some(forward) = forward {
            let _ = forward.await;
        }
        outcome
    }

    /// Fits the conversation to `budget` tokens: folds the oldest turns into the running
    /// summary (or drops them when the summariser fails), then cuts the current turn's
    /// longest tool results.
    async fn fit(
        &self,
        state: &mut AgentState,
        turn: &mut Turn,
        budget: u64,
        budgets: &Budgets,
        tok: Tokenizer,
        call: &Call<'_>,
    ) -> Result<(), AgentError> {
        let before = tok.count_messages(&state.conversation);
        if before <= budget && state.conversation.len() <= CONVERSATION_LEN_MAX {
            return Ok(());
        }
        let cut = cut_point(
            &state.conversation,
            budget / 2,
            CONVERSATION_LEN_MAX / 2,
            turn.start,
            tok,
        );
        if cut > 0 {
            let old: Vec<ChatMessage> = state.conversation.drain(..cut).collect();
            turn.start -= cut;
            let summarised = self
                .summarise(&state.summary, &old, budgets, tok, call, turn)
                .await;
            let (method, reason) = match summarised {
                Ok(summary) => {
                    state.summary = cut_text(&summary, budgets.summary, Keep::Head, tok);
                    ("summarized", None)
                }
                Err(reason) => {
                    tracing::warn!(
                        agent = %self.id, %reason,
                        "summarising older turns failed: they were dropped instead"
                    );
                    ("truncated", Some(reason))
                }
            };
            state.compacted_messages += cut as u64;
            let after = tok.count_messages(&state.conversation);
            self.emit(
                call.task.run.as_ref(),
                AgentEventKind::Compacted {
                    method: method.to_string(),
                    messages: cut as u64,
                    tokens_before: before,
                    tokens_after: after,
                    summary_tokens: tok.count(&state.summary),
                    reason,
                },
            );
        }
        let total = tok.count_messages(&state.conversation);
        if total <= budget {
            return Ok(());
        }
        let current = &mut state.conversation[turn.start..];
        let earlier = total - tok.count_messages(current);
        if shrink_tool_results(current, budget.saturating_sub(earlier), tok) {
            return Ok(());
        }
        Err(AgentError::LimitExceeded(format!(
            "the message takes about {} tokens with its tool results; model {} leaves about \
             {budget} for the conversation",
            tok.count_messages(&state.conversation[turn.start..]),
            call.model
        )))
    }

    /// Asks the model for a new running summary that folds in `old`.
    async fn summarise(
        &self,
        previous: &str,
        old: &[ChatMessage],
        budgets: &Budgets,
        tok: Tokenizer,
        call: &Call<'_>,
        turn: &mut Turn,
    ) -> Result<String, String> {
        let messages = summary_messages(
            previous,
            old,
            budgets.summariser_input(),
            budgets.summary,
            tok,
        );
        let request = ChatRequest {
            model: call.model.model().to_string(),
            messages,
            tools: Vec::new(),
            temperature: Some(0.0),
            max_tokens: Some(u32::try_from(budgets.summary).unwrap_or(u32::MAX)),
            json_mode: false,
        };
        let timeout = self.kernel.summary_timeout;
        let chat = self.kernel.router.chat(
            call.model,
            request,
            call.meta.clone(),
            None,
            None,
            call.task.cancel.as_ref(),
        );
        match tokio::time::timeout(timeout, chat).await {
            Err(_) => Err(format!("the summariser did not answer within {timeout:?}")),
            Ok(Err(e)) => Err(format!("the summariser failed: {e}")),
            Ok(Ok(outcome)) => {
                turn.add(&outcome);
                let text = outcome.response.message.content.trim();
                if text.is_empty() {
                    Err("the summariser answered with no text".into())
                } else {
                    Ok(text.to_string())
                }
            }
        }
    }
}

/// What one task's LLM calls share.
/// What every model step of one task shares.
struct Setup<'a> {
    def: &'a AgentDef,
    /// The system prompt with recalled memory.
    system: String,
    tools: Vec<ToolSpec>,
    budgets: &'a Budgets,
    /// The conversation's share of the window, after the recalled memory.
    conversation_budget: u64,
    tok: Tokenizer,
}

struct Call<'a> {
    model: &'a ModelKey,
    meta: &'a RequestMeta,
    task: &'a Task,
}

/// The running figures of one task.
struct Turn {
    /// Where the task's messages start in the conversation (its user message).
    start: usize,
    usage: Usage,
    cost_nanos: u64,
}

impl Turn {
    fn add(&mut self, outcome: &LlmOutcome) {
        self.cost_nanos = self.cost_nanos.saturating_add(outcome.cost_nanos);
        self.usage.input_tokens += outcome.response.usage.input_tokens;
        self.usage.output_tokens += outcome.response.usage.output_tokens;
        self.usage.reported &= outcome.response.usage.reported;
    }
}

/// Answers every tool call of the last assistant message that has no result yet with
/// `why`, so the conversation stays one a provider accepts.
fn close_tool_calls(conversation: &mut Vec<ChatMessage>, why: &str) {
    let Some(at) = conversation.iter().rposition(|m| m.role == Role::Assistant) else {
        return;
    };
    let calls = conversation[at].tool_calls.clone();
    for c in calls {
        let answered = conversation[at + 1..]
            .iter()
            .any(|m| m.tool_call_id.as_deref() == Some(c.id.as_str()));
        if !answered {
            conversation.push(ChatMessage::tool_result(c.id, why));
        }
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
