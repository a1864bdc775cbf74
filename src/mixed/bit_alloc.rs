//! How a bit budget is spread over column groups, and what a column is worth. Costs follow
//! `solver::scheme` (a 16-bit scale and a zero point per row and group).

use crate::solver::scheme::metadata_bits;
use anyhow::{bail, Result};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
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
            "--target-avg-bits {} is below what {} groups at --min-bits {} cost with their scale/zero metadata ({:.4} bits/weight); raise the target or use fewer groups",
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
