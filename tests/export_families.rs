//! `--save-format gptq | compressed-tensors` for the rotary families: on `llama-rand-gqa`
//! (grouped-query attention, untied head, bf16) and `qwen2-rand` (q/k/v bias, tied head, bf16)
//! each packed export, read back by `eval`, gives the window NLLs of the dense export of the
//! same run to the last digit; its tensors carry transformers' names from the family's table
//! (biases dense beside the packed weights, a tied head not written); q/k/v and gate/up are
//! stored alike (vLLM's fused `qkv_proj`, `gate_up_proj`); the dtype rules refuse with one line.

mod common;

use std::path::{Path, PathBuf};

/// Fast settings: 8 calibration windows, two WikiText-2 windows.
const FAST: [&str; 6] = ["--nsamples", "8", "--eval-datasets", "wikitext2", "--max-windows", "2"];

/// `prune FIXTURE c4 FLAGS FAST --save DIR --save-format F`: the result JSON and stderr.
fn prune_save(fixture: &str, flags: &[&str], format: &str, dir: &Path) -> (serde_json::Value, String) {
    common::prune_save(fixture, flags, &FAST, format, dir)
}

/// The decoder linears of a rotary-family fixture, from its config.json: (module, out, in, bias).
fn linears(fixture: &str) -> Vec<(String, usize, usize, bool)> {
    let cfg = common::read_json(&common::fixture(fixture).join("config.json"));
    let n = |k: &str| cfg[k].as_u64().unwrap() as usize;
    let (h, f, layers, heads, kv) = (
        n("hidden_size"),
        n("intermediate_size"),
        n("num_hidden_layers"),
        n("num_attention_heads"),
        n("num_key_value_heads"),
    );
    let head_dim = cfg.get("head_dim").and_then(|v| v.as_u64()).map_or(h / heads, |d| d as usize);
    let qkv_bias = cfg["model_type"] == "qwen2";
    let mut v = Vec::new();
    for i in 0..layers {
        for (m, o, k, b) in [
            ("self_attn.q_proj", heads * head_dim, h, qkv_bias),
            ("self_attn.k_proj", kv * head_dim, h, qkv_bias),
            ("self_attn.v_proj", kv * head_dim, h, qkv_bias),
            ("self_attn.o_proj", h, heads * head_dim, false),
            ("mlp.gate_proj", f, h, false),
            ("mlp.up_proj", f, h, false),
            ("mlp.down_proj", h, f, false),
        ] {
            v.push((format!("model.layers.{i}.{m}"), o, k, b));
        }
    }
    v
}

fn expect(h: &common::SafetensorsHeader, name: &str, dtype: &str, shape: &[usize]) {
    let (d, s, _) = h.get(name).unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!((d.as_str(), s.as_slice()), (dtype, shape), "{name}");
}

