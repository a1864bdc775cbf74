//! Planning beside solving, for one layer. Planning runs on its own threads, one input site
//! at a time per thread, all sites at once, the widest input (the longest plan) first.
//! Where the GPU solves, a site's linears are solved as soon as its plans are in, in the
//! order plans arrive (the linears of a layer are solved independently, against H from the
//! uncompressed layer, so the order changes nothing), and the planning of later sites
//! overlaps the solves of earlier ones. On the host, solves wait for all plans and go in
//! layer order: there planning and solving would compete for the same cores.

use super::planner::{LinearPlan, LinearWeights, Planner, SiteContext};
use super::statistics::SiteStatistics;
use super::{CompressConfig, LinearReport, PhaseTimes, SolvedSink};
use crate::model::{DecoderLayer, InputSite, LinearKind};
use crate::solver::{self, HessianUse, ScalePrecision, SolvedWeight, SweepSpec};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Tensor};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

/// One layer's solves: which layer, the run's settings, and where solved weights go.
pub(super) struct LayerJob<'a> {
    pub index: usize,
    pub cfg: &'a CompressConfig,
    pub storage: Storage<'a>,
}

/// What the solves account for: phase times, and notes printed once per run.
pub(super) struct Ledger<'a> {
    pub times: &'a mut PhaseTimes,
    pub notes: &'a mut BTreeSet<String>,
}

/// A solved linear: its report, and the n:m channel sets it was pruned with (where its plan
/// gave some), which a fold needs.
pub(super) struct SolvedLinear {
    pub kind: LinearKind,
    pub report: LinearReport,
    pub nm_sets: Option<Arc<Vec<u32>>>,
}

/// One layer's linears (those reading the `stats` sites), planned and solved, their weights
/// installed in `layer`. Returns them in layer order.
pub(super) fn plan_and_solve(
    layer: &mut DecoderLayer,
    job: &LayerJob,
    stats: &BTreeMap<InputSite, SiteStatistics>,
    planner: &dyn Planner,
    ledger: &mut Ledger,
) -> Result<Vec<SolvedLinear>> {
    let (index, cfg) = (job.index, job.cfg);
    let kinds = layer.kinds();
    // A NaN or Inf in H reaches every plan and solve of its linears: stop here, with why.
    for (&site, st) in stats {
        if let Some(what) = st.hessian.non_finite()? {
            let names: Vec<&str> = linears_of(kinds, site).map(|k| kinds[k].path()).collect();
            bail!(
                "layer {index} {}: the Hessian has non-finite entries ({what}): the layer's inputs overflowed (or their f32 Gram sum did) or hold NaN",
                names.join("/")
            );
        }
    }
    let hessian_diags: BTreeMap<InputSite, Vec<f64>> =
        stats.iter().map(|(&s, st)| Ok((s, st.hessian.diagonal()?))).collect::<Result<_>>()?;
    let overlap = layer.linear(LinearKind::Q).weight().device().is_cuda() && !cfg.host_solver;
    // Host copies of the weights, for a planner that reads them and for the host solver
    // (empty otherwise: the device solver reads the layer's tensors).
    let host_copies = planner.needs().weights || !overlap;
    let weights: Vec<((usize, usize), Vec<f32>)> = kinds
        .iter()
        .map(|&kind| {
            let wt = layer.linear(kind).weight();
            Ok((wt.dims2()?, if host_copies { solver::host_values(wt)? } else { Vec::new() }))
        })
        .collect::<Result<_>>()?;
    // Sites in layer order (the host's solve order), and widest first (the planning order).
    let sites: Vec<InputSite> = stats.keys().copied().collect();
    let mut planning_order: Vec<usize> = (0..sites.len()).collect();
    planning_order.sort_by_key(|&s| std::cmp::Reverse(site_width(kinds, &weights, sites[s])));
    let contexts = site_contexts(index, kinds, &sites, stats, &hessian_diags, &weights);
    let mut reports: Vec<Option<SolvedLinear>> = (0..kinds.len()).map(|_| None).collect();
    std::thread::scope(|scope| -> Result<()> {
        let (send, planned) = std::sync::mpsc::channel::<(usize, Result<Vec<LinearPlan>>)>();
        let (contexts, planning_order) = (&contexts, &planning_order);
        let planning = scope.spawn(move || {
            use rayon::prelude::*;
            let t = Instant::now();
            planning_order.par_iter().with_max_len(1).for_each_with(send, |send, &s| {
                let _ = send.send((s, planner.plan_site(&contexts[s])));
            });
            t.elapsed().as_secs_f64()
        });
        let mut plans: Vec<Option<Vec<LinearPlan>>> = (0..sites.len()).map(|_| None).collect();
        let receive = |plans: &mut Vec<Option<Vec<LinearPlan>>>| -> Result<usize> {
            let (s, p) = planned.recv().map_err(|_| anyhow!("planning thread ended early"))?;
            crate::progress::trace(|| format!("layer {index} {:?}: plan in", sites[s]));
            plans[s] = Some(p?);
            Ok(s)
        };
        if !overlap {
            let tw = Instant::now();
            for _ in 0..sites.len() {
                receive(&mut plans)?;
            }
            ledger.times.plan_s += tw.elapsed().as_secs_f64();
        }
        for next in 0..sites.len() {
            let tw = Instant::now();
            let s = if overlap { receive(&mut plans)? } else { next };
            ledger.times.plan_s += tw.elapsed().as_secs_f64();
            let site_plans = plans[s].take().ok_or_else(|| anyhow!("no plan for {:?}", sites[s]))?;
            let n_plans = site_plans.len();
            for (i, (k, plan)) in linears_of(kinds, sites[s]).zip(site_plans).enumerate() {
                // The site's last linear is its Hessian's last reader (the statistics go when
                // the layer is done).
                let h_use = if i + 1 == n_plans { HessianUse::LastReader } else { HessianUse::Shared };
                let nm_sets = plan.scheme.nm_sets.clone();
                let report = solve_one(layer, job, k, &weights[k], (&stats[&sites[s]], h_use), plan, ledger)?;
                reports[k] = Some(SolvedLinear { kind: kinds[k], report, nm_sets });
            }
        }
        ledger.times.plan_thread_s += planning.join().map_err(|_| anyhow!("planning thread panicked"))?;
        Ok(())
    })?;
    // Reports in layer order, whatever order the linears were solved in.
    Ok(reports.into_iter().flatten().collect())
}

