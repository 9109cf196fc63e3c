//! `Gate`: the one admission point of a deployment. It composes the
//! deployment's [`PriorityScheduler`] (priorities, aging, bounded queue,
//! AIMD), its rate-limit cells in a shared [`RateLimiter`] (requests, tokens,
//! input and output tokens, cells learnt from headers), its
//! [`CircuitBreaker`] and its [`RetryBudget`], and books all of them in one
//! call per step of an attempt.
//!
//! An attempt is an *entry* with a `u64` id:
//!
//! * [`Gate::admit`] books the rate-limit reservation and answers with a
//!   [`Admission::Permit`] (slot taken, breaker permitted, reservation spent
//!   on the send), an [`Admission::Wait`] (a limiter delay to sleep, or a
//!   queued ticket to wait for), or a typed refusal
//!   ([`Error::CircuitOpen`], [`Error::QueueFull`], [`Error::Throttled`])
//!   with everything it booked given back.
//! * After a wait, [`Gate::resume`] answers the same way.
//! * [`Gate::settle`] books the outcome of a permitted attempt in the breaker
//!   and the scheduler, reconciles the token estimate with the real usage and
//!   returns the entries to wake; [`Gate::cancel`] gives up an entry in any
//!   phase (refunds a reservation not spent, frees a slot, gives a breaker
//!   probe back) and returns the entries to wake.
//!
//! Rules held here once (issue 9): a deadline cut ([`Outcome::Deadline`]) is
//! ignored by the breaker and by AIMD; a reservation that sends nothing is
//! refunded on every path; the outstanding reservations and the available
//! capacity per limit are readable ([`Gate::limiter_stats`]).
//!
//! A queued entry is granted inside the call that frees a slot (`settle`,
//! `cancel`, `after_fork`): the breaker is asked for it right there; when it
//! refuses, the slot goes to the next queued entry and the refused entry is
//! woken to learn, from `resume`, that the circuit is open.
//!
//! One lock serialises the gate's steps, so the scheduler, breaker and cells
//! of a deployment move together.
//!
//! **Shared limits.** A gate built [`Gate::with_shared`] keeps its configured
//! cells in a [`SharedLimiter`] (Redis) instead of the local limiter, so they
//! hold across every process. `admit` then answers [`Admission::Shared`]: the
//! entry waits for [`Gate::check_shared`], run on the core's runtime, which
//! books the costs cluster-wide (all-or-nothing, within the caller's wait)
//! and continues exactly as `admit` would (a delay, a slot, a permit or a
//! refusal). Every path that sends nothing gives the booking back in Redis
//! (by the reservation id when tokens were booked); `settle` reconciles the
//! token estimate with the real usage by that id and publishes a 429's
//! Retry-After as the deployment's pause in every process. The Redis calls
//! after admission (refund, reconcile, pause, header tightening) are spawned
//! on the runtime: no caller waits for them.
//!
//! **Shared breakers.** A gate given a shared breaker ([`Gate::share_breaker`])
//! keeps its local breaker and also publishes each settled outcome to Redis
//! (spawned: no caller waits), where the deployment opens cluster-wide (see
//! [`crate::shared::breaker`]). Admission reads the cluster state cached in
//! this process, never Redis: open cluster-wide is the same
//! [`Error::CircuitOpen`] as open locally; half-open, a call goes only as one
//! of the cluster's probes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::breaker::{self, CircuitBreaker, State as BreakerState};
use crate::error::{Error, Result};
use crate::limiter::RateLimiter;
use crate::scheduler::{self, invalid_priority, PriorityScheduler, SchedulerConfig};
use crate::shared::breaker::{SharedBreaker, SharedBreakers, Verdict};
use crate::shared::{SharedLimiter, Source};

/// The rate-limit dimensions of a deployment, in index order.
pub const DIMS: [&str; 4] = ["rpm", "tpm", "itpm", "otpm"];

/// How an attempt ended, as the deployment is judged by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    /// It answered.
    Success = 0,
    /// 429: too many requests. Lowers the limit; not a breaker failure.
    Throttled = 1,
    /// A timeout within its own `read_s`, or 503/529: lowers the limit and
    /// counts as a breaker failure.
    Overload = 2,
    /// Another server-side failure (5xx, unreadable reply): a breaker
    /// failure; leaves the limit alone.
    Failure = 3,
    /// The request was refused for what it asked (400, auth): neither.
    Error = 4,
    /// Says nothing about the deployment (cancelled, a local error).
    Ignored = 5,
    /// Cut by the caller's own deadline: ignored by breaker and AIMD,
    /// counted apart.
    Deadline = 6,
}

impl Outcome {
    /// Every outcome, in code order.
    pub const ALL: [Outcome; 7] = [
        Outcome::Success,
        Outcome::Throttled,
        Outcome::Overload,
        Outcome::Failure,
        Outcome::Error,
        Outcome::Ignored,
        Outcome::Deadline,
    ];

    /// The outcome of an int code.
    pub fn from_code(code: i64) -> Result<Self> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .ok_or_else(|| Error::InvalidArgument {
                what: "outcome",
                detail: format!("outcome={code} is not an outcome code (0..=6)"),
            })
    }

    /// What the AIMD controller learns from it.
    pub fn scheduler(self) -> scheduler::Outcome {
        match self {
            Outcome::Success => scheduler::Outcome::Success,
            Outcome::Throttled | Outcome::Overload => scheduler::Outcome::Overload,
            Outcome::Failure | Outcome::Error => scheduler::Outcome::Error,
            Outcome::Ignored | Outcome::Deadline => scheduler::Outcome::Ignored,
        }
    }

    /// What the breaker learns from it.
    pub fn breaker(self) -> breaker::Outcome {
        match self {
            Outcome::Success => breaker::Outcome::Success,
            Outcome::Overload | Outcome::Failure => breaker::Outcome::Failure,
            Outcome::Throttled | Outcome::Error | Outcome::Ignored | Outcome::Deadline => {
                breaker::Outcome::Ignored
            }
        }
    }
}

