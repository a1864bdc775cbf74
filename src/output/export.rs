//! Saving a compressed model as a Hugging Face directory (config.json, model.safetensors,
//! tokenizer files) in one of three formats (`SaveFormat`): dense (what
//! `OPTForCausalLM.from_pretrained` loads as is), or packed GPTQ / compressed-tensors
//! checkpoints that serving engines load (`gptq`, `compressed_tensors`, decisions per
//! linear in `layout`); the sizes reported are read back from the directory.
//!
//! The directory's life: `check_save_target` (before any work) refuses a target whose end
//! would fail or would delete what this tool did not write — an existing non-empty directory
//! that is not a previous export (the `MARKER` file lists what an export wrote) unless
//! `--overwrite`, the current directory or one above it, a symbolic link; `check_not_model`
//! (once the model's files are known) refuses any target that holds one of them. `save` fills
//! a temporary sibling `.NAME.partialPID` (registered for removal on a signal), gives its
//! files ordinary modes (0666/0777 less the umask), writes the marker, checks the target
//! again and swaps it into place (an atomic exchange where the filesystem has one), so a
//! failed or interrupted run never leaves half a model nor loses the previous one.

use super::atomic::{check_folder_above, last_component, parent_dir};
use super::cleanup::{self, TempPath};
use super::codes::CodeStore;
use super::layout::{self, Container, LinearStorage, StoredLinearReport};
use super::tensors::{self, Category, RawTensor};
use super::{compressed_tensors, gptq};
use crate::model::files::{ModelFiles, TokenizerFiles};
use crate::model::{LinearKind, OptModel};
use anyhow::{bail, Context, Result};
use candle_core::DType;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file every export holds: the tool, its version, and the files the export wrote.
pub const MARKER: &str = ".sparsegpt-mi-export";

/// How `--save` writes the model.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
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

/// What a run will quantize, as far as the formats care (known before any work).
#[derive(Clone, Debug)]
pub struct PlannedQuantization {
    pub quantized: bool,
    /// The uniform width (None for the mixed-precision modes, whose widths are planned).
    pub uniform_bits: Option<u32>,
    /// `--groupsize` (None: one grid per row).
    pub group_size: Option<usize>,
    pub act_order: bool,
}

/// Checks before any work that `format` can hold what the run will produce on a model of
/// these widths (hidden size and FFN width: every decoder linear's input and output).
pub fn check_format(format: SaveFormat, q: &PlannedQuantization, widths: &[usize]) -> Result<()> {
    let name = format.name();
    if format == SaveFormat::Dense {
        return Ok(());
    }
    if !q.quantized {
        bail!("--save-format {name} stores quantized weights, and this run does not quantize (give --wbits 2..8 or a mixed-precision mode; or save dense)");
    }
    match format {
        SaveFormat::Gptq => {
            if let Some(b) = q.uniform_bits.filter(|b| !super::packing::GPTQ_BITS.contains(b)) {
                bail!("--save-format gptq holds 2, 3, 4 or 8 bits, not --wbits {b} (compressed-tensors holds 1 to 8)");
            }
            if let Some(w) = widths.iter().find(|w| !w.is_multiple_of(32)) {
                bail!("--save-format gptq: layer width {w} is not a multiple of 32, which GPTQ loaders need for inputs and outputs");
            }
        }
        SaveFormat::CompressedTensors => {
            if let Some(g) = q.group_size {
                if let Some(w) = widths.iter().find(|w| !w.is_multiple_of(g)) {
                    bail!("--save-format compressed-tensors: --groupsize {g} does not divide the layer width {w}, and the format has no short last group (use --save-format gptq, or a group size dividing every width)");
                }
                if q.act_order {
                    bail!("--save-format compressed-tensors cannot hold --act-order with --groupsize: its permuted-group act-order (\"group\", with weight_g_idx) was removed in compressed-tensors 0.20 (use --save-format gptq)");
                }
            }
        }
        SaveFormat::Dense => {}
    }
    Ok(())
}

/// Checks, once the model is loaded, that `format` can store its dtype.
pub fn check_storage(format: SaveFormat, storage: DType) -> Result<()> {
    if format == SaveFormat::Gptq && storage != DType::F16 {
        bail!("--save-format gptq stores f16 scales and weights, and this checkpoint is {storage:?} (use compressed-tensors, which keeps the checkpoint's dtype)");
    }
    Ok(())
}

