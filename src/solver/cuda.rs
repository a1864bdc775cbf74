//! The one-shot solver on a CUDA device: `host::solve` in the reference's lazy block order.
//!
//! H⁻¹'s upper Cholesky factor comes from cuSOLVER, as the reference's torch calls do:
//! `potrf` (L of H), `potri` (H⁻¹ from L, torch's `cholesky_inverse`), `potrf` again; all
//! in f32 on the damped H. The sweep then runs per stretch of columns (`solver::Segment`):
//! one kernel sweeps the stretch with one warp per row (mask, quantize, OBS update inside
//! the stretch, all in shared memory), and one cuBLAS GEMM applies the stretch's errors to
//! every later column (`W[:, end:] −= Err · U[stretch, end:]`, the reference's lazy update).
//! The block's adaptive mask threshold is a radix select on the device.
//!
//! Against the host solver (eager by default) the arithmetic is the same up to summation
//! order. cuSOLVER is opened at run time (it is not among the libraries candle links), so
//! a machine without it still runs everything else and says what is missing.

use super::quantizer::{QuantParams, ScalePrecision};
use super::{hinv, LinearGrids, Solved, SolvedWeight, Sparsity, SweepSettings, SweepSpec};
use crate::solver::{self, QuantScheme};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublas;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{DType, Device, Storage, Tensor};
use std::ffi::c_void;
use std::sync::{Mutex, OnceLock};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/solver.ptx"));
const MODULE: &str = "sparsegpt_mi_solver";
/// Rows per thread block of the sweep kernel (one warp each).
const SWEEP_WARPS: u32 = 4;
/// Longest stretch the sweep kernel holds in shared memory.
pub const MAX_BLOCKSIZE: usize = 1024;

/// Why this configuration must be solved on the host, if it must (`cols`: the linear's
/// input width, where its grids start).
pub fn unsupported(spec: SweepSpec, cols: usize) -> Option<String> {
    let (cfg, scheme) = (spec.settings, spec.scheme);
    if cfg.hinv_precision != hinv::HinvPrecision::F32 {
        return Some(
            "the f64 factorisation of H⁻¹ is solved on the host (cuSOLVER is used in f32, as the reference)".into(),
        );
    }
    if cfg.lazy_updates {
        return Some("lazy updates select the host's reference-order sweep".into());
    }
    if cfg.blocksize > MAX_BLOCKSIZE {
        return Some(format!("a blocksize above {MAX_BLOCKSIZE} is solved on the host"));
    }
    if matches!(scheme.quant, QuantScheme::Static { .. }) {
        return Some("static (by-label) quantization groups are solved on the host".into());
    }
    if scheme.nm_sets.is_some() {
        return Some("n:m over permuted channel sets is solved on the host".into());
    }
    if let Sparsity::NM { m, .. } = cfg.sparsity {
        let cut_inside_window =
            scheme.quant.sweep_grids(cols).iter().any(|g| !(g.start % cfg.blocksize).is_multiple_of(m));
        if cut_inside_window {
            return Some(
                "n:m pruning with quantization groups that start inside an n:m window is solved on the host".into(),
            );
        }
    }
    None
}

fn cuda_device(t: &Tensor) -> Result<CudaDevice> {
    match t.device() {
        Device::Cuda(d) => Ok(d.clone()),
        _ => bail!("solver_cuda: tensor is not on a CUDA device"),
    }
}

fn ptr<T>(dev: &CudaDevice, s: &CudaSlice<T>) -> u64 {
    let stream = dev.cuda_stream();
    let (p, _sync) = s.device_ptr(&stream);
    p
}

