//! Random admit / resume / settle / cancel / clock sequences: whatever the
//! order, the gate leaks no slot, ticket, breaker probe or reservation, and
//! its books agree with its scheduler after every step.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;

#[derive(Debug, Clone)]
enum Op {
    /// priority, est_in, est_out, wait_s
    Admit(u8, u16, u16, u8),
    Resume(usize),
    /// which permit, outcome code, whether usage is known
    Settle(usize, u8, bool),
    Cancel(usize),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..10, 0u16..400, 0u16..200, 0u8..4).prop_map(|(p, i, o, w)| Op::Admit(p, i, o, w)),
        3 => any::<usize>().prop_map(Op::Resume),
        3 => (any::<usize>(), 0u8..7, any::<bool>()).prop_map(|(i, o, u)| Op::Settle(i, o, u)),
        2 => any::<usize>().prop_map(Op::Cancel),
        1 => (0u16..3000).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Held {
    /// Told to wait; `true` once woken (or a limiter delay: may resume).
    Waiting(bool),
    Permit,
}

struct Harness {
    g: Gate,
    clock: ManualClock,
    held: HashMap<u64, Held>,
    order: Vec<u64>,
    /// Check the books after every step (else after each sequence only).
    every_step: bool,
}

impl Harness {
    fn new(max_concurrency: usize, max_queue: usize, every_step: bool) -> Self {
        let clock = ManualClock::new(0);
        let shared: crate::clock::SharedClock = Arc::new(clock.clone());
        let limiter = Arc::new(RateLimiter::new(f64::INFINITY, shared.clone()).unwrap());
        let cfg = GateConfig {
            scheduler: SchedulerConfig {
                max_concurrency,
                max_queue,
                ..SchedulerConfig::default()
            },
            breaker: breaker::Config {
                minimum_calls: 3,
                window_size: 4,
                open_duration_s: 1.0,
                half_open_max_calls: 2,
                ..breaker::Config::default()
            },
            ..GateConfig::default()
        };
        let g = Gate::new("dep", cfg, limiter, shared).unwrap();
        g.configure_limit("rpm", 5.0, 4.0).unwrap();
        g.configure_limit("tpm", 2000.0, 1500.0).unwrap();
        g.configure_limit("otpm", 500.0, 600.0).unwrap();
        Self {
            g,
            clock,
            held: HashMap::new(),
            order: Vec::new(),
            every_step,
        }
    }

    fn pick(&self, i: usize, want: fn(Held) -> bool) -> Option<u64> {
        let ids: Vec<u64> = self
            .order
            .iter()
            .copied()
            .filter(|id| self.held.get(id).is_some_and(|h| want(*h)))
            .collect();
        (!ids.is_empty()).then(|| ids[i % ids.len()])
    }

    fn forget(&mut self, id: u64) {
        self.held.remove(&id);
        self.order.retain(|&x| x != id);
    }

    fn wake(&mut self, woken: Vec<u64>) {
        let mut seen = HashSet::new();
        for id in woken {
            assert!(seen.insert(id), "{id} woken twice in one step");
            match self.held.get_mut(&id) {
                Some(Held::Waiting(w)) => *w = true,
                other => panic!("woke {id}, which is {other:?}"),
            }
        }
    }

