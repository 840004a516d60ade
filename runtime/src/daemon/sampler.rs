//! Gauges sampled every [`SAMPLE_EVERY`] for `/metrics`: actors and their supervisors
//! (children by state, mailbox depth, restarts), active agents, each LLM scheduler (queue,
//! in flight, totals, wait and latency percentiles), LLM tokens and cost by model, and memory
//! items per namespace (the first [`NAMESPACES_SAMPLED_MAX`]). Counters that only move on
//! events (HTTP requests, tool calls, supervision events, webhook deliveries) are recorded
//! where they happen.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use aios_actors::cost::CostScope;
use aios_supervisor::ChildStatus;
use axum::Extension;
use axum::extract::State;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::http::{ApiQuery, Problem, Shared};
use super::keys::{OPERATOR_TENANT, Principal};

/// How often the gauges are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Memory namespaces sampled at most.
pub const NAMESPACES_SAMPLED_MAX: usize = 100;
/// Samples kept for `/v1/metrics/history`: one hour at [`SAMPLE_EVERY`].
pub const HISTORY_MAX: usize = 720;
/// Tenants whose token and cost totals a sample keeps, at most.
pub const TENANTS_SAMPLED_MAX: usize = 100;

/// One point of the node's recent history, for the web interface's charts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Unix ms.
    pub at_ms: u64,
    /// Registered actors.
    pub actors: usize,
    /// Agent instances running.
    pub agents_active: usize,
    /// Runs in progress.
    pub runs_active: usize,
    /// Children of each top supervisor (`services`, `memory`, `tools`, `agents`, `runs`).
    pub children: BTreeMap<&'static str, usize>,
    /// Restarts of the top supervisors' children, since each child's spec was added.
    pub restarts: u64,
    /// Messages waiting in those children's mailboxes.
    pub mailbox: usize,
    /// LLM requests queued in every scheduler.
    pub llm_queued: usize,
    /// LLM requests in flight.
    pub llm_in_flight: usize,
    /// LLM tokens so far (input + output), every model.
    pub tokens: u64,
    /// LLM cost so far, USD.
    pub cost_usd: f64,
    /// Tokens and cost so far per tenant (the first [`TENANTS_SAMPLED_MAX`]).
    #[serde(skip)]
    pub tenants: BTreeMap<String, (u64, f64)>,
}

/// The samples kept, oldest first.
#[derive(Debug, Default)]
pub struct History(std::sync::Mutex<VecDeque<Sample>>);

impl History {
    fn push(&self, sample: Sample) {
        let mut h = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if h.len() >= HISTORY_MAX {
            h.pop_front();
        }
        h.push_back(sample);
    }

    fn since(&self, since_ms: u64) -> Vec<Sample> {
        let h = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.iter().filter(|x| x.at_ms > since_ms).cloned().collect()
    }
}

/// `?since_ms=`: only samples taken after it.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct HistoryQuery {
    #[serde(default)]
    since_ms: u64,
}

/// `GET /v1/metrics/history`: the samples of the last hour. The operator tenant gets the
/// node's figures; another tenant only its own tokens and cost.
pub async fn history(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<axum::response::Response, Problem> {
    use axum::response::IntoResponse;
    let samples = s.history.since(q.since_ms);
    let items: Vec<serde_json::Value> = if p.tenant == OPERATOR_TENANT {
        samples
            .iter()
            .map(|x| serde_json::to_value(x).unwrap_or_default())
            .collect()
    } else {
        // A sample without the tenant (not among the tenants sampled) is left out rather
        // than shown as zero.
        samples
            .iter()
            .filter_map(|x| {
                let (tokens, cost) = x.tenants.get(&p.tenant).copied()?;
                Some(serde_json::json!({"at_ms": x.at_ms, "tokens": tokens, "cost_usd": cost}))
            })
            .collect()
    };
    Ok(axum::Json(serde_json::json!({
        "every_ms": SAMPLE_EVERY.as_millis() as u64,
        "items": items,
    }))
    .into_response())
}

/// Samples until `stop`.
pub fn spawn(state: Shared, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            sample(&state).await;
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
    });
}