/// Launches one of this module's kernels; arguments are locals (the launch keeps pointers
/// to them).
macro_rules! launch {
    ($dev:expr, $name:expr, grid = $grid:expr, block = $block:expr, smem = $smem:expr; $($arg:expr),* $(,)?) => {{
        let func = $dev.get_or_load_custom_func($name, MODULE, PTX)?;
        let mut b = func.builder();
        $( b.arg(&$arg); )*
        let cfg = LaunchConfig { grid_dim: (($grid as u32).max(1), 1, 1), block_dim: ($block, 1, 1), shared_mem_bytes: $smem };
        unsafe { b.launch(cfg) }.map_err(|e| anyhow!("solver kernel {}: {e:?}", $name))?;
    }};
}

/// A fresh f32 device buffer holding `t` (row-major): copied where it is f32, widened by
/// one kernel where it is f16 or bf16 (no f32 tensor in between).
fn f32_buffer(dev: &CudaDevice, t: &Tensor) -> Result<CudaSlice<f32>> {
    let t = t.contiguous()?;
    let n = t.elem_count();
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(cs) = &*storage else { bail!("solver_cuda: tensor is not on a CUDA device") };
    let range = layout.start_offset()..layout.start_offset() + n;
    let mut dst = unsafe { dev.alloc::<f32>(n)? };
    let (src, widen) = match t.dtype() {
        DType::F32 => {
            dev.memcpy_dtod(&cs.as_cuda_slice::<f32>()?.slice(range), &mut dst)?;
            return Ok(dst);
        }
        DType::F16 => (ptr(dev, cs.as_cuda_slice::<half::f16>()?) + 2 * range.start as u64, "widen_f16"),
        DType::BF16 => (ptr(dev, cs.as_cuda_slice::<half::bf16>()?) + 2 * range.start as u64, "widen_bf16"),
        other => bail!("solver_cuda: weights in {other:?}; f32, f16 or bf16 expected"),
    };
    let (dp, n64) = (ptr(dev, &dst), n as i64);
    launch!(dev, widen, grid = n.div_ceil(256), block = 256, smem = 0; src, dp, n64);
    Ok(dst)
}

/// Damps H and factors H⁻¹ in place (`inverse_cholesky_upper`), on the tensor's own storage:
/// candle's in-place op, so a sum no later linear reads needs no copy.
struct FactorInPlace {
    n: usize,
    damp: f32,
    /// The factorisation's own error, kept whole (candle's error type carries only its text,
    /// which would lose the remedy the CLI names).
    failure: Mutex<Option<anyhow::Error>>,
}

impl candle_core::InplaceOp1 for FactorInPlace {
    fn name(&self) -> &'static str {
        "sgmi-factor-hinv"
    }

    fn cpu_fwd(&self, _: &mut candle_core::CpuStorage, _: &candle_core::Layout) -> candle_core::Result<()> {
        candle_core::bail!("sgmi-factor-hinv runs on CUDA only")
    }

    fn cuda_fwd(&self, storage: &mut CudaStorage, layout: &candle_core::Layout) -> candle_core::Result<()> {
        let fail = |e: anyhow::Error| candle_core::Error::Msg(format!("{e:#}"));
        if !layout.is_contiguous() || layout.start_offset() != 0 || layout.shape().dims() != [self.n, self.n] {
            return Err(fail(anyhow!("H must be a contiguous {0} × {0} tensor of its own", self.n)));
        }
        let dev = storage.device().clone();
        damp_and_factor(&dev, storage.as_cuda_slice_mut::<f32>()?, self.n, self.damp).map_err(|e| {
            let text = fail(anyhow!("{e:#}"));
            if let Ok(mut slot) = self.failure.lock() {
                *slot = Some(e);
            }
            text
        })
    }
}

/// The reference's damping of H's diagonal (`prepare_diag`), then H⁻¹'s factor in place.
fn damp_and_factor(dev: &CudaDevice, h: &mut CudaSlice<f32>, n: usize, damp: f32) -> Result<()> {
    let (hp, ni) = (ptr(dev, h), n as i32);
    launch!(dev, "prepare_diag", grid = n.div_ceil(256), block = 256, smem = 0; hp, ni, damp);
    inverse_cholesky_upper(dev, h, n)
}

