/// Batch normalization of an `(N, D)` input: each of the `D` features is
/// normalized with statistics over the `N` rows of the batch (Ioffe and Szegedy
/// 2015; cs231n's `batchnorm_forward`).
///
/// Training: `xhat = (x - mean) / sqrt(var + epsilon)` with the batch mean and
/// the biased batch variance, `y = gamma * xhat + beta`, and then
/// `running = momentum * running + (1 - momentum) * batchStatistic`
/// (`.unbiased` feeds `var * N / (N - 1)` to the running variance).
/// Inference: the same with the running statistics; nothing changes.
///
/// ```swift
/// var bn = try BatchNorm<Float>(featureCount: 3)
/// let x = try Tensor<Float>(randomNormal: [8, 3], seed: 1)
/// let (y, cache) = try bn.forward(x, mode: .training)
/// let grads = try bn.backward(y, cache: cache)   // dL/dy = y, as an example
/// ```
///
/// The BLAS backend reads `x` once for the statistics (row blocks in L2,
/// `gemv(Trans, X_b, 1)` per block, Chan merges) and once for the normalize
/// pass: 12 bytes per Float element in training, 8 in inference.
public struct BatchNorm<Scalar: BLASScalar>: BatchStatisticsLayer, Equatable {
    /// The forward pass's saved input, batch (or running) statistics and `gamma`.
    public typealias Cache = NormCache<Scalar>

    /// `D`, the number of features.
    public let featureCount: Int
    /// Which of `gamma` and `beta` the layer has (PyTorch's `affine`).
    public let affine: Affine
    /// The scale, one per feature; starts at ones; empty without one (``Affine/none``).
    public var gamma: [Scalar]
    /// The shift, one per feature; starts at zeros; empty without one
    /// (``Affine/scaleOnly``, ``Affine/none``).
    public var beta: [Scalar]
    /// The running mean; starts at zeros (cs231n).
    public var runningMean: [Scalar]
    /// The running variance; starts at zeros (cs231n; PyTorch starts at ones).
    public var runningVariance: [Scalar]
    /// Added to the variance before the square root; finite and positive.
    public var epsilon: Scalar
    /// The weight of the old running value, in `[0, 1]` (PyTorch's `momentum=0.1`
    /// is NormKit's `0.9`).
    public var momentum: Scalar
    /// What the running variance is fed.
    public var varianceEstimator: VarianceEstimator
    /// How the running statistics are kept; ``RunningStatistics/none``
    /// normalizes with the batch's statistics in both modes.
    public var runningStatistics: RunningStatistics
    /// The training batches counted so far (PyTorch's `num_batches_tracked`):
    /// one more after each successful training forward, unless
    /// ``runningStatistics`` is ``RunningStatistics/none``. The count
    /// ``RunningStatistics/cumulative`` averages over.
    public var batchesTracked: Int = 0
    /// Applied to `gamma·xhat + beta` (plus a residual) in the output pass.
    public var activation: FusedActivation
    /// The implementation used.
    public var backend: Backend

    /// Creates a batch-norm layer with `gamma` ones, `beta` zeros and running
    /// statistics zeros.
    ///
    /// - Throws: ``NormError/invalidFeatureCount(_:)``, ``NormError/invalidEpsilon(_:)``,
    ///   ``NormError/invalidMomentum(_:)``.
    public init(featureCount: Int, epsilon: Scalar = 1e-5, momentum: Scalar = 0.9,
                varianceEstimator: VarianceEstimator = .biased,
                activation: FusedActivation = .none, runningStatistics: RunningStatistics = .exponential,
                affine: Affine = .scaleAndShift, backend: Backend = .blas) throws(NormError) {
        try Validation.featureCount(featureCount)
        try Validation.epsilon(epsilon)
        try Validation.momentum(momentum)
        self.featureCount = featureCount
        self.affine = affine
        self.gamma = Array(repeating: 1, count: affine.scaleCount(featureCount))
        self.beta = Array(repeating: 0, count: affine.shiftCount(featureCount))
        self.runningMean = Array(repeating: 0, count: featureCount)
        self.runningVariance = Array(repeating: 0, count: featureCount)
        self.epsilon = epsilon
        self.momentum = momentum
        self.varianceEstimator = varianceEstimator
        self.activation = activation
        self.runningStatistics = runningStatistics
        self.backend = backend
    }

    /// ``featureCount``: the features are the channels of the batch statistics.
    @inlinable
    public var channelCount: Int { featureCount }

    /// The origin of ``SyncBatchNorm``'s caches: `.syncBatchNorm(featureCount:)`.
    @inlinable
    public var synchronizedOrigin: CacheOrigin { .syncBatchNorm(featureCount: featureCount) }

    /// `(N, D)` rows, `N >= minimumBatch`: `N` runs of the `D` features, one value each.
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for a shape other
    ///   than `(N, D)`; ``NormError/negativeDimension(shape:)``,
    ///   ``NormError/shapeOverflow(shape:)``, ``NormError/sizeTooLarge(_:)``.
    /// - Complexity: O(1).
    @inlinable
    public func channelGeometry(shape: [Int], minimumBatch: Int) throws(NormError) -> (outer: Int, inner: Int) {
        let count = try Tensor<Scalar>.elementCount(of: shape)
        return (try Validation.matrixRows(shape: shape, count: count, columns: featureCount,
                                          minimumRows: minimumBatch), 1)
    }

    /// The origin its forward passes record in a cache: `.batchNorm(featureCount:)`.
    @inlinable
    public var cacheOrigin: CacheOrigin { .batchNorm(featureCount: featureCount) }

    // The passes (forward, infer, backward, and their 16-bit forms) are
    // BatchStatisticsLayer's, in BatchStatisticsLayer.swift.

    // MARK: Backward through the graph

    /// The staged backward through the computation graph (cs231n's
    /// `batchnorm_backward`): `xmu`, `var`, `sqrtvar`, `ivar`, `xhat`, node by node,
    /// each column reduction a `gemv(Trans, ·, 1)` on the BLAS backend, which walks
    /// the nodes block by block of rows that stay in L2 (the naive backend walks
    /// them over the whole `N x D` batch). Slower than ``backward(_:cache:)`` (it
    /// makes more passes) and equal to it within rounding; it is here to be
    /// compared. With
    /// ``Threading/threadCount`` above 1 (BLAS backend) each stage runs on
    /// chunks of rows, and the chunks' column sums are added between stages.
    /// - Throws: as ``backward(_:cache:)``.
    /// - Complexity: O(N·D).
    @inlinable
    public func backwardThroughGraph(_ outputGradient: Tensor<Scalar>,
                                     cache: Cache) throws(NormError) -> NormGradients<Scalar> {
        var gradients = NormGradients<Scalar>()
        var workspace = Workspace<Scalar>()
        try backwardThroughGraph(outputGradient, cache: cache, into: &gradients, workspace: &workspace)
        return gradients
    }

    /// The allocation-free ``backwardThroughGraph(_:cache:)`` into caller-owned buffers.
    /// - Throws: as ``backward(_:cache:)``.
    /// - Complexity: O(N·D).
    @inlinable
    public func backwardThroughGraph(
        _ outputGradient: Tensor<Scalar>, cache: Cache,
        into gradients: inout NormGradients<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try withGradientBuffers(outputGradient, cache: cache, into: &gradients) { buffers in
            do throws(NormError) {
                try backward(buffers, residualGradient: nil, cache: cache, form: .throughGraph,
                             workspace: &workspace)
                return nil
            } catch { return error }
        }
    }
}
