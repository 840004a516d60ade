//! The audit log: append-only and hash-chained in the node's store. Entry `n` holds
//! `hash = SHA-256(prev_hash ‖ canonical JSON of the entry without its hash)`, where
//! `prev_hash` is entry `n−1`'s hash (zeros for the first). [`AuditLog::verify`] recomputes the
//! chain, so a changed entry, a removed one (a gap in the sequence) or a re-linked chain is
//! found, with the sequence number where it breaks.
//!
//! Pruning ([`AuditLog::prune`], for retention) removes the oldest entries after writing a
//! checkpoint: the first kept entry's sequence number and the hash it links to, signed with
//! HMAC-SHA256 under a key the store does not hold (`<data_dir>/audit-signing.key` or
//! `AIOS_AUDIT_SIGNING_KEY`). [`AuditLog::verify`] then starts from the checkpoint, after
//! checking its signature, so the chain still verifies and a forged cut is found.
//!
//! The head record (the last entry's sequence number and hash) carries an HMAC under the same
//! key, rewritten with every append: a rewrite of the whole chain, consistent in itself, does
//! not end at the signed head, and [`AuditLog::verify`] says so.
//!
//! Appends are ordered under one lock (sequence number, previous hash, insert) and made
//! durable after it with the store's group commit, so concurrent requests share fsyncs, and
//! any entry that is on disk has every earlier entry on disk too.

mod query;
mod verify;

use aios_core::keyspace;
use std::sync::Arc;

use aios_actors::records::Records;
use aios_supervisor::snapshot::Durability;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = keyspace::AUDIT;
/// The last entry's sequence number and hash, so removing entries at the end is found.
const HEAD_KEY: &str = keyspace::AUDIT_HEAD;
const HEAD_PER_NODE: &str = keyspace::AUDIT_HEAD_PER_NODE;
/// The signed start of the chain after pruning.
const CHECKPOINT_KEY: &str = keyspace::AUDIT_CHECKPOINT;
/// Entries returned by one query at most.
pub const AUDIT_PAGE_MAX: usize = 1000;

/// One audited event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Unix ms.
    pub at_ms: u64,
    /// The request id (`x-request-id`).
    pub request_id: String,
    /// The key that made the request (empty when authentication failed).
    pub key_id: String,
    /// The tenant (empty when unknown).
    pub tenant: String,
    /// What was done: `POST /v1/agents`, `auth_failed`, `tool_denied`, …
    pub action: String,
    /// What it was done to (path, tool, key id).
    pub target: String,
    /// `ok`, `denied`, `failed`, or an HTTP status.
    pub outcome: String,
    /// More detail.
    pub detail: String,
    /// The previous entry's hash, hex.
    pub prev_hash: String,
    /// This entry's hash, hex.
    pub hash: String,
}

/// What an append records (the log fills in the sequence, time and hashes).
#[derive(Clone, Debug, Default)]
pub struct AuditEvent {
    /// The request id.
    pub request_id: String,
    /// The key.
    pub key_id: String,
    /// The tenant.
    pub tenant: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// Outcome.
    pub outcome: String,
    /// Detail.
    pub detail: String,
}

/// The longest field of an entry, in bytes: longer ones (a client's path, say) are cut, so
/// that no request makes an entry larger than a few KiB.
pub const AUDIT_FIELD_MAX: usize = 512;

/// `field` cut to [`AUDIT_FIELD_MAX`] bytes (on a character boundary), marked with `…`.
fn bounded(mut field: String) -> String {
    if field.len() > AUDIT_FIELD_MAX {
        let mut end = AUDIT_FIELD_MAX - '…'.len_utf8();
        while !field.is_char_boundary(end) {
            end -= 1;
        }
        field.truncate(end);
        field.push('…');
    }
    field
}

/// A query: entries after `after` (a sequence number) matching every given field.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only after this sequence number (the cursor).
    pub after: Option<u64>,
    /// At most this many (default 100, at most [`AUDIT_PAGE_MAX`]).
    pub limit: Option<usize>,
    /// Only this tenant (forced to the caller's own).
    pub tenant: Option<String>,
    /// Only this key.
    pub key_id: Option<String>,
    /// Only actions starting with this.
    pub action: Option<String>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// Only entries at or after this time (unix ms).
    pub since_ms: Option<u64>,
    /// Only entries at or before this time (unix ms).
    pub until_ms: Option<u64>,
    /// Whose chain, on a store several nodes share: a node's name, or `*` for every node's,
    /// merged by time (default: this node's).
    pub node: Option<String>,
    /// The merged view's cursor (`node:seq,…`, as returned in `next_cursor`).
    pub cursor: Option<String>,
}

