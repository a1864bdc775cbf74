//! The mixed-precision modes of `prune` (flags, and the planner that turns them into a
//! per-linear column grouping and bit widths), and the bit summary of a run.
//!
//! Four modes, one code path:
//! - baseline: no `--target-avg-bits`, uniform `--wbits` (the published algorithms);
//! - enhanced: `--use-mi-grouping 0 --target-avg-bits B`: columns grouped by importance
//!   rank (no MI), bits per group by the allocator;
//! - mi: `--use-mi-grouping 1 --target-avg-bits B`: columns grouped by mutual information;
//! - random: `--grouping random --target-avg-bits B`: the MI grouping's sizes, channels
//!   assigned at random (the control MI must beat).

use crate::bit_alloc::{self, BitBudget, BitPolicy};
use crate::compress::{LinearContext, LinearPlan, LinearReport, Planner};
use crate::grouping::{self, GroupingMethod};
use crate::model::InputSite;
use crate::mutual_info::{self, MiMethod, SymMatrix};
use crate::solver::{ColumnGroup, QuantScheme};
use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Args, Clone, Debug, Serialize)]
pub struct MiArgs {
    /// 1 = group input channels by mutual information (needs --target-avg-bits).
    #[arg(long, default_value_t = 0)]
    pub use_mi_grouping: u8,
    /// Average bits per weight, scale/zero metadata included; off = uniform --wbits.
    #[arg(long)]
    pub target_avg_bits: Option<f64>,
    /// Groups per linear: a number, or "auto" (best silhouette among 2,3,4,5,6,8,10,12,14,16).
    #[arg(long, default_value = "10")]
    pub n_groups: String,
    #[arg(long, default_value_t = 2)]
    pub min_bits: u32,
    #[arg(long, default_value_t = 8)]
    pub max_bits: u32,
    /// MI estimator: corr (Gaussian, from the Hessian's moments), hist or knn (from a reservoir).
    #[arg(long, value_enum, default_value_t = MiMethod::Corr)]
    pub mi_method: MiMethod,
    /// Channel grouping: spectral, hierarchical, kmeans, or random (control).
    #[arg(long, value_enum, default_value_t = GroupingMethod::Spectral)]
    pub grouping: GroupingMethod,
    /// How bits are spread over groups: optimal (default) or thresholds (design notes).
    #[arg(long, value_enum, default_value_t = BitPolicy::Optimal)]
    pub bit_policy: BitPolicy,
    /// Tokens kept per linear input for the hist/knn estimators.
    #[arg(long, default_value_t = 2048)]
    pub reservoir: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Baseline,
    Enhanced,
    Mi,
    Random,
}

impl MiArgs {
    pub fn mode(&self) -> Mode {
        match (self.target_avg_bits, self.use_mi_grouping, self.grouping) {
            (None, _, _) => Mode::Baseline,
            (Some(_), _, GroupingMethod::Random) => Mode::Random,
            (Some(_), 0, _) => Mode::Enhanced,
            (Some(_), _, _) => Mode::Mi,
        }
    }

