//! Shared paths and loaders for the integration tests (fixtures live in ../shared).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn shared() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    assert!(p.is_dir(), "tests need ../shared beside the repository (fixtures, data, reference)");
    p
}

pub fn fixture(name: &str) -> PathBuf {
    shared().join("fixtures").join(name)
}

pub fn data_dir() -> PathBuf {
    shared().join("data")
}

pub fn reference(model: &str, run: &str) -> serde_json::Value {
    let p = shared().join("reference").join(model).join(format!("{run}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

pub fn load(name: &str) -> (sparsegpt_mi::model::OptModel, tokenizers::Tokenizer) {
    let files = sparsegpt_mi::model::files::resolve_model(
        fixture(name).to_str().unwrap(),
        sparsegpt_mi::protocol::SeqLen::PUBLISHED,
    )
    .unwrap();
    let tok = sparsegpt_mi::model::tokenizer::load(&files.tokenizer).unwrap();
    let model = sparsegpt_mi::model::load_model(&files, &candle_core::Device::Cpu, candle_core::DType::F32).unwrap();
    (model, tok)
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sparsegpt-mi")
}

/// A local stand-in for the Hugging Face hub, and the hub-layout dataset files made from ../shared/data.
pub mod hub_files;
pub mod hub_server;

/// Runs the binary with `args` and the shared data directory (`--data-dir`).
pub fn run_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin()).args(args).args(["--data-dir", data_dir().to_str().unwrap()]).output().unwrap()
}

/// A JSON file's value.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `prune FIXTURE c4 --json DIR.json FLAGS SETTINGS --save DIR --save-format FORMAT`, which must
/// succeed: the result JSON and stderr.
pub fn prune_save(
    fixture_name: &str,
    flags: &[&str],
    settings: &[&str],
    format: &str,
    dir: &Path,
) -> (serde_json::Value, String) {
    let result = dir.with_extension("json");
    let model = fixture(fixture_name);
    let mut args = vec!["prune", model.to_str().unwrap(), "c4", "--json", result.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.extend_from_slice(settings);
    args.extend_from_slice(&["--save", dir.to_str().unwrap(), "--save-format", format]);
    let out = run_cli(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{args:?}: {stderr}");
    (read_json(&result), stderr)
}

/// The window NLLs of a result JSON's evaluation entry (`eval[i]` of prune, `results[i]` of eval).
pub fn window_nlls(entry: &serde_json::Value) -> Vec<f64> {
    entry["window_mean_nll"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

/// `eval DIR` on the first `windows` WikiText-2 windows, which must succeed: their NLLs.
pub fn eval_window_nlls(dir: &Path, windows: usize) -> Vec<f64> {
    let result = dir.with_extension("eval.json");
    let (d, r, w) = (dir.to_str().unwrap(), result.to_str().unwrap(), windows.to_string());
    let out = run_cli(&["eval", d, "--datasets", "wikitext2", "--max-windows", &w, "--json", r]);
    assert!(out.status.success(), "eval {d}: {}", String::from_utf8_lossy(&out.stderr));
    window_nlls(&read_json(&result)["results"][0])
}

/// A safetensors file's header: name → (dtype, shape, bytes).
pub type SafetensorsHeader = std::collections::BTreeMap<String, (String, Vec<usize>, u64)>;

/// The header of the safetensors file at `path` (`SafetensorsHeader`).
pub fn safetensors_header(path: &Path) -> SafetensorsHeader {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    h.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let off = v["data_offsets"].as_array().unwrap();
            (
                k.clone(),
                (
                    v["dtype"].as_str().unwrap().to_string(),
                    v["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect(),
                    off[1].as_u64().unwrap() - off[0].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}
