//! One OPT decoder layer and the names of its linears: `forward` with an optional observer
//! that sees every linear's input (the calibration pass), and the host fast path for f32.

use super::weights::Weights;
use super::OptConfig;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};
use serde::Serialize;

pub(crate) const LAYER_NORM_EPS: f64 = 1e-5;

/// The six linear layers of a decoder layer, in the order the published code visits them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum LinearKind {
    Q,
    K,
    V,
    Out,
    Fc1,
    Fc2,
}

impl LinearKind {
    pub const ALL: [LinearKind; 6] =
        [LinearKind::K, LinearKind::V, LinearKind::Q, LinearKind::Out, LinearKind::Fc1, LinearKind::Fc2];

    /// The module path inside a decoder layer, as in the checkpoint.
    pub fn path(self) -> &'static str {
        match self {
            LinearKind::Q => "self_attn.q_proj",
            LinearKind::K => "self_attn.k_proj",
            LinearKind::V => "self_attn.v_proj",
            LinearKind::Out => "self_attn.out_proj",
            LinearKind::Fc1 => "fc1",
            LinearKind::Fc2 => "fc2",
        }
    }

    pub fn from_path(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.path() == name || k.path().rsplit('.').next() == Some(name))
    }

    /// Where this linear reads its input; q, k and v read the same one.
    pub fn input_site(self) -> InputSite {
        match self {
            LinearKind::Q | LinearKind::K | LinearKind::V => InputSite::Attn,
            LinearKind::Out => InputSite::OutProj,
            LinearKind::Fc1 => InputSite::Fc1,
            LinearKind::Fc2 => InputSite::Fc2,
        }
    }
}

/// The four distinct linear inputs of a decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputSite {
    Attn,
    OutProj,
    Fc1,
    Fc2,
}

impl InputSite {
    pub const ALL: [InputSite; 4] = [InputSite::Attn, InputSite::OutProj, InputSite::Fc1, InputSite::Fc2];
}

/// Receives each linear input during a forward pass (calibration statistics).
pub type Observer<'a> = dyn FnMut(InputSite, &Tensor) -> Result<()> + 'a;

#[derive(Clone)]
pub struct DecoderLayer {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub fc1: Linear,
    pub fc2: Linear,
    pub self_attn_layer_norm: LayerNorm,
    pub final_layer_norm: LayerNorm,
    num_heads: usize,
    head_dim: usize,
    pre_ln: bool,
}

pub(crate) fn linear_to_device(l: &Linear, device: &Device) -> Result<Linear> {
    Ok(Linear::new(l.weight().to_device(device)?, l.bias().map(|b| b.to_device(device)).transpose()?))
}

pub(crate) fn layer_norm_to_device(l: &LayerNorm, device: &Device) -> Result<LayerNorm> {
    let bias = l.bias().ok_or_else(|| anyhow::anyhow!("layer norm without bias"))?;
    Ok(LayerNorm::new(l.weight().to_device(device)?, bias.to_device(device)?, LAYER_NORM_EPS))
}

