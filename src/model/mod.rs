//! Decoder-only language models on candle, equal to Hugging Face's `*ForCausalLM` in
//! inference: OPT (`OPTForCausalLM`) and the rotary families (Llama, Mistral, Qwen2, Qwen3),
//! each described by its entry in `family`.
//!
//! Exposed layer by layer (`embed` → `layers[i].forward` → head), because the compressor
//! runs one decoder layer at a time over the calibration activations. OPT's two layouts are
//! supported: pre-LN (`do_layer_norm_before`, every size but 350m) and post-LN (opt-350m,
//! which also projects embeddings with `project_in`/`project_out`).

pub mod config;
pub mod cpu_kernels;
#[cfg(feature = "cuda")]
pub mod cuda_forward;
pub mod family;
pub mod files;
pub mod fold;
pub mod kernels;
pub mod layer;
pub mod linears;
pub mod norm;
pub mod packed;
pub mod pickle_check;
pub mod rope;
pub mod tokenizer;
pub mod weights;

pub use config::OptConfig;
pub use family::{DecoderConfig, Family};
pub use layer::{DecoderLayer, InputSite, LinearKind, Observer};
pub use norm::Norm;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::Linear;
use family::PositionKind;
use layer::{linear_to_device, load_linear};
use norm::load_norm;
use rope::RopeTables;
use weights::Weights;

/// OPT's learned positions start at index 2 (fairseq's padding offset).
pub const POSITION_OFFSET: usize = 2;

/// The dtype a model runs in by default: f32 on the CPU; f16 weights and activations on the
/// GPU, as the published code runs.
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cuda() {
        DType::F16
    } else {
        DType::F32
    }
}

/// The dtype `--dtype auto` picks: f32 on the CPU; on the GPU f16 for OPT (as the published
/// code runs) and the checkpoint's own dtype for the other families (bf16 as they ship).
pub fn auto_dtype(device: &Device, config: &DecoderConfig) -> DType {
    if device.is_cuda() && !config.family.is_opt() {
        return config.checkpoint_dtype.unwrap_or(DType::BF16);
    }
    default_dtype(device)
}

