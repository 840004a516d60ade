//! Agent events across nodes (feature `cluster`): a subscriber on one node gets the events of
//! an agent active on another.
//!
//! A node with subscribers to an agent casts `Watch { agent, node }` to every peer's gateway
//! when a subscriber arrives and again every [`WATCH_REFRESH`] while one listens (so a peer
//! that joins or restarts learns it). Each node keeps who watches which agent for
//! [`WATCH_TTL`] after the last `Watch`; an event of an agent active here is cast to the
//! gateways of the nodes watching it, which hand it to their own subscribers
//! (`EventHub::emit_here`, never relayed again). Events are one-way casts: a node that is
//! down or slow loses them, as a lagging local subscriber does.

use std::time::Duration;

use aios_actors::agent::{AgentEvent, EventRelay};
use aios_actors::protocol::AgentId;
use dashmap::DashMap;
use ractor::ActorRef;
use tokio::time::Instant;

use super::gateway::{self, Event, GatewayMsg};

/// How often a node tells its peers again which agents its subscribers listen to.
pub const WATCH_REFRESH: Duration = Duration::from_secs(10);
/// How long a peer's interest in an agent lasts without a new `Watch`.
pub const WATCH_TTL: Duration = Duration::from_secs(30);
/// Agents watched by other nodes that a node keeps track of at most; more `Watch`es are
/// ignored (and logged) until some expire.
pub const WATCHED_MAX: usize = 100_000;

/// This node's side of the relay: which peers watch which agents.
#[derive(Debug)]
pub struct Relay {
    node: String,
    /// Per agent: the watching nodes and when their interest lapses.
    watchers: DashMap<AgentId, Vec<(String, Instant)>>,
}

impl Relay {
    /// The relay of node `node`.
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            watchers: DashMap::new(),
        }
    }

    /// Node `node` watches `agent` (a `Watch` arrived).
    pub(super) fn watched_by(&self, agent: AgentId, node: String) {
        if node == self.node {
            return;
        }
        if self.watchers.len() >= WATCHED_MAX && !self.watchers.contains_key(&agent) {
            self.prune();
            if self.watchers.len() >= WATCHED_MAX {
                tracing::warn!(%agent, %node, "too many agents watched from other nodes; watch ignored");
                return;
            }
        }
        let until = Instant::now() + WATCH_TTL;
        let mut nodes = self.watchers.entry(agent).or_default();
        match nodes.iter_mut().find(|(n, _)| *n == node) {
            Some(entry) => entry.1 = until,
            None => nodes.push((node, until)),
        }
    }

    /// Drops lapsed interest.
    pub(super) fn prune(&self) {
        let now = Instant::now();
        self.watchers.retain(|_, nodes| {
            nodes.retain(|(_, until)| *until > now);
            !nodes.is_empty()
        });
    }
}

impl EventRelay for Relay {
    fn watch(&self, agent: &AgentId) {
        let bytes = gateway::encode(&Event::Watch {
            agent: agent.clone(),
            node: self.node.clone(),
        });
        for cell in gateway::remote_gateways() {
            let gw: ActorRef<GatewayMsg> = ActorRef::from(cell);
            if let Err(e) = gw.cast(GatewayMsg::Cast(bytes.clone())) {
                tracing::debug!(error = %e, "watch not sent to a peer");
            }
        }
    }

    fn relay(&self, event: &AgentEvent) {
        let nodes: Vec<String> = {
            let Some(nodes) = self.watchers.get(&event.agent) else {
                return;
            };
            let now = Instant::now();
            nodes
                .iter()
                .filter(|(_, until)| *until > now)
                .map(|(n, _)| n.clone())
                .collect()
        };
        if nodes.is_empty() {
            return;
        }
        let bytes = gateway::encode(&Event::AgentEvent(event.clone()));
        for node in nodes {
            let Some(gw) = gateway::gateway_of(&node) else {
                continue;
            };
            if let Err(e) = gw.cast(GatewayMsg::Cast(bytes.clone())) {
                tracing::debug!(%node, error = %e, "agent event not sent to a watching node");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interest_is_per_node_refreshed_and_lapses() {
        let relay = Relay::new("a");
        let agent = AgentId::new("t.x", "main");
        relay.watched_by(agent.clone(), "a".into());
        assert!(relay.watchers.is_empty(), "a node does not watch itself");
        relay.watched_by(agent.clone(), "b".into());
        relay.watched_by(agent.clone(), "b".into());
        relay.watched_by(agent.clone(), "c".into());
        assert_eq!(relay.watchers.get(&agent).unwrap().len(), 2);
        // Lapsed interest is dropped.
        relay.watchers.get_mut(&agent).unwrap()[0].1 = Instant::now();
        relay.prune();
        let left: Vec<String> = relay
            .watchers
            .get(&agent)
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        assert_eq!(left, ["c"]);
    }
}
