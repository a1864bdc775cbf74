//! The integer codes of every solved linear, kept in memory during compression for the
//! packed exports: the pipeline hands each solved weight (f32, before rounding to the
//! checkpoint's dtype) and its grids to a `CodeStore`, which recovers the codes with
//! `packing::recover_codes_per_group`. Every weight is checked to be `scale · (q − zero)`
//! bit for bit, so a weight off its grid stops the run with an error instead of being
//! stored wrong. Memory: one byte per quantized weight.

use super::packing;
use crate::model::LinearKind;
use crate::pipeline::{Axis, SolvedSink};
use crate::solver::LinearGrids;
use anyhow::{anyhow, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A solved linear's codes and the grids they are codes of.
pub struct LinearCodes {
    pub grids: LinearGrids,
    /// `[rows][cols]` (torch Linear layout), each below `2^bits` of its grid.
    pub codes: Vec<u8>,
}

impl std::fmt::Debug for LinearCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinearCodes({}×{}, {} grids)", self.grids.rows, self.grids.cols, self.grids.n_grids())
    }
}

/// The codes of a weight on its grids (see the module doc).
pub fn recover(weight: &[f32], grids: &LinearGrids) -> Result<Vec<u8>> {
    packing::recover_codes_per_group(
        weight,
        grids.rows,
        grids.cols,
        &grids.scales,
        &grids.zeros,
        &grids.g_idx,
        &grids.bits,
    )
    .map_err(|e| anyhow!("quantized weight does not match its grid: {e}"))
}

/// Collects the codes of every quantized linear of a run (`pipeline::compress_into`).
#[derive(Default)]
pub struct CodeStore {
    linears: Mutex<BTreeMap<(usize, LinearKind), Arc<LinearCodes>>>,
}