/// A decoder-only language model of any supported family.
pub struct CausalLm {
    pub config: DecoderConfig,
    pub embed_tokens: Tensor,
    /// The learned position table (OPT); the rotary families rotate q and k instead.
    pub embed_positions: Option<Tensor>,
    /// The untied LM head; `None` where the head is the token embeddings.
    pub lm_head: Option<Tensor>,
    pub project_in: Option<Linear>,
    pub project_out: Option<Linear>,
    pub final_layer_norm: Option<Norm>,
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

/// The name the OPT-era code and tests use for [`CausalLm`].
pub type OptModel = CausalLm;

impl CausalLm {
    pub fn load(config: impl Into<DecoderConfig>, w: &Weights, device: &Device, dtype: DType) -> Result<Self> {
        let config: DecoderConfig = config.into();
        let family = config.family;
        let names = &family.names;
        let e = config.embed_dim();
        let h = config.hidden_size;
        let embed_name = format!("{}.weight", names.embed_tokens);
        let embed_tokens = w.get(&embed_name)?;
        if embed_tokens.dims() != [config.vocab_size, e] {
            bail!("{embed_name} has shape {:?}, config.json implies [{}, {e}]", embed_tokens.dims(), config.vocab_size);
        }
        let (embed_positions, rope) = match family.position {
            PositionKind::Learned { offset } => {
                let rows = config.max_position_embeddings.checked_add(offset).ok_or_else(|| {
                    anyhow::anyhow!("max_position_embeddings {} is too large", config.max_position_embeddings)
                })?;
                (Some(w.get_shaped(&format!("{}.weight", names.embed_positions), &[rows, h])?), None)
            }
            PositionKind::Rotary => {
                let scaling = config.rope.as_ref().ok_or_else(|| anyhow::anyhow!("a rotary family without rope"))?;
                let tables = RopeTables::new(scaling, config.head_dim, config.max_position_embeddings, dtype, device)?;
                (None, Some(tables))
            }
        };
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(w.get_shaped(&format!("{}.weight", names.lm_head), &[config.vocab_size, e])?)
        };
        let (project_in, project_out) = if config.has_projections() {
            (
                Some(load_linear(w, "decoder.project_in", e, h, false)?),
                Some(load_linear(w, "decoder.project_out", h, e, false)?),
            )
        } else {
            (None, None)
        };
        let final_layer_norm = if config.has_final_layer_norm() {
            Some(load_norm(w, family.norm, names.final_norm, h, config.norm_eps, device, dtype)?)
        } else {
            None
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::load(w, &config, i, rope.as_ref(), device, dtype))
            .collect::<Result<Vec<_>>>()?;
        Ok(CausalLm {
            config,
            embed_tokens,
            embed_positions,
            lm_head,
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

    /// Whether the decoder layers live off the compute device (`load_model_offloaded`).
    pub fn is_offloaded(&self) -> bool {
        !self.layer_home.same_device(&self.device)
    }

    /// Token + position embeddings of `ids` (batch, seq), positions 0.. (no padding).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, s) = ids.dims2()?;
        if s > self.config.max_position_embeddings {
            bail!("sequence of {s} tokens exceeds max_position_embeddings {}", self.config.max_position_embeddings);
        }
        if let Some(w) = self.config.sliding_window.filter(|&w| s > w) {
            bail!("sequence of {s} tokens exceeds the sliding attention window of {w}, which is not supported");
        }
        // Gathered where the table lives (host memory under --offload: only the rows visit the
        // device; `to_device` to the same device is a no-op).
        let table = &self.embed_tokens;
        let mut x = candle_nn::Embedding::new(table.clone(), self.config.embed_dim())
            .forward(&ids.to_device(table.device())?)?
            .to_device(ids.device())?;
        if let Some(p) = &self.project_in {
            x = p.forward(&x)?;
        }
        match &self.embed_positions {
            Some(table) => Ok(x.broadcast_add(&table.narrow(0, POSITION_OFFSET, s)?)?),
            None => Ok(x),
        }
    }

    /// Additive causal mask (seq, seq): 0 on and below the diagonal, -inf above.
    pub fn causal_mask(&self, s: usize) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.device.is_cuda() && cuda_forward::enabled() {
            // Formed on the device: the host loop and the s² upload cost milliseconds per pass.
            let i = Tensor::arange(0u32, s as u32, &self.device)?;
            let visible = i.unsqueeze(1)?.broadcast_ge(&i.unsqueeze(0)?)?;
            let zeros = Tensor::zeros((s, s), self.dtype, &self.device)?;
            let blocked = Tensor::full(f32::NEG_INFINITY, (s, s), &self.device)?.to_dtype(self.dtype)?;
            return Ok(visible.where_cond(&zeros, &blocked)?);
        }
        let data: Vec<f32> =
            (0..s).flat_map(|i| (0..s).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY })).collect();
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

    /// The LM head's weight (vocab, embed): its own, or the token embeddings where tied; where
    /// it is kept (host memory under --offload).
    pub fn head_weight(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// The LM head's weight on the compute device: a copy for the call under --offload (the
    /// head, 1 GiB at Llama 3's vocabulary, is on the device only while the loss needs it).
    pub fn head_on_device(&self) -> Result<Tensor> {
        Ok(self.head_weight().to_device(&self.device)?)
    }

    /// Logits (batch, seq, vocab).
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        let h = self.head_states(h)?;
        Ok(h.broadcast_matmul(&self.head_on_device()?.t()?)?)
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
        self.batch_nll_sums_with(&self.head_on_device()?, h, ids, s)
    }

    /// [`Self::batch_nll_sums`] with the head already on the device (`head_on_device`), for
    /// callers that reuse one copy over several batches.
    pub fn batch_nll_sums_with(&self, head: &Tensor, h: &Tensor, ids: &[u32], s: usize) -> Result<Vec<f64>> {
        let b = h.dims()[0];
        let states = self.head_states(&h.narrow(1, 0, s - 1)?.contiguous()?)?;
        let e = states.dims()[2];
        let states = states.reshape((b * (s - 1), e))?;
        let targets: Vec<u32> = ids.chunks(s).flat_map(|w| w[1..].iter().copied()).collect();
        #[cfg(feature = "cuda")]
        if cuda_forward::applies(&states) && head.dtype() == states.dtype() {
            // Fused CUDA path: f16/bf16 logits chunk by chunk, one loss kernel per chunk.
            return cuda_forward::lm_head_nll(&states, head, &targets, s - 1);
        }
        let targets = Tensor::from_vec(targets, b * (s - 1), &self.device)?;
        let emb_t = head.t()?;
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
        let emb_t = self.head_on_device()?.t()?;
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
    // Rows in parallel, summed in row order: the same sum for any thread count.
    let per_row: Vec<f64> = flat
        .par_chunks(vocab)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, crate::numerics::nan_max);
            let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
            (max as f64 + sum.ln()) - row[t as usize] as f64
        })
        .collect();
    Ok(per_row.iter().sum())
}

