//! The on-disk envelope around every value of the disk tier.
//!
//! ```text
//! offset size field
//!      0    4 magic        b"LRCE"
//!      4    1 version      1
//!      5    1 flags        bit 0: the entry expires; other bits must be 0
//!      6    8 expires_at   u64 LE, ns on the disk tier's clock (u64::MAX: never)
//!     14    8 seq          u64 LE, insertion sequence (key of the eviction index)
//!     22    8 checksum     u64 LE, xxh3_64_with_seed(payload, seed = xxh3_64(bytes 0..22))
//!     30    n payload
//! ```
//!
//! The checksum covers the header as well as the payload, so a flipped bit
//! anywhere (an expiry pushed into the future included) is caught. Decoding
//! never panics: anything that does not check out is [`Corrupt`].

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The four magic bytes that open every envelope.
pub const MAGIC: [u8; 4] = *b"LRCE";
/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Flag bit: the entry has an expiry time.
pub const FLAG_EXPIRES: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 30;
const CHECKED_LEN: usize = 22;

/// Why stored bytes are not a valid envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrupt {
    /// Fewer bytes than a header.
    Short,
    /// The magic bytes are wrong.
    Magic,
    /// A format version this build does not read.
    Version(u8),
    /// Flag bits this build does not know, or flags that contradict the expiry.
    Flags(u8),
    /// The checksum does not match.
    Checksum,
}

/// A decoded envelope, borrowing its payload from the stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Clock time (ns) at which the entry expires; `u64::MAX` for never.
    pub expires_at_ns: u64,
    /// Insertion sequence number.
    pub seq: u64,
    /// The value.
    pub payload: &'a [u8],
}

fn checksum(header: &[u8], payload: &[u8]) -> u64 {
    xxh3_64_with_seed(payload, xxh3_64(header))
}

/// Wrap `payload` in an envelope.
pub fn encode(payload: &[u8], expires_at_ns: u64, seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(if expires_at_ns == u64::MAX {
        0
    } else {
        FLAG_EXPIRES
    });
    out.extend_from_slice(&expires_at_ns.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let sum = checksum(&out[..CHECKED_LEN], payload);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Read an envelope; any inconsistency is an error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>, Corrupt> {
    if bytes.len() < HEADER_LEN {
        return Err(Corrupt::Short);
    }
    if bytes[..4] != MAGIC {
        return Err(Corrupt::Magic);
    }
    if bytes[4] != VERSION {
        return Err(Corrupt::Version(bytes[4]));
    }
    let flags = bytes[5];
    let expires_at_ns = u64_at(bytes, 6);
    let expires = expires_at_ns != u64::MAX;
    if flags & !FLAG_EXPIRES != 0 || (flags & FLAG_EXPIRES != 0) != expires {
        return Err(Corrupt::Flags(flags));
    }
    let payload = &bytes[HEADER_LEN..];
    if u64_at(bytes, CHECKED_LEN) != checksum(&bytes[..CHECKED_LEN], payload) {
        return Err(Corrupt::Checksum);
    }
    Ok(Envelope {
        expires_at_ns,
        seq: u64_at(bytes, 14),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let e = encode(b"payload", 42, 7);
        assert_eq!(e.len(), HEADER_LEN + 7);
        let d = decode(&e).unwrap();
        assert_eq!(
            (d.expires_at_ns, d.seq, d.payload),
            (42, 7, &b"payload"[..])
        );
        let never = encode(b"", u64::MAX, 0);
        assert_eq!(decode(&never).unwrap().expires_at_ns, u64::MAX);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let e = encode(b"some value", 1_000, 3);
        for i in 0..e.len() {
            for bit in 0..8 {
                let mut bad = e.clone();
                bad[i] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn named_failures() {
        let e = encode(b"v", 5, 1);
        assert_eq!(decode(&e[..HEADER_LEN - 1]), Err(Corrupt::Short));
        let mut m = e.clone();
        m[0] = b'X';
        assert_eq!(decode(&m), Err(Corrupt::Magic));
        let mut v = e.clone();
        v[4] = 2;
        assert_eq!(decode(&v), Err(Corrupt::Version(2)));
        let mut f = e.clone();
        f[5] = 0x81;
        assert_eq!(decode(&f), Err(Corrupt::Flags(0x81)));
        let mut p = e;
        *p.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&p), Err(Corrupt::Checksum));
    }
}