/// What the planner sees of each site, in `sites` order.
fn site_contexts<'a>(
    index: usize,
    kinds: &[LinearKind],
    sites: &[InputSite],
    stats: &'a BTreeMap<InputSite, SiteStatistics>,
    hessian_diags: &'a BTreeMap<InputSite, Vec<f64>>,
    weights: &'a [((usize, usize), Vec<f32>)],
) -> Vec<SiteContext<'a>> {
    sites
        .iter()
        .map(|&site| SiteContext {
            layer: index,
            site,
            cols: site_width(kinds, weights, site),
            hessian_diag: &hessian_diags[&site],
            hessian: Some(&stats[&site].hessian),
            moments: stats[&site].moments.as_ref(),
            reservoir: stats[&site].reservoir.as_ref().map(|r| r.rows.as_slice()),
            linears: linears_of(kinds, site)
                .map(|k| LinearWeights { kind: kinds[k], rows: weights[k].0 .0, weight: &weights[k].1 })
                .collect(),
        })
        .collect()
}

/// Indices into the layer's `kinds` of the linears reading `site`.
fn linears_of(kinds: &[LinearKind], site: InputSite) -> impl Iterator<Item = usize> + '_ {
    (0..kinds.len()).filter(move |&k| kinds[k].input_site() == site)
}

fn site_width(kinds: &[LinearKind], weights: &[((usize, usize), Vec<f32>)], site: InputSite) -> usize {
    linears_of(kinds, site).next().map_or(0, |k| weights[k].0 .1)
}

/// Where a solved weight goes: rounded to the checkpoint's dtype, and shown to the sink.
pub(super) struct Storage<'a> {
    pub dtype: DType,
    pub sink: &'a dyn SolvedSink,
}

