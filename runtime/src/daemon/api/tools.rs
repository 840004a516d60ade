//! Tools and MCP servers.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use aios_actors::tools::{Grant, McpServerConfig, ToolRequirement};

use super::*;
use crate::daemon::http::{ApiJson, Problem, Shared};
use crate::daemon::keys::Principal;

/// Whether the caller's tenant may use tool `name` (the operator tenant: every tool).
fn visible(s: &Shared, p: &Principal, name: &str) -> bool {
    operator_tenant(p).is_ok() || s.rt.tool_service().tenant_may_use(&p.tenant, name)
}

/// `GET /v1/tools`: the tools the caller's tenant may use.
pub(crate) async fn tools_list(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> ApiResult {
    let tools: Vec<Value> =
        s.rt.tool_service()
            .registry()
            .list()
            .iter()
            .filter(|m| visible(&s, &p, &m.name))
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

pub(crate) async fn tools_usage(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> ApiResult {
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

pub(crate) async fn tools_versions(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult {
    let registry = s.rt.tool_service().registry();
    let versions = registry.versions(&name);
    if versions.is_empty() || !visible(&s, &p, &name) {
        return Err(Problem::not_found(format!("no tool {name:?}")));
    }
    let current = registry.current(&name).map(|m| m.version.to_string());
    let versions: Vec<String> = versions.iter().map(ToString::to_string).collect();
    ok(json!({ "name": name, "versions": versions, "current": current }))
}

pub(crate) async fn tools_test(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let req = ToolRequirement::parse(&name).map_err(Problem::bad_request)?;
    let outcomes =
        s.rt.tool_service()
            .run_examples(&req)
            .await
            .map_err(|e| Problem::not_found(e.to_string()))?;
    let passed = outcomes.iter().all(|o| o.passed);
    ok(json!({ "passed": passed, "examples": outcomes }))
}

pub(crate) async fn mcp_list(State(s): State<Shared>) -> ApiResult {
    ok(json!({ "items": s.rt.tool_service().mcp_servers() }))
}

pub(crate) async fn mcp_add(
    State(s): State<Shared>,
    ApiJson(config): ApiJson<McpServerConfig>,
) -> ApiResult {
    let tools =
        s.rt.tool_service()
            .add_mcp_server(config)
            .await
            .map_err(Problem::from)?;
    created(json!({ "tools": tools }))
}

pub(crate) async fn mcp_remove(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    s.rt.tool_service()
        .remove_mcp_server(&name)
        .await
        .map_err(Problem::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A grant as the API shows it: its id, where it comes from, and agent names as the
/// caller's tenant names them.
fn grant_view(g: &Grant, source: &str, p: &Principal) -> Value {
    let agent = g.agent.as_deref().map(|a| {
        if operator_tenant(p).is_ok() {
            a
        } else {
            unscoped(p, a).unwrap_or(a)
        }
    });
    json!({
        "id": g.id(),
        "source": source,
        "tenant": g.tenant,
        "agent": agent,
        "role": g.role,
        "tools": g.tools,
    })
}

/// `GET /v1/tools/grants`: the grants that reach the caller's tenant (the operator tenant:
/// every grant); `source` is `api` (persisted) or `config` (the node's, from its
/// configuration; not removable here).
pub(crate) async fn grants_list(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> ApiResult {
    let service = s.rt.tool_service();
    let operator = operator_tenant(&p).is_ok();
    let mine = |g: &&Grant| operator || g.reaches_tenant(&p.tenant);
    let mut items: Vec<Value> = service
        .persisted_grants()
        .iter()
        .filter(mine)
        .map(|g| grant_view(g, "api", &p))
        .collect();
    items.extend(
        service
            .node_grants()
            .iter()
            .filter(mine)
            .map(|g| grant_view(g, "config", &p)),
    );
    ok(json!({ "items": items }))
}

/// `POST /v1/tools/grants` body: who (a tenant, one of its agents, a role; absent: any)
/// may call which tools (`*`: every tool).
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantBody {
    /// The tenant (absent: every tenant).
    #[serde(default)]
    tenant: Option<String>,
    /// One agent of that tenant, by its name in the tenant (needs `tenant`).
    #[serde(default)]
    agent: Option<String>,
    /// Only agents with this role.
    #[serde(default)]
    role: Option<String>,
    /// Tool names, or `*`.
    tools: Vec<String>,
}

/// Grants at most this many tools at once.
pub(crate) const GRANT_TOOLS_MAX: usize = 64;

/// `POST /v1/tools/grants` (operator tenant): adds a persisted grant.
pub(crate) async fn grants_create(
    State(s): State<Shared>,
    ApiJson(body): ApiJson<GrantBody>,
) -> ApiResult {
    if let Some(t) = &body.tenant {
        aios_core::name::validate_tenant(t).map_err(Problem::bad_request)?;
    }
    let agent = match (&body.agent, &body.tenant) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(Problem::bad_request(
                "agent: a grant for one agent names its tenant too",
            ));
        }
        (Some(a), Some(t)) => {
            aios_core::name::validate_name(a).map_err(Problem::bad_request)?;
            Some(format!("{t}.{a}"))
        }
    };
    if let Some(r) = &body.role {
        aios_core::name::validate_name(r)
            .map_err(|e| Problem::bad_request(format!("role: {e}")))?;
    }
    if body.tools.is_empty() || body.tools.len() > GRANT_TOOLS_MAX {
        return Err(Problem::bad_request(format!(
            "tools: 1..={GRANT_TOOLS_MAX} tool names, or \"*\""
        )));
    }
    for t in &body.tools {
        if t != "*" {
            aios_core::name::validate_tool_name(t)
                .map_err(|e| Problem::bad_request(format!("tools: {e}")))?;
        }
    }
    let grant = Grant {
        tenant: body.tenant,
        agent,
        role: body.role,
        tools: body.tools,
    };
    s.rt.tool_service()
        .grant(grant.clone())
        .await
        .map_err(|e| Problem::conflict(e.to_string()))?;
    created(
        json!({ "id": grant.id(), "tenant": grant.tenant, "agent": grant.agent, "role": grant.role, "tools": grant.tools }),
    )
}

/// `DELETE /v1/tools/grants/{id}` (operator tenant): removes a persisted grant.
pub(crate) async fn grants_delete(State(s): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let service = s.rt.tool_service();
    let Some(grant) = service
        .persisted_grants()
        .into_iter()
        .find(|g| g.id() == id)
    else {
        return Err(Problem::not_found(format!(
            "no grant {id:?} made through the API (grants from the configuration stay)"
        )));
    };
    service
        .revoke(&grant)
        .await
        .map_err(|e| Problem::internal(e.to_string()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
