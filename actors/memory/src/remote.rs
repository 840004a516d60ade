//! Memory across the nodes of a cluster: one node serves a namespace (the entry point of
//! every operation on it), and every other node reaches it through [`RemoteMemory`]. Its
//! shards may run on other nodes (`spread.rs`), which the serving node reaches with
//! [`MemoryOp::Shard`].
//!
//! ```text
//! MemoryStore::remember/search/forget/get/export_jsonl/shards (public, routed)
//!   ├─ namespace served here, or no cluster ─► *_here ─► the shards, wherever they run
//!   └─ served by node N ─► RemoteMemory::call(N, MemoryOp) ─► N: serve_remote ─► *_here
//! ```
//!
//! The serving node runs an operation it is sent itself ([`MemoryStore::serve_remote`]
//! never forwards it to another serving node), so two nodes with stale views of each other
//! cannot bounce a request between them. A request that could not be sent is tried here (the namespace
//! moves to the node asked once its server's lease lapses); a write whose node was lost
//! after it was sent is not repeated, since it may have been applied.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Hit, MemoryError, MemoryFilter, MemoryHook, MemoryMeta, MemoryStore, NamespaceInfo, NewMemory,
    RecallRequest, SHARDS_MAX, SearchRequest, SearchResult, ShardAnswer, ShardRequest, ShardStats,
};

/// Similarity at which a consolidated note counts as already known.
const CONSOLIDATE_DUPLICATE_SIMILARITY: f32 = 0.97;

/// The largest export sent from one node to another; a larger namespace is exported on the
/// node that serves it.
pub const FORWARDED_EXPORT_BYTES_MAX: usize = 256 * 1024 * 1024;

/// How long a forwarded write or export may take.
const FORWARDED_TIMEOUT: Duration = Duration::from_secs(120);

/// A memory operation sent to the node that serves its namespace. Variants are matched by
/// name on the wire: never rename one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MemoryOp {
    /// [`MemoryStore::remember`].
    Remember {
        /// The namespace.
        namespace: String,
        /// What to store.
        memories: Vec<NewMemory>,
    },
    /// [`MemoryStore::search`].
    Search {
        /// The namespace.
        namespace: String,
        /// The query.
        request: SearchRequest,
    },
    /// [`MemoryStore::forget`].
    Forget {
        /// The namespace.
        namespace: String,
        /// Ids to delete.
        ids: Vec<u64>,
        /// And memories matching this.
        filter: MemoryFilter,
    },
    /// [`MemoryStore::get`].
    Get {
        /// The namespace.
        namespace: String,
        /// The ids.
        ids: Vec<u64>,
    },
    /// [`MemoryStore::export_jsonl`].
    Export {
        /// The namespace.
        namespace: String,
    },
    /// Place the namespace's shards again (its placement changed): on the node serving it.
    /// Answered [`MemoryAnswer::Replaced`].
    Replace {
        /// The namespace.
        namespace: String,
    },
    /// An operation a drained node sent on: run by the node it reaches, never sent on again.
    Forwarded {
        /// The operation.
        op: Box<MemoryOp>,
    },
    /// [`MemoryStore::shards`].
    Shards {
        /// The namespace.
        namespace: String,
    },
    /// From the node serving a namespace: host this shard of it (under the shard's lease),
    /// or keep hosting it. Answered [`MemoryAnswer::Hosted`].
    HostShard {
        /// The namespace as its serving node has it (generation included).
        info: NamespaceInfo,
        /// The shard.
        shard: u32,
    },
    /// From the node serving a namespace: a request to a shard this node hosts.
    Shard {
        /// The namespace.
        namespace: String,
        /// Its generation (a shard of another generation does not answer).
        generation: u32,
        /// The shard.
        shard: u32,
        /// How long the shard may take, in milliseconds.
        timeout_ms: u64,
        /// The request.
        request: ShardRequest,
    },
    /// From the node serving a namespace: stop hosting this shard (its generation was
    /// retired). Answered [`MemoryAnswer::Released`].
    ReleaseShard {
        /// The namespace.
        namespace: String,
        /// The generation retired.
        generation: u32,
        /// The shard.
        shard: u32,
    },
}

