/// A ``BatchStatisticsLayer`` over a batch split across processes
/// (data-parallel training): each rank passes its own shard, and every rank
/// normalizes with the statistics of the whole batch, as the layer on the
/// ranks' shards concatenated in rank order would
/// (<doc:Architecture>, "Across processes"). ``SyncBatchNorm`` and
/// ``SyncSpatialBatchNorm`` are its two forms.
///
/// Training forward: each rank's ``Moments`` (its count may differ from the
/// others' and may be 0) are all-gathered and merged with Chan's formula in
/// rank order, so every rank holds bit-identical batch statistics and running
/// statistics; `.unbiased` uses the batch's count. Backward all-gathers the
/// per-channel sums `Σ dy` and `Σ dy·(x - mean)` and adds them in rank order
/// (the same bits on every rank), and `dx` uses the batch's count;
/// `gammaGradient` and `betaGradient` are this rank's share (their sum over
/// the ranks is the batch's gradient), for the trainer to all-reduce with the
/// other parameters' gradients. Inference uses the running statistics and is
/// each rank's alone: no collective, so ranks may run different numbers of
/// inference batches.
///
/// Every training forward and every backward after one is a collective: all
/// ranks call it, in the same order, and it makes one all-gather, whose
/// message carries a status word with the sums. A call whose input one rank
/// refuses makes every rank throw (that rank its own error, the others
/// ``NormError/rankFailed(rank:)``), so no rank waits for another; no rank's
/// state changes. The status word also names the call (forward or backward)
/// and its number (the layer's count of training forwards; a backward sends
/// its forward's): ranks in different calls (a rank that skipped a backward
/// pairs its next forward with the others' backward; a rank may backpropagate
/// another step's cache) all throw
/// ``NormError/callMismatch(rank:expected:actual:)`` instead of pairing
/// silently. A rank that never calls at all leaves the others waiting, unless
/// the communicator has a deadline (`MPICommunicator.deadline`). With
/// ``SingleProcess`` the results are the layer's, bit for bit.
///
/// The options, parameters and running statistics are those of ``layer``,
/// read and written through it (`bn.runningMean`, `bn.momentum`, ...); save
/// it, or use it alone for inference on one process.
@dynamicMemberLookup
public struct Synchronized<Layer: BatchStatisticsLayer>: ActivatedNormalizationLayer {
    /// The layer's scalar type.
    public typealias Scalar = Layer.Scalar
    /// The forward pass's saved input (this rank's shard), the batch's
    /// statistics and `gamma`.
    public typealias Cache = NormCache<Scalar>

    /// The layer's state: parameters, running statistics and options.
    public var layer: Layer
    /// The ranks that share each batch.
    public let communicator: any Communicator
    /// The training forwards this layer has completed: the next one sends
    /// this plus one with its status word, and its backward the same. A call
    /// that throws (on every rank alike) does not count.
    @usableFromInline var trainingCalls = 0

    /// Synchronizes `layer` (its parameters, running statistics and options)
    /// over `communicator`.
    public init(_ layer: Layer, communicator: any Communicator) {
        self.layer = layer
        self.communicator = communicator
    }

    /// ``layer``'s properties: `runningMean`, `runningVariance`, `epsilon`,
    /// `momentum`, `varianceEstimator`, ...
    public subscript<Value>(dynamicMember path: WritableKeyPath<Layer, Value>) -> Value {
        get { layer[keyPath: path] }
        set { layer[keyPath: path] = newValue }
    }

    /// ``layer``'s read-only properties (`featureCount`, `channelCount`).
    public subscript<Value>(dynamicMember path: KeyPath<Layer, Value>) -> Value {
        layer[keyPath: path]
    }

    /// The scale, one per channel (``layer``'s).
    public var gamma: [Scalar] {
        get { layer.gamma }
        set { layer.gamma = newValue }
    }

    /// The shift, one per channel (``layer``'s).
    public var beta: [Scalar] {
        get { layer.beta }
        set { layer.beta = newValue }
    }

    /// Which of `gamma` and `beta` the layer has (``layer``'s).
    public var affine: Affine { layer.affine }

