//! A namespace's shards spread over the nodes of a cluster.
//!
//! One node *serves* a namespace (the holder of the lease `memserve/<ns>`): every operation
//! on it reaches that node ([`super::remote`]), which embeds, validates and fans the work out
//! to the shards. Each shard is *hosted* by the node that holds its own lease,
//! `memserve/<ns>/<shard>`, which may be another node: the serving node then sends it the
//! shard's part as a [`ShardRequest`] inside [`MemoryOp::Shard`].
//!
//! ```text
//! serving node ── remember/search/forget/… ─┬─► shard 0 actor here           (Slot::Local)
//!                                            ├─► node b: MemoryOp::Shard ─► shard 1 actor
//!                                            └─► shard 2: host lost, placed again later
//! ```
//!
//! - *Placement*: when the serving node starts a namespace, shard `s` goes to
//!   `nodes[(hash(ns) + s) % n]` of the sorted names of the nodes allowed: this node and its
//!   reachable peers that are not drained, narrowed by the namespace's placement (a node,
//!   or tags; `memplace/<ns>`). Without a cluster, or with `MemoryConfig::spread` off and no
//!   placement, every shard stays here. The node chosen is asked to host it
//!   ([`MemoryOp::HostShard`]); if it cannot, the next allowed node is tried; if another
//!   node holds the shard's lease, that node keeps it.
//! - *Single writer per shard*: a host takes the shard's lease and puts the shard's item
//!   prefix under it (`SnapshotStore::fence_prefix`), so a host that lost it (paused, cut
//!   off) is refused by the store, and refuses requests itself once its local deadline
//!   passed.
//! - *Hosting is independent of serving*: a node that stops serving a namespace keeps the
//!   shards whose leases it still holds, and the next serving node finds them there. Every
//!   2 s a host stops the shards whose lease it lost and lets go those of a serving node it
//!   has not reached for 6 s (`host_watch`), for that node to place them where it can. A host
//!   that was lost leaves its shards *vacant*: searches come back `partial`, writes to those
//!   shards fail with 503, and the next request after [`VACANT_RETRY`] places them again —
//!   here, once the lost host's lease lapsed (one lease TTL), items reloaded from the store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aios_supervisor::ActorHandle;
use aios_supervisor::snapshot::Durability;

use aios_core::Placement;

use super::hosting::HostError;
use super::namespaces::Namespace;
use super::remote::{MemoryAnswer, MemoryOp, RemoteMemory};
use super::shard::{ShardAnswer, ShardMsg, ShardRequest, ShardStats};
use super::{MemoryError, MemoryStore, NamespaceInfo};

