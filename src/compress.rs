//! The layer-sequential pipeline of SparseGPT/GPTQ's `opt_sequential`: the inputs of
//! decoder layer 0 are caught once; for each layer one calibration pass accumulates the
//! Hessians of its linears (q, k and v share theirs), each linear is solved, and the
//! layer's outputs are recomputed with the compressed weights to become the next layer's
//! inputs. Memory: one layer's weights and statistics plus the calibration activations.

use crate::hessian::HessianAccumulator;
use crate::model::{InputSite, LinearKind, OptModel};
use crate::solver::{self, QuantScheme, SolverConfig};
use anyhow::Result;
use candle_core::{DType, Tensor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// What the planner sees of one linear before it is solved.
pub struct LinearContext<'a> {
    pub layer: usize,
    pub kind: LinearKind,
    pub rows: usize,
    pub cols: usize,
    pub weight: &'a [f32],
    /// The diagonal of H = 2/n Σ x xᵀ, undamped.
    pub hessian_diag: &'a [f64],
    pub stats: &'a HessianAccumulator,
    /// Stored calibration tokens of this input (for non-Gaussian MI estimators), if kept.
    pub reservoir: Option<&'a [Vec<f32>]>,
}

/// How one linear is to be solved: its quantization scheme and column order, plus a
/// free-form report of how that was decided.
pub struct LinearPlan {
    pub quant: QuantScheme,
    pub perm: Option<Vec<usize>>,
    pub report: Option<serde_json::Value>,
    pub plan_seconds: f64,
}

pub type Planner<'a> = dyn Fn(&LinearContext) -> Result<LinearPlan> + Sync + 'a;

#[derive(Clone, Debug)]
pub struct CompressConfig {
    pub solver: SolverConfig,
    /// Magnitude pruning instead of SparseGPT (no calibration needed).
    pub gmp: bool,
    /// Only layers in [minlayer, maxlayer) are compressed.
    pub minlayer: i64,
    pub maxlayer: i64,
    /// Calibration tokens to keep per linear input for sample-based MI (0 = none).
    pub reservoir: usize,
    /// Keep Σ x xᵀ in f64 too, for channel statistics (MI modes).
    pub channel_stats: bool,
    /// Calibration windows per forward pass (larger batches mean fewer, larger GPU launches).
    pub batch: usize,
    pub seed: u64,
    /// Solve on the host even when the model runs on a GPU.
    pub host_solver: bool,
    /// How H is accumulated (the reference's running average by default).
    pub hessian_accumulation: crate::hessian::HessianAccumulation,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinearReport {
    pub layer: usize,
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub zero_fraction: f64,
    pub loss: f64,
    pub solve_seconds: f64,
    pub plan_seconds: f64,
    /// Bits per weight of the quantization scheme, without and with scale/zero metadata.
    pub avg_bits: Option<f64>,
    pub avg_bits_with_metadata: Option<f64>,
    /// Most distinct values in one row, and in one (row, quantization group).
    pub max_distinct_per_row: usize,
    pub max_distinct_per_group: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseTimes {
    pub catch_inputs_s: f64,
    pub calibration_forward_s: f64,
    /// Time the layer loop waited for plans (MI statistics, grouping, bit allocation).
    pub plan_s: f64,
    /// Wall time of the planning threads (all inputs' plans, in parallel), which on the GPU
    /// overlaps the solves: what planning would add with no overlap.
    pub plan_thread_s: f64,
    pub solve_s: f64,
    pub recompute_s: f64,
    pub total_s: f64,
    /// Wall time of each decoder layer (calibration pass, planning, solving, recompute,
    /// and with `--offload` the transfers), to predict the cost of deeper models.
    pub per_layer_s: Vec<f64>,
}

fn weight_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
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
fn install(layer: &mut crate::model::DecoderLayer, kind: LinearKind, w: Vec<f32>, shape: (usize, usize), storage: DType) -> Result<(Vec<f32>, f64)> {
    let w = to_storage_precision(w, storage);
    let zero_fraction = w.iter().filter(|&&x| x == 0.0).count() as f64 / w.len() as f64;
    let device = layer.linear(kind).weight().device().clone();
    layer.set_weight(kind, Tensor::from_vec(w.clone(), shape, &device)?)?;
    Ok((w, zero_fraction))
}

fn in_range(cfg: &CompressConfig, layer: usize) -> bool {
    (cfg.minlayer..cfg.maxlayer).contains(&(layer as i64))
}

/// Reservoir sampling (Algorithm R) of token rows, per input site, with a fixed seed.
struct Reservoir {
    cap: usize,
    seen: usize,
    rows: Vec<Vec<f32>>,
    state: u64,
}

impl Reservoir {
    fn new(cap: usize, seed: u64) -> Self {
        Reservoir { cap, seen: 0, rows: Vec::new(), state: seed ^ 0x9E37_79B9_7F4A_7C15 }
    }
    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }
    fn add(&mut self, x: &Tensor) -> Result<()> {
        let d = *x.dims().last().unwrap_or(&0);
        let flat: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        for row in flat.chunks(d) {
            self.seen += 1;
            if self.rows.len() < self.cap {
                self.rows.push(row.to_vec());
            } else {
                let j = (self.next() % self.seen as u64) as usize;
                if j < self.cap {
                    self.rows[j] = row.to_vec();
                }
            }
        }
        Ok(())
    }
}

/// The device Σ x xᵀ to solve with on the GPU, or None where the host solves: no GPU, the
/// user asked for the host, or a setting only the host solver has.
fn device_solver_input<'a>(cfg: &CompressConfig, solver_cfg: &SolverConfig, acc: &'a HessianAccumulator) -> Option<&'a Tensor> {
    #[cfg(feature = "cuda")]
    if !cfg.host_solver && acc.sum_xxt_f32_device().is_some() {
        match crate::solver_cuda::unsupported(solver_cfg, acc.dim) {
            None => return acc.sum_xxt_f32_device(),
            Some(why) => {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| eprintln!("note: solving on the host: {why}"));
            }
        }
    }
    let _ = (cfg, solver_cfg, acc);
    None
}

