//! Crash test of orchestration: a real child process runs a three-step plan against the fake
//! LLM server in this process and is killed with SIGKILL while the last step's LLM call is in
//! flight. Restarted on the same data directory, it resumes the run: the plan and the two
//! finished steps are not asked again, the interrupted step is, and the run composes its
//! answer.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use aios_testkit::{FakeConfig, FakeLlm, FakeReply};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

const PROBE: &str = env!("CARGO_BIN_EXE_aios-probe");
const LINE_WAIT: Duration = Duration::from_secs(60);

const PLAN: &str = r#"{"steps": [
  {"id": "a", "description": "find fact A", "capability": "research"},
  {"id": "b", "description": "find fact B", "capability": "research"},
  {"id": "c", "description": "write it up", "capability": "write", "depends_on": ["a", "b"]}
]}"#;

fn last_user(req: &Value) -> String {
    req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string()
}

/// The fake's answers; step `c` waits for `gate` when given.
fn answers(gate: Option<Arc<Notify>>) -> FakeReply {
    FakeReply::Dynamic(Arc::new(move |req| {
        let user = last_user(req);
        let system = req["messages"][0]["content"].as_str().unwrap_or("");
        if user.contains("Every step of the plan is done") {
            FakeReply::Text("FINAL".into())
        } else if system.contains("PLANNER") {
            FakeReply::Text(PLAN.into())
        } else if user.contains("Your step (a)") {
            FakeReply::Text("fact A".into())
        } else if user.contains("Your step (b)") {
            FakeReply::Text("fact B".into())
        } else if user.contains("Your step (c)") {
            let text = FakeReply::Text("the write-up".into());
            match &gate {
                Some(g) => FakeReply::Gated(g.clone(), Box::new(text)),
                None => text,
            }
        } else {
            FakeReply::Text(format!("unexpected request: {user}"))
        }
    }))
}

fn count(fake: &FakeLlm, needle: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| last_user(&r.body).contains(needle))
        .count()
}

fn probe(dir: &std::path::Path, url: &str) -> Child {
    Command::new(PROBE)
        .args(["run", "--llm-url", url, "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning aios-probe run")
}

/// Reads lines until one satisfies `until`; returns it.
async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    until: impl Fn(&str) -> bool,
) -> String {
    loop {
        let line = tokio::time::timeout(LINE_WAIT, lines.next_line())
            .await
            .expect("probe went quiet")
            .expect("reading probe output")
            .expect("probe ended early");
        if until(&line) {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_plan_resumes_without_repeating_finished_steps() {
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let gate = Arc::new(Notify::new());
    fake.set_default(answers(Some(gate.clone())));
    let dir = tempfile::tempdir().expect("dir");

    let mut child = probe(dir.path(), &fake.base_url());
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let run = read_until(&mut lines, |l| l.starts_with("RUN ")).await;
    read_until(&mut lines, |l| {
        l.starts_with("EVENT ") && l.contains("step_started") && l.contains(r#""step":"c""#)
    })
    .await;
    // Steps a and b are done and recorded; c's request is held at the fake.
    fake.wait_in_flight(1).await;
    assert_eq!(count(&fake, "Make a plan"), 1);
    assert_eq!(count(&fake, "Your step (a)"), 1);
    assert_eq!(count(&fake, "Your step (b)"), 1);
    assert_eq!(count(&fake, "Your step (c)"), 1);
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.expect("wait");
    assert!(!status.success(), "the probe was killed, not finished");
    fake.wait_in_flight(0).await;

    fake.set_default(answers(None));
    let mut child = probe(dir.path(), &fake.base_url());
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let resumed = read_until(&mut lines, |l| l.starts_with("RUN ")).await;
    assert_eq!(resumed, run, "the same run resumed");
    let done = read_until(&mut lines, |l| l.starts_with("DONE ")).await;
    assert_eq!(done, "DONE succeeded FINAL");
    let status = child.wait().await.expect("wait");
    assert!(status.success());

    // Nothing finished before the kill was asked again; the interrupted step was.
    assert_eq!(count(&fake, "Make a plan"), 1);
    assert_eq!(count(&fake, "Your step (a)"), 1);
    assert_eq!(count(&fake, "Your step (b)"), 1);
    assert_eq!(count(&fake, "Your step (c)"), 2);
    assert_eq!(count(&fake, "Every step of the plan is done"), 1);
    let c = fake
        .requests()
        .into_iter()
        .rev()
        .find(|r| last_user(&r.body).contains("Your step (c)"))
        .expect("c request");
    let c_prompt = last_user(&c.body);
    assert!(c_prompt.contains("fact A") && c_prompt.contains("fact B"));
}
