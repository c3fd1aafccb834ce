// The elementwise passes of normkit_passes.h. Each is one loop written once
// per scalar type by a macro; the compiler vectorizes it for each clone. The
// streaming forms write the 16-byte-aligned middle of the row four (Float) or
// two (Double) values at a time with __builtin_nontemporal_store.
#include "normkit_passes.h"

#pragma STDC FP_CONTRACT OFF

#include "clones.h"

// How many of the `count` values of type T at `out` come before its first
// 16-byte boundary (all of them when `out` is not aligned to T): the scalar
// head of a streaming write.
#define NORMKIT_STREAM_HEAD(T, out, count) ({                                           \
        long _head = (long)((16 - ((unsigned long)(out) & 15)) & 15) / (long)sizeof(T);   \
        if (((unsigned long)(out) & (sizeof(T) - 1)) != 0) _head = (count);               \
        _head > (count) ? (count) : _head;                                                \
    })

// Stores `count` values VALUE(j) at `out`, with streaming stores on the
// 16-byte-aligned middle when `streaming`. VECTOR is a 16-byte vector type of
// T; VALUE is an expression in j that also works on vectors of T.
#define NORMKIT_WRITE(T, VECTOR, out, count, streaming, LOAD_VALUE, VALUE)               \
    do {                                                                                  \
        long j = 0;                                                                       \
        if (streaming) {                                                                  \
            const long lanes = (long)(16 / sizeof(T));                                    \
            const long head = NORMKIT_STREAM_HEAD(T, out, count);                         \
            for (; j < head; j++) { (out)[j] = (VALUE); }                                 \
            for (; j + lanes <= count; j += lanes) {                                      \
                VECTOR v = LOAD_VALUE;                                                    \
                __builtin_nontemporal_store(v, (VECTOR *)((out) + j));                    \
            }                                                                             \
        }                                                                                 \
        for (; j < count; j++) { (out)[j] = (VALUE); }                                    \
    } while (0)

#define NORMKIT_LOAD(VECTOR, p) ({ VECTOR _v; __builtin_memcpy(&_v, (p), sizeof _v); _v; })

// y = c·s·g + b a 64-byte line at a time (streamed from the first 16-byte
// boundary when `streaming`), asking for a line of `next` per line written
// (`y` apart from the others): into L1 when the output is stored, into L2 when
// it streams (the rows come from memory then).
#define NORMKIT_SCALE_SHIFT_NEXT(T, SUFFIX, VECTOR)                                       \
    __attribute__((always_inline)) static inline void normkit_scale_shift_next_##SUFFIX(  \
        const T *restrict c, T *restrict y, long n, T s, const T *restrict g,             \
        const T *restrict b, int streaming, const T *next) {                              \
        const long line = 64 / (long)sizeof(T), lanes = 16 / (long)sizeof(T);            \
        long j = 0;                                                                       \
        if (streaming) {                                                                  \
            const long head = NORMKIT_STREAM_HEAD(T, y, n);                               \
            for (; j < head; j++) y[j] = c[j] * s * g[j] + b[j];                          \
            for (; j + line <= n; j += line) {                                            \
                __builtin_prefetch(next + j, 0, 2);                                       \
                for (long k = j; k < j + line; k += lanes) {                              \
                    VECTOR v = NORMKIT_LOAD(VECTOR, c + k) * s * NORMKIT_LOAD(VECTOR, g + k) \
                               + NORMKIT_LOAD(VECTOR, b + k);                             \
                    __builtin_nontemporal_store(v, (VECTOR *)(y + k));                    \
                }                                                                         \
            }                                                                             \
        } else {                                                                          \
            for (; j + line <= n; j += line) {                                            \
                __builtin_prefetch(next + j, 0, 3);                                       \
                for (long k = j; k < j + line; k++) y[k] = c[k] * s * g[k] + b[k];        \
            }                                                                             \
        }                                                                                 \
        for (; j < n; j++) y[j] = c[j] * s * g[j] + b[j];                                 \
    }

