//! `SharedLimiter` for Python: the Redis-backed limiter of
//! [`crate::shared`]. Every call that talks to Redis returns at once; its
//! result settles an asyncio future through a `Completions` queue (as the
//! HTTP client's do), so the event loop never waits on Redis.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3::IntoPyObjectExt;

use super::error::to_pyerr;
use super::http::{Outcome, PyCompletions};
use crate::runtime;
use crate::shared::breaker::SharedBreakers;
use crate::shared::cache::SharedCache;
use crate::shared::dedup::{Joined, Lease, SharedDedup};
use crate::shared::{OnUnavailable, SharedLimiter};

/// Keyed GCRA limiter whose cells live in Redis, shared by every process.
#[pyclass(name = "SharedLimiter", module = "llmrelay._core", frozen)]
pub struct PySharedLimiter {
    pub(super) inner: Arc<SharedLimiter>,
    url_shown: String,
}

type Build<T> = fn(Python<'_>, T) -> PyResult<PyObject>;

/// Run `job` on the runtime; its result (or error) settles `future`.
fn spawn<T, F>(
    completions: &PyCompletions,
    future: Py<PyAny>,
    job: F,
    build: Build<T>,
) -> PyResult<()>
where
    T: Send + 'static,
    F: Future<Output = crate::Result<T>> + Send + 'static,
{
    let rt = runtime::handle()?;
    let queue = completions.queue();
    rt.spawn(async move {
        let result = job.await;
        let outcome = Outcome::Value(Box::new(move |py: Python<'_>| match result {
            Ok(v) => build(py, v),
            Err(e) => Ok(to_pyerr(py, &e).into_value(py).into_any()),
        }));
        queue.push(future, outcome);
    });
    Ok(())
}

fn to_obj<'py, T>(py: Python<'py>, v: T) -> PyResult<PyObject>
where
    T: IntoPyObject<'py>,
{
    Ok(v.into_bound_py_any(py)?.unbind())
}

fn float_obj(py: Python<'_>, v: f64) -> PyResult<PyObject> {
    to_obj(py, v)
}

fn count_obj(py: Python<'_>, v: Option<u64>) -> PyResult<PyObject> {
    to_obj(py, v)
}

#[pymethods]
impl PySharedLimiter {
    #[new]
    #[pyo3(signature = (url, *, namespace = "llmrelay", on_unavailable = "local_share", op_timeout_s = 0.025, lease_ttl_s = None))]
    fn new(
        url: &str,
        namespace: &str,
        on_unavailable: &str,
        op_timeout_s: f64,
        lease_ttl_s: Option<f64>,
    ) -> PyResult<Self> {
        let policy = OnUnavailable::parse(on_unavailable)?;
        let mut inner = SharedLimiter::new(url, namespace, policy, op_timeout_s)?;
        if let Some(ttl) = lease_ttl_s {
            inner = inner.with_leases(ttl)?;
        }
        let url_shown = crate::shared::client::redact(url);
        Ok(Self {
            inner: Arc::new(inner),
            url_shown,
        })
    }

    /// (Re)configure `key` cluster-wide: `rate_per_s` > 0, `burst` >= 1.
    fn configure(&self, key: &str, rate_per_s: f64, burst: f64) -> PyResult<()> {
        Ok(self.inner.configure(key, rate_per_s, burst)?)
    }

    /// Book every `(key, cost)` if all allow it within `max_wait_s`, else
    /// nothing; `future` gets `(admitted, wait_s, source)`.
    #[pyo3(signature = (completions, future, items, max_wait_s = 0.0, reservation = None))]
    fn reserve_many(
        &self,
        completions: &PyCompletions,
        future: Py<PyAny>,
        items: Vec<(String, f64)>,
        max_wait_s: f64,
        reservation: Option<String>,
    ) -> PyResult<()> {
        let lim = self.inner.clone();
        let job = async move {
            lim.reserve_many(&items, max_wait_s, reservation.as_deref())
                .await
        };
        spawn(completions, future, job, |py, a| {
            to_obj(py, (a.admitted, a.wait_s, a.source.as_str()))
        })
    }

