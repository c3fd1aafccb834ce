/// What a normalization layer's forward pass saves for its backward pass: the
/// input, the statistics that normalized it and the `gamma` it used.
///
/// The statistics are one per normalized set: per feature for ``BatchNorm``,
/// per sample for ``LayerNorm``.
///
/// Reuse one cache across calls of the allocation-free entry points: its
/// storage is sized on first use and overwritten in place afterwards. After a
/// call that threw, its contents are unspecified.
public struct NormCache<Scalar: BLASScalar>: Sendable {
    /// The forward input `x` (shared, not copied: tensors are copy-on-write).
    public internal(set) var input: Tensor<Scalar>
    /// The mean of each normalized set: for ``BatchNorm`` the batch mean in
    /// training and the running mean in inference.
    public var mean: [Scalar] { storedMean }
    /// `1 / sqrt(var + epsilon)` of each normalized set.
    public var inverseStandardDeviation: [Scalar] { storedInverseStandardDeviation }

    @usableFromInline var storedMean: [Scalar]
    @usableFromInline var storedInverseStandardDeviation: [Scalar]
    /// The `gamma` the forward pass used.
    public internal(set) var gamma: [Scalar]
    /// The mode of the forward pass. After a ``BatchNorm`` inference pass the
    /// statistics are constants, and backward returns the gradient of that
    /// (affine) function.
    public internal(set) var mode: Mode
    /// The layer whose forward pass filled this cache; ``CacheOrigin/none``
    /// when none did or the last one threw. Backward refuses a cache whose
    /// origin is not its own layer.
    public internal(set) var origin: CacheOrigin

    /// An empty cache for the allocation-free entry points to fill.
    public init() {
        input = .empty
        storedMean = []
        storedInverseStandardDeviation = []
        gamma = []
        mode = .training
        origin = .none
    }

    /// Sizes the statistics vectors, records the input and the layer, copies
    /// `gamma` in place. A forward pass that then throws calls ``invalidate()``.
    @usableFromInline
    mutating func record(input: Tensor<Scalar>, gamma source: [Scalar], mode: Mode,
                         statisticCount: Int, origin: CacheOrigin) {
        self.input = input
        self.mode = mode
        self.origin = origin
        storedMean.resizeReusingStorage(to: statisticCount)
        storedInverseStandardDeviation.resizeReusingStorage(to: statisticCount)
        gamma.resizeReusingStorage(to: source.count)
        gamma.withUnsafeMutableBufferPointer { target in
            source.withUnsafeBufferPointer { _ = target.update(fromContentsOf: $0) }
        }
    }

    /// Marks the cache as filled by no forward pass (its statistics are partial).
    @usableFromInline
    mutating func invalidate() { origin = .none }
}


/// The raw pointers a backward kernel reads and writes: the output gradient,
/// the cache's input, statistics and `gamma`, and the gradients' buffers.
@usableFromInline
struct BackwardPointers<Scalar: BLASScalar> {
    @usableFromInline let dy, x, mean, invstd, gamma: UnsafePointer<Scalar>
    @usableFromInline let dx, dgamma, dbeta: UnsafeMutablePointer<Scalar>

    @inlinable
    init(dy: UnsafePointer<Scalar>, x: UnsafePointer<Scalar>, mean: UnsafePointer<Scalar>,
         invstd: UnsafePointer<Scalar>, gamma: UnsafePointer<Scalar>,
         dx: UnsafeMutablePointer<Scalar>, dgamma: UnsafeMutablePointer<Scalar>,
         dbeta: UnsafeMutablePointer<Scalar>) {
        self.dy = dy; self.x = x; self.mean = mean; self.invstd = invstd; self.gamma = gamma
        self.dx = dx; self.dgamma = dgamma; self.dbeta = dbeta
    }
}

extension NormCache {
    /// Calls `body` with the pointers of a backward pass through this cache:
    /// the one place every layer's backward opens its buffers. `gradients`
    /// must already be sized (``NormGradients/prepare(shape:parameterCount:)``).
    @inlinable
    func withBackwardPointers<R>(
        _ outputGradient: Tensor<Scalar>, into gradients: inout NormGradients<Scalar>,
        _ body: (BackwardPointers<Scalar>) -> R
    ) -> R {
        outputGradient.withUnsafeBufferPointer { dy in
        input.withUnsafeBufferPointer { x in
        storedMean.withUnsafeBufferPointer { mean in
        storedInverseStandardDeviation.withUnsafeBufferPointer { invstd in
        gamma.withUnsafeBufferPointer { gamma in
        gradients.input.withUnsafeMutableBufferPointer { dx in
        gradients.gamma.withUnsafeMutableBufferPointer { dgamma in
        gradients.beta.withUnsafeMutableBufferPointer { dbeta in
            body(BackwardPointers(
                dy: dy.baseAddress!, x: x.baseAddress!, mean: mean.baseAddress!,
                invstd: invstd.baseAddress!, gamma: gamma.baseAddress!, dx: dx.baseAddress!,
                dgamma: dgamma.baseAddress!, dbeta: dbeta.baseAddress!))
        }}}}}}}}
    }
}
