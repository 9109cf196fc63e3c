//! Criterion benchmarks of the cache tiers: 2 KB values, 16-byte keys.

use std::sync::Arc;

use criterion::{black_box, Criterion};

use _core::cache::disk::{DiskConfig, WallClock};
use _core::cache::{
    cache_key, DiskCache, HybridCache, HybridConfig, HybridOptions, MemoryCache, MemoryConfig,
};
use _core::clock::system;

const N: u32 = 1_000;

fn keys() -> Vec<[u8; 16]> {
    (0..N)
        .map(|i| cache_key(&i.to_le_bytes(), "bench").unwrap())
        .collect()
}

/// Register the cache benchmarks.
pub fn benches(c: &mut Criterion) {
    let keys = keys();
    let value: Arc<[u8]> = Arc::from(vec![0x5a; 2048]);
    let mut g = c.benchmark_group("cache");

    g.bench_function("cache_key_1k", |b| {
        let data = vec![7u8; 1024];
        b.iter(|| cache_key(black_box(&data), "chat"))
    });

    for eviction in ["tinylfu", "lru"] {
        let cfg = MemoryConfig::new(10_000, None, Some(3600.0), eviction).unwrap();
        let m = MemoryCache::new(&cfg, system());
        for k in &keys {
            m.set(k, Arc::clone(&value), None);
        }
        let mut i = 0usize;
        g.bench_function(format!("memory_get_2k_hit_{eviction}"), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                m.get(black_box(&keys[i]))
            })
        });
        g.bench_function(format!("memory_set_2k_{eviction}"), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                m.set(black_box(&keys[i]), Arc::clone(&value), None)
            })
        });
    }

    let dir = tempfile::tempdir().unwrap();
    let cfg = DiskConfig::new(
        "path",
        dir.path().to_str().unwrap(),
        "max_bytes",
        None,
        Some(500),
    )
    .unwrap();
    let d = DiskCache::open(&cfg, Arc::new(WallClock)).unwrap();
    for k in &keys {
        d.set(k, &value, u64::MAX);
    }
    let mut i = 0usize;
    g.bench_function("disk_get_2k_hit", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            d.get(black_box(&keys[i])).map(|h| h.payload().len())
        })
    });
    g.bench_function("disk_set_2k", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            d.set(black_box(&keys[i]), &value, u64::MAX)
        })
    });
    d.close();

    let dir2 = tempfile::tempdir().unwrap();
    let cfg = HybridConfig::new(&HybridOptions {
        disk_path: dir2.path().to_str(),
        ..HybridOptions::default()
    })
    .unwrap();
    let h = HybridCache::new(&cfg, system(), Arc::new(WallClock)).unwrap();
    for k in &keys {
        h.set(k, Arc::clone(&value), None);
    }
    g.bench_function("hybrid_get_2k_memory_hit", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            h.get(black_box(&keys[i]))
        })
    });
    g.bench_function("hybrid_set_2k_write_through", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            h.set(black_box(&keys[i]), Arc::clone(&value), None)
        })
    });
    h.close();
    g.finish();
}
