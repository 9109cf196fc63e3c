//! Unit tests of the circuit breaker, driven by a manual clock.

use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;
use Outcome::{Failure, Ignored, Success};

fn breaker(cfg: Config) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new(1_000);
    (
        CircuitBreaker::new("dep", cfg, Arc::new(clock.clone())).unwrap(),
        clock,
    )
}

fn small() -> Config {
    Config {
        minimum_calls: 4,
        window_size: 4,
        open_duration_s: 10.0,
        ..Config::default()
    }
}

#[test]
fn trips_only_after_minimum_calls() {
    let (b, _) = breaker(small());
    for _ in 0..3 {
        b.record(Failure, 0.0).unwrap();
        assert_eq!(b.state(), State::Closed);
    }
    b.record(Success, 0.0).unwrap();
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.stats().failure_rate, 0.75);
    assert!(!b.try_acquire());
    let e = b.acquire().unwrap_err();
    assert_eq!(
        e,
        Error::CircuitOpen {
            name: "dep".into(),
            retry_after_s: 10.0
        }
    );
}

#[test]
fn sliding_window_forgets_old_calls() {
    let (b, _) = breaker(small());
    b.record(Failure, 0.0).unwrap();
    for _ in 0..5 {
        b.record(Success, 0.0).unwrap();
    }
    let s = b.stats();
    assert_eq!((s.calls, s.failures, s.failure_rate), (4, 0, 0.0));
    b.record(Failure, 0.0).unwrap();
    assert_eq!(b.state(), State::Closed); // 1/4
    b.record(Failure, 0.0).unwrap();
    assert_eq!(b.state(), State::Open); // 2/4 >= 0.5
}

#[test]
fn slow_calls_trip() {
    let (b, _) = breaker(Config {
        slow_call_duration_s: Some(1.0),
        slow_call_rate_threshold: 0.5,
        ..small()
    });
    b.record(Success, 1.0).unwrap(); // not slower than 1 s
    b.record(Success, 0.5).unwrap();
    b.record(Success, 2.0).unwrap();
    assert_eq!(b.stats().slow_calls, 1);
    b.record(Success, 3.0).unwrap();
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.stats().slow_call_rate, 0.5);
}

#[test]
fn half_open_probes_and_closes() {
    let (b, clock) = breaker(Config {
        half_open_max_calls: 2,
        ..small()
    });
    for _ in 0..4 {
        b.record(Failure, 0.0).unwrap();
    }
    clock.advance_secs(9.9);
    assert_eq!(b.state(), State::Open);
    assert!((b.retry_after_s() - 0.1).abs() < 1e-6);
    clock.advance_secs(0.1);
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.retry_after_s(), 0.0);
    assert!(b.try_acquire());
    assert!(b.try_acquire());
    assert!(!b.try_acquire());
    assert_eq!(b.probes_in_flight(), 2);
    b.record(Success, 0.0).unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    b.record(Success, 0.0).unwrap();
    assert_eq!(b.state(), State::Closed);
    let s = b.stats();
    assert_eq!((s.calls, s.trips), (0, 0));
    assert_eq!(b.transitions(), [1, 1, 1, 0]);
}

#[test]
fn failed_probe_reopens_with_backoff() {
    let (b, clock) = breaker(Config {
        open_backoff_multiplier: 2.0,
        max_open_duration_s: 30.0,
        ..small()
    });
    for _ in 0..4 {
        b.record(Failure, 0.0).unwrap();
    }
    let mut expected = [10.0, 20.0, 30.0, 30.0].into_iter();
    for trip in 1..=4u32 {
        let wait = expected.next().unwrap();
        assert_eq!(b.stats().trips, trip);
        assert!((b.retry_after_s() - wait).abs() < 1e-6, "trip {trip}");
        clock.advance_secs(wait);
        assert!(b.try_acquire());
        b.record(Failure, 0.0).unwrap();
        assert_eq!(b.state(), State::Open);
    }
    assert_eq!(b.transitions(), [1, 4, 0, 4]);
}

