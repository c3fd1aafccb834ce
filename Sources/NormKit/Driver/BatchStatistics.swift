/// The forward and backward passes shared by the layers with batch statistics
/// and running statistics (``BatchNorm``, ``SpatialBatchNorm`` and their
/// synchronized twins): validation of the results, the running-statistics
/// update after success, and the dispatch to the kernels of a
/// ``ChannelGeometry``. A ``StatisticsExchange`` turns this process's sums into
/// the batch's: the identity for one process, collectives across ranks.
@usableFromInline
enum BatchStatistics {
    /// How a pass over `g` runs: chunks of the outer dimension (whole rows of
    /// channels) on ``Threading``'s workers; whether its outputs are streamed
    /// (``StreamingStores/shouldStream(count:of:)``) and the cache's copy of
    /// the input (``StreamingStores/streamsCopy(count:of:)``); a 16-bit
    /// call streams both or neither, by
    /// ``StreamingStores/shouldStream(reduced:tensors:)`` over the `tensors`
    /// it reads and writes.
    @inlinable
    static func schedule<Scalar: BLASScalar>(
        _ g: ChannelGeometry, reduced: Bool, tensors: Int, backend: Backend, of: Scalar.Type
    ) -> (split: Threading.Split, streaming: Bool, streamsCopy: Bool) {
        let count = g.outer * g.channels * g.inner
        let split = Threading.split(outer: g.outer, scalarsPerRow: g.channels * g.inner,
                                    of: Scalar.self, backend: backend)
        if reduced {
            let streaming = StreamingStores.shouldStream(reduced: count, tensors: tensors)
            return (split, streaming, streaming)
        }
        return (split, StreamingStores.shouldStream(count: count, of: Scalar.self),
                StreamingStores.streamsCopy(count: count, of: Scalar.self))
    }

