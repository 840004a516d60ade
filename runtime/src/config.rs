//! [`RuntimeConfig`]: where a node keeps its data and how it stops.

use std::path::PathBuf;
use std::time::Duration;

use aios_actors::agent::AgentSystemConfig;
use aios_actors::scheduler::config::LlmConfig;
use aios_supervisor::snapshot::{PostgresOptions, valid_node_name};
use serde::Deserialize;

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
    /// Scheduled runs: when a due time counts as missed.
    pub schedules: aios_actors::orchestration::schedule::ScheduleConfig,
    /// Where snapshots and records live: sled in the data directory (default) or PostgreSQL.
    pub store: StoreConfig,
    /// Every tenant's LLM tokens per day and cost per month, reserved before each call
    /// (default: none).
    pub tenant_llm_limits: aios_actors::scheduler::TenantLimits,
    /// Runs of one tenant active at once on this node, at most (default: only the node's
    /// bound, [`aios_actors::orchestration::RUNS_ACTIVE_MAX`]).
    pub tenant_runs_active_max: Option<usize>,
}

/// Which store backs snapshots and records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// sled in `<data_dir>/snapshots`: one process, the embedded default.
    #[default]
    Sled,
    /// A PostgreSQL database that the nodes of a cluster share, with leases that keep each
    /// persistent actor active on one node at a time.
    Postgres,
}

/// The `[store]` section: where every snapshot and record lives.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sled` (default) or `postgres`.
    pub backend: StoreBackend,
    /// PostgreSQL's URL (`postgres://user:password@host:5432/db`); required for `postgres`.
    pub url: Option<String>,
    /// The prefix of the PostgreSQL tables: `[a-z][a-z0-9_]{0,39}`.
    pub namespace: String,
    /// The most PostgreSQL connections held at once.
    pub pool_max: usize,
    /// This node's name in lease records: `[A-Za-z0-9._-]{1,64}`.
    pub node: String,
    /// How long a lease on an actor lasts without renewal: the longest a crashed node's
    /// actors wait before they can be reactivated elsewhere.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
}

impl Default for StoreConfig {
    /// sled; for PostgreSQL: namespace `aios`, 16 connections, node `aios`, 10 s leases.
    fn default() -> Self {
        let pg = PostgresOptions::new("");
        Self {
            backend: StoreBackend::Sled,
            url: None,
            namespace: pg.namespace,
            pool_max: pg.pool_max,
            node: pg.node,
            lease_ttl: pg.lease_ttl,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    /// The URL's password is not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("namespace", &self.namespace)
            .field("pool_max", &self.pool_max)
            .field("node", &self.node)
            .field("lease_ttl", &self.lease_ttl)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl StoreConfig {
    /// Checks the section.
    ///
    /// # Errors
    /// The key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match (self.backend, &self.url) {
            (StoreBackend::Postgres, None) => {
                return Err(("store.url", "is required for the postgres backend".into()));
            }
            (StoreBackend::Sled, Some(_)) => {
                return Err((
                    "store.url",
                    "is set, but store.backend is sled (set backend = \"postgres\")".into(),
                ));
            }
            _ => {}
        }
        // The node's name also names it in a cluster, whatever the store.
        let node = &self.node;
        if !valid_node_name(node) {
            return Err((
                "store.node",
                format!("{node:?} must match [A-Za-z0-9._-]{{1,64}}"),
            ));
        }
        if self.backend == StoreBackend::Postgres
            && let Err((option, problem)) = self.postgres_options().validate()
        {
            let field = match option {
                "url" => "store.url",
                "namespace" => "store.namespace",
                "pool_max" => "store.pool_max",
                "node" => "store.node",
                _ => "store.lease_ttl",
            };
            let problem = match option {
                "url" => format!(
                    "{}: {problem}",
                    redact_url(self.url.as_deref().unwrap_or(""))
                ),
                _ => problem,
            };
            return Err((field, problem));
        }
        Ok(())
    }

    /// The PostgreSQL store's options (for the `postgres` backend).
    pub fn postgres_options(&self) -> PostgresOptions {
        let mut options = PostgresOptions::new(self.url.clone().unwrap_or_default())
            .namespace(self.namespace.clone())
            .node(self.node.clone())
            .lease_ttl(self.lease_ttl);
        options.pool_max = self.pool_max;
        options
    }
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
            schedules: aios_actors::orchestration::schedule::ScheduleConfig::default(),
            store: StoreConfig::default(),
            tenant_llm_limits: aios_actors::scheduler::TenantLimits::default(),
            tenant_runs_active_max: None,
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
        if let Err((field, problem)) = self.store.validate() {
            return bad(field, problem);
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