/// What the packed tensors of every linear must be (docs/formats.md), `bits` wide, `group`
/// columns a group; biases dense in `float` beside them; the head as the source has it.
fn check_files(dir: &Path, fixture: &str, format: &str, bits: usize, group: Option<usize>, float: &str) {
    let h = common::safetensors_header(&dir.join("model.safetensors"));
    for (p, out, inp, bias) in linears(fixture) {
        let groups = group.map_or(1, |g| inp.div_ceil(g));
        if format == "gptq" {
            expect(&h, &format!("{p}.qweight"), "I32", &[inp * bits / 32, out]);
            expect(&h, &format!("{p}.qzeros"), "I32", &[groups, out * bits / 32]);
            expect(&h, &format!("{p}.scales"), "F16", &[groups, out]);
            expect(&h, &format!("{p}.g_idx"), "I32", &[inp]);
        } else {
            expect(&h, &format!("{p}.weight_packed"), "I32", &[out, (inp * bits).div_ceil(32)]);
            expect(&h, &format!("{p}.weight_scale"), float, &[out, groups]);
            expect(&h, &format!("{p}.weight_zero_point"), "I32", &[(out * bits).div_ceil(32), groups]);
            expect(&h, &format!("{p}.weight_shape"), "I64", &[2]);
        }
        assert!(!h.contains_key(&format!("{p}.weight")), "{p}: dense weight beside the packed one");
        match bias {
            true => expect(&h, &format!("{p}.bias"), float, &[out]),
            false => assert!(!h.contains_key(&format!("{p}.bias")), "{p}: a bias the family does not have"),
        }
    }
    let cfg = common::read_json(&common::fixture(fixture).join("config.json"));
    let tied = cfg["tie_word_embeddings"].as_bool().unwrap();
    let (vocab, hidden) = (cfg["vocab_size"].as_u64().unwrap() as usize, cfg["hidden_size"].as_u64().unwrap() as usize);
    expect(&h, "model.embed_tokens.weight", float, &[vocab, hidden]);
    expect(&h, "model.norm.weight", float, &[hidden]);
    assert_eq!(h.contains_key("lm_head.weight"), !tied, "{fixture}: the head as the source has it");
    // The family's own config, with the stored dtype and the format's quantization_config.
    let saved = common::read_json(&dir.join("config.json"));
    let dtype_key = if cfg.get("torch_dtype").is_some() { "torch_dtype" } else { "dtype" };
    let want_dtype = if float == "F16" { "float16" } else { "bfloat16" };
    assert_eq!(saved[dtype_key], want_dtype, "{fixture} {format}");
    for (k, v) in cfg.as_object().unwrap() {
        if k != dtype_key {
            assert_eq!(&saved[k], v, "{fixture} {format}: config key {k}");
        }
    }
    let q = &saved["quantization_config"];
    if format == "gptq" {
        assert_eq!((q["quant_method"].as_str(), q["bits"].as_u64()), (Some("gptq"), Some(bits as u64)));
        assert_eq!(q["group_size"], group.map_or(-1, |g| g as i64));
        assert!(q.get("dynamic").is_none(), "a uniform export needs no dynamic overrides");
        assert_eq!(q, &common::read_json(&dir.join("quantize_config.json")));
    } else {
        assert_eq!(q["quant_method"], "compressed-tensors");
        let groups = q["config_groups"].as_object().unwrap();
        assert_eq!(groups.len(), 1, "one width: one config group");
        let g = groups.values().next().unwrap();
        assert_eq!(g["targets"].as_array().unwrap().len(), linears(fixture).len(), "explicit targets");
        assert_eq!(g["weights"]["strategy"], if group.is_some() { "group" } else { "channel" });
        assert_eq!(q["ignore"], serde_json::json!(["lm_head"]));
    }
}

/// One run saved dense and in `format`: the packed export's `eval` equals the dense export's,
/// which equals the run's own evaluation, window by window, to the last digit.
fn packed_equals_dense(fixture: &str, flags: &[&str], format: &str, bits: usize, group: Option<usize>, float: &str) {
    let t = tempfile::tempdir().unwrap();
    let (dense_dir, packed_dir): (PathBuf, PathBuf) = (t.path().join("dense"), t.path().join(format));
    let (dense_run, _) = prune_save(fixture, flags, "dense", &dense_dir);
    let dense = common::eval_window_nlls(&dense_dir, 2);
    assert_eq!(dense, common::window_nlls(&dense_run["eval"][0]), "{fixture}: the dense export is the evaluated model");
    let (r, _) = prune_save(fixture, flags, format, &packed_dir);
    assert_eq!(common::window_nlls(&r["eval"][0]), dense, "{fixture} {flags:?}: same run, same model");
    assert_eq!(common::eval_window_nlls(&packed_dir, 2), dense, "{fixture} {flags:?}: {format} export read back");
    check_files(&packed_dir, fixture, format, bits, group, float);
    let lin = r["saved"]["linears"].as_array().unwrap();
    assert_eq!(lin.len(), linears(fixture).len());
    assert!(lin.iter().all(|l| l["stored_as"] == "packed" && l["stored_bits"].as_f64() == Some(bits as f64)));
    assert_eq!(r["saved"]["format"], format);
}

#[test]
fn llama_gptq_4bit_in_f16() {
    packed_equals_dense("llama-rand-gqa", &["--wbits", "4", "--save-dtype", "f16"], "gptq", 4, None, "F16");
}

#[test]
fn llama_gptq_4bit_g64_in_f16() {
    // 704 (the MLP's width) is no multiple of 128; 64 divides every width.
    let flags = ["--wbits", "4", "--groupsize", "64", "--save-dtype", "f16"];
    packed_equals_dense("llama-rand-gqa", &flags, "gptq", 4, Some(64), "F16");
}

#[test]
fn llama_compressed_tensors_4bit_in_bf16() {
    packed_equals_dense("llama-rand-gqa", &["--wbits", "4"], "compressed-tensors", 4, None, "BF16");
}

#[test]
fn llama_compressed_tensors_4bit_g64_in_bf16() {
    let flags = ["--wbits", "4", "--groupsize", "64"];
    packed_equals_dense("llama-rand-gqa", &flags, "compressed-tensors", 4, Some(64), "BF16");
}

