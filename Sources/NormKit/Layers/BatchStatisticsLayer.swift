/// A layer whose statistics are per channel over the whole batch, the layer
/// that ``Synchronized`` runs across processes: ``BatchNorm`` (its features
/// are the channels) and ``SpatialBatchNorm``.
///
/// Its requirements are the layer's options and state and where an input
/// puts each channel's values; the passes, `Float`/`Double` and 16-bit, with
/// a residual and a ReLU, are this protocol's extension, written once for
/// both layers, over the `BatchStatistics` driver. The BLAS backend reads `x`
/// once for the statistics (blocks in L2, `gemv` per block, Chan merges) and
/// once for the normalize pass.
public protocol BatchStatisticsLayer<Scalar>: ActivatedNormalizationLayer where Cache == NormCache<Scalar> {
    /// The number of statistics: ``BatchNorm``'s features, ``SpatialBatchNorm``'s channels.
    var channelCount: Int { get }
    /// The running mean, one per channel.
    var runningMean: [Scalar] { get set }
    /// The running variance, one per channel.
    var runningVariance: [Scalar] { get set }
    /// Added to the variance before the square root.
    var epsilon: Scalar { get }
    /// The weight of the old running value.
    var momentum: Scalar { get }
    /// What the running variance is fed.
    var varianceEstimator: VarianceEstimator { get }
    /// How the running statistics are kept.
    var runningStatistics: RunningStatistics { get }
    /// The training batches counted so far.
    var batchesTracked: Int { get set }
    /// The origin the caches of this layer's ``Synchronized`` form record:
    /// `.syncBatchNorm(featureCount:)`, `.syncSpatialBatchNorm(channelCount:layout:)`.
    var synchronizedOrigin: CacheOrigin { get }
    /// Where an input of `shape` with at least `minimumBatch` samples (1 for
    /// the layer's own passes, 0 for a rank's shard under ``Synchronized``)
    /// puts the values of each channel: `outer` runs of ``channelCount``
    /// channels, each channel `inner` contiguous values (`(N, 1)` for an
    /// `(N, D)` batch, `(N, H·W)` in NCHW, `(N·H·W, 1)` in NHWC).
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for a shape the
    ///   layer does not take or fewer samples, ``NormError/negativeDimension(shape:)``,
    ///   ``NormError/shapeOverflow(shape:)``, ``NormError/sizeTooLarge(_:)``.
    /// - Complexity: O(rank of `shape`).
    func channelGeometry(shape: [Int], minimumBatch: Int) throws(NormError) -> (outer: Int, inner: Int)
}

extension BatchStatisticsLayer {
    /// This training batch's running update (`nil` for ``RunningStatistics/none``).
    @inlinable
    var runningUpdate: RunningUpdate<Scalar>? {
        runningStatistics.update(momentum: momentum, batchesTracked: batchesTracked)
    }

    /// Re-validates the public `var`s that `forward` depends on.
    @inlinable
    func validateParameters() throws(NormError) {
        try Validation.batchParameters(
            count: channelCount, affine: affine, gamma: gamma, beta: beta, runningMean: runningMean,
            runningVariance: runningVariance, epsilon: epsilon, momentum: momentum,
            batchesTracked: batchesTracked)
    }

    /// ``channelGeometry(shape:minimumBatch:)`` as the kernels' geometry.
    @inlinable
    func geometry(_ shape: [Int], minimumBatch: Int = 1) throws(NormError) -> ChannelGeometry {
        let (outer, inner) = try channelGeometry(shape: shape, minimumBatch: minimumBatch)
        return ChannelGeometry(outer: outer, channels: channelCount, inner: inner)
    }

    /// Moves the running statistics out of the layer for a forward pass,
    /// which updates them in place (a protocol's two properties are not known
    /// to be disjoint, so the pass cannot take both as `inout`); moving keeps
    /// each array's one reference, so nothing is copied.
    /// ``restoreRunningStatistics(_:_:)`` puts them back.
    @inlinable
    mutating func takeRunningStatistics() -> (mean: [Scalar], variance: [Scalar]) {
        var mean: [Scalar] = [], variance: [Scalar] = []
        swap(&mean, &runningMean)
        swap(&variance, &runningVariance)
        return (mean, variance)
    }

    /// Puts back what ``takeRunningStatistics()`` moved out.
    @inlinable
    mutating func restoreRunningStatistics(_ mean: inout [Scalar], _ variance: inout [Scalar]) {
        swap(&mean, &runningMean)
        swap(&variance, &runningVariance)
    }

    /// A rank's shard's geometry, for the 16-bit drivers' closures (`count`,
    /// the product of `shape`, is the caller's to check).
    @inlinable
    func shard(_ shape: [Int], _ count: Int) throws(NormError) -> ChannelGeometry {
        try geometry(shape, minimumBatch: 0)
    }
}


