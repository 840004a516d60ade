//! The storage trait behind snapshots. The embedded default is [`super::SledStore`]; the trait
//! is shaped so that a shared SQL backend (PostgreSQL, for the cluster) can implement it: every
//! method is async, keys are UTF-8 strings, values are opaque framed bytes, and the quarantine is
//! a separate keyspace moved into atomically.

use serde::{Deserialize, Serialize};

use super::Durability;

/// An error of the storage backend (I/O, corruption of the backend's own files, a lost
/// connection). Kept as text so it can be cloned to every waiter of a group commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("snapshot store I/O error: {0}")]
    Io(String),
    /// The store was closed (the node is shutting down).
    #[error("snapshot store is closed")]
    Closed,
    /// Another node of the cluster holds the lease on this key: the actor it names is active
    /// there, and must not start here.
    #[error("`{key}` is active on node {holder} (its lease expires in {expires_in_ms} ms)")]
    Held {
        /// The key.
        key: String,
        /// The node holding the lease (`<node name>#<incarnation>`).
        holder: String,
        /// How long the lease has left, by the database's clock.
        expires_in_ms: u64,
    },
    /// A write carried a stale lease epoch: this node no longer owns the key (its lease
    /// expired, or another node took it over), and the database refused the write.
    #[error("write to `{key}` refused: this node's lease (epoch {epoch}) is no longer current")]
    Fenced {
        /// The key.
        key: String,
        /// The epoch the refused write carried.
        epoch: u64,
    },
    /// The data directory cannot be opened (missing permissions, held by another process, ...).
    #[error("cannot open snapshot store at {path}: {reason}")]
    Open {
        /// The path tried.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// What the quarantine keeps about one corrupt snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// Unique id of this record (`<key>@<unix ms>#<uuid>`).
    pub id: String,
    /// The snapshot key the bytes were found under.
    pub key: String,
    /// Why they were quarantined.
    pub reason: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The bytes exactly as they were stored.
    pub bytes: Vec<u8>,
}

/// The most entries a store writes in one statement of [`SnapshotStore::put_many`].
pub(super) const PUT_MANY_CHUNK: usize = 512;

/// A key-value store for framed snapshots.
///
/// Implementations must make a `put` with [`Durability::Durable`] survive a process crash once
/// it has returned `Ok`, and must make `remove` and `quarantine` durable before returning.
#[async_trait::async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// Reads the bytes stored under `key`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes `value` under `key`, replacing what was there.
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        durability: Durability,
    ) -> Result<(), StoreError>;
    /// Writes every `(key, value)` of `entries` as [`SnapshotStore::put`] would, one after
    /// another (for a key given twice, the last value stays). A store may take fewer round
    /// trips (PostgreSQL: one statement per lease and up to [`PUT_MANY_CHUNK`] entries). On
    /// an error some entries may have been written, as with separate puts.
    async fn put_many(
        &self,
        entries: Vec<(String, Vec<u8>)>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        for (key, value) in entries {
            self.put(&key, value, durability).await?;
        }
        Ok(())
    }
    /// Removes `key` durably. Removing a missing key is not an error.
    async fn remove(&self, key: &str) -> Result<(), StoreError>;
    /// Atomically moves `record` into the quarantine keyspace and replaces `record.key` with
    /// `marker` (or removes it when `marker` is `None`); durable on return.
    async fn quarantine(
        &self,
        record: QuarantineRecord,
        marker: Option<Vec<u8>>,
    ) -> Result<(), StoreError>;
    /// Lists the quarantine, oldest first, at most `limit` records.
    async fn quarantined(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError>;
    /// Lists keys starting with `prefix`, in key order, at most `limit`.
    async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.keys_after(prefix, None, limit).await
    }
    /// Lists keys starting with `prefix` and greater than `after` (when given), in key
    /// order, at most `limit`: pages through a large keyspace.
    async fn keys_after(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// Makes every write acknowledged so far durable.
    async fn flush(&self) -> Result<(), StoreError>;
    /// Whether the store was reachable at its last check: `Err` with the reason when a shared
    /// store's last background check (lease renewal, or a ping) failed. For readiness probes;
    /// never blocks. The default, for an embedded store, is always `Ok`.
    ///
    /// # Errors
    /// The last failure, as text.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
    /// Whether this process may still act for `key`, by its own clock and without a round
    /// trip: `Err(`[`StoreError::Fenced`]`)` once a lease it was granted on `key` is known lost,
    /// or has lapsed because renewals failed for a whole TTL (a process paused or cut off
    /// finds out here, before it acts, rather than at its next write). `Ok` for keys it holds
    /// no lease on, and always for an embedded store (the default).
    ///
    /// # Errors
    /// [`StoreError::Fenced`].
    fn check_lease(&self, key: &str) -> Result<(), StoreError> {
        let _ = key;
        Ok(())
    }
    /// Puts the keys that start with `prefix` (which ends in `/`) under the lease on `lease`,
    /// or no longer (`None`): while this process holds that lease, their writes and removals
    /// apply only under it, as writes to `lease` itself do, and once another process took it
    /// they are refused by the store ([`StoreError::Fenced`]); after this process released
    /// it, at once. For records that one owner writes and that are not the lease's own key
    /// (a memory namespace's items). The default, for a store only this process opens,
    /// ignores it.
    fn fence_prefix(&self, prefix: &str, lease: Option<&str>) {
        let _ = (prefix, lease);
    }
    /// Takes the lease on `key` for this node before the actor that owns the key starts, so
    /// that it is active on at most one node; every later write to `key` from this node is
    /// fenced by the lease's epoch. Taking a lease this node already holds starts a new epoch.
    ///
    /// The default, for a store that only one process opens, grants every lease.
    ///
    /// # Errors
    /// [`StoreError::Held`] when another node holds an unexpired lease on `key`.
    async fn acquire(&self, key: &str) -> Result<(), StoreError> {
        let _ = key;
        Ok(())
    }
    /// Gives up this node's lease on `key` (the actor stopped for good here), so that another
    /// node may take it at once rather than after it expires. Releasing a lease this node
    /// does not hold is not an error.
    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let _ = key;
        Ok(())
    }
    /// Who holds an unexpired lease on `key` now (`node#process`), without taking or
    /// changing it. The default, for a store only this process opens, knows of none.
    ///
    /// # Errors
    /// The store could not be asked.
    async fn lease_holder(&self, key: &str) -> Result<Option<String>, StoreError> {
        let _ = key;
        Ok(None)
    }
}
