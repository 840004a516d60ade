//! Starting the daemon: the node, the daemon's own stores (keys, audit log, quotas,
//! webhooks, idempotency counts), cluster membership, the background tasks and the HTTP
//! servers. Anything that fails on the way shuts down what started before it.

use std::net::SocketAddr;
use std::sync::Arc;

use aios_actors::records::Records;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{
    AUDIT_HEAD_SIGNED_MARKER, AppState, AuditLog, Daemon, DaemonConfig, DaemonError, FirstKey,
    KeyStore, Role, Shared, failed_auth, http, idempotency, keys, metrics_handle, quota, retention,
    sampler, server, spawn_key_reloader, webhooks,
};

/// The daemon's own stores, opened over the node's store.
struct Opened {
    keys: KeyStore,
    audit: AuditLog,
    quotas: quota::Quotas,
    hooks: webhooks::Webhooks,
    idempotency_counts: idempotency::Counts,
    /// The admin key created at the first start, shown once.
    first: FirstKey,
}

/// What the node listens on.
struct Listeners {
    api: TcpListener,
    metrics: Option<TcpListener>,
}

impl Daemon {
    /// Opens the node and its stores, makes sure an admin key exists (taken from
    /// `admin_key` when given, else created and returned once), and starts serving.
    ///
    /// # Errors
    /// [`DaemonError`].
    pub async fn start(
        config: DaemonConfig,
        admin_key: Option<String>,
    ) -> Result<(Self, FirstKey), DaemonError> {
        config.validate()?;
        let metrics = metrics_handle();
        let rt = crate::Runtime::open(config.runtime_config()).await?;
        let records = Records::new(rt.snapshots().clone());
        let prepared = async {
            let opened = open_stores(&config, &rt, &records, admin_key).await?;
            let listeners = listen(&config).await?;
            let served = served(&config, &rt);
            let membership =
                crate::cluster::Membership::start(&config.store.node, &config.cluster, served)
                    .await?;
            Ok::<_, DaemonError>((opened, listeners, membership))
        }
        .await;
        let (opened, listeners, membership) = match prepared {
            Ok(x) => x,
            Err(e) => {
                let _ = rt.shutdown().await;
                return Err(e);
            }
        };
        let stop = CancellationToken::new();
        opened.quotas.spawn_flusher(stop.clone());
        if config.store.backend == crate::StoreBackend::Postgres {
            spawn_key_reloader(opened.keys.clone(), opened.hooks.clone(), stop.clone());
        }
        opened.hooks.spawn_deliverer(stop.clone());
        idempotency::spawn_sweeper(
            records.clone(),
            opened.idempotency_counts.clone(),
            stop.clone(),
        );
        let state: Shared = Arc::new(AppState::new(
            rt,
            http::Stores {
                keys: opened.keys,
                audit: opened.audit,
                quotas: opened.quotas,
                webhooks: opened.hooks,
                membership,
                idempotency_counts: opened.idempotency_counts,
            },
            config,
            metrics,
            stop.clone(),
        ));
        let addr = listeners
            .api
            .local_addr()
            .map_err(|error| DaemonError::Bind {
                addr: state.config.listen,
                error,
            })?;
        sampler::spawn(state.clone(), stop.clone());
        failed_auth::spawn_auditor(state.clone(), stop.clone());
        retention::spawn(state.clone(), stop.clone());
        super::followers::spawn(state.clone(), stop.clone());
        let (servers, metrics_addr) = serve(&state, listeners, &stop);
        tracing::info!(%addr, "aiosd listening");
        Ok((
            Self {
                addr,
                metrics_addr,
                state,
                stop,
                servers,
            },
            opened.first,
        ))
    }
}

/// Opens the keys, the audit log, quotas, webhooks and idempotency counts, and creates or
/// imports the admin key on a store that has no key yet.
async fn open_stores(
    config: &DaemonConfig,
    rt: &crate::Runtime,
    records: &Records,
    admin_key: Option<String>,
) -> Result<Opened, DaemonError> {
    let store_err = |e: &dyn std::fmt::Display| DaemonError::Store(e.to_string());
    let keys = KeyStore::open(records.clone())
        .await
        .map_err(|e| store_err(&e))?;
    let audit = open_audit(config, records).await?;
    // On a store that nodes share, each node keeps its own counters, chains and queues.
    let shared_node = (config.store.backend == crate::StoreBackend::Postgres)
        .then_some(config.store.node.as_str());
    let quotas = quota::Quotas::open(
        records.clone(),
        &config.quotas,
        rt.llm().quota().cloned(),
        shared_node,
    )
    .await
    .map_err(DaemonError::Store)?;
    let guard = aios_actors::outbound::OutboundGuard::new(
        aios_actors::outbound::OutboundGuard::parse_allow(&config.outbound.allow)
            .map_err(|e| DaemonError::Store(format!("outbound.allow: {e}")))?,
    );
    let hooks =
        webhooks::Webhooks::open(records.clone(), config.webhooks.clone(), shared_node, guard)
            .await
            .map_err(|e| store_err(&e))?;
    let mut first = None;
    if keys.is_empty() {
        match admin_key {
            Some(k) => {
                keys.import_admin(&k)
                    .await
                    .map_err(|e| DaemonError::Store(format!("AIOS_ADMIN_KEY: {e}")))?;
            }
            None => {
                first = Some(
                    keys.create("admin", Role::Admin, keys::OPERATOR_TENANT, None)
                        .await
                        .map_err(|e| store_err(&e))?,
                );
            }
        }
    }
    let idempotency_counts = idempotency::Counts::load(records)
        .await
        .map_err(DaemonError::Store)?;
    Ok(Opened {
        keys,
        audit,
        quotas,
        hooks,
        idempotency_counts,
        first,
    })
}

