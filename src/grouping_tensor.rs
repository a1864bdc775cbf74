//! Spectral grouping and its quality scores with the similarity matrix as a tensor, for
//! runs on the GPU, where the channel moments already live.
//!
//! On the H100 host the host-side path (`grouping::spectral` + `grouping::quality`) spent
//! 55–120 ms per 1024-wide input, mostly streaming the 8 MB d × d matrix through a slow
//! host memory system once per Krylov step; the MI planning was then 20% of compress time.
//! Here the d × d work stays on the device: the normalised affinity, each Krylov step's
//! product (faer's Krylov–Schur iteration drives it through a `LinOp` whose `apply` is a
//! device matmul), and the quality scores, which reduce to products with the one-hot label
//! matrix. Only d × k blocks come back. Same mathematics as the host path (tests below
//! compare the two on the CPU device).

use crate::grouping::{self, GroupQuality};
use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Tensor};
use faer::dyn_stack::{MemStack, StackReq};
use faer::matrix_free::LinOp;
use faer::{Mat, MatMut, MatRef, Par};
use std::sync::Mutex;

/// B = I + D^-½ S D^-½ applied on the tensor's device. `apply` cannot return an error, so
/// the first one is kept and the product is zero from then on (the caller checks).
struct DeviceOperator {
    b: Tensor,
    error: Mutex<Option<candle_core::Error>>,
}

impl std::fmt::Debug for DeviceOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceOperator({:?})", self.b.shape())
    }
}

impl DeviceOperator {
    /// B X for a column-major X (d × c): uploads Xᵀ (c × d row-major, the same bytes), and
    /// as B is symmetric, Xᵀ B = (B X)ᵀ comes back in X's layout.
    fn product(&self, rhs: MatRef<'_, f64>) -> candle_core::Result<Vec<f64>> {
        let (d, c) = (rhs.nrows(), rhs.ncols());
        let mut xt = Vec::with_capacity(d * c);
        for j in 0..c {
            xt.extend((0..d).map(|i| rhs[(i, j)]));
        }
        Tensor::from_vec(xt, (c, d), self.b.device())?.matmul(&self.b)?.flatten_all()?.to_vec1()
    }
}

