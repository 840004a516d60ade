//! Sessions: a conversation between a user and an agent or a team, with an id and a
//! persisted history. Each entry is its own record, so appending costs one write however
//! long the history is.

use std::sync::Arc;
use std::time::Duration;

use aios_supervisor::snapshot::Durability;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use super::run::{RUN_TASK_LEN_MAX, RunSpec, RunStatus};
use super::{OrchestrationError, Orchestrator, unavailable};
use crate::agent::{AgentSystem, Task, validate_name};
use aios_core::protocol::{AgentId, unix_ms};
use aios_core::records::Records;

/// Entries a session keeps; older ones are deleted as new ones arrive.
pub const SESSION_ENTRIES_MAX: u64 = 10_000;
/// The longest session title, in bytes.
const TITLE_LEN_MAX: usize = 200;
/// Earlier entries given to a team as context for a new message.
const TEAM_CONTEXT_ENTRIES: u64 = 6;
/// Entries one `history` call returns at most.
const HISTORY_PAGE_MAX: usize = 1000;

const META_PREFIX: &str = aios_core::keyspace::SESSION_META;
const LOG_PREFIX: &str = aios_core::keyspace::SESSION_LOG;

/// Who a session talks to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionTarget {
    /// One agent; the session has its own instance of it (its own conversation).
    Agent {
        /// The agent's name.
        name: String,
    },
    /// A team: every message becomes a run planned by `planner` (or the best agent with
    /// capability `plan`).
    Team {
        /// The planner.
        planner: Option<String>,
    },
}

/// A session's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// 32 hex digits.
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// A title for lists.
    pub title: String,
    /// Who it talks to.
    pub target: SessionTarget,
    /// Unix ms.
    pub created_ms: u64,
    /// Unix ms of the latest entry.
    pub updated_ms: u64,
    /// The seq the next entry gets.
    pub next_seq: u64,
    /// The oldest kept entry's seq.
    pub first_seq: u64,
}

/// Who said an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryRole {
    /// The user.
    User,
    /// The agent or team.
    Assistant,
    /// The system (errors).
    System,
}

/// One entry of a session's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// Position in the session, from 0.
    pub seq: u64,
    /// Who said it.
    pub role: EntryRole,
    /// What was said.
    pub text: String,
    /// Unix ms.
    pub at_ms: u64,
    /// The run that produced it (team sessions).
    pub run: Option<String>,
    /// LLM cost of producing it, in nanodollars.
    pub cost_nanos: u64,
}

fn meta_key(id: &str) -> String {
    format!("{META_PREFIX}{id}")
}

fn entry_key(id: &str, seq: u64) -> String {
    format!("{LOG_PREFIX}{id}/{seq:012}")
}

/// The agent instance key of a session.
pub fn instance_key(id: &str) -> String {
    format!("s-{id}")
}

fn validate_session_id(id: &str) -> Result<(), OrchestrationError> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(OrchestrationError::Invalid(format!(
            "session id {id:?} is not 32 hex digits"
        )))
    }
}

