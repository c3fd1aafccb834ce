// Normalization modules trained in PyTorch: a module's state_dict saved with numpy.savez
// (`np.savez(path, **{k: v.numpy() for k, v in module.state_dict().items()})`), in and out.

extension BatchNorm {
    /// A batch norm with the state of a PyTorch `nn.BatchNorm1d`, read from its
    /// `state_dict` saved as an `.npz` archive: `weight` becomes `gamma`, `bias`
    /// `beta`, `running_mean` and `running_var` the running statistics.
    ///
    /// PyTorch's conventions are converted, so that the layer computes what the
    /// module computes in both modes: NormKit's `momentum` (the weight of the
    /// old value) is `1 - pytorchMomentum`, `pytorchMomentum: nil` (PyTorch's
    /// `momentum=None`) is ``RunningStatistics/cumulative``, and the variance
    /// estimator is ``VarianceEstimator/unbiased``. `num_batches_tracked`
    /// becomes ``batchesTracked``. A module built with
    /// `track_running_stats=False` has no running statistics: the layer's
    /// ``runningStatistics`` is then ``RunningStatistics/none``. The archive
    /// decides ``affine``: a module built with `affine=False` has no `weight`
    /// or `bias` (``Affine/none``), a `weight` without `bias` gives
    /// ``Affine/scaleOnly``. float32 and float64 arrays are widened or narrowed to `Scalar`.
    ///
    /// - Parameters:
    ///   - state: the archive.
    ///   - prefix: the module's prefix in a whole model's `state_dict`, e.g. `"bn1."`.
    ///   - epsilon: the module's `eps` (the `state_dict` does not hold it).
    ///   - pytorchMomentum: the module's `momentum`, in PyTorch's convention
    ///     (`nil` for `momentum=None`).
    ///   - backend: the implementation to use.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` naming the
    ///   entry: an array that is not floating point or not one-dimensional,
    ///   only one of `running_mean` and `running_var`, or neither running
    ///   statistics nor `weight`; ``NormError/parameterCountMismatch(name:expected:actual:)``
    ///   when the arrays' lengths differ; the initializer's errors.
    /// - Complexity: O(D).
    public init(pytorch state: NumPyArchive, prefix: String = "", epsilon: Scalar = 1e-5,
                pytorchMomentum: Scalar? = 0.1, backend: Backend = .blas) throws(NormError) {
        let p = try PyTorchBatchNormState<Scalar>(state, prefix: prefix)
        try self.init(featureCount: p.count, epsilon: epsilon, momentum: 1 - (pytorchMomentum ?? 0.1),
                      varianceEstimator: .unbiased, runningStatistics: p.policy(pytorchMomentum: pytorchMomentum),
                      affine: p.affine, backend: backend)
        try p.apply(to: &gamma, &beta, &runningMean, &runningVariance, &batchesTracked)
        try validateParameters()
    }

    /// The layer's state under PyTorch's `state_dict` names, loadable into an
    /// `nn.BatchNorm1d` with `load_state_dict` (after `torch.from_numpy` of
    /// each array): `weight` (`gamma`) and `bias` (`beta`) for the parameters
    /// ``affine`` has (PyTorch's `affine=False` has neither), and unless
    /// ``runningStatistics`` is ``RunningStatistics/none``, `running_mean`,
    /// `running_var` and `num_batches_tracked` (int64, shape `()`), each under
    /// `prefix`. Arrays are float32 for `Float`, float64 for `Double`. The
    /// module's `eps` and `momentum` are not part of a `state_dict`: build it
    /// with `eps=epsilon`, `momentum=1 - momentum` (`None` for
    /// ``RunningStatistics/cumulative``), `track_running_stats` as
    /// ``runningStatistics`` says; PyTorch feeds its running variance the
    /// unbiased estimate (``VarianceEstimator/unbiased``).
    /// - Complexity: O(D).
    public func pytorchState(prefix: String = "") -> NumPyArchive {
        PyTorchBatchNormState.archive(prefix: prefix, gamma: gamma, beta: beta, runningMean: runningMean,
                                      runningVariance: runningVariance, policy: runningStatistics,
                                      batchesTracked: batchesTracked)
    }
}

