//! The scheduler against the fake: the concurrency cap under a burst, round-robin fairness,
//! cancellation, the cache, exact cost accounting and the budget fallback.

use std::sync::Arc;
use std::time::Duration;

use aios_actors::cost::{CostScope, Price};
use aios_actors::llm::{ChatMessage, ChatRequest, LlmError, RetryPolicy, SharedProvider};
use aios_actors::scheduler::{
    Budget, CacheConfig, CancelFilter, LlmRouter, ModelKey, QueuePolicy, RequestMeta,
    SchedulerConfig,
};
use aios_testkit::{FakeConfig, FakeLlm, FakeReply};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::common::{Env, KEY, openai};

fn meta(agent: &str, tenant: &str) -> RequestMeta {
    RequestMeta {
        agent: agent.into(),
        tenant: tenant.into(),
        session: None,
        run: Some(format!("run-{agent}")),
        priority: 0,
    }
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::user(text)],
        ..ChatRequest::default()
    }
}

async fn fake(latency: Duration) -> FakeLlm {
    FakeLlm::start(FakeConfig {
        api_key: Some(KEY.into()),
        latency,
        ..FakeConfig::default()
    })
    .await
}

fn provider(fake: &FakeLlm) -> SharedProvider {
    Arc::new(openai(&fake.base_url(), RetryPolicy::none()))
}

#[tokio::test]
async fn the_concurrency_cap_holds_under_a_burst() {
    let fake = fake(Duration::from_millis(5)).await;
    let env = Env::new().await;
    let mut cfg = SchedulerConfig::new("fake", "m");
    cfg.concurrency_max = 4;
    let s = env.scheduler(cfg, provider(&fake)).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.chat(
                ask(&format!("burst {i}")),
                meta(&format!("a{}", i % 10), "t"),
                None,
                None,
            )
            .await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("answer");
    }
    assert_eq!(
        fake.max_in_flight(),
        4,
        "the cap is reached and never exceeded"
    );
    let stats = s.stats();
    assert_eq!(stats.in_flight_peak, 4);
    assert_eq!(
        (stats.submitted, stats.completed, stats.failed),
        (200, 200, 0)
    );
    assert_eq!((stats.queued, stats.in_flight), (0, 0));
    assert!(stats.latency_p50_us > 0 && stats.wait_p99_us >= stats.wait_p50_us);
}

/// One slot, a greedy agent with 20 queued requests and a modest one with 2 queued behind
/// them: round-robin serves the modest agent right after the first greedy request.
#[tokio::test]
async fn round_robin_is_fair_between_agents_under_contention() {
    for (policy, modest_last_at) in [(QueuePolicy::RoundRobin, 4), (QueuePolicy::Fifo, 22)] {
        let fake = fake(Duration::ZERO).await;
        let gate = Arc::new(Notify::new());
        fake.push_script(FakeReply::Gated(gate.clone(), Box::new(FakeReply::Echo)));
        let env = Env::new().await;
        let mut cfg = SchedulerConfig::new("fake", "m");
        cfg.concurrency_max = 1;
        cfg.policy = policy;
        let s = env.scheduler(cfg, provider(&fake)).await;
        let mut tasks = Vec::new();
        let first = {
            let s = s.clone();
            tokio::spawn(async move {
                s.chat(ask("greedy 0"), meta("greedy", "t"), None, None)
                    .await
            })
        };
        fake.wait_in_flight(1).await;
        for i in 1..=20 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.chat(ask(&format!("greedy {i}")), meta("greedy", "t"), None, None)
                    .await
            }));
        }
        while s.stats().queued < 20 {
            tokio::task::yield_now().await;
        }
        for i in 0..2 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.chat(ask(&format!("modest {i}")), meta("modest", "t"), None, None)
                    .await
            }));
        }
        while s.stats().queued < 22 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        first.await.expect("join").expect("answer");
        for t in tasks {
            t.await.expect("join").expect("answer");
        }
        let order: Vec<String> = fake
            .requests()
            .iter()
            .map(|r| {
                r.body["messages"][0]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        let last_modest = order
            .iter()
            .rposition(|c| c.starts_with("modest"))
            .expect("modest served");
        assert_eq!(
            last_modest, modest_last_at,
            "{policy:?}: modest served last at {last_modest}: {order:?}"
        );
        if policy == QueuePolicy::RoundRobin {
            assert_eq!(
                &order[..5],
                ["greedy 0", "greedy 1", "modest 0", "greedy 2", "modest 1"]
            );
        }
    }
}

#[tokio::test]
async fn cost_is_exact_per_agent_run_tenant_and_model() {
    let fake = fake(Duration::ZERO).await;
    let env = Env::new().await;
    let mut cfg = SchedulerConfig::new("fake", "m");
    cfg.price = Price {
        input_usd_per_mtok: 2.5,
        output_usd_per_mtok: 10.0,
    };
    let s = env.scheduler(cfg, provider(&fake)).await;
    let mut want_nanos = 0u64;
    for (i, agent) in ["a", "b", "a"].into_iter().enumerate() {
        let text = "word ".repeat(i + 1);
        let out = s
            .chat(ask(&text), meta(agent, "acme"), None, None)
            .await
            .expect("answer");
        // The fake echoes "echo: <text>": i+2 words out, i+1 words in.
        let (inp, outp) = (i as u64 + 1, i as u64 + 2);
        assert_eq!(
            (
                out.response.usage.input_tokens,
                out.response.usage.output_tokens
            ),
            (inp, outp)
        );
        let nanos = inp * 2500 + outp * 10_000;
        assert_eq!(out.cost_nanos, nanos);
        want_nanos += nanos;
    }
    let a = env.ledger.totals(&CostScope::Agent("a".into()));
    assert_eq!(a.requests, 2);
    assert_eq!(a.cost_nanos, (2500 + 2 * 10_000) + (3 * 2500 + 4 * 10_000));
    assert_eq!(
        env.ledger
            .totals(&CostScope::Tenant("acme".into()))
            .cost_nanos,
        want_nanos
    );
    assert_eq!(
        env.ledger
            .totals(&CostScope::Model("fake/m".into()))
            .requests,
        3
    );
    assert_eq!(
        env.ledger
            .totals(&CostScope::Run("run-b".into()))
            .input_tokens,
        2
    );
}

