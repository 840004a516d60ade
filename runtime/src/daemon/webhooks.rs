//! Webhooks: per-tenant subscriptions to event types, deliveries signed with HMAC-SHA256 over
//! `<timestamp>.<body>` (`x-aios-signature: sha256=<hex>`, `x-aios-timestamp`), kept in a
//! persisted queue (`whq/<seq>`) that survives restarts, retried with exponential backoff and
//! jitter, then moved to a dead-letter list (`whdead/<seq>`) from which they can be redelivered.
//!
//! Events: `agent.created`, `agent.deleted`, `key.created`, `key.rotated`, `key.revoked`,
//! `quota.exceeded`, `run.completed` (per tenant) and `actor.restarted` (node-wide: the
//! operator tenant's subscriptions). `*` subscribes to all.

use aios_core::keyspace;
use std::sync::Arc;
use std::time::Duration;

use aios_actors::records::Records;
use aios_supervisor::snapshot::Durability;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

/// Event types a subscription may name.
pub const EVENT_TYPES: &[&str] = &[
    "agent.created",
    "agent.deleted",
    "key.created",
    "key.rotated",
    "key.revoked",
    "quota.exceeded",
    "actor.restarted",
    "run.completed",
];
/// Subscriptions at most.
pub const SUBSCRIPTIONS_MAX: usize = 1000;
/// Queued deliveries at most; beyond, new events are dropped (counted and logged).
pub const QUEUE_MAX: u64 = 100_000;
/// Dead letters kept at most (oldest removed).
pub const DEAD_MAX: u64 = 10_000;
/// How long one delivery attempt may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

const SUB_PREFIX: &str = keyspace::WEBHOOK_SUBSCRIPTION;
const QUEUE_PREFIX: &str = keyspace::WEBHOOK_QUEUE;
const DEAD_PREFIX: &str = keyspace::WEBHOOK_DEAD;
const SEQ_KEY: &str = keyspace::WEBHOOK_SEQ;

/// Where a node's queue lives: `whq/`, `whdead/`, `whseq`, or on a store that the nodes of a
/// cluster share, `whq@<node>/`, `whdead@<node>/`, `whseq@<node>`: each node delivers only what
/// it queued, so no delivery is taken by two nodes and sequence numbers do not collide.
#[derive(Debug)]
struct QueueKeys {
    queue: String,
    dead: String,
    seq: String,
    /// The node's name on a shared store (prefixes the delivery id).
    node: Option<String>,
}

impl QueueKeys {
    fn new(shared_node: Option<&str>) -> Self {
        match shared_node {
            None => Self {
                queue: QUEUE_PREFIX.into(),
                dead: DEAD_PREFIX.into(),
                seq: SEQ_KEY.into(),
                node: None,
            },
            Some(n) => Self {
                queue: keyspace::per_node(keyspace::WEBHOOK_QUEUE_PER_NODE, n),
                dead: keyspace::per_node(keyspace::WEBHOOK_DEAD_PER_NODE, n),
                seq: format!("{}{n}", keyspace::WEBHOOK_SEQ_PER_NODE),
                node: Some(n.to_string()),
            },
        }
    }
}

/// Delivery policy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Attempts before a delivery goes to the dead letters.
    pub attempts_max: u32,
    /// The first retry's delay; doubled each time (with jitter), capped at `backoff_max`.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// The longest delay between attempts.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for WebhookConfig {
    /// 8 attempts, 1 s doubling up to 5 min.
    fn default() -> Self {
        Self {
            attempts_max: 8,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// A subscription (its secret is returned once, at creation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// Where deliveries go.
    pub url: String,
    /// The event types (or `*`).
    pub events: Vec<String>,
    /// The HMAC key.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub secret: String,
    /// Unix ms.
    pub created_ms: u64,
}

/// A queued or dead delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Its sequence number.
    pub seq: u64,
    /// The subscription.
    pub subscription: String,
    /// The tenant.
    pub tenant: String,
    /// The event type.
    pub event: String,
    /// The JSON body, as sent.
    pub body: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before this (unix ms).
    pub next_at_ms: u64,
    /// The last failure.
    pub last_error: String,
}

/// Delivery attempts remembered for the deliveries view (in memory, since the start).
pub const ATTEMPTS_KEPT: usize = 500;

