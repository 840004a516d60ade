//! Topics: publish/subscribe between agents and code outside them. [`Topics`] owns one
//! broadcast channel per topic with subscribers on this node; in a cluster an event also
//! goes to the other nodes, which deliver it to theirs.
//!
//! Architecture invariant: a topic's channel exists only while it has subscribers (one
//! without is removed at its next publish), and each buffers [`TOPIC_BUFFER`] events: a
//! subscriber that falls further behind loses the oldest.

use std::sync::Arc;

use aios_core::protocol::{AgentId, Envelope, Recipient};
use dashmap::DashMap;
use tokio::sync::broadcast;

use super::super::actor::{AgentError, Task};
use super::{AgentSystem, TOPIC_BUFFER};

/// The topics with subscribers on this node.
#[derive(Default)]
pub(super) struct Topics {
    channels: DashMap<String, broadcast::Sender<Envelope>>,
}

impl AgentSystem {
    /// Publishes an event envelope to its topic; returns how many subscribers on this node
    /// got it. In a cluster the other nodes' subscribers get it too (not counted).
    ///
    /// # Errors
    /// [`AgentError::Invalid`] for a bad envelope or an agent recipient.
    pub fn publish(&self, envelope: Envelope) -> Result<usize, AgentError> {
        envelope.validate().map_err(AgentError::Invalid)?;
        if !matches!(envelope.to, Recipient::Topic(_)) {
            return Err(AgentError::Invalid(
                "publish needs a topic recipient".into(),
            ));
        }
        if let Some(remote) = self.inner.routing.remote() {
            remote.publish(&envelope);
        }
        Ok(self.publish_here(envelope))
    }

    /// Delivers an event envelope to this node's subscribers of its topic (an event published
    /// on another node arrives this way); returns how many got it.
    pub fn publish_here(&self, envelope: Envelope) -> usize {
        let Recipient::Topic(topic) = &envelope.to else {
            return 0;
        };
        let topic = topic.clone();
        let topics = &self.inner.topics.channels;
        let sent = match topics.get(&topic) {
            Some(tx) => tx.send(envelope).unwrap_or(0),
            None => 0,
        };
        if sent == 0 {
            topics.remove_if(&topic, |_, tx| tx.receiver_count() == 0);
        }
        sent
    }

    /// Subscribes to a topic.
    pub fn subscribe_topic(&self, topic: &str) -> broadcast::Receiver<Envelope> {
        self.inner
            .topics
            .channels
            .entry(topic.to_string())
            .or_insert_with(|| broadcast::channel(TOPIC_BUFFER).0)
            .subscribe()
    }

    /// Delivers every event on `topic` to agent `id` as a task (event-driven agents). The
    /// binding lasts until the system is dropped.
    pub fn bind_topic(&self, topic: &str, id: AgentId) {
        let mut rx = self.subscribe_topic(topic);
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let envelope = match rx.recv().await {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(agent = %id, missed = n, "topic subscriber lagged");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(inner) = weak.upgrade() else { return };
                let task = Task {
                    input: envelope.payload,
                    session: envelope.session.map(|s| s.to_string()),
                    run: envelope.run.map(|r| r.to_string()),
                    ..Task::default()
                };
                if let Err(e) = inner.ask(&id, task).await {
                    tracing::warn!(agent = %id, error = %e, "topic event failed");
                }
            }
        });
    }
}
