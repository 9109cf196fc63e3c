//! A circuit breaker with resilience4j semantics: a count-based sliding
//! window of the last `window_size` calls, failure-rate and slow-call-rate
//! thresholds, an open period that grows on consecutive trips, and a
//! half-open state that admits a few probe calls and judges them.
//!
//! * CLOSED: every call is admitted; each recorded outcome enters the ring
//!   buffer. Once `min(minimum_calls, window_size)` calls are in the window,
//!   the breaker trips to OPEN when the failure rate or the slow-call rate
//!   reaches its threshold. A rate of zero never trips, so a threshold of 0
//!   means "any failure (or slow call) trips".
//! * OPEN: nothing is admitted for the open duration: `open_duration *
//!   multiplier^(trips - 1)`, capped at `max_open_duration`.
//! * HALF_OPEN: entered lazily by the first call that looks at the breaker
//!   after the wait (any method: permission checks, `record`, `state`,
//!   `stats`). Admits `half_open_max_calls` probes; when all of them are
//!   recorded, the breaker goes back to OPEN (trip count grows) if either
//!   rate of the probes reaches its threshold, else to CLOSED (window
//!   cleared, trip count reset). An `Ignored` outcome of a probe gives its
//!   permit back. Outcomes recorded with no probe outstanding (late calls
//!   admitted before the trip) are dropped.
//!
//! Outcomes recorded while OPEN are dropped too. The window is kept while
//! OPEN and HALF_OPEN, so `failure_rate` shows what tripped the breaker.

use parking_lot::Mutex;

use crate::clock::{self, SharedClock};
use crate::error::{Error, Result};

mod config;
pub use config::{Config, MAX_WINDOW};

/// What happened to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed in a way that counts against the deployment.
    Failure,
    /// Not counted (e.g. 429 or 400); a probe's permit is given back.
    Ignored,
}

impl Outcome {
    /// Parse `"success"`, `"failure"` or `"ignored"`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "success" => Ok(Self::Success),
            "failure" => Ok(Self::Failure),
            "ignored" => Ok(Self::Ignored),
            other => Err(Error::InvalidArgument {
                what: "outcome",
                detail: format!(
                    "outcome={other:?}: expected \"success\", \"failure\" or \"ignored\""
                ),
            }),
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls flow; outcomes are judged on the sliding window.
    Closed,
    /// Calls are refused.
    Open,
    /// A few probe calls are admitted.
    HalfOpen,
}

impl State {
    /// `"closed"`, `"open"` or `"half_open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// Counts of each transition, in the order of [`Transition::ALL`].
pub type Transitions = [u64; 4];

/// A state change the breaker counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// CLOSED -> OPEN.
    ClosedToOpen = 0,
    /// OPEN -> HALF_OPEN.
    OpenToHalfOpen = 1,
    /// HALF_OPEN -> CLOSED.
    HalfOpenToClosed = 2,
    /// HALF_OPEN -> OPEN.
    HalfOpenToOpen = 3,
}

impl Transition {
    /// Every transition, in index order.
    pub const ALL: [Transition; 4] = [
        Transition::ClosedToOpen,
        Transition::OpenToHalfOpen,
        Transition::HalfOpenToClosed,
        Transition::HalfOpenToOpen,
    ];

    /// `"closed->open"` and so on.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::ClosedToOpen => "closed->open",
            Transition::OpenToHalfOpen => "open->half_open",
            Transition::HalfOpenToClosed => "half_open->closed",
            Transition::HalfOpenToOpen => "half_open->open",
        }
    }
}

/// A snapshot of the breaker for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// The current state.
    pub state: State,
    /// Calls in the sliding window.
    pub calls: usize,
    /// Failed calls in the window.
    pub failures: usize,
    /// Slow calls in the window.
    pub slow_calls: usize,
    /// `failures / calls` (0 with no calls).
    pub failure_rate: f64,
    /// `slow_calls / calls` (0 with no calls).
    pub slow_call_rate: f64,
    /// Consecutive trips (reset on closing).
    pub trips: u32,
    /// Seconds until an open breaker half-opens (0 unless open).
    pub retry_after_s: f64,
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

/// Outcome counts of a set of calls.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    calls: usize,
    failures: usize,
    slow: usize,
}

