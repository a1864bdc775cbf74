//! Mutual information between the input channels of a linear layer.
//!
//! `corr` (default) needs no activation history: the calibration pass already sums x xᵀ
//! for the Hessian; with Σ x and the token count that gives the covariance, the
//! correlation ρ and the Gaussian MI, −½ log(1 − ρ²), for any number of tokens.
//! `hist` (plug-in histogram with Miller–Madow correction) and `knn` (Kraskov–Stögbauer–
//! Grassberger, algorithm 1) estimate MI without the Gaussian assumption from a bounded
//! reservoir of stored tokens; all channel pairs run in parallel.
//!
//! Memory: O(d²) f64 per linear input (the MI matrix) plus O(reservoir · d) for the
//! sample-based estimators.

use rayon::prelude::*;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MiMethod {
    Corr,
    Hist,
    Knn,
}

/// ρ² is clamped below 1 so that identical channels get a large but finite MI.
pub const MAX_RHO2: f64 = 1.0 - 1e-9;
/// Channels with variance at or below this (relative to the largest) count as dead.
const DEAD_VARIANCE: f64 = 1e-12;

/// A symmetric d × d matrix, row-major.
#[derive(Clone, Debug)]
pub struct SymMatrix {
    pub d: usize,
    pub values: Vec<f64>,
}

impl SymMatrix {
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.values[i * self.d + j]
    }
}

/// Correlation matrix from the moments Σ x xᵀ, Σ x over `tokens` tokens. Dead channels get
/// zero correlation with every other channel (and 1 with themselves).
pub fn correlation_from_moments(sum_xxt: &[f64], sum_x: &[f64], tokens: usize) -> SymMatrix {
    let d = sum_x.len();
    let t = tokens as f64;
    let ChannelMoments { mean, var, dead } = channel_moments(|i| sum_xxt[i * d + i], sum_x, tokens);
    let mut rho = vec![0.0; d * d];
    rho.par_chunks_mut(d).enumerate().for_each(|(i, row)| {
        for j in 0..d {
            row[j] = if i == j {
                1.0
            } else if dead[i] || dead[j] {
                0.0
            } else {
                let cov = sum_xxt[i * d + j] / t - mean[i] * mean[j];
                (cov / (var[i] * var[j]).sqrt()).clamp(-1.0, 1.0)
            };
        }
    });
    SymMatrix { d, values: rho }
}

/// Per-channel mean and variance from the moments, and which channels count as dead.
struct ChannelMoments {
    mean: Vec<f64>,
    var: Vec<f64>,
    dead: Vec<bool>,
}

/// `ChannelMoments` from Σ x² (the diagonal of Σ x xᵀ, by index), Σ x and the token count.
fn channel_moments(sum_sq: impl Fn(usize) -> f64, sum_x: &[f64], tokens: usize) -> ChannelMoments {
    let t = tokens as f64;
    let mean: Vec<f64> = sum_x.iter().map(|s| s / t).collect();
    let var: Vec<f64> = (0..sum_x.len()).map(|i| (sum_sq(i) / t - mean[i] * mean[i]).max(0.0)).collect();
    let vmax = var.iter().cloned().fold(0.0, f64::max);
    let dead = var.iter().map(|&v| v <= DEAD_VARIANCE * vmax.max(f64::MIN_POSITIVE)).collect();
    ChannelMoments { mean, var, dead }
}

/// Gaussian MI of a correlation: −½ log(1 − ρ²), ρ² clamped below 1.
pub fn gaussian_mi_of(rho: f64) -> f64 {
    -0.5 * (1.0 - (rho * rho).min(MAX_RHO2)).ln()
}

/// MI matrix under the Gaussian model; the diagonal is set to 0 (it is not a dependency
/// between two channels and would dominate every affinity).
pub fn gaussian_mi(rho: &SymMatrix) -> SymMatrix {
    let d = rho.d;
    let values =
        (0..d * d).into_par_iter().map(|k| if k / d == k % d { 0.0 } else { gaussian_mi_of(rho.values[k]) }).collect();
    SymMatrix { d, values }
}

