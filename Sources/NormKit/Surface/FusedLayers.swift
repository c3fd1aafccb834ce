// The fused forms of DESIGN §2.4 over the entry points each layer implements
// on borrowed memory: `infer` (every buffered layer), the residual and
// activation forms of the per-channel layers (`ActivatedNormalizationLayer`)
// and the residual sum of LayerNorm and RMSNorm (`ResidualNormalizationLayer`),
// each with its `Tensor`, `Span` and value forms written once here.

extension BufferedNormalizationLayer {
    /// Inference into `output` (sized on first use and reused afterwards),
    /// keeping nothing for backward:
    /// `infer(_:shape:into:workspace:)` over buffers.
    /// - Throws: as that entry point.
    /// - Complexity: O(count of `input`).
    @inlinable
    public func infer(_ input: Tensor<Scalar>, into output: inout Tensor<Scalar>,
                      workspace: inout Workspace<Scalar>) throws(NormError) {
        output.prepare(shape: input.shape)
        let failure: NormError? = input.withUnsafeBufferPointer { x in
            output.withUnsafeMutableBufferPointer { y in
                do throws(NormError) {
                    try infer(x, shape: input.shape, into: y, workspace: &workspace)
                    return nil
                } catch { return error }
            }
        }
        if let failure { throw failure }
    }

    /// Inference that returns its output and keeps nothing for backward: the
    /// value form of ``infer(_:into:workspace:)``.
    /// - Throws: as `infer(_:shape:into:workspace:)` over buffers.
    /// - Complexity: O(count of `input`).
    @inlinable
    public func infer(_ input: Tensor<Scalar>) throws(NormError) -> Tensor<Scalar> {
        var output = Tensor<Scalar>.empty
        var workspace = Workspace<Scalar>()
        try infer(input, into: &output, workspace: &workspace)
        return output
    }

    /// `infer(_:shape:into:workspace:)` over buffers over `Span`s.
    /// `output` may not be `input` here (Swift's exclusivity); use the
    /// entry point over buffers to normalize in place.
    /// - Throws: as that entry point.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public func infer(_ input: Span<Scalar>, shape: [Int], into output: inout MutableSpan<Scalar>,
                      workspace: inout Workspace<Scalar>) throws(NormError) {
        try withBuffers(input, &output) { x, y throws(NormError) in
            try infer(x, shape: shape, into: y, workspace: &workspace)
        }
    }
}

/// A per-channel layer whose output pass can add a residual and apply an
/// activation (DESIGN §2.4): ``BatchNorm``, ``SpatialBatchNorm``,
/// ``GroupNorm``, ``InstanceNorm``, ``SyncBatchNorm`` and ``SyncSpatialBatchNorm``.
///
/// `y = act(gamma·xhat + beta + residual)` in the same pass that writes `y`
/// (ResNet's block end, `relu(bn(x) + shortcut)`), equal bit for bit to the
/// layer, an add and a ReLU run one after another. With ``activation``
/// `.relu` the cache keeps one byte per output (whether it is positive),
/// and every backward form masks the output gradient by it (gradient 0
/// where the output is 0: PyTorch's convention at `relu(0)`).
public protocol ActivatedNormalizationLayer<Scalar>: BufferedNormalizationLayer {
    /// Applied after the affine map (and the residual) in the output pass;
    /// `.none` by default.
    var activation: FusedActivation { get set }

    /// Normalizes `input` into `output`, adding `residual` (same count as
    /// `input`; `nil` for none) and applying ``activation``, saving what
    /// backward needs in `cache`. `output` may be `input`'s or `residual`'s
    /// own memory.
    /// - Throws: the layer's errors for its plain forward, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming
    ///   `residual`. State is unchanged after a throw.
    /// - Complexity: O(product of `shape`).
    mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, residual: UnsafeBufferPointer<Scalar>?,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>) throws(NormError)

    /// Backpropagates `outputGradient` through the forward pass that filled
    /// `cache` (masked by its output's sign after a ReLU), writing the
    /// residual's gradient (`dy`, masked) into `residualGradient` when given
    /// (a buffer of the input's count, distinct from the others).
    /// - Throws: the layer's errors for its plain backward, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming
    ///   `residualGradient`.
    /// - Complexity: O(count of the cached input).
    func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, cache: Cache,
        inputGradient: UnsafeMutableBufferPointer<Scalar>,
        residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>) throws(NormError)
}

