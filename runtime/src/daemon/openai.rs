//! `POST /v1/chat/completions`, OpenAI-compatible: `model` names one of the tenant's agents,
//! so existing OpenAI clients and SDKs talk to AIOS agents. Without `user`, each request is a
//! fresh, stateless conversation (the earlier messages of the request are given to the agent
//! as context, and the instance is forgotten afterwards); with `user`, the agent keeps one
//! conversation per user. `stream: true` answers with server-sent `chat.completion.chunk`
//! events carrying the agent's tokens as they come, then `data: [DONE]`. Also
//! `GET /v1/agents/{name}/events`: the live events of an agent instance over SSE.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use serde_json::{Value, json};

use aios_actors::agent::{AgentEventKind, Task};
use aios_actors::protocol::AgentId;

use super::http::{ApiJson, ApiQuery, Problem, Shared};
use super::keys::Principal;

/// Messages in one chat request at most.
pub const CHAT_MESSAGES_MAX: usize = 256;

/// One message of a chat request.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
pub struct ChatMessageIn {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Its text (`null` for assistant messages that only call tools).
    #[serde(default)]
    pub content: Option<Value>,
}

/// The request body (fields OpenAI clients send that AIOS does not use are accepted and
/// ignored: temperature, max_tokens, …; the agent's definition decides those).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
pub struct ChatRequestIn {
    /// The agent.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessageIn>,
    /// Stream the answer.
    #[serde(default)]
    pub stream: bool,
    /// Keep one conversation per user.
    #[serde(default)]
    pub user: Option<String>,
}

fn text_of(content: &Option<Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        // The content-parts form: [{"type": "text", "text": "…"}, …].
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn oai_error(p: Problem) -> Response {
    // OpenAI clients read `error.message`; keep the problem's status.
    let status = axum::http::StatusCode::from_u16(p.status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        axum::Json(json!({"error": {"message": p.detail, "type": p.title, "code": p.status}})),
    )
        .into_response();
    // OpenAI's clients wait as long as `Retry-After` says before retrying a 429.
    if let Some(secs) = p.retry_after_s {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(secs),
        );
    }
    response
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<ChatRequestIn>,
) -> Response {
    match prepare(&s, &p, req).await {
        Ok(prepared) => run(s, &p, prepared).await,
        Err(problem) => oai_error(problem),
    }
}

struct Prepared {
    id: AgentId,
    model: String,
    task: Task,
    stream: bool,
    ephemeral: bool,
}

async fn prepare(s: &Shared, p: &Principal, req: ChatRequestIn) -> Result<Prepared, Problem> {
    // The model names one of the caller's tenant's agents.
    let full = super::api::ScopedAgent::new(p, &req.model)
        .ok()
        .filter(|full| s.rt.agent_system().registry().get(full).is_some())
        .ok_or_else(|| {
            Problem::not_found(format!("model {:?}: no agent of that name", req.model))
        })?;
    if req.messages.is_empty() || req.messages.len() > CHAT_MESSAGES_MAX {
        return Err(Problem::bad_request(format!(
            "messages: 1..={CHAT_MESSAGES_MAX} required"
        )));
    }
    s.quotas.check_llm(&p.tenant)?;
    let last_user = req
        .messages
        .iter()
        .rposition(|m| m.role == "user")
        .ok_or_else(|| Problem::bad_request("messages: no user message"))?;
    let input = text_of(&req.messages[last_user].content);
    if input.trim().is_empty() {
        return Err(Problem::bad_request(
            "messages: the last user message is empty",
        ));
    }
    let (key, ephemeral, context) = match &req.user {
        Some(user) => {
            let key = format!("u-{user}");
            aios_actors::agent::validate_name(&key)
                .map_err(|e| Problem::bad_request(format!("user: {e}")))?;
            (key, false, String::new())
        }
        None => {
            let earlier: Vec<String> = req.messages[..last_user]
                .iter()
                .filter(|m| m.role == "user" || m.role == "assistant")
                .map(|m| format!("{}: {}", m.role, text_of(&m.content)))
                .collect();
            let context = if earlier.is_empty() {
                String::new()
            } else {
                format!("Conversation so far:\n{}\n\n", earlier.join("\n"))
            };
            (
                format!("oai-{}", uuid::Uuid::new_v4().simple()),
                true,
                context,
            )
        }
    };
    let mut task = Task::new(format!("{context}{input}"));
    task.tenant = p.tenant.clone();
    Ok(Prepared {
        id: AgentId::new(full, key),
        model: req.model,
        task,
        stream: req.stream,
        ephemeral,
    })
}

