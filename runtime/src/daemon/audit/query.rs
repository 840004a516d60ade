//! Reading the audit log: a node's chain page by page, the nodes with a chain in the store,
//! and the merged view of every node's chain in time order.

use super::*;

impl AuditLog {
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
    pub(super) async fn scan(
        &self,
        query: &AuditQuery,
        max_keys: usize,
    ) -> Result<Scan, AuditError> {
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
    pub(super) async fn query_merged_scanning(
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
}
