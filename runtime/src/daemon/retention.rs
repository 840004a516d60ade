//! The retention job: every `[retention] every` (and on `POST /v1/retention/run`) it removes
//! agent transcript entries, session entries and finished runs beyond the configured
//! policy (global, per tenant, per agent), and audit entries older than `audit.max_age` but
//! never younger than `audit.min_age`, behind a signed checkpoint (see [`super::audit`]).
//! Each pass reports what it removed (`GET /v1/retention`), and its progress is exported
//! as metrics (`aios_retention_running`, `aios_retention_scanned`,
//! `aios_retention_removed`, and `aios_retention_removed_total{kind}`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aios_actors::protocol::unix_ms;
use aios_actors::records::Records;
use aios_actors::retention::{Keep, Progress, RetentionPolicy, TenantKeep, prune_transcripts};
use axum::extract::State;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::http::{Problem, Shared};

/// The `[retention]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How often the job runs (default 1 h).
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// Agent transcripts, per instance.
    pub transcripts: Keep,
    /// Session entries, per session.
    pub sessions: Keep,
    /// Finished runs, per tenant.
    pub runs: Keep,
    /// The audit log.
    pub audit: AuditKeep,
    /// Per tenant: `[retention.tenants.<tenant>]`.
    pub tenants: BTreeMap<String, TenantKeep>,
    /// Agent transcripts per agent: `[retention.agents."<tenant>.<agent>"]`.
    pub agents: BTreeMap<String, Keep>,
}

/// Retention of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditKeep {
    /// Remove entries older than this (never, by default).
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Never remove entries younger than this, whatever `max_age` says (default 30 days).
    #[serde(with = "humantime_serde")]
    pub min_age: Duration,
}

impl Default for AuditKeep {
    fn default() -> Self {
        Self {
            max_age: None,
            min_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl Default for RetentionConfig {
    /// Every hour; everything kept (transcripts and sessions stay bounded by their own caps).
    fn default() -> Self {
        Self {
            every: Duration::from_secs(3600),
            transcripts: Keep::default(),
            sessions: Keep::default(),
            runs: Keep::default(),
            audit: AuditKeep::default(),
            tenants: BTreeMap::new(),
            agents: BTreeMap::new(),
        }
    }
}

impl RetentionConfig {
    /// The policy of transcripts, sessions and runs.
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            transcripts: self.transcripts,
            sessions: self.sessions,
            runs: self.runs,
            tenants: self.tenants.clone(),
            agents: self.agents.clone(),
        }
    }

    /// Checks every bound.
    ///
    /// # Errors
    /// Names the key (`retention.…`).
    pub fn validate(&self) -> Result<(), String> {
        if self.every.is_zero() {
            return Err("retention.every: must be greater than zero".into());
        }
        if self.audit.max_age.is_some_and(|a| a.is_zero()) {
            return Err("retention.audit.max_age: must be greater than zero".into());
        }
        self.policy()
            .validate()
            .map_err(|e| format!("retention.{e}"))
    }

    /// When nothing would ever be removed.
    fn keeps_everything(&self) -> bool {
        self.audit.max_age.is_none() && self.policy().keeps_everything()
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Unix ms.
    pub started_ms: u64,
    /// Unix ms.
    pub finished_ms: u64,
    /// Removed, by kind (`transcripts`, `sessions`, `runs`, `audit`).
    pub removed: BTreeMap<String, u64>,
    /// Items looked at.
    pub scanned: u64,
    /// What failed (the pass goes on with the other kinds).
    pub errors: Vec<String>,
    /// The audit log's first kept entry after the pass, if it was ever pruned.
    pub audit_pruned_before: Option<u64>,
}

/// The job's state in the daemon.
#[derive(Debug, Default)]
pub struct Retention {
    /// One pass at a time.
    pass: tokio::sync::Mutex<()>,
    /// The latest pass's report.
    last: std::sync::Mutex<Option<RetentionReport>>,
}

impl Retention {
    /// The latest pass's report.
    pub fn last(&self) -> Option<RetentionReport> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Runs one pass now (after the running one, if any).
pub async fn run(state: &Shared) -> RetentionReport {
    let _one = state.retention.pass.lock().await;
    let config = &state.config.retention;
    let policy = config.policy();
    let now = unix_ms();
    let mut report = RetentionReport {
        started_ms: now,
        ..RetentionReport::default()
    };
    let progress = Arc::new(Progress::default());
    metrics::gauge!("aios_retention_running").set(1.0);
    let watcher = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            loop {
                every.tick().await;
                metrics::gauge!("aios_retention_scanned")
                    .set(progress.scanned.load(Ordering::Relaxed) as f64);
                metrics::gauge!("aios_retention_removed")
                    .set(progress.removed.load(Ordering::Relaxed) as f64);
            }
        })
    };
    let records = Records::new(state.rt.snapshots().clone());
    let mut done = |kind: &str, r: Result<u64, String>| match r {
        Ok(n) => {
            metrics::counter!("aios_retention_removed_total", "kind" => kind.to_string())
                .increment(n);
            report.removed.insert(kind.to_string(), n);
        }
        Err(e) => {
            tracing::error!(kind, error = %e, "retention failed");
            report.removed.insert(kind.to_string(), 0);
            report.errors.push(format!("{kind}: {e}"));
        }
    };
    done(
        "transcripts",
        prune_transcripts(&records, &policy, now, &progress)
            .await
            .map_err(|e| e.to_string()),
    );
    let orchestrator = state.rt.orchestrator();
    done(
        "sessions",
        orchestrator
            .prune_sessions(&policy, now, &progress)
            .await
            .map_err(|e| e.to_string()),
    );
    done(
        "runs",
        orchestrator
            .prune_runs(&policy, now, &progress)
            .await
            .map_err(|e| e.to_string()),
    );
    let audit = match config.audit.max_age {
        None => Ok(0),
        Some(age) => {
            let age = age.max(config.audit.min_age);
            state
                .audit
                .prune(now.saturating_sub(age.as_millis() as u64))
                .await
                .map_err(|e| e.to_string())
        }
    };
    if let Ok(n) = &audit {
        progress.removed.fetch_add(*n, Ordering::Relaxed);
    }
    done("audit", audit);
    watcher.abort();
    report.scanned = progress.scanned.load(Ordering::Relaxed);
    report.audit_pruned_before = state
        .audit
        .checkpoint()
        .await
        .ok()
        .flatten()
        .map(|c| c.first_seq);
    report.finished_ms = unix_ms();
    metrics::gauge!("aios_retention_scanned").set(report.scanned as f64);
    metrics::gauge!("aios_retention_removed").set(progress.removed.load(Ordering::Relaxed) as f64);
    metrics::gauge!("aios_retention_running").set(0.0);
    tracing::info!(removed = ?report.removed, scanned = report.scanned, "retention pass done");
    *state
        .retention
        .last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(report.clone());
    report
}

