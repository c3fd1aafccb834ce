/// Instance normalization of `(N, C, H, W)` images, or `(N, C, L)` and
/// `(N, C, D, H, W)` inputs (Ulyanov et al. 2016): each
/// channel of each sample is normalized over its own `H·W` values; `gamma` and
/// `beta` are per channel. It is ``GroupNorm`` with one channel per group, as
/// its own type; `layout: .nhwc` takes channels-last input, `(N, L, C)`,
/// `(N, H, W, C)` or `(N, D, H, W, C)` (`Float` and `Double`).
///
/// ```swift
/// var instance = try InstanceNorm<Double>(channelCount: 3)
/// let (y, _) = try instance.forward(Tensor(randomNormal: [2, 3, 4, 4], seed: 5), mode: .training)
/// ```
///
/// By default there are no running statistics (``RunningStatistics/none``,
/// PyTorch's `track_running_stats=False`): both modes compute the same thing
/// and need `H·W >= 2`. With ``RunningStatistics/exponential`` or
/// ``RunningStatistics/cumulative`` (PyTorch's `track_running_stats=True`), a
/// training pass also folds the mean over samples of each channel's instance
/// mean and variance into `runningMean` and `runningVariance` (as
/// ``SpatialBatchNorm`` folds its batch's), and inference normalizes each
/// channel with them, as ``SpatialBatchNorm`` does; `backward` after that
/// inference is the exact gradient with them as constants.
public struct InstanceNorm<Scalar: BLASScalar>: ActivatedNormalizationLayer, Equatable {
    /// The forward pass's saved input, per-(sample, channel) statistics and `gamma`.
    public typealias Cache = NormCache<Scalar>

    /// `C`, the number of channels.
    public let channelCount: Int
    /// Where the channels are: ``ChannelLayout/nchw`` (after the batch) or
    /// ``ChannelLayout/nhwc`` (last), for every rank.
    public var layout: ChannelLayout
    /// Which of `gamma` and `beta` the layer has (PyTorch's `affine`).
    public let affine: Affine
    /// The scale, one per channel; starts at ones; empty without one (``Affine/none``).
    public var gamma: [Scalar]
    /// The shift, one per channel; starts at zeros; empty without one
    /// (``Affine/scaleOnly``, ``Affine/none``).
    public var beta: [Scalar]
    /// Added to the variance before the square root; finite and positive.
    public var epsilon: Scalar
    /// Applied to `gamma·xhat + beta` (plus a residual) in the output pass.
    public var activation: FusedActivation
    /// The implementation used.
    public var backend: Backend
    /// Each channel's running mean of the instance means; starts at zeros.
    /// Unused with ``RunningStatistics/none``.
    public var runningMean: [Scalar]
    /// Each channel's running mean of the instance variances (by
    /// ``varianceEstimator``); starts at zeros. Unused with ``RunningStatistics/none``.
    public var runningVariance: [Scalar]
    /// The weight of the old running statistics under ``RunningStatistics/exponential``:
    /// `running = momentum · running + (1 - momentum) · batch` (PyTorch's momentum is `1 - momentum`).
    public var momentum: Scalar
    /// The divisor of the instance variances that `runningVariance` averages:
    /// `H·W` (`.biased`) or `H·W - 1` (`.unbiased`, PyTorch's). Normalization always uses `H·W`.
    public var varianceEstimator: VarianceEstimator
    /// Whether and how training passes keep running statistics for inference.
    public var runningStatistics: RunningStatistics
    /// Training passes that updated the running statistics (PyTorch's
    /// `num_batches_tracked`, which PyTorch's InstanceNorm leaves at 0);
    /// ``RunningStatistics/cumulative`` weighs the next batch by `1 / (batchesTracked + 1)`.
    public var batchesTracked = 0

