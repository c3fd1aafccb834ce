/// How a tensor of samples with 1 to 3 spatial dimensions orders its
/// dimensions; the names say it for images, and hold for every rank.
public enum ChannelLayout: String, Sendable, Hashable, Codable {
    /// Channels first, `(N, C, L)`, `(N, C, H, W)` or `(N, C, D, H, W)`: each
    /// channel of a sample is a contiguous slab of its spatial extent
    /// (cs231n, PyTorch's default).
    case nchw
    /// Channels last, `(N, L, C)`, `(N, H, W, C)` or `(N, D, H, W, C)`
    /// (PyTorch's `channels_last` memory format), where spatial batch norm is
    /// ``BatchNorm`` over an `(N·spatial, C)` matrix.
    case nhwc
}

/// Spatial batch normalization of images: statistics per channel over the
/// batch and both spatial dimensions, `N·H·W` values each (cs231n's
/// `spatial_batchnorm_forward`). It also takes `(N, C, L)` and
/// `(N, C, D, H, W)` inputs (PyTorch's `BatchNorm1d` on sequences and
/// `BatchNorm3d`), `H·W` then standing for the spatial extent.
///
/// Everything else is ``BatchNorm``'s: `xhat = (x - mean_c) / sqrt(var_c + epsilon)`
/// with the biased variance, `y = gamma_c * xhat + beta_c`, running statistics
/// `running = momentum * running + (1 - momentum) * batch` starting at zeros,
/// `.unbiased` feeding `var * m / (m - 1)` with `m = N·H·W`.
///
/// ```swift
/// var sbn = try SpatialBatchNorm<Float>(channelCount: 3)
/// let images = try Tensor<Float>(randomNormal: [2, 3, 4, 5], seed: 1)   // (N, C, H, W)
/// let (y, cache) = try sbn.forward(images, mode: .training)
/// ```
///
/// The BLAS backend in NCHW sums each channel with `gemv(NoTrans, slab_n, 1_HW)`
/// on each sample's `C x H·W` slab (in channel blocks that stay in L2), two-pass
/// inside each block, Chan-merged over samples; it never transposes the input.
/// In NHWC it runs ``BatchNorm``'s column kernels on the `(N·H·W, C)` matrix.
public struct SpatialBatchNorm<Scalar: BLASScalar>: BatchStatisticsLayer, Equatable {
    /// The forward pass's saved input, batch (or running) statistics and `gamma`.
    public typealias Cache = NormCache<Scalar>

    /// `C`, the number of channels.
    public let channelCount: Int
    /// Which of `gamma` and `beta` the layer has (PyTorch's `affine`).
    public let affine: Affine
    /// The scale, one per channel; starts at ones; empty without one (``Affine/none``).
    public var gamma: [Scalar]
    /// The shift, one per channel; starts at zeros; empty without one
    /// (``Affine/scaleOnly``, ``Affine/none``).
    public var beta: [Scalar]
    /// The running mean per channel; starts at zeros.
    public var runningMean: [Scalar]
    /// The running variance per channel; starts at zeros.
    public var runningVariance: [Scalar]
    /// Added to the variance before the square root; finite and positive.
    public var epsilon: Scalar
    /// The weight of the old running value, in `[0, 1]` (PyTorch's 0.1 is 0.9 here).
    public var momentum: Scalar
    /// What the running variance is fed.
    public var varianceEstimator: VarianceEstimator
    /// How the running statistics are kept; ``RunningStatistics/none``
    /// normalizes with the batch's statistics in both modes.
    public var runningStatistics: RunningStatistics
    /// The training batches counted so far (PyTorch's `num_batches_tracked`):
    /// one more after each successful training forward, unless
    /// ``runningStatistics`` is ``RunningStatistics/none``. The count
    /// ``RunningStatistics/cumulative`` averages over.
    public var batchesTracked: Int = 0
    /// The dimension order of inputs: `(N, C, H, W)` or `(N, H, W, C)`.
    public var layout: ChannelLayout
    /// Applied to `gamma·xhat + beta` (plus a residual) in the output pass.
    public var activation: FusedActivation
    /// The implementation used.
    public var backend: Backend

