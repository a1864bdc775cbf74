//! Model resolution through the hub cache when the hub is unreachable (without HF_HUB_OFFLINE):
//! a facebook/opt-style repo (pytorch_model.bin, vocab.json + merges.txt, no tokenizer.json)
//! from the local stand-in hub, then from the cache alone. Library API, explicit HubConfig.

mod common;

use common::hub_server::HubServer;
use sparsegpt_mi::hub::HubConfig;
use sparsegpt_mi::model::files::{resolve_model_with, TokenizerFiles};
use std::path::Path;

const UNREACHABLE: &str = "http://127.0.0.1:9";
const ID: &str = "testorg/opt-tiny";

fn facebook_layout() -> Vec<(String, Vec<u8>)> {
    let fx = common::fixture("opt-rand-postln");
    let mut files: Vec<(String, Vec<u8>)> = ["config.json", "vocab.json", "merges.txt"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(fx.join(f)).unwrap()))
        .collect();
    // resolve_model only finds files; any bytes do for the weights (large: served through LFS).
    files.push(("pytorch_model.bin".into(), vec![7u8; 200_000]));
    files
}

fn check(files: &sparsegpt_mi::model::files::ModelFiles) {
    assert!(files.config.ends_with("config.json") && files.config.is_file());
    assert_eq!(files.weights.len(), 1);
    assert!(files.weights[0].ends_with("pytorch_model.bin"));
    assert!(
        matches!(&files.tokenizer, TokenizerFiles::VocabMerges { vocab, merges } if vocab.is_file() && merges.is_file())
    );
}

fn err_line<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    let e = format!("{:#}", r.expect_err("should fail"));
    assert!(!e.contains('\n'), "{e}");
    e
}

#[test]
fn a_cached_facebook_layout_model_resolves_with_the_hub_unreachable() {
    let server = HubServer::start();
    let commit = server.add_model(ID, facebook_layout());
    let cache = tempfile::tempdir().unwrap();
    let online = HubConfig::new(server.endpoint(), cache.path());
    check(&resolve_model_with(ID, &online, sparsegpt_mi::protocol::SeqLen::PUBLISHED).unwrap());

    // The files the hub said are absent are recorded as huggingface_hub does.
    let no_exist = cache.path().join("models--testorg--opt-tiny/.no_exist").join(&commit);
    for f in ["model.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"] {
        assert!(no_exist.join(f).is_file(), "{f} not recorded");
    }

    // A second run asks nothing.
    server.clear_log();
    check(&resolve_model_with(ID, &online, sparsegpt_mi::protocol::SeqLen::PUBLISHED).unwrap());
    assert_eq!(server.request_count(), 0, "{:?}", server.requests());
    drop(server);

    // Unreachable hub, HF_HUB_OFFLINE unset: answered from the cache.
    let unreachable = HubConfig::new(UNREACHABLE, cache.path());
    check(&resolve_model_with(ID, &unreachable, sparsegpt_mi::protocol::SeqLen::PUBLISHED).unwrap());
    // Also with a cache that has no .no_exist records (filled by an older tool): the
    // connection error makes the cache answer for the files it lacks.
    std::fs::remove_dir_all(cache.path().join("models--testorg--opt-tiny/.no_exist")).unwrap();
    check(&resolve_model_with(ID, &unreachable, sparsegpt_mi::protocol::SeqLen::PUBLISHED).unwrap());
    // And offline.
    check(
        &resolve_model_with(ID, &unreachable.clone().with_offline(true), sparsegpt_mi::protocol::SeqLen::PUBLISHED)
            .unwrap(),
    );
}

#[test]
fn a_model_missing_from_the_cache_is_named_offline_and_when_unreachable() {
    let cache = tempfile::tempdir().unwrap();
    let e = err_line(resolve_model_with(
        ID,
        &HubConfig::new(UNREACHABLE, cache.path()).with_offline(true),
        sparsegpt_mi::protocol::SeqLen::PUBLISHED,
    ));
    assert!(e.contains("no config.json"), "{e}");
    assert!(e.contains("nothing of 'testorg/opt-tiny' is in the hub cache"), "{e}");
    assert!(e.contains("unset HF_HUB_OFFLINE") && e.contains("local model directory"), "{e}");
    assert!(!e.contains("is it a Hugging Face model"), "{e}");

    let e = err_line(resolve_model_with(
        ID,
        &HubConfig::new(UNREACHABLE, cache.path()),
        sparsegpt_mi::protocol::SeqLen::PUBLISHED,
    ));
    assert!(e.contains("cannot reach the Hugging Face hub at http://127.0.0.1:9"), "{e}");
    assert!(e.contains("nothing of 'testorg/opt-tiny' is in the hub cache"), "{e}");
}

#[test]
fn an_unknown_model_repo_is_refused_in_one_line() {
    let server = HubServer::start();
    let cache = tempfile::tempdir().unwrap();
    let e = err_line(resolve_model_with(
        "testorg/nothing-here",
        &HubConfig::new(server.endpoint(), cache.path()),
        sparsegpt_mi::protocol::SeqLen::PUBLISHED,
    ));
    assert!(e.contains("'testorg/nothing-here'") && e.contains("repository not found"), "{e}");
    assert!(!Path::new(&cache.path().join("models--testorg--nothing-here/snapshots")).exists());
}