/// Plug-in histogram MI with the Miller–Madow bias correction, equal-width bins.
pub fn histogram_mi(x: &[f32], y: &[f32], bins: usize) -> f64 {
    let n = x.len();
    let bin_of = |v: &[f32]| -> Vec<usize> {
        let lo = v.iter().cloned().fold(f32::INFINITY, f32::min);
        let hi = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let w = (hi - lo) / bins as f32;
        v.iter().map(|&a| if w > 0.0 { (((a - lo) / w) as usize).min(bins - 1) } else { 0 }).collect()
    };
    let (bx, by) = (bin_of(x), bin_of(y));
    let mut cx = vec![0usize; bins];
    let mut cy = vec![0usize; bins];
    let mut cxy = vec![0usize; bins * bins];
    for k in 0..n {
        cx[bx[k]] += 1;
        cy[by[k]] += 1;
        cxy[bx[k] * bins + by[k]] += 1;
    }
    // Miller–Madow: H ≈ H_plugin + (m − 1) / 2n, m = occupied bins.
    let entropy = |c: &[usize]| -> f64 {
        let occupied = c.iter().filter(|&&v| v > 0).count() as f64;
        let h: f64 = c
            .iter()
            .filter(|&&v| v > 0)
            .map(|&v| {
                let p = v as f64 / n as f64;
                -p * p.ln()
            })
            .sum();
        h + (occupied - 1.0) / (2.0 * n as f64)
    };
    (entropy(&cx) + entropy(&cy) - entropy(&cxy)).max(0.0)
}

/// Bins for n samples: the Rice rule, 2·n^(1/3).
pub fn default_bins(n: usize) -> usize {
    ((2.0 * (n as f64).cbrt()).round() as usize).max(2)
}

fn digamma(mut x: f64) -> f64 {
    let mut r = 0.0;
    while x < 6.0 {
        r -= 1.0 / x;
        x += 1.0;
    }
    let f = 1.0 / (x * x);
    r + x.ln() - 0.5 / x - f * (1.0 / 12.0 - f * (1.0 / 120.0 - f * (1.0 / 252.0 - f * (1.0 / 240.0 - f / 132.0))))
}

