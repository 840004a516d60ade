//! Property test: random sequences of child failures and normal exits, run against a real
//! supervisor and against a small model of OTP's rules; after every step the set of children,
//! which of them run, and whether the supervisor escalated must agree.

use std::time::Duration;

use aios_supervisor::{
    ActorHandle, ChildStatus, EventKind, ExitReason, Restart, Strategy, SupervisorSpec, TreeEnv,
    WorkerSpec, start_root,
};
use proptest::prelude::*;

use crate::common::{Events, Log, Probe, ProbeMsg, WAIT};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Exit {
    Normal,
    Failure,
}

#[derive(Debug, Clone)]
struct ModelChild {
    restart: Restart,
    present: bool,
    running: bool,
}

#[derive(Debug, Clone)]
struct Model {
    strategy: Strategy,
    max_restarts: u32,
    restarts: u32,
    escalated: bool,
    children: Vec<ModelChild>,
}

impl Model {
    /// Applies one exit; returns false when the child was not running (the step is skipped).
    fn step(&mut self, i: usize, exit: Exit) -> bool {
        if self.escalated || !self.children[i].running {
            return false;
        }
        self.children[i].running = false;
        let restart = match self.children[i].restart {
            Restart::Permanent => true,
            Restart::Transient => exit == Exit::Failure,
            Restart::Temporary => false,
        };
        if !restart {
            if self.children[i].restart == Restart::Temporary {
                self.children[i].present = false;
            }
            return true;
        }
        self.restarts += 1;
        if self.restarts > self.max_restarts {
            self.escalated = true;
            for c in &mut self.children {
                c.running = false;
            }
            return true;
        }
        let group: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![i],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (i..self.children.len()).collect(),
        };
        for j in group {
            let c = &mut self.children[j];
            if !c.present {
                continue;
            }
            if j != i && c.restart == Restart::Temporary {
                // Stopped as a sibling and, being temporary, forgotten.
                c.present = false;
                c.running = false;
            } else {
                c.running = true;
            }
        }
        true
    }
}

fn restart_strategy() -> impl proptest::strategy::Strategy<Value = Restart> {
    prop_oneof![
        Just(Restart::Permanent),
        Just(Restart::Transient),
        Just(Restart::Temporary)
    ]
}

fn sup_strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
    prop_oneof![
        Just(Strategy::OneForOne),
        Just(Strategy::OneForAll),
        Just(Strategy::RestForOne)
    ]
}

async fn run_case(
    strategy: Strategy,
    restarts: Vec<Restart>,
    max_restarts: u32,
    ops: Vec<(usize, Exit)>,
) -> Result<(), TestCaseError> {
    let env = TreeEnv::new(None);
    let mut events = Events::new(&env);
    let log = Log::default();
    let mut sut =
        SupervisorSpec::new("sut", strategy).intensity(max_restarts, Duration::from_secs(3600));
    let mut handles: Vec<ActorHandle<ProbeMsg>> = Vec::new();
    for (i, restart) in restarts.iter().enumerate() {
        let id = format!("c{i}");
        let (spec, h) = WorkerSpec::new(id.clone(), Probe::new(&id, &log))
            .restart(*restart)
            .build();
        sut = sut.child(spec);
        handles.push(h);
    }
    // The parent never restarts `sut`, so an escalation leaves it gone for good.
    let root = start_root(
        SupervisorSpec::new("root", Strategy::OneForOne).child(sut.restart(Restart::Temporary)),
        env.clone(),
    )
    .await
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let sut = env
        .registry()
        .lookup_supervisor("sut")
        .expect("sut registered");
    let mut model = Model {
        strategy,
        max_restarts,
        restarts: 0,
        escalated: false,
        children: restarts
            .iter()
            .map(|r| ModelChild {
                restart: *r,
                present: true,
                running: true,
            })
            .collect(),
    };

    for (i, exit) in ops {
        let i = i % handles.len();
        if !model.step(i, exit) {
            continue;
        }
        handles[i]
            .cast(match exit {
                Exit::Normal => ProbeMsg::Exit,
                Exit::Failure => ProbeMsg::Fail,
            })
            .map_err(|e| TestCaseError::fail(format!("c{i} should be running: {e:?}")))?;
        let path = format!("sut/c{i}");
        // Match the reason too: the stream may still hold this child's `Shutdown` exit from an
        // earlier group restart.
        events
            .wait(&format!("{exit:?} exit of {path}"), |e| {
                let EventKind::ChildExited { reason } = &e.kind else {
                    return false;
                };
                e.child.as_deref() == Some(path.as_str())
                    && match exit {
                        Exit::Normal => *reason == ExitReason::Normal,
                        Exit::Failure => matches!(reason, ExitReason::Failed(_)),
                    }
            })
            .await;
        if model.escalated {
            let gone = events
                .wait("sut's exit seen by root", |e| {
                    e.supervisor.is_empty()
                        && e.child.as_deref() == Some("sut")
                        && matches!(e.kind, EventKind::ChildExited { .. })
                })
                .await;
            let abnormal =
                matches!(&gone.kind, EventKind::ChildExited { reason } if !reason.is_normal());
            prop_assert!(abnormal, "sut exited normally after an escalation");
            prop_assert!(!sut.is_running());
            break;
        }
        // The supervisor handles the exit to completion before this request.
        let children = sut
            .which_children()
            .await
            .map_err(|e| TestCaseError::fail(format!("supervisor escalated unexpectedly: {e}")))?;
        let actual: Vec<(String, bool)> = children
            .iter()
            .map(|c| {
                (
                    c.id.clone(),
                    matches!(c.status, ChildStatus::Running { .. }),
                )
            })
            .collect();
        let expected: Vec<(String, bool)> = model
            .children
            .iter()
            .enumerate()
            .filter(|(_, c)| c.present)
            .map(|(j, c)| (format!("c{j}"), c.running))
            .collect();
        prop_assert_eq!(
            actual,
            expected,
            "after c{} {:?}; model {:?}",
            i,
            exit,
            model
        );
    }
    root.shutdown(WAIT)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    #[test]
    fn supervisor_matches_the_otp_model(
        strategy in sup_strategy(),
        restarts in proptest::collection::vec(restart_strategy(), 1..=4),
        max_restarts in 0u32..=4,
        ops in proptest::collection::vec(
            (0usize..4, prop_oneof![Just(Exit::Normal), Just(Exit::Failure)]),
            1..=12,
        ),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_case(strategy, restarts, max_restarts, ops))?;
    }
}
