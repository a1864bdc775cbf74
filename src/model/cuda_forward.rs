//! The fast f16 forward pass on CUDA: launch wrappers for the kernels of
//! `src/model/kernels/attention.cu` (compiled by build.rs to an sm_XX cubin, embedded, loaded once
//! per device: no JIT at start) and a cuBLASLt linear with the bias (and ReLU) in its epilogue.
//!
//! * [`flash_attention`]: causal multi-head attention of q, k, v as the projections give them,
//!   (batch, seq, heads·head_dim) f16, strided rows allowed (slices of a fused qkv tensor): no
//!   transposes, no (seq × seq) scores in memory; logits and softmax in f32.
//! * [`linear`]: `x · Wᵀ + b` (ReLU'd if asked) as one cuBLASLt call, f32 accumulation, bias
//!   added before the single rounding to f16 (torch's addmm does the same; candle's `Linear`
//!   rounds the product, then adds the bias in f16).
//! * [`bias_act_inplace`]: `y = relu?(y + b)` in place, one pass (when the GEMM ran elsewhere).
//! * [`lm_head_nll`]: per-window Σ NLL of the tied LM head, chunk by chunk: f16 logits from
//!   cuBLAS (as the published code, which rounds logits to f16 before `.float()`), then one
//!   kernel computing logsumexp − logit[target] per row in f32; the logits never exist whole.
//!
//! [`applies`] decides whether the model's CUDA path uses these: a CUDA f16 tensor and the
//! switch on (the default; `SPARSEGPT_MI_CUDA_FUSED=0` or [`set_enabled`] turns it off, for
//! comparisons with candle's generic ops). checks/cuda/attention_check.cu checks the kernels
//! on a GPU against f64 references.

use anyhow::{anyhow, bail, Result};
use candle_core::cuda_backend::cudarc::cublaslt::{Activation, CudaBlasLT, Matmul, MatmulConfig};
use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute_enum;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaView, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::cuda_backend::{CudaDevice, CudaStorage, DeviceId};
use candle_core::op::BackpropOp;
use candle_core::{DType, Device, InplaceOp2, Layout, Storage, Tensor};
use candle_nn::Linear;
use half::f16;
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

/// Whether `x` takes the fused path: switch on, CUDA device, f16.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cuda() && x.dtype() == DType::F16 && enabled()
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

fn wrap_f16(out: CudaSlice<f16>, dev: &CudaDevice, shape: &[usize]) -> Tensor {
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

/// The f16 elements of a tensor from its layout's start (the layout still has to be respected).
fn f16_view<'a>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, f16>> {
    Ok(s.as_cuda_slice::<f16>()?.slice(l.start_offset()..))
}

// ---- attention --------------------------------------------------------------------------------

/// Whether the attention kernel handles these tensors (else: the generic path).
pub fn flash_supported(q: &Tensor, head_dim: usize) -> bool {
    applies(q) && FLASH_HEAD_DIMS.contains(&head_dim)
}

