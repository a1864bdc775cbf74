//! Channel moments of a linear's inputs, for the mixed-precision planners: Σ x xᵀ and Σ x in
//! f64 (MI subtracts μμᵀ from the second moment, where f32 would lose digits), and the
//! token count.

use super::hessian::symmetric_from_lower;
use anyhow::Result;
use candle_core::{DType, Tensor};

pub struct ChannelMoments {
    pub dim: usize,
    sum_xxt: Option<SecondMoment>,
    /// Σ x in f64 (means of small activations lose digits in f32).
    pub sum_x: Vec<f64>,
    pub tokens: usize,
}

/// Σ x xᵀ in f64: on the host only its lower triangle is valid; on a device it stays there
/// until read.
enum SecondMoment {
    Host(Vec<f64>),
    Device(Tensor),
}

impl ChannelMoments {
    pub fn new(dim: usize) -> Self {
        ChannelMoments { dim, sum_xxt: None, sum_x: vec![0.0; dim], tokens: 0 }
    }

    /// Σ x xᵀ += `unscale` · product, for an f32 lower-triangle Gram product on the host
    /// (the one the Hessian was given, scaled by s: `unscale` = 1/s² undoes that).
    pub(crate) fn add_host_product(&mut self, product: &[f32], unscale: f64) {
        let n = self.dim;
        let acc = match self.sum_xxt.get_or_insert_with(|| SecondMoment::Host(vec![0.0; n * n])) {
            SecondMoment::Host(v) => v,
            SecondMoment::Device(_) => unreachable!("moments moved between devices"),
        };
        acc.iter_mut().zip(product).for_each(|(a, &b)| *a += b as f64 * unscale);
    }

    /// The same for a device product (an f32 tensor), kept in f64 on the device.
    pub(crate) fn add_device_product(&mut self, product: &Tensor, unscale: Option<f64>) -> Result<()> {
        let batch = product.to_dtype(DType::F64)?;
        let batch = match unscale {
            Some(u) => (batch * u)?,
            None => batch,
        };
        self.sum_xxt = Some(match self.sum_xxt.take() {
            Some(SecondMoment::Device(acc)) => SecondMoment::Device((acc + batch)?),
            None => SecondMoment::Device(batch),
            Some(SecondMoment::Host(_)) => anyhow::bail!("moments moved between devices"),
        });
        Ok(())
    }

    /// Σ x += the column sums of row-major host rows (tokens × dim), summed per batch first.
    pub(crate) fn add_host_column_sums(&mut self, x: &[f32]) {
        let mut sums = vec![0f64; self.dim];
        for row in x.chunks_exact(self.dim) {
            for (s, &v) in sums.iter_mut().zip(row) {
                *s += v as f64;
            }
        }
        for (a, s) in self.sum_x.iter_mut().zip(sums) {
            *a += s;
        }
    }

    /// Σ x += the column sums of a (tokens × dim) tensor, taken where it lives.
    pub(crate) fn add_column_sums(&mut self, x2: &Tensor) -> Result<()> {
        let sx: Vec<f32> = x2.sum(0)?.to_vec1()?;
        for (a, b) in self.sum_x.iter_mut().zip(sx) {
            *a += b as f64;
        }
        Ok(())
    }

    /// The f64 Σ x xᵀ where it is kept on a device (CUDA runs), as a d × d tensor.
    pub fn sum_xxt_device(&self) -> Option<&Tensor> {
        match &self.sum_xxt {
            Some(SecondMoment::Device(t)) => Some(t),
            _ => None,
        }
    }

    /// Σ x xᵀ as a row-major f64 host matrix.
    pub fn sum_xxt(&self) -> Result<Vec<f64>> {
        match &self.sum_xxt {
            Some(SecondMoment::Device(t)) => Ok(t.flatten_all()?.to_vec1()?),
            Some(SecondMoment::Host(v)) => Ok(symmetric_from_lower(v.clone(), self.dim)),
            None => anyhow::bail!("no calibration data reached this layer"),
        }
    }
}
