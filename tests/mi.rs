//! Mutual-information grouping: statistics, bit budgets, determinism, the four modes.

mod common;

use candle_core::Tensor;
use sparsegpt_mi::mixed::mutual_info;
use sparsegpt_mi::model::InputSite;
use sparsegpt_mi::pipeline::hessian::HessianAccumulation;
use sparsegpt_mi::pipeline::statistics::SiteStatistics;
use std::process::Command;

#[test]
fn mi_from_accumulated_moments_equals_mi_from_stored_activations() {
    let (model, tok) = common::load("opt-mini-b");
    let docs = sparsegpt_mi::data::calibration_documents(sparsegpt_mi::data::Corpus::C4, &common::data_dir()).unwrap();
    let calib = sparsegpt_mi::data::calibration::build(
        &docs,
        &tok,
        2,
        2048,
        0,
        sparsegpt_mi::data::calibration::SamplerKind::Python,
    )
    .unwrap();
    let mask = model.causal_mask(2048).unwrap();
    for site in [InputSite::Attn, InputSite::Fc2] {
        let mut acc = None;
        let mut stored: Vec<Vec<f32>> = Vec::new();
        for w in &calib.windows {
            let x = model.embed(&Tensor::from_vec(w.clone(), (1, 2048), &model.device).unwrap()).unwrap();
            let mut obs = |s: InputSite, a: &Tensor| -> anyhow::Result<()> {
                if s == site {
                    let d = *a.dims().last().unwrap();
                    acc.get_or_insert_with(|| SiteStatistics::new(d, HessianAccumulation::Sum, true, None)).add(a)?;
                    let flat: Vec<f32> = a.flatten_all()?.to_vec1()?;
                    stored.extend(flat.chunks(d).map(|c| c.to_vec()));
                }
                Ok(())
            };
            model.layers[0].forward(&x, &mask, Some(&mut obs)).unwrap();
        }
        let stats = acc.unwrap();
        let acc = stats.moments.as_ref().unwrap();
        let from_moments = mutual_info::gaussian_mi(&mutual_info::correlation_from_moments(
            &acc.sum_xxt().unwrap(),
            &acc.sum_x,
            acc.tokens,
        ));
        // Direct two-pass estimate in f64 from the stored tokens.
        let d = stored[0].len();
        let n = stored.len() as f64;
        let mean: Vec<f64> = (0..d).map(|j| stored.iter().map(|t| t[j] as f64).sum::<f64>() / n).collect();
        let centred: Vec<Vec<f64>> = (0..d).map(|j| stored.iter().map(|t| t[j] as f64 - mean[j]).collect()).collect();
        let var: Vec<f64> = centred.iter().map(|c| c.iter().map(|v| v * v).sum::<f64>() / n).collect();
        let vmax = var.iter().cloned().fold(0.0, f64::max);
        let mut worst = 0f64;
        for i in 0..d {
            for j in (i + 1)..d {
                let direct = if var[i] <= 1e-12 * vmax || var[j] <= 1e-12 * vmax {
                    0.0
                } else {
                    let cov = centred[i].iter().zip(&centred[j]).map(|(a, b)| a * b).sum::<f64>() / n;
                    mutual_info::gaussian_mi_of(cov / (var[i] * var[j]).sqrt())
                };
                worst = worst.max((from_moments.get(i, j) - direct).abs());
            }
        }
        assert!(worst <= 1e-4, "{site:?}: max |ΔMI| = {worst}");
    }
}

