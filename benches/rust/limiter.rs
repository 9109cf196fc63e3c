//! Criterion benches of the rate limiter's hot operations (real clock).

use std::hint::black_box;

use criterion::Criterion;

use _core::clock;
use _core::limiter::RateLimiter;

/// Every limiter bench.
pub fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("limiter");
    let lim = RateLimiter::new(600.0, clock::system()).unwrap();
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("deployment-{i}/model:rpm"))
        .collect();
    for k in &keys {
        lim.configure(k, 1e12, 1e12).unwrap();
    }
    let key = keys[42].as_str();
    g.bench_function("try_acquire_admit", |b| {
        b.iter(|| lim.try_acquire(black_box(key), 1.0))
    });
    g.bench_function("reserve", |b| b.iter(|| lim.reserve(black_box(key), 1.0)));
    g.bench_function("refund", |b| b.iter(|| lim.refund(black_box(key), 1.0)));
    g.bench_function("available", |b| b.iter(|| lim.available(black_box(key))));
    let mut i = 0usize;
    g.bench_function("try_acquire_10k_keys", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            lim.try_acquire(&keys[i], 1.0)
        })
    });
    let tight = RateLimiter::new(600.0, clock::system()).unwrap();
    tight.configure(key, 1e-3, 1.0).unwrap();
    tight.try_acquire(key, 1.0).unwrap();
    g.bench_function("try_acquire_refuse", |b| {
        b.iter(|| tight.try_acquire(black_box(key), 1.0))
    });
    let manual = RateLimiter::new(600.0, std::sync::Arc::new(clock::ManualClock::new(0))).unwrap();
    manual.configure(key, 1e12, 1e12).unwrap();
    g.bench_function("try_acquire_manual_clock", |b| {
        b.iter(|| manual.try_acquire(black_box(key), 0.0))
    });
    g.bench_function("unconfigured", |b| {
        b.iter(|| lim.try_acquire(black_box("nope"), 1.0))
    });
    let many = [
        (keys[1].as_str(), 1.0),
        (keys[2].as_str(), 300.0),
        (keys[3].as_str(), 0.0),
    ];
    g.bench_function("reserve_many_3", |b| {
        b.iter(|| lim.reserve_many(black_box(many)))
    });
    g.finish();
}
