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
//! Store layout: namespace metadata `memns/<ns>`, items `mem/<ns>/<shard>/<id>`.

mod backup;
mod embed;
mod hnsw;
mod index;
#[cfg(feature = "local-embedder")]
mod local;
mod migrate;
mod redact;
mod remote;
mod shard;
mod spread;
pub mod vector;

use std::sync::Arc;
use std::time::Duration;

use aios_supervisor::snapshot::Durability;
use aios_supervisor::{CallError, SupervisorRef};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

pub use self::backup::{BackupReport, Progress, ProgressFn};
pub use self::embed::{
    EMBED_BATCH_MAX, Embedder, HASH_EMBEDDER_DIM, HashEmbedder, OpenAiEmbedder,
    OpenAiEmbedderConfig, SharedEmbedder,
};
pub use self::index::{AnnParams, IndexKind, VectorIndex};
#[cfg(feature = "local-embedder")]
pub use self::local::{LOCAL_TOKENS_MAX, LocalEmbedder};
pub use self::migrate::Migration;
pub use self::redact::redact;
pub use self::remote::{
    FORWARDED_EXPORT_BYTES_MAX, ForwardError, MemoryAnswer, MemoryOp, RemoteMemory,
};
use self::shard::now_ms;
pub use self::shard::{
    CleanupPolicy, CleanupReport, DEDUP_CHECK_MAX, MemoryItem, MetaPatch, ShardAnswer, ShardQuery,
    ShardRequest, ShardStats,
};
use self::spread::{ShardRef, Slot};
use self::vector::{dot, is_finite, normalize};
use crate::records::Records;
use aios_core::MemoryHook;
pub use aios_core::MemoryMeta;

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

/// Why a memory operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MemoryError {
    /// The request is invalid (names the field).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No such namespace.
    #[error("no memory namespace {0:?}")]
    NamespaceNotFound(String),
    /// The namespace exists already.
    #[error("memory namespace {0:?} exists")]
    NamespaceExists(String),
    /// A vector's dimension or model does not match the namespace's.
    #[error("{0}")]
    ModelMismatch(String),
    /// The namespace is full.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The embedding model failed.
    #[error("embedding failed: {0}")]
    Embedding(String),
    /// The store failed.
    #[error("memory store: {0}")]
    Store(String),
    /// A shard could not be reached.
    #[error("memory shard unavailable: {0}")]
    Unavailable(String),
}

/// Which memories a query, update or delete applies to. Empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryFilter {
    /// Only this agent's.
    pub agent: Option<String>,
    /// Only this session's.
    pub session: Option<String>,
    /// Only about this user.
    pub user: Option<String>,
    /// Only items carrying every one of these tags.
    pub tags: Vec<String>,
    /// Created at or after (Unix ms).
    pub since_ms: Option<u64>,
    /// Created before (Unix ms).
    pub until_ms: Option<u64>,
}

impl MemoryFilter {
    /// True when it matches everything.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// True when `meta` matches and has not expired at `now_ms`.
    pub fn matches(&self, meta: &MemoryMeta, now_ms: u64) -> bool {
        meta.expires_ms.is_none_or(|e| e > now_ms) && self.matches_ignoring_expiry(meta)
    }

    /// True when `meta` matches, expired or not.
    pub fn matches_ignoring_expiry(&self, meta: &MemoryMeta) -> bool {
        fn eq(want: &Option<String>, have: &Option<String>) -> bool {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        }
        eq(&self.agent, &meta.agent)
            && eq(&self.session, &meta.session)
            && eq(&self.user, &meta.user)
            && self.tags.iter().all(|t| meta.tags.contains(t))
            && self.since_ms.is_none_or(|s| meta.created_ms >= s)
            && self.until_ms.is_none_or(|u| meta.created_ms < u)
    }
}

