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
/// Backward (cs231n's `layernorm_backward`):
/// `dx = invstd_i · (dxhat - mean_j(dxhat) - xhat · mean_j(dxhat·xhat))` with
/// `dxhat = gamma ∘ dy`; `dgamma = Σ_i dy·xhat`; `dbeta = Σ_i dy`. The passes
/// are ``RowNormalizationLayer``'s.
///
/// The BLAS backend takes row sums as `gemv(NoTrans, X_b, 1)` on row blocks that
/// stay in L2 and normalizes each block while it is there: it reads `x` once and
/// writes `y` once (8 bytes per Float element).
public struct LayerNorm<Scalar: BLASScalar>: RowNormalizationLayer, Equatable {
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

    /// The origin its forward passes record in a cache: `.layerNorm(featureCount:)`.
    @inlinable
    public var cacheOrigin: CacheOrigin { .layerNorm(featureCount: featureCount) }

    /// What each row is normalized by: ``RowStatistics/meanAndVariance``.
    @inlinable
    public static var rowStatistics: RowStatistics { .meanAndVariance }
}
