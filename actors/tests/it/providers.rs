//! The OpenAI-compatible and Anthropic clients against the fake: plain and streamed answers,
//! tool calls, retries, and typed errors.

use std::time::Duration;

use aios_actors::llm::{
    ChatMessage, ChatRequest, Delta, FinishReason, LlmError, Provider, RetryPolicy, ToolSpec,
};
use aios_testkit::{FakeConfig, FakeLlm, FakeReply, FakeToolCall};
use tokio::sync::mpsc;

use crate::common::{KEY, anthropic, fast_retry, openai};

fn request(text: &str) -> ChatRequest {
    ChatRequest {
        model: "m1".into(),
        messages: vec![ChatMessage::system("be brief"), ChatMessage::user(text)],
        tools: vec![ToolSpec {
            name: "calc".into(),
            description: "arithmetic".into(),
            parameters: serde_json::json!({"type": "object"}),
        }],
        ..ChatRequest::default()
    }
}

async fn fake() -> FakeLlm {
    FakeLlm::start(FakeConfig {
        api_key: Some(KEY.into()),
        ..FakeConfig::default()
    })
    .await
}

fn calls(n: usize, reuse_index: bool) -> Vec<FakeToolCall> {
    (0..n)
        .map(|i| {
            FakeToolCall::new(
                format!("call_{i}"),
                "calc",
                format!("{{\"expression\":\"{i} + {i} * 100\"}}"),
                if reuse_index { 0 } else { i as u32 },
            )
        })
        .collect()
}

/// Runs a streamed request and returns the response and the deltas it produced.
async fn streamed(
    p: &dyn Provider,
    req: &ChatRequest,
) -> (Result<aios_actors::llm::ChatResponse, LlmError>, Vec<Delta>) {
    let (tx, mut rx) = mpsc::channel(1024);
    let collector = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(d) = rx.recv().await {
            out.push(d);
        }
        out
    });
    let r = p.chat(req, Some(tx)).await;
    (r, collector.await.expect("collector"))
}

#[tokio::test]
async fn openai_text_and_usage_plain_and_streamed() {
    let fake = fake().await;
    let p = openai(&fake.base_url(), RetryPolicy::none());
    fake.set_default(FakeReply::Text("four words of text".into()));
    let r = p
        .chat(&request("one two three"), None)
        .await
        .expect("answer");
    assert_eq!(r.message.content, "four words of text");
    assert_eq!(r.finish, FinishReason::Stop);
    // The fake counts words: "be brief" + "one two three".
    assert_eq!(
        (
            r.usage.input_tokens,
            r.usage.output_tokens,
            r.usage.reported
        ),
        (5, 4, true)
    );

    let (r, deltas) = streamed(&p, &request("one two three")).await;
    let r = r.expect("streamed answer");
    let text: String = deltas
        .iter()
        .map(|d| match d {
            Delta::Text(t) => t.as_str(),
            Delta::ToolCallStarted { .. } => "",
        })
        .collect();
    assert_eq!(text, "four words of text");
    assert!(deltas.len() >= 4, "word by word: {deltas:?}");
    assert_eq!(r.message.content, text);
    assert!(r.usage.reported, "the usage chunk was read");
    assert_eq!(r.usage.output_tokens, 4);
    let sent = &fake.requests()[1].body;
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(
        fake.requests()[0].header("authorization"),
        Some("Bearer sk-test-key-1234")
    );
}

