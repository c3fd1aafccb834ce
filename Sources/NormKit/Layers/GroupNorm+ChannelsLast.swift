// GroupNorm and InstanceNorm over channels-last input, (N, L, C), (N, H, W, C)
// or (N, D, H, W, C): each sample is an `S x C` matrix, which is
// SpatialBatchNorm's NHWC geometry with one sample. So the kernels are its
// column kernels (`gemv(Trans)` on row blocks): per sample, each channel's
// mean and M2 over its S rows, merged by Chan's formula into its group's
// (the merge of blocks, threads and processes), then the normalize pass with
// per-channel vectors (mean_g, gamma_c·invstd_g, beta_c); backward, the
// per-channel sums `Σ dy` and `Σ dy·(x - mean_g)`, summed per group, and the
// one pass `dx = A_c·dy + B_c·(x - mean_g) + C_c`. Samples go to the workers.

/// Named regions of one worker's scratch for the channels-last passes, laid
/// out once (``Layout``) from a base pointer: the kernel's block first, then
/// channel and group vectors on whole cache lines.
@usableFromInline
struct ChannelsLastScratch<Scalar: BLASScalar> {
    /// The column kernels' scratch (a block of rows, and their vectors).
    @usableFromInline let kernel: UnsafeMutablePointer<Scalar>
    /// Per channel: the mean (forward) or `Σ dy·(x - mean_g)` (backward).
    @usableFromInline let first: UnsafeMutablePointer<Scalar>
    /// Per channel: the M2 (forward) or `Σ dy` (backward).
    @usableFromInline let second: UnsafeMutablePointer<Scalar>
    /// Per channel: the group's mean broadcast to its channels.
    @usableFromInline let groupMean: UnsafeMutablePointer<Scalar>
    /// Three per-channel vectors: scale and shift (forward) or the
    /// coefficients A, B, C (backward).
    @usableFromInline let vectors: VectorSet<Scalar>
    /// Three per-group vectors: the merged M2 in `[1]` and a block's means
    /// in `[2]` (forward), or `Σ gamma·dy` and `Σ gamma·dy·xhat` in `[0]` and
    /// `[1]` (backward).
    @usableFromInline let groupSums: VectorSet<Scalar>

    /// The regions, in order.
    @usableFromInline
    struct Layout {
        @usableFromInline let kernel, first, second, groupMean: ScratchRegion<Scalar>
        @usableFromInline let vectors, groupSums: ScratchRegions<Scalar>
        @usableFromInline let count: Int

        @inlinable
        init(kernel: Int, channels: Int, groups: Int) {
            var layout = ScratchLayout<Scalar>()
            self.kernel = layout.region(kernel)
            first = layout.region(channels)
            second = layout.region(channels)
            groupMean = layout.region(channels)
            vectors = layout.regions(3, of: channels)
            groupSums = layout.regions(3, of: groups)
            count = layout.count
        }
    }

    /// Scalars per worker for `kernel` scalars of kernel scratch, `channels` and `groups`.
    @inlinable
    static func count(kernel: Int, channels: Int, groups: Int) -> Int {
        Layout(kernel: kernel, channels: channels, groups: groups).count
    }

    @inlinable
    init(_ base: UnsafeMutablePointer<Scalar>, kernel: Int, channels: Int, groups: Int) {
        let layout = Layout(kernel: kernel, channels: channels, groups: groups)
        self.kernel = layout.kernel.pointer(in: base)
        first = layout.first.pointer(in: base)
        second = layout.second.pointer(in: base)
        groupMean = layout.groupMean.pointer(in: base)
        vectors = layout.vectors.vectors(in: base)
        groupSums = layout.groupSums.vectors(in: base)
    }
}