/// One delivery attempt, as the deliveries view shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// Unix ms.
    pub at_ms: u64,
    /// The delivery's sequence number.
    pub seq: u64,
    /// The subscription.
    pub subscription: String,
    /// The tenant.
    #[serde(skip)]
    pub tenant: String,
    /// The event type.
    pub event: String,
    /// Which attempt this was (1 for the first).
    pub attempt: u32,
    /// `delivered`, `retrying` or `dead`.
    pub outcome: &'static str,
    /// Why it failed, if it did.
    pub error: String,
    /// How long the request took, ms.
    pub took_ms: u64,
}

/// Why a webhook operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// Not found (in the tenant).
    #[error("no {0}")]
    NotFound(String),
    /// The store failed.
    #[error("webhook store: {0}")]
    Store(String),
}

fn store_err(e: impl std::fmt::Display) -> WebhookError {
    WebhookError::Store(e.to_string())
}

/// Signs `<timestamp>.<body>` with `secret`: the value of `x-aios-signature`.
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The webhooks of a daemon. Cheap to clone. Its `Debug` shows counts only (the
/// subscriptions hold signing secrets).
#[derive(Clone)]
pub struct Webhooks {
    records: Records,
    config: WebhookConfig,
    subs: Arc<DashMap<String, Subscription>>,
    /// The next sequence number and the number queued.
    seq: Arc<tokio::sync::Mutex<(u64, u64)>>,
    /// When each queued delivery is due: `(next_at_ms, seq)`, so the deliverer takes the due
    /// ones without reading the whole queue.
    schedule: Arc<std::sync::Mutex<std::collections::BTreeSet<(u64, u64)>>>,
    wake: Arc<tokio::sync::Notify>,
    http: reqwest::Client,
    /// For the subscriptions of tenants other than the operator's: connects only where the
    /// outbound guard allows.
    guarded: reqwest::Client,
    guard: aios_actors::outbound::OutboundGuard,
    /// The last [`ATTEMPTS_KEPT`] attempts, oldest first.
    attempts: Arc<std::sync::Mutex<std::collections::VecDeque<Attempt>>>,
    keys: Arc<QueueKeys>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("subscriptions", &self.subs.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    aios_actors::protocol::unix_ms()
}

async fn read_subscriptions(
    records: &Records,
) -> Result<std::collections::HashMap<String, Subscription>, WebhookError> {
    let mut subs = std::collections::HashMap::new();
    for key in records
        .keys(SUB_PREFIX, SUBSCRIPTIONS_MAX)
        .await
        .map_err(store_err)?
    {
        if let Some(s) = records.get::<Subscription>(&key).await.map_err(store_err)? {
            subs.insert(s.id.clone(), s);
        }
    }
    Ok(subs)
}

impl Webhooks {
    /// Loads subscriptions and the queue's position. `shared_node` is this node's name when
    /// the store is shared with other nodes (each node then has its own queue).
    ///
    /// # Errors
    /// Store failures.
    pub async fn open(
        records: Records,
        config: WebhookConfig,
        shared_node: Option<&str>,
        guard: aios_actors::outbound::OutboundGuard,
    ) -> Result<Self, WebhookError> {
        let keys = QueueKeys::new(shared_node);
        let subs = DashMap::new();
        for (id, s) in read_subscriptions(&records).await? {
            subs.insert(id, s);
        }
        let next: u64 = records
            .get(&keys.seq)
            .await
            .map_err(store_err)?
            .unwrap_or(1);
        // One read of the queue at start builds the schedule.
        let mut schedule = std::collections::BTreeSet::new();
        for key in records
            .keys(&keys.queue, QUEUE_MAX as usize)
            .await
            .map_err(store_err)?
        {
            if let Some(d) = records.get::<Delivery>(&key).await.map_err(store_err)? {
                schedule.insert((d.next_at_ms, d.seq));
            }
        }
        let queued = schedule.len() as u64;
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(store_err)?;
        let guarded = guard
            .resolving_client(
                reqwest::Client::builder()
                    .timeout(DELIVERY_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none()),
            )
            .map_err(store_err)?;
        Ok(Self {
            records,
            config,
            subs: Arc::new(subs),
            seq: Arc::new(tokio::sync::Mutex::new((next, queued))),
            schedule: Arc::new(std::sync::Mutex::new(schedule)),
            wake: Arc::new(tokio::sync::Notify::new()),
            http,
            guarded,
            guard,
            attempts: Arc::default(),
            keys: Arc::new(keys),
        })
    }

    /// Reads the subscriptions again, for a store other nodes write too: one created or
    /// deleted on another node takes effect here.
    ///
    /// # Errors
    /// Store failures; the subscriptions in memory are then kept.
    pub async fn reload_subscriptions(&self) -> Result<(), WebhookError> {
        let fresh = read_subscriptions(&self.records).await?;
        self.subs.retain(|id, _| fresh.contains_key(id));
        for (id, s) in fresh {
            self.subs.insert(id, s);
        }
        Ok(())
    }

    /// The `x-aios-delivery` id: the sequence number, prefixed by the node on a shared store.
    fn delivery_id(&self, seq: u64) -> String {
        match &self.keys.node {
            Some(node) => format!("{node}-{seq}"),
            None => seq.to_string(),
        }
    }

    /// Subscribes `url` to `events` for `tenant`; the result carries the signing secret.
    ///
    /// # Errors
    /// A bad URL or event type, too many subscriptions, a store failure.
    pub async fn subscribe(
        &self,
        tenant: &str,
        url: &str,
        events: Vec<String>,
    ) -> Result<Subscription, WebhookError> {
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            _ => {
                return Err(WebhookError::Invalid(format!(
                    "url {url:?} must be http(s)://host/…"
                )));
            }
        };
        // Another tenant's destination passes the outbound guard now, and again at every
        // delivery (its name may resolve elsewhere by then); the operator's is trusted.
        if tenant != super::keys::OPERATOR_TENANT {
            self.guard
                .check_destination(&parsed)
                .await
                .map_err(|e| WebhookError::Invalid(format!("url: {e}")))?;
        }
        if events.is_empty() {
            return Err(WebhookError::Invalid("events: name at least one".into()));
        }
        if let Some(bad) = events
            .iter()
            .find(|e| e.as_str() != "*" && !EVENT_TYPES.contains(&e.as_str()))
        {
            return Err(WebhookError::Invalid(format!(
                "events: {bad:?} is not one of {EVENT_TYPES:?} or \"*\""
            )));
        }
        if self.subs.len() >= SUBSCRIPTIONS_MAX {
            return Err(WebhookError::Invalid(format!(
                "at most {SUBSCRIPTIONS_MAX} subscriptions"
            )));
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(store_err)?;
        let sub = Subscription {
            id: uuid::Uuid::new_v4().simple().to_string(),
            tenant: tenant.to_string(),
            url: url.to_string(),
            events,
            secret: secret.iter().map(|b| format!("{b:02x}")).collect(),
            created_ms: now_ms(),
        };
        self.records
            .put(
                &format!("{SUB_PREFIX}{}", sub.id),
                &sub,
                Durability::Durable,
            )
            .await
            .map_err(store_err)?;
        self.subs.insert(sub.id.clone(), sub.clone());
        Ok(sub)
    }

    /// The tenant's subscriptions (without secrets).
    pub fn list(&self, tenant: &str) -> Vec<Subscription> {
        let mut out: Vec<Subscription> = self
            .subs
            .iter()
            .filter(|s| s.tenant == tenant)
            .map(|s| Subscription {
                secret: String::new(),
                ..s.clone()
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Removes a subscription of the tenant.
    ///
    /// # Errors
    /// Not found, a store failure.
    pub async fn unsubscribe(&self, tenant: &str, id: &str) -> Result<(), WebhookError> {
        if self.subs.get(id).is_none_or(|s| s.tenant != tenant) {
            return Err(WebhookError::NotFound(format!("subscription {id}")));
        }
        self.records
            .delete(&format!("{SUB_PREFIX}{id}"))
            .await
            .map_err(store_err)?;
        self.subs.remove(id);
        Ok(())
    }

    /// Queues `event` for every subscription of `tenant` that wants it (durably; the
    /// deliverer is woken). Failures are logged: an event source never fails because of
    /// webhooks.
    pub async fn emit(&self, tenant: &str, event: &str, data: Value) {
        let targets: Vec<Subscription> = self
            .subs
            .iter()
            .filter(|s| s.tenant == tenant && s.events.iter().any(|e| e == "*" || e == event))
            .map(|s| s.clone())
            .collect();
        if targets.is_empty() {
            return;
        }
        let mut seq = self.seq.lock().await;
        for sub in targets {
            if seq.1 >= QUEUE_MAX {
                metrics::counter!("aios_webhook_dropped_total").increment(1);
                tracing::error!(subscription = %sub.id, event, "webhook queue full; event dropped");
                continue;
            }
            let body = serde_json::json!({
                "event": event, "tenant": tenant, "at_ms": now_ms(), "data": data,
            })
            .to_string();
            let d = Delivery {
                seq: seq.0,
                subscription: sub.id.clone(),
                tenant: tenant.to_string(),
                event: event.to_string(),
                body,
                attempts: 0,
                next_at_ms: now_ms(),
                last_error: String::new(),
            };
            let stored = async {
                self.records
                    .put(
                        &format!("{}{:020}", self.keys.queue, d.seq),
                        &d,
                        Durability::Buffered,
                    )
                    .await?;
                self.records
                    .put(&self.keys.seq, &(d.seq + 1), Durability::Durable)
                    .await
            }
            .await;
            match stored {
                Ok(()) => {
                    self.schedule().insert((d.next_at_ms, d.seq));
                    seq.0 += 1;
                    seq.1 += 1;
                }
                Err(e) => tracing::error!(error = %e, event, "queueing a webhook delivery"),
            }
        }
        drop(seq);
        self.wake.notify_one();
    }

    /// Dead letters of the tenant, oldest first (at most `limit`).
    ///
    /// # Errors
    /// Store failures.
    pub async fn dead(&self, tenant: &str, limit: usize) -> Result<Vec<Delivery>, WebhookError> {
        let mut out = Vec::new();
        for key in self
            .records
            .keys(&self.keys.dead, DEAD_MAX as usize)
            .await
            .map_err(store_err)?
        {
            if let Some(d) = self
                .records
                .get::<Delivery>(&key)
                .await
                .map_err(store_err)?
                && d.tenant == tenant
            {
                out.push(d);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Moves a dead letter of the tenant back to the queue, with its attempts reset.
    ///
    /// # Errors
    /// Not found, a store failure.
    pub async fn redeliver(&self, tenant: &str, seq: u64) -> Result<(), WebhookError> {
        let key = format!("{}{seq:020}", self.keys.dead);
        let mut d: Delivery = self
            .records
            .get(&key)
            .await
            .map_err(store_err)?
            .filter(|d: &Delivery| d.tenant == tenant)
            .ok_or_else(|| WebhookError::NotFound(format!("dead letter {seq}")))?;
        d.attempts = 0;
        d.next_at_ms = now_ms();
        self.records
            .put(
                &format!("{}{seq:020}", self.keys.queue),
                &d,
                Durability::Durable,
            )
            .await
            .map_err(store_err)?;
        self.records.delete(&key).await.map_err(store_err)?;
        self.schedule().insert((d.next_at_ms, seq));
        self.seq.lock().await.1 += 1;
        self.wake.notify_one();
        Ok(())
    }

    /// Delivers due items until `stop` is cancelled.
    pub fn spawn_deliverer(&self, stop: CancellationToken) {
        let w = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = match w.deliver_due().await {
                    Ok(wait) => wait,
                    Err(e) => {
                        tracing::error!(error = %e, "webhook deliverer");
                        Duration::from_secs(1)
                    }
                };
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = w.wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<(u64, u64)>> {
        self.schedule
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Attempts the due deliveries (at most 256 at once, oldest due first), and returns how
    /// long until the next one is due.
    async fn deliver_due(&self) -> Result<Duration, WebhookError> {
        loop {
            let now = now_ms();
            let due: Vec<u64> = {
                let mut schedule = self.schedule();
                let mut taken = Vec::new();
                while taken.len() < 256 {
                    match schedule.first().copied() {
                        Some((at, seq)) if at <= now => {
                            schedule.remove(&(at, seq));
                            taken.push(seq);
                        }
                        _ => break,
                    }
                }
                taken
            };
            if due.is_empty() {
                break;
            }
            let mut attempts = Vec::with_capacity(due.len());
            for seq in due {
                let key = format!("{}{seq:020}", self.keys.queue);
                // Gone (delivered, dead-lettered) since it was scheduled: nothing to do.
                if let Some(d) = self
                    .records
                    .get::<Delivery>(&key)
                    .await
                    .map_err(store_err)?
                {
                    attempts.push(self.attempt(key, d));
                }
            }
            futures_util::future::join_all(attempts).await;
        }
        let next = self.schedule().first().map(|(at, _)| *at);
        Ok(next.map_or(Duration::from_secs(60), |n| {
            Duration::from_millis(n.saturating_sub(now_ms()).max(10))
        }))
    }

    /// Attempts one delivery; returns when it is due again if it stays queued.
    async fn attempt(&self, key: String, mut d: Delivery) -> Option<u64> {
        let Some(sub) = self.subs.get(&d.subscription).map(|s| s.clone()) else {
            // Unsubscribed: drop the delivery.
            if let Err(e) = self.records.delete(&key).await {
                tracing::warn!(error = %e, "dropping a delivery of a removed subscription");
            }
            let mut seq = self.seq.lock().await;
            seq.1 = seq.1.saturating_sub(1);
            return None;
        };
        let ts = now_ms() / 1000;
        let started = std::time::Instant::now();
        // Another tenant's destination is checked again: a literal address here (a client
        // does not resolve it), a name by the guarded client's resolver when it connects.
        let guarded = sub.tenant != super::keys::OPERATOR_TENANT;
        let refused = if guarded {
            reqwest::Url::parse(&sub.url)
                .map_err(|e| e.to_string())
                .and_then(|u| self.guard.check_url(&u).map_err(|e| e.to_string()))
                .err()
        } else {
            None
        };
        let result = match refused {
            Some(why) => Err(why),
            None => (if guarded { &self.guarded } else { &self.http })
                .post(&sub.url)
                .header("content-type", "application/json")
                .header("x-aios-event", &d.event)
                .header("x-aios-delivery", self.delivery_id(d.seq))
                .header("x-aios-timestamp", ts.to_string())
                .header("x-aios-signature", signature(&sub.secret, ts, &d.body))
                .body(d.body.clone())
                .send()
                .await
                .map_err(|e| aios_actors::outbound::error_chain(&e)),
        };
        d.attempts += 1;
        let error = match result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status())),
            Err(e) => Some(e),
        };
        let outcome = match &error {
            None => "delivered",
            Some(_) if d.attempts >= self.config.attempts_max => "dead",
            Some(_) => "retrying",
        };
        self.remember(Attempt {
            at_ms: now_ms(),
            seq: d.seq,
            subscription: d.subscription.clone(),
            tenant: d.tenant.clone(),
            event: d.event.clone(),
            attempt: d.attempts,
            outcome,
            error: error.clone().unwrap_or_default(),
            took_ms: started.elapsed().as_millis() as u64,
        });
        let Some(error) = error else {
            metrics::counter!("aios_webhook_deliveries_total", "outcome" => "ok").increment(1);
            if let Err(e) = self.records.delete(&key).await {
                tracing::warn!(error = %e, "removing a delivered webhook");
            }
            let mut seq = self.seq.lock().await;
            seq.1 = seq.1.saturating_sub(1);
            return None;
        };
        metrics::counter!("aios_webhook_deliveries_total", "outcome" => "failed").increment(1);
        d.last_error = error;
        if d.attempts >= self.config.attempts_max {
            tracing::warn!(delivery = d.seq, url = %sub.url, error = %d.last_error, "webhook dead-lettered");
            let dead = format!("{}{:020}", self.keys.dead, d.seq);
            let moved = async {
                self.records.put(&dead, &d, Durability::Durable).await?;
                self.records.delete(&key).await
            }
            .await;
            if let Err(e) = moved {
                tracing::error!(error = %e, "dead-lettering a webhook");
            }
            self.trim_dead().await;
            let mut seq = self.seq.lock().await;
            seq.1 = seq.1.saturating_sub(1);
            return None;
        }
        let base = self
            .config
            .backoff_initial
            .saturating_mul(1 << (d.attempts - 1).min(20))
            .min(self.config.backoff_max);
        // ±25 % jitter so retries of many deliveries spread out.
        let jitter = 0.75 + fastrand::f64() * 0.5;
        d.next_at_ms = now_ms() + (base.as_millis() as f64 * jitter) as u64;
        if let Err(e) = self.records.put(&key, &d, Durability::Durable).await {
            tracing::error!(error = %e, "rescheduling a webhook");
        }
        self.schedule().insert((d.next_at_ms, d.seq));
        Some(d.next_at_ms)
    }

    fn remember(&self, attempt: Attempt) {
        let mut a = self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if a.len() >= ATTEMPTS_KEPT {
            a.pop_front();
        }
        a.push_back(attempt);
    }

    /// The tenant's most recent delivery attempts (at most `limit`, newest first) and the
    /// number of deliveries queued on the node.
    pub async fn attempts(&self, tenant: &str, limit: usize) -> (Vec<Attempt>, u64) {
        let recent = self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .rev()
            .filter(|a| a.tenant == tenant)
            .take(limit)
            .cloned()
            .collect();
        (recent, self.seq.lock().await.1)
    }

    async fn trim_dead(&self) {
        let Ok(keys) = self
            .records
            .keys(&self.keys.dead, DEAD_MAX as usize + 64)
            .await
        else {
            return;
        };
        for key in keys
            .iter()
            .take(keys.len().saturating_sub(DEAD_MAX as usize))
        {
            let _ = self.records.delete(key).await;
        }
    }
}
