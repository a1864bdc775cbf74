//! What a column is worth to the bit allocator, three ways (`--importance`):
//! - `diag`: H_jj · Σ_r W_rj² (diagonal, OBD/Wanda-like; the default,
//!   `bit_alloc::column_importance`);
//! - `obs`: Σ_r W_rj² / [H⁻¹]_jj, GPTQ's saliency of column j (its per-column loss is
//!   Δ²/[H⁻¹]_jj). Since 1/[H⁻¹]_jj = H_jj·(1 − R²_j), with R²_j the share of channel j's
//!   second moment that the other channels explain linearly, this is `diag` net of what the
//!   other channels carry: the Gaussian MI identity, I(x_j; x_rest) = −½ log(1 − R²_j). H
//!   is damped as the solver damps it.
//! - `mi-obs`: the same form with the redundancy measured by the MI estimator of
//!   `--mi-method`: each pair's MI becomes a correlation of that strength, ρ̃ = sign(ρ)·
//!   √(1 − e^(−2·MI)) (the Pearson sign; the magnitude is Linfoot's informational
//!   coefficient), and 1 − R̃²_j = 1/[C̃⁻¹]_jj of that matrix (ridge-regularised to stay
//!   positive definite). With `corr` (Gaussian MI) C̃ is the channels' (centred) correlation
//!   matrix, so `mi-obs` with `corr` is the exact Gaussian version of the same construction
//!   and `hist`/`knn` the non-Gaussian one: MI adds something only if they beat it.

use super::groups::mi_matrix;
use super::mutual_info::{self, MiMethod, SymMatrix};
use crate::pipeline::planner::SiteContext;
use crate::solver::HessianSource;
use anyhow::{anyhow, Result};
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};
use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Importance {
    #[default]
    Diag,
    Obs,
    MiObs,
}

/// Σ_r W_rj² of each column of a row-major rows × cols weight.
pub fn column_norms(weight: &[f32], rows: usize, cols: usize) -> Vec<f64> {
    let mut norms = vec![0f64; cols];
    for r in 0..rows {
        for (j, n) in norms.iter_mut().enumerate() {
            let w = weight[r * cols + j] as f64;
            *n += w * w;
        }
    }
    norms
}

/// What one input site contributes to its linears' column importances.
pub enum SiteImportance {
    /// H_jj.
    Diag(Vec<f64>),
    /// 1/[H⁻¹]_jj (0 for dead columns).
    Obs(Vec<f64>),
    /// H_jj · (1 − R̃²_j).
    MiObs(Vec<f64>),
}

impl SiteImportance {
    pub fn new(ctx: &SiteContext, importance: Importance, mi_method: MiMethod, percdamp: f64) -> Result<Self> {
        let hdiag = ctx.hessian_diag;
        Ok(match importance {
            Importance::Diag => SiteImportance::Diag(hdiag.to_vec()),
            Importance::Obs => {
                let h = ctx.hessian.ok_or_else(|| anyhow!("obs importance needs the Hessian on the planner side"))?;
                let hinv = crate::solver::hinv::inverse_diagonal(&h.host_matrix()?, ctx.cols, percdamp)?;
                SiteImportance::Obs(
                    hinv.iter().zip(hdiag).map(|(&d, &h)| if h == 0.0 { 0.0 } else { 1.0 / d }).collect(),
                )
            }
            Importance::MiObs => {
                let resid = mi_residual_fraction(ctx, mi_method)?;
                SiteImportance::MiObs(resid.iter().zip(hdiag).map(|(r, h)| r * h).collect())
            }
        })
    }

    /// The per-column factor the column norms are multiplied by.
    pub fn factor(&self) -> &[f64] {
        match self {
            SiteImportance::Diag(v) | SiteImportance::Obs(v) | SiteImportance::MiObs(v) => v,
        }
    }

    /// Importance of each column of one linear reading the site.
    pub fn columns(&self, weight: &[f32], rows: usize, cols: usize) -> Vec<f64> {
        column_norms(weight, rows, cols).iter().zip(self.factor()).map(|(n, f)| n * f).collect()
    }
}

/// Ridge added to C̃'s unit diagonal, raised ×10 until C̃ + λI is positive definite.
const RIDGE: f64 = 0.01;

/// 1 − R̃²_j of every channel from the MI estimate of `method` (see the module notes).
pub fn mi_residual_fraction(ctx: &SiteContext, method: MiMethod) -> Result<Vec<f64>> {
    let m = ctx.moments.ok_or_else(|| anyhow!("mi-obs importance needs the channel moments"))?;
    let rho = mutual_info::correlation_from_moments(&m.sum_xxt()?, &m.sum_x, m.tokens);
    let mi = match method {
        MiMethod::Corr => mutual_info::gaussian_mi(&rho),
        _ => mi_matrix(ctx, method)?,
    };
    residual_fraction(&mi, &rho)
}

/// Smallest eigenvalue kept when an MI-derived matrix is made positive definite.
const MIN_EIGENVALUE: f64 = 1e-3;