    /// Creates an instance-norm layer with `gamma` ones, `beta` zeros and, for
    /// a `runningStatistics` other than `.none`, running statistics at zeros.
    ///
    /// - Throws: ``NormError/invalidFeatureCount(_:)``, ``NormError/invalidEpsilon(_:)``,
    ///   ``NormError/invalidMomentum(_:)``.
    public init(channelCount: Int, epsilon: Scalar = 1e-5, momentum: Scalar = 0.9,
                varianceEstimator: VarianceEstimator = .biased, layout: ChannelLayout = .nchw,
                activation: FusedActivation = .none, runningStatistics: RunningStatistics = .none,
                affine: Affine = .scaleAndShift, backend: Backend = .blas) throws(NormError) {
        try Validation.featureCount(channelCount)
        try Validation.epsilon(epsilon)
        try Validation.momentum(momentum)
        self.channelCount = channelCount
        self.layout = layout
        self.affine = affine
        self.gamma = Array(repeating: 1, count: affine.scaleCount(channelCount))
        self.beta = Array(repeating: 0, count: affine.shiftCount(channelCount))
        self.runningMean = Array(repeating: 0, count: channelCount)
        self.runningVariance = Array(repeating: 0, count: channelCount)
        self.epsilon = epsilon
        self.momentum = momentum
        self.varianceEstimator = varianceEstimator
        self.activation = activation
        self.runningStatistics = runningStatistics
        self.backend = backend
    }

    /// Re-validates the public `var`s that `forward` depends on.
    @inlinable
    func validateParameters() throws(NormError) {
        try Validation.batchParameters(
            count: channelCount, affine: affine, gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
            epsilon: epsilon, momentum: momentum, batchesTracked: batchesTracked)
    }

    /// The per-channel geometry of inference with the running statistics:
    /// ``SpatialBatchNorm``'s in `layout`.
    @inlinable
    static func frozenGeometry(layout: ChannelLayout, channels: Int, shape: [Int], count: Int)
        throws(NormError) -> ChannelGeometry {
        try SpatialBatchNorm<Scalar>.geometry(layout: layout, channelCount: channels, shape: shape, count: count)
    }

    /// After a training pass whose cache holds the instance statistics of an
    /// input of `shape`: folds their mean over samples into the running
    /// statistics (each variance recovered from its cached `1/sqrt(var + eps)`
    /// in `Double`) and counts the batch; nothing under ``RunningStatistics/none``.
    @inlinable
    mutating func foldInstanceStatistics(_ cache: NormCache<Scalar>, shape: [Int],
                                         workspace: inout Workspace<Scalar>) {
        guard let update = runningStatistics.update(momentum: momentum, batchesTracked: batchesTracked)
        else { return }
        let channels = channelCount, samples = shape[0], spatial = shape.dropFirst().reduce(1, *) / channels
        let (epsilon, backend) = (Double(epsilon), backend)
        let varianceWeight = varianceEstimator == .unbiased
            ? update.take * Scalar(spatial) / Scalar(spatial - 1) : update.take
        var layout = ScratchLayout<Scalar>()
        let batchRegion = layout.region(2 * channels)
        workspace.withRegions(ones: 0, scratch: layout.count) { _, scratch in
            // The batch's mean and variance per channel.
            let batch = batchRegion.vectors(2, of: channels, in: scratch)
            cache.storedMean.withUnsafeBufferPointer { mean in
            cache.storedInverseStandardDeviation.withUnsafeBufferPointer { invstd in
                for c in 0..<channels {
                    var meanSum = 0.0, varianceSum = 0.0
                    for n in 0..<samples {
                        let r = Double(invstd[n * channels + c])
                        meanSum += Double(mean[n * channels + c])
                        varianceSum += 1 / (r * r) - epsilon
                    }
                    batch[0][c] = Scalar(meanSum / Double(samples))
                    batch[1][c] = Scalar(max(varianceSum / Double(samples), 0))
                }
            }}
            runningMean.withUnsafeMutableBufferPointer {
                BatchNormKernels.updateRunning($0.baseAddress!, momentum: update.keep, batch: batch[0],
                                               weight: update.take, count: channels, backend: backend)
            }
            runningVariance.withUnsafeMutableBufferPointer {
                BatchNormKernels.updateRunning($0.baseAddress!, momentum: update.keep, batch: batch[1],
                                               weight: varianceWeight, count: channels, backend: backend)
            }
        }
        batchesTracked += 1
    }

    /// The origin its forward passes record in a cache: `.instanceNorm(channelCount:)`.
    @inlinable
    public var cacheOrigin: CacheOrigin { .instanceNorm(channelCount: channelCount, layout: layout) }

