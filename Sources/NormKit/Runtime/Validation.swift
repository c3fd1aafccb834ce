/// The checks every public entry point runs before it computes (the
/// contract in the Architecture article).
@usableFromInline
enum Validation {
    /// A feature or channel count must be positive and fit OpenBLAS.
    @inlinable
    static func featureCount(_ count: Int) throws(NormError) {
        guard count > 0 else { throw .invalidFeatureCount(count) }
        guard count <= maximumBLASSize else { throw .sizeTooLarge(count) }
    }

    /// `epsilon` must be finite and greater than zero.
    @inlinable
    static func epsilon<Scalar: BLASScalar>(_ value: Scalar) throws(NormError) {
        guard value.isFinite, value > 0 else { throw .invalidEpsilon(Double(value)) }
    }

    /// `momentum` must lie in `[0, 1]` (NaN does not).
    @inlinable
    static func momentum<Scalar: BLASScalar>(_ value: Scalar) throws(NormError) {
        guard value >= 0, value <= 1 else { throw .invalidMomentum(Double(value)) }
    }

    /// A per-feature vector must have exactly `expected` elements.
    @inlinable
    static func count(_ name: String, _ actual: Int, expected: Int) throws(NormError) {
        guard actual == expected else {
            throw .parameterCountMismatch(name: name, expected: expected, actual: actual)
        }
    }

    /// Every value of a parameter or statistics vector must be finite (what a
    /// decoded layer holds).
    @inlinable
    static func finite<Scalar: BLASScalar>(_ name: String, _ values: [Scalar]) throws(NormError) {
        guard values.allSatisfy(\.isFinite) else {
            throw .unsupportedParameter(name: name, expected: "finite values")
        }
    }

    /// An `(N, D)` input with `D == columns` and `N >= minimumRows` (1; 0 for
    /// a shard of a synchronized layer) whose size fits OpenBLAS. Returns `N`.
    @inlinable
    static func matrixRows<Scalar: BLASScalar>(
        _ input: Tensor<Scalar>, columns: Int, minimumRows: Int = 1
    ) throws(NormError) -> Int {
        try matrixRows(shape: input.shape, count: input.count, columns: columns,
                       minimumRows: minimumRows)
    }

    /// ``matrixRows(_:columns:minimumRows:)`` for a shape of `count` scalars.
    @inlinable
    static func matrixRows(shape: [Int], count: Int, columns: Int, minimumRows: Int = 1)
        throws(NormError) -> Int {
        guard shape.count == 2, shape[1] == columns, shape[0] >= minimumRows else {
            throw .invalidShape(expected: "(N >= \(minimumRows), \(columns))", actual: shape)
        }
        guard count <= maximumBLASSize else { throw .sizeTooLarge(count) }
        return shape[0]
    }

    /// The rows of an input `(..., trailing)`: any leading dimensions (none
    /// included) whose product is the number of rows, at least one, then
    /// exactly `trailing` (a layer's normalized shape, PyTorch's
    /// `normalized_shape`), in a size OpenBLAS takes.
    @inlinable
    static func rows(shape: [Int], count: Int, trailing: [Int]) throws(NormError) -> Int {
        let leading = shape.count - trailing.count
        var matches = leading >= 0
        var rows = 1
        if matches {
            for k in trailing.indices where shape[leading + k] != trailing[k] { matches = false }
            // Leading extents are non-negative (the shape's count was checked).
            for k in 0..<leading {
                let (product, overflow) = rows.multipliedReportingOverflow(by: shape[k])
                rows = overflow ? 0 : product
            }
        }
        guard matches, rows >= 1 else {
            let dimensions = trailing.map(String.init).joined(separator: ", ")
            throw .invalidShape(expected: "(..., \(dimensions)) with at least one row", actual: shape)
        }
        guard count <= maximumBLASSize else { throw .sizeTooLarge(count) }
        return rows
    }

    /// A normalized shape: at least one dimension, each at least 1, whose
    /// product (returned) fits in `Int`.
    @inlinable
    static func normalizedShape(_ shape: [Int]) throws(NormError) -> Int {
        guard !shape.isEmpty, shape.allSatisfy({ $0 >= 1 }), let count = checkedProduct(shape) else {
            throw .invalidShape(expected: "a normalized shape of dimensions >= 1", actual: shape)
        }
        return count
    }

    /// Training statistics need at least two values each.
    @inlinable
    static func valuesPerStatistic(_ count: Int) throws(NormError) {
        guard count >= 2 else { throw .insufficientValues(valuesPerStatistic: count) }
    }