/// cuSOLVER's dense Cholesky routines, opened at run time.
struct Cusolver {
    _lib: libloading::Library,
    handle: Mutex<usize>,
    set_stream: unsafe extern "C" fn(*mut c_void, *mut c_void) -> i32,
    potrf_buffer_size: unsafe extern "C" fn(*mut c_void, i32, i32, *mut f32, i32, *mut i32) -> i32,
    potrf: unsafe extern "C" fn(*mut c_void, i32, i32, *mut f32, i32, *mut f32, i32, *mut i32) -> i32,
    potri_buffer_size: unsafe extern "C" fn(*mut c_void, i32, i32, *mut f32, i32, *mut i32) -> i32,
    potri: unsafe extern "C" fn(*mut c_void, i32, i32, *mut f32, i32, *mut f32, i32, *mut i32) -> i32,
}

const LIBCUSOLVER: [&str; 3] = ["libcusolver.so.12", "libcusolver.so.11", "libcusolver.so"];
/// cublasFillMode_t: the lower triangle of a column-major matrix.
const FILL_LOWER: i32 = 0;

fn cusolver() -> Result<&'static Cusolver> {
    static LIB: OnceLock<std::result::Result<Cusolver, String>> = OnceLock::new();
    LIB.get_or_init(|| unsafe {
        let lib = LIBCUSOLVER.iter().find_map(|n| libloading::Library::new(n).ok()).ok_or_else(|| {
            format!("cuSOLVER ({}) not found: add the folder of the CUDA libraries to LD_LIBRARY_PATH", LIBCUSOLVER[0])
        })?;
        // A symbol as the function type it is bound to (the field's, or the annotation's).
        unsafe fn sym<T: Copy>(lib: &libloading::Library, name: &str) -> std::result::Result<T, String> {
            unsafe { lib.get::<T>(name.as_bytes()) }.map(|s| *s).map_err(|e| format!("cuSOLVER lacks {name}: {e}"))
        }
        let create: unsafe extern "C" fn(*mut *mut c_void) -> i32 = sym(&lib, "cusolverDnCreate")?;
        let mut handle: *mut c_void = std::ptr::null_mut();
        let status = create(&mut handle);
        if status != 0 {
            return Err(format!("cusolverDnCreate failed (status {status})"));
        }
        Ok(Cusolver {
            set_stream: sym(&lib, "cusolverDnSetStream")?,
            potrf_buffer_size: sym(&lib, "cusolverDnSpotrf_bufferSize")?,
            potrf: sym(&lib, "cusolverDnSpotrf")?,
            potri_buffer_size: sym(&lib, "cusolverDnSpotri_bufferSize")?,
            potri: sym(&lib, "cusolverDnSpotri")?,
            handle: Mutex::new(handle as usize),
            _lib: lib,
        })
    })
    .as_ref()
    .map_err(|e| crate::advice::advised(e.clone(), crate::advice::Remedy::HostSolver))
}

