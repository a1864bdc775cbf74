//! The mission's command as a user with internet runs it: the model and the three corpora
//! from the hub (a local stand-in serving the hub's exact layouts), from a folder with no
//! ../shared beside it, no --data-dir and no SPARSEGPT_MI_DATA_DIR.

mod common;

use common::hub_files as hf;
use common::hub_server::HubServer;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The binary run from `cwd` with the hub settings of `env` and nothing from the test
/// environment that would point it at ../shared.
fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut c = Command::new(common::bin());
    c.current_dir(cwd).args(args).env_remove("SPARSEGPT_MI_DATA_DIR").env_remove("HF_TOKEN").env("HF_HUB_OFFLINE", "0");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn window_nlls(r: &serde_json::Value) -> Vec<(String, Vec<f64>)> {
    let evals = r["eval"].as_array().or(r["results"].as_array()).unwrap();
    evals
        .iter()
        .map(|e| {
            let w = e["window_mean_nll"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            (e["dataset"].as_str().unwrap().to_string(), w)
        })
        .collect()
}

/// A model directory's files, to serve as a hub repo.
fn repo_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn hub_corpora_give_the_data_dir_perplexity_to_the_last_digit_and_stay_cached() {
    let server = HubServer::start();
    hf::serve_all(&server);
    let fixture = common::fixture("opt-mini-b");
    server.add_model("testorg/opt-mini-b", repo_files(&fixture));
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("hf_home");
    let endpoint = server.endpoint();
    let env = [("HF_ENDPOINT", endpoint.as_str()), ("HF_HOME", home.to_str().unwrap())];
    let flags = ["c4", "--sparsity", "0.5", "--nsamples", "2", "--max-windows", "1"];
    let prune = |cwd: &Path, model: &str, json: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let mut a = vec!["prune", model];
        a.extend(flags);
        a.extend(["--json", json.to_str().unwrap()]);
        a.extend(extra);
        let (ok, err) = run(cwd, &a, env);
        assert!(ok, "{a:?}: {err}");
    };
    let from_hub = t.path().join("hub.json");
    prune(t.path(), "testorg/opt-mini-b", &from_hub, &[], &env);
    let from_dir = t.path().join("dir.json");
    let data_dir = hf::data_dir().to_str().unwrap().to_string();
    prune(t.path(), fixture.to_str().unwrap(), &from_dir, &["--data-dir", &data_dir], &[]);
    let (hub, dir) = (json(&from_hub), json(&from_dir));
    assert_eq!(window_nlls(&hub), window_nlls(&dir), "every window of the three corpora");
    assert_eq!(window_nlls(&hub).len(), 3);
    assert_eq!(hub["calibration_windows"], dir["calibration_windows"], "c4 calibration draws the same windows");
    // The report says where each corpus came from: the hub repo, file and resolved commit.
    let data = hub["data"].as_array().unwrap();
    assert_eq!(data.len(), 4, "c4 calibration + three evaluation corpora: {data:?}");
    for d in data {
        let f = &d["files"][0];
        assert_eq!(f["source"], "hub");
        assert_eq!(f["commit"].as_str().unwrap().len(), 40, "{f}");
    }
    assert!(dir["data"][0]["files"][0]["sha256"].as_str().unwrap().len() == 64);

    // A second run is answered by the cache: no request at all.
    server.clear_log();
    prune(t.path(), "testorg/opt-mini-b", &t.path().join("again.json"), &[], &env);
    assert_eq!(server.request_count(), 0, "{:?}", server.requests());
    // And the cache works with the hub gone, offline or not.
    drop(server);
    let gone = [("HF_ENDPOINT", "http://127.0.0.1:9"), ("HF_HOME", home.to_str().unwrap())];
    prune(t.path(), "testorg/opt-mini-b", &t.path().join("gone.json"), &[], &gone);
    let offline = [gone[0], gone[1], ("HF_HUB_OFFLINE", "1")];
    prune(t.path(), "testorg/opt-mini-b", &t.path().join("offline.json"), &[], &offline);
    assert_eq!(window_nlls(&json(&t.path().join("offline.json"))), window_nlls(&hub));
}

