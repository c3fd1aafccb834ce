/// A floating-point type that OpenBLAS computes with: `Float` (the `cblas_s*`
/// routines) and `Double` (the `cblas_d*` routines).
///
/// The layers are generic over `BLASScalar` and written once for both
/// precisions. Every matrix is row-major (C order).
///
/// The BLAS and LAPACK routines themselves are requirements of this protocol
/// (`gemv`, `axpy`, `scal`, `copy`, `dot`, `ger`, `gemm`, `syrk`; LAPACKE's
/// `syevd`, `potrf`, `trtri`), one per C routine, and are not public API: they are System Programming
/// Interface `@_spi(BLAS)`, which NormKit's own tools (NormLab, normbench)
/// import with `@_spi(BLAS) import NormKit`. Sizes are `Int`; the conformances
/// convert them to OpenBLAS's 32-bit `blasint` in one place, after the layers
/// have validated them (see ``NormError/sizeTooLarge(_:)``).
///
/// A `BLASScalar` is also a `SIMDScalar` (and so `Codable`, as `SIMDScalar`'s
/// storage types are), so that NormKit's output passes can write
/// `SIMD4<Scalar>` values with streaming stores.
///
/// `Float16` is not a `BLASScalar`: OpenBLAS 0.3.21 has no half-precision
/// `gemv`, `axpy` or `dot`, and statistics of half-precision data must be
/// accumulated in `Float` anyway.
public protocol BLASScalar: BinaryFloatingPoint, SIMDScalar, Codable, Sendable {
    /// Matrix-vector product `y = alpha * op(A) * x + beta * y` (`?gemv`).
    ///
    /// - Parameters:
    ///   - transpose: `false` for `op(A) = A` (row sums when `x` is ones),
    ///     `true` for `op(A) = Aᵀ` (column sums when `x` is ones).
    ///   - rows: rows of `A` (`m`).
    ///   - columns: columns of `A` (`n`).
    ///   - a: `A`, row-major with leading dimension `lda >= columns`.
    ///   - x: length `columns` (no transpose) or `rows` (transpose).
    ///   - y: length `rows` (no transpose) or `columns` (transpose).
    @_spi(BLAS) static func gemv(
        transpose: Bool, rows: Int, columns: Int, alpha: Self,
        a: UnsafePointer<Self>, lda: Int, x: UnsafePointer<Self>, incx: Int,
        beta: Self, y: UnsafeMutablePointer<Self>, incy: Int)

    /// `y = alpha * x + y` over `count` elements (`?axpy`).
    @_spi(BLAS) static func axpy(
        count: Int, alpha: Self, x: UnsafePointer<Self>, incx: Int,
        y: UnsafeMutablePointer<Self>, incy: Int)

    /// `x = alpha * x` over `count` elements (`?scal`).
    @_spi(BLAS) static func scal(count: Int, alpha: Self, x: UnsafeMutablePointer<Self>, incx: Int)

    /// `y = x` over `count` elements (`?copy`).
    @_spi(BLAS) static func copy(
        count: Int, x: UnsafePointer<Self>, incx: Int,
        y: UnsafeMutablePointer<Self>, incy: Int)

    /// The dot product `xᵀy` over `count` elements (`?dot`).
    @_spi(BLAS) static func dot(
        count: Int, x: UnsafePointer<Self>, incx: Int,
        y: UnsafePointer<Self>, incy: Int) -> Self

    /// Rank-one update `A = alpha * x yᵀ + A`, row-major `rows x columns` (`?ger`).
    @_spi(BLAS) static func ger(
        rows: Int, columns: Int, alpha: Self, x: UnsafePointer<Self>, incx: Int,
        y: UnsafePointer<Self>, incy: Int, a: UnsafeMutablePointer<Self>, lda: Int)

    /// Matrix product `C = alpha * op(A) op(B) + beta * C`, row-major (`?gemm`).
    ///
    /// `op(A)` is `rows x inner`, `op(B)` is `inner x columns`, `C` is `rows x columns`.
    @_spi(BLAS) static func gemm(
        transposeA: Bool, transposeB: Bool, rows: Int, columns: Int, inner: Int,
        alpha: Self, a: UnsafePointer<Self>, lda: Int,
        b: UnsafePointer<Self>, ldb: Int,
        beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)