/// In place: the damped, symmetric n × n `h` becomes a matrix whose upper triangle
/// (row-major) is U, H⁻¹ = Uᵀ U — `cholesky(cholesky_inverse(cholesky(H)), upper=True)`.
/// Row-major U is column-major Uᵀ = L₂, the lower factor of H⁻¹, so all three calls work on
/// the column-major lower triangle. The strict lower triangle is left as scratch.
pub fn inverse_cholesky_upper(dev: &CudaDevice, h: &mut CudaSlice<f32>, n: usize) -> Result<()> {
    let cs = cusolver()?;
    let handle = cs.handle.lock().map_err(|_| anyhow!("cuSOLVER handle poisoned"))?;
    let hd = *handle as *mut c_void;
    let stream = dev.cuda_stream();
    let a = ptr(dev, h) as *mut f32;
    let ni = n as i32;
    let info = dev.alloc_zeros::<i32>(1)?;
    let info_p = ptr(dev, &info) as *mut i32;
    unsafe {
        check((cs.set_stream)(hd, stream.cu_stream() as *mut c_void), "cusolverDnSetStream")?;
        let (mut l1, mut l2) = (0i32, 0i32);
        check((cs.potrf_buffer_size)(hd, FILL_LOWER, ni, a, ni, &mut l1), "potrf_bufferSize")?;
        check((cs.potri_buffer_size)(hd, FILL_LOWER, ni, a, ni, &mut l2), "potri_bufferSize")?;
        let work = dev.alloc_zeros::<f32>(l1.max(l2).max(1) as usize)?;
        let wp = ptr(dev, &work) as *mut f32;
        use crate::advice::Remedy::MoreDamping;
        let steps: [(&str, &str, Option<crate::advice::Remedy>); 3] = [
            ("potrf", "Hessian is not positive definite even after damping", Some(MoreDamping)),
            ("potri", "Hessian inverse failed", None),
            ("potrf", "inverse Hessian lost positive definiteness", Some(MoreDamping)),
        ];
        for (step, why, remedy) in steps {
            let status = if step == "potri" {
                (cs.potri)(hd, FILL_LOWER, ni, a, ni, wp, l2, info_p)
            } else {
                (cs.potrf)(hd, FILL_LOWER, ni, a, ni, wp, l1, info_p)
            };
            check(status, step)?;
            let dev_info = dev.clone_dtoh(&info)?[0];
            if dev_info != 0 {
                let message = format!("{why} (cuSOLVER {step} info {dev_info})");
                return Err(match remedy {
                    Some(r) => crate::advice::advised(message, r),
                    None => anyhow!(message),
                });
            }
        }
        drop(work);
    }
    Ok(())
}

fn check(status: i32, what: &str) -> Result<()> {
    if status != 0 {
        bail!("cuSOLVER {what} failed (status {status})");
    }
    Ok(())
}

