//! Snapshots: actor state that survives restarts of the actor and of the whole process.
//!
//! An actor opts in by implementing [`crate::PersistentWorker`] and giving its spec a
//! [`Persistence`] (stable key, [`SnapshotPolicy`], [`Durability`], [`OnCorrupt`]). Its state is
//! encoded with bincode 2 inside a checksummed frame ([`codec`]) and written to a
//! [`SnapshotStore`] ([`SledStore`] by default). On every start the supervisor reads the frame
//! back, verifies it, migrates it ([`Migrations`]) and hands it to the actor.
//!
//! What is durable when:
//! - [`Durability::Durable`]: a reply sent with [`crate::Context::reply`] for a message whose
//!   snapshot is taken leaves only after the snapshot is on disk (fsync, shared by group commit).
//! - [`Durability::Buffered`]: the snapshot is in sled's memory at once and on disk within the
//!   store's flush interval ([`SledOptions::flush_every`], 200 ms by default): a process crash
//!   can lose that window; an actor crash loses nothing, because the store outlives the actor.
//! - [`SnapshotPolicy::OnStop`]: written only on an orderly stop; a crash or kill loses
//!   everything since the last stop.

pub mod codec;
mod migrate;
mod postgres;
mod sled;
mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use self::codec::{decode, encode};
pub use self::migrate::{MigrationError, Migrations};
pub use self::postgres::{
    CALL_TIMEOUT, LEASE_TTL_DEFAULT, LEASE_TTL_MAX, LEASE_TTL_MIN, MIGRATIONS, POOL_MAX_DEFAULT,
    PostgresOptions, PostgresStore, SCHEMA_VERSION, valid_node_name,
};
pub use self::sled::{GROUP_COMMIT_BATCH_MAX, GROUP_COMMIT_QUEUE_MAX, SledOptions, SledStore};
pub use self::store::{QuarantineRecord, SnapshotStore, StoreError};

/// Longest snapshot key accepted, in bytes.
pub const KEY_LEN_MAX: usize = 512;

/// When an actor's state is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SnapshotPolicy {
    /// After every handled message (the default): nothing acknowledged is ever lost.
    EveryMessage,
    /// After every `n`th handled message, and on an orderly stop.
    EveryN(u32),
    /// At most once per interval while the state has changed, and on an orderly stop.
    Interval(Duration),
    /// Only on an orderly stop: a crash loses everything since the last stop.
    OnStop,
}

/// Whether a snapshot write waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Durability {
    /// Flushed (fsync, shared by group commit) before the message's replies are sent.
    Durable,
    /// Written to the store's memory at once and flushed in the background.
    Buffered,
}

/// What a start does when the stored snapshot fails its checksum or cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum OnCorrupt {
    /// The start fails (the default). The bytes are moved to the quarantine and a marker left in
    /// their place, so every later start fails too until an operator deletes the key
    /// ([`Snapshots::delete`]) or the child.
    #[default]
    Fail,
    /// The bytes are moved to the quarantine and the actor starts from empty state.
    StartFresh,
}

/// How one actor persists its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persistence {
    /// The stable key its state is stored under. It must not change across releases.
    pub key: String,
    /// When to write.
    pub policy: SnapshotPolicy,
    /// Whether writes wait for the disk.
    pub durability: Durability,
    /// What to do with a snapshot that cannot be read.
    pub on_corrupt: OnCorrupt,
}

impl Persistence {
    /// Persistence under `key` with the defaults: every message, durable, fail on corruption.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            policy: SnapshotPolicy::EveryMessage,
            durability: Durability::Durable,
            on_corrupt: OnCorrupt::Fail,
        }
    }

    /// Sets the policy.
    #[must_use]
    pub fn policy(mut self, policy: SnapshotPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the durability.
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets what happens to a corrupt snapshot.
    #[must_use]
    pub fn on_corrupt(mut self, on_corrupt: OnCorrupt) -> Self {
        self.on_corrupt = on_corrupt;
        self
    }

    /// Checks the key and the policy.
    ///
    /// # Errors
    /// A sentence naming what is wrong and what would be right.
    pub fn validate(&self) -> Result<(), String> {
        if self.key.is_empty() || self.key.len() > KEY_LEN_MAX {
            return Err(format!(
                "snapshot key must be 1..={KEY_LEN_MAX} bytes, got {} bytes",
                self.key.len()
            ));
        }
        match self.policy {
            SnapshotPolicy::EveryN(0) => Err("SnapshotPolicy::EveryN needs n >= 1".into()),
            SnapshotPolicy::Interval(d) if d.is_zero() => {
                Err("SnapshotPolicy::Interval needs a non-zero interval".into())
            }
            _ => Ok(()),
        }
    }
}

