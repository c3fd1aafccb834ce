/// ``BatchNorm`` over a batch split across processes (data-parallel
/// training): each rank passes its own rows, and every rank normalizes with
/// the statistics of the whole batch, as `BatchNorm` on the ranks' rows
/// concatenated in rank order would (<doc:Architecture>, "Across processes").
///
/// Training forward: each rank's ``Moments`` (its row count may differ from
/// the others' and may be 0) are all-gathered and merged with Chan's formula in
/// rank order, so every rank holds bit-identical batch statistics and running
/// statistics; `.unbiased` uses the batch's count. Backward all-gathers the
/// per-feature sums `Σ dy` and `Σ dy·(x - mean)` and adds them in rank order
/// (the same bits on every rank), and `dx` uses the batch's
/// count; `gammaGradient` and `betaGradient` are this rank's share (their sum
/// over the ranks is the batch's gradient), for the trainer to all-reduce with
/// the other parameters' gradients. Inference uses the running statistics and
/// is each rank's alone: no collective, so ranks may run different numbers of
/// inference batches.
///
/// ```swift
/// var bn = try SyncBatchNorm<Double>(featureCount: 4, communicator: SingleProcess())
/// let x = try Tensor<Double>(randomNormal: [6, 4], seed: 1)
/// let (y, cache) = try bn.forward(x, mode: .training)
/// let grads = try bn.backward(y, cache: cache)
/// ```
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
/// ``SingleProcess`` the results are ``BatchNorm``'s, bit for bit.
///
/// The options, parameters and running statistics are those of ``batchNorm``,
/// read and written through it (`bn.runningMean`, `bn.momentum`, ...); save it,
/// or use it alone for inference on one process.
@dynamicMemberLookup
public struct SyncBatchNorm<Scalar: BLASScalar>: ActivatedNormalizationLayer {
    /// The forward pass's saved input (this rank's rows), the batch's
    /// statistics and `gamma`.
    public typealias Cache = NormCache<Scalar>

    /// The layer's state: parameters, running statistics and options.
    public var batchNorm: BatchNorm<Scalar>
    /// The ranks that share each batch.
    public let communicator: any Communicator
    /// The training forwards this layer has completed: the next one sends
    /// this plus one with its status word, and its backward the same. A call
    /// that throws (on every rank alike) does not count.
    @usableFromInline var trainingCalls = 0

    /// Creates a synchronized batch-norm layer with `gamma` ones, `beta` zeros
    /// and running statistics zeros; the options are ``BatchNorm``'s.
    /// - Throws: ``NormError/invalidFeatureCount(_:)``, ``NormError/invalidEpsilon(_:)``,
    ///   ``NormError/invalidMomentum(_:)``.
    public init(featureCount: Int, epsilon: Scalar = 1e-5, momentum: Scalar = 0.9,
                varianceEstimator: VarianceEstimator = .biased,
                runningStatistics: RunningStatistics = .exponential, affine: Affine = .scaleAndShift,
                communicator: any Communicator, backend: Backend = .blas) throws(NormError) {
        self.batchNorm = try BatchNorm(featureCount: featureCount, epsilon: epsilon, momentum: momentum,
                                       varianceEstimator: varianceEstimator,
                                       runningStatistics: runningStatistics, affine: affine, backend: backend)
        self.communicator = communicator
    }

    /// Synchronizes `batchNorm` (its parameters, running statistics and
    /// options) over `communicator`.
    public init(_ batchNorm: BatchNorm<Scalar>, communicator: any Communicator) {
        self.batchNorm = batchNorm
        self.communicator = communicator
    }

    /// ``batchNorm``'s properties: `featureCount`, `runningMean`,
    /// `runningVariance`, `epsilon`, `momentum`, `varianceEstimator`.
    public subscript<Value>(dynamicMember path: WritableKeyPath<BatchNorm<Scalar>, Value>) -> Value {
        get { batchNorm[keyPath: path] }
        set { batchNorm[keyPath: path] = newValue }
    }

    /// ``batchNorm``'s read-only properties (`featureCount`).
    public subscript<Value>(dynamicMember path: KeyPath<BatchNorm<Scalar>, Value>) -> Value {
        batchNorm[keyPath: path]
    }

    /// The scale, one per feature (``batchNorm``'s).
    public var gamma: [Scalar] {
        get { batchNorm.gamma }
        set { batchNorm.gamma = newValue }
    }

    /// The shift, one per feature (``batchNorm``'s).
    public var beta: [Scalar] {
        get { batchNorm.beta }
        set { batchNorm.beta = newValue }
    }

    /// Which of `gamma` and `beta` the layer has (``batchNorm``'s).
    public var affine: Affine { batchNorm.affine }

    /// The implementation used (``batchNorm``'s).
    public var backend: Backend {
        get { batchNorm.backend }
        set { batchNorm.backend = newValue }
    }

    /// Applied after the affine map (and a residual) in the output pass
    /// (``batchNorm``'s).
    public var activation: FusedActivation {
        get { batchNorm.activation }
        set { batchNorm.activation = newValue }
    }

