//! The gateway: one actor per node through which the other nodes reach this node's agents
//! (feature `cluster`).
//!
//! The gateway joins the process groups [`GROUP_ALL`] and `aios.gw.<node>`, which
//! ractor_cluster synchronises to every peer once their session is ready; a peer's gateway
//! leaves them when its session closes. So "node `b` is reachable" is "the group
//! `aios.gw.b` has a member", and a remote call is a ractor_cluster RPC to that member.
//!
//! Messages carry versioned JSON ([`WIRE_VERSION`]; JSON so that a field added with a default
//! does not break a mixed-version cluster). A forwarded task runs in its own tokio task, at
//! most [`INFLIGHT_MAX`] at a time; beyond, the caller gets a clear refusal at once.
//! Undecodable messages are counted (`aios_cluster_undecodable_total`) and logged.

use std::sync::Arc;
use std::time::Duration;

use aios_actors::agent::{
    AgentError, AgentEvent, Candidate, RemoteAgents, RemoteError, RemoteReply, RemoteTask,
};
use aios_actors::memory::{ForwardError, MemoryAnswer, MemoryError, MemoryOp, RemoteMemory};
use aios_actors::protocol::{AgentId, Envelope};
use aios_actors::tools::{RemoteToolCall, RemoteTools, ToolCallError, ToolForwardError};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::relay::Relay;
use super::{NodeStats, Served};

/// The process group of every node's gateway.
pub const GROUP_ALL: &str = "aios.gw";
/// The wire format's version, the first two bytes of every message.
pub const WIRE_VERSION: u16 = 1;
/// Forwarded tasks a node runs at once; more are refused.
pub const INFLIGHT_MAX: usize = 1024;
/// Added to a forwarded task's deadline before its caller gives up on the node.
const REPLY_MARGIN: Duration = Duration::from_secs(2);
/// How often a caller waiting on a node checks that its session is still up.
const SESSION_CHECK_EVERY: Duration = Duration::from_millis(200);
/// The longest a statistics call to a peer waits.
const STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// The group of node `node`'s gateway.
pub fn group_of(node: &str) -> String {
    format!("{GROUP_ALL}.{node}")
}

/// The gateway's messages. Variants are matched by name across nodes: never rename one.
#[derive(RactorClusterMessage)]
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
enum Request {
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
enum Reply {
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
pub(super) enum Event {
    /// A topic event published on another node.
    Publish(Envelope),
    /// A subscriber on `node` listens to `agent`'s events ([`super::relay`]).
    Watch { agent: AgentId, node: String },
    /// An event of an agent active on the sending node, for this node's subscribers.
    AgentEvent(AgentEvent),
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = WIRE_VERSION.to_be_bytes().to_vec();
    // Serialising these types to JSON cannot fail: no maps with non-string keys.
    if let Err(e) = serde_json::to_writer(&mut out, value) {
        tracing::error!(error = %e, "encoding a cluster message");
    }
    out
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
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

struct Gateway;

struct GatewayState {
    served: Served,
    relay: Arc<Relay>,
    inflight: Arc<Semaphore>,
}

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = (String, Served, Arc<Relay>);

