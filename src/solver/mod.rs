//! The one-shot solver: SparseGPT's `fasterprune` and GPTQ's `fasterquant` as one sweep.
//!
//! Columns are visited in sweep order in blocks of `blocksize`. At each block start an
//! adaptive mask is chosen from w² / [H⁻¹]_jj² (SparseGPT eq. 7); each column is then
//! pruned and/or quantized, and its error (w − q) / [H⁻¹]_jj is spread over the remaining
//! columns through the row of the upper Cholesky factor of H⁻¹ (the OBS update). Rows are
//! independent given the mask, so they run in parallel.
//!
//! `solve_linear` chooses where a linear is solved: on the CUDA device where its Hessian
//! was accumulated there and the settings allow (`cuda`), else on the host (`host`).

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod grids;
pub mod hinv;
pub mod host;
pub mod magnitude;
pub mod quantizer;
pub mod scheme;

pub use grids::LinearGrids;
pub use hinv::HinvPrecision;
pub use quantizer::ScalePrecision;
pub use scheme::{ColumnGroup, GridRange, QuantScheme};

use anyhow::Result;
use candle_core::Tensor;
use rayon::prelude::*;

/// Which weights a sweep may set to zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sparsity {
    /// No pruning (GPTQ alone).
    Dense,
    /// This fraction of each block's weights, chosen adaptively (SparseGPT).
    Unstructured(f64),
    /// n of every m consecutive weights of a row (semi-structured, e.g. 2:4).
    NM { n: usize, m: usize },
}

/// The settings every sweep of a run shares: built once from the run's options, never
/// changed during the run.
#[derive(Clone, Debug)]
pub struct SweepSettings {
    pub sparsity: Sparsity,
    pub blocksize: usize,
    /// Dampening, as a fraction of the mean Hessian diagonal.
    pub percdamp: f64,
    /// GPTQ act-order: visit columns by decreasing H_jj (where the linear's scheme gives no
    /// order of its own).
    pub act_order: bool,
    /// With `act_order` and `--groupsize` groups: how the groups are formed. Other schemes
    /// sweep in plain act-order.
    pub act_groups: ActGroups,
    /// Precision of the H⁻¹ factorisation (the reference: f32).
    pub hinv_precision: HinvPrecision,
    /// The reference's update order: errors go to the rest of the block column by column
    /// and to later columns once per block, as one GEMM (Err · U[block, after]). Same
    /// arithmetic, other rounding; groups that start beyond the block then read values not
    /// yet updated by it, as the reference's `--groupsize` grid does.
    pub lazy_updates: bool,
}

impl SweepSettings {
    /// The published code's defaults: no pruning, blocksize 128, percdamp 0.01, natural
    /// column order, f32 factorisation, eager updates; the caller sets what its run changes.
    pub fn published() -> Self {
        SweepSettings {
            sparsity: Sparsity::Dense,
            blocksize: 128,
            percdamp: 0.01,
            act_order: false,
            act_groups: ActGroups::Dynamic,
            hinv_precision: HinvPrecision::F32,
            lazy_updates: false,
        }
    }
}

/// How act-order sweeps a linear quantized in groups of columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActGroups {
    /// Group-aware reordering (GAR; GPTQModel's `act_group_aware`), `group_aware_order`: the
    /// groups stay natural column ranges, so a checkpoint needs no column map.
    GroupAware,
    /// The published GPTQ: plain act-order, each group the next `size` columns of the sweep
    /// (a g_idx column map in the checkpoint, `desc_act`).
    Dynamic,
}

/// What a planner decides for one linear: its quantization scheme, its sweep order and the
/// channel sets of its n:m pruning.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearScheme {
    pub quant: QuantScheme,
    /// Sweep order (column k of the sweep is column perm[k]); None = identity, or act-order
    /// where the run asks for it.
    pub perm: Option<Vec<usize>>,
    /// n:m pruning over sets of m columns anywhere in the row instead of m consecutive
    /// columns of the sweep: `nm_sets[j]` is the set of original column j (every set has m
    /// columns). A set's n weights are chosen when the sweep reaches its first column, from
    /// the current values of all its columns, so the sweep order stays whatever it is
    /// otherwise (a channel permutation for n:m without a change of the OBS order). The
    /// stored weight then has the n:m pattern in the permuted channel order, not in the
    /// stored one. Host eager sweep only.
    pub nm_sets: Option<std::sync::Arc<Vec<u32>>>,
}

