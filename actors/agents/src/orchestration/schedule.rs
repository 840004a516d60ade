//! Scheduled runs: cron schedules (five fields, or six with leading seconds, in an IANA time
//! zone) and one-off delayed runs. Each firing starts a normal run of the schedule's task for
//! its tenant.
//!
//! Schedules are records (`sched/<id>`). A supervised worker (`schedules` under the `runs`
//! supervisor) keeps them in memory and looks every [`TICK`] for due ones.
//!
//! Exactly one run per due time: the run's id is derived from the schedule's id and the due
//! time, and [`Orchestrator::start_with_id`] does nothing for a run that exists. The schedule
//! is advanced (written durably) after the run started. A crash between the two fires the same
//! due time again, which finds its run and starts nothing.
//!
//! A due time more than `missed_after` in the past (the node was down, or the worker could
//! not run) is *missed*. Then the schedule's [`OnMissed`] policy applies:
//! - `skip` counts it and waits for the next due time;
//! - `run_once` fires once for the latest missed due time, however many were missed.
//!
//! On a store shared by the nodes of a cluster, one node fires: the holder of the lease
//! [`LEADER_KEY`] (taken by the first node that ticks while it is free, so another node takes
//! over within a lease TTL of the holder's death). The store is the truth: the firing node
//! re-reads the set of schedules every [`REFRESH_EVERY`] and each due schedule's record before
//! firing it (so a pause or a deletion made through another node holds), and the other nodes
//! answer the API from the store. A node that takes over fires what is due from the records;
//! a due time the previous node fired just before it died finds its run and starts nothing.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aios_supervisor::snapshot::Durability;
use aios_supervisor::{ActorHandle, Context, Restart, SupervisorRef, Worker, WorkerSpec};
use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use ractor::ActorProcessingErr;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::run::{RUN_TASK_LEN_MAX, RunSpec};
use super::{OrchestrationError, Orchestrator, unavailable};
use crate::agent::validate_name;
use aios_core::protocol::unix_ms;
use aios_core::records::Records;

/// How often the worker looks for due schedules.
pub const TICK: Duration = Duration::from_secs(1);
/// The most schedules a node keeps.
pub const SCHEDULES_MAX: usize = 10_000;
/// The latest a one-off run may be set, from now.
pub const DELAY_MAX: Duration = Duration::from_secs(10 * 366 * 24 * 3600);
/// Missed due times counted at most per catch-up (an every-second schedule down for a day
/// would otherwise be counted one by one).
const MISSED_COUNT_MAX: u64 = 100_000;
/// Due times of one schedule fired in one tick at most (a schedule behind by less than
/// `missed_after` catches up over several ticks).
const FIRINGS_PER_TICK_MAX: usize = 16;
const SCHED_PREFIX: &str = aios_core::keyspace::SCHEDULE;
/// The lease whose holder fires the schedules (on a store only this process opens, it is
/// always granted).
pub const LEADER_KEY: &str = aios_core::keyspace::SCHEDULES_LEADER_LEASE;
/// How often the firing node re-reads which schedules exist.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// What to do with due times missed while the scheduler could not fire them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OnMissed {
    /// Fire once, for the latest missed due time (the default).
    #[default]
    RunOnce,
    /// Fire none of them; wait for the next due time.
    Skip,
}

/// When a schedule fires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum When {
    /// At every time matching a cron expression, in a time zone.
    Cron {
        /// Five fields (minute hour day-of-month month day-of-week), or six with leading
        /// seconds.
        expr: String,
        /// An IANA time zone name (`Europe/Oslo`), or `UTC`.
        timezone: String,
    },
    /// Once, at a Unix time in ms.
    Once {
        /// When.
        at_ms: u64,
    },
}

