//! What a solved linear's quantized weights are made of: per row and grid the scale, zero
//! point and bits, and per original column the grid it belongs to. Kept in memory for the
//! packed exports (never written to the result JSON); `output::packing::recover_codes`
//! turns a weight and its grids back into integer codes, checking every weight.

use super::quantizer::{QuantParams, ScalePrecision};
use super::scheme::QuantScheme;

#[derive(Clone, Debug, PartialEq)]
pub struct LinearGrids {
    pub rows: usize,
    pub cols: usize,
    /// Bits of each grid, grids in sweep order (one grid for per-row quantization).
    pub bits: Vec<u32>,
    /// Columns of each grid: grid k covers sweep positions `Σ lens[..k] .. Σ lens[..=k]`.
    pub lens: Vec<usize>,
    /// Scale of (row, grid), row-major `[rows][grids]`.
    pub scales: Vec<f32>,
    /// Zero point of (row, grid) (integer-valued), `[rows][grids]`.
    pub zeros: Vec<f32>,
    /// Grid of each original column (`[cols]`): `g_idx[order[p]]` = the grid holding sweep
    /// position p. With act-order this is the `g_idx` the GPTQ code writes
    /// (`g_idx[perm[p]] = p / group_size`).
    pub g_idx: Vec<i32>,
    /// `order[p]` = the original column swept p-th.
    pub order: Vec<usize>,
    pub sym: bool,
    /// The precision the scales were fitted in (`SweepSpec::scale_precision`).
    pub precision: ScalePrecision,
}

impl LinearGrids {
    /// The grids of a linear solved with `scheme` in sweep `order`, from the grid of each
    /// (row, grid) as `param(row, grid)` gives it. None for an unquantized scheme.
    pub fn collect(
        scheme: &QuantScheme,
        rows: usize,
        order: &[usize],
        precision: ScalePrecision,
        param: impl Fn(usize, usize) -> QuantParams,
    ) -> Option<Self> {
        let cols = order.len();
        let ranges = scheme.grids(cols);
        if ranges.is_empty() {
            return None;
        }
        let n = ranges.len();
        let mut g_idx = vec![0i32; cols];
        for (k, g) in ranges.iter().enumerate() {
            for &j in &order[g.start..g.start + g.len] {
                g_idx[j] = k as i32;
            }
        }
        let mut scales = Vec::with_capacity(rows * n);
        let mut zeros = Vec::with_capacity(rows * n);
        for r in 0..rows {
            for k in 0..n {
                let p = param(r, k);
                scales.push(p.scale);
                zeros.push(p.zero);
            }
        }
        Some(LinearGrids {
            rows,
            cols,
            bits: ranges.iter().map(|g| g.bits).collect(),
            lens: ranges.iter().map(|g| g.len).collect(),
            scales,
            zeros,
            g_idx,
            order: order.to_vec(),
            sym: scheme.symmetric(),
            precision,
        })
    }

    pub fn n_grids(&self) -> usize {
        self.bits.len()
    }

    /// Whether the sweep visited the columns in their natural order.
    pub fn identity_order(&self) -> bool {
        self.order.iter().enumerate().all(|(k, &j)| k == j)
    }

    /// The grids of the weight with old row `perm[p]` at row p: each row keeps its grids.
    pub fn permute_rows(&mut self, perm: &[usize]) {
        let n = self.n_grids();
        let take =
            |v: &[f32]| -> Vec<f32> { perm.iter().flat_map(|&r| v[r * n..(r + 1) * n].iter().copied()).collect() };
        self.scales = take(&self.scales);
        self.zeros = take(&self.zeros);
    }

    /// The grids of the weight with old column `perm[p]` at column p: each column keeps its
    /// grid, and the sweep order names the columns' new places.
    pub fn permute_columns(&mut self, perm: &[usize]) {
        let mut new_place = vec![0usize; perm.len()];
        for (p, &j) in perm.iter().enumerate() {
            new_place[j] = p;
        }
        self.g_idx = perm.iter().map(|&j| self.g_idx[j]).collect();
        self.order = self.order.iter().map(|&j| new_place[j]).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permuted_grids_follow_their_rows_and_columns() {
        // 2 rows, 4 columns, two grids of 2 swept in the order 3, 1, 0, 2.
        let scheme = QuantScheme::Grouped { bits: 4, sym: false, size: 2 };
        let param = |r: usize, k: usize| QuantParams { scale: (10 * r + k) as f32, zero: k as f32, maxq: 15.0 };
        let mut g = LinearGrids::collect(&scheme, 2, &[3, 1, 0, 2], ScalePrecision::F32, param).unwrap();
        assert_eq!(g.g_idx, vec![1, 0, 1, 0]);
        g.permute_rows(&[1, 0]);
        assert_eq!(g.scales, vec![10.0, 11.0, 0.0, 1.0]);
        // Columns 2, 0, 3, 1 at places 0..4: column 3 (grid 0, swept first) is now column 2.
        g.permute_columns(&[2, 0, 3, 1]);
        assert_eq!(g.g_idx, vec![1, 1, 0, 0]);
        assert_eq!(g.order, vec![2, 3, 1, 0]);
        for (p, &j) in g.order.iter().enumerate() {
            assert_eq!(g.g_idx[j], (p / 2) as i32, "sweep position {p}");
        }
    }
}