/// (batch stride, row stride) of a (b, s, heads·head_dim) f16 operand, checked for the kernel:
/// unit stride inside rows and 16-byte aligned rows.
fn rows_of(t: &Tensor, l: &Layout, what: &str, dims: (usize, usize, usize)) -> Result<(i64, i64)> {
    if t.dims() != [dims.0, dims.1, dims.2] {
        bail!("flash_attention: {what} has shape {:?}, expected {:?}", t.dims(), [dims.0, dims.1, dims.2]);
    }
    if t.dtype() != DType::F16 {
        bail!("flash_attention: {what} is {:?}, expected f16", t.dtype());
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

/// Causal attention: `q`, `k`, `v` (batch, seq, heads·head_dim) f16 on one CUDA device (any
/// batch and row strides that keep rows 16-byte aligned, e.g. slices of a fused qkv tensor);
/// q is scaled in the kernel, `half(float(q) · q_scale)` (HF's OPT: `q_proj(x) * scaling` in f16),
/// pass 1.0 for an already scaled q. Returns (batch, seq, heads·head_dim) f16, contiguous,
/// the heads' outputs side by side as out_proj reads them.
pub fn flash_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    head_dim: usize,
    q_scale: f32,
) -> Result<Tensor> {
    if !FLASH_HEAD_DIMS.contains(&head_dim) {
        bail!("flash_attention: head_dim {head_dim} is not one of {FLASH_HEAD_DIMS:?}");
    }
    let (b, s, hidden) = q.dims3()?;
    if hidden != heads * head_dim {
        bail!("flash_attention: q has {hidden} features, expected {heads} × {head_dim}");
    }
    if s > i32::MAX as usize || heads > 65535 || b > 65535 {
        bail!("flash_attention: shape {:?} beyond the kernel's grid", q.dims());
    }
    let dev = cuda_device(q)?;
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let dims = (b, s, hidden);
    let (q_bs, q_rs) = rows_of(q, ql, "q", dims)?;
    let (k_bs, k_rs) = rows_of(k, kl, "k", dims)?;
    let (v_bs, v_rs) = rows_of(v, vl, "v", dims)?;
    let (qc, kc, vc) = (cuda_storage(&qs, "q")?, cuda_storage(&ks, "k")?, cuda_storage(&vs, "v")?);
    let (qv, kv, vv) = (f16_view(qc, ql)?, f16_view(kc, kl)?, f16_view(vc, vl)?);
    let n = b * s * hidden;
    if n == 0 {
        return Ok(Tensor::zeros((b, s, hidden), DType::F16, q.device())?);
    }
    let mut out = unsafe { dev.alloc::<f16>(n)? };
    let warps = flash_warps(head_dim);
    let smem = flash_smem_bytes(head_dim, warps);
    let f = func(&dev, &format!("sgmi_flash_fwd_hd{head_dim}_w{warps}"), smem)?;
    let br = 16 * warps as usize;
    let (o_bs, o_rs) = ((s * hidden) as i64, hidden as i64);
    let seq = s as i32;
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
    let cfg = LaunchConfig {
        grid_dim: (s.div_ceil(br) as u32, heads as u32, b as u32),
        block_dim: (warps * 32, 1, 1),
        shared_mem_bytes: smem,
    };
    unsafe { launch.launch(cfg) }.map_err(|e| anyhow!("flash_attention kernel: {e:?}"))?;
    drop(launch);
    drop((qs, ks, vs));
    Ok(wrap_f16(out, &dev, &[b, s, hidden]))
}

// ---- linear layers ----------------------------------------------------------------------------

/// Whether [`linear`] handles `x` with `lin` (else: candle's `Linear`).
pub fn linear_supported(x: &Tensor, lin: &Linear) -> bool {
    applies(x)
        && x.is_contiguous()
        && lin.weight().dtype() == DType::F16
        && lin.weight().is_contiguous()
        && lin.bias().is_none_or(|b| b.dtype() == DType::F16 && b.is_contiguous())
}

/// `x · Wᵀ + b`, ReLU'd if `relu`, over the last dimension of a contiguous f16 `x`, in one
/// cuBLASLt call (all rows as one GEMM, bias and ReLU in the epilogue, f32 accumulation).
pub fn linear(x: &Tensor, lin: &Linear, relu: bool) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let in_dim = *dims.last().ok_or_else(|| anyhow!("linear: scalar input"))?;
    let (out_dim, w_in) = lin.weight().dims2()?;
    if w_in != in_dim {
        bail!("linear: input has {in_dim} features, weight {:?}", lin.weight().dims());
    }
    if !x.is_contiguous() || !lin.weight().is_contiguous() {
        bail!("linear: non-contiguous operand");
    }
    let rows = x.elem_count() / in_dim.max(1);
    let dev = cuda_device(x)?;
    let mut shape = dims;
    *shape.last_mut().unwrap() = out_dim;
    if rows == 0 || out_dim == 0 {
        return Ok(Tensor::zeros(shape, DType::F16, x.device())?);
    }
    let mut out = unsafe { dev.alloc::<f16>(rows * out_dim)? };
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = lin.weight().storage_and_layout();
    let xv = f16_view(cuda_storage(&xs, "x")?, xl)?;
    let wv = f16_view(cuda_storage(&ws, "weight")?, wl)?;
    let bias_guard = lin.bias().map(|b| b.storage_and_layout());
    let bv = match &bias_guard {
        Some((bs, bl)) => {
            if bl.shape().dims() != [out_dim] {
                bail!("linear: bias of shape {:?}, expected [{out_dim}]", bl.shape().dims());
            }
            Some(f16_view(cuda_storage(bs, "bias")?, bl)?)
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
        Ok(()) => Ok(wrap_f16(out, &dev, &shape)),
        Err(e) => {
            // No cuBLASLt algorithm for this shape/epilogue (or another cuBLASLt error): the GEMM
            // through candle, then the bias (+ReLU) kernel; said once per process.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| eprintln!("cuda_forward: cuBLASLt matmul {rows}×{in_dim}·{out_dim} failed ({e:?}); using cuBLAS + bias kernel"));
            let y = x.reshape((rows, in_dim))?.matmul(&lin.weight().t()?)?;
            match lin.bias() {
                Some(b) if out_dim.is_multiple_of(8) => bias_act_inplace(&y, b, relu)?,
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

/// Σ next-token NLL per window of the tied LM head: `states` (rows, e) f16, rows = windows ×
/// `per_window` (each window's predictions in order), `embed` (vocab, e) f16, `targets` the
/// rows' target ids. Logits of LM_CHUNK rows at a time: one cuBLAS GEMM to f16 (f32
/// accumulation), one kernel for logsumexp − logit[target] per row in f32; then the f64 sum per
/// window, in a fixed order, and one transfer.
pub fn lm_head_nll(states: &Tensor, embed: &Tensor, targets: &[u32], per_window: usize) -> Result<Vec<f64>> {
    let (rows, e) = states.dims2()?;
    let (vocab, e2) = embed.dims2()?;
    if e != e2 {
        bail!("lm_head_nll: states have {e} features, the embedding {e2}");
    }
    if targets.len() != rows || per_window == 0 || !rows.is_multiple_of(per_window) {
        bail!("lm_head_nll: {rows} rows, {} targets, {per_window} per window", targets.len());
    }
    if states.dtype() != DType::F16 || embed.dtype() != DType::F16 {
        bail!("lm_head_nll: f16 tensors expected");
    }
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
    let f_rows = func(&dev, "sgmi_nll_rows_f16", 0)?;
    let f_sums = func(&dev, "sgmi_nll_window_sums", 0)?;
    let mut r0 = 0;
    while r0 < rows {
        let n = LM_CHUNK.min(rows - r0);
        let logits = states.narrow(0, r0, n)?.matmul(&emb_t)?;
        let logits = if logits.is_contiguous() { logits } else { logits.contiguous()? };
        let (ls, ll) = logits.storage_and_layout();
        let lv = f16_view(cuda_storage(&ls, "logits")?, ll)?;
        let ld = vocab as i64;
        let vocab_i = vocab as i32;
        let vec = (vocab.is_multiple_of(8) && ll.start_offset().is_multiple_of(8)) as i32;
        let tv = tslice.slice(tl.start_offset() + r0..tl.start_offset() + r0 + n);
        let mut nv = nll.slice_mut(r0..r0 + n);
        let mut launch = stream.launch_builder(&f_rows);
        launch.arg(&lv).arg(&ld).arg(&vocab_i).arg(&tv).arg(&mut nv).arg(&vec);
        let cfg = LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (NLL_THREADS, 1, 1), shared_mem_bytes: 0 };
        unsafe { launch.launch(cfg) }.map_err(|e| anyhow!("nll_rows kernel: {e:?}"))?;
        drop(launch);
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
