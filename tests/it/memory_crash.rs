//! Crash test of the vector memory: a real child process stores memories as fast as it can
//! and reports each acknowledged one; it is killed with SIGKILL, restarted on the same data
//! dir, and every acknowledged memory must be there. Repeated, with kills at different
//! points.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const PROBE: &str = env!("CARGO_BIN_EXE_aios-probe");
const LINE_WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_memory_survives_sigkill_repeatedly() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<u64> = Vec::new();
    for kill_after in [1usize, 40, 200, 8] {
        let mut child = Command::new(PROBE)
            .args(["remember", "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning aios-probe remember");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut seen = 0;
        while seen < kill_after {
            let mut line = String::new();
            let n = tokio::time::timeout(LINE_WAIT, out.read_line(&mut line))
                .await
                .expect("the probe went quiet")
                .expect("reading the probe");
            assert!(n > 0, "the probe ended early");
            // A line cut by the kill has no newline and is not an acknowledgement.
            if let Some(id) = line.strip_suffix('\n').and_then(|l| l.strip_prefix("ACK ")) {
                acked.push(id.parse().expect("an id"));
                seen += 1;
            }
        }
        child.start_kill().expect("SIGKILL");
        child.wait().await.expect("wait");
        // Acknowledgements printed before the kill landed are acknowledged too.
        let mut rest = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut out, &mut rest).await;
        for line in rest.split_inclusive('\n') {
            if let Some(id) = line.strip_suffix('\n').and_then(|l| l.strip_prefix("ACK ")) {
                acked.push(id.parse().expect("an id"));
            }
        }

        let mut reader = Command::new(PROBE)
            .args(["recall", "--data-dir"])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning aios-probe recall");
        let mut stdin = reader.stdin.take().unwrap();
        let ids: String = acked.iter().map(|id| format!("{id}\n")).collect();
        stdin.write_all(ids.as_bytes()).await.unwrap();
        drop(stdin);
        let output = reader.wait_with_output().await.expect("recall");
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        let missing: Vec<&str> = text.lines().filter(|l| l.starts_with("MISSING")).collect();
        assert!(
            missing.is_empty(),
            "lost acknowledged memories: {missing:?}"
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("FOUND")).count(),
            acked.len()
        );
    }
    assert!(acked.len() >= 249);
}
