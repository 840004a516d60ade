//! Live event feeds of runs and sessions, served over SSE (`…/events`) and WebSocket
//! (`…/ws`, server to client). A feed ends when the run finishes (a run feed), when the client
//! goes away, or when the daemon shuts down.
//!
//! A session's feed carries the events of its agent instance (an agent session) or of the
//! runs started by its messages (a team session).

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt as _};
use serde_json::{Value, json};

use aios_actors::agent::AgentEventKind;
use aios_actors::orchestration::{RunEventKind, RunStatus, SessionTarget};
use aios_actors::protocol::AgentId;

use super::http::{Problem, Shared};
use super::keys::Principal;

/// Events as `(kind, data)`.
pub(crate) type Feed = Pin<Box<dyn Stream<Item = (String, Value)> + Send>>;

fn finished(status: RunStatus) -> bool {
    matches!(
        status,
        RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
    )
}

/// The events of one run of the tenant; ends with its `Finished` event.
pub(crate) async fn run_feed(s: &Shared, p: &Principal, id: &str) -> Result<Feed, Problem> {
    // Subscribe first, then check, so no event between the two is lost.
    let rx = s.rt.orchestrator().subscribe();
    let state = match s.rt.orchestrator().get(id).await {
        Ok(Some(r)) if r.spec.tenant == p.tenant => r,
        _ => return Err(Problem::not_found(format!("run {id} not found"))),
    };
    let done = finished(state.status);
    let id = id.to_string();
    // Agent names as the tenant knows them, as in `GET /v1/runs/{id}`.
    let prefix = format!("{}.", p.tenant);
    let feed = futures_util::stream::unfold((rx, done), move |(mut rx, done)| {
        let id = id.clone();
        let prefix = prefix.clone();
        async move {
            if done {
                return None;
            }
            loop {
                match rx.recv().await {
                    Ok(e) if e.run == id => {
                        let last = matches!(e.kind, RunEventKind::Finished { .. });
                        let mut data = serde_json::to_value(&e.kind).unwrap_or(Value::Null);
                        super::runs::strip_prefix_in(&mut data, &prefix);
                        return Some((("run".to_string(), data), (rx, last)));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        return Some((("lagged".into(), json!({"missed": n})), (rx, false)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(Box::pin(feed))
}

/// The events of one session of the tenant.
pub(crate) async fn session_feed(s: &Shared, p: &Principal, id: &str) -> Result<Feed, Problem> {
    let info = match s.rt.orchestrator().session(id).await {
        Ok(Some(info)) if info.tenant == p.tenant => info,
        _ => return Err(Problem::not_found(format!("session {id} not found"))),
    };
    match info.target {
        SessionTarget::Agent { name } => {
            let key = aios_actors::orchestration::session_instance_key(&info.id);
            let rx = s.rt.agent_system().subscribe(&AgentId::new(name, key));
            let feed = futures_util::stream::unfold(rx, |mut rx| async move {
                let item = match rx.recv().await {
                    Ok(ev) => match ev.kind {
                        AgentEventKind::Token(t) => ("token".to_string(), json!({"text": t})),
                        other => (
                            "event".to_string(),
                            serde_json::to_value(other).unwrap_or(Value::Null),
                        ),
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        ("lagged".into(), json!({"missed": n}))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                };
                Some((item, rx))
            });
            Ok(Box::pin(feed))
        }
        SessionTarget::Team { .. } => {
            // Runs of this session, recognised by their spec (looked up once per run).
            let rx = s.rt.orchestrator().subscribe();
            let state = s.clone();
            let session = info.id.clone();
            let prefix = format!("{}.", p.tenant);
            let feed = futures_util::stream::unfold(
                (rx, std::collections::HashMap::<String, bool>::new()),
                move |(mut rx, mut ours)| {
                    let state = state.clone();
                    let session = session.clone();
                    let prefix = prefix.clone();
                    async move {
                        loop {
                            let e = match rx.recv().await {
                                Ok(e) => e,
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                    return Some((
                                        ("lagged".into(), json!({"missed": n})),
                                        (rx, ours),
                                    ));
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                    return None;
                                }
                            };
                            let mine = match ours.get(&e.run) {
                                Some(m) => *m,
                                None => {
                                    let m = matches!(
                                        state.rt.orchestrator().get(&e.run).await,
                                        Ok(Some(r)) if r.spec.session.as_deref() == Some(session.as_str())
                                    );
                                    // Bounded: forget what was learnt once it grows large.
                                    if ours.len() > 10_000 {
                                        ours.clear();
                                    }
                                    ours.insert(e.run.clone(), m);
                                    m
                                }
                            };
                            if mine {
                                let mut data = serde_json::to_value(&e.kind).unwrap_or(Value::Null);
                                super::runs::strip_prefix_in(&mut data, &prefix);
                                if let Value::Object(o) = &mut data {
                                    o.insert("run".into(), json!(e.run));
                                }
                                return Some((("run".to_string(), data), (rx, ours)));
                            }
                        }
                    }
                },
            );
            Ok(Box::pin(feed))
        }
    }
}

/// The supervision events of the whole node (operator tenant only): starts, exits,
/// restarts, escalations, as they happen.
pub(crate) fn tree_feed(s: &Shared, p: &Principal) -> Result<Feed, Problem> {
    if p.tenant != super::keys::OPERATOR_TENANT {
        return Err(Problem::forbidden(format!(
            "this is node-wide; only keys of the {:?} tenant may use it",
            super::keys::OPERATOR_TENANT
        )));
    }
    let rx = s.rt.events();
    let feed = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = match rx.recv().await {
            Ok(e) => (
                "supervision".to_string(),
                serde_json::to_value(&*e).unwrap_or(Value::Null),
            ),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                ("lagged".into(), json!({"missed": n}))
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((item, rx))
    });
    Ok(Box::pin(feed))
}

/// `GET /v1/tree/events`.
pub async fn tree_events(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> Result<Response, Problem> {
    let feed = tree_feed(&s, &p)?;
    sse(&s, &p, feed)
}

/// `GET /v1/tree/ws`.
pub async fn tree_ws(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Result<Response, Problem> {
    let feed = tree_feed(&s, &p)?;
    ws(&s, &p, feed, upgrade)
}

/// Resolves when a stream opened by `p` must end: the daemon stops, or `p`'s key is
/// revoked or expires (within a second on this node; after the next key reload on others).
pub(crate) fn ended(
    s: &Shared,
    p: &Principal,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let stopping = s.stopping.clone();
    let keys = s.keys.clone();
    let key_id = p.key_id.clone();
    // `insecure_no_auth` has no key to lose.
    let guarded = !s.config.insecure_no_auth;
    async move {
        tokio::select! {
            () = stopping.cancelled_owned() => {}
            () = async {
                if guarded {
                    keys.gone(&key_id).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {}
        }
    }
}

/// Client messages on a feed-only WebSocket are ignored; none may be larger than this.
pub const FEED_WS_MESSAGE_MAX: usize = 4 * 1024;

/// The streams (SSE and WebSocket) open per tenant on this node.
#[derive(Debug, Default)]
pub struct OpenStreams(std::sync::Mutex<std::collections::HashMap<String, usize>>);

impl OpenStreams {
    fn counts(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, usize>> {
        // Invariant: nothing panics while this is held (counter updates).
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One open stream's place among its tenant's; given back when dropped (the stream ended,
/// or was never served).
pub(crate) struct Place {
    s: Shared,
    tenant: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.s.open_streams.counts();
        if let Some(n) = counts.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

/// A place for a stream of `p`'s tenant, unless it has `[tenants] streams_max` open: a
/// stream holds a connection for as long as it lasts, so without this bound one tenant
/// could hold every connection of the node.
///
/// # Errors
/// 429 with the limit's name.
pub(crate) fn open(s: &Shared, p: &Principal) -> Result<Place, Problem> {
    let max = s.config.tenants.streams_max;
    let mut counts = s.open_streams.counts();
    let n = counts.entry(p.tenant.clone()).or_insert(0);
    if *n >= max {
        let mut problem = Problem::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            format!(
                "tenant {} has {n} event streams open, the most it may ([tenants] \
                 streams_max = {max}); close one first",
                p.tenant
            ),
        );
        problem.retry_after_s = Some(5);
        return Err(problem);
    }
    *n += 1;
    Ok(Place {
        s: s.clone(),
        tenant: p.tenant.clone(),
    })
}

/// A feed as server-sent events, until [`ended`].
///
/// # Errors
/// When the tenant has all its streams open ([`open`]).
pub(crate) fn sse(s: &Shared, p: &Principal, feed: Feed) -> Result<Response, Problem> {
    let place = open(s, p)?;
    let body = feed
        .map(move |(kind, data)| {
            let _open = &place;
            Ok::<_, Infallible>(Event::default().event(kind).data(data.to_string()))
        })
        .take_until(ended(s, p));
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// A feed over a WebSocket: one JSON text frame per event (`{"type": kind, "data": …}`),
/// until [`ended`].
///
/// # Errors
/// When the tenant has all its streams open ([`open`]).
pub(crate) fn ws(
    s: &Shared,
    p: &Principal,
    feed: Feed,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Result<Response, Problem> {
    use axum::extract::ws::Message;
    let place = open(s, p)?;
    let ended = ended(s, p);
    Ok(upgrade
        .max_message_size(FEED_WS_MESSAGE_MAX)
        .max_frame_size(FEED_WS_MESSAGE_MAX)
        .on_upgrade(move |mut socket| async move {
            let _open = place;
            let mut feed = Box::pin(feed.take_until(ended));
            loop {
                tokio::select! {
                    item = feed.next() => {
                        let Some((kind, data)) = item else { break };
                        let frame = json!({"type": kind, "data": data}).to_string();
                        if socket.send(Message::Text(frame.into())).await.is_err() {
                            break;
                        }
                    }
                    m = socket.recv() => match m {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    },
                }
            }
            let _ = socket.send(Message::Close(None)).await;
        }))
}

/// `GET /v1/runs/{id}/events`.
pub async fn run_events(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let feed = run_feed(&s, &p, &id).await?;
    sse(&s, &p, feed)
}

/// `GET /v1/runs/{id}/ws`.
pub async fn run_ws(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Result<Response, Problem> {
    let feed = run_feed(&s, &p, &id).await?;
    ws(&s, &p, feed, upgrade)
}

/// `GET /v1/sessions/{id}/events`.
pub async fn session_events(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let feed = session_feed(&s, &p, &id).await?;
    sse(&s, &p, feed)
}

/// `GET /v1/sessions/{id}/ws`.
pub async fn session_ws(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Result<Response, Problem> {
    let feed = session_feed(&s, &p, &id).await?;
    ws(&s, &p, feed, upgrade)
}
