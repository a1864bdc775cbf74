//! The planners: `UniformPlanner` (the published algorithms: one scheme for every linear)
//! and `MixedPlanner` (column groups with their own bit widths under a budget, grouped by
//! importance rank, by mutual information, or at random).

use super::bit_alloc::{self, BitPolicy};
use super::groups::{mi_groups, rank_groups, ChannelGroups};
use super::{GroupCount, MixedConfig, Mode};
use crate::pipeline::planner::{LinearPlan, Planner, PlannerNeeds, SiteContext};
use crate::solver::{ColumnGroup, QuantScheme};
use anyhow::Result;
use candle_core::Device;
use serde::Serialize;
use std::time::Instant;

/// Every linear gets the same scheme, in its natural column order.
pub struct UniformPlanner {
    pub quant: QuantScheme,
}

impl Planner for UniformPlanner {
    fn needs(&self) -> PlannerNeeds {
        PlannerNeeds::default()
    }

    fn plan_site(&self, ctx: &SiteContext) -> Result<Vec<LinearPlan>> {
        Ok(ctx
            .linears
            .iter()
            .map(|_| LinearPlan { quant: self.quant.clone(), perm: None, report: None, plan_seconds: 0.0 })
            .collect())
    }
}

/// Mixed precision: each linear's input channels in groups, each group its bit width.
pub struct MixedPlanner {
    pub cfg: MixedConfig,
}

/// How one linear's groups and bits were decided, as the result JSON records it.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub mode: Mode,
    pub k: usize,
    pub group_sizes: Vec<usize>,
    pub group_bits: Vec<u32>,
    pub avg_bits: f64,
    pub avg_bits_with_metadata: f64,
    pub silhouette: Option<f64>,
    pub davies_bouldin: Option<f64>,
    /// Grouping time (the first linear of an input carries it; the others reuse its groups).
    pub mi_seconds: f64,
    pub mi_similarity_seconds: f64,
    pub mi_clustering_seconds: f64,
    pub mi_memory_bytes: usize,
}

impl Planner for MixedPlanner {
    fn needs(&self) -> PlannerNeeds {
        let sample_based = self.cfg.mi_method != super::mutual_info::MiMethod::Corr;
        PlannerNeeds { channel_moments: true, reservoir: if sample_based { self.cfg.reservoir } else { 0 } }
    }

    fn warm_up(&self, device: &Device) -> Result<()> {
        if device.is_cuda() {
            // Loads the MI grouping's f64 device kernels now rather than inside the first
            // layer's planning.
            super::grouping_tensor::warm_up(device)?;
        }
        Ok(())
    }

    fn plan_site(&self, ctx: &SiteContext) -> Result<Vec<LinearPlan>> {
        let cfg = &self.cfg;
        // MI and its control group an input once for all linears reading it; enhanced mode
        // ranks each linear's own importances.
        let t0 = Instant::now();
        let shared = match cfg.mode {
            Mode::Enhanced => None,
            _ => Some(mi_groups(ctx, cfg)?),
        };
        let mut grouping_seconds = t0.elapsed().as_secs_f64();
        let mut plans = Vec::with_capacity(ctx.linears.len());
        for (i, lin) in ctx.linears.iter().enumerate() {
            let t0 = Instant::now();
            let importance = bit_alloc::column_importance(lin.weight, lin.rows, ctx.cols, ctx.hessian_diag);
            let own;
            let (groups, fresh) = match &shared {
                Some(g) => (g, i == 0),
                None => {
                    let k = match cfg.groups {
                        GroupCount::Fixed(k) => k,
                        GroupCount::Auto => 10,
                    };
                    own = rank_groups(&importance, k);
                    (&own, true)
                }
            };
            let (quant, perm) = plan_bits(ctx, groups, &importance, cfg)?;
            let QuantScheme::Mixed { groups: col_groups, .. } = &quant else {
                unreachable!("plan_bits makes mixed schemes")
            };
            let (avg_bits, avg_bits_with_metadata) = quant.bits(ctx.cols).expect("quantized");
            let timed = |v: f64| if fresh { v } else { 0.0 };
            let report = PlanReport {
                mode: cfg.mode,
                k: groups.sizes().len(),
                group_sizes: col_groups.iter().map(|g| g.len).collect(),
                group_bits: col_groups.iter().map(|g| g.bits).collect(),
                avg_bits,
                avg_bits_with_metadata,
                silhouette: groups.silhouette,
                davies_bouldin: groups.davies_bouldin,
                mi_seconds: timed(groups.seconds),
                mi_similarity_seconds: timed(groups.similarity_seconds),
                mi_clustering_seconds: timed(groups.clustering_seconds),
                mi_memory_bytes: groups.memory_bytes,
            };
            let plan_seconds = t0.elapsed().as_secs_f64() + std::mem::take(&mut grouping_seconds);
            plans.push(LinearPlan {
                quant,
                perm: Some(perm),
                report: Some(serde_json::to_value(report)?),
                plan_seconds,
            });
        }
        Ok(plans)
    }
}

