/// ``RowNormalization`` over 16-bit storage (``ReducedPrecision``): each
/// worker widens a block of rows into `Float` scratch in L2 (C passes), runs
/// the `Float` row kernels there, and narrows the block's output into the
/// caller's 16-bit buffer. Statistics, `gamma`, `beta` and their gradients are
/// `Float`; the cache keeps the 16-bit input.
extension RowNormalization {
    /// The 16-bit forward: as the `Float` one, the input copied into the
    /// cache at 2 bytes an element by the pass that widens it. With a
    /// `residual`, the layer's input is `s = x + residual` rounded to the
    /// storage type (``ReducedPrologue``), written into the cache and `sum`.
    /// - Throws: as the `Float` forward, and
    ///   ``NormError/unsupportedParameter(name:expected:)`` for a storage type
    ///   other than `Float16` and ``BFloat16``.
    @inlinable
    static func forward<Storage: ReducedPrecision>(
        _ x: UnsafeBufferPointer<Storage>, shape: [Int], mode: Mode, columns: Int, trailing: [Int], rowStatistics: RowStatistics,
        gamma: [Float], beta: [Float], epsilon: Float, backend: Backend,
        output: UnsafeMutableBufferPointer<Storage>,
        residual: (r: UnsafeBufferPointer<Storage>, sum: UnsafeMutableBufferPointer<Storage>?)? = nil,
        cache: inout NormCache<Float>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let precision = try StoragePrecision(Storage.self)
        if let residual {
            try checkResidual(shape: shape, input: x.count, residual: residual.r.count, sum: residual.sum?.count)
        }
        try cache.adoptReduced(x, shape: shape, precision: precision)
        try Validation.buffer("output", output.count, expected: x.count)
        let rows = try checkedRows(shape: shape, count: x.count, trailing: trailing, columns: columns,
                            rowStatistics: rowStatistics)
        cache.record(gamma: gamma, beta: beta, parameters: columns, mode: mode, statisticCount: rows,
                     origin: origin(columns: columns, rowStatistics: rowStatistics))
        let failure: Int? = cache.withReducedInputAndStatistics { own, mean, invstd in
            reducedPass(UnsafeRawPointer(x.baseAddress!), copy: own, precision: precision, rows: rows, columns: columns, rowStatistics: rowStatistics,
                        gamma: gamma, beta: beta, epsilon: epsilon, backend: backend,
                        statistics: (mean, invstd), y: UnsafeMutableRawPointer(output.baseAddress!),
                        residual: residual.map {
                            ReducedPrologue(r: UnsafeRawPointer($0.r.baseAddress!),
                                            sum: $0.sum.map { UnsafeMutableRawPointer($0.baseAddress!) })
                        },
                        workspace: &workspace)
        }
        try cache.settle(failure: failure)
    }

    /// The 16-bit inference that keeps nothing: the 16-bit forward's output
    /// bit for bit. `output` may be `input`'s memory.
    @inlinable
    static func infer<Storage: ReducedPrecision>(
        _ x: UnsafeBufferPointer<Storage>, shape: [Int], columns: Int, trailing: [Int], rowStatistics: RowStatistics,
        gamma: [Float], beta: [Float], epsilon: Float, backend: Backend,
        output: UnsafeMutableBufferPointer<Storage>, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let precision = try StoragePrecision(Storage.self)
        let rows = try checkedRows(shape: shape, count: Validation.inferBuffers(x, output, shape: shape),
                            trailing: trailing, columns: columns, rowStatistics: rowStatistics)
        try Validation.statistics(failure: reducedPass(
            UnsafeRawPointer(x.baseAddress!), copy: nil, precision: precision, rows: rows, columns: columns,
            rowStatistics: rowStatistics, gamma: gamma, beta: beta, epsilon: epsilon, backend: backend,
            statistics: nil, y: UnsafeMutableRawPointer(output.baseAddress!), workspace: &workspace))
    }

    /// The residual sum ahead of a 16-bit row pass: `s = x + r` computed in
    /// `Float` and rounded once to the storage type (the 16-bit addition an
    /// unfused model makes), into the cache's copy and `sum`; the layer
    /// normalizes the rounded `s`.
    @usableFromInline
    struct ReducedPrologue {
        @usableFromInline let r: UnsafeRawPointer
        @usableFromInline let sum: UnsafeMutableRawPointer?

