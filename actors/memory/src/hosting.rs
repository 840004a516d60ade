//! Hosting: the shard actors this node runs, for whichever node serves their namespace
//! ([`Hosting`], the component that owns them), how a shard comes to be hosted here and
//! goes, the watch that lets go of shards whose lease or serving node was lost, and drains.
//! See [`super::spread`] for the design.
//!
//! Architecture invariant: a shard is started or stopped here only under the hosting lock,
//! whose guard ([`HostingLock`]) the table's changes take as an argument; a shard hosted
//! here holds its lease `memserve/<ns>/<shard>` and has its item prefix fenced under it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aios_supervisor::{ActorHandle, Restart, WorkerSpec};
use dashmap::DashMap;

use super::shard::{ShardAnswer, ShardMsg, ShardRequest, ShardWorker, shard_prefix_at};
use super::spread::{Slot, shard_lease_key};
use super::{
    FORWARDED_EXPORT_BYTES_MAX, MemoryError, MemoryStore, NamespaceInfo, SHARD_MAILBOX_LEN_MAX,
    shard_child_id,
};

/// How often a host checks that the nodes serving its shards' namespaces are reachable.
const HOST_WATCH_EVERY: Duration = Duration::from_secs(2);

/// How long a host keeps the shards of a namespace whose serving node it cannot reach (but
/// which still holds its lease: cut off from this node, not from the database).
const SERVER_LOST_AFTER: Duration = Duration::from_secs(6);

/// Every [`HOST_WATCH_EVERY`]: stops the shards this node hosts whose lease it lost or whose
/// generation a migration retired, and lets go those it hosts for a serving node it has not
/// reached for [`SERVER_LOST_AFTER`], so that node places them on a node it can reach
/// (otherwise they would stay vacant for as long as the two are cut off). Ends with the
/// store.
pub(super) async fn host_watch(inner: std::sync::Weak<super::Inner>) {
    let mut unreachable_since: std::collections::HashMap<String, Instant> =
        std::collections::HashMap::new();
    loop {
        tokio::time::sleep(HOST_WATCH_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let store = MemoryStore { inner };
        store.sweep_hosted().await;
        store.release_retired().await;
        store.release_orphans(&mut unreachable_since).await;
    }
}

/// A shard actor of this node, for whichever node serves its namespace.
struct Hosted {
    generation: u32,
    handle: ActorHandle<ShardMsg>,
}

/// The shard actors this node hosts, by namespace and shard, whichever node serves their
/// namespace; and whether the node is drained.
#[derive(Default)]
pub(crate) struct Hosting {
    hosted: DashMap<(String, u32), Hosted>,
    /// Serialises starting and stopping hosted shards.
    lock: tokio::sync::Mutex<()>,
    /// True while the node is drained: it neither serves namespaces nor hosts shards.
    draining: AtomicBool,
}

/// Held while hosted shards are started or stopped; the table changes only under it.
pub(crate) struct HostingLock<'a>(
    #[allow(dead_code, reason = "held for its drop")] tokio::sync::MutexGuard<'a, ()>,
);

impl Hosting {
    /// Takes the hosting lock.
    pub(crate) async fn lock(&self) -> HostingLock<'_> {
        HostingLock(self.lock.lock().await)
    }

    /// How many shards this node hosts.
    pub(crate) fn len(&self) -> usize {
        self.hosted.len()
    }

    /// True while the node is drained.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts or ends a drain.
    pub(crate) fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Release);
    }

    /// The generation and handle of this node's actor of shard `shard` of `ns`.
    pub(crate) fn running(&self, ns: &str, shard: u32) -> Option<(u32, ActorHandle<ShardMsg>)> {
        self.hosted
            .get(&(ns.to_owned(), shard))
            .map(|h| (h.generation, h.handle.clone()))
    }

    /// Every hosted shard: namespace, shard, generation.
    pub(crate) fn list(&self) -> Vec<(String, u32, u32)> {
        self.hosted
            .iter()
            .map(|h| (h.key().0.clone(), h.key().1, h.generation))
            .collect()
    }

    /// Records the actor of a shard started here.
    fn insert(
        &self,
        _lock: &HostingLock<'_>,
        ns: &str,
        shard: u32,
        generation: u32,
        handle: ActorHandle<ShardMsg>,
    ) {
        let before = self
            .hosted
            .insert((ns.to_owned(), shard), Hosted { generation, handle });
        // `host_here` stops any earlier actor of the shard under the same lock first: two
        // actors of one shard on a node would both write its items.
        assert!(
            before.is_none(),
            "shard {shard} of {ns} hosted twice on one node"
        );
    }

    /// Forgets the actor of a shard (of `generation` only, when given); returns the
    /// generation it ran.
    fn remove(
        &self,
        _lock: &HostingLock<'_>,
        ns: &str,
        shard: u32,
        generation: Option<u32>,
    ) -> Option<u32> {
        self.hosted
            .remove_if(&(ns.to_owned(), shard), |_, h| {
                generation.is_none_or(|g| g == h.generation)
            })
            .map(|(_, h)| h.generation)
    }
}

