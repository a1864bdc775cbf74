//! Another family's repository through the hub stand-in: its config and tokenizer are checked
//! before any weight is asked for.

mod common;

use common::hub_server::HubServer;
use sparsegpt_mi::hub::HubConfig;
use sparsegpt_mi::model::files::{resolve_model_with, TokenizerFiles};

const ID: &str = "testorg/llama-tiny";

/// A served config.json, one tokenizer file, and what the refusal must say.
type Case<'a> = (String, (&'a str, Vec<u8>), &'a str);

fn llama_repo(config: &str, tokenizer: (&str, Vec<u8>)) -> Vec<(String, Vec<u8>)> {
    let dir = common::fixture("llama-rand-gqa");
    vec![
        ("config.json".to_string(), config.as_bytes().to_vec()),
        (tokenizer.0.to_string(), tokenizer.1),
        ("model.safetensors".to_string(), std::fs::read(dir.join("model.safetensors")).unwrap()),
    ]
}

fn fixture_file(name: &str) -> String {
    std::fs::read_to_string(common::fixture("llama-rand-gqa").join(name)).unwrap()
}

/// Resolves `ID` served with `files`; returns the error line (if any) and whether any
/// weight file was requested.
fn resolve(files: Vec<(String, Vec<u8>)>) -> (Option<String>, bool) {
    let server = HubServer::start();
    server.add_model(ID, files);
    let cache = tempfile::tempdir().unwrap();
    let r = resolve_model_with(
        ID,
        &HubConfig::new(server.endpoint(), cache.path()),
        sparsegpt_mi::protocol::SeqLen::PUBLISHED,
    );
    let weights_asked = server.requests().iter().any(|r| r.path.contains("model.safetensors"));
    (r.err().map(|e| format!("{e:#}")), weights_asked)
}

#[test]
fn a_llama_repository_resolves_with_its_tokenizer_json() {
    let server = HubServer::start();
    server.add_model(
        ID,
        llama_repo(&fixture_file("config.json"), ("tokenizer.json", fixture_file("tokenizer.json").into_bytes())),
    );
    let cache = tempfile::tempdir().unwrap();
    let files = resolve_model_with(
        ID,
        &HubConfig::new(server.endpoint(), cache.path()),
        sparsegpt_mi::protocol::SeqLen::PUBLISHED,
    )
    .unwrap();
    assert!(matches!(files.tokenizer, TokenizerFiles::Json(_)));
}

#[test]
fn refusals_come_before_any_weight_is_requested() {
    let config = fixture_file("config.json");
    let tok = || ("tokenizer.json", fixture_file("tokenizer.json").into_bytes());
    let cases: Vec<Case> = vec![
        (
            config.clone(),
            ("tokenizer.model", b"sentencepiece".to_vec()),
            "tokenizer.model (sentencepiece) but no tokenizer.json",
        ),
        (config.replace("\"default\"", "\"yarn\""), tok(), "rope_parameters.rope_type = \"yarn\""),
        (config.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"), tok(), "num_key_value_heads = 3"),
        (config.replace("\"mlp_bias\": false", "\"num_local_experts\": 8"), tok(), "num_local_experts = 8"),
        (
            config.replace("\"llama\"", "\"mistral\"").replace("\"mlp_bias\": false", "\"sliding_window\": 1024"),
            tok(),
            "sliding_window = 1024",
        ),
        (config.replace("\"llama\"", "\"gemma\""), tok(), "model_type = \"gemma\""),
    ];
    for (cfg, tokenizer, needle) in cases {
        let (err, weights) = resolve(llama_repo(&cfg, tokenizer));
        let err = err.unwrap_or_else(|| panic!("{needle}: resolved"));
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(!weights, "{needle}: weights were requested before the refusal");
    }
}
