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

/// How a layer with running statistics keeps them (PyTorch's `momentum` and
/// `track_running_stats`).
public enum RunningStatistics: String, Sendable, Hashable, Codable {
    /// After each training batch,
    /// `running = momentum * running + (1 - momentum) * batch` (PyTorch's
    /// `momentum=m` is NormKit's `1 - m`).
    case exponential
    /// The equal-weight average of every training batch's statistics so far
    /// (PyTorch's `momentum=None`): batch `t` (counting from 1, ``BatchNorm/batchesTracked``
    /// after it) makes `running = (1 - 1/t) * running + (1/t) * batch`, so the
    /// first batch replaces the initial values.
    case cumulative
    /// No running statistics (PyTorch's `track_running_stats=False`): both
    /// modes normalize with the batch's statistics (inference then needs 2
    /// values per statistic, as training does), nothing is updated, and
    /// `batchesTracked` stays as it is.
    case none
}

/// Which learned parameters a layer's affine map `y = gamma * xhat + beta`
/// has (PyTorch's `elementwise_affine`/`bias`/`affine`, Flax's
/// `use_scale`/`use_bias`, oneDNN's `use_scale`/`use_shift`).
///
/// An absent parameter's array is empty, and so must be the gradient buffer
/// passed for it; the passes compute nothing for it (`gamma` is taken as ones
/// and `beta` as zeros).
///
/// ```swift
/// var rms = try RMSNorm<Float>(featureCount: 8, affine: .scaleAndShift)   // with a learned shift
/// let (y, _) = try rms.forward(Tensor(randomNormal: [4, 8], seed: 3), mode: .training)
/// ```
public enum Affine: String, Sendable, Hashable, Codable {
    /// `gamma` and `beta`: the default of every layer but ``RMSNorm``.
    case scaleAndShift
    /// `gamma` only, `y = gamma * xhat`: PyTorch's `LayerNorm(bias=False)` and
    /// `RMSNorm`, Flax's `use_bias=False`; ``RMSNorm``'s default.
    case scaleOnly
    /// Neither, `y = xhat`: PyTorch's `affine=False` and `elementwise_affine=False`.
    case none

    /// Whether the layer has `gamma`.
    @inlinable
    public var hasScale: Bool { self != .none }
    /// Whether the layer has `beta`.
    @inlinable
    public var hasShift: Bool { self == .scaleAndShift }

    /// The number of `gamma` values a layer of `count` features or channels holds:
    /// `count`, or 0 without a scale.
    /// - Complexity: O(1).
    @inlinable
    public func scaleCount(_ count: Int) -> Int { hasScale ? count : 0 }
    /// The number of `beta` values a layer of `count` features or channels holds:
    /// `count`, or 0 without a shift.
    /// - Complexity: O(1).
    @inlinable
    public func shiftCount(_ count: Int) -> Int { hasShift ? count : 0 }

    /// The affine map with a scale when `scale` and a shift when `shift`: the
    /// one place a map is read from which parameters are present (a cache's
    /// arrays, a PyTorch state). A shift without a scale, which no case names
    /// and every caller refuses first, counts as both.
    @inlinable
    init(scale: Bool, shift: Bool) {
        self = shift ? .scaleAndShift : scale ? .scaleOnly : .none
    }
}

extension RunningStatistics {
    /// The mode whose statistics a forward pass in `mode` normalizes with:
    /// the batch's in both modes for ``none``.
    @inlinable
    func statisticsMode(_ mode: Mode) -> Mode { self == .none ? .training : mode }

    /// Whether a successful forward pass in `mode` counts a batch.
    @inlinable
    func counts(_ mode: Mode) -> Bool { mode == .training && self != .none }

    /// The update after a training batch, for a layer that has tracked
    /// `batchesTracked` batches before it; `nil` for ``none``.
    @inlinable
    func update<Scalar: BLASScalar>(momentum: Scalar, batchesTracked: Int) -> RunningUpdate<Scalar>? {
        switch self {
        case .exponential: return RunningUpdate(keep: momentum, take: 1 - momentum)
        case .cumulative:
            // PyTorch's factor 1/t, and its complement, in the layer's precision.
            let take = 1 / Scalar(batchesTracked &+ 1)
            return RunningUpdate(keep: 1 - take, take: take)
        case .none: return nil
        }
    }
}

