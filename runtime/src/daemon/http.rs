//! The HTTP layer: shared state, errors as RFC 9457 problems, the middleware stack
//! (request ids, tracing, metrics, panics caught, body limit, authentication, rate limits,
//! audit of mutating requests) and the route table every route is registered through, so
//! that tests can enumerate every route and check its authorization.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Serialize;

use super::audit::{AuditEvent, AuditLog};
use super::config::DaemonConfig;
use super::keys::{AuthError, KeyStore, Principal, Role};
use crate::Runtime;

/// Recent errors (panics, 5xx) kept for the errors endpoint.
pub const RECENT_ERRORS_MAX: usize = 200;

/// An error as `application/problem+json` (RFC 9457).
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// A URI reference naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened here.
    pub detail: String,
    /// Seconds to wait, for 429 and 503.
    #[serde(skip)]
    pub retry_after_s: Option<u64>,
}

impl Problem {
    /// A problem with `status` and `detail`; the title is the status' reason.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let title = status.canonical_reason().unwrap_or("Error").to_string();
        Self {
            kind: format!(
                "https://aios.dev/problems/{}",
                title.to_lowercase().replace(' ', "-")
            ),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            retry_after_s: None,
        }
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    /// 500, logged.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut r = (status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

/// A JSON body whose rejections (bad syntax, wrong types, wrong content type, too large)
/// are problems.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(Problem::new(rejection.status(), rejection.body_text())),
        }
    }
}

/// An optional JSON body: `None` when the request has none, otherwise as [`ApiJson`].
#[derive(Debug)]
pub struct ApiJsonOptional<T>(pub Option<T>);

impl<S, T> FromRequest<S> for ApiJsonOptional<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| Problem::new(rejection.status(), rejection.body_text()))?;
        if bytes.is_empty() {
            return Ok(Self(None));
        }
        serde_json::from_slice(&bytes)
            .map(|v| Self(Some(v)))
            .map_err(|e| Problem::bad_request(format!("body: {e}")))
    }
}

/// Query parameters whose rejections are problems (400).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(rejection) => Err(Problem::new(rejection.status(), rejection.body_text())),
        }
    }
}

/// One recent error.
#[derive(Clone, Debug, Serialize)]
pub struct RecentError {
    /// Unix ms.
    pub at_ms: u64,
    /// The request id, if in a request.
    pub request_id: String,
    /// Where (`GET /v1/agents`).
    pub route: String,
    /// What.
    pub message: String,
}

/// The daemon's own stores, opened on the node's snapshot store.
#[derive(Debug)]
pub struct Stores {
    /// API keys.
    pub keys: KeyStore,
    /// The audit log.
    pub audit: AuditLog,
    /// Daily quotas.
    pub quotas: super::quota::Quotas,
    /// Webhooks.
    pub webhooks: super::webhooks::Webhooks,
    /// Cluster membership.
    pub membership: crate::cluster::Membership,
    /// Stored idempotency records per API key.
    pub idempotency_counts: super::idempotency::Counts,
}

/// What every handler shares. Its `Debug` leaves out the configuration (MCP server
/// environments may carry tokens) and the stores.
pub struct AppState {
    /// The node.
    pub rt: Runtime,
    /// API keys.
    pub keys: KeyStore,
    /// The audit log.
    pub audit: AuditLog,
    /// The configuration.
    pub config: DaemonConfig,
    /// Per-key limiter.
    pub limiter: DefaultKeyedRateLimiter<String>,
    /// Failed authentications per client address.
    pub failed_auth: super::failed_auth::FailedAuth,
    /// Recent errors, newest last.
    pub errors: Mutex<VecDeque<RecentError>>,
    /// Whether the node is ready (false once shutdown begins).
    pub ready: std::sync::atomic::AtomicBool,
    /// When the daemon started.
    pub started: Instant,
    /// The Prometheus exporter, if this process installed one.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Per-tenant request counters for the daily quota.
    pub quotas: super::quota::Quotas,
    /// Cancelled when shutdown begins: long-lived streams end so the drain can finish.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Webhook subscriptions and deliveries.
    pub webhooks: super::webhooks::Webhooks,
    /// Idempotency keys of requests still running.
    pub idempotency_in_flight: dashmap::DashMap<String, ()>,
    /// Stored idempotency records per tenant on this node.
    pub idempotency_counts: super::idempotency::Counts,
    /// Held by a creation that a per-tenant limit counts (agents, keys, webhooks, schedules,
    /// namespaces) from its count to its write, so two creations cannot both take the last
    /// place.
    pub creating: tokio::sync::Mutex<()>,
    /// Event streams open per tenant.
    pub open_streams: super::streams::OpenStreams,
    /// The node's recent samples, for charts.
    pub history: super::sampler::History,
    /// This node's cluster membership (disabled outside a cluster).
    pub membership: crate::cluster::Membership,
    /// The retention job's state.
    pub retention: super::retention::Retention,
    /// The latest disk use report.
    pub usage: super::usage::UsageCache,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("rt", &self.rt)
            .field("keys", &self.keys)
            .field("webhooks", &self.webhooks)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

/// The shared state as handlers take it.
pub type Shared = Arc<AppState>;

impl AppState {
    /// Builds the state.
    pub fn new(
        rt: Runtime,
        stores: Stores,
        config: DaemonConfig,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
        stopping: tokio_util::sync::CancellationToken,
    ) -> Self {
        let per_s = NonZeroU32::new(config.rate_limit.requests_per_s).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.rate_limit.burst).unwrap_or(NonZeroU32::MIN);
        Self {
            rt,
            keys: stores.keys,
            audit: stores.audit,
            limiter: RateLimiter::keyed(Quota::per_second(per_s).allow_burst(burst)),
            failed_auth: super::failed_auth::FailedAuth::new(&config.auth),
            config,
            errors: Mutex::new(VecDeque::new()),
            ready: std::sync::atomic::AtomicBool::new(true),
            started: Instant::now(),
            metrics,
            quotas: stores.quotas,
            stopping,
            webhooks: stores.webhooks,
            idempotency_in_flight: dashmap::DashMap::new(),
            idempotency_counts: stores.idempotency_counts,
            creating: tokio::sync::Mutex::new(()),
            open_streams: super::streams::OpenStreams::default(),
            history: super::sampler::History::default(),
            membership: stores.membership,
            retention: super::retention::Retention::default(),
            usage: super::usage::UsageCache::default(),
        }
    }