/// A new schedule, as the API takes it: `cron` (with an optional `timezone`), or `at_ms`, or
/// `delay_s`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// A name for people (1..=64 of `a-z A-Z 0-9 _ - .`).
    pub name: String,
    /// A cron expression: five fields, or six with leading seconds.
    #[serde(default)]
    pub cron: Option<String>,
    /// The cron expression's time zone (IANA name; default `UTC`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// A one-off run at this Unix time in ms.
    #[serde(default)]
    pub at_ms: Option<u64>,
    /// A one-off run this many seconds from now.
    #[serde(default)]
    pub delay_s: Option<u64>,
    /// The run's task.
    pub task: String,
    /// The run's planner (else the best agent with capability `plan`).
    #[serde(default)]
    pub planner: Option<String>,
    /// Due times missed while down (default `run_once`).
    #[serde(default)]
    pub on_missed: OnMissed,
}

/// A schedule and what it did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// 32 hex digits.
    pub id: String,
    /// The tenant its runs belong to and are charged to.
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// When it fires.
    pub when: When,
    /// The run's task.
    pub task: String,
    /// The run's planner.
    pub planner: Option<String>,
    /// The missed-firing policy.
    pub on_missed: OnMissed,
    /// Paused schedules fire nothing; due times passed while paused are skipped.
    pub paused: bool,
    /// Unix ms.
    pub created_ms: u64,
    /// The next due time (Unix ms); `None` once a one-off schedule fired.
    pub next_due_ms: Option<u64>,
    /// The latest due time fired.
    pub last_due_ms: Option<u64>,
    /// The run the latest firing started.
    pub last_run: Option<String>,
    /// Runs started.
    pub fired: u64,
    /// Due times missed (not fired under `skip`, or folded into one firing under
    /// `run_once`).
    pub missed: u64,
    /// Why the latest firing could not start its run.
    pub last_error: Option<String>,
}

/// Scheduler settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// A due time further in the past than this is missed (default 60 s).
    pub missed_after: Duration,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            missed_after: Duration::from_secs(60),
        }
    }
}

/// The parsed cron expression of a schedule.
fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "cron: {expr:?} has {fields} fields; give five (minute hour day-of-month month \
             day-of-week) or six (with leading seconds)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("cron: {expr:?}: {e}"))
}

fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(name)
        .map_err(|_| format!("timezone: {name:?} is not an IANA time zone name"))
}

/// The first due time of `when` strictly after `after_ms`, if any.
fn next_after(when: &When, after_ms: u64) -> Result<Option<u64>, String> {
    match when {
        When::Once { at_ms } => Ok((*at_ms > after_ms).then_some(*at_ms)),
        When::Cron { expr, timezone } => {
            let cron = parse_cron(expr)?;
            let tz = parse_timezone(timezone)?;
            // Cron's granularity is the second: from the whole second (croner keeps a start's
            // fraction in what it finds).
            let start = tz.from_utc_datetime(&ms_to_utc(after_ms / 1000 * 1000).naive_utc());
            match cron.find_next_occurrence(&start, false) {
                Ok(t) => Ok(Some(t.with_timezone(&Utc).timestamp_millis().max(0) as u64)),
                Err(e) => Err(format!("cron: {expr:?}: {e}")),
            }
        }
    }
}

fn ms_to_utc(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default()
}

/// The latest due time of `when` at or before `now_ms` and at or after `from_ms`, and how
/// many there were (at most [`MISSED_COUNT_MAX`]).
fn missed_between(when: &When, from_ms: u64, now_ms: u64) -> Result<(Option<u64>, u64), String> {
    let mut latest = None;
    let mut count = 0;
    let mut due = Some(from_ms);
    while let Some(t) = due {
        if t > now_ms || count >= MISSED_COUNT_MAX {
            break;
        }
        latest = Some(t);
        count += 1;
        due = next_after(when, t)?;
    }
    Ok((latest, count))
}

/// The run id of `schedule`'s firing for `due_ms`: 32 hex digits of a SHA-256, so two
/// firings of one due time name one run.
fn run_id(schedule: &str, due_ms: u64) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("aios-schedule/{schedule}/{due_ms}"));
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn key(id: &str) -> String {
    format!("{SCHED_PREFIX}{id}")
}

