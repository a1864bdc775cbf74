//! compressed-tensors' `pack-quantized` format (llm-compressor's; transformers loads it through
//! the compressed-tensors package, vLLM serves it); layout and sources in docs/formats.md.
//! Per packed linear `P`: `P.weight_packed` int32 `[out, ceil(in·bits/32)]` (rows of
//! unsigned codes = signed value + 2^(bits−1)), `P.weight_scale` `[out, groups]` in the
//! checkpoint's dtype, `P.weight_zero_point` int32 `[ceil(out·bits/32), groups]` when
//! asymmetric, `P.weight_shape` int64 `[out, in]`, `P.bias`. One `config_groups` entry per
//! (width, strategy, group size), with the modules as explicit targets; linears stored
//! dense are listed in `ignore` beside `lm_head`.

use super::layout::{LinearStorage, PackedLinear, Stored};
use super::packing;
use super::tensors::{Category, RawTensor};
use crate::model::OptModel;
use anyhow::{anyhow, Result};
use candle_core::DType;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The compressed-tensors release whose layout (3-bit dense packing included) this writes.
pub const VERSION: &str = "0.20.1";

pub struct CtOutput {
    pub tensors: BTreeMap<String, RawTensor>,
    pub config: Value,
}

/// The tensors of one packed linear (scales in `dtype`).
pub fn packed_tensors(prefix: &str, p: &PackedLinear, dtype: DType) -> Result<Vec<(String, RawTensor)>> {
    let e = |e: packing::PackError| anyhow!("{prefix}: {e}");
    let (out, inp) = (p.rows, p.cols);
    let packed = packing::pack_ct_rows(&p.codes, out, inp, p.bits).map_err(e)?;
    let mut t = vec![
        (
            format!("{prefix}.weight_packed"),
            RawTensor::i32(&packed, vec![out, packing::ct_packed_cols(inp, p.bits)], Category::QuantizedWeights),
        ),
        (
            format!("{prefix}.weight_scale"),
            RawTensor::float(&p.scales, vec![out, p.groups], dtype, Category::QuantizationMetadata)?,
        ),
        (
            format!("{prefix}.weight_shape"),
            RawTensor::i64(&[out as i64, inp as i64], vec![2], Category::QuantizationMetadata),
        ),
    ];
    if !p.sym {
        let zp = packing::pack_ct_zero_points(&p.zeros, out, p.groups, p.bits).map_err(e)?;
        t.push((
            format!("{prefix}.weight_zero_point"),
            RawTensor::i32(&zp, vec![packing::ct_packed_cols(out, p.bits), p.groups], Category::QuantizationMetadata),
        ));
    }
    Ok(t)
}

/// The decoder linears' tensors and the config of a compressed-tensors checkpoint.
pub fn write(model: &OptModel, storage: &[LinearStorage], sym: bool, dtype: DType) -> Result<CtOutput> {
    let mut tensors = BTreeMap::new();
    // (bits, group size) → targets.
    let mut schemes: BTreeMap<(u32, Option<usize>), Vec<String>> = BTreeMap::new();
    let mut ignore = vec!["lm_head".to_string()];
    for s in storage {
        let prefix = format!("model.{}", model.config.family.layer_tensor(s.layer, s.kind.path()));
        let lin = model.layers[s.layer].linear(s.kind);
        match &s.stored {
            Stored::Packed(p) => {
                tensors.extend(packed_tensors(&prefix, p, dtype)?);
                schemes.entry((p.bits, p.group_size)).or_default().push(prefix.clone());
            }
            Stored::Dense(_) => {
                tensors.insert(
                    format!("{prefix}.weight"),
                    RawTensor::from_tensor(lin.weight(), dtype, Category::DenseLinearWeights)?,
                );
                ignore.push(prefix.clone());
            }
        }
        if let Some(b) = lin.bias() {
            tensors.insert(format!("{prefix}.bias"), RawTensor::from_tensor(b, dtype, Category::Other)?);
        }
    }
    if schemes.is_empty() {
        return Err(anyhow!("no linear could be stored packed"));
    }
    let mut config_groups = serde_json::Map::new();
    for (i, ((bits, group_size), targets)) in schemes.into_iter().enumerate() {
        config_groups.insert(
            format!("group_{i}"),
            json!({
                "targets": targets,
                "weights": {
                    "num_bits": bits,
                    "type": "int",
                    "symmetric": sym,
                    "strategy": if group_size.is_some() { "group" } else { "channel" },
                    "group_size": group_size,
                    "dynamic": false,
                    "actorder": null,
                },
                "input_activations": null,
                "output_activations": null,
                "format": "pack-quantized",
            }),
        );
    }
    let config = json!({
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": config_groups,
        "ignore": ignore,
        "kv_cache_scheme": null,
        "global_compression_ratio": null,
        "sparsity_config": {},
        "transform_config": {},
        "version": VERSION,
    });
    Ok(CtOutput { tensors, config })
}
