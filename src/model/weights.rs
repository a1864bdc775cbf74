//! Reading checkpoint tensors: safetensors (single or sharded) and PyTorch pickles.
//!
//! Hugging Face `OPTForCausalLM` checkpoints name tensors `model.decoder.…`; the original
//! facebook/opt-* `pytorch_model.bin` files use `decoder.…` with no `model.` prefix. Names
//! are normalised to the prefix-free form so both layouts load the same way.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// All tensors of a checkpoint, keyed by prefix-free name, converted to `dtype` on `device`.
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    /// The dtype the checkpoint stores its weights in (f16 for facebook/opt-*).
    pub source_dtype: DType,
}

/// Strips the `model.` prefix that `OPTForCausalLM` puts before `decoder.`.
pub fn normalise_name(name: &str) -> &str {
    name.strip_prefix("model.").unwrap_or(name)
}

impl Weights {
    pub fn from_map(map: HashMap<String, Tensor>) -> Self {
        let source_dtype = map
            .iter()
            .find(|(k, _)| k.ends_with("embed_tokens.weight"))
            .or_else(|| map.iter().next())
            .map(|(_, v)| v.dtype())
            .unwrap_or(DType::F32);
        let tensors = map.into_iter().map(|(k, v)| (normalise_name(&k).to_string(), v)).collect();
        Weights { tensors, source_dtype }
    }

    /// Loads the weight files of a resolved checkpoint.
    pub fn load(files: &[std::path::PathBuf], dtype: DType, device: &Device) -> Result<Self> {
        Self::load_checkpoint(files, None, dtype, device)
    }

    /// Loads the weight files of a checkpoint, dequantizing its packed linears first when it
    /// is a packed one (`packed`: what its config.json declares).
    pub fn load_checkpoint(
        files: &[std::path::PathBuf],
        packed: Option<&super::packed::PackedFormat>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut all = HashMap::new();
        let mut source_dtype = None;
        let mut maps = Vec::new();
        if let Some(format) = packed {
            // Packed linears can span shards only in principle; read all, then dequantize.
            let mut raw = HashMap::new();
            for file in files {
                raw.extend(load_file(file)?);
            }
            let name = files.first().map(|f| f.display().to_string()).unwrap_or_default();
            super::packed::dequantize(&mut raw, format).with_context(|| name.clone())?;
            maps.push((files.first().cloned().unwrap_or_default(), raw));
        } else {
            for file in files {
                maps.push((file.clone(), load_file(file)?));
            }
        }
        for (file, map) in maps {
            for (k, v) in map {
                if source_dtype.is_none() || k.ends_with("embed_tokens.weight") {
                    source_dtype = Some(v.dtype());
                }
                let converted = v
                    .to_dtype(dtype)
                    .and_then(|v| v.to_device(device))
                    .with_context(|| format!("{}: tensor {k}", file.display()))?;
                check_finite(&file, &k, &v, &converted, dtype)?;
                all.insert(k, converted);
            }
        }
        let mut w = Self::from_map(all);
        w.source_dtype = source_dtype.unwrap_or(DType::F32);
        Ok(w)
    }

    /// Rounds every float tensor through `storage` (kept in its own dtype) and makes `storage`
    /// the checkpoint's dtype: the model then holds exactly what an export in `storage` stores.
    /// A value outside `storage`'s range is an error naming the tensor.
    pub fn store_as(&mut self, storage: DType) -> Result<()> {
        for (name, t) in self.tensors.iter_mut() {
            if !t.dtype().is_float() || t.dtype() == storage {
                continue;
            }
            let rounded = t.to_dtype(storage)?;
            if !crate::numerics::all_finite(&rounded)? {
                bail!(
                    "tensor {name} holds values outside {storage:?}'s range ({} once rounded): it cannot be stored in {storage:?}",
                    crate::numerics::describe_non_finite(&rounded)
                );
            }
            *t = rounded.to_dtype(t.dtype())?;
        }
        self.source_dtype = storage;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<Tensor> {
        self.tensors
            .get(name)
            .cloned()
            .with_context(|| format!("checkpoint has no tensor '{name}' (nor 'model.{name}')"))
    }

    pub fn get_opt(&self, name: &str) -> Option<Tensor> {
        self.tensors.get(name).cloned()
    }

    /// Checks a tensor's shape, so a checkpoint that does not fit its config fails clearly.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get(name)?;
        if t.dims() != shape {
            bail!("tensor '{name}' has shape {:?}, config.json implies {:?}", t.dims(), shape);
        }
        Ok(t)
    }
}

