//! Quantization schemes: which columns share a grid, and what a scheme costs in bits.
//!
//! Cost model (stated, and used everywhere): each (row, grid) stores a 16-bit scale and a
//! zero point of the grid's bit width; each weight stores `bits`. Sparsity is not counted
//! (no index format is assumed): "bits per weight" is per dense position.

use rayon::prelude::*;

/// A contiguous run of columns (in sweep order) quantized with its own bit width.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnGroup {
    pub start: usize,
    pub len: usize,
    pub bits: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum QuantScheme {
    None,
    /// One grid per row, from the whole weight before the sweep (the published code).
    PerRow {
        bits: u32,
        sym: bool,
    },
    /// GPTQ `--groupsize`: a new grid per row every `size` columns (the last may be short).
    Grouped {
        bits: u32,
        sym: bool,
        size: usize,
    },
    /// Mixed precision: each column group its own bits and its own grid per row.
    Mixed {
        groups: Vec<ColumnGroup>,
        sym: bool,
    },
}

/// Columns `start..start + len` (in sweep order) whose grid is fitted when the sweep
/// reaches `start`, at `bits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridRange {
    pub start: usize,
    pub len: usize,
    pub bits: u32,
}

impl QuantScheme {
    pub fn is_quantized(&self) -> bool {
        !matches!(self, QuantScheme::None)
    }

    pub fn symmetric(&self) -> bool {
        match self {
            QuantScheme::PerRow { sym, .. } | QuantScheme::Grouped { sym, .. } | QuantScheme::Mixed { sym, .. } => *sym,
            QuantScheme::None => false,
        }
    }

    /// The grids a sweep fits as it goes, in sweep order: one per group. Per-row grids are
    /// fitted on the untouched weight before the sweep instead (none here).
    pub fn sweep_grids(&self, cols: usize) -> Vec<GridRange> {
        match self {
            QuantScheme::Grouped { bits, size, .. } => (0..cols)
                .step_by(*size)
                .map(|s| GridRange { start: s, len: (*size).min(cols - s), bits: *bits })
                .collect(),
            QuantScheme::Mixed { groups, .. } => {
                groups.iter().map(|g| GridRange { start: g.start, len: g.len, bits: g.bits }).collect()
            }
            QuantScheme::None | QuantScheme::PerRow { .. } => Vec::new(),
        }
    }

    /// Every grid of a row, per-row grids included: the column ranges (in sweep order) whose
    /// weights share one scale and zero point.
    pub fn grids(&self, cols: usize) -> Vec<GridRange> {
        match self {
            QuantScheme::None => Vec::new(),
            QuantScheme::PerRow { bits, .. } => vec![GridRange { start: 0, len: cols, bits: *bits }],
            _ => self.sweep_grids(cols),
        }
    }

    /// (average bits per weight, the same including metadata) of one row of `cols` columns,
    /// or None for an unquantized scheme.
    pub fn bits(&self, cols: usize) -> Option<(f64, f64)> {
        let grids = self.grids(cols);
        if grids.is_empty() {
            return None;
        }
        let c = cols as f64;
        let payload = match self {
            // Per-row and grouped schemes spend `bits` on every weight.
            QuantScheme::PerRow { bits, .. } | QuantScheme::Grouped { bits, .. } => *bits as f64,
            _ => grids.iter().map(|g| g.len as f64 * g.bits as f64).sum::<f64>() / c,
        };
        let meta: f64 = grids.iter().map(|g| metadata_bits(g.bits)).sum::<f64>() / c;
        Some((payload, payload + meta))
    }
}

/// Metadata bits per (row, grid): fp16 scale + zero point at the grid's width.
pub fn metadata_bits(bits: u32) -> f64 {
    16.0 + bits as f64
}

/// Distinct values per row, and per (row, grid), maxima over the weight: the check that a
/// b-bit scheme uses at most 2^b levels. Grids follow the scheme, in sweep order (`perm`).
pub fn max_levels(w: &[f32], cols: usize, quant: &QuantScheme, perm: Option<&[usize]>) -> (usize, usize) {
    let identity: Vec<usize> = (0..cols).collect();
    let order = perm.unwrap_or(&identity);
    let ranges: Vec<(usize, usize)> = match quant {
        QuantScheme::Grouped { .. } | QuantScheme::Mixed { .. } => {
            quant.sweep_grids(cols).iter().map(|g| (g.start, g.start + g.len)).collect()
        }
        _ => vec![(0, cols)],
    };
    let count = |vals: &mut Vec<u32>| {
        vals.sort_unstable();
        vals.dedup();
        vals.len()
    };
    // Rows in parallel (a sort per row and grid: seconds single-threaded at opt-6.7b's fc2).
    w.par_chunks(cols)
        .map(|row| {
            let per_row = count(&mut row.iter().map(|x| x.to_bits()).collect());
            let per_group = ranges
                .iter()
                .map(|&(a, b)| count(&mut order[a..b].iter().map(|&j| row[j].to_bits()).collect()))
                .max()
                .unwrap_or(0);
            (per_row, per_group)
        })
        .reduce(|| (0, 0), |x, y| (x.0.max(y.0), x.1.max(y.1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_row_and_grouped_costs() {
        let (b, m) = QuantScheme::PerRow { bits: 4, sym: false }.bits(256).unwrap();
        assert_eq!(b, 4.0);
        assert!((m - (4.0 + 20.0 / 256.0)).abs() < 1e-12);
        let (_, m) = QuantScheme::Grouped { bits: 3, sym: false, size: 128 }.bits(256).unwrap();
        assert!((m - (3.0 + 2.0 * 19.0 / 256.0)).abs() < 1e-12);
        // A short last group costs a whole group's metadata.
        let (_, m) = QuantScheme::Grouped { bits: 3, sym: false, size: 128 }.bits(300).unwrap();
        assert!((m - (3.0 + 3.0 * 19.0 / 300.0)).abs() < 1e-12);
        assert!(QuantScheme::None.bits(10).is_none());
    }

    #[test]
    fn mixed_groups_weight_bits_by_size() {
        let g = vec![ColumnGroup { start: 0, len: 64, bits: 2 }, ColumnGroup { start: 64, len: 192, bits: 4 }];
        let (b, m) = QuantScheme::Mixed { groups: g, sym: false }.bits(256).unwrap();
        assert!((b - (64.0 * 2.0 + 192.0 * 4.0) / 256.0).abs() < 1e-12);
        assert!((m - b - (18.0 + 20.0) / 256.0).abs() < 1e-12);
    }

    #[test]
    fn grids_cover_every_column_once() {
        let mixed = QuantScheme::Mixed {
            groups: vec![ColumnGroup { start: 0, len: 100, bits: 4 }, ColumnGroup { start: 100, len: 220, bits: 3 }],
            sym: false,
        };
        for (scheme, cols) in [
            (QuantScheme::Grouped { bits: 3, sym: false, size: 128 }, 300),
            (QuantScheme::PerRow { bits: 4, sym: true }, 77),
            (mixed, 320),
        ] {
            let grids = scheme.grids(cols);
            let mut next = 0;
            for g in &grids {
                assert_eq!(g.start, next, "{scheme:?}");
                next += g.len;
            }
            assert_eq!(next, cols, "{scheme:?}");
        }
        let g = QuantScheme::Grouped { bits: 3, sym: false, size: 128 }.sweep_grids(300);
        assert_eq!(g.iter().map(|g| (g.start, g.len)).collect::<Vec<_>>(), vec![(0, 128), (128, 128), (256, 44)]);
        assert!(QuantScheme::PerRow { bits: 4, sym: true }.sweep_grids(8).is_empty());
    }
}
