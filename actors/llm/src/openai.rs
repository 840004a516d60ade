//! The OpenAI-compatible Chat Completions client (`POST {base_url}/v1/chat/completions`),
//! spoken by OpenAI, vLLM, Ollama, llama.cpp's server and LM Studio.

use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{read_body, send_checked, transport_error};
use super::{
    ApiKey, ChatMessage, ChatRequest, ChatResponse, Delta, DeltaSink, FinishReason, HttpOptions,
    LlmError, Provider, RetryPolicy, Role, ToolCall, Usage, word_count,
};

/// Bound on tool calls assembled from one streamed answer.
const STREAM_TOOL_CALLS_MAX: usize = 128;

/// How to reach an OpenAI-compatible server.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// The provider's name in this node's configuration (appears in errors and metrics).
    pub name: String,
    /// The server's base URL without `/v1` (for example `https://api.openai.com`).
    pub base_url: String,
    /// The API key, sent as `Authorization: Bearer`; `None` for local servers.
    pub api_key: Option<ApiKey>,
    /// Timeouts.
    pub http: HttpOptions,
    /// Retries.
    pub retry: RetryPolicy,
}

/// An OpenAI-compatible Chat Completions client.
#[derive(Debug)]
pub struct OpenAiProvider {
    config: OpenAiConfig,
    client: reqwest::Client,
    url: String,
}

impl OpenAiProvider {
    /// Builds the client.
    ///
    /// # Errors
    /// An invalid base URL or retry policy, or an HTTP client that cannot be built.
    pub fn new(config: OpenAiConfig) -> Result<Self, String> {
        let url = endpoint(&config.base_url, "/v1/chat/completions")?;
        config.retry.validate()?;
        let client = config.http.client()?;
        Ok(Self {
            config,
            client,
            url,
        })
    }

    async fn attempt(
        &self,
        body: &Value,
        stream: Option<&DeltaSink>,
        request: &ChatRequest,
    ) -> Result<ChatResponse, LlmError> {
        let name = &self.config.name;
        let key = self.config.api_key.as_ref();
        let timeout = self.config.http.request_timeout;
        let mut builder = self.client.post(&self.url).json(body);
        if let Some(key) = key {
            builder = builder.bearer_auth(key.expose());
        }
        let response = send_checked(name, key, timeout, builder).await?;
        match stream {
            None => {
                let bytes = read_body(name, key, timeout, response).await?;
                parse_completion(name, bytes.as_ref())
            }
            Some(sink) => read_stream(name, key, timeout, response, sink, request).await,
        }
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn chat(
        &self,
        request: &ChatRequest,
        stream: Option<DeltaSink>,
    ) -> Result<ChatResponse, LlmError> {
        let body = request_body(request, stream.is_some());
        self.config
            .retry
            .run(|_| self.attempt(&body, stream.as_ref(), request))
            .await
    }
}

/// Joins a base URL and a path, refusing anything that is not http(s).
pub fn endpoint(base_url: &str, path: &str) -> Result<String, String> {
    let base = base_url.trim().trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(format!(
            "base_url must start with http:// or https://, got {base_url:?}"
        ));
    }
    Ok(format!("{base}{path}"))
}

