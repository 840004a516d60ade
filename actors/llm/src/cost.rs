//! Cost tracking: tokens in and out of every LLM request × a price per model, aggregated
//! per agent, session, run, tenant and model, and persisted.
//!
//! Money is counted in integer **nanodollars** (10⁻⁹ USD) so sums are exact: a price of
//! $2.50 per million tokens is 2,500 nanodollars per token.
//!
//! Totals live in memory and are written by one writer task that coalesces updates (the
//! latest value of every changed scope per batch, one group commit). [`CostLedger::record`]
//! returns once the totals that include the request are durable, so a cost that was
//! reported to anyone survives `kill -9`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aios_supervisor::snapshot::{Durability, SnapshotError};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use aios_core::keyspace;

use crate::Usage;
use aios_core::records::Records;

/// Key prefix of cost records in the snapshot store.
pub const COST_KEY_PREFIX: &str = aios_core::keyspace::COST;
/// The most cost scopes loaded at start and listed at once.
pub const COST_SCOPES_MAX: usize = 1_000_000;
/// Nanodollars per dollar.
pub const NANOS_PER_USD: u64 = 1_000_000_000;

/// A model's price, in USD per million tokens (as providers publish them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// USD per million prompt tokens.
    pub input_usd_per_mtok: f64,
    /// USD per million generated tokens.
    pub output_usd_per_mtok: f64,
}

impl Price {
    /// Checks that both prices are finite and not negative.
    ///
    /// # Errors
    /// Names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("input_usd_per_mtok", self.input_usd_per_mtok),
            ("output_usd_per_mtok", self.output_usd_per_mtok),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!(
                    "price.{name} must be a finite number >= 0, got {v}"
                ));
            }
        }
        Ok(())
    }

    /// Nanodollars per token, exact to a thousandth of a dollar per million tokens.
    fn nanos_per_token(usd_per_mtok: f64) -> u64 {
        (usd_per_mtok * 1000.0).round() as u64
    }

    /// The cost of `usage` in nanodollars.
    pub fn cost_nanos(&self, usage: &Usage) -> u64 {
        usage
            .input_tokens
            .saturating_mul(Self::nanos_per_token(self.input_usd_per_mtok))
            .saturating_add(
                usage
                    .output_tokens
                    .saturating_mul(Self::nanos_per_token(self.output_usd_per_mtok)),
            )
    }
}

/// What a cost total is aggregated over.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CostScope {
    /// One agent (by name).
    Agent(String),
    /// One session.
    Session(String),
    /// One orchestration run.
    Run(String),
    /// One tenant.
    Tenant(String),
    /// One `provider/model`.
    Model(String),
}

impl CostScope {
    fn kind(&self) -> &'static str {
        match self {
            Self::Agent(_) => "agent",
            Self::Session(_) => "session",
            Self::Run(_) => "run",
            Self::Tenant(_) => "tenant",
            Self::Model(_) => "model",
        }
    }

    fn id(&self) -> &str {
        match self {
            Self::Agent(s) | Self::Session(s) | Self::Run(s) | Self::Tenant(s) | Self::Model(s) => {
                s
            }
        }
    }

    fn key(&self) -> String {
        format!("{COST_KEY_PREFIX}{}/{}", self.kind(), self.id())
    }

    /// The key of this node's share of the totals: `cost/<kind>/<id>` on a store of its own,
    /// `cost@<node>/<kind>/<id>` on a store that nodes share.
    fn key_of(&self, node: Option<&str>) -> String {
        match node {
            None => self.key(),
            Some(node) => format!(
                "{}{}/{}",
                keyspace::per_node(keyspace::COST_PER_NODE, node),
                self.kind(),
                self.id()
            ),
        }
    }

    /// Parses `cost/<kind>/<id>` or `cost@<node>/<kind>/<id>` into the node (if any) and scope.
    fn from_any_key(key: &str) -> Option<(Option<&str>, Self)> {
        match key.strip_prefix(keyspace::COST_PER_NODE) {
            Some(rest) => {
                let (node, rest) = rest.split_once('/')?;
                Some((
                    Some(node),
                    Self::from_key(&format!("{COST_KEY_PREFIX}{rest}"))?,
                ))
            }
            None => Some((None, Self::from_key(key)?)),
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        let rest = key.strip_prefix(COST_KEY_PREFIX)?;
        let (kind, id) = rest.split_once('/')?;
        let id = id.to_string();
        Some(match kind {
            "agent" => Self::Agent(id),
            "session" => Self::Session(id),
            "run" => Self::Run(id),
            "tenant" => Self::Tenant(id),
            "model" => Self::Model(id),
            _ => return None,
        })
    }
}

