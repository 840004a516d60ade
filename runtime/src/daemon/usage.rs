//! Disk use per tenant (`GET /v1/usage/disk`): the bytes of every record in the node's
//! store (key and framed value), attributed to a tenant and a kind by the record's family in
//! the key space (`aios_core::keyspace`):
//! - agents' snapshots, transcripts, definitions and placements, and memory namespaces,
//!   placements and items, by the tenant prefix of their name (`<tenant>.<name>`); quotas by
//!   the tenant they name;
//! - sessions and their entries, and runs, by the tenant recorded in them;
//! - the rest (keys, audit log, webhooks, tools, costs, schedules) is the node's.
//!
//! A whole scan reads every value, so a report is kept for [`USAGE_CACHE`] and a scan stops
//! after [`USAGE_KEYS_MAX`] keys (the report then says `truncated`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aios_actors::orchestration::{RunState, SessionInfo};
use aios_actors::protocol::unix_ms;
use aios_actors::records::Records;
use aios_core::keyspace::{self, Scope};
use axum::Extension;
use axum::extract::State;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::json;

use super::http::{ApiQuery, Problem, Shared};
use super::keys::Principal;

/// How long a computed report is served before the store is scanned again.
pub const USAGE_CACHE: Duration = Duration::from_secs(30);
/// Keys one scan reads at most.
pub const USAGE_KEYS_MAX: u64 = 5_000_000;
const PAGE: usize = 1000;
/// The bucket of records that belong to no tenant.
pub const NODE_BUCKET: &str = "(node)";

/// What one tenant (or the node) stores.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Bytes of keys and values.
    pub bytes: u64,
    /// Records.
    pub records: u64,
    /// Bytes by kind: the `usage` column of the key space table (`agents`, `transcripts`,
    /// `definitions`, `memory`, `sessions`, `runs`, `schedules`, `tools`, `costs`, `quotas`,
    /// `webhooks`, `audit`, `keys`, `idempotency`, `preferences`), or `other` for records of
    /// no family.
    pub by_kind: BTreeMap<String, u64>,
}

/// Disk use of a node's store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    /// When it was computed, Unix ms.
    pub computed_ms: u64,
    /// By tenant; records of no tenant are under `(node)`.
    pub tenants: BTreeMap<String, Usage>,
    /// Keys read.
    pub scanned: u64,
    /// True when the scan stopped at [`USAGE_KEYS_MAX`].
    pub truncated: bool,
}

/// The cached report.
#[derive(Debug, Default)]
pub struct UsageCache(tokio::sync::Mutex<Option<(Instant, UsageReport)>>);

/// Scans the store.
///
/// # Errors
/// Store failures.
pub async fn compute(records: &Records) -> Result<UsageReport, String> {
    let store = records.snapshots().store();
    // Sessions first: their entries (`sesslog/`) sort before their metadata (`sessmeta/`).
    let mut sessions: HashMap<String, String> = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let keys = records
            .keys_after(keyspace::SESSION_META, after.as_deref(), PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = keys.last().cloned() else {
            break;
        };
        for k in keys {
            if let Ok(Some(info)) = records.get::<SessionInfo>(&k).await {
                sessions.insert(info.id, info.tenant);
            }
        }
        after = Some(last);
    }
    let mut report = UsageReport {
        computed_ms: unix_ms(),
        ..UsageReport::default()
    };
    let mut after: Option<String> = None;
    'scan: loop {
        let keys = store
            .keys_after(keyspace::ALL, after.as_deref(), PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = keys.last().cloned() else {
            break;
        };
        for k in keys {
            if report.scanned >= USAGE_KEYS_MAX {
                report.truncated = true;
                break 'scan;
            }
            report.scanned += 1;
            let Some(value) = store.get(&k).await.map_err(|e| e.to_string())? else {
                continue;
            };
            let (tenant, kind) = classify(records, &sessions, &k).await;
            let u = report.tenants.entry(tenant).or_default();
            let bytes = (k.len() + value.len()) as u64;
            u.bytes += bytes;
            u.records += 1;
            *u.by_kind.entry(kind.to_string()).or_default() += bytes;
        }
        after = Some(last);
    }
    Ok(report)
}