    /// Inference with ``batchNorm``'s running statistics, keeping nothing and
    /// communicating nothing: `BatchNorm.infer(_:shape:into:workspace:)`.
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
        try batchNorm.infer(input, shape: shape, into: output, workspace: &workspace)
    }

    /// The origin its forward passes record in a cache: `.syncBatchNorm(featureCount:)`.
    @inlinable
    public var cacheOrigin: CacheOrigin { .syncBatchNorm(featureCount: batchNorm.featureCount) }

    /// Normalizes this rank's `(N, D)` rows (`N` may be 0) in borrowed memory
    /// with the whole batch's statistics; see the type's documentation.
    ///
    /// - Throws: as `BatchNorm/forward(_:residual:shape:mode:into:cache:workspace:)`
    ///   (with `N >= 0` per rank, and the batch's count at least 2 in training);
    ///   ``NormError/rankFailed(rank:)`` when another rank refused its call;
    ///   ``NormError/callMismatch(rank:expected:actual:)`` when another rank is
    ///   in another call; the communicator's errors. A throwing call leaves the
    ///   running statistics unchanged, on every rank. Every rank's layer must
    ///   have the same feature count: the message's size depends on it, and
    ///   with `MPICommunicator` a rank with another count makes the all-gather
    ///   a size mismatch, which Open MPI's default error handler turns into the
    ///   end of the job (`MPI_ERR_TRUNCATE`), not a wait; a rank that received
    ///   the shorter message may first throw
    ///   ``NormError/parameterCountMismatch(name:expected:actual:)``.
    /// - Complexity: O(N·D) here, plus one all-gather of `11 + 2·D` scalars
    ///   per rank in training: the status word and the moments.
    @inlinable
    public mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, residual: UnsafeBufferPointer<Scalar>?,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        let mode = batchNorm.runningStatistics.statisticsMode(mode)
        let d = batchNorm.featureCount
        let prepared: Result<ChannelGeometry, NormError>
        do throws(NormError) {
            try batchNorm.validateParameters()
            try cache.adopt(input, shape: shape)
            try Validation.buffer("output", output.count, expected: input.count)
            try Validation.residual(residual, count: input.count)
            let rows = try Validation.matrixRows(cache.input, columns: d, minimumRows: 0)
            prepared = .success(ChannelGeometry(outer: rows, channels: d, inner: 1))
        } catch {
            prepared = .failure(error)
        }
        try RankStatistics.forward(
            communicator: communicator, prepared: prepared, channels: d, mode: mode,
            number: trainingCalls + 1,
            origin: cacheOrigin, gamma: batchNorm.gamma, beta: batchNorm.beta,
            runningMean: &batchNorm.runningMean, runningVariance: &batchNorm.runningVariance,
            epsilon: batchNorm.epsilon, update: batchNorm.runningUpdate,
            estimator: batchNorm.varianceEstimator, backend: batchNorm.backend, output: output,
            residual: residual?.baseAddress, activation: batchNorm.activation,
            cache: &cache, workspace: &workspace)
        // Every rank's call succeeded or every rank's threw: the counts stay in step.
        if mode == .training { trainingCalls += 1 }
        if batchNorm.runningStatistics.counts(mode) { batchNorm.batchesTracked += 1 }
    }

    /// The closed-form backward of this rank's rows: `dbeta` and `dgamma` sums
    /// added over the ranks for `dx`, which uses the batch's count;
    /// `gammaGradient` and `betaGradient` receive this rank's share.
    /// - Throws: as ``BatchNorm/backward(_:cache:inputGradient:gammaGradient:betaGradient:workspace:)``;
    ///   ``NormError/rankFailed(rank:)``; the communicator's errors.
    /// - Complexity: O(N·D) here, plus one all-gather of `11 + 2·D` scalars
    ///   per rank after a training forward: the status word and the sums,
    ///   added in rank order.
    @inlinable
    public func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, cache: Cache,
        inputGradient: UnsafeMutableBufferPointer<Scalar>,
        residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        let d = batchNorm.featureCount
        let buffers = GradientBuffers(dy: outputGradient, dx: inputGradient, dgamma: gammaGradient,
                                      dbeta: betaGradient)
        let checked: Result<ChannelGeometry, NormError>
        do throws(NormError) {
            try BatchStatistics.validateBackward(buffers, cache: cache, channels: d, origin: cacheOrigin)
            let rows = try Validation.matrixRows(cache.input, columns: d, minimumRows: 0)
            checked = .success(ChannelGeometry(outer: rows, channels: d, inner: 1))
        } catch {
            checked = .failure(error)
        }
        let number = RankStatistics.number(of: cache, origin: cacheOrigin, last: trainingCalls)
        try RankStatistics.backward(communicator: communicator, checked: checked, channels: d, number: number,
                                    origin: cacheOrigin, buffers,
                                    residualGradient: residualGradient, cache: cache,
                                    backend: batchNorm.backend, workspace: &workspace)
    }

    /// Tells the other ranks (in a training forward) that this rank's call
    /// was refused, and returns `error`.
    /// - Complexity: one all-gather of the call's message per rank in training, else O(1).
    @inlinable
    public func refusingForward(_ error: NormError, mode: Mode) -> NormError {
        guard batchNorm.runningStatistics.statisticsMode(mode) == .training else { return error }
        return RankStatistics.refusing(error, communicator: communicator, channels: batchNorm.featureCount, of: Scalar.self,
                                       collective: .forward, number: trainingCalls + 1)
    }

    /// Tells the other ranks (unless `cache` is from an inference forward of
    /// this layer) that this rank's backward was refused, and returns `error`.
    /// - Complexity: one all-gather of the call's message per rank, or O(1).
    @inlinable
    public func refusingBackward(_ error: NormError, cache: Cache) -> NormError {
        RankStatistics.refusing(error, communicator: communicator, channels: batchNorm.featureCount, of: Scalar.self,
                                collective: cache.origin == cacheOrigin && cache.mode == .inference ? nil : .backward,
                                number: RankStatistics.number(of: cache, origin: cacheOrigin, last: trainingCalls))
    }
}