/// Chains read at most by one merged query.
pub const AUDIT_NODES_MAX: usize = 256;

/// Keys one query scans at most (50 pages of 512), so a rare filter cannot make it
/// unbounded; the cursor it returns resumes after the last key scanned.
const SCAN_KEYS_MAX: usize = 50 * SCAN_PAGE;
const SCAN_PAGE: usize = 512;

/// What one scan of a chain found.
struct Scan {
    /// The matches, oldest first.
    entries: Vec<AuditEntry>,
    /// Where the next page resumes (the last match returned, or the last key scanned), or
    /// `None` when the chain was read to its end.
    next: Option<u64>,
    /// When the scan stopped at [`SCAN_KEYS_MAX`] rather than at the limit or the chain's
    /// end: the time of the last entry scanned. Later entries of the chain, unread, may
    /// match.
    capped_at_ms: Option<u64>,
}

/// One entry of the merged view: the entry and the node whose chain holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeEntry {
    /// The node.
    pub node: String,
    /// The entry.
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// Per node, the last sequence number a merged view returned (its cursor).
pub type MergedCursor = std::collections::BTreeMap<String, u64>;

/// Parses a merged view's cursor (`node:seq,…`).
///
/// # Errors
/// A malformed cursor, named.
pub fn parse_cursor(text: &str) -> Result<MergedCursor, String> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (node, seq) = part
                .rsplit_once(':')
                .ok_or_else(|| format!("cursor: {part:?} is not node:seq"))?;
            let seq = seq
                .parse::<u64>()
                .map_err(|_| format!("cursor: {part:?} is not node:seq"))?;
            Ok((node.to_owned(), seq))
        })
        .collect()
}

/// Writes a merged view's cursor.
pub fn format_cursor(cursor: &MergedCursor) -> String {
    cursor
        .iter()
        .map(|(n, s)| format!("{n}:{s}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The chain's start after pruning: entries before `first_seq` were removed; entry
/// `first_seq` links to `prev_hash`. Signed, so that a cut cannot be moved or forged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The first kept entry.
    pub first_seq: u64,
    /// The hash of the last removed entry, hex.
    pub prev_hash: String,
    /// When the cut was made, Unix ms.
    pub at_ms: u64,
    /// HMAC-SHA256 of the chain, `first_seq` and `prev_hash` under the signing key, hex.
    pub mac: String,
}

/// Where the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Entries checked.
    pub checked: u64,
    /// The first entry kept after pruning (the checkpoint's), if the log was pruned.
    pub pruned_before: Option<u64>,
    /// Whether the chain is intact.
    pub ok: bool,
    /// The first entry that does not verify, and why.
    pub broken_at: Option<u64>,
    /// Why.
    pub problem: Option<String>,
}

/// Why an audit operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit log: {0}")]
pub struct AuditError(pub String);

struct Head {
    seq: u64,
    hash: [u8; 32],
}

/// The audit log of a daemon. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    records: Records,
    head: Arc<tokio::sync::Mutex<Head>>,
    chain: Arc<Chain>,
    /// Signs and checks pruning checkpoints.
    signing: Option<Arc<Vec<u8>>>,
}

impl std::fmt::Debug for AuditLog {
    /// Never the signing key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("scope", &self.chain.scope)
            .field("signed", &self.signing.is_some())
            .finish_non_exhaustive()
    }
}

/// Where one chain lives: `audit/<seq>` and `auditlog-head` for a node's own store; with a
/// scope (a node's name, on a store that nodes share), `audit@<scope>/<seq>` and
/// `auditlog-head@<scope>`, so that each node appends to its own chain.
struct Chain {
    /// The node's name on a shared store.
    scope: Option<String>,
    prefix: String,
    head: String,
    checkpoint: String,
}

impl Chain {
    fn new(scope: Option<&str>) -> Self {
        match scope {
            None => Self {
                scope: None,
                prefix: PREFIX.into(),
                head: HEAD_KEY.into(),
                checkpoint: CHECKPOINT_KEY.into(),
            },
            Some(scope) => Self {
                scope: Some(scope.to_owned()),
                prefix: keyspace::per_node(keyspace::AUDIT_PER_NODE, scope),
                head: format!("{HEAD_PER_NODE}{scope}"),
                checkpoint: format!("{}{scope}", keyspace::AUDIT_CHECKPOINT_PER_NODE),
            },
        }
    }