extension SpatialBatchNorm {
    /// A spatial batch norm with the state of a PyTorch `nn.BatchNorm2d`, read
    /// from its `state_dict` saved as an `.npz` archive, converted as
    /// ``BatchNorm/init(pytorch:prefix:epsilon:pytorchMomentum:backend:)``
    /// describes (momentum `1 - pytorchMomentum`, ``VarianceEstimator/unbiased``).
    ///
    /// - Parameters:
    ///   - state: the archive.
    ///   - prefix: the module's prefix in a whole model's `state_dict`, e.g. `"bn1."`.
    ///   - epsilon: the module's `eps` (the `state_dict` does not hold it).
    ///   - pytorchMomentum: the module's `momentum`, in PyTorch's convention.
    ///   - layout: the layout of the inputs this layer will see; PyTorch's
    ///     `channels_last` tensors are ``ChannelLayout/nhwc`` here.
    ///   - backend: the implementation to use.
    /// - Throws: as ``BatchNorm/init(pytorch:prefix:epsilon:pytorchMomentum:backend:)``.
    /// - Complexity: O(C).
    public init(pytorch state: NumPyArchive, prefix: String = "", epsilon: Scalar = 1e-5,
                pytorchMomentum: Scalar? = 0.1, layout: ChannelLayout = .nchw,
                backend: Backend = .blas) throws(NormError) {
        let p = try PyTorchBatchNormState<Scalar>(state, prefix: prefix)
        try self.init(channelCount: p.count, epsilon: epsilon, momentum: 1 - (pytorchMomentum ?? 0.1),
                      varianceEstimator: .unbiased, layout: layout,
                      runningStatistics: p.policy(pytorchMomentum: pytorchMomentum), affine: p.affine,
                      backend: backend)
        try p.apply(to: &gamma, &beta, &runningMean, &runningVariance, &batchesTracked)
        try validateParameters()
    }

    /// The layer's state under PyTorch's `state_dict` names, loadable into an
    /// `nn.BatchNorm2d` (or `BatchNorm1d`/`BatchNorm3d`) with `load_state_dict`,
    /// as ``BatchNorm/pytorchState(prefix:)`` describes.
    /// - Complexity: O(C).
    public func pytorchState(prefix: String = "") -> NumPyArchive {
        PyTorchBatchNormState.archive(prefix: prefix, gamma: gamma, beta: beta, runningMean: runningMean,
                                      runningVariance: runningVariance, policy: runningStatistics,
                                      batchesTracked: batchesTracked)
    }
}

/// The arrays of a PyTorch batch norm's `state_dict`.
struct PyTorchBatchNormState<Scalar: BLASScalar> {
    var gamma: [Scalar]?
    var beta: [Scalar]?
    var runningMean: [Scalar]?
    var runningVariance: [Scalar]?
    var batchesTracked: Int?

    /// The channel count, from the first array present.
    var count: Int { (runningMean ?? gamma ?? []).count }
    /// The affine map the arrays present give (a `bias` needs a `weight`, checked by `init`).
    var affine: Affine { Affine(scale: gamma != nil, shift: beta != nil) }

