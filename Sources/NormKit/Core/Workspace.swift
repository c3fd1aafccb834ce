/// Caller-owned scratch memory for the allocation-free entry points.
///
/// A workspace grows to the largest size a call has asked of it and is then
/// reused: a training loop or a benchmark that keeps one workspace per layer
/// allocates only on its first call (or when a shape grows). It holds a vector
/// of ones (the `x` of the column- and row-sum `gemv` calls) followed by
/// scratch space for the row blocks.
///
/// A workspace is a value; give each concurrent caller its own.
public struct Workspace<Scalar: BLASScalar>: Sendable {
    @usableFromInline var storage: [Scalar] = []
    @usableFromInline var onesCount = 0

    /// An empty workspace; the first call that uses it sizes it.
    public init() {}

    /// The number of scalars currently held (ones and scratch).
    public var capacity: Int { storage.count }

    /// Calls `body` with at least `ones` ones and a scratch region of at least
    /// `scratch` scalars, growing the storage only when it is too small.
    ///
    /// Every BLAS call of a layer's pass happens inside such a call, kernels,
    /// merges and running-statistics updates alike, so OpenBLAS runs on one
    /// thread for all of them (``BLASRuntime``).
    @inlinable
    mutating func withRegions<R>(
        ones: Int, scratch: Int,
        _ body: (UnsafePointer<Scalar>, UnsafeMutablePointer<Scalar>) -> R
    ) -> R {
        if storage.isEmpty || ones > onesCount || storage.count - onesCount < scratch {
            let newOnes = max(ones, onesCount)
            // At least one scratch scalar, so the base address always exists.
            let newScratch = max(1, scratch, storage.count - onesCount)
            var grown = [Scalar].zeros(count: newOnes + newScratch)
            for index in 0..<newOnes { grown[index] = 1 }
            storage = grown
            onesCount = newOnes
        }
        let onesCount = self.onesCount
        BLASRuntime.enterSingleThreaded()
        defer { BLASRuntime.leaveSingleThreaded() }
        return storage.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!
            return body(UnsafePointer(base), base + onesCount)
        }
    }
}