#[tokio::test]
async fn openai_tool_calls_reassemble_across_chunks_with_distinct_or_reused_indexes() {
    let fake = fake().await;
    let p = openai(&fake.base_url(), RetryPolicy::none());
    for reuse in [false, true] {
        fake.push_script(FakeReply::ToolCalls(calls(3, reuse)));
        let (r, deltas) = streamed(&p, &request("compute")).await;
        let r = r.expect("answer");
        assert_eq!(r.finish, FinishReason::ToolCalls);
        let got: Vec<(String, String)> = r
            .message
            .tool_calls
            .iter()
            .map(|c| (c.id.clone(), c.arguments.clone()))
            .collect();
        let want: Vec<(String, String)> = calls(3, reuse)
            .into_iter()
            .map(|c| (c.id, c.arguments))
            .collect();
        assert_eq!(got, want, "reused index: {reuse}");
        let started = deltas
            .iter()
            .filter(|d| matches!(d, Delta::ToolCallStarted { .. }))
            .count();
        assert_eq!(started, 3);
    }
    // Non-streamed, with malformed arguments passed through untouched.
    fake.push_script(FakeReply::TextAndToolCalls(
        "thinking".into(),
        vec![FakeToolCall::new("c9", "calc", "{\"expression\": 1+", 0)],
    ));
    let r = p.chat(&request("compute"), None).await.expect("answer");
    assert_eq!(r.message.content, "thinking");
    assert_eq!(r.message.tool_calls[0].arguments, "{\"expression\": 1+");
    // Tool results go back in wire form.
    let mut convo = request("compute");
    convo.messages.push(r.message.clone());
    convo
        .messages
        .push(ChatMessage::tool_result("c9", "error: bad arguments"));
    p.chat(&convo, None).await.expect("answer");
    let body = fake.requests().last().expect("request").body.clone();
    assert_eq!(body["messages"][3]["role"], "tool");
    assert_eq!(body["messages"][3]["tool_call_id"], "c9");
}

#[tokio::test]
async fn cut_streams_dropped_connections_and_5xx_are_retried() {
    let fake = fake().await;
    let p = openai(&fake.base_url(), fast_retry(4));
    fake.push_script(FakeReply::CutStream("partial answer".into()));
    fake.push_script(FakeReply::DropConnection);
    fake.push_script(FakeReply::Status {
        status: 500,
        retry_after: None,
        body: "{\"error\":{\"message\":\"boom\"}}".into(),
    });
    fake.push_script(FakeReply::Text("finally".into()));
    let (r, _) = streamed(&p, &request("x")).await;
    assert_eq!(r.expect("answer after retries").message.content, "finally");
    assert_eq!(fake.request_count(), 4);

    // Out of attempts: the last error, typed.
    for _ in 0..2 {
        fake.push_script(FakeReply::Status {
            status: 503,
            retry_after: None,
            body: "{\"error\":{\"message\":\"overloaded\"}}".into(),
        });
    }
    let p2 = openai(&fake.base_url(), fast_retry(2));
    let e = p2.chat(&request("x"), None).await.expect_err("fails");
    assert!(matches!(e, LlmError::Server { status: 503, .. }), "{e:?}");
}

