//! The wire format between gateways: the messages, what they carry, and their versioned
//! JSON encoding.

use aios_actors::agent::{AgentEvent, RemoteReply, RemoteTask};
use aios_actors::memory::{MemoryAnswer, MemoryError, MemoryOp};
use aios_actors::protocol::{AgentId, Envelope};
use aios_actors::tools::{RemoteToolCall, ToolCallError};
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::cluster::NodeStats;

/// The process group of every node's gateway.
pub const GROUP_ALL: &str = "aios.gw";
/// The wire format's version, the first two bytes of every message.
pub const WIRE_VERSION: u16 = 1;
/// Forwarded tasks a node runs at once; more are refused.
pub const INFLIGHT_MAX: usize = 1024;
/// The group of node `node`'s gateway.
pub fn group_of(node: &str) -> String {
    format!("{GROUP_ALL}.{node}")
}

/// The gateway's messages. Variants are matched by name across nodes: never rename one.
#[derive(Debug, RactorClusterMessage)]
pub enum GatewayMsg {
    /// A request ([`Request`]) and its reply ([`Reply`]).
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// A one-way event ([`Event`]).
    Cast(Vec<u8>),
    /// Answers its argument at once from the handler: the bare ractor_cluster round trip
    /// the `cluster_rtt` benchmark compares against.
    #[rpc]
    Echo(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// What one node asks another.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Request {
    /// Run a task on an agent here.
    Ask {
        agent: AgentId,
        task: Box<RemoteTask>,
    },
    /// This node's figures.
    Stats,
    /// The agents' memory retrieval from a namespace this node serves.
    MemoryRetrieve {
        namespace: String,
        query: String,
        k: usize,
    },
    /// The agents' memory store into a namespace this node serves.
    MemoryStore {
        namespace: String,
        text: String,
        meta: aios_actors::memory::MemoryMeta,
    },
    /// A memory operation on a namespace this node serves (the memory API of another node).
    Memory { op: MemoryOp },
    /// A tool call the sending node cannot run itself.
    Tool { call: RemoteToolCall },
}

/// The answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Reply {
    Ask(RemoteReply),
    Stats(NodeStats),
    Retrieved(Result<Vec<String>, String>),
    Stored(Result<bool, String>),
    Memory(Result<MemoryAnswer, MemoryError>),
    Tool(Result<serde_json::Value, ToolCallError>),
    /// The node could not take the request (too many in flight, undecodable, ...).
    Refused(String),
}

/// A one-way message.
#[derive(Debug, Serialize, Deserialize)]
pub(in crate::cluster) enum Event {
    /// A topic event published on another node.
    Publish(Envelope),
    /// A subscriber on `node` listens to `agent`'s events ([`crate::cluster::relay`]).
    Watch { agent: AgentId, node: String },
    /// An event of an agent active on the sending node, for this node's subscribers.
    AgentEvent(AgentEvent),
}

pub(in crate::cluster) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = WIRE_VERSION.to_be_bytes().to_vec();
    // Serialising these types to JSON cannot fail: no maps with non-string keys.
    if let Err(e) = serde_json::to_writer(&mut out, value) {
        tracing::error!(error = %e, "encoding a cluster message");
    }
    out
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    let result = match bytes {
        [a, b, rest @ ..] if u16::from_be_bytes([*a, *b]) == WIRE_VERSION => {
            serde_json::from_slice(rest).map_err(|e| e.to_string())
        }
        [a, b, ..] => Err(format!(
            "wire version {} (this node speaks {WIRE_VERSION})",
            u16::from_be_bytes([*a, *b])
        )),
        _ => Err("empty message".into()),
    };
    if let Err(e) = &result {
        metrics::counter!("aios_cluster_undecodable_total").increment(1);
        tracing::warn!(error = %e, "undecodable cluster message");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use aios_actors::agent::AgentError;

    #[test]
    fn messages_carry_their_version_and_a_foreign_one_is_refused() {
        let bytes = encode(&Request::Stats);
        assert_eq!(&bytes[..2], &WIRE_VERSION.to_be_bytes());
        assert!(matches!(decode::<Request>(&bytes), Ok(Request::Stats)));
        let mut foreign = bytes.clone();
        foreign[1] = foreign[1].wrapping_add(1);
        let err = decode::<Request>(&foreign).unwrap_err();
        assert!(err.contains("wire version"), "{err}");
        assert!(decode::<Request>(&[]).is_err());
        assert!(decode::<Request>(&[0, 1, b'{']).is_err());
    }

    #[test]
    fn a_reply_keeps_the_agents_typed_error() {
        let reply = Reply::Ask(RemoteReply::Done(Err(AgentError::NotFound("x".into()))));
        let back: Reply = decode(&encode(&reply)).unwrap();
        match back {
            Reply::Ask(RemoteReply::Done(Err(AgentError::NotFound(n)))) => assert_eq!(n, "x"),
            other => panic!("{other:?}"),
        }
    }
}
