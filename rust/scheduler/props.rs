//! Property tests of the scheduler: random acquire / release / cancel /
//! set_limit / clock sequences against a model; no slot or ticket leaks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;

#[derive(Debug, Clone)]
enum Op {
    Acquire(u8),
    Release(usize, u8),
    Cancel(usize),
    Advance(u64),
    SetLimit(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Model {
    Queued,
    Running,
    Done,
}

/// The scheduler plus a model of every ticket it issued.
struct Harness {
    s: PriorityScheduler,
    clock: ManualClock,
    issued: Vec<u64>,
    model: HashMap<u64, Model>,
    granted: HashSet<u64>,
}

impl Harness {
    fn new(cfg: SchedulerConfig) -> Self {
        let clock = ManualClock::new(0);
        let s = PriorityScheduler::new(cfg, Arc::new(clock.clone())).unwrap();
        Self {
            s,
            clock,
            issued: Vec::new(),
            model: HashMap::new(),
            granted: HashSet::new(),
        }
    }

    fn count(&self, m: Model) -> usize {
        self.model.values().filter(|&&v| v == m).count()
    }

    fn grant(&mut self, tickets: &[u64]) {
        for &t in tickets {
            assert_eq!(
                self.model.get(&t),
                Some(&Model::Queued),
                "granted non-queued {t}"
            );
            assert!(self.granted.insert(t), "ticket {t} granted twice");
            self.model.insert(t, Model::Running);
        }
    }

    fn pick(&self, idx: usize) -> u64 {
        if self.issued.is_empty() {
            424_242
        } else {
            self.issued[idx % self.issued.len()]
        }
    }

    fn apply(&mut self, op: &Op) {
        let mut granted_any = false;
        match *op {
            Op::Acquire(p) => match self.s.acquire(p) {
                Ok((t, now)) => {
                    assert!(p <= 9);
                    assert!(!self.model.contains_key(&t), "ticket {t} reused");
                    self.issued.push(t);
                    self.model.insert(t, Model::Queued);
                    if now {
                        self.grant(&[t]);
                        granted_any = true;
                    }
                }
                Err(Error::QueueFull { .. }) => {
                    assert_eq!(self.count(Model::Queued), self.s.max_queue());
                }
                Err(e) => assert!(p > 9, "unexpected {e}"),
            },
            Op::Release(idx, o) => {
                let t = self.pick(idx);
                let outcome = [
                    Outcome::Success,
                    Outcome::Overload,
                    Outcome::Error,
                    Outcome::Ignored,
                ][usize::from(o % 4)];
                let was = self.model.get(&t).copied();
                match self.s.release(t, outcome, 0.01) {
                    Ok(g) => {
                        assert_eq!(was, Some(Model::Running));
                        self.model.insert(t, Model::Done);
                        granted_any = !g.is_empty();
                        self.grant(&g);
                    }
                    Err(_) => assert_ne!(was, Some(Model::Running)),
                }
            }
            Op::Cancel(idx) => {
                let t = self.pick(idx);
                let was = self.model.get(&t).copied();
                let g = self.s.cancel(t);
                if matches!(was, Some(Model::Queued | Model::Running)) {
                    self.model.insert(t, Model::Done);
                }
                if was == Some(Model::Queued) {
                    assert!(g.is_empty(), "cancelling a queued ticket granted {g:?}");
                }
                granted_any = !g.is_empty();
                self.grant(&g);
            }
            Op::Advance(ms) => self.clock.advance_ns(ms * 1_000_000),
            Op::SetLimit(l) => {
                let g = self.s.set_limit(l).unwrap();
                granted_any = !g.is_empty();
                self.grant(&g);
            }
        }
        self.check(granted_any);
    }

    fn check(&self, granted_any: bool) {
        let st = self.s.state.lock();
        let running = self.count(Model::Running);
        let queued = self.count(Model::Queued);
        assert_eq!(st.in_flight, running);
        assert_eq!(st.queued, queued);
        assert_eq!(st.live.iter().sum::<usize>(), queued);
        assert_eq!(st.tickets.len(), running + queued);
        assert!(st.in_flight <= self.s.cfg.max_concurrency);
        assert!(st.queued <= self.s.cfg.max_queue);
        if granted_any {
            assert!(st.in_flight <= st.slots(), "granted beyond the limit");
        }
        assert!(
            st.queued == 0 || st.in_flight >= st.slots(),
            "idle slot with a queue"
        );
        let lim = st.limit;
        assert!(lim >= self.s.cfg.min_concurrency as f64);
        assert!(lim <= self.s.cfg.max_concurrency as f64);
        for (p, q) in st.queues.iter().enumerate() {
            assert!(q.len() <= 2 * st.live[p] + 33);
            if let Some(&(t, _)) = q.front() {
                assert!(st.is_queued(t), "tombstone at a queue front");
            }
        }
    }

    /// Cancel / release everything; afterwards nothing may remain.
    fn drain(&mut self, release_some: bool) {
        let live: Vec<u64> = self.issued.clone();
        for (i, t) in live.into_iter().enumerate() {
            if release_some && i % 2 == 0 && self.model.get(&t) == Some(&Model::Running) {
                let g = self.s.release(t, Outcome::Success, 0.0).unwrap();
                self.model.insert(t, Model::Done);
                self.grant(&g);
            } else {
                let g = self.s.cancel(t);
                self.model.insert(t, Model::Done);
                self.grant(&g);
            }
        }
        // Granted while draining: cancel those too.
        for t in self.issued.clone() {
            let g = self.s.cancel(t);
            assert!(g.is_empty());
            self.model.insert(t, Model::Done);
        }
        let st = self.s.state.lock();
        assert_eq!((st.in_flight, st.queued), (0, 0));
        assert!(st.tickets.is_empty(), "ticket map not empty");
        assert!(st.queues.iter().all(|q| q.is_empty()), "queue not empty");
        assert!(st.live.iter().all(|&n| n == 0));
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..11).prop_map(Op::Acquire),
        3 => (any::<usize>(), any::<u8>()).prop_map(|(i, o)| Op::Release(i, o)),
        2 => any::<usize>().prop_map(Op::Cancel),
        1 => (0u64..3000).prop_map(Op::Advance),
        1 => (0.3f64..12.0).prop_map(Op::SetLimit),
    ]
}

fn config() -> impl Strategy<Value = SchedulerConfig> {
    (1usize..6, 0usize..8, any::<bool>(), 0.1f64..0.9).prop_map(|(max, queue, adaptive, df)| {
        SchedulerConfig {
            max_concurrency: max,
            min_concurrency: 1,
            initial_concurrency: None,
            max_queue: queue,
            adaptive,
            aging_s: 1.0,
            decrease_factor: df,
            increase_step: 1.0,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_slot_or_ticket_leaks(cfg in config(), ops in prop::collection::vec(op(), 1..200)) {
        let mut h = Harness::new(cfg);
        for o in &ops {
            h.apply(o);
        }
        h.drain(true);
    }
}

/// A small deterministic xorshift generator, so the long run is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 100,000 random sequences (about 1.3 million operations), each drained
/// and checked for leaks.
#[test]
fn hundred_thousand_random_sequences_leak_nothing() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for _ in 0..100_000 {
        let cfg = SchedulerConfig {
            max_concurrency: 1 + rng.below(4) as usize,
            max_queue: rng.below(6) as usize,
            adaptive: rng.below(2) == 0,
            aging_s: 1.0,
            ..SchedulerConfig::default()
        };
        let mut h = Harness::new(cfg);
        let len = 1 + rng.below(24);
        for _ in 0..len {
            let o = match rng.below(11) {
                0..=3 => Op::Acquire(rng.below(10) as u8),
                4..=6 => Op::Release(rng.next() as usize, rng.below(4) as u8),
                7..=8 => Op::Cancel(rng.next() as usize),
                9 => Op::Advance(rng.below(3000)),
                _ => Op::SetLimit(0.5 + rng.below(80) as f64 / 10.0),
            };
            h.apply(&o);
        }
        h.drain(rng.below(2) == 0);
    }
}
