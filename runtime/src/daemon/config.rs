//! `aiosd` configuration: a TOML file (`--config PATH`), then environment overrides
//! (`AIOS_*`), then the flags `--data-dir` and `--listen`. Unknown keys are refused, and every
//! problem names its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aios_actors::scheduler::config::LlmConfig;
use serde::Deserialize;

/// Largest request body accepted, at most (the configured limit must stay below).
pub const BODY_LIMIT_MAX: usize = 64 * 1024 * 1024;

/// A configuration problem, with the key it is about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {key}: {problem}")]
pub struct ConfigError {
    /// The key (`limits.requests_per_s`), or the file for syntax errors.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

fn bad<T>(key: &str, problem: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        key: key.into(),
        problem: problem.into(),
    })
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Per-key request rate limits (GCRA).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second per key.
    pub requests_per_s: u32,
    /// Requests a key may send at once above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    /// 50 requests/s with bursts of 100.
    fn default() -> Self {
        Self {
            requests_per_s: 50,
            burst: 100,
        }
    }
}

/// Per-tenant quotas (0 = unlimited). Counters persist across restarts.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Authenticated API requests per tenant per UTC day.
    pub requests_per_day: u64,
    /// LLM tokens (input + output) per tenant per UTC day, checked before agent work starts.
    pub llm_tokens_per_day: u64,
    /// LLM cost in USD per tenant per calendar month (UTC), checked before agent work starts.
    pub cost_usd_per_month: f64,
}

/// Agent settings of the daemon.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsSection {
    /// An idle agent is passivated after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The longest a task may run.
    #[serde(with = "humantime_serde")]
    pub task_timeout: Duration,
}

impl Default for AgentsSection {
    fn default() -> Self {
        let d = aios_actors::agent::AgentSystemConfig::default();
        Self {
            idle_timeout: d.idle_timeout,
            task_timeout: d.task_timeout,
        }
    }
}

/// Scheduled runs (`[schedules]`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulesSection {
    /// A due time further in the past than this when the scheduler gets to it (the daemon
    /// was down) is missed, and the schedule's `on_missed` policy applies (default 60 s).
    #[serde(with = "humantime_serde")]
    pub missed_after: Duration,
}

impl Default for SchedulesSection {
    fn default() -> Self {
        Self {
            missed_after: aios_actors::orchestration::schedule::ScheduleConfig::default()
                .missed_after,
        }
    }
}

/// The built-in tools every tenant's agents may call without a grant.
pub const TENANT_TOOLS_DEFAULT: [&str; 4] = ["files", "memory_save", "memory_search", "web_fetch"];

/// `[tenants]`: what every tenant gets without a grant.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantsSection {
    /// Tools every tenant's agents may call (each still lists its tools in its definition).
    /// The operator tenant may call every tool; other tools reach a tenant through a grant
    /// (`POST /v1/tools/grants`).
    pub tools: Vec<String>,
    /// Agent definitions per tenant, at most.
    pub agents_max: usize,
    /// Memory namespaces per tenant (made through the API or by `memory_save`), at most.
    pub namespaces_max: usize,
    /// API keys per tenant, at most (revoked ones count until removed).
    pub keys_max: usize,
    /// Webhook subscriptions per tenant, at most.
    pub webhooks_max: usize,
    /// Schedules per tenant, at most.
    pub schedules_max: usize,
    /// Runs of a tenant active at once on a node (scheduled ones too), at most.
    pub runs_active_max: usize,
    /// `Idempotency-Key` responses kept per tenant on a node, at most (each for 24 h).
    pub idempotency_records_max: usize,
    /// Event streams (SSE and WebSocket) a tenant has open at once on a node, at most: each
    /// holds a connection.
    pub streams_max: usize,
}

impl Default for TenantsSection {
    /// The built-in tools: `files` (a sandbox per tenant, agent and instance), `memory_save`,
    /// `memory_search` (the tenant's namespaces), `web_fetch` (the configured hosts); per
    /// tenant at most 1,000 agents, 100 namespaces, 100 keys, 50 webhooks, 200 schedules,
    /// 100 active runs, 10,000 idempotency records and 100 open streams (each below the
    /// node's own bound).
    fn default() -> Self {
        Self {
            tools: TENANT_TOOLS_DEFAULT
                .iter()
                .map(|t| (*t).to_string())
                .collect(),
            agents_max: 1_000,
            namespaces_max: 100,
            keys_max: 100,
            webhooks_max: 50,
            schedules_max: 200,
            runs_active_max: 100,
            idempotency_records_max: 10_000,
            streams_max: 100,
        }
    }
}

