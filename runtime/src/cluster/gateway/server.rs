//! This node's gateway actor: it serves the requests and events other nodes send.

use std::sync::Arc;

use aios_actors::memory::MemoryError;
use aios_actors::tools::ToolCallError;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Semaphore;

use super::wire::{
    Event, GROUP_ALL, GatewayMsg, INFLIGHT_MAX, Reply, Request, decode, encode, group_of,
};
use crate::cluster::Served;
use crate::cluster::relay::Relay;

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
pub(in crate::cluster) async fn start(
    node: &str,
    served: Served,
    relay: Arc<Relay>,
) -> Result<ActorRef<GatewayMsg>, ractor::SpawnErr> {
    let (gateway, _) = Actor::spawn(None, Gateway, (node.to_owned(), served, relay)).await?;
    Ok(gateway)
}
