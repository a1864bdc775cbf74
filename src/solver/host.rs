//! The sweep on the host CPU.
//!
//! Deviation from the reference, on purpose (by default; `lazy_updates` follows the
//! reference): the reference applies a column's error to the rest of its block at once and
//! to later blocks lazily (one GEMM per block, for GPU speed); here each row applies it to
//! all remaining columns at once. The arithmetic is the same up to summation order, and the
//! current value of every column is known when a quantization grid starts. For GPTQ
//! `--groupsize` not aligned with the blocks the reference reads stale (block-start) values
//! for the group's grid; this code reads the current ones. With the published settings
//! (groupsize 128, blocksize 128) they agree.

use super::hinv;
use super::magnitude::kth_smallest;
use super::quantizer::ScalePrecision;
use super::quantizer::{find_params, quantize, QuantParams};
use super::scheme::{GridRange, QuantScheme};
use super::{sweep_order, unpermute_columns, LinearGrids, Solved, SolvedWeight, Sparsity, SweepSpec};
use crate::model::cpu_kernels::View;
use anyhow::{bail, Result};
use rayon::prelude::*;

/// Rows a parallel task sweeps together.
const CHUNK_ROWS: usize = 8;

/// Compresses one linear's weight `w` (rows × cols, row-major) given its input Hessian `h`
/// (cols × cols, undamped), as `spec` says.
pub fn solve(w: &[f32], rows: usize, cols: usize, h: &[f64], spec: SweepSpec) -> Result<Solved> {
    let (settings, scheme) = (spec.settings, spec.scheme);
    if w.len() != rows * cols || h.len() != cols * cols {
        bail!("solver: weight {}×{} and Hessian of {} entries do not fit", rows, cols, h.len());
    }
    let precision = spec.scale_precision;
    if let QuantScheme::Static { labels, bits, .. } = &scheme.quant {
        if labels.len() != cols || labels.iter().any(|&l| l as usize >= bits.len()) {
            bail!(
                "solver: static groups label {} columns into {} groups, for {cols} columns",
                labels.len(),
                bits.len()
            );
        }
    }
    let n_m = match settings.sparsity {
        Sparsity::NM { n, m } => Some((n, m)),
        _ => None,
    };
    if scheme.nm_sets.is_some() && (n_m.is_none() || settings.lazy_updates) {
        bail!("solver: n:m sets need n:m sparsity and the eager sweep (not lazy updates)");
    }
    // Every row's state, its grid fitted on the untouched weight where the scheme fits one per
    // row before the sweep (before dead columns are zeroed).
    let n_grids = scheme.quant.grids(cols).len();
    let mut states: Vec<RowState> = w
        .chunks(cols)
        .map(|row| {
            let grid = match scheme.quant {
                QuantScheme::PerRow { bits, sym } => Some(find_params(row, bits, sym, precision)),
                _ => None,
            };
            let unset = QuantParams { scale: 0.0, zero: 0.0, maxq: 0.0 };
            let mut fitted = vec![unset; n_grids];
            if let (Some(g), Some(first)) = (grid, fitted.first_mut()) {
                *first = g;
            }
            RowState { grid, fitted, set_mask: Vec::new(), errs: Vec::new(), loss: 0.0, pruned: 0 }
        })
        .collect();
    // Static groups' grids come from the untouched weight too.
    let grids = GridSource::new(&scheme.quant, w, cols, precision);
    let Factorised { mut wp, u, udiag, order } = factorise(w, rows, cols, h, spec)?;
    let grids = grids.in_sweep_order(&scheme.quant, &order);
    let nm_sets = match (&scheme.nm_sets, n_m) {
        (Some(sets), Some((_, m))) => {
            let sets = NmSets::in_sweep_order(sets, &order, m)?;
            states.iter_mut().for_each(|st| st.set_mask = vec![false; cols]);
            Some(sets)
        }
        _ => None,
    };
    let sweep = Sweep {
        cols,
        u: &u,
        udiag: &udiag,
        grids: &grids,
        nm_sets: nm_sets.as_ref(),
        sym: scheme.quant.symmetric(),
        precision,
        n_m,
    };
    for i1 in (0..cols).step_by(settings.blocksize) {
        let i2 = (i1 + settings.blocksize).min(cols);
        let count = i2 - i1;
        let mask = match settings.sparsity {
            Sparsity::Unstructured(ratio) => unstructured_block_mask(&wp, cols, i1, i2, &udiag, ratio),
            _ => vec![false; rows * count],
        };
        // Columns an error reaches inside the column loop: the whole remainder (eager) or
        // the rest of the block (lazy; later columns get the tail GEMM below).
        let reach = if settings.lazy_updates { i2 } else { cols };
        if settings.lazy_updates {
            states.iter_mut().for_each(|st| st.errs = vec![0.0; count]);
        }
        let span = BlockSpan { i1, i2, reach };
        wp.par_chunks_mut(cols * CHUNK_ROWS)
            .zip(states.par_chunks_mut(CHUNK_ROWS))
            .zip(mask.par_chunks(count * CHUNK_ROWS))
            .enumerate()
            .for_each(|(c, ((wrows, states), mask))| sweep.block(span, c * CHUNK_ROWS, wrows, states, mask));
        if settings.lazy_updates && i2 < cols {
            let block_err: Vec<f32> = states.iter().flat_map(|st| st.errs.iter().copied()).collect();
            lazy_tail_update(&mut wp, rows, cols, i1, i2, &block_err, &u);
        }
    }
    let grids = LinearGrids::collect(&scheme.quant, rows, &order, precision, |r, k| states[r].fitted[k]);
    Ok(Solved {
        weight: SolvedWeight::Host(unpermute_columns(&wp, cols, &order)),
        loss: states.iter().map(|st| st.loss).sum(),
        pruned: states.iter().map(|st| st.pruned).sum(),
        host_reason: None,
        grids,
    })
}