/// Reads and checks a model's config.json: OPT's checks and messages for OPT, the family's
/// otherwise. (A run's window length is checked against it where the model's files are resolved,
/// `files::resolve_model`.)
pub fn read_config(path: &std::path::Path) -> Result<DecoderConfig> {
    let config = match OptConfig::from_file(path) {
        Ok(opt) => DecoderConfig::from(opt),
        Err(opt_error) => {
            let value: Option<serde_json::Value> =
                std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok());
            let model_type = value.as_ref().and_then(|v| v.get("model_type")).and_then(|v| v.as_str());
            if value.is_none() || model_type == Some("opt") {
                return Err(opt_error);
            }
            match DecoderConfig::from_file(path) {
                Ok(c) => c,
                // A known family whose keys do not read (e.g. OPT's keys under another model_type).
                Err(e) if format!("{e:#}").contains(family::MALFORMED) => bail!(
                    "{}: model_type '{}' is not OPT, and as its family's config: {:#}",
                    path.display(),
                    model_type.unwrap_or(""),
                    e.root_cause()
                ),
                Err(e) => return Err(e),
            }
        }
    };
    Ok(config)
}

/// How a model's checkpoint is read.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// The compute dtype.
    pub dtype: DType,
    /// Keep the decoder layers in host memory, visiting the device one at a time.
    pub offload: bool,
    /// Store the model in this dtype instead of the checkpoint's (`Weights::store_as`): every
    /// weight rounded through it on load; compressed weights and exports are then in it. The
    /// compute dtype must hold it exactly (the same dtype, or f32).
    pub stored_as: Option<DType>,
}

/// Whether values of `storage` are exact in `compute` (what `LoadOptions::stored_as` needs).
pub fn holds_exactly(compute: DType, storage: DType) -> bool {
    compute == storage || compute == DType::F32
}

/// Loads a model from resolved files onto `device` as `opts` says.
pub fn load(files: &files::ModelFiles, device: &Device, opts: LoadOptions) -> Result<OptModel> {
    let config = read_config(&files.config)?;
    let packed = packed::PackedFormat::from_config_file(&files.config)?;
    let home = if opts.offload { &Device::Cpu } else { device };
    let mut weights = Weights::load_checkpoint(&files.weights, packed.as_ref(), opts.dtype, home)?;
    if let Some(storage) = opts.stored_as {
        if !holds_exactly(opts.dtype, storage) {
            bail!(
                "a model stored in {storage:?} cannot compute in {:?}, which does not hold its values exactly",
                opts.dtype
            );
        }
        weights.store_as(storage)?;
    }
    let mut m = OptModel::load(config, &weights, home, opts.dtype)?;
    if opts.offload {
        // Position table, final norm and projections go to `device`; GPU memory then holds one
        // layer plus activations, whatever the model's size.
        // The token embeddings and the LM head (2 GiB together at Llama 3's vocabulary) stay in
        // host memory too: `embed` gathers its rows there, the loss takes a copy of the head.
        m.embed_positions = m.embed_positions.as_ref().map(|t| t.to_device(device)).transpose()?;
        m.project_in = m.project_in.as_ref().map(|l| linear_to_device(l, device)).transpose()?;
        m.project_out = m.project_out.as_ref().map(|l| linear_to_device(l, device)).transpose()?;
        m.final_layer_norm = m.final_layer_norm.as_ref().map(|l| l.to_device(device)).transpose()?;
        m.device = device.clone();
        m.layer_home = Device::Cpu;
    }
    Ok(m)
}

/// Loads config and weights of resolved model files onto `device` in `dtype`.
pub fn load_model(files: &files::ModelFiles, device: &Device, dtype: DType) -> Result<OptModel> {
    load(files, device, LoadOptions { dtype, offload: false, stored_as: None })
}

/// Loads a model whose decoder layers stay in host memory (in `dtype`) and visit `device`
/// one at a time; embeddings, final norm and projections go to `device`. GPU memory then
/// holds one layer plus activations, whatever the model's size.
pub fn load_model_offloaded(files: &files::ModelFiles, device: &Device, dtype: DType) -> Result<OptModel> {
    load(files, device, LoadOptions { dtype, offload: true, stored_as: None })
}
