//! `RequestDeduplicator`: identical requests in flight share one call.
//!
//! The first [`join`](RequestDeduplicator::join) of a key *leads* (runs the
//! request); later joins of the same key *follow* (wait for the leader's
//! result). A follower that joins with a *waiter*
//! ([`join_waiting`](RequestDeduplicator::join_waiting): in the bindings, its
//! asyncio future and its loop's completion queue) leaves it here: the
//! followers' queue, waiters included, lives in the core alone. The leader's
//! [`complete`](RequestDeduplicator::complete) and
//! [`fail`](RequestDeduplicator::fail), and any caller's
//! [`cancel`](RequestDeduplicator::cancel), hand back a [`Resolved`]: the
//! followers to wake (with the value or the error) and the follower promoted
//! to leader, each with its waiter, for the caller to wake once this map's
//! lock is released.
//!
//! Promotion is decided here: a leader that cancels, or fails transiently,
//! hands the lead to the oldest follower; a follower that gives up after its
//! promotion (its `cancel` finds it leading) hands it on the same way.
//!
//! No follower is ever left hanging: each follower ticket is returned by
//! exactly one `complete` / non-transient `fail` (with its waiter), or
//! promoted to leader by a transient `fail` or a leader's `cancel` (with its
//! waiter), or forgotten by its own [`cancel`](RequestDeduplicator::cancel) /
//! [`leave`](RequestDeduplicator::leave) (its waiter dropped).
//!
//! With `window_s > 0` a completed value is kept that long and answers
//! later joins directly ([`Join::Done`]).
//!
//! Capacity: `max_entries` bounds the entries (in flight plus completed).
//! A new key at capacity first evicts the oldest completed entry; in-flight
//! entries are never evicted. When in-flight entries alone fill the map, the
//! new key's join still leads but is *untracked*: its ticket carries
//! [`UNTRACKED_BIT`], nobody can follow it, and `complete` / `fail` /
//! `cancel` for it are no-ops. The request simply runs without deduplication.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::clock::{self, SharedClock};
use crate::error::{non_negative, Error, Result};

mod answers;

pub use answers::{DedupStats, Join, Resolved, DONE, FOLLOWER, LEADER, UNTRACKED_BIT};

/// xxh3 over the key's bytes; keys are hex digests or request encodings.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A follower in a key's queue: its ticket and, if it joined with one, its waiter.
struct Follower<W> {
    ticket: u64,
    waiter: Option<W>,
}

enum Entry<V, W> {
    InFlight {
        leader: u64,
        /// Ascending tickets, oldest first.
        followers: VecDeque<Follower<W>>,
    },
    Done {
        value: V,
        expires_ns: u64,
    },
}

struct State<V, W> {
    map: HashMap<Arc<str>, Entry<V, W>, BuildHasherDefault<KeyHasher>>,
    /// Completed keys in completion (= expiry) order.
    done_order: VecDeque<(Arc<str>, u64)>,
    next_ticket: u64,
    in_flight: usize,
    waiting: usize,
    stats: DedupStats,
}

/// The in-flight join map; thread-safe (`&self` methods, one short lock).
///
/// `V` is the leader's result, `W` what a waiting follower leaves behind to
/// be woken by (the bindings: an asyncio future and its loop's queue).
pub struct RequestDeduplicator<V: Clone, W = ()> {
    window_ns: u64,
    max_entries: usize,
    clock: SharedClock,
    state: Mutex<State<V, W>>,
}

impl<V: Clone, W> std::fmt::Debug for RequestDeduplicator<V, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestDeduplicator")
            .field("window_ns", &self.window_ns)
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

fn not_leader(key: &str, ticket: u64) -> Error {
    Error::InvalidArgument {
        what: "ticket",
        detail: format!("ticket {ticket} is not the leader of key {key:?}"),
    }
}

