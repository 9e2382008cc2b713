//! A duration histogram with fixed buckets and atomic counts: cheap on the
//! request path, encoded as a Prometheus histogram, and readable by the
//! dashboard (which needs the buckets to estimate percentiles).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Request buckets, in seconds: the client libraries' defaults with finer
/// steps below 10 ms, where a PHP or native answer usually lands.
pub const REQUEST_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Build buckets, in seconds: an interpreted worker's no-op build to a
/// cold cargo build.
pub const BUILD_BOUNDS: &[f64] = &[0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// A histogram of durations.
#[derive(Clone, Debug)]
pub struct Latency(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    bounds: &'static [f64],
    /// Upper bounds in microseconds, for the comparison on the hot path.
    bounds_us: Box<[u64]>,
    /// Per bucket (not cumulative); the last is +Inf.
    counts: Box<[AtomicU64]>,
    sum_us: AtomicU64,
}

/// The histogram at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Upper bounds, seconds (the +Inf bucket is implicit).
    pub bounds: &'static [f64],
    /// Observations per bucket, not cumulative; one more than `bounds`.
    pub counts: Vec<u64>,
    /// Sum of observations, seconds.
    pub sum: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::with_bounds(REQUEST_BOUNDS)
    }
}

impl Latency {
    /// A histogram over `bounds` (seconds, ascending).
    pub fn with_bounds(bounds: &'static [f64]) -> Self {
        Self(Arc::new(Inner {
            bounds,
            bounds_us: bounds.iter().map(|b| (b * 1e6) as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }))
    }

    /// A histogram for build durations.
    pub fn builds() -> Self {
        Self::with_bounds(BUILD_BOUNDS)
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = self.0.bounds_us.partition_point(|b| *b < us);
        self.0.counts[i].fetch_add(1, Relaxed);
        self.0.sum_us.fetch_add(us, Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            bounds: self.0.bounds,
            counts: self.0.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum: self.0.sum_us.load(Relaxed) as f64 / 1e6,
        }
    }
}

impl Snapshot {
    /// Observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }

    /// The `q` quantile (0..1) in seconds, interpolated inside its bucket
    /// as Prometheus' `histogram_quantile` does; `None` without data.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut seen = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 && (seen + n) as f64 >= rank {
                let lo = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let Some(&hi) = self.bounds.get(i) else {
                    // +Inf bucket: the highest finite bound is all we know.
                    return self.bounds.last().copied();
                };
                let inside = (rank - seen as f64) / n as f64;
                return Some(lo + (hi - lo) * inside.clamp(0.0, 1.0));
            }
            seen += n;
        }
        self.bounds.last().copied()
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder sums the buckets into Prometheus' cumulative `le`
        // series itself: it takes per-bucket counts.
        let s = self.snapshot();
        let buckets: Vec<(f64, u64)> = s
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(s.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(s.sum, s.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive_and_quantiles_interpolate() {
        let l = Latency::with_bounds(&[0.001, 0.01, 0.1]);
        l.observe(Duration::from_micros(1000)); // le 0.001
        l.observe(Duration::from_micros(1001)); // le 0.01
        l.observe(Duration::from_millis(50)); // le 0.1
        l.observe(Duration::from_secs(3)); // +Inf
        let s = l.snapshot();
        assert_eq!(s.counts, vec![1, 1, 1, 1]);
        assert!((s.sum - 3.052001).abs() < 1e-9, "{}", s.sum);
        let near = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
        assert!(near(s.quantile(0.25), 0.001));
        // Rank 2 of 4 is the whole second bucket.
        assert!(near(s.quantile(0.5), 0.01));
        assert!(near(s.quantile(1.0), 0.1));
        let empty = Latency::with_bounds(&[1.0]).snapshot();
        assert_eq!(empty.quantile(0.5), None);
        assert_eq!(s.since(&s).count(), 0);
    }
}
