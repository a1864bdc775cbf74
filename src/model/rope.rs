//! Rotary position embeddings as transformers computes them: `inv_freq` in f32 for the rope
//! types `default`, `linear` and `llama3`, cos/sin tables of `position · inv_freq` (the two
//! halves repeated, rotate-half layout), and the rotation of q and k.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::sync::{Arc, Mutex};

/// How the rotation frequencies are derived from `rope_theta`.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeKind {
    Default,
    /// Positions divided by `factor` (all frequencies / factor).
    Linear {
        factor: f64,
    },
    /// Llama 3.1's rescaling: low frequencies / factor, high ones kept, a smooth blend between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct RopeScaling {
    pub theta: f64,
    pub kind: RopeKind,
}

fn number(params: &serde_json::Value, key: &str) -> Result<f64> {
    params
        .get(key)
        .and_then(|v| v.as_f64())
        .with_context(|| format!("rope key {key} is missing or not a number (in {params})"))
}

impl RopeScaling {
    /// From either spelling: transformers 5's `rope_parameters` {rope_theta, rope_type, …} or
    /// the hub's `rope_theta` + `rope_scaling` {type|rope_type, …}.
    pub fn from_config(cfg: &serde_json::Value) -> Result<Self> {
        let params = cfg.get("rope_parameters").filter(|v| !v.is_null());
        let scaling = cfg.get("rope_scaling").filter(|v| !v.is_null());
        let theta = params
            .and_then(|p| p.get("rope_theta"))
            .or_else(|| cfg.get("rope_theta"))
            .filter(|v| !v.is_null())
            .map(|v| v.as_f64().with_context(|| format!("config key rope_theta = {v} is not a number")))
            .transpose()?
            .unwrap_or(10000.0);
        if theta <= 0.0 {
            bail!("config key rope_theta = {theta}: must be positive");
        }
        let (key, p) = match (params, scaling) {
            (Some(p), _) => ("rope_parameters", p),
            (None, Some(s)) => ("rope_scaling", s),
            (None, None) => return Ok(RopeScaling { theta, kind: RopeKind::Default }),
        };
        let rope_type = p.get("rope_type").or_else(|| p.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
        let kind = match rope_type {
            "default" => RopeKind::Default,
            "linear" => RopeKind::Linear { factor: number(p, "factor")? },
            "llama3" => RopeKind::Llama3 {
                factor: number(p, "factor")?,
                low_freq_factor: number(p, "low_freq_factor")?,
                high_freq_factor: number(p, "high_freq_factor")?,
                original_max_position_embeddings: number(p, "original_max_position_embeddings")?,
            },
            other => {
                bail!("config key {key}.rope_type = \"{other}\": not implemented (default, linear and llama3 are)")
            }
        };
        match &kind {
            RopeKind::Linear { factor } | RopeKind::Llama3 { factor, .. } if *factor <= 0.0 => {
                bail!("config key {key}.factor = {factor}: must be positive")
            }
            RopeKind::Llama3 { low_freq_factor, high_freq_factor, .. } if high_freq_factor <= low_freq_factor => {
                bail!("config key {key}: high_freq_factor {high_freq_factor} must exceed low_freq_factor {low_freq_factor}")
            }
            _ => {}
        }
        Ok(RopeScaling { theta, kind })
    }

    /// `inv_freq` of a `head_dim`-wide head, in f32 as transformers forms it.
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f32> {
        let base = self.theta as f32;
        let default: Vec<f32> = (0..head_dim).step_by(2).map(|i| 1.0 / base.powf(i as f32 / head_dim as f32)).collect();
        match &self.kind {
            RopeKind::Default => default,
            RopeKind::Linear { factor } => default.iter().map(|f| f / *factor as f32).collect(),
            RopeKind::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let (factor, low, high, old) = (
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                    *original_max_position_embeddings as f32,
                );
                let low_freq_wavelen = old / low;
                let high_freq_wavelen = old / high;
                default
                    .iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        let scaled = if wavelen > low_freq_wavelen { f / factor } else { f };
                        // transformers: ~(wavelen < high) * ~(wavelen > low) (wavelengths are finite).
                        let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                        if medium {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        } else {
                            scaled
                        }
                    })
                    .collect()
            }
        }
    }
}

