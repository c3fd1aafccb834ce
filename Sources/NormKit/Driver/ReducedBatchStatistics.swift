/// ``BatchStatistics`` over 16-bit storage (``ReducedPrecision``): the same
/// driver, whose chunk passes, given ``ReducedStreams``, widen one unit of the
/// geometry at a time into `Float` scratch in L2 (C passes), run the `Float`
/// kernels of ``BatchNormKernels`` on that unit, and narrow the unit's output
/// into the caller's 16-bit buffer. Statistics, `gamma`, `beta`, running
/// statistics and parameter gradients are `Float`; the cache keeps the 16-bit
/// input.

/// The 16-bit tensors of one batch-statistics pass: raw pointers to 2-byte
/// elements of `precision` (never `.float`).
@usableFromInline
struct ReducedStreams {
    @usableFromInline let precision: StoragePrecision
    /// The forward's input, or the backward's cached input.
    @usableFromInline let x: UnsafeRawPointer
    /// The forward's output, or the backward's input gradient.
    @usableFromInline let y: UnsafeMutableRawPointer
    /// The backward's output gradient; `nil` in a forward pass.
    @usableFromInline let dy: UnsafeRawPointer?
    /// Where the forward copies its input (the cache's 16-bit input), or `nil`.
    @usableFromInline let copy: UnsafeMutableRawPointer?
    /// The forward's 16-bit residual (added before the activation), or `nil`.
    @usableFromInline let residual: UnsafeRawPointer?

    @inlinable
    init(precision: StoragePrecision, x: UnsafeRawPointer, y: UnsafeMutableRawPointer,
         dy: UnsafeRawPointer? = nil, copy: UnsafeMutableRawPointer? = nil,
         residual: UnsafeRawPointer? = nil) {
        self.precision = precision
        self.x = x; self.y = y; self.dy = dy; self.copy = copy; self.residual = residual
    }

    /// The same streams, the forward's input copied to `copy`.
    @inlinable
    func copying(to copy: UnsafeMutableRawPointer?) -> ReducedStreams {
        ReducedStreams(precision: precision, x: x, y: y, dy: dy, copy: copy, residual: residual)
    }

    /// A 16-bit residual's gradient: `dy`, through the ReLU's `mask` when
    /// there is one (`+0` where the output was not positive), bit for bit.
    @inlinable
    static func residualGradient<Storage: ReducedPrecision>(
        _ dy: UnsafeBufferPointer<Storage>, mask: UnsafePointer<UInt8>?,
        into residualGradient: UnsafeMutableBufferPointer<Storage>
    ) {
        guard let source = dy.baseAddress, let target = residualGradient.baseAddress else { return }
        let g = UnsafeRawPointer(source).assumingMemoryBound(to: UInt16.self)
        let out = UnsafeMutableRawPointer(target).assumingMemoryBound(to: UInt16.self)
        if let mask {
            for k in 0..<dy.count { out[k] = mask[k] != 0 ? g[k] : 0 }
        } else {
            out.update(from: g, count: dy.count)
        }
    }

    /// `count` values from `offset` of the 16-bit `source` widened into the
    /// `Float` scratch `target` (typed as the driver's `Scalar`, which is
    /// `Float` whenever streams exist), copied to ``copy`` when `copying`.
    @inlinable
    func widen<Scalar: BLASScalar>(
        _ source: UnsafeRawPointer, offset: Int, into target: UnsafeMutablePointer<Scalar>,
        count: Int, copying: Bool = false, streaming: Bool = false
    ) {
        precondition(Scalar.self == Float.self, "16-bit storage widens to Float only")
        precision.widen(source + 2 * offset,
                        into: UnsafeMutableRawPointer(target).assumingMemoryBound(to: Float.self),
                        count: count, copy: copying ? copy.map { $0 + 2 * offset } : nil,
                        streaming: streaming)
    }

