//! The cache the service uses: the memory tier over an optional disk tier.
//!
//! - `get` looks in memory, then on disk. A disk hit is promoted into
//!   memory with its remaining TTL, either at once (`on_hit`) or on its
//!   N-th disk hit (`after_n_hits`; hits are counted per key in a small
//!   bounded map).
//! - `set` writes memory at once and the disk either in the same call
//!   (`write_through`) or through the ordered write-behind queue
//!   (`write_behind`, see [`super::write_behind`]). With write-behind a
//!   value not yet drained is not on disk: a lookup that misses memory in
//!   that window sees the disk's older state.
//! - After `close` the memory tier keeps working and the disk is off.
//!
//! Methods ending in `_disk` may block on I/O; the Python bindings call
//! them with the GIL released, and the memory ones with it held.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::disk::{DiskCache, DiskConfig};
use super::memory::{MemoryCache, MemoryConfig};
use super::write_behind::{Op, Pending, WriteBehind};
use crate::clock::SharedClock;
use crate::error::{Error, Result};

/// When a disk hit is copied into memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promotion {
    /// On every disk hit.
    OnHit,
    /// On the N-th disk hit of a key.
    AfterNHits(u32),
}

/// How a `set` reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Memory and disk in the same call.
    WriteThrough,
    /// Memory now, disk from a bounded queue.
    WriteBehind,
}

/// The raw settings of a [`HybridCache`] as a caller spells them; the
/// defaults are those of the Python constructor.
#[derive(Debug, Clone, PartialEq)]
pub struct HybridOptions<'a> {
    /// Entry bound of the memory tier.
    pub memory_max_entries: i64,
    /// Byte bound of the memory tier.
    pub memory_max_bytes: Option<i64>,
    /// Default TTL in seconds.
    pub ttl_s: Option<f64>,
    /// `"tinylfu"` or `"lru"`.
    pub eviction: &'a str,
    /// Directory of the disk tier; `None`: memory only.
    pub disk_path: Option<&'a str>,
    /// Byte budget of the disk tier.
    pub disk_max_bytes: Option<i64>,
    /// `"on_hit"` or `"after_n_hits"`.
    pub promotion: &'a str,
    /// N for `"after_n_hits"` (>= 1).
    pub promote_after: i64,
    /// `"write_through"` or `"write_behind"`.
    pub write_mode: &'a str,
    /// sled's background flush interval.
    pub flush_every_ms: Option<i64>,
}

impl Default for HybridOptions<'_> {
    fn default() -> Self {
        Self {
            memory_max_entries: 10_000,
            memory_max_bytes: None,
            ttl_s: None,
            eviction: "tinylfu",
            disk_path: None,
            disk_max_bytes: None,
            promotion: "on_hit",
            promote_after: 2,
            write_mode: "write_through",
            flush_every_ms: Some(500),
        }
    }
}

/// Validated settings of a [`HybridCache`].
#[derive(Debug, Clone, PartialEq)]
pub struct HybridConfig {
    /// The memory tier.
    pub memory: MemoryConfig,
    /// The disk tier, if any.
    pub disk: Option<DiskConfig>,
    /// Promotion policy.
    pub promotion: Promotion,
    /// Write mode.
    pub write_mode: WriteMode,
    /// Capacity of the write-behind queue.
    pub queue_capacity: usize,
}

impl HybridConfig {
    /// Validate `o`; errors name the parameter and its value.
    pub fn new(o: &HybridOptions<'_>) -> Result<Self> {
        let memory = MemoryConfig::new(
            o.memory_max_entries,
            o.memory_max_bytes,
            o.ttl_s,
            o.eviction,
        )?;
        let n = super::at_least_one("promote_after", o.promote_after)?;
        let n = u32::try_from(n).map_err(|_| Error::config("promote_after", n, "is too large"))?;
        let promotion = match o.promotion {
            "on_hit" => Promotion::OnHit,
            "after_n_hits" => Promotion::AfterNHits(n),
            p => {
                return Err(Error::config(
                    "promotion",
                    p,
                    "must be \"on_hit\" or \"after_n_hits\"",
                ))
            }
        };
        let write_mode = match o.write_mode {
            "write_through" => WriteMode::WriteThrough,
            "write_behind" => WriteMode::WriteBehind,
            w => {
                return Err(Error::config(
                    "write_mode",
                    w,
                    "must be \"write_through\" or \"write_behind\"",
                ))
            }
        };
        let disk = DiskConfig::new(
            "disk_path",
            o.disk_path.unwrap_or("-"),
            "disk_max_bytes",
            o.disk_max_bytes,
            o.flush_every_ms,
        )?;
        Ok(Self {
            memory,
            disk: o.disk_path.map(|_| disk),
            promotion,
            write_mode,
            queue_capacity: 4_096,
        })
    }
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    promotions: AtomicU64,
}

