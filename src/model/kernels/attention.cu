// The f16/bf16 forward pass's own device kernels (src/model/cuda_forward.rs launches them):
//
//  * sgmi_flash_fwd_hd{32,64,80,96,128}_w{4,8} (OPT: f16, equal heads) and
//    sgmi_flash_gqa_{f16,bf16}_hd{..}_w{4,8} (the rotary families): causal attention,
//    FlashAttention-2 style. One block per (block of BR queries, query head, sequence); its warps
//    own 16 query rows each and walk the key blocks up to the diagonal with an online softmax.
//    S = Q·Kᵀ and O += P·V run on the tensor cores (mma.sync m16n8k16, f16 or bf16 inputs, f32
//    accumulation); the running max, sum and S stay in f32, so logits far beyond f16's range
//    are fine. P is rounded to the input dtype for P·V (as torch's flash SDPA does). q_scale
//    multiplies q before the product, rounded to the input dtype once (HF's OPT: half(float(q) ·
//    scaling)). The gqa variants add grouped-query heads (query head h reads key/value head
//    h / kv_group, K and V never repeated in memory) and s_scale, which multiplies the f32
//    logits inside the softmax's exponent (torch's SDPA, as the rotary families call it); the
//    OPT variant is the same code with kv_group = 1 and s_scale = 1 fixed at compile time.
//  * sgmi_rope_{f16,bf16}: q or k in place: per (token, head) the optional per-head RMSNorm
//    (Qwen3's q_norm/k_norm), then the rotate-half rotation with the model's cos/sin tables,
//    each step rounded to the dtype where transformers rounds it.
//  * sgmi_rms_norm_{f16,bf16}: RMSNorm of rows, transformers' order (f32 mean of squares, x ·
//    rsqrt rounded to the dtype, times the weight rounded again).
//  * sgmi_silu_mul_{f16,bf16}: gate = silu(gate) · up in place (silu rounded to the dtype,
//    then the product: transformers' act_fn(gate_proj(x)) * up_proj(x)).
//  * sgmi_nll_rows_{f16,bf16,f32}: per row of logits, logsumexp − logit[target] in f32, one pass.
//  * sgmi_nll_window_sums: per window, the f64 sum of its rows' NLLs (fixed order).
//  * sgmi_bias_act_f16: y = relu(y + bias) in place, f32 arithmetic, one rounding.
//
// The same file builds three ways: to an sm_90 cubin for the crate (build.rs), inside the
// CUDA harness checks/cuda/attention_check.cu (#include), and on the host with
// -DSGMI_EMULATE against checks/cuda/emu/sgmi_emu.h, a warp emulator that runs these kernels
// on the CPU (ldmatrix / mma / shuffles / cp.async given their PTX semantics) to check the
// fragment and tiling index math without a GPU.
//
// Layouts: q, o are (batch, seq, heads·head_dim), k and v (batch, seq, kv_heads·head_dim),
// f16 or bf16, with element strides per batch and per row (a row of q may be a slice of a
// fused qkv row); the head_dim elements of one head are contiguous. Rows must start on 16-byte boundaries (row strides and base offsets
// multiples of 8 elements): src/model/cuda_forward.rs checks this before launching.

#include <stdint.h>

#if defined(SGMI_EMULATE)
#include "sgmi_emu.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define SGMI_DEV __device__ __forceinline__
#define SGMI_DYN_SMEM(name) extern __shared__ __align__(16) char name[]