impl ScheduleSpec {
    /// Checks every field and computes when the schedule fires; `now_ms` is the time of
    /// creation.
    ///
    /// # Errors
    /// Names the field.
    pub fn to_schedule(&self, tenant: &str, now_ms: u64) -> Result<Schedule, String> {
        validate_name(&self.name).map_err(|e| format!("name: {e}"))?;
        if self.task.trim().is_empty() || self.task.len() > RUN_TASK_LEN_MAX {
            return Err(format!(
                "task: must be 1..={RUN_TASK_LEN_MAX} bytes and not blank"
            ));
        }
        if let Some(p) = &self.planner {
            validate_name(p).map_err(|e| format!("planner: {e}"))?;
        }
        let when = match (&self.cron, self.at_ms, self.delay_s) {
            (Some(expr), None, None) => {
                parse_cron(expr)?;
                let timezone = self.timezone.clone().unwrap_or_else(|| "UTC".into());
                parse_timezone(&timezone)?;
                When::Cron {
                    expr: expr.trim().to_string(),
                    timezone,
                }
            }
            (None, Some(at_ms), None) => {
                if at_ms <= now_ms {
                    return Err(format!("at_ms: {at_ms} is not in the future"));
                }
                if at_ms - now_ms > DELAY_MAX.as_millis() as u64 {
                    return Err("at_ms: more than 10 years ahead".into());
                }
                When::Once { at_ms }
            }
            (None, None, Some(delay_s)) => {
                if delay_s == 0 || delay_s > DELAY_MAX.as_secs() {
                    return Err(format!(
                        "delay_s: must be 1..={} seconds",
                        DELAY_MAX.as_secs()
                    ));
                }
                When::Once {
                    at_ms: now_ms + delay_s * 1000,
                }
            }
            _ => return Err("give exactly one of cron, at_ms and delay_s".into()),
        };
        if self.timezone.is_some() && self.cron.is_none() {
            return Err("timezone: only with cron".into());
        }
        let next_due_ms = next_after(&when, now_ms)?;
        if next_due_ms.is_none() {
            return Err("cron: the expression never matches a future time".into());
        }
        Ok(Schedule {
            id: uuid::Uuid::new_v4().simple().to_string(),
            tenant: tenant.to_string(),
            name: self.name.clone(),
            when,
            task: self.task.clone(),
            planner: self.planner.clone(),
            on_missed: self.on_missed,
            paused: false,
            created_ms: now_ms,
            next_due_ms,
            last_due_ms: None,
            last_run: None,
            fired: 0,
            missed: 0,
            last_error: None,
        })
    }
}

/// The scheduler worker's messages.
pub(crate) enum ScheduleMsg {
    /// Look for due schedules.
    Tick,
}

/// The schedules of a node: the API's handle.
#[derive(Clone)]
pub struct Schedules {
    inner: Arc<Inner>,
}

