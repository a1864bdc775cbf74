//! What a CUDA device's memory holds, for trace lines, and long-lived data kept in its place.
//!
//! candle allocates through cudarc's `cuMemAllocAsync`, i.e. from the device's stream-ordered
//! memory pool: blocks freed during a layer stay reserved by the pool for later allocations,
//! and nvidia-smi counts all of it. The trace shows the card's memory in use beside what the
//! pool reserves and what of that is allocated, which tells live data from the pool's slack.
//! Data that outlives a step (a layer's weights, the layer loop's inputs) is overwritten in
//! its own buffer (`overwrite`): allocated anew among the step's temporaries, it would strand
//! part of the pool every layer.

use anyhow::Result;
use candle_core::Tensor;

/// Copies `src` into `dst`'s own buffer where they agree (shape, dtype, both contiguous);
/// false where `dst` must be replaced instead. Every handle sharing `dst` sees the new values.
pub fn overwrite(dst: &Tensor, src: &Tensor) -> Result<bool> {
    if dst.id() == src.id() {
        return Ok(true);
    }
    if dst.dims() != src.dims() || dst.dtype() != src.dtype() || !dst.is_contiguous() || !src.is_contiguous() {
        return Ok(false);
    }
    dst.slice_set(src, 0, 0)?;
    Ok(true)
}

/// For trace lines: the memory in use on a CUDA device (all of the card's, as nvidia-smi
/// counts it) and what the pool reserves and hands out; empty for other devices.
pub fn describe(device: &candle_core::Device) -> String {
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(d) = device {
        if let Ok((free, total)) = d.cuda_stream().context().mem_get_info() {
            let pool = cuda::pool_usage(d)
                .map(|(reserved, used)| format!(", pool {} MiB reserved, {} MiB used", reserved >> 20, used >> 20))
                .unwrap_or_default();
            return format!(" [device: {} MiB in use{pool}]", (total - free) >> 20);
        }
    }
    let _ = device;
    String::new()
}

#[cfg(feature = "cuda")]
mod cuda {
    use anyhow::{anyhow, Result};
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    use candle_core::CudaDevice;

    /// (reserved, used) bytes of the device's current memory pool (the one
    /// `cuMemAllocAsync` draws from).
    pub(super) fn pool_usage(d: &CudaDevice) -> Result<(u64, u64)> {
        let ctx = d.cuda_stream().context().clone();
        ctx.bind_to_thread().map_err(|e| anyhow!("CUDA context: {e}"))?;
        // SAFETY: the device handle comes from a live context.
        let pool =
            unsafe { result::device::get_mem_pool(ctx.cu_device()) }.map_err(|e| anyhow!("CUDA memory pool: {e}"))?;
        let read = |attr| {
            let mut v = 0u64;
            // SAFETY: both attributes are cuuint64_t.
            unsafe { result::mem_pool::get_attribute(pool, attr, &mut v as *mut u64 as *mut _) }
                .map(|_| v)
                .map_err(|e| anyhow!("CUDA memory pool: {e}"))
        };
        Ok((
            read(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?,
            read(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn overwrite_writes_into_the_buffer_every_handle_shares() {
        let dev = Device::Cpu;
        let dst = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
        let alias = dst.clone();
        let src = Tensor::arange(0f32, 24., &dev).unwrap().reshape((2, 3, 4)).unwrap();
        assert!(overwrite(&dst, &src).unwrap());
        let want = src.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for t in [&dst, &alias] {
            assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
        }
        assert!(overwrite(&dst, &dst).unwrap(), "a tensor is already its own values");
        // Another shape or dtype, or a strided source: the caller replaces the tensor.
        assert!(!overwrite(&dst, &Tensor::ones((1, 3, 4), DType::F32, &dev).unwrap()).unwrap());
        assert!(!overwrite(&dst, &Tensor::ones((2, 3, 4), DType::F64, &dev).unwrap()).unwrap());
        let strided = Tensor::ones((2, 4, 3), DType::F32, &dev).unwrap().transpose(1, 2).unwrap();
        assert!(!overwrite(&dst, &strided).unwrap());
        assert_eq!(alias.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want, "untouched by refusals");
    }
}