// LayerNorm's dx over a row a 64-byte line at a time (streamed from the first
// 16-byte boundary when `streaming`), plus `sum` (a residual form's sum
// gradient) after the row's value is rounded when `has_sum` (a constant in each
// inlined use, so both forms vectorize), asking for a line of the row ahead's
// dy, x (and sum) into L2 per line written: that row's first pass then finds
// them there. (Into L1 they evicted the rows in use where a row is 8 KiB,
// Double.)
#define NORMKIT_COMBINE_NEXT(T, SUFFIX, VECTOR)                                           \
    __attribute__((always_inline)) static inline void normkit_combine_next_##SUFFIX(      \
        const T *restrict dy, const T *restrict x, const T *restrict sum, T *restrict dx, \
        long n, T m, T s, T a, T b, const T *restrict g, int streaming,                   \
        const T *next_dy, const T *next_x, const T *next_sum, const int has_sum) {        \
        const long line = 64 / (long)sizeof(T), lanes = 16 / (long)sizeof(T);            \
        long j = streaming ? NORMKIT_STREAM_HEAD(T, dx, n) : 0;                           \
        for (long k = 0; k < j; k++) {                                                    \
            T t = s * (g[k] * dy[k] - a - (x[k] - m) * s * b);                            \
            dx[k] = has_sum ? t + sum[k] : t;                                             \
        }                                                                                 \
        for (; j + line <= n; j += line) {                                                \
            __builtin_prefetch(next_dy + j, 0, 2);                                        \
            __builtin_prefetch(next_x + j, 0, 2);                                         \
            if (has_sum) __builtin_prefetch(next_sum + j, 0, 2);                          \
            if (streaming) {                                                              \
                for (long k = j; k < j + line; k += lanes) {                              \
                    VECTOR v = s * (NORMKIT_LOAD(VECTOR, g + k) * NORMKIT_LOAD(VECTOR, dy + k) \
                                    - a - (NORMKIT_LOAD(VECTOR, x + k) - m) * s * b);     \
                    if (has_sum) v = v + NORMKIT_LOAD(VECTOR, sum + k);                   \
                    __builtin_nontemporal_store(v, (VECTOR *)(dx + k));                   \
                }                                                                         \
            } else {                                                                      \
                for (long k = j; k < j + line; k++) {                                     \
                    T t = s * (g[k] * dy[k] - a - (x[k] - m) * s * b);                    \
                    dx[k] = has_sum ? t + sum[k] : t;                                     \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
        for (; j < n; j++) {                                                              \
            T t = s * (g[j] * dy[j] - a - (x[j] - m) * s * b);                            \
            dx[j] = has_sum ? t + sum[j] : t;                                             \
        }                                                                                 \
    }

// The centred squares of a block and the residual sums added to `residual`,
// each value also copied to `copy` when `copying`; with `in_order`, a group
// of four rows adds its residuals one row after another, the bits of one row
// at a time (both constants in each inlined use, so every form vectorizes).
#define NORMKIT_CENTRED_SQUARES_ROWS(T, SUFFIX)                                           \
    __attribute__((always_inline)) static inline void                                     \
        normkit_centred_squares_rows_##SUFFIX(const T *restrict x, T *restrict squares,   \
                                              T *restrict residual, long rows, long n,    \
                                              const T *restrict mean, T *restrict copy,   \
                                              const int copying, const int in_order) {    \
        long i = 0;                                                                       \
        for (; i + 4 <= rows; i += 4) {                                                   \
            const T *x0 = x + i * n, *x1 = x0 + n, *x2 = x1 + n, *x3 = x2 + n;            \
            T *s0 = squares + i * n, *s1 = s0 + n, *s2 = s1 + n, *s3 = s2 + n;            \
            T *c0 = copy + i * n, *c1 = c0 + n, *c2 = c1 + n, *c3 = c2 + n;               \
            for (long j = 0; j < n; j++) {                                                \
                T m = mean[j], v0 = x0[j], v1 = x1[j], v2 = x2[j], v3 = x3[j];            \
                if (copying) {                                                            \
                    c0[j] = v0;                                                           \
                    c1[j] = v1;                                                           \
                    c2[j] = v2;                                                           \
                    c3[j] = v3;                                                           \
                }                                                                         \
                T d0 = v0 - m, d1 = v1 - m, d2 = v2 - m, d3 = v3 - m;                     \
                if (in_order)                                                             \
                    residual[j] = (((residual[j] + d0) + d1) + d2) + d3;                  \
                else                                                                      \
                    residual[j] += (d0 + d1) + (d2 + d3);                                 \
                s0[j] = d0 * d0;                                                          \
                s1[j] = d1 * d1;                                                          \
                s2[j] = d2 * d2;                                                          \
                s3[j] = d3 * d3;                                                          \
            }                                                                             \
        }                                                                                 \
        for (; i < rows; i++) {                                                           \
            const T *row = x + i * n;                                                     \
            T *out = squares + i * n, *c = copy + i * n;                                  \
            for (long j = 0; j < n; j++) {                                                \
                T v = row[j];                                                             \
                if (copying) c[j] = v;                                                    \
                T d = v - mean[j];                                                        \
                residual[j] += d;                                                         \
                out[j] = d * d;                                                           \
            }                                                                             \
        }                                                                                 \
    }
NORMKIT_CENTRED_SQUARES_ROWS(float, f)
NORMKIT_CENTRED_SQUARES_ROWS(double, d)

#define NORMKIT_PASSES(T, SUFFIX, VECTOR)                                                 \
    NORMKIT_CLONES void normkit_centre_##SUFFIX(const T *x, T *c, long n, T m) {          \
        for (long j = 0; j < n; j++) c[j] = x[j] - m;                                     \
    }                                                                                     \
    NORMKIT_CLONES void normkit_scale_shift_##SUFFIX(const T *c, T *y, long n, T s,       \
                                                     const T *g, const T *b,              \
                                                     int streaming, const T *next) {      \
        if (next && (const T *)y != c) {                                                  \
            /* A line of `next` asked for per line of `y` written. */                     \
            normkit_scale_shift_next_##SUFFIX(c, y, n, s, g, b, streaming, next);         \
            return;                                                                       \
        }                                                                                 \
        NORMKIT_WRITE(T, VECTOR, y, n, streaming,                                         \
            NORMKIT_LOAD(VECTOR, c + j) * s * NORMKIT_LOAD(VECTOR, g + j)                 \
                + NORMKIT_LOAD(VECTOR, b + j),                                            \
            c[j] * s * g[j] + b[j]);                                                      \
    }                                                                                     \
    NORMKIT_CLONES void normkit_product_##SUFFIX(const T *dy, const T *x, T *p, long n,   \
                                                 T m, T s) {                              \
        for (long j = 0; j < n; j++) p[j] = dy[j] * ((x[j] - m) * s);                     \
    }                                                                                     \
    NORMKIT_CLONES void normkit_combine_slab_##SUFFIX(const T *dy, const T *x, T *dx,     \
                                                      long n, T m, T a, T b, T c,         \
                                                      int streaming) {                    \
        NORMKIT_WRITE(T, VECTOR, dx, n, streaming,                                        \
            a * NORMKIT_LOAD(VECTOR, dy + j) + b * (NORMKIT_LOAD(VECTOR, x + j) - m) + c, \
            a * dy[j] + b * (x[j] - m) + c);                                              \
    }                                                                                     \
    NORMKIT_CLONES void normkit_group_combine_##SUFFIX(const T *dy, const T *x, T *dx,    \
                                                       long n, T m, T s, T g, T a, T c) { \
        for (long j = 0; j < n; j++) dx[j] = s * (g * dy[j] - a - (x[j] - m) * s * c);    \
    }                                                                                     \
    NORMKIT_CLONES void normkit_combine_##SUFFIX(const T *dy, const T *x, const T *sum,    \
                                                 T *dx, long n, T m, T s, T a, T b,       \
                                                 const T *g, int streaming,               \
                                                 const T *next_dy, const T *next_x,       \
                                                 const T *next_sum) {                     \
        if (next_dy && next_x && (next_sum || !sum)) {                                    \
            if (sum)                                                                      \
                normkit_combine_next_##SUFFIX(dy, x, sum, dx, n, m, s, a, b, g, streaming, \
                                              next_dy, next_x, next_sum, 1);              \
            else                                                                          \
                normkit_combine_next_##SUFFIX(dy, x, sum, dx, n, m, s, a, b, g, streaming, \
                                              next_dy, next_x, next_sum, 0);              \
            return;                                                                       \
        }                                                                                 \
        if (sum) {                                                                        \
            NORMKIT_WRITE(T, VECTOR, dx, n, streaming,                                    \
                s * (NORMKIT_LOAD(VECTOR, g + j) * NORMKIT_LOAD(VECTOR, dy + j) - a       \
                     - (NORMKIT_LOAD(VECTOR, x + j) - m) * s * b)                         \
                    + NORMKIT_LOAD(VECTOR, sum + j),                                      \
                s * (g[j] * dy[j] - a - (x[j] - m) * s * b) + sum[j]);                    \
            return;                                                                       \
        }                                                                                 \
        NORMKIT_WRITE(T, VECTOR, dx, n, streaming,                                        \
            s * (NORMKIT_LOAD(VECTOR, g + j) * NORMKIT_LOAD(VECTOR, dy + j) - a           \
                 - (NORMKIT_LOAD(VECTOR, x + j) - m) * s * b),                            \
            s * (g[j] * dy[j] - a - (x[j] - m) * s * b));                                 \
    }

