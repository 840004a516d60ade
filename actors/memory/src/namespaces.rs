//! The namespaces this node serves ([`Running`]): the table of running namespaces, the lock
//! that serialises their creation, start and migration, the per-namespace write locks, and
//! the marks of migrations in progress. Each field is private: the rest of the crate goes
//! through the methods below, which keep these invariants.
//!
//! - Architecture invariant: a namespace is marked as migrating by one [`MigrationMark`] at
//!   a time, and the mark goes when it is dropped (also when a migration fails or panics);
//!   while marked, writes are refused ([`Running::writable`]) and vacant shards are not
//!   placed, so no acknowledged write lands in a generation being replaced.
//! - Architecture invariant: writers hold a namespace's write lock shared until their shards
//!   answered; a migration, re-placement or drain holds it exclusively. The namespace is
//!   found before the lock is taken, never while it is held (`MemoryStore::ns_for_write`).

use std::sync::Arc;

use aios_supervisor::snapshot::Durability;
use dashmap::{DashMap, DashSet};

use super::shard::now_ms;
use super::spread::{ShardRef, Slot};
use super::types::NamespaceSpec;
use super::{
    MemoryError, MemoryStore, NS_KEY_PREFIX, NamespaceInfo, Records, SHARDS_MAX, ns_lease_key,
    shard, store_err,
};

/// A namespace this node serves: its metadata and where each of its shards runs.
pub(crate) struct Namespace {
    /// Its metadata, as of the generation these shards hold.
    pub(crate) info: NamespaceInfo,
    /// Its shards, by index (`shards[i].index == i`).
    pub(crate) shards: Vec<Arc<ShardRef>>,
}

impl Namespace {
    /// A namespace of `info` whose shards are `shards`, in index order.
    pub(crate) fn new(info: NamespaceInfo, shards: Vec<Arc<ShardRef>>) -> Arc<Self> {
        assert_eq!(
            shards.len(),
            info.shards as usize,
            "namespace {}: one shard reference per shard",
            info.name
        );
        assert!(
            shards.iter().zip(0..).all(|(s, i)| s.index == i),
            "namespace {}: shards in index order",
            info.name
        );
        Arc::new(Self { info, shards })
    }
}

/// The namespaces this node serves, and the locks and marks around them.
#[derive(Default)]
pub(crate) struct Running {
    /// By name.
    map: DashMap<String, Arc<Namespace>>,
    /// Serialises namespace creation, starts on a miss, migrations, re-placements and drains.
    admin: tokio::sync::Mutex<()>,
    /// Namespaces being migrated or placed again: writes are refused meanwhile.
    migrating: DashSet<String>,
    /// Per namespace: shared by writers, exclusive for a migration.
    write_locks: DashMap<String, Arc<tokio::sync::RwLock<()>>>,
}

/// Held while namespaces are created, started on a miss, migrated, placed again or drained.
pub(crate) struct Admin<'a>(
    #[allow(dead_code, reason = "held for its drop")] tokio::sync::MutexGuard<'a, ()>,
);

/// The mark of a migration (or re-placement) of one namespace; removed when dropped.
pub(crate) struct MigrationMark<'a> {
    running: &'a Running,
    name: String,
}

impl Drop for MigrationMark<'_> {
    fn drop(&mut self) {
        self.running.migrating.remove(&self.name);
    }
}

/// Removes a namespace replaced by a migration from the table when dropped, unless a newer
/// one took its place meanwhile.
pub(crate) struct Retired<'a> {
    running: &'a Running,
    ns: Arc<Namespace>,
}

impl Drop for Retired<'_> {
    fn drop(&mut self) {
        self.running.remove_if_current(&self.ns);
    }
}

