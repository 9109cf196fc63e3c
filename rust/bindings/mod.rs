//! pyo3 bindings: one `Py<Name>` wrapper per core type, registered in the
//! `llmrelay._core` module. Only compiled with the `python` feature.

use pyo3::prelude::*;

mod clock;
mod error;
mod http;

pub use clock::PyManualClock;

/// The extension module `llmrelay._core`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyManualClock>()?;
    m.add_class::<http::PyHttpClient>()?;
    m.add_class::<http::PyHttpRequest>()?;
    m.add_class::<http::PyHttpBody>()?;
    m.add_class::<http::PyCompletions>()?;
    m.add(
        "HttpTransportError",
        m.py().get_type::<http::HttpTransportError>(),
    )?;
    Ok(())
}
