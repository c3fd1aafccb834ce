// The 16-bit entry points of the layers with batch statistics (DESIGN §2.3):
// input, output and their gradients in Float16 or BFloat16; gamma, beta, the
// statistics, the running statistics and the parameter gradients in Float.

/// A per-channel layer (``BatchNorm``, ``SpatialBatchNorm``, ``GroupNorm``,
/// ``InstanceNorm``, ``SyncBatchNorm``, ``SyncSpatialBatchNorm``, where
/// `Scalar` is `Float`) whose fused epilogue
/// (``ActivatedNormalizationLayer``, DESIGN §2.4) also reads and writes
/// 16-bit storage: `y = act(norm(x) + residual)` computed in `Float` from the
/// widened input and residual and rounded once to the storage type (the
/// unfused sequence rounds twice, after the layer and after the addition, so
/// the two may differ by one unit in the last place); backward writes the
/// residual's gradient, `dy` masked by the ReLU (`+0` where the output was not
/// positive), bit for bit.
public protocol ReducedPrecisionActivatedLayer: ReducedPrecisionLayer, ActivatedNormalizationLayer
where Cache == NormCache<Float> {
    /// Normalizes `input` and adds `residual` (when not `nil`) before the
    /// activation, into `output`; see the protocol.
    /// - Throws: as the 16-bit forward, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming `residual`.
    /// - Complexity: O(product of `shape`).
    mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, residual: UnsafeBufferPointer<Storage>?,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Storage>,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>) throws(NormError)

    /// The 16-bit backward, writing the residual's gradient (`dy` through the
    /// ReLU's mask) into `residualGradient` when it is not `nil` (it may not
    /// be `inputGradient`'s memory).
    /// - Throws: as the 16-bit backward, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming `residualGradient`.
    /// - Complexity: O(count of the cached input).
    func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient: UnsafeMutableBufferPointer<Storage>,
        residualGradient: UnsafeMutableBufferPointer<Storage>?,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>,
        workspace: inout Workspace<Float>) throws(NormError)
}

extension ReducedPrecisionActivatedLayer {
    /// The 16-bit forward without a residual.
    /// - Throws: as the forward with a residual.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int], mode: Mode,
        into output: UnsafeMutableBufferPointer<Storage>,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try forward(input, residual: nil, shape: shape, mode: mode, into: output, cache: &cache,
                    workspace: &workspace)
    }

    /// The 16-bit backward without a residual gradient.
    /// - Throws: as the backward with `residualGradient`.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient: UnsafeMutableBufferPointer<Storage>,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try backward(outputGradient, cache: cache, inputGradient: inputGradient,
                     residualGradient: nil, gammaGradient: gammaGradient,
                     betaGradient: betaGradient, workspace: &workspace)
    }

    /// The 16-bit forward with a residual over `Span`s: the entry point over buffers.
    /// - Throws: as that entry point.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: Span<Storage>, residual: Span<Storage>, shape: [Int], mode: Mode,
        into output: inout MutableSpan<Storage>, cache: inout NormCache<Float>,
        workspace: inout Workspace<Float>
    ) throws(NormError) {
        try withBuffers(input, residual, &output) { x, r, y throws(NormError) in
            try forward(x, residual: r, shape: shape, mode: mode, into: y,
                        cache: &cache, workspace: &workspace)
        }
    }

    /// The 16-bit backward with the residual's gradient over `Span`s: the
    /// entry point over buffers.
    /// - Throws: as that entry point.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: Span<Storage>, cache: NormCache<Float>,
        inputGradient: inout MutableSpan<Storage>, residualGradient: inout MutableSpan<Storage>,
        gammaGradient: inout MutableSpan<Float>, betaGradient: inout MutableSpan<Float>,
        workspace: inout Workspace<Float>
    ) throws(NormError) {
        try withBuffers(outputGradient, &inputGradient, &residualGradient, &gammaGradient,
                        &betaGradient) { dy, dx, dr, dgamma, dbeta throws(NormError) in
            try backward(dy, cache: cache, inputGradient: dx, residualGradient: dr,
                         gammaGradient: dgamma, betaGradient: dbeta,
                         workspace: &workspace)
        }
    }
}