    /// A caller's buffer must hold exactly `expected` scalars.
    @inlinable
    static func buffer(_ name: String, _ actual: Int, expected: Int) throws(NormError) {
        guard actual == expected else {
            throw .bufferCountMismatch(name: name, expected: expected, actual: actual)
        }
    }

    /// The parameter gradients' buffers of a backward through `cache`: the
    /// `parameters` scalars of each parameter its forward's layer has, and
    /// empty for an absent one (``Affine``, ``NormCache/affine``).
    @inlinable
    static func parameterGradients<Scalar: BLASScalar>(
        _ dgamma: Int, _ dbeta: Int, cache: NormCache<Scalar>, parameters: Int
    ) throws(NormError) {
        try buffer("gammaGradient", dgamma, expected: cache.affine.scaleCount(parameters))
        try buffer("betaGradient", dbeta, expected: cache.affine.shiftCount(parameters))
    }

    /// `gamma` and `beta` hold what `affine` says for `count` features or
    /// channels: `count` values each, none for an absent parameter.
    @inlinable
    static func affineParameters<Scalar: BLASScalar>(
        _ affine: Affine, gamma: [Scalar], beta: [Scalar], count: Int
    ) throws(NormError) {
        try Validation.count("gamma", gamma.count, expected: affine.scaleCount(count))
        try Validation.count("beta", beta.count, expected: affine.shiftCount(count))
    }

    /// The buffers of a backward pass: `dy` and `dx` the cached input's
    /// count, the parameter gradients as ``parameterGradients(_:_:cache:parameters:)``.
    @inlinable
    static func gradientBuffers<Scalar: BLASScalar>(
        _ b: GradientBuffers<Scalar>, cache: NormCache<Scalar>, parameters: Int
    ) throws(NormError) {
        try buffer("outputGradient", b.dy.count, expected: cache.input.count)
        try buffer("inputGradient", b.dx.count, expected: cache.input.count)
        try parameterGradients(b.dgamma.count, b.dbeta.count, cache: cache, parameters: parameters)
    }

    /// The buffers of an `infer` call: `input` and `output` hold `product(shape)` scalars.
    /// - Returns: that count.
    @inlinable
    static func inferBuffers<Element>(
        _ x: UnsafeBufferPointer<Element>, _ y: UnsafeMutableBufferPointer<Element>, shape: [Int]
    ) throws(NormError) -> Int {
        let count = try Tensor<Float>.elementCount(of: shape)
        try buffer("input", x.count, expected: count)
        try buffer("output", y.count, expected: count)
        return count
    }

    /// Throws ``NormError/nonFiniteStatistics(index:)`` when a pass reported
    /// `failure`: the first row (or channel) whose statistics are not finite.
    @inlinable
    static func statistics(failure: Int?) throws(NormError) {
        if let index = failure { throw .nonFiniteStatistics(index: index) }
    }

    /// A residual buffer, when there is one, holds the input's count.
    @inlinable
    static func residual<Element>(_ r: UnsafeBufferPointer<Element>?, count: Int)
        throws(NormError) {
        if let r { try buffer("residual", r.count, expected: count) }
    }

    /// A residual (or a `sum`'s gradient) must have the input's shape.
    @inlinable
    static func residualShape(_ actual: [Int], expected: [Int], name: String = "residual")
        throws(NormError) {
        guard actual == expected else {
            throw .invalidShape(expected: "\(expected) (\(name) must have the input's shape)",
                                actual: actual)
        }
    }

    /// The output gradient must have the shape the forward pass saw.
    @inlinable
    static func gradientShape(_ actual: [Int], expected: [Int]) throws(NormError) {
        guard actual == expected else {
            throw .gradientShapeMismatch(expected: expected, actual: actual)
        }
    }

    /// A count of tracked batches that one more batch cannot overflow.
    @inlinable
    static func batchesTracked(_ count: Int) throws(NormError) {
        guard count >= 0, count < Int.max else {
            throw .unsupportedParameter(name: "batchesTracked", expected: "from 0 to Int.max - 1, got \(count)")
        }
    }

