//! `--save-format gptq | compressed-tensors` end to end on the trained fixtures: each packed
//! export, read back by `eval`, gives the dense export's window NLLs to the last digit; its
//! files hold the documented tensors (docs/formats.md); the sizes in the result JSON are the
//! bytes on disk; bad packed input is refused with one line.

mod common;

use std::path::{Path, PathBuf};

/// Fast settings (as tests/compress.rs): 2 calibration windows, one WikiText-2 window.
const FAST: [&str; 6] = ["--nsamples", "2", "--eval-datasets", "wikitext2", "--max-windows", "1"];

/// `prune FIXTURE c4 FLAGS FAST --save DIR --save-format F`: the result JSON and stderr.
fn prune_save(fixture: &str, flags: &[&str], format: &str, dir: &Path) -> (serde_json::Value, String) {
    common::prune_save(fixture, flags, &FAST, format, dir)
}

/// The decoder linears of a model: (module name, out, in).
fn linears(fixture: &str) -> Vec<(String, usize, usize)> {
    let cfg = common::read_json(&common::fixture(fixture).join("config.json"));
    let (h, f, n) = (
        cfg["hidden_size"].as_u64().unwrap() as usize,
        cfg["ffn_dim"].as_u64().unwrap() as usize,
        cfg["num_hidden_layers"].as_u64().unwrap() as usize,
    );
    let mut v = Vec::new();
    for i in 0..n {
        for (m, o, k) in [
            ("self_attn.q_proj", h, h),
            ("self_attn.k_proj", h, h),
            ("self_attn.v_proj", h, h),
            ("self_attn.out_proj", h, h),
            ("fc1", f, h),
            ("fc2", h, f),
        ] {
            v.push((format!("model.decoder.layers.{i}.{m}"), o, k));
        }
    }
    v
}

fn expect(h: &common::SafetensorsHeader, name: &str, dtype: &str, shape: &[usize]) {
    let (d, s, _) = h.get(name).unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!((d.as_str(), s.as_slice()), (dtype, shape), "{name}");
}

/// The GPTQ tensors of every linear (docs/formats.md), `bits` wide, `group` columns a group.
fn check_gptq_files(dir: &Path, fixture: &str, bits: usize, group: Option<usize>, sym: bool) {
    let h = common::safetensors_header(&dir.join("model.safetensors"));
    for (p, out, inp) in linears(fixture) {
        let groups = group.map_or(1, |g| inp.div_ceil(g));
        expect(&h, &format!("{p}.qweight"), "I32", &[inp * bits / 32, out]);
        expect(&h, &format!("{p}.qzeros"), "I32", &[groups, out * bits / 32]);
        expect(&h, &format!("{p}.scales"), "F16", &[groups, out]);
        expect(&h, &format!("{p}.g_idx"), "I32", &[inp]);
        expect(&h, &format!("{p}.bias"), "F16", &[out]);
        assert!(!h.contains_key(&format!("{p}.weight")), "{p}: dense weight beside the packed one");
    }
    expect(&h, "model.decoder.embed_tokens.weight", "F16", &h["model.decoder.embed_tokens.weight"].1.clone());
    let cfg = common::read_json(&dir.join("config.json"));
    let q = &cfg["quantization_config"];
    assert_eq!(
        q,
        &common::read_json(&dir.join("quantize_config.json")),
        "quantize_config.json = config's quantization_config"
    );
    assert_eq!(q["quant_method"], "gptq");
    assert_eq!(q["checkpoint_format"], "gptq");
    assert_eq!(q["bits"], bits);
    assert_eq!(q["group_size"], group.map_or(-1, |g| g as i64));
    assert_eq!(q["sym"], sym);
    assert_eq!(q["desc_act"], false);
    // These runs use the defaults: true-sequential (uniform quantization), 1% dampening.
    assert_eq!((q["true_sequential"].as_bool(), q["static_groups"].as_bool()), (Some(true), Some(false)));
    assert_eq!(q["damp_percent"].as_f64(), Some(0.01));
    assert!(q.get("dynamic").is_none(), "a uniform export needs no dynamic overrides");
}

