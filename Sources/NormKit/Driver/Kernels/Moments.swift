/// Moments `(count, mean, M2)` of `D` features, where `M2 = Σ(x - mean)²`
/// per feature, and their merge (Chan, Golub and LeVeque 1979): the one merge
/// that combines NormKit's row blocks, threads and processes.
///
/// Merging `(na, meanA, M2A)` with `(nb, meanB, M2B)`:
/// `δ = meanB - meanA`, `n = na + nb`, `mean = meanA + δ·nb/n`,
/// `M2 = M2A + M2B + δ²·na·nb/n`. It is exact in exact arithmetic and stable
/// in floating point when each part was computed two-pass. Moments of count 0
/// are the identity, exactly.
///
/// ```swift
/// var a = try Moments(columnsOf: try Tensor<Double>(randomNormal: [5, 3], seed: 1))
/// try a.merge(try Moments(columnsOf: try Tensor<Double>(randomNormal: [12, 3], seed: 2)))
/// a.variance   // the biased variance of the 17 rows, per feature
/// ```
public struct Moments<Scalar: BLASScalar>: Sendable, Hashable, Codable {
    /// The number of values per feature.
    public var count: Int
    /// The mean of each feature, `D`.
    public var mean: [Scalar]
    /// The sum of squared deviations from ``mean`` of each feature, `D`.
    public var m2: [Scalar]

    /// Moments from their parts.
    /// - Throws: ``NormError/invalidFeatureCount(_:)`` for a negative count (the
    ///   count of values), ``NormError/parameterCountMismatch(name:expected:actual:)``
    ///   when `m2` and `mean` differ in length.
    public init(count: Int, mean: [Scalar], m2: [Scalar]) throws(NormError) {
        guard count >= 0 else { throw .invalidFeatureCount(count) }
        try Validation.count("m2", m2.count, expected: mean.count)
        self.count = count
        self.mean = mean
        self.m2 = m2
    }

    /// The moments of the columns of an `(N, D)` tensor (`N` may be 0), each
    /// by the shifted two-pass algorithm of the kernels' degenerate parts
    /// (exact for a constant column).
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for a rank other
    ///   than 2.
    /// - Complexity: O(N·D).
    public init(columnsOf x: Tensor<Scalar>) throws(NormError) {
        guard x.shape.count == 2 else { throw .invalidShape(expected: "(N, D)", actual: x.shape) }
        let (n, d) = (x.shape[0], x.shape[1])
        var mean = [Scalar](repeating: 0, count: d), m2 = [Scalar](repeating: 0, count: d)
        if n > 0 && d > 0 {
            let ones = [Scalar](repeating: 1, count: n)
            var scratch = [Scalar](repeating: 0, count: n)
            x.withUnsafeBufferPointer { x in
                ones.withUnsafeBufferPointer { ones in
                    scratch.withUnsafeMutableBufferPointer { scratch in
                        for j in 0..<d {
                            (mean[j], m2[j]) = Moments.exact(x.baseAddress! + j, count: n, stride: d,
                                                             scratch: scratch.baseAddress!,
                                                             ones: ones.baseAddress!)
                        }
                    }
                }
            }
        }
        self.count = n
        self.mean = mean
        self.m2 = m2
    }

    /// Merges `other` into these moments (Chan's formula; `other` last). Count
    /// 0 on either side is the identity, bit for bit.
    /// - Throws: ``NormError/parameterCountMismatch(name:expected:actual:)`` for
    ///   moments of another number of features; ``NormError/countOverflow(_:_:)``
    ///   when the two counts add up to more than `Int.max`. A throwing merge
    ///   changes nothing.
    /// - Complexity: O(D), three `axpy`s.
    public mutating func merge(_ other: Moments<Scalar>) throws(NormError) {
        try Validation.count("mean", other.mean.count, expected: mean.count)
        try Validation.count("m2", other.m2.count, expected: m2.count)
        guard !count.addingReportingOverflow(other.count).overflow else {
            throw .countOverflow(count, other.count)
        }
        if other.count == 0 { return }
        if count == 0 {
            self = other
            return
        }
        var delta = other.mean
        let length = mean.count
        // `delta` is written (a copy of the other's mean, made here).
        count = withMutablePointers(&mean, &m2) { mean, m2 in
            delta.withUnsafeMutableBufferPointer { delta in
                other.m2.withUnsafeBufferPointer { otherM2 in
                    Moments.merge(count: count, mean: mean!, m2: m2!, blockCount: other.count,
                                  blockMean: delta.baseAddress!, blockM2: otherM2.baseAddress!, length: length)
                }
            }
        }
    }

    /// The biased variance of each feature, `m2 / count` (NaN for count 0).
    public var variance: [Scalar] { m2.map { $0 / Scalar(count) } }

    private enum CodingKeys: String, CodingKey { case count, mean, m2 }

    /// Decodes moments and validates them as ``init(count:mean:m2:)`` does.
    /// - Throws: `DecodingError`; `.dataCorrupted` names the ``NormError``.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let count = try c.decode(Int.self, forKey: .count)
        let mean = try c.decode([Scalar].self, forKey: .mean)
        let m2 = try c.decode([Scalar].self, forKey: .m2)
        do {
            try self.init(count: count, mean: mean, m2: m2)
        } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription: error.description))
        }
    }
}

