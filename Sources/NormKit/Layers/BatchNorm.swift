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

    /// A shard of `(N, D)` rows, `N >= 0`: `N` runs of the `D` features, one value each.
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for a shape other
    ///   than `(N, D)`; ``NormError/negativeDimension(shape:)``,
    ///   ``NormError/shapeOverflow(shape:)``, ``NormError/sizeTooLarge(_:)``.
    /// - Complexity: O(1).
    @inlinable
    public func shardGeometry(shape: [Int]) throws(NormError) -> (outer: Int, inner: Int) {
        let count = try Tensor<Scalar>.elementCount(of: shape)
        return (try Validation.matrixRows(shape: shape, count: count, columns: featureCount, minimumRows: 0), 1)
    }

    /// The origin its forward passes record in a cache: `.batchNorm(featureCount:)`.
    @inlinable
    public var cacheOrigin: CacheOrigin { .batchNorm(featureCount: featureCount) }

    // MARK: Forward

    /// Normalizes an `(N, D)` batch in borrowed memory; see the type's
    /// documentation for the formulas. The `Tensor` and `Span` entry points and
    /// the value API (from ``BufferedNormalizationLayer``) call this.
    ///
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for a shape other than
    ///   `(N, D)`; ``NormError/insufficientValues(valuesPerStatistic:)`` for `N < 2`
    ///   in training; ``NormError/nonFiniteStatistics(index:)`` when a batch
    ///   statistic is NaN or infinite; ``NormError/bufferCountMismatch(name:expected:actual:)``;
    ///   the hyperparameter errors. A throwing call leaves the running
    ///   statistics unchanged.
    /// - Complexity: O(N·D).
    ///
    /// The cache copies the input (see
    /// `forward(_:shape:mode:into:cache:workspace:)` of ``BufferedNormalizationLayer``);
    /// `cache` and `workspace` are sized on first use and reused afterwards
    /// (then the call allocates nothing); after a throw they hold unspecified values.
    ///
    /// With a `residual` (ResNet's block end) the output is
    /// `act(gamma·xhat + beta + residual)`, in the same pass.
    @inlinable
    public mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, residual: UnsafeBufferPointer<Scalar>?,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        let mode = runningStatistics.statisticsMode(mode)
        try validateParameters()
        try cache.adopt(input, shape: shape)
        try Validation.buffer("output", output.count, expected: input.count)
        try Validation.residual(residual, count: input.count)
        let rows = try Validation.matrixRows(cache.input, columns: featureCount)
        if mode == .training { try Validation.valuesPerStatistic(rows) }
        try BatchStatistics.forward(
            exchange: LocalStatistics(),
            geometry: ChannelGeometry(outer: rows, channels: featureCount, inner: 1),
            mode: mode, origin: cacheOrigin, gamma: gamma, beta: beta,
            runningMean: &runningMean,
            runningVariance: &runningVariance, epsilon: epsilon, update: runningUpdate,
            estimator: varianceEstimator, backend: backend, output: output,
            residual: residual?.baseAddress, activation: activation, cache: &cache,
            workspace: &workspace)
        if runningStatistics.counts(mode) { batchesTracked += 1 }
    }

    /// Inference with the running statistics, keeping nothing:
    /// `y = act(gamma·(x - runningMean)/sqrt(runningVariance + epsilon) + beta)`,
    /// the same bits as `forward(mode: .inference)`'s output. `output` may be
    /// `input`'s memory. With ``RunningStatistics/none`` it is the forward
    /// pass with the batch's statistics, and allocates that pass's cache.
    /// - Throws: ``NormError/invalidShape(expected:actual:)``,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``,
    ///   ``NormError/nonFiniteStatistics(index:)``, the hyperparameter errors.
    /// - Complexity: O(N·D); allocation-free once `workspace` is sized.
    @inlinable
    public func infer(
        _ input: UnsafeBufferPointer<Scalar>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        if runningStatistics == .none {
            var layer = self, cache = Cache()
            return try layer.forward(input, residual: nil, shape: shape, mode: .training, into: output,
                                     cache: &cache, workspace: &workspace)
        }
        try validateParameters()
        let count = try Validation.inferBuffers(input, output, shape: shape)
        let rows = try Validation.matrixRows(shape: shape, count: count, columns: featureCount)
        try BatchStatistics.infer(
            input.baseAddress!, geometry: ChannelGeometry(outer: rows, channels: featureCount, inner: 1),
            gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
            epsilon: epsilon, backend: backend, output: output.baseAddress!,
            epilogue: Epilogue(residual: nil, activation: activation), workspace: &workspace)
    }

    // MARK: Backward

    /// The closed-form backward (cs231n's `batchnorm_backward_alt`) over
    /// borrowed memory: `dbeta = Σ dy`, `dgamma = Σ dy·xhat`,
    /// `dx = gamma·invstd/N · (N·dy - dbeta - xhat·dgamma)`. The `Tensor` and
    /// `Span` entry points and the value API call this.
    ///
    /// Column sums are `gemv(Trans, ·, 1)` over row blocks (BLAS backend). After an
    /// inference forward the statistics are constants and `dx = gamma·invstd·dy`.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer, size, layout or group count, or from a forward pass
    ///   that threw; ``NormError/bufferCountMismatch(name:expected:actual:)``.
    /// - Complexity: O(N·D).
    ///
    /// After a forward with ``activation`` `.relu`, `dy` is first masked by
    /// the output's sign; `residualGradient` (when given) receives that
    /// gradient, the residual's.
    @inlinable
    public func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, cache: Cache,
        inputGradient: UnsafeMutableBufferPointer<Scalar>,
        residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try backward(GradientBuffers(dy: outputGradient, dx: inputGradient, dgamma: gammaGradient,
                                     dbeta: betaGradient),
                     residualGradient: residualGradient, cache: cache, form: .closedForm,
                     workspace: &workspace)
    }

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

    /// Both backward forms over borrowed buffers (through the ReLU's mask
    /// first, after a ReLU forward), validated here.
    @inlinable
    func backward(
        _ buffers: GradientBuffers<Scalar>, residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        cache: Cache, form: BackwardForm, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try cache.backwardThroughActivation(
            buffers, residualGradient: residualGradient, masksInside: form == .closedForm, workspace: &workspace
        ) { buffers, mask, workspace throws(NormError) in
            try BatchStatistics.validateBackward(buffers, cache: cache, channels: featureCount,
                                                 origin: cacheOrigin)
            let rows = try Validation.matrixRows(cache.input, columns: featureCount)
            _ = BatchStatistics.backward(
                buffers, mask: mask, cache: cache,
                geometry: ChannelGeometry(outer: rows, channels: featureCount, inner: 1),
                backend: backend, form: form, exchange: LocalStatistics(), workspace: &workspace)
        }
    }
}