/// KSG estimator (algorithm 1, max-norm) with `k` neighbours. Ties (common after ReLU)
/// are broken by a deterministic jitter of 1e-10 of each channel's range.
pub fn ksg_mi(x: &[f32], y: &[f32], k: usize) -> f64 {
    let n = x.len();
    assert!(n > k && k > 0);
    let jitter = |v: &[f32], salt: u64| -> Vec<f64> {
        let lo = v.iter().cloned().fold(f32::INFINITY, f32::min) as f64;
        let hi = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let s = (hi - lo).max(1e-30) * 1e-10;
        v.iter()
            .enumerate()
            .map(|(i, &a)| {
                let h = (i as u64 ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
                a as f64 + s * (h as f64 / (1u64 << 53) as f64)
            })
            .collect()
    };
    let (xs, ys) = (jitter(x, 1), jitter(y, 2));
    // Points sorted by x; the k-th neighbour in max-norm is found by walking outwards in x.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let sx: Vec<f64> = order.iter().map(|&i| xs[i]).collect();
    let sy: Vec<f64> = order.iter().map(|&i| ys[i]).collect();
    let mut ys_sorted = ys.clone();
    ys_sorted.sort_by(|a, b| a.total_cmp(b));
    let count_within = |sorted: &[f64], c: f64, eps: f64| -> usize {
        // Points with |v − c| < eps, excluding the point itself.
        let lo = sorted.partition_point(|&v| v <= c - eps);
        let hi = sorted.partition_point(|&v| v < c + eps);
        hi - lo - 1
    };
    let mut acc = 0.0;
    let mut heap: Vec<f64> = Vec::with_capacity(k + 1);
    for p in 0..n {
        heap.clear();
        let kth = |h: &Vec<f64>| if h.len() < k { f64::INFINITY } else { h[k - 1] };
        let (mut l, mut r) = (p as isize - 1, p + 1);
        loop {
            let dl = if l >= 0 { sx[p] - sx[l as usize] } else { f64::INFINITY };
            let dr = if r < n { sx[r] - sx[p] } else { f64::INFINITY };
            let (dx, q) = if dl <= dr { (dl, l as usize) } else { (dr, r) };
            if dx.is_infinite() || dx > kth(&heap) {
                break;
            }
            let dist = dx.max((sy[p] - sy[q]).abs());
            if dist < kth(&heap) {
                let pos = heap.partition_point(|&v| v < dist);
                heap.insert(pos, dist);
                heap.truncate(k);
            }
            if dl <= dr {
                l -= 1;
            } else {
                r += 1;
            }
        }
        let eps = kth(&heap);
        let nx = count_within(&sx, sx[p], eps);
        let ny = count_within(&ys_sorted, sy[p], eps);
        acc += digamma(nx as f64 + 1.0) + digamma(ny as f64 + 1.0);
    }
    (digamma(k as f64) + digamma(n as f64) - acc / n as f64).max(0.0)
}

/// MI matrix from stored tokens (rows of length d) with a sample-based estimator.
pub fn sample_mi(tokens: &[Vec<f32>], method: MiMethod) -> SymMatrix {
    let d = tokens.first().map_or(0, Vec::len);
    let n = tokens.len();
    let cols: Vec<Vec<f32>> = (0..d).map(|j| tokens.iter().map(|t| t[j]).collect()).collect();
    let constant: Vec<bool> = cols.iter().map(|c| c.iter().all(|&v| v == c[0])).collect();
    let bins = default_bins(n);
    let upper: Vec<(usize, usize, f64)> = (0..d)
        .into_par_iter()
        .flat_map_iter(|i| {
            let cols = &cols;
            let constant = &constant;
            (i + 1..d).map(move |j| {
                let v = if constant[i] || constant[j] {
                    0.0
                } else {
                    match method {
                        MiMethod::Hist => histogram_mi(&cols[i], &cols[j], bins),
                        MiMethod::Knn => ksg_mi(&cols[i], &cols[j], 3),
                        MiMethod::Corr => unreachable!("corr uses moments"),
                    }
                };
                (i, j, v)
            })
        })
        .collect();
    let mut values = vec![0.0; d * d];
    for (i, j, v) in upper {
        values[i * d + j] = v;
        values[j * d + i] = v;
    }
    SymMatrix { d, values }
}

/// The similarity of Gaussian channels straight from their correlation: 1 − exp(−2·MI) with
/// MI = −½ log(1 − ρ²) is ρ² (clamped as `gaussian_mi_of` clamps it; diagonal 0). Equal to
/// `similarity(&gaussian_mi(rho))` up to rounding, without a log and an exp per pair.
/// Works in place (the d × d correlation is not needed afterwards).
pub fn gaussian_similarity(mut rho: SymMatrix) -> SymMatrix {
    let d = rho.d;
    rho.values.par_chunks_mut(d).enumerate().for_each(|(i, row)| {
        for (j, v) in row.iter_mut().enumerate() {
            *v = if i == j { 0.0 } else { (*v * *v).min(MAX_RHO2) };
        }
    });
    rho
}

/// `gaussian_similarity(correlation_from_moments(..))` with Σ x xᵀ as a d × d f64 tensor,
/// computed where it lives (the GPU on CUDA runs); only its diagonal comes back, for the
/// variances and the dead-channel test.
pub fn gaussian_similarity_tensor(
    sum_xxt: &candle_core::Tensor,
    sum_x: &[f64],
    tokens: usize,
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::{DType, Tensor};
    let d = sum_x.len();
    let dev = sum_xxt.device();
    let t = tokens as f64;
    let eye = Tensor::eye(d, DType::F64, dev)?;
    let diag: Vec<f64> = (sum_xxt * &eye)?.sum(1)?.to_vec1()?;
    let ChannelMoments { mean, var, dead } = channel_moments(|i| diag[i], sum_x, tokens);
    // Dead channels get 1/σ = 0: zero correlation with everything, as on the host.
    let inv_std: Vec<f64> = var.iter().zip(&dead).map(|(&v, &dead)| if dead { 0.0 } else { 1.0 / v.sqrt() }).collect();
    let mean = Tensor::from_vec(mean, (d, 1), dev)?;
    let inv_std = Tensor::from_vec(inv_std, (d, 1), dev)?;
    let cov = ((sum_xxt / t)? - mean.matmul(&mean.t()?)?)?;
    let rho = cov.broadcast_mul(&inv_std)?.broadcast_mul(&inv_std.t()?)?;
    rho.sqr()?.clamp(0.0, MAX_RHO2)? * (Tensor::ones((d, d), DType::F64, dev)? - eye)?
}

/// Similarity in [0, 1] from MI: 1 − exp(−2 MI) (Linfoot's informational coefficient
/// squared; equal to ρ² for Gaussians). Used as affinity, and 1 − it as distance.
pub fn similarity(mi: &SymMatrix) -> SymMatrix {
    SymMatrix { d: mi.d, values: mi.values.par_iter().map(|&m| 1.0 - (-2.0 * m).exp()).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Correlated Gaussian pairs from a fixed-seed Box–Muller.
    pub fn gaussian_pairs(n: usize, rho: f64, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut s = seed.max(1);
        let mut u = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let mut x = Vec::with_capacity(n);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let (a, b) = (u(), u());
            let r = (-2.0 * a.ln()).sqrt();
            let (z1, z2) = (r * (2.0 * std::f64::consts::PI * b).cos(), r * (2.0 * std::f64::consts::PI * b).sin());
            x.push(z1 as f32);
            y.push((rho * z1 + (1.0 - rho * rho).sqrt() * z2) as f32);
        }
        (x, y)
    }

    #[test]
    fn gaussian_mi_formula() {
        assert!((gaussian_mi_of(0.0)).abs() < 1e-15);
        assert!((gaussian_mi_of(0.8) - (-0.5 * 0.36f64.ln())).abs() < 1e-12);
        assert!(gaussian_mi_of(1.0).is_finite());
    }

    #[test]
    fn histogram_and_knn_estimators_within_5_percent_of_analytic_mi() {
        for &rho in &[0.6, 0.8, 0.9] {
            let truth = gaussian_mi_of(rho);
            let (x, y) = gaussian_pairs(20000, rho, 7);
            let knn = ksg_mi(&x, &y, 3);
            assert!((knn - truth).abs() / truth < 0.05, "knn rho={rho}: {knn} vs {truth}");
            let (x, y) = gaussian_pairs(200000, rho, 11);
            let hist = histogram_mi(&x, &y, default_bins(x.len()));
            assert!((hist - truth).abs() / truth < 0.05, "hist rho={rho}: {hist} vs {truth}");
        }
    }

    #[test]
    fn gaussian_similarity_is_the_similarity_of_the_gaussian_mi() {
        let d = 5;
        let values: Vec<f64> = (0..d * d)
            .map(|k| {
                let (i, j) = (k / d, k % d);
                if i == j {
                    1.0
                } else {
                    ((i * j + i + j) as f64 * 0.37).sin() * if i + j == 3 { 1.0 } else { 0.9 }
                }
            })
            .collect();
        let rho = SymMatrix { d, values };
        let direct = gaussian_similarity(rho.clone());
        let via_mi = similarity(&gaussian_mi(&rho));
        for (a, b) in direct.values.iter().zip(&via_mi.values) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
        assert_eq!(direct.get(2, 2), 0.0);
    }

    #[test]
    fn similarity_tensor_equals_the_host_similarity() {
        // Moments of 6 tokens over 4 channels, channel 2 dead (constant).
        let xs = [
            [1.0, 2.0, 5.0, -1.0],
            [0.5, 1.0, 5.0, 0.0],
            [2.0, 3.5, 5.0, 1.0],
            [-1.0, 0.0, 5.0, 0.5],
            [0.0, 1.5, 5.0, -0.5],
            [1.5, 2.0, 5.0, 2.0],
        ];
        let d = 4;
        let mut sxx = vec![0.0; d * d];
        let mut sx = vec![0.0; d];
        for x in &xs {
            for i in 0..d {
                sx[i] += x[i];
                for j in 0..d {
                    sxx[i * d + j] += x[i] * x[j];
                }
            }
        }
        let host = gaussian_similarity(correlation_from_moments(&sxx, &sx, xs.len()));
        let t = candle_core::Tensor::from_vec(sxx, (d, d), &candle_core::Device::Cpu).unwrap();
        let dev: Vec<f64> =
            gaussian_similarity_tensor(&t, &sx, xs.len()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in host.values.iter().zip(&dev) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        assert!(host.get(0, 1) > 0.5 && host.get(0, 2) == 0.0);
    }

    #[test]
    fn correlation_from_moments_handles_dead_channels() {
        // Channels: a, 2a+1 (perfectly correlated), constant 3.
        let xs = [[1.0, 3.0, 3.0], [2.0, 5.0, 3.0], [4.0, 9.0, 3.0]];
        let d = 3;
        let mut sxx = vec![0.0; 9];
        let mut sx = vec![0.0; 3];
        for x in xs {
            for i in 0..d {
                sx[i] += x[i];
                for j in 0..d {
                    sxx[i * d + j] += x[i] * x[j];
                }
            }
        }
        let rho = correlation_from_moments(&sxx, &sx, 3);
        assert!((rho.get(0, 1) - 1.0).abs() < 1e-9);
        assert_eq!(rho.get(0, 2), 0.0);
        let mi = gaussian_mi(&rho);
        assert!(mi.get(0, 1) > 5.0 && mi.get(0, 1).is_finite());
        assert_eq!(mi.get(2, 2), 0.0);
    }
}
