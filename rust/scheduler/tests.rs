//! Unit tests of the scheduler, driven by a manual clock.

use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;

fn sched(cfg: SchedulerConfig) -> (PriorityScheduler, ManualClock) {
    let clock = ManualClock::new(0);
    let s = PriorityScheduler::new(cfg, Arc::new(clock.clone())).unwrap();
    (s, clock)
}

fn fixed(slots: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_concurrency: slots,
        adaptive: false,
        ..SchedulerConfig::default()
    }
}

#[test]
fn grants_at_once_until_full_then_queues() {
    let (s, _) = sched(fixed(2));
    assert_eq!(s.acquire(5).unwrap(), (1, true));
    assert_eq!(s.acquire(5).unwrap(), (2, true));
    assert_eq!(s.acquire(5).unwrap(), (3, false));
    assert_eq!((s.in_flight(), s.queued()), (2, 1));
    assert_eq!(s.release(1, Outcome::Success, 0.0).unwrap(), vec![3]);
    assert_eq!((s.in_flight(), s.queued()), (2, 0));
}

#[test]
fn priority_order_under_concurrency_one() {
    let (s, _) = sched(fixed(1));
    let (first, granted) = s.acquire(9).unwrap();
    assert!(granted);
    let order = [7u8, 3, 9, 0, 5, 1];
    let tickets: Vec<u64> = order.iter().map(|&p| s.acquire(p).unwrap().0).collect();
    let mut running = first;
    let mut served = Vec::new();
    for _ in 0..order.len() {
        let next = s.release(running, Outcome::Success, 0.0).unwrap();
        assert_eq!(next.len(), 1);
        running = next[0];
        let idx = tickets.iter().position(|&t| t == running).unwrap();
        served.push(order[idx]);
    }
    assert_eq!(served, vec![0, 1, 3, 5, 7, 9]);
}

#[test]
fn fifo_within_a_priority() {
    let (s, _) = sched(fixed(1));
    let (first, _) = s.acquire(4).unwrap();
    let tickets: Vec<u64> = (0..5).map(|_| s.acquire(4).unwrap().0).collect();
    let mut running = first;
    for &t in &tickets {
        assert_eq!(s.release(running, Outcome::Success, 0.0).unwrap(), vec![t]);
        running = t;
    }
}

#[test]
fn aging_lets_low_priority_overtake_a_stream_of_high() {
    let cfg = SchedulerConfig {
        aging_s: 1.0,
        ..fixed(1)
    };
    let (s, clock) = sched(cfg);
    let (mut running, _) = s.acquire(0).unwrap();
    let (low, _) = s.acquire(9).unwrap();
    let mut served_at = None;
    for step in 0..50 {
        s.acquire(0).unwrap();
        clock.advance_secs(0.5);
        running = s.release(running, Outcome::Success, 0.0).unwrap()[0];
        if running == low {
            served_at = Some(step);
            break;
        }
    }
    // Nine levels at two steps per second of waiting: served around step 18.
    let step = served_at.expect("priority 9 never served");
    assert!((15..=20).contains(&step), "served at step {step}");
}

#[test]
fn queue_full_rejects_at_once_and_zero_means_never_queue() {
    let cfg = SchedulerConfig {
        max_queue: 1,
        ..fixed(1)
    };
    let (s, _) = sched(cfg);
    s.acquire(0).unwrap();
    s.acquire(0).unwrap();
    assert_eq!(s.acquire(0), Err(Error::QueueFull { capacity: 1 }));
    assert_eq!(s.stats().rejected_total, 1);

    let (s0, _) = sched(SchedulerConfig {
        max_queue: 0,
        ..fixed(1)
    });
    assert!(s0.acquire(3).unwrap().1);
    assert_eq!(s0.acquire(3), Err(Error::QueueFull { capacity: 0 }));
}

