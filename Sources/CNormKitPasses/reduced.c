// Widening 16-bit storage (IEEE binary16 "Float16", and bfloat16) to Float and
// narrowing Float to it, round to nearest even, for the 16-bit entry points.
//
// Every path gives the same bits: the F16C instructions (vcvtph2ps/vcvtps2ph,
// chosen at run time where the CPU has them) and the baseline loops below,
// which the tests compare on every Float16 pattern and on a sweep of Float
// patterns. NaN stays NaN: quiet, its sign and its payload's top bits kept
// (what vcvtps2ph does). bfloat16 has no such instruction before AVX-512 BF16,
// whose conversions read subnormals as zero (PyTorch's does not), so it is the
// integer rounding, with AVX2 intrinsics where the CPU has AVX2 (chosen at run
// time) and the loops below vectorized for each clone elsewhere; where the CPU
// has AVX-512 BF16, vcvtne2ps2bf16 for each sixteen values without a subnormal.
#include "normkit_passes.h"
#include <string.h>

#pragma STDC FP_CONTRACT OFF
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "clones.h"

// F16C's instructions, chosen at run time, where the clones are.
#if defined(__x86_64__) && defined(__linux__) && !defined(NORMKIT_NO_CLONES)
#define NORMKIT_F16C 1
#endif

// A hot pass's first instruction on a 64-byte line (see normkit_scale_shift_f16_zmm).
#define NORMKIT_HOT __attribute__((aligned(64)))

static inline uint32_t normkit_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float normkit_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float normkit_f16_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1fu) {
        // Infinity, or a NaN made quiet.
        return normkit_from_bits(sign | 0x7f800000u | (m << 13) | (m ? 0x00400000u : 0));
    }
    if (e == 0) {
        // Zero or a subnormal: m * 2^-24, exact in Float.
        float v = (float)m * 5.9604644775390625e-8f;
        return normkit_from_bits(normkit_bits(v) | sign);
    }
    return normkit_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

static inline uint16_t normkit_float_to_f16(float f) {
    uint32_t u = normkit_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // 65520 and up round to infinity
    if (a >= 0x38800000u) {                                   // a normal Float16
        uint32_t r = a - 0x38000000u;
        r += 0x0fffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    uint32_t e = a >> 23;
    if (e < 102u) return (uint16_t)sign;                      // below half the least subnormal
    uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;                                // 14 ... 24
    uint32_t r = mant >> shift, rest = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (r & 1u))) r += 1u;
    return (uint16_t)(sign | r);
}

static inline uint16_t normkit_float_to_bf16(float f) {
    uint32_t u = normkit_bits(f);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t nan = (u >> 16) | 0x0040u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

static inline float normkit_bf16_to_float(uint16_t h) {
    return normkit_from_bits((uint32_t)h << 16);
}

// The streamed span of a write of n 16-bit values at p, [*first, *last): the
// whole 64-byte lines inside the write (nothing when p is not 2-byte aligned).
// The values before and after it are stored normally, so that no line takes
// both kinds of store. A line that does (a row's last half line streamed, then
// the next row's first values stored into the rest of it) leaves the
// write-combining buffer in pieces: bfloat16 BatchNorm's normalize pass over
// 4096x1024 rows starting 48 bytes into a line took 3.8-4.9x the time of
// storing its output when streamed 32-byte-aligned, 1.0-1.3x streamed on
// whole lines (C loop, one thread, AMD EPYC Zen 4, medians of 21 calls).
static inline void normkit_stream_span16(const uint16_t *p, long n, long *first, long *last) {
    unsigned long a = (unsigned long)p;
    long head = (long)((64 - (a & 63)) & 63) / 2;
    if ((a & 1) != 0 || head >= n) { *first = *last = 0; return; }
    *first = head;
    *last = head + (n - head) / 32 * 32;
}

#if defined(NORMKIT_F16C)
// Each test of the CPU runs once a process; then its answer is read.
#define NORMKIT_CPU_TEST(NAME, EXPR)                                                      \
    static int NAME(void) {                                                               \
        static int known = -1;                                                            \
        int value = __atomic_load_n(&known, __ATOMIC_RELAXED);                            \
        if (value < 0) {                                                                  \
            __builtin_cpu_init();                                                         \
            value = (EXPR) ? 1 : 0;                                                       \
            __atomic_store_n(&known, value, __ATOMIC_RELAXED);                            \
        }                                                                                 \
        return value;                                                                     \
    }
NORMKIT_CPU_TEST(normkit_avx2, __builtin_cpu_supports("avx2"))
// AVX-512 with the subsets the 512-bit forms use (VL, DQ, BW).
NORMKIT_CPU_TEST(normkit_avx512, __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
                 && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
// AVX-512 BF16 with the AVX-512 subsets its forms use (VL for 256-bit forms,
// DQ for vfpclassps).
NORMKIT_CPU_TEST(normkit_avx512bf16, __builtin_cpu_supports("avx512bf16") && normkit_avx512())

// bfloat16 with AVX2 intrinsics: what the compiler made of the scalar loops
// below (8 lanes, the NaN test as integer max and compare, a 16-byte store per
// 8 values) took 0.33 ns a value for BatchNorm's infer in L2 against 0.14 for
// Float. The same bits: the same integer rounding, the NaN test as an
// unordered compare (true exactly where (u & 0x7fffffff) > 0x7f800000), the
// NaN's quiet bit set before the shift ((u | 0x400000) >> 16 == (u >> 16) | 0x40).
__attribute__((target("avx2")))
static inline __m256 normkit_load_bf16x8(const uint16_t *h) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)h));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

// The same, its eight values also stored to `copy` when it is not NULL.
__attribute__((target("avx2")))
static inline __m256 normkit_load_copy_bf16x8(const uint16_t *h, uint16_t *copy) {
    __m128i v = _mm_loadu_si128((const __m128i *)h);
    if (copy) _mm_storeu_si128((__m128i *)copy, v);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

// Eight values rounded to bfloat16, each in the low half of its 32-bit lane.
__attribute__((target("avx2")))
static inline __m256i normkit_round_bf16x8(__m256 v) {
    __m256i u = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i t = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb);
    __m256i q = _mm256_or_si256(u, _mm256_set1_epi32(0x400000));
    __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    __m256 r = _mm256_blendv_ps(_mm256_castsi256_ps(t), _mm256_castsi256_ps(q), nan);
    return _mm256_srli_epi32(_mm256_castps_si256(r), 16);
}

// Sixteen values (lo: the first eight) rounded to bfloat16, in order.
__attribute__((target("avx2")))
static inline __m256i normkit_narrow_bf16x16(__m256 lo, __m256 hi) {
    __m256i packed = _mm256_packus_epi32(normkit_round_bf16x8(lo), normkit_round_bf16x8(hi));
    return _mm256_permute4x64_epi64(packed, 0xD8);
}



// AVX-512 BF16's vcvtne2ps2bf16 rounds sixteen values in one instruction,
// to nearest even with the NaN's quiet bit set, as above, but reads subnormal
// inputs as zero: sixteen values with a subnormal among them (vfpclassps,
// category 0x20) take the integer rounding instead. A normal input never
// rounds to a subnormal bfloat16 (the exponent is kept), so the flush of
// subnormal results never applies.
#define NORMKIT_AVX512BF16 "avx2,avx512f,avx512vl,avx512dq,avx512bw,avx512bf16"
__attribute__((target(NORMKIT_AVX512BF16)))
static inline __m256i normkit_narrow_bf16x16_512(__m256 lo, __m256 hi) {
    if ((_mm256_fpclass_ps_mask(lo, 0x20) | _mm256_fpclass_ps_mask(hi, 0x20)) != 0)
        return normkit_narrow_bf16x16(lo, hi);
    return (__m256i)_mm256_cvtne2ps_pbh(hi, lo);
}

