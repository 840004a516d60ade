//! What every agent shares: the LLM router, the tools, the registry, the memory hook and
//! the event hub.

use std::sync::Arc;

use super::events::EventHub;
use super::registry::AgentRegistry;
use super::tools::ToolBox;
use crate::scheduler::LlmRouter;

/// The memory an agent reads while assembling its context and writes when it consolidates
/// short-term notes; [`crate::memory::MemoryStore`] implements it.
#[async_trait::async_trait]
pub trait MemoryHook: Send + Sync + 'static {
    /// Up to `k` snippets from `namespace` relevant to `query`.
    async fn retrieve(&self, namespace: &str, query: &str, k: usize) -> Vec<String>;

    /// Stores `text` in long-term memory unless the owner already has it; returns whether it
    /// was stored.
    ///
    /// # Errors
    /// Why it could not be stored.
    async fn store(
        &self,
        namespace: &str,
        text: &str,
        meta: crate::memory::MemoryMeta,
    ) -> Result<bool, String> {
        let _ = (namespace, text, meta);
        Ok(false)
    }
}

/// The services agents run on.
pub struct Kernel {
    /// LLM schedulers by model.
    pub router: LlmRouter,
    /// Tools.
    pub tools: ToolBox,
    /// Agent definitions.
    pub registry: AgentRegistry,
    /// Memory retrieval, if configured.
    pub memory: Option<Arc<dyn MemoryHook>>,
    /// Agent events.
    pub events: EventHub,
    /// How long an agent's summariser call may take before it truncates instead.
    pub summary_timeout: std::time::Duration,
}