#[test]
fn bad_priority_outcome_ticket_and_latency() {
    let (s, _) = sched(fixed(1));
    assert!(s
        .acquire(10)
        .unwrap_err()
        .to_string()
        .contains("priority=10"));
    let (t, _) = s.acquire(0).unwrap();
    let (q, _) = s.acquire(0).unwrap();
    assert!(s
        .release(999, Outcome::Success, 0.0)
        .unwrap_err()
        .to_string()
        .contains("999"));
    assert!(
        s.release(q, Outcome::Success, 0.0).is_err(),
        "queued is not running"
    );
    let e = s.release(t, Outcome::Success, f64::NAN).unwrap_err();
    assert!(e.to_string().contains("latency_s"));
    assert!(Outcome::parse("bogus")
        .unwrap_err()
        .to_string()
        .contains("outcome"));
    // The failed calls changed nothing.
    assert_eq!((s.in_flight(), s.queued()), (1, 1));
}

#[test]
fn cancel_queued_running_and_unknown() {
    let (s, _) = sched(fixed(1));
    let (a, _) = s.acquire(0).unwrap();
    let (b, _) = s.acquire(0).unwrap();
    let (c, _) = s.acquire(0).unwrap();
    assert_eq!(s.cancel(b), Vec::<u64>::new());
    assert_eq!(s.cancel(b), Vec::<u64>::new(), "idempotent");
    assert_eq!(
        s.cancel(a),
        vec![c],
        "cancelling a running ticket frees its slot"
    );
    assert_eq!(s.cancel(12345), Vec::<u64>::new());
    assert_eq!(s.cancel(c), Vec::<u64>::new());
    assert_eq!((s.in_flight(), s.queued()), (0, 0));
    assert_eq!(s.stats().cancelled_total, 3);
}

#[test]
fn aimd_decrease_once_per_window_and_clamp() {
    let cfg = SchedulerConfig {
        max_concurrency: 16,
        min_concurrency: 2,
        ..SchedulerConfig::default()
    };
    let (s, _) = sched(cfg);
    let tickets: Vec<u64> = (0..4).map(|_| s.acquire(0).unwrap().0).collect();
    s.release(tickets[0], Outcome::Overload, 0.0).unwrap();
    assert_eq!(s.limit(), 8.0);
    // Granted before that decrease: no second decrease for the same event.
    s.release(tickets[1], Outcome::Overload, 0.0).unwrap();
    assert_eq!(s.limit(), 8.0);
    let (t, _) = s.acquire(0).unwrap();
    s.release(t, Outcome::Overload, 0.0).unwrap();
    assert_eq!(s.limit(), 4.0);
    s.release(tickets[2], Outcome::Error, 0.0).unwrap();
    s.release(tickets[3], Outcome::Ignored, 0.0).unwrap();
    assert_eq!(s.limit(), 4.0, "error and ignored leave the limit alone");
    for _ in 0..3 {
        let (t, _) = s.acquire(0).unwrap();
        s.release(t, Outcome::Overload, 0.0).unwrap();
    }
    assert_eq!(s.limit(), 2.0, "clamped to min_concurrency");
    let st = s.stats();
    assert_eq!((st.overloads, st.decreases), (6, 3));
}

#[test]
fn aimd_increase_only_when_busy_and_clamped() {
    let cfg = SchedulerConfig {
        max_concurrency: 5,
        initial_concurrency: Some(4),
        ..SchedulerConfig::default()
    };
    let (s, _) = sched(cfg);
    // One in flight of limit 4: not busy enough, no increase.
    let (t, _) = s.acquire(0).unwrap();
    s.release(t, Outcome::Success, 0.1).unwrap();
    assert_eq!(s.limit(), 4.0);
    // Two in flight (>= 4/2): each success adds 1/limit.
    let a = s.acquire(0).unwrap().0;
    let b = s.acquire(0).unwrap().0;
    s.release(a, Outcome::Success, 0.1).unwrap();
    assert_eq!(s.limit(), 4.25);
    s.release(b, Outcome::Success, 0.1).unwrap();
    assert_eq!(s.limit(), 4.25, "b ran with in_flight 1 < limit/2");
    let held: Vec<u64> = (0..3).map(|_| s.acquire(0).unwrap().0).collect();
    for _ in 0..20 {
        let (x, now) = s.acquire(0).unwrap();
        assert!(now);
        s.release(x, Outcome::Success, 0.1).unwrap();
    }
    assert_eq!(s.limit(), 5.0, "clamped to max_concurrency");
    assert_eq!(s.stats().increases, 1 + 4);
    for t in held {
        s.release(t, Outcome::Success, 0.1).unwrap();
    }
    assert!((s.stats().latency_ewma_s - 0.1).abs() < 1e-9);
}

