//! Counters, gauges and latency histograms per series (provider, model,
//! deployment), cheap enough to update on every request.
//!
//! Layout: a read-mostly map from [`SeriesKey`] to an `Arc<Series>`, looked
//! up with borrowed `&str`s (no allocation once a series exists). Inside a
//! series, counters and gauges are atomics in read-mostly maps keyed by name,
//! and histograms sit behind one mutex per series, so threads recording
//! different series never contend and threads on one series contend only
//! for the histogram update. Names are free strings.
//!
//! [`Metrics::reset`] drops every series: afterwards the snapshot is empty
//! and the next update of a series recreates it from zero.
//!
//! # Examples
//!
//! ```
//! use _core::metrics::Metrics;
//!
//! let m = Metrics::new();
//! m.incr("openai", "gpt-4o", "east", "requests", 1);
//! m.observe("openai", "gpt-4o", "east", "latency", 0.250).unwrap();
//! assert_eq!(m.counter("openai", "gpt-4o", "east", "requests"), 1);
//! let snap = m.snapshot();
//! assert_eq!(snap[0].histograms[0].1.count, 1);
//! ```

mod key;
mod latency;
#[cfg(test)]
mod proptests;
mod series;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, Result};
pub use key::SeriesKey;
use key::{FastBuild, KeyView};
pub use latency::{Latency, LatencySummary};
use series::Series;
pub use series::SeriesSnapshot;

/// Counters, gauges and latency histograms keyed by series; thread-safe.
#[derive(Debug, Default)]
pub struct Metrics {
    series: RwLock<HashMap<SeriesKey, Arc<Series>, FastBuild>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run `f` on the series, creating it if needed. The fast path holds
    /// only the map's read lock and allocates nothing.
    #[inline]
    fn with_series<R>(&self, p: &str, m: &str, d: &str, f: impl FnOnce(&Series) -> R) -> R {
        let probe = (p, m, d);
        {
            let map = self.series.read();
            if let Some(s) = map.get(&probe as &dyn KeyView) {
                return f(s);
            }
        }
        let s = {
            let mut map = self.series.write();
            match map.get(&probe as &dyn KeyView) {
                Some(s) => Arc::clone(s),
                None => {
                    let s = Arc::new(Series::default());
                    map.insert(SeriesKey::new(p, m, d), Arc::clone(&s));
                    s
                }
            }
        };
        // A concurrent `reset` may drop the series we just made; the update
        // then lands in a series nobody sees, as if it happened before reset.
        f(&s)
    }

    fn find<R>(&self, p: &str, m: &str, d: &str, f: impl FnOnce(&Series) -> R) -> Option<R> {
        let map = self.series.read();
        map.get(&(p, m, d) as &dyn KeyView).map(|s| f(s))
    }

    /// Add `n` to counter `name` of the series (wrapping at `u64::MAX`).
    pub fn incr(&self, provider: &str, model: &str, deployment: &str, name: &str, n: u64) {
        self.with_series(provider, model, deployment, |s| {
            s.add_counters(&[(name, n)])
        });
    }

    /// Set gauge `name` of the series; `value` must be finite.
    pub fn set_gauge(
        &self,
        provider: &str,
        model: &str,
        deployment: &str,
        name: &str,
        value: f64,
    ) -> Result<()> {
        if !value.is_finite() {
            return Err(Error::InvalidArgument {
                what: "value",
                detail: format!("gauge {name:?} must be a finite number, got {value}"),
            });
        }
        self.with_series(provider, model, deployment, |s| s.set_gauge(name, value));
        Ok(())
    }

    /// Record a duration of `seconds` (finite, `>= 0`) in histogram `name`.
    pub fn observe(
        &self,
        provider: &str,
        model: &str,
        deployment: &str,
        name: &str,
        seconds: f64,
    ) -> Result<()> {
        latency::check_seconds(name, seconds)?;
        self.with_series(provider, model, deployment, |s| {
            s.observe(&[(name, seconds)])
        });
        Ok(())
    }

    /// Apply several counter increments and observations to one series in
    /// one call. All observations are checked first: on error nothing is
    /// recorded.
    pub fn record<C: AsRef<str>, O: AsRef<str>>(
        &self,
        provider: &str,
        model: &str,
        deployment: &str,
        counters: &[(C, u64)],
        observations: &[(O, f64)],
    ) -> Result<()> {
        for (name, seconds) in observations {
            latency::check_seconds(name.as_ref(), *seconds)?;
        }
        self.with_series(provider, model, deployment, |s| {
            if !counters.is_empty() {
                s.add_counters(counters);
            }
            if !observations.is_empty() {
                s.observe(observations);
            }
        });
        Ok(())
    }

