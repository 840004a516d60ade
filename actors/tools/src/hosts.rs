//! Tool hosts: every installed tool version that has an implementation runs as
//! `concurrency_max` host actors under the `tools` supervisor, each running one call at a
//! time. [`Hosts`] owns the table of versions running here; the methods below install and
//! remove versions and run a call on a host.
//!
//! Architecture invariant: a version is in the table only with all its hosts started (a
//! failed start stops those that started and, for a new install, uninstalls the manifest
//! again), so no manifest without running hosts shadows an older version.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aios_core::tool::Schema;
use aios_core::{Tool, ToolError, ToolRequirement};
use aios_supervisor::{ActorHandle, CallError, Context, Restart, Worker, WorkerSpec};
use dashmap::DashMap;
use ractor::{ActorProcessingErr, RpcReplyPort};
use serde_json::Value;

use super::ToolService;
use super::manifest::ToolManifest;
use super::registry::ToolRegistryError;
use super::service::{CallContext, TOOL_CACHE_TTL, ToolCallError, lock};

/// The tool versions this node runs, by id (`name@version`).
#[derive(Default)]
pub(crate) struct Hosts {
    installed: DashMap<String, Arc<Installed>>,
}

impl Hosts {
    /// How many versions run here.
    pub(crate) fn len(&self) -> usize {
        self.installed.len()
    }
}

/// A tool version this node runs: its manifest, compiled schemas, metric handles and host
/// actors. Built whole at install, never changed after.
pub(crate) struct Installed {
    manifest: Arc<ToolManifest>,
    metrics: ToolMetrics,
    input: Schema,
    output: Option<Schema>,
    /// `concurrency_max` host actors, each running one call at a time, with the calls sent
    /// to it and not answered yet.
    hosts: Vec<(ActorHandle<HostMsg>, Arc<AtomicUsize>)>,
}

/// Counts a call against its host until dropped.
struct Busy<'a>(&'a AtomicUsize);

/// Metric handles of one tool version, registered once at install (the metrics recorder,
/// if any, must be installed before the node starts).
struct ToolMetrics {
    ok: metrics::Counter,
    failed: metrics::Counter,
    cache_hits: metrics::Counter,
    seconds: metrics::Histogram,
}

impl Installed {
    /// Its manifest.
    pub(crate) fn manifest(&self) -> &Arc<ToolManifest> {
        &self.manifest
    }

    /// Counts a call in the tool's metrics.
    pub(crate) fn count(&self, micros: u64, hit: bool, failed: bool) {
        let m = &self.metrics;
        if failed {
            m.failed.increment(1);
        } else {
            m.ok.increment(1);
        }
        if hit {
            m.cache_hits.increment(1);
        }
        m.seconds.record(micros as f64 / 1e6);
    }

    /// The least busy host (the first among equals) and its busy count.
    fn host(&self) -> &(ActorHandle<HostMsg>, Arc<AtomicUsize>) {
        self.hosts
            .iter()
            .min_by_key(|(_, busy)| busy.load(Ordering::Relaxed))
            .unwrap_or(&self.hosts[0])
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ToolMetrics {
    fn new(m: &ToolManifest) -> Self {
        let labels = |outcome: &'static str| {
            [
                ("tool", m.name.clone()),
                ("version", m.version.to_string()),
                ("outcome", outcome.to_string()),
            ]
        };
        Self {
            ok: metrics::counter!("aios_tool_calls_total", &labels("ok")),
            failed: metrics::counter!("aios_tool_calls_total", &labels("error")),
            cache_hits: metrics::counter!("aios_tool_cache_hits_total", &labels("ok")[..2]),
            seconds: metrics::histogram!("aios_tool_call_seconds", &labels("ok")[..2]),
        }
    }
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
        let result = match tokio::time::timeout(
            self.timeout,
            self.implementation.call(args, &call_ctx.tool_context()),
        )
        .await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(ToolError::Crashed(m))) => Err(HostError::Crashed(m)),
            Ok(Err(ToolError::Failed(m))) => Err(HostError::Failed(m)),
            Ok(Err(other)) => Err(HostError::Failed(other.to_string())),
            Err(_) => Err(HostError::TimedOut),
        };
        ctx.reply(reply, result);
        Ok(())
    }
}

