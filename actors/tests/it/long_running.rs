//! Agents that run for months: conversations far past the model's window (against the fake
//! provider, which answers "context length exceeded" past a limit as OpenAI does), a failing
//! or slow summariser, the transcript, and the busy-message policies under concurrent
//! senders.

use std::sync::Arc;
use std::time::Duration;

use aios_actors::agent::{
    AgentDef, AgentError, AgentEventKind, AgentRole, AgentSystem, AgentSystemConfig, BusyPolicy,
    OnBusy, Task,
};
use aios_actors::llm::scripted::Script;
use aios_actors::llm::{LlmError, Role};
use aios_actors::protocol::AgentId;
use aios_testkit::{FakeConfig, FakeLlm, FakeReply};
use serde_json::Value;
use tokio::sync::Notify;

use crate::common::{KEY, SMALL_CONTEXT_LEN, agent_env};

/// What the fake counts as its window: four characters a token, as providers' tokenizers
/// roughly do for English. The agent counts with its own estimate and must stay within.
const FAKE_LIMIT_CHARS: usize = SMALL_CONTEXT_LEN as usize * 4;

async fn fake(limit_chars: Option<usize>) -> FakeLlm {
    FakeLlm::start(FakeConfig {
        api_key: Some(KEY.into()),
        context_limit_chars: limit_chars,
        ..FakeConfig::default()
    })
    .await
}

fn small_agent(name: &str) -> AgentDef {
    AgentDef::new(
        name,
        AgentRole::Executor,
        "fake/small",
        "You are a patient assistant.",
    )
}

fn system_text(body: &Value) -> String {
    body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn is_summary_request(body: &Value) -> bool {
    system_text(body).contains("running summary")
}

fn prompt_chars(body: &Value) -> usize {
    body["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| m["content"].as_str().unwrap_or_default().chars().count())
                .sum()
        })
        .unwrap_or(0)
}

/// A summariser that answers briefly, quoting the conversation's last words; every other
/// request is echoed.
fn brief_summaries() -> FakeReply {
    FakeReply::Dynamic(Arc::new(|body: &Value| {
        if is_summary_request(body) {
            let text = body["messages"][1]["content"].as_str().unwrap_or_default();
            let words: Vec<&str> = text.split_whitespace().collect();
            let tail = words[words.len().saturating_sub(12)..].join(" ");
            FakeReply::Text(format!("The user has been listing items; lately: {tail}"))
        } else {
            FakeReply::Echo
        }
    }))
}

/// The compaction events received so far: (method, tokens before, tokens after, reason).
fn compactions(
    events: &mut tokio::sync::broadcast::Receiver<aios_actors::agent::AgentEvent>,
) -> Vec<(String, u64, u64, Option<String>)> {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut out = Vec::new();
    loop {
        match events.try_recv() {
            Ok(e) => {
                if let AgentEventKind::Compacted {
                    method,
                    tokens_before,
                    tokens_after,
                    reason,
                    ..
                } = e.kind
                {
                    out.push((method, tokens_before, tokens_after, reason));
                }
            }
            Err(TryRecvError::Lagged(n)) => panic!("{n} events missed"),
            Err(TryRecvError::Empty | TryRecvError::Closed) => return out,
        }
    }
}

fn turn_text(i: usize) -> String {
    format!(
        "Turn {i}: please note that item {i} is a green heron kept in room {} of the east \
         wing; it weighs {} grams and arrived on day {} of the season.",
        i % 17,
        100 + i * 7,
        i % 90
    )
}

