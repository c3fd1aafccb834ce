// The 16-bit entry points of the layers with batch statistics (DESIGN §2.3):
// input, output and their gradients in Float16 or BFloat16; gamma, beta, the
// statistics, the running statistics and the parameter gradients in Float.

extension BatchNorm: ReducedPrecisionLayer where Scalar == Float {
    /// Normalizes an `(N, D)` batch stored in 16 bits (`Float16` or
    /// ``BFloat16``) per feature, into `output` of the same type:
    /// `y = act((x - mean_j) · gamma_j / sqrt(var_j + epsilon) + beta_j)`,
    /// computed in `Float` from the widened input and rounded once to
    /// `Storage` (nearest even). In training the batch statistics are `Float`
    /// sums (`sgemv`) over blocks of rows that a C pass widens into `Float`
    /// scratch, and the running statistics are updated in `Float`; in
    /// inference the running statistics are used.
    ///
    /// A `Float16` output beyond ±65504 rounds to ±infinity (IEEE 754). The
    /// cache keeps the input at 2 bytes an element; a ReLU forward's mask as
    /// in `Float`.
    /// - Throws: as the `Float` entry point, and
    ///   ``NormError/unsupportedParameter(name:expected:)`` for a storage
    ///   type other than `Float16` and ``BFloat16``. A throwing call leaves
    ///   the running statistics unchanged.
    /// - Complexity: O(N·D).
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int], mode: Mode,
        into output: UnsafeMutableBufferPointer<Storage>,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let mode = runningStatistics.statisticsMode(mode)
        try validateParameters()
        let features = featureCount
        try BatchStatistics.forward(
            input, shape: shape,
            geometry: { shape, count throws(NormError) in
                ChannelGeometry(outer: try Validation.matrixRows(shape: shape, count: count,
                                                                 columns: features),
                                channels: features, inner: 1)
            },
            mode: mode, origin: cacheOrigin, gamma: gamma, beta: beta,
            runningMean: &runningMean, runningVariance: &runningVariance, epsilon: epsilon,
            update: runningUpdate, estimator: varianceEstimator, backend: backend,
            activation: activation, output: output, cache: &cache, workspace: &workspace)
        if runningStatistics.counts(mode) { batchesTracked += 1 }
    }

    /// The 16-bit inference with the running statistics, keeping nothing: the
    /// 16-bit `forward(mode: .inference)`'s output bit for bit. `output` may
    /// be `input`'s memory. With ``RunningStatistics/none``: the forward pass
    /// with the batch's statistics, allocating that pass's cache.
    /// - Throws: as the 16-bit forward, except the training checks.
    /// - Complexity: O(N·D); allocation-free once `workspace` is sized.
    @inlinable
    public func infer<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Storage>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        if runningStatistics == .none {
            var layer = self, cache = NormCache<Float>()
            return try layer.forward(input, shape: shape, mode: .training, into: output,
                                     cache: &cache, workspace: &workspace)
        }
        try validateParameters()
        let features = featureCount
        try BatchStatistics.infer(
            input, shape: shape,
            geometry: { shape, count throws(NormError) in
                ChannelGeometry(outer: try Validation.matrixRows(shape: shape, count: count,
                                                                 columns: features),
                                channels: features, inner: 1)
            },
            gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
            epsilon: epsilon, backend: backend, activation: activation, output: output,
            workspace: &workspace)
    }

    /// The closed-form backward of a 16-bit forward: the `Float` sums
    /// `dbeta = Σ dy`, `dgamma = Σ dy·xhat` (`sgemv` over blocks of rows of
    /// `outputGradient` and the cached input widened into `Float`), and
    /// `dx = gamma·invstd/N · (N·dy - dbeta - xhat·dgamma)` rounded once to
    /// `Storage`; `dx = gamma·invstd·dy` after an inference forward.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer or filled at another precision,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``.
    /// - Complexity: O(N·D).
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient: UnsafeMutableBufferPointer<Storage>,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let features = featureCount
        try BatchStatistics.backward(
            outputGradient, cache: cache, inputGradient: inputGradient,
            gammaGradient: gammaGradient, betaGradient: betaGradient, channels: features,
            origin: cacheOrigin,
            geometry: { shape, count throws(NormError) in
                ChannelGeometry(outer: try Validation.matrixRows(shape: shape, count: count,
                                                                 columns: features),
                                channels: features, inner: 1)
            },
            backend: backend, workspace: &workspace)
    }
}

