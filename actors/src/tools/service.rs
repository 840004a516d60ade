//! The tool service: every installed tool version that has an implementation runs as a
//! host actor under the `tools` supervisor. A call is checked against the caller's grants,
//! its arguments against the input schema, then served from the cache (pure tools) or run
//! by the host within the manifest's timeout and concurrency limit; the result is checked
//! against the output schema. Every call is counted per tool, version and agent.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aios_supervisor::{
    ActorHandle, CallError, Context, Restart, SupervisorRef, Worker, WorkerSpec,
};
use dashmap::DashMap;
use ractor::{ActorProcessingErr, RpcReplyPort};
use serde::Serialize;
use serde_json::Value;

use super::manifest::ToolManifest;
use super::registry::{ToolRegistry, ToolRegistryError, ToolRequirement};
use super::schema::{Schema, Violations};

/// Cached results of pure tools at most.
pub const TOOL_CACHE_ENTRIES_MAX: usize = 10_000;
/// How long a cached result lives.
pub const TOOL_CACHE_TTL: Duration = Duration::from_secs(300);
/// (tool, agent) pairs counted separately at most; further agents are counted as `*`.
pub const USAGE_KEYS_MAX: usize = 100_000;
/// Denied calls remembered for the audit log at most (oldest dropped).
pub const DENIALS_MAX: usize = 10_000;
/// Latency histogram bucket bounds, in microseconds.
const LATENCY_BUCKETS_US: [u64; 8] = [
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    60_000_000,
    u64::MAX,
];

/// An implementation of a tool.
#[async_trait::async_trait]
pub trait ToolImpl: Send + Sync + 'static {
    /// Runs one call with validated arguments.
    ///
    /// # Errors
    /// Why the call failed; returned to the caller as [`ToolCallError::Failed`].
    async fn call(&self, args: Value, ctx: &CallContext) -> Result<Value, String>;
}

/// Who calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallContext {
    /// The calling agent.
    pub agent: String,
    /// Its role (`planner`, `executor`, …).
    pub role: String,
    /// Its tenant.
    pub tenant: String,
}

/// Why a call failed, structured so an agent can act on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolCallError {
    /// No installed version satisfies the requirement, or it has no implementation.
    #[error("no tool matches {requirement}")]
    NotFound {
        /// The requirement.
        requirement: String,
    },
    /// The caller has no grant for it.
    #[error("{agent} may not call {tool}: {reason}")]
    Denied {
        /// The tool.
        tool: String,
        /// The caller.
        agent: String,
        /// Why.
        reason: String,
    },
    /// The arguments break the input schema; the tool did not run.
    #[error("invalid arguments for {tool}: {violations}")]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// What is wrong, with paths.
        violations: Violations,
    },
    /// The result broke the output schema.
    #[error("{tool} returned an invalid result: {violations}")]
    InvalidOutput {
        /// The tool.
        tool: String,
        /// What is wrong.
        violations: Violations,
    },
    /// The tool failed.
    #[error("{tool} failed: {message}")]
    Failed {
        /// The tool.
        tool: String,
        /// Its message.
        message: String,
    },
    /// The tool crashed during the call (it is restarted).
    #[error("{tool} crashed during the call; it is being restarted")]
    Crashed {
        /// The tool.
        tool: String,
    },
    /// The call took longer than the manifest's timeout.
    #[error("{tool} timed out after {after_ms} ms")]
    Timeout {
        /// The tool.
        tool: String,
        /// The timeout.
        after_ms: u64,
    },
}

/// A grant: who may call which tools. Empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// Only this agent.
    pub agent: Option<String>,
    /// Only agents with this role.
    pub role: Option<String>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Tool names (`*` for all).
    pub tools: Vec<String>,
}

impl Grant {
    fn allows(&self, ctx: &CallContext, tool: &str) -> bool {
        self.agent.as_ref().is_none_or(|a| a == &ctx.agent)
            && self.role.as_ref().is_none_or(|r| r == &ctx.role)
            && self.tenant.as_ref().is_none_or(|t| t == &ctx.tenant)
            && self.tools.iter().any(|t| t == "*" || t == tool)
    }
}

/// The outcome of one manifest example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExampleOutcome {
    /// The example's name.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Why it failed.
    pub detail: String,
}

