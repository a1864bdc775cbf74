//! Model families as data: each family's parts (norm, positions, attention, MLP), its tensor
//! names and its linears, in one table; and `DecoderConfig`, a `config.json` of any family
//! resolved into those parts and sizes. The model, the layer and the pipeline read only this
//! description, so a family with known parts is one table entry.
//!
//! Everything a family's `config.json` asks for that is not implemented is refused here, with
//! the key and its value, before any weight is read.

use super::config::OptConfig;
use super::linears::LinearKind;
use super::rope::RopeScaling;
use crate::protocol::SeqLen;
use anyhow::{bail, Context, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The eps of OPT's LayerNorms (transformers' default).
pub(crate) const LAYER_NORM_EPS: f64 = 1e-5;

/// How a decoder layer normalises its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// LayerNorm with weight and bias (eps 1e-5).
    LayerNorm,
    /// RMSNorm with a weight, eps `rms_norm_eps`.
    RmsNorm,
}

/// Where token positions enter the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionKind {
    /// A learned table added to the embeddings, read from index `offset` on (OPT's 2).
    Learned { offset: usize },
    /// Rotary embeddings applied to q and k in every layer (rotate-half layout).
    Rotary,
}

/// The feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlpKind {
    /// fc2(relu(fc1(x))).
    Relu,
    /// down(silu(gate(x)) · up(x)).
    SiluGated,
}

/// Checkpoint names, without the `model.` prefix (`weights::normalise_name` strips it).
#[derive(Clone, Copy, Debug)]
pub struct TensorNames {
    /// Layer `i` lives under `{layers}.{i}`.
    pub layers: &'static str,
    pub embed_tokens: &'static str,
    /// The learned position table (families with `PositionKind::Learned`).
    pub embed_positions: &'static str,
    pub attn_norm: &'static str,
    pub mlp_norm: &'static str,
    pub final_norm: &'static str,
    /// The untied LM head.
    pub lm_head: &'static str,
    /// Per-head q/k RMSNorms inside `self_attn` (Qwen3).
    pub q_norm: &'static str,
    pub k_norm: &'static str,
}

/// Linears that serving engines load as one module (vLLM's `qkv_proj`, `gate_up_proj`): the
/// fused module's path inside a layer and its parts, which read one input (`InputSite`). A
/// packed export stores such parts alike (`output::layout`) and names them with the fused
/// module in its patterns (`output::gptq`).
#[derive(Clone, Copy, Debug)]
pub struct FusedLinears {
    pub path: &'static str,
    pub parts: &'static [LinearKind],
}

/// One family: its parts, names and linears.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    /// The `model_type` values of config.json that name it.
    pub model_types: &'static [&'static str],
    pub norm: NormKind,
    pub position: PositionKind,
    pub mlp: MlpKind,
    /// Bias on q, k and v (Qwen2); OPT's biases follow its `enable_bias`.
    pub qkv_bias: bool,
    /// Per-head RMSNorm of q and k before the rotation (Qwen3).
    pub qk_norm: bool,
    /// The decoder linears, in the order the published code lists them; `input_site` says
    /// which share an input (and so one Hessian, and one pass under `--true-sequential`).
    pub linears: &'static [LinearKind],
    pub names: TensorNames,
    /// The linears engines serve fused.
    pub fused: &'static [FusedLinears],
    /// Whether the family's config reads `sliding_window` only under `use_sliding_window`.
    pub sliding_window_switch: bool,
}

use LinearKind::*;

const QKV_PROJ: FusedLinears = FusedLinears { path: "self_attn.qkv_proj", parts: &[Q, K, V] };

pub const OPT: Family = Family {
    model_types: &["opt"],
    norm: NormKind::LayerNorm,
    position: PositionKind::Learned { offset: 2 },
    mlp: MlpKind::Relu,
    qkv_bias: true,
    qk_norm: false,
    linears: &[K, V, Q, Out, Fc1, Fc2],
    names: TensorNames {
        layers: "decoder.layers",
        embed_tokens: "decoder.embed_tokens",
        embed_positions: "decoder.embed_positions",
        attn_norm: "self_attn_layer_norm",
        mlp_norm: "final_layer_norm",
        final_norm: "decoder.final_layer_norm",
        lm_head: "lm_head",
        q_norm: "",
        k_norm: "",
    },
    fused: &[QKV_PROJ],
    sliding_window_switch: false,
};

