//! Vector memory: namespaces split into shards, each shard a supervised actor owning its
//! items and index; a router ([`MemoryStore`]) that embeds, validates, writes durably and
//! fans queries out to every shard with a deadline; context-aware retrieval for agents.
//!
//! ```text
//! MemoryStore ── remember(ns, items) ── embed ─ id % shards ─► shard actors (durable puts)
//!             ── search(ns, query) ──── embed ─ fan out with deadline ─► merge top-k
//!             ── recall(ns, query) ──── search k×4 → recency/importance rescoring → MMR
//!                                       → a context block within a token budget
//! ```
//!
//! Store layout: namespace metadata `memns/<ns>`, items `mem/<ns>/<generation>/<shard>/<id>`.
//!
//! [`MemoryStore`] is a thin handle over components that each own their state in their own
//! module: [`namespaces`] (the namespaces this node serves, their admin and write locks and
//! migration marks), [`hosting`] (the shard actors this node hosts, drains), [`routing`]
//! (which node serves which namespace, and the route there). The operations are grouped by
//! what they do: [`items`] (remember, search, forget, update, cleanup), [`recall`]
//! (context-aware retrieval), [`spread`] (placement of shards over nodes), [`migrate`],
//! [`backup`], and [`remote`] (the operations between nodes).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use aios_core::records::Records;
//! use aios_memory::{HashEmbedder, MemoryConfig, MemoryStore, NewMemory, SearchRequest};
//! use aios_supervisor::snapshot::{SledStore, Snapshots};
//! use aios_supervisor::{Strategy, SupervisorSpec, TreeEnv, start_root};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let snapshots = Snapshots::new(Arc::new(SledStore::temporary().unwrap()));
//! let root = start_root(
//!     SupervisorSpec::new("root", Strategy::OneForOne),
//!     TreeEnv::new(Some(snapshots.clone())),
//! )
//! .await
//! .unwrap();
//! let shards = root
//!     .supervisor()
//!     .start_supervisor(SupervisorSpec::dynamic("memory"))
//!     .await
//!     .unwrap();
//! let memory = MemoryStore::open(
//!     shards,
//!     Records::new(snapshots),
//!     Arc::new(HashEmbedder::default()),
//!     MemoryConfig::default(),
//! )
//! .await
//! .unwrap();
//! memory.ensure_namespace("notes").await.unwrap();
//! let texts = ["alice prefers tea", "the deploy runs on fridays"];
//! memory
//!     .remember("notes", texts.into_iter().map(NewMemory::text).collect())
//!     .await
//!     .unwrap();
//! let found = memory
//!     .search("notes", SearchRequest::text("what does alice drink?", 1))
//!     .await
//!     .unwrap();
//! assert_eq!(found.hits[0].text, "alice prefers tea");
//! root.shutdown(Duration::from_secs(5)).await.unwrap();
//! # });
//! ```
#![warn(missing_docs)]

mod backup;
mod embed;
mod hnsw;
pub(crate) mod hosting;
mod index;
pub(crate) mod items;
#[cfg(feature = "local-embedder")]
mod local;
pub(crate) mod migrate;
pub(crate) mod namespaces;
pub(crate) mod recall;
mod redact;
pub(crate) mod remote;
pub(crate) mod routing;
mod shard;
pub(crate) mod spread;
mod types;
pub mod vector;

use std::sync::Arc;
use std::time::Duration;

use aios_supervisor::SupervisorRef;

pub use self::backup::{BackupReport, Progress, ProgressFn};
pub use self::embed::{
    EMBED_BATCH_MAX, Embedder, HASH_EMBEDDER_DIM, HashEmbedder, OpenAiEmbedder,
    OpenAiEmbedderConfig, SharedEmbedder,
};
use self::hosting::Hosting;
pub use self::index::{AnnParams, IndexKind, VectorIndex};
#[cfg(feature = "local-embedder")]
pub use self::local::{LOCAL_TOKENS_MAX, LocalEmbedder};
pub use self::migrate::Migration;
use self::namespaces::{Running, read_namespaces};
pub use self::redact::redact;
pub use self::remote::{
    FORWARDED_EXPORT_BYTES_MAX, ForwardError, MemoryAnswer, MemoryOp, RemoteMemory,
};
use self::routing::Routing;
pub use self::shard::{
    CleanupPolicy, CleanupReport, DEDUP_CHECK_MAX, MemoryItem, MetaPatch, ShardAnswer, ShardQuery,
    ShardRequest, ShardStats,
};
pub use self::types::{
    DEFAULT_SEARCH_TIMEOUT, EmbedderConfig, Hit, MemoryConfig, MemoryError, MemoryFilter,
    NamespaceInfo, NamespaceSpec, NewMemory, Query, RecallRequest, RecallWeights, Recalled,
    SearchRequest, SearchResult,
};
use aios_core::MemoryHook;
pub use aios_core::MemoryMeta;
use aios_core::records::Records;

