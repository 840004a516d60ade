//! `/v1/schedules`: a tenant's cron schedules and one-off delayed runs. Each firing starts a
//! normal run of the schedule's task for the tenant (listed in `/v1/runs`, charged to it).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use aios_actors::orchestration::schedule::{Schedule, ScheduleSpec, When};

use super::api::scoped;
use super::http::{ApiJson, Problem, Shared};
use super::keys::Principal;
use super::runs::strip_prefix_in;

type ApiResult = Result<axum::response::Response, Problem>;

/// A schedule as the API shows it (the planner without the tenant prefix).
fn view(p: &Principal, s: &Schedule) -> Value {
    let when = match &s.when {
        When::Cron { expr, timezone } => json!({"cron": expr, "timezone": timezone}),
        When::Once { at_ms } => json!({"at_ms": at_ms}),
    };
    let mut v = json!({
        "id": s.id,
        "name": s.name,
        "when": when,
        "task": s.task,
        "planner": s.planner,
        "on_missed": s.on_missed,
        "paused": s.paused,
        "created_ms": s.created_ms,
        "next_due_ms": s.next_due_ms,
        "last_due_ms": s.last_due_ms,
        "last_run": s.last_run,
        "fired": s.fired,
        "missed": s.missed,
        "last_error": s.last_error,
    });
    strip_prefix_in(&mut v["planner"], &format!("{}.", p.tenant));
    v
}

/// The tenant's schedule `id`, or 404.
async fn own(s: &Shared, p: &Principal, id: &str) -> Result<Schedule, Problem> {
    s.rt.schedules()
        .get(id)
        .await
        .map_err(Problem::from)?
        .filter(|sc| sc.tenant == p.tenant)
        .ok_or_else(|| Problem::not_found(format!("schedule {id:?} not found")))
}

/// `POST /v1/schedules`.
pub async fn create(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(mut spec): ApiJson<ScheduleSpec>,
) -> ApiResult {
    if let Some(planner) = &spec.planner {
        let full = scoped(&p, planner)?;
        if s.rt.agent_system().registry().get(&full).is_none() {
            return Err(Problem::bad_request(format!(
                "planner: no agent named {planner:?}"
            )));
        }
        spec.planner = Some(full);
    }
    let _creating = s.creating.lock().await;
    let owned =
        s.rt.schedules()
            .list(Some(&p.tenant))
            .await
            .map_err(Problem::from)?
            .len();
    super::api::within_limit(
        &p.tenant,
        "schedules",
        owned,
        s.config.tenants.schedules_max,
    )?;
    let schedule =
        s.rt.schedules()
            .create(&p.tenant, &spec)
            .await
            .map_err(Problem::from)?;
    Ok((StatusCode::CREATED, axum::Json(view(&p, &schedule))).into_response())
}

/// `GET /v1/schedules`: the tenant's schedules, and whether this node fires them (on a
/// shared store one node of the cluster does).
pub async fn list(State(s): State<Shared>, Extension(p): Extension<Principal>) -> ApiResult {
    let schedules = s.rt.schedules();
    let items: Vec<Value> = schedules
        .list(Some(&p.tenant))
        .await
        .map_err(Problem::from)?
        .iter()
        .map(|sc| view(&p, sc))
        .collect();
    Ok(axum::Json(json!({ "items": items, "fires_here": schedules.fires_here() })).into_response())
}

/// `GET /v1/schedules/{id}`.
pub async fn get(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    let schedule = own(&s, &p, &id).await?;
    Ok(axum::Json(view(&p, &schedule)).into_response())
}

/// `DELETE /v1/schedules/{id}`: no more firings; runs already started go on.
pub async fn delete(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    own(&s, &p, &id).await?;
    s.rt.schedules().delete(&id).await.map_err(Problem::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_paused(s: &Shared, p: &Principal, id: &str, paused: bool) -> ApiResult {
    own(s, p, id).await?;
    let schedule =
        s.rt.schedules()
            .set_paused(id, paused)
            .await
            .map_err(Problem::from)?
            .ok_or_else(|| Problem::not_found(format!("schedule {id:?} not found")))?;
    Ok(axum::Json(view(p, &schedule)).into_response())
}

/// `POST /v1/schedules/{id}/pause`: fires nothing until resumed.
pub async fn pause(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    set_paused(&s, &p, &id, true).await
}

/// `POST /v1/schedules/{id}/resume`: fires again from its next due time after now.
pub async fn resume(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    set_paused(&s, &p, &id, false).await
}
