//! The LLM scheduler: one supervised actor per provider/model through which every LLM
//! request of every agent goes.
//!
//! - **Concurrency cap**: at most `concurrency_max` requests in flight, also under bursts.
//! - **Queue** with a policy ([`QueuePolicy`]: FIFO, round-robin across tenants then agents,
//!   priority), bounded by `queue_len_max` ([`LlmError::QueueFull`] beyond).
//! - **Rate limits** per provider: token buckets for requests/min and tokens/min, shared by
//!   every model of the provider; prompt tokens are estimated up front and corrected with
//!   the reported usage.
//! - **Cancellation** of queued and in-flight requests by agent, run, session or tenant, and
//!   through the caller's [`CancellationToken`].
//! - **Observability**: [`Scheduler::stats`] gives queue depth, in-flight, counters and
//!   wait/latency percentiles.
//! - **Cost**: every answer is priced and charged to its agent, session, run, tenant and
//!   model in the [`CostLedger`] before it is returned; identical deterministic requests can
//!   be answered from a [`ResponseCache`].
//!
//! The actor owns the queue and makes every dispatch decision; a dispatched request runs in
//! its own task, which releases its slot and wakes the actor when done.

mod bucket;
mod cache;
pub mod config;
mod queue;
pub mod quota;
mod router;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aios_supervisor::snapshot::Durability;
use aios_supervisor::{ActorHandle, Context, SendError, Worker, WorkerSpec};
use dashmap::DashMap;
use ractor::{ActorProcessingErr, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

pub use self::bucket::TokenBucket;
pub use self::cache::{CACHE_ENTRIES_MAX, CacheConfig, ResponseCache};
pub use self::queue::{Owner, QueuePolicy, RequestQueue};
pub use self::quota::{Ask, Reservation, TenantLimits, TenantQuota, TenantUsage};
pub use self::router::{Budget, LlmRouter, ModelKey};

use crate::cost::{Charge, CostLedger, Price};
use crate::tokens::{ContextWindow, Tokenizer};
use crate::{ChatRequest, ChatResponse, DeltaSink, LlmError, SharedProvider};

/// The largest concurrency cap.
pub const CONCURRENCY_MAX: usize = 4096;
/// The largest queue.
pub const QUEUE_LEN_MAX: usize = 1_000_000;
/// Wait and latency samples kept for percentiles.
const SAMPLES_MAX: usize = 4096;
/// Costs are written to the store before the answer returns, and made durable by the caller's
/// next durable write (an agent's snapshot of the same turn) or the store's periodic flush:
/// one fsync per agent turn instead of two.
const COST_DURABILITY: Durability = Durability::Buffered;

/// One scheduler's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// The provider's name.
    pub provider: String,
    /// The model as the provider names it.
    pub model: String,
    /// Requests in flight at most (1..=[`CONCURRENCY_MAX`]).
    #[serde(default = "default_concurrency")]
    pub concurrency_max: usize,
    /// Requests queued at most (1..=[`QUEUE_LEN_MAX`]).
    #[serde(default = "default_queue_len")]
    pub queue_len_max: usize,
    /// Queue order.
    #[serde(default)]
    pub policy: QueuePolicy,
    /// The response cache, off when `None`.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// The price per million tokens.
    #[serde(default)]
    pub price: Price,
    /// A cheaper `provider/model` to fall back to when an agent nears its cost limit.
    #[serde(default)]
    pub fallback: Option<String>,
    /// The fraction of the cost limit from which the fallback is used (default 0.8).
    #[serde(default = "default_fallback_at")]
    pub fallback_at: f64,
    /// The model's context window in tokens, prompt and answer together
    /// ([`CONTEXT_LEN_MIN`]..=[`CONTEXT_LEN_MAX`], default 8192). Agents fit their context
    /// to it before every call.
    #[serde(default = "default_context_len")]
    pub context_len: u64,
    /// How the model's tokens are counted (default `estimate`).
    #[serde(default)]
    pub tokenizer: Tokenizer,
}

/// The smallest configurable context window.
pub const CONTEXT_LEN_MIN: u64 = 512;
/// The largest configurable context window.
pub const CONTEXT_LEN_MAX: u64 = 10_000_000;

fn default_context_len() -> u64 {
    8192
}

fn default_concurrency() -> usize {
    8
}
fn default_queue_len() -> usize {
    10_000
}
fn default_fallback_at() -> f64 {
    0.8
}

