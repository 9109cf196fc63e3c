//! Unit tests of the deduplicator, driven by a manual clock.

use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;

fn dedup(window_s: f64, max_entries: usize) -> (RequestDeduplicator<String>, ManualClock) {
    let clock = ManualClock::new(0);
    let d = RequestDeduplicator::new(window_s, max_entries, Arc::new(clock.clone())).unwrap();
    (d, clock)
}

/// `(promoted, followers)` tickets of a `fail`.
fn pair<W>(r: Result<Resolved<W>>) -> (Option<u64>, Vec<u64>) {
    let r = r.unwrap();
    (r.promoted_ticket(), r.tickets())
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
    assert_eq!(
        d.complete("k", l, "v".into()).unwrap().tickets(),
        vec![f1, f2]
    );
    assert_eq!((d.in_flight(), d.waiting(), d.len()), (1, 0, 1));
    // No window: the next join leads again.
    assert!(matches!(d.join("k"), Join::Leader(_)));
    assert!(d.complete("other", other, "w".into()).unwrap().is_empty());
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
    assert_eq!(pair(d.fail("k", l, true)), (Some(f1), vec![]));
    assert_eq!(d.waiting(), 1);
    assert!(
        d.complete("k", l, "late".into()).is_err(),
        "old leader lost the lead"
    );
    assert_eq!(d.complete("k", f1, "v".into()).unwrap().tickets(), vec![f2]);
    // Transient failure with nobody left removes the entry.
    let l = leader(d.join("k"));
    assert_eq!(pair(d.fail("k", l, true)), (None, vec![]));
    assert!(d.is_empty());
    assert_eq!(d.stats().promotions, 1);
}

