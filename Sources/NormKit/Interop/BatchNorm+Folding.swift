// Folding an inference-mode batch norm into the affine layer or convolution
// before it (PyTorch's `fuse_linear_bn_eval` / `fuse_conv_bn_eval`).

extension BatchNorm {
    /// The weights and bias of the affine layer before this batch norm with the
    /// batch norm's inference pass folded in, so that one affine layer computes
    /// both: for `z = x Wᵀ + b` (PyTorch's `nn.Linear`, `W` of shape
    /// `(D_out, D_in)`) followed by inference-mode batch norm over the `D_out`
    /// features,
    ///
    ///     s = gamma / sqrt(runningVariance + epsilon)
    ///     W' = diag(s) W,   b' = s * (b - runningMean) + beta
    ///
    /// and `x W'ᵀ + b'` equals the two layers' output within rounding. A
    /// cs231n-style weight `w` of shape `(D_in, D_out)` (`z = x w + b`) is folded
    /// as its transpose.
    ///
    /// - Parameters:
    ///   - weights: `(featureCount, D_in)`.
    ///   - bias: `featureCount` values, or `nil` for a layer without bias
    ///     (the folded bias is then `beta - s * runningMean`).
    /// - Returns: the folded weights, of the shape of `weights`, and the folded bias.
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` when `weights` is
    ///   not `(featureCount, D_in)`; ``NormError/parameterCountMismatch(name:expected:actual:)``
    ///   for a bias of another length; ``NormError/nonFiniteStatistics(index:)``
    ///   when a scale `s` is not finite; the layer's hyperparameter errors.
    /// - Complexity: O(D_out · D_in).
    public func folded(weights: Tensor<Scalar>, bias: [Scalar]?) throws(NormError)
        -> (weights: Tensor<Scalar>, bias: [Scalar]) {
        try validateParameters()
        guard weights.shape.count == 2, weights.shape[0] == featureCount else {
            throw .invalidShape(expected: "(\(featureCount), D_in)", actual: weights.shape)
        }
        return try BatchNormFolding.fold(
            weights: weights, bias: bias, gamma: gamma, beta: beta, runningMean: runningMean,
            runningVariance: runningVariance, epsilon: epsilon)
    }
}

extension SpatialBatchNorm {
    /// The filters and bias of the convolution before this spatial batch norm
    /// with the batch norm's inference pass folded in: for a convolution with
    /// filters `W` of shape `(C_out, C_in, kh, kw)` (PyTorch's `nn.Conv2d`) and
    /// bias `b` followed by inference-mode spatial batch norm over its `C_out`
    /// channels,
    ///
    ///     s = gamma / sqrt(runningVariance + epsilon)
    ///     W'[c] = s[c] * W[c],   b' = s * (b - runningMean) + beta
    ///
    /// and the convolution with `W'` and `b'` equals the two layers' output
    /// within rounding. The filters' layout is the same whatever ``layout``
    /// the batch norm's activations have.
    ///
    /// - Parameters:
    ///   - weights: `(channelCount, C_in, kh, kw)`.
    ///   - bias: `channelCount` values, or `nil` for a convolution without bias.
    /// - Returns: the folded filters, of the shape of `weights`, and the folded bias.
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` when `weights` is
    ///   not `(channelCount, C_in, kh, kw)`; ``NormError/parameterCountMismatch(name:expected:actual:)``
    ///   for a bias of another length; ``NormError/nonFiniteStatistics(index:)``
    ///   when a scale `s` is not finite; the layer's hyperparameter errors.
    /// - Complexity: O(C_out · C_in · kh · kw).
    public func folded(weights: Tensor<Scalar>, bias: [Scalar]?) throws(NormError)
        -> (weights: Tensor<Scalar>, bias: [Scalar]) {
        try validateParameters()
        guard weights.shape.count == 4, weights.shape[0] == channelCount else {
            throw .invalidShape(expected: "(\(channelCount), C_in, kh, kw)", actual: weights.shape)
        }
        return try BatchNormFolding.fold(
            weights: weights, bias: bias, gamma: gamma, beta: beta, runningMean: runningMean,
            runningVariance: runningVariance, epsilon: epsilon)
    }
}

/// The fold shared by ``BatchNorm`` and ``SpatialBatchNorm``: scale the slice
/// of `weights` of each output feature, shift the bias.
enum BatchNormFolding {
    static func fold<Scalar: BLASScalar>(
        weights: Tensor<Scalar>, bias: [Scalar]?, gamma: [Scalar], beta: [Scalar],
        runningMean: [Scalar], runningVariance: [Scalar], epsilon: Scalar
    ) throws(NormError) -> (weights: Tensor<Scalar>, bias: [Scalar]) {
        let features = gamma.count
        if let bias { try Validation.count("bias", bias.count, expected: features) }
        var scale = [Scalar](repeating: 0, count: features)
        for c in 0..<features {
            scale[c] = gamma[c] / (runningVariance[c] + epsilon).squareRoot()
            guard scale[c].isFinite else { throw .nonFiniteStatistics(index: c) }
        }
        var folded = weights
        let perFeature = features == 0 ? 0 : weights.count / features
        folded.withUnsafeMutableBufferPointer { w in
            for c in 0..<features {
                for k in c * perFeature ..< (c + 1) * perFeature { w[k] *= scale[c] }
            }
        }
        var foldedBias = [Scalar](repeating: 0, count: features)
        for c in 0..<features {
            foldedBias[c] = scale[c] * ((bias?[c] ?? 0) - runningMean[c]) + beta[c]
        }
        return (folded, foldedBias)
    }
}
