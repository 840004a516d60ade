//! Node bootstrap for AIOS: open the data directory and the snapshot store, start the root
//! supervision tree, and stop it in order.
//!
//! The tree every node starts with:
//!
//! ```text
//! (root)            one_for_one, 3 restarts in 30 s
//! ├── services      one_for_one, 5 restarts in 10 s        LLM schedulers, node services
//! ├── memory        dynamic, 20 restarts in 10 s, backoff  memory shards
//! ├── tools         dynamic, 20 restarts in 10 s, backoff  tools
//! ├── agents        dynamic, 20 restarts in 10 s, backoff  agents
//! └── runs          dynamic, 20 restarts in 10 s, backoff  orchestration runs
//! ```
//!
//! Children start in that order and stop in reverse: runs stop before the agents they drive,
//! agents before the tools and memory they use.
//!
//! A node on the offline `scripted/demo` model, an agent defined and asked, and the node
//! stopped:
//!
//! ```
//! use aios_actors::agent::{AgentDef, AgentRole, Task};
//! use aios_actors::protocol::AgentId;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let data_dir = dir.path();
//! let rt = aios_runtime::Runtime::open(aios_runtime::RuntimeConfig::new(data_dir)).await?;
//! let agents = rt.agent_system();
//! agents
//!     .registry()
//!     .create(AgentDef::new("echo", AgentRole::Executor, "scripted/demo", "Be brief."))
//!     .await?;
//! let out = agents.ask(&AgentId::main("echo"), Task::new("hello")).await?;
//! assert!(out.text.contains("hello"), "{}", out.text);
//! rt.shutdown().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod cluster;
mod config;
pub mod daemon;
mod node;

pub use crate::config::{
    BUFFERED_FLUSH_EVERY_MAX, RuntimeConfig, StoreBackend, StoreConfig, redact_url,
};
pub use crate::node::{Runtime, RuntimeError};
