//! Grouping input channels by their mutual information.
//!
//! All methods work on the similarity s = 1 − exp(−2·MI) ∈ [0, 1] (see `mutual_info`):
//! - `spectral`: normalised Laplacian of s, its K smallest eigenvectors (faer's dense
//!   symmetric eigensolver, or its partial Krylov–Schur one for wide inputs), rows
//!   normalised, k-means (`kmeans`) on them;
//! - `hierarchical`: average-linkage agglomeration on the distance 1 − s (nearest-neighbour
//!   chain, O(d²) memory and time per merge step);
//! - `kmeans`: k-means on the rows of s;
//! - `random`: a seeded random partition with given group sizes (the control).
//!
//! Quality: mean silhouette on 1 − s, and Davies–Bouldin on the rows of s.

use super::mutual_info::SymMatrix;
use anyhow::{bail, Result};
use faer::Mat;
use rayon::prelude::*;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupingMethod {
    Spectral,
    Hierarchical,
    Kmeans,
    Random,
    /// Scale groups only: balanced k-means on each column's weight range (min, max over rows).
    Range,
    /// Scale groups only: contiguous columns (GPTQ's groups, as static groups).
    Contiguous,
}

/// Candidate group counts for `--n-groups auto`.
pub const AUTO_CANDIDATES: [usize; 10] = [2, 3, 4, 5, 6, 8, 10, 12, 14, 16];

/// k-means on the rows of a row-major `n × dim` matrix: best of 4 seeded runs.
fn kmeans_labels(features: &[f64], dim: usize, k: usize, seed: u64) -> Vec<usize> {
    super::kmeans::kmeans(features, dim, k, 4, 300, seed)
}

/// Spectral clustering on an affinity matrix (non-negative, symmetric).
pub fn spectral(aff: &SymMatrix, k: usize, seed: u64) -> Result<Vec<usize>> {
    let k_use = k.min(aff.d);
    let u = laplacian_bottom_eigenvectors(aff, k_use)?;
    Ok(labels_from_embedding(&u, k, seed))
}

/// k-means on the rows of the spectral embedding U (d × k), each row normalised to unit
/// length (Ng–Jordan–Weiss).
pub(crate) fn labels_from_embedding(u: &Mat<f64>, k: usize, seed: u64) -> Vec<usize> {
    kmeans_labels(&embedding_features(u), u.ncols(), k, seed)
}

/// The rows of U (d × k) normalised to unit length, row-major.
fn embedding_features(u: &Mat<f64>) -> Vec<f64> {
    let (d, k_use) = (u.nrows(), u.ncols());
    let mut feats = vec![0.0; d * k_use];
    for (i, row) in feats.chunks_mut(k_use).enumerate() {
        let norm = (0..k_use).map(|c| u[(i, c)] * u[(i, c)]).sum::<f64>().sqrt();
        for (c, f) in row.iter_mut().enumerate() {
            *f = if norm > 0.0 { u[(i, c)] / norm } else { 0.0 };
        }
    }
    feats
}

/// Spectral clustering into k groups of exactly `size` channels (d = k · size): the
/// embedding of `spectral`, then `kmeans::balanced_kmeans` on it.
pub fn balanced_spectral(aff: &SymMatrix, k: usize, size: usize, seed: u64) -> Result<Vec<usize>> {
    if k * size != aff.d {
        bail!("{} channels are not {k} groups of {size}", aff.d);
    }
    if k <= 1 {
        return Ok(vec![0; aff.d]);
    }
    let u = laplacian_bottom_eigenvectors(aff, k)?;
    crate::progress::trace(|| format!("balanced spectral d = {}: eigenvectors in, balanced k-means", aff.d));
    Ok(super::kmeans::balanced_kmeans(&embedding_features(&u), k, k, size, seed))
}

