/// A normalization layer bundled with everything its training loop reuses:
/// the output, the cache, the gradients and the workspace.
///
/// ```swift
/// var step = NormalizationStep(try LayerNorm<Float>(featureCount: 128), inputShape: [64, 128])
/// var batch = [Float](repeating: 0, count: 64 * 128)   // memory the app owns
/// var dy = batch
/// for iteration in 0..<10 {
///     for i in batch.indices { batch[i] = Float((i + iteration) % 17) * 0.1 }
///     try batch.withUnsafeBufferPointer { try step.forward($0) }   // of step.inputShape
///     // step.output is y; the loss gives dy (here sum(y²)/2, so dy = y)
///     step.output.withUnsafeBufferPointer { y in
///         for i in dy.indices { dy[i] = y[i] }
///     }
///     try dy.withUnsafeBufferPointer { try step.backward($0) }
///     // step.gradients.input, .gamma, .beta
/// }
/// ```
///
/// After the first call (or a change of shape) a step allocates nothing, on
/// one thread or split over several (``Threading``), in an optimized build
/// (a debug build allocates on every call, here as everywhere). Give the
/// shape once (``init(_:inputShape:)``) rather than as an array literal at
/// each call, which Swift builds anew unless its optimizer can keep it on the
/// stack. The forward pass copies its input into the
/// cache's own storage, so the step never refers to the caller's memory: the
/// next batch may be written into the same buffer or tensor. Reading
/// ``output`` or ``gradients`` hands out a copy-on-write reference; keep it past
/// the next pass and that pass copies (allocates) instead of overwriting it.
public struct NormalizationStep<Layer: BufferedNormalizationLayer>: Sendable {
    /// The scalar type of the layer.
    public typealias Scalar = Layer.Scalar

    /// The layer: its parameters, running statistics and settings, which the
    /// training loop updates in place (`step.layer.gamma[j] -= ...`).
    public var layer: Layer
    /// The output of the last forward pass (unspecified after one that threw).
    public var output: Tensor<Scalar> { storedOutput }
    /// The gradients of the last backward pass (unspecified after one that threw).
    public var gradients: NormGradients<Scalar> { storedGradients }
    /// What the last forward pass saved for backward.
    public var cache: NormCache<Scalar> { storedCache }

    @usableFromInline var storedOutput: Tensor<Scalar>
    @usableFromInline var storedGradients: NormGradients<Scalar>
    @usableFromInline var storedCache: NormCache<Scalar>
    @usableFromInline var workspace: Workspace<Scalar>
    /// The sum of a residual forward (``ResidualNormalizationLayer``); empty until one runs.
    @usableFromInline var storedSum: Tensor<Scalar>

    /// The shape a forward call without `shape:` reads its input in: set by
    /// ``init(_:inputShape:)``, by assignment, or by the last forward call
    /// that named a shape. Empty until then.
    public var inputShape: [Int]

    /// A step around `layer`, with empty buffers that the first pass sizes.
    /// - Complexity: O(1).
    public init(_ layer: Layer) {
        self.init(layer, inputShape: [])
    }

    /// A step around `layer` whose forward calls read inputs of `inputShape`
    /// (`forward(_:mode:)` over a buffer), so that a
    /// training loop passes no shape array at all. The shape is checked by
    /// the first forward call, as any other.
    /// - Complexity: O(1).
    public init(_ layer: Layer, inputShape: [Int]) {
        self.layer = layer
        self.inputShape = inputShape
        storedSum = .empty
        storedOutput = .empty
        storedGradients = NormGradients()
        storedCache = NormCache()
        workspace = Workspace()
    }

