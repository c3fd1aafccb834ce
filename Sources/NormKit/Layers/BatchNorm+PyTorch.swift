// Batch norms trained in PyTorch: a module's state_dict saved with numpy.savez
// (`np.savez(path, **{k: v.numpy() for k, v in module.state_dict().items()})`).

extension BatchNorm {
    /// A batch norm with the state of a PyTorch `nn.BatchNorm1d`, read from its
    /// `state_dict` saved as an `.npz` archive: `weight` becomes `gamma`, `bias`
    /// `beta`, `running_mean` and `running_var` the running statistics.
    ///
    /// PyTorch's conventions are converted, so that the layer computes what the
    /// module computes in both modes: NormKit's `momentum` (the weight of the
    /// old value) is `1 - pytorchMomentum`, and the variance estimator is
    /// ``VarianceEstimator/unbiased``. `num_batches_tracked` is read and not
    /// kept: it matters only to PyTorch's `momentum=None` (a cumulative
    /// average), which NormKit does not have. A module built with
    /// `affine=False` has no `weight` or `bias`: `gamma` is then ones and
    /// `beta` zeros.
    ///
    /// - Parameters:
    ///   - state: the archive.
    ///   - prefix: the module's prefix in a whole model's `state_dict`, e.g. `"bn1."`.
    ///   - epsilon: the module's `eps` (the `state_dict` does not hold it).
    ///   - pytorchMomentum: the module's `momentum`, in PyTorch's convention.
    ///   - backend: the implementation to use.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` for a missing
    ///   `running_mean` or `running_var` (a module with
    ///   `track_running_stats=False`), an array of another type than `Scalar`'s,
    ///   or one that is not one-dimensional; ``NormError/parameterCountMismatch(name:expected:actual:)``
    ///   when the arrays' lengths differ; the initializer's errors.
    /// - Complexity: O(D).
    public init(pytorch state: NumPyArchive, prefix: String = "", epsilon: Scalar = 1e-5,
                pytorchMomentum: Scalar = 0.1, backend: Backend = .blas) throws(NormError) {
        let p = try PyTorchBatchNormState<Scalar>(state, prefix: prefix)
        try self.init(featureCount: p.runningMean.count, epsilon: epsilon,
                      momentum: 1 - pytorchMomentum, varianceEstimator: .unbiased, backend: backend)
        (gamma, beta, runningMean, runningVariance) = (p.gamma ?? gamma, p.beta ?? beta, p.runningMean, p.runningVariance)
        try validateParameters()
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
                pytorchMomentum: Scalar = 0.1, layout: ChannelLayout = .nchw,
                backend: Backend = .blas) throws(NormError) {
        let p = try PyTorchBatchNormState<Scalar>(state, prefix: prefix)
        try self.init(channelCount: p.runningMean.count, epsilon: epsilon,
                      momentum: 1 - pytorchMomentum, varianceEstimator: .unbiased,
                      layout: layout, backend: backend)
        (gamma, beta, runningMean, runningVariance) = (p.gamma ?? gamma, p.beta ?? beta, p.runningMean, p.runningVariance)
        try validateParameters()
    }
}

/// The arrays of a PyTorch batch norm's `state_dict`.
struct PyTorchBatchNormState<Scalar: BLASScalar> {
    var gamma: [Scalar]?
    var beta: [Scalar]?
    var runningMean: [Scalar]
    var runningVariance: [Scalar]

    init(_ state: NumPyArchive, prefix: String) throws(NormError) {
        func vector(_ key: String) throws(NormError) -> [Scalar]? {
            guard state[prefix + key] != nil else { return nil }
            let t: Tensor<Scalar> = try state.tensor(prefix + key)
            guard t.shape.count == 1 else {
                throw .invalidNumPyData(expected: "'\(prefix + key)' of one dimension", found: "shape \(t.shape)")
            }
            return t.scalars
        }
        guard let mean = try vector("running_mean"), let variance = try vector("running_var") else {
            throw .invalidNumPyData(
                expected: "'\(prefix)running_mean' and '\(prefix)running_var' (a module with track_running_stats=True)",
                found: "\(state.names)")
        }
        if let counter = state[prefix + "num_batches_tracked"] { _ = try counter.integers() }
        (gamma, beta, runningMean, runningVariance) = (try vector("weight"), try vector("bias"), mean, variance)
        if (gamma == nil) != (beta == nil) {
            throw .invalidNumPyData(expected: "both '\(prefix)weight' and '\(prefix)bias' or neither",
                                    found: "\(state.names)")
        }
    }
}
