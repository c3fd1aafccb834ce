internal import CBLAS
internal import CLAPACKE
internal import CNormKitPasses

/// `Float` computes with OpenBLAS's single-precision routines (`cblas_s*`).
extension Float: BLASScalar {
    /// `cblas_sgemv`, row-major.
    @_spi(BLAS)
    public static func gemv(
        transpose: Bool, rows: Int, columns: Int, alpha: Float,
        a: UnsafePointer<Float>, lda: Int, x: UnsafePointer<Float>, incx: Int,
        beta: Float, y: UnsafeMutablePointer<Float>, incy: Int
    ) {
        cblas_sgemv(CblasRowMajor, transpose ? CblasTrans : CblasNoTrans,
                    blasInt(rows), blasInt(columns), alpha, a, blasInt(lda),
                    x, blasInt(incx), beta, y, blasInt(incy))
    }

    /// `cblas_saxpy`.
    @_spi(BLAS)
    public static func axpy(
        count: Int, alpha: Float, x: UnsafePointer<Float>, incx: Int,
        y: UnsafeMutablePointer<Float>, incy: Int
    ) {
        cblas_saxpy(blasInt(count), alpha, x, blasInt(incx), y, blasInt(incy))
    }

    /// `cblas_sscal`.
    @_spi(BLAS)
    public static func scal(count: Int, alpha: Float, x: UnsafeMutablePointer<Float>, incx: Int) {
        cblas_sscal(blasInt(count), alpha, x, blasInt(incx))
    }

    /// `cblas_scopy`.
    @_spi(BLAS)
    public static func copy(
        count: Int, x: UnsafePointer<Float>, incx: Int,
        y: UnsafeMutablePointer<Float>, incy: Int
    ) {
        cblas_scopy(blasInt(count), x, blasInt(incx), y, blasInt(incy))
    }

    /// `cblas_sdot`.
    @_spi(BLAS)
    public static func dot(
        count: Int, x: UnsafePointer<Float>, incx: Int,
        y: UnsafePointer<Float>, incy: Int
    ) -> Float {
        cblas_sdot(blasInt(count), x, blasInt(incx), y, blasInt(incy))
    }

    /// `cblas_sger`, row-major.
    @_spi(BLAS)
    public static func ger(
        rows: Int, columns: Int, alpha: Float, x: UnsafePointer<Float>, incx: Int,
        y: UnsafePointer<Float>, incy: Int, a: UnsafeMutablePointer<Float>, lda: Int
    ) {
        cblas_sger(CblasRowMajor, blasInt(rows), blasInt(columns), alpha,
                   x, blasInt(incx), y, blasInt(incy), a, blasInt(lda))
    }

