//! AIOS agents: LLM agents as supervised actors ([`agent`]), what coordinates them
//! ([`orchestration`]: plans, durable runs, sessions, schedules) and what keeps their history
//! bounded ([`retention`]).
//!
//! ```
//! use std::sync::Arc;
//!
//! use aios_agents::agent::tools::ToolBox;
//! use aios_agents::agent::{AgentDef, AgentRegistry, AgentRole, AgentSystem, AgentSystemConfig, Task};
//! use aios_core::protocol::AgentId;
//! use aios_core::records::Records;
//! use aios_llm::cost::CostLedger;
//! use aios_llm::scheduler::{LlmRouter, RateLimiter, RateLimits, Scheduler, SchedulerConfig};
//! use aios_llm::scripted::{Script, ScriptedProvider};
//! use aios_supervisor::snapshot::{SledStore, Snapshots};
//! use aios_supervisor::{Strategy, SupervisorSpec, TreeEnv, start_root};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let snapshots = Snapshots::new(Arc::new(SledStore::temporary().unwrap()));
//! let records = Records::new(snapshots.clone());
//! let root = start_root(
//!     SupervisorSpec::new("root", Strategy::OneForOne),
//!     TreeEnv::new(Some(snapshots)),
//! )
//! .await
//! .unwrap();
//! // One model, `scripted/demo`, behind its scheduler.
//! let ledger = CostLedger::open(records.clone()).await.unwrap();
//! let (spec, scheduler) = Scheduler::spec(
//!     SchedulerConfig::new("scripted", "demo"),
//!     Arc::new(ScriptedProvider::new("scripted", Script::default())),
//!     Arc::new(RateLimiter::new(RateLimits::default())),
//!     ledger,
//! )
//! .unwrap();
//! root.supervisor().start_child(spec).await.unwrap();
//! let agents = root
//!     .supervisor()
//!     .start_supervisor(SupervisorSpec::dynamic("agents"))
//!     .await
//!     .unwrap();
//! let system = AgentSystem::start(
//!     agents,
//!     LlmRouter::new(vec![scheduler]).unwrap(),
//!     ToolBox::with_builtins(),
//!     AgentRegistry::open(records).await.unwrap(),
//!     None,
//!     AgentSystemConfig::default(),
//! );
//! let mut writer = AgentDef::new("writer", AgentRole::Executor, "scripted/demo", "You write.");
//! writer.tools = vec!["calculator".into()];
//! system.registry().create(writer).await.unwrap();
//! // The agent is activated by its first task, under the `agents` supervisor.
//! let out = system
//!     .ask(&AgentId::main("writer"), Task::new("what is 6 * 7?"))
//!     .await
//!     .unwrap();
//! assert!(out.text.contains("42"), "{}", out.text);
//! assert_eq!(system.active_count(), 1);
//! # root.shutdown(std::time::Duration::from_secs(5)).await.unwrap();
//! # });
//! ```
//!
//! Architecture invariant: agents reach memory and tools only through the traits of
//! `aios-core` ([`aios_core::MemoryHook`], [`aios_core::Tool`]); this crate depends on
//! `aios-llm` and `aios-core`, never on `aios-memory` or `aios-tools`.
#![warn(missing_docs)]

pub mod agent;
pub mod orchestration;
pub mod retention;