    /// Give back every `(key, cost)`; `future` gets the source.
    fn refund(
        &self,
        completions: &PyCompletions,
        future: Py<PyAny>,
        items: Vec<(String, f64)>,
    ) -> PyResult<()> {
        let lim = self.inner.clone();
        let job = async move { lim.refund(&items).await };
        spawn(completions, future, job, |py, s| to_obj(py, s.as_str()))
    }

    /// Settle `reservation` with the real `(key, cost)`s, once; `future`
    /// gets `(applied, source)`.
    fn reconcile(
        &self,
        completions: &PyCompletions,
        future: Py<PyAny>,
        reservation: String,
        items: Vec<(String, f64)>,
    ) -> PyResult<()> {
        let lim = self.inner.clone();
        let job = async move { lim.reconcile(&reservation, &items).await };
        spawn(completions, future, job, |py, (applied, s)| {
            to_obj(py, (applied, s.as_str()))
        })
    }

    /// Tighten `key` to admit at most `remaining` before the reset; `future`
    /// gets the source.
    #[allow(clippy::too_many_arguments)]
    fn observe_headers(
        &self,
        completions: &PyCompletions,
        future: Py<PyAny>,
        key: String,
        remaining: f64,
        limit: Option<f64>,
        reset_s: f64,
    ) -> PyResult<()> {
        let lim = self.inner.clone();
        let job = async move { lim.observe_headers(&key, remaining, limit, reset_s).await };
        spawn(completions, future, job, |py, s| to_obj(py, s.as_str()))
    }

    /// Pause `key`'s (deployment, model) everywhere for `retry_after_s` (the
    /// later deadline wins); `future` gets the seconds left.
    fn pause(
        &self,
        completions: &PyCompletions,
        future: Py<PyAny>,
        key: String,
        retry_after_s: f64,
    ) -> PyResult<()> {
        let lim = self.inner.clone();
        let job = async move { lim.pause(&key, retry_after_s).await };
        spawn(completions, future, job, float_obj)
    }

    /// `future` gets `(capacity available now, source)`.
    fn available(
        &self,
        completions: &PyCompletions,
        future: Py<PyAny>,
        key: String,
    ) -> PyResult<()> {
        let lim = self.inner.clone();
        let job = async move { lim.available(&key).await };
        spawn(completions, future, job, |py, (c, s)| {
            to_obj(py, (c, s.as_str()))
        })
    }

    /// Renew this process's heartbeat; `future` gets the live process count
    /// (`None` when Redis did not answer).
    fn heartbeat(&self, completions: &PyCompletions, future: Py<PyAny>) -> PyResult<()> {
        let lim = self.inner.clone();
        let job = async move { Ok(lim.heartbeat().await) };
        spawn(completions, future, job, count_obj)
    }

    /// Start opening the connection and record this process's heartbeat, in
    /// the background (returns at once; start-up never waits for Redis).
    fn warm(&self) -> PyResult<()> {
        let lim = self.inner.clone();
        runtime::handle()?.spawn(async move {
            let _ = lim.heartbeat().await;
        });
        Ok(())
    }

    /// This process's member name in Redis (`pid:nonce`).
    #[getter]
    fn member(&self) -> String {
        self.inner.member()
    }

