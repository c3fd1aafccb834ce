// The 16-bit entry points of the layers with batch statistics (DESIGN §2.3):
// input, output and their gradients in Float16 or BFloat16; gamma, beta, the
// statistics, the running statistics and the parameter gradients in Float.

/// A per-channel layer (``BatchNorm``, ``SpatialBatchNorm``, ``GroupNorm``,
/// ``InstanceNorm``, ``SyncBatchNorm``, ``SyncSpatialBatchNorm``, where
/// `Scalar` is `Float`) whose fused epilogue
/// (``ActivatedNormalizationLayer``, DESIGN §2.4) also reads and writes
/// 16-bit storage: `y = act(norm(x) + residual)` computed in `Float` from the
/// widened input and residual and rounded once to the storage type (the
/// unfused sequence rounds twice, after the layer and after the addition, so
/// the two may differ by one unit in the last place); backward writes the
/// residual's gradient, `dy` masked by the ReLU (`+0` where the output was not
/// positive), bit for bit.
public protocol ReducedPrecisionActivatedLayer: ReducedPrecisionLayer, ActivatedNormalizationLayer
where Cache == NormCache<Float> {
    /// Normalizes `input` and adds `residual` (when not `nil`) before the
    /// activation, into `output`; see the protocol.
    /// - Throws: as the 16-bit forward, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming `residual`.
    /// - Complexity: O(product of `shape`).
    mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, residual: UnsafeBufferPointer<Storage>?,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Storage>,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>) throws(NormError)

    /// The 16-bit backward, writing the residual's gradient (`dy` through the
    /// ReLU's mask) into `residualGradient` when it is not `nil` (it may not
    /// be `inputGradient`'s memory).
    /// - Throws: as the 16-bit backward, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming `residualGradient`.
    /// - Complexity: O(count of the cached input).
    func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient: UnsafeMutableBufferPointer<Storage>,
        residualGradient: UnsafeMutableBufferPointer<Storage>?,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>,
        workspace: inout Workspace<Float>) throws(NormError)
}

extension ReducedPrecisionActivatedLayer {
    /// The 16-bit forward without a residual.
    /// - Throws: as the forward with a residual.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int], mode: Mode,
        into output: UnsafeMutableBufferPointer<Storage>,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try forward(input, residual: nil, shape: shape, mode: mode, into: output, cache: &cache,
                    workspace: &workspace)
    }

    /// The 16-bit backward without a residual gradient.
    /// - Throws: as the backward with `residualGradient`.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient: UnsafeMutableBufferPointer<Storage>,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try backward(outputGradient, cache: cache, inputGradient: inputGradient,
                     residualGradient: nil, gammaGradient: gammaGradient,
                     betaGradient: betaGradient, workspace: &workspace)
    }

    /// The 16-bit forward with a residual over `Span`s: the entry point over buffers.
    /// - Throws: as that entry point.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: Span<Storage>, residual: Span<Storage>, shape: [Int], mode: Mode,
        into output: inout MutableSpan<Storage>, cache: inout NormCache<Float>,
        workspace: inout Workspace<Float>
    ) throws(NormError) {
        let failure: NormError? = input.withUnsafeBufferPointer { x in
            residual.withUnsafeBufferPointer { r in
                output.withUnsafeMutableBufferPointer { y in
                    do throws(NormError) {
                        try forward(x, residual: r, shape: shape, mode: mode, into: y,
                                    cache: &cache, workspace: &workspace)
                        return nil
                    } catch { return error }
                }
            }
        }
        if let failure { throw failure }
    }

    /// The 16-bit backward with the residual's gradient over `Span`s: the
    /// entry point over buffers.
    /// - Throws: as that entry point.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: Span<Storage>, cache: NormCache<Float>,
        inputGradient: inout MutableSpan<Storage>, residualGradient: inout MutableSpan<Storage>,
        gammaGradient: inout MutableSpan<Float>, betaGradient: inout MutableSpan<Float>,
        workspace: inout Workspace<Float>
    ) throws(NormError) {
        let failure: NormError? = outputGradient.withUnsafeBufferPointer { dy in
            inputGradient.withUnsafeMutableBufferPointer { dx in
                residualGradient.withUnsafeMutableBufferPointer { dr in
                    gammaGradient.withUnsafeMutableBufferPointer { dgamma in
                        betaGradient.withUnsafeMutableBufferPointer { dbeta in
                            do throws(NormError) {
                                try backward(dy, cache: cache, inputGradient: dx, residualGradient: dr,
                                             gammaGradient: dgamma, betaGradient: dbeta,
                                             workspace: &workspace)
                                return nil
                            } catch { return error }
                        }
                    }
                }
            }
        }
        if let failure { throw failure }
    }
}

