/// Instance normalization of `(N, C, H, W)` images, or `(N, C, L)` and
/// `(N, C, D, H, W)` inputs (Ulyanov et al. 2016): each
/// channel of each sample is normalized over its own `H·W` values; `gamma` and
/// `beta` are per channel. It is ``GroupNorm`` with one channel per group, as
/// its own type.
///
/// ```swift
/// var instance = try InstanceNorm<Double>(channelCount: 3)
/// let (y, _) = try instance.forward(Tensor(randomNormal: [2, 3, 4, 4], seed: 5), mode: .training)
/// ```
///
/// No running statistics (PyTorch's `track_running_stats=False`); both modes
/// compute the same thing and need `H·W >= 2`.
public struct InstanceNorm<Scalar: BLASScalar>: ActivatedNormalizationLayer, Equatable {
    /// The forward pass's saved input, per-(sample, channel) statistics and `gamma`.
    public typealias Cache = NormCache<Scalar>

    /// `C`, the number of channels.
    public let channelCount: Int
    /// The scale, one per channel; starts at ones.
    public var gamma: [Scalar]
    /// The shift, one per channel; starts at zeros.
    public var beta: [Scalar]
    /// Added to the variance before the square root; finite and positive.
    public var epsilon: Scalar
    /// Applied to `gamma·xhat + beta` (plus a residual) in the output pass.
    public var activation: FusedActivation
    /// The implementation used.
    public var backend: Backend

    /// Creates an instance-norm layer with `gamma` ones and `beta` zeros.
    ///
    /// - Throws: ``NormError/invalidFeatureCount(_:)``, ``NormError/invalidEpsilon(_:)``.
    public init(channelCount: Int, epsilon: Scalar = 1e-5, activation: FusedActivation = .none,
                backend: Backend = .blas) throws(NormError) {
        try Validation.featureCount(channelCount)
        try Validation.epsilon(epsilon)
        self.channelCount = channelCount
        self.gamma = Array(repeating: 1, count: channelCount)
        self.beta = Array(repeating: 0, count: channelCount)
        self.epsilon = epsilon
        self.activation = activation
        self.backend = backend
    }

    /// The origin its forward passes record in a cache: `.instanceNorm(channelCount:)`.
    @inlinable
    public var cacheOrigin: CacheOrigin { .instanceNorm(channelCount: channelCount) }

    /// Normalizes each (sample, channel) slab; the errors are ``GroupNorm``'s.
    ///
    /// Over borrowed memory; the `Tensor` and `Span` entry points and the value
    /// API call this. The cache copies the input; `cache` and `workspace` are
    /// sized on first use and reused afterwards.
    @inlinable
    public mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, residual: UnsafeBufferPointer<Scalar>?,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try GroupStatistics.forward(
            input, shape: shape, mode: mode, channels: channelCount, groups: channelCount,
            origin: cacheOrigin, gamma: gamma, beta: beta, epsilon: epsilon, backend: backend,
            output: output, residual: residual, activation: activation, cache: &cache,
            workspace: &workspace)
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
        try GroupStatistics.infer(
            input, shape: shape, channels: channelCount, groups: channelCount, gamma: gamma,
            beta: beta, epsilon: epsilon, backend: backend, activation: activation,
            output: output, workspace: &workspace)
    }

    /// The backward pass, ``GroupNorm``'s with one channel per group.
    ///
    /// Over borrowed memory; the `Tensor` and `Span` entry points and the value
    /// API call this.
    @inlinable
    public func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, cache: Cache,
        inputGradient: UnsafeMutableBufferPointer<Scalar>,
        residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try GroupStatistics.backward(
            GradientBuffers(dy: outputGradient, dx: inputGradient, dgamma: gammaGradient,
                            dbeta: betaGradient),
            residualGradient: residualGradient, cache: cache, channels: channelCount,
            groups: channelCount, origin: cacheOrigin, backend: backend, workspace: &workspace)
    }
}
