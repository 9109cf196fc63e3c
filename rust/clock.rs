//! Time sources. Every time-based primitive of the core reads time through a
//! [`Clock`], so tests drive it by hand with a [`ManualClock`] and never sleep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// A monotonic time source, in nanoseconds since an arbitrary origin.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Nanoseconds since the clock's origin; never goes backwards.
    fn now_ns(&self) -> u64;
}

/// A shared, dynamically dispatched clock.
pub type SharedClock = Arc<dyn Clock>;

/// The real monotonic clock (`Instant`), with its origin at first use.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        origin().elapsed().as_nanos() as u64
    }
}

/// A clock that moves only when told to. Cloning shares the same time.
#[derive(Debug, Default, Clone)]
pub struct ManualClock {
    ns: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `start_ns`.
    pub fn new(start_ns: u64) -> Self {
        Self {
            ns: Arc::new(AtomicU64::new(start_ns)),
        }
    }

    /// Move the clock forward by `ns` nanoseconds.
    pub fn advance_ns(&self, ns: u64) {
        self.ns.fetch_add(ns, Ordering::SeqCst);
    }

    /// Move the clock forward by `secs` seconds.
    pub fn advance_secs(&self, secs: f64) {
        self.advance_ns(secs_to_ns(secs));
    }

    /// Set the clock to `ns`; a value before the current time is ignored,
    /// so the clock stays monotonic.
    pub fn set_ns(&self, ns: u64) {
        self.ns.fetch_max(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.ns.load(Ordering::SeqCst)
    }
}

/// The system clock as a [`SharedClock`].
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// Seconds to nanoseconds, saturating; negative and NaN become zero.
pub fn secs_to_ns(secs: f64) -> u64 {
    if secs.is_nan() || secs <= 0.0 {
        0
    } else {
        (secs * 1e9).min(u64::MAX as f64) as u64
    }
}

/// Nanoseconds to seconds.
pub fn ns_to_secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward() {
        let c = ManualClock::new(10);
        let shared = c.clone();
        c.advance_ns(5);
        assert_eq!(shared.now_ns(), 15);
        c.set_ns(3);
        assert_eq!(c.now_ns(), 15);
        c.advance_secs(1.5);
        assert_eq!(c.now_ns(), 1_500_000_015);
    }

    #[test]
    fn system_clock_is_monotonic() {
        let a = SystemClock.now_ns();
        let b = SystemClock.now_ns();
        assert!(b >= a);
    }

    #[test]
    fn conversions_saturate() {
        assert_eq!(secs_to_ns(-1.0), 0);
        assert_eq!(secs_to_ns(f64::NAN), 0);
        assert_eq!(secs_to_ns(f64::INFINITY), u64::MAX);
        assert_eq!(ns_to_secs(2_000_000_000), 2.0);
    }
}
