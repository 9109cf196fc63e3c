//! Property tests of the deduplicator: random join / complete / fail /
//! cancel / leave / clock sequences over a few keys, with waiters that count
//! their wake-ups and drops. Whatever the order, every follower is resolved
//! exactly once (woken by a `complete` or a permanent `fail`, promoted, or
//! forgotten at its own `cancel`), every waiter is dropped exactly once, and
//! once every leader is done the map is empty.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex as PlMutex;
use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Debug, Clone)]
enum Op {
    /// key, whether the follower (if it follows) leaves a waiter
    Join(usize, bool),
    Complete(usize),
    Fail(usize, bool),
    /// key, which follower (its task cancelled and its handler run at once)
    CancelFollower(usize, usize),
    /// key, which follower: its future is cancelled, its handler runs later
    Die(usize, usize),
    /// run the handlers of the dead followers (they `cancel`)
    Reap,
    CancelLeader(usize),
    Leave(usize, usize),
    Advance(u64),
    Sweep,
}

/// What happened to each waiter: wake-ups and drops by probe id.
#[derive(Default)]
struct Log {
    woken: HashMap<u64, usize>,
    dropped: HashMap<u64, usize>,
}

struct Probe {
    id: u64,
    log: Arc<PlMutex<Log>>,
}

impl Probe {
    fn wake(self) {
        *self.log.lock().woken.entry(self.id).or_default() += 1;
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        *self.log.lock().dropped.entry(self.id).or_default() += 1;
    }
}

/// The deduplicator plus a model of who leads and who waits on each key.
struct Harness {
    d: RequestDeduplicator<u64, Probe>,
    clock: ManualClock,
    log: Arc<PlMutex<Log>>,
    leader: HashMap<usize, u64>,
    followers: HashMap<usize, Vec<u64>>,
    /// Followers whose future was cancelled but whose handler has not run.
    dead: HashSet<u64>,
    /// Every follower handed out (with a waiter or not), and those resolved
    /// (woken, failed, promoted or cancelled): each exactly once.
    issued: HashSet<u64>,
    /// The probe each follower left, by ticket; probes handed out.
    with_waiter: HashMap<u64, u64>,
    probes: u64,
    resolved: HashSet<u64>,
    /// Check the books after every step (else at the end only).
    every_step: bool,
}

impl Harness {
    fn new(window_ms: u64, max_entries: usize, every_step: bool) -> Self {
        let clock = ManualClock::new(0);
        let d = RequestDeduplicator::new(
            window_ms as f64 / 1000.0,
            max_entries,
            Arc::new(clock.clone()),
        )
        .unwrap();
        Self {
            d,
            clock,
            log: Arc::default(),
            leader: HashMap::new(),
            followers: HashMap::new(),
            dead: HashSet::new(),
            issued: HashSet::new(),
            with_waiter: HashMap::new(),
            probes: 0,
            resolved: HashSet::new(),
            every_step,
        }
    }

    fn resolve(&mut self, t: u64) {
        assert!(self.issued.contains(&t), "unknown ticket {t} returned");
        assert!(self.resolved.insert(t), "ticket {t} resolved twice");
    }

    /// Wake what a call handed back, as the bindings do; a promoted follower
    /// whose future is already cancelled hands the lead on at once.
    fn wake(&mut self, k: usize, mut r: Resolved<Probe>) {
        loop {
            let expect = self.followers.remove(&k).unwrap_or_default();
            if r.promoted.is_none() {
                assert_eq!(r.tickets(), expect, "followers not in join order");
            }
            for (t, w) in r.followers.drain(..) {
                self.resolve(t);
                self.dead.remove(&t);
                assert_eq!(w.as_ref().map(|p| p.id), self.with_waiter.get(&t).copied());
                if let Some(w) = w {
                    w.wake();
                }
            }
            let Some((t, w)) = r.promoted.take() else {
                return;
            };
            assert_eq!(Some(&t), expect.first(), "promoted someone but the oldest");
            self.followers.insert(k, expect[1..].to_vec());
            self.resolve(t);
            self.leader.insert(k, t);
            assert_eq!(w.as_ref().map(|p| p.id), self.with_waiter.get(&t).copied());
            if !self.dead.remove(&t) {
                if let Some(w) = w {
                    w.wake();
                }
                return;
            }
            drop(w);
            self.leader.remove(&k);
            r = self.d.cancel(KEYS[k], t);
        }
    }