/// Retries allowed as a share of traffic: each call deposits `ratio`, a
/// retry costs 1. Starts with `floor` credits so a quiet deployment can still
/// retry; capped at `max(floor, 1)` so a long quiet spell cannot bank a
/// retry storm.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudget {
    ratio: f64,
    cap: f64,
    balance: f64,
}

impl RetryBudget {
    /// A budget depositing `ratio` (>= 0) per call, starting at `floor` (>= 0).
    pub fn new(ratio: f64, floor: f64) -> Result<Self> {
        for (param, v) in [("retry_budget_ratio", ratio), ("retry_budget_floor", floor)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(param, v, "must be a finite number >= 0"));
            }
        }
        Ok(Self {
            ratio,
            cap: floor.max(1.0),
            balance: floor,
        })
    }

    /// Credit one first attempt.
    pub fn on_call(&mut self) {
        self.balance = (self.balance + self.ratio).min(self.cap);
    }

    /// Take one retry if the budget allows it.
    pub fn try_spend(&mut self) -> bool {
        if self.balance >= 1.0 {
            self.balance -= 1.0;
            true
        } else {
            false
        }
    }

    /// Credits left.
    pub fn balance(&self) -> f64 {
        self.balance
    }
}

/// Settings of a [`Gate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GateConfig {
    /// The scheduler's settings.
    pub scheduler: SchedulerConfig,
    /// The breaker's settings.
    pub breaker: breaker::Config,
    /// Retry credits deposited per call.
    pub retry_budget_ratio: f64,
    /// Retry credits at start.
    pub retry_budget_floor: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            scheduler: SchedulerConfig::default(),
            breaker: breaker::Config::default(),
            retry_budget_ratio: 0.2,
            retry_budget_floor: 10.0,
        }
    }
}

/// The gate's answer to `admit` or `resume` when it does not refuse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Go: slot taken, breaker permitted, reservation spent. Settle it.
    Permit(u64),
    /// Wait, then `resume` (or `cancel`): `delay_s > 0` is a limiter delay to
    /// sleep; `delay_s == 0` means queued for a slot until woken.
    Wait {
        /// The entry.
        id: u64,
        /// Seconds to sleep (0: wait to be woken).
        delay_s: f64,
    },
    /// The shared limits decide first: run [`Gate::check_shared`] for this
    /// entry, which answers like `admit`.
    Shared(u64),
}

/// Where an entry stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for the shared limiter's answer (the local delay booked so far).
    Pending(f64),
    /// Booked, sleeping on a limiter delay; no slot yet.
    Delayed,
    /// Queued for a slot under this scheduler ticket.
    Queued(u64),
    /// Granted a slot and a breaker permit while queued; not yet resumed.
    Granted(u64),
    /// Handed to the caller as a permit: on the wire until settled.
    Permitted(u64),
    /// The breaker refused when its slot came up (everything given back).
    Refused(f64),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The entry's id (set when inserted).
    id: u64,
    priority: u8,
    est_in: f64,
    est_out: f64,
    /// Dimensions booked at admission (bit per `DIMS` index).
    mask: u8,
    /// Whether the reservation is still unspent (to refund if nothing goes).
    booked: bool,
    /// Booked in the shared limiter (Redis).
    shared: bool,
    /// The shared booking is recorded under this entry's reservation id.
    recorded: bool,
    /// The cluster probe episode this entry's permit is (0: none).
    probe: u64,
    /// Booked from (or by) this process's leased slices (leased mode):
    /// refunds and reconciles are settled locally.
    leased: bool,
    phase: Phase,
}

impl Entry {
    fn cost(&self, dim: usize) -> f64 {
        match dim {
            0 => 1.0,
            1 => self.est_in + self.est_out,
            2 => self.est_in,
            _ => self.est_out,
        }
    }
}

/// Counters of a gate, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateStats {
    /// `admit` calls.
    pub admitted: u64,
    /// Permits handed out.
    pub permits: u64,
    /// Refusals because the circuit was open (at admission or at grant).
    pub refused_circuit: u64,
    /// Refusals because the queue was full.
    pub refused_queue: u64,
    /// Refusals because the limiter had no room in time.
    pub refused_throttled: u64,
    /// Entries given up by `cancel`.
    pub cancelled: u64,
    /// Permits settled.
    pub settled: u64,
    /// Permits settled as cut by the caller's deadline.
    pub deadline_cuts: u64,
    /// Entries alive now (any phase).
    pub entries: usize,
    /// Reservations booked and neither spent on a send nor refunded.
    pub outstanding: usize,
    /// Shared checks answered (by Redis or by the `on_unavailable` fallback).
    pub shared_checks: u64,
    /// Shared checks decided by the fallback (Redis unavailable).
    pub shared_fallbacks: u64,
}

#[derive(Debug)]
struct State {
    scheduler: Arc<PriorityScheduler>,
    entries: HashMap<u64, Entry>,
    /// Queued scheduler ticket -> entry id.
    by_ticket: HashMap<u64, u64>,
    next_id: u64,
    /// Cell key per dimension, once configured.
    keys: [Option<Box<str>>; 4],
    /// Cell key per dimension in the shared limiter, once configured.
    shared_keys: [Option<Box<str>>; 4],
    budget: RetryBudget,
    /// Entries granted by a step that could not return them (a refusal).
    pending: Vec<u64>,
    stats: GateStats,
}

