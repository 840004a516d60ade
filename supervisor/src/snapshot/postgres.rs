//! [`PostgresStore`]: the snapshot store shared by the nodes of a cluster, in PostgreSQL.
//!
//! Tables are named after the store's *namespace* (so several clusters or test runs can share
//! a database): `<ns>_snapshots (key, value)`, `<ns>_quarantine`, `<ns>_leases` (below), and
//! `<ns>_schema`, the versions of [`MIGRATIONS`] applied at start. Keys use the "C"
//! collation, so `keys_after` pages in byte order exactly as the sled store does.
//!
//! ## Durability
//! Every write is one committed statement or transaction. A [`Durability::Durable`] write,
//! `remove` and `quarantine` commit synchronously: durable on return (PostgreSQL's own
//! `synchronous_commit` setting decides what durable means on the server). A
//! [`Durability::Buffered`] write commits on a connection with `synchronous_commit = off`:
//! visible to every reader at once, but PostgreSQL returns before its WAL reaches the disk,
//! which saves the fsync (about 0.6 ms here). The WAL is written in order, so the next
//! synchronous commit on the server (an actor's snapshot of the same turn, usually) makes
//! every earlier buffered write durable with it, and `flush` makes one (a one-row write to
//! `<ns>_flushes`) when buffered writes are left uncovered. Only a crash of the database
//! server, not of `aiosd`, can lose a buffered write that was not flushed: PostgreSQL's WAL
//! writer flushes it within three `wal_writer_delay` (600 ms by default). Buffered writes
//! are what the sled store's are: acknowledged before the disk, durable by the next flush.
//!
//! Connections come from two bounded pools ([`PostgresOptions::pool_max`] for synchronous
//! commits, a quarter of it for buffered writes); a connection lost between calls is replaced
//! by the pool, and a call that fails returns [`StoreError::Io`] for the caller's retry
//! policy to handle. The frequent statements are prepared once per connection.
//!
//! ## Leases: single activation and fencing
//!
//! A third table, `<ns>_leases (key, holder, epoch, expires_at)`, makes each persistent actor
//! active on at most one node. The supervisor calls [`SnapshotStore::acquire`] before it
//! restores an actor: the lease is granted when it is free, expired, or already this node's,
//! and every grant increments the key's *epoch*, the fencing token. From then on every write
//! this node makes to that key carries the epoch, and the database applies it only while the
//! lease row still names this node, with this epoch, unexpired (`FOR SHARE` on the lease row,
//! so a takeover and a write are ordered). A node that was paused or cut off past its lease
//! therefore cannot overwrite what the new owner wrote: its write fails with
//! [`StoreError::Fenced`].
//!
//! Expiry is judged by the database's clock alone (`now()`), so the nodes' clocks may differ.
//! The holder is `<node name>#<incarnation>`, unique per process: a node restarted after a
//! crash waits for its previous incarnation's leases to expire (at most the TTL). A background
//! task renews this process's leases every third of the TTL; a lease found lost is logged and
//! its key stays fenced until it is acquired again. Lease rows are never deleted (a release
//! only expires the row), so a key's epoch only grows.

mod leases;
mod sql;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, Pool};

use self::leases::{Held, Leases};
use self::sql::Sql;
use tokio_postgres::NoTls;

use super::Durability;
use super::store::{QuarantineRecord, SnapshotStore, StoreError};

/// The most pooled connections by default.
pub const POOL_MAX_DEFAULT: usize = 16;

/// How long a lease lasts without renewal, by default. A node lost with its leases is
/// replaced after at most this long.
pub const LEASE_TTL_DEFAULT: Duration = Duration::from_secs(10);

/// The shortest lease accepted (renewals every third of it must be able to keep up).
pub const LEASE_TTL_MIN: Duration = Duration::from_millis(300);

/// The longest lease accepted.
pub const LEASE_TTL_MAX: Duration = Duration::from_secs(3600);

