/// What a row layer normalizes each row `x_i` (its `D` features) by: the one
/// difference between ``LayerNorm`` and ``RMSNorm``.
public enum RowStatistics: String, Sendable, Hashable, Codable {
    /// The row's mean and biased variance,
    /// `xhat = (x - mean_i) / sqrt(var_i + epsilon)` (``LayerNorm``).
    case meanAndVariance
    /// The row's root mean square, `xhat = x / sqrt(mean_j(x²) + epsilon)`,
    /// no mean subtracted (``RMSNorm``).
    case rootMeanSquare

    /// Whether the row's mean is subtracted.
    @inlinable var centred: Bool { self == .meanAndVariance }
}

/// A layer that normalizes each row of an input `(..., normalizedShape)` over
/// its own `D` features (the product of ``normalizedShape``): ``LayerNorm``
/// and ``RMSNorm``. Both modes compute the same thing; there are no running
/// statistics. The layers' passes, in `Float`/`Double` and (where `Scalar` is
/// `Float`) in 16 bits, with and without a residual, are this protocol's
/// extension, written once; a layer is its parameters and ``rowStatistics``.
///
/// The BLAS backend takes row sums (`gemv(NoTrans, X_b, 1)`, or `sdot` per
/// row when a row is long) on row blocks that stay in L2 and normalizes each
/// block while it is there: it reads `x` once and writes `y` once. Backward's
/// row terms are `sdot(·, gamma)` per row while the row is in L1
/// (`gemv(NoTrans, ·, gamma)` per block when a row is short) and its column
/// sums `gemv(Trans, ·, 1)` per block; a parameter the layer does not have (``NormalizationLayer/affine``)
/// takes an empty gradient buffer and its column sum is not computed.
public protocol RowNormalizationLayer<Scalar>: ResidualNormalizationLayer where Cache == NormCache<Scalar> {
    /// `D`, the features of a row: the product of ``normalizedShape``.
    var featureCount: Int { get }
    /// The trailing dimensions each row spans (`[D]` unless made with more).
    var normalizedShape: [Int] { get }
    /// Added to the variance (or the mean square) before the square root.
    var epsilon: Scalar { get }
    /// What each row is normalized by.
    static var rowStatistics: RowStatistics { get }
}

extension RowNormalizationLayer {
    /// Checks the public `var`s the forward passes depend on.
    @inlinable
    func validateParameters() throws(NormError) {
        try Validation.epsilon(epsilon)
        try Validation.affineParameters(affine, gamma: gamma, beta: beta, count: featureCount)
    }

    /// Normalizes each row of `input` (an `(N, D)` matrix, or any
    /// `(..., normalizedShape)`: the leading dimensions' product is the rows)
    /// in borrowed memory: `y = gamma_j · xhat + beta_j` with ``rowStatistics``'
    /// `xhat`. The `Tensor` and `Span` entry points and the value API call this.
    ///
    /// Both modes compute the same thing, so both apply the training checks.
    /// The cache copies the input; `cache` and `workspace` are sized on first
    /// use and reused afterwards (then the call allocates nothing); after a
    /// throw they hold unspecified values.
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for a shape that
    ///   does not end in ``normalizedShape`` or has no rows;
    ///   ``NormError/insufficientValues(valuesPerStatistic:)`` for `D < 2`
    ///   with ``RowStatistics/meanAndVariance`` (a mean square needs one
    ///   value); ``NormError/nonFiniteStatistics(index:)`` naming the first
    ///   row whose statistics are not finite; the hyperparameter errors and
    ///   ``NormError/parameterCountMismatch(name:expected:actual:)`` for a
    ///   `gamma` or `beta` of another count than ``NormalizationLayer/affine`` says.
    /// - Complexity: O(N·D).
    @inlinable
    public mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, shape: [Int], mode: Mode,
        into output: UnsafeMutableBufferPointer<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try validateParameters()
        try RowNormalization.forward(
            input, shape: shape, mode: mode, columns: featureCount, trailing: normalizedShape,
            rowStatistics: Self.rowStatistics, gamma: gamma, beta: beta, epsilon: epsilon, backend: backend,
            output: output, cache: &cache, workspace: &workspace)
    }

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
            input, shape: shape, mode: mode, columns: featureCount, trailing: normalizedShape,
            rowStatistics: Self.rowStatistics, gamma: gamma, beta: beta, epsilon: epsilon, backend: backend,
            output: output, residual: (residual, sum), cache: &cache, workspace: &workspace)
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
            input, shape: shape, columns: featureCount, trailing: normalizedShape, rowStatistics: Self.rowStatistics,
            gamma: gamma, beta: beta, epsilon: epsilon, backend: backend, output: output,
            workspace: &workspace)
    }

    /// The backward pass over borrowed memory (the `Tensor` and `Span` entry
    /// points and the value API call this); the formulas are the layer's
    /// (``LayerNorm``: cs231n's `layernorm_backward`).
    /// - Throws: ``NormError/bufferCountMismatch(name:expected:actual:)``, or
    ///   ``NormError/cacheMismatch(expected:actual:)`` for a cache from
    ///   another layer or size, or from a forward pass that threw.
    /// - Complexity: O(N·D).
    @inlinable
    public func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, cache: Cache,
        inputGradient: UnsafeMutableBufferPointer<Scalar>,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try backward(outputGradient, sumGradient: nil, cache: cache, inputGradient: inputGradient,
                     gammaGradient: gammaGradient, betaGradient: betaGradient, workspace: &workspace)
    }

    /// The backward pass of a residual forward: the plain backward's `dx`
    /// plus `sumGradient` (the gradient reaching `sum` from later blocks),
    /// added while each block of `dx` is in L2.
    /// - Throws: as `backward(_:cache:inputGradient:gammaGradient:betaGradient:workspace:)`,
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
            buffers, sumGradient: sumGradient, cache: cache, columns: featureCount,
            trailing: normalizedShape, rowStatistics: Self.rowStatistics, backend: backend, workspace: &workspace)
    }
}

