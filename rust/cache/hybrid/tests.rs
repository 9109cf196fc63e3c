//! Unit tests of the hybrid cache (beside `hybrid.rs`, split out for length).

use std::path::Path;

use super::*;
use crate::clock::{Clock, ManualClock};

fn open(o: HybridOptions<'_>) -> (HybridCache, ManualClock) {
    let clock = ManualClock::new(1_000);
    let cfg = HybridConfig::new(&o).unwrap();
    let c = HybridCache::new(&cfg, Arc::new(clock.clone()), Arc::new(clock.clone())).unwrap();
    (c, clock)
}

fn with_disk(dir: &Path) -> HybridOptions<'_> {
    HybridOptions {
        disk_path: Some(dir.to_str().unwrap()),
        flush_every_ms: None,
        ..HybridOptions::default()
    }
}

fn stat(c: &HybridCache, name: &str) -> u64 {
    c.stats().into_iter().find(|(n, _)| *n == name).unwrap().1
}

fn v(s: &[u8]) -> Arc<[u8]> {
    Arc::from(s)
}

#[test]
fn memory_only_cache() {
    let (c, _) = open(HybridOptions::default());
    assert!(!c.disk_active() && c.disk().is_none());
    c.set(b"k", v(b"v"), None);
    assert_eq!(c.get(b"k").as_deref(), Some(&b"v"[..]));
    assert!(c.get(b"nope").is_none());
    assert!(c.delete(b"k"));
    c.flush();
    c.close();
    c.set(b"k", v(b"again"), None);
    assert_eq!(c.get_memory(b"k").as_deref(), Some(&b"again"[..]));
    assert_eq!(
        (
            stat(&c, "hits"),
            stat(&c, "misses"),
            stat(&c, "disk_disabled")
        ),
        (2, 1, 0)
    );
}

#[test]
fn disk_hit_is_promoted_on_hit() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(with_disk(dir.path()));
    c.set(b"k", v(b"value"), None);
    c.memory().clear();
    assert!(c.get_memory(b"k").is_none());
    assert_eq!(c.get(b"k").as_deref(), Some(&b"value"[..]));
    assert_eq!(c.get_memory(b"k").as_deref(), Some(&b"value"[..]));
    assert_eq!((stat(&c, "disk_hits"), stat(&c, "promotions")), (1, 1));
    assert_eq!((stat(&c, "hits"), stat(&c, "misses")), (2, 1));
}

#[test]
fn promotion_after_n_hits() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(HybridOptions {
        promotion: "after_n_hits",
        promote_after: 3,
        ..with_disk(dir.path())
    });
    c.set(b"k", v(b"value"), None);
    c.memory().clear();
    for round in 1..=2 {
        assert!(c.get(b"k").is_some());
        assert!(
            c.get_memory(b"k").is_none(),
            "not promoted after {round} hits"
        );
    }
    assert!(c.get(b"k").is_some());
    assert!(c.get_memory(b"k").is_some());
    assert_eq!((stat(&c, "disk_hits"), stat(&c, "promotions")), (3, 1));
    // the count starts over once promoted
    c.memory().clear();
    c.get(b"k");
    assert!(c.get_memory(b"k").is_none());
}

#[test]
fn promotion_keeps_the_remaining_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let (c, clock) = open(HybridOptions {
        ttl_s: Some(10.0),
        ..with_disk(dir.path())
    });
    c.set(b"k", v(b"v"), None);
    clock.advance_secs(4.0);
    c.memory().clear();
    assert!(c.get(b"k").is_some());
    let (_, exp) = c.memory().get_with_expiry(b"k").unwrap();
    assert_eq!(exp, clock.now_ns() + 6_000_000_000);
    clock.advance_secs(6.0);
    assert!(c.get(b"k").is_none(), "expired in both tiers");
    assert_eq!(
        (stat(&c, "memory_expired"), stat(&c, "disk_expired")),
        (1, 1)
    );
    c.set(b"p", v(b"v"), Some(1_000));
    clock.advance_ns(1_000);
    assert!(c.get(b"p").is_none(), "per-entry TTL reaches the disk too");
}

