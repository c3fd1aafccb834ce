/// Which whitening ``Whitening/fit(_:kind:epsilon:backend:)`` prepares.
public enum WhiteningKind: Sendable, Hashable, Codable {
    /// PCA whitening onto the `components` leading principal components:
    /// `(x - mean) V_k diag(1/sqrt(l_k + eps))`, `(M, components)`.
    case pca(components: Int)
    /// ZCA whitening, which keeps the features' space:
    /// `(x - mean) V diag(1/sqrt(l + eps)) Vᵀ`, `(M, D)`.
    case zca
}

/// cs231n's data preprocessing by whitening, fitted once on a data set `(N, D)`
/// and applied to any batch of the same features (scikit-learn's
/// `PCA(whiten=True)` for ``WhiteningKind/pca(components:)``).
///
/// ```swift
/// let data = try Tensor<Double>(randomNormal: [500, 8], seed: 1)
/// let pca = try Whitening.fit(data, kind: .pca(components: 3))
/// let z = try pca.transform(data)          // (500, 3), unit variance per component
/// ```
///
/// The covariance is `Xcᵀ Xc / (N - 1)` (`?syrk`), decomposed by LAPACKE
/// `?syevd`; transforms are `?gemm`s.
public struct Whitening<Scalar: BLASScalar>: Sendable, Hashable {
    /// The kind fitted.
    public let kind: WhiteningKind
    /// Added to each eigenvalue before the inverse square root.
    public let epsilon: Scalar
    /// The data's mean, `D`.
    public let mean: [Scalar]
    /// The sample covariance's eigenvalues, descending, `D`.
    public let eigenvalues: [Scalar]
    /// `(D, D)`: row `j` is eigenvector `j` (of ``eigenvalues``[j]), signed so
    /// that its entry of largest magnitude is positive (scikit-learn's rule).
    public let components: Tensor<Scalar>

    /// Fits a whitening to `data`, `(N, D)` with `N >= 2`.
    ///
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for a rank other
    ///   than 2 or an empty dimension; ``NormError/insufficientValues(valuesPerStatistic:)``
    ///   for `N < 2`; ``NormError/invalidComponentCount(components:featureCount:)``;
    ///   ``NormError/invalidEpsilon(_:)`` for a negative or non-finite
    ///   `epsilon` (0 is allowed); ``NormError/nonFiniteStatistics(index:)``
    ///   when a mean, an eigenvalue, or the inverse square root of a used
    ///   eigenvalue plus `epsilon` is not finite, or when a used eigenvalue
    ///   plus `epsilon` is zero within rounding (at most the largest
    ///   eigenvalue times `D` times `Scalar.ulpOfOne`: data of lower rank with
    ///   `epsilon` 0, on every CPU, whatever sign rounding gives the zero
    ///   eigenvalues); ``NormError/lapackFailure(routine:info:)``.
    /// - Complexity: O(N·D² + D³).
    ///
    /// `backend` `.naive` computes the covariance with a triple loop and
    /// decomposes it by cyclic Jacobi sweeps: the textbook, for comparison.
    @_specialize(exported: true, where Scalar == Float)
    @_specialize(exported: true, where Scalar == Double)
    public static func fit(_ data: Tensor<Scalar>, kind: WhiteningKind,
                           epsilon: Scalar = 0, backend: Backend = .blas) throws(NormError) -> Whitening<Scalar> {
        let shape = data.shape
        guard shape.count == 2, shape[0] >= 1, shape[1] >= 1 else {
            throw .invalidShape(expected: "(N >= 2, D >= 1)", actual: shape)
        }
        guard data.count <= maximumBLASSize else { throw .sizeTooLarge(data.count) }
        let n = shape[0], d = shape[1]
        try Validation.valuesPerStatistic(n)
        if case .pca(let k) = kind, !(1...d).contains(k) {
            throw .invalidComponentCount(components: k, featureCount: d)
        }
        guard epsilon.isFinite, epsilon >= 0 else { throw .invalidEpsilon(Double(epsilon)) }
        // In a workspace's regions, as every layer's pass: OpenBLAS on one
        // thread, so LAPACK's and `?syrk`'s sums do not depend on its count.
        var workspace = Workspace<Scalar>()
        let fitted: Result<Whitening, NormError> = workspace.withRegions(ones: n, scratch: 0) { ones, _ in
            do throws(NormError) {
                return .success(try fitting(data, rows: n, columns: d, kind: kind, epsilon: epsilon,
                                            ones: ones, backend: backend))
            } catch { return .failure(error) }
        }
        switch fitted {
        case .success(let whitening): return whitening
        case .failure(let error): throw error
        }
    }