/// Widths from which the Krylov–Schur partial eigensolver replaces the dense one: the dense
/// solver's d³ cost dominates MI planning from about 1024 channels and takes minutes at
/// opt-1.3b's fc2 input (8192); below 512 channels it is as fast. Where the K-th eigengap is crowded (real MI spectra often are) the two converge to
/// different bases of a near-degenerate subspace, and k-means may group differently.
const PARTIAL_EIGEN_MIN_DIM: usize = 512;

/// The `k` eigenvectors of the normalised Laplacian L = I − D^-½ A D^-½ with the smallest
/// eigenvalues, as columns (d × k), smallest first: dense below `PARTIAL_EIGEN_MIN_DIM`,
/// else from a Krylov–Schur iteration (falling back to dense if it does not converge).
pub fn laplacian_bottom_eigenvectors(aff: &SymMatrix, k: usize) -> Result<Mat<f64>> {
    let d = aff.d;
    let rows = || aff.values.par_chunks(d);
    let inv_sqrt: Vec<f64> =
        rows().map(|row| row.iter().sum::<f64>()).map(|g| if g > 0.0 { 1.0 / g.sqrt() } else { 0.0 }).collect();
    // N = D^-½ A D^-½ written column by column (faer is column-major; A is symmetric, so
    // column j is row j of A, read contiguously).
    let mut normalised = Mat::<f64>::zeros(d, d);
    normalised.par_col_chunks_mut(1).zip(rows()).enumerate().for_each(|(j, (mut col, row))| {
        for (i, &a) in row.iter().enumerate() {
            col[(i, 0)] = a * inv_sqrt[i] * inv_sqrt[j];
        }
    });
    if uses_partial_eigensolver(d, k) {
        let mut b = normalised.clone();
        for i in 0..d {
            b[(i, i)] += 1.0;
        }
        crate::progress::trace(|| format!("Laplacian d = {d}: Krylov–Schur for {k} eigenvectors"));
        if let Some(u) = within_deadline(partial_eigen_deadline(d), move || top_eigenvectors(&b, k)).flatten() {
            return Ok(u);
        }
        crate::progress::trace(|| format!("Laplacian d = {d}: Krylov–Schur did not converge or did not return"));
    }
    crate::progress::trace(|| format!("Laplacian d = {d}: dense eigensolver"));
    dense_bottom_eigenvectors(&normalised, k)
}

/// How long the partial eigensolver may run at width `d` before the dense one replaces it:
/// 60 s per 1024 channels. faer 0.24's Krylov–Schur can spin without end: fixture A's fc2
/// input at calibration seed 4 on the GPU machine
/// (`test_results/mi_study/trace_opt-mini-a_G_Gmi_s4.txt`) never returned, where the same
/// solve at the other layers took 70–90 ms. The margin (~700× at d = 1024, its matrix–vector
/// products growing as d²) keeps a solve that converges from being abandoned on a slow machine,
/// so results stay independent of timing; a hung one costs the deadline once.
fn partial_eigen_deadline(d: usize) -> std::time::Duration {
    std::time::Duration::from_secs(60 * d.div_ceil(1024).max(1) as u64)
}

/// `f()` on a thread of its own, or None if it has not returned within `deadline` (the thread
/// is then left to finish, or to spin until the process ends; said once on stderr).
fn within_deadline<T: Send + 'static>(
    deadline: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("partial-eigen".into())
        .spawn(move || {
            let _ = send.send(f());
        })
        .ok()?;
    let result = receive.recv_timeout(deadline).ok();
    if result.is_none() {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            eprintln!(
                "note: the partial eigensolver did not return within {} s; this input and any other such are grouped with the dense one",
                deadline.as_secs()
            )
        });
    }
    result
}

pub(crate) fn uses_partial_eigensolver(d: usize, k: usize) -> bool {
    d >= PARTIAL_EIGEN_MIN_DIM && k < d / 4
}