pub const LLAMA: Family = Family {
    model_types: &["llama"],
    norm: NormKind::RmsNorm,
    position: PositionKind::Rotary,
    mlp: MlpKind::SiluGated,
    qkv_bias: false,
    qk_norm: false,
    linears: &[Q, K, V, O, Gate, Up, Down],
    names: TensorNames {
        layers: "layers",
        embed_tokens: "embed_tokens",
        embed_positions: "",
        attn_norm: "input_layernorm",
        mlp_norm: "post_attention_layernorm",
        final_norm: "norm",
        lm_head: "lm_head",
        q_norm: "self_attn.q_norm",
        k_norm: "self_attn.k_norm",
    },
    fused: &[QKV_PROJ, FusedLinears { path: "mlp.gate_up_proj", parts: &[Gate, Up] }],
    sliding_window_switch: false,
};

pub const MISTRAL: Family = Family { model_types: &["mistral"], ..LLAMA };
pub const QWEN2: Family = Family { model_types: &["qwen2"], qkv_bias: true, sliding_window_switch: true, ..LLAMA };
pub const QWEN3: Family = Family { model_types: &["qwen3"], qk_norm: true, sliding_window_switch: true, ..LLAMA };

/// Every family this tool loads.
pub const FAMILIES: [&Family; 5] = [&OPT, &LLAMA, &MISTRAL, &QWEN2, &QWEN3];

impl Family {
    pub fn by_model_type(model_type: &str) -> Option<&'static Family> {
        FAMILIES.into_iter().find(|f| f.model_types.contains(&model_type))
    }

    pub fn name(&self) -> &'static str {
        self.model_types[0]
    }

    pub fn is_opt(&self) -> bool {
        self.position == (PositionKind::Learned { offset: 2 })
    }

    /// The fused module `kind` is served in, if any.
    pub fn fused_with(&self, kind: LinearKind) -> Option<&'static FusedLinears> {
        self.fused.iter().find(|f| f.parts.contains(&kind))
    }

    /// Checkpoint path of layer `i`'s module `module`.
    pub fn layer_tensor(&self, i: usize, module: &str) -> String {
        format!("{}.{i}.{module}", self.names.layers)
    }
}

/// The `model_type`s, for messages.
fn supported_list() -> String {
    FAMILIES.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
}

/// A decoder's shape and parts, from the config.json of any supported family.
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    pub family: &'static Family,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    /// The MLP's inner width (`ffn_dim` / `intermediate_size`).
    pub ffn_dim: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    /// Norm before each block (every family but opt-350m's post-LN layout; OPT's key name).
    pub do_layer_norm_before: bool,
    pub norm_eps: f64,
    pub rope: Option<RopeScaling>,
    pub tie_word_embeddings: bool,
    /// The attention window where the config limits it (Mistral, Qwen with `use_sliding_window`).
    pub sliding_window: Option<usize>,
    /// The dtype config.json says the checkpoint is stored in.
    pub checkpoint_dtype: Option<DType>,
    /// OPT's own keys (projections, final layer norm, biases).
    pub opt: Option<OptConfig>,
}

impl From<OptConfig> for DecoderConfig {
    fn from(c: OptConfig) -> Self {
        DecoderConfig {
            family: &OPT,
            model_type: c.model_type.clone(),
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            num_hidden_layers: c.num_hidden_layers,
            ffn_dim: c.ffn_dim,
            num_attention_heads: c.num_attention_heads,
            num_key_value_heads: c.num_attention_heads,
            head_dim: c.head_dim(),
            max_position_embeddings: c.max_position_embeddings,
            do_layer_norm_before: c.do_layer_norm_before,
            norm_eps: LAYER_NORM_EPS,
            rope: None,
            tie_word_embeddings: true,
            sliding_window: None,
            checkpoint_dtype: None,
            opt: Some(c),
        }
    }
}

/// The keys of a rotary family's config.json (Llama, Mistral, Qwen2, Qwen3).
#[derive(Debug, Deserialize)]
struct RotaryKeys {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    intermediate_size: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    mlp_bias: Option<bool>,
}

fn default_max_positions() -> usize {
    2048
}

fn default_rms_eps() -> f64 {
    1e-6
}

/// How a config whose keys do not read as its family's is described.
pub(crate) const MALFORMED: &str = "missing or malformed";

/// Keys that make a model a mixture of experts.
const MOE_KEYS: [&str; 6] = [
    "num_experts",
    "num_local_experts",
    "n_routed_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "n_shared_experts",
];