fn prune(extra: &[&str], dir: &std::path::Path, name: &str) -> serde_json::Value {
    let json = dir.join(format!("{name}.json"));
    let model = common::fixture("opt-mini-b");
    let data = common::data_dir();
    let mut a = vec!["prune", model.to_str().unwrap(), "c4", "--sparsity", "0.5", "--wbits", "4", "--nsamples", "4"];
    a.extend_from_slice(&["--eval-datasets", "wikitext2", "--max-windows", "1", "--json", json.to_str().unwrap()]);
    a.extend_from_slice(&["--data-dir", data.to_str().unwrap()]);
    a.extend_from_slice(extra);
    let out = Command::new(common::bin()).args(&a).output().unwrap();
    assert!(out.status.success(), "{a:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn plans(r: &serde_json::Value) -> Vec<serde_json::Value> {
    r["linears"].as_array().unwrap().iter().map(|l| l["plan"].clone()).collect()
}

#[test]
fn every_mode_stays_within_the_bit_budget_and_mi_runs_are_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let target = 3.0;
    // --leftover keep: whole groups (spending the leftover, the default, moves single columns
    // between groups, differently for MI and the control; checked at the end).
    let common_flags = ["--target-avg-bits", "3.0", "--n-groups", "4", "--leftover", "keep"];
    let mut mi_flags = vec!["--use-mi-grouping", "1"];
    mi_flags.extend_from_slice(&common_flags);
    let mi = prune(&mi_flags, t.path(), "mi");
    let mut rnd_flags = vec!["--use-mi-grouping", "1", "--grouping", "random"];
    rnd_flags.extend_from_slice(&common_flags);
    let random = prune(&rnd_flags, t.path(), "random");
    let mut enh_flags = vec!["--use-mi-grouping", "0"];
    enh_flags.extend_from_slice(&common_flags);
    let enhanced = prune(&enh_flags, t.path(), "enhanced");
    for (r, mode) in [(&mi, "mi"), (&random, "random"), (&enhanced, "enhanced")] {
        assert_eq!(r["mode"], mode);
        for l in r["linears"].as_array().unwrap() {
            let b = l["avg_bits_with_metadata"].as_f64().unwrap();
            assert!(b <= target + 1e-12, "{mode} {} {}: {b}", l["layer"], l["name"]);
            assert!(b > target - 0.5, "{mode}: budget left unused ({b})");
            assert_eq!(l["plan"]["k"], 4);
        }
        assert!(r["bits"]["avg_bits_with_metadata"].as_f64().unwrap() <= target);
    }
    // The control keeps MI's group sizes (order may differ). Only layer 0 sees the same
    // activations in both runs; later layers see differently compressed predecessors.
    for (a, b) in plans(&mi).iter().zip(plans(&random)).take(6) {
        let mut sa: Vec<u64> = a["group_sizes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let mut sb: Vec<u64> = b["group_sizes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        sa.sort();
        sb.sort();
        assert_eq!(sa, sb);
    }
    // Same seed: same groups, same bits, same perplexity.
    let again = prune(&mi_flags, t.path(), "mi2");
    for (a, b) in plans(&mi).iter().zip(plans(&again)) {
        assert_eq!(a["group_sizes"], b["group_sizes"]);
        assert_eq!(a["group_bits"], b["group_bits"]);
    }
    assert_eq!(mi["ppl"]["wikitext2"], again["ppl"]["wikitext2"]);
    // The default spends the leftover: every linear within 0.01 bits of the target, under it.
    let spent = prune(&["--use-mi-grouping", "1", "--target-avg-bits", "3.0", "--n-groups", "4"], t.path(), "spent");
    for l in spent["linears"].as_array().unwrap() {
        let b = l["avg_bits_with_metadata"].as_f64().unwrap();
        assert!(b <= target + 1e-12 && b > target - 0.01, "spent {} {}: {b}", l["layer"], l["name"]);
    }
}

#[test]
fn mi_subcommand_writes_heatmap_and_matrix() {
    let t = tempfile::tempdir().unwrap();
    let model = common::fixture("opt-mini-b");
    let out = Command::new(common::bin())
        .args(["mi", model.to_str().unwrap(), "--layer", "1", "--linear", "fc1", "--nsamples", "2", "--n-groups", "3"])
        // The reservoir path: histogram MI from 512 stored tokens.
        .args(["--mi-method", "hist", "--reservoir", "512"])
        .args(["--out", t.path().to_str().unwrap(), "--data-dir", common::data_dir().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(t.path().join("mi_L1_fc1.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("mi_L1_fc1.json")).unwrap()).unwrap();
    assert_eq!(j["channels"], 192);
    assert_eq!(j["k"], 3);
    assert_eq!(j["mi_ordered"].as_array().unwrap().len(), 192 * 192);
    assert_eq!(j["mi_method"], "hist");
    let mi: Vec<f64> = j["mi_ordered"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(mi.iter().all(|&v| v >= 0.0 && v.is_finite()));
    assert!(mi.iter().any(|&v| v > 0.05), "some channel pairs share information");
    let sizes: u64 = j["group_sizes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(sizes, 192);
}

#[test]
fn the_studys_controls_run_end_to_end() {
    // Fixture B at 60% sparsity: (a) MI groups in place (static groups) at the stored bits of
    // uniform 3-bit per row: within 0.01 of them, every linear's weights on its groups' grids;
    // (b) MI scale groups at 3-bit g64: --groupsize 64's bits, at most 8 values per row and
    // group; (c) 2:4 over MI channel sets: half the weights pruned.
    let t = tempfile::tempdir().unwrap();
    let model = common::fixture("opt-mini-b");
    let data = common::data_dir();
    let run = |flags: &[&str], name: &str| -> serde_json::Value {
        let json = t.path().join(format!("{name}.json"));
        let mut a = vec!["prune", model.to_str().unwrap(), "c4", "--nsamples", "4", "--eval-datasets", "wikitext2"];
        a.extend_from_slice(&[
            "--max-windows",
            "1",
            "--json",
            json.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        a.extend_from_slice(flags);
        let out = Command::new(common::bin()).args(&a).output().unwrap();
        assert!(out.status.success(), "{a:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
    };
    let uniform = run(&["--sparsity", "0.6", "--wbits", "3"], "u3");
    let target = uniform["bits"]["avg_bits_with_metadata"].as_f64().unwrap();
    let target_flag = format!("{target:.6}");
    let ident = run(
        &[
            "--sparsity",
            "0.6",
            "--use-mi-grouping",
            "1",
            "--target-avg-bits",
            &target_flag,
            "--n-groups",
            "4",
            "--order",
            "identity",
        ],
        "mi_identity",
    );
    let b = ident["bits"]["avg_bits_with_metadata"].as_f64().unwrap();
    assert!((b - target).abs() <= 0.01 && b <= target + 1e-6, "{b} vs {target}");
    for l in ident["linears"].as_array().unwrap() {
        assert_eq!(l["plan"]["order"], "identity");
        let max_bits = l["plan"]["group_bits"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).max().unwrap();
        assert!(l["max_distinct_per_group"].as_u64().unwrap() <= 1 << max_bits, "{}", l["name"]);
    }
    let scales = run(&["--wbits", "3", "--groupsize", "64", "--grouping-use", "scales"], "scales");
    let g64 = run(&["--wbits", "3", "--groupsize", "64"], "g64");
    assert_eq!(scales["mode"], "scales");
    assert_eq!(scales["bits"]["avg_bits_with_metadata"], g64["bits"]["avg_bits_with_metadata"]);
    assert!(scales["linears"].as_array().unwrap().iter().all(|l| l["max_distinct_per_group"].as_u64().unwrap() <= 8));
    let nm =
        run(&["--sparsity", "0", "--wbits", "16", "--prunen", "2", "--prunem", "4", "--nm-permutation", "mi"], "nm");
    assert!((nm["pruned_fraction"].as_f64().unwrap() - 0.5).abs() < 1e-9, "{}", nm["pruned_fraction"]);
    assert_eq!(nm["linears"][0]["plan"]["nm_permutation"]["method"], "mi");
}