namespace sgmi {

SGMI_DEV uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i. r[i]: this lane's
// pair of matrix i, (row lane/4, columns 2(lane%4), +1); with .trans (rows 2(lane%4), +1; column lane/4).
SGMI_DEV void ldsm_x4(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p))
                 : "memory");
}
SGMI_DEV void ldsm_x4_t(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p))
                 : "memory");
}
// d += a·b, a 16x16 (row), b 16x8 (col), f16 in, f32 accumulate.
SGMI_DEV void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// The same with bf16 inputs.
SGMI_DEV void mma16816_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// 16 bytes global -> shared, asynchronous; zero-filled when !pred (nothing is read then).
SGMI_DEV void cp_async16(void* s, const void* g, bool pred) {
    const int n = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(s)), "l"(g), "r"(n) : "memory");
}
SGMI_DEV void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
SGMI_DEV void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
SGMI_DEV float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
SGMI_DEV uint32_t pack_h2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
}
SGMI_DEV float2 unpack_h2(uint32_t u) { return __half22float2(*reinterpret_cast<__half2*>(&u)); }
SGMI_DEV float h2f(uint16_t u) { return __half2float(__ushort_as_half(u)); }
SGMI_DEV uint16_t f2h(float f) { return __half_as_ushort(__float2half_rn(f)); }
SGMI_DEV uint32_t pack_bf2(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
}
SGMI_DEV float2 unpack_bf2(uint32_t u) { return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&u)); }
SGMI_DEV float bf2f(uint16_t u) { return __bfloat162float(__ushort_as_bfloat16(u)); }
SGMI_DEV uint16_t f2bf(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
SGMI_DEV float rsqrt_f(float x) { return rsqrtf(x); }
SGMI_DEV float exp_f(float x) { return expf(x); }
SGMI_DEV float shfl_xor(float v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
SGMI_DEV double shfl_xor(double v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
SGMI_DEV void st_u32(uint16_t* p, uint32_t v) { *reinterpret_cast<uint32_t*>(p) = v; }
SGMI_DEV uint4 ld_u128(const void* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }
SGMI_DEV void st_u128(void* p, uint4 v) { *reinterpret_cast<uint4*>(p) = v; }
SGMI_DEV float ld_f32(const float* p) { return __ldg(p); }
SGMI_DEV uint16_t ld_u16(const uint16_t* p) { return __ldg(p); }
SGMI_DEV void st_u16(uint16_t* p, uint16_t v) { *p = v; }
// Plain (coherent) loads of data the same kernel overwrites: __ldg's read-only path is only
// for data that stays constant while the kernel runs.
SGMI_DEV uint16_t ld_u16_rw(const uint16_t* p) { return *p; }
SGMI_DEV uint4 ld_u128_rw(const void* p) { return *reinterpret_cast<const uint4*>(p); }
SGMI_DEV uint32_t ld_idx(const uint32_t* p) { return __ldg(p); }
SGMI_DEV void st_f32(float* p, float v) { *p = v; }
SGMI_DEV void st_f64(double* p, double v) { *p = v; }

}  // namespace sgmi
#endif

namespace sgmi {

constexpr float LOG2E = 1.4426950408889634f;
constexpr float NEG_INF = -__builtin_huge_valf();

// The two 16-bit element types: conversions, pairs packed as mma fragments, the mma itself.
struct F16 {
    static SGMI_DEV uint32_t pack(float lo, float hi) { return pack_h2(lo, hi); }
    static SGMI_DEV float2 unpack(uint32_t u) { return unpack_h2(u); }
    static SGMI_DEV float to_f(uint16_t u) { return h2f(u); }
    static SGMI_DEV uint16_t from_f(float f) { return f2h(f); }
    static SGMI_DEV void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) { mma16816(d, a, b0, b1); }
};
struct BF16 {
    static SGMI_DEV uint32_t pack(float lo, float hi) { return pack_bf2(lo, hi); }
    static SGMI_DEV float2 unpack(uint32_t u) { return unpack_bf2(u); }
    static SGMI_DEV float to_f(uint16_t u) { return bf2f(u); }
    static SGMI_DEV uint16_t from_f(float f) { return f2bf(f); }
    static SGMI_DEV void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) { mma16816_bf16(d, a, b0, b1); }
};
// x rounded to E and back: one rounding of an f32 result to the dtype, as torch's ops do.
template <typename E>
SGMI_DEV float round_to(float x) {
    return E::to_f(E::from_f(x));
}

// Tiling of the attention kernel: WARPS warps of 16 query rows each (BR = 16·WARPS queries
// per block), key blocks of BC = 64; smem rows padded by 8 halves (16 bytes) so that the 8
// row addresses of an ldmatrix phase fall in distinct bank groups.
template <int HD, int WARPS>
struct FlashCfg {
    static_assert(HD % 16 == 0 && HD >= 16 && HD <= 128, "head_dim: a multiple of 16 up to 128");
    static constexpr int NT = WARPS * 32;  // threads
    static constexpr int BR = 16 * WARPS;  // queries per block
    static constexpr int BC = 64;          // keys per step
    static constexpr int LD = HD + 8;      // smem row stride (halves)
    static constexpr int KC = HD / 16;     // k-chunks of q·kᵀ
    static constexpr int DT = HD / 8;      // n-tiles (8 dims) of O
    static constexpr int ST = BC / 8;      // n-tiles (8 keys) of S
    static constexpr int PC = BC / 16;     // k-chunks of P·V
    static constexpr int CH = HD / 8;      // 16-byte chunks per row
    // Q tile, then K and V, two stages each.
    static constexpr int SMEM_BYTES = (BR + 4 * BC) * LD * 2;
};

// GROUPED: kv_group and s_scale as given (the gqa kernels); else 1 and 1, folded at compile time.
template <int HD, int WARPS, typename E, bool GROUPED>
SGMI_DEV void flash_fwd_body(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                             const uint16_t* __restrict__ v, uint16_t* __restrict__ o, long long q_bs,
                             long long q_rs, long long k_bs, long long k_rs, long long v_bs, long long v_rs,
                             long long o_bs, long long o_rs, int seq, float q_scale, int kv_group, float s_scale) {
    using C = FlashCfg<HD, WARPS>;
    SGMI_DYN_SMEM(smem_raw);
    uint16_t* sQ = reinterpret_cast<uint16_t*>(smem_raw);
    uint16_t* sK = sQ + C::BR * C::LD;
    uint16_t* sV = sK + 2 * C::BC * C::LD;

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int g = lane >> 2;  // row group of the mma fragments
    const int t = lane & 3;   // thread in group
    const int nqb = (seq + C::BR - 1) / C::BR;
    const int qb = nqb - 1 - static_cast<int>(blockIdx.x);  // longest (last) query blocks first
    const int h = blockIdx.y;
    const int hk = GROUPED ? h / kv_group : h;  // the key/value head of this query head
    const int b = blockIdx.z;
    const int q0 = qb * C::BR;
    // log2(e) with the logits' scale folded in.
    const float sl2 = GROUPED ? s_scale * LOG2E : LOG2E;

    const uint16_t* Qg = q + b * q_bs + static_cast<long long>(h) * HD;
    const uint16_t* Kg = k + b * k_bs + static_cast<long long>(hk) * HD;
    const uint16_t* Vg = v + b * v_bs + static_cast<long long>(hk) * HD;
    uint16_t* Og = o + b * o_bs + static_cast<long long>(h) * HD;

    // Q tile (rows past seq zero-filled).
    for (int c = tid; c < C::BR * C::CH; c += C::NT) {
        const int r = c / C::CH, col = (c % C::CH) * 8;
        const int gr = q0 + r;
        const bool ok = gr < seq;
        cp_async16(sQ + r * C::LD + col, Qg + static_cast<long long>(ok ? gr : 0) * q_rs + col, ok);
    }
    auto load_kv = [&](int kt, int st) {
        const int n0 = kt * C::BC;
        uint16_t* dK = sK + st * C::BC * C::LD;
        uint16_t* dV = sV + st * C::BC * C::LD;
        for (int c = tid; c < C::BC * C::CH; c += C::NT) {
            const int r = c / C::CH, col = (c % C::CH) * 8;
            const int gr = n0 + r;
            const bool ok = gr < seq;
            const long long row = ok ? gr : 0;
            cp_async16(dK + r * C::LD + col, Kg + row * k_rs + col, ok);
            cp_async16(dV + r * C::LD + col, Vg + row * v_rs + col, ok);
        }
    };
    load_kv(0, 0);
    cp_async_commit();

    const int q_end = min(q0 + C::BR, seq);  // exclusive
    const int n_kt = (q_end + C::BC - 1) / C::BC;
    const int row0 = q0 + warp * 16;  // this warp's first query row

    cp_async_wait_all();
    __syncthreads();

    // This warp's 16 rows of q as A fragments, scaled and rounded to the dtype as HF's OPT does.
    uint32_t qf[C::KC][4];
#pragma unroll
    for (int kc = 0; kc < C::KC; ++kc) {
        ldsm_x4(qf[kc], sQ + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * C::LD + kc * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float2 f = E::unpack(qf[kc][i]);
            qf[kc][i] = E::pack(f.x * q_scale, f.y * q_scale);
        }
    }

    float acc[C::DT][4];
#pragma unroll
    for (int d = 0; d < C::DT; ++d)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[d][e] = 0.f;
    float m[2] = {NEG_INF, NEG_INF};  // running max of rows g, g+8 (f32 logits)
    float l[2] = {0.f, 0.f};          // this thread's part of the running sums

    for (int kt = 0; kt < n_kt; ++kt) {
        const int st = kt & 1;
        if (kt + 1 < n_kt) load_kv(kt + 1, st ^ 1);
        cp_async_commit();
        const int n0 = kt * C::BC;
        const uint16_t* kS = sK + st * C::BC * C::LD;
        const uint16_t* vS = sV + st * C::BC * C::LD;
        if (n0 <= row0 + 15) {  // some key of this step is visible to some row of this warp
            float s[C::ST][4];
#pragma unroll
            for (int j = 0; j < C::ST; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[j][e] = 0.f;
#pragma unroll
            for (int kc = 0; kc < C::KC; ++kc) {
#pragma unroll
                for (int p = 0; p < C::ST / 2; ++p) {
                    uint32_t kb[4];
                    ldsm_x4(kb, kS + (p * 16 + (lane & 7) + (lane >> 4) * 8) * C::LD + kc * 16 + ((lane >> 3) & 1) * 8);
                    E::mma(s[2 * p], qf[kc], kb[0], kb[1]);
                    E::mma(s[2 * p + 1], qf[kc], kb[2], kb[3]);
                }
            }
            if (n0 + C::BC - 1 > row0) {  // the diagonal crosses this step: causal mask
#pragma unroll
                for (int j = 0; j < C::ST; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int row = row0 + g + (e >> 1) * 8;
                        const int col = n0 + j * 8 + 2 * t + (e & 1);
                        if (col > row) s[j][e] = NEG_INF;
                    }
            }
            float mx[2] = {m[0], m[1]};
#pragma unroll
            for (int j = 0; j < C::ST; ++j) {
                mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]));
                mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]));
            }
            float base[2], alpha[2];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                mx[r] = fmaxf(mx[r], shfl_xor(mx[r], 1));
                mx[r] = fmaxf(mx[r], shfl_xor(mx[r], 2));
                base[r] = mx[r] == NEG_INF ? 0.f : mx[r];
                alpha[r] = ex2((m[r] - base[r]) * sl2);  // 0 while the row had no key yet
                m[r] = mx[r];
                l[r] *= alpha[r];
            }