/// Compresses one linear on the device. `w`: rows × cols (any float dtype), `h_sum`: the f32
/// Σ x xᵀ of its inputs, `h_scale`: its factor to H (`HessianSource::device_sum`);
/// `overwrite_sum`: no one reads `h_sum` afterwards, so where the sweep takes the columns in
/// their order and H is the sum itself, H⁻¹ is factored in its storage.
/// Same contract as `solver::solve`.
pub fn solve(w: &Tensor, h_sum: &Tensor, h_scale: f64, overwrite_sum: bool, spec: SweepSpec) -> Result<Solved> {
    let (rows, cols) = w.dims2()?;
    let (cfg, quant) = (spec.settings, &spec.scheme.quant);
    if let Some(why) = unsupported(spec, cols) {
        bail!("{why}");
    }
    let dev = cuda_device(w)?;
    if h_sum.dims2()? != (cols, cols) {
        bail!("solver: weight {rows}×{cols} and Hessian {:?} do not fit", h_sum.dims());
    }
    // The running average is H itself (scale 1): no scaled copy of a d × d matrix.
    let scaled = !(h_scale == 1.0 && h_sum.dtype() == DType::F32);
    let h = if scaled { h_sum.to_dtype(DType::F32)?.affine(h_scale, 0.0)? } else { h_sum.clone() };
    let diag: Vec<f32> = hinv::diagonal(&h)?.to_vec1()?;
    let dead: Vec<bool> = diag.iter().map(|&d| d == 0.0).collect();
    let diag_fixed: Vec<f64> = diag.iter().map(|&d| if d == 0.0 { 1.0 } else { d as f64 }).collect();
    let order = solver::sweep_order(&diag_fixed, spec);

    // One (scale, zero, maxq) per row and grid, grid k at rows·3·k: each grid stays on the
    // device after its stretch is swept, and all come back for the export at the end.
    let n_grids = quant.grids(cols).len();
    let grids = dev.alloc_zeros::<f32>(rows * 3 * n_grids.max(1))?;
    let quantized = quant.is_quantized();
    // Per-row grids from the untouched weight (as the reference), before dead columns go.
    if let QuantScheme::PerRow { bits, sym } = *quant {
        let w0 = f32_buffer(&dev, w)?;
        let span = GridSpan { c0: 0, len: cols, bits, sym, precision: spec.scale_precision };
        row_grids(&dev, &w0, cols, rows, span, ptr(&dev, &grids))?;
    }
    // Dead columns zeroed and columns permuted in the weight's own dtype (exact), widened
    // to f32 once, into the buffer the sweep works on.
    let w_live = if dead.iter().any(|&d| d) {
        let keep: Vec<f32> = dead.iter().map(|&d| if d { 0.0 } else { 1.0 }).collect();
        w.broadcast_mul(&Tensor::from_vec(keep, (1, cols), w.device())?.to_dtype(w.dtype())?)?
    } else {
        w.clone()
    };
    let identity = order.iter().enumerate().all(|(k, &j)| k == j);
    let order_t = Tensor::from_vec(order.iter().map(|&j| j as u32).collect::<Vec<_>>(), cols, w_live.device())?;
    let (wp, u) = if identity {
        // H itself where its last reader may overwrite it, else a copy (the sum is read again).
        (w_live, if scaled || overwrite_sum { h } else { h.copy()? })
    } else {
        (w_live.index_select(&order_t, 1)?, h.index_select(&order_t, 0)?.index_select(&order_t, 1)?)
    };
    let mut wbuf = f32_buffer(&dev, &wp)?;
    drop(wp);
    let mean_diag = order.iter().map(|&j| diag_fixed[j]).sum::<f64>() / cols as f64;
    let damp = (cfg.percdamp * mean_diag) as f32;
    let factor = FactorInPlace { n: cols, damp, failure: Mutex::new(None) };
    u.inplace_op1(&factor)
        .map_err(|e| factor.failure.lock().ok().and_then(|mut slot| slot.take()).unwrap_or_else(|| anyhow!("{e}")))?;
    let (row_loss, pruned) = {
        let (storage, _) = u.storage_and_layout();
        let Storage::Cuda(cs) = &*storage else { bail!("solver_cuda: H is not on a CUDA device") };
        sweep(&dev, &mut wbuf, cs.as_cuda_slice::<f32>()?, rows, cols, spec, quantized.then_some(&grids))?
    };
    drop(u);
    let loss: f64 = dev.clone_dtoh(&row_loss)?.iter().map(|&x| x as f64).sum();
    // The grids as the kernels used them (copied, not recomputed: a grid is fitted on the
    // values its first column saw, which the final weights no longer hold).
    let fitted: Vec<f32> = if quantized { dev.clone_dtoh(&grids)? } else { Vec::new() };
    let grids = LinearGrids::collect(quant, rows, &order, spec.scale_precision, |r, k| {
        let g = &fitted[(k * rows + r) * 3..(k * rows + r) * 3 + 3];
        QuantParams { scale: g[0], zero: g[1], maxq: g[2] }
    });
    // The weight stays on the device, back in the original column order.
    let swept = Tensor::from_storage(
        Storage::Cuda(CudaStorage::wrap_cuda_slice(wbuf, dev.clone())),
        (rows, cols),
        BackpropOp::none(),
        false,
    );
    let weight = if identity {
        swept
    } else {
        let mut inverse = vec![0u32; cols];
        for (k, &j) in order.iter().enumerate() {
            inverse[j] = k as u32;
        }
        swept.index_select(&Tensor::from_vec(inverse, cols, swept.device())?, 1)?
    };
    Ok(Solved { weight: SolvedWeight::Device(weight), loss, pruned, host_reason: None, grids })
}

/// One grid of every row: columns `c0..c0 + len` of the sweep, its width, symmetry and the
/// precision its scale is held in.
#[derive(Clone, Copy)]
struct GridSpan {
    c0: usize,
    len: usize,
    bits: u32,
    sym: bool,
    precision: ScalePrecision,
}

