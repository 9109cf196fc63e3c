//! The one mapping from [`crate::Error`] to the classes of `llmrelay.errors`.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::Error;

fn build(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let module = py.import("llmrelay.errors")?;
    let msg = err.to_string();
    let kwargs = PyDict::new(py);
    let class = match err {
        Error::Config { .. } => "ConfigError",
        Error::InvalidArgument { what, .. } => {
            kwargs.set_item("field", *what)?;
            "InvalidRequestError"
        }
        Error::QueueFull { capacity } => {
            kwargs.set_item("capacity", *capacity)?;
            "QueueFullError"
        }
        Error::CircuitOpen {
            name,
            retry_after_s,
        } => {
            kwargs.set_item("deployment", name)?;
            kwargs.set_item("retry_after", *retry_after_s)?;
            "CircuitOpenError"
        }
        Error::Throttled {
            name,
            retry_after_s,
            ..
        } => {
            kwargs.set_item("provider", name)?;
            kwargs.set_item("retry_after", *retry_after_s)?;
            "ClientThrottledError"
        }
        Error::Storage(_) => "LLMRelayError",
    };
    let value = module.getattr(class)?.call((msg,), Some(&kwargs))?;
    Ok(PyErr::from_value(value))
}

#[allow(dead_code)]
/// Turn a core error into the matching `llmrelay.errors` exception.
pub fn to_pyerr(py: Python<'_>, err: &Error) -> PyErr {
    build(py, err).unwrap_or_else(|e| PyRuntimeError::new_err(format!("{err} ({e})")))
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        Python::with_gil(|py| to_pyerr(py, &err))
    }
}
