//! LLM agents: definitions ([`AgentDef`]) kept versioned in the [`AgentRegistry`], agent
//! actors that run the tool-call loop through the LLM scheduler with their conversation in a
//! durable snapshot, an event stream per agent, capability discovery, and the
//! [`AgentSystem`] that activates agents on their first message and passivates idle ones.

mod actor;
pub mod busy;
pub mod context;
mod definition;
mod events;
mod kernel;
pub use aios_core::placement;
mod registry;
pub mod remote;
pub mod short_term;
mod system;
mod templates;
pub mod tools;
pub mod transcript;

pub use self::actor::{
    AGENT_STATE_SCHEMA_VERSION, AgentError, AgentMsg, AgentState, RECENT_RESULTS_MAX, Task,
    TaskOutput,
};
pub use self::busy::{BusyPolicy, OnBusy};
pub use self::context::CONVERSATION_LEN_MAX;
pub use self::definition::{
    AGENT_DEF_SCHEMA_VERSION, AGENT_NAME_LEN_MAX, AgentDef, AgentRole, Capability, Limits,
    validate_name,
};
pub use self::events::{AGENT_EVENTS_BUFFER, AgentEvent, AgentEventKind, EventHub, EventRelay};
pub use self::kernel::Kernel;
pub use self::registry::{AgentRegistry, CapabilityMatch, CapabilityQuery, RegistryError};
pub use self::remote::{RemoteAgents, RemoteError, RemoteReply, RemoteTask};
pub use self::system::{AgentSystem, AgentSystemConfig, DrainReport, snapshot_key};
pub use self::templates::{Template, TemplateError, builtin_templates};
pub use self::transcript::{TranscriptEntry, transcript_prefix};
pub use aios_core::MemoryHook;
pub use aios_core::{Candidate, Placement};