    /// The value of counter `name`, 0 if it does not exist.
    pub fn counter(&self, provider: &str, model: &str, deployment: &str, name: &str) -> u64 {
        self.find(provider, model, deployment, |s| s.counter(name))
            .unwrap_or(0)
    }

    /// The value of gauge `name`, if it was ever set.
    pub fn gauge(&self, provider: &str, model: &str, deployment: &str, name: &str) -> Option<f64> {
        self.find(provider, model, deployment, |s| s.gauge(name))
            .flatten()
    }

    /// The summary of histogram `name`, if it has observations.
    pub fn histogram(
        &self,
        provider: &str,
        model: &str,
        deployment: &str,
        name: &str,
    ) -> Option<LatencySummary> {
        self.find(provider, model, deployment, |s| {
            s.with_histogram(name, Latency::summary)
        })
        .flatten()
    }

    /// Cumulative counts of histogram `name` at or below each of `bounds_s`
    /// (strictly increasing, each `>= 0`; `+inf` allowed). A missing
    /// histogram gives zeros.
    pub fn histogram_buckets(
        &self,
        provider: &str,
        model: &str,
        deployment: &str,
        name: &str,
        bounds_s: &[f64],
    ) -> Result<Vec<u64>> {
        let empty = Latency::new;
        self.find(provider, model, deployment, |s| {
            s.with_histogram(name, |l| l.buckets(bounds_s))
        })
        .flatten()
        .unwrap_or_else(|| empty().buckets(bounds_s))
    }

    /// A plain-data copy of every series, sorted by key. Each series is read
    /// consistently per kind (counters, gauges, histograms), not across kinds.
    pub fn snapshot(&self) -> Vec<SeriesSnapshot> {
        let mut all: Vec<(SeriesKey, Arc<Series>)> = (self.series.read().iter())
            .map(|(k, s)| (k.clone(), Arc::clone(s)))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all.iter().map(|(k, s)| s.snapshot(k)).collect()
    }

    /// Drop every series, zeroing all counters, gauges and histograms.
    pub fn reset(&self) {
        let old = std::mem::take(&mut *self.series.write());
        drop(old); // outside the lock: freeing histograms takes a while
    }

