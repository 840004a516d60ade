//! A memory shard: a supervised actor that owns a slice of a namespace — texts and
//! metadata in memory, vectors in its index, every item as a record in the node's store.
//! A write is answered once its records are durable; on (re)start the shard reloads its
//! records and rebuilds its index, so an acknowledged write survives a panic or a kill.

use std::collections::HashMap;
use std::sync::Arc;

use aios_supervisor::snapshot::Durability;
use aios_supervisor::{ActorHandle, CallError, Context, Worker};
use ractor::{ActorProcessingErr, RpcReplyPort};
use serde::{Deserialize, Serialize};

use super::index::VectorIndex;
use super::{Hit, MemoryError, MemoryFilter, MemoryMeta, NamespaceInfo};
use aios_core::protocol::unix_ms;
use aios_core::records::Records;

/// Records loaded per page while a shard starts.
const LOAD_PAGE: usize = 4096;

/// One stored memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryItem {
    /// Unique in its namespace.
    pub id: u64,
    /// The text.
    pub text: String,
    /// Its unit vector.
    pub vector: Vec<f32>,
    /// Who, when, how important.
    pub meta: MemoryMeta,
}

/// The record key prefix of a namespace's items, every generation: `mem/<ns>/`.
pub(crate) fn items_prefix(ns: &str) -> String {
    aios_core::keyspace::memory_items_prefix(ns)
}

/// The record key prefix of a namespace's generation: `mem/<ns>/<generation>/`.
pub(crate) fn generation_prefix(ns: &str, generation: u32) -> String {
    format!("{}{generation:06}/", items_prefix(ns))
}

/// The record key prefix of shard `shard` of the namespace's current generation.
pub(crate) fn shard_prefix(info: &NamespaceInfo, shard: u32) -> String {
    shard_prefix_at(&info.name, info.generation, shard)
}

/// The record key prefix of shard `shard` of generation `generation` of namespace `ns`.
pub(crate) fn shard_prefix_at(ns: &str, generation: u32, shard: u32) -> String {
    format!("{}{shard:04}/", generation_prefix(ns, generation))
}

pub(crate) fn item_key(info: &NamespaceInfo, shard: u32, id: u64) -> String {
    format!("{}{id:016x}", shard_prefix(info, shard))
}

/// A query as a shard sees it: the query's unit vector, how many hits, the filter, and the
/// time expiry is judged against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardQuery {
    pub(crate) vector: Vec<f32>,
    pub(crate) k: usize,
    pub(crate) filter: MemoryFilter,
    pub(crate) now_ms: u64,
}

/// What a shard holds, and where it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStats {
    /// Its index in the namespace.
    #[serde(default)]
    pub shard: u32,
    /// Items.
    pub items: u64,
    /// Whether the index is HNSW.
    pub ann: bool,
    /// The node whose actor holds it (in a cluster; `None` on a single node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Why the shard could not be asked (its host lost, say); the figures are then zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A request to one shard as it crosses nodes (a namespace's shards may run on other nodes
/// than the one that serves it; see `spread.rs`). Variants are matched by name on the wire:
/// never rename one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ShardRequest {
    /// Store these items durably.
    Put(Vec<MemoryItem>),
    /// The best hits for a query.
    Search(Arc<ShardQuery>),
    /// Delete these ids and the items matching the filter.
    Delete(Vec<u64>, MemoryFilter),
    /// What the shard holds.
    Stats,
    /// These items.
    Get(Vec<u64>),
    /// One cleanup pass.
    Cleanup(CleanupPolicy),
    /// Every item with its vector.
    Dump,
    /// Change the metadata of these ids and of the items matching the filter.
    Update(Vec<u64>, MemoryFilter, MetaPatch),
}

impl ShardRequest {
    /// True when it changes nothing (it may be asked again after its node was lost).
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Self::Search(_) | Self::Stats | Self::Get(_) | Self::Dump
        )
    }

    /// True when running it twice is running it once: a read, or a `Put` (items are
    /// written under the ids the serving node gave them, so a second write rewrites the
    /// same records).
    pub fn may_repeat(&self) -> bool {
        self.is_read() || matches!(self, Self::Put(_))
    }
}

/// A shard's answer to a [`ShardRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ShardAnswer {
    /// Stored ([`ShardRequest::Put`]).
    Done,
    /// Hits ([`ShardRequest::Search`], [`ShardRequest::Get`]).
    Hits(Vec<Hit>),
    /// How many were deleted or changed.
    Count(u64),
    /// What it holds.
    Stats(ShardStats),
    /// What a cleanup pass did.
    Cleaned(CleanupReport),
    /// Every item ([`ShardRequest::Dump`]).
    Items(Vec<MemoryItem>),
}

