//! [`SledStore`]: the embedded snapshot store, one sled database per node, with group commit.
//!
//! Durable writes share fsyncs: a writer inserts into sled's in-memory tree, then queues a
//! waiter for the flusher thread. The flusher takes every waiter queued so far, calls
//! `Db::flush` once (which makes every earlier insert durable), and wakes them all. While one
//! flush runs, the next batch gathers, so N concurrent writers cost about one fsync per batch
//! instead of N. Buffered writes only insert; sled's own background flusher
//! (`flush_every_ms`) makes them durable within [`SledOptions::flush_every`].
//!
//! Architecture Invariant: this module and its tests are the only code that names `sled`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Durability;
use super::codec;
use super::store::{QuarantineRecord, SnapshotStore, StoreError};

/// At most this many durable writers wait for the flusher at once; more wait to enqueue.
pub const GROUP_COMMIT_QUEUE_MAX: usize = 65_536;
/// At most this many waiters are answered by one fsync.
pub const GROUP_COMMIT_BATCH_MAX: usize = 8_192;

const SNAPSHOT_TREE: &str = "snapshots/v1";
/// Attempts to take the data directory's lock after the first (see [`SledStore::open`]).
const LOCK_RETRIES_MAX: u32 = 50;
/// The pause between them (so at most half a second in all).
const LOCK_RETRY_WAIT: Duration = Duration::from_millis(10);
const QUARANTINE_TREE: &str = "quarantine/v1";

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// Options for [`SledStore::open`].
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// How often buffered writes are flushed in the background: the loss window of
    /// [`Durability::Buffered`]. Default 200 ms.
    pub flush_every: Duration,
    /// sled's page cache size in bytes. Default 64 MiB.
    pub cache_capacity_bytes: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            flush_every: Duration::from_millis(200),
            cache_capacity_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The sled-backed [`SnapshotStore`].
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    snapshots: sled::Tree,
    quarantine: sled::Tree,
    /// `None` only while dropping.
    flush_queue: Option<mpsc::Sender<Waiter>>,
    flusher: Option<std::thread::JoinHandle<()>>,
    fsyncs: Arc<AtomicU64>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (or creates) the database in directory `path`.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the directory cannot be created or is locked by another process.
    pub fn open(path: impl AsRef<Path>, options: &SledOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity_bytes)
            .flush_every_ms(Some(flush_every_ms(options.flush_every)));
        // sled releases its file lock when its last handle's background threads have ended,
        // which can trail the drop of the previous store in this process by a moment: retry
        // a lock conflict briefly before reporting it (another process keeps it for good).
        let mut attempt = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && attempt < LOCK_RETRIES_MAX =>
                {
                    attempt += 1;
                    std::thread::sleep(LOCK_RETRY_WAIT);
                }
                Err(e) => {
                    return Err(StoreError::Open {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    });
                }
            }
        };
        Self::from_db(db, Some(path.to_path_buf()))
    }

    /// Opens a store in a temporary directory that is removed when the store is dropped.
    ///
    /// # Errors
    /// [`StoreError::Open`] when sled cannot create the temporary files.
    pub fn temporary() -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|e| StoreError::Open {
                path: "<temporary>".into(),
                reason: e.to_string(),
            })?;
        Self::from_db(db, None)
    }

    fn from_db(db: sled::Db, path: Option<PathBuf>) -> Result<Self, StoreError> {
        let snapshots = db.open_tree(SNAPSHOT_TREE).map_err(io)?;
        let quarantine = db.open_tree(QUARANTINE_TREE).map_err(io)?;
        let (tx, rx) = mpsc::channel(GROUP_COMMIT_QUEUE_MAX);
        let fsyncs = Arc::new(AtomicU64::new(0));
        let flusher_db = db.clone();
        let flusher_count = fsyncs.clone();
        let flusher = std::thread::Builder::new()
            .name("aios-group-commit".into())
            .spawn(move || run_flusher(flusher_db, rx, flusher_count))
            .map_err(|e| StoreError::Open {
                path: display(&path),
                reason: format!("cannot start the group-commit thread: {e}"),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                snapshots,
                quarantine,
                flush_queue: Some(tx),
                flusher: Some(flusher),
                fsyncs,
                path,
            }),
        })
    }

    /// How many group-commit flushes (fsyncs) have run: with N concurrent durable writers this
    /// grows much more slowly than the number of writes.
    pub fn group_commits(&self) -> u64 {
        self.inner.fsyncs.load(Ordering::Relaxed)
    }

    /// Waits until every write before this call is durable, sharing the fsync with any
    /// concurrent durable writer.
    async fn commit(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let queue = self.inner.flush_queue.as_ref().ok_or(StoreError::Closed)?;
        queue.send(tx).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn flush_every_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn display(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map_or_else(|| "<temporary>".into(), |p| p.display().to_string())
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

fn run_flusher(db: sled::Db, mut rx: mpsc::Receiver<Waiter>, fsyncs: Arc<AtomicU64>) {
    let mut batch: Vec<Waiter> = Vec::with_capacity(64);
    // Ends when every `SledStore` clone (and so every sender) is gone.
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < GROUP_COMMIT_BATCH_MAX {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let result = db.flush().map(|_| ()).map_err(io);
        fsyncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, waiters = batch.len(), "group commit flush failed");
        }
        for waiter in batch.drain(..) {
            // A waiter whose task was cancelled has dropped its receiver: nothing to tell it.
            let _ = waiter.send(result.clone());
        }
    }
}