    /// The checks of a layer with batch and running statistics: `epsilon`,
    /// `momentum`, one `gamma`, `beta` and running statistic per channel, and
    /// `batchesTracked`.
    @inlinable
    static func batchParameters<Scalar: BLASScalar>(
        count: Int, affine: Affine, gamma: [Scalar], beta: [Scalar], runningMean: [Scalar],
        runningVariance: [Scalar], epsilon: Scalar, momentum: Scalar, batchesTracked: Int
    ) throws(NormError) {
        try Validation.epsilon(epsilon)
        try Validation.momentum(momentum)
        try affineParameters(affine, gamma: gamma, beta: beta, count: count)
        try Validation.count("runningMean", runningMean.count, expected: count)
        try Validation.count("runningVariance", runningVariance.count, expected: count)
        try Validation.batchesTracked(batchesTracked)
    }

    /// A channels-first `(N, C, L)`, `(N, C, H, W)` or `(N, C, D, H, W)`
    /// input, or channels-last `(N, L, C)`, `(N, H, W, C)` or
    /// `(N, D, H, W, C)`, with `channels` channels, at least `minimumBatch`
    /// samples (1; 0 for a shard of a synchronized layer) and no other empty
    /// dimension, whose size fits OpenBLAS. Returns the samples and the
    /// spatial extent (the product of the 1 to 3 spatial dimensions).
    @inlinable
    static func spatialShape(
        shape: [Int], count: Int, channels: Int, channelsLast: Bool, minimumBatch: Int = 1
    ) throws(NormError) -> (samples: Int, spatial: Int) {
        let rank = shape.count
        guard (3...5).contains(rank), shape[channelsLast ? rank - 1 : 1] == channels,
              shape[0] >= minimumBatch, shape.dropFirst().allSatisfy({ $0 >= 1 }) else {
            let c = "\(channels)"
            throw .invalidShape(
                expected: channelsLast ? "(N, L, \(c)), (N, H, W, \(c)) or (N, D, H, W, \(c))"
                                       : "(N, \(c), L), (N, \(c), H, W) or (N, \(c), D, H, W)",
                actual: shape)
        }
        guard count <= maximumBLASSize else { throw .sizeTooLarge(count) }
        // A sample's extents must fit on their own too: with no samples the
        // count is 0 whatever they are.
        var sample = 1
        for extent in shape.dropFirst() {
            let (product, overflow) = sample.multipliedReportingOverflow(by: extent)
            sample = overflow ? Int.max : product
        }
        guard sample <= maximumBLASSize else { throw .sizeTooLarge(sample) }
        return (shape[0], sample / channels)
    }

    /// A cache filled by a forward pass of the layer `origin`, its input stored
    /// at `precision` (the `Scalar` itself unless told), the first check of every
    /// backward pass.
    @inlinable
    static func origin<Scalar: BLASScalar>(
        _ cache: NormCache<Scalar>, expected origin: CacheOrigin,
        precision expectedPrecision: StoragePrecision = .float
    ) throws(NormError) {
        guard cache.origin == origin else {
            throw .cacheMismatch(expected: origin.description, actual: cache.origin.description)
        }
        try precision(cache, expected: expectedPrecision)
    }

    /// A cache filled at the precision a backward pass reads: a 16-bit
    /// forward's cache given to a `Scalar` backward, or the reverse, or one
    /// 16-bit type's cache to the other's backward, is a mismatch.
    @inlinable
    static func precision<Scalar: BLASScalar>(
        _ cache: NormCache<Scalar>, expected: StoragePrecision
    ) throws(NormError) {
        guard cache.precision == expected else {
            throw .cacheMismatch(expected: "a cache filled at \(expected) storage",
                                 actual: "a cache filled at \(cache.precision) storage")
        }
    }

    /// A cache whose vectors hold `parameters` scale parameters and
    /// `statistics` normalized sets (after ``origin(_:expected:)``, a check
    /// that the cache was not altered).
    @inlinable
    static func cache<Scalar: BLASScalar>(
        _ cache: NormCache<Scalar>, parameters: Int, statistics: Int
    ) throws(NormError) {
        try count("cache.mean", cache.mean.count, expected: statistics)
        try count("cache.inverseStandardDeviation", cache.inverseStandardDeviation.count,
                  expected: statistics)
        try count("cache.gamma", cache.gamma.count, expected: parameters)
    }

    /// The product of non-negative `extents`, or `nil` when it overflows `Int`
    /// (0 when any extent is 0).
    @usableFromInline
    static func checkedProduct(_ extents: [Int]) -> Int? {
        if extents.contains(0) { return 0 }
        var count = 1
        for extent in extents {
            let (product, overflow) = count.multipliedReportingOverflow(by: extent)
            if overflow { return nil }
            count = product
        }
        return count
    }
}
