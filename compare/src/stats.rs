//! Order statistics of a sample of timings.

use serde::Serialize;

/// The `q`-quantile (0 ≤ q ≤ 1) of `xs`, interpolating linearly between
/// the two nearest ranks (the "type 7" rule of R and numpy's default), so
/// the median of an even-sized sample is the mean of the middle two.
/// `None` for an empty sample or a NaN in it.
pub fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() || xs.iter().any(|x| x.is_nan()) || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    Some(v[lo] + (h - lo as f64) * (v[hi] - v[lo]))
}

/// Median with the 10th and 90th percentiles: the spread reported next to
/// every median.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
}

impl Summary {
    pub fn of(xs: &[f64]) -> Option<Summary> {
        Some(Summary {
            median: quantile(xs, 0.5)?,
            p10: quantile(xs, 0.1)?,
            p90: quantile(xs, 0.9)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), Some(2.5));
        assert_eq!(quantile(&[7.0], 0.5), Some(7.0));
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let xs: Vec<f64> = (1..=11).map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.1), Some(2.0));
        assert_eq!(quantile(&xs, 0.9), Some(10.0));
        assert_eq!(quantile(&xs, 0.0), Some(1.0));
        assert_eq!(quantile(&xs, 1.0), Some(11.0));
        // 5 values: rank 0.4 between the two smallest
        let s = Summary::of(&[10.0, 20.0, 30.0, 40.0, 50.0]).unwrap();
        assert!((s.p10 - 14.0).abs() < 1e-9, "{s:?}");
        assert!((s.p90 - 46.0).abs() < 1e-9, "{s:?}");
        assert_eq!(s.median, 30.0);
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let a = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0];
        let mut b = a;
        b.reverse();
        assert_eq!(Summary::of(&a), Summary::of(&b));
    }

    #[test]
    fn empty_or_nan_gives_none() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[1.0, f64::NAN], 0.5), None);
        assert_eq!(quantile(&[1.0], 1.5), None);
        assert!(Summary::of(&[]).is_none());
    }
}