/// Fits every row's grid over `span` of `w` (leading dimension `ld`) into the `rows` grids at
/// device address `gp` (`kernels/solver.cu` `row_grids`, the device's `quantizer::find_params`).
fn row_grids(dev: &CudaDevice, w: &CudaSlice<f32>, ld: usize, rows: usize, span: GridSpan, gp: u64) -> Result<()> {
    let wp = ptr(dev, w);
    let GridSpan { c0, len, bits, sym, precision } = span;
    let (ld, rows_i, c0, len, bits, sym) = (ld as i32, rows as i32, c0 as i32, len as i32, bits as i32, sym as i32);
    let precision: i32 = match precision {
        ScalePrecision::F32 => 0,
        ScalePrecision::F16 => 1,
        ScalePrecision::BF16 => 2,
    };
    let threads = 256u32;
    launch!(dev, "row_grids", grid = (rows * 32).div_ceil(threads as usize), block = threads, smem = 0; wp, ld, rows_i, c0, len, bits, sym, precision, gp);
    Ok(())
}

/// Sweeps the permuted, factorised layer in place; returns the loss per row (on the device)
/// and the weights the mask pruned.
fn sweep(
    dev: &CudaDevice,
    w: &mut CudaSlice<f32>,
    u: &CudaSlice<f32>,
    rows: usize,
    cols: usize,
    spec: SweepSpec,
    grids: Option<&CudaSlice<f32>>,
) -> Result<(CudaSlice<f32>, usize)> {
    let cfg = spec.settings;
    let bs = cfg.blocksize;
    let starts = spec.scheme.quant.sweep_grids(cols);
    let segments = solver::sweep_segments(cols, bs, &starts);
    let unstructured = match cfg.sparsity {
        Sparsity::Unstructured(ratio) => Some(ratio),
        _ => None,
    };
    let prune_unstructured = unstructured.is_some();
    let loss = dev.alloc_zeros::<f32>(rows)?;
    let err = dev.alloc_zeros::<f32>(rows * bs)?;
    let metric = dev.alloc_zeros::<f32>(if prune_unstructured { rows * bs } else { 1 })?;
    let thresh = dev.alloc_zeros::<f32>(1)?;
    let pruned = dev.alloc_zeros::<u64>(1)?;
    let (wp, up, ep, mp, tp, lp) =
        (ptr(dev, w), ptr(dev, u), ptr(dev, &err), ptr(dev, &metric), ptr(dev, &thresh), ptr(dev, &loss));
    let pp = ptr(dev, &pruned);
    let grids_base = grids.map(|g| ptr(dev, g)).unwrap_or(0);
    // The grid in use: per-row (slot 0) or the last one started, each in its own slot.
    let mut gp = grids_base;
    let grid_bytes = (rows * 3 * std::mem::size_of::<f32>()) as u64;
    let sym = spec.scheme.quant.symmetric();
    let (ld, rows_i) = (cols as i32, rows as i32);
    for seg in segments {
        let mcount = (seg.block + bs).min(cols) - seg.block;
        if prune_unstructured && seg.start == seg.block {
            let (c0, cnt) = (seg.block as i32, mcount as i32);
            let n = rows * mcount;
            launch!(dev, "block_metric", grid = n.div_ceil(256), block = 256, smem = 0; wp, ld, rows_i, c0, cnt, up, mp);
            let k = ((n as f64 * unstructured.unwrap_or(0.0)) as usize).min(n - 1) as i64;
            let n64 = n as i64;
            launch!(dev, "kth_smallest", grid = 1, block = 1024, smem = 0; mp, n64, k, tp, pp);
        }
        if let Some((k, g)) = starts.iter().enumerate().find(|(_, g)| g.start == seg.start) {
            if grids.is_none() {
                bail!("a quantization grid starts in an unquantized sweep");
            }
            gp = grids_base + k as u64 * grid_bytes;
            let span = GridSpan { c0: g.start, len: g.len, bits: g.bits, sym, precision: spec.scale_precision };
            row_grids(dev, w, cols, rows, span, gp)?;
        }
        let len = seg.end - seg.start;
        let (s1, len_i, mcount_i, moff) = (seg.start as i32, len as i32, mcount as i32, (seg.start - seg.block) as i32);
        let (prunen, prunem) = match cfg.sparsity {
            Sparsity::NM { n, m } => (n as i32, m as i32),
            _ => (0, 0),
        };
        let metric_arg = if prune_unstructured { mp } else { 0u64 };
        let maxlen = bs as i32;
        let smem = SWEEP_WARPS * bs as u32 * 2 * 4;
        launch!(dev, "obs_sweep", grid = rows.div_ceil(SWEEP_WARPS as usize), block = SWEEP_WARPS * 32, smem = smem;
            wp, ld, rows_i, s1, len_i, up, metric_arg, mcount_i, moff, tp, prunen, prunem, gp, ep, lp, maxlen);
        if seg.end < cols {
            lazy_update(dev, wp, up, ep, rows, cols, seg)?;
        }
    }
    let pruned = match cfg.sparsity {
        Sparsity::Unstructured(_) => dev.clone_dtoh(&pruned)?[0] as usize,
        Sparsity::NM { n, m } => rows * n_of_m_pruned_per_row(cols, bs, n, m),
        Sparsity::Dense => 0,
    };
    Ok((loss, pruned))
}

