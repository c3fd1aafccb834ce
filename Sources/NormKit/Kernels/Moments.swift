/// Partial moments `(count, mean, M2)` of a set of columns, where
/// `M2 = Σ(x - mean)²`, and their merge (Chan, Golub and LeVeque 1979).
///
/// Merging `(na, meanA, M2A)` with `(nb, meanB, M2B)`:
/// `δ = meanB - meanA`, `n = na + nb`, `mean = meanA + δ·nb/n`,
/// `M2 = M2A + M2B + δ²·na·nb/n`. It is exact in exact arithmetic and stable
/// in floating point when each part was computed two-pass, so row blocks,
/// threads and (later) processes all combine through this one function.
///
/// The BLAS kernels compute a part's moments two-pass from the `gemv` mean
/// `m = Σx / n`, which is off by a few units in the last place: harmless where
/// the values spread, but a constant feature then gets a variance of `δ²`
/// (`δ = x - m`) and an output of `±1` instead of `beta`, and a Float constant
/// of 1e30 overflows. So any part whose variance comes out within the error
/// of its mean (``isDegenerate(mean:m2:count:)``: constant or nearly so) or not
/// finite is recomputed by ``exact(_:count:stride:scratch:ones:)``, the shifted
/// two-pass algorithm that the naive kernels use for every part: with `k` the
/// part's first value, `t = x - k`, `m' = Σt / n`, `mean = k + m'`,
/// `M2 = Σ(t - m')²`. A constant part has `t = 0`: its mean is its value and
/// its `M2` is 0, bit for bit, for any value and length. Merging parts with
/// `δ = 0` changes neither.
@usableFromInline
enum Moments {
    /// Whether moments computed from an approximate mean cannot be trusted:
    /// the variance `m2 / count` is at most the square of `2·count` units in
    /// the last place of `mean` (the most a sum of `count` values can be off),
    /// or either is not finite. Real data rarely is (its spread would be below
    /// the precision of its mean); a constant part always is.
    @inlinable
    static func isDegenerate<Scalar: BLASScalar>(mean: Scalar, m2: Scalar, count: Int) -> Bool {
        guard mean.isFinite, m2.isFinite else { return true }
        let spread = 2 * Scalar(count) * mean.ulp
        return m2 <= Scalar(count) * spread * spread
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
    static func exact<Scalar: BLASScalar>(
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
    static func merge<Scalar: BLASScalar>(
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
