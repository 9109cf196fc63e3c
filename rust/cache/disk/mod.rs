//! The disk tier: a sled database of enveloped values (see
//! [`super::envelope`]), with TTLs, a byte budget and self-repair.
//!
//! - **Reads** that find a short, foreign, wrong-version or bad-checksum
//!   value count `corrupt`, delete it, and miss. Expired values are deleted
//!   and miss. Deletes are compare-and-swap, so a value written meanwhile
//!   survives.
//! - **Time**: `expires_at` is on the tier's clock. Disk entries outlive the
//!   process, so without a manual clock the tier uses [`WallClock`] (Unix
//!   nanoseconds), not the process-relative monotonic clock.
//! - **Size**: `max_bytes` bounds the approximate stored bytes (key +
//!   envelope; sled's own log overhead is not counted). Over budget, the
//!   oldest-inserted entries go first, found through a second tree `order`
//!   (big-endian insertion sequence -> key). Byte and entry counts are kept in
//!   memory and rebuilt by one scan at open, which also repairs the index.
//! - **Opening**: a path that cannot be created or written is a `Config`
//!   error. A database that does not open because it is corrupt is moved
//!   aside to `<path>.corrupt-<unix ns>` and a fresh one created. One held by
//!   another handle (sled allows one per directory) disables the tier:
//!   `enabled()` is false and `error()` says why. Nothing here ever fails a
//!   get or a set: disk trouble is a miss or a dropped write, counted.
//! - **Flushing**: sled's own background flusher every `flush_every_ms`, and
//!   [`DiskCache::flush`]. Every call may block on I/O: callers from Python
//!   release the GIL.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use sled::IVec;

use super::envelope::{self, HEADER_LEN};
use crate::clock::{Clock, SharedClock};
use crate::error::{Error, Result};

/// Wall-clock time in Unix nanoseconds: the disk tier's default clock, as
/// its entries outlive the process. It follows the system clock, so it can
/// step backwards; an entry then lives a little longer.
#[derive(Debug, Default, Clone, Copy)]
pub struct WallClock;

impl Clock for WallClock {
    fn now_ns(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }
}

/// Validated settings of a [`DiskCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Directory of the database.
    pub path: PathBuf,
    /// The name of the path parameter, for error messages.
    pub path_param: &'static str,
    /// Budget of stored bytes, if any.
    pub max_bytes: Option<u64>,
    /// sled's background flush interval; `None`: only explicit flushes.
    pub flush_every_ms: Option<u64>,
    /// sled's page cache size.
    pub page_cache_bytes: u64,
}

impl DiskConfig {
    /// Check the raw settings; the parameter names are the caller's
    /// (`path`/`max_bytes` on `DiskCache`, `disk_path`/`disk_max_bytes` on
    /// `HybridCache`).
    pub fn new(
        path_param: &'static str,
        path: &str,
        bytes_param: &'static str,
        max_bytes: Option<i64>,
        flush_every_ms: Option<i64>,
    ) -> Result<Self> {
        if path.is_empty() || path.contains('\0') {
            return Err(Error::config(
                path_param,
                format!("{path:?}"),
                "must be a directory path",
            ));
        }
        let max_bytes = max_bytes
            .map(|b| super::at_least_one(bytes_param, b))
            .transpose()?;
        Ok(Self {
            path: PathBuf::from(path),
            path_param,
            max_bytes,
            flush_every_ms: flush_every_ms
                .map(|ms| super::at_least_one("flush_every_ms", ms))
                .transpose()?,
            page_cache_bytes: max_bytes.unwrap_or(u64::MAX).clamp(1 << 20, 64 << 20),
        })
    }
}

struct Store {
    db: sled::Db,
    data: sled::Tree,
    order: sled::Tree,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    expired: AtomicU64,
    corrupt: AtomicU64,
    errors: AtomicU64,
    evictions: AtomicU64,
    oversize: AtomicU64,
    recovered: AtomicU64,
    lock_waits: AtomicU64,
}