impl Tally {
    fn add(&mut self, bits: u8, sign: isize) {
        let step = |n: &mut usize, on: bool| {
            if on {
                *n = n.wrapping_add_signed(sign);
            }
        };
        step(&mut self.calls, true);
        step(&mut self.failures, bits & FAILED != 0);
        step(&mut self.slow, bits & SLOW != 0);
    }

    fn rate(n: usize, calls: usize) -> f64 {
        if calls == 0 {
            0.0
        } else {
            n as f64 / calls as f64
        }
    }

    /// Whether either rate reaches its threshold (a zero rate never does).
    fn trips(&self, cfg: &Config) -> bool {
        let hit = |n: usize, th: f64| n > 0 && Self::rate(n, self.calls) >= th;
        hit(self.failures, cfg.failure_rate_threshold)
            || hit(self.slow, cfg.slow_call_rate_threshold)
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Ring buffer of outcome bits; `ring.len()` grows up to `window_size`.
    ring: Vec<u8>,
    head: usize,
    window: Tally,
    /// While HALF_OPEN: permits handed out and the probes' outcomes.
    probes_issued: usize,
    probes: Tally,
    trips: u32,
    open_until_ns: u64,
    transitions: Transitions,
}

/// A thread-safe circuit breaker (see the module docs).
///
/// # Examples
///
/// ```
/// use _core::breaker::{CircuitBreaker, Config, Outcome, State};
/// use _core::clock::ManualClock;
/// use std::sync::Arc;
///
/// let clock = ManualClock::new(0);
/// let cfg = Config { minimum_calls: 2, window_size: 2, ..Config::default() };
/// let b = CircuitBreaker::new("dep", cfg, Arc::new(clock.clone())).unwrap();
/// b.record(Outcome::Failure, 0.0).unwrap();
/// b.record(Outcome::Failure, 0.0).unwrap();
/// assert_eq!(b.state(), State::Open);
/// assert!(!b.try_acquire());
/// clock.advance_secs(30.0);
/// assert!(b.try_acquire()); // the probe
/// ```
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    cfg: Config,
    slow_ns: u64,
    clock: SharedClock,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker named `name` (usually the deployment).
    pub fn new(name: impl Into<String>, cfg: Config, clock: SharedClock) -> Result<Self> {
        cfg.validate()?;
        let slow_ns = cfg.slow_call_duration_s.map_or(u64::MAX, clock::secs_to_ns);
        Ok(Self {
            name: name.into(),
            inner: Mutex::new(Inner {
                state: State::Closed,
                ring: Vec::with_capacity(cfg.window_size),
                head: 0,
                window: Tally::default(),
                probes_issued: 0,
                probes: Tally::default(),
                trips: 0,
                open_until_ns: 0,
                transitions: [0; 4],
            }),
            cfg,
            slow_ns,
            clock,
        })
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The breaker's settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Lock the state, applying the lazy OPEN -> HALF_OPEN transition. The
    /// clock is read only when the breaker is open.
    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        let mut g = self.inner.lock();
        if g.state == State::Open && self.clock.now_ns() >= g.open_until_ns {
            g.state = State::HalfOpen;
            g.probes_issued = 0;
            g.probes = Tally::default();
            g.transitions[Transition::OpenToHalfOpen as usize] += 1;
        }
        g
    }

    fn open(&self, g: &mut Inner, via: Transition) {
        let now_ns = self.clock.now_ns();
        g.trips = g.trips.saturating_add(1);
        let factor = self
            .cfg
            .open_backoff_multiplier
            .powi(g.trips.min(1 << 20) as i32 - 1);
        let secs = (self.cfg.open_duration_s * factor).min(self.cfg.max_open_duration_s);
        g.open_until_ns = now_ns.saturating_add(clock::secs_to_ns(secs));
        g.state = State::Open;
        g.transitions[via as usize] += 1;
    }

    /// Permission for one call: `true` if it may go.
    pub fn try_acquire(&self) -> bool {
        let mut g = self.lock();
        match g.state {
            State::Closed => true,
            State::Open => false,
            State::HalfOpen if g.probes_issued < self.cfg.half_open_max_calls => {
                g.probes_issued += 1;
                true
            }
            State::HalfOpen => false,
        }
    }