/// A search result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The memory's id.
    pub id: u64,
    /// Cosine similarity to the query.
    pub similarity: f32,
    /// The ranking score (the similarity for `search`; the combined score for `recall`).
    pub score: f32,
    /// The text.
    pub text: String,
    /// Its metadata.
    pub meta: MemoryMeta,
    /// The shard that holds it.
    pub shard: u32,
}

/// The answer to a query.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// Best first.
    pub hits: Vec<Hit>,
    /// True when some shard failed or missed the deadline: the hits come from the others.
    pub partial: bool,
    /// The shards that did not answer.
    pub failed_shards: Vec<u32>,
}

/// What to search with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Query {
    /// A text, embedded with the namespace's model.
    Text(String),
    /// A vector made with `model` (refused unless it is the namespace's model).
    Vector {
        /// The model that made it.
        model: String,
        /// The vector (normalised before use).
        vector: Vec<f32>,
    },
}

/// A search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    /// What to look for.
    pub query: Query,
    /// How many results, 1..=[`K_MAX`].
    pub k: usize,
    /// Which memories qualify.
    pub filter: MemoryFilter,
    /// How long to wait for the shards.
    pub timeout: Duration,
}

impl SearchRequest {
    /// The `k` best matches of `text`, within the default deadline.
    pub fn text(text: impl Into<String>, k: usize) -> Self {
        Self {
            query: Query::Text(text.into()),
            k,
            filter: MemoryFilter::default(),
            timeout: DEFAULT_SEARCH_TIMEOUT,
        }
    }
}

/// Shards wait this long by default.
pub const DEFAULT_SEARCH_TIMEOUT: Duration = Duration::from_secs(2);

/// A memory to store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewMemory {
    /// The text.
    pub text: String,
    /// Its vector when the caller has one (made with the namespace's model); otherwise the
    /// store embeds the text.
    pub vector: Option<Vec<f32>>,
    /// Its metadata.
    pub meta: MemoryMeta,
}

impl NewMemory {
    /// A memory with just a text.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }
}

/// How to create a namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct NamespaceSpec {
    /// 1..=64 of `a-z A-Z 0-9 _ - .`.
    pub name: String,
    /// 1..=[`SHARDS_MAX`].
    pub shards: u32,
    /// Exact, HNSW, or by size.
    pub index: IndexKind,
    /// HNSW settings.
    pub ann: AnnParams,
    /// Items the namespace may hold at most.
    pub quota_items: Option<u64>,
    /// Mask secrets and personal data ([`redact`]) before storing or embedding.
    pub redact: bool,
}

impl NamespaceSpec {
    /// A namespace of `shards` shards with the default index and no quota.
    pub fn new(name: impl Into<String>, shards: u32) -> Self {
        Self {
            name: name.into(),
            shards,
            index: IndexKind::Auto,
            ann: AnnParams::default(),
            quota_items: None,
            redact: false,
        }
    }
}

/// A namespace as persisted: what it was built with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamespaceInfo {
    /// Its name.
    pub name: String,
    /// Shards.
    pub shards: u32,
    /// The embedding model its vectors come from.
    pub model: String,
    /// Their dimension.
    pub dim: u32,
    /// Index kind.
    pub index: IndexKind,
    /// HNSW settings.
    pub ann: AnnParams,
    /// Items at most.
    pub quota_items: Option<u64>,
    /// Texts are redacted before they are stored or embedded.
    pub redact: bool,
    /// Unix ms.
    pub created_ms: u64,
    /// Bumped by every migration (re-embedding, resharding); items live under
    /// `mem/<ns>/<generation>/`.
    pub generation: u32,
}

impl NamespaceInfo {
    /// The quota share of one shard (rounded up).
    pub(crate) fn quota_items_per_shard(&self) -> Option<u64> {
        self.quota_items
            .map(|q| q.div_ceil(u64::from(self.shards.max(1))))
    }
}

