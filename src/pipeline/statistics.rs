//! What one calibration pass records at a linear input: the solver's Hessian always, and
//! what the planner asked for (channel moments, stored tokens). Each batch's Gram product
//! is formed once and given to both the Hessian and the moments.

use super::hessian::{gram_lower_accumulate, running_average_factors, Hessian, HessianAccumulation};
use super::moments::ChannelMoments;
use super::reservoir::Reservoir;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

pub struct SiteStatistics {
    pub hessian: Hessian,
    pub moments: Option<ChannelMoments>,
    pub reservoir: Option<Reservoir>,
}

impl SiteStatistics {
    pub fn new(dim: usize, accumulation: HessianAccumulation, moments: bool, reservoir: Option<Reservoir>) -> Self {
        SiteStatistics {
            hessian: Hessian::new(dim, accumulation),
            moments: moments.then(|| ChannelMoments::new(dim)),
            reservoir,
        }
    }

    /// Before the pass: where H is accumulated in place on a CUDA device, gives it its buffer
    /// now (`spare`, an earlier layer's at this input, where it fits), so that the pass's
    /// temporaries do not take the space first.
    pub fn prepare(&mut self, device: &candle_core::Device, spare: Option<Tensor>) -> Result<()> {
        #[cfg(feature = "cuda")]
        if self.moments.is_none() && device.is_cuda() {
            return self.hessian.start_device_sum(device, spare);
        }
        let _ = (device, spare);
        Ok(())
    }

    /// After the layer: the device buffer H was accumulated in place, for the next layer's
    /// statistics at this input (None where H was not accumulated in place).
    pub fn into_reusable_buffer(self) -> Option<Tensor> {
        if self.moments.is_some() {
            return None;
        }
        self.hessian.into_device_sum()
    }

    /// Adds one batch of inputs, (batch, seq, dim) or (tokens, dim).
    pub fn add(&mut self, x: &Tensor) -> Result<()> {
        let dims = x.dims();
        let d = *dims.last().unwrap_or(&0);
        if d != self.hessian.dim {
            bail!("Hessian input width {d} does not match {}", self.hessian.dim);
        }
        let sequences = if dims.len() == 3 { dims[0] } else { 1 };
        let x2 = x.reshape(((), d))?;
        let tokens = x2.dims()[0];
        if x2.device().is_cpu() {
            let x2 = x2.to_dtype(DType::F32)?;
            // The tensor's own buffer where possible (no copy of a 2048×1024 batch).
            let mut add = |xs: &[f32]| self.add_host(xs, tokens, sequences);
            match crate::model::cpu_kernels::with_host_f32(&x2, &mut add) {
                Some(r) => r?,
                None => add(&x2.flatten_all()?.to_vec1::<f32>()?)?,
            }
        } else {
            self.add_device(&x2, sequences)?;
        }
        if let Some(m) = self.moments.as_mut() {
            m.tokens += tokens;
        }
        self.hessian.sequences += sequences;
        if let Some(r) = self.reservoir.as_mut() {
            r.add(x)?;
        }
        Ok(())
    }

    /// On the host: only the lower block triangle of XᵀX (a symmetric rank-k update), about
    /// half the multiply-adds of the full product.
    fn add_host(&mut self, xs: &[f32], tokens: usize, sequences: usize) -> Result<()> {
        let n = self.hessian.dim;
        let seen = self.hessian.sequences;
        let running = self.hessian.running_average();
        let acc = self.hessian.host_sum()?;
        if running {
            // Sequence by sequence: H ← H·c + (s X)ᵀ(s X), with the reference's f32 factors;
            // the f64 moments get the product unscaled.
            let seq_len = tokens / sequences.max(1);
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
                if let Some(m) = self.moments.as_mut() {
                    m.add_host_product(&batch, 1.0 / (sc as f64 * sc as f64));
                }
            }
        } else {
            match self.moments.as_mut() {
                Some(m) => {
                    let mut batch = vec![0f32; n * n];
                    gram_lower_accumulate(xs, tokens, n, &mut batch);
                    for (a, b) in acc.iter_mut().zip(&batch) {
                        *a += b;
                    }
                    m.add_host_product(&batch, 1.0);
                }
                None => gram_lower_accumulate(xs, tokens, n, acc),
            }
        }
        if let Some(m) = self.moments.as_mut() {
            m.add_host_column_sums(xs);
        }
        Ok(())
    }

    /// On a device: one GEMM per batch, or per sequence for the running average, each added
    /// before the next is formed (at opt-6.7b's fc2 input one product is 1 GiB). Without
    /// moments on CUDA the GEMM accumulates into H in place (`gram_cuda`).
    fn add_device(&mut self, x2: &Tensor, sequences: usize) -> Result<()> {
        #[cfg(feature = "cuda")]
        if self.moments.is_none() && x2.device().is_cuda() {
            return self.add_device_in_place(x2, sequences);
        }
        let x2 = &x2.to_dtype(DType::F32)?;
        let tokens = x2.dims()[0];
        let seq_len = tokens / sequences.max(1);
        let running = self.hessian.running_average();
        let parts = if running { sequences.max(1) } else { 1 };
        for q in 0..parts {
            // (c, s) of the running average; None for the plain sum.
            let factors = running.then(|| running_average_factors(self.hessian.sequences + q));
            let product = match factors {
                Some((_, sc)) => {
                    let xs = (x2.narrow(0, q * seq_len, seq_len)? * sc as f64)?;
                    xs.t()?.matmul(&xs)?
                }
                None => x2.t()?.matmul(x2)?,
            };
            if let Some(m) = self.moments.as_mut() {
                m.add_device_product(&product, factors.map(|(_, sc)| 1.0 / (sc as f64 * sc as f64)))?;
            }
            self.hessian.add_device_product(product, factors.map(|(c, _)| c))?;
        }
        if let Some(m) = self.moments.as_mut() {
            m.add_column_sums(x2)?;
        }
        Ok(())
    }
}

