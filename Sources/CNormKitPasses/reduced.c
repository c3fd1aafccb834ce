// Widening 16-bit storage (IEEE binary16 "Float16", and bfloat16) to Float and
// narrowing Float to it, round to nearest even, for the 16-bit entry points.
//
// Every path gives the same bits: the F16C instructions (vcvtph2ps/vcvtps2ph,
// chosen at run time where the CPU has them) and the baseline loops below,
// which the tests compare on every Float16 pattern and on a sweep of Float
// patterns. NaN stays NaN: quiet, its sign and its payload's top bits kept
// (what vcvtps2ph does). bfloat16 has no such instruction before AVX-512 BF16,
// whose vcvtneps2bf16 flushes subnormals (PyTorch does not), so it is the
// integer loop for every CPU, vectorized for each clone.
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

void normkit_widen_f16_baseline(const uint16_t *h, float *f, long n) {
    for (long j = 0; j < n; j++) f[j] = normkit_f16_to_float(h[j]);
}

void normkit_narrow_f16_baseline(const float *f, uint16_t *h, long n) {
    for (long j = 0; j < n; j++) h[j] = normkit_float_to_f16(f[j]);
}

#if defined(NORMKIT_F16C)
static int normkit_f16c(void) {
    static int known = -1;
    int value = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (value < 0) {
        __builtin_cpu_init();
        value = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx") ? 1 : 0;
        __atomic_store_n(&known, value, __ATOMIC_RELAXED);
    }
    return value;
}

__attribute__((target("avx,f16c")))
static void normkit_widen_f16_f16c(const uint16_t *h, float *f, long n) {
    long j = 0;
    for (; j + 32 <= n; j += 32) {
        __builtin_prefetch(h + j + n, 0, 3);  // as in normkit_widen_bf16_loop
        for (long k = j; k < j + 32; k += 8) {
            __m128i v = _mm_loadu_si128((const __m128i *)(h + k));
            _mm256_storeu_ps(f + k, _mm256_cvtph_ps(v));
        }
    }
    for (; j + 8 <= n; j += 8) {
        __m128i v = _mm_loadu_si128((const __m128i *)(h + j));
        _mm256_storeu_ps(f + j, _mm256_cvtph_ps(v));
    }
    for (; j < n; j++) f[j] = normkit_f16_to_float(h[j]);
}

__attribute__((target("avx,f16c")))
static void normkit_narrow_f16_f16c(const float *f, uint16_t *h, long n, int streaming) {
    long j = 0;
    if (streaming) {
        long head = (long)((16 - ((unsigned long)h & 15)) & 15) / 2;
        if (((unsigned long)h & 1) != 0) head = n;
        if (head > n) head = n;
        for (; j < head; j++) h[j] = normkit_float_to_f16(f[j]);
        for (; j + 8 <= n; j += 8) {
            __m128i v = _mm256_cvtps_ph(_mm256_loadu_ps(f + j), _MM_FROUND_TO_NEAREST_INT);
            _mm_stream_si128((__m128i *)(h + j), v);
        }
    }
    for (; j + 8 <= n; j += 8) {
        __m128i v = _mm256_cvtps_ph(_mm256_loadu_ps(f + j), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(h + j), v);
    }
    for (; j < n; j++) h[j] = normkit_float_to_f16(f[j]);
}
#endif

// The 16-bit values to `copy` as well (a training forward's cache), with
// streaming stores on its 16-byte-aligned middle when `streaming`.
static void normkit_copy16(const uint16_t *h, uint16_t *copy, long n, int streaming) {
    long j = 0;
#if defined(__x86_64__)
    if (streaming && ((unsigned long)copy & 1) == 0) {
        long head = (long)((16 - ((unsigned long)copy & 15)) & 15) / 2;
        if (head > n) head = n;
        for (; j < head; j++) copy[j] = h[j];
        for (; j + 8 <= n; j += 8) {
            __m128i v;
            memcpy(&v, h + j, 16);
            _mm_stream_si128((__m128i *)(copy + j), v);
        }
    }
#else
    (void)streaming;
#endif
    if (j < n) memcpy(copy + j, h + j, (size_t)(n - j) * 2);
}

