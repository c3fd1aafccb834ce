/// The forward and backward passes shared by the layers whose statistics are
/// per row of an `(N, D)` input (``LayerNorm``, ``RMSNorm``): the rows in
/// chunks over ``Threading``'s workers, each chunk through
/// ``LayerNormKernels`` (one row at a time forward, L2 row blocks backward).
@usableFromInline
enum RowNormalization {
    /// Validates the input (copied into the cache as the pass first reads
    /// it, row by row for the per-row kernels, block by block for the row
    /// blocks, unless it is the cache's own) and computes `y = (x - mean_i) · invstd_i · gamma_j + beta_j`
    /// (`mean_i = 0` when not `centred`) into `output`. With a `residual`,
    /// the layer's input is `s = x + residual`: written into the cache's
    /// storage and into `sum` (unless `sum` is `nil`: the `Tensor` form,
    /// whose cache then shares the caller's sum), block by block while the
    /// block is in L2, and normalized there.
    /// - Throws: ``NormError/invalidShape(expected:actual:)``,
    ///   ``NormError/insufficientValues(valuesPerStatistic:)`` for `D < 2` when `centred`,
    ///   ``NormError/nonFiniteStatistics(index:)`` naming the sample,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``.
    @inlinable
    static func forward<Scalar: BLASScalar>(
        _ x: UnsafeBufferPointer<Scalar>, shape: [Int], mode: Mode, columns: Int, trailing: [Int],
        rowStatistics: RowStatistics,
        gamma: [Scalar], beta: [Scalar], epsilon: Scalar, backend: Backend,
        output: UnsafeMutableBufferPointer<Scalar>,
        residual: (r: UnsafeBufferPointer<Scalar>, sum: UnsafeMutableBufferPointer<Scalar>?)? = nil,
        cache: inout NormCache<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        var copying = false
        if let residual {
            try checkResidual(shape: shape, input: x.count, residual: residual.r.count, sum: residual.sum?.count)
            cache.prepareInput(shape: shape)
        } else {
            copying = try cache.adoptLater(x, shape: shape)
        }
        try Validation.buffer("output", output.count, expected: x.count)
        let rows = try checkedRows(shape: cache.input.shape, count: cache.input.count, trailing: trailing,
                            columns: columns, rowStatistics: rowStatistics)
        cache.record(gamma: gamma, beta: beta, parameters: columns, mode: mode, statisticCount: rows,
                     origin: origin(columns: columns, rowStatistics: rowStatistics))
        let failure: Int? = cache.withInputAndStatistics(writable: residual != nil || copying) {
            own, mean, invstd in
            // With a prologue, `own` is written by it before it is read.
            let prologue = residual.map {
                Prologue(x: x.baseAddress!, r: $0.r.baseAddress!, s: own, sum: $0.sum?.baseAddress)
            } ?? (copying ? Prologue(copying: x.baseAddress!, into: own, count: x.count) : nil)
            return pass(own, rows: rows, columns: columns, rowStatistics: rowStatistics, gamma: gamma,
                        beta: beta, epsilon: epsilon, backend: backend, statistics: (mean, invstd),
                        y: output.baseAddress!, prologue: prologue, workspace: &workspace)
        }
        try cache.settle(failure: failure)
    }

    /// Inference that keeps nothing: the forward's output bit for bit, the
    /// statistics in the workspace. `output` may be `input`'s memory.
    @inlinable
    static func infer<Scalar: BLASScalar>(
        _ x: UnsafeBufferPointer<Scalar>, shape: [Int], columns: Int, trailing: [Int], rowStatistics: RowStatistics,
        gamma: [Scalar], beta: [Scalar], epsilon: Scalar, backend: Backend,
        output: UnsafeMutableBufferPointer<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        let rows = try checkedRows(shape: shape, count: Validation.inferBuffers(x, output, shape: shape),
                            trailing: trailing, columns: columns, rowStatistics: rowStatistics)
        try Validation.statistics(failure: pass(
            x.baseAddress!, rows: rows, columns: columns, rowStatistics: rowStatistics, gamma: gamma,
            beta: beta, epsilon: epsilon, backend: backend, statistics: nil, y: output.baseAddress!,
            workspace: &workspace))
    }

