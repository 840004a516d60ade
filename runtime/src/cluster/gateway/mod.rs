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
//!
//! `wire.rs` holds the messages and their encoding, `server.rs` the gateway actor that
//! serves them, `client.rs` the calls to other nodes and the [`Route`] built on them.

mod client;
mod server;
mod wire;

pub use self::client::{Route, echo, peer_stats};
pub(in crate::cluster) use self::client::{gateway_of, remote_gateways};
pub(in crate::cluster) use self::server::start;
pub(in crate::cluster) use self::wire::{Event, encode};
pub use self::wire::{GROUP_ALL, GatewayMsg, INFLIGHT_MAX, WIRE_VERSION, group_of};
