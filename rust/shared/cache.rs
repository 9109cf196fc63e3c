//! The shared cache tier: replies kept in Redis below the memory (and disk)
//! tiers, so a reply cached by one process is a hit in every other.
//!
//! Each value is sealed in an envelope (below): versioned, checksummed,
//! compressed with zstd when that pays, and tagged with a hash of its cache
//! key, so bytes that are not ours (another program's, another version's, or
//! stored under another key) are a *foreign* miss and bytes that do not check
//! out are a *corrupt* miss, never an error. The key is the core's 16-byte
//! cache key in hex, which already carries the namespace and the credential
//! scope: no API key or secret ever reaches Redis.
//!
//! Reads go to Redis within the op timeout and answer `None` on any failure
//! (Redis down, slow, or a bad entry). Writes are queued on the runtime and
//! return at once; at most [`MAX_PENDING_WRITES`] are in flight, the rest are
//! dropped (counted), and each is bounded by the op timeout.
//!
//! ```text
//! offset size field
//!      0    4 magic      b"LRSC"
//!      4    1 version    1
//!      5    1 flags      bit 0: the body is zstd-compressed; other bits 0
//!      6    2 reserved   0
//!      8    8 key_tag    u64 LE, xxh3_64(cache key)
//!     16    4 raw_len    u32 LE, length of the payload once decompressed
//!     20    8 checksum   u64 LE, xxh3_64_with_seed(body, seed = xxh3_64(bytes 0..20))
//!     28    n body
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use tokio::sync::Notify;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::client::{Connection, Script};
use crate::error::{positive, Error, Result};

/// The four magic bytes that open every shared-tier envelope.
pub const MAGIC: [u8; 4] = *b"LRSC";
/// The envelope version this build writes and reads.
pub const VERSION: u8 = 1;
/// Flag bit: the body is zstd-compressed.
pub const FLAG_ZSTD: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 28;
const CHECKED_LEN: usize = 20;
/// Payloads shorter than this are stored as they are (zstd would not pay).
pub const COMPRESS_MIN: usize = 256;
/// The largest payload an envelope may declare (a guard against a forged length).
pub const MAX_RAW: usize = 64 << 20;
/// zstd level: the fastest, since the tier is read on the hot path.
const ZSTD_LEVEL: i32 = 1;
/// Writes in flight at most; more are dropped and counted.
pub const MAX_PENDING_WRITES: usize = 256;
/// Expiry jitter: each entry lives its TTL minus up to this share of it.
pub const TTL_JITTER: f64 = 0.1;

/// Why stored bytes are not a value of this key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Not an envelope of this build (magic, version) or sealed for another key.
    Foreign,
    /// An envelope of ours that does not check out (length, flags, checksum, zstd).
    Corrupt,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn checksum(header: &[u8], body: &[u8]) -> u64 {
    xxh3_64_with_seed(body, xxh3_64(header))
}

