//! `RateLimiter` for Python: a frozen wrapper over [`crate::limiter::RateLimiter`].

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyString;

use super::clock::{pick, PyManualClock};
use crate::limiter::RateLimiter;

/// Keyed GCRA rate limiter; an unconfigured key is unlimited.
#[pyclass(name = "RateLimiter", module = "llmrelay._core", frozen)]
pub struct PyRateLimiter {
    pub(crate) inner: Arc<RateLimiter>,
}

#[pymethods]
impl PyRateLimiter {
    #[new]
    #[pyo3(signature = (*, idle_ttl_s = 600.0, clock = None))]
    fn new(idle_ttl_s: f64, clock: Option<&Bound<'_, PyManualClock>>) -> PyResult<Self> {
        Ok(Self {
            inner: Arc::new(RateLimiter::new(idle_ttl_s, pick(clock))?),
        })
    }

    /// (Re)configure `key`: `rate_per_s` > 0, `burst` >= 1.
    fn configure(&self, key: &str, rate_per_s: f64, burst: f64) -> PyResult<()> {
        Ok(self.inner.configure(key, rate_per_s, burst)?)
    }

    /// 0.0 if admitted now (capacity taken), else seconds until it would be.
    #[pyo3(signature = (key, cost = 1.0))]
    fn try_acquire(&self, key: &str, cost: f64) -> PyResult<f64> {
        Ok(self.inner.try_acquire(key, cost)?)
    }

    /// Book `cost` and return the delay in seconds before going (FIFO).
    #[pyo3(signature = (key, cost = 1.0))]
    fn reserve(&self, key: &str, cost: f64) -> PyResult<f64> {
        Ok(self.inner.reserve(key, cost)?)
    }

    /// Book on every `(key, cost)` (each key on its own); the largest delay.
    fn reserve_many(&self, items: Vec<(Bound<'_, PyString>, f64)>) -> PyResult<f64> {
        let items = items
            .iter()
            .map(|(k, c)| Ok((k.to_str()?, *c)))
            .collect::<PyResult<Vec<(&str, f64)>>>()?;
        Ok(self.inner.reserve_many(items.iter().copied())?)
    }

    /// Give back (`actual < estimated`) or charge the difference.
    fn reconcile(&self, key: &str, estimated: f64, actual: f64) -> PyResult<()> {
        Ok(self.inner.reconcile(key, estimated, actual)?)
    }

    /// Give back an unused booking of `cost`.
    fn refund(&self, key: &str, cost: f64) -> PyResult<()> {
        Ok(self.inner.refund(key, cost)?)
    }

    /// Tighten `key` to admit at most `remaining` before the reset.
    fn observe_headers(
        &self,
        key: &str,
        remaining: f64,
        limit: Option<f64>,
        reset_s: f64,
    ) -> PyResult<()> {
        Ok(self.inner.observe_headers(key, remaining, limit, reset_s)?)
    }

    /// Capacity that could be taken now (`inf` for an unconfigured key).
    fn available(&self, key: &str) -> f64 {
        self.inner.available(key)
    }

    /// Forget full cells idle longer than `idle_ttl_s`; how many went.
    fn sweep(&self) -> usize {
        self.inner.sweep()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!("RateLimiter(cells={})", self.inner.len())
    }
}
