//! The slice accounting of leased mode: what this process holds of the
//! cluster-wide cells, admitted from locally with no Redis round trip.
//!
//! A *slice* is capacity of one cell already booked in Redis (by the `LEASE`
//! script, exactly as an exact reservation of that many units would be), so
//! whatever is admitted from it was admitted by the cluster-wide cell. Each
//! slice lives `ttl` from the moment it was granted; after that it is not
//! admitted from any more and its remainder is returned (refunded in Redis).
//! That is what bounds the over-admission of any window `W` by `rate * ttl`
//! (a share of `ttl / W` of the window's allowance): units booked up to `ttl`
//! before the window may be admitted inside it.
//!
//! The book is plain data behind the limiter's lock, driven by an injected
//! [`Clock`](crate::clock::Clock) so the tests move time by hand. It knows
//! the process it was filled in: after `fork` a child finds the parent's
//! slices and drops them unused (the parent still holds and returns them).

use std::collections::HashMap;

use crate::clock::SharedClock;

/// One leased slice: units left, and when it stops being usable.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slice {
    units: f64,
    expires_ns: u64,
}

/// Counts of the book (read by the limiter's stats).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LeaseStats {
    /// Slices granted (a lease of more than zero units).
    pub leases_taken: u64,
    /// Units granted in slices.
    pub units_leased: f64,
    /// Slices whose remainder went back (expired, closed, or dropped).
    pub leases_returned: u64,
    /// Units returned to the cells.
    pub units_returned: f64,
    /// Admissions answered from the slices alone (no Redis round trip).
    pub local_admissions: u64,
    /// Admissions the slices could not cover (they went to Redis).
    pub local_misses: u64,
    /// Refunds and reconcile credits put back into a live slice.
    pub local_credits: u64,
}

/// What a [`LeaseBook::take`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Take {
    /// Whether every cost was covered (and taken) from the slices.
    pub covered: bool,
    /// Keys whose units left fell below their low-water mark (refill them).
    pub low: Vec<String>,
    /// Remainders of expired slices, to refund in Redis.
    pub expired: Vec<(String, f64)>,
}

/// The slices of one process (see the module docs).
#[derive(Debug)]
pub struct LeaseBook {
    clock: SharedClock,
    ttl_ns: u64,
    pid: u32,
    keys: HashMap<String, Vec<Slice>>,
    /// Per key, the units under which a refill is wanted.
    low_water: HashMap<String, f64>,
    /// A 429 pause seen here: no local admission on the scope until then.
    paused_until_ns: HashMap<String, u64>,
    stats: LeaseStats,
}

/// Add `units` of `key` to a list of returns, merging repeats.
fn push_return(out: &mut Vec<(String, f64)>, key: &str, units: f64) {
    if units <= 0.0 {
        return;
    }
    match out.iter_mut().find(|(k, _)| k == key) {
        Some((_, u)) => *u += units,
        None => out.push((key.to_string(), units)),
    }
}

/// The (deployment, model) scope of a limiter key.
fn scope(key: &str) -> &str {
    key.rsplit_once(':').map_or(key, |(s, _)| s)
}

impl LeaseBook {
    /// An empty book whose slices live `ttl_ns` on `clock`.
    pub fn new(clock: SharedClock, ttl_ns: u64) -> Self {
        Self {
            clock,
            ttl_ns: ttl_ns.max(1),
            pid: std::process::id(),
            keys: HashMap::new(),
            low_water: HashMap::new(),
            paused_until_ns: HashMap::new(),
            stats: LeaseStats::default(),
        }
    }

    /// How long a slice lives, in nanoseconds.
    pub fn ttl_ns(&self) -> u64 {
        self.ttl_ns
    }

    /// The book's counts.
    pub fn stats(&self) -> LeaseStats {
        self.stats
    }

    /// In a forked child the parent's slices are not ours: drop them unused.
    fn check_pid(&mut self) {
        let pid = std::process::id();
        if pid != self.pid {
            self.pid = pid;
            self.keys.clear();
            self.paused_until_ns.clear();
            self.stats = LeaseStats::default();
        }
    }

