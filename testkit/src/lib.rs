//! A fake LLM provider: a real HTTP server on `127.0.0.1:<ephemeral port>` that speaks the
//! OpenAI Chat Completions format (`POST /v1/chat/completions`, streamed or not), the Anthropic
//! Messages format (`POST /v1/messages`, streamed or not) and `POST /v1/embeddings`, as described
//! in `LLM-WIRE-NOTES.md`. Tests and benchmarks script its replies ([`FakeReply`]), its failure
//! modes ([`FakeConfig`]) and read back what it received ([`RecordedRequest`]).
//!
//! # Determinism
//! - **Token usage.** Prompt tokens are the whitespace-separated words of every message content
//!   in the request: string contents, the `text` of content blocks, and tool results (an OpenAI
//!   `role: "tool"` message's content, an Anthropic `tool_result` block's content), plus the
//!   Anthropic top-level `system`. Tool-call arguments sent back by the client are not counted.
//!   Completion tokens are the words of the reply text plus one per tool call.
//! - **Context limit.** [`FakeConfig::context_limit_chars`] compares the total number of
//!   characters (`char`s) of those same texts.
//! - **Queue.** Scripted replies ([`FakeLlm::push_script`]) are consumed in arrival order, and
//!   only by chat requests that pass the key, header, JSON, context and capacity checks; the
//!   others get their error without consuming a reply.
//! - **Embeddings** are 8-dimensional unit vectors derived from an FNV-1a hash of the text.
//!
//! # Holding requests
//! [`FakeReply::Gated`] waits on `Notify::notified()`: release it with `notify_one()`, which stores
//! a permit when the request is not yet waiting, so there is no race. A `Notify` stores at most one
//! permit: to hold several requests, give each its own `Notify` (or release them one at a time
//! after [`FakeLlm::wait_in_flight`]).

#![warn(missing_docs)]

mod anthropic;
mod openai;
mod server;
pub mod source;
mod text;
mod wait;

pub use wait::{EVENTUALLY_PAUSE_MAX, EVENTUALLY_PAUSE_MIN, Outcome, eventually};

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::server::Shared;

/// A running fake LLM provider. Dropping it stops accepting connections; prefer
/// [`FakeLlm::shutdown`], which also waits for the server to stop.
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl FakeLlm {
    /// Starts the server on 127.0.0.1:0 with the given behaviour. The default reply is
    /// [`FakeReply::Echo`].
    ///
    /// # Panics
    /// If no loopback port can be bound (a broken test machine).
    pub async fn start(config: FakeConfig) -> FakeLlm {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding an ephemeral port on 127.0.0.1 must succeed");
        let addr = listener
            .local_addr()
            .expect("a bound TCP listener has a local address");
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(config, shutdown_rx.clone()));
        let app = server::router(Arc::clone(&shared));
        let mut signal = shutdown_rx;
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                // An error means the sender is gone, which also means "stop".
                let _ = signal.wait_for(|stop| *stop).await;
            });
            // Accept errors are retried inside axum; nothing useful to report here.
            let _ = serve.await;
        });
        FakeLlm {
            addr,
            shared,
            shutdown_tx,
            task: Some(task),
        }
    }

    /// The server's base URL, `"http://127.0.0.1:PORT"` (no trailing slash, no `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received (all paths, including rejected ones), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The number of requests received so far (all paths, including rejected ones).
    pub fn request_count(&self) -> usize {
        self.shared.lock().request_count
    }

    /// The highest number of accepted chat requests (both protocols) served at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.shared.lock().max_in_flight
    }

    /// The number of accepted chat requests (both protocols) being served now. A streamed
    /// response counts until its body ends or the client drops it.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// Waits until exactly `n` chat requests are in flight (returns at once if they already
    /// are). Use it to synchronise with [`FakeReply::Gated`] requests instead of sleeping.
    pub async fn wait_in_flight(&self, n: usize) {
        let mut rx = self.shared.in_flight_rx();
        // The sender lives in `self.shared`, which outlives this borrow: no error possible.
        let _ = rx.wait_for(|current| *current == n).await;
    }

    /// Queues a reply; queued replies are served FIFO (in request arrival order) before the
    /// default.
    pub fn push_script(&self, reply: FakeReply) {
        self.shared.lock().queue.push_back(reply);
    }

    /// Sets the reply used when the queue is empty.
    pub fn set_default(&self, reply: FakeReply) {
        self.shared.lock().default = reply;
    }

    /// Replaces the behaviour; applies to requests arriving afterwards.
    pub fn set_config(&self, config: FakeConfig) {
        self.shared.lock().config = config;
    }

    /// Stops the server: stops accepting, releases requests waiting on latency, gates or slow
    /// first bytes (their connections are dropped), and waits (at most 5 s) for it to stop.
    pub async fn shutdown(mut self) {
        self.shutdown_tx.send_replace(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.shutdown_tx.send_replace(true);
    }
}