#[test]
fn qwen2_gptq_g32_with_bias_and_tied_head() {
    // Widths 128, 64 and 352: groups of 32 divide them all.
    let flags = ["--wbits", "4", "--groupsize", "32", "--save-dtype", "f16"];
    packed_equals_dense("qwen2-rand", &flags, "gptq", 4, Some(32), "F16");
}

#[test]
fn qwen2_compressed_tensors_with_bias_and_tied_head() {
    packed_equals_dense("qwen2-rand", &["--sparsity", "0.5", "--wbits", "4"], "compressed-tensors", 4, None, "BF16");
}

/// Importance-rank groups are ranked per linear, so linears sharing an input get different
/// groups: q/k/v and gate/up are stored dense (engines serve each set as one module with one
/// g_idx), the linears alone at their input (o, down) packed where GPTQ kernels read them.
#[test]
fn linears_sharing_an_input_are_stored_alike() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("enhanced");
    let flags = [
        "--wbits",
        "4",
        "--target-avg-bits",
        "4.0",
        "--use-mi-grouping",
        "0",
        "--n-groups",
        "2",
        "--leftover",
        "keep",
        "--save-dtype",
        "f16",
    ];
    let (r, stderr) = prune_save("llama-rand-gqa", &flags, "gptq", &d);
    assert_eq!(
        common::eval_window_nlls(&d, 2),
        common::window_nlls(&r["eval"][0]),
        "read back exactly, packed or dense"
    );
    let lin = r["saved"]["linears"].as_array().unwrap();
    let stored = |name: &str| -> Vec<&serde_json::Value> { lin.iter().filter(|l| l["name"] == name).collect() };
    for (name, fused) in [
        ("self_attn.q_proj", "qkv_proj"),
        ("self_attn.k_proj", "qkv_proj"),
        ("self_attn.v_proj", "qkv_proj"),
        ("mlp.gate_proj", "gate_up_proj"),
        ("mlp.up_proj", "gate_up_proj"),
    ] {
        for l in stored(name) {
            assert_eq!(l["stored_as"], "dense", "{l}");
            assert!(l["why_dense"].as_str().unwrap().contains(&format!("(vLLM's {fused}")), "{l}");
        }
    }
    // o_proj (256 inputs) and down_proj (704 = 2 · 352, groups of 352) are alone at their input:
    // packed where the group size is a multiple of 32 (256 / 2 = 128; 352).
    assert!(stored("self_attn.o_proj")
        .iter()
        .chain(stored("mlp.down_proj").iter())
        .all(|l| l["stored_as"] == "packed"));
    let q = &common::read_json(&d.join("config.json"))["quantization_config"];
    let dynamic = q["dynamic"].as_object().unwrap();
    assert!(dynamic.contains_key(r"-:^model\.layers\.0\.mlp\.(gate_proj|up_proj|gate_up_proj)$"), "{dynamic:?}");
    assert!(dynamic.contains_key(r"-:^model\.layers\.3\.self_attn\.(q_proj|k_proj|v_proj|qkv_proj)$"));
    assert!(stderr.contains("stored dense"), "{stderr}");
}

/// One line on stderr starting "error:", exit ≠ 0, nothing saved.
fn assert_refused(args: &[&str], needle: &str) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("saved");
    let model = common::fixture("llama-rand-gqa");
    let mut all = vec!["prune", model.to_str().unwrap(), "c4", "--save", d.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend_from_slice(&FAST);
    let out = common::run_cli(&all);
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!out.status.success(), "{args:?} was not refused");
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("error:") && lines[0].contains(needle), "'{needle}' not in: {err}");
    assert!(!d.exists(), "nothing saved");
}

#[test]
fn what_a_format_cannot_hold_is_refused_with_one_line() {
    // GPTQ stores f16: a bf16 model needs --save-dtype f16.
    assert_refused(&["--wbits", "4", "--save-format", "gptq"], "give --save-dtype f16");
    // compressed-tensors has no short last group: 128 does not divide the MLP's 704.
    assert_refused(
        &["--wbits", "4", "--groupsize", "128", "--save-format", "compressed-tensors"],
        "--groupsize 128 does not divide the layer width 704",
    );
    // A compute dtype that does not hold the stored one exactly.
    assert_refused(
        &["--wbits", "4", "--save-format", "compressed-tensors", "--dtype", "f16", "--save-dtype", "bf16"],
        "--save-dtype bf16: the model would compute in F16",
    );
}