/// The admission gate of one deployment (see the module docs).
#[derive(Debug)]
pub struct Gate {
    name: String,
    cfg: GateConfig,
    limiter: Arc<RateLimiter>,
    shared: Option<Arc<SharedLimiter>>,
    breaker: Arc<CircuitBreaker>,
    shared_breaker: OnceLock<Arc<SharedBreaker>>,
    clock: crate::clock::SharedClock,
    state: Mutex<State>,
}

fn unknown(id: u64) -> Error {
    Error::InvalidArgument {
        what: "permit",
        detail: format!("entry {id} is unknown or finished"),
    }
}

fn dim_index(dim: &str) -> Result<usize> {
    DIMS.iter()
        .position(|d| *d == dim)
        .ok_or_else(|| Error::InvalidArgument {
            what: "dim",
            detail: format!("dim={dim:?} must be one of rpm, tpm, itpm, otpm"),
        })
}

fn tokens(what: &'static str, v: f64) -> Result<f64> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(Error::InvalidArgument {
            what,
            detail: format!("{what}={v} must be a finite number >= 0"),
        })
    }
}

impl Gate {
    /// A gate named `name` (the deployment) booking its cells in `limiter`.
    pub fn new(
        name: impl Into<String>,
        cfg: GateConfig,
        limiter: Arc<RateLimiter>,
        clock: crate::clock::SharedClock,
    ) -> Result<Self> {
        let name = name.into();
        let scheduler = Arc::new(PriorityScheduler::new(
            cfg.scheduler.clone(),
            clock.clone(),
        )?);
        let breaker = Arc::new(CircuitBreaker::new(
            name.clone(),
            cfg.breaker.clone(),
            clock.clone(),
        )?);
        let budget = RetryBudget::new(cfg.retry_budget_ratio, cfg.retry_budget_floor)?;
        Ok(Self {
            name,
            limiter,
            shared: None,
            breaker,
            shared_breaker: OnceLock::new(),
            clock,
            state: Mutex::new(State {
                scheduler,
                entries: HashMap::new(),
                by_ticket: HashMap::new(),
                next_id: 1,
                keys: Default::default(),
                shared_keys: Default::default(),
                budget,
                pending: Vec::new(),
                stats: GateStats::default(),
            }),
            cfg,
        })
    }

    /// This gate with its limits kept in `shared` (cluster-wide) instead of
    /// the local limiter. Configure the limits after this.
    pub fn with_shared(mut self, shared: Arc<SharedLimiter>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Share this gate's breaker through `hub` (Redis): outcomes are
    /// published, the deployment opens cluster-wide (see the module docs).
    /// Once per gate.
    pub fn share_breaker(&self, hub: &Arc<SharedBreakers>) -> Result<()> {
        let b = hub.breaker(&self.name, self.cfg.breaker.clone(), self.clock.clone())?;
        self.shared_breaker
            .set(b)
            .map_err(|_| Error::InvalidArgument {
                what: "shared_breaker",
                detail: format!("the breaker of {:?} is shared already", self.name),
            })?;
        hub.warm();
        Ok(())
    }

    /// The shared breaker, if the gate has one.
    pub fn shared_breaker(&self) -> Option<&Arc<SharedBreaker>> {
        self.shared_breaker.get()
    }

    /// The shared limiter, if the gate has one.
    pub fn shared(&self) -> Option<&Arc<SharedLimiter>> {
        self.shared.as_ref()
    }

    /// The deployment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The gate's settings.
    pub fn config(&self) -> &GateConfig {
        &self.cfg
    }

    /// The scheduler (for reading its state; admission goes through the gate).
    pub fn scheduler(&self) -> Arc<PriorityScheduler> {
        self.state.lock().scheduler.clone()
    }

    /// The breaker (for reading its state; outcomes go through the gate).
    pub fn breaker(&self) -> Arc<CircuitBreaker> {
        self.breaker.clone()
    }

    /// The limiter holding the gate's cells.
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }

    /// Whether the breaker would refuse a call now.
    pub fn is_open(&self) -> bool {
        self.breaker.state() == BreakerState::Open || self.cluster_open().is_some()
    }

    /// Seconds left if the deployment is open cluster-wide (shared breaker).
    fn cluster_open(&self) -> Option<f64> {
        self.shared_breaker.get().and_then(|b| b.open_for())
    }

    /// Seconds until a refusing breaker (local or cluster-wide) may admit.
    fn breaker_retry_after(&self) -> f64 {
        let cluster = self.cluster_open().unwrap_or(0.0);
        self.breaker.retry_after_s().max(cluster)
    }

    /// Permission of the breakers for entry `id`: the cluster-wide state
    /// (a probe permit when half-open), then the local breaker.
    fn acquire_breaker(&self, st: &mut State, id: u64) -> bool {
        let probe = match self.shared_breaker.get().map(|b| (b, b.acquire())) {
            None | Some((_, Verdict::Go)) => 0,
            Some((_, Verdict::Probe(ep))) => ep,
            Some((_, Verdict::Refuse(_) | Verdict::RefuseAndClaim)) => return false,
        };
        if !self.breaker.try_acquire() {
            if let (Some(b), true) = (self.shared_breaker.get(), probe != 0) {
                b.give_back(probe);
            }
            return false;
        }
        if let Some(e) = st.entries.get_mut(&id) {
            e.probe = probe;
        }
        true
    }

