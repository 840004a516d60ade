//! The leases of one process on a [`super::PostgresStore`] ([`Leases`], which owns them):
//! granted, renewed every third of the TTL, checked before and fenced in every write, and
//! released. See the parent module for the design.
//!
//! Architecture invariant: this process trusts a lease only until `valid_until` (the start
//! of the statement that granted or last renewed it, plus nine tenths of the TTL) and never
//! after it was found lost, so it stops acting before the database would refuse it; the
//! database stays the judge (every leased write names the lease's epoch).

use std::sync::Weak;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use deadpool_postgres::Pool;

use super::super::store::StoreError;
use super::{epoch_u64, io};

/// This process's leases.
#[derive(Debug)]
pub(super) struct Leases {
    table: String,
    /// `<node>#<incarnation>`.
    holder: String,
    ttl_secs: f64,
    /// How long after a grant or renewal this process still trusts its lease (0.9 × TTL).
    trusted_for: Duration,
    /// Key → the lease this process was granted (still held, or found lost).
    held: DashMap<String, Held>,
    /// Key prefix → the lease its keys are written under
    /// ([`super::super::store::SnapshotStore::fence_prefix`]).
    fences: DashMap<String, String>,
    /// The last background check's failure, if it failed (cleared by the next success).
    unhealthy: std::sync::Mutex<Option<String>>,
}

/// This process's grant of one lease.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    /// The fencing token the grant carries.
    pub(super) epoch: i64,
    lost: bool,
    /// By this process's monotonic clock, when the lease surely still runs: the start of the
    /// statement that granted or last renewed it, plus nine tenths of the TTL.
    valid_until: Instant,
}

impl Held {
    /// Whether this process found the lease lost (expired before it could renew it, or taken
    /// over).
    pub(super) fn is_lost(&self) -> bool {
        self.lost
    }
}

impl Leases {
    /// The leases of process `holder` in table `table`, granted for `ttl`.
    pub(super) fn new(table: String, holder: String, ttl: Duration) -> Self {
        Self {
            table,
            holder,
            ttl_secs: ttl.as_secs_f64(),
            trusted_for: ttl.mul_f64(0.9),
            held: DashMap::new(),
            fences: DashMap::new(),
            unhealthy: std::sync::Mutex::new(None),
        }
    }

    /// The lease table's name.
    pub(super) fn table(&self) -> &str {
        &self.table
    }

    /// This process's name in lease records: `<node>#<incarnation>`.
    pub(super) fn holder(&self) -> &str {
        &self.holder
    }

    /// The epoch of this process's grant on `key`, if it had one (even one since lost).
    pub(super) fn epoch(&self, key: &str) -> Option<u64> {
        self.held.get(key).map(|h| epoch_u64(h.epoch))
    }

    /// How many leases this process holds (not counting lost ones).
    pub(super) fn held_count(&self) -> usize {
        self.held.iter().filter(|h| !h.lost).count()
    }