    /// The training or inference forward pass over the validated input the
    /// cache holds.
    ///
    /// `source`, when given, is the caller's input, which the pass that first
    /// reads it copies into the cache (``NormCache/adoptLater(_:shape:)``)
    /// unit by unit: the moments pass in training, the normalize pass in
    /// inference.
    ///
    /// Writes `output` (validated to hold the input's count) and `cache`;
    /// updates the running statistics only after every statistic was found
    /// finite and the output was written. The geometry may have no rows (an
    /// empty shard of a synchronized layer: its moments have count 0).
    /// - Throws: ``NormError/nonFiniteStatistics(index:)`` naming the channel;
    ///   the exchange's transport errors.
    @inlinable
    static func forward<Scalar: BLASScalar>(
        exchange: some StatisticsExchange,
        geometry g: ChannelGeometry, mode: Mode, origin: CacheOrigin,
        gamma: [Scalar], beta: [Scalar],
        runningMean: inout [Scalar], runningVariance: inout [Scalar],
        epsilon: Scalar, update: RunningUpdate<Scalar>?, estimator: VarianceEstimator, backend: Backend,
        output: UnsafeMutableBufferPointer<Scalar>, residual: UnsafePointer<Scalar>? = nil,
        activation: FusedActivation = .none, cache: inout NormCache<Scalar>,
        workspace: inout Workspace<Scalar>, reduced: ReducedStreams? = nil,
        source: UnsafePointer<Scalar>? = nil
    ) throws(NormError) {
        precondition(source == nil || reduced == nil,
                     "only a Float or Double pass copies its input as it reads it")
        let channels = g.channels, rowStride = g.channels * g.inner
        cache.record(gamma: gamma, beta: beta, parameters: channels, mode: mode, statisticCount: channels, origin: origin)
        cache.prepareMask(activation: activation, count: g.outer * rowStride)
        let block = g.block(bytesPerScalar: MemoryLayout<Scalar>.stride, buffers: 2)
        let (split, streaming, streamsCopy) = schedule(g, reduced: reduced != nil, tensors: mode == .training ? 3 : 2, backend: backend, of: Scalar.self)
        let plan = ForwardScratch<Scalar>(
            geometry: g, split: split, block: block,
            units: reduced != nil ? reducedScratch(geometry: g, block: block)
                : source != nil ? 2 * channels : 0,
            exchange: exchange.scratchCount(channels: channels))
        // The batch's values per statistic: this process's, or the exchange's total.
        var count = g.valuesPerStatistic
        let failure: NormError? = workspace.withRegions(
            ones: g.onesCount(block: block), scratch: plan.count
        ) { ones, scratch in
            cache.withForwardPointers(writingInput: source != nil) { p in
                // A 16-bit pass's input is the caller's; the cache's copy of it
                // is made by the pass that widens it first.
                let reduced = reduced?.copying(to: p.reduced)
                let x = p.x ?? UnsafePointer(scratch)
                // An inference pass with a `source` normalizes from it (and
                // copies it into the cache `x` as it goes); a training pass
                // from the copy its moments made.
                let inferenceSource = mode == .inference ? source : nil
                let read = inferenceSource ?? x
                let anchor = reduced.map { $0.x.assumingMemoryBound(to: Scalar.self) } ?? read
                let mean = p.mean, invstd = p.invstd, variance = plan.variance.pointer(in: scratch)
                let vectors = Workspace<Scalar>.spread(
                    3, of: channels, in: plan.vectors.pointer(in: scratch), awayFrom: anchor)
                switch mode {
                case .training:
                    // Each chunk of rows (samples) its own moments, then Chan
                    // merges in chunk order.
                    if g.outer > 0 {
                        Threading.run(split, MomentsPass(
                            split: split, geometry: g, x: x, plan: plan, scratch: scratch, ones: ones,
                            block: block, backend: backend, reduced: reduced, source: source,
                            streaming: streamsCopy))
                    }
                    mean.update(repeating: 0, count: channels)
                    variance.update(repeating: 0, count: channels)
                    var merged = 0
                    for chunk in 0..<split.chunks where g.outer > 0 {
                        let rows = split.rows(ofChunk: chunk)
                        let own = plan.partials.vectors(2, of: channels, in: scratch, chunk)
                        merged = Moments.merge(count: merged, mean: mean, m2: variance,
                                               blockCount: rows.count * g.inner, blockMean: own[0],
                                               blockM2: own[1], length: channels)
                    }
                    switch exchange.mergeMoments(local: merged, mean: mean, m2: variance,
                                                 channels: channels,
                                                 scratch: plan.exchange.pointer(in: scratch)) {
                    case let .success(total): count = total
                    case let .failure(error): return error
                    }
                    let values = Scalar(count)
                    for c in 0..<channels {
                        guard mean[c].isFinite, variance[c].isFinite else { return .nonFiniteStatistics(index: c) }
                        variance[c] /= values
                    }
                case .inference:
                    for c in 0..<channels {
                        mean[c] = runningMean[c]
                        variance[c] = runningVariance[c]
                    }
                }
                // The normalize pass's vectors: mean, scale (gamma·invstd, or
                // invstd without a scale: `Affine`) and shift (beta, or zeros).
                let center = vectors[0], scale = vectors[1], shift = vectors[2]
                for c in 0..<channels {
                    invstd[c] = 1 / (variance[c] + epsilon).squareRoot()
                    guard invstd[c].isFinite, mean[c].isFinite else { return .nonFiniteStatistics(index: c) }
                    center[c] = mean[c]
                    scale[c] = gamma.isEmpty ? invstd[c] : gamma[c] * invstd[c]
                    shift[c] = beta.isEmpty ? 0 : beta[c]
                }
                // A 16-bit pass writes through its streams: its `y` is a
                // placeholder the reduced branch never reads.
                let placeholder = reduced == nil ? nil : UnsafeMutablePointer(mutating: x)
                if g.outer > 0, let y = output.baseAddress ?? placeholder {
                    normalizePass(split: split, geometry: g, x: read, y: y, vectors: AffineVectors(vectors),
                                  streaming: streaming,
                                  epilogue: Epilogue(residual: residual, activation: activation, mask: p.mask),
                                  block: block,
                                  reduced: reduced.map {
                                      (streams: $0, copying: mode == .inference, units: plan.units,
                                       scratch: scratch)
                                  },
                                  copy: inferenceSource.map { _ in
                                      InputCopy(UnsafeMutablePointer(mutating: x), streaming: streamsCopy)
                                  })
                }
                // Everything succeeded: only now do the running statistics change.
                if mode == .training, let update {
                    let varianceWeight = estimator == .unbiased
                        ? update.take * Scalar(count) / Scalar(count - 1) : update.take
                    BatchNormKernels.updateRunning(&runningMean, momentum: update.keep, batch: mean,
                                                   weight: update.take, count: channels, backend: backend)
                    BatchNormKernels.updateRunning(&runningVariance, momentum: update.keep, batch: variance,
                                                   weight: varianceWeight, count: channels, backend: backend)
                }
                return nil
            }
        }
        if let failure {
            cache.invalidate()
            throw failure
        }
    }

