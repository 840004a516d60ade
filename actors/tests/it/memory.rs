//! Vector memory end to end: durable writes across a restart and a shard crash, filters,
//! deletes, quotas, model checks, partial results from a killed shard, context-aware
//! recall, and the OpenAI-compatible embedder against the fake server.

use std::sync::Arc;
use std::time::Duration;

use aios_actors::memory::{
    AnnParams, HashEmbedder, IndexKind, MemoryConfig, MemoryError, MemoryFilter, MemoryMeta,
    MemoryStore, NamespaceSpec, NewMemory, OpenAiEmbedder, OpenAiEmbedderConfig, Query,
    RecallRequest, RecallWeights, SearchRequest, SharedEmbedder,
};
use aios_actors::records::Records;
use aios_supervisor::snapshot::{SledStore, Snapshots};
use aios_supervisor::{Root, Strategy, SupervisorSpec, TreeEnv, start_root};
use aios_testkit::{FakeConfig, FakeLlm};

struct Mem {
    root: Root,
    store: MemoryStore,
}

async fn open(dir: &std::path::Path, embedder: SharedEmbedder) -> Mem {
    let snapshots = Snapshots::new(Arc::new(
        SledStore::open(dir, &Default::default()).expect("store"),
    ));
    let root = start_root(
        SupervisorSpec::new("root", Strategy::OneForOne),
        TreeEnv::new(Some(snapshots.clone())),
    )
    .await
    .expect("root");
    let memory = root
        .supervisor()
        .start_supervisor(SupervisorSpec::dynamic("memory").intensity(20, Duration::from_secs(10)))
        .await
        .expect("memory supervisor");
    let store = MemoryStore::open(
        memory,
        Records::new(snapshots),
        embedder,
        MemoryConfig::default(),
    )
    .await
    .expect("memory opens");
    Mem { root, store }
}

impl Mem {
    async fn close(self) {
        self.root
            .shutdown(Duration::from_secs(10))
            .await
            .expect("shutdown");
        drop(self.store);
    }
}

fn hash() -> SharedEmbedder {
    Arc::new(HashEmbedder::default())
}

fn tagged(text: &str, agent: &str, tags: &[&str]) -> NewMemory {
    NewMemory {
        text: text.into(),
        vector: None,
        meta: MemoryMeta {
            agent: Some(agent.into()),
            tags: tags.iter().map(|t| (*t).to_string()).collect(),
            ..MemoryMeta::default()
        },
    }
}

#[tokio::test]
async fn acknowledged_memories_survive_a_restart_and_a_shard_crash() {
    let dir = tempfile::tempdir().expect("dir");
    let facts = [
        "the deploy pipeline runs on friday evenings",
        "alice prefers tea over coffee",
        "the database backup is stored in bucket aios-backups",
        "bob is allergic to peanuts",
        "the staging cluster has three nodes",
    ];
    let ids = {
        let m = open(dir.path(), hash()).await;
        m.store
            .create_namespace(NamespaceSpec::new("team", 3))
            .await
            .expect("namespace");
        let ids = m
            .store
            .remember(
                "team",
                facts.iter().map(|f| tagged(f, "ops", &["fact"])).collect(),
            )
            .await
            .expect("remember");
        assert_eq!(ids.len(), facts.len());
        // A panicking shard is restarted by its supervisor and reloads its items.
        let cell = m.store.shard_cell("team", 0).expect("shard 0");
        cell.kill();
        m.store
            .wait_shard_generation("team", 0, 2, Duration::from_secs(10))
            .await
            .expect("shard 0 restarted");
        for (fact, query) in [
            (facts[2], "where is the database backup stored"),
            (facts[4], "how many nodes has the staging cluster"),
        ] {
            let r = m
                .store
                .search("team", SearchRequest::text(query, 1))
                .await
                .expect("search");
            assert!(!r.partial);
            assert_eq!(r.hits[0].text, fact);
        }
        m.close().await;
        ids
    };
    let m = open(dir.path(), hash()).await;
    let info = m.store.namespace("team").expect("namespace restored");
    assert_eq!((info.shards, info.dim), (3, 384));
    let result = m
        .store
        .search("team", SearchRequest::text("who is allergic to peanuts", 2))
        .await
        .expect("search");
    assert!(!result.partial);
    assert_eq!(result.hits[0].text, facts[3]);
    assert!(ids.contains(&result.hits[0].id));
    let stats = m.store.stats("team").await.expect("stats");
    assert_eq!(stats.iter().map(|s| s.items).sum::<u64>(), 5);
    m.close().await;
}