    /// Configure the cell of `dim` (`rpm`, `tpm`, `itpm`, `otpm`) at
    /// `rate_per_s` with bursts of `burst`; returns its key in the limiter.
    pub fn configure_limit(&self, dim: &str, rate_per_s: f64, burst: f64) -> Result<String> {
        let i = dim_index(dim)?;
        let key = format!("{}:{dim}", self.name);
        if let Some(shared) = &self.shared {
            shared.configure(&key, rate_per_s, burst)?;
            self.state.lock().shared_keys[i] = Some(key.clone().into_boxed_str());
            return Ok(key);
        }
        self.limiter.configure(&key, rate_per_s, burst)?;
        self.state.lock().keys[i] = Some(key.clone().into_boxed_str());
        Ok(key)
    }

    /// The configured cells: `(dim, key)` in `DIMS` order.
    pub fn rate_keys(&self) -> Vec<(&'static str, String)> {
        let st = self.state.lock();
        DIMS.iter()
            .zip(st.keys.iter().zip(st.shared_keys.iter()))
            .filter_map(|(d, (k, s))| k.as_ref().or(s.as_ref()).map(|k| (*d, k.to_string())))
            .collect()
    }

    /// Learn from a reply's headers for `dim` (`rpm` or `tpm`): `remaining`
    /// of `limit` left until a reset in `reset_s`. A dimension with no cell
    /// gets one learnt from `limit` (per minute; bursts of a sixth); without
    /// a cell or a `limit` nothing is learnt. Returns whether a cell was
    /// tightened.
    pub fn observe_headers(
        &self,
        dim: &str,
        remaining: f64,
        limit: Option<f64>,
        reset_s: f64,
    ) -> Result<bool> {
        let i = dim_index(dim)?;
        if let Some(shared) = &self.shared {
            return self.observe_shared(shared, i, dim, remaining, limit, reset_s);
        }
        let key = self.state.lock().keys[i].clone();
        let key = match (key, limit) {
            (Some(k), _) => k.to_string(),
            (None, Some(l)) if l.is_finite() && l > 0.0 => {
                self.configure_limit(dim, l / 60.0, (l / 6.0).max(1.0))?
            }
            (None, _) => return Ok(false),
        };
        self.limiter
            .observe_headers(&key, remaining.max(0.0), limit, reset_s.max(0.0))?;
        Ok(true)
    }

    fn observe_shared(
        &self,
        shared: &Arc<SharedLimiter>,
        i: usize,
        dim: &str,
        remaining: f64,
        limit: Option<f64>,
        reset_s: f64,
    ) -> Result<bool> {
        let key = self.state.lock().shared_keys[i].clone();
        let key = match (key, limit) {
            (Some(k), _) => k.to_string(),
            (None, Some(l)) if l.is_finite() && l > 0.0 => {
                self.configure_limit(dim, l / 60.0, (l / 6.0).max(1.0))?
            }
            (None, _) => return Ok(false),
        };
        let (remaining, reset_s) = (remaining.max(0.0), reset_s.max(0.0));
        let limit = limit.filter(|l| l.is_finite() && *l > 0.0);
        let lim = shared.clone();
        spawn_quiet(async move {
            let _ = lim.observe_headers(&key, remaining, limit, reset_s).await;
        });
        Ok(true)
    }

    /// Ask to send an attempt at `priority` estimated at `est_in` input and
    /// `est_out` output tokens, which may wait at most `wait_s` seconds
    /// before sending (`deadline_s`: the time the call has left, for the
    /// refusal's message). `first` deposits in the retry budget (the first
    /// attempt of a call on this deployment).
    pub fn admit(
        &self,
        priority: u8,
        est_in: f64,
        est_out: f64,
        wait_s: f64,
        deadline_s: f64,
        first: bool,
    ) -> Result<Admission> {
        if usize::from(priority) >= scheduler::PRIORITY_LEVELS {
            return Err(invalid_priority(priority));
        }
        let est_in = tokens("est_in", est_in)?;
        let est_out = tokens("est_out", est_out)?;
        if wait_s.is_nan() || deadline_s.is_nan() {
            return Err(Error::InvalidArgument {
                what: "wait_s",
                detail: "wait_s and deadline_s must be numbers".into(),
            });
        }
        let mut st = self.state.lock();
        st.stats.admitted += 1;
        if first {
            st.budget.on_call();
        }
        if self.breaker.state() == BreakerState::Open {
            st.stats.refused_circuit += 1;
            return Err(self.circuit_open(self.breaker.retry_after_s()));
        }
        if let Some(retry_after) = self.shared_breaker.get().and_then(|b| b.refuses()) {
            st.stats.refused_circuit += 1;
            return Err(self.circuit_open(retry_after));
        }
        let mut entry = Entry {
            id: 0,
            priority,
            est_in,
            est_out,
            mask: 0,
            booked: false,
            shared: false,
            recorded: false,
            probe: 0,
            leased: false,
            phase: Phase::Delayed,
        };
        let delay = self.book(&mut st, &mut entry);
        if let Some(admission) = self.admit_leased(&mut st, &mut entry, delay) {
            return admission;
        }
        if self.shared.is_some() && st.shared_keys.iter().any(Option::is_some) {
            if delay >= wait_s && delay > 0.0 {
                self.refund(&mut st, &mut entry);
                st.stats.refused_throttled += 1;
                return Err(self.throttled(delay, wait_s, deadline_s));
            }
            entry.phase = Phase::Pending(delay);
            return Ok(Admission::Shared(Self::insert(&mut st, entry)));
        }
        if delay > 0.0 {
            if delay >= wait_s {
                self.refund(&mut st, &mut entry);
                st.stats.refused_throttled += 1;
                return Err(self.throttled(delay, wait_s, deadline_s));
            }
            let id = Self::insert(&mut st, entry);
            return Ok(Admission::Wait { id, delay_s: delay });
        }
        let id = Self::insert(&mut st, entry);
        self.take_slot(&mut st, id)
    }

