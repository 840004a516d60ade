//! The item operations of a namespace this node serves, its shards wherever they run:
//! remember, search, forget, get, update, cleanup; and what migrations and restores use to
//! read and write shards whole.
//!
//! Architecture invariant: a write is acknowledged only once every shard it touches wrote
//! its part durably; every shard it touches is placed before any is written, so a batch is
//! never stored in part and then refused.

use std::sync::Arc;
use std::time::Duration;

use aios_supervisor::CallError;

use super::shard::now_ms;
use super::types::Query;
use super::vector::{is_finite, normalize};
use super::{
    CleanupPolicy, CleanupReport, Hit, K_MAX, MEMORY_TEXT_LEN_MAX, MemoryError, MemoryFilter,
    MemoryItem, MemoryMeta, MemoryStore, MetaPatch, NamespaceInfo, NewMemory, REMEMBER_BATCH_MAX,
    SearchRequest, SearchResult, ShardAnswer, ShardQuery, ShardRequest, ShardStats, TAGS_MAX,
    WRITE_TIMEOUT, redact, remote,
};

impl MemoryStore {
    /// [`MemoryStore::remember`] as the node serving the namespace (its shards wherever they run).
    pub(crate) async fn remember_here(
        &self,
        namespace: &str,
        memories: Vec<NewMemory>,
    ) -> Result<Vec<u64>, MemoryError> {
        self.writable(namespace)?;
        let (ns, _writing) = self.ns_for_write(namespace).await?;
        self.writable(namespace)?;
        self.check_serving(&ns).await?;
        if memories.len() > REMEMBER_BATCH_MAX {
            return Err(MemoryError::Invalid(format!(
                "at most {REMEMBER_BATCH_MAX} memories per call"
            )));
        }
        for (i, m) in memories.iter().enumerate() {
            if m.text.trim().is_empty() || m.text.len() > MEMORY_TEXT_LEN_MAX {
                return Err(MemoryError::Invalid(format!(
                    "memories[{i}].text: must be 1..={MEMORY_TEXT_LEN_MAX} bytes"
                )));
            }
            if !(0.0..=1.0).contains(&m.meta.importance) {
                return Err(MemoryError::Invalid(format!(
                    "memories[{i}].meta.importance: must be 0.0..=1.0"
                )));
            }
            if m.meta.tags.len() > TAGS_MAX {
                return Err(MemoryError::Invalid(format!(
                    "memories[{i}].meta.tags: at most {TAGS_MAX}"
                )));
            }
        }
        let mut memories = memories;
        if ns.info.redact {
            for m in &mut memories {
                let (text, masked) = redact(&m.text);
                if masked > 0 {
                    if m.vector.is_some() {
                        // A caller's vector was made from the unmasked text: embed again.
                        m.vector = None;
                    }
                    m.text = text;
                }
            }
        }
        let to_embed: Vec<String> = memories
            .iter()
            .filter(|m| m.vector.is_none())
            .map(|m| m.text.clone())
            .collect();
        let mut embedded = if to_embed.is_empty() {
            Vec::new().into_iter()
        } else {
            self.check_model(&ns.info)?;
            self.inner.embedder.embed(&to_embed).await?.into_iter()
        };
        let now = now_ms();
        let mut per_shard: Vec<Vec<MemoryItem>> = vec![Vec::new(); ns.shards.len()];
        let mut ids = Vec::with_capacity(memories.len());
        for m in memories {
            let (model, mut vector) = match m.vector {
                Some(v) => (ns.info.model.clone(), v),
                None => (
                    self.inner.embedder.model().to_string(),
                    embedded
                        .next()
                        .ok_or_else(|| MemoryError::Embedding("fewer vectors than texts".into()))?,
                ),
            };
            Self::check_vector(&ns.info, &model, &mut vector)?;
            let mut meta = m.meta;
            if meta.created_ms == 0 {
                meta.created_ms = now;
            }
            // The shard follows the owner and the text, so repeated memories land together
            // (where cleanup merges them); the id encodes the shard (`id % shards`).
            let n = ns.shards.len() as u64;
            let shard = placement(&meta, &m.text) % n;
            let id = fastrand::u64(n..u64::MAX / 2) / n * n + shard;
            // Every read, delete and update by id finds the item's shard as `id % shards`.
            assert_eq!(id % n, shard, "a memory id encodes its shard");
            per_shard[shard as usize].push(MemoryItem {
                id,
                text: m.text,
                vector,
                meta,
            });
            ids.push(id);
        }
        // Every shard written runs somewhere before any is written: a batch is not stored in
        // part and then refused (a retry would store that part twice).
        let targets: Vec<usize> = per_shard
            .iter()
            .enumerate()
            .filter(|(_, batch)| !batch.is_empty())
            .map(|(shard, _)| shard)
            .collect();
        self.ensure_placed(&ns, targets.into_iter()).await?;
        let writes = per_shard
            .into_iter()
            .enumerate()
            .filter(|(_, batch)| !batch.is_empty())
            .map(|(shard, batch)| {
                self.shard_call(&ns, shard, ShardRequest::Put(batch), WRITE_TIMEOUT)
            });
        for result in futures_util::future::join_all(writes).await {
            result?;
        }
        Ok(ids)
    }