    /// The policy when Redis is unavailable.
    #[getter]
    fn on_unavailable(&self) -> &'static str {
        match self.inner.on_unavailable() {
            OnUnavailable::LocalShare => "local_share",
            OnUnavailable::Closed => "closed",
            OnUnavailable::Open => "open",
        }
    }

    /// The health of the shared state, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("connected", s.connected)?;
        d.set_item("degraded", s.degraded)?;
        d.set_item("ok", s.ok)?;
        d.set_item("timeouts", s.timeouts)?;
        d.set_item("unavailable", s.unavailable)?;
        d.set_item("script_errors", s.script_errors)?;
        d.set_item("script_loads", s.script_loads)?;
        d.set_item("connects", s.connects)?;
        d.set_item("fallback_calls", s.fallback_calls)?;
        d.set_item("degraded_episodes", s.degraded_episodes)?;
        d.set_item("live_processes", s.live_processes)?;
        d.set_item("slowest_call_s", s.slowest_call_s)?;
        d.set_item("local_share", self.inner.local_share())?;
        d.set_item("reservations", s.reservations)?;
        d.set_item("refusals", s.refusals)?;
        d.set_item("refunds", s.refunds)?;
        d.set_item("reconciles", s.reconciles)?;
        d.set_item("reconcile_noops", s.reconcile_noops)?;
        d.set_item("pauses", s.pauses)?;
        d.set_item("tightens", s.tightens)?;
        d.set_item("chargebacks", s.chargebacks)?;
        d.set_item("units_charged_back", s.units_charged_back)?;
        d.set_item("chargeback_failures", s.chargeback_failures)?;
        d.set_item("units_owed", s.units_owed)?;
        d.set_item("member", self.inner.member())?;
        if let Some(l) = self.inner.lease_stats() {
            d.set_item("lease_ttl_s", l.lease_ttl_s)?;
            d.set_item("leases_taken", l.book.leases_taken)?;
            d.set_item("units_leased", l.book.units_leased)?;
            d.set_item("leases_returned", l.book.leases_returned)?;
            d.set_item("units_returned", l.book.units_returned)?;
            d.set_item("local_admissions", l.book.local_admissions)?;
            d.set_item("local_misses", l.book.local_misses)?;
            d.set_item("local_credits", l.book.local_credits)?;
            d.set_item("lease_calls", l.lease_calls)?;
            d.set_item("refills", l.refills)?;
        }
        Ok(d)
    }

    /// Whether the limiter admits from leased slices (leased mode).
    #[getter]
    fn leased(&self) -> bool {
        self.inner.is_leased()
    }

    /// Units of `key` this process holds in live leased slices.
    fn leased_units(&self, key: &str) -> f64 {
        self.inner.leased_units(key)
    }

    /// Leased mode: take every `(key, cost)` from this process's slices if
    /// they cover all of them (no Redis round trip), else nothing.
    fn take_leased(&self, items: Vec<(String, f64)>) -> PyResult<bool> {
        Ok(self.inner.take_leased(&items)?)
    }

    /// Return every leased slice to Redis; `future` gets the units returned.
    fn release_leases(&self, completions: &PyCompletions, future: Py<PyAny>) -> PyResult<()> {
        let lim = self.inner.clone();
        let job = async move { Ok(lim.release_leases().await) };
        spawn(completions, future, job, float_obj)
    }

    /// [`Self::release_leases`] for plain code: blocks (GIL released) until
    /// Redis took them back or each give-back's op timeout passed.
    fn release_leases_blocking(&self, py: Python<'_>) -> PyResult<f64> {
        let lim = self.inner.clone();
        let rt = runtime::handle()?;
        Ok(py.allow_threads(move || rt.block_on(async move { lim.release_leases().await })))
    }

    fn __repr__(&self) -> String {
        format!(
            "SharedLimiter(url={:?}, on_unavailable={:?})",
            self.url_shown,
            self.on_unavailable()
        )
    }
}

/// The shared cache tier on Redis: sealed (versioned, checksummed, zstd)
/// entries with a jittered TTL; every failure is a miss.
#[pyclass(name = "SharedCache", module = "llmrelay._core", frozen)]
pub struct PySharedCache {
    inner: Arc<SharedCache>,
}

