//! The layer-wise Hessian H = 2/n Σ x xᵀ of a linear's inputs over the calibration
//! sequences, accumulated in f32 as the reference does: as its running average (the
//! published `add_batch`, the default) or as one sum scaled at the end.

use crate::model::cpu_kernels::{TilePtr, View};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// How H = 2/n Σ x xᵀ is accumulated over the calibration sequences.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HessianAccumulation {
    /// As the published `add_batch`: a running average, rescaled after every sequence, in f32.
    #[default]
    RunningAverage,
    /// One f32 sum, scaled once at the end: the same H with other rounding.
    Sum,
}

/// H of one linear input, as it is accumulated.
pub struct Hessian {
    pub dim: usize,
    accumulation: HessianAccumulation,
    /// The f32 Gram sum (or running average), where it is accumulated.
    sum: Option<GramSum>,
    /// Calibration sequences seen (the reference's `nsamples`, which scales H).
    pub sequences: usize,
    /// H as a host f64 matrix, formed on first use.
    host: OnceLock<Arc<Vec<f64>>>,
    /// Set when the device sum was handed to its last reader, whose solve overwrites it with
    /// H⁻¹'s factor: later reads of the sum fail instead of seeing that.
    overwritten: AtomicBool,
}

/// Σ x xᵀ in f32: a tensor on the compute device, or on the host only its lower triangle
/// is valid (see `gram_lower_accumulate`).
enum GramSum {
    Device(Tensor),
    Host(Vec<f32>),
}

impl Hessian {
    pub fn new(dim: usize, accumulation: HessianAccumulation) -> Self {
        Hessian {
            dim,
            accumulation,
            sum: None,
            sequences: 0,
            host: OnceLock::new(),
            overwritten: AtomicBool::new(false),
        }
    }

    pub fn running_average(&self) -> bool {
        self.accumulation == HessianAccumulation::RunningAverage
    }

    /// The host lower-triangle sum, created on first use.
    pub(crate) fn host_sum(&mut self) -> Result<&mut Vec<f32>> {
        let n = self.dim;
        match self.sum.get_or_insert_with(|| GramSum::Host(vec![0.0; n * n])) {
            GramSum::Host(v) => Ok(v),
            GramSum::Device(_) => bail!("Hessian inputs moved between devices"),
        }
    }

    /// Adds one f32 Gram product on the device: H ← H·c + product (running average, `c`
    /// given) or H ← H + product.
    pub(crate) fn add_device_product(&mut self, product: Tensor, c: Option<f32>) -> Result<()> {
        self.sum = Some(match (self.sum.take(), c) {
            (Some(GramSum::Device(acc)), Some(c)) => GramSum::Device(((acc * c as f64)? + product)?),
            (Some(GramSum::Device(acc)), None) => GramSum::Device((acc + product)?),
            (None, _) => GramSum::Device(product),
            (Some(GramSum::Host(_)), _) => bail!("Hessian inputs moved between devices"),
        });
        Ok(())
    }

    /// Gives H its device buffer to accumulate into in place before the first update: `spare`
    /// (an earlier H's buffer of the same width, whose contents the first update never reads)
    /// where it fits, a new zero one otherwise. No-op once H has a sum.
    #[cfg(feature = "cuda")]
    pub(crate) fn start_device_sum(&mut self, device: &candle_core::Device, spare: Option<Tensor>) -> Result<()> {
        if self.sum.is_none() {
            let n = self.dim;
            let buffer = match spare {
                Some(t) if t.dims() == [n, n] && t.dtype() == DType::F32 && t.device().same_device(device) => t,
                _ => Tensor::zeros((n, n), DType::F32, device)?,
            };
            self.sum = Some(GramSum::Device(buffer));
        }
        Ok(())
    }

    /// The device sum to accumulate into in place, created (zero) on first use.
    #[cfg(feature = "cuda")]
    pub(crate) fn device_sum_buffer(&mut self, device: &candle_core::Device) -> Result<Tensor> {
        self.start_device_sum(device, None)?;
        match &self.sum {
            Some(GramSum::Device(t)) => Ok(t.clone()),
            _ => bail!("Hessian inputs moved between devices"),
        }
    }

    /// The device tensor the sum lives in, for reuse as another H's buffer (its contents are
    /// H, or H⁻¹'s factor where the last reader overwrote it).
    pub(crate) fn into_device_sum(self) -> Option<Tensor> {
        match self.sum {
            Some(GramSum::Device(t)) => Some(t),
            _ => None,
        }
    }

    /// 2 / nsamples, the factor from the kept sum to H (1 where H itself is kept).
    pub fn scale(&self) -> f64 {
        if self.running_average() {
            1.0
        } else {
            2.0 / self.sequences as f64
        }
    }