void normkit_widen_f16(const uint16_t *h, float *f, uint16_t *copy, long n, int streaming) {
#if defined(NORMKIT_F16C)
    if (normkit_f16c()) {
        normkit_widen_f16_f16c(h, f, n);
    } else
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

void normkit_widen_bf16_loop(const uint16_t *h, float *f, long n);
NORMKIT_CLONES void normkit_widen_bf16_loop(const uint16_t *h, float *f, long n) {
    const uint16_t *restrict in = h;
    uint32_t *restrict out = (uint32_t *)f;
    long j = 0;
    // A cache line at a time, asking for the line n values ahead: the next
    // block's input, on its way while the caller works on this one.
    for (; j + 32 <= n; j += 32) {
        __builtin_prefetch(in + j + n, 0, 3);
        for (long k = j; k < j + 32; k++) out[k] = (uint32_t)in[k] << 16;
    }
    for (; j < n; j++) out[j] = (uint32_t)in[j] << 16;
}

void normkit_widen_bf16(const uint16_t *h, float *f, uint16_t *copy, long n, int streaming) {
    normkit_widen_bf16_loop(h, f, n);
    if (copy) normkit_copy16(h, copy, n, streaming);
}

NORMKIT_CLONES void normkit_narrow_bf16(const float *f, uint16_t *h, long n, int streaming) {
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
__attribute__((target("avx,f16c")))
static void normkit_scale_shift_f16_f16c(const float *c, uint16_t *y, long n, float s,
                                         const float *g, const float *b, int streaming) {
    long j = 0;
    __m256 vs = _mm256_set1_ps(s);
    if (streaming && ((unsigned long)y & 1) == 0) {
        long head = (long)((16 - ((unsigned long)y & 15)) & 15) / 2;
        if (head > n) head = n;
        for (; j < head; j++) y[j] = normkit_float_to_f16(c[j] * s * g[j] + b[j]);
        for (; j + 8 <= n; j += 8) {
            __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(c + j), vs),
                                                   _mm256_loadu_ps(g + j)),
                                     _mm256_loadu_ps(b + j));
            _mm_stream_si128((__m128i *)(y + j), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
        }
    }
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(c + j), vs),
                                               _mm256_loadu_ps(g + j)),
                                 _mm256_loadu_ps(b + j));
        _mm_storeu_si128((__m128i *)(y + j), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; j < n; j++) y[j] = normkit_float_to_f16(c[j] * s * g[j] + b[j]);
}
#endif

void normkit_scale_shift_f16(const float *c, uint16_t *y, long n, float s, const float *g,
                             const float *b, int streaming) {
#if defined(NORMKIT_F16C)
    if (normkit_f16c()) { normkit_scale_shift_f16_f16c(c, y, n, s, g, b, streaming); return; }
#endif
    (void)streaming;
    for (long j = 0; j < n; j++) y[j] = normkit_float_to_f16(c[j] * s * g[j] + b[j]);
}

NORMKIT_CLONES void normkit_scale_shift_bf16(const float *c, uint16_t *y, long n, float s,
                                             const float *g, const float *b, int streaming) {
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
static inline float normkit_bf16_to_float(uint16_t h) {
    return normkit_from_bits((uint32_t)h << 16);
}

#if defined(NORMKIT_F16C)
__attribute__((target("avx,f16c")))
static inline __m256 normkit_load_f16x8(const uint16_t *h) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

// The vector loop of `EXPR` (an __m256 of lanes j..j+7) into y, streamed where
// `streaming` and y is 2-byte aligned; `SCALAR` (a float of element j) for the
// head and tail.
#define NORMKIT_F16_WRITE(y, n, streaming, EXPR, SCALAR)                                 \
    long j = 0;                                                                       \
    if ((streaming) && ((unsigned long)(y) & 1) == 0) {                               \
        long head = (long)((16 - ((unsigned long)(y) & 15)) & 15) / 2;                \
        if (head > (n)) head = (n);                                                   \
        for (; j < head; j++) (y)[j] = normkit_float_to_f16(SCALAR);                  \
        for (; j + 8 <= (n); j += 8)                                                  \
            _mm_stream_si128((__m128i *)((y) + j),                                    \
                             _mm256_cvtps_ph(EXPR, _MM_FROUND_TO_NEAREST_INT));       \
    }                                                                                 \
    for (; j + 8 <= (n); j += 8)                                                      \
        _mm_storeu_si128((__m128i *)((y) + j),                                        \
                         _mm256_cvtps_ph(EXPR, _MM_FROUND_TO_NEAREST_INT));           \
    for (; j < (n); j++) (y)[j] = normkit_float_to_f16(SCALAR);

__attribute__((target("avx,f16c")))
static void normkit_normalize_columns_f16_f16c(const uint16_t *x, uint16_t *y, long n,
                                               const float *mean, const float *scale,
                                               const float *shift, int streaming) {
    NORMKIT_F16_WRITE(y, n, streaming,
        _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(normkit_load_f16x8(x + j),
                                                  _mm256_loadu_ps(mean + j)),
                                    _mm256_loadu_ps(scale + j)),
                      _mm256_loadu_ps(shift + j)),
        (normkit_f16_to_float(x[j]) - mean[j]) * scale[j] + shift[j])
}

