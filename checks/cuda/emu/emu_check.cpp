// Runs the kernels of src/model/kernels/attention.cu on the CPU warp emulator (sgmi_emu.h) against
// f64 references: the index math of the tiling and of the mma/ldmatrix fragments, the causal
// mask, sequence tails, strided (fused qkv) inputs, huge logits, grouped-query heads, bf16
// inputs, the logit scale inside the softmax, the LM-head loss (f16, bf16, f32), bias+ReLU, and
// the rotary families' kernels (RoPE with and without the per-head norm, RMSNorm, SiLU·up)
// against straightforward CPU references.
// Build and run (no GPU, no CUDA toolkit needed):
//   g++ -O2 -std=c++20 -Wno-missing-field-initializers -DSGMI_EMULATE -Ichecks/cuda/emu checks/cuda/emu/emu_check.cpp -o /tmp/emu_check && /tmp/emu_check
#ifdef SGMI_KERNEL_FILE  // mutation tests point this at an altered copy
#include SGMI_KERNEL_FILE
#else
#include "../../../src/model/kernels/attention.cu"
#endif

#include <cstdio>
#include <string>
#include <type_traits>

static std::mt19937_64 rng(7);
static float uni(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng); }

static int failures = 0;

struct AttnCase {
    const char* name;
    int b, s, heads;
    bool fused;      // q, k, v as slices of one (b, s, (heads + 2·kv_heads)·hd) tensor
    float qk_range;  // q, k entries uniform in ±qk_range
    float q_scale;
    bool huge;
    bool offset = false;  // dims 0..3 of q and k = 200: logits ~1.6e5 for every pair, spread O(1)
    int kv_heads = 0;     // 0: as many as query heads
    float s_scale = 1.f;  // the logits' scale inside the softmax
};

template <typename E>
static uint16_t to_e(float f) {
    return E::from_f(f);
}
template <typename E>
static float from_e(uint16_t u) {
    return E::to_f(u);
}
template <typename E>
static const char* dtype_name() {
    return std::is_same_v<E, sgmi::BF16> ? "bf16" : "f16";
}