/// A refused call, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Denial {
    /// Unix ms.
    pub at_ms: u64,
    /// The caller.
    pub agent: String,
    /// Its tenant.
    pub tenant: String,
    /// The tool.
    pub tool: String,
    /// Why.
    pub reason: String,
}

/// Usage of one tool version by one agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ToolUsage {
    /// Calls (cache hits included).
    pub calls: u64,
    /// Calls that failed (any error but a denial).
    pub errors: u64,
    /// Calls answered from the cache.
    pub cache_hits: u64,
    /// Latency histogram: counts at or under 0.1, 1, 10, 100 ms, 1, 10, 60 s, and above.
    pub latency_buckets: [u64; 8],
}

struct Installed {
    manifest: Arc<ToolManifest>,
    input: Schema,
    output: Option<Schema>,
    /// `concurrency_max` host actors, each running one call at a time, with the calls sent
    /// to it and not answered yet.
    hosts: Vec<(ActorHandle<HostMsg>, Arc<AtomicUsize>)>,
}

impl Installed {
    /// The least busy host (the first among equals) and its busy count.
    fn host(&self) -> &(ActorHandle<HostMsg>, Arc<AtomicUsize>) {
        self.hosts
            .iter()
            .min_by_key(|(_, busy)| busy.load(Ordering::Relaxed))
            .unwrap_or(&self.hosts[0])
    }
}

/// Counts a call against its host until dropped.
struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

type CacheKey = (String, String);

struct Inner {
    registry: ToolRegistry,
    supervisor: SupervisorRef,
    impls: DashMap<String, Arc<dyn ToolImpl>>,
    installed: DashMap<String, Arc<Installed>>,
    grants: Mutex<Vec<Grant>>,
    denials: Mutex<std::collections::VecDeque<Denial>>,
    usage: DashMap<(String, String), ToolUsage>,
    cache: Mutex<lru::LruCache<CacheKey, (Instant, Value)>>,
}