// MARK: 16-bit storage

extension RowNormalizationLayer where Scalar == Float {
    /// Normalizes each row of an input stored in 16 bits (`Float16` or
    /// ``BFloat16``) into `output` of the same type: the `Float` formulas,
    /// computed in `Float` from the widened input and rounded once to
    /// `Storage` (nearest even).
    ///
    /// The statistics are `Float` sums over `Float` blocks that a C pass widens
    /// from the input in L2-sized pieces (`sdot`/`sgemv` as the `Float`
    /// forward), so an input near the 16-bit range keeps finite statistics. A
    /// `Float16` output beyond ±65504 rounds to ±infinity, as IEEE 754 says.
    /// The cache keeps the input at 2 bytes an element.
    /// - Throws: as the `Float` entry point, and
    ///   ``NormError/unsupportedParameter(name:expected:)`` for a storage
    ///   type other than `Float16` and ``BFloat16``.
    /// - Complexity: O(N·D).
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int], mode: Mode,
        into output: UnsafeMutableBufferPointer<Storage>,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try validateParameters()
        try RowNormalization.forward(
            input, shape: shape, mode: mode, columns: featureCount, trailing: normalizedShape,
            rowStatistics: Self.rowStatistics, gamma: gamma, beta: beta, epsilon: epsilon, backend: backend,
            output: output, cache: &cache, workspace: &workspace)
    }

    /// The 16-bit forward for inference, keeping nothing: its output bit for
    /// bit. `output` may be `input`'s memory.
    /// - Throws: as the 16-bit `forward`.
    /// - Complexity: O(N·D); allocation-free once `workspace` is sized.
    @inlinable
    public func infer<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Storage>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try validateParameters()
        try RowNormalization.infer(
            input, shape: shape, columns: featureCount, trailing: normalizedShape, rowStatistics: Self.rowStatistics,
            gamma: gamma, beta: beta, epsilon: epsilon, backend: backend, output: output,
            workspace: &workspace)
    }

    /// The backward pass of a 16-bit forward: the `Float` formulas on `Float`
    /// blocks widened from `outputGradient` and the cached input,
    /// `inputGradient` rounded once to `Storage`, `gammaGradient` and
    /// `betaGradient` (empty without a shift) in `Float`.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer or filled at another precision (a `Float`
    ///   forward's, or the other 16-bit type's),
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``.
    /// - Complexity: O(N·D).
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient: UnsafeMutableBufferPointer<Storage>,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try RowNormalization.backward(
            outputGradient, cache: cache, inputGradient: inputGradient, gammaGradient: gammaGradient,
            betaGradient: betaGradient, columns: featureCount, trailing: normalizedShape,
            rowStatistics: Self.rowStatistics, backend: backend, workspace: &workspace)
    }

    /// Normalizes `s = input + residual`, 16-bit values rounded once from
    /// their `Float` sum, writing `s` to `sum`; see
    /// ``ReducedPrecisionResidualLayer``.
    /// - Throws: as the 16-bit forward, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming
    ///   `residual` or `sum`.
    /// - Complexity: O(N·D).
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, residual: UnsafeBufferPointer<Storage>,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Storage>,
        sum: UnsafeMutableBufferPointer<Storage>?, cache: inout NormCache<Float>,
        workspace: inout Workspace<Float>
    ) throws(NormError) {
        try validateParameters()
        try RowNormalization.forward(
            input, shape: shape, mode: mode, columns: featureCount, trailing: normalizedShape,
            rowStatistics: Self.rowStatistics, gamma: gamma, beta: beta, epsilon: epsilon, backend: backend,
            output: output, residual: (residual, sum), cache: &cache, workspace: &workspace)
    }

    /// The 16-bit backward with the sum's gradient added before the one
    /// rounding; see ``ReducedPrecisionResidualLayer``.
    /// - Throws: as the 16-bit backward, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming `sumGradient`.
    /// - Complexity: O(N·D).
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, sumGradient: UnsafeBufferPointer<Storage>?,
        cache: NormCache<Float>, inputGradient: UnsafeMutableBufferPointer<Storage>,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try RowNormalization.backward(
            outputGradient, sumGradient: sumGradient, cache: cache, inputGradient: inputGradient,
            gammaGradient: gammaGradient, betaGradient: betaGradient, columns: featureCount,
            trailing: normalizedShape, rowStatistics: Self.rowStatistics, backend: backend, workspace: &workspace)
    }
}

extension LayerNorm: ReducedPrecisionLayer, ReducedPrecisionResidualLayer where Scalar == Float {}
extension RMSNorm: ReducedPrecisionLayer, ReducedPrecisionResidualLayer where Scalar == Float {}
