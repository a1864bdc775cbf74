//! Bad input gives one clear line on stderr, a non-zero exit, no panic and no backtrace,
//! and leaves nothing written; nothing of the user's is removed or changed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    run_in(None, args, env)
}

fn run_in(dir: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut c = Command::new(common::bin());
    if let Some(d) = dir {
        c.current_dir(d);
    }
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
    assert_clean_error_in(None, args, env, needle)
}

fn assert_clean_error_in(dir: Option<&Path>, args: &[&str], env: &[(&str, &str)], needle: &str) {
    let (code, err) = run_in(dir, args, env);
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
fn window_lengths_the_model_cannot_take() {
    let t = tempfile::tempdir().unwrap();
    let m = common::fixture("opt-rand-postln");
    let json = t.path().join("r.json");
    let (m, json, out) = (m.to_str().unwrap(), json.to_str().unwrap(), t.path().to_str().unwrap());
    let cases: [(Vec<&str>, &str); 6] = [
        (vec!["eval", m, "--seqlen", "1", "--json", json], "at least 2 tokens"),
        (vec!["prune", m, "c4", "--seqlen", "0", "--json", json], "at least 2 tokens"),
        (vec!["eval", m, "--seqlen", "2k", "--json", json], "'2k' is not a token count"),
        // Above the learned positions: the limit and the flag, before any weight is read.
        (vec!["eval", m, "--seqlen", "2049", "--json", json], "exceed the model's 2048 learned positions"),
        (vec!["prune", m, "c4", "--seqlen", "4096", "--json", json], "give --seqlen 2048 or less"),
        (
            vec!["mi", m, "--layer", "0", "--linear", "fc1", "--out", out, "--seqlen", "4096"],
            "max_position_embeddings = 2048",
        ),
    ];
    for (args, needle) in cases {
        assert_clean_error(&args, &[], needle);
        assert_clean_error(&args, &[], "--seqlen");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "{args:?} wrote something");
    }
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
        (vec!["--prunen", "2", "--prunem", "4", "--fold-permutations"], "give --nm-permutation"),
        (vec!["--target-avg-bits", "4", "--uniform-in-mixed-order"], "quantizes at --wbits"),
        (
            vec!["--target-avg-bits", "4", "--wbits", "4", "--uniform-in-mixed-order", "--order", "identity"],
            "not with --order identity",
        ),
        (vec!["--bit-objective", "cost-model"], "--bit-objective is an option of the mixed modes"),
        (
            vec!["--target-avg-bits", "4", "--bit-objective", "cost-model", "--bit-policy", "thresholds"],
            "not with --bit-policy thresholds",
        ),
        (vec!["--act-group-aware", "--wbits", "4", "--groupsize", "64"], "--act-group-aware chooses how"),
        (vec!["--act-groups", "dynamic", "--act-order", "--wbits", "4"], "--act-groups chooses how"),
        (vec!["--act-groups", "group-aware", "--wbits", "4", "--groupsize", "64"], "--act-groups chooses how"),
        (
            vec![
                "--act-groups",
                "dynamic",
                "--act-order",
                "--wbits",
                "4",
                "--groupsize",
                "64",
                "--target-avg-bits",
                "4",
            ],
            "--act-groups chooses how",
        ),
        (
            vec!["--act-group-aware", "--act-groups", "dynamic", "--act-order", "--wbits", "4", "--groupsize", "64"],
            "not with --act-groups dynamic",
        ),
        (vec!["--save", "/proc/forbidden/model"], "--save"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["prune", m, "c4", "--json", j];
        args.extend(extra.iter());
        assert_clean_error(&args, &[], needle);
        assert!(!json.exists(), "{extra:?} wrote a result");
    }
    // --save-format: refused before any work, nothing saved, no result written.
    let save = t.path().join("saved");
    let s = save.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--save", s, "--save-format", "gptq"], "this run does not quantize"),
        (vec!["--save", s, "--save-format", "compressed-tensors", "--sparsity", "0.5"], "this run does not quantize"),
        (vec!["--save", s, "--save-format", "gptq", "--wbits", "4", "--gmp", "--sparsity", "0.5"], "does not quantize"),
        (vec!["--save", s, "--save-format", "gptq", "--wbits", "5"], "holds 2, 3, 4 or 8 bits, not --wbits 5"),
        (vec!["--save", s, "--save-format", "int4", "--wbits", "4"], "invalid value 'int4'"),
        (vec!["--save-format", "gptq", "--wbits", "4"], "--save-format needs --save"),
        (
            vec!["--save", s, "--save-format", "compressed-tensors", "--wbits", "4", "--groupsize", "128"],
            "--groupsize 128 does not divide the layer width 192",
        ),
        (
            vec![
                "--save",
                s,
                "--save-format",
                "compressed-tensors",
                "--wbits",
                "4",
                "--groupsize",
                "64",
                "--act-order",
                "--act-groups",
                "dynamic",
            ],
            "cannot hold --act-groups dynamic",
        ),
        (vec!["--save", s, "--save-format", "gptq", "--wbits", "4", "--maxlayer", "0"], "selects none of the model's"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["prune", m, "c4", "--json", j];
        args.extend(extra.iter());
        assert_clean_error(&args, &[], needle);
        assert!(!json.exists() && !save.exists(), "{extra:?} wrote something");
    }
    // GPTQ loaders need widths that are multiples of 32: a config with hidden size 48 is
    // refused before its weights are read.
    let odd = t.path().join("odd");
    copy_fixture(&odd, &[]);
    let cfg = std::fs::read_to_string(odd.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    v["hidden_size"] = 48.into();
    v["num_attention_heads"] = 4.into();
    std::fs::write(odd.join("config.json"), v.to_string()).unwrap();
    assert_clean_error(
        &["prune", odd.to_str().unwrap(), "c4", "--json", j, "--save", s, "--save-format", "gptq", "--wbits", "4"],
        &[],
        "layer width 48 is not a multiple of 32",
    );
    assert!(!json.exists() && !save.exists());
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

/// Every file and folder under `dir` with its bytes (folders: empty), to show that a refused
/// run wrote, removed and changed nothing there.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if meta.is_dir() {
                stack.push(p.clone());
                out.insert(rel, Vec::new());
            } else if meta.file_type().is_symlink() {
                out.insert(rel, std::fs::read_link(&p).unwrap().to_string_lossy().as_bytes().to_vec());
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A clean error (see `assert_clean_error`) run in `dir`, after which `dir` is byte for byte
/// as it was.
fn assert_refused_in(dir: &Path, args: &[&str], needle: &str) {
    let before = snapshot(dir);
    assert_clean_error_in(Some(dir), args, &[], needle);
    assert_eq!(snapshot(dir), before, "{args:?} changed the working folder");
}

const QUICK: [&str; 6] = ["--nsamples", "1", "--max-windows", "1", "--eval-datasets", "wikitext2"];

fn prune_args<'a>(model: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["prune", model, "c4"];
    a.extend(QUICK);
    a.extend(extra);
    a
}

/// A working folder holding a copy of fixture B (`model/`) and a folder of the user's own
/// files (`user/`).
fn workspace() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for e in std::fs::read_dir(common::fixture("opt-mini-b")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
    }
    std::fs::create_dir(t.path().join("user")).unwrap();
    std::fs::write(t.path().join("user/notes.txt"), b"the user's own notes").unwrap();
    std::fs::write(t.path().join("afile"), b"a file").unwrap();
    t
}

