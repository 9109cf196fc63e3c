//! `HybridCache` for Python: the memory tier with the GIL held, everything
//! that may touch the disk with it released.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::cache::{disk_clock, stats_dict};
use super::clock::{pick, PyManualClock};
use super::metrics::PyMetrics;
use crate::cache::{self, HybridCache, HybridConfig, HybridOptions};

/// Memory over disk, with promotion and write-through or write-behind.
#[pyclass(name = "HybridCache", module = "llmrelay._core", frozen)]
pub struct PyHybridCache {
    inner: HybridCache,
    has_disk: bool,
}

#[pymethods]
impl PyHybridCache {
    #[new]
    #[pyo3(signature = (*, memory_max_entries = 10_000, memory_max_bytes = None, ttl_s = None,
                        eviction = "tinylfu", disk_path = None, disk_max_bytes = None,
                        promotion = "on_hit", promote_after = 2, write_mode = "write_through",
                        flush_every_ms = Some(500), clock = None),
           text_signature = "(*, memory_max_entries=10000, memory_max_bytes=None, ttl_s=None, \
                             eviction='tinylfu', disk_path=None, disk_max_bytes=None, \
                             promotion='on_hit', promote_after=2, write_mode='write_through', \
                             flush_every_ms=500, clock=None)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        memory_max_entries: i64,
        memory_max_bytes: Option<i64>,
        ttl_s: Option<f64>,
        eviction: &str,
        disk_path: Option<&str>,
        disk_max_bytes: Option<i64>,
        promotion: &str,
        promote_after: i64,
        write_mode: &str,
        flush_every_ms: Option<i64>,
        clock: Option<&Bound<'_, PyManualClock>>,
    ) -> PyResult<Self> {
        let cfg = HybridConfig::new(&HybridOptions {
            memory_max_entries,
            memory_max_bytes,
            ttl_s,
            eviction,
            disk_path,
            disk_max_bytes,
            promotion,
            promote_after,
            write_mode,
            flush_every_ms,
        })?;
        let (memory_clock, disk_clock) = (pick(clock), disk_clock(clock));
        let inner = py.allow_threads(|| HybridCache::new(&cfg, memory_clock, disk_clock))?;
        Ok(Self {
            inner,
            has_disk: cfg.disk.is_some(),
        })
    }

    fn get<'py>(&self, py: Python<'py>, key: &[u8]) -> Option<Bound<'py, PyBytes>> {
        let c = &self.inner;
        let v = match c.get_hot(key) {
            Some(v) => Some(v),
            None if c.disk_active() => py.allow_threads(|| c.get_disk(key)),
            None => c.get_disk(key),
        };
        v.map(|v| PyBytes::new(py, &v))
    }

    fn get_memory<'py>(&self, py: Python<'py>, key: &[u8]) -> Option<Bound<'py, PyBytes>> {
        self.inner.get_memory(key).map(|v| PyBytes::new(py, &v))
    }

    /// The memory tier, counting a hit but not a miss: follow a `None` with
    /// `get_disk`, so a lookup that reaches the disk is counted once.
    fn get_hot<'py>(&self, py: Python<'py>, key: &[u8]) -> Option<Bound<'py, PyBytes>> {
        self.inner.get_hot(key).map(|v| PyBytes::new(py, &v))
    }

    /// The memory tier (`get_hot` when `hot`, else `get_memory`), with a hit also
    /// counted in `metrics` as counter `name` of the series: a memory-cache hit
    /// through the service is then one crossing, not two.
    #[allow(clippy::too_many_arguments)]
    fn get_counted<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        hot: bool,
        metrics: &PyMetrics,
        provider: &str,
        model: &str,
        deployment: &str,
        name: &str,
    ) -> Option<Bound<'py, PyBytes>> {
        let v = if hot {
            self.inner.get_hot(key)
        } else {
            self.inner.get_memory(key)
        }?;
        metrics.inner.incr(provider, model, deployment, name, 1);
        Some(PyBytes::new(py, &v))
    }

    /// The disk half of `get`, for a key that just missed memory (counts the hit
    /// or the miss; promotes a hit). Releases the GIL around the disk read.
    fn get_disk<'py>(&self, py: Python<'py>, key: &[u8]) -> Option<Bound<'py, PyBytes>> {
        let c = &self.inner;
        let v = if c.disk_active() {
            py.allow_threads(|| c.get_disk(key))
        } else {
            c.get_disk(key)
        };
        v.map(|v| PyBytes::new(py, &v))
    }

    #[pyo3(signature = (key, value, ttl_s = None))]
    fn set(&self, py: Python<'_>, key: &[u8], value: &[u8], ttl_s: Option<f64>) -> PyResult<()> {
        let ttl = cache::ttl_ns("ttl_s", ttl_s)?;
        let value: Arc<[u8]> = Arc::from(value);
        let ttl = self.inner.set_memory(key, Arc::clone(&value), ttl);
        if self.has_disk {
            py.allow_threads(|| self.inner.set_disk(key, value, ttl));
        }
        Ok(())
    }

    fn delete(&self, py: Python<'_>, key: &[u8]) -> bool {
        py.allow_threads(|| self.inner.delete(key))
    }

    fn clear(&self, py: Python<'_>) {
        py.allow_threads(|| self.inner.clear());
    }

    fn flush(&self, py: Python<'_>) {
        py.allow_threads(|| self.inner.flush());
    }

    fn close(&self, py: Python<'_>) {
        py.allow_threads(|| self.inner.close());
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.inner.stats())
    }

    #[getter]
    fn disk_enabled(&self) -> bool {
        self.inner.disk_active()
    }

    #[getter]
    fn disk_error(&self) -> Option<String> {
        self.inner.disk().and_then(|d| d.error())
    }

    #[getter]
    fn memory_entries(&self) -> usize {
        self.inner.memory().len() as usize
    }

    fn __len__(&self) -> usize {
        self.inner.memory().len() as usize
    }
}