/// cos and sin of `position · inv_freq` for positions 0..`seq`: (seq, head_dim/2) each,
/// f32, in `dtype` on `device` (transformers forms them in f32 and casts to q's dtype).
#[derive(Clone, Debug)]
pub struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
    /// The tables on every device they were asked for (these among them), shared by all clones:
    /// an offloaded model's layers go to the GPU and back one at a time, the tables once.
    copies: Arc<Mutex<Vec<(Tensor, Tensor)>>>,
}

impl RopeTables {
    pub fn new(rope: &RopeScaling, head_dim: usize, seq: usize, dtype: DType, device: &Device) -> Result<Self> {
        let inv = rope.inv_freq(head_dim);
        let half = inv.len();
        let freqs: Vec<f32> = (0..seq).flat_map(|p| inv.iter().map(move |f| p as f32 * f)).collect();
        let cos: Vec<f32> = freqs.iter().map(|x| x.cos()).collect();
        let sin: Vec<f32> = freqs.iter().map(|x| x.sin()).collect();
        let cos = Tensor::from_vec(cos, (seq, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (seq, half), device)?.to_dtype(dtype)?;
        let copies = Arc::new(Mutex::new(vec![(cos.clone(), sin.clone())]));
        Ok(RopeTables { cos, sin, copies })
    }

    /// The tables on `device`: copied there the first time only (later calls, from any clone,
    /// return the same tensors).
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        if self.cos.device().same_device(device) {
            return Ok(self.clone());
        }
        let mut copies = self.copies.lock().map_err(|_| anyhow::anyhow!("rotary tables: lock poisoned"))?;
        let (cos, sin) = match copies.iter().find(|(c, _)| c.device().same_device(device)) {
            Some((c, s)) => (c.clone(), s.clone()),
            None => {
                let pair = (self.cos.to_device(device)?, self.sin.to_device(device)?);
                copies.push(pair.clone());
                pair
            }
        };
        Ok(RopeTables { cos, sin, copies: self.copies.clone() })
    }