struct Inner {
    records: Records,
    orchestrator: Orchestrator,
    config: ScheduleConfig,
    /// The schedules, loaded at start; written through. On the firing node, kept in step
    /// with the store ([`REFRESH_EVERY`]); elsewhere re-read when asked.
    all: Mutex<BTreeMap<String, Schedule>>,
    worker: std::sync::OnceLock<ActorHandle<ScheduleMsg>>,
    /// Whether this node fires the schedules (holds [`LEADER_KEY`]).
    firing: AtomicBool,
    /// When the firing node last re-read which schedules exist.
    refreshed: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl std::fmt::Debug for Schedules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedules")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Schedules {
    /// Loads the schedules and starts their worker under `supervisor`, with a ticker.
    ///
    /// # Errors
    /// Store or supervisor failures.
    pub async fn start(
        orchestrator: Orchestrator,
        supervisor: &SupervisorRef,
        records: Records,
        config: ScheduleConfig,
    ) -> Result<Self, OrchestrationError> {
        let all = load_all(&records).await?;
        let inner = Arc::new(Inner {
            records,
            orchestrator,
            config,
            all: Mutex::new(all),
            worker: std::sync::OnceLock::new(),
            firing: AtomicBool::new(false),
            refreshed: std::sync::Mutex::new(None),
        });
        let (spec, handle) = WorkerSpec::new(
            "schedules",
            ScheduleWorker {
                inner: inner.clone(),
            },
        )
        .restart(Restart::Permanent)
        .mailbox_len_max(4)
        .build();
        supervisor.start_child(spec).await.map_err(unavailable)?;
        let _ = inner.worker.set(handle.clone());
        // The ticker ends with the process; a tick the worker cannot take now (full mailbox,
        // restarting) is simply the next one.
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let _ = handle.cast(ScheduleMsg::Tick);
            }
        });
        Ok(Self { inner })
    }

    /// Creates a schedule for `tenant`.
    ///
    /// # Errors
    /// [`OrchestrationError::Invalid`] naming the field, [`OrchestrationError::Busy`] past
    /// [`SCHEDULES_MAX`], or a store failure.
    pub async fn create(
        &self,
        tenant: &str,
        spec: &ScheduleSpec,
    ) -> Result<Schedule, OrchestrationError> {
        let schedule = spec
            .to_schedule(tenant, unix_ms())
            .map_err(OrchestrationError::Invalid)?;
        let mut all = self.inner.all.lock().await;
        if all.len() >= SCHEDULES_MAX {
            return Err(OrchestrationError::Busy(format!(
                "{SCHEDULES_MAX} schedules exist; delete some first"
            )));
        }
        self.inner.save(&schedule).await?;
        all.insert(schedule.id.clone(), schedule.clone());
        tracing::info!(schedule = %schedule.id, tenant, name = %schedule.name, "schedule created");
        Ok(schedule)
    }

    /// The schedules of `tenant` (every tenant's with `None`), by id, as the store has them
    /// (on a shared store, another node may have changed them).
    ///
    /// # Errors
    /// A store failure.
    pub async fn list(&self, tenant: Option<&str>) -> Result<Vec<Schedule>, OrchestrationError> {
        let mut all = self.inner.all.lock().await;
        *all = load_all(&self.inner.records).await?;
        Ok(all
            .values()
            .filter(|s| tenant.is_none_or(|t| s.tenant == t))
            .cloned()
            .collect())
    }

    /// One schedule, as the store has it.
    ///
    /// # Errors
    /// A store failure.
    pub async fn get(&self, id: &str) -> Result<Option<Schedule>, OrchestrationError> {
        self.inner
            .records
            .get::<Schedule>(&key(id))
            .await
            .map_err(unavailable)
    }

    /// Whether this node fires the schedules (on a shared store, one node does).
    pub fn fires_here(&self) -> bool {
        self.inner.firing.load(Ordering::Acquire)
    }

    /// Deletes a schedule; returns whether it existed.
    ///
    /// # Errors
    /// A store failure.
    pub async fn delete(&self, id: &str) -> Result<bool, OrchestrationError> {
        let mut all = self.inner.all.lock().await;
        let known = all.remove(id).is_some()
            || self
                .inner
                .records
                .get::<Schedule>(&key(id))
                .await
                .map_err(unavailable)?
                .is_some();
        if !known {
            return Ok(false);
        }
        self.inner
            .records
            .delete(&key(id))
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    /// Pauses or resumes a schedule; returns it, or `None` when unknown. Due times passed
    /// while paused are skipped: a resumed schedule fires next at its next due time from now.
    ///
    /// # Errors
    /// A store failure.
    pub async fn set_paused(
        &self,
        id: &str,
        paused: bool,
    ) -> Result<Option<Schedule>, OrchestrationError> {
        let mut all = self.inner.all.lock().await;
        // The record, not this node's copy: another node may fire it and count its firings.
        let Some(mut s) = self
            .inner
            .records
            .get::<Schedule>(&key(id))
            .await
            .map_err(unavailable)?
        else {
            all.remove(id);
            return Ok(None);
        };
        s.paused = paused;
        if !paused && s.next_due_ms.is_some() {
            s.next_due_ms = next_after(&s.when, unix_ms()).map_err(OrchestrationError::Invalid)?;
        }
        self.inner.save(&s).await?;
        all.insert(id.to_string(), s.clone());
        Ok(Some(s))
    }
}

