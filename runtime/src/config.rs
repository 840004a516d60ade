//! [`RuntimeConfig`]: where a node keeps its data and how it stops.

use std::path::PathBuf;
use std::time::Duration;

use aios_actors::agent::AgentSystemConfig;
use aios_actors::llm::config::LlmConfig;

use crate::RuntimeError;

/// Longest accepted background flush interval of buffered snapshots.
pub const BUFFERED_FLUSH_EVERY_MAX: Duration = Duration::from_secs(60);

/// How to open a node.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The data directory; the snapshot database lives in `<data_dir>/snapshots`.
    pub data_dir: PathBuf,
    /// How often buffered snapshots are flushed: their loss window on a process crash.
    /// Default 200 ms.
    pub buffered_flush_every: Duration,
    /// How long an orderly shutdown may take before the rest of the tree is killed.
    /// Default 30 s.
    pub shutdown_timeout: Duration,
    /// sled's page cache, in bytes. Default 64 MiB.
    pub cache_capacity_bytes: u64,
    /// LLM providers and models. Default: the offline `scripted/demo` model.
    pub llm: LlmConfig,
    /// Agent activation, passivation and task timeouts.
    pub agents: AgentSystemConfig,
    /// Vector memory: embedding model and namespace defaults.
    pub memory: aios_actors::memory::MemoryConfig,
    /// Built-in plugin tools and default grants.
    pub tools: aios_actors::tools::ToolsConfig,
}

impl RuntimeConfig {
    /// The defaults, with data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            buffered_flush_every: Duration::from_millis(200),
            shutdown_timeout: Duration::from_secs(30),
            cache_capacity_bytes: 64 * 1024 * 1024,
            llm: LlmConfig::default(),
            agents: AgentSystemConfig::default(),
            memory: aios_actors::memory::MemoryConfig::default(),
            tools: aios_actors::tools::ToolsConfig::default(),
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`RuntimeError::Config`] naming the field, the value and what is allowed.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad =
            |field: &'static str, problem: String| Err(RuntimeError::Config { field, problem });
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty".into());
        }
        if self.buffered_flush_every.is_zero()
            || self.buffered_flush_every > BUFFERED_FLUSH_EVERY_MAX
        {
            return bad(
                "buffered_flush_every",
                format!(
                    "{:?} is outside 1 ms..={BUFFERED_FLUSH_EVERY_MAX:?}",
                    self.buffered_flush_every
                ),
            );
        }
        if self.shutdown_timeout.is_zero() {
            return bad("shutdown_timeout", "must be greater than zero".into());
        }
        if let Err(problem) = self.llm.validate() {
            return bad("llm", problem);
        }
        if self.agents.idle_timeout.is_zero() || self.agents.task_timeout.is_zero() {
            return bad("agents", "idle_timeout and task_timeout must be > 0".into());
        }
        if self.cache_capacity_bytes < 1024 * 1024 {
            return bad(
                "cache_capacity_bytes",
                format!("{} is below the 1 MiB minimum", self.cache_capacity_bytes),
            );
        }
        Ok(())
    }
}
