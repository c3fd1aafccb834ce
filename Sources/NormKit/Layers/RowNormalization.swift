/// The forward and backward passes shared by the layers whose statistics are
/// per row of an `(N, D)` input (``LayerNorm``, ``RMSNorm``): the rows in
/// chunks over ``Threading``'s workers, each chunk through
/// ``LayerNormKernels`` (one row at a time forward, L2 row blocks backward).
@usableFromInline
enum RowNormalization {
    /// Validates the input (copied into the cache unless it is the cache's
    /// own) and computes `y = (x - mean_i) · invstd_i · gamma_j + beta_j`
    /// (`mean_i = 0` when not `centred`) into `output`.
    /// - Throws: ``NormError/invalidShape(expected:actual:)``,
    ///   ``NormError/insufficientValues(valuesPerStatistic:)`` for `D < 2` when `centred`,
    ///   ``NormError/nonFiniteStatistics(index:)`` naming the sample,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``.
    @inlinable
    static func forward<Scalar: BLASScalar>(
        _ x: UnsafeBufferPointer<Scalar>, shape: [Int], mode: Mode, columns: Int, centred: Bool,
        gamma: [Scalar], beta: [Scalar], epsilon: Scalar, backend: Backend,
        output: UnsafeMutableBufferPointer<Scalar>,
        cache: inout NormCache<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try cache.adopt(x, shape: shape)
        try Validation.buffer("output", output.count, expected: x.count)
        let input = cache.input
        let rows = try Validation.matrixRows(input, columns: columns)
        // A mean and a variance need two values; a mean square (RMSNorm) needs one.
        if centred { try Validation.valuesPerStatistic(columns) }
        cache.record(gamma: gamma, mode: mode, statisticCount: rows,
                     origin: origin(columns: columns, centred: centred))
        let blockRows = CacheGeometry.blockRows(
            rows: rows, columns: columns, bytesPerScalar: MemoryLayout<Scalar>.stride,
            buffers: LayerNormKernels.forwardBuffers(centred: centred))
        let onesCount = backend == .blas ? max(blockRows, columns) : 0
        let split = Threading.split(outer: rows, scalarsPerRow: columns, of: Scalar.self,
                                    backend: backend)
        // Per worker, on whole cache lines (so that each starts on one).
        let perWorker = backend == .blas
            ? Workspace<Scalar>.lines(LayerNormKernels.forwardScratch(
                blockRows: blockRows, columns: columns, centred: centred, of: Scalar.self))
            : 0
        // Then gamma and beta, copied onto cache lines away from the input's
        // offset in a page (the layer's arrays sit wherever the allocator put
        // them; see `Workspace.spread`), read once per row.
        let parameters = backend == .blas ? Workspace<Scalar>.spreadScratch(2, of: columns) : 0
        let streaming = StreamingStores.shouldStream(count: rows * columns, of: Scalar.self)
        let failure: Int? = workspace.withRegions(
            ones: onesCount, scratch: split.workers * perWorker + parameters
        ) { ones, scratch in
            input.withUnsafeBufferPointer { xBuffer in
            gamma.withUnsafeBufferPointer { gammaBuffer in
            beta.withUnsafeBufferPointer { betaBuffer in
            cache.storedMean.withUnsafeMutableBufferPointer { meanBuffer in
            cache.storedInverseStandardDeviation.withUnsafeMutableBufferPointer { invstdBuffer in
                let x = xBuffer.baseAddress!, y = output.baseAddress!
                var g = gammaBuffer.baseAddress!, b = betaBuffer.baseAddress!
                let mean = meanBuffer.baseAddress!, invstd = invstdBuffer.baseAddress!
                switch backend {
                case .blas:
                    let (lines, stride) = Workspace<Scalar>.spread(
                        2, of: columns, in: scratch + split.workers * perWorker, awayFrom: x)
                    lines.update(from: g, count: columns)
                    (lines + stride).update(from: b, count: columns)
                    g = UnsafePointer(lines)
                    b = UnsafePointer(lines + stride)
                    // Rows are independent: the chunks of rows on the workers.
                    let context = (split: split, x: x, y: y, g: g, b: b, mean: mean, invstd: invstd,
                                   columns: columns, blockRows: blockRows, epsilon: epsilon,
                                   centred: centred, streaming: streaming, ones: ones,
                                   scratch: scratch, perWorker: perWorker)
                    return Threading.firstFailure(split, context) { c, chunk, worker in
                        let c = c.pointee
                        let part = c.split.rows(ofChunk: chunk)
                        let first = part.lowerBound, offset = first * c.columns
                        return LayerNormKernels.forwardBLAS(
                            x: c.x + offset, rows: part.count, columns: c.columns,
                            blockRows: c.blockRows, epsilon: c.epsilon, centred: c.centred,
                            gamma: c.g, beta: c.b, mean: c.mean + first, invstd: c.invstd + first,
                            y: c.y + offset, streaming: c.streaming, ones: c.ones,
                            scratch: c.scratch + worker * c.perWorker
                        ).map { first + $0 }
                    }
                case .naive:
                    return LayerNormKernels.forwardNaive(
                        x: x, rows: rows, columns: columns, epsilon: epsilon, centred: centred,
                        gamma: g, beta: b, mean: mean, invstd: invstd, y: y, streaming: streaming)
                }
            }}}}}
        }
        if let index = failure {
            cache.invalidate()
            throw .nonFiniteStatistics(index: index)
        }
    }