    /// BatchNorm's centred squares of the `count` 16-bit values of ``x`` from
    /// `offset` (one row of channels), widened in registers
    /// (``StoragePrecision/centredSquares(_:count:mean:squares:residual:)``):
    /// the bits of widening the row first.
    @inlinable
    func centredSquares<Scalar: BLASScalar>(
        offset: Int, count: Int, mean: UnsafePointer<Scalar>,
        squares: UnsafeMutablePointer<Scalar>, residual: UnsafeMutablePointer<Scalar>
    ) {
        precondition(Scalar.self == Float.self, "16-bit storage widens to Float only")
        let f = { (p: UnsafeMutablePointer<Scalar>) in
            UnsafeMutableRawPointer(p).assumingMemoryBound(to: Float.self)
        }
        precision.centredSquares(x + 2 * offset, count: count,
                                 mean: UnsafeRawPointer(mean).assumingMemoryBound(to: Float.self),
                                 squares: f(squares), residual: f(residual))
    }

    /// `count` `Float` values at `source` rounded into ``y`` from `offset`;
    /// given a forward's `epilogue` (whose mask starts at the tensor's first
    /// value), through it and the streams' ``residual``: the narrowing is the
    /// pass that adds the residual and applies the ReLU, so the `Float`
    /// kernel before it runs without an epilogue.
    @inlinable
    func narrow<Scalar: BLASScalar>(
        _ source: UnsafePointer<Scalar>, offset: Int, count: Int, streaming: Bool,
        epilogue: Epilogue<Scalar>? = nil
    ) {
        precondition(Scalar.self == Float.self, "16-bit storage narrows from Float only")
        precision.narrow(UnsafeRawPointer(source).assumingMemoryBound(to: Float.self),
                         into: y + 2 * offset, count: count, streaming: streaming,
                         residual: epilogue == nil ? nil : residual.map { $0 + 2 * offset },
                         mask: epilogue?.mask.map { $0 + offset }, relu: epilogue?.relu ?? false)
    }
}

extension ChannelGeometry {
    /// Calls `body(offset, unit, firstChannel, prior)` for each unit of rows
    /// `rows` that a 16-bit pass widens at once, in the order the `Float`
    /// kernels visit them: for the matrix geometry, blocks of `block` rows
    /// (all channels); for slabs, per row (sample), blocks of `block`
    /// channels. `offset` is the unit's first value in the whole tensor,
    /// `unit` its geometry (contiguous), `firstChannel` the channel of its
    /// first statistic, and `prior` the values per statistic the chunk has
    /// before it (the count a merge of its moments starts from).
    @inlinable
    func forEachUnit(rows: Range<Int>, block: Int,
                     _ body: (_ offset: Int, _ unit: ChannelGeometry, _ firstChannel: Int,
                              _ prior: Int) -> Void) {
        if inner == 1 {
            var start = rows.lowerBound
            while start < rows.upperBound {
                let b = min(block, rows.upperBound - start)
                body(start * channels, ChannelGeometry(outer: b, channels: channels, inner: 1), 0,
                     start - rows.lowerBound)
                start += b
            }
            return
        }
        for n in rows {
            var c0 = 0
            while c0 < channels {
                let cb = min(block, channels - c0)
                body((n * channels + c0) * inner, ChannelGeometry(outer: 1, channels: cb, inner: inner),
                     c0, (n - rows.lowerBound) * inner)
                c0 += cb
            }
        }
    }

    /// The values of this geometry.
    @inlinable var count: Int { outer * channels * inner }
}

extension BatchStatistics {
    /// Scratch scalars a worker of a 16-bit pass needs beyond the `Float`
    /// kernels' own: ``ReducedUnits``.
    @inlinable
    static func reducedScratch(geometry g: ChannelGeometry, block: Int) -> Int {
        ReducedUnits<Float>.Layout(geometry: g, block: block).count
    }

    /// A worker's units in a 16-bit pass: three `Float` units of the
    /// geometry's blocks (the widened input, output gradient and output), then a unit's two channel vectors (its moments or sums),
    /// each on whole lines.
    @usableFromInline
    struct ReducedUnits<Scalar: BLASScalar> {
        @usableFromInline let first, second, third: UnsafeMutablePointer<Scalar>
        /// A unit's two per-channel sums (its mean and M2, or its
        /// `Σ dy·(x - mean)` and `Σ dy`).
        @usableFromInline let sums: VectorSet<Scalar>

