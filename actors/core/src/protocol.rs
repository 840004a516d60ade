//! The inter-agent protocol: one serde-serialisable envelope for all agent traffic. The same
//! type crosses nodes in cluster mode, so it carries only plain data (ids are UUIDs, never
//! per-sender counters; payloads are JSON text) and a version.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The envelope format version.
pub const ENVELOPE_VERSION: u16 = 1;
/// The largest payload, in bytes.
pub const PAYLOAD_LEN_MAX: usize = 1024 * 1024;

pub use crate::AgentId;

/// Who an envelope is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Recipient {
    /// One agent instance.
    Agent(AgentId),
    /// Every subscriber of a topic.
    Topic(String),
}

/// Who sent an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sender {
    /// An agent instance.
    Agent(AgentId),
    /// Code outside any agent: the API, a test, an orchestration run.
    External(String),
}

/// What an envelope is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Asks for a reply.
    Request,
    /// Answers a request (its `correlation` is the request's id).
    Reply,
    /// Fire and forget (publish/subscribe).
    Event,
}

/// The envelope of all agent traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`ENVELOPE_VERSION`].
    pub version: u16,
    /// Unique id.
    pub id: Uuid,
    /// The sender.
    pub from: Sender,
    /// The recipient.
    pub to: Recipient,
    /// The session, if any.
    pub session: Option<Uuid>,
    /// The run, if any.
    pub run: Option<Uuid>,
    /// For a reply: the request's id. For a delegated request: the original request's id.
    pub correlation: Option<Uuid>,
    /// Request, reply or event.
    pub kind: Kind,
    /// The payload: text for agents, JSON text for structured data.
    pub payload: String,
    /// When the sender stops waiting (Unix milliseconds); late work is dropped.
    pub deadline_unix_ms: Option<u64>,
}

impl Envelope {
    /// A request to an agent.
    pub fn request(from: Sender, to: AgentId, payload: impl Into<String>) -> Self {
        Self::build(from, Recipient::Agent(to), Kind::Request, payload.into())
    }

    /// An event on a topic.
    pub fn event(from: Sender, topic: impl Into<String>, payload: impl Into<String>) -> Self {
        Self::build(
            from,
            Recipient::Topic(topic.into()),
            Kind::Event,
            payload.into(),
        )
    }

    /// The reply to `self`, from `from`.
    pub fn reply(&self, from: Sender, payload: impl Into<String>) -> Self {
        let to = match &self.from {
            Sender::Agent(a) => Recipient::Agent(a.clone()),
            Sender::External(name) => Recipient::Topic(format!("external/{name}")),
        };
        let mut r = Self::build(from, to, Kind::Reply, payload.into());
        r.session = self.session;
        r.run = self.run;
        r.correlation = Some(self.id);
        r
    }

    fn build(from: Sender, to: Recipient, kind: Kind, payload: String) -> Self {
        Self {
            version: ENVELOPE_VERSION,
            id: Uuid::new_v4(),
            from,
            to,
            session: None,
            run: None,
            correlation: None,
            kind,
            payload,
            deadline_unix_ms: None,
        }
    }

    /// True when the deadline has passed.
    pub fn is_expired(&self, now_unix_ms: u64) -> bool {
        self.deadline_unix_ms.is_some_and(|d| now_unix_ms > d)
    }

    /// Checks version and payload size.
    ///
    /// # Errors
    /// Says which.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != ENVELOPE_VERSION {
            return Err(format!(
                "envelope version {} is not {ENVELOPE_VERSION}",
                self.version
            ));
        }
        if self.payload.len() > PAYLOAD_LEN_MAX {
            return Err(format!(
                "payload of {} bytes exceeds {PAYLOAD_LEN_MAX}",
                self.payload.len()
            ));
        }
        Ok(())
    }
}

/// Now in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_replies_correlate() {
        let req = Envelope::request(
            Sender::External("api".into()),
            AgentId::main("writer"),
            "hello",
        );
        let bytes = aios_supervisor::snapshot::codec::encode(&req).expect("encode");
        let back: Envelope = aios_supervisor::snapshot::codec::decode(&bytes).expect("decode");
        assert_eq!(back, req);
        let rep = req.reply(Sender::Agent(AgentId::main("writer")), "hi");
        assert_eq!(rep.correlation, Some(req.id));
        assert_eq!(rep.kind, Kind::Reply);
        assert_ne!(rep.id, req.id);
        assert!(req.validate().is_ok());
    }
}