impl CodeStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The codes of linear `kind` of decoder layer `layer`, if it was quantized.
    pub fn get(&self, layer: usize, kind: LinearKind) -> Option<Arc<LinearCodes>> {
        self.linears.lock().ok()?.get(&(layer, kind)).cloned()
    }

    pub fn len(&self) -> usize {
        self.linears.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SolvedSink for CodeStore {
    /// Codes are kept for quantized linears only.
    fn needs_weight(&self, grids: Option<&LinearGrids>) -> bool {
        grids.is_some()
    }

    fn solved(&self, layer: usize, kind: LinearKind, weight: &[f32], grids: Option<&LinearGrids>) -> Result<()> {
        let Some(grids) = grids else { return Ok(()) };
        let codes = recover(weight, grids)?;
        let entry = Arc::new(LinearCodes { grids: grids.clone(), codes });
        self.linears.lock().map_err(|_| anyhow!("code store poisoned"))?.insert((layer, kind), entry);
        Ok(())
    }

    /// The kept codes and grids of a folded linear follow its rows or columns.
    fn permuted(&self, layer: usize, kind: LinearKind, axis: Axis, perm: &[usize]) -> Result<()> {
        let mut linears = self.linears.lock().map_err(|_| anyhow!("code store poisoned"))?;
        let Some(entry) = linears.get_mut(&(layer, kind)) else { return Ok(()) };
        let (rows, cols) = (entry.grids.rows, entry.grids.cols);
        let mut grids = entry.grids.clone();
        let codes = match axis {
            Axis::Rows => {
                grids.permute_rows(perm);
                perm.iter().flat_map(|&r| entry.codes[r * cols..(r + 1) * cols].iter().copied()).collect()
            }
            Axis::Columns => {
                grids.permute_columns(perm);
                (0..rows).flat_map(|r| perm.iter().map(move |&j| r * cols + j)).map(|k| entry.codes[k]).collect()
            }
        };
        *entry = Arc::new(LinearCodes { grids, codes });
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::solver::{
        host, ColumnGroup, LinearScheme, QuantScheme, ScalePrecision, Sparsity, SweepSettings, SweepSpec,
    };

    /// A random SPD Hessian with correlated channels, and a weight.
    fn layer(rows: usize, cols: usize, seed: u64) -> (Vec<f32>, Vec<f64>) {
        let mut rng = crate::rng::seeded(seed);
        let mut u = move || crate::rng::uniform(&mut rng) * 2.0 - 1.0;
        let w: Vec<f32> = (0..rows * cols).map(|_| (u() * 0.1) as f32).collect();
        let t = 2 * cols;
        let x: Vec<f64> = (0..t * cols).map(|k| u() + 0.5 * ((k / cols) as f64).sin()).collect();
        let mut h = vec![0.0; cols * cols];
        for i in 0..cols {
            for j in 0..cols {
                h[i * cols + j] = (0..t).map(|k| x[k * cols + i] * x[k * cols + j]).sum::<f64>() * 2.0 / t as f64;
            }
        }
        (w, h)
    }

    /// A 12 × 200 linear solved on the host with f16 scales: its weight and grids.
    pub(crate) fn solve(
        quant: QuantScheme,
        act_order: bool,
        sparsity: Sparsity,
        perm: Option<&[usize]>,
    ) -> (Vec<f32>, LinearGrids) {
        let (rows, cols) = (12, 200);
        let (w, h) = layer(rows, cols, 7);
        let settings = SweepSettings { sparsity, act_order, blocksize: 64, ..SweepSettings::published() };
        let scheme = LinearScheme { quant, perm: perm.map(<[usize]>::to_vec), nm_sets: None };
        let spec = SweepSpec { settings: &settings, scheme: &scheme, scale_precision: ScalePrecision::F16 };
        let s = host::solve(&w, rows, cols, &h, spec).unwrap();
        (s.weight.to_host().unwrap(), s.grids.expect("quantized"))
    }

    #[test]
    fn codes_are_recovered_from_solver_output_for_every_scheme() {
        // 2/3/4/8 bits, per-channel and grouped (200 columns in groups of 64: a short last
        // group of 8), with and without act-order, sparse and dense, symmetric and not.
        for bits in [2u32, 3, 4, 8] {
            for sym in [false, true] {
                for (quant, act_order) in [
                    (QuantScheme::PerRow { bits, sym }, false),
                    (QuantScheme::PerRow { bits, sym }, true),
                    (QuantScheme::Grouped { bits, sym, size: 64 }, false),
                    (QuantScheme::Grouped { bits, sym, size: 64 }, true),
                ] {
                    for sparsity in [Sparsity::Dense, Sparsity::Unstructured(0.5)] {
                        let (w, g) = solve(quant.clone(), act_order, sparsity, None);
                        let codes = recover(&w, &g).unwrap_or_else(|e| panic!("{quant:?} {act_order}: {e}"));
                        assert!(codes.iter().all(|&c| u32::from(c) < 1 << bits));
                        // Every scale is an f16 value (the grids are fitted as stored).
                        assert!(g.scales.iter().all(|&s| half::f16::from_f32(s).to_f32() == s));
                        let n = if matches!(quant, QuantScheme::PerRow { .. }) { 1 } else { 4 };
                        assert_eq!(g.n_grids(), n);
                        if n == 4 {
                            assert_eq!(g.lens, vec![64, 64, 64, 8], "short last group");
                        }
                        // g_idx as the GPTQ code writes it: the group of sweep position p is
                        // p / 64, and column order[p] carries it.
                        for (p, &j) in g.order.iter().enumerate() {
                            assert_eq!(g.g_idx[j] as usize, if n == 1 { 0 } else { p / 64 });
                        }
                        assert_eq!(g.identity_order(), !act_order);
                        if sym {
                            assert!(g.zeros.iter().all(|&z| z == (1u32 << (bits - 1)) as f32));
                        }
                        // Dequantizing the codes gives the solver's weights back exactly.
                        for o in 0..g.rows {
                            for j in 0..g.cols {
                                let k = o * n + g.g_idx[j] as usize;
                                let v = g.scales[k] * (f32::from(codes[o * g.cols + j]) - g.zeros[k]);
                                assert_eq!(v.to_bits(), w[o * g.cols + j].to_bits());
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn mixed_groups_in_a_permuted_order_give_their_codes() {
        let groups = vec![
            ColumnGroup { start: 0, len: 37, bits: 4 },
            ColumnGroup { start: 37, len: 100, bits: 2 },
            ColumnGroup { start: 137, len: 63, bits: 8 },
        ];
        let perm: Vec<usize> = (0..200).map(|k| (k * 77) % 200).collect();
        let (w, g) = solve(QuantScheme::Mixed { groups, sym: false }, false, Sparsity::Dense, Some(&perm));
        assert_eq!(g.bits, vec![4, 2, 8]);
        assert_eq!(g.order, perm);
        let codes = recover(&w, &g).unwrap();
        for j in 0..200 {
            let k = g.g_idx[j] as usize;
            let maxq = (1u32 << g.bits[k]) - 1;
            assert!((0..g.rows).all(|o| u32::from(codes[o * 200 + j]) <= maxq), "column {j} beyond its group's width");
        }
        assert_eq!(g.g_idx[perm[36]], 0);
        assert_eq!(g.g_idx[perm[37]], 1);
        assert_eq!(g.g_idx[perm[199]], 2);
    }

    #[test]
    fn permuted_codes_dequantize_to_the_permuted_weight() {
        let (w, g) = solve(QuantScheme::Grouped { bits: 4, sym: false, size: 64 }, true, Sparsity::Dense, None);
        let (rows, cols) = (g.rows, g.cols);
        let store = CodeStore::new();
        store.solved(0, LinearKind::Fc2, &w, Some(&g)).unwrap();
        let row_perm: Vec<usize> = (0..rows).map(|r| (r * 5) % rows).collect();
        let col_perm: Vec<usize> = (0..cols).map(|j| (j * 77) % cols).collect();
        store.permuted(0, LinearKind::Fc2, Axis::Rows, &row_perm).unwrap();
        store.permuted(0, LinearKind::Fc2, Axis::Columns, &col_perm).unwrap();
        store.permuted(0, LinearKind::Fc1, Axis::Rows, &row_perm).unwrap(); // nothing kept: nothing to do
        let moved: Vec<f32> =
            (0..rows).flat_map(|r| col_perm.iter().map(|&j| w[row_perm[r] * cols + j]).collect::<Vec<_>>()).collect();
        let kept = store.get(0, LinearKind::Fc2).unwrap();
        assert_eq!(recover(&moved, &kept.grids).unwrap(), kept.codes, "the moved weight is on the moved grids");
        assert!(store.get(0, LinearKind::Fc1).is_none());
    }

    #[test]
    fn a_weight_off_its_grid_is_an_error() {
        let (mut w, g) = solve(QuantScheme::PerRow { bits: 4, sym: false }, false, Sparsity::Dense, None);
        assert!(recover(&w, &g).is_ok());
        w[5] = f32::from_bits(w[5].to_bits() + 1);
        let e = recover(&w, &g).unwrap_err().to_string();
        assert!(e.contains("not on its grid"), "{e}");
        let store = CodeStore::new();
        assert!(store.solved(0, LinearKind::Fc1, &w, Some(&g)).is_err());
        assert!(store.solved(0, LinearKind::Fc2, &w, None).is_ok());
        assert!(store.is_empty(), "nothing kept for an unquantized linear or a failed one");
    }
}
