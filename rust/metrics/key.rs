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

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
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
        self.parts().hash(state);
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for SeriesKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// A multiply-rotate hasher over 8-byte words with a 64-bit finaliser.
///
/// Not resistant to hash flooding: keys are provider, model and metric names
/// chosen by the application, not by remote peers.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher {
    state: u64,
}

impl FastHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.state = (self.state.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The murmur3 64-bit finaliser: spreads every input bit over the
        // high bits, which the hash table uses for its control bytes.
        let mut h = self.state;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
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
        let owned = SeriesKey::new("p", "m", "d");
        assert_eq!(b.hash_one(&owned), h(&("p", "m", "d")));
    }
}