    /// `cblas_sgemm`, row-major.
    @_spi(BLAS)
    public static func gemm(
        transposeA: Bool, transposeB: Bool, rows: Int, columns: Int, inner: Int,
        alpha: Float, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans,
                    transposeB ? CblasTrans : CblasNoTrans,
                    blasInt(rows), blasInt(columns), blasInt(inner), alpha,
                    a, blasInt(lda), b, blasInt(ldb), beta, c, blasInt(ldc))
    }

    /// `cblas_ssyrk`, row-major, upper, transposed.
    @_spi(BLAS)
    public static func syrk(
        order: Int, inner: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, blasInt(order), blasInt(inner),
                    alpha, a, blasInt(lda), beta, c, blasInt(ldc))
    }

    /// `LAPACKE_ssyevd`, row-major, eigenvectors, upper.
    @_spi(BLAS)
    public static func syevd(
        order: Int, a: UnsafeMutablePointer<Float>, lda: Int, values: UnsafeMutablePointer<Float>
    ) -> Int {
        Int(LAPACKE_ssyevd(LAPACK_ROW_MAJOR, CChar(UInt8(ascii: "V")), CChar(UInt8(ascii: "U")),
                           blasInt(order), a, blasInt(lda), values))
    }

    /// `LAPACKE_spotrf`, row-major, lower.
    @_spi(BLAS)
    public static func potrf(order: Int, a: UnsafeMutablePointer<Float>, lda: Int) -> Int {
        Int(LAPACKE_spotrf(LAPACK_ROW_MAJOR, CChar(UInt8(ascii: "L")), blasInt(order), a, blasInt(lda)))
    }

    /// `LAPACKE_strtri`, row-major, lower, non-unit diagonal.
    @_spi(BLAS)
    public static func trtri(order: Int, a: UnsafeMutablePointer<Float>, lda: Int) -> Int {
        Int(LAPACKE_strtri(LAPACK_ROW_MAJOR, CChar(UInt8(ascii: "L")), CChar(UInt8(ascii: "N")),
                           blasInt(order), a, blasInt(lda)))
    }

    /// `normkit_centre_f`.
    @_spi(BLAS)
    public static func centre(
        count: Int, x: UnsafePointer<Float>, mean: Float, c: UnsafeMutablePointer<Float>
    ) {
        normkit_centre_f(x, c, count, mean)
    }

    /// `normkit_scale_shift_f`.
    @_spi(BLAS)
    public static func scaleShift(
        count: Int, c: UnsafePointer<Float>, scale: Float, gamma: UnsafePointer<Float>,
        beta: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, streaming: Bool,
        next: UnsafePointer<Float>?
    ) {
        normkit_scale_shift_f(c, y, count, scale, gamma, beta, streaming ? 1 : 0, next)
    }

    /// `normkit_affine_f`.
    @_spi(BLAS)
    public static func affine(
        count: Int, x: UnsafePointer<Float>, mean: Float, scale: Float, shift: Float,
        residual: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
        mask: UnsafeMutablePointer<UInt8>?, relu: Bool, streaming: Bool
    ) {
        normkit_affine_f(x, y, count, mean, scale, shift, residual, mask, relu ? 1 : 0,
                         streaming ? 1 : 0)
    }

    /// `normkit_combine_slab_f`.
    @_spi(BLAS)
    public static func combineSlab(
        count: Int, dy: UnsafePointer<Float>, x: UnsafePointer<Float>, mean: Float, a: Float, b: Float, c: Float,
        dx: UnsafeMutablePointer<Float>, streaming: Bool
    ) {
        normkit_combine_slab_f(dy, x, dx, count, mean, a, b, c, streaming ? 1 : 0)
    }

    /// `normkit_group_combine_f`.
    @_spi(BLAS)
    public static func groupCombine(
        count: Int, dy: UnsafePointer<Float>, x: UnsafePointer<Float>, mean: Float, invstd: Float,
        gamma: Float, a: Float, c: Float, dx: UnsafeMutablePointer<Float>
    ) {
        normkit_group_combine_f(dy, x, dx, count, mean, invstd, gamma, a, c)
    }

    /// `normkit_product_f`.
    @_spi(BLAS)
    public static func product(
        count: Int, dy: UnsafePointer<Float>, x: UnsafePointer<Float>, mean: Float, invstd: Float,
        p: UnsafeMutablePointer<Float>
    ) {
        normkit_product_f(dy, x, p, count, mean, invstd)
    }

    /// `normkit_combine_f`.
    @_spi(BLAS)
    public static func combine(
        count: Int, dy: UnsafePointer<Float>, x: UnsafePointer<Float>, sum: UnsafePointer<Float>?,
        mean: Float, invstd: Float, a: Float, b: Float, gamma: UnsafePointer<Float>,
        dx: UnsafeMutablePointer<Float>, streaming: Bool,
        next: (dy: UnsafePointer<Float>, x: UnsafePointer<Float>, sum: UnsafePointer<Float>?)?
    ) {
        normkit_combine_f(dy, x, sum, dx, count, mean, invstd, a, b, gamma, streaming ? 1 : 0,
                          next?.dy, next?.x, next?.sum)
    }

    /// `normkit_epilogue_f`.
    @_spi(BLAS)
    public static func epilogue(
        count: Int, z: UnsafePointer<Float>, residual: UnsafePointer<Float>?,
        y: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<UInt8>?, relu: Bool,
        streaming: Bool
    ) {
        normkit_epilogue_f(z, residual, y, mask, count, relu ? 1 : 0, streaming ? 1 : 0)
    }

    /// `normkit_normalize_columns_epilogue_f`.
    @_spi(BLAS)
    public static func normalizeColumnsEpilogue(
        count: Int, x: UnsafePointer<Float>, mean: UnsafePointer<Float>,
        scale: UnsafePointer<Float>, shift: UnsafePointer<Float>, residual: UnsafePointer<Float>?,
        y: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<UInt8>?, relu: Bool,
        streaming: Bool
    ) {
        normkit_normalize_columns_epilogue_f(x, y, count, mean, scale, shift, residual, mask,
                                                relu ? 1 : 0, streaming ? 1 : 0)
    }

    /// `normkit_residual_sum_f`.
    @_spi(BLAS)
    public static func residualSum(
        count: Int, x: UnsafePointer<Float>, r: UnsafePointer<Float>, block: UnsafeMutablePointer<Float>,
        s: UnsafeMutablePointer<Float>, sum: UnsafeMutablePointer<Float>?
    ) {
        normkit_residual_sum_f(x, r, block, s, sum, count)
    }

    /// `normkit_relu_mask_f`.
    @_spi(BLAS)
    public static func reluMask(
        count: Int, dy: UnsafePointer<Float>, mask: UnsafePointer<UInt8>, g: UnsafeMutablePointer<Float>
    ) {
        normkit_relu_mask_f(dy, mask, g, count)
    }

    /// `normkit_centred_product_columns_masked_f`.
    @_spi(BLAS)
    public static func centredProductColumnsMasked(
        count: Int, dy: UnsafePointer<Float>, mask: UnsafePointer<UInt8>, x: UnsafePointer<Float>,
        mean: UnsafePointer<Float>, g: UnsafeMutablePointer<Float>, p: UnsafeMutablePointer<Float>
    ) {
        normkit_centred_product_columns_masked_f(dy, mask, x, g, p, count, mean)
    }

    /// `normkit_combine_columns_masked_f`.
    @_spi(BLAS)
    public static func combineColumnsMasked(
        count: Int, dy: UnsafePointer<Float>, mask: UnsafePointer<UInt8>, x: UnsafePointer<Float>,
        mean: UnsafePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
        c: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, streaming: Bool
    ) {
        normkit_combine_columns_masked_f(dy, mask, x, dx, count, mean, a, b, c, streaming ? 1 : 0)
    }

    /// `normkit_normalize_columns_f`.
    @_spi(BLAS)
    public static func normalizeColumns(
        rows: Int, count: Int, x: UnsafePointer<Float>, mean: UnsafePointer<Float>,
        scale: UnsafePointer<Float>, shift: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        streaming: Bool
    ) {
        normkit_normalize_columns_f(x, y, rows, count, mean, scale, shift, streaming ? 1 : 0)
    }

    /// `normkit_square_f`.
    @_spi(BLAS)
    public static func square(count: Int, x: UnsafeMutablePointer<Float>) {
        normkit_square_f(x, count)
    }

    /// `normkit_centred_squares_f`.
    @_spi(BLAS)
    public static func centredSquares(
        rows: Int, count: Int, x: UnsafePointer<Float>, mean: UnsafePointer<Float>,
        squares: UnsafeMutablePointer<Float>, residual: UnsafeMutablePointer<Float>,
        copy: UnsafeMutablePointer<Float>?, inOrder: Bool
    ) {
        normkit_centred_squares_f(x, squares, residual, rows, count, mean, copy, inOrder ? 1 : 0)
    }

    /// `normkit_centred_product_columns_f`.
    @_spi(BLAS)
    public static func centredProductColumns(
        count: Int, dy: UnsafePointer<Float>, x: UnsafePointer<Float>, mean: UnsafePointer<Float>,
        p: UnsafeMutablePointer<Float>
    ) {
        normkit_centred_product_columns_f(dy, x, p, count, mean)
    }

    /// `normkit_combine_columns_f`.
    @_spi(BLAS)
    public static func combineColumns(
        count: Int, dy: UnsafePointer<Float>, x: UnsafePointer<Float>, mean: UnsafePointer<Float>,
        a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafePointer<Float>,
        dx: UnsafeMutablePointer<Float>, streaming: Bool
    ) {
        normkit_combine_columns_f(dy, x, dx, count, mean, a, b, c, streaming ? 1 : 0)
    }
}