impl Running {
    /// Removes `ns` from the table when the returned guard drops, unless it was replaced by
    /// then.
    pub(crate) fn retire_on_drop(&self, ns: Arc<Namespace>) -> Retired<'_> {
        Retired { running: self, ns }
    }

    /// The running namespace `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Namespace>> {
        self.map.get(name).map(|n| n.clone())
    }

    /// Whether `name` runs here.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Whether `ns` is still the running namespace of its name (not replaced or let go).
    pub(crate) fn is_current(&self, ns: &Arc<Namespace>) -> bool {
        self.map
            .get(&ns.info.name)
            .is_some_and(|n| Arc::ptr_eq(&n, ns))
    }

    /// Whether namespace `name` runs here in generation `generation`.
    pub(crate) fn runs_generation(&self, name: &str, generation: u32) -> bool {
        self.map
            .get(name)
            .is_some_and(|n| n.info.generation == generation)
    }

    /// Makes `ns` the running namespace of its name (replacing an earlier generation's).
    pub(crate) fn insert(&self, ns: Arc<Namespace>) {
        self.map.insert(ns.info.name.clone(), ns);
    }

    /// Removes `name`, whichever generation runs.
    pub(crate) fn remove(&self, name: &str) {
        self.map.remove(name);
    }

    /// Removes `ns` if it is still the running namespace of its name.
    pub(crate) fn remove_if_current(&self, ns: &Arc<Namespace>) {
        self.map.remove_if(&ns.info.name, |_, n| Arc::ptr_eq(n, ns));
    }

    /// Every running namespace.
    pub(crate) fn all(&self) -> Vec<Arc<Namespace>> {
        self.map.iter().map(|n| n.clone()).collect()
    }

    /// The metadata of every running namespace, by name.
    pub(crate) fn infos(&self) -> Vec<NamespaceInfo> {
        let mut v: Vec<NamespaceInfo> = self.map.iter().map(|n| n.info.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// How many namespaces run here.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Takes the admin lock.
    pub(crate) async fn admin(&self) -> Admin<'_> {
        Admin(self.admin.lock().await)
    }

    /// The write lock of namespace `name`.
    pub(crate) fn write_lock(&self, name: &str) -> Arc<tokio::sync::RwLock<()>> {
        self.write_locks
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Whether `name` is being migrated or placed again.
    pub(crate) fn is_migrating(&self, name: &str) -> bool {
        self.migrating.contains(name)
    }

    /// Refuses writes to a namespace being migrated.
    ///
    /// # Errors
    /// [`MemoryError::Unavailable`] while it is.
    pub(crate) fn writable(&self, name: &str) -> Result<(), MemoryError> {
        if self.is_migrating(name) {
            return Err(MemoryError::Unavailable(format!(
                "namespace {name} is being migrated; retry when it is done"
            )));
        }
        Ok(())
    }

    /// Marks `name` as being migrated, under the admin lock; `None` if it already is.
    pub(crate) fn begin_migration(
        &self,
        _admin: &Admin<'_>,
        name: &str,
    ) -> Option<MigrationMark<'_>> {
        self.migrating
            .insert(name.to_owned())
            .then(|| MigrationMark {
                running: self,
                name: name.to_owned(),
            })
    }
}

impl MemoryStore {
    pub(crate) async fn start(&self, info: NamespaceInfo) -> Result<Arc<Namespace>, MemoryError> {
        if self.is_draining() {
            return Err(MemoryError::Unavailable(format!(
                "this node is drained: memory namespace {} is served by another node",
                info.name
            )));
        }
        // One node of a cluster serves a namespace (its shards are single writers of their
        // items); on a single node the lease is always granted.
        let lease = ns_lease_key(&info.name);
        let snapshots = self.inner.records.snapshots();
        if let Err(e) = snapshots.acquire(&lease).await {
            if let Some(node) = e.held_by_node() {
                self.inner.routing.note_served_by(&info.name, node);
            }
            return Err(MemoryError::Unavailable(format!(
                "memory namespace {} is served by another node: {e}",
                info.name
            )));
        }
        self.inner.routing.forget_served_by(&info.name);
        // What this node writes under the namespace's prefix outside its shards (a
        // migration's next generation, removals of old ones) is written under the lease too.
        // Each shard's items are fenced by the shard's own lease (`spread.rs`), whichever
        // node hosts it.
        let items = shard::items_prefix(&info.name);
        snapshots.fence_prefix(&items, Some(&lease));
        let started = self.start_shards(&info).await;
        if started.is_err() {
            snapshots.fence_prefix(&items, None);
            if let Err(e) = snapshots.release(&lease).await {
                tracing::warn!(namespace = %info.name, error = %e, "releasing a namespace's lease");
            }
        }
        started
    }

