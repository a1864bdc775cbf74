//! Saving a compressed model as a Hugging Face directory (config.json, model.safetensors,
//! tokenizer files) in one of three formats (`SaveFormat`): dense (what
//! `OPTForCausalLM.from_pretrained` loads as is), or packed GPTQ / compressed-tensors
//! checkpoints that serving engines load (`gptq`, `compressed_tensors`, decisions per
//! linear in `layout`); the sizes reported are read back from the directory.
//!
//! The directory's life (checks, marker, modes, the swap) is `save_dir`'s.

use super::codes::CodeStore;
use super::layout::{self, Container, LinearStorage, StoredLinearReport};
use super::save_dir::{PartialExport, SaveTarget};
use super::tensors::{self, Category, RawTensor};
use super::{compressed_tensors, gptq};
use crate::model::files::ModelFiles;
use crate::model::{LinearKind, OptModel};
use anyhow::{bail, Context, Result};
use candle_core::DType;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// How `--save` writes the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SaveFormat {
    /// Every weight as a float in the checkpoint's dtype (quantized weights as their values).
    #[default]
    Dense,
    /// GPTQ checkpoint format (v1 zero points): transformers + gptqmodel, GPTQModel, vLLM.
    Gptq,
    /// compressed-tensors pack-quantized (llm-compressor's): transformers, vLLM.
    CompressedTensors,
}

impl SaveFormat {
    pub fn name(self) -> &'static str {
        match self {
            SaveFormat::Dense => "dense",
            SaveFormat::Gptq => "gptq",
            SaveFormat::CompressedTensors => "compressed-tensors",
        }
    }

    fn container(self) -> Option<Container> {
        match self {
            SaveFormat::Dense => None,
            SaveFormat::Gptq => Some(Container::Gptq),
            SaveFormat::CompressedTensors => Some(Container::CompressedTensors),
        }
    }
}

/// The dtype an export stores its floats in where it is not the checkpoint's (`--save-dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveDtype {
    F16,
    Bf16,
    F32,
}

impl SaveDtype {
    pub fn dtype(self) -> DType {
        match self {
            SaveDtype::F16 => DType::F16,
            SaveDtype::Bf16 => DType::BF16,
            SaveDtype::F32 => DType::F32,
        }
    }
}

/// What a run will quantize, as far as the formats care (known before any work).
#[derive(Clone, Debug)]
pub struct PlannedQuantization {
    pub quantized: bool,
    /// The uniform width (None for the mixed-precision modes, whose widths are planned).
    pub uniform_bits: Option<u32>,
    /// `--groupsize` (None: one grid per row).
    pub group_size: Option<usize>,
    /// Act-order with groups formed along the sweep (`ActGroups::Dynamic`): a g_idx column map.
    pub permuted_groups: bool,
}

/// Why a packed format cannot hold what a run produces.
#[derive(Clone, Debug, PartialEq)]
pub enum FormatRefusal {
    /// The format stores quantized weights and the run does not quantize.
    NotQuantized(SaveFormat),
    /// GPTQ holds 2, 3, 4 or 8 bits.
    GptqBits(u32),
    /// GPTQ loaders need every input and output width a multiple of 32.
    GptqWidth(usize),
    /// compressed-tensors has no short last group.
    GroupDoesNotDivide { group: usize, width: usize },
    /// compressed-tensors has no act-order groups along the sweep (removed in compressed-tensors 0.20).
    ActOrderWithGroups,
    /// GPTQ stores f16 scales and weights.
    GptqDtype(DType),
}

impl std::fmt::Display for FormatRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatRefusal::NotQuantized(format) => {
                write!(f, "the {} format stores quantized weights, and this run does not quantize", format.name())
            }
            FormatRefusal::GptqBits(b) => {
                write!(f, "the gptq format holds 2, 3, 4 or 8 bits, not {b} (compressed-tensors holds 1 to 8)")
            }
            FormatRefusal::GptqWidth(w) => write!(
                f,
                "the gptq format: layer width {w} is not a multiple of 32, which GPTQ loaders need for inputs and outputs"
            ),
            FormatRefusal::GroupDoesNotDivide { group, width } => write!(
                f,
                "the compressed-tensors format: group size {group} does not divide the layer width {width}, and the format has no short last group"
            ),
            FormatRefusal::ActOrderWithGroups => write!(
                f,
                "the compressed-tensors format cannot hold act-order's dynamic groups: its permuted-group act-order (\"group\", with weight_g_idx) was removed in compressed-tensors 0.20"
            ),
            FormatRefusal::GptqDtype(dtype) => write!(
                f,
                "the gptq format stores f16 scales and weights, and this model is stored in {dtype:?} (store it in f16, or use compressed-tensors, which keeps {dtype:?})"
            ),
        }
    }
}

