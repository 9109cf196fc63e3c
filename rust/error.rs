//! The one error type of the core, and (with the `python` feature) its mapping
//! onto the exception classes of `llmrelay.errors`.

use std::fmt;

/// Every failure the core reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A constructor or setter got a value it cannot use.
    #[error("invalid {param}={value}: {reason}")]
    Config {
        /// The parameter's name, as the caller spelled it.
        param: &'static str,
        /// The rejected value, rendered for the message.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A call's argument is invalid (an unknown ticket, a negative cost).
    #[error("invalid {what}: {detail}")]
    InvalidArgument {
        /// What was wrong.
        what: &'static str,
        /// The details.
        detail: String,
    },
    /// The scheduler's queue is at capacity.
    #[error("queue full: {capacity} requests already waiting")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// A circuit breaker refused a call.
    #[error("circuit open for {name}; retry in {retry_after_s:.3}s")]
    CircuitOpen {
        /// The breaker's name (usually the deployment).
        name: String,
        /// Seconds until the breaker will admit a probe.
        retry_after_s: f64,
    },
    /// A client-side rate limit has no room within the time the call can wait.
    #[error("client-side rate limit: {detail}")]
    Throttled {
        /// The deployment whose limit refused.
        name: String,
        /// Seconds until the limit would have room.
        retry_after_s: f64,
        /// Why the wait was too long.
        detail: String,
    },
    /// The disk tier failed; callers treat this as a miss.
    #[error("storage: {0}")]
    Storage(String),
}

impl Error {
    /// A `Config` error for `param` with the given value.
    pub fn config(param: &'static str, value: impl fmt::Display, reason: &'static str) -> Self {
        Error::Config {
            param,
            value: value.to_string(),
            reason,
        }
    }
}

/// Result alias of the core.
pub type Result<T> = std::result::Result<T, Error>;

/// Check that `value` is a finite number greater than zero.
pub fn positive(param: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(Error::config(param, value, "must be a finite number > 0"))
    }
}

/// Check that `value` is a finite number in `0.0..=1.0`.
pub fn unit_interval(param: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(Error::config(param, value, "must be a number in 0..=1"))
    }
}

/// Check that `value` is a finite number, zero or more.
pub fn non_negative(param: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(Error::config(param, value, "must be a finite number >= 0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators_name_parameter_and_value() {
        assert!(positive("rate", 1.5).is_ok());
        let e = positive("rate", f64::NAN).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid rate=NaN: must be a finite number > 0"
        );
        assert!(positive("rate", 0.0).is_err());
        assert!(unit_interval("threshold", 1.0).is_ok());
        assert!(unit_interval("threshold", 1.01).is_err());
        assert!(non_negative("window", 0.0).is_ok());
        assert!(non_negative("window", -1.0).is_err());
    }
}
