//! API keys: list, create, rotate, revoke.

use axum::Extension;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::json;

use super::*;
use crate::daemon::http::{ApiJson, ApiJsonOptional, Problem, Shared};
use crate::daemon::keys::Principal;

pub(crate) async fn keys_list(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> ApiResult {
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

pub(crate) async fn keys_create(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(body): ApiJson<NewKeyBody>,
) -> ApiResult {
    let tenant = body.tenant.unwrap_or_else(|| p.tenant.clone());
    let creating = s.creating.lock().await;
    within_limit(
        &tenant,
        "keys",
        s.keys.list(Some(&tenant)).len(),
        s.config.tenants.keys_max,
    )?;
    if tenant != p.tenant {
        operator_tenant(&p)?;
    }
    let new = s
        .keys
        .create(&body.name, body.role, &tenant, body.expires_ms)
        .await
        .map_err(Problem::from)?;
    drop(creating);
    s.webhooks
        .emit(
            &tenant,
            "key.created",
            json!({"key": new.info.id, "role": new.info.role}),
        )
        .await;
    with_secret(created(json!({ "key": new.info, "secret": new.secret })))
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    /// How long the old key keeps working (default 24 h).
    #[serde(default)]
    overlap_ms: Option<u64>,
}

pub(crate) async fn keys_rotate(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    ApiJsonOptional(body): ApiJsonOptional<RotateBody>,
) -> ApiResult {
    let body = body.unwrap_or_default();
    let overlap = body.overlap_ms.unwrap_or(24 * 3600 * 1000);
    let new = s
        .keys
        .rotate(&id, Some(&p.tenant), overlap)
        .await
        .map_err(Problem::from)?;
    s.webhooks
        .emit(
            &p.tenant,
            "key.rotated",
            json!({"key": id, "new_key": new.info.id}),
        )
        .await;
    with_secret(created(json!({ "key": new.info, "secret": new.secret })))
}

pub(crate) async fn keys_revoke(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    // The operator tenant's admins revoke any tenant's key (they make them); others their own.
    let scope = (p.tenant != crate::daemon::keys::OPERATOR_TENANT).then_some(p.tenant.as_str());
    let info = s.keys.revoke(&id, scope).await.map_err(Problem::from)?;
    s.webhooks
        .emit(&info.tenant, "key.revoked", json!({"key": info.id}))
        .await;
    ok(serde_json::to_value(info).map_err(Problem::internal)?)
}
