// The 16-bit entry points of the row layers (DESIGN §2.3): input, output and
// their gradients in Float16 or BFloat16, everything else in Float.

/// A layer whose `Scalar` is `Float` that also reads and writes 16-bit
/// storage (``ReducedPrecision``: `Float16`, ``BFloat16``): the tensors that
/// stream (input, output, their gradients) in 16 bits; the layer's
/// parameters, the statistics and the parameter gradients in `Float`. Each
/// output is computed in `Float` and rounded once to the storage type (nearest
/// even). ``LayerNorm``, ``RMSNorm``, ``BatchNorm``, ``SpatialBatchNorm``,
/// ``GroupNorm``, ``InstanceNorm``, ``SyncBatchNorm`` and
/// ``SyncSpatialBatchNorm`` conform (where `Scalar` is `Float`).
public protocol ReducedPrecisionLayer: BufferedNormalizationLayer where Scalar == Float {
    /// Normalizes `input`, 16-bit values of `shape`, into `output` of the same
    /// type, saving what backward needs in `cache` (the input at 2 bytes an
    /// element; its ``NormCache/input`` is empty).
    /// - Throws: as the `Float` entry point, and
    ///   ``NormError/unsupportedParameter(name:expected:)`` for a storage
    ///   type other than `Float16` and ``BFloat16``.
    /// - Complexity: O(product of `shape`).
    mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int], mode: Mode,
        into output: UnsafeMutableBufferPointer<Storage>,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>) throws(NormError)

    /// The 16-bit forward for inference, keeping nothing: its output bit for
    /// bit. `output` may be `input`'s memory.
    /// - Throws: as the 16-bit forward.
    /// - Complexity: O(product of `shape`).
    func infer<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Storage>,
        workspace: inout Workspace<Float>) throws(NormError)

    /// The backward pass of a 16-bit forward: `inputGradient` in the storage
    /// type, `gammaGradient` and `betaGradient` in `Float`.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer or filled at another precision,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``.
    /// - Complexity: O(count of the cached input).
    func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient: UnsafeMutableBufferPointer<Storage>,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>,
        workspace: inout Workspace<Float>) throws(NormError)
}

extension ReducedPrecisionLayer {
    /// The 16-bit forward over `Span`s: the entry point over buffers.
    /// - Throws: as that entry point.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: Span<Storage>, shape: [Int], mode: Mode, into output: inout MutableSpan<Storage>,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try withBuffers(input, &output) { x, y throws(NormError) in
            try forward(x, shape: shape, mode: mode, into: y, cache: &cache,
                        workspace: &workspace)
        }
    }

    /// The 16-bit inference over `Span`s, keeping nothing: the entry point
    /// over buffers (`output` is its own memory here).
    /// - Throws: as that entry point.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public func infer<Storage: ReducedPrecision>(
        _ input: Span<Storage>, shape: [Int], into output: inout MutableSpan<Storage>,
        workspace: inout Workspace<Float>
    ) throws(NormError) {
        try withBuffers(input, &output) { x, y throws(NormError) in
            try infer(x, shape: shape, into: y, workspace: &workspace)
        }
    }

    /// The 16-bit backward over `Span`s: the entry point over buffers.
    /// - Throws: as that entry point.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: Span<Storage>, cache: NormCache<Float>,
        inputGradient: inout MutableSpan<Storage>, gammaGradient: inout MutableSpan<Float>,
        betaGradient: inout MutableSpan<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try withBuffers(outputGradient, &inputGradient, &gammaGradient,
                        &betaGradient) { dy, dx, dgamma, dbeta throws(NormError) in
            try backward(dy, cache: cache, inputGradient: dx, gammaGradient: dgamma,
                         betaGradient: dbeta, workspace: &workspace)
        }
    }
}

/// A row layer (``LayerNorm``, ``RMSNorm``, where `Scalar` is `Float`) whose
/// residual form (``ResidualNormalizationLayer``, DESIGN §2.4) also reads and
/// writes 16-bit storage: `s = input + residual` is computed in `Float` and
/// rounded once to the storage type (the 16-bit addition an unfused model
/// makes), the layer normalizes that `s`, and the cache keeps it at 2 bytes
/// an element.
public protocol ReducedPrecisionResidualLayer: ReducedPrecisionLayer, ResidualNormalizationLayer
where Cache == NormCache<Float> {
    /// Normalizes `s = input + residual` (rounded to `Storage`) into
    /// `output`, writing `s` to `sum` when it is not `nil`; the cache keeps
    /// `s`. `output` may be `input`'s or `residual`'s memory; `sum` may be
    /// either too, but not `output`. The output equals the unfused sequence
    /// (the 16-bit addition, then the 16-bit forward) bit for bit.
    /// - Throws: as the 16-bit forward, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming
    ///   `residual` or `sum`.
    /// - Complexity: O(product of `shape`).
    mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, residual: UnsafeBufferPointer<Storage>,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Storage>,
        sum: UnsafeMutableBufferPointer<Storage>?, cache: inout NormCache<Float>,
        workspace: inout Workspace<Float>) throws(NormError)

    /// The 16-bit backward plus `sumGradient` (the gradient reaching `sum`
    /// from later blocks; `nil` for none), added in `Float` before the one
    /// rounding of `inputGradient` (so it may differ from the unfused
    /// sequence's two roundings by one unit in the last place). A plain
    /// 16-bit forward's cache works too.
    /// - Throws: as the 16-bit backward, and
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)`` naming `sumGradient`.
    /// - Complexity: O(count of the cached input).
    func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>, sumGradient: UnsafeBufferPointer<Storage>?,
        cache: NormCache<Float>, inputGradient: UnsafeMutableBufferPointer<Storage>,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>,
        workspace: inout Workspace<Float>) throws(NormError)
}

extension ReducedPrecisionResidualLayer {
    /// The 16-bit residual forward over `Span`s: the entry point over
    /// buffers (`output` and `sum` are their own memory here).
    /// - Throws: as that entry point.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: Span<Storage>, residual: Span<Storage>, shape: [Int], mode: Mode,
        into output: inout MutableSpan<Storage>, sum: inout MutableSpan<Storage>,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try withBuffers(input, residual, &output, &sum) { x, r, y, s throws(NormError) in
            try forward(x, residual: r, shape: shape, mode: mode, into: y, sum: s,
                        cache: &cache, workspace: &workspace)
        }
    }

    /// The 16-bit residual backward over `Span`s: the entry point over buffers.
    /// - Throws: as that entry point.
    /// - Complexity: O(count of the cached input).
    @inlinable
    public func backward<Storage: ReducedPrecision>(
        _ outputGradient: Span<Storage>, sumGradient: Span<Storage>, cache: NormCache<Float>,
        inputGradient: inout MutableSpan<Storage>, gammaGradient: inout MutableSpan<Float>,
        betaGradient: inout MutableSpan<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try withBuffers(outputGradient, sumGradient, &inputGradient, &gammaGradient,
                        &betaGradient) { dy, ds, dx, dgamma, dbeta throws(NormError) in
            try backward(dy, sumGradient: ds, cache: cache, inputGradient: dx,
                         gammaGradient: dgamma, betaGradient: dbeta,
                         workspace: &workspace)
        }
    }
}