    /// The rows of an input of `shape` (`count` scalars) whose rows span
    /// `trailing` (`columns` values), refusing rows too short for their
    /// statistics: a mean and a variance need two values, a mean square
    /// (RMSNorm) one.
    @inlinable
    static func checkedRows(
        shape: [Int], count: Int, trailing: [Int], columns: Int, rowStatistics: RowStatistics
    ) throws(NormError) -> Int {
        let rows = try Validation.rows(shape: shape, count: count, trailing: trailing)
        if rowStatistics.centred { try Validation.valuesPerStatistic(columns) }
        return rows
    }

    /// Checks a residual forward's buffer counts against `shape`: the input,
    /// the residual and `sum` (when given) each hold its scalars.
    @inlinable
    static func checkResidual(shape: [Int], input: Int, residual: Int, sum: Int?) throws(NormError) {
        let count = try Tensor<Float>.elementCount(of: shape)
        try Validation.buffer("input", input, expected: count)
        try Validation.buffer("residual", residual, expected: count)
        if let sum { try Validation.buffer("sum", sum, expected: count) }
    }

    /// What a row pass writes into the cache ahead of each block's rows:
    /// the residual sum `s = x + r` into `s` (the layer's input from then on)
    /// and `sum`, or, without `r`, the caller's input copied into `s`.
    @usableFromInline
    struct Prologue<Scalar: BLASScalar> {
        @usableFromInline let x: UnsafePointer<Scalar>
        @usableFromInline let r: UnsafePointer<Scalar>?
        @usableFromInline let s: UnsafeMutablePointer<Scalar>
        @usableFromInline let sum: UnsafeMutablePointer<Scalar>?
        /// Whether a copy is written with streaming stores.
        @usableFromInline let streamingCopy: Bool

        @inlinable
        init(x: UnsafePointer<Scalar>, r: UnsafePointer<Scalar>, s: UnsafeMutablePointer<Scalar>,
             sum: UnsafeMutablePointer<Scalar>?) {
            self.x = x; self.r = r; self.s = s; self.sum = sum; streamingCopy = false
        }

        /// The copy of `count` values of `x` into `s`, with streaming stores
        /// when ``StreamingStores/streamsCopy(count:of:)``.
        @inlinable
        init(copying x: UnsafePointer<Scalar>, into s: UnsafeMutablePointer<Scalar>, count: Int) {
            self.x = x; r = nil; self.s = s; sum = nil
            streamingCopy = StreamingStores.streamsCopy(count: count, of: Scalar.self)
        }

        /// Writes the rows `first ..< first + rows` of `columns` values, and
        /// returns where the row kernels read them: `s` after a sum, `x`
        /// after a copy (its lines are in cache then, whether or not the
        /// copy's stores were streamed).
        @inlinable
        func run(first: Int, rows: Int, columns: Int, streaming: Bool) -> UnsafePointer<Scalar> {
            let offset = first * columns
            guard let r else {
                StreamingStores.copy(x + offset, count: rows * columns, into: s + offset,
                                     streaming: streamingCopy)
                // The row kernels fence by the output's rule, not the copy's.
                StreamingStores.fence(streamingCopy)
                return x + offset
            }
            Fused.sum(x + offset, r + offset, count: rows * columns, into: s + offset,
                      copy: sum.map { $0 + offset }, streaming: streaming)
            return UnsafePointer(s + offset)
        }

