/// Layer normalization of an `(N, D)` input, or any `(..., D)` (or
/// `(..., normalizedShape)`): each sample (row) is normalized with statistics
/// over its own `D` features (Ba, Kiros and Hinton 2016; cs231n's
/// `layernorm_forward`); the leading dimensions, `(batch, tokens)` say, are
/// the samples.
///
/// `xhat = (x - mean_i) / sqrt(var_i + epsilon)` with the row's mean and biased
/// variance, `y = gamma_j * xhat + beta_j`. There are no running statistics, and
/// training and inference compute the same thing.
///
/// ```swift
/// var ln = try LayerNorm<Double>(featureCount: 4)
/// let (y, cache) = try ln.forward(Tensor(randomNormal: [2, 4], seed: 7), mode: .training)
/// ```
///
/// The BLAS backend takes row sums as `gemv(NoTrans, X_b, 1)` on row blocks that
/// stay in L2 and normalizes each block while it is there: it reads `x` once and
/// writes `y` once (8 bytes per Float element).
public struct LayerNorm<Scalar: BLASScalar>: ResidualNormalizationLayer, Equatable {
    /// The forward pass's saved input, per-sample statistics and `gamma`.
    public typealias Cache = NormCache<Scalar>

    /// `D`, the number of features of a sample: the product of
    /// ``normalizedShape``.
    public let featureCount: Int
    /// The trailing dimensions normalized together (PyTorch's
    /// `normalized_shape`): `[featureCount]` unless made by
    /// ``init(normalizedShape:epsilon:affine:backend:)``. An input is `(..., normalizedShape)`:
    /// any leading dimensions, whose product is the number of samples.
    public private(set) var normalizedShape: [Int]
    /// Which of `gamma` and `beta` the layer has (PyTorch's
    /// `elementwise_affine` and `bias`).
    public let affine: Affine
    /// The scale, one per feature; starts at ones; empty without one
    /// (``Affine/none``).
    public var gamma: [Scalar]
    /// The shift, one per feature; starts at zeros; empty without one
    /// (``Affine/scaleOnly``, ``Affine/none``).
    public var beta: [Scalar]
    /// Added to the variance before the square root; finite and positive.
    public var epsilon: Scalar
    /// The implementation used.
    public var backend: Backend

    /// Creates a layer-norm layer with `gamma` ones and `beta` zeros (those
    /// that `affine` gives it).
    ///
    /// - Throws: ``NormError/invalidFeatureCount(_:)``, ``NormError/invalidEpsilon(_:)``.
    /// - Complexity: O(`featureCount`).
    public init(featureCount: Int, epsilon: Scalar = 1e-5, affine: Affine = .scaleAndShift,
                backend: Backend = .blas) throws(NormError) {
        try Validation.featureCount(featureCount)
        try Validation.epsilon(epsilon)
        self.featureCount = featureCount
        self.normalizedShape = [featureCount]
        self.affine = affine
        self.gamma = Array(repeating: 1, count: affine.scaleCount(featureCount))
        self.beta = Array(repeating: 0, count: affine.shiftCount(featureCount))
        self.epsilon = epsilon
        self.backend = backend
    }

    /// Creates a layer-norm layer with `gamma` ones and `beta` zeros that normalizes each sample over
    /// the trailing dimensions `normalizedShape` together (PyTorch's
    /// `LayerNorm(normalized_shape)`): `featureCount` is their product, and
    /// `gamma` and `beta` hold one value per element of a sample, row-major.
    ///
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for an empty
    ///   shape or a dimension below 1, ``NormError/invalidFeatureCount(_:)``,
    ///   ``NormError/invalidEpsilon(_:)``.
    /// - Complexity: O(product of `normalizedShape`).
    public init(normalizedShape: [Int], epsilon: Scalar = 1e-5, affine: Affine = .scaleAndShift,
                backend: Backend = .blas) throws(NormError) {
        let count = try Validation.normalizedShape(normalizedShape)
        try self.init(featureCount: count, epsilon: epsilon, affine: affine, backend: backend)
        self.normalizedShape = normalizedShape
    }

    // MARK: Forward

    /// The origin its forward passes record in a cache: `.layerNorm(featureCount:)`.
    @inlinable
    public var cacheOrigin: CacheOrigin { .layerNorm(featureCount: featureCount) }

