//! Channel permutations folded into a decoder layer, so that a linear's n:m sets found in a
//! permuted order of its input channels (`--nm-permutation`) lie in its own column order:
//! the consumer's columns and the rows of the linears that produce its input are permuted
//! alike, which computes the same function.
//!
//! Convention: `perm[p]` is the old channel placed at new position p (`W'[:, p] = W[:, perm[p]]`,
//! producer rows `P'[p, :] = P[perm[p], :]`, biases alike).
//!
//! Which inputs can be folded:
//! - the MLP's inner activation (fc2's, down's): any permutation, into the rows of fc1 (and its
//!   bias) or of gate and up (the activation and the gating act channel by channel);
//! - the attention output (out_proj's, o_proj's): channel d of query head h is channel d of
//!   value head h / group (group = heads / kv_heads), so only permutations that keep each
//!   head's channels in that head, with the same within-head order for every query head
//!   sharing a value head, are v's rows permuted;
//! - the residual stream (q/k/v, fc1, gate/up read the normed hidden state): no linear's rows
//!   produce it, so nothing folds there.

use super::family::HeadLayout;
use super::layer::{DecoderLayer, InputSite, LinearKind};
use anyhow::{bail, Result};

/// Whether the input at `site` is produced by linears whose rows a permutation can fold into.
pub fn foldable_site(site: InputSite) -> bool {
    matches!(site, InputSite::OutProj | InputSite::Fc2)
}

/// The permutation that puts n:m set labels (one per channel) into consecutive runs: sets
/// in the order of their first channel, each set's channels ascending. Consecutive sets
/// (`j / m`) give the identity.
pub fn permutation_of_sets(labels: &[u32]) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..labels.len()).collect();
    let mut first = std::collections::HashMap::new();
    for (j, &l) in labels.iter().enumerate() {
        first.entry(l).or_insert(j);
    }
    perm.sort_by_key(|&j| (first[&labels[j]], j));
    perm
}

pub fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(p, &j)| p == j)
}

/// v_proj's row permutation that folds `perm` of the attention output's channels, or why
/// there is none (see the module notes).
pub fn value_row_permutation(perm: &[usize], heads: HeadLayout) -> Result<Vec<usize>> {
    let HeadLayout { heads: n_heads, kv_heads, head_dim: d } = heads;
    if perm.len() != n_heads * d || kv_heads == 0 || n_heads % kv_heads != 0 {
        bail!(
            "a permutation of {} channels does not fit {n_heads} heads of {d} over {kv_heads} key/value heads",
            perm.len()
        );
    }
    let group = heads.group();
    let mut rows = vec![usize::MAX; kv_heads * d];
    for h in 0..n_heads {
        let g = h / group;
        for i in 0..d {
            let from = perm[h * d + i];
            if from / d != h {
                bail!(
                    "channel {from} moves from head {} to head {h}: only permutations within a head fold into v_proj",
                    from / d
                );
            }
            let row = g * d + from % d;
            if h % group == 0 {
                rows[g * d + i] = row;
            } else if rows[g * d + i] != row {
                bail!(
                    "heads {} and {h} share value head {g} but are permuted differently: not foldable into v_proj",
                    g * group
                );
            }
        }
    }
    Ok(rows)
}

/// The linears whose output rows are the input at `site` (fc1; gate and up; v).
pub fn producers(layer: &DecoderLayer, site: InputSite) -> Vec<LinearKind> {
    match site {
        InputSite::Fc2 => layer.kinds().iter().copied().filter(|k| k.input_site() == InputSite::Fc1).collect(),
        InputSite::OutProj => vec![LinearKind::V],
        InputSite::Attn | InputSite::Fc1 => Vec::new(),
    }
}

/// A permutation of one linear's rows or columns that a fold applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permuted {
    pub kind: LinearKind,
    pub axis: Axis,
    pub perm: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    Rows,
    Columns,
}

