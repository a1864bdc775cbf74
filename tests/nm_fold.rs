//! Deployable n:m (`--nm-permutation … --fold-permutations`) end to end: the saved dense
//! model is an ordinary checkpoint whose every decoder linear carries 2:4 in its own column
//! order, `eval` of it gives the in-run evaluation's window NLLs to the last digit, and the
//! result JSON says per linear what was folded where.

mod common;

use std::path::Path;

/// Small settings: 4 calibration windows, two WikiText-2 windows.
const SMALL: [&str; 6] = ["--nsamples", "4", "--eval-datasets", "wikitext2", "--max-windows", "2"];

/// 2:4 with the magnitude search's sets, folded.
const FOLDED: [&str; 3] = ["--nm-permutation", "magnitude", "--fold-permutations"];

/// `prune FIXTURE c4 --prunen 2 --prunem 4 FLAGS --save DIR [--save-format F]`: the result JSON.
fn prune_2_4(fixture: &str, flags: &[&str], format: &str, dir: &Path) -> serde_json::Value {
    let result = dir.with_extension("json");
    let model = common::fixture(fixture);
    let mut args = vec!["prune", model.to_str().unwrap(), "c4", "--json", result.to_str().unwrap()];
    args.extend_from_slice(&["--prunen", "2", "--prunem", "4"]);
    args.extend_from_slice(flags);
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(&["--save", dir.to_str().unwrap(), "--save-format", format]);
    let out = common::run_cli(&args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    common::read_json(&result)
}

/// The saved checkpoint's decoder linears (2-D `.weight` tensors of the layers), in f32.
fn saved_linears(dir: &Path) -> Vec<(String, Vec<Vec<f32>>)> {
    let t = candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let mut out: Vec<(String, Vec<Vec<f32>>)> = t
        .into_iter()
        .filter(|(k, v)| k.contains("layers.") && k.ends_with(".weight") && v.dims().len() == 2)
        .map(|(k, v)| (k, v.to_dtype(candle_core::DType::F32).unwrap().to_vec2().unwrap()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Rows × groups of 4 consecutive columns with more than 2 nonzeros.
fn groups_over_2_of_4(w: &[Vec<f32>]) -> usize {
    w.iter().map(|row| row.chunks(4).filter(|c| c.iter().filter(|&&x| x != 0.0).count() > 2).count()).sum()
}

/// The run's per-linear entries by name: (deployable, fold.into, fold.moved_channels).
fn fold_entries(r: &serde_json::Value) -> Vec<(String, String, Option<Vec<String>>, usize)> {
    r["linears"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let into =
                l["fold"]["into"].as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect());
            (
                l["name"].as_str().unwrap().to_string(),
                l["plan"]["nm_permutation"]["deployable"].as_str().unwrap().to_string(),
                into,
                l["fold"]["moved_channels"].as_u64().unwrap_or(0) as usize,
            )
        })
        .collect()
}

/// The checks every folded run passes: saved weights 2:4 in natural order (`n_linears`
/// per layer, `layers` layers), the JSON's fold entries as `expected` gives them (consumer →
/// producers; every other linear consecutive), channels moved at each consumer in some
/// layer, and `eval` of the save equal to the in-run NLLs.
fn check_folded(r: &serde_json::Value, dir: &Path, (layers, n_linears): (usize, usize), expected: &[(&str, &[&str])]) {
    let linears = saved_linears(dir);
    assert_eq!(linears.len(), layers * n_linears, "{:?}", linears.iter().map(|l| &l.0).collect::<Vec<_>>());
    for (name, w) in &linears {
        assert_eq!(groups_over_2_of_4(w), 0, "{name}: 2:4 in its own column order");
    }
    let entries = fold_entries(r);
    assert_eq!(entries.len(), layers * n_linears);
    for (name, deployable, into, _) in &entries {
        match expected.iter().find(|(consumer, _)| consumer == name) {
            Some((_, producers)) => {
                assert_eq!(deployable, "folded", "{name}");
                assert_eq!(into.as_deref(), Some(&producers.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]));
            }
            None => {
                assert_eq!(deployable, "consecutive: residual stream", "{name}");
                assert!(into.is_none(), "{name}");
            }
        }
    }
    for (consumer, _) in expected {
        let moved: usize = entries.iter().filter(|e| e.0 == *consumer).map(|e| e.3).sum();
        assert!(moved > 0, "{consumer}: the magnitude search moved no channel in any layer, so nothing was tested");
    }
    let in_run = common::window_nlls(&r["eval"][0]);
    assert_eq!(in_run.len(), 2);
    assert_eq!(common::eval_window_nlls(dir, 2), in_run, "the saved model evaluates as the in-run one");
}

const OPT_FOLDS: [(&str, &[&str]); 2] = [("self_attn.out_proj", &["self_attn.v_proj"]), ("fc2", &["fc1"])];

#[test]
fn opt_2_4_with_4_bits_folds_into_fc1_and_v_rows() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("a-2of4-w4");
    let r = prune_2_4("opt-mini-a", &[&["--wbits", "4"][..], &FOLDED].concat(), "dense", &dir);
    assert_eq!(r["args"]["fold_permutations"], true);
    check_folded(&r, &dir, (8, 6), &OPT_FOLDS);
}

#[test]
fn the_gptq_export_of_a_folded_run_holds_the_folded_codes() {
    // The kept codes and grids follow the fold (fc1's and v's rows, fc2's and out_proj's
    // columns): the GPTQ export dequantizes to the weights the run evaluated.
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("a-2of4-w4-gptq");
    let r = prune_2_4("opt-mini-a", &[&["--wbits", "4"][..], &FOLDED].concat(), "gptq", &dir);
    assert!(fold_entries(&r).iter().any(|e| e.3 > 0), "nothing moved");
    assert_eq!(
        common::eval_window_nlls(&dir, 2),
        common::window_nlls(&r["eval"][0]),
        "the GPTQ export evaluates as the run's model"
    );
}

#[test]
fn llama_gqa_2_4_folds_into_gate_up_and_v_rows_within_value_heads() {
    // 8 query heads of 32 over 2 value heads: o_proj's sets inside heads, one partition per
    // value head shared by its 4 query heads.
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("gqa-2of4");
    let r = prune_2_4("llama-rand-gqa", &FOLDED, "dense", &dir);
    check_folded(
        &r,
        &dir,
        (4, 7),
        &[("self_attn.o_proj", &["self_attn.v_proj"]), ("mlp.down_proj", &["mlp.gate_proj", "mlp.up_proj"])],
    );
}
