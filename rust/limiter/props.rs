//! Property tests of the rate limiter: never over-admits, FIFO bookings,
//! give-backs never exceed the burst.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::clock::{Clock, ManualClock};

const K: &str = "k";

#[derive(Debug, Clone)]
enum Op {
    Try(f64),
    Reserve(f64),
    Refund(f64),
    Reconcile(f64, f64),
    Headers(f64, f64),
}

fn setup(rate: f64, burst: f64) -> (RateLimiter, ManualClock) {
    let clock = ManualClock::new(5_000_000_000);
    let lim = RateLimiter::new(600.0, Arc::new(clock.clone())).unwrap();
    lim.configure(K, rate, burst).unwrap();
    (lim, clock)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Over any interval [a, b], admitted cost <= burst + rate * (b - a).
    #[test]
    fn never_admits_more_than_burst_plus_rate(
        rate in 0.5f64..50.0,
        burst in 1.0f64..20.0,
        steps in prop::collection::vec((0u64..400_000_000, any::<bool>(), 0.0f64..1.0), 1..60),
    ) {
        let (lim, clock) = setup(rate, burst);
        let mut events: Vec<(f64, f64)> = Vec::new(); // (go time in s, cost)
        let mut last_go = 0.0f64;
        for (dt, reserve, frac) in steps {
            clock.advance_ns(dt);
            let cost = frac * burst;
            let now = clock.now_ns() as f64 / 1e9;
            let go = if reserve {
                Some(now + lim.reserve(K, cost).unwrap())
            } else {
                (lim.try_acquire(K, cost).unwrap() == 0.0).then_some(now)
            };
            if let Some(go) = go {
                prop_assert!(go >= last_go - 1e-9, "go times out of booking order");
                last_go = go;
                events.push((go, cost));
            }
        }
        for i in 0..events.len() {
            let mut sum = 0.0;
            for j in i..events.len() {
                sum += events[j].1;
                let span = events[j].0 - events[i].0;
                prop_assert!(
                    sum <= burst + rate * span + 1e-6 * (1.0 + sum),
                    "admitted {} in {}s (rate {}, burst {})", sum, span, rate, burst
                );
            }
        }
    }

    /// Reservations on one key at one instant have non-decreasing delays.
    #[test]
    fn reservations_at_one_instant_are_fifo(
        rate in 0.1f64..100.0,
        burst in 1.0f64..10.0,
        pre in 0.0f64..30.0,
        costs in prop::collection::vec(0.0f64..25.0, 1..40),
    ) {
        let (lim, _) = setup(rate, burst);
        lim.reserve(K, pre).unwrap();
        let mut last = 0.0;
        for c in costs {
            let d = lim.reserve(K, c).unwrap();
            prop_assert!(d >= last, "delay {} after {}", d, last);
            last = d;
        }
    }

    /// Whatever happens, capacity never exceeds the burst.
    #[test]
    fn capacity_never_exceeds_burst(
        rate in 0.1f64..100.0,
        burst in 1.0f64..50.0,
        ops in prop::collection::vec((0u64..3_000_000_000, prop_oneof![
            (0.0f64..60.0).prop_map(Op::Try),
            (0.0f64..60.0).prop_map(Op::Reserve),
            (0.0f64..1e3).prop_map(Op::Refund),
            (0.0f64..60.0, 0.0f64..60.0).prop_map(|(e, a)| Op::Reconcile(e, a)),
            (0.0f64..60.0, 0.0f64..60.0).prop_map(|(r, s)| Op::Headers(r, s)),
        ]), 1..60),
    ) {
        let (lim, clock) = setup(rate, burst);
        for (dt, op) in ops {
            clock.advance_ns(dt);
            let before = lim.available(K);
            match op {
                Op::Try(c) => { let _ = lim.try_acquire(K, c); }
                Op::Reserve(c) => { lim.reserve(K, c).unwrap(); }
                Op::Refund(c) => lim.refund(K, c).unwrap(),
                Op::Reconcile(e, a) => lim.reconcile(K, e, a).unwrap(),
                Op::Headers(r, s) => {
                    lim.observe_headers(K, r, None, s).unwrap();
                    prop_assert!(lim.available(K) <= before + 1e-9, "headers loosened the cell");
                }
            }
            let avail = lim.available(K);
            prop_assert!((0.0..=burst + 1e-9).contains(&avail), "available {} > burst {}", avail, burst);
            prop_assert!(clock.now_ns() > 0);
        }
    }
}