extension GroupStatistics {
    /// The statistics and output pass over channels-last input: samples on the
    /// workers, each through ``channelsLastSample(x:geometry:groups:block:backend:epsilon:gamma:beta:mean:invstd:y:streaming:epilogue:ones:scratch:)``.
    /// - Returns: the first row `n·G + g` whose statistics are not finite, or `nil`.
    @inlinable
    static func channelsLastPass<Scalar: BLASScalar>(
        _ x: UnsafePointer<Scalar>?, geometry g: GroupNormKernels.Geometry, gamma: [Scalar],
        beta: [Scalar], epsilon: Scalar, backend: Backend,
        statistics: (mean: UnsafeMutablePointer<Scalar>?, invstd: UnsafeMutablePointer<Scalar>?)?,
        y: UnsafeMutablePointer<Scalar>?, epilogue: Epilogue<Scalar>,
        copy: InputCopy<Scalar>? = nil, workspace: inout Workspace<Scalar>
    ) -> Int? {
        let sample = ChannelGeometry(outer: g.spatial, channels: g.channels, inner: 1)
        let block = sample.block(bytesPerScalar: MemoryLayout<Scalar>.stride, buffers: 2)
        let kernel = sample.scratchCount(block: block, vectors: 3)
        let split = Threading.split(outer: g.samples, scalarsPerRow: g.channels * g.spatial,
                                    of: Scalar.self, backend: backend)
        // Each worker's regions, then the statistics when the caller keeps none.
        var layout = ScratchLayout<Scalar>()
        let workers = layout.regions(split.workers, of: ChannelsLastScratch<Scalar>.count(
            kernel: kernel, channels: g.channels, groups: g.groups))
        let ownMean = layout.region(statistics == nil ? g.rows : 0)
        let ownInvstd = layout.region(statistics == nil ? g.rows : 0)
        let streaming = StreamingStores.shouldStream(count: g.rows * g.rowLength, of: Scalar.self)
        return workspace.withRegions(
            ones: sample.onesCount(block: block), scratch: layout.count, parameters: g.channels,
            gamma: gamma, beta: beta
        ) { ones, scratch, gamma, beta in
            Threading.firstFailure(split, ChannelsLastForwardPass(
                split: split, x: x, y: y, geometry: g, sample: sample, block: block, gamma: gamma, beta: beta,
                mean: statistics?.mean ?? ownMean.pointer(in: scratch),
                invstd: statistics?.invstd ?? ownInvstd.pointer(in: scratch),
                epsilon: epsilon, backend: backend, streaming: streaming, epilogue: epilogue,
                copy: copy, ones: ones, scratch: scratch, workers: workers, kernel: kernel))
        }
    }

