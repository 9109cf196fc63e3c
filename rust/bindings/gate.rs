//! `Gate` for Python: one admission gate per deployment, answering each
//! step of an attempt in one call (see [`crate::gate`]).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::breaker::{count as at_least_one, PyCircuitBreaker};
use super::clock::{pick, PyManualClock};
use super::error::to_pyerr;
use super::http::{Outcome as Done, PyCompletions, Waker};
use super::limiter::PyRateLimiter;
use super::scheduler::{count, PyPriorityScheduler};
use super::shared::{PySharedBreakers, PySharedLimiter};
use crate::breaker;
use crate::gate::{Admission, Gate, GateConfig, Outcome};
use crate::runtime;
use crate::scheduler::{invalid_priority, SchedulerConfig};

/// `admit`/`resume` answered: go (slot, breaker permit, reservation spent).
const PERMIT: u8 = 0;
/// `admit`/`resume` answered: wait (a delay to sleep, or 0: queued until woken).
const WAIT: u8 = 1;
/// `admit` answered: the shared limits decide; the future passed to `admit`
/// gets the answer (`(GATE_PERMIT | GATE_WAIT, id, delay_s)` or a refusal).
const SHARED: u8 = 2;

/// One deployment's scheduler, rate-limit cells, breaker and retry budget.
///
/// Callers queued for a slot park their asyncio future here (`park`); the
/// `settle` or `cancel` that grants their entry wakes it through its loop's
/// `Completions`, so Python keeps no map of waiters.
#[pyclass(name = "Gate", module = "llmrelay._core", frozen)]
pub struct PyGate {
    inner: Arc<Gate>,
    parked: Mutex<HashMap<u64, Waker>>,
}

impl PyGate {
    /// Wake the parked futures of the entries just granted; returns the ids.
    fn wake(&self, ids: Vec<u64>) -> Vec<u64> {
        if !ids.is_empty() {
            let mut parked = self.parked.lock();
            for id in &ids {
                if let Some(w) = parked.remove(id) {
                    w.wake();
                }
            }
        }
        ids
    }
}