    /// Normalizes each row of an `(N, D)` input; an input `(..., normalizedShape)`
    /// is the matrix of its leading dimensions' product of rows.
    ///
    /// Both modes compute the same thing, so both apply the training checks: a
    /// row needs at least two features (`D >= 2`) and finite statistics.
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for a shape that
    ///   does not end in ``normalizedShape`` or has no rows,
    ///   ``NormError/insufficientValues(valuesPerStatistic:)`` for `D < 2`,
    ///   ``NormError/nonFiniteStatistics(index:)`` naming the first sample whose
    ///   mean or variance is not finite, and the hyperparameter errors.
    /// - Complexity: O(N·D).
    ///
    /// Over borrowed memory; the `Tensor` and `Span` entry points and the value
    /// API call this. The cache copies the input; `cache` and `workspace` are
    /// sized on first use and reused afterwards (then the call allocates
    /// nothing); after a throw they hold unspecified values.
    @inlinable
    public mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, shape: [Int], mode: Mode,
        into output: UnsafeMutableBufferPointer<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try validateParameters()
        try RowNormalization.forward(
            input, shape: shape, mode: mode, columns: featureCount, trailing: normalizedShape, centred: true, gamma: gamma,
            beta: beta, epsilon: epsilon, backend: backend, output: output, cache: &cache,
            workspace: &workspace)
    }

    // MARK: Backward

    /// Normalizes `s = input + residual` (a transformer block's
    /// `norm(x + residual)`), writing `s` to `sum` in the same pass; see
    /// ``ResidualNormalizationLayer``.
    /// - Throws: as `forward(_:shape:mode:into:cache:workspace:)`, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming
    ///   `residual` or `sum`.
    /// - Complexity: O(N·D).
    @inlinable
    public mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, residual: UnsafeBufferPointer<Scalar>,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Scalar>,
        sum: UnsafeMutableBufferPointer<Scalar>?, cache: inout Cache,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try validateParameters()
        try RowNormalization.forward(
            input, shape: shape, mode: mode, columns: featureCount, trailing: normalizedShape, centred: true, gamma: gamma,
            beta: beta, epsilon: epsilon, backend: backend, output: output,
            residual: (residual, sum), cache: &cache, workspace: &workspace)
    }

    /// Normalizes each row for inference, keeping nothing: the forward's
    /// output bit for bit. `output` may be `input`'s memory.
    /// - Throws: as `forward(_:shape:mode:into:cache:workspace:)`.
    /// - Complexity: O(N·D); allocation-free once `workspace` is sized.
    @inlinable
    public func infer(
        _ input: UnsafeBufferPointer<Scalar>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try validateParameters()
        try RowNormalization.infer(
            input, shape: shape, columns: featureCount, trailing: normalizedShape, centred: true, gamma: gamma, beta: beta,
            epsilon: epsilon, backend: backend, output: output, workspace: &workspace)
    }

    /// Checks the public `var`s the forward passes depend on.
    @inlinable
    func validateParameters() throws(NormError) {
        try Validation.epsilon(epsilon)
        try Validation.affineParameters(affine, gamma: gamma, beta: beta, count: featureCount)
    }

    /// The backward pass (cs231n's `layernorm_backward`):
    /// `dx = invstd_i · (dxhat - mean_j(dxhat) - xhat · mean_j(dxhat·xhat))` with
    /// `dxhat = gamma ∘ dy`; `dgamma = Σ_i dy·xhat`; `dbeta = Σ_i dy`.
    ///
    /// Row terms are `gemv(NoTrans, ·, gamma)`, column sums `gemv(Trans, ·, 1)`;
    /// a parameter the layer does not have (``affine``) takes an empty
    /// gradient buffer and its column sum is not computed.
    /// - Throws: ``NormError/bufferCountMismatch(name:expected:actual:)``, or
    ///   ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer, size, layout or group count, or from a forward pass
    ///   that threw.
    ///
    /// Over borrowed memory; the `Tensor` and `Span` entry points and the value
    /// API call this.
    @inlinable
    public func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, cache: Cache,
        inputGradient: UnsafeMutableBufferPointer<Scalar>,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try backward(outputGradient, sumGradient: nil, cache: cache, inputGradient: inputGradient,
                     gammaGradient: gammaGradient, betaGradient: betaGradient,
                     workspace: &workspace)
    }

    /// The backward pass of a residual forward: the plain backward's
    /// `dx` plus `sumGradient` (the gradient reaching `sum` from later
    /// blocks), added while each block of `dx` is in L2.
    /// - Throws: as the `Float` `backward(_:cache:inputGradient:gammaGradient:betaGradient:workspace:)`,
    ///   and ``NormError/bufferCountMismatch(name:expected:actual:)`` naming `sumGradient`.
    /// - Complexity: O(N·D).
    @inlinable
    public func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, sumGradient: UnsafeBufferPointer<Scalar>?,
        cache: Cache, inputGradient: UnsafeMutableBufferPointer<Scalar>,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        let buffers = GradientBuffers(dy: outputGradient, dx: inputGradient, dgamma: gammaGradient,
                                      dbeta: betaGradient)
        try RowNormalization.backward(
            buffers, sumGradient: sumGradient, cache: cache, columns: featureCount, trailing: normalizedShape,
            centred: true, backend: backend, workspace: &workspace)
    }
}
