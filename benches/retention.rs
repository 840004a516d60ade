//! `BENCH retention`: retention throughput on a large history. `AIOS_BENCH_RETENTION_ROWS`
//! (default 1,000,000) agent transcript entries, 1000 per agent instance, are written into a
//! sled store; one retention pass keeps the newest 100 of each instance, scanning every key
//! and removing 90 % of them (`removed_per_s`). Baseline in the same run: the same number of
//! keys removed from an identical second store by a plain loop over keys it already knows,
//! with the same number of deletes in flight (no scan, no policy): `ratio` = ours / baseline.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

mod common;

use std::sync::Arc;
use std::time::Instant;

use aios::actors::agent::transcript::{TranscriptEntry, transcript_prefix};
use aios::actors::protocol::AgentId;
use aios::actors::records::Records;
use aios::actors::retention::{Keep, Progress, RetentionPolicy, delete_keys, prune_transcripts};
use aios_supervisor::snapshot::{Durability, SledStore, Snapshots};
use common::{bench_line, env_count, fmt0, fmt2, per_s};

const PER_INSTANCE: u64 = 1000;
const KEEP: u64 = 100;

async fn fill(records: &Records, rows: u64) -> Vec<String> {
    let mut doomed = Vec::new();
    let instances = rows.div_ceil(PER_INSTANCE);
    let mut written = 0;
    for i in 0..instances {
        let id = AgentId::new(format!("bench.agent{i:05}"), "main");
        let n = PER_INSTANCE.min(rows - written);
        for seq in 0..n {
            let entry = TranscriptEntry {
                seq,
                at_ms: 1_700_000_000_000 + seq,
                input: format!("message {seq} to agent {i}"),
                output: Some(format!("answer {seq}")),
                error: None,
                steps: 1,
                tool_calls: 0,
                cost_nanos: 0,
                session: None,
                run: None,
            };
            let key = format!("{}{seq:012}", transcript_prefix(&id));
            records
                .put(&key, &entry, Durability::Buffered)
                .await
                .expect("write");
            if seq + KEEP < n {
                doomed.push(key);
            }
        }
        written += n;
    }
    records.snapshots().flush().await.expect("flush");
    doomed
}

fn store(dir: &std::path::Path) -> Records {
    let store = SledStore::open(dir, &Default::default()).expect("store");
    Records::new(Snapshots::new(Arc::new(store)))
}

async fn retention() {
    let rows = env_count("AIOS_BENCH_RETENTION_ROWS", 1_000_000);
    let tmp = env!("CARGO_TARGET_TMPDIR");
    let ours_dir = tempfile::tempdir_in(tmp).expect("dir");
    let base_dir = tempfile::tempdir_in(tmp).expect("dir");
    let ours = store(ours_dir.path());
    let base = store(base_dir.path());
    let expected = fill(&ours, rows).await.len() as u64;
    let doomed = fill(&base, rows).await;

    let policy = RetentionPolicy {
        transcripts: Keep {
            max_age: None,
            max_count: Some(KEEP),
        },
        ..RetentionPolicy::default()
    };
    let progress = Progress::default();
    let start = Instant::now();
    let removed = prune_transcripts(&ours, &policy, 1_800_000_000_000, &progress)
        .await
        .expect("pass");
    let ours_elapsed = start.elapsed();
    assert_eq!(
        removed, expected,
        "the pass removes exactly what is over the count"
    );

    let start = Instant::now();
    let base_removed = delete_keys(&base, doomed).await.expect("deletes");
    let base_elapsed = start.elapsed();
    let ours_rate = per_s(removed, ours_elapsed);
    let base_rate = per_s(base_removed, base_elapsed);
    bench_line(
        "retention",
        &[
            ("rows", rows.to_string()),
            ("removed", removed.to_string()),
            ("removed_per_s", fmt0(ours_rate)),
            ("scanned_per_s", fmt0(per_s(rows, ours_elapsed))),
            ("baseline_delete_per_s", fmt0(base_rate)),
            ("ratio", fmt2(ours_rate / base_rate)),
        ],
    );
}

fn main() {
    common::runtime().block_on(retention());
}