    pub fn mode_name(&self) -> &'static str {
        match self.mode() {
            Mode::Baseline => "baseline",
            Mode::Enhanced => "enhanced",
            Mode::Mi => "mi",
            Mode::Random => "random",
        }
    }

    fn fixed_groups(&self) -> Result<Option<usize>> {
        if self.n_groups == "auto" {
            return Ok(None);
        }
        match self.n_groups.parse::<usize>() {
            Ok(0) => bail!("--n-groups 0: need at least one group"),
            Ok(k) => Ok(Some(k)),
            Err(_) => bail!("--n-groups '{}' is neither a number nor 'auto'", self.n_groups),
        }
    }

    pub fn validate(&self, _wbits: u32) -> Result<()> {
        if self.use_mi_grouping > 1 {
            bail!("--use-mi-grouping takes 0 or 1");
        }
        if self.min_bits < 2 || self.max_bits > 8 || self.min_bits > self.max_bits {
            bail!("--min-bits {} --max-bits {}: need 2 <= min <= max <= 8", self.min_bits, self.max_bits);
        }
        self.fixed_groups()?;
        match self.target_avg_bits {
            Some(t) => {
                if !(t >= self.min_bits as f64 && t <= self.max_bits as f64) {
                    bail!(
                        "--target-avg-bits {t} is outside --min-bits {} .. --max-bits {}",
                        self.min_bits,
                        self.max_bits
                    );
                }
            }
            None => {
                if self.use_mi_grouping == 1 || self.grouping == GroupingMethod::Random {
                    bail!("MI grouping and the random control spread a bit budget: give --target-avg-bits");
                }
            }
        }
        if self.reservoir < 16 && self.mi_method != MiMethod::Corr {
            bail!("--reservoir {} is too small for the {:?} estimator (at least 16)", self.reservoir, self.mi_method);
        }
        Ok(())
    }

    /// `min_width`: the narrowest linear input of the model.
    pub fn validate_shapes(&self, min_width: usize) -> Result<()> {
        if self.mode() == Mode::Baseline {
            return Ok(());
        }
        if let Some(k) = self.fixed_groups()? {
            if k > min_width {
                bail!("--n-groups {k} exceeds the layer width {min_width}");
            }
        }
        Ok(())
    }

    pub fn reservoir_needed(&self) -> usize {
        if self.mode() != Mode::Baseline && self.mi_method != MiMethod::Corr {
            self.reservoir
        } else {
            0
        }
    }

    fn budget(&self) -> BitBudget {
        BitBudget {
            target_avg_bits: self.target_avg_bits.unwrap_or(16.0),
            min_bits: self.min_bits,
            max_bits: self.max_bits,
        }
    }

    pub fn planner(&self, base: QuantScheme, sym: bool, seed: u64) -> Result<Box<Planner<'static>>> {
        if self.mode() == Mode::Baseline {
            return Ok(crate::cli_prune::uniform_planner(base));
        }
        let args = self.clone();
        let cache: Mutex<HashMap<(usize, InputSite), Arc<ChannelGroups>>> = Mutex::new(HashMap::new());
        Ok(Box::new(move |ctx: &LinearContext| {
            let t0 = Instant::now();
            let importance = bit_alloc::column_importance(ctx.weight, ctx.rows, ctx.cols, ctx.hessian);
            let (groups, fresh) = match args.mode() {
                Mode::Enhanced => (Arc::new(rank_groups(&importance, args.fixed_groups()?.unwrap_or(10))), true),
                _ => {
                    let key = (ctx.layer, ctx.kind.input_site());
                    let cached = cache.lock().expect("planner cache").get(&key).cloned();
                    match cached {
                        Some(g) => (g, false),
                        None => {
                            let g = Arc::new(mi_groups(ctx, &args, seed)?);
                            cache.lock().expect("planner cache").insert(key, g.clone());
                            (g, true)
                        }
                    }
                }
            };
            let plan = plan_bits(ctx, &groups, &importance, &args.budget(), args.bit_policy, sym)?;
            let mut report = plan.1;
            report["mode"] = serde_json::json!(args.mode_name());
            report["k"] = serde_json::json!(groups.sizes().len());
            report["silhouette"] = serde_json::json!(groups.silhouette);
            report["davies_bouldin"] = serde_json::json!(groups.davies_bouldin);
            report["mi_seconds"] = serde_json::json!(if fresh { groups.seconds } else { 0.0 });
            report["mi_memory_bytes"] = serde_json::json!(groups.memory_bytes);
            Ok(LinearPlan { quant: plan.0.quant, perm: plan.0.perm, report: Some(report), plan_seconds: t0.elapsed().as_secs_f64() })
        }))
    }
}

