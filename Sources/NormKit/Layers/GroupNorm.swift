/// Group normalization of `(N, C, H, W)` images, or `(N, C, L)` and
/// `(N, C, D, H, W)` inputs, `H·W` then standing for the spatial extent (Wu and He 2018; cs231n's
/// `spatial_groupnorm_forward`): each sample's `C` channels are split into `G`
/// contiguous groups of `C/G` channels, and each group is normalized over its
/// `(C/G)·H·W` values; `gamma` and `beta` are per channel.
///
/// `xhat = (x - mean_{n,g}) / sqrt(var_{n,g} + epsilon)` (biased variance),
/// `y = gamma_c * xhat + beta_c`. No running statistics; both modes compute the
/// same thing, so both need at least two values per group.
///
/// ```swift
/// var gn = try GroupNorm<Float>(channelCount: 6, groupCount: 2)
/// let (y, cache) = try gn.forward(Tensor(randomNormal: [2, 6, 4, 5], seed: 1), mode: .training)
/// ```
///
/// With `layout: .nhwc` the input is channels last, `(N, L, C)`, `(N, H, W, C)`
/// or `(N, D, H, W, C)` (PyTorch's `channels_last`; `Float` and `Double`).
///
/// The BLAS backend views channels-first input as an `(N·G) x ((C/G)·H·W)`
/// matrix and takes its row sums with `gemv(NoTrans)` on row blocks that stay
/// in L2; channels-last input as one `H·W x C` matrix per sample, whose column
/// moments (`gemv(Trans)`) merge per group by Chan's formula.
public struct GroupNorm<Scalar: BLASScalar>: ActivatedNormalizationLayer, Equatable {
    /// The forward pass's saved input, per-(sample, group) statistics (`N·G` of
    /// them, sample-major) and `gamma`.
    public typealias Cache = NormCache<Scalar>

    /// `C`, the number of channels.
    public let channelCount: Int
    /// `G`, the number of groups; it divides `C`.
    public let groupCount: Int
    /// Where the channels are: ``ChannelLayout/nchw`` (after the batch) or
    /// ``ChannelLayout/nhwc`` (last), for every rank.
    public var layout: ChannelLayout
    /// Which of `gamma` and `beta` the layer has (PyTorch's `affine`).
    public let affine: Affine
    /// The scale, one per channel; starts at ones; empty without one (``Affine/none``).
    public var gamma: [Scalar]
    /// The shift, one per channel; starts at zeros; empty without one
    /// (``Affine/scaleOnly``, ``Affine/none``).
    public var beta: [Scalar]
    /// Added to the variance before the square root; finite and positive.
    public var epsilon: Scalar
    /// Applied to `gamma·xhat + beta` (plus a residual) in the output pass.
    public var activation: FusedActivation
    /// The implementation used.
    public var backend: Backend

    /// Creates a group-norm layer with `gamma` ones and `beta` zeros.
    ///
    /// - Throws: ``NormError/invalidFeatureCount(_:)``,
    ///   ``NormError/invalidGroupCount(groupCount:channelCount:)`` when `G` is not
    ///   positive or does not divide `C`, ``NormError/invalidEpsilon(_:)``.
    public init(channelCount: Int, groupCount: Int, epsilon: Scalar = 1e-5, layout: ChannelLayout = .nchw,
                activation: FusedActivation = .none, affine: Affine = .scaleAndShift,
                backend: Backend = .blas) throws(NormError) {
        try Validation.featureCount(channelCount)
        guard groupCount > 0, channelCount % groupCount == 0 else {
            throw .invalidGroupCount(groupCount: groupCount, channelCount: channelCount)
        }
        try Validation.epsilon(epsilon)
        self.channelCount = channelCount
        self.groupCount = groupCount
        self.layout = layout
        self.affine = affine
        self.gamma = Array(repeating: 1, count: affine.scaleCount(channelCount))
        self.beta = Array(repeating: 0, count: affine.shiftCount(channelCount))
        self.epsilon = epsilon
        self.activation = activation
        self.backend = backend
    }