    /// The shared stage of an entry `admit` answered [`Admission::Shared`]
    /// for: book its costs on the shared cells (within `wait_s`), then go on
    /// as `admit` would. An entry cancelled meanwhile gets its booking given
    /// back here. A `Permit` leaves the entry granted, reservation unspent
    /// until `settle` (a `cancel` before sending gives it back). With the
    /// answer comes who decided it (Redis, or the `on_unavailable` fallback).
    pub async fn check_shared(
        self: &Arc<Self>,
        id: u64,
        wait_s: f64,
        deadline_s: f64,
    ) -> Result<(Admission, Source)> {
        let Some(shared) = self.shared.clone() else {
            return Err(unknown(id));
        };
        let (items, tokens) = {
            let st = self.state.lock();
            let e = st.entries.get(&id).ok_or_else(|| unknown(id))?;
            let items: Vec<(String, f64)> = st
                .shared_keys
                .iter()
                .enumerate()
                .filter_map(|(i, k)| k.as_ref().map(|k| (k.to_string(), e.cost(i))))
                .collect();
            let tokens = st.shared_keys[1..].iter().any(Option::is_some);
            (items, tokens)
        };
        // leased mode settles its bookings locally: no record in Redis
        let res = (tokens && !shared.is_leased()).then(|| shared.reservation_id(id));
        let max_wait = if wait_s.is_finite() {
            wait_s.max(0.0)
        } else {
            f64::MAX
        };
        let a = shared
            .reserve_many(&items, max_wait, res.as_deref())
            .await?;
        let mut st = self.state.lock();
        st.stats.shared_checks += 1;
        if !matches!(a.source, Source::Redis | Source::Lease) {
            st.stats.shared_fallbacks += 1;
        }
        let local_delay = match st.entries.get(&id).map(|e| e.phase) {
            Some(Phase::Pending(d)) => d,
            _ => {
                // cancelled while Redis answered: nothing goes, give it back
                drop(st);
                if a.admitted {
                    self.refund_shared(&items, res);
                }
                return Err(unknown(id));
            }
        };
        let mut entry = st.entries.remove(&id).expect("entry exists");
        if !a.admitted {
            self.refund(&mut st, &mut entry);
            st.stats.refused_throttled += 1;
            if a.source == Source::Closed {
                return Err(Error::Throttled {
                    name: self.name.clone(),
                    retry_after_s: a.wait_s,
                    detail: "the shared limits are unavailable (Redis did not answer) and \
                             on_unavailable='closed' refuses"
                        .into(),
                });
            }
            return Err(self.throttled(a.wait_s, wait_s, deadline_s));
        }
        if !entry.booked {
            st.stats.outstanding += 1;
        }
        entry.booked = true;
        entry.shared = true;
        entry.recorded = res.is_some();
        entry.leased = shared.is_leased() && matches!(a.source, Source::Redis | Source::Lease);
        let delay = local_delay.max(a.wait_s);
        if delay > 0.0 {
            entry.phase = Phase::Delayed;
            st.entries.insert(id, entry);
            return Ok((Admission::Wait { id, delay_s: delay }, a.source));
        }
        entry.phase = Phase::Delayed;
        st.entries.insert(id, entry);
        match self.take_slot(&mut st, id)? {
            Admission::Permit(id) => {
                // handed out through a future: keep it booked (and refundable
                // by `cancel`) until `settle` says it was sent
                let e = st.entries.get_mut(&id).expect("entry exists");
                if let Phase::Permitted(t) = e.phase {
                    e.phase = Phase::Granted(t);
                    e.booked = true;
                    st.stats.outstanding += 1;
                    st.stats.permits -= 1;
                }
                Ok((Admission::Permit(id), a.source))
            }
            other => Ok((other, a.source)),
        }
    }

    fn throttled(&self, delay: f64, wait_s: f64, deadline_s: f64) -> Error {
        let why = if wait_s >= deadline_s {
            "past the deadline"
        } else {
            "too far off"
        };
        Error::Throttled {
            name: self.name.clone(),
            retry_after_s: delay,
            detail: format!("next slot in {delay:.3}s is {why}"),
        }
    }

    /// Continue an entry after its wait: a slept limiter delay goes on to
    /// the slot, a woken queued entry gets its permit (or learns the circuit
    /// opened meanwhile). A queued entry not granted yet answers `Wait` again.
    pub fn resume(&self, id: u64) -> Result<Admission> {
        let mut st = self.state.lock();
        let phase = st.entries.get(&id).ok_or_else(|| unknown(id))?.phase;
        match phase {
            Phase::Delayed => self.take_slot(&mut st, id),
            Phase::Queued(_) => Ok(Admission::Wait { id, delay_s: 0.0 }),
            Phase::Pending(_) => Ok(Admission::Shared(id)),
            Phase::Granted(t) => Ok(Self::permit(&mut st, id, t)),
            Phase::Refused(retry_after) => {
                st.entries.remove(&id);
                Err(self.circuit_open(retry_after))
            }
            Phase::Permitted(_) => Err(Error::InvalidArgument {
                what: "permit",
                detail: format!("entry {id} already holds a permit: settle it"),
            }),
        }
    }