#[tokio::test]
async fn a_killed_shard_gives_a_partial_marked_result_within_the_deadline() {
    let dir = tempfile::tempdir().expect("dir");
    let m = open(dir.path(), hash()).await;
    m.store
        .create_namespace(NamespaceSpec::new("team", 4))
        .await
        .expect("namespace");
    let texts: Vec<NewMemory> = (0..40)
        .map(|i| NewMemory::text(format!("note number {i} about the roadmap")))
        .collect();
    m.store.remember("team", texts).await.expect("remember");
    let cell = m.store.shard_cell("team", 2).expect("shard 2");
    cell.kill();
    let started = std::time::Instant::now();
    let mut request = SearchRequest::text("roadmap note", 10);
    request.timeout = Duration::from_millis(500);
    let r = m.store.search("team", request).await.expect("search");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(r.partial, "{r:?}");
    assert_eq!(r.failed_shards, vec![2]);
    assert!(!r.hits.is_empty() && r.hits.iter().all(|h| h.shard != 2));
    m.close().await;
}

#[tokio::test]
async fn filters_deletes_quotas_and_model_checks() {
    let dir = tempfile::tempdir().expect("dir");
    let m = open(dir.path(), hash()).await;
    let mut spec = NamespaceSpec::new("ns", 2);
    spec.quota_items = Some(10);
    spec.index = IndexKind::Exact;
    m.store.create_namespace(spec).await.expect("namespace");
    m.store
        .remember(
            "ns",
            vec![
                tagged("the release is planned for march", "planner", &["plan"]),
                tagged("the release notes need a review", "writer", &["docs"]),
                tagged(
                    "the release train leaves every two weeks",
                    "planner",
                    &["plan", "process"],
                ),
            ],
        )
        .await
        .expect("remember");
    let mut request = SearchRequest::text("release", 10);
    request.filter = MemoryFilter {
        agent: Some("planner".into()),
        tags: vec!["plan".into()],
        ..MemoryFilter::default()
    };
    let r = m.store.search("ns", request.clone()).await.expect("search");
    assert_eq!(r.hits.len(), 2);
    assert!(
        r.hits
            .iter()
            .all(|h| h.meta.agent.as_deref() == Some("planner"))
    );

    // Update by filter: the planner's memories get a tag and importance.
    let changed = m
        .store
        .update(
            "ns",
            Vec::new(),
            MemoryFilter {
                agent: Some("planner".into()),
                ..MemoryFilter::default()
            },
            aios_actors::memory::MetaPatch {
                importance: Some(0.9),
                add_tags: vec!["reviewed".into()],
                ..Default::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(changed, 2);
    let mut reviewed = SearchRequest::text("release", 10);
    reviewed.filter.tags = vec!["reviewed".into()];
    let r = m.store.search("ns", reviewed).await.expect("search");
    assert_eq!(r.hits.len(), 2);
    assert!(
        r.hits
            .iter()
            .all(|h| (h.meta.importance - 0.9).abs() < 1e-6)
    );

    // Erase everything of one agent: it is no longer found.
    let deleted = m
        .store
        .forget(
            "ns",
            Vec::new(),
            MemoryFilter {
                agent: Some("planner".into()),
                ..MemoryFilter::default()
            },
        )
        .await
        .expect("forget");
    assert_eq!(deleted, 2);
    assert!(
        m.store
            .search("ns", request)
            .await
            .expect("search")
            .hits
            .is_empty()
    );

    // Quota: 10 items at most (5 per shard); a batch that would pass it is refused.
    let many: Vec<NewMemory> = (0..20)
        .map(|i| NewMemory::text(format!("item {i}")))
        .collect();
    assert!(matches!(
        m.store.remember("ns", many).await,
        Err(MemoryError::QuotaExceeded(_))
    ));

    // Wrong dimension, wrong model, bad input.
    let bad = NewMemory {
        text: "x".into(),
        vector: Some(vec![1.0; 3]),
        meta: MemoryMeta::default(),
    };
    assert!(matches!(
        m.store.remember("ns", vec![bad]).await,
        Err(MemoryError::ModelMismatch(m)) if m.contains("3 dimensions")
    ));
    let other_model = SearchRequest {
        query: Query::Vector {
            model: "text-embedding-3-small".into(),
            vector: vec![0.1; 384],
        },
        ..SearchRequest::text("", 3)
    };
    assert!(matches!(
        m.store.search("ns", other_model).await,
        Err(MemoryError::ModelMismatch(m)) if m.contains("text-embedding-3-small")
    ));
    assert!(matches!(
        m.store.remember("ns", vec![NewMemory::text("  ")]).await,
        Err(MemoryError::Invalid(_))
    ));
    assert!(matches!(
        m.store.search("nope", SearchRequest::text("x", 1)).await,
        Err(MemoryError::NamespaceNotFound(_))
    ));
    assert!(matches!(
        m.store.search("ns", SearchRequest::text("x", 0)).await,
        Err(MemoryError::Invalid(_))
    ));
    assert!(matches!(
        m.store.create_namespace(NamespaceSpec::new("ns", 2)).await,
        Err(MemoryError::NamespaceExists(_))
    ));
    // A namespace built with another model refuses text this node would embed differently.
    m.close().await;
    let m = open(dir.path(), Arc::new(HashEmbedder::new(64))).await;
    assert!(matches!(
        m.store.search("ns", SearchRequest::text("release", 1)).await,
        Err(MemoryError::ModelMismatch(m)) if m.contains("re-embed")
    ));
    m.close().await;
}

#[tokio::test]
async fn recall_weighs_recency_and_importance_and_fits_the_budget() {
    let dir = tempfile::tempdir().expect("dir");
    let m = open(dir.path(), hash()).await;
    let mut spec = NamespaceSpec::new("agent", 1);
    spec.ann = AnnParams::default();
    m.store.create_namespace(spec).await.expect("namespace");
    let day = 24 * 3600 * 1000;
    let now = aios_actors::protocol::unix_ms();
    let memory = |text: &str, age_days: u64, importance: f32| NewMemory {
        text: text.into(),
        vector: None,
        meta: MemoryMeta {
            created_ms: now - age_days * day,
            importance,
            ..MemoryMeta::default()
        },
    };
    m.store
        .remember(
            "agent",
            vec![
                memory("the user's favourite colour is blue", 30, 0.1),
                memory("the user's favourite colour is green now", 0, 0.9),
                memory("the user lives in lisbon", 1, 0.5),
            ],
        )
        .await
        .expect("remember");
    let r = m
        .store
        .recall(
            "agent",
            RecallRequest::new("favourite colour of the user", 2),
        )
        .await
        .expect("recall");
    assert_eq!(r.hits.len(), 2);
    assert!(r.hits[0].text.contains("green"), "{:?}", r.hits);
    assert!(
        r.block
            .starts_with("- the user's favourite colour is green now\n")
    );
    // Pure similarity, no recency or importance: the order may differ, but scores are the
    // similarities.
    let mut plain = RecallRequest::new("favourite colour of the user", 3);
    plain.weights = RecallWeights {
        recency: 0.0,
        importance: 0.0,
        mmr_lambda: None,
        ..RecallWeights::default()
    };
    let r = m
        .store
        .recall("agent", plain.clone())
        .await
        .expect("recall");
    assert!(r.hits.iter().all(|h| (h.score - h.similarity).abs() < 1e-6));
    // A tiny budget keeps only what fits.
    plain.token_budget = 12;
    let r = m.store.recall("agent", plain).await.expect("recall");
    assert_eq!(r.hits.len(), 1);
    assert!(r.block.len() <= 48);
    m.close().await;
}

#[tokio::test]
async fn the_openai_compatible_embedder_talks_to_the_fake_server() {
    let fake = FakeLlm::start(FakeConfig::default()).await;
    let embedder = OpenAiEmbedder::new(OpenAiEmbedderConfig {
        name: "fake".into(),
        base_url: fake.base_url(),
        model: "fake-embedding".into(),
        dim: 8,
        api_key: None,
        http: Default::default(),
        retry: Default::default(),
    })
    .expect("embedder");
    let dir = tempfile::tempdir().expect("dir");
    let m = open(dir.path(), Arc::new(embedder)).await;
    let info = m
        .store
        .create_namespace(NamespaceSpec::new("remote", 2))
        .await
        .expect("namespace");
    assert_eq!((info.model.as_str(), info.dim), ("fake-embedding", 8));
    m.store
        .remember(
            "remote",
            vec![NewMemory::text("alpha"), NewMemory::text("beta")],
        )
        .await
        .expect("remember");
    let r = m
        .store
        .search("remote", SearchRequest::text("alpha", 1))
        .await
        .expect("search");
    // The fake's embeddings are a hash of the text: the same text is the nearest.
    assert_eq!(r.hits[0].text, "alpha");
    assert!((r.hits[0].similarity - 1.0).abs() < 1e-4);
    let embeddings = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/embeddings")
        .count();
    assert_eq!(embeddings, 2, "one batch for the writes, one for the query");
    m.close().await;
}

#[tokio::test]
async fn cleanup_expires_merges_duplicates_and_redaction_masks_before_storing() {
    use aios_actors::memory::CleanupPolicy;
    let dir = tempfile::tempdir().expect("dir");
    let m = open(dir.path(), hash()).await;
    let mut spec = NamespaceSpec::new("ops", 2);
    spec.redact = true;
    m.store.create_namespace(spec).await.expect("namespace");
    let now = aios_actors::protocol::unix_ms();
    let with =
        |text: &str, created: u64, expires: Option<u64>, importance: f32, tag: &str| NewMemory {
            text: text.into(),
            vector: None,
            meta: MemoryMeta {
                user: Some("u1".into()),
                created_ms: created,
                expires_ms: expires,
                importance,
                tags: vec![tag.into()],
                ..MemoryMeta::default()
            },
        };
    let ids = m
        .store
        .remember(
            "ops",
            vec![
                with(
                    "the on-call phone is in the drawer",
                    now - 10,
                    None,
                    0.2,
                    "a",
                ),
                with(
                    "the on-call phone is in the drawer",
                    now - 5,
                    None,
                    0.8,
                    "b",
                ),
                with(
                    "temporary door code 4471",
                    now - 5,
                    Some(now + 60_000),
                    0.5,
                    "c",
                ),
                with(
                    "write to carol@example.com with key sk-abcdefghijklmnopqrstuv",
                    now,
                    None,
                    0.5,
                    "d",
                ),
            ],
        )
        .await
        .expect("remember");
    // Redacted before it was stored: the stored text has neither the address nor the key.
    let stored = m.store.get("ops", &ids[3..]).await.expect("get");
    assert!(
        stored[0].text.contains("[REDACTED:email]")
            && stored[0].text.contains("[REDACTED:api_key]")
    );
    assert!(!stored[0].text.contains("carol@"));

    // An hour later: the door code has expired; the duplicate merged into the older item.
    let report = m
        .store
        .cleanup(
            "ops",
            Some(CleanupPolicy {
                now_ms: now + 3_600_000,
                duplicate_similarity: Some(0.97),
            }),
        )
        .await
        .expect("cleanup");
    assert_eq!((report.expired, report.merged), (1, 1), "{report:?}");
    let left = m.store.get("ops", &ids).await.expect("get");
    let left_ids: Vec<u64> = left.iter().map(|h| h.id).collect();
    assert!(
        left_ids.contains(&ids[0]) && !left_ids.contains(&ids[1]) && !left_ids.contains(&ids[2])
    );
    let survivor = left.iter().find(|h| h.id == ids[0]).expect("survivor");
    assert!((survivor.meta.importance - 0.8).abs() < 1e-6);
    assert!(
        survivor.meta.tags.contains(&"a".to_string())
            && survivor.meta.tags.contains(&"b".to_string())
    );

    // Erasure of a user: gone from search and from the store, also after a restart.
    let erased = m
        .store
        .forget(
            "ops",
            Vec::new(),
            MemoryFilter {
                user: Some("u1".into()),
                ..MemoryFilter::default()
            },
        )
        .await
        .expect("erase");
    assert_eq!(erased, 2);
    m.close().await;
    let m = open(dir.path(), hash()).await;
    assert!(m.store.get("ops", &ids).await.expect("get").is_empty());
    let r = m
        .store
        .search("ops", SearchRequest::text("on-call phone", 5))
        .await
        .expect("search");
    assert!(r.hits.is_empty());
    m.close().await;
}

#[tokio::test]
async fn backup_restore_round_trip_is_identical_and_erased_data_stays_out() {
    let a_dir = tempfile::tempdir().expect("dir");
    let b_dir = tempfile::tempdir().expect("dir");
    let files = tempfile::tempdir().expect("dir");
    let backup = files.path().join("memory.aiosmem");
    let a = open(a_dir.path(), hash()).await;
    for (ns, shards) in [("one", 1), ("three", 3)] {
        a.store
            .create_namespace(NamespaceSpec::new(ns, shards))
            .await
            .expect("namespace");
        let items: Vec<NewMemory> = (0..50)
            .map(|i| NewMemory {
                text: format!("{ns} memory {i}"),
                vector: None,
                meta: MemoryMeta {
                    user: Some(if i % 10 == 0 { "erase-me" } else { "keep" }.into()),
                    tags: vec![format!("t{}", i % 3)],
                    importance: 0.5,
                    ..MemoryMeta::default()
                },
            })
            .collect();
        a.store.remember(ns, items).await.expect("remember");
        a.store
            .forget(
                ns,
                Vec::new(),
                MemoryFilter {
                    user: Some("erase-me".into()),
                    ..MemoryFilter::default()
                },
            )
            .await
            .expect("erase");
    }
    let reports = std::sync::Mutex::new(Vec::new());
    let progress = |p: aios_actors::memory::Progress| reports.lock().unwrap().push(p);
    let report = a
        .store
        .backup(&backup, Some(&progress))
        .await
        .expect("backup");
    assert_eq!((report.namespaces, report.items), (2, 90));
    assert_eq!(
        reports.lock().unwrap().last().map(|p| (p.done, p.total)),
        Some((90, 90))
    );
    let bytes = std::fs::read(&backup).expect("read");
    assert!(
        !bytes.windows(8).any(|w| w == b"erase-me"),
        "erased data is not in the backup"
    );

    let b = open(b_dir.path(), hash()).await;
    let restored = b.store.restore(&backup, None).await.expect("restore");
    assert_eq!(restored.items, 90);
    for ns in ["one", "three"] {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.store.export_jsonl(ns, &mut x).await.expect("export a");
        b.store.export_jsonl(ns, &mut y).await.expect("export b");
        let sorted = |v: Vec<u8>| {
            let mut lines: Vec<String> = String::from_utf8(v)
                .unwrap()
                .lines()
                .map(String::from)
                .collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(x), sorted(y), "namespace {ns} differs after restore");
        assert_eq!(a.store.namespace(ns), b.store.namespace(ns));
    }
    // Restoring again refuses to overwrite.
    assert!(matches!(
        b.store.restore(&backup, None).await,
        Err(MemoryError::NamespaceExists(_))
    ));
    // JSONL import into a fresh namespace embeds nothing when vectors are given.
    let mut jsonl = Vec::new();
    b.store
        .export_jsonl("three", &mut jsonl)
        .await
        .expect("export");
    b.store
        .create_namespace(NamespaceSpec::new("copy", 2))
        .await
        .expect("namespace");
    let n = b
        .store
        .import_jsonl("copy", &mut std::io::Cursor::new(jsonl))
        .await
        .expect("import");
    assert_eq!(n, 45);
    assert!(matches!(
        b.store
            .import_jsonl("copy", &mut std::io::Cursor::new(b"{\"text\": 1}\n".to_vec()))
            .await,
        Err(MemoryError::Invalid(m)) if m.contains("line 1")
    ));
    b.close().await;
    a.close().await;

    // A damaged backup is refused before anything is written.
    let mut damaged = bytes.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    let bad = files.path().join("damaged.aiosmem");
    std::fs::write(&bad, &damaged).expect("write");
    let c_dir = tempfile::tempdir().expect("dir");
    let c = open(c_dir.path(), hash()).await;
    assert!(matches!(
        c.store.restore(&bad, None).await,
        Err(MemoryError::Store(m)) if m.contains("byte")
    ));
    assert!(c.store.namespaces().is_empty());
    let truncated = files.path().join("truncated.aiosmem");
    std::fs::write(&truncated, &bytes[..bytes.len() - 30]).expect("write");
    assert!(c.store.restore(&truncated, None).await.is_err());
    assert!(c.store.namespaces().is_empty());
    c.close().await;
}

#[tokio::test]
async fn resharding_and_reembedding_keep_every_memory() {
    use aios_actors::memory::Migration;
    let dir = tempfile::tempdir().expect("dir");
    let ids = {
        let m = open(dir.path(), hash()).await;
        m.store
            .create_namespace(NamespaceSpec::new("kb", 2))
            .await
            .expect("namespace");
        let ids = m
            .store
            .remember(
                "kb",
                (0..30)
                    .map(|i| NewMemory::text(format!("fact number {i} about the fleet")))
                    .collect(),
            )
            .await
            .expect("remember");
        let info = m
            .store
            .migrate(
                "kb",
                Migration {
                    reembed: false,
                    shards: Some(5),
                },
                None,
            )
            .await
            .expect("reshard");
        assert_eq!((info.shards, info.generation), (5, 1));
        let stats = m.store.stats("kb").await.expect("stats");
        assert_eq!(stats.len(), 5);
        assert_eq!(stats.iter().map(|s| s.items).sum::<u64>(), 30);
        assert_eq!(m.store.get("kb", &ids).await.expect("get").len(), 30);
        assert!(matches!(
            m.store.migrate("kb", Migration::default(), None).await,
            Err(MemoryError::Invalid(_))
        ));
        m.close().await;
        ids
    };
    // A node with another model: refused until the namespace is re-embedded.
    let m = open(dir.path(), Arc::new(HashEmbedder::new(64))).await;
    assert!(matches!(
        m.store.search("kb", SearchRequest::text("fleet", 3)).await,
        Err(MemoryError::ModelMismatch(_))
    ));
    let progress = std::sync::Mutex::new(0u64);
    let report = |p: aios_actors::memory::Progress| *progress.lock().unwrap() = p.done;
    let info = m
        .store
        .migrate(
            "kb",
            Migration {
                reembed: true,
                shards: None,
            },
            Some(&report),
        )
        .await
        .expect("re-embed");
    assert_eq!((info.dim, info.generation, info.shards), (64, 2, 5));
    assert_eq!(*progress.lock().unwrap(), 30);
    let r = m
        .store
        .search(
            "kb",
            SearchRequest::text("fact number 7 about the fleet", 1),
        )
        .await
        .expect("search");
    assert_eq!(r.hits[0].text, "fact number 7 about the fleet");
    assert!(ids.contains(&r.hits[0].id));
    m.close().await;
    // Reopened: the new generation serves; nothing of the old ones remains.
    let m = open(dir.path(), Arc::new(HashEmbedder::new(64))).await;
    assert_eq!(m.store.get("kb", &ids).await.expect("get").len(), 30);
    m.close().await;
}
