//! `RequestDeduplicator`: identical requests in flight share one call.
//!
//! The first [`join`](RequestDeduplicator::join) of a key *leads* (runs the
//! request); later joins of the same key *follow* (wait for the leader's
//! result). The deduplicator only decides; the caller keeps a
//! `ticket -> future` map and wakes the tickets that
//! [`complete`](RequestDeduplicator::complete) and
//! [`fail`](RequestDeduplicator::fail) return. No follower is ever left
//! hanging: each follower ticket is returned by exactly one `complete` /
//! non-transient `fail`, or promoted to leader by a transient `fail`, or
//! forgotten by its own [`leave`](RequestDeduplicator::leave).
//!
//! With `window_s > 0` a completed value is kept that long and answers
//! later joins directly ([`Join::Done`]).
//!
//! Capacity: `max_entries` bounds the entries (in flight plus completed).
//! A new key at capacity first evicts the oldest completed entry; in-flight
//! entries are never evicted. When in-flight entries alone fill the map, the
//! new key's join still leads but is *untracked*: its ticket carries
//! [`UNTRACKED_BIT`], nobody can follow it, and `complete` / `fail` for it
//! are no-ops. The request simply runs without deduplication.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::clock::{self, SharedClock};
use crate::error::{non_negative, Error, Result};

/// Code of [`Join::Leader`] (run the request).
pub const LEADER: u8 = 0;
/// Code of [`Join::Follower`] (wait to be woken).
pub const FOLLOWER: u8 = 1;
/// Code of [`Join::Done`] (a completed value within the window).
pub const DONE: u8 = 2;
/// Set in the ticket of an untracked leader (the map was full of in-flight keys).
pub const UNTRACKED_BIT: u64 = 1 << 62;

/// What a [`RequestDeduplicator::join`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Join<V> {
    /// Run the request, then `complete` or `fail` with this ticket.
    Leader(u64),
    /// Wait; this ticket is returned by the leader's `complete` / `fail`
    /// (or promoted to leader by a transient failure).
    Follower(u64),
    /// A result completed within the window.
    Done(V),
}

impl<V> Join<V> {
    /// [`LEADER`], [`FOLLOWER`] or [`DONE`].
    pub fn code(&self) -> u8 {
        match self {
            Join::Leader(_) => LEADER,
            Join::Follower(_) => FOLLOWER,
            Join::Done(_) => DONE,
        }
    }
}

/// Counters of a deduplicator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Joins that led (including untracked ones).
    pub joins_leader: u64,
    /// Joins that followed a leader in flight.
    pub joins_follower: u64,
    /// Joins answered from the window.
    pub hits_window: u64,
    /// Followers promoted to leader after a transient failure.
    pub promotions: u64,
    /// `fail` calls by a tracked leader.
    pub failures: u64,
    /// `complete` calls by a tracked leader.
    pub completions: u64,
    /// Followers that left.
    pub leaves: u64,
    /// Leaders that ran untracked because in-flight keys filled the map.
    pub untracked: u64,
    /// Completed entries evicted to make room.
    pub evictions: u64,
    /// Completed entries dropped at the end of their window.
    pub expirations: u64,
}

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

enum Entry<V> {
    InFlight {
        leader: u64,
        /// Ascending tickets, oldest first.
        followers: VecDeque<u64>,
    },
    Done {
        value: V,
        expires_ns: u64,
    },
}

struct State<V> {
    map: HashMap<Arc<str>, Entry<V>, BuildHasherDefault<KeyHasher>>,
    /// Completed keys in completion (= expiry) order.
    done_order: VecDeque<(Arc<str>, u64)>,
    next_ticket: u64,
    in_flight: usize,
    waiting: usize,
    stats: DedupStats,
}

/// The in-flight join map; thread-safe (`&self` methods, one short lock).
pub struct RequestDeduplicator<V: Clone> {
    window_ns: u64,
    max_entries: usize,
    clock: SharedClock,
    state: Mutex<State<V>>,
}

impl<V: Clone> std::fmt::Debug for RequestDeduplicator<V> {
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

impl<V: Clone> RequestDeduplicator<V> {
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

