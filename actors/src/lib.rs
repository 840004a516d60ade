//! AIOS actors: agents, tools and memory shards, each a supervised [`aios_supervisor::Worker`].
//!
//! The modules are placeholders until their issues land; the crate exists now so that the
//! dependency direction (`aios-supervisor` ← `aios-actors` ← `aios-runtime`) is fixed from the
//! start.
#![warn(missing_docs)]

pub mod agent {
    //! LLM agent actors, their registry and the LLM scheduler (the agents issue).
}

pub mod memory {
    //! Sharded vector memory actors (the memory issue).
}

pub mod tools {
    //! Tool actors and the plugin registry (the tools issue).
}