template <int HD, int W, typename E = sgmi::F16>
static void run_attention(const AttnCase& c) {
    const int hidden = c.heads * HD;
    const int kvh = c.kv_heads ? c.kv_heads : c.heads;
    const int kv_hidden = kvh * HD;
    const int group = c.heads / kvh;
    // separate tensors: q (b, s, hidden), k and v (b, s, kv_hidden); fused: one row per token
    const long long q_rs = c.fused ? hidden + 2LL * kv_hidden : hidden;
    const long long kv_rs = c.fused ? q_rs : kv_hidden;
    const long long q_bs = q_rs * c.s, kv_bs = kv_rs * c.s;
    const long long o_rs = hidden + 8;  // padded output rows: the padding must stay untouched
    const long long o_bs = o_rs * c.s;
    const size_t total = c.fused ? size_t(c.b) * q_bs : size_t(c.b) * (q_bs + 2 * kv_bs);
    std::vector<uint16_t> qkv(total);
    for (size_t i = 0; i < qkv.size(); ++i) qkv[i] = to_e<E>(uni(-1, 1));
    uint16_t* qm = qkv.data();
    uint16_t* km = c.fused ? qm + hidden : qm + size_t(c.b) * q_bs;
    uint16_t* vm = c.fused ? qm + hidden + kv_hidden : km + size_t(c.b) * kv_bs;
    const uint16_t *q = qm, *k = km, *v = vm;
    // q and k at the case's range (v stays in ±1)
    for (int bb = 0; bb < c.b; ++bb)
        for (int i = 0; i < c.s; ++i) {
            for (int j = 0; j < hidden; ++j) qm[bb * q_bs + i * q_rs + j] = to_e<E>(uni(-c.qk_range, c.qk_range));
            for (int j = 0; j < kv_hidden; ++j) km[bb * kv_bs + i * kv_rs + j] = to_e<E>(uni(-c.qk_range, c.qk_range));
        }
    // Offset case: q, k on a 1/8 grid, so every partial sum of q·k (≈1.6e5 ± 60, multiples of
    // 1/64) is exact in f32 whatever the summation order: the f64 reference is then exact for
    // the kernel too, and the tolerance stays 2e-3.
    auto quantize = [&](uint16_t* base, long long bs, long long rs, int width) {
        for (int bb = 0; bb < c.b; ++bb)
            for (int i = 0; i < c.s; ++i)
                for (int j = 0; j < width; ++j) {
                    uint16_t* e = base + bb * bs + i * rs + j;
                    *e = to_e<E>(std::round(from_e<E>(*e) * 8) / 8);
                }
    };
    if (c.offset) {
        quantize(qm, q_bs, q_rs, hidden);
        quantize(km, kv_bs, kv_rs, kv_hidden);
        for (int bb = 0; bb < c.b; ++bb)
            for (int i = 0; i < c.s; ++i) {
                for (int hh = 0; hh < c.heads; ++hh)
                    for (int d = 0; d < 4; ++d) qm[bb * q_bs + i * q_rs + hh * HD + d] = to_e<E>(200.f);
                for (int hh = 0; hh < kvh; ++hh)
                    for (int d = 0; d < 4; ++d) km[bb * kv_bs + i * kv_rs + hh * HD + d] = to_e<E>(200.f);
            }
    }
    std::vector<uint16_t> o(size_t(c.b) * o_bs, 0xABCD);
    emu::clear_globals();
    emu::register_global(qkv.data(), qkv.size() * 2);
    emu::register_global(o.data(), o.size() * 2);
    using C = sgmi::FlashCfg<HD, W>;
    const emu_dim3 grid{unsigned((c.s + C::BR - 1) / C::BR), unsigned(c.heads), unsigned(c.b)};
    // OPT's kernel (f16, equal heads, no logit scale) or the gqa kernel the rotary families use
    const bool grouped = !std::is_same_v<E, sgmi::F16> || c.kv_heads != 0 || c.s_scale != 1.f;
    emu::launch(grid, C::NT, C::SMEM_BYTES, [&] {
        if (grouped)
            sgmi::flash_fwd_body<HD, W, E, true>(q, k, v, o.data(), q_bs, q_rs, kv_bs, kv_rs, kv_bs, kv_rs, o_bs, o_rs, c.s, c.q_scale, group,
                                                 c.s_scale);
        else
            sgmi::flash_fwd_body<HD, W, E, false>(q, k, v, o.data(), q_bs, q_rs, kv_bs, kv_rs, kv_bs, kv_rs, o_bs, o_rs, c.s, c.q_scale, 1, 1.f);
    });
    double max_err = 0, sum_err = 0;
    long long n = 0, skipped_rows = 0, pad_bad = 0;
    std::vector<double> sc(c.s);
    for (int bb = 0; bb < c.b; ++bb)
        for (int hh = 0; hh < c.heads; ++hh)
            for (int i = 0; i < c.s; ++i) {
                const int hk = hh / group;  // transformers' repeat_kv: query heads hk·group .. in order
                float qs[HD];
                for (int d = 0; d < HD; ++d) qs[d] = from_e<E>(to_e<E>(from_e<E>(q[bb * q_bs + i * q_rs + hh * HD + d]) * c.q_scale));
                double mx = -INFINITY;
                for (int j = 0; j <= i; ++j) {
                    double a = 0;
                    for (int d = 0; d < HD; ++d) a += double(qs[d]) * from_e<E>(k[bb * kv_bs + j * kv_rs + hk * HD + d]);
                    sc[j] = a * c.s_scale;
                    mx = std::max(mx, sc[j]);
                }
                int near = 0;
                double l = 0;
                for (int j = 0; j <= i; ++j) {
                    near += (mx - sc[j] < 16.0);
                    sc[j] = std::exp(sc[j] - mx);
                    l += sc[j];
                }
                const bool ill = c.huge && near > 1;  // f32 rounding of logits ~1e5 decides
                skipped_rows += ill;
                for (int d = 0; d < HD; ++d) {
                    double ref = 0;
                    for (int j = 0; j <= i; ++j) ref += sc[j] * from_e<E>(v[bb * kv_bs + j * kv_rs + hk * HD + d]);
                    ref /= l;
                    const float got = from_e<E>(o[bb * o_bs + i * o_rs + hh * HD + d]);
                    if (!std::isfinite(got)) {
                        max_err = INFINITY;
                        continue;
                    }
                    if (ill) continue;
                    const double e = std::fabs(got - ref);
                    max_err = std::max(max_err, e);
                    sum_err += e;
                    ++n;
                }
            }
    for (int bb = 0; bb < c.b; ++bb)
        for (int i = 0; i < c.s; ++i)
            for (int j = hidden; j < o_rs; ++j) pad_bad += o[bb * o_bs + i * o_rs + j] != 0xABCD;
    // v in ±1, |o| ≤ 1: P rounded to the dtype (≤ 2^-11 relative for f16, 2^-8 for bf16, per
    // weight, partly cancelling) and the rounded output (≤ half an ulp of |o|).
    const double tol = std::is_same_v<E, sgmi::BF16> ? 8e-3 : 2e-3;
    const bool ok = max_err <= tol && pad_bad == 0 && (!c.huge || skipped_rows * 100 <= (long long)c.b * c.heads * c.s);
    failures += !ok;
    std::printf("%-4s attention %-4s %-3s %-22s hd=%3d warps=%d b=%d s=%4d heads=%d/%d%s: max|err| %.2e mean %.2e%s%s\n", ok ? "PASS" : "FAIL",
                dtype_name<E>(), grouped ? "gqa" : "opt", c.name, HD, W, c.b, c.s, c.heads, kvh, c.fused ? " fused-qkv" : "", max_err,
                n ? sum_err / n : 0.0,
                c.huge ? (" (near-tie rows skipped: " + std::to_string(skipped_rows) + ")").c_str() : "",
                pad_bad ? " OUTPUT PADDING WRITTEN" : "");
}