    init(_ state: NumPyArchive, prefix: String) throws(NormError) {
        func vector(_ key: String) throws(NormError) -> [Scalar]? {
            try PyTorchState.vector(state, prefix + key)
        }
        (gamma, beta) = (try vector("weight"), try vector("bias"))
        (runningMean, runningVariance) = (try vector("running_mean"), try vector("running_var"))
        if (runningMean == nil) != (runningVariance == nil) {
            throw .invalidNumPyData(
                expected: "both '\(prefix)running_mean' and '\(prefix)running_var' or neither",
                found: "\(state.names)")
        }
        if runningMean == nil, gamma == nil {
            throw .invalidNumPyData(
                expected: "'\(prefix)running_mean' and '\(prefix)running_var', or '\(prefix)weight'",
                found: "\(state.names)")
        }
        if gamma == nil, beta != nil {
            throw .invalidNumPyData(expected: "'\(prefix)weight' with '\(prefix)bias'", found: "\(state.names)")
        }
        if let counter = state[prefix + "num_batches_tracked"] {
            let values: [Int]
            do throws(NormError) { values = try counter.integers() }
            catch { throw error.naming(entry: prefix + "num_batches_tracked") }
            guard values.count == 1, values[0] >= 0, values[0] < Int.max else {
                throw .invalidNumPyData(expected: "'\(prefix)num_batches_tracked': one count from 0 to Int.max - 1",
                                        found: "\(values.prefix(3))")
            }
            batchesTracked = values[0]
        }
    }

    /// The layer's policy: none without running statistics, cumulative for
    /// PyTorch's `momentum=None`.
    func policy(pytorchMomentum: Scalar?) -> RunningStatistics {
        runningMean == nil ? .none : pytorchMomentum == nil ? .cumulative : .exponential
    }

    /// Copies the arrays present into a layer's, checking their lengths.
    func apply(to gamma: inout [Scalar], _ beta: inout [Scalar], _ runningMean: inout [Scalar],
               _ runningVariance: inout [Scalar], _ batchesTracked: inout Int) throws(NormError) {
        let count = runningMean.count
        for (name, array) in [("weight", self.gamma), ("bias", self.beta), ("running_mean", self.runningMean),
                              ("running_var", self.runningVariance)] {
            if let array { try Validation.count(name, array.count, expected: count) }
        }
        if let v = self.gamma { gamma = v }
        if let v = self.beta { beta = v }
        if let v = self.runningMean { runningMean = v }
        if let v = self.runningVariance { runningVariance = v }
        if let v = self.batchesTracked { batchesTracked = v }
    }

    /// A layer's `state_dict` arrays under `prefix`.
    static func archive(prefix: String, gamma: [Scalar], beta: [Scalar], runningMean: [Scalar],
                        runningVariance: [Scalar], policy: RunningStatistics, batchesTracked: Int) -> NumPyArchive {
        var archive = NumPyArchive()
        // Only the parameters the layer has (`Affine`).
        if !gamma.isEmpty { archive[prefix + "weight"] = NumPyArray(gamma) }
        if !beta.isEmpty { archive[prefix + "bias"] = NumPyArray(beta) }
        if policy != .none {
            archive[prefix + "running_mean"] = NumPyArray(runningMean)
            archive[prefix + "running_var"] = NumPyArray(runningVariance)
            archive[prefix + "num_batches_tracked"] = NumPyArray(integer: batchesTracked)
        }
        return archive
    }
}

/// What every layer's PyTorch state shares: reading a one-dimensional array by
/// name, and the affine parameters' archive.
enum PyTorchState {
    /// The one-dimensional array `name`, widened or narrowed to `Scalar`, or
    /// `nil` when the archive has none.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` naming the entry.
    static func vector<Scalar: BLASScalar>(_ state: NumPyArchive, _ name: String) throws(NormError) -> [Scalar]? {
        guard state[name] != nil else { return nil }
        let t: Tensor<Scalar> = try state.tensor(name)
        guard t.shape.count == 1 else {
            throw .invalidNumPyData(expected: "'\(name)' of one dimension", found: "shape \(t.shape)")
        }
        return t.scalars
    }

