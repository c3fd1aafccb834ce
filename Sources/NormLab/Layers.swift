import Foundation
@_spi(BLAS) import NormKit

/// A row-major `rows x columns` matrix of a training net: a batch of
/// activations, a weight matrix or a gradient.
public struct Matrix<Scalar: BLASScalar>: Sendable, Equatable {
    /// The number of rows.
    public var rows: Int
    /// The number of columns.
    public var columns: Int
    /// The entries in row-major order; `values.count == rows * columns`.
    public var values: [Scalar]

    /// A matrix from its entries in row-major order.
    /// - Precondition: `values.count == rows * columns`.
    public init(rows: Int, columns: Int, values: [Scalar]) {
        precondition(values.count == rows * columns, "Matrix: \(values.count) values for \(rows)x\(columns)")
        self.rows = rows
        self.columns = columns
        self.values = values
    }

    /// A matrix of zeros.
    public init(zerosRows rows: Int, columns: Int) {
        self.init(rows: rows, columns: columns, values: Array(repeating: 0, count: rows * columns))
    }

    /// The matrix as a NormKit `(rows, columns)` tensor (no copy).
    public var tensor: Tensor<Scalar> {
        // The count matches by construction, so this cannot throw.
        try! Tensor(shape: [rows, columns], scalars: values)
    }

    /// A matrix from an `(N, D)` tensor (no copy).
    public init(_ tensor: Tensor<Scalar>) {
        self.init(rows: tensor.shape[0], columns: tensor.shape[1], values: tensor.scalars)
    }

    /// The rows at `indices`, in that order.
    public func rows(_ indices: [Int]) -> Matrix {
        var out = [Scalar]()
        out.reserveCapacity(indices.count * columns)
        for i in indices { out.append(contentsOf: values[(i * columns)..<((i + 1) * columns)]) }
        return Matrix(rows: indices.count, columns: columns, values: out)
    }
}

/// The affine layer `out = x W + b` and its backward, as GEMM through `BLASScalar`.
public enum Affine {
    /// `out = x W + b`: `gemm(x, W)`, then `ger(1, b)` adds `b` to every row.
    public static func forward<Scalar: BLASScalar>(
        _ x: Matrix<Scalar>, weights w: Matrix<Scalar>, bias b: [Scalar]
    ) -> Matrix<Scalar> {
        precondition(x.columns == w.rows && b.count == w.columns, "Affine: shapes do not chain")
        var out = Matrix<Scalar>(zerosRows: x.rows, columns: w.columns)
        let ones = [Scalar](repeating: 1, count: x.rows)
        x.values.withUnsafeBufferPointer { xp in
        w.values.withUnsafeBufferPointer { wp in
        out.values.withUnsafeMutableBufferPointer { yp in
            Scalar.gemm(transposeA: false, transposeB: false, rows: x.rows, columns: w.columns,
                        inner: x.columns, alpha: 1, a: xp.baseAddress!, lda: x.columns,
                        b: wp.baseAddress!, ldb: w.columns, beta: 0, c: yp.baseAddress!,
                        ldc: w.columns)
        }}}
        ones.withUnsafeBufferPointer { op in
        b.withUnsafeBufferPointer { bp in
        out.values.withUnsafeMutableBufferPointer { yp in
            Scalar.ger(rows: x.rows, columns: w.columns, alpha: 1, x: op.baseAddress!, incx: 1,
                       y: bp.baseAddress!, incy: 1, a: yp.baseAddress!, lda: w.columns)
        }}}
        return out
    }