    fn pick(&mut self, k: usize, i: usize) -> Option<u64> {
        let fs = self.followers.get_mut(&k)?;
        (!fs.is_empty()).then(|| fs[i % fs.len()])
    }

    fn forget(&mut self, k: usize, t: u64) {
        if let Some(fs) = self.followers.get_mut(&k) {
            fs.retain(|f| *f != t);
        }
        self.resolve(t);
    }

    fn apply(&mut self, op: &Op) {
        self.step(op);
        if self.every_step {
            self.check();
        }
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Join(k, parks) => {
                self.probes += 1;
                let id = self.probes;
                let j = if parks {
                    let log = self.log.clone();
                    self.d.join_waiting(KEYS[k], Probe { id, log })
                } else {
                    self.d.join(KEYS[k])
                };
                match j {
                    Join::Leader(t) => {
                        assert!(!self.leader.contains_key(&k), "two leaders for {k}");
                        if t & UNTRACKED_BIT == 0 {
                            self.leader.insert(k, t);
                        }
                    }
                    Join::Follower(t) => {
                        assert!(self.leader.contains_key(&k), "follower without a leader");
                        assert!(self.issued.insert(t));
                        if parks {
                            self.with_waiter.insert(t, id);
                        }
                        self.followers.entry(k).or_default().push(t);
                    }
                    Join::Done(v) => {
                        assert!(!self.leader.contains_key(&k));
                        assert_eq!(v, k as u64);
                    }
                }
            }
            Op::Complete(k) => match self.leader.remove(&k) {
                Some(t) => {
                    let r = self.d.complete(KEYS[k], t, k as u64).unwrap();
                    assert!(r.promoted.is_none());
                    self.wake(k, r);
                }
                None => assert!(self.d.complete(KEYS[k], 12_345, 0).is_err()),
            },
            Op::Fail(k, transient) => match self.leader.remove(&k) {
                Some(t) => {
                    let r = self.d.fail(KEYS[k], t, transient).unwrap();
                    self.wake(k, r);
                }
                None => assert!(self.d.fail(KEYS[k], 12_345, transient).is_err()),
            },
            Op::CancelLeader(k) => match self.leader.remove(&k) {
                Some(t) => {
                    let r = self.d.cancel(KEYS[k], t);
                    self.wake(k, r);
                    assert!(self.d.cancel(KEYS[k], t).is_empty(), "cancel twice");
                }
                None => assert!(self.d.cancel(KEYS[k], 12_345).is_empty()),
            },
            Op::CancelFollower(k, i) => {
                if let Some(t) = self.pick(k, i) {
                    assert!(self.d.cancel(KEYS[k], t).is_empty());
                    self.dead.remove(&t);
                    self.forget(k, t);
                }
            }
            Op::Die(k, i) => {
                if let Some(t) = self.pick(k, i) {
                    self.dead.insert(t);
                }
            }
            Op::Reap => {
                let mut dead: Vec<u64> = self.dead.drain().collect();
                dead.sort_unstable();
                for t in dead {
                    let k = (0..KEYS.len())
                        .find(|k| self.followers.get(k).is_some_and(|fs| fs.contains(&t)))
                        .expect("a dead follower still waits");
                    assert!(self.d.cancel(KEYS[k], t).is_empty());
                    self.forget(k, t);
                }
            }
            Op::Leave(k, i) => {
                if let Some(t) = self.pick(k, i) {
                    self.d.leave(KEYS[k], t).unwrap();
                    self.d.leave(KEYS[k], t).unwrap();
                    self.dead.remove(&t);
                    self.forget(k, t);
                }
                if let Some(&t) = self.leader.get(&k) {
                    assert!(self.d.leave(KEYS[k], t).is_err(), "a leader left");
                }
            }
            Op::Advance(ms) => self.clock.advance_ns(ms * 1_000_000),
            Op::Sweep => {
                self.d.sweep();
            }
        }
    }

    fn check(&self) {
        let waiting: usize = self.followers.values().map(Vec::len).sum();
        assert_eq!(self.d.waiting(), waiting);
        let parked = self
            .followers
            .values()
            .flatten()
            .filter(|t| self.with_waiter.contains_key(t))
            .count();
        assert_eq!(self.d.parked(), parked);
        assert_eq!(self.d.in_flight(), self.leader.len());
        assert!(self.d.len() <= self.d.max_entries);
        let st = self.d.state.lock();
        let done = st
            .map
            .values()
            .filter(|e| matches!(e, Entry::Done { .. }))
            .count();
        assert_eq!(st.done_order.len(), done, "stale expiry records");
    }

    /// Reap the dead, complete every leader (failing some transiently
    /// first), then let the window pass: every follower resolved once,
    /// every waiter dropped once, every map empty.
    fn drain(mut self) {
        self.check();
        self.every_step = true;
        self.apply(&Op::Reap);
        for k in 0..KEYS.len() {
            while self.leader.contains_key(&k) {
                self.apply(&Op::Fail(k, true));
                if self.leader.contains_key(&k) {
                    self.apply(&Op::Complete(k));
                }
            }
        }
        assert_eq!(self.resolved, self.issued, "a follower was left hanging");
        self.clock.advance_ns(1 << 50);
        self.d.sweep();
        {
            let st = self.d.state.lock();
            assert!(st.map.is_empty() && st.done_order.is_empty());
            assert_eq!((st.in_flight, st.waiting), (0, 0));
        }
        let log = self.log.lock();
        for (id, n) in &log.woken {
            assert_eq!(*n, 1, "probe {id} woken {n} times");
        }
        for id in 1..=self.probes {
            let dropped = log.dropped.get(&id).copied().unwrap_or(0);
            let parked = self.with_waiter.values().any(|p| *p == id);
            // a probe that never followed was dropped by its join, if it was made
            assert!(dropped <= 1, "probe {id} dropped {dropped} times");
            if parked {
                assert_eq!(dropped, 1, "the waiter of probe {id} leaked");
            }
        }
        let made = log.dropped.len() as u64;
        drop(log);
        assert!(made <= self.probes);
    }
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS.len();
    prop_oneof![
        6 => (k.clone(), any::<bool>()).prop_map(|(k, p)| Op::Join(k, p)),
        2 => k.clone().prop_map(Op::Complete),
        2 => (k.clone(), any::<bool>()).prop_map(|(k, t)| Op::Fail(k, t)),
        1 => (k.clone(), any::<usize>()).prop_map(|(k, i)| Op::CancelFollower(k, i)),
        1 => (k.clone(), any::<usize>()).prop_map(|(k, i)| Op::Die(k, i)),
        1 => Just(Op::Reap),
        1 => k.clone().prop_map(Op::CancelLeader),
        1 => (k, any::<usize>()).prop_map(|(k, i)| Op::Leave(k, i)),
        1 => (0u64..2000).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
    ]
}