    /// Book the outcome of a permitted attempt that took `latency_s`: breaker,
    /// scheduler (freeing the slot) and, with the real usage (`tokens_in`,
    /// `tokens_out`), the reconciliation of the token estimate. Returns the
    /// entries to wake.
    pub fn settle(
        &self,
        id: u64,
        outcome: Outcome,
        latency_s: f64,
        usage: Option<(f64, f64)>,
    ) -> Result<Vec<u64>> {
        self.settle_with(id, outcome, latency_s, usage, None)
    }

    /// [`Gate::settle`], with the `Retry-After` of a 429 (`Throttled`): with
    /// shared limits it pauses the deployment in every process.
    pub fn settle_with(
        &self,
        id: u64,
        outcome: Outcome,
        latency_s: f64,
        usage: Option<(f64, f64)>,
        retry_after_s: Option<f64>,
    ) -> Result<Vec<u64>> {
        if !(latency_s.is_finite() && latency_s >= 0.0) {
            return Err(Error::InvalidArgument {
                what: "latency_s",
                detail: format!("latency_s={latency_s} must be a finite number >= 0"),
            });
        }
        if let Some((i, o)) = usage {
            tokens("tokens_in", i)?;
            tokens("tokens_out", o)?;
        }
        let mut st = self.state.lock();
        let ticket = match st.entries.get(&id).map(|e| e.phase) {
            Some(Phase::Permitted(t)) => t,
            // a permit handed out by `check_shared`: settled means it was sent
            Some(Phase::Granted(t)) if st.entries[&id].shared => t,
            _ => return Err(unknown(id)),
        };
        let entry = st.entries.remove(&id).expect("entry exists");
        if entry.booked {
            st.stats.outstanding -= 1;
            st.stats.permits += 1;
        }
        self.breaker.record(outcome.breaker(), latency_s)?;
        if let Some(b) = self.shared_breaker.get() {
            b.publish(outcome.breaker(), latency_s, entry.probe);
        }
        let granted = st
            .scheduler
            .release(ticket, outcome.scheduler(), latency_s)?;
        st.stats.settled += 1;
        if outcome == Outcome::Deadline {
            st.stats.deadline_cuts += 1;
        }
        if let Some((used_in, used_out)) = usage {
            self.reconcile(&st, &entry, used_in, used_out);
        }
        if let (true, Some((used_in, used_out))) = (entry.leased, usage) {
            self.reconcile_leased(&st, &entry, used_in, used_out);
        }
        if entry.recorded {
            // without the real usage the estimate stands; settling it by the id
            // still drops the reservation's record (no ten-minute leftovers)
            let (used_in, used_out) = usage.unwrap_or((entry.est_in, entry.est_out));
            self.reconcile_shared(&st, id, used_in, used_out);
        }
        if let (Outcome::Throttled, Some(s)) = (outcome, retry_after_s) {
            self.pause_shared(&st, s);
        }
        Ok(self.grant(&mut st, granted))
    }

    /// Give up an entry in any phase: a reservation not spent is refunded, a
    /// queued ticket leaves the queue, a slot is freed (outcome `Ignored`, a
    /// breaker probe given back). Unknown or finished entries are a no-op.
    /// Returns the entries to wake.
    pub fn cancel(&self, id: u64) -> Vec<u64> {
        let mut st = self.state.lock();
        let Some(mut entry) = st.entries.remove(&id) else {
            return std::mem::take(&mut st.pending);
        };
        st.stats.cancelled += 1;
        let granted = match entry.phase {
            Phase::Delayed | Phase::Refused(_) | Phase::Pending(_) => Vec::new(),
            Phase::Queued(t) => {
                st.by_ticket.remove(&t);
                st.scheduler.cancel(t)
            }
            Phase::Granted(t) | Phase::Permitted(t) => {
                // a probe permit taken for it goes back
                let _ = self.breaker.record(breaker::Outcome::Ignored, 0.0);
                if let Some(b) = self.shared_breaker.get() {
                    b.publish(breaker::Outcome::Ignored, 0.0, entry.probe);
                }
                st.scheduler.cancel(t)
            }
        };
        self.refund(&mut st, &mut entry);
        self.grant(&mut st, granted)
    }

    /// Whether entry `id` is queued for a slot and not granted yet.
    pub fn is_queued(&self, id: u64) -> bool {
        matches!(
            self.state.lock().entries.get(&id).map(|e| e.phase),
            Some(Phase::Queued(_))
        )
    }

    /// Take one retry from the budget if it allows it.
    pub fn try_retry(&self) -> bool {
        self.state.lock().budget.try_spend()
    }

    /// Retry credits left.
    pub fn retry_balance(&self) -> f64 {
        self.state.lock().budget.balance()
    }

