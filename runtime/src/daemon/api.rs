//! The `/v1` routes. Every route goes through [`Api::route`] with the least role it needs;
//! [`routes`] is the whole table. Agents and memory namespaces are tenant-scoped by name: the
//! API name `writer` of tenant `acme` is the node's agent `acme.writer`, so one tenant can
//! neither see nor touch another's. Node-wide resources (the actor tree, tool installation,
//! MCP servers, recent errors, audit verification) belong to the operator tenant
//! ([`OPERATOR_TENANT`]).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use aios_actors::agent::{AgentDef, AgentError, RegistryError, Task};
use aios_actors::memory::{MemoryError, MemoryFilter, NamespaceSpec, NewMemory, SearchRequest};
use aios_actors::protocol::AgentId;
use aios_actors::tools::{McpServerConfig, ToolRegistryError, ToolRequirement};

use super::audit::{self, AuditQuery};
use super::http::{Api, ApiJson, ApiQuery, Problem, Shared};
use super::keys::{KeyError, OPERATOR_TENANT, Principal, Role};
use super::webhooks::WebhookError;

type ApiResult = Result<Response, Problem>;

/// Every `/v1` route.
pub fn routes() -> Api {
    use Method as M;
    use Role::{Admin, Operator, Viewer};
    Api::new()
        .route(M::GET, "/v1/status", Viewer, status)
        .route(M::GET, "/v1/cluster/nodes", Viewer, cluster_nodes)
        .route(M::POST, "/v1/cluster/drain", Operator, cluster_drain)
        .route(M::POST, "/v1/cluster/undrain", Operator, cluster_undrain)
        .route(M::GET, "/v1/openapi.json", Viewer, super::openapi::openapi)
        .route(M::GET, "/v1/tree", Viewer, tree)
        .route(M::POST, "/v1/tree/restart", Operator, tree_restart)
        .route(M::POST, "/v1/tree/stop", Operator, tree_stop)
        .route(M::POST, "/v1/tree/kill", Operator, tree_kill)
        .route(M::GET, "/v1/me", Viewer, me)
        .route(
            M::GET,
            "/v1/metrics/history",
            Viewer,
            super::sampler::history,
        )
        .route(
            M::GET,
            "/v1/tree/events",
            Operator,
            super::streams::tree_events,
        )
        .route(M::GET, "/v1/tree/ws", Operator, super::streams::tree_ws)
        .route(M::GET, "/v1/preferences", Viewer, prefs_get)
        .route(M::PUT, "/v1/preferences", Viewer, prefs_put)
        .route(M::GET, "/v1/errors", Operator, recent_errors)
        .route(M::GET, "/v1/agents", Viewer, agents_list)
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
        .route(M::GET, "/v1/tools", Viewer, tools_list)
        .route(M::GET, "/v1/tools/usage", Viewer, tools_usage)
        .route(M::GET, "/v1/tools/{name}/versions", Viewer, tools_versions)
        .route(M::POST, "/v1/tools/{name}/test", Operator, tools_test)
        .route(M::GET, "/v1/mcp-servers", Viewer, mcp_list)
        .route(M::POST, "/v1/mcp-servers", Admin, mcp_add)
        .route(M::DELETE, "/v1/mcp-servers/{name}", Admin, mcp_remove)
        .route(M::GET, "/v1/memory/namespaces", Viewer, ns_list)
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
        .route(M::GET, "/v1/costs", Viewer, costs)
        .route(M::GET, "/v1/keys", Admin, keys_list)
        .route(M::POST, "/v1/keys", Admin, keys_create)
        .route(M::POST, "/v1/keys/{id}/rotate", Admin, keys_rotate)
        .route(M::DELETE, "/v1/keys/{id}", Admin, keys_revoke)
        .route(M::GET, "/v1/audit", Admin, audit_query)
        .route(M::GET, "/v1/audit/verify", Admin, audit_verify)
        .route(M::GET, "/v1/usage/disk", Viewer, super::usage::get)
        .route(M::GET, "/v1/retention", Admin, super::retention::get)
        .route(
            M::POST,
            "/v1/retention/run",
            Admin,
            super::retention::run_now,
        )
        .route(M::GET, "/v1/schedules", Viewer, super::schedules::list)
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
        .route(M::GET, "/v1/webhooks", Admin, hooks_list)
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

fn created(v: Value) -> ApiResult {
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

/// Node-wide resources are for the operator tenant only.
pub(crate) fn operator_tenant(p: &Principal) -> Result<(), Problem> {
    if p.tenant == OPERATOR_TENANT {
        Ok(())
    } else {
        Err(Problem::forbidden(format!(
            "this is node-wide; only keys of the {OPERATOR_TENANT:?} tenant may use it"
        )))
    }
}

/// The node's name for a tenant's `name`.
pub(crate) fn scoped(p: &Principal, name: &str) -> Result<String, Problem> {
    aios_actors::agent::validate_name(name).map_err(Problem::bad_request)?;
    let full = format!("{}.{name}", p.tenant);
    if full.len() > 64 {
        return Err(Problem::bad_request(format!(
            "name {name:?} is too long: with the tenant it must fit in 64 characters"
        )));
    }
    Ok(full)
}

/// The tenant's name for a node name, if it is the tenant's.
pub(crate) fn unscoped<'a>(p: &Principal, full: &'a str) -> Option<&'a str> {
    full.strip_prefix(p.tenant.as_str())?.strip_prefix('.')
}

