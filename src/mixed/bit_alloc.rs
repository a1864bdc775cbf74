//! How a bit budget is spread over column groups, and what a column is worth. Costs follow
//! `solver::scheme` (a 16-bit scale and a zero point per row and group).

use crate::solver::scheme::metadata_bits;
use anyhow::{bail, Result};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BitPolicy {
    /// Minimise Σ importance · 2^(−2b) under the budget (greedy marginal gain per bit).
    Optimal,
    /// The design notes' rule on normalised group importance, then fitted to the budget.
    Thresholds,
}

/// Average bits per weight including metadata that a row may spend, and the allowed range.
#[derive(Clone, Copy, Debug)]
pub struct BitBudget {
    pub target_avg_bits: f64,
    pub min_bits: u32,
    pub max_bits: u32,
}

impl BitBudget {
    /// The most groups a row of `cols` columns can pay for: K groups at min bits with their
    /// metadata within the target (the floor `check_floor` applies), at most `cols`.
    pub fn affordable_groups(&self, cols: usize) -> usize {
        let spare = self.target_avg_bits * cols as f64 + 1e-9 - cols as f64 * self.min_bits as f64;
        let k = (spare / metadata_bits(self.min_bits)).floor();
        if k.is_nan() || k < 0.0 {
            0
        } else {
            (k as usize).min(cols)
        }
    }
}

/// OBS saliency of each input column: H_jj · Σ_rows W_rj² (the error a column's
/// quantization noise causes in the layer output scales with it).
pub fn column_importance(weight: &[f32], rows: usize, cols: usize, hessian_diag: &[f64]) -> Vec<f64> {
    let mut norms = vec![0f64; cols];
    for r in 0..rows {
        for (j, n) in norms.iter_mut().enumerate() {
            let w = weight[r * cols + j] as f64;
            *n += w * w;
        }
    }
    (0..cols).map(|j| norms[j] * hessian_diag[j]).collect()
}

/// Bits one row spends on groups of these sizes at these widths, metadata included.
fn row_cost(sizes: &[usize], bits: &[u32]) -> f64 {
    sizes.iter().zip(bits).map(|(&n, &b)| n as f64 * b as f64 + metadata_bits(b)).sum()
}

fn check_floor(sizes: &[usize], budget: &BitBudget) -> Result<f64> {
    let cols: usize = sizes.iter().sum();
    let limit = budget.target_avg_bits * cols as f64;
    let floor = row_cost(sizes, &vec![budget.min_bits; sizes.len()]);
    if floor > limit + 1e-9 {
        bail!(
            "a target of {} bits is below what {} groups at the minimum of {} bits cost with their scale/zero metadata ({:.4} bits/weight); raise the target or use fewer groups",
            budget.target_avg_bits,
            sizes.len(),
            budget.min_bits,
            floor / cols as f64
        );
    }
    Ok(limit)
}

/// Minimises Σ_g I_g · 4^(−b_g) subject to the row budget: start every group at min bits,
/// then repeatedly add one bit where it buys the largest decrease per bit spent, while the
/// budget allows. Every step checks the budget, so the result never exceeds it.
pub fn allocate_optimal(importance: &[f64], sizes: &[usize], budget: &BitBudget) -> Result<Vec<u32>> {
    let limit = check_floor(sizes, budget)?;
    let mut bits = vec![budget.min_bits; sizes.len()];
    let mut spent = row_cost(sizes, &bits);
    loop {
        let mut best: Option<(f64, usize)> = None;
        for g in 0..sizes.len() {
            if bits[g] >= budget.max_bits {
                continue;
            }
            let cost = sizes[g] as f64 + 1.0;
            if spent + cost > limit + 1e-9 {
                continue;
            }
            let b = bits[g] as i32;
            let gain = importance[g] * (4f64.powi(-b) - 4f64.powi(-b - 1));
            let ratio = gain / cost;
            if best.is_none_or(|(r, _)| ratio > r) {
                best = Some((ratio, g));
            }
        }
        match best {
            Some((_, g)) => {
                bits[g] += 1;
                spent += sizes[g] as f64 + 1.0;
            }
            None => return Ok(bits),
        }
    }
}

