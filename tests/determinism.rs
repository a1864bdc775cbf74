//! Bit-for-bit reproducibility for any thread count: an MI prune (4 calibration windows, 1
//! evaluation window, `--save`) gives the same result JSON (timings and memory aside) and the
//! same saved model, byte for byte, at 1, 2 and 4 rayon threads on fixture B (OPT) and at 1 and 4
//! on llama-rand-gqa (the rotary family's CPU paths: RoPE, grouped-query attention, RMSNorm, the
//! gated MLP).

mod common;

use sha2::{Digest, Sha256};
use std::process::Command;

/// Drops what is measured rather than computed: times and peak memory.
fn without_timings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !(k.ends_with("_s") || k.ends_with("seconds") || k == "peak_rss_mib"));
            m.values_mut().for_each(without_timings);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(without_timings),
        _ => {}
    }
}

/// The run's JSON (timings aside) and the sha256 of every saved file, at `threads` threads.
fn run(fixture: &str, threads: usize) -> (serde_json::Value, Vec<(String, String)>) {
    let t = tempfile::tempdir().unwrap();
    let m = common::fixture(fixture);
    let out = Command::new(common::bin())
        .current_dir(t.path())
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("SPARSEGPT_MI_DATA_DIR", common::data_dir())
        .args([
            "prune",
            m.to_str().unwrap(),
            "c4",
            "--sparsity",
            "0.5",
            "--wbits",
            "4",
            "--target-avg-bits",
            "4.0",
            "--use-mi-grouping",
            "1",
            "--n-groups",
            "10",
            "--nsamples",
            "4",
            "--max-windows",
            "1",
            "--eval-datasets",
            "wikitext2",
            "--json",
            "r.json",
            "--save",
            "saved",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{threads} threads: {}", String::from_utf8_lossy(&out.stderr));
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("r.json")).unwrap()).unwrap();
    without_timings(&mut json);
    let mut files: Vec<(String, String)> = std::fs::read_dir(t.path().join("saved"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let hash = Sha256::digest(std::fs::read(e.path()).unwrap());
            (e.file_name().to_string_lossy().to_string(), format!("{hash:x}"))
        })
        .collect();
    files.sort();
    (json, files)
}

/// The same JSON and files at 1 thread and at each of `others`.
fn same_at_any_thread_count(fixture: &str, others: &[usize]) {
    let (json, files) = run(fixture, 1);
    assert!(files.iter().any(|(n, _)| n == "model.safetensors"), "{files:?}");
    // The run grouped and quantized: a meaningful comparison, not two empty results.
    assert!(json["linears"].as_array().unwrap().iter().all(|l| l["plan"]["k"].as_u64().unwrap() > 1));
    assert!(json["ppl"]["wikitext2"].as_f64().unwrap().is_finite());
    for &threads in others {
        let (j, f) = run(fixture, threads);
        assert_eq!(f, files, "{fixture}: saved files at {threads} threads differ from 1 thread");
        if j != json {
            // Name the first linear that differs, the likeliest place to look.
            let first =
                json["linears"].as_array().unwrap().iter().zip(j["linears"].as_array().unwrap()).find(|(a, b)| a != b);
            panic!("{fixture}: JSON at {threads} threads differs from 1 thread; first differing linear: {first:?}");
        }
    }
}

#[test]
fn an_mi_prune_gives_the_same_json_and_model_at_1_2_and_4_threads() {
    same_at_any_thread_count("opt-mini-b", &[2, 4]);
}

#[test]
fn a_rotary_family_mi_prune_gives_the_same_json_and_model_at_1_and_4_threads() {
    same_at_any_thread_count("llama-rand-gqa", &[4]);
}