    /// `prefix + "weight"` (required: it gives the layer's size) and, if
    /// present, `prefix + "bias"` of the same length.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` naming what
    ///   is missing or malformed; ``NormError/parameterCountMismatch(name:expected:actual:)``.
    static func affine<Scalar: BLASScalar>(_ state: NumPyArchive, prefix: String, module: String)
        throws(NormError) -> (weight: [Scalar], bias: [Scalar]?) {
        guard let weight: [Scalar] = try vector(state, prefix + "weight") else {
            throw .invalidNumPyData(
                expected: "'\(prefix)weight' (a \(module) with its affine parameters, which give its size)",
                found: "\(state.names)")
        }
        let bias: [Scalar]? = try vector(state, prefix + "bias")
        if let bias { try Validation.count("bias", bias.count, expected: weight.count) }
        return (weight, bias)
    }

    /// A LayerNorm's or RMSNorm's `weight`, of any rank (its shape is the
    /// module's `normalized_shape`), and `bias` of the same shape if present.
    /// - Throws: as ``affine(_:prefix:module:)``, and for a `bias` of another shape.
    static func shapedAffine<Scalar: BLASScalar>(_ state: NumPyArchive, prefix: String, module: String)
        throws(NormError) -> (shape: [Int], weight: [Scalar], bias: [Scalar]?) {
        guard state[prefix + "weight"] != nil else {
            throw .invalidNumPyData(
                expected: "'\(prefix)weight' (a \(module) with its affine parameters, which give its size)",
                found: "\(state.names)")
        }
        let weight: Tensor<Scalar> = try state.tensor(prefix + "weight")
        guard !weight.shape.isEmpty else {
            throw .invalidNumPyData(expected: "'\(prefix)weight' of the normalized shape", found: "shape []")
        }
        guard state[prefix + "bias"] != nil else { return (weight.shape, weight.scalars, nil) }
        let bias: Tensor<Scalar> = try state.tensor(prefix + "bias")
        guard bias.shape == weight.shape else {
            throw .invalidNumPyData(expected: "'\(prefix)bias' of shape \(weight.shape), as 'weight'",
                                    found: "shape \(bias.shape)")
        }
        return (weight.shape, weight.scalars, bias.scalars)
    }

    /// A LayerNorm or RMSNorm from a module's ``shapedAffine(_:prefix:module:)``:
    /// `make` builds it for the normalized shape and ``Affine`` (a shift only
    /// with a `bias`), then `weight` becomes `gamma` and `bias` `beta`.
    static func rowLayer<Layer: RowNormalizationLayer>(
        _ state: NumPyArchive, prefix: String, module: String,
        _ make: ([Int], Affine) throws(NormError) -> Layer
    ) throws(NormError) -> Layer {
        let (shape, weight, bias): ([Int], [Layer.Scalar], [Layer.Scalar]?) =
            try shapedAffine(state, prefix: prefix, module: module)
        var layer = try make(shape, Affine(scale: true, shift: bias != nil))
        layer.gamma = weight
        if let bias { layer.beta = bias }
        return layer
    }

    /// `weight` and `bias` under `prefix`, of `shape` (the normalized shape;
    /// one dimension by default), each unless empty (a parameter the layer
    /// does not have, ``Affine``).
    static func archive<Scalar: BLASScalar>(prefix: String, weight: [Scalar], bias: [Scalar],
                                            shape: [Int]? = nil) -> NumPyArchive {
        var archive = NumPyArchive()
        if !weight.isEmpty {
            archive[prefix + "weight"] = NumPyArray(Tensor(validatedShape: shape ?? [weight.count], scalars: weight))
        }
        if !bias.isEmpty {
            archive[prefix + "bias"] = NumPyArray(Tensor(validatedShape: shape ?? [bias.count], scalars: bias))
        }
        return archive
    }
}

