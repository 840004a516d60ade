//! The tool plugin layer: manifests (versions, schemas, permissions, dependencies,
//! examples), JSON Schema validation of arguments and results, and the versioned registry.
//! Tool actors, built-in plugin tools, MCP servers, access control and analytics build on
//! these (the tools issue, in progress).

pub mod builtin;
mod manifest;
mod registry;
mod schema;
mod service;

pub use self::manifest::{
    Example, ManifestError, Permissions, TOOL_CONCURRENCY_MAX, TOOL_TIMEOUT_MAX, ToolManifest,
};
pub use self::registry::{TOOL_VERSIONS_MAX, ToolRegistry, ToolRegistryError, ToolRequirement};
pub use self::schema::{Schema, Violation, Violations};
pub use self::service::{
    CallContext, DENIALS_MAX, Denial, ExampleOutcome, Grant, TOOL_CACHE_ENTRIES_MAX,
    TOOL_CACHE_TTL, ToolCallError, ToolImpl, ToolService, ToolUsage,
};