    /// The scratch of a forward pass (``ScratchLayout``): per worker the
    /// moments' block and vectors (``kernel``) and a 16-bit pass's units
    /// (``units``); per chunk its mean and M2 (``partials``); the batch
    /// variance; the exchange's; and the normalize pass's mean, scale and
    /// shift, read for every row, on lines spread away from the input's offset
    /// in a page (``vectors``, `Workspace.spread`).
    @usableFromInline
    struct ForwardScratch<Scalar: BLASScalar> {
        @usableFromInline let kernel, units, partials: ScratchRegions<Scalar>
        @usableFromInline let variance, exchange, vectors: ScratchRegion<Scalar>
        /// The scalars of scratch the pass asks its workspace for.
        @usableFromInline let count: Int

        @inlinable
        init(geometry g: ChannelGeometry, split: Threading.Split, block: Int, units: Int, exchange: Int) {
            var layout = ScratchLayout<Scalar>()
            kernel = layout.regions(split.workers, of: g.scratchCount(block: block, vectors: 3))
            self.units = layout.regions(split.workers, of: units)
            partials = layout.regions(split.chunks, of: 2 * g.channels)
            variance = layout.region(g.channels)
            self.exchange = layout.region(exchange)
            vectors = layout.region(Workspace<Scalar>.spreadScratch(3, of: g.channels))
            count = layout.count
        }
    }

    /// The normalize pass over the chunks of `split`:
    /// `y = act((x - mean) * scale + shift + residual)` (the epilogue's), with
    /// the mean, scale and shift of `vectors`.
    @inlinable
    static func normalizePass<Scalar: BLASScalar>(
        split: Threading.Split, geometry g: ChannelGeometry, x: UnsafePointer<Scalar>,
        y: UnsafeMutablePointer<Scalar>, vectors: AffineVectors<Scalar>,
        streaming: Bool, epilogue: Epilogue<Scalar>, block: Int,
        reduced: (streams: ReducedStreams, copying: Bool,
                  units: ScratchRegions<Scalar>, scratch: UnsafeMutablePointer<Scalar>)? = nil,
        copy: InputCopy<Scalar>? = nil
    ) {
        Threading.run(split, NormalizePass(
            split: split, geometry: g, x: x, y: y, vectors: vectors, streaming: streaming, epilogue: epilogue, block: block,
            reduced: reduced, copy: copy))
    }