// bfloat16's sixteen values rounded: vcvtneps2bf16, or the integer rounding of
// the two halves when one is subnormal (normkit_narrow_bf16x16_512's rule).
__attribute__((target(NORMKIT_AVX512BF16)))
static inline __m256i normkit_narrow_bf16x16_zmm(__m512 v) {
    if (_mm512_fpclass_ps_mask(v, 0x20))
        return normkit_narrow_bf16x16(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    return (__m256i)_mm512_cvtneps_pbh(v);
}

// Writes n values to the bfloat16 y: sixteen at a time, EXPR (an __m256 of
// the eight values from j) evaluated at j and j + 8 before NARROW rounds them
// for the store, so y may be a buffer EXPR reads; SCALAR (a float at j) for
// the rest. Streaming stores on the whole lines when `streaming`
// (normkit_stream_span16).
#define NORMKIT_BF16_SIXTEEN(NARROW, y, EXPR, STORE)                                      \
    do {                                                                              \
        long j0 = j;                                                                  \
        __m256 lo = (EXPR);                                                           \
        j = j0 + 8;                                                                   \
        __m256 hi = (EXPR);                                                           \
        j = j0;                                                                       \
        STORE((__m256i *)((y) + j), NARROW(lo, hi));                                  \
    } while (0)
#define NORMKIT_BF16_WRITE_WITH(NARROW, y, n, streaming, EXPR, SCALAR)                  \
    long j = 0, nk_first = 0, nk_last = 0;                                            \
    if (streaming) normkit_stream_span16((y), (n), &nk_first, &nk_last);              \
    for (; j + 16 <= nk_first; j += 16) NORMKIT_BF16_SIXTEEN(NARROW, y, EXPR, _mm256_storeu_si256); \
    for (; j < nk_first; j++) (y)[j] = normkit_float_to_bf16(SCALAR);                 \
    for (; j < nk_last; j += 16) NORMKIT_BF16_SIXTEEN(NARROW, y, EXPR, _mm256_stream_si256); \
    for (; j + 16 <= (n); j += 16) NORMKIT_BF16_SIXTEEN(NARROW, y, EXPR, _mm256_storeu_si256); \
    for (; j < (n); j++) (y)[j] = normkit_float_to_bf16(SCALAR);
#define NORMKIT_BF16_WRITE(y, n, streaming, EXPR, SCALAR)                                \
    NORMKIT_BF16_WRITE_WITH(normkit_narrow_bf16x16, y, n, streaming, EXPR, SCALAR)
#define NORMKIT_BF16_WRITE_512(y, n, streaming, EXPR, SCALAR)                            \
    NORMKIT_BF16_WRITE_WITH(normkit_narrow_bf16x16_512, y, n, streaming, EXPR, SCALAR)
#endif

static inline float normkit_load_copy_bf16_one(const uint16_t *x, uint16_t *copy, long j) {
    if (copy) copy[j] = x[j];
    return normkit_bf16_to_float(x[j]);
}

static inline float normkit_epilogue_bf16_one(float v, const uint16_t *r, unsigned char *mask,
                                              long j, int relu) {
    if (r) v = v + normkit_bf16_to_float(r[j]);
    if (!relu) return v;
    if (mask) mask[j] = v > 0;
    return (v > 0 || v != v) ? v : 0.0f;
}

void normkit_widen_f16_baseline(const uint16_t *h, float *f, long n) {
    for (long j = 0; j < n; j++) f[j] = normkit_f16_to_float(h[j]);
}

void normkit_narrow_f16_baseline(const float *f, uint16_t *h, long n) {
    for (long j = 0; j < n; j++) h[j] = normkit_float_to_f16(f[j]);
}

#if defined(NORMKIT_F16C)
NORMKIT_CPU_TEST(normkit_f16c, __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx"))

// One form per caller below (copy NULL or not), so that the loop tests nothing.
__attribute__((target("avx,f16c")))
static inline __attribute__((always_inline)) void normkit_widen_f16_form(const uint16_t *h,
                                                                        float *f,
                                                                        uint16_t *copy,
                                                                        long n) {
    long j = 0;
    for (; j + 32 <= n; j += 32) {
        __builtin_prefetch(h + j + n, 0, 1);  // as in normkit_widen_bf16_loop
        for (long k = j; k < j + 32; k += 8) {
            __m128i v = _mm_loadu_si128((const __m128i *)(h + k));
            if (copy) _mm_storeu_si128((__m128i *)(copy + k), v);
            _mm256_storeu_ps(f + k, _mm256_cvtph_ps(v));
        }
    }
    for (; j + 8 <= n; j += 8) {
        __m128i v = _mm_loadu_si128((const __m128i *)(h + j));
        if (copy) _mm_storeu_si128((__m128i *)(copy + j), v);
        _mm256_storeu_ps(f + j, _mm256_cvtph_ps(v));
    }
    for (; j < n; j++) {
        if (copy) copy[j] = h[j];
        f[j] = normkit_f16_to_float(h[j]);
    }
}

__attribute__((target("avx,f16c")))
NORMKIT_HOT static void normkit_widen_f16_f16c(const uint16_t *h, float *f, uint16_t *copy, long n) {
    if (copy) normkit_widen_f16_form(h, f, copy, n);
    else normkit_widen_f16_form(h, f, 0, n);
}

__attribute__((target("avx,f16c")))
static void normkit_narrow_f16_f16c(const float *f, uint16_t *h, long n, int streaming) {
    long j = 0, first = 0, last = 0;
    if (streaming) normkit_stream_span16(h, n, &first, &last);
    for (; j + 8 <= first; j += 8) {
        __m128i v = _mm256_cvtps_ph(_mm256_loadu_ps(f + j), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(h + j), v);
    }
    for (; j < first; j++) h[j] = normkit_float_to_f16(f[j]);
    for (; j < last; j += 8) {
        __m128i v = _mm256_cvtps_ph(_mm256_loadu_ps(f + j), _MM_FROUND_TO_NEAREST_INT);
        _mm_stream_si128((__m128i *)(h + j), v);
    }
    for (; j + 8 <= n; j += 8) {
        __m128i v = _mm256_cvtps_ph(_mm256_loadu_ps(f + j), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(h + j), v);
    }
    for (; j < n; j++) h[j] = normkit_float_to_f16(f[j]);
}
#endif

// The 16-bit values to `copy` as well (a training forward's cache), with
// streaming stores on its whole lines when `streaming` (normkit_stream_span16).
static void normkit_copy16(const uint16_t *h, uint16_t *copy, long n, int streaming) {
    long j = 0;
#if defined(__x86_64__)
    long first = 0, last = 0;
    if (streaming) normkit_stream_span16(copy, n, &first, &last);
    if (first > 0) memcpy(copy, h, (size_t)first * 2);
    for (j = first; j < last; j += 8) {
        __m128i v;
        memcpy(&v, h + j, 16);
        _mm_stream_si128((__m128i *)(copy + j), v);
    }
#else
    (void)streaming;
#endif
    if (j < n) memcpy(copy + j, h + j, (size_t)(n - j) * 2);
}

// The copy (a training forward's cache) is made in the widening loop from the
// same loads, unless it is streamed (normkit_copy16): a separate copy re-read
// each unit from L2 and took 16% of a float16 BatchNorm training forward
// (4096x1024, one thread).
void normkit_widen_f16(const uint16_t *h, float *f, uint16_t *copy, long n, int streaming) {
#if defined(NORMKIT_F16C)
    if (normkit_f16c()) {
        normkit_widen_f16_f16c(h, f, streaming ? 0 : copy, n);
        if (copy && streaming) normkit_copy16(h, copy, n, streaming);
        return;
    }
#endif
    normkit_widen_f16_baseline(h, f, n);
    if (copy) normkit_copy16(h, copy, n, streaming);
}

void normkit_narrow_f16(const float *f, uint16_t *h, long n, int streaming) {
#if defined(NORMKIT_F16C)
    if (normkit_f16c()) { normkit_narrow_f16_f16c(f, h, n, streaming); return; }
#endif
    (void)streaming;
    normkit_narrow_f16_baseline(f, h, n);
}

// A cache line at a time, asking for the line n values ahead: the next
// block's input, on its way while the caller works on this one; h copied to
// `copy` from the same loads when copying. Asked for into L2 (prefetcht2), not
// L1: the L1 request for a whole block at once made the 16-bit row passes wait
// on memory (LayerNorm's and RMSNorm's forwards and `infer` at 32768x1024 took
// 0.75-0.85 of their time with the L2 request, their backwards 0.8-0.9;
// normbench, AMD EPYC Zen 4). The residual sums ask the same way.
static inline __attribute__((always_inline)) void normkit_widen_bf16_form(
        const uint16_t *restrict in, uint32_t *restrict out, uint16_t *restrict copy, long n,
        int copying) {
    long j = 0;
    for (; j + 32 <= n; j += 32) {
        __builtin_prefetch(in + j + n, 0, 1);
        for (long k = j; k < j + 32; k++) {
            if (copying) copy[k] = in[k];
            out[k] = (uint32_t)in[k] << 16;
        }
    }
    for (; j < n; j++) {
        if (copying) copy[j] = in[j];
        out[j] = (uint32_t)in[j] << 16;
    }
}

void normkit_widen_bf16_loop(const uint16_t *h, float *f, uint16_t *copy, long n);
NORMKIT_CLONES void normkit_widen_bf16_loop(const uint16_t *h, float *f, uint16_t *copy, long n) {
    if (copy) normkit_widen_bf16_form(h, (uint32_t *)f, copy, n, 1);
    else normkit_widen_bf16_form(h, (uint32_t *)f, 0, n, 0);
}

// The copy from the same loads unless it is streamed, as in normkit_widen_f16.
void normkit_widen_bf16(const uint16_t *h, float *f, uint16_t *copy, long n, int streaming) {
    normkit_widen_bf16_loop(h, f, streaming ? 0 : copy, n);
    if (copy && streaming) normkit_copy16(h, copy, n, streaming);
}

#if defined(NORMKIT_F16C)
// normkit_narrow_bf16's and normkit_scale_shift_bf16's vector forms, for
// AVX2 and for AVX-512 BF16.
#define NORMKIT_BF16_PLAIN_PASSES(P, TARGET, WRITE)                                       \
    __attribute__((target(TARGET)))                                                       \
    static void normkit_narrow_bf16_##P(const float *f, uint16_t *h, long n, int streaming) { \
        WRITE(h, n, streaming, _mm256_loadu_ps(f + j), f[j])                              \
    }                                                                                     \
    __attribute__((target(TARGET)))                                                       \
    static void normkit_scale_shift_bf16_##P(const float *c, uint16_t *y, long n, float s, \
                                             const float *g, const float *b, int streaming) { \
        __m256 vs = _mm256_set1_ps(s);                                                    \
        WRITE(y, n, streaming,                                                            \
            _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(c + j), vs),        \
                                        _mm256_loadu_ps(g + j)),                          \
                          _mm256_loadu_ps(b + j)),                                        \
            c[j] * s * g[j] + b[j])                                                       \
    }
NORMKIT_BF16_PLAIN_PASSES(avx2, "avx2", NORMKIT_BF16_WRITE)
NORMKIT_BF16_PLAIN_PASSES(avx512, NORMKIT_AVX512BF16, NORMKIT_BF16_WRITE_512)
#undef NORMKIT_BF16_PLAIN_PASSES
#endif

