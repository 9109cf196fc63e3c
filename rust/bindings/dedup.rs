//! `RequestDeduplicator` for Python: stores the leader's result object and
//! tells each caller whether to lead, follow or take a windowed result.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::clock::{pick, PyManualClock};
use crate::dedup::{Join, RequestDeduplicator, DONE, FOLLOWER, LEADER};
use crate::Error;

/// A stored Python result (shared, so the core can clone it without the GIL).
#[derive(Clone)]
struct Value(Arc<Py<PyAny>>);

/// In-flight join map keyed by string, with an optional result window.
#[pyclass(name = "RequestDeduplicator", module = "llmrelay._core", frozen)]
pub struct PyRequestDeduplicator {
    inner: RequestDeduplicator<Value>,
}

/// Tickets are u64 starting at 1; a negative int is simply no ticket of ours.
fn ticket(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[pymethods]
impl PyRequestDeduplicator {
    #[new]
    #[pyo3(signature = (*, window_s = 0.0, max_entries = 100_000, clock = None))]
    fn new(
        window_s: f64,
        max_entries: i64,
        clock: Option<&Bound<'_, PyManualClock>>,
    ) -> PyResult<Self> {
        let max = usize::try_from(max_entries)
            .map_err(|_| Error::config("max_entries", max_entries, "must be >= 1"))?;
        Ok(Self {
            inner: RequestDeduplicator::new(window_s, max, pick(clock))?,
        })
    }

    /// `(DEDUP_LEADER, ticket, None)`, `(DEDUP_FOLLOWER, ticket, None)` or
    /// `(DEDUP_DONE, 0, value)`.
    fn join(&self, py: Python<'_>, key: &str) -> (u8, u64, PyObject) {
        match self.inner.join(key) {
            Join::Leader(t) => (LEADER, t, py.None()),
            Join::Follower(t) => (FOLLOWER, t, py.None()),
            Join::Done(v) => (DONE, 0, v.0.clone_ref(py)),
        }
    }

    /// The leader finished: returns the follower tickets to wake with `value`.
    fn complete(&self, key: &str, ticket: i64, value: Py<PyAny>) -> PyResult<Vec<u64>> {
        let t = self::ticket(ticket);
        Ok(self.inner.complete(key, t, Value(Arc::new(value)))?)
    }

    /// The leader failed: `(promoted_leader, [])` if transient, else
    /// `(None, followers_to_fail)`.
    fn fail(&self, key: &str, ticket: i64, transient: bool) -> PyResult<(Option<u64>, Vec<u64>)> {
        Ok(self.inner.fail(key, self::ticket(ticket), transient)?)
    }

    /// A follower gave up (idempotent).
    fn leave(&self, key: &str, ticket: i64) -> PyResult<()> {
        Ok(self.inner.leave(key, self::ticket(ticket))?)
    }

    /// Keys with a running leader.
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    /// Followers waiting, over all keys.
    fn waiting(&self) -> usize {
        self.inner.waiting()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Drop expired window entries; returns how many.
    fn sweep(&self) -> usize {
        self.inner.sweep()
    }

    /// Counters as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("joins_leader", s.joins_leader)?;
        d.set_item("joins_follower", s.joins_follower)?;
        d.set_item("hits_window", s.hits_window)?;
        d.set_item("promotions", s.promotions)?;
        d.set_item("failures", s.failures)?;
        d.set_item("completions", s.completions)?;
        d.set_item("leaves", s.leaves)?;
        d.set_item("untracked", s.untracked)?;
        d.set_item("evictions", s.evictions)?;
        d.set_item("expirations", s.expirations)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "RequestDeduplicator(in_flight={}, waiting={}, len={})",
            self.inner.in_flight(),
            self.inner.waiting(),
            self.inner.len()
        )
    }
}

/// Register the class and the `DEDUP_*` constants in `llmrelay._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DEDUP_LEADER", LEADER)?;
    m.add("DEDUP_FOLLOWER", FOLLOWER)?;
    m.add("DEDUP_DONE", DONE)?;
    m.add_class::<PyRequestDeduplicator>()
}
