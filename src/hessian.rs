//! The layer-wise Hessian H = 2/n Σ x xᵀ of a linear's inputs over the calibration set,
//! plus the first moment Σ x (for channel statistics), and the damped Cholesky factor of
//! H⁻¹ that SparseGPT and GPTQ sweep with.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};

/// Running sums over calibration tokens for one linear input.
pub struct HessianAccumulator {
    pub dim: usize,
    /// Σ x xᵀ in f32, as the reference accumulates H.
    sum_xxt: Option<GramSum>,
    /// The same sum in f64, kept only for channel statistics (MI subtracts μμᵀ from it,
    /// where f32 would lose digits). On the device it stays there until read.
    sum_xxt_f64: Option<Vec<f64>>,
    sum_xxt_f64_device: Option<Tensor>,
    keep_f64: bool,
    /// Keep H itself as the reference's `add_batch` does, sequence by sequence in f32:
    /// H ← H · n/(n+1), then H += (√(2/(n+1)) X)ᵀ(√(2/(n+1)) X).
    running_average: bool,
    /// Σ x in f64 (cheap, and means of small activations lose digits in f32).
    pub sum_x: Vec<f64>,
    /// Calibration sequences seen (the reference's `nsamples`, which scales H).
    pub sequences: usize,
    pub tokens: usize,
}

impl HessianAccumulator {
    pub fn new(dim: usize) -> Self {
        HessianAccumulator {
            dim,
            sum_xxt: None,
            sum_xxt_f64: None,
            sum_xxt_f64_device: None,
            keep_f64: false,
            running_average: false,
            sum_x: vec![0.0; dim],
            sequences: 0,
            tokens: 0,
        }
    }

    /// The reference's running average instead of one sum scaled at the end (same H up to
    /// f32 rounding; `--hessian-accumulation`).
    pub fn with_accumulation(self, how: HessianAccumulation) -> Self {
        HessianAccumulator { running_average: how == HessianAccumulation::RunningAverage, ..self }
    }

    /// Also keeps Σ x xᵀ in f64 for the channel statistics.
    pub fn with_f64_moments(dim: usize) -> Self {
        HessianAccumulator { keep_f64: true, ..Self::new(dim) }
    }