NORMKIT_CLONES void normkit_narrow_bf16(const float *f, uint16_t *h, long n, int streaming) {
#if defined(NORMKIT_F16C)
    if (normkit_avx512bf16()) { normkit_narrow_bf16_avx512(f, h, n, streaming); return; }
    if (normkit_avx2()) { normkit_narrow_bf16_avx2(f, h, n, streaming); return; }
#endif
    const uint32_t *restrict in = (const uint32_t *)f;
    uint16_t *restrict out = h;
    (void)streaming;
    for (long j = 0; j < n; j++) {
        uint32_t u = in[j];
        uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        uint32_t nan = (u >> 16) | 0x0040u;
        out[j] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
    }
}

void normkit_narrow_bf16_baseline(const float *f, uint16_t *h, long n) {
    for (long j = 0; j < n; j++) h[j] = normkit_float_to_bf16(f[j]);
}

// y[j] = narrow(c[j] * s * g[j] + b[j]): the Float scale-and-shift of
// normkit_scale_shift_f, each value rounded once to 16 bits as it is written
// (LayerNorm's and RMSNorm's 16-bit output, one row at a time).
#if defined(NORMKIT_F16C)
// c[k] * s * g[k] + b[k] for k < 8 (vs holds s), normkit_scale_shift_f's
// expression, rounded to float16.
__attribute__((target("avx,f16c")))
static inline __m128i normkit_scale_shift_f16x8(const float *c, const float *g, const float *b,
                                                __m256 vs) {
    __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(c), vs),
                                           _mm256_loadu_ps(g)),
                             _mm256_loadu_ps(b));
    return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
}

__attribute__((target("avx,f16c")))
NORMKIT_HOT static void normkit_scale_shift_f16_f16c(const float *c, uint16_t *y, long n, float s,
                                         const float *g, const float *b, int streaming) {
    long j = 0, first = 0, last = 0;
    __m256 vs = _mm256_set1_ps(s);
    if (streaming) normkit_stream_span16(y, n, &first, &last);
    for (; j + 8 <= first; j += 8)
        _mm_storeu_si128((__m128i *)(y + j), normkit_scale_shift_f16x8(c + j, g + j, b + j, vs));
    for (; j < first; j++) y[j] = normkit_float_to_f16(c[j] * s * g[j] + b[j]);
    for (; j < last; j += 8)
        _mm_stream_si128((__m128i *)(y + j), normkit_scale_shift_f16x8(c + j, g + j, b + j, vs));
    for (; j + 8 <= n; j += 8)
        _mm_storeu_si128((__m128i *)(y + j), normkit_scale_shift_f16x8(c + j, g + j, b + j, vs));
    for (; j < n; j++) y[j] = normkit_float_to_f16(c[j] * s * g[j] + b[j]);
}

// The 512-bit scale-and-shift loop of float16 and bfloat16: sixteen values
// of c·s·g + b a step, rounded by NARROW (a __m512 to sixteen 16-bit values);
// leaves j at the first value it did not write.
#define NORMKIT_SCALE_SHIFT_ZMM_LOOP(NARROW)                                              \
    long j = 0;                                                                           \
    __m512 vs = _mm512_set1_ps(s);                                                        \
    for (; j + 16 <= n; j += 16) {                                                        \
        __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(c + j), vs), \
                                               _mm512_loadu_ps(g + j)),                   \
                                 _mm512_loadu_ps(b + j));                                 \
        _mm256_storeu_si256((__m256i *)(y + j), NARROW(v));                               \
    }
#define NORMKIT_NARROW_F16_ZMM(v) _mm512_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT)

// The stored scale-and-shift sixteen values a step with AVX-512F's
// conversion, the tail by the F16C form: the same bits (each value the same
// Float expression, rounded by vcvtps2ph). Its 512-bit loads of gamma and
// beta want whole lines (the row pass's spread copies): 16 bytes off a line,
// a C loop over a row of 1024 in L1 took 81 ns against 58 on lines, and 77
// for the F16C form. Where the output streams the F16C form stays (this one
// took 1.1-1.6x its time there, normbench at 32768x1024, AMD EPYC Zen 4).
// NORMKIT_HOT: the three float16 row passes start on a line, so that their
// loops sit where they were measured whatever the code before them: the same
// C code, moved 464 bytes by an unrelated change, took 1.10-1.17x its time in
// RMSNorm's and LayerNorm's float16 infer at 32768x1024.
__attribute__((target("avx,avx2,f16c,avx512f,avx512vl")))
NORMKIT_HOT static void normkit_scale_shift_f16_zmm(const float *c, uint16_t *y, long n, float s,
                                        const float *g, const float *b) {
    NORMKIT_SCALE_SHIFT_ZMM_LOOP(NORMKIT_NARROW_F16_ZMM)
    normkit_scale_shift_f16_f16c(c + j, y + j, n - j, s, g + j, b + j, 0);
}
#endif

void normkit_scale_shift_f16(const float *c, uint16_t *y, long n, float s, const float *g,
                             const float *b, int streaming) {
#if defined(NORMKIT_F16C)
    if (!streaming && normkit_f16c() && normkit_avx512()) {
        normkit_scale_shift_f16_zmm(c, y, n, s, g, b);
        return;
    }
    if (normkit_f16c()) { normkit_scale_shift_f16_f16c(c, y, n, s, g, b, streaming); return; }
#endif
    (void)streaming;
    for (long j = 0; j < n; j++) y[j] = normkit_float_to_f16(c[j] * s * g[j] + b[j]);
}

#if defined(NORMKIT_F16C)
// bfloat16's stored scale-and-shift as float16's above, sixteen values in one
// 512-bit register, rounded by normkit_narrow_bf16x16_zmm: the same bits as
// the 256-bit pairs (each lane the same Float expression and rounding rule),
// in half the instructions; the tail by the pairs' form. LayerNorm's bfloat16
// infer at 4096x1024, one thread, Intel Xeon with AVX-512 BF16: the pairs
// took 46% of it (perf), twice float16's share.
__attribute__((target(NORMKIT_AVX512BF16)))
NORMKIT_HOT static void normkit_scale_shift_bf16_zmm(const float *c, uint16_t *y, long n, float s,
                                                     const float *g, const float *b) {
    NORMKIT_SCALE_SHIFT_ZMM_LOOP(normkit_narrow_bf16x16_zmm)
    normkit_scale_shift_bf16_avx512(c + j, y + j, n - j, s, g + j, b + j, 0);
}
#endif

NORMKIT_CLONES void normkit_scale_shift_bf16(const float *c, uint16_t *y, long n, float s,
                                             const float *g, const float *b, int streaming) {
#if defined(NORMKIT_F16C)
    if (!streaming && normkit_avx512bf16()) {
        normkit_scale_shift_bf16_zmm(c, y, n, s, g, b);
        return;
    }
    if (normkit_avx512bf16()) { normkit_scale_shift_bf16_avx512(c, y, n, s, g, b, streaming); return; }
    if (normkit_avx2()) { normkit_scale_shift_bf16_avx2(c, y, n, s, g, b, streaming); return; }
#endif
    const float *restrict cc = c, *restrict gg = g, *restrict bb = b;
    uint16_t *restrict out = y;
    (void)streaming;
    for (long j = 0; j < n; j++) {
        float v = cc[j] * s * gg[j] + bb[j];
        uint32_t u;
        memcpy(&u, &v, 4);
        uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        uint32_t nan = (u >> 16) | 0x0040u;
        out[j] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
    }
}

// BatchNorm's column passes read and written in 16 bits: the Float
// expressions of normkit_normalize_columns_f and normkit_combine_columns_f on
// the widened values, in the same order (no contraction), each result rounded
// once to 16 bits as it is written. One pass over memory where widening into
// Float scratch, the Float pass and narrowing would make three.

#if defined(NORMKIT_F16C)
__attribute__((target("avx,f16c")))
static inline __m256 normkit_load_f16x8(const uint16_t *h) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

// The same, its eight values also stored to `copy` when it is not NULL.
__attribute__((target("avx,f16c")))
static inline __m256 normkit_load_copy_f16x8(const uint16_t *h, uint16_t *copy) {
    __m128i v = _mm_loadu_si128((const __m128i *)h);
    if (copy) _mm_storeu_si128((__m128i *)copy, v);
    return _mm256_cvtph_ps(v);
}

// The vector loop of `EXPR` (an __m256 of lanes j..j+7) into y, streamed on
// its whole lines when `streaming` (normkit_stream_span16); `SCALAR` (a float
// of element j) for the values outside groups of eight.
#define NORMKIT_F16_WRITE(y, n, streaming, EXPR, SCALAR)                                 \
    long j = 0, nk_first = 0, nk_last = 0;                                            \
    if (streaming) normkit_stream_span16((y), (n), &nk_first, &nk_last);              \
    for (; j + 8 <= nk_first; j += 8)                                                 \
        _mm_storeu_si128((__m128i *)((y) + j),                                        \
                         _mm256_cvtps_ph(EXPR, _MM_FROUND_TO_NEAREST_INT));           \
    for (; j < nk_first; j++) (y)[j] = normkit_float_to_f16(SCALAR);                  \
    for (; j < nk_last; j += 8)                                                       \
        _mm_stream_si128((__m128i *)((y) + j),                                        \
                         _mm256_cvtps_ph(EXPR, _MM_FROUND_TO_NEAREST_INT));           \
    for (; j + 8 <= (n); j += 8)                                                      \
        _mm_storeu_si128((__m128i *)((y) + j),                                        \
                         _mm256_cvtps_ph(EXPR, _MM_FROUND_TO_NEAREST_INT));           \
    for (; j < (n); j++) (y)[j] = normkit_float_to_f16(SCALAR);

#endif

static inline float normkit_epilogue_f16_one(float v, const uint16_t *r, unsigned char *mask,
                                             long j, int relu) {
    if (r) v = v + normkit_f16_to_float(r[j]);
    if (!relu) return v;
    if (mask) mask[j] = v > 0;
    return (v > 0 || v != v) ? v : 0.0f;
}

