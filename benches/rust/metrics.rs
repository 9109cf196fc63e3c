//! Criterion benchmarks of `Metrics`: the per-request updates on an existing
//! series, single-threaded, plus a snapshot.

use criterion::Criterion;
use std::hint::black_box;

use _core::metrics::Metrics;

const P: &str = "openai";
const M: &str = "gpt-4o-mini";
const D: &str = "default";

/// Register the metrics benchmarks.
pub fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    let m = Metrics::new();
    m.incr(P, M, D, "requests", 1);
    m.observe(P, M, D, "latency", 0.1).unwrap();
    m.set_gauge(P, M, D, "in_flight", 0.0).unwrap();
    // Other series, so lookups are not in a one-entry table.
    for i in 0..50 {
        m.incr(P, &format!("model-{i}"), D, "requests", 1);
    }
    g.bench_function("incr", |b| {
        b.iter(|| m.incr(black_box(P), black_box(M), black_box(D), "requests", 1))
    });
    g.bench_function("observe", |b| {
        b.iter(|| m.observe(black_box(P), black_box(M), black_box(D), "latency", 0.123))
    });
    g.bench_function("set_gauge", |b| {
        b.iter(|| m.set_gauge(black_box(P), black_box(M), black_box(D), "in_flight", 2.0))
    });
    g.bench_function("counter", |b| {
        b.iter(|| m.counter(black_box(P), black_box(M), black_box(D), "requests"))
    });
    let counters = [
        ("requests", 1),
        ("successes", 1),
        ("tokens_in", 120),
        ("tokens_out", 300),
    ];
    let observations = [("latency", 0.8), ("ttft", 0.2), ("queue_wait", 0.001)];
    g.bench_function("record_4c_3h", |b| {
        b.iter(|| m.record(black_box(P), M, D, &counters, &observations))
    });
    g.bench_function("snapshot_51_series", |b| b.iter(|| m.snapshot()));
    g.finish();
}
