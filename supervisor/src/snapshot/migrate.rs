//! Schema migrations: a chain of steps, each turning the encoded state of version `v` into the
//! encoded state of version `v + 1`.

use std::collections::BTreeMap;
use std::sync::Arc;

type Step = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

/// The registered migrations of one persistent actor type.
///
/// ```
/// use aios_supervisor::snapshot::{Migrations, decode, encode};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct V1 { count: u32 }
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct V2 { count: u64, label: String }
/// let m = Migrations::new().step(1, |bytes| {
///     let old: V1 = decode(bytes)?;
///     encode(&V2 { count: old.count.into(), label: String::new() })
/// });
/// assert!(m.has_step(1));
/// ```
#[derive(Clone, Default)]
pub struct Migrations {
    steps: BTreeMap<u32, Step>,
}

impl std::fmt::Debug for Migrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrations")
            .field("from_versions", &self.steps.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a stored state could not be brought to the current schema version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// The stored version is newer than this build: refused, never guessed at.
    #[error(
        "snapshot schema version {found} is newer than this build's {current}; upgrade the binary"
    )]
    FutureVersion {
        /// Version found in the store.
        found: u32,
        /// Version this build writes.
        current: u32,
    },
    /// No step is registered from this version.
    #[error("no migration registered from schema version {from} (current is {current})")]
    MissingStep {
        /// The version without a step.
        from: u32,
        /// Version this build writes.
        current: u32,
    },
    /// A step failed.
    #[error("migration from schema version {from} failed: {reason}")]
    StepFailed {
        /// The version the failing step starts from.
        from: u32,
        /// The step's error.
        reason: String,
    },
}

impl Migrations {
    /// No migrations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step from version `from` to `from + 1`, replacing any earlier one.
    #[must_use]
    pub fn step(
        mut self,
        from: u32,
        f: impl Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync + 'static,
    ) -> Self {
        self.steps.insert(from, Arc::new(f));
        self
    }

    /// Whether a step from `from` is registered.
    pub fn has_step(&self, from: u32) -> bool {
        self.steps.contains_key(&from)
    }

    /// Brings `payload` of version `found` to version `current`, step by step.
    ///
    /// # Errors
    /// [`MigrationError::FutureVersion`] when `found > current`, otherwise the first missing or
    /// failing step.
    pub fn apply(
        &self,
        found: u32,
        current: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, MigrationError> {
        if found > current {
            return Err(MigrationError::FutureVersion { found, current });
        }
        let mut bytes = payload.to_vec();
        for from in found..current {
            let step = self
                .steps
                .get(&from)
                .ok_or(MigrationError::MissingStep { from, current })?;
            bytes = step(&bytes).map_err(|reason| MigrationError::StepFailed { from, reason })?;
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_steps_in_order() {
        let m = Migrations::new()
            .step(1, |b| Ok([b, b"+2"].concat()))
            .step(2, |b| Ok([b, b"+3"].concat()));
        assert_eq!(m.apply(1, 3, b"v1").unwrap(), b"v1+2+3");
        assert_eq!(m.apply(2, 3, b"v2").unwrap(), b"v2+3");
        assert_eq!(m.apply(3, 3, b"v3").unwrap(), b"v3");
    }

    #[test]
    fn refuses_future_and_gaps() {
        let m = Migrations::new().step(1, |b| Ok(b.to_vec()));
        assert_eq!(
            m.apply(5, 3, b""),
            Err(MigrationError::FutureVersion {
                found: 5,
                current: 3
            })
        );
        assert_eq!(
            m.apply(1, 3, b""),
            Err(MigrationError::MissingStep {
                from: 2,
                current: 3
            })
        );
    }
}
