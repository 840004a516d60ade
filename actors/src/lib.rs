//! AIOS actors: LLM providers and their scheduler, agents, tools and memory shards, each a
//! supervised [`aios_supervisor::Worker`].
#![warn(missing_docs)]

pub mod cost;
pub mod llm;
pub mod protocol;
pub mod records;
pub mod retention;
pub mod scheduler;

pub mod agent;
pub mod orchestration;
pub mod outbound;

pub mod memory;

pub mod tools;
