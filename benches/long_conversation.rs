//! `BENCH long_conversation`: one agent instance driven through `AIOS_BENCH_LC_TURNS`
//! (default 10,000) sequential turns on the offline scripted model, whose window is
//! `AIOS_BENCH_LC_CONTEXT` (default 4096) tokens counted as words (what the scripted model
//! itself counts). Each turn is a user message of about 40 words; the scripted model echoes
//! it, so the conversation grows by about 85 tokens a turn and passes the window every ~40
//! turns: by the end it is about 200 times the window. The agent runs as in production:
//! supervised, its snapshot written durably to sled before every answer, its transcript
//! appended, cost accounted.
//!
//! The provider is the scripted one behind a wrapper that records the size of every prompt
//! it is sent, in the model's own count. Figures:
//! - `p99_prompt_tokens`, `max_prompt_tokens`: prompts of the turns' calls, against
//!   `context_limit`;
//! - `p99_turn_ms` over all turns, and the p99 of the first and of the last thousand turns
//!   (`first_p99_turn_ms`, `last_p99_turn_ms`); `last_over_first` is the baseline
//!   comparison in the same run: 1.0 means flat;
//! - `summary_calls`: the compactions (one summariser call each), and the largest
//!   summariser prompt.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aios::actors::agent::tools::ToolBox;
use aios::actors::agent::{AgentDef, AgentRegistry, AgentRole, AgentSystem, AgentSystemConfig};
use aios::actors::agent::{Task, context::SUMMARY_PROMPT};
use aios::actors::cost::CostLedger;
use aios::actors::llm::scripted::{Script, ScriptedProvider};
use aios::actors::llm::tokens::Tokenizer;
use aios::actors::llm::{ChatRequest, ChatResponse, DeltaSink, LlmError, Provider};
use aios::actors::protocol::AgentId;
use aios::actors::records::Records;
use aios::actors::scheduler::{LlmRouter, RateLimiter, RateLimits, Scheduler, SchedulerConfig};
use aios_supervisor::snapshot::{SledStore, Snapshots};
use aios_supervisor::{Strategy, SupervisorSpec, TreeEnv, start_root};
use common::{bench_line, env_count, fmt0, fmt2};

/// The scripted provider, recording each prompt's size in words.
struct Measured {
    inner: ScriptedProvider,
    /// (is a summariser call, prompt words), in call order.
    prompts: Mutex<Vec<(bool, u64)>>,
}

#[async_trait::async_trait]
impl Provider for Measured {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn chat(
        &self,
        request: &ChatRequest,
        stream: Option<DeltaSink>,
    ) -> Result<ChatResponse, LlmError> {
        let words: u64 = request
            .messages
            .iter()
            .map(|m| Tokenizer::Words.count_message(m))
            .sum();
        let summary = request
            .messages
            .first()
            .is_some_and(|m| m.content.starts_with(SUMMARY_PROMPT));
        self.prompts
            .lock()
            .expect("the prompts lock is never poisoned: nothing panics while holding it")
            .push((summary, words));
        self.inner.chat(request, stream).await
    }
}

fn p99(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() as f64 * 0.99) as usize).min(samples.len() - 1)]
}