/// The wire form of a request.
pub(crate) fn request_body(request: &ChatRequest, stream: bool) -> Value {
    let messages: Vec<Value> = request.messages.iter().map(wire_message).collect();
    let mut body = json!({ "model": request.model, "messages": messages });
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = request.max_tokens {
        body["max_tokens"] = json!(m);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters}})
            })
            .collect();
    }
    if request.json_mode {
        body["response_format"] = json!({"type": "json_object"});
    }
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn wire_message(m: &ChatMessage) -> Value {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut v = json!({ "role": role, "content": m.content });
    if m.role == Role::Assistant && !m.tool_calls.is_empty() {
        if m.content.is_empty() {
            v["content"] = Value::Null;
        }
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                json!({"id": c.id, "type": "function",
                       "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    v
}

#[derive(Deserialize)]
struct WireCompletion {
    #[serde(default)]
    model: String,
    choices: Vec<WireChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: String,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

fn finish_reason(s: Option<&str>) -> FinishReason {
    match s {
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Unknown,
    }
}

fn invalid(provider: &str, message: impl Into<String>) -> LlmError {
    LlmError::InvalidResponse {
        provider: provider.to_string(),
        message: message.into(),
    }
}

fn parse_completion(provider: &str, bytes: &[u8]) -> Result<ChatResponse, LlmError> {
    let wire: WireCompletion = serde_json::from_slice(bytes)
        .map_err(|e| invalid(provider, format!("not a chat.completion: {e}")))?;
    let choice = wire
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| invalid(provider, "no choices in the completion"))?;
    let tool_calls: Vec<ToolCall> = choice
        .message
        .tool_calls
        .into_iter()
        .map(|c| ToolCall {
            id: c.id,
            name: c.function.name,
            arguments: c.function.arguments,
        })
        .collect();
    let content = choice.message.content.unwrap_or_default();
    let usage = match wire.usage {
        Some(u) => Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            reported: true,
        },
        None => Usage {
            input_tokens: 0,
            output_tokens: word_count(&content),
            reported: false,
        },
    };
    let mut finish = finish_reason(choice.finish_reason.as_deref());
    if finish == FinishReason::Unknown && !tool_calls.is_empty() {
        finish = FinishReason::ToolCalls;
    }
    Ok(ChatResponse {
        message: ChatMessage {
            role: Role::Assistant,
            content,
            tool_calls,
            tool_call_id: None,
        },
        finish,
        usage,
        model: wire.model,
    })
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    model: String,
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    delta: WireDelta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireDelta {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCallDelta>,
}

#[derive(Deserialize)]
struct WireToolCallDelta {
    #[serde(default)]
    index: u32,
    id: Option<String>,
    function: Option<WireFunctionDelta>,
}

#[derive(Deserialize)]
struct WireFunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

struct PartialCall {
    index: u32,
    id: String,
    name: String,
    arguments: String,
}

/// Reassembles tool calls from stream fragments: by `index`, and by `id` where a server
/// reuses one index for parallel calls (Ollama-style).
#[derive(Default)]
struct CallAssembler {
    calls: Vec<PartialCall>,
}

impl CallAssembler {
    /// Adds a fragment; returns `Some((id, name))` when it starts a new call.
    fn push(&mut self, d: WireToolCallDelta) -> Option<(String, String)> {
        let (name, args) = match d.function {
            Some(f) => (f.name, f.arguments),
            None => (None, None),
        };
        let slot = match &d.id {
            Some(id) if !id.is_empty() => {
                self.calls.iter().position(|c| &c.id == id).or_else(|| {
                    self.calls
                        .iter()
                        .position(|c| c.index == d.index && c.id.is_empty())
                })
            }
            _ => self.calls.iter().rposition(|c| c.index == d.index),
        };
        let (i, started) = match slot {
            Some(i) => (i, false),
            None => {
                if self.calls.len() >= STREAM_TOOL_CALLS_MAX {
                    return None;
                }
                self.calls.push(PartialCall {
                    index: d.index,
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
                (self.calls.len() - 1, true)
            }
        };
        let call = &mut self.calls[i];
        if let Some(id) = d.id.filter(|id| !id.is_empty()) {
            call.id = id;
        }
        if let Some(name) = name {
            call.name.push_str(&name);
        }
        if let Some(args) = args {
            call.arguments.push_str(&args);
        }
        started.then(|| (call.id.clone(), call.name.clone()))
    }

    fn finish(self) -> Vec<ToolCall> {
        self.calls
            .into_iter()
            .enumerate()
            .map(|(n, c)| ToolCall {
                id: if c.id.is_empty() {
                    format!("call_{n}")
                } else {
                    c.id
                },
                name: c.name,
                arguments: c.arguments,
            })
            .collect()
    }
}

async fn read_stream(
    provider: &str,
    key: Option<&ApiKey>,
    timeout: Duration,
    response: reqwest::Response,
    sink: &DeltaSink,
    request: &ChatRequest,
) -> Result<ChatResponse, LlmError> {
    use eventsource_stream::Eventsource;

    let mut events = response.bytes_stream().eventsource();
    let mut content = String::new();
    let mut calls = CallAssembler::default();
    let mut finish: Option<FinishReason> = None;
    let mut usage: Option<WireUsage> = None;
    let mut model = String::new();
    let mut done = false;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| match e {
            eventsource_stream::EventStreamError::Transport(t) => {
                transport_error(provider, key, timeout, &t)
            }
            other => invalid(provider, format!("bad event stream: {other}")),
        })?;
        if event.data.trim() == "[DONE]" {
            done = true;
            break;
        }
        let chunk: WireChunk = serde_json::from_str(&event.data)
            .map_err(|e| invalid(provider, format!("bad chunk {:?}: {e}", event.data)))?;
        if model.is_empty() {
            model = chunk.model;
        }
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                content.push_str(&text);
                // A reader that went away does not stop the answer.
                let _ = sink.send(Delta::Text(text)).await;
            }
            for d in choice.delta.tool_calls {
                if let Some((id, name)) = calls.push(d) {
                    let _ = sink.send(Delta::ToolCallStarted { id, name }).await;
                }
            }
            if let Some(r) = choice.finish_reason {
                finish = Some(finish_reason(Some(&r)));
            }
        }
    }
    // A stream cut before its finish reason is a dropped connection (retried); one cut after
    // it lost only the usage chunk, which is then estimated.
    let Some(mut finish) = finish else {
        return Err(LlmError::Connection {
            provider: provider.to_string(),
            message: format!(
                "the stream ended before the answer was complete ({})",
                if done {
                    "[DONE] without finish_reason"
                } else {
                    "no [DONE]"
                }
            ),
        });
    };
    let tool_calls = calls.finish();
    if finish == FinishReason::Unknown && !tool_calls.is_empty() {
        finish = FinishReason::ToolCalls;
    }
    let usage = match usage {
        Some(u) => Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            reported: true,
        },
        None => Usage {
            input_tokens: request.estimated_input_tokens(),
            output_tokens: word_count(&content) + tool_calls.len() as u64,
            reported: false,
        },
    };
    Ok(ChatResponse {
        message: ChatMessage {
            role: Role::Assistant,
            content,
            tool_calls,
            tool_call_id: None,
        },
        finish,
        usage,
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> WireToolCallDelta {
        WireToolCallDelta {
            index,
            id: id.map(str::to_string),
            function: Some(WireFunctionDelta {
                name: name.map(str::to_string),
                arguments: Some(args.to_string()),
            }),
        }
    }

    #[test]
    fn assembles_calls_by_index_and_by_id_when_the_index_is_reused() {
        let mut a = CallAssembler::default();
        assert!(a.push(delta(0, Some("a"), Some("f"), "")).is_some());
        assert!(a.push(delta(1, Some("b"), Some("g"), "")).is_some());
        a.push(delta(0, None, None, "{\"x\""));
        a.push(delta(1, None, None, "{}"));
        a.push(delta(0, None, None, ":1}"));
        let calls = a.finish();
        assert_eq!(calls[0].arguments, "{\"x\":1}");
        assert_eq!(calls[1].arguments, "{}");

        let mut a = CallAssembler::default();
        a.push(delta(0, Some("a"), Some("f"), "{\"q\":"));
        a.push(delta(0, None, None, "1}"));
        a.push(delta(0, Some("b"), Some("g"), "{\"r\":"));
        a.push(delta(0, None, None, "2}"));
        let calls = a.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].arguments.as_str()),
            ("a", "{\"q\":1}")
        );
        assert_eq!(
            (calls[1].id.as_str(), calls[1].arguments.as_str()),
            ("b", "{\"r\":2}")
        );
    }

    #[test]
    fn endpoint_accepts_base_with_or_without_v1() {
        assert_eq!(
            endpoint("http://127.0.0.1:8080/v1/", "/v1/chat/completions").as_deref(),
            Ok("http://127.0.0.1:8080/v1/chat/completions")
        );
        assert!(endpoint("127.0.0.1:8080", "/x").is_err());
    }

    #[test]
    fn tool_results_and_calls_go_out_in_wire_form() {
        let mut assistant = ChatMessage::assistant("");
        assistant.tool_calls.push(ToolCall {
            id: "c1".into(),
            name: "calc".into(),
            arguments: "{\"e\":\"1+1\"}".into(),
        });
        let req = ChatRequest {
            model: "m".into(),
            messages: vec![
                ChatMessage::user("hi"),
                assistant,
                ChatMessage::tool_result("c1", "2"),
            ],
            ..ChatRequest::default()
        };
        let body = request_body(&req, true);
        assert_eq!(body["messages"][1]["content"], Value::Null);
        assert_eq!(
            body["messages"][1]["tool_calls"][0]["function"]["arguments"],
            "{\"e\":\"1+1\"}"
        );
        assert_eq!(body["messages"][2]["tool_call_id"], "c1");
        assert_eq!(body["stream_options"]["include_usage"], true);
    }
}
