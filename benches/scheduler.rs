//! The LLM scheduler against the fake provider (`aios_testkit::FakeLlm`, a real HTTP server on
//! loopback in the same process).
//!
//! - `BENCH scheduler_vs_direct`: a provider that behaves like a real rate-limited one (429
//!   with `Retry-After` when more than 8 requests are in flight, 20 ms per accepted request).
//!   100 agents (tasks) each make `AIOS_BENCH_SCHED_CALLS` (default 10) sequential calls,
//!   once through one round-robin scheduler with `concurrency_max = 8`, once straight to the
//!   provider. Both sides use the same provider settings and the same [`RetryPolicy`]: the
//!   default exponential backoff with jitter, which honours `Retry-After`, with the most
//!   attempts allowed (16) so that calls rarely fail; failures are counted, not retried
//!   further. Each side gets a fresh fake and a fresh HTTP client. Completed calls per second
//!   over the wall time of the side; `ratio = scheduled / direct`.
//!
//!   `Retry-After` is 0.05 s by default (`AIOS_BENCH_SCHED_RETRY_AFTER_MS`, default 50):
//!   2.5 × the request latency, the same order as a real provider's "try again in 1-2 s" for
//!   multi-second requests, scaled down so the run stays short. `RetryPolicy::delay` honours
//!   it exactly (no jitter), capped by `backoff_max`. The direct side is very sensitive to
//!   it: a short `Retry-After` makes the 92 rejected agents poll often enough to refill a
//!   freed slot within about a millisecond (close to the provider's ceiling, but calls run
//!   out of attempts after 15 × 50 ms and fail); a long one leaves slots idle.
//! - `BENCH scheduler_fairness`: 100 agents each submit calls in a loop for
//!   `AIOS_BENCH_FAIR_MS` (default 3000) ms through a round-robin scheduler with
//!   `concurrency_max = 8` against a fake with 5 ms latency and no capacity limit. Queue wait
//!   (`LlmOutcome::wait`) p50/p99 over every call, and `spread` = most-served agent's
//!   completed calls / least-served agent's. A call submitted before the deadline counts when
//!   it completes.
//!
//! Every scheduler charges a cost ledger kept in a sled store under `CARGO_TARGET_TMPDIR`, as
//! in production (the slot is held until the cost is durable).

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aios_actors::cost::CostLedger;
use aios_actors::llm::openai::{OpenAiConfig, OpenAiProvider};
use aios_actors::llm::{
    ApiKey, ChatMessage, ChatRequest, HttpOptions, LlmError, RETRY_ATTEMPTS_MAX, RetryPolicy,
    SharedProvider,
};
use aios_actors::records::Records;
use aios_actors::scheduler::{
    QueuePolicy, RateLimiter, RateLimits, RequestMeta, Scheduler, SchedulerConfig,
};
use aios_supervisor::snapshot::{SledStore, Snapshots};
use aios_supervisor::{Root, Strategy, SupervisorSpec, TreeEnv, start_root};
use aios_testkit::{FakeConfig, FakeLlm};
use common::{bench_line, fmt0, fmt1, fmt2, per_s, quantile_us};

const AGENTS: usize = 100;
const CAP: usize = 8;
const KEY: &str = "sk-bench-key-1234";
const MODEL: &str = "m";
/// The fake's default `Retry-After` on 429, in milliseconds (see the module doc).
const RETRY_AFTER_MS: u64 = 50;
const LATENCY_RATE_LIMITED: Duration = Duration::from_millis(20);
const LATENCY_FAIRNESS: Duration = Duration::from_millis(5);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The retry policy of both sides: the default (250 ms doubling to 20 s, jitter, honours
/// `Retry-After`) with the most attempts allowed.
fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        attempts_max: RETRY_ATTEMPTS_MAX,
        ..RetryPolicy::default()
    }
}

fn provider(fake: &FakeLlm) -> SharedProvider {
    Arc::new(
        OpenAiProvider::new(OpenAiConfig {
            name: "fake".into(),
            base_url: fake.base_url(),
            api_key: Some(ApiKey::new(KEY)),
            http: HttpOptions {
                connect_timeout: Duration::from_secs(2),
                request_timeout: Duration::from_secs(30),
            },
            retry: retry_policy(),
        })
        .expect("the bench's provider config is valid"),
    )
}

fn retry_after_ms() -> u64 {
    common::env_count("AIOS_BENCH_SCHED_RETRY_AFTER_MS", RETRY_AFTER_MS)
}

async fn fake(capacity: Option<usize>, latency: Duration) -> FakeLlm {
    FakeLlm::start(FakeConfig {
        capacity,
        retry_after_s: retry_after_ms() as f64 / 1000.0,
        latency,
        api_key: Some(KEY.into()),
        ..FakeConfig::default()
    })
    .await
}

