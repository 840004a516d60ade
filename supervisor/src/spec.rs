//! Child specifications and supervisor flags, in OTP's vocabulary.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::ActorCell;
use serde::{Deserialize, Serialize};

use crate::event::EventBus;
use crate::handle::ErasedHandle;
use crate::registry::Registry;
use crate::snapshot::{Persistence, Restored, SnapshotError, Snapshots, StoreError};

/// Longest child id accepted, in bytes.
pub const CHILD_ID_LEN_MAX: usize = 256;

/// When a child is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Restart {
    /// Always restarted, whatever the exit reason.
    Permanent,
    /// Restarted only after an abnormal exit (failure, kill, an unknown stop reason).
    Transient,
    /// Never restarted; removed from the supervisor when it exits.
    Temporary,
}

/// How a child is stopped by its supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shutdown {
    /// Killed at once: its handler is interrupted and its stop hook does not run.
    BrutalKill,
    /// Asked to stop (the current message finishes, the stop hook runs); killed if it has not
    /// exited within the duration.
    Timeout(Duration),
    /// Asked to stop and waited for without limit: the right choice for a child supervisor,
    /// whose own children's timeouts bound its shutdown.
    Infinity,
}

/// Whether a child is a worker or a supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChildKind {
    /// A worker.
    Worker,
    /// A nested supervisor.
    Supervisor,
}

/// Which children a supervisor restarts when one must be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Only the child that exited.
    OneForOne,
    /// All children: the others are stopped in reverse start order, then all start in order.
    OneForAll,
    /// The child that exited and every child started after it.
    RestForOne,
}

/// Restart intensity: at most `max_restarts` restarts within `period`; one more and the
/// supervisor stops its children and fails, escalating to its parent. OTP's default is one
/// restart in five seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intensity {
    /// Restarts allowed within `period`.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Self {
            max_restarts: 1,
            period: Duration::from_secs(5),
        }
    }
}

/// Delay before a restart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub enum Backoff {
    /// Restart at once (OTP's behaviour).
    #[default]
    None,
    /// `initial × 2^(n−1)` for the child's `n`th restart within the intensity period, capped
    /// at `max`, then shortened by up to `jitter` (a fraction in `0.0..=1.0`) at random, so
    /// siblings do not restart in lockstep.
    Exponential {
        /// Delay of the first restart.
        initial: Duration,
        /// Longest delay.
        max: Duration,
        /// Random fraction taken off each delay.
        jitter: f64,
    },
}

impl Backoff {
    /// The delay before the `nth` restart (1-based) of a child within the intensity period.
    pub fn delay(&self, nth: u32, rng: &mut fastrand::Rng) -> Duration {
        match *self {
            Self::None => Duration::ZERO,
            Self::Exponential {
                initial,
                max,
                jitter,
            } => {
                let shift = nth.saturating_sub(1).min(30);
                let base = initial.saturating_mul(1u32 << shift).min(max);
                let cut = jitter.clamp(0.0, 1.0) * rng.f64();
                base.mul_f64(1.0 - cut)
            }
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        match *self {
            Self::None => Ok(()),
            Self::Exponential {
                initial,
                max,
                jitter,
            } => {
                if initial > max {
                    return Err(format!(
                        "backoff initial delay {initial:?} exceeds its max {max:?}"
                    ));
                }
                if !(0.0..=1.0).contains(&jitter) {
                    return Err(format!(
                        "backoff jitter must be within 0.0..=1.0, got {jitter}"
                    ));
                }
                Ok(())
            }
        }
    }
}

/// What a tree shares: the snapshot store, the event stream and the name registry.
#[derive(Clone, Debug, Default)]
pub struct TreeEnv {
    pub(crate) snapshots: Option<Snapshots>,
    pub(crate) events: EventBus,
    pub(crate) registry: Registry,
    /// Snapshot key → path of the child that owns it: two children never share a key.
    pub(crate) keys: Arc<DashMap<String, String, rustc_hash::FxBuildHasher>>,
}

impl TreeEnv {
    /// An environment with the given store (or none: persistent children then fail to start).
    pub fn new(snapshots: Option<Snapshots>) -> Self {
        Self {
            snapshots,
            events: EventBus::new(),
            registry: Registry::default(),
            keys: Arc::default(),
        }
    }

    /// The snapshot store.
    pub fn snapshots(&self) -> Option<&Snapshots> {
        self.snapshots.as_ref()
    }