/// Spends what a group allocation left of the row budget, to within one bit per row where
/// the groups allow it: whole-group steps cost a group's size + 1 bits, so the allocators
/// above stop up to that much short of the target. Two kinds of single-column moves, in the
/// allocator's own model (a column's error weight is its importance · 4^(−bits)):
/// 1. up: a column moves to a group of more bits (b_a → b_c costs b_c − b_a bits per row,
///    no metadata), the move of the best gain per bit first, while one fits;
/// 2. if a bit or more is still left (e.g. every group at the same width), one group is
///    raised by a bit, over the budget, and then sheds its columns of least loss per bit
///    saved to groups of fewer bits until the row fits again; then the up moves again. Of
///    the groups that can be raised, the one that leaves under a bit (else the least) with
///    the lowest objective, taken only if it leaves less unspent than before.
///
/// No group is emptied (K and every grid stay). `labels` (group of each column) and `bits`
/// are updated; returns the number of columns moved. Ties go to the lowest column, then
/// group, index.
pub fn spend_leftover(column_importance: &[f64], labels: &mut [usize], bits: &mut [u32], budget: &BitBudget) -> usize {
    spend_leftover_with(column_importance, labels, bits, budget, &LeftoverModel::LEGACY)
}

/// The error model of the leftover moves: a column of weight w at b bits loses w · error(b),
/// and each row spends `reserved_row_bits` outside its groups (the column map's share).
#[derive(Clone, Copy, Debug)]
pub struct LeftoverModel {
    pub error: fn(u32) -> f64,
    pub reserved_row_bits: f64,
}

impl LeftoverModel {
    /// The legacy objective's 4^(−b), nothing reserved.
    pub const LEGACY: LeftoverModel = LeftoverModel { error: legacy_error, reserved_row_bits: 0.0 };
}

fn legacy_error(bits: u32) -> f64 {
    4f64.powi(-(bits as i32))
}

/// `spend_leftover` under another error model (`LeftoverModel`).
pub fn spend_leftover_with(
    column_importance: &[f64],
    labels: &mut [usize],
    bits: &mut [u32],
    budget: &BitBudget,
    model: &LeftoverModel,
) -> usize {
    let limit = budget.target_avg_bits * labels.len() as f64 - model.reserved_row_bits;
    let err = model.error;
    let mut moved = move_up(column_importance, labels, bits, limit, err);
    let left_now = limit - cost_of(labels, bits);
    if left_now < 1.0 - 1e-9 {
        return moved;
    }
    // Candidates: (bits left, 0 if under one; objective), the lowest first.
    struct Candidate {
        key: (f64, f64),
        labels: Vec<usize>,
        bits: Vec<u32>,
        moved: usize,
    }
    let mut best: Option<Candidate> = None;
    for g in 0..bits.len() {
        if bits[g] >= budget.max_bits {
            continue;
        }
        let (mut l, mut b) = (labels.to_vec(), bits.to_vec());
        b[g] += 1;
        let Some(shed) = shed_down(column_importance, &mut l, &b, g, limit, err) else { continue };
        let up = move_up(column_importance, &mut l, &b, limit, err);
        let left = limit - cost_of(&l, &b);
        let key = (if left < 1.0 - 1e-9 { 0.0 } else { left }, objective_of(column_importance, &l, &b, err));
        if best.as_ref().is_none_or(|c| key.0 < c.key.0 || (key.0 == c.key.0 && key.1 < c.key.1)) {
            best = Some(Candidate { key, labels: l, bits: b, moved: shed + up });
        }
    }
    // Taken only where it leaves less unspent.
    if let Some(c) = best.filter(|c| c.key.0 < left_now) {
        labels.copy_from_slice(&c.labels);
        bits.copy_from_slice(&c.bits);
        moved += c.moved;
    }
    moved
}

fn sizes_of(labels: &[usize], k: usize) -> Vec<usize> {
    let mut sizes = vec![0usize; k];
    for &l in labels {
        sizes[l] += 1;
    }
    sizes
}

fn cost_of(labels: &[usize], bits: &[u32]) -> f64 {
    row_cost_nonempty(&sizes_of(labels, bits.len()), bits)
}

