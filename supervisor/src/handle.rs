//! [`ActorHandle`]: the stable, typed handle to a supervised actor, with a bounded mailbox.
//!
//! A ractor `ActorRef` dies with its actor; a restart makes a new one. An `ActorHandle` follows
//! the child across restarts: the supervisor installs each new incarnation into it and marks it
//! down when the incarnation exits. Sends while the child is down fail at once with
//! [`SendError::Unavailable`] rather than queueing for an actor that may never come back.
//!
//! The mailbox bound is ours (ractor's mailboxes are unbounded): each incarnation carries a
//! counter, incremented by a send and decremented when the actor takes the message. A send that
//! would exceed [`ActorHandle::mailbox_len_max`] returns [`SendError::MailboxFull`] with the
//! message, and nothing is queued.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use ractor::{ActorCell, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Default bound of a worker's mailbox.
pub const MAILBOX_LEN_MAX_DEFAULT: usize = 10_000;

/// What travels in a supervised actor's ractor mailbox: user messages, counted against the
/// bound, and the runtime's own messages, which are not (so a full mailbox never loses a
/// restart or a snapshot tick).
pub(crate) enum Envelope<M> {
    User(M),
    System(SystemMsg),
}

/// The runtime's own messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SystemMsg {
    /// Take a snapshot if the state changed (interval policy).
    SnapshotTick,
    /// A backoff delay has passed: restart the children waiting with this token.
    RestartDue(u64),
}

// Without ractor's `cluster` feature a blanket impl covers envelopes; with it, every message
// type implements `Message` explicitly. Envelopes are local-only: the default methods refuse
// serialization.
#[cfg(feature = "cluster")]
impl<M: Send + 'static> ractor::Message for Envelope<M> {}

/// A send that did not happen; the message comes back.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum SendError<M> {
    /// The mailbox holds its maximum; nothing was queued.
    #[error("mailbox full: {len_max} messages queued")]
    MailboxFull {
        /// The message.
        msg: M,
        /// The bound that was hit.
        len_max: usize,
    },
    /// The actor is not running (restarting, stopped, or its supervisor is gone).
    #[error("actor `{path}` is not running")]
    Unavailable {
        /// The message.
        msg: M,
        /// The actor's path.
        path: String,
    },
}

impl<M> SendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            Self::MailboxFull { msg, .. } | Self::Unavailable { msg, .. } => msg,
        }
    }

    /// Whether the mailbox was full (as opposed to the actor being down).
    pub fn is_mailbox_full(&self) -> bool {
        matches!(self, Self::MailboxFull { .. })
    }
}

impl<M> std::fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MailboxFull { len_max, .. } => f
                .debug_struct("MailboxFull")
                .field("len_max", len_max)
                .finish_non_exhaustive(),
            Self::Unavailable { path, .. } => f
                .debug_struct("Unavailable")
                .field("path", path)
                .finish_non_exhaustive(),
        }
    }
}

/// A request-reply that did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CallError {
    /// The mailbox holds its maximum; the request was not queued.
    #[error("mailbox of `{path}` is full ({len_max} messages)")]
    MailboxFull {
        /// The actor's path.
        path: String,
        /// The bound that was hit.
        len_max: usize,
    },
    /// The actor is not running.
    #[error("actor `{path}` is not running")]
    Unavailable {
        /// The actor's path.
        path: String,
    },
    /// No reply within the timeout. The request may still be handled later.
    #[error("no reply from `{path}` within {timeout_ms} ms")]
    Timeout {
        /// The actor's path.
        path: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The actor stopped, failed, or dropped the reply port without answering.
    #[error("`{path}` exited or dropped the request without replying")]
    Dropped {
        /// The actor's path.
        path: String,
    },
}

/// A counter on its own cache line, so the sender's and the receiver's writes do not contend.
#[repr(align(64))]
#[derive(Default)]
struct Padded(AtomicU64);

