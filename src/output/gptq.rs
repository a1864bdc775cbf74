//! The GPTQ checkpoint format (`checkpoint_format: "gptq"`, v1 zero points), as AutoGPTQ
//! wrote it and transformers (gptqmodel backend), GPTQModel and vLLM load it; layout and
//! sources in docs/formats.md. Per packed linear `P`: `P.qweight` int32
//! `[in·bits/32, out]`, `P.qzeros` int32 `[groups, out·bits/32]` (stored zero − 1),
//! `P.scales` f16 `[groups, out]`, `P.g_idx` int32 `[in]`, `P.bias`; config.json gets
//! `quantization_config` and `quantize_config.json` holds the same object.
//!
//! One width and group size for the whole model is the format's default; linears that
//! differ (mixed precision stored at their own width, chunked groups) and linears stored
//! dense are named in GPTQModel's `dynamic` map (`+:regex` overrides, `-:regex` = not
//! quantized), which GPTQModel and vLLM honour and transformers ignores.

use super::layout::{LinearStorage, PackedLinear, Stored};
use super::packing::{self, GptqZeros};
use super::tensors::{Category, RawTensor};
use crate::model::{Family, LinearKind, OptModel};
use anyhow::{anyhow, bail, Result};
use candle_core::DType;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The run's settings the config records.
#[derive(Clone, Debug)]
pub struct GptqRun {
    pub sym: bool,
    /// `desc_act`: act-order whose groups follow the sweep (a g_idx column map); group-aware
    /// act-order keeps the natural groups and records false, as GPTQModel does.
    pub desc_act: bool,
    pub damp_percent: f64,
    /// Whether each input site's linears were solved before the next site's inputs were
    /// gathered (GPTQ's `--true-sequential`), rather than all from the layer's inputs at once.
    pub true_sequential: bool,
}

/// What the writer adds to the checkpoint: tensors of the decoder linears, the
/// `quantization_config`, and lines for stderr.
pub struct GptqOutput {
    pub tensors: BTreeMap<String, RawTensor>,
    pub config: Value,
    pub notes: Vec<String>,
}

/// The regex naming layer `layer`'s linear `kind` in a `family` model; a linear engines serve
/// fused is named with its fused siblings and the fused module (vLLM's `qkv_proj`,
/// `gate_up_proj`), e.g. `^model\.layers\.0\.mlp\.(gate_proj|up_proj|gate_up_proj)$`.
fn module_regex(family: &Family, layer: usize, kind: LinearKind) -> String {
    let layer_prefix = regex::escape(&format!("model.{}", family.layer_tensor(layer, "")));
    let Some(fused) = family.fused_with(kind) else {
        return format!("^{layer_prefix}{}$", regex::escape(kind.path()));
    };
    let paths: Vec<&str> = fused.parts.iter().map(|k| k.path()).chain([fused.path]).collect();
    let parent = |p: &str| p.rsplit_once('.').map(|(a, _)| a.to_string());
    match parent(paths[0]).filter(|a| paths.iter().all(|p| parent(p).as_deref() == Some(a))) {
        Some(parent) => {
            let leaves: Vec<&str> = paths.iter().map(|p| p.rsplit('.').next().unwrap_or(p)).collect();
            format!("^{layer_prefix}{}\\.({})$", regex::escape(&parent), leaves.join("|"))
        }
        None => {
            let all: Vec<String> = paths.iter().map(|p| regex::escape(p)).collect();
            format!("^{layer_prefix}({})$", all.join("|"))
        }
    }
}

/// The tensors of one packed linear.
pub fn packed_tensors(prefix: &str, p: &PackedLinear) -> Result<Vec<(String, RawTensor)>> {
    let e = |e: packing::PackError| anyhow!("{prefix}: {e}");
    let (out, inp) = (p.rows, p.cols);
    let qweight = packing::pack_gptq_qweight(&p.codes, out, inp, p.bits).map_err(e)?;
    let zeros_go = packing::transpose(&p.zeros, out, p.groups);
    let qzeros = packing::pack_gptq_qzeros(&zeros_go, p.groups, out, p.bits, GptqZeros::V1).map_err(e)?;
    let scales_go = packing::transpose(&p.scales, out, p.groups);
    for (k, &s) in scales_go.iter().enumerate() {
        if half::f16::from_f32(s).to_f32() != s {
            bail!("{prefix}: scale {s:e} (group {}) is not an f16 value; GPTQ stores f16 scales", k / out);
        }
    }
    Ok(vec![
        (
            format!("{prefix}.qweight"),
            RawTensor::i32(&qweight, vec![packing::gptq_qweight_rows(inp, p.bits), out], Category::QuantizedWeights),
        ),
        (
            format!("{prefix}.qzeros"),
            RawTensor::i32(
                &qzeros,
                vec![p.groups, packing::gptq_qzeros_cols(out, p.bits)],
                Category::QuantizationMetadata,
            ),
        ),
        (
            format!("{prefix}.scales"),
            RawTensor::float(&scales_go, vec![p.groups, out], DType::F16, Category::QuantizationMetadata)?,
        ),
        (format!("{prefix}.g_idx"), RawTensor::i32(&p.g_idx, vec![inp], Category::QuantizationMetadata)),
    ])
}