/// Where a row's quantization grid comes from: one source per kind of scheme.
enum GridSource {
    /// Not quantized, or one grid per row fitted before the sweep (`RowState::grid`).
    Fixed,
    /// Grids fitted on the current values as the sweep reaches each one's first column
    /// (grouped and mixed schemes): the grid starting at each sweep position and its index.
    Sweep(Vec<Option<(usize, GridRange)>>),
    /// Static groups: each row's grid of every group, fitted on the untouched weight
    /// (rows × groups), and the group of each sweep position (empty until
    /// `in_sweep_order`).
    Static { row_grids: Vec<Vec<QuantParams>>, group_at: Vec<u32> },
}

impl GridSource {
    fn new(quant: &QuantScheme, w: &[f32], cols: usize, precision: ScalePrecision) -> Self {
        match quant {
            QuantScheme::Static { labels, bits, sym } => GridSource::Static {
                row_grids: w.par_chunks(cols).map(|r| static_row_grids(r, labels, bits, *sym, precision)).collect(),
                group_at: Vec::new(),
            },
            QuantScheme::Grouped { .. } | QuantScheme::Mixed { .. } => {
                let mut grid_at = vec![None; cols];
                for (k, g) in quant.sweep_grids(cols).into_iter().enumerate() {
                    grid_at[g.start] = Some((k, g));
                }
                GridSource::Sweep(grid_at)
            }
            QuantScheme::None | QuantScheme::PerRow { .. } => GridSource::Fixed,
        }
    }

    /// Static groups located by sweep position (`order[k]`: the column swept k-th).
    fn in_sweep_order(self, quant: &QuantScheme, order: &[usize]) -> Self {
        match (self, quant) {
            (GridSource::Static { row_grids, .. }, QuantScheme::Static { labels, .. }) => {
                GridSource::Static { row_grids, group_at: order.iter().map(|&j| labels[j]).collect() }
            }
            (source, _) => source,
        }
    }
}

/// One row's state across the sweep.
struct RowState {
    /// The grid the row's current column is quantized on, if any.
    grid: Option<QuantParams>,
    /// The grids the row was fitted with, in sweep order (for the export).
    fitted: Vec<QuantParams>,
    /// n:m sets: the row's set mask over all columns, in sweep positions.
    set_mask: Vec<bool>,
    /// Lazy updates: the row's scaled errors of the current block.
    errs: Vec<f32>,
    loss: f64,
    /// Weights the row's mask has pruned so far.
    pruned: usize,
}