    /// [`MemoryStore::search`] as the node serving the namespace (its shards wherever they run).
    pub(crate) async fn search_here(
        &self,
        namespace: &str,
        request: SearchRequest,
    ) -> Result<SearchResult, MemoryError> {
        let ns = self.ns(namespace).await?;
        self.check_serving(&ns).await?;
        if !(1..=K_MAX).contains(&request.k) {
            return Err(MemoryError::Invalid(format!("k: must be 1..={K_MAX}")));
        }
        let vector = match request.query {
            Query::Text(text) => {
                self.check_model(&ns.info)?;
                self.inner
                    .embedder
                    .embed(&[text])
                    .await?
                    .pop()
                    .ok_or_else(|| MemoryError::Embedding("no vector".into()))?
            }
            Query::Vector { model, mut vector } => {
                Self::check_vector(&ns.info, &model, &mut vector)?;
                vector
            }
        };
        let query = Arc::new(ShardQuery {
            vector,
            k: request.k,
            filter: request.filter,
            now_ms: now_ms(),
        });
        let deadline = tokio::time::Instant::now() + request.timeout;
        let calls = (0..ns.shards.len()).map(|shard| {
            let (ns, query) = (&ns, query.clone());
            async move {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let answer = self
                    .shard_call(ns, shard, ShardRequest::Search(query), left)
                    .await;
                (shard as u32, answer)
            }
        });
        let mut result = SearchResult::default();
        let mut hits = Vec::new();
        for (shard, answer) in futures_util::future::join_all(calls).await {
            match answer {
                Ok(ShardAnswer::Hits(h)) => hits.extend(h),
                Ok(other) => {
                    tracing::warn!(namespace = %ns.info.name, shard, answer = ?other, "memory shard answered another request");
                    result.partial = true;
                    result.failed_shards.push(shard);
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns.info.name, shard, error = %e, "memory shard missed a query");
                    result.partial = true;
                    result.failed_shards.push(shard);
                }
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        hits.truncate(request.k);
        result.hits = hits;
        Ok(result)
    }

    /// [`MemoryStore::forget`] as the node serving the namespace (its shards wherever they run).
    pub(crate) async fn forget_here(
        &self,
        namespace: &str,
        ids: Vec<u64>,
        filter: MemoryFilter,
    ) -> Result<u64, MemoryError> {
        self.writable(namespace)?;
        let (ns, _writing) = self.ns_for_write(namespace).await?;
        self.writable(namespace)?;
        self.check_serving(&ns).await?;
        let calls = (0..ns.shards.len()).map(|shard| {
            let request = ShardRequest::Delete(ids.clone(), filter.clone());
            self.shard_call(&ns, shard, request, WRITE_TIMEOUT)
        });
        sum_counts(futures_util::future::join_all(calls).await)
    }

    /// [`MemoryStore::get`] as the node serving the namespace (its shards wherever they run).
    pub(crate) async fn get_here(
        &self,
        namespace: &str,
        ids: &[u64],
    ) -> Result<Vec<Hit>, MemoryError> {
        let ns = self.ns(namespace).await?;
        self.check_serving(&ns).await?;
        let n = ns.shards.len() as u64;
        let mut per_shard: Vec<Vec<u64>> = vec![Vec::new(); ns.shards.len()];
        for id in ids {
            per_shard[(id % n) as usize].push(*id);
        }
        let mut out = Vec::new();
        for (shard, ids) in per_shard.into_iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            match self
                .shard_call(&ns, shard, ShardRequest::Get(ids), WRITE_TIMEOUT)
                .await?
            {
                ShardAnswer::Hits(hits) => out.extend(hits),
                other => return Err(remote::wrong_answer(&other)),
            }
        }
        Ok(out)
    }

