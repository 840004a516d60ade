//! What happens to a message that arrives while an agent instance is working on another:
//! the per-agent [`OnBusy`] policy and the bounded admission queue ([`RunQueue`]) that
//! applies it in front of the agent's mailbox.
//!
//! Every task admitted to an instance holds a [`Ticket`] until it is answered. The queue is
//! the list of tickets in admission order: the first is running (or about to), the others
//! wait in the actor's mailbox. Admission decides by the policy:
//! - `reject`: refused while any ticket is held;
//! - `enqueue`: admitted behind the others, unless `queue_max` are already waiting;
//! - `interrupt` and `rollback`: every ticket ahead is cancelled (its task stops at its next
//!   safe point: the LLM call in flight, or between steps and tool calls), then admitted.
//!   The agent keeps what an interrupted task did (`interrupt`) or drops it from the
//!   conversation (`rollback`); see [`super::actor`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::actor::AgentError;

/// The highest `queue_max` an agent may set.
pub const BUSY_QUEUE_LEN_MAX: u32 = 1024;

/// The policy for a message that arrives while the agent works on another.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BusyPolicy {
    /// Refuse it with a clear error (HTTP 409).
    Reject,
    /// Process it after the current one, in order (the default).
    #[default]
    Enqueue,
    /// Stop the current task at its next safe point, keep what it did in the conversation,
    /// and process the new message.
    Interrupt,
    /// Stop the current task and drop what it did from the conversation, then process the
    /// new message. Side effects outside the conversation (tool calls already made, cost
    /// already spent) are not undone.
    Rollback,
}

impl BusyPolicy {
    /// The policy's name as written in definitions.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Enqueue => "enqueue",
            Self::Interrupt => "interrupt",
            Self::Rollback => "rollback",
        }
    }
}

/// An agent's busy-message settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnBusy {
    /// The policy (default `enqueue`).
    #[serde(default)]
    pub policy: BusyPolicy,
    /// Messages that may wait behind the running one (1..=[`BUSY_QUEUE_LEN_MAX`], default
    /// 16); one more is refused with a clear error (HTTP 429).
    #[serde(default = "default_queue_max")]
    pub queue_max: u32,
}

fn default_queue_max() -> u32 {
    16
}

impl Default for OnBusy {
    fn default() -> Self {
        Self {
            policy: BusyPolicy::default(),
            queue_max: default_queue_max(),
        }
    }
}

impl OnBusy {
    /// Checks the bounds.
    ///
    /// # Errors
    /// Names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=BUSY_QUEUE_LEN_MAX).contains(&self.queue_max) {
            return Err(format!(
                "on_busy.queue_max must be 1..={BUSY_QUEUE_LEN_MAX}, got {}",
                self.queue_max
            ));
        }
        Ok(())
    }
}

struct Entry {
    seq: u64,
    cancel: CancellationToken,
    interrupted: Arc<AtomicBool>,
}

#[derive(Default)]
struct Queue {
    next_seq: u64,
    entries: VecDeque<Entry>,
}

/// The tasks admitted to one agent instance, in admission order.
#[derive(Default)]
pub(crate) struct RunQueue {
    inner: Arc<std::sync::Mutex<Queue>>,
}

/// A task's place in a [`RunQueue`]; leaves the queue when dropped.
pub(crate) struct Ticket {
    queue: Arc<std::sync::Mutex<Queue>>,
    seq: u64,
    interrupted: Arc<AtomicBool>,
}

impl Ticket {
    /// True when a newer message cancelled this task (policy `interrupt` or `rollback`).
    pub(crate) fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Acquire)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut q = lock(&self.queue);
        q.entries.retain(|e| e.seq != self.seq);
    }
}