        /// Writes the rows `first ..< first + rows` into `block` (scratch in
        /// L2, where the row kernels then read them), and from there to `s`
        /// and `sum` with streaming stores.
        @inlinable
        func run(first: Int, rows: Int, columns: Int, block: UnsafeMutablePointer<Scalar>) {
            let offset = first * columns
            guard let r else { preconditionFailure("a copy needs no block") }
            Scalar.residualSumRows(count: rows * columns, x: x + offset, r: r + offset, block: block,
                                   s: s + offset, sum: sum.map { $0 + offset })
            StreamingStores.fence(true)
        }
    }

    /// The statistics and output pass over `rows` rows at `x` (after the
    /// prologue, when there is one, has written them): chunks of rows on
    /// ``Threading``'s workers through ``LayerNormKernels``. The statistics go
    /// to `statistics`, or, when `nil`, to the workspace.
    /// - Returns: the first row whose statistics are not finite, or `nil`.
    @inlinable
    static func pass<Scalar: BLASScalar>(
        _ x: UnsafePointer<Scalar>, rows: Int, columns: Int, rowStatistics: RowStatistics,
        gamma: [Scalar], beta: [Scalar], epsilon: Scalar, backend: Backend,
        statistics: (mean: UnsafeMutablePointer<Scalar>, invstd: UnsafeMutablePointer<Scalar>)?,
        y: UnsafeMutablePointer<Scalar>, prologue: Prologue<Scalar>? = nil,
        workspace: inout Workspace<Scalar>
    ) -> Int? {
        let blockRows = CacheGeometry.blockRows(
            rows: rows, columns: columns, bytesPerScalar: MemoryLayout<Scalar>.stride,
            buffers: LayerNormKernels.forwardBuffers(rowStatistics: rowStatistics))
        let onesCount = backend == .blas ? max(blockRows, columns) : 0
        let split = Threading.split(outer: rows, scalarsPerRow: columns, of: Scalar.self,
                                    backend: backend)
        // Outputs beyond StreamingStores.minimumBytes are streamed. The
        // residual form writes two (s and y) and reads two: it streams both
        // when the four together exceed the cache (its own traffic then
        // evicts them), each block of s going through a scratch block in L2
        // that the row kernels read.
        let streaming = prologue?.r == nil
            ? StreamingStores.shouldStream(count: rows * columns, of: Scalar.self)
            : StreamingStores.exceedsCache(count: 4 * rows * columns, of: Scalar.self)
        let sumBlock = prologue?.r != nil && streaming && backend == .blas ? blockRows * columns : 0
        // RMSNorm's row blocks keep their squares in the output, unless it is
        // the input (inference in place).
        let separateSquares = UnsafePointer(y) == x
        // Per worker, on whole cache lines (so that each starts on one): the
        // kernel's scratch and the residual form's block of sums.
        var layout = ScratchLayout<Scalar>()
        let kernel = layout.regions(split.workers, of: backend == .blas
            ? LayerNormKernels.forwardScratch(blockRows: blockRows, columns: columns,
                                              rowStatistics: rowStatistics,
                                              separateSquares: separateSquares, of: Scalar.self)
            : 0)
        let sumBlocks = layout.regions(split.workers, of: sumBlock)
        // Then gamma and beta, copied onto cache lines away from the input's
        // offset in a page (the layer's arrays sit wherever the allocator put
        // them; see `Workspace.spread`), read once per row; then the
        // statistics when the caller keeps none.
        let parameters = layout.region(backend == .blas ? Workspace<Scalar>.spreadScratch(2, of: columns) : 0)
        let ownMean = layout.region(statistics == nil ? rows : 0)
        let ownInvstd = layout.region(statistics == nil ? rows : 0)
        return workspace.withRegions(
            ones: onesCount, scratch: layout.count, parameters: columns, gamma: gamma, beta: beta
        ) { ones, scratch, gamma, beta in
            let mean = statistics?.mean ?? ownMean.pointer(in: scratch)
            let invstd = statistics?.invstd ?? ownInvstd.pointer(in: scratch)
            switch backend {
            case .blas:
                let copies = Workspace<Scalar>.spread(
                    2, of: columns, in: parameters.pointer(in: scratch), awayFrom: x)
                copies[0].update(from: gamma, count: columns)
                copies[1].update(from: beta, count: columns)
                // Rows are independent: the chunks of rows on the workers.
                return Threading.firstFailure(split, ForwardPass(
                    split: split, x: x, y: y, gamma: copies[0], beta: copies[1], mean: mean, invstd: invstd,
                    columns: columns, blockRows: blockRows, epsilon: epsilon, rowStatistics: rowStatistics,
                    streaming: streaming, separateSquares: separateSquares, prologue: prologue,
                    ones: ones, scratch: scratch, kernel: kernel, sumBlocks: sumBlocks, sumBlock: sumBlock))
            case .naive:
                _ = prologue?.run(first: 0, rows: rows, columns: columns, streaming: streaming)
                return LayerNormKernels.forwardNaive(
                    x: x, rows: rows, columns: columns, epsilon: epsilon, rowStatistics: rowStatistics,
                    gamma: gamma, beta: beta, mean: mean, invstd: invstd, y: y, streaming: streaming)
            }
        }
    }