/// A snapshot of a disk tier's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Lookups that found a valid, live value.
    pub hits: u64,
    /// Lookups that found nothing usable (absent, expired, corrupt, tier off).
    pub misses: u64,
    /// Values found expired and deleted.
    pub expired: u64,
    /// Values found corrupt and deleted (at read or at open).
    pub corrupt: u64,
    /// Disk operations that failed (counted, then treated as miss / dropped write).
    pub errors: u64,
    /// Entries evicted for the byte budget.
    pub evictions: u64,
    /// Writes dropped because one value exceeds the whole budget.
    pub oversize: u64,
    /// Databases moved aside as corrupt at open.
    pub recovered: u64,
    /// Waits (of 20 ms) at open for a lock still held by a handle this process closed.
    pub lock_waits: u64,
    /// 1 if the tier is off (failed to open, broken or closed), else 0.
    pub disabled: u64,
    /// Entries stored (approximate).
    pub entries: u64,
    /// Key + envelope bytes stored (approximate).
    pub bytes: u64,
}

/// A value read from disk: the stored envelope and its expiry.
#[derive(Debug, Clone)]
pub struct DiskHit {
    raw: IVec,
    /// Clock time (ns) at which the value expires; `u64::MAX` for never.
    pub expires_at_ns: u64,
}

impl DiskHit {
    /// The value's bytes.
    pub fn payload(&self) -> &[u8] {
        &self.raw[HEADER_LEN..]
    }
}

/// The sled-backed disk tier. Thread-safe; every method takes `&self`.
pub struct DiskCache {
    store: RwLock<Option<Store>>,
    broken: AtomicBool,
    error: Mutex<Option<String>>,
    clock: SharedClock,
    max_bytes: Option<u64>,
    seq: AtomicU64,
    bytes: AtomicI64,
    entries: AtomicI64,
    counters: Counters,
    evicting: Mutex<()>,
    /// The directory, as opened (for the record of handles closed by this process).
    path: PathBuf,
    /// The process that opened the database. A forked child never touches it:
    /// sled's threads and locks are the parent's (see [`DiskCache::forked`]).
    pid: u32,
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

mod open;
use open::{check_writable, try_open, OpenFailure};

impl DiskCache {
    /// Open (or create) the tier at `config.path`, reading time from `clock`.
    ///
    /// Fails only for a path that cannot be created or written; every other
    /// trouble leaves a disabled tier (see the module docs).
    pub fn open(config: &DiskConfig, clock: SharedClock) -> Result<Self> {
        check_writable(config)?;
        let cache = Self {
            store: RwLock::new(None),
            broken: AtomicBool::new(false),
            error: Mutex::new(None),
            clock,
            max_bytes: config.max_bytes,
            seq: AtomicU64::new(0),
            bytes: AtomicI64::new(0),
            entries: AtomicI64::new(0),
            counters: Counters::default(),
            evicting: Mutex::new(()),
            path: config.path.clone(),
            pid: std::process::id(),
        };
        let store = match try_open(config, &config.path, &cache.counters.lock_waits) {
            Ok(s) => Ok(s),
            Err(OpenFailure::Broken(why)) => cache.move_aside_and_reopen(config, why),
            Err(OpenFailure::Locked(why) | OpenFailure::Other(why)) => Err(why),
        };
        match store {
            Ok(store) => {
                cache.rebuild_index(&store);
                *cache.store.write() = Some(store);
            }
            Err(why) => *cache.error.lock() = Some(why),
        }
        Ok(cache)
    }

    /// Run `f` on the open store; `None` if the tier is off. A panic inside
    /// sled disables the tier instead of unwinding into the caller.
    fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> Option<T> {
        if self.broken.load(Relaxed) || self.forked() {
            return None;
        }
        let guard = self.store.read();
        let store = guard.as_ref()?;
        match catch_unwind(AssertUnwindSafe(|| f(store))) {
            Ok(v) => Some(v),
            Err(_) => {
                self.broken.store(true, Relaxed);
                self.note_error("sled panicked; disk tier disabled".into());
                None
            }
        }
    }

    fn note_error(&self, msg: String) {
        self.counters.errors.fetch_add(1, Relaxed);
        *self.error.lock() = Some(msg);
    }

