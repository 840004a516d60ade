//! [`PostgresStore`]: the snapshot store shared by the nodes of a cluster, in PostgreSQL.
//!
//! Two tables per store, named after its *namespace* (so several clusters or test runs can
//! share a database): `<ns>_snapshots (key, value)` and `<ns>_quarantine`. Keys use the "C"
//! collation, so `keys_after` pages in byte order exactly as the sled store does. Every write
//! is one committed statement or transaction, so both [`Durability`] levels are durable on
//! return (PostgreSQL's `synchronous_commit` decides what durable means on the server), and
//! `flush` has nothing left to do.
//!
//! Connections come from a bounded pool ([`PostgresOptions::pool_max`]); a connection lost
//! between calls is replaced by the pool, and a call that fails returns
//! [`StoreError::Io`] for the caller's retry policy to handle.
//!
//! Not here yet (the cluster issue's next steps): leases with an epoch that fence writes from a
//! node that lost ownership of an actor.

use deadpool_postgres::{Manager, Pool};
use tokio_postgres::NoTls;

use super::Durability;
use super::store::{QuarantineRecord, SnapshotStore, StoreError};

/// The most pooled connections by default.
pub const POOL_MAX_DEFAULT: usize = 16;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// A libpq-style URL or key-value string (`postgres://user@host:5432/db`).
    pub url: String,
    /// The prefix of the tables: `[a-z][a-z0-9_]{0,39}`.
    pub namespace: String,
    /// The most connections held at once.
    pub pool_max: usize,
}

impl PostgresOptions {
    /// `url`, tables prefixed `aios`, [`POOL_MAX_DEFAULT`] connections.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: "aios".into(),
            pool_max: POOL_MAX_DEFAULT,
        }
    }

    /// Another table prefix.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }
}

/// Snapshots in PostgreSQL. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PostgresStore {
    options: PostgresOptions,
    pool: Pool,
    snapshots: String,
    quarantine: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.snapshots)
            .finish()
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn valid_namespace(ns: &str) -> bool {
    let mut chars = ns.chars();
    ns.len() <= 40
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl PostgresStore {
    /// Connects, and creates the tables if they do not exist.
    ///
    /// # Errors
    /// [`StoreError::Open`] for a bad URL or namespace, or a database that cannot be reached
    /// or written.
    pub async fn connect(options: PostgresOptions) -> Result<Self, StoreError> {
        let open = |reason: String| StoreError::Open {
            path: options.namespace.clone(),
            reason,
        };
        if !valid_namespace(&options.namespace) {
            return Err(open(format!(
                "namespace {:?}: must match [a-z][a-z0-9_]{{0,39}}",
                options.namespace
            )));
        }
        let config: tokio_postgres::Config =
            options.url.parse().map_err(|e| open(format!("url: {e}")))?;
        let pool = Pool::builder(Manager::new(config, NoTls))
            .max_size(options.pool_max.max(1))
            .build()
            .map_err(|e| open(e.to_string()))?;
        let store = Self {
            options: options.clone(),
            pool,
            snapshots: format!("{}_snapshots", options.namespace),
            quarantine: format!("{}_quarantine", options.namespace),
        };
        let client = store.pool.get().await.map_err(|e| open(e.to_string()))?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {s} (
                     key TEXT COLLATE \"C\" PRIMARY KEY,
                     value BYTEA NOT NULL);
                 CREATE TABLE IF NOT EXISTS {q} (
                     id TEXT PRIMARY KEY,
                     key TEXT NOT NULL,
                     reason TEXT NOT NULL,
                     at_ms BIGINT NOT NULL,
                     bytes BYTEA NOT NULL);",
                s = store.snapshots,
                q = store.quarantine,
            ))
            .await
            .map_err(|e| open(e.to_string()))?;
        Ok(store)
    }

    /// The same tables through a new connection pool (what another node opens).
    ///
    /// # Errors
    /// As [`PostgresStore::connect`].
    pub async fn reconnect(&self) -> Result<Self, StoreError> {
        Self::connect(self.options.clone()).await
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(io)
    }

    /// Drops this store's tables (tests and decommissioning).
    ///
    /// # Errors
    /// Database errors.
    pub async fn drop_tables(&self) -> Result<(), StoreError> {
        self.client()
            .await?
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
                self.snapshots, self.quarantine
            ))
            .await
            .map_err(io)
    }
}

#[async_trait::async_trait]
impl SnapshotStore for PostgresStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT value FROM {} WHERE key = $1", self.snapshots),
                &[&key],
            )
            .await
            .map_err(io)?;
        Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        _durability: Durability,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO {} (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    self.snapshots
                ),
                &[&key, &value],
            )
            .await
            .map_err(io)?;
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                &format!("DELETE FROM {} WHERE key = $1", self.snapshots),
                &[&key],
            )
            .await
            .map_err(io)?;
        Ok(())
    }

    async fn quarantine(
        &self,
        record: QuarantineRecord,
        marker: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(io)?;
        let at_ms = i64::try_from(record.at_ms).unwrap_or(i64::MAX);
        tx.execute(
            &format!(
                "INSERT INTO {} (id, key, reason, at_ms, bytes) VALUES ($1, $2, $3, $4, $5)",
                self.quarantine
            ),
            &[
                &record.id,
                &record.key,
                &record.reason,
                &at_ms,
                &record.bytes,
            ],
        )
        .await
        .map_err(io)?;
        match marker {
            Some(m) => tx
                .execute(
                    &format!(
                        "INSERT INTO {} (key, value) VALUES ($1, $2)
                         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        self.snapshots
                    ),
                    &[&record.key, &m],
                )
                .await
                .map_err(io)?,
            None => tx
                .execute(
                    &format!("DELETE FROM {} WHERE key = $1", self.snapshots),
                    &[&record.key],
                )
                .await
                .map_err(io)?,
        };
        tx.commit().await.map_err(io)
    }

    async fn quarantined(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT id, key, reason, at_ms, bytes FROM {} ORDER BY at_ms, id LIMIT $1",
                    self.quarantine
                ),
                &[&limit],
            )
            .await
            .map_err(io)?;
        Ok(rows
            .iter()
            .map(|r| QuarantineRecord {
                id: r.get(0),
                key: r.get(1),
                reason: r.get(2),
                at_ms: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                bytes: r.get(4),
            })
            .collect())
    }

    async fn keys_after(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // `starts_with` rather than LIKE, so `%` and `_` in a prefix are plain characters.
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT key FROM {} WHERE starts_with(key, $1) AND ($2::TEXT IS NULL OR key > $2)
                     ORDER BY key LIMIT $3",
                    self.snapshots
                ),
                &[&prefix, &after, &limit],
            )
            .await
            .map_err(io)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every write above was committed before it returned.
        Ok(())
    }
}
