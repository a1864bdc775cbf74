//! The fast f16/bf16 forward pass on CUDA: launch wrappers for the kernels of
//! `src/model/kernels/attention.cu` (compiled by build.rs to an sm_XX cubin, embedded, loaded once
//! per device: no JIT at start) and a cuBLASLt linear with the bias (and ReLU) in its epilogue.
//!
//! * [`flash_attention`]: causal attention of q, k, v as the projections give them, q
//!   (batch, seq, heads·head_dim), k and v (batch, seq, kv_heads·head_dim) (grouped-query heads
//!   read their shared K/V head, never repeated in memory), strided rows allowed (slices of a
//!   fused qkv tensor): no transposes, no (seq × seq) scores in memory; logits and softmax in f32.
//! * [`linear`]: `x · Wᵀ + b` (ReLU'd if asked) as one cuBLASLt call, f32 accumulation, bias
//!   added before the single rounding to the dtype (torch's addmm does the same; candle's
//!   `Linear` rounds the product, then adds the bias in the dtype).
//! * [`rope_inplace`]: the rotary families' q or k in place: the per-head norm (Qwen3), then
//!   the rotate-half rotation, rounded where transformers rounds.
//! * [`rms_norm`]: RMSNorm in transformers' order; [`silu_mul_inplace`]: the gated MLP's
//!   silu(gate) · up in place.
//! * [`bias_act_inplace`]: `y = relu?(y + b)` in place, one pass (when the GEMM ran elsewhere).
//! * [`lm_head_nll`]: per-window Σ NLL of the LM head, chunk by chunk: logits in the dtype from
//!   cuBLAS (as the published code, which rounds logits to f16 before `.float()`), then one
//!   kernel computing logsumexp − logit[target] per row in f32; the logits never exist whole.
//!
//! [`applies`] decides whether the model's CUDA path uses these: a CUDA f16 or bf16 tensor and
//! the switch on (the default; `SPARSEGPT_MI_CUDA_FUSED=0` or [`set_enabled`] turns it off, for
//! comparisons with candle's generic ops). checks/cuda/attention_check.cu checks the kernels
//! on a GPU against f64 references.

use anyhow::{anyhow, bail, Result};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublaslt::{Activation, CudaBlasLT, Matmul, MatmulConfig};
use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute_enum;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, DeviceId};
use candle_core::op::BackpropOp;
use candle_core::{DType, Device, InplaceOp1, InplaceOp2, Layout, Storage, Tensor};
use candle_nn::Linear;
use half::{bf16, f16};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

const CUBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/attention.cubin"));

/// Head dimensions the attention kernel is built for.
pub const FLASH_HEAD_DIMS: [usize; 5] = [32, 64, 80, 96, 128];
/// Rows of LM-head logits formed at once (4096 × 50272 f16 = 412 MB).
const LM_CHUNK: usize = 4096;
const NLL_THREADS: u32 = 256; // sgmi::NLL_THREADS
const SUM_THREADS: u32 = 256; // sgmi::SUM_THREADS

// ---- the switch ----------------------------------------------------------------------------

/// 0: not read yet, 1: off, 2: on.
static ENABLED: AtomicU8 = AtomicU8::new(0);

thread_local! {
    static OVERRIDE: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with the fused path forced on or off on this thread (tests comparing the two).
pub fn with_fused<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let before = OVERRIDE.with(|o| o.replace(Some(on)));
    let r = f();
    OVERRIDE.with(|o| o.set(before));
    r
}

/// Whether the fused CUDA path is on: [`with_fused`] on this thread, else [`set_enabled`], else
/// `SPARSEGPT_MI_CUDA_FUSED` (0/off/false/no turn it off; on by default).
pub fn enabled() -> bool {
    if let Some(on) = OVERRIDE.with(|o| o.get()) {
        return on;
    }
    match ENABLED.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("SPARSEGPT_MI_CUDA_FUSED")
                .map(|v| !matches!(v.to_ascii_lowercase().as_str(), "0" | "off" | "false" | "no"))
                .unwrap_or(true);
            ENABLED.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        v => v == 2,
    }
}

/// Switches the fused CUDA path on or off for the whole process.
pub fn set_enabled(on: bool) {
    ENABLED.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether `x` takes the fused path: switch on, CUDA device, f16 or bf16.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cuda() && matches!(x.dtype(), DType::F16 | DType::BF16) && enabled()
}

/// The kernels' name suffix for a 16-bit float dtype.
fn suffix(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        other => bail!("cuda_forward: {other:?} tensors: the fused kernels take f16 or bf16"),
    }
}

/// Warps per attention block for a head dimension: 8 (128 queries) by default, or
/// `SPARSEGPT_MI_FLASH_WARPS` (4 or 8) for timing the other variant.
fn flash_warps(_head_dim: usize) -> u32 {
    static W: OnceLock<u32> = OnceLock::new();
    *W.get_or_init(|| match std::env::var("SPARSEGPT_MI_FLASH_WARPS").ok().as_deref() {
        Some("4") => 4,
        _ => 8,
    })
}