template <typename T, typename E = sgmi::F16>
static void run_nll(const char* name, int rows, int vocab, long long ld, int vec, std::vector<uint32_t> targets) {
    std::vector<T> logits(size_t(rows) * ld);
    for (auto& x : logits) {
        const float f = uni(-8, 12);
        if constexpr (sizeof(T) == 2)
            x = to_e<E>(f);
        else
            x = f;
    }
    auto val = [&](size_t i) -> double {
        if constexpr (sizeof(T) == 2)
            return from_e<E>(logits[i]);
        else
            return logits[i];
    };
    std::vector<float> out(rows, -1.f);
    emu::clear_globals();
    emu::register_global(logits.data(), logits.size() * sizeof(T));
    emu::register_global(targets.data(), targets.size() * 4);
    emu::register_global(out.data(), out.size() * 4);
    emu::launch({unsigned(rows), 1, 1}, sgmi::NLL_THREADS, 0,
                [&] { sgmi::nll_rows_body<T, E>(logits.data(), ld, vocab, targets.data(), out.data(), vec); });
    double max_rel = 0;
    bool ok = true;
    for (int r = 0; r < rows; ++r) {
        double mx = -INFINITY;
        for (int j = 0; j < vocab; ++j) mx = std::max(mx, val(size_t(r) * ld + j));
        double s = 0;
        for (int j = 0; j < vocab; ++j) s += std::exp(val(size_t(r) * ld + j) - mx);
        if (targets[r] >= uint32_t(vocab)) {
            ok = ok && std::isnan(out[r]);
            continue;
        }
        const double ref = mx + std::log(s) - val(size_t(r) * ld + targets[r]);
        max_rel = std::max(max_rel, std::fabs(out[r] - ref) / std::max(1.0, std::fabs(ref)));
    }
    ok = ok && max_rel < 1e-5;
    failures += !ok;
    std::printf("%-4s nll_rows %-28s rows=%d vocab=%d ld=%lld vec=%d: max rel err %.2e\n", ok ? "PASS" : "FAIL", name, rows, vocab, ld, vec, max_rel);
}

static void run_window_sums() {
    const int windows = 3, per = 700;
    std::vector<float> nll(windows * per);
    for (auto& x : nll) x = uni(0, 10);
    std::vector<double> out(windows, -1);
    emu::clear_globals();
    emu::register_global(nll.data(), nll.size() * 4);
    emu::register_global(out.data(), out.size() * 8);
    emu::launch({windows, 1, 1}, sgmi::SUM_THREADS, 0, [&] { sgmi::nll_window_sums_body(nll.data(), per, out.data()); });
    double max_rel = 0;
    for (int w = 0; w < windows; ++w) {
        double ref = 0;
        for (int i = 0; i < per; ++i) ref += nll[w * per + i];
        max_rel = std::max(max_rel, std::fabs(out[w] - ref) / ref);
    }
    const bool ok = max_rel < 1e-12;
    failures += !ok;
    std::printf("%-4s nll_window_sums windows=%d per=%d: max rel err %.2e\n", ok ? "PASS" : "FAIL", windows, per, max_rel);
}