fn registry_problem(e: RegistryError) -> Problem {
    match e {
        RegistryError::Invalid(m) => Problem::bad_request(m),
        RegistryError::Exists(_) => Problem::conflict(e.to_string()),
        RegistryError::NotFound(_) => Problem::not_found(e.to_string()),
        RegistryError::Full => Problem::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
        other => Problem::internal(other),
    }
}

fn memory_problem(e: MemoryError) -> Problem {
    match e {
        MemoryError::Invalid(_) | MemoryError::ModelMismatch(_) => {
            Problem::bad_request(e.to_string())
        }
        MemoryError::NamespaceNotFound(_) => Problem::not_found(e.to_string()),
        MemoryError::NamespaceExists(_) => Problem::conflict(e.to_string()),
        MemoryError::QuotaExceeded(_) => {
            Problem::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
        }
        MemoryError::Unavailable(_) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        other => Problem::internal(other),
    }
}

fn tools_problem(e: ToolRegistryError) -> Problem {
    match e {
        ToolRegistryError::NotFound(_) => Problem::not_found(e.to_string()),
        ToolRegistryError::Exists(_) | ToolRegistryError::InUse { .. } => {
            Problem::conflict(e.to_string())
        }
        // The server named in the request cannot be started or reached: the request cannot be
        // carried out as given (found by the API fuzzer, which got a 502 here).
        ToolRegistryError::Unavailable(_) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        ToolRegistryError::Store(_) => Problem::internal(e),
        other => Problem::bad_request(other.to_string()),
    }
}

fn key_problem(e: KeyError) -> Problem {
    match e {
        KeyError::Invalid(m) => Problem::bad_request(m),
        KeyError::NotFound(_) => Problem::not_found(e.to_string()),
        KeyError::Full => Problem::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
        KeyError::Store(_) => Problem::internal(e),
    }
}

fn agent_problem(e: AgentError) -> Problem {
    let status = match e.kind().as_str() {
        "not_found" => StatusCode::NOT_FOUND,
        "invalid" => StatusCode::BAD_REQUEST,
        "limit_exceeded" => StatusCode::UNPROCESSABLE_ENTITY,
        "deadline_exceeded" => StatusCode::GATEWAY_TIMEOUT,
        "unavailable" | "rate_limited" => StatusCode::SERVICE_UNAVAILABLE,
        "busy" | "interrupted" => StatusCode::CONFLICT,
        "queue_full" => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_GATEWAY,
    };
    Problem::new(status, e.to_string())
}

/// This node and the cluster's other nodes as this node sees them.
async fn cluster_nodes(State(s): State<Shared>) -> ApiResult {
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
const DRAIN_WITHIN_DEFAULT_S: u64 = 30;
const DRAIN_WITHIN_MAX_S: u64 = 600;

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
async fn cluster_drain(State(s): State<Shared>, ApiJson(body): ApiJson<DrainBody>) -> ApiResult {
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
async fn cluster_undrain(State(s): State<Shared>) -> ApiResult {
    let system = s.rt.agent_system();
    system.undrain();
    s.rt.memory_store().undrain();
    ok(json!({ "node": s.membership.name(), "draining": system.is_draining() }))
}

/// Where new activations of an agent go in a cluster.
async fn placement_get(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult {
    let full = scoped(&p, &name)?;
    let system = s.rt.agent_system();
    if system.registry().get(&full).is_none() {
        return Err(Problem::not_found(format!("agent {name:?} not found")));
    }
    let placement = system.placement(&full).await.map_err(agent_problem)?;
    ok(json!(placement))
}

/// Sets where new activations of an agent go (`{}`: where asked).
async fn placement_put(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    ApiJson(placement): ApiJson<aios_actors::agent::Placement>,
) -> ApiResult {
    let full = scoped(&p, &name)?;
    let system = s.rt.agent_system();
    system
        .set_placement(&full, &placement)
        .await
        .map_err(|e| match e {
            AgentError::NotFound(_) => Problem::not_found(format!("agent {name:?} not found")),
            e => agent_problem(e),
        })?;
    ok(json!(placement))
}

async fn status(State(s): State<Shared>) -> ApiResult {
    ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": s.started.elapsed().as_secs(),
        "running": s.rt.is_running(),
        "actors": s.rt.registry().len(),
        "agents_active": s.rt.agent_system().active_count(),
    }))
}

