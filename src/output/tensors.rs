//! The tensors of a saved checkpoint as raw little-endian bytes, each tagged with what it
//! is for the size report, written as one safetensors file (metadata `{"format": "pt"}`, as
//! torch's `save_file` writes it).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use safetensors::{Dtype, View};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

/// What a tensor is, for the size report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Packed integer codes of quantized linears (`qweight`, `weight_packed`).
    QuantizedWeights,
    /// Their scales, zero points, g_idx and shapes.
    QuantizationMetadata,
    /// Decoder linear weights stored dense (not quantized, or not packable).
    DenseLinearWeights,
    /// Token and position embeddings (the LM head is tied to the token embeddings).
    Embeddings,
    /// Biases, layer norms, project_in / project_out.
    Other,
}

pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
    pub category: Category,
}

impl RawTensor {
    pub fn i32(values: &[i32], shape: Vec<usize>, category: Category) -> Self {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        RawTensor { dtype: Dtype::I32, shape, data: values.iter().flat_map(|v| v.to_le_bytes()).collect(), category }
    }

    pub fn i64(values: &[i64], shape: Vec<usize>, category: Category) -> Self {
        RawTensor { dtype: Dtype::I64, shape, data: values.iter().flat_map(|v| v.to_le_bytes()).collect(), category }
    }

    /// Float values stored in `dtype` (f16, bf16 or f32), rounded to nearest even.
    pub fn float(values: &[f32], shape: Vec<usize>, dtype: DType, category: Category) -> Result<Self> {
        let (st, data): (Dtype, Vec<u8>) = match dtype {
            DType::F16 => (Dtype::F16, values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()),
            DType::BF16 => (Dtype::BF16, values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect()),
            DType::F32 => (Dtype::F32, values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            other => bail!("cannot store floats as {other:?}"),
        };
        Ok(RawTensor { dtype: st, shape, data, category })
    }

    /// A model tensor, converted to `dtype` on the host.
    pub fn from_tensor(t: &Tensor, dtype: DType, category: Category) -> Result<Self> {
        let t = t.to_device(&candle_core::Device::Cpu)?.to_dtype(DType::F32)?;
        let shape = t.dims().to_vec();
        let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
        Self::float(&values, shape, dtype, category)
    }
}

impl View for &RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Tensor bytes per category (data only; the file adds its header).
pub fn bytes_by_category(tensors: &BTreeMap<String, RawTensor>) -> BTreeMap<Category, u64> {
    let mut m = BTreeMap::new();
    for t in tensors.values() {
        *m.entry(t.category).or_insert(0) += t.data.len() as u64;
    }
    m
}

/// Writes `tensors` to `path` as safetensors.
pub fn write(tensors: &BTreeMap<String, RawTensor>, path: &Path) -> Result<()> {
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata), path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // The safetensors crate writes through a private temporary file (mode 0600); a saved
    // model is for other users and engines to read, like every other file of the directory.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}