impl SchedulerConfig {
    /// A scheduler for `provider/model` with the defaults: 8 in flight, 10,000 queued,
    /// round-robin, no cache, free, no fallback.
    pub fn new(provider: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
            concurrency_max: default_concurrency(),
            queue_len_max: default_queue_len(),
            policy: QueuePolicy::default(),
            cache: None,
            price: Price::default(),
            fallback: None,
            fallback_at: default_fallback_at(),
            context_len: default_context_len(),
            tokenizer: Tokenizer::default(),
        }
    }

    /// The model's context window.
    pub fn window(&self) -> ContextWindow {
        ContextWindow {
            len: self.context_len,
            tokenizer: self.tokenizer,
        }
    }

    /// `provider/model`.
    pub fn key(&self) -> ModelKey {
        ModelKey::new(&self.provider, &self.model)
    }

    /// Checks every bound.
    ///
    /// # Errors
    /// Names the model and the bad field.
    pub fn validate(&self) -> Result<(), String> {
        let key = self.key();
        let check = || -> Result<(), String> {
            if self.provider.is_empty() || self.model.is_empty() {
                return Err("provider and model must not be empty".into());
            }
            if !(1..=CONCURRENCY_MAX).contains(&self.concurrency_max) {
                return Err(format!(
                    "concurrency_max must be 1..={CONCURRENCY_MAX}, got {}",
                    self.concurrency_max
                ));
            }
            if !(1..=QUEUE_LEN_MAX).contains(&self.queue_len_max) {
                return Err(format!(
                    "queue_len_max must be 1..={QUEUE_LEN_MAX}, got {}",
                    self.queue_len_max
                ));
            }
            if !(self.fallback_at > 0.0 && self.fallback_at <= 1.0) {
                return Err(format!(
                    "fallback_at must be in (0, 1], got {}",
                    self.fallback_at
                ));
            }
            if let Some(c) = &self.cache {
                c.validate()?;
            }
            if !(CONTEXT_LEN_MIN..=CONTEXT_LEN_MAX).contains(&self.context_len) {
                return Err(format!(
                    "context_len must be {CONTEXT_LEN_MIN}..={CONTEXT_LEN_MAX} tokens, got {}",
                    self.context_len
                ));
            }
            self.price.validate()
        };
        check().map_err(|e| format!("model {key}: {e}"))
    }
}

/// Requests/min and tokens/min limits of one provider, shared by its schedulers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    /// Requests per minute, unlimited when `None`.
    pub requests_per_min: Option<u64>,
    /// Tokens (prompt + generated) per minute, unlimited when `None`.
    pub tokens_per_min: Option<u64>,
}

/// The token buckets of one provider.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Mutex<(Option<TokenBucket>, Option<TokenBucket>)>,
}

impl RateLimiter {
    /// A limiter with full buckets.
    pub fn new(limits: RateLimits) -> Self {
        let now = Instant::now();
        Self {
            buckets: Mutex::new((
                limits
                    .requests_per_min
                    .map(|n| TokenBucket::per_minute(n, now)),
                limits
                    .tokens_per_min
                    .map(|n| TokenBucket::per_minute(n, now)),
            )),
        }
    }

    /// Takes one request and `tokens`, or says how long to wait.
    fn try_take(&self, tokens: u64) -> Result<(), Duration> {
        let now = Instant::now();
        let mut b = lock(&self.buckets);
        let wait_r = b.0.as_mut().map_or(Duration::ZERO, |r| r.wait_for(1, now));
        let wait_t =
            b.1.as_mut()
                .map_or(Duration::ZERO, |t| t.wait_for(tokens, now));
        let wait = wait_r.max(wait_t);
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(r) = b.0.as_mut() {
            r.take(1, now);
        }
        if let Some(t) = b.1.as_mut() {
            t.take(tokens, now);
        }
        Ok(())
    }