#[tokio::test]
async fn cancellation_reaches_queued_and_in_flight_requests() {
    let fake = fake(Duration::ZERO).await;
    let gate = Arc::new(Notify::new());
    fake.set_default(FakeReply::Gated(gate.clone(), Box::new(FakeReply::Echo)));
    let env = Env::new().await;
    let mut cfg = SchedulerConfig::new("fake", "m");
    cfg.concurrency_max = 1;
    let s = env.scheduler(cfg, provider(&fake)).await;
    let spawn = |agent: &'static str| {
        let s = s.clone();
        tokio::spawn(async move { s.chat(ask("x"), meta(agent, "t"), None, None).await })
    };
    let in_flight = spawn("doomed");
    fake.wait_in_flight(1).await;
    let queued = spawn("doomed");
    let survivor = spawn("other");
    while s.stats().queued < 2 {
        tokio::task::yield_now().await;
    }
    let n = s
        .cancel(CancelFilter::Run("run-doomed".into()))
        .await
        .expect("cancel");
    assert_eq!(n, 2);
    assert_eq!(in_flight.await.expect("join"), Err(LlmError::Cancelled));
    assert_eq!(queued.await.expect("join"), Err(LlmError::Cancelled));
    // The freed slot goes to the survivor.
    fake.wait_in_flight(1).await;
    gate.notify_one();
    gate.notify_one();
    survivor.await.expect("join").expect("survivor answered");

    // A caller's token cancels its own request at once.
    let token = CancellationToken::new();
    let s2 = s.clone();
    let t2 = token.clone();
    let mine =
        tokio::spawn(async move { s2.chat(ask("y"), meta("me", "t"), None, Some(&t2)).await });
    fake.wait_in_flight(1).await;
    token.cancel();
    assert_eq!(mine.await.expect("join"), Err(LlmError::Cancelled));
    assert!(s.stats().cancelled >= 3);
}

#[tokio::test]
async fn deterministic_requests_hit_the_cache_and_cost_nothing_twice() {
    let fake = fake(Duration::ZERO).await;
    let env = Env::new().await;
    let mut cfg = SchedulerConfig::new("fake", "m");
    cfg.cache = Some(CacheConfig {
        ttl: Duration::from_secs(60),
        entries_max: 16,
    });
    cfg.price = Price {
        input_usd_per_mtok: 1.0,
        output_usd_per_mtok: 1.0,
    };
    let s = env.scheduler(cfg, provider(&fake)).await;
    let mut det = ask("same question");
    det.temperature = Some(0.0);
    let a = s
        .chat(det.clone(), meta("a", "t"), None, None)
        .await
        .expect("answer");
    let b = s
        .chat(det.clone(), meta("a", "t"), None, None)
        .await
        .expect("answer");
    assert!(!a.cached && b.cached);
    assert_eq!(a.response, b.response);
    assert_eq!(b.cost_nanos, 0);
    let mut warm = det.clone();
    warm.temperature = Some(0.7);
    let c = s
        .chat(warm, meta("a", "t"), None, None)
        .await
        .expect("answer");
    assert!(!c.cached, "non-deterministic requests are never cached");
    assert_eq!(fake.request_count(), 2);
    let t = env.ledger.totals(&CostScope::Agent("a".into()));
    assert_eq!((t.requests, t.cached_requests), (2, 1));
    assert_eq!(s.stats().cache_hits, 1);
}

#[tokio::test]
async fn budget_fallback_switches_to_the_cheaper_model_then_stops() {
    let fake = fake(Duration::ZERO).await;
    let env = Env::new().await;
    let mut big = SchedulerConfig::new("fake", "big");
    big.fallback = Some("fake/small".into());
    big.fallback_at = 0.8;
    let small = SchedulerConfig::new("fake", "small");
    let router = LlmRouter::new(vec![
        env.scheduler(big, provider(&fake)).await,
        env.scheduler(small, provider(&fake)).await,
    ])
    .expect("router");
    let key = ModelKey::parse("fake/big").expect("key");
    let budget = |spent| {
        Some(Budget {
            limit_nanos: 100,
            spent_nanos: spent,
        })
    };
    let out = router
        .chat(&key, ask("x"), meta("a", "t"), budget(10), None, None)
        .await
        .expect("ok");
    assert_eq!((out.model.as_str(), out.fallback), ("fake/big", false));
    let out = router
        .chat(&key, ask("x"), meta("a", "t"), budget(85), None, None)
        .await
        .expect("ok");
    assert_eq!((out.model.as_str(), out.fallback), ("fake/small", true));
    assert_eq!(fake.requests()[1].body["model"], "small");
    let e = router
        .chat(&key, ask("x"), meta("a", "t"), budget(100), None, None)
        .await;
    assert!(matches!(e, Err(LlmError::BudgetExceeded { .. })), "{e:?}");
    let e = router
        .chat(
            &ModelKey::parse("fake/none").expect("key"),
            ask("x"),
            meta("a", "t"),
            None,
            None,
            None,
        )
        .await;
    assert!(matches!(e, Err(LlmError::UnknownModel { .. })));
    assert!(LlmRouter::new(vec![]).is_ok());
}
