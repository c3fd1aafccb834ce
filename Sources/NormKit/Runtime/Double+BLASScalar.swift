internal import CBLAS
internal import CLAPACKE
internal import CNormKitPasses

/// `Double` computes with OpenBLAS's double-precision routines (`cblas_d*`).
extension Double: BLASScalar {
    /// `cblas_dgemv`, row-major.
    @_spi(BLAS)
    public static func gemv(
        transpose: Bool, rows: Int, columns: Int, alpha: Double,
        a: UnsafePointer<Double>, lda: Int, x: UnsafePointer<Double>, incx: Int,
        beta: Double, y: UnsafeMutablePointer<Double>, incy: Int
    ) {
        cblas_dgemv(CblasRowMajor, transpose ? CblasTrans : CblasNoTrans,
                    blasInt(rows), blasInt(columns), alpha, a, blasInt(lda),
                    x, blasInt(incx), beta, y, blasInt(incy))
    }

    /// `cblas_daxpy`.
    @_spi(BLAS)
    public static func axpy(
        count: Int, alpha: Double, x: UnsafePointer<Double>, incx: Int,
        y: UnsafeMutablePointer<Double>, incy: Int
    ) {
        cblas_daxpy(blasInt(count), alpha, x, blasInt(incx), y, blasInt(incy))
    }

    /// `cblas_dscal`.
    @_spi(BLAS)
    public static func scal(count: Int, alpha: Double, x: UnsafeMutablePointer<Double>, incx: Int) {
        cblas_dscal(blasInt(count), alpha, x, blasInt(incx))
    }

    /// `cblas_dcopy`.
    @_spi(BLAS)
    public static func copy(
        count: Int, x: UnsafePointer<Double>, incx: Int,
        y: UnsafeMutablePointer<Double>, incy: Int
    ) {
        cblas_dcopy(blasInt(count), x, blasInt(incx), y, blasInt(incy))
    }

    /// `cblas_ddot`.
    @_spi(BLAS)
    public static func dot(
        count: Int, x: UnsafePointer<Double>, incx: Int,
        y: UnsafePointer<Double>, incy: Int
    ) -> Double {
        cblas_ddot(blasInt(count), x, blasInt(incx), y, blasInt(incy))
    }

    /// `cblas_dger`, row-major.
    @_spi(BLAS)
    public static func ger(
        rows: Int, columns: Int, alpha: Double, x: UnsafePointer<Double>, incx: Int,
        y: UnsafePointer<Double>, incy: Int, a: UnsafeMutablePointer<Double>, lda: Int
    ) {
        cblas_dger(CblasRowMajor, blasInt(rows), blasInt(columns), alpha,
                   x, blasInt(incx), y, blasInt(incy), a, blasInt(lda))
    }

