//! Opening the disk tier: the writability check, sled's open with its
//! failures sorted into "locked" and "corrupt", moving a corrupt database
//! aside, and the scan that rebuilds the counts and the eviction index.

use std::panic::catch_unwind;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use super::{envelope, seq_key, DiskCache, DiskConfig, Store, WallClock};
use crate::clock::Clock;
use crate::error::{Error, Result};

pub(super) enum OpenFailure {
    Locked(String),
    Broken(String),
    Other(String),
}

/// How long an open waits for a lock held by a closing handle before giving up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(600);

/// Open the database; a lock still held (by a handle of this process that is
/// closing, whose flusher thread exits within a flush period) is retried for a
/// short while before the tier gives up.
pub(super) fn try_open(cfg: &DiskConfig, path: &Path) -> std::result::Result<Store, OpenFailure> {
    let start = std::time::Instant::now();
    loop {
        match try_open_once(cfg, path) {
            Err(OpenFailure::Locked(_)) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
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
        Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock") => Err(
            OpenFailure::Locked(format!("database is in use by another handle: {e}")),
        ),
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
        try_open(cfg, &cfg.path).map_err(|f| match f {
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