async fn sample(s: &Shared) {
    let rt = &s.rt;
    let mut point = Sample {
        at_ms: aios_actors::protocol::unix_ms(),
        actors: rt.registry().len(),
        agents_active: rt.agent_system().active_count(),
        runs_active: rt.orchestrator().active_count(),
        ..Sample::default()
    };
    metrics::gauge!("aios_actors_registered").set(rt.registry().len() as f64);
    metrics::gauge!("aios_agents_active").set(rt.agent_system().active_count() as f64);
    metrics::gauge!("aios_runs_active").set(rt.orchestrator().active_count() as f64);
    for (name, sup) in [
        ("services", rt.services()),
        ("memory", rt.memory()),
        ("tools", rt.tools()),
        ("agents", rt.agents()),
        ("runs", rt.runs()),
    ] {
        let Ok(children) = sup.which_children().await else {
            continue;
        };
        let running = children
            .iter()
            .filter(|c| matches!(c.status, ChildStatus::Running { .. }))
            .count();
        let mailbox: usize = children.iter().map(|c| c.mailbox_len).sum();
        let restarts: u64 = children.iter().map(|c| c.restarts).sum();
        point.children.insert(name, children.len());
        point.restarts += restarts;
        point.mailbox += mailbox;
        metrics::gauge!("aios_children", "supervisor" => name, "state" => "running")
            .set(running as f64);
        metrics::gauge!("aios_children", "supervisor" => name, "state" => "other")
            .set((children.len() - running) as f64);
        metrics::gauge!("aios_mailbox_depth", "supervisor" => name).set(mailbox as f64);
        metrics::gauge!("aios_child_restarts", "supervisor" => name).set(restarts as f64);
    }
    let router = rt.llm();
    for key in router.models() {
        let Some(scheduler) = router.get(key) else {
            continue;
        };
        let st = scheduler.stats();
        point.llm_queued += st.queued;
        point.llm_in_flight += st.in_flight;
        let model = key.as_str().to_string();
        metrics::gauge!("aios_llm_queue_depth", "model" => model.clone()).set(st.queued as f64);
        metrics::gauge!("aios_llm_in_flight", "model" => model.clone()).set(st.in_flight as f64);
        for (what, v) in [
            ("submitted", st.submitted),
            ("completed", st.completed),
            ("failed", st.failed),
            ("cancelled", st.cancelled),
            ("cache_hits", st.cache_hits),
        ] {
            metrics::counter!("aios_llm_requests_total", "model" => model.clone(), "outcome" => what)
                .absolute(v);
        }
        metrics::gauge!("aios_llm_wait_seconds", "model" => model.clone(), "quantile" => "0.5")
            .set(st.wait_p50_us as f64 / 1e6);
        metrics::gauge!("aios_llm_wait_seconds", "model" => model.clone(), "quantile" => "0.99")
            .set(st.wait_p99_us as f64 / 1e6);
        metrics::gauge!("aios_llm_latency_seconds", "model" => model.clone(), "quantile" => "0.5")
            .set(st.latency_p50_us as f64 / 1e6);
        metrics::gauge!("aios_llm_latency_seconds", "model" => model, "quantile" => "0.99")
            .set(st.latency_p99_us as f64 / 1e6);
    }
    for (scope, t) in rt.costs().list(&CostScope::Model(String::new())) {
        let CostScope::Model(model) = scope else {
            continue;
        };
        point.tokens += t.input_tokens + t.output_tokens;
        point.cost_usd += t.cost_usd();
        metrics::counter!("aios_llm_tokens_total", "model" => model.clone(), "direction" => "input")
            .absolute(t.input_tokens);
        metrics::counter!("aios_llm_tokens_total", "model" => model.clone(), "direction" => "output")
            .absolute(t.output_tokens);
        metrics::gauge!("aios_llm_cost_usd_total", "model" => model).set(t.cost_usd());
    }
    for (scope, t) in rt
        .costs()
        .list(&CostScope::Tenant(String::new()))
        .into_iter()
        .take(TENANTS_SAMPLED_MAX)
    {
        if let CostScope::Tenant(tenant) = scope {
            point
                .tenants
                .insert(tenant, (t.input_tokens + t.output_tokens, t.cost_usd()));
        }
    }
    s.history.push(point);
    for ns in rt
        .memory_store()
        .namespaces()
        .into_iter()
        .take(NAMESPACES_SAMPLED_MAX)
    {
        if let Ok(shards) = rt.memory_store().stats(&ns.name).await {
            let items: u64 = shards.iter().map(|x| x.items).sum();
            metrics::gauge!("aios_memory_items", "namespace" => ns.name).set(items as f64);
        }
    }
}
