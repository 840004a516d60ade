//! Per-tenant daily request quotas. Counters live in memory, are written every
//! [`QUOTA_FLUSH_INTERVAL`] and at shutdown, and are read back at start, so a restart keeps
//! the day's count (a `kill -9` may forget the last interval's requests: a quota is a limit on
//! use, not an acknowledgement).

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
const PREFIX: &str = "quota/";
const DAY_MS: u64 = 24 * 3600 * 1000;

/// Daily request counters per tenant. Cheap to clone.
#[derive(Clone)]
pub struct Quotas {
    records: Records,
    requests_per_day: u64,
    /// tenant → (UTC day number, requests that day, written?)
    counts: Arc<DashMap<String, (u64, u64, bool)>>,
    /// tenant → the day its first refusal was reported.
    refused: Arc<DashMap<String, u64>>,
}

fn today() -> u64 {
    aios_actors::protocol::unix_ms() / DAY_MS
}

impl Quotas {
    /// Loads the counters of today.
    ///
    /// # Errors
    /// Store failures.
    pub async fn open(records: Records, requests_per_day: u64) -> Result<Self, String> {
        let counts = DashMap::new();
        let day = today();
        for key in records
            .keys(PREFIX, QUOTA_TENANTS_MAX)
            .await
            .map_err(|e| e.to_string())?
        {
            if let Some((d, n)) = records
                .get::<(u64, u64)>(&key)
                .await
                .map_err(|e| e.to_string())?
                && d == day
            {
                counts.insert(key.trim_start_matches(PREFIX).to_string(), (d, n, true));
            }
        }
        Ok(Self {
            records,
            requests_per_day,
            counts: Arc::new(counts),
            refused: Arc::new(DashMap::new()),
        })
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
        if entry.1 >= self.requests_per_day {
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

    /// The requests of `tenant` today.
    pub fn used(&self, tenant: &str) -> u64 {
        self.counts
            .get(tenant)
            .filter(|e| e.0 == today())
            .map_or(0, |e| e.1)
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
                    &format!("{PREFIX}{tenant}"),
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
            }
        });
    }
}
