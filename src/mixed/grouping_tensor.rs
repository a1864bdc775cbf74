//! Spectral grouping and its quality scores with the similarity matrix as a tensor, for
//! runs on the GPU, where the channel moments already live.
//!
//! The host-side path (`grouping::spectral` + `grouping::quality`) streams the d × d matrix
//! through host memory once per Krylov step, which made MI planning a large share of GPU
//! compress time. Here the d × d work stays on the device: the similarity (`mutual_info`), the normalised
//! affinity, the eigenvectors (Chebyshev-filtered subspace iteration: batches of device
//! GEMMs between few host round trips) and the quality scores, which reduce to products
//! with the one-hot label matrix. Only d × m blocks come back. The same quantities as the
//! host path (tests below compare the two on the CPU device); the eigensolver differs, so
//! where the K-th eigengap is crowded the two may give different bases and groupings.

use super::grouping::{self, GroupQuality};
use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Tensor};
use faer::Mat;

/// Chebyshev filter degree and outer iterations of `bottom_eigenvectors`.
const FILTER_DEGREE: usize = 12;
const MAX_FILTER_ITERATIONS: usize = 60;
/// Residual ‖L u − θ u‖ below which a wanted Ritz pair counts as converged (‖L‖ ≤ 2).
const RESIDUAL_TOLERANCE: f64 = 1e-10;

fn to_mat(t: &Tensor) -> Result<Mat<f64>> {
    let (r, c) = t.dims2()?;
    let v: Vec<f64> = t.flatten_all()?.to_vec1()?;
    Ok(Mat::from_fn(r, c, |i, j| v[i * c + j]))
}

fn from_mat(m: &Mat<f64>, device: &Device) -> Result<Tensor> {
    let (r, c) = (m.nrows(), m.ncols());
    let v: Vec<f64> = (0..r * c).map(|x| m[(x / c, x % c)]).collect();
    Ok(Tensor::from_vec(v, (r, c), device)?)
}

/// The `k` eigenvectors of L = I − N with the smallest eigenvalues (d × k, smallest first),
/// by Chebyshev-filtered subspace iteration (Zhou & Saad, 2007) on a block of m = 2k + 4
/// vectors: each iteration applies T_deg((L − c)/e), which damps L's spectrum on [a, 2]
/// (a = the largest current Ritz value; L's spectrum lies in [0, 2]) and amplifies what
/// lies below, as `FILTER_DEGREE` device GEMMs queued without a host round trip; then a
/// QR and a Rayleigh–Ritz step on the host on m × m (and d × m) blocks. `None` if the
/// wanted residuals do not fall below `RESIDUAL_TOLERANCE`.
///
/// Why not the host path's Krylov–Schur with device products: one product per Krylov step
/// means a host–device round trip per step (hundreds per solve), against a few round trips
/// per filter iteration here.
fn bottom_eigenvectors(n: &Tensor, k: usize) -> Result<Option<Mat<f64>>> {
    let d = n.dims()[0];
    let m = (2 * k + 4).min(d);
    let dev = n.device();
    let apply_l = |x: &Tensor| -> Result<Tensor> { Ok((x - n.matmul(x)?)?) };
    // A fixed, generic start block (deterministic runs).
    let start = Mat::<f64>::from_fn(d, m, |i, j| (((i * m + j) as f64 + 1.0) * 0.754_877_666).fract() - 0.5);
    let mut x = from_mat(&grouping::thin_q(&start), dev)?;
    for _ in 0..MAX_FILTER_ITERATIONS {
        // Rayleigh–Ritz: T = Xᵀ L X, its eigenvectors W rotate X onto Ritz vectors.
        let lx = apply_l(&x)?;
        let t = to_mat(&x.t()?.matmul(&lx)?)?;
        let t = Mat::<f64>::from_fn(m, m, |i, j| 0.5 * (t[(i, j)] + t[(j, i)]));
        let (theta, w) = grouping::self_adjoint_eigen(&t).map_err(|e| anyhow!("Rayleigh–Ritz step: {e}"))?;
        let w = from_mat(&w, dev)?;
        x = x.matmul(&w)?;
        let theta_t = Tensor::from_vec(theta.clone(), (1, m), dev)?;
        let residual: Vec<f64> = (lx.matmul(&w)? - x.broadcast_mul(&theta_t)?)?.sqr()?.sum(0)?.sqrt()?.to_vec1()?;
        if residual[..k].iter().all(|&r| r < RESIDUAL_TOLERANCE) {
            let u = to_mat(&x.narrow(1, 0, k)?)?;
            return Ok(Some(u));
        }
        // Filter: damp [a, 2], a = the largest Ritz value of the block.
        let a = theta[m - 1];
        let (c, e) = ((2.0 + a) / 2.0, (2.0 - a) / 2.0);
        if e <= 1e-12 {
            return Ok(None);
        }
        let mut prev = x.clone();
        let mut y = ((apply_l(&x)? - (&x * c)?)? / e)?;
        for _ in 2..=FILTER_DEGREE {
            let next = (((apply_l(&y)? - (&y * c)?)? * (2.0 / e))? - &prev)?;
            prev = y;
            y = next;
        }
        x = from_mat(&grouping::thin_q(&to_mat(&y)?), dev)?;
    }
    Ok(None)
}

