//! Unit tests of the gate, driven by a manual clock.

use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;

fn gate_with(cfg: GateConfig) -> (Gate, ManualClock) {
    let clock = ManualClock::new(0);
    let shared: crate::clock::SharedClock = Arc::new(clock.clone());
    let limiter = Arc::new(RateLimiter::new(f64::INFINITY, shared.clone()).unwrap());
    (Gate::new("dep", cfg, limiter, shared).unwrap(), clock)
}

fn slots(n: usize, max_queue: usize) -> GateConfig {
    GateConfig {
        scheduler: SchedulerConfig {
            max_concurrency: n,
            max_queue,
            adaptive: false,
            ..SchedulerConfig::default()
        },
        breaker: breaker::Config {
            minimum_calls: 2,
            window_size: 2,
            open_duration_s: 10.0,
            ..breaker::Config::default()
        },
        ..GateConfig::default()
    }
}

fn admit(g: &Gate) -> Result<Admission> {
    g.admit(5, 10.0, 5.0, 100.0, 100.0, true)
}

fn permit_id(a: Admission) -> u64 {
    match a {
        Admission::Permit(id) => id,
        other => panic!("expected a permit, got {other:?}"),
    }
}

fn wait_id(a: Admission) -> (u64, f64) {
    match a {
        Admission::Wait { id, delay_s } => (id, delay_s),
        other => panic!("expected a wait, got {other:?}"),
    }
}

fn assert_clean(g: &Gate) {
    g.check().unwrap();
    let s = g.stats();
    assert_eq!((s.entries, s.outstanding), (0, 0), "{s:?}");
    let sched = g.scheduler().stats();
    assert_eq!((sched.in_flight, sched.queued), (0, 0));
}

#[test]
fn outcome_codes_round_trip_and_map_to_breaker_and_aimd() {
    for (i, o) in Outcome::ALL.iter().enumerate() {
        assert_eq!(Outcome::from_code(i as i64).unwrap(), *o);
        assert_eq!(*o as usize, i);
    }
    assert!(Outcome::from_code(7).is_err() && Outcome::from_code(-1).is_err());
    use breaker::Outcome as B;
    use scheduler::Outcome as S;
    let table = [
        (Outcome::Success, S::Success, B::Success),
        (Outcome::Throttled, S::Overload, B::Ignored),
        (Outcome::Overload, S::Overload, B::Failure),
        (Outcome::Failure, S::Error, B::Failure),
        (Outcome::Error, S::Error, B::Ignored),
        (Outcome::Ignored, S::Ignored, B::Ignored),
        (Outcome::Deadline, S::Ignored, B::Ignored),
    ];
    for (o, s, b) in table {
        assert_eq!((o.scheduler(), o.breaker()), (s, b), "{o:?}");
    }
}

#[test]
fn permit_at_once_then_settle() {
    let (g, _) = gate_with(slots(2, 10));
    let id = permit_id(admit(&g).unwrap());
    g.check().unwrap();
    assert_eq!(g.scheduler().in_flight(), 1);
    assert_eq!(
        g.settle(id, Outcome::Success, 0.1, None).unwrap(),
        Vec::<u64>::new()
    );
    assert_clean(&g);
    assert!(
        g.settle(id, Outcome::Success, 0.1, None).is_err(),
        "settled twice"
    );
}

#[test]
fn queued_entry_is_woken_by_a_settle_and_resumes_with_a_permit() {
    let (g, _) = gate_with(slots(1, 10));
    let a = permit_id(admit(&g).unwrap());
    let (b, delay) = wait_id(admit(&g).unwrap());
    assert_eq!(delay, 0.0);
    assert_eq!(
        g.resume(b).unwrap(),
        Admission::Wait {
            id: b,
            delay_s: 0.0
        }
    );
    assert!(g.is_queued(b) && !g.is_queued(a) && !g.is_queued(99));
    assert_eq!(g.settle(a, Outcome::Success, 0.0, None).unwrap(), vec![b]);
    g.check().unwrap();
    assert!(!g.is_queued(b), "granted");
    assert_eq!(g.resume(b).unwrap(), Admission::Permit(b));
    assert!(g.resume(b).is_err(), "a permit is settled, not resumed");
    g.settle(b, Outcome::Success, 0.0, None).unwrap();
    assert_clean(&g);
}

