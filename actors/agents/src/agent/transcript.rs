//! An agent instance's transcript: every task's input and outcome, one record each
//! (`agentlog/<agent>/<instance>/<seq, 12 digits>`), so appending costs one write however
//! long the history is. The conversation the model sees is compacted (`super::context`);
//! the transcript is not, and the API reads it. At most [`TRANSCRIPT_ENTRIES_MAX`] entries
//! are kept per instance (the oldest go as new ones arrive); retention may keep fewer.

use aios_supervisor::snapshot::{Durability, SnapshotError};
use serde::{Deserialize, Serialize};

use aios_core::protocol::AgentId;
use aios_core::records::Records;

/// Entries kept per agent instance.
pub const TRANSCRIPT_ENTRIES_MAX: u64 = 10_000;
/// Entries one read returns at most.
pub const TRANSCRIPT_PAGE_MAX: usize = 1000;
/// The prefix of every transcript record.
pub const TRANSCRIPT_PREFIX: &str = aios_core::keyspace::AGENT_TRANSCRIPT;

/// One task as the transcript keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TranscriptEntry {
    /// Position in the instance's transcript, from 0.
    pub seq: u64,
    /// When the task ended, Unix ms.
    pub at_ms: u64,
    /// The task's input.
    pub input: String,
    /// The answer, when the task succeeded.
    pub output: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// LLM calls made (summaries included).
    pub steps: u32,
    /// Tool calls made.
    pub tool_calls: u32,
    /// Cost in nanodollars.
    pub cost_nanos: u64,
    /// The session, if any.
    pub session: Option<String>,
    /// The run, if any.
    pub run: Option<String>,
}

/// The prefix of instance `id`'s transcript.
pub fn transcript_prefix(id: &AgentId) -> String {
    format!("{TRANSCRIPT_PREFIX}{}/{}/", id.name, id.key)
}

fn entry_key(id: &AgentId, seq: u64) -> String {
    format!("{}{seq:012}", transcript_prefix(id))
}

/// Appends `entry` (its `seq` is `next`) and drops entries beyond the bound; returns the new
/// first kept seq. Buffered: the agent's durable snapshot, written before it answers,
/// flushes it (sled writes in order; PostgreSQL commits each write).
pub(crate) async fn append(
    records: &Records,
    id: &AgentId,
    entry: &TranscriptEntry,
    first: u64,
) -> Result<u64, SnapshotError> {
    records
        .put(&entry_key(id, entry.seq), entry, Durability::Buffered)
        .await?;
    let mut first = first;
    while entry.seq + 1 - first > TRANSCRIPT_ENTRIES_MAX {
        records.delete(&entry_key(id, first)).await?;
        first += 1;
    }
    Ok(first)
}

/// Up to `limit` entries of `id`'s transcript from `from` on, oldest first.
///
/// # Errors
/// Store failures.
pub async fn read(
    records: &Records,
    id: &AgentId,
    from: u64,
    limit: usize,
) -> Result<Vec<TranscriptEntry>, SnapshotError> {
    let limit = limit.min(TRANSCRIPT_PAGE_MAX);
    let after = from.checked_sub(1).map(|s| entry_key(id, s));
    let keys = records
        .keys_after(&transcript_prefix(id), after.as_deref(), limit)
        .await?;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        if let Some(e) = records.get::<TranscriptEntry>(&k).await? {
            out.push(e);
        }
    }
    Ok(out)
}

/// Deletes `id`'s whole transcript; returns the entries deleted.
///
/// # Errors
/// Store failures.
pub(crate) async fn delete(records: &Records, id: &AgentId) -> Result<u64, SnapshotError> {
    let prefix = transcript_prefix(id);
    let mut deleted = 0;
    loop {
        let keys = records.keys(&prefix, TRANSCRIPT_PAGE_MAX).await?;
        if keys.is_empty() {
            return Ok(deleted);
        }
        for k in keys {
            records.delete(&k).await?;
            deleted += 1;
        }
    }
}