static void run_bias_act(int relu) {
    const int rows = 7, cols = 48;
    std::vector<uint16_t> y(rows * cols), bias(cols);
    for (auto& x : y) x = emu::f2h(uni(-2, 2));
    for (auto& x : bias) x = emu::f2h(uni(-1, 1));
    const std::vector<uint16_t> y0 = y;
    emu::clear_globals();
    emu::register_global(y.data(), y.size() * 2);
    emu::register_global(bias.data(), bias.size() * 2);
    // a small grid so the grid-stride loop runs several times
    emu::launch({2, 1, 1}, 32, 0, [&] { sgmi::bias_act_body(y.data(), bias.data(), rows, cols, relu); });
    int bad = 0;
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) {
            float x = emu::h2f_(y0[r * cols + c]) + emu::h2f_(bias[c]);
            if (relu) x = std::max(x, 0.f);
            bad += emu::f2h(x) != y[r * cols + c] && !(x == 0 && emu::h2f_(y[r * cols + c]) == 0);
        }
    failures += bad != 0;
    std::printf("%-4s bias_act relu=%d rows=%d cols=%d: %d elements differ from f32 add + one rounding\n", bad ? "FAIL" : "PASS", relu, rows, cols, bad);
}


// f16/bf16 values' distance in units in the last place (same-sign bit patterns are ordered).
static int ulps(uint16_t a, uint16_t b) {
    const int ia = (a & 0x8000) ? -(a & 0x7fff) : a, ib = (b & 0x8000) ? -(b & 0x7fff) : b;
    return std::abs(ia - ib);
}