impl LinearScheme {
    /// `quant` in the run's column order, with n:m windows of the sweep.
    pub fn uniform(quant: QuantScheme) -> Self {
        LinearScheme { quant, perm: None, nm_sets: None }
    }
}

/// One linear's sweep: the run's settings, the linear's scheme, and the precision its grids'
/// scales are held in — the checkpoint's storage dtype (`ScalePrecision::of_storage`; f32
/// checkpoints keep f32 scales). The published code keeps f32 scales in its fake-quantized
/// weights and so disagrees with its own f16 packed export by up to an f16 ulp; fitting each
/// grid with the stored scale (`quantizer::find_params`) makes the evaluated model, the dense
/// export, the packed exports and the engines reading them compute the same weights. Both
/// solvers (host and CUDA kernel) round the scale the same way.
#[derive(Clone, Copy, Debug)]
pub struct SweepSpec<'a> {
    pub settings: &'a SweepSettings,
    pub scheme: &'a LinearScheme,
    pub scale_precision: ScalePrecision,
}

/// A solved weight, rows × cols in the original column order, where the solver left it.
pub enum SolvedWeight {
    /// Row-major on the host (the host solver).
    Host(Vec<f32>),
    /// An f32 (rows, cols) tensor on the compute device (the device solver): it is rounded
    /// to storage precision and installed there, and only comes to the host where the run
    /// needs host values (packed exports, level counts of quantized linears).
    Device(Tensor),
}

/// A tensor's values as a row-major f32 host vector (copied from wherever it is). f16 and bf16
/// values travel as they are and are widened on the host (exact): half the transfer of a
/// device-side conversion, and no f32 copy on the device.
pub fn host_values(t: &Tensor) -> Result<Vec<f32>> {
    use candle_core::DType;
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F16 => flat.to_vec1::<half::f16>()?.par_iter().map(|x| x.to_f32()).collect(),
        DType::BF16 => flat.to_vec1::<half::bf16>()?.par_iter().map(|x| x.to_f32()).collect(),
        _ => flat.to_dtype(DType::F32)?.to_vec1()?,
    })
}

impl SolvedWeight {
    /// The values on the host (copied from the device where they are there).
    pub fn to_host(&self) -> Result<Vec<f32>> {
        match self {
            SolvedWeight::Host(w) => Ok(w.clone()),
            SolvedWeight::Device(t) => host_values(t),
        }
    }

    /// The host values, where the host solver produced them.
    pub fn as_host(&self) -> Option<&[f32]> {
        match self {
            SolvedWeight::Host(w) => Some(w),
            SolvedWeight::Device(_) => None,
        }
    }
}

pub struct Solved {
    pub weight: SolvedWeight,
    /// Σ (w − q)² / [H⁻¹]_jj² / 2, the reference's `Losses` summed.
    pub loss: f64,
    /// Weights the pruning mask set to zero (quantization can round more to zero).
    pub pruned: usize,
    /// Why a linear whose Hessian is on a device was solved on the host, if it was.
    pub host_reason: Option<String>,
    /// The grids `weight` lies on (None when not quantized).
    pub grids: Option<LinearGrids>,
}

/// Whether a solve is the last to read its Hessian (then a device solve may overwrite it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HessianUse {
    Shared,
    LastReader,
}

/// The solver's view of a linear's input Hessian H = 2/n Σ x xᵀ (undamped).
pub trait HessianSource {
    /// The f32 Σ x xᵀ on a CUDA device and its factor to H, where it was accumulated there.
    fn device_sum(&self) -> Option<(&Tensor, f64)>;
    /// Said before the device sum's last reader overwrites it (H⁻¹'s factor in place of a
    /// copy: at a wide input H is the solve's largest buffer); the source refuses its sum
    /// afterwards.
    fn hand_over_device_sum(&self);
    /// H as a row-major f64 host matrix (formed on first use, then shared by the linears
    /// that read the same input).
    fn host_matrix(&self) -> Result<std::sync::Arc<Vec<f64>>>;
}

