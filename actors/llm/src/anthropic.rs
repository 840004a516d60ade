//! The Anthropic Messages API client (`POST {base_url}/v1/messages`).

use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{read_body, send_checked, transport_error};
use super::openai::endpoint;
use super::{
    ApiKey, ChatMessage, ChatRequest, ChatResponse, Delta, DeltaSink, FinishReason, HttpOptions,
    LlmError, Provider, RetryPolicy, Role, ToolCall, Usage, word_count,
};

/// The `anthropic-version` header sent with every request.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// `max_tokens` is mandatory in this API; used when the request leaves it open.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;
/// Bound on content blocks in one streamed answer.
const STREAM_BLOCKS_MAX: usize = 256;

/// How to reach the Anthropic Messages API.
#[derive(Clone, Debug)]
pub struct AnthropicConfig {
    /// The provider's name in this node's configuration.
    pub name: String,
    /// Base URL without `/v1` (for example `https://api.anthropic.com`).
    pub base_url: String,
    /// The API key, sent as `x-api-key`.
    pub api_key: Option<ApiKey>,
    /// Timeouts.
    pub http: HttpOptions,
    /// Retries (HTTP 429 and 529 "overloaded" are rate limits).
    pub retry: RetryPolicy,
}

/// An Anthropic Messages API client.
#[derive(Debug)]
pub struct AnthropicProvider {
    config: AnthropicConfig,
    client: reqwest::Client,
    url: String,
}

impl AnthropicProvider {
    /// Builds the client.
    ///
    /// # Errors
    /// An invalid base URL or retry policy, or an HTTP client that cannot be built.
    pub fn new(config: AnthropicConfig) -> Result<Self, String> {
        let url = endpoint(&config.base_url, "/v1/messages")?;
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
        let mut builder = self
            .client
            .post(&self.url)
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(body);
        if let Some(key) = key {
            builder = builder.header("x-api-key", key.expose());
        }
        let response = send_checked(name, key, timeout, builder).await?;
        match stream {
            None => {
                let bytes = read_body(name, key, timeout, response).await?;
                parse_message(name, bytes.as_ref())
            }
            Some(sink) => read_stream(name, key, timeout, response, sink, request).await,
        }
    }
}

#[async_trait::async_trait]
impl Provider for AnthropicProvider {
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

/// The wire form: system messages joined into `system`; tool results as `tool_result`
/// blocks of a user message (consecutive results merged into one message).
fn request_body(request: &ChatRequest, stream: bool) -> Value {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    let mut messages: Vec<Value> = Vec::new();
    for m in request.messages.iter().filter(|m| m.role != Role::System) {
        match m.role {
            Role::Tool => {
                let block = json!({"type": "tool_result",
                    "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                    "content": m.content});
                let merged = messages.last_mut().and_then(|last| {
                    let is_results = last["role"] == "user"
                        && last["content"]
                            .as_array()
                            .is_some_and(|a| a.iter().all(|b| b["type"] == "tool_result"));
                    is_results.then_some(last)
                });
                match merged.and_then(|last| last["content"].as_array_mut()) {
                    Some(blocks) => blocks.push(block),
                    None => messages.push(json!({"role": "user", "content": [block]})),
                }
            }
            Role::Assistant if !m.tool_calls.is_empty() => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({"type": "text", "text": m.content}));
                }
                for c in &m.tool_calls {
                    let input: Value = serde_json::from_str(&c.arguments)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    blocks.push(
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                    );
                }
                messages.push(json!({"role": "assistant", "content": blocks}));
            }
            Role::Assistant => messages.push(json!({"role": "assistant", "content": m.content})),
            Role::User | Role::System => {
                messages.push(json!({"role": "user", "content": m.content}))
            }
        }
    }
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
    }
    if stream {
        body["stream"] = json!(true);
    }
    body
}

fn stop_reason(s: Option<&str>) -> FinishReason {
    match s {
        Some("end_turn") | Some("stop_sequence") => FinishReason::Stop,
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        _ => FinishReason::Unknown,
    }
}

