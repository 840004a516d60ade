//! The `/v1` routes. Every route goes through [`Api::route`] with the least role it needs;
//! [`routes`] is the whole table, and each resource's handlers live in a file of their own
//! (`agents.rs`, `memory.rs`, `tools.rs`, `keys.rs`, `webhooks.rs`, `audit.rs`, `costs.rs`,
//! `cluster.rs`, `tree.rs`, `preferences.rs`; runs, sessions and schedules in `runs.rs` and
//! `schedules.rs` beside this module). Agents and memory namespaces are tenant-scoped by name:
//! the API name `writer` of tenant `acme` is the node's agent `acme.writer`, and handlers get
//! it as a `Scoped` name that only the request's principal can mint (`scope.rs`), so one
//! tenant can neither see nor touch another's. Subsystem errors become problems through the
//! `From` impls of `problem.rs`. Node-wide resources (the actor tree, tool installation, MCP
//! servers, recent errors, audit verification) belong to the operator tenant
//! (`keys::OPERATOR_TENANT`).

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::http::{Api, Problem};
use super::keys::Role;

mod agents;
mod audit;
mod cluster;
mod costs;
mod keys;
mod memory;
mod preferences;
mod problem;
mod scope;
mod tools;
mod tree;
mod webhooks;

pub(crate) use self::agents::*;
pub(crate) use self::audit::*;
pub(crate) use self::cluster::*;
pub(crate) use self::costs::*;
pub(crate) use self::keys::*;
pub(crate) use self::memory::*;
pub(crate) use self::preferences::*;
pub(crate) use self::scope::*;
pub(crate) use self::tools::*;
pub(crate) use self::tree::*;
pub(crate) use self::webhooks::*;

type ApiResult = Result<Response, Problem>;

/// Every `/v1` route, by resource (in this order in the API description).
pub fn routes() -> Api {
    let api = Api::new();
    let api = node_routes(api);
    let api = agent_routes(api);
    let api = tool_routes(api);
    let api = memory_routes(api);
    let api = admin_routes(api);
    let api = work_routes(api);
    webhook_routes(api)
}

/// The node: status, cluster membership and drains, the supervision tree, metrics,
/// preferences, recent errors and the API description.
fn node_routes(api: Api) -> Api {
    use Method as M;
    use Role::{Operator, Viewer};
    api.route(M::GET, "/v1/status", Viewer, status)
        .node_route(M::GET, "/v1/cluster/nodes", Viewer, cluster_nodes)
        .node_route(M::POST, "/v1/cluster/drain", Operator, cluster_drain)
        .node_route(M::POST, "/v1/cluster/undrain", Operator, cluster_undrain)
        .route(M::GET, "/v1/openapi.json", Viewer, super::openapi::openapi)
        .node_route(M::GET, "/v1/tree", Viewer, tree)
        .node_route(M::POST, "/v1/tree/restart", Operator, tree_restart)
        .node_route(M::POST, "/v1/tree/stop", Operator, tree_stop)
        .node_route(M::POST, "/v1/tree/kill", Operator, tree_kill)
        .route(M::GET, "/v1/me", Viewer, me)
        .route(
            M::GET,
            "/v1/metrics/history",
            Viewer,
            super::sampler::history,
        )
        .node_route(
            M::GET,
            "/v1/tree/events",
            Operator,
            super::streams::tree_events,
        )
        .node_route(M::GET, "/v1/tree/ws", Operator, super::streams::tree_ws)
        .route(M::GET, "/v1/preferences", Viewer, prefs_get)
        .route(M::PUT, "/v1/preferences", Viewer, prefs_put)
        .node_route(M::GET, "/v1/errors", Operator, recent_errors)
}