/// A snapshot error. Every variant names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The store failed.
    #[error("snapshot `{key}`: {source}")]
    Store {
        /// The key.
        key: String,
        /// The store's error.
        source: StoreError,
    },
    /// The stored bytes fail their checksum or cannot be decoded.
    #[error("snapshot `{key}` is corrupt: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An earlier start found the snapshot corrupt and quarantined it; the actor will not start
    /// from empty state until the key is deleted.
    #[error(
        "snapshot `{key}` was quarantined as `{quarantine_id}`; delete the key or the child to start fresh"
    )]
    Quarantined {
        /// The key.
        key: String,
        /// The quarantine record holding the bytes.
        quarantine_id: String,
    },
    /// The stored schema version cannot be brought to the current one.
    #[error("snapshot `{key}`: {reason}")]
    Migration {
        /// The key.
        key: String,
        /// Why (future version, missing step, failed step).
        reason: String,
    },
    /// The state could not be encoded.
    #[error("snapshot `{key}` cannot be encoded: {reason}")]
    Encode {
        /// The key.
        key: String,
        /// The encoder's error.
        reason: String,
    },
    /// The child is persistent but its tree has no snapshot store.
    #[error("child with snapshot key `{key}` needs a snapshot store, but its tree has none")]
    NoStore {
        /// The key.
        key: String,
    },
}

impl SnapshotError {
    /// Who holds the lease that was refused (`node#process`), when this is
    /// [`StoreError::Held`].
    pub fn held_by(&self) -> Option<&str> {
        match self {
            Self::Store {
                source: StoreError::Held { holder, .. },
                ..
            } => Some(holder),
            _ => None,
        }
    }

    /// The node of the holder of the lease that was refused, when this is
    /// [`StoreError::Held`].
    pub fn held_by_node(&self) -> Option<&str> {
        self.held_by().map(holder_node)
    }
}

/// The node part of a lease holder (`<node>#<incarnation>`, or a bare node name).
pub fn holder_node(holder: &str) -> &str {
    holder.split_once('#').map_or(holder, |(node, _)| node)
}

/// A verified snapshot, as read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The schema version it was written with.
    pub schema_version: u32,
    frame: Vec<u8>,
}

impl Restored {
    /// The encoded state.
    pub fn payload(&self) -> &[u8] {
        &self.frame[codec::HEADER_LEN..]
    }

    /// The stored bytes, header included (what the quarantine keeps).
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }
}

/// A non-owning [`Snapshots`]: what running workers hold, so that once a tree has stopped the
/// node's handle is the last one and dropping it releases the data directory at once (an
/// actor's task may end a moment after its supervisor saw it stop).
#[derive(Debug, Clone)]
pub struct WeakSnapshots {
    store: std::sync::Weak<dyn SnapshotStore>,
}

impl WeakSnapshots {
    /// The store, while something else still owns it.
    pub fn upgrade(&self) -> Option<Snapshots> {
        self.store.upgrade().map(|store| Snapshots { store })
    }
}

/// The snapshot store seen through the frame codec: what supervisors and workers use.
#[derive(Clone)]
pub struct Snapshots {
    store: Arc<dyn SnapshotStore>,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots").finish_non_exhaustive()
    }
}

impl Snapshots {
    /// Wraps a store.
    pub fn new(store: Arc<dyn SnapshotStore>) -> Self {
        Self { store }
    }