__attribute__((target("avx,f16c")))
static void normkit_combine_columns_f16_f16c(const uint16_t *dy, const uint16_t *x, uint16_t *dx,
                                             long n, const float *mean, const float *a,
                                             const float *b, const float *c, int streaming) {
    NORMKIT_F16_WRITE(dx, n, streaming,
        _mm256_add_ps(
            _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(a + j), normkit_load_f16x8(dy + j)),
                          _mm256_mul_ps(_mm256_loadu_ps(b + j),
                                        _mm256_sub_ps(normkit_load_f16x8(x + j),
                                                      _mm256_loadu_ps(mean + j)))),
            _mm256_loadu_ps(c + j)),
        a[j] * normkit_f16_to_float(dy[j]) + b[j] * (normkit_f16_to_float(x[j]) - mean[j]) + c[j])
}
#endif

void normkit_normalize_columns_f16(const uint16_t *x, uint16_t *y, long n, const float *mean,
                                   const float *scale, const float *shift, int streaming) {
#if defined(NORMKIT_F16C)
    if (normkit_f16c()) {
        normkit_normalize_columns_f16_f16c(x, y, n, mean, scale, shift, streaming);
        return;
    }
#endif
    (void)streaming;
    for (long j = 0; j < n; j++)
        y[j] = normkit_float_to_f16((normkit_f16_to_float(x[j]) - mean[j]) * scale[j] + shift[j]);
}

void normkit_combine_columns_f16(const uint16_t *dy, const uint16_t *x, uint16_t *dx, long n,
                                 const float *mean, const float *a, const float *b,
                                 const float *c, int streaming) {
#if defined(NORMKIT_F16C)
    if (normkit_f16c()) {
        normkit_combine_columns_f16_f16c(dy, x, dx, n, mean, a, b, c, streaming);
        return;
    }
#endif
    (void)streaming;
    for (long j = 0; j < n; j++)
        dx[j] = normkit_float_to_f16(a[j] * normkit_f16_to_float(dy[j])
                                     + b[j] * (normkit_f16_to_float(x[j]) - mean[j]) + c[j]);
}

// In place (x == y: `infer` into its input), on a restrict pointer: the
// general loop's overlap check fails for equal pointers and ran it unvectorized
// (BatchNorm's bfloat16 infer in place took 5x the time of one into another
// buffer, 4096x1024, one thread).
static inline void normkit_normalize_columns_bf16_in_place(uint16_t *restrict y, long n,
                                                           const float *restrict mean,
                                                           const float *restrict scale,
                                                           const float *restrict shift) {
    for (long j = 0; j < n; j++)
        y[j] = normkit_float_to_bf16((normkit_bf16_to_float(y[j]) - mean[j]) * scale[j] + shift[j]);
}

NORMKIT_CLONES void normkit_normalize_columns_bf16(const uint16_t *x, uint16_t *y, long n,
                                                   const float *mean, const float *scale,
                                                   const float *shift, int streaming) {
    (void)streaming;  // x may be y: no restrict
    if (x == y) { normkit_normalize_columns_bf16_in_place(y, n, mean, scale, shift); return; }
    for (long j = 0; j < n; j++)
        y[j] = normkit_float_to_bf16((normkit_bf16_to_float(x[j]) - mean[j]) * scale[j] + shift[j]);
}

