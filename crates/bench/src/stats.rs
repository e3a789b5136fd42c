//! Samples and their percentiles, and how numbers are written in the report.

use std::time::Duration;

/// Latency samples, sorted.
#[derive(Debug, Clone)]
pub(crate) struct Samples {
    sorted: Vec<Duration>,
}

impl Samples {
    /// Sorts `samples`; there must be at least one.
    pub(crate) fn new(mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        Self { sorted: samples }
    }

    /// The nearest-rank percentile `p` (0 < p ≤ 100).
    pub(crate) fn pct(&self, p: f64) -> Duration {
        let n = self.sorted.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.sorted[rank.clamp(1, n) - 1]
    }

    pub(crate) fn p50(&self) -> Duration {
        self.pct(50.0)
    }

    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }
}

/// `12.3 µs`, `4.56 ms`, `1.23 s`: three significant digits or so.
pub(crate) fn duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    let (value, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    format!("{} {unit}", sig3(value))
}

/// A number with about three significant digits: `1.23`, `12.3`, `123`.
pub(crate) fn sig3(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// `12 345` calls/s style: thousands separated by a thin space.
pub(crate) fn count(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// KiB as `5.43 MiB`.
pub(crate) fn mib(kib: u64) -> String {
    format!("{} MiB", sig3(kib as f64 / 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Samples::new((1..=100).rev().map(Duration::from_micros).collect());
        assert_eq!(s.p50(), Duration::from_micros(50));
        assert_eq!(s.pct(99.0), Duration::from_micros(99));
        assert_eq!(s.pct(100.0), Duration::from_micros(100));
        let one = Samples::new(vec![Duration::from_millis(3)]);
        assert_eq!(one.pct(90.0), Duration::from_millis(3));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(duration(Duration::from_nanos(12_345)), "12.3 µs");
        assert_eq!(duration(Duration::from_micros(4_560)), "4.56 ms");
        assert_eq!(count(1_234_567.0), "1\u{202f}234\u{202f}567");
        assert_eq!(count(999.0), "999");
        assert_eq!(mib(8 * 1024), "8.00 MiB");
    }
}