extension ActivatedNormalizationLayer {
    /// The forward pass without a residual (``activation`` still applies).
    /// - Throws: the layer's errors (see its type).
    /// - Complexity: O(product of `shape`).
    @inlinable
    public mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, shape: [Int], mode: Mode,
        into output: UnsafeMutableBufferPointer<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try forward(input, residual: nil, shape: shape, mode: mode, into: output, cache: &cache,
                    workspace: &workspace)
    }

    /// The backward pass without a residual gradient.
    /// - Throws: the layer's errors (see its type).
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, cache: Cache,
        inputGradient: UnsafeMutableBufferPointer<Scalar>,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try backward(outputGradient, cache: cache, inputGradient: inputGradient,
                     residualGradient: nil, gammaGradient: gammaGradient, betaGradient: betaGradient,
                     workspace: &workspace)
    }

    /// `forward(_:residual:shape:mode:into:cache:workspace:)` over tensors:
    /// `output` is sized on first use and reused; the cache shares `input`.
    /// - Throws: ``NormError/gradientShapeMismatch(expected:actual:)`` when
    ///   `residual`'s shape is not `input`'s, and the layer's errors.
    /// - Complexity: O(count of `input`).
    @inlinable
    public mutating func forward(
        _ input: Tensor<Scalar>, residual: Tensor<Scalar>, mode: Mode,
        into output: inout Tensor<Scalar>, cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        do throws(NormError) {
            try Validation.residualShape(residual.shape, expected: input.shape)
        } catch { throw refusingForward(error, mode: mode) }
        cache.share(input)
        output.prepare(shape: input.shape)
        let failure: NormError? = input.withUnsafeBufferPointer { x in
            residual.withUnsafeBufferPointer { r in
                output.withUnsafeMutableBufferPointer { y in
                    do throws(NormError) {
                        try forward(x, residual: r, shape: input.shape, mode: mode, into: y,
                                    cache: &cache, workspace: &workspace)
                        return nil
                    } catch { return error }
                }
            }
        }
        if let failure { throw failure }
    }

    /// The value form of ``forward(_:residual:mode:into:cache:workspace:)``.
    /// - Throws: as that form.
    /// - Complexity: O(count of `input`).
    @inlinable
    public mutating func forward(_ input: Tensor<Scalar>, residual: Tensor<Scalar>, mode: Mode)
        throws(NormError) -> (output: Tensor<Scalar>, cache: Cache) {
        var output = Tensor<Scalar>.empty
        var cache = Cache()
        var workspace = Workspace<Scalar>()
        try forward(input, residual: residual, mode: mode, into: &output, cache: &cache,
                    workspace: &workspace)
        return (output, cache)
    }

    /// `backward(_:cache:inputGradient:residualGradient:gammaGradient:betaGradient:workspace:)`
    /// over tensors: `gradients` and `residualGradient` are sized on first
    /// use and reused.
    /// - Throws: as ``BufferedNormalizationLayer/backward(_:cache:into:workspace:)``.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward(
        _ outputGradient: Tensor<Scalar>, cache: Cache, into gradients: inout NormGradients<Scalar>,
        residualGradient: inout Tensor<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        residualGradient.prepare(shape: outputGradient.shape)
        try withGradientBuffers(outputGradient, cache: cache, into: &gradients) { b in
            residualGradient.withUnsafeMutableBufferPointer { dr in
                do throws(NormError) {
                    try backward(b.dy, cache: cache, inputGradient: b.dx, residualGradient: dr,
                                 gammaGradient: b.dgamma, betaGradient: b.dbeta,
                                 workspace: &workspace)
                    return nil
                } catch { return error }
            }
        }
    }

    /// The value form of ``backward(_:cache:into:residualGradient:workspace:)``:
    /// the layer's gradients and the residual's (`dy` masked by the output's
    /// sign after a ReLU, `dy` itself otherwise), in fresh tensors.
    /// - Throws: as that form.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backwardWithResidual(_ outputGradient: Tensor<Scalar>, cache: Cache)
        throws(NormError) -> (gradients: NormGradients<Scalar>, residualGradient: Tensor<Scalar>) {
        var gradients = NormGradients<Scalar>()
        var residualGradient = Tensor<Scalar>.empty
        var workspace = Workspace<Scalar>()
        try backward(outputGradient, cache: cache, into: &gradients,
                     residualGradient: &residualGradient, workspace: &workspace)
        return (gradients, residualGradient)
    }

    /// `backward(_:cache:inputGradient:residualGradient:gammaGradient:betaGradient:workspace:)`
    /// over `Span`s.
    /// - Throws: as that entry point.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward(
        _ outputGradient: Span<Scalar>, cache: Cache, inputGradient: inout MutableSpan<Scalar>,
        residualGradient: inout MutableSpan<Scalar>, gammaGradient: inout MutableSpan<Scalar>,
        betaGradient: inout MutableSpan<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try withBuffers(outputGradient, &inputGradient, &residualGradient, &gammaGradient,
                        &betaGradient) { dy, dx, dr, dgamma, dbeta throws(NormError) in
            try backward(dy, cache: cache, inputGradient: dx,
                         residualGradient: dr, gammaGradient: dgamma,
                         betaGradient: dbeta, workspace: &workspace)
        }
    }

    /// `forward(_:residual:shape:mode:into:cache:workspace:)` over `Span`s.
    /// - Throws: as that entry point.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public mutating func forward(
        _ input: Span<Scalar>, residual: Span<Scalar>, shape: [Int], mode: Mode,
        into output: inout MutableSpan<Scalar>, cache: inout Cache,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try withBuffers(input, residual, &output) { x, r, y throws(NormError) in
            try forward(x, residual: r, shape: shape, mode: mode, into: y,
                        cache: &cache, workspace: &workspace)
        }
    }
}