/// What is dropped once the lock is released: values leaving the window and
/// waiters nobody will wake (their destructors may run arbitrary code).
struct Garbage<V, W> {
    values: Vec<V>,
    waiters: Vec<W>,
}

impl<V, W> Garbage<V, W> {
    fn new() -> Self {
        Self {
            values: Vec::new(),
            waiters: Vec::new(),
        }
    }
}

impl<V: Clone, W> RequestDeduplicator<V, W> {
    /// A deduplicator keeping completed values `window_s` seconds (0: not at
    /// all) with at most `max_entries` (>= 1) entries.
    pub fn new(window_s: f64, max_entries: usize, clock: SharedClock) -> Result<Self> {
        non_negative("window_s", window_s)?;
        if max_entries < 1 {
            return Err(Error::config("max_entries", max_entries, "must be >= 1"));
        }
        Ok(Self {
            window_ns: clock::secs_to_ns(window_s),
            max_entries,
            clock,
            state: Mutex::new(State {
                map: HashMap::default(),
                done_order: VecDeque::new(),
                next_ticket: 1,
                in_flight: 0,
                waiting: 0,
                stats: DedupStats::default(),
            }),
        })
    }

    /// Lead, follow, or get the value completed within the window. A
    /// follower that joins this way has no waiter: it learns its fate from
    /// the tickets that `complete` / `fail` return.
    pub fn join(&self, key: &str) -> Join<V> {
        let mut garbage = Garbage::new();
        self.join_locked(key, None, &mut garbage)
    }

    /// Like [`join`](Self::join), but a follower leaves `waiter` in its
    /// place in the queue, handed back (to be woken) by the call that
    /// resolves it. When the join does not follow, `waiter` is dropped.
    pub fn join_waiting(&self, key: &str, waiter: W) -> Join<V> {
        let mut garbage = Garbage::new();
        self.join_locked(key, Some(waiter), &mut garbage)
    }