/// Asks a shard actor of this node `request`, waiting at most `timeout`.
pub(crate) async fn ask(
    handle: &ActorHandle<ShardMsg>,
    shard: u32,
    request: ShardRequest,
    timeout: std::time::Duration,
) -> Result<ShardAnswer, MemoryError> {
    let lost = |e: CallError| super::items::unavailable(shard as usize, &e);
    Ok(match request {
        ShardRequest::Put(batch) => {
            handle
                .call(|r| ShardMsg::Put(batch, r), timeout)
                .await
                .map_err(lost)??;
            ShardAnswer::Done
        }
        ShardRequest::Search(q) => ShardAnswer::Hits(
            handle
                .call(|r| ShardMsg::Search(q, r), timeout)
                .await
                .map_err(lost)?,
        ),
        ShardRequest::Delete(ids, filter) => ShardAnswer::Count(
            handle
                .call(|r| ShardMsg::Delete(ids, filter, r), timeout)
                .await
                .map_err(lost)??,
        ),
        ShardRequest::Stats => {
            ShardAnswer::Stats(handle.call(ShardMsg::Stats, timeout).await.map_err(lost)?)
        }
        ShardRequest::Get(ids) => ShardAnswer::Hits(
            handle
                .call(|r| ShardMsg::Get(ids, r), timeout)
                .await
                .map_err(lost)?,
        ),
        ShardRequest::Cleanup(policy) => ShardAnswer::Cleaned(
            handle
                .call(|r| ShardMsg::Cleanup(policy, r), timeout)
                .await
                .map_err(lost)??,
        ),
        ShardRequest::Dump => {
            ShardAnswer::Items(handle.call(ShardMsg::Dump, timeout).await.map_err(lost)?)
        }
        ShardRequest::Update(ids, filter, patch) => ShardAnswer::Count(
            handle
                .call(|r| ShardMsg::Update(ids, filter, patch, r), timeout)
                .await
                .map_err(lost)??,
        ),
    })
}

pub(crate) enum ShardMsg {
    Put(Vec<MemoryItem>, RpcReplyPort<Result<(), MemoryError>>),
    Search(Arc<ShardQuery>, RpcReplyPort<Vec<Hit>>),
    Delete(
        Vec<u64>,
        MemoryFilter,
        RpcReplyPort<Result<u64, MemoryError>>,
    ),
    Stats(RpcReplyPort<ShardStats>),
    Get(Vec<u64>, RpcReplyPort<Vec<Hit>>),
    Cleanup(
        CleanupPolicy,
        RpcReplyPort<Result<CleanupReport, MemoryError>>,
    ),
    /// Every item with its vector, in id order (one message: consistent with the writes
    /// acknowledged before it).
    Dump(RpcReplyPort<Vec<MemoryItem>>),
    Update(
        Vec<u64>,
        MemoryFilter,
        MetaPatch,
        RpcReplyPort<Result<u64, MemoryError>>,
    ),
}

/// Changes to apply to the metadata of the memories an update selects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaPatch {
    /// New importance (0.0..=1.0).
    pub importance: Option<f32>,
    /// Tags to add.
    pub add_tags: Vec<String>,
    /// Tags to remove.
    pub remove_tags: Vec<String>,
    /// New expiry: `Some(None)` removes it.
    pub expires_ms: Option<Option<u64>>,
}

/// What a cleanup pass does.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CleanupPolicy {
    /// Items expired at this time are deleted.
    pub now_ms: u64,
    /// Two items of the same agent, session and user at least this similar are merged
    /// (the older one stays, with the higher importance and both tag sets). `None` skips
    /// duplicate detection.
    pub duplicate_similarity: Option<f32>,
}

/// What a cleanup pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    /// Expired items deleted.
    pub expired: u64,
    /// Near-duplicates merged into an older item.
    pub merged: u64,
    /// Items checked for duplicates.
    pub checked: u64,
    /// Whether the index was rebuilt.
    pub rebuilt: bool,
}

/// Items checked for duplicates per shard and pass at most (oldest unchecked first; the
/// next pass goes on from there), so one pass never holds a shard for long.
pub const DEDUP_CHECK_MAX: usize = 2_000;

