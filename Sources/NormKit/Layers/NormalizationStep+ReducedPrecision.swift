// NormalizationStep over 16-bit buffers (DESIGN §2.3): the step keeps the
// cache (the input at 2 bytes an element), the workspace and the Float
// parameter gradients; the 16-bit output and input gradient are the caller's.

extension NormalizationStep where Layer: ReducedPrecisionLayer {
    /// Normalizes 16-bit `input` (`Float16` or ``BFloat16``) of `shape` into
    /// the caller's `output` of the same type, saving what backward needs in
    /// ``cache`` (the input at 2 bytes an element, in storage reused from step
    /// to step). ``output`` (the `Float` tensor) is not written.
    ///
    /// After the first call (or a change of shape) the step allocates nothing.
    /// - Throws: the layer's 16-bit forward errors; its state is unchanged
    ///   after a throw.
    /// - Complexity: O(product of `shape`).
    @inlinable
    public mutating func forward<Storage: ReducedPrecision>(
        _ input: UnsafeBufferPointer<Storage>, shape: [Int], mode: Mode = .training,
        into output: UnsafeMutableBufferPointer<Storage>
    ) throws(NormError) {
        try layer.forward(input, shape: shape, mode: mode, into: output, cache: &storedCache,
                          workspace: &workspace)
    }

    /// Backpropagates a 16-bit `outputGradient` (as many values as the last
    /// 16-bit forward's input) through that forward: the input gradient into
    /// the caller's `inputGradient`, `dgamma` and `dbeta` (`Float`) into
    /// ``gradients`` (whose `input` is then empty).
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` when the last
    ///   forward was not a 16-bit one of this type (or threw, or none ran);
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``.
    /// - Complexity: O(count of the last forward input).
    @inlinable
    public mutating func backward<Storage: ReducedPrecision>(
        _ outputGradient: UnsafeBufferPointer<Storage>,
        into inputGradient: UnsafeMutableBufferPointer<Storage>
    ) throws(NormError) {
        let failure = storedGradients.withParameterBuffers(
            gammaCount: storedCache.affine.scaleCount(storedCache.gamma.count),
            betaCount: storedCache.affine.shiftCount(storedCache.gamma.count)) {
            dgamma, dbeta in
            do throws(NormError) {
                try layer.backward(outputGradient, cache: storedCache, inputGradient: inputGradient,
                                   gammaGradient: dgamma, betaGradient: dbeta,
                                   workspace: &workspace)
                return nil
            } catch { return error }
        }
        if let failure { throw failure }
    }
}

extension NormGradients {
    /// Sizes `gamma` and `beta` for `gammaCount` and `betaCount` parameters (reusing their storage),
    /// empties `input`, and calls `body` with the two parameter buffers.
    @usableFromInline
    mutating func withParameterBuffers(
        gammaCount: Int, betaCount: Int,
        _ body: (UnsafeMutableBufferPointer<Scalar>, UnsafeMutableBufferPointer<Scalar>) -> NormError?
    ) -> NormError? {
        if input.count != 0 { input = .empty }
        gamma.resizeReusingStorage(to: gammaCount)
        beta.resizeReusingStorage(to: betaCount)
        return gamma.withUnsafeMutableBufferPointer { dgamma in
            beta.withUnsafeMutableBufferPointer { dbeta in body(dgamma, dbeta) }
        }
    }
}