impl std::error::Error for FormatRefusal {}

/// Checks before any work that `format` can hold what the run will produce on a model whose
/// decoder linears read `inputs` and write `outputs` wide vectors (hidden size, FFN width, and
/// the attention's q and k/v widths where heads × head_dim differ from them).
pub fn check_format(
    format: SaveFormat,
    q: &PlannedQuantization,
    inputs: &[usize],
    outputs: &[usize],
) -> std::result::Result<(), FormatRefusal> {
    if format == SaveFormat::Dense {
        return Ok(());
    }
    if !q.quantized {
        return Err(FormatRefusal::NotQuantized(format));
    }
    match format {
        SaveFormat::Gptq => {
            if let Some(b) = q.uniform_bits.filter(|b| !super::packing::GPTQ_BITS.contains(b)) {
                return Err(FormatRefusal::GptqBits(b));
            }
            if let Some(&w) = inputs.iter().chain(outputs).find(|w| !w.is_multiple_of(32)) {
                return Err(FormatRefusal::GptqWidth(w));
            }
        }
        SaveFormat::CompressedTensors => {
            if let Some(group) = q.group_size {
                if let Some(&width) = inputs.iter().find(|w| !w.is_multiple_of(group)) {
                    return Err(FormatRefusal::GroupDoesNotDivide { group, width });
                }
                if q.permuted_groups {
                    return Err(FormatRefusal::ActOrderWithGroups);
                }
            }
        }
        SaveFormat::Dense => {}
    }
    Ok(())
}

/// Checks, once the model is loaded, that `format` can store its dtype.
pub fn check_storage(format: SaveFormat, storage: DType) -> std::result::Result<(), FormatRefusal> {
    if format == SaveFormat::Gptq && storage != DType::F16 {
        return Err(FormatRefusal::GptqDtype(storage));
    }
    Ok(())
}

/// What a packed format needs from the run.
pub struct PackedRun<'a> {
    pub codes: &'a CodeStore,
    pub sym: bool,
    /// The run's sweep settings (act-order and dampening go into the format's config).
    pub sweep: &'a crate::solver::SweepSettings,
    /// `--true-sequential` (recorded in the GPTQ config).
    pub true_sequential: bool,
}

pub struct SaveRequest<'a> {
    pub format: SaveFormat,
    /// The checkpoint's dtype: dense weights, biases, norms and embeddings are stored in it.
    pub dtype: DType,
    /// The codes and settings, for `gptq` and `compressed-tensors`.
    pub packed: Option<PackedRun<'a>>,
}

/// Bytes on disk of a saved directory and what they hold.
#[derive(Clone, Debug, Serialize)]
pub struct SizeReport {
    /// Σ of the sizes of every file in the directory, as read back after saving.
    pub total_bytes: u64,
    pub files: BTreeMap<String, u64>,
    /// Packed integer codes of the quantized linears.
    pub quantized_weight_bytes: u64,
    /// Their scales, zero points, g_idx and shapes.
    pub quantization_metadata_bytes: u64,
    /// Decoder linears stored as floats (all of them in the dense format).
    pub dense_linear_bytes: u64,
    /// Token and position embeddings (the LM head is tied to the token embeddings).
    pub embedding_bytes: u64,
    /// Biases, layer norms, project_in / project_out.
    pub other_tensor_bytes: u64,
    pub safetensors_header_bytes: u64,
    /// config.json, quantize_config.json, tokenizer files and the export marker.
    pub other_file_bytes: u64,
    /// Weights of the decoder linears, and of those stored packed.
    pub linear_weights: u64,
    pub packed_weights: u64,
    /// Bits per weight as stored, over all decoder linears: (codes + metadata + dense linear
    /// weights) · 8 / linear weights.
    pub linear_bits_per_weight: f64,
    /// Over the packed linears only: codes, and codes + metadata.
    pub packed_bits_per_weight: Option<f64>,
    pub packed_bits_per_weight_with_metadata: Option<f64>,
    pub note: &'static str,
}

