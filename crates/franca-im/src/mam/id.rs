//! Archive ids, which are also the XEP-0359 stanza-ids: 26 characters of base32 (digits then
//! `a`–`v`, the "base32hex" alphabet, lower case) encoding 128 bits — the archiving time in µs
//! since the epoch (64 bits) followed by 64 random bits.
//!
//! Why this shape: the byte order of the ids is their time order, so the store pages on the id
//! alone and a XEP-0313 `start`/`end` filter is an id range ([`floor`]). The random half makes
//! ids of one owner hard to guess from one another (XEP-0359 asks for unique, unpredictable
//! ids) and keeps two servers' ids apart. Times are made strictly increasing within this
//! process ([`Clock`]), so two messages archived in the same microsecond, or across a clock
//! step backwards, still get ids in archiving order.

use std::sync::atomic::{AtomicI64, Ordering};

/// Length of an id.
pub const LEN: usize = 26;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// Hands out strictly increasing archive times (µs).
#[derive(Default)]
pub struct Clock {
    last: AtomicI64,
}

impl Clock {
    /// `now_us`, or one more than the last time given out when the clock has not moved past it.
    pub fn next(&self, now_us: i64) -> i64 {
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let t = now_us.max(last.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, t, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return t,
                Err(seen) => last = seen,
            }
        }
    }
}

/// The id for a message archived at `stamp_us`.
pub fn new(stamp_us: i64) -> String {
    encode(stamp_bits(stamp_us), rand::random())
}

/// The smallest id of a message archived at `stamp_us` or later.
pub fn floor(stamp_us: i64) -> String {
    encode(stamp_bits(stamp_us), 0)
}

/// Whether `s` has the shape of an id this server made (so a cursor that cannot exist is
/// refused without asking the store).
pub fn is_valid(s: &str) -> bool {
    s.len() == LEN
        && s.bytes().all(|b| ALPHABET.contains(&b))
        // 128 bits in 26 characters: the first one carries only the top 3 bits.
        && s.as_bytes()[0] <= b'7'
}

/// Times before the epoch sort as the epoch (they never occur in ids, only in filters).
fn stamp_bits(stamp_us: i64) -> u64 {
    u64::try_from(stamp_us).unwrap_or(0)
}

fn encode(high: u64, low: u64) -> String {
    let v = (u128::from(high) << 64) | u128::from(low);
    let mut out = String::with_capacity(LEN);
    out.push(char::from(ALPHABET[(v >> 125) as usize]));
    for i in (0..25).rev() {
        out.push(char::from(ALPHABET[((v >> (5 * i)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_sort_by_time_and_have_the_documented_shape() {
        let a = new(1_700_000_000_000_000);
        let b = new(1_700_000_000_000_001);
        assert!(a < b, "{a} < {b}");
        assert!(is_valid(&a) && is_valid(&b));
        assert_eq!(a.len(), LEN);
        // Same time, random halves differ.
        assert_ne!(new(5), new(5));
        assert!(floor(5) <= new(5) && new(5) < floor(6));
        assert_eq!(floor(0), "0".repeat(LEN));
        assert_eq!(floor(-3), floor(0));
        assert_eq!(encode(u64::MAX, u64::MAX), format!("7{}", "v".repeat(25)));
    }

    #[test]
    fn shapes_that_are_not_ids_are_refused() {
        for bad in [
            "",
            "abc",
            &"w".repeat(LEN),
            &"8".repeat(LEN),
            &"A".repeat(LEN),
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
        assert!(is_valid(&"7".repeat(LEN)));
    }

    #[test]
    fn the_clock_never_repeats_or_goes_back() {
        let c = Clock::default();
        assert_eq!(c.next(100), 100);
        assert_eq!(c.next(100), 101);
        assert_eq!(c.next(50), 102);
        assert_eq!(c.next(200), 200);
    }
}