    /// `dx = dout Wᵀ`, `dW = xᵀ dout` (GEMM), `db = doutᵀ 1` (GEMV).
    public static func backward<Scalar: BLASScalar>(
        _ dout: Matrix<Scalar>, input x: Matrix<Scalar>, weights w: Matrix<Scalar>
    ) -> (dx: Matrix<Scalar>, dw: Matrix<Scalar>, db: [Scalar]) {
        var dx = Matrix<Scalar>(zerosRows: x.rows, columns: x.columns)
        var dw = Matrix<Scalar>(zerosRows: w.rows, columns: w.columns)
        var db = [Scalar](repeating: 0, count: w.columns)
        let ones = [Scalar](repeating: 1, count: x.rows)
        dout.values.withUnsafeBufferPointer { gp in
        w.values.withUnsafeBufferPointer { wp in
        dx.values.withUnsafeMutableBufferPointer { dxp in
            Scalar.gemm(transposeA: false, transposeB: true, rows: x.rows, columns: x.columns,
                        inner: w.columns, alpha: 1, a: gp.baseAddress!, lda: w.columns,
                        b: wp.baseAddress!, ldb: w.columns, beta: 0, c: dxp.baseAddress!,
                        ldc: x.columns)
        }}}
        dout.values.withUnsafeBufferPointer { gp in
        x.values.withUnsafeBufferPointer { xp in
        dw.values.withUnsafeMutableBufferPointer { dwp in
            Scalar.gemm(transposeA: true, transposeB: false, rows: w.rows, columns: w.columns,
                        inner: x.rows, alpha: 1, a: xp.baseAddress!, lda: x.columns,
                        b: gp.baseAddress!, ldb: w.columns, beta: 0, c: dwp.baseAddress!,
                        ldc: w.columns)
        }}}
        dout.values.withUnsafeBufferPointer { gp in
        ones.withUnsafeBufferPointer { op in
        db.withUnsafeMutableBufferPointer { dbp in
            Scalar.gemv(transpose: true, rows: x.rows, columns: w.columns, alpha: 1,
                        a: gp.baseAddress!, lda: w.columns, x: op.baseAddress!, incx: 1,
                        beta: 0, y: dbp.baseAddress!, incy: 1)
        }}}
        return (dx, dw, db)
    }
}

/// `max(0, x)` and its backward.
public enum ReLU {
    /// `max(0, x)` elementwise.
    public static func forward<Scalar: BLASScalar>(_ x: Matrix<Scalar>) -> Matrix<Scalar> {
        Matrix(rows: x.rows, columns: x.columns, values: x.values.map { max(0, $0) })
    }

    /// `dout` where the input was positive, zero elsewhere.
    public static func backward<Scalar: BLASScalar>(_ dout: Matrix<Scalar>, input x: Matrix<Scalar>) -> Matrix<Scalar> {
        Matrix(rows: x.rows, columns: x.columns,
               values: zip(dout.values, x.values).map { $1 > 0 ? $0 : 0 })
    }
}

/// Softmax cross-entropy, cs231n's `softmax_loss`.
public enum SoftmaxLoss {
    /// The mean of `-log softmax(scores)[y_i]` and its gradient with respect to
    /// the scores, computed with the row maximum subtracted. The mean is over
    /// `batchCount` rows (these rows by default; the whole batch's count when
    /// these rows are one process's share of it, so that the shares' losses
    /// and gradients sum to the batch's).
    public static func evaluate<Scalar: BLASScalar>(
        scores: Matrix<Scalar>, labels: [Int], batchCount: Int? = nil
    ) -> (loss: Scalar, dscores: Matrix<Scalar>) {
        let n = scores.rows, c = scores.columns
        var dscores = scores
        var loss: Scalar = 0
        for i in 0..<n {
            let row = i * c
            var largest = scores.values[row]
            for j in 1..<c { largest = max(largest, scores.values[row + j]) }
            var sum: Scalar = 0
            for j in 0..<c {
                let e = Scalar(exp(Double(scores.values[row + j] - largest)))
                dscores.values[row + j] = e
                sum += e
            }
            for j in 0..<c { dscores.values[row + j] /= sum }
            loss -= Scalar(log(Double(dscores.values[row + labels[i]])))
            dscores.values[row + labels[i]] -= 1
        }
        let scale = 1 / Scalar(batchCount ?? n)
        for k in dscores.values.indices { dscores.values[k] *= scale }
        return (loss * scale, dscores)
    }
}