/// Shared memory of the attention kernel: a Q tile and two stages of K and V tiles, rows
/// padded by 8 halves (sgmi::FlashCfg::SMEM_BYTES).
fn flash_smem_bytes(head_dim: usize, warps: u32) -> u32 {
    ((16 * warps as usize + 4 * 64) * (head_dim + 8) * 2) as u32
}

// ---- module and handles per device -----------------------------------------------------------

struct DeviceKernels {
    module: Arc<CudaModule>,
    funcs: Mutex<HashMap<String, CudaFunction>>,
}

fn device_kernels(dev: &CudaDevice) -> Result<Arc<DeviceKernels>> {
    static ALL: OnceLock<Mutex<HashMap<DeviceId, Arc<DeviceKernels>>>> = OnceLock::new();
    let mut all =
        ALL.get_or_init(Default::default).lock().map_err(|_| anyhow!("cuda_forward: kernel table poisoned"))?;
    if let Some(k) = all.get(&dev.id()) {
        return Ok(k.clone());
    }
    let module = dev.cuda_stream().context().load_module(Ptx::from_binary(CUBIN.to_vec())).map_err(|e| {
        anyhow!("cuda_forward: loading the kernels' cubin: {e:?} (built for another GPU? see CUDA_COMPUTE_CAP)")
    })?;
    let k = Arc::new(DeviceKernels { module, funcs: Mutex::new(HashMap::new()) });
    all.insert(dev.id(), k.clone());
    Ok(k)
}

/// The named kernel, with its dynamic shared-memory limit raised to `smem` bytes if above 48 KB.
fn func(dev: &CudaDevice, name: &str, smem: u32) -> Result<CudaFunction> {
    let k = device_kernels(dev)?;
    let mut funcs = k.funcs.lock().map_err(|_| anyhow!("cuda_forward: kernel table poisoned"))?;
    if let Some(f) = funcs.get(name) {
        return Ok(f.clone());
    }
    let f = k.module.load_function(name).map_err(|e| anyhow!("cuda_forward: kernel {name}: {e:?}"))?;
    if smem > 48 * 1024 {
        f.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32)
            .map_err(|e| anyhow!("cuda_forward: {name}: {smem} bytes of shared memory: {e:?}"))?;
    }
    funcs.insert(name.to_string(), f.clone());
    Ok(f)
}

fn blas_lt(dev: &CudaDevice) -> Result<Arc<CudaBlasLT>> {
    static ALL: OnceLock<Mutex<HashMap<DeviceId, Arc<CudaBlasLT>>>> = OnceLock::new();
    let mut all =
        ALL.get_or_init(Default::default).lock().map_err(|_| anyhow!("cuda_forward: cuBLASLt table poisoned"))?;
    if let Some(h) = all.get(&dev.id()) {
        return Ok(h.clone());
    }
    let h = Arc::new(CudaBlasLT::new(dev.cuda_stream()).map_err(|e| anyhow!("cuBLASLt: {e:?}"))?);
    all.insert(dev.id(), h.clone());
    Ok(h)
}

fn cuda_device(t: &Tensor) -> Result<CudaDevice> {
    match t.device() {
        Device::Cuda(d) => Ok(d.clone()),
        _ => bail!("cuda_forward: tensor is not on a CUDA device"),
    }
}

fn wrap<T: CudaDType>(out: CudaSlice<T>, dev: &CudaDevice, shape: &[usize]) -> Tensor {
    Tensor::from_storage(
        Storage::Cuda(CudaStorage::wrap_cuda_slice(out, dev.clone())),
        shape,
        BackpropOp::none(),
        false,
    )
}

fn cuda_storage<'a>(s: &'a Storage, what: &str) -> Result<&'a CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        _ => bail!("cuda_forward: {what} is not on a CUDA device"),
    }
}

/// The elements of a tensor from its layout's start (the layout still has to be respected).
fn view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, T>> {
    Ok(s.as_cuda_slice::<T>()?.slice(l.start_offset()..))
}

// ---- attention --------------------------------------------------------------------------------

/// Whether the attention kernel handles these tensors (else: the generic path).
pub fn flash_supported(q: &Tensor, head_dim: usize) -> bool {
    applies(q) && FLASH_HEAD_DIMS.contains(&head_dim)
}

/// (batch stride, row stride) of a (b, s, width) operand of `dtype`, checked for the kernel:
/// unit stride inside rows and 16-byte aligned rows.
fn rows_of(t: &Tensor, l: &Layout, what: &str, dims: (usize, usize, usize), dtype: DType) -> Result<(i64, i64)> {
    if t.dims() != [dims.0, dims.1, dims.2] {
        bail!("flash_attention: {what} has shape {:?}, expected {:?}", t.dims(), [dims.0, dims.1, dims.2]);
    }
    if t.dtype() != dtype {
        bail!("flash_attention: {what} is {:?}, q is {dtype:?}", t.dtype());
    }
    let st = l.stride();
    let (bs, rs) = (if dims.0 > 1 { st[0] } else { 0 }, if dims.1 > 1 { st[1] } else { 0 });
    if dims.2 > 1 && st[2] != 1 {
        bail!("flash_attention: {what}'s rows are not contiguous (strides {st:?})");
    }
    if !l.start_offset().is_multiple_of(8) || !bs.is_multiple_of(8) || !rs.is_multiple_of(8) {
        bail!("flash_attention: {what}'s rows are not 16-byte aligned (offset {}, strides {st:?})", l.start_offset());
    }
    Ok((bs as i64, rs as i64))
}

