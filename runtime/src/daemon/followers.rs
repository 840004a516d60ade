//! Background tasks that follow the node's events: supervision events become metrics, recent
//! errors and `actor.restarted` webhooks; tool calls refused by the grants go to the audit
//! log; finished runs become `run.completed` webhooks.

use tokio_util::sync::CancellationToken;

use super::{Shared, audit, keys};

/// Starts the three followers; each ends with `stop`.
pub(super) fn spawn(state: Shared, stop: CancellationToken) {
    follow_supervision(state.clone(), stop.clone());
    follow_denials(state.clone(), stop.clone());
    follow_runs(state, stop);
}

/// Counts restarts and escalations, lists actor failures among the recent errors, and emits
/// `actor.restarted`.
fn follow_supervision(state: Shared, stop: CancellationToken) {
    use aios_supervisor::{EventKind, ExitReason};
    let mut events = state.rt.events();
    let (s, token) = (state, stop);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                () = token.cancelled() => break,
                e = events.recv() => e,
            };
            let e = match event {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    metrics::counter!("aios_actor_events_lagged_total").increment(n);
                    continue;
                }
                Err(_) => break,
            };
            let child = e.child.clone().unwrap_or_default();
            let kind = match &e.kind {
                EventKind::ChildRestarted { .. } => "restarted",
                EventKind::ChildStartFailed { error } => {
                    s.record_error("", &child, format!("actor failed to start: {error}"));
                    "start_failed"
                }
                EventKind::ChildExited {
                    reason: ExitReason::Failed(why) | ExitReason::Other(why),
                } => {
                    s.record_error("", &child, format!("actor failed: {why}"));
                    "failed"
                }
                EventKind::IntensityExceeded { .. } => "intensity_exceeded",
                EventKind::Escalated { reason } => {
                    s.record_error("", &e.supervisor, format!("supervisor escalated: {reason}"));
                    "escalated"
                }
                _ => continue,
            };
            metrics::counter!("aios_actor_events_total", "kind" => kind, "supervisor" => e.supervisor.clone())
                .increment(1);
            if let EventKind::ChildRestarted { generation } = &e.kind {
                s.webhooks
                    .emit(
                        keys::OPERATOR_TENANT,
                        "actor.restarted",
                        serde_json::json!({
                            "supervisor": e.supervisor,
                            "child": e.child,
                            "generation": generation,
                        }),
                    )
                    .await;
            }
        }
    });
}

/// Audits the tool calls the grants refused.
fn follow_denials(state: Shared, stop: CancellationToken) {
    let mut denials = state.rt.tool_service().subscribe_denials();
    let (s, token) = (state, stop);
    tokio::spawn(async move {
        loop {
            let denial = tokio::select! {
                () = token.cancelled() => break,
                d = denials.recv() => d,
            };
            let d = match denial {
                Ok(d) => d,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::error!(
                        missed = n,
                        "tool denials not audited: the audit log fell behind"
                    );
                    continue;
                }
                Err(_) => break,
            };
            let event = audit::AuditEvent {
                tenant: d.tenant,
                action: "tool_denied".into(),
                target: d.tool,
                outcome: "denied".into(),
                detail: format!("agent {}: {}", d.agent, d.reason),
                ..audit::AuditEvent::default()
            };
            if let Err(e) = s.audit.append(event, false).await {
                tracing::error!(error = %e, "auditing a tool denial");
            }
        }
    });
}

/// Emits `run.completed` to the run's tenant when a run finishes.
fn follow_runs(state: Shared, stop: CancellationToken) {
    let mut runs = state.rt.orchestrator().subscribe();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => break,
                e = runs.recv() => e,
            };
            let e = match event {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            };
            let aios_actors::orchestration::RunEventKind::Finished { status, error } = &e.kind
            else {
                continue;
            };
            let Ok(Some(run)) = state.rt.orchestrator().get(&e.run).await else {
                continue;
            };
            state
                .webhooks
                .emit(
                    &run.spec.tenant,
                    "run.completed",
                    serde_json::json!({"run": e.run, "status": status, "error": error}),
                )
                .await;
        }
    });
}