impl MemoryOp {
    /// The namespace it concerns.
    pub fn namespace(&self) -> &str {
        match self {
            Self::Remember { namespace, .. }
            | Self::Search { namespace, .. }
            | Self::Forget { namespace, .. }
            | Self::Get { namespace, .. }
            | Self::Export { namespace }
            | Self::Shards { namespace }
            | Self::Replace { namespace }
            | Self::Shard { namespace, .. }
            | Self::ReleaseShard { namespace, .. } => namespace,
            Self::HostShard { info, .. } => &info.name,
            Self::Forwarded { op } => op.namespace(),
        }
    }

    /// True when running it twice changes nothing (it may be retried on another node after
    /// the node it was sent to was lost).
    pub fn is_read(&self) -> bool {
        match self {
            Self::Search { .. } | Self::Get { .. } | Self::Export { .. } | Self::Shards { .. } => {
                true
            }
            Self::Shard { request, .. } => request.is_read(),
            Self::Forwarded { op } => op.is_read(),
            _ => false,
        }
    }

    /// How long the caller waits for the serving node's answer: a search its own deadline
    /// plus time to embed the query there, the rest [`FORWARDED_TIMEOUT`].
    pub fn timeout(&self) -> Duration {
        match self {
            Self::Search { request, .. } => request.timeout + Duration::from_secs(10),
            Self::Shard { timeout_ms, .. } => {
                Duration::from_millis(*timeout_ms).min(FORWARDED_TIMEOUT) + Duration::from_secs(2)
            }
            Self::Forwarded { op } => op.timeout(),
            _ => FORWARDED_TIMEOUT,
        }
    }
}

/// The answer to a [`MemoryOp`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MemoryAnswer {
    /// The ids of stored memories ([`MemoryOp::Remember`]).
    Ids(Vec<u64>),
    /// A search's result.
    Found(SearchResult),
    /// How many were deleted ([`MemoryOp::Forget`]).
    Count(u64),
    /// The memories asked for ([`MemoryOp::Get`]).
    Hits(Vec<Hit>),
    /// JSON lines and how many ([`MemoryOp::Export`]).
    Export {
        /// The lines.
        lines: String,
        /// How many.
        count: u64,
    },
    /// Each shard's figures and node ([`MemoryOp::Shards`]).
    Shards(Vec<ShardStats>),
    /// The shard is hosted here ([`MemoryOp::HostShard`]).
    Hosted,
    /// The shard's answer ([`MemoryOp::Shard`]).
    Shard(ShardAnswer),
    /// The shard is no longer hosted here ([`MemoryOp::ReleaseShard`]).
    Released,
    /// The namespace's shards were placed again ([`MemoryOp::Replace`]).
    Replaced,
}

/// A forwarded operation that got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ForwardError {
    /// False when nothing reached the node (safe to try elsewhere).
    pub sent: bool,
    /// True when the session that carried it closed before an answer (not a timeout): the
    /// node may be reachable again at once through another session (two nodes that dialled
    /// each other keep one of the two), and an operation that may run twice can be sent
    /// again.
    pub closed: bool,
    /// Why, for the caller's error.
    pub reason: String,
}