    /// Symmetric rank-k update of the upper triangle, `C = alpha * AᵀA + beta * C`
    /// (`?syrk`, upper, transposed), `A` row-major `inner x order` with leading
    /// dimension `lda`, `C` `order x order`. The strict lower triangle of `C` is
    /// not written.
    @_spi(BLAS) static func syrk(
        order: Int, inner: Int, alpha: Self, a: UnsafePointer<Self>, lda: Int,
        beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)

    /// The eigenvalues (ascending, into `values`) and eigenvectors (the columns
    /// of `a`, overwritten) of the symmetric row-major `order x order` matrix
    /// `a`, from its upper triangle (LAPACKE `?syevd`, divide and conquer).
    /// Returns LAPACK's `info`: 0 on success.
    @_spi(BLAS) static func syevd(
        order: Int, a: UnsafeMutablePointer<Self>, lda: Int,
        values: UnsafeMutablePointer<Self>) -> Int

    /// The Cholesky factor `L` (`A = L Lᵀ`) of the symmetric positive definite
    /// row-major matrix `a`, written over its lower triangle (LAPACKE `?potrf`,
    /// lower); the strict upper triangle is not referenced. Returns LAPACK's
    /// `info`: 0 on success, `k > 0` when the leading minor of order `k` is
    /// not positive definite.
    @_spi(BLAS) static func potrf(order: Int, a: UnsafeMutablePointer<Self>, lda: Int) -> Int

    /// The inverse of the lower-triangular (non-unit) row-major matrix `a`, in
    /// place (LAPACKE `?trtri`, lower). Returns LAPACK's `info`: 0 on
    /// success, `k > 0` when `a[k-1][k-1]` is zero.
    @_spi(BLAS) static func trtri(order: Int, a: UnsafeMutablePointer<Self>, lda: Int) -> Int

    // The elementwise passes of the row kernels (`CNormKitPasses`: C compiled
    // for AVX2 and baseline x86-64, one clone picked per process, with no
    // fused multiply-adds, so every clone gives the same bits).

    /// `c[j] = x[j] - mean` over `count` elements (`normkit_centre_*`).
    @_spi(BLAS) static func centre(
        count: Int, x: UnsafePointer<Self>, mean: Self, c: UnsafeMutablePointer<Self>)

    /// `y[j] = c[j]·scale·gamma[j] + beta[j]` over `count` elements, with
    /// streaming stores when `streaming` (`normkit_scale_shift_*`); without
    /// them, a non-nil `next` (the input's next row) is prefetched, a line
    /// per line of `y` written.
    @_spi(BLAS) static func scaleShift(
        count: Int, c: UnsafePointer<Self>, scale: Self, gamma: UnsafePointer<Self>,
        beta: UnsafePointer<Self>, y: UnsafeMutablePointer<Self>, streaming: Bool,
        next: UnsafePointer<Self>?)

    /// `p[j] = dy[j]·((x[j] - mean)·invstd)` over `count` elements
    /// (`normkit_product_*`).
    @_spi(BLAS) static func product(
        count: Int, dy: UnsafePointer<Self>, x: UnsafePointer<Self>, mean: Self, invstd: Self,
        p: UnsafeMutablePointer<Self>)

    /// `y[j] = act((x[j] - mean)·scale + shift + r[j])` over `count` values of
    /// one channel, with streaming stores when `streaming`: the affine map and
    /// ``epilogue(count:z:residual:y:mask:relu:streaming:)`` in one loop
    /// (`normkit_affine_*`). `x` may be `y`.
    @_spi(BLAS) static func affine(
        count: Int, x: UnsafePointer<Self>, mean: Self, scale: Self, shift: Self,
        residual: UnsafePointer<Self>?, y: UnsafeMutablePointer<Self>,
        mask: UnsafeMutablePointer<UInt8>?, relu: Bool, streaming: Bool)

    /// `dx[j] = a·dy[j] + b·(x[j] - mean) + c` over `count` values of one
    /// channel, with streaming stores when `streaming` (`normkit_combine_slab_*`).
    @_spi(BLAS) static func combineSlab(
        count: Int, dy: UnsafePointer<Self>, x: UnsafePointer<Self>, mean: Self, a: Self,
        b: Self, c: Self, dx: UnsafeMutablePointer<Self>, streaming: Bool)

