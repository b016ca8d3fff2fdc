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

/// Fewest runs of each method an interval is given for.
pub const MIN_RUNS: usize = 3;

/// How sure a ratio of two medians is: the 5th and 95th percentiles of
/// `num`'s median over `den`'s, the runs resampled with replacement
/// `rounds` times (a percentile bootstrap, seeded, so a report is
/// reproducible from its runs). `paired`: the i-th runs of both came in
/// the same round (`cryo compare` times one run of each method a round;
/// the samples must be of one length), resampled by round, so that what
/// moved a whole round moves both medians alike; else each on its own. With 5 runs a median can only be one of
/// the runs, so the interval is wide: that is the point, it says what 5
/// runs can tell. `None` when either sample has fewer than
/// [`MIN_RUNS`] runs (one run resamples to itself: an interval of one
/// point would read as certainty) or a NaN.
pub fn ratio_interval(num: &[f64], den: &[f64], paired: bool, rounds: usize) -> Option<(f64, f64)> {
    if num.len() < MIN_RUNS || den.len() < MIN_RUNS {
        return None;
    }
    quantile(num, 0.5)?;
    quantile(den, 0.5)?;
    // splitmix64: small, good enough to pick indices, no dependency.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    };
    let paired = paired && num.len() == den.len();
    let (mut a, mut b, mut picks) = (Vec::new(), Vec::new(), Vec::new());
    let mut ratios = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        picks.clear();
        picks.extend((0..num.len()).map(|_| next(num.len())));
        a.clear();
        a.extend(picks.iter().map(|&i| num[i]));
        if !paired {
            picks.clear();
            picks.extend((0..den.len()).map(|_| next(den.len())));
        }
        b.clear();
        b.extend(picks.iter().map(|&i| den[i]));
        ratios.push(quantile(&a, 0.5)? / quantile(&b, 0.5)?);
    }
    Some((quantile(&ratios, 0.05)?, quantile(&ratios, 0.95)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_interval_holds_the_ratio_of_medians_and_narrows_with_agreement() {
        let num = [2.0, 2.2, 1.8, 2.1, 1.9];
        let den = [4.0, 4.4, 3.6, 4.2, 3.8];
        let (lo, hi) = ratio_interval(&num, &den, true, 2000).unwrap();
        assert!(lo <= 0.5 && 0.5 <= hi, "{lo} {hi}");
        // Every ratio of two runs lies between min/max and max/min.
        assert!(
            lo >= 1.8 / 4.4 - 1e-12 && hi <= 2.2 / 3.6 + 1e-12,
            "{lo} {hi}"
        );
        // Runs that agree exactly leave no doubt.
        assert_eq!(
            ratio_interval(&[3.0; 5], &[6.0; 5], true, 500),
            Some((0.5, 0.5))
        );
        // A spread-out sample gives a wider interval than a tight one.
        let wide = ratio_interval(&[1.0, 3.0, 2.0, 1.5, 2.5], &den, true, 2000).unwrap();
        assert!(wide.1 - wide.0 > hi - lo, "{wide:?} vs {lo} {hi}");
        // Seeded: the same runs give the same interval.
        assert_eq!(ratio_interval(&num, &den, true, 2000), Some((lo, hi)));
        assert_eq!(ratio_interval(&[], &den, false, 10), None);
        assert_eq!(ratio_interval(&num, &[f64::NAN, 1.0, 2.0], false, 10), None);
        // One or two runs tell nothing about the spread.
        assert_eq!(ratio_interval(&[1.0], &[2.0], false, 10), None);
        assert_eq!(ratio_interval(&[1.0, 1.1], &den, false, 10), None);
    }

    #[test]
    fn runs_of_the_same_rounds_are_resampled_together() {
        // A machine whose speed drifts round by round, one method always
        // half the other: by round, the ratio is exactly 0.5.
        let den = [4.0, 6.0, 5.0, 8.0, 3.0];
        let num: Vec<f64> = den.iter().map(|d| d / 2.0).collect();
        assert_eq!(ratio_interval(&num, &den, true, 2000), Some((0.5, 0.5)));
        // Apart (not runs of the same rounds), the drift shows as doubt.
        let (lo, hi) = ratio_interval(&num, &den, false, 2000).unwrap();
        assert!(lo < 0.45 && hi > 0.55, "{lo} {hi}");
    }

    #[test]
    fn ratio_interval_is_of_medians_between_its_5th_and_95th_percentiles() {
        // One slow run in ten: a median hardly moves, a mean would.
        let mut num = vec![1.0; 9];
        num.push(100.0);
        let den = [1.0; 10];
        let (lo, hi) = ratio_interval(&num, &den, true, 2000).unwrap();
        assert_eq!((lo, hi), (1.0, 1.0), "median, not mean");
        // Three runs 1, 2, 3 over a constant 1: a resampled median is 1
        // with probability 7/27 (two or three draws of 1), 3 likewise,
        // 2 with 13/27; so the 5th and 95th percentiles are 1 and 3,
        // where the 30th and 70th would both be 2.
        let (lo, hi) = ratio_interval(&[1.0, 2.0, 3.0], &[1.0; 3], true, 4000).unwrap();
        assert_eq!((lo, hi), (1.0, 3.0));
    }

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