pub(crate) fn load_linear(w: &Weights, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
    let weight = w.get_shaped(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
    let bias = if bias { Some(w.get_shaped(&format!("{prefix}.bias"), &[out_dim])?) } else { None };
    Ok(Linear::new(weight, bias))
}

pub(crate) fn load_layer_norm(
    w: &Weights,
    prefix: &str,
    dim: usize,
    device: &Device,
    dtype: DType,
) -> Result<LayerNorm> {
    match w.get_opt(&format!("{prefix}.weight")) {
        Some(weight) => {
            if weight.dims() != [dim] {
                bail!("tensor '{prefix}.weight' has shape {:?}, expected [{dim}]", weight.dims());
            }
            let bias = w.get_shaped(&format!("{prefix}.bias"), &[dim])?;
            Ok(LayerNorm::new(weight, bias, LAYER_NORM_EPS))
        }
        // layer_norm_elementwise_affine = false: a plain normalisation.
        None => {
            Ok(LayerNorm::new(Tensor::ones(dim, dtype, device)?, Tensor::zeros(dim, dtype, device)?, LAYER_NORM_EPS))
        }
    }
}

impl DecoderLayer {
    pub(crate) fn load(w: &Weights, cfg: &OptConfig, i: usize, device: &Device, dtype: DType) -> Result<Self> {
        let p = format!("decoder.layers.{i}");
        let h = cfg.hidden_size;
        let b = cfg.enable_bias;
        Ok(DecoderLayer {
            q_proj: load_linear(w, &format!("{p}.self_attn.q_proj"), h, h, b)?,
            k_proj: load_linear(w, &format!("{p}.self_attn.k_proj"), h, h, b)?,
            v_proj: load_linear(w, &format!("{p}.self_attn.v_proj"), h, h, b)?,
            out_proj: load_linear(w, &format!("{p}.self_attn.out_proj"), h, h, b)?,
            fc1: load_linear(w, &format!("{p}.fc1"), h, cfg.ffn_dim, b)?,
            fc2: load_linear(w, &format!("{p}.fc2"), cfg.ffn_dim, h, b)?,
            self_attn_layer_norm: load_layer_norm(w, &format!("{p}.self_attn_layer_norm"), h, device, dtype)?,
            final_layer_norm: load_layer_norm(w, &format!("{p}.final_layer_norm"), h, device, dtype)?,
            num_heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            pre_ln: cfg.do_layer_norm_before,
        })
    }

    /// A copy of this layer with its tensors on `device` (a cheap handle copy where they
    /// already are there): offloaded models bring one layer at a time to the GPU this way.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let lin = |l: &Linear| linear_to_device(l, device);
        let ln = |l: &LayerNorm| layer_norm_to_device(l, device);
        Ok(DecoderLayer {
            q_proj: lin(&self.q_proj)?,
            k_proj: lin(&self.k_proj)?,
            v_proj: lin(&self.v_proj)?,
            out_proj: lin(&self.out_proj)?,
            fc1: lin(&self.fc1)?,
            fc2: lin(&self.fc2)?,
            self_attn_layer_norm: ln(&self.self_attn_layer_norm)?,
            final_layer_norm: ln(&self.final_layer_norm)?,
            ..self.clone()
        })
    }

    pub fn linear(&self, kind: LinearKind) -> &Linear {
        match kind {
            LinearKind::Q => &self.q_proj,
            LinearKind::K => &self.k_proj,
            LinearKind::V => &self.v_proj,
            LinearKind::Out => &self.out_proj,
            LinearKind::Fc1 => &self.fc1,
            LinearKind::Fc2 => &self.fc2,
        }
    }

    /// Replaces a linear's weight (shape and dtype kept), e.g. after compression: written into
    /// the old weight's buffer where it can be (`device_memory::overwrite`), so handles sharing
    /// it (a layer's `to_device` copy on its own device) see the new values.
    pub fn set_weight(&mut self, kind: LinearKind, weight: Tensor) -> Result<()> {
        let old = self.linear(kind);
        if weight.dims() != old.weight().dims() {
            bail!("new weight for {} has shape {:?}, expected {:?}", kind.path(), weight.dims(), old.weight().dims());
        }
        let weight = weight.to_dtype(old.weight().dtype())?.to_device(old.weight().device())?;
        if crate::device_memory::overwrite(old.weight(), &weight)? {
            return Ok(());
        }
        let new = Linear::new(weight, old.bias().cloned());
        match kind {
            LinearKind::Q => self.q_proj = new,
            LinearKind::K => self.k_proj = new,
            LinearKind::V => self.v_proj = new,
            LinearKind::Out => self.out_proj = new,
            LinearKind::Fc1 => self.fc1 = new,
            LinearKind::Fc2 => self.fc2 = new,
        }
        Ok(())
    }

    /// One decoder layer on `x` (batch, seq, hidden) with an additive causal `mask` (seq, seq).
    /// `observe` sees the input of every linear, before that linear runs.
    pub fn forward(&self, x: &Tensor, mask: &Tensor, mut observe: Option<&mut Observer>) -> Result<Tensor> {
        let residual = x;
        let h = if self.pre_ln { self.self_attn_layer_norm.forward(x)? } else { x.clone() };
        let h = self.attention(&h, mask, &mut observe)?;
        let mut h = (residual + h)?;
        if !self.pre_ln {
            h = self.self_attn_layer_norm.forward(&h)?;
        }
        let residual = h.clone();
        let f = if self.pre_ln { self.final_layer_norm.forward(&h)? } else { h };
        if let Some(obs) = observe.as_mut() {
            obs(InputSite::Fc1, &f)?;
        }
        let f = linear_forward(&self.fc1, &f, true)?;
        if let Some(obs) = observe.as_mut() {
            obs(InputSite::Fc2, &f)?;
        }
        let f = linear_forward(&self.fc2, &f, false)?;
        let mut out = (residual + f)?;
        if !self.pre_ln {
            out = self.final_layer_norm.forward(&out)?;
        }
        Ok(out)
    }

    fn attention(&self, x: &Tensor, mask: &Tensor, observe: &mut Option<&mut Observer>) -> Result<Tensor> {
        let (b, s, hidden) = x.dims3()?;
        if let Some(obs) = observe.as_mut() {
            obs(InputSite::Attn, x)?;
        }
        let heads = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, s, self.num_heads, self.head_dim))?.transpose(1, 2)?.contiguous()?)
        };
        let scaling = (self.head_dim as f64).powf(-0.5);
        if x.device().is_cpu() && x.dtype() == DType::F32 && super::cpu_kernels::fused_enabled() {
            let flat = |t: Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
            let mut q = flat(linear_forward(&self.q_proj, x, false)?)?;
            q.iter_mut().for_each(|v| *v *= scaling as f32);
            let k = flat(linear_forward(&self.k_proj, x, false)?)?;
            let v = flat(linear_forward(&self.v_proj, x, false)?)?;
            let ctx = super::cpu_kernels::causal_attention(&q, &k, &v, b, s, self.num_heads, self.head_dim);
            let ctx = Tensor::from_vec(ctx, (b, s, hidden), x.device())?;
            if let Some(obs) = observe.as_mut() {
                obs(InputSite::OutProj, &ctx)?;
            }
            return linear_forward(&self.out_proj, &ctx, false);
        }
        #[cfg(feature = "cuda")]
        if super::cuda_forward::flash_supported(x, self.head_dim) {
            // Fused CUDA f16 path: bias in the GEMM epilogue, q scaled in the attention kernel as
            // HF rounds it (half(float(q) · scaling)), scores in f32 and never in memory.
            let q = linear_forward(&self.q_proj, x, false)?;
            let k = linear_forward(&self.k_proj, x, false)?;
            let v = linear_forward(&self.v_proj, x, false)?;
            let ctx = super::cuda_forward::flash_attention(&q, &k, &v, self.num_heads, self.head_dim, scaling as f32)?;
            if let Some(obs) = observe.as_mut() {
                obs(InputSite::OutProj, &ctx)?;
            }
            return linear_forward(&self.out_proj, &ctx, false);
        }
        let q = heads((self.q_proj.forward(x)? * scaling)?)?;
        let k = heads(self.k_proj.forward(x)?)?;
        let v = heads(self.v_proj.forward(x)?)?;
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
            let scores = scores.broadcast_add(&mask.to_dtype(DType::F32)?)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
            parts.push(probs.matmul(&v)?);
        }
        let ctx = Tensor::cat(&parts, 0)?.transpose(1, 2)?.reshape((b, s, hidden))?;
        if let Some(obs) = observe.as_mut() {
            obs(InputSite::OutProj, &ctx)?;
        }
        Ok(self.out_proj.forward(&ctx)?)
    }
}

