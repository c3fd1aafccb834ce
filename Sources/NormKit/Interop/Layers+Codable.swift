// Every layer is Codable: its hyperparameters, gamma and beta, and running
// statistics, under the names of its properties. Decoding goes through the
// layer's validating initializer and re-checks what `forward` checks, so a
// decoded layer is one that `init` could have made; anything else is a
// `DecodingError.dataCorrupted` whose description is the `NormError`'s.

/// Runs `make`, which builds a layer from decoded values, and turns its
/// `NormError` into `DecodingError.dataCorrupted`.
private func validated<Layer>(
    _ codingPath: [any CodingKey], _ make: () throws(NormError) -> Layer
) throws -> Layer {
    do {
        return try make()
    } catch {
        throw DecodingError.dataCorrupted(.init(codingPath: codingPath,
                                                debugDescription: error.description, underlyingError: error))
    }
}

/// The checks a decoded layer's `gamma` and `beta` pass, before the layer is
/// built (so a count that the arrays do not back allocates nothing): their
/// lengths (as `forward` checks, by `affine`), and finite values.
private func checkAffine<Scalar: BLASScalar>(
    gamma: [Scalar], beta: [Scalar], affine: Affine, count: Int
) throws(NormError) {
    try Validation.featureCount(count)
    try Validation.affineParameters(affine, gamma: gamma, beta: beta, count: count)
    try Validation.finite("gamma", gamma)
    try Validation.finite("beta", beta)
}

/// The layers with running statistics, whose decoded state ``RunningState``
/// restores: ``BatchNorm``, ``SpatialBatchNorm`` and ``InstanceNorm``.
protocol RunningStatisticsLayer<Scalar>: NormalizationLayer {
    var beta: [Scalar] { get set }
    var runningMean: [Scalar] { get set }
    var runningVariance: [Scalar] { get set }
    var batchesTracked: Int { get set }
    func validateParameters() throws(NormError)
}

extension BatchNorm: RunningStatisticsLayer {}
extension SpatialBatchNorm: RunningStatisticsLayer {}
extension InstanceNorm: RunningStatisticsLayer {}

/// The keys of ``BatchNorm`` and ``SpatialBatchNorm`` (`featureCount` or
/// `channelCount` by the layer's input; `layout` for SpatialBatchNorm only).
private enum RunningCodingKeys: String, CodingKey {
    case featureCount, channelCount, layout, gamma, beta, runningMean, runningVariance, epsilon, momentum
    case varianceEstimator, backend, activation, runningStatistics, batchesTracked, affine
}

/// What ``BatchNorm`` and ``SpatialBatchNorm`` encode besides their size and layout.
private struct RunningState<Scalar: BLASScalar> {
    var gamma, beta, runningMean, runningVariance: [Scalar]
    var epsilon, momentum: Scalar
    var estimator: VarianceEstimator
    var backend: Backend
    // Absent from archives written before they existed: PyTorch's defaults.
    var policy: RunningStatistics = .exponential
    var batchesTracked = 0
    var affine: Affine = .scaleAndShift

    init(_ c: KeyedDecodingContainer<RunningCodingKeys>) throws {
        policy = try c.decodeIfPresent(RunningStatistics.self, forKey: .runningStatistics) ?? .exponential
        affine = try c.decodeIfPresent(Affine.self, forKey: .affine) ?? .scaleAndShift
        batchesTracked = try c.decodeIfPresent(Int.self, forKey: .batchesTracked) ?? 0
        epsilon = try c.decode(Scalar.self, forKey: .epsilon)
        momentum = try c.decode(Scalar.self, forKey: .momentum)
        estimator = try c.decode(VarianceEstimator.self, forKey: .varianceEstimator)
        backend = try c.decode(Backend.self, forKey: .backend)
        gamma = try c.decode([Scalar].self, forKey: .gamma)
        beta = try c.decode([Scalar].self, forKey: .beta)
        runningMean = try c.decode([Scalar].self, forKey: .runningMean)
        runningVariance = try c.decode([Scalar].self, forKey: .runningVariance)
    }