/// `[outbound]`: where destinations that tenants name may lead.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundSection {
    /// Networks (`10.1.0.0/16`) or addresses that tenants' webhooks and `web_fetch` through
    /// a wildcard host may reach although they are loopback, private, link-local, … (empty:
    /// none). Destinations the operator configures are trusted without it.
    pub allow: Vec<String>,
}

/// Everything `aiosd` reads.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// The data directory (sled snapshots, sandbox).
    pub data_dir: PathBuf,
    /// Serve `/metrics` (and the health probes) on this address instead of `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// Require a key (any role) for `/metrics`.
    pub metrics_require_key: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// The largest request body, in bytes.
    pub body_limit_bytes: usize,
    /// How long in-flight requests may take to finish on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_drain: Duration,
    /// Serve every request as the operator tenant's admin, with no key check, rate limit or
    /// audit: for benchmarks and local experiments only; refused unless `listen` is a
    /// loopback address.
    pub insecure_no_auth: bool,
    /// Per-key rate limits.
    pub rate_limit: RateLimitConfig,
    /// Failed-authentication limits per client address, and trusted proxies.
    pub auth: super::failed_auth::AuthSection,
    /// Per-tenant quotas.
    pub quotas: QuotaConfig,
    /// Webhook delivery policy.
    pub webhooks: super::webhooks::WebhookConfig,
    /// LLM providers and models (default: the offline `scripted/demo`).
    pub llm: LlmConfig,
    /// Agents.
    pub agents: AgentsSection,
    /// Tools. In the daemon, `grant_all` unset grants per tenant (the operator tenant every
    /// tool, the others `[tenants] tools` and their grants); `true` grants every tool to
    /// every tenant; `false` gives other tenants their explicit grants only.
    pub tools: aios_actors::tools::ToolsConfig,
    /// What every tenant gets.
    pub tenants: TenantsSection,
    /// The outbound-request guard's allow-list.
    pub outbound: OutboundSection,
    /// Limits of the API server (header and idle timeout, connections).
    pub http: super::server::HttpSection,
    /// Scheduled runs.
    pub schedules: SchedulesSection,
    /// Retention of history.
    pub retention: super::retention::RetentionConfig,
    /// Serve the web interface at `/` (its assets are in the binary).
    pub ui: bool,
    /// Where snapshots and records live (default: sled in `data_dir`).
    pub store: crate::StoreConfig,
    /// Cluster membership (off unless `cluster.listen` is set).
    pub cluster: crate::cluster::ClusterConfig,
}

impl Default for DaemonConfig {
    /// 127.0.0.1:7600, `./aios-data`, text logs, 1 MiB bodies, 10 s drain.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7600)),
            data_dir: PathBuf::from("./aios-data"),
            metrics_listen: None,
            metrics_require_key: false,
            log_format: LogFormat::Text,
            body_limit_bytes: 1024 * 1024,
            shutdown_drain: Duration::from_secs(10),
            insecure_no_auth: false,
            rate_limit: RateLimitConfig::default(),
            auth: super::failed_auth::AuthSection::default(),
            quotas: QuotaConfig::default(),
            webhooks: super::webhooks::WebhookConfig::default(),
            llm: LlmConfig::default(),
            agents: AgentsSection::default(),
            tools: aios_actors::tools::ToolsConfig::default(),
            tenants: TenantsSection::default(),
            outbound: OutboundSection::default(),
            http: super::server::HttpSection::default(),
            schedules: SchedulesSection::default(),
            retention: super::retention::RetentionConfig::default(),
            ui: true,
            store: crate::StoreConfig::default(),
            cluster: crate::cluster::ClusterConfig::default(),
        }
    }
}