/// Solves one linear where it is best solved. `weight` is the layer's weight tensor (on the
/// compute device), `host_weight` the same values on the host where the caller has them
/// (else they are copied from `weight` if the host solves); `host_only`: solve on the host
/// even where the Hessian is on a device; `h_use`: whether later linears still read `h`.
pub fn solve_linear(
    weight: &Tensor,
    host_weight: Option<&[f32]>,
    h: &dyn HessianSource,
    h_use: HessianUse,
    spec: SweepSpec,
    host_only: bool,
) -> Result<Solved> {
    let (rows, cols) = weight.dims2()?;
    let mut host_reason = None;
    if let Some((sum, scale)) = h.device_sum().filter(|_| !host_only) {
        match device_unsupported(spec, cols) {
            None => {
                let overwrite = h_use == HessianUse::LastReader;
                if overwrite {
                    h.hand_over_device_sum();
                }
                return device_solve(weight, sum, scale, overwrite, spec);
            }
            Some(why) => host_reason = Some(why),
        }
    }
    let copied;
    let host_weight = match host_weight {
        Some(w) => w,
        None => {
            copied = host_values(weight)?;
            &copied
        }
    };
    let solved = host::solve(host_weight, rows, cols, &h.host_matrix()?, spec)?;
    Ok(Solved { host_reason, ..solved })
}

#[cfg(feature = "cuda")]
fn device_unsupported(spec: SweepSpec, cols: usize) -> Option<String> {
    cuda::unsupported(spec, cols)
}

#[cfg(not(feature = "cuda"))]
fn device_unsupported(_spec: SweepSpec, _cols: usize) -> Option<String> {
    Some("this binary was built without the cuda feature".into())
}

#[cfg(feature = "cuda")]
fn device_solve(weight: &Tensor, sum: &Tensor, scale: f64, overwrite_sum: bool, spec: SweepSpec) -> Result<Solved> {
    cuda::solve(weight, sum, scale, overwrite_sum, spec)
}

#[cfg(not(feature = "cuda"))]
fn device_solve(_: &Tensor, _: &Tensor, _: f64, _: bool, _: SweepSpec) -> Result<Solved> {
    unreachable!("device_unsupported always answers without the cuda feature")
}

/// Column order of a sweep: the scheme's permutation, act-order (H_jj descending), or identity.
pub(crate) fn sweep_order(h_diag: &[f64], spec: SweepSpec) -> Vec<usize> {
    if let Some(p) = &spec.scheme.perm {
        return p.clone();
    }
    if let (true, ActGroups::GroupAware, QuantScheme::Grouped { size, .. }) =
        (spec.settings.act_order, spec.settings.act_groups, &spec.scheme.quant)
    {
        return group_aware_order(h_diag, *size);
    }
    let mut order: Vec<usize> = (0..h_diag.len()).collect();
    if spec.settings.act_order {
        order.sort_by(|&a, &b| h_diag[b].total_cmp(&h_diag[a]));
    }
    order
}

/// Group-aware act-order (GAR, Gafni et al., CVPRW 2025, as GPTQModel's `act_group_aware`):
/// the groups stay the contiguous ranges of `size` columns of the natural order, so the
/// checkpoint needs no column map (g_idx = j / size); the sweep visits the groups by
/// decreasing largest H_jj, and inside a group the columns by decreasing H_jj. A short last
/// group (the width not a multiple of `size`) is swept last, so that the grids of the sweep
/// (runs of `size` in sweep order) stay the natural groups. Ties keep the lower index first.
pub fn group_aware_order(h_diag: &[f64], size: usize) -> Vec<usize> {
    let n = h_diag.len();
    let full = n / size;
    let by_diag = |mut cols: Vec<usize>| {
        cols.sort_by(|&a, &b| h_diag[b].total_cmp(&h_diag[a]));
        cols
    };
    let top = |g: usize| (g * size..(g + 1) * size).map(|j| h_diag[j]).fold(f64::NEG_INFINITY, f64::max);
    let mut groups: Vec<usize> = (0..full).collect();
    groups.sort_by(|&a, &b| top(b).total_cmp(&top(a)));
    let mut order: Vec<usize> =
        groups.into_iter().flat_map(|g| by_diag((g * size..(g + 1) * size).collect())).collect();
    order.extend(by_diag((full * size..n).collect()));
    order
}