    /// The origin its forward passes record in a cache: `.groupNorm(channelCount:groupCount:)`.
    @inlinable
    public var cacheOrigin: CacheOrigin { .groupNorm(channelCount: channelCount, groupCount: groupCount, layout: layout) }

    /// Normalizes each (sample, group).
    ///
    /// Over borrowed memory; the `Tensor` and `Span` entry points and the value
    /// API call this. The cache copies the input; `cache` and `workspace` are
    /// sized on first use and reused afterwards.
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for a rank other than 4
    ///   or another channel count; ``NormError/insufficientValues(valuesPerStatistic:)``
    ///   when `(C/G)·H·W < 2`; ``NormError/nonFiniteStatistics(index:)`` naming the
    ///   row `n·G + g`; the hyperparameter errors.
    /// - Complexity: O(N·C·H·W).
    ///
    /// With a `residual`, the output is `act(gamma·xhat + beta + residual)`
    /// in the same pass.
    @inlinable
    public mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, residual: UnsafeBufferPointer<Scalar>?,
        shape: [Int], mode: Mode, into output: UnsafeMutableBufferPointer<Scalar>,
        cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try GroupStatistics.forward(
            input, shape: shape, mode: mode, channels: channelCount, groups: groupCount, layout: layout,
            origin: cacheOrigin, affine: affine, gamma: gamma, beta: beta, epsilon: epsilon, backend: backend,
            output: output, residual: residual, activation: activation, cache: &cache,
            workspace: &workspace)
    }

    /// Normalizes each (sample, group) for inference, keeping nothing: the
    /// forward's output bit for bit. `output` may be `input`'s memory.
    /// - Throws: as the forward pass.
    /// - Complexity: O(N·C·H·W); allocation-free once `workspace` is sized.
    @inlinable
    public func infer(
        _ input: UnsafeBufferPointer<Scalar>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try GroupStatistics.infer(
            input, shape: shape, channels: channelCount, groups: groupCount, layout: layout, affine: affine, gamma: gamma,
            beta: beta, epsilon: epsilon, backend: backend, activation: activation,
            output: output, workspace: &workspace)
    }

    /// The backward pass (cs231n's `spatial_groupnorm_backward`).
    ///
    /// Over borrowed memory; the `Tensor` and `Span` entry points and the value
    /// API call this. The kernel is `GroupNormKernels.backward`.
    /// - Throws: ``NormError/bufferCountMismatch(name:expected:actual:)``, or
    ///   ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer, size, layout or group count, or from a forward pass
    ///   that threw.
    ///
    /// After a ReLU forward, `dy` is masked by the output's sign first;
    /// `residualGradient` (when given) receives that gradient.
    @inlinable
    public func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, cache: Cache,
        inputGradient: UnsafeMutableBufferPointer<Scalar>,
        residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try GroupStatistics.backward(
            GradientBuffers(dy: outputGradient, dx: inputGradient, dgamma: gammaGradient,
                            dbeta: betaGradient),
            residualGradient: residualGradient, cache: cache, channels: channelCount,
            groups: groupCount, layout: layout, origin: cacheOrigin, backend: backend, workspace: &workspace)
    }
}

/// The passes shared by ``GroupNorm`` and ``InstanceNorm`` (one channel per group).
@usableFromInline
enum GroupStatistics {
    /// Validates an `(N, C, H, W)` input and returns its geometry.
    @inlinable
    static func geometry<Scalar: BLASScalar>(
        _ input: Tensor<Scalar>, channels: Int, groups: Int, layout: ChannelLayout = .nchw
    ) throws(NormError) -> GroupNormKernels.Geometry {
        try geometry(shape: input.shape, count: input.count, channels: channels, groups: groups, layout: layout)
    }

