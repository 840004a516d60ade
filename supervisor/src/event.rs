//! The supervision event stream: every start, exit, restart, backoff, escalation and snapshot
//! quarantine, as a `tracing` event and on a bounded broadcast channel that metrics, the audit
//! log and the UI subscribe to.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events kept for a slow subscriber before it starts missing some (it then receives
/// `RecvError::Lagged(n)` and continues with the newest).
pub const EVENT_BUS_CAPACITY: usize = 4096;

/// Why a child exited, as its supervisor saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExitReason {
    /// It stopped by itself, without error (a normal exit).
    Normal,
    /// It was stopped by its supervisor (terminate_child, a sibling's restart, shutdown).
    Shutdown,
    /// It was killed (a shutdown timeout passed, or `BrutalKill`).
    Killed,
    /// It panicked or a handler returned an error.
    Failed(String),
    /// It stopped with another reason: treated as abnormal.
    Other(String),
}

impl ExitReason {
    /// Normal and Shutdown exits do not restart `Transient` children.
    pub fn is_normal(&self) -> bool {
        matches!(self, Self::Normal | Self::Shutdown)
    }

    pub(crate) fn from_stop_reason(reason: Option<&str>) -> Self {
        match reason {
            None | Some("normal") | Some("Drained") => Self::Normal,
            Some(crate::supervisor::SHUTDOWN_REASON) => Self::Shutdown,
            Some("killed") => Self::Killed,
            Some(other) => Self::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Normal => f.write_str("normal"),
            Self::Shutdown => f.write_str("shutdown"),
            Self::Killed => f.write_str("killed"),
            Self::Failed(e) => write!(f, "failed: {e}"),
            Self::Other(r) => write!(f, "stopped: {r}"),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// A child started (first start, restart, or restart_child).
    ChildStarted {
        /// Its generation: 1 on the first start, +1 on each restart.
        generation: u64,
    },
    /// A child's start failed.
    ChildStartFailed {
        /// Why.
        error: String,
    },
    /// A child stopped on this node because another node of the cluster holds the lease on
    /// its snapshot key: it is active there now.
    ChildMoved {
        /// The node holding the lease.
        holder: String,
    },
    /// A child exited.
    ChildExited {
        /// Why.
        reason: ExitReason,
    },
    /// A child will be restarted after a backoff delay.
    RestartScheduled {
        /// The delay.
        delay_ms: u64,
    },
    /// A child was restarted (after `ChildStarted` of the new incarnation).
    ChildRestarted {
        /// The new generation.
        generation: u64,
    },
    /// A child was terminated through the supervisor API.
    ChildTerminated,
    /// A child spec was deleted (and its snapshot with it).
    ChildDeleted,
    /// More than `max_restarts` restarts within `period`: the supervisor gives up.
    IntensityExceeded {
        /// The limit.
        max_restarts: u32,
        /// The window.
        period_ms: u64,
    },
    /// The supervisor stopped its children and failed, so its parent handles the failure.
    Escalated {
        /// Why.
        reason: String,
    },
    /// A snapshot failed verification or decoding and was moved to the quarantine.
    SnapshotQuarantined {
        /// The snapshot key.
        key: String,
        /// What was wrong.
        reason: String,
        /// The quarantine record id.
        quarantine_id: String,
        /// Whether the child starts fresh (`true`) or fails (`false`).
        start_fresh: bool,
    },
    /// A supervisor finished its orderly shutdown.
    SupervisorStopped,
}

/// One supervision event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisionEvent {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The path of the supervisor that reports it (`""` for the root).
    pub supervisor: String,
    /// The path of the child concerned, if any.
    pub child: Option<String>,
    /// What happened.
    pub kind: EventKind,
}

/// The broadcast side of the event stream, shared by every supervisor of a tree.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<SupervisionEvent>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with [`EVENT_BUS_CAPACITY`].
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(EVENT_BUS_CAPACITY);
        Self { tx }
    }

    /// A new subscriber that sees events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<SupervisionEvent>> {
        self.tx.subscribe()
    }

    /// Logs the event and hands it to the current subscribers.
    pub fn publish(&self, supervisor: &str, child: Option<&str>, kind: EventKind) {
        trace(supervisor, child, &kind);
        if self.tx.receiver_count() == 0 {
            return;
        }
        let event = SupervisionEvent {
            at_ms: crate::snapshot::unix_ms(),
            supervisor: supervisor.to_owned(),
            child: child.map(str::to_owned),
            kind,
        };
        // No subscriber left between the check and the send is fine: nobody to tell.
        let _ = self.tx.send(Arc::new(event));
    }
}

fn trace(supervisor: &str, child: Option<&str>, kind: &EventKind) {
    let child = child.unwrap_or("");
    match kind {
        EventKind::ChildStarted { generation } => {
            tracing::debug!(supervisor, child, generation, "child started");
        }
        EventKind::ChildRestarted { generation } => {
            tracing::info!(supervisor, child, generation, "child restarted");
        }
        EventKind::ChildExited { reason } if reason.is_normal() => {
            tracing::debug!(supervisor, child, %reason, "child exited");
        }
        EventKind::ChildExited { reason } => {
            tracing::warn!(supervisor, child, %reason, "child exited abnormally");
        }
        EventKind::ChildStartFailed { error } => {
            tracing::error!(supervisor, child, %error, "child failed to start");
        }
        EventKind::ChildMoved { holder } => {
            tracing::warn!(supervisor, child, %holder, "child is active on another node now");
        }
        EventKind::RestartScheduled { delay_ms } => {
            tracing::info!(
                supervisor,
                child,
                delay_ms,
                "restart scheduled after backoff"
            );
        }
        EventKind::IntensityExceeded {
            max_restarts,
            period_ms,
        } => {
            tracing::error!(
                supervisor,
                max_restarts,
                period_ms,
                "restart intensity exceeded"
            );
        }
        EventKind::Escalated { reason } => {
            tracing::error!(supervisor, %reason, "supervisor escalates to its parent");
        }
        EventKind::SnapshotQuarantined {
            key,
            reason,
            quarantine_id,
            start_fresh,
        } => {
            tracing::error!(supervisor, child, key, %reason, quarantine_id, start_fresh, "snapshot quarantined");
        }
        other => tracing::debug!(supervisor, child, event = ?other, "supervision event"),
    }
}
