//! Vector memory. Data: a seeded Gaussian mixture shaped like real embeddings — 40 topic
//! centres on the unit sphere, 2,000 cluster centres spread around them, each point a
//! cluster centre plus Gaussian noise, unit normalised; queries drawn the same way.
//!
//! - `BENCH memory_insert`: durable inserts through `MemoryStore::remember` (batches of 1,000,
//!   vectors supplied, 4 shards) into a node's sled store. Baseline: the same bytes appended
//!   to a file with one fsync per batch.
//! - `BENCH memory_query index=<exact|ann>`: single-threaded top-10 queries on one index of
//!   all points; recall@10 against exact search; `build_s` for building the index.
//! - `BENCH memory_scan`: exact-scan bytes/s against a plain sum over an `f32` array of the
//!   same size (the memory-bandwidth baseline).
//! - `BENCH memory_fanout shards=<1|2|4|8>`: one namespace of 20,000 items per shard count,
//!   top-10 queries one at a time through the router.
//!
//! `AIOS_BENCH_MEMORY_N` (default 100,000) sets the number of points; 1,000,000 is the
//! opt-in large case. `AIOS_BENCH_MEMORY_QUERIES` (default 200) the number of queries.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aios::actors::memory::{
    AnnParams, HashEmbedder, IndexKind, MemoryConfig, MemoryMeta, MemoryStore, NamespaceSpec,
    NewMemory, Query, SearchRequest, VectorIndex,
};
use aios::actors::records::Records;
use aios_supervisor::snapshot::{SledStore, Snapshots};
use aios_supervisor::{Root, Strategy, SupervisorSpec, TreeEnv, start_root};
use common::{bench_line, env_count, fmt0, fmt1, fmt2, per_s};

const DIM: usize = 384;
const SUPER_CLUSTERS: usize = 40;
const CLUSTERS: usize = 2000;
/// Norm of a cluster centre's offset from its super-cluster's centre.
const SPREAD: f32 = 0.8;
/// Norm of a point's offset from its cluster's centre.
const NOISE: f32 = 0.6;
const BATCH: usize = 1000;

/// A seeded Gaussian-mixture generator.
struct Mixture {
    rng: fastrand::Rng,
    centres: Vec<Vec<f32>>,
}

impl Mixture {
    /// Two levels, as in real embedding spaces: topics (super-clusters) and, within them,
    /// clusters of near-paraphrases.
    fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let supers: Vec<Vec<f32>> = (0..SUPER_CLUSTERS)
            .map(|_| unit((0..DIM).map(|_| gauss(&mut rng)).collect()))
            .collect();
        let scale = SPREAD / (DIM as f32).sqrt();
        let centres = (0..CLUSTERS)
            .map(|_| {
                let s = &supers[rng.usize(..SUPER_CLUSTERS)];
                unit(s.iter().map(|x| x + scale * gauss(&mut rng)).collect())
            })
            .collect();
        Self { rng, centres }
    }

    fn point(&mut self) -> Vec<f32> {
        let c = self.rng.usize(..CLUSTERS);
        let scale = NOISE / (DIM as f32).sqrt();
        let v: Vec<f32> = self.centres[c]
            .iter()
            .map(|x| x + scale * gauss(&mut self.rng))
            .collect();
        unit(v)
    }
}

