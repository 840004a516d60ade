//! Cluster routes (operator tenant): this node and its peers, drain and undrain.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;
use crate::daemon::http::{ApiJson, Problem, Shared};

/// This node and the cluster's other nodes as this node sees them.
pub(crate) async fn cluster_nodes(State(s): State<Shared>) -> ApiResult {
    let m = &s.membership;
    let stats = m.peer_stats().await;
    let nodes: Vec<Value> = m
        .peers()
        .into_iter()
        .map(|peer| {
            // ractor_cluster names a peer `<node>@<host>`.
            let node = peer.name.split('@').next().unwrap_or_default().to_owned();
            let figures = stats.iter().find(|st| st.node == node);
            let mut v = serde_json::to_value(&peer).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("node".into(), json!(node));
                o.insert("actors".into(), json!(figures.map(|f| f.actors)));
                o.insert(
                    "agents_active".into(),
                    json!(figures.map(|f| f.agents_active)),
                );
                o.insert("agents_busy".into(), json!(figures.map(|f| f.agents_busy)));
                o.insert(
                    "forwarded_in_flight".into(),
                    json!(figures.map(|f| f.forwarded_in_flight)),
                );
                o.insert("draining".into(), json!(figures.map(|f| f.draining)));
                o.insert(
                    "memory_shards".into(),
                    json!(figures.map(|f| f.memory_shards)),
                );
                o.insert("tags".into(), json!(figures.map(|f| f.tags.clone())));
            }
            v
        })
        .collect();
    let system = s.rt.agent_system();
    ok(json!({
        "cluster": m.enabled(),
        "self": {
            "name": m.name(),
            "address": m.advertised(),
            "tls": m.tls(),
            "actors": s.rt.registry().len(),
            "agents_active": system.active_count(),
            "agents_busy": system.busy_count(),
            "draining": system.is_draining(),
            "memory_shards": s.rt.memory_store().hosted_shards(),
            "tags": s.config.cluster.tags,
        },
        "nodes": nodes,
    }))
}

/// The longest a drain waits for busy agents by default, and at most.
pub(crate) const DRAIN_WITHIN_DEFAULT_S: u64 = 30;
pub(crate) const DRAIN_WITHIN_MAX_S: u64 = 600;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DrainBody {
    /// How long to wait for busy agents to finish their task (seconds, default 30, at most
    /// 600).
    #[serde(default)]
    within_s: Option<u64>,
}

/// Drains this node: its agents are passivated (final snapshot, lease released) and activated
/// on the other nodes from then on, until `undrain`.
pub(crate) async fn cluster_drain(
    State(s): State<Shared>,
    ApiJson(body): ApiJson<DrainBody>,
) -> ApiResult {
    let within = body.within_s.unwrap_or(DRAIN_WITHIN_DEFAULT_S);
    if within > DRAIN_WITHIN_MAX_S {
        return Err(Problem::bad_request(format!(
            "within_s: at most {DRAIN_WITHIN_MAX_S}"
        )));
    }
    let m = &s.membership;
    if !m.enabled() {
        return Err(Problem::conflict(
            "this node is not in a cluster: there is nowhere to move its agents",
        ));
    }
    if !m
        .peers()
        .iter()
        .any(|p| p.status == crate::cluster::PeerStatus::Up)
    {
        return Err(Problem::conflict(
            "no other node is up: there is nowhere to move this node's agents",
        ));
    }
    let system = s.rt.agent_system();
    let report = system.drain(std::time::Duration::from_secs(within)).await;
    let (namespaces, shards) = s.rt.memory_store().drain().await;
    tracing::info!(
        passivated = report.passivated,
        remaining = report.remaining,
        memory_namespaces = namespaces,
        memory_shards = shards,
        "node drained"
    );
    ok(json!({
        "node": m.name(),
        "draining": system.is_draining(),
        "passivated": report.passivated,
        "remaining": report.remaining,
        "memory_namespaces_moved": namespaces,
        "memory_shards_moved": shards,
    }))
}

/// Ends a drain: this node activates agents, serves memory namespaces and hosts shards again.
pub(crate) async fn cluster_undrain(State(s): State<Shared>) -> ApiResult {
    let system = s.rt.agent_system();
    system.undrain();
    s.rt.memory_store().undrain();
    ok(json!({ "node": s.membership.name(), "draining": system.is_draining() }))
}