fn lookup_obj(py: Python<'_>, v: Option<(Vec<u8>, Option<f64>)>) -> PyResult<PyObject> {
    match v {
        Some((payload, ttl)) => to_obj(py, (PyBytes::new(py, &payload), ttl)),
        None => Ok(py.None()),
    }
}

fn usize_obj(py: Python<'_>, v: usize) -> PyResult<PyObject> {
    to_obj(py, v)
}

#[pymethods]
impl PySharedCache {
    #[new]
    #[pyo3(signature = (url, *, namespace = "llmrelay", op_timeout_s = 0.025, default_ttl_s = 86_400.0))]
    fn new(url: &str, namespace: &str, op_timeout_s: f64, default_ttl_s: f64) -> PyResult<Self> {
        let inner = SharedCache::new(url, namespace, op_timeout_s, default_ttl_s)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Look `key` up; `future` gets `(value, ttl_s or None)` or `None` (a miss).
    fn get(&self, completions: &PyCompletions, future: Py<PyAny>, key: &[u8]) -> PyResult<()> {
        let cache = self.inner.clone();
        let key = key.to_vec();
        let job = async move { Ok(cache.get(&key).await) };
        spawn(completions, future, job, lookup_obj)
    }

    /// Queue a write of `value` under `key` and return at once; False when
    /// dropped (too many writes in flight).
    #[pyo3(signature = (key, value, ttl_s = None))]
    fn set(&self, key: &[u8], value: &[u8], ttl_s: Option<f64>) -> PyResult<bool> {
        Ok(self.inner.set(key.to_vec(), value.to_vec(), ttl_s)?)
    }

    /// Wait (at most `timeout_s`) for queued writes; `future` gets the writes left.
    fn drain(
        &self,
        completions: &PyCompletions,
        future: Py<PyAny>,
        timeout_s: f64,
    ) -> PyResult<()> {
        let cache = self.inner.clone();
        let timeout = Duration::from_secs_f64(timeout_s.clamp(0.0, 3600.0));
        let job = async move { Ok(cache.drain(timeout).await) };
        spawn(completions, future, job, usize_obj)
    }

    /// The Redis key of cache key `key` (for tools and tests).
    fn redis_key(&self, key: &[u8]) -> String {
        self.inner.redis_key(key)
    }

    /// Counts: hits, misses, corrupt, foreign, errors, writes, write_errors,
    /// writes_dropped, pending_writes.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("hits", s.hits)?;
        d.set_item("misses", s.misses)?;
        d.set_item("corrupt", s.corrupt)?;
        d.set_item("foreign", s.foreign)?;
        d.set_item("errors", s.errors)?;
        d.set_item("writes", s.writes)?;
        d.set_item("write_errors", s.write_errors)?;
        d.set_item("writes_dropped", s.writes_dropped)?;
        d.set_item("pending_writes", s.pending_writes)?;
        d.set_item("connected", u64::from(self.inner.connected()))?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.inner)
    }
}

/// Cross-process dedup on Redis: a renewable lease per request, the leader's
/// result stored and published, waiters woken by one subscription per process.
#[pyclass(name = "SharedDedup", module = "llmrelay._core", frozen)]
pub struct PySharedDedup {
    inner: Arc<SharedDedup>,
}

/// A process's leadership of one request (see `SharedDedup.join`).
#[pyclass(name = "SharedLease", module = "llmrelay._core", frozen)]
pub struct PySharedLease {
    inner: Lease,
}

fn joined_obj(py: Python<'_>, j: Joined) -> PyResult<PyObject> {
    match j {
        Joined::Lead(lease) => {
            let lease = Py::new(py, PySharedLease { inner: lease })?;
            to_obj(py, ("lead", lease))
        }
        Joined::Done(payload) => to_obj(py, ("done", PyBytes::new(py, &payload))),
        Joined::Timeout => to_obj(py, ("timeout", py.None())),
        Joined::Unavailable => to_obj(py, ("unavailable", py.None())),
    }
}

