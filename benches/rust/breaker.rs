//! Criterion benches of the circuit breaker's hot operations (real clock).

use criterion::Criterion;

use _core::breaker::{CircuitBreaker, Config, Outcome};
use _core::clock;

/// Every breaker bench.
pub fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker");
    let b = CircuitBreaker::new("dep", Config::default(), clock::system()).unwrap();
    g.bench_function("try_acquire_closed", |bn| bn.iter(|| b.try_acquire()));
    g.bench_function("record_success", |bn| {
        bn.iter(|| b.record(Outcome::Success, 0.01))
    });
    g.bench_function("acquire_and_record", |bn| {
        bn.iter(|| {
            b.try_acquire();
            b.record(Outcome::Success, 0.01)
        })
    });
    g.bench_function("state", |bn| bn.iter(|| b.state()));
    let open = CircuitBreaker::new(
        "dep",
        Config {
            minimum_calls: 1,
            open_duration_s: 1e6,
            max_open_duration_s: 1e6,
            ..Config::default()
        },
        clock::system(),
    )
    .unwrap();
    open.record(Outcome::Failure, 0.0).unwrap();
    g.bench_function("try_acquire_open", |bn| bn.iter(|| open.try_acquire()));
    g.finish();
}
