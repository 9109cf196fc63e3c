//! Settings, outcomes and statistics of the [`PriorityScheduler`](super::PriorityScheduler).

use crate::error::{positive, Error, Result};
/// How a granted request ended; feeds the AIMD controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered; may raise the limit.
    Success,
    /// 429 / 529 / timeout: the provider is overloaded; lowers the limit.
    Overload,
    /// Any other failure; leaves the limit alone.
    Error,
    /// Not a signal about load (e.g. cancelled); leaves the limit alone.
    Ignored,
}

impl Outcome {
    /// Parse `"success" | "overload" | "error" | "ignored"`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "success" => Ok(Self::Success),
            "overload" => Ok(Self::Overload),
            "error" => Ok(Self::Error),
            "ignored" => Ok(Self::Ignored),
            other => Err(Error::InvalidArgument {
                what: "outcome",
                detail: format!(
                    "outcome={other:?} must be one of success, overload, error, ignored"
                ),
            }),
        }
    }
}

/// Settings of a [`PriorityScheduler`]; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Upper bound of the limit (>= 1).
    pub max_concurrency: usize,
    /// Lower bound of the limit (>= 1, <= `max_concurrency`).
    pub min_concurrency: usize,
    /// Starting limit; `None` means `max_concurrency`.
    pub initial_concurrency: Option<usize>,
    /// Most tickets that may wait; 0 means never queue.
    pub max_queue: usize,
    /// Whether outcomes move the limit (AIMD); `set_limit` works either way.
    pub adaptive: bool,
    /// Seconds of waiting worth one priority level (> 0).
    pub aging_s: f64,
    /// Multiplicative decrease on overload, in `(0, 1)`.
    pub decrease_factor: f64,
    /// Additive increase per window of successes (> 0).
    pub increase_step: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_concurrency: 64,
            min_concurrency: 1,
            initial_concurrency: None,
            max_queue: 10_000,
            adaptive: true,
            aging_s: 10.0,
            decrease_factor: 0.5,
            increase_step: 1.0,
        }
    }
}

impl SchedulerConfig {
    /// Check every field; the error names the parameter and its value.
    pub fn validate(&self) -> Result<()> {
        if self.max_concurrency < 1 {
            return Err(Error::config(
                "max_concurrency",
                self.max_concurrency,
                "must be >= 1",
            ));
        }
        if self.min_concurrency < 1 || self.min_concurrency > self.max_concurrency {
            return Err(Error::config(
                "min_concurrency",
                self.min_concurrency,
                "must be in 1..=max_concurrency",
            ));
        }
        if let Some(i) = self.initial_concurrency {
            if i < self.min_concurrency || i > self.max_concurrency {
                return Err(Error::config(
                    "initial_concurrency",
                    i,
                    "must be in min_concurrency..=max_concurrency",
                ));
            }
        }
        positive("aging_s", self.aging_s)?;
        if !(self.decrease_factor > 0.0 && self.decrease_factor < 1.0) {
            return Err(Error::config(
                "decrease_factor",
                self.decrease_factor,
                "must be a number in (0, 1)",
            ));
        }
        positive("increase_step", self.increase_step)?;
        Ok(())
    }
}

/// Counters and gauges of a scheduler, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerStats {
    /// Current (float) limit.
    pub limit: f64,
    /// Current number of slots, `max(1, floor(limit))`.
    pub slots: usize,
    /// Granted tickets not yet released or cancelled.
    pub in_flight: usize,
    /// Tickets waiting.
    pub queued: usize,
    /// Queue capacity.
    pub max_queue: usize,
    /// Tickets ever granted (at once or from the queue).
    pub granted_total: u64,
    /// Tickets that had to wait in the queue.
    pub queued_total: u64,
    /// `acquire` calls refused because the queue was full.
    pub rejected_total: u64,
    /// Tickets cancelled while queued or running.
    pub cancelled_total: u64,
    /// Tickets released (any outcome).
    pub released_total: u64,
    /// Releases with outcome `Overload`.
    pub overloads: u64,
    /// Multiplicative decreases applied.
    pub decreases: u64,
    /// Additive increases applied.
    pub increases: u64,
    /// Longest queue wait of any granted ticket, in seconds.
    pub max_wait_s: f64,
    /// Exponentially weighted mean of successful latencies (alpha 0.1), seconds.
    pub latency_ewma_s: f64,
}