    pub fn seq_len(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Rotates `x` (batch, seq, heads·head_dim) in place of position: x·cos + rotate_half(x)·sin.
    pub fn apply(&self, x: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, s, width) = x.dims3()?;
        if s > self.seq_len() {
            bail!("sequence of {s} tokens is longer than the rotary tables ({})", self.seq_len());
        }
        let (cos, sin) = if s == self.seq_len() {
            (self.cos.clone(), self.sin.clone())
        } else {
            (self.cos.narrow(0, 0, s)?.contiguous()?, self.sin.narrow(0, 0, s)?.contiguous()?)
        };
        let x4 = x.reshape((b, s, heads, width / heads))?.contiguous()?;
        Ok(candle_nn::rotary_emb::rope_thd(&x4, &cos, &sin)?.reshape((b, s, width))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_config_spellings_give_the_same_rope() {
        let v5 = json!({"rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}});
        let hub = json!({"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}});
        let old = json!({"rope_theta": 500000.0, "rope_scaling": {"type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}});
        let a = RopeScaling::from_config(&v5).unwrap();
        assert_eq!(a, RopeScaling::from_config(&hub).unwrap());
        assert_eq!(a, RopeScaling::from_config(&old).unwrap());
        assert_eq!(RopeScaling::from_config(&json!({})).unwrap().theta, 10000.0);
    }

    #[test]
    fn default_and_linear_frequencies() {
        let r = RopeScaling { theta: 10000.0, kind: RopeKind::Default };
        let f = r.inv_freq(8);
        let want = [1.0, 0.1, 0.01, 0.001];
        for (g, w) in f.iter().zip(want) {
            assert!((g - w).abs() <= 1e-6 * w.max(1e-3), "{g} vs {w}");
        }
        let l = RopeScaling { theta: 10000.0, kind: RopeKind::Linear { factor: 4.0 } }.inv_freq(8);
        assert!(l.iter().zip(&f).all(|(a, b)| *a == b / 4.0));
    }

    #[test]
    fn llama3_rescales_low_frequencies_and_keeps_high_ones() {
        // Llama-3.1-8B's settings, head_dim 128, against transformers'
        // _compute_llama3_parameters written out in f64.
        let r = RopeScaling {
            theta: 500000.0,
            kind: RopeKind::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            },
        };
        let f = r.inv_freq(128);
        let d = RopeScaling { theta: 500000.0, kind: RopeKind::Default }.inv_freq(128);
        assert_eq!(f[0], d[0], "high frequency kept");
        assert_eq!(f[63], d[63] / 8.0, "low frequency / factor");
        // The band between: wavelengths between 8192/4 and 8192 blend the two.
        let band: Vec<usize> = (0..64)
            .filter(|&i| {
                let w = 2.0 * std::f32::consts::PI / d[i];
                (2048.0..=8192.0).contains(&w)
            })
            .collect();
        assert!(!band.is_empty());
        for &i in &band {
            assert!(f[i] < d[i] && f[i] > d[i] / 8.0, "{i}: {} in ({}, {})", f[i], d[i] / 8.0, d[i]);
        }
        for (i, &got) in f.iter().enumerate() {
            let inv = 1.0 / 500000f64.powf((2 * i) as f64 / 128.0);
            let wavelen = 2.0 * std::f64::consts::PI / inv;
            let scaled = if wavelen > 8192.0 { inv / 8.0 } else { inv };
            let smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
            let want = if (2048.0..=8192.0).contains(&wavelen) {
                (1.0 - smooth) * scaled / 8.0 + smooth * scaled
            } else {
                scaled
            };
            assert!((got as f64 - want).abs() <= 1e-6 * want, "{i}: {got} vs {want}");
        }
    }

    #[test]
    fn rotation_is_rotate_half() {
        let r = RopeScaling { theta: 10000.0, kind: RopeKind::Default };
        let t = RopeTables::new(&r, 4, 3, DType::F32, &Device::Cpu).unwrap();
        // One head of width 4 at position 2: pairs (x0, x2) and (x1, x3) rotate by 2·inv_freq.
        let x =
            Tensor::from_vec(vec![0f32; 8].into_iter().chain([1.0, 2.0, 3.0, 4.0]).collect(), (1, 3, 4), &Device::Cpu)
                .unwrap();
        let y: Vec<f32> = t.apply(&x, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let inv = r.inv_freq(4);
        let (c0, s0, c1, s1) = ((2.0 * inv[0]).cos(), (2.0 * inv[0]).sin(), (2.0 * inv[1]).cos(), (2.0 * inv[1]).sin());
        let want = [1.0 * c0 - 3.0 * s0, 2.0 * c1 - 4.0 * s1, 3.0 * c0 + 1.0 * s0, 4.0 * c1 + 2.0 * s1];
        for (g, w) in y[8..].iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        assert!(y[..4].iter().zip([0f32; 4]).all(|(a, b)| *a == b));
    }

    #[test]
    fn tables_are_shared_across_devices_and_clones() {
        let r = RopeScaling { theta: 10000.0, kind: RopeKind::Default };
        let t = RopeTables::new(&r, 8, 5, DType::F32, &Device::Cpu).unwrap();
        let again = t.clone().to_device(&Device::Cpu).unwrap();
        assert!(again.cos.id() == t.cos.id() && again.sin.id() == t.sin.id());
        assert_eq!(t.copies.lock().unwrap().len(), 1, "a move to the tables' own device copies nothing");
    }

    #[test]
    fn unknown_rope_types_are_refused() {
        let e = RopeScaling::from_config(&json!({"rope_scaling": {"type": "dynamic", "factor": 2.0}})).unwrap_err();
        assert!(e.to_string().contains("rope_scaling.rope_type = \"dynamic\""), "{e}");
        assert!(RopeScaling::from_config(&json!({"rope_scaling": {"rope_type": "linear"}})).is_err());
    }
}