/// The worker of shard `shard` of a namespace.
pub(crate) struct ShardWorker {
    pub(crate) info: NamespaceInfo,
    pub(crate) shard: u32,
    pub(crate) records: Records,
}

pub(crate) struct ShardState {
    items: HashMap<u64, (String, MemoryMeta)>,
    index: VectorIndex,
    /// Items created before this were checked for duplicates by an earlier pass of this
    /// incarnation.
    dedup_checked_ms: u64,
}

impl ShardWorker {
    fn store_err(&self, e: impl std::fmt::Display) -> MemoryError {
        MemoryError::Store(format!(
            "namespace {} shard {}: {e}",
            self.info.name, self.shard
        ))
    }

    /// Every item record of this shard, in key order.
    async fn load(&self) -> Result<Vec<MemoryItem>, MemoryError> {
        let prefix = shard_prefix(&self.info, self.shard);
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let keys = self
                .records
                .keys_after(&prefix, after.as_deref(), LOAD_PAGE)
                .await
                .map_err(|e| self.store_err(e))?;
            let Some(last) = keys.last().cloned() else {
                break;
            };
            for key in &keys {
                if let Some(item) = self
                    .records
                    .get::<MemoryItem>(key)
                    .await
                    .map_err(|e| self.store_err(e))?
                {
                    out.push(item);
                }
            }
            after = Some(last);
        }
        Ok(out)
    }

    /// Reloads items and index from the store: after an index change of kind, or after a
    /// write that failed half-way (so memory matches what is stored).
    async fn rebuild(&self, state: &mut ShardState) -> Result<(), MemoryError> {
        let items = self.load().await?;
        state.index = VectorIndex::build(
            self.info.dim as usize,
            self.info.index,
            self.info.ann,
            items.iter().map(|i| (i.id, i.vector.as_slice())),
        );
        state.items = items
            .iter()
            .map(|i| (i.id, (i.text.clone(), i.meta.clone())))
            .collect();
        tracing::info!(namespace = %self.info.name, shard = self.shard, items = items.len(), ann = state.index.is_ann(), "memory index rebuilt");
        Ok(())
    }

    async fn put(&self, state: &mut ShardState, batch: Vec<MemoryItem>) -> Result<(), MemoryError> {
        if let Some(quota) = self.info.quota_items_per_shard() {
            let new = batch
                .iter()
                .filter(|i| !state.items.contains_key(&i.id))
                .count() as u64;
            if state.items.len() as u64 + new > quota {
                return Err(MemoryError::QuotaExceeded(format!(
                    "namespace {} holds at most {} items ({quota} per shard); delete some or raise the quota",
                    self.info.name,
                    self.info.quota_items.unwrap_or(0)
                )));
            }
        }
        self.write_items(&batch).await?;
        for item in batch {
            state.index.insert(item.id, &item.vector);
            state.items.insert(item.id, (item.text, item.meta));
        }
        Ok(())
    }

    /// Writes `items` (buffered: one statement per 512 where the store can) and flushes
    /// once, a single group commit: acknowledged only once on disk.
    async fn write_items(&self, items: &[MemoryItem]) -> Result<(), MemoryError> {
        if items.is_empty() {
            return Ok(());
        }
        self.records
            .put_many(
                items
                    .iter()
                    .map(|item| (item_key(&self.info, self.shard, item.id), item)),
                Durability::Buffered,
            )
            .await
            .map_err(|e| self.store_err(e))?;
        self.records
            .snapshots()
            .flush()
            .await
            .map_err(|e| self.store_err(e))
    }

    fn search(&self, state: &ShardState, q: &ShardQuery) -> Vec<Hit> {
        let keep = |id: u64| {
            state
                .items
                .get(&id)
                .is_some_and(|(_, meta)| q.filter.matches(meta, q.now_ms))
        };
        state
            .index
            .search(&q.vector, q.k, &keep)
            .into_iter()
            .filter_map(|(id, similarity)| {
                let (text, meta) = state.items.get(&id)?;
                Some(Hit {
                    id,
                    similarity,
                    score: similarity,
                    text: text.clone(),
                    meta: meta.clone(),
                    shard: self.shard,
                })
            })
            .collect()
    }

    async fn cleanup(
        &self,
        state: &mut ShardState,
        policy: CleanupPolicy,
    ) -> Result<CleanupReport, MemoryError> {
        let mut report = CleanupReport::default();
        let expired: Vec<u64> = state
            .items
            .iter()
            .filter(|(_, (_, m))| m.expires_ms.is_some_and(|e| e <= policy.now_ms))
            .map(|(id, _)| *id)
            .collect();
        report.expired = self.delete(state, expired, MemoryFilter::default()).await?;
        if let Some(threshold) = policy.duplicate_similarity {
            let mut fresh: Vec<(u64, u64)> = state
                .items
                .iter()
                .filter(|(_, (_, m))| m.created_ms >= state.dedup_checked_ms)
                .map(|(id, (_, m))| (m.created_ms, *id))
                .collect();
            fresh.sort_unstable();
            let truncated = fresh.len() > DEDUP_CHECK_MAX;
            fresh.truncate(DEDUP_CHECK_MAX);
            let checked_up_to = match (truncated, fresh.last()) {
                (true, Some(&(created, _))) => created,
                _ => policy.now_ms,
            };
            for (_, id) in fresh {
                let Some((_, meta)) = state.items.get(&id).cloned() else {
                    continue; // merged away earlier in this pass
                };
                let Some(v) = state.index.vector(id).map(<[f32]>::to_vec) else {
                    continue;
                };
                report.checked += 1;
                let same_owner = |other: u64| {
                    other != id
                        && state.items.get(&other).is_some_and(|(_, m)| {
                            m.agent == meta.agent
                                && m.session == meta.session
                                && m.user == meta.user
                        })
                };
                let Some(&(other, similarity)) = state.index.search(&v, 1, &same_owner).first()
                else {
                    continue;
                };
                if similarity < threshold {
                    continue;
                }
                // The older one survives.
                let Some((_, other_meta)) = state.items.get(&other).cloned() else {
                    continue;
                };
                let (keep, drop) = if (other_meta.created_ms, other) <= (meta.created_ms, id) {
                    (other, id)
                } else {
                    (id, other)
                };
                let dropped = state.items.get(&drop).map(|(_, m)| m.clone());
                if let (Some(dropped), Some((text, kept))) =
                    (dropped, state.items.get(&keep).cloned())
                {
                    let mut merged = kept.clone();
                    merged.importance = merged.importance.max(dropped.importance);
                    for t in dropped.tags {
                        if !merged.tags.contains(&t) {
                            merged.tags.push(t);
                        }
                    }
                    if merged != kept {
                        let vector = state
                            .index
                            .vector(keep)
                            .map(<[f32]>::to_vec)
                            .unwrap_or_default();
                        let item = MemoryItem {
                            id: keep,
                            text: text.clone(),
                            vector,
                            meta: merged.clone(),
                        };
                        self.records
                            .put(
                                &item_key(&self.info, self.shard, keep),
                                &item,
                                Durability::Durable,
                            )
                            .await
                            .map_err(|e| self.store_err(e))?;
                        state.items.insert(keep, (text, merged));
                    }
                }
                report.merged += self
                    .delete(state, vec![drop], MemoryFilter::default())
                    .await?;
            }
            state.dedup_checked_ms = checked_up_to;
        }
        if state.index.wants_rebuild() {
            self.rebuild(state).await?;
            report.rebuilt = true;
        }
        Ok(report)
    }

    async fn update(
        &self,
        state: &mut ShardState,
        ids: Vec<u64>,
        filter: MemoryFilter,
        patch: MetaPatch,
    ) -> Result<u64, MemoryError> {
        let mut chosen: Vec<u64> = ids
            .into_iter()
            .filter(|id| state.items.contains_key(id))
            .collect();
        if !filter.is_empty() {
            chosen.extend(
                state
                    .items
                    .iter()
                    .filter(|(_, (_, meta))| filter.matches_ignoring_expiry(meta))
                    .map(|(id, _)| *id),
            );
        }
        chosen.sort_unstable();
        chosen.dedup();
        let mut changed = Vec::new();
        for id in chosen {
            let Some((text, meta)) = state.items.get(&id) else {
                continue;
            };
            let mut m = meta.clone();
            if let Some(i) = patch.importance {
                m.importance = i;
            }
            for t in &patch.add_tags {
                if !m.tags.contains(t) {
                    m.tags.push(t.clone());
                }
            }
            m.tags.retain(|t| !patch.remove_tags.contains(t));
            if let Some(e) = patch.expires_ms {
                m.expires_ms = e;
            }
            if &m == meta {
                continue;
            }
            let vector = state
                .index
                .vector(id)
                .map(<[f32]>::to_vec)
                .unwrap_or_default();
            changed.push(MemoryItem {
                id,
                text: text.clone(),
                vector,
                meta: m,
            });
        }
        self.write_items(&changed).await?;
        let n = changed.len() as u64;
        for item in changed {
            state.items.insert(item.id, (item.text, item.meta));
        }
        Ok(n)
    }

    async fn delete(
        &self,
        state: &mut ShardState,
        ids: Vec<u64>,
        filter: MemoryFilter,
    ) -> Result<u64, MemoryError> {
        let mut doomed: Vec<u64> = ids
            .into_iter()
            .filter(|id| state.items.contains_key(id))
            .collect();
        if !filter.is_empty() {
            doomed.extend(
                state
                    .items
                    .iter()
                    .filter(|(_, (_, meta))| filter.matches_ignoring_expiry(meta))
                    .map(|(id, _)| *id),
            );
        }
        doomed.sort_unstable();
        doomed.dedup();
        for id in &doomed {
            // Each removal is durable before the item leaves the index.
            self.records
                .delete(&item_key(&self.info, self.shard, *id))
                .await
                .map_err(|e| self.store_err(e))?;
            state.index.remove(*id);
            state.items.remove(id);
        }
        Ok(doomed.len() as u64)
    }
}

