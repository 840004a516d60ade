//! The node API: tree layout, spawning persistent actors, lookup, restarts, reopening.

use std::time::Duration;

use aios::demo::{Counter, CounterMsg};
use aios::{ChildStatus, Persistence, Runtime, RuntimeConfig, RuntimeError, WorkerSpec};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_its_tree_and_persistent_actors_resume_after_a_crash_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(RuntimeConfig::new(dir.path())).await.unwrap();
    let top: Vec<(String, ChildStatus)> = rt
        .root()
        .which_children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.path, c.status))
        .collect();
    assert_eq!(
        top,
        ["services", "memory", "tools", "agents", "runs"]
            .map(|p| (p.to_string(), ChildStatus::Running { generation: 1 }))
    );

    let spec = WorkerSpec::new("counter", Counter).persistent(Persistence::new("test/counter"));
    let c = rt.agents().start_worker(spec).await.unwrap();
    assert_eq!(c.call(|r| CounterMsg::Add(5, r), WAIT).await.unwrap(), 5);
    let found = rt
        .lookup::<CounterMsg>("agents/counter")
        .expect("registered by path");
    c.cast(CounterMsg::Crash).unwrap();
    found.wait_for_generation(2, WAIT).await.unwrap();
    assert_eq!(found.call(CounterMsg::Get, WAIT).await.unwrap(), 5);
    rt.shutdown().await.unwrap();

    let rt = Runtime::open(RuntimeConfig::new(dir.path())).await.unwrap();
    let spec = WorkerSpec::new("counter", Counter).persistent(Persistence::new("test/counter"));
    let c = rt.agents().start_worker(spec).await.unwrap();
    assert_eq!(c.call(CounterMsg::Get, WAIT).await.unwrap(), 5);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_in_use_by_another_node_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(RuntimeConfig::new(dir.path())).await.unwrap();
    let err = Runtime::open(RuntimeConfig::new(dir.path()))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RuntimeError::Store(_)), "{text}");
    assert!(text.contains("lock"), "{text}");
    rt.shutdown().await.unwrap();
}

#[test]
fn invalid_configuration_names_the_field() {
    let mut config = RuntimeConfig::new("/tmp/x");
    config.buffered_flush_every = Duration::ZERO;
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("buffered_flush_every"), "{err}");
    let err = RuntimeConfig::new("").validate().unwrap_err().to_string();
    assert!(err.contains("data_dir"), "{err}");
}

/// The node wires its vector memory into the agents: an agent with a memory namespace gets
/// the relevant memories in its context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_retrieve_from_the_node_memory() {
    use aios::actors::agent::{AgentDef, AgentRole, Task};
    use aios::actors::memory::NewMemory;
    use aios::actors::protocol::AgentId;

    let fake = aios_testkit::FakeLlm::start(aios_testkit::FakeConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(fake_llm_config(dir.path(), &fake.base_url()))
        .await
        .unwrap();
    let memory = rt.memory_store();
    memory.ensure_namespace("kb").await.unwrap();
    memory
        .remember(
            "kb",
            vec![
                NewMemory::text("the office wifi password rotates every monday"),
                NewMemory::text("the cafeteria closes at three"),
            ],
        )
        .await
        .unwrap();
    let mut def = AgentDef::new("helper", AgentRole::Executor, "fake/m", "You help.");
    def.memory_namespace = Some("kb".into());
    rt.agent_system().registry().create(def).await.unwrap();
    rt.agent_system()
        .ask(
            &AgentId::main("helper"),
            Task::new("when does the wifi password rotate?"),
        )
        .await
        .unwrap();
    let request = fake.requests().pop().unwrap();
    let system = request.body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(system.contains("Relevant memory:"), "{system}");
    assert!(
        system.contains("wifi password rotates every monday"),
        "{system}"
    );

    // "Remember that …" goes through short-term memory into the agent's namespace, once.
    for _ in 0..2 {
        rt.agent_system()
            .ask(
                &AgentId::main("helper"),
                Task::new("Please remember that the parking garage closes at 22:00"),
            )
            .await
            .unwrap();
    }
    let found = memory
        .search(
            "kb",
            aios::actors::memory::SearchRequest::text("when does the parking garage close", 5),
        )
        .await
        .unwrap();
    let saved: Vec<_> = found
        .hits
        .iter()
        .filter(|h| h.text == "the parking garage closes at 22:00")
        .collect();
    assert_eq!(saved.len(), 1, "{:?}", found.hits);
    assert_eq!(saved[0].meta.agent.as_deref(), Some("helper"));
    rt.shutdown().await.unwrap();
}

/// The node's plugin tools reach agents: a model's call to `files` goes through the tool
/// service (grants, schema, host actor) and writes into the agent instance's sandbox
/// (`<sandbox>/<tenant>/<agent>/<instance>`; a task without a tenant runs as `default`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_call_plugin_tools_through_the_tool_service() {
    use aios::actors::agent::{AgentDef, AgentRole, Task};
    use aios::actors::protocol::AgentId;
    use aios_testkit::{FakeReply, FakeToolCall};

    let fake = aios_testkit::FakeLlm::start(aios_testkit::FakeConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(fake_llm_config(dir.path(), &fake.base_url()))
        .await
        .unwrap();
    let mut def = AgentDef::new("scribe", AgentRole::Executor, "fake/m", "You write files.");
    def.tools = vec!["files".into()];
    rt.agent_system().registry().create(def).await.unwrap();
    fake.push_script(FakeReply::ToolCalls(vec![
        FakeToolCall::new(
            "c1",
            "files",
            r#"{"op":"write","path":"notes/todo.txt","content":"ship it"}"#,
            0,
        ),
        FakeToolCall::new("c2", "files", r#"{"op":"delete","path":"x"}"#, 1),
    ]));
    fake.push_script(FakeReply::Text("done".into()));
    rt.agent_system()
        .ask(&AgentId::main("scribe"), Task::new("write the todo"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(
            dir.path()
                .join("sandbox/default/scribe/main/notes/todo.txt")
        )
        .unwrap(),
        "ship it"
    );
    // The invalid call was refused by the schema and its reason went back to the model.
    let last = fake.requests().pop().unwrap().body.to_string();
    assert!(last.contains("invalid arguments"), "{last}");
    let usage = rt.tool_service().usage();
    assert_eq!(
        usage[&("files@1.0.0".to_string(), "scribe".to_string())].calls,
        1
    );
    rt.shutdown().await.unwrap();
}

/// A node whose only model is `fake/m`, the fake OpenAI-compatible server at `url`.
fn fake_llm_config(dir: &std::path::Path, url: &str) -> RuntimeConfig {
    use aios::actors::scheduler::config::{LlmConfig, ProviderConfig, ProviderKind};
    use aios::actors::scheduler::{RateLimits, SchedulerConfig};
    let mut config = RuntimeConfig::new(dir);
    config.llm = LlmConfig {
        providers: vec![ProviderConfig {
            name: "fake".into(),
            kind: ProviderKind::Openai,
            base_url: Some(url.to_string()),
            api_key_env: None,
            script_file: None,
            limits: RateLimits::default(),
            retry_attempts_max: 1,
            request_timeout: Duration::from_secs(30),
        }],
        models: vec![SchedulerConfig::new("fake", "m")],
    };
    config
}
