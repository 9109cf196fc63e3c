//! Unit tests of the deduplicator, driven by a manual clock.

use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;

fn dedup(window_s: f64, max_entries: usize) -> (RequestDeduplicator<String>, ManualClock) {
    let clock = ManualClock::new(0);
    let d = RequestDeduplicator::new(window_s, max_entries, Arc::new(clock.clone())).unwrap();
    (d, clock)
}

fn leader(j: Join<String>) -> u64 {
    match j {
        Join::Leader(t) => t,
        other => panic!("expected leader, got {other:?}"),
    }
}

fn follower(j: Join<String>) -> u64 {
    match j {
        Join::Follower(t) => t,
        other => panic!("expected follower, got {other:?}"),
    }
}

#[test]
fn leader_then_followers_then_complete_wakes_all() {
    let (d, _) = dedup(0.0, 10);
    let l = leader(d.join("k"));
    let f1 = follower(d.join("k"));
    let f2 = follower(d.join("k"));
    let other = leader(d.join("other"));
    assert_eq!((d.in_flight(), d.waiting(), d.len()), (2, 2, 2));
    assert_eq!(d.complete("k", l, "v".into()).unwrap(), vec![f1, f2]);
    assert_eq!((d.in_flight(), d.waiting(), d.len()), (1, 0, 1));
    // No window: the next join leads again.
    assert!(matches!(d.join("k"), Join::Leader(_)));
    assert_eq!(
        d.complete("other", other, "w".into()).unwrap(),
        Vec::<u64>::new()
    );
    let s = d.stats();
    assert_eq!((s.joins_leader, s.joins_follower, s.completions), (3, 2, 2));
}

#[test]
fn window_serves_done_until_it_expires() {
    let (d, clock) = dedup(2.0, 10);
    let l = leader(d.join("k"));
    d.complete("k", l, "v".into()).unwrap();
    assert_eq!(d.join("k"), Join::Done("v".to_string()));
    assert_eq!(d.join("k").code(), DONE);
    assert_eq!((d.len(), d.in_flight()), (1, 0));
    clock.advance_secs(1.999);
    assert_eq!(d.sweep(), 0);
    clock.advance_secs(0.001);
    assert_eq!(d.len(), 0, "len drops expired entries lazily");
    assert_eq!(d.sweep(), 0);
    let l2 = leader(d.join("k"));
    d.complete("k", l2, "v2".into()).unwrap();
    clock.advance_secs(5.0);
    assert_eq!(d.sweep(), 1);
    let s = d.stats();
    assert_eq!((s.hits_window, s.expirations), (2, 2));
}

#[test]
fn transient_failure_promotes_oldest_follower() {
    let (d, _) = dedup(0.0, 10);
    let l = leader(d.join("k"));
    let f1 = follower(d.join("k"));
    let f2 = follower(d.join("k"));
    assert_eq!(d.fail("k", l, true).unwrap(), (Some(f1), vec![]));
    assert_eq!(d.waiting(), 1);
    assert!(
        d.complete("k", l, "late".into()).is_err(),
        "old leader lost the lead"
    );
    assert_eq!(d.complete("k", f1, "v".into()).unwrap(), vec![f2]);
    // Transient failure with nobody left removes the entry.
    let l = leader(d.join("k"));
    assert_eq!(d.fail("k", l, true).unwrap(), (None, vec![]));
    assert!(d.is_empty());
    assert_eq!(d.stats().promotions, 1);
}

#[test]
fn permanent_failure_returns_every_follower() {
    let (d, _) = dedup(5.0, 10);
    let l = leader(d.join("k"));
    let f: Vec<u64> = (0..3).map(|_| follower(d.join("k"))).collect();
    assert_eq!(d.fail("k", l, false).unwrap(), (None, f));
    assert_eq!((d.len(), d.waiting(), d.in_flight()), (0, 0, 0));
    assert!(
        matches!(d.join("k"), Join::Leader(_)),
        "failures are not windowed"
    );
}