/// Opens the audit log: this node's chain on a shared store, signed with the key beside the
/// data; a head written before heads were signed is signed once, at the first start of this
/// release.
async fn open_audit(config: &DaemonConfig, records: &Records) -> Result<AuditLog, DaemonError> {
    let store_err = |e: &dyn std::fmt::Display| DaemonError::Store(e.to_string());
    // On a store that nodes share, each node appends to its own chain.
    let scope = (config.store.backend == crate::StoreBackend::Postgres)
        .then_some(config.store.node.as_str());
    let signing = retention::signing_key(&config.data_dir).map_err(DaemonError::Store)?;
    let audit = AuditLog::open_scoped(records.clone(), scope)
        .await
        .and_then(|a| a.with_signing_key(signing))
        .map_err(|e| store_err(&e))?;
    // Heads are signed from the first start of this release on: a 0.1 head is signed once,
    // and the marker beside the key says so (a head that is unsigned or missing later is a
    // rewrite, which `verify` reports).
    let marker = config.data_dir.join(AUDIT_HEAD_SIGNED_MARKER);
    if !marker.exists() {
        audit.sign_head().await.map_err(|e| store_err(&e))?;
        std::fs::write(&marker, b"audit heads are signed from here on\n")
            .map_err(|e| DaemonError::Store(format!("{}: {e}", marker.display())))?;
    }
    Ok(audit)
}

/// Binds the API's address and, when separate, that of `/metrics` and the probes.
async fn listen(config: &DaemonConfig) -> Result<Listeners, DaemonError> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|error| DaemonError::Bind { addr, error })
    };
    let api = bind(config.listen).await?;
    let metrics = match config.metrics_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    Ok(Listeners { api, metrics })
}

/// What this node serves to the other nodes of a cluster, and the figures it reports.
fn served(config: &DaemonConfig, rt: &crate::Runtime) -> crate::cluster::Served {
    let system = rt.agent_system().clone();
    let memory = rt.memory_store().clone();
    let registry = rt.registry().clone();
    let node = config.store.node.clone();
    let tags = config.cluster.tags.clone();
    crate::cluster::Served {
        system: system.clone(),
        memory: Some(rt.memory_store().clone()),
        tools: Some(rt.tool_service().clone()),
        stats: Arc::new(move || crate::cluster::NodeStats {
            node: node.clone(),
            actors: registry.len(),
            agents_active: system.active_count(),
            agents_busy: system.busy_count(),
            forwarded_in_flight: 0,
            tags: tags.clone(),
            draining: system.is_draining(),
            memory_shards: memory.hosted_shards(),
        }),
    }
}

/// Starts the API server and, when it has its own address, the metrics server; returns
/// their tasks and the metrics server's address.
fn serve(
    state: &Shared,
    listeners: Listeners,
    stop: &CancellationToken,
) -> (Vec<tokio::task::JoinHandle<()>>, Option<SocketAddr>) {
    let mut servers = Vec::new();
    let app = super::app(state.clone());
    let token = stop.clone();
    let limits = state.config.http.clone();
    let api = listeners.api;
    servers.push(tokio::spawn(async move {
        if let Err(e) = server::serve(api, app, limits, token).await {
            tracing::error!(error = %e, "API server");
        }
    }));
    let mut metrics_addr = None;
    if let Some(l) = listeners.metrics {
        metrics_addr = l.local_addr().ok();
        let app = super::probes(state)
            .fallback(super::not_found)
            .with_state(state.clone());
        let token = stop.clone();
        let limits = state.config.http.clone();
        servers.push(tokio::spawn(async move {
            if let Err(e) = server::serve(l, app, limits, token).await {
                tracing::error!(error = %e, "metrics server");
            }
        }));
    }
    (servers, metrics_addr)
}