/// 1 − R̃²_j = 1/((1 + λ)[(C̃ + λI)⁻¹]_jj) with C̃_ij = sign(ρ_ij)·√(1 − e^(−2·MI_ij)), C̃_jj = 1,
/// λ = `RIDGE`. Where C̃ + λI is not positive definite (sample MI estimates need not be
/// consistent with any correlation matrix: their bias alone gives every pair some MI), C̃
/// is first replaced by its eigenvalues clipped at `MIN_EIGENVALUE`, rescaled to a unit
/// diagonal (one step towards the nearest correlation matrix).
pub fn residual_fraction(mi: &SymMatrix, rho: &SymMatrix) -> Result<Vec<f64>> {
    let d = mi.d;
    let c = |i: usize, j: usize| {
        if i == j {
            1.0
        } else {
            let strength = (1.0 - (-2.0 * mi.get(i, j)).exp()).max(0.0).sqrt();
            strength * rho.get(i, j).signum() * f64::from(rho.get(i, j) != 0.0)
        }
    };
    let mut cm = Mat::<f64>::from_fn(d, d, c);
    let from = |m: &Mat<f64>| -> Option<Vec<f64>> {
        let llt =
            Mat::<f64>::from_fn(d, d, |i, j| m[(i, j)] + if i == j { RIDGE } else { 0.0 }).llt(Side::Lower).ok()?;
        let inv = llt.inverse();
        Some((0..d).map(|j| (1.0 / ((1.0 + RIDGE) * inv[(j, j)])).clamp(0.0, 1.0)).collect())
    };
    if let Some(r) = from(&cm) {
        return Ok(r);
    }
    let eig = cm.self_adjoint_eigen(Side::Lower).map_err(|e| anyhow!("eigendecomposition failed: {e:?}"))?;
    let (u, s) = (eig.U(), eig.S());
    let vals: Vec<f64> = (0..d).map(|i| s[i].max(MIN_EIGENVALUE)).collect();
    let scaled = Mat::<f64>::from_fn(d, d, |i, k| u[(i, k)] * vals[k]);
    let clipped: Mat<f64> = &scaled * u.transpose();
    let scale: Vec<f64> = (0..d).map(|i| 1.0 / clipped[(i, i)].sqrt()).collect();
    cm = Mat::<f64>::from_fn(d, d, |i, j| if i == j { 1.0 } else { clipped[(i, j)] * scale[i] * scale[j] });
    from(&cm).ok_or_else(|| anyhow!("the MI-derived correlation matrix stayed indefinite after clipping"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obs_factor_is_the_diagonal_net_of_what_other_channels_explain() {
        // Two identical channels and an independent one, unit variance, zero mean: H = 2·C.
        // Channel 2 keeps (almost) all its H_jj; the twins keep about the damping's share.
        let h = vec![2.0, 2.0, 0.0, 2.0, 2.0, 0.0, 0.0, 0.0, 2.0];
        let hinv = crate::solver::hinv::inverse_diagonal(&h, 3, 0.01).unwrap();
        let f: Vec<f64> = hinv.iter().map(|d| 1.0 / d).collect();
        assert!((f[2] - 2.02).abs() < 1e-9, "{f:?}");
        assert!(f[0] < 0.05 && f[1] < 0.05, "{f:?}");
    }

    #[test]
    fn gaussian_mi_residual_is_one_minus_r_squared_of_the_correlation() {
        // C with a correlated pair: 1 − R² = 1 − ρ² for each of the pair, 1 for the third.
        let rho = 0.8;
        let r = SymMatrix { d: 3, values: vec![1.0, rho, 0.0, rho, 1.0, 0.0, 0.0, 0.0, 1.0] };
        let mi = mutual_info::gaussian_mi(&r);
        let f = residual_fraction(&mi, &r).unwrap();
        // The ridge λ = 0.01 shrinks the correlation to ρ/(1+λ).
        let shrunk = rho / 1.01;
        assert!((f[0] - (1.0 - shrunk * shrunk)).abs() < 1e-9, "{f:?}");
        assert!((f[2] - 1.0).abs() < 1e-12, "{f:?}");
        // A sign flip of one channel changes nothing; MI alone would lose the sign.
        let neg = SymMatrix { d: 3, values: vec![1.0, -rho, 0.0, -rho, 1.0, 0.0, 0.0, 0.0, 1.0] };
        assert_eq!(residual_fraction(&mutual_info::gaussian_mi(&neg), &neg).unwrap(), f);
    }

    #[test]
    fn inconsistent_mi_estimates_are_regularised_not_refused() {
        // Three channels each strongly dependent on the others with alternating signs: not a
        // correlation matrix (indefinite); its eigenvalues are clipped.
        let r = SymMatrix { d: 3, values: vec![1.0, 0.9, 0.9, 0.9, 1.0, -0.9, 0.9, -0.9, 1.0] };
        let f = residual_fraction(&mutual_info::gaussian_mi(&r), &r).unwrap();
        assert!(f.iter().all(|&v| (0.0..=1.0).contains(&v)), "{f:?}");
    }
}
