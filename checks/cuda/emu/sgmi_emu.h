// A CPU emulator for the device kernels of src/model/kernels/attention.cu (built with -DSGMI_EMULATE).
//
// Every CUDA thread of a block is a user-level context (ucontext); a scheduler runs one at a
// time, in a seeded random order or lowest/highest thread first (rotating by block), until it reaches a synchronisation point: a warp collective
// (ldmatrix, mma, shuffle) waits for all 32 lanes of its warp, __syncthreads for all threads
// of the block. Collectives exchange operands through per-warp buffers and compute what PTX
// specifies for each lane (fragment layouts of mma.m16n8k16 and ldmatrix from the PTX ISA).
// cp.async copies are deferred until the issuing thread's cp.async.wait_all, so reading shared
// memory before waiting (or before the barrier that follows the wait) reads stale data.
// Shared-memory addresses of ldmatrix/cp.async, and global addresses of loads and stores, are
// bounds- and alignment-checked against the block's shared memory and registered buffers.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define SGMI_DEV inline

struct emu_dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct float2 {
    float x, y;
};
struct uint4 {
    uint32_t x, y, z, w;
};

namespace emu {

inline emu_dim3 g_thread, g_block, g_block_dim, g_grid_dim;

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "emulator: %s (block %u,%u,%u thread %u)\n", what, g_block.x, g_block.y, g_block.z, g_thread.x);
    std::abort();
}

struct Range {
    const char* lo;
    const char* hi;
};
inline std::vector<Range> g_global;  // registered device buffers
inline void register_global(const void* p, size_t bytes) {
    g_global.push_back({static_cast<const char*>(p), static_cast<const char*>(p) + bytes});
}
inline void clear_globals() { g_global.clear(); }
inline void check_global(const void* p, size_t bytes, size_t align) {
    const char* c = static_cast<const char*>(p);
    if (reinterpret_cast<uintptr_t>(c) % align) fail("misaligned global access");
    for (const Range& r : g_global)
        if (c >= r.lo && c + bytes <= r.hi) return;
    fail("global access outside every registered buffer");
}

enum State { READY, WAIT_WARP, WAIT_BLOCK, DONE };

struct Copy {
    void* dst;
    const void* src;
    bool fill;
};

struct Thread {
    ucontext_t ctx;
    State st = READY;
    std::vector<char> stack;
    std::vector<Copy> pending;
};

struct Block {
    int n = 0;
    std::vector<Thread> th;
    ucontext_t sched;
    std::vector<char> smem;
    // per-warp exchange buffers
    std::vector<uint32_t> xr;       // [warp][lane][8]
    std::vector<float> xf;          // [warp][lane][4]
    std::vector<double> xd;         // [warp][lane]
    std::vector<const char*> xa;    // [warp][lane]
};

inline Block* g_blk = nullptr;
inline int g_cur = -1;
inline std::function<void()> g_body;
inline std::mt19937_64 g_rng(12345);
inline long long g_switches = 0;
inline unsigned g_policy_shift = 0;  // rotated per launch

inline void trampoline() {
    g_body();
    g_blk->th[g_cur].st = DONE;
    // returning switches to uc_link (the scheduler)
}

inline void yield(State s) {
    Thread& t = g_blk->th[g_cur];
    t.st = s;
    ++g_switches;
    swapcontext(&t.ctx, &g_blk->sched);
}
inline void warp_sync() { yield(WAIT_WARP); }

inline void check_smem(const void* p, size_t bytes, size_t align) {
    const char* c = static_cast<const char*>(p);
    const char* lo = g_blk->smem.data();
    if (reinterpret_cast<uintptr_t>(c) % align) fail("misaligned shared-memory access");
    if (c < lo || c + bytes > lo + g_blk->smem.size()) fail("shared-memory access out of bounds");
}

