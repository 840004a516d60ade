//! Per-tenant LLM budgets: reserved before every call, settled after.
//!
//! A tenant may have a token limit per UTC day and a cost limit per UTC month
//! ([`TenantLimits`]). Its *usage* is its cost-ledger total now less its total when the day
//! (month) began, the *base* kept in `quotabase/<tenant>`; so every call counts, whatever
//! path started it (agent messages, chat completions, WebSocket messages, runs, sessions,
//! scheduled runs), without a second accounting path.
//!
//! Before a call goes to its scheduler the router reserves the call's stated maximum, its
//! [`Ask`]: the prompt (as estimated, with the tokenizer's margin) plus the request's
//! `max_tokens`, or the model's whole context window when the request states no maximum,
//! priced at the dearer of the model's two prices. A call is admitted while usage plus what
//! the tenant's running calls reserved stays below every limit; while reservations alone
//! fill a limit the call waits for one to settle; once usage itself reaches a limit the call
//! is refused with [`LlmError::QuotaExceeded`]. A call's usage is in the ledger before its
//! reservation is released, so no moment counts neither.
//!
//! The bound: on one node a limit is overshot by at most one call's ask (the last call
//! admitted below the limit). Nodes that share a store see each other's usage as of the
//! ledger's last refresh and do not see each other's reservations, so a cluster overshoots by
//! at most one ask per node plus what the other nodes used since their last refresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aios_supervisor::snapshot::{Durability, SnapshotError};
use dashmap::DashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::SchedulerConfig;
use crate::cost::{CostLedger, CostScope};
use crate::{ChatRequest, LlmError, Usage};
use aios_core::records::Records;

/// Tenants whose bases are kept at most; beyond, a new tenant is refused LLM calls while
/// limits are set (the node's table of tenants is full, not the tenant's budget).
pub const QUOTA_TENANTS_MAX: usize = 100_000;
/// Calls waiting for a reservation to settle, at most, over all tenants; beyond, a call is
/// refused at once.
pub const QUOTA_WAITING_MAX: usize = 10_000;

const BASE_PREFIX: &str = aios_core::keyspace::QUOTA_BASE;
const DAY_MS: u64 = 24 * 3600 * 1000;

/// A tenant's LLM limits (0 = none). The same for every tenant of a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantLimits {
    /// Tokens (prompt + answer) per tenant per UTC day.
    pub tokens_per_day: u64,
    /// Cost in nanodollars per tenant per UTC calendar month.
    pub cost_nanos_per_month: u64,
}

impl TenantLimits {
    /// True when neither limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.tokens_per_day == 0 && self.cost_nanos_per_month == 0
    }
}

/// What one LLM call may use at most: what is reserved for it while it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ask {
    /// Tokens, prompt and answer together.
    pub tokens: u64,
    /// Cost in nanodollars.
    pub cost_nanos: u64,
}

impl Ask {
    /// The stated maximum of `request` on the model of `config` (see the module docs).
    pub fn of(config: &SchedulerConfig, request: &ChatRequest) -> Self {
        let window = config.window();
        // The messages, the tools' schemas and a few tokens of framing per message.
        let tools: usize = request
            .tools
            .iter()
            .map(|t| t.name.len() + t.description.len() + t.parameters.to_string().len())
            .sum();
        let estimate = request.estimated_input_tokens()
            + (tools as u64).div_ceil(4)
            + 8 * request.messages.len() as u64;
        let prompt = (estimate as f64 * (1.0 + window.tokenizer.margin())).ceil() as u64;
        let tokens = match request.max_tokens {
            Some(answer) => prompt.saturating_add(u64::from(answer)),
            None => window.len.max(prompt),
        };
        let all_in = Usage {
            input_tokens: tokens,
            ..Usage::default()
        };
        let all_out = Usage {
            output_tokens: tokens,
            ..Usage::default()
        };
        Self {
            tokens,
            cost_nanos: config
                .price
                .cost_nanos(&all_in)
                .max(config.price.cost_nanos(&all_out)),
        }
    }

    fn add(&mut self, other: Self) {
        self.tokens = self.tokens.saturating_add(other.tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(other.cost_nanos);
    }

    fn sub(&mut self, other: Self) {
        self.tokens = self.tokens.saturating_sub(other.tokens);
        self.cost_nanos = self.cost_nanos.saturating_sub(other.cost_nanos);
    }
}

/// A tenant's ledger totals when its day and month began.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Base {
    day: u64,
    tokens: u64,
    month: u64,
    cost_nanos: u64,
}

