//! Fused f32 kernels for the host forward pass, where candle's generic ops cost 2–3× the
//! arithmetic they do (single-threaded elementwise steps, full-size temporaries).
//!
//! Causal self-attention, fused per block of queries: the generic path (`QKᵀ + mask → softmax → ·V` as whole tensors) materialises a
//! (heads, seq, seq) score tensor per sequence — 64 MiB at 4 heads × 2048² — computes the
//! half of it above the diagonal only to mask it away, and runs its elementwise steps on
//! one thread. Here each (sequence, head, block of queries) is one task: its scores against
//! the keys it may see stay in cache, the softmax runs in place, and the tasks run in
//! parallel. The result equals the generic path up to f32 summation order.

use candle_core::{Storage, Tensor};
use rayon::prelude::*;

thread_local! {
    static GENERIC_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the fused kernels switched off on this thread, so the generic (GPU)
/// code path runs on the host: for tests that compare the two.
pub fn with_generic_path<R>(f: impl FnOnce() -> R) -> R {
    GENERIC_ONLY.with(|g| g.set(true));
    let r = f();
    GENERIC_ONLY.with(|g| g.set(false));
    r
}

/// Whether f32 host tensors take the fused kernels (always, outside `with_generic_path`).
pub fn fused_enabled() -> bool {
    !GENERIC_ONLY.with(|g| g.get())
}

/// Runs `f` on a contiguous f32 host tensor's data without copying it; `None` for any
/// other tensor (device, dtype or strided), where callers fall back to candle's ops.
pub fn with_host_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if !fused_enabled() {
        return None;
    }
    let (storage, layout) = t.storage_and_layout();
    let (start, end) = layout.contiguous_offsets()?;
    match &*storage {
        Storage::Cpu(cpu) => cpu.as_slice::<f32>().ok().map(|data| f(&data[start..end])),
        _ => None,
    }
}

/// A strided f32 matrix operand of `gemm_into`.
#[derive(Clone, Copy)]
pub(crate) struct View {
    ptr: *const f32,
    row_stride: isize,
    col_stride: isize,
}

impl View {
    /// A row-major matrix whose rows start `ld` elements apart.
    pub(crate) fn rows(ptr: *const f32, ld: usize) -> Self {
        View { ptr, row_stride: ld as isize, col_stride: 1 }
    }
    /// The transpose of a row-major matrix whose rows start `ld` elements apart.
    pub(crate) fn transposed(ptr: *const f32, ld: usize) -> Self {
        View { ptr, row_stride: 1, col_stride: ld as isize }
    }
}

/// Where a GEMM writes: row-major from `ptr`, rows `ld` apart, added to what is there
/// (`accumulate`) or replacing it.
#[derive(Clone, Copy)]
pub(crate) struct Dest {
    pub ptr: *mut f32,
    pub ld: usize,
    pub accumulate: bool,
}

/// dst (m × n, row-major, rows `dst.ld` apart) = [dst +] scale · a (m × k) · b (k × n):
/// the `gemm` crate's call with its column-first strides and conjugation flags spelled once.
///
/// # Safety
/// The pointers must cover the described extents, and `dst` must not overlap `a` or `b`
/// nor be written by anyone else during the call.
pub(crate) unsafe fn gemm_into(
    (m, n, k): (usize, usize, usize),
    dst: Dest,
    a: View,
    b: View,
    scale: f32,
    par: gemm::Parallelism,
) {
    let Dest { ptr: dst, ld: dst_ld, accumulate } = dst;
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_ld as isize,
        accumulate,
        a.ptr,
        a.col_stride,
        a.row_stride,
        b.ptr,
        b.col_stride,
        b.row_stride,
        if accumulate { 1.0 } else { 0.0 },
        scale,
        false,
        false,
        false,
        par,
    )
}

/// y = x·Wᵀ + b (optionally ReLU'd) for row-major `x` (rows × in), `w` (out × in), `bias`
/// (out): the bias is written first and the GEMM accumulates onto it, so the product
/// and the bias add are one pass over the output, and the ReLU one more, in parallel.
pub fn linear(x: &[f32], rows: usize, w: &[f32], bias: Option<&[f32]>, out_dim: usize, relu: bool) -> Vec<f32> {
    let in_dim = w.len() / out_dim;
    assert_eq!(x.len(), rows * in_dim);
    let mut y = vec![0f32; rows * out_dim];
    if let Some(b) = bias {
        y.par_chunks_mut(out_dim).for_each(|row| row.copy_from_slice(b));
    }
    unsafe {
        gemm_into(
            (rows, out_dim, in_dim),
            Dest { ptr: y.as_mut_ptr(), ld: out_dim, accumulate: bias.is_some() },
            View::rows(x.as_ptr(), in_dim),
            View::transposed(w.as_ptr(), in_dim),
            1.0,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
    if relu {
        // torch's relu: negatives to 0, NaN kept (`v.max(0.0)` would turn a NaN into 0).
        y.par_chunks_mut(1 << 14).for_each(|c| c.iter_mut().for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v }));
    }
    y
}