/// Seal `payload`, the value of cache key `key`, in an envelope.
pub fn seal(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let compressed = if payload.len() >= COMPRESS_MIN {
        zstd::bulk::compress(payload, ZSTD_LEVEL)
            .ok()
            .filter(|c| c.len() < payload.len())
    } else {
        None
    };
    let (flags, body) = match &compressed {
        Some(c) => (FLAG_ZSTD, c.as_slice()),
        None => (0, payload),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&xxh3_64(key).to_le_bytes());
    out.extend_from_slice(&(payload.len().min(u32::MAX as usize) as u32).to_le_bytes());
    let sum = checksum(&out[..CHECKED_LEN], body);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Open an envelope stored under cache key `key`: the payload, or why not.
/// Never panics, whatever the bytes.
pub fn open(key: &[u8], bytes: &[u8]) -> std::result::Result<Vec<u8>, Bad> {
    if bytes.len() < 5 || bytes[..4] != MAGIC || bytes[4] != VERSION {
        return Err(Bad::Foreign);
    }
    if bytes.len() < HEADER_LEN {
        return Err(Bad::Corrupt);
    }
    let flags = bytes[5];
    if flags & !FLAG_ZSTD != 0 || bytes[6..8] != [0, 0] {
        return Err(Bad::Corrupt);
    }
    let body = &bytes[HEADER_LEN..];
    if u64_at(bytes, CHECKED_LEN) != checksum(&bytes[..CHECKED_LEN], body) {
        return Err(Bad::Corrupt);
    }
    if u64_at(bytes, 8) != xxh3_64(key) {
        return Err(Bad::Foreign);
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&bytes[16..20]);
    let raw_len = u32::from_le_bytes(len) as usize;
    if raw_len > MAX_RAW {
        return Err(Bad::Corrupt);
    }
    let payload = if flags & FLAG_ZSTD != 0 {
        zstd::bulk::decompress(body, raw_len).map_err(|_| Bad::Corrupt)?
    } else {
        body.to_vec()
    };
    if payload.len() != raw_len {
        return Err(Bad::Corrupt);
    }
    Ok(payload)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The TTL to store with: `ttl_ms` less up to [`TTL_JITTER`] of it, by `u`
/// in `[0, 1)`; never below 1 ms. Spreads the expiry of entries written
/// together, so they are not all fetched again at once.
pub fn jittered_ttl_ms(ttl_ms: u64, u: f64) -> u64 {
    let u = if u.is_finite() {
        u.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let cut = (ttl_ms as f64 * TTL_JITTER * u) as u64;
    ttl_ms.saturating_sub(cut).max(1)
}

/// Open the target of `url` (one node or a cluster, see
/// [`super::client::Target::open`]), with a message that hides its password.
pub(crate) fn open_client(url: &str) -> Result<super::client::Target> {
    super::client::Target::open(url)
}

/// `url` with the password of `redis://user:pass@host` replaced by `***`.
pub fn redact(url: &str) -> String {
    super::client::redact(url)
}

/// Check a shared-state namespace: non-empty, no hash-tag braces.
pub(crate) fn check_namespace(namespace: &str) -> Result<()> {
    if namespace.is_empty() || namespace.contains(['{', '}']) {
        return Err(Error::config(
            "namespace",
            namespace,
            "must be non-empty without '{' or '}'",
        ));
    }
    Ok(())
}

/// A nonce for this process and moment (tokens, jitter seeds).
pub(crate) fn nonce() -> u64 {
    xxh3_64(format!("{:?}{}", Instant::now(), std::process::id()).as_bytes())
}

/// GET with the remaining TTL. KEYS: the entry. Returns nil or `{value, pttl_ms}`.
pub const GET: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1])}
"#;

/// SET with a TTL. KEYS: the entry. ARGV: value, ttl_ms.
pub const SET: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// What the tier has seen (read by `stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered with a value.
    pub hits: u64,
    /// Lookups that found nothing (bad entries and failures included).
    pub misses: u64,
    /// Entries of ours that did not check out (a miss each).
    pub corrupt: u64,
    /// Entries not ours, or sealed for another key (a miss each).
    pub foreign: u64,
    /// Lookups Redis did not answer in time, or at all (a miss each).
    pub errors: u64,
    /// Values written.
    pub writes: u64,
    /// Writes that failed or timed out.
    pub write_errors: u64,
    /// Writes dropped because [`MAX_PENDING_WRITES`] were in flight.
    pub writes_dropped: u64,
    /// Writes in flight now.
    pub pending_writes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    corrupt: AtomicU64,
    foreign: AtomicU64,
    errors: AtomicU64,
    writes: AtomicU64,
    write_errors: AtomicU64,
    writes_dropped: AtomicU64,
}

/// The cache tier on Redis (see the module docs).
pub struct SharedCache {
    conn: Arc<Connection>,
    namespace: String,
    default_ttl_ms: u64,
    get: Script,
    set: Script,
    pending: AtomicUsize,
    drained: Notify,
    seed: AtomicU64,
    counters: Counters,
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache")
            .field("namespace", &self.namespace)
            .field("default_ttl_ms", &self.default_ttl_ms)
            .finish_non_exhaustive()
    }
}

fn secs_to_ms(what: &'static str, s: f64) -> Result<u64> {
    Ok(((positive(what, s)? * 1000.0).ceil() as u64).max(1))
}

impl SharedCache {
    /// A tier on the Redis at `url`; entries without a TTL of their own live
    /// `default_ttl_s`. No connection is opened until the first call.
    pub fn new(url: &str, namespace: &str, op_timeout_s: f64, default_ttl_s: f64) -> Result<Self> {
        let op_timeout = Duration::from_secs_f64(positive("op_timeout_s", op_timeout_s)?);
        check_namespace(namespace)?;
        let default_ttl_ms = secs_to_ms("default_ttl_s", default_ttl_s)?;
        Ok(Self {
            conn: Connection::new(open_client(url)?, op_timeout),
            namespace: namespace.to_string(),
            default_ttl_ms,
            get: Script::new(GET),
            set: Script::new(SET),
            pending: AtomicUsize::new(0),
            drained: Notify::new(),
            seed: AtomicU64::new(nonce()),
            counters: Counters::default(),
        })
    }

    /// The Redis key of cache key `key`.
    pub fn redis_key(&self, key: &[u8]) -> String {
        format!("{}:c:{}", self.namespace, hex(key))
    }

