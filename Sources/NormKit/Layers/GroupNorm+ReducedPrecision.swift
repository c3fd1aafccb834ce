// The 16-bit entry points of GroupNorm and InstanceNorm (DESIGN §2.3): input,
// output and their gradients in Float16 or BFloat16; gamma, beta, the
// statistics and the parameter gradients in Float.

extension GroupNorm: ReducedPrecisionLayer, ReducedPrecisionActivatedLayer where Scalar == Float {
    /// Normalizes each (sample, group) of an `(N, C, H, W)` input (or, with
    /// ``layout`` `.nhwc`, `(N, H, W, C)`; ranks 3-5 either way) stored in
    /// 16 bits (`Float16` or ``BFloat16``), into `output` of the same type:
    /// `y = act((x - mean_ng) · invstd_ng · gamma_c + beta_c)`, computed in
    /// `Float` from the widened input (one sample at a time, the `Float`
    /// kernels' arithmetic) and rounded once to `Storage` (nearest even). The
    /// cache keeps the input at 2 bytes an element.
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
        try GroupStatistics.forward(
            input, shape: shape, mode: mode, channels: channelCount, groups: groupCount,
            layout: layout, origin: cacheOrigin, affine: affine, gamma: gamma, beta: beta, epsilon: epsilon, backend: backend,
            activation: activation, output: output, residual: residual, cache: &cache,
            workspace: &workspace)
    }

    /// The 16-bit forward for inference, keeping nothing: its output bit for
    /// bit. `output` may be `input`'s memory.
    /// - Throws: as the 16-bit forward.
    /// - Complexity: O(N·C·H·W); allocation-free once `workspace` is sized.
    @inlinable
    public func infer<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Storage>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try GroupStatistics.infer(
            input, shape: shape, channels: channelCount, groups: groupCount, layout: layout,
            affine: affine, gamma: gamma,
            beta: beta, epsilon: epsilon, backend: backend, activation: activation,
            output: output, workspace: &workspace)
    }

    /// The backward pass of a 16-bit forward: the `Float` formulas of the
    /// `Float` backward on each sample's `outputGradient` and cached input
    /// widened into `Float`, `inputGradient` rounded once to `Storage`,
    /// `gammaGradient` and `betaGradient` in `Float`.
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
        try GroupStatistics.backward(
            outputGradient, cache: cache, inputGradient: inputGradient,
            gammaGradient: gammaGradient, betaGradient: betaGradient,
            residualGradient: residualGradient, channels: channelCount,
            groups: groupCount, layout: layout, origin: cacheOrigin, backend: backend,
            workspace: &workspace)
    }
}

extension InstanceNorm: ReducedPrecisionLayer, ReducedPrecisionActivatedLayer where Scalar == Float {
    /// Normalizes each (sample, channel) of an `(N, C, H, W)` input (or, with
    /// ``layout`` `.nhwc`, `(N, H, W, C)`) stored in 16 bits, into `output` of
    /// the same type: ``GroupNorm``'s 16-bit
    /// forward with one channel per group, folding the instance statistics
    /// into the running ones as the `Float` forward does; in inference with
    /// running statistics, ``SpatialBatchNorm``'s 16-bit inference with them.
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
        try validateParameters()
        let channels = channelCount, layout = layout
        guard runningStatistics.statisticsMode(mode) == .training else {
            return try BatchStatistics.forward(
                input, shape: shape,
                geometry: { shape, count throws(NormError) in
                    try Self.frozenGeometry(layout: layout, channels: channels, shape: shape, count: count)
                },
                mode: .inference, origin: cacheOrigin, gamma: gamma, beta: beta,
                runningMean: &runningMean, runningVariance: &runningVariance, epsilon: epsilon,
                update: nil, estimator: varianceEstimator, backend: backend,
                activation: activation, output: output, residual: residual, cache: &cache,
            workspace: &workspace)
        }
        try GroupStatistics.forward(
            input, shape: shape, mode: .training, channels: channels, groups: channels,
            layout: layout, origin: cacheOrigin, affine: affine, gamma: gamma, beta: beta, epsilon: epsilon, backend: backend,
            activation: activation, output: output, residual: residual, cache: &cache,
            workspace: &workspace)
        if mode == .training { foldInstanceStatistics(cache, shape: shape, workspace: &workspace) }
    }

    /// The 16-bit forward for inference, keeping nothing: its output bit for
    /// bit. `output` may be `input`'s memory.
    /// - Throws: as the 16-bit forward.
    /// - Complexity: O(N·C·H·W); allocation-free once `workspace` is sized.
    @inlinable
    public func infer<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Storage>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try validateParameters()
        let channels = channelCount, layout = layout
        guard runningStatistics == .none else {
            return try BatchStatistics.infer(
                input, shape: shape,
                geometry: { shape, count throws(NormError) in
                    try Self.frozenGeometry(layout: layout, channels: channels, shape: shape, count: count)
                },
                gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
                epsilon: epsilon, backend: backend, activation: activation, output: output,
                workspace: &workspace)
        }
        try GroupStatistics.infer(
            input, shape: shape, channels: channels, groups: channels, layout: layout,
            affine: affine, gamma: gamma,
            beta: beta, epsilon: epsilon, backend: backend, activation: activation,
            output: output, workspace: &workspace)
    }

    /// The backward pass of a 16-bit forward, as ``GroupNorm``'s 16-bit
    /// backward with one channel per group, or after an inference forward
    /// with running statistics ``SpatialBatchNorm``'s with them as constants.
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
        let channels = channelCount, layout = layout
        guard cache.mode == .inference else {
            return try GroupStatistics.backward(
                outputGradient, cache: cache, inputGradient: inputGradient,
                gammaGradient: gammaGradient, betaGradient: betaGradient,
            residualGradient: residualGradient, channels: channels,
                groups: channels, layout: layout, origin: cacheOrigin, backend: backend,
                workspace: &workspace)
        }
        try BatchStatistics.backward(
            outputGradient, cache: cache, inputGradient: inputGradient,
            gammaGradient: gammaGradient, betaGradient: betaGradient,
            residualGradient: residualGradient, channels: channels,
            origin: cacheOrigin,
            geometry: { shape, count throws(NormError) in
                try Self.frozenGeometry(layout: layout, channels: channels, shape: shape, count: count)
            },
            backend: backend, workspace: &workspace)
    }
}