    init(gamma: [Scalar], beta: [Scalar], runningMean: [Scalar], runningVariance: [Scalar],
         epsilon: Scalar, momentum: Scalar, estimator: VarianceEstimator, backend: Backend,
         policy: RunningStatistics, batchesTracked: Int, affine: Affine) {
        (self.gamma, self.beta, self.runningMean, self.runningVariance) = (gamma, beta, runningMean, runningVariance)
        (self.epsilon, self.momentum, self.estimator, self.backend) = (epsilon, momentum, estimator, backend)
        (self.policy, self.batchesTracked, self.affine) = (policy, batchesTracked, affine)
    }

    /// What a decoded layer of `count` features must hold, checked before it
    /// is built: `forward`'s length checks, finite values, and a running
    /// variance that is not negative.
    func check(count: Int) throws(NormError) {
        try checkAffine(gamma: gamma, beta: beta, affine: affine, count: count)
        try Validation.batchesTracked(batchesTracked)
        try Validation.count("runningMean", runningMean.count, expected: count)
        try Validation.count("runningVariance", runningVariance.count, expected: count)
        try Validation.finite("runningMean", runningMean)
        guard runningVariance.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw .unsupportedParameter(name: "runningVariance", expected: "finite and not negative")
        }
    }

    /// Gives a layer built from these settings its decoded arrays and count,
    /// then re-validates it as `forward` would.
    func restore<Layer: RunningStatisticsLayer>(into layer: inout Layer) throws(NormError)
        where Layer.Scalar == Scalar {
        (layer.gamma, layer.beta, layer.runningMean, layer.runningVariance) =
            (gamma, beta, runningMean, runningVariance)
        layer.batchesTracked = batchesTracked
        try layer.validateParameters()
    }

    func encode(to c: inout KeyedEncodingContainer<RunningCodingKeys>) throws {
        try c.encode(gamma, forKey: .gamma)
        try c.encode(beta, forKey: .beta)
        try c.encode(runningMean, forKey: .runningMean)
        try c.encode(runningVariance, forKey: .runningVariance)
        try c.encode(epsilon, forKey: .epsilon)
        try c.encode(momentum, forKey: .momentum)
        try c.encode(estimator, forKey: .varianceEstimator)
        try c.encode(backend, forKey: .backend)
        try c.encode(policy, forKey: .runningStatistics)
        try c.encode(batchesTracked, forKey: .batchesTracked)
        if affine != .scaleAndShift { try c.encode(affine, forKey: .affine) }
    }
}

extension BatchNorm: ArchivableLayer {
    /// Decodes a layer encoded by ``encode(to:)`` and validates it as
    /// ``init(featureCount:epsilon:momentum:varianceEstimator:activation:runningStatistics:affine:backend:)`` and
    /// `forward` do.
    /// - Throws: `DecodingError`; `.dataCorrupted` names the ``NormError``.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: RunningCodingKeys.self)
        let count = try c.decode(Int.self, forKey: .featureCount)
        let v = try RunningState<Scalar>(c)
        let activation = try c.decodeIfPresent(FusedActivation.self, forKey: .activation) ?? .none
        self = try validated(c.codingPath) { () throws(NormError) in
            try v.check(count: count)
            var layer = try BatchNorm(featureCount: count, epsilon: v.epsilon, momentum: v.momentum,
                                      varianceEstimator: v.estimator, activation: activation,
                                      runningStatistics: v.policy, affine: v.affine, backend: v.backend)
            try v.restore(into: &layer)
            return layer
        }
    }

    /// Encodes the hyperparameters, `gamma`, `beta` and the running statistics.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: RunningCodingKeys.self)
        try c.encode(featureCount, forKey: .featureCount)
        if activation != .none { try c.encode(activation, forKey: .activation) }
        try RunningState(gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
                         epsilon: epsilon, momentum: momentum, estimator: varianceEstimator,
                         backend: backend, policy: runningStatistics,
                         batchesTracked: batchesTracked, affine: affine).encode(to: &c)
    }
}