    /// Inference with the running statistics and nothing kept:
    /// `y = act((x - runningMean)·gamma/sqrt(runningVariance + epsilon) + beta + residual)`,
    /// the same bits as the inference forward's output. `x` and `y` may be
    /// the same memory.
    /// - Throws: ``NormError/nonFiniteStatistics(index:)`` naming the channel.
    @inlinable
    static func infer<Scalar: BLASScalar>(
        _ x: UnsafePointer<Scalar>, geometry g: ChannelGeometry, gamma: [Scalar], beta: [Scalar],
        runningMean: [Scalar], runningVariance: [Scalar], epsilon: Scalar, backend: Backend,
        output y: UnsafeMutablePointer<Scalar>, epilogue: Epilogue<Scalar>,
        workspace: inout Workspace<Scalar>, reduced: ReducedStreams? = nil
    ) throws(NormError) {
        let channels = g.channels
        let (split, streaming, _) = schedule(g, reduced: reduced != nil, tensors: 2, backend: backend, of: Scalar.self)
        // A 16-bit pass's units per worker, then the vectors.
        let block = g.block(bytesPerScalar: MemoryLayout<Scalar>.stride, buffers: 2)
        var layout = ScratchLayout<Scalar>()
        let units = layout.regions(split.workers, of: reduced == nil ? 0 : reducedScratch(geometry: g, block: block))
        let vectors = layout.region(Workspace<Scalar>.spreadScratch(3, of: channels))
        let failure: NormError? = workspace.withRegions(ones: 0, scratch: layout.count) { _, scratch in
            let spread = Workspace<Scalar>.spread(3, of: channels, in: vectors.pointer(in: scratch), awayFrom: x)
            let center = spread[0], scale = spread[1], shift = spread[2]
            for c in 0..<channels {
                let invstd = 1 / (runningVariance[c] + epsilon).squareRoot()
                guard invstd.isFinite, runningMean[c].isFinite else { return .nonFiniteStatistics(index: c) }
                center[c] = runningMean[c]
                // Absent parameters (`Affine`): the scale is invstd, the shift 0.
                scale[c] = gamma.isEmpty ? invstd : gamma[c] * invstd
                shift[c] = beta.isEmpty ? 0 : beta[c]
            }
            guard g.outer > 0 else { return nil }
            normalizePass(split: split, geometry: g, x: x, y: y, vectors: AffineVectors(spread),
                          streaming: streaming, epilogue: epilogue, block: block,
                          reduced: reduced.map {
                              (streams: $0, copying: false, units: units, scratch: scratch)
                          })
            return nil
        }
        if let failure { throw failure }
    }

    /// Checks that `cache` came from the layer `origin` and holds statistics
    /// for `channels` channels, and that the caller's buffers fit it.
    @inlinable
    static func validateBackward<Scalar: BLASScalar>(
        _ buffers: GradientBuffers<Scalar>, cache: NormCache<Scalar>, channels: Int,
        origin: CacheOrigin
    ) throws(NormError) {
        try Validation.origin(cache, expected: origin)
        try Validation.cache(cache, parameters: channels, statistics: channels)
        try Validation.gradientBuffers(buffers, cache: cache, parameters: channels)
    }

