//! The layer-sequential pipeline of SparseGPT/GPTQ's `opt_sequential`: the inputs of
//! decoder layer 0 are caught once; for each layer one calibration pass accumulates the
//! statistics of its linear inputs (q, k and v share theirs), each linear is planned and
//! solved, and the layer's outputs are recomputed with the compressed weights to become the
//! next layer's inputs. Memory: one layer's weights and statistics plus the calibration
//! activations. Which scheme each linear gets is the planner's business (`planner`).

#[cfg(feature = "cuda")]
mod gram_cuda;
pub mod hessian;
pub mod moments;
pub mod planner;
pub mod reservoir;
mod schedule;
pub mod statistics;

pub use crate::model::fold::Axis;
use crate::model::{DecoderLayer, InputSite, LinearKind, OptModel};
use crate::solver::{magnitude, LinearGrids, SweepSettings};
use anyhow::{Context, Result};
use candle_core::Tensor;
use hessian::HessianAccumulation;
use planner::{Planner, PlannerNeeds};
use serde::Serialize;
use statistics::SiteStatistics;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct CompressConfig {
    pub sweep: SweepSettings,
    /// Magnitude pruning (the published `--gmp` baseline) instead of SparseGPT: no
    /// calibration, `sweep.sparsity`'s fraction per linear.
    pub magnitude: bool,
    /// The decoder layers compressed; the others only pass their outputs on.
    pub layers: Range<usize>,
    /// Calibration windows per forward pass at most (larger batches mean fewer, larger GPU
    /// launches); wide layers get fewer (`windows_per_batch`).
    pub batch: usize,
    /// Seed of the reservoir sampling of stored tokens.
    pub seed: u64,
    /// Solve on the host even when the model runs on a GPU.
    pub host_solver: bool,
    /// How H is accumulated (the reference's running average by default).
    pub hessian_accumulation: HessianAccumulation,
    /// The published `--true-sequential`: each input site's linears solved before the next
    /// site's calibration pass (q/k/v → attention output → fc1 or gate/up → fc2 or down), so
    /// later sites see the compressed earlier ones; else one pass for all four sites.
    pub true_sequential: bool,
    /// Fold the n:m channel sets of the inputs that linears' rows produce (the attention
    /// output, the MLP's inner activation) into those rows once the layer is solved
    /// (`model::fold`), so each weight carries its n:m pattern in its own column order.
    pub fold_nm_sets: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinearReport {
    pub layer: usize,
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    /// Zero weights: those the mask pruned and those quantization rounded to zero.
    pub zero_fraction: f64,
    /// Weights the pruning mask set to zero.
    pub pruned_fraction: f64,
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
    /// Where this linear's n:m sets were folded (`CompressConfig::fold_nm_sets`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fold: Option<FoldReport>,
}

/// A consumer's n:m set permutation folded into the rows of the linears producing its input.
#[derive(Debug, Clone, Serialize)]
pub struct FoldReport {
    /// The producers whose output rows (and biases) were permuted alike.
    pub into: Vec<String>,
    /// Input channels that moved (0: the sets were consecutive already).
    pub moved_channels: usize,
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

/// Sees each solved linear before its weight is rounded to storage precision and
/// installed: the solver's f32 output (rows × cols, original column order) and the grids it
/// lies on (None when not quantized). The packed exports keep its integer codes this way
/// (`output::codes`); an error stops the run.
pub trait SolvedSink: Sync {
    /// Whether `solved` wants this linear's weight (a weight the device solved is copied to
    /// the host only then).
    fn needs_weight(&self, grids: Option<&LinearGrids>) -> bool;
    fn solved(&self, layer: usize, kind: LinearKind, weight: &[f32], grids: Option<&LinearGrids>) -> Result<()>;
    /// A solved linear's rows or columns permuted by a fold after its solve: what the sink
    /// kept of it follows (`perm[p]` = the old row or column now at p).
    fn permuted(&self, layer: usize, kind: LinearKind, axis: Axis, perm: &[usize]) -> Result<()>;
}

/// A sink that keeps nothing.
pub struct NoSink;

impl SolvedSink for NoSink {
    fn needs_weight(&self, _: Option<&LinearGrids>) -> bool {
        false
    }

    fn solved(&self, _: usize, _: LinearKind, _: &[f32], _: Option<&LinearGrids>) -> Result<()> {
        Ok(())
    }

    fn permuted(&self, _: usize, _: LinearKind, _: Axis, _: &[usize]) -> Result<()> {
        Ok(())
    }
}

/// Compresses `model` in place; `planner` decides each linear's scheme.
pub fn compress(
    model: &mut OptModel,
    calibration: &[Vec<u32>],
    cfg: &CompressConfig,
    planner: &dyn Planner,
) -> Result<(Vec<LinearReport>, PhaseTimes)> {
    compress_into(model, calibration, cfg, planner, &NoSink)
}

/// `compress`, handing every solved linear to `sink` as well.
pub fn compress_into(
    model: &mut OptModel,
    calibration: &[Vec<u32>],
    cfg: &CompressConfig,
    planner: &dyn Planner,
    sink: &dyn SolvedSink,
) -> Result<(Vec<LinearReport>, PhaseTimes)> {
    if cfg.magnitude {
        return magnitude_baseline(model, cfg);
    }
    let t_start = Instant::now();
    let mut times = PhaseTimes::default();
    let mut reports = Vec::new();
    let mut notes = BTreeSet::new();
    planner.warm_up(&model.device)?;
    let storage = model.storage_dtype;
    let mask = model.causal_mask(calibration[0].len())?;
    let t = Instant::now();
    let batch = windows_per_batch(cfg.batch, calibration[0].len() * model.config.ffn_dim * model.dtype.size_in_bytes());
    let mut inps = catch_inputs(model, calibration, batch)?;
    times.catch_inputs_s = t.elapsed().as_secs_f64();

    // Each input's device Hessian buffer, kept from layer to layer (the widths are the same
    // in every layer): after layer 0 the loop allocates and zero-fills no Hessian (1 GiB at
    // fc2 for opt-6.7b) among the pass's temporaries.
    let mut hessian_buffers = BTreeMap::new();
    let pb = crate::progress::bar(model.layers.len(), "compress");
    for i in 0..model.layers.len() {
        let t_layer = Instant::now();
        // The layer being worked on, on the compute device (a no-op unless offloaded).
        let mut layer = model.layers[i].to_device(&model.device)?;
        let compressed = cfg.layers.contains(&i);
        if compressed {
            crate::progress::trace(|| {
                format!("layer {i}: calibration pass{}", crate::device_memory::describe(&model.device))
            });
            let passes: Vec<&[InputSite]> = if cfg.true_sequential {
                InputSite::ALL.iter().map(std::slice::from_ref).collect()
            } else {
                vec![&InputSite::ALL[..]]
            };
            let mut solved = Vec::new();
            for sites in passes {
                let t = Instant::now();
                let stats =
                    calibration_pass(&layer, &inps, &mask, (i, sites), planner.needs(), cfg, &mut hessian_buffers)?;
                crate::progress::trace(|| {
                    format!("layer {i}: planning and solving{}", crate::device_memory::describe(&model.device))
                });
                times.calibration_forward_s += t.elapsed().as_secs_f64();
                let job = schedule::LayerJob { index: i, cfg, storage: schedule::Storage { dtype: storage, sink } };
                let mut ledger = schedule::Ledger { times: &mut times, notes: &mut notes };
                solved.extend(schedule::plan_and_solve(&mut layer, &job, &stats, planner, &mut ledger)?);
                for (site, st) in stats {
                    if let Some(buffer) = st.into_reusable_buffer() {
                        hessian_buffers.insert(site, buffer);
                    }
                }
            }
            // Every linear of the layer is solved: permuting a consumer's columns and its
            // producers' rows alike now computes the same function.
            if cfg.fold_nm_sets {
                fold_nm_sets(&mut layer, i, &mut solved, sink)?;
            }
            reports.extend(solved.into_iter().map(|s| s.report));
        }
        // Outputs of the (compressed) layer become the next layer's inputs, in the inputs'
        // own buffers (`device_memory::overwrite`).
        let t = Instant::now();
        for (b, x) in inps.iter_mut().enumerate() {
            let y = layer.forward(x, &mask, None)?;
            check_layer_outputs(&y, i, b * batch, compressed)?;
            if !crate::device_memory::overwrite(x, &y)? {
                *x = y;
            }
        }
        times.recompute_s += t.elapsed().as_secs_f64();
        if compressed {
            model.layers[i] = layer.to_device(&model.layer_home)?;
        }
        crate::progress::trace(|| format!("layer {i}: done{}", crate::device_memory::describe(&model.device)));
        times.per_layer_s.push(t_layer.elapsed().as_secs_f64());
        pb.inc(1);
    }
    pb.finish_and_clear();
    times.total_s = t_start.elapsed().as_secs_f64();
    Ok((reports, times))
}

/// Folds the n:m sets of each linear that reads a producible input (`model::fold`) into
/// the layer, telling `sink` what moved and the consumer's report where it went.
fn fold_nm_sets(
    layer: &mut DecoderLayer,
    index: usize,
    solved: &mut [schedule::SolvedLinear],
    sink: &dyn SolvedSink,
) -> Result<()> {
    for s in solved.iter_mut() {
        let site = s.kind.input_site();
        let Some(sets) = s.nm_sets.as_deref() else { continue };
        if !crate::model::fold::foldable_site(site) {
            continue;
        }
        let perm = crate::model::fold::permutation_of_sets(sets);
        let into = crate::model::fold::producers(layer, site);
        let done = crate::model::fold::fold_input_permutation(layer, site, &perm)
            .with_context(|| format!("layer {index} {}: folding its n:m sets", s.kind.path()))?;
        for p in &done {
            sink.permuted(index, p.kind, p.axis, &p.perm)
                .with_context(|| format!("layer {index} {}: folding its n:m sets", p.kind.path()))?;
        }
        s.report.fold = Some(FoldReport {
            into: into.iter().map(|k| k.path().to_string()).collect(),
            moved_channels: perm.iter().enumerate().filter(|(p, &j)| *p != j).count(),
        });
    }
    Ok(())
}

/// The pass's widest activation (a window's fc1 output) may take this much device memory per
/// batch: the calibration pass and the recompute run their batches while the layer's weights,
/// every window's inputs and the Hessians are live, and larger temporaries than this set the
/// CUDA pool's peak.
const PASS_ACTIVATION_BYTES: usize = 128 << 20;

/// Windows per batch of the layer loop: at most `max_windows` (the device's), fewer where one
/// window's widest activation takes `window_activation_bytes`, at least one.
fn windows_per_batch(max_windows: usize, window_activation_bytes: usize) -> usize {
    (PASS_ACTIVATION_BYTES / window_activation_bytes.max(1)).clamp(1, max_windows.max(1))
}

/// Stops the run where a layer's outputs stop being finite (one reduction per batch): its
/// inputs and weights were checked before, so the layer's own activations overflowed.
fn check_layer_outputs(x: &Tensor, layer: usize, first_window: usize, compressed: bool) -> Result<()> {
    if crate::numerics::all_finite(x)? {
        return Ok(());
    }
    let dtype = x.dtype();
    let message = format!(
        "layer {layer}: non-finite outputs for calibration window {first_window} ({}){}: the layer's activations overflowed {dtype:?}",
        crate::numerics::describe_non_finite(x),
        if compressed { " after compression" } else { "" },
    );
    Err(match dtype {
        candle_core::DType::F16 => crate::advice::advised(message, crate::advice::Remedy::F32Compute),
        _ => anyhow::anyhow!(message),
    })
}

/// The inputs of decoder layer 0: the embeddings of the calibration windows, `batch` windows
/// per tensor.
fn catch_inputs(model: &OptModel, calibration: &[Vec<u32>], batch: usize) -> Result<Vec<Tensor>> {
    calibration
        .chunks(batch.max(1))
        .map(|ws| {
            let ids: Vec<u32> = ws.iter().flatten().copied().collect();
            model.embed(&Tensor::from_vec(ids, (ws.len(), ws[0].len()), &model.device)?)
        })
        .collect()
}

/// One calibration pass through `layer`: the statistics of its linear inputs at `sites`,
/// their device Hessians accumulated into `spare` buffers where those fit.
fn calibration_pass(
    layer: &DecoderLayer,
    inps: &[Tensor],
    mask: &Tensor,
    (index, sites): (usize, &[InputSite]),
    needs: PlannerNeeds,
    cfg: &CompressConfig,
    spare: &mut BTreeMap<InputSite, Tensor>,
) -> Result<BTreeMap<InputSite, SiteStatistics>> {
    let mut stats: BTreeMap<InputSite, SiteStatistics> = sites
        .iter()
        .map(|&s| {
            let d = layer.input_width(s);
            let reservoir = (needs.reservoir > 0).then(|| {
                reservoir::Reservoir::new(needs.reservoir, cfg.seed.wrapping_add((index * 4 + s as usize) as u64))
            });
            (s, SiteStatistics::new(d, cfg.hessian_accumulation, needs.channel_moments, reservoir))
        })
        .collect();
    // The buffers exist before the pass's first activation, the widest first.
    let mut by_width: Vec<_> = stats.iter_mut().collect();
    by_width.sort_by_key(|(_, st)| std::cmp::Reverse(st.hessian.dim));
    for (site, st) in by_width {
        st.prepare(mask.device(), spare.remove(site))?;
    }
    for x in inps {
        let mut observe = |site: InputSite, a: &Tensor| match stats.get_mut(&site) {
            Some(st) => st.add(a),
            None => Ok(()),
        };
        layer.forward(x, mask, Some(&mut observe))?;
    }
    Ok(stats)
}

/// The `--gmp` baseline: every linear of the compressed layers pruned by magnitude.
fn magnitude_baseline(model: &mut OptModel, cfg: &CompressConfig) -> Result<(Vec<LinearReport>, PhaseTimes)> {
    let t_start = Instant::now();
    let mut reports = Vec::new();
    let fraction = match cfg.sweep.sparsity {
        crate::solver::Sparsity::Unstructured(f) => f,
        _ => 0.0,
    };
    let storage = model.storage_dtype;
    for (i, layer) in model.layers.iter_mut().enumerate() {
        if !cfg.layers.contains(&i) {
            continue;
        }
        for &kind in layer.kinds() {
            let t0 = Instant::now();
            let wt = layer.linear(kind).weight().clone();
            let (rows, cols) = wt.dims2()?;
            let mut w = crate::solver::host_values(&wt)?;
            magnitude::magnitude_prune(&mut w, fraction);
            let (_, zero_fraction) = schedule::install(layer, kind, w, (rows, cols), storage)?;
            reports.push(LinearReport {
                layer: i,
                name: kind.path().to_string(),
                rows,
                cols,
                zero_fraction,
                pruned_fraction: zero_fraction,
                loss: 0.0,
                solve_seconds: t0.elapsed().as_secs_f64(),
                plan_seconds: 0.0,
                avg_bits: None,
                avg_bits_with_metadata: None,
                max_distinct_per_row: 0,
                max_distinct_per_group: 0,
                plan: None,
                fold: None,
            });
        }
    }
    let total = t_start.elapsed().as_secs_f64();
    Ok((reports, PhaseTimes { solve_s: total, total_s: total, ..Default::default() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_batches_keep_the_widest_activation_within_the_budget() {
        // 2048-token windows in f16: opt-6.7b's fc1 output is 64 MiB a window, opt-1.3b's 32,
        // the fixtures' (ffn 1024) 4.
        let f16_window = |ffn: usize| 2048 * ffn * 2;
        assert_eq!(windows_per_batch(8, f16_window(16384)), 2);
        assert_eq!(windows_per_batch(8, f16_window(8192)), 4);
        assert_eq!(windows_per_batch(8, f16_window(1024)), 8, "the device's batch caps it");
        assert_eq!(windows_per_batch(8, f16_window(65536)), 1, "never fewer than one window");
        assert_eq!(windows_per_batch(1, f16_window(1024)), 1, "the CPU's one window stays one");
        assert_eq!(windows_per_batch(0, 0), 1);
    }
}