/// One stretch of a lazily updated sweep: columns `start..end` inside the mask block that
/// begins at `block`. The device solver splits each `blocksize` block where a quantization
/// grid starts, and applies the stretch's errors to all later columns before the next one
/// begins, so a grid always sees current values (as the eager host sweep does; the
/// reference's `--groupsize` grid can read stale ones, see `host`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub block: usize,
    pub start: usize,
    pub end: usize,
}

pub fn sweep_segments(cols: usize, blocksize: usize, grids: &[GridRange]) -> Vec<Segment> {
    let mut cuts: Vec<usize> =
        (0..cols).step_by(blocksize).chain(grids.iter().map(|g| g.start)).chain([cols]).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2).map(|c| Segment { block: c[0] / blocksize * blocksize, start: c[0], end: c[1] }).collect()
}

/// A row-major weight swept in `order` (column k of `wp` is column order[k]) back in the
/// original column order.
pub(crate) fn unpermute_columns(wp: &[f32], cols: usize, order: &[usize]) -> Vec<f32> {
    let mut out = vec![0f32; wp.len()];
    out.par_chunks_mut(cols).zip(wp.par_chunks(cols)).for_each(|(o, p)| {
        for (k, &j) in order.iter().enumerate() {
            o[j] = p[k];
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_widen_half_precision_exactly() -> Result<()> {
        let vals: Vec<f32> = vec![0.0, -0.0, 1.5, -2.25e-3, 6.1e-5, 65504.0, -1e-7, 3.0e38];
        let t = Tensor::from_vec(vals, (2, 4), &candle_core::Device::Cpu)?;
        for dtype in [candle_core::DType::F16, candle_core::DType::BF16, candle_core::DType::F32] {
            let h = t.to_dtype(dtype)?;
            let expected: Vec<f32> = h.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
            let got = host_values(&h)?;
            assert_eq!(
                got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                expected.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
        Ok(())
    }

    #[test]
    fn segments_cut_blocks_at_grid_starts() {
        let groups = vec![
            ColumnGroup { start: 0, len: 100, bits: 4 },
            ColumnGroup { start: 100, len: 200, bits: 3 },
            ColumnGroup { start: 300, len: 20, bits: 2 },
        ];
        let grids = QuantScheme::Mixed { groups, sym: false }.sweep_grids(320);
        let segs = sweep_segments(320, 128, &grids);
        let se: Vec<(usize, usize, usize)> = segs.iter().map(|s| (s.block, s.start, s.end)).collect();
        assert_eq!(se, vec![(0, 0, 100), (0, 100, 128), (128, 128, 256), (256, 256, 300), (256, 300, 320)]);
        // GPTQ's groupsize 128 with blocksize 128: the reference's blocks, uncut.
        let g = QuantScheme::Grouped { bits: 3, sym: false, size: 128 }.sweep_grids(300);
        assert_eq!(sweep_segments(300, 128, &g).len(), 3);
        assert_eq!(sweep_segments(300, 128, &[]).last(), Some(&Segment { block: 256, start: 256, end: 300 }));
    }

    #[test]
    fn act_order_sorts_by_decreasing_diagonal_and_a_permutation_wins() {
        let diag = [1.0, 3.0, 2.0];
        let act = SweepSettings { act_order: true, ..SweepSettings::published() };
        let natural = SweepSettings::published();
        let plain = LinearScheme::uniform(QuantScheme::None);
        let permuted = LinearScheme { perm: Some(vec![2, 0, 1]), ..plain.clone() };
        let spec = |settings, scheme| SweepSpec { settings, scheme, scale_precision: ScalePrecision::F32 };
        assert_eq!(sweep_order(&diag, spec(&act, &plain)), vec![1, 2, 0]);
        assert_eq!(sweep_order(&diag, spec(&natural, &plain)), vec![0, 1, 2]);
        assert_eq!(sweep_order(&diag, spec(&act, &permuted)), vec![2, 0, 1]);
    }

    #[test]
    fn group_aware_order_keeps_the_natural_groups_and_sorts_them_by_their_largest_diagonal() {
        // Groups of 3: {0,1,2} max 5, {3,4,5} max 9, {6,7,8} max 7, and a short group {9,10}.
        let diag = [1.0, 5.0, 2.0, 9.0, 0.5, 3.0, 7.0, 7.0, 1.0, 8.0, 2.0];
        assert_eq!(group_aware_order(&diag, 3), vec![3, 5, 4, 6, 7, 8, 1, 2, 0, 9, 10]);
        // Only with act-order and a grouped scheme; per-row act-order stays plain.
        let gar = SweepSettings { act_order: true, act_groups: ActGroups::GroupAware, ..SweepSettings::published() };
        let grouped = LinearScheme::uniform(QuantScheme::Grouped { bits: 4, sym: false, size: 3 });
        let per_row = LinearScheme::uniform(QuantScheme::PerRow { bits: 4, sym: false });
        let spec = |settings, scheme| SweepSpec { settings, scheme, scale_precision: ScalePrecision::F32 };
        assert_eq!(sweep_order(&diag, spec(&gar, &grouped)), group_aware_order(&diag, 3));
        let mut plain: Vec<usize> = (0..11).collect();
        plain.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]));
        assert_eq!(sweep_order(&diag, spec(&gar, &per_row)), plain);
        let off = SweepSettings { act_groups: ActGroups::GroupAware, ..SweepSettings::published() };
        assert_eq!(sweep_order(&diag, spec(&off, &grouped)), (0..11).collect::<Vec<_>>());
    }

    #[test]
    fn a_group_aware_sweep_stores_the_natural_groups_grids() {
        // A solve in group-aware order fits each grid on one natural group of 8 columns: at most
        // 2^bits values per (row, natural group); plain act-order's grids mix the groups.
        let (rows, cols, bits) = (6, 32, 2);
        let mut rng = crate::rng::seeded(3);
        let x: Vec<f64> = (0..cols * 64).map(|_| crate::rng::uniform(&mut rng) - 0.5).collect();
        // Channel scales that vary within every group, so that the orders differ.
        let scale = |i: usize| 1.0 + (i * 7 % 5) as f64;
        let mut h = vec![0.0; cols * cols];
        for t in 0..64 {
            for i in 0..cols {
                for j in 0..cols {
                    h[i * cols + j] += 2.0 * x[t * cols + i] * x[t * cols + j] * scale(i) * scale(j) / 64.0;
                }
            }
        }
        let w: Vec<f32> = (0..rows * cols).map(|_| (crate::rng::uniform(&mut rng) * 2.0 - 1.0) as f32).collect();
        let quant = QuantScheme::Grouped { bits, sym: false, size: 8 };
        let natural_groups =
            QuantScheme::Static { labels: (0..cols as u32).map(|j| j / 8).collect(), bits: vec![bits; 4], sym: false };
        let scheme = LinearScheme::uniform(quant);
        let solve = |act_groups: ActGroups| {
            let settings = SweepSettings { act_order: true, act_groups, blocksize: 8, ..SweepSettings::published() };
            let spec = SweepSpec { settings: &settings, scheme: &scheme, scale_precision: ScalePrecision::F32 };
            host::solve(&w, rows, cols, &h, spec).unwrap()
        };
        let gar = solve(ActGroups::GroupAware);
        let (_, per_group) = scheme::max_levels(gar.weight.as_host().unwrap(), cols, &natural_groups, None);
        assert!(per_group <= 1 << bits, "{per_group}");
        let act = solve(ActGroups::Dynamic);
        let (_, mixed) = scheme::max_levels(act.weight.as_host().unwrap(), cols, &natural_groups, None);
        assert!(mixed > 1 << bits, "plain act-order's grids are not the natural groups: {mixed}");
        assert!(gar.loss.is_finite() && gar.loss > 0.0);
    }
}