/// Queries per task: 128 rows × 2048 keys of f32 scores is 1 MiB, within L2.
const QUERY_BLOCK: usize = 128;

/// Raw output pointer shared by parallel tasks that each write their own disjoint tile
/// (attention: rows × head; Gram: row panels).
#[derive(Clone, Copy)]
pub(crate) struct TilePtr(pub(crate) *mut f32);
unsafe impl Send for TilePtr {}
unsafe impl Sync for TilePtr {}

impl TilePtr {
    /// Taking `self` whole keeps closures from capturing the bare (non-Send) pointer field.
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

/// Causal multi-head attention for row-major `q`, `k`, `v` of shape (batch, seq, heads·head_dim),
/// with `q` already scaled by head_dim^-½. Returns the context in the same layout
/// (batch, seq, heads·head_dim), i.e. already "un-transposed" for `out_proj`.
pub fn causal_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    causal_attention_grouped((q, k, v), batch, seq, (heads, heads), head_dim)
}

/// [`causal_attention`] with grouped-query attention: `q` is (batch, seq, heads·head_dim),
/// `k` and `v` (batch, seq, kv_heads·head_dim); query head h reads key/value head
/// h / (heads / kv_heads), in place (K and V are not repeated).
pub fn causal_attention_grouped(
    (q, k, v): (&[f32], &[f32], &[f32]),
    batch: usize,
    seq: usize,
    (heads, kv_heads): (usize, usize),
    head_dim: usize,
) -> Vec<f32> {
    let width = heads * head_dim;
    let kv_width = kv_heads * head_dim;
    let group = heads / kv_heads.max(1);
    assert_eq!(q.len(), batch * seq * width);
    assert_eq!(k.len(), batch * seq * kv_width);
    assert_eq!(v.len(), k.len());
    let mut out = vec![0f32; q.len()];
    let out_ptr = TilePtr(out.as_mut_ptr());
    let blocks = seq.div_ceil(QUERY_BLOCK);
    // Largest tasks (last query blocks see the most keys) first, for load balance.
    let mut tasks: Vec<(usize, usize, usize)> =
        (0..batch).flat_map(|b| (0..heads).flat_map(move |h| (0..blocks).map(move |qb| (b, h, qb)))).collect();
    tasks.sort_by_key(|&(_, _, qb)| std::cmp::Reverse(qb));
    tasks.into_par_iter().for_each_init(Vec::new, |scores: &mut Vec<f32>, (b, h, qb)| {
        let i0 = qb * QUERY_BLOCK;
        let i1 = (i0 + QUERY_BLOCK).min(seq);
        let rows = i1 - i0;
        // Keys 0..i1: the last query of the block sees all of them, earlier ones fewer.
        let keys = i1;
        scores.clear();
        scores.resize(rows * keys, 0.0);
        let base = b * seq * width + h * head_dim;
        let kv_base = b * seq * kv_width + (h / group) * head_dim;
        unsafe {
            // scores (rows × keys) = Q[i0..i1] · K[0..keys]ᵀ
            gemm_into(
                (rows, keys, head_dim),
                Dest { ptr: scores.as_mut_ptr(), ld: keys, accumulate: false },
                View::rows(q.as_ptr().add(base + i0 * width), width),
                View::transposed(k.as_ptr().add(kv_base), kv_width),
                1.0,
                gemm::Parallelism::None,
            );
        }
        for r in 0..rows {
            let visible = i0 + r + 1;
            softmax_prefix_in_place(&mut scores[r * keys..(r + 1) * keys], visible);
        }
        unsafe {
            // ctx[i0..i1, head] (rows × head_dim) = P (rows × keys) · V[0..keys, kv head]
            gemm_into(
                (rows, head_dim, keys),
                Dest { ptr: out_ptr.at(base + i0 * width), ld: width, accumulate: false },
                View::rows(scores.as_ptr(), keys),
                View::rows(v.as_ptr().add(kv_base), kv_width),
                1.0,
                gemm::Parallelism::None,
            );
        }
    });
    out
}

