/// ``GroupStatistics`` (``GroupNorm``, ``InstanceNorm``) over 16-bit storage
/// (``ReducedPrecision``): each worker widens one sample at a time into
/// `Float` scratch (copying it to the cache in the same pass), runs the
/// `Float` kernels of ``GroupNormKernels`` on that sample, and narrows its
/// output into the caller's 16-bit buffer. A sample's statistics are its own,
/// so the forward gives the `Float` kernels' arithmetic on the widened input;
/// the backward adds each sample's parameter sums to its chunk's.
extension GroupStatistics {
    /// The 16-bit forward: as the `Float` one, the input copied into the cache
    /// at 2 bytes an element by the pass that widens it.
    /// - Throws: as the `Float` forward, and
    ///   ``NormError/unsupportedParameter(name:expected:)`` for a storage type
    ///   other than `Float16` and ``BFloat16``.
    @inlinable
    static func forward<Storage: ReducedPrecision>(
        _ x: UnsafeBufferPointer<Storage>, shape: [Int], mode: Mode, channels: Int, groups: Int,
        layout: ChannelLayout, origin: CacheOrigin, affine: Affine, gamma: [Float], beta: [Float],
        epsilon: Float, backend: Backend,
        activation: FusedActivation, output: UnsafeMutableBufferPointer<Storage>,
        residual: UnsafeBufferPointer<Storage>? = nil,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try parameters(affine: affine, gamma: gamma, beta: beta, epsilon: epsilon, channels: channels)
        let precision = try StoragePrecision(Storage.self)
        try Validation.residual(residual, count: x.count)
        try cache.adoptReduced(x, shape: shape, precision: precision)
        try Validation.buffer("output", output.count, expected: x.count)
        let g = try geometry(shape: shape, count: x.count, channels: channels, groups: groups,
                             layout: layout)
        try Validation.valuesPerStatistic(g.rowLength)
        cache.record(gamma: gamma, beta: beta, parameters: channels, mode: mode, statisticCount: g.rows, origin: origin)
        cache.prepareMask(activation: activation, count: x.count)
        let streams = ReducedStreams(precision: precision, x: UnsafeRawPointer(x.baseAddress!),
                                     y: UnsafeMutableRawPointer(output.baseAddress!),
                                     residual: residual.map { UnsafeRawPointer($0.baseAddress!) })
        let failure: Int? = cache.storedMean.withUnsafeMutableBufferPointer { mean in
            cache.storedInverseStandardDeviation.withUnsafeMutableBufferPointer { invstd in
            cache.storedMask.withUnsafeMutableBufferPointer { mask in
            cache.reducedInput.withUnsafeMutableBytes { copy in
                reducedPass(streams.copying(to: copy.baseAddress), geometry: g, layout: layout, gamma: gamma,
                            beta: beta, epsilon: epsilon, backend: backend,
                            statistics: (mean.baseAddress!, invstd.baseAddress!),
                            epilogue: Epilogue(residual: nil, activation: activation,
                                               mask: mask.baseAddress),
                            workspace: &workspace)
            }}}
        }
        if let index = failure {
            cache.invalidate()
            throw .nonFiniteStatistics(index: index)
        }
    }

    /// The 16-bit inference that keeps nothing: the 16-bit forward's output
    /// bit for bit. `output` may be `x`'s memory.
    /// - Throws: as the 16-bit forward.
    @inlinable
    static func infer<Storage: ReducedPrecision>(
        _ x: UnsafeBufferPointer<Storage>, shape: [Int], channels: Int, groups: Int,
        layout: ChannelLayout, affine: Affine, gamma: [Float], beta: [Float], epsilon: Float,
        backend: Backend, activation: FusedActivation, output: UnsafeMutableBufferPointer<Storage>,
        workspace: inout Workspace<Float>
    ) throws(NormError) {
        try parameters(affine: affine, gamma: gamma, beta: beta, epsilon: epsilon, channels: channels)
        let precision = try StoragePrecision(Storage.self)
        let count = try Tensor<Float>.elementCount(of: shape)
        try Validation.buffer("input", x.count, expected: count)
        try Validation.buffer("output", output.count, expected: count)
        let g = try geometry(shape: shape, count: count, channels: channels, groups: groups,
                             layout: layout)
        try Validation.valuesPerStatistic(g.rowLength)
        let streams = ReducedStreams(precision: precision, x: UnsafeRawPointer(x.baseAddress!),
                                     y: UnsafeMutableRawPointer(output.baseAddress!))
        if let index = reducedPass(streams, geometry: g, layout: layout, gamma: gamma, beta: beta,
                                   epsilon: epsilon,
                                   backend: backend, statistics: nil,
                                   epilogue: Epilogue(residual: nil, activation: activation),
                                   workspace: &workspace) {
            throw .nonFiniteStatistics(index: index)
        }
    }