/// A layer normalized over each row's features that can take a residual
/// (DESIGN §2.4): ``LayerNorm`` and ``RMSNorm``, as a transformer block's
/// `norm(x + residual)`.
///
/// `s = input + residual` is written to `sum` (the next block's residual) and
/// normalized in the same pass, block by block while the block is in L2:
/// one read of each input and one write of each output, equal bit for bit to
/// the add and the layer run one after another. Backward takes the gradient
/// that reaches `sum` from later blocks and returns one gradient for `input`
/// and `residual`: `d(norm(s))/ds · dy + sumGradient`.
public protocol ResidualNormalizationLayer<Scalar>: BufferedNormalizationLayer {
    /// Normalizes `s = input + residual` into `output`, writing `s` to `sum`
    /// (or, when `sum` is `nil`, keeping it only in the cache as its input),
    /// and saving what backward needs in `cache` (which copies `s`).
    /// `output` may be `input`'s or `residual`'s memory; `sum` may be either
    /// too, but not `output`.
    /// - Throws: the layer's forward errors, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming
    ///   `residual` or `sum`. State is unchanged after a throw.
    /// - Complexity: O(product of `shape`).
    mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, residual: UnsafeBufferPointer<Scalar>,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Scalar>,
        sum: UnsafeMutableBufferPointer<Scalar>?, cache: inout Cache,
        workspace: inout Workspace<Scalar>) throws(NormError)

    /// Backpropagates `outputGradient` through the forward pass that filled
    /// `cache` and adds `sumGradient` (the gradient reaching `sum` from later
    /// blocks; `nil` for none): `inputGradient` is the gradient of both
    /// `input` and `residual`. A plain forward's cache works too.
    /// - Throws: the layer's backward errors, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming `sumGradient`.
    /// - Complexity: O(count of the cached input).
    func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, sumGradient: UnsafeBufferPointer<Scalar>?,
        cache: Cache, inputGradient: UnsafeMutableBufferPointer<Scalar>,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>) throws(NormError)
}

