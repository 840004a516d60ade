//! `/v1/runs` (plans carried out by agents, with approvals) and `/v1/sessions` (conversations
//! with an agent or a team, and their history). Runs and sessions carry their tenant; a
//! tenant sees only its own, and the agents it names are its own (`planner`, session agent).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use aios_actors::orchestration::{Decision, RunSpec, SessionTarget};

use super::api::scoped;
use super::http::{ApiJson, ApiQuery, Problem, Shared};
use super::keys::Principal;

type ApiResult = Result<axum::response::Response, Problem>;

/// A run as the API shows it (agent names without the tenant prefix).
fn run_view(p: &Principal, state: &aios_actors::orchestration::RunState) -> Value {
    let mut v = serde_json::to_value(state).unwrap_or(Value::Null);
    let prefix = format!("{}.", p.tenant);
    strip_prefix_in(&mut v, &prefix);
    v
}

/// Removes `prefix` from every string that starts with it (agent names in a run's steps).
pub(crate) fn strip_prefix_in(v: &mut Value, prefix: &str) {
    match v {
        Value::String(s) => {
            if let Some(rest) = s.strip_prefix(prefix) {
                *s = rest.to_string();
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| strip_prefix_in(x, prefix)),
        Value::Object(o) => o.values_mut().for_each(|x| strip_prefix_in(x, prefix)),
        _ => {}
    }
}

/// The body of `POST /v1/runs`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// What to do.
    pub task: String,
    /// The planner agent (else the best agent with capability `plan`).
    #[serde(default)]
    pub planner: Option<String>,
}

/// `POST /v1/runs`.
pub async fn start(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(body): ApiJson<RunBody>,
) -> ApiResult {
    s.quotas.check_llm(&p.tenant)?;
    let mut spec = RunSpec::new(body.task);
    spec.tenant = p.tenant.clone();
    if let Some(planner) = &body.planner {
        spec.planner = Some(scoped(&p, planner)?);
    }
    let id =
        s.rt.orchestrator()
            .start(spec)
            .await
            .map_err(Problem::from)?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "id": id }))).into_response())
}

/// Paging of lists.
#[derive(Debug, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// After this id.
    pub after: Option<String>,
    /// At most this many (default 50, at most 200).
    pub limit: Option<usize>,
}

/// `GET /v1/runs`: the tenant's runs, oldest id first.
pub async fn list(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult {
    let limit = page.limit.unwrap_or(50).clamp(1, 200);
    let mut after = page.after.clone();
    let mut out = Vec::new();
    // The cursor: the last run looked at, unless the store had no more.
    let mut next = None;
    // Scan at most 20 pages, so a tenant with few runs among many cannot make it unbounded.
    'scan: for _ in 0..20 {
        let batch =
            s.rt.orchestrator()
                .list(after.as_deref(), 200)
                .await
                .map_err(Problem::from)?;
        let Some(last) = batch.last().map(|r| r.id.clone()) else {
            next = None;
            break;
        };
        for r in &batch {
            next = Some(r.id.clone());
            if r.spec.tenant == p.tenant {
                out.push(run_view(&p, r));
                if out.len() == limit {
                    break 'scan;
                }
            }
        }
        after = Some(last);
    }
    Ok(axum::Json(json!({ "items": out, "next": next })).into_response())
}

async fn own_run(
    s: &Shared,
    p: &Principal,
    id: &str,
) -> Result<aios_actors::orchestration::RunState, Problem> {
    match s.rt.orchestrator().get(id).await.map_err(Problem::from)? {
        Some(r) if r.spec.tenant == p.tenant => Ok(r),
        _ => Err(Problem::not_found(format!("run {id} not found"))),
    }
}

/// `GET /v1/runs/{id}`.
pub async fn get(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    let r = own_run(&s, &p, &id).await?;
    Ok(axum::Json(run_view(&p, &r)).into_response())
}

/// The body of a decision.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Approve or deny.
    pub approve: bool,
    /// Why.
    #[serde(default)]
    pub note: String,
}