    /// Number of series that have been updated since creation or reset.
    pub fn series_count(&self) -> usize {
        self.series.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: (&str, &str, &str) = ("openai", "gpt-4o", "east");

    #[test]
    fn counters_add_and_missing_reads_zero() {
        let m = Metrics::new();
        assert_eq!(m.counter(S.0, S.1, S.2, "requests"), 0);
        m.incr(S.0, S.1, S.2, "requests", 1);
        m.incr(S.0, S.1, S.2, "requests", 2);
        m.incr(S.0, S.1, "west", "requests", 5);
        assert_eq!(m.counter(S.0, S.1, S.2, "requests"), 3);
        assert_eq!(m.counter(S.0, S.1, "west", "requests"), 5);
        assert_eq!(m.counter(S.0, S.1, S.2, "failures"), 0);
        assert_eq!(m.series_count(), 2);
    }

    #[test]
    fn record_batches_and_handles_repeated_new_names() {
        let m = Metrics::new();
        let counters = [("requests", 1), ("tokens_in", 10), ("tokens_in", 5)];
        m.record(S.0, S.1, S.2, &counters, &[("latency", 0.5), ("ttft", 0.1)])
            .unwrap();
        m.record(S.0, S.1, S.2, &counters, &[("latency", 1.5)])
            .unwrap();
        assert_eq!(m.counter(S.0, S.1, S.2, "requests"), 2);
        assert_eq!(m.counter(S.0, S.1, S.2, "tokens_in"), 30);
        let lat = m.histogram(S.0, S.1, S.2, "latency").unwrap();
        assert_eq!((lat.count, lat.sum_s, lat.max_s), (2, 2.0, 1.5));
        assert_eq!(m.histogram(S.0, S.1, S.2, "ttft").unwrap().count, 1);
    }

    #[test]
    fn bad_observation_records_nothing() {
        let m = Metrics::new();
        let e = m
            .record(
                S.0,
                S.1,
                S.2,
                &[("requests", 1)],
                &[("latency", 0.1), ("ttft", -1.0)],
            )
            .unwrap_err();
        assert!(e.to_string().contains("invalid seconds"), "{e}");
        assert_eq!(m.series_count(), 0);
        assert!(m.observe(S.0, S.1, S.2, "latency", f64::NAN).is_err());
        let e = m
            .set_gauge(S.0, S.1, S.2, "in_flight", f64::NAN)
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { what: "value", .. }));
        assert_eq!(m.series_count(), 0);
    }

    #[test]
    fn gauges_overwrite() {
        let m = Metrics::new();
        assert_eq!(m.gauge(S.0, S.1, S.2, "in_flight"), None);
        m.set_gauge(S.0, S.1, S.2, "in_flight", 3.0).unwrap();
        m.set_gauge(S.0, S.1, S.2, "in_flight", -1.5).unwrap();
        assert_eq!(m.gauge(S.0, S.1, S.2, "in_flight"), Some(-1.5));
    }

    #[test]
    fn snapshot_is_sorted_plain_data() {
        let m = Metrics::new();
        m.incr("b", "m", "d", "x", 1);
        m.incr("a", "m", "d", "z", 2);
        m.incr("a", "m", "d", "y", 3);
        m.set_gauge("a", "m", "d", "g", 0.5).unwrap();
        m.observe("a", "m", "d", "latency", 0.25).unwrap();
        let snap = m.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].provider, "a");
        assert_eq!(snap[0].counters, vec![("y".into(), 3), ("z".into(), 2)]);
        assert_eq!(snap[0].gauges, vec![("g".into(), 0.5)]);
        let (name, h) = &snap[0].histograms[0];
        assert_eq!(
            (name.as_str(), h.count, h.p50_s, h.p99_s),
            ("latency", 1, 0.25, 0.25)
        );
        assert!(snap[1].histograms.is_empty() && snap[1].gauges.is_empty());
        // Later updates do not change a snapshot already taken.
        m.incr("a", "m", "d", "y", 1);
        assert_eq!(snap[0].counters[0].1, 3);
    }

    #[test]
    fn reset_drops_everything() {
        let m = Metrics::new();
        m.incr(S.0, S.1, S.2, "requests", 4);
        m.observe(S.0, S.1, S.2, "latency", 0.3).unwrap();
        m.reset();
        assert_eq!(m.series_count(), 0);
        assert!(m.snapshot().is_empty());
        assert_eq!(m.counter(S.0, S.1, S.2, "requests"), 0);
        assert_eq!(
            m.histogram_buckets(S.0, S.1, S.2, "latency", &[1.0])
                .unwrap(),
            vec![0]
        );
        m.incr(S.0, S.1, S.2, "requests", 1);
        assert_eq!(m.counter(S.0, S.1, S.2, "requests"), 1);
    }

    #[test]
    fn histogram_buckets_per_series() {
        let m = Metrics::new();
        for s in [0.01, 0.2, 0.2, 3.0] {
            m.observe(S.0, S.1, S.2, "latency", s).unwrap();
        }
        let b = m.histogram_buckets(S.0, S.1, S.2, "latency", &[0.1, 0.2, 1.0, f64::INFINITY]);
        assert_eq!(b.unwrap(), vec![1, 3, 3, 4]);
        let e = m.histogram_buckets(S.0, S.1, "nowhere", "latency", &[1.0, 0.5]);
        assert!(matches!(
            e,
            Err(Error::InvalidArgument {
                what: "bounds_s",
                ..
            })
        ));
    }

    #[test]
    fn concurrent_updates_sum_exactly() {
        const THREADS: u64 = 8;
        const PER: u64 = 5_000;
        let m = Arc::new(Metrics::new());
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    let dep = if t % 2 == 0 { "even" } else { "odd" };
                    for i in 0..PER {
                        m.incr("p", "m", "all", "requests", 1);
                        m.incr("p", "m", dep, "requests", 1);
                        let obs = [("latency", (i % 100) as f64 / 1000.0)];
                        m.record("p", "m", "all", &[("tokens", 2)], &obs).unwrap();
                        if i % 1000 == 0 {
                            let _ = m.snapshot();
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(m.counter("p", "m", "all", "requests"), THREADS * PER);
        assert_eq!(m.counter("p", "m", "even", "requests"), THREADS / 2 * PER);
        assert_eq!(m.counter("p", "m", "all", "tokens"), 2 * THREADS * PER);
        let lat = m.histogram("p", "m", "all", "latency").unwrap();
        assert_eq!(lat.count, THREADS * PER);
        assert!((lat.mean_s - 0.0495).abs() < 1e-9, "{}", lat.mean_s);
        assert_eq!(m.series_count(), 3);
    }
}