/// How memory reaches a namespace another node of a cluster serves (implemented by the
/// runtime over ractor_cluster). The other node runs the operation itself, on its shards
/// ([`MemoryStore::serve_remote`], [`MemoryStore::store_here`],
/// [`MemoryStore::retrieve_here`]).
#[async_trait::async_trait]
pub trait RemoteMemory: Send + Sync + 'static {
    /// This node's name.
    fn node(&self) -> &str;

    /// Whether `node` is reachable now.
    fn reachable(&self, node: &str) -> bool;

    /// This node's tags (`[cluster] tags`), for namespace placements.
    fn tags(&self) -> Vec<String> {
        Vec::new()
    }

    /// The reachable peers that may be given namespaces and shards now (not being drained),
    /// with their tags.
    async fn placement_candidates(&self) -> Vec<aios_core::Candidate>;

    /// How many memory shards each of [`RemoteMemory::placement_candidates`] hosts, asked
    /// now rather than from a cache (for `least_loaded` namespaces, whose shards are placed
    /// one after another). A peer that does not answer is left out.
    async fn shard_loads(&self) -> Vec<(String, usize)>;

    /// The names of [`RemoteMemory::placement_candidates`], sorted.
    async fn placeable_peers(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .placement_candidates()
            .await
            .into_iter()
            .map(|c| c.node)
            .collect();
        nodes.sort();
        nodes
    }

    /// [`MemoryStore::retrieve_here`] on `node`.
    ///
    /// # Errors
    /// The node could not be reached, or its error as text.
    async fn retrieve(
        &self,
        node: &str,
        namespace: &str,
        query: &str,
        k: usize,
    ) -> Result<Vec<String>, String>;

    /// [`MemoryStore::store_here`] on `node`.
    ///
    /// # Errors
    /// The node could not be reached, or its error as text.
    async fn store(
        &self,
        node: &str,
        namespace: &str,
        text: &str,
        meta: MemoryMeta,
    ) -> Result<bool, String>;

    /// [`MemoryStore::serve_remote`] on `node`, waiting at most `timeout`: the node's answer
    /// (its typed error included), or why there was none.
    ///
    /// # Errors
    /// [`ForwardError`] when the node did not answer.
    async fn call(
        &self,
        node: &str,
        op: MemoryOp,
        timeout: Duration,
    ) -> Result<Result<MemoryAnswer, MemoryError>, ForwardError>;
}

pub(crate) fn wrong_answer(answer: &impl std::fmt::Debug) -> MemoryError {
    MemoryError::Unavailable(format!("a node answered another operation: {answer:?}"))
}

impl MemoryStore {
    /// Stores memories durably and returns their ids, in order. Texts without a vector are
    /// embedded with the namespace's model. In a cluster, the node that serves the namespace
    /// stores them.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] (empty or oversized text, too many items, bad importance),
    /// [`MemoryError::ModelMismatch`], [`MemoryError::QuotaExceeded`], store or shard
    /// failures, [`MemoryError::Unavailable`] when the serving node cannot be reached or was
    /// lost with the request. Nothing is acknowledged unless every shard wrote its part
    /// durably.
    pub async fn remember(
        &self,
        namespace: &str,
        memories: Vec<NewMemory>,
    ) -> Result<Vec<u64>, MemoryError> {
        if self.runs_here(namespace) {
            return self.remember_here(namespace, memories).await;
        }
        let op = MemoryOp::Remember {
            namespace: namespace.to_owned(),
            memories,
        };
        match self.routed(op).await? {
            MemoryAnswer::Ids(ids) => Ok(ids),
            other => Err(wrong_answer(&other)),
        }
    }

    /// The `k` best matches, merged from every shard. Shards that fail or miss the deadline
    /// leave the result marked partial; the call never waits longer than the deadline (plus
    /// the hop, when another node of a cluster serves the namespace).
    ///
    /// # Errors
    /// [`MemoryError::NamespaceNotFound`], [`MemoryError::Invalid`] (k),
    /// [`MemoryError::ModelMismatch`], embedding failures, an unreachable serving node.
    pub async fn search(
        &self,
        namespace: &str,
        request: SearchRequest,
    ) -> Result<SearchResult, MemoryError> {
        if !self.inner.routing.in_cluster() {
            return self.search_here(namespace, request).await;
        }
        if self.inner.running.contains(namespace) {
            match self.search_here(namespace, request.clone()).await {
                // This node has just given the namespace up (its lease was lost): asked
                // where it is served now.
                Err(MemoryError::Unavailable(_)) if !self.inner.running.contains(namespace) => {}
                other => return other,
            }
        }
        let op = MemoryOp::Search {
            namespace: namespace.to_owned(),
            request,
        };
        match self.routed(op).await? {
            MemoryAnswer::Found(found) => Ok(found),
            other => Err(wrong_answer(&other)),
        }
    }