/// What the attention kernel computes: heads, key/value heads (grouped-query when fewer: query
/// head h reads K/V head h / (heads / kv_heads), transformers' `repeat_kv` pairing), the head
/// width, and the two scalings: `q_scale` multiplies q before q·kᵀ, rounded to the dtype once
/// (HF's OPT: `q_proj(x) * scaling`), `logit_scale` the f32 logits inside the softmax (torch's
/// SDPA, the rotary families). 1.0 for the one not used.
#[derive(Clone, Copy, Debug)]
pub struct FlashParams {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub q_scale: f32,
    pub logit_scale: f32,
}

/// Causal attention: `q` (batch, seq, heads·head_dim), `k`, `v` (batch, seq,
/// kv_heads·head_dim), one dtype (f16 or bf16) on one CUDA device (any batch and row strides
/// that keep rows 16-byte aligned, e.g. slices of a fused qkv tensor). Returns (batch, seq,
/// heads·head_dim) in that dtype, contiguous, the heads' outputs side by side as the output
/// projection reads them.
pub fn flash_attention(q: &Tensor, k: &Tensor, v: &Tensor, p: &FlashParams) -> Result<Tensor> {
    match q.dtype() {
        DType::F16 => flash_attention_t::<f16>(q, k, v, p),
        DType::BF16 => flash_attention_t::<bf16>(q, k, v, p),
        other => bail!("flash_attention: q is {other:?}, the kernel takes f16 or bf16"),
    }
}

fn flash_attention_t<T: CudaDType + DeviceRepr>(q: &Tensor, k: &Tensor, v: &Tensor, p: &FlashParams) -> Result<Tensor> {
    let FlashParams { heads, kv_heads, head_dim, q_scale, logit_scale } = *p;
    if !FLASH_HEAD_DIMS.contains(&head_dim) {
        bail!("flash_attention: head_dim {head_dim} is not one of {FLASH_HEAD_DIMS:?}");
    }
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        bail!("flash_attention: {heads} query heads are not a multiple of {kv_heads} key/value heads");
    }
    let (b, s, hidden) = q.dims3()?;
    if hidden != heads * head_dim {
        bail!("flash_attention: q has {hidden} features, expected {heads} × {head_dim}");
    }
    if s > i32::MAX as usize || heads > 65535 || b > 65535 {
        bail!("flash_attention: shape {:?} beyond the kernel's grid", q.dims());
    }
    let dtype = q.dtype();
    let dev = cuda_device(q)?;
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let kv_dims = (b, s, kv_heads * head_dim);
    let (q_bs, q_rs) = rows_of(q, ql, "q", (b, s, hidden), dtype)?;
    let (k_bs, k_rs) = rows_of(k, kl, "k", kv_dims, dtype)?;
    let (v_bs, v_rs) = rows_of(v, vl, "v", kv_dims, dtype)?;
    let (qc, kc, vc) = (cuda_storage(&qs, "q")?, cuda_storage(&ks, "k")?, cuda_storage(&vs, "v")?);
    let (qv, kv, vv) = (view::<T>(qc, ql)?, view::<T>(kc, kl)?, view::<T>(vc, vl)?);
    let n = b * s * hidden;
    if n == 0 {
        return Ok(Tensor::zeros((b, s, hidden), dtype, q.device())?);
    }
    let mut out = unsafe { dev.alloc::<T>(n)? };
    let warps = flash_warps(head_dim);
    let smem = flash_smem_bytes(head_dim, warps);
    // OPT's kernel where it applies (f16, equal heads, no logit scale: the code it always ran),
    // the grouped-query one (f16 or bf16) otherwise.
    let grouped = dtype != DType::F16 || kv_heads != heads || logit_scale != 1.0;
    let name = if grouped {
        format!("sgmi_flash_gqa_{}_hd{head_dim}_w{warps}", suffix(dtype)?)
    } else {
        format!("sgmi_flash_fwd_hd{head_dim}_w{warps}")
    };
    let f = func(&dev, &name, smem)?;
    let br = 16 * warps as usize;
    let (o_bs, o_rs) = ((s * hidden) as i64, hidden as i64);
    let seq = s as i32;
    let group = (heads / kv_heads) as i32;
    let stream = dev.cuda_stream();
    let mut launch = stream.launch_builder(&f);
    launch.arg(&qv).arg(&kv).arg(&vv).arg(&mut out);
    launch
        .arg(&q_bs)
        .arg(&q_rs)
        .arg(&k_bs)
        .arg(&k_rs)
        .arg(&v_bs)
        .arg(&v_rs)
        .arg(&o_bs)
        .arg(&o_rs)
        .arg(&seq)
        .arg(&q_scale);
    if grouped {
        launch.arg(&group).arg(&logit_scale);
    }
    let cfg = LaunchConfig {
        grid_dim: (s.div_ceil(br) as u32, heads as u32, b as u32),
        block_dim: (warps * 32, 1, 1),
        shared_mem_bytes: smem,
    };
    unsafe { launch.launch(cfg) }.map_err(|e| anyhow!("flash_attention kernel: {e:?}"))?;
    drop(launch);
    drop((qs, ks, vs));
    Ok(wrap(out, &dev, &[b, s, hidden]))
}

