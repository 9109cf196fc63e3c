//! The response cache: a memory tier ([`MemoryCache`], moka), a disk tier
//! ([`DiskCache`], sled) and the two combined ([`HybridCache`]) with a
//! promotion policy and write-through or write-behind writes.
//!
//! Keys and values are opaque bytes. The canonical key of a request is
//! [`cache_key`]: the 16-byte xxh3-128 of `scope + \0 + data`. Time (for TTL)
//! comes from an injectable [`crate::clock::Clock`], so tests never sleep.
//!
//! A cache never fails a lookup or a store because of the disk: disk trouble
//! is a miss or a dropped write, counted in the statistics and surfaced as
//! `disk_enabled` / `disk_error`.

pub mod disk;
pub mod envelope;
pub mod hybrid;
pub mod memory;
mod write_behind;

#[cfg(test)]
mod proptests;

pub use disk::{DiskCache, DiskConfig};
pub use hybrid::{HybridCache, HybridConfig, HybridOptions, Promotion, WriteMode};
pub use memory::{Eviction, MemoryCache, MemoryConfig};

use crate::error::{Error, Result};

/// The canonical cache key: xxh3-128 of `scope`, one NUL byte, then `data`,
/// as 16 big-endian bytes.
///
/// `scope` (a namespace such as `"chat:openai/gpt-4o"`) must not contain a
/// NUL byte, so that no (scope, data) pair can collide with another by
/// moving the separator.
///
/// # Examples
///
/// ```
/// let a = _core::cache::cache_key(b"hello", "ns").unwrap();
/// assert_eq!(a.len(), 16);
/// assert_ne!(a, _core::cache::cache_key(b"hello", "other").unwrap());
/// ```
pub fn cache_key(data: &[u8], scope: &str) -> Result<[u8; 16]> {
    if scope.as_bytes().contains(&0) {
        return Err(Error::InvalidArgument {
            what: "scope",
            detail: "must not contain a NUL byte".to_owned(),
        });
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(scope.as_bytes());
    h.update(&[0]);
    h.update(data);
    Ok(h.digest128().to_be_bytes())
}

/// Validate an optional TTL in seconds and turn it into nanoseconds.
pub(crate) fn ttl_ns(param: &'static str, ttl_s: Option<f64>) -> Result<Option<u64>> {
    match ttl_s {
        None => Ok(None),
        Some(s) => Ok(Some(crate::clock::secs_to_ns(crate::error::positive(
            param, s,
        )?))),
    }
}

/// Validate a count or size that must be at least 1.
pub(crate) fn at_least_one(param: &'static str, value: i64) -> Result<u64> {
    if value >= 1 {
        Ok(value as u64)
    } else {
        Err(Error::config(param, value, "must be an integer >= 1"))
    }
}

/// Absolute expiry time for an entry stored at `now_ns` with an optional TTL
/// (`u64::MAX` means never).
pub(crate) fn expiry(now_ns: u64, ttl_ns: Option<u64>) -> u64 {
    ttl_ns.map_or(u64::MAX, |t| now_ns.saturating_add(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_is_scoped_and_stable() {
        let a = cache_key(b"abc", "").unwrap();
        assert_eq!(a, cache_key(b"abc", "").unwrap());
        assert_ne!(a, cache_key(b"abc", "x").unwrap());
        assert_ne!(cache_key(b"b", "a").unwrap(), cache_key(b"", "ab").unwrap());
        let mut joined = b"ns\0".to_vec();
        joined.extend_from_slice(b"abc");
        let want = xxhash_rust::xxh3::xxh3_128(&joined).to_be_bytes();
        assert_eq!(cache_key(b"abc", "ns").unwrap(), want);
        assert!(matches!(
            cache_key(b"x", "a\0b"),
            Err(Error::InvalidArgument { what: "scope", .. })
        ));
    }

    #[test]
    fn validators_name_the_parameter() {
        assert_eq!(ttl_ns("ttl_s", None).unwrap(), None);
        assert_eq!(ttl_ns("ttl_s", Some(1.5)).unwrap(), Some(1_500_000_000));
        let e = ttl_ns("ttl_s", Some(f64::NAN)).unwrap_err().to_string();
        assert!(e.contains("ttl_s=NaN"), "{e}");
        assert!(ttl_ns("ttl_s", Some(0.0)).is_err());
        assert_eq!(at_least_one("n", 3).unwrap(), 3);
        assert!(at_least_one("n", 0)
            .unwrap_err()
            .to_string()
            .contains("n=0"));
        assert_eq!(expiry(5, None), u64::MAX);
        assert_eq!(expiry(5, Some(10)), 15);
        assert_eq!(expiry(u64::MAX - 1, Some(10)), u64::MAX);
    }
}
