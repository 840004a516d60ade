//! Routing, the checks every request goes through, in-flight accounting and reply resolution.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::Stream;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::text::{self, words};
use crate::{FakeConfig, FakeReply, FakeToolCall, RecordedRequest, anthropic, openai};

/// Everything the handlers and [`crate::FakeLlm`] share.
pub(crate) struct Shared {
    state: Mutex<State>,
    shutdown: watch::Receiver<bool>,
    in_flight_tx: watch::Sender<usize>,
    next_id: AtomicU64,
}

/// Mutable state, behind one lock so that the capacity check and the in-flight increment are
/// atomic together.
pub(crate) struct State {
    pub(crate) config: FakeConfig,
    pub(crate) queue: VecDeque<FakeReply>,
    pub(crate) default: FakeReply,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) request_count: usize,
    pub(crate) in_flight: usize,
    pub(crate) max_in_flight: usize,
}

impl Shared {
    pub(crate) fn new(config: FakeConfig, shutdown: watch::Receiver<bool>) -> Shared {
        Shared {
            state: Mutex::new(State {
                config,
                queue: VecDeque::new(),
                default: FakeReply::Echo,
                requests: Vec::new(),
                request_count: 0,
                in_flight: 0,
                max_in_flight: 0,
            }),
            shutdown,
            in_flight_tx: watch::Sender::new(0),
            next_id: AtomicU64::new(1),
        }
    }

    /// Locks the state; a panic while holding the lock cannot leave it inconsistent (every
    /// critical section is a few plain assignments), so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn in_flight_rx(&self) -> watch::Receiver<usize> {
        self.in_flight_tx.subscribe()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs `fut` unless the server shuts down first; `false` means it shut down.
    async fn wait_or_shutdown(&self, fut: impl Future<Output = ()>) -> bool {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            () = fut => true,
            // Err: the sender is gone, which means shutting down as well.
            _ = shutdown.wait_for(|stop| *stop) => false,
        }
    }

    fn record(&self, path: &str, headers: &HeaderMap, bytes: &[u8]) -> Result<Value, ()> {
        let parsed = serde_json::from_slice::<Value>(bytes);
        {
            let mut state = self.lock();
            state.request_count += 1;
            if state.config.forget_requests {
                return parsed.map_err(|_| ());
            }
        }
        let body = match &parsed {
            Ok(value) => value.clone(),
            Err(_) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        };
        let headers = headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        self.lock().requests.push(RecordedRequest {
            path: path.to_owned(),
            headers,
            body,
        });
        parsed.map_err(|_| ())
    }
}

/// Decrements the in-flight count when dropped.
struct InFlightGuard(Arc<Shared>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        self.0.in_flight_tx.send_replace(state.in_flight);
    }
}

/// A response body made of precomputed SSE events that holds the in-flight guard until the
/// body ends or is dropped.
struct GuardedEvents {
    events: std::vec::IntoIter<Bytes>,
    guard: Option<InFlightGuard>,
}

impl Stream for GuardedEvents {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.events.next() {
            Some(event) => Poll::Ready(Some(Ok(event))),
            None => {
                this.guard = None;
                Poll::Ready(None)
            }
        }
    }
}

/// The wire protocol of a chat request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    OpenAi,
    Anthropic,
}

/// A terminal reply, after waits, closures and echo are resolved.
enum Outcome {
    Answer(Answer),
    Status {
        status: u16,
        retry_after: Option<String>,
        body: String,
    },
    Drop,
    Cut(String),
}

/// A successful answer.
pub(crate) struct Answer {
    /// `None` for tool calls only.
    pub(crate) text: Option<String>,
    pub(crate) calls: Vec<FakeToolCall>,
}

/// Token usage of one answer.
#[derive(Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) prompt: usize,
    pub(crate) completion: usize,
}

/// Identity of one response.
pub(crate) struct Meta {
    pub(crate) id: String,
    pub(crate) model: String,
    pub(crate) created: u64,
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/messages", post(anthropic_messages))
        .route("/v1/embeddings", post(embeddings))
        .fallback(fallback)
        .with_state(shared)
}

async fn openai_chat(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    chat(shared, Proto::OpenAi, headers, bytes).await
}

async fn anthropic_messages(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    chat(shared, Proto::Anthropic, headers, bytes).await
}

async fn fallback(
    AxumState(shared): AxumState<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let _ = shared.record(uri.path(), &headers, &bytes);
    openai::error(
        StatusCode::NOT_FOUND,
        &format!("Unknown path {} (fake LLM provider)", uri.path()),
        "invalid_request_error",
        None,
    )
}

