//! Memory namespaces of the caller's tenant: items, search, erasure, shards, placement, export.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use aios_actors::memory::{MemoryFilter, NamespaceSpec, NewMemory, SearchRequest};

use super::*;
use crate::daemon::http::{ApiJson, Problem, Shared};
use crate::daemon::keys::Principal;

pub(crate) async fn ns_list(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> ApiResult {
    let items: Vec<Value> =
        s.rt.memory_store()
            .namespaces_stored()
            .await
            .map_err(Problem::from)?
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

pub(crate) async fn ns_create(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(body): ApiJson<NamespaceBody>,
) -> ApiResult {
    let full = scoped(&p, &body.name)?;
    let prefix = format!("{}.", p.tenant);
    let _creating = s.creating.lock().await;
    let owned =
        s.rt.memory_store()
            .namespaces()
            .iter()
            .filter(|n| n.name.starts_with(&prefix))
            .count();
    within_limit(
        &p.tenant,
        "namespaces",
        owned,
        s.config.tenants.namespaces_max,
    )?;
    let info =
        s.rt.memory_store()
            .create_namespace(NamespaceSpec::new(full, body.shards.unwrap_or(1)))
            .await
            .map_err(Problem::from)?;
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

pub(crate) async fn mem_upsert(
    State(s): State<Shared>,
    full: ScopedNamespace,
    ApiJson(body): ApiJson<ItemsBody>,
) -> ApiResult {
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
            .map_err(Problem::from)?;
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

pub(crate) fn default_k() -> usize {
    5
}

pub(crate) async fn mem_search(
    State(s): State<Shared>,
    full: ScopedNamespace,
    ApiJson(body): ApiJson<SearchBody>,
) -> ApiResult {
    let result =
        s.rt.memory_store()
            .search(&full, SearchRequest::text(body.query, body.k))
            .await
            .map_err(Problem::from)?;
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

pub(crate) async fn mem_delete(
    State(s): State<Shared>,
    full: ScopedNamespace,
    Path((_, id)): Path<(String, u64)>,
) -> ApiResult {
    let n =
        s.rt.memory_store()
            .forget(&full, vec![id], MemoryFilter::default())
            .await
            .map_err(Problem::from)?;
    if n == 0 {
        return Err(Problem::not_found(format!(
            "no item {id} in {}",
            full.name()
        )));
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
pub(crate) async fn mem_erase(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    full: ScopedNamespace,
    ApiJson(body): ApiJson<EraseBody>,
) -> ApiResult {
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
            .map_err(Problem::from)?;
    ok(json!({ "erased": erased }))
}

/// Each shard of the namespace: items, index kind, the node that hosts it (in a cluster), or
/// why it cannot be asked.
pub(crate) async fn mem_shards(State(s): State<Shared>, full: ScopedNamespace) -> ApiResult {
    let shards =
        s.rt.memory_store()
            .shards(&full)
            .await
            .map_err(Problem::from)?;
    ok(json!({ "items": shards }))
}

/// Where the namespace's shards may run in a cluster.
pub(crate) async fn mem_placement_get(State(s): State<Shared>, full: ScopedNamespace) -> ApiResult {
    let placement =
        s.rt.memory_store()
            .placement(&full)
            .await
            .map_err(Problem::from)?;
    ok(json!(placement))
}

/// Sets where the namespace's shards may run (a node, or nodes with tags), applied now.
pub(crate) async fn mem_placement_put(
    State(s): State<Shared>,
    full: ScopedNamespace,
    ApiJson(placement): ApiJson<aios_actors::agent::Placement>,
) -> ApiResult {
    let placement =
        s.rt.memory_store()
            .set_placement(&full, placement)
            .await
            .map_err(Problem::from)?;
    ok(json!(placement))
}

/// The namespace as JSON lines (`id`, `text`, `vector`, metadata), for `aiosctl memory export`.
pub(crate) async fn mem_export(State(s): State<Shared>, full: ScopedNamespace) -> ApiResult {
    let mut out: Vec<u8> = Vec::new();
    s.rt.memory_store()
        .export_jsonl(&full, &mut out)
        .await
        .map_err(Problem::from)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        out,
    )
        .into_response())
}