    /// Adds one batch of inputs (batch, seq, dim) or (tokens, dim).
    pub fn add(&mut self, x: &Tensor) -> Result<()> {
        let dims = x.dims();
        let d = *dims.last().unwrap_or(&0);
        if d != self.dim {
            bail!("Hessian input width {d} does not match {}", self.dim);
        }
        let sequences = if dims.len() == 3 { dims[0] } else { 1 };
        let x2 = x.reshape(((), d))?.to_dtype(DType::F32)?;
        let tokens = x2.dims()[0];
        let seq_len = tokens / sequences.max(1);
        if x2.device().is_cpu() {
            // On the host: only the lower block triangle of XᵀX (a symmetric rank-k update),
            // about half the multiply-adds of the full product.
            let n = self.dim;
            let acc = match self.sum_xxt.get_or_insert_with(|| GramSum::Host(vec![0.0; n * n])) {
                GramSum::Host(v) => v,
                GramSum::Device(_) => bail!("Hessian inputs moved between devices"),
            };
            let mut acc64 = if self.keep_f64 { Some(self.sum_xxt_f64.get_or_insert_with(|| vec![0.0; n * n])) } else { None };
            let (running, seen) = (self.running_average, self.sequences);
            let sum_x = &mut self.sum_x;
            let mut add = |xs: &[f32]| {
                if running {
                    // Sequence by sequence: H ← H·c + (s X)ᵀ(s X), with the reference's
                    // f32 factors; the f64 moments get the product unscaled.
                    let mut batch = vec![0f32; n * n];
                    let mut scaled = vec![0f32; seq_len * n];
                    for (q, xq) in xs.chunks_exact(seq_len * n).enumerate() {
                        let (c, sc) = running_average_factors(seen + q);
                        scaled.iter_mut().zip(xq).for_each(|(o, &v)| *o = v * sc);
                        batch.iter_mut().for_each(|v| *v = 0.0);
                        gram_lower_accumulate(&scaled, seq_len, n, &mut batch);
                        for (a, &b) in acc.iter_mut().zip(&batch) {
                            *a = *a * c + b;
                        }
                        if let Some(acc64) = acc64.as_deref_mut() {
                            let unscale = 1.0 / (sc as f64 * sc as f64);
                            acc64.iter_mut().zip(&batch).for_each(|(a, &b)| *a += b as f64 * unscale);
                        }
                    }
                } else {
                    match acc64.as_deref_mut() {
                        Some(acc64) => {
                            let mut batch = vec![0f32; n * n];
                            gram_lower_accumulate(xs, tokens, n, &mut batch);
                            for ((a, a64), b) in acc.iter_mut().zip(acc64.iter_mut()).zip(&batch) {
                                *a += b;
                                *a64 += *b as f64;
                            }
                        }
                        None => gram_lower_accumulate(xs, tokens, n, acc),
                    }
                }
                for (a, col) in sum_x.iter_mut().zip(column_sums(xs, n)) {
                    *a += col;
                }
            };
            // The tensor's own buffer where possible (no copy of a 2048×1024 batch).
            if crate::cpu_kernels::with_host_f32(&x2, &mut add).is_none() {
                add(&x2.flatten_all()?.to_vec1::<f32>()?);
            }
        } else {
            // On a device: one GEMM per batch, or per sequence for the running average, each
            // added before the next is formed (at opt-6.7b's fc2 input one product is 1 GiB).
            let parts = if self.running_average { sequences.max(1) } else { 1 };
            for q in 0..parts {
                // (c, s) of the running average; None for the plain sum.
                let factors = self.running_average.then(|| running_average_factors(self.sequences + q));
                let xxt = match factors {
                    Some((_, sc)) => {
                        let xs = (x2.narrow(0, q * seq_len, seq_len)? * sc as f64)?;
                        xs.t()?.matmul(&xs)?
                    }
                    None => x2.t()?.matmul(&x2)?,
                };
                if self.keep_f64 {
                    let batch = xxt.to_dtype(DType::F64)?;
                    let batch = match factors {
                        Some((_, sc)) => (batch * (1.0 / (sc as f64 * sc as f64)))?,
                        None => batch,
                    };
                    self.sum_xxt_f64_device = Some(match self.sum_xxt_f64_device.take() {
                        Some(acc) => (acc + batch)?,
                        None => batch,
                    });
                }
                self.sum_xxt = Some(match (self.sum_xxt.take(), factors) {
                    (Some(GramSum::Device(acc)), Some((c, _))) => GramSum::Device(((acc * c as f64)? + xxt)?),
                    (Some(GramSum::Device(acc)), None) => GramSum::Device((acc + xxt)?),
                    (None, _) => GramSum::Device(xxt),
                    (Some(GramSum::Host(_)), _) => bail!("Hessian inputs moved between devices"),
                });
            }
            self.add_column_sums(&x2)?;
        }
        self.tokens += tokens;
        self.sequences += sequences;
        Ok(())
    }

    /// Σ x += the column sums of a tensor (tokens × dim), taken where it lives.
    fn add_column_sums(&mut self, x2: &Tensor) -> Result<()> {
        let sx: Vec<f32> = x2.sum(0)?.to_vec1()?;
        for (a, b) in self.sum_x.iter_mut().zip(sx) {
            *a += b as f64;
        }
        Ok(())
    }

    /// The f32 Σ x xᵀ where it is accumulated on a device (CUDA runs), as a d × d tensor:
    /// what the device solver scales by `hessian_scale` into H.
    pub fn sum_xxt_f32_device(&self) -> Option<&Tensor> {
        match &self.sum_xxt {
            Some(GramSum::Device(t)) => Some(t),
            _ => None,
        }
    }

    /// 2 / nsamples, the factor from Σ x xᵀ to the reference's H (1 where H itself is kept).
    pub fn hessian_scale(&self) -> f64 {
        if self.running_average {
            1.0
        } else {
            2.0 / self.sequences as f64
        }
    }

    /// The diagonal of `hessian()`, without forming the matrix on the host.
    pub fn hessian_diagonal(&self) -> Result<Vec<f64>> {
        let n = self.dim;
        let diag: Vec<f64> = match &self.sum_xxt {
            Some(GramSum::Device(t)) => diagonal(t)?.to_dtype(DType::F64)?.to_vec1()?,
            Some(GramSum::Host(v)) => (0..n).map(|j| v[j * n + j] as f64).collect(),
            None => bail!("no calibration data reached this layer"),
        };
        let scale = self.hessian_scale();
        Ok(diag.into_iter().map(|v| v * scale).collect())
    }

    /// The f64 Σ x xᵀ where it is kept on a device (CUDA runs), as a d × d tensor.
    pub fn sum_xxt_device(&self) -> Option<&Tensor> {
        self.sum_xxt_f64_device.as_ref()
    }