fn check_ct_files(dir: &Path, fixture: &str, bits: usize, sym: bool) {
    let h = common::safetensors_header(&dir.join("model.safetensors"));
    for (p, out, inp) in linears(fixture) {
        expect(&h, &format!("{p}.weight_packed"), "I32", &[out, (inp * bits).div_ceil(32)]);
        expect(&h, &format!("{p}.weight_scale"), "F16", &[out, 1]);
        expect(&h, &format!("{p}.weight_shape"), "I64", &[2]);
        if sym {
            assert!(!h.contains_key(&format!("{p}.weight_zero_point")));
        } else {
            expect(&h, &format!("{p}.weight_zero_point"), "I32", &[(out * bits).div_ceil(32), 1]);
        }
        expect(&h, &format!("{p}.bias"), "F16", &[out]);
        assert!(!h.contains_key(&format!("{p}.weight")));
    }
    let q = &common::read_json(&dir.join("config.json"))["quantization_config"];
    assert_eq!(q["quant_method"], "compressed-tensors");
    assert_eq!(q["format"], "pack-quantized");
    assert_eq!(q["quantization_status"], "compressed");
    assert_eq!(q["ignore"], serde_json::json!(["lm_head"]));
    let groups = q["config_groups"].as_object().unwrap();
    assert_eq!(groups.len(), 1, "one width: one config group");
    let g = groups.values().next().unwrap();
    assert_eq!(g["targets"].as_array().unwrap().len(), linears(fixture).len(), "explicit targets");
    assert_eq!(g["weights"]["num_bits"], bits);
    assert_eq!(g["weights"]["strategy"], "channel");
    assert_eq!(g["weights"]["symmetric"], sym);
    assert_eq!(g["weights"]["type"], "int");
}

/// The JSON's sizes are the bytes on disk, and its parts add up to them.
fn check_sizes(dir: &Path, r: &serde_json::Value) {
    let s = &r["saved"]["sizes"];
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k}"));
    let mut on_disk = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let len = e.metadata().unwrap().len();
        on_disk += len;
        assert_eq!(s["files"][e.file_name().to_str().unwrap()].as_u64(), Some(len));
    }
    assert_eq!(n("total_bytes"), on_disk);
    let parts = n("quantized_weight_bytes")
        + n("quantization_metadata_bytes")
        + n("dense_linear_bytes")
        + n("embedding_bytes")
        + n("other_tensor_bytes")
        + n("safetensors_header_bytes")
        + n("other_file_bytes");
    assert_eq!(parts, on_disk);
    // Each category against the file's own header.
    let h = common::safetensors_header(&dir.join("model.safetensors"));
    let sum = |f: &dyn Fn(&str) -> bool| h.iter().filter(|(k, _)| f(k)).map(|(_, v)| v.2).sum::<u64>();
    assert_eq!(n("quantized_weight_bytes"), sum(&|k| k.ends_with(".qweight") || k.ends_with(".weight_packed")));
    assert_eq!(
        n("quantization_metadata_bytes"),
        sum(&|k| [".qzeros", ".scales", ".g_idx", ".weight_scale", ".weight_zero_point", ".weight_shape"]
            .iter()
            .any(|s| k.ends_with(s)))
    );
    assert_eq!(n("embedding_bytes"), sum(&|k| k.contains("embed_")));
    let st = std::fs::metadata(dir.join("model.safetensors")).unwrap().len();
    assert_eq!(n("safetensors_header_bytes"), st - sum(&|_| true));
    let bpw = s["linear_bits_per_weight"].as_f64().unwrap();
    let want = (n("quantized_weight_bytes") + n("quantization_metadata_bytes") + n("dense_linear_bytes")) as f64 * 8.0
        / n("linear_weights") as f64;
    assert!((bpw - want).abs() < 1e-12);
    assert!(s["note"].as_str().unwrap().contains("sparsity is not stored"));
}

