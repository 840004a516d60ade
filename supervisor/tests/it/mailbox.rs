//! Bounded mailboxes and what a send to a stopped actor returns.

use aios_supervisor::{CallError, SendError, TreeEnv, WorkerSpec};

use crate::common::{Log, Probe, ProbeMsg, WAIT, block, plain_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_refuses_the_send_and_hands_the_message_back() {
    let log = Log::default();
    let root = plain_root(TreeEnv::new(None)).await;
    let sup = root.supervisor();
    let w = sup
        .start_worker(WorkerSpec::new("w", Probe::new("w", &log)).mailbox_len_max(3))
        .await
        .unwrap();
    assert_eq!(w.mailbox_len_max(), 3);
    let release = block(&w).await;
    assert_eq!(w.mailbox_len(), 0, "the blocking message was taken");

    let mut replies = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        w.cast(ProbeMsg::Ping(tx.into())).unwrap();
        replies.push(rx);
    }
    assert_eq!(w.mailbox_len(), 3);
    let err = w.cast(ProbeMsg::Exit).unwrap_err();
    assert!(err.is_mailbox_full(), "{err:?}");
    assert!(matches!(err, SendError::MailboxFull { len_max: 3, .. }));
    assert!(
        matches!(err.into_inner(), ProbeMsg::Exit),
        "the message comes back"
    );
    let call = w.call(ProbeMsg::Ping, WAIT).await;
    assert!(
        matches!(call, Err(CallError::MailboxFull { len_max: 3, .. })),
        "{call:?}"
    );
    let info = &sup.which_children().await.unwrap()[0];
    assert_eq!(
        info.mailbox_len, 3,
        "depth is observable through the supervisor"
    );

    release.send(()).unwrap();
    for rx in replies {
        assert_eq!(tokio::time::timeout(WAIT, rx).await.unwrap().unwrap(), 1);
    }
    assert_eq!(w.mailbox_len(), 0);
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_a_stopped_child_fail_at_once() {
    let log = Log::default();
    let root = plain_root(TreeEnv::new(None)).await;
    let sup = root.supervisor();
    let w = sup
        .start_worker(WorkerSpec::new("w", Probe::new("w", &log)))
        .await
        .unwrap();
    sup.terminate_child("w").await.unwrap();
    let err = w.cast(ProbeMsg::Exit).unwrap_err();
    assert!(
        matches!(err, SendError::Unavailable { ref path, .. } if path == "w"),
        "{err:?}"
    );
    let call = w.call(ProbeMsg::Ping, WAIT).await;
    assert_eq!(call, Err(CallError::Unavailable { path: "w".into() }));
    assert_eq!(w.generation(), None);
    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_child_that_fails_before_replying_is_dropped_not_hung() {
    let log = Log::default();
    let root = plain_root(TreeEnv::new(None)).await;
    let w = root
        .supervisor()
        .start_worker(WorkerSpec::new("w", Probe::new("w", &log)))
        .await
        .unwrap();
    let release = block(&w).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<u64>();
    w.cast(ProbeMsg::Ping(tx.into())).unwrap();
    // The actor is killed with the ping still queued: its reply port is dropped.
    w.actor_cell().unwrap().kill();
    drop(release);
    assert!(tokio::time::timeout(WAIT, rx).await.unwrap().is_err());
    root.shutdown(WAIT).await.unwrap();
}
