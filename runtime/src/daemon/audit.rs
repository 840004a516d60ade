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

    /// Entries matching `query`, oldest first, and the cursor for the next page.
    ///
    /// # Errors
    /// Store failures.
    pub async fn query(
        &self,
        query: &AuditQuery,
    ) -> Result<(Vec<AuditEntry>, Option<u64>), AuditError> {
        let scan = self.scan(query, SCAN_KEYS_MAX).await?;
        Ok((scan.entries, scan.next))
    }

    /// [`AuditLog::query`], scanning at most `max_keys` keys.
    async fn scan(&self, query: &AuditQuery, max_keys: usize) -> Result<Scan, AuditError> {
        let limit = query.limit.unwrap_or(100).clamp(1, AUDIT_PAGE_MAX);
        let mut out = Vec::new();
        let mut cursor = query.after.map(|seq| self.chain.key(seq));
        let mut scanned = 0;
        let mut last_at_ms = None;
        while scanned < max_keys {
            let page = SCAN_PAGE.min(max_keys - scanned);
            let keys = self
                .records
                .keys_after(&self.chain.prefix, cursor.as_deref(), page)
                .await
                .map_err(err)?;
            let Some(last) = keys.last().cloned() else {
                return Ok(Scan {
                    entries: out,
                    next: None,
                    capped_at_ms: None,
                });
            };
            scanned += keys.len();
            for k in keys {
                let Some(e) = self.records.get::<AuditEntry>(&k).await.map_err(err)? else {
                    continue;
                };
                last_at_ms = Some(e.at_ms);
                let keep = query.tenant.as_ref().is_none_or(|t| &e.tenant == t)
                    && query.key_id.as_ref().is_none_or(|t| &e.key_id == t)
                    && query
                        .action
                        .as_ref()
                        .is_none_or(|a| e.action.starts_with(a.as_str()))
                    && query.outcome.as_ref().is_none_or(|o| &e.outcome == o)
                    && query.since_ms.is_none_or(|t| e.at_ms >= t)
                    && query.until_ms.is_none_or(|t| e.at_ms <= t);
                if keep {
                    let seq = e.seq;
                    out.push(e);
                    if out.len() == limit {
                        return Ok(Scan {
                            entries: out,
                            next: Some(seq),
                            capped_at_ms: None,
                        });
                    }
                }
            }
            cursor = Some(last);
        }
        let next = cursor.and_then(|k| k.strip_prefix(&self.chain.prefix)?.parse().ok());
        Ok(Scan {
            entries: out,
            next,
            capped_at_ms: last_at_ms,
        })
    }

    /// The nodes whose chains the shared store holds (at most [`AUDIT_NODES_MAX`]), or none
    /// when this log is a node's own store's.
    ///
    /// # Errors
    /// Store failures.
    pub async fn nodes(&self) -> Result<Vec<String>, AuditError> {
        if self.chain.scope.is_none() {
            return Ok(Vec::new());
        }
        let prefix = HEAD_PER_NODE;
        let keys = self
            .records
            .keys(prefix, AUDIT_NODES_MAX)
            .await
            .map_err(err)?;
        Ok(keys
            .iter()
            .filter_map(|k| k.strip_prefix(prefix).map(str::to_owned))
            .collect())
    }

    /// Whether the shared store holds a chain of node `node`.
    ///
    /// # Errors
    /// Store failures.
    pub async fn has_node(&self, node: &str) -> Result<bool, AuditError> {
        if self.chain.scope.is_none() {
            return Ok(false);
        }
        Ok(read_head(&self.records, &format!("{HEAD_PER_NODE}{node}"))
            .await?
            .is_some())
    }

    /// The chain of node `node` in the same shared store, to read (its appends belong to
    /// that node).
    pub fn of_node(&self, node: &str) -> AuditLog {
        AuditLog {
            records: self.records.clone(),
            head: Arc::new(tokio::sync::Mutex::new(Head {
                seq: 0,
                hash: [0u8; 32],
            })),
            chain: Arc::new(Chain::new(Some(node))),
            signing: None,
        }
    }

    /// Every node's chain matching `query`, merged oldest first (by time, then node, then
    /// sequence), after `cursor`; and the cursor of the next page when there is more. On a
    /// node's own store (no shared store) the one chain is `this_node`'s. A page may hold
    /// fewer entries than asked, even none, while `next` is given: when a chain's matches
    /// are so sparse that its scan stopped before the end (50 pages of keys), no entry from
    /// after the point it reached is returned, so the order holds across pages.
    ///
    /// # Errors
    /// Store failures.
    pub async fn query_merged(
        &self,
        query: &AuditQuery,
        cursor: &MergedCursor,
        this_node: &str,
    ) -> Result<(Vec<NodeEntry>, Option<MergedCursor>), AuditError> {
        self.query_merged_scanning(query, cursor, this_node, SCAN_KEYS_MAX)
            .await
    }

    /// [`AuditLog::query_merged`], each chain's scan stopping at `max_keys` keys.
    async fn query_merged_scanning(
        &self,
        query: &AuditQuery,
        cursor: &MergedCursor,
        this_node: &str,
        max_keys: usize,
    ) -> Result<(Vec<NodeEntry>, Option<MergedCursor>), AuditError> {
        let limit = query.limit.unwrap_or(100).clamp(1, AUDIT_PAGE_MAX);
        let chains: Vec<(String, AuditLog)> = match &self.chain.scope {
            None => vec![(this_node.to_owned(), self.clone())],
            Some(_) => self
                .nodes()
                .await?
                .into_iter()
                .map(|n| {
                    let log = self.of_node(&n);
                    (n, log)
                })
                .collect(),
        };
        // Each chain's first `limit` matches after its cursor: the page's entries are among
        // them. Merged chain by chain in sequence order (always the chain whose next entry is
        // the oldest), so what a page takes of a chain is a prefix and the cursor loses nothing
        // even if a node's clock went back.
        let mut fetched = Vec::with_capacity(chains.len());
        // Where each capped scan stopped: another chain's entries from then on may come
        // after unread matches of that chain, so they wait for a later page (a chain's own
        // matches found come before its unread ones, by sequence).
        let mut caps: Vec<(String, u64)> = Vec::new();
        for (node, log) in &chains {
            let mut q = query.clone();
            q.after = cursor.get(node).copied();
            q.limit = Some(limit);
            let scan = log.scan(&q, max_keys).await?;
            if let Some(at) = scan.capped_at_ms {
                caps.push((node.clone(), at));
            }
            fetched.push((node.clone(), scan.entries.into_iter().peekable(), scan.next));
        }
        let mut page = Vec::new();
        while page.len() < limit {
            // A chain none of whose matches is left, whose scan did not reach its end, moves
            // its cursor past the keys it scanned: the call makes progress even with an
            // empty page.
            let advancing = fetched
                .iter_mut()
                .any(|(_, entries, scanned_to)| entries.peek().is_none() && scanned_to.is_some());
            let oldest = fetched
                .iter_mut()
                .filter_map(|(node, entries, _)| {
                    let at = entries.peek()?.at_ms;
                    Some((at, node.clone(), entries))
                })
                .min_by(|x, y| (x.0, &x.1).cmp(&(y.0, &y.1)));
            let Some((at, node, entries)) = oldest else {
                break;
            };
            // Held back by another chain's cap, unless nothing else would make progress
            // (equal times, or a clock that went back): then taken anyway.
            let held = caps.iter().any(|(n, cap)| *n != node && at >= *cap);
            if held && (!page.is_empty() || advancing) {
                break;
            }
            if let Some(entry) = entries.next() {
                page.push(NodeEntry { node, entry });
            }
        }
        let mut next = cursor.clone();
        let mut more = false;
        for (node, entries, scanned_to) in &mut fetched {
            let taken = page.iter().rev().find(|e| e.node == *node);
            match (taken, entries.peek(), *scanned_to) {
                // Every match found was taken: the next page resumes where the scan stopped
                // (past keys that did not match).
                (_, None, Some(to)) => {
                    next.insert(node.clone(), to);
                }
                (Some(e), _, _) => {
                    next.insert(node.clone(), e.entry.seq);
                }
                _ => {}
            }
            more |= entries.peek().is_some() || scanned_to.is_some();
        }
        Ok((page, more.then_some(next)))
    }

    /// Recomputes the whole chain.
    ///
    /// # Errors
    /// Store failures.
    pub async fn verify(&self) -> Result<VerifyReport, AuditError> {
        let checkpoint = self.checkpoint().await?;
        let pruned_before = checkpoint.as_ref().map(|c| c.first_seq);
        let broken = |checked: u64, at: u64, problem: String| VerifyReport {
            checked,
            pruned_before,
            ok: false,
            broken_at: Some(at),
            problem: Some(problem),
        };
        let (mut prev, start) = match &checkpoint {
            None => (hex(&[0u8; 32]), 1u64),
            Some(c) => {
                let Some(mac) = self.mac(c.first_seq, &c.prev_hash) else {
                    return Ok(broken(
                        0,
                        c.first_seq,
                        "the log was pruned, and without the signing key its checkpoint \
                         cannot be checked"
                            .into(),
                    ));
                };
                if mac != c.mac {
                    return Ok(broken(
                        0,
                        c.first_seq,
                        "the pruning checkpoint's signature does not match".into(),
                    ));
                }
                (c.prev_hash.clone(), c.first_seq)
            }
        };
        // The signed head the chain must reach: with a key, every non-empty chain has one.
        let head = read_head(&self.records, &self.chain.head).await?;
        let head_missing = self.signing.is_some() && head.is_none();
        let signed = match (&self.signing, head) {
            (Some(_), Some((seq, hash, mac))) => {
                if self.head_mac(seq, &hash).as_deref() != Some(mac.as_str()) {
                    return Ok(broken(
                        0,
                        seq,
                        "the head's signature does not match (the chain was rewritten?)".into(),
                    ));
                }
                Some((seq, hash))
            }
            _ => None,
        };
        let mut expected_seq = start;
        let mut cursor: Option<String> = start
            .checked_sub(1)
            .filter(|s| *s > 0)
            .map(|s| self.chain.key(s));
        loop {
            let keys = self
                .records
                .keys_after(&self.chain.prefix, cursor.as_deref(), 1024)
                .await
                .map_err(err)?;
            let Some(last) = keys.last().cloned() else {
                break;
            };
            for k in keys {
                let checked = expected_seq - start;
                let e = match self.records.get::<AuditEntry>(&k).await {
                    Ok(Some(e)) => e,
                    Ok(None) => continue,
                    Err(x) => return Ok(broken(checked, expected_seq, format!("unreadable: {x}"))),
                };
                if k != self.chain.key(e.seq) {
                    return Ok(broken(
                        checked,
                        expected_seq,
                        format!("{k} holds entry {}", e.seq),
                    ));
                }
                if e.seq != expected_seq {
                    return Ok(broken(
                        checked,
                        expected_seq,
                        format!("entry {expected_seq} is missing (next is {})", e.seq),
                    ));
                }
                if e.prev_hash != prev {
                    return Ok(broken(
                        checked,
                        e.seq,
                        "does not link to the previous entry".into(),
                    ));
                }
                let h = hex(&entry_hash(&e.prev_hash, &e)?);
                if h != e.hash {
                    return Ok(broken(checked, e.seq, "its contents were changed".into()));
                }
                if signed
                    .as_ref()
                    .is_some_and(|(seq, hash)| *seq == e.seq && *hash != h)
                {
                    return Ok(broken(
                        checked,
                        e.seq,
                        "the chain does not reach the signed head (it was rewritten)".into(),
                    ));
                }
                prev = h;
                expected_seq += 1;
            }
            cursor = Some(last);
        }
        if head_missing && expected_seq > start {
            return Ok(broken(
                expected_seq - start,
                expected_seq - 1,
                "the chain has no head record (it was removed?)".into(),
            ));
        }
        if let Some((seq, _)) = signed
            && seq >= expected_seq
        {
            return Ok(broken(
                expected_seq - start,
                expected_seq,
                format!("entries {expected_seq}..={seq} of the signed head are missing"),
            ));
        }
        let head = self.head.lock().await;
        if head.seq >= expected_seq {
            return Ok(broken(
                expected_seq - start,
                expected_seq,
                format!("entries {expected_seq}..={} are missing", head.seq),
            ));
        }
        Ok(VerifyReport {
            checked: expected_seq - start,
            pruned_before,
            ok: true,
            broken_at: None,
            problem: None,
        })
    }

    /// Overwrites an entry as stored, bypassing the chain: for tamper-detection tests only.
    #[doc(hidden)]
    pub async fn tamper(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        self.records
            .put(&self.chain.key(entry.seq), entry, Durability::Durable)
            .await
            .map_err(err)
    }

    /// Deletes an entry as stored, bypassing the chain: for tamper-detection tests only.
    #[doc(hidden)]
    pub async fn tamper_delete(&self, seq: u64) -> Result<(), AuditError> {
        self.records.delete(&self.chain.key(seq)).await.map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aios_supervisor::snapshot::{SledStore, Snapshots};

    fn ev(action: &str, tenant: &str) -> AuditEvent {
        AuditEvent {
            action: action.into(),
            tenant: tenant.into(),
            outcome: "ok".into(),
            ..AuditEvent::default()
        }
    }

    /// The chains of nodes `a` and `b` on one store.
    async fn two_chains() -> (Records, AuditLog, AuditLog) {
        let snapshots = Snapshots::new(Arc::new(SledStore::temporary().unwrap()));
        let records = Records::new(snapshots);
        let a = AuditLog::open_scoped(records.clone(), Some("a"))
            .await
            .unwrap();
        let b = AuditLog::open_scoped(records.clone(), Some("b"))
            .await
            .unwrap();
        (records, a, b)
    }

    #[test]
    fn a_field_longer_than_the_bound_is_cut_on_a_character_boundary() {
        assert_eq!(bounded("short".into()), "short");
        let long = "é".repeat(AUDIT_FIELD_MAX);
        let cut = bounded(long);
        assert!(cut.len() <= AUDIT_FIELD_MAX, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }

    #[tokio::test]
    async fn nodes_sharing_a_store_append_to_their_own_chains() {
        let (records, a, b) = two_chains().await;
        let single = AuditLog::open(records.clone()).await.unwrap();
        // Interleaved appends, as two live nodes would make them.
        for i in 0..5 {
            a.append(ev(&format!("POST /v1/a{i}"), "t"), false)
                .await
                .unwrap();
            b.append(ev(&format!("POST /v1/b{i}"), "t"), false)
                .await
                .unwrap();
        }
        for (log, name) in [(&a, "a"), (&b, "b")] {
            let report = log.verify().await.unwrap();
            assert!(report.ok, "{name}: {report:?}");
            assert_eq!(report.checked, 5);
            let (entries, _) = log.query(&AuditQuery::default()).await.unwrap();
            assert!(
                entries
                    .iter()
                    .all(|e| e.action.starts_with(&format!("POST /v1/{name}")))
            );
        }
        assert_eq!(single.verify().await.unwrap().checked, 0);
        // Reopened (a restarted node), a chain continues where it was.
        let a = AuditLog::open_scoped(records, Some("a")).await.unwrap();
        let e = a.append(ev("POST /v1/again", "t"), false).await.unwrap();
        assert_eq!(e.seq, 6);
        assert!(a.verify().await.unwrap().ok);
    }

    #[tokio::test]
    async fn the_merged_view_pages_through_every_node_s_chain_once_in_time_order() {
        let (_records, a, b) = two_chains().await;
        for i in 0..7 {
            a.append(ev(&format!("POST /v1/a{i}"), "t"), false)
                .await
                .unwrap();
            if i % 2 == 0 {
                b.append(ev(&format!("POST /v1/b{i}"), "u"), false)
                    .await
                    .unwrap();
            }
        }
        assert_eq!(a.nodes().await.unwrap(), ["a", "b"]);
        let q = AuditQuery {
            limit: Some(3),
            ..AuditQuery::default()
        };
        let mut cursor = MergedCursor::new();
        let mut seen = Vec::new();
        loop {
            let (page, next) = b.query_merged(&q, &cursor, "b").await.unwrap();
            assert!(page.len() <= 3);
            seen.extend(page);
            match next {
                // Through its text form, as a client sends it back.
                Some(c) => cursor = parse_cursor(&format_cursor(&c)).unwrap(),
                None => break,
            }
        }
        assert_eq!(seen.len(), 11, "every entry once: {seen:?}");
        assert!(
            seen.windows(2)
                .all(|w| w[0].entry.at_ms <= w[1].entry.at_ms)
        );
        for node in ["a", "b"] {
            let seqs: Vec<u64> = seen
                .iter()
                .filter(|e| e.node == node)
                .map(|e| e.entry.seq)
                .collect();
            let n = if node == "a" { 7 } else { 4 };
            assert_eq!(seqs, (1..=n).collect::<Vec<u64>>(), "{node}");
            assert!(
                seen.iter()
                    .filter(|e| e.node == node)
                    .all(|e| e.entry.action.starts_with(&format!("POST /v1/{node}")))
            );
        }
        // Filters apply to every chain: only b's tenant.
        let q = AuditQuery {
            tenant: Some("u".into()),
            ..AuditQuery::default()
        };
        let (page, next) = a.query_merged(&q, &MergedCursor::new(), "a").await.unwrap();
        assert_eq!(page.len(), 4);
        assert!(page.iter().all(|e| e.node == "b"));
        assert_eq!(next, None);
        assert!(parse_cursor("a:1,b").is_err());
        assert!(parse_cursor("a:x").is_err());
    }

    #[tokio::test]
    async fn a_chain_too_sparse_to_scan_at_once_keeps_the_merged_view_in_time_order() {
        let (_records, a, b) = two_chains().await;
        // a: five entries of another tenant, then one of tenant t; b: three of t, later.
        for i in 0..5 {
            a.append(ev(&format!("POST /v1/x{i}"), "x"), false)
                .await
                .unwrap();
        }
        a.append(ev("POST /v1/a", "t"), false).await.unwrap();
        for i in 0..3 {
            b.append(ev(&format!("POST /v1/b{i}"), "t"), false)
                .await
                .unwrap();
        }
        // Scans of 4 keys: a's first one reaches neither its match nor its end.
        let seen = merged_in_pages_of_4_keys(&a).await;
        let order: Vec<(&str, u64)> = seen.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        assert_eq!(order, [("a", 6), ("b", 1), ("b", 2), ("b", 3)]);
    }

    /// Pages through every chain's entries of tenant `t`, each chain's scan capped at 4 keys.
    async fn merged_in_pages_of_4_keys(a: &AuditLog) -> Vec<(String, u64)> {
        let q = AuditQuery {
            tenant: Some("t".into()),
            limit: Some(10),
            ..AuditQuery::default()
        };
        let mut cursor = MergedCursor::new();
        let mut seen = Vec::new();
        for _ in 0..20 {
            let (page, next) = a.query_merged_scanning(&q, &cursor, "a", 4).await.unwrap();
            seen.extend(page.into_iter().map(|e| (e.node, e.entry.seq)));
            match next {
                Some(c) => cursor = c,
                None => return seen,
            }
        }
        panic!("no end after 20 pages: {seen:?}");
    }

    #[tokio::test]
    async fn a_match_at_the_end_of_a_capped_scan_is_returned_and_paging_ends() {
        let (_records, a, b) = two_chains().await;
        // a: its match is the last of the 4 keys its first scan reads; then 4 more of
        // another tenant. b: three of t, later.
        for i in 0..3 {
            a.append(ev(&format!("POST /v1/x{i}"), "x"), false)
                .await
                .unwrap();
        }
        a.append(ev("POST /v1/a", "t"), false).await.unwrap();
        for i in 3..7 {
            a.append(ev(&format!("POST /v1/x{i}"), "x"), false)
                .await
                .unwrap();
        }
        for i in 0..3 {
            b.append(ev(&format!("POST /v1/b{i}"), "t"), false)
                .await
                .unwrap();
        }
        let seen = merged_in_pages_of_4_keys(&a).await;
        let want: Vec<(String, u64)> = [("a", 4), ("b", 1), ("b", 2), ("b", 3)]
            .into_iter()
            .map(|(n, s)| (n.to_string(), s))
            .collect();
        assert_eq!(seen, want);
    }

    #[tokio::test]
    async fn the_chain_verifies_and_finds_changes_and_removals() {
        let snapshots = Snapshots::new(Arc::new(SledStore::temporary().unwrap()));
        let log = AuditLog::open(Records::new(snapshots)).await.unwrap();
        for i in 0..10 {
            log.append(
                ev(
                    &format!("POST /v1/x{i}"),
                    if i % 2 == 0 { "a" } else { "b" },
                ),
                false,
            )
            .await
            .unwrap();
        }
        assert!(log.verify().await.unwrap().ok);
        let (page, next) = log
            .query(&AuditQuery {
                tenant: Some("a".into()),
                limit: Some(3),
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3, 5]);
        let (rest, _) = log
            .query(&AuditQuery {
                tenant: Some("a".into()),
                after: next,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), [7, 9]);
        // A time range: entries are stamped at append, in order.
        let (all, _) = log.query(&AuditQuery::default()).await.unwrap();
        let (mid, _) = log
            .query(&AuditQuery {
                since_ms: Some(all[2].at_ms),
                until_ms: Some(all[7].at_ms),
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert!(!mid.is_empty());
        assert!(
            mid.iter()
                .all(|e| e.at_ms >= all[2].at_ms && e.at_ms <= all[7].at_ms)
        );
        assert!(mid.iter().any(|e| e.seq == all[2].seq) && mid.iter().any(|e| e.seq == all[7].seq));

        // Reopened, the chain continues.
        let log = AuditLog::open(log.records.clone()).await.unwrap();
        let e = log.append(ev("DELETE /v1/y", "a"), true).await.unwrap();
        assert_eq!(e.seq, 11);
        assert!(log.verify().await.unwrap().ok);

        let (all, _) = log.query(&AuditQuery::default()).await.unwrap();
        let mut changed = all[3].clone();
        changed.outcome = "denied".into();
        log.tamper(&changed).await.unwrap();
        let r = log.verify().await.unwrap();
        assert_eq!((r.ok, r.broken_at), (false, Some(4)), "{r:?}");
        log.tamper(&all[3]).await.unwrap();
        assert!(log.verify().await.unwrap().ok);

        log.tamper_delete(6).await.unwrap();
        let r = log.verify().await.unwrap();
        assert_eq!((r.ok, r.broken_at), (false, Some(6)), "{r:?}");
        log.tamper(&all[5]).await.unwrap();
        log.tamper_delete(11).await.unwrap();
        let r = log.verify().await.unwrap();
        assert_eq!(
            (r.ok, r.broken_at),
            (false, Some(11)),
            "removing the last entry is found too"
        );
    }

    #[tokio::test]
    async fn a_pruned_log_verifies_from_its_signed_checkpoint_and_a_forged_one_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &Default::default()).unwrap();
        let records = Records::new(Snapshots::new(std::sync::Arc::new(store)));
        let log = AuditLog::open(records.clone())
            .await
            .unwrap()
            .with_signing_key(vec![7u8; 32])
            .unwrap();
        assert!(
            AuditLog::open(records.clone())
                .await
                .unwrap()
                .with_signing_key(vec![7u8; 8])
                .is_err()
        );
        for i in 0..10 {
            log.append(
                AuditEvent {
                    action: format!("a{i}"),
                    ..AuditEvent::default()
                },
                true,
            )
            .await
            .unwrap();
        }
        // Everything is "old": all but the newest entry go.
        let removed = log.prune(u64::MAX).await.unwrap();
        assert_eq!(removed, 9);
        let report = log.verify().await.unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!((report.checked, report.pruned_before), (1, Some(10)));
        log.append(AuditEvent::default(), true).await.unwrap();
        assert!(log.verify().await.unwrap().ok);
        // Pruning again continues from the checkpoint.
        assert_eq!(log.prune(u64::MAX).await.unwrap(), 1);
        assert!(log.verify().await.unwrap().ok);

        // A checkpoint moved without the key is found.
        let mut forged = log.checkpoint().await.unwrap().unwrap();
        forged.prev_hash = hex(&[1u8; 32]);
        records
            .put(CHECKPOINT_KEY, &forged, Durability::Durable)
            .await
            .unwrap();
        let report = log.verify().await.unwrap();
        assert!(!report.ok);
        assert!(report.problem.unwrap().contains("signature"));
        // And a log opened without the key cannot vouch for the cut.
        let keyless = AuditLog::open(records).await.unwrap();
        assert!(!keyless.verify().await.unwrap().ok);
        assert!(keyless.prune(u64::MAX).await.is_err());
    }

    #[tokio::test]
    async fn a_rewrite_of_the_whole_chain_does_not_reach_the_signed_head() {
        let open = || async {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path(), &Default::default()).unwrap();
            (
                dir,
                Records::new(Snapshots::new(std::sync::Arc::new(store))),
            )
        };
        let event = |action: &str| AuditEvent {
            action: action.into(),
            ..AuditEvent::default()
        };
        let (_d1, records) = open().await;
        let log = AuditLog::open(records.clone())
            .await
            .unwrap()
            .with_signing_key(vec![7u8; 32])
            .unwrap();
        for a in ["create", "delete", "rotate"] {
            log.append(event(a), true).await.unwrap();
        }
        assert!(log.verify().await.unwrap().ok);
        // Someone with the store but not the key writes a chain of their own, consistent in
        // itself (made by a log of their own), over the real one, with its head.
        let (_d2, theirs) = open().await;
        let forger = AuditLog::open(theirs.clone()).await.unwrap();
        for a in ["create", "nothing", "rotate"] {
            let e = forger.append(event(a), true).await.unwrap();
            log.tamper(&e).await.unwrap();
        }
        let forged_head: (u64, String, String) = theirs.get(HEAD_KEY).await.unwrap().unwrap();
        records
            .put(HEAD_KEY, &forged_head, Durability::Durable)
            .await
            .unwrap();
        let report = log.verify().await.unwrap();
        assert!(!report.ok, "{report:?}");
        assert!(report.problem.unwrap().contains("head"));
        // With the real head left in place, the rewritten chain does not reach it.
        records
            .put(
                HEAD_KEY,
                &log.head_record(3, &hex(&log.head.lock().await.hash)),
                Durability::Durable,
            )
            .await
            .unwrap();
        let report = log.verify().await.unwrap();
        assert!(!report.ok, "{report:?}");
        assert_eq!(report.broken_at, Some(3));
        // A removed head is reported too.
        records.delete(HEAD_KEY).await.unwrap();
        let report = log.verify().await.unwrap();
        assert!(!report.ok, "{report:?}");
        assert!(report.problem.unwrap().contains("no head record"));
        // A head written before heads were signed (release 0.1) is signed on open.
        let (_d3, old) = open().await;
        let unsigned = AuditLog::open(old.clone()).await.unwrap();
        unsigned.append(event("x"), true).await.unwrap();
        let (seq, hash, mac): (u64, String, String) = old.get(HEAD_KEY).await.unwrap().unwrap();
        assert!(mac.is_empty());
        old.put(HEAD_KEY, &(seq, hash), Durability::Durable)
            .await
            .unwrap();
        let upgraded = AuditLog::open(old.clone())
            .await
            .unwrap()
            .with_signing_key(vec![7u8; 32])
            .unwrap();
        upgraded.sign_head().await.unwrap();
        assert!(upgraded.verify().await.unwrap().ok);
    }
}