    /// The closed-form backward (or, with `graph`, the staged one, which exists
    /// for the matrix geometry and one process only) over validated input. The
    /// geometry may have no rows (an empty shard): its sums are zeros.
    /// - Returns: the exchange's transport error, or `nil`.
    @inlinable
    static func backward<Scalar: BLASScalar>(
        _ buffers: GradientBuffers<Scalar>, mask: UnsafePointer<UInt8>? = nil,
        cache: NormCache<Scalar>, geometry g: ChannelGeometry,
        backend: Backend, form: BackwardForm, exchange: some StatisticsExchange,
        workspace: inout Workspace<Scalar>, reduced: ReducedStreams? = nil
    ) -> NormError? {
        let forwardMode = cache.mode, frozen = forwardMode == .inference, channels = g.channels
        // A ReLU's mask (when given) is applied in both passes: the first
        // keeps each block's masked gradient in a second scratch block. The
        // blocks stay those of the unmasked pass, whose sums they must give
        // bit for bit (the block is what a gemv sums at once).
        let block = g.block(bytesPerScalar: MemoryLayout<Scalar>.stride, buffers: 3)
        if form == .throughGraph && reduced == nil {
            backwardThroughGraph(geometry: g, backend: backend, forwardMode: forwardMode, cache: cache,
                                 buffers, workspace: &workspace)
            return nil
        }
        let (split, streaming, _) = schedule(g, reduced: reduced != nil, tensors: 3, backend: backend, of: Scalar.self)
        let plan = BackwardScratch<Scalar>(
            geometry: g, split: split, block: block, masked: mask != nil,
            units: reduced == nil ? 0 : reducedScratch(geometry: g, block: block),
            exchange: exchange.scratchCount(channels: channels))
        var count = g.valuesPerStatistic
        return workspace.withRegions(
            ones: g.onesCount(block: block), scratch: plan.count, parameters: channels
        ) { ones, scratch, standIns in
            cache.withBackwardPointers(buffers, standIns: standIns) { p in
                let anchor = reduced.map { $0.x.assumingMemoryBound(to: Scalar.self) } ?? p.x
                let coefficients = CombineCoefficients(Workspace<Scalar>.spread(
                    4, of: channels, in: plan.vectors.pointer(in: scratch), awayFrom: anchor))
                let mean = coefficients.mean
                mean.update(from: p.mean, count: channels)
                if g.outer > 0 {
                    Threading.run(split, ParameterSumsPass(
                        split: split, geometry: g, pointers: p, plan: plan, scratch: scratch,
                        mean: UnsafePointer(mean), ones: ones, mask: mask, block: block, backend: backend,
                        reduced: reduced))
                }
                // The batch's sums: this process's, then summed over the
                // exchange, where chunk 0's partials were (merged already):
                // `Σ dy·(x - mean)` and `Σ dy`, back to back (the exchange's
                // message).
                let sums = plan.partials.vectors(2, of: channels, in: scratch, 0)
                if g.outer > 0 {
                    Threading.sumPartials(plan.partials, in: scratch, chunks: split.chunks,
                                          count: channels, dgamma: p.dgamma, dbeta: p.dbeta)
                } else {
                    p.dgamma.update(repeating: 0, count: channels)
                    p.dbeta.update(repeating: 0, count: channels)
                }
                sums[0].update(from: p.dgamma, count: channels)
                sums[1].update(from: p.dbeta, count: channels)
                if !frozen {
                    switch exchange.sumGradients(sums.first, channels: channels, local: g.valuesPerStatistic,
                                                 scratch: plan.exchange.pointer(in: scratch)) {
                    case let .success(total): count = total
                    case let .failure(error): return error
                    }
                }
                BatchNormKernels.coefficients(p, sums: sums, channels: channels, count: count,
                                              forwardMode: forwardMode, into: coefficients)
                if g.outer > 0 {
                    Threading.run(split, CombinePass(
                        split: split, geometry: g, pointers: p, coefficients: coefficients,
                        streaming: streaming, mask: mask, block: block, reduced: reduced,
                        units: plan.units, scratch: scratch))
                }
                return nil
            }
        }
    }

    /// The scratch of a closed-form backward (``ScratchLayout``): per worker
    /// a block (two with a ReLU's mask: the masked gradient's copy), with a
    /// page to place it (``kernel``), and a 16-bit pass's units (``units``);
    /// per chunk its partial `dgammaRaw` and `dbeta` (``partials``; chunk 0's
    /// then holds the batch's sums of both); `A`, `B`, `C` and a copy of the
    /// mean, read for every row, on lines spread away from the input's offset
    /// in a page (``vectors``, `Workspace.spread`); last, the exchange's.
    @usableFromInline
    struct BackwardScratch<Scalar: BLASScalar> {
        @usableFromInline let kernel, units, partials: ScratchRegions<Scalar>
        @usableFromInline let vectors, exchange: ScratchRegion<Scalar>
        /// The scalars of scratch the pass asks its workspace for.
        @usableFromInline let count: Int

