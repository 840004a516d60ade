//! Backup, restore, and JSONL export/import of the vector memory.
//!
//! Backup file format (`.aiosmem`), every frame checksummed:
//!
//! ```text
//! "AIOSMEM1"                                  magic, 8 bytes
//! frame*:  len: u32 LE | payload | crc32(payload): u32 LE
//!          payload = bincode(Entry): Namespace(info) | Item(ns, item) | End(namespaces, items)
//! ```
//!
//! A backup is taken online: each shard dumps its items in one message, so every shard's
//! part is consistent with the writes acknowledged before it (items are independent, so no
//! cross-shard consistency is needed). Erased items are gone from the store, so no later
//! backup contains them. A restore reads and verifies the whole file before writing
//! anything, and refuses to overwrite an existing namespace.

use std::io::{BufRead, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{MemoryError, MemoryItem, MemoryMeta, MemoryStore, NamespaceInfo, NewMemory};

const MAGIC: &[u8; 8] = b"AIOSMEM1";
/// The longest frame accepted when reading (a 64 KiB text plus a 16k-dimension vector fit).
const FRAME_LEN_MAX: usize = 1 << 20;
/// Items written per batch while restoring or importing.
const RESTORE_BATCH: usize = 1000;

#[derive(Serialize, Deserialize)]
enum Entry {
    Namespace(NamespaceInfo),
    Item(String, MemoryItem),
    End { namespaces: u64, items: u64 },
}

/// Progress of a long operation: items done out of a total (0 when unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Items done.
    pub done: u64,
    /// Items in all (0 when not known up front).
    pub total: u64,
}

/// Receives progress reports.
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// What a backup or restore covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupReport {
    /// Namespaces.
    pub namespaces: u64,
    /// Items.
    pub items: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

fn io_err(e: impl std::fmt::Display) -> MemoryError {
    MemoryError::Store(format!("backup file: {e}"))
}

fn write_frame(w: &mut impl Write, entry: &Entry) -> Result<u64, MemoryError> {
    let payload = aios_supervisor::snapshot::codec::encode(entry).map_err(io_err)?;
    let len = u32::try_from(payload.len()).map_err(io_err)?;
    w.write_all(&len.to_le_bytes()).map_err(io_err)?;
    w.write_all(&payload).map_err(io_err)?;
    w.write_all(&crc32fast::hash(&payload).to_le_bytes())
        .map_err(io_err)?;
    Ok(payload.len() as u64 + 8)
}

