//! Quantiles from histogram buckets, computed as Prometheus' `histogram_quantile` computes
//! them (`bucketQuantile` in promql/quantile.go): linear interpolation inside the bucket the
//! rank falls in, 0 as the lower bound of a first bucket with a positive bound, the
//! second-highest bound when the rank falls in the +Inf bucket, NaN without observations or
//! without a +Inf bucket.

use std::collections::HashMap;

use super::{canonical_labels, lexer, Clock};

/// One bucket: its upper bound (`le`) and cumulative count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub upper: f64,
    pub count: f64,
}

/// The buckets of one histogram series (one label set besides `le`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Group {
    pub family: usize,
    /// The labels without `le`, sorted.
    pub labels: Vec<(String, String)>,
    pub buckets: Vec<Bucket>,
    /// The first bucket's timestamp.
    pub clock: Option<Clock>,
}

/// Gathers bucket samples into groups, in the order the groups first appear.
#[derive(Debug, Default)]
pub(super) struct Collector {
    index: HashMap<(usize, String), usize>,
    groups: Vec<Group>,
}

impl Collector {
    /// Adds a bucket sample (labels sorted); one without a numeric `le` is ignored, as
    /// Prometheus ignores it.
    pub fn add(
        &mut self,
        family: usize,
        labels: &[(String, String)],
        count: f64,
        clock: Option<Clock>,
    ) {
        let Some(upper) = labels
            .iter()
            .find(|(n, _)| n == "le")
            .and_then(|(_, v)| lexer::number(v.trim()))
        else {
            return;
        };
        let rest: Vec<(String, String)> =
            labels.iter().filter(|(n, _)| n != "le").cloned().collect();
        let key = (family, canonical_labels(&rest));
        let i = *self.index.entry(key).or_insert_with(|| {
            self.groups.push(Group {
                family,
                labels: rest,
                buckets: Vec::new(),
                clock,
            });
            self.groups.len() - 1
        });
        self.groups[i].buckets.push(Bucket { upper, count });
    }

    pub fn groups(&mut self) -> Vec<Group> {
        std::mem::take(&mut self.groups)
    }
}

/// The `q`-quantile of `buckets` (any order), exactly as Prometheus 2.42's `bucketQuantile`.
pub fn bucket_quantile(q: f64, buckets: &[Bucket]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut b: Vec<Bucket> = buckets.to_vec();
    if b.is_empty() {
        return f64::NAN;
    }
    b.sort_by(|x, y| {
        x.upper
            .partial_cmp(&y.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if b[b.len() - 1].upper != f64::INFINITY {
        return f64::NAN;
    }
    coalesce(&mut b);
    ensure_monotonic(&mut b);
    if b.len() < 2 {
        return f64::NAN;
    }
    let observations = b[b.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let i = go_search(b.len() - 1, |i| b[i].count >= rank);
    if i == b.len() - 1 {
        return b[b.len() - 2].upper;
    }
    if i == 0 && b[0].upper <= 0.0 {
        return b[0].upper;
    }
    let mut start = 0.0;
    let end = b[i].upper;
    let mut count = b[i].count;
    if i > 0 {
        start = b[i - 1].upper;
        count -= b[i - 1].count;
        rank -= b[i - 1].count;
    }
    start + (end - start) * (rank / count)
}

/// Go's `sort.Search`: the smallest index in `0..n` where `f` holds (n if none), by the same
/// bisection, so that a non-monotonic `f` (NaN counts) gives what Prometheus gives.
fn go_search(n: usize, f: impl Fn(usize) -> bool) -> usize {
    let (mut i, mut j) = (0, n);
    while i < j {
        let h = (i + j) / 2;
        if !f(h) {
            i = h + 1;
        } else {
            j = h;
        }
    }
    i
}

/// Merges buckets with the same upper bound (sorted input).
fn coalesce(b: &mut Vec<Bucket>) {
    let mut out: Vec<Bucket> = Vec::with_capacity(b.len());
    for &x in b.iter() {
        match out.last_mut() {
            Some(last) if last.upper == x.upper => last.count += x.count,
            _ => out.push(x),
        }
    }
    *b = out;
}

/// Raises any count below an earlier one to that one (the histogram's "envelope").
fn ensure_monotonic(b: &mut [Bucket]) {
    let mut max = b[0].count;
    for x in b.iter_mut().skip(1) {
        if x.count > max {
            max = x.count;
        } else if x.count < max {
            x.count = max;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs
            .iter()
            .map(|&(upper, count)| Bucket { upper, count })
            .collect()
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn interpolates_inside_the_bucket() {
        // Prometheus' promql/testdata/histograms.test: testhistogram positive series.
        let b = h(&[(0.1, 50.0), (0.2, 70.0), (1.0, 110.0), (INF, 120.0)]);
        assert!((bucket_quantile(0.5, &b) - 0.15).abs() < 1e-12);
        assert!((bucket_quantile(0.8, &b) - 0.72).abs() < 1e-12);
        assert_eq!(bucket_quantile(0.99, &b), 1.0);
        assert_eq!(bucket_quantile(0.0, &b), 0.0);
        assert_eq!(bucket_quantile(1.0, &b), 1.0);
        assert_eq!(bucket_quantile(-0.1, &b), f64::NEG_INFINITY);
        assert_eq!(bucket_quantile(1.1, &b), INF);
    }

    #[test]
    fn special_cases() {
        // Negative first bound: returned as is.
        let b = h(&[(-0.2, 10.0), (-0.1, 20.0), (0.3, 20.0), (INF, 30.0)]);
        assert_eq!(bucket_quantile(0.2, &b), -0.2);
        assert!(bucket_quantile(0.5, &h(&[(1.0, 0.0), (INF, 0.0)])).is_nan());
        assert!(bucket_quantile(0.5, &h(&[(1.0, 3.0), (2.0, 4.0)])).is_nan());
        assert!(bucket_quantile(0.5, &h(&[(INF, 4.0)])).is_nan());
        assert!(bucket_quantile(0.5, &[]).is_nan());
        // Unsorted, duplicated and non-monotonic buckets are put right first.
        let b = h(&[(INF, 10.0), (1.0, 2.0), (2.0, 1.0), (1.0, 2.0)]);
        assert_eq!(bucket_quantile(0.3, &b), 0.75);
        assert_eq!(bucket_quantile(0.5, &b), 2.0);
    }
}