    /// Creates a spatial batch-norm layer with `gamma` ones, `beta` zeros and
    /// running statistics zeros.
    ///
    /// - Throws: ``NormError/invalidFeatureCount(_:)``, ``NormError/invalidEpsilon(_:)``,
    ///   ``NormError/invalidMomentum(_:)``.
    public init(channelCount: Int, epsilon: Scalar = 1e-5, momentum: Scalar = 0.9,
                varianceEstimator: VarianceEstimator = .biased, layout: ChannelLayout = .nchw,
                activation: FusedActivation = .none, runningStatistics: RunningStatistics = .exponential,
                affine: Affine = .scaleAndShift, backend: Backend = .blas) throws(NormError) {
        try Validation.featureCount(channelCount)
        try Validation.epsilon(epsilon)
        try Validation.momentum(momentum)
        self.channelCount = channelCount
        self.affine = affine
        self.gamma = Array(repeating: 1, count: affine.scaleCount(channelCount))
        self.beta = Array(repeating: 0, count: affine.shiftCount(channelCount))
        self.runningMean = Array(repeating: 0, count: channelCount)
        self.runningVariance = Array(repeating: 0, count: channelCount)
        self.epsilon = epsilon
        self.momentum = momentum
        self.varianceEstimator = varianceEstimator
        self.layout = layout
        self.activation = activation
        self.runningStatistics = runningStatistics
        self.backend = backend
    }

    /// The origin of ``SyncSpatialBatchNorm``'s caches:
    /// `.syncSpatialBatchNorm(channelCount:layout:)`.
    @inlinable
    public var synchronizedOrigin: CacheOrigin {
        .syncSpatialBatchNorm(channelCount: channelCount, layout: layout)
    }

    /// Images, `N >= minimumBatch`: `(N, H·W)` in NCHW, `(N·H·W, 1)` in NHWC.
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for a shape that
    ///   is not a batch of images of ``channelCount`` channels in ``layout``;
    ///   ``NormError/negativeDimension(shape:)``, ``NormError/shapeOverflow(shape:)``,
    ///   ``NormError/sizeTooLarge(_:)``.
    /// - Complexity: O(rank of `shape`).
    @inlinable
    public func channelGeometry(shape: [Int], minimumBatch: Int) throws(NormError) -> (outer: Int, inner: Int) {
        let g = try Self.geometry(layout: layout, channelCount: channelCount, shape: shape,
                                  count: try Tensor<Scalar>.elementCount(of: shape),
                                  minimumBatch: minimumBatch)
        return (g.outer, g.inner)
    }

    /// The geometry of a shape of `count` scalars in `layout` with
    /// `channelCount` channels (what the 16-bit entry points' closures
    /// capture, rather than the whole layer).
    @inlinable
    static func geometry(layout: ChannelLayout, channelCount: Int, shape: [Int], count: Int,
                         minimumBatch: Int = 1) throws(NormError) -> ChannelGeometry {
        let s = try Validation.spatialShape(shape: shape, count: count, channels: channelCount,
                                            channelsLast: layout == .nhwc, minimumBatch: minimumBatch)
        switch layout {
        case .nchw: return ChannelGeometry(outer: s.samples, channels: channelCount, inner: s.spatial)
        case .nhwc: return ChannelGeometry(outer: s.samples * s.spatial, channels: channelCount, inner: 1)
        }
    }

    /// The origin its forward passes record in a cache:
    /// `.spatialBatchNorm(channelCount:layout:)`.
    @inlinable
    public var cacheOrigin: CacheOrigin { .spatialBatchNorm(channelCount: channelCount, layout: layout) }

    // The passes (forward, infer, backward, and their 16-bit forms) are
    // BatchStatisticsLayer's, in BatchStatisticsLayer.swift.
}
