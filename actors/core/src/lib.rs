//! AIOS core: the vocabulary every subsystem above the supervisor shares, so that subsystems
//! depend on it and not on each other.
//!
//! - [`name`]: validated names ([`AgentName`], [`Tenant`], [`Namespace`], [`NodeName`],
//!   [`Tag`], [`ToolName`]), each with its one validator and serde that checks it;
//! - [`id`]: [`AgentId`], an agent instance;
//! - [`capability`]: [`Capability`], what agents and tools advertise;
//! - [`placement`]: [`Placement`], where a cluster activates an agent or places a shard;
//! - [`memory`]: [`MemoryHook`] and [`MemoryMeta`], what an agent needs from memory;
//! - [`tool`]: the one [`Tool`] trait, its context and error, and [`ToolSource`];
//! - [`keyspace`]: every prefix of the storage key space, with its owner, tenant scope,
//!   fencing and durability.
//! - [`records`]: typed, versioned records in a node's snapshot store;
//! - [`protocol`]: the inter-agent [`protocol::Envelope`];
//! - [`outbound`]: the outbound-request guard every request to a tenant-chosen destination
//!   passes (webhooks, `web_fetch`).
//!
//! ```
//! use aios_core::{AgentName, Tenant};
//!
//! let tenant = Tenant::new("acme").unwrap();
//! let agent: AgentName = "writer".parse().unwrap();
//! assert_eq!(format!("{tenant}.{agent}"), "acme.writer");
//! assert!(AgentName::new("no spaces").is_err());
//! ```
//!
//! Architecture invariant: this crate knows nothing of actors or any subsystem; it depends
//! only on `aios-supervisor` (the store's node-name rule, snapshot frames for records) and
//! libraries (`reqwest` only for the outbound guard's resolver and redirect policy).
#![warn(missing_docs)]

pub mod capability;
pub mod id;
pub mod keyspace;
pub mod memory;
pub mod name;
pub mod outbound;
pub mod placement;
pub mod protocol;
pub mod records;
pub mod tool;

pub use self::capability::Capability;
pub use self::id::AgentId;
pub use self::memory::{MemoryHook, MemoryMeta};
pub use self::name::{AgentName, NameError, Namespace, NodeName, Tag, Tenant, ToolName};
pub use self::placement::{Candidate, Placement};
pub use self::tool::{
    TOOL_OUTPUT_LEN_MAX, TOOL_TIMEOUT, Tool, ToolContext, ToolError, ToolRequirement, ToolSource,
    ToolSpec,
};
