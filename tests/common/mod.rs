//! Shared paths and loaders for the integration tests (fixtures live in ../shared).
#![allow(dead_code)]

use std::path::PathBuf;

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