pub const SPARSITY_NOTE: &str = "sparsity is not stored: neither format has a packed sparse representation, so pruned weights take a code (or a float) like any other";

impl SizeReport {
    pub fn describe(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        format!(
            "{} bytes ({:.2} MiB) on disk: {:.2} MiB packed linear weights, {:.2} MiB scales/zeros/g_idx, {:.2} MiB dense linear weights, {:.2} MiB embeddings, {:.2} MiB other tensors, {} bytes safetensors header, {} bytes config and tokenizer files; decoder linears {:.3} bits/weight as stored ({})",
            self.total_bytes,
            mib(self.total_bytes),
            mib(self.quantized_weight_bytes),
            mib(self.quantization_metadata_bytes),
            mib(self.dense_linear_bytes),
            mib(self.embedding_bytes),
            mib(self.other_tensor_bytes),
            self.safetensors_header_bytes,
            self.other_file_bytes,
            self.linear_bits_per_weight,
            SPARSITY_NOTE
        )
    }
}

/// What `save` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct SaveReport {
    pub dir: String,
    /// The format written: `requested_format`, or dense where that could pack no linear.
    pub format: SaveFormat,
    pub requested_format: SaveFormat,
    pub sizes: SizeReport,
    /// Per decoder linear: planned bits, stored bits, packed or dense (packed formats).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub linears: Vec<StoredLinearReport>,
    pub notes: Vec<String>,
}

/// Refuses to save a tensor that is not finite in the dtype it is saved in.
fn check_finite(name: &str, t: &candle_core::Tensor, dtype: DType) -> Result<()> {
    let stored = t.to_dtype(dtype)?;
    if !crate::numerics::all_finite(&stored)? {
        bail!(
            "tensor {name} holds non-finite values in the {dtype:?} it is saved in ({}); nothing was saved",
            crate::numerics::describe_non_finite(&stored)
        );
    }
    Ok(())
}

/// Every tensor of the model other than the decoder linears, under its transformers name
/// (`OPTForCausalLM`'s, `LlamaForCausalLM`'s, … from the family's table).
fn base_tensors(model: &OptModel, dtype: DType) -> Result<BTreeMap<String, RawTensor>> {
    let names = &model.config.family.names;
    let mut m = BTreeMap::new();
    let mut put = |name: String, t: &candle_core::Tensor, c: Category| -> Result<()> {
        check_finite(&name, t, dtype)?;
        m.insert(name, RawTensor::from_tensor(t, dtype, c)?);
        Ok(())
    };
    put(format!("model.{}.weight", names.embed_tokens), &model.embed_tokens, Category::Embeddings)?;
    if let Some(table) = &model.embed_positions {
        put(format!("model.{}.weight", names.embed_positions), table, Category::Embeddings)?;
    }
    if let Some(head) = &model.lm_head {
        put(format!("{}.weight", names.lm_head), head, Category::Embeddings)?;
    }
    if let Some(p) = &model.project_in {
        put("model.decoder.project_in.weight".into(), p.weight(), Category::Other)?;
    }
    if let Some(p) = &model.project_out {
        put("model.decoder.project_out.weight".into(), p.weight(), Category::Other)?;
    }
    let mut put_norm = |prefix: String, norm: &crate::model::Norm| -> Result<()> {
        put(format!("{prefix}.weight"), norm.weight(), Category::Other)?;
        if let Some(b) = norm.bias() {
            put(format!("{prefix}.bias"), b, Category::Other)?;
        }
        Ok(())
    };
    if let Some(norm) = &model.final_layer_norm {
        put_norm(format!("model.{}", names.final_norm), norm)?;
    }
    for (i, layer) in model.layers.iter().enumerate() {
        let at = |module: &str| format!("model.{}", model.config.family.layer_tensor(i, module));
        put_norm(at(names.attn_norm), &layer.attn_norm)?;
        put_norm(at(names.mlp_norm), &layer.mlp_norm)?;
        if let Some((q_norm, k_norm)) = layer.qk_norms() {
            put_norm(at(names.q_norm), q_norm)?;
            put_norm(at(names.k_norm), k_norm)?;
        }
    }
    Ok(m)
}

/// The checkpoint name of layer `i`'s linear `kind` (without `.weight`).
pub(crate) fn linear_name(model: &OptModel, i: usize, kind: LinearKind) -> String {
    format!("model.{}", model.config.family.layer_tensor(i, kind.path()))
}