// The rotary prep of q or k in place: (b, s, heads·hd) rows at stride rs (≥ heads·hd: the
// padding must stay untouched), optional per-head RMSNorm, cos/sin tables of `max_seq` rows.
// Reference: the same f32 arithmetic and dtype roundings as transformers (each op of
// apply_rotary_pos_emb rounded; the norm's x·rsqrt rounded, then times the weight), with the
// norm's mean of squares in f64. Without the norm every element must be bit-equal; with it,
// at most 0.1% may differ, by at most 2 ulps (summation order). Also the error against exact
// f64 math (no intermediate rounding), bounded by a few ulps of the output.
template <typename E>
static void run_rope(const char* name, int b, int s, int heads, int hd, long long rs, bool norm, int max_seq) {
    const int half = hd / 2;
    const long long bs = rs * s;
    std::vector<uint16_t> x(size_t(b) * bs), cos_t(size_t(max_seq) * half), sin_t(size_t(max_seq) * half), w(hd);
    for (auto& e : x) e = to_e<E>(uni(-3, 3));
    for (auto& e : w) e = to_e<E>(uni(0.5f, 1.5f));
    std::vector<double> ang(size_t(max_seq) * half);
    for (int p = 0; p < max_seq; ++p)
        for (int j = 0; j < half; ++j) {
            const float inv = 1.f / std::pow(10000.f, float(2 * j) / float(hd));
            const float a = float(p) * inv;
            ang[size_t(p) * half + j] = a;
            cos_t[size_t(p) * half + j] = to_e<E>(std::cos(a));
            sin_t[size_t(p) * half + j] = to_e<E>(std::sin(a));
        }
    const std::vector<uint16_t> x0 = x;
    const float eps = 1e-6f;
    emu::clear_globals();
    for (auto* v : {&x, &cos_t, &sin_t, &w}) emu::register_global(v->data(), v->size() * 2);
    const long long items = (long long)b * s * heads;
    emu::launch({unsigned((items + sgmi::ROPE_WARPS - 1) / sgmi::ROPE_WARPS), 1, 1}, sgmi::ROPE_WARPS * 32, 0, [&] {
        sgmi::rope_body<E>(x.data(), bs, rs, b, s, heads, hd, cos_t.data(), sin_t.data(), norm ? w.data() : nullptr, eps);
    });
    auto r = [](float f) { return from_e<E>(to_e<E>(f)); };
    int worst = 0;
    long long differ = 0, pad_bad = 0;
    double exact_err = 0;  // in units of the dtype's epsilon times the value
    for (int bb = 0; bb < b; ++bb)
        for (int p = 0; p < s; ++p) {
            for (int h = 0; h < heads; ++h) {
                const size_t base = bb * bs + p * rs + size_t(h) * hd;
                std::vector<float> v(hd);
                std::vector<double> ve(hd);
                for (int d = 0; d < hd; ++d) v[d] = ve[d] = from_e<E>(x0[base + d]);
                if (norm) {
                    double ss = 0;
                    for (int d = 0; d < hd; ++d) ss += double(v[d]) * v[d];
                    const float rr = 1.f / std::sqrt(float(ss / hd) + eps);
                    const double re = 1.0 / std::sqrt(ss / hd + eps);
                    for (int d = 0; d < hd; ++d) {
                        v[d] = r(from_e<E>(w[d]) * r(v[d] * rr));
                        ve[d] = from_e<E>(w[d]) * ve[d] * re;
                    }
                }
                for (int j = 0; j < half; ++j) {
                    const size_t t = size_t(p) * half + j;
                    const float c = from_e<E>(cos_t[t]), sn = from_e<E>(sin_t[t]);
                    const float o1 = r(r(v[j] * c) - r(v[j + half] * sn));
                    const float o2 = r(r(v[j + half] * c) + r(v[j] * sn));
                    const uint16_t g1 = x[base + j], g2 = x[base + j + half];
                    const int u = std::max(ulps(g1, to_e<E>(o1)), ulps(g2, to_e<E>(o2)));
                    worst = std::max(worst, u);
                    differ += (g1 != to_e<E>(o1)) + (g2 != to_e<E>(o2));
                    const double e1 = ve[j] * std::cos(ang[t]) - ve[j + half] * std::sin(ang[t]);
                    const double e2 = ve[j + half] * std::cos(ang[t]) + ve[j] * std::sin(ang[t]);
                    const double scale = std::max({std::fabs(ve[j]), std::fabs(ve[j + half]), 1e-3});
                    exact_err = std::max({exact_err, std::fabs(from_e<E>(g1) - e1) / scale, std::fabs(from_e<E>(g2) - e2) / scale});
                }
            }
            for (long long j = (long long)heads * hd; j < rs; ++j) pad_bad += x[bb * bs + p * rs + j] != x0[bb * bs + p * rs + j];
        }
    // Against exact math: the cos/sin tables' rounding (half an ulp each), the products' and
    // the sum's (and the norm's two), relative to the pair's magnitude: ≤ ~4 ulps.
    const double eps_e = std::is_same_v<E, sgmi::BF16> ? 1.0 / 256 : 1.0 / 2048;
    // With the norm, the kernel's f32 mean of squares against the f64 one may flip a rounding
    // now and then: at most 0.1% of elements, by at most 2 ulps (a missing rounding step
    // changes about a quarter of them).
    const long long total = (long long)b * s * heads * hd;
    const bool ok = pad_bad == 0 && (norm ? differ * 1000 <= total && worst <= 2 : differ == 0) && exact_err <= 4 * eps_e;
    failures += !ok;
    std::printf("%-4s rope %-4s %-18s b=%d s=%d heads=%d hd=%d%s: %lld of %lld elements differ from the rounded reference (max %d ulp); "
                "vs exact f64 %.2f ulp of the pair's size%s\n",
                ok ? "PASS" : "FAIL", dtype_name<E>(), name, b, s, heads, hd, norm ? " +norm" : "", differ, (long long)b * s * heads * hd, worst,
                exact_err / eps_e, pad_bad ? " PADDING WRITTEN" : "");
}