/// A standard normal sample (Box–Muller).
fn gauss(rng: &mut fastrand::Rng) -> f32 {
    let u1 = rng.f32().max(f32::MIN_POSITIVE);
    let u2 = rng.f32();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

async fn node(dir: &std::path::Path) -> (Root, MemoryStore) {
    let snapshots = Snapshots::new(Arc::new(
        SledStore::open(dir, &Default::default()).expect("a fresh store opens"),
    ));
    let root = start_root(
        SupervisorSpec::new("bench", Strategy::OneForOne),
        TreeEnv::new(Some(snapshots.clone())),
    )
    .await
    .expect("the root starts");
    let memory = root
        .supervisor()
        .start_supervisor(SupervisorSpec::dynamic("memory"))
        .await
        .expect("the memory supervisor starts");
    let store = MemoryStore::open(
        memory,
        Records::new(snapshots),
        Arc::new(HashEmbedder::new(DIM)),
        MemoryConfig::default(),
    )
    .await
    .expect("the memory opens");
    (root, store)
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("the target's tmp dir is writable")
}

fn memories(points: &[Vec<f32>]) -> Vec<NewMemory> {
    points
        .iter()
        .enumerate()
        .map(|(i, v)| NewMemory {
            text: format!("memory {i}"),
            vector: Some(v.clone()),
            meta: MemoryMeta::default(),
        })
        .collect()
}

async fn insert(points: &[Vec<f32>]) {
    let dir = temp_dir();
    let (root, store) = node(dir.path()).await;
    let mut spec = NamespaceSpec::new("bench", 4);
    spec.index = IndexKind::Exact;
    store.create_namespace(spec).await.expect("namespace");
    let start = Instant::now();
    for chunk in points.chunks(BATCH) {
        store
            .remember("bench", memories(chunk))
            .await
            .expect("durable insert");
    }
    let ours = per_s(points.len() as u64, start.elapsed());
    root.shutdown(Duration::from_secs(30)).await.expect("stop");
    drop(store);

    // Baseline: the same vectors as bytes, appended to one file, fsync per batch.
    let path = dir.path().join("baseline.bin");
    let mut file = std::fs::File::create(&path).expect("baseline file");
    let start = Instant::now();
    for chunk in points.chunks(BATCH) {
        for v in chunk {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            file.write_all(&bytes).expect("write");
        }
        file.sync_data().expect("fsync");
    }
    let file_per_s = per_s(points.len() as u64, start.elapsed());
    bench_line(
        "memory_insert",
        &[
            ("n", points.len().to_string()),
            ("dim", DIM.to_string()),
            ("per_s", fmt0(ours)),
            ("batch", BATCH.to_string()),
            ("shards", "4".into()),
            ("file_fsync_per_s", fmt0(file_per_s)),
            ("ratio", fmt2(ours / file_per_s)),
        ],
    );
}

fn query(points: &[Vec<f32>], queries: &[Vec<f32>]) -> Vec<Vec<u64>> {
    let items = || {
        points
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64, v.as_slice()))
    };
    let start = Instant::now();
    let exact = VectorIndex::build(DIM, IndexKind::Exact, AnnParams::default(), items());
    let exact_build = start.elapsed();
    let start = Instant::now();
    let truth: Vec<Vec<u64>> = queries
        .iter()
        .map(|q| exact.search(q, 10, &|_| true).iter().map(|h| h.0).collect())
        .collect();
    let exact_qps = per_s(queries.len() as u64, start.elapsed());
    bench_line(
        "memory_query",
        &[
            ("n", points.len().to_string()),
            ("dim", DIM.to_string()),
            ("index", "exact".into()),
            ("qps", fmt1(exact_qps)),
            ("recall10", "1.000".into()),
            ("build_s", fmt2(exact_build.as_secs_f64())),
        ],
    );
    drop(exact);

    let start = Instant::now();
    let mut ann = VectorIndex::build(DIM, IndexKind::Ann, AnnParams::default(), items());
    let ann_build = start.elapsed();
    // The default ef_search first (the figure that counts), then the trade-off around it.
    let default_ef = AnnParams::default().ef_search;
    for ef in [default_ef, 32, 128] {
        ann.set_ef_search(ef);
        let start = Instant::now();
        let mut found = 0;
        for (q, t) in queries.iter().zip(&truth) {
            found += ann
                .search(q, 10, &|_| true)
                .iter()
                .filter(|h| t.contains(&h.0))
                .count();
        }
        let ann_qps = per_s(queries.len() as u64, start.elapsed());
        bench_line(
            "memory_query",
            &[
                ("n", points.len().to_string()),
                ("dim", DIM.to_string()),
                ("index", "ann".into()),
                ("qps", fmt1(ann_qps)),
                (
                    "recall10",
                    format!("{:.3}", found as f64 / (10 * queries.len()) as f64),
                ),
                ("build_s", fmt2(ann_build.as_secs_f64())),
                ("speedup_vs_exact", fmt1(ann_qps / exact_qps)),
                ("ef_search", ef.to_string()),
            ],
        );
    }
    truth
}