    /// `dx[j] = invstd·(gamma·dy[j] - a - (x[j] - mean)·invstd·c)` over `count`
    /// values of one channel (`normkit_group_combine_*`).
    @_spi(BLAS) static func groupCombine(
        count: Int, dy: UnsafePointer<Self>, x: UnsafePointer<Self>, mean: Self, invstd: Self,
        gamma: Self, a: Self, c: Self, dx: UnsafeMutablePointer<Self>)

    /// `dx[j] = invstd·(gamma[j]·dy[j] - a - (x[j] - mean)·invstd·b)` over
    /// `count` elements, plus `sum[j]` after that value is rounded when `sum`
    /// is given (a residual form's sum gradient), with streaming stores when
    /// `streaming`; with `next` (a row ahead's `dy`, `x` and `sum`), a line
    /// of each asked for per line of `dx` written (`normkit_combine_*`).
    @_spi(BLAS) static func combine(
        count: Int, dy: UnsafePointer<Self>, x: UnsafePointer<Self>, sum: UnsafePointer<Self>?,
        mean: Self, invstd: Self, a: Self, b: Self, gamma: UnsafePointer<Self>,
        dx: UnsafeMutablePointer<Self>, streaming: Bool,
        next: (dy: UnsafePointer<Self>, x: UnsafePointer<Self>, sum: UnsafePointer<Self>?)?)

    /// The fused epilogue `y[j] = act(z[j] + r[j])` (`r` optional; `act` the
    /// identity or ReLU), with streaming stores when `streaming`; with a ReLU
    /// and a `mask`, `mask[j] = z[j] + r[j] > 0 ? 1 : 0` (`normkit_epilogue_*`).
    /// `z` may be `y`.
    @_spi(BLAS) static func epilogue(
        count: Int, z: UnsafePointer<Self>, residual: UnsafePointer<Self>?,
        y: UnsafeMutablePointer<Self>, mask: UnsafeMutablePointer<UInt8>?, relu: Bool,
        streaming: Bool)

    /// ``normalizeColumns(rows:count:x:mean:scale:shift:y:streaming:)`` followed by
    /// ``epilogue(count:z:residual:y:mask:relu:streaming:)`` in one loop
    /// (`normkit_normalize_columns_epilogue_*`). `x` may be `y`.
    @_spi(BLAS) static func normalizeColumnsEpilogue(
        count: Int, x: UnsafePointer<Self>, mean: UnsafePointer<Self>,
        scale: UnsafePointer<Self>, shift: UnsafePointer<Self>, residual: UnsafePointer<Self>?,
        y: UnsafeMutablePointer<Self>, mask: UnsafeMutablePointer<UInt8>?, relu: Bool,
        streaming: Bool)

    /// `block[j] = x[j] + r[j]`, then `block` to `s` and (when given) `sum`
    /// with streaming stores (`normkit_residual_sum_*`); the three are apart.
    @_spi(BLAS) static func residualSum(
        count: Int, x: UnsafePointer<Self>, r: UnsafePointer<Self>, block: UnsafeMutablePointer<Self>,
        s: UnsafeMutablePointer<Self>, sum: UnsafeMutablePointer<Self>?)

    /// `g[j] = mask[j] != 0 ? dy[j] : +0`, the gradient through a ReLU whose
    /// epilogue wrote `mask` (`normkit_relu_mask_*`).
    @_spi(BLAS) static func reluMask(
        count: Int, dy: UnsafePointer<Self>, mask: UnsafePointer<UInt8>, g: UnsafeMutablePointer<Self>)

    /// `g[j] = mask[j] != 0 ? dy[j] : +0` and `p[j] = g[j]·(x[j] - mean[j])`
    /// over `count` features (`normkit_centred_product_columns_masked_*`).
    @_spi(BLAS) static func centredProductColumnsMasked(
        count: Int, dy: UnsafePointer<Self>, mask: UnsafePointer<UInt8>, x: UnsafePointer<Self>,
        mean: UnsafePointer<Self>, g: UnsafeMutablePointer<Self>, p: UnsafeMutablePointer<Self>)

    /// `dx[j] = a[j]·(mask[j] != 0 ? dy[j] : +0) + b[j]·(x[j] - mean[j]) + c[j]`
    /// over `count` features (`normkit_combine_columns_masked_*`).
    @_spi(BLAS) static func combineColumnsMasked(
        count: Int, dy: UnsafePointer<Self>, mask: UnsafePointer<UInt8>, x: UnsafePointer<Self>,
        mean: UnsafePointer<Self>, a: UnsafePointer<Self>, b: UnsafePointer<Self>,
        c: UnsafePointer<Self>, dx: UnsafeMutablePointer<Self>, streaming: Bool)