    /// Σ x xᵀ as a row-major f64 matrix: the f64 sum where kept, else the f32 one.
    pub fn sum_xxt(&self) -> Result<Vec<f64>> {
        if let Some(t) = &self.sum_xxt_f64_device {
            return Ok(t.flatten_all()?.to_vec1()?);
        }
        match (&self.sum_xxt_f64, &self.sum_xxt) {
            (Some(v), Some(GramSum::Host(_))) => Ok(symmetric_from_lower(v.clone(), self.dim)),
            (Some(v), _) => Ok(v.clone()),
            // The running average holds H = 2/n Σ x xᵀ.
            (None, Some(sum)) if self.running_average => Ok(sum.to_f64(self.dim)?.into_iter().map(|v| v * self.sequences as f64 / 2.0).collect()),
            (None, Some(sum)) => sum.to_f64(self.dim),
            (None, None) => bail!("no calibration data reached this layer"),
        }
    }

    /// H = 2/nsamples · Σ x xᵀ, the scale SparseGPT's `add_batch` arrives at: kept as its
    /// running average (the reference's order, the default), or summed and scaled once
    /// (the same quantity, other rounding).
    pub fn hessian(&self) -> Result<Vec<f64>> {
        let scale = self.hessian_scale();
        let sum = match &self.sum_xxt {
            Some(sum) => sum.to_f64(self.dim)?,
            None => bail!("no calibration data reached this layer"),
        };
        Ok(sum.into_iter().map(|v| v * scale).collect())
    }
}

/// The reference's `add_batch` factors for the sequence after `seen` others: H is first
/// multiplied by c = seen/(seen+1), then the sequence enters as (s X)ᵀ(s X) with
/// s = √(2/(seen+1)); both are f32 scalars there (torch applies Python floats to f32
/// tensors in f32).
fn running_average_factors(seen: usize) -> (f32, f32) {
    let n = seen as f64;
    ((n / (n + 1.0)) as f32, (2.0 / (n + 1.0)).sqrt() as f32)
}

/// Σ x xᵀ in f32: a tensor on the compute device, or on the host only its lower triangle
/// is valid (see `gram_lower_accumulate`).
enum GramSum {
    Device(Tensor),
    Host(Vec<f32>),
}

impl GramSum {
    fn to_f64(&self, n: usize) -> Result<Vec<f64>> {
        Ok(match self {
            GramSum::Device(t) => t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?,
            GramSum::Host(v) => symmetric_from_lower(v.iter().map(|&x| x as f64).collect(), n),
        })
    }
}

/// Row-panel height of the blocked Gram product: 64-row panels keep the computed part
/// close to the lower half while each panel is a well-shaped GEMM (measured on 2 cores:
/// 32 is 2× slower, 128 no faster).
const GRAM_TILE: usize = 64;

use crate::cpu_kernels::{TilePtr, View};

/// acc += XᵀX for row-major X (tokens × n), computing only the tiles on and below the
/// diagonal (entries strictly above the diagonal tiles are left untouched; read the
/// lower triangle). Tiles are independent GEMMs, run in parallel.
pub fn gram_lower_accumulate(x: &[f32], tokens: usize, n: usize, acc: &mut [f32]) {
    use rayon::prelude::*;
    assert_eq!(x.len(), tokens * n);
    assert_eq!(acc.len(), n * n);
    let tiles = n.div_ceil(GRAM_TILE);
    let dst = TilePtr(acc.as_mut_ptr());
    // One GEMM per row panel: rows r0..r0+64 against columns 0..r0+64. Largest panels first.
    (0..tiles).rev().collect::<Vec<_>>().into_par_iter().for_each(|bi| {
        let r0 = bi * GRAM_TILE;
        let rows = GRAM_TILE.min(n - r0);
        let cols = r0 + rows;
        unsafe {
            // acc[r0.., 0..cols] (rows × cols) += X[:, r0..]ᵀ (rows × tokens) · X[:, ..cols] (tokens × cols)
            crate::cpu_kernels::gemm_into(
                (rows, cols, tokens),
                dst.at(r0 * n),
                n,
                true,
                View::transposed(x.as_ptr().add(r0), n),
                View::rows(x.as_ptr(), n),
                1.0,
                gemm::Parallelism::None,
            );
        }
    });
}

/// Fills the upper triangle of a row-major n×n matrix from its lower triangle.
fn symmetric_from_lower(mut m: Vec<f64>, n: usize) -> Vec<f64> {
    for i in 0..n {
        for j in 0..i {
            m[j * n + i] = m[i * n + j];
        }
    }
    m
}