/// The longest a call waits to connect, for a pooled connection, or for the server to
/// acknowledge what was sent, before it fails with [`StoreError::Io`].
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema, as ordered steps: step `n` (from 1) brings the tables from version `n - 1` to
/// `n`. `{snapshots}`, `{quarantine}`, `{leases}` and `{flushes}` stand for the namespace's
/// table names.
/// Append new steps; never edit a released one.
pub const MIGRATIONS: &[&str] = &[
    // 1: snapshots (keys in byte order, as sled), the quarantine, leases.
    "CREATE TABLE IF NOT EXISTS {snapshots} (
         key TEXT COLLATE \"C\" PRIMARY KEY,
         value BYTEA NOT NULL);
     CREATE TABLE IF NOT EXISTS {quarantine} (
         id TEXT PRIMARY KEY,
         key TEXT NOT NULL,
         reason TEXT NOT NULL,
         at_ms BIGINT NOT NULL,
         bytes BYTEA NOT NULL);
     CREATE TABLE IF NOT EXISTS {leases} (
         key TEXT COLLATE \"C\" PRIMARY KEY,
         holder TEXT NOT NULL,
         epoch BIGINT NOT NULL,
         expires_at TIMESTAMPTZ NOT NULL);",
    // 2: one row per node, rewritten by a flush that must make buffered writes durable.
    "CREATE TABLE IF NOT EXISTS {flushes} (
         node TEXT COLLATE \"C\" PRIMARY KEY,
         n BIGINT NOT NULL);",
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// A libpq-style URL or key-value string (`postgres://user@host:5432/db`).
    pub url: String,
    /// The prefix of the tables: `[a-z][a-z0-9_]{0,39}`.
    pub namespace: String,
    /// The most connections held at once.
    pub pool_max: usize,
    /// This node's name in lease records: `[A-Za-z0-9._-]{1,64}`.
    pub node: String,
    /// How long a lease lasts without renewal ([`LEASE_TTL_MIN`]..=[`LEASE_TTL_MAX`]).
    pub lease_ttl: Duration,
    /// Whether a background task renews this node's leases (every third of the TTL). Off
    /// only to act out a node that stopped renewing (a paused or cut-off process).
    pub renew_leases: bool,
}

impl PostgresOptions {
    /// `url`, tables prefixed `aios`, [`POOL_MAX_DEFAULT`] connections.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: "aios".into(),
            pool_max: POOL_MAX_DEFAULT,
            node: "aios".into(),
            lease_ttl: LEASE_TTL_DEFAULT,
            renew_leases: true,
        }
    }

    /// This node's name in lease records.
    #[must_use]
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    /// How long a lease lasts without renewal.
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Checks every option without connecting.
    ///
    /// # Errors
    /// The option's name and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Err(e) = self.url.parse::<tokio_postgres::Config>() {
            return Err(("url", e.to_string()));
        }
        if !valid_namespace(&self.namespace) {
            return Err((
                "namespace",
                format!("{:?} must match [a-z][a-z0-9_]{{0,39}}", self.namespace),
            ));
        }
        if !(1..=1024).contains(&self.pool_max) {
            return Err(("pool_max", format!("{} is outside 1..=1024", self.pool_max)));
        }
        if !valid_node_name(&self.node) {
            return Err((
                "node",
                format!("{:?} must match [A-Za-z0-9._-]{{1,64}}", self.node),
            ));
        }
        if !(LEASE_TTL_MIN..=LEASE_TTL_MAX).contains(&self.lease_ttl) {
            return Err((
                "lease_ttl",
                format!(
                    "{:?} is outside {LEASE_TTL_MIN:?}..={LEASE_TTL_MAX:?}",
                    self.lease_ttl
                ),
            ));
        }
        Ok(())
    }

    /// Whether leases are renewed in the background (see [`PostgresOptions::renew_leases`]).
    #[must_use]
    pub fn renew_leases(mut self, renew: bool) -> Self {
        self.renew_leases = renew;
        self
    }

    /// Another table prefix.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }
}

/// Snapshots in PostgreSQL. Cheap to clone (the pools are shared).
#[derive(Clone)]
pub struct PostgresStore {
    options: PostgresOptions,
    /// Synchronous commits: durable writes, removals, leases, reads.
    pool: Pool,
    /// `synchronous_commit = off`: [`Durability::Buffered`] writes only.
    buffered: Pool,
    snapshots: String,
    quarantine: String,
    flushes: String,
    sql: Arc<Sql>,
    unflushed: Arc<Unflushed>,
    leases: Arc<Leases>,
}

/// Buffered writes committed so far, and how many of them a synchronous commit begun after
/// them has made durable since (each count only grows). Only a commit that wrote a row
/// counts: PostgreSQL commits a transaction that wrote nothing without flushing the WAL.
#[derive(Debug, Default)]
struct Unflushed {
    written: AtomicU64,
    covered: AtomicU64,
    /// One flush at a time: the ones that queued behind it find their writes covered by it
    /// (a group commit) rather than each waiting on the flush row for its own fsync.
    flushing: tokio::sync::Mutex<()>,
}

