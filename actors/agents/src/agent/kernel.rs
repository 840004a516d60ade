//! What every agent shares: the LLM router, the tools, the registry, the memory hook and
//! the event hub.

use std::sync::Arc;

use super::events::EventHub;
use super::registry::AgentRegistry;
use super::tools::ToolBox;
use aios_core::MemoryHook;
use aios_llm::scheduler::LlmRouter;

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
    /// Agent names are `<tenant>.<name>`: an agent acts as its own tenant, whatever a task
    /// says (see `AgentSystemConfig::tenant_scoped_names`).
    pub tenant_scoped_names: bool,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("router", &self.router)
            .field("memory", &self.memory.is_some())
            .field("summary_timeout", &self.summary_timeout)
            .field("tenant_scoped_names", &self.tenant_scoped_names)
            .finish_non_exhaustive()
    }
}