/// Whether `node` is reachable (again) within [`SESSION_BACK_WITHIN`], after a session to it
/// closed.
async fn session_back(remote: &dyn super::RemoteMemory, node: &str) -> bool {
    let deadline = Instant::now() + SESSION_BACK_WITHIN;
    loop {
        if remote.reachable(node) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // Membership changes are not events this layer can await: checked every 50 ms.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Memory shards hosted per node, by node name (for `least_loaded` namespaces).
pub(crate) type ShardLoads = std::collections::HashMap<String, usize>;

/// How long a shard request whose session closed waits for another session to its node.
const SESSION_BACK_WITHIN: Duration = Duration::from_secs(1);

/// How long a node asked to host a shard, or to let one go, may take to answer.
const HOST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a vacant shard waits before the next request places it again.
pub(crate) const VACANT_RETRY: Duration = Duration::from_secs(1);
/// Added to a shard request's own timeout for the hop to its host.
const HOP_MARGIN: Duration = Duration::from_secs(2);

/// The record of namespace `ns`'s placement (beside its metadata, which is a bincode record
/// without field defaults, as agents' placements are beside their definitions).
fn placement_key(ns: &str) -> String {
    aios_core::keyspace::memory_placement_key(ns)
}

/// The lease of the node that hosts shard `shard` of namespace `ns`.
pub(crate) fn shard_lease_key(ns: &str, shard: u32) -> String {
    aios_core::keyspace::memory_shard_lease(ns, shard)
}

/// Where one shard of a namespace runs, as its serving node knows it.
#[derive(Clone)]
pub(crate) enum Slot {
    /// Its actor runs on this node.
    Local(ActorHandle<ShardMsg>),
    /// Node `0` hosts it.
    Remote(String),
    /// Nowhere reachable yet: placed again by the first request after `retry_at`.
    Vacant {
        /// Why, for the requests refused meanwhile.
        why: String,
        /// When to place it again.
        retry_at: Instant,
    },
}

impl Slot {
    pub(crate) fn vacant(why: String) -> Self {
        Self::Vacant {
            why,
            retry_at: Instant::now() + VACANT_RETRY,
        }
    }
}

/// One shard of a namespace this node serves.
pub(crate) struct ShardRef {
    /// Its index.
    pub(crate) index: u32,
    /// Where it runs. Never locked across an await.
    slot: Mutex<Slot>,
    /// Held while the shard is being placed again, so concurrent requests share one attempt.
    placing: tokio::sync::Mutex<()>,
}

impl ShardRef {
    pub(crate) fn new(index: u32, slot: Slot) -> Arc<Self> {
        Arc::new(Self {
            index,
            slot: Mutex::new(slot),
            placing: tokio::sync::Mutex::new(()),
        })
    }

    /// Where it runs now.
    pub(crate) fn slot(&self) -> Slot {
        // A poisoned lock only means a panic elsewhere while it was held; the slot is
        // always a whole value.
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, slot: Slot) {
        *self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = slot;
    }
}

/// A stable hash of a namespace's name (FNV-1a), so every node places its shards alike.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl MemoryStore {
    /// The nodes that may host the shards of namespace `ns`, sorted: this node and its
    /// reachable peers that are not drained, narrowed by the namespace's placement. `None`
    /// without a cluster (or with `spread` off and no placement): every shard here.
    ///
    /// # Errors
    /// Why no node may (a placement no reachable node satisfies), or a store failure.
    async fn allowed_nodes(&self, ns: &str) -> Result<Option<(Vec<String>, bool)>, String> {
        if self.inner.routing.remote().is_none() {
            return Ok(None);
        }
        let placement = self.stored_placement(ns).await?;
        let least_loaded = placement.least_loaded && self.inner.config.spread;
        Ok(self
            .allowed_under(ns, &placement)
            .await?
            .map(|nodes| (nodes, least_loaded)))
    }

    async fn stored_placement(&self, ns: &str) -> Result<Placement, String> {
        Ok(self
            .inner
            .records
            .get::<Placement>(&placement_key(ns))
            .await
            .map_err(|e| format!("reading the placement of memory namespace {ns}: {e}"))?
            .unwrap_or_default())
    }

    /// Whether the shards of namespace `ns` go to the least loaded nodes, and so are placed
    /// one after another (each sees the shards placed before it).
    pub(crate) async fn placed_by_load(&self, ns: &str) -> bool {
        self.inner.routing.remote().is_some()
            && self.inner.config.spread
            && self
                .stored_placement(ns)
                .await
                .is_ok_and(|p| p.least_loaded)
    }

    /// [`MemoryStore::allowed_nodes`] under `placement`.
    async fn allowed_under(
        &self,
        ns: &str,
        placement: &Placement,
    ) -> Result<Option<Vec<String>>, String> {
        let Some(remote) = self.inner.routing.remote() else {
            return Ok(None);
        };
        if !self.inner.config.spread && placement.is_default() {
            return Ok(None);
        }
        let mut nodes: Vec<(String, Vec<String>)> = remote
            .placement_candidates()
            .await
            .into_iter()
            .map(|c| (c.node, c.tags))
            .collect();
        if !self.is_draining() {
            nodes.push((remote.node().to_owned(), remote.tags()));
        }
        let mut allowed: Vec<String> = nodes
            .into_iter()
            .filter(|(node, tags)| {
                placement.node.as_ref().is_none_or(|n| n == node)
                    && placement.tags.iter().all(|t| tags.contains(t))
            })
            .map(|(node, _)| node)
            .collect();
        allowed.sort();
        allowed.dedup();
        if allowed.is_empty() {
            return Err(format!(
                "no reachable node satisfies the placement of memory namespace {ns} ({})",
                serde_json::to_string(placement).unwrap_or_default()
            ));
        }
        if !self.inner.config.spread {
            // Placed, not spread: every shard on the first node allowed.
            allowed.truncate(1);
        }
        Ok(Some(allowed))
    }

    /// Where shard `shard` of `info` runs from now on (see the module documentation): the
    /// allowed nodes are tried in turn from `(hash(ns) + shard) % n`, so consecutive shards
    /// go to consecutive nodes and a node that cannot host one passes it to the next. Under
    /// `least_loaded` they are tried from the one hosting the fewest shards now (ties in
    /// that same order).
    pub(crate) async fn place(&self, info: &NamespaceInfo, shard: u32) -> Slot {
        self.place_counted(info, shard, None).await
    }

    /// Memory shards per node now: this node's, and each placeable peer's (asked afresh).
    pub(crate) async fn shard_loads_now(&self) -> ShardLoads {
        let mut loads: ShardLoads = match self.inner.routing.remote() {
            Some(remote) => remote.shard_loads().await.into_iter().collect(),
            None => ShardLoads::new(),
        };
        if let Some(remote) = self.inner.routing.remote() {
            loads.insert(remote.node().to_owned(), self.hosted_shards());
        }
        loads
    }

    /// [`MemoryStore::place`]; under `least_loaded`, with `loads` (when given) as the shards
    /// per node, counting this shard where it goes, so a pass placing a namespace's shards
    /// one after another asks the nodes once.
    pub(crate) async fn place_counted(
        &self,
        info: &NamespaceInfo,
        shard: u32,
        loads: Option<&mut ShardLoads>,
    ) -> Slot {
        let allowed = match self.allowed_nodes(&info.name).await {
            Ok(allowed) => allowed,
            Err(why) => return Slot::vacant(why),
        };
        let (Some((nodes, least_loaded)), Some(remote)) = (allowed, self.inner.routing.remote())
        else {
            return self.host_or_keep(info, shard).await;
        };
        let first =
            (name_hash(&info.name).wrapping_add(u64::from(shard)) % nodes.len() as u64) as usize;
        let mut order: Vec<&String> = (0..nodes.len())
            .map(|k| &nodes[(first + k) % nodes.len()])
            .collect();
        let mut fresh = None;
        let mut loads = loads;
        if least_loaded {
            let loads: &ShardLoads = match loads.as_deref() {
                Some(loads) => loads,
                None => fresh.insert(self.shard_loads_now().await),
            };
            // A stable sort: equal loads keep the hashed order; a peer that did not say
            // its load comes last.
            order.sort_by_key(|node| loads.get(node.as_str()).copied().unwrap_or(usize::MAX));
        }
        let mut count = |node: &str| {
            if let Some(loads) = loads.as_deref_mut() {
                *loads.entry(node.to_owned()).or_default() += 1;
            }
        };
        let mut refusals = Vec::new();
        for node in order {
            if node == remote.node() {
                match self.host_or_keep(info, shard).await {
                    Slot::Vacant { why, .. } => refusals.push(why),
                    slot => {
                        let host = match &slot {
                            Slot::Remote(other) => other.as_str(),
                            _ => node.as_str(),
                        };
                        count(host);
                        return slot;
                    }
                }
            } else {
                match self.ask_to_host(remote, node, info, shard).await {
                    Ok(()) => {
                        count(node);
                        return Slot::Remote(node.clone());
                    }
                    Err(why) => {
                        tracing::debug!(namespace = %info.name, shard, %node, %why, "memory shard not hosted where placed; trying the next node");
                        refusals.push(format!("node {node}: {why}"));
                    }
                }
            }
        }
        Slot::vacant(format!(
            "shard {shard} of memory namespace {}: no node allowed could host it ({})",
            info.name,
            refusals.join("; ")
        ))
    }

    /// This node hosts shard `shard` of `info`, or the node holding its lease keeps it (even
    /// outside the namespace's placement: available first, moved when its lease is let go).
    async fn host_or_keep(&self, info: &NamespaceInfo, shard: u32) -> Slot {
        match self.host_here(info, shard).await {
            Ok(handle) => Slot::Local(handle),
            Err(HostError::HeldBy(node)) => match self.inner.routing.remote() {
                // Its host keeps it (with this generation).
                Some(remote) if remote.reachable(&node) => {
                    match self.ask_to_host(remote, &node, info, shard).await {
                        Ok(()) => Slot::Remote(node),
                        Err(why) => Slot::vacant(format!(
                            "shard {shard} of memory namespace {} is held by node {node}: {why}",
                            info.name
                        )),
                    }
                }
                _ => Slot::vacant(format!(
                    "shard {shard} of memory namespace {} is held by node {node}, which is not reachable; it moves once its lease lapses",
                    info.name
                )),
            },
            Err(HostError::Failed(e)) => Slot::vacant(format!(
                "shard {shard} of memory namespace {}: {e}",
                info.name
            )),
        }
    }

    async fn ask_to_host(
        &self,
        remote: &Arc<dyn RemoteMemory>,
        node: &str,
        info: &NamespaceInfo,
        shard: u32,
    ) -> Result<(), String> {
        let op = MemoryOp::HostShard {
            info: info.clone(),
            shard,
        };
        match remote.call(node, op, HOST_TIMEOUT).await {
            Ok(Ok(MemoryAnswer::Hosted)) => Ok(()),
            Ok(Ok(other)) => Err(format!("node {node} answered {other:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stops a namespace's shards: this node's, and with `hosts_too` those other nodes host
    /// (a migration retiring a generation). Without it, only this node's shards whose lease
    /// was lost stop: one it still holds goes on for the namespace's next serving node.
    pub(crate) async fn stop_shards(&self, ns: &Namespace, hosts_too: bool) {
        let name = ns.info.name.as_str();
        for shard in &ns.shards {
            match shard.slot() {
                Slot::Local(_) if hosts_too => {
                    self.unhost(name, shard.index, Some(ns.info.generation))
                        .await;
                }
                Slot::Local(_) => {
                    self.unhost_if_lost(name, shard.index, Some(ns.info.generation))
                        .await;
                }
                Slot::Remote(node) if hosts_too => {
                    let Some(remote) = self.inner.routing.remote() else {
                        continue;
                    };
                    let op = MemoryOp::ReleaseShard {
                        namespace: name.to_owned(),
                        generation: ns.info.generation,
                        shard: shard.index,
                    };
                    if let Err(e) = remote.call(&node, op, HOST_TIMEOUT).await {
                        // Its lease lapses; a later host of that shard index replaces it.
                        tracing::warn!(namespace = %name, shard = shard.index, %node, error = %e, "letting a remote memory shard go");
                    }
                }
                _ => {}
            }
            shard.set(Slot::vacant(format!(
                "memory namespace {name} stopped here"
            )));
        }
    }

    /// Sends `request` to shard `shard` of `ns` wherever it runs, waiting at most `timeout`
    /// for it. A shard whose host was lost is vacant until placed again.
    ///
    /// # Errors
    /// The shard's own errors, [`MemoryError::Unavailable`] when it cannot be reached.
    pub(crate) async fn shard_call(
        &self,
        ns: &Namespace,
        shard: usize,
        request: ShardRequest,
        timeout: Duration,
    ) -> Result<ShardAnswer, MemoryError> {
        let Some(r) = ns.shards.get(shard) else {
            return Err(MemoryError::Invalid(format!("no shard {shard}")));
        };
        let slot = match r.slot() {
            Slot::Vacant { .. } => self.placed(ns, r, timeout).await?,
            slot => slot,
        };
        match slot {
            Slot::Local(handle) => {
                let answer = super::shard::ask(&handle, r.index, request, timeout).await;
                if answer.is_err()
                    && self.hosted_generation(&ns.info.name, r.index) != Some(ns.info.generation)
                {
                    // Stopped here meanwhile (its lease was lost): placed again next time.
                    r.set(Slot::Vacant {
                        why: format!("shard {shard} is no longer hosted here"),
                        retry_at: Instant::now(),
                    });
                }
                answer
            }
            Slot::Vacant { why, .. } => Err(MemoryError::Unavailable(why)),
            Slot::Remote(node) => {
                let Some(remote) = self.inner.routing.remote() else {
                    return Err(MemoryError::Unavailable("no cluster".into()));
                };
                let read = request.is_read();
                let op = |request| MemoryOp::Shard {
                    namespace: ns.info.name.clone(),
                    generation: ns.info.generation,
                    shard: r.index,
                    timeout_ms: timeout.as_millis().min(u128::from(u64::MAX)) as u64,
                    request,
                };
                let again = request.may_repeat().then(|| request.clone());
                let mut outcome = remote.call(&node, op(request), timeout + HOP_MARGIN).await;
                // Whether an earlier attempt reached the node (and so may have run).
                let mut sent_before = false;
                // The session closed under it (two nodes that dialled each other at once
                // keep one session of the two): sent again, once, if the node is still
                // reachable and running it twice is running it once.
                if let (Err(e), Some(request)) = (&outcome, again)
                    && e.closed
                    && session_back(remote.as_ref(), &node).await
                {
                    tracing::debug!(namespace = %ns.info.name, shard, %node, "shard request sent again after its session closed");
                    sent_before = e.sent;
                    outcome = remote.call(&node, op(request), timeout + HOP_MARGIN).await;
                }
                match outcome {
                    Ok(Ok(MemoryAnswer::Shard(answer))) => Ok(answer),
                    Ok(Ok(other)) => Err(super::remote::wrong_answer(&other)),
                    Ok(Err(MemoryError::Unavailable(why))) => {
                        r.set(Slot::Vacant {
                            why: why.clone(),
                            retry_at: Instant::now(),
                        });
                        Err(MemoryError::Unavailable(format!(
                            "shard {shard} on node {node}: {why}"
                        )))
                    }
                    Ok(Err(e)) => Err(e),
                    Err(e) => {
                        let why = format!("shard {shard} on node {node}: {e}");
                        r.set(Slot::Vacant {
                            why: why.clone(),
                            retry_at: Instant::now(),
                        });
                        Err(MemoryError::Unavailable(
                            if (e.sent || sent_before) && !read {
                                format!("{why} (the write may have been applied)")
                            } else {
                                why
                            },
                        ))
                    }
                }
            }
        }
    }

    /// Where a vacant shard runs once placed again (when its retry time has come): placed by
    /// one task at a time, which goes on if the caller stops waiting at `timeout`, so a
    /// half-taken lease is never left behind. Only the current namespace is placed: a
    /// request still holding a namespace a migration replaced never brings its shards back.
    ///
    /// # Errors
    /// [`MemoryError::Unavailable`] while the shard is vacant.
    async fn placed(
        &self,
        ns: &Namespace,
        r: &Arc<ShardRef>,
        timeout: Duration,
    ) -> Result<Slot, MemoryError> {
        if let Slot::Vacant { why, retry_at } = r.slot()
            && Instant::now() < retry_at
        {
            return Err(MemoryError::Unavailable(why));
        }
        // During a migration the generation is about to change: its shards are placed by
        // the migration alone.
        if self.inner.running.is_migrating(&ns.info.name) {
            return Err(MemoryError::Unavailable(format!(
                "memory namespace {} is being migrated; shard {} is placed when it is done",
                ns.info.name, r.index
            )));
        }
        let current = self
            .inner
            .running
            .runs_generation(&ns.info.name, ns.info.generation);
        if !current {
            return Err(MemoryError::Unavailable(format!(
                "memory namespace {} changed while the request ran; retry",
                ns.info.name
            )));
        }
        let task = {
            let (this, info, r) = (self.clone(), ns.info.clone(), r.clone());
            tokio::spawn(async move {
                let _placing = r.placing.lock().await;
                match r.slot() {
                    Slot::Vacant { retry_at, .. } if Instant::now() >= retry_at => {
                        let slot = this.place(&info, r.index).await;
                        r.set(slot.clone());
                        slot
                    }
                    // Placed by the attempt this one waited for, or not due yet.
                    slot => slot,
                }
            })
        };
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(Slot::Vacant { why, .. })) => Err(MemoryError::Unavailable(why)),
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(e)) => Err(MemoryError::Unavailable(format!(
                "placing shard {}: {e}",
                r.index
            ))),
            Err(_) => Err(MemoryError::Unavailable(format!(
                "shard {} of memory namespace {} is being placed; retry",
                r.index, ns.info.name
            ))),
        }
    }

    /// Makes sure every shard in `shards` runs somewhere before a write touches any of them,
    /// so a write is not applied to some shards and refused by a vacant one.
    ///
    /// # Errors
    /// [`MemoryError::Unavailable`] naming a shard that is vacant.
    pub(crate) async fn ensure_placed(
        &self,
        ns: &Namespace,
        shards: impl Iterator<Item = usize>,
    ) -> Result<(), MemoryError> {
        for shard in shards {
            let Some(r) = ns.shards.get(shard) else {
                continue;
            };
            if let Slot::Vacant { .. } = r.slot() {
                self.placed(ns, r, super::WRITE_TIMEOUT).await?;
            }
        }
        Ok(())
    }

    /// Where the shards of `namespace` may run in a cluster (default: any node, spread).
    ///
    /// # Errors
    /// [`MemoryError::NamespaceNotFound`], store failures.
    pub async fn placement(&self, namespace: &str) -> Result<Placement, MemoryError> {
        self.stored_info(namespace).await?;
        Ok(self
            .inner
            .records
            .get::<Placement>(&placement_key(namespace))
            .await
            .map_err(super::store_err)?
            .unwrap_or_default())
    }

    /// Sets where the shards of `namespace` may run (a node, or nodes with tags; spread over
    /// the nodes allowed) and applies it now: the node serving the namespace places its
    /// shards again (items reloaded from the store; writes wait or are refused with 503 for
    /// that moment). Without a cluster it is kept and has no effect. A namespace pinned to
    /// nodes that are all down or drained has no shard running until one is back.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] for a bad placement; [`MemoryError::Unavailable`] when no
    /// reachable node
    /// satisfies it (nothing changes), or when it was stored but the serving node could
    /// not apply it now (its shards follow it when next placed; setting it again applies
    /// it); [`MemoryError::NamespaceNotFound`]; store failures.
    pub async fn set_placement(
        &self,
        namespace: &str,
        placement: Placement,
    ) -> Result<Placement, MemoryError> {
        placement.validate().map_err(MemoryError::Invalid)?;
        self.stored_info(namespace).await?;
        // Refused when no node reachable now satisfies it: a state of the cluster, not a
        // mistake in the request (503; the placement stays as it was).
        if let Err(why) = self.allowed_under(namespace, &placement).await {
            return Err(MemoryError::Unavailable(format!("placement: {why}")));
        }
        self.inner
            .records
            .put(&placement_key(namespace), &placement, Durability::Durable)
            .await
            .map_err(super::store_err)?;
        if self.inner.routing.remote().is_none() {
            return Ok(placement);
        }
        let op = MemoryOp::Replace {
            namespace: namespace.to_owned(),
        };
        match self.routed(op).await? {
            MemoryAnswer::Replaced => Ok(placement),
            other => Err(super::remote::wrong_answer(&other)),
        }
    }

    /// The stored metadata of `namespace`.
    pub(crate) async fn stored_info(&self, namespace: &str) -> Result<NamespaceInfo, MemoryError> {
        self.inner
            .records
            .get::<NamespaceInfo>(&format!("{}{namespace}", super::NS_KEY_PREFIX))
            .await
            .map_err(super::store_err)?
            .ok_or_else(|| MemoryError::NamespaceNotFound(namespace.to_owned()))
    }

    /// Places the shards of a namespace this node serves (or starts serving) again, under its
    /// placement: writes are refused while it happens, as during a migration.
    pub(crate) async fn replace_here(&self, namespace: &str) -> Result<(), MemoryError> {
        // The namespace is looked up under `admin`, which migrations hold: never one a
        // migration replaced while this waited.
        let admin = self.inner.running.admin().await;
        let ns = match self.inner.running.get(namespace) {
            Some(ns) => ns,
            // Served nowhere yet: started here (under its lease), then placed again below.
            None => self.start(self.stored_info(namespace).await?).await?,
        };
        let Some(_migrating) = self.inner.running.begin_migration(&admin, namespace) else {
            return Err(MemoryError::Unavailable(format!(
                "namespace {namespace} is being migrated; retry when it is done"
            )));
        };
        let lock = self.write_lock(namespace);
        let _exclusive = lock.write().await;
        // Still this node's, with its lease (a drain or a lost lease stops it).
        if !self.inner.running.is_current(&ns) || self.is_draining() {
            return Err(MemoryError::Unavailable(format!(
                "this node no longer serves memory namespace {namespace}; retry"
            )));
        }
        self.check_serving(&ns).await?;
        self.stop_shards(&ns, true).await;
        self.start_shards(&ns.info).await.map(|_| ())
    }

    /// What each shard of a namespace this node serves holds, and where it runs; a shard
    /// that cannot be reached says why.
    pub(crate) async fn shard_stats(&self, ns: &Namespace) -> Vec<ShardStats> {
        let calls = ns.shards.iter().map(|r| async move {
            let answer = self
                .shard_call(
                    ns,
                    r.index as usize,
                    ShardRequest::Stats,
                    super::WRITE_TIMEOUT,
                )
                .await;
            // Where it runs after the call (which may have placed it).
            let node = match r.slot() {
                Slot::Local(_) => self.node_name().map(str::to_owned),
                Slot::Remote(node) => Some(node),
                Slot::Vacant { .. } => None,
            };
            match answer {
                Ok(ShardAnswer::Stats(s)) => ShardStats {
                    shard: r.index,
                    node,
                    ..s
                },
                Ok(other) => ShardStats {
                    shard: r.index,
                    node,
                    error: Some(super::remote::wrong_answer(&other).to_string()),
                    ..ShardStats::default()
                },
                Err(e) => ShardStats {
                    shard: r.index,
                    node,
                    error: Some(e.to_string()),
                    ..ShardStats::default()
                },
            }
        });
        futures_util::future::join_all(calls).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_shards_go_to_consecutive_nodes() {
        // Placement is `(hash + shard) % nodes`: with 6 shards over 3 nodes, 2 each,
        // whatever the name; the hash does not depend on the process.
        for ns in ["notes", "facts", "x"] {
            let mut count = [0usize; 3];
            for shard in 0..6u64 {
                count[(name_hash(ns).wrapping_add(shard) % 3) as usize] += 1;
            }
            assert_eq!(count, [2, 2, 2], "{ns}");
        }
        // FNV-1a of "notes", as every node computes it.
        assert_eq!(name_hash("notes"), 0x4090_6c71_b95b_dbaa);
        assert_ne!(name_hash("notes"), name_hash("facts"));
    }

    #[test]
    fn a_shard_lease_is_under_its_namespace_s_name() {
        assert_eq!(shard_lease_key("notes", 3), "memserve/notes/0003");
    }
}