/// The most frequent value (ties: the larger).
fn mode_of<T: Ord + Copy>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut counts = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_insert(0usize) += 1;
    }
    counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0))).map(|(v, _)| v)
}

/// The decoder linears' tensors and the config of a GPTQ checkpoint of `model`.
pub fn write(model: &OptModel, storage: &[LinearStorage], run: &GptqRun, dtype: DType) -> Result<GptqOutput> {
    if dtype != DType::F16 {
        bail!("the GPTQ format stores f16 scales and weights; this checkpoint stores {dtype:?}");
    }
    let packed = || {
        storage.iter().filter_map(|s| match &s.stored {
            Stored::Packed(p) => Some(p),
            Stored::Dense(_) => None,
        })
    };
    let bits = mode_of(packed().map(|p| p.bits)).ok_or_else(|| anyhow!("no linear could be stored packed"))?;
    // -1 (one group per row) sorts first: a real group size wins a tie.
    let group_size = mode_of(packed().map(|p| p.group_size.map_or(-1, |g| g as i64))).expect("packed");
    let desc_act = run.desc_act || packed().any(|p| !p.contiguous());
    let mut dynamic = serde_json::Map::new();
    let mut tensors = BTreeMap::new();
    let mut notes = Vec::new();
    let mut hazard = 0;
    for s in storage {
        let family = model.config.family;
        let prefix = format!("model.{}", family.layer_tensor(s.layer, s.kind.path()));
        let lin = model.layers[s.layer].linear(s.kind);
        match &s.stored {
            Stored::Packed(p) => {
                tensors.extend(packed_tensors(&prefix, p)?);
                let g = p.group_size.map_or(-1, |g| g as i64);
                if p.bits != bits || g != group_size {
                    dynamic.insert(
                        format!("+:{}", module_regex(family, s.layer, s.kind)),
                        json!({"bits": p.bits, "group_size": g}),
                    );
                }
                if !p.sym {
                    hazard +=
                        packing::gptq_v1_zero_hazard(&packing::transpose(&p.zeros, p.rows, p.groups), p.rows, p.bits);
                }
            }
            Stored::Dense(_) => {
                tensors.insert(
                    format!("{prefix}.weight"),
                    RawTensor::from_tensor(lin.weight(), dtype, Category::DenseLinearWeights)?,
                );
                dynamic.insert(format!("-:{}", module_regex(family, s.layer, s.kind)), json!({}));
            }
        }
        if let Some(b) = lin.bias() {
            tensors.insert(format!("{prefix}.bias"), RawTensor::from_tensor(b, dtype, Category::Other)?);
        }
    }
    let mut config = json!({
        "quant_method": "gptq",
        "bits": bits,
        "group_size": group_size,
        "desc_act": desc_act,
        "sym": run.sym,
        "true_sequential": run.true_sequential,
        "static_groups": false,
        "damp_percent": run.damp_percent,
        "checkpoint_format": "gptq",
    });
    if !dynamic.is_empty() {
        notes.push(format!(
            "the GPTQ export's `dynamic` holds {} module patterns (linears at their own width or group size, or stored dense): GPTQModel and vLLM honour it, transformers does not",
            dynamic.len()
        ));
        config["dynamic"] = Value::Object(dynamic);
    }
    if hazard > 0 {
        notes.push(format!(
            "{hazard} asymmetric zero points are 0 (stored as maxq in v1 qzeros): per-field readers (AutoGPTQ, vLLM) read them right; GPTQModel's v1→v2 conversion carries them into the next output's zero"
        ));
    }
    if let Some(g) = packed().filter_map(|p| p.group_size).find(|g| !g.is_multiple_of(32)) {
        notes.push(format!(
            "group size {g} is not a multiple of 32: vLLM's GPTQ kernel switches groups only every 32 inputs and reads it wrongly"
        ));
    }
    Ok(GptqOutput { tensors, config, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::family::{LLAMA, OPT, QWEN3};

    #[test]
    fn module_patterns_name_fused_siblings_from_the_family_table() {
        assert_eq!(
            module_regex(&OPT, 3, LinearKind::K),
            r"^model\.decoder\.layers\.3\.self_attn\.(q_proj|k_proj|v_proj|qkv_proj)$"
        );
        assert_eq!(module_regex(&OPT, 0, LinearKind::Fc1), r"^model\.decoder\.layers\.0\.fc1$");
        assert_eq!(module_regex(&OPT, 1, LinearKind::Out), r"^model\.decoder\.layers\.1\.self_attn\.out_proj$");
        assert_eq!(
            module_regex(&LLAMA, 2, LinearKind::Up),
            r"^model\.layers\.2\.mlp\.(gate_proj|up_proj|gate_up_proj)$"
        );
        assert_eq!(module_regex(&QWEN3, 0, LinearKind::Down), r"^model\.layers\.0\.mlp\.down_proj$");
        // Each pattern matches its linear and the fused module, not another layer's.
        let re = regex::Regex::new(&module_regex(&LLAMA, 2, LinearKind::Q)).unwrap();
        for m in ["model.layers.2.self_attn.v_proj", "model.layers.2.self_attn.qkv_proj"] {
            assert!(re.is_match(m), "{m}");
        }
        assert!(!re.is_match("model.layers.12.self_attn.q_proj") && !re.is_match("model.layers.2.self_attn.o_proj"));
    }
}