    /// The statistics and output pass: chunks of samples on ``Threading``'s
    /// workers; per sample, widened (and copied to ``ReducedStreams/copy``),
    /// ``GroupNormKernels/forward`` (channels first) or
    /// ``channelsLastSample(x:geometry:groups:block:backend:epsilon:gamma:beta:mean:invstd:y:streaming:epilogue:ones:scratch:)``
    /// (channels last) into `Float` scratch, narrowed.
    /// - Returns: the first row `n·G + g` whose statistics are not finite, or `nil`.
    @inlinable
    static func reducedPass(
        _ r: ReducedStreams, geometry g: GroupNormKernels.Geometry, layout: ChannelLayout,
        gamma: [Float], beta: [Float], epsilon: Float, backend: Backend,
        statistics: (mean: UnsafeMutablePointer<Float>, invstd: UnsafeMutablePointer<Float>)?,
        epilogue: Epilogue<Float>, workspace: inout Workspace<Float>
    ) -> Int? {
        let sample = g.channels * g.spatial
        let blockRows = backend == .blas
            ? CacheGeometry.blockRows(rows: g.groups, columns: g.rowLength,
                                      bytesPerScalar: MemoryLayout<Float>.stride,
                                      buffers: LayerNormKernels.forwardBuffers(rowStatistics: .meanAndVariance))
            : g.groups
        // Channels last: one sample is an S x C matrix, as in `Float`.
        let rowsOfChannels = ChannelGeometry(outer: g.spatial, channels: g.channels, inner: 1)
        let columnBlock = rowsOfChannels.block(bytesPerScalar: MemoryLayout<Float>.stride, buffers: 2)
        let columnKernel = rowsOfChannels.scratchCount(block: columnBlock, vectors: 3)
        let kernel = layout == .nhwc
            ? ChannelsLastScratch<Float>.count(kernel: columnKernel, channels: g.channels,
                                               groups: g.groups)
            : backend == .blas
            ? Workspace<Float>.lines(LayerNormKernels.forwardScratch(
                blockRows: blockRows, columns: g.rowLength, rowStatistics: .meanAndVariance, of: Float.self))
            : 0
        // Per worker: the kernel's scratch, x and y of a sample widened, and a
        // residual's when there is one; then the statistics when the caller keeps none.
        var worker = ScratchLayout<Float>()
        let kernelPart = worker.region(kernel), inputPart = worker.region(sample)
        let outputPart = worker.region(sample), residualPart = worker.region(r.residual == nil ? 0 : sample)
        let split = Threading.split(outer: g.samples, scalarsPerRow: sample, of: Float.self,
                                    backend: backend)
        var scratchLayout = ScratchLayout<Float>()
        let workers = scratchLayout.regions(split.workers, of: worker.count)
        let ownMean = scratchLayout.region(statistics == nil ? g.rows : 0)
        let ownInvstd = scratchLayout.region(statistics == nil ? g.rows : 0)
        let streaming = StreamingStores.shouldStream(count: (g.rows * g.rowLength + 1) / 2,
                                                     of: Float.self)
        let onesCount = layout == .nhwc ? rowsOfChannels.onesCount(block: columnBlock)
            : backend == .blas ? g.rowLength : 0
        return workspace.withRegions(
            ones: onesCount, scratch: scratchLayout.count, parameters: g.channels
        ) { ones, scratch, standIns in
            gamma.withUnsafeBufferPointer { gammaBuffer in
            beta.withUnsafeBufferPointer { betaBuffer in
                let mean = statistics?.mean ?? ownMean.pointer(in: scratch)
                let invstd = statistics?.invstd ?? ownInvstd.pointer(in: scratch)
                // Ones and zeros stand in for absent parameters (`Affine`).
                let context = (split: split, r: r, gamma: standIns.scale(gammaBuffer),
                               beta: standIns.shift(betaBuffer), mean: mean, invstd: invstd, g: g,
                               blockRows: blockRows, epsilon: epsilon, backend: backend,
                               streaming: streaming, epilogue: epilogue, ones: ones,
                               scratch: scratch, workers: workers, kernelPart: kernelPart,
                               inputPart: inputPart, outputPart: outputPart, residualPart: residualPart,
                               sample: sample, layout: layout, rowsOfChannels: rowsOfChannels,
                               columnBlock: columnBlock, columnKernel: columnKernel)
                return Threading.firstFailure(split, context) { c, chunk, worker in
                    let c = c.pointee, g = c.g
                    let own = c.workers.pointer(in: c.scratch, worker)
                    let xf = c.inputPart.pointer(in: own), yf = c.outputPart.pointer(in: own)
                    let rf = c.residualPart.pointer(in: own)
                    let one = GroupNormKernels.Geometry(samples: 1, channels: g.channels,
                                                        groups: g.groups, spatial: g.spatial)
                    for n in c.split.rows(ofChunk: chunk) {
                        let offset = n * c.sample, firstRow = n * g.groups
                        c.r.widen(c.r.x, offset: offset, into: xf, count: c.sample,
                                  copying: true, streaming: c.streaming)
                        let epilogue = c.r.epilogue(c.epilogue, offset: offset, count: c.sample,
                                                    scratch: rf)
                        if c.layout == .nhwc {
                            let regions = ChannelsLastScratch(c.kernelPart.pointer(in: own), kernel: c.columnKernel,
                                                              channels: g.channels, groups: g.groups)
                            if let bad = channelsLastSample(
                                x: xf, geometry: c.rowsOfChannels, groups: g.groups,
                                block: c.columnBlock, backend: c.backend, epsilon: c.epsilon,
                                gamma: c.gamma, beta: c.beta, mean: c.mean + firstRow,
                                invstd: c.invstd + firstRow, y: yf, streaming: false,
                                epilogue: epilogue, ones: c.ones,
                                scratch: regions) {
                                StreamingStores.fence(c.streaming)
                                return firstRow + bad
                            }
                        } else if let bad = GroupNormKernels.forward(
                            x: xf, geometry: one, blockRows: c.blockRows, epsilon: c.epsilon,
                            backend: c.backend, gamma: c.gamma, beta: c.beta,
                            mean: c.mean + firstRow, invstd: c.invstd + firstRow, y: yf,
                            streaming: false, epilogue: epilogue,
                            ones: c.ones, scratch: c.kernelPart.pointer(in: own)) {
                            StreamingStores.fence(c.streaming)
                            return firstRow + bad
                        }
                        c.r.narrow(yf, offset: offset, count: c.sample, streaming: c.streaming)
                    }
                    StreamingStores.fence(c.streaming)
                    return nil
                }
            }}
        }
    }

