//! `PriorityScheduler`: admission by priority with a bounded queue and an
//! adaptive (AIMD) number of concurrency slots.
//!
//! The scheduler only *decides*; it never waits. [`PriorityScheduler::acquire`]
//! either grants a slot at once or queues a ticket; every call that can free a
//! slot ([`release`](PriorityScheduler::release), [`cancel`](PriorityScheduler::cancel),
//! [`set_limit`](PriorityScheduler::set_limit)) returns the queued tickets it
//! granted, in grant order, and the caller wakes whoever waits on them.
//!
//! * Priorities `0..=9`, lower first; FIFO within a priority.
//! * Aging: a queued ticket counts one level better per `aging_s` waited
//!   (effective priority = `priority - floor(wait / aging_s)`; ties go to the
//!   older ticket), so low priorities are never starved. Only the heads of the
//!   ten FIFO queues are compared, so picking is O(10).
//! * The queue is bounded by `max_queue`; a full queue rejects at once.
//! * AIMD: the limit is a float, `slots = max(1, floor(limit))`.
//!   An `Overload` outcome multiplies it by `decrease_factor`, at most once per
//!   congestion event: a ticket granted *before* the latest decrease cannot
//!   decrease again (TCP's "one reduction per window" rule; without it a burst
//!   of 429s from one round of requests collapses the limit to the floor).
//!   A `Success` adds `increase_step / limit` while the scheduler is at least
//!   half busy (`in_flight >= limit / 2`), i.e. `+increase_step` per window of
//!   successes. Both clamp to `[min_concurrency, max_concurrency]`.
//! * Slots are never taken back: after a decrease `in_flight` may exceed the
//!   slots for a while, and nothing is granted until it drops below them.
//!
//! Invariant after every call: `queued == 0 || in_flight >= slots`.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use parking_lot::Mutex;

use crate::clock::{self, SharedClock};
use crate::error::{positive, Error, Result};

mod config;

pub use config::{Outcome, SchedulerConfig, SchedulerStats};

/// Number of priority levels; priorities are `0..PRIORITY_LEVELS`.
pub const PRIORITY_LEVELS: usize = 10;

/// Where a live ticket stands.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Queued { priority: u8, enq_ns: u64 },
    Running { waited_ns: u64, epoch: u64 },
}

/// Hasher for sequential u64 tickets: one multiply (a bijection, so
/// consecutive tickets land in distinct buckets; the high bits are mixed).
#[derive(Default)]
struct TicketHasher(u64);

impl Hasher for TicketHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type TicketMap = HashMap<u64, Slot, BuildHasherDefault<TicketHasher>>;

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    queued: usize,
    /// FIFO per priority of (ticket, enqueue time). Cancelled tickets stay as
    /// tombstones, but never at a queue's front (cancel pops them), and a
    /// queue is compacted when tombstones outnumber live tickets.
    queues: [VecDeque<(u64, u64)>; PRIORITY_LEVELS],
    live: [usize; PRIORITY_LEVELS],
    tickets: TicketMap,
    next_ticket: u64,
    /// Bumped by every multiplicative decrease.
    epoch: u64,
    latency_samples: u64,
    stats: SchedulerStats,
}

/// The priority scheduler; thread-safe (`&self` methods, one short lock).
#[derive(Debug)]
pub struct PriorityScheduler {
    cfg: SchedulerConfig,
    aging_ns: u64,
    clock: SharedClock,
    state: Mutex<State>,
}

fn not_running(ticket: impl std::fmt::Display) -> Error {
    Error::InvalidArgument {
        what: "ticket",
        detail: format!("ticket {ticket} is not running (unknown, queued or finished)"),
    }
}

/// The error for a priority outside `0..=9`.
pub fn invalid_priority(priority: impl std::fmt::Display) -> Error {
    Error::InvalidArgument {
        what: "priority",
        detail: format!("priority={priority} must be an int in 0..=9"),
    }
}

impl PriorityScheduler {
    /// A scheduler with the given settings, reading time from `clock`.
    pub fn new(cfg: SchedulerConfig, clock: SharedClock) -> Result<Self> {
        cfg.validate()?;
        let limit = cfg.initial_concurrency.unwrap_or(cfg.max_concurrency) as f64;
        let state = State {
            limit,
            in_flight: 0,
            queued: 0,
            queues: Default::default(),
            live: [0; PRIORITY_LEVELS],
            tickets: TicketMap::default(),
            next_ticket: 1,
            epoch: 0,
            latency_samples: 0,
            stats: SchedulerStats {
                max_queue: cfg.max_queue,
                ..SchedulerStats::default()
            },
        };
        Ok(Self {
            aging_ns: clock::secs_to_ns(cfg.aging_s).max(1),
            cfg,
            clock,
            state: Mutex::new(state),
        })
    }