/// L's bottom `k` eigenvectors as the top ones of B = I + N (= 2I − L: spectrum in [0, 2],
/// so its largest-magnitude eigenvalues are L's smallest), by faer's Krylov–Schur
/// iteration. `None` if it did not converge.
fn top_eigenvectors(b: &Mat<f64>, k: usize) -> Option<Mat<f64>> {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::matrix_free::eigen::{partial_self_adjoint_eigen, partial_self_adjoint_eigen_scratch};
    let d = b.nrows();
    // A fixed, generic start vector (not D^½·1, which is already an eigenvector).
    let mut v0 = faer::Col::<f64>::from_fn(d, |i| ((i as f64 + 1.0) * 0.754_877_666).fract() - 0.5);
    let norm = v0.norm_l2();
    v0 /= norm;
    let par = GROUPING_PAR;
    let params = Default::default();
    let mut mem = MemBuffer::new(partial_self_adjoint_eigen_scratch(b, k, par, params));
    let mut vecs = Mat::<f64>::zeros(d, k);
    let mut vals = vec![0.0; k];
    let info = partial_self_adjoint_eigen(
        vecs.as_mut(),
        &mut vals,
        b,
        v0.as_ref(),
        f64::EPSILON * 128.0,
        par,
        MemStack::new(&mut mem),
        params,
    );
    (info.n_converged_eigen == k).then_some(vecs)
}

pub(crate) fn dense_bottom_eigenvectors(normalised: &Mat<f64>, k: usize) -> Result<Mat<f64>> {
    let d = normalised.nrows();
    let lap = Mat::<f64>::from_fn(d, d, |i, j| if i == j { 1.0 } else { 0.0 } - normalised[(i, j)]);
    let (_, u) = self_adjoint_eigen(&lap)?;
    Ok(Mat::from_fn(d, k, |i, c| u[(i, c)]))
}

/// How the grouping calls faer's QR and eigensolvers: sequentially. With `Par::rayon(n)`
/// their reductions are split over n threads (a matrix–vector product sums n partial
/// vectors), so the eigenvectors, and with them MI's groups, changed with the thread count
/// (measured: faer's dense eigensolver at d = 768 and its thin QR at 192 × 24 give other bits
/// at 2, 3, 4 and 8 threads than at 1). The GEMMs and the Cholesky factorisation do not
/// depend on it (same bits at 1–8 threads) and keep their parallelism.
pub(crate) const GROUPING_PAR: faer::Par = faer::Par::Seq;

/// Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix, by faer's dense
/// solver, sequentially (`GROUPING_PAR`); the lower triangle is read.
pub(crate) fn self_adjoint_eigen(a: &Mat<f64>) -> Result<(Vec<f64>, Mat<f64>)> {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::evd;
    let n = a.nrows();
    let mut u = Mat::<f64>::zeros(n, n);
    let mut s = faer::diag::Diag::<f64>::zeros(n);
    let scratch =
        evd::self_adjoint_evd_scratch::<f64>(n, evd::ComputeEigenvectors::Yes, GROUPING_PAR, Default::default());
    evd::self_adjoint_evd(
        a.as_ref(),
        s.as_mut(),
        Some(u.as_mut()),
        GROUPING_PAR,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )
    .map_err(|e| anyhow::anyhow!("eigendecomposition failed: {e:?}"))?;
    Ok(((0..n).map(|i| s[i]).collect(), u))
}

/// The thin Q factor (m × min(m, n)) of a QR decomposition, sequentially (`GROUPING_PAR`).
pub(crate) fn thin_q(a: &Mat<f64>) -> Mat<f64> {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::{householder, qr::no_pivoting::factor};
    let (m, n) = a.shape();
    let size = m.min(n);
    let block = factor::recommended_block_size::<f64>(m, n);
    let mut qr = a.clone();
    let mut coeff = Mat::<f64>::zeros(block, size);
    let scratch = factor::qr_in_place_scratch::<f64>(m, n, block, GROUPING_PAR, Default::default());
    factor::qr_in_place(
        qr.as_mut(),
        coeff.as_mut(),
        GROUPING_PAR,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    );
    // The Householder basis: QR's part below the diagonal, with a unit diagonal.
    let basis = Mat::<f64>::from_fn(m, size, |i, j| match i.cmp(&j) {
        std::cmp::Ordering::Greater => qr[(i, j)],
        std::cmp::Ordering::Equal => 1.0,
        std::cmp::Ordering::Less => 0.0,
    });
    let mut q = Mat::<f64>::identity(m, size);
    let scratch = householder::apply_block_householder_sequence_on_the_left_in_place_scratch::<f64>(m, block, size);
    householder::apply_block_householder_sequence_on_the_left_in_place_with_conj(
        basis.as_ref(),
        coeff.as_ref(),
        faer::Conj::No,
        q.as_mut(),
        GROUPING_PAR,
        MemStack::new(&mut MemBuffer::new(scratch)),
    );
    q
}

