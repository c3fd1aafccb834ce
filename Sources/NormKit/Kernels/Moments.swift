/// Partial moments `(count, mean, M2)` of a set of columns, where
/// `M2 = Σ(x - mean)²`, and their merge (Chan, Golub and LeVeque 1979).
///
/// Merging `(na, meanA, M2A)` with `(nb, meanB, M2B)`:
/// `δ = meanB - meanA`, `n = na + nb`, `mean = meanA + δ·nb/n`,
/// `M2 = M2A + M2B + δ²·na·nb/n`. It is exact in exact arithmetic and stable
/// in floating point when each part was computed two-pass, so row blocks,
/// threads and (later) processes all combine through this one function.
///
/// Every part, on both backends, is computed by the same shifted two-pass
/// algorithm: with `k` the part's first value, `m' = Σ(x - k) / n`,
/// `mean = k + m'`, `M2 = Σ((x - k) - m')²`. When the values of a part lie
/// within a factor of two of `k`, `x - k` is exact (Sterbenz), so the mean is
/// accurate to the precision `Scalar` can represent whatever the offset, and
/// a constant part has `x - k = 0`: its mean is its value and its `M2` is 0,
/// bit for bit, for any value and length (a plain `Σx / n` is off by a few
/// units in the last place, which a constant feature then turns into a
/// variance of `δ²` and an output of `±1` instead of `beta`). Merging parts
/// with `δ = 0` changes neither.
@usableFromInline
enum Moments {
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
        Scalar.axpy(count: length, alpha: -1, x: mean, incx: 1, y: blockMean, incy: 1)
        // mean += δ·nb/n;  M2 += M2B.
        Scalar.axpy(count: length, alpha: Scalar(blockCount) / n, x: blockMean, incx: 1, y: mean, incy: 1)
        Scalar.axpy(count: length, alpha: 1, x: blockM2, incx: 1, y: m2, incy: 1)
        // M2 += δ²·na·nb/n (an elementwise square: a loop, not BLAS).
        let weight = Scalar(count) * Scalar(blockCount) / n
        if weight != 0 {
            for j in 0..<length { m2[j] += weight * blockMean[j] * blockMean[j] }
        }
        return total
    }
}
