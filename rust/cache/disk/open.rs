//! Opening the disk tier: the writability check, sled's open with its
//! failures sorted into "locked" and "corrupt", moving a corrupt database
//! aside, and the scan that rebuilds the counts and the eviction index.

use std::panic::catch_unwind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{envelope, seq_key, DiskCache, DiskConfig, Store, WallClock};
use crate::clock::Clock;
use crate::error::{Error, Result};

pub(super) enum OpenFailure {
    Locked(String),
    Broken(String),
    Other(String),
}

/// How long an open waits for a lock held by a closing handle before giving up.
const LOCK_WAIT: Duration = Duration::from_millis(600);

/// Directories whose handle this process closed, and when: sled's flusher
/// thread keeps the lock for up to a flush period after the handle is dropped.
static CLOSED: Mutex<Vec<(PathBuf, Instant)>> = Mutex::new(Vec::new());

fn key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Record that this process just closed its handle on `path`.
pub(super) fn note_closed(path: &Path) {
    let now = Instant::now();
    let mut closed = CLOSED.lock();
    closed.retain(|(_, at)| now.duration_since(*at) < LOCK_WAIT);
    closed.push((key(path), now));
}

/// Until when a lock on `path` may still be our own closing handle's.
fn own_lock_until(path: &Path) -> Option<Instant> {
    let key = key(path);
    let closed = CLOSED.lock();
    closed
        .iter()
        .filter(|(p, _)| *p == key)
        .map(|(_, at)| *at + LOCK_WAIT)
        .max()
}

/// Open the database. A lock held by a handle this process just closed (its
/// flusher thread exits within a flush period) is retried for a short while;
/// a lock held by anyone else (another process, or a handle of this one still
/// open) fails at once, so a second worker on the same path never blocks.
pub(super) fn try_open(
    cfg: &DiskConfig,
    path: &Path,
    waits: &AtomicU64,
) -> std::result::Result<Store, OpenFailure> {
    loop {
        match try_open_once(cfg, path) {
            Err(OpenFailure::Locked(why)) => match own_lock_until(path) {
                Some(until) if Instant::now() < until => {
                    waits.fetch_add(1, Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return Err(OpenFailure::Locked(why)),
            },
            other => return other,
        }
    }
}

fn try_open_once(cfg: &DiskConfig, path: &Path) -> std::result::Result<Store, OpenFailure> {
    let opened = catch_unwind(|| -> sled::Result<Store> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cfg.page_cache_bytes)
            .flush_every_ms(cfg.flush_every_ms)
            .open()?;
        let data = db.open_tree("data")?;
        let order = db.open_tree("order")?;
        Ok(Store { db, data, order })
    });
    match opened {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock") => {
            Err(OpenFailure::Locked(format!(
                "database is in use by another handle (another process, or another cache of \
                 this one): {e}; give each process its own disk_path"
            )))
        }
        Ok(Err(sled::Error::Io(e)))
            if !matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            Err(OpenFailure::Other(format!("cannot open database: {e}")))
        }
        Ok(Err(e)) => Err(OpenFailure::Broken(format!("corrupt database: {e}"))),
        Err(_) => Err(OpenFailure::Broken(
            "corrupt database: sled panicked at open".into(),
        )),
    }
}

pub(super) fn check_writable(cfg: &DiskConfig) -> Result<()> {
    let shown = cfg.path.display().to_string();
    let fail = |_| Error::config(cfg.path_param, &shown, "is not a writable directory");
    std::fs::create_dir_all(&cfg.path).map_err(fail)?;
    let probe = cfg
        .path
        .join(format!(".llmrelay-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

impl DiskCache {
    pub(super) fn move_aside_and_reopen(
        &self,
        cfg: &DiskConfig,
        why: String,
    ) -> std::result::Result<Store, String> {
        let mut aside = cfg.path.clone().into_os_string();
        aside.push(format!(".corrupt-{}", WallClock.now_ns()));
        std::fs::rename(&cfg.path, &aside)
            .map_err(|e| format!("{why}; moving it aside failed: {e}"))?;
        self.counters.recovered.fetch_add(1, Relaxed);
        std::fs::create_dir_all(&cfg.path).map_err(|e| format!("{why}; recreating failed: {e}"))?;
        try_open(cfg, &cfg.path, &self.counters.lock_waits).map_err(|f| match f {
            OpenFailure::Locked(w) | OpenFailure::Broken(w) | OpenFailure::Other(w) => {
                format!("{why}; reopening fresh failed: {w}")
            }
        })
    }

    /// One scan at open: count bytes and entries, drop corrupt values,
    /// re-index entries missing from the eviction index, find the next seq.
    pub(super) fn rebuild_index(&self, s: &Store) {
        let (mut bytes, mut entries, mut next_seq) = (0i64, 0i64, 0u64);
        if let Ok(Some((k, _))) = s.order.last() {
            if let Ok(b) = <[u8; 8]>::try_from(k.as_ref()) {
                next_seq = u64::from_be_bytes(b).saturating_add(1);
            }
        }
        for item in s.data.iter() {
            let Ok((key, raw)) = item else {
                self.counters.errors.fetch_add(1, Relaxed);
                break;
            };
            match envelope::decode(&raw) {
                Ok(env) => {
                    bytes += (key.len() + raw.len()) as i64;
                    entries += 1;
                    next_seq = next_seq.max(env.seq.saturating_add(1));
                    if !matches!(s.order.get(seq_key(env.seq)), Ok(Some(k)) if k == key) {
                        let _ = s.order.insert(seq_key(env.seq), key.as_ref());
                    }
                }
                Err(_) => {
                    self.counters.corrupt.fetch_add(1, Relaxed);
                    let _ = s
                        .data
                        .compare_and_swap(&key, Some(&raw), None as Option<&[u8]>);
                }
            }
        }
        self.bytes.store(bytes, Relaxed);
        self.entries.store(entries, Relaxed);
        self.seq.store(next_seq, Relaxed);
    }
}