struct Case {
    name: &'static str,
    flags: &'static [&'static str],
    bits: usize,
    group: Option<usize>,
}

const GPTQ4: Case = Case { name: "gptq4", flags: &["--wbits", "4"], bits: 4, group: None };
const GPTQ3G128: Case =
    Case { name: "gptq3g128", flags: &["--wbits", "3", "--groupsize", "128"], bits: 3, group: Some(128) };
const SGPT50W4: Case = Case { name: "sgpt50w4", flags: &["--sparsity", "0.5", "--wbits", "4"], bits: 4, group: None };

/// Dense, GPTQ and (where it can hold the run) compressed-tensors exports of one run: every
/// export's `eval` equals the dense export's, window by window, to the last digit.
fn exports_evaluate_like_the_dense_one(fixture: &str, case: &Case, with_ct: bool) {
    let t = tempfile::tempdir().unwrap();
    let d = |f: &str| -> PathBuf { t.path().join(format!("{}_{f}", case.name)) };
    let (dense_run, _) = prune_save(fixture, case.flags, "dense", &d("dense"));
    let dense = common::eval_window_nlls(&d("dense"), 1);
    assert_eq!(dense, common::window_nlls(&dense_run["eval"][0]), "dense export = the evaluated model");
    let (r, _) = prune_save(fixture, case.flags, "gptq", &d("gptq"));
    assert_eq!(common::window_nlls(&r["eval"][0]), dense, "{fixture} {}: same run, same model", case.name);
    assert_eq!(common::eval_window_nlls(&d("gptq"), 1), dense, "{fixture} {}: gptq export", case.name);
    check_gptq_files(&d("gptq"), fixture, case.bits, case.group, false);
    check_sizes(&d("gptq"), &r);
    assert_eq!(r["saved"]["format"], "gptq");
    let lin = r["saved"]["linears"].as_array().unwrap();
    assert_eq!(lin.len(), linears(fixture).len());
    let b = Some(case.bits as f64);
    assert!(lin
        .iter()
        .all(|l| l["stored_as"] == "packed" && l["stored_bits"].as_f64() == b && l["planned_bits"].as_f64() == b));
    // The packed export is smaller: codes + metadata against f16.
    let dense_size = dense_run["saved"]["sizes"]["dense_linear_bytes"].as_u64().unwrap();
    let s = &r["saved"]["sizes"];
    let packed_size =
        s["quantized_weight_bytes"].as_u64().unwrap() + s["quantization_metadata_bytes"].as_u64().unwrap();
    assert!(
        (packed_size as f64) < dense_size as f64 * (case.bits as f64 + 1.0) / 16.0,
        "{packed_size} vs {dense_size}"
    );
    if with_ct {
        let (r, _) = prune_save(fixture, case.flags, "compressed-tensors", &d("ct"));
        assert_eq!(common::eval_window_nlls(&d("ct"), 1), dense, "{fixture} {}: compressed-tensors export", case.name);
        if case.group.is_none() {
            check_ct_files(&d("ct"), fixture, case.bits, false);
        }
        check_sizes(&d("ct"), &r);
    }
    check_sizes(&d("dense"), &dense_run);
}

#[test]
fn fixture_b_gptq4_exports() {
    exports_evaluate_like_the_dense_one("opt-mini-b", &GPTQ4, true);
}

#[test]
fn fixture_b_gptq3_g128_short_last_group() {
    // Width 192 and 768 with groups of 128: the last group of each 192-wide input has 64
    // columns (gptq: groups = ceil(in / 128)); compressed-tensors cannot hold it.
    exports_evaluate_like_the_dense_one("opt-mini-b", &GPTQ3G128, false);
}