/// What a packed format needs from the run.
pub struct PackedRun<'a> {
    pub codes: &'a CodeStore,
    pub sym: bool,
    pub act_order: bool,
    pub percdamp: f64,
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

/// config.json of the source with `quantization_config` set (or removed).
fn write_config(files: &ModelFiles, quantization: Option<&serde_json::Value>, to: &Path) -> Result<()> {
    let text = std::fs::read_to_string(&files.config)?;
    let mut cfg: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", files.config.display()))?;
    let obj = cfg.as_object_mut().context("config.json is not an object")?;
    match quantization {
        None if !obj.contains_key("quantization_config") => {
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
        storage = layout::plan(run.codes, model.layers.len(), container)?;
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
                &gptq::GptqRun { sym: run.sym, act_order: run.act_order, damp_percent: run.percdamp },
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
    write_config(files, quantization.as_ref(), &dir.join("config.json"))?;
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

/// A checked `--save` target.
#[derive(Debug, Clone)]
pub struct SaveTarget {
    /// As the user gave it (for messages).
    pub given: PathBuf,
    /// Absolute, with `.` and `..` resolved (symbolic links in the folders above resolved
    /// where they exist).
    pub dir: PathBuf,
    pub overwrite: bool,
}

impl SaveTarget {
    fn parent(&self) -> &Path {
        parent_dir(&self.dir)
    }
    fn name(&self) -> String {
        last_component(&self.dir)
    }
}

/// `path` absolute: the existing folders above its last component canonical (symlinks and
/// `..` resolved as the kernel resolves them), the rest with `.` and `..` applied; the last
/// component itself is kept as written (a symlink there stays visible).
fn resolved(path: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let abs = std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let comps: Vec<Component> = abs.components().collect();
    let Some((last, above)) = comps.split_last() else { return Ok(abs) };
    let mut n = above.len();
    let mut base = loop {
        if n == 0 {
            break PathBuf::from("/");
        }
        if let Ok(c) = std::fs::canonicalize(above[..n].iter().collect::<PathBuf>()) {
            break c;
        }
        n -= 1;
    };
    for c in above[n..].iter().chain([last]) {
        match c {
            Component::ParentDir => {
                base.pop();
            }
            Component::CurDir => {}
            c => base.push(c),
        }
    }
    Ok(base)
}

/// Checks before any work that `dir` can be made an export at the end of the run without
/// deleting anything this tool did not write (see the module's text); removes stale
/// temporary directories of this tool beside it.
pub fn check_save_target(dir: &Path, overwrite: bool) -> Result<SaveTarget> {
    let shown = dir.display();
    if dir.as_os_str().is_empty() {
        bail!("--save is empty: give a directory");
    }
    let last = last_component(Path::new(dir.to_string_lossy().trim_end_matches('/')));
    if last.is_empty() || last == "." || last == ".." {
        bail!("--save {shown}: name the export directory itself ('.', '..' and '/' cannot be replaced)");
    }
    let target = SaveTarget { given: dir.to_path_buf(), dir: resolved(dir)?, overwrite };
    if let Ok(cwd) = std::env::current_dir().and_then(std::fs::canonicalize) {
        if cwd.starts_with(&target.dir) {
            bail!("--save {shown}: is the current directory or holds it; save somewhere else");
        }
    }
    check_existing(&target)?;
    check_folder_above(&target.dir, "--save")?;
    cleanup::remove_stale(target.parent(), &target.name());
    Ok(target)
}

/// The target as it is now: absent, an empty directory, a previous export (nothing in it but
/// what the marker lists), or, with `--overwrite`, any directory.
fn check_existing(target: &SaveTarget) -> Result<()> {
    let shown = target.given.display();
    let meta = match std::fs::symlink_metadata(&target.dir) {
        Ok(m) => m,
        // Absent, or a file above it (which the check of the folders above names).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(()),
        Err(e) => bail!("--save {shown}: cannot read it ({e})"),
    };
    if meta.file_type().is_symlink() {
        bail!("--save {shown}: is a symbolic link; name the directory itself");
    }
    if !meta.is_dir() {
        bail!("--save {shown}: exists and is not a directory");
    }
    if target.overwrite {
        return Ok(());
    }
    let entries: Vec<String> = std::fs::read_dir(&target.dir)
        .with_context(|| format!("--save {shown}: cannot list it"))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let Some(written) = read_marker(&target.dir) else {
        bail!(
            "--save {shown}: exists and is not empty, and is not an export of this tool (no {MARKER}); choose a new directory, or pass --overwrite to replace it and everything in it"
        );
    };
    let mut foreign: Vec<&String> = entries.iter().filter(|e| *e != MARKER && !written.contains(e)).collect();
    if !foreign.is_empty() {
        foreign.sort();
        bail!(
            "--save {shown}: is a previous export but also holds files it did not write ({}); move them, choose a new directory, or pass --overwrite",
            foreign.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// The files a previous export says it wrote, if `dir` holds a readable marker of this tool.
fn read_marker(dir: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(MARKER)).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    if json.get("tool")?.as_str()? != env!("CARGO_PKG_NAME") {
        return None;
    }
    json.get("files")?.as_array()?.iter().map(|f| f.as_str().map(str::to_string)).collect()
}

fn write_marker(dir: &Path, files: &[String]) -> Result<()> {
    let marker = serde_json::json!({
        "tool": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "files": files,
    });
    std::fs::write(dir.join(MARKER), serde_json::to_string_pretty(&marker)?)
        .with_context(|| format!("cannot write {}", dir.join(MARKER).display()))
}

/// Every file of the input model, as given and with symlinks resolved.
fn model_paths(files: &ModelFiles) -> Vec<PathBuf> {
    let mut list = vec![files.config.clone()];
    list.extend(files.weights.iter().cloned());
    match &files.tokenizer {
        TokenizerFiles::Json(p) => list.push(p.clone()),
        TokenizerFiles::VocabMerges { vocab, merges } => list.extend([vocab.clone(), merges.clone()]),
    }
    list.extend(files.extra.iter().cloned());
    let mut all = Vec::new();
    for p in list {
        if let Ok(c) = std::fs::canonicalize(&p) {
            all.push(c);
        }
        if let Ok(r) = resolved(&p) {
            all.push(r);
        }
    }
    all
}

/// Refuses a target that is the input model's directory or holds any of its files (also
/// through symlinks or `..`): replacing it would delete the model.
pub fn check_not_model(target: &SaveTarget, files: &ModelFiles) -> Result<()> {
    let dir = std::fs::canonicalize(&target.dir).unwrap_or_else(|_| target.dir.clone());
    for p in model_paths(files) {
        if p.starts_with(&dir) || p.starts_with(&target.dir) {
            bail!(
                "--save {}: holds the input model's {}; replacing it would delete the model: save somewhere else",
                target.given.display(),
                p.display()
            );
        }
    }
    Ok(())
}

/// The umask of this process (from /proc where it says, else read and restored once).
pub fn umask() -> u32 {
    static MASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:").and_then(|v| u32::from_str_radix(v.trim(), 8).ok()))
            .unwrap_or_else(|| {
                // SAFETY: umask only swaps the process's mask; it is put back at once.
                unsafe {
                    let m = libc::umask(0o022);
                    libc::umask(m);
                    m as u32
                }
            })
    })
}

/// Gives everything under `dir` the modes a new file or folder gets here (0666 / 0777 less
/// the umask): writers may create files with private modes (safetensors writes 0600 through
/// a temp file) and copies keep their source's (read-only) mode. Returns the files, relative.
fn ordinary_modes(dir: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    let mask = umask();
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777 & !mask))?;
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o666 & !mask))?;
                if d == dir {
                    files.push(e.file_name().to_string_lossy().to_string());
                }
            }
        }
        if d != dir {
            if let Ok(rel) = d.strip_prefix(dir) {
                files.push(rel.to_string_lossy().to_string());
            }
        }
    }
    files.retain(|f| f != MARKER);
    files.sort();
    Ok(files)
}

