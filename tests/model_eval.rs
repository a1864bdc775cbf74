//! The OPT forward pass and perplexity protocol against Hugging Face and the published code.

mod common;

use candle_core::{Device, Tensor};
use sparsegpt_mi::data::{self, Corpus, SeqLen};

const SEQLEN: usize = SeqLen::PUBLISHED.get();
use sparsegpt_mi::eval;

#[test]
fn post_ln_model_with_projections_matches_hugging_face_logits() {
    let (model, _) = common::load("opt-rand-postln");
    assert!(!model.config.do_layer_norm_before && model.project_in.is_some());
    let refj: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("opt-rand-postln").join("reference_logits.json")).unwrap(),
    )
    .unwrap();
    let ids: Vec<u32> = refj["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let n = ids.len();
    let logits =
        model.forward(&Tensor::from_vec(ids.clone(), (1, n), &Device::Cpu).unwrap()).unwrap().squeeze(0).unwrap();
    let rows: Vec<Vec<f32>> = logits.to_vec2().unwrap();
    // Tolerance 2e-2 absolute: HF ran in fp16 on a GPU, this runs in f32.
    for (row, key) in [(0, "logits_first_row_first8"), (n - 1, "logits_last_row_first8")] {
        for (j, v) in refj[key].as_array().unwrap().iter().enumerate() {
            let want = v.as_f64().unwrap() as f32;
            assert!((rows[row][j] - want).abs() <= 2e-2, "{key}[{j}]: {} vs {want}", rows[row][j]);
        }
    }
    let argmax: Vec<u64> =
        rows.iter().map(|r| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u64).collect();
    let want: Vec<u64> = refj["argmax"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(argmax, want);
    let x = model.embed(&Tensor::from_vec(ids.clone(), (1, n), &Device::Cpu).unwrap()).unwrap();
    let mask = model.causal_mask(n).unwrap();
    let mut h = x;
    for l in &model.layers {
        h = l.forward(&h, &mask, None).unwrap();
    }
    let (sum, count) = model.sequence_nll(&h, &ids).unwrap();
    let nll = sum / count as f64;
    let want = refj["mean_nll"].as_f64().unwrap();
    assert!((nll - want).abs() <= 1e-3, "mean NLL {nll} vs {want}");
}

/// Per-window mean NLL of the dense model against the published code's, on the first
/// windows of each corpus (f32 here vs fp16 there: tolerance 2e-3 nats).
fn dense_windows_match(fixture: &str, windows: usize) {
    let (model, tok) = common::load(fixture);
    let refj = common::reference(fixture, "dense");
    for corpus in Corpus::ALL {
        let ids = data::eval_tokens(corpus, &common::data_dir(), &tok, SeqLen::PUBLISHED).unwrap();
        let want = refj["window_mean_nll"][corpus.name()].as_array().unwrap();
        assert_eq!(ids.len() / SEQLEN, want.len(), "{fixture} {}: window count", corpus.name());
        for w in 0..windows {
            let got = eval::window_nll(&model, &ids[w * SEQLEN..(w + 1) * SEQLEN]).unwrap();
            let expect = want[w].as_f64().unwrap();
            assert!((got - expect).abs() <= 2e-3, "{fixture} {} window {w}: {got} vs {expect}", corpus.name());
        }
    }
}

#[test]
fn dense_window_nll_matches_reference_model_a() {
    dense_windows_match("opt-mini-a", 2);
}

#[test]
fn dense_window_nll_matches_reference_model_b() {
    dense_windows_match("opt-mini-b", 2);
}

/// `eval FIXTURE --dtype f16` on the first WikiText-2 window: the result JSON, its window NLL
/// and the published code's (fp16) one.
fn f16_first_window_nll(fixture: &str) -> (serde_json::Value, f64, f64) {
    let t = tempfile::tempdir().unwrap();
    let json = t.path().join("eval.json");
    let out = std::process::Command::new(common::bin())
        .args(["eval", common::fixture(fixture).to_str().unwrap(), "--datasets", "wikitext2", "--max-windows", "1"])
        .args(["--dtype", "f16", "--json", json.to_str().unwrap(), "--data-dir", common::data_dir().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let got = e["results"][0]["window_mean_nll"][0].as_f64().unwrap();
    let want = common::reference(fixture, "dense")["window_mean_nll"]["wikitext2"][0].as_f64().unwrap();
    (e, got, want)
}

#[test]
fn f16_on_the_cpu_matches_the_reference_as_f32_does() {
    // `--dtype f16` on the CPU: the published code's precision (it ran in fp16 on a GPU). Measured
    // 2.6e-5 nats from it (f32: 5.4e-5); tolerance 5e-4.
    let (e, got, want) = f16_first_window_nll("opt-mini-b");
    assert_eq!(e["dtype"], "f16");
    assert!((got - want).abs() <= 5e-4, "{got} vs {want}");
}

#[test]
fn corpora_have_the_published_sizes() {
    let tok = sparsegpt_mi::model::tokenizer::load(&sparsegpt_mi::model::files::TokenizerFiles::Json(
        common::data_dir().join("opt-tokenizer/tokenizer.json"),
    ))
    .unwrap();
    let wiki = data::eval_text(Corpus::WikiText2, &common::data_dir()).unwrap();
    assert_eq!(wiki.chars().count(), 1294336, "\"\\n\\n\".join(rows) length per SOURCES.md");
    let ids = data::eval_tokens(Corpus::WikiText2, &common::data_dir(), &tok, SeqLen::PUBLISHED).unwrap();
    assert_eq!(ids.len(), 287645);
    assert_eq!(ids[0], 2, "one BOS at the start");
    assert_eq!(ids.iter().filter(|&&t| t == 2).count(), 1, "and only there");
    let c4 = data::eval_tokens(Corpus::C4, &common::data_dir(), &tok, SeqLen::PUBLISHED).unwrap();
    assert_eq!(c4.len() / SEQLEN, 254);
}

#[test]
fn tokenizer_from_vocab_and_merges_equals_tokenizer_json_on_all_corpora() {
    let dir = common::data_dir().join("opt-tokenizer");
    let json = sparsegpt_mi::model::tokenizer::load(&sparsegpt_mi::model::files::TokenizerFiles::Json(
        dir.join("tokenizer.json"),
    ))
    .unwrap();
    let built =
        sparsegpt_mi::model::tokenizer::from_vocab_merges(&dir.join("vocab.json"), &dir.join("merges.txt")).unwrap();
    for corpus in Corpus::ALL {
        let a = data::eval_tokens(corpus, &common::data_dir(), &json, SeqLen::PUBLISHED).unwrap();
        let b = data::eval_tokens(corpus, &common::data_dir(), &built, SeqLen::PUBLISHED).unwrap();
        assert_eq!(a.len(), b.len(), "{}", corpus.name());
        assert!(a == b, "{}: ids differ", corpus.name());
    }
    assert_eq!(
        sparsegpt_mi::model::tokenizer::encode(&built, "Hello, my dog is cute").unwrap(),
        vec![2, 31414, 6, 127, 2335, 16, 11962]
    );
}

#[test]
fn batched_device_style_nll_equals_per_window_nll() {
    // The GPU evaluation path (all windows' losses in one pass) against the per-window one,
    // run here on the CPU: same sums up to f32 rounding; post-LN with projections included.
    for fixture in ["opt-mini-a", "opt-rand-postln"] {
        let (model, _) = common::load(fixture);
        let s = 96;
        let ids: Vec<u32> = (0..2 * s as u32).map(|i| (i * 7919 + 13) % 50000).collect();
        let input = Tensor::from_vec(ids.clone(), (2, s), &Device::Cpu).unwrap();
        let mut h = model.embed(&input).unwrap();
        let mask = model.causal_mask(s).unwrap();
        for layer in &model.layers {
            h = layer.forward(&h, &mask, None).unwrap();
        }
        let batched = model.batch_nll_sums(&h, &ids, s).unwrap();
        for b in 0..2 {
            let (sum, n) = model.sequence_nll(&h.narrow(0, b, 1).unwrap(), &ids[b * s..(b + 1) * s]).unwrap();
            assert_eq!(n, s - 1);
            assert!((batched[b] - sum).abs() < 1e-4 * sum.abs(), "{fixture} window {b}: {} vs {sum}", batched[b]);
        }
    }
}

#[test]
fn generic_attention_path_equals_fused_cpu_kernels() {
    // The GPU's generic path (candle ops, scores a few windows at a time), run on the CPU,
    // against the fused f32 host kernels. Three windows span two attention chunks.
    let (model, _) = common::load("opt-mini-a");
    let s = 80;
    let ids: Vec<u32> = (0..3 * s as u32).map(|i| (i * 104729 + 7) % 50000).collect();
    let input = Tensor::from_vec(ids, (3, s), &Device::Cpu).unwrap();
    let logits = |t: Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let fused = logits(model.forward(&input).unwrap());
    let generic = logits(sparsegpt_mi::model::cpu_kernels::with_generic_path(|| model.forward(&input).unwrap()));
    let max_diff = fused.iter().zip(&generic).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(max_diff < 1e-3, "max |logit fused − generic| = {max_diff}");
    assert!(max_diff > 0.0, "the two paths should differ in rounding (is the generic path running?)");
}

#[test]
fn offloaded_model_gives_the_same_losses() {
    // `--offload` keeps layers at `layer_home` and moves each to the compute device per use;
    // on a CPU-only machine both are the host, which still runs the offload code path.
    let files =
        sparsegpt_mi::model::files::resolve_model(common::fixture("opt-mini-a").to_str().unwrap(), SeqLen::PUBLISHED)
            .unwrap();
    let plain = sparsegpt_mi::model::load_model(&files, &Device::Cpu, candle_core::DType::F32).unwrap();
    let off = sparsegpt_mi::model::load_model_offloaded(&files, &Device::Cpu, candle_core::DType::F32).unwrap();
    assert!(off.layer_home.is_cpu());
    let ids: Vec<u32> = (0..128u32).map(|i| (i * 7907 + 3) % 50000).collect();
    let a = eval::window_nll(&plain, &ids).unwrap();
    let b = eval::window_nll(&off, &ids).unwrap();
    assert_eq!(a, b);
}

#[test]
fn layerwise_evaluation_gives_each_window_its_own_nll() {
    // The offloaded schedule (every layer once over all passes) against one window per
    // pass through the whole model: the same NLL for every window, whatever the pass size.
    let (model, _) = common::load("opt-mini-b");
    let s = 64;
    let ids: Vec<u32> = (0..5 * s as u32).map(|i| (i * 7919 + 11) % 50000).collect();
    let windows: Vec<&[u32]> = ids.chunks(s).collect();
    let single: Vec<f64> = windows.iter().map(|w| eval::window_nll(&model, w).unwrap()).collect();
    assert!(single.iter().all(|v| v.is_finite() && *v > 0.0), "{single:?}");
    for per_pass in [1, 2, 5] {
        let layerwise = eval::windows_nll_layerwise(&model, &windows, per_pass).unwrap();
        assert_eq!(layerwise, single, "{per_pass} windows per pass");
    }
}

#[test]
fn f16_evaluation_survives_attention_logits_past_the_f16_range() {
    // opt-mini-c (trained in bf16) has heads whose q·k/√d reaches ~9.4e5 on WikiText-2, past
    // f16's 65504: scores formed in f16 overflow to inf and the PPL is NaN. Formed in f32 (as
    // torch's attention keeps them), the window NLL is finite and near the published code's
    // fp16 one; this model's f16 and f32 passes differ by up to ~2e-2 nats per window
    // (../shared/fixtures/README.md, "Numerics"), measured 5e-3 here. Tolerance 3e-2.
    let (_, got, want) = f16_first_window_nll("opt-mini-c");
    assert!(got.is_finite() && (got - want).abs() <= 3e-2, "{got} vs {want}");
}

#[test]
fn a_new_weight_is_written_into_the_layers_own_buffer() {
    use sparsegpt_mi::model::LinearKind;
    let (mut model, _) = common::load("opt-mini-b");
    // A handle copy on the same device shares the layer's tensors (the pipeline's working copy).
    let shared = model.layers[0].to_device(&Device::Cpu).unwrap();
    let bias_before: Vec<f32> = shared.linear(LinearKind::Fc1).bias().unwrap().to_vec1().unwrap();
    let (rows, cols) = shared.linear(LinearKind::Fc1).weight().dims2().unwrap();
    let values: Vec<f32> = (0..rows * cols).map(|i| (i % 7) as f32 - 3.0).collect();
    model.layers[0]
        .set_weight(LinearKind::Fc1, Tensor::from_vec(values.clone(), (rows, cols), &Device::Cpu).unwrap())
        .unwrap();
    for layer in [&model.layers[0], &shared] {
        let got: Vec<f32> = layer.linear(LinearKind::Fc1).weight().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got, values, "both handles read the new values from one buffer");
        let bias: Vec<f32> = layer.linear(LinearKind::Fc1).bias().unwrap().to_vec1().unwrap();
        assert_eq!(bias, bias_before, "the bias is kept");
    }
    let wrong = Tensor::zeros((rows, cols + 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(model.layers[0].set_weight(LinearKind::Fc1, wrong).is_err(), "a weight of another shape is refused");
}
