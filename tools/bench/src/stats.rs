//! Latency samples and the figures the report prints of them.

use std::time::Duration;

use serde_json::{Value, json};

/// Latency samples in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn with_capacity(n: usize) -> Samples {
        Samples(Vec::with_capacity(n))
    }

    pub fn push(&mut self, d: Duration) {
        self.0
            .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `{"p50_ms", "p99_ms", "max_ms"}` (nearest-rank percentiles), or nulls without samples.
    pub fn summary(mut self) -> Value {
        if self.0.is_empty() {
            return json!({ "p50_ms": null, "p99_ms": null, "max_ms": null });
        }
        self.0.sort_unstable();
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        json!({
            "p50_ms": ms(percentile(&self.0, 50.0)),
            "p99_ms": ms(percentile(&self.0, 99.0)),
            "max_ms": ms(*self.0.last().unwrap()),
        })
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Merges `b`'s fields into `a` (both JSON objects).
pub fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for us in 1..=100u64 {
            s.push(Duration::from_micros(us * 1000));
        }
        let v = s.summary();
        assert_eq!(v["p50_ms"], json!(50.0));
        assert_eq!(v["p99_ms"], json!(99.0));
        assert_eq!(v["max_ms"], json!(100.0));
        assert_eq!(Samples::default().summary()["p50_ms"], Value::Null);
    }
}