    /// The BLAS forward's phase: each chunk of rows through
    /// `LayerNormKernels.forwardBLAS`; with a prologue, block by block (the
    /// residual sum of a block, then its rows).
    @usableFromInline
    struct ForwardPass<Scalar: BLASScalar>: Threading.FailablePass {
        @usableFromInline let split: Threading.Split
        @usableFromInline let x: UnsafePointer<Scalar>
        @usableFromInline let y, mean, invstd: UnsafeMutablePointer<Scalar>
        @usableFromInline let gamma, beta: UnsafePointer<Scalar>
        @usableFromInline let columns, blockRows: Int
        @usableFromInline let epsilon: Scalar
        @usableFromInline let rowStatistics: RowStatistics
        @usableFromInline let streaming, separateSquares: Bool
        @usableFromInline let prologue: Prologue<Scalar>?
        @usableFromInline let ones: UnsafePointer<Scalar>
        @usableFromInline let scratch: UnsafeMutablePointer<Scalar>
        @usableFromInline let kernel, sumBlocks: ScratchRegions<Scalar>
        @usableFromInline let sumBlock: Int

        @inlinable
        init(split: Threading.Split, x: UnsafePointer<Scalar>, y: UnsafeMutablePointer<Scalar>,
             gamma: UnsafePointer<Scalar>, beta: UnsafePointer<Scalar>, mean: UnsafeMutablePointer<Scalar>,
             invstd: UnsafeMutablePointer<Scalar>, columns: Int, blockRows: Int, epsilon: Scalar,
             rowStatistics: RowStatistics, streaming: Bool, separateSquares: Bool, prologue: Prologue<Scalar>?,
             ones: UnsafePointer<Scalar>, scratch: UnsafeMutablePointer<Scalar>, kernel: ScratchRegions<Scalar>,
             sumBlocks: ScratchRegions<Scalar>, sumBlock: Int) {
            self.split = split; self.x = x; self.y = y; self.gamma = gamma; self.beta = beta; self.mean = mean
            self.invstd = invstd; self.columns = columns; self.blockRows = blockRows; self.epsilon = epsilon
            self.rowStatistics = rowStatistics; self.streaming = streaming; self.separateSquares = separateSquares
            self.prologue = prologue; self.ones = ones; self.scratch = scratch; self.kernel = kernel
            self.sumBlocks = sumBlocks; self.sumBlock = sumBlock
        }