    /// `y[j] = (x[j] - mean[j])·scale[j] + shift[j]` over `rows` rows of
    /// `count` features, one after another, with streaming stores when
    /// `streaming` (`normkit_normalize_columns_*`, whose loop over the rows
    /// is in C).
    @_spi(BLAS) static func normalizeColumns(
        rows: Int, count: Int, x: UnsafePointer<Self>, mean: UnsafePointer<Self>,
        scale: UnsafePointer<Self>, shift: UnsafePointer<Self>, y: UnsafeMutablePointer<Self>,
        streaming: Bool)

    /// `x[j] = x[j]·x[j]` over `count` values, in place (`normkit_square_*`).
    @_spi(BLAS) static func square(count: Int, x: UnsafeMutablePointer<Self>)

    /// `squares = (x - mean)²` elementwise over a `rows x count` row-major
    /// block and `residual[j] += Σ_rows (x - mean[j])` (added to what
    /// `residual` holds), four rows at a time
    /// (`residual[j] += (d0 + d1) + (d2 + d3)`; `inOrder`:
    /// `residual[j] = (((residual[j] + d0) + d1) + d2) + d3`, the bits of one
    /// row at a time), then the rows left one at a time
    /// (`normkit_centred_squares_*`); the four are apart. With `copy`,
    /// each value of `x` is also written there (`rows x count`, apart from
    /// the others): a training pass's cache copy, made by the read the
    /// squares need anyway.
    @_spi(BLAS) static func centredSquares(
        rows: Int, count: Int, x: UnsafePointer<Self>, mean: UnsafePointer<Self>,
        squares: UnsafeMutablePointer<Self>, residual: UnsafeMutablePointer<Self>,
        copy: UnsafeMutablePointer<Self>?, inOrder: Bool)

    /// `p[j] = dy[j]·(x[j] - mean[j])` over `count` features
    /// (`normkit_centred_product_columns_*`).
    @_spi(BLAS) static func centredProductColumns(
        count: Int, dy: UnsafePointer<Self>, x: UnsafePointer<Self>, mean: UnsafePointer<Self>,
        p: UnsafeMutablePointer<Self>)

    /// `dx[j] = a[j]·dy[j] + b[j]·(x[j] - mean[j]) + c[j]` over `count`
    /// features, with streaming stores when `streaming` (`normkit_combine_columns_*`).
    @_spi(BLAS) static func combineColumns(
        count: Int, dy: UnsafePointer<Self>, x: UnsafePointer<Self>, mean: UnsafePointer<Self>,
        a: UnsafePointer<Self>, b: UnsafePointer<Self>, c: UnsafePointer<Self>,
        dx: UnsafeMutablePointer<Self>, streaming: Bool)
}

// MARK: Unit-stride helpers for the kernels

// The kernels are `@inlinable` (so that a client's `BatchNorm<Float>` is
// specialized in the client), and `@inlinable` code cannot name `@_spi`
// declarations. They call these internal helpers instead, which forward to the
// requirements; the exported specializations give clients a direct Float and
// Double entry point.
extension BLASScalar {
    /// Column sums (or a weighted combination of rows): `y = alpha * Aᵀ x + beta * y`
    /// with unit strides (`?gemv`, transposed). `A` is `rows x columns`,
    /// row-major, `lda == columns`.
    @usableFromInline
    @_specialize(exported: true, where Self == Float)
    @_specialize(exported: true, where Self == Double)
    static func gemvTransposed(
        rows: Int, columns: Int, alpha: Self = 1, a: UnsafePointer<Self>,
        x: UnsafePointer<Self>, beta: Self, y: UnsafeMutablePointer<Self>
    ) {
        gemv(transpose: true, rows: rows, columns: columns, alpha: alpha,
             a: a, lda: columns, x: x, incx: 1, beta: beta, y: y, incy: 1)
    }