/// One training batch's running-statistics update:
/// `running = keep * running + take * batch` (the variance's `take` times
/// `N / (N - 1)` for ``VarianceEstimator/unbiased``).
@usableFromInline
struct RunningUpdate<Scalar: BLASScalar>: Sendable {
    @usableFromInline let keep: Scalar
    @usableFromInline let take: Scalar
    @inlinable init(keep: Scalar, take: Scalar) { (self.keep, self.take) = (keep, take) }
}

/// The gradients of a normalization layer's loss with respect to its input and
/// its parameters.
public struct NormGradients<Scalar: BLASScalar>: Sendable, Equatable {
    /// `dL/dx`, the shape of the forward input.
    public var input: Tensor<Scalar>
    /// `dL/dgamma`, one per feature or channel; empty without a scale (``Affine``).
    public var gamma: [Scalar]
    /// `dL/dbeta`, one per feature or channel; empty without a shift (``Affine``).
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

    /// Sizes the buffers for an input of `shape` and the layer's `gamma` and
    /// `beta` counts (0 for an absent parameter, ``Affine``), reusing the
    /// storage when the sizes already match.
    @usableFromInline
    mutating func prepare(shape: [Int], gammaCount: Int, betaCount: Int) {
        input.prepare(shape: shape)
        gamma.resizeReusingStorage(to: gammaCount)
        beta.resizeReusingStorage(to: betaCount)
    }

    /// Sizes the gradients for an input of `shape` and `gammaCount` and
    /// `betaCount` parameters and calls `body` with them and `outputGradient` as the
    /// buffers of a backward pass: the one place the `Tensor` forms and
    /// ``NormalizationStep`` open them. `body` returns its error rather than
    /// throwing it (see `NormalizationStep.forward`).
    @inlinable
    mutating func withBuffers(
        outputGradient: UnsafeBufferPointer<Scalar>, shape: [Int], gammaCount: Int, betaCount: Int,
        _ body: (GradientBuffers<Scalar>) -> NormError?
    ) -> NormError? {
        prepare(shape: shape, gammaCount: gammaCount, betaCount: betaCount)
        return input.withUnsafeMutableBufferPointer { dx in
            gamma.withUnsafeMutableBufferPointer { dgamma in
                beta.withUnsafeMutableBufferPointer { dbeta in
                    body(GradientBuffers(dy: outputGradient, dx: dx, dgamma: dgamma, dbeta: dbeta))
                }
            }
        }
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
    /// The scale, one per feature or channel; empty when ``affine`` has none.
    var gamma: [Scalar] { get set }
    /// The shift, one per feature or channel; empty when ``affine`` has none.
    var beta: [Scalar] { get set }
    /// Which of `gamma` and `beta` the layer has.
    var affine: Affine { get }
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
/// A conforming layer implements the two entry points over borrowed memory
/// (`UnsafeBufferPointer`s and a shape) and ``cacheOrigin``; this protocol's
/// extension implements everything else on top of them, once: the entry points
/// over `Tensor` buffers, those over `Span`s, and the value API.
///
/// Keep one output, cache, gradients and workspace per layer in a training
/// loop (or one ``NormalizationStep``) and the entry points allocate nothing
/// after the first call (or a change of shape), on one thread or split over
/// several (``Threading``), on the calling thread and on the workers alike.
public protocol BufferedNormalizationLayer<Scalar>: NormalizationLayer
where Cache == NormCache<Scalar> {
    /// The layer a cache filled by this layer's forward pass records; its
    /// backward pass refuses a cache with another origin.
    var cacheOrigin: CacheOrigin { get }

    /// Normalizes `input`, of `shape` (row-major), into `output`, which holds
    /// as many scalars, saving what backward needs in `cache`.
    ///
    /// The cache copies `input` into its own storage (reused from call to
    /// call), so it never refers to the caller's memory afterwards, and
    /// `output` may be `input`'s own memory (normalization in place). After a
    /// throw, `output` and `cache` hold unspecified values and the layer's
    /// state is unchanged.
    /// - Throws: ``NormError/bufferCountMismatch(name:expected:actual:)`` when
    ///   `input` or `output` does not hold `product(shape)` scalars,
    ///   ``NormError/negativeDimension(shape:)``, ``NormError/shapeOverflow(shape:)``,
    ///   and the layer's errors for its `Tensor` entry point.
    /// - Complexity: O(product of `shape`).
    mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, shape: [Int], mode: Mode,
        into output: UnsafeMutableBufferPointer<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>) throws(NormError)

    /// Backpropagates `outputGradient` (the shape of the cached input)
    /// through the forward pass that filled `cache`, into `inputGradient` (as
    /// many scalars) and `gammaGradient` and `betaGradient` (one per feature or
    /// channel each).
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer, size, layout or group count, or from a forward pass
    ///   that threw; ``NormError/bufferCountMismatch(name:expected:actual:)``
    ///   for a buffer of another size.
    /// - Complexity: O(count of the cached input).
    func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, cache: Cache,
        inputGradient: UnsafeMutableBufferPointer<Scalar>,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>) throws(NormError)

