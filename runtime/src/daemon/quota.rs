//! Per-tenant daily request quotas. Counters live in memory, are written every
//! [`QUOTA_FLUSH_INTERVAL`] and at shutdown, and are read back at start, so a restart keeps
//! the day's count (a `kill -9` may forget the last interval's requests: a quota is a limit on
//! use, not an acknowledgement).
//!
//! On a store that the nodes of a cluster share, each node writes only its own counters
//! (`quota@<node>/<tenant>`) and adds the other nodes' counters of the day, read back at every
//! flush: two nodes serving one tenant at once never overwrite each other's counts, and a
//! tenant's quota holds across nodes up to one flush interval late.

use std::sync::Arc;
use std::time::Duration;

use aios_actors::records::Records;
use aios_actors::scheduler::TenantQuota;
use aios_supervisor::snapshot::Durability;
use axum::http::StatusCode;
use dashmap::DashMap;

use super::http::Problem;

/// How often changed counters are written.
pub const QUOTA_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Tenants counted at most (beyond, new tenants are not limited by the day quota).
pub const QUOTA_TENANTS_MAX: usize = 100_000;
/// Nodes whose counters a node reads on a shared store, at most.
const OTHER_NODES_MAX: usize = 64;
const PREFIX: &str = aios_core::keyspace::QUOTA;
/// The prefix of every node's counters on a shared store.
const NODE_PREFIX: &str = aios_core::keyspace::QUOTA_PER_NODE;
const DAY_MS: u64 = 24 * 3600 * 1000;
/// Daily request counters per tenant, and the check of the tenants' LLM budgets
/// ([`TenantQuota`], which the LLM router also reserves from before every call). Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Quotas {
    records: Records,
    requests_per_day: u64,
    llm: Option<TenantQuota>,
    /// tenant → (UTC day number, requests that day, written?)
    counts: Arc<DashMap<String, (u64, u64, bool)>>,
    /// tenant → the day its first refusal was reported.
    refused: Arc<DashMap<String, u64>>,
    /// Where this node's counters live: `quota/`, or `quota@<node>/` on a shared store.
    prefix: String,
    /// On a shared store: tenant → (day, the other nodes' requests that day).
    others: Option<Arc<DashMap<String, (u64, u64)>>>,
}

fn today() -> u64 {
    aios_actors::protocol::unix_ms() / DAY_MS
}

impl Quotas {
    /// Loads the counters of today.
    ///
    /// # Errors
    /// Store failures.
    ///
    /// `shared_node` is this node's name when the store is shared with other nodes.
    pub async fn open(
        records: Records,
        config: &super::config::QuotaConfig,
        llm: Option<TenantQuota>,
        shared_node: Option<&str>,
    ) -> Result<Self, String> {
        let prefix =
            shared_node.map_or_else(|| PREFIX.to_string(), |n| format!("{NODE_PREFIX}{n}/"));
        let requests_per_day = config.requests_per_day;
        let counts = DashMap::new();
        let day = today();
        for key in records
            .keys(&prefix, QUOTA_TENANTS_MAX)
            .await
            .map_err(|e| e.to_string())?
        {
            if let Some((d, n)) = records
                .get::<(u64, u64)>(&key)
                .await
                .map_err(|e| e.to_string())?
                && d == day
            {
                counts.insert(
                    key.trim_start_matches(prefix.as_str()).to_string(),
                    (d, n, true),
                );
            }
        }
        let quotas = Self {
            records,
            requests_per_day,
            llm,
            counts: Arc::new(counts),
            refused: Arc::new(DashMap::new()),
            others: shared_node.map(|_| Arc::new(DashMap::new())),
            prefix,
        };
        quotas.refresh_others().await?;
        Ok(quotas)
    }

    /// Reads the other nodes' counters of today (shared store only).
    ///
    /// # Errors
    /// Store failures.
    pub async fn refresh_others(&self) -> Result<(), String> {
        let Some(others) = &self.others else {
            return Ok(());
        };
        let day = today();
        let mut sums: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        let keys = self
            .records
            .keys(
                NODE_PREFIX,
                QUOTA_TENANTS_MAX.saturating_mul(OTHER_NODES_MAX),
            )
            .await
            .map_err(|e| e.to_string())?;
        for key in keys.iter().filter(|k| !k.starts_with(self.prefix.as_str())) {
            let Some((_, tenant)) = key.trim_start_matches(NODE_PREFIX).split_once('/') else {
                continue;
            };
            if let Some((d, n)) = self
                .records
                .get::<(u64, u64)>(key)
                .await
                .map_err(|e| e.to_string())?
                && d == day
            {
                *sums.entry(tenant.to_string()).or_default() += n;
            }
        }
        others.retain(|t, _| sums.contains_key(t));
        for (tenant, n) in sums {
            others.insert(tenant, (day, n));
        }
        Ok(())
    }

