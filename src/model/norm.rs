//! A normalisation of the last dimension: OPT's LayerNorm or the rotary families' RMSNorm. What
//! it holds lives here; how it runs (`Norm::forward`) is chosen in `kernels`.

use super::family::{NormKind, LAYER_NORM_EPS};
use super::weights::Weights;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::LayerNorm;

/// A normalisation: OPT's LayerNorm (weight and bias) or RMSNorm (weight, eps).
#[derive(Clone, Debug)]
pub enum Norm {
    Layer(LayerNorm),
    Rms { weight: Tensor, eps: f64 },
}

impl Norm {
    pub fn weight(&self) -> &Tensor {
        match self {
            Norm::Layer(l) => l.weight(),
            Norm::Rms { weight, .. } => weight,
        }
    }

    pub fn bias(&self) -> Option<&Tensor> {
        match self {
            Norm::Layer(l) => l.bias(),
            Norm::Rms { .. } => None,
        }
    }

    pub fn to_device(&self, device: &Device) -> Result<Norm> {
        Ok(match self {
            Norm::Layer(l) => Norm::Layer(layer_norm_to_device(l, device)?),
            Norm::Rms { weight, eps } => Norm::Rms { weight: weight.to_device(device)?, eps: *eps },
        })
    }
}

fn layer_norm_to_device(l: &LayerNorm, device: &Device) -> Result<LayerNorm> {
    let bias = l.bias().ok_or_else(|| anyhow::anyhow!("layer norm without bias"))?;
    Ok(LayerNorm::new(l.weight().to_device(device)?, bias.to_device(device)?, LAYER_NORM_EPS))
}

/// The norm of `kind` at `prefix` (width `dim`).
pub(crate) fn load_norm(
    w: &Weights,
    kind: NormKind,
    prefix: &str,
    dim: usize,
    eps: f64,
    device: &Device,
    dtype: DType,
) -> Result<Norm> {
    Ok(match kind {
        NormKind::LayerNorm => Norm::Layer(load_layer_norm(w, prefix, dim, device, dtype)?),
        NormKind::RmsNorm => Norm::Rms { weight: w.get_shaped(&format!("{prefix}.weight"), &[dim])?, eps },
    })
}

pub(crate) fn load_layer_norm(
    w: &Weights,
    prefix: &str,
    dim: usize,
    device: &Device,
    dtype: DType,
) -> Result<LayerNorm> {
    match w.get_opt(&format!("{prefix}.weight")) {
        Some(weight) => {
            if weight.dims() != [dim] {
                bail!("tensor '{prefix}.weight' has shape {:?}, expected [{dim}]", weight.dims());
            }
            let bias = w.get_shaped(&format!("{prefix}.bias"), &[dim])?;
            Ok(LayerNorm::new(weight, bias, LAYER_NORM_EPS))
        }
        // layer_norm_elementwise_affine = false: a plain normalisation.
        None => {
            Ok(LayerNorm::new(Tensor::ones(dim, dtype, device)?, Tensor::zeros(dim, dtype, device)?, LAYER_NORM_EPS))
        }
    }
}
