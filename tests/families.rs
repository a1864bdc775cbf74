//! The rotary families (Llama with grouped-query attention, Qwen2 with q/k/v bias and a tied
//! head) against transformers' float32 CPU forward (../shared/fixtures/*/reference.json).

mod common;

use candle_core::{Device, Tensor};
use sparsegpt_mi::data::{self, Corpus, SeqLen};

const SEQLEN: usize = SeqLen::PUBLISHED.get();
use sparsegpt_mi::eval;

fn reference(fixture: &str) -> serde_json::Value {
    let p = common::fixture(fixture).join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Window NLLs of the first two WikiText-2 windows within 1e-4 relative, and the logits of
/// the reference's input: first 8 of the first and last row (1e-4 of the row's largest
/// |logit|, f32 against f32: summation order only) and every row's argmax.
fn matches_transformers(fixture: &str) {
    let (model, tok) = common::load(fixture);
    let refj = reference(fixture);
    let ids = data::eval_tokens(Corpus::WikiText2, &common::data_dir(), &tok, SeqLen::PUBLISHED).unwrap();
    let bos = tok.token_to_id("<s>").unwrap();
    assert_eq!(ids[0], bos, "{fixture}: the tokenizer's post-processor puts <s> first");
    assert_ne!(ids[1], bos);
    for (w, want) in floats(&refj["wikitext2_window_mean_nll"]).into_iter().enumerate() {
        let got = eval::window_nll(&model, &ids[w * SEQLEN..(w + 1) * SEQLEN]).unwrap();
        let rel = (got - want).abs() / want.abs();
        assert!(rel <= 1e-4, "{fixture} window {w}: NLL {got} vs transformers {want} (relative {rel:e})");
    }
    let input: Vec<u32> = refj["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let n = input.len();
    let logits = model.forward(&Tensor::from_vec(input, (1, n), &Device::Cpu).unwrap()).unwrap().squeeze(0).unwrap();
    let rows: Vec<Vec<f32>> = logits.to_vec2().unwrap();
    for (row, key) in [(0, "logits_first_row_first8"), (n - 1, "logits_last_row_first8")] {
        let scale = rows[row].iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        for (j, want) in floats(&refj[key]).into_iter().enumerate() {
            let got = rows[row][j] as f64;
            assert!((got - want).abs() <= 1e-4 * scale, "{fixture} {key}[{j}]: {got} vs {want} (row max {scale})");
        }
    }
    let argmax: Vec<u64> =
        rows.iter().map(|r| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u64).collect();
    let want: Vec<u64> = refj["argmax"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(argmax, want, "{fixture}: argmax of every row");
}

#[test]
fn llama_with_grouped_query_attention_matches_transformers() {
    matches_transformers("llama-rand-gqa");
}

#[test]
fn qwen2_with_qkv_bias_and_tied_head_matches_transformers() {
    matches_transformers("qwen2-rand");
}

/// The generic (candle) attention path, which the GPU takes for these families, gives the
/// fused host path's NLL: grouped queries without repeated K/V, rotary and RMSNorm in candle ops.
#[test]
fn generic_path_equals_fused_host_path_for_llama() {
    let (model, tok) = common::load("llama-rand-gqa");
    let ids = data::eval_tokens(Corpus::WikiText2, &common::data_dir(), &tok, SeqLen::PUBLISHED).unwrap();
    let window = &ids[..SEQLEN];
    let fused = eval::window_nll(&model, window).unwrap();
    let generic = sparsegpt_mi::model::cpu_kernels::with_generic_path(|| eval::window_nll(&model, window).unwrap());
    assert!((fused - generic).abs() <= 1e-5 * fused, "fused {fused} vs generic {generic}");
}

/// A compressed model of each rotary family saved densely (`--save`, the checkpoint's bf16)
/// under transformers' names reads back with the same NLL as the run evaluated, tied heads
/// staying tied.
#[test]
fn dense_exports_read_back_the_evaluated_model() {
    for (fixture, tied) in [("llama-rand-gqa", false), ("qwen2-rand", true)] {
        let t = tempfile::tempdir().unwrap();
        let (json, saved, eval_json) = (t.path().join("r.json"), t.path().join("saved"), t.path().join("e.json"));
        let data = common::data_dir();
        let common_args = ["--max-windows", "1", "--data-dir", data.to_str().unwrap()];
        let out = std::process::Command::new(common::bin())
            .args(["prune", common::fixture(fixture).to_str().unwrap(), "c4", "--sparsity", "0.5", "--wbits", "4"])
            .args(["--nsamples", "2", "--eval-datasets", "wikitext2", "--save", saved.to_str().unwrap()])
            .args(["--json", json.to_str().unwrap()])
            .args(common_args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{fixture}: {}", String::from_utf8_lossy(&out.stderr));
        let out = std::process::Command::new(common::bin())
            .args(["eval", saved.to_str().unwrap(), "--datasets", "wikitext2", "--json", eval_json.to_str().unwrap()])
            .args(common_args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{fixture}: {}", String::from_utf8_lossy(&out.stderr));
        let read = |p: &std::path::Path| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        let pruned = read(&json)["eval"][0]["window_mean_nll"][0].as_f64().unwrap();
        let reloaded = read(&eval_json)["results"][0]["window_mean_nll"][0].as_f64().unwrap();
        assert_eq!(pruned, reloaded, "{fixture}: the saved model is the evaluated one");
        let tensors = candle_core::safetensors::load(saved.join("model.safetensors"), &Device::Cpu).unwrap();
        let q = &tensors["model.layers.0.self_attn.q_proj.weight"];
        assert_eq!(q.dtype(), candle_core::DType::BF16);
        assert!(tensors.contains_key("model.layers.1.mlp.gate_proj.weight"));
        assert!(tensors.contains_key("model.norm.weight"));
        assert_eq!(tensors.contains_key("lm_head.weight"), !tied, "{fixture}: head tied as in the source");
        assert_eq!(tensors.keys().filter(|k| k.contains("q_proj.bias")).count() > 0, fixture == "qwen2-rand");
    }
}

/// `--offload` for the rotary families: layers kept at `layer_home` and moved to the compute
/// device per use, the rotary tables shared by every layer (on a CPU-only machine both are the
/// host, which still runs the offload code path): the same window NLLs as a resident model,
/// through evaluation and through a compression run of the CLI.
#[test]
fn offloaded_rotary_models_give_the_same_losses() {
    for fixture in ["llama-rand-gqa", "qwen2-rand"] {
        let files = sparsegpt_mi::model::files::resolve_model(
            common::fixture(fixture).to_str().unwrap(),
            sparsegpt_mi::protocol::SeqLen::PUBLISHED,
        )
        .unwrap();
        let f32 = candle_core::DType::F32;
        let plain = sparsegpt_mi::model::load_model(&files, &Device::Cpu, f32).unwrap();
        let off = sparsegpt_mi::model::load_model_offloaded(&files, &Device::Cpu, f32).unwrap();
        assert!(off.layer_home.is_cpu());
        let ids: Vec<u32> = (0..96u32).map(|i| (i * 7907 + 3) % 32000).collect();
        let windows: Vec<&[u32]> = ids.chunks(48).collect();
        let a = eval::windows_nll_layerwise(&plain, &windows, 1).unwrap();
        let b = eval::windows_nll_layerwise(&off, &windows, 1).unwrap();
        assert!(a.iter().all(|v| v.is_finite() && *v > 5.0), "{fixture}: {a:?}");
        assert_eq!(a, b, "{fixture}: offloaded vs resident");
    }
    let t = tempfile::tempdir().unwrap();
    let data = common::data_dir();
    let run = |offload: bool| -> f64 {
        let json = t.path().join(format!("r{offload}.json"));
        let mut cmd = std::process::Command::new(common::bin());
        cmd.args(["prune", common::fixture("llama-rand-gqa").to_str().unwrap(), "c4", "--sparsity", "0.5"])
            .args(["--nsamples", "2", "--eval-datasets", "wikitext2", "--max-windows", "1"])
            .args(["--data-dir", data.to_str().unwrap(), "--json", json.to_str().unwrap()]);
        if offload {
            cmd.arg("--offload");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "offload={offload}: {}", String::from_utf8_lossy(&out.stderr));
        let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        j["eval"][0]["window_mean_nll"][0].as_f64().unwrap()
    };
    assert_eq!(run(false), run(true), "llama-rand-gqa pruned with and without --offload");
}
