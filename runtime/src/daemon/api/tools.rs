//! Tools and MCP servers.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use aios_actors::tools::{McpServerConfig, ToolRequirement};

use super::*;
use crate::daemon::http::{ApiJson, Problem, Shared};
use crate::daemon::keys::Principal;

pub(crate) async fn tools_list(State(s): State<Shared>) -> ApiResult {
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

pub(crate) async fn tools_versions(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let registry = s.rt.tool_service().registry();
    let versions = registry.versions(&name);
    if versions.is_empty() {
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
