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
        self.put_versioned(key, value, RECORD_SCHEMA_VERSION, durability)
            .await
    }

    /// Writes every `(key, value)` of `entries` as [`Records::put`] would, in as few round
    /// trips as the store can (PostgreSQL: one statement per lease and 512 entries).
    ///
    /// # Errors
    /// Encoding or store failures; on a store failure some entries may have been written.
    pub async fn put_many<'a, T: Serialize + 'a>(
        &self,
        entries: impl IntoIterator<Item = (String, &'a T)>,
        durability: Durability,
    ) -> Result<(), SnapshotError> {
        let mut encoded = Vec::new();
        for (key, value) in entries {
            let payload = codec::encode(value).map_err(|reason| SnapshotError::Encode {
                key: key.clone(),
                reason,
            })?;
            encoded.push((key, payload));
        }
        self.snapshots
            .save_many(encoded, RECORD_SCHEMA_VERSION, durability)
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

    /// Writes `value` as schema version `version` of a record type that has had several
    /// (read back with [`Records::get_versioned`]).
    ///
    /// # Errors
    /// Encoding or store failures.
    pub async fn put_versioned<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        version: u32,
        durability: Durability,
    ) -> Result<(), SnapshotError> {
        let payload = codec::encode(value).map_err(|reason| SnapshotError::Encode {
            key: key.into(),
            reason,
        })?;
        self.snapshots
            .save(key, version, &payload, durability)
            .await
    }

    /// Reads a record of a type that has had several schema versions: `decode` gets the
    /// version the record was written with and its payload.
    ///
    /// # Errors
    /// A corrupt frame, or `decode`'s error, naming the key.
    pub async fn get_versioned<T>(
        &self,
        key: &str,
        decode: impl Fn(u32, &[u8]) -> Result<T, String>,
    ) -> Result<Option<T>, SnapshotError> {
        let Some(restored) = self.snapshots.load(key).await? else {
            return Ok(None);
        };
        decode(restored.schema_version, restored.payload())
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
