//! `MemoryCache`, `DiskCache` and `cache_key` for Python. Disk calls run
//! with the GIL released; memory calls hold it (they take well under a
//! microsecond).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::clock::{pick, PyManualClock};
use crate::cache::disk::{DiskConfig, WallClock};
use crate::cache::memory::MemoryStats;
use crate::cache::{self, DiskCache, MemoryCache, MemoryConfig};
use crate::clock::SharedClock;

/// The disk tier's clock: the manual clock if one is given, else wall time.
pub(crate) fn disk_clock(clock: Option<&Bound<'_, PyManualClock>>) -> SharedClock {
    match clock {
        Some(_) => pick(clock),
        None => Arc::new(WallClock),
    }
}

pub(crate) fn stats_dict<'py>(
    py: Python<'py>,
    items: &[(&str, u64)],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, value) in items {
        d.set_item(*name, *value)?;
    }
    Ok(d)
}

pub(crate) fn memory_items(m: &MemoryStats) -> [(&'static str, u64); 7] {
    [
        ("hits", m.hits),
        ("misses", m.misses),
        ("inserts", m.inserts),
        ("evictions", m.evictions),
        ("expired", m.expired),
        ("entries", m.entries),
        ("bytes", m.bytes),
    ]
}

/// The memory tier on its own.
#[pyclass(name = "MemoryCache", module = "llmrelay._core", frozen)]
pub struct PyMemoryCache {
    inner: MemoryCache,
}

#[pymethods]
impl PyMemoryCache {
    #[new]
    #[pyo3(signature = (*, memory_max_entries = 10_000, memory_max_bytes = None, ttl_s = None,
                        eviction = "tinylfu", clock = None))]
    fn new(
        memory_max_entries: i64,
        memory_max_bytes: Option<i64>,
        ttl_s: Option<f64>,
        eviction: &str,
        clock: Option<&Bound<'_, PyManualClock>>,
    ) -> PyResult<Self> {
        let cfg = MemoryConfig::new(memory_max_entries, memory_max_bytes, ttl_s, eviction)?;
        Ok(Self {
            inner: MemoryCache::new(&cfg, pick(clock)),
        })
    }

    fn get<'py>(&self, py: Python<'py>, key: &[u8]) -> Option<Bound<'py, PyBytes>> {
        self.inner.get(key).map(|v| PyBytes::new(py, &v))
    }

    #[pyo3(signature = (key, value, ttl_s = None))]
    fn set(&self, key: &[u8], value: &[u8], ttl_s: Option<f64>) -> PyResult<()> {
        let ttl = cache::ttl_ns("ttl_s", ttl_s)?;
        self.inner.set(key, Arc::from(value), ttl);
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> bool {
        self.inner.delete(key)
    }

    fn clear(&self) {
        self.inner.clear();
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &memory_items(&self.inner.stats()))
    }

    fn __len__(&self) -> usize {
        self.inner.len() as usize
    }
}

/// The sled disk tier on its own.
#[pyclass(name = "DiskCache", module = "llmrelay._core", frozen)]
pub struct PyDiskCache {
    inner: DiskCache,
}

#[pymethods]
impl PyDiskCache {
    #[new]
    #[pyo3(signature = (path, *, max_bytes = None, flush_every_ms = Some(500), clock = None),
           text_signature = "(path, *, max_bytes=None, flush_every_ms=500, clock=None)")]
    fn new(
        py: Python<'_>,
        path: &str,
        max_bytes: Option<i64>,
        flush_every_ms: Option<i64>,
        clock: Option<&Bound<'_, PyManualClock>>,
    ) -> PyResult<Self> {
        let cfg = DiskConfig::new("path", path, "max_bytes", max_bytes, flush_every_ms)?;
        let clock = disk_clock(clock);
        let inner = py.allow_threads(|| DiskCache::open(&cfg, clock))?;
        Ok(Self { inner })
    }

    fn get<'py>(&self, py: Python<'py>, key: &[u8]) -> Option<Bound<'py, PyBytes>> {
        let hit = py.allow_threads(|| self.inner.get(key));
        hit.map(|h| PyBytes::new(py, h.payload()))
    }

    #[pyo3(signature = (key, value, ttl_s = None))]
    fn set(&self, py: Python<'_>, key: &[u8], value: &[u8], ttl_s: Option<f64>) -> PyResult<()> {
        let ttl = cache::ttl_ns("ttl_s", ttl_s)?;
        py.allow_threads(|| {
            let expires = cache::expiry(self.inner.now_ns(), ttl);
            self.inner.set(key, value, expires);
        });
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
        let s = self.inner.stats();
        stats_dict(
            py,
            &[
                ("hits", s.hits),
                ("misses", s.misses),
                ("expired", s.expired),
                ("corrupt", s.corrupt),
                ("errors", s.errors),
                ("evictions", s.evictions),
                ("oversize", s.oversize),
                ("recovered", s.recovered),
                ("lock_waits", s.lock_waits),
                ("disabled", s.disabled),
                ("entries", s.entries),
                ("bytes", s.bytes),
            ],
        )
    }

    fn __len__(&self) -> usize {
        self.inner.len() as usize
    }

    #[getter]
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    #[getter]
    fn error(&self) -> Option<String> {
        self.inner.error()
    }
}

/// The canonical cache key: 16 bytes of xxh3-128 over `scope + b"\0" + data`.
#[pyfunction]
#[pyo3(signature = (data, scope = ""))]
fn cache_key<'py>(py: Python<'py>, data: &[u8], scope: &str) -> PyResult<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &cache::cache_key(data, scope)?))
}

/// Add the cache classes and `cache_key` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyMemoryCache>()?;
    m.add_class::<PyDiskCache>()?;
    m.add_function(wrap_pyfunction!(cache_key, m)?)?;
    Ok(())
}