    /// Row sums (or row dot products with one vector): `y = alpha * A x + beta * y`
    /// with unit strides (`?gemv`). `A` is `rows x columns`, row-major, `lda == columns`.
    @usableFromInline
    @_specialize(exported: true, where Self == Float)
    @_specialize(exported: true, where Self == Double)
    static func gemvRows(
        rows: Int, columns: Int, alpha: Self = 1, a: UnsafePointer<Self>,
        x: UnsafePointer<Self>, beta: Self, y: UnsafeMutablePointer<Self>
    ) {
        gemv(transpose: false, rows: rows, columns: columns, alpha: alpha,
             a: a, lda: columns, x: x, incx: 1, beta: beta, y: y, incy: 1)
    }

    /// `y = alpha * x + y` with unit strides (`?axpy`).
    @usableFromInline
    @_specialize(exported: true, where Self == Float)
    @_specialize(exported: true, where Self == Double)
    static func axpy(count: Int, alpha: Self, x: UnsafePointer<Self>, y: UnsafeMutablePointer<Self>) {
        axpy(count: count, alpha: alpha, x: x, incx: 1, y: y, incy: 1)
    }

    /// `x = alpha * x` with unit stride (`?scal`).
    @usableFromInline
    @_specialize(exported: true, where Self == Float)
    @_specialize(exported: true, where Self == Double)
    static func scal(count: Int, alpha: Self, x: UnsafeMutablePointer<Self>) {
        scal(count: count, alpha: alpha, x: x, incx: 1)
    }

    /// `xᵀy` with unit strides (`?dot`).
    @usableFromInline
    @_specialize(exported: true, where Self == Float)
    @_specialize(exported: true, where Self == Double)
    static func dot(count: Int, x: UnsafePointer<Self>, y: UnsafePointer<Self>) -> Self {
        dot(count: count, x: x, incx: 1, y: y, incy: 1)
    }

    /// `c = x - mean` over one row (``centre(count:x:mean:c:)``).
    @usableFromInline @inline(__always)
    static func centreRow(
        count: Int, x: UnsafePointer<Self>, mean: Self, into c: UnsafeMutablePointer<Self>
    ) {
        centre(count: count, x: x, mean: mean, c: c)
    }

    /// `y = c·scale·gamma + beta` over one row, prefetching `next`
    /// (``scaleShift(count:c:scale:gamma:beta:y:streaming:next:)``).
    @usableFromInline @inline(__always)
    static func scaleShiftRow(
        count: Int, c: UnsafePointer<Self>, scale: Self, gamma: UnsafePointer<Self>,
        beta: UnsafePointer<Self>, into y: UnsafeMutablePointer<Self>, streaming: Bool,
        next: UnsafePointer<Self>? = nil
    ) {
        scaleShift(count: count, c: c, scale: scale, gamma: gamma, beta: beta, y: y,
                   streaming: streaming, next: next)
    }

    /// `p = dy·xhat` over one row (``product(count:dy:x:mean:invstd:p:)``).
    @usableFromInline @inline(__always)
    static func productRow(
        count: Int, dy: UnsafePointer<Self>, x: UnsafePointer<Self>, mean: Self, invstd: Self,
        into p: UnsafeMutablePointer<Self>
    ) {
        product(count: count, dy: dy, x: x, mean: mean, invstd: invstd, p: p)
    }

    /// `y = act((x - mean)·scale + shift + residual)` over a slab of one
    /// channel, its ReLU's mask bytes too
    /// (``affine(count:x:mean:scale:shift:residual:y:mask:relu:streaming:)``).
    @usableFromInline @inline(__always)
    static func affineSlab(
        count: Int, x: UnsafePointer<Self>, mean: Self, scale: Self, shift: Self,
        residual: UnsafePointer<Self>? = nil, into y: UnsafeMutablePointer<Self>,
        mask: UnsafeMutablePointer<UInt8>? = nil, relu: Bool = false, streaming: Bool
    ) {
        affine(count: count, x: x, mean: mean, scale: scale, shift: shift, residual: residual,
               y: y, mask: mask, relu: relu, streaming: streaming)
    }

    /// BatchNorm's `dx` over a slab of one channel
    /// (``combineSlab(count:dy:x:mean:a:b:c:dx:streaming:)``).
    @usableFromInline @inline(__always)
    static func combineSlabRow(
        count: Int, dy: UnsafePointer<Self>, x: UnsafePointer<Self>, mean: Self, a: Self,
        b: Self, c: Self, into dx: UnsafeMutablePointer<Self>, streaming: Bool
    ) {
        combineSlab(count: count, dy: dy, x: x, mean: mean, a: a, b: b, c: c, dx: dx,
                    streaming: streaming)
    }

