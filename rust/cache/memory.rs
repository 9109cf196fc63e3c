//! The memory tier: a concurrent moka cache of byte keys to byte values,
//! bounded by entries and optionally by bytes, with TinyLFU or LRU eviction
//! and TTLs checked against an injectable clock.
//!
//! Expiry is ours, not moka's: each entry stores `expires_at_ns` on the
//! cache's clock, and a read that finds an expired entry counts a miss and
//! removes it (atomically, so a fresh value written meanwhile survives).
//! Expired entries that are never read again leave by ordinary eviction.
//!
//! Capacity: with only `max_entries`, every entry weighs 1. With
//! `max_bytes` too, an entry weighs `max(key + value bytes, max_bytes /
//! max_entries)` against a capacity of `max_bytes`: the total of real bytes
//! stays under `max_bytes` and the count under `max_entries`, at the price of
//! counting small entries as the average allowed size.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;

use crate::clock::SharedClock;
use crate::error::{Error, Result};

/// Which entry the memory tier evicts when full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// TinyLFU admission with LRU eviction (moka's default): resists scans.
    TinyLfu,
    /// Plain least-recently-used.
    Lru,
}

impl Eviction {
    /// Parse `"tinylfu"` or `"lru"`; anything else is a `Config` error on
    /// the `eviction` parameter.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "tinylfu" => Ok(Self::TinyLfu),
            "lru" => Ok(Self::Lru),
            _ => Err(Error::config(
                "eviction",
                s,
                "must be \"tinylfu\" or \"lru\"",
            )),
        }
    }
}

/// Validated settings of a [`MemoryCache`].
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryConfig {
    /// At most this many entries.
    pub max_entries: u64,
    /// At most this many key + value bytes, if set.
    pub max_bytes: Option<u64>,
    /// Default time to live of an entry, if any.
    pub ttl_ns: Option<u64>,
    /// Eviction policy.
    pub eviction: Eviction,
}

impl MemoryConfig {
    /// Check the raw settings as a caller spelled them (parameter names
    /// `memory_max_entries`, `memory_max_bytes`, `ttl_s`, `eviction`).
    pub fn new(
        max_entries: i64,
        max_bytes: Option<i64>,
        ttl_s: Option<f64>,
        eviction: &str,
    ) -> Result<Self> {
        Ok(Self {
            max_entries: super::at_least_one("memory_max_entries", max_entries)?,
            max_bytes: max_bytes
                .map(|b| super::at_least_one("memory_max_bytes", b))
                .transpose()?,
            ttl_ns: super::ttl_ns("ttl_s", ttl_s)?,
            eviction: Eviction::parse(eviction)?,
        })
    }
}

/// A cached value and the clock time at which it stops being served.
#[derive(Clone)]
struct Entry {
    value: Arc<[u8]>,
    expires_at_ns: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    expired: AtomicU64,
    bytes: AtomicU64,
}

/// A snapshot of a memory tier's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing or an expired entry.
    pub misses: u64,
    /// Values stored.
    pub inserts: u64,
    /// Entries evicted (or refused admission) for capacity.
    pub evictions: u64,
    /// Entries found expired on read and removed.
    pub expired: u64,
    /// Entries held (moka's count after its pending maintenance).
    pub entries: u64,
    /// Key + value bytes held.
    pub bytes: u64,
}

/// The memory tier. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct MemoryCache {
    cache: moka::sync::Cache<Vec<u8>, Entry>,
    clock: SharedClock,
    ttl_ns: Option<u64>,
    counters: Arc<Counters>,
}

fn size_of(key: &[u8], entry: &Entry) -> u64 {
    (key.len() + entry.value.len()) as u64
}

impl MemoryCache {
    /// A memory tier with `config`, reading time from `clock`.
    pub fn new(config: &MemoryConfig, clock: SharedClock) -> Self {
        let counters = Arc::new(Counters::default());
        let listener_counters = Arc::clone(&counters);
        let mut builder = moka::sync::Cache::builder()
            .eviction_policy(match config.eviction {
                Eviction::TinyLfu => EvictionPolicy::tiny_lfu(),
                Eviction::Lru => EvictionPolicy::lru(),
            })
            .eviction_listener(move |key: Arc<Vec<u8>>, entry: Entry, cause| {
                listener_counters
                    .bytes
                    .fetch_sub(size_of(&key, &entry), Relaxed);
                if cause == RemovalCause::Size {
                    listener_counters.evictions.fetch_add(1, Relaxed);
                }
            });
        builder = match config.max_bytes {
            None => builder.max_capacity(config.max_entries),
            Some(max_bytes) => {
                let floor = max_bytes.div_ceil(config.max_entries).max(1);
                builder
                    .max_capacity(max_bytes)
                    .weigher(move |k: &Vec<u8>, e: &Entry| {
                        size_of(k, e).max(floor).min(u32::MAX as u64) as u32
                    })
            }
        };
        Self {
            cache: builder.build(),
            clock,
            ttl_ns: config.ttl_ns,
            counters,
        }
    }

