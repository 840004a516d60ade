//! `aiosd`, the daemon: a node ([`crate::Runtime`]) behind a versioned REST API with API keys,
//! an audit log, rate limits and quotas, Prometheus metrics and health probes.
//!
//! - `config.rs`: [`DaemonConfig`] (TOML file, environment, flags; validated).
//! - `keys.rs`: [`KeyStore`], roles, tenants, rotation and revocation.
//! - `audit.rs`: [`AuditLog`], hash-chained in the store, with `verify`.
//! - `quota.rs`: per-tenant daily request quotas that survive restarts.
//! - `webhooks.rs`: signed deliveries from a persisted queue, retries, dead letters.
//! - `http.rs`: problems (RFC 9457), the middleware stack, the route table.
//! - `api/`: the `/v1` route table and the handlers of each resource; `runs.rs`: runs and
//!   sessions.
//! - `idempotency.rs`: `Idempotency-Key` on POSTs.
//! - `openai.rs`: the OpenAI-compatible `/v1/chat/completions` and agent event streams.

pub mod api;
pub mod audit;
pub mod backup;
pub mod config;
pub mod failed_auth;
mod followers;
pub mod http;
pub mod idempotency;
pub mod keys;
pub mod openai;
pub mod openapi;
pub mod quota;
pub mod retention;
pub mod runs;
pub mod sampler;
pub mod schedules;
pub mod server;
mod start;
pub mod streams;
pub mod ui;
pub mod usage;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use self::audit::AuditLog;
pub use self::config::{ConfigError, DaemonConfig};
pub use self::http::{AppState, Problem, Reach, RouteSpec, Shared};
pub use self::keys::{KeyStore, NewKey, Role};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node failed to open.
    #[error(transparent)]
    Runtime(#[from] crate::RuntimeError),
    /// Keys, audit log or quotas could not be opened.
    #[error("{0}")]
    Store(String),
    /// Cluster membership could not start.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
}

static METRICS: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
    std::sync::OnceLock::new();

/// Installs the Prometheus recorder once per process (before the node opens, so tool and
/// scheduler metrics register with it).
fn metrics_handle() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    METRICS
        .get_or_init(|| {
            match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "no Prometheus recorder: another one is installed");
                    None
                }
            }
        })
        .clone()
}

/// A running daemon.
pub struct Daemon {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// Where `/metrics` and the probes listen, when separate.
    pub metrics_addr: Option<SocketAddr>,
    state: Shared,
    stop: CancellationToken,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Daemon {
    /// The addresses only: the state holds the configuration, whose MCP server environments
    /// may carry tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("addr", &self.addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

/// The first admin key, when this start created it (print it once; it is not kept).
pub type FirstKey = Option<NewKey>;

async fn readyz(State(s): State<Shared>) -> Response {
    if let Err(e) = s.rt.snapshots().store().health() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: snapshot store unreachable: {e}"),
        )
        .into_response();
    }
    if s.ready.load(Ordering::Relaxed) && s.rt.is_running() {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ready"})),
        )
            .into_response()
    } else {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// On a store other nodes share, keys created, rotated or revoked on another node take effect
/// here within [`KEYS_RELOAD_EVERY`].
fn spawn_key_reloader(keys: KeyStore, hooks: webhooks::Webhooks, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEYS_RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(error) = keys.reload().await {
                tracing::warn!(%error, "API keys not reloaded");
            }
            if let Err(error) = hooks.reload_subscriptions().await {
                tracing::warn!(%error, "webhook subscriptions not reloaded");
            }
        }
    });
}

/// The file in the data directory, beside the audit signing key, that says the audit head
/// has been signed since this release's first start.
pub const AUDIT_HEAD_SIGNED_MARKER: &str = "audit-head-signed";

/// How often a node on a shared store re-reads the API keys and webhook subscriptions.
pub const KEYS_RELOAD_EVERY: Duration = Duration::from_secs(2);

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "alive"})).into_response()
}

/// Labels whose values are a tenant's names: series with them are left out of `/metrics`
/// unless the operator tenant asks for them (`?tenants=true`).
pub const TENANT_LABELS: [&str; 2] = ["namespace", "tenant"];

/// `?tenants=true` on `/metrics`.
#[derive(serde::Deserialize)]
struct MetricsQuery {
    #[serde(default)]
    tenants: bool,
}

