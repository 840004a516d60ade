//! The PostgreSQL snapshot store against a real server: the store contract (the same checks
//! run against sled, so both behave alike), and a persistent actor restored by a second "node"
//! (another store instance on the same database).
//!
//! The server is `AIOS_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! without one these tests say so loudly and pass, except under `CI=true` (`.ci/run` checks
//! that PostgreSQL is up).

use std::sync::Arc;

use aios_supervisor::snapshot::{
    Durability, Persistence, PostgresOptions, PostgresStore, QuarantineRecord, SledStore,
    SnapshotStore, Snapshots,
};
use aios_supervisor::{Strategy, SupervisorSpec, TreeEnv, WorkerSpec, start_root};

use crate::common::{Counter, WAIT, add, get};

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
}