/// The decoder linears as floats (the dense format).
fn dense_linears(model: &OptModel, dtype: DType, into: &mut BTreeMap<String, RawTensor>) -> Result<()> {
    for (i, layer) in model.layers.iter().enumerate() {
        for &kind in layer.kinds() {
            let p = linear_name(model, i, kind);
            let lin = layer.linear(kind);
            check_finite(&format!("{p}.weight"), lin.weight(), dtype)?;
            into.insert(
                format!("{p}.weight"),
                RawTensor::from_tensor(lin.weight(), dtype, Category::DenseLinearWeights)?,
            );
            if let Some(b) = lin.bias() {
                into.insert(format!("{p}.bias"), RawTensor::from_tensor(b, dtype, Category::Other)?);
            }
        }
    }
    Ok(())
}

/// transformers' name of a dtype (config.json's `torch_dtype` / `dtype`).
fn dtype_config_name(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F16 => Some("float16"),
        DType::BF16 => Some("bfloat16"),
        DType::F32 => Some("float32"),
        _ => None,
    }
}

/// config.json of the source with `quantization_config` set (or removed) and its dtype keys
/// (`torch_dtype`, `dtype`, where present) naming `dtype`, the dtype the export stores.
fn write_config(files: &ModelFiles, quantization: Option<&serde_json::Value>, dtype: DType, to: &Path) -> Result<()> {
    let text = std::fs::read_to_string(&files.config)?;
    let mut cfg: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", files.config.display()))?;
    let obj = cfg.as_object_mut().context("config.json is not an object")?;
    let stored = dtype_config_name(dtype).map(serde_json::Value::from);
    let dtype_keys: Vec<&str> = ["torch_dtype", "dtype"]
        .into_iter()
        .filter(|k| obj.get(*k).is_some_and(|v| v.is_string() && stored.as_ref().is_some_and(|s| v != s)))
        .collect();
    match quantization {
        None if !obj.contains_key("quantization_config") && dtype_keys.is_empty() => {
            // The source's file as it is.
            std::fs::copy(&files.config, to)?;
            return Ok(());
        }
        None => {
            obj.remove("quantization_config");
        }
        Some(q) => {
            obj.insert("quantization_config".into(), q.clone());
        }
    }
    if let Some(stored) = stored {
        for key in dtype_keys {
            obj.insert(key.into(), stored.clone());
        }
    }
    std::fs::write(to, serde_json::to_string_pretty(&cfg)? + "\n")?;
    Ok(())
}

/// What one format's writer produced, for the report.
struct Written {
    /// The format written: the one asked for, or dense where it could pack nothing.
    format: SaveFormat,
    categories: BTreeMap<Category, u64>,
    tensor_bytes: u64,
    linears: Vec<StoredLinearReport>,
    storage: Vec<LinearStorage>,
    notes: Vec<String>,
}

