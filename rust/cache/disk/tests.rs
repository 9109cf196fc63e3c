//! Unit tests of the disk tier (beside `disk.rs`, split out for length).

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::cache::envelope::encode;
use crate::clock::{Clock, ManualClock};

fn cfg(dir: &Path, max_bytes: Option<i64>) -> DiskConfig {
    DiskConfig::new("path", dir.to_str().unwrap(), "max_bytes", max_bytes, None).unwrap()
}

fn open(dir: &Path, max_bytes: Option<i64>) -> (DiskCache, ManualClock) {
    let clock = ManualClock::new(1_000);
    let c = DiskCache::open(&cfg(dir, max_bytes), Arc::new(clock.clone())).unwrap();
    assert!(c.enabled(), "{:?}", c.error());
    (c, clock)
}

fn get(c: &DiskCache, key: &[u8]) -> Option<Vec<u8>> {
    c.get(key).map(|h| h.payload().to_vec())
}

#[test]
fn set_get_delete_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(dir.path(), None);
    assert_eq!(get(&c, b"k"), None);
    c.set(b"k", b"value", u64::MAX);
    assert_eq!(get(&c, b"k").as_deref(), Some(&b"value"[..]));
    assert_eq!(c.get(b"k").unwrap().expires_at_ns, u64::MAX);
    c.set(b"k", b"longer value", u64::MAX);
    assert_eq!(get(&c, b"k").as_deref(), Some(&b"longer value"[..]));
    assert_eq!((c.len(), c.bytes()), (1, (1 + HEADER_LEN + 12) as u64));
    assert!(c.delete(b"k"));
    assert!(!c.delete(b"k"));
    assert_eq!((c.len(), c.bytes()), (0, 0));
    c.set(b"a", b"1", u64::MAX);
    c.set(b"b", b"2", u64::MAX);
    c.clear();
    assert_eq!(get(&c, b"a"), None);
    assert!(c.is_empty());
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.disabled), (3, 2, 0));
}

#[test]
fn expired_values_miss_and_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (c, clock) = open(dir.path(), None);
    c.set(b"k", b"v", clock.now_ns() + 10);
    clock.advance_ns(9);
    assert!(c.get(b"k").is_some());
    clock.advance_ns(1);
    assert!(c.get(b"k").is_none());
    assert_eq!((c.stats().expired, c.len()), (1, 0));
    assert!(c
        .with_store(|s| s.data.get(b"k").unwrap())
        .unwrap()
        .is_none());
}

#[test]
fn survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(dir.path(), None);
    c.set(b"k", b"persisted", u64::MAX);
    c.set(b"other", b"x", u64::MAX);
    let bytes = c.bytes();
    c.close();
    c.close(); // idempotent
    assert!(!c.enabled() && c.error().is_none());
    assert_eq!(get(&c, b"k"), None);
    c.set(b"dropped", b"x", u64::MAX);

    let (again, _) = open(dir.path(), None);
    assert_eq!(get(&again, b"k").as_deref(), Some(&b"persisted"[..]));
    assert_eq!((again.len(), again.bytes()), (2, bytes));
    again.set(b"new", b"y", u64::MAX);
    assert_eq!(get(&again, b"new").as_deref(), Some(&b"y"[..]));
}

#[test]
fn corrupt_values_miss_and_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(dir.path(), None);
    let mut flipped = encode(b"a value", u64::MAX, 99);
    flipped[HEADER_LEN + 2] ^= 0x10;
    let mut wrong_version = encode(b"v", u64::MAX, 98);
    wrong_version[4] = 9;
    for (key, raw) in [
        (&b"flip"[..], flipped),
        (b"short", b"LRC".to_vec()),
        (b"foreign", b"not an envelope at all, just bytes".to_vec()),
        (b"version", wrong_version),
    ] {
        c.put_raw(key, &raw);
        assert!(c.get(key).is_none(), "{key:?}");
        assert!(c
            .with_store(|s| s.data.get(key).unwrap())
            .unwrap()
            .is_none());
    }
    assert_eq!(c.stats().corrupt, 4);
}