/// Average-linkage agglomerative clustering on a distance matrix, cut at `k` clusters.
/// Nearest-neighbour chain builds the whole dendrogram (average linkage is reducible, so
/// the chain finds the same merges as the greedy algorithm, though not in height order);
/// the merges are then sorted by height and the first n − k applied.
pub fn average_linkage(dist: &SymMatrix, k: usize) -> Vec<usize> {
    let n = dist.d;
    let mut d = dist.values.clone();
    let mut size = vec![1usize; n];
    let mut active = vec![true; n];
    let mut merges: Vec<(f64, usize, usize)> = Vec::with_capacity(n.saturating_sub(1));
    let mut chain: Vec<usize> = Vec::new();
    while merges.len() + 1 < n {
        if chain.is_empty() {
            chain.push((0..n).find(|&i| active[i]).expect("an active cluster"));
        }
        let a = *chain.last().unwrap();
        let prev = if chain.len() > 1 { Some(chain[chain.len() - 2]) } else { None };
        let mut best = usize::MAX;
        let mut best_d = f64::INFINITY;
        for j in 0..n {
            if j != a && active[j] {
                let v = d[a * n + j];
                if v < best_d || (v == best_d && Some(j) == prev) {
                    best_d = v;
                    best = j;
                }
            }
        }
        if Some(best) == prev {
            chain.pop();
            chain.pop();
            // Merge best into a (Lance–Williams update for average linkage).
            let (sa, sb) = (size[a] as f64, size[best] as f64);
            for j in 0..n {
                if active[j] && j != a && j != best {
                    let v = (sa * d[a * n + j] + sb * d[best * n + j]) / (sa + sb);
                    d[a * n + j] = v;
                    d[j * n + a] = v;
                }
            }
            size[a] += size[best];
            active[best] = false;
            merges.push((best_d, a, best));
        } else {
            chain.push(best);
        }
    }
    merges.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for &(_, a, b) in merges.iter().take(n.saturating_sub(k)) {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        parent[rb] = ra;
    }
    let roots: Vec<usize> = (0..n).map(|i| find(&mut parent, i)).collect();
    canonical(&roots)
}

/// A random partition with the given group sizes (seeded Fisher–Yates).
pub fn random_with_sizes(sizes: &[usize], seed: u64) -> Vec<usize> {
    let n: usize = sizes.iter().sum();
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = crate::rng::seeded(seed);
    for i in (1..n).rev() {
        let j = crate::rng::below(&mut rng, i as u64 + 1) as usize;
        idx.swap(i, j);
    }
    let mut labels = vec![0; n];
    let mut pos = 0;
    for (g, &sz) in sizes.iter().enumerate() {
        for &i in &idx[pos..pos + sz] {
            labels[i] = g;
        }
        pos += sz;
    }
    labels
}

/// Relabels so that groups are numbered 0.. in order of first appearance, dropping empties.
pub fn canonical(labels: &[usize]) -> Vec<usize> {
    let mut map = std::collections::HashMap::new();
    labels
        .iter()
        .map(|&l| {
            let next = map.len();
            *map.entry(l).or_insert(next)
        })
        .collect()
}

pub fn group_sizes(labels: &[usize]) -> Vec<usize> {
    let k = labels.iter().max().map_or(0, |m| m + 1);
    let mut s = vec![0; k];
    for &l in labels {
        s[l] += 1;
    }
    s
}

