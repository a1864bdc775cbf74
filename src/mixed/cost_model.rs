//! The allocator's cost model (`--bit-objective cost-model`): what a plan of one linear stores
//! and what it is expected to lose.
//!
//! Cost, in stored bits per row (the accounting of `solver::scheme`, extended by the map):
//! each group's payload (its columns × its bits), its scale and zero point (`metadata_bits`),
//! and the column → group map, ⌈log₂ K⌉ bits per input column (GPTQ's `g_idx`, packed
//! tight), which a linear stores once: its share of a row is the map over the rows. The
//! sweep order of a mixed plan is not needed to dequantize (the map is), so a plan is
//! charged the map; `permutation_bits` (⌈log₂ cols⌉ per column) is reported beside it.
//!
//! Loss: the solver's loss is Σ (w − q)²/(2 d_j²) over the kept weights, with 1/d_j²
//! between 1/[H⁻¹]_jj and H_jj (`importance::SiteImportance::factor`). Rounding to a grid of
//! step Δ = R/(2^b − 1) leaves E[(w − q)²] = Δ²/12, R the grid's range on the row (the
//! group's own columns, zero included as the quantizer includes it). So a group g at b bits
//! is expected to lose
//!   L_g(b) = κ · F_g · Σ_r R_rg² / (24 (2^b − 1)²),
//! F_g = Σ_{j∈g} f_j the columns' importance factors, κ the fraction of weights the mask
//! keeps. A group whose columns share a narrow range gets a fine grid; copies of a channel
//! that the others explain (f_j ≈ 0 with `obs`) lose little at any width.
//!
//! The allocator takes f_j as `--importance` chooses (before the sweep order is known). The
//! solver's own 1/d_j² is the Schur complement of column j given the columns swept after it
//! (`sweep_factors`): between the `obs` factor (given all others) and the damped H_jj. The
//! plan report gives the loss under both, so the two parts of the model (ranges and
//! rounding; the importance factor) can be checked apart against the measured loss.

use super::bit_alloc::BitBudget;
use crate::solver::scheme::metadata_bits;
use anyhow::{bail, Result};
use faer::{Mat, Side};
use serde::Serialize;

/// What the bit allocator minimises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BitObjective {
    /// Σ_g I_g · 4^(−b_g), I_g the group's importance (column norms × factor); the metadata
    /// of each group counted, the map not.
    #[default]
    Legacy,
    /// Σ_g L_g(b_g) of this module, under the stored bits including the map.
    CostModel,
}

/// Stored bits of a column → group map of `k` groups over `cols` columns (none for one group).
pub fn map_bits(cols: usize, k: usize) -> f64 {
    if k <= 1 {
        0.0
    } else {
        cols as f64 * (usize::BITS - (k - 1).leading_zeros()) as f64
    }
}

/// Stored bits of a permutation of `cols` columns, ⌈log₂ cols⌉ per column.
pub fn permutation_bits(cols: usize) -> f64 {
    map_bits(cols, cols)
}

/// E[(w − q)²] per unit of squared range of rounding to a b-bit grid: 1/(12 (2^b − 1)²).
pub fn rounding_error(bits: u32) -> f64 {
    let levels = ((1u64 << bits) - 1) as f64;
    1.0 / (12.0 * levels * levels)
}

/// Σ_r R_rg² of each of `k` groups (`labels[j]`: group of column j): R_rg the range a
/// grid of row r and group g spans, as `quantizer::find_params` fits it (zero included;
/// symmetric: 2·max|w| where the row has a negative value). Empty groups get 0.
pub fn group_range_sq(weight: &[f32], rows: usize, cols: usize, labels: &[usize], k: usize, sym: bool) -> Vec<f64> {
    let mut out = vec![0.0; k];
    let mut lo = vec![0f64; k];
    let mut hi = vec![0f64; k];
    for r in 0..rows {
        lo.iter_mut().for_each(|v| *v = 0.0);
        hi.iter_mut().for_each(|v| *v = 0.0);
        for (j, &l) in labels.iter().enumerate().take(cols) {
            let w = weight[r * cols + j] as f64;
            lo[l] = lo[l].min(w);
            hi[l] = hi[l].max(w);
        }
        for g in 0..k {
            let range = if sym {
                let m = hi[g].max(-lo[g]);
                if lo[g] < 0.0 {
                    2.0 * m
                } else {
                    m
                }
            } else {
                hi[g] - lo[g]
            };
            out[g] += range * range;
        }
    }
    out
}

