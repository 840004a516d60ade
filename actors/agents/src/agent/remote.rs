//! Agents active on other nodes of a cluster: the wire form of a task, and [`RemoteAgents`],
//! the route through which [`AgentSystem`](super::AgentSystem) forwards a task to the node
//! that holds the agent's lease. The runtime implements the route over ractor_cluster; the
//! agent system decides *when* to forward (see `system.rs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::actor::{AgentError, Task, TaskOutput};
use super::placement::Candidate;
use aios_core::protocol::{AgentId, Envelope, unix_ms};

/// The most times one task is redirected to another node (an agent that moved while the
/// task was on its way) before it fails.
pub const REDIRECTS_MAX: usize = 2;

/// A task as it crosses nodes: everything of a [`Task`] but its cancellation token (the
/// caller's deadline travels instead).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteTask {
    /// [`Task::input`].
    pub input: String,
    /// [`Task::tenant`].
    pub tenant: String,
    /// [`Task::session`].
    pub session: Option<String>,
    /// [`Task::run`].
    pub run: Option<String>,
    /// [`Task::chain`].
    pub chain: Vec<AgentId>,
    /// [`Task::priority`].
    pub priority: u8,
    /// [`Task::json_mode`].
    pub json_mode: bool,
    /// [`Task::idempotency_key`].
    pub idempotency_key: Option<String>,
    /// When the caller stops waiting (Unix milliseconds).
    pub deadline_unix_ms: u64,
}

impl RemoteTask {
    /// The wire form of `task`, which its caller waits for at most `timeout`.
    pub fn new(task: &Task, timeout: Duration) -> Self {
        Self {
            input: task.input.clone(),
            tenant: task.tenant.clone(),
            session: task.session.clone(),
            run: task.run.clone(),
            chain: task.chain.clone(),
            priority: task.priority,
            json_mode: task.json_mode,
            idempotency_key: task.idempotency_key.clone(),
            deadline_unix_ms: unix_ms().saturating_add(timeout.as_millis() as u64),
        }
    }

    /// How long the caller still waits.
    pub fn time_left(&self) -> Duration {
        Duration::from_millis(self.deadline_unix_ms.saturating_sub(unix_ms()))
    }

    /// The task to run on the receiving node.
    pub fn into_task(self) -> Task {
        Task {
            input: self.input,
            tenant: self.tenant,
            session: self.session,
            run: self.run,
            chain: self.chain,
            priority: self.priority,
            json_mode: self.json_mode,
            idempotency_key: self.idempotency_key,
            cancel: None,
        }
    }
}

/// What a node answers to a forwarded task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RemoteReply {
    /// The task ran here: its output or its error.
    Done(Result<TaskOutput, AgentError>),
    /// The agent is active on another node (its lease holder's node): ask that one.
    Elsewhere {
        /// That node's name.
        node: String,
    },
    /// The node is being drained and does not activate agents: activate it elsewhere.
    Draining,
}

/// Why a forwarded task got no reply.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RemoteError {
    /// The node is not a connected peer (or does not serve agents).
    #[error("node {0:?} is not reachable")]
    Unreachable(String),
    /// The node was lost (its session closed) or did not answer in time while it had the
    /// task: the task may or may not have run there.
    #[error("node {node:?} was lost while it had the task: {reason}")]
    Lost {
        /// The node.
        node: String,
        /// What was observed.
        reason: String,
    },
}

/// The route to agents on other nodes, implemented by the runtime in cluster mode.
#[async_trait::async_trait]
pub trait RemoteAgents: Send + Sync + 'static {
    /// This node's name.
    fn node(&self) -> &str;

    /// This node's tags (`[cluster] tags`), for placement.
    fn tags(&self) -> Vec<String>;

    /// True when `node` is a connected peer whose agents can be asked.
    fn reachable(&self, node: &str) -> bool;

    /// The reachable peers with their tags and load, for placement (figures may be up to a
    /// second old).
    async fn candidates(&self) -> Vec<Candidate>;

    /// Runs `task` on agent `agent` on node `node` (which runs it itself, never forwards it).
    ///
    /// # Errors
    /// [`RemoteError`] when the node cannot be reached or was lost with the task.
    async fn ask(
        &self,
        node: &str,
        agent: &AgentId,
        task: RemoteTask,
    ) -> Result<RemoteReply, RemoteError>;

    /// Delivers an event envelope to the topic's subscribers on every other node (best
    /// effort, not awaited).
    fn publish(&self, envelope: &Envelope);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_crosses_nodes_with_everything_but_its_token() {
        let task = Task {
            input: "hi".into(),
            tenant: "acme".into(),
            session: Some("s".into()),
            run: Some("r".into()),
            chain: vec![AgentId::main("a")],
            priority: 3,
            json_mode: true,
            idempotency_key: Some("k".into()),
            cancel: Some(tokio_util::sync::CancellationToken::new()),
        };
        let wire = RemoteTask::new(&task, Duration::from_secs(60));
        assert!(wire.time_left() > Duration::from_secs(58));
        let json = serde_json::to_string(&wire).unwrap();
        let back: RemoteTask = serde_json::from_str(&json).unwrap();
        let t = back.into_task();
        assert_eq!(
            (t.input.as_str(), t.tenant.as_str(), t.priority, t.json_mode),
            ("hi", "acme", 3, true)
        );
        assert_eq!(t.chain, vec![AgentId::main("a")]);
        assert_eq!(t.idempotency_key.as_deref(), Some("k"));
        assert!(t.cancel.is_none());
    }
}
