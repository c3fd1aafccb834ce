/// A floating-point type that OpenBLAS computes with: `Float` (the `cblas_s*`
/// routines) and `Double` (the `cblas_d*` routines).
///
/// The static requirements are named after the mathematics, not after the C
/// routines, so that code above this layer reads `Scalar.gemv(...)` and is
/// written once for both precisions. Every matrix is row-major (C order).
/// Sizes are `Int`; the conformances convert them to OpenBLAS's 32-bit
/// `blasint` through ``blasInt(_:)``, the one place that conversion happens.
/// Callers validate sizes first (see ``NormError/sizeTooLarge(_:)``).
///
/// A `BLASScalar` is also a `SIMDScalar` (and so `Codable`, as `SIMDScalar`'s
/// storage types are), so that NormKit's output passes can write
/// `SIMD4<Scalar>` values with streaming stores.
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
    static func gemv(
        transpose: Bool, rows: Int, columns: Int, alpha: Self,
        a: UnsafePointer<Self>, lda: Int, x: UnsafePointer<Self>, incx: Int,
        beta: Self, y: UnsafeMutablePointer<Self>, incy: Int)

    /// `y = alpha * x + y` over `count` elements (`?axpy`).
    static func axpy(
        count: Int, alpha: Self, x: UnsafePointer<Self>, incx: Int,
        y: UnsafeMutablePointer<Self>, incy: Int)

    /// `x = alpha * x` over `count` elements (`?scal`).
    static func scal(count: Int, alpha: Self, x: UnsafeMutablePointer<Self>, incx: Int)

    /// `y = x` over `count` elements (`?copy`).
    static func copy(
        count: Int, x: UnsafePointer<Self>, incx: Int,
        y: UnsafeMutablePointer<Self>, incy: Int)

    /// The dot product `xᵀy` over `count` elements (`?dot`).
    static func dot(
        count: Int, x: UnsafePointer<Self>, incx: Int,
        y: UnsafePointer<Self>, incy: Int) -> Self

    /// Rank-one update `A = alpha * x yᵀ + A`, row-major `rows x columns` (`?ger`).
    static func ger(
        rows: Int, columns: Int, alpha: Self, x: UnsafePointer<Self>, incx: Int,
        y: UnsafePointer<Self>, incy: Int, a: UnsafeMutablePointer<Self>, lda: Int)

    /// Matrix product `C = alpha * op(A) op(B) + beta * C`, row-major (`?gemm`).
    ///
    /// `op(A)` is `rows x inner`, `op(B)` is `inner x columns`, `C` is `rows x columns`.
    static func gemm(
        transposeA: Bool, transposeB: Bool, rows: Int, columns: Int, inner: Int,
        alpha: Self, a: UnsafePointer<Self>, lda: Int,
        b: UnsafePointer<Self>, ldb: Int,
        beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)
}

extension BLASScalar {
    /// Column sums (or a weighted combination of rows): `y = alpha * Aᵀ x + beta * y`
    /// with unit strides. `A` is `rows x columns`, row-major, `lda == columns`.
    @inlinable @inline(__always)
    static func gemvTransposed(
        rows: Int, columns: Int, alpha: Self = 1, a: UnsafePointer<Self>,
        x: UnsafePointer<Self>, beta: Self, y: UnsafeMutablePointer<Self>
    ) {
        gemv(transpose: true, rows: rows, columns: columns, alpha: alpha,
             a: a, lda: columns, x: x, incx: 1, beta: beta, y: y, incy: 1)
    }

    /// Row sums (or row dot products with one vector): `y = alpha * A x + beta * y`
    /// with unit strides. `A` is `rows x columns`, row-major, `lda == columns`.
    @inlinable @inline(__always)
    static func gemvRows(
        rows: Int, columns: Int, alpha: Self = 1, a: UnsafePointer<Self>,
        x: UnsafePointer<Self>, beta: Self, y: UnsafeMutablePointer<Self>
    ) {
        gemv(transpose: false, rows: rows, columns: columns, alpha: alpha,
             a: a, lda: columns, x: x, incx: 1, beta: beta, y: y, incy: 1)
    }
}

/// The largest size (rows, columns, element count of one BLAS operand) that
/// OpenBLAS's 32-bit `blasint` can take.
public let maximumBLASSize = Int(Int32.max)

/// Converts a size that was validated against ``maximumBLASSize`` to OpenBLAS's
/// `blasint`. The one place in NormKit where that conversion happens.
@inlinable @inline(__always)
func blasInt(_ value: Int) -> Int32 {
    Int32(truncatingIfNeeded: value)
}