/// One group as the cost model sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupModel {
    pub size: usize,
    /// F_g: the sum of its columns' importance factors (discounted where the plan discounts).
    pub factor: f64,
    /// Σ_r R_rg².
    pub range_sq: f64,
}

impl GroupModel {
    /// L_g(b) with kept fraction `kept`.
    pub fn loss(&self, bits: u32, kept: f64) -> f64 {
        kept * self.factor * self.range_sq * rounding_error(bits) / 2.0
    }
}

/// The models of `k` groups of one linear: sizes, factors Σ f_j (each times its group's
/// `discount`) and ranges from the weight.
pub fn group_models(
    weight: &[f32],
    rows: usize,
    labels: &[usize],
    factor: &[f64],
    discount: &[f64],
    sym: bool,
) -> Vec<GroupModel> {
    let (cols, k) = (labels.len(), discount.len());
    let range_sq = group_range_sq(weight, rows, cols, labels, k, sym);
    let mut models: Vec<GroupModel> =
        (0..k).map(|g| GroupModel { size: 0, factor: 0.0, range_sq: range_sq[g] }).collect();
    for (j, &l) in labels.iter().enumerate() {
        models[l].size += 1;
        models[l].factor += factor[j];
    }
    for (m, d) in models.iter_mut().zip(discount) {
        m.factor *= d;
    }
    models
}

/// Σ_g L_g(b_g).
pub fn planned_loss(groups: &[GroupModel], bits: &[u32], kept: f64) -> f64 {
    groups.iter().zip(bits).map(|(g, &b)| g.loss(b, kept)).sum()
}

/// Stored bits of one row: payload and metadata of the groups with columns, plus
/// `map_per_row` (the linear's map over its rows).
pub fn row_bits(sizes: &[usize], bits: &[u32], map_per_row: f64) -> f64 {
    sizes.iter().zip(bits).filter(|(&n, _)| n > 0).map(|(&n, &b)| n as f64 * b as f64 + metadata_bits(b)).sum::<f64>()
        + map_per_row
}

/// Minimises Σ_g L_g(b_g) under the row budget (target × columns, the map's share
/// included): every group starts at min bits, then one bit at a time goes where it buys the
/// largest loss decrease per stored bit (a group's size + 1: the payload and its zero
/// point's width), while the budget allows. L_g is convex and decreasing in b, so the
/// greedy steps follow the lower convex hull of loss against bits.
pub fn allocate(groups: &[GroupModel], budget: &BitBudget, map_per_row: f64, kept: f64) -> Result<Vec<u32>> {
    let sizes: Vec<usize> = groups.iter().map(|g| g.size).collect();
    let cols: usize = sizes.iter().sum();
    let limit = budget.target_avg_bits * cols as f64;
    let mut bits = vec![budget.min_bits; groups.len()];
    let mut spent = row_bits(&sizes, &bits, map_per_row);
    if spent > limit + 1e-9 {
        bail!(
            "a target of {} bits is below what {} groups at the minimum of {} bits cost with their scale/zero metadata and column map ({:.4} bits/weight); raise the target or use fewer groups",
            budget.target_avg_bits,
            sizes.iter().filter(|&&n| n > 0).count(),
            budget.min_bits,
            spent / cols as f64
        );
    }
    loop {
        let mut best: Option<(f64, usize)> = None;
        for (g, m) in groups.iter().enumerate() {
            let cost = m.size as f64 + 1.0;
            if m.size == 0 || bits[g] >= budget.max_bits || spent + cost > limit + 1e-9 {
                continue;
            }
            let ratio = (m.loss(bits[g], kept) - m.loss(bits[g] + 1, kept)) / cost;
            if best.is_none_or(|(r, _)| ratio > r) {
                best = Some((ratio, g));
            }
        }
        let Some((_, g)) = best else { return Ok(bits) };
        bits[g] += 1;
        spent += groups[g].size as f64 + 1.0;
    }
}