#[tokio::test]
async fn rate_limits_honour_retry_after_header_and_message() {
    let fake = fake().await;
    let p = openai(&fake.base_url(), fast_retry(3));
    fake.push_script(FakeReply::Status {
        status: 429,
        retry_after: Some("0.05".into()),
        body: "{\"error\":{\"message\":\"slow down\"}}".into(),
    });
    fake.push_script(FakeReply::Status {
        status: 429,
        retry_after: None,
        body: "{\"error\":{\"message\":\"Rate limit reached. Please try again in 0.03s.\"}}".into(),
    });
    fake.push_script(FakeReply::Text("ok".into()));
    let r = p.chat(&request("x"), None).await.expect("answer");
    assert_eq!(r.message.content, "ok");
    assert_eq!(fake.request_count(), 3);

    // Without retries the caller sees the typed error with the provider's wait.
    let once = openai(&fake.base_url(), RetryPolicy::none());
    fake.push_script(FakeReply::Status {
        status: 429,
        retry_after: Some("2".into()),
        body: "{}".into(),
    });
    let e = once.chat(&request("x"), None).await.expect_err("limited");
    assert!(
        matches!(
            e,
            LlmError::RateLimited {
                retry_after_ms: Some(2000),
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn typed_errors_are_not_retried_and_never_show_the_key() {
    let fake = fake().await;
    let wrong =
        aios_actors::llm::openai::OpenAiProvider::new(aios_actors::llm::openai::OpenAiConfig {
            name: "wrong-key".into(),
            base_url: fake.base_url(),
            api_key: Some(aios_actors::llm::ApiKey::new("sk-wrong-secret-999")),
            http: Default::default(),
            retry: fast_retry(5),
        })
        .expect("config");
    let e = wrong.chat(&request("x"), None).await.expect_err("401");
    assert!(matches!(e, LlmError::Authentication { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("sk-wrong-secret-999"));
    assert_eq!(
        fake.request_count(),
        1,
        "authentication errors are not retried"
    );

    fake.set_config(FakeConfig {
        api_key: Some(KEY.into()),
        context_limit_chars: Some(20),
        ..FakeConfig::default()
    });
    let p = openai(&fake.base_url(), fast_retry(5));
    let e = p
        .chat(
            &request("a prompt that is much longer than twenty characters"),
            None,
        )
        .await
        .expect_err("too long");
    assert!(matches!(e, LlmError::ContextTooLong { .. }), "{e:?}");
    assert_eq!(e.kind(), "context_too_long");
}

#[tokio::test]
async fn a_slow_first_byte_times_out() {
    let fake = fake().await;
    let p = aios_actors::llm::openai::OpenAiProvider::new(aios_actors::llm::openai::OpenAiConfig {
        name: "impatient".into(),
        base_url: fake.base_url(),
        api_key: Some(aios_actors::llm::ApiKey::new(KEY)),
        http: aios_actors::llm::HttpOptions {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_millis(100),
        },
        retry: RetryPolicy::none(),
    })
    .expect("config");
    fake.push_script(FakeReply::SlowFirstByte(
        Duration::from_secs(5),
        Box::new(FakeReply::Text("late".into())),
    ));
    let e = p.chat(&request("x"), None).await.expect_err("timeout");
    assert!(
        matches!(e, LlmError::Timeout { after_ms: 100, .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn anthropic_text_tool_use_streaming_and_overload() {
    let fake = fake().await;
    let p = anthropic(&fake.base_url(), fast_retry(3));
    fake.push_script(FakeReply::Text("hello there".into()));
    let r = p.chat(&request("hi"), None).await.expect("answer");
    assert_eq!(r.message.content, "hello there");
    assert_eq!(r.usage.output_tokens, 2);
    let sent = &fake.requests()[0];
    assert_eq!(sent.body["system"], "be brief");
    assert!(sent.header("anthropic-version").is_some());
    assert_eq!(sent.header("x-api-key"), Some(KEY));

    fake.push_script(FakeReply::TextAndToolCalls(
        "let me".into(),
        calls(2, false),
    ));
    let (r, deltas) = streamed(&p, &request("compute")).await;
    let r = r.expect("answer");
    assert_eq!(r.finish, FinishReason::ToolCalls);
    assert_eq!(r.message.content, "let me");
    assert_eq!(r.message.tool_calls.len(), 2);
    assert_eq!(
        r.message.tool_calls[1].arguments,
        calls(2, false)[1].arguments
    );
    assert!(
        deltas
            .iter()
            .any(|d| matches!(d, Delta::ToolCallStarted { name, .. } if name == "calc"))
    );
    assert!(r.usage.reported);

    // 529 "overloaded" is a rate limit and is retried.
    fake.push_script(FakeReply::Status {
        status: 529,
        retry_after: None,
        body: "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}".into(),
    });
    fake.push_script(FakeReply::Text("recovered".into()));
    let r = p.chat(&request("hi"), None).await.expect("answer");
    assert_eq!(r.message.content, "recovered");

    // Tool results go back as tool_result blocks.
    let mut convo = request("compute");
    let mut assistant = ChatMessage::assistant("");
    assistant.tool_calls = r.message.tool_calls.clone();
    assistant.tool_calls.push(aios_actors::llm::ToolCall {
        id: "t1".into(),
        name: "calc".into(),
        arguments: "{}".into(),
    });
    convo.messages.push(assistant);
    convo.messages.push(ChatMessage::tool_result("t1", "42"));
    p.chat(&convo, None).await.expect("answer");
    let body = fake.requests().last().expect("request").body.clone();
    assert_eq!(body["messages"][2]["content"][0]["type"], "tool_result");
}