/// Memory over disk, with promotion and write-through or write-behind.
pub struct HybridCache {
    memory: MemoryCache,
    disk: Option<Arc<DiskCache>>,
    promotion: Promotion,
    disk_hit_counts: moka::sync::Cache<Vec<u8>, Arc<AtomicU32>>,
    write_behind: Option<WriteBehind>,
    closed: AtomicBool,
    counters: Counters,
}

impl HybridCache {
    /// Build the tiers. The memory tier reads `memory_clock`; the disk tier
    /// `disk_clock` (wall-clock time unless a manual clock is injected, see
    /// [`super::disk`]). Fails only on an unwritable `disk_path`.
    pub fn new(
        config: &HybridConfig,
        memory_clock: SharedClock,
        disk_clock: SharedClock,
    ) -> Result<Self> {
        let disk = match &config.disk {
            Some(d) => Some(Arc::new(DiskCache::open(d, disk_clock)?)),
            None => None,
        };
        let write_behind = match (config.write_mode, &disk) {
            (WriteMode::WriteBehind, Some(d)) => {
                Some(WriteBehind::new(Arc::clone(d), config.queue_capacity))
            }
            _ => None,
        };
        Ok(Self {
            memory: MemoryCache::new(&config.memory, memory_clock),
            disk,
            promotion: config.promotion,
            disk_hit_counts: moka::sync::Cache::new(config.memory.max_entries.clamp(1_024, 65_536)),
            write_behind,
            closed: AtomicBool::new(false),
            counters: Counters::default(),
        })
    }

    /// The memory tier.
    pub fn memory(&self) -> &MemoryCache {
        &self.memory
    }

    /// The disk tier, if configured.
    pub fn disk(&self) -> Option<&DiskCache> {
        self.disk.as_deref()
    }