    /// Outstanding reservations and the capacity available now per
    /// configured dimension (`inf` would be an unconfigured one: not listed).
    pub fn limiter_stats(&self) -> (usize, Vec<(&'static str, f64)>) {
        let st = self.state.lock();
        let avail = DIMS
            .iter()
            .zip(st.keys.iter())
            .filter_map(|(d, k)| k.as_ref().map(|k| (*d, self.limiter.available(k))))
            .collect();
        (st.stats.outstanding, avail)
    }

    /// The gate's counters.
    pub fn stats(&self) -> GateStats {
        let st = self.state.lock();
        GateStats {
            entries: st.entries.len(),
            ..st.stats.clone()
        }
    }

    /// In a forked child: the parent's attempts do not exist here. A fresh
    /// scheduler, no entries, no outstanding reservations; the breaker and
    /// the cells keep what they learnt.
    pub fn after_fork(&self) -> Result<()> {
        let fresh = PriorityScheduler::new(self.cfg.scheduler.clone(), self.clock.clone())?;
        let mut st = self.state.lock();
        st.scheduler = Arc::new(fresh);
        st.entries.clear();
        st.by_ticket.clear();
        st.pending.clear();
        st.stats.outstanding = 0;
        if let Some(b) = self.shared_breaker.get() {
            b.after_fork();
        }
        Ok(())
    }

    /// Check the gate's books against its scheduler (tests and debugging):
    /// every queued ticket belongs to a queued entry, every slot to a granted
    /// or permitted one, every unspent reservation is counted.
    pub fn check(&self) -> std::result::Result<(), String> {
        let st = self.state.lock();
        let count = |f: fn(&Phase) -> bool| st.entries.values().filter(|e| f(&e.phase)).count();
        let queued = count(|p| matches!(p, Phase::Queued(_)));
        let running = count(|p| matches!(p, Phase::Granted(_) | Phase::Permitted(_)));
        let booked = st.entries.values().filter(|e| e.booked).count();
        let s = st.scheduler.stats();
        if s.queued != queued || st.by_ticket.len() != queued {
            return Err(format!(
                "queued: scheduler {} entries {queued} map {}",
                s.queued,
                st.by_ticket.len()
            ));
        }
        if s.in_flight != running {
            return Err(format!(
                "in flight: scheduler {} entries {running}",
                s.in_flight
            ));
        }
        if booked != st.stats.outstanding {
            return Err(format!(
                "outstanding: counted {} booked {booked}",
                st.stats.outstanding
            ));
        }
        Ok(())
    }

    fn circuit_open(&self, retry_after_s: f64) -> Error {
        Error::CircuitOpen {
            name: self.name.clone(),
            retry_after_s,
        }
    }

    fn insert(st: &mut State, mut entry: Entry) -> u64 {
        let id = st.next_id;
        st.next_id += 1;
        entry.id = id;
        st.entries.insert(id, entry);
        id
    }

    /// Book the entry's costs on every configured cell; the largest delay.
    fn book(&self, st: &mut State, entry: &mut Entry) -> f64 {
        let mut delay = 0.0_f64;
        for (i, key) in st.keys.iter().enumerate() {
            if let Some(key) = key {
                // costs were checked: reserve cannot fail
                delay = delay.max(self.limiter.reserve(key, entry.cost(i)).unwrap_or(0.0));
                entry.mask |= 1 << i;
            }
        }
        if entry.mask != 0 {
            entry.booked = true;
            st.stats.outstanding += 1;
        }
        delay
    }

    /// Give back an unspent reservation.
    fn refund(&self, st: &mut State, entry: &mut Entry) {
        if !entry.booked {
            return;
        }
        entry.booked = false;
        st.stats.outstanding -= 1;
        for (i, key) in st.keys.iter().enumerate() {
            if let (Some(key), true) = (key, entry.mask & (1 << i) != 0) {
                let _ = self.limiter.refund(key, entry.cost(i));
            }
        }
        if std::mem::take(&mut entry.shared) {
            if let Some(lim) = self.shared.as_ref().filter(|l| l.is_leased()) {
                // leased: back into a live slice (the rest to Redis); a booking
                // the on_unavailable fallback decided is not given back there
                if entry.leased {
                    let _ = lim.refund_leased(&Self::shared_items(st, entry));
                }
                return;
            }
            let items: Vec<(String, f64)> = st
                .shared_keys
                .iter()
                .enumerate()
                .filter_map(|(i, k)| k.as_ref().map(|k| (k.to_string(), entry.cost(i))))
                .collect();
            let res = entry
                .recorded
                .then(|| self.shared.as_ref().map(|s| s.reservation_id(entry.id)))
                .flatten();
            self.refund_shared(&items, res);
        }
    }

    /// Give a shared booking back (by its reservation when recorded: a
    /// reconcile to zero, applied once), on the runtime.
    fn refund_shared(&self, items: &[(String, f64)], res: Option<String>) {
        let Some(lim) = self.shared.clone() else {
            return;
        };
        let items = items.to_vec();
        spawn_quiet(async move {
            match res {
                Some(id) => {
                    let zeros: Vec<_> = items.into_iter().map(|(k, _)| (k, 0.0)).collect();
                    let _ = lim.reconcile(&id, &zeros).await;
                }
                None => {
                    let _ = lim.refund(&items).await;
                }
            }
        });
    }

    /// The entry's costs on the shared cells.
    fn shared_items(st: &State, entry: &Entry) -> Vec<(String, f64)> {
        st.shared_keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.as_ref().map(|k| (k.to_string(), entry.cost(i))))
            .collect()
    }

    /// Leased mode's fast path in `admit`: when this process's slices cover
    /// every shared cost, book them there and go on to the slot at once (no
    /// `Admission::Shared` round trip). `None` when it does not apply.
    fn admit_leased(
        &self,
        st: &mut State,
        entry: &mut Entry,
        delay: f64,
    ) -> Option<Result<Admission>> {
        let lim = self.shared.as_ref().filter(|l| l.is_leased())?;
        if delay > 0.0 || st.shared_keys.iter().all(Option::is_none) {
            return None;
        }
        let items = Self::shared_items(st, entry);
        if !lim.take_leased(&items).unwrap_or(false) {
            return None;
        }
        if !entry.booked {
            st.stats.outstanding += 1;
        }
        entry.booked = true;
        entry.shared = true;
        entry.leased = true;
        let id = Self::insert(st, *entry);
        Some(self.take_slot(st, id))
    }