/// Every schedule of the store, by id.
async fn load_all(records: &Records) -> Result<BTreeMap<String, Schedule>, OrchestrationError> {
    let mut all = BTreeMap::new();
    for k in records
        .keys(SCHED_PREFIX, SCHEDULES_MAX)
        .await
        .map_err(unavailable)?
    {
        match records.get::<Schedule>(&k).await {
            Ok(Some(s)) => {
                all.insert(s.id.clone(), s);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(key = %k, error = %e, "unreadable schedule skipped"),
        }
    }
    Ok(all)
}

impl Inner {
    async fn save(&self, s: &Schedule) -> Result<(), OrchestrationError> {
        self.records
            .put(&key(&s.id), s, Durability::Durable)
            .await
            .map_err(unavailable)
    }

    /// True when this node fires the schedules: it holds [`LEADER_KEY`], or takes it now
    /// that it is free (and then reads the schedules from the store, as the node that fired
    /// them before left them).
    async fn lead(&self) -> bool {
        let snapshots = self.records.snapshots();
        if self.firing.load(Ordering::Acquire) {
            if snapshots.check_lease(LEADER_KEY).is_ok() {
                return true;
            }
            self.firing.store(false, Ordering::Release);
            tracing::warn!("this node lost the lease to fire schedules");
        }
        if let Err(e) = snapshots.acquire(LEADER_KEY).await {
            tracing::debug!(error = %e, "another node fires the schedules");
            return false;
        }
        let mut all = self.all.lock().await;
        match load_all(&self.records).await {
            Ok(loaded) => *all = loaded,
            Err(e) => {
                tracing::error!(error = %e, "reading the schedules failed; not firing them");
                if let Err(e) = snapshots.release(LEADER_KEY).await {
                    tracing::warn!(error = %e, "releasing the lease to fire schedules");
                }
                return false;
            }
        }
        *self.refreshed_at() = Some(tokio::time::Instant::now());
        self.firing.store(true, Ordering::Release);
        tracing::info!(schedules = all.len(), "this node fires the schedules");
        true
    }

    fn refreshed_at(&self) -> std::sync::MutexGuard<'_, Option<tokio::time::Instant>> {
        // A poisoned lock only means a panic while holding an `Option<Instant>`: still valid.
        self.refreshed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds the schedules created through other nodes, drops those deleted there, and reads
    /// the paused ones again.
    async fn refresh(&self, all: &mut BTreeMap<String, Schedule>) {
        let keys = match self.records.keys(SCHED_PREFIX, SCHEDULES_MAX).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "re-reading the schedules failed");
                return;
            }
        };
        let ids: std::collections::BTreeSet<&str> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(SCHED_PREFIX))
            .collect();
        all.retain(|id, _| ids.contains(id.as_str()));
        for id in ids {
            // Paused ones are read again too: resumed through another node, they are due.
            if all.get(id).is_some_and(|s| !s.paused) {
                continue;
            }
            match self.records.get::<Schedule>(&key(id)).await {
                Ok(Some(s)) => {
                    all.insert(s.id.clone(), s);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(schedule = %id, error = %e, "unreadable schedule skipped")
                }
            }
        }
        *self.refreshed_at() = Some(tokio::time::Instant::now());
    }

    /// Fires every due schedule, when this node fires them.
    async fn tick(&self) {
        if !self.lead().await {
            return;
        }
        let now = unix_ms();
        let mut all = self.all.lock().await;
        let stale = self
            .refreshed_at()
            .is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
        if stale {
            self.refresh(&mut all).await;
        }
        let due: Vec<String> = all
            .values()
            .filter(|s| !s.paused && s.next_due_ms.is_some_and(|t| t <= now))
            .map(|s| s.id.clone())
            .collect();
        for id in due {
            // The record is the truth: paused, resumed or deleted through another node.
            let mut s = match self.records.get::<Schedule>(&key(&id)).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    all.remove(&id);
                    continue;
                }
                Err(e) => {
                    tracing::error!(schedule = %id, error = %e, "reading a due schedule failed");
                    continue;
                }
            };
            if s.paused || s.next_due_ms.is_none_or(|t| t > now) {
                all.insert(id, s);
                continue;
            }
            if let Err(e) = self.advance(&mut s, now).await {
                tracing::error!(schedule = %id, error = %e, "a schedule could not fire");
                s.last_error = Some(e);
            }
            // Paused or deleted through another node while this one fired: kept so. (A
            // change between this read and the write below, microseconds apart, is lost: a
            // pause is undone, a deletion too, the schedule written back.)
            match self.records.get::<Schedule>(&key(&id)).await {
                Ok(None) => {
                    all.remove(&id);
                    continue;
                }
                Ok(Some(fresh)) if fresh.paused => s.paused = true,
                _ => {}
            }
            match self.save(&s).await {
                Ok(()) => {
                    all.insert(id, s);
                }
                // Not advanced on disk: the same due time fires again (and finds its run).
                Err(e) => tracing::error!(schedule = %id, error = %e, "saving a schedule failed"),
            }
        }
    }

    /// Fires `s`'s due times up to `now` by its policy and moves `next_due_ms` past them.
    async fn advance(&self, s: &mut Schedule, now: u64) -> Result<(), String> {
        let missed_after = self.config.missed_after.as_millis() as u64;
        for _ in 0..FIRINGS_PER_TICK_MAX {
            let Some(due) = s.next_due_ms.filter(|&t| t <= now) else {
                return Ok(());
            };
            // Fired just before a crash that lost the schedule's record: counted, not
            // fired again, whatever the policy.
            if self.orchestrator.run_exists(&run_id(&s.id, due)).await {
                self.fire(s, due).await;
                s.next_due_ms = next_after(&s.when, due)?;
                continue;
            }
            if now - due > missed_after {
                let (latest, count) = missed_between(&s.when, due, now)?;
                match (s.on_missed, latest) {
                    (OnMissed::RunOnce, Some(latest)) => {
                        s.missed += count - 1;
                        self.fire(s, latest).await;
                        s.next_due_ms = next_after(&s.when, latest)?;
                    }
                    _ => {
                        s.missed += count;
                        s.next_due_ms = next_after(&s.when, now)?;
                    }
                }
                tracing::warn!(
                    schedule = %s.id, missed = count, policy = ?s.on_missed,
                    "due times were missed while the scheduler could not fire"
                );
                continue;
            }
            self.fire(s, due).await;
            s.next_due_ms = next_after(&s.when, due)?;
        }
        Ok(())
    }

    /// Starts the run of `s`'s firing for `due` (once: the run id is the firing's).
    async fn fire(&self, s: &mut Schedule, due: u64) {
        let mut spec = RunSpec::new(s.task.clone());
        spec.tenant = s.tenant.clone();
        spec.planner = s.planner.clone();
        let id = run_id(&s.id, due);
        // A tenant out of LLM budget gets no run (its calls would be refused one by one);
        // the firing counts as due and says why.
        if let Some(Err(e)) = self.orchestrator.shared.system.router().quota().map(|q| {
            q.check(if s.tenant.is_empty() {
                "default"
            } else {
                &s.tenant
            })
        }) {
            tracing::warn!(schedule = %s.id, run = %id, error = %e, "a scheduled run was not started");
            s.last_error = Some(e.to_string());
            s.last_due_ms = Some(due);
            return;
        }
        match self.orchestrator.start_with_id(&id, spec).await {
            // `started` is false when the run existed: this due time fired before a crash
            // lost the schedule's record of it, and counts now.
            Ok(started) => {
                tracing::info!(schedule = %s.id, run = %id, due_ms = due, started, "schedule fired");
                s.fired += 1;
                s.last_run = Some(id);
                s.last_error = None;
            }
            Err(e) => {
                tracing::warn!(schedule = %s.id, run = %id, error = %e, "a scheduled run did not start");
                s.last_error = Some(e.to_string());
            }
        }
        s.last_due_ms = Some(due);
    }
}

