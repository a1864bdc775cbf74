//! OPT's `config.json`: the fields that shape the network.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The largest width, vocabulary or position count a config may name.
pub const MAX_DIM: usize = 1 << 24;
/// The most decoder layers a config may name.
pub const MAX_LAYERS: usize = 4096;
/// The most elements one tensor the config implies may hold (2^36: 256 GiB of f32).
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 36;

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
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
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
        self.check_limits()?;
        if self.hidden_size == 0 || self.num_attention_heads == 0 {
            bail!("hidden_size and num_attention_heads must be positive");
        }
        if self.num_hidden_layers == 0 || self.ffn_dim == 0 || self.vocab_size == 0 {
            bail!(
                "num_hidden_layers {}, ffn_dim {}, vocab_size {}: an OPT model has at least one of each",
                self.num_hidden_layers,
                self.ffn_dim,
                self.vocab_size
            );
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

    /// Sizes a config can name are bounded before anything is computed from them: each
    /// within `MAX_DIM` (`MAX_LAYERS` for the layer count), and every tensor the config implies
    /// within `MAX_TENSOR_ELEMENTS` by checked products, so that no shape, message or
    /// allocation is made from wrapped arithmetic. The bounds are far above any OPT model
    /// (opt-175b: hidden 12288, ffn 49152, 96 layers, vocabulary 50272, 2048 positions).
    fn check_limits(&self) -> Result<()> {
        for (key, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("ffn_dim", self.ffn_dim),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
            ("word_embed_proj_dim", self.word_embed_proj_dim.unwrap_or(0)),
        ] {
            if v > MAX_DIM {
                bail!("{key} {v} is beyond this tool's limit of {MAX_DIM}");
            }
        }
        if self.num_hidden_layers > MAX_LAYERS {
            bail!("num_hidden_layers {} is beyond this tool's limit of {MAX_LAYERS}", self.num_hidden_layers);
        }
        let positions = self.max_position_embeddings.checked_add(2); // OPT's learned offset of 2
        for (what, a, b) in [
            ("vocab_size × embedding width", Some(self.vocab_size), self.embed_dim()),
            ("max_position_embeddings × hidden_size", positions, self.hidden_size),
            ("ffn_dim × hidden_size", Some(self.ffn_dim), self.hidden_size),
            ("hidden_size × hidden_size", Some(self.hidden_size), self.hidden_size),
        ] {
            match a.and_then(|a| a.checked_mul(b)) {
                Some(n) if n <= MAX_TENSOR_ELEMENTS => {}
                _ => bail!(
                    "{what} ({} × {b}) is beyond this tool's limit of {MAX_TENSOR_ELEMENTS} elements a tensor",
                    a.unwrap_or(usize::MAX)
                ),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(edit: impl FnOnce(&mut serde_json::Value)) -> Result<OptConfig> {
        let mut v = serde_json::json!({"model_type": "opt", "vocab_size": 50272, "hidden_size": 192,
            "num_hidden_layers": 6, "ffn_dim": 768, "num_attention_heads": 3, "max_position_embeddings": 2048});
        edit(&mut v);
        let cfg: OptConfig = serde_json::from_value(v)?;
        cfg.validate()?;
        Ok(cfg)
    }

    #[test]
    fn sizes_beyond_the_limits_are_refused_without_wrapping() {
        config(|_| {}).unwrap();
        for (key, value, needle) in [
            ("num_hidden_layers", u64::MAX, "num_hidden_layers 18446744073709551615 is beyond"),
            ("max_position_embeddings", u64::MAX, "max_position_embeddings 18446744073709551615 is beyond"),
            ("vocab_size", 1 << 40, "vocab_size 1099511627776 is beyond"),
            ("hidden_size", 3 << 23, "hidden_size 25165824 is beyond"),
            ("word_embed_proj_dim", 1 << 24, "vocab_size × embedding width (50272 × 16777216)"),
        ] {
            let e = config(|v| v[key] = value.into()).unwrap_err().to_string();
            assert!(e.contains(needle), "{key}: {e}");
        }
        let e = config(|v| {
            v["max_position_embeddings"] = (1u64 << 24).into();
            v["hidden_size"] = (1u64 << 13).into();
            v["num_attention_heads"] = 1.into();
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_position_embeddings × hidden_size (16777218 × 8192)"), "{e}");
        let e = config(|v| {
            v["ffn_dim"] = (1u64 << 24).into();
            v["hidden_size"] = (1u64 << 13).into();
            v["num_attention_heads"] = 1.into();
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("ffn_dim × hidden_size (16777216 × 8192)"), "{e}");
    }
}