/// How `recall` ranks, in the manner of the "Generative Agents" memory stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecallWeights {
    /// Weight of the cosine similarity.
    pub similarity: f32,
    /// Weight of recency: `0.5^(age / half_life)`.
    pub recency: f32,
    /// Weight of importance.
    pub importance: f32,
    /// Age at which recency counts half.
    pub half_life: Duration,
    /// MMR trade-off: 1.0 ranks by score only, lower values favour diversity (measured on
    /// the texts' lexical overlap). `None` skips MMR.
    pub mmr_lambda: Option<f32>,
}

impl Default for RecallWeights {
    /// Similarity 1.0, recency 0.3 (half-life 1 day), importance 0.3, MMR 0.7.
    fn default() -> Self {
        Self {
            similarity: 1.0,
            recency: 0.3,
            importance: 0.3,
            half_life: Duration::from_secs(24 * 3600),
            mmr_lambda: Some(0.7),
        }
    }
}

/// A context-aware retrieval.
#[derive(Clone, Debug, PartialEq)]
pub struct RecallRequest {
    /// The query text.
    pub text: String,
    /// Memories to return at most.
    pub k: usize,
    /// Which memories qualify (for example the agent's current session).
    pub filter: MemoryFilter,
    /// Ranking.
    pub weights: RecallWeights,
    /// The context block holds at most this many tokens (estimated at 4 bytes per token).
    pub token_budget: usize,
}

impl RecallRequest {
    /// `k` memories for `text` with the default weights and a 1,000-token budget.
    pub fn new(text: impl Into<String>, k: usize) -> Self {
        Self {
            text: text.into(),
            k,
            filter: MemoryFilter::default(),
            weights: RecallWeights::default(),
            token_budget: 1000,
        }
    }
}

/// What `recall` returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Recalled {
    /// The memories chosen, in order.
    pub hits: Vec<Hit>,
    /// They as one block of lines for a prompt, within the token budget.
    pub block: String,
    /// As [`SearchResult::partial`].
    pub partial: bool,
}

/// Which embedding model a node uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmbedderConfig {
    /// The built-in offline [`HashEmbedder`] of this dimension.
    Hash {
        /// Dimension, 8..=4096.
        dim: usize,
    },
    /// An OpenAI-compatible `/v1/embeddings` server.
    OpenAi {
        /// Base URL.
        base_url: String,
        /// Model name.
        model: String,
        /// The dimension it returns.
        dim: usize,
        /// The environment variable holding the API key, if any.
        api_key_env: Option<String>,
    },
    /// A local BERT-family model directory (`config.json`, `model.safetensors`,
    /// `tokenizer.json`); needs the `local-embedder` feature.
    Local {
        /// The directory.
        dir: std::path::PathBuf,
        /// The model's name, recorded with namespaces.
        name: String,
    },
}

impl Default for EmbedderConfig {
    /// The built-in embedder, 384 dimensions.
    fn default() -> Self {
        Self::Hash {
            dim: HASH_EMBEDDER_DIM,
        }
    }
}

impl EmbedderConfig {
    /// Builds the embedder.
    ///
    /// # Errors
    /// A dimension out of range, a bad URL, or a missing API key variable.
    pub fn build(&self) -> Result<SharedEmbedder, String> {
        match self {
            Self::Hash { dim } => {
                if !(8..=4096).contains(dim) {
                    return Err("embedder.dim: must be 8..=4096".into());
                }
                Ok(Arc::new(HashEmbedder::new(*dim)))
            }
            Self::OpenAi {
                base_url,
                model,
                dim,
                api_key_env,
            } => {
                let api_key = match api_key_env {
                    Some(var) => Some(crate::llm::ApiKey::from_env(var).ok_or_else(|| {
                        format!("embedder.api_key_env: environment variable {var} is not set")
                    })?),
                    None => None,
                };
                Ok(Arc::new(OpenAiEmbedder::new(OpenAiEmbedderConfig {
                    name: format!("embedder {model}"),
                    base_url: base_url.clone(),
                    model: model.clone(),
                    dim: *dim,
                    api_key,
                    http: crate::llm::HttpOptions::default(),
                    retry: crate::llm::RetryPolicy::default(),
                })?))
            }
            #[cfg(feature = "local-embedder")]
            Self::Local { dir, name } => Ok(Arc::new(LocalEmbedder::load(dir, name.clone())?)),
            #[cfg(not(feature = "local-embedder"))]
            Self::Local { .. } => Err(
                "embedder: a local model needs a build with the `local-embedder` feature".into(),
            ),
        }
    }
}