/// Bits per group and the sweep order. A group's importance is the sum of its columns'
/// saliency, discounted by its redundancy r ∈ [0, 1] as I·(1 − r/2): redundant channels
/// carry shared information, so the error of one is partly recoverable from the others
/// through the OBS update. Groups are swept most important first, columns inside a group
/// by decreasing H_jj (as act-order does).
fn plan_bits(
    ctx: &SiteContext,
    groups: &ChannelGroups,
    importance: &[f64],
    cfg: &MixedConfig,
) -> Result<(QuantScheme, Vec<usize>)> {
    let sizes = groups.sizes();
    let k = sizes.len();
    let mut gimp = vec![0.0; k];
    for (j, &l) in groups.labels.iter().enumerate() {
        gimp[l] += importance[j];
    }
    for (g, imp) in gimp.iter_mut().enumerate() {
        *imp *= 1.0 - groups.redundancy.get(g).copied().unwrap_or(0.0) / 2.0;
    }
    let bits = match cfg.bit_policy {
        BitPolicy::Optimal => bit_alloc::allocate_optimal(&gimp, &sizes, &cfg.budget)?,
        BitPolicy::Thresholds => bit_alloc::allocate_thresholds(&gimp, &sizes, &cfg.budget)?,
    };
    let mut group_order: Vec<usize> = (0..k).collect();
    group_order.sort_by(|&a, &b| (gimp[b] / sizes[b] as f64).total_cmp(&(gimp[a] / sizes[a] as f64)));
    let hdiag = |j: usize| ctx.hessian_diag[j];
    let mut perm = Vec::with_capacity(ctx.cols);
    let mut col_groups = Vec::with_capacity(k);
    for &g in &group_order {
        let mut cols: Vec<usize> = (0..ctx.cols).filter(|&j| groups.labels[j] == g).collect();
        cols.sort_by(|&a, &b| hdiag(b).total_cmp(&hdiag(a)));
        col_groups.push(ColumnGroup { start: perm.len(), len: cols.len(), bits: bits[g] });
        perm.extend(cols);
    }
    Ok((QuantScheme::Mixed { groups: col_groups, sym: cfg.sym }, perm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mixed::{bit_alloc::BitBudget, grouping::GroupingMethod, mutual_info::MiMethod};
    use crate::model::{InputSite, LinearKind};
    use crate::pipeline::hessian::HessianAccumulation;
    use crate::pipeline::planner::LinearWeights;
    use crate::pipeline::statistics::SiteStatistics;

    /// Channels in `blocks` planted groups: each token's channels in a block share one
    /// random value plus a little noise, so channels of a block are highly dependent and
    /// channels of different blocks independent. Returns the statistics and the truth.
    fn planted(blocks: usize, size: usize, tokens: usize) -> (SiteStatistics, Vec<usize>) {
        let d = blocks * size;
        let mut rng = crate::rng::seeded(11);
        let mut x = Vec::with_capacity(tokens * d);
        for _ in 0..tokens {
            let shared: Vec<f64> = (0..blocks).map(|_| crate::rng::uniform(&mut rng) * 2.0 - 1.0).collect();
            for j in 0..d {
                x.push((shared[j / size] + 0.05 * (crate::rng::uniform(&mut rng) - 0.5)) as f32);
            }
        }
        let mut stats = SiteStatistics::new(d, HessianAccumulation::Sum, true, None);
        stats.add(&candle_core::Tensor::from_vec(x, (1, tokens, d), &candle_core::Device::Cpu).unwrap()).unwrap();
        (stats, (0..d).map(|j| j / size).collect())
    }

    fn config(mode: Mode, k: usize, target: f64) -> MixedConfig {
        MixedConfig {
            mode,
            groups: GroupCount::Fixed(k),
            budget: BitBudget { target_avg_bits: target, min_bits: 2, max_bits: 8 },
            mi_method: MiMethod::Corr,
            clustering: GroupingMethod::Spectral,
            bit_policy: BitPolicy::Optimal,
            reservoir: 0,
            sym: false,
            seed: 0,
        }
    }

    /// A planning context for the attention input (q, k, v read it) over `stats`, with
    /// weights whose column norms grow with the channel index.
    fn plan(planner: &dyn Planner, stats: &SiteStatistics, rows: usize) -> Vec<LinearPlan> {
        let d = stats.hessian.dim;
        let diag = stats.hessian.diagonal().unwrap();
        let weights: Vec<Vec<f32>> = (0..3)
            .map(|l| (0..rows * d).map(|i| ((i % d) as f32 + 1.0) * (1.0 + l as f32) / d as f32).collect())
            .collect();
        let ctx = SiteContext {
            layer: 0,
            site: InputSite::Attn,
            cols: d,
            hessian_diag: &diag,
            moments: stats.moments.as_ref(),
            reservoir: None,
            linears: [LinearKind::K, LinearKind::V, LinearKind::Q]
                .iter()
                .zip(&weights)
                .map(|(&kind, w)| LinearWeights { kind, rows, weight: w })
                .collect(),
        };
        planner.plan_site(&ctx).unwrap()
    }

    /// The channels of each planned group, as sets of original column indices.
    fn partition(plan: &LinearPlan) -> Vec<std::collections::BTreeSet<usize>> {
        let QuantScheme::Mixed { groups, .. } = &plan.quant else { panic!("not mixed") };
        let perm = plan.perm.as_ref().unwrap();
        groups.iter().map(|g| perm[g.start..g.start + g.len].iter().copied().collect()).collect()
    }

    #[test]
    fn uniform_planner_gives_every_linear_the_base_scheme() {
        let (stats, _) = planted(2, 8, 64);
        let base = QuantScheme::PerRow { bits: 4, sym: false };
        let plans = plan(&UniformPlanner { quant: base.clone() }, &stats, 4);
        assert_eq!(plans.len(), 3);
        assert!(plans.iter().all(|p| p.quant == base && p.perm.is_none() && p.report.is_none()));
        assert_eq!(UniformPlanner { quant: base }.needs(), PlannerNeeds::default());
    }

    #[test]
    fn mi_planner_recovers_planted_channel_blocks_within_the_budget() {
        let (stats, truth) = planted(4, 16, 512);
        let planner = MixedPlanner { cfg: config(Mode::Mi, 4, 4.0) };
        assert!(planner.needs().channel_moments);
        let plans = plan(&planner, &stats, 8);
        let want: std::collections::BTreeSet<std::collections::BTreeSet<usize>> =
            (0..4).map(|b| (0..64).filter(|&j| truth[j] == b).collect()).collect();
        for p in &plans {
            // The sweep order is a permutation, and its groups are exactly the planted blocks.
            let mut seen = p.perm.clone().unwrap();
            seen.sort_unstable();
            assert_eq!(seen, (0..64).collect::<Vec<_>>());
            assert_eq!(partition(p).into_iter().collect::<std::collections::BTreeSet<_>>(), want);
            let (_, with_meta) = p.quant.bits(64).unwrap();
            assert!(with_meta <= 4.0 + 1e-12, "{with_meta}");
            assert_eq!(p.report.as_ref().unwrap()["mode"], "mi");
        }
        // q, k and v read one input: one grouping serves all three, timed once.
        assert_eq!(partition(&plans[0]), partition(&plans[2]));
        assert_eq!(plans[1].report.as_ref().unwrap()["mi_seconds"], 0.0);
    }

    #[test]
    fn random_control_keeps_mi_group_sizes_but_not_its_channels() {
        let (stats, _) = planted(4, 16, 512);
        let mi = plan(&MixedPlanner { cfg: config(Mode::Mi, 4, 4.0) }, &stats, 8);
        let rnd = plan(&MixedPlanner { cfg: config(Mode::Random, 4, 4.0) }, &stats, 8);
        let sizes = |p: &LinearPlan| {
            let mut s: Vec<usize> = partition(p).iter().map(|g| g.len()).collect();
            s.sort_unstable();
            s
        };
        assert_eq!(sizes(&mi[0]), sizes(&rnd[0]));
        let mi_set: std::collections::BTreeSet<_> = partition(&mi[0]).into_iter().collect();
        assert!(partition(&rnd[0]).iter().any(|g| !mi_set.contains(g)), "random groups equal the MI blocks");
        // Same seed, same partition.
        let again = plan(&MixedPlanner { cfg: config(Mode::Random, 4, 4.0) }, &stats, 8);
        assert_eq!(partition(&rnd[0]), partition(&again[0]));
    }

    #[test]
    fn enhanced_planner_gives_the_most_important_channels_the_most_bits() {
        let (stats, _) = planted(4, 16, 512);
        let plans = plan(&MixedPlanner { cfg: config(Mode::Enhanced, 4, 3.5) }, &stats, 8);
        for p in &plans {
            let QuantScheme::Mixed { groups, .. } = &p.quant else { panic!() };
            // Groups are swept most important first: bits never increase along the sweep.
            assert!(groups.windows(2).all(|w| w[0].bits >= w[1].bits), "{groups:?}");
            assert!(groups[0].bits > groups[groups.len() - 1].bits, "{groups:?}");
            // Column norms grow with the index (and H_jj is about equal): the first group
            // holds the highest-index channels.
            assert!(partition(p)[0].iter().all(|&j| j >= 48), "{:?}", partition(p)[0]);
            assert!(p.quant.bits(64).unwrap().1 <= 3.5 + 1e-12);
            assert_eq!(p.report.as_ref().unwrap()["silhouette"], serde_json::Value::Null);
        }
    }
}