        @inlinable
        init(geometry g: ChannelGeometry, split: Threading.Split, block: Int, masked: Bool, units: Int,
             exchange: Int) {
            var layout = ScratchLayout<Scalar>()
            kernel = layout.regions(
                split.workers,
                of: (masked ? 2 : 1) * Workspace<Scalar>.lines(g.scratchCount(block: block, vectors: 0))
                    + Workspace<Scalar>.pageScalars + (masked ? Workspace<Scalar>.lineScalars : 0))
            self.units = layout.regions(split.workers, of: units)
            partials = layout.regions(split.chunks, of: 2 * g.channels)
            vectors = layout.region(Workspace<Scalar>.spreadScratch(4, of: g.channels))
            self.exchange = layout.region(exchange)
            count = layout.count
        }
    }

    /// The staged backward (matrix geometry only): the three stages of
    /// ``BatchNormKernels/graphStageOne(dy:x:rows:columns:blockRows:mean:invstd:gamma:forwardMode:backend:dx:node:dgamma:dbeta:divar:ones:)``
    /// and its successors, each over chunks of rows on ``Threading`` (BLAS) and
    /// row blocks that stay in L2 within a chunk, with the chunks' partial column
    /// sums added by `axpy` between stages.
    @inlinable
    static func backwardThroughGraph<Scalar: BLASScalar>(
        geometry g: ChannelGeometry, backend: Backend, forwardMode: Mode, cache: NormCache<Scalar>,
        _ buffers: GradientBuffers<Scalar>, workspace: inout Workspace<Scalar>
    ) {
        let frozen = forwardMode == .inference
        let channels = g.channels, count = g.outer
        let split = Threading.split(outer: count, scalarsPerRow: channels, of: Scalar.self,
                                    backend: backend)
        // Blocks of dy, x, the node and dx in L2 (BLAS); one block (naive).
        let blockRows = backend == .blas
            ? g.block(bytesPerScalar: MemoryLayout<Scalar>.stride, buffers: 4) : count
        // Worker w's node block; chunk k's partial dgamma, dbeta, divar and
        // dmu (4 x channels each); then the batch's sums and dvar.
        var layout = ScratchLayout<Scalar>()
        let nodes = layout.regions(split.workers, of: blockRows * channels)
        let chunkSums = layout.regions(split.chunks, of: 4 * channels)
        let batchSums = layout.region(channels), variances = layout.region(channels)
        workspace.withRegions(
            ones: backend == .blas ? blockRows : 0, scratch: layout.count, parameters: channels
        ) { ones, scratch, standIns in
            cache.withBackwardPointers(buffers, standIns: standIns) { p in
                let firstSums = chunkSums.vectors(4, of: channels, in: scratch, 0), stride = chunkSums.stride
                let batchSum = batchSums.pointer(in: scratch), dvar = variances.pointer(in: scratch)
                var pass = GraphStagePass(
                    stage: .one, split: split, channels: channels, pointers: p, chunkSums: chunkSums,
                    nodes: nodes, scratch: scratch, ones: ones, blockRows: blockRows, forwardMode: forwardMode,
                    backend: backend, dvar: UnsafePointer(dvar), batchSum: UnsafePointer(batchSum))
                Threading.run(split, pass)
                Threading.sumPartials(chunkSums, in: scratch, chunks: split.chunks,
                                      count: channels, dgamma: p.dgamma, dbeta: p.dbeta)
                if frozen { return }
                Threading.sumPartials(chunks: split.chunks, first: firstSums[2],
                                      stride: stride, count: channels, into: batchSum)
                BatchNormKernels.graphVarianceNode(divar: batchSum, invstd: p.invstd,
                                                   columns: channels, dvar: dvar)
                pass.stage = .two
                Threading.run(split, pass)
                Threading.sumPartials(chunks: split.chunks, first: firstSums[3],
                                      stride: stride, count: channels, into: batchSum)
                pass.stage = .three
                Threading.run(split, pass)
            }
        }
    }
}

/// Which backward a batch-statistics pass runs: the closed form (every layer),
/// or cs231n's staged graph (``BatchNorm/backwardThroughGraph(_:cache:)``,
/// one process, the matrix geometry).
@usableFromInline
enum BackwardForm: Sendable {
    /// `dx` from the two per-channel sums in one pass.
    case closedForm
    /// Node by node through the computation graph.
    case throughGraph
}