        @inlinable
        init(r: UnsafeRawPointer, sum: UnsafeMutableRawPointer?) {
            self.r = r; self.sum = sum
        }

        /// `count` values from element `offset`, in one C pass: `x + r`
        /// rounded into `s` (the cache) and `sum`, and widened into `xf`.
        @inlinable
        func run(_ x: UnsafeRawPointer, offset: Int, count: Int, precision: StoragePrecision,
                 s: UnsafeMutableRawPointer, xf: UnsafeMutablePointer<Float>, streaming: Bool) {
            precision.residualSum(x + 2 * offset, r + 2 * offset, into: s + 2 * offset,
                                  sum: sum.map { $0 + 2 * offset }, widened: xf, count: count,
                                  streaming: streaming)
        }
    }

    /// The statistics and output pass over `rows` 16-bit rows at `x` into the
    /// 16-bit `y`: per block of rows (at most `blockRows`), widen, then rows of
    /// at least ``LayerNormKernels/rowKernelMinimumColumns`` one at a time
    /// (``LayerNormKernels/statistics(ofRow:columns:epsilon:rowStatistics:ones:row:)``,
    /// then the scale and shift narrowed as it is written), shorter ones
    /// through the `Float` row-block kernel (``LayerNormKernels/forwardBLAS``)
    /// into a `Float` block, narrowed. The widening also copies the block to
    /// `copy` (the cache) when it is not `nil`. The naive backend widens the
    /// whole input, runs its loops and narrows the whole output.
    /// - Returns: the first row whose statistics are not finite, or `nil`.
    @inlinable
    static func reducedPass(
        _ x: UnsafeRawPointer, copy: UnsafeMutableRawPointer?, precision: StoragePrecision,
        rows: Int, columns: Int, rowStatistics: RowStatistics,
        gamma: [Float], beta: [Float], epsilon: Float, backend: Backend,
        statistics: (mean: UnsafeMutablePointer<Float>, invstd: UnsafeMutablePointer<Float>)?,
        y: UnsafeMutableRawPointer, residual: ReducedPrologue? = nil,
        workspace: inout Workspace<Float>
    ) -> Int? {
        let count = rows * columns, values = (count + 1) / 2
        // The output (and a training forward's copy) streams when the call's
        // tensors, two or three, exceed half the cache (the 16-bit rule). The
        // residual form reads two tensors and writes three (the cache's sum,
        // `sum` and `y`): it streams `sum` and `y` when the five together
        // exceed the cache, as the Float form's rule counts its four.
        let streaming = residual == nil
            ? StreamingStores.shouldStream(reduced: count, tensors: copy == nil ? 2 : 3)
            : StreamingStores.exceedsCache(count: 5 * values, of: Float.self)
        // Rows long enough for the one-row-at-a-time kernels go a few at a
        // time, so that the widened rows and their output stay in L1 (half of
        // 32 KiB); shorter rows in L2 blocks, the block's 16-bit input and
        // output counting as one Float buffer.
        let blockRows = columns >= LayerNormKernels.rowKernelMinimumColumns
            ? max(1, min(rows, 16 * 1024 / (columns * 2 * MemoryLayout<Float>.stride)))
            : CacheGeometry.blockRows(
                rows: rows, columns: columns, bytesPerScalar: MemoryLayout<Float>.stride,
                buffers: LayerNormKernels.forwardBuffers(rowStatistics: rowStatistics) + 1)
        let split = Threading.split(outer: rows, scalarsPerRow: columns, of: Float.self,
                                    backend: backend)
        // Each worker's regions (BLAS: the kernel's scratch, then a block of
        // the input and of the output widened; naive, one worker: the whole
        // input and output widened), then the statistics when the caller keeps none.
        let blas = backend == .blas
        var worker = ScratchLayout<Float>()
        let kernelPart = worker.region(blas ? LayerNormKernels.forwardScratch(
            blockRows: blockRows, columns: columns, rowStatistics: rowStatistics, of: Float.self) : 0)
        let inputPart = worker.region(blas ? blockRows * columns : count)
        let outputPart = worker.region(blas ? blockRows * columns : count)
        var layout = ScratchLayout<Float>()
        let workers = layout.regions(split.workers, of: worker.count)
        let ownMean = layout.region(statistics == nil ? rows : 0)
        let ownInvstd = layout.region(statistics == nil ? rows : 0)
        let parameters = layout.region(Workspace<Float>.spreadScratch(2, of: columns))
        let onesCount = blas ? max(blockRows, columns) : 0
        return workspace.withRegions(
            ones: onesCount, scratch: layout.count, parameters: columns, gamma: gamma, beta: beta
        ) { ones, scratch, ownGamma, ownBeta in
            let mean = statistics?.mean ?? ownMean.pointer(in: scratch)
            let invstd = statistics?.invstd ?? ownInvstd.pointer(in: scratch)
            // Gamma and beta (or their stand-ins), read with every row, copied
            // onto whole lines spread away from the input's offset in a page
            // (`Workspace.spread`): the float16 output pass loads sixteen of
            // each a step, which split a line every time from an array's
            // storage 16 bytes off one.
            let vectors = Workspace<Float>.spread(
                2, of: columns, in: parameters.pointer(in: scratch),
                awayFrom: x.assumingMemoryBound(to: Float.self))
            let gamma = UnsafePointer(vectors[0]), beta = UnsafePointer(vectors[1])
            vectors[0].update(from: ownGamma, count: columns)
            vectors[1].update(from: ownBeta, count: columns)
            switch backend {
            case .blas:
                return Threading.firstFailure(split, ReducedForwardPass(
                    split: split, x: x, copy: copy, y: y, precision: precision, g: gamma, b: beta, mean: mean,
                    invstd: invstd, columns: columns, blockRows: blockRows, epsilon: epsilon,
                    rowStatistics: rowStatistics, streaming: streaming, ones: ones, scratch: scratch,
                    workers: workers, kernelPart: kernelPart, inputPart: inputPart, outputPart: outputPart,
                    residual: residual))
            case .naive:
                let own = workers.pointer(in: scratch, 0)
                let xf = inputPart.pointer(in: own), yf = outputPart.pointer(in: own)
                if let residual, let copy {
                    residual.run(x, offset: 0, count: count, precision: precision, s: copy,
                                 xf: xf, streaming: false)
                } else {
                    precision.widen(x, into: xf, count: count, copy: copy)
                }
                if let bad = LayerNormKernels.forwardNaive(
                    x: xf, rows: rows, columns: columns, epsilon: epsilon, rowStatistics: rowStatistics,
                    gamma: gamma, beta: beta, mean: mean, invstd: invstd,
                    y: yf, streaming: false) {
                    return bad
                }
                precision.narrow(yf, into: y, count: count, streaming: false)
                return nil
            }
        }
    }