    /// Normalizes `input`, of `shape`, into `output` for inference and keeps
    /// nothing for backward: non-mutating, no cache, `output` may be `input`'s
    /// own memory (in place). Equals `forward(mode: .inference)`'s output bit
    /// for bit and changes no state; layers with running statistics use them
    /// (the synchronized layers communicate nothing), the others compute the
    /// input's statistics as their forward does, and the layer's `activation`
    /// (where it has one) applies.
    /// - Throws: ``NormError/bufferCountMismatch(name:expected:actual:)`` when
    ///   `input` or `output` does not hold `product(shape)` scalars, and the
    ///   layer's forward errors.
    /// - Complexity: O(product of `shape`); allocation-free once `workspace`
    ///   is sized.
    func infer(
        _ input: UnsafeBufferPointer<Scalar>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>) throws(NormError)

    /// What a forward call refused before its pass over borrowed memory (a
    /// shape with a negative or overflowing extent) throws. A layer whose
    /// training forward is collective across processes (``SyncBatchNorm``,
    /// ``SyncSpatialBatchNorm``) first takes part in that pass's exchange with
    /// a status word that says so, so the other ranks throw too instead of
    /// waiting for it; the default returns `error`.
    /// - Complexity: O(1), or the pass's one collective.
    func refusingForward(_ error: NormError, mode: Mode) -> NormError

    /// What a backward call refused before its pass over borrowed memory (a
    /// cache from another layer, a gradient of another shape) throws; as
    /// ``refusingForward(_:mode:)``.
    /// - Complexity: O(1), or the pass's one collective.
    func refusingBackward(_ error: NormError, cache: Cache) -> NormError
}

extension NormalizationLayer {
    /// The affine map that `gamma` and `beta`'s counts show: a layer that
    /// stores none keeps both (``Affine/scaleAndShift``) unless an array is
    /// empty.
    /// - Complexity: O(1).
    public var affine: Affine { Affine(scale: !gamma.isEmpty, shift: !beta.isEmpty) }
}

extension BufferedNormalizationLayer {
    /// `error`: a layer of one process has no one to tell.
    /// - Complexity: O(1).
    @inlinable
    public func refusingForward(_ error: NormError, mode: Mode) -> NormError { error }

    /// `error`: a layer of one process has no one to tell.
    /// - Complexity: O(1).
    @inlinable
    public func refusingBackward(_ error: NormError, cache: Cache) -> NormError { error }