    /// The implementation used (``layer``'s).
    public var backend: Backend {
        get { layer.backend }
        set { layer.backend = newValue }
    }

    /// Applied after the affine map (and a residual) in the output pass (``layer``'s).
    public var activation: FusedActivation {
        get { layer.activation }
        set { layer.activation = newValue }
    }

    /// The origin its forward passes record in a cache: ``layer``'s
    /// `synchronizedOrigin`.
    @inlinable
    public var cacheOrigin: CacheOrigin { layer.synchronizedOrigin }

    /// Inference with ``layer``'s running statistics, keeping nothing and
    /// communicating nothing: the layer's `infer(_:shape:into:workspace:)`.
    /// With `RunningStatistics.none` that is this rank's shard's own batch
    /// statistics, whereas `forward(mode: .inference)` exchanges the whole
    /// batch's, as a training forward does.
    /// - Throws: as that method.
    /// - Complexity: O(count of `input`), no collective.
    @inlinable
    public func infer(
        _ input: UnsafeBufferPointer<Scalar>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try layer.infer(input, shape: shape, into: output, workspace: &workspace)
    }

    /// Normalizes this rank's shard (`N` may be 0) in borrowed memory with the
    /// whole batch's statistics; see the type's documentation.
    ///
    /// - Throws: as the layer's `forward(_:residual:shape:mode:into:cache:workspace:)`
    ///   (with `N >= 0` per rank, and the batch's values per channel at least
    ///   2 in training); ``NormError/rankFailed(rank:)`` when another rank
    ///   refused its call; ``NormError/callMismatch(rank:expected:actual:)``
    ///   when another rank is in another call; the communicator's errors. A
    ///   throwing call leaves the running statistics unchanged, on every rank.
    ///   Every rank's layer must have the same channel count: the message's
    ///   size depends on it, and with `MPICommunicator` a rank with another
    ///   count makes the all-gather a size mismatch, which Open MPI's default
    ///   error handler turns into the end of the job (`MPI_ERR_TRUNCATE`), not
    ///   a wait; a rank that received the shorter message may first throw
    ///   ``NormError/parameterCountMismatch(name:expected:actual:)``.
    /// - Complexity: O(count of `input`) here, plus one all-gather of
    ///   `11 + 2·C` scalars per rank in training: the status word and the moments.
    @inlinable
    public mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, residual: UnsafeBufferPointer<Scalar>?,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        let prepared: Result<ChannelGeometry, NormError>
        // As the layer's own: a BLAS pass copies the input into the cache as
        // it first reads it, the naive one ahead.
        var copying = false
        do throws(NormError) {
            try layer.validateParameters()
            copying = try cache.adopt(input, shape: shape, backend: layer.backend)
            try Validation.buffer("output", output.count, expected: input.count)
            try Validation.residual(residual, count: input.count)
            prepared = .success(try layer.shard(cache.input.shape, cache.input.count))
        } catch {
            prepared = .failure(error)
        }
        try forward(prepared, mode: mode, output: output, residual: residual?.baseAddress,
                    cache: &cache, workspace: &workspace, source: copying ? input.baseAddress : nil)
    }

    /// The synchronized forward of a `prepared` shard (its geometry, or the
    /// error its validation threw), in `Scalar` (`output`, `residual`) or 16
    /// bits (`reduced`); counts the call and the batch when it succeeds.
    /// `source`: the caller's input, copied into the cache by the pass that
    /// first reads it.
    @inlinable
    mutating func forward(
        _ prepared: Result<ChannelGeometry, NormError>, mode: Mode,
        output: UnsafeMutableBufferPointer<Scalar>, residual: UnsafePointer<Scalar>?,
        cache: inout Cache, workspace: inout Workspace<Scalar>, reduced: ReducedStreams? = nil,
        source: UnsafePointer<Scalar>? = nil
    ) throws(NormError) {
        let mode = layer.runningStatistics.statisticsMode(mode)
        // The running statistics leave the layer for the pass (a protocol's
        // two properties are not known to be disjoint); moving them keeps
        // each array's one reference, so nothing is copied.
        var runningMean: [Scalar] = [], runningVariance: [Scalar] = []
        swap(&runningMean, &layer.runningMean)
        swap(&runningVariance, &layer.runningVariance)
        defer {
            swap(&runningMean, &layer.runningMean)
            swap(&runningVariance, &layer.runningVariance)
        }
        try RankStatistics.forward(
            communicator: communicator, prepared: prepared, channels: layer.channelCount, mode: mode,
            number: trainingCalls + 1, origin: cacheOrigin, gamma: layer.gamma, beta: layer.beta,
            runningMean: &runningMean, runningVariance: &runningVariance,
            epsilon: layer.epsilon, update: layer.runningUpdate, estimator: layer.varianceEstimator,
            backend: layer.backend, output: output, residual: residual, activation: layer.activation,
            cache: &cache, workspace: &workspace, reduced: reduced, source: source)
        // Every rank's call succeeded or every rank's threw: the counts stay in step.
        if mode == .training { trainingCalls += 1 }
        if layer.runningStatistics.counts(mode) { layer.batchesTracked += 1 }
    }

    /// The closed-form backward of this rank's shard: per-channel sums added
    /// over the ranks for `dx`, which uses the batch's count; `gammaGradient`
    /// and `betaGradient` receive this rank's share.
    /// - Throws: as the layer's
    ///   `backward(_:cache:inputGradient:residualGradient:gammaGradient:betaGradient:workspace:)`;
    ///   ``NormError/rankFailed(rank:)``; the communicator's errors.
    /// - Complexity: O(count of the cached input) here, plus one all-gather
    ///   of `11 + 2·C` scalars per rank after a training forward: the status
    ///   word and the sums, added in rank order.
    @inlinable
    public func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, cache: Cache,
        inputGradient: UnsafeMutableBufferPointer<Scalar>,
        residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        let c = layer.channelCount
        let buffers = GradientBuffers(dy: outputGradient, dx: inputGradient, dgamma: gammaGradient,
                                      dbeta: betaGradient)
        let checked: Result<ChannelGeometry, NormError>
        do throws(NormError) {
            try BatchStatistics.validateBackward(buffers, cache: cache, channels: c, origin: cacheOrigin)
            checked = .success(try layer.shard(cache.input.shape, cache.input.count))
        } catch {
            checked = .failure(error)
        }
        try RankStatistics.backward(communicator: communicator, checked: checked, channels: c,
                                    number: backwardNumber(cache), origin: cacheOrigin, buffers,
                                    residualGradient: residualGradient, cache: cache,
                                    backend: layer.backend, workspace: &workspace)
    }

    /// The number a backward of `cache` sends: its forward's.
    @inlinable
    func backwardNumber(_ cache: Cache) -> Int {
        RankStatistics.number(of: cache, origin: cacheOrigin, last: trainingCalls)
    }

    /// Tells the other ranks (in a training forward) that this rank's call
    /// was refused, and returns `error`.
    /// - Complexity: one all-gather of the call's message per rank in training, else O(1).
    @inlinable
    public func refusingForward(_ error: NormError, mode: Mode) -> NormError {
        guard layer.runningStatistics.statisticsMode(mode) == .training else { return error }
        return RankStatistics.refusing(error, communicator: communicator, channels: layer.channelCount,
                                       of: Scalar.self, collective: .forward, number: trainingCalls + 1)
    }

    /// Tells the other ranks (unless `cache` is from an inference forward of
    /// this layer) that this rank's backward was refused, and returns `error`.
    /// - Complexity: one all-gather of the call's message per rank, or O(1).
    @inlinable
    public func refusingBackward(_ error: NormError, cache: Cache) -> NormError {
        RankStatistics.refusing(error, communicator: communicator, channels: layer.channelCount,
                                of: Scalar.self,
                                collective: cache.origin == cacheOrigin && cache.mode == .inference
                                    ? nil : .backward,
                                number: backwardNumber(cache))
    }
}