/// Agents: definitions, placement, messages, history, events, WebSockets and the
/// OpenAI-compatible chat completions.
fn agent_routes(api: Api) -> Api {
    use Method as M;
    use Role::{Operator, Viewer};
    api.route(M::GET, "/v1/agents", Viewer, agents_list)
        .route(M::POST, "/v1/agents", Operator, agents_create)
        .route(M::GET, "/v1/agents/{name}", Viewer, agents_get)
        .route(M::PUT, "/v1/agents/{name}", Operator, agents_update)
        .route(M::DELETE, "/v1/agents/{name}", Operator, agents_delete)
        .route(M::GET, "/v1/agents/{name}/placement", Viewer, placement_get)
        .route(
            M::PUT,
            "/v1/agents/{name}/placement",
            Operator,
            placement_put,
        )
        .route(
            M::POST,
            "/v1/agents/{name}/messages",
            Operator,
            agents_message,
        )
        .route(M::GET, "/v1/agents/{name}/history", Viewer, agents_history)
        .route(
            M::GET,
            "/v1/agents/{name}/events",
            Viewer,
            super::openai::agent_events,
        )
        .route(
            M::POST,
            "/v1/chat/completions",
            Operator,
            super::openai::chat_completions,
        )
        .route(
            M::GET,
            "/v1/agents/{name}/ws",
            Viewer,
            super::openai::agent_ws,
        )
}

/// Tools: versions, usage, grants, tests and MCP servers.
fn tool_routes(api: Api) -> Api {
    use Method as M;
    use Role::{Admin, Operator, Viewer};
    api.route(M::GET, "/v1/tools", Viewer, tools_list)
        .route(M::GET, "/v1/tools/usage", Viewer, tools_usage)
        .route(M::GET, "/v1/tools/{name}/versions", Viewer, tools_versions)
        .route(M::GET, "/v1/tools/grants", Viewer, grants_list)
        .node_route(M::POST, "/v1/tools/grants", Admin, grants_create)
        .node_route(M::DELETE, "/v1/tools/grants/{id}", Admin, grants_delete)
        .node_route(M::POST, "/v1/tools/{name}/test", Operator, tools_test)
        .node_route(M::GET, "/v1/mcp-servers", Viewer, mcp_list)
        .node_route(M::POST, "/v1/mcp-servers", Admin, mcp_add)
        .node_route(M::DELETE, "/v1/mcp-servers/{name}", Admin, mcp_remove)
}

/// Memory namespaces and their items.
fn memory_routes(api: Api) -> Api {
    use Method as M;
    use Role::{Operator, Viewer};
    api.route(M::GET, "/v1/memory/namespaces", Viewer, ns_list)
        .route(M::POST, "/v1/memory/namespaces", Operator, ns_create)
        .route(
            M::POST,
            "/v1/memory/namespaces/{ns}/items",
            Operator,
            mem_upsert,
        )
        .route(
            M::POST,
            "/v1/memory/namespaces/{ns}/search",
            Viewer,
            mem_search,
        )
        .route(
            M::DELETE,
            "/v1/memory/namespaces/{ns}/items/{id}",
            Operator,
            mem_delete,
        )
        .route(
            M::POST,
            "/v1/memory/namespaces/{ns}/erase",
            Operator,
            mem_erase,
        )
        .route(
            M::GET,
            "/v1/memory/namespaces/{ns}/export",
            Viewer,
            mem_export,
        )
        .route(
            M::GET,
            "/v1/memory/namespaces/{ns}/shards",
            Viewer,
            mem_shards,
        )
        .route(
            M::GET,
            "/v1/memory/namespaces/{ns}/placement",
            Viewer,
            mem_placement_get,
        )
        .route(
            M::PUT,
            "/v1/memory/namespaces/{ns}/placement",
            Operator,
            mem_placement_put,
        )
}

/// Costs, API keys, the audit log, disk usage and retention.
fn admin_routes(api: Api) -> Api {
    use Method as M;
    use Role::{Admin, Viewer};
    api.route(M::GET, "/v1/costs", Viewer, costs)
        .route(M::GET, "/v1/keys", Admin, keys_list)
        .route(M::POST, "/v1/keys", Admin, keys_create)
        .route(M::POST, "/v1/keys/{id}/rotate", Admin, keys_rotate)
        .route(M::DELETE, "/v1/keys/{id}", Admin, keys_revoke)
        .route(M::GET, "/v1/audit", Admin, audit_query)
        .node_route(M::GET, "/v1/audit/verify", Admin, audit_verify)
        .route(M::GET, "/v1/usage/disk", Viewer, super::usage::get)
        .node_route(M::GET, "/v1/retention", Admin, super::retention::get)
        .node_route(
            M::POST,
            "/v1/retention/run",
            Admin,
            super::retention::run_now,
        )
}