async fn run(s: Shared, principal: &Principal, prepared: Prepared) -> Response {
    let Prepared {
        id,
        model,
        task,
        stream,
        ephemeral,
    } = prepared;
    let completion_id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = aios_actors::protocol::unix_ms() / 1000;
    if !stream {
        let result = s.rt.agent_system().ask(&id, task).await;
        if ephemeral {
            forget(&s, &id).await;
        }
        return match result {
            Ok(out) => axum::Json(json!({
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": out.text},
                    "finish_reason": "stop"
                }],
                "usage": {
                    "prompt_tokens": out.usage.input_tokens,
                    "completion_tokens": out.usage.output_tokens,
                    "total_tokens": out.usage.input_tokens + out.usage.output_tokens
                }
            }))
            .into_response(),
            // A tenant's quota is a 429 with `Retry-After`, a missing agent a 404, …
            Err(e) => oai_error(Problem::from(e)),
        };
    }
    let place = match super::streams::open(&s, principal) {
        Ok(place) => place,
        Err(problem) => return oai_error(problem),
    };
    // Subscribe before the task starts so no token is missed.
    let mut events = s.rt.agent_system().subscribe(&id);
    let (tx, rx) = tokio::sync::mpsc::channel::<Value>(256);
    let chunk = {
        let completion_id = completion_id.clone();
        let model = model.clone();
        move |delta: Value, finish: Option<&str>| {
            json!({
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
            })
        }
    };
    let state = s.clone();
    tokio::spawn(async move {
        let system = state.rt.agent_system().clone();
        let ask_id = id.clone();
        let mut ask = tokio::spawn(async move { system.ask(&ask_id, task).await });
        let _ = tx.send(chunk(json!({"role": "assistant"}), None)).await;
        let mut streamed = false;
        let result = loop {
            tokio::select! {
                r = &mut ask => break r.ok(),
                e = events.recv() => match e {
                    Ok(ev) => {
                        if let AgentEventKind::Token(t) = ev.kind {
                            streamed = true;
                            if tx.send(chunk(json!({"content": t}), None)).await.is_err() {
                                // The client went away: stop the task.
                                ask.abort();
                                break None;
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => {}
                },
            }
        };
        match result {
            Some(Ok(out)) => {
                if !streamed {
                    let _ = tx.send(chunk(json!({"content": out.text}), None)).await;
                }
                let _ = tx.send(chunk(json!({}), Some("stop"))).await;
            }
            Some(Err(e)) => {
                let _ = tx
                    .send(json!({"error": {"message": e.to_string(), "type": e.kind()}}))
                    .await;
            }
            None => {}
        }
        if ephemeral {
            forget(&state, &id).await;
        }
    });
    let body = stream::unfold((rx, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        match rx.recv().await {
            Some(v) => Some((
                Ok::<_, Infallible>(Event::default().data(v.to_string())),
                (rx, false),
            )),
            None => Some((Ok(Event::default().data("[DONE]")), (rx, true))),
        }
    });
    // Ends with the daemon's stop or the key's revocation, like every stream.
    let ended = super::streams::ended(&s, principal);
    let body = futures_util::StreamExt::take_until(body, async move {
        let _open = place;
        ended.await;
    });
    Sse::new(body)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn forget(s: &Shared, id: &AgentId) {
    if let Err(e) = s.rt.agent_system().forget(id).await {
        tracing::warn!(agent = %id.name, key = %id.key, error = %e, "forgetting a stateless chat instance");
    }
}

/// Which instance's events to follow.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// The session (instance key); the agent's main instance by default.
    pub session: Option<String>,
    /// The API key, for browsers (read by authentication; ignored here).
    #[serde(default)]
    pub access_token: Option<String>,
}

/// `GET /v1/agents/{name}/events`: tokens, tool calls and results, final answers and errors
/// of one agent instance, as they happen, over SSE (`event:` is the kind).
pub(crate) async fn agent_events(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    full: super::api::ScopedAgent,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, Problem> {
    let name = full.name();
    if s.rt.agent_system().registry().get(&full).is_none() {
        return Err(Problem::not_found(format!("agent {name:?} not found")));
    }
    let id = AgentId::new(full, q.session.unwrap_or_else(|| "main".into()));
    let place = super::streams::open(&s, &p)?;
    let rx = s.rt.agent_system().subscribe(&id);
    let body = stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(ev) => {
                let (kind, data) = match &ev.kind {
                    AgentEventKind::Token(t) => ("token", json!({"text": t})),
                    other => ("event", serde_json::to_value(other).unwrap_or(Value::Null)),
                };
                Event::default().event(kind).data(data.to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => Event::default()
                .event("lagged")
                .data(json!({"missed": n}).to_string()),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(event), rx))
    });
    // Ends when the daemon shuts down (the drain does not wait for followers), or when the
    // key is revoked or expires.
    let ended = super::streams::ended(&s, &p);
    let body = futures_util::StreamExt::take_until(body, async move {
        let _open = place;
        ended.await;
    });
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `GET /v1/agents/{name}/ws`: a WebSocket to one agent instance. The server sends every
/// event of the instance as a JSON text frame (`{"type": "token", "text": …}` or
/// `{"type": "event", "event": …}`); the client sends `{"content": "…"}` frames to talk to the
/// agent (the answer arrives as events, ending with a `Final` or `Error` event). Closed by
/// either side, or by the daemon on shutdown.
pub(crate) async fn agent_ws(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    full: super::api::ScopedAgent,
    ApiQuery(q): ApiQuery<EventsQuery>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Result<Response, Problem> {
    let name = full.name();
    if s.rt.agent_system().registry().get(&full).is_none() {
        return Err(Problem::not_found(format!("agent {name:?} not found")));
    }
    let session = q.session;
    if let Some(k) = &session {
        aios_actors::agent::validate_name(k)
            .map_err(|e| Problem::bad_request(format!("session: {e}")))?;
    }
    let id = AgentId::new(full, session.clone().unwrap_or_else(|| "main".into()));
    let place = super::streams::open(&s, &p)?;
    Ok(ws
        .max_message_size(256 * 1024)
        .on_upgrade(move |socket| async move {
            let _open = place;
            ws_session(s, p, id, session, socket).await;
        }))
}

/// Admits one message of an agent WebSocket as HTTP admits a request: the key's rate
/// limit, the tenant's daily request quota, and an audit entry (durable before the agent
/// starts). The refusal's reason otherwise.
async fn ws_admit(s: &Shared, p: &Principal, id: &AgentId) -> Result<(), String> {
    if s.config.insecure_no_auth {
        return Ok(());
    }
    if s.limiter.check_key(&p.key_id).is_err() {
        return Err(format!(
            "key {} is over its rate limit of {} requests/s",
            p.key_id, s.config.rate_limit.requests_per_s
        ));
    }
    s.quotas
        .count_request(&p.tenant)
        .await
        .map_err(|problem| problem.detail)?;
    let event = super::audit::AuditEvent {
        key_id: p.key_id.clone(),
        tenant: p.tenant.clone(),
        action: "WS /v1/agents/{name}/ws message".into(),
        target: format!("{}:{}", id.name, id.key),
        outcome: "ok".into(),
        ..super::audit::AuditEvent::default()
    };
    s.audit
        .append(event, true)
        .await
        .map(|_| ())
        .map_err(|e| format!("the message could not be audited: {e}"))
}

async fn ws_session(
    s: Shared,
    p: Principal,
    id: AgentId,
    session: Option<String>,
    mut socket: axum::extract::ws::WebSocket,
) {
    use axum::extract::ws::Message;
    let mut events = s.rt.agent_system().subscribe(&id);
    // One task at a time per socket: a second message while one runs is refused.
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    let ended = super::streams::ended(&s, &p);
    tokio::pin!(ended);
    loop {
        let frame = tokio::select! {
            () = &mut ended => {
                // Stopping, or the key was revoked: a task it started stops too.
                if let Some(t) = running.take() {
                    t.abort();
                }
                break;
            }
            e = events.recv() => match e {
                Ok(ev) => match ev.kind {
                    AgentEventKind::Token(t) => json!({"type": "token", "text": t}),
                    other => json!({"type": "event", "event": other}),
                },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    json!({"type": "lagged", "missed": n})
                }
                Err(_) => break,
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Text(text))) => {
                    let content = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v.get("content").and_then(Value::as_str).map(str::to_string));
                    match content {
                        None => json!({"type": "error", "message": "send {\"content\": \"…\"}"}),
                        Some(c) if c.trim().is_empty() => {
                            json!({"type": "error", "message": "content is empty"})
                        }
                        Some(_) if p.role < super::keys::Role::Operator => {
                            json!({"type": "error", "message": "sending messages needs the operator role"})
                        }
                        Some(c) => {
                            // A message is a request: the key's rate limit, the tenant's
                            // quotas and the audit log, as over HTTP.
                            if let Err(why) = ws_admit(&s, &p, &id).await {
                                let frame = json!({"type": "error", "message": why});
                                if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                            if running.as_ref().is_some_and(|t| !t.is_finished()) {
                                let frame = json!({"type": "error", "message": "the agent is still answering the previous message"});
                                if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                            if let Err(problem) = s.quotas.check_llm(&p.tenant) {
                                let frame = json!({"type": "error", "message": problem.detail});
                                if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                            let mut task = Task::new(c);
                            task.tenant = p.tenant.clone();
                            task.session = session.clone();
                            let system = s.rt.agent_system().clone();
                            let id = id.clone();
                            // The answer reaches the socket as events (Final or Error).
                            running = Some(tokio::spawn(async move {
                                if let Err(e) = system.ask(&id, task).await {
                                    tracing::debug!(error = %e, "websocket task failed");
                                }
                            }));
                            continue;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
        };
        if socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}
