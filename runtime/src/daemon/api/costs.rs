//! Costs per tenant, agent and model.

use axum::Extension;
use axum::extract::State;
use serde_json::{Value, json};

use super::*;
use crate::daemon::http::Shared;
use crate::daemon::keys::Principal;

pub(crate) async fn costs(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> ApiResult {
    use aios_actors::cost::CostScope;
    let ledger = s.rt.costs();
    let tenant = ledger.totals(&CostScope::Tenant(p.tenant.clone()));
    let agents: Vec<Value> = ledger
        .list(&CostScope::Agent(String::new()))
        .into_iter()
        .filter_map(|(scope, t)| match scope {
            CostScope::Agent(a) => {
                unscoped(&p, &a).map(|n| json!({"agent": n, "totals": t, "cost_usd": t.cost_usd()}))
            }
            _ => None,
        })
        .collect();
    // The operator tenant sees every tenant's totals (the first 1000).
    let tenants: Vec<Value> = if p.tenant == crate::daemon::keys::OPERATOR_TENANT {
        ledger
            .list(&CostScope::Tenant(String::new()))
            .into_iter()
            .take(1000)
            .filter_map(|(scope, t)| match scope {
                CostScope::Tenant(name) => {
                    Some(json!({"tenant": name, "totals": t, "cost_usd": t.cost_usd()}))
                }
                _ => None,
            })
            .collect()
    } else {
        Vec::new()
    };
    // The tenant's LLM budget: used, reserved by running calls, and the limits (0 = none).
    let llm_quota = s.rt.llm().quota().map(|q| {
        let (limits, usage) = (q.limits(), q.usage(&p.tenant));
        json!({
            "tokens_today": usage.tokens_today,
            "tokens_per_day": limits.tokens_per_day,
            "cost_usd_this_month": usage.cost_nanos_this_month as f64 / 1e9,
            "cost_usd_per_month": limits.cost_nanos_per_month as f64 / 1e9,
            "reserved_tokens": usage.reserved.tokens,
            "reserved_cost_usd": usage.reserved.cost_nanos as f64 / 1e9,
        })
    });
    ok(json!({
        "tenant": p.tenant,
        "llm_quota": llm_quota,
        "tenants": tenants,
        "totals": tenant,
        "cost_usd": tenant.cost_usd(),
        "agents": agents,
        "requests_today": s.quotas.used(&p.tenant),
    }))
}