/// A partition of one linear input's channels, with how it was obtained.
pub struct ChannelGroups {
    pub labels: Vec<usize>,
    /// Mean pairwise similarity inside each group (redundancy), 0 where not measured.
    pub redundancy: Vec<f64>,
    pub silhouette: Option<f64>,
    pub davies_bouldin: Option<f64>,
    pub seconds: f64,
    pub memory_bytes: usize,
}

impl ChannelGroups {
    pub fn sizes(&self) -> Vec<usize> {
        grouping::group_sizes(&self.labels)
    }
}

/// Enhanced mode: K groups of (near) equal size by importance rank.
fn rank_groups(importance: &[f64], k: usize) -> ChannelGroups {
    let d = importance.len();
    let k = k.min(d).max(1);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]));
    let mut labels = vec![0; d];
    for (rank, &j) in order.iter().enumerate() {
        labels[j] = rank * k / d;
    }
    ChannelGroups { labels, redundancy: vec![0.0; k], silhouette: None, davies_bouldin: None, seconds: 0.0, memory_bytes: 0 }
}

/// The MI matrix of a linear input, from the accumulated moments or the reservoir.
pub fn mi_matrix(ctx: &LinearContext, method: MiMethod) -> Result<SymMatrix> {
    match method {
        MiMethod::Corr => {
            let rho = mutual_info::correlation_from_moments(&ctx.stats.sum_xxt()?, &ctx.stats.sum_x, ctx.stats.tokens);
            Ok(mutual_info::gaussian_mi(&rho))
        }
        MiMethod::Hist | MiMethod::Knn => match ctx.reservoir {
            Some(r) if !r.is_empty() => Ok(mutual_info::sample_mi(r, method)),
            _ => bail!("the {method:?} estimator needs stored tokens (--reservoir)"),
        },
    }
}

/// MI (or random-control) grouping of one linear input.
pub fn mi_groups(ctx: &LinearContext, args: &MiArgs, seed: u64) -> Result<ChannelGroups> {
    let t0 = Instant::now();
    let mi = mi_matrix(ctx, args.mi_method)?;
    let sim = mutual_info::similarity(&mi);
    let method = if args.grouping == GroupingMethod::Random { GroupingMethod::Spectral } else { args.grouping };
    let mut labels = match args.fixed_groups()? {
        Some(k) => grouping::cluster(&sim, method, k.min(sim.d), seed)?,
        None => grouping::choose_k(&sim, method, &grouping::AUTO_CANDIDATES, seed)?.1,
    };
    if args.grouping == GroupingMethod::Random {
        labels = grouping::random_with_sizes(&grouping::group_sizes(&labels), seed.wrapping_add(ctx.layer as u64 * 7919 + ctx.cols as u64));
    }
    let dist = SymMatrix { d: sim.d, values: sim.values.iter().map(|s| 1.0 - s).collect() };
    let silhouette = grouping::silhouette(&dist, &labels);
    let davies_bouldin = grouping::davies_bouldin(&sim, &labels);
    let k = grouping::group_sizes(&labels).len();
    let mut red_sum = vec![0.0; k];
    let mut red_n = vec![0.0; k];
    for i in 0..sim.d {
        for j in 0..sim.d {
            if i != j && labels[i] == labels[j] {
                red_sum[labels[i]] += sim.get(i, j);
                red_n[labels[i]] += 1.0;
            }
        }
    }
    let redundancy = red_sum.iter().zip(&red_n).map(|(s, n)| if *n > 0.0 { s / n } else { 0.0 }).collect();
    let memory_bytes = 3 * sim.d * sim.d * std::mem::size_of::<f64>();
    Ok(ChannelGroups {
        labels,
        redundancy,
        silhouette: Some(silhouette),
        davies_bouldin: Some(davies_bouldin),
        seconds: t0.elapsed().as_secs_f64(),
        memory_bytes,
    })
}

