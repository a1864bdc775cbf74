//! k-means (Lloyd's algorithm, k-means++ seeding, best of several seeded runs) on row-major
//! points.
//!
//! Written here instead of calling linfa-clustering's `KMeans`, which dispatches each
//! iteration's per-point work in parallel: on the small (1024 × 10) spectral embeddings the
//! dispatch outweighs the work, and these flat loops avoid it. Runs go in parallel, each sequential, and the best is chosen in run order,
//! so the result depends only on the seed.

use crate::rng::{self, Rng};
use rayon::prelude::*;

/// Labels of the best of `runs` k-means runs (lowest inertia, earliest run on ties) on `n`
/// points of dimension `dim` stored row-major in `points`.
pub fn kmeans(points: &[f64], dim: usize, k: usize, runs: usize, max_iter: usize, seed: u64) -> Vec<usize> {
    let n = points.len().checked_div(dim).unwrap_or(0);
    if k >= n {
        return (0..n).collect();
    }
    let results: Vec<(f64, Vec<usize>)> = (0..runs.max(1) as u64)
        .into_par_iter()
        .map(|run| lloyd(points, dim, k, max_iter, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(run)))
        .collect();
    let mut best = 0;
    for (r, res) in results.iter().enumerate() {
        if res.0 < results[best].0 {
            best = r;
        }
    }
    results.into_iter().nth(best).map(|r| r.1).unwrap_or_default()
}

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// k-means++ seeding: the first centre uniformly, each next one with probability
/// proportional to the squared distance to the nearest centre chosen so far.
fn seed_centres(points: &[f64], dim: usize, k: usize, rng: &mut Rng) -> Vec<f64> {
    let n = points.len() / dim;
    let row = |i: usize| &points[i * dim..(i + 1) * dim];
    let first = (rng::uniform(rng) * n as f64) as usize % n;
    let mut centres = row(first).to_vec();
    let mut nearest: Vec<f64> = (0..n).map(|i| squared_distance(row(i), row(first))).collect();
    while centres.len() < k * dim {
        let total: f64 = nearest.iter().sum();
        let pick = if total > 0.0 {
            let target = rng::uniform(rng) * total;
            let mut acc = 0.0;
            nearest
                .iter()
                .position(|&d| {
                    acc += d;
                    acc > target
                })
                .unwrap_or(n - 1)
        } else {
            (rng::uniform(rng) * n as f64) as usize % n
        };
        let c = row(pick).to_vec();
        for (i, d) in nearest.iter_mut().enumerate() {
            *d = d.min(squared_distance(row(i), &c));
        }
        centres.extend(c);
    }
    centres
}

/// One seeded run: k-means++ seeding, then assign / update until no label changes (or
/// `max_iter`). An emptied cluster keeps its centre. Returns (inertia, labels).
fn lloyd(points: &[f64], dim: usize, k: usize, max_iter: usize, seed: u64) -> (f64, Vec<usize>) {
    let n = points.len() / dim;
    let row = |i: usize| &points[i * dim..(i + 1) * dim];
    let mut rng = rng::seeded(seed);
    let mut centres = seed_centres(points, dim, k, &mut rng);
    let mut labels = vec![usize::MAX; n];
    let mut inertia = 0.0;
    for _ in 0..max_iter.max(1) {
        let mut changed = false;
        inertia = 0.0;
        for (i, label) in labels.iter_mut().enumerate() {
            let (mut best, mut best_d) = (0, f64::INFINITY);
            for c in 0..k {
                let d = squared_distance(row(i), &centres[c * dim..(c + 1) * dim]);
                if d < best_d {
                    (best, best_d) = (c, d);
                }
            }
            changed |= *label != best;
            *label = best;
            inertia += best_d;
        }
        if !changed {
            break;
        }
        let mut sums = vec![0.0; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &l) in labels.iter().enumerate() {
            counts[l] += 1;
            sums[l * dim..(l + 1) * dim].iter_mut().zip(row(i)).for_each(|(s, v)| *s += v);
        }
        for c in 0..k {
            if counts[c] > 0 {
                for (dst, s) in centres[c * dim..(c + 1) * dim].iter_mut().zip(&sums[c * dim..(c + 1) * dim]) {
                    *dst = s / counts[c] as f64;
                }
            }
        }
    }
    (inertia, labels)
}

