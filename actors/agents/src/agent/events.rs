//! The agent event stream: every step of every agent (tokens, tool calls, tool results,
//! final answers, errors), per agent instance, to any number of subscribers, on this node and,
//! in a cluster, on the others ([`EventRelay`]).

use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use aios_core::protocol::AgentId;

/// Events buffered per agent for slow subscribers (a subscriber that falls further behind
/// loses the oldest and is told how many it missed).
pub const AGENT_EVENTS_BUFFER: usize = 1024;

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AgentEventKind {
    /// Streamed text.
    Token(String),
    /// The model asked for a tool call.
    ToolCall {
        /// The call id.
        id: String,
        /// The tool.
        name: String,
        /// The raw arguments.
        arguments: String,
    },
    /// A tool call finished.
    ToolResult {
        /// The call id.
        id: String,
        /// The tool.
        name: String,
        /// Its output (or the error text).
        output: String,
        /// True when it failed.
        is_error: bool,
    },
    /// The task's final answer.
    Final {
        /// The answer.
        text: String,
    },
    /// The task failed.
    Error {
        /// A short kind (`rate_limited`, `limitexceeded`, ...).
        kind: String,
        /// The message.
        message: String,
    },
    /// Older turns were folded out of the conversation sent to the model, to fit its
    /// context window: `summarized` into the running summary, or `truncated` (dropped) when
    /// the summariser failed, with the reason.
    Compacted {
        /// `summarized` or `truncated`.
        method: String,
        /// Messages folded out.
        messages: u64,
        /// Tokens of the conversation before.
        tokens_before: u64,
        /// Tokens of the conversation after.
        tokens_after: u64,
        /// Tokens of the running summary now.
        summary_tokens: u64,
        /// Why the summariser failed, when it did.
        reason: Option<String>,
    },
}

/// One event of one agent instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEvent {
    /// The agent instance.
    pub agent: AgentId,
    /// The run the task belongs to, if any.
    pub run: Option<String>,
    /// What happened.
    pub kind: AgentEventKind,
}

/// How events reach subscribers on the other nodes of a cluster (implemented by the runtime
/// over ractor_cluster). Both calls must not block: they queue messages.
pub trait EventRelay: Send + Sync + 'static {
    /// A subscriber on this node listens to `agent` (which may be active on another node):
    /// tell the other nodes.
    fn watch(&self, agent: &AgentId);
    /// An event of an agent active here: send it to the nodes that listen to the agent.
    fn relay(&self, event: &AgentEvent);
}

/// The channels of every agent with subscribers. Cheap to clone.
#[derive(Clone, Default)]
pub struct EventHub {
    channels: Arc<DashMap<AgentId, broadcast::Sender<AgentEvent>>>,
    relay: Arc<std::sync::OnceLock<Arc<dyn EventRelay>>>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("channels", &self.channels.len())
            .field("relayed", &self.relay.get().is_some())
            .finish()
    }
}

impl EventHub {
    /// Subscribes to an agent's events (it need not be active, nor active on this node).
    pub fn subscribe(&self, agent: &AgentId) -> broadcast::Receiver<AgentEvent> {
        let rx = self
            .channels
            .entry(agent.clone())
            .or_insert_with(|| broadcast::channel(AGENT_EVENTS_BUFFER).0)
            .subscribe();
        if let Some(relay) = self.relay.get() {
            relay.watch(agent);
        }
        rx
    }

    /// Connects the hub to the other nodes of a cluster. Set once; later calls return false.
    pub fn set_relay(&self, relay: Arc<dyn EventRelay>) -> bool {
        self.relay.set(relay).is_ok()
    }

    /// The agents someone on this node listens to (the relay tells the other nodes again
    /// from time to time, so a node that joins later or restarted learns them).
    pub fn watched(&self) -> Vec<AgentId> {
        self.channels
            .iter()
            .filter(|c| c.receiver_count() > 0)
            .map(|c| c.key().clone())
            .collect()
    }

    /// True when someone listens to `agent`.
    pub fn has_subscribers(&self, agent: &AgentId) -> bool {
        self.channels
            .get(agent)
            .is_some_and(|s| s.receiver_count() > 0)
    }

    /// Drops the channels nobody listens to any more (those of agents active elsewhere get
    /// no event that would drop them).
    pub fn prune(&self) {
        self.channels.retain(|_, tx| tx.receiver_count() > 0);
    }

    /// Sends an event to the agent's subscribers, here and on the other nodes that listen to
    /// it; drops the channel of an agent whose subscribers here are all gone.
    pub fn emit(&self, event: AgentEvent) {
        if let Some(relay) = self.relay.get() {
            relay.relay(&event);
        }
        self.emit_here(event);
    }

    /// Sends an event to the agent's subscribers on this node only (an event another node
    /// relayed).
    pub fn emit_here(&self, event: AgentEvent) {
        let agent = event.agent.clone();
        let gone = match self.channels.get(&agent) {
            Some(tx) => tx.send(event).is_err(),
            None => false,
        };
        if gone {
            self.channels
                .remove_if(&agent, |_, tx| tx.receiver_count() == 0);
        }
    }
}