NORMKIT_CLONES void normkit_combine_columns_bf16(const uint16_t *dy, const uint16_t *x,
                                                 uint16_t *dx, long n, const float *mean,
                                                 const float *a, const float *b, const float *c,
                                                 int streaming) {
    const uint16_t *restrict gg = dy, *restrict xx = x;
    uint16_t *restrict out = dx;
    (void)streaming;
    for (long j = 0; j < n; j++)
        out[j] = normkit_float_to_bf16(a[j] * normkit_bf16_to_float(gg[j])
                                       + b[j] * (normkit_bf16_to_float(xx[j]) - mean[j]) + c[j]);
}

// A 16-bit residual form's prologue: s[j] = narrow(widen(x[j]) + widen(r[j])),
// the 16-bit addition (the Float sum of two 16-bit values rounded once), and
// f[j] = widen(s[j]) for the row kernels; s copied to `sum` when it is not
// NULL (streaming stores when `streaming`). x and r may be `sum`, not s or f.
#if defined(NORMKIT_F16C)
__attribute__((target("avx,f16c")))
static void normkit_residual_sum_f16_f16c(const uint16_t *x, const uint16_t *r, uint16_t *s,
                                          float *f, long n) {
    long j = 0;
    for (; j + 8 <= n; j += 8) {
        if ((j & 31) == 0) {  // the next block's lines, as in normkit_widen_bf16_loop
            __builtin_prefetch(x + j + n, 0, 3);
            __builtin_prefetch(r + j + n, 0, 3);
        }
        __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + j)));
        __m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + j)));
        __m128i h = _mm256_cvtps_ph(_mm256_add_ps(a, b), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(s + j), h);
        _mm256_storeu_ps(f + j, _mm256_cvtph_ps(h));
    }
    for (; j < n; j++) {
        s[j] = normkit_float_to_f16(normkit_f16_to_float(x[j]) + normkit_f16_to_float(r[j]));
        f[j] = normkit_f16_to_float(s[j]);
    }
}
#endif

void normkit_residual_sum_f16(const uint16_t *x, const uint16_t *r, uint16_t *s, uint16_t *sum,
                              float *f, long n, int streaming) {
#if defined(NORMKIT_F16C)
    if (normkit_f16c()) {
        normkit_residual_sum_f16_f16c(x, r, s, f, n);
    } else
#endif
    for (long j = 0; j < n; j++) {
        s[j] = normkit_float_to_f16(normkit_f16_to_float(x[j]) + normkit_f16_to_float(r[j]));
        f[j] = normkit_f16_to_float(s[j]);
    }
    if (sum) normkit_copy16(s, sum, n, streaming);
}

void normkit_residual_sum_bf16_loop(const uint16_t *x, const uint16_t *r, uint16_t *s, float *f,
                                    long n);
NORMKIT_CLONES void normkit_residual_sum_bf16_loop(const uint16_t *x, const uint16_t *r,
                                                   uint16_t *s, float *f, long n) {
    uint16_t *restrict out = s;
    uint32_t *restrict wide = (uint32_t *)f;
    long j = 0;
    for (; j < n; j += 32) {
        long end = j + 32 < n ? j + 32 : n;
        __builtin_prefetch(x + j + n, 0, 3);  // as in normkit_widen_bf16_loop
        __builtin_prefetch(r + j + n, 0, 3);
        for (long k = j; k < end; k++) {
            uint16_t h = normkit_float_to_bf16(normkit_from_bits((uint32_t)x[k] << 16)
                                               + normkit_from_bits((uint32_t)r[k] << 16));
            out[k] = h;
            wide[k] = (uint32_t)h << 16;
        }
    }
}

void normkit_residual_sum_bf16(const uint16_t *x, const uint16_t *r, uint16_t *s, uint16_t *sum,
                               float *f, long n, int streaming) {
    normkit_residual_sum_bf16_loop(x, r, s, f, n);
    if (sum) normkit_copy16(s, sum, n, streaming);
}
