//! Per-key interface preferences.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::*;
use crate::daemon::http::{ApiJson, Problem, Shared};
use crate::daemon::keys::Principal;

/// Preferences per key, as JSON text at most this long.
pub(crate) const PREFERENCES_LEN_MAX: usize = 16 * 1024;

pub(crate) fn prefs_key(p: &Principal) -> String {
    aios_core::keyspace::preferences_key(&p.key_id)
}

/// `GET /v1/preferences`: the calling key's preferences (an empty object at first).
pub(crate) async fn prefs_get(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> ApiResult {
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
pub(crate) async fn prefs_put(
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