#define NORMKIT_COLUMN_PASSES(T, SUFFIX, VECTOR)                                          \
    NORMKIT_CLONES void normkit_normalize_columns_##SUFFIX(const T *x, T *y, long rows,   \
                                                           long n, const T *mean,         \
                                                           const T *scale,                \
                                                           const T *shift,                \
                                                           int streaming) {               \
        for (long i = 0; i < rows; i++) {                                                 \
            const T *xi = x + i * n;                                                      \
            T *yi = y + i * n;                                                            \
            NORMKIT_WRITE(T, VECTOR, yi, n, streaming,                                    \
                (NORMKIT_LOAD(VECTOR, xi + j) - NORMKIT_LOAD(VECTOR, mean + j))           \
                    * NORMKIT_LOAD(VECTOR, scale + j) + NORMKIT_LOAD(VECTOR, shift + j),  \
                (xi[j] - mean[j]) * scale[j] + shift[j]);                                 \
        }                                                                                 \
    }                                                                                     \
    NORMKIT_CLONES void normkit_square_##SUFFIX(T *x, long n) {                           \
        for (long j = 0; j < n; j++) x[j] = x[j] * x[j];                                  \
    }                                                                                     \
    NORMKIT_CLONES void normkit_centred_squares_##SUFFIX(const T *x, T *squares,          \
                                                         T *residual, long rows, long n,  \
                                                         const T *mean, T *copy,          \
                                                         int in_order) {                  \
        /* copy unused where not copying */                                               \
        if (copy && in_order)                                                             \
            normkit_centred_squares_rows_##SUFFIX(x, squares, residual, rows, n, mean,    \
                                                  copy, 1, 1);                            \
        else if (copy)                                                                    \
            normkit_centred_squares_rows_##SUFFIX(x, squares, residual, rows, n, mean,    \
                                                  copy, 1, 0);                            \
        else if (in_order)                                                                \
            normkit_centred_squares_rows_##SUFFIX(x, squares, residual, rows, n, mean,    \
                                                  squares, 0, 1);                         \
        else                                                                              \
            normkit_centred_squares_rows_##SUFFIX(x, squares, residual, rows, n, mean,    \
                                                  squares, 0, 0);                         \
    }                                                                                     \
    NORMKIT_CLONES void normkit_centred_product_columns_##SUFFIX(const T *dy, const T *x, \
                                                                 T *p, long n,            \
                                                                 const T *mean) {         \
        for (long j = 0; j < n; j++) p[j] = dy[j] * (x[j] - mean[j]);                     \
    }                                                                                     \
    NORMKIT_CLONES void normkit_combine_columns_##SUFFIX(const T *dy, const T *x, T *dx,  \
                                                         long n, const T *mean,           \
                                                         const T *a, const T *b,          \
                                                         const T *c, int streaming) {     \
        NORMKIT_WRITE(T, VECTOR, dx, n, streaming,                                        \
            NORMKIT_LOAD(VECTOR, a + j) * NORMKIT_LOAD(VECTOR, dy + j)                    \
                + NORMKIT_LOAD(VECTOR, b + j)                                             \
                    * (NORMKIT_LOAD(VECTOR, x + j) - NORMKIT_LOAD(VECTOR, mean + j))      \
                + NORMKIT_LOAD(VECTOR, c + j),                                            \
            a[j] * dy[j] + b[j] * (x[j] - mean[j]) + c[j]);                               \
    }