// ---- rotary positions, RMSNorm, the gated activation -----------------------------------------

const ROPE_WARPS: u32 = 8; // sgmi::ROPE_WARPS
/// The widest head the rotary kernel takes (sgmi::ROPE_MAX_PAIRS pairs per lane).
pub const ROPE_MAX_HEAD_DIM: usize = 256;
const NORM_THREADS: u32 = 256; // sgmi::NORM_THREADS

/// A contiguous tensor of `dtype` on `dev` whose shape is `dims`, for a kernel's operand.
fn check_operand(t: &Tensor, what: &str, dims: &[usize], dtype: DType) -> Result<()> {
    if t.dims() != dims || t.dtype() != dtype || !t.is_contiguous() || !t.device().is_cuda() {
        bail!(
            "cuda_forward: {what} is {:?} {:?}{}, expected a contiguous CUDA {dtype:?} tensor of {dims:?}",
            t.dtype(),
            t.dims(),
            if t.is_contiguous() { "" } else { " (strided)" }
        );
    }
    Ok(())
}

struct Rope<'a> {
    heads: usize,
    head_dim: usize,
    cos: &'a Tensor,
    sin: &'a Tensor,
    norm: Option<(&'a Tensor, f32)>,
}

impl InplaceOp1 for Rope<'_> {
    fn name(&self) -> &'static str {
        "sgmi-rope"
    }

    fn cpu_fwd(&self, _: &mut candle_core::CpuStorage, _: &Layout) -> candle_core::Result<()> {
        candle_core::bail!("sgmi-rope runs on CUDA only")
    }

    fn cuda_fwd(&self, x: &mut CudaStorage, xl: &Layout) -> candle_core::Result<()> {
        self.launch(x, xl).map_err(|e| candle_core::Error::Msg(format!("rope: {e:#}")))
    }
}

impl Rope<'_> {
    fn launch(&self, x: &mut CudaStorage, xl: &Layout) -> Result<()> {
        {
            let dims = xl.shape().dims();
            let (b, s, width) = match *dims {
                [b, s, w] => (b, s, w),
                _ => bail!("x has shape {dims:?}, expected (batch, seq, heads·head_dim)"),
            };
            let st = xl.stride();
            if width > 0 && st[2] != 1 {
                bail!("x's rows are not contiguous (strides {st:?})");
            }
            let dtype = x.dtype();
            let f = func(&x.device, &format!("sgmi_rope_{}", suffix(dtype)?), 0)?;
            let (cs, cl) = self.cos.storage_and_layout();
            let (ss, sl) = self.sin.storage_and_layout();
            let norm_guard = self.norm.map(|(w, _)| w.storage_and_layout());
            let eps = self.norm.map_or(0f32, |(_, e)| e);
            let items = b * s * self.heads;
            if items == 0 {
                return Ok(());
            }
            let (x_bs, x_rs) = (st[0] as i64, st[1] as i64);
            let (bi, si, hi, di) = (b as i32, s as i32, self.heads as i32, self.head_dim as i32);
            let blocks = items.div_ceil(ROPE_WARPS as usize) as u32;
            let cfg =
                LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (ROPE_WARPS * 32, 1, 1), shared_mem_bytes: 0 };
            let stream = x.device.cuda_stream();
            macro_rules! launch {
                ($t:ty) => {{
                    let off = xl.start_offset();
                    let xs = x.as_cuda_slice_mut::<$t>()?;
                    let mut xv = xs.slice_mut(off..);
                    let cv = view::<$t>(cuda_storage(&cs, "cos")?, cl)?;
                    let sv = view::<$t>(cuda_storage(&ss, "sin")?, sl)?;
                    let nv = match &norm_guard {
                        Some((ns, nl)) => Some(view::<$t>(cuda_storage(ns, "norm weight")?, nl)?),
                        None => None,
                    };
                    let null = 0u64;
                    let mut launch = stream.launch_builder(&f);
                    launch.arg(&mut xv).arg(&x_bs).arg(&x_rs).arg(&bi).arg(&si).arg(&hi).arg(&di);
                    launch.arg(&cv).arg(&sv);
                    match &nv {
                        Some(v) => launch.arg(v),
                        None => launch.arg(&null),
                    };
                    launch.arg(&eps);
                    unsafe { launch.launch(cfg) }.map_err(|e| anyhow!("rope kernel: {e:?}"))?;
                }};
            }
            match dtype {
                DType::BF16 => launch!(bf16),
                _ => launch!(f16),
            }
            Ok(())
        }
    }
}

