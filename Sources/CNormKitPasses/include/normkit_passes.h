#ifndef NORMKIT_PASSES_H
#define NORMKIT_PASSES_H

#include <stdint.h>

/* NormKit's elementwise passes over one row (a run of n contiguous values),
   in C so that they run AVX2 code where the CPU has it: each function is
   compiled twice (x86-64-v3 and baseline x86-64, GCC/Clang target_clones; the
   Architecture article of NormKit says why there is no x86-64-v4 clone) and
   the dynamic loader picks one clone for the process. Floating-point
   contraction is off, so every clone computes the same bits: a product and a
   sum are each rounded, as in the formulas below, never fused into an FMA.
   The reductions around them are BLAS calls, in Swift (Sources/NormKit/Driver/Kernels).

   `streaming` != 0 writes the output with non-temporal stores (see NormKit's
   StreamingStores); the values are the same either way. */

/* c[j] = x[j] - m */
void normkit_centre_f(const float *x, float *c, long n, float m);
void normkit_centre_d(const double *x, double *c, long n, double m);

/* y[j] = c[j] * s * g[j] + b[j]   ((c·s)·g, then + b). Without streaming, a
   non-null `next` (the next row of the input) is asked for, one 64-byte line
   per line of `y` written, so that it is in cache when the row kernel reaches
   it; `y` may be `c`. */
void normkit_scale_shift_f(const float *c, float *y, long n, float s,
                           const float *g, const float *b, int streaming, const float *next);
void normkit_scale_shift_d(const double *c, double *y, long n, double s,
                           const double *g, const double *b, int streaming, const double *next);

/* p[j] = dy[j] * ((x[j] - m) * s)   (the gradient times x̂) */
void normkit_product_f(const float *dy, const float *x, float *p, long n, float m, float s);
void normkit_product_d(const double *dy, const double *x, double *p, long n, double m, double s);

/* y[j] = act((x[j] - m) * a + b + r[j]): a slab of one channel (BatchNorm NCHW,
   GroupNorm) and the fused epilogue (normkit_epilogue_*) in one loop; r, mask
   optional (NULL) as there. x may be y. */
void normkit_affine_f(const float *x, float *y, long n, float m, float a, float b,
                      const float *r, unsigned char *mask, int relu, int streaming);
void normkit_affine_d(const double *x, double *y, long n, double m, double a, double b,
                      const double *r, unsigned char *mask, int relu, int streaming);

/* dx[j] = a * dy[j] + b * (x[j] - m) + c: a slab of one channel (BatchNorm NCHW) */
void normkit_combine_slab_f(const float *dy, const float *x, float *dx, long n, float m,
                            float a, float b, float c, int streaming);
void normkit_combine_slab_d(const double *dy, const double *x, double *dx, long n, double m,
                            double a, double b, double c, int streaming);

/* dx[j] = s * (g * dy[j] - a - (x[j] - m) * s * c): a slab of one channel (GroupNorm) */
void normkit_group_combine_f(const float *dy, const float *x, float *dx, long n, float m,
                             float s, float g, float a, float c);
void normkit_group_combine_d(const double *dy, const double *x, double *dx, long n, double m,
                             double s, double g, double a, double c);

/* dx[j] = s * (g[j] * dy[j] - a - (x[j] - m) * s * b), plus sum[j] after that
   value is rounded when `sum` is not NULL (a residual form's sum gradient);
   with `next_dy` and `next_x` (a row ahead's, or NULL) and `next_sum`, a line
   of each asked for per line of dx written. */
void normkit_combine_f(const float *dy, const float *x, const float *sum, float *dx, long n,
                       float m, float s, float a, float b, const float *g, int streaming,
                       const float *next_dy, const float *next_x, const float *next_sum);
void normkit_combine_d(const double *dy, const double *x, const double *sum, double *dx, long n,
                       double m, double s, double a, double b, const double *g, int streaming,
                       const double *next_dy, const double *next_x, const double *next_sum);

/* Batch normalization's passes over one row of n features, with a value per
   feature (column) in each vector argument. */

/* y[i n + j] = (x[i n + j] - mean[j]) * scale[j] + shift[j] over `rows` rows of n
   features, one after another (the row loop in C: short rows pay no call each) */
void normkit_normalize_columns_f(const float *x, float *y, long rows, long n, const float *mean,
                                 const float *scale, const float *shift, int streaming);
void normkit_normalize_columns_d(const double *x, double *y, long rows, long n, const double *mean,
                                 const double *scale, const double *shift, int streaming);

/* x[j] = x[j] * x[j], in place */
void normkit_square_f(float *x, long n);
void normkit_square_d(double *x, long n);

