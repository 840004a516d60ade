//! Accounting of tool calls: usage per tool version and agent (persisted every
//! [`USAGE_FLUSH_INTERVAL`] under `toolusage/<name>@<version>`), and the refused calls kept
//! for the audit log and sent to its subscribers. [`Accounting`] owns both.
//!
//! Architecture invariant: the usage table holds at most [`USAGE_KEYS_MAX`] (tool, agent)
//! pairs (further agents count as `*`) and the denial ring at most [`DENIALS_MAX`]; a flush
//! that fails leaves what it did not write marked as changed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use aios_core::records::Records;
use aios_supervisor::snapshot::Durability;
use dashmap::DashMap;
use serde::Serialize;

use super::ToolService;
use super::registry::ToolRegistryError;
use super::service::{lock, store_err};

/// (tool, agent) pairs counted separately at most; further agents are counted as `*`.
const USAGE_KEYS_MAX: usize = 100_000;

/// Denied calls remembered for the audit log at most (oldest dropped).
pub const DENIALS_MAX: usize = 10_000;

/// Denials buffered for each subscriber of [`ToolService::subscribe_denials`].
pub const DENIALS_BROADCAST_LEN: usize = 1024;

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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
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

/// Usage records, one per tool version: `toolusage/<name>@<version>`.
const USAGE_PREFIX: &str = aios_core::keyspace::TOOL_USAGE;

/// How often changed usage counts are written.
pub const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Usage counts and denials of a node's tool calls.
pub(crate) struct Accounting {
    usage: DashMap<(String, String), ToolUsage>,
    /// Tool ids whose usage changed since the last flush.
    dirty: Mutex<BTreeSet<String>>,
    /// Serialises usage flushes.
    write: tokio::sync::Mutex<()>,
    /// The latest denials, oldest first.
    denials: Mutex<VecDeque<Denial>>,
    /// Each denial as it happens, for the daemon's audit log.
    denied: tokio::sync::broadcast::Sender<Denial>,
}

impl Accounting {
    /// The usage counts persisted in `records` (at most [`USAGE_KEYS_MAX`] pairs).
    ///
    /// # Errors
    /// Store failures.
    pub(crate) async fn load(records: &Records) -> Result<Self, ToolRegistryError> {
        let usage = DashMap::new();
        let mut after: Option<String> = None;
        loop {
            let keys = records
                .keys_after(USAGE_PREFIX, after.as_deref(), 256)
                .await
                .map_err(store_err)?;
            let Some(last) = keys.last().cloned() else {
                break;
            };
            for key in keys {
                let tool = key.trim_start_matches(USAGE_PREFIX).to_string();
                let rows: Vec<(String, ToolUsage)> = records
                    .get(&key)
                    .await
                    .map_err(store_err)?
                    .unwrap_or_default();
                for (agent, u) in rows {
                    if usage.len() < USAGE_KEYS_MAX {
                        usage.insert((tool.clone(), agent), u);
                    }
                }
            }
            after = Some(last);
        }
        Ok(Self {
            usage,
            dirty: Mutex::new(BTreeSet::new()),
            write: tokio::sync::Mutex::new(()),
            denials: Mutex::new(VecDeque::new()),
            denied: tokio::sync::broadcast::channel(DENIALS_BROADCAST_LEN).0,
        })
    }

    /// Counts one call of tool version `tool` by `agent` that took `micros`.
    pub(crate) fn record_call(
        &self,
        tool: &str,
        agent: &str,
        micros: u64,
        hit: bool,
        failed: bool,
    ) {
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len() - 1);
        // Bounded: beyond USAGE_KEYS_MAX (tool, agent) pairs, new agents count as `*`.
        let agent = if self.usage.len() >= USAGE_KEYS_MAX
            && !self
                .usage
                .contains_key(&(tool.to_string(), agent.to_string()))
        {
            "*"
        } else {
            agent
        };
        let mut u = self
            .usage
            .entry((tool.to_string(), agent.to_string()))
            .or_default();
        u.calls += 1;
        u.errors += u64::from(failed);
        u.cache_hits += u64::from(hit);
        u.latency_buckets[bucket] += 1;
        drop(u);
        let mut dirty = lock(&self.dirty);
        if !dirty.contains(tool) {
            dirty.insert(tool.to_string());
        }
    }

    /// Keeps a denial (dropping the oldest beyond [`DENIALS_MAX`]) and sends it to the
    /// subscribers.
    pub(crate) fn deny(&self, denial: Denial) {
        let mut denials = lock(&self.denials);
        if denials.len() >= DENIALS_MAX {
            denials.pop_front();
        }
        // No subscriber is fine: the denial is still kept below.
        let _ = self.denied.send(denial.clone());
        denials.push_back(denial);
    }
}

impl ToolService {
    /// Writes the usage counts that changed since the last flush.
    ///
    /// # Errors
    /// Store failures (the counts stay marked as changed).
    pub async fn flush_usage(&self) -> Result<(), ToolRegistryError> {
        let accounting = &self.inner.accounting;
        let _w = accounting.write.lock().await;
        let dirty = std::mem::take(&mut *lock(&accounting.dirty));
        let records = self.registry().records();
        for (i, tool) in dirty.iter().enumerate() {
            let rows: Vec<(String, ToolUsage)> = accounting
                .usage
                .iter()
                .filter(|e| &e.key().0 == tool)
                .map(|e| (e.key().1.clone(), e.value().clone()))
                .collect();
            let durability = if i + 1 == dirty.len() {
                Durability::Durable
            } else {
                Durability::Buffered
            };
            if let Err(e) = records
                .put(&format!("{USAGE_PREFIX}{tool}"), &rows, durability)
                .await
            {
                lock(&accounting.dirty).extend(dirty.iter().skip(i).cloned());
                return Err(store_err(e));
            }
        }
        Ok(())
    }

    /// Refused calls as they happen (a subscriber that falls behind by more than
    /// [`DENIALS_BROADCAST_LEN`] loses the oldest).
    pub fn subscribe_denials(&self) -> tokio::sync::broadcast::Receiver<Denial> {
        self.inner.accounting.denied.subscribe()
    }

    /// The latest refused calls, oldest first.
    pub fn denials(&self) -> Vec<Denial> {
        lock(&self.inner.accounting.denials)
            .iter()
            .cloned()
            .collect()
    }

    /// Usage per (tool `name@version`, agent).
    pub fn usage(&self) -> BTreeMap<(String, String), ToolUsage> {
        self.inner
            .accounting
            .usage
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }
}