/// Tools of a node. Cheap to clone.
#[derive(Clone)]
pub struct ToolService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ToolService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolService")
            .field("running", &self.inner.installed.len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ToolService {
    /// A service over `registry`, running hosts under `supervisor`.
    pub fn new(registry: ToolRegistry, supervisor: SupervisorRef) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                supervisor,
                impls: DashMap::new(),
                installed: DashMap::new(),
                grants: Mutex::new(Vec::new()),
                denials: Mutex::new(std::collections::VecDeque::new()),
                usage: DashMap::new(),
                cache: Mutex::new(lru::LruCache::new(
                    NonZeroUsize::new(TOOL_CACHE_ENTRIES_MAX).unwrap_or(NonZeroUsize::MIN),
                )),
            }),
        }
    }

    /// The registry.
    pub fn registry(&self) -> &ToolRegistry {
        &self.inner.registry
    }

    /// Installs a manifest with its implementation and starts its host.
    ///
    /// # Errors
    /// The registry's refusal, or a host that cannot start.
    pub async fn install(
        &self,
        manifest: ToolManifest,
        implementation: Arc<dyn ToolImpl>,
    ) -> Result<(), ToolRegistryError> {
        self.inner.registry.install(manifest.clone()).await?;
        let id = manifest.id();
        let input = Schema::compile(&manifest.input_schema).map_err(ToolRegistryError::Store)?;
        let output = match &manifest.output_schema {
            Some(s) => Some(Schema::compile(s).map_err(ToolRegistryError::Store)?),
            None => None,
        };
        let manifest = Arc::new(manifest);
        let mut hosts = Vec::with_capacity(manifest.concurrency_max);
        for i in 0..manifest.concurrency_max {
            let spec = WorkerSpec::new(
                format!("tool:{id}:{i}"),
                HostWorker {
                    implementation: implementation.clone(),
                    name: id.clone(),
                    timeout: manifest.timeout,
                },
            )
            .restart(Restart::Permanent)
            .mailbox_len_max(HOST_MAILBOX_LEN_MAX);
            match self.inner.supervisor.start_worker(spec).await {
                Ok(h) => hosts.push((h, Arc::new(AtomicUsize::new(0)))),
                Err(e) => {
                    // Undo: no manifest without running hosts shadows older versions.
                    self.stop_hosts(&id, hosts.len()).await;
                    if let Err(u) = self
                        .inner
                        .registry
                        .uninstall(&manifest.name, &manifest.version, &[])
                        .await
                    {
                        tracing::warn!(tool = %id, error = %u, "removing a tool whose hosts failed to start");
                    }
                    return Err(ToolRegistryError::Store(format!("starting {id}: {e}")));
                }
            }
        }
        self.inner.impls.insert(id.clone(), implementation);
        self.inner.installed.insert(
            id,
            Arc::new(Installed {
                manifest,
                input,
                output,
                hosts,
            }),
        );
        Ok(())
    }

    /// Waits until the first host of `id` (`name@version`; the one an idle tool's next call
    /// goes to) runs with a generation of at least `min` (tests use it after a crash).
    ///
    /// # Errors
    /// The id is unknown, or the timeout passed.
    #[doc(hidden)]
    pub async fn wait_host(&self, id: &str, min: u64, timeout: Duration) -> Result<u64, String> {
        let host = self
            .inner
            .installed
            .get(id)
            .map(|i| i.hosts[0].0.clone())
            .ok_or_else(|| format!("no tool {id}"))?;
        host.wait_for_generation(min, timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// The version `requirement` resolves to, with its id, if it has an implementation.
    fn installed(
        &self,
        requirement: &ToolRequirement,
    ) -> Result<(String, Arc<Installed>), ToolCallError> {
        let manifest =
            self.inner
                .registry
                .resolve(requirement)
                .ok_or_else(|| ToolCallError::NotFound {
                    requirement: requirement.to_string(),
                })?;
        let id = manifest.id();
        let installed = self
            .inner
            .installed
            .get(&id)
            .map(|i| i.clone())
            .ok_or_else(|| ToolCallError::NotFound {
                requirement: format!("{requirement} (installed without an implementation)"),
            })?;
        Ok((id, installed))
    }

    async fn stop_hosts(&self, id: &str, count: usize) {
        for i in 0..count {
            if let Err(e) = self
                .inner
                .supervisor
                .remove_child(&format!("tool:{id}:{i}"))
                .await
            {
                tracing::warn!(tool = %id, host = i, error = %e, "stopping a tool host");
            }
        }
    }

    /// Removes one version (see [`ToolRegistry::uninstall`] for when it is refused) and
    /// stops its hosts.
    ///
    /// # Errors
    /// As [`ToolRegistry::uninstall`].
    pub async fn uninstall(
        &self,
        name: &str,
        version: &semver::Version,
        agent_needs: &[(String, ToolRequirement)],
    ) -> Result<(), ToolRegistryError> {
        self.inner
            .registry
            .uninstall(name, version, agent_needs)
            .await?;
        let id = format!("{name}@{version}");
        self.inner.impls.remove(&id);
        if let Some((_, installed)) = self.inner.installed.remove(&id) {
            self.stop_hosts(&id, installed.hosts.len()).await;
        }
        Ok(())
    }

    /// Runs the examples of the version `requirement` resolves to (grants are not checked:
    /// this is the operator's test command). Each example passes when the call succeeds and
    /// its result equals the expected output and satisfies the expected output schema.
    ///
    /// # Errors
    /// [`ToolCallError::NotFound`].
    pub async fn run_examples(
        &self,
        requirement: &ToolRequirement,
    ) -> Result<Vec<ExampleOutcome>, ToolCallError> {
        let (id, installed) = self.installed(requirement)?;
        let manifest = installed.manifest.clone();
        let ctx = CallContext {
            agent: "tool-test".into(),
            ..CallContext::default()
        };
        let mut out = Vec::new();
        for (i, ex) in manifest.examples.iter().enumerate() {
            let name = if ex.name.is_empty() {
                format!("example {i}")
            } else {
                ex.name.clone()
            };
            let verdict = match self.run(&installed, &id, ex.input.clone(), &ctx).await {
                Err(e) => Err(e.to_string()),
                Ok((value, _)) => {
                    let mut problems = Vec::new();
                    if let Some(expected) = &ex.output
                        && expected != &value
                    {
                        problems.push(format!("expected {expected}, got {value}"));
                    }
                    if let Some(schema) = &ex.output_schema {
                        match Schema::compile(schema) {
                            Ok(s) => {
                                if let Err(v) = s.check(&value) {
                                    problems.push(v.to_string());
                                }
                            }
                            Err(e) => problems.push(format!("output_schema: {e}")),
                        }
                    }
                    if problems.is_empty() {
                        Ok(())
                    } else {
                        Err(problems.join("; "))
                    }
                }
            };
            out.push(ExampleOutcome {
                name,
                passed: verdict.is_ok(),
                detail: verdict.err().unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Adds a grant.
    pub fn grant(&self, grant: Grant) {
        lock(&self.inner.grants).push(grant);
    }

    /// The latest refused calls, oldest first.
    pub fn denials(&self) -> Vec<Denial> {
        lock(&self.inner.denials).iter().cloned().collect()
    }

    /// Usage per (tool `name@version`, agent).
    pub fn usage(&self) -> BTreeMap<(String, String), ToolUsage> {
        self.inner
            .usage
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    fn record(&self, tool: &str, agent: &str, f: impl FnOnce(&mut ToolUsage)) {
        // Bounded: beyond USAGE_KEYS_MAX (tool, agent) pairs, new agents count as `*`.
        let agent = if self.inner.usage.len() >= USAGE_KEYS_MAX
            && !self
                .inner
                .usage
                .contains_key(&(tool.to_string(), agent.to_string()))
        {
            "*"
        } else {
            agent
        };
        let mut u = self
            .inner
            .usage
            .entry((tool.to_string(), agent.to_string()))
            .or_default();
        f(&mut u);
    }

    /// Calls the version of a tool that `requirement` resolves to.
    ///
    /// # Errors
    /// [`ToolCallError`], structured for the calling agent.
    pub async fn call(
        &self,
        requirement: &ToolRequirement,
        args: Value,
        ctx: &CallContext,
    ) -> Result<Value, ToolCallError> {
        let (id, installed) = self.installed(requirement)?;
        let manifest = installed.manifest.clone();
        let granted = lock(&self.inner.grants)
            .iter()
            .any(|g| g.allows(ctx, &manifest.name));
        if !granted {
            let reason = "no grant covers this agent, role and tenant".to_string();
            let mut denials = lock(&self.inner.denials);
            if denials.len() >= DENIALS_MAX {
                denials.pop_front();
            }
            denials.push_back(Denial {
                at_ms: crate::protocol::unix_ms(),
                agent: ctx.agent.clone(),
                tenant: ctx.tenant.clone(),
                tool: id.clone(),
                reason: reason.clone(),
            });
            tracing::warn!(tool = %id, agent = %ctx.agent, "tool call denied");
            return Err(ToolCallError::Denied {
                tool: id,
                agent: ctx.agent.clone(),
                reason,
            });
        }
        let started = Instant::now();
        let result = self.run(&installed, &id, args, ctx).await;
        let micros = started.elapsed().as_micros() as u64;
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len() - 1);
        let (hit, failed) = match &result {
            Ok((_, hit)) => (*hit, false),
            Err(_) => (false, true),
        };
        self.record(&id, &ctx.agent, |u| {
            u.calls += 1;
            u.errors += u64::from(failed);
            u.cache_hits += u64::from(hit);
            u.latency_buckets[bucket] += 1;
        });
        result.map(|(v, _)| v)
    }

    async fn run(
        &self,
        installed: &Installed,
        id: &str,
        args: Value,
        ctx: &CallContext,
    ) -> Result<(Value, bool), ToolCallError> {
        installed
            .input
            .check(&args)
            .map_err(|violations| ToolCallError::InvalidArguments {
                tool: id.to_string(),
                violations,
            })?;
        // Per tenant: one tenant's results are never served to another.
        let key = installed
            .manifest
            .pure
            .then(|| (format!("{}\u{0}{id}", ctx.tenant), args.to_string()));
        if let Some(k) = &key {
            let mut cache = lock(&self.inner.cache);
            if let Some((at, v)) = cache.get(k) {
                if at.elapsed() < TOOL_CACHE_TTL {
                    return Ok((v.clone(), true));
                }
                cache.pop(k);
            }
        }
        let timeout = installed.manifest.timeout;
        let ctx = ctx.clone();
        let (host, busy) = installed.host();
        busy.fetch_add(1, Ordering::Relaxed);
        let _busy = Busy(busy);
        // The host abandons the call at the manifest's timeout; waiting twice as long here
        // also covers time in the host's queue.
        let timed_out = || ToolCallError::Timeout {
            tool: id.to_string(),
            after_ms: timeout.as_millis() as u64,
        };
        let value = match host
            .call(|r| HostMsg::Call(args, ctx, r), timeout * 2)
            .await
        {
            Ok(Ok(v)) => v,
            Ok(Err(HostError::Failed(message))) => {
                return Err(ToolCallError::Failed {
                    tool: id.to_string(),
                    message,
                });
            }
            Ok(Err(HostError::TimedOut)) => return Err(timed_out()),
            Err(CallError::Dropped { .. }) => {
                return Err(ToolCallError::Crashed {
                    tool: id.to_string(),
                });
            }
            Err(CallError::Timeout { .. }) => return Err(timed_out()),
            Err(e) => {
                return Err(ToolCallError::Failed {
                    tool: id.to_string(),
                    message: e.to_string(),
                });
            }
        };
        if let Some(schema) = &installed.output {
            schema
                .check(&value)
                .map_err(|violations| ToolCallError::InvalidOutput {
                    tool: id.to_string(),
                    violations,
                })?;
        }
        if let Some(k) = key {
            lock(&self.inner.cache).put(k, (Instant::now(), value.clone()));
        }
        Ok((value, false))
    }
}

/// Mailbox bound of a tool host.
const HOST_MAILBOX_LEN_MAX: usize = 256;

enum HostMsg {
    Call(Value, CallContext, RpcReplyPort<Result<Value, HostError>>),
}

enum HostError {
    Failed(String),
    TimedOut,
}

/// Runs one call at a time of a tool version. A panic in the tool crashes the host (its
/// supervisor restarts it, by the `tools` supervisor's intensity) and drops the caller's
/// reply, which the service reports as [`ToolCallError::Crashed`].
struct HostWorker {
    implementation: Arc<dyn ToolImpl>,
    name: String,
    /// A call running longer is abandoned, so a hung call does not hold the host.
    timeout: Duration,
}

impl Worker for HostWorker {
    type Msg = HostMsg;
    type State = ();

    async fn init(
        &self,
        _: &mut Context<HostMsg>,
        _: Option<()>,
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &mut Context<HostMsg>,
        msg: HostMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let HostMsg::Call(args, call_ctx, reply) = msg;
        tracing::trace!(tool = %self.name, agent = %call_ctx.agent, "tool call");
        let result =
            match tokio::time::timeout(self.timeout, self.implementation.call(args, &call_ctx))
                .await
            {
                Ok(r) => r.map_err(HostError::Failed),
                Err(_) => Err(HostError::TimedOut),
            };
        ctx.reply(reply, result);
        Ok(())
    }
}

/// A plugin tool as seen by agents: the version `requirement` resolves to, called through
/// the service (grants, schemas, cache, host actors) with the agent's name, role and tenant.
pub struct PluginTool {
    service: ToolService,
    requirement: ToolRequirement,
    manifest: Arc<ToolManifest>,
}

impl PluginTool {
    /// The agent-side tool for `requirement`, if it resolves.
    pub fn new(service: ToolService, requirement: ToolRequirement) -> Option<Self> {
        let manifest = service.registry().resolve(&requirement)?;
        Some(Self {
            service,
            requirement,
            manifest,
        })
    }
}

#[async_trait::async_trait]
impl crate::agent::tools::Tool for PluginTool {
    fn spec(&self) -> crate::llm::ToolSpec {
        crate::llm::ToolSpec {
            name: self.manifest.name.clone(),
            description: self.manifest.description.clone(),
            parameters: self.manifest.input_schema.clone(),
        }
    }

    fn capabilities(&self) -> Vec<crate::agent::Capability> {
        self.manifest.capabilities.clone()
    }

    async fn call(
        &self,
        args: Value,
        ctx: &crate::agent::tools::ToolContext,
    ) -> Result<String, crate::agent::tools::ToolError> {
        use crate::agent::tools::ToolError;
        let call_ctx = CallContext {
            agent: ctx
                .agent
                .as_ref()
                .map(|a| a.name.clone())
                .unwrap_or_default(),
            role: ctx.role.clone(),
            tenant: ctx.tenant.clone(),
        };
        match self.service.call(&self.requirement, args, &call_ctx).await {
            Ok(v) => Ok(match v {
                Value::String(s) => s,
                other => other.to_string(),
            }),
            Err(ToolCallError::InvalidArguments { violations, .. }) => {
                Err(ToolError::InvalidArguments(violations.to_string()))
            }
            Err(e) => Err(ToolError::Failed(e.to_string())),
        }
    }
}