/// ``BatchNorm`` over a batch of `(N, D)` rows split across processes: each
/// rank passes its own rows, and every rank normalizes with the statistics of
/// the whole batch (``Synchronized``).
///
/// ```swift
/// var bn = try SyncBatchNorm<Double>(featureCount: 4, communicator: SingleProcess())
/// let x = try Tensor<Double>(randomNormal: [6, 4], seed: 1)
/// let (y, cache) = try bn.forward(x, mode: .training)
/// let grads = try bn.backward(y, cache: cache)
/// ```
public typealias SyncBatchNorm<Scalar: BLASScalar> = Synchronized<BatchNorm<Scalar>>

/// ``SpatialBatchNorm`` over a batch of images split across processes: each
/// rank passes its own samples (NCHW or NHWC), and every rank normalizes each
/// channel with the statistics of the whole batch (``Synchronized``; `N·H·W`
/// values per channel on each rank, which may be 0).
///
/// ```swift
/// var sbn = try SyncSpatialBatchNorm<Float>(channelCount: 3, communicator: SingleProcess())
/// let images = try Tensor<Float>(randomNormal: [2, 3, 4, 5], seed: 1)
/// let (y, cache) = try sbn.forward(images, mode: .training)
/// ```
public typealias SyncSpatialBatchNorm<Scalar: BLASScalar> = Synchronized<SpatialBatchNorm<Scalar>>

