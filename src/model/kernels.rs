//! The one place that chooses how a layer's parts run: the fused host kernels (contiguous f32
//! on the CPU), the fused CUDA kernels (f16 and bf16, every family: flash attention with
//! grouped-query heads, RoPE with the per-head norm, RMSNorm, SiLU·up, cuBLASLt linears), or
//! candle's generic ops (every other case: the switch `SPARSEGPT_MI_CUDA_FUSED=0`, head widths
//! the kernels are not built for, the generic-path tests). The layer says what it computes;
//! these functions pick the implementation.

use super::cpu_kernels;
use super::norm::Norm;
use super::rope::RopeTables;
use anyhow::Result;
use candle_core::{DType, Module, Tensor};
use candle_nn::Linear;

/// Where attention's head_dim^-½ scaling applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionScale {
    /// To q before q·kᵀ, rounded to the compute dtype (HF's OPT: `q_proj(x) * scaling`).
    Query,
    /// To the f32 logits (torch's scaled_dot_product_attention, which the rotary families'
    /// attention calls). The generic path scales q in both cases.
    Logits,
}

/// What attention computes: heads over key/value heads (grouped-query when fewer), the head
/// width, and where the scaling applies.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: AttentionScale,
}

/// The implementation of one attention block's projections and scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionPath {
    /// Host f32: fused linears and block-wise causal attention (`cpu_kernels`).
    HostFused,
    /// CUDA f16/bf16: cuBLASLt linears, the rotary kernel, the flash kernel (the scaling
    /// inside it).
    #[cfg(feature = "cuda")]
    CudaFused,
    /// candle's ops, scores and softmax in f32.
    Generic,
}

/// The path for an attention block whose input is `x`.
pub fn attention_path(x: &Tensor, shape: &AttentionShape) -> AttentionPath {
    if x.device().is_cpu() && x.dtype() == DType::F32 && cpu_kernels::fused_enabled() {
        return AttentionPath::HostFused;
    }
    #[cfg(feature = "cuda")]
    if super::cuda_forward::flash_supported(x, shape.head_dim) && shape.heads.is_multiple_of(shape.kv_heads) {
        return AttentionPath::CudaFused;
    }
    let _ = shape;
    AttentionPath::Generic
}

/// A projection of an attention block on `path` (the generic path keeps candle's `Linear`).
pub fn project(lin: &Linear, x: &Tensor, path: AttentionPath) -> Result<Tensor> {
    match path {
        AttentionPath::Generic => Ok(lin.forward(x)?),
        _ => linear(lin, x, Activation::None),
    }
}

/// Causal attention of `q` (batch, seq, heads·head_dim) over `k`, `v` (batch, seq,
/// kv_heads·head_dim), scaled by head_dim^-½; `mask` is the additive (seq, seq) causal mask of
/// the generic path. Returns the context (batch, seq, heads·head_dim) as the output
/// projection reads it.
pub fn attend(
    path: AttentionPath,
    (q, k, v): (Tensor, Tensor, Tensor),
    shape: &AttentionShape,
    mask: &Tensor,
) -> Result<Tensor> {
    let scaling = (shape.head_dim as f64).powf(-0.5);
    let (b, s, width) = q.dims3()?;
    match path {
        AttentionPath::HostFused => {
            let flat = |t: Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
            let mut q = flat(q)?;
            q.iter_mut().for_each(|v| *v *= scaling as f32);
            let (k, v) = (flat(k)?, flat(v)?);
            let ctx = cpu_kernels::causal_attention_grouped(
                (&q, &k, &v),
                b,
                s,
                (shape.heads, shape.kv_heads),
                shape.head_dim,
            );
            Ok(Tensor::from_vec(ctx, (b, s, width), &candle_core::Device::Cpu)?)
        }
        #[cfg(feature = "cuda")]
        AttentionPath::CudaFused => {
            // Bias in the GEMM epilogue, the scaling inside the attention kernel (q as HF's OPT
            // rounds it, half(float(q) · scaling), or the f32 logits as torch's SDPA does),
            // scores in f32 and never in memory, K/V heads shared by their query heads.
            let (q_scale, logit_scale) = match shape.scale {
                AttentionScale::Query => (scaling as f32, 1.0),
                AttentionScale::Logits => (1.0, scaling as f32),
            };
            let p = super::cuda_forward::FlashParams {
                heads: shape.heads,
                kv_heads: shape.kv_heads,
                head_dim: shape.head_dim,
                q_scale,
                logit_scale,
            };
            super::cuda_forward::flash_attention(&q, &k, &v, &p)
        }
        AttentionPath::Generic => generic_attention(q, k, v, shape, scaling, mask),
    }
}