/// The supervised worker that fires due schedules.
struct ScheduleWorker {
    inner: Arc<Inner>,
}

impl Worker for ScheduleWorker {
    type Msg = ScheduleMsg;
    type State = ();

    async fn init(
        &self,
        _ctx: &mut Context<ScheduleMsg>,
        _restored: Option<()>,
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _ctx: &mut Context<ScheduleMsg>,
        msg: ScheduleMsg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ScheduleMsg::Tick => self.inner.tick().await,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cron: Option<&str>, delay_s: Option<u64>) -> ScheduleSpec {
        ScheduleSpec {
            name: "nightly".into(),
            cron: cron.map(str::to_string),
            delay_s,
            task: "write the report".into(),
            ..ScheduleSpec::default()
        }
    }

    #[test]
    fn specs_are_validated_and_name_the_field() {
        let now = 1_700_000_000_000;
        assert!(spec(Some("0 3 * * *"), None).to_schedule("t", now).is_ok());
        assert!(
            spec(Some("*/5 * * * * *"), None)
                .to_schedule("t", now)
                .is_ok()
        );
        for (bad, field) in [
            (spec(Some("0 3 * *"), None), "cron"),
            (spec(Some("0 3 * * * * 2030"), None), "cron"),
            (spec(Some("61 * * * *"), None), "cron"),
            (spec(None, None), "exactly one"),
            (spec(Some("0 3 * * *"), Some(5)), "exactly one"),
            (spec(None, Some(0)), "delay_s"),
        ] {
            let e = bad.to_schedule("t", now).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
        let mut tz = spec(Some("0 3 * * *"), None);
        tz.timezone = Some("Mars/Olympus".into());
        assert!(tz.to_schedule("t", now).unwrap_err().contains("timezone"));
        let mut past = spec(None, None);
        past.at_ms = Some(now - 1);
        assert!(past.to_schedule("t", now).unwrap_err().contains("at_ms"));
        let mut blank = spec(None, Some(5));
        blank.task = "  ".into();
        assert!(blank.to_schedule("t", now).unwrap_err().contains("task"));
    }

    #[test]
    fn cron_due_times_follow_the_time_zone() {
        // 2024-03-30 12:00 UTC; Oslo is UTC+1 until the 31st, then UTC+2.
        let now = 1_711_800_000_000;
        let oslo = When::Cron {
            expr: "0 3 * * *".into(),
            timezone: "Europe/Oslo".into(),
        };
        let first = next_after(&oslo, now).expect("valid").expect("some");
        assert_eq!(ms_to_utc(first).to_rfc3339(), "2024-03-31T01:00:00+00:00");
        let second = next_after(&oslo, first).expect("valid").expect("some");
        assert_eq!(ms_to_utc(second).to_rfc3339(), "2024-04-01T01:00:00+00:00");
        // Due times are whole seconds whatever the fraction of the start.
        let every_second = When::Cron {
            expr: "* * * * * *".into(),
            timezone: "UTC".into(),
        };
        assert_eq!(next_after(&every_second, now + 623), Ok(Some(now + 1000)));
        assert_eq!(next_after(&every_second, now + 1000), Ok(Some(now + 2000)));
        let once = When::Once { at_ms: now + 5 };
        assert_eq!(next_after(&once, now), Ok(Some(now + 5)));
        assert_eq!(next_after(&once, now + 5), Ok(None));
    }

    #[test]
    fn missed_due_times_are_counted_and_the_latest_found() {
        let every_10s = When::Cron {
            expr: "*/10 * * * * *".into(),
            timezone: "UTC".into(),
        };
        let from = 1_700_000_000_000; // a multiple of 10 s
        let (latest, count) = missed_between(&every_10s, from, from + 35_000).expect("valid");
        assert_eq!((latest, count), (Some(from + 30_000), 4));
    }

    #[test]
    fn a_firing_names_one_run() {
        assert_eq!(run_id("s1", 5), run_id("s1", 5));
        assert_ne!(run_id("s1", 5), run_id("s1", 6));
        assert_eq!(run_id("s1", 5).len(), 32);
    }
}