impl Unflushed {
    /// What a synchronous commit that starts now will cover.
    fn before_sync(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// A synchronous commit that started when `before_sync` said `seen` has returned.
    fn synced(&self, seen: u64) {
        // A commit covers only writes committed before it began.
        debug_assert!(seen <= self.written.load(Ordering::Acquire));
        self.covered.fetch_max(seen, Ordering::AcqRel);
    }
}

/// Whether `node` can name a node (in lease records, and in a cluster): `[A-Za-z0-9._-]{1,64}`.
pub fn valid_node_name(node: &str) -> bool {
    (1..=64).contains(&node.len())
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn epoch_u64(epoch: i64) -> u64 {
    u64::try_from(epoch).unwrap_or(0)
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.snapshots)
            .field("holder", &self.leases.holder())
            .finish()
    }
}

/// The error with its causes: tokio-postgres says only "db error" at the top, and the server's
/// message in the source.
fn io(e: impl std::error::Error) -> StoreError {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    StoreError::Io(text)
}

fn valid_namespace(ns: &str) -> bool {
    let mut chars = ns.chars();
    ns.len() <= 40
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl PostgresStore {
    /// Connects, and brings the tables to this binary's schema (see [`MIGRATIONS`]).
    ///
    /// # Errors
    /// [`StoreError::Open`] for a bad URL or namespace, or a database that cannot be reached
    /// or written.
    pub async fn connect(options: PostgresOptions) -> Result<Self, StoreError> {
        let open = |reason: String| StoreError::Open {
            path: options.namespace.clone(),
            reason,
        };
        if let Err((option, problem)) = options.validate() {
            return Err(open(format!("{option}: {problem}")));
        }
        let mut config: tokio_postgres::Config =
            options.url.parse().map_err(|e| open(format!("url: {e}")))?;
        // A database that stops answering fails calls within the bound rather than hang them:
        // connecting, waiting for a pooled connection, and unacknowledged data on a socket.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CALL_TIMEOUT);
        }
        config.tcp_user_timeout(CALL_TIMEOUT);
        config.keepalives_idle(CALL_TIMEOUT);
        let pool_of = |config: tokio_postgres::Config, max: usize| {
            Pool::builder(Manager::new(config, NoTls))
                .max_size(max)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(CALL_TIMEOUT))
                .create_timeout(Some(CALL_TIMEOUT))
                .recycle_timeout(Some(CALL_TIMEOUT))
                .build()
                .map_err(|e| open(e.to_string()))
        };
        // Buffered writes: the same server, each commit returning before its WAL is on disk
        // (added to whatever options the URL sets).
        let mut async_config = config.clone();
        let async_options = match config.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} -c synchronous_commit=off"),
            _ => "-c synchronous_commit=off".to_owned(),
        };
        async_config.options(&async_options);
        let buffered = pool_of(async_config, (options.pool_max / 4).max(1))?;
        let pool = pool_of(config, options.pool_max)?;
        let snapshots = format!("{}_snapshots", options.namespace);
        let leases_table = format!("{}_leases", options.namespace);
        let flushes = format!("{}_flushes", options.namespace);
        let store = Self {
            options: options.clone(),
            pool,
            buffered,
            sql: Arc::new(Sql::new(&snapshots, &leases_table, &flushes)),
            snapshots,
            quarantine: format!("{}_quarantine", options.namespace),
            flushes,
            unflushed: Arc::default(),
            leases: Arc::new(Leases::new(
                leases_table,
                format!(
                    "{}#{}",
                    options.node,
                    uuid::Uuid::new_v4()
                        .simple()
                        .to_string()
                        .get(..8)
                        .unwrap_or("0")
                ),
                options.lease_ttl,
            )),
        };
        let mut client = store.pool.get().await.map_err(|e| open(e.to_string()))?;
        store
            .migrate(&mut client)
            .await
            .map_err(|e| open(e.to_string()))?;
        if options.renew_leases {
            let every = options.lease_ttl / 3;
            let weak = Arc::downgrade(&store.leases);
            tokio::spawn(leases::renew_forever(store.pool.clone(), weak, every));
        }
        Ok(store)
    }

    /// Brings this namespace's tables to [`SCHEMA_VERSION`]: each missing step of
    /// [`MIGRATIONS`] runs in one transaction, under an advisory lock on the namespace so that
    /// nodes starting together do not race, and is recorded in `<ns>_schema`. A database
    /// whose schema is newer than this binary knows is refused, never downgraded.
    async fn migrate(&self, client: &mut deadpool_postgres::Client) -> Result<(), StoreError> {
        let schema = format!("{}_schema", self.options.namespace);
        let tx = client.transaction().await.map_err(io)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&self.options.namespace],
        )
        .await
        .map_err(io)?;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {schema} (
                 version INT PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ))
        .await
        .map_err(io)?;
        let current: i32 = tx
            .query_one(
                &format!("SELECT COALESCE(MAX(version), 0) FROM {schema}"),
                &[],
            )
            .await
            .map_err(io)?
            .get(0);
        let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
        if current > known {
            return Err(StoreError::Io(format!(
                "the database's schema for `{}` is version {current}, newer than this \
                 binary's {known}: run a newer aiosd",
                self.options.namespace
            )));
        }
        for (step, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let sql = sql
                .replace("{snapshots}", &self.snapshots)
                .replace("{quarantine}", &self.quarantine)
                .replace("{leases}", self.leases.table())
                .replace("{flushes}", &self.flushes);
            tx.batch_execute(&sql).await.map_err(io)?;
            let version = i32::try_from(step + 1).unwrap_or(i32::MAX);
            tx.execute(
                &format!("INSERT INTO {schema} (version) VALUES ($1)"),
                &[&version],
            )
            .await
            .map_err(io)?;
            tracing::info!(namespace = %self.options.namespace, version, "schema migrated");
        }
        tx.commit().await.map_err(io)
    }

    /// The schema version of this namespace's tables in the database.
    ///
    /// # Errors
    /// Database errors.
    pub async fn schema_version(&self) -> Result<u32, StoreError> {
        let v: i32 = self
            .client()
            .await?
            .query_one(
                &format!(
                    "SELECT COALESCE(MAX(version), 0) FROM {}_schema",
                    self.options.namespace
                ),
                &[],
            )
            .await
            .map_err(io)?
            .get(0);
        Ok(u32::try_from(v).unwrap_or(0))
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    /// This process's name in lease records: `<node>#<incarnation>`.
    pub fn holder(&self) -> &str {
        self.leases.holder()
    }

    /// The epoch of this process's lease on `key`, if it was granted one (even one since lost).
    pub fn epoch(&self, key: &str) -> Option<u64> {
        self.leases.epoch(key)
    }

    /// How many leases this process holds (not counting lost ones).
    pub fn leases_held(&self) -> usize {
        self.leases.held_count()
    }

    /// Extends every lease this process holds by the TTL, and returns the keys whose lease was
    /// lost since (expired before it could be renewed, or taken over by another node). The
    /// background task calls this every third of the TTL.
    ///
    /// # Errors
    /// Database errors; the leases then run on towards their expiry.
    pub async fn renew_leases(&self) -> Result<Vec<String>, StoreError> {
        leases::renew(&self.pool, &self.leases).await
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
                "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};
                 DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {}_schema;",
                self.snapshots,
                self.quarantine,
                self.leases.table(),
                self.flushes,
                self.options.namespace
            ))
            .await
            .map_err(io)
    }
}