extension Synchronized {
    /// Creates a ``SyncBatchNorm`` layer with `gamma` ones, `beta` zeros and
    /// running statistics zeros; the options are ``BatchNorm``'s.
    /// - Throws: ``NormError/invalidFeatureCount(_:)``, ``NormError/invalidEpsilon(_:)``,
    ///   ``NormError/invalidMomentum(_:)``.
    public init<S>(featureCount: Int, epsilon: S = 1e-5, momentum: S = 0.9,
                   varianceEstimator: VarianceEstimator = .biased,
                   runningStatistics: RunningStatistics = .exponential, affine: Affine = .scaleAndShift,
                   communicator: any Communicator, backend: Backend = .blas) throws(NormError)
    where Layer == BatchNorm<S> {
        self.init(try BatchNorm(featureCount: featureCount, epsilon: epsilon, momentum: momentum,
                                varianceEstimator: varianceEstimator, runningStatistics: runningStatistics,
                                affine: affine, backend: backend),
                  communicator: communicator)
    }

    /// Creates a ``SyncSpatialBatchNorm`` layer with `gamma` ones, `beta`
    /// zeros and running statistics zeros; the options are ``SpatialBatchNorm``'s.
    /// - Throws: ``NormError/invalidFeatureCount(_:)``, ``NormError/invalidEpsilon(_:)``,
    ///   ``NormError/invalidMomentum(_:)``.
    public init<S>(channelCount: Int, epsilon: S = 1e-5, momentum: S = 0.9,
                   varianceEstimator: VarianceEstimator = .biased, layout: ChannelLayout = .nchw,
                   runningStatistics: RunningStatistics = .exponential, affine: Affine = .scaleAndShift,
                   communicator: any Communicator, backend: Backend = .blas) throws(NormError)
    where Layer == SpatialBatchNorm<S> {
        self.init(try SpatialBatchNorm(channelCount: channelCount, epsilon: epsilon, momentum: momentum,
                                       varianceEstimator: varianceEstimator, layout: layout,
                                       runningStatistics: runningStatistics, affine: affine,
                                       backend: backend),
                  communicator: communicator)
    }
}

extension Synchronized where Layer: BatchNormFamily {
    /// ``layer``, by its name in ``SyncBatchNorm``.
    public var batchNorm: Layer {
        get { layer }
        set { layer = newValue }
    }
}

extension Synchronized where Layer: SpatialBatchNormFamily {
    /// ``layer``, by its name in ``SyncSpatialBatchNorm``.
    public var spatialBatchNorm: Layer {
        get { layer }
        set { layer = newValue }
    }
}

