//! Partitions of a linear input's channels: by importance rank (enhanced mode), by mutual
//! information (MI mode), or random with MI's group sizes (the control).

use super::grouping::{self, GroupingMethod};
use super::grouping_tensor;
use super::mutual_info::{self, MiMethod, SymMatrix};
use super::{GroupCount, MixedConfig, Mode};
use crate::pipeline::planner::SiteContext;
use anyhow::{bail, Result};
use std::time::Instant;

/// A partition of one linear input's channels, with how it was obtained.
pub struct ChannelGroups {
    pub labels: Vec<usize>,
    /// Mean pairwise similarity inside each group (redundancy), 0 where not measured.
    pub redundancy: Vec<f64>,
    pub silhouette: Option<f64>,
    pub davies_bouldin: Option<f64>,
    /// Wall time of the whole grouping, and of its similarity and clustering steps (the
    /// rest is the quality scores and redundancy).
    pub seconds: f64,
    pub similarity_seconds: f64,
    pub clustering_seconds: f64,
    pub memory_bytes: usize,
}

impl ChannelGroups {
    pub fn sizes(&self) -> Vec<usize> {
        grouping::group_sizes(&self.labels)
    }
}

/// Importance-rank (enhanced) mode: K groups of (near) equal size by importance rank.
pub fn rank_groups(importance: &[f64], k: usize) -> ChannelGroups {
    let d = importance.len();
    let k = k.min(d).max(1);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]));
    let mut labels = vec![0; d];
    for (rank, &j) in order.iter().enumerate() {
        labels[j] = rank * k / d;
    }
    ChannelGroups {
        labels,
        redundancy: vec![0.0; k],
        silhouette: None,
        davies_bouldin: None,
        seconds: 0.0,
        similarity_seconds: 0.0,
        clustering_seconds: 0.0,
        memory_bytes: 0,
    }
}

/// The MI matrix of a linear input, from the accumulated moments or the stored tokens.
pub fn mi_matrix(ctx: &SiteContext, method: MiMethod) -> Result<SymMatrix> {
    match method {
        MiMethod::Corr => {
            let m = moments(ctx)?;
            let rho = mutual_info::correlation_from_moments(&m.sum_xxt()?, &m.sum_x, m.tokens);
            Ok(mutual_info::gaussian_mi(&rho))
        }
        MiMethod::Hist | MiMethod::Knn => match ctx.reservoir {
            Some(r) if !r.is_empty() => Ok(mutual_info::sample_mi(r, method)),
            _ => bail!("the {method:?} estimator needs stored tokens (a reservoir)"),
        },
    }
}

/// The similarity s = 1 − exp(−2·MI) of a linear input's channels on the host (ρ² for the
/// Gaussian estimator), for the partitions other than the default MI grouping.
pub fn host_similarity(ctx: &SiteContext, method: MiMethod) -> Result<SymMatrix> {
    Ok(match method {
        MiMethod::Corr => {
            let m = moments(ctx)?;
            mutual_info::gaussian_similarity(mutual_info::correlation_from_moments(&m.sum_xxt()?, &m.sum_x, m.tokens))
        }
        _ => mutual_info::similarity(&mi_matrix(ctx, method)?),
    })
}

fn moments<'a>(ctx: &SiteContext<'a>) -> Result<&'a crate::pipeline::moments::ChannelMoments> {
    ctx.moments.ok_or_else(|| anyhow::anyhow!("MI grouping needs the channel moments of the calibration pass"))
}

/// MI (or random-control) grouping of one linear input.
pub fn mi_groups(ctx: &SiteContext, cfg: &MixedConfig) -> Result<ChannelGroups> {
    let t0 = Instant::now();
    let d = ctx.cols;
    let method = cfg.clustering;
    let randomise = |labels: Vec<usize>| {
        if cfg.mode == Mode::Random {
            grouping::random_with_sizes(
                &grouping::group_sizes(&labels),
                cfg.partition_seed().wrapping_add(ctx.layer as u64 * 7919 + ctx.cols as u64),
            )
        } else {
            labels
        }
    };
    let fixed_k = match cfg.groups {
        GroupCount::Fixed(k) => Some(k),
        GroupCount::Auto => None,
    };
    // The default recipe (Gaussian MI, spectral, fixed K) runs as tensor ops
    // (`grouping_tensor`): on the GPU where the moments are, else on the host's tensors, so
    // that both paths group with the same eigensolver. Everything else runs on the host.
    let default_recipe = cfg.mi_method == MiMethod::Corr && method == GroupingMethod::Spectral;
    let (labels, quality, similarity_seconds, clustering_seconds) = match fixed_k.filter(|_| default_recipe) {
        Some(k) => {
            let m = moments(ctx)?;
            let host_moments;
            let sxx = match m.sum_xxt_device() {
                Some(t) => t,
                None => {
                    host_moments = candle_core::Tensor::from_vec(m.sum_xxt()?, (d, d), &candle_core::Device::Cpu)?;
                    &host_moments
                }
            };
            let sim = mutual_info::gaussian_similarity_tensor(sxx, &m.sum_x, m.tokens)?;
            let similarity_seconds = t0.elapsed().as_secs_f64();
            let labels = randomise(grouping_tensor::spectral(&sim, k.min(d), cfg.seed)?);
            let clustering_seconds = t0.elapsed().as_secs_f64() - similarity_seconds;
            let quality = grouping_tensor::quality(&sim, &labels)?;
            (labels, quality, similarity_seconds, clustering_seconds)
        }
        None => {
            let sim = match cfg.mi_method {
                MiMethod::Corr => {
                    let m = moments(ctx)?;
                    mutual_info::gaussian_similarity(mutual_info::correlation_from_moments(
                        &m.sum_xxt()?,
                        &m.sum_x,
                        m.tokens,
                    ))
                }
                _ => mutual_info::similarity(&mi_matrix(ctx, cfg.mi_method)?),
            };
            let similarity_seconds = t0.elapsed().as_secs_f64();
            let labels = randomise(match fixed_k {
                Some(k) => grouping::cluster(&sim, method, k.min(d), cfg.seed)?,
                None => {
                    // Only counts the budget can pay for (the CLI refused a budget paying for none).
                    let affordable = cfg.budget.affordable_groups(d);
                    let candidates: Vec<usize> =
                        grouping::AUTO_CANDIDATES.iter().copied().filter(|&k| k <= affordable).collect();
                    grouping::choose_k(&sim, method, &candidates, cfg.seed)?.1
                }
            });
            let clustering_seconds = t0.elapsed().as_secs_f64() - similarity_seconds;
            let quality = grouping::quality(&sim, &labels);
            (labels, quality, similarity_seconds, clustering_seconds)
        }
    };
    let grouping::GroupQuality { silhouette, davies_bouldin, redundancy } = quality;
    Ok(ChannelGroups {
        labels,
        redundancy,
        silhouette: Some(silhouette),
        davies_bouldin: Some(davies_bouldin),
        seconds: t0.elapsed().as_secs_f64(),
        similarity_seconds,
        clustering_seconds,
        memory_bytes: 3 * d * d * std::mem::size_of::<f64>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_groups_put_the_most_important_channels_first() {
        let imp = [0.1, 5.0, 3.0, 0.2, 4.0, 0.3];
        let g = rank_groups(&imp, 3);
        assert_eq!(g.labels, vec![2, 0, 1, 2, 0, 1]);
        assert_eq!(g.sizes(), vec![2, 2, 2]);
        // More groups than channels: one channel each.
        assert_eq!(rank_groups(&imp[..2], 5).sizes(), vec![1, 1]);
    }
}