extension SpatialBatchNorm: ReducedPrecisionLayer where Scalar == Float {
    /// Normalizes a batch of images stored in 16 bits (`Float16` or
    /// ``BFloat16``) per channel, in its ``layout``, into `output` of the same
    /// type: `y = act((x - mean_c) · gamma_c / sqrt(var_c + epsilon) + beta_c)`
    /// over `N·H·W` values per channel, computed in `Float` from the widened
    /// input (per sample and block of channels for NCHW, per block of pixels
    /// for NHWC) and rounded once to `Storage`. As ``BatchNorm``'s 16-bit
    /// forward otherwise.
    /// - Throws: as the `Float` entry point, and
    ///   ``NormError/unsupportedParameter(name:expected:)`` for a storage
    ///   type other than `Float16` and ``BFloat16``.
    /// - Complexity: O(N·C·H·W).
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int], mode: Mode,
        into output: UnsafeMutableBufferPointer<Storage>,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let mode = runningStatistics.statisticsMode(mode)
        try validateParameters()
        let (layout, channels) = (layout, channelCount)
        try BatchStatistics.forward(
            input, shape: shape,
            geometry: { shape, count throws(NormError) in
                try SpatialBatchNorm.geometry(layout: layout, channelCount: channels, shape: shape,
                                              count: count)
            },
            mode: mode, origin: cacheOrigin, gamma: gamma, beta: beta,
            runningMean: &runningMean, runningVariance: &runningVariance, epsilon: epsilon,
            update: runningUpdate, estimator: varianceEstimator, backend: backend,
            activation: activation, output: output, cache: &cache, workspace: &workspace)
        if runningStatistics.counts(mode) { batchesTracked += 1 }
    }

    /// The 16-bit inference with the running statistics, keeping nothing: the
    /// 16-bit `forward(mode: .inference)`'s output bit for bit. `output` may
    /// be `input`'s memory. With ``RunningStatistics/none``: the forward pass
    /// with the batch's statistics, allocating that pass's cache.
    /// - Throws: as the 16-bit forward, except the training checks.
    /// - Complexity: O(N·C·H·W); allocation-free once `workspace` is sized.
    @inlinable
    public func infer<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Storage>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        if runningStatistics == .none {
            var layer = self, cache = NormCache<Float>()
            return try layer.forward(input, shape: shape, mode: .training, into: output,
                                     cache: &cache, workspace: &workspace)
        }
        try validateParameters()
        try BatchStatistics.infer(
            input, shape: shape,
            geometry: { shape, count throws(NormError) in
                try geometry(shape: shape, count: count)
            },
            gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
            epsilon: epsilon, backend: backend, activation: activation, output: output,
            workspace: &workspace)
    }

    /// The closed-form backward of a 16-bit forward per channel, as
    /// ``BatchNorm``'s 16-bit backward over `N·H·W` values per channel.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer or filled at another precision,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``.
    /// - Complexity: O(N·C·H·W).
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient: UnsafeMutableBufferPointer<Storage>,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try BatchStatistics.backward(
            outputGradient, cache: cache, inputGradient: inputGradient,
            gammaGradient: gammaGradient, betaGradient: betaGradient, channels: channelCount,
            origin: cacheOrigin,
            geometry: { shape, count throws(NormError) in
                try geometry(shape: shape, count: count)
            },
            backend: backend, workspace: &workspace)
    }
}

