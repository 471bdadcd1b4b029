//! Percentiles over measured durations.

use std::time::Duration;

/// Samples of one measurement.
pub struct Samples {
    pub name: String,
    values: Vec<Duration>,
}

impl Samples {
    pub fn new(name: &str) -> Self {
        Samples {
            name: name.into(),
            values: Vec::new(),
        }
    }

    pub fn push(&mut self, d: Duration) {
        self.values.push(d);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// The p-th percentile (nearest rank), in milliseconds.
    pub fn pct_ms(&self, p: f64) -> f64 {
        if self.values.is_empty() {
            return f64::NAN;
        }
        let mut v = self.values.clone();
        v.sort();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1].as_secs_f64() * 1000.0
    }

    /// `name: p50 … p90 … p99 … (n=…)`.
    pub fn line(&self) -> String {
        format!(
            "{:<44} p50 {:>8.3} ms  p90 {:>8.3} ms  p99 {:>8.3} ms  (n={})",
            self.name,
            self.pct_ms(50.0),
            self.pct_ms(90.0),
            self.pct_ms(99.0),
            self.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::new("x");
        for i in 1..=100 {
            s.push(Duration::from_millis(i));
        }
        assert_eq!(s.pct_ms(50.0), 50.0);
        assert_eq!(s.pct_ms(99.0), 99.0);
        assert_eq!(s.pct_ms(100.0), 100.0);
        assert!(Samples::new("e").pct_ms(50.0).is_nan());
    }
}