/// The rotary families' q or k, in place: `x` (batch, seq, heads·head_dim) f16/bf16 with
/// contiguous rows, positions 0..seq; `cos`, `sin` the (≥ seq, head_dim/2) tables of
/// `rope::RopeTables` in x's dtype; `norm`: the per-head RMSNorm (weight of head_dim, eps)
/// applied first (Qwen3's q_norm / k_norm). Each step rounded where transformers rounds
/// (x·rsqrt, times the weight; each product and the sum of the rotation). `x` must be a tensor
/// the caller owns (a projection's fresh output): it is overwritten.
pub fn rope_inplace(
    x: &Tensor,
    (heads, head_dim): (usize, usize),
    cos: &Tensor,
    sin: &Tensor,
    norm: Option<(&Tensor, f32)>,
) -> Result<()> {
    let (_, s, width) = x.dims3()?;
    if head_dim == 0 || !head_dim.is_multiple_of(2) || head_dim > ROPE_MAX_HEAD_DIM || width != heads * head_dim {
        bail!("rope_inplace: {width} features as {heads} heads of {head_dim} (even, at most {ROPE_MAX_HEAD_DIM})");
    }
    let rows = cos.dims().first().copied().unwrap_or(0);
    if rows < s {
        bail!("rope_inplace: sequence of {s} tokens is longer than the rotary tables ({rows})");
    }
    let dtype = x.dtype();
    check_operand(cos, "cos table", &[rows, head_dim / 2], dtype)?;
    check_operand(sin, "sin table", &[rows, head_dim / 2], dtype)?;
    if let Some((w, _)) = norm {
        check_operand(w, "q/k norm weight", &[head_dim], dtype)?;
    }
    if x.elem_count() > i32::MAX as usize {
        bail!("rope_inplace: {} elements beyond the kernel's indices", x.elem_count());
    }
    x.inplace_op1(&Rope { heads, head_dim, cos, sin, norm })?;
    Ok(())
}

/// RMSNorm of the last dimension of `x` (f16/bf16 on CUDA) with `weight` of its dtype:
/// `weight · dt(x · rsqrt(mean(x²) + eps))`, the mean in f32 (transformers' LlamaRMSNorm and
/// its copies in Mistral, Qwen2, Qwen3). Returns a new contiguous tensor.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    match x.dtype() {
        DType::F16 => rms_norm_t::<f16>(x, weight, eps),
        DType::BF16 => rms_norm_t::<bf16>(x, weight, eps),
        other => bail!("rms_norm: {other:?} input, the kernel takes f16 or bf16"),
    }
}

fn rms_norm_t<T: CudaDType + DeviceRepr>(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let x = if x.is_contiguous() { x.clone() } else { x.contiguous()? };
    let cols = *x.dims().last().ok_or_else(|| anyhow!("rms_norm: scalar input"))?;
    check_operand(weight, "norm weight", &[cols], x.dtype())?;
    let rows = x.elem_count() / cols.max(1);
    if cols > i32::MAX as usize || rows > i32::MAX as usize {
        bail!("rms_norm: shape {:?} beyond the kernel's grid", x.dims());
    }
    let dev = cuda_device(&x)?;
    if rows == 0 || cols == 0 {
        return Ok(x.zeros_like()?);
    }
    let mut out = unsafe { dev.alloc::<T>(rows * cols)? };
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = weight.storage_and_layout();
    let xv = view::<T>(cuda_storage(&xs, "x")?, xl)?;
    let wv = view::<T>(cuda_storage(&ws, "weight")?, wl)?;
    let vec =
        (cols.is_multiple_of(8) && xl.start_offset().is_multiple_of(8) && wl.start_offset().is_multiple_of(8)) as i32;
    let f = func(&dev, &format!("sgmi_rms_norm_{}", suffix(x.dtype())?), 0)?;
    let cols_i = cols as i32;
    let stream = dev.cuda_stream();
    let mut launch = stream.launch_builder(&f);
    launch.arg(&xv).arg(&wv).arg(&mut out).arg(&cols_i).arg(&eps).arg(&vec);
    let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (NORM_THREADS, 1, 1), shared_mem_bytes: 0 };
    unsafe { launch.launch(cfg) }.map_err(|e| anyhow!("rms_norm kernel: {e:?}"))?;
    drop(launch);
    drop((xs, ws));
    Ok(wrap(out, &dev, x.dims()))
}

struct SiluMul;