#[test]
fn fixture_b_sgpt50w4_exports() {
    exports_evaluate_like_the_dense_one("opt-mini-b", &SGPT50W4, true);
}

#[test]
fn fixture_a_gptq4_exports() {
    exports_evaluate_like_the_dense_one("opt-mini-a", &GPTQ4, true);
}

#[test]
fn fixture_a_gptq3_g128_exports() {
    exports_evaluate_like_the_dense_one("opt-mini-a", &GPTQ3G128, true);
}

#[test]
fn fixture_a_sgpt50w4_exports() {
    exports_evaluate_like_the_dense_one("opt-mini-a", &SGPT50W4, true);
}

#[test]
fn act_order_and_mixed_precision_exports_read_back_exactly() {
    let t = tempfile::tempdir().unwrap();
    // Act-order with the published dynamic groups: g_idx is the GPTQ code's permuted one
    // (desc_act). The config records the run's settings, true-sequential and dampening included.
    let d = t.path().join("act");
    let flags = [
        "--wbits",
        "4",
        "--groupsize",
        "64",
        "--act-order",
        "--act-groups",
        "dynamic",
        "--sym",
        "--true-sequential",
        "--percdamp",
        "0.05",
    ];
    let (r, _) = prune_save("opt-mini-b", &flags, "gptq", &d);
    assert_eq!(common::eval_window_nlls(&d, 1), common::window_nlls(&r["eval"][0]));
    let q = &common::read_json(&d.join("config.json"))["quantization_config"];
    assert_eq!(
        (q["desc_act"].as_bool(), q["sym"].as_bool(), q["group_size"].as_i64()),
        (Some(true), Some(true), Some(64))
    );
    assert_eq!((q["true_sequential"].as_bool(), q["damp_percent"].as_f64()), (Some(true), Some(0.05)));
    assert_eq!(r["args"]["act_groups"], "dynamic");
    // Mixed precision, importance-rank groups of equal size (6 groups: 32 and 128 columns on
    // B's 192 / 768 widths), bits 2..8: packed through g_idx at one width per linear where
    // GPTQ kernels can read it; q/k/v rank their own channels, so their groups differ and
    // they are stored dense. The read-back is exact either way.
    let d = t.path().join("enhanced");
    // --leftover keep: spending the leftover moves single columns and unequalises the groups.
    let flags =
        ["--wbits", "4", "--target-avg-bits", "4.0", "--use-mi-grouping", "0", "--n-groups", "6", "--leftover", "keep"];
    let (r, stderr) = prune_save("opt-mini-b", &flags, "gptq", &d);
    assert_eq!(common::eval_window_nlls(&d, 1), common::window_nlls(&r["eval"][0]));
    assert!(stderr.contains("stored dense") && stderr.contains("uniform width"), "{stderr}");
    let lin = r["saved"]["linears"].as_array().unwrap();
    let packed: Vec<_> = lin.iter().filter(|l| l["stored_as"] == "packed").collect();
    assert!(!packed.is_empty());
    for l in &packed {
        let (planned, stored) = (l["planned_bits"].as_f64().unwrap(), l["stored_bits"].as_f64().unwrap());
        assert!(planned <= stored && [2.0, 3.0, 4.0, 8.0].contains(&stored), "{l}");
    }
    assert!(lin
        .iter()
        .filter(|l| l["name"].as_str().unwrap().contains("_proj") && l["name"] != "self_attn.out_proj")
        .all(|l| l["stored_as"] == "dense"));
    let q = &common::read_json(&d.join("config.json"))["quantization_config"];
    assert!(q["dynamic"].as_object().unwrap().keys().any(|k| k.starts_with("-:")), "dense linears excluded");
    check_sizes(&d, &r);
    // MI groups have unequal sizes: no linear can be packed, and the export is dense.
    let d = t.path().join("mi");
    let flags = ["--wbits", "4", "--target-avg-bits", "4.0", "--use-mi-grouping", "1", "--n-groups", "10"];
    let (r, stderr) = prune_save("opt-mini-b", &flags, "compressed-tensors", &d);
    assert!(stderr.contains("saved dense instead"), "{stderr}");
    assert_eq!(
        (r["saved"]["format"].as_str(), r["saved"]["requested_format"].as_str()),
        (Some("dense"), Some("compressed-tensors"))
    );
    assert!(common::read_json(&d.join("config.json")).get("quantization_config").is_none());
    assert_eq!(common::eval_window_nlls(&d, 1), common::window_nlls(&r["eval"][0]));
}

