//! A keyed rate limiter: one GCRA cell per string key (e.g.
//! `"deployment/model:rpm"`, `"…:tpm_in"`), sharded for concurrency.
//!
//! Each cell is a *generic cell rate algorithm* cell: it stores the
//! theoretical arrival time `tat` of the next unit of cost. With an emission
//! interval `t = 1 / rate` and a tolerance of `burst * t`, a cost `c` may go
//! at the first instant `now` where `max(tat, now) + c * t - burst * t <= now`.
//! Over any interval of length `T` a cell therefore admits at most
//! `burst + rate * T`.
//!
//! * [`RateLimiter::try_acquire`] takes capacity only if it is there now.
//! * [`RateLimiter::reserve`] always books and returns the delay before the
//!   caller may go. Bookings on one key are FIFO: each one moves `tat`
//!   forward, so a later reservation never goes before an earlier one.
//! * [`RateLimiter::refund`] / [`RateLimiter::reconcile`] give back or charge
//!   capacity; giving back never raises a cell above `burst`.
//! * [`RateLimiter::observe_headers`] tightens a cell to what the provider
//!   says is left, and never loosens it.
//!
//! An unconfigured key is unlimited. A cell idle for `idle_ttl` whose
//! capacity is full (nothing booked, no debt) is forgotten — its key is then
//! unconfigured until `configure` is called again — by [`RateLimiter::sweep`]
//! or by an amortised sweep of one shard during normal calls. Forgetting a
//! full cell loses no booking, so memory stays bounded by the keys in use.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use parking_lot::Mutex;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::clock::{self, Clock, SharedClock};
use crate::error::{positive, Error, Result};

const SHARDS: usize = 16;
/// Calls on a shard between two looks at whether it is due for a sweep.
const SWEEP_EVERY: u32 = 256;
/// Slack (ns) on the admission test, absorbing floating-point rounding.
const EPS_NS: f64 = 1e-3;

/// A hasher for `str` keys built on xxh3 (`str` hashes as its bytes + `0xff`).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Map = HashMap<Box<str>, Cell, BuildHasherDefault<KeyHasher>>;

/// One GCRA cell. Times are nanoseconds of the limiter's clock, as `f64`.
#[derive(Debug, Clone, Copy)]
struct Cell {
    /// Nanoseconds per unit of cost (`1e9 / rate`).
    interval: f64,
    /// Largest cost admitted at once.
    burst: f64,
    /// Theoretical arrival time of the next unit of cost.
    tat: f64,
    /// Last time the cell was used (for idle expiry).
    last_ns: u64,
}

impl Cell {
    fn new(rate: f64, burst: f64, now_ns: u64) -> Self {
        Self {
            interval: 1e9 / rate,
            burst,
            tat: now_ns as f64,
            last_ns: now_ns,
        }
    }

    /// Capacity that could be taken at `now` (negative when in debt).
    fn capacity(&self, now: f64) -> f64 {
        self.burst - (self.tat - now).max(0.0) / self.interval
    }

    /// The instant (ns) at which `cost` could go, and the `tat` after it.
    fn go_time(&self, now: f64, cost: f64) -> (f64, f64) {
        let tat = self.tat.max(now) + cost * self.interval;
        (tat - self.burst * self.interval, tat)
    }

    /// Give back `cost`, never above a full cell.
    fn give_back(&mut self, now: f64, cost: f64) {
        self.tat = (self.tat - cost * self.interval).max(now);
    }

    /// Charge `cost` unconditionally (it may push the cell into debt).
    fn charge(&mut self, now: f64, cost: f64) {
        self.tat = self.tat.max(now) + cost * self.interval;
    }

    fn idle(&self, now_ns: u64, ttl_ns: u64) -> bool {
        now_ns.saturating_sub(self.last_ns) > ttl_ns && self.tat <= now_ns as f64
    }
}

#[derive(Default)]
struct Shard {
    cells: Map,
    ops: u32,
    last_sweep_ns: u64,
}

impl Shard {
    fn sweep(&mut self, now_ns: u64, ttl_ns: u64) -> usize {
        let before = self.cells.len();
        self.cells.retain(|_, c| !c.idle(now_ns, ttl_ns));
        self.last_sweep_ns = now_ns;
        before - self.cells.len()
    }

    /// Count a call; every `SWEEP_EVERY` calls, sweep if a quarter TTL passed.
    fn tick(&mut self, clock: &dyn Clock, ttl_ns: u64) {
        self.ops = self.ops.wrapping_add(1);
        if self.ops % SWEEP_EVERY == 0 {
            let now_ns = clock.now_ns();
            if now_ns.saturating_sub(self.last_sweep_ns) >= ttl_ns / 4 {
                self.sweep(now_ns, ttl_ns);
            }
        }
    }
}