/// Memory settings of a node.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryConfig {
    /// The embedding model.
    pub embedder: EmbedderConfig,
    /// Shards of a namespace the agents' hook creates on first use.
    pub shards_default: u32,
    /// Index of such namespaces.
    pub index: IndexKind,
    /// HNSW settings of such namespaces.
    pub ann: AnnParams,
    /// Redaction of such namespaces.
    pub redact: bool,
    /// How often the cleanup job runs over every namespace (expiry, duplicates, index
    /// rebuild); `None` disables it.
    pub cleanup_every: Option<Duration>,
    /// Similarity at which the cleanup job merges near-duplicates; `None` disables merging.
    pub duplicate_similarity: Option<f32>,
    /// In a cluster, whether a namespace's shards are spread over the nodes (see
    /// `spread.rs`) rather than all run on the node that serves it.
    pub spread: bool,
    /// Whether [`MemoryStore::open`] starts every stored namespace. Off in a cluster: a
    /// namespace starts when first asked for, once the node knows its peers, so its shards
    /// are spread rather than all taken by the first node up.
    pub start_at_open: bool,
}

impl Default for MemoryConfig {
    /// The built-in embedder, 2 shards, `Auto` index, no redaction, cleanup every 10
    /// minutes merging items at least 0.97 similar.
    fn default() -> Self {
        Self {
            embedder: EmbedderConfig::default(),
            shards_default: 2,
            index: IndexKind::Auto,
            ann: AnnParams::default(),
            redact: false,
            cleanup_every: Some(Duration::from_secs(600)),
            duplicate_similarity: Some(0.97),
            spread: true,
            start_at_open: true,
        }
    }
}

/// A namespace this node serves: its metadata and where each of its shards runs.
pub(crate) struct Namespace {
    info: NamespaceInfo,
    shards: Vec<Arc<ShardRef>>,
}

struct Inner {
    supervisor: SupervisorRef,
    records: Records,
    embedder: SharedEmbedder,
    config: MemoryConfig,
    namespaces: DashMap<String, Arc<Namespace>>,
    /// Serialises namespace creation and migrations.
    admin: tokio::sync::Mutex<()>,
    /// Namespaces being migrated: writes and deletes are refused meanwhile.
    migrating: dashmap::DashSet<String>,
    /// Per namespace: writers hold it shared until their shards answered; a migration holds
    /// it exclusively, so no acknowledged write lands in a generation being replaced.
    write_locks: DashMap<String, Arc<tokio::sync::RwLock<()>>>,
    /// The route to other nodes' namespaces (cluster mode only).
    remote: std::sync::OnceLock<Arc<dyn RemoteMemory>>,
    /// Namespaces another node serves: the node's name, as last found.
    served_by: DashMap<String, String>,
    /// The shard actors of this node, by namespace and shard, whichever node serves their
    /// namespace (`spread.rs`).
    hosted: DashMap<(String, u32), spread::Hosted>,
    /// Serialises starting and stopping hosted shards.
    hosting: tokio::sync::Mutex<()>,
    /// True while the node is drained: it neither serves namespaces nor hosts shards.
    draining: std::sync::atomic::AtomicBool,
}

/// The memory of a node. Cheap to clone.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("namespaces", &self.inner.namespaces.len())
            .field("model", &self.inner.embedder.model())
            .finish()
    }
}