#pragma unroll
            for (int d = 0; d < C::DT; ++d) {
                acc[d][0] *= alpha[0];
                acc[d][1] *= alpha[0];
                acc[d][2] *= alpha[1];
                acc[d][3] *= alpha[1];
            }
            // P = exp(s_scale·(S − max)) in f32 (differences first: exact for nearby huge
            // logits), then A fragments in the dtype: S n-tiles 2c, 2c+1 form k-chunk c of P·V.
            uint32_t pf[C::PC][4];
#pragma unroll
            for (int j = 0; j < C::ST; ++j) {
                const float p0 = ex2((s[j][0] - base[0]) * sl2);
                const float p1 = ex2((s[j][1] - base[0]) * sl2);
                const float p2 = ex2((s[j][2] - base[1]) * sl2);
                const float p3 = ex2((s[j][3] - base[1]) * sl2);
                l[0] += p0 + p1;
                l[1] += p2 + p3;
                pf[j >> 1][(j & 1) * 2 + 0] = E::pack(p0, p1);
                pf[j >> 1][(j & 1) * 2 + 1] = E::pack(p2, p3);
            }
#pragma unroll
            for (int pc = 0; pc < C::PC; ++pc) {
#pragma unroll
                for (int dp = 0; dp < C::DT / 2; ++dp) {
                    uint32_t vb[4];
                    ldsm_x4_t(vb, vS + (pc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * C::LD + dp * 16 + (lane >> 4) * 8);
                    E::mma(acc[2 * dp], pf[pc], vb[0], vb[1]);
                    E::mma(acc[2 * dp + 1], pf[pc], vb[2], vb[3]);
                }
            }
        }
        cp_async_wait_all();
        __syncthreads();
    }

    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] += shfl_xor(l[r], 1);
        l[r] += shfl_xor(l[r], 2);
        inv[r] = 1.f / l[r];
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = row0 + g + r * 8;
        if (row < seq) {
            uint16_t* dst = Og + static_cast<long long>(row) * o_rs + 2 * t;
#pragma unroll
            for (int d = 0; d < C::DT; ++d)
                st_u32(dst + d * 8, E::pack(acc[d][2 * r] * inv[r], acc[d][2 * r + 1] * inv[r]));
        }
    }
}

