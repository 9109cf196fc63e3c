//! Series keys that can be looked up without allocating, and a small fast
//! hasher for the short strings used as keys.
//!
//! The map owns [`SeriesKey`]s (three `String`s); callers hold three `&str`.
//! Both sides hash and compare through the [`KeyView`] trait object, so
//! `map.get(&(p, m, d) as &dyn KeyView)` finds an owned key without building
//! one.

use std::borrow::Borrow;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// The owned key of one series: provider, model and deployment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeriesKey {
    /// The provider's name.
    pub provider: String,
    /// The model's name.
    pub model: String,
    /// The deployment's name.
    pub deployment: String,
}

impl SeriesKey {
    /// An owned key copied from borrowed parts.
    pub fn new(provider: &str, model: &str, deployment: &str) -> Self {
        Self {
            provider: provider.to_owned(),
            model: model.to_owned(),
            deployment: deployment.to_owned(),
        }
    }
}

/// A (provider, model, deployment) triple, owned or borrowed.
pub trait KeyView {
    /// The three parts.
    fn parts(&self) -> (&str, &str, &str);
}

impl KeyView for SeriesKey {
    fn parts(&self) -> (&str, &str, &str) {
        (&self.provider, &self.model, &self.deployment)
    }
}

impl KeyView for (&str, &str, &str) {
    fn parts(&self) -> (&str, &str, &str) {
        (self.0, self.1, self.2)
    }
}

fn hash_parts<H: Hasher>((p, m, d): (&str, &str, &str), state: &mut H) {
    // `FastHasher::write` mixes in each slice's length, so part boundaries
    // matter without separators.
    state.write(p.as_bytes());
    state.write(m.as_bytes());
    state.write(d.as_bytes());
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(self.parts(), state);
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyView + '_ {}

impl Hash for SeriesKey {
    // Must agree with `dyn KeyView`'s hash, so both hash the same tuple.
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(self.parts(), state);
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for SeriesKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;
const K2: u64 = 0xa409_3822_299f_31d0;

/// Multiply to 128 bits and fold the halves: the mixing step.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline(always)]
fn read8(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn read4(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u64::from(u32::from_le_bytes(w))
}

/// Hash `bytes` into `seed`. Short slices (the usual case) take two
/// overlapping loads and one multiply; the length is mixed in.
#[inline(always)]
fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let len = bytes.len();
    let (a, b) = if len <= 16 {
        if len >= 8 {
            (read8(bytes, 0), read8(bytes, len - 8))
        } else if len >= 4 {
            (read4(bytes, 0), read4(bytes, len - 4))
        } else if len > 0 {
            let x = u64::from(bytes[0]) << 16 | u64::from(bytes[len / 2]) << 8;
            (x | u64::from(bytes[len - 1]), 0)
        } else {
            (0, 0)
        }
    } else {
        let mut h = seed;
        let mut rest = bytes;
        while rest.len() > 16 {
            h = fold(read8(rest, 0) ^ K1, read8(rest, 8) ^ h);
            rest = &rest[16..];
        }
        (read8(bytes, len - 16) ^ h, read8(bytes, len - 8))
    };
    fold(a ^ K1 ^ len as u64, b ^ seed ^ K2)
}

/// A small multiply-fold hasher for short strings (the idea of wyhash).
///
/// Not resistant to hash flooding: keys are provider, model and metric names
/// chosen by the application, not by remote peers.
#[derive(Debug, Clone, Copy)]
pub struct FastHasher {
    state: u64,
}

impl Default for FastHasher {
    fn default() -> Self {
        Self { state: K0 }
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.state = hash_bytes(self.state, bytes);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        // `str` hashing appends 0xff; lengths already separate strings.
        self.state ^= u64::from(i);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.state = fold(self.state ^ i, K2);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.state
    }
}

/// Builds [`FastHasher`]s for the metrics maps.
pub type FastBuild = BuildHasherDefault<FastHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    #[test]
    fn borrowed_lookup_finds_owned_key() {
        let mut map: HashMap<SeriesKey, u32, FastBuild> = HashMap::default();
        map.insert(SeriesKey::new("openai", "gpt-4o", "east"), 7);
        let probe = ("openai", "gpt-4o", "east");
        assert_eq!(map.get(&probe as &dyn KeyView), Some(&7));
        let other = ("openai", "gpt-4oeast", "");
        assert_eq!(map.get(&other as &dyn KeyView), None);
    }

    #[test]
    fn hash_depends_on_part_boundaries_and_every_byte() {
        let b = FastBuild::default();
        let h = |k: &dyn KeyView| b.hash_one(k);
        assert_ne!(h(&("ab", "c", "")), h(&("a", "bc", "")));
        assert_ne!(h(&("abcdefgh1", "", "")), h(&("abcdefgh2", "", "")));
        assert_ne!(h(&("\0", "", "")), h(&("", "", "")));
        let long_a = "a-rather-long-deployment-name-for-x-region";
        let long_b = "a-rather-long-deployment-name-fOr-x-region";
        assert_ne!(h(&("p", "m", long_a)), h(&("p", "m", long_b)));
        let owned = SeriesKey::new("p", "m", "d");
        assert_eq!(b.hash_one(&owned), h(&("p", "m", "d")));
    }
}