    /// The BLAS 16-bit forward's phase: each chunk of rows block by block,
    /// widened (or summed with the residual) into the worker's `Float`
    /// block, then normalized row by row or through the row-block kernel and
    /// narrowed; returns the first row whose statistics are not finite.
    @usableFromInline
    struct ReducedForwardPass: Threading.FailablePass {
        @usableFromInline let split: Threading.Split
        @usableFromInline let x: UnsafeRawPointer
        @usableFromInline let copy: UnsafeMutableRawPointer?
        @usableFromInline let y: UnsafeMutableRawPointer
        @usableFromInline let precision: StoragePrecision
        @usableFromInline let g, b: UnsafePointer<Float>
        @usableFromInline let mean, invstd: UnsafeMutablePointer<Float>
        @usableFromInline let columns, blockRows: Int
        @usableFromInline let epsilon: Float
        @usableFromInline let rowStatistics: RowStatistics
        /// Whether the output, the cache's copy and the residual form's sums
        /// are streamed (the caller's rule over the call's tensors).
        @usableFromInline let streaming: Bool
        @usableFromInline let ones: UnsafePointer<Float>
        @usableFromInline let scratch: UnsafeMutablePointer<Float>
        @usableFromInline let workers: ScratchRegions<Float>
        @usableFromInline let kernelPart, inputPart, outputPart: ScratchRegion<Float>
        @usableFromInline let residual: ReducedPrologue?

