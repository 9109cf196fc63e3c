//! The gate in leased mode, with the slices granted by hand (no Redis: a
//! closed port) and time on a manual clock: the fast path answers `Permit`
//! from `admit` itself, and refunds and reconciles settle in the slices.

use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;
use crate::shared::{OnUnavailable, SharedLimiter};

fn leased_gate(policy: OnUnavailable) -> (Arc<Gate>, Arc<SharedLimiter>, ManualClock) {
    let clock = ManualClock::new(1_000_000_000);
    let shared_clock: crate::clock::SharedClock = Arc::new(clock.clone());
    let limiter = Arc::new(RateLimiter::new(f64::INFINITY, shared_clock.clone()).unwrap());
    let lim = SharedLimiter::new("redis://127.0.0.1:1", "ns", policy, 0.02)
        .unwrap()
        .with_leases_on(1.0, shared_clock.clone())
        .unwrap();
    let lim = Arc::new(lim);
    let cfg = GateConfig {
        scheduler: SchedulerConfig {
            max_concurrency: 4,
            max_queue: 10,
            adaptive: false,
            ..SchedulerConfig::default()
        },
        ..GateConfig::default()
    };
    let g = Gate::new("dep", cfg, limiter, shared_clock)
        .unwrap()
        .with_shared(lim.clone());
    g.configure_limit("rpm", 1.0, 100.0).unwrap();
    g.configure_limit("itpm", 100.0, 10_000.0).unwrap();
    (Arc::new(g), lim, clock)
}

#[test]
fn a_covered_admission_is_a_permit_at_once_and_settles_locally() {
    let (g, lim, _) = leased_gate(OnUnavailable::Closed);
    lim.grant_for_test("dep:rpm", 3.0);
    lim.grant_for_test("dep:itpm", 1_000.0);
    let a = g.admit(5, 400.0, 50.0, 10.0, 10.0, true).unwrap();
    let Admission::Permit(id) = a else {
        panic!("expected a permit from the slices, got {a:?}");
    };
    assert_eq!(lim.leased_units("dep:rpm"), 2.0);
    assert_eq!(lim.leased_units("dep:itpm"), 600.0);
    // used 100 of the 400 estimated: 300 back into the slice
    g.settle(id, Outcome::Success, 0.1, Some((100.0, 20.0)))
        .unwrap();
    assert_eq!(lim.leased_units("dep:itpm"), 900.0);
    let st = g.stats();
    assert_eq!(
        (st.permits, st.settled, st.outstanding, st.shared_checks),
        (1, 1, 0, 0)
    );
    g.check().unwrap();
    assert_eq!(lim.lease_stats().unwrap().book.local_admissions, 1);
}

#[test]
fn a_cancelled_leased_entry_gives_its_costs_back_to_the_slice() {
    let (g, lim, _) = leased_gate(OnUnavailable::Closed);
    lim.grant_for_test("dep:rpm", 10.0);
    lim.grant_for_test("dep:itpm", 5_000.0);
    // four slots: the fifth entry queues, booked from the slices
    let ids: Vec<u64> = (0..5)
        .map(
            |_| match g.admit(5, 100.0, 0.0, 10.0, 10.0, true).unwrap() {
                Admission::Permit(id) | Admission::Wait { id, .. } => id,
                other => panic!("unexpected {other:?}"),
            },
        )
        .collect();
    assert!(g.is_queued(ids[4]));
    assert_eq!(lim.leased_units("dep:rpm"), 5.0);
    g.cancel(ids[4]);
    assert_eq!(lim.leased_units("dep:rpm"), 6.0);
    assert_eq!(lim.leased_units("dep:itpm"), 4_600.0);
    g.check().unwrap();
}

#[test]
fn an_uncovered_admission_goes_to_the_shared_check() {
    let (g, lim, clock) = leased_gate(OnUnavailable::Closed);
    lim.grant_for_test("dep:rpm", 1.0);
    lim.grant_for_test("dep:itpm", 50.0);
    // 400 input tokens: the slice of 50 does not cover it
    let a = g.admit(5, 400.0, 0.0, 10.0, 10.0, true).unwrap();
    let Admission::Shared(id) = a else {
        panic!("expected the shared check, got {a:?}");
    };
    assert_eq!(lim.leased_units("dep:rpm"), 1.0, "nothing taken on a miss");
    // Redis is absent and the policy closed: the check refuses
    let rt = crate::runtime::handle().unwrap();
    let got = rt.block_on({
        let g = g.clone();
        async move { g.check_shared(id, 10.0, 10.0).await }
    });
    assert!(matches!(got, Err(Error::Throttled { .. })), "{got:?}");
    // an expired slice admits nothing
    clock.advance_secs(1.0);
    assert!(matches!(
        g.admit(5, 1.0, 0.0, 10.0, 10.0, true).unwrap(),
        Admission::Shared(_)
    ));
    assert_eq!(lim.leased_units("dep:rpm"), 0.0);
}

#[test]
fn a_fallback_admission_in_leased_mode_is_not_credited_to_a_slice() {
    let (g, lim, _) = leased_gate(OnUnavailable::Open);
    lim.grant_for_test("dep:itpm", 10.0);
    let Admission::Shared(id) = g.admit(5, 400.0, 0.0, 10.0, 10.0, true).unwrap() else {
        panic!("expected the shared check");
    };
    let rt = crate::runtime::handle().unwrap();
    let (a, source) = rt
        .block_on({
            let g = g.clone();
            async move { g.check_shared(id, 10.0, 10.0).await }
        })
        .unwrap();
    assert_eq!(source, Source::Open);
    let Admission::Permit(id) = a else {
        panic!("expected a permit, got {a:?}");
    };
    g.cancel(id);
    // the 400 were never booked in Redis: they must not turn into slice units
    assert_eq!(lim.leased_units("dep:itpm"), 10.0);
    g.check().unwrap();
}