    /// GroupNorm's `dx` over a slab of one channel
    /// (``groupCombine(count:dy:x:mean:invstd:gamma:a:c:dx:)``).
    @usableFromInline @inline(__always)
    static func groupCombineRow(
        count: Int, dy: UnsafePointer<Self>, x: UnsafePointer<Self>, mean: Self, invstd: Self,
        gamma: Self, a: Self, c: Self, into dx: UnsafeMutablePointer<Self>
    ) {
        groupCombine(count: count, dy: dy, x: x, mean: mean, invstd: invstd, gamma: gamma, a: a,
                     c: c, dx: dx)
    }

    /// LayerNorm's `dx` over one row, plus a residual form's `sum` gradient
    /// (``combine(count:dy:x:sum:mean:invstd:a:b:gamma:dx:streaming:next:)``).
    @usableFromInline @inline(__always)
    static func combineRow(
        count: Int, dy: UnsafePointer<Self>, x: UnsafePointer<Self>, sum: UnsafePointer<Self>? = nil,
        mean: Self, invstd: Self, a: Self, b: Self, gamma: UnsafePointer<Self>,
        into dx: UnsafeMutablePointer<Self>, streaming: Bool,
        next: (dy: UnsafePointer<Self>, x: UnsafePointer<Self>, sum: UnsafePointer<Self>?)? = nil
    ) {
        combine(count: count, dy: dy, x: x, sum: sum, mean: mean, invstd: invstd, a: a, b: b,
                gamma: gamma, dx: dx, streaming: streaming, next: next)
    }

    /// The fused epilogue over one run
    /// (``epilogue(count:z:residual:y:mask:relu:streaming:)``).
    @usableFromInline @inline(__always)
    static func epilogueRow(
        count: Int, z: UnsafePointer<Self>, residual: UnsafePointer<Self>?,
        into y: UnsafeMutablePointer<Self>, mask: UnsafeMutablePointer<UInt8>?, relu: Bool,
        streaming: Bool
    ) {
        epilogue(count: count, z: z, residual: residual, y: y, mask: mask, relu: relu,
                 streaming: streaming)
    }

    /// BatchNorm's normalize pass and the fused epilogue over one row
    /// (``normalizeColumnsEpilogue(count:x:mean:scale:shift:residual:y:mask:relu:streaming:)``).
    @usableFromInline @inline(__always)
    static func normalizeEpilogueRow(
        count: Int, x: UnsafePointer<Self>, mean: UnsafePointer<Self>,
        scale: UnsafePointer<Self>, shift: UnsafePointer<Self>, residual: UnsafePointer<Self>?,
        into y: UnsafeMutablePointer<Self>, mask: UnsafeMutablePointer<UInt8>?, relu: Bool,
        streaming: Bool
    ) {
        normalizeColumnsEpilogue(count: count, x: x, mean: mean, scale: scale, shift: shift,
                                 residual: residual, y: y, mask: mask, relu: relu,
                                 streaming: streaming)
    }

    /// The residual sum through a scratch block
    /// (``residualSum(count:x:r:block:s:sum:)``).
    @usableFromInline @inline(__always)
    static func residualSumRows(
        count: Int, x: UnsafePointer<Self>, r: UnsafePointer<Self>, block: UnsafeMutablePointer<Self>,
        s: UnsafeMutablePointer<Self>, sum: UnsafeMutablePointer<Self>?
    ) {
        residualSum(count: count, x: x, r: r, block: block, s: s, sum: sum)
    }

    /// The masked centred product over one row
    /// (``centredProductColumnsMasked(count:dy:mask:x:mean:g:p:)``).
    @usableFromInline @inline(__always)
    static func centredProductMaskedRow(
        count: Int, dy: UnsafePointer<Self>, mask: UnsafePointer<UInt8>, x: UnsafePointer<Self>,
        mean: UnsafePointer<Self>, g: UnsafeMutablePointer<Self>, into p: UnsafeMutablePointer<Self>
    ) {
        centredProductColumnsMasked(count: count, dy: dy, mask: mask, x: x, mean: mean, g: g, p: p)
    }