/// The tenant and kind of a record, from its family in the key space
/// ([`aios_core::keyspace::PREFIXES`]); records of no family (embedders' own actors) are the
/// node's, of kind `other`.
async fn classify(
    records: &Records,
    sessions: &HashMap<String, String>,
    key: &str,
) -> (String, &'static str) {
    let Some(family) = keyspace::family_of(key) else {
        return (NODE_BUCKET.to_string(), "other");
    };
    let tenant = match family.scope {
        Scope::TenantInName | Scope::TenantSegment | Scope::TenantAfterNode => {
            keyspace::tenant_of(key).map(str::to_string)
        }
        Scope::TenantInValue
            if family.prefix == keyspace::SESSION_META
                || family.prefix == keyspace::SESSION_LOG =>
        {
            let id = key[family.prefix.len()..]
                .split('/')
                .next()
                .unwrap_or_default();
            sessions.get(id).cloned()
        }
        Scope::TenantInValue if family.prefix == keyspace::RUN => {
            match records.get::<RunState>(key).await {
                Ok(Some(run)) if !run.spec.tenant.is_empty() => Some(run.spec.tenant),
                _ => None,
            }
        }
        _ => None,
    };
    (
        tenant.unwrap_or_else(|| NODE_BUCKET.to_string()),
        family.usage,
    )
}

/// Whether to scan again now.
#[derive(Debug, serde::Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Scan now instead of serving a report younger than 30 s (operator tenant admins).
    pub refresh: Option<bool>,
}

/// `GET /v1/usage/disk`: a tenant's disk use; the operator tenant sees every tenant's and
/// the node's.
pub async fn get(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<axum::response::Response, Problem> {
    let operator = super::api::operator_tenant(&p).is_ok();
    let refresh = q.refresh.unwrap_or(false) && operator;
    let report = {
        let mut cached = s.usage.0.lock().await;
        match &*cached {
            Some((at, r)) if !refresh && at.elapsed() < USAGE_CACHE => r.clone(),
            _ => {
                let records = Records::new(s.rt.snapshots().clone());
                let r = compute(&records).await.map_err(|e| {
                    Problem::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        format!("scanning the store: {e}"),
                    )
                })?;
                *cached = Some((Instant::now(), r.clone()));
                r
            }
        }
    };
    if operator {
        return Ok(axum::Json(report).into_response());
    }
    let mine = report.tenants.get(&p.tenant).cloned().unwrap_or_default();
    Ok(axum::Json(json!({
        "computed_ms": report.computed_ms,
        "tenant": p.tenant,
        "usage": mine,
        "truncated": report.truncated,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_counted_by_their_family_and_tenant() {
        let store = aios_supervisor::snapshot::SledStore::temporary().expect("store");
        let records = Records::new(aios_supervisor::snapshot::Snapshots::new(
            std::sync::Arc::new(store),
        ));
        let none = HashMap::new();
        for (key, tenant, kind) in [
            ("agentlog/acme.w/main/000000000001", "acme", "transcripts"),
            ("agent/acme.w/main", "acme", "agents"),
            ("placement/acme.w", "acme", "definitions"),
            ("memplace/acme.kb", "acme", "memory"),
            ("agent/local/main", NODE_BUCKET, "agents"),
            ("quota/acme", "acme", "quotas"),
            ("quota@n1/acme", "acme", "quotas"),
            ("apikey/00112233aabb", NODE_BUCKET, "keys"),
            ("demo/visits", NODE_BUCKET, "other"),
        ] {
            assert_eq!(
                classify(&records, &none, key).await,
                (tenant.to_string(), kind),
                "{key}"
            );
        }
    }
}