/// ``BatchNorm``: what gives ``SyncBatchNorm`` its `batchNorm` property.
public protocol BatchNormFamily: BatchStatisticsLayer {}
/// ``SpatialBatchNorm``: what gives ``SyncSpatialBatchNorm`` its
/// `spatialBatchNorm` property.
public protocol SpatialBatchNormFamily: BatchStatisticsLayer {}

extension BatchNorm: BatchNormFamily {}
extension SpatialBatchNorm: SpatialBatchNormFamily {}

extension Synchronized: ReducedPrecisionLayer, ReducedPrecisionActivatedLayer
where Layer: ReducedPrecisionActivatedLayer {
    /// Normalizes this rank's shard stored in 16 bits (`N` may be 0) with the
    /// whole batch's `Float` statistics, into `output` of the same type: the
    /// layer's 16-bit forward, with the moments exchanged as in `Float` (the
    /// message is `Float`, so ranks may even store their shards at different
    /// precisions). With a `residual`, `y = act(norm(x) + residual)`, rounded
    /// once (``ReducedPrecisionActivatedLayer``).
    /// - Throws: as the `Float` entry point, and
    ///   ``NormError/unsupportedParameter(name:expected:)`` for a storage
    ///   type other than `Float16` and ``BFloat16``. Every rank throws when
    ///   one does; the running statistics stay unchanged.
    /// - Complexity: O(count of `input`) here, plus one all-gather of
    ///   `11 + 2·C` scalars per rank in training.
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, residual: UnsafeBufferPointer<Storage>?,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Storage>,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let prepared: Result<ChannelGeometry, NormError>
        do throws(NormError) {
            try layer.validateParameters()
            try Validation.residual(residual, count: input.count)
            prepared = .success(try BatchStatistics.prepareReduced(
                input, shape: shape,
                geometry: { shape, count throws(NormError) in try layer.shard(shape, count) },
                output: output, cache: &cache))
        } catch {
            prepared = .failure(error)
        }
        try forward(prepared, mode: mode, output: UnsafeMutableBufferPointer(start: nil, count: 0),
                    residual: nil, cache: &cache, workspace: &workspace,
                    reduced: ReducedStreams(input, output, residual: residual))
    }

    /// ``layer``'s 16-bit inference, keeping nothing and communicating nothing.
    /// - Throws: as that method.
    /// - Complexity: O(count of `input`), no collective.
    @inlinable
    public func infer<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Storage>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try layer.infer(input, shape: shape, into: output, workspace: &workspace)
    }

    /// The closed-form backward of this rank's 16-bit shard: the `Float` sums
    /// added over the ranks (one all-gather, as in `Float`), `dx` rounded
    /// once to `Storage`; `gammaGradient` and `betaGradient` this rank's share;
    /// `residualGradient`, when given, `dy` through the ReLU's mask.
    /// - Throws: as the layer's 16-bit backward; ``NormError/rankFailed(rank:)``;
    ///   the communicator's errors. Every rank throws when one does.
    /// - Complexity: O(count of the cached input) here, plus one all-gather
    ///   of `11 + 2·C` scalars per rank after a training forward.
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient: UnsafeMutableBufferPointer<Storage>,
        residualGradient: UnsafeMutableBufferPointer<Storage>?,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let c = layer.channelCount
        let checked: Result<ChannelGeometry, NormError>
        do throws(NormError) {
            let g = try BatchStatistics.checkReducedBackward(
                outputGradient, cache: cache, inputGradient: inputGradient,
                gammaGradient: gammaGradient, betaGradient: betaGradient, channels: c,
                origin: cacheOrigin,
                geometry: { shape, count throws(NormError) in try layer.shard(shape, count) })
            if let residualGradient {
                try Validation.buffer("residualGradient", residualGradient.count,
                                      expected: outputGradient.count)
            }
            checked = .success(g)
        } catch {
            checked = .failure(error)
        }
        try RankStatistics.reducedBackward(
            communicator: communicator, checked: checked, channels: c, number: backwardNumber(cache),
            origin: cacheOrigin, outputGradient, inputGradient, residualGradient: residualGradient,
            gammaGradient: gammaGradient, betaGradient: betaGradient, cache: cache,
            backend: layer.backend, workspace: &workspace)
    }
}