typedef float normkit_float4 __attribute__((vector_size(16)));
typedef double normkit_double2 __attribute__((vector_size(16)));

NORMKIT_SCALE_SHIFT_NEXT(float, f, normkit_float4)
NORMKIT_SCALE_SHIFT_NEXT(double, d, normkit_double2)
NORMKIT_COMBINE_NEXT(float, f, normkit_float4)
NORMKIT_COMBINE_NEXT(double, d, normkit_double2)
NORMKIT_PASSES(float, f, normkit_float4)
NORMKIT_PASSES(double, d, normkit_double2)
NORMKIT_COLUMN_PASSES(float, f, normkit_float4)
NORMKIT_COLUMN_PASSES(double, d, normkit_double2)

// Writes relu(v) for the `count` values v = VALUE(j) (LOAD_VALUE four or two
// at a time) to `out`, streaming as NORMKIT_WRITE does, and mask[j] = v > 0 in
// the same loop when `mask` is not NULL.
#define NORMKIT_WRITE_RELU(T, SUFFIX, VECTOR, out, count, streaming, LOAD_VALUE, VALUE)     \
    do {                                                                                  \
        long j = 0;                                                                       \
        if (streaming) {                                                                  \
            const long lanes = (long)(16 / sizeof(T));                                    \
            const long head = NORMKIT_STREAM_HEAD(T, out, count);                         \
            for (; j < head; j++) {                                                       \
                T v = (VALUE);                                                            \
                if (mask) mask[j] = v > 0;                                                \
                (out)[j] = normkit_relu_##SUFFIX(v);                                      \
            }                                                                             \
            for (; j + lanes <= count; j += lanes) {                                      \
                VECTOR v = LOAD_VALUE;                                                    \
                if (mask) normkit_store_mask_##SUFFIX(mask + j, v);                       \
                __builtin_nontemporal_store(normkit_relu_v_##SUFFIX(v), (VECTOR *)((out) + j)); \
            }                                                                             \
        }                                                                                 \
        if (mask) {                                                                       \
            for (; j < count; j++) {                                                      \
                T v = (VALUE);                                                            \
                mask[j] = v > 0;                                                          \
                (out)[j] = normkit_relu_##SUFFIX(v);                                      \
            }                                                                             \
        } else {                                                                          \
            for (; j < count; j++) (out)[j] = normkit_relu_##SUFFIX(VALUE);               \
        }                                                                                 \
    } while (0)

// The fused epilogue: y[j] = act(z[j] + r[j]) (r optional). relu(v) = v > 0 ||
// v is NaN ? v : +0, by a mask of the bits, so that -0 becomes +0 and NaN
// passes; with a ReLU and a mask, mask[j] = (z[j] + r[j] > 0) in the same loop.
// z may be y. z == y also has its own loops reading y, which the compiler
// vectorizes without the overlap check that sends z == y to its scalar loop.
#define NORMKIT_EPILOGUE_EXPR(T, SUFFIX, VECTOR, ZV, ZS)                                  \
    if (r && relu) {                                                                      \
        NORMKIT_WRITE_RELU(T, SUFFIX, VECTOR, y, n, streaming,                            \
            (ZV) + NORMKIT_LOAD(VECTOR, r + j), (ZS) + r[j]);                             \
    } else if (r) {                                                                       \
        NORMKIT_WRITE(T, VECTOR, y, n, streaming,                                         \
            (ZV) + NORMKIT_LOAD(VECTOR, r + j), (ZS) + r[j]);                             \
    } else if (relu) {                                                                    \
        NORMKIT_WRITE_RELU(T, SUFFIX, VECTOR, y, n, streaming, ZV, ZS);                   \
    } else {                                                                              \
        NORMKIT_WRITE(T, VECTOR, y, n, streaming, ZV, ZS);                                \
    }

#define NORMKIT_EPILOGUE_BODY(T, SUFFIX, VECTOR, SRC)                                     \
    NORMKIT_EPILOGUE_EXPR(T, SUFFIX, VECTOR, NORMKIT_LOAD(VECTOR, SRC + j), SRC[j])

#define NORMKIT_NORMALIZE_Z(VECTOR, X)                                                    \
    (NORMKIT_LOAD(VECTOR, X + j) - NORMKIT_LOAD(VECTOR, mean + j)) * NORMKIT_LOAD(VECTOR, scale + j) \
        + NORMKIT_LOAD(VECTOR, shift + j)

#define NORMKIT_EPILOGUE(T, SUFFIX, VECTOR, MASK)                                         \
    static inline T normkit_relu_##SUFFIX(T v) { return (v > 0 || v != v) ? v : (T)0; }   \
    static inline VECTOR normkit_relu_v_##SUFFIX(VECTOR v) {                              \
        MASK m = (v > (VECTOR){0}) | (v != v);                                            \
        return (VECTOR)((MASK)v & m);                                                     \
    }                                                                                     \
    /* dy read unconditionally, so that the loops vectorize (no conditional load) */      \
    static inline T normkit_select_##SUFFIX(unsigned char m, T d) { return m ? d : (T)0; } \
    /* In place (g == dy, the 16-bit backward's widened unit), with the      */          \
    /* pointers restrict: the general loop's overlap check fails for equal   */          \
    /* pointers and ran a branch per element (measured 9x slower backward).  */          \
    static inline void normkit_relu_mask_in_place_##SUFFIX(T *restrict g,                 \
                                                           const unsigned char *restrict mask, \
                                                           long n) {                      \
        for (long j = 0; j < n; j++) { T d = g[j]; g[j] = mask[j] ? d : (T)0; }           \
    }                                                                                     \
    NORMKIT_CLONES void normkit_relu_mask_##SUFFIX(const T *dy, const unsigned char *mask, \
                                                   T *g, long n) {                        \
        if (g == dy) { normkit_relu_mask_in_place_##SUFFIX(g, mask, n); return; }         \
        for (long j = 0; j < n; j++) { T d = dy[j]; g[j] = mask[j] ? d : (T)0; }          \
    }                                                                                     \
    NORMKIT_CLONES void normkit_residual_sum_##SUFFIX(const T *x, const T *r,             \
                                                      T *restrict block, T *restrict s,   \
                                                      T *restrict sum, long n) {          \
        for (long j = 0; j < n; j++) block[j] = x[j] + r[j];                              \
        NORMKIT_WRITE(T, VECTOR, s, n, 1, NORMKIT_LOAD(VECTOR, block + j), block[j]);     \
        if (sum) NORMKIT_WRITE(T, VECTOR, sum, n, 1, NORMKIT_LOAD(VECTOR, block + j), block[j]); \
    }                                                                                     \
    NORMKIT_CLONES void normkit_centred_product_columns_masked_##SUFFIX(                  \
            const T *dy, const unsigned char *mask, const T *x, T *restrict g, T *restrict p, long n,       \
            const T *mean) {                                                              \
        for (long j = 0; j < n; j++) {                                                    \
            T d = dy[j], gj = mask[j] ? d : (T)0;                                         \
            g[j] = gj;                                                                    \
            p[j] = gj * (x[j] - mean[j]);                                                 \
        }                                                                                 \
    }                                                                                     \
    NORMKIT_CLONES void normkit_combine_columns_masked_##SUFFIX(                          \
            const T *dy, const unsigned char *mask, const T *x, T *dx, long n,            \
            const T *mean, const T *a, const T *b, const T *c, int streaming) {           \
        NORMKIT_WRITE(T, VECTOR, dx, n, streaming,                                        \
            NORMKIT_LOAD(VECTOR, a + j) * normkit_select_v_##SUFFIX(mask + j, dy + j)     \
                + NORMKIT_LOAD(VECTOR, b + j)                                             \
                    * (NORMKIT_LOAD(VECTOR, x + j) - NORMKIT_LOAD(VECTOR, mean + j))      \
                + NORMKIT_LOAD(VECTOR, c + j),                                            \
            a[j] * normkit_select_##SUFFIX(mask[j], dy[j]) + b[j] * (x[j] - mean[j]) + c[j]);            \
    }                                                                                     \
    NORMKIT_CLONES void normkit_normalize_columns_epilogue_##SUFFIX(                      \
            const T *x, T *y, long n, const T *mean, const T *scale, const T *shift,      \
            const T *r, unsigned char *restrict mask, int relu, int streaming) {          \
        if (x == y) {                                                                     \
            NORMKIT_EPILOGUE_EXPR(T, SUFFIX, VECTOR, NORMKIT_NORMALIZE_Z(VECTOR, y),      \
                                  (y[j] - mean[j]) * scale[j] + shift[j])                 \
        } else {                                                                          \
            NORMKIT_EPILOGUE_EXPR(T, SUFFIX, VECTOR, NORMKIT_NORMALIZE_Z(VECTOR, x),      \
                                  (x[j] - mean[j]) * scale[j] + shift[j])                 \
        }                                                                                 \
    }                                                                                     \
    NORMKIT_CLONES void normkit_affine_##SUFFIX(const T *x, T *y, long n, T m, T a, T b,  \
                                                const T *r, unsigned char *restrict mask, \
                                                int relu, int streaming) {                \
        if (x == y) {                                                                     \
            NORMKIT_EPILOGUE_EXPR(T, SUFFIX, VECTOR, (NORMKIT_LOAD(VECTOR, y + j) - m) * a + b, \
                                  (y[j] - m) * a + b)                                     \
        } else {                                                                          \
            NORMKIT_EPILOGUE_EXPR(T, SUFFIX, VECTOR, (NORMKIT_LOAD(VECTOR, x + j) - m) * a + b, \
                                  (x[j] - m) * a + b)                                     \
        }                                                                                 \
    }                                                                                     \
    NORMKIT_CLONES void normkit_epilogue_##SUFFIX(const T *z, const T *r, T *y,           \
                                                  unsigned char *restrict mask,           \
                                                  long n, int relu,                       \
                                                  int streaming) {                        \
        if (z == y) {                                                                     \
            NORMKIT_EPILOGUE_BODY(T, SUFFIX, VECTOR, y)                                   \
        } else {                                                                          \
            NORMKIT_EPILOGUE_BODY(T, SUFFIX, VECTOR, z)                                   \
        }                                                                                 \
    }

