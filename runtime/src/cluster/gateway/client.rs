//! Reaching other nodes through their gateways: calls, statistics, and the [`Route`] that
//! agents, memory and tools use to forward work.

use std::time::Duration;

use aios_actors::agent::{
    AgentError, Candidate, RemoteAgents, RemoteError, RemoteReply, RemoteTask,
};
use aios_actors::memory::{ForwardError, MemoryAnswer, MemoryError, MemoryOp, RemoteMemory};
use aios_actors::protocol::{AgentId, Envelope};
use aios_actors::tools::{RemoteToolCall, RemoteTools, ToolCallError, ToolForwardError};
use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorRef};

use crate::cluster::NodeStats;

use super::wire::{Event, GROUP_ALL, GatewayMsg, Reply, Request, decode, encode, group_of};

/// Added to a forwarded task's deadline before its caller gives up on the node.
const REPLY_MARGIN: Duration = Duration::from_secs(2);
/// How often a caller waiting on a node checks that its session is still up.
const SESSION_CHECK_EVERY: Duration = Duration::from_millis(200);
/// The longest a statistics call to a peer waits.
const STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// A remote node's gateway, when its session is ready.
pub(in crate::cluster) fn gateway_of(node: &str) -> Option<ActorRef<GatewayMsg>> {
    ractor::pg::get_members(&group_of(node))
        .into_iter()
        .find(|c| !c.get_id().is_local())
        .map(ActorRef::from)
}

/// Every other node's gateway.
pub(in crate::cluster) fn remote_gateways() -> Vec<ActorCell> {
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
#[derive(Debug)]
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
