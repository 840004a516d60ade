//! LLM providers: the request and response types every provider speaks, the [`Provider`]
//! trait, and its implementations — [`openai::OpenAiProvider`] (the OpenAI-compatible Chat
//! Completions wire format of OpenAI, vLLM, Ollama, llama.cpp and LM Studio),
//! [`anthropic::AnthropicProvider`] (the Anthropic Messages API) and the offline
//! [`scripted::ScriptedProvider`].
//!
//! Providers are plain async clients; every agent reaches them through the
//! [`scheduler`], which caps concurrency, queues, rate-limits, caches and accounts cost in
//! the [`cost`] ledger.
//!
//! ```
//! use std::sync::Arc;
//!
//! use aios_core::records::Records;
//! use aios_llm::cost::CostLedger;
//! use aios_llm::scheduler::{
//!     LlmRouter, ModelKey, RateLimiter, RateLimits, RequestMeta, Scheduler, SchedulerConfig,
//! };
//! use aios_llm::scripted::{Script, ScriptedProvider};
//! use aios_llm::{ChatMessage, ChatRequest};
//! use aios_supervisor::snapshot::{SledStore, Snapshots};
//! use aios_supervisor::{Strategy, SupervisorSpec, TreeEnv, start_root};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let snapshots = Snapshots::new(Arc::new(SledStore::temporary().unwrap()));
//! let root = start_root(
//!     SupervisorSpec::new("root", Strategy::OneForOne),
//!     TreeEnv::new(Some(snapshots.clone())),
//! )
//! .await
//! .unwrap();
//! let ledger = CostLedger::open(Records::new(snapshots)).await.unwrap();
//! // Each `provider/model` is a supervised scheduler actor; the router finds it by key.
//! let (spec, scheduler) = Scheduler::spec(
//!     SchedulerConfig::new("scripted", "demo"),
//!     Arc::new(ScriptedProvider::new("scripted", Script::default())),
//!     Arc::new(RateLimiter::new(RateLimits::default())),
//!     ledger.clone(),
//! )
//! .unwrap();
//! root.supervisor().start_child(spec).await.unwrap();
//! let router = LlmRouter::new(vec![scheduler]).unwrap();
//! let request = ChatRequest {
//!     model: "demo".into(),
//!     messages: vec![ChatMessage::user("hello")],
//!     ..ChatRequest::default()
//! };
//! let meta = RequestMeta {
//!     agent: "writer".into(),
//!     tenant: "acme".into(),
//!     ..RequestMeta::default()
//! };
//! let outcome = router
//!     .chat(&ModelKey::new("scripted", "demo"), request, meta, None, None, None)
//!     .await
//!     .unwrap();
//! assert!(outcome.response.message.content.starts_with("[scripted]"));
//! assert!(outcome.response.usage.output_tokens > 0);
//! # root.shutdown(std::time::Duration::from_secs(5)).await.unwrap();
//! # });
//! ```
//!
//! Architecture invariant: this crate depends only on `aios-core` and `aios-supervisor`
//! among ours; agents, memory and tools build on it, never the other way round.
#![warn(missing_docs)]

pub mod anthropic;
pub mod cost;
mod error;
/// The HTTP plumbing the providers and the OpenAI-compatible embedder share.
pub mod http;
pub mod openai;
mod retry;
pub mod scheduler;
pub mod scripted;
pub mod tokens;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use self::error::LlmError;
pub use self::http::{ApiKey, HttpOptions};
pub use self::retry::{RETRY_ATTEMPTS_MAX, RetryPolicy, retry_after_from_message};

/// Who wrote a message in a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The user, or the agent's caller.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call, answering [`ChatMessage::tool_call_id`].
    Tool,
}

/// A tool call requested by the model.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call; a tool result names it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as the model wrote them: JSON text, which may be malformed.
    pub arguments: String,
}

/// One message of a conversation.
///
/// Kept free of `serde_json::Value` and of skipped fields so that it encodes with bincode in
/// snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Its author.
    pub role: Role,
    /// Its text (empty for an assistant message that only calls tools).
    pub content: String,
    /// Tool calls of an assistant message.
    pub tool_calls: Vec<ToolCall>,
    /// For a [`Role::Tool`] message: the call it answers.
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::plain(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::plain(Role::User, content)
    }

    /// An assistant message with text only.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::plain(Role::Assistant, content)
    }

    /// A tool result answering `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: Role::Tool,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.into()),
        }
    }

    fn plain(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

pub use aios_core::ToolSpec;

/// A chat request, independent of the wire format.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model name as the provider knows it.
    pub model: String,
    /// The conversation, system messages first.
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Sampling temperature; `Some(0.0)` marks a deterministic (cacheable) request.
    pub temperature: Option<f32>,
    /// Upper bound on generated tokens.
    pub max_tokens: Option<u32>,
    /// Asks for a JSON object answer (`response_format: json_object`) where supported.
    pub json_mode: bool,
}

impl ChatRequest {
    /// A rough token estimate of the prompt (characters / 4, at least the word count), used
    /// for token-per-minute budgeting before the provider reports real usage.
    pub fn estimated_input_tokens(&self) -> u64 {
        let chars: usize = self
            .messages
            .iter()
            .map(|m| {
                m.content.len()
                    + m.tool_calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.len())
                        .sum::<usize>()
            })
            .sum();
        (chars as u64).div_ceil(4).max(1)
    }

    /// True when the answer may be cached: temperature exactly zero.
    pub fn is_deterministic(&self) -> bool {
        self.temperature == Some(0.0)
    }
}

/// Why the model stopped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FinishReason {
    /// A natural end of the answer.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The model wants tool calls run.
    ToolCalls,
    /// The provider filtered the answer.
    ContentFilter,
    /// A stream ended without saying why (for example cut by the server).
    Unknown,
}

/// Tokens consumed by one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// False when the provider did not report usage (a cut stream) and the figures are
    /// estimates.
    pub reported: bool,
}

/// A provider's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The assistant message (text and/or tool calls).
    pub message: ChatMessage,
    /// Why generation stopped.
    pub finish: FinishReason,
    /// Token usage.
    pub usage: Usage,
    /// The model that answered, as reported by the provider.
    pub model: String,
}

/// A piece of a streamed answer, delivered while the answer is generated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delta {
    /// Text tokens.
    Text(String),
    /// A tool call began (its arguments follow and arrive whole in the final response).
    ToolCallStarted {
        /// The call id, when the provider sent one.
        id: String,
        /// The tool's name.
        name: String,
    },
}

/// Where a streaming provider sends [`Delta`]s. Bounded: a slow reader slows the stream.
pub type DeltaSink = mpsc::Sender<Delta>;

/// An LLM provider.
///
/// `chat` runs one request to completion, retrying by the provider's [`RetryPolicy`]; when
/// `stream` is given, it streams from the provider and forwards the deltas there. Errors are
/// typed ([`LlmError`]) and never contain the API key.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The provider's configured name (for example `openai` or `local-vllm`).
    fn name(&self) -> &str;

    /// Runs one chat request.
    ///
    /// # Errors
    /// The provider's typed error after retries are exhausted, or at once for errors that are
    /// not retried (authentication, bad request, context too long).
    async fn chat(
        &self,
        request: &ChatRequest,
        stream: Option<DeltaSink>,
    ) -> Result<ChatResponse, LlmError>;
}

/// A shared provider.
pub type SharedProvider = Arc<dyn Provider>;

/// Counts words the way the offline scripted provider and estimates do.
pub(crate) fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}
