/// ``SpatialBatchNorm`` over a batch of images split across processes: each
/// rank passes its own samples (NCHW or NHWC), and every rank normalizes each
/// channel with the statistics of the whole batch, as `SpatialBatchNorm` on
/// the ranks' samples concatenated in rank order would.
///
/// Everything else is ``SyncBatchNorm``'s: the ranks' moments (`N·H·W` values
/// per channel on each rank, which may be 0) merged in rank order, the batch's
/// count for `.unbiased` and for `dx`, the per-channel sums added in rank
/// order in backward, one all-gather per collective call, `gammaGradient` and
/// `betaGradient` this rank's share, inference local, and every rank throwing
/// when one refuses its call or the ranks are in different calls. With
/// ``SingleProcess`` the results are ``SpatialBatchNorm``'s, bit for bit.
///
/// ```swift
/// var sbn = try SyncSpatialBatchNorm<Float>(channelCount: 3, communicator: SingleProcess())
/// let images = try Tensor<Float>(randomNormal: [2, 3, 4, 5], seed: 1)
/// let (y, cache) = try sbn.forward(images, mode: .training)
/// ```
///
/// The options, parameters and running statistics are those of
/// ``spatialBatchNorm``, read and written through it.
@dynamicMemberLookup
public struct SyncSpatialBatchNorm<Scalar: BLASScalar>: ActivatedNormalizationLayer {
    /// The forward pass's saved input (this rank's samples), the batch's
    /// statistics and `gamma`.
    public typealias Cache = NormCache<Scalar>

    /// The layer's state: parameters, running statistics and options.
    public var spatialBatchNorm: SpatialBatchNorm<Scalar>
    /// The ranks that share each batch.
    public let communicator: any Communicator
    /// The training forwards this layer has completed: the next one sends
    /// this plus one with its status word, and its backward the same. A call
    /// that throws (on every rank alike) does not count.
    @usableFromInline var trainingCalls = 0

    /// Creates a synchronized spatial batch-norm layer with `gamma` ones,
    /// `beta` zeros and running statistics zeros; the options are
    /// ``SpatialBatchNorm``'s.
    /// - Throws: ``NormError/invalidFeatureCount(_:)``, ``NormError/invalidEpsilon(_:)``,
    ///   ``NormError/invalidMomentum(_:)``.
    public init(channelCount: Int, epsilon: Scalar = 1e-5, momentum: Scalar = 0.9,
                varianceEstimator: VarianceEstimator = .biased, layout: ChannelLayout = .nchw,
                runningStatistics: RunningStatistics = .exponential, affine: Affine = .scaleAndShift,
                communicator: any Communicator, backend: Backend = .blas) throws(NormError) {
        self.spatialBatchNorm = try SpatialBatchNorm(
            channelCount: channelCount, epsilon: epsilon, momentum: momentum,
            varianceEstimator: varianceEstimator, layout: layout,
            runningStatistics: runningStatistics, affine: affine, backend: backend)
        self.communicator = communicator
    }

    /// Synchronizes `spatialBatchNorm` (its parameters, running statistics
    /// and options) over `communicator`.
    public init(_ spatialBatchNorm: SpatialBatchNorm<Scalar>, communicator: any Communicator) {
        self.spatialBatchNorm = spatialBatchNorm
        self.communicator = communicator
    }

    /// ``spatialBatchNorm``'s properties: `runningMean`, `runningVariance`,
    /// `epsilon`, `momentum`, `varianceEstimator`, `layout`.
    public subscript<Value>(dynamicMember path: WritableKeyPath<SpatialBatchNorm<Scalar>, Value>) -> Value {
        get { spatialBatchNorm[keyPath: path] }
        set { spatialBatchNorm[keyPath: path] = newValue }
    }

    /// ``spatialBatchNorm``'s read-only properties (`channelCount`).
    public subscript<Value>(dynamicMember path: KeyPath<SpatialBatchNorm<Scalar>, Value>) -> Value {
        spatialBatchNorm[keyPath: path]
    }

    /// The scale, one per channel (``spatialBatchNorm``'s).
    public var gamma: [Scalar] {
        get { spatialBatchNorm.gamma }
        set { spatialBatchNorm.gamma = newValue }
    }

    /// The shift, one per channel (``spatialBatchNorm``'s).
    public var beta: [Scalar] {
        get { spatialBatchNorm.beta }
        set { spatialBatchNorm.beta = newValue }
    }

    /// Which of `gamma` and `beta` the layer has (``spatialBatchNorm``'s).
    public var affine: Affine { spatialBatchNorm.affine }

    /// The implementation used (``spatialBatchNorm``'s).
    public var backend: Backend {
        get { spatialBatchNorm.backend }
        set { spatialBatchNorm.backend = newValue }
    }

    /// Applied after the affine map (and a residual) in the output pass
    /// (``spatialBatchNorm``'s).
    public var activation: FusedActivation {
        get { spatialBatchNorm.activation }
        set { spatialBatchNorm.activation = newValue }
    }

    /// Inference with ``spatialBatchNorm``'s running statistics, keeping nothing and
    /// communicating nothing: `SpatialBatchNorm.infer(_:shape:into:workspace:)`.
    /// With `RunningStatistics.none` that is this rank's rows' own batch
    /// statistics, whereas `forward(mode: .inference)` exchanges the whole
    /// batch's, as a training forward does.
    /// - Throws: as that method.
    /// - Complexity: O(count of `input`), no collective.
    @inlinable
    public func infer(
        _ input: UnsafeBufferPointer<Scalar>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try spatialBatchNorm.infer(input, shape: shape, into: output, workspace: &workspace)
    }

