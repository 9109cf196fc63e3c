//! Property tests of [`Metrics`]: counters sum however updates are batched,
//! percentiles stay within HDR precision of the exact order statistics, and
//! buckets are cumulative.

use proptest::prelude::*;

use super::Metrics;

/// The exact value at quantile `q` as HDR defines it: the smallest value
/// with at least `ceil(q * n)` (and at least one) observations at or below it.
fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn counters_sum_however_batched(
        updates in prop::collection::vec((0usize..3, 0u64..1_000_000, any::<bool>()), 0..60)
    ) {
        let names = ["requests", "tokens_in", "failures.RateLimitError"];
        let m = Metrics::new();
        let mut want = [0u64; 3];
        for (which, n, batched) in &updates {
            want[*which] += n;
            if *batched {
                m.record("p", "m", "d", &[(names[*which], *n)], &[] as &[(&str, f64)]).unwrap();
            } else {
                m.incr("p", "m", "d", names[*which], *n);
            }
        }
        for (name, w) in names.iter().zip(want) {
            prop_assert_eq!(m.counter("p", "m", "d", name), w);
        }
    }

    #[test]
    fn percentiles_within_hdr_precision(
        values in prop::collection::vec(0.000_001f64..100.0, 1..300)
    ) {
        let m = Metrics::new();
        for v in &values {
            m.observe("p", "m", "d", "latency", *v).unwrap();
        }
        let s = m.histogram("p", "m", "d", "latency").unwrap();
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        prop_assert_eq!(s.count, values.len() as u64);
        prop_assert_eq!(s.min_s, sorted[0]);
        prop_assert_eq!(s.max_s, sorted[sorted.len() - 1]);
        let sum: f64 = values.iter().sum();
        prop_assert!((s.sum_s - sum).abs() <= 1e-9 * sum.max(1.0));
        for (got, q) in [(s.p50_s, 0.5), (s.p90_s, 0.9), (s.p95_s, 0.95), (s.p99_s, 0.99)] {
            let want = exact_quantile(&sorted, q);
            // 3 significant digits, plus half a microsecond of rounding.
            prop_assert!((got - want).abs() <= want * 1e-3 + 1e-6, "q{} got {} want {}", q, got, want);
        }
        prop_assert!(s.min_s <= s.p50_s && s.p50_s <= s.p90_s && s.p90_s <= s.p95_s);
        prop_assert!(s.p95_s <= s.p99_s && s.p99_s <= s.max_s);
    }

    #[test]
    fn buckets_cumulative_and_close_to_exact(
        values in prop::collection::vec(0.0f64..10.0, 0..200),
        mut bounds in prop::collection::vec(0.0f64..12.0, 0..12)
    ) {
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        bounds.push(f64::INFINITY);
        let m = Metrics::new();
        for v in &values {
            m.observe("p", "m", "d", "latency", *v).unwrap();
        }
        let got = m.histogram_buckets("p", "m", "d", "latency", &bounds).unwrap();
        prop_assert_eq!(got.len(), bounds.len());
        prop_assert!(got.windows(2).all(|w| w[0] <= w[1]));
        prop_assert_eq!(got[got.len() - 1], values.len() as u64);
        for (b, g) in bounds.iter().zip(&got) {
            // Never fewer than the exact count; extra ones only within precision.
            let exact = values.iter().filter(|v| **v <= *b).count() as u64;
            let loose = values.iter().filter(|v| **v <= b * 1.001 + 1e-6).count() as u64;
            prop_assert!(exact <= *g && *g <= loose, "bound {} got {} exact {} loose {}", b, g, exact, loose);
        }
    }
}