#[test]
fn cold_cache_offline_names_the_missing_corpora_and_both_remedies_before_any_model_work() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("hf_home");
    let env = [("HF_HOME", home.to_str().unwrap()), ("HF_HUB_OFFLINE", "1"), ("HF_ENDPOINT", "http://127.0.0.1:9")];
    // The model does not exist anywhere: the data check comes first, so that is not what fails.
    let (ok, err) = run(t.path(), &["prune", "nobody/no-model", "c4", "--sparsity", "0.5"], &env);
    assert!(!ok);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    for want in ["allenai/c4", "Salesforce/wikitext", "ptb_text_only", "--data-dir", "HF_HUB_OFFLINE"] {
        assert!(lines[0].contains(want), "'{want}' not in: {err}");
    }
    assert!(!lines[0].contains("no-model"), "the model was looked at first: {err}");
}

/// facebook/opt-125m's config.json, as the hub serves it.
const OPT_125M_CONFIG: &str = r#"{
  "_name_or_path": "facebook/opt-125m", "_remove_final_layer_norm": false, "activation_dropout": 0.0,
  "activation_function": "relu", "architectures": ["OPTForCausalLM"], "attention_dropout": 0.0,
  "bos_token_id": 2, "do_layer_norm_before": true, "dropout": 0.1, "enable_bias": true,
  "eos_token_id": 2, "ffn_dim": 3072, "hidden_size": 768, "init_std": 0.02, "layerdrop": 0.0,
  "max_position_embeddings": 2048, "model_type": "opt", "num_attention_heads": 12,
  "num_hidden_layers": 12, "pad_token_id": 1, "prefix": "</s>", "torch_dtype": "float16",
  "transformers_version": "4.21.0.dev0", "use_cache": true, "vocab_size": 50272,
  "word_embed_proj_dim": 768
}"#;