    /// `cblas_dgemm`, row-major.
    @_spi(BLAS)
    public static func gemm(
        transposeA: Bool, transposeB: Bool, rows: Int, columns: Int, inner: Int,
        alpha: Double, a: UnsafePointer<Double>, lda: Int,
        b: UnsafePointer<Double>, ldb: Int,
        beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int
    ) {
        cblas_dgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans,
                    transposeB ? CblasTrans : CblasNoTrans,
                    blasInt(rows), blasInt(columns), blasInt(inner), alpha,
                    a, blasInt(lda), b, blasInt(ldb), beta, c, blasInt(ldc))
    }

    /// `cblas_dsyrk`, row-major, upper, transposed.
    @_spi(BLAS)
    public static func syrk(
        order: Int, inner: Int, alpha: Double, a: UnsafePointer<Double>, lda: Int,
        beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int
    ) {
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, blasInt(order), blasInt(inner),
                    alpha, a, blasInt(lda), beta, c, blasInt(ldc))
    }

    /// `LAPACKE_dsyevd`, row-major, eigenvectors, upper.
    @_spi(BLAS)
    public static func syevd(
        order: Int, a: UnsafeMutablePointer<Double>, lda: Int, values: UnsafeMutablePointer<Double>
    ) -> Int {
        Int(LAPACKE_dsyevd(LAPACK_ROW_MAJOR, CChar(UInt8(ascii: "V")), CChar(UInt8(ascii: "U")),
                           blasInt(order), a, blasInt(lda), values))
    }

    /// `LAPACKE_dpotrf`, row-major, lower.
    @_spi(BLAS)
    public static func potrf(order: Int, a: UnsafeMutablePointer<Double>, lda: Int) -> Int {
        Int(LAPACKE_dpotrf(LAPACK_ROW_MAJOR, CChar(UInt8(ascii: "L")), blasInt(order), a, blasInt(lda)))
    }

    /// `LAPACKE_dtrtri`, row-major, lower, non-unit diagonal.
    @_spi(BLAS)
    public static func trtri(order: Int, a: UnsafeMutablePointer<Double>, lda: Int) -> Int {
        Int(LAPACKE_dtrtri(LAPACK_ROW_MAJOR, CChar(UInt8(ascii: "L")), CChar(UInt8(ascii: "N")),
                           blasInt(order), a, blasInt(lda)))
    }

    /// `normkit_centre_d`.
    @_spi(BLAS)
    public static func centre(
        count: Int, x: UnsafePointer<Double>, mean: Double, c: UnsafeMutablePointer<Double>
    ) {
        normkit_centre_d(x, c, count, mean)
    }

    /// `normkit_scale_shift_d`.
    @_spi(BLAS)
    public static func scaleShift(
        count: Int, c: UnsafePointer<Double>, scale: Double, gamma: UnsafePointer<Double>,
        beta: UnsafePointer<Double>, y: UnsafeMutablePointer<Double>, streaming: Bool,
        next: UnsafePointer<Double>?
    ) {
        normkit_scale_shift_d(c, y, count, scale, gamma, beta, streaming ? 1 : 0, next)
    }

    /// `normkit_affine_d`.
    @_spi(BLAS)
    public static func affine(
        count: Int, x: UnsafePointer<Double>, mean: Double, scale: Double, shift: Double,
        residual: UnsafePointer<Double>?, y: UnsafeMutablePointer<Double>,
        mask: UnsafeMutablePointer<UInt8>?, relu: Bool, streaming: Bool
    ) {
        normkit_affine_d(x, y, count, mean, scale, shift, residual, mask, relu ? 1 : 0,
                         streaming ? 1 : 0)
    }

    /// `normkit_combine_slab_d`.
    @_spi(BLAS)
    public static func combineSlab(
        count: Int, dy: UnsafePointer<Double>, x: UnsafePointer<Double>, mean: Double, a: Double, b: Double, c: Double,
        dx: UnsafeMutablePointer<Double>, streaming: Bool
    ) {
        normkit_combine_slab_d(dy, x, dx, count, mean, a, b, c, streaming ? 1 : 0)
    }

    /// `normkit_group_combine_d`.
    @_spi(BLAS)
    public static func groupCombine(
        count: Int, dy: UnsafePointer<Double>, x: UnsafePointer<Double>, mean: Double, invstd: Double,
        gamma: Double, a: Double, c: Double, dx: UnsafeMutablePointer<Double>
    ) {
        normkit_group_combine_d(dy, x, dx, count, mean, invstd, gamma, a, c)
    }

    /// `normkit_product_d`.
    @_spi(BLAS)
    public static func product(
        count: Int, dy: UnsafePointer<Double>, x: UnsafePointer<Double>, mean: Double, invstd: Double,
        p: UnsafeMutablePointer<Double>
    ) {
        normkit_product_d(dy, x, p, count, mean, invstd)
    }

    /// `normkit_combine_d`.
    @_spi(BLAS)
    public static func combine(
        count: Int, dy: UnsafePointer<Double>, x: UnsafePointer<Double>, sum: UnsafePointer<Double>?,
        mean: Double, invstd: Double, a: Double, b: Double, gamma: UnsafePointer<Double>,
        dx: UnsafeMutablePointer<Double>, streaming: Bool,
        next: (dy: UnsafePointer<Double>, x: UnsafePointer<Double>, sum: UnsafePointer<Double>?)?
    ) {
        normkit_combine_d(dy, x, sum, dx, count, mean, invstd, a, b, gamma, streaming ? 1 : 0,
                          next?.dy, next?.x, next?.sum)
    }

    /// `normkit_epilogue_d`.
    @_spi(BLAS)
    public static func epilogue(
        count: Int, z: UnsafePointer<Double>, residual: UnsafePointer<Double>?,
        y: UnsafeMutablePointer<Double>, mask: UnsafeMutablePointer<UInt8>?, relu: Bool,
        streaming: Bool
    ) {
        normkit_epilogue_d(z, residual, y, mask, count, relu ? 1 : 0, streaming ? 1 : 0)
    }

    /// `normkit_normalize_columns_epilogue_d`.
    @_spi(BLAS)
    public static func normalizeColumnsEpilogue(
        count: Int, x: UnsafePointer<Double>, mean: UnsafePointer<Double>,
        scale: UnsafePointer<Double>, shift: UnsafePointer<Double>, residual: UnsafePointer<Double>?,
        y: UnsafeMutablePointer<Double>, mask: UnsafeMutablePointer<UInt8>?, relu: Bool,
        streaming: Bool
    ) {
        normkit_normalize_columns_epilogue_d(x, y, count, mean, scale, shift, residual, mask,
                                                relu ? 1 : 0, streaming ? 1 : 0)
    }

    /// `normkit_residual_sum_d`.
    @_spi(BLAS)
    public static func residualSum(
        count: Int, x: UnsafePointer<Double>, r: UnsafePointer<Double>, block: UnsafeMutablePointer<Double>,
        s: UnsafeMutablePointer<Double>, sum: UnsafeMutablePointer<Double>?
    ) {
        normkit_residual_sum_d(x, r, block, s, sum, count)
    }

    /// `normkit_relu_mask_d`.
    @_spi(BLAS)
    public static func reluMask(
        count: Int, dy: UnsafePointer<Double>, mask: UnsafePointer<UInt8>, g: UnsafeMutablePointer<Double>
    ) {
        normkit_relu_mask_d(dy, mask, g, count)
    }

    /// `normkit_centred_product_columns_masked_d`.
    @_spi(BLAS)
    public static func centredProductColumnsMasked(
        count: Int, dy: UnsafePointer<Double>, mask: UnsafePointer<UInt8>, x: UnsafePointer<Double>,
        mean: UnsafePointer<Double>, g: UnsafeMutablePointer<Double>, p: UnsafeMutablePointer<Double>
    ) {
        normkit_centred_product_columns_masked_d(dy, mask, x, g, p, count, mean)
    }

    /// `normkit_combine_columns_masked_d`.
    @_spi(BLAS)
    public static func combineColumnsMasked(
        count: Int, dy: UnsafePointer<Double>, mask: UnsafePointer<UInt8>, x: UnsafePointer<Double>,
        mean: UnsafePointer<Double>, a: UnsafePointer<Double>, b: UnsafePointer<Double>,
        c: UnsafePointer<Double>, dx: UnsafeMutablePointer<Double>, streaming: Bool
    ) {
        normkit_combine_columns_masked_d(dy, mask, x, dx, count, mean, a, b, c, streaming ? 1 : 0)
    }

    /// `normkit_normalize_columns_d`.
    @_spi(BLAS)
    public static func normalizeColumns(
        rows: Int, count: Int, x: UnsafePointer<Double>, mean: UnsafePointer<Double>,
        scale: UnsafePointer<Double>, shift: UnsafePointer<Double>, y: UnsafeMutablePointer<Double>,
        streaming: Bool
    ) {
        normkit_normalize_columns_d(x, y, rows, count, mean, scale, shift, streaming ? 1 : 0)
    }

    /// `normkit_square_d`.
    @_spi(BLAS)
    public static func square(count: Int, x: UnsafeMutablePointer<Double>) {
        normkit_square_d(x, count)
    }

    /// `normkit_centred_squares_d`.
    @_spi(BLAS)
    public static func centredSquares(
        rows: Int, count: Int, x: UnsafePointer<Double>, mean: UnsafePointer<Double>,
        squares: UnsafeMutablePointer<Double>, residual: UnsafeMutablePointer<Double>,
        copy: UnsafeMutablePointer<Double>?, inOrder: Bool
    ) {
        normkit_centred_squares_d(x, squares, residual, rows, count, mean, copy, inOrder ? 1 : 0)
    }

    /// `normkit_centred_product_columns_d`.
    @_spi(BLAS)
    public static func centredProductColumns(
        count: Int, dy: UnsafePointer<Double>, x: UnsafePointer<Double>, mean: UnsafePointer<Double>,
        p: UnsafeMutablePointer<Double>
    ) {
        normkit_centred_product_columns_d(dy, x, p, count, mean)
    }

    /// `normkit_combine_columns_d`.
    @_spi(BLAS)
    public static func combineColumns(
        count: Int, dy: UnsafePointer<Double>, x: UnsafePointer<Double>, mean: UnsafePointer<Double>,
        a: UnsafePointer<Double>, b: UnsafePointer<Double>, c: UnsafePointer<Double>,
        dx: UnsafeMutablePointer<Double>, streaming: Bool
    ) {
        normkit_combine_columns_d(dy, x, dx, count, mean, a, b, c, streaming ? 1 : 0)
    }
}