impl LinOp<f64> for DeviceOperator {
    fn apply_scratch(&self, _rhs_ncols: usize, _par: Par) -> StackReq {
        StackReq::EMPTY
    }
    fn nrows(&self) -> usize {
        self.b.dims()[0]
    }
    fn ncols(&self) -> usize {
        self.b.dims()[1]
    }
    fn apply(&self, mut out: MatMut<'_, f64>, rhs: MatRef<'_, f64>, _par: Par, _stack: &mut MemStack) {
        let d = rhs.nrows();
        let mut error = self.error.lock().expect("operator error slot");
        let y = if error.is_none() {
            self.product(rhs).map_err(|e| *error = Some(e)).ok()
        } else {
            None
        };
        for j in 0..rhs.ncols() {
            for i in 0..d {
                out[(i, j)] = y.as_ref().map_or(0.0, |y| y[j * d + i]);
            }
        }
    }
    fn conj_apply(&self, out: MatMut<'_, f64>, rhs: MatRef<'_, f64>, par: Par, stack: &mut MemStack) {
        self.apply(out, rhs, par, stack)
    }
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
    let mut u = None;
    if grouping::uses_partial_eigensolver(d, k_use) {
        let op = DeviceOperator { b: (&normalised + Tensor::eye(d, DType::F64, sim.device())?)?, error: Mutex::new(None) };
        let vecs = grouping::top_eigenvectors(&op, k_use);
        if let Some(e) = op.error.into_inner().expect("operator error slot") {
            return Err(anyhow!("eigensolver product on the device failed: {e}"));
        }
        u = vecs;
    }
    let u = match u {
        Some(u) => u,
        None => {
            let n: Vec<f64> = normalised.flatten_all()?.to_vec1()?;
            grouping::dense_bottom_eigenvectors(&Mat::from_fn(d, d, |i, j| n[j * d + i]), k_use)?
        }
    };
    Ok(grouping::canonical(&grouping::labels_from_embedding(&u, k, seed)))
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
    let mut scatter = vec![0.0; k];
    for i in 0..d {
        let own = labels[i];
        let own_sum = m[i][own] - diag[i];
        red_sums[own] += own_sum;
        scatter[own] += to_centroid[i];
        if k < 2 || sizes[own] <= 1 {
            continue;
        }
        // Mean distance 1 − s to the own group (j ≠ i) and to the nearest other group.
        let a = ((sizes[own] - 1) as f64 - own_sum) / (sizes[own] - 1) as f64;
        let b = (0..k)
            .filter(|&c| c != own && sizes[c] > 0)
            .map(|c| (sizes[c] as f64 - m[i][c]) / sizes[c] as f64)
            .fold(f64::INFINITY, f64::min);
        if a.max(b) > 0.0 {
            silhouette += (b - a) / a.max(b);
        }
    }
    let redundancy = red_sums.iter().zip(&sizes).map(|(s, &n)| if n > 1 { s / (n * (n - 1)) as f64 } else { 0.0 }).collect();
    let mut davies_bouldin = 0.0;
    if k >= 2 {
        for a in 0..k {
            let sa = scatter[a] / sizes[a].max(1) as f64;
            let mut worst: f64 = 0.0;
            for b in (0..k).filter(|&b| b != a) {
                let sb = scatter[b] / sizes[b].max(1) as f64;
                let dist = centroids[a].iter().zip(&centroids[b]).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
                if dist > 0.0 {
                    worst = worst.max((sa + sb) / dist);
                }
            }
            davies_bouldin += worst;
        }
        davies_bouldin /= k as f64;
    }
    Ok(GroupQuality { silhouette: if k < 2 { 0.0 } else { silhouette / d as f64 }, davies_bouldin, redundancy })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutual_info::SymMatrix;

    /// Planted blocks (within ~0.6, across ~0.05, deterministic noise), diagonal 0.
    fn planted(sizes: &[usize]) -> (SymMatrix, Vec<usize>) {
        let truth: Vec<usize> = sizes.iter().enumerate().flat_map(|(g, &n)| std::iter::repeat_n(g, n)).collect();
        let d = truth.len();
        let mut v = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..i {
                let noise = (((i * 31 + j * 17) % 97) as f64 / 97.0 - 0.5) * 0.1;
                let s = if truth[i] == truth[j] { 0.6 } else { 0.05 } + noise;
                v[i * d + j] = s.max(0.0);
                v[j * d + i] = s.max(0.0);
            }
        }
        (SymMatrix { d, values: v }, truth)
    }

    fn tensor(m: &SymMatrix) -> Tensor {
        Tensor::from_vec(m.values.clone(), (m.d, m.d), &Device::Cpu).unwrap()
    }

    #[test]
    fn quality_equals_the_host_version() {
        let (sim, truth) = planted(&[7, 12, 3, 9, 1]);
        // The true partition and a scrambled one (so that scores are not all near-perfect).
        let scrambled: Vec<usize> = truth.iter().enumerate().map(|(i, &l)| if i % 4 == 0 { (l + 1) % 5 } else { l }).collect();
        for labels in [truth, grouping::canonical(&scrambled)] {
            let host = grouping::quality(&sim, &labels);
            let dev = quality(&tensor(&sim), &labels).unwrap();
            assert!((host.silhouette - dev.silhouette).abs() < 1e-12, "{} vs {}", host.silhouette, dev.silhouette);
            assert!((host.davies_bouldin - dev.davies_bouldin).abs() < 1e-9 * host.davies_bouldin.max(1.0), "{} vs {}", host.davies_bouldin, dev.davies_bouldin);
            for (a, b) in host.redundancy.iter().zip(&dev.redundancy) {
                assert!((a - b).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn spectral_through_the_device_operator_equals_the_host_path() {
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
