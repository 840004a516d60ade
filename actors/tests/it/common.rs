//! Shared set-up: providers pointed at the fake, a supervision tree with a store, a ledger.

use std::sync::Arc;
use std::time::Duration;

use aios_actors::cost::CostLedger;
use aios_actors::llm::anthropic::{AnthropicConfig, AnthropicProvider};
use aios_actors::llm::openai::{OpenAiConfig, OpenAiProvider};
use aios_actors::llm::{ApiKey, HttpOptions, RetryPolicy, SharedProvider};
use aios_actors::records::Records;
use aios_actors::scheduler::{RateLimiter, RateLimits, Scheduler, SchedulerConfig};
use aios_supervisor::snapshot::{SledStore, Snapshots};
use aios_supervisor::{Root, Strategy, SupervisorSpec, TreeEnv, start_root};

pub const KEY: &str = "sk-test-key-1234";

pub fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts_max: attempts,
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(200),
        jitter: true,
    }
}

pub fn openai(base_url: &str, retry: RetryPolicy) -> OpenAiProvider {
    OpenAiProvider::new(OpenAiConfig {
        name: "fake-openai".into(),
        base_url: base_url.into(),
        api_key: Some(ApiKey::new(KEY)),
        http: HttpOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
        },
        retry,
    })
    .expect("valid config")
}

pub fn anthropic(base_url: &str, retry: RetryPolicy) -> AnthropicProvider {
    AnthropicProvider::new(AnthropicConfig {
        name: "fake-anthropic".into(),
        base_url: base_url.into(),
        api_key: Some(ApiKey::new(KEY)),
        http: HttpOptions::default(),
        retry,
    })
    .expect("valid config")
}

/// A root supervisor over a temporary store, and a cost ledger in the same store.
pub struct Env {
    pub root: Root,
    #[allow(dead_code)]
    pub snapshots: Snapshots,
    pub ledger: CostLedger,
}

impl Env {
    pub async fn new() -> Env {
        let store = SledStore::temporary().expect("temporary store");
        let snapshots = Snapshots::new(Arc::new(store));
        let root = start_root(
            SupervisorSpec::new("root", Strategy::OneForOne),
            TreeEnv::new(Some(snapshots.clone())),
        )
        .await
        .expect("root");
        let ledger = CostLedger::open(Records::new(snapshots.clone()))
            .await
            .expect("ledger");
        Env {
            root,
            snapshots,
            ledger,
        }
    }

    pub async fn scheduler(&self, config: SchedulerConfig, provider: SharedProvider) -> Scheduler {
        self.scheduler_limited(config, provider, RateLimits::default())
            .await
    }

    pub async fn scheduler_limited(
        &self,
        config: SchedulerConfig,
        provider: SharedProvider,
        limits: RateLimits,
    ) -> Scheduler {
        let (spec, s) = Scheduler::spec(
            config,
            provider,
            Arc::new(RateLimiter::new(limits)),
            self.ledger.clone(),
        )
        .expect("valid scheduler");
        self.root
            .supervisor()
            .start_child(spec)
            .await
            .expect("scheduler starts");
        s
    }
}

/// A whole agent stack over a store in `dir`: a dynamic `agents` supervisor, a ledger, the
/// registry, schedulers for `fake/m` (the fake provider) and `scripted/demo`, and the system.
pub struct AgentEnv {
    pub root: Root,
    pub system: aios_actors::agent::AgentSystem,
    pub ledger: CostLedger,
    #[allow(dead_code)]
    pub orch: aios_actors::orchestration::Orchestrator,
}

/// The context window of the `fake/small` model of [`agent_env`], in tokens.
pub const SMALL_CONTEXT_LEN: u64 = 1024;

pub async fn agent_env(
    dir: &std::path::Path,
    fake_url: &str,
    script: aios_actors::llm::scripted::Script,
    config: aios_actors::agent::AgentSystemConfig,
) -> AgentEnv {
    use aios_actors::agent::{AgentRegistry, AgentSystem, tools::ToolBox};
    use aios_actors::llm::scripted::ScriptedProvider;
    use aios_actors::scheduler::LlmRouter;

    let store = SledStore::open(dir, &Default::default()).expect("store");
    let snapshots = Snapshots::new(Arc::new(store));
    let root = start_root(
        SupervisorSpec::new("root", Strategy::OneForOne),
        TreeEnv::new(Some(snapshots.clone())),
    )
    .await
    .expect("root");
    let agents = root
        .supervisor()
        .start_supervisor(SupervisorSpec::dynamic("agents").intensity(20, Duration::from_secs(10)))
        .await
        .expect("agents supervisor");
    let runs = root
        .supervisor()
        .start_supervisor(SupervisorSpec::dynamic("runs").intensity(20, Duration::from_secs(10)))
        .await
        .expect("runs supervisor");
    let records = Records::new(snapshots.clone());
    let ledger = CostLedger::open(records.clone()).await.expect("ledger");
    let registry = AgentRegistry::open(records.clone())
        .await
        .expect("registry");
    let mut schedulers = Vec::new();
    // A model with a small window, for context-window tests.
    let mut small = SchedulerConfig::new("fake", "small");
    small.context_len = SMALL_CONTEXT_LEN;
    let providers: Vec<(SchedulerConfig, SharedProvider)> = vec![
        (
            SchedulerConfig::new("fake", "m"),
            Arc::new(openai(fake_url, fast_retry(3))),
        ),
        (small, Arc::new(openai(fake_url, fast_retry(3)))),
        (
            SchedulerConfig::new("scripted", "demo"),
            Arc::new(ScriptedProvider::new("scripted", script)),
        ),
    ];
    for (cfg, provider) in providers {
        let (spec, s) = Scheduler::spec(
            cfg,
            provider,
            Arc::new(RateLimiter::new(RateLimits::default())),
            ledger.clone(),
        )
        .expect("scheduler");
        root.supervisor().start_child(spec).await.expect("start");
        schedulers.push(s);
    }
    let router = LlmRouter::new(schedulers).expect("router");
    let system = AgentSystem::start(
        agents,
        router,
        ToolBox::with_builtins(),
        registry,
        None,
        config,
    );
    let orch = aios_actors::orchestration::Orchestrator::open(system.clone(), runs, records)
        .await
        .expect("orchestrator");
    AgentEnv {
        root,
        system,
        ledger,
        orch,
    }
}

impl AgentEnv {
    /// Stops the tree and drops everything that holds the store.
    pub async fn close(self) {
        let AgentEnv {
            root,
            system,
            ledger,
            orch,
        } = self;
        root.shutdown(Duration::from_secs(10))
            .await
            .expect("shutdown");
        drop(orch);
        drop(system);
        drop(ledger);
    }
}