    fn join_locked(&self, key: &str, waiter: Option<W>, garbage: &mut Garbage<V, W>) -> Join<V> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        self.expire(st, garbage);
        let t = st.next_ticket;
        match st.map.get_mut(key) {
            Some(Entry::InFlight { followers, .. }) => {
                followers.push_back(Follower { ticket: t, waiter });
                st.next_ticket += 1;
                st.waiting += 1;
                st.stats.joins_follower += 1;
                return Join::Follower(t);
            }
            Some(Entry::Done { value, .. }) => {
                let v = value.clone();
                st.stats.hits_window += 1;
                garbage.waiters.extend(waiter);
                return Join::Done(v);
            }
            None => {}
        }
        garbage.waiters.extend(waiter);
        st.next_ticket += 1;
        st.stats.joins_leader += 1;
        if st.map.len() >= self.max_entries && !self.evict_one(st, garbage) {
            st.stats.untracked += 1;
            return Join::Leader(t | UNTRACKED_BIT);
        }
        st.map.insert(
            Arc::from(key),
            Entry::InFlight {
                leader: t,
                followers: VecDeque::new(),
            },
        );
        st.in_flight += 1;
        Join::Leader(t)
    }

    /// The leader `ticket` of `key` finished with `value`: returns the
    /// followers to wake with it, and keeps the value for the window.
    pub fn complete(&self, key: &str, ticket: u64, value: V) -> Result<Resolved<W>> {
        if ticket & UNTRACKED_BIT != 0 {
            return Ok(Resolved::default());
        }
        let mut garbage = Garbage::new();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        self.expire(st, &mut garbage);
        let (k, followers) = self.take_led(st, key, ticket)?;
        st.stats.completions += 1;
        if self.window_ns > 0 {
            let expires_ns = self.clock.now_ns().saturating_add(self.window_ns);
            st.done_order.push_back((k.clone(), expires_ns));
            st.map.insert(k, Entry::Done { value, expires_ns });
        } else {
            garbage.values.push(value);
        }
        drop(guard);
        Ok(Self::all(followers))
    }

    /// The leader `ticket` of `key` failed. Transient: the oldest follower
    /// becomes the leader and is returned as `promoted` (none if nobody
    /// waits). Otherwise every follower is returned, to be failed with the
    /// same error. The entry goes when nobody is left.
    pub fn fail(&self, key: &str, ticket: u64, transient: bool) -> Result<Resolved<W>> {
        if ticket & UNTRACKED_BIT != 0 {
            return Ok(Resolved::default());
        }
        let mut guard = self.state.lock();
        let st = &mut *guard;
        match st.map.get(key) {
            Some(Entry::InFlight { leader, .. }) if *leader == ticket => {}
            _ => return Err(not_leader(key, ticket)),
        }
        st.stats.failures += 1;
        if transient {
            return Ok(Self::promote(st, key));
        }
        let (_, followers) = self.take_led(st, key, ticket)?;
        drop(guard);
        Ok(Self::all(followers))
    }

    /// `ticket` of `key` gives up, whatever its role; idempotent (unknown,
    /// untracked or resolved tickets are ignored). A follower is forgotten
    /// (its waiter dropped). A leader, or a follower promoted since it
    /// joined, hands the lead to the oldest follower, as a transient
    /// [`fail`](Self::fail) does: returned as `promoted`.
    pub fn cancel(&self, key: &str, ticket: u64) -> Resolved<W> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        match st.map.get(key) {
            Some(Entry::InFlight { leader, .. }) if *leader == ticket => {
                st.stats.cancels += 1;
                Self::promote(st, key)
            }
            _ => {
                let left = Self::forget(st, key, ticket);
                drop(guard);
                drop(left);
                Resolved::default()
            }
        }
    }

    /// Follower `ticket` of `key` gave up. Idempotent: unknown tickets and
    /// keys are ignored. The leader cannot leave (use [`cancel`](Self::cancel),
    /// which hands the work to a follower).
    pub fn leave(&self, key: &str, ticket: u64) -> Result<()> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        if let Some(Entry::InFlight { leader, .. }) = st.map.get(key) {
            if *leader == ticket {
                return Err(Error::InvalidArgument {
                    what: "ticket",
                    detail: format!(
                        "ticket {ticket} leads key {key:?}; a leader calls fail or cancel, not leave"
                    ),
                });
            }
        }
        let left = Self::forget(st, key, ticket);
        drop(guard);
        drop(left);
        Ok(())
    }

    /// Keys with a running leader.
    pub fn in_flight(&self) -> usize {
        self.state.lock().in_flight
    }

    /// Followers waiting, over all keys.
    pub fn waiting(&self) -> usize {
        self.state.lock().waiting
    }

    /// Followers waiting with a waiter held here, over all keys.
    pub fn parked(&self) -> usize {
        let st = self.state.lock();
        st.map
            .values()
            .map(|e| match e {
                Entry::InFlight { followers, .. } => {
                    followers.iter().filter(|f| f.waiter.is_some()).count()
                }
                Entry::Done { .. } => 0,
            })
            .sum()
    }

    /// Entries, in flight and completed (expired ones are dropped first).
    pub fn len(&self) -> usize {
        let mut garbage = Garbage::new();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        self.expire(st, &mut garbage);
        st.map.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop completed entries whose window has passed; returns how many.
    /// (Every other call also does this, lazily.)
    pub fn sweep(&self) -> usize {
        let mut garbage = Garbage::new();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        self.expire(st, &mut garbage);
        garbage.values.len()
    }

    /// Forget every entry (in a forked child: the parent's leaders do not run
    /// here); returns the waiters held, to be dropped by the caller.
    pub fn clear(&self) -> Vec<W> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let entries: Vec<Entry<V, W>> = st.map.drain().map(|(_, e)| e).collect();
        st.done_order.clear();
        st.in_flight = 0;
        st.waiting = 0;
        drop(guard);
        let mut waiters = Vec::new();
        for e in entries {
            if let Entry::InFlight { followers, .. } = e {
                waiters.extend(followers.into_iter().filter_map(|f| f.waiter));
            }
        }
        waiters
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DedupStats {
        self.state.lock().stats.clone()
    }

    /// Remove follower `ticket` of `key` if it waits; its waiter, to be
    /// dropped after the lock.
    fn forget(st: &mut State<V, W>, key: &str, ticket: u64) -> Option<W> {
        let Some(Entry::InFlight { followers, .. }) = st.map.get_mut(key) else {
            return None;
        };
        let i = followers.binary_search_by_key(&ticket, |f| f.ticket).ok()?;
        let left = followers.remove(i).and_then(|f| f.waiter);
        st.waiting -= 1;
        st.stats.leaves += 1;
        left
    }

    fn all(followers: VecDeque<Follower<W>>) -> Resolved<W> {
        Resolved {
            followers: followers
                .into_iter()
                .map(|f| (f.ticket, f.waiter))
                .collect(),
            promoted: None,
        }
    }

    /// `key`'s leader is gone: the oldest follower leads (returned), or the
    /// entry goes if nobody waits. The caller checked the entry is in flight.
    fn promote(st: &mut State<V, W>, key: &str) -> Resolved<W> {
        if let Some(Entry::InFlight { leader, followers }) = st.map.get_mut(key) {
            if let Some(next) = followers.pop_front() {
                *leader = next.ticket;
                st.waiting -= 1;
                st.stats.promotions += 1;
                return Resolved {
                    followers: Vec::new(),
                    promoted: Some((next.ticket, next.waiter)),
                };
            }
            st.map.remove(key);
            st.in_flight -= 1;
        }
        Resolved::default()
    }

    /// Remove `key`'s in-flight entry if `ticket` leads it; its key and followers.
    fn take_led(
        &self,
        st: &mut State<V, W>,
        key: &str,
        ticket: u64,
    ) -> Result<(Arc<str>, VecDeque<Follower<W>>)> {
        match st.map.get(key) {
            Some(Entry::InFlight { leader, .. }) if *leader == ticket => {}
            _ => return Err(not_leader(key, ticket)),
        }
        st.in_flight -= 1;
        match st.map.remove_entry(key) {
            Some((k, Entry::InFlight { followers, .. })) => {
                st.waiting -= followers.len();
                Ok((k, followers))
            }
            _ => unreachable!("entry checked above"),
        }
    }

    /// Drop completed entries whose window ended; their values go to
    /// `garbage`, dropped by the caller after the lock.
    fn expire(&self, st: &mut State<V, W>, garbage: &mut Garbage<V, W>) {
        if self.window_ns == 0 || st.done_order.is_empty() {
            return;
        }
        let now = self.clock.now_ns();
        while let Some((_, exp)) = st.done_order.front() {
            if *exp > now {
                break;
            }
            let (k, exp) = st.done_order.pop_front().expect("front exists");
            if let Some(v) = Self::remove_done(st, &k, exp) {
                st.stats.expirations += 1;
                garbage.values.push(v);
            }
        }
    }

    /// Evict the oldest completed entry; false if there is none.
    fn evict_one(&self, st: &mut State<V, W>, garbage: &mut Garbage<V, W>) -> bool {
        while let Some((k, exp)) = st.done_order.pop_front() {
            if let Some(v) = Self::remove_done(st, &k, exp) {
                st.stats.evictions += 1;
                garbage.values.push(v);
                return true;
            }
        }
        false
    }

    fn remove_done(st: &mut State<V, W>, key: &str, exp: u64) -> Option<V> {
        match st.map.get(key) {
            Some(Entry::Done { expires_ns, .. }) if *expires_ns == exp => {}
            _ => return None,
        }
        match st.map.remove(key) {
            Some(Entry::Done { value, .. }) => Some(value),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