impl Worker for ShardWorker {
    type Msg = ShardMsg;
    type State = ShardState;

    async fn init(
        &self,
        _ctx: &mut Context<ShardMsg>,
        _restored: Option<ShardState>,
    ) -> Result<ShardState, ActorProcessingErr> {
        let items = self.load().await?;
        let index = VectorIndex::build(
            self.info.dim as usize,
            self.info.index,
            self.info.ann,
            items.iter().map(|i| (i.id, i.vector.as_slice())),
        );
        let items = items
            .into_iter()
            .map(|i| (i.id, (i.text, i.meta)))
            .collect();
        Ok(ShardState {
            items,
            index,
            dedup_checked_ms: 0,
        })
    }

    async fn handle(
        &self,
        ctx: &mut Context<ShardMsg>,
        msg: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Put(batch, reply) => {
                let result = self.put(state, batch).await;
                let resync = result.is_err();
                // Answered first: a rebuild that fails must not turn a stored write into an
                // error for its caller.
                ctx.reply(reply, result);
                if resync || state.index.wants_rebuild() {
                    // After a failed write some records may be stored: reload what is.
                    self.rebuild(state).await?;
                }
            }
            ShardMsg::Search(q, reply) => {
                let hits = self.search(state, &q);
                ctx.reply(reply, hits);
            }
            ShardMsg::Delete(ids, filter, reply) => {
                let result = self.delete(state, ids, filter).await;
                if result.is_ok() && state.index.wants_rebuild() {
                    self.rebuild(state).await?;
                }
                ctx.reply(reply, result);
            }
            ShardMsg::Get(ids, reply) => {
                let hits = ids
                    .into_iter()
                    .filter_map(|id| {
                        let (text, meta) = state.items.get(&id)?;
                        Some(Hit {
                            id,
                            similarity: 1.0,
                            score: 1.0,
                            text: text.clone(),
                            meta: meta.clone(),
                            shard: self.shard,
                        })
                    })
                    .collect();
                ctx.reply(reply, hits);
            }
            ShardMsg::Update(ids, filter, patch, reply) => {
                let result = self.update(state, ids, filter, patch).await;
                ctx.reply(reply, result);
            }
            ShardMsg::Dump(reply) => {
                let mut items: Vec<MemoryItem> = state
                    .items
                    .iter()
                    .filter_map(|(id, (text, meta))| {
                        Some(MemoryItem {
                            id: *id,
                            text: text.clone(),
                            vector: state.index.vector(*id)?.to_vec(),
                            meta: meta.clone(),
                        })
                    })
                    .collect();
                items.sort_unstable_by_key(|i| i.id);
                ctx.reply(reply, items);
            }
            ShardMsg::Cleanup(policy, reply) => {
                let report = self.cleanup(state, policy).await;
                ctx.reply(reply, report);
            }
            ShardMsg::Stats(reply) => ctx.reply(
                reply,
                ShardStats {
                    shard: self.shard,
                    items: state.items.len() as u64,
                    ann: state.index.is_ann(),
                    node: None,
                    error: None,
                },
            ),
        }
        Ok(())
    }
}

/// The current time for queries (expiry is judged against it).
pub(crate) fn now_ms() -> u64 {
    unix_ms()
}