/// Softmax over the first `visible` entries of `row`; the rest (future positions, masked
/// with -inf in the reference) become exactly 0.
fn softmax_prefix_in_place(row: &mut [f32], visible: usize) {
    let (seen, future) = row.split_at_mut(visible);
    // A NaN score stays NaN (as torch's softmax), instead of `f32::max` skipping it.
    let max = seen.iter().copied().fold(f32::NEG_INFINITY, crate::numerics::nan_max);
    let mut sum = 0f32;
    for x in seen.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in seen.iter_mut() {
        *x *= inv;
    }
    future.fill(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward causal attention, one query at a time, in f64.
    fn naive(q: &[f32], k: &[f32], v: &[f32], batch: usize, seq: usize, heads: usize, d: usize) -> Vec<f64> {
        let w = heads * d;
        let mut out = vec![0f64; q.len()];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..seq {
                    let at = |t: &[f32], pos: usize, c: usize| t[b * seq * w + pos * w + h * d + c] as f64;
                    let s: Vec<f64> = (0..=i).map(|j| (0..d).map(|c| at(q, i, c) * at(k, j, c)).sum()).collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..d {
                        out[b * seq * w + i * w + h * d + c] = (0..=i).map(|j| e[j] / z * at(v, j, c)).sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn linear_with_bias_and_relu_equals_the_definition() {
        let (rows, i, o) = (5, 7, 3);
        let x: Vec<f32> = (0..rows * i).map(|k| (k as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..o * i).map(|k| (k as f32 * 0.11).cos()).collect();
        let b = [0.5f32, -1.0, 0.25];
        for relu in [false, true] {
            let y = linear(&x, rows, &w, Some(&b), o, relu);
            for r in 0..rows {
                for c in 0..o {
                    let mut want = b[c] + (0..i).map(|k| x[r * i + k] * w[c * i + k]).sum::<f32>();
                    if relu {
                        want = want.max(0.0);
                    }
                    assert!((y[r * o + c] - want).abs() < 1e-5, "relu {relu} ({r},{c}): {} vs {want}", y[r * o + c]);
                }
            }
        }
        assert_eq!(linear(&x, rows, &w, None, o, false).len(), rows * o);
        // A NaN input row stays NaN through the ReLU, as in torch.
        let mut xn = x.clone();
        xn[0] = f32::NAN;
        let y = linear(&xn, rows, &w, Some(&b), o, true);
        assert!(y[..o].iter().all(|v| v.is_nan()), "{:?}", &y[..o]);
        assert!(y[o..].iter().all(|v| v.is_finite()));
    }

    #[test]
    fn a_nan_score_makes_its_attention_row_nan() {
        let (batch, seq, heads, d) = (1, 5, 1, 2);
        let mut q = vec![0.5f32; batch * seq * heads * d];
        let k = q.clone();
        let v = q.clone();
        q[2 * d] = f32::NAN;
        let out = causal_attention(&q, &k, &v, batch, seq, heads, d);
        assert!(out[2 * d..3 * d].iter().all(|x| x.is_nan()));
        assert!(out[..2 * d].iter().chain(&out[3 * d..]).all(|x| x.is_finite()));
    }

    #[test]
    fn grouped_query_attention_equals_repeated_key_values() {
        // 6 query heads over 2 key/value heads: heads 0-2 read kv head 0, 3-5 kv head 1.
        let (batch, seq, heads, kv, d) = (2, QUERY_BLOCK + 9, 6, 2, 4);
        let gen = |n: usize, salt: u32| -> Vec<f32> {
            (0..n as u32)
                .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(salt * 97)) % 1000) as f32 / 500.0 - 1.0)
                .collect()
        };
        let q = gen(batch * seq * heads * d, 1);
        let (k, v) = (gen(batch * seq * kv * d, 2), gen(batch * seq * kv * d, 3));
        let repeat = |t: &[f32]| -> Vec<f32> {
            t.chunks(kv * d)
                .flat_map(|row| (0..heads).flat_map(move |h| row[(h / 3) * d..(h / 3 + 1) * d].to_vec()))
                .collect()
        };
        let got = causal_attention_grouped((&q, &k, &v), batch, seq, (heads, kv), d);
        let want = naive(&q, &repeat(&k), &repeat(&v), batch, seq, heads, d);
        let max_err = got.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
        assert!(max_err < 1e-5, "max |grouped - naive| = {max_err}");
    }

    #[test]
    fn fused_blocks_equal_naive_attention_across_block_edges() {
        // seq spans three query blocks, the last one partial.
        let (batch, seq, heads, d) = (2, 2 * QUERY_BLOCK + 37, 3, 8);
        let n = batch * seq * heads * d;
        let gen = |salt: u32| -> Vec<f32> {
            (0..n as u32)
                .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(salt * 97)) % 1000) as f32 / 500.0 - 1.0)
                .collect()
        };
        let (q, k, v) = (gen(1), gen(2), gen(3));
        let got = causal_attention(&q, &k, &v, batch, seq, heads, d);
        let want = naive(&q, &k, &v, batch, seq, heads, d);
        let max_err = got.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
        assert!(max_err < 1e-5, "max |fused - naive| = {max_err}");
    }
}