fn ask(agent: usize, call: usize) -> ChatRequest {
    ChatRequest {
        model: MODEL.into(),
        messages: vec![ChatMessage::user(format!("agent {agent} call {call}"))],
        ..ChatRequest::default()
    }
}

fn meta(agent: usize) -> RequestMeta {
    RequestMeta {
        agent: format!("agent-{agent}"),
        tenant: "default".into(),
        ..RequestMeta::default()
    }
}

/// A root supervisor and a cost ledger over one sled store in a temporary directory.
struct Env {
    root: Root,
    ledger: CostLedger,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("the target's tmp directory is writable");
        let store = SledStore::open(dir.path(), &Default::default())
            .expect("a fresh sled store opens in an empty directory");
        let snapshots = Snapshots::new(Arc::new(store));
        let root = start_root(
            SupervisorSpec::new("bench", Strategy::OneForOne),
            TreeEnv::new(Some(snapshots.clone())),
        )
        .await
        .expect("the root supervisor starts");
        let ledger = CostLedger::open(Records::new(snapshots))
            .await
            .expect("an empty ledger opens");
        Env {
            root,
            ledger,
            _dir: dir,
        }
    }

    /// A round-robin scheduler with `CAP` slots, no rate limits, started under the root.
    async fn scheduler(&self, provider: SharedProvider) -> Scheduler {
        let mut config = SchedulerConfig::new("fake", MODEL);
        config.concurrency_max = CAP;
        config.policy = QueuePolicy::RoundRobin;
        let (spec, scheduler) = Scheduler::spec(
            config,
            provider,
            Arc::new(RateLimiter::new(RateLimits::default())),
            self.ledger.clone(),
        )
        .expect("the bench's scheduler config is valid");
        self.root
            .supervisor()
            .start_child(spec)
            .await
            .expect("the scheduler starts");
        scheduler
    }

    async fn shutdown(self) {
        self.root
            .shutdown(SHUTDOWN_TIMEOUT)
            .await
            .expect("the tree shuts down");
    }
}

/// What one side of `scheduler_vs_direct` did.
struct Side {
    completed: u64,
    failed: u64,
    elapsed: Duration,
    /// The fake's peak of accepted requests in flight.
    max_in_flight: usize,
    /// HTTP requests the fake received (429s included).
    http_requests: usize,
    /// The scheduler's provider latency p50 (µs), 0 for the direct side.
    provider_p50_us: u64,
}