/// q and k of a rotary family placed for attention: the per-head norms first, where the family
/// has them (Qwen3's q_norm, k_norm: RMSNorm over each head), then the rotation of positions
/// 0..seq. On the fused CUDA path one kernel per tensor does both in place (q and k are the
/// projections' fresh outputs); elsewhere candle's ops.
pub fn position_qk(
    path: AttentionPath,
    (q, k): (Tensor, Tensor),
    rope: &RopeTables,
    norms: Option<(&Norm, &Norm)>,
    shape: &AttentionShape,
) -> Result<(Tensor, Tensor)> {
    #[cfg(feature = "cuda")]
    if path == AttentionPath::CudaFused {
        let dtype = q.dtype();
        let fused_norms = norms.map(|(qn, kn)| rms_weight(qn, dtype).zip(rms_weight(kn, dtype)));
        let tables_fit = rope.cos.dtype() == q.dtype() && rope.cos.device().same_device(q.device());
        if tables_fit && !matches!(fused_norms, Some(None)) {
            let (qn, kn) = fused_norms.flatten().unzip();
            let q = if q.is_contiguous() { q } else { q.contiguous()? };
            let k = if k.is_contiguous() { k } else { k.contiguous()? };
            super::cuda_forward::rope_inplace(&q, (shape.heads, shape.head_dim), &rope.cos, &rope.sin, qn)?;
            super::cuda_forward::rope_inplace(&k, (shape.kv_heads, shape.head_dim), &rope.cos, &rope.sin, kn)?;
            return Ok((q, k));
        }
    }
    let _ = path;
    let per_head = |t: Tensor, norm: Option<&Norm>, heads: usize| -> Result<Tensor> {
        let Some(norm) = norm else { return Ok(t) };
        let (b, s, w) = t.dims3()?;
        Ok(norm.forward(&t.reshape((b, s, heads, w / heads))?)?.reshape((b, s, w))?)
    };
    let (qn, kn) = norms.unzip();
    let q = per_head(q, qn, shape.heads)?;
    let k = per_head(k, kn, shape.kv_heads)?;
    Ok((rope.apply(&q, shape.heads)?, rope.apply(&k, shape.kv_heads)?))
}

/// The weight and eps of an RMSNorm in `dtype` (what the fused rotary kernel takes).
#[cfg(feature = "cuda")]
fn rms_weight(norm: &Norm, dtype: DType) -> Option<(&Tensor, f32)> {
    match norm {
        Norm::Rms { weight, eps } if weight.dtype() == dtype => Some((weight, *eps as f32)),
        _ => None,
    }
}

impl Norm {
    /// The norm of `x`'s last dimension ([`norm`] picks how).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        norm(self, x)
    }
}