async fn tree(State(s): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult {
    operator_tenant(&p)?;
    let mut groups = serde_json::Map::new();
    let mut budget = TREE_NODES_MAX;
    for (name, sup) in [
        ("services", s.rt.services()),
        ("memory", s.rt.memory()),
        ("tools", s.rt.tools()),
        ("agents", s.rt.agents()),
        ("runs", s.rt.runs()),
    ] {
        let children = subtree(&s, sup, TREE_DEPTH_MAX, &mut budget).await?;
        groups.insert(name.into(), Value::Array(children));
    }
    ok(Value::Object(groups))
}

/// How deep `/v1/tree` follows nested supervisors below the five top groups.
const TREE_DEPTH_MAX: usize = 6;
/// How long `/v1/tree` waits for a nested supervisor's children.
const TREE_NESTED_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// The most children `/v1/tree` lists in all (the rest of a level is cut, and the level says
/// `"truncated": true`).
const TREE_NODES_MAX: usize = 5000;

/// The children of `sup`, each nested supervisor with its own `children`, down to `depth`
/// levels and `budget` nodes in all.
fn subtree<'a>(
    s: &'a Shared,
    sup: &'a aios_supervisor::SupervisorRef,
    depth: usize,
    budget: &'a mut usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Value>, Problem>> + Send + 'a>> {
    Box::pin(async move {
        let children = sup.which_children().await.map_err(Problem::internal)?;
        let mut out = Vec::with_capacity(children.len().min(*budget));
        for child in children {
            if *budget == 0 {
                out.push(json!({"truncated": true}));
                break;
            }
            *budget -= 1;
            let nested = child.kind == aios_supervisor::ChildKind::Supervisor && depth > 0;
            let path = child.path.clone();
            let mut v = serde_json::to_value(child).map_err(Problem::internal)?;
            if nested && let Some(inner) = s.rt.registry().lookup_supervisor(&path) {
                // A nested supervisor that is restarting or busy (a long shutdown) cannot
                // answer soon: listed without its children rather than holding the request.
                match tokio::time::timeout(TREE_NESTED_WAIT, subtree(s, &inner, depth - 1, budget))
                    .await
                {
                    Ok(Ok(grand)) => v["children"] = Value::Array(grand),
                    _ => v["children_unavailable"] = Value::Bool(true),
                }
            }
            out.push(v);
        }
        Ok(out)
    })
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestartBody {
    /// `agents/echo`: the supervisor's path, a slash, the child's id.
    path: String,
}

/// The supervisor and child id a `<supervisor>/<child>` path names.
fn child_of<'a>(
    s: &Shared,
    path: &'a str,
) -> Result<(aios_supervisor::SupervisorRef, &'a str), Problem> {
    let (parent, id) = path
        .rsplit_once('/')
        .ok_or_else(|| Problem::bad_request("path must be <supervisor>/<child>"))?;
    let sup =
        s.rt.registry()
            .lookup_supervisor(parent)
            .ok_or_else(|| Problem::not_found(format!("no supervisor {parent:?}")))?;
    Ok((sup, id))
}

async fn tree_kill(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(body): ApiJson<RestartBody>,
) -> ApiResult {
    operator_tenant(&p)?;
    let (sup, id) = child_of(&s, &body.path)?;
    sup.kill_child(id).await.map_err(|e| match e {
        aios_supervisor::SupervisorError::NotRunning(_) => Problem::conflict(e.to_string()),
        other => Problem::not_found(other.to_string()),
    })?;
    ok(json!({"killed": body.path}))
}

async fn me(State(s): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult {
    let info = s.keys.get(&p.key_id);
    ok(json!({
        "key_id": p.key_id,
        "role": p.role,
        "tenant": p.tenant,
        "operator_tenant": p.tenant == super::keys::OPERATOR_TENANT,
        "name": info.as_ref().map(|k| k.name.clone()),
        "expires_ms": info.as_ref().and_then(|k| k.expires_ms),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn tree_restart(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(body): ApiJson<RestartBody>,
) -> ApiResult {
    operator_tenant(&p)?;
    let (sup, id) = child_of(&s, &body.path)?;
    let info = sup
        .restart_child(id)
        .await
        .map_err(|e| Problem::not_found(e.to_string()))?;
    ok(serde_json::to_value(info).map_err(Problem::internal)?)
}

async fn tree_stop(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(body): ApiJson<RestartBody>,
) -> ApiResult {
    operator_tenant(&p)?;
    let (sup, id) = child_of(&s, &body.path)?;
    sup.terminate_child(id)
        .await
        .map_err(|e| Problem::not_found(e.to_string()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn recent_errors(State(s): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult {
    operator_tenant(&p)?;
    let errors: Vec<_> = s
        .errors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    ok(json!({ "errors": errors }))
}

/// An agent's memory namespace is one of its tenant's, named as the memory API names it: the
/// tenant's prefix is added here (and removed in [`def_view`]), so no agent reads another
/// tenant's memory.
fn scope_memory(p: &Principal, def: &mut AgentDef) -> Result<(), Problem> {
    if let Some(ns) = &def.memory_namespace {
        def.memory_namespace = Some(
            scoped(p, ns)
                .map_err(|e| Problem::bad_request(format!("memory_namespace: {}", e.detail)))?,
        );
    }
    Ok(())
}

fn def_view(p: &Principal, def: &AgentDef, version: Option<u32>) -> Value {
    let mut v = serde_json::to_value(def).unwrap_or(Value::Null);
    if let Some(name) = unscoped(p, &def.name) {
        v["name"] = json!(name);
    }
    if let Some(ns) = def
        .memory_namespace
        .as_deref()
        .and_then(|ns| unscoped(p, ns))
    {
        v["memory_namespace"] = json!(ns);
    }
    if let Some(version) = version {
        v["version"] = json!(version);
    }
    v
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Page {
    /// Continue after this name.
    after: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

async fn agents_list(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult {
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let mut defs: Vec<_> =
        s.rt.agent_system()
            .registry()
            .list()
            .into_iter()
            .filter(|d| {
                unscoped(&p, &d.name)
                    .is_some_and(|n| page.after.as_ref().is_none_or(|a| n > a.as_str()))
            })
            .collect();
    defs.sort_by(|a, b| a.name.cmp(&b.name));
    let more = defs.len() > limit;
    defs.truncate(limit);
    let next = more
        .then(|| {
            defs.last()
                .and_then(|d| unscoped(&p, &d.name))
                .map(str::to_string)
        })
        .flatten();
    let items: Vec<Value> = defs.iter().map(|d| def_view(&p, d, None)).collect();
    ok(json!({ "items": items, "next": next }))
}

async fn agents_create(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(mut def): ApiJson<AgentDef>,
) -> ApiResult {
    def.name = scoped(&p, &def.name)?;
    scope_memory(&p, &mut def)?;
    let version =
        s.rt.agent_system()
            .registry()
            .create(def.clone())
            .await
            .map_err(registry_problem)?;
    s.webhooks
        .emit(
            &p.tenant,
            "agent.created",
            json!({"agent": unscoped(&p, &def.name), "version": version}),
        )
        .await;
    created(def_view(&p, &def, Some(version)))
}

async fn agents_get(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult {
    let full = scoped(&p, &name)?;
    let (version, def) =
        s.rt.agent_system()
            .registry()
            .current(&full)
            .ok_or_else(|| Problem::not_found(format!("agent {name:?} not found")))?;
    ok(def_view(&p, &def, Some(version)))
}

async fn agents_update(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    ApiJson(mut def): ApiJson<AgentDef>,
) -> ApiResult {
    if def.name != name {
        return Err(Problem::bad_request(format!(
            "the body names agent {:?}, the path {name:?}",
            def.name
        )));
    }
    def.name = scoped(&p, &name)?;
    scope_memory(&p, &mut def)?;
    let version =
        s.rt.agent_system()
            .registry()
            .update(def.clone())
            .await
            .map_err(registry_problem)?;
    ok(def_view(&p, &def, Some(version)))
}

async fn agents_delete(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult {
    let full = scoped(&p, &name)?;
    s.rt.agent_system()
        .delete_agent(&full)
        .await
        .map_err(registry_problem)?;
    s.webhooks
        .emit(&p.tenant, "agent.deleted", json!({"agent": name}))
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageBody {
    /// The message.
    content: String,
    /// A session: the agent keeps a separate conversation per session.
    #[serde(default)]
    session: Option<String>,
}

async fn agents_message(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<MessageBody>,
) -> ApiResult {
    let full = scoped(&p, &name)?;
    if body.content.trim().is_empty() {
        return Err(Problem::bad_request("content: must not be empty"));
    }
    if body.content.len() > 256 * 1024 {
        return Err(Problem::bad_request("content: at most 256 KiB"));
    }
    if let Some(session) = &body.session {
        aios_actors::agent::validate_name(session)
            .map_err(|e| Problem::bad_request(format!("session: {e}")))?;
    }
    if s.rt.agent_system().registry().get(&full).is_none() {
        return Err(Problem::not_found(format!("agent {name:?} not found")));
    }
    s.quotas.check_llm(&p.tenant).await?;
    let key = body.session.clone().unwrap_or_else(|| "main".into());
    let mut task = Task::new(body.content);
    task.tenant = p.tenant.clone();
    task.session = body.session;
    let out =
        s.rt.agent_system()
            .ask(&AgentId::new(full, key), task)
            .await
            .map_err(agent_problem)?;
    ok(json!({
        "text": out.text,
        "steps": out.steps,
        "tool_calls": out.tool_calls,
        "usage": out.usage,
        "cost_usd": out.cost_nanos as f64 / 1e9,
    }))
}

/// Where an agent's transcript page starts.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TranscriptQuery {
    /// The instance: the session's (as given to `messages`), or `main` when absent.
    session: Option<String>,
    /// The first entry's sequence number.
    from: Option<u64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// `GET /v1/agents/{name}/history`: every task of one agent instance, input and outcome,
/// oldest first. What the model is sent is compacted; this is not.
async fn agents_history(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<TranscriptQuery>,
) -> ApiResult {
    let full = scoped(&p, &name)?;
    if let Some(session) = &q.session {
        aios_actors::agent::validate_name(session)
            .map_err(|e| Problem::bad_request(format!("session: {e}")))?;
    }
    if s.rt.agent_system().registry().get(&full).is_none() {
        return Err(Problem::not_found(format!("agent {name:?} not found")));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let id = AgentId::new(full, q.session.unwrap_or_else(|| "main".into()));
    let items =
        s.rt.agent_system()
            .transcript(&id, q.from.unwrap_or(0), limit)
            .await
            .map_err(agent_problem)?;
    let next = (items.len() == limit)
        .then(|| items.last().map(|e| e.seq + 1))
        .flatten();
    ok(json!({ "items": items, "next": next }))
}

async fn tools_list(State(s): State<Shared>) -> ApiResult {
    let tools: Vec<Value> =
        s.rt.tool_service()
            .registry()
            .list()
            .iter()
            .map(|m| {
                json!({
                    "name": m.name,
                    "version": m.version.to_string(),
                    "description": m.description,
                    "capabilities": m.capabilities,
                    "pure": m.pure,
                    "input_schema": m.input_schema,
                })
            })
            .collect();
    ok(json!({ "items": tools }))
}

async fn tools_usage(State(s): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult {
    let items: Vec<Value> =
        s.rt.tool_service()
            .usage()
            .into_iter()
            .filter_map(|((tool, agent), u)| {
                unscoped(&p, &agent).map(|a| json!({"tool": tool, "agent": a, "usage": u}))
            })
            .collect();
    ok(json!({ "items": items }))
}

async fn tools_versions(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let registry = s.rt.tool_service().registry();
    let versions = registry.versions(&name);
    if versions.is_empty() {
        return Err(Problem::not_found(format!("no tool {name:?}")));
    }
    let current = registry.current(&name).map(|m| m.version.to_string());
    let versions: Vec<String> = versions.iter().map(ToString::to_string).collect();
    ok(json!({ "name": name, "versions": versions, "current": current }))
}

async fn tools_test(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let req = ToolRequirement::parse(&name).map_err(Problem::bad_request)?;
    let outcomes =
        s.rt.tool_service()
            .run_examples(&req)
            .await
            .map_err(|e| Problem::not_found(e.to_string()))?;
    let passed = outcomes.iter().all(|o| o.passed);
    ok(json!({ "passed": passed, "examples": outcomes }))
}

async fn mcp_list(State(s): State<Shared>) -> ApiResult {
    ok(json!({ "items": s.rt.tool_service().mcp_servers() }))
}

async fn mcp_add(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(config): ApiJson<McpServerConfig>,
) -> ApiResult {
    operator_tenant(&p)?;
    let tools =
        s.rt.tool_service()
            .add_mcp_server(config)
            .await
            .map_err(tools_problem)?;
    created(json!({ "tools": tools }))
}

async fn mcp_remove(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult {
    operator_tenant(&p)?;
    s.rt.tool_service()
        .remove_mcp_server(&name)
        .await
        .map_err(tools_problem)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn ns_list(State(s): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult {
    let items: Vec<Value> =
        s.rt.memory_store()
            .namespaces_stored()
            .await
            .map_err(memory_problem)?
            .into_iter()
            .filter_map(|ns| {
                let name = unscoped(&p, &ns.name)?.to_string();
                let mut v = serde_json::to_value(&ns).ok()?;
                v["name"] = json!(name);
                Some(v)
            })
            .collect();
    ok(json!({ "items": items }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamespaceBody {
    name: String,
    #[serde(default)]
    shards: Option<u32>,
}

async fn ns_create(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(body): ApiJson<NamespaceBody>,
) -> ApiResult {
    let full = scoped(&p, &body.name)?;
    let info =
        s.rt.memory_store()
            .create_namespace(NamespaceSpec::new(full, body.shards.unwrap_or(1)))
            .await
            .map_err(memory_problem)?;
    let mut v = serde_json::to_value(&info).map_err(Problem::internal)?;
    v["name"] = json!(body.name);
    created(v)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ItemsBody {
    items: Vec<ItemBody>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ItemBody {
    text: String,
    #[serde(default)]
    importance: Option<f32>,
    #[serde(default)]
    tags: Vec<String>,
}

async fn mem_upsert(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(ns): Path<String>,
    ApiJson(body): ApiJson<ItemsBody>,
) -> ApiResult {
    let full = scoped(&p, &ns)?;
    let items = body
        .items
        .into_iter()
        .map(|i| {
            let mut m = NewMemory::text(i.text);
            if let Some(imp) = i.importance {
                m.meta.importance = imp;
            }
            m.meta.tags = i.tags;
            m
        })
        .collect();
    let ids =
        s.rt.memory_store()
            .remember(&full, items)
            .await
            .map_err(memory_problem)?;
    // Ids as strings: they use all 64 bits, more than a JSON number keeps in JavaScript.
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    created(json!({ "ids": ids }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchBody {
    query: String,
    #[serde(default = "default_k")]
    k: usize,
}

fn default_k() -> usize {
    5
}

async fn mem_search(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(ns): Path<String>,
    ApiJson(body): ApiJson<SearchBody>,
) -> ApiResult {
    let full = scoped(&p, &ns)?;
    let result =
        s.rt.memory_store()
            .search(&full, SearchRequest::text(body.query, body.k))
            .await
            .map_err(memory_problem)?;
    let mut v = serde_json::to_value(result).map_err(Problem::internal)?;
    // Ids as strings (see `mem_upsert`); the export keeps them as numbers, as imports read them.
    if let Some(hits) = v.get_mut("hits").and_then(Value::as_array_mut) {
        for hit in hits {
            if let Some(id) = hit.get("id").and_then(Value::as_u64) {
                hit["id"] = Value::String(id.to_string());
            }
        }
    }
    ok(v)
}

async fn mem_delete(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path((ns, id)): Path<(String, u64)>,
) -> ApiResult {
    let full = scoped(&p, &ns)?;
    let n =
        s.rt.memory_store()
            .forget(&full, vec![id], MemoryFilter::default())
            .await
            .map_err(memory_problem)?;
    if n == 0 {
        return Err(Problem::not_found(format!("no item {id} in {ns}")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EraseBody {
    /// Which memories: by agent, session, user, tags, time range (at least one).
    filter: MemoryFilterBody,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct MemoryFilterBody {
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    since_ms: Option<u64>,
    #[serde(default)]
    until_ms: Option<u64>,
}

/// Erases every memory of the namespace that matches the filter (for example all of one
/// user's, for a deletion request); each deletion is durable.
async fn mem_erase(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(ns): Path<String>,
    ApiJson(body): ApiJson<EraseBody>,
) -> ApiResult {
    let full = scoped(&p, &ns)?;
    let f = body.filter;
    let filter = MemoryFilter {
        agent: f.agent.map(|a| scoped(&p, &a)).transpose()?,
        session: f.session,
        user: f.user,
        tags: f.tags,
        since_ms: f.since_ms,
        until_ms: f.until_ms,
    };
    if filter.is_empty() {
        return Err(Problem::bad_request(
            "filter: name at least one of agent, session, user, tags, since_ms, until_ms",
        ));
    }
    let erased =
        s.rt.memory_store()
            .forget(&full, Vec::new(), filter)
            .await
            .map_err(memory_problem)?;
    ok(json!({ "erased": erased }))
}

/// Each shard of the namespace: items, index kind, the node that hosts it (in a cluster), or
/// why it cannot be asked.
async fn mem_shards(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(ns): Path<String>,
) -> ApiResult {
    let full = scoped(&p, &ns)?;
    let shards =
        s.rt.memory_store()
            .shards(&full)
            .await
            .map_err(memory_problem)?;
    ok(json!({ "items": shards }))
}

/// Where the namespace's shards may run in a cluster.
async fn mem_placement_get(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(ns): Path<String>,
) -> ApiResult {
    let full = scoped(&p, &ns)?;
    let placement =
        s.rt.memory_store()
            .placement(&full)
            .await
            .map_err(memory_problem)?;
    ok(json!(placement))
}

/// Sets where the namespace's shards may run (a node, or nodes with tags), applied now.
async fn mem_placement_put(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(ns): Path<String>,
    ApiJson(placement): ApiJson<aios_actors::agent::Placement>,
) -> ApiResult {
    let full = scoped(&p, &ns)?;
    let placement =
        s.rt.memory_store()
            .set_placement(&full, placement)
            .await
            .map_err(memory_problem)?;
    ok(json!(placement))
}

/// The namespace as JSON lines (`id`, `text`, `vector`, metadata), for `aiosctl memory export`.
async fn mem_export(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(ns): Path<String>,
) -> ApiResult {
    let full = scoped(&p, &ns)?;
    let mut out: Vec<u8> = Vec::new();
    s.rt.memory_store()
        .export_jsonl(&full, &mut out)
        .await
        .map_err(memory_problem)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        out,
    )
        .into_response())
}

async fn costs(State(s): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult {
    use aios_actors::cost::CostScope;
    let ledger = s.rt.costs();
    let tenant = ledger.totals(&CostScope::Tenant(p.tenant.clone()));
    let agents: Vec<Value> = ledger
        .list(&CostScope::Agent(String::new()))
        .into_iter()
        .filter_map(|(scope, t)| match scope {
            CostScope::Agent(a) => {
                unscoped(&p, &a).map(|n| json!({"agent": n, "totals": t, "cost_usd": t.cost_usd()}))
            }
            _ => None,
        })
        .collect();
    // The operator tenant sees every tenant's totals (the first 1000).
    let tenants: Vec<Value> = if p.tenant == super::keys::OPERATOR_TENANT {
        ledger
            .list(&CostScope::Tenant(String::new()))
            .into_iter()
            .take(1000)
            .filter_map(|(scope, t)| match scope {
                CostScope::Tenant(name) => {
                    Some(json!({"tenant": name, "totals": t, "cost_usd": t.cost_usd()}))
                }
                _ => None,
            })
            .collect()
    } else {
        Vec::new()
    };
    ok(json!({
        "tenant": p.tenant,
        "tenants": tenants,
        "totals": tenant,
        "cost_usd": tenant.cost_usd(),
        "agents": agents,
        "requests_today": s.quotas.used(&p.tenant),
    }))
}

async fn keys_list(State(s): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult {
    ok(json!({ "items": s.keys.list(Some(&p.tenant)) }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewKeyBody {
    #[serde(default)]
    name: String,
    role: Role,
    /// Another tenant (operator-tenant admins only).
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    expires_ms: Option<u64>,
}

async fn keys_create(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(body): ApiJson<NewKeyBody>,
) -> ApiResult {
    let tenant = body.tenant.unwrap_or_else(|| p.tenant.clone());
    if tenant != p.tenant {
        operator_tenant(&p)?;
    }
    let new = s
        .keys
        .create(&body.name, body.role, &tenant, body.expires_ms)
        .await
        .map_err(key_problem)?;
    s.webhooks
        .emit(
            &tenant,
            "key.created",
            json!({"key": new.info.id, "role": new.info.role}),
        )
        .await;
    created(json!({ "key": new.info, "secret": new.secret }))
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    /// How long the old key keeps working (default 24 h).
    #[serde(default)]
    overlap_ms: Option<u64>,
}

async fn keys_rotate(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    // The body is optional.
    let body: RotateBody = if body.is_empty() {
        RotateBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Problem::bad_request(format!("body: {e}")))?
    };
    let overlap = body.overlap_ms.unwrap_or(24 * 3600 * 1000);
    let new = s
        .keys
        .rotate(&id, Some(&p.tenant), overlap)
        .await
        .map_err(key_problem)?;
    s.webhooks
        .emit(
            &p.tenant,
            "key.rotated",
            json!({"key": id, "new_key": new.info.id}),
        )
        .await;
    created(json!({ "key": new.info, "secret": new.secret }))
}

async fn keys_revoke(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    let info = s
        .keys
        .revoke(&id, Some(&p.tenant))
        .await
        .map_err(key_problem)?;
    s.webhooks
        .emit(&p.tenant, "key.revoked", json!({"key": info.id}))
        .await;
    ok(serde_json::to_value(info).map_err(Problem::internal)?)
}

async fn audit_query(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiQuery(mut q): ApiQuery<AuditQuery>,
) -> ApiResult {
    if p.tenant != OPERATOR_TENANT {
        q.tenant = Some(p.tenant.clone());
    }
    let this_node = s.config.store.node.as_str();
    match q.node.as_deref() {
        // Every node's chain, merged by time; each entry names its node.
        Some("*") => {
            if q.after.is_some() {
                return Err(Problem::bad_request(
                    "after: the merged view (node=*) pages with cursor",
                ));
            }
            let cursor = q
                .cursor
                .as_deref()
                .map(audit::parse_cursor)
                .transpose()
                .map_err(Problem::bad_request)?
                .unwrap_or_default();
            let (items, next) = s
                .audit
                .query_merged(&q, &cursor, this_node)
                .await
                .map_err(Problem::internal)?;
            ok(json!({
                "items": items,
                "next_cursor": next.as_ref().map(audit::format_cursor),
            }))
        }
        node => {
            if q.cursor.is_some() {
                return Err(Problem::bad_request(
                    "cursor: only the merged view (node=*) pages with cursor; use after",
                ));
            }
            let other;
            let log = match node {
                Some(n) if n != this_node => {
                    if !s.audit.has_node(n).await.map_err(Problem::internal)? {
                        return Err(Problem::not_found(format!(
                            "no audit chain of node {n:?} in this store"
                        )));
                    }
                    other = s.audit.of_node(n);
                    &other
                }
                _ => &s.audit,
            };
            let (items, next) = log.query(&q).await.map_err(Problem::internal)?;
            ok(json!({ "items": items, "next": next }))
        }
    }
}

async fn audit_verify(State(s): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult {
    operator_tenant(&p)?;
    let report = s.audit.verify().await.map_err(Problem::internal)?;
    ok(serde_json::to_value(report).map_err(Problem::internal)?)
}

fn hook_problem(e: WebhookError) -> Problem {
    match e {
        WebhookError::Invalid(m) => Problem::bad_request(m),
        WebhookError::NotFound(_) => Problem::not_found(e.to_string()),
        WebhookError::Store(_) => Problem::internal(e),
    }
}

async fn hooks_list(State(s): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult {
    ok(json!({ "items": s.webhooks.list(&p.tenant) }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookBody {
    url: String,
    events: Vec<String>,
}

async fn hooks_create(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(body): ApiJson<HookBody>,
) -> ApiResult {
    let sub = s
        .webhooks
        .subscribe(&p.tenant, &body.url, body.events)
        .await
        .map_err(hook_problem)?;
    // The signing secret is shown here only.
    created(serde_json::to_value(sub).map_err(Problem::internal)?)
}

async fn hooks_delete(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    s.webhooks
        .unsubscribe(&p.tenant, &id)
        .await
        .map_err(hook_problem)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn hooks_dead(State(s): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult {
    let items = s
        .webhooks
        .dead(&p.tenant, 1000)
        .await
        .map_err(hook_problem)?;
    ok(json!({ "items": items }))
}

async fn hooks_deliveries(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> ApiResult {
    let (items, queued) = s.webhooks.attempts(&p.tenant, 500).await;
    // The queue is the node's: only the operator tenant sees its length.
    let queued = (p.tenant == super::keys::OPERATOR_TENANT).then_some(queued);
    ok(json!({ "items": items, "queued": queued }))
}

async fn hooks_redeliver(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(seq): Path<u64>,
) -> ApiResult {
    s.webhooks
        .redeliver(&p.tenant, seq)
        .await
        .map_err(hook_problem)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Preferences per key, as JSON text at most this long.
pub const PREFERENCES_LEN_MAX: usize = 16 * 1024;

fn prefs_key(p: &Principal) -> String {
    aios_core::keyspace::preferences_key(&p.key_id)
}

/// `GET /v1/preferences`: the calling key's preferences (an empty object at first).
async fn prefs_get(State(s): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult {
    let records = aios_actors::records::Records::new(s.rt.snapshots().clone());
    let stored: Option<String> = records
        .get(&prefs_key(&p))
        .await
        .map_err(Problem::internal)?;
    let v = match stored {
        Some(text) => serde_json::from_str(&text).map_err(Problem::internal)?,
        None => json!({}),
    };
    ok(v)
}

/// `PUT /v1/preferences`: replaces the calling key's preferences (a JSON object, theme,
/// default agent, page size, … as the interface likes; at most [`PREFERENCES_LEN_MAX`]).
async fn prefs_put(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(v): ApiJson<Value>,
) -> ApiResult {
    if !v.is_object() {
        return Err(Problem::bad_request("preferences must be a JSON object"));
    }
    let text = v.to_string();
    if text.len() > PREFERENCES_LEN_MAX {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("preferences: at most {PREFERENCES_LEN_MAX} bytes"),
        ));
    }
    let records = aios_actors::records::Records::new(s.rt.snapshots().clone());
    records
        .put(
            &prefs_key(&p),
            &text,
            aios_supervisor::snapshot::Durability::Durable,
        )
        .await
        .map_err(Problem::internal)?;
    ok(v)
}