/// Weights of one row the n:m sweep prunes: n in every window of m columns that starts at a
/// block start or m after one, a window cut short at the block end keeping its n smallest too.
fn n_of_m_pruned_per_row(cols: usize, blocksize: usize, n: usize, m: usize) -> usize {
    (0..cols)
        .step_by(blocksize)
        .map(|i1| {
            let i2 = (i1 + blocksize).min(cols);
            (i1..i2).step_by(m).map(|i| n.min(i2 - i)).sum::<usize>()
        })
        .sum()
}

/// The reference's lazy update after a stretch: W[:, end:] −= Err (rows × len) ·
/// U[start..end, end:], as column-major Wᵀ[end:, :] −= U[start..end, end:]ᵀ · Errᵀ (one cuBLAS
/// GEMM; `wp`, `up`, `ep`: device pointers of W, U and the stretch's errors).
fn lazy_update(
    dev: &CudaDevice,
    wp: u64,
    up: u64,
    ep: u64,
    rows: usize,
    cols: usize,
    seg: solver::Segment,
) -> Result<()> {
    let blas = dev.cublas_handle();
    let (n2, rows_i, len_i, ld) = ((cols - seg.end) as i32, rows as i32, (seg.end - seg.start) as i32, cols as i32);
    let (alpha, beta) = (-1.0f32, 1.0f32);
    unsafe {
        cublas::result::sgemm(
            *blas.handle(),
            cublas::sys::cublasOperation_t::CUBLAS_OP_N,
            cublas::sys::cublasOperation_t::CUBLAS_OP_N,
            n2,
            rows_i,
            len_i,
            &alpha,
            (up as *const f32).add(seg.start * cols + seg.end),
            ld,
            ep as *const f32,
            len_i,
            &beta,
            (wp as *mut f32).add(seg.end),
            ld,
        )
        .map_err(|e| anyhow!("cuBLAS sgemm (lazy update): {e:?}"))?;
    }
    Ok(())
}