extension SpatialBatchNorm: ArchivableLayer {
    /// Decodes a layer encoded by ``encode(to:)`` and validates it as
    /// ``init(channelCount:epsilon:momentum:varianceEstimator:layout:activation:runningStatistics:affine:backend:)``
    /// and `forward` do.
    /// - Throws: `DecodingError`; `.dataCorrupted` names the ``NormError``.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: RunningCodingKeys.self)
        let count = try c.decode(Int.self, forKey: .channelCount)
        let layout = try c.decode(ChannelLayout.self, forKey: .layout)
        let v = try RunningState<Scalar>(c)
        let activation = try c.decodeIfPresent(FusedActivation.self, forKey: .activation) ?? .none
        self = try validated(c.codingPath) { () throws(NormError) in
            try v.check(count: count)
            var layer = try SpatialBatchNorm(channelCount: count, epsilon: v.epsilon, momentum: v.momentum,
                                             varianceEstimator: v.estimator, layout: layout,
                                             activation: activation, runningStatistics: v.policy,
                                             affine: v.affine, backend: v.backend)
            try v.restore(into: &layer)
            return layer
        }
    }

    /// Encodes the hyperparameters, `gamma`, `beta` and the running statistics.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: RunningCodingKeys.self)
        try c.encode(channelCount, forKey: .channelCount)
        try c.encode(layout, forKey: .layout)
        if activation != .none { try c.encode(activation, forKey: .activation) }
        try RunningState(gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
                         epsilon: epsilon, momentum: momentum, estimator: varianceEstimator,
                         backend: backend, policy: runningStatistics,
                         batchesTracked: batchesTracked, affine: affine).encode(to: &c)
    }
}

/// The keys of the layers without running statistics; `groupCount` only for
/// ``GroupNorm``, `featureCount` or `channelCount` by the layer's input.
private enum AffineCodingKeys: String, CodingKey {
    case featureCount, channelCount, groupCount, gamma, beta, epsilon, backend, activation, normalizedShape, layout
    case affine
}

/// Decodes a layer without running statistics: its size under `countKey`,
/// then `make` (the layer's validating initializer) with the size, `epsilon`,
/// the affine map (`defaultAffine` when the archive names none) and
/// `backend`, then `gamma` and `beta`, checked against the size.
private func decodeAffineLayer<Layer: NormalizationLayer>(
    _ decoder: any Decoder, countKey: AffineCodingKeys, defaultAffine: Affine = .scaleAndShift,
    _ make: (Int, Layer.Scalar, Affine, Backend) throws(NormError) -> Layer
) throws -> Layer {
    let c = try decoder.container(keyedBy: AffineCodingKeys.self)
    let count = try c.decode(Int.self, forKey: countKey)
    let gamma = try c.decode([Layer.Scalar].self, forKey: .gamma)
    var beta = try c.decode([Layer.Scalar].self, forKey: .beta)
    let epsilon = try c.decode(Layer.Scalar.self, forKey: .epsilon)
    let backend = try c.decode(Backend.self, forKey: .backend)
    let named = try c.decodeIfPresent(Affine.self, forKey: .affine)
    let affine = named ?? defaultAffine
    // An RMSNorm archive from before `Affine` holds zeros for its beta.
    if named == nil, !affine.hasShift, beta.count == count, beta.allSatisfy({ $0 == 0 }) { beta = [] }
    return try validated(c.codingPath) { () throws(NormError) in
        try checkAffine(gamma: gamma, beta: beta, affine: affine, count: count)
        var layer = try make(count, epsilon, affine, backend)
        (layer.gamma, layer.beta) = (gamma, beta)
        return layer
    }
}

/// The `normalizedShape` of a LayerNorm or RMSNorm, absent when it is
/// `[featureCount]`.
private func decodeNormalizedShape(_ decoder: any Decoder) throws -> [Int]? {
    try decoder.container(keyedBy: AffineCodingKeys.self).decodeIfPresent([Int].self, forKey: .normalizedShape)
}