    /// Starts a namespace's shards, here or on the nodes they are placed on (`spread.rs`).
    pub(crate) async fn start_shards(
        &self,
        info: &NamespaceInfo,
    ) -> Result<Arc<Namespace>, MemoryError> {
        let info = info.clone();
        // Under `least_loaded` each shard must see where the ones before it went.
        let slots = if self.placed_by_load(&info.name).await {
            // The nodes are asked for their loads once; each shard placed is counted.
            let mut loads = self.shard_loads_now().await;
            let mut slots = Vec::with_capacity(info.shards as usize);
            for shard in 0..info.shards {
                slots.push(self.place_counted(&info, shard, Some(&mut loads)).await);
            }
            slots
        } else {
            futures_util::future::join_all((0..info.shards).map(|shard| self.place(&info, shard)))
                .await
        };
        let shards = slots
            .into_iter()
            .zip(0..)
            .map(|(slot, shard)| ShardRef::new(shard, slot))
            .collect();
        let ns = Namespace::new(info, shards);
        // Without a cluster every shard runs here: one that cannot start fails the namespace,
        // and nothing half-started stays behind to refuse the next start. In a cluster a
        // shard whose host is not known yet is placed again by the next request.
        if !self.inner.routing.in_cluster()
            && let Some(why) = ns.shards.iter().find_map(|s| match s.slot() {
                Slot::Vacant { why, .. } => Some(why),
                _ => None,
            })
        {
            self.stop_shards(&ns, true).await;
            return Err(MemoryError::Unavailable(why));
        }
        self.inner.running.insert(ns.clone());
        Ok(ns)
    }

    /// Creates a namespace built with this node's embedding model.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`], [`MemoryError::NamespaceExists`], store failures.
    pub async fn create_namespace(
        &self,
        spec: NamespaceSpec,
    ) -> Result<NamespaceInfo, MemoryError> {
        aios_core::name::validate_name(&spec.name)
            .map_err(|e| MemoryError::Invalid(format!("name: {e}")))?;
        if !(1..=SHARDS_MAX).contains(&spec.shards) {
            return Err(MemoryError::Invalid(format!(
                "shards: must be 1..={SHARDS_MAX}"
            )));
        }
        spec.ann.validate().map_err(MemoryError::Invalid)?;
        if spec.quota_items == Some(0) {
            return Err(MemoryError::Invalid("quota_items: must be positive".into()));
        }
        let info = NamespaceInfo {
            name: spec.name,
            shards: spec.shards,
            model: self.inner.embedder.model().to_string(),
            dim: self.inner.embedder.dim() as u32,
            index: spec.index,
            ann: spec.ann,
            quota_items: spec.quota_items,
            redact: spec.redact,
            created_ms: now_ms(),
            generation: 0,
        };
        self.create_from_info(info.clone()).await?;
        tracing::info!(namespace = %info.name, shards = info.shards, model = %info.model, "memory namespace created");
        Ok(info)
    }

    /// The namespace `name` and its write lock held shared. The namespace is found (or
    /// started, which takes `admin`) before the lock is taken, never while it is held, so a
    /// migration, drain or placement (which hold `admin` and wait for the lock) cannot
    /// deadlock with a writer; one replaced or let go while the writer waited is found again.
    pub(crate) async fn ns_for_write(
        &self,
        name: &str,
    ) -> Result<(Arc<Namespace>, tokio::sync::OwnedRwLockReadGuard<()>), MemoryError> {
        for _ in 0..3 {
            let ns = self.ns(name).await?;
            let writing = self.write_lock(name).read_owned().await;
            if self.inner.running.is_current(&ns) {
                return Ok((ns, writing));
            }
        }
        Err(MemoryError::Unavailable(format!(
            "memory namespace {name} changed during the request; retry"
        )))
    }

    /// The write lock of a namespace.
    pub(crate) fn write_lock(&self, namespace: &str) -> Arc<tokio::sync::RwLock<()>> {
        self.inner.running.write_lock(namespace)
    }

    /// Refuses writes to a namespace being migrated.
    pub(crate) fn writable(&self, namespace: &str) -> Result<(), MemoryError> {
        self.inner.running.writable(namespace)
    }

    /// Refuses to write a namespace whose lease this node has lost (paused or cut off from
    /// the shared store past it, in a cluster): it stops serving it (and stops the shards it
    /// hosts whose leases it lost too), and the next call finds the node that serves it now. A map lookup (the lease's local deadline), so
    /// the node stops before the database would refuse it.
    pub(crate) async fn check_serving(&self, ns: &Arc<Namespace>) -> Result<(), MemoryError> {
        let Err(e) = self
            .inner
            .records
            .snapshots()
            .check_lease(&ns_lease_key(&ns.info.name))
        else {
            return Ok(());
        };
        let name = ns.info.name.as_str();
        // A migration holds the namespace (and `admin`, which a restart needs): refused, not
        // stopped, until it ends. Otherwise the shards stop *before* the entry goes, so a
        // restart here (`ns()` on a miss) never meets shards of the same ids still running.
        if self.inner.running.is_current(ns) && !self.inner.running.is_migrating(name) {
            tracing::warn!(namespace = %name, error = %e, "memory namespace no longer served here");
            self.stop_shards(ns, false).await;
            self.inner.running.remove_if_current(ns);
        }
        Err(MemoryError::Unavailable(format!(
            "this node no longer serves memory namespace {}: {e}",
            ns.info.name
        )))
    }