    /// The tier's clock time, in nanoseconds.
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// The live value of `key`, or `None` (absent or expired; an expired
    /// entry is removed).
    pub fn get(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        self.get_with_expiry(key).map(|(v, _)| v)
    }

    /// The live value of `key` with its expiry time (`u64::MAX`: never).
    pub fn get_with_expiry(&self, key: &[u8]) -> Option<(Arc<[u8]>, u64)> {
        let Some(entry) = self.cache.get(key) else {
            self.counters.misses.fetch_add(1, Relaxed);
            return None;
        };
        let now = self.clock.now_ns();
        if entry.expires_at_ns > now {
            self.counters.hits.fetch_add(1, Relaxed);
            return Some((entry.value, entry.expires_at_ns));
        }
        self.counters.misses.fetch_add(1, Relaxed);
        self.remove_if_expired(key, now);
        None
    }

    fn remove_if_expired(&self, key: &[u8], now: u64) {
        let removed = self.cache.entry_by_ref(key).and_compute_with(|e| match e {
            Some(e) if e.value().expires_at_ns <= now => Op::Remove,
            _ => Op::Nop,
        });
        if matches!(removed, moka::ops::compute::CompResult::Removed(_)) {
            self.counters.expired.fetch_add(1, Relaxed);
        }
    }

    /// Store `value` under `key` with `ttl_ns` (or the default TTL if `None`).
    pub fn set(&self, key: &[u8], value: Arc<[u8]>, ttl_ns: Option<u64>) {
        let expires = super::expiry(self.clock.now_ns(), ttl_ns.or(self.ttl_ns));
        self.set_until(key, value, expires);
    }

    /// Store `value` under `key` until the absolute clock time `expires_at_ns`.
    pub fn set_until(&self, key: &[u8], value: Arc<[u8]>, expires_at_ns: u64) {
        let entry = Entry {
            value,
            expires_at_ns,
        };
        self.counters.bytes.fetch_add(size_of(key, &entry), Relaxed);
        self.counters.inserts.fetch_add(1, Relaxed);
        self.cache.insert(key.to_vec(), entry);
    }

    /// The default TTL of an entry, if any.
    pub fn default_ttl_ns(&self) -> Option<u64> {
        self.ttl_ns
    }

    /// Remove `key`; `true` if a live entry was removed.
    pub fn delete(&self, key: &[u8]) -> bool {
        self.cache
            .remove(key)
            .is_some_and(|e| e.expires_at_ns > self.clock.now_ns())
    }

    /// Remove every entry.
    pub fn clear(&self) {
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
    }