        @inlinable
        init(split: Threading.Split, x: UnsafeRawPointer, copy: UnsafeMutableRawPointer?, y: UnsafeMutableRawPointer,
             precision: StoragePrecision, g: UnsafePointer<Float>, b: UnsafePointer<Float>,
             mean: UnsafeMutablePointer<Float>, invstd: UnsafeMutablePointer<Float>, columns: Int, blockRows: Int,
             epsilon: Float, rowStatistics: RowStatistics, streaming: Bool,
             ones: UnsafePointer<Float>,
             scratch: UnsafeMutablePointer<Float>, workers: ScratchRegions<Float>, kernelPart: ScratchRegion<Float>,
             inputPart: ScratchRegion<Float>, outputPart: ScratchRegion<Float>, residual: ReducedPrologue?) {
            self.split = split; self.x = x; self.copy = copy; self.y = y; self.precision = precision
            self.g = g; self.b = b; self.mean = mean; self.invstd = invstd; self.columns = columns
            self.blockRows = blockRows; self.epsilon = epsilon; self.rowStatistics = rowStatistics
            self.streaming = streaming; self.ones = ones; self.scratch = scratch; self.workers = workers
            self.kernelPart = kernelPart; self.inputPart = inputPart; self.outputPart = outputPart
            self.residual = residual
        }

        @inlinable
        func run(chunk: Int, worker: Int) -> Int? {
            let part = split.rows(ofChunk: chunk)
            let own = workers.pointer(in: scratch, worker)
            let xf = inputPart.pointer(in: own), yf = outputPart.pointer(in: own)
            var first = part.lowerBound
            while first < part.upperBound {
                let n = min(blockRows, part.upperBound - first)
                let offset = first * columns
                if let prologue = residual, let s = copy {
                    prologue.run(x, offset: offset, count: n * columns, precision: precision, s: s, xf: xf,
                                 streaming: streaming)
                } else {
                    precision.widen(x + 2 * offset, into: xf, count: n * columns,
                                    copy: copy.map { $0 + 2 * offset }, streaming: streaming)
                }
                if columns >= LayerNormKernels.rowKernelMinimumColumns {
                    // One row at a time: the Float statistics, then
                    // the scale and shift narrowed as it is written.
                    let row = LayerNormKernels.rowScratch(kernelPart.pointer(in: own), input: xf)
                    for i in 0..<n {
                        let xi = xf + i * columns
                        guard let (m, s) = LayerNormKernels.statistics(
                            ofRow: xi, columns: columns, epsilon: epsilon,
                            rowStatistics: rowStatistics, ones: ones, row: row) else {
                            StreamingStores.fence(streaming)
                            return first + i
                        }
                        mean[first + i] = m
                        invstd[first + i] = s
                        precision.scaleShift(
                            count: columns, c: UnsafePointer(rowStatistics.centred ? row : xi),
                            scale: s, gamma: g, beta: b,
                            into: y + 2 * (offset + i * columns),
                            streaming: streaming)
                    }
                    first += n
                    continue
                }
                if let bad = LayerNormKernels.forwardBLAS(
                    x: xf, rows: n, columns: columns, blockRows: blockRows,
                    epsilon: epsilon, rowStatistics: rowStatistics, gamma: g, beta: b,
                    mean: mean + first, invstd: invstd + first, y: yf,
                    streaming: false, ones: ones, scratch: kernelPart.pointer(in: own)) {
                    StreamingStores.fence(streaming)
                    return first + bad
                }
                precision.narrow(yf, into: y + 2 * offset, count: n * columns, streaming: streaming)
                first += n
            }
            StreamingStores.fence(streaming)
            return nil
        }
    }

    /// The BLAS 16-bit backward's phase: each chunk of rows block by block,
    /// `dy`, the cached input (and a sum gradient) widened into the worker's
    /// `Float` blocks; rows of at least ``LayerNormKernels/rowSumsMinimumColumns``
    /// one at a time (``LayerNormKernels/rowTerms``, then `dx` computed and
    /// narrowed in one pass), shorter ones by ``LayerNormKernels/backwardBlock``
    /// and `dx` narrowed; the chunk's partial `dgamma` and `dbeta` into its
    /// region of `partials`.
    @usableFromInline
    struct ReducedBackwardPass: Threading.Pass {
        @usableFromInline let split: Threading.Split
        @usableFromInline let precision: StoragePrecision
        @usableFromInline let dy, x: UnsafeRawPointer
        @usableFromInline let dx: UnsafeMutableRawPointer
        @usableFromInline let mean, invstd, gamma: UnsafePointer<Float>
        @usableFromInline let columns, blockRows: Int
        @usableFromInline let rowStatistics: RowStatistics
        @usableFromInline let partials: ScratchRegions<Float>
        @usableFromInline let ones: UnsafePointer<Float>
        @usableFromInline let scratch: UnsafeMutablePointer<Float>
        @usableFromInline let workers: ScratchRegions<Float>
        @usableFromInline let kernelPart, dyPart, xPart, dxPart, sumPart: ScratchRegion<Float>
        @usableFromInline let streaming, keepsGamma, keepsBeta: Bool
        @usableFromInline let ds: UnsafeRawPointer?