#[test]
fn write_behind_flush_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(HybridOptions {
        write_mode: "write_behind",
        ..with_disk(dir.path())
    });
    for i in 0..100u8 {
        c.set(&[i], v(&[i; 10]), None);
    }
    c.flush();
    assert_eq!(c.disk().unwrap().len(), 100);
    assert_eq!(
        (
            stat(&c, "write_behind_queued"),
            stat(&c, "write_behind_written")
        ),
        (100, 100)
    );
    assert!(c.delete(&[5]));
    c.flush();
    assert!(c.disk().unwrap().get(&[5]).is_none());
    c.set(b"late", v(b"x"), None);
    c.close();
    c.close();
    assert!(!c.disk_active());
    assert_eq!(stat(&c, "disk_disabled"), 1);
    assert_eq!(
        c.get(b"late").as_deref(),
        Some(&b"x"[..]),
        "memory still works"
    );
    c.set(b"after", v(b"y"), None);
    assert!(c.get(b"after").is_some());

    let (again, _) = open(with_disk(dir.path()));
    assert_eq!(
        again.get(b"late").as_deref(),
        Some(&b"x"[..]),
        "close drained the queue"
    );
    assert!(again.get(b"after").is_none());
    assert_eq!(again.disk().unwrap().len(), 100);
}

#[test]
fn clear_empties_both_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(HybridOptions {
        write_mode: "write_behind",
        ..with_disk(dir.path())
    });
    c.set(b"a", v(b"1"), None);
    c.clear();
    assert!(c.get(b"a").is_none());
    assert_eq!((c.memory().len(), c.disk().unwrap().len()), (0, 0));
}

#[test]
fn config_errors_name_parameter_and_value() {
    let bad = |o: HybridOptions<'_>| HybridConfig::new(&o).unwrap_err().to_string();
    let d = HybridOptions::default;
    assert!(bad(HybridOptions {
        promotion: "never",
        ..d()
    })
    .contains("promotion=never"));
    assert!(bad(HybridOptions {
        promote_after: 0,
        ..d()
    })
    .contains("promote_after=0"));
    assert!(bad(HybridOptions {
        write_mode: "later",
        ..d()
    })
    .contains("write_mode=later"));
    assert!(bad(HybridOptions {
        eviction: "fifo",
        ..d()
    })
    .contains("eviction=fifo"));
    assert!(bad(HybridOptions {
        disk_max_bytes: Some(-1),
        ..d()
    })
    .contains("disk_max_bytes=-1"));
    assert!(bad(HybridOptions {
        flush_every_ms: Some(0),
        ..d()
    })
    .contains("flush_every_ms=0"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"").unwrap();
    let path = file.join("db");
    let cfg = HybridConfig::new(&HybridOptions {
        disk_path: path.to_str(),
        ..d()
    })
    .unwrap();
    let clock: SharedClock = Arc::new(ManualClock::new(0));
    let e = HybridCache::new(&cfg, clock.clone(), clock)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("disk_path=") && e.contains(path.to_str().unwrap()),
        "{e}"
    );
}

/// With write-behind, a read that misses memory sees the queue, whatever the
/// worker has written yet: the newest queued value, and nothing after a
/// delete (never an older value from the disk, never one promoted back).
#[test]
fn write_behind_reads_see_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(HybridOptions {
        write_mode: "write_behind",
        ..with_disk(dir.path())
    });
    for round in 0..200u8 {
        c.set(b"k", v(&[round, 1]), None);
        c.flush(); // on the disk
        c.set(b"k", v(&[round, 2]), None); // queued (or written by now)
        c.memory().clear();
        assert_eq!(
            c.get(b"k").as_deref(),
            Some(&[round, 2][..]),
            "round {round}"
        );
        c.set(b"k", v(&[round, 3]), None);
        assert!(c.delete(b"k"));
        c.memory().clear();
        assert_eq!(
            c.get(b"k"),
            None,
            "round {round}: a deleted key stays deleted"
        );
        c.flush();
        assert_eq!(
            c.get(b"k"),
            None,
            "round {round}: nothing was promoted back"
        );
    }
    c.close();
}