/// Bits per group and the sweep order. A group's importance is the sum of its columns'
/// OBS saliency, discounted by its redundancy r ∈ [0, 1] as I·(1 − r/2): redundant channels
/// carry shared information, so the error of one is partly recoverable from the others
/// through the OBS update. Groups are swept most important first, columns inside a group
/// by decreasing H_jj (as act-order does).
fn plan_bits(
    ctx: &LinearContext,
    groups: &ChannelGroups,
    importance: &[f64],
    budget: &BitBudget,
    policy: BitPolicy,
    sym: bool,
) -> Result<(LinearPlan, serde_json::Value)> {
    let sizes = groups.sizes();
    let k = sizes.len();
    let mut gimp = vec![0.0; k];
    for (j, &l) in groups.labels.iter().enumerate() {
        gimp[l] += importance[j];
    }
    for g in 0..k {
        gimp[g] *= 1.0 - groups.redundancy.get(g).copied().unwrap_or(0.0) / 2.0;
    }
    let bits = match policy {
        BitPolicy::Optimal => bit_alloc::allocate_optimal(&gimp, &sizes, budget)?,
        BitPolicy::Thresholds => bit_alloc::allocate_thresholds(&gimp, &sizes, budget)?,
    };
    let mut group_order: Vec<usize> = (0..k).collect();
    group_order.sort_by(|&a, &b| (gimp[b] / sizes[b] as f64).total_cmp(&(gimp[a] / sizes[a] as f64)));
    let hdiag = |j: usize| ctx.hessian[j * ctx.cols + j];
    let mut perm = Vec::with_capacity(ctx.cols);
    let mut col_groups = Vec::with_capacity(k);
    for &g in &group_order {
        let mut cols: Vec<usize> = (0..ctx.cols).filter(|&j| groups.labels[j] == g).collect();
        cols.sort_by(|&a, &b| hdiag(b).total_cmp(&hdiag(a)));
        col_groups.push(ColumnGroup { start: perm.len(), len: cols.len(), bits: bits[g] });
        perm.extend(cols);
    }
    let (avg, with_meta) = bit_alloc::groups_bits(&col_groups, ctx.cols);
    let report = serde_json::json!({
        "group_sizes": col_groups.iter().map(|g| g.len).collect::<Vec<_>>(),
        "group_bits": col_groups.iter().map(|g| g.bits).collect::<Vec<_>>(),
        "avg_bits": avg,
        "avg_bits_with_metadata": with_meta,
    });
    Ok((LinearPlan { quant: QuantScheme::Mixed { groups: col_groups, sym }, perm: Some(perm), report: None, plan_seconds: 0.0 }, report))
}

/// Bits of a whole run: averages over all quantized weights.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BitSummary {
    pub quantized: bool,
    pub avg_bits: f64,
    pub avg_bits_with_metadata: f64,
    pub max_linear_bits_with_metadata: f64,
}

impl BitSummary {
    pub fn from_reports(reports: &[LinearReport], wbits: u32) -> Self {
        let mut n = 0f64;
        let (mut b, mut m, mut mx) = (0f64, 0f64, 0f64);
        for r in reports {
            if let (Some(bits), Some(meta)) = (r.avg_bits, r.avg_bits_with_metadata) {
                let w = (r.rows * r.cols) as f64;
                n += w;
                b += bits * w;
                m += meta * w;
                mx = mx.max(meta);
            }
        }
        if n == 0.0 {
            return BitSummary { quantized: false, avg_bits: 16.0f64.min(wbits as f64), ..Default::default() };
        }
        BitSummary { quantized: true, avg_bits: b / n, avg_bits_with_metadata: m / n, max_linear_bits_with_metadata: mx }
    }

    pub fn describe(&self) -> String {
        if self.quantized {
            format!("{:.4} bits/weight ({:.4} with scale/zero metadata)", self.avg_bits, self.avg_bits_with_metadata)
        } else {
            "not quantized".to_string()
        }
    }
}
