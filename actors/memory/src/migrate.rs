//! Namespace migrations: re-embedding with this node's model and changing the shard count.
//!
//! A migration writes every item into the namespace's next *generation*
//! (`mem/<ns>/<generation + 1>/…`) while the current one keeps serving searches; writes and
//! deletes are refused with [`MemoryError::Unavailable`] meanwhile, so nothing written
//! during the copy is lost. The switch is one durable write of the namespace's metadata;
//! then the shards restart on the new generation and the old one is deleted. A crash before
//! the switch leaves the old generation in service (the partial new one is removed by the
//! next migration); a crash after it leaves the new one in service (the old one is removed
//! when the node next opens).
//!
//! Resharding keeps every id; an item goes to shard `id % shards`.

use super::backup::{Progress, ProgressFn};
use super::shard::{generation_prefix, item_key};
use super::{MemoryError, MemoryStore, NamespaceInfo, SHARDS_MAX, store_err};
use aios_supervisor::snapshot::Durability;

/// Texts embedded per call while re-embedding.
const REEMBED_BATCH: usize = 256;
/// Keys deleted per page when removing a generation.
const DELETE_PAGE: usize = 4096;

/// What a migration changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Migration {
    /// Re-embed every text with this node's embedding model.
    pub reembed: bool,
    /// The new shard count (1..=[`SHARDS_MAX`]).
    pub shards: Option<u32>,
}

impl MemoryStore {
    /// Migrates a namespace (see the module documentation). Returns its new metadata.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] for a bad shard count or a no-op, embedding or store
    /// failures (the namespace then stays as it was).
    pub async fn migrate(
        &self,
        namespace: &str,
        migration: Migration,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<NamespaceInfo, MemoryError> {
        if let Some(n) = migration.shards
            && !(1..=SHARDS_MAX).contains(&n)
        {
            return Err(MemoryError::Invalid(format!(
                "shards: must be 1..={SHARDS_MAX}"
            )));
        }
        if !migration.reembed && migration.shards.is_none() {
            return Err(MemoryError::Invalid(
                "nothing to migrate: ask for reembed or a shard count".into(),
            ));
        }
        let admin = self.inner.running.admin().await;
        let old = self
            .namespace(namespace)
            .ok_or_else(|| MemoryError::NamespaceNotFound(namespace.to_string()))?;
        let Some(_migrating) = self.inner.running.begin_migration(&admin, namespace) else {
            return Err(MemoryError::Unavailable(format!(
                "namespace {namespace} is already being migrated"
            )));
        };
        // Waits for writes in progress; later ones wait for the migration (or are refused
        // while it runs).
        let lock = self.write_lock(namespace);
        let _exclusive = lock.write().await;
        self.migrate_locked(&old, migration, progress).await
    }

    async fn migrate_locked(
        &self,
        old: &NamespaceInfo,
        migration: Migration,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<NamespaceInfo, MemoryError> {
        let mut new = old.clone();
        new.generation = old.generation + 1;
        if let Some(n) = migration.shards {
            new.shards = n;
        }
        if migration.reembed {
            new.model = self.inner.embedder.model().to_string();
            new.dim = self.inner.embedder.dim() as u32;
        }
        // Leftovers of an interrupted migration to the same generation.
        self.delete_generation(&new.name, new.generation).await?;
        let total: u64 = self.stats(&old.name).await?.iter().map(|s| s.items).sum();
        let mut done = 0u64;
        for shard in 0..old.shards {
            let mut items = self.dump_shard(&old.name, shard).await?;
            if migration.reembed {
                for chunk in items.chunks_mut(REEMBED_BATCH) {
                    let texts: Vec<String> = chunk.iter().map(|i| i.text.clone()).collect();
                    let vectors = self.inner.embedder.embed(&texts).await?;
                    if vectors.len() != chunk.len()
                        || vectors.iter().any(|v| v.len() != new.dim as usize)
                    {
                        return Err(MemoryError::Embedding(
                            "the model returned the wrong number or size of vectors".into(),
                        ));
                    }
                    for (item, v) in chunk.iter_mut().zip(vectors) {
                        item.vector = v;
                    }
                }
            }
            self.inner
                .records
                .put_many(
                    items.iter().map(|item| {
                        let to = (item.id % u64::from(new.shards)) as u32;
                        (item_key(&new, to, item.id), item)
                    }),
                    Durability::Buffered,
                )
                .await
                .map_err(store_err)?;
            done += items.len() as u64;
            if let Some(p) = progress {
                p(Progress { done, total });
            }
        }
        self.inner
            .records
            .snapshots()
            .flush()
            .await
            .map_err(store_err)?;
        // The switch. From here the store names the new generation: until it runs here, the
        // old one must take no write (one would land in a generation the next start deletes),
        // so if this ends early — an error, a panic, the caller gone — the old entry goes and
        // the next request starts the namespace afresh from its metadata.
        self.save_info(&new).await?;
        let running = self.inner.running.get(&old.name);
        let _retired = running
            .clone()
            .map(|ns| self.inner.running.retire_on_drop(ns));
        if let Some(ns) = running {
            self.stop_shards(&ns, true).await;
        }
        // `start` replaces the namespace's entry; searches in the gap see the old shards
        // stopping and come back partial rather than failing.
        self.start(new.clone()).await?;
        if let Err(e) = self.delete_generation(&old.name, old.generation).await {
            // Removed at the next open.
            tracing::warn!(namespace = %old.name, error = %e, "deleting the previous generation");
        }
        tracing::info!(namespace = %new.name, generation = new.generation, shards = new.shards, model = %new.model, items = done, "memory namespace migrated");
        Ok(new)
    }

    /// Deletes every record of one generation of a namespace.
    pub(crate) async fn delete_generation(
        &self,
        namespace: &str,
        generation: u32,
    ) -> Result<u64, MemoryError> {
        let prefix = generation_prefix(namespace, generation);
        let mut deleted = 0;
        loop {
            let keys = self
                .inner
                .records
                .keys(&prefix, DELETE_PAGE)
                .await
                .map_err(store_err)?;
            if keys.is_empty() {
                return Ok(deleted);
            }
            for key in keys {
                self.inner.records.delete(&key).await.map_err(store_err)?;
                deleted += 1;
            }
        }
    }

    /// Deletes the generations of `info`'s namespace other than its current one (left by a
    /// crash during or after a migration).
    pub(crate) async fn delete_stale_generations(
        &self,
        info: &NamespaceInfo,
    ) -> Result<(), MemoryError> {
        let prefix = super::shard::items_prefix(&info.name);
        let current = generation_prefix(&info.name, info.generation);
        let mut after: Option<String> = None;
        loop {
            let keys = self
                .inner
                .records
                .keys_after(&prefix, after.as_deref(), 1)
                .await
                .map_err(store_err)?;
            let Some(key) = keys.into_iter().next() else {
                return Ok(());
            };
            if key.starts_with(&current) {
                // Skip the current generation in one step.
                after = Some(format!("{current}\u{10ffff}"));
                continue;
            }
            let generation = key[prefix.len()..]
                .split('/')
                .next()
                .and_then(|g| g.parse::<u32>().ok());
            match generation {
                Some(g) => {
                    let n = self.delete_generation(&info.name, g).await?;
                    tracing::info!(namespace = %info.name, generation = g, records = n, "stale memory generation removed");
                }
                None => after = Some(key),
            }
        }
    }
}