/// Mean silhouette coefficient on a distance matrix (points in singleton groups score 0).
pub fn silhouette(dist: &SymMatrix, labels: &[usize]) -> f64 {
    let n = dist.d;
    let k = labels.iter().max().map_or(0, |m| m + 1);
    if k < 2 {
        return 0.0;
    }
    let sizes = group_sizes(labels);
    // Points in parallel, summed in point order (deterministic).
    let per_point: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut sums = vec![0.0; k];
            for j in 0..n {
                if j != i {
                    sums[labels[j]] += dist.get(i, j);
                }
            }
            point_silhouette(&sums, labels[i], &sizes)
        })
        .collect();
    per_point.iter().sum::<f64>() / n as f64
}

/// One point's silhouette from its summed distances to each group (to its own group
/// without itself): (b − a) / max(a, b) with a, b the mean distances to its own and to the
/// nearest other group; 0 in a singleton group.
pub(crate) fn point_silhouette(dist_sums: &[f64], own: usize, sizes: &[usize]) -> f64 {
    if sizes[own] <= 1 {
        return 0.0;
    }
    let a = dist_sums[own] / (sizes[own] - 1) as f64;
    let b = (0..sizes.len())
        .filter(|&c| c != own && sizes[c] > 0)
        .map(|c| dist_sums[c] / sizes[c] as f64)
        .fold(f64::INFINITY, f64::min);
    if a.max(b) > 0.0 {
        (b - a) / a.max(b)
    } else {
        0.0
    }
}

/// Davies–Bouldin index with the rows of `features` as points (lower is better).
pub fn davies_bouldin(features: &SymMatrix, labels: &[usize]) -> f64 {
    let n = features.d;
    let k = labels.iter().max().map_or(0, |m| m + 1);
    if k < 2 {
        return 0.0;
    }
    let sizes = group_sizes(labels);
    let rows = || features.values.chunks(n);
    let mut cent = vec![vec![0.0; n]; k];
    for (row, &l) in rows().zip(labels) {
        cent[l].iter_mut().zip(row).for_each(|(c, v)| *c += v);
    }
    for (c, s) in cent.iter_mut().zip(&sizes) {
        c.iter_mut().for_each(|v| *v /= (*s).max(1) as f64);
    }
    let to_centroid: Vec<f64> =
        features.values.par_chunks(n).zip(labels).map(|(row, &l)| euclidean(row, &cent[l])).collect();
    davies_bouldin_from(&to_centroid, labels, &cent)
}

fn euclidean(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
}

/// Davies–Bouldin from each point's distance to its group's centroid and the centroids:
/// the mean over groups of the worst (scatter_a + scatter_b) / ‖c_a − c_b‖, scatter being
/// a group's mean distance to its centroid.
pub(crate) fn davies_bouldin_from(to_centroid: &[f64], labels: &[usize], centroids: &[Vec<f64>]) -> f64 {
    let sizes = group_sizes(labels);
    let k = sizes.len();
    if k < 2 {
        return 0.0;
    }
    let mut scatter = vec![0.0; k];
    for (d, &l) in to_centroid.iter().zip(labels) {
        scatter[l] += d;
    }
    for (s, &z) in scatter.iter_mut().zip(&sizes) {
        *s /= z.max(1) as f64;
    }
    let mut db = 0.0;
    for a in 0..k {
        let mut worst: f64 = 0.0;
        for b in 0..k {
            if a != b {
                let m = euclidean(&centroids[a], &centroids[b]);
                if m > 0.0 {
                    worst = worst.max((scatter[a] + scatter[b]) / m);
                }
            }
        }
        db += worst;
    }
    db / k as f64
}

/// How well a partition fits the similarity: mean silhouette on 1 − s (higher is better),
/// Davies–Bouldin on the rows of s (lower is better), and each group's redundancy, the
/// mean pairwise similarity inside it (0 for singletons).
#[derive(Clone, Debug)]
pub struct GroupQuality {
    pub silhouette: f64,
    pub davies_bouldin: f64,
    pub redundancy: Vec<f64>,
}