/// W and U = chol(H⁻¹)ᵀ in sweep order, ready to sweep.
struct Factorised {
    /// The weight with columns in sweep order, dead columns zeroed (rows × cols).
    wp: Vec<f32>,
    /// U, row-major, in f32 as the reference sweeps with.
    u: Vec<f32>,
    udiag: Vec<f32>,
    /// order[k] = the original column swept k-th.
    order: Vec<usize>,
}

fn factorise(w: &[f32], rows: usize, cols: usize, h: &[f64], spec: SweepSpec) -> Result<Factorised> {
    let dead = hinv::dead_columns(h, cols);
    let h_diag_fixed: Vec<f64> = (0..cols).map(|j| if dead[j] { 1.0 } else { h[j * cols + j] }).collect();
    let order = sweep_order(&h_diag_fixed, spec);
    // Permute W's columns and H's rows and columns into sweep order.
    let mut wp = vec![0f32; rows * cols];
    for r in 0..rows {
        for (k, &j) in order.iter().enumerate() {
            wp[r * cols + k] = if dead[j] { 0.0 } else { w[r * cols + j] };
        }
    }
    let mut hp = vec![0f64; cols * cols];
    for (a, &i) in order.iter().enumerate() {
        for (b, &j) in order.iter().enumerate() {
            hp[a * cols + b] = h[i * cols + j];
        }
    }
    hinv::dampen(&mut hp, cols, spec.settings.percdamp);
    let u_f64 = hinv::inverse_cholesky_upper_in(&hp, cols, spec.settings.hinv_precision)?;
    drop(hp);
    let u: Vec<f32> = u_f64.iter().map(|&x| x as f32).collect();
    drop(u_f64);
    let udiag: Vec<f32> = (0..cols).map(|j| u[j * cols + j]).collect();
    Ok(Factorised { wp, u, udiag, order })
}

/// The adaptive mask of one block (SparseGPT eq. 7): the `ratio` fraction of the block's
/// weights, over all rows, with the smallest w² / [H⁻¹]_jj², row-major (rows × block).
fn unstructured_block_mask(wp: &[f32], cols: usize, i1: usize, i2: usize, udiag: &[f32], ratio: f64) -> Vec<bool> {
    let metric: Vec<f32> = wp
        .par_chunks(cols)
        .flat_map_iter(|row| (i1..i2).map(move |j| row[j] * row[j] / (udiag[j] * udiag[j])))
        .collect();
    let k = (metric.len() as f64 * ratio) as usize;
    let thresh = kth_smallest(metric.clone(), k.min(metric.len() - 1));
    metric.iter().map(|&m| m <= thresh).collect()
}

/// One row's grid of each static group, from the untouched row (`find_params` on the
/// group's columns, in column order).
fn static_row_grids(
    row: &[f32],
    labels: &[u32],
    bits: &[u32],
    sym: bool,
    precision: ScalePrecision,
) -> Vec<QuantParams> {
    let mut members: Vec<Vec<f32>> = vec![Vec::new(); bits.len()];
    for (&x, &l) in row.iter().zip(labels) {
        members[l as usize].push(x);
    }
    members.iter().zip(bits).map(|(xs, &b)| find_params(xs, b, sym, precision)).collect()
}

/// n:m sets in sweep positions: each set's positions ascending, and the set whose first
/// position each sweep position is.
struct NmSets {
    members: Vec<Vec<usize>>,
    first_at: Vec<Option<usize>>,
}

impl NmSets {
    fn in_sweep_order(sets: &[u32], order: &[usize], m: usize) -> Result<NmSets> {
        let cols = order.len();
        if sets.len() != cols {
            bail!("solver: n:m sets label {} columns, the weight has {cols}", sets.len());
        }
        let k = sets.iter().map(|&s| s as usize + 1).max().unwrap_or(0);
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
        for (pos, &j) in order.iter().enumerate() {
            members[sets[j] as usize].push(pos);
        }
        if members.iter().any(|s| s.len() != m) {
            bail!("solver: every n:m set needs exactly {m} columns");
        }
        let mut first_at = vec![None; cols];
        for (s, mem) in members.iter().enumerate() {
            first_at[mem[0]] = Some(s);
        }
        Ok(NmSets { members, first_at })
    }
}