/// Σ over rows of a row-major (rows × n) matrix, per column, in f64.
fn column_sums(x: &[f32], n: usize) -> Vec<f64> {
    let mut sums = vec![0f64; n];
    for row in x.chunks_exact(n) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += v as f64;
        }
    }
    sums
}

/// The diagonal of a square tensor, gathered where it lives (one vector comes back, not the
/// matrix).
pub fn diagonal(t: &Tensor) -> Result<Tensor> {
    let n = t.dims2()?.0;
    let idx = Tensor::from_vec((0..n).map(|j| (j * (n + 1)) as u32).collect::<Vec<_>>(), n, t.device())?;
    Ok(t.flatten_all()?.index_select(&idx, 0)?)
}

/// Columns whose inputs were always zero (H_jj = 0).
pub fn dead_columns(h: &[f64], n: usize) -> Vec<bool> {
    (0..n).map(|j| h[j * n + j] == 0.0).collect()
}

/// The reference's preparation of H, in place: dead diagonals set to 1, then
/// `percdamp · mean(diag H)` added to the diagonal.
pub fn dampen(h: &mut [f64], n: usize, percdamp: f64) {
    for j in 0..n {
        if h[j * n + j] == 0.0 {
            h[j * n + j] = 1.0;
        }
    }
    let mean_diag = (0..n).map(|j| h[j * n + j]).sum::<f64>() / n as f64;
    let damp = percdamp * mean_diag;
    for j in 0..n {
        h[j * n + j] += damp;
    }
}

/// How H = 2/n Σ x xᵀ is accumulated over the calibration sequences.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HessianAccumulation {
    /// As the published `add_batch`: a running average, rescaled after every sequence, in f32.
    #[default]
    RunningAverage,
    /// One f32 sum, scaled once at the end: the same H with other rounding.
    Sum,
}

/// Precision of the H⁻¹ factorisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HinvPrecision {
    /// As the reference (torch.linalg.cholesky on f32): reproduces its decisions most closely.
    F32,
    /// Less rounding in the factorisation; on 2–3-bit runs this flips near-tied decisions
    /// and moves PPL by up to a few percent either way on the test models.
    F64,
}

/// Upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ U), row-major: the reference's
/// `cholesky(cholesky_inverse(cholesky(H)), upper=True)` on an already damped H, in the
/// chosen precision (the reference uses f32).
pub fn inverse_cholesky_upper_in(h: &[f64], n: usize, precision: HinvPrecision) -> Result<Vec<f64>> {
    match precision {
        HinvPrecision::F64 => inverse_cholesky_upper(h, n),
        HinvPrecision::F32 => {
            let m = Mat::<f32>::from_fn(n, n, |i, j| h[i * n + j] as f32);
            let u = upper_factor_of_inverse(m)?;
            Ok(u.into_iter().map(|x| x as f64).collect())
        }
    }
}

fn upper_factor_of_inverse<T: faer::traits::RealField + Copy>(m: Mat<T>) -> Result<Vec<T>> {
    let n = m.nrows();
    let llt = m.llt(Side::Lower).map_err(|_| {
        anyhow::anyhow!("Hessian is not positive definite even after damping; raise --percdamp (e.g. 0.1)")
    })?;
    let inv = llt.inverse();
    let llt_inv = inv.llt(Side::Lower).map_err(|_| {
        anyhow::anyhow!("inverse Hessian lost positive definiteness; raise --percdamp (e.g. 0.1)")
    })?;
    let l = llt_inv.L();
    // U = Lᵀ: row i of U is column i of L.
    let mut u = vec![T::zero(); n * n];
    for i in 0..n {
        for j in i..n {
            u[i * n + j] = l[(j, i)];
        }
    }
    Ok(u)
}