/// k clusters of exactly `size` points each (n = k · size): k-means as above for the start,
/// then alternately a greedy balanced assignment (all point–centre pairs by increasing
/// distance, each point to the nearest centre that still has room; ties to the lower point,
/// then centre, index) and the centres' update, until the labels stop changing (at most 50
/// rounds).
pub fn balanced_kmeans(points: &[f64], dim: usize, k: usize, size: usize, seed: u64) -> Vec<usize> {
    let n = points.len().checked_div(dim).unwrap_or(0);
    assert_eq!(n, k * size, "balanced k-means: {n} points are not {k} clusters of {size}");
    if k <= 1 {
        return vec![0; n];
    }
    let row = |i: usize| &points[i * dim..(i + 1) * dim];
    let mut labels = kmeans(points, dim, k, 4, 300, seed);
    let mut centres = vec![0.0; k * dim];
    for round in 0..50 {
        let mut counts = vec![0usize; k];
        centres.iter_mut().for_each(|c| *c = 0.0);
        for (i, &l) in labels.iter().enumerate() {
            counts[l] += 1;
            centres[l * dim..(l + 1) * dim].iter_mut().zip(row(i)).for_each(|(s, v)| *s += v);
        }
        for c in 0..k {
            let dst = &mut centres[c * dim..(c + 1) * dim];
            if counts[c] > 0 {
                dst.iter_mut().for_each(|v| *v /= counts[c] as f64);
            } else {
                // An empty cluster (k-means merged two) restarts at point c · size.
                dst.copy_from_slice(row(c * size));
            }
        }
        let mut pairs: Vec<(f64, usize, usize)> = (0..n)
            .flat_map(|i| (0..k).map(move |c| (i, c)))
            .map(|(i, c)| (squared_distance(row(i), &centres[c * dim..(c + 1) * dim]), i, c))
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut next = vec![usize::MAX; n];
        let mut room = vec![size; k];
        for (_, i, c) in pairs {
            if next[i] == usize::MAX && room[c] > 0 {
                next[i] = c;
                room[c] -= 1;
            }
        }
        if next == labels && round > 0 {
            break;
        }
        labels = next;
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three separated 2-D blobs of 30, 20 and 10 points (deterministic jitter).
    fn blobs() -> (Vec<f64>, Vec<usize>) {
        let centres = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)];
        let sizes = [30, 20, 10];
        let mut pts = Vec::new();
        let mut truth = Vec::new();
        for (c, (&(x, y), &s)) in centres.iter().zip(&sizes).enumerate() {
            for i in 0..s {
                let a = i as f64 * 2.399;
                pts.extend([x + a.cos() * (i % 7) as f64 * 0.3, y + a.sin() * (i % 5) as f64 * 0.3]);
                truth.push(c);
            }
        }
        (pts, truth)
    }

    #[test]
    fn recovers_separated_blobs_and_depends_only_on_the_seed() {
        let (pts, truth) = blobs();
        let labels = kmeans(&pts, 2, 3, 4, 300, 7);
        assert!(crate::mixed::grouping::adjusted_rand_index(&labels, &truth) > 0.999);
        assert_eq!(labels, kmeans(&pts, 2, 3, 4, 300, 7));
    }

    #[test]
    fn best_run_has_the_lowest_inertia_of_the_single_runs() {
        let (pts, _) = blobs();
        // Six clusters on three blobs: runs disagree, the best of 8 must be the minimum.
        let inertia = |labels: &[usize]| -> f64 {
            let mut total = 0.0;
            for c in 0..6 {
                let members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
                if members.is_empty() {
                    continue;
                }
                let mean: Vec<f64> = (0..2)
                    .map(|d| members.iter().map(|&i| pts[i * 2 + d]).sum::<f64>() / members.len() as f64)
                    .collect();
                total += members.iter().map(|&i| squared_distance(&pts[i * 2..i * 2 + 2], &mean)).sum::<f64>();
            }
            total
        };
        let best = inertia(&kmeans(&pts, 2, 6, 8, 300, 3));
        for run in 0..8u64 {
            let single = lloyd(&pts, 2, 6, 300, 3u64.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(run)).0;
            assert!(best <= single + 1e-9, "best {best} > run {run}: {single}");
        }
    }

    #[test]
    fn more_groups_than_points_gives_singletons_and_duplicates_do_not_break_it() {
        assert_eq!(kmeans(&[1.0, 2.0, 3.0], 1, 5, 2, 10, 0), vec![0, 1, 2]);
        let same = vec![1.0; 20];
        let labels = kmeans(&same, 2, 3, 2, 10, 0);
        assert_eq!(labels.len(), 10);
    }

    #[test]
    fn balanced_kmeans_gives_every_cluster_its_size_and_finds_balanced_blobs() {
        // Three blobs of 4, 4 and 8 points, asked for 4 clusters of 4: the small blobs whole,
        // the large one split in two.
        let mut pts = Vec::new();
        for (centre, count) in [(0.0, 4), (10.0, 4), (20.0, 8)] {
            for i in 0..count {
                pts.extend([centre + 0.01 * i as f64, centre - 0.02 * i as f64]);
            }
        }
        let labels = balanced_kmeans(&pts, 2, 4, 4, 3);
        let sizes = crate::mixed::grouping::group_sizes(&labels);
        assert_eq!(sizes, vec![4; 4]);
        assert!(labels[..4].iter().all(|&l| l == labels[0]) && labels[4..8].iter().all(|&l| l == labels[4]));
        assert_ne!(labels[0], labels[4]);
        assert!(labels[8..].iter().all(|&l| l != labels[0] && l != labels[4]));
        assert_eq!(balanced_kmeans(&pts, 2, 4, 4, 3), labels, "seeded");
    }
}