    /// Like [`Self::try_acquire`], but a refusal is an [`Error::CircuitOpen`]
    /// (with `retry_after_s` 0 when refused because probes are in flight).
    pub fn acquire(&self) -> Result<()> {
        if self.try_acquire() {
            Ok(())
        } else {
            Err(Error::CircuitOpen {
                name: self.name.clone(),
                retry_after_s: self.retry_after_s(),
            })
        }
    }

    /// Record the outcome of an admitted call that took `duration_s` seconds.
    pub fn record(&self, outcome: Outcome, duration_s: f64) -> Result<()> {
        if !(duration_s.is_finite() && duration_s >= 0.0) {
            return Err(Error::InvalidArgument {
                what: "duration_s",
                detail: format!("duration_s={duration_s} must be a finite number >= 0"),
            });
        }
        let mut g = self.lock();
        let bits = match outcome {
            Outcome::Ignored => {
                if g.state == State::HalfOpen && g.probes_issued > g.probes.calls {
                    g.probes_issued -= 1;
                }
                return Ok(());
            }
            Outcome::Failure => FAILED,
            Outcome::Success => 0,
        } | if clock::secs_to_ns(duration_s) > self.slow_ns {
            SLOW
        } else {
            0
        };
        match g.state {
            State::Open => {}
            State::Closed => {
                let g = &mut *g;
                if g.ring.len() < self.cfg.window_size {
                    g.ring.push(bits);
                } else {
                    let old = std::mem::replace(&mut g.ring[g.head], bits);
                    g.window.add(old, -1);
                    g.head = (g.head + 1) % self.cfg.window_size;
                }
                g.window.add(bits, 1);
                let judged = self.cfg.minimum_calls.min(self.cfg.window_size);
                if g.window.calls >= judged && g.window.trips(&self.cfg) {
                    self.open(g, Transition::ClosedToOpen);
                }
            }
            State::HalfOpen => {
                if g.probes_issued <= g.probes.calls {
                    return Ok(()); // not a probe: a late call from before the trip
                }
                g.probes.add(bits, 1);
                if g.probes.calls >= self.cfg.half_open_max_calls {
                    if g.probes.trips(&self.cfg) {
                        self.open(&mut g, Transition::HalfOpenToOpen);
                    } else {
                        Self::clear(&mut g);
                        g.state = State::Closed;
                        g.transitions[Transition::HalfOpenToClosed as usize] += 1;
                    }
                }
            }
        }
        Ok(())
    }

    fn clear(g: &mut Inner) {
        g.ring.clear();
        g.head = 0;
        g.window = Tally::default();
        g.trips = 0;
    }

    /// Back to CLOSED with an empty window and no trips (not counted as a
    /// transition).
    pub fn reset(&self) {
        let mut g = self.inner.lock();
        Self::clear(&mut g);
        g.state = State::Closed;
    }

    /// The current state (after the lazy OPEN -> HALF_OPEN transition).
    pub fn state(&self) -> State {
        self.lock().state
    }

    /// Seconds until an open breaker half-opens; 0 unless open.
    pub fn retry_after_s(&self) -> f64 {
        let g = self.lock();
        match g.state {
            State::Open => clock::ns_to_secs(g.open_until_ns.saturating_sub(self.clock.now_ns())),
            _ => 0.0,
        }
    }

    /// Transition counts, in the order of [`Transition::ALL`].
    pub fn transitions(&self) -> Transitions {
        self.lock().transitions
    }

    /// A snapshot for metrics.
    pub fn stats(&self) -> Stats {
        let g = self.lock();
        let w = g.window;
        Stats {
            state: g.state,
            calls: w.calls,
            failures: w.failures,
            slow_calls: w.slow,
            failure_rate: Tally::rate(w.failures, w.calls),
            slow_call_rate: Tally::rate(w.slow, w.calls),
            trips: g.trips,
            retry_after_s: match g.state {
                State::Open => {
                    clock::ns_to_secs(g.open_until_ns.saturating_sub(self.clock.now_ns()))
                }
                _ => 0.0,
            },
        }
    }

    /// Probe permits handed out and not yet recorded (0 unless half-open).
    pub fn probes_in_flight(&self) -> usize {
        let g = self.lock();
        match g.state {
            State::HalfOpen => g.probes_issued - g.probes.calls,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