#[async_trait::async_trait]
impl SnapshotStore for PostgresStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&self.sql.get).await.map_err(io)?;
        let row = client.query_opt(&statement, &[&key]).await.map_err(io)?;
        Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        // One entry of `put_many`: a leased key is written only under this process's current
        // lease, checked by the database.
        self.put_many(vec![(key.to_owned(), value)], durability)
            .await
    }

    async fn put_many(
        &self,
        entries: Vec<(String, Vec<u8>)>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        // The last value of a key given twice (one statement may not upsert a row twice),
        // grouped by the lease each key is written under; every lease is checked before
        // anything is written.
        let mut last: std::collections::HashMap<String, Vec<u8>> =
            std::collections::HashMap::with_capacity(entries.len());
        let mut order = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            if last.insert(key.clone(), value).is_none() {
                order.push(key);
            }
        }
        let mut groups: Vec<(Option<(String, Held)>, Vec<(String, Vec<u8>)>)> = Vec::new();
        for key in order {
            let lease = self.leases.lease_for(&key)?;
            let value = last.remove(&key).unwrap_or_default();
            let lease_name = lease.as_ref().map(|(l, _)| l.as_str());
            match groups
                .iter_mut()
                .find(|(l, _)| l.as_ref().map(|(l, _)| l.as_str()) == lease_name)
            {
                Some((_, group)) => group.push((key, value)),
                None => groups.push((lease, vec![(key, value)])),
            }
        }
        // A lease already known lost refuses the whole call before anything is written.
        for (lease, group) in &groups {
            if let (Some((_, held)), Some((key, _))) = (lease, group.first())
                && held.is_lost()
            {
                return Err(StoreError::Fenced {
                    key: key.clone(),
                    epoch: epoch_u64(held.epoch),
                });
            }
        }
        let client = match durability {
            Durability::Durable => self.client().await?,
            Durability::Buffered => self.buffered.get().await.map_err(io)?,
        };
        for (lease, group) in groups {
            for chunk in group.chunks(super::store::PUT_MANY_CHUNK) {
                let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
                let values: Vec<&[u8]> = chunk.iter().map(|(_, v)| v.as_slice()).collect();
                let seen = self.unflushed.before_sync();
                let written = match &lease {
                    Some((lease, held)) => {
                        let statement = client
                            .prepare_cached(&self.sql.put_many_leased)
                            .await
                            .map_err(io)?;
                        client
                            .execute(
                                &statement,
                                &[&keys, &values, &self.leases.holder(), &held.epoch, lease],
                            )
                            .await
                            .map_err(io)?
                    }
                    None => {
                        let statement = client
                            .prepare_cached(&self.sql.put_many)
                            .await
                            .map_err(io)?;
                        client
                            .execute(&statement, &[&keys, &values])
                            .await
                            .map_err(io)?
                    }
                };
                match durability {
                    Durability::Durable if written > 0 => self.unflushed.synced(seen),
                    Durability::Durable => {}
                    Durability::Buffered => {
                        self.unflushed.written.fetch_add(1, Ordering::AcqRel);
                    }
                }
                if let (0, Some((lease, held))) = (written, &lease) {
                    return Err(self.leases.fenced(lease, &chunk[0].0, *held));
                }
            }
        }
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        // A removal may delete nothing, and so flush nothing: never counted as covering
        // buffered writes.
        let client = self.client().await?;
        if let Some((lease, held)) = self.leases.lease_for(key)? {
            let statement = client
                .prepare_cached(&self.sql.remove_leased)
                .await
                .map_err(io)?;
            let owned: i64 = client
                .query_one(
                    &statement,
                    &[&key, &self.leases.holder(), &held.epoch, &lease],
                )
                .await
                .map_err(io)?
                .get(0);
            return match owned {
                0 => Err(self.leases.fenced(&lease, key, held)),
                _ => Ok(()),
            };
        }
        let statement = client.prepare_cached(&self.sql.remove).await.map_err(io)?;
        client.execute(&statement, &[&key]).await.map_err(io)?;
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
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql.keys_after)
            .await
            .map_err(io)?;
        let rows = client
            .query(&statement, &[&prefix, &after, &limit])
            .await
            .map_err(io)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Durable writes were flushed before they returned; buffered ones are made durable by
        // any synchronous commit begun after them, here one row rewritten when none was.
        let seen = self.unflushed.before_sync();
        if self.unflushed.covered.load(Ordering::Acquire) >= seen {
            return Ok(());
        }
        let _one_at_a_time = self.unflushed.flushing.lock().await;
        if self.unflushed.covered.load(Ordering::Acquire) >= seen {
            return Ok(());
        }
        let seen = self.unflushed.before_sync();
        let client = self.client().await?;
        let statement = client.prepare_cached(&self.sql.flush).await.map_err(io)?;
        client
            .execute(&statement, &[&self.options.node])
            .await
            .map_err(io)?;
        self.unflushed.synced(seen);
        Ok(())
    }

    fn health(&self) -> Result<(), String> {
        self.leases.health()
    }

    fn fence_prefix(&self, prefix: &str, lease: Option<&str>) {
        self.leases.fence(prefix, lease);
    }

    fn check_lease(&self, key: &str) -> Result<(), StoreError> {
        self.leases.check(key)
    }

    async fn acquire(&self, key: &str) -> Result<(), StoreError> {
        self.leases.acquire(&self.client().await?, key).await
    }

    async fn lease_holder(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.leases.holder_of(&self.client().await?, key).await
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        // Forgotten here first: a release whose statement fails is not renewed, and the
        // lease runs out on its own.
        let Some(epoch) = self.leases.forget(key) else {
            return Ok(());
        };
        self.leases.expire(&self.client().await?, key, epoch).await
    }
}