    /// Ask for a slot at `priority` (0..=9, lower first). Returns the ticket
    /// and whether it was granted now; a queued ticket is granted later by
    /// the return value of `release`, `cancel` or `set_limit`.
    /// Fails with [`Error::QueueFull`] when it would have to wait and the
    /// queue is at capacity.
    pub fn acquire(&self, priority: u8) -> Result<(u64, bool)> {
        if usize::from(priority) >= PRIORITY_LEVELS {
            return Err(invalid_priority(priority));
        }
        let mut st = self.state.lock();
        if st.queued == 0 && st.in_flight < st.slots() {
            let ticket = st.take_ticket();
            let epoch = st.epoch;
            st.tickets.insert(
                ticket,
                Slot::Running {
                    waited_ns: 0,
                    epoch,
                },
            );
            st.in_flight += 1;
            st.stats.granted_total += 1;
            return Ok((ticket, true));
        }
        if st.queued >= self.cfg.max_queue {
            st.stats.rejected_total += 1;
            return Err(Error::QueueFull {
                capacity: self.cfg.max_queue,
            });
        }
        let ticket = st.take_ticket();
        let enq_ns = self.clock.now_ns();
        st.tickets.insert(ticket, Slot::Queued { priority, enq_ns });
        st.queues[usize::from(priority)].push_back((ticket, enq_ns));
        st.live[usize::from(priority)] += 1;
        st.queued += 1;
        st.stats.queued_total += 1;
        Ok((ticket, false))
    }

    /// Finish a running ticket: frees its slot, feeds `outcome` (and the
    /// latency, for the statistics) to the controller, and returns the
    /// tickets granted as a result, in grant order.
    pub fn release(&self, ticket: u64, outcome: Outcome, latency_s: f64) -> Result<Vec<u64>> {
        if !(latency_s.is_finite() && latency_s >= 0.0) {
            return Err(Error::InvalidArgument {
                what: "latency_s",
                detail: format!("latency_s={latency_s} must be a finite number >= 0"),
            });
        }
        let mut st = self.state.lock();
        let epoch = match st.tickets.get(&ticket) {
            Some(Slot::Running { epoch, .. }) => *epoch,
            _ => return Err(not_running(ticket)),
        };
        st.tickets.remove(&ticket);
        let busy = st.in_flight;
        st.in_flight -= 1;
        st.stats.released_total += 1;
        match outcome {
            Outcome::Success => {
                st.stats.latency_ewma_s = if st.latency_samples == 0 {
                    latency_s
                } else {
                    st.stats.latency_ewma_s + 0.1 * (latency_s - st.stats.latency_ewma_s)
                };
                st.latency_samples += 1;
                if self.cfg.adaptive && busy as f64 >= st.limit / 2.0 {
                    let next = (st.limit + self.cfg.increase_step / st.limit)
                        .min(self.cfg.max_concurrency as f64);
                    if next > st.limit {
                        st.limit = next;
                        st.stats.increases += 1;
                    }
                }
            }
            Outcome::Overload => {
                st.stats.overloads += 1;
                let next =
                    (st.limit * self.cfg.decrease_factor).max(self.cfg.min_concurrency as f64);
                if self.cfg.adaptive && epoch == st.epoch && next < st.limit {
                    st.limit = next;
                    st.epoch += 1;
                    st.stats.decreases += 1;
                }
            }
            Outcome::Error | Outcome::Ignored => {}
        }
        Ok(self.pump(&mut st))
    }

    /// The caller gave up on `ticket`: a queued ticket leaves the queue, a
    /// running one frees its slot (outcome `Ignored`). Unknown or finished
    /// tickets are a no-op, so this is idempotent. Returns newly granted tickets.
    pub fn cancel(&self, ticket: u64) -> Vec<u64> {
        let mut st = self.state.lock();
        match st.tickets.remove(&ticket) {
            None => return Vec::new(),
            Some(Slot::Running { .. }) => st.in_flight -= 1,
            Some(Slot::Queued { priority, .. }) => {
                let p = usize::from(priority);
                st.live[p] -= 1;
                st.queued -= 1;
                st.drop_tombstones(p);
            }
        }
        st.stats.cancelled_total += 1;
        self.pump(&mut st)
    }