#[test]
fn leave_is_idempotent_and_refuses_the_leader() {
    let (d, _) = dedup(0.0, 10);
    let l = leader(d.join("k"));
    let f1 = follower(d.join("k"));
    let f2 = follower(d.join("k"));
    d.leave("k", f1).unwrap();
    d.leave("k", f1).unwrap();
    d.leave("nope", 77).unwrap();
    assert_eq!(d.waiting(), 1);
    let e = d.leave("k", l).unwrap_err();
    assert!(e.to_string().contains("fail"), "{e}");
    assert_eq!(d.complete("k", l, "v".into()).unwrap(), vec![f2]);
    assert_eq!(d.stats().leaves, 1);
}

#[test]
fn wrong_ticket_or_key_is_an_error_and_changes_nothing() {
    let (d, _) = dedup(0.0, 10);
    let l = leader(d.join("k"));
    let f = follower(d.join("k"));
    assert!(d
        .complete("k", f, "x".into())
        .unwrap_err()
        .to_string()
        .contains(&f.to_string()));
    assert!(d.complete("other", l, "x".into()).is_err());
    assert!(d.fail("k", 999, true).is_err());
    assert!(d.fail("k", f, false).is_err());
    assert_eq!((d.in_flight(), d.waiting()), (1, 1));
    assert_eq!(d.complete("k", l, "v".into()).unwrap(), vec![f]);
    assert!(d.complete("k", l, "v".into()).is_err(), "completing twice");
}

#[test]
fn capacity_evicts_oldest_done_and_never_in_flight() {
    let (d, _) = dedup(60.0, 3);
    for k in ["a", "b"] {
        let t = leader(d.join(k));
        d.complete(k, t, k.to_string()).unwrap();
    }
    let c = leader(d.join("c"));
    assert_eq!(d.len(), 3);
    let e = leader(d.join("e"));
    assert_eq!(d.len(), 3);
    assert_eq!(d.join("b"), Join::Done("b".to_string()), "b survived");
    assert!(
        matches!(d.join("a"), Join::Leader(t) if t & UNTRACKED_BIT == 0),
        "a (oldest) was evicted, so a leads again, evicting b"
    );
    // c, e, a are all in flight now: a new key runs untracked.
    assert!(matches!(d.join("b"), Join::Leader(t) if t & UNTRACKED_BIT != 0));
    assert_eq!(d.stats().evictions, 2);
    assert_eq!(d.in_flight(), 3);
    let _ = (c, e);
}

#[test]
fn full_of_in_flight_keys_leads_untracked() {
    let (d, _) = dedup(60.0, 2);
    let a = leader(d.join("a"));
    let _b = leader(d.join("b"));
    let u = leader(d.join("c"));
    assert_ne!(u & UNTRACKED_BIT, 0);
    assert_eq!(d.len(), 2);
    // Nobody can follow an untracked leader: the next join is untracked too.
    let u2 = leader(d.join("c"));
    assert_ne!(u2 & UNTRACKED_BIT, 0);
    assert_ne!(u, u2);
    assert_eq!(d.complete("c", u, "x".into()).unwrap(), Vec::<u64>::new());
    assert_eq!(d.fail("c", u2, false).unwrap(), (None, vec![]));
    assert_eq!(d.stats().untracked, 2);
    // Room again once a key completes (its windowed value can be evicted).
    d.complete("a", a, "va".into()).unwrap();
    let c = leader(d.join("c"));
    assert_eq!(c & UNTRACKED_BIT, 0);
    assert_eq!(d.stats().evictions, 1);
}

#[test]
fn config_errors_name_param_and_value() {
    let c = crate::clock::system();
    let e = RequestDeduplicator::<u8>::new(-1.0, 10, c.clone()).unwrap_err();
    assert!(e.to_string().contains("window_s=-1"), "{e}");
    let e = RequestDeduplicator::<u8>::new(f64::NAN, 10, c.clone()).unwrap_err();
    assert!(e.to_string().contains("window_s=NaN"), "{e}");
    let e = RequestDeduplicator::<u8>::new(1.0, 0, c).unwrap_err();
    assert!(e.to_string().contains("max_entries=0"), "{e}");
}