    /// Runs one cleanup pass over a namespace: deletes expired items, merges
    /// near-duplicates (per the node's [`MemoryConfig::duplicate_similarity`] unless
    /// `policy` says otherwise), rebuilds indexes that need it. Returns the sum over shards.
    ///
    /// # Errors
    /// [`MemoryError::NamespaceNotFound`], store or shard failures.
    pub async fn cleanup(
        &self,
        namespace: &str,
        policy: Option<CleanupPolicy>,
    ) -> Result<CleanupReport, MemoryError> {
        self.writable(namespace)?;
        let (ns, _writing) = self.ns_for_write(namespace).await?;
        self.writable(namespace)?;
        self.check_serving(&ns).await?;
        let policy = policy.unwrap_or(CleanupPolicy {
            now_ms: now_ms(),
            duplicate_similarity: self.inner.config.duplicate_similarity,
        });
        let mut total = CleanupReport::default();
        for shard in 0..ns.shards.len() {
            let r = match self
                .shard_call(&ns, shard, ShardRequest::Cleanup(policy), WRITE_TIMEOUT)
                .await?
            {
                ShardAnswer::Cleaned(r) => r,
                other => return Err(remote::wrong_answer(&other)),
            };
            total.expired += r.expired;
            total.merged += r.merged;
            total.checked += r.checked;
            total.rebuilt |= r.rebuilt;
        }
        tracing::info!(
            namespace,
            expired = total.expired,
            merged = total.merged,
            checked = total.checked,
            rebuilt = total.rebuilt,
            "memory cleanup"
        );
        Ok(total)
    }

    /// Changes the metadata of the memories with these ids and of those matching `filter`
    /// (an empty filter matches nothing here); each change is durable before it returns.
    /// Returns how many changed.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] for an importance outside 0..=1, the errors of
    /// [`MemoryStore::forget`].
    pub async fn update(
        &self,
        namespace: &str,
        ids: Vec<u64>,
        filter: MemoryFilter,
        patch: MetaPatch,
    ) -> Result<u64, MemoryError> {
        self.writable(namespace)?;
        let (ns, _writing) = self.ns_for_write(namespace).await?;
        self.writable(namespace)?;
        self.check_serving(&ns).await?;
        if patch.importance.is_some_and(|i| !(0.0..=1.0).contains(&i)) {
            return Err(MemoryError::Invalid("importance: must be 0.0..=1.0".into()));
        }
        if patch.add_tags.len() > TAGS_MAX {
            return Err(MemoryError::Invalid(format!(
                "add_tags: at most {TAGS_MAX}"
            )));
        }
        let calls = (0..ns.shards.len()).map(|shard| {
            let request = ShardRequest::Update(ids.clone(), filter.clone(), patch.clone());
            self.shard_call(&ns, shard, request, WRITE_TIMEOUT)
        });
        sum_counts(futures_util::future::join_all(calls).await)
    }

    /// Items, index kind and node per shard of a namespace this node serves (or starts
    /// serving); a shard that cannot be asked has zero figures and says why.
    ///
    /// # Errors
    /// [`MemoryError::NamespaceNotFound`], [`MemoryError::Unavailable`] when another node
    /// serves the namespace.
    pub async fn stats(&self, namespace: &str) -> Result<Vec<ShardStats>, MemoryError> {
        let ns = self.ns(namespace).await?;
        Ok(self.shard_stats(&ns).await)
    }

    /// Writes items with their ids and vectors as they are (restore); returns how many.
    pub(crate) async fn put_items(
        &self,
        items: Vec<(String, MemoryItem)>,
    ) -> Result<u64, MemoryError> {
        let mut groups: std::collections::BTreeMap<(String, usize), Vec<MemoryItem>> =
            std::collections::BTreeMap::new();
        let n = items.len() as u64;
        for (ns_name, item) in items {
            let ns = self.ns(&ns_name).await?;
            if item.vector.len() != ns.info.dim as usize {
                return Err(MemoryError::ModelMismatch(format!(
                    "item {} has {} dimensions, namespace {} holds {}",
                    item.id,
                    item.vector.len(),
                    ns_name,
                    ns.info.dim
                )));
            }
            let shard = (item.id % ns.shards.len() as u64) as usize;
            groups.entry((ns_name, shard)).or_default().push(item);
        }
        for ((ns_name, shard), batch) in groups {
            let ns = self.ns(&ns_name).await?;
            self.check_serving(&ns).await?;
            self.shard_call(&ns, shard, ShardRequest::Put(batch), WRITE_TIMEOUT)
                .await?;
        }
        Ok(n)
    }