/// Shards per namespace at most.
pub const SHARDS_MAX: u32 = 64;
/// The longest memory text, in bytes.
pub const MEMORY_TEXT_LEN_MAX: usize = 64 * 1024;
/// Items per `remember` call at most.
pub const REMEMBER_BATCH_MAX: usize = 10_000;
/// Results per query at most.
pub const K_MAX: usize = 1000;
/// Tags per item at most.
const TAGS_MAX: usize = 32;
/// Mailbox bound of a shard.
const SHARD_MAILBOX_LEN_MAX: usize = 1024;
/// How long a write may take before its caller stops waiting.
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);
pub(crate) const NS_KEY_PREFIX: &str = aios_core::keyspace::MEMORY_NAMESPACE;

/// The lease through which one node of a cluster serves namespace `name`.
fn ns_lease_key(name: &str) -> String {
    aios_core::keyspace::memory_serve_lease(name)
}

/// The memory of a node: the parts every component shares (the supervisor of its shards,
/// the store, the embedder, the configuration) and the components, each owning its state.
struct Inner {
    supervisor: SupervisorRef,
    records: Records,
    embedder: SharedEmbedder,
    config: MemoryConfig,
    /// The namespaces this node serves ([`namespaces`]).
    running: Running,
    /// The shard actors this node hosts ([`hosting`]).
    hosting: Hosting,
    /// Where namespaces are served ([`routing`]).
    routing: Routing,
}

/// The memory of a node. Cheap to clone.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("namespaces", &self.inner.running.len())
            .field("model", &self.inner.embedder.model())
            .finish()
    }
}

/// A store failure as a memory error.
pub(crate) fn store_err(e: impl std::fmt::Display) -> MemoryError {
    MemoryError::Store(e.to_string())
}

/// The supervisor child id of shard `shard` of namespace `ns`.
fn shard_child_id(ns: &str, shard: u32) -> String {
    format!("mem:{ns}:{shard}")
}

impl MemoryStore {
    /// Opens the memory: shards go under `supervisor` (a dynamic supervisor), items are kept
    /// in `records`, texts are embedded with `embedder`. Every persisted namespace's shards
    /// start (and reload their items).
    ///
    /// # Errors
    /// Store failures, or a shard that cannot start.
    pub async fn open(
        supervisor: SupervisorRef,
        records: Records,
        embedder: SharedEmbedder,
        config: MemoryConfig,
    ) -> Result<Self, MemoryError> {
        let this = Self {
            inner: Arc::new(Inner {
                supervisor,
                records,
                embedder,
                config,
                running: Running::default(),
                hosting: Hosting::default(),
                routing: Routing::default(),
            }),
        };
        let stored = if this.inner.config.start_at_open {
            read_namespaces(&this.inner.records, |_| false).await?
        } else {
            Vec::new()
        };
        for info in stored {
            match this.start(info.clone()).await {
                // Under the namespace's lease: the node serving it removes what a migration
                // left behind (another node's migration in progress is not touched).
                Ok(_) => this.delete_stale_generations(&info).await?,
                // Served by another node of the cluster: started here when asked for, once
                // that node lets it go.
                Err(MemoryError::Unavailable(why)) => {
                    tracing::info!(%why, "memory namespace not started")
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(every) = this.inner.config.cleanup_every {
            tokio::spawn(cleanup_job(Arc::downgrade(&this.inner), every));
        }
        Ok(this)
    }

    /// The embedding model of this node.
    pub fn embedder(&self) -> &SharedEmbedder {
        &self.inner.embedder
    }
}

/// Cleans every namespace every `every`, until the store is dropped.
async fn cleanup_job(inner: std::sync::Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        let store = MemoryStore { inner };
        for ns in store.namespaces() {
            if let Err(e) = store.cleanup(&ns.name, None).await {
                tracing::warn!(namespace = %ns.name, error = %e, "memory cleanup failed");
            }
        }
    }
}