    /// Records an error for the errors endpoint (bounded).
    pub fn record_error(&self, request_id: &str, route: &str, message: String) {
        let mut errors = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if errors.len() >= RECENT_ERRORS_MAX {
            errors.pop_front();
        }
        errors.push_back(RecentError {
            at_ms: aios_actors::protocol::unix_ms(),
            request_id: request_id.to_string(),
            route: route.to_string(),
            message,
        });
    }
}

/// Whose keys may call a route, besides its least role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Any tenant's keys: the handler works on the caller's tenant only.
    Tenant,
    /// Node-wide (drain, the actor tree, MCP servers, recent errors, tool tests): only the
    /// operator tenant's keys ([`super::keys::OPERATOR_TENANT`]); other tenants get 403.
    Node,
}

/// A route as registered: method, path, the least role that may call it, and whose keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// The method.
    pub method: Method,
    /// The path, with `{param}` segments.
    pub path: &'static str,
    /// The least role allowed.
    pub role: Role,
    /// Tenant or node-wide.
    pub reach: Reach,
}

/// Builds the authenticated API, recording every route in a table.
#[derive(Debug)]
pub struct Api {
    router: aide::axum::ApiRouter<Shared>,
    table: Vec<RouteSpec>,
}

impl Default for Api {
    fn default() -> Self {
        Self::new()
    }
}

impl Api {
    /// An empty API.
    pub fn new() -> Self {
        super::openapi::use_openapi_31_schemas();
        Self {
            router: aide::axum::ApiRouter::new(),
            table: Vec::new(),
        }
    }

    /// Adds `method path`, callable by `role` and above of any tenant. The route's OpenAPI
    /// operation is registered with it, from the handler's types (`aide`): its path, query
    /// and body extractors give the parameters and the request schema, `Problem` the error
    /// responses.
    ///
    /// # Panics
    /// On a method other than GET, POST, PUT, PATCH or DELETE (a programming error in the
    /// route table, found by every test that starts the daemon).
    pub fn route<H, T, I, O>(
        self,
        method: Method,
        path: &'static str,
        role: Role,
        handler: H,
    ) -> Self
    where
        H: axum::handler::Handler<T, Shared> + aide::operation::OperationHandler<I, O>,
        I: aide::operation::OperationInput,
        O: aide::operation::OperationOutput,
        T: 'static,
    {
        self.add(method, path, role, Reach::Tenant, handler)
    }

    /// As [`Api::route`], for a node-wide route: only the operator tenant's keys with `role`
    /// and above.
    ///
    /// # Panics
    /// As [`Api::route`].
    pub fn node_route<H, T, I, O>(
        self,
        method: Method,
        path: &'static str,
        role: Role,
        handler: H,
    ) -> Self
    where
        H: axum::handler::Handler<T, Shared> + aide::operation::OperationHandler<I, O>,
        I: aide::operation::OperationInput,
        O: aide::operation::OperationOutput,
        T: 'static,
    {
        self.add(method, path, role, Reach::Node, handler)
    }