    /// The tier's clock time, in nanoseconds.
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Whether this is a forked child of the process that opened the tier. The
    /// child never uses the database: its flusher thread and locks live in the
    /// parent, so the tier is off here, and closing or dropping it returns at once.
    pub fn forked(&self) -> bool {
        std::process::id() != self.pid
    }

    /// Whether the tier is open and usable.
    pub fn enabled(&self) -> bool {
        !self.forked() && !self.broken.load(Relaxed) && self.store.read().is_some()
    }

    /// Why the tier is off, or the last disk error seen; `None` if all is well.
    pub fn error(&self) -> Option<String> {
        if self.forked() {
            return Some(FORKED.into());
        }
        self.error.lock().clone()
    }

    /// The live value of `key`, or `None`. Corrupt and expired values are
    /// deleted.
    pub fn get(&self, key: &[u8]) -> Option<DiskHit> {
        let hit = self
            .with_store(|s| match s.data.get(key) {
                Err(e) => {
                    self.note_error(format!("get: {e}"));
                    None
                }
                Ok(None) => None,
                Ok(Some(raw)) => match envelope::decode(&raw) {
                    Err(_) => {
                        self.counters.corrupt.fetch_add(1, Relaxed);
                        self.remove_exact(s, key, &raw);
                        None
                    }
                    Ok(env) if env.expires_at_ns <= self.clock.now_ns() => {
                        self.counters.expired.fetch_add(1, Relaxed);
                        self.remove_exact(s, key, &raw);
                        None
                    }
                    Ok(env) => Some(DiskHit {
                        expires_at_ns: env.expires_at_ns,
                        raw: raw.clone(),
                    }),
                },
            })
            .flatten();
        let counter = if hit.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Relaxed);
        hit
    }

    /// Delete `key` only if it still holds `raw`, and account for it.
    fn remove_exact(&self, s: &Store, key: &[u8], raw: &IVec) {
        if let Ok(Ok(())) = s
            .data
            .compare_and_swap(key, Some(raw), None as Option<&[u8]>)
        {
            self.forget(s, key, raw);
        }
    }

    /// Account for `raw` (stored under `key`) having left the data tree.
    fn forget(&self, s: &Store, key: &[u8], raw: &[u8]) {
        self.bytes
            .fetch_sub((key.len() + raw.len()) as i64, Relaxed);
        self.entries.fetch_sub(1, Relaxed);
        if let Ok(env) = envelope::decode(raw) {
            let _ = s.order.remove(seq_key(env.seq));
        }
    }

    /// Store `payload` under `key` until the clock time `expires_at_ns`
    /// (`u64::MAX`: never). Disk trouble drops the write (counted).
    pub fn set(&self, key: &[u8], payload: &[u8], expires_at_ns: u64) {
        let size = (key.len() + HEADER_LEN + payload.len()) as u64;
        if self.max_bytes.is_some_and(|max| size > max) {
            self.counters.oversize.fetch_add(1, Relaxed);
            self.delete(key);
            return;
        }
        let over = self.with_store(|s| {
            let seq = self.seq.fetch_add(1, Relaxed);
            let raw = envelope::encode(payload, expires_at_ns, seq);
            match s.data.insert(key, raw.as_slice()) {
                Err(e) => {
                    self.note_error(format!("set: {e}"));
                    return false;
                }
                Ok(old) => {
                    self.bytes.fetch_add(size as i64, Relaxed);
                    self.entries.fetch_add(1, Relaxed);
                    if let Some(old) = old {
                        self.forget(s, key, &old);
                    }
                }
            }
            if let Err(e) = s.order.insert(seq_key(seq), key) {
                self.note_error(format!("set: {e}"));
            }
            self.max_bytes.is_some_and(|max| self.bytes() > max)
        });
        if over == Some(true) {
            self.evict();
        }
    }