    /// Creates a namespace exactly as described (model and dimension included); used by
    /// `create_namespace` and by restore.
    pub(crate) async fn create_from_info(&self, info: NamespaceInfo) -> Result<(), MemoryError> {
        let _admin = self.inner.running.admin().await;
        let key = format!("{NS_KEY_PREFIX}{}", info.name);
        if self.inner.running.contains(&info.name)
            || self
                .inner
                .records
                .get::<NamespaceInfo>(&key)
                .await
                .map_err(store_err)?
                .is_some()
        {
            return Err(MemoryError::NamespaceExists(info.name));
        }
        self.save_info(&info).await?;
        // A drained node only records it: the next node asked serves it.
        if !self.is_draining() {
            self.start(info).await?;
        }
        Ok(())
    }

    /// Writes a namespace's metadata durably (creation, and the switch of a migration).
    pub(crate) async fn save_info(&self, info: &NamespaceInfo) -> Result<(), MemoryError> {
        self.inner
            .records
            .put(
                &format!("{NS_KEY_PREFIX}{}", info.name),
                info,
                Durability::Durable,
            )
            .await
            .map_err(store_err)
    }

    /// The namespace `name`, created with the node's defaults ([`MemoryConfig`]) if it does
    /// not exist yet.
    ///
    /// # Errors
    /// As [`MemoryStore::create_namespace`].
    pub async fn ensure_namespace(&self, name: &str) -> Result<NamespaceInfo, MemoryError> {
        if let Some(info) = self.namespace(name) {
            return Ok(info);
        }
        let c = &self.inner.config;
        let spec = NamespaceSpec {
            name: name.to_string(),
            shards: c.shards_default,
            index: c.index,
            ann: c.ann,
            quota_items: None,
            redact: c.redact,
        };
        match self.create_namespace(spec).await {
            Ok(info) => Ok(info),
            // Created by a concurrent caller, or by another node.
            Err(MemoryError::NamespaceExists(_)) => self.ns(name).await.map(|n| n.info.clone()),
            Err(e) => Err(e),
        }
    }

    /// A namespace's metadata.
    pub fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
        self.inner.running.get(name).map(|n| n.info.clone())
    }

    /// Every namespace.
    pub fn namespaces(&self) -> Vec<NamespaceInfo> {
        self.inner.running.infos()
    }

    /// Every namespace of the store, also those served by another node of a cluster (read
    /// from the store; at most 100,000).
    ///
    /// # Errors
    /// Store failures.
    pub async fn namespaces_stored(&self) -> Result<Vec<NamespaceInfo>, MemoryError> {
        let mut all = self.namespaces();
        let running = &self.inner.running;
        all.extend(read_namespaces(&self.inner.records, |name| running.contains(name)).await?);
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The running namespace `name`. One that exists in the store but runs nowhere here (it
    /// was created on another node of a cluster, or another node held it when this one
    /// started) is started now, if no other node serves it.
    pub(crate) async fn ns(&self, name: &str) -> Result<Arc<Namespace>, MemoryError> {
        if let Some(n) = self.inner.running.get(name) {
            return Ok(n);
        }
        let _admin = self.inner.running.admin().await;
        if let Some(n) = self.inner.running.get(name) {
            return Ok(n);
        }
        let info = self
            .inner
            .records
            .get::<NamespaceInfo>(&format!("{NS_KEY_PREFIX}{name}"))
            .await
            .map_err(store_err)?
            .ok_or_else(|| MemoryError::NamespaceNotFound(name.to_string()))?;
        let ns = self.start(info).await?;
        // Under the namespace's lease: what a migration left behind goes (as at open).
        if let Err(e) = self.delete_stale_generations(&ns.info).await {
            tracing::warn!(namespace = %name, error = %e, "removing stale memory generations");
        }
        Ok(ns)
    }
}

/// The namespaces recorded in the store (at most 100,000), but those `skip` names.
pub(crate) async fn read_namespaces(
    records: &Records,
    skip: impl Fn(&str) -> bool,
) -> Result<Vec<NamespaceInfo>, MemoryError> {
    let mut out = Vec::new();
    for key in records
        .keys(NS_KEY_PREFIX, 100_000)
        .await
        .map_err(store_err)?
    {
        if skip(key.strip_prefix(NS_KEY_PREFIX).unwrap_or(&key)) {
            continue;
        }
        if let Some(info) = records
            .get::<NamespaceInfo>(&key)
            .await
            .map_err(store_err)?
        {
            out.push(info);
        }
    }
    Ok(out)
}