/// The queue's lock. A panic while it is held cannot leave the queue inconsistent (every
/// critical section is a single push, retain or scan), so a poisoned lock is used as is.
fn lock(m: &std::sync::Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RunQueue {
    /// Tasks admitted and not yet answered (running and waiting).
    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }

    /// Admits a task of agent `agent` whose cancellation token is `cancel`, by `on_busy`.
    ///
    /// # Errors
    /// [`AgentError::Busy`] when the policy refuses it or the queue is full.
    pub(crate) fn admit(
        &self,
        agent: &str,
        on_busy: &OnBusy,
        cancel: CancellationToken,
    ) -> Result<Ticket, AgentError> {
        let mut q = lock(&self.inner);
        let ahead = q.entries.len();
        match on_busy.policy {
            BusyPolicy::Reject if ahead > 0 => {
                return Err(AgentError::Busy(format!(
                    "agent {agent:?} is working on another message (its on_busy policy is reject)"
                )));
            }
            BusyPolicy::Interrupt | BusyPolicy::Rollback => {
                for e in &q.entries {
                    e.interrupted.store(true, Ordering::Release);
                    e.cancel.cancel();
                }
            }
            BusyPolicy::Reject | BusyPolicy::Enqueue => {}
        }
        // The running task plus `queue_max` waiting ones.
        if ahead > on_busy.queue_max as usize {
            return Err(AgentError::QueueFull(format!(
                "agent {agent:?} has {} messages waiting, at most {} (on_busy.queue_max)",
                ahead - 1,
                on_busy.queue_max
            )));
        }
        let seq = q.next_seq;
        q.next_seq += 1;
        let interrupted = Arc::new(AtomicBool::new(false));
        q.entries.push_back(Entry {
            seq,
            cancel,
            interrupted: interrupted.clone(),
        });
        Ok(Ticket {
            queue: self.inner.clone(),
            seq,
            interrupted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(policy: BusyPolicy, queue_max: u32) -> OnBusy {
        OnBusy { policy, queue_max }
    }

    #[test]
    fn reject_refuses_while_a_task_is_held() {
        let q = RunQueue::default();
        let first = q
            .admit("a", &on(BusyPolicy::Reject, 4), CancellationToken::new())
            .expect("idle agent admits");
        let e = q
            .admit("a", &on(BusyPolicy::Reject, 4), CancellationToken::new())
            .err()
            .expect("busy agent rejects");
        assert_eq!(e.kind(), "busy");
        drop(first);
        assert!(
            q.admit("a", &on(BusyPolicy::Reject, 4), CancellationToken::new())
                .is_ok()
        );
    }

    #[test]
    fn enqueue_is_bounded_and_tickets_leave_when_dropped() {
        let q = RunQueue::default();
        let p = on(BusyPolicy::Enqueue, 2);
        let held: Vec<Ticket> = (0..3)
            .map(|_| q.admit("a", &p, CancellationToken::new()).expect("room"))
            .collect();
        assert_eq!(q.len(), 3);
        let e = q
            .admit("a", &p, CancellationToken::new())
            .err()
            .expect("full");
        assert_eq!(e.kind(), "queue_full");
        assert!(e.to_string().contains("2 messages waiting"), "{e}");
        drop(held);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn interrupt_cancels_every_task_ahead() {
        let q = RunQueue::default();
        let p = on(BusyPolicy::Interrupt, 4);
        let (c1, c2, c3) = (
            CancellationToken::new(),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        let t1 = q.admit("a", &p, c1.clone()).expect("admit");
        let t2 = q.admit("a", &p, c2.clone()).expect("admit");
        assert!(c1.is_cancelled() && t1.interrupted());
        assert!(!c2.is_cancelled() && !t2.interrupted());
        let t3 = q.admit("a", &on(BusyPolicy::Rollback, 4), c3.clone());
        assert!(c2.is_cancelled() && t2.interrupted());
        assert!(!c3.is_cancelled() && t3.is_ok_and(|t| !t.interrupted()));
    }

    #[test]
    fn settings_are_validated() {
        assert!(OnBusy::default().validate().is_ok());
        assert!(
            on(BusyPolicy::Enqueue, 0)
                .validate()
                .unwrap_err()
                .contains("queue_max")
        );
        let parsed: OnBusy = serde_json::from_str(r#"{"policy":"rollback"}"#).expect("json");
        assert_eq!(parsed, on(BusyPolicy::Rollback, 16));
        assert!(serde_json::from_str::<OnBusy>(r#"{"policy":"drop"}"#).is_err());
    }
}