    /// Deletes the memories with these ids and those matching `filter` (an empty filter
    /// matches nothing here). Returns how many were deleted; each deletion is durable.
    ///
    /// # Errors
    /// [`MemoryError::NamespaceNotFound`], store or shard failures, an unreachable serving
    /// node.
    pub async fn forget(
        &self,
        namespace: &str,
        ids: Vec<u64>,
        filter: MemoryFilter,
    ) -> Result<u64, MemoryError> {
        if self.runs_here(namespace) {
            return self.forget_here(namespace, ids, filter).await;
        }
        let op = MemoryOp::Forget {
            namespace: namespace.to_owned(),
            ids,
            filter,
        };
        match self.routed(op).await? {
            MemoryAnswer::Count(n) => Ok(n),
            other => Err(wrong_answer(&other)),
        }
    }

    /// Each shard of a namespace: its items, its index kind, the node that hosts it (in a
    /// cluster), or why it cannot be asked. Asked of the node that serves the namespace.
    ///
    /// # Errors
    /// [`MemoryError::NamespaceNotFound`], an unreachable serving node.
    pub async fn shards(&self, namespace: &str) -> Result<Vec<ShardStats>, MemoryError> {
        if self.runs_here(namespace) {
            return self.stats(namespace).await;
        }
        let op = MemoryOp::Shards {
            namespace: namespace.to_owned(),
        };
        match self.routed(op).await? {
            MemoryAnswer::Shards(stats) => Ok(stats),
            other => Err(wrong_answer(&other)),
        }
    }

    /// The memories with these ids (missing ones are left out), in no particular order.
    ///
    /// # Errors
    /// [`MemoryError::NamespaceNotFound`], unreachable shards or serving node.
    pub async fn get(&self, namespace: &str, ids: &[u64]) -> Result<Vec<Hit>, MemoryError> {
        if self.runs_here(namespace) {
            return self.get_here(namespace, ids).await;
        }
        let op = MemoryOp::Get {
            namespace: namespace.to_owned(),
            ids: ids.to_vec(),
        };
        match self.routed(op).await? {
            MemoryAnswer::Hits(hits) => Ok(hits),
            other => Err(wrong_answer(&other)),
        }
    }

