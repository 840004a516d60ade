//! Grants: who may call which tools. [`Grants`] owns the persisted grants (made through
//! [`ToolService::grant`], kept in the record `toolgrants`) and the node's configured ones
//! (from its configuration, for this run only).
//!
//! Architecture invariant: the persisted list in memory changes only after the store wrote
//! the new list durably, one change at a time (`write`), so a grant a caller was told of
//! survives a crash and a failed write changes nothing.

use std::sync::Mutex;

use aios_core::records::Records;
use aios_supervisor::snapshot::Durability;
use serde::Serialize;

use super::ToolService;
use super::registry::ToolRegistryError;
use super::service::{CallContext, JsonRecord, lock, store_err};

/// The record of the persisted grants.
const GRANTS_KEY: &str = aios_core::keyspace::TOOL_GRANTS;

/// Persisted grants at most.
pub const GRANTS_MAX: usize = 10_000;

/// A grant: who may call which tools. Empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Only this agent.
    #[serde(default)]
    pub agent: Option<String>,
    /// Only agents with this role.
    #[serde(default)]
    pub role: Option<String>,
    /// Only this tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Tool names (`*` for all).
    pub tools: Vec<String>,
}

impl Grant {
    /// A stable id for it: the first 16 hex digits of the SHA-256 of its JSON.
    pub fn id(&self) -> String {
        use sha2::Digest as _;
        let json = serde_json::to_string(self).unwrap_or_default();
        sha2::Sha256::digest(json.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether it may apply to some agent of `tenant` (whatever its agent and role fields).
    pub fn reaches_tenant(&self, tenant: &str) -> bool {
        self.tenant.as_ref().is_none_or(|t| t == tenant)
    }

    /// Whether it lets the caller `ctx` call tool `tool`.
    fn allows(&self, ctx: &CallContext, tool: &str) -> bool {
        self.agent.as_ref().is_none_or(|a| a == &ctx.agent)
            && self.role.as_ref().is_none_or(|r| r == &ctx.role)
            && self.tenant.as_ref().is_none_or(|t| t == &ctx.tenant)
            && self.tools.iter().any(|t| t == "*" || t == tool)
    }
}

/// The grants of a node: persisted, then configured.
#[derive(Default)]
pub(crate) struct Grants {
    persisted: Mutex<Vec<Grant>>,
    node: Mutex<Vec<Grant>>,
    /// Serialises changes to the persisted grants.
    write: tokio::sync::Mutex<()>,
}

impl Grants {
    /// The grants persisted in `records`.
    ///
    /// # Errors
    /// Store failures or an unreadable record.
    pub(crate) async fn load(records: &Records) -> Result<Self, ToolRegistryError> {
        let persisted: Vec<Grant> = match records
            .get::<JsonRecord>(GRANTS_KEY)
            .await
            .map_err(store_err)?
        {
            Some(r) => serde_json::from_str(&r.json)
                .map_err(|e| ToolRegistryError::Store(format!("{GRANTS_KEY}: {e}")))?,
            None => Vec::new(),
        };
        Ok(Self {
            persisted: Mutex::new(persisted),
            ..Self::default()
        })
    }

    /// Whether some grant lets the caller `ctx` call tool `tool`.
    pub(crate) fn allows(&self, ctx: &CallContext, tool: &str) -> bool {
        lock(&self.persisted).iter().any(|g| g.allows(ctx, tool))
            || lock(&self.node).iter().any(|g| g.allows(ctx, tool))
    }

    /// Writes `grants` as the persisted list, then uses it. The caller holds `write`.
    async fn save(&self, records: &Records, grants: Vec<Grant>) -> Result<(), ToolRegistryError> {
        let json = serde_json::to_string(&grants).map_err(store_err)?;
        records
            .put(GRANTS_KEY, &JsonRecord { json }, Durability::Durable)
            .await
            .map_err(store_err)?;
        *lock(&self.persisted) = grants;
        Ok(())
    }
}

impl ToolService {
    /// Adds a grant and persists it (an identical grant is not added twice).
    ///
    /// # Errors
    /// An empty tool list, too many grants, or a store failure (then nothing changed).
    pub async fn grant(&self, grant: Grant) -> Result<(), ToolRegistryError> {
        if grant.tools.is_empty() || grant.tools.iter().any(|t| t.is_empty()) {
            return Err(ToolRegistryError::Store(
                "a grant names at least one tool (or \"*\"), none empty".into(),
            ));
        }
        let grants = &self.inner.grants;
        let _w = grants.write.lock().await;
        let mut next = lock(&grants.persisted).clone();
        if next.contains(&grant) {
            return Ok(());
        }
        if next.len() >= GRANTS_MAX {
            return Err(ToolRegistryError::Store(format!(
                "at most {GRANTS_MAX} grants"
            )));
        }
        next.push(grant);
        grants.save(self.registry().records(), next).await
    }

    /// Removes a grant; returns whether it existed.
    ///
    /// # Errors
    /// A store failure (then nothing changed).
    pub async fn revoke(&self, grant: &Grant) -> Result<bool, ToolRegistryError> {
        let grants = &self.inner.grants;
        let _w = grants.write.lock().await;
        let mut next = lock(&grants.persisted).clone();
        let before = next.len();
        next.retain(|g| g != grant);
        if next.len() == before {
            return Ok(false);
        }
        grants
            .save(self.registry().records(), next)
            .await
            .map(|()| true)
    }

    /// Adds a grant for this run of the node only (from its configuration; not persisted).
    pub fn grant_node(&self, grant: Grant) {
        lock(&self.inner.grants.node).push(grant);
    }

    /// The persisted grants (made through [`ToolService::grant`]).
    pub fn persisted_grants(&self) -> Vec<Grant> {
        lock(&self.inner.grants.persisted).clone()
    }

    /// The node's configured grants (not persisted).
    pub fn node_grants(&self) -> Vec<Grant> {
        lock(&self.inner.grants.node).clone()
    }

    /// Whether some grant lets an agent of `tenant` call tool `name`.
    pub fn tenant_may_use(&self, tenant: &str, name: &str) -> bool {
        let covers =
            |g: &Grant| g.reaches_tenant(tenant) && g.tools.iter().any(|t| t == "*" || t == name);
        let grants = &self.inner.grants;
        lock(&grants.persisted).iter().any(covers) || lock(&grants.node).iter().any(covers)
    }

    /// The persisted grants, then the node's configured ones.
    pub fn grants(&self) -> Vec<Grant> {
        let grants = &self.inner.grants;
        let mut all = lock(&grants.persisted).clone();
        all.extend(lock(&grants.node).iter().cloned());
        all
    }
}