// Runs `body` as the threads of one block; smem_bytes of dynamic shared memory (static
// __shared__ arrays are function statics, shared by the block as on the device).
inline void run_block(const std::function<void()>& body, int nthreads, size_t smem_bytes) {
    if (nthreads % 32) fail("block size must be a multiple of 32");
    Block blk;
    blk.n = nthreads;
    blk.th.resize(nthreads);
    blk.smem.assign(smem_bytes + 16, char(0x7f));  // garbage, not zeros: unwritten data shows
    int warps = nthreads / 32;
    blk.xr.assign(size_t(warps) * 32 * 8, 0);
    blk.xf.assign(size_t(warps) * 32 * 4, 0.f);
    blk.xd.assign(size_t(warps) * 32, 0.0);
    blk.xa.assign(size_t(warps) * 32, nullptr);
    g_blk = &blk;
    g_body = body;
    for (int i = 0; i < nthreads; ++i) {
        Thread& t = blk.th[i];
        t.stack.resize(256 * 1024);
        getcontext(&t.ctx);
        t.ctx.uc_stack.ss_sp = t.stack.data();
        t.ctx.uc_stack.ss_size = t.stack.size();
        t.ctx.uc_link = &blk.sched;
        makecontext(&t.ctx, trampoline, 0);
    }
    g_block_dim.x = nthreads;
    std::vector<int> ready;
    int done = 0;
    for (;;) {
        ready.clear();
        for (int i = 0; i < nthreads; ++i)
            if (blk.th[i].st == READY) ready.push_back(i);
        if (ready.empty()) {
            if (done == nthreads) break;
            fail("deadlock: divergent collectives or barrier");
        }
        // Policies rotate by block: random interleaving, and running the lowest / highest ready
        // thread first (one warp races ahead until it blocks: exposes missing barriers).
        const int policy = (g_block.x + g_block.y + g_block.z + g_policy_shift) % 3;
        int i = policy == 0 ? ready[g_rng() % ready.size()] : policy == 1 ? ready.front() : ready.back();
        g_cur = i;
        g_thread.x = i;
        swapcontext(&blk.sched, &blk.th[i].ctx);
        // Release a warp as soon as all its lanes reached a collective, the block at a barrier
        // as soon as every thread reached it.
        const State st = blk.th[i].st;
        if (st == DONE) ++done;
        if (st == WAIT_WARP) {
            const int w = i / 32;
            bool all = true;
            for (int l = 0; l < 32; ++l) all = all && blk.th[w * 32 + l].st == WAIT_WARP;
            if (all)
                for (int l = 0; l < 32; ++l) blk.th[w * 32 + l].st = READY;
        }
        if (st == WAIT_BLOCK) {
            bool all = true;
            for (int j = 0; j < nthreads; ++j) all = all && blk.th[j].st == WAIT_BLOCK;
            if (all)
                for (int j = 0; j < nthreads; ++j) blk.th[j].st = READY;
        }
    }
    g_blk = nullptr;
}

inline int lane() { return g_cur & 31; }
inline int warp() { return g_cur >> 5; }
inline uint32_t& xr(int l, int i) { return g_blk->xr[(size_t(warp()) * 32 + l) * 8 + i]; }
inline float& xf(int l, int i) { return g_blk->xf[(size_t(warp()) * 32 + l) * 4 + i]; }
inline double& xd(int l) { return g_blk->xd[size_t(warp()) * 32 + l]; }
inline const char*& xa(int l) { return g_blk->xa[size_t(warp()) * 32 + l]; }

inline uint16_t f2h(float f) {
    _Float16 h = static_cast<_Float16>(f);
    uint16_t u;
    std::memcpy(&u, &h, 2);
    return u;
}
inline float h2f_(uint16_t u) {
    _Float16 h;
    std::memcpy(&h, &u, 2);
    return static_cast<float>(h);
}
// bf16: the top 16 bits of an f32; rounding to nearest even (cvt.rn.bf16.f32), NaN kept quiet.
inline uint16_t f2bf(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
}
inline float bf2f_(uint16_t b) {
    const uint32_t u = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

}  // namespace emu