/// Runs `AGENTS` tasks of `calls` sequential calls each through `call`; counts outcomes.
async fn agents<F, Fut>(calls: usize, call: F) -> (u64, u64, Duration)
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), LlmError>> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..AGENTS)
        .map(|a| {
            let call = call.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                for c in 0..calls {
                    match call(a, c).await {
                        Ok(()) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (o, f) = t.await.expect("an agent task does not panic");
        ok += o;
        failed += f;
    }
    (ok, failed, start.elapsed())
}

async fn scheduled_side(calls: usize) -> Side {
    let fake = fake(Some(CAP), LATENCY_RATE_LIMITED).await;
    let env = Env::new().await;
    let scheduler = env.scheduler(provider(&fake)).await;
    let s = scheduler.clone();
    let (completed, failed, elapsed) = agents(calls, move |a, c| {
        let s = s.clone();
        async move { s.chat(ask(a, c), meta(a), None, None).await.map(|_| ()) }
    })
    .await;
    let side = Side {
        completed,
        failed,
        elapsed,
        max_in_flight: fake.max_in_flight(),
        http_requests: fake.request_count(),
        provider_p50_us: scheduler.stats().latency_p50_us,
    };
    assert!(
        scheduler.stats().in_flight_peak <= CAP,
        "the scheduler never exceeds its cap"
    );
    env.shutdown().await;
    fake.shutdown().await;
    side
}

async fn direct_side(calls: usize) -> Side {
    let fake = fake(Some(CAP), LATENCY_RATE_LIMITED).await;
    let p = provider(&fake);
    let (completed, failed, elapsed) = agents(calls, move |a, c| {
        let p = p.clone();
        async move { p.chat(&ask(a, c), None).await.map(|_| ()) }
    })
    .await;
    let side = Side {
        completed,
        failed,
        elapsed,
        max_in_flight: fake.max_in_flight(),
        http_requests: fake.request_count(),
        provider_p50_us: 0,
    };
    fake.shutdown().await;
    side
}

fn scheduler_vs_direct(rt: &tokio::runtime::Runtime) {
    let calls = common::env_count("AIOS_BENCH_SCHED_CALLS", 10) as usize;
    let (s, d) = rt.block_on(async {
        tokio::spawn(async move { (scheduled_side(calls).await, direct_side(calls).await) })
            .await
            .expect("the bench task does not panic")
    });
    assert!(
        s.max_in_flight <= CAP,
        "scheduled: the fake saw {} in flight, above the cap {CAP}",
        s.max_in_flight
    );
    let (sps, dps) = (per_s(s.completed, s.elapsed), per_s(d.completed, d.elapsed));
    bench_line(
        "scheduler_vs_direct",
        &[
            ("agents", AGENTS.to_string()),
            ("capacity", CAP.to_string()),
            ("scheduled_per_s", fmt0(sps)),
            ("direct_per_s", fmt0(dps)),
            ("ratio", fmt2(sps / dps)),
            ("failed_scheduled", s.failed.to_string()),
            ("failed_direct", d.failed.to_string()),
            ("max_in_flight_scheduled", s.max_in_flight.to_string()),
        ],
    );
    bench_line(
        "scheduler_vs_direct_detail",
        &[
            ("calls_per_agent", calls.to_string()),
            ("latency_ms", LATENCY_RATE_LIMITED.as_millis().to_string()),
            ("retry_after_ms", retry_after_ms().to_string()),
            ("attempts_max", RETRY_ATTEMPTS_MAX.to_string()),
            ("scheduled_s", fmt2(s.elapsed.as_secs_f64())),
            ("direct_s", fmt2(d.elapsed.as_secs_f64())),
            ("http_requests_scheduled", s.http_requests.to_string()),
            ("http_requests_direct", d.http_requests.to_string()),
            ("max_in_flight_direct", d.max_in_flight.to_string()),
            // How long a scheduler slot is held per call, against the provider's own time.
            ("slot_hold_ms", fmt2(CAP as f64 * 1000.0 / sps)),
            ("provider_p50_ms", fmt2(s.provider_p50_us as f64 / 1000.0)),
            (
                "ideal_per_s",
                fmt0(CAP as f64 / LATENCY_RATE_LIMITED.as_secs_f64()),
            ),
        ],
    );
}

fn scheduler_fairness(rt: &tokio::runtime::Runtime) {
    let run_for = Duration::from_millis(common::env_count("AIOS_BENCH_FAIR_MS", 3000));
    let (mut waits, served, failed, elapsed, stats) = rt.block_on(async {
        tokio::spawn(async move {
            let fake = fake(None, LATENCY_FAIRNESS).await;
            let env = Env::new().await;
            let scheduler = env.scheduler(provider(&fake)).await;
            let start = Instant::now();
            let deadline = start + run_for;
            let tasks: Vec<_> = (0..AGENTS)
                .map(|a| {
                    let s = scheduler.clone();
                    tokio::spawn(async move {
                        let (mut waits, mut failed) = (Vec::new(), 0u64);
                        let mut c = 0;
                        while Instant::now() < deadline {
                            match s.chat(ask(a, c), meta(a), None, None).await {
                                Ok(out) => waits.push(out.wait),
                                Err(_) => failed += 1,
                            }
                            c += 1;
                        }
                        (waits, failed)
                    })
                })
                .collect();
            let mut all = Vec::new();
            let mut served = Vec::with_capacity(AGENTS);
            let mut failed = 0;
            for t in tasks {
                let (w, f) = t.await.expect("an agent task does not panic");
                served.push(w.len() as u64);
                all.extend(w);
                failed += f;
            }
            let elapsed = start.elapsed();
            let stats = scheduler.stats();
            env.shutdown().await;
            fake.shutdown().await;
            (all, served, failed, elapsed, stats)
        })
        .await
        .expect("the bench task does not panic")
    });
    assert!(!waits.is_empty(), "some calls completed");
    let most = served.iter().copied().max().expect("there are agents");
    let least = served.iter().copied().min().expect("there are agents");
    let calls = waits.len() as u64;
    bench_line(
        "scheduler_fairness",
        &[
            ("agents", AGENTS.to_string()),
            ("cap", CAP.to_string()),
            ("p50_wait_ms", fmt1(quantile_us(&mut waits, 0.50) / 1000.0)),
            ("p99_wait_ms", fmt1(quantile_us(&mut waits, 0.99) / 1000.0)),
            (
                "spread",
                if least == 0 {
                    "inf".to_string()
                } else {
                    fmt2(most as f64 / least as f64)
                },
            ),
            ("calls", calls.to_string()),
            ("min_calls", least.to_string()),
            ("max_calls", most.to_string()),
            ("failed", failed.to_string()),
            ("per_s", fmt0(per_s(calls, elapsed))),
            ("in_flight_peak", stats.in_flight_peak.to_string()),
            (
                "provider_p50_ms",
                fmt2(stats.latency_p50_us as f64 / 1000.0),
            ),
        ],
    );
}

fn main() {
    let rt = common::runtime();
    scheduler_vs_direct(&rt);
    scheduler_fairness(&rt);
}