/// Why this node could not host a shard.
pub(crate) enum HostError {
    /// Node `0` holds the shard's lease.
    HeldBy(String),
    /// Anything else.
    Failed(MemoryError),
}

impl From<HostError> for MemoryError {
    fn from(e: HostError) -> Self {
        match e {
            HostError::HeldBy(node) => {
                MemoryError::Unavailable(format!("the shard is hosted by node {node}"))
            }
            HostError::Failed(e) => e,
        }
    }
}

impl MemoryStore {
    /// How many memory shards this node hosts (its load for `least_loaded` namespaces).
    pub fn hosted_shards(&self) -> usize {
        self.inner.hosting.len()
    }

    /// Hosts shard `shard` of `info` on this node: the running actor when it has this
    /// generation and its lease still holds, otherwise a new one under the shard's lease.
    pub(crate) async fn host_here(
        &self,
        info: &NamespaceInfo,
        shard: u32,
    ) -> Result<ActorHandle<ShardMsg>, HostError> {
        let hosting = self.inner.hosting.lock().await;
        if self.is_draining() {
            return Err(HostError::Failed(MemoryError::Unavailable(
                "this node is drained: it hosts no shards".into(),
            )));
        }
        let lease = shard_lease_key(&info.name, shard);
        let snapshots = self.inner.records.snapshots();
        let running = self.inner.hosting.running(&info.name, shard);
        if let Some((generation, handle)) = running {
            if generation > info.generation {
                // A request of a namespace a migration has replaced since: never brought
                // back over the new generation.
                return Err(HostError::Failed(MemoryError::Unavailable(format!(
                    "shard {shard} of memory namespace {} runs generation {generation} here, newer than {}",
                    info.name, info.generation
                ))));
            }
            if generation == info.generation && snapshots.check_lease(&lease).is_ok() {
                return Ok(handle);
            }
            // An older generation, or a lease lost meanwhile: started afresh.
            self.unhost_locked(&hosting, &info.name, shard, None, false)
                .await;
        }
        if let Err(e) = snapshots.acquire(&lease).await {
            return Err(match e.held_by_node() {
                Some(node) => HostError::HeldBy(node.to_owned()),
                None => HostError::Failed(MemoryError::Unavailable(e.to_string())),
            });
        }
        let prefix = shard_prefix_at(&info.name, info.generation, shard);
        snapshots.fence_prefix(&prefix, Some(&lease));
        let spec = WorkerSpec::new(
            shard_child_id(&info.name, shard),
            ShardWorker {
                info: info.clone(),
                shard,
                records: self.inner.records.clone(),
            },
        )
        .restart(Restart::Permanent)
        .mailbox_len_max(SHARD_MAILBOX_LEN_MAX);
        match self.inner.supervisor.start_worker(spec).await {
            Ok(handle) => {
                self.inner.hosting.insert(
                    &hosting,
                    &info.name,
                    shard,
                    info.generation,
                    handle.clone(),
                );
                Ok(handle)
            }
            Err(e) => {
                snapshots.fence_prefix(&prefix, None);
                if let Err(e) = snapshots.release(&lease).await {
                    tracing::warn!(namespace = %info.name, shard, error = %e, "releasing a memory shard's lease");
                }
                Err(HostError::Failed(MemoryError::Unavailable(format!(
                    "starting shard {shard}: {e}"
                ))))
            }
        }
    }

    /// Stops this node's actor of shard `shard` of `ns` (of `generation` only, when given) and
    /// lets its lease go.
    pub(crate) async fn unhost(&self, ns: &str, shard: u32, generation: Option<u32>) {
        let hosting = self.inner.hosting.lock().await;
        self.unhost_locked(&hosting, ns, shard, generation, false)
            .await;
    }

    /// [`MemoryStore::unhost`] if this node has lost the shard's lease: checked under the
    /// hosting lock, so a shard hosted again meanwhile (under a new grant) stays.
    pub(crate) async fn unhost_if_lost(&self, ns: &str, shard: u32, generation: Option<u32>) {
        let hosting = self.inner.hosting.lock().await;
        self.unhost_locked(&hosting, ns, shard, generation, true)
            .await;
    }

