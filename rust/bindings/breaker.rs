//! `CircuitBreaker` for Python: a frozen wrapper over [`crate::breaker::CircuitBreaker`].

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::clock::{pick, PyManualClock};
use crate::breaker::{CircuitBreaker, Config, Outcome, Transition};
use crate::Error;

/// resilience4j-style circuit breaker over a count-based sliding window.
#[pyclass(name = "CircuitBreaker", module = "llmrelay._core", frozen)]
pub struct PyCircuitBreaker {
    pub(crate) inner: Arc<CircuitBreaker>,
}

/// A count argument: at least 1 (the error names `param` and the value).
pub(super) fn count(param: &'static str, v: i64) -> Result<usize, Error> {
    usize::try_from(v)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| Error::config(param, v, "must be >= 1"))
}

#[pymethods]
impl PyCircuitBreaker {
    #[new]
    #[pyo3(signature = (
        name, *, failure_rate_threshold = 0.5, slow_call_rate_threshold = 1.0,
        slow_call_duration_s = None, minimum_calls = 10, window_size = 20,
        open_duration_s = 30.0, open_backoff_multiplier = 1.0, max_open_duration_s = 300.0,
        half_open_max_calls = 1, clock = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        failure_rate_threshold: f64,
        slow_call_rate_threshold: f64,
        slow_call_duration_s: Option<f64>,
        minimum_calls: i64,
        window_size: i64,
        open_duration_s: f64,
        open_backoff_multiplier: f64,
        max_open_duration_s: f64,
        half_open_max_calls: i64,
        clock: Option<&Bound<'_, PyManualClock>>,
    ) -> PyResult<Self> {
        let cfg = Config {
            failure_rate_threshold,
            slow_call_rate_threshold,
            slow_call_duration_s,
            minimum_calls: count("minimum_calls", minimum_calls)?,
            window_size: count("window_size", window_size)?,
            open_duration_s,
            open_backoff_multiplier,
            max_open_duration_s,
            half_open_max_calls: count("half_open_max_calls", half_open_max_calls)?,
        };
        Ok(Self {
            inner: Arc::new(CircuitBreaker::new(name, cfg, pick(clock))?),
        })
    }

    /// Permission for one call.
    fn try_acquire(&self) -> bool {
        self.inner.try_acquire()
    }

    /// Permission for one call, or `CircuitOpenError`.
    fn acquire(&self) -> PyResult<()> {
        Ok(self.inner.acquire()?)
    }

    /// Record `"success"`, `"failure"` or `"ignored"` for a call of `duration_s`.
    #[pyo3(signature = (outcome, duration_s = 0.0))]
    fn record(&self, outcome: &str, duration_s: f64) -> PyResult<()> {
        Ok(self.inner.record(Outcome::parse(outcome)?, duration_s)?)
    }

    /// Back to closed, window cleared.
    fn reset(&self) {
        self.inner.reset()
    }

    /// `"closed"`, `"open"` or `"half_open"` (applies the lazy half-opening).
    #[getter]
    fn state(&self) -> &'static str {
        self.inner.state().as_str()
    }

    /// Failure rate over the current window (0.0 when empty).
    #[getter]
    fn failure_rate(&self) -> f64 {
        self.inner.stats().failure_rate
    }

    /// Slow-call rate over the current window (0.0 when empty).
    #[getter]
    fn slow_call_rate(&self) -> f64 {
        self.inner.stats().slow_call_rate
    }

    /// Seconds until an open breaker half-opens; 0.0 unless open.
    #[getter]
    fn retry_after_s(&self) -> f64 {
        self.inner.retry_after_s()
    }

    /// The breaker's name.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Counts of each transition, keyed like `"closed->open"`.
    fn transitions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (t, n) in Transition::ALL.iter().zip(self.inner.transitions()) {
            d.set_item(t.as_str(), n)?;
        }
        Ok(d)
    }

    /// State, window counts, rates, trips and retry_after_s.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("state", s.state.as_str())?;
        d.set_item("calls", s.calls)?;
        d.set_item("failures", s.failures)?;
        d.set_item("slow_calls", s.slow_calls)?;
        d.set_item("failure_rate", s.failure_rate)?;
        d.set_item("slow_call_rate", s.slow_call_rate)?;
        d.set_item("trips", s.trips)?;
        d.set_item("retry_after_s", s.retry_after_s)?;
        d.set_item("probes_in_flight", self.inner.probes_in_flight())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "CircuitBreaker(name={:?}, state={})",
            self.inner.name(),
            self.inner.state().as_str()
        )
    }
}
