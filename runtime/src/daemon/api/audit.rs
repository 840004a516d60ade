//! The audit log: query and verification.

use axum::Extension;
use axum::extract::State;
use serde_json::json;

use super::*;
use crate::daemon::audit::AuditQuery;
use crate::daemon::http::{ApiQuery, Problem, Shared};
use crate::daemon::keys::{OPERATOR_TENANT, Principal};

pub(crate) async fn audit_query(
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
                .map(crate::daemon::audit::parse_cursor)
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
                "next_cursor": next.as_ref().map(crate::daemon::audit::format_cursor),
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

pub(crate) async fn audit_verify(State(s): State<Shared>) -> ApiResult {
    let report = s.audit.verify().await.map_err(Problem::internal)?;
    ok(serde_json::to_value(report).map_err(Problem::internal)?)
}
