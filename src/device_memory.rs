//! What a CUDA device's memory holds, for trace lines.
//!
//! candle allocates through cudarc's `cuMemAllocAsync`, i.e. from the device's stream-ordered
//! memory pool: blocks freed during a layer stay reserved by the pool for later allocations,
//! and nvidia-smi counts all of it. The trace shows the card's memory in use beside what the
//! pool reserves and what of that is allocated, which tells live data from the pool's slack.

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
