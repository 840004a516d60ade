//! The memory's vocabulary: its errors, requests, results, namespace descriptions and
//! configuration.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(feature = "local-embedder")]
use super::LocalEmbedder;
use super::{
    AnnParams, HASH_EMBEDDER_DIM, HashEmbedder, IndexKind, MemoryMeta, OpenAiEmbedder,
    OpenAiEmbedderConfig, SharedEmbedder,
};

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
                    Some(var) => Some(aios_llm::ApiKey::from_env(var).ok_or_else(|| {
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
                    http: aios_llm::HttpOptions::default(),
                    retry: aios_llm::RetryPolicy::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
