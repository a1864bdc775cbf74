//! The damped Cholesky factor of H⁻¹ that SparseGPT and GPTQ sweep with, on the host.

use anyhow::Result;
use candle_core::Tensor;
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};

/// The diagonal of a square tensor, gathered where it lives (one vector comes back, not the
/// matrix).
pub fn diagonal(t: &Tensor) -> Result<Tensor> {
    let n = t.dims2()?.0;
    let idx = Tensor::from_vec((0..n).map(|j| (j * (n + 1)) as u32).collect::<Vec<_>>(), n, t.device())?;
    Ok(t.flatten_all()?.index_select(&idx, 0)?)
}

/// Columns whose inputs were always zero (H_jj = 0).
pub fn dead_columns(h: &[f64], n: usize) -> Vec<bool> {
    (0..n).map(|j| h[j * n + j] == 0.0).collect()
}

/// The reference's preparation of H, in place: dead diagonals set to 1, then
/// `percdamp · mean(diag H)` added to the diagonal.
pub fn dampen(h: &mut [f64], n: usize, percdamp: f64) {
    for j in 0..n {
        if h[j * n + j] == 0.0 {
            h[j * n + j] = 1.0;
        }
    }
    let mean_diag = (0..n).map(|j| h[j * n + j]).sum::<f64>() / n as f64;
    let damp = percdamp * mean_diag;
    for j in 0..n {
        h[j * n + j] += damp;
    }
}

/// The diagonal of H⁻¹ for H prepared as the sweep prepares it (`dampen`), in f64: the
/// order-free part of the OBS saliency (1/[H⁻¹]_jj = H_jj·(1 − R²_j) for the damped H,
/// R²_j of channel j regressed on all others).
pub fn inverse_diagonal(h: &[f64], n: usize, percdamp: f64) -> Result<Vec<f64>> {
    let mut hd = h.to_vec();
    dampen(&mut hd, n, percdamp);
    let llt = Mat::<f64>::from_fn(n, n, |i, j| hd[i * n + j]).llt(Side::Lower).map_err(|_| not_positive_definite())?;
    let inv = llt.inverse();
    Ok((0..n).map(|j| inv[(j, j)]).collect())
}

pub(crate) fn not_positive_definite() -> anyhow::Error {
    crate::advice::advised("Hessian is not positive definite even after damping", crate::advice::Remedy::MoreDamping)
}

/// Precision of the H⁻¹ factorisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HinvPrecision {
    /// As the reference (torch.linalg.cholesky on f32): reproduces its decisions most closely.
    F32,
    /// Less rounding in the factorisation; on 2–3-bit runs this flips near-tied decisions
    /// and moves PPL by up to a few percent either way on the test models.
    F64,
}

/// Upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ U), row-major: the reference's
/// `cholesky(cholesky_inverse(cholesky(H)), upper=True)` on an already damped H, in the
/// chosen precision (the reference uses f32).
pub fn inverse_cholesky_upper_in(h: &[f64], n: usize, precision: HinvPrecision) -> Result<Vec<f64>> {
    if !crate::numerics::all_finite_f64(h) {
        anyhow::bail!(
            "the Hessian has non-finite entries ({}): the layer's inputs overflowed or hold NaN",
            crate::numerics::describe_values(h, &[n, n])
        );
    }
    match precision {
        HinvPrecision::F64 => inverse_cholesky_upper(h, n),
        HinvPrecision::F32 => {
            let m = Mat::<f32>::from_fn(n, n, |i, j| h[i * n + j] as f32);
            let u = upper_factor_of_inverse(m)?;
            Ok(u.into_iter().map(|x| x as f64).collect())
        }
    }
}

fn upper_factor_of_inverse<T: faer::traits::RealField + Copy>(m: Mat<T>) -> Result<Vec<T>> {
    let n = m.nrows();
    let llt = m.llt(Side::Lower).map_err(|_| not_positive_definite())?;
    let inv = llt.inverse();
    let llt_inv = inv.llt(Side::Lower).map_err(|_| {
        crate::advice::advised("inverse Hessian lost positive definiteness", crate::advice::Remedy::MoreDamping)
    })?;
    let l = llt_inv.L();
    // U = Lᵀ: row i of U is column i of L.
    let mut u = vec![T::zero(); n * n];
    for i in 0..n {
        for j in i..n {
            u[i * n + j] = l[(j, i)];
        }
    }
    Ok(u)
}

