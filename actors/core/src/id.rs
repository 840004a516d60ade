//! Identifiers that cross module, node and process boundaries.

use serde::{Deserialize, Serialize};

/// An agent instance: an agent type (a definition's name) and a key. Instances are
/// activated on their first message (virtual actors).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AgentId {
    /// The definition's name.
    pub name: String,
    /// The instance key (`main` for the agent's default instance; a session id for a
    /// per-session instance).
    pub key: String,
}

impl AgentId {
    /// The default instance of agent `name`.
    pub fn main(name: impl Into<String>) -> Self {
        Self::new(name, "main")
    }

    /// Instance `key` of agent `name`.
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            key: key.into(),
        }
    }
}

impl std::fmt::Display for AgentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.name, self.key)
    }
}