#define threadIdx (emu::g_thread)
#define blockIdx (emu::g_block)
#define blockDim (emu::g_block_dim)
#define gridDim (emu::g_grid_dim)
#define SGMI_DYN_SMEM(name) char* name = emu::g_blk->smem.data()

inline void __syncthreads() { emu::yield(emu::WAIT_BLOCK); }
using std::max;
using std::min;
inline float __uint_as_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

namespace sgmi {

inline uint32_t pack_h2(float lo, float hi) { return uint32_t(emu::f2h(lo)) | (uint32_t(emu::f2h(hi)) << 16); }
inline float2 unpack_h2(uint32_t u) { return {emu::h2f_(uint16_t(u & 0xffff)), emu::h2f_(uint16_t(u >> 16))}; }
inline float h2f(uint16_t u) { return emu::h2f_(u); }
inline uint16_t f2h(float f) { return emu::f2h(f); }
inline uint32_t pack_bf2(float lo, float hi) { return uint32_t(emu::f2bf(lo)) | (uint32_t(emu::f2bf(hi)) << 16); }
inline float2 unpack_bf2(uint32_t u) { return {emu::bf2f_(uint16_t(u & 0xffff)), emu::bf2f_(uint16_t(u >> 16))}; }
inline float bf2f(uint16_t u) { return emu::bf2f_(u); }
inline uint16_t f2bf(float f) { return emu::f2bf(f); }
inline float ex2(float x) { return std::exp2(x); }
inline float rsqrt_f(float x) { return 1.f / std::sqrt(x); }
inline float exp_f(float x) { return std::exp(x); }

inline void ldsm_impl(uint32_t (&r)[4], const void* p, bool trans) {
    emu::check_smem(p, 16, 16);
    const int l = emu::lane();
    emu::xa(l) = static_cast<const char*>(p);
    emu::warp_sync();
    for (int i = 0; i < 4; ++i) {
        uint16_t lo, hi;
        if (!trans) {
            const uint16_t* row = reinterpret_cast<const uint16_t*>(emu::xa(8 * i + l / 4));
            lo = row[2 * (l % 4)];
            hi = row[2 * (l % 4) + 1];
        } else {
            const uint16_t* r0 = reinterpret_cast<const uint16_t*>(emu::xa(8 * i + 2 * (l % 4)));
            const uint16_t* r1 = reinterpret_cast<const uint16_t*>(emu::xa(8 * i + 2 * (l % 4) + 1));
            lo = r0[l / 4];
            hi = r1[l / 4];
        }
        r[i] = uint32_t(lo) | (uint32_t(hi) << 16);
    }
    emu::warp_sync();
}
inline void ldsm_x4(uint32_t (&r)[4], const void* p) { ldsm_impl(r, p, false); }
inline void ldsm_x4_t(uint32_t (&r)[4], const void* p) { ldsm_impl(r, p, true); }

// PTX mma.m16n8k16 .row.col f32.{f16,bf16}.{f16,bf16}.f32 fragments (g = lane/4, t = lane%4):
// A a0:(g, 2t..) a1:(g+8, 2t..) a2:(g, 2t+8..) a3:(g+8, 2t+8..); B b0:(k 2t.., n g) b1:(k 2t+8.., n g);
// C c0,c1:(g, 2t, 2t+1) c2,c3:(g+8, 2t, 2t+1). bf: the operands are bf16.
inline float elem16(uint16_t v, bool bf) { return bf ? emu::bf2f_(v) : emu::h2f_(v); }
inline float mma_a(int row, int k, bool bf) {
    const int l = (row % 8) * 4 + (k % 8) / 2, reg = (row / 8) + 2 * (k / 8);
    const uint32_t u = emu::xr(l, reg);
    return elem16(uint16_t(k % 2 ? u >> 16 : u & 0xffff), bf);
}
inline float mma_b(int k, int n, bool bf) {
    const int l = n * 4 + (k % 8) / 2, reg = 4 + k / 8;
    const uint32_t u = emu::xr(l, reg);
    return elem16(uint16_t(k % 2 ? u >> 16 : u & 0xffff), bf);
}
inline void mma_impl(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, bool bf) {
    const int l = emu::lane();
    for (int i = 0; i < 4; ++i) emu::xr(l, i) = a[i];
    emu::xr(l, 4) = b0;
    emu::xr(l, 5) = b1;
    emu::warp_sync();
    const int g = l / 4, t = l % 4;
    float out[4];
    for (int e = 0; e < 4; ++e) {
        const int row = g + (e >> 1) * 8, col = 2 * t + (e & 1);
        float acc = d[e];
        for (int k = 0; k < 16; ++k) acc += mma_a(row, k, bf) * mma_b(k, col, bf);
        out[e] = acc;
    }
    emu::warp_sync();
    for (int e = 0; e < 4; ++e) d[e] = out[e];
}
inline void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) { mma_impl(d, a, b0, b1, false); }
inline void mma16816_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) { mma_impl(d, a, b0, b1, true); }