/// A checkpoint tensor must be finite as stored and as converted for the run: one reduction
/// of the converted tensor where it now lives; the stored one is only looked at to say which.
fn check_finite(file: &Path, name: &str, stored: &Tensor, converted: &Tensor, dtype: DType) -> Result<()> {
    if crate::numerics::all_finite(converted)? {
        return Ok(());
    }
    if !crate::numerics::all_finite(stored)? {
        if let Some(hint) = crate::hub::cache_removal_hint(file) {
            bail!(
                "{}: tensor {name} holds non-finite values ({}): the checkpoint is damaged; {hint}",
                file.display(),
                crate::numerics::describe_non_finite(stored)
            );
        }
        bail!(
            "{}: tensor {name} holds non-finite values ({}): the checkpoint is damaged; re-download or re-save it",
            file.display(),
            crate::numerics::describe_non_finite(stored)
        );
    }
    let largest = stored.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Err(crate::advice::advised(
        format!(
            "{}: tensor {name} has values beyond the range of {dtype:?} (largest |x| = {largest:e})",
            file.display()
        ),
        crate::advice::Remedy::F32Compute,
    ))
}

fn load_file(path: &Path) -> Result<HashMap<String, Tensor>> {
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("");
    if name.ends_with(".safetensors") {
        candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
            let e = anyhow::anyhow!("{}: not a readable safetensors file ({e})", path.display());
            match crate::hub::cache_removal_hint(path) {
                Some(hint) => anyhow::anyhow!("{e}; {hint}"),
                None => anyhow::anyhow!("{e}; re-download or re-save the checkpoint"),
            }
        })
    } else if is_pytorch_file(name) {
        // candle's unpickler only rebuilds tensors (no arbitrary code is run); what it would
        // recurse on or allocate from is checked first.
        let unreadable = |e: &dyn std::fmt::Display| {
            let e = anyhow::anyhow!(
                "{}: not a readable PyTorch checkpoint ({})",
                path.display(),
                crate::hub::one_line(&e.to_string())
            );
            crate::hub::with_cache_hint(e, path)
        };
        super::pickle_check::check_archive(path).map_err(|e| unreadable(&format!("{e:#}")))?;
        let read = || -> Result<HashMap<String, Tensor>> {
            let pth = candle_core::pickle::PthTensors::new(path, None)?;
            super::pickle_check::check_tensor_sizes(path, pth.tensor_infos())?;
            let mut out = HashMap::new();
            for name in pth.tensor_infos().keys() {
                if let Some(t) = pth.get(name)? {
                    out.insert(name.clone(), t);
                }
            }
            Ok(out)
        };
        crate::contain::contain("candle's unpickler", read).map_err(|e| unreadable(&format!("{e:#}")))
    } else {
        bail!("{}: unknown weight file type", path.display())
    }
}

/// PyTorch zip checkpoints, by file name.
pub fn is_pytorch_file(name: &str) -> bool {
    name.ends_with(".bin") || name.ends_with(".pt") || name.ends_with(".pth")
}

/// The largest safetensors header read (the format's own readers refuse 100 MB).
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// A safetensors file's structure without reading its data: the header is JSON naming each
/// tensor's dtype, shape and byte range; every range fits its shape (checked products) and
/// the ranges cover the data exactly to the end of the file.
pub fn check_safetensors_structure(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = f.metadata()?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| anyhow::anyhow!("{len} bytes: shorter than a safetensors header"))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_SAFETENSORS_HEADER || n > len - 8 {
        bail!("its header claims {n} bytes, in a file of {len}");
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| anyhow::anyhow!("its header is not a JSON object ({e})"))?;
    let mut ranges = Vec::new();
    for (name, t) in header.iter().filter(|(k, _)| *k != "__metadata__") {
        let bytes_per: u64 = match t.get("dtype").and_then(|d| d.as_str()) {
            Some("F64" | "I64" | "U64") => 8,
            Some("F32" | "I32" | "U32") => 4,
            Some("F16" | "BF16" | "I16" | "U16") => 2,
            Some("I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2") => 1,
            other => bail!("tensor {name}: dtype {other:?} is not one this tool reads"),
        };
        let nums = |key: &str| -> Option<Vec<u64>> { t.get(key)?.as_array()?.iter().map(|v| v.as_u64()).collect() };
        let (Some(shape), Some(offsets)) = (nums("shape"), nums("data_offsets")) else {
            bail!("tensor {name}: no shape or data_offsets")
        };
        let [start, end] = offsets[..] else { bail!("tensor {name}: data_offsets {offsets:?} is not [start, end]") };
        let size = shape.iter().try_fold(bytes_per, |a, &d| a.checked_mul(d));
        if start > end || size != Some(end - start) {
            bail!("tensor {name}: shape {shape:?} of {bytes_per}-byte values does not fit bytes {start}..{end}");
        }
        ranges.push((start, end));
    }
    ranges.sort_unstable();
    let mut at = 0u64;
    for (start, end) in ranges {
        if start != at {
            bail!("its tensors' byte ranges leave a gap or overlap at byte {at}");
        }
        at = end;
    }
    if 8 + n + at != len {
        bail!("the file has {len} bytes, its header describes {}", 8 + n + at);
    }
    Ok(())
}