        @inlinable
        func run(chunk: Int, worker: Int) -> Int? {
            let part = split.rows(ofChunk: chunk)
            // With a prologue, block by block: the sum, then its rows.
            let step = prologue == nil ? max(1, part.count) : blockRows
            var first = part.lowerBound
            let own = kernel.pointer(in: scratch, worker)
            while first < part.upperBound {
                let count = min(step, part.upperBound - first)
                let offset = first * columns
                var rows = x + offset
                var rowCopy: LayerNormKernels.RowCopy<Scalar>? = nil
                if let prologue, sumBlock > 0 {
                    let block = sumBlocks.pointer(in: scratch, worker)
                    prologue.run(first: first, rows: count, columns: columns, block: block)
                    rows = UnsafePointer(block)
                } else if let prologue, prologue.r == nil, columns >= LayerNormKernels.rowKernelMinimumColumns {
                    // The per-row kernels copy each row as they read it.
                    rows = prologue.x + offset
                    rowCopy = LayerNormKernels.RowCopy(target: prologue.s + offset,
                                                       streaming: prologue.streamingCopy)
                } else if let prologue {
                    let written = prologue.run(first: first, rows: count, columns: columns,
                                               streaming: streaming)
                    // A forward over its own input reads the cache's copy:
                    // the kernels write the output as they go.
                    rows = UnsafePointer(y) == prologue.x ? rows : written
                }
                if let bad = LayerNormKernels.forwardBLAS(
                    x: rows, rows: count, columns: columns, blockRows: blockRows, epsilon: epsilon,
                    rowStatistics: rowStatistics, gamma: gamma, beta: beta, mean: mean + first,
                    invstd: invstd + first, y: y + offset, streaming: streaming,
                    separateSquares: separateSquares, copy: rowCopy, ones: ones, scratch: own) {
                    return first + bad
                }
                first += count
            }
            return nil
        }
    }

    /// ``LayerNorm`` when `centred`, ``RMSNorm`` otherwise.
    @inlinable
    static func origin(columns: Int, rowStatistics: RowStatistics) -> CacheOrigin {
        switch rowStatistics {
        case .meanAndVariance: .layerNorm(featureCount: columns)
        case .rootMeanSquare: .rmsNorm(featureCount: columns)
        }
    }

    /// Validates the cache and the caller's buffers and computes the backward
    /// pass (see ``LayerNormKernels/backwardBLAS``).
    @inlinable
    static func backward<Scalar: BLASScalar>(
        _ buffers: GradientBuffers<Scalar>, sumGradient: UnsafeBufferPointer<Scalar>? = nil,
        cache: NormCache<Scalar>, columns: Int, trailing: [Int], rowStatistics: RowStatistics,
        backend: Backend, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try Validation.origin(cache, expected: origin(columns: columns, rowStatistics: rowStatistics))
        let rows = try Validation.rows(shape: cache.input.shape, count: cache.input.count, trailing: trailing)
        try Validation.cache(cache, parameters: columns, statistics: rows)
        try Validation.gradientBuffers(buffers, cache: cache, parameters: columns)
        if let sumGradient {
            try Validation.buffer("sumGradient", sumGradient.count, expected: cache.input.count)
        }
        let ds = sumGradient?.baseAddress
        let blockRows = CacheGeometry.blockRows(
            rows: rows, columns: columns, bytesPerScalar: MemoryLayout<Scalar>.stride, buffers: 3)
        let onesCount = backend == .blas ? blockRows : 0
        let split = Threading.split(outer: rows, scalarsPerRow: columns, of: Scalar.self,
                                    backend: backend)
        // BLAS: the kernel's scratch per worker, then each chunk's partial dgamma
        // and dbeta; naive: the rows' two terms.
        let blas = backend == .blas
        var layout = ScratchLayout<Scalar>()
        let kernel = layout.regions(blas ? split.workers : 0,
                                    of: LayerNormKernels.backwardScratch(blockRows: blockRows, columns: columns, of: Scalar.self))
        let partials = layout.regions(blas ? split.chunks : 0, of: 2 * columns)
        let naiveTerms = layout.region(blas ? 0 : 2 * rows)
        workspace.withRegions(ones: onesCount, scratch: layout.count, parameters: columns) {
            ones, scratch, standIns in
            cache.withBackwardPointers(buffers, standIns: standIns) { p in
                switch backend {
                case .blas:
                    Threading.run(split, BackwardPass(
                        split: split, pointers: p, columns: columns, blockRows: blockRows,
                        rowStatistics: rowStatistics, partials: partials, kernel: kernel, scratch: scratch,
                        ones: ones, sumGradient: ds,
                        streaming: StreamingStores.shouldStream(count: rows * columns, of: Scalar.self)))
                    Threading.sumPartials(partials, in: scratch, chunks: split.chunks,
                                          count: columns, dgamma: p.wantedGamma,
                                          dbeta: p.wantedBeta)
                case .naive:
                    LayerNormKernels.backwardNaive(
                        dy: p.dy, x: p.x, rows: rows, columns: columns, rowStatistics: rowStatistics,
                        mean: p.mean, invstd: p.invstd, gamma: p.gamma, dx: p.dx, dgamma: p.wantedGamma,
                        dbeta: p.wantedBeta,
                        streaming: StreamingStores.shouldStream(count: rows * columns, of: Scalar.self),
                        sumGradient: ds, scratch: naiveTerms.pointer(in: scratch))
                }
            }
        }
    }