/// `GroupQuality` of `labels` on a host similarity matrix.
pub fn quality(sim: &SymMatrix, labels: &[usize]) -> GroupQuality {
    let dist = SymMatrix { d: sim.d, values: sim.values.par_iter().map(|s| 1.0 - s).collect() };
    GroupQuality {
        silhouette: silhouette(&dist, labels),
        davies_bouldin: davies_bouldin(sim, labels),
        redundancy: redundancy(sim, labels),
    }
}

/// Mean pairwise similarity inside each group (0 for singletons). Rows are summed in
/// parallel, each in column order, then added up in row order (deterministic).
pub fn redundancy(sim: &SymMatrix, labels: &[usize]) -> Vec<f64> {
    let row_sums: Vec<f64> = sim
        .values
        .par_chunks(sim.d)
        .enumerate()
        .map(|(i, row)| row.iter().enumerate().filter(|&(j, _)| j != i && labels[j] == labels[i]).map(|(_, s)| s).sum())
        .collect();
    let sizes = group_sizes(labels);
    let mut sums = vec![0.0; sizes.len()];
    for (i, s) in row_sums.iter().enumerate() {
        sums[labels[i]] += s;
    }
    mean_over_pairs(&sums, &sizes)
}

/// Per group, a sum over its ordered pairs (i ≠ j) divided by their number (0 for singletons).
pub(crate) fn mean_over_pairs(sums: &[f64], sizes: &[usize]) -> Vec<f64> {
    sums.iter().zip(sizes).map(|(s, &n)| if n > 1 { s / (n * (n - 1)) as f64 } else { 0.0 }).collect()
}

/// Groups channels with `method` into `k` groups (affinity = similarity matrix).
pub fn cluster(sim: &SymMatrix, method: GroupingMethod, k: usize, seed: u64) -> Result<Vec<usize>> {
    if k == 0 || k > sim.d {
        bail!("cannot form {k} groups from {} channels", sim.d);
    }
    let labels = match method {
        GroupingMethod::Spectral => spectral(sim, k, seed)?,
        GroupingMethod::Hierarchical => {
            let dist = SymMatrix { d: sim.d, values: sim.values.iter().map(|s| 1.0 - s).collect() };
            average_linkage(&dist, k)
        }
        GroupingMethod::Kmeans => kmeans_labels(&sim.values, sim.d, k, seed),
        GroupingMethod::Random => bail!("random grouping needs group sizes (use random_with_sizes)"),
        GroupingMethod::Range | GroupingMethod::Contiguous => {
            bail!("{method:?} groups are scale groups, not an MI clustering")
        }
    };
    Ok(canonical(&labels))
}

/// Chooses K among `candidates` by the best silhouette (on 1 − s).
pub fn choose_k(
    sim: &SymMatrix,
    method: GroupingMethod,
    candidates: &[usize],
    seed: u64,
) -> Result<(usize, Vec<usize>)> {
    let dist = SymMatrix { d: sim.d, values: sim.values.iter().map(|s| 1.0 - s).collect() };
    let mut best: Option<(f64, usize, Vec<usize>)> = None;
    for &k in candidates.iter().filter(|&&k| k >= 2 && k < sim.d) {
        let labels = cluster(sim, method, k, seed)?;
        let s = silhouette(&dist, &labels);
        if best.as_ref().is_none_or(|b| s > b.0) {
            best = Some((s, k, labels));
        }
    }
    let (_, k, labels) = best.ok_or_else(|| anyhow::anyhow!("no candidate group count fits {} channels", sim.d))?;
    Ok((k, labels))
}

