//! Tests of the audit log: chains per node, the merged view, verification and pruning.

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