/// Σ_j importance_j · error(bits of j's group).
fn objective_of(imp: &[f64], labels: &[usize], bits: &[u32], err: fn(u32) -> f64) -> f64 {
    labels.iter().zip(imp).map(|(&l, &i)| i * err(bits[l])).sum()
}

/// Up moves (see `spend_leftover`) while a bit or more is left under `limit`.
fn move_up(imp: &[f64], labels: &mut [usize], bits: &[u32], limit: f64, err: fn(u32) -> f64) -> usize {
    let k = bits.len();
    let mut sizes = sizes_of(labels, k);
    let mut spent = row_cost_nonempty(&sizes, bits);
    let mut moved = 0;
    loop {
        let left = limit - spent;
        if left < 1.0 - 1e-9 {
            return moved;
        }
        let mut best: Option<(f64, usize, usize)> = None;
        for (j, &a) in labels.iter().enumerate() {
            if sizes[a] <= 1 {
                continue;
            }
            for c in 0..k {
                if bits[c] <= bits[a] || sizes[c] == 0 || (bits[c] - bits[a]) as f64 > left + 1e-9 {
                    continue;
                }
                let gain = imp[j] * (err(bits[a]) - err(bits[c]));
                let ratio = gain / (bits[c] - bits[a]) as f64;
                if best.is_none_or(|(r, _, _)| ratio > r) {
                    best = Some((ratio, j, c));
                }
            }
        }
        let Some((_, j, c)) = best else { return moved };
        let a = labels[j];
        sizes[a] -= 1;
        sizes[c] += 1;
        spent += (bits[c] - bits[a]) as f64;
        labels[j] = c;
        moved += 1;
    }
}

/// Moves columns of group `g` to groups of fewer bits, least loss per bit saved first,
/// until the row costs at most `limit`; None if it cannot get there without emptying `g`.
fn shed_down(
    imp: &[f64],
    labels: &mut [usize],
    bits: &[u32],
    g: usize,
    limit: f64,
    err: fn(u32) -> f64,
) -> Option<usize> {
    let k = bits.len();
    let mut sizes = sizes_of(labels, k);
    let mut spent = row_cost_nonempty(&sizes, bits);
    let targets: Vec<usize> = (0..k).filter(|&c| c != g && sizes[c] > 0 && bits[c] < bits[g]).collect();
    if targets.is_empty() {
        return None;
    }
    // Each column's cheapest way down: (loss per bit saved, column, recipient).
    let mut moves: Vec<(f64, usize, usize)> = (0..labels.len())
        .filter(|&j| labels[j] == g)
        .map(|j| {
            targets
                .iter()
                .map(|&c| {
                    let loss = imp[j] * (err(bits[c]) - err(bits[g]));
                    (loss / (bits[g] - bits[c]) as f64, j, c)
                })
                .fold((f64::INFINITY, 0, 0), |a, b| if b.0 < a.0 { b } else { a })
        })
        .collect();
    moves.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut moved = 0;
    for (_, j, c) in moves {
        if spent <= limit + 1e-9 {
            break;
        }
        if sizes[g] <= 1 {
            return None;
        }
        labels[j] = c;
        sizes[g] -= 1;
        sizes[c] += 1;
        spent -= (bits[g] - bits[c]) as f64;
        moved += 1;
    }
    (spent <= limit + 1e-9).then_some(moved)
}

/// `row_cost` of the groups that have columns (an empty group stores no grid).
fn row_cost_nonempty(sizes: &[usize], bits: &[u32]) -> f64 {
    sizes.iter().zip(bits).filter(|(&n, _)| n > 0).map(|(&n, &b)| n as f64 * b as f64 + metadata_bits(b)).sum()
}