    /// Evict oldest-inserted entries until the byte budget holds. One thread
    /// evicts at a time; others skip.
    fn evict(&self) {
        let (Some(max), Some(_guard)) = (self.max_bytes, self.evicting.try_lock()) else {
            return;
        };
        self.with_store(|s| {
            // bounded: every round pops one index entry
            for _ in 0..=self.entries.load(Relaxed).max(0) + 1024 {
                if self.bytes() <= max {
                    break;
                }
                let (seq, key) = match s.order.pop_min() {
                    Ok(Some(kv)) => kv,
                    Ok(None) => break,
                    Err(e) => {
                        self.note_error(format!("evict: {e}"));
                        break;
                    }
                };
                let Ok(Some(raw)) = s.data.get(&key) else {
                    continue;
                };
                let current = envelope::decode(&raw).map(|e| seq_key(e.seq));
                if current.as_ref().map_or(true, |c| c[..] == seq[..]) {
                    if let Ok(Ok(())) =
                        s.data
                            .compare_and_swap(&key, Some(&raw), None as Option<&[u8]>)
                    {
                        self.forget(s, &key, &raw);
                        self.counters.evictions.fetch_add(1, Relaxed);
                    }
                }
            }
        });
    }

    /// Delete `key`; `true` if a valid, live value was removed.
    pub fn delete(&self, key: &[u8]) -> bool {
        self.with_store(|s| match s.data.remove(key) {
            Err(e) => {
                self.note_error(format!("delete: {e}"));
                false
            }
            Ok(None) => false,
            Ok(Some(old)) => {
                self.forget(s, key, &old);
                envelope::decode(&old).is_ok_and(|e| e.expires_at_ns > self.clock.now_ns())
            }
        })
        .unwrap_or(false)
    }

    /// Delete every entry.
    pub fn clear(&self) {
        self.with_store(|s| {
            if let Err(e) = s.data.clear().and_then(|()| s.order.clear()) {
                self.note_error(format!("clear: {e}"));
            }
            self.bytes.store(0, Relaxed);
            self.entries.store(0, Relaxed);
        });
    }

    /// Write everything to disk now (blocks on fsync).
    pub fn flush(&self) {
        self.with_store(|s| {
            if let Err(e) = s.db.flush() {
                self.note_error(format!("flush: {e}"));
            }
        });
    }

    /// Flush and close the database, releasing its lock. Later calls are
    /// misses and dropped writes. Idempotent.
    pub fn close(&self) {
        if self.forked() {
            return; // the parent's handle: leave it alone (Drop forgets it)
        }
        self.flush();
        let store = self.store.write().take();
        if store.is_some() {
            drop(store);
            open::note_closed(&self.path);
        }
    }

    /// Entries stored (approximate).
    pub fn len(&self) -> u64 {
        self.entries.load(Relaxed).max(0) as u64
    }

    /// Whether no entries are stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Key + envelope bytes stored (approximate).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed).max(0) as u64
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DiskStats {
        let c = &self.counters;
        DiskStats {
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            expired: c.expired.load(Relaxed),
            corrupt: c.corrupt.load(Relaxed),
            errors: c.errors.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            oversize: c.oversize.load(Relaxed),
            recovered: c.recovered.load(Relaxed),
            lock_waits: c.lock_waits.load(Relaxed),
            disabled: u64::from(!self.enabled()),
            entries: self.len(),
            bytes: self.bytes(),
        }
    }

    /// Write raw bytes under `key`, bypassing the envelope (tests only).
    #[cfg(test)]
    pub(crate) fn put_raw(&self, key: &[u8], raw: &[u8]) {
        self.with_store(|s| s.data.insert(key, raw).unwrap());
    }
}

/// Why a forked child's tier is off.
const FORKED: &str = "the disk tier was opened by the parent process before fork; \
    this process uses the memory tier only (give each worker its own disk_path, \
    or build the service after fork)";

impl Drop for DiskCache {
    fn drop(&mut self) {
        if self.forked() {
            // Dropping sled's handle would flush and join threads that exist only
            // in the parent, and wait forever: leak it instead.
            if let Some(store) = self.store.get_mut().take() {
                std::mem::forget(store);
            }
        } else if self.store.get_mut().take().is_some() {
            open::note_closed(&self.path);
        }
    }
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("enabled", &self.enabled())
            .field("entries", &self.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

#[cfg(test)]
mod tests;