impl DecoderConfig {
    /// Reads and checks `config.json`: the family from `model_type` (or `architectures`),
    /// its sizes and parts; anything not implemented is refused naming the key and value.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
        Self::from_value(&value).with_context(|| path.display().to_string())
    }

    pub fn from_value(value: &serde_json::Value) -> Result<Self> {
        let family = family_of(value)?;
        if family.is_opt() {
            let cfg: OptConfig = serde_json::from_value(value.clone()).context("missing or malformed OPT field")?;
            cfg.validate()?;
            return Ok(cfg.into());
        }
        for key in MOE_KEYS {
            if let Some(v) = value.get(key).filter(|v| !v.is_null() && v.as_u64() != Some(0)) {
                bail!("config key {key} = {v}: mixture-of-experts models are not supported");
            }
        }
        if let Some(v) = value.get("partial_rotary_factor").filter(|v| v.as_f64() != Some(1.0) && !v.is_null()) {
            bail!("config key partial_rotary_factor = {v}: only a full rotation (1.0) is supported");
        }
        let keys: RotaryKeys =
            serde_json::from_value(value.clone()).with_context(|| format!("{MALFORMED} {} field", family.name()))?;
        if let Some(act) = keys.hidden_act.as_deref().filter(|a| *a != "silu") {
            bail!("config key hidden_act = \"{act}\": the {} MLP is implemented with silu only", family.name());
        }
        for (key, on) in [("attention_bias", keys.attention_bias), ("mlp_bias", keys.mlp_bias)] {
            if on == Some(true) {
                bail!("config key {key} = true: biases beyond the family's own are not supported");
            }
        }
        let (heads, hidden) = (keys.num_attention_heads, keys.hidden_size);
        if heads == 0
            || hidden == 0
            || keys.num_hidden_layers == 0
            || keys.intermediate_size == 0
            || keys.vocab_size == 0
        {
            bail!(
                "hidden_size {hidden}, num_attention_heads {heads}, num_hidden_layers {}, intermediate_size {}, vocab_size {}: each must be positive",
                keys.num_hidden_layers,
                keys.intermediate_size,
                keys.vocab_size
            );
        }
        let kv_heads = keys.num_key_value_heads.unwrap_or(heads);
        if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            bail!("config key num_key_value_heads = {kv_heads} does not divide num_attention_heads = {heads}");
        }
        let head_dim = match keys.head_dim {
            Some(d) => d,
            None if hidden.is_multiple_of(heads) => hidden / heads,
            None => {
                bail!("hidden_size {hidden} is not divisible by num_attention_heads {heads} and no head_dim is given")
            }
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            bail!("config key head_dim = {head_dim}: rotary embeddings need an even, positive head_dim");
        }
        // Sizes that later multiply each other: refuse what would overflow rather than wrap.
        for (what, a, b) in [
            ("num_attention_heads × head_dim", heads, head_dim),
            ("vocab_size × hidden_size", keys.vocab_size, hidden),
            ("intermediate_size × hidden_size", keys.intermediate_size, hidden),
            ("max_position_embeddings × head_dim", keys.max_position_embeddings, head_dim),
        ] {
            a.checked_mul(b)
                .filter(|n| n.checked_mul(4).is_some())
                .with_context(|| format!("{what} = {a} × {b} overflows"))?;
        }
        let rope = RopeScaling::from_config(value)?;
        let sliding_window = sliding_window_of(value, family)?;
        Ok(DecoderConfig {
            family,
            model_type: family.name().to_string(),
            vocab_size: keys.vocab_size,
            hidden_size: hidden,
            num_hidden_layers: keys.num_hidden_layers,
            ffn_dim: keys.intermediate_size,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            max_position_embeddings: keys.max_position_embeddings,
            do_layer_norm_before: true,
            norm_eps: keys.rms_norm_eps,
            rope: Some(rope),
            tie_word_embeddings: keys.tie_word_embeddings.unwrap_or(false),
            sliding_window,
            checkpoint_dtype: dtype_of(value)?,
            opt: None,
        })
    }

    /// Refuses a run over `seqlen`-token windows that the model cannot attend over fully: longer
    /// than its positions (OPT's learned table less its offset; the rotary families' tables are
    /// built for the same count), or than a sliding attention window.
    pub fn check_sequence_length(&self, seqlen: SeqLen) -> Result<()> {
        let (seqlen, positions) = (seqlen.get(), self.max_position_embeddings);
        if seqlen > positions {
            let kind = match self.family.position {
                PositionKind::Learned { .. } => "learned positions",
                PositionKind::Rotary => "positions",
            };
            return Err(crate::advice::advised(
                format!(
                    "windows of {seqlen} tokens exceed the model's {positions} {kind} (config key max_position_embeddings = {positions})"
                ),
                crate::advice::Remedy::ShorterWindows { at_most: positions },
            ));
        }
        if let Some(w) = self.sliding_window.filter(|&w| w < seqlen) {
            bail!(
                "config key sliding_window = {w}: shorter than the {seqlen}-token sequences; sliding-window attention is not supported"
            );
        }
        Ok(())
    }

    /// Width of the embeddings (OPT's `word_embed_proj_dim` may differ from hidden).
    pub fn embed_dim(&self) -> usize {
        self.opt.as_ref().map_or(self.hidden_size, |o| o.embed_dim())
    }

    pub fn has_projections(&self) -> bool {
        self.opt.as_ref().is_some_and(|o| o.has_projections())
    }

    pub fn has_final_layer_norm(&self) -> bool {
        self.opt.as_ref().is_none_or(|o| o.has_final_layer_norm())
    }

    /// Width of the q projection's output (heads × head_dim).
    pub fn q_width(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of the k and v projections' outputs (key/value heads × head_dim).
    pub fn kv_width(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Whether the linears carry biases (q/k/v for `qkv_bias` families; all of OPT's).
    pub fn bias_of(&self, kind: LinearKind) -> bool {
        match &self.opt {
            Some(o) => o.enable_bias,
            None => self.family.qkv_bias && matches!(kind, Q | K | V),
        }
    }

    /// (rows, cols) of linear `kind`.
    pub fn linear_shape(&self, kind: LinearKind) -> (usize, usize) {
        let (h, f) = (self.hidden_size, self.ffn_dim);
        match kind {
            Q => (self.q_width(), h),
            K | V => (self.kv_width(), h),
            Out | O => (h, self.q_width()),
            Fc1 | Gate | Up => (f, h),
            Fc2 | Down => (h, f),
        }
    }
}

fn family_of(value: &serde_json::Value) -> Result<&'static Family> {
    let model_type = value.get("model_type").and_then(|v| v.as_str());
    if let Some(mt) = model_type {
        return Family::by_model_type(mt).with_context(|| {
            format!("config key model_type = \"{mt}\": not a supported family (supported: {})", supported_list())
        });
    }
    // No model_type: the architecture names the family (e.g. "LlamaForCausalLM").
    let arch = value.get("architectures").and_then(|a| a.get(0)).and_then(|v| v.as_str()).unwrap_or("");
    let from_arch = FAMILIES.into_iter().find(|f| {
        let stem = arch.strip_suffix("ForCausalLM").unwrap_or("").to_ascii_lowercase();
        !stem.is_empty() && f.model_types.contains(&stem.as_str())
    });
    from_arch.with_context(|| {
        format!(
            "config.json has no model_type and architectures = [\"{arch}\"] names no supported family (supported: {})",
            supported_list()
        )
    })
}

fn sliding_window_of(value: &serde_json::Value, family: &Family) -> Result<Option<usize>> {
    if family.sliding_window_switch && value.get("use_sliding_window").and_then(|v| v.as_bool()) != Some(true) {
        return Ok(None);
    }
    match value.get("sliding_window") {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|w| Some(w as usize))
            .with_context(|| format!("config key sliding_window = {v} is not a count")),
    }
}