/// SplitMix64: the cheap generator of the bulk sequences (proptest's own
/// strategies cost tens of microseconds an op in a debug build).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An op with the weights of [`op`].
    fn op(&mut self) -> Op {
        let k = self.below(KEYS.len() as u64) as usize;
        let flag = self.next() & 1 == 1;
        let i = self.next() as usize;
        match self.below(18) {
            0..=5 => Op::Join(k, flag),
            6..=7 => Op::Complete(k),
            8..=9 => Op::Fail(k, flag),
            10 => Op::CancelFollower(k, i),
            11 => Op::Die(k, i),
            12 => Op::Reap,
            13 => Op::CancelLeader(k),
            14 => Op::Leave(k, i),
            15 => Op::Advance(self.below(2000)),
            _ => Op::Sweep,
        }
    }
}

/// Sequences per case: one shrinkable sequence from proptest, the rest
/// drawn from the case's seed.
const SEQUENCES_PER_CASE: usize = 100;

proptest! {
    // 1,000 cases of 100 sequences: 100,000 random sequences, each on a fresh map.
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn nothing_is_leaked_and_every_follower_is_resolved_once(
        window_ms in prop_oneof![Just(0u64), 1u64..3000],
        max_entries in 1usize..6,
        ops in prop::collection::vec(op(), 0..60),
        seed in any::<u64>(),
    ) {
        let mut h = Harness::new(window_ms, max_entries, true);
        for o in &ops {
            h.apply(o);
        }
        h.drain();
        let mut rng = Rng(seed);
        for n in 1..SEQUENCES_PER_CASE {
            // one in ten bulk sequences checks the books after every step
            let mut h = Harness::new(window_ms, max_entries, n % 10 == 0);
            for _ in 0..rng.below(40) {
                let o = rng.op();
                h.apply(&o);
            }
            h.drain();
        }
    }
}
