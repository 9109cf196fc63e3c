//! pyo3 bindings: one `Py<Name>` wrapper per core type, registered in the
//! `llmrelay._core` module. Only compiled with the `python` feature.

use pyo3::prelude::*;

mod breaker;
mod cache;
mod clock;
mod dedup;
mod error;
mod gate;
mod http;
mod hybrid_cache;
mod limiter;
mod metrics;
mod scheduler;
mod shared;

pub use breaker::PyCircuitBreaker;
pub use clock::PyManualClock;
pub use limiter::PyRateLimiter;
pub use metrics::PyMetrics;

/// The extension module `llmrelay._core`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyManualClock>()?;
    m.add_class::<PyRateLimiter>()?;
    m.add_class::<PyCircuitBreaker>()?;
    m.add_class::<PyMetrics>()?;
    scheduler::register(m)?;
    gate::register(m)?;
    dedup::register(m)?;
    cache::register(m)?;
    m.add_class::<hybrid_cache::PyHybridCache>()?;
    m.add_class::<http::PyHttpClient>()?;
    m.add_class::<http::PyHttpRequest>()?;
    m.add_class::<http::PyHttpBody>()?;
    m.add_class::<http::PyCompletions>()?;
    m.add_class::<http::PyStreamFramer>()?;
    m.add_class::<shared::PySharedLimiter>()?;
    m.add_class::<shared::PySharedCache>()?;
    m.add_class::<shared::PySharedDedup>()?;
    m.add_class::<shared::PySharedLease>()?;
    m.add_class::<shared::PySharedBreakers>()?;
    m.add(
        "HttpTransportError",
        m.py().get_type::<http::HttpTransportError>(),
    )?;
    Ok(())
}
