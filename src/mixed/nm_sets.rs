//! Channel sets for n:m pruning (`--nm-permutation`): which m input channels form one n:m
//! group, instead of m consecutive ones. The solver prunes n of every set in every row,
//! choosing when the sweep reaches the set's first column (`solver::LinearScheme::nm_sets`), and
//! the sweep order is left as it is: only which weights are pruned changes, not the OBS
//! order. The weights stay in their stored order, so the stored weight has the n:m pattern
//! in the permuted channel order; 2:4 hardware needs it in the stored order, which a
//! deployment gets by permuting the input channels once (the previous layer's output rows,
//! or the activations), as NVIDIA's apex permutation search does.
//!
//! With `NmConfig::fold` (deployable output) the pipeline folds each set permutation into
//! the producing linears' rows (`model::fold`), and the sets are chosen so that it can:
//! - the MLP's inner activation (fc2, down): the method's sets;
//! - the attention output (out_proj, o_proj): sets inside one head, and the same partition
//!   of a head's channels for every query head sharing a value head (the method run once per
//!   value head: magnitude on the stacked weights of its query heads, MI on their summed
//!   similarity, random once); consecutive sets where the head width is not a multiple of m;
//! - the residual stream (q/k/v, fc1, gate/up): consecutive sets in the natural column order
//!   (nothing produces it to fold into).
//!
//! Sources:
//! - `mi`: redundant channels together: greedily, the most similar pair of unassigned
//!   channels (MI similarity of the input site) starts a set, which grows by the unassigned
//!   channel of the largest summed similarity to its members, until it has m;
//! - `random`: seeded random sets (per input site);
//! - `magnitude`: a channel-swap search in the style of apex's: from consecutive sets, swaps
//!   of two channels between two sets that increase the kept magnitude Σ_rows Σ_sets (sum of
//!   the m − n largest |W| of the set), the best swap for each set against a few seeded
//!   random other sets, in passes until none improves (per linear).

use super::grouping;
use super::groups::host_similarity;
use super::mutual_info::{MiMethod, SymMatrix};
use crate::model::family::HeadLayout;
use crate::model::InputSite;
use crate::pipeline::planner::{LinearPlan, Planner, PlannerNeeds, SiteContext};
use anyhow::{bail, Result};
use candle_core::Device;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NmPermutation {
    /// Consecutive columns (the n:m of the published code).
    #[default]
    None,
    Mi,
    Random,
    Magnitude,
}

#[derive(Clone, Debug)]
pub struct NmConfig {
    pub method: NmPermutation,
    pub n: usize,
    pub m: usize,
    pub mi_method: MiMethod,
    pub reservoir: usize,
    /// Seed of random sets and of the swap search's candidates.
    pub seed: u64,
    /// Deployable sets (see the module notes), for a model of these heads; None: the
    /// method's sets at every input.
    pub fold: Option<HeadLayout>,
}

/// What deployable output makes of one input's sets (`NmConfig::fold`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Deployable {
    /// The method's sets (inside heads at the attention output), folded into the rows of
    /// the linears producing the input.
    #[serde(rename = "folded")]
    Folded,
    /// The input is the normed residual stream, which no linear's rows produce: consecutive
    /// sets.
    #[serde(rename = "consecutive: residual stream")]
    ResidualStream,
    /// The attention output's head width is not a multiple of m, so any set but consecutive
    /// ones would span heads: consecutive sets.
    #[serde(rename = "consecutive: head width not a multiple of m")]
    HeadWidth,
}

impl Deployable {
    pub fn of(site: InputSite, heads: HeadLayout, m: usize) -> Self {
        match site {
            InputSite::Attn | InputSite::Fc1 => Deployable::ResidualStream,
            InputSite::OutProj if !heads.head_dim.is_multiple_of(m) => Deployable::HeadWidth,
            InputSite::OutProj | InputSite::Fc2 => Deployable::Folded,
        }
    }
}