    /// Whether a lookup that misses memory should go to disk.
    pub fn disk_active(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| d.enabled())
    }

    fn count(&self, hit: bool) {
        let c = if hit {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        c.fetch_add(1, Relaxed);
    }

    /// Memory-only lookup (the fast path; never touches the disk).
    pub fn get_memory(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        let v = self.memory.get(key);
        self.count(v.is_some());
        v
    }

    /// Both tiers: memory, then disk (with promotion).
    pub fn get(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        self.get_hot(key).or_else(|| self.get_disk(key))
    }

    /// The first half of [`Self::get`]: a memory hit (counted as a hit), or
    /// `None` without counting a miss; follow a `None` with
    /// [`Self::get_disk`].
    pub fn get_hot(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        let v = self.memory.get(key);
        if v.is_some() {
            self.count(true);
        }
        v
    }

    /// The second half of [`Self::get`], for a key that just missed memory:
    /// the disk lookup and promotion. May block on I/O.
    pub fn get_disk(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        let Some(disk) = self.disk.as_ref() else {
            self.count(false);
            return None;
        };
        // a write or delete still queued (write-behind) is what the disk will hold
        let queued = self.write_behind.as_ref().and_then(|wb| wb.pending(key));
        let found = match queued {
            Some(Pending::Deleted) => None,
            Some(Pending::Value(v, at)) => Some((v, at)).filter(|_| at > disk.now_ns()),
            None => disk
                .get(key)
                .map(|h| (Arc::from(h.payload()), h.expires_at_ns)),
        };
        let Some((value, expires_at_ns)) = found else {
            self.count(false);
            return None;
        };
        self.count(true);
        if self.should_promote(key) {
            let expires = match expires_at_ns {
                u64::MAX => u64::MAX,
                at => self
                    .memory
                    .now_ns()
                    .saturating_add(at.saturating_sub(disk.now_ns())),
            };
            self.memory.set_until(key, Arc::clone(&value), expires);
            self.counters.promotions.fetch_add(1, Relaxed);
        }
        Some(value)
    }

    fn should_promote(&self, key: &[u8]) -> bool {
        match self.promotion {
            Promotion::OnHit => true,
            Promotion::AfterNHits(n) => {
                let seen = self
                    .disk_hit_counts
                    .get_with_by_ref(key, || Arc::new(AtomicU32::new(0)))
                    .fetch_add(1, Relaxed)
                    + 1;
                if seen >= n {
                    self.disk_hit_counts.invalidate(key);
                }
                seen >= n
            }
        }
    }

    /// Store in memory only (the first half of [`Self::set`]); returns the
    /// effective TTL for [`Self::set_disk`].
    pub fn set_memory(&self, key: &[u8], value: Arc<[u8]>, ttl_ns: Option<u64>) -> Option<u64> {
        let ttl = ttl_ns.or(self.memory.default_ttl_ns());
        self.memory.set(key, value, ttl);
        ttl
    }

    /// Store on disk (write-through) or queue it (write-behind). May block.
    pub fn set_disk(&self, key: &[u8], value: Arc<[u8]>, ttl_ns: Option<u64>) {
        let Some(disk) = self.disk.as_ref().filter(|_| !self.closed.load(Relaxed)) else {
            return;
        };
        let expires_at_ns = super::expiry(disk.now_ns(), ttl_ns);
        match &self.write_behind {
            None => disk.set(key, &value, expires_at_ns),
            Some(wb) => {
                wb.submit(Op::Set {
                    key: key.into(),
                    value,
                    expires_at_ns,
                });
            }
        }
    }

    /// Store in both tiers; `ttl_ns` overrides the default TTL.
    pub fn set(&self, key: &[u8], value: Arc<[u8]>, ttl_ns: Option<u64>) {
        let ttl = self.set_memory(key, Arc::clone(&value), ttl_ns);
        self.set_disk(key, value, ttl);
    }

    /// Remove `key` from both tiers (and cancel queued writes of it);
    /// `true` if either held a live value. May block.
    pub fn delete(&self, key: &[u8]) -> bool {
        let in_memory = self.memory.delete(key);
        self.disk_hit_counts.invalidate(key);
        let on_disk = self.disk.as_ref().is_some_and(|d| d.delete(key));
        if let Some(wb) = &self.write_behind {
            wb.submit(Op::Delete(key.into()));
        }
        in_memory || on_disk
    }

    /// Empty both tiers (queued writes are drained first). May block.
    pub fn clear(&self) {
        self.memory.clear();
        self.disk_hit_counts.invalidate_all();
        if let Some(wb) = &self.write_behind {
            wb.drain();
        }
        if let Some(d) = &self.disk {
            d.clear();
        }
    }

    /// Drain the write-behind queue and flush the disk. May block.
    pub fn flush(&self) {
        if let Some(wb) = &self.write_behind {
            wb.drain();
        }
        if let Some(d) = &self.disk {
            d.flush();
        }
    }

    /// Drain, stop background work and close the disk. The memory tier keeps
    /// working. Idempotent. May block.
    pub fn close(&self) {
        self.closed.store(true, Relaxed);
        if let Some(wb) = &self.write_behind {
            wb.close();
        }
        if let Some(d) = &self.disk {
            d.close();
        }
    }

    /// Every counter, by name (see the Python docs of `HybridCache.stats`).
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        let m = self.memory.stats();
        let d = self.disk.as_ref().map(|d| d.stats()).unwrap_or_default();
        let q = self
            .write_behind
            .as_ref()
            .map(|w| w.stats())
            .unwrap_or_default();
        let c = &self.counters;
        vec![
            ("hits", c.hits.load(Relaxed)),
            ("misses", c.misses.load(Relaxed)),
            ("memory_hits", m.hits),
            ("memory_misses", m.misses),
            ("disk_hits", d.hits),
            ("disk_misses", d.misses),
            ("promotions", c.promotions.load(Relaxed)),
            ("memory_entries", m.entries),
            ("memory_bytes", m.bytes),
            ("memory_evictions", m.evictions),
            ("memory_expired", m.expired),
            ("disk_entries", d.entries),
            ("disk_bytes", d.bytes),
            ("disk_evictions", d.evictions),
            ("disk_expired", d.expired),
            ("disk_oversize", d.oversize),
            ("disk_recovered", d.recovered),
            ("disk_lock_waits", d.lock_waits),
            ("corrupt", d.corrupt),
            ("disk_errors", d.errors),
            (
                "disk_disabled",
                u64::from(self.disk.is_some() && !self.disk_active()),
            ),
            ("write_behind_queued", q.queued),
            ("write_behind_written", q.written),
            ("write_behind_waits", q.waits),
            ("write_behind_dropped", q.dropped),
        ]
    }
}

impl std::fmt::Debug for HybridCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridCache")
            .field("memory", &self.memory)
            .field("disk", &self.disk)
            .field("promotion", &self.promotion)
            .finish()
    }
}

#[cfg(test)]
mod tests;
