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
    /// Groups of any columns, not runs of the sweep (GPTQ's "static groups", generalised):
    /// `labels[j]` is the group of original column j, `bits[g]` the width of group g. Each
    /// (row, group) grid is fitted from the untouched weight before the sweep, as the
    /// per-row grid is, so the sweep may visit the columns in any order (natural, act-order)
    /// and each column keeps its place. A group of every column equals `PerRow`. Groups
    /// without columns store nothing.
    Static {
        labels: Vec<u32>,
        bits: Vec<u32>,
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
            QuantScheme::PerRow { sym, .. }
            | QuantScheme::Grouped { sym, .. }
            | QuantScheme::Mixed { sym, .. }
            | QuantScheme::Static { sym, .. } => *sym,
            QuantScheme::None => false,
        }
    }

    /// The grids a sweep fits as it goes, in sweep order: one per group. Per-row and static
    /// grids are fitted on the untouched weight before the sweep instead (none here).
    pub fn sweep_grids(&self, cols: usize) -> Vec<GridRange> {
        match self {
            QuantScheme::Grouped { bits, size, .. } => (0..cols)
                .step_by(*size)
                .map(|s| GridRange { start: s, len: (*size).min(cols - s), bits: *bits })
                .collect(),
            QuantScheme::Mixed { groups, .. } => {
                groups.iter().map(|g| GridRange { start: g.start, len: g.len, bits: g.bits }).collect()
            }
            QuantScheme::None | QuantScheme::PerRow { .. } | QuantScheme::Static { .. } => Vec::new(),
        }
    }

    /// Every grid of a row, per-row grids included: the column ranges (in sweep order) whose
    /// weights share one scale and zero point. Static groups are no ranges: none here (see
    /// `static_group_sizes`).
    pub fn grids(&self, cols: usize) -> Vec<GridRange> {
        match self {
            QuantScheme::None | QuantScheme::Static { .. } => Vec::new(),
            QuantScheme::PerRow { bits, .. } => vec![GridRange { start: 0, len: cols, bits: *bits }],
            _ => self.sweep_grids(cols),
        }
    }

    /// (average bits per weight, the same including metadata) of one row of `cols` columns,
    /// or None for an unquantized scheme.
    pub fn bits(&self, cols: usize) -> Option<(f64, f64)> {
        if let QuantScheme::Static { bits, .. } = self {
            let sizes = self.static_group_sizes().expect("static");
            let c = cols as f64;
            let payload = sizes.iter().zip(bits).map(|(&n, &b)| n as f64 * b as f64).sum::<f64>() / c;
            let meta = sizes.iter().zip(bits).filter(|(&n, _)| n > 0).map(|(_, &b)| metadata_bits(b)).sum::<f64>() / c;
            return Some((payload, payload + meta));
        }
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

impl QuantScheme {
    /// Columns in each static group (indexed as `bits`), or None for other schemes.
    pub fn static_group_sizes(&self) -> Option<Vec<usize>> {
        let QuantScheme::Static { labels, bits, .. } = self else { return None };
        let mut sizes = vec![0usize; bits.len()];
        for &l in labels {
            sizes[l as usize] += 1;
        }
        Some(sizes)
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
    if let QuantScheme::Static { labels, bits, .. } = quant {
        // Groups by label over the original columns (the sweep order does not matter).
        let k = bits.len();
        return w
            .par_chunks(cols)
            .map(|row| {
                let mut groups: Vec<Vec<u32>> = vec![Vec::new(); k];
                for (j, &x) in row.iter().enumerate() {
                    groups[labels[j] as usize].push(x.to_bits());
                }
                let per_row = distinct_values(&mut row.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
                (per_row, groups.iter_mut().map(|g| distinct_values(g)).max().unwrap_or(0))
            })
            .reduce(|| (0, 0), |x, y| (x.0.max(y.0), x.1.max(y.1)));
    }
    // Rows in parallel (a sort per row and grid: seconds single-threaded at opt-6.7b's fc2).
    // One grid spanning the row is the row itself (the sweep order does not change a set).
    let whole_row = ranges == [(0, cols)];
    w.par_chunks(cols)
        .map(|row| {
            let per_row = distinct_values(&mut row.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            if whole_row {
                return (per_row, per_row);
            }
            let per_group = ranges
                .iter()
                .map(|&(a, b)| distinct_values(&mut order[a..b].iter().map(|&j| row[j].to_bits()).collect::<Vec<_>>()))
                .max()
                .unwrap_or(0);
            (per_row, per_group)
        })
        .reduce(|| (0, 0), |x, y| (x.0.max(y.0), x.1.max(y.1)))
}

/// Distinct values among f32 bit patterns (reordered in place). Weights stored in bf16 or
/// f16 take at most 2^16 patterns: a 64 Ki-bit set counts them in one pass where every value
/// is exact in one of those types (worth its 8 KiB from a few thousand values on: a row, not
/// a 128-column grid); other values are sorted.
fn distinct_values(bits: &mut [u32]) -> usize {
    const BITSET_FROM: usize = 2048;
    fn count_16(bits: &[u32], key: impl Fn(u32) -> Option<u16>) -> Option<usize> {
        let mut seen = vec![0u64; 1 << 10];
        for &b in bits {
            let k = key(b)? as usize;
            seen[k >> 6] |= 1 << (k & 63);
        }
        Some(seen.iter().map(|w| w.count_ones() as usize).sum())
    }
    let bf16 = |b: u32| (b & 0xFFFF == 0).then_some((b >> 16) as u16);
    let f16 = |b: u32| {
        let h = half::f16::from_f32(f32::from_bits(b));
        (h.to_f32().to_bits() == b).then_some(h.to_bits())
    };
    let counted = (bits.len() >= BITSET_FROM).then(|| count_16(bits, bf16).or_else(|| count_16(bits, f16))).flatten();
    counted.unwrap_or_else(|| {
        bits.sort_unstable();
        let mut n = 0;
        for (i, &b) in bits.iter().enumerate() {
            n += usize::from(i == 0 || bits[i - 1] != b);
        }
        n
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_values_match_a_sort_for_bf16_f16_and_f32_values() {
        let mut rng = crate::rng::seeded(7);
        let mut u = move || crate::rng::uniform(&mut rng) as f32 * 2.0 - 1.0;
        let raw: Vec<f32> = (0..5000).map(|_| (u() * 8.0).round() / 8.0 * 0.01 + u() * 1e-3).collect();
        let sets: [Vec<f32>; 4] = [
            raw.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect(),
            raw.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
            raw.clone(),
            vec![0.0, -0.0, 0.0, 1.0, -1.0, 1.0],
        ];
        for vals in sets {
            let mut bits: Vec<u32> = vals.iter().map(|x| x.to_bits()).collect();
            let mut sorted = bits.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(distinct_values(&mut bits), sorted.len());
        }
    }

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
    fn static_groups_cost_as_mixed_groups_of_the_same_sizes() {
        // 64 columns at 2 bits and 192 at 4, interleaved: the cost of the contiguous runs.
        let labels: Vec<u32> = (0..256).map(|j| u32::from(j % 4 != 0)).collect();
        let stat = QuantScheme::Static { labels, bits: vec![2, 4], sym: false };
        assert_eq!(stat.static_group_sizes(), Some(vec![64, 192]));
        let g = vec![ColumnGroup { start: 0, len: 64, bits: 2 }, ColumnGroup { start: 64, len: 192, bits: 4 }];
        assert_eq!(stat.bits(256), QuantScheme::Mixed { groups: g, sym: false }.bits(256));
        assert!(stat.sweep_grids(256).is_empty(), "static grids are fitted before the sweep");
        // One group is the per-row grid; an empty group stores nothing.
        let one = QuantScheme::Static { labels: vec![0; 100], bits: vec![3], sym: false };
        assert_eq!(one.bits(100), QuantScheme::PerRow { bits: 3, sym: false }.bits(100));
        let empty = QuantScheme::Static { labels: vec![0; 100], bits: vec![3, 8], sym: false };
        assert_eq!(empty.bits(100), one.bits(100));
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
