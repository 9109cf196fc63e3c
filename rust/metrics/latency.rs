//! One latency histogram: an HDR histogram of whole microseconds (1 us to
//! 1 h, 3 significant digits) plus the exact count, sum, min and max.
//!
//! Percentiles come from the HDR histogram, so they are within 0.1% of the
//! true value (plus the rounding to a microsecond); the sum, mean, min and
//! max are exact. Observations above one hour are counted in the top bucket
//! (their exact value still reaches sum and max).

use hdrhistogram::Histogram;

use crate::error::{Error, Result};

/// The largest value the histogram resolves, in microseconds (one hour).
pub const MAX_US: u64 = 3_600_000_000;
/// Significant decimal digits the histogram keeps.
pub const SIGFIG: u8 = 3;

/// A summary of one histogram, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencySummary {
    /// Number of observations.
    pub count: u64,
    /// Exact sum of the observations.
    pub sum_s: f64,
    /// Exact smallest observation.
    pub min_s: f64,
    /// Exact largest observation.
    pub max_s: f64,
    /// Exact mean (`sum_s / count`).
    pub mean_s: f64,
    /// Median, within HDR precision.
    pub p50_s: f64,
    /// 90th percentile, within HDR precision.
    pub p90_s: f64,
    /// 95th percentile, within HDR precision.
    pub p95_s: f64,
    /// 99th percentile, within HDR precision.
    pub p99_s: f64,
}

/// Check that `seconds` can be observed: a finite number, zero or more.
pub fn check_seconds(name: &str, seconds: f64) -> Result<()> {
    if seconds.is_finite() && seconds >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            what: "seconds",
            detail: format!("observation of {name:?} must be a finite number >= 0, got {seconds}"),
        })
    }
}

fn to_us(seconds: f64) -> f64 {
    (seconds * 1e6).round()
}

fn to_s(us: u64) -> f64 {
    us as f64 / 1e6
}

/// One latency histogram with its exact aggregates.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
    sum_s: f64,
    min_s: f64,
    max_s: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, MAX_US, SIGFIG)
            .expect("constant bounds 1..=MAX_US with 3 digits are valid");
        Self {
            hist,
            sum_s: 0.0,
            min_s: f64::INFINITY,
            max_s: 0.0,
        }
    }

    /// Record one observation; the caller has checked it with [`check_seconds`].
    #[inline]
    pub fn observe(&mut self, seconds: f64) {
        // `as` saturates, and `saturating_record` clamps to the top bucket.
        self.hist.saturating_record(to_us(seconds) as u64);
        self.sum_s += seconds;
        self.min_s = self.min_s.min(seconds);
        self.max_s = self.max_s.max(seconds);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Count, sum, extremes, mean and the usual percentiles.
    pub fn summary(&self) -> LatencySummary {
        let count = self.count();
        if count == 0 {
            return LatencySummary::default();
        }
        let mut p = [0.0; 4];
        let quantiles = self.hist.value_at_quantiles([0.50, 0.90, 0.95, 0.99]);
        for (slot, us) in p.iter_mut().zip(quantiles) {
            // HDR reports a bucket's top; keep it inside the exact range.
            *slot = to_s(us).clamp(self.min_s, self.max_s);
        }
        LatencySummary {
            count,
            sum_s: self.sum_s,
            min_s: self.min_s,
            max_s: self.max_s,
            mean_s: self.sum_s / count as f64,
            p50_s: p[0],
            p90_s: p[1],
            p95_s: p[2],
            p99_s: p[3],
        }
    }

    /// Cumulative counts of observations `<=` each bound (seconds), as a
    /// Prometheus histogram wants them. `bounds_s` must be strictly
    /// increasing and each `>= 0` (`+inf` allowed, giving the total count).
    ///
    /// An observation counts under a bound when its HDR bucket starts at or
    /// below the bound, so a value equal to a bound is always included and a
    /// value just above it may be, within HDR precision.
    pub fn buckets(&self, bounds_s: &[f64]) -> Result<Vec<u64>> {
        check_bounds(bounds_s)?;
        let bounds_us: Vec<f64> = bounds_s.iter().map(|&b| to_us(b)).collect();
        let mut counts = vec![0u64; bounds_s.len()];
        for item in self.hist.iter_recorded() {
            let low = self.hist.lowest_equivalent(item.value_iterated_to()) as f64;
            let first = bounds_us.partition_point(|&b| b < low);
            if let Some(slot) = counts.get_mut(first) {
                *slot += item.count_at_value();
            }
        }
        let mut total = 0;
        for slot in &mut counts {
            total += *slot;
            *slot = total;
        }
        Ok(counts)
    }
}

fn check_bounds(bounds_s: &[f64]) -> Result<()> {
    let mut previous = f64::NEG_INFINITY;
    for (i, &b) in bounds_s.iter().enumerate() {
        if b.is_nan() || b < 0.0 {
            return Err(Error::InvalidArgument {
                what: "bounds_s",
                detail: format!("bound {i} must be a number >= 0, got {b}"),
            });
        }
        if b <= previous {
            return Err(Error::InvalidArgument {
                what: "bounds_s",
                detail: format!("must be strictly increasing, got {b} after {previous}"),
            });
        }
        previous = b;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(Latency::new().summary(), LatencySummary::default());
    }

    #[test]
    fn exact_aggregates_and_close_percentiles() {
        let mut l = Latency::new();
        for ms in 1..=1000 {
            l.observe(f64::from(ms) / 1000.0);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!((s.sum_s - 500.5).abs() < 1e-9);
        assert_eq!((s.min_s, s.max_s), (0.001, 1.0));
        assert!((s.mean_s - 0.5005).abs() < 1e-12);
        for (got, want) in [
            (s.p50_s, 0.5),
            (s.p90_s, 0.9),
            (s.p95_s, 0.95),
            (s.p99_s, 0.99),
        ] {
            assert!((got - want).abs() <= want * 1e-3 + 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn huge_and_tiny_values_are_clamped_in_the_histogram_only() {
        let mut l = Latency::new();
        l.observe(0.0);
        l.observe(7200.0);
        let s = l.summary();
        assert_eq!(
            (s.count, s.min_s, s.max_s, s.sum_s),
            (2, 0.0, 7200.0, 7200.0)
        );
        assert!(s.p99_s >= 3599.0 && s.p99_s <= 7200.0);
    }

    #[test]
    fn buckets_are_cumulative_and_include_equal_values() {
        let mut l = Latency::new();
        for s in [0.05, 0.1, 0.1, 0.3, 2.0] {
            l.observe(s);
        }
        let b = l.buckets(&[0.1, 0.25, 1.0, f64::INFINITY]).unwrap();
        assert_eq!(b, vec![3, 3, 4, 5]);
        assert_eq!(l.buckets(&[]).unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn bad_bounds_and_seconds_are_typed() {
        let l = Latency::new();
        for bad in [&[0.2, 0.1][..], &[f64::NAN], &[-1.0], &[0.1, 0.1]] {
            let e = l.buckets(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::InvalidArgument {
                        what: "bounds_s",
                        ..
                    }
                ),
                "{e}"
            );
        }
        for bad in [-0.5, f64::NAN, f64::INFINITY] {
            let e = check_seconds("latency", bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid seconds:"), "{e}");
        }
        assert!(check_seconds("latency", 0.0).is_ok());
    }
}
