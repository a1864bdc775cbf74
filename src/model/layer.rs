//! One decoder layer of any family: `forward` with an optional
//! observer that sees every linear's input (the calibration pass). The layer says what it
//! computes from its family's parts; `kernels` chooses how each part runs.

use super::family::{DecoderConfig, MlpKind};
use super::kernels::{self, Activation, AttentionScale, AttentionShape};
pub use super::linears::{InputSite, LinearKind};
use super::norm::{load_norm, Norm};
use super::rope::RopeTables;
use super::weights::Weights;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::Linear;

/// Receives each linear input during a forward pass (calibration statistics).
pub type Observer<'a> = dyn FnMut(InputSite, &Tensor) -> Result<()> + 'a;

pub(crate) fn linear_to_device(l: &Linear, device: &Device) -> Result<Linear> {
    Ok(Linear::new(l.weight().to_device(device)?, l.bias().map(|b| b.to_device(device)).transpose()?))
}

/// `perm` as an index tensor for `index_select`.
fn permutation_index(perm: &[usize], device: &Device) -> Result<Tensor> {
    let idx: Vec<u32> = perm.iter().map(|&j| u32::try_from(j)).collect::<std::result::Result<_, _>>()?;
    Ok(Tensor::from_vec(idx, perm.len(), device)?)
}