impl InplaceOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "sgmi-silu-mul"
    }

    fn cpu_fwd(
        &self,
        _: &mut candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<()> {
        candle_core::bail!("sgmi-silu-mul runs on CUDA only")
    }

    fn cuda_fwd(&self, g: &mut CudaStorage, gl: &Layout, u: &CudaStorage, ul: &Layout) -> candle_core::Result<()> {
        let fail = |e: String| candle_core::Error::Msg(format!("silu_mul: {e}"));
        if !gl.is_contiguous() || !ul.is_contiguous() || gl.shape() != ul.shape() {
            return Err(fail(format!(
                "gate {:?} and up {:?} must be contiguous, of one shape",
                gl.shape(),
                ul.shape()
            )));
        }
        let n = gl.shape().elem_count();
        if n == 0 {
            return Ok(());
        }
        let dev = g.device.clone();
        let name = suffix(g.dtype()).map(|s| format!("sgmi_silu_mul_{s}")).map_err(|e| fail(e.to_string()))?;
        let f = func(&dev, &name, 0).map_err(|e| fail(e.to_string()))?;
        let vec =
            (n.is_multiple_of(8) && gl.start_offset().is_multiple_of(8) && ul.start_offset().is_multiple_of(8)) as i32;
        let n_i = n as i64;
        let per_thread = if vec == 1 { 8 } else { 1 };
        let blocks = (n / per_thread).div_ceil(256).clamp(1, 132 * 16) as u32;
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let stream = dev.cuda_stream();
        macro_rules! launch {
            ($t:ty) => {{
                let uv = u.as_cuda_slice::<$t>()?.slice(ul.start_offset()..);
                let gs = g.as_cuda_slice_mut::<$t>()?;
                let mut gv = gs.slice_mut(gl.start_offset()..);
                let mut launch = stream.launch_builder(&f);
                launch.arg(&mut gv).arg(&uv).arg(&n_i).arg(&vec);
                unsafe { launch.launch(cfg) }.map_err(|e| fail(format!("{e:?}")))?;
            }};
        }
        match g.dtype() {
            DType::BF16 => launch!(bf16),
            _ => launch!(f16),
        }
        Ok(())
    }
}

/// `gate = silu(gate) · up` in place (transformers' `act_fn(gate_proj(x)) * up_proj(x)`: silu
/// in f32 rounded to the dtype, then the product rounded): `gate`, `up` contiguous f16/bf16 of
/// one shape. `gate` must be a tensor the caller owns (a projection's fresh output).
pub fn silu_mul_inplace(gate: &Tensor, up: &Tensor) -> Result<()> {
    if gate.dtype() != up.dtype() || !matches!(gate.dtype(), DType::F16 | DType::BF16) {
        bail!("silu_mul_inplace: gate {:?} and up {:?}: f16 or bf16, one dtype", gate.dtype(), up.dtype());
    }
    gate.inplace_op2(up, &SiluMul)?;
    Ok(())
}

// ---- linear layers ----------------------------------------------------------------------------

/// Whether [`linear`] handles `x` with `lin` (else: candle's `Linear`): the fused path applies
/// to `x`, and the weight (and bias) are contiguous in `x`'s dtype.
pub fn linear_supported(x: &Tensor, lin: &Linear) -> bool {
    applies(x)
        && x.is_contiguous()
        && lin.weight().dtype() == x.dtype()
        && lin.weight().is_contiguous()
        && lin.bias().is_none_or(|b| b.dtype() == x.dtype() && b.is_contiguous())
}

/// `x · Wᵀ + b`, ReLU'd if `relu`, over the last dimension of a contiguous f16/bf16 `x`, in one
/// cuBLASLt call (all rows as one GEMM, bias and ReLU in the epilogue, f32 accumulation).
pub fn linear(x: &Tensor, lin: &Linear, relu: bool) -> Result<Tensor> {
    match x.dtype() {
        DType::F16 => linear_t::<f16>(x, lin, relu),
        DType::BF16 => linear_t::<bf16>(x, lin, relu),
        other => bail!("linear: {other:?} input, the fused linear takes f16 or bf16"),
    }
}

