//! Percentile bootstrap intervals: how far a mean over a few dozen queries (an MRR, a
//! recall) could move with another draw of queries like them. `eval-search` reports them
//! beside each figure, so that a target met or missed by one query's rank reads as such.

use crate::rng::SplitMix64;

/// Resamples drawn for an interval.
const RESAMPLES: usize = 2000;
/// Seed of the resampling: the same values give the same interval in every report.
const SEED: u64 = 0x5EED_F1E9_2026_0017;

/// The 95 % percentile bootstrap interval `[low, high]` of the mean of `values`: the means of
/// [`RESAMPLES`] samples drawn from `values` with replacement, their 2.5th and 97.5th
/// percentiles. No values: `[0, 0]`.
pub fn mean_interval_95(values: &[f64]) -> [f64; 2] {
    if values.is_empty() {
        return [0.0, 0.0];
    }
    let n = values.len();
    let mut rng = SplitMix64::new(SEED);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            (0..n)
                .map(|_| values[rng.below(n as u64) as usize])
                .sum::<f64>()
                / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    [at(0.025), at(0.975)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_holds_the_mean_and_widens_with_the_spread() {
        // 24 queries: 21 ranked first, one each second, third and sixth (MRR 0.917).
        let mut rr = vec![1.0; 21];
        rr.extend([0.5, 1.0 / 3.0, 1.0 / 6.0]);
        let mean = rr.iter().sum::<f64>() / rr.len() as f64;
        let [lo, hi] = mean_interval_95(&rr);
        assert!(lo < mean && mean < hi && hi <= 1.0, "{lo} {mean} {hi}");
        assert!(lo > 0.75, "{lo}");
        // Five queries, three missed by a place or more: a much wider interval.
        let [lo5, hi5] = mean_interval_95(&[1.0, 1.0, 0.5, 0.5, 1.0 / 6.0]);
        assert!(hi5 - lo5 > 2.0 * (hi - lo), "{lo5} {hi5}");
        // Every query alike: nothing to move.
        assert_eq!(mean_interval_95(&[0.5; 7]), [0.5, 0.5]);
        assert_eq!(mean_interval_95(&[]), [0.0, 0.0]);
        // The same values, the same interval.
        assert_eq!(mean_interval_95(&rr), [lo, hi]);
    }
}