    /// The other nodes' requests of `tenant` today, as of the last refresh.
    fn others_today(&self, tenant: &str, day: u64) -> u64 {
        self.others
            .as_ref()
            .and_then(|o| o.get(tenant).filter(|e| e.0 == day).map(|e| e.1))
            .unwrap_or(0)
    }

    /// Counts one request of `tenant`.
    ///
    /// # Errors
    /// A 429 problem once the tenant is over its daily quota.
    pub async fn count_request(&self, tenant: &str) -> Result<(), Problem> {
        if self.requests_per_day == 0 {
            return Ok(());
        }
        let day = today();
        if !self.counts.contains_key(tenant) && self.counts.len() >= QUOTA_TENANTS_MAX {
            return Ok(());
        }
        let mut entry = self
            .counts
            .entry(tenant.to_string())
            .or_insert((day, 0, false));
        if entry.0 != day {
            *entry = (day, 0, false);
        }
        if entry.1 + self.others_today(tenant, day) >= self.requests_per_day {
            let mut p = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "tenant {tenant} has used its quota of {} requests today (UTC)",
                    self.requests_per_day
                ),
            );
            p.kind = "https://aios.dev/problems/quota-exceeded".into();
            let left_ms = DAY_MS - aios_actors::protocol::unix_ms() % DAY_MS;
            p.retry_after_s = Some(left_ms.div_ceil(1000));
            return Err(p);
        }
        entry.1 += 1;
        entry.2 = false;
        Ok(())
    }

    /// True once per tenant and day: whether this refusal is the day's first (for the
    /// `quota.exceeded` event).
    pub fn first_refusal_today(&self, tenant: &str) -> bool {
        let day = today();
        if self.refused.len() >= QUOTA_TENANTS_MAX && !self.refused.contains_key(tenant) {
            return false;
        }
        let previous = self.refused.insert(tenant.to_string(), day);
        previous != Some(day)
    }

    /// Refuses agent work (messages, chats, runs, session turns) at once when the tenant has
    /// used its LLM tokens of the day or its cost of the month. Calls within the work reserve
    /// their share in the LLM router ([`TenantQuota::reserve`]).
    ///
    /// # Errors
    /// A 429 problem naming the quota.
    pub fn check_llm(&self, tenant: &str) -> Result<(), Problem> {
        match &self.llm {
            Some(q) => q.check(tenant).map_err(Problem::from),
            None => Ok(()),
        }
    }

    /// The requests of `tenant` today.
    pub fn used(&self, tenant: &str) -> u64 {
        let day = today();
        let own = self
            .counts
            .get(tenant)
            .filter(|e| e.0 == day)
            .map_or(0, |e| e.1);
        own + self.others_today(tenant, day)
    }

    /// Writes the counters that changed.
    ///
    /// # Errors
    /// Store failures.
    pub async fn flush(&self) -> Result<(), String> {
        let changed: Vec<(String, u64, u64)> = self
            .counts
            .iter()
            .filter(|e| !e.value().2)
            .map(|e| (e.key().clone(), e.value().0, e.value().1))
            .collect();
        for (tenant, day, n) in changed {
            self.records
                .put(
                    &format!("{}{tenant}", self.prefix),
                    &(day, n),
                    Durability::Buffered,
                )
                .await
                .map_err(|e| e.to_string())?;
            if let Some(mut e) = self.counts.get_mut(&tenant)
                && e.0 == day
                && e.1 == n
            {
                e.2 = true;
            }
        }
        self.records
            .snapshots()
            .flush()
            .await
            .map_err(|e| e.to_string())
    }

    /// Writes changed counters every [`QUOTA_FLUSH_INTERVAL`] until `stop` is cancelled.
    pub fn spawn_flusher(&self, stop: tokio_util::sync::CancellationToken) {
        let q = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(QUOTA_FLUSH_INTERVAL) => {}
                }
                if let Err(e) = q.flush().await {
                    tracing::warn!(error = %e, "writing quota counters");
                }
                if let Err(e) = q.refresh_others().await {
                    tracing::warn!(error = %e, "reading the other nodes' quota counters");
                }
                // On a shared store, the other nodes' LLM day and month bases.
                if q.others.is_some()
                    && let Some(llm) = &q.llm
                    && !llm.limits().is_unlimited()
                    && let Err(e) = llm.refresh_bases().await
                {
                    tracing::warn!(error = %e, "reading the other nodes' LLM quota bases");
                }
            }
        });
    }
}