    /// Settle a leased booking with the real usage, locally where it can.
    fn reconcile_leased(&self, st: &State, entry: &Entry, used_in: f64, used_out: f64) {
        let Some(lim) = &self.shared else {
            return;
        };
        let deltas: Vec<(String, f64)> = [(1, used_in + used_out), (2, used_in), (3, used_out)]
            .into_iter()
            .filter_map(|(i, actual)| {
                st.shared_keys[i]
                    .as_ref()
                    .map(|k| (k.to_string(), actual - entry.cost(i)))
            })
            .filter(|(_, d)| *d != 0.0)
            .collect();
        if !deltas.is_empty() {
            let _ = lim.adjust_leased(&deltas);
        }
    }

    fn reconcile_shared(&self, st: &State, id: u64, used_in: f64, used_out: f64) {
        let Some(lim) = self.shared.clone() else {
            return;
        };
        let items: Vec<(String, f64)> = [(1, used_in + used_out), (2, used_in), (3, used_out)]
            .into_iter()
            .filter_map(|(i, actual)| st.shared_keys[i].as_ref().map(|k| (k.to_string(), actual)))
            .collect();
        let res = lim.reservation_id(id);
        spawn_quiet(async move {
            let _ = lim.reconcile(&res, &items).await;
        });
    }

    fn pause_shared(&self, st: &State, retry_after_s: f64) {
        let (Some(lim), Some(key)) = (
            self.shared.clone(),
            st.shared_keys
                .iter()
                .flatten()
                .next()
                .map(|k| k.to_string()),
        ) else {
            return;
        };
        if !(retry_after_s.is_finite() && retry_after_s > 0.0) {
            return;
        }
        spawn_quiet(async move {
            let _ = lim.pause(&key, retry_after_s).await;
        });
    }

    fn reconcile(&self, st: &State, entry: &Entry, used_in: f64, used_out: f64) {
        for (i, actual) in [(1, used_in + used_out), (2, used_in), (3, used_out)] {
            if let (Some(key), true) = (&st.keys[i], entry.mask & (1 << i) != 0) {
                let _ = self.limiter.reconcile(key, entry.cost(i), actual);
            }
        }
    }

    /// Hand out the permit of entry `id` holding slot `ticket`.
    fn permit(st: &mut State, id: u64, ticket: u64) -> Admission {
        let e = st.entries.get_mut(&id).expect("entry exists");
        e.phase = Phase::Permitted(ticket);
        if std::mem::take(&mut e.booked) {
            st.stats.outstanding -= 1; // spent on this send from here on
        }
        st.stats.permits += 1;
        Admission::Permit(id)
    }

    /// The slot stage of entry `id` (booked, not queued yet).
    fn take_slot(&self, st: &mut State, id: u64) -> Result<Admission> {
        let priority = st.entries[&id].priority;
        let (ticket, now) = match st.scheduler.acquire(priority) {
            Ok(v) => v,
            Err(e) => {
                let mut entry = st.entries.remove(&id).expect("entry exists");
                self.refund(st, &mut entry);
                st.stats.refused_queue += 1;
                return Err(e);
            }
        };
        if !now {
            st.entries.get_mut(&id).expect("entry exists").phase = Phase::Queued(ticket);
            st.by_ticket.insert(ticket, id);
            return Ok(Admission::Wait { id, delay_s: 0.0 });
        }
        if self.acquire_breaker(st, id) {
            return Ok(Self::permit(st, id, ticket));
        }
        let mut entry = st.entries.remove(&id).expect("entry exists");
        self.refund(st, &mut entry);
        st.stats.refused_circuit += 1;
        // granted at once means nothing was queued: this frees no one, but keep
        // whatever it grants for the next step that can return it
        let granted = st.scheduler.cancel(ticket);
        let woken = self.grant(st, granted);
        st.pending.extend(woken);
        Err(self.circuit_open(self.breaker_retry_after()))
    }

    /// Queued tickets the scheduler just granted: ask the breaker for each
    /// (a refusal frees the slot for the next one). Returns the entries to
    /// wake, with any pending from an earlier refusal.
    fn grant(&self, st: &mut State, granted: Vec<u64>) -> Vec<u64> {
        let mut woken = std::mem::take(&mut st.pending);
        let mut todo = granted;
        while !todo.is_empty() {
            let mut next = Vec::new();
            for ticket in todo {
                let Some(id) = st.by_ticket.remove(&ticket) else {
                    // not ours (granted behind the gate's back): free it again
                    next.extend(st.scheduler.cancel(ticket));
                    continue;
                };
                if self.acquire_breaker(st, id) {
                    st.entries.get_mut(&id).expect("entry exists").phase = Phase::Granted(ticket);
                } else {
                    let retry_after = self.breaker_retry_after();
                    let mut entry = *st.entries.get(&id).expect("entry exists");
                    self.refund(st, &mut entry);
                    entry.phase = Phase::Refused(retry_after);
                    st.entries.insert(id, entry);
                    st.stats.refused_circuit += 1;
                    next.extend(st.scheduler.cancel(ticket));
                }
                woken.push(id);
            }
            todo = next;
        }
        woken
    }
}

/// Run `job` on the core's runtime, if there is one; nobody waits for it.
fn spawn_quiet<F>(job: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    if let Ok(rt) = crate::runtime::handle() {
        rt.spawn(job);
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;

#[cfg(test)]
mod lease_tests;