        /// The plan of the units' regions.
        @usableFromInline
        struct Layout {
            @usableFromInline let units: ScratchRegions<Scalar>
            @usableFromInline let sums: ScratchRegion<Scalar>
            @usableFromInline let count: Int

            @inlinable
            init(geometry g: ChannelGeometry, block: Int) {
                var layout = ScratchLayout<Scalar>()
                units = layout.regions(3, of: g.scratchCount(block: block, vectors: 0))
                sums = layout.region(2 * g.channels)
                count = layout.count
            }
        }

        /// The units of the worker's region at `base`.
        @inlinable
        init(_ base: UnsafeMutablePointer<Scalar>, geometry g: ChannelGeometry, block: Int) {
            let layout = Layout(geometry: g, block: block)
            first = layout.units.pointer(in: base, 0)
            second = layout.units.pointer(in: base, 1)
            third = layout.units.pointer(in: base, 2)
            sums = layout.sums.vectors(2, of: g.channels, in: base)
        }
    }

    /// The per-channel mean and `M2` of rows `rows` of the 16-bit input. Rows
    /// of channels (BLAS): ``BatchNormKernels/columnMomentsBLAS(x:rows:columns:blockRows:mean:m2:ones:scratch:copy:centre:load:)``
    /// loading its rows widened (copied to the cache in the mean's pass): when
    /// it sums per row, one row into L1 for the mean's pass and the centred
    /// squares widened in registers from the 16-bit row
    /// (``ReducedStreams/centredSquares(offset:count:mean:squares:residual:)``);
    /// a block into L2 otherwise. Otherwise per unit, widened (and copied), then
    /// ``unitMoments(rows:geometry:block:backend:mean:m2:ones:kernelScratch:sums:load:)``.
    /// Either way the bits of the widened rows' moments at once.
    @inlinable
    static func reducedMoments<Scalar: BLASScalar>(
        _ r: ReducedStreams, rows: Range<Int>, geometry g: ChannelGeometry, block: Int,
        backend: Backend, mean: UnsafeMutablePointer<Scalar>, m2: UnsafeMutablePointer<Scalar>,
        ones: UnsafePointer<Scalar>, kernelScratch: UnsafeMutablePointer<Scalar>,
        units: UnsafeMutablePointer<Scalar>, streaming: Bool
    ) {
        let u = ReducedUnits(units, geometry: g, block: block)
        let xf = u.first
        if g.inner == 1 && backend == .blas {
            let first = rows.lowerBound * g.channels
            BatchNormKernels.columnMomentsBLAS(
                x: xf, rows: rows.count, columns: g.channels, blockRows: block, mean: mean, m2: m2,
                ones: ones, scratch: kernelScratch,
                centre: { row, mean, squares, residual in
                    r.centredSquares(offset: first + row * g.channels, count: g.channels,
                                     mean: mean, squares: squares, residual: residual)
                }
            ) { row, count, copying in
                r.widen(r.x, offset: first + row * g.channels, into: xf, count: count * g.channels,
                        copying: copying, streaming: streaming)
                return UnsafePointer(xf)
            }
            StreamingStores.fence(streaming)
            return
        }
        unitMoments(rows: rows, geometry: g, block: block, backend: backend, mean: mean, m2: m2,
                    ones: ones, kernelScratch: kernelScratch, sums: u.sums) { offset, count in
            r.widen(r.x, offset: offset, into: xf, count: count, copying: true, streaming: streaming)
            return UnsafePointer(xf)
        }
        StreamingStores.fence(streaming)
    }

