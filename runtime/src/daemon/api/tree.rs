//! The node itself: status, the caller's key, the supervision tree and its controls, recent errors.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;
use crate::daemon::http::{ApiJson, Problem, Shared};
use crate::daemon::keys::Principal;

/// `GET /v1/status`: the node at a glance. The node-wide counts go to the operator
/// tenant only; other tenants see their own agents on the agents routes.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct StatusView {
    /// The daemon's version.
    version: &'static str,
    /// Seconds since it started.
    uptime_s: u64,
    /// False once it is shutting down.
    running: bool,
    /// Actors in its tree (operator tenant only).
    #[serde(skip_serializing_if = "Option::is_none")]
    actors: Option<usize>,
    /// Agent instances active on this node, every tenant's (operator tenant only).
    #[serde(skip_serializing_if = "Option::is_none")]
    agents_active: Option<usize>,
}

pub(crate) async fn status(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> Result<axum::Json<StatusView>, Problem> {
    let node = operator_tenant(&p).is_ok();
    Ok(axum::Json(StatusView {
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: s.started.elapsed().as_secs(),
        running: s.rt.is_running(),
        actors: node.then(|| s.rt.registry().len()),
        agents_active: node.then(|| s.rt.agent_system().active_count()),
    }))
}

pub(crate) async fn tree(State(s): State<Shared>) -> ApiResult {
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
pub(crate) const TREE_DEPTH_MAX: usize = 6;
/// How long `/v1/tree` waits for a nested supervisor's children.
pub(crate) const TREE_NESTED_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// The most children `/v1/tree` lists in all (the rest of a level is cut, and the level says
/// `"truncated": true`).
pub(crate) const TREE_NODES_MAX: usize = 5000;

/// The children of `sup`, each nested supervisor with its own `children`, down to `depth`
/// levels and `budget` nodes in all.
pub(crate) fn subtree<'a>(
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
pub(crate) fn child_of<'a>(
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

pub(crate) async fn tree_kill(
    State(s): State<Shared>,
    ApiJson(body): ApiJson<RestartBody>,
) -> ApiResult {
    let (sup, id) = child_of(&s, &body.path)?;
    sup.kill_child(id).await.map_err(|e| match e {
        aios_supervisor::SupervisorError::NotRunning(_) => Problem::conflict(e.to_string()),
        other => Problem::not_found(other.to_string()),
    })?;
    ok(json!({"killed": body.path}))
}

/// `GET /v1/me`: the calling key.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct MeView {
    /// The key's id.
    key_id: String,
    /// Its role.
    role: Role,
    /// Its tenant.
    tenant: String,
    /// True for a key of the operator tenant (node-wide routes).
    operator_tenant: bool,
    /// The key's name.
    name: Option<String>,
    /// When it expires, Unix ms.
    expires_ms: Option<u64>,
    /// The daemon's version.
    version: &'static str,
}

pub(crate) async fn me(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> Result<axum::Json<MeView>, Problem> {
    let info = s.keys.get(&p.key_id);
    Ok(axum::Json(MeView {
        operator_tenant: p.tenant == crate::daemon::keys::OPERATOR_TENANT,
        key_id: p.key_id,
        role: p.role,
        tenant: p.tenant,
        name: info.as_ref().map(|k| k.name.clone()),
        expires_ms: info.as_ref().and_then(|k| k.expires_ms),
        version: env!("CARGO_PKG_VERSION"),
    }))
}

pub(crate) async fn tree_restart(
    State(s): State<Shared>,
    ApiJson(body): ApiJson<RestartBody>,
) -> ApiResult {
    let (sup, id) = child_of(&s, &body.path)?;
    let info = sup
        .restart_child(id)
        .await
        .map_err(|e| Problem::not_found(e.to_string()))?;
    ok(serde_json::to_value(info).map_err(Problem::internal)?)
}

pub(crate) async fn tree_stop(
    State(s): State<Shared>,
    ApiJson(body): ApiJson<RestartBody>,
) -> ApiResult {
    let (sup, id) = child_of(&s, &body.path)?;
    sup.terminate_child(id)
        .await
        .map_err(|e| Problem::not_found(e.to_string()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn recent_errors(State(s): State<Shared>) -> ApiResult {
    let errors: Vec<_> = s
        .errors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    ok(json!({ "errors": errors }))
}
