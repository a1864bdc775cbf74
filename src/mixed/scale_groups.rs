//! Scale-sharing groups at uniform bits (`--grouping-use scales`): K = cols / size groups
//! of exactly `size` columns, each with its own scale and zero point per row, chosen by a
//! partition instead of as contiguous ranges, and stored as `QuantScheme::Static` (the
//! column → group map is GPTQ's `g_idx`, so a gptq export can carry it). The storage cost
//! is that of `--groupsize size`, but for the g_idx itself (⌈log₂ K⌉ bits per input column,
//! not per weight; the cost model does not count it, as it does not count a mixed plan's
//! column order).
//!
//! Sources (`ScaleSource`): MI (the balanced spectral clustering of the MI similarity, per
//! input site), random equal-size partitions (seeded, per input site), balanced k-means on
//! each column's weight range (per linear), and contiguous ranges (the control that, with
//! `--act-order`, is GPTQ's `static_groups`).

use super::grouping::{self, GroupQuality};
use super::groups::host_similarity;
use super::{MixedConfig, ScaleSource};
use crate::pipeline::planner::{LinearWeights, SiteContext};
use anyhow::{bail, Result};

/// The site-level partition (MI, random, contiguous) of an input of `cols` channels into
/// groups of `size`, with the MI partition's quality; None for per-linear sources (range).
pub fn site_labels(ctx: &SiteContext, cfg: &MixedConfig, size: usize) -> Result<Option<(Vec<usize>, Option<f64>)>> {
    let cols = ctx.cols;
    if size == 0 || !cols.is_multiple_of(size) {
        bail!("scale groups of {size} columns do not divide the input width {cols}");
    }
    let k = cols / size;
    Ok(match cfg.options.scale_source {
        ScaleSource::Contiguous => Some(((0..cols).map(|j| j / size).collect(), None)),
        ScaleSource::Random => Some((
            grouping::random_with_sizes(
                &vec![size; k],
                cfg.partition_seed().wrapping_add(ctx.layer as u64 * 7919 + cols as u64),
            ),
            None,
        )),
        ScaleSource::Mi => {
            let what = || format!("layer {} {:?} ({cols} channels)", ctx.layer, ctx.site);
            crate::progress::trace(|| format!("{}: MI similarity", what()));
            let sim = host_similarity(ctx, cfg.mi_method)?;
            crate::progress::trace(|| format!("{}: balanced spectral clustering into {k} groups", what()));
            let labels = grouping::balanced_spectral(&sim, k, size, cfg.seed)?;
            crate::progress::trace(|| format!("{}: grouped", what()));
            let GroupQuality { silhouette, .. } = grouping::quality(&sim, &labels);
            Some((labels, Some(silhouette)))
        }
        ScaleSource::Range => None,
    })
}

/// Balanced k-means on the columns' (min, max) over the rows of one linear's weight.
pub fn range_labels(lin: &LinearWeights, cols: usize, size: usize, seed: u64) -> Vec<usize> {
    let mut feats = vec![0.0; cols * 2];
    for (j, f) in feats.chunks_mut(2).enumerate() {
        let col = (0..lin.rows).map(|r| lin.weight[r * cols + j] as f64);
        f[0] = col.clone().fold(f64::INFINITY, f64::min);
        f[1] = col.fold(f64::NEG_INFINITY, f64::max);
    }
    super::kmeans::balanced_kmeans(&feats, 2, cols / size, size, seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LinearKind;

    #[test]
    fn range_groups_put_columns_of_like_range_together() {
        // 8 columns: 4 with range ±1, 4 with range ±10, interleaved: two groups of 4 by range.
        let (rows, cols) = (3, 8);
        let w: Vec<f32> = (0..rows * cols)
            .map(|k| {
                let (r, j) = (k / cols, k % cols);
                let s = if j % 2 == 0 { 1.0 } else { 10.0 };
                s * [-1.0, 0.3, 1.0][r] * (1.0 + 0.01 * j as f32)
            })
            .collect();
        let lin = LinearWeights { kind: LinearKind::Fc1, rows, weight: &w };
        let labels = range_labels(&lin, cols, 4, 0);
        assert!((0..cols).all(|j| labels[j] == labels[j % 2]), "{labels:?}");
        assert_ne!(labels[0], labels[1]);
    }
}