    /// The per-channel mean and `M2` of rows `rows`, unit by unit of the
    /// geometry (``ChannelGeometry/forEachUnit(rows:block:_:)``): `load`
    /// makes the unit at `offset` of `count` values ready (widened from 16
    /// bits, or copied into the cache) and returns where it is;
    /// ``BatchNormKernels/moments(x:geometry:block:backend:mean:m2:ones:scratch:)``
    /// of it into `sums` (2 vectors of the channels), then ``Moments/merge``
    /// into the totals in unit order: the bits of the moments of the rows at
    /// once, whose kernel merges the same blocks in the same order.
    @inlinable
    static func unitMoments<Scalar: BLASScalar>(
        rows: Range<Int>, geometry g: ChannelGeometry, block: Int, backend: Backend,
        mean: UnsafeMutablePointer<Scalar>, m2: UnsafeMutablePointer<Scalar>,
        ones: UnsafePointer<Scalar>, kernelScratch: UnsafeMutablePointer<Scalar>,
        sums own: VectorSet<Scalar>,
        load: (_ offset: Int, _ count: Int) -> UnsafePointer<Scalar>
    ) {
        mean.update(repeating: 0, count: g.channels)
        m2.update(repeating: 0, count: g.channels)
        g.forEachUnit(rows: rows, block: block) { offset, unit, c0, prior in
            let x = load(offset, unit.count)
            BatchNormKernels.moments(x: x, geometry: unit, block: block, backend: backend,
                                     mean: own[0], m2: own[1], ones: ones,
                                     scratch: kernelScratch)
            _ = Moments.merge(count: prior, mean: mean + c0, m2: m2 + c0,
                              blockCount: unit.valuesPerStatistic, blockMean: own[0],
                              blockM2: own[1], length: unit.channels)
        }
    }

    /// The normalize pass over rows `rows` of the 16-bit input and its
    /// epilogue (the streams' residual, the ReLU and its mask), the input
    /// copied to the cache when `copying` (an inference forward): for rows of
    /// channels one C pass per row that reads and writes 16 bits; for slabs,
    /// per unit, widened,
    /// ``BatchNormKernels/normalize(x:geometry:mean:scale:shift:y:streaming:epilogue:)``
    /// into `Float` scratch, narrowed into the output.
    @inlinable
    static func reducedNormalize<Scalar: BLASScalar>(
        _ r: ReducedStreams, rows: Range<Int>, geometry g: ChannelGeometry, block: Int,
        vectors: AffineVectors<Scalar>, copying: Bool, streaming: Bool,
        epilogue: Epilogue<Scalar>, units: UnsafeMutablePointer<Scalar>
    ) {
        if g.inner == 1 {
            // Rows of channels: one C pass reads each 16-bit row (and its
            // residual's), copies it to the cache (an inference forward), and
            // writes it normalized, through the epilogue, rounded.
            let f = { (p: UnsafePointer<Scalar>) in
                UnsafeRawPointer(p).assumingMemoryBound(to: Float.self)
            }
            let copy = copying ? r.copy : nil
            for i in rows {
                let offset = i * g.channels
                r.precision.normalizeColumns(
                    count: g.channels, x: r.x + 2 * offset, mean: f(vectors.mean),
                    scale: f(vectors.scale), shift: f(vectors.shift),
                    residual: r.residual.map { $0 + 2 * offset }, mask: epilogue.mask.map { $0 + offset },
                    relu: epilogue.relu, copy: copy.map { $0 + 2 * offset }, into: r.y + 2 * offset,
                    streaming: streaming)
            }
            StreamingStores.fence(streaming)
            return
        }
        let u = ReducedUnits(units, geometry: g, block: block)
        let xf = u.first, yf = u.second
        g.forEachUnit(rows: rows, block: block) { offset, unit, c0, _ in
            r.widen(r.x, offset: offset, into: xf, count: unit.count, copying: copying,
                    streaming: streaming)
            let v = vectors.advanced(by: c0)
            BatchNormKernels.normalize(
                x: xf, geometry: unit, mean: v.mean, scale: v.scale, shift: v.shift, y: yf, streaming: false)
            r.narrow(yf, offset: offset, count: unit.count, streaming: streaming, epilogue: epilogue)
        }
        StreamingStores.fence(streaming)
    }

