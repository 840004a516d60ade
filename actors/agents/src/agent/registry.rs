//! The agent registry: versioned, persisted definitions and capability discovery.
//!
//! Keys in the store: `agentdef/<name>/head` (the current and latest versions) and
//! `agentdef/<name>/v/<version, 10 digits>` (every version, immutable). An update writes a
//! new version; a rollback writes a copy of an old one as the newest version, so history is
//! linear and nothing is overwritten.

use std::collections::BTreeMap;
use std::sync::Arc;

use aios_supervisor::snapshot::{Durability, SnapshotError};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::definition::{AGENT_DEF_SCHEMA_VERSION, AgentDef, Capability, decode_def};
use aios_core::records::Records;

/// Key prefix of definitions.
pub(super) const DEF_KEY_PREFIX: &str = aios_core::keyspace::AGENT_DEF;
/// The most agent definitions a node holds.
pub(super) const AGENT_DEFS_MAX: usize = 100_000;
/// The most versions kept per agent (older ones are pruned).
pub(super) const AGENT_VERSIONS_MAX: u32 = 1000;

/// A registry failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The definition is invalid.
    #[error("invalid agent definition: {0}")]
    Invalid(String),
    /// `create` of a name that exists.
    #[error("agent {0:?} already exists")]
    Exists(String),
    /// No such agent (or version).
    #[error("agent {0:?} not found")]
    NotFound(String),
    /// [`AGENT_DEFS_MAX`] reached.
    #[error("the node holds the maximum of {AGENT_DEFS_MAX} agent definitions")]
    Full,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] SnapshotError),
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Head {
    current: u32,
    latest: u32,
}

/// A capability match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapabilityMatch {
    /// The agent's name.
    pub agent: String,
    /// Its model.
    pub model: String,
    /// The matching capability with its parameters.
    pub capability: Capability,
}

/// A request for the best agent with a capability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapabilityQuery {
    /// The capability's name.
    pub capability: String,
    /// Only agents on this `provider/model`.
    pub model: Option<String>,
    /// Highest acceptable `cost_class` (`free` < `low` < `medium` < `high`); agents without
    /// one count as `medium`.
    pub cost_ceiling: Option<String>,
    /// Slowest acceptable `latency_class` (`fast` < `normal` < `slow`); missing counts as
    /// `normal`.
    pub latency_class: Option<String>,
    /// Parameters that must be present with these values (a comma-separated parameter
    /// matches when it contains the value, e.g. `languages = "en,de"` matches `de`).
    pub params: BTreeMap<String, String>,
    /// Agents not to choose (for example ones that already failed the task).
    pub exclude: Vec<String>,
    /// Only agents whose name starts with this (a tenant's agents).
    pub name_prefix: Option<String>,
}

fn cost_rank(c: Option<&str>) -> u8 {
    match c {
        Some("free") => 0,
        Some("low") => 1,
        Some("high") => 3,
        _ => 2,
    }
}

fn latency_rank(c: Option<&str>) -> u8 {
    match c {
        Some("fast") => 0,
        Some("slow") => 2,
        _ => 1,
    }
}

type Current = BTreeMap<String, (Head, Arc<AgentDef>)>;
/// Readers' copy: name → (current version, definition).
type Published = BTreeMap<String, (u32, Arc<AgentDef>)>;

/// Versioned agent definitions. Cheap to clone.
#[derive(Clone)]
pub struct AgentRegistry {
    records: Records,
    /// Current definitions by name; writes are serialised by this lock.
    current: Arc<Mutex<Current>>,
    /// A lock-free copy of the current definitions and their version numbers for readers.
    snapshot: Arc<arc_swap::ArcSwap<Published>>,
}

impl std::fmt::Debug for AgentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRegistry")
            .field("agents", &self.snapshot.load().len())
            .finish()
    }
}

fn head_key(name: &str) -> String {
    format!("{DEF_KEY_PREFIX}{name}/head")
}

fn version_key(name: &str, v: u32) -> String {
    format!("{DEF_KEY_PREFIX}{name}/v/{v:010}")
}

impl AgentRegistry {
    /// Loads every persisted definition.
    ///
    /// # Errors
    /// A store failure or a corrupt record.
    pub async fn open(records: Records) -> Result<Self, RegistryError> {
        let current = Self::load(&records).await?;
        let reg = Self {
            records,
            snapshot: Arc::new(arc_swap::ArcSwap::from_pointee(BTreeMap::new())),
            current: Arc::new(Mutex::new(current)),
        };
        reg.publish(&*reg.current.lock().await);
        Ok(reg)
    }