// ---- LM-head loss -------------------------------------------------------------------------

// (max, sum of exp(x − max)) pairs, merged.
SGMI_DEV void lse_merge(float& m, float& s, float m2, float s2) {
    const float mn = fmaxf(m, m2);
    if (mn == NEG_INF) {
        s = 0.f;
    } else {
        s = s * ex2((m - mn) * LOG2E) + s2 * ex2((m2 - mn) * LOG2E);
    }
    m = mn;
}

SGMI_DEV void lse_push(float& m, float& s, float x) {
    if (x > m) {
        s = s * ex2((m - x) * LOG2E) + 1.f;
        m = x;
    } else if (m != NEG_INF) {
        s += ex2((x - m) * LOG2E);
    }
}

// E: the element type of 16-bit logits (F16 or BF16); f32 logits ignore it.
template <typename E>
SGMI_DEV float load_elem(const float* p) {
    return ld_f32(p);
}
template <typename E>
SGMI_DEV float load_elem(const uint16_t* p) {
    return E::to_f(ld_u16(p));
}

// 8 elements (16 bytes for f16/bf16; two 16-byte loads for f32) into the running (max, sum).
template <typename E>
SGMI_DEV void lse_push8(float& m, float& s, const uint16_t* p) {
    const uint4 u = ld_u128(p);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
    float x[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = E::unpack(w[i]);
        x[2 * i] = f.x;
        x[2 * i + 1] = f.y;
    }
    float lm = x[0];
#pragma unroll
    for (int i = 1; i < 8; ++i) lm = fmaxf(lm, x[i]);
    if (lm > m) {
        s = s * ex2((m - lm) * LOG2E);
        m = lm;
    }
    if (m != NEG_INF) {
#pragma unroll
        for (int i = 0; i < 8; ++i) s += ex2((x[i] - m) * LOG2E);
    }
}
template <typename E>
SGMI_DEV void lse_push8(float& m, float& s, const float* p) {
    const uint4 u0 = ld_u128(p), u1 = ld_u128(p + 4);
    const uint32_t w[8] = {u0.x, u0.y, u0.z, u0.w, u1.x, u1.y, u1.z, u1.w};
    float x[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) x[i] = __uint_as_float(w[i]);
    float lm = x[0];
#pragma unroll
    for (int i = 1; i < 8; ++i) lm = fmaxf(lm, x[i]);
    if (lm > m) {
        s = s * ex2((m - lm) * LOG2E);
        m = lm;
    }
    if (m != NEG_INF) {
#pragma unroll
        for (int i = 0; i < 8; ++i) s += ex2((x[i] - m) * LOG2E);
    }
}