    async fn unhost_locked(
        &self,
        hosting: &HostingLock<'_>,
        ns: &str,
        shard: u32,
        generation: Option<u32>,
        if_lost: bool,
    ) {
        let snapshots = self.inner.records.snapshots();
        if if_lost && snapshots.check_lease(&shard_lease_key(ns, shard)).is_ok() {
            return;
        }
        let Some(stopped) = self.inner.hosting.remove(hosting, ns, shard, generation) else {
            return;
        };
        if let Err(e) = self
            .inner
            .supervisor
            .remove_child(&shard_child_id(ns, shard))
            .await
        {
            tracing::warn!(namespace = %ns, shard, error = %e, "stopping a memory shard");
        }
        snapshots.fence_prefix(&shard_prefix_at(ns, stopped, shard), None);
        if let Err(e) = snapshots.release(&shard_lease_key(ns, shard)).await {
            tracing::warn!(namespace = %ns, shard, error = %e, "releasing a memory shard's lease");
        }
    }

    /// Runs a shard request the serving node sent, on this node's actor of that shard.
    ///
    /// # Errors
    /// [`MemoryError::Unavailable`] when this node does not host that shard (or lost its
    /// lease), the shard's own errors.
    pub(crate) async fn serve_shard(
        &self,
        namespace: &str,
        generation: u32,
        shard: u32,
        request: ShardRequest,
        timeout: Duration,
    ) -> Result<ShardAnswer, MemoryError> {
        let handle = self
            .inner
            .hosting
            .running(namespace, shard)
            .filter(|(g, _)| *g == generation)
            .map(|(_, handle)| handle)
            .ok_or_else(|| {
                MemoryError::Unavailable(format!(
                    "shard {shard} of memory namespace {namespace} (generation {generation}) is not hosted on this node"
                ))
            })?;
        let lease = shard_lease_key(namespace, shard);
        if let Err(e) = self.inner.records.snapshots().check_lease(&lease) {
            self.unhost_if_lost(namespace, shard, Some(generation))
                .await;
            return Err(MemoryError::Unavailable(format!(
                "this node no longer hosts shard {shard} of memory namespace {namespace}: {e}"
            )));
        }
        let answer = super::shard::ask(&handle, shard, request, timeout).await?;
        if let ShardAnswer::Items(items) = &answer {
            // Floats travel as JSON text: about a dozen bytes each.
            let bytes: usize = items
                .iter()
                .map(|i| i.text.len() + i.vector.len() * 12 + 256)
                .sum();
            if bytes > FORWARDED_EXPORT_BYTES_MAX {
                return Err(MemoryError::Invalid(format!(
                    "shard {shard} of {namespace} is about {bytes} bytes, more than the {FORWARDED_EXPORT_BYTES_MAX} sent between nodes"
                )));
            }
        }
        Ok(answer)
    }

    /// True while the node is drained.
    pub fn is_draining(&self) -> bool {
        self.inner.hosting.is_draining()
    }

    /// Drains this node's memory: it stops serving its namespaces and hosting shards, letting
    /// their leases go at once, so the next request (through any node) serves them on
    /// another node and places their shards there, items reloaded from the store. Until
    /// [`MemoryStore::undrain`] it serves and hosts nothing. Returns how many namespaces and
    /// shards it let go.
    pub async fn drain(&self) -> (usize, usize) {
        self.inner.hosting.set_draining(true);
        let _admin = self.inner.running.admin().await;
        let served = self.inner.running.all();
        let snapshots = self.inner.records.snapshots();
        for ns in &served {
            // Its write lock: no write of this node is half-done when the shards go.
            let lock = self.write_lock(&ns.info.name);
            let _writing = lock.write().await;
            self.inner.running.remove(&ns.info.name);
            for shard in &ns.shards {
                shard.set(Slot::vacant(format!(
                    "memory namespace {} moved off a drained node",
                    ns.info.name
                )));
            }
            let lease = super::ns_lease_key(&ns.info.name);
            snapshots.fence_prefix(&super::shard::items_prefix(&ns.info.name), None);
            if let Err(e) = snapshots.release(&lease).await {
                tracing::warn!(namespace = %ns.info.name, error = %e, "releasing a namespace's lease");
            }
        }
        // Under the hosting lock: a shard being hosted as the drain began is let go too.
        let hosting = self.inner.hosting.lock().await;
        let hosted = self.inner.hosting.list();
        for (ns, shard, _) in &hosted {
            self.unhost_locked(&hosting, ns, *shard, None, false).await;
        }
        tracing::info!(
            namespaces = served.len(),
            shards = hosted.len(),
            "memory drained off this node"
        );
        (served.len(), hosted.len())
    }

    /// Ends a drain: the node serves and hosts again when asked.
    pub fn undrain(&self) {
        self.inner.hosting.set_draining(false);
    }

