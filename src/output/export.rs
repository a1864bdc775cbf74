//! Saving a compressed model as a Hugging Face directory (config.json, model.safetensors,
//! tokenizer files) that `OPTForCausalLM.from_pretrained` loads. Written into a temporary
//! sibling directory and renamed into place, so a failed run never leaves half a model.

use crate::model::files::ModelFiles;
use crate::model::{LinearKind, OptModel};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Every tensor of the model under its `OPTForCausalLM` name.
fn named_tensors(model: &OptModel, dtype: DType) -> Result<HashMap<String, Tensor>> {
    let mut m = HashMap::new();
    let mut put = |name: String, t: &Tensor| -> Result<()> {
        m.insert(name, t.to_dtype(dtype)?.to_device(&candle_core::Device::Cpu)?.contiguous()?);
        Ok(())
    };
    put("model.decoder.embed_tokens.weight".into(), &model.embed_tokens)?;
    put("model.decoder.embed_positions.weight".into(), &model.embed_positions)?;
    if let Some(p) = &model.project_in {
        put("model.decoder.project_in.weight".into(), p.weight())?;
    }
    if let Some(p) = &model.project_out {
        put("model.decoder.project_out.weight".into(), p.weight())?;
    }
    if let Some(ln) = &model.final_layer_norm {
        put("model.decoder.final_layer_norm.weight".into(), ln.weight())?;
        if let Some(b) = ln.bias() {
            put("model.decoder.final_layer_norm.bias".into(), b)?;
        }
    }
    for (i, layer) in model.layers.iter().enumerate() {
        let p = format!("model.decoder.layers.{i}");
        for kind in LinearKind::ALL {
            let lin = layer.linear(kind);
            put(format!("{p}.{}.weight", kind.path()), lin.weight())?;
            if let Some(b) = lin.bias() {
                put(format!("{p}.{}.bias", kind.path()), b)?;
            }
        }
        for (name, ln) in
            [("self_attn_layer_norm", &layer.self_attn_layer_norm), ("final_layer_norm", &layer.final_layer_norm)]
        {
            put(format!("{p}.{name}.weight"), ln.weight())?;
            if let Some(b) = ln.bias() {
                put(format!("{p}.{name}.bias"), b)?;
            }
        }
    }
    Ok(m)
}

/// Checks before any work that `dir` can be created (or replaced).
pub fn check_save_target(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("--save {}: exists and is not a directory", dir.display());
    }
    super::atomic::check_writable(&dir.join("config.json"), "--save")
}

/// Writes the model to `dir` atomically (temp dir, then rename over any old one).
pub fn save(model: &OptModel, files: &ModelFiles, dir: &Path, dtype: DType) -> Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let name = dir.file_name().and_then(|n| n.to_str()).context("--save needs a directory name")?;
    let tmp = parent.join(format!(".{name}.partial{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = (|| -> Result<()> {
        std::fs::copy(&files.config, tmp.join("config.json"))?;
        for f in &files.extra {
            if let Some(n) = f.file_name() {
                std::fs::copy(f, tmp.join(n))?;
            }
        }
        let tensors = named_tensors(model, dtype)?;
        candle_core::safetensors::save(&tensors, tmp.join("model.safetensors"))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("saving to {} failed", dir.display())));
    }
    if dir.exists() {
        let old = parent.join(format!(".{name}.old{}", std::process::id()));
        std::fs::rename(dir, &old)?;
        std::fs::rename(&tmp, dir)?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, dir)?;
    }
    Ok(())
}