constexpr int NLL_THREADS = 256;

// One block per row: out[row] = logsumexp(logits[row, :vocab]) − logits[row, target[row]]
// in f32 (NaN for a target outside the vocabulary). vec: rows 16-byte aligned (ld a multiple
// of 8 elements for f16/bf16, 4 for f32, and an aligned base): 16-byte loads. T: uint16_t
// (16-bit logits of element type E) or float.
template <typename T, typename E = F16>
SGMI_DEV void nll_rows_body(const T* __restrict__ logits, long long ld, int vocab, const uint32_t* __restrict__ targets,
                            float* __restrict__ out, int vec) {
    __shared__ float red_m[NLL_THREADS / 32];
    __shared__ float red_s[NLL_THREADS / 32];
    const int row = blockIdx.x;
    const int tid = threadIdx.x;
    const T* x = logits + static_cast<long long>(row) * ld;
    float m = NEG_INF, s = 0.f;
    int done = 0;
    if (vec) {
        const int n8 = vocab / 8;
#pragma unroll 4
        for (int i = tid; i < n8; i += NLL_THREADS) lse_push8<E>(m, s, x + 8 * i);
        done = n8 * 8;
    }
    for (int i = done + tid; i < vocab; i += NLL_THREADS) lse_push(m, s, load_elem<E>(x + i));
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float m2 = shfl_xor(m, off), s2 = shfl_xor(s, off);
        lse_merge(m, s, m2, s2);
    }
    if ((tid & 31) == 0) {
        red_m[tid >> 5] = m;
        red_s[tid >> 5] = s;
    }
    __syncthreads();
    if (tid < 32) {
        m = tid < NLL_THREADS / 32 ? red_m[tid] : NEG_INF;
        s = tid < NLL_THREADS / 32 ? red_s[tid] : 0.f;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const float m2 = shfl_xor(m, off), s2 = shfl_xor(s, off);
            lse_merge(m, s, m2, s2);
        }
        if (tid == 0) {
            const uint32_t tg = ld_idx(targets + row);
            const float xt = tg < static_cast<uint32_t>(vocab) ? load_elem<E>(x + tg) : __builtin_nanf("");
            st_f32(out + row, m + logf(s) - xt);
        }
    }
}

constexpr int SUM_THREADS = 256;

// out[w] = Σ_{i < per_window} nll[w·per_window + i] in f64, in a fixed order.
SGMI_DEV void nll_window_sums_body(const float* __restrict__ nll, int per_window, double* __restrict__ out) {
    __shared__ double red[SUM_THREADS / 32];
    const int w = blockIdx.x, tid = threadIdx.x;
    double a = 0.0;
    for (int i = tid; i < per_window; i += SUM_THREADS) a += static_cast<double>(ld_f32(nll + static_cast<long long>(w) * per_window + i));
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) a += shfl_xor(a, off);
    if ((tid & 31) == 0) red[tid >> 5] = a;
    __syncthreads();
    if (tid < 32) {
        a = tid < SUM_THREADS / 32 ? red[tid] : 0.0;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) a += shfl_xor(a, off);
        if (tid == 0) st_f64(out + w, a);
    }
}

// ---- bias (+ ReLU) ------------------------------------------------------------------------

SGMI_DEV float relu_keep_nan(float x) { return x > 0.f ? x : (x != x ? x : 0.f); }

// y (rows × cols, row-major, contiguous) = [relu](y + bias), 8 elements per thread and step;
// cols a multiple of 8, y and bias 16-byte aligned.
SGMI_DEV void bias_act_body(uint16_t* __restrict__ y, const uint16_t* __restrict__ bias, long long rows, int cols, int relu) {
    const long long c8 = cols / 8;
    const long long n = rows * c8;
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        const long long col = (i % c8) * 8;
        const uint4 a = ld_u128(y + 8 * i);
        const uint4 bb = ld_u128(bias + col);
        const uint32_t av[4] = {a.x, a.y, a.z, a.w};
        const uint32_t bv[4] = {bb.x, bb.y, bb.z, bb.w};
        uint32_t r[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float2 fa = unpack_h2(av[j]), fb = unpack_h2(bv[j]);
            float x0 = fa.x + fb.x, x1 = fa.y + fb.y;
            if (relu) {
                x0 = relu_keep_nan(x0);
                x1 = relu_keep_nan(x1);
            }
            r[j] = pack_h2(x0, x1);
        }
        st_u128(y + 8 * i, uint4{r[0], r[1], r[2], r[3]});
    }
}