/// Upper Cholesky factor of H⁻¹ in f64.
pub fn inverse_cholesky_upper(h: &[f64], n: usize) -> Result<Vec<f64>> {
    upper_factor_of_inverse(Mat::<f64>::from_fn(n, n, |i, j| h[i * n + j]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_factor_reconstructs_the_inverse() {
        // H = A Aᵀ + I, a small SPD matrix.
        let n = 5;
        let a: Vec<f64> = (0..n * n).map(|k| ((k * 7 % 11) as f64 - 5.0) / 3.0).collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] =
                    (0..n).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>() + if i == j { 1.0 } else { 0.0 };
            }
        }
        let u = inverse_cholesky_upper(&h, n).unwrap();
        // (Uᵀ U) H = I
        for i in 0..n {
            for j in 0..n {
                let hinv_ij = |r: usize, c: usize| (0..n).map(|k| u[k * n + r] * u[k * n + c]).sum::<f64>();
                let prod: f64 = (0..n).map(|k| hinv_ij(i, k) * h[k * n + j]).sum();
                assert!((prod - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9, "({i},{j}) = {prod}");
            }
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0, "U is upper triangular");
            }
        }
    }

    #[test]
    fn the_factor_does_not_depend_on_the_thread_count() {
        // faer's Cholesky and inverse run in parallel (its default parallelism follows the
        // rayon pool); their GEMMs split the output, not the sums: the same bits at any count.
        let n = 700;
        let x: Vec<f64> = (0..3 * n * n).map(|k| ((k as f64 + 1.0) * 0.754_877_666).fract() - 0.5).collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v: f64 = (0..3 * n).map(|t| x[t * n + i] * x[t * n + j]).sum();
                h[i * n + j] = v;
                h[j * n + i] = v;
            }
        }
        dampen(&mut h, n, 0.01);
        let run = |threads: usize, p: HinvPrecision| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| inverse_cholesky_upper_in(&h, n, p).unwrap())
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        for p in [HinvPrecision::F32, HinvPrecision::F64] {
            let one = run(1, p);
            for threads in [2, 3, 4, 8] {
                assert!(one == run(threads, p), "{p:?}: {threads} threads differ from 1");
            }
        }
    }

    #[test]
    fn inverse_diagonal_is_the_first_swept_columns_saliency() {
        // [H⁻¹]_00 = U_00² for the upper factor of H⁻¹ (the first column of a sweep), for
        // every column brought to the front; and 1/[H⁻¹]_jj = H_jj (1 − R²_j) ≤ H_jj.
        let n = 4;
        let h: Vec<f64> = vec![4.0, 1.0, 0.5, 0.0, 1.0, 3.0, 0.2, 0.1, 0.5, 0.2, 2.0, 0.3, 0.0, 0.1, 0.3, 1.0];
        let d = inverse_diagonal(&h, n, 0.01).unwrap();
        let mut damped = h.clone();
        dampen(&mut damped, n, 0.01);
        for j in 0..n {
            let order: Vec<usize> = std::iter::once(j).chain((0..n).filter(|&k| k != j)).collect();
            let hp: Vec<f64> = (0..n * n).map(|k| damped[order[k / n] * n + order[k % n]]).collect();
            let u = inverse_cholesky_upper(&hp, n).unwrap();
            assert!((u[0] * u[0] - d[j]).abs() < 1e-12, "{j}: {} vs {}", u[0] * u[0], d[j]);
            assert!(1.0 / d[j] <= damped[j * n + j] + 1e-12);
        }
    }

    #[test]
    fn a_non_finite_hessian_is_named_as_such_not_as_a_damping_problem() {
        let mut h = vec![2.0, 0.5, 0.5, 2.0];
        h[1] = f64::NAN;
        let e = inverse_cholesky_upper_in(&h, 2, HinvPrecision::F32).unwrap_err().to_string();
        assert!(e.contains("non-finite") && !e.contains("percdamp"), "{e}");
    }

    #[test]
    fn dampening_fixes_dead_inputs_and_adds_relative_damp() {
        let mut h = vec![4.0, 0.0, 0.0, 0.0];
        dampen(&mut h, 2, 0.01);
        // dead → 1, mean diag = 2.5, damp = 0.025
        assert_eq!(h, vec![4.025, 0.0, 0.0, 1.025]);
    }
}
