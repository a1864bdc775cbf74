//! The OPT decoder on candle, equal to Hugging Face `OPTForCausalLM` in inference.
//!
//! Exposed layer by layer (`embed` → `layers[i].forward` → `head`), because the compressor
//! runs one decoder layer at a time over the calibration activations. Both layouts are
//! supported: pre-LN (`do_layer_norm_before`, every size but 350m) and post-LN (opt-350m,
//! which also projects embeddings with `project_in`/`project_out`).

use crate::weights::Weights;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{LayerNorm, Linear};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// OPT's learned positions start at index 2 (fairseq's padding offset).
pub const POSITION_OFFSET: usize = 2;
const LAYER_NORM_EPS: f64 = 1e-5;

fn default_true() -> bool {
    true
}

/// The fields of an OPT `config.json` that shape the network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OptConfig {
    #[serde(default)]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub ffn_dim: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_true")]
    pub do_layer_norm_before: bool,
    #[serde(default)]
    pub word_embed_proj_dim: Option<usize>,
    #[serde(default = "default_true")]
    pub enable_bias: bool,
    #[serde(default = "default_true")]
    pub layer_norm_elementwise_affine: bool,
    #[serde(default, rename = "_remove_final_layer_norm")]
    pub remove_final_layer_norm: bool,
    #[serde(default)]
    pub activation_function: Option<String>,
}

impl OptConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let model_type = value.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
        if model_type != "opt" {
            bail!(
                "{}: model_type '{model_type}' is not OPT; this tool compresses OPT models (facebook/opt-*)",
                path.display()
            );
        }
        let cfg: OptConfig = serde_json::from_value(value)
            .with_context(|| format!("{}: missing or malformed OPT field", path.display()))?;
        cfg.validate().with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.hidden_size == 0 || self.num_attention_heads == 0 {
            bail!("hidden_size and num_attention_heads must be positive");
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if let Some(act) = &self.activation_function {
            if act != "relu" {
                bail!("activation_function '{act}' is not supported (OPT uses relu)");
            }
        }
        Ok(())
    }

    pub fn embed_dim(&self) -> usize {
        self.word_embed_proj_dim.unwrap_or(self.hidden_size)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn has_projections(&self) -> bool {
        self.embed_dim() != self.hidden_size
    }

    /// HF creates the decoder's final layer norm only for pre-LN models.
    pub fn has_final_layer_norm(&self) -> bool {
        self.do_layer_norm_before && !self.remove_final_layer_norm
    }
}

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
    pub const ALL: [LinearKind; 6] = [
        LinearKind::K,
        LinearKind::V,
        LinearKind::Q,
        LinearKind::Out,
        LinearKind::Fc1,
        LinearKind::Fc2,
    ];

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
        Self::ALL
            .into_iter()
            .find(|k| k.path() == name || k.path().rsplit('.').next() == Some(name))
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

fn linear_to_device(l: &Linear, device: &Device) -> Result<Linear> {
    Ok(Linear::new(l.weight().to_device(device)?, l.bias().map(|b| b.to_device(device)).transpose()?))
}

fn layer_norm_to_device(l: &LayerNorm, device: &Device) -> Result<LayerNorm> {
    let bias = l.bias().ok_or_else(|| anyhow::anyhow!("layer norm without bias"))?;
    Ok(LayerNorm::new(l.weight().to_device(device)?, bias.to_device(device)?, LAYER_NORM_EPS))
}