    /// Reads the definitions again from the store, for a store that other nodes write too:
    /// definitions created, changed or deleted there appear here. Returns how many names
    /// changed (added, removed, or at another version).
    ///
    /// # Errors
    /// A store failure or a corrupt record; the definitions in memory are then kept.
    pub async fn reload(&self) -> Result<usize, RegistryError> {
        let fresh = Self::load(&self.records).await?;
        let mut current = self.current.lock().await;
        let changed = fresh
            .iter()
            .filter(|(name, (head, _))| {
                current
                    .get(*name)
                    .is_none_or(|(h, _)| h.current != head.current || h.latest != head.latest)
            })
            .count()
            + current.keys().filter(|n| !fresh.contains_key(*n)).count();
        if changed > 0 {
            *current = fresh;
            self.publish(&current);
        }
        Ok(changed)
    }

    async fn load(records: &Records) -> Result<Current, RegistryError> {
        let mut current = BTreeMap::new();
        for key in records
            .keys(
                DEF_KEY_PREFIX,
                AGENT_DEFS_MAX * (AGENT_VERSIONS_MAX as usize + 1),
            )
            .await?
        {
            let Some(name) = key
                .strip_prefix(DEF_KEY_PREFIX)
                .and_then(|r| r.strip_suffix("/head"))
            else {
                continue;
            };
            let Some(head) = records.get::<Head>(&key).await? else {
                continue;
            };
            let def = records
                .get_versioned(&version_key(name, head.current), decode_def)
                .await?
                .ok_or_else(|| RegistryError::NotFound(format!("{name} v{}", head.current)))?;
            current.insert(name.to_string(), (head, Arc::new(def)));
        }
        Ok(current)
    }

    fn publish(&self, current: &Current) {
        self.snapshot.store(Arc::new(
            current
                .iter()
                .map(|(k, (h, d))| (k.clone(), (h.current, d.clone())))
                .collect(),
        ));
    }

    async fn write_version(&self, def: &AgentDef, head: Head) -> Result<(), RegistryError> {
        self.records
            .put_versioned(
                &version_key(&def.name, head.latest),
                def,
                AGENT_DEF_SCHEMA_VERSION,
                Durability::Buffered,
            )
            .await?;
        self.records
            .put(&head_key(&def.name), &head, Durability::Durable)
            .await?;
        if head.latest > AGENT_VERSIONS_MAX {
            let old = head.latest - AGENT_VERSIONS_MAX;
            if old != head.current {
                self.records.delete(&version_key(&def.name, old)).await?;
            }
        }
        Ok(())
    }

    /// Creates an agent (version 1).
    ///
    /// # Errors
    /// [`RegistryError::Invalid`], [`RegistryError::Exists`], [`RegistryError::Full`], or a
    /// store failure.
    pub async fn create(&self, def: AgentDef) -> Result<u32, RegistryError> {
        def.validate().map_err(RegistryError::Invalid)?;
        let mut current = self.current.lock().await;
        if current.contains_key(&def.name) {
            return Err(RegistryError::Exists(def.name));
        }
        if current.len() >= AGENT_DEFS_MAX {
            return Err(RegistryError::Full);
        }
        let head = Head {
            current: 1,
            latest: 1,
        };
        self.write_version(&def, head).await?;
        current.insert(def.name.clone(), (head, Arc::new(def)));
        self.publish(&current);
        Ok(1)
    }

    /// Writes a new version of an existing agent; returns its number.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`], [`RegistryError::NotFound`], or a store failure.
    pub async fn update(&self, def: AgentDef) -> Result<u32, RegistryError> {
        def.validate().map_err(RegistryError::Invalid)?;
        let mut current = self.current.lock().await;
        let Some((head, _)) = current.get(&def.name) else {
            return Err(RegistryError::NotFound(def.name));
        };
        let v = head.latest + 1;
        let head = Head {
            current: v,
            latest: v,
        };
        self.write_version(&def, head).await?;
        current.insert(def.name.clone(), (head, Arc::new(def)));
        self.publish(&current);
        Ok(v)
    }

