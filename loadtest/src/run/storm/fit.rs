//! The arithmetic of the storm: how messages grow with the number of
//! agents (the slope of a log-log fit) and how reconnects spread over time.

/// The least-squares slope of `ln y` over `ln x`: 1.0 when `y` grows in
/// proportion to `x`, 2.0 when it grows with its square. `None` with fewer
/// than two distinct `x`, or any value that is not positive.
pub fn loglog_slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.iter().any(|&(x, y)| !(x.is_finite() && y.is_finite()) || x <= 0.0 || y <= 0.0) {
        return None;
    }
    let logs: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x.ln(), y.ln())).collect();
    let n = logs.len() as f64;
    let (mx, my) = (logs.iter().map(|p| p.0).sum::<f64>() / n, logs.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = logs.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = logs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (logs.len() >= 2 && sxx > 1e-12).then(|| sxy / sxx)
}

/// How many of `times_ms` fall in each `width_ms` bucket of `[0, span_ms)`
/// (times before 0 count in the first bucket, times at or after `span_ms`
/// in none).
pub fn buckets(times_ms: &[f64], width_ms: f64, span_ms: f64) -> Vec<u32> {
    let n = (span_ms / width_ms).ceil().max(1.0) as usize;
    let mut out = vec![0u32; n];
    for &t in times_ms {
        if t.is_nan() || t >= span_ms {
            continue;
        }
        let i = ((t.max(0.0) / width_ms) as usize).min(n - 1);
        out[i] += 1;
    }
    out
}

/// The value at quantile `q` (0..=1) of `sorted` (nearest rank), 0 if empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_linear_quadratic_and_affine_growth() {
        let ns = [50.0, 100.0, 200.0];
        let linear: Vec<_> = ns.iter().map(|&n| (n, 4.0 * n)).collect();
        let quadratic: Vec<_> = ns.iter().map(|&n| (n, 0.5 * n * n)).collect();
        // A fixed overhead bends a linear count below 1, never above it.
        let affine: Vec<_> = ns.iter().map(|&n| (n, 4.0 * n + 30.0)).collect();
        assert!((loglog_slope(&linear).unwrap() - 1.0).abs() < 1e-9);
        assert!((loglog_slope(&quadratic).unwrap() - 2.0).abs() < 1e-9);
        let a = loglog_slope(&affine).unwrap();
        assert!(a < 1.0 && a > 0.9, "{a}");
        // A quadratic term as large as the linear one at the largest N:
        // above the scenario's 1.3 bound.
        let mixed: Vec<_> = ns.iter().map(|&n| (n, n * (1.0 + n / 200.0))).collect();
        assert!(loglog_slope(&mixed).unwrap() > 1.3);
    }

    #[test]
    fn slope_needs_two_distinct_positive_points() {
        assert_eq!(loglog_slope(&[]), None);
        assert_eq!(loglog_slope(&[(10.0, 5.0)]), None);
        assert_eq!(loglog_slope(&[(10.0, 5.0), (10.0, 7.0)]), None);
        assert_eq!(loglog_slope(&[(10.0, 0.0), (20.0, 7.0)]), None);
    }

    #[test]
    fn buckets_of_100_ms() {
        let b = buckets(&[-5.0, 0.0, 99.9, 100.0, 250.0, 999.0, 1000.0], 100.0, 1000.0);
        assert_eq!(b.len(), 10);
        assert_eq!(b, vec![3, 1, 1, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(buckets(&[], 100.0, 0.0), vec![0]);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!((quantile(&v, 0.5), quantile(&v, 0.9), quantile(&v, 1.0)), (5.0, 9.0, 10.0));
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