    /// One channels-last sample, an `S x C` matrix: per-channel moments by
    /// the column kernel, merged per group (Chan, channel by channel of every
    /// group at once), the group statistics into `mean` and `invstd`, then
    /// `y = act((x - mean_g)·gamma_c·invstd_g + beta_c)`. With a `copy` (the
    /// cache's storage; BLAS), the sample is copied there first, streamed,
    /// and the passes read `x` from cache.
    /// - Returns: the first group whose statistics are not finite, or `nil`.
    @inlinable
    static func channelsLastSample<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, geometry g: ChannelGeometry, groups: Int, block: Int,
        backend: Backend, epsilon: Scalar, gamma: UnsafePointer<Scalar>, beta: UnsafePointer<Scalar>,
        mean: UnsafeMutablePointer<Scalar>, invstd: UnsafeMutablePointer<Scalar>,
        y: UnsafeMutablePointer<Scalar>, streaming: Bool, epilogue: Epilogue<Scalar>,
        copy: InputCopy<Scalar>? = nil,
        ones: UnsafePointer<Scalar>, scratch s: ChannelsLastScratch<Scalar>
    ) -> Int? {
        let channels = g.channels, width = channels / groups
        if let copy {
            copy.copy(x, offset: 0, count: g.outer * channels)
            copy.fence()
        }
        BatchNormKernels.moments(x: x, geometry: g, block: block, backend: backend,
                                 mean: s.first, m2: s.second, ones: ones, scratch: s.kernel)
        // Merge the k-th channel of every group into the groups' totals.
        let groupM2 = s.groupSums[1], blockMean = s.groupSums[2]
        mean.update(repeating: 0, count: groups)
        groupM2.update(repeating: 0, count: groups)
        var merged = 0
        for k in 0..<width {
            for j in 0..<groups {
                blockMean[j] = s.first[j * width + k]
                s.groupMean[j] = s.second[j * width + k]   // the block's M2, briefly
            }
            merged = Moments.merge(count: merged, mean: mean, m2: groupM2, blockCount: g.outer,
                                   blockMean: blockMean, blockM2: s.groupMean, length: groups)
        }
        let values = Scalar(merged)
        for j in 0..<groups {
            invstd[j] = 1 / (groupM2[j] / values + epsilon).squareRoot()
            guard mean[j].isFinite, invstd[j].isFinite else { return j }
        }
        let scale = s.vectors[0], shift = s.vectors[1]
        for c in 0..<channels {
            s.groupMean[c] = mean[c / width]
            scale[c] = gamma[c] * invstd[c / width]
            shift[c] = beta[c]
        }
        BatchNormKernels.normalize(x: x, geometry: g, mean: s.groupMean, scale: scale, shift: shift,
                                   y: y, streaming: streaming, epilogue: epilogue)
        return nil
    }

    /// The backward pass over a validated channels-last cache: samples on the
    /// workers, each through
    /// ``channelsLastSampleBackward(dy:mask:x:geometry:groups:block:backend:gamma:mean:invstd:dx:dgamma:dbeta:streaming:ones:scratch:)``,
    /// then the chunks' partial `dgamma` and `dbeta` summed in chunk order.
    @inlinable
    static func channelsLastBackward<Scalar: BLASScalar>(
        _ buffers: GradientBuffers<Scalar>, cache: NormCache<Scalar>, mask: UnsafePointer<UInt8>?,
        geometry g: GroupNormKernels.Geometry, backend: Backend, workspace: inout Workspace<Scalar>
    ) {
        let sample = ChannelGeometry(outer: g.spatial, channels: g.channels, inner: 1)
        let block = sample.block(bytesPerScalar: MemoryLayout<Scalar>.stride, buffers: 3)
        // As BatchStatistics' backward: a second block for a ReLU's masked
        // gradient, and a page to place the products away from the input.
        let kernel = (mask == nil ? 1 : 2) * Workspace<Scalar>.lines(sample.scratchCount(block: block, vectors: 0))
            + Workspace<Scalar>.pageScalars + (mask == nil ? 0 : 64 / MemoryLayout<Scalar>.stride)
        let split = Threading.split(outer: g.samples, scalarsPerRow: g.channels * g.spatial,
                                    of: Scalar.self, backend: backend)
        let streaming = StreamingStores.shouldStream(count: g.rows * g.rowLength, of: Scalar.self)
        // Each worker's regions, then each chunk's partial dgamma and dbeta.
        var layout = ScratchLayout<Scalar>()
        let workers = layout.regions(split.workers, of: ChannelsLastScratch<Scalar>.count(
            kernel: kernel, channels: g.channels, groups: g.groups))
        let partials = layout.regions(split.chunks, of: 2 * g.channels)
        workspace.withRegions(ones: sample.onesCount(block: block), scratch: layout.count,
                              parameters: g.channels) { ones, scratch, standIns in
            cache.withBackwardPointers(buffers, standIns: standIns) { p in
            Threading.run(split, ChannelsLastBackwardPass(
                split: split, pointers: p, mask: mask, geometry: g, sample: sample, block: block,
                backend: backend, streaming: streaming, ones: ones, scratch: scratch, workers: workers,
                kernel: kernel, partials: partials))
            Threading.sumPartials(partials, in: scratch, chunks: split.chunks,
                                  count: g.channels, dgamma: p.dgamma,
                                  dbeta: p.dbeta)
            }
        }
    }

    /// One channels-last sample's backward: `Σ dy` and `Σ dy·(x - mean_g)`
    /// per channel (the column kernel, with a ReLU's mask inside), summed per
    /// group with `gamma`, then `dx = A_c·dy + B_c·(x - mean_g) + C_c` with
    /// `A_c = gamma_c·invstd_g`, `B_c = -invstd_g²·Σ_g gamma·dy·xhat / M`,
    /// `C_c = -invstd_g·Σ_g gamma·dy / M` (`M = S·C/G`); adds this sample's
    /// `Σ dy·xhat` and `Σ dy` to `dgamma` and `dbeta`.
    @inlinable
    static func channelsLastSampleBackward<Scalar: BLASScalar>(
        dy: UnsafePointer<Scalar>, mask: UnsafePointer<UInt8>?, x: UnsafePointer<Scalar>,
        geometry g: ChannelGeometry, groups: Int, block: Int, backend: Backend,
        gamma: UnsafePointer<Scalar>, mean: UnsafePointer<Scalar>, invstd: UnsafePointer<Scalar>,
        dx: UnsafeMutablePointer<Scalar>, dgamma: UnsafeMutablePointer<Scalar>,
        dbeta: UnsafeMutablePointer<Scalar>, streaming: Bool, ones: UnsafePointer<Scalar>,
        scratch s: ChannelsLastScratch<Scalar>
    ) {
        let channels = g.channels, width = channels / groups
        for c in 0..<channels { s.groupMean[c] = mean[c / width] }
        BatchNormKernels.parameterSums(dy: dy, mask: mask, x: x, geometry: g, block: block,
                                       backend: backend, mean: s.groupMean, dgammaRaw: s.first,
                                       dbeta: s.second, ones: ones, scratch: s.kernel)
        let sumDy = s.groupSums[0], sumDyXhat = s.groupSums[1]
        for j in 0..<groups {
            var a: Scalar = 0, b: Scalar = 0
            for c in (j * width)..<((j + 1) * width) {
                a += gamma[c] * s.second[c]
                b += gamma[c] * s.first[c]
            }
            sumDy[j] = a
            sumDyXhat[j] = b * invstd[j]
        }
        let m = Scalar(g.outer * width)
        let a = s.vectors[0], b = s.vectors[1], cc = s.vectors[2]
        for c in 0..<channels {
            let j = c / width, r = invstd[j]
            a[c] = gamma[c] * r
            b[c] = -r * r * sumDyXhat[j] / m
            cc[c] = -r * sumDy[j] / m
            dgamma[c] += r * s.first[c]
            dbeta[c] += s.second[c]
        }
        BatchNormKernels.combine(dy: dy, mask: mask, x: x, geometry: g,
                                 coefficients: CombineCoefficients(a: a, b: b, c: cc, mean: s.groupMean),
                                 dx: dx, streaming: streaming)
    }

    /// The channels-last forward's phase: each sample of a chunk through
    /// ``channelsLastSample(x:geometry:groups:block:backend:epsilon:gamma:beta:mean:invstd:y:streaming:epilogue:ones:scratch:)``
    /// in its worker's regions; returns the first row `n·G + g` whose
    /// statistics are not finite.
    @usableFromInline
    struct ChannelsLastForwardPass<Scalar: BLASScalar>: Threading.FailablePass {
        @usableFromInline let split: Threading.Split
        @usableFromInline let x: UnsafePointer<Scalar>?
        @usableFromInline let y: UnsafeMutablePointer<Scalar>?
        @usableFromInline let geometry: GroupNormKernels.Geometry
        @usableFromInline let sample: ChannelGeometry
        @usableFromInline let block: Int
        @usableFromInline let gamma, beta: UnsafePointer<Scalar>
        @usableFromInline let mean, invstd: UnsafeMutablePointer<Scalar>
        @usableFromInline let epsilon: Scalar
        @usableFromInline let backend: Backend
        @usableFromInline let streaming: Bool
        @usableFromInline let epilogue: Epilogue<Scalar>
        /// Where `x` is copied as it is first read (the cache's storage), or `nil`.
        @usableFromInline let copy: InputCopy<Scalar>?
        @usableFromInline let ones: UnsafePointer<Scalar>
        @usableFromInline let scratch: UnsafeMutablePointer<Scalar>
        @usableFromInline let workers: ScratchRegions<Scalar>
        @usableFromInline let kernel: Int

        @inlinable
        init(split: Threading.Split, x: UnsafePointer<Scalar>?, y: UnsafeMutablePointer<Scalar>?,
             geometry: GroupNormKernels.Geometry, sample: ChannelGeometry, block: Int,
             gamma: UnsafePointer<Scalar>, beta: UnsafePointer<Scalar>, mean: UnsafeMutablePointer<Scalar>,
             invstd: UnsafeMutablePointer<Scalar>, epsilon: Scalar, backend: Backend, streaming: Bool,
             epilogue: Epilogue<Scalar>, copy: InputCopy<Scalar>?, ones: UnsafePointer<Scalar>,
             scratch: UnsafeMutablePointer<Scalar>, workers: ScratchRegions<Scalar>, kernel: Int) {
            self.split = split; self.x = x; self.y = y; self.geometry = geometry; self.sample = sample
            self.block = block; self.gamma = gamma; self.beta = beta; self.mean = mean; self.invstd = invstd
            self.epsilon = epsilon; self.backend = backend; self.streaming = streaming; self.epilogue = epilogue
            self.copy = copy; self.ones = ones; self.scratch = scratch; self.workers = workers
            self.kernel = kernel
        }

        @inlinable
        func run(chunk: Int, worker: Int) -> Int? {
            let g = geometry
            let regions = ChannelsLastScratch(workers.pointer(in: scratch, worker), kernel: kernel,
                                              channels: g.channels, groups: g.groups)
            for n in split.rows(ofChunk: chunk) {
                let offset = n * g.channels * g.spatial, row = n * g.groups
                if let failed = GroupStatistics.channelsLastSample(
                    x: x! + offset, geometry: sample, groups: g.groups, block: block, backend: backend,
                    epsilon: epsilon, gamma: gamma, beta: beta, mean: mean + row, invstd: invstd + row,
                    y: y! + offset, streaming: streaming, epilogue: epilogue.advanced(by: offset),
                    copy: copy?.advanced(by: offset), ones: ones, scratch: regions) {
                    return row + failed
                }
            }
            return nil
        }
    }

    /// The channels-last backward's phase: each sample of a chunk through
    /// ``channelsLastSampleBackward(dy:mask:x:geometry:groups:block:backend:gamma:mean:invstd:dx:dgamma:dbeta:streaming:ones:scratch:)``,
    /// the chunk's partial `dgamma` and `dbeta` into its region of `partials`.
    @usableFromInline
    struct ChannelsLastBackwardPass<Scalar: BLASScalar>: Threading.Pass {
        @usableFromInline let split: Threading.Split
        @usableFromInline let pointers: BackwardPointers<Scalar>
        @usableFromInline let mask: UnsafePointer<UInt8>?
        @usableFromInline let geometry: GroupNormKernels.Geometry
        @usableFromInline let sample: ChannelGeometry
        @usableFromInline let block: Int
        @usableFromInline let backend: Backend
        @usableFromInline let streaming: Bool
        @usableFromInline let ones: UnsafePointer<Scalar>
        @usableFromInline let scratch: UnsafeMutablePointer<Scalar>
        @usableFromInline let workers: ScratchRegions<Scalar>
        @usableFromInline let kernel: Int
        @usableFromInline let partials: ScratchRegions<Scalar>

        @inlinable
        init(split: Threading.Split, pointers: BackwardPointers<Scalar>, mask: UnsafePointer<UInt8>?,
             geometry: GroupNormKernels.Geometry, sample: ChannelGeometry, block: Int, backend: Backend,
             streaming: Bool, ones: UnsafePointer<Scalar>, scratch: UnsafeMutablePointer<Scalar>,
             workers: ScratchRegions<Scalar>, kernel: Int, partials: ScratchRegions<Scalar>) {
            self.split = split; self.pointers = pointers; self.mask = mask; self.geometry = geometry
            self.sample = sample; self.block = block; self.backend = backend; self.streaming = streaming
            self.ones = ones; self.scratch = scratch; self.workers = workers; self.kernel = kernel
            self.partials = partials
        }

        @inlinable
        func run(chunk: Int, worker: Int) {
            let g = geometry, p = pointers
            let regions = ChannelsLastScratch(workers.pointer(in: scratch, worker), kernel: kernel,
                                              channels: g.channels, groups: g.groups)
            let part = partials.vectors(2, of: g.channels, in: scratch, chunk)
            let dgamma = part[0], dbeta = part[1]
            dgamma.update(repeating: 0, count: g.channels)
            dbeta.update(repeating: 0, count: g.channels)
            for n in split.rows(ofChunk: chunk) {
                let offset = n * g.channels * g.spatial, row = n * g.groups
                GroupStatistics.channelsLastSampleBackward(
                    dy: p.dy + offset, mask: mask.map { $0 + offset }, x: p.x + offset, geometry: sample,
                    groups: g.groups, block: block, backend: backend, gamma: p.gamma, mean: p.mean + row,
                    invstd: p.invstd + row, dx: p.dx + offset, dgamma: dgamma, dbeta: dbeta,
                    streaming: streaming, ones: ones, scratch: regions)
            }
        }
    }
}