#[tokio::test]
async fn a_conversation_far_past_the_window_stays_within_it_and_keeps_its_transcript() {
    let fake = fake(Some(FAKE_LIMIT_CHARS)).await;
    fake.set_default(brief_summaries());
    let dir = tempfile::tempdir().expect("dir");
    let env = agent_env(
        dir.path(),
        &fake.base_url(),
        Script::default(),
        AgentSystemConfig::default(),
    )
    .await;
    env.system
        .registry()
        .create(small_agent("diary"))
        .await
        .expect("create");
    let id = AgentId::main("diary");
    let mut events = env.system.subscribe(&id);
    const TURNS: usize = 120;
    let mut total_chars = 0;
    let mut compacted = Vec::new();
    for i in 0..TURNS {
        let text = turn_text(i);
        total_chars += 2 * text.len();
        let out = env
            .system
            .ask(&id, Task::new(text.clone()))
            .await
            .unwrap_or_else(|e| panic!("turn {i} failed: {e}"));
        assert_eq!(out.text, format!("echo: {text}"));
        compacted.extend(compactions(&mut events));
    }
    assert!(
        total_chars > 5 * FAKE_LIMIT_CHARS,
        "the conversation ({total_chars} characters) goes far past the window"
    );

    // Every request fitted the provider's window: none was refused, none came near it.
    let requests = fake.requests();
    let chat: Vec<&Value> = requests
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .map(|r| &r.body)
        .collect();
    let largest = chat.iter().map(|b| prompt_chars(b)).max().unwrap_or(0);
    assert!(
        largest <= FAKE_LIMIT_CHARS,
        "a prompt of {largest} characters went past the provider's {FAKE_LIMIT_CHARS}"
    );
    let summaries = chat.iter().filter(|b| is_summary_request(b)).count();
    assert_eq!(
        chat.len(),
        TURNS + summaries,
        "one call per turn and one per compaction, no retries"
    );
    assert!(
        (5..TURNS / 2).contains(&summaries),
        "older turns were folded every few turns, not on each: {summaries} summaries"
    );
    // The latest request carries the running summary, which reflects recent turns.
    let last = chat.last().expect("requests");
    let system = system_text(last);
    assert!(
        system.contains("Summary of the earlier conversation:\nThe user has been listing items"),
        "{system}"
    );

    // Compaction events, all by summary.
    assert_eq!(compacted.len(), summaries);
    for (method, before, after, reason) in compacted {
        assert_eq!(method, "summarized");
        assert!(after < before && reason.is_none());
    }

    // The working conversation is small; the transcript has every turn.
    let conversation = env.system.history(&id).await.expect("history");
    assert!(
        conversation.len() < 40,
        "{} messages kept",
        conversation.len()
    );
    assert_eq!(
        conversation.last().map(|m| m.content.clone()),
        Some(format!("echo: {}", turn_text(TURNS - 1)))
    );
    let transcript = env.system.transcript(&id, 0, 1000).await.expect("read");
    assert_eq!(transcript.len(), TURNS);
    for (i, e) in transcript.iter().enumerate() {
        assert_eq!((e.seq, e.input.clone()), (i as u64, turn_text(i)));
        assert_eq!(e.output, Some(format!("echo: {}", turn_text(i))));
    }
    let page = env.system.transcript(&id, 100, 5).await.expect("page");
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [100, 101, 102, 103, 104]
    );
    env.close().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn context_too_long_compacts_once_more_and_retries_and_never_loops() {
    let fake = fake(None).await;
    fake.set_default(brief_summaries());
    let dir = tempfile::tempdir().expect("dir");
    let env = agent_env(
        dir.path(),
        &fake.base_url(),
        Script::default(),
        AgentSystemConfig::default(),
    )
    .await;
    env.system
        .registry()
        .create(small_agent("tight"))
        .await
        .expect("create");
    let id = AgentId::main("tight");
    // Enough turns to take more than half the conversation's share, not all of it.
    for i in 0..6 {
        env.system
            .ask(&id, Task::new(turn_text(i)))
            .await
            .expect("turn");
    }
    let before = fake.requests().len();
    assert!(
        !fake.requests().iter().any(|r| is_summary_request(&r.body)),
        "nothing was compacted yet"
    );
    let refusal = FakeReply::Status {
        status: 400,
        retry_after: None,
        body: r#"{"error":{"message":"This model's maximum context length is 1024 tokens. However, your messages resulted in 1187 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#.into(),
    };
    fake.push_script(refusal.clone());
    let out = env
        .system
        .ask(&id, Task::new("and one more thing"))
        .await
        .expect("answered after compacting");
    assert_eq!(out.text, "echo: and one more thing");
    let after: Vec<Value> = fake.requests()[before..]
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(after.len(), 3, "refused call, summary, retry");
    assert!(is_summary_request(&after[1]));
    assert!(
        prompt_chars(&after[2]) < prompt_chars(&after[0]),
        "the retry sent less"
    );

    // A provider that refuses every prompt: the task fails with its error after one retry.
    fake.set_default(refusal);
    let before = fake.requests().len();
    let e = env
        .system
        .ask(&id, Task::new("still there?"))
        .await
        .expect_err("refused");
    assert!(
        matches!(e, AgentError::Llm(LlmError::ContextTooLong { .. })),
        "{e}"
    );
    assert!(
        fake.requests().len() - before <= 3,
        "at most the call, a summary and one retry"
    );
    // And the agent is not stuck.
    fake.set_default(brief_summaries());
    let out = env
        .system
        .ask(&id, Task::new("back again"))
        .await
        .expect("works again");
    assert_eq!(out.text, "echo: back again");
    env.close().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn a_failing_or_slow_summariser_falls_back_to_truncation() {
    let fake = fake(Some(FAKE_LIMIT_CHARS)).await;
    fake.set_default(FakeReply::Dynamic(Arc::new(|body: &Value| {
        let system = system_text(body);
        if system.contains("running summary") {
            // The `failing` agent's summariser gets a server error, the `slow` one's never
            // answers in time.
            if body["messages"][1]["content"]
                .as_str()
                .unwrap_or_default()
                .contains("slowly")
            {
                FakeReply::SlowFirstByte(
                    Duration::from_secs(30),
                    Box::new(FakeReply::Text("too late".into())),
                )
            } else {
                FakeReply::Status {
                    status: 500,
                    retry_after: None,
                    body: r#"{"error":{"message":"internal error"}}"#.into(),
                }
            }
        } else {
            FakeReply::Echo
        }
    })));
    let dir = tempfile::tempdir().expect("dir");
    let config = AgentSystemConfig {
        summary_timeout: Duration::from_millis(300),
        ..AgentSystemConfig::default()
    };
    let env = agent_env(dir.path(), &fake.base_url(), Script::default(), config).await;
    for (name, marker, reason) in [
        ("failing", "", "the summariser failed"),
        ("slow", " slowly", "did not answer within"),
    ] {
        env.system
            .registry()
            .create(small_agent(name))
            .await
            .expect("create");
        let id = AgentId::main(name);
        let mut events = env.system.subscribe(&id);
        let mut compacted = Vec::new();
        for i in 0..40 {
            let text = format!("{}{marker}", turn_text(i));
            let out = env
                .system
                .ask(&id, Task::new(text.clone()))
                .await
                .unwrap_or_else(|e| panic!("{name}: turn {i} failed: {e}"));
            assert_eq!(out.text, format!("echo: {text}"));
            compacted.extend(compactions(&mut events));
        }
        for (method, _, _, why) in &compacted {
            assert_eq!(method, "truncated", "{name}");
            let why = why.clone().unwrap_or_default();
            assert!(why.contains(reason), "{name}: {why}");
        }
        assert!(
            compacted.len() >= 3,
            "{name}: {} truncations",
            compacted.len()
        );
        let conversation = env.system.history(&id).await.expect("history");
        assert!(conversation.len() < 40, "{name}: bounded");
        assert_eq!(conversation[0].role, Role::User, "{name}: cut at a turn");
        let transcript = env.system.transcript(&id, 0, 100).await.expect("read");
        assert_eq!(
            transcript.len(),
            40,
            "{name}: the transcript keeps every turn"
        );
    }
    env.close().await;
    fake.shutdown().await;
}

fn policy_agent(name: &str, policy: BusyPolicy, queue_max: u32) -> AgentDef {
    let mut d = AgentDef::new(name, AgentRole::Executor, "fake/m", "You answer.");
    d.on_busy = OnBusy { policy, queue_max };
    d
}

/// Waits until `n` tasks of `id` are admitted (the state of the admission queue; there is no
/// event to await for it).
async fn wait_pending(system: &AgentSystem, id: &AgentId, n: usize) {
    for _ in 0..2000 {
        if system.tasks_pending(id) == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{id}: {} tasks pending, not {n}", system.tasks_pending(id));
}

fn user_messages(conversation: &[aios_actors::llm::ChatMessage]) -> Vec<String> {
    conversation
        .iter()
        .filter(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_busy_policy_behaves_as_specified_under_concurrent_senders() {
    let fake = fake(None).await;
    let dir = tempfile::tempdir().expect("dir");
    let env = agent_env(
        dir.path(),
        &fake.base_url(),
        Script::default(),
        AgentSystemConfig::default(),
    )
    .await;
    let system = env.system.clone();
    for (name, policy) in [
        ("rejecting", BusyPolicy::Reject),
        ("queueing", BusyPolicy::Enqueue),
        ("interrupting", BusyPolicy::Interrupt),
        ("rolling", BusyPolicy::Rollback),
    ] {
        system
            .registry()
            .create(policy_agent(name, policy, 2))
            .await
            .expect("create");
    }
    let ask = |name: &'static str, text: &'static str| {
        let system = system.clone();
        tokio::spawn(async move { system.ask(&AgentId::main(name), Task::new(text)).await })
    };

    // reject: while the first message is in flight, concurrent ones are refused.
    let gate = Arc::new(Notify::new());
    fake.push_script(FakeReply::Gated(
        gate.clone(),
        Box::new(FakeReply::Text("first done".into())),
    ));
    let first = ask("rejecting", "first");
    fake.wait_in_flight(1).await;
    let (b, c) = tokio::join!(ask("rejecting", "second"), ask("rejecting", "third"));
    for refused in [b, c] {
        let e = refused.expect("join").expect_err("refused while busy");
        assert_eq!(e.kind(), "busy", "{e}");
    }
    gate.notify_one();
    assert_eq!(
        first.await.expect("join").expect("first").text,
        "first done"
    );
    let again = ask("rejecting", "fourth")
        .await
        .expect("join")
        .expect("idle");
    assert_eq!(again.text, "echo: fourth");

    // enqueue (at most 2 waiting): processed in order after the current one; one more is
    // refused.
    let id = AgentId::main("queueing");
    let gate = Arc::new(Notify::new());
    fake.push_script(FakeReply::Gated(gate.clone(), Box::new(FakeReply::Echo)));
    let a = ask("queueing", "a");
    fake.wait_in_flight(1).await;
    let b = ask("queueing", "b");
    wait_pending(&system, &id, 2).await;
    let c = ask("queueing", "c");
    wait_pending(&system, &id, 3).await;
    let e = ask("queueing", "d")
        .await
        .expect("join")
        .expect_err("queue full");
    assert_eq!(e.kind(), "queue_full", "{e}");
    assert!(e.to_string().contains("2 messages waiting"), "{e}");
    gate.notify_one();
    for (h, text) in [(a, "a"), (b, "b"), (c, "c")] {
        let out = h.await.expect("join").expect("answered");
        assert_eq!(out.text, format!("echo: {text}"));
    }
    let history = system.history(&id).await.expect("history");
    assert_eq!(user_messages(&history), ["a", "b", "c"]);

    // interrupt: the new message stops the current one, which keeps its message in the
    // conversation; the model sees both.
    for (name, kept) in [("interrupting", true), ("rolling", false)] {
        let id = AgentId::main(name);
        let gate = Arc::new(Notify::new());
        fake.push_script(FakeReply::Gated(
            gate.clone(),
            Box::new(FakeReply::Text("never sent".into())),
        ));
        let before = fake.requests().len();
        let long = ask(name, "write a long essay");
        fake.wait_in_flight(1).await;
        let newer = ask(name, "actually, just say hi")
            .await
            .expect("join")
            .expect("the newer message is answered");
        assert_eq!(newer.text, "echo: actually, just say hi");
        let e = long
            .await
            .expect("join")
            .expect_err("the older one was interrupted");
        assert_eq!(e.kind(), "interrupted", "{name}: {e}");
        let history = system.history(&id).await.expect("history");
        let seen = user_messages(&history);
        let sent = &fake.requests()[before + 1].body;
        let sent_users: Vec<&str> = sent["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|m| m["role"] == "user")
            .filter_map(|m| m["content"].as_str())
            .collect();
        if kept {
            assert_eq!(seen, ["write a long essay", "actually, just say hi"]);
            assert_eq!(sent_users, ["write a long essay", "actually, just say hi"]);
        } else {
            assert_eq!(seen, ["actually, just say hi"], "{name}: rolled back");
            assert_eq!(sent_users, ["actually, just say hi"]);
        }
        assert_eq!(
            history.last().map(|m| m.content.as_str()),
            Some("echo: actually, just say hi")
        );
        gate.notify_one();
    }
    env.close().await;
    fake.shutdown().await;
}