    /// Number of entries, after moka's pending maintenance has run.
    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Whether the tier holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the counters (runs moka's pending maintenance first).
    pub fn stats(&self) -> MemoryStats {
        let entries = self.len();
        let c = &self.counters;
        MemoryStats {
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            inserts: c.inserts.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            expired: c.expired.load(Relaxed),
            entries,
            bytes: c.bytes.load(Relaxed),
        }
    }
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("entries", &self.cache.entry_count())
            .field("ttl_ns", &self.ttl_ns)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn cache(
        entries: i64,
        bytes: Option<i64>,
        ttl: Option<f64>,
        ev: &str,
    ) -> (MemoryCache, ManualClock) {
        let clock = ManualClock::new(1_000);
        let cfg = MemoryConfig::new(entries, bytes, ttl, ev).unwrap();
        (MemoryCache::new(&cfg, Arc::new(clock.clone())), clock)
    }

    fn v(s: &[u8]) -> Arc<[u8]> {
        Arc::from(s)
    }

    #[test]
    fn set_get_delete_clear() {
        let (c, _) = cache(100, None, None, "tinylfu");
        assert!(c.get(b"k").is_none());
        c.set(b"k", v(b"value"), None);
        assert_eq!(c.get(b"k").as_deref(), Some(&b"value"[..]));
        c.set(b"k", v(b"other"), None);
        assert_eq!(c.get(b"k").as_deref(), Some(&b"other"[..]));
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.inserts, s.entries), (2, 1, 2, 1));
        assert_eq!(s.bytes, 6, "replaced value's bytes are released");
        assert!(c.delete(b"k"));
        assert!(!c.delete(b"k"));
        c.set(b"a", v(b"1"), None);
        c.set(b"b", v(b"2"), None);
        c.clear();
        assert!(c.get(b"a").is_none() && c.is_empty());
        assert_eq!(c.stats().bytes, 0);
    }

    #[test]
    fn ttl_default_and_per_entry_follow_the_clock() {
        let (c, clock) = cache(100, None, Some(10.0), "lru");
        c.set(b"default", v(b"d"), None);
        c.set(b"short", v(b"s"), Some(1_000_000_000));
        clock.advance_secs(0.999);
        assert!(c.get(b"short").is_some());
        clock.advance_secs(0.001);
        assert!(c.get(b"short").is_none(), "expires exactly at ttl");
        assert!(c.get(b"default").is_some());
        clock.advance_secs(9.0);
        assert!(c.get(b"default").is_none());
        let s = c.stats();
        assert_eq!(s.expired, 2);
        assert_eq!(s.entries, 0, "expired entries are removed on read");
        let (_, exp) = {
            c.set(b"x", v(b"x"), None);
            c.get_with_expiry(b"x").unwrap()
        };
        assert_eq!(exp, clock.now_ns() + 10_000_000_000);
        c.set(b"y", v(b"y"), Some(5));
        clock.advance_ns(5);
        assert!(!c.delete(b"y"), "deleting an expired entry reports false");
    }

    #[test]
    fn expired_read_does_not_remove_a_fresh_value() {
        let (c, clock) = cache(10, None, None, "lru");
        c.set(b"k", v(b"old"), Some(10));
        clock.advance_ns(10);
        c.set(b"k", v(b"new"), None);
        c.remove_if_expired(b"k", clock.now_ns());
        assert_eq!(c.get(b"k").as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn evicts_by_entries() {
        for ev in ["tinylfu", "lru"] {
            let (c, _) = cache(10, None, None, ev);
            for i in 0..100u32 {
                c.set(&i.to_be_bytes(), v(b"x"), None);
            }
            let s = c.stats();
            assert!(s.entries <= 10, "{ev}: {s:?}");
            assert_eq!(s.evictions + s.entries, 100, "{ev}: {s:?}");
            assert_eq!(s.bytes, s.entries * 5);
        }
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let (c, _) = cache(3, None, None, "lru");
        for k in [b"a", b"b", b"c"] {
            c.set(k, v(b"1"), None);
        }
        c.len();
        assert!(c.get(b"a").is_some());
        c.set(b"d", v(b"1"), None);
        c.len();
        assert!(c.get(b"b").is_none());
        assert!(c.get(b"a").is_some() && c.get(b"d").is_some());
    }

    #[test]
    fn evicts_by_bytes() {
        let (c, _) = cache(1_000, Some(10_000), None, "lru");
        let big = v(&[7u8; 999]);
        for i in 0..50u8 {
            c.set(&[i], big.clone(), None);
        }
        let s = c.stats();
        assert!(s.bytes <= 10_000, "{s:?}");
        assert_eq!(s.entries, 10, "{s:?}");
        assert_eq!(s.evictions, 40);
        // a value larger than the whole tier is never kept
        c.set(b"huge", v(&[0u8; 20_000]), None);
        c.len();
        assert!(c.get(b"huge").is_none());
    }

    #[test]
    fn entry_limit_holds_with_byte_limit() {
        let (c, _) = cache(4, Some(1_000_000), None, "lru");
        for i in 0..20u8 {
            c.set(&[i], v(b"tiny"), None);
        }
        assert!(c.len() <= 4);
    }

    #[test]
    fn config_errors_name_parameter_and_value() {
        let msg = |r: Result<MemoryConfig>| r.unwrap_err().to_string();
        assert!(msg(MemoryConfig::new(0, None, None, "lru")).contains("memory_max_entries=0"));
        assert!(msg(MemoryConfig::new(1, Some(-5), None, "lru")).contains("memory_max_bytes=-5"));
        assert!(msg(MemoryConfig::new(1, None, Some(f64::NAN), "lru")).contains("ttl_s=NaN"));
        assert!(msg(MemoryConfig::new(1, None, Some(-1.0), "lru")).contains("ttl_s=-1"));
        assert!(msg(MemoryConfig::new(1, None, None, "fifo")).contains("eviction=fifo"));
    }
}