/// `POST /v1/runs/{id}/steps/{step}/decision`: approve or deny a step that waits.
pub async fn decide(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path((id, step)): Path<(String, String)>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> ApiResult {
    own_run(&s, &p, &id).await?;
    let decision = Decision {
        approve: body.approve,
        by: format!("key {}", p.key_id),
        note: body.note,
        at_ms: aios_actors::protocol::unix_ms(),
    };
    s.rt.orchestrator()
        .decide(&id, &step, decision)
        .await
        .map_err(Problem::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/runs/{id}/cancel`.
pub async fn cancel(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    own_run(&s, &p, &id).await?;
    let cancelled =
        s.rt.orchestrator()
            .cancel(&id)
            .await
            .map_err(Problem::from)?;
    Ok(axum::Json(json!({ "cancelled": cancelled })).into_response())
}

/// The body of `POST /v1/sessions`: one of `agent` or `team`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    /// Talk to this agent.
    #[serde(default)]
    pub agent: Option<String>,
    /// Talk to a team (each message becomes a run) with this planner, or the best one.
    #[serde(default)]
    pub team: Option<TeamBody>,
    /// A title.
    #[serde(default)]
    pub title: String,
}

/// A team session's settings.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamBody {
    /// The planner.
    #[serde(default)]
    pub planner: Option<String>,
}

fn session_view(p: &Principal, info: &aios_actors::orchestration::SessionInfo) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or(Value::Null);
    strip_prefix_in(&mut v, &format!("{}.", p.tenant));
    v
}

/// `POST /v1/sessions`.
pub async fn create_session(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(body): ApiJson<SessionBody>,
) -> ApiResult {
    let target = match (body.agent, body.team) {
        (Some(agent), None) => {
            let name = scoped(&p, &agent)?;
            if s.rt.agent_system().registry().get(&name).is_none() {
                return Err(Problem::not_found(format!("agent {agent:?} not found")));
            }
            SessionTarget::Agent { name }
        }
        (None, Some(team)) => SessionTarget::Team {
            planner: team.planner.map(|pl| scoped(&p, &pl)).transpose()?,
        },
        _ => return Err(Problem::bad_request("give exactly one of agent or team")),
    };
    if body.title.len() > 256 {
        return Err(Problem::bad_request("title: at most 256 bytes"));
    }
    let info =
        s.rt.orchestrator()
            .create_session(target, &p.tenant, &body.title)
            .await
            .map_err(Problem::from)?;
    Ok((StatusCode::CREATED, axum::Json(session_view(&p, &info))).into_response())
}

async fn own_session(
    s: &Shared,
    p: &Principal,
    id: &str,
) -> Result<aios_actors::orchestration::SessionInfo, Problem> {
    match s
        .rt
        .orchestrator()
        .session(id)
        .await
        .map_err(Problem::from)?
    {
        Some(info) if info.tenant == p.tenant => Ok(info),
        _ => Err(Problem::not_found(format!("session {id} not found"))),
    }
}

/// `GET /v1/sessions`: the tenant's sessions.
pub async fn list_sessions(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult {
    let limit = page.limit.unwrap_or(50).clamp(1, 200);
    let mut after = page.after.clone();
    let mut out = Vec::new();
    let mut next = None;
    'scan: for _ in 0..20 {
        let batch =
            s.rt.orchestrator()
                .sessions(after.as_deref(), 200)
                .await
                .map_err(Problem::from)?;
        let Some(last) = batch.last().map(|x| x.id.clone()) else {
            next = None;
            break;
        };
        for info in &batch {
            next = Some(info.id.clone());
            if info.tenant == p.tenant {
                out.push(session_view(&p, info));
                if out.len() == limit {
                    break 'scan;
                }
            }
        }
        after = Some(last);
    }
    Ok(axum::Json(json!({ "items": out, "next": next })).into_response())
}

/// `GET /v1/sessions/{id}`.
pub async fn get_session(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    let info = own_session(&s, &p, &id).await?;
    Ok(axum::Json(session_view(&p, &info)).into_response())
}

/// The body of a session message.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SayBody {
    /// The message.
    pub content: String,
}

/// `POST /v1/sessions/{id}/messages`: says something and returns the answer entry.
pub async fn say(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SayBody>,
) -> ApiResult {
    own_session(&s, &p, &id).await?;
    if body.content.trim().is_empty() || body.content.len() > 256 * 1024 {
        return Err(Problem::bad_request("content: 1 byte to 256 KiB"));
    }
    s.quotas.check_llm(&p.tenant)?;
    let entry =
        s.rt.orchestrator()
            .say(&id, &body.content, s.config.agents.task_timeout)
            .await
            .map_err(Problem::from)?;
    Ok(axum::Json(entry).into_response())
}

/// Where a history page starts.
#[derive(Debug, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// The first entry's sequence number.
    pub from: Option<u64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// `GET /v1/sessions/{id}/history`.
pub async fn history(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult {
    own_session(&s, &p, &id).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries =
        s.rt.orchestrator()
            .history(&id, q.from.unwrap_or(0), limit)
            .await
            .map_err(Problem::from)?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq + 1))
        .flatten();
    Ok(axum::Json(json!({ "items": entries, "next": next })).into_response())
}

/// `DELETE /v1/sessions/{id}`.
pub async fn delete_session(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    own_session(&s, &p, &id).await?;
    s.rt.orchestrator()
        .delete_session(&id)
        .await
        .map_err(Problem::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