extension LayerNorm {
    /// A layer norm with the state of a PyTorch `nn.LayerNorm(normalized_shape)`
    /// (`elementwise_affine=True`; the shape of `weight` is the layer's
    /// ``normalizedShape``): `weight` becomes
    /// `gamma` and `bias` `beta`; a module built with `bias=False` has no
    /// `bias`, and the layer is then ``Affine/scaleOnly``. float32 and
    /// float64 arrays are widened or narrowed to `Scalar`.
    /// - Parameters:
    ///   - state: the archive (`numpy.savez` of the `state_dict`).
    ///   - prefix: the module's prefix in a whole model's `state_dict`.
    ///   - epsilon: the module's `eps`.
    ///   - backend: the implementation to use.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` naming the
    ///   entry (no `weight`: a module with `elementwise_affine=False`, whose
    ///   size the archive does not hold; build it with `init(featureCount:)`);
    ///   the initializer's errors.
    /// - Complexity: O(D).
    public init(pytorch state: NumPyArchive, prefix: String = "", epsilon: Scalar = 1e-5,
                backend: Backend = .blas) throws(NormError) {
        self = try PyTorchState.rowLayer(state, prefix: prefix, module: "LayerNorm") { shape, affine throws(NormError) in
            try LayerNorm(normalizedShape: shape, epsilon: epsilon, affine: affine, backend: backend)
        }
    }

    /// `gamma` and `beta` as an `nn.LayerNorm(normalizedShape)`'s `weight` and `bias`
    /// (float32 for `Float`, float64 for `Double`), loadable with
    /// `load_state_dict(strict=True)` into a module built to match ``affine``:
    /// `bias=False` for ``Affine/scaleOnly`` (no `bias` entry),
    /// `elementwise_affine=False` for ``Affine/none`` (an empty archive).
    /// - Complexity: O(D).
    public func pytorchState(prefix: String = "") -> NumPyArchive {
        PyTorchState.archive(prefix: prefix, weight: gamma, bias: beta, shape: normalizedShape)
    }
}

extension RMSNorm {
    /// An RMS norm with the state of a PyTorch `nn.RMSNorm(D)`: `weight`
    /// becomes `gamma` (``Affine/scaleOnly``; a `bias` entry, which PyTorch's
    /// RMSNorm never saves but a NormKit layer with ``Affine/scaleAndShift``
    /// does, becomes `beta`). PyTorch's default `eps=None` means the scalar type's
    /// machine epsilon (`torch.finfo(dtype).eps`): pass `Scalar.ulpOfOne`.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` naming the
    ///   entry (no `weight`: `elementwise_affine=False`, whose size the
    ///   archive does not hold); the initializer's errors.
    /// - Complexity: O(D).
    public init(pytorch state: NumPyArchive, prefix: String = "", epsilon: Scalar = 1e-5,
                backend: Backend = .blas) throws(NormError) {
        self = try PyTorchState.rowLayer(state, prefix: prefix, module: "RMSNorm") { shape, affine throws(NormError) in
            try RMSNorm(normalizedShape: shape, epsilon: epsilon, affine: affine, backend: backend)
        }
    }

    /// `gamma` as an `nn.RMSNorm(D)`'s `weight`, loadable with
    /// `load_state_dict(strict=True)` (and `beta` as `bias` for
    /// ``Affine/scaleAndShift``, which PyTorch's RMSNorm does not have).
    /// - Complexity: O(D).
    public func pytorchState(prefix: String = "") -> NumPyArchive {
        PyTorchState.archive(prefix: prefix, weight: gamma, bias: beta, shape: normalizedShape)
    }
}

extension GroupNorm {
    /// A group norm with the state of a PyTorch `nn.GroupNorm(G, C)`
    /// (`affine=True`): `weight` becomes `gamma`, `bias` `beta` (a `weight`
    /// without `bias` gives ``Affine/scaleOnly``). The group count is not
    /// part of a `state_dict`.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` naming the
    ///   entry (no `weight`: `affine=False`, which saves nothing; build it with
    ///   `init(channelCount:groupCount:affine: .none)`); the initializer's errors.
    /// - Complexity: O(C).
    public init(pytorch state: NumPyArchive, prefix: String = "", groupCount: Int, epsilon: Scalar = 1e-5,
                backend: Backend = .blas) throws(NormError) {
        let (weight, bias): ([Scalar], [Scalar]?) = try PyTorchState.affine(state, prefix: prefix, module: "GroupNorm")
        try self.init(channelCount: weight.count, groupCount: groupCount, epsilon: epsilon,
                      affine: Affine(scale: true, shift: bias != nil), backend: backend)
        gamma = weight
        if let bias { beta = bias }
    }