#[test]
fn save_never_replaces_what_this_tool_did_not_write() {
    let t = workspace();
    let w = t.path();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--save", "user"], "not an export of this tool"),
        (vec!["--save", "user/"], "not an export of this tool"),
        (vec!["--save", "model"], "not an export of this tool"),
        (vec!["--save", "model", "--overwrite"], "input model"),
        (vec!["--save", "model/../model", "--overwrite"], "input model"),
        (vec!["--save", ".", "--overwrite"], "cannot be replaced"),
        (vec!["--save", "..", "--overwrite"], "cannot be replaced"),
        (vec!["--save", "/", "--overwrite"], "cannot be replaced"),
        (vec!["--save", "afile"], "not a directory"),
        (vec!["--save", "afile/out"], "is not a directory"),
        (vec!["--save", "/proc/forbidden/out"], "cannot write under /proc"),
        (vec!["--save", "/sys/out"], "cannot write under /sys"),
        (vec!["--overwrite"], "--overwrite is for --save"),
    ];
    for (extra, needle) in cases {
        let mut extra = extra;
        extra.extend(["--json", "r.json"]);
        assert_refused_in(w, &prune_args("model", &extra), needle);
    }
    // The folder holding the model, and the model through a symlink, even with --overwrite.
    std::os::unix::fs::symlink(w.join("model"), w.join("link")).unwrap();
    let sub = tempfile::tempdir_in(w).unwrap();
    let inner = sub.path().join("m");
    std::fs::create_dir(&inner).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(w.join("model").join(f), inner.join(f)).unwrap();
    }
    let holder = sub.path().to_str().unwrap().to_string();
    let inner_s = inner.to_str().unwrap().to_string();
    assert_refused_in(w, &prune_args(&inner_s, &["--save", &holder, "--overwrite", "--json", "r.json"]), "input model");
    assert_refused_in(w, &prune_args("link", &["--save", "model", "--overwrite", "--json", "r.json"]), "input model");
    assert_refused_in(w, &prune_args("model", &["--save", "link", "--overwrite", "--json", "r.json"]), "symbolic link");
}