extension SyncBatchNorm: ReducedPrecisionLayer where Scalar == Float {
    /// Normalizes this rank's `(N, D)` rows stored in 16 bits (`N` may be 0)
    /// with the whole batch's `Float` statistics, into `output` of the same
    /// type: ``BatchNorm``'s 16-bit forward, with the moments exchanged as in
    /// `Float` (the message is `Float`, so ranks may even store their shards
    /// at different precisions).
    /// - Throws: as the `Float` entry point, and
    ///   ``NormError/unsupportedParameter(name:expected:)`` for a storage
    ///   type other than `Float16` and ``BFloat16``. Every rank throws when
    ///   one does; the running statistics stay unchanged.
    /// - Complexity: O(N·D) here, plus one all-gather of `11 + 2·D` scalars
    ///   per rank in training.
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int], mode: Mode,
        into output: UnsafeMutableBufferPointer<Storage>,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let mode = batchNorm.runningStatistics.statisticsMode(mode)
        let d = batchNorm.featureCount
        let prepared: Result<ChannelGeometry, NormError>
        do throws(NormError) {
            try batchNorm.validateParameters()
            prepared = .success(try BatchStatistics.prepareReduced(
                input, shape: shape,
                geometry: { shape, count throws(NormError) in
                    ChannelGeometry(outer: try Validation.matrixRows(
                                        shape: shape, count: count, columns: d, minimumRows: 0),
                                    channels: d, inner: 1)
                },
                output: output, cache: &cache))
        } catch {
            prepared = .failure(error)
        }
        try RankStatistics.forward(
            communicator: communicator, prepared: prepared, channels: d, mode: mode,
            number: trainingCalls + 1, origin: cacheOrigin, gamma: batchNorm.gamma,
            beta: batchNorm.beta, runningMean: &batchNorm.runningMean,
            runningVariance: &batchNorm.runningVariance, epsilon: batchNorm.epsilon,
            update: batchNorm.runningUpdate, estimator: batchNorm.varianceEstimator,
            backend: batchNorm.backend, output: UnsafeMutableBufferPointer(start: nil, count: 0),
            residual: nil, activation: batchNorm.activation, cache: &cache, workspace: &workspace,
            reduced: ReducedStreams(input, output))
        if mode == .training { trainingCalls += 1 }
        if batchNorm.runningStatistics.counts(mode) { batchNorm.batchesTracked += 1 }
    }

    /// ``batchNorm``'s 16-bit inference, keeping nothing and communicating
    /// nothing.
    /// - Throws: as that method.
    /// - Complexity: O(count of `input`), no collective.
    @inlinable
    public func infer<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Storage>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try batchNorm.infer(input, shape: shape, into: output, workspace: &workspace)
    }

    /// The closed-form backward of this rank's 16-bit rows: the `Float` sums
    /// added over the ranks (one all-gather, as in `Float`), `dx` rounded
    /// once to `Storage`; `gammaGradient` and `betaGradient` this rank's share.
    /// - Throws: as ``BatchNorm``'s 16-bit backward;
    ///   ``NormError/rankFailed(rank:)``; the communicator's errors. Every
    ///   rank throws when one does.
    /// - Complexity: O(N·D) here, plus one all-gather of `11 + 2·D` scalars
    ///   per rank after a training forward.
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient: UnsafeMutableBufferPointer<Storage>,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let d = batchNorm.featureCount
        let checked: Result<ChannelGeometry, NormError>
        do throws(NormError) {
            checked = .success(try BatchStatistics.checkReducedBackward(
                outputGradient, cache: cache, inputGradient: inputGradient,
                gammaGradient: gammaGradient, betaGradient: betaGradient, channels: d,
                origin: cacheOrigin,
                geometry: { shape, count throws(NormError) in
                    ChannelGeometry(outer: try Validation.matrixRows(
                                        shape: shape, count: count, columns: d, minimumRows: 0),
                                    channels: d, inner: 1)
                }))
        } catch {
            checked = .failure(error)
        }
        let number = RankStatistics.number(of: cache, origin: cacheOrigin, last: trainingCalls)
        try RankStatistics.reducedBackward(
            communicator: communicator, checked: checked, channels: d, number: number,
            origin: cacheOrigin, outputGradient, inputGradient, gammaGradient: gammaGradient,
            betaGradient: betaGradient, cache: cache, backend: batchNorm.backend,
            workspace: &workspace)
    }
}

