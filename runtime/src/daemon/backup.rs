//! Backup and restore of a whole data dir (every record of the snapshot store: actor
//! snapshots, agent definitions, memory, tools, keys, audit log, webhooks, quotas), for
//! `aiosctl backup` and `aiosctl restore`. The daemon must be stopped: the store is opened
//! directly and sled allows one process at a time.
//!
//! Format: `AIOSBAK1\n`, then for each record `u32 key length, key, u32 value length, value`
//! (little endian), then `u64 count` and a CRC-32 of everything after the magic. A restore
//! checks the whole file before writing anything, and only into a data dir with no store yet.
//! Quarantined snapshots are not included.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use aios_supervisor::snapshot::{Durability, SledOptions, SledStore, SnapshotStore};

const MAGIC: &[u8] = b"AIOSBAK1\n";
/// The largest key or value a backup may hold.
const RECORD_LEN_MAX: u32 = 1 << 30;

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The store could not be opened (in use by a running daemon, say).
    #[error("cannot open the store in {dir}: {reason} (is aiosd still running on it?)")]
    Open {
        /// The data dir.
        dir: String,
        /// Why.
        reason: String,
    },
    /// Reading or writing the store.
    #[error("store: {0}")]
    Store(String),
    /// Reading or writing the file.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not a backup, or is damaged.
    #[error("{0}")]
    Corrupt(String),
    /// The target data dir already has a store.
    #[error("{0} already holds a store; restore into an empty data dir")]
    NotEmpty(String),
}

fn open(data_dir: &Path) -> Result<SledStore, BackupError> {
    SledStore::open(data_dir.join("snapshots"), &SledOptions::default()).map_err(|e| {
        BackupError::Open {
            dir: data_dir.display().to_string(),
            reason: e.to_string(),
        }
    })
}

/// Writes every record of `data_dir`'s store to `out` (through a temporary file renamed at
/// the end). Returns the number of records. The file is created readable and writable by
/// its owner only (mode 0600).
///
/// # Errors
/// [`BackupError`].
pub async fn backup(data_dir: &Path, out: &Path) -> Result<u64, BackupError> {
    if !data_dir.join("snapshots").exists() {
        return Err(BackupError::Open {
            dir: data_dir.display().to_string(),
            reason: "no store here".into(),
        });
    }
    let store = open(data_dir)?;
    let io = |error| BackupError::Io {
        path: out.display().to_string(),
        error,
    };
    let tmp = out.with_extension("partial");
    // A backup holds every tenant's data and the keys' hashes: readable by the owner only,
    // from its first byte (an existing file keeps its mode, so it is set again).
    let file = owner_only(&tmp).map_err(io)?;
    let mut w = BufWriter::new(file);
    w.write_all(MAGIC).map_err(io)?;
    let mut crc = crc32fast::Hasher::new();
    let mut count = 0u64;
    let mut after: Option<String> = None;
    loop {
        let keys = store
            .keys_after(aios_core::keyspace::ALL, after.as_deref(), 1024)
            .await
            .map_err(|e| BackupError::Store(e.to_string()))?;
        let Some(last) = keys.last().cloned() else {
            break;
        };
        for key in keys {
            let Some(value) = store
                .get(&key)
                .await
                .map_err(|e| BackupError::Store(e.to_string()))?
            else {
                continue;
            };
            for part in [key.as_bytes(), &value[..]] {
                let len = (part.len() as u32).to_le_bytes();
                crc.update(&len);
                crc.update(part);
                w.write_all(&len).map_err(io)?;
                w.write_all(part).map_err(io)?;
            }
            count += 1;
        }
        after = Some(last);
    }
    let count_bytes = count.to_le_bytes();
    crc.update(&count_bytes);
    w.write_all(&count_bytes).map_err(io)?;
    w.write_all(&crc.finalize().to_le_bytes()).map_err(io)?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, out).map_err(io)?;
    Ok(count)
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], path: &Path) -> Result<(), BackupError> {
    r.read_exact(buf).map_err(|error| BackupError::Io {
        path: path.display().to_string(),
        error,
    })
}

/// Reads and checks a backup file: its records.
fn read_backup(path: &Path) -> Result<Vec<(String, Vec<u8>)>, BackupError> {
    let file = std::fs::File::open(path).map_err(|error| BackupError::Io {
        path: path.display().to_string(),
        error,
    })?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = BufReader::new(file);
    let mut magic = [0u8; 9];
    read_exact(&mut r, &mut magic, path)?;
    if magic != MAGIC {
        return Err(BackupError::Corrupt(format!(
            "{} is not an AIOS backup",
            path.display()
        )));
    }
    let mut crc = crc32fast::Hasher::new();
    let mut records = Vec::new();
    let mut pos = MAGIC.len() as u64;
    // Records until only the trailer (u64 count + u32 crc) is left.
    while pos + 12 < len {
        let mut pair: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        for part in &mut pair {
            let mut n = [0u8; 4];
            read_exact(&mut r, &mut n, path)?;
            let n_val = u32::from_le_bytes(n);
            if n_val > RECORD_LEN_MAX || pos + 4 + u64::from(n_val) > len {
                return Err(BackupError::Corrupt(format!(
                    "{}: a record runs past the end of the file",
                    path.display()
                )));
            }
            let mut buf = vec![0u8; n_val as usize];
            read_exact(&mut r, &mut buf, path)?;
            crc.update(&n);
            crc.update(&buf);
            pos += 4 + u64::from(n_val);
            *part = buf;
        }
        let [k, v] = pair;
        let key = String::from_utf8(k)
            .map_err(|_| BackupError::Corrupt(format!("{}: a key is not UTF-8", path.display())))?;
        records.push((key, v));
    }
    let mut count = [0u8; 8];
    read_exact(&mut r, &mut count, path)?;
    crc.update(&count);
    let mut sum = [0u8; 4];
    read_exact(&mut r, &mut sum, path)?;
    if u64::from_le_bytes(count) != records.len() as u64
        || crc.finalize() != u32::from_le_bytes(sum)
    {
        return Err(BackupError::Corrupt(format!(
            "{}: the checksum or record count does not match (damaged or truncated)",
            path.display()
        )));
    }
    Ok(records)
}

/// Restores a backup into `data_dir`, which must not hold a store yet. The file is checked
/// completely before anything is written. Returns the number of records.
///
/// # Errors
/// [`BackupError`].
pub async fn restore(data_dir: &Path, from: &Path) -> Result<u64, BackupError> {
    let records = read_backup(from)?;
    if data_dir.join("snapshots").exists() {
        return Err(BackupError::NotEmpty(data_dir.display().to_string()));
    }
    std::fs::create_dir_all(data_dir).map_err(|error| BackupError::Io {
        path: data_dir.display().to_string(),
        error,
    })?;
    let store = open(data_dir)?;
    let n = records.len() as u64;
    for (key, value) in records {
        store
            .put(&key, value, Durability::Buffered)
            .await
            .map_err(|e| BackupError::Store(e.to_string()))?;
    }
    store
        .flush()
        .await
        .map_err(|e| BackupError::Store(e.to_string()))?;
    Ok(n)
}

/// Creates (or truncates) `path` with mode 0600, and sets that mode on a file that existed.
///
/// # Errors
/// The I/O error.
pub fn owner_only(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}