/// Schedules, runs and sessions.
fn work_routes(api: Api) -> Api {
    use Method as M;
    use Role::{Operator, Viewer};
    api.route(M::GET, "/v1/schedules", Viewer, super::schedules::list)
        .route(M::POST, "/v1/schedules", Operator, super::schedules::create)
        .route(M::GET, "/v1/schedules/{id}", Viewer, super::schedules::get)
        .route(
            M::DELETE,
            "/v1/schedules/{id}",
            Operator,
            super::schedules::delete,
        )
        .route(
            M::POST,
            "/v1/schedules/{id}/pause",
            Operator,
            super::schedules::pause,
        )
        .route(
            M::POST,
            "/v1/schedules/{id}/resume",
            Operator,
            super::schedules::resume,
        )
        .route(M::POST, "/v1/runs", Operator, super::runs::start)
        .route(M::GET, "/v1/runs", Viewer, super::runs::list)
        .route(M::GET, "/v1/runs/{id}", Viewer, super::runs::get)
        .route(
            M::GET,
            "/v1/runs/{id}/events",
            Viewer,
            super::streams::run_events,
        )
        .route(M::GET, "/v1/runs/{id}/ws", Viewer, super::streams::run_ws)
        .route(
            M::POST,
            "/v1/runs/{id}/steps/{step}/decision",
            Operator,
            super::runs::decide,
        )
        .route(
            M::POST,
            "/v1/runs/{id}/cancel",
            Operator,
            super::runs::cancel,
        )
        .route(
            M::POST,
            "/v1/sessions",
            Operator,
            super::runs::create_session,
        )
        .route(M::GET, "/v1/sessions", Viewer, super::runs::list_sessions)
        .route(
            M::GET,
            "/v1/sessions/{id}",
            Viewer,
            super::runs::get_session,
        )
        .route(
            M::DELETE,
            "/v1/sessions/{id}",
            Operator,
            super::runs::delete_session,
        )
        .route(
            M::POST,
            "/v1/sessions/{id}/messages",
            Operator,
            super::runs::say,
        )
        .route(
            M::GET,
            "/v1/sessions/{id}/history",
            Viewer,
            super::runs::history,
        )
        .route(
            M::GET,
            "/v1/sessions/{id}/events",
            Viewer,
            super::streams::session_events,
        )
        .route(
            M::GET,
            "/v1/sessions/{id}/ws",
            Viewer,
            super::streams::session_ws,
        )
}

/// Webhooks and their deliveries.
fn webhook_routes(api: Api) -> Api {
    use Method as M;
    use Role::Admin;
    api.route(M::GET, "/v1/webhooks", Admin, hooks_list)
        .route(M::POST, "/v1/webhooks", Admin, hooks_create)
        .route(M::DELETE, "/v1/webhooks/{id}", Admin, hooks_delete)
        .route(M::GET, "/v1/webhooks/dead", Admin, hooks_dead)
        .route(M::GET, "/v1/webhooks/deliveries", Admin, hooks_deliveries)
        .route(
            M::POST,
            "/v1/webhooks/dead/{seq}/redeliver",
            Admin,
            hooks_redeliver,
        )
}

fn ok(v: Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

/// Marks a response whose `secret` field is a secret, shown once: an idempotency record
/// keeps the rest of it.
fn with_secret(r: ApiResult) -> ApiResult {
    r.map(|mut r| {
        r.extensions_mut()
            .insert(super::idempotency::Secrets(&["secret"]));
        r
    })
}

/// 409 when `tenant` already has `count` of `what`, its limit `max` (from `[tenants]`).
/// Two concurrent creations may pass together: a tenant may end one over.
pub(crate) fn within_limit(
    tenant: &str,
    what: &str,
    count: usize,
    max: usize,
) -> Result<(), Problem> {
    if count >= max {
        return Err(Problem::conflict(format!(
            "tenant {tenant} has {count} {what}, the most it may have ([tenants] {what}_max = {max}); remove one first"
        )));
    }
    Ok(())
}

fn created(v: Value) -> ApiResult {
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}
