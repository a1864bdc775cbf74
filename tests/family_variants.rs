//! Every rotary family variant the tool reads, against transformers' float32 CPU forward on
//! tiny random checkpoints (tests/data/families, made by checks/make_family_fixtures.py):
//! Llama 3.1's rope scaling with grouped-query heads, linear rope scaling with one K/V head and a
//! tied head, Mistral with an explicit head_dim, Qwen2 with q/k/v bias (the hub's older keys),
//! Qwen3 with per-head q/k norms (transformers 5's keys). Norm weights are drawn away from 1.

use candle_core::{DType, Device, Tensor, D};
use sparsegpt_mi::model::weights::Weights;
use sparsegpt_mi::model::{read_config, CausalLm};
use std::path::PathBuf;

const VARIANTS: [&str; 5] =
    ["llama3_rope_gqa", "llama_linear_mqa_tied", "mistral_head_dim", "qwen2_bias_tied", "qwen3_qk_norm"];

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// The first and last rows' logits within 1e-4 of the row's largest |logit| (f32 against f32:
/// summation order only), every row's argmax, and the mean next-token NLL within 1e-5 relative.
#[test]
fn every_family_variant_matches_transformers() {
    for name in VARIANTS {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/families").join(name);
        let refj: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
        let config = read_config(&dir.join("config.json")).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let weights =
            Weights::load_checkpoint(&[dir.join("model.safetensors")], None, DType::F32, &Device::Cpu).unwrap();
        let model =
            CausalLm::load(config, &weights, &Device::Cpu, DType::F32).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let ids: Vec<u32> = refj["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let n = ids.len();
        let logits =
            model.forward(&Tensor::from_vec(ids.clone(), (1, n), &Device::Cpu).unwrap()).unwrap().squeeze(0).unwrap();
        let rows: Vec<Vec<f32>> = logits.to_vec2().unwrap();
        let mut worst: f64 = 0.0;
        for (row, key) in [(0, "logits_first_row"), (n - 1, "logits_last_row")] {
            let want = floats(&refj[key]);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (j, w) in want.iter().enumerate() {
                let d = (rows[row][j] as f64 - w).abs() / scale;
                worst = worst.max(d);
                assert!(d <= 1e-4, "{name} {key}[{j}]: {} vs {w} (row max {scale})", rows[row][j]);
            }
        }
        let argmax: Vec<u64> =
            rows.iter().map(|r| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u64).collect();
        let want: Vec<u64> = refj["argmax"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(argmax, want, "{name}: argmax of every row");
        let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F64).unwrap(), D::Minus1).unwrap();
        let lp: Vec<Vec<f64>> = logp.to_vec2().unwrap();
        let nll = -(0..n - 1).map(|i| lp[i][ids[i + 1] as usize]).sum::<f64>() / (n - 1) as f64;
        let want_nll = refj["mean_nll"].as_f64().unwrap();
        assert!((nll - want_nll).abs() <= 1e-5 * want_nll, "{name}: mean NLL {nll} vs transformers {want_nll}");
        eprintln!("{name}: logits within {worst:.1e} of the row max, mean NLL {nll:.6} vs {want_nll:.6}");
    }
}