pub(crate) fn store_err(e: impl std::fmt::Display) -> MemoryError {
    MemoryError::Store(e.to_string())
}

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
                namespaces: DashMap::new(),
                admin: tokio::sync::Mutex::new(()),
                migrating: dashmap::DashSet::new(),
                write_locks: DashMap::new(),
                remote: std::sync::OnceLock::new(),
                served_by: DashMap::new(),
                hosted: DashMap::new(),
                hosting: tokio::sync::Mutex::new(()),
                draining: std::sync::atomic::AtomicBool::new(false),
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

    async fn start(&self, info: NamespaceInfo) -> Result<Arc<Namespace>, MemoryError> {
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
                self.inner
                    .served_by
                    .insert(info.name.clone(), node.to_owned());
            }
            return Err(MemoryError::Unavailable(format!(
                "memory namespace {} is served by another node: {e}",
                info.name
            )));
        }
        self.inner.served_by.remove(&info.name);
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
    async fn start_shards(&self, info: &NamespaceInfo) -> Result<Arc<Namespace>, MemoryError> {
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
        let ns = Arc::new(Namespace {
            info: info.clone(),
            shards: slots
                .into_iter()
                .zip(0..)
                .map(|(slot, shard)| ShardRef::new(shard, slot))
                .collect(),
        });
        // Without a cluster every shard runs here: one that cannot start fails the namespace,
        // and nothing half-started stays behind to refuse the next start. In a cluster a
        // shard whose host is not known yet is placed again by the next request.
        if self.inner.remote.get().is_none()
            && let Some(why) = ns.shards.iter().find_map(|s| match s.slot() {
                Slot::Vacant { why, .. } => Some(why),
                _ => None,
            })
        {
            self.stop_shards(&ns, true).await;
            return Err(MemoryError::Unavailable(why));
        }
        self.inner.namespaces.insert(info.name, ns.clone());
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
    async fn ns_for_write(
        &self,
        name: &str,
    ) -> Result<(Arc<Namespace>, tokio::sync::OwnedRwLockReadGuard<()>), MemoryError> {
        for _ in 0..3 {
            let ns = self.ns(name).await?;
            let writing = self.write_lock(name).read_owned().await;
            if self
                .inner
                .namespaces
                .get(name)
                .is_some_and(|n| Arc::ptr_eq(&n, &ns))
            {
                return Ok((ns, writing));
            }
        }
        Err(MemoryError::Unavailable(format!(
            "memory namespace {name} changed during the request; retry"
        )))
    }

    /// The write lock of a namespace.
    pub(crate) fn write_lock(&self, namespace: &str) -> Arc<tokio::sync::RwLock<()>> {
        self.inner
            .write_locks
            .entry(namespace.to_string())
            .or_default()
            .clone()
    }

    fn writable(&self, namespace: &str) -> Result<(), MemoryError> {
        if self.inner.migrating.contains(namespace) {
            return Err(MemoryError::Unavailable(format!(
                "namespace {namespace} is being migrated; retry when it is done"
            )));
        }
        Ok(())
    }

    /// Refuses to write a namespace whose lease this node has lost (paused or cut off from
    /// the shared store past it, in a cluster): it stops serving it (and stops the shards it
    /// hosts whose leases it lost too), and the next call finds the node that serves it now. A map lookup (the lease's local deadline), so
    /// the node stops before the database would refuse it.
    async fn check_serving(&self, ns: &Arc<Namespace>) -> Result<(), MemoryError> {
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
        let current = self
            .inner
            .namespaces
            .get(name)
            .is_some_and(|n| Arc::ptr_eq(&n, ns));
        if current && !self.inner.migrating.contains(name) {
            tracing::warn!(namespace = %name, error = %e, "memory namespace no longer served here");
            self.stop_shards(ns, false).await;
            self.inner
                .namespaces
                .remove_if(name, |_, n| Arc::ptr_eq(n, ns));
        }
        Err(MemoryError::Unavailable(format!(
            "this node no longer serves memory namespace {}: {e}",
            ns.info.name
        )))
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

    /// Creates a namespace exactly as described (model and dimension included); used by
    /// `create_namespace` and by restore.
    pub(crate) async fn create_from_info(&self, info: NamespaceInfo) -> Result<(), MemoryError> {
        let _admin = self.inner.admin.lock().await;
        let key = format!("{NS_KEY_PREFIX}{}", info.name);
        if self.inner.namespaces.contains_key(&info.name)
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
        self.inner.namespaces.get(name).map(|n| n.info.clone())
    }

    /// Every namespace.
    pub fn namespaces(&self) -> Vec<NamespaceInfo> {
        let mut v: Vec<NamespaceInfo> = self
            .inner
            .namespaces
            .iter()
            .map(|n| n.info.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Every namespace of the store, also those served by another node of a cluster (read
    /// from the store; at most 100,000).
    ///
    /// # Errors
    /// Store failures.
    pub async fn namespaces_stored(&self) -> Result<Vec<NamespaceInfo>, MemoryError> {
        let mut all = self.namespaces();
        let running = &self.inner.namespaces;
        all.extend(read_namespaces(&self.inner.records, |name| running.contains_key(name)).await?);
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The running namespace `name`. One that exists in the store but runs nowhere here (it
    /// was created on another node of a cluster, or another node held it when this one
    /// started) is started now, if no other node serves it.
    async fn ns(&self, name: &str) -> Result<Arc<Namespace>, MemoryError> {
        if let Some(n) = self.inner.namespaces.get(name) {
            return Ok(n.clone());
        }
        let _admin = self.inner.admin.lock().await;
        if let Some(n) = self.inner.namespaces.get(name) {
            return Ok(n.clone());
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

    /// Checks that this node's embedder made (or can make) the namespace's vectors.
    fn check_model(&self, info: &NamespaceInfo) -> Result<(), MemoryError> {
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

    /// [`MemoryStore::remember`] as the node serving the namespace (its shards wherever they run).
    async fn remember_here(
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
    async fn search_here(
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

    /// Context-aware retrieval: candidates by similarity, re-ranked by similarity, recency and
    /// importance, diversified by MMR, and assembled into a block within the token budget.
    ///
    /// # Errors
    /// As [`MemoryStore::search`].
    pub async fn recall(
        &self,
        namespace: &str,
        request: RecallRequest,
    ) -> Result<Recalled, MemoryError> {
        self.recall_with(namespace, request, true).await
    }

    /// [`MemoryStore::recall`], its search on the serving node (`routed`) or on this node's
    /// shards only.
    async fn recall_with(
        &self,
        namespace: &str,
        request: RecallRequest,
        routed: bool,
    ) -> Result<Recalled, MemoryError> {
        let k = request.k.clamp(1, K_MAX);
        let search = SearchRequest {
            query: Query::Text(request.text),
            k: (k * 4).clamp(20, K_MAX),
            filter: request.filter,
            timeout: DEFAULT_SEARCH_TIMEOUT,
        };
        let found = if routed {
            self.search(namespace, search).await?
        } else {
            self.search_here(namespace, search).await?
        };
        let w = request.weights;
        let now = now_ms();
        let half_life_ms = w.half_life.as_millis().max(1) as f64;
        let mut candidates: Vec<Hit> = found
            .hits
            .into_iter()
            .map(|mut h| {
                let age = now.saturating_sub(h.meta.created_ms) as f64;
                let recency = 0.5f64.powf(age / half_life_ms) as f32;
                h.score = w.similarity * h.similarity
                    + w.recency * recency
                    + w.importance * h.meta.importance;
                h
            })
            .collect();
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        let chosen = match w.mmr_lambda {
            Some(lambda) => mmr(candidates, k, lambda),
            None => {
                candidates.truncate(k);
                candidates
            }
        };
        let budget_bytes = request.token_budget.saturating_mul(4);
        let mut block = String::new();
        let mut hits = Vec::new();
        for h in chosen {
            let line = format!("- {}\n", h.text.replace('\n', " "));
            if block.len() + line.len() > budget_bytes {
                break;
            }
            block.push_str(&line);
            hits.push(h);
        }
        Ok(Recalled {
            hits,
            block,
            partial: found.partial,
        })
    }

    /// [`MemoryStore::forget`] as the node serving the namespace (its shards wherever they run).
    async fn forget_here(
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
    async fn get_here(&self, namespace: &str, ids: &[u64]) -> Result<Vec<Hit>, MemoryError> {
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

/// The namespaces recorded in the store (at most 100,000), but those `skip` names.
async fn read_namespaces(
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

fn unavailable(shard: usize, e: &CallError) -> MemoryError {
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

/// Maximal marginal relevance over `candidates` (best first): each pick maximises
/// `lambda * score - (1 - lambda) * max similarity to what was picked`, the similarity taken
/// between the texts' lexical embeddings.
fn mmr(candidates: Vec<Hit>, k: usize, lambda: f32) -> Vec<Hit> {
    let lexical = HashEmbedder::new(256);
    let vectors: Vec<Vec<f32>> = candidates
        .iter()
        .map(|h| lexical.embed_one(&h.text))
        .collect();
    let mut left: Vec<usize> = (0..candidates.len()).collect();
    let mut picked: Vec<usize> = Vec::new();
    while picked.len() < k && !left.is_empty() {
        let (best_pos, _) = left
            .iter()
            .enumerate()
            .map(|(pos, &i)| {
                let redundancy = picked
                    .iter()
                    .map(|&j| dot(&vectors[i], &vectors[j]))
                    .fold(0.0f32, f32::max);
                (
                    pos,
                    lambda * candidates[i].score - (1.0 - lambda) * redundancy,
                )
            })
            .fold((0, f32::MIN), |best, c| if c.1 > best.1 { c } else { best });
        picked.push(left.remove(best_pos));
    }
    let mut slots: Vec<Option<Hit>> = candidates.into_iter().map(Some).collect();
    picked.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: u64, text: &str, score: f32) -> Hit {
        Hit {
            id,
            similarity: score,
            score,
            text: text.into(),
            meta: MemoryMeta::default(),
            shard: 0,
        }
    }

    #[test]
    fn mmr_prefers_a_different_second_item() {
        let c = vec![
            hit(1, "the deploy failed on friday", 0.9),
            hit(2, "the deploy failed on friday night", 0.89),
            hit(3, "lunch is at noon", 0.6),
        ];
        let picked: Vec<u64> = mmr(c.clone(), 2, 0.5).iter().map(|h| h.id).collect();
        assert_eq!(picked, vec![1, 3]);
        let picked: Vec<u64> = mmr(c, 2, 1.0).iter().map(|h| h.id).collect();
        assert_eq!(picked, vec![1, 2]);
    }

    #[test]
    fn filters_match_fields_tags_times_and_expiry() {
        let meta = MemoryMeta {
            agent: Some("a".into()),
            tags: vec!["x".into(), "y".into()],
            created_ms: 100,
            expires_ms: Some(200),
            ..MemoryMeta::default()
        };
        let f = MemoryFilter {
            agent: Some("a".into()),
            tags: vec!["x".into()],
            since_ms: Some(100),
            until_ms: Some(101),
            ..MemoryFilter::default()
        };
        assert!(f.matches(&meta, 150));
        assert!(!f.matches(&meta, 200), "expired");
        assert!(f.matches_ignoring_expiry(&meta));
        let other = MemoryFilter {
            agent: Some("b".into()),
            ..MemoryFilter::default()
        };
        assert!(!other.matches(&meta, 0));
        assert!(MemoryFilter::default().is_empty());
    }
}
