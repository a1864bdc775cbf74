//! OPT's `config.json`: the fields that shape the network.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