/// Aggregated usage and cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostTotals {
    /// Requests answered by a provider (cache hits are not counted here).
    pub requests: u64,
    /// Requests answered from the response cache (cost nothing).
    pub cached_requests: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Cost in nanodollars.
    pub cost_nanos: u64,
}

impl CostTotals {
    /// The cost in dollars (for display; sums use `cost_nanos`).
    pub fn cost_usd(&self) -> f64 {
        self.cost_nanos as f64 / NANOS_PER_USD as f64
    }

    fn merge(&mut self, other: &CostTotals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.cached_requests = self.cached_requests.saturating_add(other.cached_requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(other.cost_nanos);
    }

    fn add(&mut self, usage: &Usage, cost_nanos: u64, cached: bool) {
        if cached {
            self.cached_requests += 1;
            return;
        }
        self.requests += 1;
        self.input_tokens = self.input_tokens.saturating_add(usage.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(usage.output_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(cost_nanos);
    }
}

/// Who a request is charged to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Charge {
    /// The agent's name.
    pub agent: String,
    /// The tenant.
    pub tenant: String,
    /// The session, if any.
    pub session: Option<String>,
    /// The run, if any.
    pub run: Option<String>,
    /// The `provider/model` that answered.
    pub model: String,
}

impl Charge {
    fn scopes(&self) -> Vec<CostScope> {
        let mut s = vec![
            CostScope::Agent(self.agent.clone()),
            CostScope::Tenant(self.tenant.clone()),
            CostScope::Model(self.model.clone()),
        ];
        s.extend(self.session.clone().map(CostScope::Session));
        s.extend(self.run.clone().map(CostScope::Run));
        s
    }
}

/// The error of a cost update.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CostError {
    /// The store failed; the totals in memory include the request but may not be durable.
    #[error("cost totals could not be persisted: {0}")]
    Store(#[from] SnapshotError),
    /// The ledger's writer is gone (the node is shutting down).
    #[error("the cost ledger is closed")]
    Closed,
}

struct Shared {
    records: Records,
    /// This node's name on a store that nodes share (its totals are its own share there).
    node: Option<String>,
    /// This node's totals (all of them on a store of its own).
    totals: DashMap<CostScope, CostTotals>,
    /// The other nodes' shares, summed, as last read ([`CostLedger::refresh`]).
    others: DashMap<CostScope, CostTotals>,
    dirty: Mutex<BTreeSet<CostScope>>,
    /// Wakes the writer; also signalled when the ledger is dropped so the writer ends.
    wake: Arc<Notify>,
    /// Batches begun (an update marked dirty before batch n+1 began is durable when
    /// `flushed` reaches n+1).
    begun: Mutex<u64>,
    /// Batches written to the store (buffered).
    written: watch::Sender<BatchOutcome>,
    /// A caller waits for durability: the next batch ends with a flush.
    durable_wanted: AtomicBool,
    flushed: watch::Sender<BatchOutcome>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// Cost totals per scope, persisted. Cheap to clone.
#[derive(Clone)]
pub struct CostLedger {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CostLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostLedger")
            .field("scopes", &self.shared.totals.len())
            .finish()
    }
}

impl CostLedger {
    /// Loads the persisted totals and starts the writer task (on the current tokio runtime).
    ///
    /// # Errors
    /// A store failure or a corrupt record (named by key).
    pub async fn open(records: Records) -> Result<Self, SnapshotError> {
        Self::open_scoped(records, None).await
    }

    /// Opens the ledger of node `node` on a store that several nodes share: this node writes
    /// its own share of every total (`cost@<node>/…`), never another node's, and totals read
    /// as the sum of every node's share, the others' as of the last [`CostLedger::refresh`].
    /// `None` is [`CostLedger::open`].
    ///
    /// # Errors
    /// A store failure or a corrupt record (named by key).
    pub async fn open_scoped(records: Records, node: Option<&str>) -> Result<Self, SnapshotError> {
        let totals = DashMap::new();
        let others = DashMap::new();
        match node {
            None => {
                for key in records.keys(COST_KEY_PREFIX, COST_SCOPES_MAX).await? {
                    let Some(scope) = CostScope::from_key(&key) else {
                        continue;
                    };
                    if let Some(t) = records.get::<CostTotals>(&key).await? {
                        totals.insert(scope, t);
                    }
                }
            }
            Some(node) => {
                let own = keyspace::per_node(keyspace::COST_PER_NODE, node);
                for key in records.keys(&own, COST_SCOPES_MAX).await? {
                    if let Some((_, scope)) = CostScope::from_any_key(&key)
                        && let Some(t) = records.get::<CostTotals>(&key).await?
                    {
                        totals.insert(scope, t);
                    }
                }
                load_others(&records, node, &others).await?;
            }
        }
        let (flushed, _) = watch::channel((0, Ok(())));
        let (written, _) = watch::channel((0, Ok(())));
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            records,
            node: node.map(str::to_owned),
            totals,
            others,
            dirty: Mutex::new(BTreeSet::new()),
            wake: wake.clone(),
            begun: Mutex::new(0),
            written,
            durable_wanted: AtomicBool::new(false),
            flushed,
        });
        // The writer holds the ledger weakly: dropping the last clone releases the store.
        tokio::spawn(writer(Arc::downgrade(&shared), wake));
        Ok(Self { shared })
    }

