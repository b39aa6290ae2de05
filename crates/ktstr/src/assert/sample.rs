//! Small statistics over measured samples: mean, nearest-rank percentiles, coefficient of
//! variation. `None` means "nothing was measured", never "measured zero".

/// Arithmetic mean; None for no samples.
pub fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Nearest-rank percentile `p` (0..=100) of unsorted samples; None for no samples.
pub fn percentile(samples: &[u64], p: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    Some(percentile_sorted(&sorted, p))
}

/// Nearest-rank percentile of samples sorted ascending (must not be empty).
fn percentile_sorted(sorted: &[u64], p: f64) -> u64 {
    let p = p.clamp(0.0, 100.0);
    // Rank ceil(p/100 * n), counted from 1; rank 0 (p = 0) is the minimum.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

/// Summary of a latency reservoir, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    pub median_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub worst_us: f64,
    /// Standard deviation over mean; None when the mean is zero.
    pub cv: Option<f64>,
    pub samples: usize,
}

/// Summarise nanosecond latency samples; None for no samples.
pub fn latency_summary(samples_ns: &[u64]) -> Option<LatencySummary> {
    if samples_ns.is_empty() {
        return None;
    }
    let mut sorted = samples_ns.to_vec();
    sorted.sort_unstable();
    let us = |ns: u64| ns as f64 / 1e3;
    let as_f: Vec<f64> = sorted.iter().map(|&x| x as f64).collect();
    Some(LatencySummary {
        median_us: us(percentile_sorted(&sorted, 50.0)),
        p99_us: us(percentile_sorted(&sorted, 99.0)),
        p999_us: us(percentile_sorted(&sorted, 99.9)),
        worst_us: us(*sorted.last().unwrap_or(&0)),
        cv: cv(&as_f),
        samples: sorted.len(),
    })
}

/// Summarise several workers' latency reservoirs as one population. Each reservoir is a
/// uniform sample of `total` measurements, so each of its samples stands for
/// `total / len` of them (at least 1: a guest claiming fewer measurements than samples
/// is not trusted to shrink them). None when no reservoir holds a sample.
pub fn pooled_latency(reservoirs: &[(&[u64], u64)]) -> Option<LatencySummary> {
    let mut weighted: Vec<(u64, f64)> = Vec::new();
    for (samples, total) in reservoirs {
        if samples.is_empty() {
            continue;
        }
        let w = (*total as f64 / samples.len() as f64).max(1.0);
        weighted.extend(samples.iter().map(|&x| (x, w)));
    }
    if weighted.is_empty() {
        return None;
    }
    weighted.sort_unstable_by_key(|&(x, _)| x);
    let sum_w: f64 = weighted.iter().map(|&(_, w)| w).sum();
    // Weighted nearest rank: the first sample whose cumulative weight reaches p %.
    let at = |p: f64| {
        let target = p / 100.0 * sum_w;
        let mut acc = 0.0;
        for &(x, w) in &weighted {
            acc += w;
            if acc >= target - 1e-9 * sum_w {
                return x;
            }
        }
        weighted[weighted.len() - 1].0
    };
    let us = |ns: u64| ns as f64 / 1e3;
    let mean = weighted.iter().map(|&(x, w)| x as f64 * w).sum::<f64>() / sum_w;
    let var = weighted
        .iter()
        .map(|&(x, w)| w * (x as f64 - mean) * (x as f64 - mean))
        .sum::<f64>()
        / sum_w;
    Some(LatencySummary {
        median_us: us(at(50.0)),
        p99_us: us(at(99.0)),
        p999_us: us(at(99.9)),
        worst_us: us(weighted[weighted.len() - 1].0),
        cv: (mean > 0.0).then(|| var.sqrt() / mean),
        samples: weighted.len(),
    })
}

/// Coefficient of variation (population stddev / mean); None for no samples or mean 0.
pub fn cv(v: &[f64]) -> Option<f64> {
    let m = mean(v)?;
    if m == 0.0 {
        return None;
    }
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
    Some(var.sqrt() / m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn latency_summary_in_microseconds() {
        let mut v = vec![1_000u64; 99];
        v.push(1_000_000);
        let s = latency_summary(&v).unwrap();
        assert_eq!(s.median_us, 1.0);
        assert_eq!(s.p99_us, 1.0);
        assert_eq!(s.p999_us, 1000.0);
        assert_eq!(s.worst_us, 1000.0);
        assert_eq!(s.samples, 100);
        assert!(s.cv.unwrap() > 1.0);
        assert_eq!(latency_summary(&[]), None);
    }

    #[test]
    fn pooled_latency_weights_each_reservoir_by_what_it_stands_for() {
        // Worker a: 10 samples of 1 us standing for 1000 wake-ups; worker b: 10 samples of
        // 100 us standing for 10. Unweighted, the median would sit between them; weighted,
        // 99 % of the wake-ups took 1 us.
        let a = vec![1_000u64; 10];
        let b = vec![100_000u64; 10];
        let s = pooled_latency(&[(&a, 1000), (&b, 10)]).unwrap();
        assert_eq!(s.median_us, 1.0);
        assert_eq!(s.p99_us, 1.0);
        assert_eq!(s.p999_us, 100.0);
        assert_eq!(s.worst_us, 100.0);
        assert_eq!(s.samples, 20);
        // Equal weights: the same as the plain summary.
        let plain: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        let p = pooled_latency(&[(&plain, 100)]).unwrap();
        assert_eq!(Some(p), latency_summary(&plain));
        // A total below the sample count does not shrink the weight below 1.
        let q = pooled_latency(&[(&a, 0), (&b, 0)]).unwrap();
        assert_eq!(q.median_us, 1.0);
        assert_eq!(q.p99_us, 100.0);
        assert_eq!(pooled_latency(&[(&[], 5)]), None);
    }

    #[test]
    fn cv_of_constant_and_zero() {
        assert_eq!(cv(&[3.0, 3.0, 3.0]), Some(0.0));
        assert_eq!(cv(&[0.0, 0.0]), None);
        assert_eq!(cv(&[]), None);
        let c = cv(&[1.0, 3.0]).unwrap();
        assert!((c - 0.5).abs() < 1e-12);
    }
}
