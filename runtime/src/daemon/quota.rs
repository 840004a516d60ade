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

/// What a tenant's LLM usage was when its day and month began, from the cost ledger's
/// totals: usage today = totals now − totals at the day's start.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Base {
    day: u64,
    tokens: u64,
    month: u64,
    cost_nanos: u64,
}

const BASE_PREFIX: &str = aios_core::keyspace::QUOTA_BASE;

/// The UTC calendar month of a day number (days since 1970-01-01), as `year * 12 + month`.
fn month_of(day: u64) -> u64 {
    // Howard Hinnant's civil_from_days.
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y * 12 + m - 1) as u64
}

/// Daily request counters and LLM token and cost quotas per tenant. Cheap to clone.
#[derive(Clone)]
pub struct Quotas {
    records: Records,
    requests_per_day: u64,
    llm_tokens_per_day: u64,
    cost_nanos_per_month: u64,
    ledger: Option<aios_actors::cost::CostLedger>,
    bases: Arc<DashMap<String, Base>>,
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
        ledger: Option<aios_actors::cost::CostLedger>,
        shared_node: Option<&str>,
    ) -> Result<Self, String> {
        let prefix =
            shared_node.map_or_else(|| PREFIX.to_string(), |n| format!("{NODE_PREFIX}{n}/"));
        let requests_per_day = config.requests_per_day;
        let bases = DashMap::new();
        for key in records
            .keys(BASE_PREFIX, QUOTA_TENANTS_MAX)
            .await
            .map_err(|e| e.to_string())?
        {
            if let Some(b) = records.get::<Base>(&key).await.map_err(|e| e.to_string())? {
                bases.insert(key.trim_start_matches(BASE_PREFIX).to_string(), b);
            }
        }
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
            llm_tokens_per_day: config.llm_tokens_per_day,
            cost_nanos_per_month: (config.cost_usd_per_month * 1e9) as u64,
            ledger,
            bases: Arc::new(bases),
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

    /// Refuses agent work (messages, chats, runs, session turns) once the tenant has used its
    /// LLM tokens of the day or its cost of the month.
    ///
    /// # Errors
    /// A 429 problem naming the quota.
    pub async fn check_llm(&self, tenant: &str) -> Result<(), Problem> {
        let Some(ledger) = &self.ledger else {
            return Ok(());
        };
        if self.llm_tokens_per_day == 0 && self.cost_nanos_per_month == 0 {
            return Ok(());
        }
        let totals = ledger.totals(&aios_actors::cost::CostScope::Tenant(tenant.to_string()));
        let tokens = totals.input_tokens + totals.output_tokens;
        let day = today();
        let month = month_of(day);
        let (base, changed) = {
            if !self.bases.contains_key(tenant) && self.bases.len() >= QUOTA_TENANTS_MAX {
                return Ok(());
            }
            let mut changed = false;
            let mut b = self.bases.entry(tenant.to_string()).or_insert_with(|| {
                changed = true;
                Base {
                    day,
                    tokens,
                    month,
                    cost_nanos: totals.cost_nanos,
                }
            });
            if b.day != day {
                b.day = day;
                b.tokens = tokens;
                changed = true;
            }
            if b.month != month {
                b.month = month;
                b.cost_nanos = totals.cost_nanos;
                changed = true;
            }
            (*b, changed)
        };
        if changed
            && let Err(e) = self
                .records
                .put(
                    &format!("{BASE_PREFIX}{tenant}"),
                    &base,
                    Durability::Buffered,
                )
                .await
        {
            tracing::warn!(error = %e, "writing a quota base");
        }
        let refuse = |detail: String| {
            let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, detail);
            p.kind = "https://aios.dev/problems/quota-exceeded".into();
            Err(p)
        };
        let used = tokens.saturating_sub(base.tokens);
        if self.llm_tokens_per_day > 0 && used >= self.llm_tokens_per_day {
            return refuse(format!(
                "tenant {tenant} has used {used} of its {} LLM tokens today (UTC)",
                self.llm_tokens_per_day
            ));
        }
        let spent = totals.cost_nanos.saturating_sub(base.cost_nanos);
        if self.cost_nanos_per_month > 0 && spent >= self.cost_nanos_per_month {
            return refuse(format!(
                "tenant {tenant} has spent ${:.4} of its ${:.2} this month",
                spent as f64 / 1e9,
                self.cost_nanos_per_month as f64 / 1e9
            ));
        }
        Ok(())
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
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::month_of;

    #[test]
    fn months_follow_the_calendar() {
        // 1970-01-01 is day 0; 2026-11-30 is day 20_787; 2026-12-01 is day 20_788.
        assert_eq!(month_of(0), 1970 * 12);
        assert_eq!(month_of(31), 1970 * 12 + 1);
        assert_eq!(month_of(20_787), 2026 * 12 + 10);
        assert_eq!(month_of(20_788), 2026 * 12 + 11);
        // 2024-02-29 (a leap day) is day 19_782, in February.
        assert_eq!(month_of(19_782), 2024 * 12 + 1);
    }
}