static inline float normkit_load_copy_f16_one(const uint16_t *x, uint16_t *copy, long j) {
    if (copy) copy[j] = x[j];
    return normkit_f16_to_float(x[j]);
}

static inline float normkit_masked_f16_one(const uint16_t *dy, const unsigned char *mask, long j) {
    float g = normkit_f16_to_float(dy[j]);
    return (!mask || mask[j]) ? g : 0.0f;
}

static inline float normkit_masked_bf16_one(const uint16_t *dy, const unsigned char *mask,
                                            long j) {
    float g = normkit_bf16_to_float(dy[j]);
    return (!mask || mask[j]) ? g : 0.0f;
}

// LayerNorm's dx at j in Float, normkit_combine_f's expression and order:
// s·(g·dy - a - (x - m)·s·b), plus the residual form's sum gradient.
static inline float normkit_combine_row_one(const float *dy, const float *x, const float *sum,
                                            long j, float m, float s, float a, float b,
                                            const float *g) {
    float t = s * (g[j] * dy[j] - a - (x[j] - m) * s * b);
    return sum ? t + sum[j] : t;
}

#if defined(NORMKIT_F16C)
__attribute__((target("avx")))
static inline __m256 normkit_add_sum_x8(__m256 v, const float *sum) {
    return sum ? _mm256_add_ps(v, _mm256_loadu_ps(sum)) : v;
}
#endif

#if defined(NORMKIT_F16C)
// The vector forms of the passes that read or write 16 bits with a Float
// expression between, written once for both types: P is f16 (F16C, eight
// values a store) or bf16 (AVX2, sixteen), TARGET its instructions, WRITE its
// store macro; normkit_load_P x8 / normkit_load_copy_P x8 load eight values
// (and copy them), normkit_*_P_one give one value. Each form's callers pass
// NULL or 0 for what it lacks, so that its loop tests none of them; each
// group a store writes is read first, so x (or r, or dy) may be the output.
//
// The epilogue on v (eight lanes): v + widen(r) when r, then relu(v) =
// v > 0 || v is NaN ? v : +0 when relu, recording mask = v > 0 (bytes 0 and 1)
// when mask: the Float epilogue's expressions and order
// (normkit_normalize_columns_epilogue_f). dy masked: +0 where mask[j] is 0
// (the ReLU's gradient, NaN kept).
// The forms are named by P and use the storage S's loads and scalar helpers,
// written by WRITE: float16 with F16C, bfloat16 with AVX2, and bfloat16 with
// AVX-512 BF16's narrowing (bf16_512; its arithmetic is the AVX2 form's).
#define NORMKIT_REDUCED_VECTOR_PASSES(P, S, TARGET, WRITE)                                \
    __attribute__((target(TARGET)))                                                       \
    static inline __m256 normkit_epilogue_##P##x8(__m256 v, const uint16_t *r,            \
                                                  unsigned char *mask, int relu) {        \
        if (r) v = _mm256_add_ps(v, normkit_load_##S##x8(r));                             \
        if (!relu) return v;                                                              \
        __m256 positive = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ);              \
        if (mask) {                                                                       \
            __m128i words = _mm_packs_epi32(                                              \
                _mm_castps_si128(_mm256_castps256_ps128(positive)),                       \
                _mm_castps_si128(_mm256_extractf128_ps(positive, 1)));                    \
            __m128i bytes = _mm_and_si128(_mm_packs_epi16(words, words), _mm_set1_epi8(1)); \
            _mm_storel_epi64((__m128i *)mask, bytes);                                     \
        }                                                                                 \
        return _mm256_and_ps(v, _mm256_or_ps(positive, _mm256_cmp_ps(v, v, _CMP_UNORD_Q))); \
    }                                                                                     \
    __attribute__((target(TARGET)))                                                       \
    static inline __m256 normkit_masked_##P##x8(const uint16_t *dy,                       \
                                                const unsigned char *mask) {              \
        __m256 g = normkit_load_##S##x8(dy);                                              \
        if (!mask) return g;                                                              \
        __m128i zero = _mm_cmpeq_epi8(_mm_loadl_epi64((const __m128i *)mask),             \
                                      _mm_setzero_si128());                               \
        __m128i words = _mm_unpacklo_epi8(zero, zero);                                    \
        __m128i low = _mm_unpacklo_epi16(words, words);                                   \
        __m128i high = _mm_unpackhi_epi16(words, words);                                  \
        __m256i drop = _mm256_insertf128_si256(_mm256_castsi128_si256(low), high, 1);     \
        return _mm256_andnot_ps(_mm256_castsi256_ps(drop), g);                            \
    }                                                                                     \
    __attribute__((target(TARGET)))                                                       \
    static inline __attribute__((always_inline)) void normkit_normalize_columns_##P##_form( \
            const uint16_t *x, uint16_t *y, long n, const float *mean, const float *scale, \
            const float *shift, const uint16_t *r, unsigned char *mask, int relu,         \
            uint16_t *copy, int streaming) {                                              \
        WRITE(y, n, streaming,                                                            \
            normkit_epilogue_##P##x8(                                                     \
                _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(                                \
                                  normkit_load_copy_##S##x8(x + j, copy ? copy + j : 0),  \
                                  _mm256_loadu_ps(mean + j)),                             \
                              _mm256_loadu_ps(scale + j)),                                \
                              _mm256_loadu_ps(shift + j)),                                \
                r ? r + j : 0, mask ? mask + j : 0, relu),                                \
            normkit_epilogue_##S##_one((normkit_load_copy_##S##_one(x, copy, j) - mean[j]) \
                                           * scale[j] + shift[j], r, mask, j, relu))      \
    }                                                                                     \
    __attribute__((target(TARGET)))                                                       \
    static inline __attribute__((always_inline)) void normkit_normalize_columns_##P##_copy( \
            const uint16_t *x, uint16_t *y, long n, const float *mean, const float *scale, \
            const float *shift, const uint16_t *r, unsigned char *mask, int relu,         \
            uint16_t *copy, int streaming) {                                              \
        if (copy) normkit_normalize_columns_##P##_form(x, y, n, mean, scale, shift, r, mask, \
                                                       relu, copy, streaming);            \
        else normkit_normalize_columns_##P##_form(x, y, n, mean, scale, shift, r, mask,   \
                                                  relu, 0, streaming);                    \
    }                                                                                     \
    __attribute__((target(TARGET)))                                                       \
    static void normkit_normalize_columns_##P##_vector(                                   \
            const uint16_t *x, uint16_t *y, long n, const float *mean, const float *scale, \
            const float *shift, const uint16_t *r, unsigned char *mask, int relu,         \
            uint16_t *copy, int streaming) {                                              \
        if (r && relu && mask)                                                            \
            normkit_normalize_columns_##P##_copy(x, y, n, mean, scale, shift, r, mask, 1, \
                                                 copy, streaming);                        \
        else if (r && relu)                                                               \
            normkit_normalize_columns_##P##_copy(x, y, n, mean, scale, shift, r, 0, 1,    \
                                                 copy, streaming);                        \
        else if (r)                                                                       \
            normkit_normalize_columns_##P##_copy(x, y, n, mean, scale, shift, r, 0, 0,    \
                                                 copy, streaming);                        \
        else if (relu && mask)                                                            \
            normkit_normalize_columns_##P##_copy(x, y, n, mean, scale, shift, 0, mask, 1, \
                                                 copy, streaming);                        \
        else if (relu)                                                                    \
            normkit_normalize_columns_##P##_copy(x, y, n, mean, scale, shift, 0, 0, 1,    \
                                                 copy, streaming);                        \
        else                                                                              \
            normkit_normalize_columns_##P##_copy(x, y, n, mean, scale, shift, 0, 0, 0,    \
                                                 copy, streaming);                        \
    }                                                                                     \
    __attribute__((target(TARGET)))                                                       \
    static inline __attribute__((always_inline)) void normkit_combine_columns_##P##_form( \
            const uint16_t *dy, const unsigned char *mask, const uint16_t *x, uint16_t *dx, \
            long n, const float *mean, const float *a, const float *b, const float *c,    \
            int streaming) {                                                              \
        WRITE(dx, n, streaming,                                                           \
            _mm256_add_ps(                                                                \
                _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(a + j),                       \
                                            normkit_masked_##P##x8(dy + j,                \
                                                                   mask ? mask + j : 0)), \
                              _mm256_mul_ps(_mm256_loadu_ps(b + j),                       \
                                            _mm256_sub_ps(normkit_load_##S##x8(x + j),    \
                                                          _mm256_loadu_ps(mean + j)))),   \
                _mm256_loadu_ps(c + j)),                                                  \
            a[j] * normkit_masked_##S##_one(dy, mask, j)                                  \
                + b[j] * (normkit_##S##_to_float(x[j]) - mean[j]) + c[j])                 \
    }                                                                                     \
    __attribute__((target(TARGET)))                                                       \
    static void normkit_combine_columns_##P##_vector(                                     \
            const uint16_t *dy, const unsigned char *mask, const uint16_t *x, uint16_t *dx, \
            long n, const float *mean, const float *a, const float *b, const float *c,    \
            int streaming) {                                                              \
        if (mask) normkit_combine_columns_##P##_form(dy, mask, x, dx, n, mean, a, b, c,   \
                                                     streaming);                          \
        else normkit_combine_columns_##P##_form(dy, 0, x, dx, n, mean, a, b, c, streaming); \
    }                                                                                     \
    __attribute__((target(TARGET)))                                                       \
    static inline __attribute__((always_inline)) void normkit_narrow_epilogue_##P##_form( \
            const float *z, const uint16_t *r, uint16_t *y, unsigned char *mask, long n,  \
            int relu, int streaming) {                                                    \
        WRITE(y, n, streaming,                                                            \
            normkit_epilogue_##P##x8(_mm256_loadu_ps(z + j), r ? r + j : 0,               \
                                     mask ? mask + j : 0, relu),                          \
            normkit_epilogue_##S##_one(z[j], r, mask, j, relu))                           \
    }                                                                                     \
    __attribute__((target(TARGET)))                                                       \
    static void normkit_narrow_epilogue_##P##_vector(const float *z, const uint16_t *r,   \
                                                     uint16_t *y, unsigned char *mask,    \
                                                     long n, int relu, int streaming) {   \
        if (r && relu && mask) normkit_narrow_epilogue_##P##_form(z, r, y, mask, n, 1, streaming); \
        else if (r && relu) normkit_narrow_epilogue_##P##_form(z, r, y, 0, n, 1, streaming); \
        else if (r) normkit_narrow_epilogue_##P##_form(z, r, y, 0, n, 0, streaming);      \
        else if (relu && mask) normkit_narrow_epilogue_##P##_form(z, 0, y, mask, n, 1, streaming); \
        else if (relu) normkit_narrow_epilogue_##P##_form(z, 0, y, 0, n, 1, streaming);   \
        else normkit_narrow_epilogue_##P##_form(z, 0, y, 0, n, 0, streaming);             \
    }                                                                                     \
    __attribute__((target(TARGET)))                                                       \
    static inline __attribute__((always_inline)) void normkit_combine_row_##P##_form(     \
            const float *dy, const float *x, const float *sum, uint16_t *dx, long n,      \
            float m, float s, float a, float b, const float *g, int streaming) {          \
        const __m256 vm = _mm256_set1_ps(m), vs = _mm256_set1_ps(s);                      \
        const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);                      \
        WRITE(dx, n, streaming,                                                           \
            normkit_add_sum_x8(_mm256_mul_ps(vs, _mm256_sub_ps(                           \
                _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(g + j), _mm256_loadu_ps(dy + j)), \
                              va),                                                        \
                _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm), vs), \
                              vb))), sum ? sum + j : 0),                                  \
            normkit_combine_row_one(dy, x, sum, j, m, s, a, b, g))                        \
    }                                                                                     \
    __attribute__((target(TARGET)))                                                       \
    static void normkit_combine_row_##P##_vector(const float *dy, const float *x,         \
                                                 const float *sum, uint16_t *dx, long n,  \
                                                 float m, float s, float a, float b,      \
                                                 const float *g, int streaming) {         \
        if (sum) normkit_combine_row_##P##_form(dy, x, sum, dx, n, m, s, a, b, g, streaming); \
        else normkit_combine_row_##P##_form(dy, x, 0, dx, n, m, s, a, b, g, streaming);   \
    }