    /// Normalizes each (sample, channel) slab, or in inference with running
    /// statistics each channel with them; the errors are ``GroupNorm``'s, and
    /// ``SpatialBatchNorm``'s for the running statistics. A throwing call
    /// changes no running statistic.
    ///
    /// Over borrowed memory; the `Tensor` and `Span` entry points and the value
    /// API call this. The cache copies the input; `cache` and `workspace` are
    /// sized on first use and reused afterwards.
    /// - Complexity: O(N·C·H·W).
    @inlinable
    public mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, residual: UnsafeBufferPointer<Scalar>?,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try validateParameters()
        guard runningStatistics.statisticsMode(mode) == .training else {
            // As SpatialBatchNorm's: a BLAS pass copies the input into the
            // cache as its normalize pass reads it, the naive one ahead.
            let copying = try cache.adopt(input, shape: shape, backend: backend)
            try Validation.buffer("output", output.count, expected: input.count)
            try Validation.residual(residual, count: input.count)
            try BatchStatistics.forward(
                exchange: LocalStatistics(),
                geometry: Self.frozenGeometry(layout: layout, channels: channelCount, shape: shape, count: input.count),
                mode: .inference, origin: cacheOrigin, gamma: gamma, beta: beta,
                runningMean: &runningMean, runningVariance: &runningVariance, epsilon: epsilon,
                update: nil, estimator: varianceEstimator, backend: backend,
                output: output, residual: residual?.baseAddress, activation: activation,
                cache: &cache, workspace: &workspace, source: copying ? input.baseAddress : nil)
            return
        }
        try GroupStatistics.forward(
            input, shape: shape, mode: .training, channels: channelCount, groups: channelCount, layout: layout,
            origin: cacheOrigin, affine: affine, gamma: gamma, beta: beta, epsilon: epsilon, backend: backend,
            output: output, residual: residual, activation: activation, cache: &cache,
            workspace: &workspace)
        if mode == .training { foldInstanceStatistics(cache, shape: shape, workspace: &workspace) }
    }

    /// Inference, keeping nothing: the forward's output bit for bit.
    /// `output` may be `input`'s memory.
    /// - Throws: as the forward pass.
    /// - Complexity: O(N·C·H·W); allocation-free once `workspace` is sized.
    @inlinable
    public func infer(
        _ input: UnsafeBufferPointer<Scalar>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try validateParameters()
        guard runningStatistics == .none else {
            let count = try Validation.inferBuffers(input, output, shape: shape)
            return try BatchStatistics.infer(
                input.baseAddress!, geometry: Self.frozenGeometry(layout: layout, channels: channelCount, shape: shape, count: count),
                gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
                epsilon: epsilon, backend: backend, output: output.baseAddress!,
                epilogue: Epilogue(residual: nil, activation: activation), workspace: &workspace)
        }
        try GroupStatistics.infer(
            input, shape: shape, channels: channelCount, groups: channelCount, layout: layout, affine: affine, gamma: gamma,
            beta: beta, epsilon: epsilon, backend: backend, activation: activation,
            output: output, workspace: &workspace)
    }

    /// The backward pass, ``GroupNorm``'s with one channel per group; after
    /// an inference forward with running statistics, ``SpatialBatchNorm``'s
    /// with them as constants (`dx = dy·gamma_c/sqrt(runningVariance_c + eps)`).
    ///
    /// Over borrowed memory; the `Tensor` and `Span` entry points and the value
    /// API call this.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)``,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``.
    /// - Complexity: O(N·C·H·W).
    @inlinable
    public func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, cache: Cache,
        inputGradient: UnsafeMutableBufferPointer<Scalar>,
        residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        let buffers = GradientBuffers(dy: outputGradient, dx: inputGradient, dgamma: gammaGradient,
                                      dbeta: betaGradient)
        guard cache.mode == .inference else {
            return try GroupStatistics.backward(
                buffers, residualGradient: residualGradient, cache: cache, channels: channelCount,
                groups: channelCount, layout: layout, origin: cacheOrigin, backend: backend, workspace: &workspace)
        }
        try cache.backwardThroughActivation(
            buffers, residualGradient: residualGradient, masksInside: layout == .nhwc, workspace: &workspace
        ) { buffers, mask, workspace throws(NormError) in
            try BatchStatistics.validateBackward(buffers, cache: cache, channels: channelCount,
                                                 origin: cacheOrigin)
            let g = try Self.frozenGeometry(layout: layout, channels: channelCount, shape: cache.input.shape,
                                            count: cache.input.count)
            _ = BatchStatistics.backward(buffers, mask: mask, cache: cache, geometry: g,
                                         backend: backend, form: .closedForm, exchange: LocalStatistics(),
                                         workspace: &workspace)
        }
    }
}
