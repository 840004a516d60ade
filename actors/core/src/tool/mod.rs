//! The one interface through which agents run tools: [`Tool`], its [`ToolContext`] and
//! [`ToolError`], the [`ToolSpec`] offered to the model, the argument [`Schema`] checked before
//! a call, and [`ToolSource`], through which an agent's toolbox finds tools installed at run
//! time (plugins, MCP servers) without knowing the tool service.

pub mod requirement;
pub mod schema;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use self::requirement::ToolRequirement;
pub use self::schema::{Schema, Violation, Violations};
use crate::capability::Capability;
use crate::id::AgentId;

/// How long one tool call may take.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest tool output handed back to the model, in bytes (longer output is cut).
pub const TOOL_OUTPUT_LEN_MAX: usize = 64 * 1024;

/// A tool the model may call: name, description and a JSON Schema of its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The name the model uses to call it.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// The JSON Schema of its arguments (an object schema).
    pub parameters: serde_json::Value,
}

/// Why a tool call failed. The message goes back to the model as the tool's result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The arguments do not fit the tool's schema.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The tool ran and failed.
    #[error("tool failed: {0}")]
    Failed(String),
    /// The tool took longer than [`TOOL_TIMEOUT`].
    #[error("tool timed out after {0:?}")]
    Timeout(Duration),
    /// The agent may not call this tool, or it does not exist.
    #[error("tool {0:?} is not available to this agent")]
    NotAvailable(String),
    /// The process or connection behind the tool went away during the call (its supervisor
    /// restarts it).
    #[error("tool crashed: {0}")]
    Crashed(String),
}

impl From<String> for ToolError {
    fn from(message: String) -> Self {
        Self::Failed(message)
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        Self::Failed(message.to_string())
    }
}

/// A tool: the one interface for the built-in tools, plugin tools (hosted by the tool service
/// under a manifest), MCP servers' tools and agent delegation alike.
#[async_trait::async_trait]
pub trait Tool: Send + Sync + 'static {
    /// Name, description and argument schema, as offered to the model.
    fn spec(&self) -> ToolSpec;

    /// What it can do, for capability discovery.
    fn capabilities(&self) -> Vec<Capability> {
        Vec::new()
    }

    /// True when a person must approve each call (orchestration pauses for it).
    fn requires_approval(&self) -> bool {
        false
    }

    /// Runs the tool. A string result goes to the model as it is; any other JSON value as its
    /// JSON text.
    ///
    /// # Errors
    /// [`ToolError`]; its text is returned to the model.
    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<Value, ToolError>;
}

/// Who is calling a tool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolContext {
    /// The calling agent instance.
    pub agent: Option<AgentId>,
    /// Agents that delegated down to the caller, outermost first (the caller included), so
    /// delegation can refuse cycles.
    pub chain: Vec<AgentId>,
    /// The tenant.
    pub tenant: String,
    /// The calling agent's role.
    pub role: String,
    /// The session, if any.
    pub session: Option<String>,
    /// The run, if any.
    pub run: Option<String>,
}

/// Tools installed at run time (versioned plugin tools, MCP servers' tools), found by
/// requirement. The tool service implements it; an agent's toolbox asks it for what its own
/// table lacks, so agents never name the service.
pub trait ToolSource: Send + Sync + 'static {
    /// The tool that satisfies `requirement` now (newest or pinned version), if any.
    fn resolve(&self, requirement: ToolRequirement) -> Option<Arc<dyn Tool>>;
}