/// Writes the model's files in `req.format` into `dir` (an empty directory).
fn write_format(model: &OptModel, files: &ModelFiles, dir: &Path, req: &SaveRequest) -> Result<Written> {
    for f in &files.extra {
        if let Some(n) = f.file_name() {
            std::fs::copy(f, dir.join(n))?;
        }
    }
    let mut tensors = base_tensors(model, req.dtype)?;
    let mut notes = Vec::new();
    // The storage of every decoder linear in a packed format; a format that can pack none
    // of them (e.g. mixed-precision groups of unequal sizes) gets a dense checkpoint.
    let mut format = req.format;
    let mut storage = Vec::new();
    if let Some(container) = req.format.container() {
        for (i, layer) in model.layers.iter().enumerate() {
            for &kind in layer.kinds() {
                check_finite(
                    &format!("{}.weight", linear_name(model, i, kind)),
                    layer.linear(kind).weight(),
                    req.dtype,
                )?;
            }
        }
        let run = req.packed.as_ref().context("a packed format needs the run's codes")?;
        storage = layout::plan(run.codes, model.layers.len(), model.config.family, container)?;
        if !storage.iter().any(|s| matches!(s.stored, layout::Stored::Packed(_))) {
            let mut why: Vec<String> = storage
                .iter()
                .filter_map(|s| match &s.stored {
                    layout::Stored::Dense(w) => Some(w.clone()),
                    layout::Stored::Packed(_) => None,
                })
                .collect();
            why.sort();
            why.dedup();
            notes.push(format!(
                "no linear can be stored packed in the {} format ({}); saved dense instead",
                req.format.name(),
                why.join("; ")
            ));
            format = SaveFormat::Dense;
        }
    }
    let quantization = match (format.container(), &req.packed) {
        (Some(Container::Gptq), Some(run)) => {
            let g = gptq::write(
                model,
                &storage,
                &gptq::GptqRun {
                    sym: run.sym,
                    desc_act: run.sweep.act_order && run.sweep.act_groups == crate::solver::ActGroups::Dynamic,
                    damp_percent: run.sweep.percdamp,
                    true_sequential: run.true_sequential,
                },
                req.dtype,
            )?;
            tensors.extend(g.tensors);
            notes.extend(g.notes);
            std::fs::write(dir.join("quantize_config.json"), serde_json::to_string_pretty(&g.config)? + "\n")?;
            Some(g.config)
        }
        (Some(Container::CompressedTensors), Some(run)) => {
            let c = compressed_tensors::write(model, &storage, run.sym, req.dtype)?;
            tensors.extend(c.tensors);
            Some(c.config)
        }
        _ => {
            dense_linears(model, req.dtype, &mut tensors)?;
            None
        }
    };
    write_config(files, quantization.as_ref(), req.dtype, &dir.join("config.json"))?;
    tensors::write(&tensors, &dir.join("model.safetensors"))?;
    let dense_bits = 8.0 * req.dtype.size_in_bytes() as f64;
    let linears = layout::reports(&storage, dense_bits);
    let dense_planned: Vec<&StoredLinearReport> =
        linears.iter().filter(|l| l.stored_as == "dense" && l.planned_bits.is_some()).collect();
    if !dense_planned.is_empty() && format != SaveFormat::Dense {
        let mut why: BTreeMap<&str, usize> = BTreeMap::new();
        for l in &dense_planned {
            *why.entry(l.why_dense.as_deref().unwrap_or("")).or_default() += 1;
        }
        for (reason, n) in why {
            notes.push(format!(
                "{n} quantized linears stored dense ({} bits) in the {} export: {reason}",
                dense_bits,
                format.name()
            ));
        }
    }
    let widened =
        linears.iter().filter(|l| l.stored_as == "packed" && l.planned_bits.is_some_and(|p| p < l.stored_bits));
    let n_widened = widened.clone().count();
    if n_widened > 0 {
        let planned: f64 = widened.clone().map(|l| l.planned_bits.unwrap_or(0.0)).sum::<f64>() / n_widened as f64;
        let stored: f64 = widened.map(|l| l.stored_bits).sum::<f64>() / n_widened as f64;
        notes.push(format!(
            "{n_widened} linears with column groups of different widths stored exactly at one uniform width each: {planned:.3} planned bits/weight → {stored:.3} stored (mean over them)"
        ));
    }
    let categories = tensors::bytes_by_category(&tensors);
    let tensor_bytes = categories.values().sum();
    if format == SaveFormat::Dense {
        // What was planned stays in the report; nothing is stored packed.
        storage.clear();
    }
    Ok(Written { format, categories, tensor_bytes, linears, storage, notes })
}

/// Writes the model as an export at `target` (a temporary sibling filled, then swapped into
/// place: `save_dir`) and reports what is on disk.
pub fn save(model: &OptModel, files: &ModelFiles, target: &SaveTarget, req: &SaveRequest) -> Result<SaveReport> {
    let shown = target.given.display();
    let partial = PartialExport::begin(target)?;
    let written =
        write_format(model, files, partial.path(), req).with_context(|| format!("saving to {shown} failed"))?;
    partial.finish()?;
    let sizes = measure(&target.dir, model, &written)?;
    Ok(SaveReport {
        dir: target.given.display().to_string(),
        format: written.format,
        requested_format: req.format,
        sizes,
        linears: written.linears,
        notes: written.notes,
    })
}