impl fmt::Debug for FakeLlm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeLlm")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// How the fake behaves, besides what it replies.
#[derive(Clone, Debug, Default)]
pub struct FakeConfig {
    /// When `Some(n)`: a chat request arriving while `n` chat requests are already in flight gets
    /// 429 with `Retry-After: <retry_after_s>` (models a real rate-limited provider).
    pub capacity: Option<usize>,
    /// Seconds written in the capacity 429's `Retry-After` header (up to 3 decimals, e.g.
    /// `"0.05"`, `"2"`) and in its JSON error body ("Please try again in 0.05s.").
    pub retry_after_s: f64,
    /// Each accepted request (chat or embeddings) waits this long before answering.
    pub latency: Duration,
    /// When `Some`, requests without `Authorization: Bearer <key>` (OpenAI paths) or
    /// `x-api-key: <key>` (Anthropic) get 401 with a provider-style error body that does not echo
    /// any key.
    pub api_key: Option<String>,
    /// When `Some`, a chat request whose message contents total more characters than this gets
    /// 400 "context length exceeded" (OpenAI: `code: "context_length_exceeded"`; Anthropic:
    /// `invalid_request_error` "prompt is too long: ...").
    pub context_limit_chars: Option<usize>,
    /// When true, requests are counted but not kept (`requests()` stays empty): for
    /// benchmarks, where keeping every body would cost the fake memory and time.
    pub forget_requests: bool,
}

/// What the fake answers to one chat request.
#[derive(Clone)]
pub enum FakeReply {
    /// A text answer (`finish_reason: "stop"` / `stop_reason: "end_turn"`).
    Text(String),
    /// Tool calls only (`finish_reason: "tool_calls"` / `stop_reason: "tool_use"`; OpenAI
    /// `message.content` is null).
    ToolCalls(Vec<FakeToolCall>),
    /// Text followed by tool calls (`finish_reason: "tool_calls"` / `stop_reason: "tool_use"`).
    TextAndToolCalls(String, Vec<FakeToolCall>),
    /// Any status with an optional `Retry-After` header and a raw body (served as
    /// `application/json`), e.g. 429 with
    /// `{"error":{"message":"Rate limit reached. Please try again in 2.5s."}}`, 500, 529.
    Status {
        /// HTTP status code (an invalid code is served as 500).
        status: u16,
        /// `Retry-After` header value, written verbatim.
        retry_after: Option<String>,
        /// Raw response body.
        body: String,
    },
    /// Closes the connection without a response: the server sends nothing and aborts the
    /// connection, so the client sees a connection error (or, at worst, a body error).
    DropConnection,
    /// Waits this long before sending anything, then answers with the inner reply.
    SlowFirstByte(Duration, Box<FakeReply>),
    /// Streamed request: streams this text word by word (OpenAI: after the role chunk;
    /// Anthropic: after `message_start`, `ping`, `content_block_start`), then ends the body
    /// cleanly without a finish chunk, usage chunk or `[DONE]` (Anthropic: without
    /// `content_block_stop`, `message_delta`, `message_stop`). Non-streamed request: behaves
    /// like [`FakeReply::DropConnection`].
    CutStream(String),
    /// Answers `"echo: <content of the last user message>"` (the default default). Block
    /// contents are the block texts joined by a space.
    Echo,
    /// Calls a closure to decide, given the parsed request JSON.
    Dynamic(Arc<dyn Fn(&serde_json::Value) -> FakeReply + Send + Sync>),
    /// Waits until `gate` is notified (`Notify::notified`) before answering with the inner reply;
    /// lets a test hold a request in flight. Release with `notify_one()`.
    Gated(Arc<Notify>, Box<FakeReply>),
}

impl fmt::Debug for FakeReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FakeReply::Text(text) => f.debug_tuple("Text").field(text).finish(),
            FakeReply::ToolCalls(calls) => f.debug_tuple("ToolCalls").field(calls).finish(),
            FakeReply::TextAndToolCalls(text, calls) => f
                .debug_tuple("TextAndToolCalls")
                .field(text)
                .field(calls)
                .finish(),
            FakeReply::Status {
                status,
                retry_after,
                body,
            } => f
                .debug_struct("Status")
                .field("status", status)
                .field("retry_after", retry_after)
                .field("body", body)
                .finish(),
            FakeReply::DropConnection => f.write_str("DropConnection"),
            FakeReply::SlowFirstByte(delay, inner) => f
                .debug_tuple("SlowFirstByte")
                .field(delay)
                .field(inner)
                .finish(),
            FakeReply::CutStream(text) => f.debug_tuple("CutStream").field(text).finish(),
            FakeReply::Echo => f.write_str("Echo"),
            FakeReply::Dynamic(_) => f.write_str("Dynamic(..)"),
            FakeReply::Gated(_, inner) => f.debug_tuple("Gated").field(&"..").field(inner).finish(),
        }
    }
}

/// One tool call in a [`FakeReply`].
#[derive(Clone, Debug)]
pub struct FakeToolCall {
    /// Call id (OpenAI `tool_calls[].id`, Anthropic `tool_use.id`).
    pub id: String,
    /// Function / tool name.
    pub name: String,
    /// Raw JSON text of the arguments; may be deliberately malformed (Anthropic then gets
    /// `input: {}` when not streamed, and the raw fragments when streamed).
    pub arguments: String,
    /// Streaming: OpenAI index to use (parallel calls normally get distinct indexes; set all to 0
    /// to model the Ollama-style reused-index variant where only `id` tells them apart).
    pub index: u32,
}

impl FakeToolCall {
    /// A call with the given id, name, arguments and streaming index.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
        index: u32,
    ) -> Self {
        FakeToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
            index,
        }
    }
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Request path: `"/v1/chat/completions"`, `"/v1/messages"`, `"/v1/embeddings"` (or any
    /// other path, answered 404).
    pub path: String,
    /// Headers, names lower-cased, values as (lossy) text, in received order.
    pub headers: Vec<(String, String)>,
    /// Parsed JSON body; a body that is not JSON is recorded as a JSON string of its text.
    pub body: serde_json::Value,
}

impl RecordedRequest {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}
