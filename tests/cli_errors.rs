//! Bad input gives one clear line on stderr, a non-zero exit, no panic and no backtrace,
//! and leaves nothing written.

mod common;

use std::path::Path;
use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut c = Command::new(common::bin());
    // The shipped corpora unless a case says otherwise (no request to the real hub).
    c.args(args).env_remove("RUST_BACKTRACE").env("SPARSEGPT_MI_DATA_DIR", common::data_dir());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

/// Exit ≠ 0, exactly one non-empty stderr line starting "error:", containing `needle`.
fn assert_clean_error(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let (code, err) = run(args, env);
    assert_ne!(code, 0, "{args:?} should fail");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got:\n{err}");
    assert!(lines[0].starts_with("error:"), "{args:?}: {err}");
    assert!(!err.contains("panicked") && !err.to_lowercase().contains("backtrace"), "{err}");
    assert!(err.contains(needle), "{args:?}: '{needle}' not in: {err}");
}

fn copy_fixture(to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(common::fixture("opt-rand-postln")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if !skip.contains(&name.as_str()) {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn missing_model_directory() {
    assert_clean_error(&["eval", "/nonexistent/opt-model"], &[], "does not exist");
}

#[test]
fn config_that_is_not_opt() {
    let t = tempfile::tempdir().unwrap();
    copy_fixture(t.path(), &[]);
    let cfg = std::fs::read_to_string(t.path().join("config.json")).unwrap().replace("\"opt\"", "\"llama\"");
    std::fs::write(t.path().join("config.json"), cfg).unwrap();
    assert_clean_error(&["eval", t.path().to_str().unwrap()], &[], "is not OPT");
}

#[test]
fn truncated_safetensors() {
    let t = tempfile::tempdir().unwrap();
    copy_fixture(t.path(), &[]);
    let p = t.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(&["eval", t.path().to_str().unwrap()], &[], "model.safetensors");
}

#[test]
fn missing_tokenizer() {
    let t = tempfile::tempdir().unwrap();
    copy_fixture(t.path(), &["tokenizer.json", "vocab.json", "merges.txt"]);
    assert_clean_error(&["eval", t.path().to_str().unwrap()], &[], "no tokenizer");
}

#[test]
fn unknown_dataset() {
    let m = common::fixture("opt-rand-postln");
    assert_clean_error(
        &["eval", m.to_str().unwrap(), "--datasets", "wikitext2,lambada"],
        &[],
        "unknown dataset 'lambada'",
    );
}

#[test]
fn data_dir_without_the_file() {
    let t = tempfile::tempdir().unwrap();
    let m = common::fixture("opt-rand-postln");
    assert_clean_error(
        &["eval", m.to_str().unwrap(), "--datasets", "ptb", "--data-dir", t.path().to_str().unwrap()],
        &[],
        "ptb.test.txt",
    );
}

#[test]
fn unreachable_hub() {
    let home = tempfile::tempdir().unwrap();
    assert_clean_error(
        &["eval", "facebook/opt-125m"],
        &[("HF_ENDPOINT", "http://127.0.0.1:9"), ("HF_HOME", home.path().to_str().unwrap()), ("HF_HUB_OFFLINE", "0")],
        "cannot reach the Hugging Face hub",
    );
}

#[test]
fn offline_hub_without_cache() {
    let home = tempfile::tempdir().unwrap();
    assert_clean_error(
        &["eval", "facebook/opt-125m"],
        &[("HF_HOME", home.path().to_str().unwrap()), ("HF_HUB_OFFLINE", "1")],
        "no config.json",
    );
}

#[test]
fn prune_flags_are_checked_before_any_work() {
    let m = common::fixture("opt-mini-b");
    let m = m.to_str().unwrap();
    let t = tempfile::tempdir().unwrap();
    let json = t.path().join("r.json");
    let j = json.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--sparsity", "1.0"], "outside [0, 1)"),
        (vec!["--sparsity", "-0.1"], "outside [0, 1)"),
        (vec!["--prunen", "4", "--prunem", "4"], "0 < N < M"),
        (vec!["--prunen", "2", "--prunem", "5"], "does not divide"),
        (vec!["--wbits", "9"], "outside 2..8"),
        (vec!["--wbits", "1"], "outside 2..8"),
        (vec!["--wbits", "4", "--groupsize", "100"], "does not divide"),
        (vec!["--nsamples", "0"], "at least 1"),
        (vec!["--nsamples", "100000000"], "exceeds"),
        (vec!["--eval-datasets", "wikitext3"], "unknown dataset"),
        (vec!["--target-avg-bits", "1.5"], "outside --min-bits"),
        (vec!["--target-avg-bits", "9"], "outside --min-bits"),
        (vec!["--target-avg-bits", "4", "--n-groups", "0"], "at least one group"),
        (vec!["--target-avg-bits", "4", "--n-groups", "5000"], "exceeds the layer width"),
        (vec!["--use-mi-grouping", "1"], "give --target-avg-bits"),
        (vec!["--target-avg-bits", "2.5", "--n-groups", "10"], "cannot pay for 10 groups"),
        (vec!["--order", "identity"], "options of the mixed modes"),
        (vec!["--grouping-use", "scales", "--wbits", "3"], "needs --wbits and --groupsize"),
        (
            vec!["--grouping-use", "scales", "--wbits", "3", "--groupsize", "64", "--target-avg-bits", "3"],
            "drop --target-avg-bits",
        ),
        (vec!["--grouping", "range", "--target-avg-bits", "4"], "add --grouping-use scales"),
        (vec!["--nm-permutation", "mi"], "give --prunen/--prunem"),
        (vec!["--target-avg-bits", "4", "--uniform-in-mixed-order"], "quantizes at --wbits"),
        (
            vec!["--target-avg-bits", "4", "--wbits", "4", "--uniform-in-mixed-order", "--order", "identity"],
            "not with --order identity",
        ),
        (vec!["--save", "/proc/forbidden/model"], "--save"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["prune", m, "c4", "--json", j];
        args.extend(extra.iter());
        assert_clean_error(&args, &[], needle);
        assert!(!json.exists(), "{extra:?} wrote a result");
    }
    // Unwritable --json: nothing else can be written either.
    assert_clean_error(&["prune", m, "c4", "--json", "/proc/forbidden/r.json"], &[], "--json");
}

#[test]
fn unknown_grouping_or_mi_method_is_refused_by_the_parser() {
    let m = common::fixture("opt-mini-b");
    for args in [["--grouping", "louvain"], ["--mi-method", "kde"]] {
        let mut a = vec!["prune", m.to_str().unwrap(), "c4", "--target-avg-bits", "4"];
        a.extend(args.iter());
        let (code, err) = run(&a, &[]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("invalid value"), "{err}");
        assert!(!err.contains("panicked"));
    }
}
