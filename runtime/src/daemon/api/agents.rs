//! Agents of the caller's tenant: definitions, placement, messages and history.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use aios_actors::agent::{AgentDef, AgentError, Task};
use aios_actors::protocol::AgentId;

use super::*;
use crate::daemon::http::{ApiJson, ApiQuery, Problem, Shared};
use crate::daemon::keys::Principal;

/// Where new activations of an agent go in a cluster.
pub(crate) async fn placement_get(State(s): State<Shared>, full: ScopedAgent) -> ApiResult {
    let name = full.name();
    let system = s.rt.agent_system();
    if system.registry().get(&full).is_none() {
        return Err(Problem::not_found(format!("agent {name:?} not found")));
    }
    let placement = system.placement(&full).await.map_err(Problem::from)?;
    ok(json!(placement))
}

/// Sets where new activations of an agent go (`{}`: where asked).
pub(crate) async fn placement_put(
    State(s): State<Shared>,
    full: ScopedAgent,
    ApiJson(placement): ApiJson<aios_actors::agent::Placement>,
) -> ApiResult {
    let name = full.name();
    let system = s.rt.agent_system();
    system
        .set_placement(&full, &placement)
        .await
        .map_err(|e| match e {
            AgentError::NotFound(_) => Problem::not_found(format!("agent {name:?} not found")),
            e => Problem::from(e),
        })?;
    ok(json!(placement))
}

/// An agent's memory namespace is one of its tenant's, named as the memory API names it: the
/// tenant's prefix is added here (and removed in [`def_view`]), so no agent reads another
/// tenant's memory.
pub(crate) fn scope_memory(p: &Principal, def: &mut AgentDef) -> Result<(), Problem> {
    if let Some(ns) = &def.memory_namespace {
        def.memory_namespace = Some(
            scoped(p, ns)
                .map_err(|e| Problem::bad_request(format!("memory_namespace: {}", e.detail)))?,
        );
    }
    Ok(())
}

pub(crate) fn def_view(p: &Principal, def: &AgentDef, version: Option<u32>) -> Value {
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

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    /// Continue after this name.
    after: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

pub(crate) async fn agents_list(
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

pub(crate) async fn agents_create(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(mut def): ApiJson<AgentDef>,
) -> ApiResult {
    def.name = scoped(&p, &def.name)?;
    scope_memory(&p, &mut def)?;
    let prefix = format!("{}.", p.tenant);
    let registry = s.rt.agent_system().registry();
    let creating = s.creating.lock().await;
    let owned = registry
        .list()
        .iter()
        .filter(|d| d.name.starts_with(&prefix))
        .count();
    if registry.get(&def.name).is_none() {
        within_limit(&p.tenant, "agents", owned, s.config.tenants.agents_max)?;
    }
    let version =
        s.rt.agent_system()
            .registry()
            .create(def.clone())
            .await
            .map_err(Problem::from)?;
    drop(creating);
    s.webhooks
        .emit(
            &p.tenant,
            "agent.created",
            json!({"agent": unscoped(&p, &def.name), "version": version}),
        )
        .await;
    created(def_view(&p, &def, Some(version)))
}

pub(crate) async fn agents_get(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    full: ScopedAgent,
) -> ApiResult {
    let name = full.name();
    let (version, def) =
        s.rt.agent_system()
            .registry()
            .current(&full)
            .ok_or_else(|| Problem::not_found(format!("agent {name:?} not found")))?;
    ok(def_view(&p, &def, Some(version)))
}

pub(crate) async fn agents_update(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    full: ScopedAgent,
    ApiJson(mut def): ApiJson<AgentDef>,
) -> ApiResult {
    let name = full.name();
    if def.name != name {
        return Err(Problem::bad_request(format!(
            "the body names agent {:?}, the path {name:?}",
            def.name
        )));
    }
    def.name = full.full().to_owned();
    scope_memory(&p, &mut def)?;
    let version =
        s.rt.agent_system()
            .registry()
            .update(def.clone())
            .await
            .map_err(Problem::from)?;
    ok(def_view(&p, &def, Some(version)))
}

pub(crate) async fn agents_delete(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    full: ScopedAgent,
) -> ApiResult {
    let name = full.name();
    s.rt.agent_system()
        .delete_agent(&full)
        .await
        .map_err(Problem::from)?;
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

pub(crate) async fn agents_message(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    full: ScopedAgent,
    ApiJson(body): ApiJson<MessageBody>,
) -> ApiResult {
    let name = full.name();
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
    s.quotas.check_llm(&p.tenant)?;
    let key = body.session.clone().unwrap_or_else(|| "main".into());
    let mut task = Task::new(body.content);
    task.tenant = p.tenant.clone();
    task.session = body.session;
    let out =
        s.rt.agent_system()
            .ask(&AgentId::new(full, key), task)
            .await
            .map_err(Problem::from)?;
    ok(json!({
        "text": out.text,
        "steps": out.steps,
        "tool_calls": out.tool_calls,
        "usage": out.usage,
        "cost_usd": out.cost_nanos as f64 / 1e9,
    }))
}

/// Where an agent's transcript page starts.
#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TranscriptQuery {
    /// The instance: the session's (as given to `messages`), or `main` when absent.
    session: Option<String>,
    /// The first entry's sequence number.
    from: Option<u64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// `GET /v1/agents/{name}/history`: every task of one agent instance, input and outcome,
/// oldest first. What the model is sent is compacted; this is not.
pub(crate) async fn agents_history(
    State(s): State<Shared>,
    full: ScopedAgent,
    ApiQuery(q): ApiQuery<TranscriptQuery>,
) -> ApiResult {
    let name = full.name();
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
            .map_err(Problem::from)?;
    let next = (items.len() == limit)
        .then(|| items.last().map(|e| e.seq + 1))
        .flatten();
    ok(json!({ "items": items, "next": next }))
}