/// Check a call's `cost`-like argument: finite and >= 0.
fn check_cost(what: &'static str, cost: f64) -> Result<f64> {
    if cost.is_finite() && cost >= 0.0 {
        Ok(cost)
    } else {
        Err(Error::InvalidArgument {
            what,
            detail: format!("{what}={cost} must be a finite number >= 0"),
        })
    }
}

/// A thread-safe, keyed GCRA rate limiter (see the module docs).
///
/// # Examples
///
/// ```
/// use _core::clock::ManualClock;
/// use _core::limiter::RateLimiter;
/// use std::sync::Arc;
///
/// let clock = ManualClock::new(0);
/// let lim = RateLimiter::new(600.0, Arc::new(clock.clone())).unwrap();
/// lim.configure("d/m:rpm", 1.0, 2.0).unwrap();
/// assert_eq!(lim.try_acquire("d/m:rpm", 2.0).unwrap(), 0.0);
/// assert_eq!(lim.try_acquire("d/m:rpm", 1.0).unwrap(), 1.0); // wait a second
/// assert_eq!(lim.reserve("d/m:rpm", 1.0).unwrap(), 1.0);     // booked: go in 1 s
/// ```
#[derive(Debug)]
pub struct RateLimiter {
    shards: Box<[Mutex<Shard>]>,
    ttl_ns: u64,
    clock: SharedClock,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("cells", &self.cells.len())
            .finish()
    }
}

impl RateLimiter {
    /// A limiter forgetting full cells idle for `idle_ttl_s` seconds
    /// (`f64::INFINITY`: never).
    pub fn new(idle_ttl_s: f64, clock: SharedClock) -> Result<Self> {
        if idle_ttl_s.is_nan() || idle_ttl_s <= 0.0 {
            return Err(Error::config(
                "idle_ttl_s",
                idle_ttl_s,
                "must be a number > 0",
            ));
        }
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect();
        Ok(Self {
            shards,
            ttl_ns: clock::secs_to_ns(idle_ttl_s),
            clock,
        })
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        &self.shards[(xxh3_64(key.as_bytes()) >> 60) as usize % SHARDS]
    }

    /// Run `f` on the cell of `key` if it is configured; `None` otherwise.
    /// The clock is read under the shard's lock, so each cell sees time
    /// move forward; an unconfigured key costs no clock read.
    fn with_cell<T>(&self, key: &str, f: impl FnOnce(&mut Cell, f64) -> T) -> Option<T> {
        self.with_cell_at(key, &mut None, f)
    }

    /// [`Self::with_cell`] reading the clock at most once into `now` (shared
    /// by the keys of one `reserve_many`).
    fn with_cell_at<T>(
        &self,
        key: &str,
        now: &mut Option<u64>,
        f: impl FnOnce(&mut Cell, f64) -> T,
    ) -> Option<T> {
        let mut shard = self.shard(key).lock();
        shard.tick(&*self.clock, self.ttl_ns);
        let cell = shard.cells.get_mut(key)?;
        let now_ns = *now.get_or_insert_with(|| self.clock.now_ns());
        cell.last_ns = cell.last_ns.max(now_ns);
        Some(f(cell, now_ns as f64))
    }

    /// Configure (or reconfigure) the cell of `key`: `rate_per_s` > 0 units of
    /// cost per second, bursts of up to `burst` >= 1. Reconfiguring keeps what
    /// is booked (in units of cost), re-timed at the new rate.
    pub fn configure(&self, key: &str, rate_per_s: f64, burst: f64) -> Result<()> {
        positive("rate_per_s", rate_per_s)?;
        if !(burst.is_finite() && burst >= 1.0) {
            return Err(Error::config(
                "burst",
                burst,
                "must be a finite number >= 1",
            ));
        }
        let now_ns = self.clock.now_ns();
        let now = now_ns as f64;
        let mut shard = self.shard(key).lock();
        match shard.cells.get_mut(key) {
            Some(cell) => {
                let booked = (cell.tat - now).max(0.0) / cell.interval;
                *cell = Cell::new(rate_per_s, burst, now_ns.max(cell.last_ns));
                cell.tat = now + booked * cell.interval;
            }
            None => {
                shard
                    .cells
                    .insert(key.into(), Cell::new(rate_per_s, burst, now_ns));
            }
        }
        Ok(())
    }