/// A ``LayerNorm``'s or ``RMSNorm``'s fields: the affine layer's, under
/// `featureCount`, and a `normalizedShape` (when the layer has several
/// trailing dimensions) that must multiply out to it; `make` builds the layer
/// from them (`nil` for the shape `[D]`).
private func decodeRowLayer<Layer: RowNormalizationLayer>(
    _ decoder: any Decoder, defaultAffine: Affine,
    _ make: ([Int]?, Int, Layer.Scalar, Affine, Backend) throws(NormError) -> Layer
) throws -> Layer {
    let shape = try decodeNormalizedShape(decoder)
    return try decodeAffineLayer(decoder, countKey: .featureCount, defaultAffine: defaultAffine) {
        (count, epsilon, affine, backend) throws(NormError) in
        if let shape { try checkNormalizedShape(shape, count: count) }
        return try make(shape, count, epsilon, affine, backend)
    }
}

/// Encodes a ``LayerNorm``'s or ``RMSNorm``'s `featureCount`,
/// `normalizedShape` (when it has several dimensions) and affine fields.
private func encodeRowLayer(_ layer: some RowNormalizationLayer, to encoder: any Encoder,
                            defaultAffine: Affine) throws {
    var c = encoder.container(keyedBy: AffineCodingKeys.self)
    try c.encode(layer.featureCount, forKey: .featureCount)
    if layer.normalizedShape.count > 1 { try c.encode(layer.normalizedShape, forKey: .normalizedShape) }
    try encodeAffine(&c, gamma: layer.gamma, beta: layer.beta, epsilon: layer.epsilon, backend: layer.backend,
                     affine: layer.affine, defaultAffine: defaultAffine)
}

/// A decoded normalized shape must multiply out to the decoded feature count.
private func checkNormalizedShape(_ shape: [Int], count: Int) throws(NormError) {
    guard try Validation.normalizedShape(shape) == count else {
        throw .invalidShape(expected: "a normalized shape of \(count) elements", actual: shape)
    }
}

/// Encodes `gamma`, `beta`, `epsilon`, `backend`, and `affine` when it is
/// not `defaultAffine`.
private func encodeAffine<Scalar: BLASScalar>(
    _ c: inout KeyedEncodingContainer<AffineCodingKeys>, gamma: [Scalar], beta: [Scalar],
    epsilon: Scalar, backend: Backend, affine: Affine, defaultAffine: Affine = .scaleAndShift
) throws {
    if affine != defaultAffine { try c.encode(affine, forKey: .affine) }
    try c.encode(gamma, forKey: .gamma)
    try c.encode(beta, forKey: .beta)
    try c.encode(epsilon, forKey: .epsilon)
    try c.encode(backend, forKey: .backend)
}

extension LayerNorm: ArchivableLayer {
    /// Decodes a layer encoded by ``encode(to:)`` and validates it as
    /// ``init(featureCount:epsilon:affine:backend:)`` and `forward` do.
    /// - Throws: `DecodingError`; `.dataCorrupted` names the ``NormError``.
    public init(from decoder: any Decoder) throws {
        self = try decodeRowLayer(decoder, defaultAffine: .scaleAndShift) {
            (shape, count, epsilon, affine, backend) throws(NormError) in
            if let shape { return try LayerNorm(normalizedShape: shape, epsilon: epsilon, affine: affine, backend: backend) }
            return try LayerNorm(featureCount: count, epsilon: epsilon, affine: affine, backend: backend)
        }
    }

    /// Encodes `featureCount`, `normalizedShape` (when it has several
    /// dimensions), `gamma`, `beta`, `epsilon` and `backend`.
    public func encode(to encoder: any Encoder) throws {
        try encodeRowLayer(self, to: encoder, defaultAffine: .scaleAndShift)
    }
}

extension RMSNorm: ArchivableLayer {
    /// Decodes a layer encoded by ``encode(to:)`` and validates it as
    /// ``init(featureCount:epsilon:affine:backend:)`` and `forward` do.
    /// - Throws: `DecodingError`; `.dataCorrupted` names the ``NormError``.
    public init(from decoder: any Decoder) throws {
        self = try decodeRowLayer(decoder, defaultAffine: .scaleOnly) {
            (shape, count, epsilon, affine, backend) throws(NormError) in
            if let shape { return try RMSNorm(normalizedShape: shape, epsilon: epsilon, affine: affine, backend: backend) }
            return try RMSNorm(featureCount: count, epsilon: epsilon, affine: affine, backend: backend)
        }
    }