    fn adjust_tokens(&self, delta: i64) {
        if let Some(t) = lock(&self.buckets).1.as_mut() {
            t.adjust(delta, Instant::now());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here is a few plain assignments: a poisoned lock holds
    // consistent data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Who a request is for, for queueing, cancellation and cost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestMeta {
    /// The agent's name.
    pub agent: String,
    /// The tenant (`default` when there is one).
    pub tenant: String,
    /// The session, if any.
    pub session: Option<String>,
    /// The run, if any.
    pub run: Option<String>,
    /// Priority for the [`QueuePolicy::Priority`] policy (higher first).
    pub priority: u8,
}

/// What to cancel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelFilter {
    /// Every request of an agent.
    Agent(String),
    /// Every request of a run.
    Run(String),
    /// Every request of a session.
    Session(String),
    /// Every request of a tenant.
    Tenant(String),
}

impl CancelFilter {
    fn matches(&self, m: &RequestMeta) -> bool {
        match self {
            Self::Agent(a) => &m.agent == a,
            Self::Run(r) => m.run.as_ref() == Some(r),
            Self::Session(s) => m.session.as_ref() == Some(s),
            Self::Tenant(t) => &m.tenant == t,
        }
    }
}

/// A completed LLM request.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmOutcome {
    /// The provider's answer.
    pub response: ChatResponse,
    /// The `provider/model` that answered (differs from the requested one after a fallback).
    pub model: ModelKey,
    /// Its cost in nanodollars (0 for a cache hit).
    pub cost_nanos: u64,
    /// Answered from the response cache.
    pub cached: bool,
    /// Answered by the cheaper fallback model.
    pub fallback: bool,
    /// Time spent queued.
    pub wait: Duration,
    /// Time the provider took.
    pub latency: Duration,
}

/// A scheduler's observable state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerStats {
    /// `provider/model`.
    pub model: String,
    /// Requests waiting.
    pub queued: usize,
    /// Requests in flight.
    pub in_flight: usize,
    /// The most requests ever in flight at once (never above the cap).
    pub in_flight_peak: usize,
    /// The cap.
    pub concurrency_max: usize,
    /// Requests submitted.
    pub submitted: u64,
    /// Requests answered by the provider.
    pub completed: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Requests cancelled.
    pub cancelled: u64,
    /// Requests answered from the cache.
    pub cache_hits: u64,
    /// Queue wait, median, over the last samples (µs).
    pub wait_p50_us: u64,
    /// Queue wait, 99th percentile (µs).
    pub wait_p99_us: u64,
    /// Provider latency, median (µs).
    pub latency_p50_us: u64,
    /// Provider latency, 99th percentile (µs).
    pub latency_p99_us: u64,
}

#[derive(Default)]
struct Samples {
    wait_us: VecDeque<u64>,
    latency_us: VecDeque<u64>,
}

fn push_sample(ring: &mut VecDeque<u64>, v: u64) {
    if ring.len() == SAMPLES_MAX {
        ring.pop_front();
    }
    ring.push_back(v);
}

fn percentile(ring: &VecDeque<u64>, p: f64) -> u64 {
    if ring.is_empty() {
        return 0;
    }
    let mut v: Vec<u64> = ring.iter().copied().collect();
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i.min(v.len() - 1)]
}

struct Shared {
    key: ModelKey,
    config: SchedulerConfig,
    provider: SharedProvider,
    limiter: Arc<RateLimiter>,
    ledger: CostLedger,
    cache: Option<Mutex<ResponseCache>>,
    in_flight: AtomicUsize,
    in_flight_peak: AtomicUsize,
    queued: AtomicUsize,
    running: DashMap<Uuid, (RequestMeta, CancellationToken)>,
    submitted: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    cache_hits: AtomicU64,
    samples: Mutex<Samples>,
}

struct LlmCall {
    id: Uuid,
    request: ChatRequest,
    meta: RequestMeta,
    stream: Option<DeltaSink>,
    cancel: CancellationToken,
    reply: oneshot::Sender<Result<LlmOutcome, LlmError>>,
    enqueued: Instant,
    estimated_tokens: u64,
    cache_key: Option<String>,
}

/// The scheduler actor's messages.
#[derive(Debug)]
pub enum SchedulerMsg {
    /// Queue a request.
    Submit(Box<LlmCallBox>),
    /// Cancel queued and in-flight requests; replies with how many.
    Cancel(CancelFilter, RpcReplyPort<usize>),
    /// A slot was freed or a rate-limit wait ended: dispatch what can go.
    Wake,
}

/// A queued request (opaque).
pub struct LlmCallBox(LlmCall);

impl std::fmt::Debug for LlmCallBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmCallBox")
            .field("id", &self.0.id)
            .field("meta", &self.0.meta)
            .finish_non_exhaustive()
    }
}

/// The handle to one provider/model scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
    actor: ActorHandle<SchedulerMsg>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("model", &self.shared.key)
            .finish()
    }
}