// MARK: The passes

extension BatchStatisticsLayer {
    /// Normalizes a batch in borrowed memory per channel; see the layer's
    /// documentation for the formulas. The `Tensor` and `Span` entry points and
    /// the value API (from ``BufferedNormalizationLayer``) call this.
    ///
    /// The cache copies the input; `cache` and `workspace` are sized on first
    /// use and reused afterwards (then the call allocates nothing); after a
    /// throw they hold unspecified values. With a `residual` (ResNet's block
    /// end) the output is `act(gamma·xhat + beta + residual)`, in the same pass.
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for a shape the
    ///   layer does not take; ``NormError/insufficientValues(valuesPerStatistic:)``
    ///   for fewer than 2 values per channel in training;
    ///   ``NormError/nonFiniteStatistics(index:)`` naming the channel;
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``; the
    ///   hyperparameter errors. A throwing call leaves the running statistics
    ///   unchanged.
    /// - Complexity: O(count of `input`).
    @inlinable
    public mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, residual: UnsafeBufferPointer<Scalar>?,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        let mode = runningStatistics.statisticsMode(mode)
        try validateParameters()
        // A BLAS pass copies the input into the cache as it first reads it,
        // unit by unit (the blocks its kernel reads anyway): training's
        // moments, inference's normalize pass. The naive backend copies
        // ahead of the pass.
        let copying = try cache.adopt(input, shape: shape, backend: backend)
        try Validation.buffer("output", output.count, expected: input.count)
        try Validation.residual(residual, count: input.count)
        let g = try geometry(cache.input.shape)
        if mode == .training { try Validation.valuesPerStatistic(g.valuesPerStatistic) }
        var (mean, variance) = takeRunningStatistics()
        defer { restoreRunningStatistics(&mean, &variance) }
        try BatchStatistics.forward(
            exchange: LocalStatistics(), geometry: g, mode: mode, origin: cacheOrigin, gamma: gamma,
            beta: beta, runningMean: &mean, runningVariance: &variance, epsilon: epsilon,
            update: runningUpdate, estimator: varianceEstimator, backend: backend, output: output,
            residual: residual?.baseAddress, activation: activation, cache: &cache,
            workspace: &workspace, source: copying ? input.baseAddress : nil)
        if runningStatistics.counts(mode) { batchesTracked += 1 }
    }

    /// Inference with the running statistics, keeping nothing:
    /// `y = act(gamma·(x - runningMean)/sqrt(runningVariance + epsilon) + beta)`,
    /// the same bits as `forward(mode: .inference)`'s output. `output` may be
    /// `input`'s memory. With ``RunningStatistics/none`` it is the forward
    /// pass with the batch's statistics, and allocates that pass's cache.
    /// - Throws: as the forward pass, except the training checks.
    /// - Complexity: O(count of `input`); allocation-free once `workspace` is sized.
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
        _ = try Validation.inferBuffers(input, output, shape: shape)
        try BatchStatistics.infer(
            input.baseAddress!, geometry: geometry(shape), gamma: gamma, beta: beta,
            runningMean: runningMean, runningVariance: runningVariance, epsilon: epsilon,
            backend: backend, output: output.baseAddress!,
            epilogue: Epilogue(residual: nil, activation: activation), workspace: &workspace)
    }

    /// The closed-form backward (cs231n's `batchnorm_backward_alt`, per
    /// channel) over borrowed memory: `dbeta = Σ dy`, `dgamma = Σ dy·xhat`
    /// over the channel's `m` values, `dx = gamma·invstd/m · (m·dy - dbeta - xhat·dgamma)`;
    /// after an inference forward the statistics are constants and
    /// `dx = gamma·invstd·dy`. The per-channel sums are `gemv(Trans, ·, 1)`
    /// over blocks of rows, or `gemv(NoTrans, ·, 1_HW)` per sample (NCHW).
    /// After a forward with a ReLU, `dy` is first masked by the output's
    /// sign; `residualGradient` (when given) receives that gradient, the
    /// residual's.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer, size or layout, or from a forward pass that
    ///   threw; ``NormError/bufferCountMismatch(name:expected:actual:)``.
    /// - Complexity: O(count of the cached input).
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

    /// Both backward forms over borrowed buffers (through the ReLU's mask
    /// first, after a ReLU forward: inside the closed form's passes over rows
    /// of channels), validated here.
    @inlinable
    func backward(
        _ buffers: GradientBuffers<Scalar>, residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        cache: Cache, form: BackwardForm, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        let rowsOfChannels = (try? geometry(cache.input.shape))?.inner == 1
        try cache.backwardThroughActivation(
            buffers, residualGradient: residualGradient,
            masksInside: form == .closedForm && rowsOfChannels, workspace: &workspace
        ) { buffers, mask, workspace throws(NormError) in
            try BatchStatistics.validateBackward(buffers, cache: cache, channels: channelCount,
                                                 origin: cacheOrigin)
            _ = BatchStatistics.backward(
                buffers, mask: mask, cache: cache, geometry: try geometry(cache.input.shape),
                backend: backend, form: form, exchange: LocalStatistics(), workspace: &workspace)
        }
    }
}

