//! Criterion benchmarks of the request deduplicator's hot operations.

use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;

use _core::clock;
use _core::dedup::{Join, RequestDeduplicator};

/// A cache key as the Python layer passes it: 32 hex digits (xxh3-128).
const KEY: &str = "8f14e45fceea167a5a36dedd4bea2543";

/// Every deduplicator benchmark (the `dedup` group).
pub fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedup");
    let value: Arc<str> = Arc::from("a response");

    // The common case: nobody else asks; lead, then complete.
    let d = RequestDeduplicator::<Arc<str>>::new(0.0, 100_000, clock::system()).unwrap();
    g.bench_function("join_leader_complete_pair", |b| {
        b.iter(|| {
            let Join::Leader(t) = d.join(black_box(KEY)) else {
                unreachable!()
            };
            d.complete(KEY, t, value.clone()).unwrap()
        })
    });

    // A key already in flight: follow, then give up.
    let d = RequestDeduplicator::<Arc<str>>::new(0.0, 100_000, clock::system()).unwrap();
    d.join(KEY);
    g.bench_function("join_follower_leave_pair", |b| {
        b.iter(|| {
            let Join::Follower(t) = d.join(black_box(KEY)) else {
                unreachable!()
            };
            d.leave(KEY, t).unwrap()
        })
    });

    // A completed value within the window.
    let d = RequestDeduplicator::<Arc<str>>::new(3600.0, 100_000, clock::system()).unwrap();
    let Join::Leader(t) = d.join(KEY) else {
        unreachable!()
    };
    d.complete(KEY, t, value.clone()).unwrap();
    g.bench_function("join_window_hit", |b| b.iter(|| d.join(black_box(KEY))));
    g.finish();
}