/// A norm of `x`'s last dimension: the fused CUDA RMSNorm for f16/bf16 on the GPU (transformers'
/// rounding order), candle's ops otherwise (LayerNorm everywhere: OPT's path is candle's).
pub fn norm(norm: &Norm, x: &Tensor) -> Result<Tensor> {
    match norm {
        Norm::Layer(l) => Ok(l.forward(x)?),
        Norm::Rms { weight, eps } => {
            #[cfg(feature = "cuda")]
            if super::cuda_forward::applies(x) && weight.dtype() == x.dtype() {
                return super::cuda_forward::rms_norm(x, weight, *eps as f32);
            }
            // candle's rms_norm: mean of squares and scaling in f32 for f32/f16/bf16 inputs,
            // one rounding at the end (transformers rounds x·rsqrt before the weight).
            Ok(candle_nn::RmsNorm::new(weight.clone(), *eps).forward(&x.contiguous()?)?)
        }
    }
}

/// Windows whose attention scores are formed at once on the generic (GPU) path.
const ATTENTION_WINDOWS: usize = 2;

fn generic_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    shape: &AttentionShape,
    scaling: f64,
    mask: &Tensor,
) -> Result<Tensor> {
    let (b, s, width) = q.dims3()?;
    let (heads, kv_heads, d) = (shape.heads, shape.kv_heads, shape.head_dim);
    let group = heads / kv_heads;
    let to_heads =
        |t: Tensor, n: usize| -> Result<Tensor> { Ok(t.reshape((b, s, n, d))?.transpose(1, 2)?.contiguous()?) };
    let mut q = to_heads((q * scaling)?, heads)?;
    let k = to_heads(k, kv_heads)?;
    let v = to_heads(v, kv_heads)?;
    let mut mask = mask.to_dtype(DType::F32)?;
    if group > 1 {
        // The query heads of one key/value head (consecutive, as transformers' repeat_kv
        // pairs them) as one taller matrix: K and V are read, never repeated in memory.
        q = q.reshape((b, kv_heads, group * s, d))?;
        mask = mask.repeat((group, 1))?;
    }
    // Scores and probabilities of a few windows at a time: the (heads, seq, seq) tensors,
    // with their f32 copies, are most of the GPU memory at 8 windows per pass; the
    // projections around them stay batched.
    let mut parts = Vec::new();
    for w0 in (0..b).step_by(ATTENTION_WINDOWS) {
        let n = ATTENTION_WINDOWS.min(b - w0);
        let (q, k, v) = (q.narrow(0, w0, n)?, k.narrow(0, w0, n)?, v.narrow(0, w0, n)?);
        // q·kᵀ formed and kept in f32, as torch's attention does: some models (trained in
        // bf16) have heads whose logits pass f16's range (opt-mini-c: ~9.4e5).
        let scores = q.to_dtype(DType::F32)?.matmul(&k.to_dtype(DType::F32)?.t()?)?;
        let scores = scores.broadcast_add(&mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        parts.push(probs.matmul(&v)?);
    }
    let ctx = Tensor::cat(&parts, 0)?;
    let ctx = if group > 1 { ctx.reshape((b, heads, s, d))? } else { ctx };
    Ok(ctx.transpose(1, 2)?.reshape((b, s, width))?)
}

/// What follows a linear inside the same kernel where one can fuse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu,
}

/// `lin(x)`, activated: the fused CUDA GEMM for f16, the fused host kernel for contiguous
/// f32 host tensors, candle's ops otherwise.
pub fn linear(lin: &Linear, x: &Tensor, act: Activation) -> Result<Tensor> {
    let relu = act == Activation::Relu;
    #[cfg(feature = "cuda")]
    if super::cuda_forward::linear_supported(x, lin) {
        return super::cuda_forward::linear(x, lin, relu);
    }
    if let Some(y) = host_linear(lin, x, relu)? {
        return Ok(y);
    }
    let y = lin.forward(x)?;
    Ok(if relu { relu_keeping_nan(&y)? } else { y })
}

