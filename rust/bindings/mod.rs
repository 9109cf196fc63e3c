//! pyo3 bindings: one `Py<Name>` wrapper per core type, registered in the
//! `llmrelay._core` module. Only compiled with the `python` feature.

use pyo3::prelude::*;

mod cache;
mod clock;
mod error;
mod hybrid_cache;

pub use clock::PyManualClock;

/// The extension module `llmrelay._core`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyManualClock>()?;
    cache::register(m)?;
    Ok(())
}