NORMKIT_REDUCED_VECTOR_PASSES(f16, f16, "avx,f16c", NORMKIT_F16_WRITE)
NORMKIT_REDUCED_VECTOR_PASSES(bf16, bf16, "avx2", NORMKIT_BF16_WRITE)
NORMKIT_REDUCED_VECTOR_PASSES(bf16_512, bf16, NORMKIT_AVX512BF16, NORMKIT_BF16_WRITE_512)
#undef NORMKIT_REDUCED_VECTOR_PASSES

// The plain normalize pass (no residual or ReLU: BatchNorm's training output,
// its inference forward, which copies the input to the cache, and its
// inference without a cache) sixteen values a vector in 512-bit registers:
// the 256-bit forms' expressions lane by lane (no contraction), so the same
// bits, in half the instructions; streamed on whole lines when `streaming`
// (normkit_stream_span16). Measured (C loop, 4096x1024, one thread, Intel Xeon
// with AVX-512 BF16, in L3, medians of 15 alternated rounds): 0.29 -> 0.21 ns
// a value for bfloat16, 0.27 -> 0.19 for float16; the widening passes gained
// nothing this way. float16 takes it only stored and without a copy: with
// either, its 512-bit conversions made BatchNorm's training and inference
// forwards slower (1.1-1.6x, normbench, AMD EPYC Zen 4), where bfloat16's
// inference forward gained (0.85). Each group of sixteen is read before it is
// written: x may be y (copy may not).
#define NORMKIT_AVX512F16 "avx,avx2,f16c,avx512f,avx512vl,avx512dq,avx512bw"
#define NORMKIT_NORMALIZE_COLUMNS_ZMM(P, TARGET, WIDEN, NARROW, EIGHT)                     \
    __attribute__((target(TARGET)))                                                       \
    static inline __attribute__((always_inline)) __m256i normkit_normalize_##P##x16(       \
            const uint16_t *x, uint16_t *copy, long j, const float *mean,                 \
            const float *scale, const float *shift) {                                     \
        __m256i h = _mm256_loadu_si256((const __m256i *)(x + j));                         \
        if (copy) _mm256_storeu_si256((__m256i *)(copy + j), h);                          \
        __m512 v = _mm512_add_ps(                                                         \
            _mm512_mul_ps(_mm512_sub_ps(WIDEN, _mm512_loadu_ps(mean + j)),                \
                          _mm512_loadu_ps(scale + j)),                                    \
            _mm512_loadu_ps(shift + j));                                                  \
        return NARROW;                                                                    \
    }                                                                                     \
    __attribute__((target(TARGET)))                                                       \
    static inline __attribute__((always_inline)) long normkit_normalize_##P##_rest(       \
            const uint16_t *x, uint16_t *y, long j, long end, const float *mean,          \
            const float *scale, const float *shift, uint16_t *copy) {                     \
        for (; j + 16 <= end; j += 16)                                                    \
            _mm256_storeu_si256((__m256i *)(y + j),                                       \
                                normkit_normalize_##P##x16(x, copy, j, mean, scale, shift)); \
        EIGHT                                                                             \
        for (; j < end; j++)                                                              \
            y[j] = normkit_float_to_##P((normkit_load_copy_##P##_one(x, copy, j) - mean[j]) \
                                        * scale[j] + shift[j]);                           \
        return j;                                                                         \
    }                                                                                     \
    __attribute__((target(TARGET)))                                                       \
    static inline __attribute__((always_inline)) void normkit_normalize_columns_##P##_zmm_form( \
            const uint16_t *x, uint16_t *y, long n, const float *mean, const float *scale, \
            const float *shift, uint16_t *copy, int streaming) {                          \
        long j = 0, first = 0, last = 0;                                                  \
        if (streaming) normkit_stream_span16(y, n, &first, &last);                        \
        j = normkit_normalize_##P##_rest(x, y, j, first, mean, scale, shift, copy);       \
        for (; j < last; j += 16)                                                         \
            _mm256_stream_si256((__m256i *)(y + j),                                       \
                                normkit_normalize_##P##x16(x, copy, j, mean, scale, shift)); \
        normkit_normalize_##P##_rest(x, y, j, n, mean, scale, shift, copy);               \
    }

// float16's software rounding is slow: eight values a step (F16C) before the
// last few.
#define NORMKIT_F16_EIGHT                                                                 \
    for (; j + 8 <= end; j += 8)                                                          \
        _mm_storeu_si128((__m128i *)(y + j), _mm256_cvtps_ph(_mm256_add_ps(               \
            _mm256_mul_ps(_mm256_sub_ps(normkit_load_copy_f16x8(x + j, copy ? copy + j : 0), \
                                        _mm256_loadu_ps(mean + j)),                       \
                          _mm256_loadu_ps(scale + j)),                                    \
            _mm256_loadu_ps(shift + j)), _MM_FROUND_TO_NEAREST_INT));
NORMKIT_NORMALIZE_COLUMNS_ZMM(f16, NORMKIT_AVX512F16, _mm512_cvtph_ps(h),
                              _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT), NORMKIT_F16_EIGHT)
#undef NORMKIT_F16_EIGHT
NORMKIT_NORMALIZE_COLUMNS_ZMM(bf16, NORMKIT_AVX512BF16,
                              _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)),
                              normkit_narrow_bf16x16_zmm(v), )
#undef NORMKIT_NORMALIZE_COLUMNS_ZMM

// float16 takes the 512-bit form stored and without a copy only (above), so
// its dispatch calls the form with those constants; bfloat16's every form but
// the stored one with a copy (normkit_normalize_columns_bf16_copy8, below).
__attribute__((target(NORMKIT_AVX512F16)))
static void normkit_normalize_columns_f16_zmm(const uint16_t *x, uint16_t *y, long n,
                                              const float *mean, const float *scale,
                                              const float *shift) {
    normkit_normalize_columns_f16_zmm_form(x, y, n, mean, scale, shift, 0, 0);
}

__attribute__((target(NORMKIT_AVX512BF16)))
static void normkit_normalize_columns_bf16_zmm(const uint16_t *x, uint16_t *y, long n,
                                               const float *mean, const float *scale,
                                               const float *shift, uint16_t *copy,
                                               int streaming) {
    if (copy) normkit_normalize_columns_bf16_zmm_form(x, y, n, mean, scale, shift, copy,
                                                      streaming);
    else normkit_normalize_columns_bf16_zmm_form(x, y, n, mean, scale, shift, 0, streaming);
}

// Eight values rounded to bfloat16 by vcvtneps2bf16, or by the integer
// rounding when one is subnormal (normkit_narrow_bf16x16_512's rule).
__attribute__((target(NORMKIT_AVX512BF16)))
static inline __m128i normkit_narrow_bf16x8_512(__m256 v) {
    if (_mm256_fpclass_ps_mask(v, 0x20)) {
        __m256i r = normkit_round_bf16x8(v);
        return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    }
    return (__m128i)_mm256_cvtneps_pbh(v);
}