/// The host kernel's `lin(x)` where `x`, the weight and the bias are contiguous f32 host tensors.
fn host_linear(lin: &Linear, x: &Tensor, relu: bool) -> Result<Option<Tensor>> {
    use cpu_kernels::with_host_f32;
    let dims = x.dims().to_vec();
    let in_dim = *dims.last().unwrap_or(&0);
    let rows = x.elem_count() / in_dim.max(1);
    let out_dim = lin.weight().dims()[0];
    let fused = with_host_f32(x, |xs| {
        with_host_f32(lin.weight(), |w| match lin.bias() {
            Some(b) => with_host_f32(b, |b| cpu_kernels::linear(xs, rows, w, Some(b), out_dim, relu)),
            None => Some(cpu_kernels::linear(xs, rows, w, None, out_dim, relu)),
        })
    });
    let Some(Some(Some(y))) = fused else { return Ok(None) };
    let mut shape = dims;
    *shape.last_mut().unwrap() = out_dim;
    Ok(Some(Tensor::from_vec(y, shape, x.device())?))
}

/// The gated MLP's inner activation, silu(gate) · up, as transformers computes it: on the fused
/// CUDA path one kernel in `gate`'s buffer (the gate projection's fresh output, taken by value),
/// candle's ops otherwise.
pub fn silu_gated(gate: Tensor, up: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::cuda_forward::applies(&gate)
        && gate.dtype() == up.dtype()
        && gate.dims() == up.dims()
        && gate.is_contiguous()
        && up.is_contiguous()
    {
        super::cuda_forward::silu_mul_inplace(&gate, up)?;
        return Ok(gate);
    }
    Ok((candle_nn::ops::silu(&gate)? * up)?)
}

/// torch's relu: negatives to 0, NaN kept. candle's `relu` is max(x, 0), which on the host
/// and the GPU turns a NaN into 0 and would hide it.
pub(crate) fn relu_keeping_nan(y: &Tensor) -> Result<Tensor> {
    let zero = Tensor::zeros((), y.dtype(), y.device())?.broadcast_as(y.shape())?;
    Ok(y.lt(0f64)?.where_cond(&zero, y)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn shape(heads: usize, kv_heads: usize) -> AttentionShape {
        AttentionShape { heads, kv_heads, head_dim: 4, scale: AttentionScale::Logits }
    }

    #[test]
    fn the_host_kernels_take_contiguous_f32_only() {
        let x = Tensor::zeros((1, 3, 8), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(attention_path(&x, &shape(2, 1)), AttentionPath::HostFused);
        assert_eq!(attention_path(&x.to_dtype(DType::F16).unwrap(), &shape(2, 1)), AttentionPath::Generic);
        let generic = cpu_kernels::with_generic_path(|| attention_path(&x, &shape(2, 1)));
        assert_eq!(generic, AttentionPath::Generic);
    }

    #[test]
    fn grouped_queries_agree_between_host_and_generic_paths() {
        // 4 query heads over 2 key/value heads, 5 positions, head width 4.
        let (b, s, heads, kv, d) = (2, 5, 4, 2, 4);
        let gen = |n: usize, salt: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + salt) * 0.37).sin()).collect() };
        let q = Tensor::from_vec(gen(b * s * heads * d, 1.0), (b, s, heads * d), &Device::Cpu).unwrap();
        let k = Tensor::from_vec(gen(b * s * kv * d, 2.0), (b, s, kv * d), &Device::Cpu).unwrap();
        let v = Tensor::from_vec(gen(b * s * kv * d, 3.0), (b, s, kv * d), &Device::Cpu).unwrap();
        let mask_data: Vec<f32> =
            (0..s).flat_map(|i| (0..s).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY })).collect();
        let mask = Tensor::from_vec(mask_data, (s, s), &Device::Cpu).unwrap();
        let sh = AttentionShape { heads, kv_heads: kv, head_dim: d, scale: AttentionScale::Logits };
        let host = attend(AttentionPath::HostFused, (q.clone(), k.clone(), v.clone()), &sh, &mask).unwrap();
        let generic = attend(AttentionPath::Generic, (q, k, v), &sh, &mask).unwrap();
        let diff = (host - generic).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6, "max |host - generic| = {diff}");
    }
}