    /// Normalizes `input` into `output`, saving what backward needs in `cache`.
    /// All three buffers are sized on first use and reused afterwards. The
    /// cache shares `input` (no copy); writing the next batch into the same
    /// tensor while the cache holds it then copies it (copy-on-write), so a
    /// loop that refills one tensor should use the entry point over borrowed
    /// memory or a ``NormalizationStep``. After a throw, `output` and `cache`
    /// hold unspecified values and the layer's state is unchanged.
    /// - Throws: the layer's errors (see its type).
    /// - Complexity: O(count of `input`).
    @inlinable
    public mutating func forward(
        _ input: Tensor<Scalar>, mode: Mode, into output: inout Tensor<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        cache.share(input)
        output.prepare(shape: input.shape)
        // Errors leave the closures as values (see `NormalizationStep.forward`).
        let failure: NormError? = input.withUnsafeBufferPointer { x in
            output.withUnsafeMutableBufferPointer { y in
                do throws(NormError) {
                    try forward(x, shape: input.shape, mode: mode, into: y, cache: &cache,
                                workspace: &workspace)
                    return nil
                } catch { return error }
            }
        }
        if let failure { throw failure }
    }

    /// Backpropagates `outputGradient` through the forward pass that filled
    /// `cache`, into `gradients` (sized on first use and reused afterwards).
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer, size, layout or group count, or from a forward pass
    ///   that threw; ``NormError/gradientShapeMismatch(expected:actual:)`` when
    ///   `outputGradient`'s shape is not the cached input's.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward(
        _ outputGradient: Tensor<Scalar>, cache: Cache,
        into gradients: inout NormGradients<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try withGradientBuffers(outputGradient, cache: cache, into: &gradients) { b in
            do throws(NormError) {
                try backward(b.dy, cache: cache, inputGradient: b.dx, gammaGradient: b.dgamma,
                             betaGradient: b.dbeta, workspace: &workspace)
                return nil
            } catch { return error }
        }
    }

    /// The `Tensor` forms of backward (the closed form here, BatchNorm's
    /// staged one): checks that `cache` is this layer's and `outputGradient`
    /// has its input's shape, sizes `gradients`, and runs `body` on the
    /// buffers, which returns its error rather than throwing it (see
    /// `NormalizationStep.forward`).
    @inlinable
    func withGradientBuffers(
        _ outputGradient: Tensor<Scalar>, cache: Cache, into gradients: inout NormGradients<Scalar>,
        _ body: (GradientBuffers<Scalar>) -> NormError?
    ) throws(NormError) {
        do throws(NormError) {
            try Validation.origin(cache, expected: cacheOrigin)
            try Validation.gradientShape(outputGradient.shape, expected: cache.input.shape)
        } catch {
            throw refusingBackward(error, cache: cache)
        }
        let failure: NormError? = outputGradient.withUnsafeBufferPointer { dy in
            gradients.withBuffers(outputGradient: dy, shape: cache.input.shape,
                                  gammaCount: cache.affine.scaleCount(cache.gamma.count),
                                  betaCount: cache.affine.shiftCount(cache.gamma.count), body)
        }
        if let failure { throw failure }
    }

    /// The entry point over borrowed memory for `Span`s:
    /// `forward(_:shape:mode:into:cache:workspace:)` over buffers.
    /// - Throws: as that entry point.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public mutating func forward(
        _ input: Span<Scalar>, shape: [Int], mode: Mode, into output: inout MutableSpan<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try withBuffers(input, &output) { x, y throws(NormError) in
            try forward(x, shape: shape, mode: mode, into: y, cache: &cache, workspace: &workspace)
        }
    }

    /// The backward entry point over borrowed memory for `Span`s.
    /// - Throws: as the entry point over `UnsafeBufferPointer`s.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward(
        _ outputGradient: Span<Scalar>, cache: Cache,
        inputGradient: inout MutableSpan<Scalar>, gammaGradient: inout MutableSpan<Scalar>,
        betaGradient: inout MutableSpan<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try withBuffers(outputGradient, &inputGradient, &gammaGradient,
                        &betaGradient) { dy, dx, dgamma, dbeta throws(NormError) in
            try backward(dy, cache: cache, inputGradient: dx, gammaGradient: dgamma,
                         betaGradient: dbeta, workspace: &workspace)
        }
    }

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