fn authorized(proto: Proto, headers: &HeaderMap, key: Option<&str>) -> bool {
    let Some(key) = key else {
        return true;
    };
    match proto {
        Proto::OpenAi => {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                == Some(key)
        }
        Proto::Anthropic => headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(key),
    }
}

fn unauthorized(proto: Proto) -> Response {
    match proto {
        Proto::OpenAi => openai::error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided. You can find your API key in your account settings.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        Proto::Anthropic => anthropic::error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        ),
    }
}

fn bad_request(proto: Proto, message: &str) -> Response {
    match proto {
        Proto::OpenAi => openai::error(
            StatusCode::BAD_REQUEST,
            message,
            "invalid_request_error",
            None,
        ),
        Proto::Anthropic => {
            anthropic::error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }
}

fn context_exceeded(proto: Proto, chars: usize, limit: usize) -> Response {
    match proto {
        Proto::OpenAi => openai::error(
            StatusCode::BAD_REQUEST,
            &format!(
                "This model's maximum context length is {limit} characters. However, your \
                 messages resulted in {chars} characters. Please reduce the length of the messages."
            ),
            "invalid_request_error",
            Some("context_length_exceeded"),
        ),
        Proto::Anthropic => anthropic::error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("prompt is too long: {chars} characters > {limit} maximum"),
        ),
    }
}

fn over_capacity(proto: Proto, retry_after_s: f64) -> Response {
    let secs = text::format_secs(retry_after_s);
    let mut response = match proto {
        Proto::OpenAi => openai::error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Rate limit reached for requests. Please try again in {secs}s."),
            "requests",
            Some("rate_limit_exceeded"),
        ),
        Proto::Anthropic => anthropic::error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            &format!(
                "Number of concurrent requests has exceeded your rate limit. Please try again \
                 in {secs}s."
            ),
        ),
    };
    if let Ok(value) = HeaderValue::from_str(&secs) {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}

/// A response whose body fails at once, so that the connection is aborted without a complete
/// response.
fn drop_connection() -> Response {
    let failing =
        futures_util::stream::once(std::future::ready(Err::<Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "fake LLM provider dropped the connection",
        ))));
    Response::new(Body::from_stream(failing))
}