typedef int normkit_int4 __attribute__((vector_size(16)));
typedef long long normkit_long2 __attribute__((vector_size(16)));

typedef unsigned char normkit_uchar4 __attribute__((vector_size(4)));
typedef unsigned char normkit_uchar2 __attribute__((vector_size(2)));

// mask[0..lanes) = v > 0 (1 or 0), one byte per lane.
static inline void normkit_store_mask_f(unsigned char *m, normkit_float4 v) {
    normkit_uchar4 bytes = __builtin_convertvector((v > (normkit_float4){0}) & 1, normkit_uchar4);
    __builtin_memcpy(m, &bytes, sizeof bytes);
}
static inline void normkit_store_mask_d(unsigned char *m, normkit_double2 v) {
    normkit_uchar2 bytes = __builtin_convertvector((v > (normkit_double2){0}) & 1, normkit_uchar2);
    __builtin_memcpy(m, &bytes, sizeof bytes);
}

// The lanes of dy at p whose mask byte is not 0, +0 elsewhere (the mask's
// bytes widened to lanes and compared, so no branch per lane).
static inline normkit_float4 normkit_select_v_f(const unsigned char *m, const float *p) {
    normkit_uchar4 bytes;
    __builtin_memcpy(&bytes, m, sizeof bytes);
    normkit_int4 keep = __builtin_convertvector(bytes, normkit_int4) != (normkit_int4){0};
    return (normkit_float4)((normkit_int4)NORMKIT_LOAD(normkit_float4, p) & keep);
}
static inline normkit_double2 normkit_select_v_d(const unsigned char *m, const double *p) {
    normkit_uchar2 bytes;
    __builtin_memcpy(&bytes, m, sizeof bytes);
    normkit_long2 keep = __builtin_convertvector(bytes, normkit_long2) != (normkit_long2){0};
    return (normkit_double2)((normkit_long2)NORMKIT_LOAD(normkit_double2, p) & keep);
}

NORMKIT_EPILOGUE(float, f, normkit_float4, normkit_int4)
NORMKIT_EPILOGUE(double, d, normkit_double2, normkit_long2)