    /// `gamma` and `beta` as an `nn.GroupNorm(G, C)`'s `weight` and `bias`,
    /// loadable with `load_state_dict(strict=True)` (an empty archive for
    /// ``Affine/none``, as PyTorch's `affine=False`).
    /// - Complexity: O(C).
    public func pytorchState(prefix: String = "") -> NumPyArchive {
        PyTorchState.archive(prefix: prefix, weight: gamma, bias: beta)
    }
}

extension InstanceNorm {
    /// An instance norm with the state of a PyTorch `nn.InstanceNorm2d(C)`
    /// (or `1d`/`3d`). With `affine=True` its `weight` and `bias` become
    /// `gamma` and `beta`; with `track_running_stats=True`, `running_mean`,
    /// `running_var` and `num_batches_tracked` the running statistics, with
    /// PyTorch's conventions converted as
    /// ``BatchNorm/init(pytorch:prefix:epsilon:pytorchMomentum:backend:)``
    /// converts them, except `pytorchMomentum: nil`: PyTorch's InstanceNorm
    /// then never changes its running statistics, and this layer's `momentum`
    /// is 1 (``RunningStatistics/exponential``). The archive decides
    /// ``affine`` as for ``BatchNorm``. PyTorch's default, `affine=False`
    /// without running statistics, saves nothing, so `channelCount` must then
    /// be given (and the layer is ``Affine/none``).
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` naming the
    ///   entry, or when neither the state nor `channelCount` gives the size;
    ///   ``NormError/parameterCountMismatch(name:expected:actual:)``; the initializer's errors.
    /// - Complexity: O(C).
    public init(pytorch state: NumPyArchive, prefix: String = "", channelCount: Int? = nil,
                epsilon: Scalar = 1e-5, pytorchMomentum: Scalar? = 0.1, backend: Backend = .blas) throws(NormError) {
        guard ["weight", "bias", "running_mean", "running_var"].contains(where: { state[prefix + $0] != nil }) else {
            guard let channelCount else {
                throw .invalidNumPyData(
                    expected: "'\(prefix)weight' and '\(prefix)bias', or channelCount: (an affine=False module saves nothing)",
                    found: "\(state.names)")
            }
            try self.init(channelCount: channelCount, epsilon: epsilon, affine: .none, backend: backend)
            return
        }
        let p = try PyTorchBatchNormState<Scalar>(state, prefix: prefix)
        if let channelCount { try Validation.count("weight", p.count, expected: channelCount) }
        try self.init(channelCount: p.count, epsilon: epsilon, momentum: 1 - (pytorchMomentum ?? 0),
                      varianceEstimator: .unbiased,
                      runningStatistics: p.runningMean == nil ? .none : .exponential, affine: p.affine,
                      backend: backend)
        try p.apply(to: &gamma, &beta, &runningMean, &runningVariance, &batchesTracked)
        try validateParameters()
    }

    /// The layer's state as an `nn.InstanceNorm2d`'s `state_dict`, loadable
    /// with `load_state_dict(strict=True)` into one built with `affine` as
    /// ``affine`` says and `track_running_stats` as ``runningStatistics`` says:
    /// `weight` and `bias` when present, and unless ``RunningStatistics/none`` `running_mean`,
    /// `running_var` and `num_batches_tracked`, as ``BatchNorm/pytorchState(prefix:)``.
    /// - Complexity: O(C).
    public func pytorchState(prefix: String = "") -> NumPyArchive {
        PyTorchBatchNormState.archive(prefix: prefix, gamma: gamma, beta: beta, runningMean: runningMean,
                                      runningVariance: runningVariance, policy: runningStatistics,
                                      batchesTracked: batchesTracked)
    }
}