/// Permutes the input channels of the linear reading `site` by `perm` and folds it into the
/// producers' rows (and biases). Returns what was permuted (nothing for the identity); an
/// unfoldable permutation is an error and leaves the layer unchanged.
pub fn fold_input_permutation(layer: &mut DecoderLayer, site: InputSite, perm: &[usize]) -> Result<Vec<Permuted>> {
    if !foldable_site(site) {
        bail!("the input of {site:?} is the residual stream: no permutation folds there");
    }
    let width = layer.input_width(site);
    if perm.len() != width || !is_permutation(perm) {
        bail!("not a permutation of the {width} input channels of {site:?}");
    }
    if is_identity(perm) {
        return Ok(Vec::new());
    }
    let row_perm = match site {
        InputSite::OutProj => value_row_permutation(perm, layer.head_layout())?,
        _ => perm.to_vec(),
    };
    let consumers: Vec<LinearKind> = layer.kinds().iter().copied().filter(|k| k.input_site() == site).collect();
    let mut done = Vec::new();
    for kind in producers(layer, site) {
        layer.permute_rows(kind, &row_perm)?;
        done.push(Permuted { kind, axis: Axis::Rows, perm: row_perm.clone() });
    }
    for kind in consumers {
        layer.permute_columns(kind, perm)?;
        done.push(Permuted { kind, axis: Axis::Columns, perm: perm.to_vec() });
    }
    Ok(done)
}

