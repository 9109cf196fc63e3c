//! Unit tests of the rate limiter, driven by a manual clock.

use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;

const K: &str = "dep/model:rpm";

fn limiter(ttl_s: f64) -> (RateLimiter, ManualClock) {
    let clock = ManualClock::new(1_000_000_000);
    (
        RateLimiter::new(ttl_s, Arc::new(clock.clone())).unwrap(),
        clock,
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn unconfigured_key_is_unlimited() {
    let (lim, _) = limiter(600.0);
    assert_eq!(lim.try_acquire("nope", 1e9).unwrap(), 0.0);
    assert_eq!(lim.reserve("nope", 1e9).unwrap(), 0.0);
    assert_eq!(lim.available("nope"), f64::INFINITY);
    lim.refund("nope", 1.0).unwrap();
    lim.reconcile("nope", 1.0, 2.0).unwrap();
    lim.observe_headers("nope", 0.0, None, 10.0).unwrap();
    assert!(lim.is_empty());
}

#[test]
fn burst_then_rate() {
    let (lim, clock) = limiter(600.0);
    lim.configure(K, 2.0, 3.0).unwrap();
    for _ in 0..3 {
        assert_eq!(lim.try_acquire(K, 1.0).unwrap(), 0.0);
    }
    assert!(close(lim.try_acquire(K, 1.0).unwrap(), 0.5));
    assert!(close(lim.try_acquire(K, 2.0).unwrap(), 1.0));
    clock.advance_secs(0.5);
    assert_eq!(lim.try_acquire(K, 1.0).unwrap(), 0.0);
    assert!(close(lim.available(K), 0.0));
    clock.advance_secs(10.0);
    assert!(close(lim.available(K), 3.0));
}

#[test]
fn try_acquire_checks_cost() {
    let (lim, _) = limiter(600.0);
    lim.configure(K, 1.0, 5.0).unwrap();
    let e = lim.try_acquire(K, 6.0).unwrap_err();
    assert!(e.to_string().contains("cost=6 exceeds burst=5"), "{e}");
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let e = lim.try_acquire(K, bad).unwrap_err();
        assert!(e.to_string().contains("cost="), "{e}");
        assert!(lim.reserve(K, bad).is_err());
        assert!(lim.refund(K, bad).is_err());
    }
    assert!(close(lim.available(K), 5.0));
    assert_eq!(lim.try_acquire(K, 0.0).unwrap(), 0.0);
}

#[test]
fn configure_validates() {
    let (lim, _) = limiter(600.0);
    let e = lim.configure(K, 0.0, 1.0).unwrap_err();
    assert!(e.to_string().contains("rate_per_s=0"), "{e}");
    assert!(lim.configure(K, f64::INFINITY, 1.0).is_err());
    let e = lim.configure(K, 1.0, 0.5).unwrap_err();
    assert!(e.to_string().contains("burst=0.5"), "{e}");
    assert!(lim.configure(K, 1.0, f64::NAN).is_err());
    assert!(RateLimiter::new(0.0, crate::clock::system()).is_err());
    assert!(RateLimiter::new(f64::INFINITY, crate::clock::system()).is_ok());
}

#[test]
fn reservations_are_fifo_and_always_book() {
    let (lim, clock) = limiter(600.0);
    lim.configure(K, 10.0, 1.0).unwrap();
    let delays: Vec<f64> = (0..5).map(|_| lim.reserve(K, 1.0).unwrap()).collect();
    for (i, d) in delays.iter().enumerate() {
        assert!(close(*d, i as f64 * 0.1), "{delays:?}");
    }
    // A try_acquire does not jump the queue.
    assert!(close(lim.try_acquire(K, 1.0).unwrap(), 0.5));
    // A reservation larger than the burst waits for it.
    clock.advance_secs(10.0);
    assert!(close(lim.reserve(K, 5.0).unwrap(), 0.4));
}

#[test]
fn refund_and_reconcile_never_exceed_burst() {
    let (lim, clock) = limiter(600.0);
    lim.configure(K, 1.0, 4.0).unwrap();
    assert_eq!(lim.reserve(K, 3.0).unwrap(), 0.0);
    lim.refund(K, 100.0).unwrap();
    assert!(close(lim.available(K), 4.0));
    assert_eq!(lim.reserve(K, 4.0).unwrap(), 0.0);
    lim.reconcile(K, 4.0, 1.0).unwrap();
    assert!(close(lim.available(K), 3.0));
    lim.reconcile(K, 1.0, 6.0).unwrap(); // charged 5 more: 2 in debt
    assert_eq!(lim.available(K), 0.0);
    assert!(close(lim.try_acquire(K, 1.0).unwrap(), 3.0));
    clock.advance_secs(3.0);
    assert_eq!(lim.try_acquire(K, 1.0).unwrap(), 0.0);
    assert!(lim.reconcile(K, -1.0, 1.0).is_err());
    assert!(lim.reconcile(K, 1.0, f64::NAN).is_err());
}

#[test]
fn headers_tighten_but_never_loosen() {
    let (lim, clock) = limiter(600.0);
    lim.configure(K, 1.0, 10.0).unwrap();
    // 2 left, resets in 5 s: capacity now = 2 - 5 (rate * reset) => in debt.
    lim.observe_headers(K, 2.0, Some(100.0), 5.0).unwrap();
    assert_eq!(lim.available(K), 0.0);
    clock.advance_secs(5.0);
    assert!(close(lim.available(K), 2.0));
    // Generous headers do not loosen the cell.
    lim.observe_headers(K, 1000.0, None, 0.0).unwrap();
    assert!(close(lim.available(K), 2.0));
    // `limit` caps `remaining`.
    clock.advance_secs(100.0);
    lim.observe_headers(K, 50.0, Some(3.0), 0.0).unwrap();
    assert!(close(lim.available(K), 3.0));
    let e = lim.observe_headers(K, 1.0, Some(0.0), 1.0).unwrap_err();
    assert!(e.to_string().contains("limit=0"), "{e}");
    assert!(lim.observe_headers(K, -1.0, None, 1.0).is_err());
    assert!(lim.observe_headers(K, 1.0, None, f64::NAN).is_err());
}

#[test]
fn reconfigure_keeps_bookings() {
    let (lim, _) = limiter(600.0);
    lim.configure(K, 1.0, 2.0).unwrap();
    lim.reserve(K, 2.0).unwrap();
    lim.configure(K, 2.0, 4.0).unwrap();
    assert!(close(lim.available(K), 2.0));
}

#[test]
fn reserve_many_returns_max_delay_and_validates_first() {
    let (lim, _) = limiter(600.0);
    lim.configure("a", 1.0, 1.0).unwrap();
    lim.configure("b", 1.0, 1.0).unwrap();
    lim.reserve("b", 1.0).unwrap();
    let d = lim
        .reserve_many([("a", 1.0), ("b", 2.0), ("free", 9.0)])
        .unwrap();
    assert!(close(d, 2.0));
    assert!(lim.reserve_many([("a", 1.0), ("b", -1.0)]).is_err());
    assert!(close(lim.try_acquire("a", 1.0).unwrap(), 1.0)); // nothing more booked on a
}

#[test]
fn idle_full_cells_are_forgotten() {
    let (lim, clock) = limiter(10.0);
    for i in 0..100 {
        lim.configure(&format!("k{i}"), 1.0, 1.0).unwrap();
    }
    lim.reserve("k0", 20.0).unwrap(); // booked 19 s ahead: not full
    assert_eq!(lim.len(), 100);
    clock.advance_secs(5.0);
    lim.available("k1"); // touched: not idle
    clock.advance_secs(6.0);
    assert_eq!(lim.sweep(), 98);
    assert_eq!(lim.len(), 2);
    assert_eq!(lim.available("k2"), f64::INFINITY);
    // Lazy sweeping: a stream of calls on fresh keys keeps the map bounded.
    for round in 0..20 {
        for i in 0..50 {
            let key = format!("r{round}-{i}");
            lim.configure(&key, 1.0, 1.0).unwrap();
            for _ in 0..30 {
                lim.try_acquire(&key, 0.0).unwrap();
            }
        }
        clock.advance_secs(11.0);
    }
    assert!(lim.len() <= 200, "{}", lim.len());
}

#[test]
fn concurrent_callers_never_overadmit() {
    let clock = ManualClock::new(0);
    let lim = Arc::new(RateLimiter::new(600.0, Arc::new(clock)).unwrap());
    lim.configure(K, 1.0, 100.0).unwrap();
    let admitted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let lim = &lim;
                s.spawn(move || {
                    (0..100)
                        .filter(|_| lim.try_acquire(K, 1.0).unwrap() == 0.0)
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(admitted, 100);
}
