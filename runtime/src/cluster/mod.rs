//! Cluster membership: `aiosd` nodes that know each other over ractor_cluster.
//!
//! With `[cluster] listen` set (and the binary built with the `cluster` feature), a node runs
//! a ractor_cluster `NodeServer` on that port, authenticates peers with the shared secret
//! (ractor_cluster's challenge over the "magic cookie"; a peer with another secret never
//! authenticates and is never listed), dials its seeds, and learns the rest of the cluster
//! transitively (a node connecting to one member connects to that member's peers too).
//! ractor_cluster neither re-dials lost sessions nor discovers nodes, so [`Membership`]
//! re-dials every seed it is not connected to, with backoff, for as long as it runs.
//!
//! What a node knows of another is [`Peer`]: its name, the address it advertises, whether a
//! session with it is up, and since when; a reachable peer's figures ([`NodeStats`]: actors,
//! agents, load) are asked from its gateway (`gateway/`), the actor through which nodes
//! forward tasks to each other's agents.

#[cfg(feature = "cluster")]
pub mod gateway;
#[cfg(feature = "cluster")]
pub mod relay;
#[cfg(feature = "cluster")]
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aios_actors::agent::placement;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

/// The most seeds accepted.
pub const SEEDS_MAX: usize = 64;
/// The shortest shared secret accepted.
pub const SECRET_LEN_MIN: usize = 16;
/// The most peers remembered (up or down); the oldest down ones are forgotten first.
pub const PEERS_MAX: usize = 1024;

/// The `[cluster]` section. The cluster is off unless `listen` is set.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Where this node accepts other nodes (ractor_cluster listens on this port).
    pub listen: Option<SocketAddr>,
    /// The host other nodes dial to reach this one, on the `listen` port (default: the
    /// `listen` address; set it when listening on `0.0.0.0`, for example to the pod's DNS name).
    pub advertise: Option<String>,
    /// `host:port` of nodes to join; one reachable member is enough.
    pub seeds: Vec<String>,
    /// The secret every node of the cluster shares (or the environment: `AIOS_CLUSTER_SECRET`);
    /// at least [`SECRET_LEN_MIN`] characters.
    pub secret: Option<String>,
    /// This node's tags, which agents' placements may require (`gpu`, `eu`, ...; or the
    /// environment: `AIOS_CLUSTER_TAGS`, comma-separated).
    pub tags: Vec<String>,
    /// This node's certificate chain (PEM) for TLS between nodes, with `tls_key` and `tls_ca`
    /// (or `AIOS_CLUSTER_TLS_CERT`). Without the three, the cluster port is plain TCP.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM; or `AIOS_CLUSTER_TLS_KEY`).
    pub tls_key: Option<PathBuf>,
    /// The authority that signs the nodes' certificates (PEM; or `AIOS_CLUSTER_TLS_CA`): a
    /// peer is accepted, and a seed trusted, only with a certificate it signed.
    pub tls_ca: Option<PathBuf>,
    /// Dial only the seeds, never the nodes learnt from them (ractor_cluster's isolated
    /// mode; always so with TLS): for a network where an address a node advertises is not
    /// reachable from every other node (a proxy or NAT between them). List every node as a
    /// seed of some node then.
    pub dial_seeds_only: bool,
}

impl std::fmt::Debug for ClusterConfig {
    /// The secret is not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("seeds", &self.seeds)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("tags", &self.tags)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_ca", &self.tls_ca)
            .field("dial_seeds_only", &self.dial_seeds_only)
            .finish()
    }
}

/// `host:port` with a non-empty host and a port.
fn valid_host_port(v: &str) -> bool {
    v.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
    })
}

impl ClusterConfig {
    /// Whether this node joins a cluster.
    pub fn enabled(&self) -> bool {
        self.listen.is_some()
    }

    /// The `host:port` other nodes dial.
    pub fn advertised(&self) -> Option<String> {
        let listen = self.listen?;
        Some(match &self.advertise {
            Some(host) => format!("{host}:{}", listen.port()),
            None => listen.to_string(),
        })
    }