/// The design notes' rule: normalised mean importance > 0.15 → 8 bits; 0.05–0.15 → 4–6
/// (linear in the importance); < 0.05 → 2–3; clamped to [min, max]. Then fitted to the
/// budget: while over it, the least important group above min loses a bit; while a bit
/// fits, the most important group below max gains one.
pub fn allocate_thresholds(importance: &[f64], sizes: &[usize], budget: &BitBudget) -> Result<Vec<u32>> {
    let limit = check_floor(sizes, budget)?;
    let means: Vec<f64> = importance.iter().zip(sizes).map(|(i, &n)| i / n.max(1) as f64).collect();
    let total: f64 = means.iter().sum();
    let norm: Vec<f64> = means.iter().map(|m| if total > 0.0 { m / total } else { 0.0 }).collect();
    let mut bits: Vec<u32> = norm
        .iter()
        .map(|&v| {
            let b = if v > 0.15 {
                8
            } else if v >= 0.05 {
                4 + ((v - 0.05) / 0.1 * 2.0).round() as u32
            } else if v >= 0.025 {
                3
            } else {
                2
            };
            b.clamp(budget.min_bits, budget.max_bits)
        })
        .collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| norm[a].total_cmp(&norm[b]));
    while row_cost(sizes, &bits) > limit + 1e-9 {
        let g = *order.iter().find(|&&g| bits[g] > budget.min_bits).expect("floor was checked");
        bits[g] -= 1;
    }
    loop {
        let spent = row_cost(sizes, &bits);
        match order.iter().rev().find(|&&g| bits[g] < budget.max_bits && spent + sizes[g] as f64 + 1.0 <= limit + 1e-9)
        {
            Some(&g) => bits[g] += 1,
            None => return Ok(bits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(t: f64) -> BitBudget {
        BitBudget { target_avg_bits: t, min_bits: 2, max_bits: 8 }
    }

    #[test]
    fn affordable_groups_are_those_the_floor_accepts() {
        // 192 columns at 2.5 bits: 96 spare bits a row, 18 bits of metadata a group → 5.
        assert_eq!(budget(2.5).affordable_groups(192), 5);
        assert_eq!(budget(2.0).affordable_groups(192), 0);
        assert_eq!(budget(1.0).affordable_groups(192), 0);
        assert_eq!(budget(16.0).affordable_groups(4), 3);
        assert_eq!(budget(32.0).affordable_groups(4), 4, "never more groups than columns");
        for t in [2.1, 2.5, 3.0, 4.0] {
            for cols in [64usize, 192, 768] {
                let k = budget(t).affordable_groups(cols);
                let sizes = |k: usize| (0..k).map(|g| cols / k + usize::from(g < cols % k)).collect::<Vec<_>>();
                if k > 0 {
                    check_floor(&sizes(k), &budget(t)).unwrap();
                }
                if k < cols {
                    assert!(check_floor(&sizes(k + 1), &budget(t)).is_err(), "{t} {cols}: {} affordable", k + 1);
                }
            }
        }
    }

    #[test]
    fn allocations_never_exceed_the_budget_and_favour_importance() {
        let sizes = [40, 100, 60, 56];
        let imp = [10.0, 1.0, 0.1, 5.0];
        for policy in [allocate_optimal, allocate_thresholds] {
            for t in [2.5, 3.0, 4.0, 6.0] {
                let bits = policy(&imp, &sizes, &budget(t)).unwrap();
                let groups: Vec<crate::solver::ColumnGroup> = sizes
                    .iter()
                    .zip(&bits)
                    .scan(0, |s, (&n, &b)| {
                        let g = crate::solver::ColumnGroup { start: *s, len: n, bits: b };
                        *s += n;
                        Some(g)
                    })
                    .collect();
                let (_, with_meta) = crate::solver::QuantScheme::Mixed { groups, sym: false }.bits(256).unwrap();
                assert!(with_meta <= t + 1e-12, "target {t}: {with_meta}");
                assert!(with_meta > t - 1.0, "target {t}: budget left unused ({with_meta})");
                assert!(bits.iter().all(|&b| (2..=8).contains(&b)));
            }
        }
        let bits = allocate_optimal(&imp, &sizes, &budget(4.0)).unwrap();
        assert!(bits[0] > bits[2], "{bits:?}");
    }

    #[test]
    fn spending_the_leftover_meets_the_target_within_a_hundredth_of_a_bit() {
        // Synthetic layers: widths of the fixtures' inputs, 2..12 groups of random sizes,
        // log-uniform importances, the study's targets (and one uniform baseline's stored
        // bits). Both policies, then the column moves: stored bits including metadata within
        // 0.01 of the target (in fact within one bit per row), never above it.
        let mut rng = crate::rng::seeded(5);
        let mut checked = 0;
        for &cols in &[192usize, 256, 768, 1024] {
            for k in [2usize, 3, 4, 6, 10, 12] {
                for &t in &[2.25, 2.5, 3.0, 3.0557, 4.0] {
                    let mut labels: Vec<usize> = (0..cols).map(|j| j % k).collect();
                    for l in labels.iter_mut() {
                        // Uneven sizes: a third of the columns move to a random group.
                        if crate::rng::uniform(&mut rng) < 0.33 {
                            *l = crate::rng::below(&mut rng, k as u64) as usize;
                        }
                    }
                    let imp: Vec<f64> = (0..cols).map(|_| (crate::rng::uniform(&mut rng) * 8.0 - 4.0).exp()).collect();
                    let sizes = crate::mixed::grouping::group_sizes(&labels);
                    let mut gimp = vec![0.0; k];
                    for (j, &l) in labels.iter().enumerate() {
                        gimp[l] += imp[j];
                    }
                    for policy in [allocate_optimal, allocate_thresholds] {
                        let Ok(bits) = policy(&gimp, &sizes, &budget(t)) else {
                            // The metadata floor: only where K groups at 2 bits cannot fit.
                            assert!(2.0 + k as f64 * 18.0 / cols as f64 > t, "{cols} {k} {t}");
                            continue;
                        };
                        let (mut l, mut bits) = (labels.clone(), bits);
                        spend_leftover(&imp, &mut l, &mut bits, &budget(t));
                        let scheme = crate::solver::QuantScheme::Static {
                            labels: l.iter().map(|&x| x as u32).collect(),
                            bits: bits.clone(),
                            sym: false,
                        };
                        let (_, with_meta) = scheme.bits(cols).unwrap();
                        assert!(with_meta <= t + 1e-9, "{cols} {k} {t}: {with_meta}");
                        assert!(t - with_meta <= 0.01, "{cols} {k} {t}: {with_meta} ({bits:?})");
                        assert!(crate::mixed::grouping::group_sizes(&l).iter().all(|&n| n > 0), "a group emptied");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 150, "{checked}");
    }

    #[test]
    fn leftover_goes_to_the_most_important_columns_of_the_lower_group() {
        // 2 groups of 10 columns at 2 and 3 bits: cost 20 + 30 + 18 + 19 = 87 bits per row;
        // a target of 4.5 bits (90) leaves 3: the 3 most important 2-bit columns move up.
        let mut labels = vec![0; 10];
        labels.extend(vec![1; 10]);
        let imp: Vec<f64> = (0..20).map(|j| j as f64).collect();
        let mut bits = [2, 3];
        let moved = spend_leftover(&imp, &mut labels, &mut bits, &budget(4.5));
        assert_eq!(moved, 3);
        assert_eq!(labels[..10], [0, 0, 0, 0, 0, 0, 0, 1, 1, 1]);
        // Both groups at 2 bits with 12 bits left per row (no group of more bits to move
        // to): one group is raised to 3 bits and sheds all but its 11 most important.
        let mut labels: Vec<usize> = (0..192).map(|j| j / 96).collect();
        let imp: Vec<f64> = (0..192).map(|j| 1.0 + j as f64).collect();
        let mut bits = [2, 2];
        spend_leftover(&imp, &mut labels, &mut bits, &budget(2.25));
        assert_eq!(bits, [2, 3]);
        assert_eq!(labels.iter().filter(|&&l| l == 1).count(), 11);
        assert!(labels[181..].iter().all(|&l| l == 1), "the most important columns are the ones kept");
    }

    #[test]
    fn a_target_below_the_metadata_floor_is_refused() {
        // 2 bits + (16+2)/cols per group: 10 groups of 10 columns cost 3.8 bits at least.
        let e = allocate_optimal(&[1.0; 10], &[10; 10], &budget(3.0)).unwrap_err().to_string();
        assert!(e.contains("below what 10 groups"), "{e}");
    }

    #[test]
    fn importance_is_column_norm_times_hessian_diagonal() {
        let w = [1.0f32, 2.0, 3.0, 4.0];
        let h_diag = [2.0, 0.5];
        assert_eq!(column_importance(&w, 2, 2, &h_diag), vec![(1.0 + 9.0) * 2.0, (4.0 + 16.0) * 0.5]);
    }
}