/// `GET /metrics`: readable without a key by default (Prometheus scrapes it), and then with
/// no tenant's names in it; the tenant-labelled series need an operator-tenant key and
/// `?tenants=true`.
async fn metrics_text(
    State(s): State<Shared>,
    http::ApiQuery(q): http::ApiQuery<MetricsQuery>,
    req: Request,
) -> Response {
    let Some(h) = &s.metrics else {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not recorded in this process",
        )
        .into_response();
    };
    if q.tenants {
        // Keys are checked as on /v1: a failure counts against the client's address.
        match s.keys.authenticate(http::token(&req).as_deref()) {
            Ok(p) if p.tenant == keys::OPERATOR_TENANT => {}
            Ok(_) => {
                return Problem::forbidden(format!(
                    "tenant-labelled metrics are node-wide; only keys of the {:?} tenant may read them",
                    keys::OPERATOR_TENANT
                ))
                .into_response();
            }
            Err(e) => {
                let source = http::client_of(&s, &req);
                let rid = http::request_id(&req);
                return http::auth_failed(&s, source, rid, "GET /metrics", &e).await;
            }
        }
    }
    let mut text = h.render();
    if !q.tenants {
        text = without_tenant_series(&text);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}

/// The Prometheus text `text` without the samples that carry one of [`TENANT_LABELS`].
fn without_tenant_series(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let labels = line
            .split_once('{')
            .filter(|_| !line.starts_with('#'))
            .map_or("", |(_, rest)| rest);
        let tenant_named = TENANT_LABELS.iter().any(|label| {
            labels.starts_with(&format!("{label}=\"")) || labels.contains(&format!(",{label}=\""))
        });
        if !tenant_named {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

async fn metrics_key(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if s.config.metrics_require_key
        && let Err(e) = s.keys.authenticate(http::token(&req).as_deref())
    {
        let source = http::client_of(&s, &req);
        let rid = http::request_id(&req);
        return http::auth_failed(&s, source, rid, "GET /metrics", &e).await;
    }
    next.run(req).await
}

async fn not_found(req: Request) -> Response {
    Problem::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

/// The probes and `/metrics`.
fn probes(state: &Shared) -> Router<Shared> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(metrics_text)
                .route_layer(middleware::from_fn_with_state(state.clone(), metrics_key)),
        )
}

/// The whole application: probes (unless moved to their own address), the authenticated
/// `/v1` API, and the layers every request goes through.
pub fn app(state: Shared) -> Router {
    let (api, _, _) = api::routes().into_parts();
    // Authentication runs first (outermost), then Idempotency-Key handling.
    let api = api
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            http::authenticate,
        ));
    let mut router = Router::new().merge(api);
    if state.config.ui {
        router = router.merge(ui::routes());
    }
    if state.config.metrics_listen.is_none() {
        router = router.merge(probes(&state));
    }
    let request_id = HeaderName::from_static("x-request-id");
    router
        .fallback(not_found)
        .layer(middleware::from_fn(http::http_metrics))
        .layer(axum::extract::DefaultBodyLimit::max(state.config.body_limit_bytes))
        .layer(CatchPanicLayer::custom(http::panic_response(state.clone())))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &Request| {
                    let rid = http::request_id(req);
                    tracing::info_span!("request", request_id = %rid, method = %req.method(), path = %req.uri().path())
                },
            ),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(middleware::from_fn(http::safe_request_id))
        .with_state(state)
}

impl Daemon {
    /// The shared state (node, keys, audit log), for tests and embedding.
    pub fn state(&self) -> &Shared {
        &self.state
    }

    /// Stops accepting, lets in-flight requests finish within `shutdown_drain`, then stops the
    /// node in order with a final flush.
    ///
    /// # Errors
    /// The node's shutdown error.
    pub async fn shutdown(self) -> Result<(), DaemonError> {
        self.state.ready.store(false, Ordering::Relaxed);
        self.state.membership.shutdown();
        self.stop.cancel();
        let drain = self.state.config.shutdown_drain;
        for server in self.servers {
            let abort = server.abort_handle();
            if tokio::time::timeout(drain, server).await.is_err() {
                tracing::warn!(
                    ?drain,
                    "requests still running after the drain deadline; cut off"
                );
                abort.abort();
            }
        }
        if let Err(e) = self.state.quotas.flush().await {
            tracing::warn!(error = %e, "writing quota counters at shutdown");
        }
        // Handlers are gone with the servers; the state is ours again (bounded wait for
        // aborted tasks to drop their references).
        let mut state = self.state;
        for _ in 0..200 {
            match Arc::try_unwrap(state) {
                Ok(s) => {
                    s.rt.shutdown().await?;
                    tracing::info!("aiosd stopped");
                    return Ok(());
                }
                Err(again) => {
                    state = again;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        tracing::error!(
            "the node is still referenced after shutdown; flushing without stopping it"
        );
        state
            .rt
            .snapshots()
            .flush()
            .await
            .map_err(|e| DaemonError::Store(e.to_string()))
    }
}