// MARK: The kernels' side
//
// The BLAS kernels compute a part's moments two-pass from the `gemv` mean
// `m = Σx / n`, which is off by a few units in the last place: harmless where
// the values spread, but a constant feature then gets a variance of `δ²`
// (`δ = x - m`) and an output of `±1` instead of `beta`, and a Float constant
// of 1e30 overflows. So any part whose variance comes out within the error of
// its mean (`isDegenerate(mean:m2:count:)`: constant or nearly so) or not
// finite is recomputed by `exact(_:count:stride:scratch:ones:)`, the shifted
// two-pass algorithm that the naive kernels use for every part: with `k` the
// part's first value, `t = x - k`, `m' = Σt / n`, `mean = k + m'`,
// `M2 = Σ(t - m')²`. A constant part has `t = 0`: its mean is its value and its
// `M2` is 0, bit for bit, for any value and length. Merging parts with `δ = 0`
// changes neither.
extension Moments {
    /// Whether moments computed from an approximate mean cannot be trusted:
    /// the variance `m2 / count` is at most the square of `2·count` units in
    /// the last place of `mean` (the most a sum of `count` values can be off),
    /// or either is not finite. Real data rarely is (its spread would be below
    /// the precision of its mean); a constant part always is.
    @inlinable
    static func isDegenerate(mean: Scalar, m2: Scalar, count: Int) -> Bool {
        guard mean.isFinite, m2.isFinite else { return true }
        let spread = 2 * Scalar(count) * mean.ulp
        return m2 <= Scalar(count) * spread * spread
    }

    /// The corrected two-pass step over `length` parts of `count` values
    /// each, given their residual sums `Σ(x - mean)`: `r = residual / count`,
    /// `mean += r`, `m2 -= r·residual`. Returns whether any part may be
    /// degenerate, by a test without branches that the loop vectorizes:
    /// `m2 > 8·count³·ulpOfOne²·mean²` (twice the bound of
    /// ``isDegenerate(mean:m2:count:)``, as `ulp(mean) ≤ |mean|·ulpOfOne`),
    /// `m2` above the least normal magnitude, and finite. A degenerate part
    /// fails it, so the caller asks ``isDegenerate(mean:m2:count:)`` of each
    /// part only when this returns `true`.
    ///
    /// - Complexity: O(length).
    @inlinable
    static func correct(count: Int, mean: UnsafeMutablePointer<Scalar>,
                        m2: UnsafeMutablePointer<Scalar>, residual: UnsafePointer<Scalar>,
                        length: Int) -> Bool {
        let n = Scalar(count), inverseCount = 1 / Scalar(count)
        let bound = 8 * n * n * n * Scalar.ulpOfOne * Scalar.ulpOfOne
        var suspects = 0
        for j in 0..<length {
            let r = residual[j] * inverseCount
            let m = mean[j] + r, s = m2[j] - r * residual[j]
            mean[j] = m
            m2[j] = s
            let clear = (s > bound * m * m ? 1 : 0) & (s > Scalar.leastNormalMagnitude ? 1 : 0)
                & (s < Scalar.infinity ? 1 : 0)
            suspects &+= 1 &- clear
        }
        return suspects > 0
    }

    /// The shifted two-pass moments of `count` values `x[0], x[stride], ...`:
    /// `t = x - x[0]` into `scratch`, `m' = dot(t, 1) / count`, `t -= m'` in
    /// place, `M2 = dot(t, t)`; returns `(x[0] + m', M2)`. Exact for constant
    /// values.
    ///
    /// - Parameters:
    ///   - scratch: `count` scalars to overwrite.
    ///   - ones: at least `count` ones.
    /// - Complexity: O(count), two `dot` calls.
    @inlinable
    static func exact(
        _ x: UnsafePointer<Scalar>, count: Int, stride: Int,
        scratch: UnsafeMutablePointer<Scalar>, ones: UnsafePointer<Scalar>
    ) -> (mean: Scalar, m2: Scalar) {
        let k = x[0]
        for i in 0..<count { scratch[i] = x[i * stride] - k }
        let shifted = Scalar.dot(count: count, x: scratch, y: ones) / Scalar(count)
        for i in 0..<count { scratch[i] -= shifted }
        return (k + shifted, Scalar.dot(count: count, x: scratch, y: scratch))
    }

    /// Merges the block moments `(blockCount, blockMean, blockM2)` into the
    /// running `(count, mean, m2)` over `length` columns, with `axpy` for the
    /// vector updates. `blockMean` is overwritten with `δ`.
    ///
    /// - Returns: the merged count.
    @inlinable
    static func merge(
        count: Int, mean: UnsafeMutablePointer<Scalar>, m2: UnsafeMutablePointer<Scalar>,
        blockCount: Int, blockMean: UnsafeMutablePointer<Scalar>,
        blockM2: UnsafePointer<Scalar>, length: Int
    ) -> Int {
        let total = count + blockCount
        let n = Scalar(total)
        // δ = meanB - meanA, in place in blockMean.
        Scalar.axpy(count: length, alpha: -1, x: mean, y: blockMean)
        // mean += δ·nb/n;  M2 += M2B.
        Scalar.axpy(count: length, alpha: Scalar(blockCount) / n, x: blockMean, y: mean)
        Scalar.axpy(count: length, alpha: 1, x: blockM2, y: m2)
        // M2 += δ²·na·nb/n (an elementwise square: a loop, not BLAS).
        let weight = Scalar(count) * Scalar(blockCount) / n
        if weight != 0 {
            for j in 0..<length { m2[j] += weight * blockMean[j] * blockMean[j] }
        }
        return total
    }
}