pub(crate) struct Sessions {
    records: Records,
    system: AgentSystem,
    /// One lock per session being written; entries are removed when unused.
    locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl Sessions {
    pub(crate) fn new(records: Records, system: AgentSystem) -> Self {
        Self {
            records,
            system,
            locks: DashMap::new(),
        }
    }

    async fn locked<T>(
        &self,
        id: &str,
        f: impl AsyncFnOnce() -> Result<T, OrchestrationError>,
    ) -> Result<T, OrchestrationError> {
        let lock = self
            .locks
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        let result = {
            let _guard = lock.lock().await;
            f().await
        };
        drop(lock);
        self.locks.remove_if(id, |_, l| Arc::strong_count(l) == 1);
        result
    }

    pub(crate) async fn create(
        &self,
        target: SessionTarget,
        tenant: &str,
        title: &str,
    ) -> Result<SessionInfo, OrchestrationError> {
        let invalid = OrchestrationError::Invalid;
        if title.len() > TITLE_LEN_MAX {
            return Err(invalid(format!("title: longer than {TITLE_LEN_MAX} bytes")));
        }
        match &target {
            SessionTarget::Agent { name }
            | SessionTarget::Team {
                planner: Some(name),
            } => {
                validate_name(name).map_err(invalid)?;
                if self.system.registry().get(name).is_none() {
                    return Err(invalid(format!("no agent named {name:?}")));
                }
            }
            SessionTarget::Team { planner: None } => {}
        }
        let now = unix_ms();
        let info = SessionInfo {
            id: uuid::Uuid::new_v4().simple().to_string(),
            tenant: tenant.to_string(),
            title: title.to_string(),
            target,
            created_ms: now,
            updated_ms: now,
            next_seq: 0,
            first_seq: 0,
        };
        self.records
            .put(&meta_key(&info.id), &info, Durability::Durable)
            .await
            .map_err(unavailable)?;
        Ok(info)
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<SessionInfo>, OrchestrationError> {
        validate_session_id(id)?;
        self.records.get(&meta_key(id)).await.map_err(unavailable)
    }

    async fn must_get(&self, id: &str) -> Result<SessionInfo, OrchestrationError> {
        self.get(id)
            .await?
            .ok_or_else(|| OrchestrationError::SessionNotFound(id.to_string()))
    }

    pub(crate) async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, OrchestrationError> {
        let after = after.map(meta_key);
        let keys = self
            .records
            .keys_after(META_PREFIX, after.as_deref(), limit)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(info) = self.records.get(&key).await.map_err(unavailable)? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Appends an entry durably and advances the metadata, deleting the oldest entry beyond
    /// [`SESSION_ENTRIES_MAX`].
    async fn append(
        &self,
        info: &mut SessionInfo,
        role: EntryRole,
        text: String,
        run: Option<String>,
        cost_nanos: u64,
    ) -> Result<SessionEntry, OrchestrationError> {
        let entry = SessionEntry {
            seq: info.next_seq,
            role,
            text,
            at_ms: unix_ms(),
            run,
            cost_nanos,
        };
        self.records
            .put(&entry_key(&info.id, entry.seq), &entry, Durability::Durable)
            .await
            .map_err(unavailable)?;
        info.next_seq += 1;
        info.updated_ms = entry.at_ms;
        while info.next_seq - info.first_seq > SESSION_ENTRIES_MAX {
            self.records
                .delete(&entry_key(&info.id, info.first_seq))
                .await
                .map_err(unavailable)?;
            info.first_seq += 1;
        }
        self.records
            .put(&meta_key(&info.id), info, Durability::Durable)
            .await
            .map_err(unavailable)?;
        Ok(entry)
    }

    pub(crate) async fn say(
        &self,
        orchestrator: &Orchestrator,
        id: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<SessionEntry, OrchestrationError> {
        if text.trim().is_empty() {
            return Err(OrchestrationError::Invalid("text: empty".into()));
        }
        if text.len() > RUN_TASK_LEN_MAX {
            return Err(OrchestrationError::Invalid(format!(
                "text: longer than {RUN_TASK_LEN_MAX} bytes"
            )));
        }
        validate_session_id(id)?;
        self.locked(id, async || {
            let mut info = self.must_get(id).await?;
            let context = match info.target {
                SessionTarget::Team { .. } => {
                    let from = info.next_seq.saturating_sub(TEAM_CONTEXT_ENTRIES);
                    self.history(id, from, HISTORY_PAGE_MAX).await?
                }
                SessionTarget::Agent { .. } => Vec::new(),
            };
            self.append(&mut info, EntryRole::User, text.to_string(), None, 0)
                .await?;
            let answer = self
                .answer(orchestrator, &info, text, context, timeout)
                .await;
            match answer {
                Ok((reply, run, cost)) => {
                    self.append(&mut info, EntryRole::Assistant, reply, run, cost)
                        .await
                }
                Err((e, run)) => {
                    self.append(&mut info, EntryRole::System, format!("error: {e}"), run, 0)
                        .await?;
                    Err(e)
                }
            }
        })
        .await
    }

    /// The agent's or team's answer: (text, run, cost) or (error, run).
    async fn answer(
        &self,
        orchestrator: &Orchestrator,
        info: &SessionInfo,
        text: &str,
        context: Vec<SessionEntry>,
        timeout: Duration,
    ) -> Result<(String, Option<String>, u64), (OrchestrationError, Option<String>)> {
        match &info.target {
            SessionTarget::Agent { name } => {
                let task = Task {
                    input: text.to_string(),
                    tenant: info.tenant.clone(),
                    session: Some(info.id.clone()),
                    ..Task::default()
                };
                let id = AgentId::new(name.clone(), instance_key(&info.id));
                match tokio::time::timeout(timeout, self.system.ask(&id, task)).await {
                    Ok(Ok(out)) => Ok((out.text, None, out.cost_nanos)),
                    Ok(Err(e)) => Err((unavailable(e), None)),
                    Err(_) => Err((OrchestrationError::Timeout(info.id.clone()), None)),
                }
            }
            SessionTarget::Team { planner } => {
                let mut task = String::new();
                if !context.is_empty() {
                    task.push_str("Conversation so far:\n");
                    // The context shares the task's size limit with the new message.
                    let room = RUN_TASK_LEN_MAX.saturating_sub(text.len() + 64);
                    let per_entry = room / context.len().max(1) / 2;
                    for e in &context {
                        let who = match e.role {
                            EntryRole::User => "user",
                            EntryRole::Assistant => "assistant",
                            EntryRole::System => "system",
                        };
                        let mut end = e.text.len().min(per_entry);
                        while !e.text.is_char_boundary(end) {
                            end -= 1;
                        }
                        task.push_str(&format!("{who}: {}\n", &e.text[..end]));
                    }
                    task.push_str("\nNew message: ");
                }
                task.push_str(text);
                let mut spec = RunSpec::new(task);
                spec.tenant = info.tenant.clone();
                spec.session = Some(info.id.clone());
                spec.planner = planner.clone();
                let run = orchestrator.start(spec).await.map_err(|e| (e, None))?;
                let state = orchestrator
                    .wait(&run, timeout)
                    .await
                    .map_err(|e| (e, Some(run.clone())))?;
                match (state.status, state.answer) {
                    (RunStatus::Succeeded, Some(answer)) => {
                        Ok((answer, Some(run), state.cost_nanos))
                    }
                    (status, _) => Err((
                        OrchestrationError::RunFailed(format!(
                            "run {run} ended {}: {}",
                            status.as_str(),
                            state.error.unwrap_or_default()
                        )),
                        Some(run),
                    )),
                }
            }
        }
    }

    /// See [`super::Orchestrator::prune_sessions`].
    pub(crate) async fn prune(
        &self,
        policy: &crate::retention::RetentionPolicy,
        now_ms: u64,
        progress: &crate::retention::Progress,
    ) -> Result<u64, OrchestrationError> {
        use std::sync::atomic::Ordering;
        let mut removed = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self.list(after.as_deref(), HISTORY_PAGE_MAX).await?;
            let Some(last) = page.last().map(|s| s.id.clone()) else {
                return Ok(removed);
            };
            for info in page {
                progress.scanned.fetch_add(1, Ordering::Relaxed);
                let keep = policy.sessions_of(&info.tenant);
                if keep.max_age.is_none() && keep.max_count.is_none() {
                    continue;
                }
                let n = self
                    .locked(&info.id, async || {
                        // Read again under the lock: a message may have come since.
                        let Some(mut info) = self.get(&info.id).await? else {
                            return Ok(0);
                        };
                        let mut first =
                            info.first_seq + keep.over_count(info.next_seq - info.first_seq);
                        if let Some(before) = keep.cutoff_ms(now_ms) {
                            while first < info.next_seq {
                                match self
                                    .records
                                    .get::<SessionEntry>(&entry_key(&info.id, first))
                                    .await
                                    .map_err(unavailable)?
                                {
                                    Some(e) if e.at_ms >= before => break,
                                    _ => first += 1,
                                }
                            }
                        }
                        if first == info.first_seq {
                            return Ok(0);
                        }
                        // The metadata first: a crash part-way leaves orphans, never holes.
                        let old = info.first_seq;
                        info.first_seq = first;
                        self.records
                            .put(&meta_key(&info.id), &info, Durability::Durable)
                            .await
                            .map_err(unavailable)?;
                        let keys = (old..first).map(|s| entry_key(&info.id, s)).collect();
                        crate::retention::delete_keys(&self.records, keys)
                            .await
                            .map_err(unavailable)
                    })
                    .await?;
                removed += n;
                progress.removed.fetch_add(n, Ordering::Relaxed);
            }
            after = Some(last);
        }
    }

    pub(crate) async fn history(
        &self,
        id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<SessionEntry>, OrchestrationError> {
        let info = self.must_get(id).await?;
        let limit = limit.min(HISTORY_PAGE_MAX) as u64;
        let mut out = Vec::new();
        let start = from.max(info.first_seq);
        let mut seq = start;
        while seq < info.next_seq && (out.len() as u64) < limit {
            if let Some(e) = self
                .records
                .get(&entry_key(id, seq))
                .await
                .map_err(unavailable)?
            {
                out.push(e);
            }
            seq += 1;
        }
        Ok(out)
    }

    pub(crate) async fn delete(&self, id: &str) -> Result<(), OrchestrationError> {
        validate_session_id(id)?;
        self.locked(id, async || {
            let info = self.must_get(id).await?;
            // Metadata first: a crash part-way leaves orphan entries, never a session with
            // holes.
            self.records
                .delete(&meta_key(id))
                .await
                .map_err(unavailable)?;
            for seq in info.first_seq..info.next_seq {
                self.records
                    .delete(&entry_key(id, seq))
                    .await
                    .map_err(unavailable)?;
            }
            if let SessionTarget::Agent { name } = &info.target
                && let Err(e) = self
                    .system
                    .forget(&AgentId::new(name.clone(), instance_key(id)))
                    .await
            {
                tracing::warn!(session = %id, error = %e, "forgetting the session's agent instance");
            }
            Ok(())
        })
        .await
    }
}