    /// The last background check's failure.
    pub(super) fn health(&self) -> Result<(), String> {
        match &*self
            .unhealthy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        }
    }

    /// Puts the keys under `prefix` under the lease on `lease` (or takes them out).
    pub(super) fn fence(&self, prefix: &str, lease: Option<&str>) {
        match lease {
            Some(lease) => {
                self.fences.insert(prefix.to_owned(), lease.to_owned());
            }
            None => {
                self.fences.remove(prefix);
            }
        }
    }

    /// Refuses `key` if this process's lease on it is lost or past its trusted deadline.
    pub(super) fn check(&self, key: &str) -> Result<(), StoreError> {
        match self.held.get(key).map(|h| *h) {
            Some(held) if held.lost || Instant::now() >= held.valid_until => {
                Err(StoreError::Fenced {
                    key: key.to_owned(),
                    epoch: epoch_u64(held.epoch),
                })
            }
            _ => Ok(()),
        }
    }

    /// The lease a write of `key` goes under, and this process's grant of it: `key`'s own,
    /// or that of the longest fenced prefix of `key` that ends in `/`. A key under a fenced
    /// prefix whose lease this process no longer holds (released) is refused.
    pub(super) fn lease_for(&self, key: &str) -> Result<Option<(String, Held)>, StoreError> {
        if let Some(h) = self.held.get(key) {
            return Ok(Some((key.to_owned(), *h)));
        }
        if self.fences.is_empty() {
            return Ok(None);
        }
        let fence = key
            .match_indices('/')
            .rev()
            .find_map(|(i, _)| self.fences.get(&key[..=i]).map(|l| l.clone()));
        let Some(lease) = fence else {
            return Ok(None);
        };
        match self.held.get(&lease).map(|h| *h) {
            Some(h) => Ok(Some((lease, h))),
            None => Err(StoreError::Fenced {
                key: key.to_owned(),
                epoch: 0,
            }),
        }
    }

    /// A refused write of `key` under the lease on `lease`: that lease is lost.
    pub(super) fn fenced(&self, lease: &str, key: &str, held: Held) -> StoreError {
        if let Some(mut h) = self.held.get_mut(lease)
            && h.epoch == held.epoch
        {
            h.lost = true;
        }
        StoreError::Fenced {
            key: key.to_owned(),
            epoch: epoch_u64(held.epoch),
        }
    }

    /// Takes the lease on `key`: free, expired or already this process's, with the next
    /// epoch. Otherwise says who holds it.
    pub(super) async fn acquire(
        &self,
        client: &deadpool_postgres::Client,
        key: &str,
    ) -> Result<(), StoreError> {
        // Two rounds at most: a lease released between the two statements is taken on the
        // second.
        for _ in 0..2 {
            let started = Instant::now();
            let granted = client
                .query_opt(
                    &format!(
                        "INSERT INTO {l} AS l (key, holder, epoch, expires_at)
                         VALUES ($1, $2, 1, now() + make_interval(secs => $3))
                         ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder,
                             epoch = l.epoch + 1, expires_at = EXCLUDED.expires_at
                         WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now()
                         RETURNING epoch",
                        l = self.table
                    ),
                    &[&key, &self.holder, &self.ttl_secs],
                )
                .await
                .map_err(io)?;
            if let Some(row) = granted {
                let epoch: i64 = row.get(0);
                let valid_until = started + self.trusted_for;
                self.held.insert(
                    key.to_owned(),
                    Held {
                        epoch,
                        lost: false,
                        valid_until,
                    },
                );
                return Ok(());
            }
            let other = client
                .query_opt(
                    &format!(
                        "SELECT holder, GREATEST(0, (EXTRACT(EPOCH FROM expires_at - now())
                             * 1000))::BIGINT
                         FROM {} WHERE key = $1 AND expires_at > now()",
                        self.table
                    ),
                    &[&key],
                )
                .await
                .map_err(io)?;
            if let Some(row) = other {
                return Err(StoreError::Held {
                    key: key.to_owned(),
                    holder: row.get(0),
                    expires_in_ms: epoch_u64(row.get(1)),
                });
            }
        }
        Err(StoreError::Io(format!(
            "lease on `{key}`: contended, neither granted nor held"
        )))
    }

    /// Who holds the lease on `key` now, read without taking it.
    pub(super) async fn holder_of(
        &self,
        client: &deadpool_postgres::Client,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = client
            .query_opt(
                &format!(
                    "SELECT holder FROM {} WHERE key = $1 AND expires_at > now()",
                    self.table
                ),
                &[&key],
            )
            .await
            .map_err(io)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Forgets this process's grant on `key` (no longer renewed); returns its epoch.
    pub(super) fn forget(&self, key: &str) -> Option<i64> {
        self.held.remove(key).map(|(_, held)| held.epoch)
    }

    /// Expires the lease row of `key` if it still names this process with `epoch`.
    pub(super) async fn expire(
        &self,
        client: &deadpool_postgres::Client,
        key: &str,
        epoch: i64,
    ) -> Result<(), StoreError> {
        client
            .execute(
                &format!(
                    "UPDATE {} SET expires_at = now()
                     WHERE key = $1 AND holder = $2 AND epoch = $3",
                    self.table
                ),
                &[&key, &self.holder, &epoch],
            )
            .await
            .map_err(io)?;
        Ok(())
    }
}

/// Renews `leases` every `every` until the store is dropped.
pub(super) async fn renew_forever(pool: Pool, leases: Weak<Leases>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(leases) = leases.upgrade() else {
            return;
        };
        // With no lease to renew, a ping: either way the result is the store's health.
        let checked = match leases.held.is_empty() {
            true => ping(&pool).await.map(|()| Vec::new()),
            false => renew(&pool, &leases).await,
        };
        let failure = match checked {
            Ok(lost) => {
                if let Some(first) = lost.first() {
                    tracing::warn!(
                        holder = %leases.holder,
                        lost = lost.len(),
                        %first,
                        "leases lost: their actors are fenced here and may be active on another node"
                    );
                }
                None
            }
            Err(error) => {
                tracing::warn!(holder = %leases.holder, %error, "PostgreSQL check failed");
                Some(error.to_string())
            }
        };
        *leases
            .unhealthy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = failure;
    }
}

async fn ping(pool: &Pool) -> Result<(), StoreError> {
    let client = pool.get().await.map_err(io)?;
    client.simple_query("SELECT 1").await.map_err(io)?;
    Ok(())
}

pub(super) async fn renew(pool: &Pool, leases: &Leases) -> Result<Vec<String>, StoreError> {
    // Only the leases still held: a release whose statement failed is not renewed.
    let keys: Vec<String> = leases
        .held
        .iter()
        .filter(|h| !h.lost)
        .map(|h| h.key().clone())
        .collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let client = pool.get().await.map_err(io)?;
    let started = Instant::now();
    let rows = client
        .query(
            &format!(
                "UPDATE {} SET expires_at = now() + make_interval(secs => $2)
                 WHERE holder = $1 AND key = ANY($3) AND expires_at > now()
                 RETURNING key, epoch",
                leases.table
            ),
            &[&leases.holder, &leases.ttl_secs, &keys],
        )
        .await
        .map_err(io)?;
    let renewed: std::collections::HashMap<String, i64> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut lost = Vec::new();
    for key in keys {
        let Some(mut entry) = leases.held.get_mut(&key) else {
            continue; // released meanwhile
        };
        let current = renewed.get(&key) == Some(&entry.epoch);
        if current {
            entry.valid_until = started + leases.trusted_for;
        } else if !entry.lost {
            entry.lost = true;
            lost.push(key);
        }
    }
    Ok(lost)
}