// ---- rotary positions (with Qwen3's per-head norm) ------------------------------------------

constexpr int ROPE_WARPS = 8;   // (token, head) items per block, one warp each
constexpr int ROPE_MAX_PAIRS = 4;  // pairs per lane: head_dim ≤ 2·32·4 = 256

// x (batch, seq, heads·hd) in place, rows at element strides x_bs, x_rs; position = index in
// the sequence. One warp per (token, head): lane l holds the pairs (j, j + hd/2), j = l + 32i.
// With norm_w (hd weights): transformers' RMSNorm over the head first, y = w · dt(x ·
// rsqrt(mean(x²) + eps)) rounded to the dtype. Then transformers' apply_rotary_pos_emb on
// dtype tensors, each op rounded: out1 = dt(dt(x1·c) − dt(x2·s)), out2 = dt(dt(x2·c) + dt(x1·s)),
// with c, s = cos, sin[pos, j] of the (max_seq, hd/2) tables in the dtype.
template <typename E>
SGMI_DEV void rope_body(uint16_t* __restrict__ x, long long x_bs, long long x_rs, int batch, int seq, int heads, int hd,
                        const uint16_t* __restrict__ cos_t, const uint16_t* __restrict__ sin_t,
                        const uint16_t* __restrict__ norm_w, float eps) {
    const int lane = threadIdx.x & 31;
    const long long item = static_cast<long long>(blockIdx.x) * ROPE_WARPS + (threadIdx.x >> 5);
    if (item >= static_cast<long long>(batch) * seq * heads) return;  // whole warps leave together
    const int hh = static_cast<int>(item % heads);
    const long long tok = item / heads;
    const int pos = static_cast<int>(tok % seq);
    const long long bb = tok / seq;
    uint16_t* p = x + bb * x_bs + pos * x_rs + static_cast<long long>(hh) * hd;
    const int half = hd / 2;
    float a[ROPE_MAX_PAIRS], c[ROPE_MAX_PAIRS];
#pragma unroll
    for (int i = 0; i < ROPE_MAX_PAIRS; ++i) {
        const int j = lane + 32 * i;
        const bool on = j < half;
        a[i] = on ? E::to_f(ld_u16_rw(p + j)) : 0.f;
        c[i] = on ? E::to_f(ld_u16_rw(p + j + half)) : 0.f;
    }
    if (norm_w != nullptr) {
        float ss = 0.f;
#pragma unroll
        for (int i = 0; i < ROPE_MAX_PAIRS; ++i) ss += a[i] * a[i] + c[i] * c[i];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) ss += shfl_xor(ss, off);
        const float r = rsqrt_f(ss / static_cast<float>(hd) + eps);
#pragma unroll
        for (int i = 0; i < ROPE_MAX_PAIRS; ++i) {
            const int j = lane + 32 * i;
            if (j < half) {
                a[i] = round_to<E>(E::to_f(ld_u16(norm_w + j)) * round_to<E>(a[i] * r));
                c[i] = round_to<E>(E::to_f(ld_u16(norm_w + j + half)) * round_to<E>(c[i] * r));
            }
        }
    }
#pragma unroll
    for (int i = 0; i < ROPE_MAX_PAIRS; ++i) {
        const int j = lane + 32 * i;
        if (j < half) {
            const long long t = static_cast<long long>(pos) * half + j;
            const float cs = E::to_f(ld_u16(cos_t + t)), sn = E::to_f(ld_u16(sin_t + t));
            st_u16(p + j, E::from_f(round_to<E>(a[i] * cs) - round_to<E>(c[i] * sn)));
            st_u16(p + j + half, E::from_f(round_to<E>(c[i] * cs) + round_to<E>(a[i] * sn)));
        }
    }
}

// ---- RMSNorm of rows ------------------------------------------------------------------------

constexpr int NORM_THREADS = 256;