    fn answer(&mut self, res: Result<Admission>, resumed: Option<u64>) {
        match res {
            Ok(Admission::Permit(id)) => {
                if resumed.is_none() {
                    self.order.push(id);
                }
                self.held.insert(id, Held::Permit);
            }
            Ok(Admission::Wait { id, delay_s }) => {
                if resumed.is_none() {
                    self.order.push(id);
                }
                // a limiter delay may resume after its sleep; a queued entry when woken
                self.held.insert(id, Held::Waiting(delay_s > 0.0));
            }
            Ok(Admission::Shared(id)) => panic!("entry {id}: no shared limiter here"),
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        Error::CircuitOpen { .. }
                            | Error::QueueFull { .. }
                            | Error::Throttled { .. }
                    ),
                    "{e:?}"
                );
                if let Some(id) = resumed {
                    self.forget(id);
                }
            }
        }
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Admit(p, i, o, w) => {
                let wait = [0.0, 0.2, 1.0, 100.0][usize::from(w)];
                let r = self
                    .g
                    .admit(p, f64::from(i), f64::from(o), wait, 100.0, w == 0);
                self.answer(r, None);
            }
            Op::Resume(i) => {
                if let Some(id) = self.pick(i, |h| matches!(h, Held::Waiting(_))) {
                    let r = self.g.resume(id);
                    self.answer(r, Some(id));
                }
            }
            Op::Settle(i, o, usage) => {
                if let Some(id) = self.pick(i, |h| h == Held::Permit) {
                    let outcome = Outcome::ALL[usize::from(o)];
                    let usage = usage.then_some((f64::from(o) * 50.0, 20.0));
                    let woken = self.g.settle(id, outcome, 0.01, usage).unwrap();
                    self.forget(id);
                    self.wake(woken);
                }
            }
            Op::Cancel(i) => {
                if let Some(id) = self.pick(i, |_| true) {
                    let woken = self.g.cancel(id);
                    self.forget(id);
                    self.wake(woken);
                }
            }
            Op::Advance(ms) => self.clock.advance_ns(u64::from(ms) * 1_000_000),
        }
        if self.every_step {
            self.check();
        }
    }

    fn check(&self) {
        self.g.check().unwrap();
        assert_eq!(self.g.stats().entries, self.held.len(), "entries vs held");
    }

    /// End every attempt still held and check that nothing is left.
    fn drain(mut self) {
        self.check();
        while let Some(&id) = self.order.first() {
            let woken = match self.held[&id] {
                Held::Permit => self.g.settle(id, Outcome::Ignored, 0.0, None).unwrap(),
                Held::Waiting(_) => self.g.cancel(id),
            };
            self.forget(id);
            self.wake(woken);
            if self.every_step {
                self.check();
            }
        }
        let s = self.g.stats();
        assert_eq!((s.entries, s.outstanding), (0, 0), "{s:?}");
        let sched = self.g.scheduler().stats();
        assert_eq!((sched.in_flight, sched.queued), (0, 0), "{sched:?}");
        assert_eq!(self.g.breaker().probes_in_flight(), 0);
        // every reservation spent or refunded: given time, every cell is full again
        self.clock.advance_ns(3_600_000_000_000);
        let (_, avail) = self.g.limiter_stats();
        assert_eq!(
            avail,
            vec![("rpm", 4.0), ("tpm", 1500.0), ("otpm", 600.0)],
            "cells full again"
        );
    }
}

fn run(ops: &[Op], max_concurrency: usize, max_queue: usize, every_step: bool) {
    let mut h = Harness::new(max_concurrency, max_queue, every_step);
    for op in ops {
        h.step(op);
    }
    h.drain();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_leak_nothing(
        ops in prop::collection::vec(op(), 1..300),
        max_concurrency in 1usize..5,
        max_queue in 0usize..6,
    ) {
        run(&ops, max_concurrency, max_queue, true);
    }
}

/// A xorshift generator: 100,000 sequences cheap enough for a debug build.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn op(&mut self) -> Op {
        let any = |r: &mut Rng| r.below(1 << 32) as usize;
        match self.below(13) {
            0..=3 => Op::Admit(
                self.below(10) as u8,
                self.below(400) as u16,
                self.below(200) as u16,
                self.below(4) as u8,
            ),
            4..=6 => Op::Resume(any(self)),
            7..=9 => Op::Settle(any(self), self.below(7) as u8, self.below(2) == 1),
            10 | 11 => Op::Cancel(any(self)),
            _ => Op::Advance(self.below(3000) as u16),
        }
    }
}

/// 100,000 random sequences from a fixed seed (reproducible in CI).
#[test]
fn a_hundred_thousand_fixed_seed_sequences_leak_nothing() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..100_000 {
        let len = 1 + rng.below(24) as usize;
        let ops: Vec<Op> = (0..len).map(|_| rng.op()).collect();
        let (c, q) = (1 + rng.below(3) as usize, rng.below(4) as usize);
        run(&ops, c, q, false);
    }
}