/// 1/d_j² of every column j as the solver's sweep in `order` sees it: H damped as the
/// solver damps it (`hinv::dampen`), d_j the diagonal of the upper Cholesky factor of H⁻¹
/// in that order, i.e. the Schur complement of j given the columns after it: the last
/// entry of a Cholesky factor of H in the reversed order. Indexed by original column.
pub fn sweep_factors(h: &[f64], n: usize, order: &[usize], percdamp: f64) -> Result<Vec<f64>> {
    let mut hd = h.to_vec();
    crate::solver::hinv::dampen(&mut hd, n, percdamp);
    let rev: Vec<usize> = order.iter().rev().copied().collect();
    let llt = Mat::<f64>::from_fn(n, n, |a, b| hd[rev[a] * n + rev[b]])
        .llt(Side::Lower)
        .map_err(|_| crate::solver::hinv::not_positive_definite())?;
    let l = llt.L();
    let mut out = vec![0.0; n];
    for (a, &j) in rev.iter().enumerate() {
        out[j] = l[(a, a)] * l[(a, a)];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(t: f64) -> BitBudget {
        BitBudget { target_avg_bits: t, min_bits: 2, max_bits: 8 }
    }

    #[test]
    fn sweep_factors_are_the_solvers_and_lie_between_obs_and_the_diagonal() {
        // A random SPD H (correlated channels) and a permuted order: 1/d_j² equals the
        // solver's upper Cholesky factor of the damped, permuted H⁻¹ (to 1e-9 relative); the
        // first column swept keeps the least (given all others: the obs factor), the last
        // the damped H_jj.
        let n = 12;
        let mut rng = crate::rng::seeded(2);
        let x: Vec<f64> = (0..n * 40).map(|_| crate::rng::uniform(&mut rng) - 0.5).collect();
        let mut h = vec![0.0; n * n];
        for t in 0..40 {
            for i in 0..n {
                for j in 0..n {
                    let (a, b) = (x[t * n + i] + x[t * n + (i + 1) % n], x[t * n + j] + x[t * n + (j + 1) % n]);
                    h[i * n + j] += 2.0 * a * b / 40.0;
                }
            }
        }
        let order: Vec<usize> = (0..n).map(|p| (p * 5 + 3) % n).collect();
        let f = sweep_factors(&h, n, &order, 0.01).unwrap();
        let mut hd = h.clone();
        crate::solver::hinv::dampen(&mut hd, n, 0.01);
        let permuted: Vec<f64> = (0..n * n).map(|k| hd[order[k / n] * n + order[k % n]]).collect();
        let u = crate::solver::hinv::inverse_cholesky_upper(&permuted, n).unwrap();
        let obs: Vec<f64> =
            crate::solver::hinv::inverse_diagonal(&h, n, 0.01).unwrap().iter().map(|d| 1.0 / d).collect();
        for (p, &j) in order.iter().enumerate() {
            let want = 1.0 / (u[p * n + p] * u[p * n + p]);
            assert!((f[j] / want - 1.0).abs() < 1e-9, "{p}: {} vs {want}", f[j]);
            assert!(f[j] >= obs[j] * (1.0 - 1e-9) && f[j] <= hd[j * n + j] * (1.0 + 1e-9), "{p}");
        }
        assert!((f[order[0]] / obs[order[0]] - 1.0).abs() < 1e-9);
        assert!((f[order[n - 1]] / hd[order[n - 1] * (n + 1)] - 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_map_and_the_permutation_cost_ceil_log2_bits_per_column() {
        assert_eq!(map_bits(256, 1), 0.0);
        assert_eq!(map_bits(256, 2), 256.0);
        assert_eq!(map_bits(256, 4), 512.0);
        assert_eq!(map_bits(256, 5), 768.0);
        assert_eq!(map_bits(256, 8), 768.0);
        assert_eq!(map_bits(1024, 10), 4096.0);
        assert_eq!(permutation_bits(256), 2048.0);
        assert_eq!(permutation_bits(1024), 10240.0);
        assert_eq!(permutation_bits(1000), 10000.0);
        // Per weight of a 1024 × 256 fc1 with 4 groups: 512 / (1024 · 256).
        assert_eq!(map_bits(256, 4) / (1024.0 * 256.0), 1.0 / 512.0);
    }

    #[test]
    fn row_bits_are_the_scheme_accounting_plus_the_map_share() {
        let labels: Vec<u32> = (0..256).map(|j| u32::from(j % 4 != 0)).collect();
        let stat = crate::solver::QuantScheme::Static { labels, bits: vec![2, 4], sym: false };
        let (_, with_meta) = stat.bits(256).unwrap();
        assert!((row_bits(&[64, 192], &[2, 4], 0.0) - with_meta * 256.0).abs() < 1e-9);
        // 768 rows share a 256-bit map: a third of a bit per row.
        let map_row = map_bits(256, 2) / 768.0;
        assert!((row_bits(&[64, 192], &[2, 4], map_row) - with_meta * 256.0 - 1.0 / 3.0).abs() < 1e-9);
        // Empty groups store nothing.
        assert_eq!(row_bits(&[64, 0], &[2, 8], 0.0), 64.0 * 2.0 + 18.0);
    }

    #[test]
    fn rounding_error_is_a_twelfth_of_the_squared_step() {
        assert_eq!(rounding_error(2), 1.0 / 108.0);
        assert_eq!(rounding_error(4), 1.0 / (12.0 * 225.0));
        // Measured: uniform values rounded on a 3-bit grid over [0, 1].
        let step = 1.0 / 7.0;
        let n = 70_000;
        let mse: f64 = (0..n)
            .map(|i| {
                let x = (i as f64 + 0.5) / n as f64;
                let q = (x / step).round() * step;
                (x - q) * (x - q)
            })
            .sum::<f64>()
            / n as f64;
        assert!((mse / rounding_error(3) - 1.0).abs() < 1e-3, "{mse}");
    }

    #[test]
    fn ranges_follow_the_quantizers_grid() {
        // 2 rows, 4 columns in groups {0, 1} and {2, 3}.
        let w = [1.0f32, 3.0, -2.0, 0.5, -1.0, -4.0, 2.0, 2.0];
        let labels = [0, 0, 1, 1];
        // Asymmetric, zero included: row 0: [0, 3] and [−2, 0.5]; row 1: [−4, 0] and [0, 2].
        assert_eq!(group_range_sq(&w, 2, 4, &labels, 2, false), vec![9.0 + 16.0, 6.25 + 4.0]);
        // Symmetric: 2·max|w| where a value is negative, else max.
        assert_eq!(group_range_sq(&w, 2, 4, &labels, 2, true), vec![9.0 + 64.0, 16.0 + 4.0]);
        // An empty group.
        assert_eq!(group_range_sq(&w, 2, 4, &labels, 3, false)[2], 0.0);
    }

    #[test]
    fn a_narrow_range_group_needs_fewer_bits_for_the_same_loss() {
        // The same importance, a range 4× narrower: 2 bits fewer reach (about) the loss of
        // the wide group (a step 4× smaller is 2 bits: (2^b − 1) grows ~2× a bit).
        let wide = GroupModel { size: 32, factor: 1.0, range_sq: 16.0 };
        let narrow = GroupModel { size: 32, factor: 1.0, range_sq: 1.0 };
        for b in 5..=8 {
            let (lw, ln) = (wide.loss(b, 1.0), narrow.loss(b - 2, 1.0));
            assert!(ln < 1.25 * lw && ln > lw, "{b}: {ln} vs {lw}");
            assert!(narrow.loss(b - 1, 1.0) < wide.loss(b, 1.0));
        }
        // Under one budget the allocator gives the narrow group the fewer bits.
        let bits = allocate(&[wide, narrow], &budget(4.0), 0.0, 1.0).unwrap();
        assert!(bits[0] > bits[1], "{bits:?}");
        assert!(row_bits(&[32, 32], &bits, 0.0) <= 4.0 * 64.0);
    }

    #[test]
    fn copies_of_one_channel_cost_less_to_store_than_independent_channels() {
        // A planted layer: channels 0..16 are exact copies of one signal, 16..32 independent,
        // the same weights on both halves. With the OBS factor (1/[H⁻¹]_jj) a copy is what
        // the others explain: its group's expected loss is a small fraction of the
        // independent group's at any width, and the allocator stores it in fewer bits.
        let d = 32;
        let mut h = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                h[i * d + j] = if i == j || (i < 16 && j < 16) { 2.0 } else { 0.0 };
            }
        }
        let hinv = crate::solver::hinv::inverse_diagonal(&h, d, 0.01).unwrap();
        let factor: Vec<f64> = hinv.iter().map(|x| 1.0 / x).collect();
        let rows = 8;
        let w: Vec<f32> = (0..rows * d).map(|k| (((k * 37 + 11) % 101) as f32 - 50.0) / 40.0).collect();
        let w: Vec<f32> = (0..rows * d).map(|k| w[(k / d) * d + (k % d) % 16]).collect();
        let labels: Vec<usize> = (0..d).map(|j| j / 16).collect();
        let groups = group_models(&w, rows, &labels, &factor, &[1.0, 1.0], false);
        assert_eq!(groups[0].range_sq, groups[1].range_sq, "the same weights");
        for b in 2..=8 {
            assert!(groups[0].loss(b, 1.0) < 0.05 * groups[1].loss(b, 1.0), "{b}");
        }
        let bits = allocate(&groups, &budget(5.0), map_bits(d, 2) / rows as f64, 1.0).unwrap();
        assert_eq!(bits[0], 2, "{bits:?}");
        assert!(bits[1] > bits[0] + 2, "{bits:?}");
        // With the diagonal factor the two halves are alike: equal bits (the greedy tie goes
        // to the first group, so within one bit).
        let diag: Vec<f64> = (0..d).map(|j| h[j * d + j]).collect();
        let same =
            allocate(&group_models(&w, rows, &labels, &diag, &[1.0, 1.0], false), &budget(5.0), 0.0, 1.0).unwrap();
        assert!(same[0].abs_diff(same[1]) <= 1, "{same:?}");
    }

    #[test]
    fn the_budget_includes_the_map_and_is_never_exceeded() {
        let mut rng = crate::rng::seeded(9);
        for &(cols, rows) in &[(256usize, 256usize), (256, 1024), (1024, 256)] {
            for k in [2usize, 4, 8] {
                for &t in &[2.5, 3.0, 4.0, 4.08] {
                    let groups: Vec<GroupModel> = (0..k)
                        .map(|g| GroupModel {
                            size: cols / k,
                            factor: (crate::rng::uniform(&mut rng) * 6.0 - 3.0).exp(),
                            range_sq: (g + 1) as f64,
                        })
                        .collect();
                    let map_row = map_bits(cols, k) / rows as f64;
                    let sizes: Vec<usize> = groups.iter().map(|g| g.size).collect();
                    let Ok(bits) = allocate(&groups, &budget(t), map_row, 0.5) else {
                        // Refused only where K groups at 2 bits with the map exceed the target.
                        assert!(row_bits(&sizes, &vec![2; k], map_row) > t * cols as f64, "{cols} {rows} {k} {t}");
                        continue;
                    };
                    let stored = row_bits(&sizes, &bits, map_row) / cols as f64;
                    assert!(stored <= t + 1e-9, "{cols} {rows} {k} {t}: {stored}");
                    // Whole-group steps stop at most one group's step short.
                    assert!(t - stored < (cols / k + 1) as f64 / cols as f64 + 1e-9 || bits.iter().all(|&b| b == 8));
                }
            }
        }
        // Where the map tips the floor over the target, it is refused.
        let g = vec![GroupModel { size: 64, factor: 1.0, range_sq: 1.0 }; 4];
        let floor = row_bits(&[64; 4], &[2; 4], 0.0) / 256.0;
        assert!(allocate(&g, &budget(floor), 0.0, 1.0).is_ok());
        let e = allocate(&g, &budget(floor), map_bits(256, 4) / 64.0, 1.0).unwrap_err().to_string();
        assert!(e.contains("column map"), "{e}");
    }

    #[test]
    fn the_allocation_minimises_the_planned_loss_among_affordable_plans() {
        // 3 groups of unequal sizes: the greedy allocation's loss equals the best over all
        // affordable widths (exhaustive search) within 1%, at several budgets.
        let groups = [
            GroupModel { size: 40, factor: 3.0, range_sq: 2.0 },
            GroupModel { size: 100, factor: 0.5, range_sq: 9.0 },
            GroupModel { size: 116, factor: 1.0, range_sq: 0.3 },
        ];
        let sizes = [40usize, 100, 116];
        for t in [2.5, 3.0, 3.5, 4.0, 5.0] {
            let bits = allocate(&groups, &budget(t), 10.0, 1.0).unwrap();
            let got = planned_loss(&groups, &bits, 1.0);
            let mut best = f64::INFINITY;
            for a in 2..=8 {
                for b in 2..=8 {
                    for c in 2..=8 {
                        if row_bits(&sizes, &[a, b, c], 10.0) <= t * 256.0 + 1e-9 {
                            best = best.min(planned_loss(&groups, &[a, b, c], 1.0));
                        }
                    }
                }
            }
            assert!(got <= best * 1.01, "{t}: {bits:?} {got} vs {best}");
        }
    }
}