/// How one linear's n:m channel sets were chosen, as the result JSON records it (under
/// `nm_permutation`, beside the inner planner's report).
#[derive(Debug, Clone, Serialize)]
pub struct NmReport {
    pub method: NmPermutation,
    /// The magnitude the sets keep (`kept_magnitude`), and what consecutive sets keep.
    pub kept_magnitude: f64,
    pub kept_magnitude_identity: f64,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployable: Option<Deployable>,
}

/// Any planner's plans with n:m channel sets added.
pub struct NmPlanner {
    pub inner: Box<dyn Planner>,
    pub cfg: NmConfig,
}

impl Planner for NmPlanner {
    fn needs(&self) -> PlannerNeeds {
        let mut needs = self.inner.needs();
        needs.weights = true; // the kept-magnitude report reads them for every method
        if self.cfg.method == NmPermutation::Mi {
            needs.channel_moments = true;
            if self.cfg.mi_method != MiMethod::Corr {
                needs.reservoir = needs.reservoir.max(self.cfg.reservoir);
            }
        }
        needs
    }

    fn warm_up(&self, device: &Device) -> Result<()> {
        self.inner.warm_up(device)
    }

    fn plan_site(&self, ctx: &SiteContext) -> Result<Vec<LinearPlan>> {
        let (n, m) = (self.cfg.n, self.cfg.m);
        if !ctx.cols.is_multiple_of(m) {
            bail!("n:m sets of {m} do not divide the input width {}", ctx.cols);
        }
        let mut plans = self.inner.plan_site(ctx)?;
        let t0 = Instant::now();
        let seed = self.cfg.seed.wrapping_add(ctx.layer as u64 * 7919 + ctx.cols as u64);
        let deployable = self.cfg.fold.map(|heads| Deployable::of(ctx.site, heads, m));
        // Within heads: the attention output's sets, where they are folded.
        let heads = match (deployable, self.cfg.fold) {
            (Some(Deployable::Folded), Some(heads)) if ctx.site == InputSite::OutProj => Some(heads),
            _ => None,
        };
        let method = match deployable {
            Some(Deployable::ResidualStream | Deployable::HeadWidth) => NmPermutation::None,
            _ => self.cfg.method,
        };
        let site_sets = match method {
            NmPermutation::Mi => {
                let sim = host_similarity(ctx, self.cfg.mi_method)?;
                Some(match heads {
                    Some(heads) => within_heads(heads, m, |g, d| mi_sets(&group_similarity(&sim, heads, g, d), m)),
                    None => mi_sets(&sim, m),
                })
            }
            NmPermutation::Random => Some(match heads {
                Some(heads) => within_heads(heads, m, |g, d| random_sets(d, m, seed + g as u64)),
                None => random_sets(ctx.cols, m, seed),
            }),
            NmPermutation::Magnitude => None,
            NmPermutation::None => Some(identity_sets(ctx.cols, m)),
        };
        let site_seconds = t0.elapsed().as_secs_f64();
        for (i, (plan, lin)) in plans.iter_mut().zip(&ctx.linears).enumerate() {
            let t = Instant::now();
            let sets = match &site_sets {
                Some(s) => s.clone(),
                None => {
                    let seed = seed + i as u64;
                    match heads {
                        Some(heads) => within_heads(heads, m, |g, d| {
                            let (stacked, rows) = group_columns(lin.weight, lin.rows, heads, g);
                            magnitude_sets(&stacked, rows, d, n, m, seed + g as u64)
                        }),
                        None => magnitude_sets(lin.weight, lin.rows, ctx.cols, n, m, seed),
                    }
                }
            };
            let kept = kept_magnitude(lin.weight, lin.rows, ctx.cols, &sets, n, m);
            let kept_identity = kept_magnitude(lin.weight, lin.rows, ctx.cols, &identity_sets(ctx.cols, m), n, m);
            let seconds = t.elapsed().as_secs_f64() + if i == 0 { site_seconds } else { 0.0 };
            let note = serde_json::to_value(NmReport {
                method: self.cfg.method,
                kept_magnitude: kept,
                kept_magnitude_identity: kept_identity,
                seconds,
                deployable,
            })?;
            match plan.report.as_mut().and_then(|r| r.as_object_mut()) {
                Some(obj) => {
                    obj.insert("nm_permutation".into(), note);
                }
                None => plan.report = Some(serde_json::json!({ "nm_permutation": note })),
            }
            plan.plan_seconds += seconds;
            plan.scheme.nm_sets = Some(Arc::new(sets));
        }
        Ok(plans)
    }
}

