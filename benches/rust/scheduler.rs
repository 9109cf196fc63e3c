//! Criterion benchmarks of the priority scheduler's hot operations.

use std::hint::black_box;

use criterion::Criterion;

use _core::clock;
use _core::scheduler::{Outcome, PriorityScheduler, SchedulerConfig};

fn sched(max_concurrency: usize, adaptive: bool) -> PriorityScheduler {
    let cfg = SchedulerConfig {
        max_concurrency,
        adaptive,
        ..SchedulerConfig::default()
    };
    PriorityScheduler::new(cfg, clock::system()).unwrap()
}

/// Every scheduler benchmark (the `scheduler` group).
pub fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("scheduler");

    // The common case: a free slot, granted at once, then released.
    let s = sched(64, true);
    g.bench_function("acquire_release_granted_pair", |b| {
        b.iter(|| {
            let (t, now) = s.acquire(black_box(2)).unwrap();
            debug_assert!(now);
            s.release(t, Outcome::Success, 0.01).unwrap()
        })
    });

    // Saturated: each acquire queues, each release hands the slot over.
    let s = sched(1, false);
    let mut running = s.acquire(0).unwrap().0;
    g.bench_function("queue_then_handover_pair", |b| {
        b.iter(|| {
            s.acquire(black_box(3)).unwrap();
            running = s.release(running, Outcome::Success, 0.0).unwrap()[0];
        })
    });

    // A deep queue over all ten priorities: picking compares ten heads.
    let s = sched(1, false);
    let mut running = s.acquire(0).unwrap().0;
    for i in 0..1000u32 {
        s.acquire((i % 10) as u8).unwrap();
    }
    let mut p = 0u8;
    g.bench_function("deep_queue_handover_pair", |b| {
        b.iter(|| {
            p = (p + 7) % 10;
            s.acquire(p).unwrap();
            running = s.release(running, Outcome::Success, 0.0).unwrap()[0];
        })
    });

    // Give up while queued.
    let s = sched(1, false);
    s.acquire(0).unwrap();
    g.bench_function("acquire_queued_cancel_pair", |b| {
        b.iter(|| {
            let (t, _) = s.acquire(black_box(5)).unwrap();
            s.cancel(t)
        })
    });
    g.finish();
}