    fn add<H, T, I, O>(
        mut self,
        method: Method,
        path: &'static str,
        role: Role,
        reach: Reach,
        handler: H,
    ) -> Self
    where
        H: axum::handler::Handler<T, Shared> + aide::operation::OperationHandler<I, O>,
        I: aide::operation::OperationInput,
        O: aide::operation::OperationOutput,
        T: 'static,
    {
        use aide::axum::routing as r;
        let describe = super::openapi::describer(method.clone(), path, role, reach);
        let method_router = if method == Method::GET {
            r::get_with(handler, describe)
        } else if method == Method::POST {
            r::post_with(handler, describe)
        } else if method == Method::PUT {
            r::put_with(handler, describe)
        } else if method == Method::PATCH {
            r::patch_with(handler, describe)
        } else if method == Method::DELETE {
            r::delete_with(handler, describe)
        } else {
            panic!("the route table uses {method} for {path}")
        };
        let method_router =
            method_router.route_layer(middleware::from_fn(move |req: Request, next: Next| {
                require_role(role, reach, req, next)
            }));
        self.router = self.router.api_route(path, method_router);
        self.table.push(RouteSpec {
            method,
            path,
            role,
            reach,
        });
        self
    }

    /// The routes registered.
    pub fn table(&self) -> &[RouteSpec] {
        &self.table
    }

    /// The router, its table, and the OpenAPI operations registered with its routes.
    pub fn into_parts(self) -> (Router<Shared>, Vec<RouteSpec>, aide::openapi::OpenApi) {
        let mut api = aide::openapi::OpenApi::default();
        let router = self.router.finish_api(&mut api);
        (router, self.table, api)
    }
}

async fn require_role(role: Role, reach: Reach, req: Request, next: Next) -> Response {
    match req.extensions().get::<Principal>() {
        Some(p) if reach == Reach::Node && p.tenant != super::keys::OPERATOR_TENANT => {
            Problem::forbidden(format!(
                "this is node-wide; only keys of the {:?} tenant may use it",
                super::keys::OPERATOR_TENANT
            ))
            .into_response()
        }
        Some(p) if p.role >= role => next.run(req).await,
        Some(p) => Problem::forbidden(format!(
            "this needs the {} role; the key {} is {}",
            role.as_str(),
            p.key_id,
            p.role.as_str()
        ))
        .into_response(),
        None => {
            Problem::new(StatusCode::UNAUTHORIZED, AuthError::Missing.to_string()).into_response()
        }
    }
}

/// The request id of a request (set by the request-id layer).
pub fn request_id(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The key of a request: `Authorization: Bearer …` or `x-api-key`; for the event streams
/// only (GET `…/events` and `…/ws`), also `?access_token=…`, because browsers' `EventSource`
/// and `WebSocket` cannot send headers. Request logs carry the path, never the query.
pub(crate) fn token(req: &Request) -> Option<String> {
    let h = req.headers();
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return Some(v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string());
    }
    if let Some(v) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    let path = req.uri().path();
    if req.method() == Method::GET && (path.ends_with("/events") || path.ends_with("/ws")) {
        return req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("access_token="))
                .map(str::to_string)
        });
    }
    None
}

