//! One-shot compression end to end through the CLI, on the trained fixtures.
//!
//! Values marked "recorded" were produced by this tool with the command shown (mini-b, 4
//! calibration windows, first WikiText-2 window) and guard against regressions; the
//! `published_` tests compare with the published SparseGPT code's own numbers.
//!
//! With 4 windows, near-tied mask and rounding decisions flip under any change of f32
//! summation order, and the host's linear algebra picks its kernels by CPU (faer's AVX-512
//! or AVX2 paths, the gemm crate's cache-sized blocking), so the recorded NLLs differ between
//! machines. Measured: an AVX2 and an AVX-512 machine, each with the running-average and the
//! summed Hessian (four rounding variants of one run), spread these NLLs by up to 9.2e-3
//! (50% + 4-bit), 1.6e-2 (3-bit g64) and 5.5e-3 (2:4) nats. Each check below is centred on
//! the middle of the measured values with a tolerance of about twice that spread: it catches
//! a broken solver (a wrong mask or grid moves these by tenths of a nat), not rounding.
//! Dense NLLs stay within 1e-4 of the reference on every machine.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

fn prune(args: &[&str], dir: &std::path::Path) -> serde_json::Value {
    let json = dir.join("result.json");
    let model = common::fixture("opt-mini-b");
    let data = common::data_dir();
    let mut a = vec![
        "prune",
        model.to_str().unwrap(),
        "c4",
        "--json",
        json.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    a.extend_from_slice(args);
    let out = Command::new(common::bin()).args(&a).output().unwrap();
    assert!(out.status.success(), "{a:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn nll(r: &serde_json::Value, dataset: &str) -> Vec<f64> {
    let e = r["eval"].as_array().unwrap().iter().find(|e| e["dataset"] == dataset).unwrap();
    e["window_mean_nll"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

fn linear_weights(dir: &std::path::Path) -> Vec<(String, Vec<Vec<f32>>)> {
    let t = candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let mut out: Vec<(String, Vec<Vec<f32>>)> = t
        .into_iter()
        .filter(|(k, v)| k.contains(".layers.") && k.ends_with(".weight") && v.dims().len() == 2)
        .map(|(k, v)| (k, v.to_dtype(candle_core::DType::F32).unwrap().to_vec2().unwrap()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(out.len(), 6 * 6, "six linears in each of six layers");
    out
}

const FAST: [&str; 6] = ["--nsamples", "4", "--eval-datasets", "wikitext2", "--max-windows", "1"];

/// A fast run (4 calibration windows, one WikiText-2 window) that also saves the model;
/// returns the result and the saved directory.
fn prune_fast_and_save(flags: &[&str], dir: &std::path::Path) -> (serde_json::Value, std::path::PathBuf) {
    let saved = dir.join("saved");
    let mut args = flags.to_vec();
    args.extend_from_slice(&["--save", saved.to_str().unwrap()]);
    args.extend_from_slice(&FAST);
    (prune(&args, dir), saved)
}

#[test]
fn published_sparsegpt_50_percent_with_16_samples() {
    // The reference run sgpt50n16: same windows (Python sampler, seed 0), same protocol.
    let t = tempfile::tempdir().unwrap();
    // 8 windows per corpus: with 2 the PPL ratio moved by ±0.1% with f32 summation order alone.
    let r = prune(
        &["--sparsity", "0.5", "--nsamples", "16", "--eval-datasets", "wikitext2,ptb,c4", "--max-windows", "8"],
        t.path(),
    );
    let refj = common::reference("opt-mini-b", "sgpt50n16");
    for ds in ["wikitext2", "ptb", "c4"] {
        let want = refj["window_mean_nll"][ds].as_array().unwrap();
        let got = nll(&r, ds);
        let mut diff_sum = 0.0;
        for (w, g) in got.iter().enumerate() {
            let expect = want[w].as_f64().unwrap();
            // fp16 GPU (reference) vs f32 CPU (here) flips a few near-tied mask decisions.
            assert!((g - expect).abs() <= 4e-3, "{ds} window {w}: {g} vs {expect}");
            diff_sum += g - expect;
        }
        // The criterion on these windows: PPL within 0.2% (Python sampler).
        let ppl_ratio = (diff_sum / got.len() as f64).exp();
        assert!((ppl_ratio - 1.0).abs() <= 0.002, "{ds}: PPL ratio {ppl_ratio}");
    }
    let z = r["zero_fraction"].as_f64().unwrap();
    assert!((z - refj["zero_fraction"].as_f64().unwrap()).abs() < 1e-3, "zero fraction {z}");
    // The windows drawn are the reference's (calibration_windows.json, seed 0).
    let cw: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::shared().join("reference/calibration_windows.json")).unwrap(),
    )
    .unwrap();
    let want = &cw["draws"]["seed0_n128"].as_array().unwrap()[..16];
    for (got, w) in r["calibration_windows"].as_array().unwrap().iter().zip(want) {
        assert_eq!([&got["doc"], &got["start"], &got["draws"]], [&w[0], &w[1], &w[2]]);
    }
}

#[test]
fn published_magnitude_pruning() {
    let t = tempfile::tempdir().unwrap();
    let r = prune(&["--sparsity", "0.5", "--gmp", "--eval-datasets", "wikitext2,ptb", "--max-windows", "2"], t.path());
    let refj = common::reference("opt-mini-b", "gmp50");
    for ds in ["wikitext2", "ptb"] {
        for (w, got) in nll(&r, ds).iter().enumerate() {
            let expect = refj["window_mean_nll"][ds][w].as_f64().unwrap();
            assert!((got - expect).abs() <= 2e-3, "{ds} window {w}: {got} vs {expect}");
        }
    }
    assert!((r["zero_fraction"].as_f64().unwrap() - 0.5001).abs() < 2e-4);
}

#[test]
fn sparse_4bit_model_saves_reloads_identically_and_has_16_levels_per_row() {
    // recorded: sparsegpt-mi prune opt-mini-b c4 --sparsity 0.5 --wbits 4 --no-true-sequential --nsamples 4
    //           --eval-datasets wikitext2 --max-windows 1  → window NLL 6.408816 (AVX2),
    //           6.410935 (AVX-512); --hessian-accumulation sum: 6.406453 / 6.415612; zeros 0.504102.
    //           With grids on f16 scales and gemm's AVX-512 kernels: 6.415339 (sum 6.418983).
    let t = tempfile::tempdir().unwrap();
    let (r, saved) = prune_fast_and_save(&["--sparsity", "0.5", "--wbits", "4", "--no-true-sequential"], t.path());
    let got = nll(&r, "wikitext2")[0];
    assert!((got - 6.411).abs() < 1e-2, "{got}");
    assert!((r["zero_fraction"].as_f64().unwrap() - 0.504102).abs() < 1e-3);
    assert_eq!(r["bits"]["avg_bits"].as_f64().unwrap(), 4.0);
    for (name, w) in linear_weights(&saved) {
        for (i, row) in w.iter().enumerate() {
            let levels: BTreeSet<u32> = row.iter().map(|x| x.to_bits()).collect();
            assert!(levels.len() <= 16, "{name} row {i}: {} values", levels.len());
        }
    }
    // Reload in this tool: the same perplexity.
    let json = t.path().join("eval.json");
    let out = Command::new(common::bin())
        .args([
            "eval",
            saved.to_str().unwrap(),
            "--datasets",
            "wikitext2",
            "--max-windows",
            "1",
            "--json",
            json.to_str().unwrap(),
        ])
        .args(["--data-dir", common::data_dir().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let reloaded = e["results"][0]["window_mean_nll"][0].as_f64().unwrap();
    assert!((reloaded - got).abs() < 1e-9, "reloaded {reloaded} vs {got}");
}

#[test]
fn grouped_3bit_gptq_has_8_levels_per_group() {
    // recorded: --wbits 3 --groupsize 64 --no-true-sequential --nsamples 4 … → window NLL 6.345831 (AVX2),
    // 6.329720 (AVX-512); --hessian-accumulation sum: 6.340476 / 6.337291. With grids on f16
    // scales and gemm's AVX-512 kernels: 6.338658 (sum 6.335502).
    let t = tempfile::tempdir().unwrap();
    let (r, saved) = prune_fast_and_save(&["--wbits", "3", "--groupsize", "64", "--no-true-sequential"], t.path());
    let got = nll(&r, "wikitext2")[0];
    assert!((got - 6.338).abs() < 2e-2, "{got}");
    for (name, w) in linear_weights(&saved) {
        for row in &w {
            for g in row.chunks(64) {
                let levels: BTreeSet<u32> = g.iter().map(|x| x.to_bits()).collect();
                assert!(levels.len() <= 8, "{name}: {} values in a group", levels.len());
            }
        }
    }
}

#[test]
fn two_four_sparsity_holds_in_every_group_of_four() {
    // recorded: --prunen 2 --prunem 4 --nsamples 4 … → window NLL 6.473201 (AVX2),
    // 6.470821 (AVX-512); --hessian-accumulation sum: 6.467723 (AVX-512). With gemm's AVX-512
    // kernels: 6.474391 (sum 6.473201).
    let t = tempfile::tempdir().unwrap();
    let (r, saved) = prune_fast_and_save(&["--prunen", "2", "--prunem", "4"], t.path());
    let got = nll(&r, "wikitext2")[0];
    assert!((got - 6.4705).abs() < 1e-2, "{got}");
    assert_eq!(r["zero_fraction"].as_f64().unwrap(), 0.5);
    for (name, w) in linear_weights(&saved) {
        for row in &w {
            for g in row.chunks(4) {
                assert!(g.iter().filter(|&&x| x == 0.0).count() >= 2, "{name}: {g:?}");
            }
        }
    }
}

#[test]
fn uniform_quantization_is_true_sequential_by_default() {
    // Study 2's rule made true-sequential the default for uniform quantization; pruning alone
    // and the mixed modes keep the published single pass. The result JSON records which ran.
    let run = |flags: &[&str], name: &str| {
        let t = tempfile::tempdir().unwrap();
        let mut args = flags.to_vec();
        args.extend_from_slice(&FAST);
        let r = prune(&args, t.path());
        let nll = nll(&r, "wikitext2")[0];
        eprintln!("{name}: {nll}");
        (r["args"]["true_sequential"].as_bool(), nll)
    };
    let default = run(&["--wbits", "3", "--groupsize", "64"], "default");
    let asked = run(&["--wbits", "3", "--groupsize", "64", "--true-sequential"], "asked");
    let published = run(&["--wbits", "3", "--groupsize", "64", "--no-true-sequential"], "published");
    assert_eq!(default, asked);
    assert_eq!((default.0, published.0), (Some(true), None));
    // Separate passes change every later site's Hessian: a different model.
    assert_ne!(default.1, published.1);
    let last_wins = run(&["--wbits", "3", "--groupsize", "64", "--true-sequential", "--no-true-sequential"], "last");
    assert_eq!(last_wins, published);
    assert_eq!(run(&["--sparsity", "0.5"], "pruning").0, None);
    // The magnitude baseline makes no calibration pass, whatever --wbits says.
    assert_eq!(run(&["--gmp", "--sparsity", "0.5", "--wbits", "4"], "gmp").0, None);
    let mixed = ["--wbits", "4", "--target-avg-bits", "4", "--use-mi-grouping", "1", "--n-groups", "4"];
    assert_eq!(run(&mixed, "mi").0, None);
}
