//! Latency histograms (HDR, microseconds) that travel between processes as (value, count)
//! pairs, and the wall/CPU clocks used for stamps and CPU accounting.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Highest latency recorded: 10 minutes, in microseconds.
const MAX_US: u64 = 600_000_000;

/// An HDR histogram of microseconds, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist(Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|_| unreachable!()))
    }
}

impl Hist {
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, MAX_US));
    }

    pub fn record_ns(&mut self, ns: u64) {
        self.record_us(ns / 1000);
    }

    pub fn add(&mut self, other: &Hist) {
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0..=1), in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }

    /// (latency ms, cumulative fraction) points for a CDF plot.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let total = self.0.len() as f64;
        if total == 0.0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut acc = 0u64;
        for v in self.0.iter_recorded() {
            acc += v.count_at_value();
            out.push((v.value_iterated_to() as f64 / 1000.0, acc as f64 / total));
        }
        out
    }

    /// "p50/p90/p99/p99.9/max" in ms.
    pub fn summary(&self) -> String {
        format!(
            "n={} p50={:.2} p90={:.2} p99={:.2} p99.9={:.2} max={:.2} ms",
            self.count(),
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.ms(0.999),
            self.max_ms()
        )
    }
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(u64, u64)> = self
            .0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        pairs.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(u64, u64)>::deserialize(d)?;
        let mut h = Hist::default();
        for (v, c) in pairs {
            let _ = h.0.record_n(v.clamp(1, MAX_US), c);
        }
        Ok(h)
    }
}

/// Wall-clock nanoseconds since the Unix epoch: the stamp carried in bodies and statuses.
/// Every process on the machine reads the same clock, so stamps compare across workers.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Parses a stamp at the start of `text` (digits up to the first non-digit).
pub fn parse_stamp(text: &[u8]) -> Option<u64> {
    let end = text
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(text.len());
    std::str::from_utf8(&text[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_quantiles() {
        let mut h = Hist::default();
        for us in 1..=1000 {
            h.record_us(us);
        }
        let json = serde_json::to_string(&h).expect("ser");
        let back: Hist = serde_json::from_str(&json).expect("de");
        assert_eq!(back.count(), 1000);
        assert!((back.ms(0.99) - 0.99).abs() < 0.01);
        assert_eq!(parse_stamp(b"123 abc"), Some(123));
    }
}