/// Upper Cholesky factor of H⁻¹ in f64.
pub fn inverse_cholesky_upper(h: &[f64], n: usize) -> Result<Vec<f64>> {
    upper_factor_of_inverse(Mat::<f64>::from_fn(n, n, |i, j| h[i * n + j]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_factor_reconstructs_the_inverse() {
        // H = A Aᵀ + I, a small SPD matrix.
        let n = 5;
        let a: Vec<f64> = (0..n * n).map(|k| ((k * 7 % 11) as f64 - 5.0) / 3.0).collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..n).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>() + if i == j { 1.0 } else { 0.0 };
            }
        }
        let u = inverse_cholesky_upper(&h, n).unwrap();
        // (Uᵀ U) H = I
        for i in 0..n {
            for j in 0..n {
                let hinv_ij = |r: usize, c: usize| (0..n).map(|k| u[k * n + r] * u[k * n + c]).sum::<f64>();
                let prod: f64 = (0..n).map(|k| hinv_ij(i, k) * h[k * n + j]).sum();
                assert!((prod - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9, "({i},{j}) = {prod}");
            }
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0, "U is upper triangular");
            }
        }
    }

    #[test]
    fn dampening_fixes_dead_inputs_and_adds_relative_damp() {
        let mut h = vec![4.0, 0.0, 0.0, 0.0];
        dampen(&mut h, 2, 0.01);
        // dead → 1, mean diag = 2.5, damp = 0.025
        assert_eq!(h, vec![4.025, 0.0, 0.0, 1.025]);
    }

    #[test]
    fn accumulator_sums_second_and_first_moments() {
        let x = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], (1, 3, 2), &candle_core::Device::Cpu).unwrap();
        let mut acc = HessianAccumulator::with_f64_moments(2);
        acc.add(&x).unwrap();
        assert_eq!(acc.sum_xxt().unwrap(), vec![35.0, 44.0, 44.0, 56.0]);
        assert_eq!(acc.sum_x, vec![9.0, 12.0]);
        assert_eq!((acc.sequences, acc.tokens), (1, 3));
        assert_eq!(acc.hessian().unwrap(), vec![70.0, 88.0, 88.0, 112.0]);
        assert_eq!(acc.hessian_diagonal().unwrap(), vec![70.0, 112.0], "what the planner sees");
        assert!(acc.sum_xxt_f32_device().is_none(), "host sums are not the device solver's input");
    }

    #[test]
    fn running_average_hessian_equals_the_scaled_sum() {
        // Three sequences in two batches: the reference's add_batch recursion lands on
        // 2/n Σ x xᵀ up to f32 rounding.
        let dev = candle_core::Device::Cpu;
        let x: Vec<f32> = (0..3 * 4 * 3).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        let batches = [Tensor::from_vec(x[..24].to_vec(), (2, 4, 3), &dev).unwrap(), Tensor::from_vec(x[24..].to_vec(), (1, 4, 3), &dev).unwrap()];
        let mut summed = HessianAccumulator::new(3);
        let mut running = HessianAccumulator::new(3).with_accumulation(HessianAccumulation::RunningAverage);
        for b in &batches {
            summed.add(b).unwrap();
            running.add(b).unwrap();
        }
        assert_eq!(running.hessian_scale(), 1.0);
        for (a, b) in running.hessian().unwrap().iter().zip(summed.hessian().unwrap()) {
            assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
        assert_eq!(running.hessian_diagonal().unwrap().len(), 3);
        // Σ x xᵀ (what MI statistics read) is recovered from the average, and kept unscaled
        // in f64 beside it.
        let mut running64 = HessianAccumulator::with_f64_moments(3).with_accumulation(HessianAccumulation::RunningAverage);
        for b in &batches {
            running64.add(b).unwrap();
        }
        let sum = summed.sum_xxt().unwrap();
        for got in [running.sum_xxt().unwrap(), running64.sum_xxt().unwrap()] {
            for (a, b) in got.iter().zip(&sum) {
                assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "{a} vs {b}");
            }
        }
        assert_eq!(running64.hessian().unwrap(), running.hessian().unwrap(), "the f64 moments leave H alone");
    }

    #[test]
    fn blocked_lower_gram_equals_full_product_across_tiles() {
        // n spans two tiles, the second partial; accumulate twice.
        let (tokens, n) = (37, GRAM_TILE + 9);
        let x: Vec<f32> = (0..tokens * n).map(|i| ((i * 7919 % 1013) as f32 / 506.5) - 1.0).collect();
        let mut acc = vec![0f32; n * n];
        gram_lower_accumulate(&x, tokens, n, &mut acc);
        gram_lower_accumulate(&x, tokens, n, &mut acc);
        let full = symmetric_from_lower(acc.iter().map(|&v| v as f64).collect(), n);
        for i in 0..n {
            for j in 0..n {
                let want: f64 = 2.0 * (0..tokens).map(|t| x[t * n + i] as f64 * x[t * n + j] as f64).sum::<f64>();
                assert!((full[i * n + j] - want).abs() < 1e-4 * want.abs().max(1.0), "({i},{j}): {} vs {want}", full[i * n + j]);
            }
        }
    }
}