fn is_permutation(perm: &[usize]) -> bool {
    let mut seen = vec![false; perm.len()];
    perm.iter().all(|&j| j < seen.len() && !std::mem::replace(&mut seen[j], true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::family::DecoderConfig;
    use crate::model::rope::RopeTables;
    use crate::model::weights::Weights;
    use candle_core::{DType, Device, Tensor};
    use std::collections::HashMap;

    /// Layer 0 of a model of `config` with random f32 weights (biases, norm weights included).
    fn random_layer(config: serde_json::Value, seed: u64) -> (DecoderConfig, DecoderLayer) {
        let cfg = DecoderConfig::from_value(&config).unwrap();
        let dev = Device::Cpu;
        let mut rng = crate::rng::seeded(seed);
        let mut random = |n: usize, scale: f64| -> Vec<f32> {
            (0..n).map(|_| ((crate::rng::uniform(&mut rng) * 2.0 - 1.0) * scale) as f32).collect()
        };
        let mut map = HashMap::new();
        let family = cfg.family;
        for &kind in family.linears {
            let (rows, cols) = cfg.linear_shape(kind);
            let prefix = family.layer_tensor(0, kind.path());
            let w = random(rows * cols, 2.0 / (cols as f64).sqrt());
            map.insert(format!("{prefix}.weight"), Tensor::from_vec(w, (rows, cols), &dev).unwrap());
            if cfg.bias_of(kind) {
                map.insert(format!("{prefix}.bias"), Tensor::from_vec(random(rows, 0.2), rows, &dev).unwrap());
            }
        }
        let h = cfg.hidden_size;
        for norm in [family.names.attn_norm, family.names.mlp_norm] {
            let prefix = family.layer_tensor(0, norm);
            let w: Vec<f32> = random(h, 0.2).iter().map(|x| 1.0 + x).collect();
            map.insert(format!("{prefix}.weight"), Tensor::from_vec(w, h, &dev).unwrap());
            if family.is_opt() {
                map.insert(format!("{prefix}.bias"), Tensor::from_vec(random(h, 0.1), h, &dev).unwrap());
            }
        }
        let rope = cfg
            .rope
            .as_ref()
            .map(|r| RopeTables::new(r, cfg.head_dim, cfg.max_position_embeddings, DType::F32, &dev).unwrap());
        let layer = DecoderLayer::load(&Weights::from_map(map), &cfg, 0, rope.as_ref(), &dev, DType::F32).unwrap();
        (cfg, layer)
    }

    fn opt_config() -> serde_json::Value {
        serde_json::json!({
            "model_type": "opt", "hidden_size": 32, "ffn_dim": 64, "num_attention_heads": 4,
            "num_hidden_layers": 1, "vocab_size": 50, "max_position_embeddings": 64,
            "word_embed_proj_dim": 32, "do_layer_norm_before": true, "enable_bias": true
        })
    }

    /// Qwen2 (q/k/v bias) with grouped queries: 4 query heads of 8 over 2 value heads.
    fn gqa_config() -> serde_json::Value {
        serde_json::json!({
            "model_type": "qwen2", "hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 4,
            "num_key_value_heads": 2, "num_hidden_layers": 1, "vocab_size": 50, "max_position_embeddings": 64,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0
        })
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn forward(layer: &DecoderLayer, x: &Tensor) -> Vec<f32> {
        let s = x.dims()[1];
        let mask: Vec<f32> = (0..s * s).map(|k| if k % s > k / s { f32::NEG_INFINITY } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, (s, s), x.device()).unwrap();
        values(&layer.forward(x, &mask, None).unwrap())
    }

    /// A seeded random permutation of 0..n.
    fn shuffled(n: usize, seed: u64) -> Vec<usize> {
        let mut rng = crate::rng::seeded(seed);
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, crate::rng::below(&mut rng, i as u64 + 1) as usize);
        }
        p
    }

    /// A permutation of `d` channels in `heads` heads of `d / heads`, within each head,
    /// the same for heads `h` and `h'` where `h / group == h' / group`.
    fn within_heads(heads: HeadLayout, seed: u64) -> Vec<usize> {
        let d = heads.head_dim;
        let sigmas: Vec<Vec<usize>> = (0..heads.kv_heads).map(|g| shuffled(d, seed + g as u64)).collect();
        (0..heads.heads * d).map(|p| (p / d) * d + sigmas[p / d / heads.group()][p % d]).collect()
    }

    /// n of every m-set of `sets` zeroed in every row of the linear reading `site` (the n
    /// smallest |W|), as a solve with those sets leaves it.
    fn prune_sets(layer: &mut DecoderLayer, kind: LinearKind, sets: &[u32], n: usize, m: usize) {
        let w = layer.linear(kind).weight().clone();
        let (rows, cols) = w.dims2().unwrap();
        let mut v = values(&w);
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); cols / m];
        for (j, &s) in sets.iter().enumerate() {
            members[s as usize].push(j);
        }
        for r in 0..rows {
            for mem in &members {
                let mut by_size = mem.clone();
                by_size.sort_by(|&a, &b| v[r * cols + a].abs().total_cmp(&v[r * cols + b].abs()));
                for &j in &by_size[..n] {
                    v[r * cols + j] = 0.0;
                }
            }
        }
        layer.set_weight(kind, Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()).unwrap();
    }

    /// Whether every row has at most n nonzeros in every m consecutive columns.
    fn nm_in_natural_order(w: &Tensor, n: usize, m: usize) -> bool {
        let (_, cols) = w.dims2().unwrap();
        values(w).chunks(cols).all(|row| row.chunks(m).all(|c| c.iter().filter(|&&x| x != 0.0).count() <= m - n))
    }

    #[test]
    fn folded_layers_compute_the_same_outputs_with_the_pattern_in_natural_order() {
        let (n, m) = (2, 4);
        for config in [opt_config(), gqa_config()] {
            let (cfg, mut layer) = random_layer(config, 3);
            let heads = HeadLayout::of(&cfg);
            assert_eq!(layer.head_layout(), heads);
            // Sets: random over the MLP's inner channels; within heads (shared by a value
            // head's query heads) at the attention output, m consecutive of the permuted order.
            let mlp_perm = shuffled(cfg.ffn_dim, 5);
            let attn_perm = within_heads(heads, 7);
            let sets_of = |perm: &[usize]| {
                let mut labels = vec![0u32; perm.len()];
                for (p, &j) in perm.iter().enumerate() {
                    labels[j] = (p / m) as u32;
                }
                labels
            };
            let (mlp_sets, attn_sets) = (sets_of(&mlp_perm), sets_of(&attn_perm));
            let down = *layer.kinds().last().unwrap();
            let out = layer.kinds()[3];
            prune_sets(&mut layer, down, &mlp_sets, n, m);
            prune_sets(&mut layer, out, &attn_sets, n, m);
            assert!(!nm_in_natural_order(layer.linear(down).weight(), n, m), "the sets are not consecutive");
            let x = Tensor::from_vec(
                (0..2 * 5 * cfg.hidden_size).map(|k| (k * 37 % 101) as f32 / 50.0 - 1.0).collect::<Vec<f32>>(),
                (2, 5, cfg.hidden_size),
                &Device::Cpu,
            )
            .unwrap();
            let before = forward(&layer, &x);
            let old_down = values(layer.linear(down).weight());
            for (site, sets) in [(InputSite::Fc2, &mlp_sets), (InputSite::OutProj, &attn_sets)] {
                let perm = permutation_of_sets(sets);
                let done = fold_input_permutation(&mut layer, site, &perm).unwrap();
                let rows: Vec<LinearKind> = done.iter().filter(|p| p.axis == Axis::Rows).map(|p| p.kind).collect();
                let want = match (site, cfg.family.is_opt()) {
                    (InputSite::Fc2, true) => vec![LinearKind::Fc1],
                    (InputSite::Fc2, false) => vec![LinearKind::Gate, LinearKind::Up],
                    _ => vec![LinearKind::V],
                };
                assert_eq!(rows, want);
            }
            let after = forward(&layer, &x);
            let scale = before.iter().fold(0f32, |a, x| a.max(x.abs()));
            let diff = before.iter().zip(&after).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            assert!(diff <= 1e-5 * scale, "outputs moved by {diff} (max |y| {scale})");
            // The consumer's columns moved as the permutation says, and carry n:m in their
            // own order now.
            let (new_down, folded) = (values(layer.linear(down).weight()), permutation_of_sets(&mlp_sets));
            let f = cfg.ffn_dim;
            assert!((0..cfg.hidden_size).all(|r| (0..f).all(|p| new_down[r * f + p] == old_down[r * f + folded[p]])));
            for kind in [down, out] {
                assert!(nm_in_natural_order(layer.linear(kind).weight(), n, m), "{kind:?}");
            }
        }
    }

    #[test]
    fn unfoldable_permutations_are_refused_and_leave_the_layer_alone() {
        let (cfg, mut layer) = random_layer(gqa_config(), 1);
        let before: Vec<Vec<f32>> = layer.kinds().iter().map(|&k| values(layer.linear(k).weight())).collect();
        let mut across_heads: Vec<usize> = (0..cfg.q_width()).collect();
        across_heads.swap(0, cfg.head_dim);
        assert!(fold_input_permutation(&mut layer, InputSite::OutProj, &across_heads).is_err());
        let mut one_head: Vec<usize> = (0..cfg.q_width()).collect();
        one_head.swap(0, 1); // head 0 only: head 1 shares its value head and is not permuted
        let e = fold_input_permutation(&mut layer, InputSite::OutProj, &one_head).unwrap_err().to_string();
        assert!(e.contains("share value head"), "{e}");
        let swap: Vec<usize> = (0..cfg.hidden_size).rev().collect();
        assert!(fold_input_permutation(&mut layer, InputSite::Attn, &swap).is_err());
        assert!(fold_input_permutation(&mut layer, InputSite::Fc1, &swap).is_err());
        assert!(fold_input_permutation(&mut layer, InputSite::Fc2, &[0, 0]).is_err());
        let after: Vec<Vec<f32>> = layer.kinds().iter().map(|&k| values(layer.linear(k).weight())).collect();
        assert_eq!(before, after);
        assert!(fold_input_permutation(&mut layer, InputSite::Fc2, &(0..cfg.ffn_dim).collect::<Vec<_>>())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn sets_become_consecutive_runs() {
        // Sets {0, 5}, {1, 2}, {3, 4} of m = 2.
        let labels = [7, 3, 3, 9, 9, 7];
        let perm = permutation_of_sets(&labels);
        assert_eq!(perm, vec![0, 5, 1, 2, 3, 4]);
        let permuted: Vec<u32> = perm.iter().map(|&j| labels[j]).collect();
        assert!(permuted.chunks(2).all(|c| c[0] == c[1]));
        assert!(is_identity(&permutation_of_sets(&[0, 0, 1, 1, 2, 2])));
    }

    #[test]
    fn value_rows_follow_a_within_head_permutation_shared_by_a_group() {
        // 4 query heads of 3 over 2 value heads: heads 0, 1 read value head 0; 2, 3 value head 1.
        let heads = HeadLayout { heads: 4, kv_heads: 2, head_dim: 3 };
        let sigma = [[2, 0, 1], [1, 2, 0]];
        let perm: Vec<usize> = (0..12).map(|p| (p / 3) * 3 + sigma[p / 6][p % 3]).collect();
        assert_eq!(value_row_permutation(&perm, heads).unwrap(), vec![2, 0, 1, 4, 5, 3]);
        // Across heads: refused.
        let mut across = perm.clone();
        across.swap(0, 3);
        let e = value_row_permutation(&across, heads).unwrap_err().to_string();
        assert!(e.contains("within a head"), "{e}");
        // Two heads of one value head permuted differently: refused.
        let mut differ = perm.clone();
        differ.swap(3, 4);
        let e = value_row_permutation(&differ, heads).unwrap_err().to_string();
        assert!(e.contains("share value head 0"), "{e}");
        // Without grouped queries every within-head permutation folds.
        let mha = HeadLayout { heads: 4, kv_heads: 4, head_dim: 3 };
        assert_eq!(value_row_permutation(&differ, mha).unwrap(), differ);
    }
}
