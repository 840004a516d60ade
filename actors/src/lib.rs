//! AIOS actors: one front for the crates under `actors/`, so that code above them (the
//! daemon, the examples, the benchmarks) names one crate. Each module is a crate of its own:
//!
//! | module | crate | holds |
//! |---|---|---|
//! | [`llm`], [`scheduler`], [`cost`] | `aios-llm` | providers, the LLM scheduler and router, tenant quotas, the cost ledger |
//! | [`memory`] | `aios-memory` | vector memory: namespaces, shard actors, embedders, placement, migration, backup |
//! | [`tools`] | `aios-tools` | the tool registry and service, built-in tools, MCP, tool actors |
//! | [`agent`], [`orchestration`], [`retention`] | `aios-agents` | LLM agents, plans, runs, sessions, schedules, retention of history |
//! | [`records`], [`protocol`], [`outbound`] | `aios-core` | records, the inter-agent envelope, the outbound-request guard |
//!
//! Architecture invariant: the crates depend on each other only downwards, in the order
//! `aios-core` < `aios-llm` < `aios-memory` < `aios-tools`, and `aios-core` < `aios-llm` <
//! `aios-agents`; agents reach memory and tools only through the traits of `aios-core`.
//!
//! ```
//! use aios_actors::llm::scripted::{Script, ScriptedProvider};
//! use aios_actors::llm::{ChatMessage, ChatRequest, Provider};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let provider = ScriptedProvider::new("scripted", Script::default());
//! let request = ChatRequest {
//!     model: "demo".into(),
//!     messages: vec![ChatMessage::user("hello")],
//!     ..ChatRequest::default()
//! };
//! let response = provider.chat(&request, None).await.unwrap();
//! assert!(response.message.content.starts_with("[scripted]"));
//! # });
//! ```
#![warn(missing_docs)]

pub use aios_agents::{agent, orchestration, retention};
pub use aios_core::{outbound, protocol, records};
pub use aios_llm as llm;
pub use aios_llm::{cost, scheduler};
pub use aios_memory as memory;
pub use aios_tools as tools;