    /// Refill `key` when it holds fewer than `units` (its low-water mark).
    pub fn set_low_water(&mut self, key: &str, units: f64) {
        self.low_water.insert(key.to_string(), units.max(0.0));
    }

    /// Move the remainders of slices expired by `now` into `out`.
    fn expire_into(&mut self, now: u64, out: &mut Vec<(String, f64)>) {
        for (key, slices) in &mut self.keys {
            let before = slices.len();
            let mut units = 0.0;
            slices.retain(|s| {
                let live = s.expires_ns > now;
                if !live {
                    units += s.units.max(0.0);
                }
                live
            });
            let gone = (before - slices.len()) as u64;
            if gone > 0 {
                self.stats.leases_returned += gone;
                self.stats.units_returned += units;
                push_return(out, key, units);
            }
        }
        self.keys.retain(|_, s| !s.is_empty());
    }

    /// Expire what has run out; the remainders to refund in Redis.
    pub fn expire(&mut self) -> Vec<(String, f64)> {
        self.check_pid();
        let mut out = Vec::new();
        self.expire_into(self.clock.now_ns(), &mut out);
        out
    }

    /// Units `key` holds in live slices now.
    pub fn remaining(&self, key: &str) -> f64 {
        let now = self.clock.now_ns();
        if self.pid != std::process::id() {
            return 0.0;
        }
        self.keys.get(key).map_or(0.0, |s| {
            s.iter()
                .filter(|s| s.expires_ns > now)
                .map(|s| s.units)
                .sum()
        })
    }

    /// Hold off local admissions on `key`'s scope for `secs` (a 429 pause).
    pub fn pause(&mut self, key: &str, secs: f64) {
        self.check_pid();
        let until = self
            .clock
            .now_ns()
            .saturating_add(crate::clock::secs_to_ns(secs));
        let slot = self
            .paused_until_ns
            .entry(scope(key).to_string())
            .or_default();
        *slot = (*slot).max(until);
    }

    /// Take every `(key, cost)` from the slices if all of them cover it,
    /// else nothing (earliest-expiring slices first).
    pub fn take(&mut self, items: &[(&str, f64)]) -> Take {
        self.check_pid();
        let now = self.clock.now_ns();
        let mut out = Take {
            covered: false,
            low: Vec::new(),
            expired: Vec::new(),
        };
        self.expire_into(now, &mut out.expired);
        let paused = items.first().is_some_and(|(k, _)| {
            self.paused_until_ns
                .get(scope(k))
                .is_some_and(|until| *until > now)
        });
        let covered = !paused
            && items.iter().all(|(key, cost)| {
                *cost <= 0.0
                    || self
                        .keys
                        .get(*key)
                        .is_some_and(|s| s.iter().map(|s| s.units).sum::<f64>() >= *cost - 1e-9)
            });
        if !covered {
            self.stats.local_misses += 1;
            return out;
        }
        for (key, cost) in items {
            let Some(slices) = self.keys.get_mut(*key) else {
                continue; // a zero cost on a key with nothing leased
            };
            let mut left = *cost;
            for s in slices.iter_mut() {
                if left <= 0.0 {
                    break;
                }
                let t = left.min(s.units);
                s.units -= t;
                left -= t;
            }
            // a slice taken down to nothing is spent: nothing to return for it
            slices.retain(|s| s.units > 1e-9);
        }
        self.keys.retain(|_, s| !s.is_empty());
        for (key, _) in items {
            let low = self.low_water.get(*key).copied().unwrap_or(0.0);
            if self.remaining(key) < low {
                out.low.push((*key).to_string());
            }
        }
        self.stats.local_admissions += 1;
        out.covered = true;
        out
    }

    /// A slice of `units` of `key` was granted now (booked in Redis).
    pub fn add(&mut self, key: &str, units: f64) {
        self.check_pid();
        if !(units.is_finite() && units > 0.0) {
            return;
        }
        let expires_ns = self.clock.now_ns().saturating_add(self.ttl_ns);
        self.keys
            .entry(key.to_string())
            .or_default()
            .push(Slice { units, expires_ns });
        self.stats.leases_taken += 1;
        self.stats.units_leased += units;
    }