// The stored normalize pass that copies its input (an inference forward
// that fills the cache) eight values a step: every load and store 16 bytes,
// so none splits a line on the 16-byte-aligned buffers that Swift arrays and
// malloc give, where the sixteen-value form's 32-byte stores split every
// other one. The same expression and rounding, so the same bits. BatchNorm's
// bfloat16 inference forward into a cache at 4096x1024 over Swift arrays,
// one thread, Intel Xeon with AVX-512 BF16: 0.75x the sixteen-value form's
// time (float16's F16C form, eight a step, took the same as this one).
// Measured on that CPU only: on AMD EPYC Zen 4 the sixteen-value form had
// gained 0.85 over the 256-bit pairs (normbench, whose buffers are malloc's);
// remeasure this form there.
__attribute__((target(NORMKIT_AVX512BF16)))
static void normkit_normalize_columns_bf16_copy8(const uint16_t *x, uint16_t *y, long n,
                                                 const float *mean, const float *scale,
                                                 const float *shift, uint16_t *copy) {
    long j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_add_ps(
            _mm256_mul_ps(_mm256_sub_ps(normkit_load_copy_bf16x8(x + j, copy + j),
                                        _mm256_loadu_ps(mean + j)),
                          _mm256_loadu_ps(scale + j)),
            _mm256_loadu_ps(shift + j));
        _mm_storeu_si128((__m128i *)(y + j), normkit_narrow_bf16x8_512(v));
    }
    for (; j < n; j++)
        y[j] = normkit_float_to_bf16((normkit_load_copy_bf16_one(x, copy, j) - mean[j]) * scale[j]
                                     + shift[j]);
}
#endif


// Each group of eight (or value) is read before it is written: x and r may be y
// (copy may not).
void normkit_normalize_columns_f16(const uint16_t *x, uint16_t *y, long n, const float *mean,
                                   const float *scale, const float *shift, const uint16_t *r,
                                   unsigned char *mask, int relu, uint16_t *copy, int streaming) {
#if defined(NORMKIT_F16C)
    if (!r && !relu && !copy && !streaming && normkit_avx512()) {
        normkit_normalize_columns_f16_zmm(x, y, n, mean, scale, shift);
        return;
    }
    if (normkit_f16c()) {
        normkit_normalize_columns_f16_vector(x, y, n, mean, scale, shift, r, mask, relu, copy,
                                           streaming);
        return;
    }
#endif
    (void)streaming;
    for (long j = 0; j < n; j++)
        y[j] = normkit_float_to_f16(normkit_epilogue_f16_one(
            (normkit_load_copy_f16_one(x, copy, j) - mean[j]) * scale[j] + shift[j], r, mask, j,
            relu));
}

void normkit_combine_columns_f16(const uint16_t *dy, const unsigned char *mask,
                                 const uint16_t *x, uint16_t *dx, long n, const float *mean,
                                 const float *a, const float *b, const float *c, int streaming) {
#if defined(NORMKIT_F16C)
    if (normkit_f16c()) {
        normkit_combine_columns_f16_vector(dy, mask, x, dx, n, mean, a, b, c, streaming);
        return;
    }
#endif
    (void)streaming;
    for (long j = 0; j < n; j++)
        dx[j] = normkit_float_to_f16(a[j] * normkit_masked_f16_one(dy, mask, j)
                                     + b[j] * (normkit_f16_to_float(x[j]) - mean[j]) + c[j]);
}

// bfloat16's normalize pass and epilogue, each form (residual, ReLU, mask,
// copy: constants in every call below) its own loop on restrict pointers,
// which the compiler vectorizes in each clone.

static inline __attribute__((always_inline)) void normkit_normalize_columns_bf16_loop(
        const uint16_t *restrict x, const uint16_t *restrict r, uint16_t *restrict y,
        unsigned char *restrict mask, uint16_t *restrict copy, long n,
        const float *restrict mean, const float *restrict scale, const float *restrict shift,
        int add, int relu, int record, int copying) {
    for (long j = 0; j < n; j++) {
        if (copying) copy[j] = x[j];
        float v = (normkit_bf16_to_float(x[j]) - mean[j]) * scale[j] + shift[j];
        if (add) v = v + normkit_bf16_to_float(r[j]);
        if (relu) {
            if (record) mask[j] = v > 0;
            v = (v > 0 || v != v) ? v : 0.0f;
        }
        y[j] = normkit_float_to_bf16(v);
    }
}

#define NORMKIT_BF16_FORM(ADD, RELU, RECORD)                                              \
    do {                                                                                  \
        if (copy) normkit_normalize_columns_bf16_loop(x, r, y, mask, copy, n, mean, scale, \
                                                      shift, ADD, RELU, RECORD, 1);       \
        else normkit_normalize_columns_bf16_loop(x, r, y, mask, 0, n, mean, scale, shift,  \
                                                 ADD, RELU, RECORD, 0);                   \
    } while (0)

static inline __attribute__((always_inline)) void normkit_normalize_columns_bf16_forms(
        const uint16_t *x, const uint16_t *r, uint16_t *y, unsigned char *mask, uint16_t *copy,
        long n, const float *mean, const float *scale, const float *shift, int relu) {
    if (r && relu && mask) NORMKIT_BF16_FORM(1, 1, 1);
    else if (r && relu) NORMKIT_BF16_FORM(1, 1, 0);
    else if (r) NORMKIT_BF16_FORM(1, 0, 0);
    else if (relu && mask) NORMKIT_BF16_FORM(0, 1, 1);
    else if (relu) NORMKIT_BF16_FORM(0, 1, 0);
    else NORMKIT_BF16_FORM(0, 0, 0);
}

// x or r may be y (`infer` into its input): then 256 values at a time are
// copied to the stack first, so that the restrict loops never read what they
// write. (A loop on pointers that may be equal fails the compiler's overlap
// check and runs unvectorized: bfloat16 BatchNorm infer in place took 5x the
// time of one into another buffer, 4096x1024, one thread.)
NORMKIT_CLONES void normkit_normalize_columns_bf16(const uint16_t *x, uint16_t *y, long n,
                                                   const float *mean, const float *scale,
                                                   const float *shift, const uint16_t *r,
                                                   unsigned char *mask, int relu,
                                                   uint16_t *copy, int streaming) {
#if defined(NORMKIT_F16C)
    if (normkit_avx512bf16()) {
        if (!r && !relu && copy && !streaming)
            normkit_normalize_columns_bf16_copy8(x, y, n, mean, scale, shift, copy);
        else if (!r && !relu)
            normkit_normalize_columns_bf16_zmm(x, y, n, mean, scale, shift, copy, streaming);
        else
            normkit_normalize_columns_bf16_512_vector(x, y, n, mean, scale, shift, r, mask, relu,
                                                      copy, streaming);
        return;
    }
    if (normkit_avx2()) {
        normkit_normalize_columns_bf16_vector(x, y, n, mean, scale, shift, r, mask, relu, copy,
                                            streaming);
        return;
    }
#endif
    (void)streaming;
    if (x != y && r != y) {
        normkit_normalize_columns_bf16_forms(x, r, y, mask, copy, n, mean, scale, shift, relu);
        return;
    }
    uint16_t xs[256], rs[256];
    for (long c = 0; c < n; c += 256) {
        long m = n - c < 256 ? n - c : 256;
        const uint16_t *xc = x + c, *rc = r ? r + c : 0;
        if (x == y) { memcpy(xs, xc, 2 * (size_t)m); xc = xs; }
        if (r && r == y) { memcpy(rs, rc, 2 * (size_t)m); rc = rs; }
        normkit_normalize_columns_bf16_forms(xc, rc, y + c, mask ? mask + c : 0,
                                             copy ? copy + c : 0, m, mean + c, scale + c,
                                             shift + c, relu);
    }
}
#undef NORMKIT_BF16_FORM

static inline __attribute__((always_inline)) void normkit_combine_columns_bf16_loop(
        const uint16_t *restrict dy, const unsigned char *restrict mask,
        const uint16_t *restrict x, uint16_t *restrict dx, long n, const float *restrict mean,
        const float *restrict a, const float *restrict b, const float *restrict c, int masked) {
    for (long j = 0; j < n; j++) {
        float g = normkit_bf16_to_float(dy[j]);
        if (masked) g = mask[j] ? g : 0.0f;
        dx[j] = normkit_float_to_bf16(a[j] * g + b[j] * (normkit_bf16_to_float(x[j]) - mean[j])
                                      + c[j]);
    }
}


// dy may be dx (x, the cache's, never is): then 256 values of dy at a time are
// copied to the stack first, as in normkit_normalize_columns_bf16.
NORMKIT_CLONES void normkit_combine_columns_bf16(const uint16_t *dy, const unsigned char *mask,
                                                 const uint16_t *x, uint16_t *dx, long n,
                                                 const float *mean, const float *a,
                                                 const float *b, const float *c, int streaming) {
#if defined(NORMKIT_F16C)
    if (normkit_avx512bf16()) {
        normkit_combine_columns_bf16_512_vector(dy, mask, x, dx, n, mean, a, b, c, streaming);
        return;
    }
    if (normkit_avx2()) {
        normkit_combine_columns_bf16_vector(dy, mask, x, dx, n, mean, a, b, c, streaming);
        return;
    }
#endif
    (void)streaming;
    if (dy != dx) {
        if (mask) normkit_combine_columns_bf16_loop(dy, mask, x, dx, n, mean, a, b, c, 1);
        else normkit_combine_columns_bf16_loop(dy, 0, x, dx, n, mean, a, b, c, 0);
        return;
    }
    uint16_t copy[256];
    for (long k = 0; k < n; k += 256) {
        long m = n - k < 256 ? n - k : 256;
        memcpy(copy, dy + k, 2 * (size_t)m);
        if (mask)
            normkit_combine_columns_bf16_loop(copy, mask + k, x + k, dx + k, m, mean + k, a + k,
                                              b + k, c + k, 1);
        else
            normkit_combine_columns_bf16_loop(copy, 0, x + k, dx + k, m, mean + k, a + k, b + k,
                                              c + k, 0);
    }
}