/// `torch_dtype` (the hub's spelling) or `dtype` (transformers 5's).
fn dtype_of(value: &serde_json::Value) -> Result<Option<DType>> {
    let Some((key, v)) =
        ["torch_dtype", "dtype"].iter().find_map(|k| value.get(*k).filter(|v| !v.is_null()).map(|v| (k, v)))
    else {
        return Ok(None);
    };
    Ok(Some(match v.as_str() {
        Some("bfloat16") => DType::BF16,
        Some("float16") => DType::F16,
        Some("float32") => DType::F32,
        _ => bail!("config key {key} = {v}: not a dtype this tool reads (bfloat16, float16, float32)"),
    }))
}

/// The attention's head shape: query heads, key/value heads, and the width of one head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HeadLayout {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl HeadLayout {
    pub fn of(cfg: &DecoderConfig) -> Self {
        HeadLayout { heads: cfg.num_attention_heads, kv_heads: cfg.num_key_value_heads, head_dim: cfg.head_dim }
    }

    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama() -> serde_json::Value {
        json!({
            "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32000,
            "hidden_size": 256, "num_hidden_layers": 4, "intermediate_size": 704,
            "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 32,
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "hidden_act": "silu",
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
            "tie_word_embeddings": false, "dtype": "bfloat16"
        })
    }

    fn with(mut v: serde_json::Value, key: &str, x: serde_json::Value) -> serde_json::Value {
        v[key] = x;
        v
    }

    fn refusal(v: serde_json::Value) -> String {
        format!("{:#}", DecoderConfig::from_value(&v).unwrap_err())
    }

    #[test]
    fn llama_keys_resolve_to_its_parts() {
        let c = DecoderConfig::from_value(&llama()).unwrap();
        assert_eq!(c.family.name(), "llama");
        assert_eq!((c.q_width(), c.kv_width(), c.head_dim), (256, 64, 32));
        assert_eq!(c.linear_shape(K), (64, 256));
        assert_eq!(c.linear_shape(Down), (256, 704));
        assert_eq!(c.checkpoint_dtype, Some(DType::BF16));
        assert!(!c.tie_word_embeddings && !c.bias_of(Q));
        assert_eq!(c.rope.as_ref().unwrap().theta, 500000.0);
        assert_eq!(c.norm_eps, 1e-6);
    }

    #[test]
    fn family_comes_from_architectures_without_model_type() {
        let mut v = llama();
        v.as_object_mut().unwrap().remove("model_type");
        assert_eq!(DecoderConfig::from_value(&v).unwrap().family.name(), "llama");
        let v = with(v, "architectures", json!(["GPTNeoXForCausalLM"]));
        assert!(refusal(v).contains("GPTNeoXForCausalLM"));
    }

    #[test]
    fn qwen2_hub_keys_and_tied_head() {
        let v = json!({
            "model_type": "qwen2", "vocab_size": 32000, "hidden_size": 128, "num_hidden_layers": 2,
            "intermediate_size": 352, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 4096, "rope_theta": 1000000.0, "torch_dtype": "bfloat16",
            "tie_word_embeddings": true, "sliding_window": 1024, "use_sliding_window": false
        });
        let c = DecoderConfig::from_value(&v).unwrap();
        assert!(c.tie_word_embeddings && c.bias_of(Q) && c.bias_of(V) && !c.bias_of(O));
        assert_eq!(c.head_dim, 32);
        assert_eq!(c.rope.as_ref().unwrap().theta, 1e6);
        assert_eq!(c.sliding_window, None, "use_sliding_window false: the window is unused");
        c.check_sequence_length(SeqLen::PUBLISHED).unwrap();
        let c = DecoderConfig::from_value(&with(v, "use_sliding_window", json!(true))).unwrap();
        let e = c.check_sequence_length(SeqLen::PUBLISHED).unwrap_err().to_string();
        assert!(e.contains("sliding_window = 1024"), "{e}");
    }

    #[test]
    fn qwen3_has_qk_norm_and_explicit_head_dim() {
        let v = json!({
            "model_type": "qwen3", "vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 1,
            "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32,
            "rope_theta": 1000000.0, "dtype": "bfloat16", "tie_word_embeddings": true
        });
        let c = DecoderConfig::from_value(&v).unwrap();
        assert!(c.family.qk_norm && !c.bias_of(Q));
        assert_eq!((c.q_width(), c.kv_width()), (128, 32), "head_dim × heads ≠ hidden");
        assert_eq!(c.linear_shape(O), (64, 128));
    }

    #[test]
    fn mistral_window_applies_without_a_switch() {
        let v = with(with(llama(), "model_type", json!("mistral")), "sliding_window", json!(4096));
        let c = DecoderConfig::from_value(&v).unwrap();
        assert_eq!(c.family.name(), "mistral");
        c.check_sequence_length(SeqLen::PUBLISHED).unwrap();
        let c = DecoderConfig::from_value(&with(v, "max_position_embeddings", json!(16384))).unwrap();
        let e = c.check_sequence_length(SeqLen::new(8192).unwrap()).unwrap_err().to_string();
        assert!(e.contains("sliding_window = 4096"), "{e}");
    }

    #[test]
    fn unsupported_settings_are_refused_naming_key_and_value() {
        assert!(refusal(with(llama(), "model_type", json!("gpt2"))).contains("model_type = \"gpt2\""));
        assert!(refusal(with(llama(), "num_local_experts", json!(8))).contains("num_local_experts = 8"));
        assert!(refusal(with(llama(), "num_experts", json!(64))).contains("num_experts = 64"));
        assert!(refusal(with(llama(), "num_key_value_heads", json!(3))).contains("num_key_value_heads = 3"));
        assert!(refusal(with(llama(), "hidden_act", json!("gelu"))).contains("hidden_act"));
        assert!(refusal(with(llama(), "dtype", json!("int8"))).contains("dtype = \"int8\""));
        assert!(refusal(with(llama(), "rope_parameters", json!({"rope_type": "yarn", "factor": 4.0})))
            .contains("rope_type = \"yarn\""));
        assert!(refusal(with(llama(), "vocab_size", json!(usize::MAX / 2))).contains("overflows"));
        // Null MoE keys (as some dense configs carry) are not MoE.
        DecoderConfig::from_value(&with(llama(), "num_experts", json!(null))).unwrap();
    }

    #[test]
    fn fused_linears_read_one_input_and_are_the_familys() {
        for family in FAMILIES {
            for f in family.fused {
                let site = f.parts[0].input_site();
                assert!(f.parts.iter().all(|k| k.input_site() == site && family.linears.contains(k)), "{}", f.path);
            }
        }
        assert_eq!(LLAMA.fused_with(Up).map(|f| f.path), Some("mlp.gate_up_proj"));
        assert_eq!(QWEN2.fused_with(K).map(|f| f.path), Some("self_attn.qkv_proj"));
        assert!(OPT.fused_with(Fc1).is_none() && LLAMA.fused_with(Down).is_none());
    }

    #[test]
    fn opt_configs_resolve_as_before() {
        let v = json!({"model_type": "opt", "vocab_size": 50272, "hidden_size": 768, "num_hidden_layers": 12,
            "ffn_dim": 3072, "num_attention_heads": 12, "max_position_embeddings": 2048});
        let c = DecoderConfig::from_value(&v).unwrap();
        assert!(c.family.is_opt() && c.tie_word_embeddings && c.bias_of(Fc2));
        assert_eq!((c.head_dim, c.num_key_value_heads), (64, 12));
    }

    /// The remedy a refusal carries, and its message.
    fn window_refusal(c: &DecoderConfig, tokens: usize) -> (crate::advice::Remedy, String) {
        let e = c.check_sequence_length(SeqLen::new(tokens).unwrap()).unwrap_err();
        let advised = e.downcast_ref::<crate::advice::Advised>().expect("a remedy");
        (advised.remedy, advised.message.clone())
    }

    #[test]
    fn windows_fit_the_positions_of_each_family() {
        use crate::advice::Remedy::ShorterWindows;
        // OPT: a table of max_position_embeddings + 2 rows, less its offset of 2.
        let opt = DecoderConfig::from_value(&json!({"model_type": "opt", "vocab_size": 50272,
            "hidden_size": 768, "num_hidden_layers": 12, "ffn_dim": 3072, "num_attention_heads": 12,
            "max_position_embeddings": 1024}))
        .unwrap();
        opt.check_sequence_length(SeqLen::new(1024).unwrap()).unwrap();
        let (remedy, message) = window_refusal(&opt, 1025);
        assert_eq!(remedy, ShorterWindows { at_most: 1024 });
        assert!(message.contains("1025 tokens exceed the model's 1024 learned positions"), "{message}");
        assert!(message.contains("max_position_embeddings = 1024"), "{message}");
        // A rotary family: its tables are built for max_position_embeddings positions.
        let rotary = DecoderConfig::from_value(&llama()).unwrap();
        rotary.check_sequence_length(SeqLen::new(2048).unwrap()).unwrap();
        rotary.check_sequence_length(SeqLen::new(2).unwrap()).unwrap();
        let (remedy, message) = window_refusal(&rotary, 4096);
        assert_eq!(remedy, ShorterWindows { at_most: 2048 });
        assert!(message.contains("4096 tokens exceed the model's 2048 positions"), "{message}");
        let long = DecoderConfig::from_value(&with(llama(), "max_position_embeddings", json!(8192))).unwrap();
        long.check_sequence_length(SeqLen::new(4096).unwrap()).unwrap();
    }
}