    /// Checks the section.
    ///
    /// # Errors
    /// The key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let Some(listen) = self.listen else {
            if !self.seeds.is_empty()
                || self.secret.is_some()
                || self.advertise.is_some()
                || !self.tags.is_empty()
                || self.tls_cert.is_some()
                || self.tls_key.is_some()
                || self.tls_ca.is_some()
            {
                return Err((
                    "cluster.listen",
                    "is required when seeds, secret, advertise, tags or TLS are set".into(),
                ));
            }
            return Ok(());
        };
        if !cfg!(feature = "cluster") {
            return Err((
                "cluster.listen",
                "this aiosd was built without cluster support (build with --features cluster)"
                    .into(),
            ));
        }
        if listen.port() == 0 {
            return Err(("cluster.listen", "needs a fixed port, not 0".into()));
        }
        match &self.secret {
            None => {
                return Err((
                    "cluster.secret",
                    "is required (or set AIOS_CLUSTER_SECRET)".into(),
                ));
            }
            Some(s) if s.chars().count() < SECRET_LEN_MIN => {
                return Err((
                    "cluster.secret",
                    format!("must be at least {SECRET_LEN_MIN} characters"),
                ));
            }
            Some(_) => {}
        }
        if let Some(a) = &self.advertise
            && (a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '/'))
        {
            return Err(("cluster.advertise", format!("{a:?} is not a host name")));
        }
        if self.seeds.len() > SEEDS_MAX {
            return Err(("cluster.seeds", format!("at most {SEEDS_MAX}")));
        }
        if let Some(bad) = self.seeds.iter().find(|s| !valid_host_port(s)) {
            return Err(("cluster.seeds", format!("{bad:?} is not host:port")));
        }
        if self.tags.len() > placement::TAGS_MAX {
            return Err(("cluster.tags", format!("at most {}", placement::TAGS_MAX)));
        }
        for tag in &self.tags {
            aios_core::name::validate_tag(tag).map_err(|e| ("cluster.tags", e))?;
        }
        #[cfg(feature = "cluster")]
        self.tls()?;
        Ok(())
    }

    /// Both sides of TLS between nodes, when `tls_cert`, `tls_key` and `tls_ca` are set.
    ///
    /// # Errors
    /// Only some of the three are set, or their files are unreadable or do not fit together.
    #[cfg(feature = "cluster")]
    pub fn tls(&self) -> Result<Option<tls::Tls>, (&'static str, String)> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => tls::load(cert, key, ca).map(Some),
            _ => Err((
                "cluster.tls_cert",
                "tls_cert, tls_key and tls_ca go together: set all three or none".into(),
            )),
        }
    }
}

/// Whether a session with a peer is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerStatus {
    /// Authenticated and connected.
    Up,
    /// Was connected; its last session closed.
    Down,
}

/// What this node knows of another node.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    /// Its name (`<node>@<host>`, as ractor_cluster announces it).
    pub name: String,
    /// The address it advertises.
    pub address: String,
    /// Up or down.
    pub status: PeerStatus,
    /// When it last changed status (ms since the Unix epoch).
    pub since_ms: u64,
    /// Open sessions with it (ractor_cluster may briefly hold two while it drops a duplicate),
    /// each with the socket address at its other end: for a session this node dialed, the
    /// address it dialed (a seed behind a proxy or a name reaches the peer at an address other
    /// than the one it advertises).
    #[serde(skip)]
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    sessions: Vec<(u64, String)>,
}

#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The peers table, updated by ractor_cluster's session events.
#[derive(Debug, Default, Clone)]
struct Peers(Arc<DashMap<String, Peer>>);

// Driven by ractor_cluster's events, so unused in a build without the cluster.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
impl Peers {
    fn session_up(&self, name: &str, address: &str, session: u64, socket: &str) {
        let mut peer = self.0.entry(name.to_owned()).or_insert_with(|| Peer {
            name: name.to_owned(),
            address: address.to_owned(),
            status: PeerStatus::Down,
            since_ms: 0,
            sessions: Vec::new(),
        });
        peer.address = address.to_owned();
        if !peer.sessions.iter().any(|(s, _)| *s == session) {
            peer.sessions.push((session, socket.to_owned()));
        }
        if peer.status != PeerStatus::Up {
            peer.status = PeerStatus::Up;
            peer.since_ms = unix_ms();
            tracing::info!(peer = name, %address, "cluster peer up");
        }
        drop(peer);
        self.bound();
    }

    /// A session closed; `false` when it had never authenticated.
    fn session_down(&self, name: &str, session: u64) -> bool {
        let Some(mut peer) = self.0.get_mut(name) else {
            return false;
        };
        let Some(at) = peer.sessions.iter().position(|(s, _)| *s == session) else {
            return false;
        };
        peer.sessions.swap_remove(at);
        if peer.sessions.is_empty() && peer.status == PeerStatus::Up {
            peer.status = PeerStatus::Down;
            peer.since_ms = unix_ms();
            tracing::warn!(peer = name, "cluster peer down");
        }
        true
    }

