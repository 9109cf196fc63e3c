//! Settings of the circuit breaker and their validation.

use crate::error::{positive, unit_interval, Error, Result};

/// Largest `window_size` accepted (the ring buffer is one byte per call).
pub const MAX_WINDOW: usize = 1 << 20;

/// The breaker's settings (seconds as `f64`). [`Config::default`] gives the
/// documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Failure rate (0..=1) at or above which the breaker trips.
    pub failure_rate_threshold: f64,
    /// Slow-call rate (0..=1) at or above which the breaker trips.
    pub slow_call_rate_threshold: f64,
    /// A call slower than this counts as slow; `None`: no call is slow.
    pub slow_call_duration_s: Option<f64>,
    /// Calls in the window before it is judged (capped at `window_size`).
    pub minimum_calls: usize,
    /// Calls kept in the sliding window.
    pub window_size: usize,
    /// How long the first trip stays open.
    pub open_duration_s: f64,
    /// Growth of the open duration per consecutive trip (>= 1).
    pub open_backoff_multiplier: f64,
    /// Cap of the open duration (>= `open_duration_s`).
    pub max_open_duration_s: f64,
    /// Probes admitted while half-open.
    pub half_open_max_calls: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_duration_s: None,
            minimum_calls: 10,
            window_size: 20,
            open_duration_s: 30.0,
            open_backoff_multiplier: 1.0,
            max_open_duration_s: 300.0,
            half_open_max_calls: 1,
        }
    }
}

fn at_least_one(param: &'static str, v: usize) -> Result<()> {
    if v >= 1 {
        Ok(())
    } else {
        Err(Error::config(param, v, "must be >= 1"))
    }
}

impl Config {
    /// Check every setting; the error names the first bad one and its value.
    pub fn validate(&self) -> Result<()> {
        unit_interval("failure_rate_threshold", self.failure_rate_threshold)?;
        unit_interval("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if let Some(d) = self.slow_call_duration_s {
            positive("slow_call_duration_s", d)?;
        }
        at_least_one("minimum_calls", self.minimum_calls)?;
        at_least_one("window_size", self.window_size)?;
        if self.window_size > MAX_WINDOW {
            return Err(Error::config(
                "window_size",
                self.window_size,
                "must be <= 1048576",
            ));
        }
        positive("open_duration_s", self.open_duration_s)?;
        let m = self.open_backoff_multiplier;
        if !(m.is_finite() && m >= 1.0) {
            return Err(Error::config(
                "open_backoff_multiplier",
                m,
                "must be a finite number >= 1",
            ));
        }
        positive("max_open_duration_s", self.max_open_duration_s)?;
        if self.max_open_duration_s < self.open_duration_s {
            return Err(Error::config(
                "max_open_duration_s",
                self.max_open_duration_s,
                "must be >= open_duration_s",
            ));
        }
        at_least_one("half_open_max_calls", self.half_open_max_calls)
    }
}
