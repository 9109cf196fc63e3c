//! `RequestDeduplicator` for Python: stores the leader's result object and
//! tells each caller whether to lead, follow or take a windowed result.
//!
//! A follower that joins with its asyncio future and its loop's `Completions`
//! leaves both in the core ([`crate::dedup`] holds the followers' queue):
//! the leader's `complete` sets the future's result to `(DEDUP_DONE, value)`,
//! a permanent `fail` sets the leader's error on it, a promotion sets
//! `(DEDUP_LEADER, None)`, each through the future's own loop's queue (as the
//! gate wakes its parked callers). Python keeps no ticket->future map.

use std::sync::Arc;

use pyo3::exceptions::PyBaseException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::clock::{pick, PyManualClock};
use super::http::{Outcome, PyCompletions, Queue};
use crate::dedup::{Join, RequestDeduplicator, Resolved, DONE, FOLLOWER, LEADER};
use crate::Error;

/// A stored Python object (shared, so the core can clone it without the GIL).
#[derive(Clone)]
struct Value(Arc<Py<PyAny>>);

/// A follower's future, parked until its loop's queue settles it.
struct Parked {
    future: Py<PyAny>,
    queue: Arc<Queue>,
}

impl Parked {
    /// Settle the future with what `build` makes, on the future's own loop.
    fn settle(self, build: impl FnOnce(Python<'_>) -> PyResult<PyObject> + Send + 'static) {
        self.queue
            .push(self.future, Outcome::Value(Box::new(build)));
    }

    /// Whether the future is done already (its caller was cancelled).
    fn gone(&self, py: Python<'_>) -> PyResult<bool> {
        self.future
            .bind(py)
            .call_method0(intern!(py, "done"))?
            .is_truthy()
    }
}

/// `(code, value)`, the result of a woken follower's future.
fn outcome(py: Python<'_>, code: u8, value: PyObject) -> PyResult<PyObject> {
    Ok((code, value).into_pyobject(py)?.into_any().unbind())
}

/// In-flight join map keyed by string, with an optional result window.
#[pyclass(name = "RequestDeduplicator", module = "llmrelay._core", frozen)]
pub struct PyRequestDeduplicator {
    inner: RequestDeduplicator<Value, Parked>,
}

/// Tickets are u64 starting at 1; a negative int is simply no ticket of ours.
fn ticket(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl PyRequestDeduplicator {
    /// Wake the followers of a `complete` with `(DEDUP_DONE, value)`.
    fn wake_done(resolved: Resolved<Parked>, value: &Value) -> Vec<u64> {
        let tickets = resolved.tickets();
        for (_, parked) in resolved.followers {
            if let Some(p) = parked {
                let v = value.clone();
                p.settle(move |py| outcome(py, DONE, v.0.clone_ref(py)));
            }
        }
        tickets
    }

    /// Wake the followers of a permanent `fail` with `error`.
    fn wake_failed(
        py: Python<'_>,
        resolved: Resolved<Parked>,
        error: Option<PyObject>,
    ) -> PyResult<Vec<u64>> {
        let tickets = resolved.tickets();
        if resolved.followers.iter().all(|(_, p)| p.is_none()) {
            return Ok(tickets);
        }
        let error = match error {
            Some(e) => e,
            None => abandoned(py)?,
        };
        let error = Arc::new(error);
        for (_, parked) in resolved.followers {
            if let Some(p) = parked {
                let e = error.clone();
                p.settle(move |py| Ok(e.clone_ref(py)));
            }
        }
        Ok(tickets)
    }

    /// Wake the promoted follower with `(DEDUP_LEADER, None)`; one whose
    /// future is done already (cancelled) hands the lead on at once. Returns
    /// the ticket that leads now, if any.
    fn wake_promoted(
        &self,
        py: Python<'_>,
        key: &str,
        mut resolved: Resolved<Parked>,
    ) -> PyResult<Option<u64>> {
        loop {
            match resolved.promoted.take() {
                Some((t, Some(p))) if p.gone(py)? => {
                    drop(p);
                    resolved = self.inner.cancel(key, t);
                }
                Some((t, Some(p))) => {
                    p.settle(|py| outcome(py, LEADER, py.None()));
                    return Ok(Some(t));
                }
                Some((t, None)) => return Ok(Some(t)),
                None => return Ok(None),
            }
        }
    }
}

/// The error of followers whose leader failed for good without saying why.
fn abandoned(py: Python<'_>) -> PyResult<PyObject> {
    let class = py.import("llmrelay.errors")?.getattr("LLMRelayError")?;
    Ok(class
        .call1(("request abandoned: the deduplicated call it joined failed",))?
        .unbind())
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
    /// `(DEDUP_DONE, 0, value)`. With `future` and its loop's `completions`,
    /// a follower's future is parked here until the leader's outcome settles it.
    #[pyo3(signature = (key, future = None, completions = None))]
    fn join(
        &self,
        py: Python<'_>,
        key: &str,
        future: Option<Py<PyAny>>,
        completions: Option<&Bound<'_, PyCompletions>>,
    ) -> PyResult<(u8, u64, PyObject)> {
        let joined = match (future, completions) {
            (Some(future), Some(c)) => self.inner.join_waiting(
                key,
                Parked {
                    future,
                    queue: c.get().queue(),
                },
            ),
            (None, _) => self.inner.join(key),
            (Some(_), None) => {
                return Err(Error::InvalidArgument {
                    what: "completions",
                    detail: "a future to park needs its loop's Completions".into(),
                }
                .into())
            }
        };
        Ok(match joined {
            Join::Leader(t) => (LEADER, t, py.None()),
            Join::Follower(t) => (FOLLOWER, t, py.None()),
            Join::Done(v) => (DONE, 0, v.0.clone_ref(py)),
        })
    }

    /// The leader finished: wakes the parked followers with
    /// `(DEDUP_DONE, value)`; returns every follower's ticket.
    fn complete(&self, key: &str, ticket: i64, value: Py<PyAny>) -> PyResult<Vec<u64>> {
        let value = Value(Arc::new(value));
        let resolved = self
            .inner
            .complete(key, self::ticket(ticket), value.clone())?;
        Ok(Self::wake_done(resolved, &value))
    }

    /// The leader failed. Transient: the oldest live follower is promoted
    /// (woken with `(DEDUP_LEADER, None)`): `(promoted, [])`. Otherwise every
    /// follower fails with `error` (default: an `LLMRelayError`):
    /// `(None, followers)`.
    #[pyo3(signature = (key, ticket, transient, error = None))]
    fn fail(
        &self,
        py: Python<'_>,
        key: &str,
        ticket: i64,
        transient: bool,
        error: Option<Bound<'_, PyBaseException>>,
    ) -> PyResult<(Option<u64>, Vec<u64>)> {
        let resolved = self.inner.fail(key, self::ticket(ticket), transient)?;
        if transient {
            return Ok((self.wake_promoted(py, key, resolved)?, Vec::new()));
        }
        let error = error.map(|e| e.into_any().unbind());
        Ok((None, Self::wake_failed(py, resolved, error)?))
    }

    /// `ticket` gives up, leader or follower (idempotent): a follower's
    /// parked future is dropped; a leader (or a follower promoted since)
    /// hands the lead to the oldest live follower, returned.
    fn cancel(&self, py: Python<'_>, key: &str, ticket: i64) -> PyResult<Option<u64>> {
        let resolved = self.inner.cancel(key, self::ticket(ticket));
        self.wake_promoted(py, key, resolved)
    }

    /// A follower gave up (idempotent); the leader calls `fail` or `cancel`.
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

    /// Followers whose futures are parked here.
    fn parked(&self) -> usize {
        self.inner.parked()
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
        d.set_item("cancels", s.cancels)?;
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
