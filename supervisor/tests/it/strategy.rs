//! Strategy semantics, modelled on OTP's `supervisor_SUITE`: which children restart, in which
//! order they stop and start, the restart-type matrix, intensity and escalation, nesting,
//! shutdown order and timeouts.

use std::time::Duration;

use aios_supervisor::{
    ActorHandle, Backoff, ChildStatus, EventKind, ExitReason, Restart, Root, Shutdown, Strategy,
    SupervisorError, SupervisorSpec, TreeEnv, WorkerSpec, start_root,
};

use crate::common::{Events, Log, Probe, ProbeMsg, WAIT, block, ping, plain_root, tolerant_root};

/// A root with one child supervisor `sut` holding probes `a`, `b`, `c`.
async fn tree(strategy: Strategy) -> (Root, Events, Log, Vec<ActorHandle<ProbeMsg>>) {
    let env = TreeEnv::new(None);
    let events = Events::new(&env);
    let log = Log::default();
    let mut sut = SupervisorSpec::new("sut", strategy).intensity(10, Duration::from_secs(60));
    let mut handles = Vec::new();
    for id in ["a", "b", "c"] {
        let (spec, h) = WorkerSpec::new(id, Probe::new(id, &log)).build();
        sut = sut.child(spec);
        handles.push(h);
    }
    let root = start_root(
        SupervisorSpec::new("root", Strategy::OneForOne).child(sut),
        env,
    )
    .await
    .unwrap();
    assert_eq!(log.take(), ["start a", "start b", "start c"]);
    (root, events, log, handles)
}