// BatchNorm's centred squares over one 16-bit row of n features, widened in
// registers: d = widen(x[j]) - mean[j], residual[j] += d, squares[j] = d * d,
// the expressions and order of normkit_centred_squares_f on the widened row
// (one row; no contraction), so the same bits as widening into Float scratch
// first, without that scratch's store and reload.
static inline __attribute__((always_inline)) void normkit_centred_squares_row_loop(
        const uint16_t *restrict x, float *restrict squares, float *restrict residual, long n,
        const float *restrict mean, int bfloat) {
    for (long j = 0; j < n; j++) {
        float d = (bfloat ? normkit_bf16_to_float(x[j]) : normkit_f16_to_float(x[j])) - mean[j];
        residual[j] += d;
        squares[j] = d * d;
    }
}

#if defined(NORMKIT_F16C)
__attribute__((target("avx,f16c")))
static void normkit_centred_squares_row_f16_vector(const uint16_t *x, float *squares,
                                                   float *residual, long n, const float *mean) {
    long j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 d = _mm256_sub_ps(normkit_load_f16x8(x + j), _mm256_loadu_ps(mean + j));
        _mm256_storeu_ps(residual + j, _mm256_add_ps(_mm256_loadu_ps(residual + j), d));
        _mm256_storeu_ps(squares + j, _mm256_mul_ps(d, d));
    }
    normkit_centred_squares_row_loop(x + j, squares + j, residual + j, n - j, mean + j, 0);
}
#endif

// The same sixteen values a vector where the CPU has AVX-512 (lane by lane
// the same expressions, so the same bits): measured (C loop over a row of
// 1,024 in L2, one thread, Intel Xeon) 0.26 -> 0.19 ns a value for bfloat16.
#if defined(NORMKIT_F16C)
#define NORMKIT_CENTRED_SQUARES_ZMM(P, BFLOAT, WIDEN)                                     \
    __attribute__((target(NORMKIT_AVX512F16)))                                            \
    static void normkit_centred_squares_row_##P##_zmm(const uint16_t *x, float *squares, \
                                                      float *residual, long n,           \
                                                      const float *mean) {               \
        long j = 0;                                                                       \
        for (; j + 16 <= n; j += 16) {                                                    \
            __m256i h = _mm256_loadu_si256((const __m256i *)(x + j));                     \
            __m512 d = _mm512_sub_ps(WIDEN, _mm512_loadu_ps(mean + j));                   \
            _mm512_storeu_ps(residual + j, _mm512_add_ps(_mm512_loadu_ps(residual + j), d)); \
            _mm512_storeu_ps(squares + j, _mm512_mul_ps(d, d));                           \
        }                                                                                 \
        normkit_centred_squares_row_loop(x + j, squares + j, residual + j, n - j, mean + j, \
                                         BFLOAT);                                         \
    }
NORMKIT_CENTRED_SQUARES_ZMM(f16, 0, _mm512_cvtph_ps(h))
NORMKIT_CENTRED_SQUARES_ZMM(bf16, 1, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)))
#undef NORMKIT_CENTRED_SQUARES_ZMM
#endif

void normkit_centred_squares_row_f16(const uint16_t *x, float *squares, float *residual, long n,
                                     const float *mean) {
#if defined(NORMKIT_F16C)
    if (normkit_avx512()) {
        normkit_centred_squares_row_f16_zmm(x, squares, residual, n, mean);
        return;
    }
    if (normkit_f16c()) {
        normkit_centred_squares_row_f16_vector(x, squares, residual, n, mean);
        return;
    }
#endif
    normkit_centred_squares_row_loop(x, squares, residual, n, mean, 0);
}

// bfloat16's widening is a shift: the loop vectorizes in each clone.
NORMKIT_CLONES void normkit_centred_squares_row_bf16(const uint16_t *x, float *squares,
                                                     float *residual, long n, const float *mean) {
#if defined(NORMKIT_F16C)
    if (normkit_avx512()) {
        normkit_centred_squares_row_bf16_zmm(x, squares, residual, n, mean);
        return;
    }
#endif
    normkit_centred_squares_row_loop(x, squares, residual, n, mean, 1);
}

// The narrowing with a fused epilogue: y[j] = narrow(act(z[j] + widen(r[j]))),
// the Float epilogue's expressions and order (normkit_epilogue_f) on the
// Float output z of a layer's kernel, rounded once as it is written. One pass
// where the Float epilogue in place and the narrowing made two (GroupNorm's,
// InstanceNorm's and channels-first SpatialBatchNorm's 16-bit forwards).

// Each group of eight (or value) of r is read before y's is written: r may be y.
void normkit_narrow_epilogue_f16(const float *z, const uint16_t *r, uint16_t *y,
                                 unsigned char *mask, long n, int relu, int streaming) {
#if defined(NORMKIT_F16C)
    if (normkit_f16c()) {
        normkit_narrow_epilogue_f16_vector(z, r, y, mask, n, relu, streaming);
        return;
    }
#endif
    (void)streaming;
    for (long j = 0; j < n; j++)
        y[j] = normkit_float_to_f16(normkit_epilogue_f16_one(z[j], r, mask, j, relu));
}

static inline __attribute__((always_inline)) void normkit_narrow_epilogue_bf16_loop(
        const float *restrict z, const uint16_t *restrict r, uint16_t *restrict y,
        unsigned char *restrict mask, long n, int add, int relu, int record) {
    for (long j = 0; j < n; j++) {
        float v = z[j];
        if (add) v = v + normkit_bf16_to_float(r[j]);
        if (relu) {
            if (record) mask[j] = v > 0;
            v = (v > 0 || v != v) ? v : 0.0f;
        }
        y[j] = normkit_float_to_bf16(v);
    }
}

static inline __attribute__((always_inline)) void normkit_narrow_epilogue_bf16_forms(
        const float *z, const uint16_t *r, uint16_t *y, unsigned char *mask, long n, int relu) {
    if (r && relu && mask) normkit_narrow_epilogue_bf16_loop(z, r, y, mask, n, 1, 1, 1);
    else if (r && relu) normkit_narrow_epilogue_bf16_loop(z, r, y, 0, n, 1, 1, 0);
    else if (r) normkit_narrow_epilogue_bf16_loop(z, r, y, 0, n, 1, 0, 0);
    else if (relu && mask) normkit_narrow_epilogue_bf16_loop(z, 0, y, mask, n, 0, 1, 1);
    else if (relu) normkit_narrow_epilogue_bf16_loop(z, 0, y, 0, n, 0, 1, 0);
    else normkit_narrow_epilogue_bf16_loop(z, 0, y, 0, n, 0, 0, 0);
}


// r may be y: then 256 of its values at a time are copied to the stack first,
// as in normkit_normalize_columns_bf16.
NORMKIT_CLONES void normkit_narrow_epilogue_bf16(const float *z, const uint16_t *r, uint16_t *y,
                                                 unsigned char *mask, long n, int relu,
                                                 int streaming) {
#if defined(NORMKIT_F16C)
    if (normkit_avx512bf16()) {
        normkit_narrow_epilogue_bf16_512_vector(z, r, y, mask, n, relu, streaming);
        return;
    }
    if (normkit_avx2()) {
        normkit_narrow_epilogue_bf16_vector(z, r, y, mask, n, relu, streaming);
        return;
    }
#endif
    (void)streaming;
    if (!r || r != y) {
        normkit_narrow_epilogue_bf16_forms(z, r, y, mask, n, relu);
        return;
    }
    uint16_t rs[256];
    for (long c = 0; c < n; c += 256) {
        long m = n - c < 256 ? n - c : 256;
        memcpy(rs, r + c, 2 * (size_t)m);
        normkit_narrow_epilogue_bf16_forms(z + c, rs, y + c, mask ? mask + c : 0, m, relu);
    }
}

// A 16-bit residual form's prologue: s[j] = narrow(widen(x[j]) + widen(r[j])),
// the 16-bit addition (the Float sum of two 16-bit values rounded once), and
// f[j] = widen(s[j]) for the row kernels; s also to `sum` when it is not NULL:
// from the same registers, or with streaming stores when `streaming`. x and r
// may be `sum`, not s or f. The 512-bit forms (sixteen values a step, bfloat16
// rounded by vcvtneps2bf16 unless a subnormal is among them,
// normkit_narrow_bf16x16_zmm) give the bits of the others.
#if defined(NORMKIT_F16C)
__attribute__((target("avx,f16c")))
static void normkit_residual_sum_f16_f16c(const uint16_t *x, const uint16_t *r, uint16_t *s,
                                          uint16_t *copy, float *f, long n) {
    long j = 0;
    for (; j + 8 <= n; j += 8) {
        if ((j & 31) == 0) {  // the next block's lines, as in normkit_widen_bf16_loop
            __builtin_prefetch(x + j + n, 0, 1);
            __builtin_prefetch(r + j + n, 0, 1);
        }
        __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + j)));
        __m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + j)));
        __m128i h = _mm256_cvtps_ph(_mm256_add_ps(a, b), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(s + j), h);
        if (copy) _mm_storeu_si128((__m128i *)(copy + j), h);
        _mm256_storeu_ps(f + j, _mm256_cvtph_ps(h));
    }
    for (; j < n; j++) {
        s[j] = normkit_float_to_f16(normkit_f16_to_float(x[j]) + normkit_f16_to_float(r[j]));
        if (copy) copy[j] = s[j];
        f[j] = normkit_f16_to_float(s[j]);
    }
}