    /// Writes a namespace as JSON lines (`id`, `text`, `vector`, metadata fields); returns
    /// how many. Another node's namespace comes over the cluster, up to
    /// [`FORWARDED_EXPORT_BYTES_MAX`].
    ///
    /// # Errors
    /// [`MemoryError::NamespaceNotFound`], write or shard failures, an unreachable serving
    /// node, an export too large to forward.
    pub async fn export_jsonl(
        &self,
        namespace: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, MemoryError> {
        if self.runs_here(namespace) {
            return self.export_here(namespace, out).await;
        }
        let op = MemoryOp::Export {
            namespace: namespace.to_owned(),
        };
        match self.routed(op).await? {
            MemoryAnswer::Export { lines, count } => {
                out.write_all(lines.as_bytes())
                    .map_err(|e| MemoryError::Store(format!("writing the export: {e}")))?;
                Ok(count)
            }
            other => Err(wrong_answer(&other)),
        }
    }

    /// Runs an operation another node sent, as the node serving its namespace (never sent on
    /// to another serving node; its shards are asked wherever they run), or a shard request
    /// of the node serving a namespace. The namespace is started here when no node serves
    /// it; a drained node sends it on to one that is not drained.
    ///
    /// # Errors
    /// The operation's own errors; [`MemoryError::Unavailable`] when another node serves
    /// the namespace.
    pub async fn serve_remote(&self, op: MemoryOp) -> Result<MemoryAnswer, MemoryError> {
        let op = match op {
            // Sent on by a drained node: run here or refused, never sent on again (two
            // nodes drained at once, each still seeing the other as placeable, cannot bounce
            // it).
            MemoryOp::Forwarded { op } => {
                if self.is_draining() {
                    return Err(MemoryError::Unavailable(
                        "this node is drained too; retry on a node that is not".into(),
                    ));
                }
                *op
            }
            op => {
                if let Some(answer) = self.forward_off_drained(&op).await {
                    return answer;
                }
                op
            }
        };
        match op {
            MemoryOp::Remember {
                namespace,
                memories,
            } => self
                .remember_here(&namespace, memories)
                .await
                .map(MemoryAnswer::Ids),
            MemoryOp::Search { namespace, request } => self
                .search_here(&namespace, request)
                .await
                .map(MemoryAnswer::Found),
            MemoryOp::Forget {
                namespace,
                ids,
                filter,
            } => self
                .forget_here(&namespace, ids, filter)
                .await
                .map(MemoryAnswer::Count),
            MemoryOp::Get { namespace, ids } => self
                .get_here(&namespace, &ids)
                .await
                .map(MemoryAnswer::Hits),
            MemoryOp::Export { namespace } => {
                let mut out = Vec::new();
                let count = self.export_here(&namespace, &mut out).await?;
                if out.len() > FORWARDED_EXPORT_BYTES_MAX {
                    return Err(MemoryError::Invalid(format!(
                        "the export of {namespace} is {} bytes, more than the {FORWARDED_EXPORT_BYTES_MAX} sent between nodes: export it on the node that serves it",
                        out.len()
                    )));
                }
                let lines = String::from_utf8(out)
                    .map_err(|e| MemoryError::Store(format!("the export is not UTF-8: {e}")))?;
                Ok(MemoryAnswer::Export { lines, count })
            }
            MemoryOp::Shards { namespace } => {
                self.stats(&namespace).await.map(MemoryAnswer::Shards)
            }
            MemoryOp::Forwarded { .. } => Err(MemoryError::Invalid(
                "an operation forwarded twice is not run".into(),
            )),
            MemoryOp::Replace { namespace } => self
                .replace_here(&namespace)
                .await
                .map(|()| MemoryAnswer::Replaced),
            MemoryOp::HostShard { info, shard } => {
                if !(1..=SHARDS_MAX).contains(&info.shards) || shard >= info.shards {
                    return Err(MemoryError::Invalid(format!(
                        "no shard {shard} of {} shards",
                        info.shards
                    )));
                }
                self.host_here(&info, shard).await?;
                Ok(MemoryAnswer::Hosted)
            }
            MemoryOp::Shard {
                namespace,
                generation,
                shard,
                timeout_ms,
                request,
            } => self
                .serve_shard(
                    &namespace,
                    generation,
                    shard,
                    request,
                    Duration::from_millis(timeout_ms).min(FORWARDED_TIMEOUT),
                )
                .await
                .map(MemoryAnswer::Shard),
            MemoryOp::ReleaseShard {
                namespace,
                generation,
                shard,
            } => {
                self.unhost(&namespace, shard, Some(generation)).await;
                Ok(MemoryAnswer::Released)
            }
        }
    }

    /// The agents' memory hook's store, on this node only: stores `text` in `namespace`
    /// (created with the node's defaults if missing) unless the owner already has it.
    ///
    /// # Errors
    /// As [`MemoryStore::remember`].
    pub async fn store_here(
        &self,
        namespace: &str,
        text: &str,
        meta: MemoryMeta,
    ) -> Result<bool, MemoryError> {
        self.ensure_namespace(namespace).await?;
        // Without duplicates: a note the owner already has in long-term memory is skipped.
        let mut probe = SearchRequest::text(text, 1);
        probe.filter = MemoryFilter {
            agent: meta.agent.clone(),
            session: None,
            user: meta.user.clone(),
            ..MemoryFilter::default()
        };
        let known = self.search_here(namespace, probe).await?;
        if known
            .hits
            .first()
            .is_some_and(|h| h.similarity >= CONSOLIDATE_DUPLICATE_SIMILARITY)
        {
            return Ok(false);
        }
        self.remember_here(
            namespace,
            vec![NewMemory {
                text: text.to_string(),
                vector: None,
                meta,
            }],
        )
        .await?;
        Ok(true)
    }

    /// The agents' memory hook's retrieval, on this node only: up to `k` snippets.
    ///
    /// # Errors
    /// As [`MemoryStore::recall`].
    pub async fn retrieve_here(
        &self,
        namespace: &str,
        query: &str,
        k: usize,
    ) -> Result<Vec<String>, MemoryError> {
        let r = self
            .recall_with(namespace, RecallRequest::new(query, k), false)
            .await?;
        Ok(r.hits.into_iter().map(|h| h.text).collect())
    }
}

#[async_trait::async_trait]
impl MemoryHook for MemoryStore {
    async fn store(&self, namespace: &str, text: &str, meta: MemoryMeta) -> Result<bool, String> {
        // Known to be served by another node: straight there, without a lease query here.
        if let Some((node, remote)) = self.served_elsewhere(namespace) {
            match remote.store(&node, namespace, text, meta.clone()).await {
                Ok(stored) => return Ok(stored),
                Err(e) => {
                    tracing::debug!(namespace, %node, error = %e, "memory store forwarded in vain")
                }
            }
        }
        match self.store_here(namespace, text, meta.clone()).await {
            Err(MemoryError::Unavailable(why)) => match self.served_elsewhere(namespace) {
                Some((node, remote)) => remote.store(&node, namespace, text, meta).await,
                None => Err(MemoryError::Unavailable(why).to_string()),
            },
            other => other.map_err(|e| e.to_string()),
        }
    }