/// One incarnation's mailbox depth, as two monotonic counters: `sent` (written by senders) and
/// `taken` (written only by the actor). Depth = sent − taken. Splitting them keeps the hot
/// path to one uncontended read-modify-write per side.
#[derive(Default)]
pub(crate) struct MailboxCounter {
    sent: Padded,
    taken: Padded,
}

impl MailboxCounter {
    /// Reserves a place; `false` (and nothing reserved) when `len_max` are queued.
    fn try_reserve(&self, len_max: usize) -> bool {
        let sent = self.sent.0.fetch_add(1, Ordering::Relaxed) + 1;
        let taken = self.taken.0.load(Ordering::Relaxed);
        if sent.saturating_sub(taken) > len_max as u64 {
            self.sent.0.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Gives back a place reserved by a send that did not happen.
    fn release(&self) {
        self.sent.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Called by the actor (its only writer of `taken`) for each user message it takes.
    pub(crate) fn take_one(&self) {
        let taken = self.taken.0.load(Ordering::Relaxed);
        self.taken.0.store(taken + 1, Ordering::Relaxed);
    }

    pub(crate) fn len(&self) -> usize {
        let taken = self.taken.0.load(Ordering::Relaxed);
        let sent = self.sent.0.load(Ordering::Relaxed);
        usize::try_from(sent.saturating_sub(taken)).unwrap_or(usize::MAX)
    }
}

pub(crate) struct Incarnation<M> {
    pub(crate) actor: ActorRef<Envelope<M>>,
    pub(crate) mailbox: Arc<MailboxCounter>,
    pub(crate) generation: u64,
}

pub(crate) struct HandleShared<M> {
    id: String,
    path: OnceLock<String>,
    mailbox_len_max: usize,
    current: ArcSwapOption<Incarnation<M>>,
    /// The generation of the last incarnation installed: generations stay monotonic even when
    /// the supervisor itself restarts and rebuilds its child table.
    last_generation: AtomicU64,
    /// Woken on every install and every mark-down.
    changed: Notify,
}

/// The type-erased side of a handle that supervisors and the registry use.
pub(crate) trait ErasedHandle: Send + Sync {
    fn mark_down(&self);
    fn set_path(&self, path: &str);
    fn mailbox_len(&self) -> usize;
    fn last_generation(&self) -> u64;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<M: Send + 'static> ErasedHandle for HandleShared<M> {
    fn mark_down(&self) {
        if self.current.swap(None).is_some() {
            self.changed.notify_waiters();
        }
    }

    fn set_path(&self, path: &str) {
        // A handle belongs to one position in one tree; the first path set is the only one.
        let _ = self.path.set(path.to_owned());
    }

    fn mailbox_len(&self) -> usize {
        self.current.load().as_ref().map_or(0, |i| i.mailbox.len())
    }

    fn last_generation(&self) -> u64 {
        self.last_generation.load(Ordering::Relaxed)
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// A stable, typed handle to a supervised actor. Cheap to clone; follows the actor across
/// restarts.
pub struct ActorHandle<M> {
    shared: Arc<HandleShared<M>>,
}

impl<M> Clone for ActorHandle<M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<M: Send + 'static> std::fmt::Debug for ActorHandle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorHandle")
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

impl<M: Send + 'static> ActorHandle<M> {
    pub(crate) fn new(id: &str, mailbox_len_max: usize) -> Self {
        Self {
            shared: Arc::new(HandleShared {
                id: id.to_owned(),
                path: OnceLock::new(),
                mailbox_len_max,
                current: ArcSwapOption::empty(),
                last_generation: AtomicU64::new(0),
                changed: Notify::new(),
            }),
        }
    }

    pub(crate) fn from_any(any: Arc<dyn Any + Send + Sync>) -> Option<Self> {
        any.downcast::<HandleShared<M>>()
            .ok()
            .map(|shared| Self { shared })
    }

    pub(crate) fn erased(&self) -> Arc<dyn ErasedHandle> {
        self.shared.clone()
    }

    /// Makes `actor` the current incarnation.
    pub(crate) fn install(
        &self,
        actor: ActorRef<Envelope<M>>,
        mailbox: Arc<MailboxCounter>,
        generation: u64,
    ) {
        self.shared
            .last_generation
            .fetch_max(generation, Ordering::Relaxed);
        self.shared.current.store(Some(Arc::new(Incarnation {
            actor,
            mailbox,
            generation,
        })));
        self.shared.changed.notify_waiters();
    }

    /// Sends `msg` without waiting.
    ///
    /// # Errors
    /// [`SendError::MailboxFull`] when the mailbox is at its bound, [`SendError::Unavailable`]
    /// when the actor is not running; both hand the message back.
    pub fn cast(&self, msg: M) -> Result<(), SendError<M>> {
        let guard = self.shared.current.load();
        let Some(inc) = guard.as_ref() else {
            return Err(SendError::Unavailable {
                msg,
                path: self.path(),
            });
        };
        let len_max = self.shared.mailbox_len_max;
        if !inc.mailbox.try_reserve(len_max) {
            return Err(SendError::MailboxFull { msg, len_max });
        }
        match inc.actor.send_message(Envelope::User(msg)) {
            Ok(()) => Ok(()),
            Err(e) => {
                inc.mailbox.release();
                match e {
                    ractor::MessagingErr::SendErr(Envelope::User(msg)) => {
                        Err(SendError::Unavailable {
                            msg,
                            path: self.path(),
                        })
                    }
                    // `send_message` hands back exactly the envelope it was given.
                    _ => unreachable!("ractor returned a different envelope than it was sent"),
                }
            }
        }
    }

    /// Sends a request built around a reply port and waits for the reply, at most `timeout`.
    ///
    /// # Errors
    /// [`CallError`]: mailbox full, not running, timeout, or no reply because the actor exited.
    pub async fn call<R: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<R>) -> M,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let (tx, rx) = ractor::concurrency::oneshot();
        self.cast(build(tx.into())).map_err(|e| match e {
            SendError::MailboxFull { len_max, .. } => CallError::MailboxFull {
                path: self.path(),
                len_max,
            },
            SendError::Unavailable { path, .. } => CallError::Unavailable { path },
        })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(CallError::Dropped { path: self.path() }),
            Err(_) => Err(CallError::Timeout {
                path: self.path(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// Messages queued and not yet taken by the current incarnation.
    pub fn mailbox_len(&self) -> usize {
        self.shared.mailbox_len()
    }

    /// The mailbox bound.
    pub fn mailbox_len_max(&self) -> usize {
        self.shared.mailbox_len_max
    }

    /// The current incarnation's generation (1 for the first start, +1 per restart), or `None`
    /// while the actor is down.
    pub fn generation(&self) -> Option<u64> {
        self.shared.current.load().as_ref().map(|i| i.generation)
    }

    /// Whether an incarnation is installed.
    pub fn is_running(&self) -> bool {
        self.shared.current.load().is_some()
    }

    /// Waits until an incarnation of generation `min_generation` or later is running; returns
    /// its generation. Use it after a crash to wait for the restart.
    ///
    /// # Errors
    /// [`CallError::Timeout`] when none comes within `timeout`.
    pub async fn wait_for_generation(
        &self,
        min_generation: u64,
        timeout: Duration,
    ) -> Result<u64, CallError> {
        let wait = async {
            loop {
                // Register interest before checking, so an install between the check and the
                // await is not missed.
                let changed = self.shared.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if let Some(g) = self.generation().filter(|g| *g >= min_generation) {
                    return g;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| CallError::Timeout {
                path: self.path(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })
    }

    /// The current incarnation's ractor cell (for linking or low-level ractor APIs).
    pub fn actor_cell(&self) -> Option<ActorCell> {
        self.shared
            .current
            .load()
            .as_ref()
            .map(|i| i.actor.get_cell())
    }

    /// The child id given in its spec.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The path in the tree (`agents/echo`), or the id before the child is first started.
    pub fn path(&self) -> String {
        self.shared
            .path
            .get()
            .cloned()
            .unwrap_or_else(|| self.shared.id.clone())
    }
}
