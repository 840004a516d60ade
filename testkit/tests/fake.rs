//! End-to-end tests of the fake provider through a real HTTP client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aios_testkit::{FakeConfig, FakeLlm, FakeReply, FakeToolCall};
use serde_json::{Value, json};
use tokio::sync::Notify;

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn openai_body(user: &str) -> Value {
    json!({
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are terse"},
            {"role": "user", "content": user},
        ],
    })
}

fn anthropic_body(user: &str) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 100,
        "system": "You are terse",
        "messages": [{"role": "user", "content": user}],
    })
}

async fn post_openai(fake: &FakeLlm, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", fake.base_url()))
        .json(body)
        .send()
        .await
        .expect("request reaches the fake")
}

async fn post_anthropic(fake: &FakeLlm, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/messages", fake.base_url()))
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("request reaches the fake")
}

/// The JSON payloads of an OpenAI SSE body, and whether it ended with `[DONE]`.
fn openai_events(body: &str) -> (Vec<Value>, bool) {
    let mut events = Vec::new();
    let mut done = false;
    for raw in body.split("\n\n").filter(|e| !e.is_empty()) {
        let data = raw
            .strip_prefix("data: ")
            .expect("every event is `data: ...`");
        if data == "[DONE]" {
            done = true;
        } else {
            assert!(!done, "nothing after [DONE]");
            events.push(serde_json::from_str(data).expect("chunk is JSON"));
        }
    }
    (events, done)
}

/// The (name, data) pairs of an Anthropic SSE body.
fn anthropic_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|raw| {
            let (name, data) = raw.split_once('\n').expect("event line then data line");
            let name = name.strip_prefix("event: ").expect("event line");
            let data = data.strip_prefix("data: ").expect("data line");
            let data: Value = serde_json::from_str(data).expect("data is JSON");
            assert_eq!(data["type"], name, "data.type matches the event name");
            (name.to_owned(), data)
        })
        .collect()
}