    /// ``LayerNorm`` when `centred`, ``RMSNorm`` otherwise.
    @inlinable
    static func origin(columns: Int, centred: Bool) -> CacheOrigin {
        centred ? .layerNorm(featureCount: columns) : .rmsNorm(featureCount: columns)
    }

    /// Validates the cache and the caller's buffers and computes the backward
    /// pass (see ``LayerNormKernels/backwardBLAS``).
    @inlinable
    static func backward<Scalar: BLASScalar>(
        _ buffers: GradientBuffers<Scalar>, cache: NormCache<Scalar>, columns: Int, centred: Bool,
        backend: Backend, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try Validation.origin(cache, expected: origin(columns: columns, centred: centred))
        let rows = try Validation.matrixRows(cache.input, columns: columns)
        try Validation.cache(cache, parameters: columns, statistics: rows)
        try Validation.gradientBuffers(buffers, cache: cache, parameters: columns)
        let blockRows = CacheGeometry.blockRows(
            rows: rows, columns: columns, bytesPerScalar: MemoryLayout<Scalar>.stride, buffers: 3)
        let onesCount = backend == .blas ? blockRows : 0
        let split = Threading.split(outer: rows, scalarsPerRow: columns, of: Scalar.self,
                                    backend: backend)
        // BLAS: the kernel's scratch per worker, then each chunk's partial dgamma
        // and dbeta.
        let perWorker = Workspace<Scalar>.lines(
            LayerNormKernels.backwardScratch(blockRows: blockRows))
        let scratchCount = backend == .blas
            ? split.workers * perWorker + split.chunks * 2 * columns : 2 * rows
        workspace.withRegions(ones: onesCount, scratch: scratchCount) { ones, scratch in
            cache.withBackwardPointers(buffers) { p in
                switch backend {
                case .blas:
                    let partials = scratch + split.workers * perWorker
                    let context = (split: split, p: p, columns: columns, blockRows: blockRows,
                                   centred: centred, partials: partials, ones: ones,
                                   scratch: scratch, perWorker: perWorker)
                    Threading.run(split, context) { c, chunk, worker in
                        let c = c.pointee, p = c.p
                        let part = c.split.rows(ofChunk: chunk)
                        let first = part.lowerBound, offset = first * c.columns
                        let sums = c.partials + chunk * 2 * c.columns
                        LayerNormKernels.backwardBLAS(
                            dy: p.dy + offset, x: p.x + offset, rows: part.count, columns: c.columns,
                            blockRows: c.blockRows, centred: c.centred, mean: p.mean + first,
                            invstd: p.invstd + first, gamma: p.gamma, dx: p.dx + offset,
                            dgamma: sums, dbeta: sums + c.columns,
                            ones: c.ones, scratch: c.scratch + worker * c.perWorker)
                    }
                    Threading.sumPartials(chunks: split.chunks, first: partials, stride: 2 * columns,
                                          count: columns, dgamma: p.dgamma, dbeta: p.dbeta)
                case .naive:
                    LayerNormKernels.backwardNaive(
                        dy: p.dy, x: p.x, rows: rows, columns: columns, centred: centred,
                        mean: p.mean, invstd: p.invstd, gamma: p.gamma, dx: p.dx, dgamma: p.dgamma,
                        dbeta: p.dbeta,
                        streaming: StreamingStores.shouldStream(count: rows * columns, of: Scalar.self),
                        scratch: scratch)
                }
            }
        }
    }
}