// RMSNorm of rows × cols against transformers' order in f32 (mean of squares in f64): at most
// 0.1% of elements differ, by at most 2 ulps.
template <typename E>
static void run_rms_norm(int rows, int cols, int vec) {
    std::vector<uint16_t> x(size_t(rows) * cols), w(cols), out(size_t(rows) * cols, 0xABCD);
    for (auto& e : x) e = to_e<E>(uni(-4, 4));
    for (auto& e : w) e = to_e<E>(uni(-2, 2));
    const float eps = 1e-5f;
    emu::clear_globals();
    for (auto* v : {&x, &w, &out}) emu::register_global(v->data(), v->size() * 2);
    emu::launch({unsigned(rows), 1, 1}, sgmi::NORM_THREADS, 0, [&] { sgmi::rms_norm_body<E>(x.data(), w.data(), out.data(), cols, eps, vec); });
    auto r = [](float f) { return from_e<E>(to_e<E>(f)); };
    int worst = 0;
    long long differ = 0;
    for (int i = 0; i < rows; ++i) {
        double ss = 0;
        for (int j = 0; j < cols; ++j) ss += double(from_e<E>(x[size_t(i) * cols + j])) * from_e<E>(x[size_t(i) * cols + j]);
        const float rr = 1.f / std::sqrt(float(ss / cols) + eps);
        for (int j = 0; j < cols; ++j) {
            const uint16_t want = to_e<E>(from_e<E>(w[j]) * r(from_e<E>(x[size_t(i) * cols + j]) * rr));
            const uint16_t got = out[size_t(i) * cols + j];
            worst = std::max(worst, ulps(got, want));
            differ += got != want;
        }
    }
    const bool ok = differ * 1000 <= (long long)rows * cols && worst <= 2;  // as for the rotary norm
    failures += !ok;
    std::printf("%-4s rms_norm %-4s rows=%d cols=%d vec=%d: %lld of %lld differ from transformers' rounding (max %d ulp)\n", ok ? "PASS" : "FAIL",
                dtype_name<E>(), rows, cols, vec, differ, (long long)rows * cols, worst);
}

