//! The mixed-precision modes of `prune` (flags, and the planner that turns them into a
//! per-linear column grouping and bit widths), and the bit summary of a run.
//!
//! Four modes, one code path:
//! - baseline: no `--target-avg-bits`, uniform `--wbits` (the published algorithms);
//! - enhanced: `--use-mi-grouping 0 --target-avg-bits B`: columns grouped by importance
//!   rank (no MI), bits per group by the allocator;
//! - mi: `--use-mi-grouping 1 --target-avg-bits B`: columns grouped by mutual information;
//! - random: `--grouping random --target-avg-bits B`: the MI grouping's sizes, channels
//!   assigned at random (the control MI must beat). The sizes come from the MI grouping of
//!   the control run's own activations (equal to MI mode's in layer 0; later layers see
//!   differently compressed predecessors).

use crate::bit_alloc::{self, BitBudget, BitPolicy};
use crate::compress::{LinearContext, LinearPlan, LinearReport, Planner};
use crate::grouping::{self, GroupingMethod};
use crate::grouping_tensor;
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
            // The narrowest linear must afford K groups at min bits with their metadata.
            let floor = self.min_bits as f64 + k as f64 * bit_alloc::metadata_bits(self.min_bits) / min_width as f64;
            if let Some(t) = self.target_avg_bits {
                if floor > t + 1e-9 {
                    bail!(
                        "--target-avg-bits {t} cannot pay for {k} groups on {min_width}-wide layers: their scale/zero metadata at --min-bits {} alone cost {floor:.4} bits/weight; use fewer --n-groups or a higher target",
                        self.min_bits
                    );
                }
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
            let importance = bit_alloc::column_importance(ctx.weight, ctx.rows, ctx.cols, ctx.hessian_diag);
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
            report["mi_similarity_seconds"] = serde_json::json!(if fresh { groups.similarity_seconds } else { 0.0 });
            report["mi_clustering_seconds"] = serde_json::json!(if fresh { groups.clustering_seconds } else { 0.0 });
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
    /// Wall time of the whole grouping, and of its similarity and clustering steps (the
    /// rest is the quality scores and redundancy).
    pub seconds: f64,
    pub similarity_seconds: f64,
    pub clustering_seconds: f64,
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
    ChannelGroups {
        labels,
        redundancy: vec![0.0; k],
        silhouette: None,
        davies_bouldin: None,
        seconds: 0.0,
        similarity_seconds: 0.0,
        clustering_seconds: 0.0,
        memory_bytes: 0,
    }
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
    let d = ctx.cols;
    let method = if args.grouping == GroupingMethod::Random { GroupingMethod::Spectral } else { args.grouping };
    let fixed_k = args.fixed_groups()?;
    let randomise = |labels: Vec<usize>| {
        if args.grouping == GroupingMethod::Random {
            grouping::random_with_sizes(&grouping::group_sizes(&labels), seed.wrapping_add(ctx.layer as u64 * 7919 + ctx.cols as u64))
        } else {
            labels
        }
    };
    // The default recipe (Gaussian MI, spectral, fixed K) runs as tensor ops
    // (`grouping_tensor`): on the GPU where the moments are, else on the host's tensors, so
    // that both paths group with the same eigensolver. Everything else runs on the host.
    let default_recipe = args.mi_method == MiMethod::Corr && method == GroupingMethod::Spectral;
    let (labels, quality, similarity_seconds, clustering_seconds) = match fixed_k.filter(|_| default_recipe) {
        Some(k) => {
            let host_moments;
            let sxx = match ctx.stats.sum_xxt_device() {
                Some(t) => t,
                None => {
                    host_moments = candle_core::Tensor::from_vec(ctx.stats.sum_xxt()?, (d, d), &candle_core::Device::Cpu)?;
                    &host_moments
                }
            };
            let sim = mutual_info::gaussian_similarity_tensor(sxx, &ctx.stats.sum_x, ctx.stats.tokens)?;
            let similarity_seconds = t0.elapsed().as_secs_f64();
            let labels = randomise(grouping_tensor::spectral(&sim, k.min(d), seed)?);
            let clustering_seconds = t0.elapsed().as_secs_f64() - similarity_seconds;
            let quality = grouping_tensor::quality(&sim, &labels)?;
            (labels, quality, similarity_seconds, clustering_seconds)
        }
        None => {
            let sim = match args.mi_method {
                MiMethod::Corr => mutual_info::gaussian_similarity(mutual_info::correlation_from_moments(
                    &ctx.stats.sum_xxt()?,
                    &ctx.stats.sum_x,
                    ctx.stats.tokens,
                )),
                _ => mutual_info::similarity(&mi_matrix(ctx, args.mi_method)?),
            };
            let similarity_seconds = t0.elapsed().as_secs_f64();
            let labels = randomise(match fixed_k {
                Some(k) => grouping::cluster(&sim, method, k.min(d), seed)?,
                None => grouping::choose_k(&sim, method, &grouping::AUTO_CANDIDATES, seed)?.1,
            });
            let clustering_seconds = t0.elapsed().as_secs_f64() - similarity_seconds;
            let quality = grouping::quality(&sim, &labels);
            (labels, quality, similarity_seconds, clustering_seconds)
        }
    };
    let grouping::GroupQuality { silhouette, davies_bouldin, redundancy } = quality;
    let memory_bytes = 3 * d * d * std::mem::size_of::<f64>();
    let seconds = t0.elapsed().as_secs_f64();
    Ok(ChannelGroups {
        labels,
        redundancy,
        silhouette: Some(silhouette),
        davies_bouldin: Some(davies_bouldin),
        seconds,
        similarity_seconds,
        clustering_seconds,
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
    for (g, imp) in gimp.iter_mut().enumerate() {
        *imp *= 1.0 - groups.redundancy.get(g).copied().unwrap_or(0.0) / 2.0;
    }
    let bits = match policy {
        BitPolicy::Optimal => bit_alloc::allocate_optimal(&gimp, &sizes, budget)?,
        BitPolicy::Thresholds => bit_alloc::allocate_thresholds(&gimp, &sizes, budget)?,
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

/// `sparsegpt-mi mi`: the MI matrix of one linear's input channels, ordered by group.
#[derive(Args, Clone)]
pub struct MiInspectArgs {
    /// Model directory (HF layout) or hub id.
    pub model: String,
    /// Decoder layer index.
    #[arg(long)]
    pub layer: usize,
    /// Linear: q_proj, k_proj, v_proj, out_proj, fc1 or fc2.
    #[arg(long)]
    pub linear: String,
    #[arg(long, default_value_t = 16)]
    pub nsamples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = crate::calibration::SamplerKind::Python)]
    pub sampler: crate::calibration::SamplerKind,
    /// Output directory for mi_L<layer>_<linear>.png and .json.
    #[arg(long, default_value = "test_results/mi")]
    pub out: std::path::PathBuf,
    #[command(flatten)]
    pub mi: MiArgs,
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Maps t ∈ [0, 1] to a dark-to-bright colour ramp (black → purple → orange → yellow).
fn colour(t: f64) -> [u8; 3] {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [0.0, 0.0, 4.0]),
        (0.25, [87.0, 16.0, 110.0]),
        (0.5, [188.0, 55.0, 84.0]),
        (0.75, [249.0, 142.0, 9.0]),
        (1.0, [252.0, 255.0, 164.0]),
    ];
    let t = t.clamp(0.0, 1.0);
    for w in STOPS.windows(2) {
        let ((t0, c0), (t1, c1)) = (w[0], w[1]);
        if t <= t1 {
            let f = (t - t0) / (t1 - t0);
            return [0, 1, 2].map(|i| (c0[i] + f * (c1[i] - c0[i])).round() as u8);
        }
    }
    [252, 255, 164]
}

/// Writes `m` (already ordered) as an RGB PNG. The colour scale saturates at the 99th
/// percentile of the off-diagonal values, so a few near-duplicate channels do not wash
/// out the block structure.
pub fn write_heatmap(path: &std::path::Path, m: &SymMatrix) -> Result<()> {
    let d = m.d;
    let mut off: Vec<f64> = (0..d * d).filter(|k| k / d != k % d).map(|k| m.values[k]).collect();
    off.sort_by(|a, b| a.total_cmp(b));
    let max = off.get((off.len() as f64 * 0.99) as usize).copied().unwrap_or(1.0).max(1e-12);
    let mut pixels = Vec::with_capacity(d * d * 3);
    for k in 0..d * d {
        let v = if k / d == k % d { max } else { m.values[k] };
        pixels.extend_from_slice(&colour(v / max));
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, d as u32, d as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header()?;
        w.write_image_data(&pixels)?;
    }
    crate::report::write_atomic(path, &bytes)
}

pub fn run_mi_inspect(args: MiInspectArgs) -> Result<()> {
    let kind = crate::model::LinearKind::from_path(&args.linear).ok_or_else(|| {
        anyhow::anyhow!("unknown --linear '{}': use q_proj, k_proj, v_proj, out_proj, fc1 or fc2", args.linear)
    })?;
    args.mi.validate(16)?;
    let device = crate::device_from_name(&args.device)?;
    let data_dir = args.data_dir.clone().unwrap_or_else(crate::data::default_data_dir);
    let files = crate::hub::resolve_model(&args.model)?;
    let tok = crate::tokenizer::load(&files.tokenizer)?;
    let mut model = crate::model::load_model(&files, &device, crate::cli::compute_dtype(&device))?;
    if args.layer >= model.layers.len() {
        bail!("--layer {} is out of range: the model has {} decoder layers", args.layer, model.layers.len());
    }
    let docs = crate::data::calibration_documents(crate::data::Corpus::C4, &data_dir)?;
    let calib = crate::calibration::build(&docs, &tok, args.nsamples, crate::data::SEQLEN, args.seed, args.sampler)?;
    // Only layers up to the inspected one are needed; nothing is compressed.
    model.layers.truncate(args.layer + 1);
    let captured: Mutex<Option<(SymMatrix, ChannelGroups)>> = Mutex::new(None);
    let mi_args = MiArgs { use_mi_grouping: 1, target_avg_bits: Some(4.0), ..args.mi.clone() };
    let planner = |ctx: &LinearContext| -> Result<LinearPlan> {
        if ctx.kind == kind {
            let mi = mi_matrix(ctx, mi_args.mi_method)?;
            let groups = mi_groups(ctx, &mi_args, args.seed)?;
            *captured.lock().expect("capture") = Some((mi, groups));
        }
        Ok(LinearPlan { quant: QuantScheme::None, perm: None, report: None, plan_seconds: 0.0 })
    };
    let cfg = crate::compress::CompressConfig {
        solver: crate::solver::SolverConfig::published(),
        gmp: false,
        minlayer: args.layer as i64,
        maxlayer: args.layer as i64 + 1,
        reservoir: mi_args.reservoir_needed(),
        batch: crate::eval::windows_per_pass(&device),
        channel_stats: true,
        seed: args.seed,
        host_solver: true,
        hessian_accumulation: crate::hessian::HessianAccumulation::default(),
    };
    let storage = model.storage_dtype;
    crate::compress::compress(&mut model, &calib.windows, &cfg, storage, &planner)?;
    let (mi, groups) = captured
        .into_inner()
        .expect("capture")
        .ok_or_else(|| anyhow::anyhow!("layer {} {} was not reached", args.layer, kind.path()))?;
    let d = mi.d;
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by_key(|&j| (groups.labels[j], j));
    let ordered = SymMatrix { d, values: (0..d * d).map(|k| mi.get(order[k / d], order[k % d])).collect() };
    let stem = format!("mi_L{}_{}", args.layer, kind.path().rsplit('.').next().unwrap_or("linear"));
    let png_path = args.out.join(format!("{stem}.png"));
    let json_path = args.out.join(format!("{stem}.json"));
    write_heatmap(&png_path, &ordered)?;
    let json = serde_json::json!({
        "model": args.model,
        "layer": args.layer,
        "linear": kind.path(),
        "channels": d,
        "nsamples": args.nsamples,
        "mi_method": mi_args.mi_method,
        "grouping": mi_args.grouping,
        "k": groups.sizes().len(),
        "group_sizes": groups.sizes(),
        "labels": groups.labels,
        "silhouette": groups.silhouette,
        "davies_bouldin": groups.davies_bouldin,
        "redundancy": groups.redundancy,
        "mi_seconds": groups.seconds,
        "order": order,
        "mi_ordered": ordered.values,
    });
    crate::report::write_json_atomic(&json_path, &json)?;
    println!(
        "layer {} {}: {} channels, K = {}, sizes {:?}, silhouette {:.3}, Davies-Bouldin {:.3}",
        args.layer,
        kind.path(),
        d,
        groups.sizes().len(),
        groups.sizes(),
        groups.silhouette.unwrap_or(0.0),
        groups.davies_bouldin.unwrap_or(0.0)
    );
    println!("wrote {} and {}", png_path.display(), json_path.display());
    Ok(())
}
