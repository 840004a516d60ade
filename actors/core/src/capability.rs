//! What agents and tools advertise they can do, for capability discovery.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A capability an agent or tool advertises: a name with optional parameters, for example
/// `translate` with `languages = "en,de"`, `cost_class = "low"`, `latency_class = "fast"`.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Capability {
    /// The capability's name.
    pub name: String,
    /// Its parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

impl Capability {
    /// A capability without parameters.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            params: BTreeMap::new(),
        }
    }

    /// Adds a parameter.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.insert(key.into(), value.into());
        self
    }
}