/// A random-weight checkpoint with facebook/opt-125m's exact configuration, in that hub repo's
/// layout: pytorch_model.bin with keys without `model.`, config.json, vocab.json + merges.txt
/// and no tokenizer.json. Linear weights ~ N(0, 0.02) as OPT's initialisation, layer norms 1 and
/// 0; token embeddings ~ N(0, 0.2), so that token identity survives twelve random layers (with
/// OPT's 0.02 the deep layers' inputs collapse to nearly one vector for every token, and whole
/// fc2 input channels go dead).
fn random_opt_125m(dir: &Path) -> PathBuf {
    use candle_core::{DType, Device, Tensor};
    let (h, ffn, layers, vocab, pos) = (768usize, 3072usize, 12usize, 50272usize, 2048 + 2);
    let mut rng = sparsegpt_mi::rng::seeded(125);
    let mut normal = |n: usize, std: f32| -> Vec<f32> {
        // Irwin–Hall: the sum of 12 uniforms minus 6 is close to a standard normal.
        (0..n)
            .map(|_| ((0..12).map(|_| sparsegpt_mi::rng::uniform(&mut rng)).sum::<f64>() - 6.0) as f32 * std)
            .collect()
    };
    let mut t = std::collections::HashMap::new();
    let mut put = |name: String, v: Vec<f32>, shape: &[usize]| {
        t.insert(name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap());
    };
    put("decoder.embed_tokens.weight".into(), normal(vocab * h, 0.2), &[vocab, h]);
    put("decoder.embed_positions.weight".into(), normal(pos * h, 0.02), &[pos, h]);
    put("decoder.final_layer_norm.weight".into(), vec![1.0; h], &[h]);
    put("decoder.final_layer_norm.bias".into(), vec![0.0; h], &[h]);
    for i in 0..layers {
        let p = format!("decoder.layers.{i}");
        for (name, out, inp) in [
            ("self_attn.q_proj", h, h),
            ("self_attn.k_proj", h, h),
            ("self_attn.v_proj", h, h),
            ("self_attn.out_proj", h, h),
            ("fc1", ffn, h),
            ("fc2", h, ffn),
        ] {
            put(format!("{p}.{name}.weight"), normal(out * inp, 0.02), &[out, inp]);
            put(format!("{p}.{name}.bias"), vec![0.0; out], &[out]);
        }
        for ln in ["self_attn_layer_norm", "final_layer_norm"] {
            put(format!("{p}.{ln}.weight"), vec![1.0; h], &[h]);
            put(format!("{p}.{ln}.bias"), vec![0.0; h], &[h]);
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    let st = dir.join("weights.safetensors");
    candle_core::safetensors::save(&t, &st).unwrap();
    let helper = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/write_pth.py");
    let status = Command::new("python3").arg(helper).arg(&st).arg(dir.join("pytorch_model.bin")).status().unwrap();
    assert!(status.success(), "python3 is needed to write the PyTorch-format checkpoint");
    std::fs::remove_file(&st).unwrap();
    std::fs::write(dir.join("config.json"), OPT_125M_CONFIG).unwrap();
    let tok = common::data_dir().join("opt-tokenizer");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(tok.join(f), dir.join(f)).unwrap();
    }
    dir.to_path_buf()
}

#[test]
fn mission_command_on_random_opt_125m_from_the_hub() {
    let t = tempfile::tempdir().unwrap();
    let repo = random_opt_125m(&t.path().join("repo"));
    let server = HubServer::start();
    hf::serve_all(&server);
    server.add_model("facebook/opt-125m", repo_files(&repo));
    std::fs::remove_dir_all(&repo).unwrap();
    let work = t.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let home = t.path().join("hf_home");
    let endpoint = server.endpoint();
    let env = [("HF_ENDPOINT", endpoint.as_str()), ("HF_HOME", home.to_str().unwrap())];
    // The mission's command as a user types it, plus what CI time needs.
    let mission =
        "prune facebook/opt-125m c4 --sparsity 0.5 --wbits 4 --target-avg-bits 4.0 --use-mi-grouping 1 --n-groups 10";
    let mut args: Vec<&str> = mission.split(' ').collect();
    args.extend(["--nsamples", "2", "--max-windows", "1", "--json", "result.json", "--save", "saved"]);
    let (ok, err) = run(&work, &args, &env);
    assert!(ok, "{err}");
    let r = json(&work.join("result.json"));
    assert_eq!(r["mode"], "mi");
    // The masks prune half; 4-bit grids round some more weights to exactly zero.
    let pruned = r["pruned_fraction"].as_f64().unwrap();
    assert!((pruned - 0.5).abs() <= 1e-3, "pruned fraction {pruned}");
    assert!(r["zero_fraction"].as_f64().unwrap() >= pruned);
    assert_eq!(r["linears"].as_array().unwrap().len(), 72);
    for l in r["linears"].as_array().unwrap() {
        let b = l["avg_bits_with_metadata"].as_f64().unwrap();
        assert!(b <= 4.0 + 1e-12, "{} {}: {b} bits with metadata", l["layer"], l["name"]);
    }
    assert!(r["bits"]["avg_bits_with_metadata"].as_f64().unwrap() <= 4.0);
    let nlls = window_nlls(&r);
    assert_eq!(nlls.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>(), ["wikitext2", "ptb", "c4"]);
    for (d, ppl) in r["ppl"].as_object().unwrap() {
        assert!(ppl.as_f64().is_some_and(f64::is_finite), "{d}: {ppl}");
    }
    // The saved model reloads with the same perplexity.
    let (ok, err) = run(&work, &["eval", "saved", "--max-windows", "1", "--json", "eval.json"], &env);
    assert!(ok, "{err}");
    assert_eq!(window_nlls(&json(&work.join("eval.json"))), nlls);
}
