//! `ManualClock` for Python tests: pass it to any primitive's constructor to
//! drive time by hand.

use pyo3::prelude::*;

use crate::clock::{self, Clock, ManualClock, SharedClock};
use crate::error::non_negative;

/// A clock that moves only when told to (seconds as floats).
#[pyclass(name = "ManualClock", module = "llmrelay._core", frozen)]
pub struct PyManualClock {
    pub(crate) inner: ManualClock,
}

#[pymethods]
impl PyManualClock {
    #[new]
    #[pyo3(signature = (start_s = 0.0))]
    fn new(start_s: f64) -> PyResult<Self> {
        non_negative("start_s", start_s)?;
        Ok(Self {
            inner: ManualClock::new(clock::secs_to_ns(start_s)),
        })
    }

    /// Move the clock forward by `seconds` (>= 0).
    fn advance(&self, seconds: f64) -> PyResult<()> {
        non_negative("seconds", seconds)?;
        self.inner.advance_secs(seconds);
        Ok(())
    }

    /// The clock's time in seconds.
    fn now(&self) -> f64 {
        clock::ns_to_secs(self.inner.now_ns())
    }

    fn __repr__(&self) -> String {
        format!("ManualClock(now={:.9})", self.now())
    }
}

#[allow(dead_code)] // used by the primitives' bindings
/// The clock a constructor should use: the given manual clock, or the system one.
pub fn pick(clock: Option<&Bound<'_, PyManualClock>>) -> SharedClock {
    match clock {
        Some(c) => std::sync::Arc::new(c.get().inner.clone()),
        None => clock::system(),
    }
}