#[test]
fn rising_limit_grants_queued_in_order() {
    let cfg = SchedulerConfig {
        max_concurrency: 8,
        initial_concurrency: Some(1),
        ..SchedulerConfig::default()
    };
    let (s, clock) = sched(cfg);
    s.acquire(0).unwrap();
    let q: Vec<u64> = [2u8, 1, 2]
        .iter()
        .map(|&p| s.acquire(p).unwrap().0)
        .collect();
    clock.advance_secs(0.25);
    assert_eq!(s.set_limit(3.7).unwrap(), vec![q[1], q[0]]);
    assert_eq!(s.limit(), 3.7);
    assert_eq!(s.queue_wait_s(q[0]), 0.25);
    assert_eq!(s.set_limit(100.0).unwrap(), vec![q[2]]);
    assert_eq!(s.limit(), 8.0);
    assert!(s.set_limit(0.0).is_err());
    assert!(s
        .set_limit(f64::NAN)
        .unwrap_err()
        .to_string()
        .contains("limit=NaN"));
    assert_eq!(s.set_limit(0.2).unwrap(), Vec::<u64>::new());
    assert_eq!(s.limit(), 1.0, "clamped to min_concurrency");
    assert_eq!(s.stats().max_wait_s, 0.25);
}

#[test]
fn non_adaptive_ignores_outcomes() {
    let (s, _) = sched(fixed(4));
    let (t, _) = s.acquire(0).unwrap();
    s.release(t, Outcome::Overload, 0.0).unwrap();
    assert_eq!(s.limit(), 4.0);
}

#[test]
fn config_errors_name_param_and_value() {
    let bad = [
        (
            SchedulerConfig {
                max_concurrency: 0,
                ..Default::default()
            },
            "max_concurrency=0",
        ),
        (
            SchedulerConfig {
                min_concurrency: 65,
                ..Default::default()
            },
            "min_concurrency=65",
        ),
        (
            SchedulerConfig {
                min_concurrency: 0,
                ..Default::default()
            },
            "min_concurrency=0",
        ),
        (
            SchedulerConfig {
                initial_concurrency: Some(65),
                ..Default::default()
            },
            "initial_concurrency=65",
        ),
        (
            SchedulerConfig {
                aging_s: 0.0,
                ..Default::default()
            },
            "aging_s=0",
        ),
        (
            SchedulerConfig {
                aging_s: f64::INFINITY,
                ..Default::default()
            },
            "aging_s=inf",
        ),
        (
            SchedulerConfig {
                decrease_factor: 1.0,
                ..Default::default()
            },
            "decrease_factor=1",
        ),
        (
            SchedulerConfig {
                decrease_factor: f64::NAN,
                ..Default::default()
            },
            "decrease_factor=NaN",
        ),
        (
            SchedulerConfig {
                increase_step: -1.0,
                ..Default::default()
            },
            "increase_step=-1",
        ),
    ];
    for (cfg, needle) in bad {
        let e = PriorityScheduler::new(cfg, crate::clock::system()).unwrap_err();
        assert!(e.to_string().contains(needle), "{e} lacks {needle}");
    }
}

#[test]
fn tombstones_stay_bounded() {
    let (s, _) = sched(fixed(1));
    let (_held, _) = s.acquire(0).unwrap();
    let (keep, _) = s.acquire(3).unwrap();
    for _ in 0..10_000 {
        let (t, _) = s.acquire(3).unwrap();
        s.cancel(t);
    }
    let st = s.state.lock();
    assert!(
        st.queues[3].len() <= 2 * st.live[3] + 33,
        "len {}",
        st.queues[3].len()
    );
    assert_eq!(st.queues[3].front().unwrap().0, keep);
}