/// Entry ids are u64 starting at 1; a negative int is simply no entry of ours.
fn entry(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn answer(a: Admission) -> (u8, u64, f64) {
    match a {
        Admission::Permit(id) => (PERMIT, id, 0.0),
        Admission::Wait { id, delay_s } => (WAIT, id, delay_s),
        Admission::Shared(id) => (SHARED, id, 0.0),
    }
}

#[pymethods]
impl PyGate {
    #[new]
    #[pyo3(signature = (
        name, *, limiter, max_concurrency = 64, min_concurrency = 1, max_queue = 10_000,
        adaptive = true, aging_s = 10.0, failure_rate_threshold = 0.5,
        slow_call_rate_threshold = 1.0, slow_call_duration_s = None, minimum_calls = 10,
        window_size = 20, open_duration_s = 30.0, open_backoff_multiplier = 1.0,
        max_open_duration_s = 300.0, half_open_max_calls = 1, retry_budget_ratio = 0.2,
        retry_budget_floor = 10.0, clock = None, shared = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        limiter: &Bound<'_, PyRateLimiter>,
        max_concurrency: i64,
        min_concurrency: i64,
        max_queue: i64,
        adaptive: bool,
        aging_s: f64,
        failure_rate_threshold: f64,
        slow_call_rate_threshold: f64,
        slow_call_duration_s: Option<f64>,
        minimum_calls: i64,
        window_size: i64,
        open_duration_s: f64,
        open_backoff_multiplier: f64,
        max_open_duration_s: f64,
        half_open_max_calls: i64,
        retry_budget_ratio: f64,
        retry_budget_floor: f64,
        clock: Option<&Bound<'_, PyManualClock>>,
        shared: Option<&Bound<'_, PySharedLimiter>>,
    ) -> PyResult<Self> {
        let cfg = GateConfig {
            scheduler: SchedulerConfig {
                max_concurrency: count("max_concurrency", max_concurrency)?,
                min_concurrency: count("min_concurrency", min_concurrency)?,
                max_queue: count("max_queue", max_queue)?,
                adaptive,
                aging_s,
                ..SchedulerConfig::default()
            },
            breaker: breaker::Config {
                failure_rate_threshold,
                slow_call_rate_threshold,
                slow_call_duration_s,
                minimum_calls: at_least_one("minimum_calls", minimum_calls)?,
                window_size: at_least_one("window_size", window_size)?,
                open_duration_s,
                open_backoff_multiplier,
                max_open_duration_s,
                half_open_max_calls: at_least_one("half_open_max_calls", half_open_max_calls)?,
            },
            retry_budget_ratio,
            retry_budget_floor,
        };
        let limiter = Arc::clone(&limiter.get().inner);
        let mut gate = Gate::new(name, cfg, limiter, pick(clock))?;
        if let Some(shared) = shared {
            gate = gate.with_shared(Arc::clone(&shared.get().inner));
        }
        Ok(Self {
            inner: Arc::new(gate),
            parked: Mutex::new(HashMap::new()),
        })
    }

    /// `(GATE_PERMIT, id, 0.0)`, `(GATE_WAIT, id, delay_s)`, or a typed refusal
    /// (CircuitOpenError, QueueFullError, ClientThrottledError). Token counts
    /// are ints: pyo3 reads an int as `f64` about ten times slower than as `i64`.
    ///
    /// A gate with shared limits answers `(GATE_SHARED, id, 0.0)`: the shared
    /// check runs on the core's runtime and settles `future` (through
    /// `completions`, its loop's queue) with what `admit` would have answered
    /// plus who decided: `(kind, id, delay_s, source)`, or a typed refusal.
    #[pyo3(signature = (
        priority, est_in, est_out, wait_s, deadline_s, first = false, future = None,
        completions = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        priority: i64,
        est_in: i64,
        est_out: i64,
        wait_s: f64,
        deadline_s: f64,
        first: bool,
        future: Option<Py<PyAny>>,
        completions: Option<&Bound<'_, PyCompletions>>,
    ) -> PyResult<(u8, u64, f64)> {
        let p = u8::try_from(priority).map_err(|_| invalid_priority(priority))?;
        let a = self
            .inner
            .admit(p, est_in as f64, est_out as f64, wait_s, deadline_s, first)?;
        if let Admission::Shared(id) = a {
            let (Some(future), Some(completions)) = (future, completions) else {
                self.inner.cancel(id);
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "a gate with shared limits needs admit(..., future, completions)",
                ));
            };
            let queue = completions.get().queue();
            let gate = Arc::clone(&self.inner);
            runtime::handle()?.spawn(async move {
                let result = gate.check_shared(id, wait_s, deadline_s).await;
                let done = Done::Value(Box::new(move |py: Python<'_>| match result {
                    Ok((a, source)) => {
                        let (kind, id, delay) = answer(a);
                        let out = (kind, id, delay, source.as_str());
                        Ok(out.into_pyobject(py)?.into_any().unbind())
                    }
                    Err(e) => Ok(to_pyerr(py, &e).into_value(py).into_any()),
                }));
                queue.push(future, done);
            });
        }
        Ok(answer(a))
    }

    /// Continue an entry after its wait; answers like `admit`.
    fn resume(&self, id: i64) -> PyResult<(u8, u64, f64)> {
        Ok(answer(self.inner.resume(entry(id))?))
    }

    /// Book a permit's outcome (an outcome constant), latency and, when both
    /// are given, its real token usage; returns the entries to wake.
    /// A 429's `retry_after_s` pauses the deployment in every process when its
    /// limits are shared.
    #[pyo3(signature = (
        id, outcome, latency_s = 0.0, tokens_in = None, tokens_out = None, retry_after_s = None
    ))]
    fn settle(
        &self,
        id: i64,
        outcome: i64,
        latency_s: f64,
        tokens_in: Option<i64>,
        tokens_out: Option<i64>,
        retry_after_s: Option<f64>,
    ) -> PyResult<Vec<u64>> {
        let outcome = Outcome::from_code(outcome)?;
        let usage = tokens_in.zip(tokens_out).map(|(i, o)| (i as f64, o as f64));
        let woken = self
            .inner
            .settle_with(entry(id), outcome, latency_s, usage, retry_after_s)?;
        Ok(self.wake(woken))
    }

    /// Give up an entry in any phase (idempotent; its parked future is
    /// dropped); wakes, and returns, the entries granted as a result.
    fn cancel(&self, id: i64) -> Vec<u64> {
        self.parked.lock().remove(&entry(id));
        let woken = self.inner.cancel(entry(id));
        self.wake(woken)
    }

    /// Park `future` until queued entry `id` is granted: the granting `settle`
    /// or `cancel` sets its result to `None` through `completions` (the
    /// future's loop's queue). False when `id` is not queued (already granted:
    /// resume at once).
    fn park(&self, id: i64, future: Py<PyAny>, completions: &Bound<'_, PyCompletions>) -> bool {
        let id = entry(id);
        let mut parked = self.parked.lock();
        if !self.inner.is_queued(id) {
            return false;
        }
        parked.insert(id, Waker::new(future, completions.get()));
        true
    }

    /// The entries whose futures are parked.
    fn parked(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.parked.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Take one retry from the budget if it allows it.
    fn try_retry(&self) -> bool {
        self.inner.try_retry()
    }

    /// Whether the breaker would refuse a call now.
    fn is_open(&self) -> bool {
        self.inner.is_open()
    }

    /// Configure the cell of `dim` ("rpm", "tpm", "itpm", "otpm"); its limiter key.
    fn configure_limit(&self, dim: &str, rate_per_s: f64, burst: f64) -> PyResult<String> {
        Ok(self.inner.configure_limit(dim, rate_per_s, burst)?)
    }

    /// Learn from a reply's headers for `dim`; whether a cell was tightened.
    fn observe_headers(
        &self,
        dim: &str,
        remaining: f64,
        limit: Option<f64>,
        reset_s: f64,
    ) -> PyResult<bool> {
        Ok(self.inner.observe_headers(dim, remaining, limit, reset_s)?)
    }

    /// The configured cells: `{dim: key}`.
    fn rate_keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (dim, key) in self.inner.rate_keys() {
            d.set_item(dim, key)?;
        }
        Ok(d)
    }

    /// `{"outstanding": n, "available.<dim>": capacity, ...}`.
    fn limiter_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (outstanding, avail) = self.inner.limiter_stats();
        let d = PyDict::new(py);
        d.set_item("outstanding", outstanding as f64)?;
        for (dim, a) in avail {
            d.set_item(format!("available.{dim}"), a)?;
        }
        Ok(d)
    }

    /// The gate's counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("admitted", s.admitted)?;
        d.set_item("permits", s.permits)?;
        d.set_item("refused_circuit", s.refused_circuit)?;
        d.set_item("refused_queue", s.refused_queue)?;
        d.set_item("refused_throttled", s.refused_throttled)?;
        d.set_item("cancelled", s.cancelled)?;
        d.set_item("settled", s.settled)?;
        d.set_item("deadline_cuts", s.deadline_cuts)?;
        d.set_item("entries", s.entries)?;
        d.set_item("outstanding", s.outstanding)?;
        d.set_item("retry_balance", self.inner.retry_balance())?;
        d.set_item("shared_checks", s.shared_checks)?;
        d.set_item("shared_fallbacks", s.shared_fallbacks)?;
        Ok(d)
    }

    /// In a forked child: a fresh scheduler, no entries, nothing outstanding.
    fn after_fork(&self) -> PyResult<()> {
        // the parent's futures belong to loops that do not run here
        self.parked.lock().clear();
        Ok(self.inner.after_fork()?)
    }

    /// The deployment's name.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Whether the gate keeps its limits in a shared limiter (Redis).
    #[getter]
    fn shared(&self) -> bool {
        self.inner.shared().is_some()
    }

    /// Share the deployment's breaker through `hub` (Redis), once: outcomes are
    /// published and the deployment opens cluster-wide when bad outcomes from
    /// at least two processes cross the threshold.
    fn share_breaker(&self, hub: &Bound<'_, PySharedBreakers>) -> PyResult<()> {
        Ok(self.inner.share_breaker(&hub.get().inner)?)
    }

    /// The shared breaker's state and counts, or None without one.
    fn shared_breaker_stats<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(b) = self.inner.shared_breaker() else {
            return Ok(None);
        };
        let s = b.stats();
        let d = PyDict::new(py);
        d.set_item("state", b.state().as_str())?;
        d.set_item("open_for_s", b.open_for().unwrap_or(0.0))?;
        d.set_item("permits", b.permits())?;
        d.set_item("published", s.published)?;
        d.set_item("publish_errors", s.publish_errors)?;
        d.set_item("publish_dropped", s.publish_dropped)?;
        d.set_item("opens", s.opens)?;
        d.set_item("reopens", s.reopens)?;
        d.set_item("closes", s.closes)?;
        d.set_item("probes", s.probes)?;
        d.set_item("probe_denials", s.probe_denials)?;
        d.set_item("permits_returned", s.permits_returned)?;
        d.set_item("fallbacks", s.fallbacks)?;
        d.set_item("refused", s.refused)?;
        d.set_item("notices", s.notices)?;
        d.set_item("listening", b.hub().listening())?;
        Ok(Some(d))
    }

    /// The scheduler, to read (admission goes through the gate).
    #[getter]
    fn scheduler(&self) -> PyPriorityScheduler {
        PyPriorityScheduler {
            inner: self.inner.scheduler(),
        }
    }

    /// The breaker, to read (outcomes go through the gate).
    #[getter]
    fn breaker(&self) -> PyCircuitBreaker {
        PyCircuitBreaker {
            inner: self.inner.breaker(),
        }
    }

    fn __repr__(&self) -> String {
        let s = self.inner.stats();
        format!(
            "Gate(name={:?}, entries={}, outstanding={})",
            self.inner.name(),
            s.entries,
            s.outstanding
        )
    }
}

/// Register the class and its constants in `llmrelay._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyGate>()?;
    m.add("GATE_PERMIT", PERMIT)?;
    m.add("GATE_WAIT", WAIT)?;
    m.add("GATE_SHARED", SHARED)?;
    for (name, o) in [
        ("SUCCESS", Outcome::Success),
        ("THROTTLED", Outcome::Throttled),
        ("OVERLOAD", Outcome::Overload),
        ("FAILURE", Outcome::Failure),
        ("ERROR", Outcome::Error),
        ("IGNORED", Outcome::Ignored),
        ("DEADLINE", Outcome::Deadline),
    ] {
        m.add(name, o as u8)?;
    }
    Ok(())
}