#[test]
fn corrupt_value_written_through_sled_is_dropped_at_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(dir.path(), None);
    c.set(b"good", b"fine", u64::MAX);
    c.set(b"bad", b"will be flipped", u64::MAX);
    c.close();
    {
        let db = sled::open(dir.path()).unwrap();
        let data = db.open_tree("data").unwrap();
        let mut raw = data.get(b"bad").unwrap().unwrap().to_vec();
        raw[HEADER_LEN] ^= 0xff;
        data.insert(b"bad", raw).unwrap();
        db.flush().unwrap();
    }
    let (again, _) = open(dir.path(), None);
    assert_eq!(again.stats().corrupt, 1);
    assert_eq!(get(&again, b"bad"), None);
    assert_eq!(get(&again, b"good").as_deref(), Some(&b"fine"[..]));
    assert_eq!(again.len(), 1);
}

#[test]
fn locked_path_disables_the_tier() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = open(dir.path(), None);
    first.set(b"k", b"v", u64::MAX);
    let second = DiskCache::open(&cfg(dir.path(), None), Arc::new(WallClock)).unwrap();
    assert!(!second.enabled());
    let why = second.error().unwrap();
    assert!(why.contains("in use"), "{why}");
    assert_eq!(get(&second, b"k"), None);
    second.set(b"k2", b"v", u64::MAX);
    assert!(!second.delete(b"k"));
    second.flush();
    second.clear();
    let s = second.stats();
    assert_eq!((s.disabled, s.misses), (1, 1));
    assert_eq!(get(&first, b"k").as_deref(), Some(&b"v"[..]));
}

#[test]
fn corrupt_database_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let (c, _) = open(&path, None);
        c.set(b"k", b"v", u64::MAX);
        c.close();
    }
    std::fs::write(path.join("conf"), b"garbage\0\xff\xfe not a config").unwrap();
    let (c, _) = open(&path, None);
    assert_eq!(c.stats().recovered, 1);
    assert_eq!(get(&c, b"k"), None);
    c.set(b"k", b"fresh", u64::MAX);
    assert_eq!(get(&c, b"k").as_deref(), Some(&b"fresh"[..]));
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
}

#[test]
fn unwritable_path_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("sub");
    let err = DiskCache::open(&cfg(&bad, None), Arc::new(WallClock)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Config { param: "path", .. }), "{msg}");
    assert!(msg.contains(bad.to_str().unwrap()), "{msg}");
    let e = DiskConfig::new("disk_path", "", "disk_max_bytes", None, None).unwrap_err();
    assert!(e.to_string().contains("disk_path"));
    let e = DiskConfig::new("disk_path", "/x", "disk_max_bytes", Some(0), None).unwrap_err();
    assert!(e.to_string().contains("disk_max_bytes=0"));
    let e = DiskConfig::new("disk_path", "/x", "disk_max_bytes", None, Some(-1)).unwrap_err();
    assert!(e.to_string().contains("flush_every_ms=-1"));
}

#[test]
fn evicts_oldest_inserted_over_budget() {
    let dir = tempfile::tempdir().unwrap();
    let entry = 1 + HEADER_LEN + 100;
    let (c, _) = open(dir.path(), Some((entry * 10) as i64));
    for i in 0..30u8 {
        c.set(&[i], &[i; 100], u64::MAX);
    }
    assert!(c.bytes() <= (entry * 10) as u64);
    assert_eq!(c.len(), 10);
    assert_eq!(c.stats().evictions, 20);
    assert_eq!(get(&c, &[0]), None);
    assert_eq!(get(&c, &[19]), None);
    assert_eq!(get(&c, &[29]).unwrap(), vec![29; 100]);
    // rewriting an old key makes it the newest
    c.set(&[20], &[1; 100], u64::MAX);
    c.set(&[100], &[2; 100], u64::MAX);
    assert!(get(&c, &[20]).is_some());
    assert_eq!(get(&c, &[21]), None);
    // one value larger than the whole budget is not stored
    c.set(&[20], &[0; 2_000], u64::MAX);
    assert_eq!(get(&c, &[20]), None, "the old value is dropped too");
    assert_eq!(c.stats().oversize, 1);
}