fn concat_content(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test]
async fn openai_text_non_streamed_with_exact_usage() {
    let fake = FakeLlm::start(FakeConfig::default()).await;
    assert!(fake.base_url().starts_with("http://127.0.0.1:"));
    assert!(!fake.base_url().ends_with('/'));
    fake.push_script(FakeReply::Text("Hello there, world".into()));

    let response = post_openai(&fake, &openai_body("say hi please")).await;
    assert_eq!(response.status(), 200);
    let value: Value = response.json().await.expect("json");
    assert_eq!(value["object"], "chat.completion");
    assert_eq!(value["model"], "gpt-test");
    assert_eq!(value["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        value["choices"][0]["message"]["content"],
        "Hello there, world"
    );
    assert_eq!(value["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        value["usage"],
        json!({"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9})
    );

    // The queue is empty: the default default is Echo.
    let value: Value = post_openai(&fake, &openai_body("ping me"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(value["choices"][0]["message"]["content"], "echo: ping me");

    let requests = fake.requests();
    assert_eq!(fake.request_count(), 2);
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(requests[0].body["messages"][1]["content"], "say hi please");
    assert_eq!(requests[1].body["messages"][1]["content"], "ping me");
    assert_eq!(requests[0].header("Content-Type"), Some("application/json"));
    fake.shutdown().await;
}

#[tokio::test]
async fn openai_tool_calls_non_streamed() {
    let fake = FakeLlm::start(FakeConfig::default()).await;
    fake.push_script(FakeReply::ToolCalls(vec![
        FakeToolCall::new("call_1", "weather", r#"{"city":"Paris"}"#, 0),
        FakeToolCall::new("call_2", "broken", r#"{"x":"#, 1),
    ]));
    let value: Value = post_openai(&fake, &openai_body("weather?"))
        .await
        .json()
        .await
        .expect("json");
    let choice = &value["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    assert_eq!(choice["message"]["tool_calls"][0]["id"], "call_1");
    assert_eq!(choice["message"]["tool_calls"][0]["type"], "function");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"Paris"}"#
    );
    assert_eq!(
        choice["message"]["tool_calls"][1]["function"]["arguments"],
        r#"{"x":"#
    );
    assert_eq!(value["usage"]["completion_tokens"], 2);
    fake.shutdown().await;
}

#[tokio::test]
async fn anthropic_text_and_tools_non_streamed() {
    let fake = FakeLlm::start(FakeConfig::default()).await;
    fake.push_script(FakeReply::Text("Bonjour tout le monde".into()));
    fake.push_script(FakeReply::TextAndToolCalls(
        "Let me check".into(),
        vec![
            FakeToolCall::new("toolu_1", "weather", r#"{"city":"Paris"}"#, 0),
            FakeToolCall::new("toolu_2", "broken", r#"{"x":"#, 1),
        ],
    ));

    let response = post_anthropic(&fake, &anthropic_body("say hi please")).await;
    assert_eq!(response.status(), 200);
    let value: Value = response.json().await.expect("json");
    assert_eq!(value["type"], "message");
    assert_eq!(value["role"], "assistant");
    assert_eq!(value["model"], "claude-test");
    assert_eq!(
        value["content"],
        json!([{"type": "text", "text": "Bonjour tout le monde"}])
    );
    assert_eq!(value["stop_reason"], "end_turn");
    assert_eq!(
        value["usage"],
        json!({"input_tokens": 6, "output_tokens": 4})
    );

    let value: Value = post_anthropic(&fake, &anthropic_body("weather?"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(value["stop_reason"], "tool_use");
    assert_eq!(
        value["content"][0],
        json!({"type": "text", "text": "Let me check"})
    );
    assert_eq!(
        value["content"][1],
        json!({"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}})
    );
    assert_eq!(
        value["content"][2]["input"],
        json!({}),
        "malformed arguments"
    );
    assert_eq!(value["usage"]["output_tokens"], 3 + 2);

    // Without anthropic-version: 400.
    let response = client()
        .post(format!("{}/v1/messages", fake.base_url()))
        .json(&anthropic_body("hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    let value: Value = response.json().await.expect("json");
    assert_eq!(value["type"], "error");
    assert_eq!(value["error"]["type"], "invalid_request_error");
    fake.shutdown().await;
}

#[tokio::test]
async fn openai_streamed_text_with_usage_chunk_and_done() {
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let text = "Hello  there,\nworld ";
    fake.push_script(FakeReply::Text(text.into()));
    fake.push_script(FakeReply::Text(text.into()));

    let mut body = openai_body("say hi please");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = post_openai(&fake, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("ascii"),
        "text/event-stream"
    );
    let (events, done) = openai_events(&response.text().await.expect("body"));
    assert!(done, "ends with [DONE]");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        events
            .iter()
            .all(|e| e["object"] == "chat.completion.chunk")
    );
    assert_eq!(concat_content(&events), text);
    // One word per content chunk.
    let content_chunks = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .filter(|c| !c.is_empty())
        .count();
    assert_eq!(content_chunks, 3);
    let last = events.last().expect("usage chunk");
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9})
    );
    let finish = &events[events.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");

    // Without include_usage: no usage chunk.
    body["stream_options"] = Value::Null;
    let (events, done) =
        openai_events(&post_openai(&fake, &body).await.text().await.expect("body"));
    assert!(done);
    assert!(
        events
            .iter()
            .all(|e| e["choices"].as_array().is_some_and(|c| !c.is_empty()))
    );
    assert!(events.iter().all(|e| e.get("usage").is_none()));
    assert_eq!(fake.in_flight(), 0);
    fake.shutdown().await;
}

/// Reassembles streamed tool calls by a key; returns (key, id, name, arguments) in first-seen
/// order and checks the fragment rules.
fn reassemble_by_index(events: &[Value]) -> Vec<(u64, String, String, String)> {
    let mut calls: Vec<(u64, String, String, String)> = Vec::new();
    for event in events {
        let Some(deltas) = event["choices"][0]["delta"]["tool_calls"].as_array() else {
            continue;
        };
        for delta in deltas {
            let index = delta["index"].as_u64().expect("index");
            let fragment = delta["function"]["arguments"].as_str().expect("arguments");
            assert!(fragment.chars().count() <= 4, "fragment {fragment:?}");
            if let Some(id) = delta["id"].as_str() {
                assert_eq!(fragment, "", "the head chunk has empty arguments");
                calls.push((
                    index,
                    id.to_owned(),
                    delta["function"]["name"].as_str().expect("name").to_owned(),
                    String::new(),
                ));
            } else {
                let call = calls
                    .iter_mut()
                    .rev()
                    .find(|c| c.0 == index)
                    .expect("fragment after its head");
                call.3.push_str(fragment);
            }
        }
    }
    calls
}

#[tokio::test]
async fn openai_streamed_parallel_tool_calls_both_index_variants() {
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let args_a = r#"{"city":"Paris","days":3}"#;
    let args_b = r#"{"q":"#;
    for reused in [false, true] {
        let second_index = if reused { 0 } else { 1 };
        fake.push_script(FakeReply::ToolCalls(vec![
            FakeToolCall::new("call_a", "weather", args_a, 0),
            FakeToolCall::new("call_b", "search", args_b, second_index),
        ]));
        let mut body = openai_body("go");
        body["stream"] = json!(true);
        let (events, done) =
            openai_events(&post_openai(&fake, &body).await.text().await.expect("body"));
        assert!(done);
        assert!(events[0]["choices"][0]["delta"]["content"].is_null());
        let calls = reassemble_by_index(&events);
        assert_eq!(
            calls,
            vec![
                (0, "call_a".into(), "weather".into(), args_a.into()),
                (
                    u64::from(second_index),
                    "call_b".into(),
                    "search".into(),
                    args_b.into()
                ),
            ]
        );
        let finish = events.last().expect("finish chunk");
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    }
    fake.shutdown().await;
}

#[tokio::test]
async fn anthropic_streamed_named_events() {
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let args = r#"{"city":"Paris"}"#;
    fake.push_script(FakeReply::TextAndToolCalls(
        "On it now".into(),
        vec![FakeToolCall::new("toolu_1", "weather", args, 0)],
    ));
    let mut body = anthropic_body("weather in Paris");
    body["stream"] = json!(true);
    let response = post_anthropic(&fake, &body).await;
    assert_eq!(response.status(), 200);
    let events = anthropic_events(&response.text().await.expect("body"));
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected = vec!["message_start", "ping", "content_block_start"];
    expected.extend(["content_block_delta"; 3]);
    expected.extend(["content_block_stop", "content_block_start"]);
    expected.extend(vec!["content_block_delta"; args.len().div_ceil(4)]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 6);
    let text: String = events
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "text_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().expect("text"))
        .collect();
    assert_eq!(text, "On it now");
    let json_text: String = events
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| {
            assert_eq!(d["index"], 1);
            d["delta"]["partial_json"].as_str().expect("partial_json")
        })
        .collect();
    assert_eq!(json_text, args);
    assert_eq!(events[7].1["content_block"]["id"], "toolu_1");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 3 + 1);
    fake.shutdown().await;
}

#[tokio::test]
async fn cut_stream_has_no_usage_nor_done() {
    let fake = FakeLlm::start(FakeConfig::default()).await;
    fake.push_script(FakeReply::CutStream("partial answer".into()));
    fake.push_script(FakeReply::CutStream("partial answer".into()));
    let mut body = openai_body("hi");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (events, done) =
        openai_events(&post_openai(&fake, &body).await.text().await.expect("body"));
    assert!(!done);
    assert_eq!(concat_content(&events), "partial answer");
    assert!(events.iter().all(|e| e["usage"].is_null()));
    assert!(
        events
            .iter()
            .all(|e| e["choices"][0]["finish_reason"].is_null())
    );

    // Not streamed: like a dropped connection.
    let result = client()
        .post(format!("{}/v1/chat/completions", fake.base_url()))
        .json(&openai_body("hi"))
        .send()
        .await;
    match result {
        Err(_) => {}
        Ok(response) => assert!(response.bytes().await.is_err()),
    }
    fake.shutdown().await;
}

#[tokio::test]
async fn drop_connection_fails_the_request() {
    let fake = FakeLlm::start(FakeConfig::default()).await;
    fake.push_script(FakeReply::DropConnection);
    let result = client()
        .post(format!("{}/v1/chat/completions", fake.base_url()))
        .json(&openai_body("hi"))
        .send()
        .await;
    let error = result.expect_err("no response at all");
    assert!(!error.is_status(), "{error:?}");
    // The server keeps serving.
    assert_eq!(post_openai(&fake, &openai_body("hi")).await.status(), 200);
    assert_eq!(fake.in_flight(), 0);
    fake.shutdown().await;
}

#[tokio::test]
async fn scripted_status_errors() {
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let body = r#"{"error":{"message":"Rate limit reached. Please try again in 2.5s."}}"#;
    fake.push_script(FakeReply::Status {
        status: 429,
        retry_after: None,
        body: body.into(),
    });
    fake.push_script(FakeReply::Status {
        status: 529,
        retry_after: Some("3".into()),
        body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            .into(),
    });
    let response = post_openai(&fake, &openai_body("hi")).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_none());
    assert_eq!(response.text().await.expect("body"), body);
    let response = post_anthropic(&fake, &anthropic_body("hi")).await;
    assert_eq!(response.status(), 529);
    assert_eq!(response.headers()["retry-after"], "3");
    fake.shutdown().await;
}

#[tokio::test]
async fn capacity_429_with_retry_after_under_concurrency() {
    let fake = Arc::new(
        FakeLlm::start(FakeConfig {
            capacity: Some(2),
            retry_after_s: 0.05,
            ..FakeConfig::default()
        })
        .await,
    );
    let gates = [Arc::new(Notify::new()), Arc::new(Notify::new())];
    for (i, gate) in gates.iter().enumerate() {
        fake.push_script(FakeReply::Gated(
            Arc::clone(gate),
            Box::new(FakeReply::Text(format!("held {i}"))),
        ));
    }
    let held: Vec<_> = (0..2)
        .map(|_| {
            let fake = Arc::clone(&fake);
            tokio::spawn(async move {
                let response = post_openai(&fake, &openai_body("hi")).await;
                assert_eq!(response.status(), 200);
                let value: Value = response.json().await.expect("json");
                value["choices"][0]["message"]["content"]
                    .as_str()
                    .expect("text")
                    .to_owned()
            })
        })
        .collect();
    fake.wait_in_flight(2).await;

    let response = post_openai(&fake, &openai_body("hi")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "0.05");
    let value: Value = response.json().await.expect("json");
    assert_eq!(value["error"]["code"], "rate_limit_exceeded");
    assert!(
        value["error"]["message"]
            .as_str()
            .expect("message")
            .contains("try again in 0.05s")
    );
    let response = post_anthropic(&fake, &anthropic_body("hi")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "0.05");
    let value: Value = response.json().await.expect("json");
    assert_eq!(value["error"]["type"], "rate_limit_error");

    for gate in &gates {
        gate.notify_one();
    }
    let mut texts = Vec::new();
    for task in held {
        texts.push(task.await.expect("task"));
    }
    texts.sort();
    assert_eq!(texts, ["held 0", "held 1"]);
    fake.wait_in_flight(0).await;
    assert_eq!(fake.max_in_flight(), 2);
    // Capacity is free again; the rejected requests did not consume scripted replies.
    assert_eq!(post_openai(&fake, &openai_body("x")).await.status(), 200);
    assert_eq!(fake.request_count(), 5);
}

#[tokio::test]
async fn api_key_required_and_never_echoed() {
    let fake = FakeLlm::start(FakeConfig {
        api_key: Some("sk-secret-123".into()),
        ..FakeConfig::default()
    })
    .await;
    let url = format!("{}/v1/chat/completions", fake.base_url());
    for auth in [None, Some("Bearer sk-wrong-456")] {
        let mut request = client().post(&url).json(&openai_body("hi"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), 401);
        let text = response.text().await.expect("body");
        assert!(
            !text.contains("sk-secret") && !text.contains("sk-wrong"),
            "{text}"
        );
        let value: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["error"]["code"], "invalid_api_key");
    }
    let response = client()
        .post(&url)
        .bearer_auth("sk-secret-123")
        .json(&openai_body("hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);

    let response = post_anthropic(&fake, &anthropic_body("hi")).await;
    assert_eq!(response.status(), 401);
    let value: Value = response.json().await.expect("json");
    assert_eq!(value["error"]["type"], "authentication_error");
    let response = client()
        .post(format!("{}/v1/messages", fake.base_url()))
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", "sk-secret-123")
        .json(&anthropic_body("hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);

    let response = client()
        .post(format!("{}/v1/embeddings", fake.base_url()))
        .json(&json!({"model": "e", "input": "x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
    fake.shutdown().await;
}

#[tokio::test]
async fn context_length_exceeded() {
    let fake = FakeLlm::start(FakeConfig {
        context_limit_chars: Some(20),
        ..FakeConfig::default()
    })
    .await;
    // "You are terse" is 13 characters.
    assert_eq!(
        post_openai(&fake, &openai_body("short")).await.status(),
        200
    );
    let response = post_openai(&fake, &openai_body("this is too long")).await;
    assert_eq!(response.status(), 400);
    let value: Value = response.json().await.expect("json");
    assert_eq!(value["error"]["code"], "context_length_exceeded");
    assert_eq!(value["error"]["type"], "invalid_request_error");
    assert!(
        value["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("This model's maximum context length is")
    );
    let response = post_anthropic(&fake, &anthropic_body("this is too long")).await;
    assert_eq!(response.status(), 400);
    let value: Value = response.json().await.expect("json");
    assert!(
        value["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("prompt is too long")
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn embeddings_out_of_order_and_deterministic() {
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let url = format!("{}/v1/embeddings", fake.base_url());
    let value: Value = client()
        .post(&url)
        .json(&json!({"model": "embed-test", "input": ["alpha", "beta gamma", "delta"]}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(value["object"], "list");
    assert_eq!(value["model"], "embed-test");
    assert_eq!(
        value["usage"],
        json!({"prompt_tokens": 4, "total_tokens": 4})
    );
    let data = value["data"].as_array().expect("data");
    let indexes: Vec<u64> = data
        .iter()
        .map(|d| d["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(indexes, [2, 1, 0]);
    for item in data {
        assert_eq!(item["object"], "embedding");
        let vector: Vec<f64> = serde_json::from_value(item["embedding"].clone()).expect("floats");
        assert_eq!(vector.len(), 8);
        let norm: f64 = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-9);
    }
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);

    let single: Value = client()
        .post(&url)
        .json(&json!({"model": "embed-test", "input": "beta gamma"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(single["data"][0]["index"], 0);
    assert_eq!(single["data"][0]["embedding"], data[1]["embedding"]);
    assert_eq!(fake.max_in_flight(), 0, "embeddings are not chat requests");
    fake.shutdown().await;
}

#[tokio::test]
async fn gated_request_is_held_in_flight() {
    let fake = Arc::new(FakeLlm::start(FakeConfig::default()).await);
    let gate = Arc::new(Notify::new());
    fake.push_script(FakeReply::Gated(
        Arc::clone(&gate),
        Box::new(FakeReply::Text("released".into())),
    ));
    let task = {
        let fake = Arc::clone(&fake);
        tokio::spawn(async move {
            let value: Value = post_openai(&fake, &openai_body("hi"))
                .await
                .json()
                .await
                .expect("json");
            value["choices"][0]["message"]["content"].clone()
        })
    };
    fake.wait_in_flight(1).await;
    assert_eq!(fake.in_flight(), 1);
    assert!(!task.is_finished());
    // Another request is not blocked by the held one.
    assert_eq!(post_openai(&fake, &openai_body("hi")).await.status(), 200);
    assert_eq!(fake.max_in_flight(), 2);

    gate.notify_one();
    assert_eq!(task.await.expect("task"), "released");
    fake.wait_in_flight(0).await;
}

#[tokio::test]
async fn shutdown_releases_held_requests() {
    let fake = Arc::new(FakeLlm::start(FakeConfig::default()).await);
    fake.set_default(FakeReply::Gated(
        Arc::new(Notify::new()),
        Box::new(FakeReply::Echo),
    ));
    let task = {
        let url = format!("{}/v1/chat/completions", fake.base_url());
        tokio::spawn(async move {
            match client().post(url).json(&openai_body("hi")).send().await {
                Err(_) => true,
                Ok(response) => response.bytes().await.is_err(),
            }
        })
    };
    fake.wait_in_flight(1).await;
    let fake = Arc::into_inner(fake).expect("only owner");
    let started = Instant::now();
    fake.shutdown().await;
    assert!(task.await.expect("task"), "the held request fails");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn dynamic_slow_first_byte_and_latency() {
    let fake = FakeLlm::start(FakeConfig {
        latency: Duration::from_millis(20),
        ..FakeConfig::default()
    })
    .await;
    fake.set_default(FakeReply::Dynamic(Arc::new(|request: &Value| {
        FakeReply::Text(format!(
            "model was {}",
            request["model"].as_str().unwrap_or("?")
        ))
    })));
    fake.push_script(FakeReply::SlowFirstByte(
        Duration::from_millis(30),
        Box::new(FakeReply::Echo),
    ));
    let started = Instant::now();
    let value: Value = post_openai(&fake, &openai_body("slow one"))
        .await
        .json()
        .await
        .expect("json");
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(value["choices"][0]["message"]["content"], "echo: slow one");
    let value: Value = post_openai(&fake, &openai_body("x"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        value["choices"][0]["message"]["content"],
        "model was gpt-test"
    );
    assert_eq!(
        format!(
            "{:?}",
            FakeReply::Dynamic(Arc::new(|_: &Value| FakeReply::Echo))
        ),
        "Dynamic(..)"
    );
    fake.set_config(FakeConfig::default());
    fake.shutdown().await;
}