    /// Take `cost` now if the cell has it: `0.0` when admitted (capacity
    /// taken), else the seconds until it would be admitted (nothing taken).
    /// A cost above the cell's burst can never be admitted at once: an error.
    pub fn try_acquire(&self, key: &str, cost: f64) -> Result<f64> {
        check_cost("cost", cost)?;
        self.with_cell(key, |cell, now| {
            if cost > cell.burst {
                return Err(Error::InvalidArgument {
                    what: "cost",
                    detail: format!(
                        "cost={cost} exceeds burst={} of {key:?}: it can never be admitted \
                         at once (use reserve)",
                        cell.burst
                    ),
                });
            }
            let (go, tat) = cell.go_time(now, cost);
            if go <= now + EPS_NS {
                cell.tat = tat;
                Ok(0.0)
            } else {
                Ok((go - now) / 1e9)
            }
        })
        .unwrap_or(Ok(0.0))
    }

    /// Book `cost` and return the seconds to wait before going (`0.0`: now).
    /// Always books; FIFO per key. A cost above the burst is allowed.
    pub fn reserve(&self, key: &str, cost: f64) -> Result<f64> {
        check_cost("cost", cost)?;
        Ok(self.book(key, cost, &mut None))
    }

    fn book(&self, key: &str, cost: f64, now: &mut Option<u64>) -> f64 {
        self.with_cell_at(key, now, |cell, now| {
            let (go, tat) = cell.go_time(now, cost);
            cell.tat = tat;
            if go <= now + EPS_NS {
                0.0
            } else {
                (go - now) / 1e9
            }
        })
        .unwrap_or(0.0)
    }

    /// Book on several keys and return the largest delay. Every cost is
    /// checked first, so a bad item books nothing; then each key is booked
    /// on its own (not atomically across keys). A caller that gives up
    /// refunds each key.
    pub fn reserve_many<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a str, f64)> + Clone,
    ) -> Result<f64> {
        for (_, cost) in items.clone() {
            check_cost("cost", cost)?;
        }
        let mut now = None;
        Ok(items.into_iter().fold(0.0, |delay, (key, cost)| {
            f64::max(delay, self.book(key, cost, &mut now))
        }))
    }

    /// Settle a booking of `estimated` that really cost `actual`: give back
    /// the difference, or charge it (which may put the cell in debt).
    pub fn reconcile(&self, key: &str, estimated: f64, actual: f64) -> Result<()> {
        check_cost("estimated", estimated)?;
        check_cost("actual", actual)?;
        self.with_cell(key, |cell, now| {
            if actual < estimated {
                cell.give_back(now, estimated - actual);
            } else if actual > estimated {
                cell.charge(now, actual - estimated);
            }
        });
        Ok(())
    }

    /// Give back `cost` of an unused booking (a cancelled caller).
    pub fn refund(&self, key: &str, cost: f64) -> Result<()> {
        check_cost("cost", cost)?;
        self.with_cell(key, |cell, now| cell.give_back(now, cost));
        Ok(())
    }

    /// The provider reports `remaining` of `limit` left until its window
    /// resets in `reset_s` seconds: tighten the cell so that it admits at
    /// most `remaining` before the reset. Never loosens; `limit` (when given)
    /// only caps `remaining`. Ignored for an unconfigured key.
    pub fn observe_headers(
        &self,
        key: &str,
        remaining: f64,
        limit: Option<f64>,
        reset_s: f64,
    ) -> Result<()> {
        check_cost("remaining", remaining)?;
        check_cost("reset_s", reset_s)?;
        let remaining = match limit {
            Some(l) if !(l.is_finite() && l > 0.0) => {
                return Err(Error::InvalidArgument {
                    what: "limit",
                    detail: format!("limit={l} must be a finite number > 0"),
                })
            }
            Some(l) => remaining.min(l),
            None => remaining,
        };
        self.with_cell(key, |cell, now| {
            // Admissible by `now + reset` is capacity(now) + rate * reset;
            // make capacity(now) = remaining - rate * reset.
            let reset_ns = reset_s * 1e9;
            let capacity = remaining - reset_ns / cell.interval;
            let tat = now + (cell.burst - capacity) * cell.interval;
            cell.tat = cell.tat.max(tat);
        });
        Ok(())
    }

    /// Capacity that could be taken now (`inf` for an unconfigured key,
    /// `0.0` for a cell in debt).
    pub fn available(&self, key: &str) -> f64 {
        self.with_cell(key, |cell, now| cell.capacity(now).max(0.0))
            .unwrap_or(f64::INFINITY)
    }

    /// Forget every full cell idle for longer than the TTL; how many went.
    pub fn sweep(&self) -> usize {
        let now_ns = self.clock.now_ns();
        self.shards
            .iter()
            .map(|s| s.lock().sweep(now_ns, self.ttl_ns))
            .sum()
    }

    /// Number of live (configured, not yet forgotten) cells.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().cells.len()).sum()
    }

    /// Whether no cell is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