    /// BatchNorm's `dx` over one row through a ReLU's mask
    /// (``combineColumnsMasked(count:dy:mask:x:mean:a:b:c:dx:streaming:)``).
    @usableFromInline @inline(__always)
    static func combineColumnsMaskedRow(
        count: Int, dy: UnsafePointer<Self>, mask: UnsafePointer<UInt8>, x: UnsafePointer<Self>,
        mean: UnsafePointer<Self>, a: UnsafePointer<Self>, b: UnsafePointer<Self>,
        c: UnsafePointer<Self>, into dx: UnsafeMutablePointer<Self>, streaming: Bool
    ) {
        combineColumnsMasked(count: count, dy: dy, mask: mask, x: x, mean: mean, a: a, b: b, c: c,
                             dx: dx, streaming: streaming)
    }

    /// The gradient through a ReLU over one run (``reluMask(count:dy:mask:g:)``).
    @usableFromInline @inline(__always)
    static func reluMaskRow(
        count: Int, dy: UnsafePointer<Self>, mask: UnsafePointer<UInt8>,
        into g: UnsafeMutablePointer<Self>
    ) {
        reluMask(count: count, dy: dy, mask: mask, g: g)
    }

    /// BatchNorm's normalize pass over `rows` rows
    /// (``normalizeColumns(rows:count:x:mean:scale:shift:y:streaming:)``).
    @usableFromInline @inline(__always)
    static func normalizeRows(
        _ rows: Int, count: Int, x: UnsafePointer<Self>, mean: UnsafePointer<Self>,
        scale: UnsafePointer<Self>, shift: UnsafePointer<Self>,
        into y: UnsafeMutablePointer<Self>, streaming: Bool
    ) {
        normalizeColumns(rows: rows, count: count, x: x, mean: mean, scale: scale, shift: shift, y: y,
                         streaming: streaming)
    }

    /// `x = x²` over `count` values in place (``square(count:x:)``).
    @usableFromInline @inline(__always)
    static func squareRow(count: Int, _ x: UnsafeMutablePointer<Self>) {
        square(count: count, x: x)
    }

    /// The centred squares and residual sums of a block, the values also
    /// copied to `copy` when given, the residuals of each four rows added in
    /// order when `inOrder`
    /// (``centredSquares(rows:count:x:mean:squares:residual:copy:inOrder:)``).
    @usableFromInline @inline(__always)
    static func centredSquaresBlock(
        rows: Int, count: Int, x: UnsafePointer<Self>, mean: UnsafePointer<Self>,
        squares: UnsafeMutablePointer<Self>, residual: UnsafeMutablePointer<Self>,
        copy: UnsafeMutablePointer<Self>? = nil, inOrder: Bool = false
    ) {
        centredSquares(rows: rows, count: count, x: x, mean: mean, squares: squares,
                       residual: residual, copy: copy, inOrder: inOrder)
    }

    /// `p = dy·(x - mean)` over one row (``centredProductColumns(count:dy:x:mean:p:)``).
    @usableFromInline @inline(__always)
    static func centredProductRow(
        count: Int, dy: UnsafePointer<Self>, x: UnsafePointer<Self>, mean: UnsafePointer<Self>,
        into p: UnsafeMutablePointer<Self>
    ) {
        centredProductColumns(count: count, dy: dy, x: x, mean: mean, p: p)
    }

    /// BatchNorm's `dx` over one row
    /// (``combineColumns(count:dy:x:mean:a:b:c:dx:streaming:)``).
    @usableFromInline @inline(__always)
    static func combineColumnsRow(
        count: Int, dy: UnsafePointer<Self>, x: UnsafePointer<Self>, mean: UnsafePointer<Self>,
        a: UnsafePointer<Self>, b: UnsafePointer<Self>, c: UnsafePointer<Self>,
        into dx: UnsafeMutablePointer<Self>, streaming: Bool
    ) {
        combineColumns(count: count, dy: dy, x: x, mean: mean, a: a, b: b, c: c, dx: dx,
                       streaming: streaming)
    }
}

/// The largest size (rows, columns, element count of one BLAS operand) that
/// OpenBLAS's 32-bit `blasint` can take.
@usableFromInline let maximumBLASSize = Int(Int32.max)

/// Converts a size that was validated against `maximumBLASSize` to OpenBLAS's
/// `blasint`. The one place in NormKit where that conversion happens.
@inlinable @inline(__always)
func blasInt(_ value: Int) -> Int32 {
    Int32(truncatingIfNeeded: value)
}
