//! Node bootstrap for AIOS: open the data directory and the snapshot store, start the root
//! supervision tree, and stop it in order.
//!
//! The tree every node starts with:
//!
//! ```text
//! (root)            one_for_one, 3 restarts in 30 s
//! ├── services      one_for_one, 5 restarts in 10 s        daemon services (later issues)
//! ├── memory        dynamic, 20 restarts in 10 s, backoff  memory shards
//! ├── tools         dynamic, 20 restarts in 10 s, backoff  tools
//! ├── agents        dynamic, 20 restarts in 10 s, backoff  agents
//! └── runs          dynamic, 20 restarts in 10 s, backoff  orchestration runs
//! ```
//!
//! Children start in that order and stop in reverse: runs stop before the agents they drive,
//! agents before the tools and memory they use.
//!
//! ```no_run
//! # async fn run() -> Result<(), aios_runtime::RuntimeError> {
//! let rt = aios_runtime::Runtime::open(aios_runtime::RuntimeConfig::new("./aios-data")).await?;
//! let agents = rt.agents(); // start agents here with `agents.start_worker(..)`
//! # let _ = agents;
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