    /// Makes version `version` current again, as a new version; returns its number.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown agent or version, or a store failure.
    pub async fn rollback(&self, name: &str, version: u32) -> Result<u32, RegistryError> {
        let old = self
            .version(name, version)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("{name} v{version}")))?;
        self.update(old).await
    }

    /// Deletes an agent and all its versions.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], or a store failure.
    pub async fn delete(&self, name: &str) -> Result<(), RegistryError> {
        let mut current = self.current.lock().await;
        let Some(head) = current.get(name).map(|(h, _)| *h) else {
            return Err(RegistryError::NotFound(name.to_string()));
        };
        self.records.delete(&head_key(name)).await?;
        for v in 1..=head.latest {
            self.records.delete(&version_key(name, v)).await?;
        }
        current.remove(name);
        self.publish(&current);
        Ok(())
    }

    /// The current definition.
    pub fn get(&self, name: &str) -> Option<Arc<AgentDef>> {
        self.snapshot.load().get(name).map(|(_, d)| d.clone())
    }

    /// The current definition with its version number, read together without locking.
    pub fn current(&self, name: &str) -> Option<(u32, Arc<AgentDef>)> {
        self.snapshot.load().get(name).cloned()
    }

    /// The current version number and the latest.
    pub async fn head(&self, name: &str) -> Option<(u32, u32)> {
        self.current
            .lock()
            .await
            .get(name)
            .map(|(h, _)| (h.current, h.latest))
    }

    /// One version of a definition.
    ///
    /// # Errors
    /// A store failure.
    pub async fn version(
        &self,
        name: &str,
        version: u32,
    ) -> Result<Option<AgentDef>, RegistryError> {
        Ok(self
            .records
            .get_versioned(&version_key(name, version), decode_def)
            .await?)
    }

    /// The record store the registry writes to.
    pub(crate) fn records(&self) -> &Records {
        &self.records
    }

    /// Every current definition, by name.
    pub fn list(&self) -> Vec<Arc<AgentDef>> {
        self.snapshot
            .load()
            .values()
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Every agent with capability `name`.
    pub fn who_can(&self, name: &str) -> Vec<CapabilityMatch> {
        self.snapshot
            .load()
            .values()
            .flat_map(|(_, d)| {
                d.capabilities
                    .iter()
                    .filter(|c| c.name == name)
                    .map(|c| CapabilityMatch {
                        agent: d.name.clone(),
                        model: d.model.clone(),
                        capability: c.clone(),
                    })
            })
            .collect()
    }

    /// The best agent for `query`: matching constraints, then cheapest, then fastest, then
    /// by name.
    ///
    /// # Errors
    /// When none matches, says how many had the capability and why they were refused.
    pub fn negotiate(&self, query: &CapabilityQuery) -> Result<CapabilityMatch, String> {
        // Agents outside the name prefix (another tenant's) are not counted, nor named in
        // the error: a tenant learns nothing of another's agents.
        let candidates: Vec<CapabilityMatch> = self
            .who_can(&query.capability)
            .into_iter()
            .filter(|m| {
                query
                    .name_prefix
                    .as_ref()
                    .is_none_or(|p| m.agent.starts_with(p.as_str()))
            })
            .collect();
        if candidates.is_empty() {
            return Err(format!("no agent has capability {:?}", query.capability));
        }
        let total = candidates.len();
        let cost_ceiling = query.cost_ceiling.as_deref().map(|c| cost_rank(Some(c)));
        let latency_max = query
            .latency_class
            .as_deref()
            .map(|c| latency_rank(Some(c)));
        let rank = |m: &CapabilityMatch| {
            (
                cost_rank(m.capability.params.get("cost_class").map(String::as_str)),
                latency_rank(m.capability.params.get("latency_class").map(String::as_str)),
            )
        };
        candidates
            .into_iter()
            .filter(|m| !query.exclude.contains(&m.agent))
            .filter(|m| query.model.as_ref().is_none_or(|model| &m.model == model))
            .filter(|m| cost_ceiling.is_none_or(|c| rank(m).0 <= c))
            .filter(|m| latency_max.is_none_or(|l| rank(m).1 <= l))
            .filter(|m| {
                query.params.iter().all(|(k, want)| {
                    m.capability
                        .params
                        .get(k)
                        .is_some_and(|have| have.split(',').any(|h| h.trim() == want))
                })
            })
            .min_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.agent.cmp(&b.agent)))
            .ok_or_else(|| {
                format!(
                    "none of the {total} agents with capability {:?} meets the constraints {query:?}",
                    query.capability
                )
            })
    }
}