fn read_frame(r: &mut impl Read, at: u64) -> Result<Option<Entry>, MemoryError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io_err(e)),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > FRAME_LEN_MAX {
        return Err(io_err(format!("frame at byte {at} claims {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)
        .map_err(|e| io_err(format!("frame at byte {at} is cut short: {e}")))?;
    let mut crc = [0u8; 4];
    r.read_exact(&mut crc)
        .map_err(|e| io_err(format!("frame at byte {at} has no checksum: {e}")))?;
    if u32::from_le_bytes(crc) != crc32fast::hash(&payload) {
        return Err(io_err(format!("frame at byte {at} fails its checksum")));
    }
    aios_supervisor::snapshot::codec::decode(&payload)
        .map(Some)
        .map_err(|e| io_err(format!("frame at byte {at}: {e}")))
}

/// One line of a JSONL export.
#[derive(Serialize, Deserialize)]
struct JsonLine {
    #[serde(default)]
    id: Option<u64>,
    text: String,
    #[serde(default)]
    vector: Option<Vec<f32>>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    created_ms: u64,
    #[serde(default)]
    importance: f32,
    #[serde(default)]
    expires_ms: Option<u64>,
}

impl MemoryStore {
    /// Writes every namespace and item to `path` (a new file, written to `path.tmp` and
    /// renamed once complete and synced).
    ///
    /// # Errors
    /// File or store failures; nothing is left at `path` on failure.
    pub async fn backup(
        &self,
        path: &Path,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<BackupReport, MemoryError> {
        let tmp = path.with_extension("tmp");
        let file = std::fs::File::create(&tmp).map_err(io_err)?;
        let mut w = std::io::BufWriter::new(file);
        w.write_all(MAGIC).map_err(io_err)?;
        let mut report = BackupReport {
            bytes: MAGIC.len() as u64,
            ..BackupReport::default()
        };
        let namespaces = self.namespaces();
        let total: u64 = {
            let mut t = 0;
            for ns in &namespaces {
                t += self
                    .stats(&ns.name)
                    .await?
                    .iter()
                    .map(|s| s.items)
                    .sum::<u64>();
            }
            t
        };
        let result = async {
            for ns in &namespaces {
                // Shared with writers, exclusive of migrations: the shard list is current.
                let lock = self.write_lock(&ns.name);
                let _no_migration = lock.read().await;
                let Some(ns) = self.namespace(&ns.name) else {
                    continue;
                };
                let ns = &ns;
                report.bytes += write_frame(&mut w, &Entry::Namespace(ns.clone()))?;
                report.namespaces += 1;
                for shard in 0..ns.shards {
                    for item in self.dump_shard(&ns.name, shard).await? {
                        report.bytes += write_frame(&mut w, &Entry::Item(ns.name.clone(), item))?;
                        report.items += 1;
                        if let Some(p) = progress
                            && report.items.is_multiple_of(1000)
                        {
                            p(Progress {
                                done: report.items,
                                total,
                            });
                        }
                    }
                }
            }
            report.bytes += write_frame(
                &mut w,
                &Entry::End {
                    namespaces: report.namespaces,
                    items: report.items,
                },
            )?;
            let file = w.into_inner().map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            std::fs::rename(&tmp, path).map_err(io_err)?;
            Ok::<_, MemoryError>(())
        }
        .await;
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Some(p) = progress {
            p(Progress {
                done: report.items,
                total,
            });
        }
        tracing::info!(path = %path.display(), namespaces = report.namespaces, items = report.items, "memory backup written");
        Ok(report)
    }

    /// Restores a backup into this store. The whole file is verified first; namespaces that
    /// already exist are refused, so nothing is overwritten.
    ///
    /// # Errors
    /// A damaged file (names the byte offset), an existing namespace, store failures.
    pub async fn restore(
        &self,
        path: &Path,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<BackupReport, MemoryError> {
        // Pass 1: verify every frame and the trailer, and count.
        let mut r = std::io::BufReader::new(std::fs::File::open(path).map_err(io_err)?);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(io_err)?;
        if &magic != MAGIC {
            return Err(io_err("not an AIOS memory backup (bad magic)"));
        }
        let (mut namespaces, mut items, mut at, mut ended) = (Vec::new(), 0u64, 8u64, false);
        while let Some(entry) = read_frame(&mut r, at)? {
            if ended {
                return Err(io_err(format!("data after the end marker at byte {at}")));
            }
            match entry {
                Entry::Namespace(info) => {
                    validate_info(&info)
                        .map_err(|e| io_err(format!("namespace at byte {at}: {e}")))?;
                    if self.namespace(&info.name).is_some() {
                        return Err(MemoryError::NamespaceExists(info.name));
                    }
                    namespaces.push(info);
                }
                Entry::Item(ns, item) => {
                    // Only into namespaces this file declares, with their dimension.
                    let Some(info) = namespaces.iter().find(|n| n.name == ns) else {
                        return Err(io_err(format!(
                            "item at byte {at} belongs to namespace {ns:?}, which the file does not declare first"
                        )));
                    };
                    if item.vector.len() != info.dim as usize
                        || item.text.len() > super::MEMORY_TEXT_LEN_MAX
                    {
                        return Err(io_err(format!(
                            "item at byte {at} does not fit namespace {ns:?}"
                        )));
                    }
                    items += 1;
                }
                Entry::End {
                    namespaces: n,
                    items: i,
                } => {
                    if n != namespaces.len() as u64 || i != items {
                        return Err(io_err(format!(
                            "the end marker counts {n} namespaces and {i} items, the file holds {} and {items}",
                            namespaces.len()
                        )));
                    }
                    ended = true;
                }
            }
            at = r.stream_position_or(at);
        }
        if !ended {
            return Err(io_err("the file ends without its end marker (truncated)"));
        }
        // Pass 2: create the namespaces, then write items in batches.
        for info in &namespaces {
            self.create_from_info(info.clone()).await?;
        }
        let mut r = std::io::BufReader::new(std::fs::File::open(path).map_err(io_err)?);
        r.read_exact(&mut magic).map_err(io_err)?;
        let mut batch: Vec<(String, MemoryItem)> = Vec::new();
        let mut done = 0u64;
        let mut at = 8u64;
        while let Some(entry) = read_frame(&mut r, at)? {
            at = r.stream_position_or(at);
            if let Entry::Item(ns, item) = entry {
                batch.push((ns, item));
                if batch.len() >= RESTORE_BATCH {
                    done += self.put_items(std::mem::take(&mut batch)).await?;
                    if let Some(p) = progress {
                        p(Progress { done, total: items });
                    }
                }
            }
        }
        done += self.put_items(batch).await?;
        if let Some(p) = progress {
            p(Progress { done, total: items });
        }
        Ok(BackupReport {
            namespaces: namespaces.len() as u64,
            items: done,
            bytes: at,
        })
    }

    /// [`MemoryStore::export_jsonl`] from this node's shards.
    pub(super) async fn export_here(
        &self,
        namespace: &str,
        out: &mut (dyn Write + Send),
    ) -> Result<u64, MemoryError> {
        let info = self.ns(namespace).await?.info.clone();
        let mut n = 0;
        for shard in 0..info.shards {
            for item in self.dump_shard(namespace, shard).await? {
                let m = item.meta;
                let line = JsonLine {
                    id: Some(item.id),
                    text: item.text,
                    vector: Some(item.vector),
                    agent: m.agent,
                    session: m.session,
                    user: m.user,
                    tags: m.tags,
                    created_ms: m.created_ms,
                    importance: m.importance,
                    expires_ms: m.expires_ms,
                };
                serde_json::to_writer(&mut *out, &line).map_err(io_err)?;
                out.write_all(b"\n").map_err(io_err)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Imports JSON lines into a namespace: `text` is required; a `vector` (of the
    /// namespace's model) is used as is, otherwise the text is embedded. Ids are new.
    ///
    /// # Errors
    /// A malformed line (names its number), the errors of [`MemoryStore::remember`].
    pub async fn import_jsonl(
        &self,
        namespace: &str,
        input: &mut (dyn BufRead + Send),
    ) -> Result<u64, MemoryError> {
        let mut batch = Vec::new();
        let mut n = 0u64;
        for (no, line) in input.lines().enumerate() {
            let line = line.map_err(io_err)?;
            if line.trim().is_empty() {
                continue;
            }
            let l: JsonLine = serde_json::from_str(&line)
                .map_err(|e| MemoryError::Invalid(format!("line {}: {e}", no + 1)))?;
            batch.push(NewMemory {
                text: l.text,
                vector: l.vector,
                meta: MemoryMeta {
                    agent: l.agent,
                    session: l.session,
                    user: l.user,
                    tags: l.tags,
                    created_ms: l.created_ms,
                    importance: l.importance,
                    expires_ms: l.expires_ms,
                },
            });
            if batch.len() >= RESTORE_BATCH {
                n += self
                    .remember(namespace, std::mem::take(&mut batch))
                    .await?
                    .len() as u64;
            }
        }
        if !batch.is_empty() {
            n += self.remember(namespace, batch).await?.len() as u64;
        }
        Ok(n)
    }
}

/// The checks `create_namespace` makes, applied to a namespace read from a file.
fn validate_info(info: &NamespaceInfo) -> Result<(), String> {
    aios_core::name::validate_name(&info.name)?;
    if !(1..=super::SHARDS_MAX).contains(&info.shards) {
        return Err(format!("shards {} out of range", info.shards));
    }
    if !(1..=16_384).contains(&info.dim) {
        return Err(format!("dimension {} out of range", info.dim));
    }
    info.ann.validate()
}

trait Position {
    fn stream_position_or(&mut self, fallback: u64) -> u64;
}

impl<R: std::io::Seek> Position for R {
    fn stream_position_or(&mut self, fallback: u64) -> u64 {
        self.stream_position().unwrap_or(fallback)
    }
}