fn invalid(provider: &str, message: impl Into<String>) -> LlmError {
    LlmError::InvalidResponse {
        provider: provider.to_string(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<WireBlock>,
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    input: Option<Value>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

fn parse_message(provider: &str, bytes: &[u8]) -> Result<ChatResponse, LlmError> {
    let wire: WireMessage = serde_json::from_slice(bytes)
        .map_err(|e| invalid(provider, format!("not a message: {e}")))?;
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for block in wire.content {
        match block.kind.as_str() {
            "text" => content.push_str(&block.text),
            "tool_use" => tool_calls.push(ToolCall {
                id: block.id,
                name: block.name,
                arguments: block.input.unwrap_or_else(|| json!({})).to_string(),
            }),
            _ => {}
        }
    }
    Ok(ChatResponse {
        message: ChatMessage {
            role: Role::Assistant,
            content,
            tool_calls,
            tool_call_id: None,
        },
        finish: stop_reason(wire.stop_reason.as_deref()),
        usage: Usage {
            input_tokens: wire.usage.input_tokens,
            output_tokens: wire.usage.output_tokens,
            reported: true,
        },
        model: wire.model,
    })
}

enum Block {
    Text,
    ToolUse(ToolCall),
    Other,
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
    let mut blocks: Vec<Block> = Vec::new();
    let mut finish: Option<FinishReason> = None;
    let mut input_tokens: Option<u64> = None;
    let mut output_tokens: Option<u64> = None;
    let mut model = String::new();
    let mut stopped = false;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| match e {
            eventsource_stream::EventStreamError::Transport(t) => {
                transport_error(provider, key, timeout, &t)
            }
            other => invalid(provider, format!("bad event stream: {other}")),
        })?;
        if event.event == "ping" {
            continue;
        }
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| invalid(provider, format!("bad event {:?}: {e}", event.event)))?;
        match event.event.as_str() {
            "message_start" => {
                model = data
                    .pointer("/message/model")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                input_tokens = data
                    .pointer("/message/usage/input_tokens")
                    .and_then(Value::as_u64);
            }
            "content_block_start" => {
                if blocks.len() >= STREAM_BLOCKS_MAX {
                    return Err(invalid(provider, "too many content blocks"));
                }
                let block = &data["content_block"];
                blocks.push(match block["type"].as_str() {
                    Some("text") => Block::Text,
                    Some("tool_use") => {
                        let call = ToolCall {
                            id: block["id"].as_str().unwrap_or_default().to_string(),
                            name: block["name"].as_str().unwrap_or_default().to_string(),
                            arguments: String::new(),
                        };
                        let _ = sink
                            .send(Delta::ToolCallStarted {
                                id: call.id.clone(),
                                name: call.name.clone(),
                            })
                            .await;
                        Block::ToolUse(call)
                    }
                    _ => Block::Other,
                });
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap_or(0) as usize;
                let delta = &data["delta"];
                match (delta["type"].as_str(), blocks.get_mut(index)) {
                    (Some("text_delta"), Some(Block::Text)) => {
                        let text = delta["text"].as_str().unwrap_or_default().to_string();
                        content.push_str(&text);
                        let _ = sink.send(Delta::Text(text)).await;
                    }
                    (Some("input_json_delta"), Some(Block::ToolUse(call))) => {
                        call.arguments
                            .push_str(delta["partial_json"].as_str().unwrap_or_default());
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    finish = Some(stop_reason(Some(r)));
                }
                if let Some(n) = data.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    output_tokens = Some(n);
                }
            }
            "message_stop" => {
                stopped = true;
                break;
            }
            "error" => {
                let message = data
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("stream error")
                    .to_string();
                let overloaded =
                    data.pointer("/error/type").and_then(Value::as_str) == Some("overloaded_error");
                return Err(if overloaded {
                    LlmError::RateLimited {
                        provider: provider.to_string(),
                        retry_after_ms: None,
                        message,
                    }
                } else {
                    LlmError::Server {
                        provider: provider.to_string(),
                        status: 500,
                        message,
                    }
                });
            }
            _ => {}
        }
    }
    let Some(finish) = finish else {
        return Err(LlmError::Connection {
            provider: provider.to_string(),
            message: format!(
                "the stream ended before the answer was complete ({})",
                if stopped {
                    "message_stop without stop_reason"
                } else {
                    "no message_stop"
                }
            ),
        });
    };
    let tool_calls: Vec<ToolCall> = blocks
        .into_iter()
        .filter_map(|b| match b {
            Block::ToolUse(mut c) => {
                if c.arguments.is_empty() {
                    c.arguments = "{}".into();
                }
                Some(c)
            }
            _ => None,
        })
        .collect();
    let reported = input_tokens.is_some() && output_tokens.is_some();
    let usage = Usage {
        input_tokens: input_tokens.unwrap_or_else(|| request.estimated_input_tokens()),
        output_tokens: output_tokens
            .unwrap_or_else(|| word_count(&content) + tool_calls.len() as u64),
        reported,
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

    #[test]
    fn system_goes_to_its_field_and_tool_results_merge() {
        let mut assistant = ChatMessage::assistant("");
        for id in ["a", "b"] {
            assistant.tool_calls.push(ToolCall {
                id: id.into(),
                name: "f".into(),
                arguments: "{\"x\":1}".into(),
            });
        }
        let req = ChatRequest {
            model: "claude".into(),
            messages: vec![
                ChatMessage::system("be brief"),
                ChatMessage::user("hi"),
                assistant,
                ChatMessage::tool_result("a", "1"),
                ChatMessage::tool_result("b", "2"),
            ],
            ..ChatRequest::default()
        };
        let body = request_body(&req, false);
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(3));
        assert_eq!(body["messages"][1]["content"][0]["input"]["x"], 1);
        assert_eq!(body["messages"][2]["content"][1]["tool_use_id"], "b");
    }
}
