//! Magnitude pruning, the published `--gmp` baseline: per linear, |w| ≤ the sparsity
//! quantile set to zero (no calibration, no error compensation).

/// Kth smallest value (0-based) of `v`: torch.sort(v)[0][k].
pub(crate) fn kth_smallest(mut v: Vec<f32>, k: usize) -> f32 {
    let (_, kth, _) = v.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    *kth
}

/// |w| ≤ the `sparsity` quantile of |w| set to zero, in place.
pub fn magnitude_prune(w: &mut [f32], sparsity: f64) {
    let k = (w.len() as f64 * sparsity) as usize;
    if k >= w.len() {
        w.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    let thresh = kth_smallest(w.iter().map(|x| x.abs()).collect(), k);
    for x in w.iter_mut() {
        if x.abs() <= thresh {
            *x = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitude_pruning_zeroes_the_smallest() {
        let mut w = vec![0.1f32, -0.5, 0.3, -0.05];
        magnitude_prune(&mut w, 0.5);
        // int(4·0.5)=2 → threshold = third smallest |w| = 0.3, so three are ≤ it.
        assert_eq!(w, vec![0.0, -0.5, 0.0, 0.0]);
    }
}
