//! AIOS: a runtime for AI agents that must run for months, built on supervised, persistent
//! actors.
//!
//! This facade re-exports what an application needs to open a node, spawn supervised actors
//! that keep their state across crashes, and look them up:
//!
//! ```no_run
//! use std::time::Duration;
//! use aios::demo::{Counter, CounterMsg};
//! use aios::{Persistence, Runtime, RuntimeConfig, WorkerSpec};
//!
//! # async fn run() -> anyhow::Result<()> {
//! let rt = Runtime::open(RuntimeConfig::new("./aios-data")).await?;
//! let counter = rt
//!     .services()
//!     .start_worker(WorkerSpec::new("visits", Counter).persistent(Persistence::new("demo/visits")))
//!     .await?;
//! let n = counter.call(|r| CounterMsg::Add(1, r), Duration::from_secs(5)).await?;
//! println!("visit number {n}, durable before this line printed");
//! rt.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! See `ARCHITECTURE.md` for the crates behind it and `docs/runtime-semantics.md` for the
//! contract (ordering, restarts, mailboxes, durability).
#![warn(missing_docs)]

pub mod demo;

/// Agents, LLM providers and the scheduler, cost tracking, the agent protocol.
pub use aios_actors as actors;
pub use aios_runtime::{Runtime, RuntimeConfig, RuntimeError};
pub use aios_supervisor::snapshot::{
    self, Durability, Migrations, OnCorrupt, Persistence, SnapshotError, SnapshotPolicy,
};
pub use aios_supervisor::{
    ActorHandle, Backoff, CallError, ChildCounts, ChildInfo, ChildKind, ChildSpec, ChildStatus,
    Context, EventKind, ExitReason, PersistentWorker, Restart, SendError, Shutdown, Strategy,
    SupervisionEvent, SupervisorError, SupervisorRef, SupervisorSpec, Worker, WorkerSpec, event,
};
/// ractor, for reply ports (`RpcReplyPort`) and `ActorProcessingErr`.
pub use ractor;