    /// Adds a request's usage and cost to every scope of `charge` and waits until the new
    /// totals are in the store: on disk with [`Durability::Durable`]; with
    /// [`Durability::Buffered`], written and made durable by the next durable write of anyone
    /// on the node (an agent's snapshot of the same turn) or the store's periodic flush.
    ///
    /// # Errors
    /// [`CostError::Store`] if the write failed, [`CostError::Closed`] during shutdown.
    pub async fn record(
        &self,
        charge: &Charge,
        usage: &Usage,
        cost_nanos: u64,
        cached: bool,
        durability: Durability,
    ) -> Result<(), CostError> {
        let scopes = charge.scopes();
        let target = {
            let mut dirty = lock(&self.shared.dirty);
            for scope in scopes {
                self.shared
                    .totals
                    .entry(scope.clone())
                    .or_default()
                    .add(usage, cost_nanos, cached);
                dirty.insert(scope);
            }
            // Set under the `dirty` lock, where the writer takes it with the batch it belongs to.
            if durability == Durability::Durable {
                self.shared.durable_wanted.store(true, Ordering::Release);
            }
            *lock(&self.shared.begun) + 1
        };
        self.shared.wake.notify_one();
        let mut rx = match durability {
            Durability::Durable => self.shared.flushed.subscribe(),
            Durability::Buffered => self.shared.written.subscribe(),
        };
        loop {
            {
                let (n, result) = &*rx.borrow_and_update();
                // Only the outcome of our batch (or a later one, which rewrote our scopes)
                // answers us; an older failure does not.
                if *n >= target {
                    return result.clone().map_err(|reason| {
                        CostError::Store(SnapshotError::Store {
                            key: COST_KEY_PREFIX.into(),
                            source: aios_supervisor::snapshot::StoreError::Io(reason),
                        })
                    });
                }
            }
            if rx.changed().await.is_err() {
                return Err(CostError::Closed);
            }
        }
    }

    /// Reads the other nodes' shares of the totals again (on a store that nodes share; a
    /// no-op otherwise).
    ///
    /// # Errors
    /// A store failure; the previous figures are then kept.
    pub async fn refresh(&self) -> Result<(), SnapshotError> {
        let Some(node) = &self.shared.node else {
            return Ok(());
        };
        let fresh = DashMap::new();
        load_others(&self.shared.records, node, &fresh).await?;
        self.shared
            .others
            .retain(|scope, _| fresh.contains_key(scope));
        for (scope, t) in fresh {
            self.shared.others.insert(scope, t);
        }
        Ok(())
    }