/// Compresses `model` in place. `planner` decides each linear's quantization.
pub fn compress(
    model: &mut OptModel,
    calibration: &[Vec<u32>],
    cfg: &CompressConfig,
    storage_dtype: DType,
    planner: &Planner,
) -> Result<(Vec<LinearReport>, PhaseTimes)> {
    let t_start = Instant::now();
    let mut times = PhaseTimes::default();
    let mut reports = Vec::new();

    if cfg.gmp {
        for (i, layer) in model.layers.iter_mut().enumerate() {
            if !in_range(cfg, i) {
                continue;
            }
            for kind in LinearKind::ALL {
                let t0 = Instant::now();
                let wt = layer.linear(kind).weight().clone();
                let (rows, cols) = wt.dims2()?;
                let mut w = weight_vec(&wt)?;
                solver::magnitude_prune(&mut w, cfg.solver.sparsity);
                let (_, zero_fraction) = install(layer, kind, w, (rows, cols), storage_dtype)?;
                reports.push(LinearReport {
                    layer: i,
                    name: kind.path().to_string(),
                    rows,
                    cols,
                    zero_fraction,
                    loss: 0.0,
                    solve_seconds: t0.elapsed().as_secs_f64(),
                    plan_seconds: 0.0,
                    avg_bits: None,
                    avg_bits_with_metadata: None,
                    max_distinct_per_row: 0,
                    max_distinct_per_group: 0,
                    plan: None,
                });
            }
        }
        times.solve_s = t_start.elapsed().as_secs_f64();
        times.total_s = times.solve_s;
        return Ok((reports, times));
    }

    if cfg.channel_stats && model.device.is_cuda() {
        // Loads the MI grouping's f64 device kernels now rather than inside the first
        // layer's planning (counted in compress time, not in plan_s).
        crate::grouping_tensor::warm_up(&model.device)?;
    }
    let t0 = Instant::now();
    let mask = model.causal_mask(calibration[0].len())?;
    let mut inps: Vec<Tensor> = calibration
        .chunks(cfg.batch.max(1))
        .map(|ws| {
            let ids: Vec<u32> = ws.iter().flatten().copied().collect();
            model.embed(&Tensor::from_vec(ids, (ws.len(), ws[0].len()), &model.device)?)
        })
        .collect::<Result<_>>()?;
    times.catch_inputs_s = t0.elapsed().as_secs_f64();

    let pb = crate::progress::bar(model.layers.len(), "compress");
    for i in 0..model.layers.len() {
        let t_layer = Instant::now();
        // The layer being worked on, on the compute device (a no-op unless offloaded).
        let mut layer = model.layers[i].to_device(&model.device)?;
        if !in_range(cfg, i) {
            // Untouched layer: its outputs still feed the next one.
            let t = Instant::now();
            for x in inps.iter_mut() {
                *x = layer.forward(x, &mask, None)?;
            }
            times.recompute_s += t.elapsed().as_secs_f64();
            times.per_layer_s.push(t_layer.elapsed().as_secs_f64());
            pb.inc(1);
            continue;
        }
        // One calibration pass: statistics of the four linear inputs.
        let t = Instant::now();
        let hidden = model.config.hidden_size;
        let mut accs: BTreeMap<InputSite, HessianAccumulator> = InputSite::ALL
            .iter()
            .map(|&s| {
                let d = if s == InputSite::Fc2 { model.config.ffn_dim } else { hidden };
                let acc = if cfg.channel_stats { HessianAccumulator::with_f64_moments(d) } else { HessianAccumulator::new(d) };
                (s, acc.with_accumulation(cfg.hessian_accumulation))
            })
            .collect();
        let mut reservoirs: BTreeMap<InputSite, Reservoir> = InputSite::ALL
            .iter()
            .map(|&s| (s, Reservoir::new(cfg.reservoir, cfg.seed.wrapping_add((i * 4 + s as usize) as u64))))
            .collect();
        for x in &inps {
            let mut observe = |site: InputSite, a: &Tensor| -> Result<()> {
                accs.get_mut(&site).expect("all sites").add(a)?;
                if cfg.reservoir > 0 {
                    reservoirs.get_mut(&site).expect("all sites").add(a)?;
                }
                Ok(())
            };
            layer.forward(x, &mask, Some(&mut observe))?;
        }
        times.calibration_forward_s += t.elapsed().as_secs_f64();

        let hessian_diags: BTreeMap<InputSite, Vec<f64>> =
            accs.iter().map(|(&s, a)| Ok((s, a.hessian_diagonal()?))).collect::<Result<_>>()?;
        // Full host Hessians only for linears the host solves, formed once per site.
        let mut host_hessians: BTreeMap<InputSite, Vec<f64>> = BTreeMap::new();
        // Host copies of the weights, for the planner and the host solver.
        let weights: Vec<((usize, usize), Vec<f32>)> = LinearKind::ALL
            .iter()
            .map(|&kind| {
                let wt = layer.linear(kind).weight();
                Ok((wt.dims2()?, weight_vec(wt)?))
            })
            .collect::<Result<_>>()?;
        let plan_for = |idx: usize| -> Result<LinearPlan> {
            let kind = LinearKind::ALL[idx];
            let site = kind.input_site();
            let ((rows, cols), w) = &weights[idx];
            let tp = Instant::now();
            let reservoir = (cfg.reservoir > 0).then(|| reservoirs[&site].rows.as_slice());
            let mut plan = planner(&LinearContext {
                layer: i,
                kind,
                rows: *rows,
                cols: *cols,
                weight: w,
                hessian_diag: &hessian_diags[&site],
                stats: &accs[&site],
                reservoir,
            })?;
            plan.plan_seconds = tp.elapsed().as_secs_f64();
            Ok(plan)
        };
        // Planning runs on its own threads, for the first linear of each input site (q/k/v
        // share theirs, and the planner caches per site), all sites at once, the widest input
        // (the longest plan) first. Where the GPU solves, a site's linears are solved as soon
        // as its plan is in, in the order plans arrive (the linears of a layer are solved
        // independently, against H from the uncompressed layer, so the order changes
        // nothing), and the MI work of later sites overlaps the solves of earlier ones;
        // `plan_s` counts only the time solving waits for plans, `plan_thread_s` the planning
        // threads' wall time. On the host, solves wait for all plans and go in layer order
        // (planning and solving beside each other fought for the same cores: 2.02 s against
        // 1.75 s on B).
        let first_of_site: Vec<usize> = (0..LinearKind::ALL.len())
            .map(|k| (0..LinearKind::ALL.len()).find(|&f| LinearKind::ALL[f].input_site() == LinearKind::ALL[k].input_site()).expect("k itself"))
            .collect();
        // One linear per site, in layer order (the host's solve order) and widest first (the
        // planning order).
        let sites_in_layer_order: Vec<usize> = (0..LinearKind::ALL.len()).filter(|&k| first_of_site[k] == k).collect();
        let mut firsts = sites_in_layer_order.clone();
        firsts.sort_by_key(|&k| std::cmp::Reverse(weights[k].0 .1));
        let overlap = model.device.is_cuda() && !cfg.host_solver;
        let mut plans: Vec<Option<LinearPlan>> = (0..LinearKind::ALL.len()).map(|_| None).collect();
        let mut layer_reports: Vec<Option<LinearReport>> = (0..LinearKind::ALL.len()).map(|_| None).collect();
        std::thread::scope(|scope| -> Result<()> {
            let (send, planned) = std::sync::mpsc::channel::<(usize, Result<LinearPlan>)>();
            let plan_for = &plan_for;
            let firsts = &firsts;
            let planning = scope.spawn(move || {
                use rayon::prelude::*;
                let t = Instant::now();
                firsts.par_iter().with_max_len(1).for_each_with(send, |send, &k| {
                    let _ = send.send((k, plan_for(k)));
                });
                t.elapsed().as_secs_f64()
            });
            // Sites in the order they are solved: as plans arrive (GPU), else layer order once
            // all are in.
            let receive = |plans: &mut Vec<Option<LinearPlan>>| -> Result<usize> {
                let (k, p) = planned.recv().map_err(|_| anyhow::anyhow!("planning thread ended early"))?;
                plans[k] = Some(p?);
                Ok(k)
            };
            let mut layer_order = sites_in_layer_order.iter().copied();
            if !overlap {
                let tw = Instant::now();
                for _ in 0..firsts.len() {
                    receive(&mut plans)?;
                }
                times.plan_s += tw.elapsed().as_secs_f64();
            }
            for _ in 0..firsts.len() {
                let tw = Instant::now();
                let first = if overlap { receive(&mut plans)? } else { layer_order.next().expect("one per site") };
                times.plan_s += tw.elapsed().as_secs_f64();
                for idx in (0..LinearKind::ALL.len()).filter(|&idx| first_of_site[idx] == first) {
                    let kind = LinearKind::ALL[idx];
                    let site = kind.input_site();
                    let ((rows, cols), w) = &weights[idx];
                    let (rows, cols) = (*rows, *cols);
                    let tw = Instant::now();
                    let plan = match plans[idx].take() {
                        Some(p) => p,
                        // Later linears of a site: the planner's per-site cache answers at once.
                        None => plan_for(idx)?,
                    };
                    times.plan_s += tw.elapsed().as_secs_f64();
                    let plan_seconds = plan.plan_seconds;
                    let ts = Instant::now();
                    let solver_cfg = SolverConfig { quant: plan.quant.clone(), ..cfg.solver.clone() };
                    let solved = match device_solver_input(cfg, &solver_cfg, &accs[&site]) {
                        #[cfg(feature = "cuda")]
                        Some(h_sum) => crate::solver_cuda::solve(
                            layer.linear(kind).weight(),
                            h_sum,
                            accs[&site].hessian_scale(),
                            &solver_cfg,
                            plan.perm.as_deref(),
                        ),
                        _ => {
                            let h = match host_hessians.entry(site) {
                                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                                std::collections::btree_map::Entry::Vacant(e) => e.insert(accs[&site].hessian()?),
                            };
                            solver::solve(w, rows, cols, h, &solver_cfg, plan.perm.as_deref())
                        }
                    }
                    .map_err(|e| anyhow::anyhow!("layer {i} {}: {e}", kind.path()))?;
                    let (wq, zero_fraction) = install(&mut layer, kind, solved.weight, (rows, cols), storage_dtype)?;
                    let (max_distinct_per_row, max_distinct_per_group) = solver::max_levels(&wq, cols, &plan.quant, plan.perm.as_deref());
                    let solve_seconds = ts.elapsed().as_secs_f64();
                    let bits = crate::bit_alloc::scheme_bits(&plan.quant, cols);
                    times.solve_s += solve_seconds;
                    layer_reports[idx] = Some(LinearReport {
                        layer: i,
                        name: kind.path().to_string(),
                        rows,
                        cols,
                        zero_fraction,
                        loss: solved.loss,
                        solve_seconds,
                        plan_seconds,
                        avg_bits: bits.map(|b| b.0),
                        avg_bits_with_metadata: bits.map(|b| b.1),
                        max_distinct_per_row,
                        max_distinct_per_group,
                        plan: plan.report,
                    });
                }
            }
            times.plan_thread_s += planning.join().map_err(|_| anyhow::anyhow!("planning thread panicked"))?;
            Ok(())
        })?;
        // Reports in layer order, whatever order the linears were solved in.
        reports.extend(layer_reports.into_iter().flatten());
        drop(accs);
        // Outputs of the compressed layer become the next layer's inputs.
        let t = Instant::now();
        for x in inps.iter_mut() {
            *x = layer.forward(x, &mask, None)?;
        }
        times.recompute_s += t.elapsed().as_secs_f64();
        model.layers[i] = layer.to_device(&model.layer_home)?;
        times.per_layer_s.push(t_layer.elapsed().as_secs_f64());
        pb.inc(1);
    }
    pb.finish_and_clear();
    times.total_s = t_start.elapsed().as_secs_f64();
    Ok((reports, times))
}
