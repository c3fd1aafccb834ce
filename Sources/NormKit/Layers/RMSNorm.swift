/// Root-mean-square normalization of an `(N, D)` input, or any `(..., D)` (or
/// `(..., normalizedShape)`), as PyTorch's `nn.RMSNorm` (Zhang and Sennrich
/// 2019): no mean subtraction,
/// `y = gamma_j * x / sqrt(mean_j(x²) + epsilon)`.
///
/// By default the layer has no shift (``Affine/scaleOnly``, as PyTorch's):
/// `beta` and its gradient are empty. `affine: .scaleAndShift` adds one,
/// `y = gamma_j * x / rms + beta_j`; `.none` drops `gamma` too. The cache's
/// `mean` is zeros and its `inverseStandardDeviation` is `1 / rms`.
///
/// ```swift
/// var rms = try RMSNorm<Float>(featureCount: 8)
/// let (y, cache) = try rms.forward(Tensor(randomNormal: [4, 8], seed: 3), mode: .training)
/// ```
///
/// Backward: with `xhat = x / rms` and `dxhat = gamma ∘ dy`,
/// `dx = (dxhat - xhat · mean_j(dxhat · xhat)) / rms`, `dgamma = Σ_i dy·xhat`
/// (and `dbeta = Σ_i dy` with a shift).
/// The BLAS backend takes the row sums of squares with `gemv(NoTrans, S_b, 1)`
/// on row blocks that stay in L2 (``LayerNorm``'s machinery without centring).
public struct RMSNorm<Scalar: BLASScalar>: RowNormalizationLayer, Equatable {
    /// The forward pass's saved input, per-sample `1/rms` and `gamma`.
    public typealias Cache = NormCache<Scalar>

    /// `D`, the number of features of a sample: the product of
    /// ``normalizedShape``.
    public let featureCount: Int
    /// The trailing dimensions normalized together (PyTorch's
    /// `normalized_shape`): `[featureCount]` unless made by
    /// ``init(normalizedShape:epsilon:affine:backend:)``. An input is `(..., normalizedShape)`:
    /// any leading dimensions, whose product is the number of samples.
    public private(set) var normalizedShape: [Int]
    /// Which of `gamma` and `beta` the layer has: ``Affine/scaleOnly``
    /// unless made with another.
    public let affine: Affine
    /// The scale, one per feature; starts at ones; empty for ``Affine/none``.
    public var gamma: [Scalar]
    /// The shift, one per feature, starting at zeros, for
    /// ``Affine/scaleAndShift`` only; empty otherwise (the default).
    public var beta: [Scalar]
    /// Added to the mean square before the square root; finite and positive.
    public var epsilon: Scalar
    /// The implementation used.
    public var backend: Backend

    /// Creates an RMS-norm layer with `gamma` ones (and, with
    /// ``Affine/scaleAndShift``, `beta` zeros).
    ///
    /// - Throws: ``NormError/invalidFeatureCount(_:)``, ``NormError/invalidEpsilon(_:)``.
    /// - Complexity: O(`featureCount`).
    public init(featureCount: Int, epsilon: Scalar = 1e-5, affine: Affine = .scaleOnly,
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

    /// Creates a RMS-norm layer with `gamma` ones that normalizes each sample over
    /// the trailing dimensions `normalizedShape` together (PyTorch's
    /// `RMSNorm(normalized_shape)`): `featureCount` is their product, and
    /// `gamma` and `beta` hold one value per element of a sample, row-major.
    ///
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for an empty
    ///   shape or a dimension below 1, ``NormError/invalidFeatureCount(_:)``,
    ///   ``NormError/invalidEpsilon(_:)``.
    /// - Complexity: O(product of `normalizedShape`).
    public init(normalizedShape: [Int], epsilon: Scalar = 1e-5, affine: Affine = .scaleOnly,
                backend: Backend = .blas) throws(NormError) {
        let count = try Validation.normalizedShape(normalizedShape)
        try self.init(featureCount: count, epsilon: epsilon, affine: affine, backend: backend)
        self.normalizedShape = normalizedShape
    }

    /// The origin its forward passes record in a cache: `.rmsNorm(featureCount:)`.
    @inlinable
    public var cacheOrigin: CacheOrigin { .rmsNorm(featureCount: featureCount) }

    /// What each row is normalized by: ``RowStatistics/rootMeanSquare``.
    @inlinable
    public static var rowStatistics: RowStatistics { .rootMeanSquare }
}