    /// The totals of one scope (zero when nothing was charged to it); on a shared store, the
    /// sum of every node's share.
    pub fn totals(&self, scope: &CostScope) -> CostTotals {
        let mut t = self
            .shared
            .totals
            .get(scope)
            .map(|t| *t)
            .unwrap_or_default();
        if let Some(other) = self.shared.others.get(scope) {
            t.merge(&other);
        }
        t
    }

    /// Every scope of the kind of `example` with its totals, sorted by scope (at most
    /// [`COST_SCOPES_MAX`]).
    pub fn list(&self, kind: &CostScope) -> Vec<(CostScope, CostTotals)> {
        let mut sums: BTreeMap<CostScope, CostTotals> = BTreeMap::new();
        for map in [&self.shared.totals, &self.shared.others] {
            for e in map.iter().filter(|e| e.key().kind() == kind.kind()) {
                sums.entry(e.key().clone()).or_default().merge(e.value());
            }
        }
        sums.into_iter().take(COST_SCOPES_MAX).collect()
    }
}

/// Sums into `into` every node's share of the totals except `node`'s, and the totals a single
/// node wrote before the store was shared (`cost/…`).
async fn load_others(
    records: &Records,
    node: &str,
    into: &DashMap<CostScope, CostTotals>,
) -> Result<(), SnapshotError> {
    for prefix in [keyspace::COST_PER_NODE, COST_KEY_PREFIX] {
        for key in records.keys(prefix, COST_SCOPES_MAX * 16).await? {
            let Some((owner, scope)) = CostScope::from_any_key(&key) else {
                continue;
            };
            if owner == Some(node) {
                continue;
            }
            if let Some(t) = records.get::<CostTotals>(&key).await? {
                into.entry(scope).or_default().merge(&t);
            }
        }
    }
    Ok(())
}

/// A batch number and whether it was persisted.
type BatchOutcome = (u64, Result<(), String>);

