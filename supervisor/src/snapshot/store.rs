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
}