    /// The origin its forward passes record in a cache:
    /// `.syncSpatialBatchNorm(channelCount:layout:)`.
    @inlinable
    public var cacheOrigin: CacheOrigin {
        .syncSpatialBatchNorm(channelCount: spatialBatchNorm.channelCount, layout: spatialBatchNorm.layout)
    }

    /// Normalizes this rank's images (`N` may be 0) in borrowed memory with
    /// the whole batch's per-channel statistics.
    ///
    /// - Throws: as `SpatialBatchNorm/forward(_:residual:shape:mode:into:cache:workspace:)`
    ///   (with `N >= 0` per rank, and the batch's `N·H·W` at least 2 in
    ///   training); ``NormError/rankFailed(rank:)``;
    ///   ``NormError/callMismatch(rank:expected:actual:)``; the communicator's
    ///   errors. A throwing call leaves the running statistics unchanged, on
    ///   every rank. Every rank's layer must have the same channel count (see
    ///   `SyncBatchNorm/forward(_:residual:shape:mode:into:cache:workspace:)`).
    /// - Complexity: O(N·C·H·W) here, plus one all-gather of `11 + 2·C`
    ///   scalars per rank in training: the status word and the moments.
    @inlinable
    public mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, residual: UnsafeBufferPointer<Scalar>?,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        let mode = spatialBatchNorm.runningStatistics.statisticsMode(mode)
        let c = spatialBatchNorm.channelCount
        let prepared: Result<ChannelGeometry, NormError>
        do throws(NormError) {
            try spatialBatchNorm.validateParameters()
            try cache.adopt(input, shape: shape)
            try Validation.buffer("output", output.count, expected: input.count)
            try Validation.residual(residual, count: input.count)
            prepared = .success(try spatialBatchNorm.geometry(cache.input, minimumBatch: 0))
        } catch {
            prepared = .failure(error)
        }
        try RankStatistics.forward(
            communicator: communicator, prepared: prepared, channels: c, mode: mode,
            number: trainingCalls + 1,
            origin: cacheOrigin, gamma: spatialBatchNorm.gamma, beta: spatialBatchNorm.beta,
            runningMean: &spatialBatchNorm.runningMean,
            runningVariance: &spatialBatchNorm.runningVariance,
            epsilon: spatialBatchNorm.epsilon, update: spatialBatchNorm.runningUpdate,
            estimator: spatialBatchNorm.varianceEstimator, backend: spatialBatchNorm.backend,
            output: output, residual: residual?.baseAddress, activation: spatialBatchNorm.activation,
            cache: &cache, workspace: &workspace)
        // Every rank's call succeeded or every rank's threw: the counts stay in step.
        if mode == .training { trainingCalls += 1 }
        if spatialBatchNorm.runningStatistics.counts(mode) { spatialBatchNorm.batchesTracked += 1 }
    }

    /// The closed-form backward of this rank's images: per-channel sums
    /// added over the ranks for `dx`, which uses the batch's count;
    /// `gammaGradient` and `betaGradient` receive this rank's share.
    /// - Throws: as ``SpatialBatchNorm/backward(_:cache:inputGradient:gammaGradient:betaGradient:workspace:)``;
    ///   ``NormError/rankFailed(rank:)``; the communicator's errors.
    /// - Complexity: O(N·C·H·W) here, plus one all-gather of `11 + 2·C`
    ///   scalars per rank after a training forward: the status word and the
    ///   sums, added in rank order.
    @inlinable
    public func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, cache: Cache,
        inputGradient: UnsafeMutableBufferPointer<Scalar>,
        residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        let c = spatialBatchNorm.channelCount
        let buffers = GradientBuffers(dy: outputGradient, dx: inputGradient, dgamma: gammaGradient,
                                      dbeta: betaGradient)
        let checked: Result<ChannelGeometry, NormError>
        do throws(NormError) {
            try BatchStatistics.validateBackward(buffers, cache: cache, channels: c, origin: cacheOrigin)
            checked = .success(try spatialBatchNorm.geometry(cache.input, minimumBatch: 0))
        } catch {
            checked = .failure(error)
        }
        let number = RankStatistics.number(of: cache, origin: cacheOrigin, last: trainingCalls)
        try RankStatistics.backward(communicator: communicator, checked: checked, channels: c, number: number,
                                    origin: cacheOrigin, buffers,
                                    residualGradient: residualGradient, cache: cache,
                                    backend: spatialBatchNorm.backend, workspace: &workspace)
    }

    /// Tells the other ranks (in a training forward) that this rank's call
    /// was refused, and returns `error`.
    /// - Complexity: one all-gather of the call's message per rank in training, else O(1).
    @inlinable
    public func refusingForward(_ error: NormError, mode: Mode) -> NormError {
        guard spatialBatchNorm.runningStatistics.statisticsMode(mode) == .training else { return error }
        return RankStatistics.refusing(error, communicator: communicator,
                                       channels: spatialBatchNorm.channelCount, of: Scalar.self,
                                       collective: .forward, number: trainingCalls + 1)
    }

    /// Tells the other ranks (unless `cache` is from an inference forward of
    /// this layer) that this rank's backward was refused, and returns `error`.
    /// - Complexity: one all-gather of the call's message per rank, or O(1).
    @inlinable
    public func refusingBackward(_ error: NormError, cache: Cache) -> NormError {
        RankStatistics.refusing(error, communicator: communicator,
                                channels: spatialBatchNorm.channelCount, of: Scalar.self,
                                collective: cache.origin == cacheOrigin && cache.mode == .inference ? nil : .backward,
                                number: RankStatistics.number(of: cache, origin: cacheOrigin, last: trainingCalls))
    }
}