    /// Normalizes `input`, of `shape`, into ``output``, saving what backward
    /// needs in ``cache`` (a copy of the input, in storage reused from step to
    /// step).
    /// - Throws: the layer's errors, ``NormError/negativeDimension(shape:)``,
    ///   ``NormError/shapeOverflow(shape:)``,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``. The layer's
    ///   state is unchanged after a throw.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public mutating func forward(_ input: UnsafeBufferPointer<Scalar>, shape: [Int],
                                 mode: Mode = .training) throws(NormError) {
        do throws(NormError) {
            _ = try Tensor<Scalar>.elementCount(of: shape)
        } catch {
            throw layer.refusingForward(error, mode: mode)
        }
        storedOutput.prepare(shape: shape)
        // The error leaves the closure as a value, not thrown through it: with
        // the thrown form inlined into an app's top-level code (main.swift),
        // Swift 6.3.1's release build failed LLVM's verifier ("swifterror value
        // can only be loaded and stored from, or as a swifterror argument").
        // Every @inlinable entry point that opens buffers does the same.
        let failure: NormError? = storedOutput.withUnsafeMutableBufferPointer { y in
            do throws(NormError) {
                try layer.forward(input, shape: shape, mode: mode, into: y, cache: &storedCache,
                                  workspace: &workspace)
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
        if inputShape != shape { inputShape = shape }
    }

    /// Normalizes `input`, of ``inputShape``, as `forward(_:shape:mode:)`
    /// does. It allocates nothing once the buffers are sized: the shape is the
    /// step's own array. (An array literal written at each call, `shape: [n, d]`,
    /// is built at each call unless the optimizer keeps it on the stack, which
    /// it does in some call sites and not in others.)
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` when no shape
    ///   was given yet, and the errors of the form with `shape:`.
    /// - Complexity: O(product of ``inputShape``).
    @inlinable
    public mutating func forward(_ input: UnsafeBufferPointer<Scalar>, mode: Mode = .training) throws(NormError) {
        guard !inputShape.isEmpty else {
            throw layer.refusingForward(.invalidShape(expected: "an input shape: NormalizationStep(_:inputShape:) or forward(_:shape:)",
                                                      actual: []), mode: mode)
        }
        try forward(input, shape: inputShape, mode: mode)
    }

    /// Normalizes a tensor, as the form over an `UnsafeBufferPointer` does.
    /// The step copies it, so the caller may overwrite the tensor afterwards
    /// without a copy-on-write copy.
    /// - Throws: the layer's errors.
    /// - Complexity: O(count of `input`).
    @inlinable
    public mutating func forward(_ input: Tensor<Scalar>, mode: Mode = .training) throws(NormError) {
        let failure: NormError? = input.withUnsafeBufferPointer { x in
            do throws(NormError) { try forward(x, shape: input.shape, mode: mode); return nil }
            catch { return error }
        }
        if let failure { throw failure }
    }

    /// Normalizes a `Span`, as the form over an `UnsafeBufferPointer` does.
    /// - Throws: as that method.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public mutating func forward(_ input: Span<Scalar>, shape: [Int], mode: Mode = .training) throws(NormError) {
        let failure: NormError? = input.withUnsafeBufferPointer { x in
            do throws(NormError) { try forward(x, shape: shape, mode: mode); return nil }
            catch { return error }
        }
        if let failure { throw failure }
    }

    /// Backpropagates `outputGradient` (as many scalars as the last forward
    /// input, in its shape) through the last forward pass into ``gradients``.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` when the last
    ///   forward pass threw or none ran;
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``.
    /// - Complexity: O(count of the last forward input).
    @inlinable
    public mutating func backward(_ outputGradient: UnsafeBufferPointer<Scalar>) throws(NormError) {
        try backpropagate(outputGradient) { b, layer, cache, workspace throws(NormError) in
            try layer.backward(b.dy, cache: cache, inputGradient: b.dx, gammaGradient: b.dgamma,
                               betaGradient: b.dbeta, workspace: &workspace)
        }
    }

    /// The buffer backwards' one path: refuses a cache the layer did not fill
    /// (`refusingBackward`, which leaves the step as it was), sizes the stored
    /// gradients for the cached input and parameters, and runs `body` on them
    /// with the layer, its cache and the workspace.
    /// - Complexity: O(1) here, and `body`'s.
    @inlinable
    mutating func backpropagate(
        _ outputGradient: UnsafeBufferPointer<Scalar>,
        _ body: (GradientBuffers<Scalar>, Layer, NormCache<Scalar>, inout Workspace<Scalar>) throws(NormError)
            -> Void
    ) throws(NormError) {
        do throws(NormError) {
            try Validation.origin(storedCache, expected: layer.cacheOrigin)
        } catch {
            throw layer.refusingBackward(error, cache: storedCache)
        }
        let failure = storedGradients.withBuffers(
            outputGradient: outputGradient, shape: storedCache.input.shape,
            gammaCount: storedCache.affine.scaleCount(storedCache.gamma.count),
            betaCount: storedCache.affine.shiftCount(storedCache.gamma.count)
        ) { b in
            do throws(NormError) {
                try body(b, layer, storedCache, &workspace)
                return nil
            } catch { return error }
        }
        if let failure { throw failure }
    }

    /// Backpropagates a tensor of the last forward input's shape.
    /// - Throws: ``NormError/gradientShapeMismatch(expected:actual:)`` for
    ///   another shape, and the errors of the buffer form.
    /// - Complexity: O(count of the last forward input).
    @inlinable
    public mutating func backward(_ outputGradient: Tensor<Scalar>) throws(NormError) {
        try layer.backward(outputGradient, cache: storedCache, into: &storedGradients, workspace: &workspace)
    }

    /// Backpropagates a `Span`; see the buffer form.
    /// - Throws: as the buffer form.
    /// - Complexity: O(count of the last forward input).
    @inlinable
    public mutating func backward(_ outputGradient: Span<Scalar>) throws(NormError) {
        let failure: NormError? = outputGradient.withUnsafeBufferPointer { dy in
            do throws(NormError) { try backward(dy); return nil } catch { return error }
        }
        if let failure { throw failure }
    }
}

extension NormalizationStep where Layer: ResidualNormalizationLayer {
    /// `input + residual` of the last residual forward pass (the next
    /// block's residual); empty before one, unspecified after one that threw.
    public var sum: Tensor<Scalar> { storedSum }

    /// Normalizes `input + residual` (both of `shape`) into ``output``,
    /// writing the sum into ``sum``, with the layer's residual forward pass.
    /// - Throws: the layer's errors, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming the
    ///   buffer of the wrong size. The layer's state is unchanged after a throw.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public mutating func forward(_ input: UnsafeBufferPointer<Scalar>,
                                 residual: UnsafeBufferPointer<Scalar>, shape: [Int],
                                 mode: Mode = .training) throws(NormError) {
        do throws(NormError) {
            _ = try Tensor<Scalar>.elementCount(of: shape)
        } catch {
            throw layer.refusingForward(error, mode: mode)
        }
        storedOutput.prepare(shape: shape)
        storedSum.prepare(shape: shape)
        let failure: NormError? = storedOutput.withUnsafeMutableBufferPointer { y in
            storedSum.withUnsafeMutableBufferPointer { s in
                do throws(NormError) {
                    try layer.forward(input, residual: residual, shape: shape, mode: mode, into: y,
                                      sum: s, cache: &storedCache, workspace: &workspace)
                    return nil
                } catch { return error }
            }
        }
        if let failure { throw failure }
    }

    /// Backpropagates `outputGradient` through the last forward pass and adds
    /// `sumGradient` (the gradient reaching ``sum`` from later blocks) into
    /// ``gradients``' input gradient, which is also the residual's.
    /// - Throws: as `backward(_:)` over a buffer, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming `sumGradient`.
    /// - Complexity: O(count of the last forward input).
    @inlinable
    public mutating func backward(_ outputGradient: UnsafeBufferPointer<Scalar>,
                                  sumGradient: UnsafeBufferPointer<Scalar>) throws(NormError) {
        try backpropagate(outputGradient) { b, layer, cache, workspace throws(NormError) in
            try layer.backward(b.dy, sumGradient: sumGradient, cache: cache, inputGradient: b.dx,
                               gammaGradient: b.dgamma, betaGradient: b.dbeta, workspace: &workspace)
        }
    }
}