impl DaemonConfig {
    /// Parses TOML text (`origin` names it in errors) and validates it.
    ///
    /// # Errors
    /// A syntax error or an unknown key (with its position), or the first invalid value.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError {
            key: origin.to_string(),
            problem: e.to_string().trim().to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the file, if any, then applies `env` overrides (`AIOS_LISTEN`, `AIOS_DATA_DIR`,
    /// `AIOS_METRICS_LISTEN`, `AIOS_LOG_FORMAT`, `AIOS_BODY_LIMIT_BYTES`, and for the store
    /// `AIOS_STORE_URL`, which also selects the `postgres` backend, and `AIOS_NODE`), then the
    /// flags, and validates the result.
    ///
    /// # Errors
    /// An unreadable file, or as [`DaemonConfig::from_toml`] and [`DaemonConfig::validate`].
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        data_dir: Option<PathBuf>,
        listen: Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    key: path.display().to_string(),
                    problem: format!("cannot read: {e}"),
                })?;
                let origin = path.display().to_string();
                toml::from_str::<Self>(&text).map_err(|e| ConfigError {
                    key: origin,
                    problem: e.to_string().trim().to_string(),
                })?
            }
            None => Self::default(),
        };
        if let Some(v) = env("AIOS_LISTEN") {
            config.listen = parse_addr("AIOS_LISTEN", &v)?;
        }
        if let Some(v) = env("AIOS_DATA_DIR") {
            config.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("AIOS_METRICS_LISTEN") {
            config.metrics_listen = Some(parse_addr("AIOS_METRICS_LISTEN", &v)?);
        }
        if let Some(v) = env("AIOS_LOG_FORMAT") {
            config.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => return bad("AIOS_LOG_FORMAT", format!("{other:?} is not text or json")),
            };
        }
        if let Some(v) = env("AIOS_BODY_LIMIT_BYTES") {
            config.body_limit_bytes = v.parse().map_err(|_| ConfigError {
                key: "AIOS_BODY_LIMIT_BYTES".into(),
                problem: format!("{v:?} is not a number of bytes"),
            })?;
        }
        if let Some(url) = env("AIOS_STORE_URL") {
            config.store.backend = crate::StoreBackend::Postgres;
            config.store.url = Some(url);
        }
        if let Some(node) = env("AIOS_NODE") {
            config.store.node = node;
        }
        if let Some(v) = env("AIOS_CLUSTER_LISTEN") {
            config.cluster.listen = Some(parse_addr("AIOS_CLUSTER_LISTEN", &v)?);
        }
        if let Some(v) = env("AIOS_CLUSTER_ADVERTISE") {
            config.cluster.advertise = Some(v);
        }
        if let Some(v) = env("AIOS_CLUSTER_SEEDS") {
            config.cluster.seeds = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = env("AIOS_CLUSTER_TAGS") {
            config.cluster.tags = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = env("AIOS_CLUSTER_TLS_CERT") {
            config.cluster.tls_cert = Some(v.into());
        }
        if let Some(v) = env("AIOS_CLUSTER_TLS_KEY") {
            config.cluster.tls_key = Some(v.into());
        }
        if let Some(v) = env("AIOS_CLUSTER_TLS_CA") {
            config.cluster.tls_ca = Some(v.into());
        }
        if let Some(v) = env("AIOS_CLUSTER_SECRET") {
            config.cluster.secret = Some(v);
        }
        if let Some(dir) = data_dir {
            config.data_dir = dir;
        }
        if let Some(addr) = listen {
            config.listen = parse_addr("--listen", &addr)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every value.
    ///
    /// # Errors
    /// The first invalid value, with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty");
        }
        if !(1024..=BODY_LIMIT_MAX).contains(&self.body_limit_bytes) {
            return bad(
                "body_limit_bytes",
                format!(
                    "{} is outside 1024..={BODY_LIMIT_MAX}",
                    self.body_limit_bytes
                ),
            );
        }
        if self.shutdown_drain.is_zero() || self.shutdown_drain > Duration::from_secs(600) {
            return bad("shutdown_drain", "must be between 1 ms and 10 min");
        }
        if self.insecure_no_auth && !self.listen.ip().is_loopback() {
            return bad(
                "insecure_no_auth",
                format!("only allowed on a loopback address, not {}", self.listen),
            );
        }
        if self.webhooks.attempts_max == 0 || self.webhooks.attempts_max > 100 {
            return bad("webhooks.attempts_max", "must be 1..=100");
        }
        if self.webhooks.backoff_initial.is_zero()
            || self.webhooks.backoff_initial > self.webhooks.backoff_max
        {
            return bad(
                "webhooks.backoff_initial",
                "must be positive and at most webhooks.backoff_max",
            );
        }
        if !(self.quotas.cost_usd_per_month.is_finite() && self.quotas.cost_usd_per_month >= 0.0) {
            return bad(
                "quotas.cost_usd_per_month",
                "must be a number ≥ 0 (0: unlimited)",
            );
        }
        if self.rate_limit.requests_per_s == 0 {
            return bad("rate_limit.requests_per_s", "must be at least 1");
        }
        if self.rate_limit.burst == 0 {
            return bad("rate_limit.burst", "must be at least 1");
        }
        if let Err((key, problem)) = self.auth.validate() {
            return bad(key, problem);
        }
        if Some(self.listen) == self.metrics_listen {
            return bad("metrics_listen", "must differ from listen");
        }
        if let Err(e) = self.llm.validate() {
            return bad("llm", e);
        }
        if self.agents.idle_timeout.is_zero() {
            return bad("agents.idle_timeout", "must be greater than zero");
        }
        if let Err(problem) = self.retention.validate() {
            let (key, problem) = problem.split_once(": ").unwrap_or(("retention", &problem));
            return bad(key, problem);
        }
        if self.schedules.missed_after.is_zero() {
            return bad("schedules.missed_after", "must be greater than zero");
        }
        if self.agents.task_timeout.is_zero() {
            return bad("agents.task_timeout", "must be greater than zero");
        }
        if let Err((key, problem)) = self.store.validate() {
            return bad(key, problem);
        }
        if let Err((key, problem)) = self.cluster.validate() {
            return bad(key, problem);
        }
        if self.cluster.listen == Some(self.listen) {
            return bad("cluster.listen", "must differ from listen");
        }
        if let Err((key, problem)) = self.http.validate() {
            return bad(key, problem);
        }
        if let Err(e) = aios_actors::outbound::OutboundGuard::parse_allow(&self.outbound.allow) {
            return bad("outbound.allow", e);
        }
        if let Err(e) =
            aios_actors::outbound::OutboundGuard::parse_allow(&self.tools.outbound_allow)
        {
            return bad("tools.outbound_allow", e);
        }
        for (key, value) in [
            ("tenants.agents_max", self.tenants.agents_max),
            ("tenants.namespaces_max", self.tenants.namespaces_max),
            ("tenants.keys_max", self.tenants.keys_max),
            ("tenants.webhooks_max", self.tenants.webhooks_max),
            ("tenants.schedules_max", self.tenants.schedules_max),
            ("tenants.runs_active_max", self.tenants.runs_active_max),
            (
                "tenants.idempotency_records_max",
                self.tenants.idempotency_records_max,
            ),
            ("tenants.streams_max", self.tenants.streams_max),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1");
            }
        }
        for tool in &self.tenants.tools {
            if tool != "*"
                && let Err(e) = aios_core::name::validate_tool_name(tool)
            {
                return bad("tenants.tools", e);
            }
        }
        for (i, server) in self.tools.mcp_servers.iter().enumerate() {
            if let Err(e) = server.validate() {
                return bad(&format!("tools.mcp_servers[{i}]"), e);
            }
        }
        Ok(())
    }

    /// The node's grants for tenants, in force before anything runs: the operator tenant may
    /// call every tool; every tenant the tools of `[tenants] tools` (unless `tools.grant_all`
    /// is set: `true` grants every tool to everyone anyway, `false` leaves tenants their
    /// explicit grants only). Other tools reach a tenant through persisted grants
    /// (`/v1/tools/grants`).
    pub fn tenant_grants(&self) -> Vec<aios_actors::tools::Grant> {
        use aios_actors::tools::Grant;
        if self.tools.grant_all == Some(true) {
            return Vec::new();
        }
        let mut grants = vec![Grant {
            tenant: Some(super::keys::OPERATOR_TENANT.into()),
            tools: vec!["*".into()],
            ..Grant::default()
        }];
        if self.tools.grant_all.is_none() && !self.tenants.tools.is_empty() {
            grants.push(Grant {
                tools: self.tenants.tools.clone(),
                ..Grant::default()
            });
        }
        grants
    }

    /// The node configuration this daemon runs.
    pub fn runtime_config(&self) -> crate::RuntimeConfig {
        let mut rc = crate::RuntimeConfig::new(&self.data_dir);
        rc.llm = self.llm.clone();
        rc.agents.idle_timeout = self.agents.idle_timeout;
        rc.agents.task_timeout = self.agents.task_timeout;
        // The API scopes agent names by tenant (`<tenant>.<name>`); runs negotiate within it.
        rc.agents.tenant_scoped_names = true;
        rc.tools = self.tools.clone();
        // Per tenant unless the operator says every tenant: the daemon adds the grants when
        // it starts (`Daemon::start`).
        rc.tools.grant_all = Some(self.tools.grant_all == Some(true));
        rc.tools.node_grants = self.tenant_grants();
        rc.tools.tenant_namespaces_max = Some(self.tenants.namespaces_max);
        rc.tenant_runs_active_max = Some(self.tenants.runs_active_max);
        rc.tools
            .outbound_allow
            .extend(self.outbound.allow.iter().cloned());
        rc.schedules.missed_after = self.schedules.missed_after;
        rc.tenant_llm_limits = aios_actors::scheduler::TenantLimits {
            tokens_per_day: self.quotas.llm_tokens_per_day,
            cost_nanos_per_month: (self.quotas.cost_usd_per_month * 1e9) as u64,
        };
        rc.store = self.store.clone();
        // In a cluster a namespace starts when first asked for, once the peers are known, so
        // its shards are spread (see `MemoryConfig::start_at_open`).
        rc.memory.start_at_open = !self.cluster.enabled();
        rc
    }
}

