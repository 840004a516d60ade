//! Verifying the audit log: the chain recomputed from its signed checkpoint to its signed
//! head, and, for tests only, ways to break it.

use super::*;

impl AuditLog {
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