// out[row] = w · dt(x · rsqrt(mean(x²) + eps)), rounded to the dtype (transformers' LlamaRMSNorm:
// x.float(), the mean of squares in f32, cast to the input dtype, times the weight). One block
// per row of `cols` (x and out contiguous rows); vec: cols a multiple of 8 and every pointer
// 16-byte aligned (16-byte loads and stores). The partial sums are combined in a fixed order.
template <typename E>
SGMI_DEV void rms_norm_body(const uint16_t* __restrict__ x, const uint16_t* __restrict__ w, uint16_t* __restrict__ out,
                            int cols, float eps, int vec) {
    __shared__ float red[NORM_THREADS / 32];
    const int tid = threadIdx.x;
    const long long row = blockIdx.x;
    const uint16_t* xr = x + row * cols;
    uint16_t* yr = out + row * cols;
    float ss = 0.f;
    if (vec) {
        for (int i = tid; i < cols / 8; i += NORM_THREADS) {
            const uint4 u = ld_u128(xr + 8 * i);
            const uint32_t q[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const float2 f = E::unpack(q[k]);
                ss += f.x * f.x + f.y * f.y;
            }
        }
    } else {
        for (int i = tid; i < cols; i += NORM_THREADS) {
            const float f = E::to_f(ld_u16(xr + i));
            ss += f * f;
        }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) ss += shfl_xor(ss, off);
    if ((tid & 31) == 0) red[tid >> 5] = ss;
    __syncthreads();
    ss = 0.f;
#pragma unroll
    for (int k = 0; k < NORM_THREADS / 32; ++k) ss += red[k];
    const float r = rsqrt_f(ss / static_cast<float>(cols) + eps);
    if (vec) {
        for (int i = tid; i < cols / 8; i += NORM_THREADS) {
            const uint4 u = ld_u128(xr + 8 * i), wu = ld_u128(w + 8 * i);
            const uint32_t q[4] = {u.x, u.y, u.z, u.w}, wq[4] = {wu.x, wu.y, wu.z, wu.w};
            uint32_t o[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const float2 f = E::unpack(q[k]), g = E::unpack(wq[k]);
                o[k] = E::pack(g.x * round_to<E>(f.x * r), g.y * round_to<E>(f.y * r));
            }
            st_u128(yr + 8 * i, uint4{o[0], o[1], o[2], o[3]});
        }
    } else {
        for (int i = tid; i < cols; i += NORM_THREADS)
            st_u16(yr + i, E::from_f(E::to_f(ld_u16(w + i)) * round_to<E>(E::to_f(ld_u16(xr + i)) * r)));
    }
}

// ---- the gated MLP's activation -------------------------------------------------------------

// silu(g) rounded to the dtype, then times u rounded again (torch: F.silu in f32 per element,
// x / (1 + exp(−x)), stored in the dtype; then the dtype product).
template <typename E>
SGMI_DEV float silu_mul1(float g, float u) {
    return round_to<E>(g / (1.f + exp_f(-g))) * u;
}

// g = silu(g) · u in place over n elements (g, u contiguous); vec: n a multiple of 8 and both
// 16-byte aligned (else one element per step).
template <typename E>
SGMI_DEV void silu_mul_body(uint16_t* __restrict__ g, const uint16_t* __restrict__ u, long long n, int vec) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (vec) {
        for (long long i = first; i < n / 8; i += stride) {
            const uint4 a = ld_u128_rw(g + 8 * i), b = ld_u128(u + 8 * i);
            const uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
            uint32_t r[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const float2 fa = E::unpack(av[k]), fb = E::unpack(bv[k]);
                r[k] = E::pack(silu_mul1<E>(fa.x, fb.x), silu_mul1<E>(fa.y, fb.y));
            }
            st_u128(g + 8 * i, uint4{r[0], r[1], r[2], r[3]});
        }
    } else {
        for (long long i = first; i < n; i += stride)
            st_u16(g + i, E::from_f(silu_mul1<E>(E::to_f(ld_u16_rw(g + i)), E::to_f(ld_u16(u + i)))));
    }
}

}  // namespace sgmi

// ---- entry points (the names src/model/cuda_forward.rs loads) -----------------------------------

// sgmi_flash_fwd{,_bf16}_hd{HD}_w{WARPS}: 4 or 8 warps per block (64 or 128 queries). MINB,
// the blocks per multiprocessor the register allocation must allow: 8 warps at head_dim ≤ 80
// fit 128 registers (2 blocks, 16 warps per SM) without spilling; at 96 and 128 they need more
// (1 block). src/model/cuda_forward.rs picks the variant (FLASH_WARPS, or SPARSEGPT_MI_FLASH_WARPS).
#define SGMI_FLASH_ENTRY(HD, WARPS, MINB)                                                                         \
    extern "C" __global__ void __launch_bounds__(WARPS * 32, MINB)                                                \
        sgmi_flash_fwd_hd##HD##_w##WARPS(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* o,     \
                                         long long q_bs, long long q_rs, long long k_bs, long long k_rs,          \
                                         long long v_bs, long long v_rs, long long o_bs, long long o_rs, int seq,  \
                                         float q_scale) {                                                         \
        sgmi::flash_fwd_body<HD, WARPS, sgmi::F16, false>(q, k, v, o, q_bs, q_rs, k_bs, k_rs, v_bs, v_rs, o_bs,   \
                                                          o_rs, seq, q_scale, 1, 1.f);                            \
    }                                                                                                             \
    SGMI_FLASH_GQA_ENTRY(f16, sgmi::F16, HD, WARPS, MINB)                                                         \
    SGMI_FLASH_GQA_ENTRY(bf16, sgmi::BF16, HD, WARPS, MINB)