        @inlinable
        init(split: Threading.Split, precision: StoragePrecision, dy: UnsafeRawPointer, x: UnsafeRawPointer,
             dx: UnsafeMutableRawPointer, mean: UnsafePointer<Float>, invstd: UnsafePointer<Float>,
             gamma: UnsafePointer<Float>, columns: Int, blockRows: Int, rowStatistics: RowStatistics,
             partials: ScratchRegions<Float>, ones: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>,
             workers: ScratchRegions<Float>, kernelPart: ScratchRegion<Float>, dyPart: ScratchRegion<Float>,
             xPart: ScratchRegion<Float>, dxPart: ScratchRegion<Float>, sumPart: ScratchRegion<Float>,
             streaming: Bool, keepsGamma: Bool, keepsBeta: Bool, ds: UnsafeRawPointer?) {
            self.split = split; self.precision = precision; self.dy = dy; self.x = x; self.dx = dx
            self.mean = mean; self.invstd = invstd; self.gamma = gamma; self.columns = columns
            self.blockRows = blockRows; self.rowStatistics = rowStatistics; self.partials = partials
            self.ones = ones; self.scratch = scratch; self.workers = workers; self.kernelPart = kernelPart
            self.dyPart = dyPart; self.xPart = xPart; self.dxPart = dxPart; self.sumPart = sumPart
            self.streaming = streaming; self.keepsGamma = keepsGamma; self.keepsBeta = keepsBeta; self.ds = ds
        }

        @inlinable
        func run(chunk: Int, worker: Int) {
            let part = split.rows(ofChunk: chunk)
            let sums = partials.vectors(2, of: columns, in: scratch, chunk)
            sums[0].update(repeating: 0, count: columns)
            sums[1].update(repeating: 0, count: columns)
            let own = workers.pointer(in: scratch, worker)
            let dyf = dyPart.pointer(in: own), xf = xPart.pointer(in: own)
            let dxf = dxPart.pointer(in: own)
            var first = part.lowerBound
            while first < part.upperBound {
                let n = min(blockRows, part.upperBound - first)
                let offset = first * columns, values = n * columns
                precision.widen(dy + 2 * offset, into: dyf, count: values)
                precision.widen(x + 2 * offset, into: xf, count: values)
                let dsf: UnsafeMutablePointer<Float>? = ds.map {
                    let dsf = sumPart.pointer(in: own)
                    precision.widen($0 + 2 * offset, into: dsf, count: values)
                    return dsf
                }
                if columns >= LayerNormKernels.rowSumsMinimumColumns {
                    // One row at a time, as the Float kernel's per-row form,
                    // dx narrowed as it is written.
                    let p = LayerNormKernels.rowProducts(kernelPart.pointer(in: own), awayFrom: dyf)
                    for i in 0..<n {
                        let at = i * columns, row = first + i
                        let (a, b) = LayerNormKernels.rowTerms(
                            dy: dyf + at, x: xf + at, columns: columns,
                            centred: rowStatistics.centred, mean: mean[row], invstd: invstd[row],
                            gamma: gamma, p: p, dgamma: keepsGamma ? sums[0] : nil,
                            dbeta: keepsBeta ? sums[1] : nil)
                        precision.combineRow(
                            count: columns, dy: dyf + at, x: xf + at, sum: dsf.map { $0 + at },
                            mean: mean[row], invstd: invstd[row], a: a, b: b, gamma: gamma,
                            into: dx + 2 * (offset + at), streaming: streaming)
                    }
                    first += n
                    continue
                }
                LayerNormKernels.backwardBlock(
                    dy: dyf, x: xf, rows: n, columns: columns, rowStatistics: rowStatistics,
                    mean: mean + first, invstd: invstd + first, gamma: gamma,
                    dx: dxf, dgamma: keepsGamma ? sums[0] : nil,
                    dbeta: keepsBeta ? sums[1] : nil,
                    sumGradient: dsf.map { UnsafePointer($0) },
                    ones: ones, scratch: kernelPart.pointer(in: own))
                precision.narrow(dxf, into: dx + 2 * offset, count: values, streaming: streaming)
                first += n
            }
            StreamingStores.fence(streaming)
        }
    }