async fn long_conversation() {
    let turns = env_count("AIOS_BENCH_LC_TURNS", 10_000) as usize;
    let context = env_count("AIOS_BENCH_LC_CONTEXT", 4096);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp dir");
    let store = SledStore::open(dir.path(), &Default::default()).expect("store");
    let snapshots = Snapshots::new(Arc::new(store));
    let root = start_root(
        SupervisorSpec::new("root", Strategy::OneForOne),
        TreeEnv::new(Some(snapshots.clone())),
    )
    .await
    .expect("root");
    let agents = root
        .supervisor()
        .start_supervisor(SupervisorSpec::dynamic("agents"))
        .await
        .expect("agents supervisor");
    let records = Records::new(snapshots);
    let ledger = CostLedger::open(records.clone()).await.expect("ledger");
    let registry = AgentRegistry::open(records).await.expect("registry");
    let provider = Arc::new(Measured {
        inner: ScriptedProvider::new("scripted", Script::default()),
        prompts: Mutex::new(Vec::with_capacity(turns * 2)),
    });
    let mut model = SchedulerConfig::new("scripted", "demo");
    model.context_len = context;
    model.tokenizer = Tokenizer::Words;
    let (spec, scheduler) = Scheduler::spec(
        model,
        provider.clone(),
        Arc::new(RateLimiter::new(RateLimits::default())),
        ledger,
    )
    .expect("scheduler");
    root.supervisor().start_child(spec).await.expect("start");
    let router = LlmRouter::new(vec![scheduler]).expect("router");
    let system = AgentSystem::start(
        agents,
        router,
        ToolBox::with_builtins(),
        registry,
        None,
        AgentSystemConfig::default(),
    );
    system
        .registry()
        .create(AgentDef::new(
            "diarist",
            AgentRole::Executor,
            "scripted/demo",
            "You keep a diary of everything the user tells you and answer questions about it.",
        ))
        .await
        .expect("define");
    let id = AgentId::main("diarist");
    let mut turn_ms = Vec::with_capacity(turns);
    let started = Instant::now();
    for i in 0..turns {
        let text = format!(
            "Entry {i}: today the user walked {} kilometres along the river, met {} people at \
             the market, bought {} apples and {} pears, and wrote down that the weather was \
             mild with a light wind from the west and some rain in the evening.",
            i % 23,
            i % 11,
            i % 7,
            i % 5
        );
        let t = Instant::now();
        system
            .ask(&id, Task::new(text))
            .await
            .unwrap_or_else(|e| panic!("turn {i} failed: {e}"));
        turn_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let elapsed = started.elapsed();
    let prompts = provider
        .prompts
        .lock()
        .expect("the prompts lock is never poisoned")
        .clone();
    let mut turn_prompts: Vec<f64> = prompts
        .iter()
        .filter(|(summary, _)| !summary)
        .map(|&(_, w)| w as f64)
        .collect();
    let max_prompt = turn_prompts.iter().copied().fold(0.0, f64::max);
    let summary_calls = prompts.iter().filter(|(s, _)| *s).count();
    let max_summary_prompt = prompts
        .iter()
        .filter(|(s, _)| *s)
        .map(|&(_, w)| w)
        .max()
        .unwrap_or(0);
    let window = turns.min(1000);
    let first = p99(&mut turn_ms[..window].to_vec());
    let last = p99(&mut turn_ms[turns - window..].to_vec());
    let all = p99(&mut turn_ms.clone());
    let transcript = system
        .transcript(&id, (turns as u64).saturating_sub(1), 1)
        .await
        .expect("transcript");
    assert_eq!(
        transcript.first().map(|e| e.seq),
        Some(turns as u64 - 1),
        "every turn is in the transcript"
    );
    bench_line(
        "long_conversation",
        &[
            ("turns", turns.to_string()),
            ("p99_prompt_tokens", fmt0(p99(&mut turn_prompts))),
            ("max_prompt_tokens", fmt0(max_prompt)),
            ("context_limit", context.to_string()),
            ("p99_turn_ms", fmt2(all)),
            ("first_p99_turn_ms", fmt2(first)),
            ("last_p99_turn_ms", fmt2(last)),
            ("last_over_first", fmt2(last / first)),
            ("summary_calls", summary_calls.to_string()),
            ("max_summary_prompt_tokens", max_summary_prompt.to_string()),
            ("total_s", fmt2(elapsed.as_secs_f64())),
        ],
    );
    assert!(
        max_prompt <= context as f64,
        "a prompt of {max_prompt} tokens went past the window of {context}"
    );
    drop(system);
    root.shutdown(Duration::from_secs(10))
        .await
        .expect("the tree stops");
}

fn main() {
    common::runtime().block_on(long_conversation());
}