    /// `dgammaRaw = Σ dy·(x - mean)` and `dbeta = Σ dy` per channel over rows
    /// `rows`: per unit, `dy` and the cached input widened (`dy` through the
    /// ReLU's `mask` when given; a row at a time into L1, as the kernel asks,
    /// when it sums per row), ``BatchNormKernels/parameterSums(dy:mask:x:geometry:block:backend:mean:dgammaRaw:dbeta:ones:scratch:load:)``,
    /// added to the chunk's sums in unit order.
    @inlinable
    static func reducedParameterSums<Scalar: BLASScalar>(
        _ r: ReducedStreams, rows: Range<Int>, geometry g: ChannelGeometry, block: Int,
        backend: Backend, mask: UnsafePointer<UInt8>?, mean: UnsafePointer<Scalar>,
        dgammaRaw: UnsafeMutablePointer<Scalar>, dbeta: UnsafeMutablePointer<Scalar>,
        ones: UnsafePointer<Scalar>, kernelScratch: UnsafeMutablePointer<Scalar>,
        units: UnsafeMutablePointer<Scalar>
    ) {
        let u = ReducedUnits(units, geometry: g, block: block)
        let dyf = u.first, xf = u.second, own = u.sums
        dgammaRaw.update(repeating: 0, count: g.channels)
        dbeta.update(repeating: 0, count: g.channels)
        g.forEachUnit(rows: rows, block: block) { offset, unit, c0, _ in
            // The unit's rows widened (`dy` masked), each into L1 when the
            // kernel sums per row, or all at once.
            func widen(_ first: Int, _ count: Int) {
                r.widen(r.dy!, offset: first, into: dyf, count: count)
                if let mask { Scalar.reluMaskRow(count: count, dy: dyf, mask: mask + first, into: dyf) }
                r.widen(r.x, offset: first, into: xf, count: count)
            }
            let perRow = BatchNormKernels.perRow(geometry: unit, backend: backend)
            if !perRow { widen(offset, unit.count) }
            BatchNormKernels.parameterSums(
                dy: dyf, x: xf, geometry: unit, block: block, backend: backend, mean: mean + c0,
                dgammaRaw: own[0], dbeta: own[1], ones: ones, scratch: kernelScratch,
                load: !perRow ? nil : { i in
                    widen(offset + i * unit.channels, unit.channels)
                    return (UnsafePointer(dyf), UnsafePointer(xf))
                })
            for k in 0..<unit.channels {
                dgammaRaw[c0 + k] += own[0][k]
                dbeta[c0 + k] += own[1][k]
            }
        }
    }

    /// `dx = a·dy + b·(x - mean) + c` per channel over rows `rows` (`dy`
    /// through the ReLU's `mask` when given): for rows of channels one C pass
    /// per row over the 16-bit `dy` and input; for slabs, per unit, `dy`
    /// (masked) and the cached input widened,
    /// ``BatchNormKernels/combine(dy:mask:x:geometry:coefficients:dx:streaming:)``
    /// into `Float` scratch, narrowed into the input gradient.
    @inlinable
    static func reducedCombine<Scalar: BLASScalar>(
        _ r: ReducedStreams, rows: Range<Int>, geometry g: ChannelGeometry, block: Int,
        mask: UnsafePointer<UInt8>?, coefficients: CombineCoefficients<Scalar>, streaming: Bool,
        units: UnsafeMutablePointer<Scalar>
    ) {
        if g.inner == 1 {
            // Rows of channels: one C pass reads each 16-bit row of `dy`
            // (through the mask) and `x` and writes `dx` rounded.
            let f = { (p: UnsafePointer<Scalar>) in
                UnsafeRawPointer(p).assumingMemoryBound(to: Float.self)
            }
            for i in rows {
                let offset = i * g.channels
                r.precision.combineColumns(
                    count: g.channels, dy: r.dy! + 2 * offset, mask: mask.map { $0 + offset },
                    x: r.x + 2 * offset, mean: f(coefficients.mean),
                    a: f(coefficients.a), b: f(coefficients.b), c: f(coefficients.c),
                    into: r.y + 2 * offset, streaming: streaming)
            }
            StreamingStores.fence(streaming)
            return
        }
        let u = ReducedUnits(units, geometry: g, block: block)
        let dyf = u.first, xf = u.second, dxf = u.third
        g.forEachUnit(rows: rows, block: block) { offset, unit, c0, _ in
            r.widen(r.dy!, offset: offset, into: dyf, count: unit.count)
            if let mask { Scalar.reluMaskRow(count: unit.count, dy: dyf, mask: mask + offset, into: dyf) }
            r.widen(r.x, offset: offset, into: xf, count: unit.count)
            BatchNormKernels.combine(dy: dyf, x: xf, geometry: unit,
                                     coefficients: coefficients.advanced(by: c0), dx: dxf, streaming: false)
            r.narrow(dxf, offset: offset, count: unit.count, streaming: streaming)
        }
        StreamingStores.fence(streaming)
    }
}

