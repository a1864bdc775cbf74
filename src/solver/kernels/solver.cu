// Device kernels of the one-shot solver (src/solver/cuda.rs drives them; the algorithm is
// src/solver/host.rs's, in the reference's lazy block order). All matrices are row-major f32.
// Built to PTX by build.rs with the `cuda` feature; no fast-math, so division and rounding
// are IEEE as torch's (the quantizer must land on the same grid points).

#include <cuda_fp16.h>
#include <cuda_bf16.h>

#define WARP 32

// The reference's preparation of the permuted, undamped H on its diagonal:
// H[dead, dead] = 1, then H += damp · I.
extern "C" __global__ void prepare_diag(float* h, int n, float damp) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    float d = h[(long long)j * n + j];
    if (d == 0.0f) d = 1.0f;
    h[(long long)j * n + j] = d + damp;
}

// y = x widened to f32 (exact): the weight's f32 working copy without an f32 tensor first.
extern "C" __global__ void widen_f16(const __half* x, float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __half2float(x[i]);
}

extern "C" __global__ void widen_bf16(const __nv_bfloat16* x, float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __bfloat162float(x[i]);
}

// metric[r, k] = W[r, c0 + k]² / U[c0 + k, c0 + k]², SparseGPT's saliency for the block's
// adaptive mask (`W1 ** 2 / diag(Hinv1) ** 2`).
extern "C" __global__ void block_metric(const float* w, int ld, int rows, int c0, int count,
                                        const float* u, float* metric) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)rows * count) return;
    int r = idx / count, k = idx % count;
    float x = w[(long long)r * ld + c0 + k];
    float d = u[(long long)(c0 + k) * ld + c0 + k];
    metric[idx] = x * x / (d * d);
}