    /// The 16-bit backward: per sample, `dy` (through the ReLU's mask after a
    /// ReLU forward) and the cached input widened, ``GroupNormKernels/backward``
    /// into `Float` scratch, `dx` narrowed; each sample's parameter sums added
    /// to its chunk's, the chunks' in order.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer or filled at another precision,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``,
    ///   ``NormError/unsupportedParameter(name:expected:)``.
    @inlinable
    static func backward<Storage: ReducedPrecision>(
        _ dy: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient dx: UnsafeMutableBufferPointer<Storage>,
        gammaGradient dgamma: UnsafeMutableBufferPointer<Float>,
        betaGradient dbeta: UnsafeMutableBufferPointer<Float>,
        residualGradient: UnsafeMutableBufferPointer<Storage>? = nil, channels: Int, groups: Int,
        layout: ChannelLayout, origin: CacheOrigin, backend: Backend,
        workspace: inout Workspace<Float>
    ) throws(NormError) {
        let precision = try StoragePrecision(Storage.self)
        try Validation.origin(cache, expected: origin, precision: precision)
        let count = cache.reducedInput.count
        let g = try geometry(shape: cache.reducedShape, count: count, channels: channels,
                             groups: groups, layout: layout)
        try Validation.cache(cache, parameters: channels, statistics: g.rows)
        try Validation.buffer("outputGradient", dy.count, expected: count)
        try Validation.buffer("inputGradient", dx.count, expected: count)
        try Validation.parameterGradients(dgamma.count, dbeta.count, cache: cache, parameters: channels)
        if let residualGradient {
            try Validation.buffer("residualGradient", residualGradient.count, expected: count)
        }
        let sample = channels * g.spatial
        let blockRows = backend == .blas
            ? CacheGeometry.blockRows(rows: g.groups, columns: g.rowLength,
                                      bytesPerScalar: MemoryLayout<Float>.stride, buffers: 3)
            : g.groups
        // Channels last: one sample is an S x C matrix, as in `Float` (the
        // ReLU's mask applied to the widened dy first).
        let rowsOfChannels = ChannelGeometry(outer: g.spatial, channels: channels, inner: 1)
        let columnBlock = rowsOfChannels.block(bytesPerScalar: MemoryLayout<Float>.stride, buffers: 3)
        let columnKernel = Workspace<Float>.lines(rowsOfChannels.scratchCount(block: columnBlock, vectors: 0))
            + Workspace<Float>.pageScalars
        let onesCount = layout == .nhwc ? rowsOfChannels.onesCount(block: columnBlock)
            : backend == .blas ? g.spatial : 0
        let split = Threading.split(outer: g.samples, scalarsPerRow: sample, of: Float.self,
                                    backend: backend)
        // Per worker: the kernel's scratch, dy, x and dx of a sample, a
        // sample's sums; then each chunk's partial dgamma and dbeta.
        let kernel = layout == .nhwc
            ? ChannelsLastScratch<Float>.count(kernel: columnKernel, channels: channels, groups: groups)
            : Workspace<Float>.lines(GroupNormKernels.backwardScratch(geometry: g, blockRows: blockRows))
        var worker = ScratchLayout<Float>()
        let kernelPart = worker.region(kernel), dyPart = worker.region(sample)
        let xPart = worker.region(sample), dxPart = worker.region(sample)
        let samplePart = worker.region(2 * channels)
        var scratchLayout = ScratchLayout<Float>()
        let workers = scratchLayout.regions(split.workers, of: worker.count)
        let partials = scratchLayout.regions(split.chunks, of: 2 * channels)
        let streaming = StreamingStores.shouldStream(count: (count + 1) / 2, of: Float.self)
        workspace.withRegions(ones: onesCount, scratch: scratchLayout.count, parameters: channels) {
            ones, scratch, standIns in
            cache.withReducedBackward(dy, dx, dgamma: dgamma, dbeta: dbeta) { buffers, mask, r in
                if let residualGradient {
                    ReducedStreams.residualGradient(dy, mask: mask, into: residualGradient)
                }
                cache.withBackwardPointers(buffers, standIns: standIns) { p in
                    let context = (split: split, p: p, r: r, mask: mask, partials: partials, g: g,
                                   blockRows: blockRows, backend: backend, ones: ones,
                                   scratch: scratch, workers: workers, kernelPart: kernelPart,
                                   dyPart: dyPart, xPart: xPart, dxPart: dxPart, samplePart: samplePart,
                                   sample: sample, streaming: streaming, layout: layout,
                                   rowsOfChannels: rowsOfChannels, columnBlock: columnBlock,
                                   columnKernel: columnKernel)
                    Threading.run(split, context) { c, chunk, worker in
                        let c = c.pointee, p = c.p, g = c.g, channels = g.channels
                        let own = c.workers.pointer(in: c.scratch, worker)
                        let dyf = c.dyPart.pointer(in: own), xf = c.xPart.pointer(in: own)
                        let dxf = c.dxPart.pointer(in: own), mine = c.samplePart.pointer(in: own)
                        let sums = c.partials.pointer(in: c.scratch, chunk)
                        sums.update(repeating: 0, count: 2 * channels)
                        let one = GroupNormKernels.Geometry(samples: 1, channels: channels,
                                                            groups: g.groups, spatial: g.spatial)
                        for n in c.split.rows(ofChunk: chunk) {
                            let offset = n * c.sample, firstRow = n * g.groups
                            c.r.widen(c.r.dy!, offset: offset, into: dyf, count: c.sample)
                            if let mask = c.mask {
                                Float.reluMaskRow(count: c.sample, dy: dyf, mask: mask + offset,
                                                  into: dyf)
                            }
                            c.r.widen(c.r.x, offset: offset, into: xf, count: c.sample)
                            if c.layout == .nhwc {
                                // Adds the sample's Σ dy·xhat and Σ dy to the chunk's.
                                channelsLastSampleBackward(
                                    dy: dyf, mask: nil, x: xf, geometry: c.rowsOfChannels,
                                    groups: g.groups, block: c.columnBlock, backend: c.backend,
                                    gamma: p.gamma, mean: p.mean + firstRow,
                                    invstd: p.invstd + firstRow, dx: dxf, dgamma: sums,
                                    dbeta: sums + channels, streaming: false, ones: c.ones,
                                    scratch: ChannelsLastScratch(c.kernelPart.pointer(in: own), kernel: c.columnKernel,
                                                                 channels: channels, groups: g.groups))
                                c.r.narrow(dxf, offset: offset, count: c.sample, streaming: c.streaming)
                                continue
                            }
                            GroupNormKernels.backward(
                                BackwardPointers(dy: dyf, x: xf, mean: p.mean + firstRow,
                                                 invstd: p.invstd + firstRow, gamma: p.gamma,
                                                 dx: dxf, dgamma: mine, dbeta: mine + channels),
                                geometry: one, blockRows: c.blockRows, backend: c.backend,
                                ones: c.ones, scratch: c.kernelPart.pointer(in: own))
                            for k in 0..<(2 * channels) { sums[k] += mine[k] }
                            c.r.narrow(dxf, offset: offset, count: c.sample, streaming: c.streaming)
                        }
                        StreamingStores.fence(c.streaming)
                    }
                    Threading.sumPartials(chunks: split.chunks, first: partials.pointer(in: scratch, 0),
                                          stride: partials.stride, count: channels, dgamma: p.dgamma,
                                          dbeta: p.dbeta)
                }
            }
        }
    }
}
