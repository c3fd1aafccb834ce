/// The forward and backward passes shared by the layers with batch statistics
/// and running statistics (``BatchNorm``, ``SpatialBatchNorm``): validation of
/// the results, the running-statistics update after success, and the dispatch
/// to the kernels of a ``ChannelGeometry``.
@usableFromInline
enum BatchStatistics {
    /// The training or inference forward pass over validated input.
    ///
    /// Writes `output` and `cache`; updates the running statistics only after
    /// every statistic was found finite and the output was written.
    /// - Throws: ``NormError/nonFiniteStatistics(index:)`` naming the channel.
    @inlinable
    static func forward<Scalar: BLASScalar>(
        _ input: Tensor<Scalar>, geometry g: ChannelGeometry, mode: Mode,
        gamma: [Scalar], beta: [Scalar],
        runningMean: inout [Scalar], runningVariance: inout [Scalar],
        epsilon: Scalar, momentum: Scalar, estimator: VarianceEstimator, backend: Backend,
        output: inout Tensor<Scalar>, cache: inout NormCache<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        let channels = g.channels
        output.prepare(shape: input.shape)
        cache.record(input: input, gamma: gamma, mode: mode, statisticCount: channels)
        let block = g.block(bytesPerScalar: MemoryLayout<Scalar>.stride, buffers: 2)
        let momentsScratch = g.scratchCount(block: block, vectors: 3)
        // Scratch: the moments' block and vectors, then variance and scale.
        let failure: Int? = workspace.withRegions(
            ones: g.onesCount(block: block), scratch: momentsScratch + 2 * channels
        ) { ones, scratch in
            let variance = scratch + momentsScratch, scale = variance + channels
            return input.withUnsafeBufferPointer { x in
            cache.storedMean.withUnsafeMutableBufferPointer { meanBuffer in
            cache.storedInverseStandardDeviation.withUnsafeMutableBufferPointer { invstdBuffer in
                let mean = meanBuffer.baseAddress!, invstd = invstdBuffer.baseAddress!
                switch mode {
                case .training:
                    BatchNormKernels.moments(x: x.baseAddress!, geometry: g, block: block,
                                             backend: backend, mean: mean, m2: variance,
                                             ones: ones, scratch: scratch)
                    let count = Scalar(g.valuesPerStatistic)
                    for c in 0..<channels {
                        guard mean[c].isFinite, variance[c].isFinite else { return c }
                        variance[c] /= count
                    }
                case .inference:
                    runningMean.withUnsafeBufferPointer {
                        mean.update(from: $0.baseAddress!, count: channels)
                    }
                    runningVariance.withUnsafeBufferPointer {
                        variance.update(from: $0.baseAddress!, count: channels)
                    }
                }
                for c in 0..<channels {
                    invstd[c] = 1 / (variance[c] + epsilon).squareRoot()
                    guard invstd[c].isFinite, mean[c].isFinite else { return c }
                }
                gamma.withUnsafeBufferPointer { gammaBuffer in
                    for c in 0..<channels { scale[c] = gammaBuffer[c] * invstd[c] }
                }
                beta.withUnsafeBufferPointer { betaBuffer in
                    output.withUnsafeMutableBufferPointer { y in
                        BatchNormKernels.normalize(
                            x: x.baseAddress!, geometry: g, mean: mean, scale: scale,
                            shift: betaBuffer.baseAddress!, y: y.baseAddress!)
                    }
                }
                return nil
            }}}
        }
        if let index = failure { throw .nonFiniteStatistics(index: index) }
        guard mode == .training else { return }

        // Everything succeeded: only now do the running statistics change.
        let count = g.valuesPerStatistic
        let meanWeight = 1 - momentum
        let varianceWeight = estimator == .unbiased
            ? meanWeight * Scalar(count) / Scalar(count - 1) : meanWeight
        workspace.withRegions(ones: 0, scratch: momentsScratch + 2 * channels) { _, scratch in
            let variance = UnsafePointer(scratch + momentsScratch)
            cache.mean.withUnsafeBufferPointer { batchMean in
                runningMean.withUnsafeMutableBufferPointer {
                    BatchNormKernels.updateRunning(
                        $0.baseAddress!, momentum: momentum, batch: batchMean.baseAddress!,
                        weight: meanWeight, count: channels, backend: backend)
                }
            }
            runningVariance.withUnsafeMutableBufferPointer {
                BatchNormKernels.updateRunning(
                    $0.baseAddress!, momentum: momentum, batch: variance,
                    weight: varianceWeight, count: channels, backend: backend)
            }
        }
    }

    /// Checks that `cache` holds statistics for `channels` channels and that
    /// `outputGradient` has the shape of the cached input.
    @inlinable
    static func validateBackward<Scalar: BLASScalar>(
        _ outputGradient: Tensor<Scalar>, cache: NormCache<Scalar>, channels: Int
    ) throws(NormError) {
        try Validation.count("cache.mean", cache.mean.count, expected: channels)
        try Validation.count("cache.gamma", cache.gamma.count, expected: channels)
        try Validation.count("cache.inverseStandardDeviation",
                             cache.inverseStandardDeviation.count, expected: channels)
        try Validation.gradientShape(outputGradient.shape, expected: cache.input.shape)
    }

    /// The closed-form backward (or, with `graph`, the staged one, which exists
    /// for the matrix geometry only) over validated input.
    @inlinable
    static func backward<Scalar: BLASScalar>(
        _ outputGradient: Tensor<Scalar>, cache: NormCache<Scalar>, geometry g: ChannelGeometry,
        backend: Backend, graph: Bool,
        into gradients: inout NormGradients<Scalar>, workspace: inout Workspace<Scalar>
    ) {
        let frozen = cache.mode == .inference
        gradients.prepare(shape: cache.input.shape, parameterCount: g.channels)
        let block = g.block(bytesPerScalar: MemoryLayout<Scalar>.stride, buffers: 3)
        let ones = graph ? g.outer : g.onesCount(block: block)
        let scratch = graph
            ? BatchNormKernels.graphScratch(rows: g.outer, columns: g.channels)
            : g.scratchCount(block: block, vectors: 3)
        workspace.withRegions(ones: ones, scratch: scratch) { ones, scratch in
            cache.withBackwardPointers(outputGradient, into: &gradients) { p in
                if graph {
                    BatchNormKernels.backwardThroughGraph(
                        dy: p.dy, x: p.x, rows: g.outer, columns: g.channels, mean: p.mean,
                        invstd: p.invstd, gamma: p.gamma, frozen: frozen, backend: backend,
                        dx: p.dx, dgamma: p.dgamma, dbeta: p.dbeta, ones: ones, scratch: scratch)
                } else {
                    BatchNormKernels.backward(p, geometry: g, block: block, backend: backend,
                                              frozen: frozen, ones: ones, scratch: scratch)
                }
            }
        }
    }
}