/// Adjusted Rand index of two labelings (1 = identical partitions).
pub fn adjusted_rand_index(a: &[usize], b: &[usize]) -> f64 {
    let n = a.len();
    let ka = a.iter().max().map_or(0, |m| m + 1);
    let kb = b.iter().max().map_or(0, |m| m + 1);
    let mut table = vec![vec![0f64; kb]; ka];
    for i in 0..n {
        table[a[i]][b[i]] += 1.0;
    }
    let c2 = |x: f64| x * (x - 1.0) / 2.0;
    let sum_ij: f64 = table.iter().flatten().map(|&v| c2(v)).sum();
    let sum_a: f64 = table.iter().map(|r| c2(r.iter().sum())).sum();
    let sum_b: f64 = (0..kb).map(|j| c2(table.iter().map(|r| r[j]).sum())).sum();
    let expected = sum_a * sum_b / c2(n as f64);
    let max = (sum_a + sum_b) / 2.0;
    if max == expected {
        1.0
    } else {
        (sum_ij - expected) / (max - expected)
    }
}

#[cfg(test)]
/// Test data shared by the grouping tests. Planted blocks: within-block similarity ~0.6, across ~0.05, with deterministic noise.
pub(crate) fn planted(sizes: &[usize]) -> (SymMatrix, Vec<usize>) {
    let truth: Vec<usize> = sizes.iter().enumerate().flat_map(|(g, &s)| std::iter::repeat_n(g, s)).collect();
    let d = truth.len();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            if i != j {
                let noise = (((i * 31 + j * 17 + i * j) % 13) as f64) / 13.0 * 0.08;
                let base = if truth[i] == truth[j] { 0.6 } else { 0.05 };
                v[i * d + j] = base + noise;
            }
        }
    }
    for i in 0..d {
        for j in 0..i {
            let m = (v[i * d + j] + v[j * d + i]) / 2.0;
            v[i * d + j] = m;
            v[j * d + i] = m;
        }
    }
    (SymMatrix { d, values: v }, truth)
}