async fn generations(handles: &[ActorHandle<ProbeMsg>]) -> Vec<u64> {
    let mut out = Vec::new();
    for h in handles {
        out.push(ping(h).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_the_failed_child() {
    let (root, mut events, log, h) = tree(Strategy::OneForOne).await;
    h[1].cast(ProbeMsg::Fail).unwrap();
    assert_eq!(events.restarted("sut/b").await, 2);
    assert_eq!(generations(&h).await, [1, 2, 1]);
    assert_eq!(log.take(), ["start b"]);
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_stops_the_others_in_reverse_and_restarts_all_in_start_order() {
    let (root, mut events, log, h) = tree(Strategy::OneForAll).await;
    h[1].cast(ProbeMsg::Panic).unwrap();
    events.restarted("sut/c").await;
    assert_eq!(generations(&h).await, [2, 2, 2]);
    assert_eq!(
        log.take(),
        ["stop c", "stop a", "start a", "start b", "start c"]
    );
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_the_failed_child_and_those_started_after_it() {
    let (root, mut events, log, h) = tree(Strategy::RestForOne).await;
    h[1].cast(ProbeMsg::Fail).unwrap();
    events.restarted("sut/c").await;
    assert_eq!(generations(&h).await, [1, 2, 2]);
    assert_eq!(log.take(), ["stop c", "start b", "start c"]);

    // The first child failing restarts everyone.
    h[0].cast(ProbeMsg::Fail).unwrap();
    events.restarted("sut/c").await;
    assert_eq!(generations(&h).await, [2, 3, 3]);
    root.shutdown(WAIT).await.unwrap();
}

#[derive(Clone, Copy, Debug)]
enum Exit {
    Normal,
    Error,
    Panic,
}

/// The restart-type × exit-reason matrix of OTP's `supervisor` docs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_type_by_exit_reason_matrix() {
    use Exit::*;
    // (restart type, exit, restarted?, spec kept?)
    let table = [
        (Restart::Permanent, Normal, true, true),
        (Restart::Permanent, Error, true, true),
        (Restart::Permanent, Panic, true, true),
        (Restart::Transient, Normal, false, true),
        (Restart::Transient, Error, true, true),
        (Restart::Transient, Panic, true, true),
        (Restart::Temporary, Normal, false, false),
        (Restart::Temporary, Error, false, false),
        (Restart::Temporary, Panic, false, false),
    ];
    for (restart, exit, restarted, kept) in table {
        let env = TreeEnv::new(None);
        let mut events = Events::new(&env);
        let log = Log::default();
        let root = tolerant_root(env).await;
        let sup = root.supervisor();
        let w = sup
            .start_worker(WorkerSpec::new("w", Probe::new("w", &log)).restart(restart))
            .await
            .unwrap();
        w.cast(match exit {
            Normal => ProbeMsg::Exit,
            Error => ProbeMsg::Fail,
            Panic => ProbeMsg::Panic,
        })
        .unwrap();
        let reason = events.exited("w").await;
        assert_eq!(
            reason.is_normal(),
            matches!(exit, Normal),
            "{restart:?} {exit:?}: {reason}"
        );
        let children = sup.which_children().await.unwrap();
        let case = format!("{restart:?} × {exit:?}");
        assert_eq!(children.len(), usize::from(kept), "{case}: spec kept");
        if restarted {
            assert_eq!(
                children[0].status,
                ChildStatus::Running { generation: 2 },
                "{case}"
            );
            assert_eq!(ping(&w).await, 2, "{case}");
        } else {
            if kept {
                assert_eq!(children[0].status, ChildStatus::Stopped, "{case}");
            }
            assert!(!w.is_running(), "{case}: handle reports running");
        }
        root.shutdown(WAIT).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intensity_exceeded_stops_children_in_reverse_and_escalates_to_the_parent() {
    let env = TreeEnv::new(None);
    let mut events = Events::new(&env);
    let log = Log::default();
    let (a, ha) = WorkerSpec::new("a", Probe::new("a", &log)).build();
    let (b, hb) = WorkerSpec::new("b", Probe::new("b", &log)).build();
    let (c, _hc) = WorkerSpec::new("c", Probe::new("c", &log)).build();
    let mid = SupervisorSpec::new("mid", Strategy::OneForOne)
        .intensity(1, Duration::from_secs(60))
        .child(a)
        .child(b)
        .child(c);
    let (mid, mid_ref) = mid.build();
    let root = start_root(
        SupervisorSpec::new("root", Strategy::OneForOne)
            .intensity(3, Duration::from_secs(60))
            .child(mid),
        env,
    )
    .await
    .unwrap();
    log.take();

    hb.cast(ProbeMsg::Fail).unwrap();
    assert_eq!(events.restarted("mid/b").await, 2);
    assert_eq!(log.take(), ["start b"]);
    hb.cast(ProbeMsg::Fail).unwrap();
    events
        .wait("intensity exceeded", |e| {
            e.supervisor == "mid"
                && matches!(
                    e.kind,
                    EventKind::IntensityExceeded {
                        max_restarts: 1,
                        ..
                    }
                )
        })
        .await;
    events
        .wait("escalation", |e| {
            e.supervisor == "mid" && matches!(e.kind, EventKind::Escalated { .. })
        })
        .await;
    // The parent sees its child supervisor fail, and restarts it (Permanent) with its children.
    let reason = events.exited("mid").await;
    assert!(
        matches!(reason, ExitReason::Failed(ref e) if e.contains("intensity")),
        "{reason}"
    );
    assert_eq!(events.restarted("mid").await, 2);
    assert_eq!(mid_ref.wait_for_generation(2, WAIT).await.unwrap(), 2);
    assert_eq!(
        log.take(),
        ["stop c", "stop a", "start a", "start b", "start c"],
        "remaining children stop in reverse order before the escalation"
    );
    assert_eq!(ping(&ha).await, 2);
    assert_eq!(ping(&hb).await, 3);
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_intensity_escalates_on_the_first_failure_and_the_root_fails() {
    let env = TreeEnv::new(None);
    let mut events = Events::new(&env);
    let log = Log::default();
    let (w, hw) = WorkerSpec::new("w", Probe::new("w", &log)).build();
    let root = start_root(
        SupervisorSpec::new("root", Strategy::OneForOne)
            .intensity(0, Duration::from_secs(60))
            .child(w),
        env,
    )
    .await
    .unwrap();
    hw.cast(ProbeMsg::Fail).unwrap();
    events
        .wait("root escalation", |e| {
            e.supervisor.is_empty() && matches!(e.kind, EventKind::Escalated { .. })
        })
        .await;
    let sup = root.supervisor().clone();
    assert!(
        matches!(sup.which_children().await, Err(SupervisorError::Call(_))),
        "a failed root answers no more requests"
    );
    assert!(!sup.is_running());
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_trees_register_paths_and_shut_down_depth_first_in_reverse() {
    let env = TreeEnv::new(None);
    let log = Log::default();
    let (leaf1, _) = WorkerSpec::new("w1", Probe::new("w1", &log)).build();
    let (leaf2, _) = WorkerSpec::new("w2", Probe::new("w2", &log)).build();
    let (top_w, _) = WorkerSpec::new("w0", Probe::new("w0", &log)).build();
    let inner = SupervisorSpec::new("inner", Strategy::OneForOne)
        .child(leaf1)
        .child(leaf2);
    let outer = SupervisorSpec::new("outer", Strategy::OneForAll)
        .child(top_w)
        .child(inner);
    let root = start_root(
        SupervisorSpec::new("root", Strategy::OneForOne).child(outer),
        env.clone(),
    )
    .await
    .unwrap();
    assert_eq!(log.take(), ["start w0", "start w1", "start w2"]);
    let registry = env.registry();
    assert_eq!(
        registry.paths("", 10),
        [
            "outer",
            "outer/inner",
            "outer/inner/w1",
            "outer/inner/w2",
            "outer/w0"
        ]
    );
    let w2 = registry.lookup::<ProbeMsg>("outer/inner/w2").unwrap();
    assert_eq!(ping(&w2).await, 1);
    assert!(
        registry.lookup::<u32>("outer/inner/w2").is_none(),
        "wrong type"
    );
    let inner_ref = registry.lookup_supervisor("outer/inner").unwrap();
    let counts = inner_ref.count_children().await.unwrap();
    assert_eq!((counts.specs, counts.active, counts.workers), (2, 2, 2));
    let outer_ref = registry.lookup_supervisor("outer").unwrap();
    let outer_counts = outer_ref.count_children().await.unwrap();
    assert_eq!((outer_counts.supervisors, outer_counts.workers), (1, 1));

    root.shutdown(WAIT).await.unwrap();
    assert_eq!(log.take(), ["stop w2", "stop w1", "stop w0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_ignores_shutdown_is_killed_after_its_timeout() {
    let env = TreeEnv::new(None);
    let mut events = Events::new(&env);
    let log = Log::default();
    let root = plain_root(env).await;
    let sup = root.supervisor();
    let stubborn = sup
        .start_worker(
            WorkerSpec::new("stubborn", Probe::new("stubborn", &log))
                .shutdown(Shutdown::Timeout(Duration::from_millis(50))),
        )
        .await
        .unwrap();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    stubborn.cast(ProbeMsg::Hang(entered_tx)).unwrap();
    entered_rx.await.unwrap();
    sup.terminate_child("stubborn").await.unwrap();
    assert_eq!(events.exited("stubborn").await, ExitReason::Killed);
    assert!(
        !log.take().contains(&"stop stubborn".to_string()),
        "a killed child's stop hook does not run"
    );
    let info = &sup.which_children().await.unwrap()[0];
    assert_eq!(info.status, ChildStatus::Stopped);
    // restart_child brings it back; delete_child needs it stopped first.
    sup.restart_child("stubborn").await.unwrap();
    assert!(matches!(
        sup.delete_child("stubborn").await,
        Err(SupervisorError::Running(_))
    ));
    sup.remove_child("stubborn").await.unwrap();
    assert!(sup.which_children().await.unwrap().is_empty());
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brutal_kill_does_not_wait() {
    let env = TreeEnv::new(None);
    let mut events = Events::new(&env);
    let log = Log::default();
    let root = plain_root(env).await;
    let sup = root.supervisor();
    let w = sup
        .start_worker(WorkerSpec::new("w", Probe::new("w", &log)).shutdown(Shutdown::BrutalKill))
        .await
        .unwrap();
    let _release = block(&w).await;
    sup.terminate_child("w").await.unwrap();
    assert_eq!(events.exited("w").await, ExitReason::Killed);
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_supervisor_adds_children_at_run_time_up_to_its_limit() {
    let env = TreeEnv::new(None);
    let log = Log::default();
    let root = plain_root(env).await;
    let agents = root
        .supervisor()
        .start_supervisor(SupervisorSpec::dynamic("agents").max_children(2))
        .await
        .unwrap();
    for id in ["x", "y"] {
        agents
            .start_worker(WorkerSpec::new(id, Probe::new(id, &log)))
            .await
            .unwrap();
    }
    let third = agents
        .start_worker(WorkerSpec::new("z", Probe::new("z", &log)))
        .await;
    assert!(
        matches!(third, Err(SupervisorError::MaxChildren { max: 2, .. })),
        "{third:?}"
    );
    let dup = agents
        .start_worker(WorkerSpec::new("x", Probe::new("x", &log)))
        .await;
    assert!(matches!(dup, Err(SupervisorError::AlreadyPresent(_))));
    let bad = agents
        .start_worker(WorkerSpec::new("a/b", Probe::new("a/b", &log)))
        .await;
    assert!(matches!(bad, Err(SupervisorError::InvalidSpec(ref m)) if m.contains('/')));
    let ids: Vec<String> = agents
        .which_children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.path)
        .collect();
    assert_eq!(ids, ["agents/x", "agents/y"]);
    root.shutdown(WAIT).await.unwrap();
    assert_eq!(log.take(), ["start x", "start y", "stop y", "stop x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_supervisor_brings_back_its_dynamic_children() {
    let env = TreeEnv::new(None);
    let mut events = Events::new(&env);
    let log = Log::default();
    let root = tolerant_root(env).await;
    let agents = root
        .supervisor()
        .start_supervisor(SupervisorSpec::dynamic("agents").intensity(0, Duration::from_secs(60)))
        .await
        .unwrap();
    let x = agents
        .start_worker(WorkerSpec::new("x", Probe::new("x", &log)))
        .await
        .unwrap();
    let y = agents
        .start_worker(WorkerSpec::new("y", Probe::new("y", &log)))
        .await
        .unwrap();
    x.cast(ProbeMsg::Fail).unwrap();
    events.restarted("agents").await;
    assert_eq!(ping(&x).await, 2);
    assert_eq!(ping(&y).await, 2);
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_backoff_delays_restarts_and_requests_are_served_meanwhile() {
    let env = TreeEnv::new(None);
    let mut events = Events::new(&env);
    let log = Log::default();
    let backoff = Backoff::Exponential {
        initial: Duration::from_millis(40),
        max: Duration::from_millis(200),
        jitter: 0.25,
    };
    let root = start_root(
        SupervisorSpec::new("root", Strategy::OneForOne)
            .intensity(5, Duration::from_secs(60))
            .backoff(backoff)
            .jitter_seed(7),
        env,
    )
    .await
    .unwrap();
    let sup = root.supervisor();
    let w = sup
        .start_worker(WorkerSpec::new("w", Probe::new("w", &log)))
        .await
        .unwrap();
    let mut delays = Vec::new();
    for generation in 2..=4 {
        w.cast(ProbeMsg::Fail).unwrap();
        let e = events
            .wait("restart scheduled", |e| {
                matches!(e.kind, EventKind::RestartScheduled { .. })
            })
            .await;
        let EventKind::RestartScheduled { delay_ms } = e.kind else {
            unreachable!()
        };
        delays.push(delay_ms);
        // While the child waits, the supervisor answers.
        if generation == 2 {
            let info = &sup.which_children().await.unwrap()[0];
            assert_eq!(info.status, ChildStatus::Restarting);
            assert!(matches!(
                sup.restart_child("w").await,
                Err(SupervisorError::Restarting(_))
            ));
        }
        assert_eq!(events.restarted("w").await, generation);
    }
    // 40, 80, 160 ms, each shortened by at most 25 %.
    for (delay, base) in delays.iter().zip([40u64, 80, 160]) {
        assert!(
            *delay <= base && *delay >= base * 3 / 4,
            "delays {delays:?}"
        );
    }
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_restart_is_retried_and_counts_towards_the_intensity() {
    use aios_supervisor::{ChildKind, ChildSpec, StartError};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    let env = TreeEnv::new(None);
    let mut events = Events::new(&env);
    let log = Log::default();
    // Starts once, then fails twice, then starts again.
    let starts = Arc::new(AtomicU32::new(0));
    let (inner_spec, inner_handle) = WorkerSpec::new("flaky", Probe::new("flaky", &log)).build();
    let counter = starts.clone();
    let spec = ChildSpec::from_fn("flaky", ChildKind::Worker, move |args| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let inner = inner_spec.clone();
        async move {
            if n == 1 || n == 2 {
                return Err(StartError::Spawn(format!("attempt {n} refused")));
            }
            inner.start_with(args).await
        }
    });
    let root = start_root(
        SupervisorSpec::new("root", Strategy::OneForOne)
            .intensity(3, Duration::from_secs(60))
            .child(spec),
        env,
    )
    .await
    .unwrap();
    inner_handle.cast(ProbeMsg::Fail).unwrap();
    for _ in 0..2 {
        events
            .wait("failed start", |e| {
                matches!(e.kind, EventKind::ChildStartFailed { .. })
            })
            .await;
    }
    events.restarted("flaky").await;
    assert_eq!(starts.load(Ordering::SeqCst), 4);
    assert!(ping(&inner_handle).await >= 2);
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_child_is_a_crash_the_supervisor_restarts() {
    let env = TreeEnv::new(None);
    let mut events = Events::new(&env);
    let log = Log::default();
    let root = tolerant_root(env).await;
    let sup = root.supervisor();
    let w = sup
        .start_worker(WorkerSpec::new("w", Probe::new("w", &log)))
        .await
        .unwrap();
    sup.kill_child("w").await.unwrap();
    assert_eq!(events.exited("w").await, ExitReason::Killed);
    assert_eq!(events.restarted("w").await, 2);
    assert_eq!(ping(&w).await, 2, "the handle follows the new incarnation");
    let info = &sup.which_children().await.unwrap()[0];
    assert_eq!(info.restarts, 1);
    assert!(matches!(
        sup.kill_child("nobody").await,
        Err(SupervisorError::NotFound(_))
    ));
    sup.terminate_child("w").await.unwrap();
    assert!(matches!(
        sup.kill_child("w").await,
        Err(SupervisorError::NotRunning(_))
    ));
    root.shutdown(WAIT).await.unwrap();
}