#define NORMKIT_RESIDUAL_SUM_ZMM(P, TARGET, WIDEN, NARROW)                                 \
    __attribute__((target(TARGET)))                                                       \
    static void normkit_residual_sum_##P##_zmm(const uint16_t *x, const uint16_t *r,      \
                                               uint16_t *s, uint16_t *copy, float *f,     \
                                               long n) {                                  \
        long j = 0;                                                                       \
        for (; j + 16 <= n; j += 16) {                                                    \
            if ((j & 31) == 0) {                                                          \
                __builtin_prefetch(x + j + n, 0, 1);                                      \
                __builtin_prefetch(r + j + n, 0, 1);                                      \
            }                                                                             \
            __m256i hx = _mm256_loadu_si256((const __m256i *)(x + j));                    \
            __m256i hr = _mm256_loadu_si256((const __m256i *)(r + j));                    \
            __m256i h = NARROW(_mm512_add_ps(WIDEN(hx), WIDEN(hr)));                      \
            _mm256_storeu_si256((__m256i *)(s + j), h);                                   \
            if (copy) _mm256_storeu_si256((__m256i *)(copy + j), h);                      \
            _mm512_storeu_ps(f + j, WIDEN(h));                                            \
        }                                                                                 \
        for (; j < n; j++) {                                                              \
            s[j] = normkit_float_to_##P(normkit_##P##_to_float(x[j])                      \
                                        + normkit_##P##_to_float(r[j]));                  \
            if (copy) copy[j] = s[j];                                                     \
            f[j] = normkit_##P##_to_float(s[j]);                                          \
        }                                                                                 \
    }
#define NORMKIT_WIDEN_F16_ZMM(h) _mm512_cvtph_ps(h)
#define NORMKIT_WIDEN_BF16_ZMM(h) \
    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
NORMKIT_RESIDUAL_SUM_ZMM(f16, NORMKIT_AVX512F16, NORMKIT_WIDEN_F16_ZMM, NORMKIT_NARROW_F16_ZMM)
NORMKIT_RESIDUAL_SUM_ZMM(bf16, NORMKIT_AVX512BF16, NORMKIT_WIDEN_BF16_ZMM,
                         normkit_narrow_bf16x16_zmm)
#undef NORMKIT_WIDEN_F16_ZMM
#undef NORMKIT_WIDEN_BF16_ZMM
#undef NORMKIT_RESIDUAL_SUM_ZMM
#endif

void normkit_residual_sum_f16(const uint16_t *x, const uint16_t *r, uint16_t *s, uint16_t *sum,
                              float *f, long n, int streaming) {
    uint16_t *copy = streaming ? 0 : sum;
#if defined(NORMKIT_F16C)
    if (normkit_avx512() && normkit_f16c()) {
        normkit_residual_sum_f16_zmm(x, r, s, copy, f, n);
    } else if (normkit_f16c()) {
        normkit_residual_sum_f16_f16c(x, r, s, copy, f, n);
    } else
#endif
    for (long j = 0; j < n; j++) {
        s[j] = normkit_float_to_f16(normkit_f16_to_float(x[j]) + normkit_f16_to_float(r[j]));
        if (copy) copy[j] = s[j];
        f[j] = normkit_f16_to_float(s[j]);
    }
    if (sum && streaming) normkit_copy16(s, sum, n, streaming);
}

// One form per caller below (copy NULL or not), as normkit_widen_bf16_form.
static inline __attribute__((always_inline)) void normkit_residual_sum_bf16_form(
        const uint16_t *restrict x, const uint16_t *restrict r, uint16_t *restrict out,
        uint16_t *restrict copy, uint32_t *restrict wide, long n, int copying) {
    long j = 0;
    for (; j < n; j += 32) {
        long end = j + 32 < n ? j + 32 : n;
        __builtin_prefetch(x + j + n, 0, 1);  // as in normkit_widen_bf16_loop
        __builtin_prefetch(r + j + n, 0, 1);
        for (long k = j; k < end; k++) {
            uint16_t h = normkit_float_to_bf16(normkit_from_bits((uint32_t)x[k] << 16)
                                               + normkit_from_bits((uint32_t)r[k] << 16));
            out[k] = h;
            if (copying) copy[k] = h;
            wide[k] = (uint32_t)h << 16;
        }
    }
}

void normkit_residual_sum_bf16_loop(const uint16_t *x, const uint16_t *r, uint16_t *s,
                                    uint16_t *copy, float *f, long n);
NORMKIT_CLONES void normkit_residual_sum_bf16_loop(const uint16_t *x, const uint16_t *r,
                                                   uint16_t *s, uint16_t *copy, float *f,
                                                   long n) {
    if (copy) normkit_residual_sum_bf16_form(x, r, s, copy, (uint32_t *)f, n, 1);
    else normkit_residual_sum_bf16_form(x, r, s, 0, (uint32_t *)f, n, 0);
}

void normkit_residual_sum_bf16(const uint16_t *x, const uint16_t *r, uint16_t *s, uint16_t *sum,
                               float *f, long n, int streaming) {
    uint16_t *copy = streaming ? 0 : sum;
#if defined(NORMKIT_F16C)
    if (normkit_avx512bf16()) normkit_residual_sum_bf16_zmm(x, r, s, copy, f, n);
    else
#endif
    normkit_residual_sum_bf16_loop(x, r, s, copy, f, n);
    if (sum && streaming) normkit_copy16(s, sum, n, streaming);
}

#if defined(NORMKIT_F16C)
// The stored row pass sixteen values a step in 512-bit registers, the tail by
// the 256-bit form (P_vector): each lane the same expression and rounding, so
// the same bits, in half the instructions.
#define NORMKIT_COMBINE_ROW_ZMM(P, TARGET, NARROW)                                        \
    __attribute__((target(TARGET)))                                                       \
    static inline __attribute__((always_inline)) void normkit_combine_row_##P##_zmm_form( \
            const float *dy, const float *x, const float *sum, uint16_t *dx, long n,      \
            float m, float s, float a, float b, const float *g) {                         \
        const __m512 vm = _mm512_set1_ps(m), vs = _mm512_set1_ps(s);                      \
        const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);                      \
        long j = 0;                                                                       \
        for (; j + 16 <= n; j += 16) {                                                    \
            __m512 v = _mm512_mul_ps(vs, _mm512_sub_ps(                                   \
                _mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(g + j), _mm512_loadu_ps(dy + j)), \
                              va),                                                        \
                _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), vm), vs), \
                              vb)));                                                      \
            if (sum) v = _mm512_add_ps(v, _mm512_loadu_ps(sum + j));                      \
            _mm256_storeu_si256((__m256i *)(dx + j), NARROW(v));                          \
        }                                                                                 \
        normkit_combine_row_##P##_vector(dy + j, x + j, sum ? sum + j : 0, dx + j, n - j, \
                                         m, s, a, b, g + j, 0);                           \
    }                                                                                     \
    __attribute__((target(TARGET)))                                                       \
    static void normkit_combine_row_##P##_zmm(const float *dy, const float *x,            \
                                              const float *sum, uint16_t *dx, long n,     \
                                              float m, float s, float a, float b,         \
                                              const float *g) {                           \
        if (sum) normkit_combine_row_##P##_zmm_form(dy, x, sum, dx, n, m, s, a, b, g);    \
        else normkit_combine_row_##P##_zmm_form(dy, x, 0, dx, n, m, s, a, b, g);          \
    }
NORMKIT_COMBINE_ROW_ZMM(f16, NORMKIT_AVX512F16, NORMKIT_NARROW_F16_ZMM)
NORMKIT_COMBINE_ROW_ZMM(bf16_512, NORMKIT_AVX512BF16, normkit_narrow_bf16x16_zmm)
#undef NORMKIT_COMBINE_ROW_ZMM
#undef NORMKIT_NARROW_F16_ZMM
#endif

// LayerNorm's and RMSNorm's 16-bit dx over one row: normkit_combine_f's
// Float expression on the widened row (plus the widened sum gradient), each
// value rounded once as it is written, so the bits of normkit_combine_f and
// the narrowing, in one pass where those made two (the Float row written to
// L1 and read back). dx is apart from the Float rows it reads.
void normkit_combine_row_f16(const float *dy, const float *x, const float *sum, uint16_t *dx,
                             long n, float m, float s, float a, float b, const float *g,
                             int streaming) {
#if defined(NORMKIT_F16C)
    if (!streaming && normkit_f16c() && normkit_avx512()) {
        normkit_combine_row_f16_zmm(dy, x, sum, dx, n, m, s, a, b, g);
        return;
    }
    if (normkit_f16c()) {
        normkit_combine_row_f16_vector(dy, x, sum, dx, n, m, s, a, b, g, streaming);
        return;
    }
#endif
    (void)streaming;
    for (long j = 0; j < n; j++)
        dx[j] = normkit_float_to_f16(normkit_combine_row_one(dy, x, sum, j, m, s, a, b, g));
}

NORMKIT_CLONES void normkit_combine_row_bf16(const float *dy, const float *x, const float *sum,
                                             uint16_t *dx, long n, float m, float s, float a,
                                             float b, const float *g, int streaming) {
#if defined(NORMKIT_F16C)
    if (!streaming && normkit_avx512bf16()) {
        normkit_combine_row_bf16_512_zmm(dy, x, sum, dx, n, m, s, a, b, g);
        return;
    }
    if (normkit_avx512bf16()) {
        normkit_combine_row_bf16_512_vector(dy, x, sum, dx, n, m, s, a, b, g, streaming);
        return;
    }
    if (normkit_avx2()) {
        normkit_combine_row_bf16_vector(dy, x, sum, dx, n, m, s, a, b, g, streaming);
        return;
    }
#endif
    (void)streaming;
    for (long j = 0; j < n; j++)
        dx[j] = normkit_float_to_bf16(normkit_combine_row_one(dy, x, sum, j, m, s, a, b, g));
}