#[test]
fn save_replaces_only_a_previous_export_and_writes_ordinary_modes() {
    use std::os::unix::fs::PermissionsExt;
    let t = workspace();
    let w = t.path();
    let bin = common::bin();
    // umask 027: files 0640, folders 0750 (not safetensors' 0600, not the source's 0444).
    let save = |extra: &str| {
        let cmd = format!(
            "umask 027 && exec '{bin}' prune model c4 --nsamples 1 --eval-datasets '' --json r.json --save out {extra}"
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(w)
            .env("SPARSEGPT_MI_DATA_DIR", common::data_dir())
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, err) = save("--sparsity 0.5");
    assert_eq!(code, 0, "{err}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&w.join("out")), 0o750);
    for e in std::fs::read_dir(w.join("out")).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o640, "{}", p.display());
    }
    assert_eq!(mode(&w.join("r.json")), 0o640);
    let marker: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.join("out/.sparsegpt-mi-export")).unwrap()).unwrap();
    assert!(marker["files"].as_array().unwrap().iter().any(|f| f == "model.safetensors"), "{marker}");
    // A second run replaces its own export.
    let first = std::fs::read(w.join("out/model.safetensors")).unwrap();
    let (code, err) = save("--sparsity 0.6");
    assert_eq!(code, 0, "{err}");
    assert_ne!(std::fs::read(w.join("out/model.safetensors")).unwrap(), first);
    // A file the user put into the export stops the next run, untouched.
    std::fs::write(w.join("out/README.md"), b"my notes on this export").unwrap();
    let before = snapshot(w);
    let (code, err) = save("--sparsity 0.5");
    assert_ne!(code, 0);
    assert!(err.contains("README.md") && err.lines().count() == 1, "{err}");
    assert_eq!(snapshot(w), before);
    // Nothing temporary left beside the target by any of these runs.
    let hidden: Vec<_> = std::fs::read_dir(w)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[test]
fn output_paths_that_would_fail_at_the_end_are_refused_before_any_work() {
    let t = workspace();
    let w = t.path();
    for (extra, needle) in [
        (vec!["--json", "user"], "is an existing directory"),
        (vec!["--json", "."], "names a directory"),
        (vec!["--json", ".."], "names a directory"),
        (vec!["--json", "new/"], "names a directory"),
        (vec!["--json", "afile/r.json"], "is not a directory"),
        (vec!["--json", "afile/deeper/r.json"], "is not a directory"),
        (vec!["--json", "/proc/r.json"], "cannot write under /proc"),
        (vec!["--json", "/sys/r.json"], "cannot write under /sys"),
        (vec!["--json", "/dev/null"], "not a regular file"),
        (vec!["--json", ""], "a value is required for '--json"),
    ] {
        assert_refused_in(w, &prune_args("model", &extra), needle);
    }
    for (extra, needle) in [
        (vec!["--json", "user"], "is an existing directory"),
        (vec!["--logits-out", "user"], "--logits-out user: is an existing directory"),
        (vec!["--logits-out", "afile/x.json"], "is not a directory"),
        (vec!["--logits-out", "/proc/x.json"], "cannot write under /proc"),
    ] {
        let mut a = vec!["eval", "model", "--max-windows", "1", "--datasets", "wikitext2"];
        a.extend(extra);
        assert_refused_in(w, &a, needle);
    }
    for (out, needle) in [
        ("afile", "--out afile: exists and is not a directory"),
        ("afile/sub", "is not a directory"),
        ("/proc/mi", "cannot write under /proc"),
        ("/sys/mi", "cannot write under /sys"),
    ] {
        assert_refused_in(
            w,
            &["mi", "model", "--layer", "1", "--linear", "fc1", "--nsamples", "1", "--out", out],
            needle,
        );
    }
    // A directory where one of mi's two files goes.
    std::fs::create_dir_all(w.join("mi/mi_L1_fc1.png")).unwrap();
    assert_refused_in(
        w,
        &["mi", "model", "--layer", "1", "--linear", "fc1", "--nsamples", "1", "--out", "mi"],
        "mi_L1_fc1.png: is an existing directory",
    );
}