#[async_trait::async_trait]
impl SnapshotStore for SledStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .inner
            .snapshots
            .get(key)
            .map_err(io)?
            .map(|v| v.to_vec()))
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        self.inner.snapshots.insert(key, value).map_err(io)?;
        match durability {
            Durability::Durable => self.commit().await,
            Durability::Buffered => Ok(()),
        }
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.inner.snapshots.remove(key).map_err(io)?;
        self.commit().await
    }

    async fn quarantine(
        &self,
        record: QuarantineRecord,
        marker: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        use sled::Transactional;
        let encoded = codec::encode(&record).map_err(StoreError::Io)?;
        let key = record.key.as_bytes();
        let id = record.id.as_bytes();
        (&self.inner.snapshots, &self.inner.quarantine)
            .transaction(|(snapshots, quarantine)| {
                quarantine.insert(id, encoded.as_slice())?;
                match &marker {
                    Some(m) => {
                        snapshots.insert(key, m.as_slice())?;
                    }
                    None => {
                        snapshots.remove(key)?;
                    }
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| StoreError::Io(format!("{e:?}")))?;
        self.commit().await
    }

    async fn quarantined(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.quarantine.iter().take(limit) {
            let (_, v) = item.map_err(io)?;
            out.push(codec::decode(&v).map_err(StoreError::Io)?);
        }
        Ok(out)
    }

    async fn keys_after(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let keys = match after {
            // Keys after `after` that still start with `prefix`.
            Some(a) if a.as_bytes() >= prefix.as_bytes() => {
                let start = std::ops::Bound::Excluded(a.as_bytes().to_vec());
                let iter = self
                    .inner
                    .snapshots
                    .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded));
                Box::new(iter.keys().take_while(|k| {
                    k.as_ref()
                        .map_or(true, |k| k.starts_with(prefix.as_bytes()))
                })) as Box<dyn Iterator<Item = sled::Result<sled::IVec>>>
            }
            _ => Box::new(self.inner.snapshots.scan_prefix(prefix).keys()),
        };
        for item in keys.take(limit) {
            let k = item.map_err(io)?;
            out.push(String::from_utf8_lossy(&k).into_owned());
        }
        Ok(out)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.commit().await
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Last handle gone: make buffered writes durable too. Errors can only be logged here.
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "final snapshot flush failed");
        }
        // Closing the queue ends the flusher; joining it releases its database handle, so the
        // directory's lock is free once the last `SledStore` is dropped.
        self.flush_queue = None;
        if let Some(flusher) = self.flusher.take()
            && flusher.join().is_err()
        {
            tracing::error!("the group-commit thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_remove() {
        let s = SledStore::temporary().unwrap();
        assert_eq!(s.get("a").await.unwrap(), None);
        s.put("a", vec![1, 2], Durability::Durable).await.unwrap();
        s.put("b", vec![3], Durability::Buffered).await.unwrap();
        assert_eq!(s.get("a").await.unwrap(), Some(vec![1, 2]));
        assert_eq!(s.keys("", 10).await.unwrap(), vec!["a", "b"]);
        for k in ["p/1", "p/2", "p/3", "q/1"] {
            s.put(k, vec![1], Durability::Durable).await.unwrap();
        }
        assert_eq!(
            s.keys_after("p/", Some("p/1"), 10).await.unwrap(),
            vec!["p/2", "p/3"]
        );
        assert_eq!(
            s.keys_after("p/", Some("p/3"), 10).await.unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(s.keys_after("p/", Some("a"), 1).await.unwrap(), vec!["p/1"]);
        assert_eq!(
            s.keys_after("p/", None, 2).await.unwrap(),
            vec!["p/1", "p/2"]
        );
        s.remove("a").await.unwrap();
        assert_eq!(s.get("a").await.unwrap(), None);
        assert!(s.group_commits() >= 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_durable_writers_share_fsyncs() {
        let s = SledStore::temporary().unwrap();
        let before = s.group_commits();
        let mut tasks = Vec::new();
        for w in 0..64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10u32 {
                    s.put(
                        &format!("k{w}"),
                        i.to_le_bytes().to_vec(),
                        Durability::Durable,
                    )
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let fsyncs = s.group_commits() - before;
        assert!(
            fsyncs < 640,
            "640 durable writes took {fsyncs} fsyncs: no grouping"
        );
    }

    #[tokio::test]
    async fn quarantine_moves_atomically() {
        let s = SledStore::temporary().unwrap();
        s.put("k", vec![9, 9], Durability::Durable).await.unwrap();
        let rec = QuarantineRecord {
            id: "00000000000000000001-x".into(),
            key: "k".into(),
            reason: "test".into(),
            at_ms: 1,
            bytes: vec![9, 9],
        };
        s.quarantine(rec.clone(), Some(vec![7])).await.unwrap();
        assert_eq!(s.get("k").await.unwrap(), Some(vec![7]));
        assert_eq!(s.quarantined(10).await.unwrap(), vec![rec]);
    }
}