    /// The diagonal of H, without forming the matrix on the host.
    pub fn diagonal(&self) -> Result<Vec<f64>> {
        self.check_not_overwritten()?;
        let n = self.dim;
        let diag: Vec<f64> = match &self.sum {
            Some(GramSum::Device(t)) => crate::solver::hinv::diagonal(t)?.to_dtype(DType::F64)?.to_vec1()?,
            Some(GramSum::Host(v)) => (0..n).map(|j| v[j * n + j] as f64).collect(),
            None => bail!("no calibration data reached this layer"),
        };
        let scale = self.scale();
        Ok(diag.into_iter().map(|v| v * scale).collect())
    }

    /// What is not finite in the accumulated sum, if anything (one reduction where it lives;
    /// on the host only the lower triangle is read, the part that is accumulated).
    pub fn non_finite(&self) -> Result<Option<String>> {
        let n = self.dim;
        Ok(match &self.sum {
            Some(GramSum::Device(t)) => {
                (!crate::numerics::all_finite(t)?).then(|| crate::numerics::describe_non_finite(t))
            }
            Some(GramSum::Host(v)) => (!crate::numerics::all_finite_f32(v)).then(|| {
                let lower = symmetric_from_lower(v.iter().map(|&x| x as f64).collect(), n);
                crate::numerics::describe_values(&lower, &[n, n])
            }),
            None => None,
        })
    }

    fn check_not_overwritten(&self) -> Result<()> {
        if self.overwritten.load(Ordering::Acquire) {
            bail!("the Hessian was read after its last linear's solve overwrote it");
        }
        Ok(())
    }

    /// H = 2/nsamples · Σ x xᵀ as a row-major f64 host matrix.
    pub fn matrix(&self) -> Result<Vec<f64>> {
        self.check_not_overwritten()?;
        let n = self.dim;
        let sum = match &self.sum {
            Some(GramSum::Device(t)) => t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?,
            Some(GramSum::Host(v)) => symmetric_from_lower(v.iter().map(|&x| x as f64).collect(), n),
            None => bail!("no calibration data reached this layer"),
        };
        let scale = self.scale();
        Ok(sum.into_iter().map(|v| v * scale).collect())
    }
}

impl crate::solver::HessianSource for Hessian {
    fn device_sum(&self) -> Option<(&Tensor, f64)> {
        match &self.sum {
            Some(GramSum::Device(t)) if !self.overwritten.load(Ordering::Acquire) => Some((t, self.scale())),
            _ => None,
        }
    }

    fn hand_over_device_sum(&self) {
        self.overwritten.store(true, Ordering::Release);
    }

    fn host_matrix(&self) -> Result<Arc<Vec<f64>>> {
        if let Some(h) = self.host.get() {
            return Ok(h.clone());
        }
        let h = Arc::new(self.matrix()?);
        Ok(self.host.get_or_init(|| h).clone())
    }
}

/// The reference's `add_batch` factors for the sequence after `seen` others: H is first
/// multiplied by c = seen/(seen+1), then the sequence enters as (s X)ᵀ(s X) with
/// s = √(2/(seen+1)); both are f32 scalars there (torch applies Python floats to f32
/// tensors in f32).
pub(crate) fn running_average_factors(seen: usize) -> (f32, f32) {
    let n = seen as f64;
    ((n / (n + 1.0)) as f32, (2.0 / (n + 1.0)).sqrt() as f32)
}

/// Row-panel height of the blocked Gram product: 64-row panels keep the computed part
/// close to the lower half while each panel is a well-shaped GEMM (shorter panels are
/// slower, taller ones no faster).
const GRAM_TILE: usize = 64;

/// acc += XᵀX for row-major X (tokens × n), computing only the tiles on and below the
/// diagonal (entries strictly above the diagonal tiles are left untouched; read the
/// lower triangle). Tiles are independent GEMMs, each on one thread, run in parallel: the
/// result does not depend on the thread count.
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
            crate::model::cpu_kernels::gemm_into(
                (rows, cols, tokens),
                crate::model::cpu_kernels::Dest { ptr: dst.at(r0 * n), ld: n, accumulate: true },
                View::transposed(x.as_ptr().add(r0), n),
                View::rows(x.as_ptr(), n),
                1.0,
                gemm::Parallelism::None,
            );
        }
    });
}

/// Fills the upper triangle of a row-major n×n matrix from its lower triangle.
pub(crate) fn symmetric_from_lower(mut m: Vec<f64>, n: usize) -> Vec<f64> {
    for i in 0..n {
        for j in 0..i {
            m[j * n + i] = m[i * n + j];
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

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
                assert!(
                    (full[i * n + j] - want).abs() < 1e-4 * want.abs().max(1.0),
                    "({i},{j}): {} vs {want}",
                    full[i * n + j]
                );
            }
        }
    }

    #[test]
    fn running_average_factors_land_on_two_over_n() {
        // c·(previous) + s²·x: after n sequences of the same x, H = 2·x.
        let mut h = 0f32;
        for seen in 0..5 {
            let (c, s) = running_average_factors(seen);
            h = h * c + (s * 3.0) * (s * 3.0);
        }
        assert!((h - 2.0 * 9.0).abs() < 1e-5, "{h}");
    }
}