#[test]
fn runs_that_would_compute_nothing_are_refused() {
    let t = workspace();
    let w = t.path();
    for (extra, needle) in [
        (vec!["--minlayer", "3", "--maxlayer", "1"], "selects none of the model's 6 layers"),
        (vec!["--minlayer", "50"], "selects none of the model's 6 layers"),
        (vec!["--maxlayer", "0"], "selects none"),
        (vec!["--max-windows", "0"], "--max-windows 0 evaluates nothing"),
        (vec!["--gmp", "--sparsity", "0.5", "--minlayer", "6"], "selects none"),
    ] {
        let mut a = vec!["prune", "model", "c4", "--nsamples", "1", "--json", "r.json"];
        a.extend(extra);
        assert_refused_in(w, &a, needle);
    }
    assert_refused_in(w, &["eval", "model", "--max-windows", "0", "--json", "r.json"], "--max-windows 0");
    assert_refused_in(w, &["eval", "model", "--datasets", "", "--json", "r.json"], "--datasets is empty");
}

/// Fixture B with `edit` applied to its tensors (by checkpoint name), saved in `dtype`.
fn edited_model(w: &Path, dtype: candle_core::DType, edit: impl Fn(&str, Vec<f32>) -> Vec<f32>) -> String {
    let st = w.join("model/model.safetensors");
    let tensors = candle_core::safetensors::load(&st, &candle_core::Device::Cpu).unwrap();
    let edited: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .map(|(name, t)| {
            let shape = t.dims().to_vec();
            let v: Vec<f32> = t.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let v = edit(&name, v);
            let t =
                candle_core::Tensor::from_vec(v, shape, &candle_core::Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            (name, t)
        })
        .collect();
    std::fs::remove_file(&st).unwrap();
    candle_core::safetensors::save(&edited, &st).unwrap();
    "model".to_string()
}

#[test]
fn nan_and_inf_in_the_checkpoint_are_found_at_load_naming_the_tensor() {
    for (dtype, bad) in [(candle_core::DType::F16, f32::NAN), (candle_core::DType::F32, f32::INFINITY)] {
        let t = workspace();
        let w = t.path();
        // One row of layer 1's fc1 (the fused ReLU used to hide a NaN there).
        let m = edited_model(w, dtype, |name, mut v| {
            if name.ends_with("layers.1.fc1.weight") {
                v[5 * 192..6 * 192].iter_mut().for_each(|x| *x = bad);
            }
            v
        });
        let needle = "tensor model.decoder.layers.1.fc1.weight holds non-finite values";
        assert_refused_in(
            w,
            &["eval", &m, "--max-windows", "1", "--datasets", "wikitext2", "--json", "r.json"],
            needle,
        );
        assert_refused_in(w, &prune_args(&m, &["--sparsity", "0.5", "--json", "r.json", "--save", "out"]), needle);
        assert_refused_in(
            w,
            &prune_args(&m, &["--sparsity", "0.5", "--json", "r.json", "--save", "out"]),
            "the first at [5, 0]",
        );
    }
}

#[test]
fn overflowing_activations_stop_the_run_naming_where_and_why() {
    let t = workspace();
    let w = t.path();
    // Finite f32 weights whose fc1 outputs overflow to Inf in layer 1: bias at f32::MAX plus
    // a large product.
    let m = edited_model(w, candle_core::DType::F32, |name, mut v| {
        if name.ends_with("layers.1.fc1.bias") {
            v.iter_mut().for_each(|x| *x = f32::MAX);
        }
        if name.ends_with("layers.1.fc1.weight") {
            v.iter_mut().for_each(|x| *x = 1e36);
        }
        v
    });
    let json = ["--json", "r.json"];
    // Its Hessian (the fc2 input) has Inf entries: named, with the cause; no --percdamp advice.
    let mut a = prune_args(&m, &["--sparsity", "0.5", "--save", "out"]);
    a.extend(json);
    assert_refused_in(w, &a, "layer 1 fc2: the Hessian has non-finite entries");
    let (_, err) = run_in(Some(w), &a, &[]);
    assert!(!err.contains("percdamp") && err.contains("overflowed"), "{err}");
    // Layer 1 not compressed: its recomputed outputs are caught.
    let mut a = prune_args(&m, &["--sparsity", "0.5", "--minlayer", "2"]);
    a.extend(json);
    assert_refused_in(w, &a, "layer 1: non-finite outputs for calibration window 0");
    // Evaluation names the window and the corpus.
    assert_refused_in(
        w,
        &["eval", &m, "--max-windows", "1", "--datasets", "wikitext2", "--json", "r.json"],
        "non-finite logits in window 0 of wikitext2",
    );
}

#[test]
fn sigint_during_save_and_sigterm_mid_run_leave_nothing_and_stale_paths_are_cleaned() {
    let t = workspace();
    let w = t.path();
    let start_with = |nsamples: &str, eval: &str, extra: &[&str]| {
        let mut a = vec!["prune", "model", "c4", "--nsamples", nsamples, "--eval-datasets", eval, "--json", "r.json"];
        a.extend(extra);
        Command::new(common::bin())
            .args(&a)
            .current_dir(w)
            .env("SPARSEGPT_MI_DATA_DIR", common::data_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let start = |extra: &[&str]| start_with("1", "", extra);
    let signal = |pid: u32, sig: i32| unsafe { libc::kill(pid as i32, sig) };
    let partial = |pid: u32| w.join(format!(".out.partial{pid}"));
    let before = snapshot(w);
    // SIGINT while the export is being written: caught when its temporary directory exists
    // (the process is stopped there, then interrupted), removed, exit 130.
    let mut caught = false;
    for _ in 0..5 {
        let child = start(&["--save", "out"]);
        let pid = child.id();
        let t0 = std::time::Instant::now();
        while !partial(pid).exists() && t0.elapsed().as_secs() < 120 {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        signal(pid, libc::SIGSTOP);
        if !partial(pid).exists() {
            // Finished before it was stopped: start again.
            signal(pid, libc::SIGCONT);
            child.wait_with_output().unwrap();
            let _ = std::fs::remove_dir_all(w.join("out"));
            let _ = std::fs::remove_file(w.join("r.json"));
            continue;
        }
        signal(pid, libc::SIGINT);
        signal(pid, libc::SIGCONT);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{err}");
        assert!(
            err.lines().last().unwrap().starts_with("error: interrupted by SIGINT; removed 1 temporary path"),
            "{err}"
        );
        caught = true;
        break;
    }
    assert!(caught, "never caught a run while it saved");
    assert_eq!(snapshot(w), before, "an interrupted save left something behind");
    // SIGTERM before any output (a run long enough not to finish first): exit 143, nothing
    // written.
    let child = start_with("16", "wikitext2", &["--save", "out"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    signal(child.id(), libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(snapshot(w), before);
    // A killed run's leftovers (its process gone) are removed by the next run, which says so.
    let dead = 4_999_999u32;
    std::fs::create_dir(w.join(format!(".out.partial{dead}"))).unwrap();
    std::fs::write(w.join(format!(".out.partial{dead}/.sparsegpt-mi-export")), b"{}").unwrap();
    std::fs::write(w.join(format!(".r.json.tmp{dead}")), b"{\"half").unwrap();
    let (code, err) = run_in(
        Some(w),
        &["prune", "model", "c4", "--nsamples", "1", "--minlayer", "9", "--json", "r.json", "--save", "out"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("note: removed a temporary path left in . by an interrupted run: .r.json.tmp{dead}")),
        "{err}"
    );
    assert!(err.contains(&format!(".out.partial{dead}")), "{err}");
    assert_eq!(snapshot(w), before);
}

#[test]
fn bad_task_input_is_refused_before_any_model_work() {
    let t = workspace();
    let w = t.path();
    let tasks = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let tasks = tasks.to_str().unwrap();
    // A piqa.parquet holding one string column, 'goal': no sol1, sol2, label.
    let bad = w.join("user/data");
    std::fs::create_dir_all(bad.join("tasks")).unwrap();
    let file = common::hub_files::parquet_strings("goal", &[Some("To dry a phone".to_string())], 1);
    std::fs::write(bad.join("tasks/piqa.parquet"), file).unwrap();
    let bad = bad.to_str().unwrap();
    assert_refused_in(w, &["eval", "model", "--tasks", "piqa,mmlu", "--data-dir", tasks], "unknown task 'mmlu'");
    assert_refused_in(
        w,
        &["prune", "model", "c4", "--nsamples", "1", "--eval-tasks", "hellaswag,x", "--json", "r.json"],
        "unknown task 'x'",
    );
    assert_refused_in(
        w,
        &["eval", "model", "--tasks", "piqa", "--limit", "0", "--data-dir", tasks],
        "--limit 0 scores nothing",
    );
    assert_refused_in(w, &["eval", "model", "--limit", "3", "--json", "r.json"], "give --tasks too");
    assert_refused_in(
        w,
        &["eval", "model", "--tasks", "piqa", "--data-dir", bad, "--json", "r.json"],
        "lacks columns 'sol1', 'sol2', 'label'",
    );
    assert_refused_in(w, &["eval", "model", "--tasks", "boolq", "--data-dir", bad], "lacks tasks/boolq.parquet");
}