// k-th smallest (0-based) of n non-negative floats, as torch.sort(x)[0][k]: a radix select on
// the bit patterns (for x ≥ 0 they order as the values), 8 bits per pass, in one thread
// block. Writes the value to out[0].
// Also adds to *count the elements <= that value: the weights the block's mask prunes.
extern "C" __global__ void kth_smallest(const float* x, long long n, long long k, float* out,
                                        unsigned long long* count) {
    __shared__ unsigned int hist[256];
    __shared__ unsigned int prefix, remaining;
    if (threadIdx.x == 0) { prefix = 0; remaining = (unsigned int)k; }
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        unsigned int high_mask = shift == 24 ? 0u : (0xFFFFFFFFu << (shift + 8));
        unsigned int p = prefix;
        for (long long i = threadIdx.x; i < n; i += blockDim.x) {
            unsigned int v = __float_as_uint(x[i]);
            if ((v & high_mask) == (p & high_mask)) atomicAdd(&hist[(v >> shift) & 0xFF], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned int below = 0;
            for (int b = 0; b < 256; b++) {
                if (below + hist[b] > remaining) {
                    prefix = p | ((unsigned int)b << shift);
                    remaining -= below;
                    break;
                }
                below += hist[b];
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = __uint_as_float(prefix);
    unsigned int t = prefix, below = 0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) below += __float_as_uint(x[i]) <= t;
    atomicAdd(count, (unsigned long long)below);
}

struct Grid { float scale, zero, maxq; };

__device__ __forceinline__ float quantize(float x, Grid g) {
    float q = fminf(fmaxf(rintf(x / g.scale) + g.zero, 0.0f), g.maxq);
    return g.scale * (q - g.zero);
}

// A grid's scale held in the checkpoint's storage precision (solver::ScalePrecision, as
// quantizer.rs's round_scale): 0 = f32 (unchanged), 1 = f16, 2 = bf16, each round to nearest
// even; a positive scale that rounds to 0 becomes that precision's smallest positive value.
__device__ __forceinline__ float round_scale(float s, int precision) {
    if (precision == 1) {
        float r = __half2float(__float2half_rn(s));
        return (r == 0.0f && s > 0.0f) ? __uint_as_float(0x33800000u) : r;  // 2^-24
    }
    if (precision == 2) {
        float r = __bfloat162float(__float2bfloat16_rn(s));
        return (r == 0.0f && s > 0.0f) ? __uint_as_float(0x00010000u) : r;  // 2^-133
    }
    return s;
}

// GPTQ's `find_params` per row over W[r, c0 .. c0 + len): one warp per row. The scale is
// rounded to `precision` first and the zero point computed from the rounded scale, clamped
// to 0..maxq (quantizer.rs `find_params`; with f32 scales the clamp never acts).
extern "C" __global__ void row_grids(const float* w, int ld, int rows, int c0, int len,
                                     int bits, int sym, int precision, Grid* grids) {
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    int lane = threadIdx.x % WARP;
    if (warp >= rows) return;
    const float* row = w + (long long)warp * ld + c0;
    float lo = INFINITY, hi = -INFINITY;
    for (int j = lane; j < len; j += WARP) { lo = fminf(lo, row[j]); hi = fmaxf(hi, row[j]); }
    for (int o = WARP / 2; o > 0; o /= 2) {
        lo = fminf(lo, __shfl_xor_sync(0xFFFFFFFFu, lo, o));
        hi = fmaxf(hi, __shfl_xor_sync(0xFFFFFFFFu, hi, o));
    }
    if (lane != 0) return;
    float maxq = (float)((1u << bits) - 1);
    float xmin = fminf(lo, 0.0f), xmax = fmaxf(hi, 0.0f);
    if (sym) {
        xmax = fmaxf(xmax, fabsf(xmin));
        if (xmin < 0.0f) xmin = -xmax;
    }
    if (xmin == 0.0f && xmax == 0.0f) { xmin = -1.0f; xmax = 1.0f; }
    float scale = round_scale((xmax - xmin) / maxq, precision);
    float zero = sym ? (maxq + 1.0f) / 2.0f : fminf(fmaxf(rintf(-xmin / scale), 0.0f), maxq);
    grids[warp] = Grid{scale, zero, maxq};
}

// One sub-block [s1, s1 + len) of the OBS sweep, one warp per row: each column in turn is
// pruned (block mask or n:m) and/or quantized, and its error (w − q) / U_kk is spread over
// the rest of the sub-block through row k of U (SparseGPT Alg. 1 / GPTQ's inner loop).
// The row's sub-block lives in shared memory. Writes Q into W, the scaled errors into
// err (rows × len) for the caller's tail GEMM, and adds the loss per row.
//   metric/thresh: the block's saliency (rows × mcount, from the block start) and its
//   k-th value, or metric = 0 for no unstructured mask; moff = s1 − block start.
//   prunen/prunem: n:m pruning, windows start where (k + moff) % prunem == 0 (0 = off).
//   grids: per-row quantization grid, or 0 for no quantization.
extern "C" __global__ void obs_sweep(float* w, int ld, int rows, int s1, int len, const float* u,
                                     const float* metric, int mcount, int moff, const float* thresh,
                                     int prunen, int prunem, const Grid* grids,
                                     float* err, float* loss, int maxlen) {
    extern __shared__ float smem[];
    int warp_in_block = threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    int r = blockIdx.x * (blockDim.x / WARP) + warp_in_block;
    if (r >= rows) return;
    float* buf = smem + warp_in_block * maxlen * 2;
    float* nm_mask = buf + maxlen;  // 1.0 where n:m pruned
    float* row = w + (long long)r * ld + s1;
    for (int j = lane; j < len; j += WARP) { buf[j] = row[j]; nm_mask[j] = 0.0f; }
    __syncwarp();
    float t = metric ? thresh[0] : 0.0f;
    Grid g;
    if (grids) g = grids[r];
    float row_loss = 0.0f;
    for (int k = 0; k < len; k++) {
        const float* urow = u + (long long)(s1 + k) * ld + s1;
        if (prunem > 0 && (k + moff) % prunem == 0 && lane == 0) {
            int end = min(k + prunem, len);
            // prunen smallest of w²/d² in the window (ties to the lower index, as a stable sort)
            for (int sel = 0; sel < prunen && sel < end - k; sel++) {
                int best = -1;
                float best_m = 0.0f;
                for (int j = k; j < end; j++) {
                    if (nm_mask[j] != 0.0f) continue;
                    float d = u[(long long)(s1 + j) * ld + s1 + j];
                    float m = buf[j] * buf[j] / (d * d);
                    if (best < 0 || m < best_m) { best = j; best_m = m; }
                }
                nm_mask[best] = 1.0f;
            }
        }
        __syncwarp();
        float x = buf[k];
        float d = urow[k];
        bool pruned = (metric && metric[(long long)r * mcount + moff + k] <= t) || nm_mask[k] != 0.0f;
        float q = pruned ? 0.0f : x;
        if (grids) q = quantize(q, g);
        float e = (x - q) / d;
        __syncwarp();
        if (lane == 0) {
            buf[k] = q;
            err[(long long)r * len + k] = e;
            row_loss += e * e / 2.0f;
        }
        if (e != 0.0f)
            for (int j = k + 1 + lane; j < len; j += WARP) buf[j] -= e * urow[j];
        __syncwarp();
    }
    for (int j = lane; j < len; j += WARP) row[j] = buf[j];
    if (lane == 0) loss[r] += row_loss;
}