/// The size report of a saved directory: file sizes read from disk, tensor bytes by category
/// from what was written.
fn measure(dir: &Path, model: &OptModel, w: &Written) -> Result<SizeReport> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            files.insert(e.file_name().to_string_lossy().to_string(), e.metadata()?.len());
        }
    }
    let total_bytes: u64 = files.values().sum();
    let st = files.get("model.safetensors").copied().unwrap_or(0);
    let cat = |c: Category| w.categories.get(&c).copied().unwrap_or(0);
    let linear_weights: u64 =
        model.layers.iter().flat_map(|l| l.kinds().iter().map(|&k| l.linear(k).weight().elem_count() as u64)).sum();
    let packed_weights: u64 = w
        .storage
        .iter()
        .filter_map(|s| match &s.stored {
            layout::Stored::Packed(p) => Some((p.rows * p.cols) as u64),
            layout::Stored::Dense(_) => None,
        })
        .sum();
    let (q, meta, dense) =
        (cat(Category::QuantizedWeights), cat(Category::QuantizationMetadata), cat(Category::DenseLinearWeights));
    let per = |bytes: u64, n: u64| (n > 0).then(|| bytes as f64 * 8.0 / n as f64);
    Ok(SizeReport {
        total_bytes,
        quantized_weight_bytes: q,
        quantization_metadata_bytes: meta,
        dense_linear_bytes: dense,
        embedding_bytes: cat(Category::Embeddings),
        other_tensor_bytes: cat(Category::Other),
        safetensors_header_bytes: st.saturating_sub(w.tensor_bytes),
        other_file_bytes: total_bytes - st,
        linear_weights,
        packed_weights,
        linear_bits_per_weight: per(q + meta + dense, linear_weights).unwrap_or(0.0),
        packed_bits_per_weight: per(q, packed_weights),
        packed_bits_per_weight_with_metadata: per(q + meta, packed_weights),
        files,
        note: SPARSITY_NOTE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::packed::{dequantize, PackedFormat};
    use crate::output::codes::{recover, tests::solve};
    use crate::output::layout::{pack, PackedLinear};
    use crate::solver::{ColumnGroup, QuantScheme, Sparsity};

    /// Writes one linear's tensors to a safetensors file, reads it back with candle and
    /// dequantizes it with the model's reader (written apart from the packer).
    fn read_back(tensors: Vec<(String, RawTensor)>, format: &PackedFormat) -> Vec<f32> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        tensors::write(&tensors.into_iter().collect(), &path).unwrap();
        let mut map = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
        dequantize(&mut map, format).unwrap();
        let w = map.remove("model.decoder.layers.0.fc1.weight").unwrap();
        assert_eq!(map.len(), 0, "packed tensors left: {:?}", map.keys());
        assert_eq!(w.dtype(), DType::F16, "dequantized in the scales' dtype");
        w.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    fn f16(w: &[f32]) -> Vec<u32> {
        w.iter().map(|&x| half::f16::from_f32(x).to_f32().to_bits()).collect()
    }

    fn packed(quant: QuantScheme, act_order: bool, perm: Option<&[usize]>, bits: u32, c: Container) -> PackedLinear {
        let (w, grids) = solve(quant, act_order, Sparsity::Unstructured(0.5), perm);
        let codes = recover(&w, &grids).unwrap();
        pack(&crate::output::codes::LinearCodes { grids, codes }, c, bits).unwrap().unwrap()
    }

    #[test]
    fn packed_tensors_read_back_to_the_dense_weight() {
        // Short last group, act-order, mixed chunks, every GPTQ width, sym and asym: the
        // reader's weight equals f16(scale · (q − zero)), what the dense export stores.
        let p = "model.decoder.layers.0.fc1";
        let perm: Vec<usize> = (0..200).map(|k| (k * 77) % 200).collect();
        for bits in [2u32, 3, 4, 8] {
            for sym in [false, true] {
                let mixed = vec![
                    ColumnGroup { start: 0, len: 64, bits: 2.min(bits) },
                    ColumnGroup { start: 64, len: 136, bits },
                ];
                for (lin, gs) in [
                    (packed(QuantScheme::Grouped { bits, sym, size: 64 }, false, None, bits, Container::Gptq), 64),
                    (packed(QuantScheme::Grouped { bits, sym, size: 128 }, true, None, bits, Container::Gptq), 128),
                    (packed(QuantScheme::PerRow { bits, sym }, false, None, bits, Container::Gptq), -1),
                    (packed(QuantScheme::Mixed { groups: mixed, sym }, false, Some(&perm), bits, Container::Gptq), 64),
                ] {
                    let want = f16(&lin.dequantized());
                    let cfg = serde_json::json!({"quant_method": "gptq", "bits": bits, "group_size": gs,
                                                 "checkpoint_format": "gptq", "sym": sym});
                    let got =
                        read_back(gptq::packed_tensors(p, &lin).unwrap(), &PackedFormat::from_json(&cfg).unwrap());
                    assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "gptq {bits} bits gs {gs}");
                }
            }
        }
        // compressed-tensors: channel and dividing groups, 1..8 bits (200 = 8 · 25).
        for bits in 2u32..=8 {
            for sym in [false, true] {
                for (quant, gs) in [
                    (QuantScheme::PerRow { bits, sym }, None),
                    (QuantScheme::Grouped { bits, sym, size: 40 }, Some(40)),
                ] {
                    let lin = packed(quant, false, None, bits, Container::CompressedTensors);
                    let want = f16(&lin.dequantized());
                    let cfg = serde_json::json!({"quant_method": "compressed-tensors", "format": "pack-quantized",
                        "quantization_status": "compressed",
                        "config_groups": {"group_0": {"targets": [p], "weights": {"num_bits": bits, "type": "int",
                            "symmetric": sym, "strategy": if gs.is_some() { "group" } else { "channel" }, "group_size": gs}}}});
                    let t = compressed_tensors::packed_tensors(p, &lin, DType::F16).unwrap();
                    assert_eq!(t.iter().any(|(n, _)| n.ends_with("weight_zero_point")), !sym);
                    let got = read_back(t, &PackedFormat::from_json(&cfg).unwrap());
                    assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "ct {bits} bits {gs:?}");
                }
            }
        }
    }

    #[test]
    fn formats_check_every_width_they_pack() {
        let q = |group_size| PlannedQuantization {
            quantized: true,
            uniform_bits: Some(4),
            group_size,
            permuted_groups: false,
        };
        // A k/v projection 80 wide (one head of 80): GPTQ packs outputs by 32 too.
        let (inputs, outputs) = ([256, 704], [256, 704, 256, 80]);
        assert_eq!(check_format(SaveFormat::Gptq, &q(None), &inputs, &outputs), Err(FormatRefusal::GptqWidth(80)));
        assert_eq!(check_format(SaveFormat::Gptq, &q(None), &inputs, &[256, 704, 256, 64]), Ok(()));
        // compressed-tensors groups run along the inputs only.
        assert_eq!(check_format(SaveFormat::CompressedTensors, &q(Some(64)), &inputs, &outputs), Ok(()));
        assert_eq!(
            check_format(SaveFormat::CompressedTensors, &q(Some(128)), &inputs, &outputs),
            Err(FormatRefusal::GroupDoesNotDivide { group: 128, width: 704 })
        );
        // Act-order's dynamic groups need a g_idx, which compressed-tensors lacks and GPTQ has.
        let dynamic = PlannedQuantization { permuted_groups: true, ..q(Some(64)) };
        assert_eq!(
            check_format(SaveFormat::CompressedTensors, &dynamic, &inputs, &outputs),
            Err(FormatRefusal::ActOrderWithGroups)
        );
        assert_eq!(check_format(SaveFormat::Gptq, &dynamic, &inputs, &[256, 704, 256, 64]), Ok(()));
        assert_eq!(check_storage(SaveFormat::Gptq, DType::BF16), Err(FormatRefusal::GptqDtype(DType::BF16)));
        assert_eq!(check_storage(SaveFormat::CompressedTensors, DType::BF16), Ok(()));
    }

    #[test]
    fn bad_packed_tensors_are_refused_with_their_name() {
        let p = "model.decoder.layers.0.fc1";
        let lin = packed(QuantScheme::Grouped { bits: 4, sym: false, size: 64 }, false, None, 4, Container::Gptq);
        let cfg = |bits: u32, gs: i64| {
            PackedFormat::from_json(&serde_json::json!({"quant_method": "gptq", "bits": bits, "group_size": gs}))
                .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        tensors::write(&gptq::packed_tensors(p, &lin).unwrap().into_iter().collect(), &path).unwrap();
        for (format, needle) in
            [(cfg(3, 64), "qweight has shape [25, 12], expected [19, 12]"), (cfg(4, 128), "implies 2")]
        {
            let mut map = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
            let e = dequantize(&mut map, &format).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let mut map = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
        map.remove(&format!("{p}.scales"));
        assert!(dequantize(&mut map, &cfg(4, 64)).unwrap_err().to_string().contains("missing"));
    }
}