    /// Every item of one shard, with vectors.
    pub(crate) async fn dump_shard(
        &self,
        namespace: &str,
        shard: u32,
    ) -> Result<Vec<MemoryItem>, MemoryError> {
        let ns = self.ns(namespace).await?;
        match self
            .shard_call(&ns, shard as usize, ShardRequest::Dump, WRITE_TIMEOUT)
            .await?
        {
            ShardAnswer::Items(items) => Ok(items),
            other => Err(remote::wrong_answer(&other)),
        }
    }

    /// Checks that this node's embedder made (or can make) the namespace's vectors.
    pub(crate) fn check_model(&self, info: &NamespaceInfo) -> Result<(), MemoryError> {
        let e = &self.inner.embedder;
        if e.model() != info.model || e.dim() as u32 != info.dim {
            return Err(MemoryError::ModelMismatch(format!(
                "namespace {} was built with {} ({} dimensions) but this node embeds with {} ({}); re-embed the namespace or configure its model",
                info.name,
                info.model,
                info.dim,
                e.model(),
                e.dim()
            )));
        }
        Ok(())
    }

    fn check_vector(info: &NamespaceInfo, model: &str, v: &mut [f32]) -> Result<(), MemoryError> {
        if model != info.model {
            return Err(MemoryError::ModelMismatch(format!(
                "the vector was made with {model}, namespace {} holds {} vectors",
                info.name, info.model
            )));
        }
        if v.len() != info.dim as usize {
            return Err(MemoryError::ModelMismatch(format!(
                "the vector has {} dimensions, namespace {} holds {}",
                v.len(),
                info.name,
                info.dim
            )));
        }
        if !is_finite(v) || !normalize(v) {
            return Err(MemoryError::Invalid(
                "the vector is zero or not finite".into(),
            ));
        }
        Ok(())
    }

    /// Waits until shard `shard` runs with a generation of at least `min` (1 on the first
    /// start, +1 per restart); tests use it after killing a shard.
    ///
    /// # Errors
    /// [`MemoryError::NamespaceNotFound`], [`MemoryError::Unavailable`] on timeout.
    #[doc(hidden)]
    pub async fn wait_shard_generation(
        &self,
        namespace: &str,
        shard: u32,
        min: u64,
        timeout: Duration,
    ) -> Result<u64, MemoryError> {
        self.ns(namespace).await?;
        let handle = self
            .hosted_handle(namespace, shard)
            .ok_or_else(|| MemoryError::Invalid(format!("no shard {shard} here")))?;
        handle
            .wait_for_generation(min, timeout)
            .await
            .map_err(|e| unavailable(shard as usize, &e))
    }

    /// The actor cell of a shard (tests kill shards through it).
    #[doc(hidden)]
    pub fn shard_cell(&self, namespace: &str, shard: u32) -> Option<ractor::ActorCell> {
        self.hosted_handle(namespace, shard)?.actor_cell()
    }
}

/// A stable hash of an item's owner and text (FNV-1a).
fn placement(meta: &MemoryMeta, text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let parts = [
        meta.agent.as_deref().unwrap_or(""),
        meta.session.as_deref().unwrap_or(""),
        meta.user.as_deref().unwrap_or(""),
        text,
    ];
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

pub(crate) fn unavailable(shard: usize, e: &CallError) -> MemoryError {
    MemoryError::Unavailable(format!("shard {shard}: {e}"))
}

/// The total of the shards' counts (deletes, updates); the first error otherwise.
fn sum_counts(answers: Vec<Result<ShardAnswer, MemoryError>>) -> Result<u64, MemoryError> {
    let mut total = 0;
    for answer in answers {
        match answer? {
            ShardAnswer::Count(n) => total += n,
            other => return Err(remote::wrong_answer(&other)),
        }
    }
    Ok(total)
}