#[test]
fn permanent_failure_returns_every_follower() {
    let (d, _) = dedup(5.0, 10);
    let l = leader(d.join("k"));
    let f: Vec<u64> = (0..3).map(|_| follower(d.join("k"))).collect();
    assert_eq!(pair(d.fail("k", l, false)), (None, f));
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
    assert_eq!(d.complete("k", l, "v".into()).unwrap().tickets(), vec![f2]);
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
    assert_eq!(d.complete("k", l, "v".into()).unwrap().tickets(), vec![f]);
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
    assert!(d.complete("c", u, "x".into()).unwrap().is_empty());
    assert_eq!(pair(d.fail("c", u2, false)), (None, vec![]));
    assert!(d.cancel("c", u2).is_empty());
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

/// A waiter that counts its drops, to see that none is lost or kept.
#[derive(Debug)]
struct Probe {
    tag: u64,
    drops: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.drops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

type Waiting = RequestDeduplicator<String, Probe>;

fn waiting(
    window_s: f64,
) -> (
    Waiting,
    ManualClock,
    impl Fn(u64) -> Probe,
    impl Fn() -> usize,
) {
    let clock = ManualClock::new(0);
    let d = RequestDeduplicator::new(window_s, 10, Arc::new(clock.clone())).unwrap();
    let drops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let d2 = drops.clone();
    let probe = move |tag| Probe {
        tag,
        drops: drops.clone(),
    };
    let dropped = move || d2.load(std::sync::atomic::Ordering::SeqCst);
    (d, clock, probe, dropped)
}

fn tags(r: &Resolved<Probe>) -> Vec<u64> {
    r.followers
        .iter()
        .map(|(_, w)| w.as_ref().map_or(0, |p| p.tag))
        .collect()
}

#[test]
fn complete_hands_back_every_waiter_in_join_order() {
    let (d, _, probe, dropped) = waiting(0.0);
    let l = leader(d.join_waiting("k", probe(100)));
    assert_eq!(dropped(), 1, "a leader's waiter is not kept");
    let f1 = follower(d.join_waiting("k", probe(1)));
    let f2 = follower(d.join("k"));
    let f3 = follower(d.join_waiting("k", probe(3)));
    assert_eq!((d.waiting(), d.parked()), (3, 2));
    let r = d.complete("k", l, "v".into()).unwrap();
    assert_eq!(r.tickets(), vec![f1, f2, f3]);
    assert_eq!(tags(&r), vec![1, 0, 3], "the waiterless follower has none");
    assert!(r.promoted.is_none());
    assert_eq!((d.waiting(), d.parked(), d.len()), (0, 0, 0));
    assert_eq!(dropped(), 1, "handed back, not dropped");
    drop(r);
    assert_eq!(dropped(), 3);
}

#[test]
fn a_window_hit_drops_its_waiter() {
    let (d, clock, probe, dropped) = waiting(1.0);
    let l = leader(d.join("k"));
    d.complete("k", l, "v".into()).unwrap();
    assert_eq!(d.join_waiting("k", probe(1)), Join::Done("v".into()));
    assert_eq!((dropped(), d.parked()), (1, 0));
    clock.advance_secs(1.0);
    assert!(matches!(d.join_waiting("k", probe(2)), Join::Leader(_)));
    assert_eq!(dropped(), 2);
}

#[test]
fn transient_fail_promotes_the_oldest_with_its_waiter() {
    let (d, _, probe, _) = waiting(0.0);
    let l = leader(d.join("k"));
    let f1 = follower(d.join_waiting("k", probe(1)));
    let f2 = follower(d.join_waiting("k", probe(2)));
    let r = d.fail("k", l, true).unwrap();
    assert!(r.followers.is_empty());
    let (t, w) = r.promoted.unwrap();
    assert_eq!((t, w.map(|p| p.tag)), (f1, Some(1)));
    assert_eq!((d.in_flight(), d.waiting(), d.parked()), (1, 1, 1));
    let r = d.complete("k", f1, "v".into()).unwrap();
    assert_eq!((r.tickets(), tags(&r)), (vec![f2], vec![2]));
    let s = d.stats();
    assert_eq!((s.failures, s.promotions, s.completions), (1, 1, 1));
}

#[test]
fn permanent_fail_hands_back_every_waiter() {
    let (d, _, probe, dropped) = waiting(5.0);
    let l = leader(d.join("k"));
    let fs: Vec<u64> = (1..=3)
        .map(|i| follower(d.join_waiting("k", probe(i))))
        .collect();
    let r = d.fail("k", l, false).unwrap();
    assert_eq!((r.tickets(), tags(&r)), (fs, vec![1, 2, 3]));
    assert!(r.promoted.is_none());
    assert_eq!((d.len(), d.waiting(), d.in_flight()), (0, 0, 0));
    drop(r);
    assert_eq!(dropped(), 3);
}

#[test]
fn cancel_by_a_follower_forgets_it_and_drops_its_waiter() {
    let (d, _, probe, dropped) = waiting(0.0);
    let l = leader(d.join("k"));
    let f1 = follower(d.join_waiting("k", probe(1)));
    let f2 = follower(d.join_waiting("k", probe(2)));
    assert!(d.cancel("k", f1).is_empty());
    assert_eq!((d.waiting(), d.parked(), dropped()), (1, 1, 1));
    assert!(d.cancel("k", f1).is_empty(), "idempotent");
    assert!(d.cancel("missing", f1).is_empty());
    assert!(d.cancel("k", 999).is_empty());
    assert_eq!(d.waiting(), 1);
    let r = d.complete("k", l, "v".into()).unwrap();
    assert_eq!(r.tickets(), vec![f2]);
    assert_eq!(d.stats().leaves, 1);
}

#[test]
fn cancel_by_the_leader_promotes_or_removes_the_entry() {
    let (d, _, probe, _) = waiting(0.0);
    let l = leader(d.join("k"));
    let f1 = follower(d.join_waiting("k", probe(1)));
    let f2 = follower(d.join_waiting("k", probe(2)));
    let r = d.cancel("k", l);
    assert_eq!(r.promoted_ticket(), Some(f1));
    assert!(d.cancel("k", l).is_empty(), "the old leader is nobody now");
    assert!(d.complete("k", l, "late".into()).is_err());
    // the promoted follower gives up too (its task was cancelled meanwhile)
    assert_eq!(d.cancel("k", f1).promoted_ticket(), Some(f2));
    assert_eq!((d.in_flight(), d.waiting()), (1, 0));
    assert!(d.cancel("k", f2).is_empty(), "nobody left: the entry goes");
    assert_eq!((d.in_flight(), d.len()), (0, 0));
    assert!(matches!(d.join("k"), Join::Leader(_)));
    let s = d.stats();
    assert_eq!((s.cancels, s.promotions, s.failures), (3, 2, 0));
}

#[test]
fn cancel_after_completion_or_of_untracked_is_a_no_op() {
    let (d, clock, probe, _) = waiting(2.0);
    let l = leader(d.join("k"));
    let f = follower(d.join_waiting("k", probe(1)));
    assert_eq!(d.complete("k", l, "v".into()).unwrap().tickets(), vec![f]);
    assert!(d.cancel("k", f).is_empty());
    assert!(d.cancel("k", l).is_empty());
    assert_eq!(
        d.join("k"),
        Join::Done("v".into()),
        "the window entry stays"
    );
    clock.advance_secs(2.0);
    assert!(d.cancel("k", l).is_empty());
    assert_eq!(d.len(), 0);
    let (d, _) = dedup(0.0, 1);
    let _a = leader(d.join("a"));
    let u = leader(d.join("b"));
    assert_ne!(u & UNTRACKED_BIT, 0);
    assert!(d.cancel("b", u).is_empty());
    assert_eq!(d.in_flight(), 1);
}

#[test]
fn leave_refuses_the_leader_and_a_promoted_follower() {
    let (d, _, probe, _) = waiting(0.0);
    let l = leader(d.join("k"));
    let f = follower(d.join_waiting("k", probe(1)));
    assert_eq!(d.fail("k", l, true).unwrap().promoted_ticket(), Some(f));
    let e = d.leave("k", f).unwrap_err();
    assert!(e.to_string().contains("cancel"), "{e}");
    assert_eq!(d.in_flight(), 1);
}

#[test]
fn clear_forgets_everything_and_hands_back_the_waiters() {
    let (d, _, probe, dropped) = waiting(10.0);
    let _a = leader(d.join("a"));
    follower(d.join_waiting("a", probe(1)));
    follower(d.join_waiting("a", probe(2)));
    let b = leader(d.join("b"));
    d.complete("b", b, "B".into()).unwrap();
    let waiters = d.clear();
    assert_eq!(
        waiters.iter().map(|p| p.tag).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(
        (d.len(), d.in_flight(), d.waiting(), d.parked()),
        (0, 0, 0, 0)
    );
    drop(waiters);
    assert_eq!(dropped(), 2);
    assert!(matches!(d.join("a"), Join::Leader(_)));
    assert!(matches!(d.join("b"), Join::Leader(_)));
}