/// The writer's pause after a failed batch.
const WRITE_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(200);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data inconsistent (plain inserts).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn writer(shared: std::sync::Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Some(s) = shared.upgrade() else { return };
        let (batch, flush): (Vec<(CostScope, CostTotals)>, bool) = {
            let mut dirty = lock(&s.dirty);
            *lock(&s.begun) += 1;
            let flush = s.durable_wanted.swap(false, Ordering::AcqRel);
            let batch = std::mem::take(&mut *dirty)
                .into_iter()
                .map(|scope| {
                    let t = s.totals.get(&scope).map(|t| *t).unwrap_or_default();
                    (scope, t)
                })
                .collect();
            (batch, flush)
        };
        let batch_no = *lock(&s.begun);
        if batch.is_empty() {
            let _previous = s.written.send_replace((batch_no, Ok(())));
            let _previous = s.flushed.send_replace((batch_no, Ok(())));
            drop(s);
            // Wait for work without keeping the ledger alive.
            notified.await;
            continue;
        }
        // Buffered puts (one statement in PostgreSQL), then one durable flush: a single
        // group commit for the batch.
        let mut result: Result<(), String> = s
            .records
            .put_many(
                batch
                    .iter()
                    .map(|(scope, totals)| (scope.key_of(s.node.as_deref()), totals)),
                Durability::Buffered,
            )
            .await
            .map_err(|e| e.to_string());
        let _previous = s.written.send_replace((batch_no, result.clone()));
        // Without a durable waiter the batch is left to the next durable write on the node
        // (an agent's snapshot of the same turn) or the store's periodic flush.
        if result.is_ok()
            && flush
            && let Err(e) = s.records.snapshots().flush().await
        {
            result = Err(e.to_string());
        }
        let failed = result.is_err();
        if let Err(e) = &result {
            tracing::error!(error = %e, "cost totals could not be persisted; retrying");
            // Put the scopes (and the wish for a flush) back so the next batch retries them.
            let mut dirty = lock(&s.dirty);
            dirty.extend(batch.into_iter().map(|(scope, _)| scope));
            if flush {
                s.durable_wanted.store(true, Ordering::Release);
            }
        }
        let _previous = s.flushed.send_replace((batch_no, result));
        if failed {
            drop(s);
            // A failing store is not retried in a tight loop.
            tokio::time::sleep(WRITE_RETRY_BACKOFF).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aios_supervisor::snapshot::{SledStore, Snapshots};

    #[test]
    fn prices_are_exact_in_nanodollars() {
        let p = Price {
            input_usd_per_mtok: 2.5,
            output_usd_per_mtok: 10.0,
        };
        let u = Usage {
            input_tokens: 1000,
            output_tokens: 10,
            reported: true,
        };
        assert_eq!(p.cost_nanos(&u), 1000 * 2500 + 10 * 10_000);
        assert!(
            Price {
                input_usd_per_mtok: -1.0,
                output_usd_per_mtok: 0.0
            }
            .validate()
            .is_err()
        );
    }

    #[tokio::test]
    async fn nodes_sharing_a_store_write_their_own_shares_and_read_the_sum() {
        let records = Records::new(Snapshots::new(Arc::new(
            SledStore::temporary().expect("store"),
        )));
        let a = CostLedger::open_scoped(records.clone(), Some("a"))
            .await
            .expect("a");
        let b = CostLedger::open_scoped(records.clone(), Some("b"))
            .await
            .expect("b");
        let charge = Charge {
            agent: "x".into(),
            tenant: "t".into(),
            model: "p/m".into(),
            ..Charge::default()
        };
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 1,
            reported: true,
        };
        // Interleaved, as two live nodes would record.
        for _ in 0..3 {
            a.record(&charge, &usage, 100, false, Durability::Durable)
                .await
                .expect("a records");
            b.record(&charge, &usage, 100, false, Durability::Durable)
                .await
                .expect("b records");
        }
        let tenant = CostScope::Tenant("t".into());
        // Each sees its own share at once, the other's after a refresh: nothing is lost.
        assert_eq!(a.totals(&tenant).requests, 3);
        a.refresh().await.expect("refresh");
        b.refresh().await.expect("refresh");
        for ledger in [&a, &b] {
            let t = ledger.totals(&tenant);
            assert_eq!((t.requests, t.input_tokens, t.cost_nanos), (6, 60, 600));
            assert_eq!(ledger.list(&tenant), vec![(tenant.clone(), t)]);
        }
        // Reopened (a restarted node), a keeps its share and reads b's.
        let a = CostLedger::open_scoped(records, Some("a"))
            .await
            .expect("reopen");
        assert_eq!(a.totals(&tenant).requests, 6);
    }

    #[tokio::test]
    async fn totals_aggregate_per_scope_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || async {
            let store = SledStore::open(dir.path(), &Default::default()).expect("open");
            CostLedger::open(Records::new(Snapshots::new(Arc::new(store))))
                .await
                .expect("ledger")
        };
        let charge = Charge {
            agent: "a".into(),
            tenant: "t".into(),
            session: None,
            run: Some("r1".into()),
            model: "p/m".into(),
        };
        let usage = Usage {
            input_tokens: 3,
            output_tokens: 2,
            reported: true,
        };
        {
            let ledger = open().await;
            let mut tasks = Vec::new();
            for _ in 0..50 {
                let l = ledger.clone();
                let c = charge.clone();
                tasks.push(tokio::spawn(async move {
                    l.record(&c, &usage, 7, false, Durability::Durable).await
                }));
            }
            for t in tasks {
                t.await.expect("join").expect("record");
            }
            ledger
                .record(&charge, &usage, 0, true, Durability::Durable)
                .await
                .expect("cached");
            let t = ledger.totals(&CostScope::Run("r1".into()));
            assert_eq!(
                (t.requests, t.cached_requests, t.input_tokens, t.cost_nanos),
                (50, 1, 150, 350)
            );
        }
        let ledger = open().await;
        let t = ledger.totals(&CostScope::Agent("a".into()));
        assert_eq!((t.requests, t.output_tokens, t.cost_nanos), (50, 100, 350));
        assert_eq!(ledger.list(&CostScope::Tenant(String::new())).len(), 1);
    }
}