    /// Encodes `featureCount`, `normalizedShape` (when it has several
    /// dimensions), `gamma`, `beta`, `epsilon` and `backend`.
    public func encode(to encoder: any Encoder) throws {
        try encodeRowLayer(self, to: encoder, defaultAffine: .scaleOnly)
    }
}

extension GroupNorm: ArchivableLayer {
    /// Decodes a layer encoded by ``encode(to:)`` and validates it as
    /// ``init(channelCount:groupCount:epsilon:layout:activation:affine:backend:)`` and `forward` do.
    /// - Throws: `DecodingError`; `.dataCorrupted` names the ``NormError``.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: AffineCodingKeys.self)
        let groups = try c.decode(Int.self, forKey: .groupCount)
        let activation = try c.decodeIfPresent(FusedActivation.self, forKey: .activation) ?? .none
        let layout = try c.decodeIfPresent(ChannelLayout.self, forKey: .layout) ?? .nchw
        self = try decodeAffineLayer(decoder, countKey: .channelCount) {
            (count, epsilon, affine, backend) throws(NormError) in
            try GroupNorm(channelCount: count, groupCount: groups, epsilon: epsilon, layout: layout,
                          activation: activation, affine: affine, backend: backend)
        }
    }

    /// Encodes `channelCount`, `groupCount`, `layout` (when channels last),
    /// `gamma`, `beta`, `epsilon` and `backend`.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: AffineCodingKeys.self)
        try c.encode(channelCount, forKey: .channelCount)
        try c.encode(groupCount, forKey: .groupCount)
        if layout != .nchw { try c.encode(layout, forKey: .layout) }
        if activation != .none { try c.encode(activation, forKey: .activation) }
        try encodeAffine(&c, gamma: gamma, beta: beta, epsilon: epsilon, backend: backend, affine: affine)
    }
}

extension InstanceNorm: ArchivableLayer {
    /// Decodes a layer encoded by ``encode(to:)`` and validates it as
    /// ``init(channelCount:epsilon:momentum:varianceEstimator:layout:activation:runningStatistics:affine:backend:)``
    /// and `forward` do. An archive without running statistics (written
    /// before InstanceNorm had them) decodes with ``RunningStatistics/none``.
    /// - Throws: `DecodingError`; `.dataCorrupted` names the ``NormError``.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: RunningCodingKeys.self)
        let count = try c.decode(Int.self, forKey: .channelCount)
        let activation = try c.decodeIfPresent(FusedActivation.self, forKey: .activation) ?? .none
        let layout = try c.decodeIfPresent(ChannelLayout.self, forKey: .layout) ?? .nchw
        let gamma = try c.decode([Scalar].self, forKey: .gamma)
        let zeros = [Scalar](repeating: 0, count: gamma.count)   // sized by an array, not by a count
        let v = RunningState<Scalar>(
            gamma: gamma, beta: try c.decode([Scalar].self, forKey: .beta),
            runningMean: try c.decodeIfPresent([Scalar].self, forKey: .runningMean) ?? zeros,
            runningVariance: try c.decodeIfPresent([Scalar].self, forKey: .runningVariance) ?? zeros,
            epsilon: try c.decode(Scalar.self, forKey: .epsilon),
            momentum: try c.decodeIfPresent(Scalar.self, forKey: .momentum) ?? 0.9,
            estimator: try c.decodeIfPresent(VarianceEstimator.self, forKey: .varianceEstimator) ?? .biased,
            backend: try c.decode(Backend.self, forKey: .backend),
            policy: try c.decodeIfPresent(RunningStatistics.self, forKey: .runningStatistics) ?? .none,
            batchesTracked: try c.decodeIfPresent(Int.self, forKey: .batchesTracked) ?? 0,
            affine: try c.decodeIfPresent(Affine.self, forKey: .affine) ?? .scaleAndShift)
        self = try validated(c.codingPath) { () throws(NormError) in
            try v.check(count: count)
            var layer = try InstanceNorm(channelCount: count, epsilon: v.epsilon, momentum: v.momentum,
                                         varianceEstimator: v.estimator, layout: layout, activation: activation,
                                         runningStatistics: v.policy, affine: v.affine, backend: v.backend)
            try v.restore(into: &layer)
            return layer
        }
    }

    /// Encodes `channelCount`, `gamma`, `beta`, the running statistics and
    /// their settings, `epsilon` and `backend`.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: RunningCodingKeys.self)
        try c.encode(channelCount, forKey: .channelCount)
        if layout != .nchw { try c.encode(layout, forKey: .layout) }
        if activation != .none { try c.encode(activation, forKey: .activation) }
        try RunningState(gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
                         epsilon: epsilon, momentum: momentum, estimator: varianceEstimator, backend: backend,
                         policy: runningStatistics, batchesTracked: batchesTracked, affine: affine).encode(to: &c)
    }
}