/// Whether the request's `Host` (or, without one, its URI's authority) is `localhost`,
/// `127.0.0.1` or `[::1]`, on any port.
fn loopback_host(req: &Request) -> bool {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    let Some(host) = host else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        // `[::1]` or `[::1]:port`.
        Some(rest) => rest.split_once(']').map_or("", |(inside, _)| inside),
        None => host.split_once(':').map_or(host.as_str(), |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1"
}

fn is_mutating(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Authenticates, rate-limits, counts the tenant's quota, runs the request, and audits it
/// when it changes something (or when authentication fails).
pub async fn authenticate(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    if state.config.insecure_no_auth {
        // DNS rebinding: a page in a browser on this host may reach a loopback listener by a
        // name of its own; only requests addressed to a loopback name are served.
        if !loopback_host(&req) {
            return Problem::forbidden(
                "insecure_no_auth serves only requests whose Host is localhost, 127.0.0.1 or [::1]",
            )
            .into_response();
        }
        req.extensions_mut().insert(Principal {
            key_id: "insecure".into(),
            role: Role::Admin,
            tenant: super::keys::OPERATOR_TENANT.into(),
        });
        return next.run(req).await;
    }
    let rid = request_id(&req);
    let action = format!("{} {}", req.method(), req.uri().path());
    let principal = match state.keys.authenticate(token(&req).as_deref()) {
        Ok(p) => p,
        Err(e) => {
            let source = client_of(&state, &req);
            return auth_failed(&state, source, rid, &action, &e).await;
        }
    };
    if let Err(not_until) = state.limiter.check_key(&principal.key_id) {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        let mut p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "key {} is over its rate limit of {} requests/s",
                principal.key_id, state.config.rate_limit.requests_per_s
            ),
        );
        p.retry_after_s = Some(wait.as_secs().max(1));
        return p.into_response();
    }
    if let Err(p) = state.quotas.count_request(&principal.tenant).await {
        if state.quotas.first_refusal_today(&principal.tenant) {
            state
                .webhooks
                .emit(
                    &principal.tenant,
                    "quota.exceeded",
                    serde_json::json!({"quota": "requests_per_day", "detail": p.detail}),
                )
                .await;
        }
        return p.into_response();
    }
    let mutating = is_mutating(req.method());
    req.extensions_mut().insert(principal.clone());
    if !mutating {
        return next.run(req).await;
    }
    // A mutating request is audited once it is done, with its outcome, and answered only
    // after the entry is durable (the flush is shared with concurrent requests). Measured:
    // writing a `started` entry first as well (durable with the handler's own commit) was
    // slower under load than this one shared flush.
    let response = next.run(req).await;
    let status = response.status();
    let outcome = if status.is_success() {
        "ok".to_string()
    } else {
        status.as_u16().to_string()
    };
    let event = AuditEvent {
        request_id: rid,
        key_id: principal.key_id,
        tenant: principal.tenant,
        target: action
            .split_once(' ')
            .map(|(_, p)| p.to_string())
            .unwrap_or_default(),
        action,
        outcome,
        detail: String::new(),
    };
    if let Err(e) = state.audit.append(event, true).await {
        if !status.is_success() {
            // The request failed, so nothing changed: its own error is the answer (the store
            // being down is often why both failed).
            tracing::error!(error = %e, %status, "a failed request could not be audited");
            return response;
        }
        // The change is done but not audited: say so rather than pretend.
        return Problem::internal(format!(
            "the request was carried out but could not be audited: {e}"
        ))
        .into_response();
    }
    response
}

/// A failed authentication: 429 over the client address' limit (nothing written), else 401,
/// audited when it is the address' first this minute (the rest are counted, see
/// [`super::failed_auth`]).
/// The client address of `req`, as failed authentications are counted.
pub(crate) fn client_of(state: &AppState, req: &Request) -> std::net::IpAddr {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    state.failed_auth.client(peer, req.headers())
}

pub(crate) async fn auth_failed(
    state: &AppState,
    source: std::net::IpAddr,
    request_id: String,
    action: &str,
    e: &AuthError,
) -> Response {
    use super::failed_auth::Failure;
    metrics::counter!("aios_http_auth_failures_total").increment(1);
    match state
        .failed_auth
        .failure(source, aios_actors::protocol::unix_ms())
    {
        Failure::Limited(wait) => {
            let mut p = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many failed authentications from {source}: at most {} a minute",
                    state.config.auth.failures_per_minute
                ),
            );
            p.retry_after_s = Some(wait);
            return p.into_response();
        }
        Failure::Counted => {}
        Failure::Audit => {
            let event = AuditEvent {
                request_id,
                action: "auth_failed".into(),
                target: action.to_string(),
                outcome: "denied".into(),
                detail: format!("{e} (from {source}; later failures this minute are counted)"),
                ..AuditEvent::default()
            };
            if let Err(x) = state.audit.append(event, false).await {
                tracing::error!(error = %x, "audit append");
            }
        }
    }
    Problem::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response()
}

/// The longest client-chosen `x-request-id` kept.
pub const REQUEST_ID_MAX: usize = 64;

/// Drops a client's `x-request-id` unless it is at most [`REQUEST_ID_MAX`] characters of
/// `[A-Za-z0-9._:-]` (the request-id layer then makes one): ids go into logs and the audit
/// log.
pub async fn safe_request_id(mut req: Request, next: Next) -> Response {
    let safe = |v: &HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= REQUEST_ID_MAX
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
    };
    let headers = req.headers_mut();
    let all: Vec<&HeaderValue> = headers.get_all("x-request-id").iter().collect();
    if all.len() > 1 || all.first().is_some_and(|v| !safe(v)) {
        headers.remove("x-request-id");
    }
    next.run(req).await
}

/// Counts requests and their latency by route and status.
pub async fn http_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("aios_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("aios_http_request_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Turns a panic in a handler into a 500 problem, counted and listed as a recent error.
pub fn panic_response(state: Shared) -> impl Fn(Box<dyn std::any::Any + Send>) -> Response + Clone {
    move |panic: Box<dyn std::any::Any + Send>| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a handler panicked".into());
        tracing::error!(%message, "handler panicked");
        metrics::counter!("aios_http_panics_total").increment(1);
        state.record_error("", "handler", format!("panic: {message}"));
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request handler failed; it is logged",
        )
        .into_response()
    }
}
