//! Property tests of the circuit breaker's state machine.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    /// Record the outcome of a held permit (or a stray one if none is held).
    Record(u8, bool),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Acquire),
        4 => (0u8..3, any::<bool>()).prop_map(|(o, slow)| Op::Record(o, slow)),
        1 => (0u64..20_000_000_000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn state_machine_invariants(
        failure_rate_threshold in 0.0f64..=1.0,
        slow_call_rate_threshold in 0.0f64..=1.0,
        minimum_calls in 1usize..12,
        window_size in 1usize..12,
        half_open_max_calls in 1usize..4,
        multiplier in 1.0f64..3.0,
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let cfg = Config {
            failure_rate_threshold,
            slow_call_rate_threshold,
            slow_call_duration_s: Some(1.0),
            minimum_calls,
            window_size,
            open_duration_s: 5.0,
            open_backoff_multiplier: multiplier,
            max_open_duration_s: 60.0,
            half_open_max_calls,
        };
        let clock = ManualClock::new(0);
        let b = CircuitBreaker::new("p", cfg, Arc::new(clock.clone())).unwrap();
        let judged = minimum_calls.min(window_size);
        let mut held = 0usize;
        let mut counted_while_closed = 0usize;
        for op in ops {
            let before = b.state();
            let trips_before = b.transitions()[Transition::ClosedToOpen as usize];
            match op {
                Op::Acquire => held += usize::from(b.try_acquire()),
                Op::Record(o, slow) => {
                    let outcome = [Outcome::Success, Outcome::Failure, Outcome::Ignored][o as usize];
                    held = held.saturating_sub(1);
                    b.record(outcome, if slow { 2.0 } else { 0.0 }).unwrap();
                    if before == State::Closed && outcome != Outcome::Ignored {
                        counted_while_closed += 1;
                    }
                }
                Op::Advance(ns) => clock.advance_ns(ns),
            }
            let t = b.transitions();
            if t[Transition::ClosedToOpen as usize] > trips_before {
                prop_assert!(counted_while_closed >= judged, "tripped after {} calls", counted_while_closed);
            }
            let state = b.state();
            if before != State::Closed && state == State::Closed {
                counted_while_closed = 0;
            }
            prop_assert!(b.probes_in_flight() <= half_open_max_calls);
            let s = b.stats();
            prop_assert!((0.0..=1.0).contains(&s.failure_rate));
            prop_assert!((0.0..=1.0).contains(&s.slow_call_rate));
            prop_assert!(s.calls <= window_size);
            // Entries minus exits of each state match where the breaker is.
            let [co, oh, hc, ho] = t.map(|n| n as i64);
            prop_assert_eq!(1 + hc - co, i64::from(state == State::Closed));
            prop_assert_eq!(co + ho - oh, i64::from(state == State::Open));
            prop_assert_eq!(oh - hc - ho, i64::from(state == State::HalfOpen));
            prop_assert_eq!(s.retry_after_s > 0.0, state == State::Open);
        }
    }
}