impl Scheduler {
    /// The child spec of a scheduler actor and its handle; start the spec under a supervisor.
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn spec(
        config: SchedulerConfig,
        provider: SharedProvider,
        limiter: Arc<RateLimiter>,
        ledger: CostLedger,
    ) -> Result<(aios_supervisor::ChildSpec, Scheduler), String> {
        config.validate()?;
        let key = config.key();
        let shared = Arc::new(Shared {
            key: key.clone(),
            cache: config
                .cache
                .as_ref()
                .map(|c| Mutex::new(ResponseCache::new(c))),
            config,
            provider,
            limiter,
            ledger,
            in_flight: AtomicUsize::new(0),
            in_flight_peak: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            running: DashMap::new(),
            submitted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            samples: Mutex::new(Samples::default()),
        });
        let mailbox = shared.config.queue_len_max + shared.config.concurrency_max + 1024;
        let (spec, actor) = WorkerSpec::new(
            format!("llm:{}", key.as_str().replace('/', ":")),
            SchedulerWorker {
                shared: shared.clone(),
            },
        )
        .mailbox_len_max(mailbox)
        .build();
        Ok((spec, Scheduler { shared, actor }))
    }

    /// `provider/model`.
    pub fn key(&self) -> &ModelKey {
        &self.shared.key
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.shared.config
    }

    /// Runs `request` through the scheduler: from the cache when allowed and fresh, else
    /// queued, dispatched by policy within the limits, priced and charged.
    ///
    /// # Errors
    /// The provider's typed error, [`LlmError::QueueFull`], [`LlmError::Cancelled`] (by
    /// `cancel`, by [`Scheduler::cancel`], or when the caller went away), or
    /// [`LlmError::Unavailable`] when the scheduler stopped.
    pub async fn chat(
        &self,
        mut request: ChatRequest,
        meta: RequestMeta,
        stream: Option<DeltaSink>,
        cancel: Option<&CancellationToken>,
    ) -> Result<LlmOutcome, LlmError> {
        let s = &self.shared;
        s.model_checked(&mut request);
        s.submitted.fetch_add(1, Ordering::Relaxed);
        let cache_key = s.cache.as_ref().and_then(|_| ResponseCache::key(&request));
        if let (Some(cache), Some(key)) = (&s.cache, &cache_key) {
            let hit = lock(cache).get(key, Instant::now());
            if let Some(response) = hit {
                s.cache_hits.fetch_add(1, Ordering::Relaxed);
                let charge = s.charge(&meta);
                if let Err(e) = s
                    .ledger
                    .record(&charge, &response.usage, 0, true, COST_DURABILITY)
                    .await
                {
                    tracing::error!(error = %e, model = %s.key, "cache hit not recorded");
                }
                return Ok(LlmOutcome {
                    response,
                    model: s.key.clone(),
                    cost_nanos: 0,
                    cached: true,
                    fallback: false,
                    wait: Duration::ZERO,
                    latency: Duration::ZERO,
                });
            }
        }
        let token = cancel.map_or_else(CancellationToken::new, CancellationToken::child_token);
        let (tx, rx) = oneshot::channel();
        let call = LlmCall {
            id: Uuid::new_v4(),
            estimated_tokens: request.estimated_input_tokens()
                + u64::from(request.max_tokens.unwrap_or(0)),
            request,
            meta,
            stream,
            cancel: token.clone(),
            reply: tx,
            enqueued: Instant::now(),
            cache_key,
        };
        match self
            .actor
            .cast(SchedulerMsg::Submit(Box::new(LlmCallBox(call))))
        {
            Ok(()) => {}
            Err(SendError::MailboxFull { .. }) => {
                return Err(LlmError::QueueFull {
                    model: s.key.to_string(),
                    queue_len_max: s.config.queue_len_max,
                });
            }
            Err(e) => {
                return Err(LlmError::Unavailable {
                    message: format!("scheduler {}: {e}", s.key),
                });
            }
        }
        tokio::select! {
            r = rx => r.unwrap_or_else(|_| Err(LlmError::Unavailable {
                message: format!("scheduler {} restarted before answering", s.key),
            })),
            () = token.cancelled() => {
                s.cancelled.fetch_add(1, Ordering::Relaxed);
                Err(LlmError::Cancelled)
            }
        }
    }