    /// ``fit(_:kind:epsilon:backend:)`` on validated data of `rows x columns`,
    /// with `rows` ones.
    static func fitting(_ data: Tensor<Scalar>, rows n: Int, columns d: Int, kind: WhiteningKind,
                        epsilon: Scalar, ones: UnsafePointer<Scalar>, backend: Backend)
        throws(NormError) -> Whitening<Scalar> {
        var mean = [Scalar](repeating: 0, count: d), centred = [Scalar].unspecified(count: n * d)
        data.withUnsafeBufferPointer { x in
            mean.withUnsafeMutableBufferPointer { mean in
                centred.withUnsafeMutableBufferPointer { centred in
                    WhiteningKernels.centre(x.baseAddress!, rows: n, columns: d, mean: mean.baseAddress!,
                                            centred: centred.baseAddress!, ones: ones, backend: backend)
                }
            }
        }
        if let bad = mean.firstIndex(where: { !$0.isFinite }) { throw .nonFiniteStatistics(index: bad) }
        let sigma = centred.withUnsafeBufferPointer {
            WhiteningKernels.groupCovariance($0.baseAddress!, rows: n, columns: d, group: 0, groupSize: d,
                                             divisor: Scalar(n - 1), backend: backend)
        }
        let (ascending, vectors) = try WhiteningKernels.eigen(sigma, order: d, backend: backend)
        var values = [Scalar](repeating: 0, count: d), rows = [Scalar](repeating: 0, count: d * d)
        for j in 0..<d {
            let source = d - 1 - j
            values[j] = ascending[source]
            var largest = 0
            for k in 0..<d where abs(vectors[k * d + source]) > abs(vectors[largest * d + source]) { largest = k }
            let sign: Scalar = vectors[largest * d + source] < 0 ? -1 : 1
            for k in 0..<d { rows[j * d + k] = sign * vectors[k * d + source] }
        }
        let used: Int
        switch kind {
        case .pca(let k): used = k
        case .zca: used = d
        }
        // An eigenvalue within round-off of zero is zero, whichever sign and
        // size the kernels' rounding gave it (DecorrelatedBatchNorm's rule).
        let largest = values.first ?? 0
        for j in 0..<used {
            guard values[j].isFinite,
                  WhiteningKernels.exceedsRoundOff(values[j], epsilon: epsilon, largest: largest, order: d),
                  (1 / (values[j] + epsilon).squareRoot()).isFinite else {
                throw .nonFiniteStatistics(index: j)
            }
        }
        return Whitening(kind: kind, epsilon: epsilon, mean: mean, eigenvalues: values,
                         components: Tensor(validatedShape: [d, d], scalars: rows))
    }

    /// The number of features `D`.
    public var featureCount: Int { mean.count }

    /// The components the transform keeps: `k` for PCA, `D` for ZCA.
    var keptCount: Int {
        switch kind {
        case .pca(let k): return k
        case .zca: return featureCount
        }
    }

    /// Whitens `x`, `(M, D)`: `(M, k)` for PCA, `(M, D)` for ZCA.
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for another shape.
    /// - Complexity: O(M·D·k) (PCA), O(M·D²) (ZCA).
    @_specialize(exported: true, where Scalar == Float)
    @_specialize(exported: true, where Scalar == Double)
    public func transform(_ x: Tensor<Scalar>) throws(NormError) -> Tensor<Scalar> {
        let d = featureCount, k = keptCount
        let m = try Validation.matrixRows(x, columns: d)
        var centred = x.scalars
        for i in 0..<m { for j in 0..<d { centred[i * d + j] -= mean[j] } }
        // Scores on the kept components, scaled to unit variance.
        var scores = [Scalar](repeating: 0, count: m * k)
        product(centred, rows: m, inner: d, components, transposed: true, columns: k, into: &scores)
        for i in 0..<m { for j in 0..<k { scores[i * k + j] /= (eigenvalues[j] + epsilon).squareRoot() } }
        guard case .zca = kind else { return Tensor(validatedShape: [m, k], scalars: scores) }
        var out = [Scalar](repeating: 0, count: m * d)
        product(scores, rows: m, inner: d, components, transposed: false, columns: d, into: &out)
        return Tensor(validatedShape: [m, d], scalars: out)
    }

    /// Undoes ``transform(_:)``: `z` is `(M, k)` for PCA (the result is the
    /// projection onto the kept components, plus the mean) or `(M, D)` for
    /// ZCA (the result is the input, within rounding).
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for another shape.
    /// - Complexity: as ``transform(_:)``.
    @_specialize(exported: true, where Scalar == Float)
    @_specialize(exported: true, where Scalar == Double)
    public func inverseTransform(_ z: Tensor<Scalar>) throws(NormError) -> Tensor<Scalar> {
        let d = featureCount, k = keptCount
        let m = try Validation.matrixRows(z, columns: k)
        var scores: [Scalar]
        switch kind {
        case .pca:
            scores = z.scalars
        case .zca:
            scores = [Scalar](repeating: 0, count: m * d)
            product(z.scalars, rows: m, inner: d, components, transposed: true, columns: d, into: &scores)
        }
        for i in 0..<m { for j in 0..<k { scores[i * k + j] *= (eigenvalues[j] + epsilon).squareRoot() } }
        var out = [Scalar](repeating: 0, count: m * d)
        product(scores, rows: m, inner: k, components, transposed: false, columns: d, into: &out)
        for i in 0..<m { for j in 0..<d { out[i * d + j] += mean[j] } }
        return Tensor(validatedShape: [m, d], scalars: out)
    }

    /// `out = a · C_kᵀ` (`transposed`, `C_k` the first `columns` rows of the
    /// components) or `a · C_k` (`C_k` the first `inner` rows), by `?gemm`.
    private func product(_ a: [Scalar], rows: Int, inner: Int, _ c: Tensor<Scalar>, transposed: Bool,
                         columns: Int, into out: inout [Scalar]) {
        let d = featureCount
        a.withUnsafeBufferPointer { a in
            c.withUnsafeBufferPointer { c in
                out.withUnsafeMutableBufferPointer { o in
                    WhiteningKernels.multiply(
                        rows: rows, columns: columns, inner: transposed ? d : inner, a: a.baseAddress!,
                        lda: transposed ? d : inner, transposeA: false, b: c.baseAddress!, ldb: d,
                        transposeB: transposed, beta: 0, c: o.baseAddress!, ldc: columns, backend: .blas)
                }
            }
        }
    }
}