/// What every row's sweep shares.
struct Sweep<'a> {
    cols: usize,
    u: &'a [f32],
    udiag: &'a [f32],
    grids: &'a GridSource,
    /// n:m over sets of columns instead of consecutive windows.
    nm_sets: Option<&'a NmSets>,
    sym: bool,
    precision: ScalePrecision,
    n_m: Option<(usize, usize)>,
}

/// The columns of one block, `i1..i2`; a column's error is applied to `i + 1..reach`.
#[derive(Clone, Copy)]
struct BlockSpan {
    i1: usize,
    i2: usize,
    reach: usize,
}

impl Sweep<'_> {
    /// Prunes and quantizes the block's columns of a few rows (the first being row
    /// `first_row` of the weight), column by column, each column's error spread over the later
    /// columns through U's row (the OBS update). `mask`: the block's unstructured mask of
    /// these rows (rows × block).
    fn block(&self, span: BlockSpan, first_row: usize, wrows: &mut [f32], states: &mut [RowState], mask: &[bool]) {
        let BlockSpan { i1, i2, reach } = span;
        let cols = self.cols;
        let count = i2 - i1;
        let mut row_mask: Vec<Vec<bool>> = mask.chunks(count).map(<[bool]>::to_vec).collect();
        for i in i1..i2 {
            let d = self.udiag[i];
            let urow = &self.u[i * cols..(i + 1) * cols];
            for (r, st) in states.iter_mut().enumerate() {
                let row = &mut wrows[r * cols..(r + 1) * cols];
                let mut set_pruned = false;
                if let (Some(sets), Some((n, _))) = (self.nm_sets, self.n_m) {
                    if let Some(s) = sets.first_at[i] {
                        st.pruned += self.mask_set(row, &sets.members[s], n, &mut st.set_mask);
                    }
                    set_pruned = st.set_mask[i];
                } else if let Some((n, m)) = self.n_m {
                    if (i - i1) % m == 0 {
                        self.mask_n_of_m(row, i..(i + m).min(i2), n, &mut row_mask[r], i1);
                    }
                }
                match self.grids {
                    GridSource::Fixed => {}
                    GridSource::Sweep(grid_at) => {
                        if let Some((k, g)) = grid_at[i] {
                            let p = find_params(&row[g.start..g.start + g.len], g.bits, self.sym, self.precision);
                            st.grid = Some(p);
                            st.fitted[k] = p;
                        }
                    }
                    GridSource::Static { row_grids, group_at } => {
                        st.grid = Some(row_grids[first_row + r][group_at[i] as usize]);
                    }
                }
                let w = row[i];
                let mut q = if row_mask[r][i - i1] || set_pruned { 0.0 } else { w };
                if let Some(p) = &st.grid {
                    q = quantize(q, p);
                }
                row[i] = q;
                let err = (w - q) / d;
                st.loss += ((w - q) as f64 / d as f64).powi(2) / 2.0;
                if !st.errs.is_empty() {
                    st.errs[i - i1] = err;
                }
                if err != 0.0 {
                    for (x, &hu) in row[i + 1..reach].iter_mut().zip(&urow[i + 1..reach]) {
                        *x -= err * hu;
                    }
                }
            }
        }
        for (st, m) in states.iter_mut().zip(&row_mask) {
            st.pruned += m.iter().filter(|&&x| x).count();
        }
    }

    /// N:M pruning of one set of columns (sweep positions, the first being the current
    /// column): the n with the smallest w² / [H⁻¹]_jj² (ties to the earlier position) join
    /// the row's set mask. Returns how many were pruned.
    fn mask_set(&self, row: &[f32], members: &[usize], n: usize, set_mask: &mut [bool]) -> usize {
        let metric = |j: usize| row[j] * row[j] / (self.udiag[j] * self.udiag[j]);
        let mut idx = members.to_vec();
        idx.sort_by(|&a, &b| metric(a).total_cmp(&metric(b)));
        for &j in idx.iter().take(n) {
            set_mask[j] = true;
        }
        n.min(idx.len())
    }

    /// N:M pruning of one window of columns (m from its first, cut at the block end): the n
    /// with the smallest w² / [H⁻¹]_jj² join the row's block mask (`row_mask`, whose first
    /// entry is column `i1`).
    fn mask_n_of_m(&self, row: &[f32], window: std::ops::Range<usize>, n: usize, row_mask: &mut [bool], i1: usize) {
        let mut idx: Vec<usize> = window.collect();
        let metric = |j: usize| row[j] * row[j] / (self.udiag[j] * self.udiag[j]);
        idx.sort_by(|&a, &b| metric(a).total_cmp(&metric(b)));
        for &j in idx.iter().take(n) {
            row_mask[j - i1] = true;
        }
    }
}