    /// Override the limit (clamped to `[min_concurrency, max_concurrency]`);
    /// returns the tickets granted if it rose.
    pub fn set_limit(&self, limit: f64) -> Result<Vec<u64>> {
        positive("limit", limit)?;
        let mut st = self.state.lock();
        st.limit = limit.clamp(
            self.cfg.min_concurrency as f64,
            self.cfg.max_concurrency as f64,
        );
        Ok(self.pump(&mut st))
    }

    /// Grant queued tickets while slots are free; returns them in order.
    fn pump(&self, st: &mut State) -> Vec<u64> {
        let mut out = Vec::new();
        if st.queued == 0 || st.in_flight >= st.slots() {
            return out;
        }
        let now = self.clock.now_ns();
        while st.queued > 0 && st.in_flight < st.slots() {
            let (ticket, enq_ns) = st.pop_best(now, self.aging_ns);
            let waited_ns = now.saturating_sub(enq_ns);
            let epoch = st.epoch;
            st.tickets
                .insert(ticket, Slot::Running { waited_ns, epoch });
            st.in_flight += 1;
            st.stats.granted_total += 1;
            let w = clock::ns_to_secs(waited_ns);
            if w > st.stats.max_wait_s {
                st.stats.max_wait_s = w;
            }
            out.push(ticket);
        }
        out
    }

    /// The current (float) limit.
    pub fn limit(&self) -> f64 {
        self.state.lock().limit
    }

    /// Granted tickets not yet released or cancelled.
    pub fn in_flight(&self) -> usize {
        self.state.lock().in_flight
    }

    /// Tickets waiting in the queue.
    pub fn queued(&self) -> usize {
        self.state.lock().queued
    }

    /// The queue's capacity.
    pub fn max_queue(&self) -> usize {
        self.cfg.max_queue
    }

    /// The settings this scheduler was built with.
    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// How long `ticket` waited (queued: so far; running: before its grant);
    /// 0 for unknown or finished tickets.
    pub fn queue_wait_s(&self, ticket: u64) -> f64 {
        let st = self.state.lock();
        let ns = match st.tickets.get(&ticket) {
            Some(Slot::Queued { enq_ns, .. }) => self.clock.now_ns().saturating_sub(*enq_ns),
            Some(Slot::Running { waited_ns, .. }) => *waited_ns,
            None => 0,
        };
        clock::ns_to_secs(ns)
    }

    /// A snapshot of the counters and gauges.
    pub fn stats(&self) -> SchedulerStats {
        let st = self.state.lock();
        SchedulerStats {
            limit: st.limit,
            slots: st.slots(),
            in_flight: st.in_flight,
            queued: st.queued,
            ..st.stats.clone()
        }
    }
}

impl State {
    fn slots(&self) -> usize {
        (self.limit.floor() as usize).max(1)
    }

    fn take_ticket(&mut self) -> u64 {
        let t = self.next_ticket;
        self.next_ticket += 1;
        t
    }

    fn is_queued(&self, ticket: u64) -> bool {
        matches!(self.tickets.get(&ticket), Some(Slot::Queued { .. }))
    }

    /// Restore "a queue's front is live", and compact a queue that is
    /// mostly tombstones, so memory stays bounded by the live tickets.
    fn drop_tombstones(&mut self, p: usize) {
        while let Some(&(t, _)) = self.queues[p].front() {
            if self.is_queued(t) {
                break;
            }
            self.queues[p].pop_front();
        }
        let q = &self.queues[p];
        if q.len() > 2 * self.live[p] + 32 {
            let mut q = std::mem::take(&mut self.queues[p]);
            q.retain(|&(t, _)| self.is_queued(t));
            self.queues[p] = q;
        }
    }

    /// Pop the queued ticket with the best effective priority (ties: the
    /// older ticket). Requires `queued > 0`.
    fn pop_best(&mut self, now: u64, aging_ns: u64) -> (u64, u64) {
        let mut best: Option<(i64, u64, usize)> = None;
        for p in 0..PRIORITY_LEVELS {
            if self.live[p] == 0 {
                continue;
            }
            let &(ticket, enq_ns) = self.queues[p].front().expect("live queue has a live front");
            let levels = (now.saturating_sub(enq_ns) / aging_ns).min(1 << 40) as i64;
            let key = (p as i64 - levels, ticket);
            if best.map_or(true, |(e, t, _)| key < (e, t)) {
                best = Some((key.0, key.1, p));
            }
        }
        let (_, _, p) = best.expect("pop_best needs a queued ticket");
        let head = self.queues[p].pop_front().expect("front exists");
        self.live[p] -= 1;
        self.queued -= 1;
        self.tickets.remove(&head.0);
        self.drop_tombstones(p);
        head
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