    /// Lead, follow, or get the value completed within the window.
    pub fn join(&self, key: &str) -> Join<V> {
        let mut garbage = Vec::new();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        self.expire(st, &mut garbage);
        let t = st.next_ticket;
        match st.map.get_mut(key) {
            Some(Entry::InFlight { followers, .. }) => {
                followers.push_back(t);
                st.next_ticket += 1;
                st.waiting += 1;
                st.stats.joins_follower += 1;
                return Join::Follower(t);
            }
            Some(Entry::Done { value, .. }) => {
                let v = value.clone();
                st.stats.hits_window += 1;
                return Join::Done(v);
            }
            None => {}
        }
        st.next_ticket += 1;
        st.stats.joins_leader += 1;
        if st.map.len() >= self.max_entries && !self.evict_one(st, &mut garbage) {
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
    /// follower tickets to wake with it, and keeps the value for the window.
    pub fn complete(&self, key: &str, ticket: u64, value: V) -> Result<Vec<u64>> {
        if ticket & UNTRACKED_BIT != 0 {
            return Ok(Vec::new());
        }
        let mut garbage = Vec::new();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        self.expire(st, &mut garbage);
        let (k, entry) = self.take_led(st, key, ticket)?;
        let Entry::InFlight { followers, .. } = entry else {
            unreachable!("take_led returns in-flight entries")
        };
        st.waiting -= followers.len();
        st.stats.completions += 1;
        if self.window_ns > 0 {
            let expires_ns = self.clock.now_ns().saturating_add(self.window_ns);
            st.done_order.push_back((k.clone(), expires_ns));
            st.map.insert(k, Entry::Done { value, expires_ns });
        } else {
            garbage.push(value);
        }
        Ok(followers.into())
    }

    /// The leader `ticket` of `key` failed (or was cancelled). Transient:
    /// the oldest follower becomes the leader and is returned (`None` if
    /// there was none). Otherwise every follower is returned, to be failed
    /// with the same error. The entry goes when nobody is left.
    pub fn fail(&self, key: &str, ticket: u64, transient: bool) -> Result<(Option<u64>, Vec<u64>)> {
        if ticket & UNTRACKED_BIT != 0 {
            return Ok((None, Vec::new()));
        }
        let mut guard = self.state.lock();
        let st = &mut *guard;
        match st.map.get_mut(key) {
            Some(Entry::InFlight { leader, followers }) if *leader == ticket => {
                if transient {
                    if let Some(next) = followers.pop_front() {
                        *leader = next;
                        st.waiting -= 1;
                        st.stats.failures += 1;
                        st.stats.promotions += 1;
                        return Ok((Some(next), Vec::new()));
                    }
                }
            }
            _ => return Err(not_leader(key, ticket)),
        }
        let (_, entry) = self.take_led(st, key, ticket)?;
        let Entry::InFlight { followers, .. } = entry else {
            unreachable!("take_led returns in-flight entries")
        };
        st.waiting -= followers.len();
        st.stats.failures += 1;
        Ok((None, followers.into()))
    }

    /// Follower `ticket` of `key` gave up. Idempotent: unknown tickets and
    /// keys are ignored. The leader cannot leave (use [`fail`](Self::fail),
    /// which hands the work to a follower).
    pub fn leave(&self, key: &str, ticket: u64) -> Result<()> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        if let Some(Entry::InFlight { leader, followers }) = st.map.get_mut(key) {
            if *leader == ticket {
                return Err(Error::InvalidArgument {
                    what: "ticket",
                    detail: format!(
                        "ticket {ticket} leads key {key:?}; a leader calls fail, not leave"
                    ),
                });
            }
            if let Ok(i) = followers.binary_search(&ticket) {
                followers.remove(i);
                st.waiting -= 1;
                st.stats.leaves += 1;
            }
        }
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

    /// Entries, in flight and completed (expired ones are dropped first).
    pub fn len(&self) -> usize {
        let mut garbage = Vec::new();
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
        let mut garbage = Vec::new();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        self.expire(st, &mut garbage);
        garbage.len()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DedupStats {
        self.state.lock().stats.clone()
    }

    /// Remove `key`'s in-flight entry if `ticket` leads it.
    fn take_led(&self, st: &mut State<V>, key: &str, ticket: u64) -> Result<(Arc<str>, Entry<V>)> {
        match st.map.get(key) {
            Some(Entry::InFlight { leader, .. }) if *leader == ticket => {}
            _ => return Err(not_leader(key, ticket)),
        }
        st.in_flight -= 1;
        Ok(st.map.remove_entry(key).expect("entry checked above"))
    }

    /// Drop completed entries whose window ended; their values go to
    /// `garbage`, dropped by the caller after the lock (a value's destructor
    /// may run arbitrary code).
    fn expire(&self, st: &mut State<V>, garbage: &mut Vec<V>) {
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
                garbage.push(v);
            }
        }
    }

    /// Evict the oldest completed entry; false if there is none.
    fn evict_one(&self, st: &mut State<V>, garbage: &mut Vec<V>) -> bool {
        while let Some((k, exp)) = st.done_order.pop_front() {
            if let Some(v) = Self::remove_done(st, &k, exp) {
                st.stats.evictions += 1;
                garbage.push(v);
                return true;
            }
        }
        false
    }

    fn remove_done(st: &mut State<V>, key: &str, exp: u64) -> Option<V> {
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