    /// A handle that does not keep the store open.
    pub fn downgrade(&self) -> WeakSnapshots {
        WeakSnapshots {
            store: Arc::downgrade(&self.store),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn SnapshotStore> {
        &self.store
    }

    /// Reads and verifies the snapshot under `key`.
    ///
    /// # Errors
    /// [`SnapshotError::Corrupt`] when the frame fails verification ([`Snapshots::load_raw`]
    /// gives the bytes), [`SnapshotError::Quarantined`] when a quarantine marker is there,
    /// [`SnapshotError::Store`] when the store fails.
    pub async fn load(&self, key: &str) -> Result<Option<Restored>, SnapshotError> {
        match self.load_raw(key).await? {
            None => Ok(None),
            Some(bytes) => verify(key, bytes).map(Some).map_err(|(e, _)| e),
        }
    }

    /// Reads the bytes under `key` without verifying them.
    ///
    /// # Errors
    /// [`SnapshotError::Store`].
    pub async fn load_raw(&self, key: &str) -> Result<Option<Vec<u8>>, SnapshotError> {
        self.store.get(key).await.map_err(store_error(key))
    }

    /// Frames and writes an encoded state.
    ///
    /// # Errors
    /// [`SnapshotError::Store`].
    pub async fn save(
        &self,
        key: &str,
        schema_version: u32,
        payload: &[u8],
        durability: Durability,
    ) -> Result<(), SnapshotError> {
        let framed = codec::frame(schema_version, 0, payload);
        self.store
            .put(key, framed, durability)
            .await
            .map_err(store_error(key))
    }

    /// Writes every `(key, payload)` of `entries` as [`Snapshots::save`] would, in as few
    /// round trips as the store can ([`SnapshotStore::put_many`]).
    ///
    /// # Errors
    /// [`SnapshotError::Store`] (named after the first key); some entries may have been
    /// written.
    pub async fn save_many(
        &self,
        entries: Vec<(String, Vec<u8>)>,
        schema_version: u32,
        durability: Durability,
    ) -> Result<(), SnapshotError> {
        let Some(first) = entries.first().map(|(k, _)| k.clone()) else {
            return Ok(());
        };
        let framed = entries
            .into_iter()
            .map(|(key, payload)| (key, codec::frame(schema_version, 0, &payload)))
            .collect();
        self.store
            .put_many(framed, durability)
            .await
            .map_err(store_error(&first))
    }

    /// Moves `bytes` (found under `key`) to the quarantine. With `leave_marker`, a marker takes
    /// their place so later loads fail with [`SnapshotError::Quarantined`]; otherwise the key is
    /// removed. Returns the quarantine id.
    ///
    /// # Errors
    /// [`SnapshotError::Store`].
    pub async fn quarantine(
        &self,
        key: &str,
        bytes: Vec<u8>,
        reason: &str,
        leave_marker: bool,
    ) -> Result<String, SnapshotError> {
        let at_ms = unix_ms();
        let id = format!("{at_ms:020}-{}", uuid::Uuid::new_v4().simple());
        let marker = leave_marker.then(|| codec::frame(0, codec::FLAG_QUARANTINED, id.as_bytes()));
        let record = QuarantineRecord {
            id: id.clone(),
            key: key.into(),
            reason: reason.into(),
            at_ms,
            bytes,
        };
        self.store
            .quarantine(record, marker)
            .await
            .map_err(store_error(key))?;
        Ok(id)
    }

    /// Removes the snapshot (or quarantine marker) under `key`, durably.
    ///
    /// # Errors
    /// [`SnapshotError::Store`].
    pub async fn delete(&self, key: &str) -> Result<(), SnapshotError> {
        self.store.remove(key).await.map_err(store_error(key))
    }

    /// Makes every write so far durable.
    ///
    /// # Errors
    /// [`StoreError`] from the store.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }

    /// Whether this process may still act for `key` (see [`SnapshotStore::check_lease`]).
    ///
    /// # Errors
    /// [`SnapshotError::Store`] with [`StoreError::Fenced`].
    pub fn check_lease(&self, key: &str) -> Result<(), SnapshotError> {
        self.store.check_lease(key).map_err(store_error(key))
    }

    /// Puts the keys under `prefix` under the lease on `lease`, or no longer (see
    /// [`SnapshotStore::fence_prefix`]).
    pub fn fence_prefix(&self, prefix: &str, lease: Option<&str>) {
        self.store.fence_prefix(prefix, lease);
    }

    /// Takes this node's lease on `key` (see [`SnapshotStore::acquire`]).
    ///
    /// # Errors
    /// [`SnapshotError::Store`] with [`StoreError::Held`] when another node holds it.
    pub async fn acquire(&self, key: &str) -> Result<(), SnapshotError> {
        self.store.acquire(key).await.map_err(store_error(key))
    }

    /// Who holds an unexpired lease on `key` now (see [`SnapshotStore::lease_holder`]).
    ///
    /// # Errors
    /// [`SnapshotError::Store`].
    pub async fn lease_holder(&self, key: &str) -> Result<Option<String>, SnapshotError> {
        self.store.lease_holder(key).await.map_err(store_error(key))
    }

    /// Gives up this node's lease on `key` (see [`SnapshotStore::release`]).
    ///
    /// # Errors
    /// [`SnapshotError::Store`].
    pub async fn release(&self, key: &str) -> Result<(), SnapshotError> {
        self.store.release(key).await.map_err(store_error(key))
    }
}

/// Wraps a store error with the key it concerned.
fn store_error(key: &str) -> impl FnOnce(StoreError) -> SnapshotError + '_ {
    move |source| SnapshotError::Store {
        key: key.into(),
        source,
    }
}

/// Verifies a stored frame; on failure returns the error and the bytes (for the quarantine).
pub(crate) fn verify(key: &str, bytes: Vec<u8>) -> Result<Restored, (SnapshotError, Vec<u8>)> {
    let (schema_version, flags) = match codec::unframe(&bytes) {
        Ok(f) => (f.schema_version, f.flags),
        Err(e) => {
            let err = SnapshotError::Corrupt {
                key: key.into(),
                reason: e.to_string(),
            };
            return Err((err, bytes));
        }
    };
    if flags & codec::FLAG_QUARANTINED != 0 {
        let quarantine_id = String::from_utf8_lossy(&bytes[codec::HEADER_LEN..]).into_owned();
        let err = SnapshotError::Quarantined {
            key: key.into(),
            quarantine_id,
        };
        return Err((err, bytes));
    }
    Ok(Restored {
        schema_version,
        frame: bytes,
    })
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshots() -> Snapshots {
        Snapshots::new(Arc::new(SledStore::temporary().unwrap()))
    }

    #[tokio::test]
    async fn save_load_round_trip() {
        let s = snapshots();
        s.save("k", 3, b"state", Durability::Durable).await.unwrap();
        let r = s.load("k").await.unwrap().unwrap();
        assert_eq!(r.schema_version, 3);
        assert_eq!(r.payload(), b"state");
        assert_eq!(s.load("missing").await.unwrap(), None);
    }

    #[tokio::test]
    async fn flipped_byte_is_corrupt_and_marker_blocks_later_loads() {
        let s = snapshots();
        s.save("k", 1, b"state", Durability::Durable).await.unwrap();
        let mut raw = s.load_raw("k").await.unwrap().unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x40;
        s.store()
            .put("k", raw.clone(), Durability::Durable)
            .await
            .unwrap();
        let err = s.load("k").await.unwrap_err();
        assert!(
            matches!(err, SnapshotError::Corrupt { ref key, .. } if key == "k"),
            "{err}"
        );

        let id = s.quarantine("k", raw.clone(), "test", true).await.unwrap();
        match s.load("k").await.unwrap_err() {
            SnapshotError::Quarantined { quarantine_id, .. } => assert_eq!(quarantine_id, id),
            other => panic!("expected Quarantined, got {other}"),
        }
        let q = s.store().quarantined(10).await.unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].bytes, raw);
        s.delete("k").await.unwrap();
        assert_eq!(s.load("k").await.unwrap(), None);
    }

    #[test]
    fn the_holder_names_its_node() {
        assert_eq!(holder_node("b#1a2b3c4d"), "b");
        assert_eq!(holder_node("b"), "b");
    }

    #[test]
    fn validate_names_the_problem() {
        assert!(
            Persistence::new("")
                .validate()
                .unwrap_err()
                .contains("1..=")
        );
        let p = Persistence::new("k").policy(SnapshotPolicy::EveryN(0));
        assert!(p.validate().unwrap_err().contains("EveryN"));
        assert!(Persistence::new("k").validate().is_ok());
    }
}
