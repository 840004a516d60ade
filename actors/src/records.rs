//! Typed, versioned records kept in the node's snapshot store: agent definitions, cost
//! totals, sessions. Each record is a checksummed snapshot frame (see
//! `aios_supervisor::snapshot`), so it gets the same verification and durability as actor
//! state, and only the snapshot module touches sled.

use aios_supervisor::snapshot::{Durability, SnapshotError, Snapshots, codec};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The schema version written into every record frame of this crate.
pub const RECORD_SCHEMA_VERSION: u32 = 1;

/// Typed access to records under key prefixes of one snapshot store.
#[derive(Clone, Debug)]
pub struct Records {
    snapshots: Snapshots,
}

impl Records {
    /// Records kept in `snapshots`.
    pub fn new(snapshots: Snapshots) -> Self {
        Self { snapshots }
    }

    /// The underlying store.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// Writes `value` under `key`.
    ///
    /// # Errors
    /// Encoding or store failures.
    pub async fn put<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> Result<(), SnapshotError> {
        let payload = codec::encode(value).map_err(|reason| SnapshotError::Encode {
            key: key.into(),
            reason,
        })?;
        self.snapshots
            .save(key, RECORD_SCHEMA_VERSION, &payload, durability)
            .await
    }

    /// Reads the record under `key`.
    ///
    /// # Errors
    /// A corrupt frame or undecodable payload names the key.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SnapshotError> {
        let Some(restored) = self.snapshots.load(key).await? else {
            return Ok(None);
        };
        if restored.schema_version != RECORD_SCHEMA_VERSION {
            return Err(SnapshotError::Migration {
                key: key.into(),
                reason: format!(
                    "record schema version {} is not {RECORD_SCHEMA_VERSION}",
                    restored.schema_version
                ),
            });
        }
        codec::decode(restored.payload())
            .map(Some)
            .map_err(|reason| SnapshotError::Corrupt {
                key: key.into(),
                reason,
            })
    }

    /// Keys starting with `prefix` and after `after` (when given), in order, at most
    /// `limit`.
    ///
    /// # Errors
    /// Store failures.
    pub async fn keys_after(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, SnapshotError> {
        self.snapshots
            .store()
            .keys_after(prefix, after, limit)
            .await
            .map_err(|source| SnapshotError::Store {
                key: prefix.into(),
                source,
            })
    }

    /// Keys starting with `prefix`, in order, at most `limit`.
    ///
    /// # Errors
    /// Store failures.
    pub async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, SnapshotError> {
        self.snapshots
            .store()
            .keys(prefix, limit)
            .await
            .map_err(|source| SnapshotError::Store {
                key: prefix.into(),
                source,
            })
    }

    /// Deletes the record under `key` (durably).
    ///
    /// # Errors
    /// Store failures.
    pub async fn delete(&self, key: &str) -> Result<(), SnapshotError> {
        self.snapshots.delete(key).await
    }
}