    /// Stops the shards this node hosts whose lease it lost (it was paused or cut off past
    /// it; another node hosts them now), which no request may have noticed.
    pub(crate) async fn sweep_hosted(&self) {
        let snapshots = self.inner.records.snapshots();
        let lost: Vec<(String, u32, u32)> = self
            .inner
            .hosting
            .list()
            .into_iter()
            .filter(|(ns, shard, _)| snapshots.check_lease(&shard_lease_key(ns, *shard)).is_err())
            .collect();
        for (ns, shard, generation) in lost {
            tracing::warn!(namespace = %ns, shard, "memory shard's lease lost: no longer hosted here");
            self.unhost_if_lost(&ns, shard, Some(generation)).await;
        }
    }

    /// Stops the shards this node hosts, for a namespace it does not serve, of a generation
    /// older than the namespace's stored one: a migration retired them and its release did
    /// not reach this node (it was cut off then, or the message was lost). Their index would
    /// otherwise stay in memory, and their leases held, until the process ends.
    pub(crate) async fn release_retired(&self) {
        let hosted: Vec<(String, u32, u32)> = self
            .inner
            .hosting
            .list()
            .into_iter()
            .filter(|(ns, ..)| !self.inner.running.contains(ns))
            .collect();
        let namespaces: std::collections::BTreeSet<&str> =
            hosted.iter().map(|(ns, ..)| ns.as_str()).collect();
        for ns in namespaces {
            let current = match self.stored_info(ns).await {
                Ok(info) => info.generation,
                Err(e) => {
                    tracing::debug!(namespace = %ns, error = %e, "reading a namespace's generation");
                    continue;
                }
            };
            for (_, shard, generation) in hosted.iter().filter(|(n, ..)| n == ns) {
                if *generation < current {
                    tracing::warn!(namespace = %ns, shard, generation, current, "memory shard of a retired generation: no longer hosted here");
                    self.unhost(ns, *shard, Some(*generation)).await;
                }
            }
        }
    }

    /// The node serving namespace `ns` now (the holder of its lease), read without taking it.
    ///
    /// # Errors
    /// The store could not be asked.
    pub(crate) async fn server_of(&self, ns: &str) -> Result<Option<String>, MemoryError> {
        let holder = self
            .inner
            .records
            .snapshots()
            .lease_holder(&super::ns_lease_key(ns))
            .await
            .map_err(super::store_err)?;
        Ok(holder.map(|h| aios_supervisor::snapshot::holder_node(&h).to_owned()))
    }

    /// One pass of [`host_watch`]: `since` holds, per namespace, when its serving node was
    /// first found unreachable.
    async fn release_orphans(&self, since: &mut std::collections::HashMap<String, Instant>) {
        let Some(remote) = self.inner.routing.remote() else {
            return;
        };
        let hosted = self.inner.hosting.list();
        let namespaces: std::collections::BTreeSet<String> =
            hosted.iter().map(|(ns, ..)| ns.clone()).collect();
        since.retain(|ns, _| namespaces.contains(ns));
        for ns in namespaces {
            if self.inner.running.contains(&ns) {
                since.remove(&ns);
                continue;
            }
            let server = match self.server_of(&ns).await {
                Ok(server) => server,
                Err(e) => {
                    tracing::debug!(namespace = %ns, error = %e, "reading who serves a namespace");
                    continue;
                }
            };
            // Nobody serves it (the next serving node finds the shards here), or a node this
            // one reaches does.
            let lost = server
                .as_deref()
                .is_some_and(|n| n != remote.node() && !remote.reachable(n));
            if !lost {
                since.remove(&ns);
                continue;
            }
            let first = *since.entry(ns.clone()).or_insert_with(Instant::now);
            if first.elapsed() < SERVER_LOST_AFTER {
                continue;
            }
            since.remove(&ns);
            // Read again now: a shard hosted for it during this pass goes too.
            let shards: Vec<u32> = self
                .inner
                .hosting
                .list()
                .into_iter()
                .filter(|(n, ..)| *n == ns)
                .map(|(_, shard, _)| shard)
                .collect();
            tracing::warn!(namespace = %ns, server = ?server, shards = shards.len(), "the node serving a memory namespace is unreachable: its shards hosted here are let go, to be placed on a node it reaches");
            for shard in shards {
                self.unhost(&ns, shard, None).await;
            }
        }
    }

    /// The generation of this node's actor of shard `shard` of `ns`, if it hosts one.
    pub(crate) fn hosted_generation(&self, ns: &str, shard: u32) -> Option<u32> {
        self.inner.hosting.running(ns, shard).map(|(g, _)| g)
    }

    /// The handle of this node's actor of shard `shard` of `ns`, if it hosts one.
    pub(crate) fn hosted_handle(&self, ns: &str, shard: u32) -> Option<ActorHandle<ShardMsg>> {
        self.inner.hosting.running(ns, shard).map(|(_, h)| h)
    }
}