fn linear_t<T: CudaDType + DeviceRepr>(x: &Tensor, lin: &Linear, relu: bool) -> Result<Tensor>
where
    CudaBlasLT: Matmul<T>,
{
    let dims = x.dims().to_vec();
    let in_dim = *dims.last().ok_or_else(|| anyhow!("linear: scalar input"))?;
    let (out_dim, w_in) = lin.weight().dims2()?;
    if w_in != in_dim {
        bail!("linear: input has {in_dim} features, weight {:?}", lin.weight().dims());
    }
    if !x.is_contiguous() || !lin.weight().is_contiguous() {
        bail!("linear: non-contiguous operand");
    }
    let dtype = x.dtype();
    if lin.weight().dtype() != dtype || lin.bias().is_some_and(|b| b.dtype() != dtype) {
        bail!("linear: input {dtype:?}, weight {:?}: one dtype expected", lin.weight().dtype());
    }
    let rows = x.elem_count() / in_dim.max(1);
    let dev = cuda_device(x)?;
    let mut shape = dims;
    *shape.last_mut().unwrap() = out_dim;
    if rows == 0 || out_dim == 0 {
        return Ok(Tensor::zeros(shape, dtype, x.device())?);
    }
    let mut out = unsafe { dev.alloc::<T>(rows * out_dim)? };
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = lin.weight().storage_and_layout();
    let xv = view::<T>(cuda_storage(&xs, "x")?, xl)?;
    let wv = view::<T>(cuda_storage(&ws, "weight")?, wl)?;
    let bias_guard = lin.bias().map(|b| b.storage_and_layout());
    let bv = match &bias_guard {
        Some((bs, bl)) => {
            if bl.shape().dims() != [out_dim] {
                bail!("linear: bias of shape {:?}, expected [{out_dim}]", bl.shape().dims());
            }
            Some(view::<T>(cuda_storage(bs, "bias")?, bl)?)
        }
        None => None,
    };
    // Column-major: outᵀ (out × rows) = op(W) (out × in) · xᵀ (in × rows); row-major W
    // (out × in) is column-major (in × out), hence transa.
    let cfg = MatmulConfig {
        transa: true,
        transb: false,
        transc: false,
        m: out_dim as u64,
        n: rows as u64,
        k: in_dim as u64,
        alpha: 1.0,
        lda: in_dim as i64,
        ldb: in_dim as i64,
        beta: 0.0,
        ldc: out_dim as i64,
        stride_a: None,
        stride_b: None,
        stride_c: None,
        stride_bias: None,
        batch_size: None,
    };
    let lt = blas_lt(&dev)?;
    let act = relu.then_some(Activation::Relu);
    let done = unsafe { lt.matmul(cfg, &wv, &xv, &mut out, bv.as_ref(), act.as_ref()) };
    drop((xs, ws, bias_guard));
    match done {
        Ok(()) => Ok(wrap(out, &dev, &shape)),
        Err(e) => {
            // No cuBLASLt algorithm for this shape/epilogue (or another cuBLASLt error): the GEMM
            // through candle, then the bias (+ReLU) kernel; said once per process.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| eprintln!("cuda_forward: cuBLASLt matmul {rows}×{in_dim}·{out_dim} failed ({e:?}); using cuBLAS + bias kernel"));
            let y = x.reshape((rows, in_dim))?.matmul(&lin.weight().t()?)?;
            match lin.bias() {
                Some(b) if dtype == DType::F16 && out_dim.is_multiple_of(8) => bias_act_inplace(&y, b, relu)?,
                Some(b) => {
                    let z = y.broadcast_add(b)?;
                    return Ok(if relu { z.relu()? } else { z }.reshape(shape)?);
                }
                None if relu => return Ok(y.relu()?.reshape(shape)?),
                None => {}
            }
            Ok(y.reshape(shape)?)
        }
    }
}

struct BiasAct {
    relu: bool,
}

impl InplaceOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "sgmi-bias-act"
    }

    fn cpu_fwd(
        &self,
        _: &mut candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<()> {
        candle_core::bail!("sgmi-bias-act runs on CUDA only")
    }

    fn cuda_fwd(&self, y: &mut CudaStorage, yl: &Layout, b: &CudaStorage, bl: &Layout) -> candle_core::Result<()> {
        let fail = |e: String| candle_core::Error::Msg(format!("bias_act: {e}"));
        let cols = *yl.shape().dims().last().unwrap_or(&0);
        let rows = yl.shape().elem_count() / cols.max(1);
        if !yl.is_contiguous() || !bl.is_contiguous() || bl.shape().dims() != [cols] {
            return Err(fail(format!(
                "y {:?} and bias {:?} must be contiguous, bias of the last dim",
                yl.shape(),
                bl.shape()
            )));
        }
        if !cols.is_multiple_of(8) || !yl.start_offset().is_multiple_of(8) || !bl.start_offset().is_multiple_of(8) {
            return Err(fail("rows and bias must be multiples of 8 elements, 16-byte aligned".into()));
        }
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let dev = y.device.clone();
        let f = func(&dev, "sgmi_bias_act_f16", 0).map_err(|e| fail(e.to_string()))?;
        let bv = b.as_cuda_slice::<f16>()?.slice(bl.start_offset()..);
        let yslice = y.as_cuda_slice_mut::<f16>()?;
        let mut yv = yslice.slice_mut(yl.start_offset()..);
        let (rows_i, cols_i, relu_i) = (rows as i64, cols as i32, self.relu as i32);
        let stream = dev.cuda_stream();
        let mut launch = stream.launch_builder(&f);
        launch.arg(&mut yv).arg(&bv).arg(&rows_i).arg(&cols_i).arg(&relu_i);
        let blocks = ((rows * cols / 8).div_ceil(256)).clamp(1, 132 * 16) as u32;
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        unsafe { launch.launch(cfg) }.map_err(|e| fail(format!("{e:?}")))?;
        Ok(())
    }
}