    /// The event stream.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The registry of every child by path.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// What a start function receives.
#[derive(Debug)]
pub struct StartArgs {
    /// The supervisor: the new actor must be spawned linked to it (`spawn_linked`).
    pub supervisor: ActorCell,
    /// The verified snapshot, for a persistent child that has one.
    pub restored: Option<Restored>,
    /// The generation this start creates (1 on the first start).
    pub generation: u64,
    /// The child's path in the tree.
    pub path: String,
    /// The tree's shared environment.
    pub env: TreeEnv,
}

/// Why a start function failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StartError {
    /// The actor could not be spawned, or its init returned an error or panicked.
    #[error("spawn failed: {0}")]
    Spawn(String),
    /// The snapshot could not be used.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The start function returned an actor that is not linked to the supervisor.
    #[error("the start function did not link the actor to its supervisor (use spawn_linked)")]
    NotLinked,
}

impl StartError {
    /// The node that holds the lease on the actor's snapshot key, when the actor did not start
    /// because it is active on that node (see [`crate::snapshot::SnapshotStore::acquire`]).
    pub fn held_by(&self) -> Option<&str> {
        match self {
            Self::Snapshot(e) => e.held_by(),
            _ => None,
        }
    }

    /// How long the other node's lease has left, when [`StartError::held_by`] names one: past
    /// it, a node that stopped renewing (crashed, paused, cut off) has lost the actor.
    pub fn lease_expires_in(&self) -> Option<Duration> {
        match self {
            Self::Snapshot(SnapshotError::Store {
                source: StoreError::Held { expires_in_ms, .. },
                ..
            }) => Some(Duration::from_millis(*expires_in_ms)),
            _ => None,
        }
    }
}

type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, StartError>> + Send>>;
pub(crate) type StartFn = Arc<dyn Fn(StartArgs) -> StartFuture + Send + Sync>;

/// A child specification: an id, a start function, and how to restart and stop the child.
///
/// Build typed ones with [`crate::WorkerSpec`] and [`crate::SupervisorSpec`]; use
/// [`ChildSpec::from_fn`] to supervise any ractor actor.
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) id: Arc<str>,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Shutdown,
    pub(crate) kind: ChildKind,
    pub(crate) persistence: Option<Persistence>,
    pub(crate) start: StartFn,
    pub(crate) handle: Option<Arc<dyn ErasedHandle>>,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("kind", &self.kind)
            .field("persistence", &self.persistence)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A child started by `start`, which must spawn the actor linked to `args.supervisor` and
    /// return its cell. Defaults: `Permanent`, `Timeout(5 s)` (or `Infinity` for a
    /// supervisor), no persistence.
    pub fn from_fn<F, Fut>(id: impl Into<String>, kind: ChildKind, start: F) -> Self
    where
        F: Fn(StartArgs) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, StartError>> + Send + 'static,
    {
        Self {
            id: Arc::from(id.into()),
            restart: Restart::Permanent,
            shutdown: default_shutdown(kind),
            kind,
            persistence: None,
            start: Arc::new(move |args| Box::pin(start(args))),
            handle: None,
        }
    }

    /// Sets the restart type.
    #[must_use]
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the shutdown.
    #[must_use]
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Declares the child persistent: its snapshot is loaded, verified and passed to the start
    /// function as [`StartArgs::restored`], quarantined per `persistence.on_corrupt`, and
    /// deleted with the child.
    #[must_use]
    pub fn persistence(mut self, persistence: Persistence) -> Self {
        self.persistence = Some(persistence);
        self
    }

    /// Runs this spec's start function: for wrapping one spec's start in another's.
    ///
    /// # Errors
    /// The start function's error.
    pub async fn start_with(&self, args: StartArgs) -> Result<ActorCell, StartError> {
        (self.start)(args).await
    }

    /// The child id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The restart type.
    pub fn restart_type(&self) -> Restart {
        self.restart
    }

    /// Checks the id and the persistence settings.
    ///
    /// # Errors
    /// A sentence naming what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > CHILD_ID_LEN_MAX {
            return Err(format!(
                "child id must be 1..={CHILD_ID_LEN_MAX} bytes, got {} bytes",
                self.id.len()
            ));
        }
        if self.id.contains('/') {
            return Err(format!(
                "child id `{}` contains `/`, which separates path segments",
                self.id
            ));
        }
        if let Some(p) = &self.persistence {
            p.validate()
                .map_err(|e| format!("child `{}`: {e}", self.id))?;
        }
        Ok(())
    }
}

pub(crate) fn default_shutdown(kind: ChildKind) -> Shutdown {
    match kind {
        ChildKind::Worker => Shutdown::Timeout(Duration::from_secs(5)),
        ChildKind::Supervisor => Shutdown::Infinity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_caps_and_jitters_down() {
        let b = Backoff::Exponential {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            jitter: 0.0,
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let d: Vec<u128> = (1..=5).map(|n| b.delay(n, &mut rng).as_millis()).collect();
        assert_eq!(d, vec![10, 20, 40, 50, 50]);

        let j = Backoff::Exponential {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(100),
            jitter: 0.5,
        };
        for _ in 0..100 {
            let d = j.delay(1, &mut rng);
            assert!(
                d <= Duration::from_millis(100) && d >= Duration::from_millis(50),
                "{d:?}"
            );
        }
        assert_eq!(Backoff::None.delay(3, &mut rng), Duration::ZERO);
    }

    #[test]
    fn backoff_validation() {
        let bad = Backoff::Exponential {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(1),
            jitter: 0.1,
        };
        assert!(bad.validate().unwrap_err().contains("exceeds"));
    }
}
