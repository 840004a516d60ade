//! Snapshots through the supervisor: restore after a panic, after a process restart (the
//! store reopened), corruption handled per policy, migrations, deletion.

use std::sync::Arc;
use std::time::Duration;

use aios_supervisor::snapshot::{
    Durability, Migrations, OnCorrupt, Persistence, SledOptions, SledStore, SnapshotError,
    SnapshotPolicy, Snapshots, decode, encode,
};
use aios_supervisor::{
    ActorHandle, Context, EventKind, PersistentWorker, StartError, Strategy, SupervisorError,
    SupervisorSpec, TreeEnv, Worker, WorkerSpec, start_root,
};
use ractor::{ActorProcessingErr, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::common::{Counter, CounterMsg, Events, WAIT, add, env_with_store, get, tolerant_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_panic_restart() {
    let (env, _) = env_with_store();
    let mut events = Events::new(&env);
    let root = tolerant_root(env).await;
    let c = root
        .supervisor()
        .start_worker(WorkerSpec::new("c", Counter).persistent(Persistence::new("counters/c")))
        .await
        .unwrap();
    assert_eq!(add(&c, 5).await, 5);
    assert_eq!(add(&c, 2).await, 7);
    c.cast(CounterMsg::Panic).unwrap();
    assert_eq!(events.restarted("c").await, 2);
    assert_eq!(get(&c).await, 7);
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_restores_what_it_promises_after_a_crash() {
    // (policy, durability, updates before the crash, value expected after the restart)
    let cases = [
        (SnapshotPolicy::EveryMessage, Durability::Buffered, 5, 5),
        (SnapshotPolicy::EveryN(2), Durability::Durable, 5, 4),
        (SnapshotPolicy::OnStop, Durability::Durable, 5, 0),
    ];
    for (policy, durability, updates, expected) in cases {
        let (env, _) = env_with_store();
        let mut events = Events::new(&env);
        let root = tolerant_root(env).await;
        let persistence = Persistence::new("k").policy(policy).durability(durability);
        let c = root
            .supervisor()
            .start_worker(WorkerSpec::new("c", Counter).persistent(persistence))
            .await
            .unwrap();
        for _ in 0..updates {
            add(&c, 1).await;
        }
        c.cast(CounterMsg::Panic).unwrap();
        events.restarted("c").await;
        assert_eq!(get(&c).await, expected, "{policy:?}/{durability:?}");
        root.shutdown(WAIT).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_policy_snapshots_changed_state_in_the_background() {
    let (env, snapshots) = env_with_store();
    let root = tolerant_root(env).await;
    let persistence =
        Persistence::new("k").policy(SnapshotPolicy::Interval(Duration::from_millis(20)));
    let c = root
        .supervisor()
        .start_worker(WorkerSpec::new("c", Counter).persistent(persistence))
        .await
        .unwrap();
    add(&c, 3).await;
    // Wait for the tick to write it: poll the store (no fixed sleep decides the outcome).
    let written = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(r) = snapshots.load("k").await.unwrap() {
                let state: crate::common::CounterState = decode(r.payload()).unwrap();
                if state.n == 3 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(written.is_ok(), "interval snapshot never written");
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_process_restart_with_the_store_reopened() {
    let dir = tempfile::tempdir().unwrap();
    for (round, expected_before) in [(1u64, 0u64), (2, 10), (3, 20)] {
        let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
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
}

async fn corrupt(snapshots: &Snapshots, key: &str) -> Vec<u8> {
    let mut raw = snapshots.load_raw(key).await.unwrap().unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x01;
    snapshots
        .store()
        .put(key, raw.clone(), Durability::Durable)
        .await
        .unwrap();
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_fails_the_start_and_is_quarantined_by_default() {
    let (env, snapshots) = env_with_store();
    let mut events = Events::new(&env);
    let root = tolerant_root(env).await;
    let sup = root.supervisor();
    let c = sup
        .start_worker(WorkerSpec::new("c", Counter).persistent(Persistence::new("k")))
        .await
        .unwrap();
    add(&c, 41).await;
    sup.terminate_child("c").await.unwrap();
    let raw = corrupt(&snapshots, "k").await;

    let err = sup.restart_child("c").await.unwrap_err();
    assert!(
        matches!(
            err,
            SupervisorError::StartFailed {
                source: StartError::Snapshot(SnapshotError::Corrupt { ref key, .. }),
                ..
            } if key == "k"
        ),
        "{err}"
    );
    let e = events
        .wait("quarantine event", |e| {
            matches!(e.kind, EventKind::SnapshotQuarantined { .. })
        })
        .await;
    let EventKind::SnapshotQuarantined {
        quarantine_id,
        start_fresh,
        ..
    } = &e.kind
    else {
        unreachable!()
    };
    assert!(!start_fresh);
    let q = snapshots.store().quarantined(10).await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(&q[0].id, quarantine_id);
    assert_eq!(q[0].bytes, raw, "the quarantine keeps the bytes exactly");

    // Never silently empty: the next start fails too, naming the quarantine record.
    let again = sup.restart_child("c").await.unwrap_err();
    assert!(
        again.to_string().contains(quarantine_id.as_str()),
        "{again}"
    );
    assert!(!c.is_running());

    // An operator clears the key: the child starts fresh.
    snapshots.delete("k").await.unwrap();
    sup.restart_child("c").await.unwrap();
    assert_eq!(get(&c).await, 0);
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_with_start_fresh_is_quarantined_and_the_child_starts_empty() {
    let (env, snapshots) = env_with_store();
    let mut events = Events::new(&env);
    let root = tolerant_root(env).await;
    let sup = root.supervisor();
    let persistence = Persistence::new("k").on_corrupt(OnCorrupt::StartFresh);
    let c = sup
        .start_worker(WorkerSpec::new("c", Counter).persistent(persistence))
        .await
        .unwrap();
    add(&c, 41).await;
    sup.terminate_child("c").await.unwrap();
    corrupt(&snapshots, "k").await;
    sup.restart_child("c").await.unwrap();
    events
        .wait("quarantine event", |e| {
            matches!(
                e.kind,
                EventKind::SnapshotQuarantined {
                    start_fresh: true,
                    ..
                }
            )
        })
        .await;
    assert_eq!(get(&c).await, 0);
    assert_eq!(snapshots.store().quarantined(10).await.unwrap().len(), 1);
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_verifies_but_does_not_decode_is_corrupt_too() {
    let (env, snapshots) = env_with_store();
    let root = tolerant_root(env).await;
    // A valid frame of schema version 1 holding bytes that are not a CounterState.
    snapshots
        .save("k", 1, &[0xff, 0xff, 0xff], Durability::Durable)
        .await
        .unwrap();
    let err = root
        .supervisor()
        .start_worker(WorkerSpec::new("c", Counter).persistent(Persistence::new("k")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert_eq!(snapshots.store().quarantined(10).await.unwrap().len(), 1);
    root.shutdown(WAIT).await.unwrap();
}

// Schema migration: V1 stored `count: u32`; V2 stores `count: u64` and a label.

#[derive(Serialize, Deserialize)]
struct StateV1 {
    count: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct StateV2 {
    count: u64,
    label: String,
}

struct WorkerV1;
struct WorkerV2;

impl Worker for WorkerV1 {
    type Msg = RpcReplyPort<u32>;
    type State = StateV1;
    async fn init(
        &self,
        _: &mut Context<Self::Msg>,
        r: Option<StateV1>,
    ) -> Result<StateV1, ActorProcessingErr> {
        Ok(r.unwrap_or(StateV1 { count: 0 }))
    }
    async fn handle(
        &self,
        ctx: &mut Context<Self::Msg>,
        reply: Self::Msg,
        s: &mut StateV1,
    ) -> Result<(), ActorProcessingErr> {
        s.count += 1;
        ctx.reply(reply, s.count);
        Ok(())
    }
}
impl PersistentWorker for WorkerV1 {}

impl Worker for WorkerV2 {
    type Msg = RpcReplyPort<(u64, String)>;
    type State = StateV2;
    async fn init(
        &self,
        _: &mut Context<Self::Msg>,
        r: Option<StateV2>,
    ) -> Result<StateV2, ActorProcessingErr> {
        Ok(r.unwrap_or(StateV2 {
            count: 0,
            label: "new".into(),
        }))
    }
    async fn handle(
        &self,
        ctx: &mut Context<Self::Msg>,
        reply: Self::Msg,
        s: &mut StateV2,
    ) -> Result<(), ActorProcessingErr> {
        ctx.reply(reply, (s.count, s.label.clone()));
        Ok(())
    }
}
impl PersistentWorker for WorkerV2 {
    const SCHEMA_VERSION: u32 = 2;
    fn migrations() -> Migrations {
        Migrations::new().step(1, |bytes| {
            let old: StateV1 = decode(bytes)?;
            encode(&StateV2 {
                count: old.count.into(),
                label: "migrated from v1".into(),
            })
        })
    }
}

/// One "process" of the migration story: a fresh tree over the same store.
async fn run_in_fresh_tree<W: PersistentWorker>(
    snapshots: &Snapshots,
    worker: W,
) -> (
    aios_supervisor::Root,
    Result<ActorHandle<W::Msg>, SupervisorError>,
) {
    let root = tolerant_root(TreeEnv::new(Some(snapshots.clone()))).await;
    let handle = root
        .supervisor()
        .start_worker(WorkerSpec::new("w", worker).persistent(Persistence::new("k")))
        .await;
    (root, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_bump_runs_the_registered_migration_and_a_future_version_is_refused() {
    let (_, snapshots) = env_with_store();

    let (root, v1) = run_in_fresh_tree(&snapshots, WorkerV1).await;
    let v1 = v1.unwrap();
    for _ in 0..3 {
        v1.call(|r| r, WAIT).await.unwrap();
    }
    root.shutdown(WAIT).await.unwrap();
    assert_eq!(
        snapshots.load("k").await.unwrap().unwrap().schema_version,
        1
    );

    // The upgraded binary reads version 1 through the migration, and writes version 2.
    let (root, v2) = run_in_fresh_tree(&snapshots, WorkerV2).await;
    let v2 = v2.unwrap();
    assert_eq!(
        v2.call(|r| r, WAIT).await.unwrap(),
        (3, "migrated from v1".to_string())
    );
    root.shutdown(WAIT).await.unwrap();
    assert_eq!(
        snapshots.load("k").await.unwrap().unwrap().schema_version,
        2
    );

    // An old binary meets the new format: refused with a clear error, the data left alone.
    let (root, old) = run_in_fresh_tree(&snapshots, WorkerV1).await;
    let err = old.unwrap_err();
    assert!(
        matches!(
            err,
            SupervisorError::StartFailed {
                source: StartError::Snapshot(SnapshotError::Migration { .. }),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("newer"), "{err}");
    assert_eq!(
        snapshots.load("k").await.unwrap().unwrap().schema_version,
        2
    );
    assert!(snapshots.store().quarantined(10).await.unwrap().is_empty());
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_child_removes_its_snapshot_for_good() {
    let (env, snapshots) = env_with_store();
    let root = tolerant_root(env).await;
    let sup = root.supervisor();
    let c = sup
        .start_worker(WorkerSpec::new("c", Counter).persistent(Persistence::new("k")))
        .await
        .unwrap();
    add(&c, 1).await;
    assert!(snapshots.load("k").await.unwrap().is_some());
    sup.terminate_child("c").await.unwrap();
    assert!(
        snapshots.load("k").await.unwrap().is_some(),
        "terminate keeps the snapshot"
    );
    sup.delete_child("c").await.unwrap();
    assert!(snapshots.load("k").await.unwrap().is_none());
    let c = sup
        .start_worker(WorkerSpec::new("c", Counter).persistent(Persistence::new("k")))
        .await
        .unwrap();
    assert_eq!(get(&c).await, 0);
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_children_cannot_share_a_snapshot_key() {
    let (env, _) = env_with_store();
    let root = tolerant_root(env).await;
    let sup = root.supervisor();
    sup.start_worker(WorkerSpec::new("a", Counter).persistent(Persistence::new("same")))
        .await
        .unwrap();
    let err = sup
        .start_worker(WorkerSpec::new("b", Counter).persistent(Persistence::new("same")))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SupervisorError::KeyInUse {
            key: "same".into(),
            used_by: "a".into()
        }
    );
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_child_without_a_store_fails_to_start_with_a_clear_error() {
    let root = tolerant_root(TreeEnv::new(None)).await;
    let err = root
        .supervisor()
        .start_worker(WorkerSpec::new("c", Counter).persistent(Persistence::new("k")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("needs a snapshot store"), "{err}");
    root.shutdown(WAIT).await.unwrap();
}
