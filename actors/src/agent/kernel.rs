//! What every agent shares: the LLM router, the tools, the registry, the memory hook and
//! the event hub.

use std::sync::Arc;

use super::events::EventHub;
use super::registry::AgentRegistry;
use super::tools::ToolBox;
use crate::scheduler::LlmRouter;

/// The memory-retrieval hook an agent calls while assembling its context. The memory issue
/// provides the vector-memory implementation.
#[async_trait::async_trait]
pub trait MemoryHook: Send + Sync + 'static {
    /// Up to `k` snippets from `namespace` relevant to `query`.
    async fn retrieve(&self, namespace: &str, query: &str, k: usize) -> Vec<String>;
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
}