    async fn retrieve(&self, namespace: &str, query: &str, k: usize) -> Vec<String> {
        // Known to be served by another node: straight there, without a lease query here. If
        // that fails (the node died, or gave the namespace up), the namespace is tried here.
        if let Some((node, remote)) = self.served_elsewhere(namespace) {
            match remote.retrieve(&node, namespace, query, k).await {
                Ok(snippets) => return snippets,
                Err(e) => {
                    tracing::debug!(namespace, %node, error = %e, "memory retrieval forwarded in vain")
                }
            }
        }
        let result = match self.retrieve_here(namespace, query, k).await {
            Err(MemoryError::Unavailable(why)) => match self.served_elsewhere(namespace) {
                Some((node, remote)) => remote.retrieve(&node, namespace, query, k).await,
                None => Err(MemoryError::Unavailable(why).to_string()),
            },
            Err(MemoryError::NamespaceNotFound(_)) => Ok(Vec::new()),
            other => other.map_err(|e| e.to_string()),
        };
        result.unwrap_or_else(|e| {
            tracing::warn!(namespace, error = %e, "memory retrieval failed");
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_cross_the_wire_unchanged() {
        let ops = [
            MemoryOp::Remember {
                namespace: "n".into(),
                memories: vec![NewMemory {
                    text: "the launch code is 4411".into(),
                    vector: Some(vec![0.25, -0.1, 1.0e-7]),
                    meta: MemoryMeta {
                        agent: Some("t.a".into()),
                        tags: vec!["x".into()],
                        importance: 0.75,
                        ..MemoryMeta::default()
                    },
                }],
            },
            MemoryOp::Search {
                namespace: "n".into(),
                request: SearchRequest::text("code", 3),
            },
            MemoryOp::Forget {
                namespace: "n".into(),
                ids: vec![u64::MAX - 1],
                filter: MemoryFilter {
                    user: Some("u".into()),
                    ..MemoryFilter::default()
                },
            },
            MemoryOp::Get {
                namespace: "n".into(),
                ids: vec![1, 2],
            },
            MemoryOp::Export {
                namespace: "n".into(),
            },
        ];
        for op in ops {
            let wire = serde_json::to_vec(&op).unwrap();
            let back: MemoryOp = serde_json::from_slice(&wire).unwrap();
            assert_eq!(back, op);
            assert_eq!(back.namespace(), "n");
        }
        let err: Result<MemoryAnswer, MemoryError> =
            Err(MemoryError::QuotaExceeded("n holds 10".into()));
        let wire = serde_json::to_vec(&err).unwrap();
        let back: Result<MemoryAnswer, MemoryError> = serde_json::from_slice(&wire).unwrap();
        assert_eq!(
            back, err,
            "the serving node's typed error reaches the caller"
        );
    }

    #[test]
    fn only_reads_may_be_repeated_after_a_lost_node() {
        let search = MemoryOp::Search {
            namespace: "n".into(),
            request: SearchRequest::text("q", 1),
        };
        assert!(search.is_read());
        assert_eq!(search.timeout(), Duration::from_secs(12));
        let write = MemoryOp::Remember {
            namespace: "n".into(),
            memories: Vec::new(),
        };
        assert!(!write.is_read());
        assert_eq!(write.timeout(), FORWARDED_TIMEOUT);
    }
}
