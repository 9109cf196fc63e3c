//! `Metrics` for Python: counters, gauges and latency histograms per
//! (provider, model, deployment), with a plain-data snapshot.

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyDict, PyList};

use crate::error::Error;
use crate::metrics::{LatencySummary, Metrics, SeriesSnapshot};

/// Counters, gauges and latency histograms keyed by series; thread-safe.
#[pyclass(name = "Metrics", module = "llmrelay._core", frozen)]
pub struct PyMetrics {
    pub(super) inner: Metrics,
}

fn count(what: &'static str, name: &str, n: i64) -> Result<u64, Error> {
    u64::try_from(n).map_err(|_| Error::InvalidArgument {
        what,
        detail: format!("count of {name:?} must be an int >= 0, got {n}"),
    })
}

fn summary_dict<'py>(py: Python<'py>, s: &LatencySummary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("count", s.count)?;
    for (k, v) in [
        ("sum_s", s.sum_s),
        ("min_s", s.min_s),
        ("max_s", s.max_s),
        ("mean_s", s.mean_s),
        ("p50_s", s.p50_s),
        ("p90_s", s.p90_s),
        ("p95_s", s.p95_s),
        ("p99_s", s.p99_s),
    ] {
        d.set_item(k, v)?;
    }
    Ok(d)
}

fn series_dict<'py>(py: Python<'py>, s: &SeriesSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("provider", &s.provider)?;
    d.set_item("model", &s.model)?;
    d.set_item("deployment", &s.deployment)?;
    let counters = PyDict::new(py);
    for (k, v) in &s.counters {
        counters.set_item(k, v)?;
    }
    d.set_item("counters", counters)?;
    let gauges = PyDict::new(py);
    for (k, v) in &s.gauges {
        gauges.set_item(k, v)?;
    }
    d.set_item("gauges", gauges)?;
    let histograms = PyDict::new(py);
    for (k, v) in &s.histograms {
        histograms.set_item(k, summary_dict(py, v)?)?;
    }
    d.set_item("histograms", histograms)?;
    Ok(d)
}

#[pymethods]
impl PyMetrics {
    #[new]
    fn new() -> Self {
        Self {
            inner: Metrics::new(),
        }
    }

    /// Add `n` (>= 0) to counter `name` of the series.
    #[pyo3(signature = (provider, model, deployment, name, n = 1))]
    fn incr(
        &self,
        provider: &str,
        model: &str,
        deployment: &str,
        name: &str,
        n: i64,
    ) -> PyResult<()> {
        let n = count("n", name, n)?;
        self.inner.incr(provider, model, deployment, name, n);
        Ok(())
    }

    /// Set gauge `name` of the series to `value` (finite).
    fn set_gauge(
        &self,
        provider: &str,
        model: &str,
        deployment: &str,
        name: &str,
        value: f64,
    ) -> PyResult<()> {
        Ok(self
            .inner
            .set_gauge(provider, model, deployment, name, value)?)
    }

    /// Record `seconds` (finite, >= 0) in histogram `name` of the series.
    fn observe(
        &self,
        provider: &str,
        model: &str,
        deployment: &str,
        name: &str,
        seconds: f64,
    ) -> PyResult<()> {
        Ok(self
            .inner
            .observe(provider, model, deployment, name, seconds)?)
    }

    /// Counter increments and observations for one series in one call; on a
    /// bad value nothing is recorded.
    fn record(
        &self,
        provider: &str,
        model: &str,
        deployment: &str,
        counters: Vec<(PyBackedStr, i64)>,
        observations: Vec<(PyBackedStr, f64)>,
    ) -> PyResult<()> {
        let counters = counters
            .into_iter()
            .map(|(name, n)| {
                let n = count("counters", &name, n)?;
                Ok((name, n))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(self
            .inner
            .record(provider, model, deployment, &counters, &observations)?)
    }

    /// The value of counter `name` (0 if it does not exist).
    fn counter(&self, provider: &str, model: &str, deployment: &str, name: &str) -> u64 {
        self.inner.counter(provider, model, deployment, name)
    }

    /// One dict of plain data per series, sorted by (provider, model, deployment).
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let all = py.allow_threads(|| self.inner.snapshot());
        let out = PyList::empty(py);
        for s in &all {
            out.append(series_dict(py, s)?)?;
        }
        Ok(out)
    }

    /// Cumulative counts of histogram `name` at or below each bound (seconds,
    /// strictly increasing, >= 0; `inf` allowed), for Prometheus export.
    fn histogram_buckets(
        &self,
        provider: &str,
        model: &str,
        deployment: &str,
        name: &str,
        bounds_s: Vec<f64>,
    ) -> PyResult<Vec<u64>> {
        Ok(self
            .inner
            .histogram_buckets(provider, model, deployment, name, &bounds_s)?)
    }

    /// Drop every series (all counters, gauges and histograms start again from zero).
    fn reset(&self) {
        self.inner.reset();
    }

    /// Number of series recorded since creation or the last reset.
    fn series_count(&self) -> usize {
        self.inner.series_count()
    }

    fn __repr__(&self) -> String {
        format!("Metrics(series={})", self.inner.series_count())
    }
}