/// Mailbox bound of a tool host.
const HOST_MAILBOX_LEN_MAX: usize = 256;

enum HostMsg {
    Call(Value, CallContext, RpcReplyPort<Result<Value, HostError>>),
}

enum HostError {
    Failed(String),
    Crashed(String),
    TimedOut,
}

/// Runs one call at a time of a tool version. A panic in the tool crashes the host (its
/// supervisor restarts it, by the `tools` supervisor's intensity) and drops the caller's
/// reply, which the service reports as [`ToolCallError::Crashed`].
struct HostWorker {
    implementation: Arc<dyn Tool>,
    name: String,
    /// A call running longer is abandoned, so a hung call does not hold the host.
    timeout: Duration,
}

impl ToolService {
    /// Whether this node runs the tool version `id` (`name@version`).
    pub(crate) fn runs_here(&self, id: &str) -> bool {
        self.inner.hosts.installed.contains_key(id)
    }

    /// Installs a manifest with its implementation and starts its host.
    ///
    /// # Errors
    /// The registry's refusal, or a host that cannot start.
    pub async fn install(
        &self,
        manifest: ToolManifest,
        implementation: Arc<dyn Tool>,
    ) -> Result<(), ToolRegistryError> {
        self.inner.registry.install(manifest.clone()).await?;
        self.start_hosts(manifest, implementation, true).await
    }

    /// Starts the hosts of an installed manifest. When they cannot start and `undo` is set,
    /// the manifest is uninstalled again, so no manifest without running hosts shadows older
    /// versions.
    pub(crate) async fn start_hosts(
        &self,
        manifest: ToolManifest,
        implementation: Arc<dyn Tool>,
        undo: bool,
    ) -> Result<(), ToolRegistryError> {
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
                    self.stop_hosts(&id, hosts.len()).await;
                    if undo
                        && let Err(u) = self
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
        self.inner.hosts.installed.insert(
            id,
            Arc::new(Installed {
                metrics: ToolMetrics::new(&manifest),
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
            .hosts
            .installed
            .get(id)
            .map(|i| i.hosts[0].0.clone())
            .ok_or_else(|| format!("no tool {id}"))?;
        host.wait_for_generation(min, timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// The version `requirement` resolves to, with its id, if it has an implementation.
    pub(crate) fn installed(
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
            .hosts
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
    ) -> Result<(), ToolRegistryError> {
        let needs = lock(&self.inner.agent_needs).clone();
        let agent_needs = needs.map(|f| f()).unwrap_or_default();
        self.inner
            .registry
            .uninstall(name, version, &agent_needs)
            .await?;
        self.stop_version(&format!("{name}@{version}")).await;
        Ok(())
    }

    /// Stops the hosts of tool version `id` and forgets it here (the registry is the
    /// caller's).
    pub(crate) async fn stop_version(&self, id: &str) {
        if let Some((_, installed)) = self.inner.hosts.installed.remove(id) {
            self.stop_hosts(id, installed.hosts.len()).await;
        }
    }

    /// Runs one call on the least busy host of `installed` (or answers it from the cache
    /// for a pure tool): arguments checked before, the result after. Returns the value and
    /// whether it came from the cache.
    pub(crate) async fn run(
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
            Ok(Err(HostError::Crashed(detail))) => {
                return Err(ToolCallError::Crashed {
                    tool: id.to_string(),
                    detail,
                });
            }
            Err(CallError::Dropped { .. }) => {
                return Err(ToolCallError::Crashed {
                    tool: id.to_string(),
                    detail: "the tool's host actor failed".into(),
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