/// N = D^-½ S D^-½ (rows and columns of channels without any affinity are zero).
fn normalised_affinity(sim: &Tensor) -> Result<Tensor> {
    let deg: Vec<f64> = sim.sum(1)?.to_vec1()?;
    let inv_sqrt: Vec<f64> = deg.iter().map(|&g| if g > 0.0 { 1.0 / g.sqrt() } else { 0.0 }).collect();
    let s = Tensor::from_vec(inv_sqrt, (deg.len(), 1), sim.device())?;
    Ok(sim.broadcast_mul(&s)?.broadcast_mul(&s.t()?)?)
}

/// `grouping::spectral` with the affinity on a device.
pub fn spectral(sim: &Tensor, k: usize, seed: u64) -> Result<Vec<usize>> {
    let d = sim.dims()[0];
    if k == 0 || k > d {
        anyhow::bail!("cannot form {k} groups from {d} channels");
    }
    let k_use = k;
    let normalised = normalised_affinity(sim)?;
    let u = if grouping::uses_partial_eigensolver(d, k_use) { bottom_eigenvectors(&normalised, k_use)? } else { None };
    let u = match u {
        Some(u) => u,
        None => {
            let n: Vec<f64> = normalised.flatten_all()?.to_vec1()?;
            grouping::dense_bottom_eigenvectors(&Mat::from_fn(d, d, |i, j| n[j * d + i]), k_use)?
        }
    };
    Ok(grouping::canonical(&grouping::labels_from_embedding(&u, k, seed)))
}

/// Runs the device path once on a tiny input, so that the f64 kernels it needs (and
/// cuBLAS's f64 GEMMs) are loaded before the first real layer, once per process, which
/// `compress` counts as set-up rather than as the first layer's MI planning.
pub fn warm_up(device: &Device) -> Result<()> {
    let d = 8;
    let moments = Tensor::from_vec(
        (0..d * d).map(|x| if x / d == x % d { 2.0 } else { ((x * 7) % 5) as f64 * 0.1 }).collect::<Vec<f64>>(),
        (d, d),
        device,
    )?;
    let sim = super::mutual_info::gaussian_similarity_tensor(&moments, &[0.0; 8], 4)?;
    let normalised = normalised_affinity(&sim)?;
    bottom_eigenvectors(&normalised, 2)?;
    quality(&sim, &[0, 0, 0, 0, 1, 1, 1, 1])?;
    Ok(())
}

fn one_hot(labels: &[usize], k: usize, device: &Device) -> Result<Tensor> {
    let mut v = vec![0.0; labels.len() * k];
    for (i, &l) in labels.iter().enumerate() {
        v[i * k + l] = 1.0;
    }
    Ok(Tensor::from_vec(v, (labels.len(), k), device)?)
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(t.to_vec2()?)
}

