//! Retention of history: how long and how many agent transcript entries, session entries and
//! finished runs are kept, by age and by count, globally, per tenant and per agent; and the
//! passes that remove the rest ([`prune_transcripts`] here; the orchestrator's
//! `prune_sessions` and `prune_runs`, which use [`delete_keys`]). The daemon runs them as a background
//! job with the audit log's own pruning.
//!
//! What retention never removes: an agent's snapshot (its live conversation and summary),
//! a session's metadata, and a run that has not finished or is still active.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aios_supervisor::snapshot::SnapshotError;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use aios_core::keyspace::AGENT_TRANSCRIPT as TRANSCRIPT_PREFIX;

use crate::agent::transcript::TranscriptEntry;
use aios_core::records::Records;

/// Keys listed per page while scanning.
const SCAN_PAGE: usize = 1000;
/// Deletes in flight at once (the store's group commit makes them share syncs).
pub const DELETES_IN_FLIGHT: usize = 64;

/// How much of one kind of history to keep. Unlimited when both are `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    /// Remove what is older than this.
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Keep at most this many (per agent instance, per session, per tenant for runs).
    #[serde(default)]
    pub max_count: Option<u64>,
}

impl Keep {
    /// Checks the bounds.
    ///
    /// # Errors
    /// Names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_count == Some(0) {
            return Err("max_count must be at least 1".into());
        }
        if self.max_age.is_some_and(|a| a.is_zero()) {
            return Err("max_age must be more than zero".into());
        }
        Ok(())
    }

    /// Overrides `self` with what `other` sets.
    #[must_use]
    pub fn or(self, other: Option<Keep>) -> Keep {
        match other {
            Some(o) => Keep {
                max_age: o.max_age.or(self.max_age),
                max_count: o.max_count.or(self.max_count),
            },
            None => self,
        }
    }

    /// How many of `n` items, oldest first, go by count.
    pub fn over_count(&self, n: u64) -> u64 {
        self.max_count.map_or(0, |m| n.saturating_sub(m))
    }

    /// The time before which items go by age, given `now_ms`.
    pub fn cutoff_ms(&self, now_ms: u64) -> Option<u64> {
        self.max_age
            .map(|a| now_ms.saturating_sub(a.as_millis() as u64))
    }
}

/// Retention of one tenant (overrides the global policy where set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantKeep {
    /// Agent transcripts, per instance.
    pub transcripts: Option<Keep>,
    /// Session entries, per session.
    pub sessions: Option<Keep>,
    /// Finished runs, per tenant.
    pub runs: Option<Keep>,
}

/// What history is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionPolicy {
    /// Agent transcripts, per instance.
    pub transcripts: Keep,
    /// Session entries, per session.
    pub sessions: Keep,
    /// Finished runs, per tenant.
    pub runs: Keep,
    /// Per tenant.
    pub tenants: BTreeMap<String, TenantKeep>,
    /// Agent transcripts per agent (its full name, `<tenant>.<name>` in the daemon).
    pub agents: BTreeMap<String, Keep>,
}

impl RetentionPolicy {
    /// Checks every bound.
    ///
    /// # Errors
    /// Names the section and field.
    pub fn validate(&self) -> Result<(), String> {
        let check = |what: &str, k: &Keep| k.validate().map_err(|e| format!("{what}.{e}"));
        check("transcripts", &self.transcripts)?;
        check("sessions", &self.sessions)?;
        check("runs", &self.runs)?;
        for (t, k) in &self.tenants {
            for (what, keep) in [
                ("transcripts", &k.transcripts),
                ("sessions", &k.sessions),
                ("runs", &k.runs),
            ] {
                if let Some(keep) = keep {
                    check(&format!("tenants.{t}.{what}"), keep)?;
                }
            }
        }
        for (a, k) in &self.agents {
            check(&format!("agents.{a}"), k)?;
        }
        Ok(())
    }

    /// The tenant of an agent's full name (`<tenant>.<name>`; `default` without a dot).
    fn tenant_of(agent: &str) -> &str {
        agent.split_once('.').map_or("default", |(t, _)| t)
    }

    /// Transcript retention of agent `agent` (its full name).
    pub fn transcripts_of(&self, agent: &str) -> Keep {
        let tenant = self
            .tenants
            .get(Self::tenant_of(agent))
            .and_then(|t| t.transcripts);
        self.transcripts
            .or(tenant)
            .or(self.agents.get(agent).copied())
    }

    /// Session retention of `tenant`.
    pub fn sessions_of(&self, tenant: &str) -> Keep {
        self.sessions
            .or(self.tenants.get(tenant).and_then(|t| t.sessions))
    }

    /// Run retention of `tenant`.
    pub fn runs_of(&self, tenant: &str) -> Keep {
        self.runs.or(self.tenants.get(tenant).and_then(|t| t.runs))
    }

    /// True when nothing is limited (the passes have nothing to do).
    pub fn keeps_everything(&self) -> bool {
        let unlimited = |k: &Keep| k.max_age.is_none() && k.max_count.is_none();
        unlimited(&self.transcripts)
            && unlimited(&self.sessions)
            && unlimited(&self.runs)
            && self.tenants.values().all(|t| {
                [t.transcripts, t.sessions, t.runs]
                    .iter()
                    .flatten()
                    .all(unlimited)
            })
            && self.agents.values().all(unlimited)
    }
}