/// The reference's lazy update: W[:, i2..] −= Err (rows × block) · U[i1..i2, i2..].
fn lazy_tail_update(wp: &mut [f32], rows: usize, cols: usize, i1: usize, i2: usize, block_err: &[f32], u: &[f32]) {
    let count = i2 - i1;
    unsafe {
        crate::model::cpu_kernels::gemm_into(
            (rows, cols - i2, count),
            crate::model::cpu_kernels::Dest { ptr: wp.as_mut_ptr().add(i2), ld: cols, accumulate: true },
            View::rows(block_err.as_ptr(), count),
            View::rows(u.as_ptr().add(i1 * cols + i2), cols),
            -1.0,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::scheme::{max_levels, ColumnGroup};
    use crate::solver::{hinv::HinvPrecision, quantizer, LinearScheme, SweepSettings};

    fn spd(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        let mut rnd = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        let t = 3 * n;
        // Inputs with a shared component per token: correlated channels, as in real layers.
        let shared: Vec<f64> = (0..t).map(|_| 2.0 * rnd()).collect();
        let x: Vec<f64> = (0..t * n).map(|k| rnd() + shared[k / n]).collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..t).map(|k| x[k * n + i] * x[k * n + j]).sum::<f64>() * 2.0 / t as f64;
            }
        }
        h
    }

    fn weights(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols).map(|k| (((k * 37 + 11) % 101) as f32 - 50.0) / 40.0).collect()
    }

    /// A sweep's settings and scheme, for `solve`.
    #[derive(Clone)]
    struct Case {
        settings: SweepSettings,
        scheme: LinearScheme,
    }

    impl Case {
        fn lazy(mut self, lazy_updates: bool) -> Self {
            self.settings.lazy_updates = lazy_updates;
            self
        }
        fn act_order(mut self, act_order: bool) -> Self {
            self.settings.act_order = act_order;
            self
        }
        fn quant(mut self, quant: QuantScheme) -> Self {
            self.scheme.quant = quant;
            self
        }
        fn nm_sets(mut self, sets: Vec<u32>) -> Self {
            self.scheme.nm_sets = Some(std::sync::Arc::new(sets));
            self
        }
    }

    fn cfg(sparsity: Sparsity, quant: QuantScheme) -> Case {
        Case {
            settings: SweepSettings {
                sparsity,
                blocksize: 8,
                percdamp: 0.01,
                act_order: false,
                act_groups: crate::solver::ActGroups::Dynamic,
                hinv_precision: HinvPrecision::F32,
                lazy_updates: false,
            },
            scheme: LinearScheme::uniform(quant),
        }
    }

    /// `super::solve` with `perm` as the scheme's sweep order, f32 scales.
    fn solve(w: &[f32], rows: usize, cols: usize, h: &[f64], case: &Case, perm: Option<&[usize]>) -> Result<Solved> {
        let scheme = LinearScheme { perm: perm.map(<[usize]>::to_vec), ..case.scheme.clone() };
        super::solve(
            w,
            rows,
            cols,
            h,
            SweepSpec { settings: &case.settings, scheme: &scheme, scale_precision: ScalePrecision::F32 },
        )
    }

    #[test]
    fn unstructured_sparsity_hits_the_target_per_block() {
        let (rows, cols) = (16, 24);
        let out = solve(
            &weights(rows, cols),
            rows,
            cols,
            &spd(cols, 1),
            &cfg(Sparsity::Unstructured(0.5), QuantScheme::None),
            None,
        )
        .unwrap();
        let zeros = out.weight.as_host().unwrap().iter().filter(|&&x| x == 0.0).count();
        // int(128·0.5) + 1 masked per 16×8 block (the threshold element itself is included).
        assert_eq!(zeros, 3 * 65);
        assert_eq!(out.pruned, 3 * 65);
    }

    #[test]
    fn n_m_pattern_holds_in_every_group_of_m() {
        let (rows, cols) = (6, 16);
        let c = cfg(Sparsity::NM { n: 2, m: 4 }, QuantScheme::None);
        let out = solve(&weights(rows, cols), rows, cols, &spd(cols, 2), &c, None).unwrap();
        assert_eq!(out.pruned, rows * cols / 2, "exactly n of every m");
        for r in 0..rows {
            for g in 0..cols / 4 {
                let z = (0..4).filter(|&k| out.weight.as_host().unwrap()[r * cols + g * 4 + k] == 0.0).count();
                assert!(z >= 2, "row {r} group {g} has {z} zeros");
            }
        }
    }

    #[test]
    fn quantized_rows_use_at_most_2_pow_bits_values() {
        let (rows, cols) = (8, 16);
        let c = cfg(Sparsity::Dense, QuantScheme::PerRow { bits: 3, sym: false });
        let out = solve(&weights(rows, cols), rows, cols, &spd(cols, 3), &c, None).unwrap();
        for r in 0..rows {
            let set: std::collections::BTreeSet<u32> =
                out.weight.as_host().unwrap()[r * cols..(r + 1) * cols].iter().map(|x| x.to_bits()).collect();
            assert!(set.len() <= 8, "row {r}: {} values", set.len());
        }
    }

    #[test]
    fn mixed_groups_spanning_blocks_stay_on_their_grid() {
        // Groups that start inside one block and run into the next: every column of a group
        // is on that group's grid (at most 2^bits values per row and group), in both orders.
        let (rows, cols) = (6, 40);
        let groups = vec![
            ColumnGroup { start: 0, len: 5, bits: 2 },
            ColumnGroup { start: 5, len: 22, bits: 3 },
            ColumnGroup { start: 27, len: 13, bits: 2 },
        ];
        for lazy in [false, true] {
            let c = cfg(Sparsity::Dense, QuantScheme::Mixed { groups: groups.clone(), sym: false }).lazy(lazy);
            let out = solve(&weights(rows, cols), rows, cols, &spd(cols, 5), &c, None).unwrap();
            let (_, per_group) = max_levels(out.weight.as_host().unwrap(), cols, &c.scheme.quant, None);
            assert!(per_group <= 8, "lazy {lazy}: {per_group} values in a group");
        }
    }

    #[test]
    fn error_compensation_beats_rounding_to_nearest() {
        // The point of OBS: the layer output error tr((W−Q) H (W−Q)ᵀ) is lower than RTN's.
        let (rows, cols) = (12, 32);
        let w = weights(rows, cols);
        let h = spd(cols, 4);
        let gptq = solve(&w, rows, cols, &h, &cfg(Sparsity::Dense, QuantScheme::PerRow { bits: 2, sym: false }), None)
            .unwrap();
        let rtn: Vec<f32> = w
            .chunks(cols)
            .flat_map(|r| {
                let p = quantizer::find_params(r, 2, false, quantizer::ScalePrecision::F32);
                r.iter().map(move |&x| quantizer::quantize(x, &p)).collect::<Vec<_>>()
            })
            .collect();
        let out_err = |q: &[f32]| -> f64 {
            (0..rows)
                .map(|r| {
                    let d: Vec<f64> = (0..cols).map(|j| (w[r * cols + j] - q[r * cols + j]) as f64).collect();
                    (0..cols).map(|i| (0..cols).map(|j| d[i] * h[i * cols + j] * d[j]).sum::<f64>()).sum::<f64>()
                })
                .sum()
        };
        assert!(
            out_err(gptq.weight.as_host().unwrap()) < 0.8 * out_err(&rtn),
            "{} vs {}",
            out_err(gptq.weight.as_host().unwrap()),
            out_err(&rtn)
        );
    }

    #[test]
    fn permutation_is_undone_and_dead_columns_zeroed() {
        let (rows, cols) = (4, 8);
        let mut h = spd(cols, 5);
        for k in 0..cols {
            h[3 * cols + k] = 0.0;
            h[k * cols + 3] = 0.0;
        }
        let w = weights(rows, cols);
        let perm: Vec<usize> = (0..cols).rev().collect();
        let out = solve(&w, rows, cols, &h, &cfg(Sparsity::Dense, QuantScheme::None), Some(&perm)).unwrap();
        for r in 0..rows {
            assert_eq!(out.weight.as_host().unwrap()[r * cols + 3], 0.0);
        }
        // No pruning, no quantization, no error: the live columns come back unchanged.
        for (k, (&a, &b)) in out.weight.as_host().unwrap().iter().zip(&w).enumerate() {
            if k % cols != 3 {
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn lazy_block_updates_equal_eager_ones() {
        // Rows not a multiple of the row chunk, columns not a multiple of the block.
        let (rows, cols) = (13, 27);
        let h = spd(cols, 5);
        let w = weights(rows, cols);
        for (sparsity, quant) in [
            (Sparsity::Unstructured(0.5), QuantScheme::None),
            (Sparsity::Dense, QuantScheme::None),
            (Sparsity::Unstructured(0.5), QuantScheme::PerRow { bits: 4, sym: false }),
        ] {
            let eager = solve(&w, rows, cols, &h, &cfg(sparsity, quant.clone()), None).unwrap();
            let lazy = solve(&w, rows, cols, &h, &cfg(sparsity, quant.clone()).lazy(true), None).unwrap();
            // Same masks and grid points (summation order only); values within f32 rounding.
            let differ = eager
                .weight
                .as_host()
                .unwrap()
                .iter()
                .zip(lazy.weight.as_host().unwrap())
                .filter(|(a, b)| (*a - *b).abs() > 1e-4 * a.abs().max(1.0))
                .count();
            assert_eq!(differ, 0, "{quant:?}, {sparsity:?}: {differ} weights differ");
            assert!(
                (eager.loss - lazy.loss).abs() <= 1e-4 * eager.loss.max(1e-9),
                "{quant:?}: loss {} vs {}",
                eager.loss,
                lazy.loss
            );
        }
    }
    /// Static groups: labels of each column and one width per group.
    fn static_scheme(labels: &[u32], bits: &[u32]) -> QuantScheme {
        QuantScheme::Static { labels: labels.to_vec(), bits: bits.to_vec(), sym: false }
    }

    #[test]
    fn one_static_group_equals_the_per_row_grid_exactly() {
        // Same grids (one per row, from the untouched weight), same sweep: the same weights
        // to the bit, in natural and in act-order, with and without pruning.
        let (rows, cols) = (10, 24);
        let (w, h) = (weights(rows, cols), spd(cols, 6));
        for sparsity in [Sparsity::Dense, Sparsity::Unstructured(0.5), Sparsity::NM { n: 2, m: 4 }] {
            for act_order in [false, true] {
                let base = cfg(sparsity, QuantScheme::PerRow { bits: 3, sym: false }).act_order(act_order);
                let stat = base.clone().quant(static_scheme(&[0; 24], &[3]));
                let a = solve(&w, rows, cols, &h, &base, None).unwrap();
                let b = solve(&w, rows, cols, &h, &stat, None).unwrap();
                assert_eq!(
                    a.weight.as_host().unwrap(),
                    b.weight.as_host().unwrap(),
                    "{sparsity:?} act-order {act_order}"
                );
                assert_eq!((a.loss, a.pruned), (b.loss, b.pruned));
            }
        }
    }

    #[test]
    fn static_groups_at_equal_bits_keep_the_baseline_mask_where_grids_coincide() {
        // Every (row, group) holds its row's minimum and maximum, so each group's grid is the
        // per-row grid: the whole sweep (mask decisions, quantized values) is the baseline's.
        let (rows, cols) = (6, 16);
        let labels: Vec<u32> = (0..cols as u32).map(|j| j % 4).collect();
        let mut w = weights(rows, cols);
        for r in 0..rows {
            for g in 0..4 {
                w[r * cols + g] = -2.0; // columns 0..4: one of each group
                w[r * cols + 4 + g] = 2.0; // columns 4..8: one of each group
            }
        }
        let h = spd(cols, 7);
        let base = cfg(Sparsity::Unstructured(0.5), QuantScheme::PerRow { bits: 2, sym: false });
        let stat = base.clone().quant(static_scheme(&labels, &[2, 2, 2, 2]));
        let a = solve(&w, rows, cols, &h, &base, None).unwrap();
        let b = solve(&w, rows, cols, &h, &stat, None).unwrap();
        assert_eq!(a.weight.as_host().unwrap(), b.weight.as_host().unwrap());
        assert_eq!(a.pruned, b.pruned);
    }

    #[test]
    fn static_groups_quantize_on_their_own_grids_in_the_natural_order() {
        // Groups that interleave (not runs of the sweep), equal bits: the first block's mask
        // is the baseline's (chosen before any quantization error), as many weights are
        // pruned as in the baseline, and every weight lies on the grid its group had in the
        // untouched weight (at most 2^bits values per row and group).
        let (rows, cols, block) = (8, 32, 8);
        let labels: Vec<u32> = (0..cols as u32).map(|j| (j * 7 % 5) % 3).collect();
        let (w, h) = (weights(rows, cols), spd(cols, 8));
        for bits in [[3u32, 3, 3], [2, 4, 3]] {
            let quant = static_scheme(&labels, &bits);
            let c = cfg(Sparsity::Unstructured(0.5), quant.clone());
            let out = solve(&w, rows, cols, &h, &c, None).unwrap();
            let base = solve(&w, rows, cols, &h, &cfg(Sparsity::Unstructured(0.5), QuantScheme::None), None).unwrap();
            assert_eq!(out.pruned, base.pruned);
            for r in 0..rows {
                let grids = static_row_grids(&w[r * cols..(r + 1) * cols], &labels, &bits, false, ScalePrecision::F32);
                for j in 0..cols {
                    let x = out.weight.as_host().unwrap()[r * cols + j];
                    let p = grids[labels[j] as usize];
                    assert_eq!(quantizer::quantize(x, &p), x, "row {r} column {j} is off its group's grid");
                    if j < block && base.weight.as_host().unwrap()[r * cols + j] == 0.0 {
                        assert_eq!(x, 0.0, "row {r} column {j}: the first block's mask differs");
                    }
                }
            }
            let (_, per_group) = max_levels(out.weight.as_host().unwrap(), cols, &quant, None);
            assert!(per_group <= 1 << bits.iter().max().unwrap(), "{per_group}");
        }
    }

    #[test]
    fn n_m_sets_of_consecutive_columns_equal_plain_n_m() {
        let (rows, cols) = (6, 16);
        let (w, h) = (weights(rows, cols), spd(cols, 2));
        let plain = cfg(Sparsity::NM { n: 2, m: 4 }, QuantScheme::PerRow { bits: 4, sym: false });
        let sets: Vec<u32> = (0..cols as u32).map(|j| j / 4).collect();
        let with_sets = plain.clone().nm_sets(sets);
        let a = solve(&w, rows, cols, &h, &plain, None).unwrap();
        let b = solve(&w, rows, cols, &h, &with_sets, None).unwrap();
        assert_eq!(a.weight.as_host().unwrap(), b.weight.as_host().unwrap());
        assert_eq!(a.pruned, b.pruned);
    }

    #[test]
    fn n_m_sets_hold_the_pattern_in_the_permuted_channel_order() {
        // Sets of 4 scattered columns spanning blocks: n of every set pruned in every row,
        // the sweep still in the natural order.
        let (rows, cols) = (6, 32);
        let (w, h) = (weights(rows, cols), spd(cols, 9));
        let sets: Vec<u32> = (0..cols as u32).map(|j| j % 8).collect();
        let c = cfg(Sparsity::NM { n: 2, m: 4 }, QuantScheme::None).nm_sets(sets.clone());
        let out = solve(&w, rows, cols, &h, &c, None).unwrap();
        assert_eq!(out.pruned, rows * cols / 2);
        for r in 0..rows {
            for s in 0..8 {
                let z =
                    (0..cols).filter(|&j| sets[j] == s && out.weight.as_host().unwrap()[r * cols + j] == 0.0).count();
                assert!(z >= 2, "row {r} set {s}: {z} zeros");
            }
        }
        // Lazy updates would read stale values for later blocks' members: refused.
        assert!(solve(&w, rows, cols, &h, &c.lazy(true), None).is_err());
    }
}