    fn key(&self, seq: u64) -> String {
        format!("{}{seq:020}", self.prefix)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn entry_hash(prev: &str, e: &AuditEntry) -> Result<[u8; 32], AuditError> {
    let mut unsigned = e.clone();
    unsigned.hash.clear();
    let body = serde_json::to_vec(&unsigned).map_err(|x| AuditError(x.to_string()))?;
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(&body);
    Ok(h.finalize().into())
}

fn err(e: impl std::fmt::Display) -> AuditError {
    AuditError(e.to_string())
}

/// The head record at `key`: sequence number, hash and signature (empty in a log written
/// before heads were signed, whose record has the first two only).
async fn read_head(
    records: &Records,
    key: &str,
) -> Result<Option<(u64, String, String)>, AuditError> {
    match records.get::<(u64, String, String)>(key).await {
        Ok(head) => Ok(head),
        Err(_) => Ok(records
            .get::<(u64, String)>(key)
            .await
            .map_err(err)?
            .map(|(seq, hash)| (seq, hash, String::new()))),
    }
}

impl AuditLog {
    /// Opens the log, finding its head.
    ///
    /// # Errors
    /// Store failures.
    pub async fn open(records: Records) -> Result<Self, AuditError> {
        Self::open_scoped(records, None).await
    }

    /// Opens the chain of `scope` (this node's name) in a store that several nodes share;
    /// `None` is the node's own store's single chain.
    ///
    /// # Errors
    /// Store failures.
    pub async fn open_scoped(records: Records, scope: Option<&str>) -> Result<Self, AuditError> {
        let chain = Chain::new(scope);
        // The head record names the last entry; without one (a new log) the chain is empty.
        let head = match read_head(&records, &chain.head).await? {
            Some((seq, hash_hex, _)) => {
                let mut hash = [0u8; 32];
                for (i, b) in hash.iter_mut().enumerate() {
                    *b = hash_hex
                        .get(i * 2..i * 2 + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| AuditError(format!("{}: bad hash", chain.head)))?;
                }
                Head { seq, hash }
            }
            None => Head {
                seq: 0,
                hash: [0u8; 32],
            },
        };
        // Entries written after the last head record that reached the disk (a crash between
        // the two writes) extend the chain: adopt them rather than overwrite them.
        let mut head = head;
        while let Some(e) = records
            .get::<AuditEntry>(&chain.key(head.seq + 1))
            .await
            .map_err(err)?
        {
            let mut hash = [0u8; 32];
            for (i, b) in hash.iter_mut().enumerate() {
                *b = e
                    .hash
                    .get(i * 2..i * 2 + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| AuditError(format!("entry {}: bad hash", e.seq)))?;
            }
            head = Head { seq: e.seq, hash };
        }
        Ok(Self {
            records,
            head: Arc::new(tokio::sync::Mutex::new(head)),
            chain: Arc::new(chain),
            signing: None,
        })
    }

    /// Signs and checks pruning checkpoints with `key` (at least 32 bytes).
    ///
    /// # Errors
    /// A key shorter than 32 bytes.
    pub fn with_signing_key(mut self, key: Vec<u8>) -> Result<Self, AuditError> {
        if key.len() < 32 {
            return Err(AuditError(
                "the audit signing key must be at least 32 bytes".into(),
            ));
        }
        self.signing = Some(Arc::new(key));
        Ok(self)
    }

    fn mac(&self, first_seq: u64, prev_hash: &str) -> Option<String> {
        use hmac::{Hmac, Mac};
        let key = self.signing.as_ref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
        mac.update(format!("{}|{first_seq}|{prev_hash}", self.chain.prefix).as_bytes());
        Some(hex(&mac.finalize().into_bytes()))
    }

    /// The head record for entry `seq` with `hash`: signed when there is a key.
    fn head_record(&self, seq: u64, hash: &str) -> (u64, String, String) {
        (
            seq,
            hash.to_owned(),
            self.head_mac(seq, hash).unwrap_or_default(),
        )
    }

    fn head_mac(&self, seq: u64, hash: &str) -> Option<String> {
        use hmac::{Hmac, Mac};
        let key = self.signing.as_ref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
        mac.update(format!("head|{}|{seq}|{hash}", self.chain.prefix).as_bytes());
        Some(hex(&mac.finalize().into_bytes()))
    }

    /// Writes the head record again, signed, durably: for a log written before heads were
    /// signed. A daemon calls it once, on the first start of a release that signs heads
    /// (it keeps a marker beside the key); calling it later would sign whatever the store
    /// holds, a rewritten chain included.
    ///
    /// # Errors
    /// Store failures.
    pub async fn sign_head(&self) -> Result<(), AuditError> {
        let head = self.head.lock().await;
        if head.seq == 0 || self.signing.is_none() {
            return Ok(());
        }
        let record = self.head_record(head.seq, &hex(&head.hash));
        self.records
            .put(&self.chain.head, &record, Durability::Durable)
            .await
            .map_err(err)
    }

    /// The checkpoint left by the latest pruning, if any.
    ///
    /// # Errors
    /// Store failures.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        self.records
            .get::<Checkpoint>(&self.chain.checkpoint)
            .await
            .map_err(err)
    }

    /// Removes the entries older than `before_ms` (never the newest entry), after writing a
    /// signed checkpoint at the cut; returns how many were removed.
    ///
    /// # Errors
    /// No signing key, or store failures.
    pub async fn prune(&self, before_ms: u64) -> Result<u64, AuditError> {
        if self.signing.is_none() {
            return Err(AuditError(
                "no signing key: the log cannot be pruned".into(),
            ));
        }
        let head_seq = self.head.lock().await.seq;
        let checkpoint = self.checkpoint().await?;
        let start = checkpoint.as_ref().map_or(1, |c| c.first_seq);
        let mut cut = start;
        let mut prev_hash = checkpoint.map_or_else(|| hex(&[0u8; 32]), |c| c.prev_hash);
        let mut cursor = start
            .checked_sub(1)
            .filter(|s| *s > 0)
            .map(|s| self.chain.key(s));
        'scan: loop {
            let keys = self
                .records
                .keys_after(&self.chain.prefix, cursor.as_deref(), 1024)
                .await
                .map_err(err)?;
            let Some(last) = keys.last().cloned() else {
                break;
            };
            for k in keys {
                let Some(e) = self.records.get::<AuditEntry>(&k).await.map_err(err)? else {
                    continue;
                };
                if e.seq != cut || e.at_ms >= before_ms || e.seq >= head_seq {
                    break 'scan;
                }
                cut = e.seq + 1;
                prev_hash = e.hash;
            }
            cursor = Some(last);
        }
        if cut > start {
            let c = Checkpoint {
                first_seq: cut,
                mac: self.mac(cut, &prev_hash).unwrap_or_default(),
                prev_hash,
                at_ms: aios_actors::protocol::unix_ms(),
            };
            self.records
                .put(&self.chain.checkpoint, &c, Durability::Durable)
                .await
                .map_err(err)?;
        }
        // Everything before the cut goes, also entries a crash left behind an earlier cut.
        let mut removed = 0;
        loop {
            let keys: Vec<String> = self
                .records
                .keys(&self.chain.prefix, 1024)
                .await
                .map_err(err)?
                .into_iter()
                .filter(|k| k.as_str() < self.chain.key(cut).as_str())
                .collect();
            if keys.is_empty() {
                return Ok(removed);
            }
            removed += aios_actors::retention::delete_keys(&self.records, keys)
                .await
                .map_err(err)?;
        }
    }