extension SyncSpatialBatchNorm: ReducedPrecisionLayer where Scalar == Float {
    /// Normalizes this rank's images stored in 16 bits (`N` may be 0) with
    /// the whole batch's `Float` statistics per channel: ``SpatialBatchNorm``'s
    /// 16-bit forward, with the moments exchanged as in `Float`.
    /// - Throws: as the `Float` entry point, and
    ///   ``NormError/unsupportedParameter(name:expected:)``. Every rank throws
    ///   when one does.
    /// - Complexity: O(N·C·H·W) here, plus one all-gather of `11 + 2·C`
    ///   scalars per rank in training.
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int], mode: Mode,
        into output: UnsafeMutableBufferPointer<Storage>,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let mode = spatialBatchNorm.runningStatistics.statisticsMode(mode)
        let c = spatialBatchNorm.channelCount, layout = spatialBatchNorm.layout
        let prepared: Result<ChannelGeometry, NormError>
        do throws(NormError) {
            try spatialBatchNorm.validateParameters()
            prepared = .success(try BatchStatistics.prepareReduced(
                input, shape: shape,
                geometry: { shape, count throws(NormError) in
                    try SpatialBatchNorm<Float>.geometry(layout: layout, channelCount: c, shape: shape,
                                                         count: count, minimumBatch: 0)
                },
                output: output, cache: &cache))
        } catch {
            prepared = .failure(error)
        }
        try RankStatistics.forward(
            communicator: communicator, prepared: prepared, channels: c, mode: mode,
            number: trainingCalls + 1, origin: cacheOrigin, gamma: spatialBatchNorm.gamma,
            beta: spatialBatchNorm.beta, runningMean: &spatialBatchNorm.runningMean,
            runningVariance: &spatialBatchNorm.runningVariance, epsilon: spatialBatchNorm.epsilon,
            update: spatialBatchNorm.runningUpdate, estimator: spatialBatchNorm.varianceEstimator,
            backend: spatialBatchNorm.backend,
            output: UnsafeMutableBufferPointer(start: nil, count: 0), residual: nil,
            activation: spatialBatchNorm.activation, cache: &cache, workspace: &workspace,
            reduced: ReducedStreams(input, output))
        if mode == .training { trainingCalls += 1 }
        if spatialBatchNorm.runningStatistics.counts(mode) { spatialBatchNorm.batchesTracked += 1 }
    }

    /// ``spatialBatchNorm``'s 16-bit inference, keeping nothing and
    /// communicating nothing.
    /// - Throws: as that method.
    /// - Complexity: O(count of `input`), no collective.
    @inlinable
    public func infer<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Storage>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try spatialBatchNorm.infer(input, shape: shape, into: output, workspace: &workspace)
    }

    /// The closed-form backward of this rank's 16-bit images: per-channel
    /// `Float` sums added over the ranks, `dx` rounded once to `Storage`.
    /// - Throws: as ``SpatialBatchNorm``'s 16-bit backward;
    ///   ``NormError/rankFailed(rank:)``; the communicator's errors.
    /// - Complexity: O(N·C·H·W) here, plus one all-gather of `11 + 2·C`
    ///   scalars per rank after a training forward.
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient: UnsafeMutableBufferPointer<Storage>,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let c = spatialBatchNorm.channelCount, layout = spatialBatchNorm.layout
        let checked: Result<ChannelGeometry, NormError>
        do throws(NormError) {
            checked = .success(try BatchStatistics.checkReducedBackward(
                outputGradient, cache: cache, inputGradient: inputGradient,
                gammaGradient: gammaGradient, betaGradient: betaGradient, channels: c,
                origin: cacheOrigin,
                geometry: { shape, count throws(NormError) in
                    try SpatialBatchNorm<Float>.geometry(layout: layout, channelCount: c, shape: shape,
                                                         count: count, minimumBatch: 0)
                }))
        } catch {
            checked = .failure(error)
        }
        let number = RankStatistics.number(of: cache, origin: cacheOrigin, last: trainingCalls)
        try RankStatistics.reducedBackward(
            communicator: communicator, checked: checked, channels: c, number: number,
            origin: cacheOrigin, outputGradient, inputGradient, gammaGradient: gammaGradient,
            betaGradient: betaGradient, cache: cache, backend: spatialBatchNorm.backend,
            workspace: &workspace)
    }
}