// gate = silu(gate) · up in place: exactly dt(dt(silu(g)) · u) with silu in f32.
template <typename E>
static void run_silu_mul(long long n, int vec) {
    std::vector<uint16_t> g(n), u(n);
    for (auto& e : g) e = to_e<E>(uni(-12, 12));
    for (auto& e : u) e = to_e<E>(uni(-3, 3));
    g[0] = to_e<E>(-100.f);  // exp(100) overflows f32's exp in the f32 formula: silu → -0
    const std::vector<uint16_t> g0 = g;
    emu::clear_globals();
    for (auto* v : {&g, &u}) emu::register_global(v->data(), v->size() * 2);
    emu::launch({2, 1, 1}, 64, 0, [&] { sgmi::silu_mul_body<E>(g.data(), u.data(), n, vec); });
    long long differ = 0;
    for (long long i = 0; i < n; ++i) {
        const float a = from_e<E>(g0[i]);
        const float si = from_e<E>(to_e<E>(a / (1.f + std::exp(-a))));
        differ += g[i] != to_e<E>(si * from_e<E>(u[i])) && !(from_e<E>(g[i]) == 0 && si * from_e<E>(u[i]) == 0);
    }
    const bool ok = differ == 0;
    failures += !ok;
    std::printf("%-4s silu_mul %-4s n=%lld vec=%d: %lld elements differ from dt(dt(silu(g))·u)\n", ok ? "PASS" : "FAIL", dtype_name<E>(), n, vec, differ);
}

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "quick";
    const float s64 = 0.125f, s80 = float(1.0 / std::sqrt(80.0)), s128 = float(1.0 / std::sqrt(128.0)), s32 = float(1.0 / std::sqrt(32.0));
    run_attention<64, 4>({"basic", 2, 100, 2, false, 1.f, s64, false});
    run_attention<64, 8>({"tail+2 q-blocks", 1, 200, 2, false, 1.f, s64, false});
    run_attention<80, 8>({"fused, tail", 1, 130, 3, true, 1.f, s80, false});
    run_attention<128, 4>({"tail", 1, 150, 1, false, 1.f, s128, false});
    run_attention<128, 8>({"fused, exact blocks", 1, 128, 2, true, 1.f, s128, false});
    run_attention<32, 8>({"one token", 2, 1, 2, false, 1.f, s32, false});
    run_attention<32, 4>({"s=17", 1, 17, 2, true, 1.f, s32, false});
    run_attention<64, 8>({"huge logits", 1, 160, 2, false, 200.f, 1.f, true});
    run_attention<128, 8>({"huge offset", 1, 200, 2, false, 1.f, 1.f, false, true});
    run_attention<64, 4>({"huge offset", 1, 130, 2, true, 1.f, 1.f, false, true});
    if (!quick) {
        run_attention<96, 4>({"s=65", 1, 65, 1, false, 1.f, float(1.0 / std::sqrt(96.0)), false});
        run_attention<80, 4>({"huge logits, fused", 1, 140, 2, true, 150.f, s80, true});
        run_attention<128, 8>({"two windows, long", 2, 300, 1, false, 1.f, s128, false});
    }
    // Grouped-query heads (kv_heads < heads: query head h reads K/V head h / group), the logit
    // scale inside the softmax (the rotary families), bf16 inputs.
    run_attention<64, 4>({"gqa 2", 2, 100, 4, false, 1.f, s64, false, false, 2});
    run_attention<128, 8>({"gqa 4, s-scale", 1, 150, 8, false, 1.f, 1.f, false, false, 2, s128});
    run_attention<32, 8>({"mqa, fused, s-scale", 1, 130, 4, true, 1.f, 1.f, false, false, 1, s32});
    run_attention<64, 8, sgmi::BF16>({"gqa 2, s-scale", 2, 140, 4, false, 1.f, 1.f, false, false, 2, s64});
    run_attention<128, 4, sgmi::BF16>({"gqa 4, fused, s-scale", 1, 100, 4, true, 1.f, 1.f, false, false, 1, s128});
    run_attention<32, 4, sgmi::BF16>({"q-scale", 1, 70, 2, false, 1.f, s32, false});
    run_attention<64, 8, sgmi::BF16>({"huge offset, gqa", 1, 130, 4, false, 1.f, 1.f, false, true, 2});
    if (!quick) {
        run_attention<80, 8, sgmi::BF16>({"huge logits, gqa", 1, 160, 4, false, 150.f, s80, true, false, 2});
        run_attention<96, 8, sgmi::BF16>({"gqa 3, s-scale", 1, 200, 6, false, 1.f, 1.f, false, false, 2, float(1.0 / std::sqrt(96.0))});
        run_attention<128, 8>({"gqa 8, fused", 1, 129, 8, true, 1.f, s128, false, false, 1});
    }
    run_nll<uint16_t>("f16 vec", 5, 1000, 1000, 1, {0, 999, 17, 500, 3});
    run_nll<uint16_t>("f16 scalar tail", 3, 1003, 1003, 0, {1002, 0, 77});
    run_nll<uint16_t>("f16 vec + tail, padded ld", 3, 1003, 1008, 1, {5, 1002, 1003});
    run_nll<uint16_t, sgmi::BF16>("bf16 vec", 4, 1000, 1000, 1, {0, 999, 17, 3});
    run_nll<uint16_t, sgmi::BF16>("bf16 vec + tail, padded ld", 3, 1003, 1008, 1, {5, 1002, 1003});
    run_nll<float>("f32 vec", 4, 1000, 1000, 1, {0, 999, 1, 250});
    run_nll<float>("f32 scalar", 2, 999, 999, 0, {998, 4});
    run_window_sums();
    run_bias_act(1);
    run_bias_act(0);
    run_rope<sgmi::F16>("q", 2, 37, 4, 64, 4 * 64, false, 64);
    run_rope<sgmi::BF16>("k, padded rows", 2, 37, 2, 128, 2 * 128 + 24, false, 40);
    run_rope<sgmi::BF16>("q, norm", 1, 19, 3, 128, 3 * 128, true, 19);
    run_rope<sgmi::F16>("k, norm, padded", 1, 21, 2, 64, 2 * 64 + 8, true, 32);
    run_rope<sgmi::BF16>("hd 32", 1, 11, 8, 32, 8 * 32, false, 16);
    run_rope<sgmi::BF16>("hd 256, norm", 1, 5, 2, 256, 2 * 256, true, 8);
    run_rope<sgmi::F16>("hd 80", 1, 9, 3, 80, 3 * 80, false, 9);
    run_rms_norm<sgmi::BF16>(5, 256, 1);
    run_rms_norm<sgmi::F16>(3, 4096, 1);
    run_rms_norm<sgmi::BF16>(4, 100, 0);
    run_rms_norm<sgmi::F16>(2, 200, 1);
    run_silu_mul<sgmi::BF16>(1000, 1);
    run_silu_mul<sgmi::F16>(1000, 1);
    run_silu_mul<sgmi::BF16>(1003, 0);
    run_silu_mul<sgmi::F16>(77, 0);
    std::printf("%s: %d failure(s); %lld context switches\n", failures ? "FAIL" : "PASS", failures, emu::g_switches);
    return failures ? 1 : 0;
}