fn scan(points: &[Vec<f32>], queries: &[Vec<f32>]) {
    let items = points
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u64, v.as_slice()));
    let exact = VectorIndex::build(DIM, IndexKind::Exact, AnnParams::default(), items);
    let bytes = (points.len() * DIM * 4) as f64;
    let rounds = queries.len().min(50);
    let start = Instant::now();
    for q in &queries[..rounds] {
        std::hint::black_box(exact.search(q, 10, &|_| true));
    }
    let scan_bps = bytes * rounds as f64 / start.elapsed().as_secs_f64();
    // Baseline: a plain sum over an array of the same size.
    let flat: Vec<f32> = points.iter().flatten().copied().collect();
    let start = Instant::now();
    let mut total = 0.0f32;
    for _ in 0..rounds {
        // Eight independent accumulators, so the compiler vectorises the sum like the scan.
        let mut acc = [0.0f32; 8];
        for c in std::hint::black_box(&flat).chunks_exact(8) {
            for i in 0..8 {
                acc[i] += c[i];
            }
        }
        total += acc.iter().sum::<f32>();
    }
    std::hint::black_box(total);
    let sum_bps = bytes * rounds as f64 / start.elapsed().as_secs_f64();
    bench_line(
        "memory_scan",
        &[
            ("bytes_per_s", fmt0(scan_bps)),
            ("bandwidth_bytes_per_s", fmt0(sum_bps)),
            ("ratio", fmt2(scan_bps / sum_bps)),
            ("n", points.len().to_string()),
        ],
    );
}

async fn fanout(mixture: &mut Mixture, queries: &[Vec<f32>]) {
    let n = 20_000;
    let points: Vec<Vec<f32>> = (0..n).map(|_| mixture.point()).collect();
    let model = HashEmbedder::new(DIM);
    let model = aios::actors::memory::Embedder::model(&model).to_string();
    for shards in [1u32, 2, 4, 8] {
        let dir = temp_dir();
        let (root, store) = node(dir.path()).await;
        let mut spec = NamespaceSpec::new("fan", shards);
        spec.index = IndexKind::Exact;
        store.create_namespace(spec).await.expect("namespace");
        for chunk in points.chunks(BATCH * 5) {
            store
                .remember("fan", memories(chunk))
                .await
                .expect("insert");
        }
        let start = Instant::now();
        for q in queries {
            let r = store
                .search(
                    "fan",
                    SearchRequest {
                        query: Query::Vector {
                            model: model.clone(),
                            vector: q.clone(),
                        },
                        ..SearchRequest::text("", 10)
                    },
                )
                .await
                .expect("search");
            assert!(!r.partial);
        }
        let qps = per_s(queries.len() as u64, start.elapsed());
        bench_line(
            "memory_fanout",
            &[
                ("shards", shards.to_string()),
                ("qps", fmt1(qps)),
                ("n", n.to_string()),
            ],
        );
        root.shutdown(Duration::from_secs(30)).await.expect("stop");
    }
}

fn main() {
    let n = env_count("AIOS_BENCH_MEMORY_N", 100_000) as usize;
    let nq = env_count("AIOS_BENCH_MEMORY_QUERIES", 200) as usize;
    let mut mixture = Mixture::new(42);
    let points: Vec<Vec<f32>> = (0..n).map(|_| mixture.point()).collect();
    let queries: Vec<Vec<f32>> = (0..nq).map(|_| mixture.point()).collect();
    let rt = common::runtime();
    // `AIOS_BENCH_ONLY=memory_query` (for example) runs one of them.
    let only = std::env::var("AIOS_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only == name;
    if wanted("memory_insert") {
        rt.block_on(insert(&points));
    }
    if wanted("memory_query") {
        query(&points, &queries);
    }
    if wanted("memory_scan") {
        scan(&points, &queries);
    }
    if wanted("memory_fanout") {
        rt.block_on(fanout(&mut mixture, &queries));
    }
}