/// Largest entry of |A Aᵀ − B Bᵀ|: zero when the columns of A and B span the same subspace
/// (with orthonormal columns), whatever basis each solver picked.
#[cfg(test)]
pub(crate) fn projector_difference(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let (d, k) = (a.nrows(), a.ncols());
    let mut max_diff: f64 = 0.0;
    for i in 0..d {
        for j in 0..d {
            let pa: f64 = (0..k).map(|c| a[(i, c)] * a[(j, c)]).sum();
            let pb: f64 = (0..k).map(|c| b[(i, c)] * b[(j, c)]).sum();
            max_diff = max_diff.max((pa - pb).abs());
        }
    }
    max_diff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spectral_recovers_planted_blocks_and_auto_k_finds_their_number() {
        let (sim, truth) = planted(&[12, 20, 8, 24, 16]);
        let labels = cluster(&sim, GroupingMethod::Spectral, 5, 0).unwrap();
        assert!(adjusted_rand_index(&labels, &truth) >= 0.95);
        let (k, _) = choose_k(&sim, GroupingMethod::Spectral, &AUTO_CANDIDATES, 0).unwrap();
        assert_eq!(k, 5);
    }

    #[test]
    fn a_call_past_its_deadline_is_abandoned_and_one_within_it_returns() {
        let quick = std::time::Duration::from_millis(500);
        assert_eq!(within_deadline(quick, || 7), Some(7));
        let stuck = within_deadline(std::time::Duration::from_millis(50), || {
            std::thread::sleep(std::time::Duration::from_secs(2));
            7
        });
        assert_eq!(stuck, None);
    }

    #[test]
    fn partial_eigensolver_spans_the_dense_solvers_subspace() {
        // 10 uneven blocks over 520 channels.
        let sizes = [30, 40, 45, 50, 55, 55, 60, 60, 60, 65];
        let (sim, truth) = planted(&sizes);
        let d = sim.d;
        let k = 10;
        let deg: Vec<f64> = (0..d).map(|i| (0..d).map(|j| sim.get(i, j)).sum()).collect();
        let normalised = Mat::<f64>::from_fn(d, d, |i, j| sim.get(i, j) / (deg[i] * deg[j]).sqrt());
        let b = Mat::<f64>::from_fn(d, d, |i, j| normalised[(i, j)] + if i == j { 1.0 } else { 0.0 });
        let partial = top_eigenvectors(&b, k).expect("converges on a clear eigengap");
        let dense = dense_bottom_eigenvectors(&normalised, k).unwrap();
        // Same invariant subspace: the projectors U Uᵀ agree.
        let diff = projector_difference(&partial, &dense);
        assert!(diff < 1e-8, "projector difference {diff}");
        assert!(adjusted_rand_index(&spectral(&sim, k, 0).unwrap(), &truth) > 0.99);
    }

    /// Runs `f` on a rayon pool of `threads` threads (faer's default parallelism follows it).
    pub(crate) fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
    }

    fn bits(m: &Mat<f64>) -> Vec<u64> {
        (0..m.nrows()).flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)].to_bits())).collect()
    }

    #[test]
    fn eigenvectors_qr_and_spectral_labels_do_not_depend_on_the_thread_count() {
        // 520 channels: the partial (Krylov–Schur) eigensolver; 200: the dense one.
        let (wide, _) = planted(&[30, 40, 45, 50, 55, 55, 60, 60, 60, 65]);
        let (narrow, _) = planted(&[50, 70, 80]);
        let tall = Mat::<f64>::from_fn(wide.d, 24, |i, j| ((i * 24 + j) as f64 * 0.754_877_666).fract() - 0.5);
        let run = |threads: usize| {
            on_threads(threads, || {
                let dense = self_adjoint_eigen(&Mat::from_fn(narrow.d, narrow.d, |i, j| narrow.get(i, j))).unwrap().1;
                (
                    bits(&laplacian_bottom_eigenvectors(&wide, 10).unwrap()),
                    bits(&dense),
                    bits(&thin_q(&tall)),
                    spectral(&wide, 10, 0).unwrap(),
                    spectral(&narrow, 3, 0).unwrap(),
                )
            })
        };
        let one = run(1);
        for threads in [2, 3, 4, 8] {
            assert!(one == run(threads), "{threads} threads differ from 1");
        }
        // The same algorithms as faer's convenience calls at one thread.
        on_threads(1, || {
            assert_eq!(bits(&thin_q(&tall)), bits(&tall.qr().compute_thin_Q()));
            let a = Mat::from_fn(narrow.d, narrow.d, |i, j| narrow.get(i, j));
            assert_eq!(
                bits(&self_adjoint_eigen(&a).unwrap().1),
                bits(&a.self_adjoint_eigen(faer::Side::Lower).unwrap().U().to_owned())
            );
        });
    }

    #[test]
    fn hierarchical_and_kmeans_recover_planted_blocks() {
        let (sim, truth) = planted(&[10, 14, 6, 18]);
        for m in [GroupingMethod::Hierarchical, GroupingMethod::Kmeans] {
            let labels = cluster(&sim, m, 4, 1).unwrap();
            assert!(adjusted_rand_index(&labels, &truth) >= 0.95, "{m:?}");
        }
    }

    #[test]
    fn random_partition_keeps_sizes_and_seed() {
        let l = random_with_sizes(&[3, 5, 2], 9);
        assert_eq!(group_sizes(&l), vec![3, 5, 2]);
        assert_eq!(l, random_with_sizes(&[3, 5, 2], 9));
        assert_ne!(l, random_with_sizes(&[3, 5, 2], 10));
    }

    #[test]
    fn quality_scores_prefer_the_true_partition() {
        let (sim, truth) = planted(&[8, 8, 8]);
        let dist = SymMatrix { d: sim.d, values: sim.values.iter().map(|s| 1.0 - s).collect() };
        let shuffled = random_with_sizes(&[8, 8, 8], 3);
        assert!(silhouette(&dist, &truth) > 0.5);
        assert!(silhouette(&dist, &truth) > silhouette(&dist, &shuffled));
        assert!(davies_bouldin(&sim, &truth) < davies_bouldin(&sim, &shuffled));
        assert!((adjusted_rand_index(&truth, &truth) - 1.0).abs() < 1e-12);
    }
}