/// Solves linear `k` of the layer with its plan, installs the result, and reports it.
fn solve_one(
    layer: &mut DecoderLayer,
    job: &LayerJob,
    k: usize,
    weight: &((usize, usize), Vec<f32>),
    (stats, h_use): (&SiteStatistics, HessianUse),
    plan: LinearPlan,
    ledger: &mut Ledger,
) -> Result<LinearReport> {
    let (index, cfg, storage) = (job.index, job.cfg, &job.storage);
    let kind = layer.kinds()[k];
    let device = layer.linear(kind).weight().device().clone();
    crate::progress::trace(|| {
        format!("layer {index} {}: solving{}", kind.path(), crate::device_memory::describe(&device))
    });
    let ((rows, cols), w) = weight;
    let (rows, cols) = (*rows, *cols);
    let ts = Instant::now();
    // Grids are fitted with scales as the checkpoint stores them (`SweepSpec::scale_precision`).
    let spec = SweepSpec {
        settings: &cfg.sweep,
        scheme: &plan.scheme,
        scale_precision: ScalePrecision::of_storage(storage.dtype),
    };
    let solved = solver::solve_linear(
        layer.linear(kind).weight(),
        (!w.is_empty()).then_some(w.as_slice()),
        &stats.hessian,
        h_use,
        spec,
        cfg.host_solver,
    )
    .with_context(|| format!("layer {index} {}", kind.path()))?;
    if let Some(why) = &solved.host_reason {
        if ledger.notes.insert(why.clone()) {
            eprintln!("note: solving on the host: {why}");
        }
    }
    let finite = match &solved.weight {
        SolvedWeight::Host(w) => crate::numerics::all_finite_f32(w),
        SolvedWeight::Device(t) => crate::numerics::all_finite(t)?,
    };
    if !solved.loss.is_finite() || !finite {
        let values: Vec<f64> = solved.weight.to_host()?.iter().map(|&x| x as f64).collect();
        return Err(crate::advice::advised(
            format!(
                "layer {index} {}: the solve gave non-finite weights ({}; loss {}) from a finite Hessian: the damped Hessian is too ill-conditioned for {:?}",
                kind.path(),
                crate::numerics::describe_values(&values, &[rows, cols]),
                solved.loss,
                cfg.sweep.hinv_precision
            ),
            crate::advice::Remedy::F64InverseOrMoreDamping,
        ));
    }
    if storage.sink.needs_weight(solved.grids.as_ref()) {
        let copied;
        let w = match solved.weight.as_host() {
            Some(w) => w,
            None => {
                copied = solved.weight.to_host()?;
                &copied
            }
        };
        storage
            .sink
            .solved(index, kind, w, solved.grids.as_ref())
            .map_err(|e| anyhow!("layer {index} {}: {e}", kind.path()))?;
    }
    crate::progress::trace(|| {
        format!("layer {index} {}: solved{}", kind.path(), crate::device_memory::describe(&device))
    });
    let dtype = storage.dtype;
    let installed = install_solved(layer, kind, solved.weight, (rows, cols), dtype)?;
    let Some(wq) = installed.host_values else {
        bail!(
            "layer {index} {}: compressed weights overflow the checkpoint's {dtype:?} (they are rounded to it, as the reference does)",
            kind.path()
        );
    };
    let zero_fraction = installed.zero_fraction;
    let (max_distinct_per_row, max_distinct_per_group) =
        solver::scheme::max_levels(&wq, cols, &plan.scheme.quant, plan.scheme.perm.as_deref());
    let solve_seconds = ts.elapsed().as_secs_f64();
    ledger.times.solve_s += solve_seconds;
    let bits = plan.scheme.quant.bits(cols);
    Ok(LinearReport {
        layer: index,
        name: kind.path().to_string(),
        rows,
        cols,
        zero_fraction,
        pruned_fraction: solved.pruned as f64 / (rows * cols) as f64,
        loss: solved.loss,
        solve_seconds,
        plan_seconds: plan.plan_seconds,
        avg_bits: bits.map(|b| b.0),
        avg_bits_with_metadata: bits.map(|b| b.1),
        max_distinct_per_row,
        max_distinct_per_group,
        plan: plan.report,
        fold: None,
    })
}

/// Rounds compressed weights to the checkpoint's storage dtype, as the reference does when
/// it writes them back (`.to(weight.dtype)`), so evaluation, saving and reloading agree.
fn to_storage_precision(mut w: Vec<f32>, storage: DType) -> Vec<f32> {
    use rayon::prelude::*;
    match storage {
        DType::F16 => w.par_iter_mut().for_each(|x| *x = half::f16::from_f32(*x).to_f32()),
        DType::BF16 => w.par_iter_mut().for_each(|x| *x = half::bf16::from_f32(*x).to_f32()),
        _ => {}
    }
    w
}

/// Rounds a compressed weight to storage precision, puts it into the layer, and returns it
/// with its zero fraction.
pub(super) fn install(
    layer: &mut DecoderLayer,
    kind: LinearKind,
    w: Vec<f32>,
    shape: (usize, usize),
    storage: DType,
) -> Result<(Vec<f32>, f64)> {
    let w = to_storage_precision(w, storage);
    let zero_fraction = w.iter().filter(|&&x| x == 0.0).count() as f64 / w.len() as f64;
    let device = layer.linear(kind).weight().device().clone();
    layer.set_weight(kind, Tensor::from_vec(w.clone(), shape, &device)?)?;
    Ok((w, zero_fraction))
}

/// A solved weight as installed: its values at storage precision on the host (None where
/// they overflow it) and its zero fraction.
struct Installed {
    host_values: Option<Vec<f32>>,
    zero_fraction: f64,
}

/// `install` for a solved weight wherever the solver left it. A weight on the device is
/// rounded and checked there (the same round-to-nearest-even as the host's `half`
/// conversion) and installed without a round trip; only its rounded values come back, for
/// the level and zero counts.
fn install_solved(
    layer: &mut DecoderLayer,
    kind: LinearKind,
    weight: SolvedWeight,
    shape: (usize, usize),
    storage: DType,
) -> Result<Installed> {
    match weight {
        SolvedWeight::Host(w) => {
            let (wq, zero_fraction) = install(layer, kind, w, shape, storage)?;
            let finite = crate::numerics::all_finite_f32(&wq);
            Ok(Installed { host_values: finite.then_some(wq), zero_fraction })
        }
        SolvedWeight::Device(t) => {
            let stored = if storage == DType::F32 { t } else { t.to_dtype(storage)? };
            if !crate::numerics::all_finite(&stored)? {
                return Ok(Installed { host_values: None, zero_fraction: 0.0 });
            }
            // Zeros counted on the host copy the level counts need anyway (no device mask).
            let host_values = solver::host_values(&stored)?;
            let zeros = {
                use rayon::prelude::*;
                host_values.par_iter().filter(|&&x| x == 0.0).count()
            };
            layer.set_weight(kind, stored)?;
            Ok(Installed { host_values: Some(host_values), zero_fraction: zeros as f64 / (shape.0 * shape.1) as f64 })
        }
    }
}