    /// Forgets the oldest down peers beyond [`PEERS_MAX`].
    fn bound(&self) {
        while self.0.len() > PEERS_MAX {
            let oldest = self
                .0
                .iter()
                .filter(|p| p.status == PeerStatus::Down)
                .min_by_key(|p| p.since_ms)
                .map(|p| p.key().clone());
            match oldest {
                Some(k) => {
                    self.0.remove(&k);
                }
                None => return,
            }
        }
    }

    /// Whether a peer is up that advertises `address`, or that has a session over one of
    /// `sockets` (the addresses `address` resolves to).
    fn is_up_at(&self, address: &str, sockets: &[String]) -> bool {
        self.0.iter().any(|p| {
            p.status == PeerStatus::Up
                && (p.address == address
                    || p.sessions
                        .iter()
                        .any(|(_, socket)| sockets.contains(socket)))
        })
    }

    fn list(&self) -> Vec<Peer> {
        let mut all: Vec<Peer> = self.0.iter().map(|p| p.clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// A node's figures, as its gateway reports them to the others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// The node's name.
    pub node: String,
    /// Actors running under its supervision tree.
    pub actors: usize,
    /// Agent instances active (in memory) on it.
    pub agents_active: usize,
    /// Agent instances working on a task now: its load.
    pub agents_busy: usize,
    /// Tasks other nodes forwarded to it, running now.
    #[serde(default)]
    pub forwarded_in_flight: usize,
    /// Its tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// True while it is being drained (it activates no agent).
    #[serde(default)]
    pub draining: bool,
    /// Memory shards it hosts (the load `least_loaded` namespaces go by).
    #[serde(default)]
    pub memory_shards: usize,
}

/// What a node serves to the others of its cluster.
#[derive(Clone)]
pub struct Served {
    /// This node's agents.
    pub system: aios_actors::agent::AgentSystem,
    /// This node's memory (the namespaces it serves).
    pub memory: Option<aios_actors::memory::MemoryStore>,
    /// This node's tools (other nodes run here the tools they cannot run).
    pub tools: Option<aios_actors::tools::ToolService>,
    /// This node's figures, computed when asked.
    pub stats: Arc<dyn Fn() -> NodeStats + Send + Sync>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").finish_non_exhaustive()
    }
}

/// An error starting membership.
#[derive(Debug, thiserror::Error)]
#[error("cluster: {0}")]
pub struct ClusterError(String);

/// This node's membership in a cluster (or none, when the cluster is off).
#[derive(Debug)]
pub struct Membership {
    name: String,
    advertised: Option<String>,
    tls: bool,
    peers: Peers,
    #[cfg(feature = "cluster")]
    server: std::sync::Mutex<Option<ractor::ActorRef<ractor_cluster::NodeServerMessage>>>,
    #[cfg(feature = "cluster")]
    gateway: std::sync::Mutex<Option<ractor::ActorRef<gateway::GatewayMsg>>>,
    dialer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Membership {
    /// A node outside any cluster.
    pub fn disabled(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            advertised: None,
            tls: false,
            peers: Peers::default(),
            #[cfg(feature = "cluster")]
            server: std::sync::Mutex::new(None),
            #[cfg(feature = "cluster")]
            gateway: std::sync::Mutex::new(None),
            dialer: std::sync::Mutex::new(None),
        }
    }

    /// Joins the cluster `config` describes as node `name`, serving `served` to the other
    /// nodes (its agent system then forwards to theirs), or returns
    /// [`Membership::disabled`] when the cluster is off.
    ///
    /// # Errors
    /// The listener cannot start (the port is taken, ...).
    pub async fn start(
        name: &str,
        config: &ClusterConfig,
        served: Served,
    ) -> Result<Self, ClusterError> {
        if !config.enabled() {
            return Ok(Self::disabled(name));
        }
        #[cfg(feature = "cluster")]
        {
            imp::start(name, config, served).await
        }
        #[cfg(not(feature = "cluster"))]
        {
            drop(served);
            Err(ClusterError(
                "this aiosd was built without cluster support".into(),
            ))
        }
    }

