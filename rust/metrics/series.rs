//! One series: the counters, gauges and latency histograms of a
//! (provider, model, deployment), each kind in its own read-mostly map.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::key::{FastBuild, SeriesKey};
use super::latency::{Latency, LatencySummary};

type NameMap<V> = HashMap<Box<str>, V, FastBuild>;

/// The metrics of one (provider, model, deployment).
#[derive(Debug, Default)]
pub struct Series {
    counters: RwLock<NameMap<AtomicU64>>,
    /// `f64` bit patterns.
    gauges: RwLock<NameMap<AtomicU64>>,
    histograms: Mutex<NameMap<Latency>>,
}

impl Series {
    pub(super) fn add_counters<S: AsRef<str>>(&self, items: &[(S, u64)]) {
        // Indices of names not seen before; allocates only when one exists.
        let mut missing = Vec::new();
        {
            let map = self.counters.read();
            for (i, (name, n)) in items.iter().enumerate() {
                match map.get(name.as_ref()) {
                    Some(c) => {
                        c.fetch_add(*n, Ordering::Relaxed);
                    }
                    None => missing.push(i),
                }
            }
        }
        if !missing.is_empty() {
            let mut map = self.counters.write();
            for i in missing {
                let (name, n) = &items[i];
                let name = name.as_ref();
                match map.get(name) {
                    Some(c) => c.fetch_add(*n, Ordering::Relaxed),
                    None => map
                        .entry(name.into())
                        .or_default()
                        .fetch_add(*n, Ordering::Relaxed),
                };
            }
        }
    }

    pub(super) fn set_gauge(&self, name: &str, value: f64) {
        let bits = value.to_bits();
        if let Some(g) = self.gauges.read().get(name) {
            g.store(bits, Ordering::Relaxed);
            return;
        }
        let mut map = self.gauges.write();
        match map.get(name) {
            Some(g) => g.store(bits, Ordering::Relaxed),
            None => {
                map.insert(name.into(), AtomicU64::new(bits));
            }
        }
    }

    pub(super) fn observe<S: AsRef<str>>(&self, items: &[(S, f64)]) {
        let mut map = self.histograms.lock();
        for (name, seconds) in items {
            let name = name.as_ref();
            match map.get_mut(name) {
                Some(l) => l.observe(*seconds),
                None => map.entry(name.into()).or_default().observe(*seconds),
            }
        }
    }

    pub(super) fn counter(&self, name: &str) -> u64 {
        self.counters
            .read()
            .get(name)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub(super) fn gauge(&self, name: &str) -> Option<f64> {
        let map = self.gauges.read();
        map.get(name)
            .map(|g| f64::from_bits(g.load(Ordering::Relaxed)))
    }

    /// Run `f` on histogram `name` under the lock, if it exists.
    pub(super) fn with_histogram<R>(&self, name: &str, f: impl FnOnce(&Latency) -> R) -> Option<R> {
        self.histograms.lock().get(name).map(f)
    }

    pub(super) fn snapshot(&self, key: &SeriesKey) -> SeriesSnapshot {
        let mut counters: Vec<(String, u64)> = (self.counters.read().iter())
            .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
            .collect();
        counters.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut gauges: Vec<(String, f64)> = (self.gauges.read().iter())
            .map(|(k, v)| (k.to_string(), f64::from_bits(v.load(Ordering::Relaxed))))
            .collect();
        gauges.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Summarised under the lock: one pass over the counts, cheaper than
        // copying a histogram out.
        let mut histograms: Vec<(String, LatencySummary)> = (self.histograms.lock().iter())
            .map(|(k, v)| (k.to_string(), v.summary()))
            .collect();
        histograms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        SeriesSnapshot {
            provider: key.provider.clone(),
            model: key.model.clone(),
            deployment: key.deployment.clone(),
            counters,
            gauges,
            histograms,
        }
    }
}

/// A plain-data copy of one series, every list sorted by name.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSnapshot {
    /// The provider's name.
    pub provider: String,
    /// The model's name.
    pub model: String,
    /// The deployment's name.
    pub deployment: String,
    /// Counter values by name.
    pub counters: Vec<(String, u64)>,
    /// Gauge values by name.
    pub gauges: Vec<(String, f64)>,
    /// Histogram summaries by name.
    pub histograms: Vec<(String, LatencySummary)>,
}