/// Column j in set j / m.
pub fn identity_sets(cols: usize, m: usize) -> Vec<u32> {
    (0..cols).map(|j| (j / m) as u32).collect()
}

/// Sets of the attention output inside heads, one partition per value head: `local(g, d)`
/// gives value head g's partition of a head's d channels into sets of m (labels below d / m),
/// which every query head reading g takes (`model::fold::value_row_permutation`).
fn within_heads(heads: HeadLayout, m: usize, mut local: impl FnMut(usize, usize) -> Vec<u32>) -> Vec<u32> {
    let d = heads.head_dim;
    let per_head = (d / m) as u32;
    let mut labels = vec![0u32; heads.heads * d];
    for g in 0..heads.kv_heads {
        let part = local(g, d);
        for h in g * heads.group()..(g + 1) * heads.group() {
            for (i, &l) in part.iter().enumerate() {
                labels[h * d + i] = h as u32 * per_head + l;
            }
        }
    }
    labels
}

/// Value head g's query heads' columns of a (rows × heads·d) weight, stacked as the rows of
/// one (rows·group × d) weight: one set partition then serves all of them, and its kept
/// magnitude is theirs summed.
fn group_columns(weight: &[f32], rows: usize, heads: HeadLayout, g: usize) -> (Vec<f32>, usize) {
    let (d, group) = (heads.head_dim, heads.group());
    let cols = heads.heads * d;
    let mut stacked = Vec::with_capacity(rows * group * d);
    for r in 0..rows {
        for h in g * group..(g + 1) * group {
            stacked.extend_from_slice(&weight[r * cols + h * d..r * cols + (h + 1) * d]);
        }
    }
    (stacked, rows * group)
}

/// The similarity of a head's d channels summed over value head g's query heads.
fn group_similarity(sim: &SymMatrix, heads: HeadLayout, g: usize, d: usize) -> SymMatrix {
    let group = heads.group();
    let values =
        (0..d * d).map(|k| (g * group..(g + 1) * group).map(|h| sim.get(h * d + k / d, h * d + k % d)).sum()).collect();
    SymMatrix { d, values }
}

pub fn random_sets(cols: usize, m: usize, seed: u64) -> Vec<u32> {
    grouping::random_with_sizes(&vec![m; cols / m], seed).into_iter().map(|l| l as u32).collect()
}

/// Greedy sets of m mutually similar channels (see the module notes); ties to lower indices.
pub fn mi_sets(sim: &SymMatrix, m: usize) -> Vec<u32> {
    let d = sim.d;
    let mut pairs: Vec<(f64, usize, usize)> =
        (0..d).flat_map(|i| (i + 1..d).map(move |j| (i, j))).map(|(i, j)| (sim.get(i, j), i, j)).collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut labels = vec![u32::MAX; d];
    let mut next = 0u32;
    for &(_, i, j) in &pairs {
        if labels[i] != u32::MAX || labels[j] != u32::MAX {
            continue;
        }
        let mut members = vec![i, j];
        labels[i] = next;
        labels[j] = next;
        while members.len() < m {
            let best = (0..d)
                .filter(|&c| labels[c] == u32::MAX)
                .map(|c| (members.iter().map(|&u| sim.get(u, c)).sum::<f64>(), c))
                .fold(None, |best: Option<(f64, usize)>, x| match best {
                    Some(b) if b.0 >= x.0 => Some(b),
                    _ => Some(x),
                });
            let Some((_, c)) = best else { break };
            labels[c] = next;
            members.push(c);
        }
        next += 1;
    }
    // m = 1, or channels left over (d not a multiple of m): sets of their own.
    for l in labels.iter_mut().filter(|l| **l == u32::MAX) {
        *l = next;
        next += 1;
    }
    labels
}

