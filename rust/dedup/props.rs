//! Property tests of the deduplicator: random join / complete / fail /
//! leave / clock sequences over a few keys; no follower is ever left hanging.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Debug, Clone)]
enum Op {
    Join(usize),
    Complete(usize),
    Fail(usize, bool),
    Leave(usize, usize),
    Advance(u64),
    Sweep,
}

/// The deduplicator plus a model of who leads and who waits on each key.
struct Harness {
    d: RequestDeduplicator<u64>,
    clock: ManualClock,
    leader: HashMap<usize, u64>,
    followers: HashMap<usize, Vec<u64>>,
    /// Every follower ticket handed out, and those resolved (woken, failed,
    /// promoted or left): each must be resolved exactly once.
    issued: HashSet<u64>,
    resolved: HashSet<u64>,
}

impl Harness {
    fn resolve(&mut self, tickets: &[u64]) {
        for t in tickets {
            assert!(self.issued.contains(t), "unknown ticket {t} returned");
            assert!(self.resolved.insert(*t), "ticket {t} resolved twice");
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Join(k) => match self.d.join(KEYS[k]) {
                Join::Leader(t) => {
                    if t & UNTRACKED_BIT == 0 {
                        assert!(!self.leader.contains_key(&k), "two leaders for {k}");
                        self.leader.insert(k, t);
                    } else {
                        assert!(!self.leader.contains_key(&k));
                    }
                }
                Join::Follower(t) => {
                    assert!(self.leader.contains_key(&k), "follower without a leader");
                    assert!(self.issued.insert(t));
                    self.followers.entry(k).or_default().push(t);
                }
                Join::Done(v) => {
                    assert!(!self.leader.contains_key(&k));
                    assert_eq!(v, k as u64);
                }
            },
            Op::Complete(k) => {
                if let Some(t) = self.leader.remove(&k) {
                    let woken = self.d.complete(KEYS[k], t, k as u64).unwrap();
                    let expect = self.followers.remove(&k).unwrap_or_default();
                    assert_eq!(woken, expect);
                    self.resolve(&woken);
                } else {
                    assert!(self.d.complete(KEYS[k], 12_345, 0).is_err());
                }
            }
            Op::Fail(k, transient) => {
                if let Some(t) = self.leader.remove(&k) {
                    let (next, failed) = self.d.fail(KEYS[k], t, transient).unwrap();
                    let fs = self.followers.entry(k).or_default();
                    if transient && !fs.is_empty() {
                        let promoted = fs.remove(0);
                        assert_eq!((next, failed.len()), (Some(promoted), 0));
                        self.leader.insert(k, promoted);
                        self.resolve(&[promoted]);
                    } else {
                        assert_eq!(next, None);
                        let expect = self.followers.remove(&k).unwrap_or_default();
                        assert_eq!(failed, expect);
                        self.resolve(&failed);
                    }
                }
            }
            Op::Leave(k, i) => {
                let fs = self.followers.entry(k).or_default();
                if !fs.is_empty() {
                    let t = fs.remove(i % fs.len());
                    self.d.leave(KEYS[k], t).unwrap();
                    self.d.leave(KEYS[k], t).unwrap();
                    self.resolve(&[t]);
                }
            }
            Op::Advance(ms) => self.clock.advance_ns(ms * 1_000_000),
            Op::Sweep => {
                self.d.sweep();
            }
        }
        self.check();
    }

    fn check(&self) {
        let waiting: usize = self.followers.values().map(Vec::len).sum();
        assert_eq!(self.d.waiting(), waiting);
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

    /// Complete every leader (promoting until nobody waits), then let the
    /// window pass: every follower resolved, every map empty.
    fn drain(&mut self) {
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
        let st = self.d.state.lock();
        assert!(st.map.is_empty() && st.done_order.is_empty());
        assert_eq!((st.in_flight, st.waiting), (0, 0));
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..KEYS.len()).prop_map(Op::Join),
        2 => (0..KEYS.len()).prop_map(Op::Complete),
        2 => (0..KEYS.len(), any::<bool>()).prop_map(|(k, t)| Op::Fail(k, t)),
        2 => (0..KEYS.len(), any::<usize>()).prop_map(|(k, i)| Op::Leave(k, i)),
        1 => (0u64..2000).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_follower_left_hanging(
        window_ms in prop_oneof![Just(0u64), 1u64..3000],
        max_entries in 1usize..6,
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let clock = ManualClock::new(0);
        let d = RequestDeduplicator::new(
            window_ms as f64 / 1000.0, max_entries, Arc::new(clock.clone())).unwrap();
        let mut h = Harness {
            d,
            clock,
            leader: HashMap::new(),
            followers: HashMap::new(),
            issued: HashSet::new(),
            resolved: HashSet::new(),
        };
        for o in &ops {
            h.apply(o);
        }
        h.drain();
    }
}