fn load_linear(w: &Weights, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
    let weight = w.get_shaped(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
    let bias = if bias {
        Some(w.get_shaped(&format!("{prefix}.bias"), &[out_dim])?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

fn load_layer_norm(w: &Weights, prefix: &str, dim: usize, device: &Device, dtype: DType) -> Result<LayerNorm> {
    match w.get_opt(&format!("{prefix}.weight")) {
        Some(weight) => {
            if weight.dims() != [dim] {
                bail!("tensor '{prefix}.weight' has shape {:?}, expected [{dim}]", weight.dims());
            }
            let bias = w.get_shaped(&format!("{prefix}.bias"), &[dim])?;
            Ok(LayerNorm::new(weight, bias, LAYER_NORM_EPS))
        }
        // layer_norm_elementwise_affine = false: a plain normalisation.
        None => Ok(LayerNorm::new(
            Tensor::ones(dim, dtype, device)?,
            Tensor::zeros(dim, dtype, device)?,
            LAYER_NORM_EPS,
        )),
    }
}

impl DecoderLayer {
    fn load(w: &Weights, cfg: &OptConfig, i: usize, device: &Device, dtype: DType) -> Result<Self> {
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

    /// Replaces a linear's weight (shape and dtype kept), e.g. after compression.
    pub fn set_weight(&mut self, kind: LinearKind, weight: Tensor) -> Result<()> {
        let old = self.linear(kind);
        if weight.dims() != old.weight().dims() {
            bail!("new weight for {} has shape {:?}, expected {:?}", kind.path(), weight.dims(), old.weight().dims());
        }
        let weight = weight.to_dtype(old.weight().dtype())?.to_device(old.weight().device())?;
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
        if x.device().is_cpu() && x.dtype() == DType::F32 && crate::cpu_kernels::fused_enabled() {
            let flat = |t: Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
            let mut q = flat(linear_forward(&self.q_proj, x, false)?)?;
            q.iter_mut().for_each(|v| *v *= scaling as f32);
            let k = flat(linear_forward(&self.k_proj, x, false)?)?;
            let v = flat(linear_forward(&self.v_proj, x, false)?)?;
            let ctx = crate::cpu_kernels::causal_attention(&q, &k, &v, b, s, self.num_heads, self.head_dim);
            let ctx = Tensor::from_vec(ctx, (b, s, hidden), x.device())?;
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
            let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
            // Softmax in f32 even for f16 activations, as HF's OPT attention does.
            let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(v.dtype())?;
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
    use crate::cpu_kernels::{linear, with_host_f32};
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
    Ok(if relu { y.relu()? } else { y })
}

pub struct OptModel {
    pub config: OptConfig,
    pub embed_tokens: Tensor,
    pub embed_positions: Tensor,
    pub project_in: Option<Linear>,
    pub project_out: Option<Linear>,
    pub final_layer_norm: Option<LayerNorm>,
    pub layers: Vec<DecoderLayer>,
    /// Where computation runs (embeddings, head and the layer being worked on live here).
    pub device: Device,
    /// Where decoder layers are kept between uses: `device`, or the host when offloaded
    /// (`--offload`: models whose weights do not fit on the GPU).
    pub layer_home: Device,
    pub dtype: DType,
    /// The checkpoint's storage dtype: compressed weights are rounded to it and saved in it.
    pub storage_dtype: DType,
}

impl OptModel {
    pub fn load(config: OptConfig, w: &Weights, device: &Device, dtype: DType) -> Result<Self> {
        let e = config.embed_dim();
        let h = config.hidden_size;
        let embed_tokens = w.get("decoder.embed_tokens.weight")?;
        if embed_tokens.dims() != [config.vocab_size, e] {
            bail!(
                "decoder.embed_tokens.weight has shape {:?}, config.json implies [{}, {e}]",
                embed_tokens.dims(),
                config.vocab_size
            );
        }
        let embed_positions = w.get_shaped(
            "decoder.embed_positions.weight",
            &[config.max_position_embeddings + POSITION_OFFSET, h],
        )?;
        let (project_in, project_out) = if config.has_projections() {
            (
                Some(load_linear(w, "decoder.project_in", e, h, false)?),
                Some(load_linear(w, "decoder.project_out", h, e, false)?),
            )
        } else {
            (None, None)
        };
        let final_layer_norm = if config.has_final_layer_norm() {
            Some(load_layer_norm(w, "decoder.final_layer_norm", h, device, dtype)?)
        } else {
            None
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::load(w, &config, i, device, dtype))
            .collect::<Result<Vec<_>>>()?;
        Ok(OptModel {
            config,
            embed_tokens,
            embed_positions,
            project_in,
            project_out,
            final_layer_norm,
            layers,
            device: device.clone(),
            layer_home: device.clone(),
            dtype,
            storage_dtype: w.source_dtype,
        })
    }

    /// Token + position embeddings of `ids` (batch, seq), positions 0.. (no padding).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, s) = ids.dims2()?;
        if s > self.config.max_position_embeddings {
            bail!("sequence of {s} tokens exceeds max_position_embeddings {}", self.config.max_position_embeddings);
        }
        let mut x = candle_nn::Embedding::new(self.embed_tokens.clone(), self.config.embed_dim()).forward(ids)?;
        if let Some(p) = &self.project_in {
            x = p.forward(&x)?;
        }
        let pos = self.embed_positions.narrow(0, POSITION_OFFSET, s)?;
        Ok(x.broadcast_add(&pos)?)
    }

    /// Additive causal mask (seq, seq): 0 on and below the diagonal, -inf above.
    pub fn causal_mask(&self, s: usize) -> Result<Tensor> {
        let data: Vec<f32> = (0..s)
            .flat_map(|i| (0..s).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        Ok(Tensor::from_vec(data, (s, s), &self.device)?.to_dtype(self.dtype)?)
    }

    /// Final layer norm and `project_out`: the hidden states the LM head reads.
    pub fn head_states(&self, h: &Tensor) -> Result<Tensor> {
        let mut h = h.clone();
        if let Some(ln) = &self.final_layer_norm {
            h = ln.forward(&h)?;
        }
        if let Some(p) = &self.project_out {
            h = p.forward(&h)?;
        }
        Ok(h)
    }

    /// Logits (batch, seq, vocab); the LM head is tied to the token embeddings.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        let h = self.head_states(h)?;
        Ok(h.broadcast_matmul(&self.embed_tokens.t()?)?)
    }

    /// The whole model: logits for `ids` (batch, seq).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, s) = ids.dims2()?;
        let mask = self.causal_mask(s)?;
        let mut h = self.embed(ids)?;
        for layer in &self.layers {
            h = layer.to_device(&self.device)?.forward(&h, &mask, None)?;
        }
        self.logits(&h)
    }

    /// Sum of next-token negative log-likelihoods of one sequence, computed in row chunks
    /// so the (seq × vocab) logits never exist at once. Returns (sum, count).
    /// Σ next-token NLL of each sequence of a batch: `h` (batch, seq, hidden), `ids` the
    /// batch's token ids flattened. Computed on the model's device in chunks of rows, with
    /// one transfer of the per-sequence sums at the end (the GPU evaluation path).
    pub fn batch_nll_sums(&self, h: &Tensor, ids: &[u32], s: usize) -> Result<Vec<f64>> {
        let b = h.dims()[0];
        let states = self.head_states(&h.narrow(1, 0, s - 1)?.contiguous()?)?;
        let e = states.dims()[2];
        let states = states.reshape((b * (s - 1), e))?;
        let targets: Vec<u32> = ids.chunks(s).flat_map(|w| w[1..].iter().copied()).collect();
        let targets = Tensor::from_vec(targets, b * (s - 1), &self.device)?;
        let emb_t = self.embed_tokens.t()?;
        let rows = b * (s - 1);
        // 1024 rows of f32 logits are 200 MiB; larger chunks raise peak memory, not speed.
        let chunk = 1024;
        let mut per_row = Vec::new();
        let mut start = 0;
        while start < rows {
            let n = chunk.min(rows - start);
            let logits = states.narrow(0, start, n)?.matmul(&emb_t)?.to_dtype(DType::F32)?;
            let lse = logits.log_sum_exp(D::Minus1)?;
            let picked = logits.gather(&targets.narrow(0, start, n)?.unsqueeze(1)?, 1)?.squeeze(1)?;
            per_row.push((lse - picked)?);
            start += n;
        }
        let per_row = Tensor::cat(&per_row, 0)?.to_dtype(DType::F64)?.reshape((b, s - 1))?;
        Ok(per_row.sum(1)?.to_vec1::<f64>()?)
    }

    pub fn sequence_nll(&self, h: &Tensor, ids: &[u32]) -> Result<(f64, usize)> {
        let states = self.head_states(h)?.squeeze(0)?; // (seq, embed)
        let s = ids.len();
        let targets = Tensor::from_vec(ids[1..].to_vec(), s - 1, &self.device)?;
        let emb_t = self.embed_tokens.t()?;
        let chunk = 512;
        let mut total = 0f64;
        let mut start = 0;
        while start < s - 1 {
            let n = chunk.min(s - 1 - start);
            let logits = states.narrow(0, start, n)?.matmul(&emb_t)?.to_dtype(DType::F32)?;
            let tgt = &ids[start + 1..start + 1 + n];
            let nll = if logits.device().is_cpu() {
                nll_rows_cpu(&logits, tgt)?
            } else {
                let lse = logits.log_sum_exp(D::Minus1)?;
                let t = targets.narrow(0, start, n)?.unsqueeze(1)?;
                let picked = logits.gather(&t, 1)?.squeeze(1)?;
                (lse - picked)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?
            };
            total += nll;
            start += n;
        }
        Ok((total, s - 1))
    }
}

/// Σ over rows of logsumexp(row) − row[target], one fused pass per row (CPU).
fn nll_rows_cpu(logits: &Tensor, targets: &[u32]) -> Result<f64> {
    use rayon::prelude::*;
    let (_, vocab) = logits.dims2()?;
    let flat: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    Ok(flat
        .par_chunks(vocab)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
            (max as f64 + sum.ln()) - row[t as usize] as f64
        })
        .sum())
}

/// Loads config and weights of resolved model files onto `device` in `dtype`.
pub fn load_model(files: &crate::hub::ModelFiles, device: &Device, dtype: DType) -> Result<OptModel> {
    let config = OptConfig::from_file(&files.config)?;
    let weights = Weights::load(&files.weights, dtype, device)?;
    OptModel::load(config, &weights, device, dtype)
}

/// Loads a model whose decoder layers stay in host memory (in `dtype`) and visit `device`
/// one at a time; embeddings, final norm and projections go to `device`. GPU memory then
/// holds one layer plus activations, whatever the model's size.
pub fn load_model_offloaded(files: &crate::hub::ModelFiles, device: &Device, dtype: DType) -> Result<OptModel> {
    let config = OptConfig::from_file(&files.config)?;
    let weights = Weights::load(&files.weights, dtype, &Device::Cpu)?;
    let mut m = OptModel::load(config, &weights, &Device::Cpu, dtype)?;
    m.embed_tokens = m.embed_tokens.to_device(device)?;
    m.embed_positions = m.embed_positions.to_device(device)?;
    m.project_in = m.project_in.as_ref().map(|l| linear_to_device(l, device)).transpose()?;
    m.project_out = m.project_out.as_ref().map(|l| linear_to_device(l, device)).transpose()?;
    m.final_layer_norm = m.final_layer_norm.as_ref().map(|l| layer_norm_to_device(l, device)).transpose()?;
    m.device = device.clone();
    m.layer_home = Device::Cpu;
    Ok(m)
}