    /// The value of `key` and its seconds left, or `None` (absent, bad, or
    /// Redis did not answer within the op timeout).
    pub async fn get(&self, key: &[u8]) -> Option<(Vec<u8>, Option<f64>)> {
        let c = &self.counters;
        let reply = self.conn.eval(&self.get, &[self.redis_key(key)], &[]).await;
        let found = match reply {
            Ok(Value::Array(v)) if v.len() == 2 => match (&v[0], &v[1]) {
                (Value::BulkString(b), Value::Int(pttl)) => Some((b.clone(), *pttl)),
                _ => None,
            },
            Ok(_) => None,
            Err(_) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        let out = found.and_then(|(bytes, pttl)| match open(key, &bytes) {
            Ok(payload) => Some((payload, (pttl > 0).then(|| pttl as f64 / 1000.0))),
            Err(Bad::Foreign) => {
                c.foreign.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(Bad::Corrupt) => {
                c.corrupt.fetch_add(1, Ordering::Relaxed);
                None
            }
        });
        let counter = if out.is_some() { &c.hits } else { &c.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        out
    }

    fn next_u(&self) -> f64 {
        let n = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        (xxh3_64(&n.to_le_bytes()) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The TTL (ms, jittered) for an entry asked to live `ttl_s` (default if `None`).
    pub fn ttl_ms(&self, ttl_s: Option<f64>) -> Result<u64> {
        let base = match ttl_s {
            Some(s) => secs_to_ms("ttl_s", s)?,
            None => self.default_ttl_ms,
        };
        Ok(jittered_ttl_ms(base, self.next_u()))
    }

    /// Write `payload` under `key` now (awaited; within the op timeout).
    /// Whether Redis stored it.
    pub async fn put(&self, key: &[u8], payload: &[u8], ttl_ms: u64) -> bool {
        let args = [seal(key, payload), ttl_ms.to_string().into_bytes()];
        let ok = self
            .conn
            .eval_args(&self.set, &[self.redis_key(key)], &args)
            .await
            .is_ok();
        let c = if ok {
            &self.counters.writes
        } else {
            &self.counters.write_errors
        };
        c.fetch_add(1, Ordering::Relaxed);
        ok
    }

    /// Queue a write of `payload` under `key` on the runtime and return at
    /// once: `Ok(false)` when it was dropped ([`MAX_PENDING_WRITES`] in flight).
    pub fn set(
        self: &Arc<Self>,
        key: Vec<u8>,
        payload: Vec<u8>,
        ttl_s: Option<f64>,
    ) -> Result<bool> {
        let ttl_ms = self.ttl_ms(ttl_s)?;
        let Ok(rt) = crate::runtime::handle() else {
            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        };
        if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_WRITES {
            self.finish_write();
            self.counters.writes_dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let this = self.clone();
        rt.spawn(async move {
            this.put(&key, &payload, ttl_ms).await;
            this.finish_write();
        });
        Ok(true)
    }

    fn finish_write(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }

    /// Wait until no write is in flight, at most `timeout`; the writes left.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.drained.notified();
            let left = self.pending.load(Ordering::Acquire);
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(end, notified).await.is_err() {
                return self.pending.load(Ordering::Acquire);
            }
        }
    }

    /// What the tier has seen.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: r(&c.hits),
            misses: r(&c.misses),
            corrupt: r(&c.corrupt),
            foreign: r(&c.foreign),
            errors: r(&c.errors),
            writes: r(&c.writes),
            write_errors: r(&c.write_errors),
            writes_dropped: r(&c.writes_dropped),
            pending_writes: self.pending.load(Ordering::Relaxed) as u64,
        }
    }

    /// Whether a connection is open now (in this process).
    pub fn connected(&self) -> bool {
        self.conn.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(n: usize) -> Vec<u8> {
        (0..n).map(|i| b"the quick brown fox "[i % 20]).collect()
    }

    #[test]
    fn round_trip_small_and_compressed() {
        for n in [0, 10, COMPRESS_MIN - 1, COMPRESS_MIN, 1024, 16 * 1024] {
            let payload = reply(n);
            let sealed = seal(b"key", &payload);
            assert_eq!(open(b"key", &sealed).unwrap(), payload, "n={n}");
            let compressed = sealed[5] & FLAG_ZSTD != 0;
            assert_eq!(compressed, n >= COMPRESS_MIN, "n={n}");
        }
        assert!(seal(b"k", &reply(16 * 1024)).len() < 1024);
    }

    #[test]
    fn every_flipped_bit_is_a_miss() {
        for n in [40, 2048] {
            let sealed = seal(b"key", &reply(n));
            for i in 0..sealed.len() {
                for bit in 0..8 {
                    let mut bad = sealed.clone();
                    bad[i] ^= 1 << bit;
                    assert!(open(b"key", &bad).is_err(), "n={n} byte {i} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn foreign_and_corrupt_are_told_apart() {
        let sealed = seal(b"key", b"value");
        assert_eq!(open(b"other", &sealed), Err(Bad::Foreign));
        assert_eq!(open(b"key", b"{\"json\": 1}"), Err(Bad::Foreign));
        assert_eq!(open(b"key", b""), Err(Bad::Foreign));
        let mut v2 = sealed.clone();
        v2[4] = 2;
        assert_eq!(open(b"key", &v2), Err(Bad::Foreign));
        assert_eq!(open(b"key", &sealed[..HEADER_LEN - 1]), Err(Bad::Corrupt));
        let mut flipped = sealed;
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(open(b"key", &flipped), Err(Bad::Corrupt));
    }

    #[test]
    fn a_forged_length_is_corrupt_not_an_allocation() {
        // A well-formed envelope (valid checksum) whose header claims a huge body.
        let mut e = seal(b"key", &reply(1024));
        e[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let sum = checksum(&e[..CHECKED_LEN], &e[HEADER_LEN..]);
        e[CHECKED_LEN..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(open(b"key", &e), Err(Bad::Corrupt));
        // ... or a wrong (smaller) length.
        e[16..20].copy_from_slice(&100u32.to_le_bytes());
        let sum = checksum(&e[..CHECKED_LEN], &e[HEADER_LEN..]);
        e[CHECKED_LEN..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(open(b"key", &e), Err(Bad::Corrupt));
    }

    #[test]
    fn ttl_jitter_stays_within_ten_percent_below() {
        assert_eq!(jittered_ttl_ms(10_000, 0.0), 10_000);
        assert_eq!(jittered_ttl_ms(10_000, 0.5), 9_500);
        assert_eq!(jittered_ttl_ms(10_000, 1.0), 9_000);
        assert_eq!(jittered_ttl_ms(1, 1.0), 1);
        assert_eq!(jittered_ttl_ms(10_000, f64::NAN), 10_000);
        let c = SharedCache::new("redis://127.0.0.1:1", "ns", 0.01, 100.0).unwrap();
        let ttls: Vec<u64> = (0..200).map(|_| c.ttl_ms(Some(10.0)).unwrap()).collect();
        assert!(ttls.iter().all(|t| (9_000..=10_000).contains(t)));
        assert!(ttls.iter().any(|t| *t < 9_500) && ttls.iter().any(|t| *t > 9_500));
        assert!((90_000..=100_000).contains(&c.ttl_ms(None).unwrap()));
        assert!(c.ttl_ms(Some(0.0)).is_err());
        assert!(c.ttl_ms(Some(f64::NAN)).is_err());
    }

    #[test]
    fn keys_hold_only_the_hashed_key() {
        let c = SharedCache::new("redis://u:secret@127.0.0.1:1", "ns", 0.01, 1.0).unwrap();
        assert_eq!(c.redis_key(&[0xab, 0x01]), "ns:c:ab01");
        assert!(!format!("{c:?}").contains("secret"));
        assert!(SharedCache::new("http://x", "ns", 0.01, 1.0).is_err());
        assert!(SharedCache::new("redis://x", "a{b}", 0.01, 1.0).is_err());
        assert!(SharedCache::new("redis://x", "ns", 0.0, 1.0).is_err());
        assert!(SharedCache::new("redis://x", "ns", 0.01, 0.0).is_err());
    }

    #[test]
    fn redis_absent_is_a_quick_miss_and_writes_do_not_block() {
        let rt = crate::runtime::handle().unwrap();
        let c = Arc::new(SharedCache::new("redis://127.0.0.1:1", "ns", 0.02, 10.0).unwrap());
        let started = Instant::now();
        let got = rt.block_on({
            let c = c.clone();
            async move { c.get(b"k").await }
        });
        assert!(got.is_none());
        assert!(started.elapsed() < Duration::from_millis(500));
        let started = Instant::now();
        assert!(c.set(b"k".to_vec(), reply(100), None).unwrap());
        assert!(started.elapsed() < Duration::from_millis(50));
        let left = rt.block_on({
            let c = c.clone();
            async move { c.drain(Duration::from_secs(2)).await }
        });
        assert_eq!(left, 0);
        let s = c.stats();
        assert_eq!((s.misses, s.errors, s.hits), (1, 1, 0));
        assert_eq!((s.writes, s.write_errors), (0, 1));
    }
}