/// `y = y + bias` (ReLU'd if `relu`) in place, one pass: `y` contiguous f16 (…, cols) with cols a
/// multiple of 8, `bias` (cols) f16. Arithmetic in f32, one rounding to f16.
pub fn bias_act_inplace(y: &Tensor, bias: &Tensor, relu: bool) -> Result<()> {
    if y.dtype() != DType::F16 || bias.dtype() != DType::F16 {
        bail!("bias_act_inplace: f16 tensors expected");
    }
    y.inplace_op2(bias, &BiasAct { relu })?;
    Ok(())
}

/// [`bias_act_inplace`] with ReLU (the fc1 epilogue when the GEMM ran without one).
pub fn bias_relu_inplace(y: &Tensor, bias: &Tensor) -> Result<()> {
    bias_act_inplace(y, bias, true)
}

// ---- LM head and loss -------------------------------------------------------------------------

/// Σ next-token NLL per window of the LM head: `states` (rows, e) f16 or bf16, rows = windows ×
/// `per_window` (each window's predictions in order), `embed` (vocab, e) the head's weight in
/// the same dtype, `targets` the rows' target ids. Logits of LM_CHUNK rows at a time: one
/// cuBLAS GEMM to the dtype (f32 accumulation), one kernel for logsumexp − logit[target] per
/// row in f32; then the f64 sum per window, in a fixed order, and one transfer.
pub fn lm_head_nll(states: &Tensor, embed: &Tensor, targets: &[u32], per_window: usize) -> Result<Vec<f64>> {
    let (rows, e) = states.dims2()?;
    let (vocab, e2) = embed.dims2()?;
    if e != e2 {
        bail!("lm_head_nll: states have {e} features, the embedding {e2}");
    }
    if targets.len() != rows || per_window == 0 || !rows.is_multiple_of(per_window) {
        bail!("lm_head_nll: {rows} rows, {} targets, {per_window} per window", targets.len());
    }
    let dtype = states.dtype();
    if embed.dtype() != dtype {
        bail!("lm_head_nll: states {dtype:?}, head weight {:?}: one dtype expected", embed.dtype());
    }
    let rows_kernel = format!("sgmi_nll_rows_{}", suffix(dtype)?);
    if vocab > i32::MAX as usize || per_window > i32::MAX as usize {
        bail!("lm_head_nll: vocabulary or window beyond the kernel's indices");
    }
    let windows = rows / per_window;
    let dev = cuda_device(states)?;
    let stream = dev.cuda_stream();
    let t = Tensor::from_vec(targets.to_vec(), rows, states.device())?;
    let (ts, tl) = t.storage_and_layout();
    let tslice = cuda_storage(&ts, "targets")?.as_cuda_slice::<u32>()?;
    let mut nll = dev.alloc_zeros::<f32>(rows.max(1))?;
    let emb_t = embed.t()?;
    let f_rows = func(&dev, &rows_kernel, 0)?;
    let f_sums = func(&dev, "sgmi_nll_window_sums", 0)?;
    let mut r0 = 0;
    while r0 < rows {
        let n = LM_CHUNK.min(rows - r0);
        let logits = states.narrow(0, r0, n)?.matmul(&emb_t)?;
        let logits = if logits.is_contiguous() { logits } else { logits.contiguous()? };
        let (ls, ll) = logits.storage_and_layout();
        let lc = cuda_storage(&ls, "logits")?;
        let ld = vocab as i64;
        let vocab_i = vocab as i32;
        let vec = (vocab.is_multiple_of(8) && ll.start_offset().is_multiple_of(8)) as i32;
        let tv = tslice.slice(tl.start_offset() + r0..tl.start_offset() + r0 + n);
        let mut nv = nll.slice_mut(r0..r0 + n);
        let cfg = LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (NLL_THREADS, 1, 1), shared_mem_bytes: 0 };
        macro_rules! launch {
            ($t:ty) => {{
                let lv = view::<$t>(lc, ll)?;
                let mut launch = stream.launch_builder(&f_rows);
                launch.arg(&lv).arg(&ld).arg(&vocab_i).arg(&tv).arg(&mut nv).arg(&vec);
                unsafe { launch.launch(cfg) }.map_err(|e| anyhow!("nll_rows kernel: {e:?}"))?;
            }};
        }
        match dtype {
            DType::BF16 => launch!(bf16),
            _ => launch!(f16),
        }
        drop(ls);
        r0 += n;
    }
    let mut sums = dev.alloc_zeros::<f64>(windows.max(1))?;
    let per = per_window as i32;
    let mut launch = stream.launch_builder(&f_sums);
    launch.arg(&nll).arg(&per).arg(&mut sums);
    let cfg =
        LaunchConfig { grid_dim: (windows.max(1) as u32, 1, 1), block_dim: (SUM_THREADS, 1, 1), shared_mem_bytes: 0 };
    if windows > 0 {
        unsafe { launch.launch(cfg) }.map_err(|e| anyhow!("nll_window_sums kernel: {e:?}"))?;
    }
    drop(launch);
    let mut out = dev.clone_dtoh(&sums)?;
    out.truncate(windows);
    Ok(out)
}