    /// Give `units` of `key` back (a refund, a reconcile below the estimate):
    /// into the live slice that lives longest. Returns what no live slice
    /// took (to refund in Redis).
    pub fn credit(&mut self, key: &str, units: f64) -> f64 {
        self.check_pid();
        if units <= 0.0 {
            return 0.0;
        }
        let now = self.clock.now_ns();
        let slot = self
            .keys
            .get_mut(key)
            .and_then(|s| s.iter_mut().filter(|s| s.expires_ns > now).last());
        match slot {
            Some(s) => {
                s.units += units;
                self.stats.local_credits += 1;
                0.0
            }
            None => units,
        }
    }

    /// Charge `units` more of `key` (a reconcile above the estimate) from the
    /// slices as far as they go. Returns what they did not cover (to charge
    /// in Redis).
    pub fn debit(&mut self, key: &str, units: f64) -> f64 {
        self.check_pid();
        if units <= 0.0 {
            return 0.0;
        }
        let now = self.clock.now_ns();
        let mut left = units;
        if let Some(slices) = self.keys.get_mut(key) {
            for s in slices.iter_mut().filter(|s| s.expires_ns > now) {
                let t = left.min(s.units);
                s.units -= t;
                left -= t;
                if left <= 0.0 {
                    break;
                }
            }
            slices.retain(|s| s.units > 1e-9 || s.expires_ns <= now);
        }
        left.max(0.0)
    }

