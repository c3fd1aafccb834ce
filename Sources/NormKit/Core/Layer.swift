/// Whether a forward pass normalizes with the batch's statistics (and updates
/// running statistics) or with the running statistics.
public enum Mode: String, Sendable, Hashable, Codable {
    /// Batch statistics; layers with running statistics update them.
    case training
    /// Running statistics; nothing changes.
    case inference
}

/// Which implementation a layer computes with. Both give the same results
/// (Double within 1e-12 relative, Float within 1e-5).
public enum Backend: String, Sendable, Hashable, Codable {
    /// Reductions as BLAS calls (`gemv`, `axpy`, `scal`) over row blocks sized
    /// to stay in L2, merged with Chan's formula. The default everywhere.
    case blas
    /// The textbook: nested loops, two passes for the variance, no blocking, no BLAS.
    case naive
}

/// What the running variance is fed during training.
public enum VarianceEstimator: String, Sendable, Hashable, Codable {
    /// The batch's biased variance `Σ(x - mean)² / N`: cs231n, Keras, ONNX.
    case biased
    /// The unbiased `Σ(x - mean)² / (N - 1)`, that is `N / (N - 1)` times the
    /// biased one: PyTorch. Normalization itself always uses the biased variance.
    case unbiased
}

/// The gradients of a normalization layer's loss with respect to its input and
/// its parameters.
public struct NormGradients<Scalar: BLASScalar>: Sendable, Equatable {
    /// `dL/dx`, the shape of the forward input.
    public var input: Tensor<Scalar>
    /// `dL/dgamma`, one per feature or channel.
    public var gamma: [Scalar]
    /// `dL/dbeta`, one per feature or channel.
    public var beta: [Scalar]

    /// Gradients from their parts.
    public init(input: Tensor<Scalar>, gamma: [Scalar], beta: [Scalar]) {
        self.input = input
        self.gamma = gamma
        self.beta = beta
    }

    /// Empty gradients, to be sized by the first allocation-free backward call
    /// that fills them and reused without allocation afterwards.
    public init() {
        self.init(input: .empty, gamma: [], beta: [])
    }

    /// Sizes the buffers for an input of `shape` and `parameterCount` parameters,
    /// reusing the storage when the sizes already match.
    @usableFromInline
    mutating func prepare(shape: [Int], parameterCount: Int) {
        input.prepare(shape: shape)
        gamma.resizeReusingStorage(to: parameterCount)
        beta.resizeReusingStorage(to: parameterCount)
    }
}

/// A normalization layer: a forward pass that returns its output and a cache,
/// and a backward pass that turns the output's gradient and that cache into
/// ``NormGradients``.
///
/// `gamma` starts at ones and `beta` at zeros; the cache holds what backward
/// needs, including the `gamma` that forward used, so changing `gamma` between
/// forward and backward does not change the gradient.
public protocol NormalizationLayer<Scalar>: Sendable {
    associatedtype Scalar: BLASScalar
    associatedtype Cache: Sendable
    /// The scale, one per feature or channel.
    var gamma: [Scalar] { get set }
    /// The shift, one per feature or channel.
    var beta: [Scalar] { get set }
    /// The implementation used by ``forward(_:mode:)`` and ``backward(_:cache:)``.
    var backend: Backend { get set }
    /// Normalizes `input`.
    mutating func forward(_ input: Tensor<Scalar>, mode: Mode) throws(NormError)
        -> (output: Tensor<Scalar>, cache: Cache)
    /// Backpropagates `outputGradient` through the forward pass that made `cache`.
    func backward(_ outputGradient: Tensor<Scalar>, cache: Cache) throws(NormError)
        -> NormGradients<Scalar>
}

/// A normalization layer with allocation-free entry points over caller-owned
/// buffers, from which its value API (``NormalizationLayer/forward(_:mode:)``,
/// ``NormalizationLayer/backward(_:cache:)``) follows.
///
/// A conforming layer implements only the two buffer-taking methods; this
/// protocol's extension implements the value API by calling them with fresh
/// buffers. Keep one output, cache, gradients and workspace per layer in a
/// training loop and the buffer-taking methods allocate nothing after the
/// first call (or a change of shape), on one thread; split over several
/// threads (``Threading``) a pass allocates once per parallel phase, at most
/// twice.
public protocol BufferedNormalizationLayer<Scalar>: NormalizationLayer
where Cache == NormCache<Scalar> {
    /// Normalizes `input` into `output`, saving what backward needs in `cache`.
    /// All three buffers are sized on first use and reused afterwards. After a
    /// throw, `output` and `cache` hold unspecified values and the layer's
    /// state is unchanged.
    mutating func forward(
        _ input: Tensor<Scalar>, mode: Mode, into output: inout Tensor<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>) throws(NormError)

    /// Backpropagates `outputGradient` through the forward pass that filled
    /// `cache`, into `gradients` (sized on first use and reused afterwards).
    func backward(
        _ outputGradient: Tensor<Scalar>, cache: Cache,
        into gradients: inout NormGradients<Scalar>,
        workspace: inout Workspace<Scalar>) throws(NormError)
}

extension BufferedNormalizationLayer {
    /// The value API: ``forward(_:mode:into:cache:workspace:)`` with fresh buffers.
    @inlinable
    public mutating func forward(_ input: Tensor<Scalar>, mode: Mode) throws(NormError)
        -> (output: Tensor<Scalar>, cache: Cache) {
        var output = Tensor<Scalar>.empty
        var cache = Cache()
        var workspace = Workspace<Scalar>()
        try forward(input, mode: mode, into: &output, cache: &cache, workspace: &workspace)
        return (output, cache)
    }

    /// The value API: ``backward(_:cache:into:workspace:)`` with fresh buffers.
    @inlinable
    public func backward(_ outputGradient: Tensor<Scalar>, cache: Cache) throws(NormError)
        -> NormGradients<Scalar> {
        var gradients = NormGradients<Scalar>()
        var workspace = Workspace<Scalar>()
        try backward(outputGradient, cache: cache, into: &gradients, workspace: &workspace)
        return gradients
    }
}