/// Counters a pass advances as it goes (for progress metrics).
#[derive(Debug, Default)]
pub struct Progress {
    /// Items looked at.
    pub scanned: AtomicU64,
    /// Items removed.
    pub removed: AtomicU64,
}

/// Deletes `keys`, [`DELETES_IN_FLIGHT`] at a time.
///
/// # Errors
/// The first store failure (the others may have been deleted).
pub async fn delete_keys(records: &Records, keys: Vec<String>) -> Result<u64, SnapshotError> {
    let n = keys.len() as u64;
    let mut deletes = futures_util::stream::iter(keys)
        .map(|k| async move { records.delete(&k).await })
        .buffer_unordered(DELETES_IN_FLIGHT);
    while let Some(r) = deletes.next().await {
        r?;
    }
    Ok(n)
}

/// Removes agent transcript entries beyond `policy`, instance by instance; returns how many.
///
/// # Errors
/// Store failures.
pub async fn prune_transcripts(
    records: &Records,
    policy: &RetentionPolicy,
    now_ms: u64,
    progress: &Progress,
) -> Result<u64, SnapshotError> {
    let mut removed = 0;
    let mut after: Option<String> = None;
    let mut group: Vec<String> = Vec::new();
    let mut group_prefix = String::new();
    loop {
        let keys = records
            .keys_after(TRANSCRIPT_PREFIX, after.as_deref(), SCAN_PAGE)
            .await?;
        let Some(last) = keys.last().cloned() else {
            break;
        };
        progress
            .scanned
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        for k in keys {
            let prefix = k.rsplit_once('/').map_or("", |(p, _)| p);
            if prefix != group_prefix {
                let n = prune_instance(records, policy, &group_prefix, &group, now_ms).await?;
                removed += n;
                progress.removed.fetch_add(n, Ordering::Relaxed);
                group.clear();
                group_prefix = prefix.to_string();
            }
            group.push(k);
        }
        after = Some(last);
    }
    let n = prune_instance(records, policy, &group_prefix, &group, now_ms).await?;
    progress.removed.fetch_add(n, Ordering::Relaxed);
    Ok(removed + n)
}

/// One instance's transcript: `keys` in seq order under `prefix` (`agentlog/<agent>/<key>`).
async fn prune_instance(
    records: &Records,
    policy: &RetentionPolicy,
    prefix: &str,
    keys: &[String],
    now_ms: u64,
) -> Result<u64, SnapshotError> {
    if keys.is_empty() {
        return Ok(0);
    }
    let agent = prefix
        .strip_prefix(TRANSCRIPT_PREFIX)
        .and_then(|r| r.split('/').next())
        .unwrap_or_default();
    let keep = policy.transcripts_of(agent);
    let mut cut = keep.over_count(keys.len() as u64) as usize;
    if let Some(before) = keep.cutoff_ms(now_ms) {
        while cut < keys.len() {
            match records.get::<TranscriptEntry>(&keys[cut]).await? {
                Some(e) if e.at_ms < before => cut += 1,
                Some(_) => break,
                None => cut += 1,
            }
        }
    }
    delete_keys(records, keys[..cut].to_vec()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(age_s: Option<u64>, count: Option<u64>) -> Keep {
        Keep {
            max_age: age_s.map(Duration::from_secs),
            max_count: count,
        }
    }

    #[test]
    fn agent_settings_override_tenant_settings_override_the_global_ones() {
        let mut p = RetentionPolicy {
            transcripts: keep(Some(100), Some(50)),
            ..RetentionPolicy::default()
        };
        p.tenants.insert(
            "acme".into(),
            TenantKeep {
                transcripts: Some(keep(Some(10), None)),
                ..TenantKeep::default()
            },
        );
        p.agents.insert("acme.support".into(), keep(None, Some(5)));
        assert_eq!(p.transcripts_of("globex.x"), keep(Some(100), Some(50)));
        assert_eq!(p.transcripts_of("acme.x"), keep(Some(10), Some(50)));
        assert_eq!(p.transcripts_of("acme.support"), keep(Some(10), Some(5)));
        assert_eq!(p.transcripts_of("local"), keep(Some(100), Some(50)));
        assert!(!p.keeps_everything());
        assert!(RetentionPolicy::default().keeps_everything());
    }

    #[test]
    fn counts_and_cutoffs() {
        let k = keep(Some(10), Some(3));
        assert_eq!(k.over_count(5), 2);
        assert_eq!(k.over_count(2), 0);
        assert_eq!(k.cutoff_ms(60_000), Some(50_000));
        assert_eq!(keep(None, None).over_count(9), 0);
        assert!(keep(None, Some(0)).validate().is_err());
        let mut p = RetentionPolicy::default();
        p.tenants.insert(
            "t".into(),
            TenantKeep {
                runs: Some(keep(None, Some(0))),
                ..TenantKeep::default()
            },
        );
        assert!(p.validate().unwrap_err().contains("tenants.t.runs"));
    }
}