    /// The 16-bit backward: the `Float` formulas (``LayerNormKernels/backwardBlock``)
    /// on blocks of `dy` and the cached input widened into `Float` scratch,
    /// `dx` narrowed; `dgamma` and `dbeta` in `Float`.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache
    ///   from another layer or filled at another precision,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``,
    ///   ``NormError/unsupportedParameter(name:expected:)``.
    @inlinable
    static func backward<Storage: ReducedPrecision>(
        _ dy: UnsafeBufferPointer<Storage>, sumGradient: UnsafeBufferPointer<Storage>? = nil,
        cache: NormCache<Float>, inputGradient dx: UnsafeMutableBufferPointer<Storage>,
        gammaGradient dgamma: UnsafeMutableBufferPointer<Float>,
        betaGradient dbeta: UnsafeMutableBufferPointer<Float>,
        columns: Int, trailing: [Int], rowStatistics: RowStatistics, backend: Backend, workspace: inout Workspace<Float>
    ) throws(NormError) {
        let precision = try StoragePrecision(Storage.self)
        try Validation.origin(cache, expected: origin(columns: columns, rowStatistics: rowStatistics),
                              precision: precision)
        let count = cache.reducedInput.count
        let rows = try Validation.rows(shape: cache.reducedShape, count: count, trailing: trailing)
        try Validation.cache(cache, parameters: columns, statistics: rows)
        try Validation.buffer("outputGradient", dy.count, expected: count)
        try Validation.buffer("inputGradient", dx.count, expected: count)
        if let sumGradient {
            try Validation.buffer("sumGradient", sumGradient.count, expected: count)
        }
        try Validation.parameterGradients(dgamma.count, dbeta.count, cache: cache, parameters: columns)
        // Rows long enough for the kernel's one-row-at-a-time sums go a few at
        // a time, as in the forward, so that the widened dy and x (and the
        // sum gradient) stay in L1 while the row's passes read them; the
        // results do not depend on the block then. The count still allows
        // for a Float dx, which the per-row form no longer writes: half of
        // 32 KiB over three rows of 1024, one row a block, took 0.92-0.95x
        // the time of two rows a block (LayerNorm, 4096x1024, Intel Xeon).
        // Shorter rows in L2 blocks, where the kernel's gemvs sum a block.
        let buffers = sumGradient == nil ? 3 : 4
        let blockRows = columns >= LayerNormKernels.rowSumsMinimumColumns
            ? max(1, min(rows, 16 * 1024 / (columns * buffers * MemoryLayout<Float>.stride)))
            : CacheGeometry.blockRows(
                rows: rows, columns: columns, bytesPerScalar: MemoryLayout<Float>.stride, buffers: 5)
        let split = Threading.split(outer: rows, scalarsPerRow: columns, of: Float.self,
                                    backend: backend)
        // Each worker's regions (BLAS: the kernel's scratch, then blocks of dy,
        // x and dx widened, and of the sum gradient when there is one; naive,
        // one worker: all of them, then the rows' two terms); then each
        // chunk's partial dgamma and dbeta.
        let blas = backend == .blas, widened = blas ? blockRows * columns : count
        var worker = ScratchLayout<Float>()
        let kernelPart = worker.region(blas ? LayerNormKernels.backwardScratch(blockRows: blockRows, columns: columns, of: Float.self) : 0)
        // The per-row form narrows dx as it writes it: no Float block of dx.
        let rowForm = blas && columns >= LayerNormKernels.rowSumsMinimumColumns
        let dyPart = worker.region(widened), xPart = worker.region(widened)
        let dxPart = worker.region(rowForm ? 0 : widened)
        let sumPart = worker.region(sumGradient == nil ? 0 : widened)
        let termsPart = worker.region(blas ? 0 : 2 * rows)
        var layout = ScratchLayout<Float>()
        let workers = layout.regions(blas ? split.workers : 1, of: worker.count)
        let partials = layout.regions(blas ? split.chunks : 0, of: 2 * columns)
        let streaming = StreamingStores.shouldStream(reduced: count, tensors: sumGradient == nil ? 3 : 4)
        workspace.withRegions(ones: blas ? blockRows : 0, scratch: layout.count) {
            ones, scratch in
            cache.withReducedBackward { x, mean, invstd, gamma in
                // At least one row of at least one value: none is empty.
                let dyRaw = UnsafeRawPointer(dy.baseAddress!)
                let dxRaw = UnsafeMutableRawPointer(dx.baseAddress!)
                let dsRaw = sumGradient.map { UnsafeRawPointer($0.baseAddress!) }
                switch backend {
                case .blas:
                    Threading.run(split, ReducedBackwardPass(
                        split: split, precision: precision, dy: dyRaw, x: x, dx: dxRaw, mean: mean, invstd: invstd, gamma: gamma, columns: columns,
                        blockRows: blockRows, rowStatistics: rowStatistics, partials: partials, ones: ones,
                        scratch: scratch, workers: workers, kernelPart: kernelPart, dyPart: dyPart, xPart: xPart,
                        dxPart: dxPart, sumPart: sumPart, streaming: streaming, keepsGamma: !dgamma.isEmpty,
                        keepsBeta: !dbeta.isEmpty, ds: dsRaw))
                    Threading.sumPartials(partials, in: scratch, chunks: split.chunks,
                                          count: columns,
                                          dgamma: dgamma.isEmpty ? nil : dgamma.baseAddress,
                                          dbeta: dbeta.isEmpty ? nil : dbeta.baseAddress)
                case .naive:
                    let own = workers.pointer(in: scratch, 0)
                    let dyf = dyPart.pointer(in: own), xf = xPart.pointer(in: own), dxf = dxPart.pointer(in: own)
                    precision.widen(dyRaw, into: dyf, count: count)
                    precision.widen(x, into: xf, count: count)
                    let dsf: UnsafeMutablePointer<Float>? = dsRaw.map {
                        let dsf = sumPart.pointer(in: own)
                        precision.widen($0, into: dsf, count: count)
                        return dsf
                    }
                    LayerNormKernels.backwardNaive(
                        dy: dyf, x: xf, rows: rows, columns: columns, rowStatistics: rowStatistics,
                        mean: mean, invstd: invstd, gamma: gamma, dx: dxf,
                        dgamma: dgamma.isEmpty ? nil : dgamma.baseAddress,
                        dbeta: dbeta.isEmpty ? nil : dbeta.baseAddress, streaming: false,
                        sumGradient: dsf.map { UnsafePointer($0) },
                        scratch: termsPart.pointer(in: own))
                    precision.narrow(dxf, into: dxRaw, count: count, streaming: false)
                }
            }
        }
    }
}

