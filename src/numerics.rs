//! Finite checks on tensors and host buffers: one reduction per tensor, where it lives, so a
//! NaN or Inf stops a run where it first appears instead of reaching a result file.

use anyhow::Result;
use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

/// Elements per parallel task of the host scans (the answer does not depend on it).
const SCAN_CHUNK: usize = 1 << 16;

/// Whether every value of a host f32 buffer is finite.
pub fn all_finite_f32(v: &[f32]) -> bool {
    v.par_chunks(SCAN_CHUNK).all(|c| c.iter().all(|x| x.is_finite()))
}

/// Whether every value of a host f64 buffer is finite.
pub fn all_finite_f64(v: &[f64]) -> bool {
    v.par_chunks(SCAN_CHUNK).all(|c| c.iter().all(|x| x.is_finite()))
}

/// Whether every value of `t` is finite (integer tensors always are). Host tensors are
/// scanned in place; device tensors reduce there, as Σ (t · 0), which is 0 for finite values
/// and NaN as soon as one is NaN or ±Inf (one scalar comes back).
pub fn all_finite(t: &Tensor) -> Result<bool> {
    if !t.dtype().is_float() {
        return Ok(true);
    }
    if t.device().is_cpu() {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            let scanned = match t.dtype() {
                DType::F32 => cpu.as_slice::<f32>().ok().map(|d| all_finite_f32(&d[start..end])),
                DType::F64 => cpu.as_slice::<f64>().ok().map(|d| all_finite_f64(&d[start..end])),
                DType::F16 => cpu
                    .as_slice::<half::f16>()
                    .ok()
                    .map(|d| d[start..end].par_chunks(SCAN_CHUNK).all(|c| c.iter().all(|x| x.is_finite()))),
                DType::BF16 => cpu
                    .as_slice::<half::bf16>()
                    .ok()
                    .map(|d| d[start..end].par_chunks(SCAN_CHUNK).all(|c| c.iter().all(|x| x.is_finite()))),
                _ => None,
            };
            if let Some(ok) = scanned {
                return Ok(ok);
            }
        }
    }
    let probe = t.affine(0.0, 0.0)?.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    Ok(probe.is_finite())
}

/// What is not finite in `t`, for an error message (read back to the host: only called
/// once a check has failed): "2 NaN and 1 Inf of 4096 values, the first at [3, 17]".
pub fn describe_non_finite(t: &Tensor) -> String {
    let values = match t.to_dtype(DType::F64).and_then(|v| v.flatten_all()).and_then(|v| v.to_vec1::<f64>()) {
        Ok(v) => v,
        Err(_) => return "NaN or Inf values".to_string(),
    };
    describe_values(&values, t.dims())
}

/// `describe_non_finite` for a host buffer of shape `dims`.
pub fn describe_values(values: &[f64], dims: &[usize]) -> String {
    let nan = values.iter().filter(|v| v.is_nan()).count();
    let inf = values.iter().filter(|v| v.is_infinite()).count();
    let first = values.iter().position(|v| !v.is_finite());
    let mut what = match (nan, inf) {
        (n, 0) => format!("{n} NaN"),
        (0, i) => format!("{i} Inf"),
        (n, i) => format!("{n} NaN and {i} Inf"),
    };
    what.push_str(&format!(" of {} values", values.len()));
    if let Some(mut k) = first {
        let mut index = vec![0; dims.len()];
        for (slot, &d) in index.iter_mut().zip(dims).rev() {
            *slot = k % d.max(1);
            k /= d.max(1);
        }
        what.push_str(&format!(", the first at {index:?}"));
    }
    what
}

/// max(a, b) that is NaN when either is (torch's `max`; `f32::max` drops a NaN).
#[inline]
pub fn nan_max(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn non_finite_values_are_found_in_every_float_dtype() {
        let dev = Device::Cpu;
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut v = vec![1.0f32; 300_000];
            v[200_001] = bad;
            let t = Tensor::from_vec(v, (1000, 300), &dev).unwrap();
            for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
                let t = t.to_dtype(dtype).unwrap();
                assert!(!all_finite(&t).unwrap(), "{dtype:?} {bad}");
                // Strided (not contiguous): the generic reduction.
                assert!(!all_finite(&t.t().unwrap()).unwrap(), "{dtype:?} {bad} transposed");
            }
            let what = describe_non_finite(&t);
            assert!(what.contains("the first at [666, 201]"), "{what}");
        }
        let fine = Tensor::from_vec(vec![65504.0f32; 10_000], 10_000, &dev).unwrap().to_dtype(DType::F16).unwrap();
        assert!(all_finite(&fine).unwrap(), "large but finite f16 values sum to Inf, and are finite");
        assert!(all_finite(&fine.reshape((100, 100)).unwrap().t().unwrap()).unwrap());
        assert!(all_finite(&Tensor::new(&[1u32, 2], &dev).unwrap()).unwrap());
    }

    #[test]
    fn nan_max_keeps_nan_from_either_side() {
        assert!(nan_max(f32::NAN, 1.0).is_nan());
        assert!(nan_max(1.0, f32::NAN).is_nan());
        assert_eq!(nan_max(1.0, 2.0), 2.0);
        assert_eq!(nan_max(f32::NEG_INFINITY, -3.0), -3.0);
        assert!([1.0, f32::NAN, 3.0].into_iter().fold(f32::NEG_INFINITY, nan_max).is_nan());
    }
}