pub(crate) fn load_linear(w: &Weights, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
    let weight = w.get_shaped(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
    let bias = if bias { Some(w.get_shaped(&format!("{prefix}.bias"), &[out_dim])?) } else { None };
    Ok(Linear::new(weight, bias))
}

#[derive(Clone)]
pub struct DecoderLayer {
    /// The family's linears, in its order (`Family::linears`).
    linears: Vec<(LinearKind, Linear)>,
    kinds: &'static [LinearKind],
    /// The norm of the attention block (OPT's self_attn_layer_norm, Llama's input_layernorm).
    pub attn_norm: Norm,
    /// The norm of the MLP block (OPT's final_layer_norm, Llama's post_attention_layernorm).
    pub mlp_norm: Norm,
    /// Per-head RMSNorms of q and k (Qwen3).
    q_norm: Option<Norm>,
    k_norm: Option<Norm>,
    /// cos/sin of the rotary families, shared by every layer.
    rope: Option<RopeTables>,
    attn: AttentionShape,
    mlp: MlpKind,
    pre_ln: bool,
}

impl DecoderLayer {
    pub(crate) fn load(
        w: &Weights,
        cfg: &DecoderConfig,
        i: usize,
        rope: Option<&RopeTables>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let family = cfg.family;
        let linears = family
            .linears
            .iter()
            .map(|&kind| {
                let (rows, cols) = cfg.linear_shape(kind);
                Ok((kind, load_linear(w, &family.layer_tensor(i, kind.path()), cols, rows, cfg.bias_of(kind))?))
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = |name: &str, dim: usize| {
            load_norm(w, family.norm, &family.layer_tensor(i, name), dim, cfg.norm_eps, device, dtype)
        };
        let (q_norm, k_norm) = if family.qk_norm {
            (Some(norm(family.names.q_norm, cfg.head_dim)?), Some(norm(family.names.k_norm, cfg.head_dim)?))
        } else {
            (None, None)
        };
        Ok(DecoderLayer {
            linears,
            kinds: family.linears,
            attn_norm: norm(family.names.attn_norm, cfg.hidden_size)?,
            mlp_norm: norm(family.names.mlp_norm, cfg.hidden_size)?,
            q_norm,
            k_norm,
            rope: rope.cloned(),
            attn: AttentionShape {
                heads: cfg.num_attention_heads,
                kv_heads: cfg.num_key_value_heads,
                head_dim: cfg.head_dim,
                scale: if family.is_opt() { AttentionScale::Query } else { AttentionScale::Logits },
            },
            mlp: family.mlp,
            pre_ln: cfg.do_layer_norm_before,
        })
    }

    /// A copy of this layer with its tensors on `device` (a cheap handle copy where they
    /// already are there): offloaded models bring one layer at a time to the GPU this way.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let norm = |n: &Option<Norm>| n.as_ref().map(|n| n.to_device(device)).transpose();
        Ok(DecoderLayer {
            linears: self
                .linears
                .iter()
                .map(|(k, l)| Ok((*k, linear_to_device(l, device)?)))
                .collect::<Result<Vec<_>>>()?,
            attn_norm: self.attn_norm.to_device(device)?,
            mlp_norm: self.mlp_norm.to_device(device)?,
            q_norm: norm(&self.q_norm)?,
            k_norm: norm(&self.k_norm)?,
            rope: self.rope.as_ref().map(|r| r.to_device(device)).transpose()?,
            ..self.clone()
        })
    }

    /// This layer's linears, in its family's order.
    pub fn kinds(&self) -> &'static [LinearKind] {
        self.kinds
    }

    /// The linear `kind`; every caller asks for one of `kinds()`.
    pub fn linear(&self, kind: LinearKind) -> &Linear {
        &self.linears[self.slot(kind)].1
    }

    fn slot(&self, kind: LinearKind) -> usize {
        self.linears
            .iter()
            .position(|(k, _)| *k == kind)
            .unwrap_or_else(|| panic!("this layer has no {} (its linears: {:?})", kind.path(), self.kinds))
    }

    /// The per-head q and k norms (Qwen3), where the family has them.
    pub fn qk_norms(&self) -> Option<(&Norm, &Norm)> {
        self.q_norm.as_ref().zip(self.k_norm.as_ref())
    }

    /// The width of the input at `site`.
    pub fn input_width(&self, site: InputSite) -> usize {
        let kind = self.kinds.iter().copied().find(|k| k.input_site() == site).expect("every site has a linear");
        self.linear(kind).weight().dims()[1]
    }

    /// The linear reading `site` that comes first in the family's list (the attention output,
    /// fc1/gate, fc2/down are each alone or first at their site).
    fn at(&self, site: InputSite) -> &Linear {
        let kind = self.kinds.iter().copied().find(|k| k.input_site() == site).expect("every site has a linear");
        self.linear(kind)
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
        let slot = self.slot(kind);
        self.linears[slot].1 = new;
        Ok(())
    }

    /// The attention's head shape.
    pub fn head_layout(&self) -> super::family::HeadLayout {
        super::family::HeadLayout { heads: self.attn.heads, kv_heads: self.attn.kv_heads, head_dim: self.attn.head_dim }
    }

    /// Puts old row `perm[p]` of a linear's weight (and bias) at row p (`fold`).
    pub fn permute_rows(&mut self, kind: LinearKind, perm: &[usize]) -> Result<()> {
        let old = self.linear(kind);
        let idx = permutation_index(perm, old.weight().device())?;
        let weight = old.weight().index_select(&idx, 0)?;
        let bias = old.bias().map(|b| b.index_select(&idx, 0)).transpose()?;
        self.replace_linear(kind, weight, bias)
    }

    /// Puts old column `perm[p]` of a linear's weight at column p (`fold`).
    pub fn permute_columns(&mut self, kind: LinearKind, perm: &[usize]) -> Result<()> {
        let old = self.linear(kind);
        let idx = permutation_index(perm, old.weight().device())?;
        let weight = old.weight().index_select(&idx, 1)?.contiguous()?;
        let bias = old.bias().cloned();
        self.replace_linear(kind, weight, bias)
    }

    /// A linear's weight and bias replaced by tensors of the same shapes, dtype and device,
    /// written into the old buffers where they can be (as `set_weight`).
    fn replace_linear(&mut self, kind: LinearKind, weight: Tensor, bias: Option<Tensor>) -> Result<()> {
        let old = self.linear(kind);
        let weight_in_place = crate::device_memory::overwrite(old.weight(), &weight)?;
        let bias_in_place = match (old.bias(), &bias) {
            (Some(o), Some(b)) => crate::device_memory::overwrite(o, b)?,
            (None, None) => true,
            _ => bail!("{}: a bias cannot appear or vanish", kind.path()),
        };
        if weight_in_place && bias_in_place {
            return Ok(());
        }
        let weight = if weight_in_place { old.weight().clone() } else { weight };
        let bias = if bias_in_place { old.bias().cloned() } else { bias };
        let slot = self.slot(kind);
        self.linears[slot].1 = Linear::new(weight, bias);
        Ok(())
    }

    /// One decoder layer on `x` (batch, seq, hidden) with an additive causal `mask` (seq, seq).
    /// `observe` sees the input of every linear, before that linear runs.
    pub fn forward(&self, x: &Tensor, mask: &Tensor, mut observe: Option<&mut Observer>) -> Result<Tensor> {
        let residual = x;
        let h = if self.pre_ln { self.attn_norm.forward(x)? } else { x.clone() };
        let h = self.attention(&h, mask, &mut observe)?;
        let mut h = (residual + h)?;
        if !self.pre_ln {
            h = self.attn_norm.forward(&h)?;
        }
        let residual = h.clone();
        let f = if self.pre_ln { self.mlp_norm.forward(&h)? } else { h };
        let f = self.feed_forward(&f, &mut observe)?;
        let mut out = (residual + f)?;
        if !self.pre_ln {
            out = self.mlp_norm.forward(&out)?;
        }
        Ok(out)
    }

    fn feed_forward(&self, x: &Tensor, observe: &mut Option<&mut Observer>) -> Result<Tensor> {
        if let Some(obs) = observe.as_mut() {
            obs(InputSite::Fc1, x)?;
        }
        let inner = match self.mlp {
            MlpKind::Relu => kernels::linear(self.linear(LinearKind::Fc1), x, Activation::Relu)?,
            MlpKind::SiluGated => {
                let gate = kernels::linear(self.linear(LinearKind::Gate), x, Activation::None)?;
                let up = kernels::linear(self.linear(LinearKind::Up), x, Activation::None)?;
                kernels::silu_gated(gate, &up)?
            }
        };
        if let Some(obs) = observe.as_mut() {
            obs(InputSite::Fc2, &inner)?;
        }
        kernels::linear(self.at(InputSite::Fc2), &inner, Activation::None)
    }

    fn attention(&self, x: &Tensor, mask: &Tensor, observe: &mut Option<&mut Observer>) -> Result<Tensor> {
        if let Some(obs) = observe.as_mut() {
            obs(InputSite::Attn, x)?;
        }
        let path = kernels::attention_path(x, &self.attn);
        let q = kernels::project(self.linear(LinearKind::Q), x, path)?;
        let k = kernels::project(self.linear(LinearKind::K), x, path)?;
        let v = kernels::project(self.linear(LinearKind::V), x, path)?;
        let (q, k) = match &self.rope {
            Some(rope) => kernels::position_qk(path, (q, k), rope, self.qk_norms(), &self.attn)?,
            None => (q, k),
        };
        let ctx = kernels::attend(path, (q, k, v), &self.attn, mask)?;
        if let Some(obs) = observe.as_mut() {
            obs(InputSite::OutProj, &ctx)?;
        }
        kernels::project(self.at(InputSite::OutProj), &ctx, path)
    }
}
