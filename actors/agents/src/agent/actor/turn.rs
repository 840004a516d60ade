//! One task's turn: the prompt with recalled memory, model steps that fit the conversation
//! to the window (summarising or cutting older turns), and the tool calls the model asks
//! for, until a final answer or a limit.

use super::*;

impl AgentWorker {
    pub(super) async fn run(
        &self,
        task: Task,
        state: &mut AgentState,
    ) -> Result<TaskOutput, AgentError> {
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

/// What one task's LLM calls share.
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

impl Turn {
    fn add(&mut self, outcome: &LlmOutcome) {
        self.cost_nanos = self.cost_nanos.saturating_add(outcome.cost_nanos);
        self.usage.input_tokens += outcome.response.usage.input_tokens;
        self.usage.output_tokens += outcome.response.usage.output_tokens;
        self.usage.reported &= outcome.response.usage.reported;
    }
}
