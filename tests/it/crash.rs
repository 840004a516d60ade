//! Crash test: a real child process applies durable updates as fast as it can and reports each
//! acknowledged one; it is killed with SIGKILL mid-stream, restarted on the same data dir, and
//! every acknowledged update must be there. Repeated, with the kill at different points.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const PROBE: &str = env!("CARGO_BIN_EXE_aios-probe");
const WRITERS: usize = 8;
const LINE_WAIT: Duration = Duration::from_secs(60);

fn parse(line: &str, tag: &str) -> (usize, u64) {
    let mut parts = line.split_whitespace();
    assert_eq!(parts.next(), Some(tag), "unexpected line {line:?}");
    let writer = parts.next().and_then(|w| w.parse().ok());
    let value = parts.next().and_then(|v| v.parse().ok());
    match (writer, value) {
        (Some(w), Some(v)) if w < WRITERS => (w, v),
        _ => panic!("malformed line {line:?}"),
    }
}

/// Reads complete lines only: a line cut by the kill has no newline and is not an ack.
async fn next_complete_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Option<String> {
    let mut buf = Vec::new();
    let n = r
        .read_until(b'\n', &mut buf)
        .await
        .expect("reading probe output");
    if n == 0 || buf.last() != Some(&b'\n') {
        return None;
    }
    Some(
        String::from_utf8(buf)
            .expect("probe writes UTF-8")
            .trim_end()
            .to_owned(),
    )
}

async fn read_state(dir: &Path) -> Vec<u64> {
    let out = Command::new(PROBE)
        .args(["read", "--writers", &WRITERS.to_string(), "--data-dir"])
        .arg(dir)
        .output()
        .await
        .expect("running aios-probe read");
    assert!(
        out.status.success(),
        "aios-probe read failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut state = vec![0; WRITERS];
    let text = String::from_utf8(out.stdout).unwrap();
    for line in text.lines() {
        let (w, v) = parse(line, "STATE");
        state[w] = v;
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_durable_update_survives_sigkill_repeatedly() {
    let dir = tempfile::tempdir().unwrap();
    // Acks to wait for before each kill: early, late, and right after start.
    let kill_after = [1usize, 50, 400, 1500, 120, 800];
    let mut acked = [0u64; WRITERS];
    let mut total_acks = 0;
    for (round, target) in kill_after.into_iter().enumerate() {
        let mut child = Command::new(PROBE)
            .args(["write", "--writers", &WRITERS.to_string(), "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning aios-probe write");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut seen = 0;
        while seen < target {
            let line = tokio::time::timeout(LINE_WAIT, next_complete_line(&mut out))
                .await
                .unwrap_or_else(|_| panic!("round {round}: no ack within {LINE_WAIT:?}"))
                .unwrap_or_else(|| panic!("round {round}: probe exited before {target} acks"));
            let (w, v) = parse(&line, "ACK");
            assert!(
                v > acked[w],
                "round {round}: writer {w} went back from {} to {v}",
                acked[w]
            );
            acked[w] = v;
            seen += 1;
        }
        // SIGKILL mid-stream.
        child.start_kill().unwrap();
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "the probe was killed, not finished");
        // Acks written before the kill are still in the pipe: they count.
        while let Some(line) = next_complete_line(&mut out).await {
            let (w, v) = parse(&line, "ACK");
            acked[w] = acked[w].max(v);
            seen += 1;
        }
        total_acks += seen;

        let state = read_state(dir.path()).await;
        for w in 0..WRITERS {
            assert!(
                state[w] >= acked[w],
                "round {round}: writer {w} lost acknowledged updates: acked {}, found {}",
                acked[w],
                state[w]
            );
            assert!(
                state[w] <= acked[w] + 1,
                "round {round}: writer {w} has {} but only {} were acked and one was in flight",
                state[w],
                acked[w]
            );
            // The one in flight may have landed; the next round continues from there.
            acked[w] = state[w];
        }
    }
    eprintln!(
        "crash test: {total_acks} acknowledged updates over {} kills, none lost",
        kill_after.len()
    );
}
