/// A normalization layer bundled with everything its training loop reuses:
/// the output, the cache, the gradients and the workspace.
///
/// ```swift
/// var step = NormalizationStep(try LayerNorm<Float>(featureCount: 128))
/// for batch in batches {                       // [Float] buffers the app owns
///     try batch.withUnsafeBufferPointer { x in
///         try step.forward(x, shape: [64, 128])
///     }
///     // ... step.output is y; the loss gives dy ...
///     try step.backward(dy)
///     // step.gradients.input, .gamma, .beta
/// }
/// ```
///
/// After the first call (or a change of shape) a step allocates nothing, on
/// one thread or split over several (``Threading``). The forward pass copies its input into the
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

    /// A step around `layer`, with empty buffers that the first pass sizes.
    public init(_ layer: Layer) {
        self.layer = layer
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
        do throws(NormError) {
            try Validation.origin(storedCache, expected: layer.cacheOrigin)
        } catch {
            throw layer.refusingBackward(error, cache: storedCache)
        }
        let failure = storedGradients.withBuffers(
            outputGradient: outputGradient, shape: storedCache.input.shape,
            parameterCount: storedCache.gamma.count
        ) { b in
            do throws(NormError) {
                try layer.backward(b.dy, cache: storedCache, inputGradient: b.dx,
                                   gammaGradient: b.dgamma, betaGradient: b.dbeta,
                                   workspace: &workspace)
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
        do throws(NormError) {
            try Validation.origin(storedCache, expected: layer.cacheOrigin)
        } catch {
            throw layer.refusingBackward(error, cache: storedCache)
        }
        let failure = storedGradients.withBuffers(
            outputGradient: outputGradient, shape: storedCache.input.shape,
            parameterCount: storedCache.gamma.count
        ) { b in
            do throws(NormError) {
                try layer.backward(b.dy, sumGradient: sumGradient, cache: storedCache,
                                   inputGradient: b.dx, gammaGradient: b.dgamma,
                                   betaGradient: b.dbeta, workspace: &workspace)
                return nil
            } catch { return error }
        }
        if let failure { throw failure }
    }
}