extension NormCache {
    /// Calls `body` with the 16-bit input's storage (its first byte, for the
    /// forward pass to write) and the statistics vectors, sized by
    /// ``record(gamma:beta:parameters:mode:statisticCount:origin:)``.
    @usableFromInline
    mutating func withReducedInputAndStatistics<R>(
        _ body: (UnsafeMutableRawPointer, UnsafeMutablePointer<Scalar>,
                 UnsafeMutablePointer<Scalar>) -> R
    ) -> R {
        storedMean.withUnsafeMutableBufferPointer { mean in
            storedInverseStandardDeviation.withUnsafeMutableBufferPointer { invstd in
                reducedInput.withUnsafeMutableBytes { x in
                    body(x.baseAddress!, mean.baseAddress!, invstd.baseAddress!)
                }
            }
        }
    }

    /// Calls `body` with the 16-bit input (its first byte), the statistics
    /// and `gamma`, after ``Validation/cache(_:parameters:statistics:)``.
    @usableFromInline
    func withReducedBackward<R>(
        _ body: (UnsafeRawPointer, UnsafePointer<Scalar>, UnsafePointer<Scalar>,
                 UnsafePointer<Scalar>) -> R
    ) -> R {
        withPointers(storedMean, storedInverseStandardDeviation) { mean, invstd in
            withPointers(reducedInput, gamma) { x, gamma in
                body(UnsafeRawPointer(x!), mean!, invstd!, gamma!)
            }
        }
    }
}