    /// Cancels queued and in-flight requests matching `filter`; returns how many.
    ///
    /// # Errors
    /// [`LlmError::Unavailable`] when the scheduler does not answer.
    pub async fn cancel(&self, filter: CancelFilter) -> Result<usize, LlmError> {
        self.actor
            .call(|r| SchedulerMsg::Cancel(filter, r), Duration::from_secs(5))
            .await
            .map_err(|e| LlmError::Unavailable {
                message: format!("scheduler {}: {e}", self.shared.key),
            })
    }

    /// Queue depth, in-flight, counters and percentiles.
    pub fn stats(&self) -> SchedulerStats {
        let s = &self.shared;
        let samples = lock(&s.samples);
        SchedulerStats {
            model: s.key.to_string(),
            queued: s.queued.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
            in_flight_peak: s.in_flight_peak.load(Ordering::Relaxed),
            concurrency_max: s.config.concurrency_max,
            submitted: s.submitted.load(Ordering::Relaxed),
            completed: s.completed.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            cancelled: s.cancelled.load(Ordering::Relaxed),
            cache_hits: s.cache_hits.load(Ordering::Relaxed),
            wait_p50_us: percentile(&samples.wait_us, 0.5),
            wait_p99_us: percentile(&samples.wait_us, 0.99),
            latency_p50_us: percentile(&samples.latency_us, 0.5),
            latency_p99_us: percentile(&samples.latency_us, 0.99),
        }
    }
}

impl Shared {
    fn model_checked(&self, request: &mut ChatRequest) {
        // The scheduler decides the model: the request is for this scheduler's model.
        request.model.clone_from(&self.config.model);
    }

    fn charge(&self, meta: &RequestMeta) -> Charge {
        Charge {
            agent: meta.agent.clone(),
            tenant: meta.tenant.clone(),
            session: meta.session.clone(),
            run: meta.run.clone(),
            model: self.key.to_string(),
        }
    }

    fn finish_cancelled(&self, call: LlmCall) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
        let _ = call.reply.send(Err(LlmError::Cancelled));
    }
}

struct SchedulerWorker {
    shared: Arc<Shared>,
}

/// The scheduler actor's state: its queue.
#[derive(Debug)]
pub struct SchedulerState {
    queue: RequestQueue<LlmCall>,
    timer_pending: bool,
}

impl Worker for SchedulerWorker {
    type Msg = SchedulerMsg;
    type State = SchedulerState;

    async fn init(
        &self,
        _ctx: &mut Context<SchedulerMsg>,
        _restored: Option<SchedulerState>,
    ) -> Result<SchedulerState, ActorProcessingErr> {
        Ok(SchedulerState {
            queue: RequestQueue::new(self.shared.config.policy),
            timer_pending: false,
        })
    }

    async fn handle(
        &self,
        ctx: &mut Context<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        let s = &self.shared;
        match msg {
            SchedulerMsg::Submit(call) => {
                let call = call.0;
                if state.queue.len() >= s.config.queue_len_max {
                    let _ = call.reply.send(Err(LlmError::QueueFull {
                        model: s.key.to_string(),
                        queue_len_max: s.config.queue_len_max,
                    }));
                } else {
                    let owner = Owner {
                        tenant: call.meta.tenant.clone(),
                        agent: call.meta.agent.clone(),
                    };
                    let priority = call.meta.priority;
                    state.queue.push(&owner, priority, call);
                }
            }
            SchedulerMsg::Cancel(filter, reply) => {
                let removed = state.queue.remove_where(|c| filter.matches(&c.meta));
                let mut n = removed.len();
                for call in removed {
                    s.finish_cancelled(call);
                }
                for entry in s.running.iter() {
                    if filter.matches(&entry.value().0) {
                        entry.value().1.cancel();
                        n += 1;
                    }
                }
                ctx.reply(reply, n);
            }
            SchedulerMsg::Wake => state.timer_pending = false,
        }
        self.dispatch(ctx, state);
        s.queued.store(state.queue.len(), Ordering::Relaxed);
        Ok(())
    }
}