extension ReducedStreams {
    /// The streams of a 16-bit forward from `input` into `output`, or `nil`
    /// for a storage type other than `Float16` and ``BFloat16`` (which the
    /// forward's validation refuses). An empty shard's buffers may have no
    /// address: none of its units is read, so a placeholder stands in.
    @inlinable
    init?<Storage: ReducedPrecision>(_ input: UnsafeBufferPointer<Storage>,
                                      _ output: UnsafeMutableBufferPointer<Storage>,
                                      residual: UnsafeBufferPointer<Storage>? = nil) {
        guard let precision = try? StoragePrecision(Storage.self) else { return nil }
        let none = UnsafeMutableRawPointer(bitPattern: 64)!
        self.init(precision: precision, x: UnsafeRawPointer(input.baseAddress) ?? UnsafeRawPointer(none),
                  y: UnsafeMutableRawPointer(output.baseAddress) ?? none,
                  residual: residual.map { UnsafeRawPointer($0.baseAddress) ?? UnsafeRawPointer(none) })
    }
}

extension BatchStatistics {
    /// Validates a 16-bit forward's buffers and sizes the cache for its
    /// input: the geometry of `shape`.
    /// - Throws: ``NormError/unsupportedParameter(name:expected:)`` for a
    ///   storage type other than `Float16` and ``BFloat16``; the buffer and
    ///   shape errors.
    @inlinable
    static func prepareReduced<Storage: ReducedPrecision>(
        _ x: UnsafeBufferPointer<Storage>, shape: [Int],
        geometry: (_ shape: [Int], _ count: Int) throws(NormError) -> ChannelGeometry,
        output: UnsafeMutableBufferPointer<Storage>, cache: inout NormCache<Float>
    ) throws(NormError) -> ChannelGeometry {
        let precision = try StoragePrecision(Storage.self)
        try cache.adoptReduced(x, shape: shape, precision: precision)
        try Validation.buffer("output", output.count, expected: x.count)
        return try geometry(shape, x.count)
    }

    /// Validates a 16-bit backward's buffers against `cache`: the geometry of
    /// the cached input.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer or filled at another precision,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``,
    ///   ``NormError/unsupportedParameter(name:expected:)``.
    @inlinable
    static func checkReducedBackward<Storage: ReducedPrecision>(
        _ dy: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient dx: UnsafeMutableBufferPointer<Storage>,
        gammaGradient dgamma: UnsafeMutableBufferPointer<Float>,
        betaGradient dbeta: UnsafeMutableBufferPointer<Float>, channels: Int, origin: CacheOrigin,
        geometry: (_ shape: [Int], _ count: Int) throws(NormError) -> ChannelGeometry
    ) throws(NormError) -> ChannelGeometry {
        let precision = try StoragePrecision(Storage.self)
        try Validation.origin(cache, expected: origin, precision: precision)
        try Validation.cache(cache, parameters: channels, statistics: channels)
        let count = cache.reducedInput.count
        let g = try geometry(cache.reducedShape, count)
        try Validation.buffer("outputGradient", dy.count, expected: count)
        try Validation.buffer("inputGradient", dx.count, expected: count)
        try Validation.parameterGradients(dgamma.count, dbeta.count, cache: cache, parameters: channels)
        return g
    }