fn status_response(status: u16, retry_after: Option<String>, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, [(CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}

fn sse(events: Vec<Bytes>, guard: InFlightGuard) -> Response {
    let body = Body::from_stream(GuardedEvents {
        events: events.into_iter(),
        guard: Some(guard),
    });
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub(crate) fn json_response(value: &Value) -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn resolve(shared: &Shared, mut reply: FakeReply, body: &Value) -> Outcome {
    loop {
        reply = match reply {
            FakeReply::Text(text) => {
                return Outcome::Answer(Answer {
                    text: Some(text),
                    calls: Vec::new(),
                });
            }
            FakeReply::ToolCalls(calls) => return Outcome::Answer(Answer { text: None, calls }),
            FakeReply::TextAndToolCalls(text, calls) => {
                return Outcome::Answer(Answer {
                    text: Some(text),
                    calls,
                });
            }
            FakeReply::Status {
                status,
                retry_after,
                body,
            } => {
                return Outcome::Status {
                    status,
                    retry_after,
                    body,
                };
            }
            FakeReply::DropConnection => return Outcome::Drop,
            FakeReply::CutStream(text) => return Outcome::Cut(text),
            FakeReply::Echo => {
                return Outcome::Answer(Answer {
                    text: Some(format!("echo: {}", text::last_user_text(body))),
                    calls: Vec::new(),
                });
            }
            FakeReply::Dynamic(decide) => decide(body),
            FakeReply::SlowFirstByte(delay, inner) => {
                if !shared.wait_or_shutdown(tokio::time::sleep(delay)).await {
                    return Outcome::Drop;
                }
                *inner
            }
            FakeReply::Gated(gate, inner) => {
                if !shared.wait_or_shutdown(gate.notified()).await {
                    return Outcome::Drop;
                }
                *inner
            }
        };
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn chat(shared: Arc<Shared>, proto: Proto, headers: HeaderMap, bytes: Bytes) -> Response {
    let path = match proto {
        Proto::OpenAi => "/v1/chat/completions",
        Proto::Anthropic => "/v1/messages",
    };
    let parsed = shared.record(path, &headers, &bytes);
    let config = shared.lock().config.clone();
    if !authorized(proto, &headers, config.api_key.as_deref()) {
        return unauthorized(proto);
    }
    if proto == Proto::Anthropic && !headers.contains_key("anthropic-version") {
        return bad_request(proto, "anthropic-version: header is required");
    }
    let Ok(body) = parsed else {
        return bad_request(proto, "We could not parse the JSON body of your request.");
    };
    if !body.is_object() {
        return bad_request(proto, "The request body must be a JSON object.");
    }
    let prompt = text::prompt_texts(&body);
    let prompt_tokens: usize = prompt.iter().map(|t| words(t)).sum();
    if let Some(limit) = config.context_limit_chars {
        let chars: usize = prompt.iter().map(|t| t.chars().count()).sum();
        if chars > limit {
            return context_exceeded(proto, chars, limit);
        }
    }

    // Capacity check, in-flight increment and queue pop, atomically.
    let (guard, reply, latency) = {
        let mut state = shared.lock();
        if let Some(capacity) = state.config.capacity
            && state.in_flight >= capacity
        {
            let retry_after_s = state.config.retry_after_s;
            drop(state);
            return over_capacity(proto, retry_after_s);
        }
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        shared.in_flight_tx.send_replace(state.in_flight);
        let reply = match state.queue.pop_front() {
            Some(reply) => reply,
            None => state.default.clone(),
        };
        (
            InFlightGuard(Arc::clone(&shared)),
            reply,
            state.config.latency,
        )
    };

    if !latency.is_zero() && !shared.wait_or_shutdown(tokio::time::sleep(latency)).await {
        return drop_connection();
    }
    let outcome = resolve(&shared, reply, &body).await;

    let stream = body["stream"] == true;
    let include_usage = body["stream_options"]["include_usage"] == true;
    let meta = Meta {
        id: match proto {
            Proto::OpenAi => format!("chatcmpl-fake-{}", shared.next_id()),
            Proto::Anthropic => format!("msg_fake_{}", shared.next_id()),
        },
        model: body["model"].as_str().unwrap_or("fake-model").to_owned(),
        created: unix_now(),
    };
    match outcome {
        Outcome::Status {
            status,
            retry_after,
            body,
        } => status_response(status, retry_after, body),
        Outcome::Drop => drop_connection(),
        Outcome::Cut(text) if stream => {
            let events = match proto {
                Proto::OpenAi => openai::cut_stream(&meta, &text, include_usage),
                Proto::Anthropic => anthropic::cut_stream(&meta, &text, prompt_tokens),
            };
            sse(events, guard)
        }
        Outcome::Cut(_) => drop_connection(),
        Outcome::Answer(answer) => {
            let completion = answer.text.as_deref().map_or(0, words) + answer.calls.len();
            let usage = Usage {
                prompt: prompt_tokens,
                completion,
            };
            match (proto, stream) {
                (Proto::OpenAi, false) => json_response(&openai::completion(&meta, &answer, usage)),
                (Proto::OpenAi, true) => {
                    sse(openai::stream(&meta, &answer, usage, include_usage), guard)
                }
                (Proto::Anthropic, false) => {
                    json_response(&anthropic::message(&meta, &answer, usage))
                }
                (Proto::Anthropic, true) => sse(anthropic::stream(&meta, &answer, usage), guard),
            }
        }
    }
}

async fn embeddings(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let parsed = shared.record("/v1/embeddings", &headers, &bytes);
    let config = shared.lock().config.clone();
    if !authorized(Proto::OpenAi, &headers, config.api_key.as_deref()) {
        return unauthorized(Proto::OpenAi);
    }
    let Ok(body) = parsed else {
        return bad_request(
            Proto::OpenAi,
            "We could not parse the JSON body of your request.",
        );
    };
    let inputs: Vec<String> = match &body["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => {
            return bad_request(
                Proto::OpenAi,
                "'input' is a required property (a string or an array of strings).",
            );
        }
    };
    if !config.latency.is_zero()
        && !shared
            .wait_or_shutdown(tokio::time::sleep(config.latency))
            .await
    {
        return drop_connection();
    }
    let tokens: usize = inputs.iter().map(|t| words(t)).sum();
    // Reversed on purpose: clients must order by `index`, not by position.
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index, "embedding": text::embedding(text)})
        })
        .collect();
    json_response(&json!({
        "object": "list",
        "data": data,
        "model": body["model"].as_str().unwrap_or("fake-embedding"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}