extension BatchNorm: ReducedPrecisionLayer, ReducedPrecisionActivatedLayer where Scalar == Float {
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
    /// With a `residual`, `y = act(norm(x) + residual)`, rounded once
    /// (``ReducedPrecisionActivatedLayer``).
    /// - Throws: as the `Float` entry point, and
    ///   ``NormError/unsupportedParameter(name:expected:)`` for a storage
    ///   type other than `Float16` and ``BFloat16``. A throwing call leaves
    ///   the running statistics unchanged.
    /// - Complexity: O(N·D).
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, residual: UnsafeBufferPointer<Storage>?,
        shape: [Int], mode: Mode,
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
            activation: activation, output: output, residual: residual, cache: &cache,
            workspace: &workspace)
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
    /// `residualGradient`, when given, receives `dy` through the ReLU's mask.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer or filled at another precision,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``.
    /// - Complexity: O(N·D).
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient: UnsafeMutableBufferPointer<Storage>,
        residualGradient: UnsafeMutableBufferPointer<Storage>?,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let features = featureCount
        try BatchStatistics.backward(
            outputGradient, cache: cache, inputGradient: inputGradient,
            gammaGradient: gammaGradient, betaGradient: betaGradient,
            residualGradient: residualGradient, channels: features,
            origin: cacheOrigin,
            geometry: { shape, count throws(NormError) in
                ChannelGeometry(outer: try Validation.matrixRows(shape: shape, count: count,
                                                                 columns: features),
                                channels: features, inner: 1)
            },
            backend: backend, workspace: &workspace)
    }
}

extension SpatialBatchNorm: ReducedPrecisionLayer, ReducedPrecisionActivatedLayer where Scalar == Float {
    /// Normalizes a batch of images stored in 16 bits (`Float16` or
    /// ``BFloat16``) per channel, in its ``layout``, into `output` of the same
    /// type: `y = act((x - mean_c) · gamma_c / sqrt(var_c + epsilon) + beta_c)`
    /// over `N·H·W` values per channel, computed in `Float` from the widened
    /// input (per sample and block of channels for NCHW, per block of pixels
    /// for NHWC) and rounded once to `Storage`. As ``BatchNorm``'s 16-bit
    /// forward otherwise.
    /// With a `residual`, `y = act(norm(x) + residual)`, rounded once
    /// (``ReducedPrecisionActivatedLayer``).
    /// - Throws: as the `Float` entry point, and
    ///   ``NormError/unsupportedParameter(name:expected:)`` for a storage
    ///   type other than `Float16` and ``BFloat16``.
    /// - Complexity: O(N·C·H·W).
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, residual: UnsafeBufferPointer<Storage>?,
        shape: [Int], mode: Mode,
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
            activation: activation, output: output, residual: residual, cache: &cache,
            workspace: &workspace)
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
    /// `residualGradient`, when given, receives `dy` through the ReLU's mask.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer or filled at another precision,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``.
    /// - Complexity: O(N·C·H·W).
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
            residualGradient: residualGradient, channels: channelCount,
            origin: cacheOrigin,
            geometry: { shape, count throws(NormError) in
                try geometry(shape: shape, count: count)
            },
            backend: backend, workspace: &workspace)
    }
}
