//! Property tests of the cache: a lookup returns exactly the last value
//! stored or nothing, never another value; envelope decoding never panics.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::envelope::{decode, encode, HEADER_LEN};
use super::hybrid::{HybridCache, HybridConfig, HybridOptions};
use super::memory::{MemoryCache, MemoryConfig};
use crate::clock::ManualClock;

#[derive(Debug, Clone)]
enum Step {
    Set(u8, Vec<u8>),
    Get(u8),
    Delete(u8),
    Evict,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..16, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(k, v)| Step::Set(k, v)),
        4 => (0u8..16).prop_map(Step::Get),
        1 => (0u8..16).prop_map(Step::Delete),
        1 => Just(Step::Evict),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn decode_of_mangled_envelope_never_panics_nor_lies(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        expires in any::<u64>(),
        seq in any::<u64>(),
        at in any::<usize>(),
        xor in 1u8..=255,
    ) {
        let mut raw = encode(&payload, expires, seq);
        let env = decode(&raw).unwrap();
        prop_assert_eq!((env.payload, env.expires_at_ns, env.seq), (&payload[..], expires, seq));
        let i = at % raw.len();
        raw[i] ^= xor;
        prop_assert!(decode(&raw).is_err(), "flip at {} went unnoticed", i);
        let _ = decode(&raw[..i.min(HEADER_LEN)]);
    }

    #[test]
    fn memory_get_is_last_set_or_none(steps in proptest::collection::vec(step(), 1..80)) {
        let cfg = MemoryConfig::new(4, Some(200), None, "tinylfu").unwrap();
        let c = MemoryCache::new(&cfg, Arc::new(ManualClock::new(0)));
        let mut model: HashMap<u8, Vec<u8>> = HashMap::new();
        for s in steps {
            match s {
                Step::Set(k, v) => { c.set(&[k], Arc::from(&v[..]), None); model.insert(k, v); }
                Step::Get(k) => if let Some(got) = c.get(&[k]) {
                    prop_assert_eq!(Some(&got[..]), model.get(&k).map(|v| &v[..]));
                },
                Step::Delete(k) => { c.delete(&[k]); model.remove(&k); }
                Step::Evict => { c.len(); }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn hybrid_get_is_last_set_or_none(
        steps in proptest::collection::vec(step(), 1..60),
        behind in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(0));
        let cfg = HybridConfig::new(&HybridOptions {
            memory_max_entries: 3,
            disk_path: dir.path().to_str(),
            disk_max_bytes: Some(400),
            write_mode: if behind { "write_behind" } else { "write_through" },
            flush_every_ms: None,
            ..HybridOptions::default()
        }).unwrap();
        let c = HybridCache::new(&cfg, clock.clone(), clock).unwrap();
        let mut model: HashMap<u8, Vec<u8>> = HashMap::new();
        for s in steps {
            match s {
                Step::Set(k, v) => { c.set(&[k], Arc::from(&v[..]), None); model.insert(k, v); }
                Step::Get(k) => if let Some(got) = c.get(&[k]) {
                    prop_assert_eq!(Some(&got[..]), model.get(&k).map(|v| &v[..]), "key {}", k);
                },
                Step::Delete(k) => { c.delete(&[k]); model.remove(&k); }
                Step::Evict => { c.memory().clear(); c.flush(); }
            }
        }
        c.close();
    }
}
