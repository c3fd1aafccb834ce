/// ``GroupStatistics`` (``GroupNorm``, ``InstanceNorm``) over 16-bit storage
/// (``ReducedPrecision``): each worker widens one sample at a time into
/// `Float` scratch (copying it to the cache in the same pass), runs the
/// `Float` kernels of ``GroupNormKernels`` on that sample, and narrows its
/// output into the caller's 16-bit buffer; the forward widens one group at a
/// time where the `Float` kernel goes one group at a time
/// (``widensGroups(_:layout:backend:)``). A group's statistics are its own,
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
        let failure: Int? = cache.withForwardPointers { p in
            reducedPass(streams.copying(to: p.reduced), geometry: g, layout: layout, gamma: gamma,
                        beta: beta, epsilon: epsilon, backend: backend, statistics: (p.mean, p.invstd),
                        epilogue: Epilogue(residual: nil, activation: activation, mask: p.mask),
                        workspace: &workspace)
        }
        try cache.settle(failure: failure)
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
        let count = try Validation.inferBuffers(x, output, shape: shape)
        let g = try geometry(shape: shape, count: count, channels: channels, groups: groups,
                             layout: layout)
        try Validation.valuesPerStatistic(g.rowLength)
        let streams = ReducedStreams(precision: precision, x: UnsafeRawPointer(x.baseAddress!),
                                     y: UnsafeMutableRawPointer(output.baseAddress!))
        try Validation.statistics(failure: reducedPass(
            streams, geometry: g, layout: layout, gamma: gamma, beta: beta, epsilon: epsilon,
            backend: backend, statistics: nil, epilogue: Epilogue(residual: nil, activation: activation),
            workspace: &workspace))
    }

    /// The statistics and output pass: chunks of samples on ``Threading``'s
    /// workers; per sample, widened (and copied to ``ReducedStreams/copy``),
    /// ``GroupNormKernels/forward`` (channels first) or
    /// ``channelsLastSample(x:geometry:groups:block:backend:epsilon:gamma:beta:mean:invstd:y:streaming:epilogue:ones:scratch:)``
    /// (channels last) into `Float` scratch, narrowed through the epilogue
    /// (the residual, widened, and the ReLU: one C pass).
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
        // Per worker: the kernel's scratch, x and y of a sample (or a group)
        // widened (the residual and the ReLU are the narrowing's); then the statistics
        // when the caller keeps none.
        let unit = widensGroups(g, layout: layout, backend: backend) ? g.rowLength : sample
        var worker = ScratchLayout<Float>()
        let kernelPart = worker.region(kernel), inputPart = worker.region(unit)
        let outputPart = worker.region(unit)
        let split = Threading.split(outer: g.samples, scalarsPerRow: sample, of: Float.self,
                                    backend: backend)
        var scratchLayout = ScratchLayout<Float>()
        let workers = scratchLayout.regions(split.workers, of: worker.count)
        let ownMean = scratchLayout.region(statistics == nil ? g.rows : 0)
        let ownInvstd = scratchLayout.region(statistics == nil ? g.rows : 0)
        let streaming = StreamingStores.shouldStream(reduced: g.rows * g.rowLength,
                                                     tensors: r.copy == nil ? 2 : 3)
        let onesCount = layout == .nhwc ? rowsOfChannels.onesCount(block: columnBlock)
            : backend == .blas ? g.rowLength : 0
        return workspace.withRegions(
            ones: onesCount, scratch: scratchLayout.count, parameters: g.channels, gamma: gamma, beta: beta
        ) { ones, scratch, gamma, beta in
            Threading.firstFailure(split, ReducedForwardPass(
                split: split, r: r, gamma: gamma, beta: beta,
                mean: statistics?.mean ?? ownMean.pointer(in: scratch),
                invstd: statistics?.invstd ?? ownInvstd.pointer(in: scratch), geometry: g, blockRows: blockRows,
                epsilon: epsilon, backend: backend, streaming: streaming, epilogue: epilogue, ones: ones,
                scratch: scratch, workers: workers, kernelPart: kernelPart, inputPart: inputPart,
                outputPart: outputPart, sample: sample, layout: layout,
                rowsOfChannels: rowsOfChannels, columnBlock: columnBlock, columnKernel: columnKernel))
        }
    }

    /// Whether the 16-bit forward widens, normalizes and narrows one group at
    /// a time rather than a sample: channels first on the BLAS backend, with
    /// groups long enough for the `Float` kernel's one-group-at-a-time rows
    /// (``LayerNormKernels/rowKernelMinimumColumns``), whose arithmetic then
    /// does not depend on what else is widened. A group stays in L2 where a
    /// sample may not (256 channels of 56x56: 3.2 MB in `Float`).
    @inlinable
    static func widensGroups(_ g: GroupNormKernels.Geometry, layout: ChannelLayout, backend: Backend) -> Bool {
        layout != .nhwc && backend == .blas && g.rowLength >= LayerNormKernels.rowKernelMinimumColumns
    }

    /// The 16-bit forward's phase: each sample of a chunk (or each group of
    /// it, ``widensGroups(_:layout:backend:)``) widened into the worker's
    /// `Float` regions (the cache's copy made on the way), through the
    /// channels-first or channels-last `Float` kernel, narrowed through the
    /// epilogue; returns
    /// the first row `n·G + g` whose statistics are not finite.
    @usableFromInline
    struct ReducedForwardPass: Threading.FailablePass {
        @usableFromInline let split: Threading.Split
        @usableFromInline let r: ReducedStreams
        @usableFromInline let gamma, beta: UnsafePointer<Float>
        @usableFromInline let mean, invstd: UnsafeMutablePointer<Float>
        @usableFromInline let geometry: GroupNormKernels.Geometry
        @usableFromInline let blockRows: Int
        @usableFromInline let epsilon: Float
        @usableFromInline let backend: Backend
        @usableFromInline let streaming: Bool
        @usableFromInline let epilogue: Epilogue<Float>
        @usableFromInline let ones: UnsafePointer<Float>
        @usableFromInline let scratch: UnsafeMutablePointer<Float>
        @usableFromInline let workers: ScratchRegions<Float>
        @usableFromInline let kernelPart, inputPart, outputPart: ScratchRegion<Float>
        @usableFromInline let sample: Int
        @usableFromInline let layout: ChannelLayout
        @usableFromInline let rowsOfChannels: ChannelGeometry
        @usableFromInline let columnBlock, columnKernel: Int

        @inlinable
        init(split: Threading.Split, r: ReducedStreams, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
             mean: UnsafeMutablePointer<Float>, invstd: UnsafeMutablePointer<Float>,
             geometry: GroupNormKernels.Geometry, blockRows: Int, epsilon: Float, backend: Backend,
             streaming: Bool, epilogue: Epilogue<Float>, ones: UnsafePointer<Float>,
             scratch: UnsafeMutablePointer<Float>, workers: ScratchRegions<Float>, kernelPart: ScratchRegion<Float>,
             inputPart: ScratchRegion<Float>, outputPart: ScratchRegion<Float>,
             sample: Int, layout: ChannelLayout, rowsOfChannels: ChannelGeometry, columnBlock: Int,
             columnKernel: Int) {
            self.split = split; self.r = r; self.gamma = gamma; self.beta = beta; self.mean = mean
            self.invstd = invstd; self.geometry = geometry; self.blockRows = blockRows; self.epsilon = epsilon
            self.backend = backend; self.streaming = streaming; self.epilogue = epilogue; self.ones = ones
            self.scratch = scratch; self.workers = workers; self.kernelPart = kernelPart
            self.inputPart = inputPart; self.outputPart = outputPart
            self.sample = sample; self.layout = layout; self.rowsOfChannels = rowsOfChannels
            self.columnBlock = columnBlock; self.columnKernel = columnKernel
        }

        @inlinable
        func run(chunk: Int, worker: Int) -> Int? {
            let g = geometry
            let region = workers.pointer(in: scratch, worker)
            let xf = inputPart.pointer(in: region), yf = outputPart.pointer(in: region)
            let one = GroupNormKernels.Geometry(samples: 1, channels: g.channels,
                                                groups: g.groups, spatial: g.spatial)
            // The cache's copy (none in `infer`) streams with the output: the
            // 16-bit rule streams everything a call writes.
            let perGroup = GroupStatistics.widensGroups(g, layout: layout, backend: backend)
            for n in split.rows(ofChunk: chunk) {
                let offset = n * sample, firstRow = n * g.groups
                if perGroup {
                    // One group at a time: widened, normalized and narrowed
                    // while it is in L2 (a sample may not fit), as the
                    // `Float` kernel's per-group loop visits it.
                    let length = g.rowLength, perGroupChannels = g.channelsPerGroup
                    let group = GroupNormKernels.Geometry(samples: 1, channels: perGroupChannels, groups: 1,
                                                          spatial: g.spatial)
                    for k in 0..<g.groups {
                        let at = offset + k * length, row = firstRow + k
                        r.widen(r.x, offset: at, into: xf, count: length, copying: true,
                                streaming: streaming)
                        if GroupNormKernels.forward(
                            x: xf, geometry: group, blockRows: 1, epsilon: epsilon, backend: backend,
                            gamma: gamma + k * perGroupChannels, beta: beta + k * perGroupChannels,
                            mean: mean + row, invstd: invstd + row, y: yf, streaming: false, ones: ones,
                            scratch: kernelPart.pointer(in: region)) != nil {
                            StreamingStores.fence(streaming)
                            return row
                        }
                        r.narrow(yf, offset: at, count: length, streaming: streaming, epilogue: epilogue)
                    }
                    continue
                }
                r.widen(r.x, offset: offset, into: xf, count: sample, copying: true,
                        streaming: streaming)
                if layout == .nhwc {
                    let regions = ChannelsLastScratch(kernelPart.pointer(in: region), kernel: columnKernel,
                                                      channels: g.channels, groups: g.groups)
                    if let bad = GroupStatistics.channelsLastSample(
                        x: xf, geometry: rowsOfChannels, groups: g.groups,
                        block: columnBlock, backend: backend, epsilon: epsilon,
                        gamma: gamma, beta: beta, mean: mean + firstRow,
                        invstd: invstd + firstRow, y: yf, streaming: false,
                        epilogue: .identity, ones: ones, scratch: regions) {
                        StreamingStores.fence(streaming)
                        return firstRow + bad
                    }
                } else if let bad = GroupNormKernels.forward(
                    x: xf, geometry: one, blockRows: blockRows, epsilon: epsilon,
                    backend: backend, gamma: gamma, beta: beta,
                    mean: mean + firstRow, invstd: invstd + firstRow, y: yf,
                    streaming: false, ones: ones, scratch: kernelPart.pointer(in: region)) {
                    StreamingStores.fence(streaming)
                    return firstRow + bad
                }
                r.narrow(yf, offset: offset, count: sample, streaming: streaming, epilogue: epilogue)
            }
            StreamingStores.fence(streaming)
            return nil
        }
    }

    /// The 16-bit backward's phase: each sample of a chunk, `dy` (masked after
    /// a ReLU) and the cached input widened into the worker's `Float` regions,
    /// through the channels-first or channels-last `Float` backward, `dx`
    /// narrowed; the samples' parameter sums added to the chunk's partials.
    @usableFromInline
    struct ReducedBackwardPass: Threading.Pass {
        @usableFromInline let split: Threading.Split
        @usableFromInline let p: BackwardPointers<Float>
        @usableFromInline let r: ReducedStreams
        @usableFromInline let mask: UnsafePointer<UInt8>?
        @usableFromInline let partials: ScratchRegions<Float>
        @usableFromInline let g: GroupNormKernels.Geometry
        @usableFromInline let blockRows: Int
        @usableFromInline let backend: Backend
        @usableFromInline let ones: UnsafePointer<Float>
        @usableFromInline let scratch: UnsafeMutablePointer<Float>
        @usableFromInline let workers: ScratchRegions<Float>
        @usableFromInline let kernelPart, dyPart, xPart, dxPart, samplePart: ScratchRegion<Float>
        @usableFromInline let sample: Int
        @usableFromInline let streaming: Bool
        @usableFromInline let layout: ChannelLayout
        @usableFromInline let rowsOfChannels: ChannelGeometry
        @usableFromInline let columnBlock, columnKernel: Int

        @inlinable
        init(split: Threading.Split, p: BackwardPointers<Float>, r: ReducedStreams,
             mask: UnsafePointer<UInt8>?, partials: ScratchRegions<Float>, g: GroupNormKernels.Geometry,
             blockRows: Int, backend: Backend, ones: UnsafePointer<Float>,
             scratch: UnsafeMutablePointer<Float>, workers: ScratchRegions<Float>,
             kernelPart: ScratchRegion<Float>, dyPart: ScratchRegion<Float>, xPart: ScratchRegion<Float>,
             dxPart: ScratchRegion<Float>, samplePart: ScratchRegion<Float>, sample: Int, streaming: Bool,
             layout: ChannelLayout, rowsOfChannels: ChannelGeometry, columnBlock: Int, columnKernel: Int) {
            self.split = split; self.p = p; self.r = r; self.mask = mask; self.partials = partials; self.g = g
            self.blockRows = blockRows; self.backend = backend; self.ones = ones; self.scratch = scratch
            self.workers = workers; self.kernelPart = kernelPart; self.dyPart = dyPart; self.xPart = xPart
            self.dxPart = dxPart; self.samplePart = samplePart; self.sample = sample
            self.streaming = streaming; self.layout = layout; self.rowsOfChannels = rowsOfChannels
            self.columnBlock = columnBlock; self.columnKernel = columnKernel
        }

        @inlinable
        func run(chunk: Int, worker: Int) {
            let channels = g.channels
            let own = workers.pointer(in: scratch, worker)
            let dyf = dyPart.pointer(in: own), xf = xPart.pointer(in: own)
            let dxf = dxPart.pointer(in: own), mine = samplePart.vectors(2, of: channels, in: own)
            let sums = partials.vectors(2, of: channels, in: scratch, chunk)
            sums[0].update(repeating: 0, count: channels)
            sums[1].update(repeating: 0, count: channels)
            let one = GroupNormKernels.Geometry(samples: 1, channels: channels,
                                                groups: g.groups, spatial: g.spatial)
            for n in split.rows(ofChunk: chunk) {
                let offset = n * sample, firstRow = n * g.groups
                r.widen(r.dy!, offset: offset, into: dyf, count: sample)
                if let mask {
                    Float.reluMaskRow(count: sample, dy: dyf, mask: mask + offset, into: dyf)
                }
                r.widen(r.x, offset: offset, into: xf, count: sample)
                if layout == .nhwc {
                    // Adds the sample's Σ dy·xhat and Σ dy to the chunk's.
                    GroupStatistics.channelsLastSampleBackward(
                        dy: dyf, mask: nil, x: xf, geometry: rowsOfChannels,
                        groups: g.groups, block: columnBlock, backend: backend,
                        gamma: p.gamma, mean: p.mean + firstRow,
                        invstd: p.invstd + firstRow, dx: dxf, dgamma: sums[0],
                        dbeta: sums[1], streaming: false, ones: ones,
                        scratch: ChannelsLastScratch(kernelPart.pointer(in: own), kernel: columnKernel,
                                                     channels: channels, groups: g.groups))
                    r.narrow(dxf, offset: offset, count: sample, streaming: streaming)
                    continue
                }
                GroupNormKernels.backward(
                    BackwardPointers(dy: dyf, x: xf, mean: p.mean + firstRow,
                                     invstd: p.invstd + firstRow, gamma: p.gamma,
                                     dx: dxf, dgamma: mine[0], dbeta: mine[1]),
                    geometry: one, blockRows: blockRows, backend: backend,
                    ones: ones, scratch: kernelPart.pointer(in: own))
                for k in 0..<channels {
                    sums[0][k] += mine[0][k]
                    sums[1][k] += mine[1][k]
                }
                r.narrow(dxf, offset: offset, count: sample, streaming: streaming)
            }
            StreamingStores.fence(streaming)
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
        let streaming = StreamingStores.shouldStream(reduced: count, tensors: 3)
        workspace.withRegions(ones: onesCount, scratch: scratchLayout.count, parameters: channels) {
            ones, scratch, standIns in
            cache.withReducedBackward(dy, dx, dgamma: dgamma, dbeta: dbeta) { buffers, mask, r in
                if let residualGradient {
                    ReducedStreams.residualGradient(dy, mask: mask, into: residualGradient)
                }
                cache.withBackwardPointers(buffers, standIns: standIns) { p in
                    Threading.run(split, ReducedBackwardPass(
                        split: split, p: p, r: r, mask: mask, partials: partials, g: g, blockRows: blockRows, backend: backend, ones: ones,
                        scratch: scratch, workers: workers, kernelPart: kernelPart, dyPart: dyPart, xPart: xPart,
                        dxPart: dxPart, samplePart: samplePart, sample: sample, streaming: streaming,
                        layout: layout, rowsOfChannels: rowsOfChannels, columnBlock: columnBlock,
                        columnKernel: columnKernel))
                    Threading.sumPartials(partials, in: scratch, chunks: split.chunks,
                                          count: channels, dgamma: p.dgamma,
                                          dbeta: p.dbeta)
                }
            }
        }
    }
}