fn parse_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| ConfigError {
        key: key.into(),
        problem: format!("{v:?} is not an address like 127.0.0.1:7600"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_listen_on_loopback() {
        let c = DaemonConfig::load(None, |_| None, None, None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7600");
    }

    #[test]
    fn errors_name_the_key() {
        let e =
            DaemonConfig::from_toml("[rate_limit]\nrequests_per_s = 0\n", "f.toml").unwrap_err();
        assert_eq!(e.key, "rate_limit.requests_per_s");
        let e = DaemonConfig::from_toml("listen = \"nowhere\"\n", "f.toml").unwrap_err();
        assert_eq!(e.key, "f.toml");
        assert!(e.problem.contains("listen"), "{e}");
        let e = DaemonConfig::from_toml("bogus = 1\n", "f.toml").unwrap_err();
        assert!(e.problem.contains("bogus"), "{e}");
        let e = DaemonConfig::from_toml("body_limit_bytes = 10\n", "f.toml").unwrap_err();
        assert_eq!(e.key, "body_limit_bytes");
        let e = DaemonConfig::from_toml(
            "[[tools.mcp_servers]]\nname = \"X\"\ntransport = { kind = \"http\", url = \"http://127.0.0.1:1/mcp\" }\n",
            "f.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "tools.mcp_servers[0]");
    }

    #[test]
    fn the_store_section_is_validated_and_its_url_never_printed() {
        let pg = "[store]\nbackend = \"postgres\"\nurl = \"postgres://u:hunter2@127.0.0.1/db\"\n";
        let c = DaemonConfig::from_toml(pg, "f.toml").unwrap();
        assert_eq!(c.store.backend, crate::StoreBackend::Postgres);
        assert_eq!(c.store.lease_ttl, Duration::from_secs(10));
        assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
        for (text, key) in [
            ("[store]\nbackend = \"postgres\"\n", "store.url"),
            ("[store]\nurl = \"postgres://127.0.0.1/db\"\n", "store.url"),
            (&format!("{pg}node = \"a b\"\n"), "store.node"),
            (&format!("{pg}namespace = \"Aios\"\n"), "store.namespace"),
            (&format!("{pg}lease_ttl = \"10ms\"\n"), "store.lease_ttl"),
            (&format!("{pg}pool_max = 0\n"), "store.pool_max"),
        ] {
            let e = DaemonConfig::from_toml(text, "f.toml").unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
        let e = DaemonConfig::from_toml(
            "[store]\nbackend = \"postgres\"\nurl = \"postgres://u:hunter2@[bad\"\n",
            "f.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "store.url");
        assert!(!e.problem.contains("hunter2"), "{e}");
        let env = |k: &str| match k {
            "AIOS_STORE_URL" => Some("postgres://127.0.0.1/db".to_string()),
            "AIOS_NODE" => Some("aiosd-0".to_string()),
            _ => None,
        };
        let e = DaemonConfig::from_toml("[store]\nnode = \"a/b\"\n", "f.toml").unwrap_err();
        assert_eq!(
            e.key, "store.node",
            "validated for sled too: it names the node in a cluster"
        );
        let c = DaemonConfig::load(None, env, None, None).unwrap();
        assert_eq!(c.store.backend, crate::StoreBackend::Postgres);
        assert_eq!(c.store.node, "aiosd-0");
        assert_eq!(c.runtime_config().store, c.store);
    }

    #[test]
    fn environment_then_flags_override_the_file() {
        let env = |k: &str| match k {
            "AIOS_LISTEN" => Some("127.0.0.1:9000".to_string()),
            "AIOS_DATA_DIR" => Some("/tmp/from-env".to_string()),
            _ => None,
        };
        let c = DaemonConfig::load(None, env, None, None).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/from-env"));
        let c = DaemonConfig::load(
            None,
            env,
            Some("/tmp/flag".into()),
            Some("127.0.0.1:9100".into()),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/flag"));
        let e = DaemonConfig::load(
            None,
            |k| (k == "AIOS_LISTEN").then(|| "x".into()),
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(e.key, "AIOS_LISTEN");
    }
}