    /// Whether this node is in a cluster.
    pub fn enabled(&self) -> bool {
        self.advertised.is_some()
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address other nodes dial, when in a cluster.
    pub fn advertised(&self) -> Option<&str> {
        self.advertised.as_deref()
    }

    /// Whether the cluster port speaks TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The other nodes this one has met, by name.
    pub fn peers(&self) -> Vec<Peer> {
        self.peers.list()
    }

    /// The figures of every reachable peer (those answering within a second).
    pub async fn peer_stats(&self) -> Vec<NodeStats> {
        #[cfg(feature = "cluster")]
        if self.enabled() {
            return gateway::peer_stats().await;
        }
        Vec::new()
    }

    /// Leaves the cluster: stops dialing and closes every session. Idempotent.
    pub fn shutdown(&self) {
        fn take<T>(m: &std::sync::Mutex<Option<T>>) -> Option<T> {
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
        }
        if let Some(dialer) = take(&self.dialer) {
            dialer.abort();
        }
        #[cfg(feature = "cluster")]
        if let Some(gateway) = take(&self.gateway) {
            gateway.stop(Some("node shutting down".into()));
        }
        #[cfg(feature = "cluster")]
        if let Some(server) = take(&self.server) {
            server.stop(Some("node shutting down".into()));
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(feature = "cluster")]
mod imp {
    use std::time::Duration;

    use ractor::{Actor, ActorRef};
    use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
    use ractor_cluster::{
        IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage,
    };

    use super::{ClusterConfig, ClusterError, Membership, Peers, Served, gateway, relay};

    /// The first re-dial of a seed that is not connected, doubled on every failure.
    const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(250);
    /// The longest wait between two dials of a seed.
    const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(10);
    /// The addresses of a seed's name that count as that seed.
    const SEED_ADDRS_MAX: usize = 16;
    /// How long resolving a seed's name may take.
    const SEED_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

    struct Events(Peers);

    impl NodeEventSubscription for Events {
        fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}

        fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
            if let Some(peer) = &ses.peer_name {
                self.0.session_up(
                    &peer.name,
                    &peer.connection_string,
                    ses.node_id,
                    &ses.peer_addr.to_string(),
                );
            }
        }

        fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
            let authenticated = ses
                .peer_name
                .as_ref()
                .is_some_and(|peer| self.0.session_down(&peer.name, ses.node_id));
            if !authenticated {
                tracing::warn!(
                    peer_addr = %ses.peer_addr,
                    "cluster session closed before it authenticated (a different cluster secret?)"
                );
            }
        }
    }