/// `grouping::quality` with the similarity on a device. With Y the one-hot labels:
/// M = S Y gives every point's similarity sum per group (silhouette, redundancy);
/// C = diag(1/n) Yᵀ S the group centroids of S's rows, and S − Y C each row's offset from
/// its centroid (Davies–Bouldin). Diagonal terms are taken out where the host version
/// skips j = i.
pub fn quality(sim: &Tensor, labels: &[usize]) -> Result<GroupQuality> {
    let d = labels.len();
    let sizes = grouping::group_sizes(labels);
    let k = sizes.len();
    let dev = sim.device();
    let y = one_hot(labels, k, dev)?;
    let diag: Vec<f64> = (sim * Tensor::eye(d, DType::F64, dev)?)?.sum(1)?.to_vec1()?;
    let m = rows(&sim.matmul(&y)?)?;
    let inv_n: Vec<f64> = sizes.iter().map(|&n| 1.0 / n.max(1) as f64).collect();
    let centroids = y.t()?.matmul(sim)?.broadcast_mul(&Tensor::from_vec(inv_n, (k, 1), dev)?)?;
    // Each row's distance to its own centroid, as differences (not from Gram entries,
    // whose cancellation costs digits when a row sits on its centroid).
    let to_centroid: Vec<f64> = (sim - y.matmul(&centroids)?)?.sqr()?.sum(1)?.sqrt()?.to_vec1()?;
    let centroids = rows(&centroids)?;

    let mut silhouette = 0.0;
    let mut red_sums = vec![0.0; k];
    for i in 0..d {
        let own = labels[i];
        let own_sum = m[i][own] - diag[i];
        red_sums[own] += own_sum;
        // Summed distances 1 − s to each group (to the own one without i itself).
        let dist_sums: Vec<f64> = (0..k)
            .map(|c| if c == own { (sizes[c] - 1) as f64 - own_sum } else { sizes[c] as f64 - m[i][c] })
            .collect();
        silhouette += grouping::point_silhouette(&dist_sums, own, &sizes);
    }
    Ok(GroupQuality {
        silhouette: if k < 2 { 0.0 } else { silhouette / d as f64 },
        davies_bouldin: grouping::davies_bouldin_from(&to_centroid, labels, &centroids),
        redundancy: grouping::mean_over_pairs(&red_sums, &sizes),
    })
}

#[cfg(test)]
mod tests {
    use super::grouping::planted;
    use super::*;
    use crate::mixed::mutual_info::SymMatrix;

    fn tensor(m: &SymMatrix) -> Tensor {
        Tensor::from_vec(m.values.clone(), (m.d, m.d), &Device::Cpu).unwrap()
    }

    #[test]
    fn warm_up_runs() {
        warm_up(&Device::Cpu).unwrap();
    }

    #[test]
    fn quality_equals_the_host_version() {
        let (sim, truth) = planted(&[7, 12, 3, 9, 1]);
        // The true partition and a scrambled one (so that scores are not all near-perfect).
        let scrambled: Vec<usize> =
            truth.iter().enumerate().map(|(i, &l)| if i % 4 == 0 { (l + 1) % 5 } else { l }).collect();
        for labels in [truth, grouping::canonical(&scrambled)] {
            let host = grouping::quality(&sim, &labels);
            let dev = quality(&tensor(&sim), &labels).unwrap();
            assert!((host.silhouette - dev.silhouette).abs() < 1e-12, "{} vs {}", host.silhouette, dev.silhouette);
            assert!(
                (host.davies_bouldin - dev.davies_bouldin).abs() < 1e-9 * host.davies_bouldin.max(1.0),
                "{} vs {}",
                host.davies_bouldin,
                dev.davies_bouldin
            );
            for (a, b) in host.redundancy.iter().zip(&dev.redundancy) {
                assert!((a - b).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn chebyshev_filtered_eigenvectors_span_the_dense_solvers_subspace() {
        let sizes = [30, 40, 45, 50, 55, 55, 60, 60, 60, 65];
        let (sim, _) = planted(&sizes);
        let (d, k) = (sim.d, sizes.len());
        let n = normalised_affinity(&tensor(&sim)).unwrap();
        let u = bottom_eigenvectors(&n, k).unwrap().expect("converges on a clear eigengap");
        let nv: Vec<f64> = n.flatten_all().unwrap().to_vec1().unwrap();
        let dense = grouping::dense_bottom_eigenvectors(&Mat::from_fn(d, d, |i, j| nv[i * d + j]), k).unwrap();
        let diff = grouping::projector_difference(&u, &dense);
        assert!(diff < 1e-8, "projector difference {diff}");
    }

    #[test]
    fn spectral_on_a_tensor_equals_the_host_path() {
        // Wide enough for the Krylov–Schur path, with a clear eigengap: the same subspace,
        // so the same partition (the truth).
        let sizes = [40, 50, 55, 60, 60, 65, 70, 75, 30, 45];
        let (sim, truth) = planted(&sizes);
        assert!(grouping::uses_partial_eigensolver(sim.d, sizes.len()));
        let host = grouping::spectral(&sim, sizes.len(), 0).unwrap();
        let dev = spectral(&tensor(&sim), sizes.len(), 0).unwrap();
        assert!(grouping::adjusted_rand_index(&host, &truth) > 0.999);
        assert_eq!(grouping::canonical(&dev), grouping::canonical(&host));
        // Narrow inputs take the dense path on the host.
        let (small, small_truth) = planted(&[5, 8, 6]);
        let dev = spectral(&tensor(&small), 3, 0).unwrap();
        assert!(grouping::adjusted_rand_index(&dev, &small_truth) > 0.999);
    }
}