// MARK: 16-bit storage

extension BatchStatisticsLayer where Scalar == Float {
    /// Normalizes a batch stored in 16 bits (`Float16` or ``BFloat16``) per
    /// channel, into `output` of the same type:
    /// `y = act((x - mean_c) · gamma_c / sqrt(var_c + epsilon) + beta_c)`,
    /// computed in `Float` from the widened input and rounded once to
    /// `Storage` (nearest even). In training the batch statistics are `Float`
    /// sums (`sgemv`) over blocks that a C pass widens into `Float` scratch
    /// (blocks of rows; per sample and block of channels for NCHW), and the
    /// running statistics are updated in `Float`; in inference the running
    /// statistics are used.
    ///
    /// A `Float16` output beyond ±65504 rounds to ±infinity (IEEE 754). The
    /// cache keeps the input at 2 bytes an element; a ReLU forward's mask as
    /// in `Float`. With a `residual`, `y = act(norm(x) + residual)`, rounded
    /// once (``ReducedPrecisionActivatedLayer``).
    /// - Throws: as the `Float` entry point, and
    ///   ``NormError/unsupportedParameter(name:expected:)`` for a storage
    ///   type other than `Float16` and ``BFloat16``. A throwing call leaves
    ///   the running statistics unchanged.
    /// - Complexity: O(count of `input`).
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, residual: UnsafeBufferPointer<Storage>?,
        shape: [Int], mode: Mode,
        into output: UnsafeMutableBufferPointer<Storage>,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let mode = runningStatistics.statisticsMode(mode)
        try validateParameters()
        var (mean, variance) = takeRunningStatistics()
        defer { restoreRunningStatistics(&mean, &variance) }
        try BatchStatistics.forward(
            input, shape: shape,
            geometry: { shape, _ throws(NormError) in try geometry(shape) },
            mode: mode, origin: cacheOrigin, gamma: gamma, beta: beta,
            runningMean: &mean, runningVariance: &variance, epsilon: epsilon,
            update: runningUpdate, estimator: varianceEstimator, backend: backend,
            activation: activation, output: output, residual: residual, cache: &cache,
            workspace: &workspace)
        if runningStatistics.counts(mode) { batchesTracked += 1 }
    }

    /// The 16-bit inference with the running statistics, keeping nothing: the
    /// 16-bit `forward(mode: .inference)`'s output bit for bit. `output` may
    /// be `input`'s memory. With ``RunningStatistics/none``: the forward pass
    /// with the batch's statistics, allocating that pass's cache.
    /// - Throws: as the 16-bit forward, except the training checks.
    /// - Complexity: O(count of `input`); allocation-free once `workspace` is sized.
    @inlinable
    public func infer<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Storage>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        if runningStatistics == .none {
            var layer = self, cache = NormCache<Float>()
            return try layer.forward(input, residual: nil, shape: shape, mode: .training, into: output,
                                     cache: &cache, workspace: &workspace)
        }
        try validateParameters()
        try BatchStatistics.infer(
            input, shape: shape,
            geometry: { shape, _ throws(NormError) in try geometry(shape) },
            gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
            epsilon: epsilon, backend: backend, activation: activation, output: output,
            workspace: &workspace)
    }

    /// The closed-form backward of a 16-bit forward: the `Float` sums
    /// `dbeta = Σ dy`, `dgamma = Σ dy·xhat` (`sgemv` over blocks of
    /// `outputGradient` and the cached input widened into `Float`), and
    /// `dx = gamma·invstd/m · (m·dy - dbeta - xhat·dgamma)` rounded once to
    /// `Storage`; `dx = gamma·invstd·dy` after an inference forward.
    /// `residualGradient`, when given, receives `dy` through the ReLU's mask.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer or filled at another precision,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient: UnsafeMutableBufferPointer<Storage>,
        residualGradient: UnsafeMutableBufferPointer<Storage>?,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try BatchStatistics.backward(
            outputGradient, cache: cache, inputGradient: inputGradient,
            gammaGradient: gammaGradient, betaGradient: betaGradient,
            residualGradient: residualGradient, channels: channelCount, origin: cacheOrigin,
            geometry: { shape, _ throws(NormError) in try geometry(shape) },
            backend: backend, workspace: &workspace)
    }
}

extension BatchNorm: ReducedPrecisionLayer, ReducedPrecisionActivatedLayer where Scalar == Float {}
extension SpatialBatchNorm: ReducedPrecisionLayer, ReducedPrecisionActivatedLayer where Scalar == Float {}