#define SGMI_FLASH_GQA_ENTRY(SUFFIX, E, HD, WARPS, MINB)                                                          \
    extern "C" __global__ void __launch_bounds__(WARPS * 32, MINB) sgmi_flash_gqa_##SUFFIX##_hd##HD##_w##WARPS(  \
        const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* o, long long q_bs, long long q_rs,     \
        long long k_bs, long long k_rs, long long v_bs, long long v_rs, long long o_bs, long long o_rs, int seq,  \
        float q_scale, int kv_group, float s_scale) {                                                             \
        sgmi::flash_fwd_body<HD, WARPS, E, true>(q, k, v, o, q_bs, q_rs, k_bs, k_rs, v_bs, v_rs, o_bs, o_rs, seq, \
                                                 q_scale, kv_group, s_scale);                                     \
    }

#ifndef SGMI_NO_ENTRIES
SGMI_FLASH_ENTRY(32, 8, 2)
SGMI_FLASH_ENTRY(64, 8, 2)
SGMI_FLASH_ENTRY(80, 8, 2)
SGMI_FLASH_ENTRY(96, 8, 1)
SGMI_FLASH_ENTRY(128, 8, 1)
SGMI_FLASH_ENTRY(32, 4, 3)
SGMI_FLASH_ENTRY(64, 4, 3)
SGMI_FLASH_ENTRY(80, 4, 3)
SGMI_FLASH_ENTRY(96, 4, 2)
SGMI_FLASH_ENTRY(128, 4, 2)

extern "C" __global__ void __launch_bounds__(sgmi::NLL_THREADS)
    sgmi_nll_rows_f16(const uint16_t* logits, long long ld, int vocab, const uint32_t* targets, float* out, int vec) {
    sgmi::nll_rows_body<uint16_t>(logits, ld, vocab, targets, out, vec);
}
extern "C" __global__ void __launch_bounds__(sgmi::NLL_THREADS)
    sgmi_nll_rows_bf16(const uint16_t* logits, long long ld, int vocab, const uint32_t* targets, float* out, int vec) {
    sgmi::nll_rows_body<uint16_t, sgmi::BF16>(logits, ld, vocab, targets, out, vec);
}
extern "C" __global__ void __launch_bounds__(sgmi::NLL_THREADS)
    sgmi_nll_rows_f32(const float* logits, long long ld, int vocab, const uint32_t* targets, float* out, int vec) {
    sgmi::nll_rows_body<float>(logits, ld, vocab, targets, out, vec);
}
extern "C" __global__ void __launch_bounds__(sgmi::SUM_THREADS)
    sgmi_nll_window_sums(const float* nll, int per_window, double* out) {
    sgmi::nll_window_sums_body(nll, per_window, out);
}
extern "C" __global__ void __launch_bounds__(256)
    sgmi_bias_act_f16(uint16_t* y, const uint16_t* bias, long long rows, int cols, int relu) {
    sgmi::bias_act_body(y, bias, rows, cols, relu);
}
#define SGMI_ELEMENTWISE_ENTRIES(SUFFIX, E)                                                                       \
    extern "C" __global__ void __launch_bounds__(sgmi::ROPE_WARPS * 32)                                           \
        sgmi_rope_##SUFFIX(uint16_t* x, long long x_bs, long long x_rs, int batch, int seq, int heads, int hd,    \
                           const uint16_t* cos_t, const uint16_t* sin_t, const uint16_t* norm_w, float eps) {     \
        sgmi::rope_body<E>(x, x_bs, x_rs, batch, seq, heads, hd, cos_t, sin_t, norm_w, eps);                       \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(sgmi::NORM_THREADS)                                              \
        sgmi_rms_norm_##SUFFIX(const uint16_t* x, const uint16_t* w, uint16_t* out, int cols, float eps, int vec) { \
        sgmi::rms_norm_body<E>(x, w, out, cols, eps, vec);                                                        \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(256)                                                             \
        sgmi_silu_mul_##SUFFIX(uint16_t* g, const uint16_t* u, long long n, int vec) {                            \
        sgmi::silu_mul_body<E>(g, u, n, vec);                                                                     \
    }
SGMI_ELEMENTWISE_ENTRIES(f16, sgmi::F16)
SGMI_ELEMENTWISE_ENTRIES(bf16, sgmi::BF16)
#endif