    /// The geometry of an `(N, C, L)`, `(N, C, H, W)` or `(N, C, D, H, W)`
    /// shape of `count` values: the spatial extent is the product of the
    /// dimensions after `C`.
    @inlinable
    static func geometry(shape: [Int], count: Int, channels: Int, groups: Int, layout: ChannelLayout = .nchw)
        throws(NormError) -> GroupNormKernels.Geometry {
        let s = try Validation.spatialShape(shape: shape, count: count, channels: channels,
                                            channelsLast: layout == .nhwc)
        return GroupNormKernels.Geometry(samples: s.samples, channels: channels, groups: groups,
                                         spatial: s.spatial)
    }

    /// Checks `epsilon` and that `gamma` and `beta` hold the values `affine`
    /// says for `channels` channels (the public `var`s every pass depends on).
    @inlinable
    static func parameters<Scalar: BLASScalar>(
        affine: Affine, gamma: [Scalar], beta: [Scalar], epsilon: Scalar, channels: Int
    ) throws(NormError) {
        try Validation.epsilon(epsilon)
        try Validation.affineParameters(affine, gamma: gamma, beta: beta, count: channels)
    }

    /// The forward pass over `(N, C, H, W)` input, with the epilogue's
    /// residual and activation in the output pass (the cache keeps the output
    /// after a ReLU).
    @inlinable
    static func forward<Scalar: BLASScalar>(
        _ x: UnsafeBufferPointer<Scalar>, shape: [Int], mode: Mode, channels: Int, groups: Int,
        layout: ChannelLayout, origin: CacheOrigin, affine: Affine, gamma: [Scalar], beta: [Scalar], epsilon: Scalar,
        backend: Backend,
        output: UnsafeMutableBufferPointer<Scalar>, residual: UnsafeBufferPointer<Scalar>?,
        activation: FusedActivation, cache: inout NormCache<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try parameters(affine: affine, gamma: gamma, beta: beta, epsilon: epsilon, channels: channels)
        // Over borrowed memory, the BLAS pass copies the input into the cache
        // as it first reads each unit of rows or sample where the copy
        // streams (``InputCopy``); otherwise `adopt` makes the copy.
        let copying = try cache.adopt(x, shape: shape, backend: backend, onlyStreamed: true)
        try Validation.buffer("output", output.count, expected: x.count)
        try Validation.residual(residual, count: x.count)
        let g = try geometry(cache.input, channels: channels, groups: groups, layout: layout)
        try Validation.valuesPerStatistic(g.rowLength)
        cache.record(gamma: gamma, beta: beta, parameters: channels, mode: mode, statisticCount: g.rows, origin: origin)
        cache.prepareMask(activation: activation, count: x.count)
        let failure: Int? = cache.withForwardPointers { p in
            pass(copying ? x.baseAddress : p.x, geometry: g, layout: layout, gamma: gamma, beta: beta,
                 epsilon: epsilon, backend: backend, statistics: (p.mean, p.invstd), y: output.baseAddress,
                 epilogue: Epilogue(residual: residual?.baseAddress, activation: activation, mask: p.mask),
                 copy: copying ? p.x.map { InputCopy(UnsafeMutablePointer(mutating: $0), streaming: true) } : nil,
                 workspace: &workspace)
        }
        try cache.settle(failure: failure)
    }

    /// Inference that keeps nothing: the forward's output, bit for bit, with
    /// the statistics in the workspace. `output` may be `input`'s memory.
    @inlinable
    static func infer<Scalar: BLASScalar>(
        _ x: UnsafeBufferPointer<Scalar>, shape: [Int], channels: Int, groups: Int,
        layout: ChannelLayout, affine: Affine, gamma: [Scalar], beta: [Scalar], epsilon: Scalar, backend: Backend,
        activation: FusedActivation, output: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try parameters(affine: affine, gamma: gamma, beta: beta, epsilon: epsilon, channels: channels)
        let count = try Validation.inferBuffers(x, output, shape: shape)
        let g = try geometry(shape: shape, count: count, channels: channels, groups: groups, layout: layout)
        try Validation.valuesPerStatistic(g.rowLength)
        try Validation.statistics(failure: pass(
            x.baseAddress, geometry: g, layout: layout, gamma: gamma, beta: beta, epsilon: epsilon,
            backend: backend, statistics: nil, y: output.baseAddress,
            epilogue: Epilogue(residual: nil, activation: activation), workspace: &workspace))
    }