#[pymethods]
impl PySharedDedup {
    #[new]
    #[pyo3(signature = (url, *, namespace = "llmrelay", op_timeout_s = 0.025, lease_s = 3.0))]
    fn new(url: &str, namespace: &str, op_timeout_s: f64, lease_s: f64) -> PyResult<Self> {
        let inner = SharedDedup::new(url, namespace, op_timeout_s, lease_s)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Lead, take another process's result, or wait for it (at most
    /// `max_wait_s`); `future` gets `("lead", SharedLease)`, `("done", bytes)`,
    /// `("timeout", None)` or `("unavailable", None)`.
    fn join(
        &self,
        completions: &PyCompletions,
        future: Py<PyAny>,
        key: &[u8],
        max_wait_s: f64,
    ) -> PyResult<()> {
        let dedup = self.inner.clone();
        let key = key.to_vec();
        let wait = Duration::from_secs_f64(max_wait_s.clamp(0.0, 86_400.0));
        let job = async move { Ok(dedup.join(&key, wait).await) };
        spawn(completions, future, job, joined_obj)
    }

    /// The lease's time to live, in seconds.
    #[getter]
    fn lease_s(&self) -> f64 {
        self.inner.lease_ms() as f64 / 1000.0
    }

    /// Counts: leads, takeovers, joins, waits, timeouts, unavailable,
    /// bad_results, leases_lost, notices_sent, notices_received, listening.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("leads", s.leads)?;
        d.set_item("takeovers", s.takeovers)?;
        d.set_item("joins", s.joins)?;
        d.set_item("waits", s.waits)?;
        d.set_item("timeouts", s.timeouts)?;
        d.set_item("unavailable", s.unavailable)?;
        d.set_item("bad_results", s.bad_results)?;
        d.set_item("leases_lost", s.leases_lost)?;
        d.set_item("notices_sent", s.notices_sent)?;
        d.set_item("notices_received", s.notices_received)?;
        d.set_item("listening", u64::from(s.listening))?;
        d.set_item("waiting", self.inner.waiting() as u64)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.inner)
    }
}

#[pymethods]
impl PySharedLease {
    /// Publish the result `value` of cache key `key` to waiting processes and
    /// drop the lease (queued; returns at once). False if already settled.
    fn complete(&self, key: &[u8], value: &[u8]) -> bool {
        self.inner.complete(key, value)
    }

    /// Drop the lease so a waiting process takes over (queued; returns at
    /// once). False if already settled.
    fn abandon(&self) -> bool {
        self.inner.abandon()
    }

    /// Whether complete or abandon ran.
    #[getter]
    fn settled(&self) -> bool {
        self.inner.settled()
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.inner)
    }
}

/// Shared circuit breakers on Redis: one connection and one subscription per
/// service; each deployment's gate gets its breaker with `Gate.share_breaker`.
#[pyclass(name = "SharedBreakers", module = "llmrelay._core", frozen)]
pub struct PySharedBreakers {
    pub(super) inner: Arc<SharedBreakers>,
}

#[pymethods]
impl PySharedBreakers {
    #[new]
    #[pyo3(signature = (url, *, namespace = "llmrelay", op_timeout_s = 0.025))]
    fn new(url: &str, namespace: &str, op_timeout_s: f64) -> PyResult<Self> {
        let inner = SharedBreakers::new(url, namespace, op_timeout_s)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Start the subscription in the background (returns at once).
    fn warm(&self) {
        self.inner.warm();
    }

    /// This process's member name in the windows (`pid:nonce`).
    #[getter]
    fn member(&self) -> String {
        self.inner.member()
    }

    /// `{"listening": 0/1, "connected": 0/1, "notices_received": n}`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("listening", u64::from(self.inner.listening()))?;
        d.set_item("connected", u64::from(self.inner.connected()))?;
        d.set_item("notices_received", self.inner.notices())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.inner)
    }
}
