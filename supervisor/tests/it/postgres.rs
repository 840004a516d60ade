//! The PostgreSQL snapshot store against a real server: the store contract (the same checks
//! run against sled, so both behave alike), and a persistent actor restored by a second "node"
//! (another store instance on the same database), and leases: one node at a time runs a
//! persistent actor, and a node that stopped renewing its lease has its writes refused by the
//! database once another node took the actor over.
//!
//! The server is `AIOS_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! without one these tests say so loudly and pass, except under `CI=true` (`.ci/run` checks
//! that PostgreSQL is up).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aios_supervisor::snapshot::{
    Durability, Persistence, PostgresOptions, PostgresStore, QuarantineRecord, SCHEMA_VERSION,
    SledStore, SnapshotStore, Snapshots, StoreError,
};
use aios_supervisor::{
    EventKind, Root, Strategy, SupervisorError, SupervisorSpec, TreeEnv, WorkerSpec, start_root,
};

use crate::common::{Counter, CounterMsg, WAIT, add, get};

fn url() -> String {
    std::env::var("AIOS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A store on fresh tables (a namespace unique to this test run), or `None` when there is no
/// server outside CI.
async fn store(test: &str) -> Option<PostgresStore> {
    let ns = format!(
        "t{}_{}",
        uuid::Uuid::new_v4().simple().to_string().get(..12).unwrap(),
        test
    );
    match PostgresStore::connect(PostgresOptions::new(url()).namespace(ns)).await {
        Ok(s) => Some(s),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but PostgreSQL is not reachable at {}: {e}",
                url()
            );
            eprintln!("\n!!! SKIPPED {test}: no PostgreSQL at {} ({e})\n", url());
            None
        }
    }
}

/// The contract every snapshot store keeps.
async fn contract(s: &dyn SnapshotStore) {
    assert_eq!(s.get("a").await.unwrap(), None);
    s.put("a", b"1".to_vec(), Durability::Durable)
        .await
        .unwrap();
    s.put("a", b"2".to_vec(), Durability::Buffered)
        .await
        .unwrap();
    assert_eq!(s.get("a").await.unwrap(), Some(b"2".to_vec()));
    // Keys in byte order, by prefix; `%` and `_` are plain characters in a prefix.
    for k in ["p/b", "p/a", "p/B", "p%x", "p_y", "q/a", "p/é"] {
        s.put(k, k.as_bytes().to_vec(), Durability::Durable)
            .await
            .unwrap();
    }
    assert_eq!(
        s.keys("p/", 10).await.unwrap(),
        ["p/B", "p/a", "p/b", "p/é"]
    );
    assert_eq!(s.keys("p%", 10).await.unwrap(), ["p%x"]);
    assert_eq!(s.keys("p_", 10).await.unwrap(), ["p_y"]);
    assert_eq!(s.keys_after("p/", Some("p/a"), 1).await.unwrap(), ["p/b"]);
    assert_eq!(s.keys("", 100).await.unwrap().len(), 8);
    // Many at once: a key given twice keeps its last value; both durabilities.
    let many = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect::<Vec<_>>()
    };
    s.put_many(
        many(&[("m/1", "a"), ("m/2", "b"), ("m/1", "c"), ("a", "3")]),
        Durability::Buffered,
    )
    .await
    .unwrap();
    s.put_many(many(&[("m/3", "d")]), Durability::Durable)
        .await
        .unwrap();
    s.put_many(Vec::new(), Durability::Durable).await.unwrap();
    assert_eq!(s.get("m/1").await.unwrap(), Some(b"c".to_vec()));
    assert_eq!(s.get("a").await.unwrap(), Some(b"3".to_vec()));
    assert_eq!(s.keys("m/", 10).await.unwrap(), ["m/1", "m/2", "m/3"]);
    for k in ["m/1", "m/2", "m/3"] {
        s.remove(k).await.unwrap();
    }
    s.remove("p/a").await.unwrap();
    s.remove("missing").await.unwrap();
    assert_eq!(s.get("p/a").await.unwrap(), None);
    // Quarantine: moved atomically, with or without a marker left in place.
    let rec = |id: &str, key: &str, at_ms| QuarantineRecord {
        id: id.into(),
        key: key.into(),
        reason: "bad checksum".into(),
        at_ms,
        bytes: vec![0, 1, 2],
    };
    s.quarantine(rec("q1", "p/b", 5), Some(b"marker".to_vec()))
        .await
        .unwrap();
    s.quarantine(rec("q2", "q/a", 7), None).await.unwrap();
    assert_eq!(s.get("p/b").await.unwrap(), Some(b"marker".to_vec()));
    assert_eq!(s.get("q/a").await.unwrap(), None);
    let q = s.quarantined(10).await.unwrap();
    assert_eq!(q, vec![rec("q1", "p/b", 5), rec("q2", "q/a", 7)]);
    assert_eq!(s.quarantined(1).await.unwrap().len(), 1);
    s.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_sled_keep_the_same_store_contract() {
    contract(&SledStore::temporary().unwrap()).await;
    let Some(pg) = store("contract").await else {
        return;
    };
    contract(&pg).await;
    pg.drop_tables().await.unwrap();
}