    /// The statistics and output pass over a validated geometry: chunks of
    /// samples on ``Threading``'s workers, each through
    /// ``GroupNormKernels/forward``. The statistics go to `statistics` (the
    /// cache's) or, when `nil`, to the workspace. With a `copy` (BLAS), `x`
    /// is copied there as the kernels first read it.
    /// - Returns: the first row `n·G + g` whose statistics are not finite, or `nil`.
    @inlinable
    static func pass<Scalar: BLASScalar>(
        _ x: UnsafePointer<Scalar>?, geometry g: GroupNormKernels.Geometry, layout: ChannelLayout = .nchw,
        gamma: [Scalar], beta: [Scalar], epsilon: Scalar, backend: Backend,
        statistics: (mean: UnsafeMutablePointer<Scalar>?, invstd: UnsafeMutablePointer<Scalar>?)?,
        y: UnsafeMutablePointer<Scalar>?, epilogue: Epilogue<Scalar>,
        copy: InputCopy<Scalar>? = nil, workspace: inout Workspace<Scalar>
    ) -> Int? {
        guard layout == .nchw else {
            return channelsLastPass(x, geometry: g, gamma: gamma, beta: beta, epsilon: epsilon,
                                    backend: backend, statistics: statistics, y: y, epilogue: epilogue,
                                    copy: copy, workspace: &workspace)
        }
        let channels = g.channels
        let blockRows = backend == .blas
            ? CacheGeometry.blockRows(rows: g.rows, columns: g.rowLength,
                                      bytesPerScalar: MemoryLayout<Scalar>.stride,
                                      buffers: LayerNormKernels.forwardBuffers(rowStatistics: .meanAndVariance))
            : g.rows
        let onesCount = backend == .blas ? g.rowLength : 0
        // Chunks of samples, so that a chunk's rows start at group 0.
        let split = Threading.split(outer: g.samples, scalarsPerRow: channels * g.spatial,
                                    of: Scalar.self, backend: backend)
        // Per worker, on whole cache lines (so that each starts on one); then
        // the statistics when the caller keeps none.
        var layout = ScratchLayout<Scalar>()
        let kernel = layout.regions(split.workers, of: backend == .blas
            ? LayerNormKernels.forwardScratch(blockRows: blockRows, columns: g.rowLength,
                                              rowStatistics: .meanAndVariance, of: Scalar.self)
            : 0)
        let ownMean = layout.region(statistics == nil ? g.rows : 0)
        let ownInvstd = layout.region(statistics == nil ? g.rows : 0)
        let streaming = StreamingStores.shouldStream(count: g.rows * g.rowLength, of: Scalar.self)
        return workspace.withRegions(
            ones: onesCount, scratch: layout.count, parameters: channels, gamma: gamma, beta: beta
        ) { ones, scratch, gamma, beta in
            Threading.firstFailure(split, ForwardPass(
                split: split, x: x, y: y, gamma: gamma, beta: beta,
                mean: statistics?.mean ?? ownMean.pointer(in: scratch),
                invstd: statistics?.invstd ?? ownInvstd.pointer(in: scratch), geometry: g,
                blockRows: blockRows, epsilon: epsilon, backend: backend, streaming: streaming,
                epilogue: epilogue, copy: copy, ones: ones, scratch: scratch, kernel: kernel))
        }
    }

    /// The backward pass over a validated cache.
    @inlinable
    static func backward<Scalar: BLASScalar>(
        _ buffers: GradientBuffers<Scalar>, residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        cache: NormCache<Scalar>, channels: Int, groups: Int, layout: ChannelLayout = .nchw,
        origin: CacheOrigin, backend: Backend, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try cache.backwardThroughActivation(
            buffers, residualGradient: residualGradient, masksInside: layout == .nhwc, workspace: &workspace
        ) { buffers, mask, workspace throws(NormError) in
            try backward(buffers, mask: mask, cache: cache, channels: channels, groups: groups,
                         layout: layout, origin: origin, backend: backend, workspace: &workspace)
        }
    }