#[cfg(feature = "cuda")]
impl SiteStatistics {
    /// H ← c·H + s²·XᵀX per sequence (running average) or H ← H + XᵀX per batch, as one
    /// cuBLAS GEMM each on the activations as they are (f16 on the GPU), into H's buffer.
    fn add_device_in_place(&mut self, x2: &Tensor, sequences: usize) -> Result<()> {
        let tokens = x2.dims()[0];
        let seq_len = tokens / sequences.max(1);
        let acc = self.hessian.device_sum_buffer(x2.device())?;
        if self.hessian.running_average() {
            // The first sequence's c is 0: the buffer (maybe an earlier H's) is not read.
            for q in 0..sequences.max(1) {
                let (c, sc) = running_average_factors(self.hessian.sequences + q);
                super::gram_cuda::gram_update(&acc, &x2.narrow(0, q * seq_len, seq_len)?, sc * sc, c)?;
            }
        } else {
            // The first update does not read the buffer (it may be an earlier H's).
            let beta = if self.hessian.sequences == 0 { 0.0 } else { 1.0 };
            super::gram_cuda::gram_update(&acc, x2, 1.0, beta)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::HessianSource;

    #[test]
    fn statistics_sum_second_and_first_moments() {
        let x = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], (1, 3, 2), &candle_core::Device::Cpu).unwrap();
        let mut s = SiteStatistics::new(2, HessianAccumulation::Sum, true, None);
        s.add(&x).unwrap();
        let m = s.moments.as_ref().unwrap();
        assert_eq!(m.sum_xxt().unwrap(), vec![35.0, 44.0, 44.0, 56.0]);
        assert_eq!(m.sum_x, vec![9.0, 12.0]);
        assert_eq!((s.hessian.sequences, m.tokens), (1, 3));
        assert_eq!(s.hessian.matrix().unwrap(), vec![70.0, 88.0, 88.0, 112.0]);
        assert_eq!(s.hessian.diagonal().unwrap(), vec![70.0, 112.0], "what the planner sees");
        assert!(s.hessian.device_sum().is_none(), "host sums are not the device solver's input");
        assert_eq!(*s.hessian.host_matrix().unwrap(), s.hessian.matrix().unwrap());
    }

    #[test]
    fn running_average_hessian_equals_the_scaled_sum() {
        // Three sequences in two batches: the reference's add_batch recursion lands on
        // 2/n Σ x xᵀ up to f32 rounding.
        let dev = candle_core::Device::Cpu;
        let x: Vec<f32> = (0..3 * 4 * 3).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        let batches = [
            Tensor::from_vec(x[..24].to_vec(), (2, 4, 3), &dev).unwrap(),
            Tensor::from_vec(x[24..].to_vec(), (1, 4, 3), &dev).unwrap(),
        ];
        let mut summed = SiteStatistics::new(3, HessianAccumulation::Sum, true, None);
        let mut running = SiteStatistics::new(3, HessianAccumulation::RunningAverage, false, None);
        let mut running64 = SiteStatistics::new(3, HessianAccumulation::RunningAverage, true, None);
        for b in &batches {
            summed.add(b).unwrap();
            running.add(b).unwrap();
            running64.add(b).unwrap();
        }
        assert_eq!(running.hessian.scale(), 1.0);
        for (a, b) in running.hessian.matrix().unwrap().iter().zip(summed.hessian.matrix().unwrap()) {
            assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
        assert_eq!(running.hessian.diagonal().unwrap().len(), 3);
        // Σ x xᵀ (what MI statistics read) is kept unscaled in f64 beside the average.
        let sum = summed.moments.as_ref().unwrap().sum_xxt().unwrap();
        for (a, b) in running64.moments.as_ref().unwrap().sum_xxt().unwrap().iter().zip(&sum) {
            assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
        assert_eq!(running64.hessian.matrix().unwrap(), running.hessian.matrix().unwrap(), "the moments leave H alone");
    }
}