/// Σ_rows Σ_sets (sum of the m − n largest |W| of the set), over Σ |W|.
pub fn kept_magnitude(weight: &[f32], rows: usize, cols: usize, sets: &[u32], n: usize, m: usize) -> f64 {
    let k = cols / m;
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (j, &s) in sets.iter().enumerate() {
        members[s as usize].push(j);
    }
    let (mut kept, mut total) = (0.0, 0.0);
    for r in 0..rows {
        let row = &weight[r * cols..(r + 1) * cols];
        for mem in &members {
            let mut v: Vec<f64> = mem.iter().map(|&j| row[j].abs() as f64).collect();
            v.sort_by(|a, b| b.total_cmp(a));
            kept += v.iter().take(m - n).sum::<f64>();
            total += v.iter().sum::<f64>();
        }
    }
    if total > 0.0 {
        kept / total
    } else {
        1.0
    }
}

/// Other sets each set is tried against per pass, and the most passes.
const SWAP_CANDIDATES: usize = 8;
const SWAP_PASSES: usize = 4;

/// The magnitude-driven channel-swap search (see the module notes).
pub fn magnitude_sets(weight: &[f32], rows: usize, cols: usize, n: usize, m: usize, seed: u64) -> Vec<u32> {
    let k = cols / m;
    let keep = m - n;
    if k < 2 || keep == 0 || keep == m {
        return identity_sets(cols, m);
    }
    // |W| column-major: abs[j * rows + r].
    let mut abs = vec![0f32; rows * cols];
    for r in 0..rows {
        for j in 0..cols {
            abs[j * rows + r] = weight[r * cols + j].abs();
        }
    }
    let col = |j: usize| &abs[j * rows..(j + 1) * rows];
    let mut members: Vec<Vec<usize>> = (0..k).map(|s| (s * m..(s + 1) * m).collect()).collect();
    // For a set and one of its members taken out, per row: the sum of the keep − 1 largest
    // of the other m − 1 and the keep-th largest of them; a column x put in its place then
    // keeps S + max(T, x).
    let out_stats = |mem: &[usize]| -> Vec<(Vec<f32>, Vec<f32>)> {
        (0..m)
            .map(|out| {
                let mut s = vec![0f32; rows];
                let mut t = vec![0f32; rows];
                let mut v = vec![0f32; m - 1];
                for r in 0..rows {
                    let mut c = 0;
                    for (q, &j) in mem.iter().enumerate() {
                        if q != out {
                            v[c] = col(j)[r];
                            c += 1;
                        }
                    }
                    v.sort_by(|a, b| b.total_cmp(a));
                    s[r] = v[..keep - 1].iter().sum();
                    t[r] = v[keep - 1];
                }
                (s, t)
            })
            .collect()
    };
    let kept_of = |mem: &[usize]| -> f64 {
        (0..rows)
            .map(|r| {
                let mut v: Vec<f32> = mem.iter().map(|&j| col(j)[r]).collect();
                v.sort_by(|a, b| b.total_cmp(a));
                v[..keep].iter().map(|&x| x as f64).sum::<f64>()
            })
            .sum()
    };
    let mut stats: Vec<Vec<(Vec<f32>, Vec<f32>)>> = members.iter().map(|mem| out_stats(mem)).collect();
    let mut kept: Vec<f64> = members.iter().map(|mem| kept_of(mem)).collect();
    let mut rng = crate::rng::seeded(seed);
    for _ in 0..SWAP_PASSES {
        let mut improved = false;
        for a in 0..k {
            let mut best: Option<(f64, usize, usize, usize)> = None;
            for _ in 0..SWAP_CANDIDATES.min(k - 1) {
                let mut b = crate::rng::below(&mut rng, k as u64 - 1) as usize;
                if b >= a {
                    b += 1;
                }
                for ia in 0..m {
                    let (sa, ta) = &stats[a][ia];
                    let xa = col(members[a][ia]);
                    for ib in 0..m {
                        let (sb, tb) = &stats[b][ib];
                        let xb = col(members[b][ib]);
                        let mut new = 0f64;
                        for r in 0..rows {
                            new += (sa[r] + ta[r].max(xb[r])) as f64 + (sb[r] + tb[r].max(xa[r])) as f64;
                        }
                        let delta = new - kept[a] - kept[b];
                        if delta > 1e-9 * (kept[a] + kept[b]) && best.is_none_or(|x| delta > x.0) {
                            best = Some((delta, b, ia, ib));
                        }
                    }
                }
            }
            if let Some((_, b, ia, ib)) = best {
                let (ja, jb) = (members[a][ia], members[b][ib]);
                members[a][ia] = jb;
                members[b][ib] = ja;
                for s in [a, b] {
                    stats[s] = out_stats(&members[s]);
                    kept[s] = kept_of(&members[s]);
                }
                improved = true;
            }
        }
        if !improved {
            break;
        }
    }
    let mut labels = vec![0u32; cols];
    for (s, mem) in members.iter().enumerate() {
        for &j in mem {
            labels[j] = s as u32;
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(labels: &[u32]) -> Vec<usize> {
        grouping::group_sizes(&labels.iter().map(|&l| l as usize).collect::<Vec<_>>())
    }

    /// Plans of `cfg` at `site` for two linears of `rows` random rows over `d` channels, with
    /// channel moments of random activations (for MI).
    fn plan_at(cfg: &NmConfig, site: InputSite, d: usize, rows: usize) -> Vec<(Vec<u32>, serde_json::Value)> {
        use crate::pipeline::hessian::HessianAccumulation;
        use crate::pipeline::planner::LinearWeights;
        use crate::pipeline::statistics::SiteStatistics;
        let mut rng = crate::rng::seeded(4);
        let mut u = move || (crate::rng::uniform(&mut rng) * 2.0 - 1.0) as f32;
        let x: Vec<f32> = (0..256 * d).map(|_| u()).collect();
        let mut stats = SiteStatistics::new(d, HessianAccumulation::Sum, true, None);
        stats.add(&candle_core::Tensor::from_vec(x, (1, 256, d), &Device::Cpu).unwrap()).unwrap();
        let diag = stats.hessian.diagonal().unwrap();
        let weights: Vec<Vec<f32>> = (0..2).map(|_| (0..rows * d).map(|_| u()).collect()).collect();
        let ctx = SiteContext {
            layer: 1,
            site,
            cols: d,
            hessian_diag: &diag,
            hessian: Some(&stats.hessian),
            moments: stats.moments.as_ref(),
            reservoir: None,
            linears: weights
                .iter()
                .map(|w| LinearWeights { kind: crate::model::LinearKind::Fc2, rows, weight: w })
                .collect(),
        };
        let inner = crate::mixed::planner::UniformPlanner { quant: crate::solver::QuantScheme::None };
        let planner = NmPlanner { inner: Box::new(inner), cfg: cfg.clone() };
        planner
            .plan_site(&ctx)
            .unwrap()
            .into_iter()
            .map(|p| (p.scheme.nm_sets.unwrap().to_vec(), p.report.unwrap()["nm_permutation"].clone()))
            .collect()
    }

    #[test]
    fn deployable_sets_fold_where_their_input_is_produced_and_are_consecutive_elsewhere() {
        use crate::model::fold::{is_identity, permutation_of_sets, value_row_permutation};
        // 4 query heads of 16 over 2 value heads.
        let heads = HeadLayout { heads: 4, kv_heads: 2, head_dim: 16 };
        let d = 64;
        for method in [NmPermutation::Mi, NmPermutation::Random, NmPermutation::Magnitude] {
            let free = NmConfig { method, n: 2, m: 4, mi_method: MiMethod::Corr, reservoir: 0, seed: 3, fold: None };
            let folded = NmConfig { fold: Some(heads), ..free.clone() };
            for site in [InputSite::Attn, InputSite::Fc1] {
                for (sets, report) in plan_at(&folded, site, d, 8) {
                    assert_eq!(sets, identity_sets(d, 4), "{method:?} {site:?}");
                    assert_eq!(report["deployable"], "consecutive: residual stream");
                }
            }
            // The MLP's inner activation: the method's own sets.
            let (with, without) = (plan_at(&folded, InputSite::Fc2, d, 8), plan_at(&free, InputSite::Fc2, d, 8));
            for ((sets, report), (free_sets, free_report)) in with.iter().zip(&without) {
                assert_eq!(sets, free_sets, "{method:?}");
                assert!(!is_identity(&permutation_of_sets(sets)), "{method:?}: nothing to fold");
                assert_eq!(report["deployable"], "folded");
                assert!(free_report.get("deployable").is_none(), "not recorded without folding");
            }
            // The attention output: sets of 4 inside heads, one partition per value head.
            for (sets, report) in plan_at(&folded, InputSite::OutProj, d, 8) {
                assert_eq!(sets.len(), d);
                let perm = permutation_of_sets(&sets);
                assert!(!is_identity(&perm), "{method:?}: nothing to fold");
                assert!(value_row_permutation(&perm, heads).is_ok(), "{method:?}: {sets:?}");
                let mut sizes = vec![0; d / 4];
                sets.iter().for_each(|&s| sizes[s as usize] += 1);
                assert_eq!(sizes, vec![4; d / 4]);
                assert_eq!(report["deployable"], "folded");
                if method == NmPermutation::Magnitude {
                    let (kept, identity) = (&report["kept_magnitude"], &report["kept_magnitude_identity"]);
                    assert!(kept.as_f64().unwrap() > identity.as_f64().unwrap(), "{kept} vs {identity}");
                }
            }
            // Heads of 6: no set of 4 fits inside one.
            let narrow = NmConfig { fold: Some(HeadLayout { heads: 4, kv_heads: 2, head_dim: 6 }), ..free.clone() };
            for (sets, report) in plan_at(&narrow, InputSite::OutProj, 24, 8) {
                assert_eq!(sets, identity_sets(24, 4));
                assert_eq!(report["deployable"], "consecutive: head width not a multiple of m");
            }
        }
    }

    #[test]
    fn mi_sets_put_planted_redundant_channels_together() {
        // 16 channels in 4 planted blocks of 4 (j % 4): similarity 0.9 inside, 0.05 across.
        let d = 16;
        let values = (0..d * d)
            .map(|k| {
                let (i, j) = (k / d, k % d);
                if i == j {
                    0.0
                } else if i % 4 == j % 4 {
                    0.9
                } else {
                    0.05
                }
            })
            .collect();
        let labels = mi_sets(&SymMatrix { d, values }, 4);
        assert_eq!(sizes(&labels), vec![4; 4]);
        assert!((0..d).all(|j| labels[j] == labels[j % 4]), "{labels:?}");
    }

    #[test]
    fn magnitude_search_keeps_more_magnitude_than_consecutive_sets() {
        // Each row's large weights fill every other set of 4 consecutive columns (0..4,
        // 8..12, …): consecutive 2:4 sets must prune half of them; swaps between sets can
        // keep them all.
        let (rows, cols) = (8, 32);
        let w: Vec<f32> =
            (0..rows * cols).map(|k| if (k % cols) % 8 < 4 { 1.0 + 0.01 * (k % 7) as f32 } else { 0.1 }).collect();
        let ident = kept_magnitude(&w, rows, cols, &identity_sets(cols, 4), 2, 4);
        let sets = magnitude_sets(&w, rows, cols, 2, 4, 1);
        assert_eq!(sizes(&sets), vec![4; 8]);
        let searched = kept_magnitude(&w, rows, cols, &sets, 2, 4);
        assert!(searched > ident + 1e-6, "{searched} vs {ident}");
        // Random sets are sets of 4 too, and seeded.
        assert_eq!(sizes(&random_sets(cols, 4, 3)), vec![4; 8]);
        assert_eq!(random_sets(cols, 4, 3), random_sets(cols, 4, 3));
    }
}