/* Over a rows x n row-major block: squares = (x - mean)^2 elementwise and
   residual[j] += sum over rows of (x - mean[j]) (added to what residual
   holds, so a block of one row at a time accumulates), four rows at a time
   (residual[j] += (d0 + d1) + (d2 + d3); with in_order != 0,
   residual[j] = (((residual[j] + d0) + d1) + d2) + d3, the bits of one row at
   a time), then the rows left one at a time; the four are apart. When copy
   is not NULL, each value of x is also written to copy (rows x n, apart from
   the others): a training pass's cache copy made by the read the statistics
   need anyway. */
void normkit_centred_squares_f(const float *x, float *squares, float *residual, long rows,
                               long n, const float *mean, float *copy, int in_order);
void normkit_centred_squares_d(const double *x, double *squares, double *residual, long rows,
                               long n, const double *mean, double *copy, int in_order);

/* p[j] = dy[j] * (x[j] - mean[j]) */
void normkit_centred_product_columns_f(const float *dy, const float *x, float *p, long n,
                                       const float *mean);
void normkit_centred_product_columns_d(const double *dy, const double *x, double *p, long n,
                                       const double *mean);

/* dx[j] = a[j] * dy[j] + b[j] * (x[j] - mean[j]) + c[j] */
void normkit_combine_columns_f(const float *dy, const float *x, float *dx, long n,
                               const float *mean, const float *a, const float *b,
                               const float *c, int streaming);
void normkit_combine_columns_d(const double *dy, const double *x, double *dx, long n,
                               const double *mean, const double *a, const double *b,
                               const double *c, int streaming);

/* The fused epilogue of a layer's output pass: y[j] = act(z[j] + r[j]), r
   optional (NULL), act the identity or, when relu != 0, relu(v) = v > 0 or NaN
   ? v : +0; with relu and a mask (not NULL, apart from the other buffers),
   mask[j] = 1 where z[j] + r[j] > 0,
   0 elsewhere. z may be y. */
void normkit_epilogue_f(const float *z, const float *r, float *y, unsigned char *mask, long n,
                        int relu, int streaming);
void normkit_epilogue_d(const double *z, const double *r, double *y, unsigned char *mask, long n,
                        int relu, int streaming);

/* y[j] = act((x[j] - mean[j]) * scale[j] + shift[j] + r[j]): BatchNorm's
   normalize pass and the epilogue in one loop; r, mask optional as above. x may be y. */
void normkit_normalize_columns_epilogue_f(const float *x, float *y, long n, const float *mean,
                                          const float *scale, const float *shift, const float *r,
                                          unsigned char *mask, int relu, int streaming);
void normkit_normalize_columns_epilogue_d(const double *x, double *y, long n, const double *mean,
                                          const double *scale, const double *shift,
                                          const double *r, unsigned char *mask, int relu,
                                          int streaming);

/* block[j] = x[j] + r[j] (a scratch block, in cache), then the block to s and,
   when not NULL, to sum with streaming stores: the residual sum of LayerNorm and
   RMSNorm when its outputs are streamed. block, s and sum are apart. */
void normkit_residual_sum_f(const float *x, const float *r, float *block, float *s, float *sum,
                            long n);
void normkit_residual_sum_d(const double *x, const double *r, double *block, double *s,
                            double *sum, long n);

/* g[j] = mask[j] ? dy[j] : +0: the gradient through a ReLU (mask from the epilogue). */
void normkit_relu_mask_f(const float *dy, const unsigned char *mask, float *g, long n);
void normkit_relu_mask_d(const double *dy, const unsigned char *mask, double *g, long n);

/* g[j] = mask[j] ? dy[j] : +0 and p[j] = g[j] * (x[j] - mean[j]): the
   centred product of a ReLU's masked gradient, which it also writes. */
void normkit_centred_product_columns_masked_f(const float *dy, const unsigned char *mask,
                                              const float *x, float *g, float *p, long n,
                                              const float *mean);
void normkit_centred_product_columns_masked_d(const double *dy, const unsigned char *mask,
                                              const double *x, double *g, double *p, long n,
                                              const double *mean);

/* dx[j] = a[j] * (mask[j] ? dy[j] : +0) + b[j] * (x[j] - mean[j]) + c[j] */
void normkit_combine_columns_masked_f(const float *dy, const unsigned char *mask, const float *x,
                                      float *dx, long n, const float *mean, const float *a,
                                      const float *b, const float *c, int streaming);
void normkit_combine_columns_masked_d(const double *dy, const unsigned char *mask,
                                      const double *x, double *dx, long n, const double *mean,
                                      const double *a, const double *b, const double *c,
                                      int streaming);

/* 16-bit storage (reduced.c): Float16 (IEEE binary16) and bfloat16 widened to
   float exactly, float narrowed to them rounding to nearest even (NaN stays a
   quiet NaN with its sign and its payload's top bits). The widening also
   copies h to `copy` when it is not NULL (a training forward's cache). The
   narrowing writes h, and the widening `copy`, with streaming stores when
   `streaming` (where the CPU path has them). The _baseline forms are the
   portable loops, for the tests to compare. */