#[test]
fn ignored_probe_gives_permit_back() {
    let (b, clock) = breaker(small());
    for _ in 0..4 {
        b.record(Failure, 0.0).unwrap();
    }
    clock.advance_secs(10.0);
    assert!(b.try_acquire());
    assert!(!b.try_acquire());
    b.record(Ignored, 0.0).unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    assert!(b.try_acquire());
    b.record(Success, 0.0).unwrap(); // the second probe succeeds
    assert_eq!(b.state(), State::Closed);
    b.record(Ignored, 0.0).unwrap(); // not counted while closed
    assert_eq!(b.stats().calls, 0);
}

#[test]
fn late_outcomes_while_open_or_half_open_are_dropped() {
    let (b, clock) = breaker(small());
    for _ in 0..4 {
        b.record(Failure, 0.0).unwrap();
    }
    b.record(Success, 0.0).unwrap(); // open: dropped
    clock.advance_secs(10.0);
    b.record(Success, 0.0).unwrap(); // half-open, no probe out: dropped
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.stats().failures, 4);
}

#[test]
fn zero_threshold_means_any_failure() {
    let (b, _) = breaker(Config {
        failure_rate_threshold: 0.0,
        ..small()
    });
    for _ in 0..10 {
        b.record(Success, 0.0).unwrap();
    }
    assert_eq!(b.state(), State::Closed);
    b.record(Failure, 0.0).unwrap();
    assert_eq!(b.state(), State::Open);
}

#[test]
fn minimum_calls_above_window_judges_a_full_window() {
    let (b, _) = breaker(Config {
        minimum_calls: 50,
        window_size: 3,
        ..Config::default()
    });
    b.record(Failure, 0.0).unwrap();
    b.record(Failure, 0.0).unwrap();
    assert_eq!(b.state(), State::Closed);
    b.record(Failure, 0.0).unwrap();
    assert_eq!(b.state(), State::Open);
}

#[test]
fn reset_closes() {
    let (b, _) = breaker(small());
    for _ in 0..4 {
        b.record(Failure, 0.0).unwrap();
    }
    b.reset();
    assert_eq!(b.state(), State::Closed);
    assert!(b.try_acquire());
    assert_eq!(b.stats().calls, 0);
}

#[test]
fn bad_input_is_named() {
    let bad = |cfg: Config, needle: &str| {
        let e = CircuitBreaker::new("x", cfg, crate::clock::system()).unwrap_err();
        assert!(e.to_string().contains(needle), "{e} lacks {needle}");
    };
    let d = Config::default;
    bad(
        Config {
            failure_rate_threshold: 1.5,
            ..d()
        },
        "failure_rate_threshold=1.5",
    );
    bad(
        Config {
            slow_call_rate_threshold: -0.1,
            ..d()
        },
        "slow_call_rate_threshold=-0.1",
    );
    bad(
        Config {
            slow_call_duration_s: Some(0.0),
            ..d()
        },
        "slow_call_duration_s=0",
    );
    bad(
        Config {
            minimum_calls: 0,
            ..d()
        },
        "minimum_calls=0",
    );
    bad(
        Config {
            window_size: 0,
            ..d()
        },
        "window_size=0",
    );
    bad(
        Config {
            open_duration_s: f64::INFINITY,
            ..d()
        },
        "open_duration_s=inf",
    );
    bad(
        Config {
            open_backoff_multiplier: 0.5,
            ..d()
        },
        "open_backoff_multiplier=0.5",
    );
    bad(
        Config {
            max_open_duration_s: 1.0,
            ..d()
        },
        "max_open_duration_s=1",
    );
    bad(
        Config {
            half_open_max_calls: 0,
            ..d()
        },
        "half_open_max_calls=0",
    );
    let e = Outcome::parse("boom").unwrap_err();
    assert!(e.to_string().contains("outcome=\"boom\""), "{e}");
    let (b, _) = breaker(small());
    let e = b.record(Success, -1.0).unwrap_err();
    assert!(e.to_string().contains("duration_s=-1"), "{e}");
    assert_eq!(b.name(), "dep");
}