    /// Appends an entry; with `durable`, returns once it is on disk, else once it is in the
    /// store (durable with the next commit of any writer, or within the buffered flush
    /// interval).
    ///
    /// # Errors
    /// Store failures (the entry is then not in the chain).
    pub async fn append(&self, event: AuditEvent, durable: bool) -> Result<AuditEntry, AuditError> {
        let entry = {
            let mut head = self.head.lock().await;
            let mut e = AuditEntry {
                seq: head.seq + 1,
                at_ms: aios_actors::protocol::unix_ms(),
                request_id: bounded(event.request_id),
                key_id: bounded(event.key_id),
                tenant: bounded(event.tenant),
                action: bounded(event.action),
                target: bounded(event.target),
                outcome: bounded(event.outcome),
                detail: bounded(event.detail),
                prev_hash: hex(&head.hash),
                hash: String::new(),
            };
            let h = entry_hash(&e.prev_hash, &e)?;
            e.hash = hex(&h);
            self.records
                .put(&self.chain.key(e.seq), &e, Durability::Buffered)
                .await
                .map_err(err)?;
            self.records
                .put(
                    &self.chain.head,
                    &self.head_record(e.seq, &e.hash),
                    Durability::Buffered,
                )
                .await
                .map_err(err)?;
            head.seq = e.seq;
            head.hash = h;
            e
        };
        // Every earlier entry was inserted before this one, so this flush covers them too.
        if durable {
            self.records.snapshots().flush().await.map_err(err)?;
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests;