#[test]
fn full_queue_refuses_and_refunds() {
    let (g, _) = gate_with(slots(1, 0));
    g.configure_limit("rpm", 1.0, 5.0).unwrap();
    let a = permit_id(admit(&g).unwrap());
    assert!((g.limiter_stats().1[0].1 - 4.0).abs() < 1e-9);
    let err = admit(&g).unwrap_err();
    assert!(matches!(err, Error::QueueFull { capacity: 0 }), "{err:?}");
    assert!((g.limiter_stats().1[0].1 - 4.0).abs() < 1e-9, "refunded");
    assert_eq!(g.stats().refused_queue, 1);
    g.settle(a, Outcome::Success, 0.0, None).unwrap();
    assert_clean(&g);
}

#[test]
fn limiter_delay_is_a_wait_or_a_throttled_refusal() {
    let (g, clock) = gate_with(slots(4, 10));
    let key = g.configure_limit("rpm", 1.0, 1.0).unwrap();
    assert_eq!(key, "dep:rpm");
    let a = permit_id(admit(&g).unwrap());
    // the next slot is a second away: too far for a wait of 0.5 s
    let err = g.admit(5, 0.0, 0.0, 0.5, 10.0, false).unwrap_err();
    match err {
        Error::Throttled {
            retry_after_s,
            ref detail,
            ..
        } => {
            assert!((retry_after_s - 1.0).abs() < 1e-6);
            assert!(detail.contains("too far off"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let err = g.admit(5, 0.0, 0.0, 0.5, 0.5, false).unwrap_err();
    assert!(err.to_string().contains("past the deadline"), "{err}");
    assert_eq!(g.stats().outstanding, 0);
    // within the wait: booked, sleep, then resume
    let (b, delay) = wait_id(g.admit(5, 0.0, 0.0, 2.0, 2.0, false).unwrap());
    assert!((delay - 1.0).abs() < 1e-6);
    assert_eq!(g.stats().outstanding, 1);
    clock.advance_secs(delay);
    assert_eq!(g.resume(b).unwrap(), Admission::Permit(b));
    assert_eq!(g.stats().outstanding, 0, "spent on the send");
    g.settle(a, Outcome::Success, 0.0, None).unwrap();
    g.settle(b, Outcome::Success, 0.0, None).unwrap();
    assert_clean(&g);
}

#[test]
fn open_circuit_refuses_at_admission_with_nothing_booked() {
    let (g, clock) = gate_with(slots(4, 10));
    g.configure_limit("rpm", 1.0, 10.0).unwrap();
    for _ in 0..2 {
        let id = permit_id(admit(&g).unwrap());
        g.settle(id, Outcome::Overload, 0.0, None).unwrap();
    }
    assert!(g.is_open());
    let before = g.limiter_stats().1[0].1;
    let err = admit(&g).unwrap_err();
    match err {
        Error::CircuitOpen {
            ref name,
            retry_after_s,
        } => assert!(name == "dep" && retry_after_s > 9.0),
        other => panic!("{other:?}"),
    }
    assert_eq!(g.limiter_stats().1[0].1, before);
    clock.advance_secs(10.0);
    // half open: one probe; a second caller queues behind nothing but the probe
    let probe = permit_id(admit(&g).unwrap());
    let err = admit(&g).unwrap_err();
    assert!(matches!(err, Error::CircuitOpen { .. }), "{err:?}");
    g.check().unwrap();
    g.settle(probe, Outcome::Success, 0.0, None).unwrap();
    assert!(!g.is_open());
    assert_clean(&g);
}

#[test]
fn breaker_opening_while_queued_refuses_the_woken_entry_and_refunds() {
    let (g, _) = gate_with(slots(2, 10));
    g.configure_limit("tpm", 100.0, 100.0).unwrap();
    let a = permit_id(admit(&g).unwrap());
    let b = permit_id(admit(&g).unwrap());
    let (c, _) = wait_id(admit(&g).unwrap());
    let (d, _) = wait_id(admit(&g).unwrap());
    assert_eq!(g.stats().outstanding, 2);
    // a success, then two failures: the window of two opens the breaker
    assert_eq!(g.settle(a, Outcome::Failure, 0.0, None).unwrap(), vec![c]);
    assert_eq!(g.resume(c).unwrap(), Admission::Permit(c));
    // b's failure opens it: d is granted, refused by the breaker, woken
    assert_eq!(g.settle(b, Outcome::Failure, 0.0, None).unwrap(), vec![d]);
    assert!(g.is_open());
    g.check().unwrap();
    assert_eq!(g.stats().outstanding, 0, "d's reservation went back");
    assert!(matches!(g.resume(d), Err(Error::CircuitOpen { .. })));
    assert!(g.resume(d).is_err(), "gone after the refusal");
    g.settle(c, Outcome::Ignored, 0.0, None).unwrap();
    assert_clean(&g);
    assert!((g.limiter_stats().1[0].1 - 100.0 + 45.0).abs() < 1e-6);
}

#[test]
fn deadline_cuts_touch_neither_breaker_nor_limit() {
    let mut cfg = slots(8, 10);
    cfg.scheduler.adaptive = true;
    let (g, _) = gate_with(cfg);
    for _ in 0..6 {
        let id = permit_id(admit(&g).unwrap());
        g.settle(id, Outcome::Deadline, 0.3, None).unwrap();
    }
    assert!(!g.is_open());
    assert_eq!(g.breaker().stats().calls, 0);
    assert_eq!(g.scheduler().limit(), 8.0);
    assert_eq!(g.stats().deadline_cuts, 6);
    // a 429 lowers the limit but is not a breaker failure
    let id = permit_id(admit(&g).unwrap());
    g.settle(id, Outcome::Throttled, 0.0, None).unwrap();
    assert_eq!(g.scheduler().limit(), 4.0);
    assert_eq!(g.breaker().stats().failures, 0);
    // a timeout in its own read_s does both
    let id = permit_id(admit(&g).unwrap());
    g.settle(id, Outcome::Overload, 0.0, None).unwrap();
    assert_eq!(g.breaker().stats().failures, 1);
}

#[test]
fn cancel_refunds_in_every_phase_and_is_idempotent() {
    let (g, clock) = gate_with(slots(1, 10));
    g.configure_limit("rpm", 1.0, 3.0).unwrap();
    let full = |g: &Gate| g.limiter_stats().1[0].1;
    let a = permit_id(admit(&g).unwrap());
    let (queued, _) = wait_id(admit(&g).unwrap());
    let (granted, _) = wait_id(admit(&g).unwrap());
    assert!(full(&g) < 1e-9);
    // queued: leaves the queue, refunded
    assert_eq!(g.cancel(queued), Vec::<u64>::new());
    assert!((full(&g) - 1.0).abs() < 1e-9);
    assert_eq!(g.cancel(queued), Vec::<u64>::new(), "idempotent");
    // granted while waiting, cancelled before resuming: slot freed, refunded
    assert_eq!(
        g.settle(a, Outcome::Success, 0.0, None).unwrap(),
        vec![granted]
    );
    assert_eq!(g.cancel(granted), Vec::<u64>::new());
    assert!((full(&g) - 2.0).abs() < 1e-9, "a spent, the rest back");
    g.check().unwrap();
    // delayed (sleeping on the limiter): refunded
    let _ = [admit(&g).unwrap(), admit(&g).unwrap(), admit(&g).unwrap()];
    let (delayed, delay) = wait_id(admit(&g).unwrap());
    assert!(delay > 0.0);
    g.cancel(delayed);
    assert_eq!(g.stats().outstanding, 2, "two still queued");
    for id in [4, 5, 6] {
        g.cancel(id);
    }
    assert_clean(&g);
    clock.advance_secs(3600.0);
    assert!((full(&g) - 3.0).abs() < 1e-9);
}

#[test]
fn cancel_gives_a_half_open_probe_back() {
    let (g, clock) = gate_with(slots(1, 10));
    for _ in 0..2 {
        let id = permit_id(admit(&g).unwrap());
        g.settle(id, Outcome::Failure, 0.0, None).unwrap();
    }
    clock.advance_secs(10.0);
    let probe = permit_id(admit(&g).unwrap());
    assert_eq!(g.breaker().probes_in_flight(), 1);
    g.cancel(probe);
    assert_eq!(g.breaker().probes_in_flight(), 0);
    let probe = permit_id(admit(&g).unwrap());
    g.settle(probe, Outcome::Success, 0.0, None).unwrap();
    assert!(!g.is_open());
    assert_clean(&g);
}

#[test]
fn settle_reconciles_the_token_estimate() {
    let (g, _) = gate_with(slots(4, 10));
    g.configure_limit("tpm", 1.0, 1000.0).unwrap();
    g.configure_limit("otpm", 1.0, 1000.0).unwrap();
    let id = permit_id(g.admit(0, 100.0, 50.0, 1.0, 1.0, true).unwrap());
    let avail = |g: &Gate| g.limiter_stats().1;
    assert_eq!(avail(&g)[0], ("tpm", 850.0));
    g.settle(id, Outcome::Success, 0.0, Some((120.0, 10.0)))
        .unwrap();
    let a = avail(&g);
    assert!(
        (a[0].1 - 870.0).abs() < 1e-6 && (a[1].1 - 990.0).abs() < 1e-6,
        "{a:?}"
    );
    assert!(g.settle(id, Outcome::Success, 0.0, None).is_err());
    let id = permit_id(admit(&g).unwrap());
    assert!(g
        .settle(id, Outcome::Success, 0.0, Some((-1.0, 0.0)))
        .is_err());
    assert!(g.settle(id, Outcome::Success, f64::NAN, None).is_err());
    g.settle(id, Outcome::Success, 0.0, None).unwrap();
}

#[test]
fn headers_teach_a_cell_only_with_a_limit() {
    let (g, _) = gate_with(slots(4, 10));
    assert!(!g.observe_headers("rpm", 0.0, None, 1.0).unwrap());
    assert!(g.rate_keys().is_empty());
    assert!(g.observe_headers("rpm", 1.0, Some(60.0), 30.0).unwrap());
    assert_eq!(g.rate_keys(), vec![("rpm", "dep:rpm".to_string())]);
    let (_, delay) = wait_id(g.admit(0, 0.0, 0.0, 100.0, 100.0, false).unwrap());
    assert!(delay > 1.0, "paced to one before the reset: {delay}");
    assert!(g.observe_headers("xyz", 0.0, None, 1.0).is_err());
    assert!(g.configure_limit("rpm", 0.0, 1.0).is_err());
}

#[test]
fn bad_arguments_are_typed_errors() {
    let (g, _) = gate_with(slots(4, 10));
    assert!(matches!(
        g.admit(10, 0.0, 0.0, 1.0, 1.0, false),
        Err(Error::InvalidArgument {
            what: "priority",
            ..
        })
    ));
    assert!(g.admit(0, -1.0, 0.0, 1.0, 1.0, false).is_err());
    assert!(g.admit(0, 0.0, f64::INFINITY, 1.0, 1.0, false).is_err());
    assert!(g.admit(0, 0.0, 0.0, f64::NAN, 1.0, false).is_err());
    assert!(g.resume(99).is_err());
    assert_eq!(g.cancel(99), Vec::<u64>::new());
    assert_clean(&g);
}

#[test]
fn retry_budget_deposits_per_call_and_caps() {
    let mut b = RetryBudget::new(0.5, 1.0).unwrap();
    assert!(b.try_spend() && !b.try_spend());
    b.on_call();
    assert!(!b.try_spend());
    b.on_call();
    b.on_call();
    assert_eq!(b.balance(), 1.0, "capped at max(floor, 1)");
    assert!(RetryBudget::new(-0.1, 1.0).is_err());
    assert!(RetryBudget::new(0.1, f64::NAN).is_err());
    let (g, _) = gate_with(GateConfig {
        retry_budget_ratio: 0.0,
        retry_budget_floor: 2.0,
        ..slots(1, 1)
    });
    assert!(g.try_retry() && g.try_retry() && !g.try_retry());
}

#[test]
fn after_fork_forgets_the_parents_attempts() {
    let (g, _) = gate_with(slots(1, 10));
    g.configure_limit("rpm", 1.0, 5.0).unwrap();
    let a = permit_id(admit(&g).unwrap());
    let _ = admit(&g).unwrap();
    g.after_fork().unwrap();
    assert_clean(&g);
    assert!(g.settle(a, Outcome::Success, 0.0, None).is_err());
    let b = permit_id(admit(&g).unwrap());
    g.settle(b, Outcome::Success, 0.0, None).unwrap();
    assert_eq!(g.rate_keys().len(), 1, "cells kept");
}

// ---- shared limits, with Redis absent (a closed port): the policies decide ----

fn shared_gate(policy: OnUnavailable, n: usize) -> Arc<Gate> {
    use crate::shared::SharedLimiter;
    let clock = ManualClock::new(0);
    let shared_clock: crate::clock::SharedClock = Arc::new(clock);
    let limiter = Arc::new(RateLimiter::new(f64::INFINITY, shared_clock.clone()).unwrap());
    // port 1 on loopback: refused at once, so every check goes to the fallback
    let lim = SharedLimiter::new("redis://127.0.0.1:1", "ns", policy, 0.02).unwrap();
    let g = Gate::new("dep", slots(n, 10), limiter, shared_clock)
        .unwrap()
        .with_shared(Arc::new(lim));
    g.configure_limit("rpm", 0.001, 3.0).unwrap();
    g.configure_limit("tpm", 1000.0, 10_000.0).unwrap();
    Arc::new(g)
}

fn check(g: &Arc<Gate>, id: u64) -> Result<(Admission, Source)> {
    let rt = crate::runtime::handle().unwrap();
    let g = g.clone();
    rt.block_on(async move { g.check_shared(id, 100.0, 100.0).await })
}

fn shared_id(a: Admission) -> u64 {
    match a {
        Admission::Shared(id) => id,
        other => panic!("expected a shared check, got {other:?}"),
    }
}

use crate::shared::OnUnavailable;

#[test]
fn shared_limits_keep_the_cells_off_the_local_limiter() {
    let g = shared_gate(OnUnavailable::Open, 1);
    assert_eq!(g.rate_keys().len(), 2);
    assert_eq!(g.limiter().available("dep:rpm"), f64::INFINITY);
    let (outstanding, avail) = g.limiter_stats();
    assert_eq!((outstanding, avail.len()), (0, 0));
}

#[test]
fn a_shared_check_answers_like_admit_and_settles() {
    let g = shared_gate(OnUnavailable::Open, 1);
    let id = shared_id(admit(&g).unwrap());
    assert_eq!(g.stats().outstanding, 0, "nothing booked before the answer");
    let (a, source) = check(&g, id).unwrap();
    assert_eq!((a, source), (Admission::Permit(id), Source::Open));
    // handed out through a future: booked until settle says it was sent
    assert_eq!(g.stats().outstanding, 1);
    g.settle_with(id, Outcome::Success, 0.01, Some((5.0, 5.0)), None)
        .unwrap();
    assert_clean(&g);
    let s = g.stats();
    assert_eq!(
        (s.permits, s.settled, s.shared_checks, s.shared_fallbacks),
        (1, 1, 1, 1)
    );
}

#[test]
fn closed_refuses_with_a_throttle_naming_the_policy() {
    let g = shared_gate(OnUnavailable::Closed, 1);
    let id = shared_id(admit(&g).unwrap());
    match check(&g, id) {
        Err(Error::Throttled { detail, .. }) => assert!(detail.contains("closed"), "{detail}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_clean(&g);
    assert_eq!(g.stats().refused_throttled, 1);
}

#[test]
fn local_share_admits_this_process_share_of_the_burst() {
    let g = shared_gate(OnUnavailable::LocalShare, 8);
    let mut sources = Vec::new();
    let mut permits = Vec::new();
    // burst 3 x 0.9 = 2.7: two go, the third would wait ~1000 s (rate 0.001/s)
    for _ in 0..3 {
        let id = shared_id(g.admit(5, 10.0, 5.0, 1.0, 1.0, true).unwrap());
        match check(&g, id) {
            Ok((Admission::Permit(id), s)) => {
                permits.push(id);
                sources.push(s);
            }
            Err(Error::Throttled { retry_after_s, .. }) => assert!(retry_after_s > 100.0),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(permits.len(), 2);
    assert!(sources.iter().all(|s| *s == Source::LocalShare));
    for id in permits {
        g.settle(id, Outcome::Success, 0.0, None).unwrap();
    }
    assert_clean(&g);
}

#[test]
fn cancelled_while_the_check_runs_leaves_nothing_behind() {
    let g = shared_gate(OnUnavailable::Open, 1);
    let id = shared_id(admit(&g).unwrap());
    assert_eq!(
        g.resume(id).unwrap(),
        Admission::Shared(id),
        "still pending"
    );
    assert!(g.cancel(id).is_empty());
    assert!(
        check(&g, id).is_err(),
        "the answer finds no entry and gives its booking back"
    );
    assert_clean(&g);
}

#[test]
fn a_permit_from_the_check_cancelled_before_sending_is_given_back() {
    let g = shared_gate(OnUnavailable::Open, 1);
    let id = shared_id(admit(&g).unwrap());
    assert_eq!(check(&g, id).unwrap().0, Admission::Permit(id));
    assert!(g.cancel(id).is_empty());
    assert_clean(&g);
}

#[test]
fn a_shared_check_queues_for_the_slot_and_is_woken_by_the_settle() {
    let g = shared_gate(OnUnavailable::Open, 1);
    let a = shared_id(admit(&g).unwrap());
    assert_eq!(check(&g, a).unwrap().0, Admission::Permit(a));
    let b = shared_id(admit(&g).unwrap());
    let (wb, delay) = wait_id(check(&g, b).unwrap().0);
    assert_eq!((wb, delay), (b, 0.0), "queued for the slot");
    assert!(g.is_queued(b));
    let woken = g
        .settle_with(a, Outcome::Throttled, 0.0, None, Some(1.0))
        .unwrap();
    assert_eq!(woken, vec![b]);
    assert_eq!(g.resume(b).unwrap(), Admission::Permit(b));
    g.settle(b, Outcome::Success, 0.0, None).unwrap();
    assert_clean(&g);
}

/// A cluster breaker's report as Redis would send it.
fn shared_report(
    at_us: u64,
    state: crate::shared::breaker::ClusterState,
    ep: u64,
    left_ms: u64,
    flag: bool,
) -> crate::shared::breaker::Report {
    crate::shared::breaker::Report {
        at_us,
        state,
        ep,
        left_ms,
        flag,
    }
}

/// The gate's hook, on the manual clock: a cluster-open deployment refuses
/// with the local breaker closed; half-open, only a held permit goes, and it
/// is the probe its settle publishes.
#[test]
fn the_gate_follows_the_cluster_state() {
    let manual = ManualClock::new(0);
    let clock: crate::clock::SharedClock = Arc::new(manual.clone());
    let limiter = Arc::new(RateLimiter::new(f64::INFINITY, clock.clone()).unwrap());
    let gate = Arc::new(Gate::new("dep", GateConfig::default(), limiter, clock).unwrap());
    let hub = Arc::new(
        crate::shared::breaker::SharedBreakers::new("redis://127.0.0.1:1", "ns", 0.02).unwrap(),
    );
    gate.share_breaker(&hub).unwrap();
    assert!(gate.share_breaker(&hub).is_err());
    let b = gate.shared_breaker().unwrap().clone();
    let admit = || gate.admit(5, 1.0, 1.0, 100.0, 100.0, true);

    b.learn(
        shared_report(
            10,
            crate::shared::breaker::ClusterState::Open,
            7,
            2_000,
            false,
        ),
        false,
    );
    assert!(gate.is_open());
    match admit() {
        Err(Error::CircuitOpen { retry_after_s, .. }) => assert_eq!(retry_after_s, 2.0),
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
    assert_eq!(gate.breaker().state(), breaker::State::Closed);
    assert_eq!(b.stats().refused, 1);

    manual.advance_secs(2.0); // half-open: no permit here yet
    assert!(!gate.is_open());
    assert!(matches!(admit(), Err(Error::CircuitOpen { .. })));
    b.learn(
        shared_report(
            20,
            crate::shared::breaker::ClusterState::HalfOpen,
            7,
            0,
            false,
        ),
        true,
    );
    let id = match admit().unwrap() {
        Admission::Permit(id) => id,
        other => panic!("expected the probe's permit, got {other:?}"),
    };
    assert_eq!(b.permits(), 0);
    assert!(matches!(admit(), Err(Error::CircuitOpen { .. })));
    gate.settle(id, Outcome::Success, 0.1, None).unwrap();

    // closed cluster-wide: calls flow again
    b.learn(
        shared_report(30, crate::shared::breaker::ClusterState::Closed, 0, 0, true),
        false,
    );
    assert!(matches!(admit(), Ok(Admission::Permit(_))));
}