impl SchedulerWorker {
    fn dispatch(&self, ctx: &Context<SchedulerMsg>, state: &mut SchedulerState) {
        let s = &self.shared;
        while s.in_flight.load(Ordering::Acquire) < s.config.concurrency_max {
            let Some(head) = state.queue.peek() else {
                break;
            };
            if head.cancel.is_cancelled() || head.reply.is_closed() {
                if let Some(call) = state.queue.pop() {
                    s.finish_cancelled(call);
                }
                continue;
            }
            if let Err(wait) = s.limiter.try_take(head.estimated_tokens) {
                if !state.timer_pending {
                    state.timer_pending = true;
                    let me = ctx.myself().clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = me.cast(SchedulerMsg::Wake);
                    });
                }
                break;
            }
            let Some(call) = state.queue.pop() else { break };
            let now_in_flight = s.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
            debug_assert!(now_in_flight <= s.config.concurrency_max);
            s.in_flight_peak.fetch_max(now_in_flight, Ordering::Relaxed);
            let span = tracing::debug_span!("llm_request", model = %s.key, request = %call.id,
                agent = %call.meta.agent, tenant = %call.meta.tenant);
            tokio::spawn(run_call(s.clone(), ctx.myself().clone(), call).instrument(span));
        }
    }
}

/// Releases a slot however the request task ends (a panic included).
struct SlotGuard {
    shared: Arc<Shared>,
    me: ActorHandle<SchedulerMsg>,
    id: Uuid,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.shared.running.remove(&self.id);
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        // A full mailbox means messages are pending, and each one dispatches.
        let _ = self.me.cast(SchedulerMsg::Wake);
    }
}

async fn run_call(shared: Arc<Shared>, me: ActorHandle<SchedulerMsg>, mut call: LlmCall) {
    let _slot = SlotGuard {
        shared: shared.clone(),
        me,
        id: call.id,
    };
    shared
        .running
        .insert(call.id, (call.meta.clone(), call.cancel.clone()));
    let started = Instant::now();
    let wait = started.saturating_duration_since(call.enqueued);
    let result = tokio::select! {
        r = shared.provider.chat(&call.request, call.stream.take()) => r,
        () = call.cancel.cancelled() => Err(LlmError::Cancelled),
        () = call.reply.closed() => Err(LlmError::Cancelled),
    };
    let latency = started.elapsed();
    // The provider is done: the slot goes to the next request while the cost is recorded.
    drop(_slot);
    {
        let mut samples = lock(&shared.samples);
        push_sample(&mut samples.wait_us, wait.as_micros() as u64);
        if result.is_ok() {
            push_sample(&mut samples.latency_us, latency.as_micros() as u64);
        }
    }
    let outcome = match result {
        Ok(response) => {
            let usage = response.usage;
            let actual = usage.input_tokens + usage.output_tokens;
            shared
                .limiter
                .adjust_tokens(actual as i64 - call.estimated_tokens as i64);
            let cost_nanos = shared.config.price.cost_nanos(&usage);
            if let Err(e) = shared
                .ledger
                .record(
                    &shared.charge(&call.meta),
                    &usage,
                    cost_nanos,
                    false,
                    COST_DURABILITY,
                )
                .await
            {
                tracing::error!(error = %e, "LLM cost not recorded");
            }
            if let (Some(cache), Some(key)) = (&shared.cache, call.cache_key.take()) {
                lock(cache).put(key, response.clone(), Instant::now());
            }
            shared.completed.fetch_add(1, Ordering::Relaxed);
            Ok(LlmOutcome {
                response,
                model: shared.key.clone(),
                cost_nanos,
                cached: false,
                fallback: false,
                wait,
                latency,
            })
        }
        Err(LlmError::Cancelled) => {
            shared.cancelled.fetch_add(1, Ordering::Relaxed);
            Err(LlmError::Cancelled)
        }
        Err(e) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, kind = e.kind(), "LLM request failed");
            Err(e)
        }
    };
    let _ = call.reply.send(outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_model_and_field() {
        let mut c = SchedulerConfig::new("p", "m");
        assert!(c.validate().is_ok());
        c.concurrency_max = 0;
        let e = c.validate().unwrap_err();
        assert!(e.contains("p/m") && e.contains("concurrency_max"), "{e}");
        let mut c = SchedulerConfig::new("p", "m");
        c.fallback_at = 1.5;
        assert!(c.validate().unwrap_err().contains("fallback_at"));
    }

    #[test]
    fn percentiles_of_samples() {
        let ring: VecDeque<u64> = (1..=100).collect();
        assert_eq!(percentile(&ring, 0.5), 51);
        assert_eq!(percentile(&ring, 0.99), 99);
        assert_eq!(percentile(&VecDeque::new(), 0.5), 0);
    }
}