    /// The 16-bit forward of a layer with batch statistics: validation, the
    /// cache sized for the 16-bit input, then the driver's forward with
    /// ``ReducedStreams``.
    /// - Throws: as the driver's forward, and
    ///   ``NormError/unsupportedParameter(name:expected:)`` for a storage type
    ///   other than `Float16` and ``BFloat16``.
    @inlinable
    static func forward<Storage: ReducedPrecision>(
        _ x: UnsafeBufferPointer<Storage>, shape: [Int],
        geometry: (_ shape: [Int], _ count: Int) throws(NormError) -> ChannelGeometry,
        mode: Mode, origin: CacheOrigin, gamma: [Float], beta: [Float],
        runningMean: inout [Float], runningVariance: inout [Float], epsilon: Float,
        update: RunningUpdate<Float>?, estimator: VarianceEstimator, backend: Backend,
        activation: FusedActivation, output: UnsafeMutableBufferPointer<Storage>,
        residual: UnsafeBufferPointer<Storage>? = nil,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        try Validation.residual(residual, count: x.count)
        let g = try prepareReduced(x, shape: shape, geometry: geometry, output: output, cache: &cache)
        if mode == .training { try Validation.valuesPerStatistic(g.valuesPerStatistic) }
        try forward(
            exchange: LocalStatistics(), geometry: g, mode: mode, origin: origin, gamma: gamma,
            beta: beta, runningMean: &runningMean, runningVariance: &runningVariance,
            epsilon: epsilon, update: update, estimator: estimator, backend: backend,
            output: UnsafeMutableBufferPointer(start: nil, count: 0), activation: activation,
            cache: &cache, workspace: &workspace,
            reduced: ReducedStreams(x, output, residual: residual))
    }

    /// The 16-bit inference that keeps nothing: the 16-bit inference
    /// forward's output bit for bit. `output` may be `x`'s memory.
    /// - Throws: as the 16-bit forward, except the training checks.
    @inlinable
    static func infer<Storage: ReducedPrecision>(
        _ x: UnsafeBufferPointer<Storage>, shape: [Int],
        geometry: (_ shape: [Int], _ count: Int) throws(NormError) -> ChannelGeometry,
        gamma: [Float], beta: [Float], runningMean: [Float], runningVariance: [Float],
        epsilon: Float, backend: Backend, activation: FusedActivation,
        output: UnsafeMutableBufferPointer<Storage>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let precision = try StoragePrecision(Storage.self)
        let count = try Validation.inferBuffers(x, output, shape: shape)
        let g = try geometry(shape, count)
        let raw = UnsafeRawPointer(x.baseAddress!)
        try infer(raw.assumingMemoryBound(to: Float.self), geometry: g, gamma: gamma, beta: beta,
                  runningMean: runningMean, runningVariance: runningVariance, epsilon: epsilon,
                  backend: backend,
                  output: UnsafeMutableRawPointer(mutating: raw).assumingMemoryBound(to: Float.self),
                  epilogue: Epilogue(residual: nil, activation: activation),
                  workspace: &workspace,
                  reduced: ReducedStreams(precision: precision, x: raw,
                                          y: UnsafeMutableRawPointer(output.baseAddress!)))
    }

    /// The 16-bit closed-form backward: `dy` and the cached 16-bit input
    /// widened unit by unit, the `Float` sums and coefficients, `dx` narrowed;
    /// through the ReLU's mask after a ReLU forward.
    /// - Throws: as ``checkReducedBackward(_:cache:inputGradient:gammaGradient:betaGradient:channels:origin:geometry:)``.
    @inlinable
    static func backward<Storage: ReducedPrecision>(
        _ dy: UnsafeBufferPointer<Storage>, cache: NormCache<Float>,
        inputGradient dx: UnsafeMutableBufferPointer<Storage>,
        gammaGradient dgamma: UnsafeMutableBufferPointer<Float>,
        betaGradient dbeta: UnsafeMutableBufferPointer<Float>,
        residualGradient: UnsafeMutableBufferPointer<Storage>? = nil,
        channels: Int, origin: CacheOrigin,
        geometry: (_ shape: [Int], _ count: Int) throws(NormError) -> ChannelGeometry,
        backend: Backend, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let g = try checkReducedBackward(dy, cache: cache, inputGradient: dx, gammaGradient: dgamma,
                                         betaGradient: dbeta, channels: channels, origin: origin,
                                         geometry: geometry)
        if let residualGradient {
            try Validation.buffer("residualGradient", residualGradient.count, expected: dy.count)
        }
        cache.withReducedBackward(dy, dx, dgamma: dgamma, dbeta: dbeta) { buffers, mask, reduced in
            // dy is read before dx (which may be dy's memory) is written.
            if let residualGradient {
                ReducedStreams.residualGradient(dy, mask: mask, into: residualGradient)
            }
            _ = backward(buffers, mask: mask, cache: cache, geometry: g, backend: backend,
                         form: .closedForm, exchange: LocalStatistics(), workspace: &workspace,
                         reduced: reduced)
        }
    }
}

