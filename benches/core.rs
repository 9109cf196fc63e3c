//! Criterion benchmarks of every core operation, grouped in one entry.

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "rust/http.rs"]
mod http;

use _core::clock::{Clock, ManualClock, SystemClock};

fn clocks(c: &mut Criterion) {
    let mut g = c.benchmark_group("clock");
    g.bench_function("system_now", |b| b.iter(|| SystemClock.now_ns()));
    let m = ManualClock::new(0);
    g.bench_function("manual_now", |b| b.iter(|| m.now_ns()));
    g.finish();
}

criterion_group!(benches, clocks, http::benches);
criterion_main!(benches);