/// Runs a pass every `[retention] every` until `stop` (none when the configuration keeps
/// everything).
pub fn spawn(state: Shared, stop: CancellationToken) {
    if state.config.retention.keeps_everything() {
        return;
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(state.config.retention.every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            run(&state).await;
        }
    });
}

/// `GET /v1/retention`: the policy and the latest pass (operator tenant admins).
pub async fn get(State(s): State<Shared>) -> Result<axum::response::Response, Problem> {
    let c = &s.config.retention;
    Ok(axum::Json(json!({
        "every_s": c.every.as_secs(),
        "policy": c.policy(),
        "audit": {
            "max_age_s": c.audit.max_age.map(|a| a.as_secs()),
            "min_age_s": c.audit.min_age.as_secs(),
        },
        "last": s.retention.last(),
    }))
    .into_response())
}

/// `POST /v1/retention/run`: a pass now; answers with its report.
pub async fn run_now(State(s): State<Shared>) -> Result<axum::response::Response, Problem> {
    let report = run(&s).await;
    Ok(axum::Json(report).into_response())
}

/// The audit log's signing key: `AIOS_AUDIT_SIGNING_KEY` (32 bytes or more), else the file
/// `<data_dir>/audit-signing.key`, made (random, mode 0600) the first time.
///
/// # Errors
/// A short key in the environment, or an unreadable or unwritable key file.
pub fn signing_key(data_dir: &std::path::Path) -> Result<Vec<u8>, String> {
    if let Ok(k) = std::env::var("AIOS_AUDIT_SIGNING_KEY") {
        if k.len() < 32 {
            return Err("AIOS_AUDIT_SIGNING_KEY: must be 32 bytes or more".into());
        }
        return Ok(k.into_bytes());
    }
    let path = data_dir.join("audit-signing.key");
    match std::fs::read(&path) {
        Ok(k) if k.len() >= 32 => return Ok(k),
        Ok(_) => return Err(format!("{}: shorter than 32 bytes", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    // 64 hex digits from two random (v4) UUIDs: 244 random bits.
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(key.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(key.into_bytes())
}
