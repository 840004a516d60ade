//! Agents end to end: the tool-call loop against the fake provider, streamed events, typed
//! errors, versioned definitions, capability negotiation, passivation, envelopes and topics,
//! delegation, and definitions and conversations surviving a restart.

use std::time::Duration;

use aios_actors::agent::{
    AgentDef, AgentError, AgentEventKind, AgentRole, AgentSystemConfig, Capability,
    CapabilityQuery, Task,
};
use aios_actors::cost::CostScope;
use aios_actors::llm::scripted::Script;
use aios_actors::llm::{LlmError, Role};
use aios_actors::protocol::{AgentId, Envelope, Sender};
use aios_testkit::{FakeConfig, FakeLlm, FakeReply, FakeToolCall};

use crate::common::{KEY, agent_env};

async fn fake() -> FakeLlm {
    FakeLlm::start(FakeConfig {
        api_key: Some(KEY.into()),
        ..FakeConfig::default()
    })
    .await
}

fn calculator_agent(name: &str) -> AgentDef {
    let mut d = AgentDef::new(name, AgentRole::Executor, "fake/m", "You compute.");
    d.tools = vec!["calculator".into()];
    d.capabilities = vec![Capability::named("compute").with("cost_class", "low")];
    d
}

#[tokio::test]
async fn the_tool_call_loop_streams_events_and_keeps_the_conversation() {
    let fake = fake().await;
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
        .create(calculator_agent("calc"))
        .await
        .expect("create");
    fake.push_script(FakeReply::ToolCalls(vec![
        FakeToolCall::new("c1", "calculator", r#"{"expression":"6 * 7"}"#, 0),
        FakeToolCall::new("c2", "calculator", r#"{"expression": 6 *"#, 1),
    ]));
    fake.push_script(FakeReply::Text("The answer is 42".into()));
    let id = AgentId::main("calc");
    let mut events = env.system.subscribe(&id);
    let out = env
        .system
        .ask(&id, Task::new("what is 6 times 7?"))
        .await
        .expect("answer");
    assert_eq!(out.text, "The answer is 42");
    assert_eq!((out.steps, out.tool_calls), (2, 2));

    // The second LLM call carried both tool results, the malformed one as an error.
    let second = &fake.requests()[1].body;
    let msgs = second["messages"].as_array().expect("messages");
    assert_eq!(msgs[0]["role"], "system");
    assert_eq!(msgs[3]["content"], "42");
    assert!(
        msgs[4]["content"]
            .as_str()
            .unwrap_or_default()
            .starts_with("error: invalid arguments")
    );

    let mut kinds = Vec::new();
    while let Ok(e) = events.try_recv() {
        kinds.push(e.kind);
    }
    let tokens: String = kinds
        .iter()
        .filter_map(|k| match k {
            AgentEventKind::Token(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(tokens, "The answer is 42", "tokens were streamed");
    let steps: Vec<&AgentEventKind> = kinds
        .iter()
        .filter(|k| !matches!(k, AgentEventKind::Token(_)))
        .collect();
    assert!(matches!(steps[0], AgentEventKind::ToolCall { name, .. } if name == "calculator"));
    assert!(
        matches!(steps[1], AgentEventKind::ToolResult { output, is_error: false, .. } if output == "42")
    );
    assert!(matches!(steps[2], AgentEventKind::ToolCall { id, .. } if id == "c2"));
    assert!(matches!(
        steps[3],
        AgentEventKind::ToolResult { is_error: true, .. }
    ));
    assert!(matches!(steps[4], AgentEventKind::Final { text } if text == "The answer is 42"));

    let history = env.system.history(&id).await.expect("history");
    let roles: Vec<Role> = history.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::Tool,
            Role::Assistant
        ]
    );
    assert_eq!(
        env.ledger.totals(&CostScope::Agent("calc".into())).requests,
        2
    );
    env.close().await;
}

#[tokio::test]
async fn llm_errors_reach_the_caller_typed_and_as_events() {
    let fake = fake().await;
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
        .create(calculator_agent("calc"))
        .await
        .expect("create");
    // Refused twice: the agent compacts and retries once after the first refusal.
    let refusal = FakeReply::Status {
        status: 400,
        retry_after: None,
        body: r#"{"error":{"message":"maximum context length exceeded","code":"context_length_exceeded"}}"#.into(),
    };
    fake.push_script(refusal.clone());
    fake.push_script(refusal);
    let id = AgentId::main("calc");
    let mut events = env.system.subscribe(&id);
    let e = env
        .system
        .ask(&id, Task::new("x"))
        .await
        .expect_err("fails");
    assert!(
        matches!(e, AgentError::Llm(LlmError::ContextTooLong { .. })),
        "{e:?}"
    );
    let ev = events.recv().await.expect("event");
    assert!(matches!(ev.kind, AgentEventKind::Error { kind, .. } if kind == "context_too_long"));
    let e = env
        .system
        .ask(&AgentId::main("nobody"), Task::new("x"))
        .await
        .expect_err("unknown");
    assert!(matches!(e, AgentError::NotFound(_)));
    env.close().await;
}

#[tokio::test]
async fn definitions_are_versioned_and_capabilities_negotiated() {
    let dir = tempfile::tempdir().expect("dir");
    let env = agent_env(
        dir.path(),
        "http://127.0.0.1:9",
        Script::default(),
        AgentSystemConfig::default(),
    )
    .await;
    let reg = env.system.registry();
    let mut d = calculator_agent("worker");
    assert_eq!(reg.create(d.clone()).await.expect("v1"), 1);
    assert!(reg.create(d.clone()).await.is_err(), "names are unique");
    d.system_prompt = "v2 prompt".into();
    assert_eq!(reg.update(d.clone()).await.expect("v2"), 2);
    assert_eq!(
        reg.get("worker").expect("current").system_prompt,
        "v2 prompt"
    );
    assert_eq!(
        reg.version("worker", 1)
            .await
            .expect("read")
            .expect("v1")
            .system_prompt,
        "You compute."
    );
    assert_eq!(reg.rollback("worker", 1).await.expect("rollback"), 3);
    assert_eq!(
        reg.get("worker").expect("current").system_prompt,
        "You compute."
    );
    assert_eq!(reg.head("worker").await, Some((3, 3)));
    let mut bad = d.clone();
    bad.limits.max_steps = 0;
    assert!(reg.update(bad).await.is_err());

    let mut cheap = AgentDef::new("cheap", AgentRole::Researcher, "scripted/demo", "");
    cheap.capabilities = vec![
        Capability::named("research")
            .with("cost_class", "free")
            .with("languages", "en,de"),
    ];
    let mut pricey = AgentDef::new("pricey", AgentRole::Researcher, "fake/m", "");
    pricey.capabilities = vec![
        Capability::named("research")
            .with("cost_class", "high")
            .with("latency_class", "fast"),
    ];
    reg.create(cheap).await.expect("create");
    reg.create(pricey).await.expect("create");
    assert_eq!(reg.who_can("research").len(), 2);
    let q = |f: &dyn Fn(&mut CapabilityQuery)| {
        let mut q = CapabilityQuery {
            capability: "research".into(),
            ..CapabilityQuery::default()
        };
        f(&mut q);
        reg.negotiate(&q)
    };
    assert_eq!(q(&|_| {}).expect("match").agent, "cheap");
    assert_eq!(
        q(&|q| q.latency_class = Some("fast".into()))
            .expect("match")
            .agent,
        "pricey"
    );
    assert_eq!(
        q(&|q| {
            q.params.insert("languages".into(), "de".into());
        })
        .expect("match")
        .agent,
        "cheap"
    );
    assert!(
        q(&|q| {
            q.latency_class = Some("fast".into());
            q.cost_ceiling = Some("low".into());
        })
        .is_err()
    );
    assert!(
        reg.negotiate(&CapabilityQuery {
            capability: "fly".into(),
            ..Default::default()
        })
        .is_err()
    );
    env.close().await;
}

#[tokio::test]
async fn definitions_and_conversations_survive_a_restart_and_passivation() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = AgentSystemConfig {
        idle_timeout: Duration::from_millis(40),
        ..AgentSystemConfig::default()
    };
    let id = AgentId::new("calc", "session-1");
    {
        let env = agent_env(
            dir.path(),
            &fake.base_url(),
            Script::default(),
            config.clone(),
        )
        .await;
        env.system
            .registry()
            .create(calculator_agent("calc"))
            .await
            .expect("create");
        let mut d = calculator_agent("calc");
        d.description = "second version".into();
        env.system.registry().update(d).await.expect("v2");
        fake.push_script(FakeReply::Text("first answer".into()));
        env.system
            .ask(&id, Task::new("first question"))
            .await
            .expect("answer");
        // Idle: passivated by the reaper (final snapshot, actor stopped).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while env.system.is_active(&id) {
            assert!(tokio::time::Instant::now() < deadline, "never passivated");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(env.system.active_count(), 0);
        // Re-activated from its snapshot on the next message.
        fake.push_script(FakeReply::Text("second answer".into()));
        env.system
            .ask(&id, Task::new("second question"))
            .await
            .expect("answer");
        let sent = &fake.requests()[1].body["messages"];
        assert_eq!(
            sent.as_array().map(Vec::len),
            Some(4),
            "system + first turn + new question"
        );
        env.close().await;
    }
    let env = agent_env(dir.path(), &fake.base_url(), Script::default(), config).await;
    let def = env
        .system
        .registry()
        .get("calc")
        .expect("definition persisted");
    assert_eq!(def.description, "second version");
    assert_eq!(env.system.registry().head("calc").await, Some((2, 2)));
    let history = env.system.history(&id).await.expect("history");
    let texts: Vec<&str> = history.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        texts,
        [
            "first question",
            "first answer",
            "second question",
            "second answer"
        ]
    );
    assert_eq!(
        env.ledger.totals(&CostScope::Agent("calc".into())).requests,
        2,
        "costs persisted"
    );
    env.close().await;
}

#[tokio::test]
async fn envelopes_topics_and_delegation() {
    let script = Script::from_toml(
        r#"
        [[rules]]
        when = { system_contains = "coordinator", turn = 0 }
        tool_calls = [{ name = "delegate", arguments = '{"capability":"compute","task":"what is 2 + 2?"}' }]
        [[rules]]
        when = { system_contains = "coordinator" }
        text = "delegated and done"
        "#,
    )
    .expect("script");
    let dir = tempfile::tempdir().expect("dir");
    let env = agent_env(
        dir.path(),
        "http://127.0.0.1:9",
        script,
        AgentSystemConfig::default(),
    )
    .await;
    let reg = env.system.registry();
    let mut coord = AgentDef::new(
        "coord",
        AgentRole::Planner,
        "scripted/demo",
        "You are a coordinator.",
    );
    coord.tools = vec!["delegate".into()];
    reg.create(coord).await.expect("create");
    let mut math = AgentDef::new("math", AgentRole::Executor, "scripted/demo", "You compute.");
    math.tools = vec!["calculator".into()];
    math.capabilities = vec![Capability::named("compute")];
    reg.create(math).await.expect("create");

    // Delegation: coord's tool call runs math, whose scripted model calls the calculator.
    let mut math_events = env.system.subscribe(&AgentId::main("math"));
    let out = env
        .system
        .ask(&AgentId::main("coord"), Task::new("go"))
        .await
        .expect("answer");
    assert_eq!(out.text, "[scripted] delegated and done");
    let mut saw_calc = false;
    while let Ok(e) = math_events.try_recv() {
        saw_calc |=
            matches!(e.kind, AgentEventKind::ToolResult { ref output, .. } if output == "4");
    }
    assert!(saw_calc, "the delegate ran the calculator");

    // Request/reply through the envelope.
    let req = Envelope::request(
        Sender::External("test".into()),
        AgentId::main("math"),
        "compute 3 * 5",
    );
    let reply = env.system.request(req.clone()).await.expect("reply");
    assert_eq!(reply.correlation, Some(req.id));
    assert!(reply.payload.contains("15"), "{}", reply.payload);
    let mut late = Envelope::request(
        Sender::External("test".into()),
        AgentId::main("math"),
        "1+1",
    );
    late.deadline_unix_ms = Some(1);
    assert_eq!(
        env.system.request(late).await,
        Err(AgentError::DeadlineExceeded)
    );

    // Publish/subscribe, and an agent bound to a topic.
    let mut sub = env.system.subscribe_topic("news");
    env.system.bind_topic("news", AgentId::new("math", "news"));
    let mut bound = env.system.subscribe(&AgentId::new("math", "news"));
    let n = env
        .system
        .publish(Envelope::event(
            Sender::External("test".into()),
            "news",
            "compute 10 - 3",
        ))
        .expect("publish");
    assert_eq!(n, 2);
    assert_eq!(sub.recv().await.expect("event").payload, "compute 10 - 3");
    loop {
        let e = bound.recv().await.expect("bound agent event");
        if let AgentEventKind::Final { text } = e.kind {
            assert!(text.contains('7'), "{text}");
            break;
        }
    }
    env.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_follows_definitions_another_node_writes_when_reloaded() {
    use aios_actors::agent::AgentRegistry;
    use aios_actors::records::Records;
    use aios_supervisor::snapshot::{SledStore, Snapshots};
    // Two registries on one store, as two nodes on one PostgreSQL database.
    let records = Records::new(Snapshots::new(std::sync::Arc::new(
        SledStore::temporary().expect("store"),
    )));
    let here = AgentRegistry::open(records.clone()).await.expect("here");
    let there = AgentRegistry::open(records).await.expect("there");
    let mut d = AgentDef::new("w", AgentRole::Executor, "scripted/demo", "v1");
    there.create(d.clone()).await.expect("create");
    assert!(here.get("w").is_none());
    assert_eq!(here.reload().await.expect("reload"), 1);
    assert_eq!(here.get("w").expect("seen").system_prompt, "v1");
    assert_eq!(here.reload().await.expect("reload"), 0, "nothing new");
    d.system_prompt = "v2".into();
    there.update(d).await.expect("update");
    assert_eq!(here.reload().await.expect("reload"), 1);
    assert_eq!(here.get("w").expect("seen").system_prompt, "v2");
    there.delete("w").await.expect("delete");
    assert_eq!(here.reload().await.expect("reload"), 1);
    assert!(here.get("w").is_none());
}