inline float shfl_xor(float v, int m) {
    const int l = emu::lane();
    emu::xf(l, 0) = v;
    emu::warp_sync();
    const float r = emu::xf(l ^ m, 0);
    emu::warp_sync();
    return r;
}
inline double shfl_xor(double v, int m) {
    const int l = emu::lane();
    emu::xd(l) = v;
    emu::warp_sync();
    const double r = emu::xd(l ^ m);
    emu::warp_sync();
    return r;
}

inline void cp_async16(void* s, const void* g, bool pred) {
    emu::check_smem(s, 16, 16);
    if (pred) emu::check_global(g, 16, 16);
    emu::g_blk->th[emu::g_cur].pending.push_back({s, g, !pred});
}
inline void cp_async_commit() {}
inline void cp_async_wait_all() {
    auto& pend = emu::g_blk->th[emu::g_cur].pending;
    for (const emu::Copy& c : pend) {
        if (c.fill)
            std::memset(c.dst, 0, 16);
        else
            std::memcpy(c.dst, c.src, 16);
    }
    pend.clear();
}

inline void st_u32(uint16_t* p, uint32_t v) {
    emu::check_global(p, 4, 4);
    std::memcpy(p, &v, 4);
}
inline uint4 ld_u128(const void* p) {
    emu::check_global(p, 16, 16);
    uint4 u;
    std::memcpy(&u, p, 16);
    return u;
}
inline void st_u128(void* p, uint4 v) {
    emu::check_global(p, 16, 16);
    std::memcpy(p, &v, 16);
}
inline float ld_f32(const float* p) {
    emu::check_global(p, 4, 4);
    return *p;
}
inline uint16_t ld_u16(const uint16_t* p) {
    emu::check_global(p, 2, 2);
    return *p;
}
inline uint16_t ld_u16_rw(const uint16_t* p) { return ld_u16(p); }
inline uint4 ld_u128_rw(const void* p) { return ld_u128(p); }
inline void st_u16(uint16_t* p, uint16_t v) {
    emu::check_global(p, 2, 2);
    *p = v;
}
inline uint32_t ld_idx(const uint32_t* p) {
    emu::check_global(p, 4, 4);
    return *p;
}
inline void st_f32(float* p, float v) {
    emu::check_global(p, 4, 4);
    *p = v;
}
inline void st_f64(double* p, double v) {
    emu::check_global(p, 8, 8);
    *p = v;
}

}  // namespace sgmi

namespace emu {
// Runs every block of a grid (x fastest), each with its own shared memory.
inline void launch(emu_dim3 grid, int threads, size_t smem, const std::function<void()>& body) {
    g_grid_dim = grid;
    ++g_policy_shift;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                g_block.x = x;
                g_block.y = y;
                g_block.z = z;
                run_block(body, threads, smem);
            }
}
}  // namespace emu
