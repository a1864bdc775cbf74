//! `--seqlen`: evaluation and calibration windows of another length than the published 2048,
//! through the CLI on fixture A, checked against this library's own windows and window NLLs.

mod common;

use sparsegpt_mi::data::{self, calibration, Corpus, SeqLen};
use sparsegpt_mi::eval;
use std::process::Command;

const SEQLEN: usize = 512;
const WINDOWS: usize = 3;

fn run(args: &[&str], json: &std::path::Path) -> serde_json::Value {
    let data = common::data_dir();
    let mut a = args.to_vec();
    a.extend_from_slice(&["--json", json.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    let out = Command::new(common::bin()).args(&a).output().unwrap();
    assert!(out.status.success(), "{a:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn ppl_of(nlls: &[f64]) -> f64 {
    (nlls.iter().sum::<f64>() / nlls.len() as f64).exp()
}

#[test]
fn evaluation_windows_have_the_given_length() {
    let t = tempfile::tempdir().unwrap();
    let model = common::fixture("opt-mini-a");
    let seqlen = SEQLEN.to_string();
    let windows = WINDOWS.to_string();
    let r = run(
        &[
            "eval",
            model.to_str().unwrap(),
            "--seqlen",
            &seqlen,
            "--datasets",
            "wikitext2,c4",
            "--max-windows",
            &windows,
        ],
        &t.path().join("eval.json"),
    );
    assert_eq!(r["seqlen"], SEQLEN);
    let (lm, tok) = common::load("opt-mini-a");
    let length = SeqLen::new(SEQLEN).unwrap();
    for (result, corpus) in r["results"].as_array().unwrap().iter().zip([Corpus::WikiText2, Corpus::C4]) {
        assert_eq!(result["dataset"], corpus.name());
        let ids = data::eval_tokens(corpus, &common::data_dir(), &tok, length).unwrap();
        let available = ids.len() / SEQLEN;
        if corpus == Corpus::C4 {
            // The published C4 protocol: the first 256 windows, here of 512 tokens.
            assert_eq!(available, 256, "C4 holds more than 256 windows of 512 tokens");
        }
        assert_eq!(result["windows_available"], available);
        assert_eq!(result["windows"], WINDOWS);
        assert_eq!(result["tokens"], WINDOWS * SEQLEN, "tokens = windows × 512");
        let nlls = floats(&result["window_mean_nll"]);
        assert_eq!(nlls.len(), WINDOWS);
        for (w, &got) in nlls.iter().enumerate() {
            let want = eval::window_nll(&lm, &ids[w * SEQLEN..(w + 1) * SEQLEN]).unwrap();
            // The binary runs the same f32 CPU path one window at a time: equal up to the last bits.
            assert!((got - want).abs() <= 1e-12 * want.abs(), "{} window {w}: {got} vs {want}", corpus.name());
        }
        let ppl = result["ppl"].as_f64().unwrap();
        assert!((ppl - ppl_of(&nlls)).abs() <= 1e-12 * ppl, "{}: PPL {ppl} is not exp(mean window NLL)", corpus.name());
    }
}

#[test]
fn calibration_and_evaluation_windows_follow_seqlen_in_prune() {
    let t = tempfile::tempdir().unwrap();
    let model = common::fixture("opt-mini-a");
    let seqlen = SEQLEN.to_string();
    let r = run(
        &[
            "prune",
            model.to_str().unwrap(),
            "c4",
            "--sparsity",
            "0.5",
            "--nsamples",
            "4",
            "--seqlen",
            &seqlen,
            "--eval-datasets",
            "wikitext2",
            "--max-windows",
            "2",
        ],
        &t.path().join("prune.json"),
    );
    assert_eq!(r["seqlen"], SEQLEN);
    // The windows drawn are those of 512-token windows (the draw depends on the length: which
    // documents are long enough, and the range of starts).
    let (_, tok) = common::load("opt-mini-a");
    let docs = data::calibration_documents(Corpus::C4, &common::data_dir()).unwrap();
    let sources = |len: usize| {
        let c = calibration::build(&docs, &tok, 4, len, 0, calibration::SamplerKind::Python).unwrap();
        assert!(c.windows.iter().all(|w| w.len() == len));
        serde_json::to_value(c.sources).unwrap()
    };
    let want = sources(SEQLEN);
    assert_ne!(want, sources(2048), "the draw tells the lengths apart");
    assert_eq!(r["calibration_windows"], want);
    let e = &r["eval"][0];
    assert_eq!(e["tokens"], 2 * SEQLEN);
    let nlls = floats(&e["window_mean_nll"]);
    let ppl = r["ppl"]["wikitext2"].as_f64().unwrap();
    assert!((ppl - ppl_of(&nlls)).abs() <= 1e-12 * ppl);
}