/// The device solver against the host one (reference order) on one random layer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    pub rows: usize,
    pub cols: usize,
    /// Fraction of weights where the two differ by more than 1e-4 (relative): rounding-order
    /// differences flip a few near-tied mask or grid decisions, which then propagate.
    pub fraction_differing: f64,
    pub max_abs_difference: f64,
    /// |loss_device − loss_host| / loss_host, the reference's summed OBS loss.
    pub loss_relative_difference: f64,
    /// Weights each solver's mask pruned (equal but for near-tied mask decisions).
    pub pruned_device: usize,
    pub pruned_host: usize,
    /// Fraction of (row, grid) scales the two solvers fitted differently (0 without
    /// quantization): the grids both report for the packed exports.
    pub grid_scales_differing: f64,
    pub device_s: f64,
    pub host_s: f64,
}

/// Solves one random layer (correlated inputs, as activations are) on the device and on the
/// host with the same H and compares: the `self-check` subcommand. The device solve takes the
/// pipeline's usual path for a checkpoint in f16 whose H no later linear reads: f16 weights
/// (the host gets the same values) and H overwritten in place.
pub fn compare_with_host(device: &Device, rows: usize, cols: usize, spec: SweepSpec, seed: u64) -> Result<Comparison> {
    let mut rng = crate::rng::seeded(seed);
    let mut uniform = move || (crate::rng::uniform(&mut rng) * 2.0 - 1.0) as f32;
    let w: Vec<f32> = (0..rows * cols).map(|_| half::f16::from_f32(uniform() * 0.1).to_f32()).collect();
    let tokens = 2 * cols;
    let m: Vec<f32> = (0..cols * cols).map(|k| if k % (cols + 1) == 0 { 1.0 } else { uniform() * 0.1 }).collect();
    let z: Vec<f32> = (0..tokens * cols).map(|_| uniform()).collect();
    let x = Tensor::from_vec(z, (tokens, cols), device)?.matmul(&Tensor::from_vec(m, (cols, cols), device)?)?;
    // H itself (the running average's scale 1), read by the host before the device overwrites it.
    let h = (x.t()?.matmul(&x)? * (2.0 / 16.0))?;
    let h_host: Vec<f64> = h.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let wt = Tensor::from_vec(w.clone(), (rows, cols), device)?.to_dtype(DType::F16)?;
    let t = std::time::Instant::now();
    let dev_solved = solve(&wt, &h, 1.0, true, spec).context("device solve")?;
    let device_s = t.elapsed().as_secs_f64();
    // The host's reference order where grids align with blocks (then the two sweeps do the
    // same arithmetic in the same order); its eager order for mixed groups, whose grids the
    // device reads from current values as the eager sweep does.
    let lazy_updates = !matches!(spec.scheme.quant, QuantScheme::Mixed { .. });
    let host_settings = SweepSettings { lazy_updates, ..spec.settings.clone() };
    let t = std::time::Instant::now();
    let host_solved = solver::host::solve(&w, rows, cols, &h_host, SweepSpec { settings: &host_settings, ..spec })?;
    let host_s = t.elapsed().as_secs_f64();
    let (dev_w, host_w) = (dev_solved.weight.to_host()?, host_solved.weight.to_host()?);
    let pairs = || dev_w.iter().zip(&host_w);
    let differing = pairs().filter(|(a, b)| (*a - *b).abs() > 1e-4 * (1.0 + b.abs())).count();
    let grid_scales_differing = match (&dev_solved.grids, &host_solved.grids) {
        (None, None) => 0.0,
        (Some(d), Some(h)) if d.scales.len() == h.scales.len() => {
            d.scales.iter().zip(&h.scales).filter(|(a, b)| a != b).count() as f64 / d.scales.len().max(1) as f64
        }
        _ => 1.0,
    };
    Ok(Comparison {
        rows,
        cols,
        fraction_differing: differing as f64 / w.len() as f64,
        max_abs_difference: pairs().map(|(a, b)| (a - b).abs() as f64).fold(0.0, f64::max),
        loss_relative_difference: (dev_solved.loss - host_solved.loss).abs() / host_solved.loss.max(1e-30),
        pruned_device: dev_solved.pruned,
        pruned_host: host_solved.pruned,
        grid_scales_differing,
        device_s,
        host_s,
    })
}
