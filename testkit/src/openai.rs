//! OpenAI Chat Completions wire format.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::server::{Answer, Meta, Usage};
use crate::text;

/// An OpenAI-style error: `{"error":{"message","type","param":null,"code"}}`.
pub(crate) fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn usage_json(usage: Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
    })
}

fn finish_reason(answer: &Answer) -> &'static str {
    if answer.calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    }
}

/// A full non-streamed `chat.completion` object.
pub(crate) fn completion(meta: &Meta, answer: &Answer, usage: Usage) -> Value {
    let mut message = json!({"role": "assistant", "content": answer.text});
    if !answer.calls.is_empty() {
        let calls: Vec<Value> = answer
            .calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                })
            })
            .collect();
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(answer),
        }],
        "usage": usage_json(usage),
    })
}

fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn chunk(meta: &Meta, delta: Value, finish: Option<&str>, include_usage: bool) -> Bytes {
    let mut value = json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    if include_usage {
        // As OpenAI does: every chunk but the last carries `usage: null`.
        value["usage"] = Value::Null;
    }
    event(&value)
}

fn text_chunks(meta: &Meta, text: &str, include_usage: bool, out: &mut Vec<Bytes>) {
    for word in text::word_chunks(text) {
        out.push(chunk(meta, json!({"content": word}), None, include_usage));
    }
}

/// The SSE events of a streamed answer, `[DONE]` included.
pub(crate) fn stream(
    meta: &Meta,
    answer: &Answer,
    usage: Usage,
    include_usage: bool,
) -> Vec<Bytes> {
    let mut out = Vec::new();
    let role = match &answer.text {
        Some(_) => json!({"role": "assistant", "content": ""}),
        None => json!({"role": "assistant", "content": null}),
    };
    out.push(chunk(meta, role, None, include_usage));
    if let Some(text) = &answer.text {
        text_chunks(meta, text, include_usage, &mut out);
    }
    for call in &answer.calls {
        let head = json!({"tool_calls": [{
            "index": call.index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }]});
        out.push(chunk(meta, head, None, include_usage));
        for frag in text::fragments(&call.arguments, 4) {
            let delta = json!({"tool_calls": [{
                "index": call.index,
                "function": {"arguments": frag},
            }]});
            out.push(chunk(meta, delta, None, include_usage));
        }
    }
    out.push(chunk(
        meta,
        json!({}),
        Some(finish_reason(answer)),
        include_usage,
    ));
    if include_usage {
        out.push(event(&json!({
            "id": meta.id,
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "choices": [],
            "usage": usage_json(usage),
        })));
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

/// A stream cut after its text: no finish chunk, no usage chunk, no `[DONE]`.
pub(crate) fn cut_stream(meta: &Meta, text: &str, include_usage: bool) -> Vec<Bytes> {
    let mut out = vec![chunk(
        meta,
        json!({"role": "assistant", "content": ""}),
        None,
        include_usage,
    )];
    text_chunks(meta, text, include_usage, &mut out);
    out
}
