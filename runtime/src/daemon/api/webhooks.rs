//! Webhook subscriptions and their deliveries.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::*;
use crate::daemon::http::{ApiJson, Problem, Shared};
use crate::daemon::keys::Principal;

pub(crate) async fn hooks_list(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> ApiResult {
    ok(json!({ "items": s.webhooks.list(&p.tenant) }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookBody {
    url: String,
    events: Vec<String>,
}

pub(crate) async fn hooks_create(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(body): ApiJson<HookBody>,
) -> ApiResult {
    let _creating = s.creating.lock().await;
    within_limit(
        &p.tenant,
        "webhooks",
        s.webhooks.list(&p.tenant).len(),
        s.config.tenants.webhooks_max,
    )?;
    let sub = s
        .webhooks
        .subscribe(&p.tenant, &body.url, body.events)
        .await
        .map_err(Problem::from)?;
    // The signing secret is shown here only.
    with_secret(created(
        serde_json::to_value(sub).map_err(Problem::internal)?,
    ))
}

pub(crate) async fn hooks_delete(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    s.webhooks
        .unsubscribe(&p.tenant, &id)
        .await
        .map_err(Problem::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn hooks_dead(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> ApiResult {
    let items = s
        .webhooks
        .dead(&p.tenant, 1000)
        .await
        .map_err(Problem::from)?;
    ok(json!({ "items": items }))
}

pub(crate) async fn hooks_deliveries(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> ApiResult {
    let (items, queued) = s.webhooks.attempts(&p.tenant, 500).await;
    // The queue is the node's: only the operator tenant sees its length.
    let queued = (p.tenant == crate::daemon::keys::OPERATOR_TENANT).then_some(queued);
    ok(json!({ "items": items, "queued": queued }))
}

pub(crate) async fn hooks_redeliver(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(seq): Path<u64>,
) -> ApiResult {
    s.webhooks
        .redeliver(&p.tenant, seq)
        .await
        .map_err(Problem::from)?;
    Ok(StatusCode::ACCEPTED.into_response())
}
