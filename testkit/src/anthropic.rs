//! Anthropic Messages wire format.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::FakeToolCall;
use crate::server::{Answer, Meta, Usage};
use crate::text;

/// An Anthropic-style error: `{"type":"error","error":{"type","message"}}`.
pub(crate) fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn stop_reason(answer: &Answer) -> &'static str {
    if answer.calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    }
}

/// The text block is present for a text reply (even empty) or a non-empty text before tools.
fn text_block(answer: &Answer) -> Option<&str> {
    match &answer.text {
        Some(text) if answer.calls.is_empty() || !text.is_empty() => Some(text),
        _ => None,
    }
}

/// The arguments as an object; malformed (or non-object) arguments give `{}`.
fn input(call: &FakeToolCall) -> Value {
    match serde_json::from_str::<Value>(&call.arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => json!({}),
    }
}

/// A full non-streamed `message` object.
pub(crate) fn message(meta: &Meta, answer: &Answer, usage: Usage) -> Value {
    let mut content = Vec::new();
    if let Some(text) = text_block(answer) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in &answer.calls {
        content.push(
            json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input(call)}),
        );
    }
    json!({
        "id": meta.id,
        "type": "message",
        "role": "assistant",
        "model": meta.model,
        "content": content,
        "stop_reason": stop_reason(answer),
        "stop_sequence": null,
        "usage": {"input_tokens": usage.prompt, "output_tokens": usage.completion},
    })
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn start_events(meta: &Meta, input_tokens: usize, out: &mut Vec<Bytes>) {
    out.push(event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": meta.id,
            "type": "message",
            "role": "assistant",
            "model": meta.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            // As Anthropic does: a provisional output count; `message_delta` has the total.
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        }}),
    ));
    out.push(event("ping", &json!({"type": "ping"})));
}

fn text_events(index: usize, text: &str, out: &mut Vec<Bytes>) {
    out.push(event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "text", "text": ""}}),
    ));
    for word in text::word_chunks(text) {
        out.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": word}}),
        ));
    }
}

fn block_stop(index: usize) -> Bytes {
    event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    )
}

/// The named SSE events of a streamed answer, `message_stop` included.
pub(crate) fn stream(meta: &Meta, answer: &Answer, usage: Usage) -> Vec<Bytes> {
    let mut out = Vec::new();
    start_events(meta, usage.prompt, &mut out);
    let mut index = 0;
    if let Some(text) = text_block(answer) {
        text_events(index, text, &mut out);
        out.push(block_stop(index));
        index += 1;
    }
    for call in &answer.calls {
        out.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}}),
        ));
        for frag in text::fragments(&call.arguments, 4) {
            out.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": frag}}),
            ));
        }
        out.push(block_stop(index));
        index += 1;
    }
    out.push(event(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason(answer), "stop_sequence": null},
                "usage": {"output_tokens": usage.completion}}),
    ));
    out.push(event("message_stop", &json!({"type": "message_stop"})));
    out
}

/// A stream cut after its text: no `content_block_stop`, `message_delta` or `message_stop`.
pub(crate) fn cut_stream(meta: &Meta, text: &str, input_tokens: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    start_events(meta, input_tokens, &mut out);
    text_events(0, text, &mut out);
    out
}