    /// The backward pass of ``backward(_:residualGradient:cache:channels:groups:origin:backend:workspace:)``
    /// once the gradient reaches the affine map.
    @inlinable
    static func backward<Scalar: BLASScalar>(
        _ buffers: GradientBuffers<Scalar>, mask: UnsafePointer<UInt8>? = nil, cache: NormCache<Scalar>,
        channels: Int, groups: Int, layout: ChannelLayout = .nchw,
        origin: CacheOrigin, backend: Backend, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try Validation.origin(cache, expected: origin)
        let g = try geometry(cache.input, channels: channels, groups: groups, layout: layout)
        try Validation.cache(cache, parameters: channels, statistics: g.rows)
        try Validation.gradientBuffers(buffers, cache: cache, parameters: channels)
        guard layout == .nchw else {
            return channelsLastBackward(buffers, cache: cache, mask: mask, geometry: g, backend: backend,
                                        workspace: &workspace)
        }
        let blockRows = backend == .blas
            ? CacheGeometry.blockRows(rows: g.rows, columns: g.rowLength,
                                      bytesPerScalar: MemoryLayout<Scalar>.stride, buffers: 3)
            : g.rows
        let onesCount = backend == .blas ? g.spatial : 0
        let split = Threading.split(outer: g.samples, scalarsPerRow: channels * g.spatial,
                                    of: Scalar.self, backend: backend)
        // The kernel's scratch per worker, then each chunk's partial dgamma and dbeta.
        var layout = ScratchLayout<Scalar>()
        let kernel = layout.regions(split.workers,
                                    of: GroupNormKernels.backwardScratch(geometry: g, blockRows: blockRows))
        let partials = layout.regions(split.chunks, of: 2 * channels)
        workspace.withRegions(ones: onesCount, scratch: layout.count, parameters: channels) {
            ones, scratch, standIns in
            cache.withBackwardPointers(buffers, standIns: standIns) { p in
                Threading.run(split, BackwardPass(
                    split: split, pointers: p, geometry: g, blockRows: blockRows, backend: backend,
                    partials: partials, kernel: kernel, scratch: scratch, ones: ones))
                Threading.sumPartials(partials, in: scratch, chunks: split.chunks,
                                      count: channels, dgamma: p.dgamma,
                                      dbeta: p.dbeta)
            }
        }
    }

    /// The channels-first forward's phase: each chunk of samples through
    /// ``GroupNormKernels/forward``; returns the first row `n·G + g` whose
    /// statistics are not finite.
    @usableFromInline
    struct ForwardPass<Scalar: BLASScalar>: Threading.FailablePass {
        @usableFromInline let split: Threading.Split
        @usableFromInline let x: UnsafePointer<Scalar>?
        @usableFromInline let y: UnsafeMutablePointer<Scalar>?
        @usableFromInline let gamma, beta: UnsafePointer<Scalar>
        @usableFromInline let mean, invstd: UnsafeMutablePointer<Scalar>
        @usableFromInline let geometry: GroupNormKernels.Geometry
        @usableFromInline let blockRows: Int
        @usableFromInline let epsilon: Scalar
        @usableFromInline let backend: Backend
        @usableFromInline let streaming: Bool
        @usableFromInline let epilogue: Epilogue<Scalar>
        /// Where `x` is copied as it is first read (the cache's storage), or `nil`.
        @usableFromInline let copy: InputCopy<Scalar>?
        @usableFromInline let ones: UnsafePointer<Scalar>
        @usableFromInline let scratch: UnsafeMutablePointer<Scalar>
        @usableFromInline let kernel: ScratchRegions<Scalar>

