//! Gauges sampled every [`SAMPLE_EVERY`] for `/metrics`: actors and their supervisors
//! (children by state, mailbox depth, restarts), active agents, each LLM scheduler (queue,
//! in flight, totals, wait and latency percentiles), LLM tokens and cost by model, and memory
//! items per namespace (the first [`NAMESPACES_SAMPLED_MAX`]). Counters that only move on
//! events (HTTP requests, tool calls, supervision events, webhook deliveries) are recorded
//! where they happen.

use std::time::Duration;

use aios_actors::cost::CostScope;
use aios_supervisor::ChildStatus;
use tokio_util::sync::CancellationToken;

use super::http::Shared;

/// How often the gauges are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Memory namespaces sampled at most.
pub const NAMESPACES_SAMPLED_MAX: usize = 100;

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
        metrics::counter!("aios_llm_tokens_total", "model" => model.clone(), "direction" => "input")
            .absolute(t.input_tokens);
        metrics::counter!("aios_llm_tokens_total", "model" => model.clone(), "direction" => "output")
            .absolute(t.output_tokens);
        metrics::gauge!("aios_llm_cost_usd_total", "model" => model).set(t.cost_usd());
    }
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