#[test]
fn group_aware_act_order_exports_without_a_column_map() {
    // Act-order with groups is group-aware by default: the groups stay the natural column
    // ranges, so the GPTQ export's g_idx is j / 64 with desc_act false, compressed-tensors
    // (which has no g_idx) holds it too, and both read back exactly.
    let t = tempfile::tempdir().unwrap();
    let flags = ["--wbits", "4", "--groupsize", "64", "--act-order"];
    for format in ["gptq", "compressed-tensors"] {
        let d = t.path().join(format);
        let (r, _) = prune_save("opt-mini-b", &flags, format, &d);
        assert_eq!(
            (r["args"]["act_groups"].as_str(), r["saved"]["format"].as_str()),
            (Some("group-aware"), Some(format))
        );
        assert_eq!(common::eval_window_nlls(&d, 1), common::window_nlls(&r["eval"][0]));
        if format == "gptq" {
            assert_eq!(common::read_json(&d.join("config.json"))["quantization_config"]["desc_act"], false);
            let st = candle_core::safetensors::load(d.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
            let g_idx: Vec<i32> = st["model.decoder.layers.1.fc2.g_idx"].to_vec1().unwrap();
            assert_eq!(g_idx, (0..768).map(|j| j / 64).collect::<Vec<i32>>());
        }
    }
}

/// One line on stderr starting "error:", exit ≠ 0.
fn assert_one_line_error(out: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!out.status.success());
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("error:") && lines[0].contains(needle), "'{needle}' not in: {err}");
}

#[test]
fn bad_packed_checkpoints_are_refused_with_one_line() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("g");
    prune_save("opt-mini-b", &["--wbits", "4"], "gptq", &d);
    let eval =
        |dir: &Path| common::run_cli(&["eval", dir.to_str().unwrap(), "--datasets", "wikitext2", "--max-windows", "1"]);
    let edit_config = |name: &str, f: &dyn Fn(&mut serde_json::Value)| -> PathBuf {
        let to = t.path().join(name);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
        let mut cfg = common::read_json(&to.join("config.json"));
        f(&mut cfg);
        std::fs::write(to.join("config.json"), cfg.to_string()).unwrap();
        to
    };
    let awq = edit_config("awq", &|c| c["quantization_config"]["quant_method"] = "awq".into());
    assert_one_line_error(&eval(&awq), "quant_method 'awq' is not supported");
    let b5 = edit_config("b5", &|c| c["quantization_config"]["bits"] = 5.into());
    assert_one_line_error(&eval(&b5), "bits 5 are not supported");
    // The tensors say 4 bits, the config 2: qweight's shape does not fit.
    let b2 = edit_config("b2", &|c| c["quantization_config"]["bits"] = 2.into());
    assert_one_line_error(&eval(&b2), "qweight has shape");
    // A truncated g_idx.
    let cut = edit_config("cut", &|_| {});
    let st = cut.join("model.safetensors");
    let mut m = candle_core::safetensors::load(&st, &candle_core::Device::Cpu).unwrap();
    let k = "model.decoder.layers.0.fc1.g_idx";
    let g = m[k].narrow(0, 0, 100).unwrap();
    m.insert(k.into(), g);
    candle_core::safetensors::save(&m, &st).unwrap();
    assert_one_line_error(&eval(&cut), "layers.0.fc1");
}