        @inlinable
        init(split: Threading.Split, x: UnsafePointer<Scalar>?, y: UnsafeMutablePointer<Scalar>?,
             gamma: UnsafePointer<Scalar>, beta: UnsafePointer<Scalar>, mean: UnsafeMutablePointer<Scalar>,
             invstd: UnsafeMutablePointer<Scalar>, geometry: GroupNormKernels.Geometry, blockRows: Int,
             epsilon: Scalar, backend: Backend, streaming: Bool, epilogue: Epilogue<Scalar>,
             copy: InputCopy<Scalar>?, ones: UnsafePointer<Scalar>,
             scratch: UnsafeMutablePointer<Scalar>, kernel: ScratchRegions<Scalar>) {
            self.split = split; self.x = x; self.y = y; self.gamma = gamma; self.beta = beta; self.mean = mean
            self.invstd = invstd; self.geometry = geometry; self.blockRows = blockRows; self.epsilon = epsilon
            self.backend = backend; self.streaming = streaming; self.epilogue = epilogue; self.copy = copy
            self.ones = ones; self.scratch = scratch; self.kernel = kernel
        }

        @inlinable
        func run(chunk: Int, worker: Int) -> Int? {
            let g = geometry, samples = split.rows(ofChunk: chunk)
            let firstRow = samples.lowerBound * g.groups
            let offset = samples.lowerBound * g.channels * g.spatial
            return GroupNormKernels.forward(
                x: x! + offset,
                geometry: .init(samples: samples.count, channels: g.channels, groups: g.groups, spatial: g.spatial),
                blockRows: blockRows, epsilon: epsilon, backend: backend, gamma: gamma, beta: beta,
                mean: mean + firstRow, invstd: invstd + firstRow, y: y! + offset, streaming: streaming,
                epilogue: epilogue.advanced(by: offset), copy: copy?.advanced(by: offset), ones: ones,
                scratch: kernel.pointer(in: scratch, worker)
            ).map { firstRow + $0 }
        }
    }

    /// The channels-first backward's phase: each chunk of samples through
    /// ``GroupNormKernels/backward``, its partial `dgamma` and `dbeta` into its
    /// own region of `partials`.
    @usableFromInline
    struct BackwardPass<Scalar: BLASScalar>: Threading.Pass {
        @usableFromInline let split: Threading.Split
        @usableFromInline let pointers: BackwardPointers<Scalar>
        @usableFromInline let geometry: GroupNormKernels.Geometry
        @usableFromInline let blockRows: Int
        @usableFromInline let backend: Backend
        @usableFromInline let partials, kernel: ScratchRegions<Scalar>
        @usableFromInline let scratch: UnsafeMutablePointer<Scalar>
        @usableFromInline let ones: UnsafePointer<Scalar>

        @inlinable
        init(split: Threading.Split, pointers: BackwardPointers<Scalar>, geometry: GroupNormKernels.Geometry,
             blockRows: Int, backend: Backend, partials: ScratchRegions<Scalar>, kernel: ScratchRegions<Scalar>,
             scratch: UnsafeMutablePointer<Scalar>, ones: UnsafePointer<Scalar>) {
            self.split = split; self.pointers = pointers; self.geometry = geometry; self.blockRows = blockRows
            self.backend = backend; self.partials = partials; self.kernel = kernel; self.scratch = scratch
            self.ones = ones
        }

        @inlinable
        func run(chunk: Int, worker: Int) {
            let p = pointers, g = geometry, channels = g.channels
            let samples = split.rows(ofChunk: chunk)
            let firstRow = samples.lowerBound * g.groups, offset = samples.lowerBound * channels * g.spatial
            let sums = partials.vectors(2, of: channels, in: scratch, chunk)
            GroupNormKernels.backward(
                BackwardPointers(dy: p.dy + offset, x: p.x + offset, mean: p.mean + firstRow,
                                 invstd: p.invstd + firstRow, gamma: p.gamma, dx: p.dx + offset,
                                 dgamma: sums[0], dbeta: sums[1]),
                geometry: .init(samples: samples.count, channels: channels, groups: g.groups, spatial: g.spatial),
                blockRows: blockRows, backend: backend, ones: ones, scratch: kernel.pointer(in: scratch, worker))
        }
    }
}