extension ResidualNormalizationLayer {
    /// `forward(_:residual:shape:mode:into:sum:cache:workspace:)` over
    /// tensors: `output` and `sum` are sized on first use and reused, and
    /// the cache shares `sum` (no copy).
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` when `residual`'s
    ///   shape is not `input`'s, and the layer's errors.
    /// - Complexity: O(count of `input`).
    @inlinable
    public mutating func forward(
        _ input: Tensor<Scalar>, residual: Tensor<Scalar>, mode: Mode,
        into output: inout Tensor<Scalar>, sum: inout Tensor<Scalar>, cache: inout Cache,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try Validation.residualShape(residual.shape, expected: input.shape)
        // The sum's storage becomes the cache's input (unique, so written in
        // place), and the caller's `sum` shares it afterwards.
        cache.share(.empty)
        cache.exchangeInput(&sum)
        output.prepare(shape: input.shape)
        let failure: NormError? = input.withUnsafeBufferPointer { x in
            residual.withUnsafeBufferPointer { r in
                output.withUnsafeMutableBufferPointer { y in
                    do throws(NormError) {
                        try forward(x, residual: r, shape: input.shape, mode: mode, into: y,
                                    sum: nil, cache: &cache, workspace: &workspace)
                        return nil
                    } catch { return error }
                }
            }
        }
        sum = cache.input
        if let failure { throw failure }
    }

    /// The value form of ``forward(_:residual:mode:into:sum:cache:workspace:)``.
    /// - Throws: as that form.
    /// - Complexity: O(count of `input`).
    @inlinable
    public mutating func forward(_ input: Tensor<Scalar>, residual: Tensor<Scalar>, mode: Mode)
        throws(NormError) -> (output: Tensor<Scalar>, sum: Tensor<Scalar>, cache: Cache) {
        var output = Tensor<Scalar>.empty, sum = Tensor<Scalar>.empty
        var cache = Cache()
        var workspace = Workspace<Scalar>()
        try forward(input, residual: residual, mode: mode, into: &output, sum: &sum, cache: &cache,
                    workspace: &workspace)
        return (output, sum, cache)
    }

    /// `backward(_:sumGradient:cache:inputGradient:gammaGradient:betaGradient:workspace:)`
    /// over tensors, into `gradients` (sized on first use and reused).
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` when
    ///   `sumGradient`'s shape is not the cached input's, and as
    ///   ``BufferedNormalizationLayer/backward(_:cache:into:workspace:)``.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward(
        _ outputGradient: Tensor<Scalar>, sumGradient: Tensor<Scalar>?, cache: Cache,
        into gradients: inout NormGradients<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        if let sumGradient {
            try Validation.residualShape(sumGradient.shape, expected: cache.input.shape,
                                         name: "sumGradient")
        }
        try withGradientBuffers(outputGradient, cache: cache, into: &gradients) { b in
            Tensor.withOptionalBuffer(sumGradient) { ds in
                do throws(NormError) {
                    try backward(b.dy, sumGradient: ds, cache: cache, inputGradient: b.dx,
                                 gammaGradient: b.dgamma, betaGradient: b.dbeta,
                                 workspace: &workspace)
                    return nil
                } catch { return error }
            }
        }
    }

    /// The value form of ``backward(_:sumGradient:cache:into:workspace:)``.
    /// - Throws: as that form.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward(_ outputGradient: Tensor<Scalar>, sumGradient: Tensor<Scalar>?,
                         cache: Cache) throws(NormError) -> NormGradients<Scalar> {
        var gradients = NormGradients<Scalar>()
        var workspace = Workspace<Scalar>()
        try backward(outputGradient, sumGradient: sumGradient, cache: cache, into: &gradients,
                     workspace: &workspace)
        return gradients
    }

    /// `forward(_:residual:shape:mode:into:sum:cache:workspace:)` over `Span`s.
    /// - Throws: as that entry point.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public mutating func forward(
        _ input: Span<Scalar>, residual: Span<Scalar>, shape: [Int], mode: Mode,
        into output: inout MutableSpan<Scalar>, sum: inout MutableSpan<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try withBuffers(input, residual, &output, &sum) { x, r, y, s throws(NormError) in
            try forward(x, residual: r, shape: shape, mode: mode, into: y, sum: s,
                        cache: &cache, workspace: &workspace)
        }
    }

    /// `backward(_:sumGradient:cache:inputGradient:gammaGradient:betaGradient:workspace:)`
    /// over `Span`s (`sumGradient` of the input's count).
    /// - Throws: as that entry point.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward(
        _ outputGradient: Span<Scalar>, sumGradient: Span<Scalar>, cache: Cache,
        inputGradient: inout MutableSpan<Scalar>, gammaGradient: inout MutableSpan<Scalar>,
        betaGradient: inout MutableSpan<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try withBuffers(outputGradient, sumGradient, &inputGradient, &gammaGradient,
                        &betaGradient) { dy, ds, dx, dgamma, dbeta throws(NormError) in
            try backward(dy, sumGradient: ds, cache: cache, inputGradient: dx,
                         gammaGradient: dgamma, betaGradient: dbeta,
                         workspace: &workspace)
        }
    }
}

extension Tensor {
    /// Calls `body` with `tensor`'s scalars, or with `nil` when there is no tensor.
    @inlinable
    static func withOptionalBuffer<R>(
        _ tensor: Tensor<Scalar>?, _ body: (UnsafeBufferPointer<Scalar>?) -> R
    ) -> R {
        guard let tensor else { return body(nil) }
        return tensor.withUnsafeBufferPointer { body($0) }
    }
}