/// A buffered write commits without waiting for the disk and is seen by every reader at
/// once; `flush` makes a synchronous commit (a row of `<ns>_flushes`) only when buffered
/// writes are left that no synchronous commit since has covered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_writes_are_seen_at_once_and_flushed_only_when_uncovered() {
    let Some(pg) = store("buffered").await else {
        return;
    };
    let other = pg.reconnect().await.unwrap();
    let (raw, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let table = format!("{}_flushes", pg.options().namespace);
    let flushes = || async {
        raw.query_opt(
            &format!("SELECT n FROM {table} WHERE node = $1"),
            &[&"aios"],
        )
        .await
        .unwrap()
        .map(|r| r.get::<_, i64>(0))
    };
    pg.flush().await.unwrap();
    assert_eq!(flushes().await, None, "nothing was buffered");
    pg.put("k", b"1".to_vec(), Durability::Buffered)
        .await
        .unwrap();
    assert_eq!(other.get("k").await.unwrap(), Some(b"1".to_vec()));
    pg.flush().await.unwrap();
    assert_eq!(flushes().await, Some(1));
    pg.flush().await.unwrap();
    assert_eq!(flushes().await, Some(1), "nothing new to flush");
    // A durable write after a buffered one covers it: its commit flushes the WAL before it.
    pg.put("k", b"2".to_vec(), Durability::Buffered)
        .await
        .unwrap();
    pg.put("j", b"1".to_vec(), Durability::Durable)
        .await
        .unwrap();
    pg.flush().await.unwrap();
    assert_eq!(flushes().await, Some(1), "covered by the durable write");
    pg.put("k", b"3".to_vec(), Durability::Buffered)
        .await
        .unwrap();
    pg.flush().await.unwrap();
    assert_eq!(flushes().await, Some(2));
    assert_eq!(other.get("k").await.unwrap(), Some(b"3".to_vec()));
    // A removal that deleted nothing flushed nothing: it covers no buffered write.
    pg.put("k", b"4".to_vec(), Durability::Buffered)
        .await
        .unwrap();
    pg.remove("missing").await.unwrap();
    pg.flush().await.unwrap();
    assert_eq!(flushes().await, Some(3));
    // Flushes at once share one synchronous commit.
    pg.put("k", b"5".to_vec(), Durability::Buffered)
        .await
        .unwrap();
    let (x, y) = tokio::join!(pg.flush(), pg.flush());
    x.unwrap();
    y.unwrap();
    assert_eq!(flushes().await, Some(4));
    pg.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_restores_an_actor_from_postgres() {
    let Some(first) = store("restore").await else {
        return;
    };
    let ns_store = first.clone();
    // Two "nodes" in turn, each with its own store instance (its own pool) on the same tables.
    for (round, expected_before) in [(1u64, 0u64), (2, 10)] {
        let store = if round == 1 {
            first.clone()
        } else {
            // A second connection pool, as another process would have.
            ns_store.reconnect().await.unwrap()
        };
        let env = TreeEnv::new(Some(Snapshots::new(Arc::new(store))));
        let (spec, c) = WorkerSpec::new("c", Counter)
            .persistent(Persistence::new("counters/c"))
            .build();
        let root = start_root(
            SupervisorSpec::new("root", Strategy::OneForOne).child(spec),
            env,
        )
        .await
        .unwrap();
        assert_eq!(get(&c).await, expected_before, "round {round}");
        add(&c, 10).await;
        root.shutdown(WAIT).await.unwrap();
    }
    first.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_refused_with_the_reason() {
    let e = PostgresStore::connect(PostgresOptions::new(url()).namespace("Bad-Name"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("namespace"), "{e}");
    let e = PostgresStore::connect(PostgresOptions::new("not a url ==="))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("url"), "{e}");
    let e = PostgresStore::connect(PostgresOptions::new(url()).node("no spaces"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("node"), "{e}");
    let e = PostgresStore::connect(PostgresOptions::new(url()).lease_ttl(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("lease_ttl"), "{e}");
}

/// A second node on `store`'s tables.
async fn node(store: &PostgresStore, name: &str, renew: bool) -> PostgresStore {
    let options = store
        .options()
        .clone()
        .node(name)
        .lease_ttl(Duration::from_secs(1))
        .renew_leases(renew);
    PostgresStore::connect(options).await.unwrap()
}

/// A root running the counter `counters/<id>` on `store`.
async fn counter_on(
    store: &PostgresStore,
    id: &str,
) -> Result<(Root, aios_supervisor::ActorHandle<CounterMsg>), SupervisorError> {
    let env = TreeEnv::new(Some(Snapshots::new(Arc::new(store.clone()))));
    let root = start_root(SupervisorSpec::dynamic("root"), env).await?;
    let spec = WorkerSpec::new(id, Counter).persistent(Persistence::new(format!("counters/{id}")));
    match root.supervisor().start_worker(spec).await {
        Ok(c) => Ok((root, c)),
        Err(e) => {
            root.shutdown(WAIT).await.unwrap();
            Err(e)
        }
    }
}

/// Takes the lease on `key` for `store` once the current holder's lease has expired. Lease
/// expiry is a time in the database, not an event, so this polls (every 50 ms, 10 s at most).
async fn take_over(store: &PostgresStore, key: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        match store.acquire(key).await {
            Ok(()) => return,
            Err(StoreError::Held { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("lease on {key} not taken over: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_actor_is_active_on_one_node_at_a_time() {
    let Some(pg) = store("single").await else {
        return;
    };
    let a = node(&pg, "a", true).await;
    let b = node(&pg, "b", true).await;
    let (root_a, ca) = counter_on(&a, "x").await.unwrap();
    add(&ca, 5).await;
    // While node a runs it, node b cannot start it, and says where it is.
    let Err(e) = counter_on(&b, "x").await else {
        panic!("double activation");
    };
    let SupervisorError::StartFailed { source, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(source.held_by(), Some(a.holder()), "{e}");
    assert!(e.to_string().contains("is active on node a#"), "{e}");
    // A renewed lease outlives its TTL.
    let renewed = a.renew_leases().await.unwrap();
    assert!(renewed.is_empty(), "{renewed:?}");
    assert_eq!(a.leases_held(), 1);
    // Stopping it on a releases the lease: b takes it at once, with the state a left.
    root_a.shutdown(WAIT).await.unwrap();
    assert_eq!(a.leases_held(), 0);
    let (root_b, cb) = counter_on(&b, "x").await.unwrap();
    assert_eq!(get(&cb).await, 5);
    assert_eq!(b.epoch("counters/x"), Some(2), "every grant is a new epoch");
    root_b.shutdown(WAIT).await.unwrap();
    pg.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_past_its_lease_is_fenced_and_its_actor_moves() {
    let Some(pg) = store("fence").await else {
        return;
    };
    // Node a stops renewing, as a paused (SIGSTOP) or cut-off process would.
    let a = node(&pg, "a", false).await;
    let b = node(&pg, "b", true).await;
    let (root_a, ca) = counter_on(&a, "f").await.unwrap();
    let mut events_a = root_a.env().events().subscribe();
    add(&ca, 7).await;
    assert_eq!(a.epoch("counters/f"), Some(1));

    // Node b takes the actor over once a's lease expired, from a's last snapshot.
    take_over(&b, "counters/f").await;
    let (root_b, cb) = counter_on(&b, "f").await.unwrap();
    assert_eq!(get(&cb).await, 7);
    add(&cb, 1).await;

    // Node a "wakes up". By its own clock its lease lapsed, so its actor refuses to act; and
    // the database refuses its writes anyway.
    assert!(matches!(
        a.check_lease("counters/f"),
        Err(StoreError::Fenced { epoch: 1, .. })
    ));
    assert_eq!(b.check_lease("counters/f"), Ok(()));
    let e = a
        .put("counters/f", b"stale".to_vec(), Durability::Durable)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        StoreError::Fenced {
            key: "counters/f".into(),
            epoch: 1
        }
    );
    assert!(a.remove("counters/f").await.is_err());
    assert!(
        ca.call(|r| CounterMsg::Add(100, r), WAIT).await.is_err(),
        "a fenced write must not be acknowledged"
    );
    // a's supervisor restarts the actor, finds the lease held by b, and stops it there.
    let moved = tokio::time::timeout(WAIT, async {
        loop {
            let ev = events_a.recv().await.unwrap();
            if let EventKind::ChildMoved { holder } = &ev.kind {
                return holder.clone();
            }
        }
    })
    .await
    .expect("no ChildMoved event");
    assert_eq!(moved, b.holder());
    assert!(
        !root_a.is_finished(),
        "a moved actor is not an error of a's tree"
    );
    // What b wrote stands.
    assert_eq!(get(&cb).await, 8);
    assert_eq!(a.renew_leases().await.unwrap(), Vec::<String>::new());
    root_a.shutdown(WAIT).await.unwrap();
    root_b.shutdown(WAIT).await.unwrap();
    pg.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_under_a_fenced_prefix_are_written_only_under_its_lease() {
    let Some(pg) = store("prefix").await else {
        return;
    };
    let put = |s: &PostgresStore, key: &'static str| {
        let s = s.clone();
        async move { s.put(key, b"v".to_vec(), Durability::Durable).await }
    };
    // Node a serves "n" (it stops renewing, as a paused process would); its items are
    // written under that lease, other keys are not.
    let a = node(&pg, "a", false).await;
    let b = node(&pg, "b", true).await;
    a.acquire("serve/n").await.unwrap();
    a.fence_prefix("items/n/", Some("serve/n"));
    put(&a, "items/n/0/1").await.unwrap();
    put(&a, "items/other").await.unwrap();
    put(&a, "items/nn/1").await.unwrap();

    // b takes "n" over: a's item writes and removals are refused by the database.
    take_over(&b, "serve/n").await;
    b.fence_prefix("items/n/", Some("serve/n"));
    let e = put(&a, "items/n/0/2").await.unwrap_err();
    assert_eq!(
        e,
        StoreError::Fenced {
            key: "items/n/0/2".into(),
            epoch: 1
        }
    );
    assert!(matches!(
        a.remove("items/n/0/1").await,
        Err(StoreError::Fenced { .. })
    ));
    // Many at once: refused as a whole when one key is under a lease known lost.
    let batch = vec![
        ("items/other2".to_string(), b"v".to_vec()),
        ("items/n/0/4".to_string(), b"v".to_vec()),
    ];
    assert!(matches!(
        a.put_many(batch.clone(), Durability::Buffered).await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(pg.get("items/n/0/4").await.unwrap(), None);
    assert_eq!(pg.get("items/other2").await.unwrap(), None);
    b.put_many(batch, Durability::Buffered).await.unwrap();
    assert!(pg.get("items/n/0/4").await.unwrap().is_some());
    assert!(matches!(
        a.check_lease("serve/n"),
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(pg.get("items/n/0/2").await.unwrap(), None);
    assert!(
        pg.get("items/n/0/1").await.unwrap().is_some(),
        "a's earlier write stands"
    );
    put(&a, "items/other").await.unwrap();
    put(&b, "items/n/0/2").await.unwrap();
    b.remove("items/n/0/1").await.unwrap();

    // Released, the prefix refuses writes until it is unfenced.
    b.release("serve/n").await.unwrap();
    assert!(matches!(
        put(&b, "items/n/0/3").await,
        Err(StoreError::Fenced { epoch: 0, .. })
    ));
    b.fence_prefix("items/n/", None);
    put(&b, "items/n/0/3").await.unwrap();
    pg.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_reports_a_lease_taken_over() {
    let Some(pg) = store("renew").await else {
        return;
    };
    let a = node(&pg, "a", false).await;
    let b = node(&pg, "b", true).await;
    a.acquire("k").await.unwrap();
    a.put("k", b"a".to_vec(), Durability::Durable)
        .await
        .unwrap();
    let e = b.acquire("k").await.unwrap_err();
    let StoreError::Held {
        holder,
        expires_in_ms,
        ..
    } = &e
    else {
        panic!("{e}");
    };
    assert_eq!(holder, a.holder());
    assert!(*expires_in_ms <= 1000, "{e}");
    take_over(&b, "k").await;
    assert_eq!(a.renew_leases().await.unwrap(), ["k"]);
    assert_eq!(a.leases_held(), 0);
    // Released leases go at once, and a write to a key never leased is not fenced.
    b.release("k").await.unwrap();
    a.acquire("k").await.unwrap();
    assert_eq!(a.epoch("k"), Some(3));
    b.put("other", b"b".to_vec(), Durability::Durable)
        .await
        .unwrap();
    pg.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_is_migrated_once_by_nodes_starting_together_and_never_downgraded() {
    let Some(pg) = store("schema").await else {
        return;
    };
    assert_eq!(pg.schema_version().await.unwrap(), SCHEMA_VERSION);
    // Four nodes start at once on a namespace that does not exist yet.
    let fresh = pg
        .options()
        .clone()
        .namespace(format!("{}_b", pg.options().namespace));
    let starts: Vec<_> = (0..4)
        .map(|i| tokio::spawn(PostgresStore::connect(fresh.clone().node(format!("n{i}")))))
        .collect();
    let mut stores = Vec::new();
    for start in starts {
        stores.push(start.await.unwrap().expect("every node starts"));
    }
    let b = stores.swap_remove(0);
    assert_eq!(b.schema_version().await.unwrap(), SCHEMA_VERSION);
    b.put("k", b"v".to_vec(), Durability::Durable)
        .await
        .unwrap();
    // A database migrated by a newer binary is refused, not downgraded or written.
    let ns = &b.options().namespace;
    let raw = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(raw.1);
    raw.0
        .execute(
            &format!("INSERT INTO {ns}_schema (version) VALUES (999)"),
            &[],
        )
        .await
        .unwrap();
    let e = PostgresStore::connect(fresh.clone()).await.unwrap_err();
    assert!(e.to_string().contains("newer"), "{e}");
    b.drop_tables().await.unwrap();
    pg.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_fails_to_start_leaves_no_lease_behind() {
    let Some(pg) = store("failstart").await else {
        return;
    };
    let a = node(&pg, "a", true).await;
    let b = node(&pg, "b", true).await;
    // A corrupt snapshot: the restore takes the lease, then the start fails.
    a.put("counters/z", b"not a frame".to_vec(), Durability::Durable)
        .await
        .unwrap();
    let Err(e) = counter_on(&a, "z").await else {
        panic!("a corrupt snapshot must fail the start");
    };
    assert!(e.to_string().contains("corrupt"), "{e}");
    assert_eq!(a.leases_held(), 0);
    b.acquire("counters/z")
        .await
        .expect("the failed start released its lease");
    pg.drop_tables().await.unwrap();
}
