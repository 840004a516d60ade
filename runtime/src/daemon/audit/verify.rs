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
        let report = |checked: u64, broken: Option<Broken>| VerifyReport {
            checked,
            pruned_before,
            ok: broken.is_none(),
            broken_at: broken.as_ref().map(|b| b.at),
            problem: broken.map(|b| b.problem),
        };
        let (prev, start) = match self.start_point(checkpoint.as_ref()) {
            Ok(start) => start,
            Err(b) => return Ok(report(0, Some(b))),
        };
        let (signed, head_missing) = match self.signed_head().await? {
            Ok(head) => head,
            Err(b) => return Ok(report(0, Some(b))),
        };
        let walked = self.walk(start, prev, signed.as_ref()).await?;
        let (expected_seq, broken) = match walked {
            Ok(next) => (next, None),
            Err((next, b)) => (next, Some(b)),
        };
        let checked = expected_seq - start;
        if broken.is_some() {
            return Ok(report(checked, broken));
        }
        if head_missing && expected_seq > start {
            let problem = "the chain has no head record (it was removed?)".into();
            return Ok(report(checked, Some(Broken::at(expected_seq - 1, problem))));
        }
        if let Some((seq, _)) = signed
            && seq >= expected_seq
        {
            let problem = format!("entries {expected_seq}..={seq} of the signed head are missing");
            return Ok(report(checked, Some(Broken::at(expected_seq, problem))));
        }
        let head = self.head.lock().await;
        if head.seq >= expected_seq {
            let problem = format!("entries {expected_seq}..={} are missing", head.seq);
            return Ok(report(checked, Some(Broken::at(expected_seq, problem))));
        }
        Ok(report(checked, None))
    }

    /// Where the chain starts: the first entry and the hash it links to, after its pruning
    /// checkpoint's signature was checked.
    fn start_point(&self, checkpoint: Option<&Checkpoint>) -> Result<(String, u64), Broken> {
        let Some(c) = checkpoint else {
            return Ok((hex(&[0u8; 32]), 1));
        };
        let Some(mac) = self.mac(c.first_seq, &c.prev_hash) else {
            return Err(Broken::at(
                c.first_seq,
                "the log was pruned, and without the signing key its checkpoint cannot be \
                 checked"
                    .into(),
            ));
        };
        if mac != c.mac {
            return Err(Broken::at(
                c.first_seq,
                "the pruning checkpoint's signature does not match".into(),
            ));
        }
        Ok((c.prev_hash.clone(), c.first_seq))
    }

    /// The signed head the chain must reach (with a key, every non-empty chain has one), and
    /// whether it is missing.
    async fn signed_head(
        &self,
    ) -> Result<Result<(Option<(u64, String)>, bool), Broken>, AuditError> {
        let head = read_head(&self.records, &self.chain.head).await?;
        let missing = self.signing.is_some() && head.is_none();
        let signed = match (&self.signing, head) {
            (Some(_), Some((seq, hash, mac))) => {
                if self.head_mac(seq, &hash).as_deref() != Some(mac.as_str()) {
                    return Ok(Err(Broken::at(
                        seq,
                        "the head's signature does not match (the chain was rewritten?)".into(),
                    )));
                }
                Some((seq, hash))
            }
            _ => None,
        };
        Ok(Ok((signed, missing)))
    }

    /// Walks the chain from entry `start`, which links to `prev`: each entry in its key, in
    /// sequence, linked and unchanged, and the signed head's entry the one signed. The next
    /// sequence number expected; where it broke, with that number.
    async fn walk(
        &self,
        start: u64,
        mut prev: String,
        signed: Option<&(u64, String)>,
    ) -> Result<Result<u64, (u64, Broken)>, AuditError> {
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
                return Ok(Ok(expected_seq));
            };
            for k in keys {
                let e = match self.records.get::<AuditEntry>(&k).await {
                    Ok(Some(e)) => e,
                    Ok(None) => continue,
                    Err(x) => {
                        let b = Broken::at(expected_seq, format!("unreadable: {x}"));
                        return Ok(Err((expected_seq, b)));
                    }
                };
                match self.check_entry(&k, &e, expected_seq, &prev, signed)? {
                    Ok(h) => prev = h,
                    Err(b) => return Ok(Err((expected_seq, b))),
                }
                expected_seq += 1;
            }
            cursor = Some(last);
        }
    }

    /// Checks entry `e`, stored under `k`, where entry `expected_seq` linking to `prev` should
    /// be; its hash when it is.
    fn check_entry(
        &self,
        k: &str,
        e: &AuditEntry,
        expected_seq: u64,
        prev: &str,
        signed: Option<&(u64, String)>,
    ) -> Result<Result<String, Broken>, AuditError> {
        if k != self.chain.key(e.seq) {
            return Ok(Err(Broken::at(
                expected_seq,
                format!("{k} holds entry {}", e.seq),
            )));
        }
        if e.seq != expected_seq {
            return Ok(Err(Broken::at(
                expected_seq,
                format!("entry {expected_seq} is missing (next is {})", e.seq),
            )));
        }
        if e.prev_hash != prev {
            return Ok(Err(Broken::at(
                e.seq,
                "does not link to the previous entry".into(),
            )));
        }
        let h = hex(&entry_hash(&e.prev_hash, e)?);
        if h != e.hash {
            return Ok(Err(Broken::at(e.seq, "its contents were changed".into())));
        }
        if signed.is_some_and(|(seq, hash)| *seq == e.seq && *hash != h) {
            return Ok(Err(Broken::at(
                e.seq,
                "the chain does not reach the signed head (it was rewritten)".into(),
            )));
        }
        Ok(Ok(h))
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

/// Where and why a chain does not verify.
struct Broken {
    at: u64,
    problem: String,
}

impl Broken {
    fn at(at: u64, problem: String) -> Self {
        Self { at, problem }
    }
}