    /// The BLAS backward's phase: each chunk of rows through
    /// `LayerNormKernels.backwardBLAS` (per block, the C product pass, the
    /// `gemv` row and column sums, the `dx` pass), its partial `dgamma` and
    /// `dbeta` into its own region of `partials`.
    @usableFromInline
    struct BackwardPass<Scalar: BLASScalar>: Threading.Pass {
        @usableFromInline let split: Threading.Split
        @usableFromInline let pointers: BackwardPointers<Scalar>
        @usableFromInline let columns, blockRows: Int
        @usableFromInline let rowStatistics: RowStatistics
        @usableFromInline let partials, kernel: ScratchRegions<Scalar>
        @usableFromInline let scratch: UnsafeMutablePointer<Scalar>
        @usableFromInline let ones: UnsafePointer<Scalar>
        @usableFromInline let sumGradient: UnsafePointer<Scalar>?
        /// Whether `dx` is written with streaming stores (where the kernel
        /// writes it once).
        @usableFromInline let streaming: Bool

        @inlinable
        init(split: Threading.Split, pointers: BackwardPointers<Scalar>, columns: Int, blockRows: Int,
             rowStatistics: RowStatistics, partials: ScratchRegions<Scalar>, kernel: ScratchRegions<Scalar>,
             scratch: UnsafeMutablePointer<Scalar>, ones: UnsafePointer<Scalar>,
             sumGradient: UnsafePointer<Scalar>?, streaming: Bool) {
            self.split = split; self.pointers = pointers; self.columns = columns; self.blockRows = blockRows
            self.rowStatistics = rowStatistics; self.partials = partials; self.kernel = kernel
            self.scratch = scratch; self.ones = ones; self.sumGradient = sumGradient
            self.streaming = streaming
        }

        @inlinable
        func run(chunk: Int, worker: Int) {
            let p = pointers, part = split.rows(ofChunk: chunk)
            let first = part.lowerBound, offset = first * columns
            let sums = partials.vectors(2, of: columns, in: scratch, chunk)
            LayerNormKernels.backwardBLAS(
                dy: p.dy + offset, x: p.x + offset, rows: part.count, columns: columns,
                blockRows: blockRows, rowStatistics: rowStatistics, mean: p.mean + first,
                invstd: p.invstd + first, gamma: p.gamma, dx: p.dx + offset,
                dgamma: p.keepsGamma ? sums[0] : nil, dbeta: p.keepsBeta ? sums[1] : nil,
                sumGradient: sumGradient.map { $0 + offset }, streaming: streaming,
                ones: ones, scratch: kernel.pointer(in: scratch, worker))
        }
    }
}