/// Windows whose attention scores are formed at once on the generic (GPU) path.
const ATTENTION_WINDOWS: usize = 2;

/// `lin(x)`, ReLU'd if asked: the fused host kernel for contiguous f32 host tensors,
/// candle's ops otherwise.
fn linear_forward(lin: &Linear, x: &Tensor, relu: bool) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::cuda_forward::linear_supported(x, lin) {
        return super::cuda_forward::linear(x, lin, relu);
    }
    use super::cpu_kernels::{linear, with_host_f32};
    let dims = x.dims().to_vec();
    let in_dim = *dims.last().unwrap_or(&0);
    let rows = x.elem_count() / in_dim.max(1);
    let out_dim = lin.weight().dims()[0];
    let fused = with_host_f32(x, |xs| {
        with_host_f32(lin.weight(), |w| match lin.bias() {
            Some(b) => with_host_f32(b, |b| linear(xs, rows, w, Some(b), out_dim, relu)),
            None => Some(linear(xs, rows, w, None, out_dim, relu)),
        })
    });
    if let Some(Some(Some(y))) = fused {
        let mut shape = dims;
        *shape.last_mut().unwrap() = out_dim;
        return Ok(Tensor::from_vec(y, shape, x.device())?);
    }
    let y = lin.forward(x)?;
    Ok(if relu { relu_keeping_nan(&y)? } else { y })
}

/// torch's relu: negatives to 0, NaN kept. candle's `relu` is max(x, 0), which on the host
/// and the GPU turns a NaN into 0 and would hide it.
pub(crate) fn relu_keeping_nan(y: &Tensor) -> Result<Tensor> {
    let zero = Tensor::zeros((), y.dtype(), y.device())?.broadcast_as(y.shape())?;
    Ok(y.lt(0f64)?.where_cond(&zero, y)?)
}