/// Weight files listed by a sharded checkpoint's `*.index.json`, in a stable order.
pub fn shard_files(index_path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index_path).with_context(|| format!("cannot read {}", index_path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", index_path.display()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{} has no weight_map", index_path.display()))?;
    let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
    files.sort();
    files.dedup();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storing_in_another_dtype_rounds_every_weight_and_refuses_what_it_cannot_hold() {
        let from = |v: Vec<f32>| {
            let n = v.len();
            let t = Tensor::from_vec(v, n, &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
            let mut w = Weights::from_map(HashMap::from([("embed_tokens.weight".to_string(), t)]));
            w.tensors = w.tensors.into_iter().map(|(k, t)| (k, t.to_dtype(DType::F32).unwrap())).collect();
            w
        };
        // bf16 values within f16's normal range are exact in f16; 1e-7 is below its subnormals' step.
        let mut w = from(vec![1.5, -3.0e4, 0.1, 1e-7]);
        w.store_as(DType::F16).unwrap();
        assert_eq!(w.source_dtype, DType::F16);
        let got: Vec<f32> = w.get("embed_tokens.weight").unwrap().to_vec1().unwrap();
        let bf16 = |x: f32| half::bf16::from_f32(x).to_f32();
        assert_eq!(got[..3], [bf16(1.5), bf16(-3.0e4), bf16(0.1)]);
        assert_eq!(got[3], half::f16::from_f32(bf16(1e-7)).to_f32());
        assert_eq!(w.get("embed_tokens.weight").unwrap().dtype(), DType::F32, "kept in the compute dtype");
        // 1e5 overflows f16.
        let e = from(vec![1.0, 1e5]).store_as(DType::F16).unwrap_err().to_string();
        assert!(e.contains("embed_tokens.weight holds values outside F16's range"), "{e}");
    }

    #[test]
    fn safetensors_structure_is_read_from_the_header_alone() {
        let t = tempfile::tempdir().unwrap();
        let good = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/fixtures/opt-rand-postln/model.safetensors"),
        )
        .unwrap();
        let p = t.path().join("m.safetensors");
        std::fs::write(&p, &good).unwrap();
        check_safetensors_structure(&p).unwrap();
        let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let mut longer = good.clone();
        longer.push(0);
        let mut huge_header = good.clone();
        huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let mut bad_shape = good.clone();
        let header = String::from_utf8(good[8..8 + n].to_vec()).unwrap();
        let first_shape = header.find("\"shape\":[").unwrap() + 9;
        bad_shape[8 + first_shape] = b'9'; // another first dimension, the byte range unchanged
        for (what, bytes, needle) in [
            ("truncated", good[..good.len() - 1].to_vec(), "the file has"),
            ("longer", longer, "the file has"),
            ("huge header", huge_header, "its header claims 18446744073709551615 bytes"),
            ("empty", vec![], "shorter than a safetensors header"),
            ("shape", bad_shape, "does not fit bytes"),
        ] {
            std::fs::write(&p, &bytes).unwrap();
            let e = check_safetensors_structure(&p).unwrap_err().to_string();
            assert!(e.contains(needle), "{what}: {e}");
        }
    }

    #[test]
    fn prefix_is_stripped_only_at_the_front() {
        assert_eq!(normalise_name("model.decoder.layers.0.fc1.weight"), "decoder.layers.0.fc1.weight");
        assert_eq!(normalise_name("decoder.embed_tokens.weight"), "decoder.embed_tokens.weight");
        assert_eq!(normalise_name("lm_head.weight"), "lm_head.weight");
    }
}