    pub(super) async fn start(
        name: &str,
        config: &ClusterConfig,
        served: Served,
    ) -> Result<Membership, ClusterError> {
        let err = |e: &dyn std::fmt::Display| ClusterError(e.to_string());
        let listen = config
            .listen
            .ok_or_else(|| ClusterError("no listen address".into()))?;
        let advertised = config.advertised().unwrap_or_else(|| listen.to_string());
        let host = match &config.advertise {
            Some(host) => host.clone(),
            None => listen.ip().to_string(),
        };
        let secret = config
            .secret
            .clone()
            .ok_or_else(|| ClusterError("no secret".into()))?;
        let tls = config
            .tls()
            .map_err(|(key, why)| ClusterError(format!("{key}: {why}")))?;
        // ractor_cluster dials the nodes it learns of transitively over plain TCP, which a TLS
        // listener refuses: with TLS every node dials every seed itself (list them all).
        let (encryption, mode) = match &tls {
            Some(t) => (
                Some(IncomingEncryptionMode::Tls(t.acceptor.clone())),
                NodeConnectionMode::Isolated,
            ),
            None if config.dial_seeds_only => (None, NodeConnectionMode::Isolated),
            None => (None, NodeConnectionMode::Transitive),
        };
        let server = NodeServer::new(
            listen.port(),
            secret,
            name.to_owned(),
            host,
            encryption,
            Some(mode),
        )
        .with_listen_addr(listen.ip());
        // The gateway first, so that the first session already syncs its process groups.
        let system = served.system.clone();
        let memory = served.memory.clone();
        let tools = served.tools.clone();
        let relay = std::sync::Arc::new(relay::Relay::new(name));
        let gateway = gateway::start(name, served, relay.clone())
            .await
            .map_err(|e| err(&e))?;
        let route = std::sync::Arc::new(gateway::Route::new(name, config.tags.clone()));
        system.set_remote(route.clone());
        system.events().set_relay(relay.clone());
        tokio::spawn(rewatch(system.clone(), relay, gateway.clone()));
        if let Some(memory) = memory {
            memory.set_remote(route.clone());
        }
        if let Some(tools) = tools {
            tools.set_remote(route);
        }
        let (server, _) = match Actor::spawn(None, server, ()).await {
            Ok(s) => s,
            Err(e) => {
                gateway.stop(None);
                return Err(err(&e));
            }
        };
        let peers = Peers::default();
        server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "aios-membership".into(),
                subscription: Box::new(Events(peers.clone())),
            })
            .map_err(|e| err(&e))?;
        let seeds: Vec<String> = config
            .seeds
            .iter()
            .filter(|s| **s != advertised)
            .cloned()
            .collect();
        let connector = tls.map(|t| t.connector);
        let encrypted = connector.is_some();
        let dialer = tokio::spawn(dial_seeds(server.clone(), peers.clone(), seeds, connector));
        tracing::info!(node = name, %listen, %advertised, tls = encrypted, "cluster membership started");
        Ok(Membership {
            name: name.to_owned(),
            advertised: Some(advertised),
            tls: encrypted,
            peers,
            server: std::sync::Mutex::new(Some(server)),
            gateway: std::sync::Mutex::new(Some(gateway)),
            dialer: std::sync::Mutex::new(Some(dialer)),
        })
    }

    /// Tells the peers again which agents this node's subscribers listen to, and drops the
    /// peers' lapsed interest, every [`relay::WATCH_REFRESH`] until the gateway stops.
    async fn rewatch(
        system: aios_actors::agent::AgentSystem,
        relay: std::sync::Arc<relay::Relay>,
        gateway: ActorRef<gateway::GatewayMsg>,
    ) {
        use aios_actors::agent::EventRelay as _;
        loop {
            tokio::time::sleep(relay::WATCH_REFRESH).await;
            if matches!(
                gateway.get_status(),
                ractor::ActorStatus::Stopping | ractor::ActorStatus::Stopped
            ) {
                return;
            }
            system.events().prune();
            for agent in system.events().watched() {
                relay.watch(&agent);
            }
            relay.prune();
        }
    }

    /// Dials every seed this node has no session with, with a per-seed backoff, forever.
    async fn dial_seeds(
        server: ActorRef<NodeServerMessage>,
        peers: Peers,
        seeds: Vec<String>,
        tls: Option<tokio_rustls::TlsConnector>,
    ) {
        let mut next = vec![tokio::time::Instant::now(); seeds.len()];
        let mut backoff = vec![DIAL_BACKOFF_MIN; seeds.len()];
        let mut resolved: Vec<Vec<String>> = vec![Vec::new(); seeds.len()];
        loop {
            for (i, seed) in seeds.iter().enumerate() {
                // A seed that names a proxy, or a host by name, reaches a peer that advertises
                // another address: it is up too when a session runs over an address it
                // resolved to when last dialed (dialing it again would only make a duplicate
                // session, which ractor_cluster tears down, taking the peer's groups with it).
                if peers.is_up_at(seed, &resolved[i]) {
                    backoff[i] = DIAL_BACKOFF_MIN;
                    continue;
                }
                if tokio::time::Instant::now() < next[i] {
                    continue;
                }
                let lookup = tokio::net::lookup_host(seed.as_str());
                resolved[i] = match tokio::time::timeout(SEED_LOOKUP_TIMEOUT, lookup).await {
                    Ok(Ok(addrs)) => addrs.take(SEED_ADDRS_MAX).map(|a| a.to_string()).collect(),
                    _ => Vec::new(),
                };
                if peers.is_up_at(seed, &resolved[i]) {
                    continue;
                }
                match &tls {
                    None => {
                        if let Err(e) = ractor_cluster::client_connect(&server, seed.as_str()).await
                        {
                            tracing::debug!(%seed, error = %e, "cluster seed not reachable");
                        }
                    }
                    Some(connector) => match super::tls::server_name(seed) {
                        Ok(name) => {
                            let dial = ractor_cluster::client_connect_enc(
                                &server,
                                seed.as_str(),
                                connector.clone(),
                                name,
                            );
                            match dial.await {
                                Err(ractor_cluster::ClientConnectErr::Encryption(e)) => {
                                    tracing::warn!(%seed, error = %e, "TLS handshake with a cluster seed failed");
                                }
                                Err(e) => {
                                    tracing::debug!(%seed, error = %e, "cluster seed not reachable");
                                }
                                Ok(()) => {}
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%seed, error = %e, "a seed's host cannot be checked against a certificate")
                        }
                    },
                }
                next[i] = tokio::time::Instant::now() + backoff[i];
                backoff[i] = (backoff[i] * 2).min(DIAL_BACKOFF_MAX);
            }
            tokio::time::sleep(DIAL_BACKOFF_MIN).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_up_while_one_authenticated_session_is_open() {
        let peers = Peers::default();
        peers.session_up("b@h", "h:1", 1, "10.0.0.1:1");
        // A duplicate session while ractor_cluster settles which one stays.
        peers.session_up("b@h", "h:1", 2, "10.0.0.1:1");
        assert!(peers.is_up_at("h:1", &[]));
        // Dialed through a proxy (or a name): up at the address the seed resolves to.
        assert!(peers.is_up_at("proxy:9", &["10.0.0.1:1".into()]));
        assert!(!peers.is_up_at("proxy:9", &["10.0.0.2:1".into()]));
        assert!(peers.session_down("b@h", 1));
        assert_eq!(peers.list()[0].status, PeerStatus::Up);
        assert!(peers.session_down("b@h", 2));
        assert_eq!(peers.list()[0].status, PeerStatus::Down);
        assert!(!peers.is_up_at("h:1", &[]));
        assert!(!peers.is_up_at("proxy:9", &["10.0.0.1:1".into()]));
        // A session never seen authenticated.
        assert!(!peers.session_down("b@h", 3));
        assert!(!peers.session_down("x@h", 1));
    }

    #[test]
    fn the_table_forgets_the_oldest_down_peers_beyond_its_bound() {
        let peers = Peers::default();
        for i in 0..PEERS_MAX as u64 {
            let name = format!("n{i}");
            peers.session_up(&name, "h:1", i, "h:1");
            peers.session_down(&name, i);
        }
        peers.session_up("last", "h:2", 0, "h:2");
        assert_eq!(peers.0.len(), PEERS_MAX);
        assert!(peers.0.contains_key("last"));
    }

    #[test]
    fn the_section_is_validated_and_the_secret_never_printed() {
        let off = ClusterConfig::default();
        assert!(!off.enabled());
        assert_eq!(off.validate(), Ok(()));
        let seeds_only = ClusterConfig {
            seeds: vec!["h:1".into()],
            ..ClusterConfig::default()
        };
        assert_eq!(seeds_only.validate().unwrap_err().0, "cluster.listen");
        let on = ClusterConfig {
            listen: Some("127.0.0.1:7700".parse().unwrap()),
            secret: Some("0123456789abcdef".into()),
            seeds: vec!["aiosd-0.aiosd:7700".into()],
            advertise: Some("aiosd-1.aiosd".into()),
            tags: vec!["gpu".into(), "eu-west".into()],
            ..ClusterConfig::default()
        };
        assert!(!format!("{on:?}").contains("0123456789abcdef"));
        assert_eq!(on.advertised().as_deref(), Some("aiosd-1.aiosd:7700"));
        if cfg!(feature = "cluster") {
            assert_eq!(on.validate(), Ok(()));
            for (bad, key) in [
                (
                    ClusterConfig {
                        secret: None,
                        ..on.clone()
                    },
                    "cluster.secret",
                ),
                (
                    ClusterConfig {
                        secret: Some("short".into()),
                        ..on.clone()
                    },
                    "cluster.secret",
                ),
                (
                    ClusterConfig {
                        seeds: vec!["nohost".into()],
                        ..on.clone()
                    },
                    "cluster.seeds",
                ),
                (
                    ClusterConfig {
                        advertise: Some("a b".into()),
                        ..on.clone()
                    },
                    "cluster.advertise",
                ),
                (
                    ClusterConfig {
                        tags: vec!["GPU".into()],
                        ..on.clone()
                    },
                    "cluster.tags",
                ),
                (
                    ClusterConfig {
                        tls_cert: Some("node.pem".into()),
                        ..on.clone()
                    },
                    "cluster.tls_cert",
                ),
                (
                    ClusterConfig {
                        tls_cert: Some("/nonexistent/node.pem".into()),
                        tls_key: Some("/nonexistent/node.key".into()),
                        tls_ca: Some("/nonexistent/ca.pem".into()),
                        ..on.clone()
                    },
                    "cluster.tls_cert",
                ),
                (
                    ClusterConfig {
                        listen: Some("127.0.0.1:0".parse().unwrap()),
                        ..on.clone()
                    },
                    "cluster.listen",
                ),
            ] {
                assert_eq!(bad.validate().unwrap_err().0, key, "{bad:?}");
            }
        } else {
            let (key, problem) = on.validate().unwrap_err();
            assert_eq!(key, "cluster.listen");
            assert!(problem.contains("--features cluster"), "{problem}");
        }
    }
}