extension DecorrelatedBatchNorm: ArchivableLayer {
    private enum CodingKeys: String, CodingKey {
        case featureCount, groupSize, method, gamma, beta, runningMean, runningWhitening
        case epsilon, momentum, backend, affine
    }

    /// Decodes a layer encoded by ``encode(to:)`` and validates it as
    /// ``init(featureCount:groupSize:method:epsilon:momentum:affine:backend:)`` and
    /// `forward` do.
    /// - Throws: `DecodingError`; `.dataCorrupted` names the ``NormError``.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let count = try c.decode(Int.self, forKey: .featureCount)
        let groupSize = try c.decode(Int.self, forKey: .groupSize)
        let method = try c.decode(WhiteningMethod.self, forKey: .method)
        let epsilon = try c.decode(Scalar.self, forKey: .epsilon)
        let momentum = try c.decode(Scalar.self, forKey: .momentum)
        let backend = try c.decode(Backend.self, forKey: .backend)
        let gamma = try c.decode([Scalar].self, forKey: .gamma)
        let beta = try c.decode([Scalar].self, forKey: .beta)
        let mean = try c.decode([Scalar].self, forKey: .runningMean)
        let whitening = try c.decode([Scalar].self, forKey: .runningWhitening)
        let affine = try c.decodeIfPresent(Affine.self, forKey: .affine) ?? .scaleAndShift
        self = try validated(c.codingPath) { () throws(NormError) in
            // The arrays' lengths first: a size they do not back allocates nothing.
            try checkAffine(gamma: gamma, beta: beta, affine: affine, count: count)
            try Validation.count("runningMean", mean.count, expected: count)
            let (blocks, overflow) = count.multipliedReportingOverflow(by: groupSize)
            try Validation.count("runningWhitening", whitening.count, expected: overflow ? -1 : blocks)
            var layer = try DecorrelatedBatchNorm(featureCount: count, groupSize: groupSize, method: method,
                                                  epsilon: epsilon, momentum: momentum, affine: affine,
                                                  backend: backend)
            (layer.gamma, layer.beta, layer.runningMean, layer.runningWhitening) = (gamma, beta, mean, whitening)
            try layer.validateParameters()
            return layer
        }
    }

    /// Encodes the hyperparameters, `gamma`, `beta` and the running statistics.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(featureCount, forKey: .featureCount)
        try c.encode(groupSize, forKey: .groupSize)
        try c.encode(method, forKey: .method)
        try c.encode(gamma, forKey: .gamma)
        try c.encode(beta, forKey: .beta)
        try c.encode(runningMean, forKey: .runningMean)
        try c.encode(runningWhitening, forKey: .runningWhitening)
        try c.encode(epsilon, forKey: .epsilon)
        try c.encode(momentum, forKey: .momentum)
        try c.encode(backend, forKey: .backend)
        if affine != .scaleAndShift { try c.encode(affine, forKey: .affine) }
    }
}
