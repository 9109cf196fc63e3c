//! Criterion benchmarks of every core operation, grouped in one entry.

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "rust/http.rs"]
mod http;

use _core::clock::{Clock, ManualClock, SystemClock};

#[path = "rust/breaker.rs"]
mod breaker;
#[path = "rust/cache.rs"]
mod cache;
#[path = "rust/dedup.rs"]
mod dedup;
#[path = "rust/limiter.rs"]
mod limiter;
#[path = "rust/metrics.rs"]
mod metrics;
#[path = "rust/scheduler.rs"]
mod scheduler;

fn clocks(c: &mut Criterion) {
    let mut g = c.benchmark_group("clock");
    g.bench_function("system_now", |b| b.iter(|| SystemClock.now_ns()));
    let m = ManualClock::new(0);
    g.bench_function("manual_now", |b| b.iter(|| m.now_ns()));
    g.finish();
}

criterion_group!(
    benches,
    clocks,
    limiter::benches,
    breaker::benches,
    metrics::benches,
    scheduler::benches,
    dedup::benches,
    cache::benches,
    http::benches
);
criterion_main!(benches);