/// Swaps the complete temporary export `tmp` into place at `dir`, and removes what was there.
fn replace_dir(tmp: &Path, dir: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return std::fs::rename(tmp, dir);
    }
    match exchange(tmp, dir) {
        Ok(()) => std::fs::remove_dir_all(tmp),
        Err(_) => {
            // No atomic exchange here: old out of the way, new in, old removed.
            let old = parent_dir(dir).join(cleanup::temp_name(&last_component(dir), "old"));
            std::fs::rename(dir, &old)?;
            if let Err(e) = std::fs::rename(tmp, dir) {
                let _ = std::fs::rename(&old, dir);
                return Err(e);
            }
            std::fs::remove_dir_all(&old)
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let b = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths; renameat2 only reads them.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "no atomic exchange"))
}

/// Writes the model as an export at `target` (see the module's text) and reports what is on
/// disk.
pub fn save(model: &OptModel, files: &ModelFiles, target: &SaveTarget, req: &SaveRequest) -> Result<SaveReport> {
    let shown = target.given.display();
    let parent = target.parent();
    std::fs::create_dir_all(parent).with_context(|| format!("--save {shown}: cannot create {}", parent.display()))?;
    let tmp = TempPath::create_dir(parent.join(cleanup::temp_name(&target.name(), "partial")))
        .with_context(|| format!("--save {shown}: cannot create a temporary directory in {}", parent.display()))?;
    // Marked at once, so that a run killed now leaves a directory the next one knows as ours.
    write_marker(tmp.path(), &[])?;
    let (written, names) = write_format(model, files, tmp.path(), req)
        .and_then(|w| ordinary_modes(tmp.path()).map(|names| (w, names)))
        .with_context(|| format!("saving to {shown} failed"))?;
    write_marker(tmp.path(), &names)?;
    // The target may have changed during the run.
    check_existing(target)?;
    tmp.persist(|p| replace_dir(p, &target.dir))
        .with_context(|| format!("--save {shown}: cannot move the export into place"))?;
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

    #[test]
    fn targets_that_would_lose_user_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let user = t.path().join("user");
        std::fs::create_dir(&user).unwrap();
        std::fs::write(user.join("notes.txt"), b"mine").unwrap();
        let e = check_save_target(&user, false).unwrap_err().to_string();
        assert!(e.contains("not an export of this tool"), "{e}");
        assert!(check_save_target(&user, true).is_ok(), "--overwrite allows it");
        // A previous export with a file added by the user.
        let prev = t.path().join("prev");
        std::fs::create_dir(&prev).unwrap();
        write_marker(&prev, &["config.json".to_string()]).unwrap();
        std::fs::write(prev.join("config.json"), b"{}").unwrap();
        assert!(check_save_target(&prev, false).is_ok());
        std::fs::write(prev.join("README.md"), b"mine").unwrap();
        let e = check_save_target(&prev, false).unwrap_err().to_string();
        assert!(e.contains("README.md"), "{e}");
        for (p, why) in [(".", "cannot be replaced"), ("..", "cannot be replaced"), ("/", "cannot be replaced")] {
            let e = check_save_target(Path::new(p), true).unwrap_err().to_string();
            assert!(e.contains(why), "{p}: {e}");
        }
        let file = t.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(check_save_target(&file, true).unwrap_err().to_string().contains("not a directory"));
        assert!(check_save_target(&file.join("sub"), true).unwrap_err().to_string().contains("is not a directory"));
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&prev, &link).unwrap();
        assert!(check_save_target(&link, true).unwrap_err().to_string().contains("symbolic link"));
    }

    #[test]
    fn the_model_directory_and_its_ancestors_are_refused_however_named() {
        let t = tempfile::tempdir().unwrap();
        let model = t.path().join("models/m");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::write(model.join("config.json"), b"{}").unwrap();
        std::fs::write(model.join("model.safetensors"), b"").unwrap();
        let files = ModelFiles {
            source: model.display().to_string(),
            config: model.join("config.json"),
            weights: vec![model.join("model.safetensors")],
            tokenizer: TokenizerFiles::Json(model.join("tokenizer.json")),
            extra: vec![],
        };
        let via_dots = t.path().join("models/m/../m");
        for p in [model.clone(), t.path().join("models"), via_dots] {
            let target = check_save_target(&p, true).unwrap();
            let e = check_not_model(&target, &files).unwrap_err().to_string();
            assert!(e.contains("input model"), "{}: {e}", p.display());
        }
        let link = t.path().join("link");
        std::os::unix::fs::symlink(t.path().join("models"), &link).unwrap();
        let target = check_save_target(&link.join("m"), true).unwrap();
        assert!(check_not_model(&target, &files).is_err(), "through a symlinked folder");
        // A new folder inside the model's directory holds none of its files.
        let inside = check_save_target(&model.join("out"), false).unwrap();
        assert!(check_not_model(&inside, &files).is_ok());
    }
}
