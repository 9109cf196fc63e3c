//! `PriorityScheduler` for Python: the core decides, Python waits on futures
//! keyed by the tickets these methods return.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::clock::{pick, PyManualClock};
use crate::scheduler::{invalid_priority, Outcome, PriorityScheduler, SchedulerConfig};
use crate::Error;

/// Priority admission with a bounded queue and adaptive concurrency slots.
#[pyclass(name = "PriorityScheduler", module = "llmrelay._core", frozen)]
pub struct PyPriorityScheduler {
    pub(crate) inner: Arc<PriorityScheduler>,
}

pub(super) fn count(param: &'static str, value: i64) -> PyResult<usize> {
    usize::try_from(value).map_err(|_| Error::config(param, value, "must be >= 0").into())
}

/// Tickets are u64 starting at 1; a negative int is simply no ticket of ours.
fn ticket(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[pymethods]
impl PyPriorityScheduler {
    #[new]
    #[pyo3(signature = (*, max_concurrency = 64, min_concurrency = 1, initial_concurrency = None,
        max_queue = 10_000, adaptive = true, aging_s = 10.0, decrease_factor = 0.5,
        increase_step = 1.0, clock = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        max_concurrency: i64,
        min_concurrency: i64,
        initial_concurrency: Option<i64>,
        max_queue: i64,
        adaptive: bool,
        aging_s: f64,
        decrease_factor: f64,
        increase_step: f64,
        clock: Option<&Bound<'_, PyManualClock>>,
    ) -> PyResult<Self> {
        let cfg = SchedulerConfig {
            max_concurrency: count("max_concurrency", max_concurrency)?,
            min_concurrency: count("min_concurrency", min_concurrency)?,
            initial_concurrency: initial_concurrency
                .map(|i| count("initial_concurrency", i))
                .transpose()?,
            max_queue: count("max_queue", max_queue)?,
            adaptive,
            aging_s,
            decrease_factor,
            increase_step,
        };
        Ok(Self {
            inner: Arc::new(PriorityScheduler::new(cfg, pick(clock))?),
        })
    }

    /// `(ticket, granted_now)`; raises QueueFullError when the queue is full.
    fn acquire(&self, priority: i64) -> PyResult<(u64, bool)> {
        let p = u8::try_from(priority).map_err(|_| invalid_priority(priority))?;
        Ok(self.inner.acquire(p)?)
    }

    /// Finish a running ticket; returns the tickets granted as a result.
    #[pyo3(signature = (ticket, outcome = "success", latency_s = 0.0))]
    fn release(&self, ticket: i64, outcome: &str, latency_s: f64) -> PyResult<Vec<u64>> {
        let outcome = Outcome::parse(outcome)?;
        if ticket < 0 {
            return Err(Error::InvalidArgument {
                what: "ticket",
                detail: format!("ticket {ticket} is not running (unknown, queued or finished)"),
            }
            .into());
        }
        Ok(self.inner.release(ticket as u64, outcome, latency_s)?)
    }

    /// Give up a queued or running ticket (idempotent); returns newly granted.
    fn cancel(&self, ticket: i64) -> Vec<u64> {
        self.inner.cancel(self::ticket(ticket))
    }

    /// Override the limit (clamped); returns newly granted tickets.
    fn set_limit(&self, limit: f64) -> PyResult<Vec<u64>> {
        Ok(self.inner.set_limit(limit)?)
    }

    /// Seconds `ticket` waited in the queue (0 if unknown or finished).
    fn queue_wait_s(&self, ticket: i64) -> f64 {
        self.inner.queue_wait_s(self::ticket(ticket))
    }

    #[getter]
    fn limit(&self) -> f64 {
        self.inner.limit()
    }

    #[getter]
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    #[getter]
    fn queued(&self) -> usize {
        self.inner.queued()
    }

    #[getter]
    fn max_queue(&self) -> usize {
        self.inner.max_queue()
    }

    /// Counters and gauges as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("limit", s.limit)?;
        d.set_item("slots", s.slots)?;
        d.set_item("in_flight", s.in_flight)?;
        d.set_item("queued", s.queued)?;
        d.set_item("max_queue", s.max_queue)?;
        d.set_item("granted_total", s.granted_total)?;
        d.set_item("queued_total", s.queued_total)?;
        d.set_item("rejected_total", s.rejected_total)?;
        d.set_item("cancelled_total", s.cancelled_total)?;
        d.set_item("released_total", s.released_total)?;
        d.set_item("overloads", s.overloads)?;
        d.set_item("decreases", s.decreases)?;
        d.set_item("increases", s.increases)?;
        d.set_item("max_wait_s", s.max_wait_s)?;
        d.set_item("latency_ewma_s", s.latency_ewma_s)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let s = self.inner.stats();
        format!(
            "PriorityScheduler(limit={:.2}, in_flight={}, queued={}, max_queue={})",
            s.limit, s.in_flight, s.queued, s.max_queue
        )
    }
}

/// Register the class in `llmrelay._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPriorityScheduler>()
}