    /// Empty the book (closing): every remainder, to refund in Redis.
    pub fn drain(&mut self) -> Vec<(String, f64)> {
        if self.pid != std::process::id() {
            self.check_pid();
            return Vec::new();
        }
        let mut out = Vec::new();
        for (key, slices) in self.keys.drain() {
            let units: f64 = slices.iter().map(|s| s.units.max(0.0)).sum();
            self.stats.leases_returned += slices.len() as u64;
            self.stats.units_returned += units;
            push_return(&mut out, &key, units);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    fn book(ttl_s: f64) -> (ManualClock, LeaseBook) {
        let clock = ManualClock::new(1_000_000_000);
        let b = LeaseBook::new(Arc::new(clock.clone()), crate::clock::secs_to_ns(ttl_s));
        (clock, b)
    }

    #[test]
    fn takes_all_or_nothing_from_the_slices() {
        let (_, mut b) = book(1.0);
        b.add("d/m:rpm", 3.0);
        b.add("d/m:tpm", 100.0);
        let t = b.take(&[("d/m:rpm", 1.0), ("d/m:tpm", 60.0)]);
        assert!(t.covered);
        // tpm cannot cover 60 more: nothing is taken from rpm either
        let t = b.take(&[("d/m:rpm", 1.0), ("d/m:tpm", 60.0)]);
        assert!(!t.covered);
        assert_eq!(b.remaining("d/m:rpm"), 2.0);
        assert_eq!(b.remaining("d/m:tpm"), 40.0);
        let s = b.stats();
        assert_eq!((s.local_admissions, s.local_misses), (1, 1));
        assert_eq!((s.leases_taken, s.units_leased), (2, 103.0));
    }

    #[test]
    fn an_expired_slice_is_not_admitted_from_and_its_remainder_goes_back() {
        let (clock, mut b) = book(0.5);
        b.add("d/m:rpm", 5.0);
        assert!(b.take(&[("d/m:rpm", 2.0)]).covered);
        clock.advance_secs(0.5);
        let t = b.take(&[("d/m:rpm", 1.0)]);
        assert!(!t.covered, "a slice at its TTL admits nothing");
        assert_eq!(t.expired, vec![("d/m:rpm".to_string(), 3.0)]);
        assert_eq!(b.remaining("d/m:rpm"), 0.0);
        let s = b.stats();
        assert_eq!((s.leases_returned, s.units_returned), (1, 3.0));
        // nothing left to expire twice
        assert!(b.expire().is_empty());
    }

    #[test]
    fn earliest_slice_is_spent_first_and_low_water_asks_for_a_refill() {
        let (clock, mut b) = book(1.0);
        b.set_low_water("d/m:rpm", 2.0);
        b.add("d/m:rpm", 2.0);
        clock.advance_secs(0.4);
        b.add("d/m:rpm", 2.0);
        let t = b.take(&[("d/m:rpm", 1.0)]);
        assert!(t.covered);
        assert_eq!(t.low, Vec::<String>::new()); // 3 left >= 2
        let t = b.take(&[("d/m:rpm", 1.0)]);
        assert!(t.low.is_empty()); // 2 left: at the mark, not under it
        let t = b.take(&[("d/m:rpm", 1.0)]);
        assert_eq!(t.low, vec!["d/m:rpm".to_string()]); // 1 left
                                                        // the first slice is spent: at its expiry nothing of it goes back
        clock.advance_secs(0.7);
        assert!(b.expire().is_empty());
        assert_eq!(b.remaining("d/m:rpm"), 1.0);
    }

    #[test]
    fn credits_go_to_a_live_slice_else_back_to_redis_and_debits_spill_over() {
        let (clock, mut b) = book(1.0);
        assert_eq!(b.credit("d/m:tpm", 10.0), 10.0, "no slice: refund in Redis");
        b.add("d/m:tpm", 50.0);
        assert_eq!(b.credit("d/m:tpm", 10.0), 0.0);
        assert_eq!(b.remaining("d/m:tpm"), 60.0);
        assert_eq!(
            b.debit("d/m:tpm", 80.0),
            20.0,
            "the rest is charged in Redis"
        );
        assert_eq!(b.remaining("d/m:tpm"), 0.0);
        b.add("d/m:tpm", 5.0);
        clock.advance_secs(1.5);
        assert_eq!(
            b.credit("d/m:tpm", 4.0),
            4.0,
            "an expired slice takes no credit"
        );
        assert_eq!(b.debit("d/m:tpm", 4.0), 4.0, "nor covers a charge");
        assert_eq!(b.stats().local_credits, 1);
    }

    #[test]
    fn a_pause_stops_local_admissions_on_its_scope_only() {
        let (clock, mut b) = book(10.0);
        b.add("d/m:rpm", 5.0);
        b.add("d/other:rpm", 5.0);
        b.pause("d/m:tpm", 2.0);
        assert!(!b.take(&[("d/m:rpm", 1.0)]).covered);
        assert!(b.take(&[("d/other:rpm", 1.0)]).covered);
        clock.advance_secs(2.0);
        assert!(b.take(&[("d/m:rpm", 1.0)]).covered);
    }

    #[test]
    fn drain_returns_every_remainder_once() {
        let (_, mut b) = book(1.0);
        b.add("d/m:rpm", 4.0);
        b.add("d/m:rpm", 1.0);
        b.add("d/m:tpm", 7.5);
        assert!(b.take(&[("d/m:rpm", 2.0)]).covered);
        let mut back = b.drain();
        back.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            back,
            vec![("d/m:rpm".to_string(), 3.0), ("d/m:tpm".to_string(), 7.5)]
        );
        assert!(b.drain().is_empty());
        assert_eq!(b.stats().units_returned, 10.5);
    }

    #[test]
    fn never_admits_more_than_was_leased() {
        // Any interleaving of takes, credits and debits admits at most what was
        // leased plus what was credited back, and only while slices live.
        let (clock, mut b) = book(0.3);
        let mut leased = 0.0;
        let mut admitted = 0.0;
        let mut credited = 0.0;
        for step in 0..2_000u64 {
            match step % 7 {
                0 => {
                    b.add("d/m:rpm", 3.0);
                    leased += 3.0;
                }
                3 => {
                    credited += 1.0 - b.credit("d/m:rpm", 1.0);
                }
                5 => {
                    admitted += 2.0 - b.debit("d/m:rpm", 2.0);
                }
                _ => {
                    if b.take(&[("d/m:rpm", 1.0)]).covered {
                        admitted += 1.0;
                    }
                }
            }
            clock.advance_secs(0.05);
        }
        let back: f64 = b.drain().iter().map(|(_, u)| u).sum();
        let returned = b.stats().units_returned;
        assert!(admitted <= leased + credited + 1e-6);
        assert!((leased + credited - admitted - returned).abs() < 1e-6);
        assert!(back >= 0.0);
    }
}
