//! What agents need from long-term memory: [`MemoryHook`], and the [`MemoryMeta`] they attach
//! to what they store. The memory subsystem implements the hook; agents know only the trait.

use serde::{Deserialize, Serialize};

/// Who wrote a memory, when, and how much it matters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryMeta {
    /// The agent it belongs to.
    pub agent: Option<String>,
    /// The session it came from.
    pub session: Option<String>,
    /// The user it is about.
    pub user: Option<String>,
    /// Free tags.
    pub tags: Vec<String>,
    /// When it was stored, Unix ms (set by `remember` when 0).
    pub created_ms: u64,
    /// 0.0..=1.0; weighs in context-aware retrieval.
    pub importance: f32,
    /// After this Unix ms it is no longer returned, and cleanup deletes it.
    pub expires_ms: Option<u64>,
}

/// The memory an agent reads while assembling its context and writes when it consolidates
/// short-term notes; the memory subsystem's store implements it.
#[async_trait::async_trait]
pub trait MemoryHook: Send + Sync + 'static {
    /// Up to `k` snippets from `namespace` relevant to `query`.
    async fn retrieve(&self, namespace: &str, query: &str, k: usize) -> Vec<String>;

    /// Stores `text` in long-term memory unless the owner already has it; returns whether it
    /// was stored.
    ///
    /// # Errors
    /// Why it could not be stored.
    async fn store(&self, namespace: &str, text: &str, meta: MemoryMeta) -> Result<bool, String> {
        let _ = (namespace, text, meta);
        Ok(false)
    }
}