    async fn pre_start(
        &self,
        myself: ActorRef<GatewayMsg>,
        (node, served, relay): (String, Served, Arc<Relay>),
    ) -> Result<GatewayState, ActorProcessingErr> {
        ractor::pg::join(GROUP_ALL.into(), vec![myself.get_cell()]);
        ractor::pg::join(group_of(&node), vec![myself.get_cell()]);
        Ok(GatewayState {
            served,
            relay,
            inflight: Arc::new(Semaphore::new(INFLIGHT_MAX)),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<GatewayMsg>,
        msg: GatewayMsg,
        state: &mut GatewayState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GatewayMsg::Echo(bytes, reply) => {
                let _ = reply.send(bytes);
            }
            GatewayMsg::Cast(bytes) => match decode::<Event>(&bytes) {
                Ok(Event::Publish(envelope)) => {
                    state.served.system.publish_here(envelope);
                }
                Ok(Event::Watch { agent, node }) => state.relay.watched_by(agent, node),
                Ok(Event::AgentEvent(event)) => state.served.system.events().emit_here(event),
                Err(_) => {}
            },
            GatewayMsg::Call(bytes, reply) => {
                let request = match decode::<Request>(&bytes) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = reply.send(encode(&Reply::Refused(e)));
                        return Ok(());
                    }
                };
                let Ok(permit) = state.inflight.clone().try_acquire_owned() else {
                    let _ = reply.send(encode(&Reply::Refused(format!(
                        "{INFLIGHT_MAX} forwarded tasks already in flight"
                    ))));
                    return Ok(());
                };
                let served = state.served.clone();
                let inflight = state.inflight.clone();
                tokio::spawn(async move {
                    let answer = match request {
                        Request::Ask { agent, task } => {
                            Reply::Ask(served.system.serve_remote(&agent, *task).await)
                        }
                        Request::MemoryRetrieve {
                            namespace,
                            query,
                            k,
                        } => Reply::Retrieved(match &served.memory {
                            Some(m) => m
                                .retrieve_here(&namespace, &query, k)
                                .await
                                .map_err(|e| e.to_string()),
                            None => Err("this node serves no memory".into()),
                        }),
                        Request::MemoryStore {
                            namespace,
                            text,
                            meta,
                        } => Reply::Stored(match &served.memory {
                            Some(m) => m
                                .store_here(&namespace, &text, meta)
                                .await
                                .map_err(|e| e.to_string()),
                            None => Err("this node serves no memory".into()),
                        }),
                        Request::Memory { op } => Reply::Memory(match &served.memory {
                            Some(m) => m.serve_remote(op).await,
                            None => Err(MemoryError::Unavailable(
                                "this node serves no memory".into(),
                            )),
                        }),
                        Request::Tool { call } => Reply::Tool(match &served.tools {
                            Some(t) => t.serve_remote(call).await,
                            None => Err(ToolCallError::NotFound {
                                requirement: format!(
                                    "{} (this node runs no tools)",
                                    call.requirement
                                ),
                            }),
                        }),
                        Request::Stats => {
                            let mut stats = (served.stats)();
                            // Less this request's own permit.
                            stats.forwarded_in_flight = INFLIGHT_MAX
                                .saturating_sub(inflight.available_permits())
                                .saturating_sub(1);
                            Reply::Stats(stats)
                        }
                    };
                    drop(permit);
                    let _ = reply.send(encode(&answer));
                });
            }
        }
        Ok(())
    }
}

/// Starts this node's gateway, which hands `Watch`es to `relay`.
pub(super) async fn start(
    node: &str,
    served: Served,
    relay: Arc<Relay>,
) -> Result<ActorRef<GatewayMsg>, ractor::SpawnErr> {
    let (gateway, _) = Actor::spawn(None, Gateway, (node.to_owned(), served, relay)).await?;
    Ok(gateway)
}

/// A remote node's gateway, when its session is ready.
pub(super) fn gateway_of(node: &str) -> Option<ActorRef<GatewayMsg>> {
    ractor::pg::get_members(&group_of(node))
        .into_iter()
        .find(|c| !c.get_id().is_local())
        .map(ActorRef::from)
}

/// Every other node's gateway.
pub(super) fn remote_gateways() -> Vec<ActorCell> {
    ractor::pg::get_members(&GROUP_ALL.to_string())
        .into_iter()
        .filter(|c| !c.get_id().is_local())
        .collect()
}

/// One round trip to `node`'s gateway that returns its argument (the `cluster_rtt`
/// benchmark's bare ractor_cluster call).
///
/// # Errors
/// The node is not reachable or did not answer within `timeout`.
pub async fn echo(node: &str, payload: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, RemoteError> {
    let gw = gateway_of(node).ok_or_else(|| RemoteError::Unreachable(node.to_owned()))?;
    match gw
        .call(|r| GatewayMsg::Echo(payload, r), Some(timeout))
        .await
    {
        Ok(CallResult::Success(b)) => Ok(b),
        Ok(other) => Err(lost(node, &format!("{other:?}"))),
        Err(e) => Err(RemoteError::Unreachable(format!("{node}: {e}"))),
    }
}

/// Why a call failed when the session that carried it closed before the answer.
const SESSION_CLOSED: &str = "its session closed";

fn lost(node: &str, reason: &str) -> RemoteError {
    RemoteError::Lost {
        node: node.to_owned(),
        reason: reason.to_owned(),
    }
}

async fn call(node: &str, request: &Request, timeout: Duration) -> Result<Reply, RemoteError> {
    let gw = gateway_of(node).ok_or_else(|| RemoteError::Unreachable(node.to_owned()))?;
    let bytes = encode(request);
    // The node's gateway leaves its groups when the session closes: the call fails then,
    // whether or not ractor_cluster resolves its reply port.
    let gone = async {
        loop {
            tokio::time::sleep(SESSION_CHECK_EVERY).await;
            if gateway_of(node).is_none() {
                return;
            }
        }
    };
    let reply = tokio::select! {
        r = gw.call(|r| GatewayMsg::Call(bytes, r), Some(timeout)) => r,
        () = gone => return Err(lost(node, SESSION_CLOSED)),
    };
    match reply {
        Ok(CallResult::Success(b)) => decode::<Reply>(&b).map_err(|e| lost(node, &e)),
        Ok(CallResult::Timeout) => Err(lost(node, &format!("no reply within {timeout:?}"))),
        Ok(CallResult::SenderError) => Err(lost(node, SESSION_CLOSED)),
        // Nothing was sent: the remote actor is gone.
        Err(e) => Err(RemoteError::Unreachable(format!("{node}: {e}"))),
    }
}

/// The figures of every reachable peer, by node name (peers that do not answer within a
/// second are left out).
pub async fn peer_stats() -> Vec<NodeStats> {
    let calls = remote_gateways().into_iter().map(|cell| async move {
        let gw: ActorRef<GatewayMsg> = ActorRef::from(cell);
        let bytes = encode(&Request::Stats);
        match gw
            .call(|r| GatewayMsg::Call(bytes, r), Some(STATS_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(b)) => match decode::<Reply>(&b) {
                Ok(Reply::Stats(s)) => Some(s),
                _ => None,
            },
            _ => None,
        }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// How long peers' figures are reused for placement.
const CANDIDATES_TTL: Duration = Duration::from_secs(1);

/// [`RemoteAgents`] over the gateways.
pub struct Route {
    node: String,
    tags: Vec<String>,
    /// Peers' figures and when they were asked.
    candidates: tokio::sync::Mutex<Option<(tokio::time::Instant, Vec<Candidate>)>>,
}

impl Route {
    /// The route of node `node`, which has `tags`.
    pub fn new(node: &str, tags: Vec<String>) -> Self {
        Self {
            node: node.to_owned(),
            tags,
            candidates: tokio::sync::Mutex::new(None),
        }
    }
}

/// How long a forwarded memory operation may take.
const MEMORY_TIMEOUT: Duration = Duration::from_secs(30);

#[async_trait::async_trait]
impl RemoteMemory for Route {
    fn node(&self) -> &str {
        &self.node
    }

    fn reachable(&self, node: &str) -> bool {
        gateway_of(node).is_some()
    }

    fn tags(&self) -> Vec<String> {
        self.tags.clone()
    }

    async fn placement_candidates(&self) -> Vec<Candidate> {
        RemoteAgents::candidates(self)
            .await
            .into_iter()
            .filter(|c| !c.draining && gateway_of(&c.node).is_some())
            .collect()
    }

    async fn shard_loads(&self) -> Vec<(String, usize)> {
        peer_stats()
            .await
            .into_iter()
            .filter(|s| !s.draining && gateway_of(&s.node).is_some())
            .map(|s| (s.node, s.memory_shards))
            .collect()
    }

    async fn retrieve(
        &self,
        node: &str,
        namespace: &str,
        query: &str,
        k: usize,
    ) -> Result<Vec<String>, String> {
        let request = Request::MemoryRetrieve {
            namespace: namespace.to_owned(),
            query: query.to_owned(),
            k,
        };
        match call(node, &request, MEMORY_TIMEOUT).await {
            Ok(Reply::Retrieved(r)) => r,
            Ok(Reply::Refused(why)) => Err(format!("node {node} refused: {why}")),
            Ok(_) => Err(format!("node {node} answered another request")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn store(
        &self,
        node: &str,
        namespace: &str,
        text: &str,
        meta: aios_actors::memory::MemoryMeta,
    ) -> Result<bool, String> {
        let request = Request::MemoryStore {
            namespace: namespace.to_owned(),
            text: text.to_owned(),
            meta,
        };
        match call(node, &request, MEMORY_TIMEOUT).await {
            Ok(Reply::Stored(r)) => r,
            Ok(Reply::Refused(why)) => Err(format!("node {node} refused: {why}")),
            Ok(_) => Err(format!("node {node} answered another request")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn call(
        &self,
        node: &str,
        op: MemoryOp,
        timeout: Duration,
    ) -> Result<Result<MemoryAnswer, MemoryError>, ForwardError> {
        match call(node, &Request::Memory { op }, timeout).await {
            Ok(Reply::Memory(answer)) => Ok(answer),
            // Refused before it ran (too many in flight, undecodable).
            Ok(Reply::Refused(why)) => Err(ForwardError {
                sent: false,
                closed: false,
                reason: format!("node {node} refused: {why}"),
            }),
            Ok(_) => Err(ForwardError {
                sent: true,
                closed: false,
                reason: format!("node {node} answered another request"),
            }),
            Err(RemoteError::Unreachable(why)) => Err(ForwardError {
                sent: false,
                closed: false,
                reason: format!("not reachable: {why}"),
            }),
            Err(RemoteError::Lost { reason, .. }) => Err(ForwardError {
                sent: true,
                closed: reason == SESSION_CLOSED,
                reason,
            }),
        }
    }
}

#[async_trait::async_trait]
impl RemoteTools for Route {
    fn peers(&self) -> Vec<String> {
        reachable_peers(&self.node)
    }

    async fn call(
        &self,
        node: &str,
        call: RemoteToolCall,
        timeout: Duration,
    ) -> Result<Result<serde_json::Value, ToolCallError>, ToolForwardError> {
        match self::call(node, &Request::Tool { call }, timeout).await {
            Ok(Reply::Tool(answer)) => Ok(answer),
            Ok(Reply::Refused(why)) => Err(ToolForwardError {
                sent: false,
                reason: format!("node {node} refused: {why}"),
            }),
            Ok(_) => Err(ToolForwardError {
                sent: true,
                reason: format!("node {node} answered another request"),
            }),
            Err(RemoteError::Unreachable(why)) => Err(ToolForwardError {
                sent: false,
                reason: format!("not reachable: {why}"),
            }),
            Err(RemoteError::Lost { reason, .. }) => Err(ToolForwardError { sent: true, reason }),
        }
    }
}

/// The names of the other nodes whose gateway is reachable now.
fn reachable_peers(me: &str) -> Vec<String> {
    let prefix = format!("{GROUP_ALL}.");
    ractor::pg::which_groups()
        .into_iter()
        .filter_map(|g| g.strip_prefix(&prefix).map(str::to_owned))
        .filter(|node| node != me && gateway_of(node).is_some())
        .collect()
}

#[async_trait::async_trait]
impl RemoteAgents for Route {
    fn node(&self) -> &str {
        &self.node
    }

    fn tags(&self) -> Vec<String> {
        self.tags.clone()
    }

    fn reachable(&self, node: &str) -> bool {
        gateway_of(node).is_some()
    }

    async fn candidates(&self) -> Vec<Candidate> {
        // One refresh at a time; the others wait for it rather than ask the peers again.
        let mut cached = self.candidates.lock().await;
        if let Some((at, list)) = &*cached
            && at.elapsed() < CANDIDATES_TTL
        {
            return list.clone();
        }
        let list: Vec<Candidate> = peer_stats()
            .await
            .into_iter()
            .map(|s| Candidate {
                node: s.node,
                tags: s.tags,
                load: s.agents_active,
                draining: s.draining,
            })
            .collect();
        *cached = Some((tokio::time::Instant::now(), list.clone()));
        list
    }

    async fn ask(
        &self,
        node: &str,
        agent: &AgentId,
        task: RemoteTask,
    ) -> Result<RemoteReply, RemoteError> {
        let timeout = task.time_left() + REPLY_MARGIN;
        let request = Request::Ask {
            agent: agent.clone(),
            task: Box::new(task),
        };
        match call(node, &request, timeout).await? {
            Reply::Ask(r) => Ok(r),
            Reply::Refused(why) => Ok(RemoteReply::Done(Err(AgentError::Unavailable(format!(
                "node {node} refused the task: {why}"
            ))))),
            _ => Err(lost(node, "answered another request")),
        }
    }

    fn publish(&self, envelope: &Envelope) {
        let gateways = remote_gateways();
        if gateways.is_empty() {
            return;
        }
        let bytes = encode(&Event::Publish(envelope.clone()));
        for cell in gateways {
            let gw: ActorRef<GatewayMsg> = ActorRef::from(cell);
            if let Err(e) = gw.cast(GatewayMsg::Cast(bytes.clone())) {
                tracing::debug!(error = %e, "topic event not sent to a peer");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