/// A tenant's usage of its limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantUsage {
    /// Tokens used today (UTC).
    pub tokens_today: u64,
    /// Nanodollars spent this month (UTC).
    pub cost_nanos_this_month: u64,
    /// What the tenant's running calls have reserved.
    pub reserved: Ask,
}

/// The UTC calendar month of a day number (days since 1970-01-01), as `year * 12 + month`.
fn month_of(day: u64) -> u64 {
    // Howard Hinnant's civil_from_days.
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y * 12 + m - 1) as u64
}

/// Seconds until the UTC month after `now_ms` begins.
fn secs_to_next_month(now_ms: u64) -> u64 {
    let day = now_ms / DAY_MS;
    let month = month_of(day);
    let mut next = day + 1;
    // At most 31 steps.
    while month_of(next) == month {
        next += 1;
    }
    (next * DAY_MS - now_ms).div_ceil(1000)
}

struct Inner {
    limits: TenantLimits,
    ledger: CostLedger,
    records: Records,
    bases: DashMap<String, Base>,
    /// tenant → what its running calls reserved. Entries are removed when they reach zero.
    reserved: Mutex<HashMap<String, Ask>>,
    /// Woken whenever a reservation is released.
    settled: Notify,
    waiting: AtomicUsize,
}

/// The tenants' LLM budgets of one node. Cheap to clone.
#[derive(Clone)]
pub struct TenantQuota {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TenantQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantQuota")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// What a running call reserved; released (settled) when dropped, after the call's usage is
/// in the ledger.
#[derive(Debug)]
pub struct Reservation {
    quota: TenantQuota,
    tenant: String,
    ask: Ask,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let inner = &self.quota.inner;
        {
            let mut reserved = lock(&inner.reserved);
            if let Some(r) = reserved.get_mut(&self.tenant) {
                r.sub(self.ask);
                if *r == Ask::default() {
                    reserved.remove(&self.tenant);
                }
            }
        }
        inner.settled.notify_waiters();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Invariant: no code panics while holding these locks (plain map updates); a poisoned
    // lock still holds consistent maps.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> u64 {
    aios_core::protocol::unix_ms()
}

/// One call among the waiting ones, for as long as this lives (its drop counts it out, also
/// when the waiting future is dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a call may not start now.
enum Verdict {
    Admit,
    Wait,
    Refuse(LlmError),
}

impl TenantQuota {
    /// Loads the tenants' bases.
    ///
    /// # Errors
    /// Store failures.
    pub async fn open(
        records: Records,
        ledger: CostLedger,
        limits: TenantLimits,
    ) -> Result<Self, SnapshotError> {
        let bases = DashMap::new();
        for key in records.keys(BASE_PREFIX, QUOTA_TENANTS_MAX).await? {
            if let Some(b) = records.get::<Base>(&key).await? {
                bases.insert(key.trim_start_matches(BASE_PREFIX).to_string(), b);
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                limits,
                ledger,
                records,
                bases,
                reserved: Mutex::new(HashMap::new()),
                settled: Notify::new(),
                waiting: AtomicUsize::new(0),
            }),
        })
    }

    /// Reads the bases that nodes sharing the store wrote, and keeps the earliest of each day
    /// and month (the totals only grow, so the earliest base is the day's true start): a node
    /// whose first call of the day came after another node's use of it counts that use
    /// within one refresh.
    ///
    /// # Errors
    /// Store failures.
    pub async fn refresh_bases(&self) -> Result<(), SnapshotError> {
        let records = &self.inner.records;
        for key in records.keys(BASE_PREFIX, QUOTA_TENANTS_MAX).await? {
            let Some(stored) = records.get::<Base>(&key).await? else {
                continue;
            };
            let tenant = key.trim_start_matches(BASE_PREFIX);
            let Some(mut mine) = self.inner.bases.get_mut(tenant) else {
                continue;
            };
            let (day, tokens) = match stored.day.cmp(&mine.day) {
                std::cmp::Ordering::Greater => (stored.day, stored.tokens),
                std::cmp::Ordering::Equal => (mine.day, mine.tokens.min(stored.tokens)),
                std::cmp::Ordering::Less => (mine.day, mine.tokens),
            };
            let (month, cost_nanos) = match stored.month.cmp(&mine.month) {
                std::cmp::Ordering::Greater => (stored.month, stored.cost_nanos),
                std::cmp::Ordering::Equal => (mine.month, mine.cost_nanos.min(stored.cost_nanos)),
                std::cmp::Ordering::Less => (mine.month, mine.cost_nanos),
            };
            let merged = Base {
                day,
                tokens,
                month,
                cost_nanos,
            };
            *mine = merged;
            drop(mine);
            // The store keeps the earliest too (once the nodes agree, nothing is written).
            if merged != stored {
                records.put(&key, &merged, Durability::Buffered).await?;
            }
        }
        Ok(())
    }

    /// The limits.
    pub fn limits(&self) -> TenantLimits {
        self.inner.limits
    }

    /// What `tenant` has used and reserved.
    pub fn usage(&self, tenant: &str) -> TenantUsage {
        let (tokens_today, cost_nanos_this_month) = self.used(tenant, false).unwrap_or((0, 0));
        TenantUsage {
            tokens_today,
            cost_nanos_this_month,
            reserved: lock(&self.inner.reserved)
                .get(tenant)
                .copied()
                .unwrap_or_default(),
        }
    }

    /// Refuses when `tenant` has used up a limit (reservations aside): the check before work
    /// starts, so a request is answered 429 at once rather than when its first call is due.
    ///
    /// # Errors
    /// [`LlmError::QuotaExceeded`] naming the limit.
    pub fn check(&self, tenant: &str) -> Result<(), LlmError> {
        if self.inner.limits.is_unlimited() {
            return Ok(());
        }
        let (tokens, cost) = self.used(tenant, true)?;
        self.refusal(tenant, tokens, cost).map_or(Ok(()), Err)
    }

    /// Reserves `ask` for a call of `tenant`: at once while usage and reservations leave room,
    /// after other calls settle while reservations fill a limit (or until `cancel`).
    ///
    /// # Errors
    /// [`LlmError::QuotaExceeded`] once a limit is used up (or too many calls wait), or
    /// [`LlmError::Cancelled`].
    pub async fn reserve(
        &self,
        tenant: &str,
        ask: Ask,
        cancel: Option<&CancellationToken>,
    ) -> Result<Reservation, LlmError> {
        let never = CancellationToken::new();
        let cancel = cancel.unwrap_or(&never);
        // Counted among the waiting calls from its first wait until it returns or is dropped.
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            // Registered before the check, so a release between the check and the wait wakes
            // it.
            let settled = self.inner.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            match self.try_reserve(tenant, ask) {
                Verdict::Admit => {
                    return Ok(Reservation {
                        quota: self.clone(),
                        tenant: tenant.to_string(),
                        ask,
                    });
                }
                Verdict::Refuse(e) => return Err(e),
                Verdict::Wait => {}
            }
            if waiting.is_none() {
                let w = Waiting(&self.inner.waiting);
                if w.0.fetch_add(1, Ordering::AcqRel) >= QUOTA_WAITING_MAX {
                    return Err(LlmError::QuotaExceeded {
                        message: format!(
                            "tenant {tenant}: more than {QUOTA_WAITING_MAX} LLM calls wait for \
                             the tenants' running calls to settle"
                        ),
                        retry_after_s: 1,
                    });
                }
                waiting = Some(w);
            }
            tokio::select! {
                () = settled => {}
                () = cancel.cancelled() => return Err(LlmError::Cancelled),
            }
        }
    }

    fn try_reserve(&self, tenant: &str, ask: Ask) -> Verdict {
        // Usage is read under the lock that releases take: a call that records its usage and
        // then releases is seen in one or the other, never in neither.
        let mut reserved = lock(&self.inner.reserved);
        let (tokens, cost) = match self.used(tenant, true) {
            Ok(used) => used,
            Err(e) => return Verdict::Refuse(e),
        };
        if let Some(e) = self.refusal(tenant, tokens, cost) {
            return Verdict::Refuse(e);
        }
        let limits = self.inner.limits;
        let held = reserved.get(tenant).copied().unwrap_or_default();
        let full = (limits.tokens_per_day > 0
            && tokens.saturating_add(held.tokens) >= limits.tokens_per_day)
            || (limits.cost_nanos_per_month > 0
                && cost.saturating_add(held.cost_nanos) >= limits.cost_nanos_per_month);
        if full {
            return Verdict::Wait;
        }
        reserved.entry(tenant.to_string()).or_default().add(ask);
        Verdict::Admit
    }

    /// The refusal when usage reached a limit.
    fn refusal(&self, tenant: &str, tokens: u64, cost: u64) -> Option<LlmError> {
        let limits = self.inner.limits;
        let now = now_ms();
        if limits.tokens_per_day > 0 && tokens >= limits.tokens_per_day {
            return Some(LlmError::QuotaExceeded {
                message: format!(
                    "tenant {tenant} has used {tokens} of its {} LLM tokens today (UTC)",
                    limits.tokens_per_day
                ),
                retry_after_s: (DAY_MS - now % DAY_MS).div_ceil(1000),
            });
        }
        if limits.cost_nanos_per_month > 0 && cost >= limits.cost_nanos_per_month {
            return Some(LlmError::QuotaExceeded {
                message: format!(
                    "tenant {tenant} has spent ${:.4} of its ${:.2} this month (UTC)",
                    cost as f64 / 1e9,
                    limits.cost_nanos_per_month as f64 / 1e9
                ),
                retry_after_s: secs_to_next_month(now),
            });
        }
        None
    }

    /// `tenant`'s tokens today and cost this month; moves its base to a new day or month (and
    /// writes it, buffered) when one began. Without `create`, a tenant without a base has
    /// used nothing and gets none.
    fn used(&self, tenant: &str, create: bool) -> Result<(u64, u64), LlmError> {
        let totals = self
            .inner
            .ledger
            .totals(&CostScope::Tenant(tenant.to_string()));
        let tokens = totals.input_tokens + totals.output_tokens;
        let day = now_ms() / DAY_MS;
        let month = month_of(day);
        let bases = &self.inner.bases;
        if !bases.contains_key(tenant) {
            if !create {
                return Ok((0, 0));
            }
            if bases.len() >= QUOTA_TENANTS_MAX {
                // Bases of an earlier month would be reset when next used: drop them.
                bases.retain(|_, b| b.month == month);
            }
        }
        if !bases.contains_key(tenant) && bases.len() >= QUOTA_TENANTS_MAX {
            return Err(LlmError::QuotaExceeded {
                message: format!(
                    "tenant {tenant}: this node counts the LLM use of {QUOTA_TENANTS_MAX} \
                     tenants at most"
                ),
                retry_after_s: 60,
            });
        }
        let (base, changed) = {
            let mut changed = false;
            let mut b = bases.entry(tenant.to_string()).or_insert_with(|| {
                changed = true;
                Base {
                    day,
                    tokens,
                    month,
                    cost_nanos: totals.cost_nanos,
                }
            });
            if b.day != day {
                b.day = day;
                b.tokens = tokens;
                changed = true;
            }
            if b.month != month {
                b.month = month;
                b.cost_nanos = totals.cost_nanos;
                changed = true;
            }
            (*b, changed)
        };
        if changed && let Ok(rt) = tokio::runtime::Handle::try_current() {
            // At most one write per tenant and day.
            let records = self.inner.records.clone();
            let key = format!("{BASE_PREFIX}{tenant}");
            rt.spawn(async move {
                if let Err(e) = records.put(&key, &base, Durability::Buffered).await {
                    tracing::warn!(error = %e, %key, "writing a quota base");
                }
            });
        }
        Ok((
            tokens.saturating_sub(base.tokens),
            totals.cost_nanos.saturating_sub(base.cost_nanos),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{DAY_MS, month_of, secs_to_next_month};

    #[test]
    fn months_follow_the_calendar() {
        // 1970-01-01 is day 0; 2026-11-30 is day 20_787; 2026-12-01 is day 20_788.
        assert_eq!(month_of(0), 1970 * 12);
        assert_eq!(month_of(31), 1970 * 12 + 1);
        assert_eq!(month_of(20_787), 2026 * 12 + 10);
        assert_eq!(month_of(20_788), 2026 * 12 + 11);
        // 2024-02-29 (a leap day) is day 19_782, in February.
        assert_eq!(month_of(19_782), 2024 * 12 + 1);
    }

    #[test]
    fn the_next_month_begins_on_its_first_day() {
        // Noon on 2026-11-30: 12 hours to December.
        assert_eq!(secs_to_next_month(20_787 * DAY_MS + DAY_MS / 2), 12 * 3600);
        // Midnight on 2026-12-01: all of December (31 days).
        assert_eq!(secs_to_next_month(20_788 * DAY_MS), 31 * 24 * 3600);
    }
}