void normkit_widen_f16(const uint16_t *h, float *f, uint16_t *copy, long n, int streaming);
void normkit_narrow_f16(const float *f, uint16_t *h, long n, int streaming);
void normkit_widen_bf16(const uint16_t *h, float *f, uint16_t *copy, long n, int streaming);
void normkit_narrow_bf16(const float *f, uint16_t *h, long n, int streaming);
/* y[j] = c[j] * s * g[j] + b[j] (as normkit_scale_shift_f) rounded to 16 bits. */
void normkit_scale_shift_f16(const float *c, uint16_t *y, long n, float s, const float *g,
                             const float *b, int streaming);
void normkit_scale_shift_bf16(const float *c, uint16_t *y, long n, float s, const float *g,
                              const float *b, int streaming);
/* BatchNorm's column passes over 16-bit rows of n features: the Float
   expressions of normkit_normalize_columns_epilogue_f (residual r widened,
   ReLU and mask optional as there) on the widened values, each result rounded
   once to 16 bits; x copied to `copy` in the same loop when it is not NULL (an
   inference forward's cache). x and r may be y; copy is apart from them all. */
void normkit_normalize_columns_f16(const uint16_t *x, uint16_t *y, long n, const float *mean,
                                   const float *scale, const float *shift, const uint16_t *r,
                                   unsigned char *mask, int relu, uint16_t *copy, int streaming);
void normkit_normalize_columns_bf16(const uint16_t *x, uint16_t *y, long n, const float *mean,
                                    const float *scale, const float *shift, const uint16_t *r,
                                    unsigned char *mask, int relu, uint16_t *copy, int streaming);
/* dx[j] = a[j] * (mask ? (mask[j] ? dy[j] : +0) : dy[j]) + b[j] * (x[j] - mean[j]) + c[j],
   as normkit_combine_columns_masked_f (mask may be NULL). dy may be dx. */
void normkit_combine_columns_f16(const uint16_t *dy, const unsigned char *mask, const uint16_t *x,
                                 uint16_t *dx, long n, const float *mean, const float *a,
                                 const float *b, const float *c, int streaming);
void normkit_combine_columns_bf16(const uint16_t *dy, const unsigned char *mask, const uint16_t *x,
                                  uint16_t *dx, long n, const float *mean, const float *a,
                                  const float *b, const float *c, int streaming);
/* The 16-bit output of a Float kernel's z through the epilogue of normkit_epilogue_f:
   y[j] = narrow(act(z[j] + widen(r[j]))) (r may be NULL; with relu, mask[j] = v > 0
   when mask is not NULL), rounded once. r may be y. */
void normkit_narrow_epilogue_f16(const float *z, const uint16_t *r, uint16_t *y,
                                 unsigned char *mask, long n, int relu, int streaming);
void normkit_narrow_epilogue_bf16(const float *z, const uint16_t *r, uint16_t *y,
                                  unsigned char *mask, long n, int relu, int streaming);
/* LayerNorm's dx over one row, normkit_combine_f's Float expression
   s * (g[j] * dy[j] - a - (x[j] - m) * s * b) (+ sum[j] when sum is not NULL) on Float
   rows, rounded once to 16 bits as it is written (streaming stores when `streaming`). */
void normkit_combine_row_f16(const float *dy, const float *x, const float *sum, uint16_t *dx,
                             long n, float m, float s, float a, float b, const float *g,
                             int streaming);
void normkit_combine_row_bf16(const float *dy, const float *x, const float *sum, uint16_t *dx,
                              long n, float m, float s, float a, float b, const float *g,
                              int streaming);
/* A residual form's prologue: s[j] = widen(x[j]) + widen(r[j]) rounded to 16 bits (the
   16-bit addition), f[j] = widen(s[j]); s copied to `sum` when it is not NULL. */
void normkit_residual_sum_f16(const uint16_t *x, const uint16_t *r, uint16_t *s, uint16_t *sum,
                              float *f, long n, int streaming);
void normkit_residual_sum_bf16(const uint16_t *x, const uint16_t *r, uint16_t *s, uint16_t *sum,
                               float *f, long n, int streaming);
/* BatchNorm's centred squares over one 16-bit row: d = widen(x[j]) - mean[j],
   residual[j] += d, squares[j] = d * d (normkit_centred_squares_f on the widened row). */
void normkit_centred_squares_row_f16(const uint16_t *x, float *squares, float *residual, long n,
                                     const float *mean);
void normkit_centred_squares_row_bf16(const uint16_t *x, float *squares, float *residual, long n,
                                      const float *mean);
void normkit_widen_f16_baseline(const uint16_t *h, float *f, long n);
void normkit_narrow_f16_baseline(const float *f, uint16_t *h, long n);
void normkit_narrow_bf16_baseline(const float *f, uint16_t *h, long n);

#endif