extension NormCache where Scalar == Float {
    /// Calls `body` with the buffers, the ReLU's mask (after a ReLU forward)
    /// and the streams of a 16-bit backward through this cache: `dy` and `dx`
    /// the caller's, `x` the cache's 16-bit input.
    @inlinable
    func withReducedBackward<Storage: ReducedPrecision, R>(
        _ dy: UnsafeBufferPointer<Storage>, _ dx: UnsafeMutableBufferPointer<Storage>,
        dgamma: UnsafeMutableBufferPointer<Float>, dbeta: UnsafeMutableBufferPointer<Float>,
        _ body: (GradientBuffers<Float>, UnsafePointer<UInt8>?, ReducedStreams) -> R
    ) -> R {
        storedMask.withUnsafeBufferPointer { mask in
            reducedInput.withUnsafeBytes { x in
                // An empty shard's buffers may have no address: nothing reads them.
                let none = UnsafeMutableRawPointer(bitPattern: 64)!
                return body(
                    GradientBuffers(dy: UnsafeBufferPointer(start: nil, count: 0),
                                    dx: UnsafeMutableBufferPointer(start: nil, count: 0),
                                    dgamma: dgamma, dbeta: dbeta),
                    activation == .relu ? mask.baseAddress : nil,
                    ReducedStreams(precision: precision, x: x.baseAddress ?? UnsafeRawPointer(none),
                                   y: UnsafeMutableRawPointer(dx.baseAddress) ?? none,
                                   dy: UnsafeRawPointer(dy.baseAddress) ?? UnsafeRawPointer(none)))
            }
        }
    }
}

extension RankStatistics {
    /// The synchronized layers' 16-bit backward over this rank's `checked`
    /// shard: ``backward(communicator:checked:channels:number:origin:_:mask:cache:backend:workspace:reduced:)``
    /// with the cache's 16-bit streams (and its ReLU mask); a checked call
    /// first writes `residualGradient`, `dy` through the mask.
    /// - Throws: as that method.
    @inlinable
    static func reducedBackward<Storage: ReducedPrecision>(
        communicator: any Communicator, checked: Result<ChannelGeometry, NormError>,
        channels: Int, number: Int, origin: CacheOrigin, _ dy: UnsafeBufferPointer<Storage>,
        _ dx: UnsafeMutableBufferPointer<Storage>,
        residualGradient: UnsafeMutableBufferPointer<Storage>? = nil,
        gammaGradient: UnsafeMutableBufferPointer<Float>,
        betaGradient: UnsafeMutableBufferPointer<Float>, cache: NormCache<Float>,
        backend: Backend, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let failure: NormError? = cache.withReducedBackward(
            dy, dx, dgamma: gammaGradient, dbeta: betaGradient
        ) { buffers, mask, reduced in
            // dy is read before dx (which may be dy's memory) is written; a
            // refused call writes nothing.
            if let residualGradient, case .success = checked {
                ReducedStreams.residualGradient(dy, mask: mask, into: residualGradient)
            }
            do throws(NormError) {
                try backward(communicator: communicator, checked: checked, channels: channels,
                             number: number, origin: origin, buffers, mask: mask, cache: cache,
                             backend: backend, workspace: &workspace, reduced: reduced)
                return nil
            } catch { return error }
        }
        if let failure { throw failure }
    }
}
